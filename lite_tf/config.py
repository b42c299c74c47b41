"""gin parsing shared by the binaries, with errors that name the file or binding at fault."""

import os
import tokenize

import gin
import tensorflow as tf

from lite_tf import episode as episode_lib


def register_configurables():
  """Imports every module that defines gin configurables, so any gin file can name them."""
  # pylint: disable=g-import-not-at-top,unused-import
  from lite_tf import backbones
  from lite_tf import precision
  from lite_tf.data import batches
  from lite_tf.data.orbit import episodes as orbit_episodes
  from lite_tf.data.orbit import synthetic as orbit_synthetic
  from lite_tf.data.orbit import tasks as orbit_tasks
  from lite_tf.data.meta_dataset import reader
  from lite_tf.data.meta_dataset import sampling
  from lite_tf.data import vtab
  from lite_tf.learners import cnaps
  from lite_tf.learners import finetuner
  from lite_tf.learners import maml
  from lite_tf.learners import protonets
  from lite_tf.learners import simple_cnaps
  from lite_tf.lite import model
  from lite_tf.training import evaluation_report
  from lite_tf.training import orbit_evaluation
  from lite_tf.training import vtab_md_evaluation
  from lite_tf.studies import gradient_study
  from lite_tf.training import pretrain
  from lite_tf.training import train


class ConfigError(ValueError):
  """A gin file or binding that cannot be used."""


# Errors that come from what the user gave (flags, gin, data), reported without a traceback.
USER_ERRORS = (ConfigError, episode_lib.EpisodeError, ValueError, OSError,
               tf.errors.InvalidArgumentError)


def parse(config_files, bindings, check_precision_device=True):
  """Parses gin files and bindings, then applies the precision policy (lite_tf.precision).
  check_precision_device=False leaves out the float16 device probe, which runs TF ops and so
  starts TF's runtime: bin/train.py probes after creating its distribution strategy, since a
  MultiWorkerMirroredStrategy must configure the runtime before it starts."""
  register_configurables()
  for path in config_files:
    if not os.path.exists(path):
      raise ConfigError(f'--gin_config: no such file {path!r}')
    # `include 'gin/x.gin'` resolves against the folder above the config's folder too, so
    # configs compose from any working directory.
    gin.add_config_file_search_path(os.path.dirname(os.path.dirname(os.path.abspath(path))))
  try:
    gin.parse_config_files_and_bindings(config_files, bindings, finalize_config=False)
  except (ValueError, KeyError, SyntaxError, ImportError, OSError, tokenize.TokenError) as e:
    raise ConfigError(f'gin config {list(config_files)} / bindings {list(bindings)}: {e}') from e
  if bound_value('lite.memory_budget_mb') is not None:
    # The memory planner reads TF's allocator statistics; on CPU only the BFC allocator
    # keeps them. Set before TensorFlow creates its devices.
    os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')
  # Keras' dtype policy before gin builds any learner (lite_tf.precision).
  from lite_tf import precision  # pylint: disable=g-import-not-at-top
  precision.apply(check_device=check_precision_device)


class _Literal:
  """A configurable reference or macro in a parsed config, compared by its text."""

  def __init__(self, text):
    self.text = text

  def __repr__(self):
    return self.text

  def __eq__(self, other):
    return isinstance(other, _Literal) and other.text == self.text

  def __hash__(self):
    return hash(self.text)


class _Delegate(gin.config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _Literal(f'@{scoped_configurable_name}' + ('()' if evaluate else ''))

  def macro(self, macro_name):
    return _Literal(f'%{macro_name}')


def config_bindings(text):
  """{'scope/selector.parameter' or 'MACRO': value} of a gin config's text (an operative
  config), references and macros kept as text."""
  out = {}
  for statement in gin.config_parser.ConfigParser(text, _Delegate()):
    if isinstance(statement, gin.config_parser.BindingStatement):
      name = '/'.join(p for p in (statement.scope, statement.selector) if p)
      if statement.arg_name:
        name = f'{name}.{statement.arg_name}'
      out[name] = statement.value
  return out


def changed_bindings(old_text, new_text):
  """[(binding, old value, new value)] where two configs differ; a binding one of them lacks
  has the value '<unbound>' there."""
  old, new = config_bindings(old_text), config_bindings(new_text)
  missing = _Literal('<unbound>')
  return [(name, old.get(name, missing), new.get(name, missing))
          for name in sorted(set(old) | set(new))
          if old.get(name, missing) != new.get(name, missing)]


def bound_value(name):
  """The value gin binds to `name` ('lite.memory_budget_mb'), or None when unbound."""
  try:
    return gin.query_parameter(name)
  except ValueError:
    return None
