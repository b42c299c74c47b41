"""LITE: the gradient estimator and the Keras model that trains learners with it."""

from lite_tf.lite.estimator import adapt_and_predict
from lite_tf.lite.estimator import full_task_gradients
from lite_tf.lite.estimator import lite_task_gradients
from lite_tf.lite.estimator import lite_task_objective
from lite_tf.lite.model import LiteModel
from lite_tf.lite.model import make_optimizer
