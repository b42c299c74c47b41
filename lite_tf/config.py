"""gin parsing shared by the binaries, with errors that name the file or binding at fault, and
the comparison of a resumed run's configuration with its saved one (run_changes)."""

import inspect
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


# Parameters whose default changed, with the default before: a run whose operative config
# lacks the binding trained with that earlier value (not with today's default).
EARLIER_DEFAULTS = {
    # 'task' since issue #28: the set encoder's BatchNorm with the whole context set's
    # statistics; runs before it normalised with each call's ('batch').
    'cnaps.set_encoder_norm': 'batch',
    'simple_cnaps.set_encoder_norm': 'batch',
    # Added with its default 'floor' (the reference's max pool) in issue #28; runs before it
    # pooled with padding 'same'.
    'cnaps.set_encoder_pooling': 'same',
    'simple_cnaps.set_encoder_pooling': 'same',
    # 'loop' since issue #31 (the same gradient, traced as one while-loop per pass).
    'lite.recompute_mode': 'unrolled',
    # 'auto' since issue #31 (micro-batches of 8 for large back-propagated images); runs
    # before it never recomputed unless told.
    'lite.recompute_batch': None,
}

# Bindings that change nothing a run computes while the run recomputes no activations.
_RECOMPUTATION_ONLY = ('lite.recompute_mode',)


def run_changes(old_text, new_text):
  """[(binding, value in the run, value now)] that differ between a run's saved operative
  config and this one's (bin/train.py, bin/pretrain.py), bindings this run has not reached
  yet left out. A binding the run
  lacks counts as the value it trained with: its EARLIER_DEFAULTS entry, else today's default
  (a setting added to lite_tf since that run)."""
  changes = []
  for name, before, now in changed_bindings(old_text, new_text):
    if repr(now) == '<unbound>':
      continue  # not called yet at this point of this run: compared when it is
    if repr(before) == '<unbound>':
      selector = name.rpartition('/')[2]
      if selector in EARLIER_DEFAULTS:
        before = EARLIER_DEFAULTS[selector]
        if before == now:
          continue
      elif _is_default(name, now):
        continue
    changes.append((name, before, now))
  if changes and not (_recomputes(old_text) or _recomputes(new_text)):
    changes = [c for c in changes if c[0].rpartition('/')[2] not in _RECOMPUTATION_ONLY]
  return changes


def _recomputes(text):
  """Whether a run with this operative config may recompute activations (recompute_batch
  set, or a memory budget whose plan may turn recomputation on)."""
  return any(value is not None for name, value in config_bindings(text).items()
             if name.rpartition('/')[2] in ('lite.recompute_batch', 'lite.memory_budget_mb'))


def _is_default(name, value):
  """Whether `value` is the default of the configurable parameter `name` (scope/sel.param)."""
  selector, _, parameter = name.rpartition('.')
  try:
    configurable = gin.config._REGISTRY.get_match(selector.rpartition('/')[2])  # pylint: disable=protected-access
    default = inspect.signature(configurable.wrapped).parameters[parameter].default
  except (KeyError, ValueError, TypeError, AttributeError):
    return False
  return default is not inspect.Parameter.empty and default == value


def bound_value(name):
  """The value gin binds to `name` ('lite.memory_budget_mb'), or None when unbound."""
  try:
    return gin.query_parameter(name)
  except ValueError:
    return None
