"""lite_tf: memory-efficient episodic meta-learning (LITE) in TensorFlow / Keras 3."""

__version__ = '0.1.0'
