"""bin/evaluate.py's work: accuracy with 95% confidence intervals and test-time cost per
dataset, written as JSON, CSV and a markdown table (atomically)."""

import csv
import io
import os

from absl import logging
import gin

from lite_tf import atomic
from lite_tf import episode as episode_lib
from lite_tf.data import adapters
from lite_tf.data import in_memory
from lite_tf.learners import base as learner_base
from lite_tf.lite import model as lite_model
from lite_tf.training import checkpoints
from lite_tf.training import evaluate

COLUMNS = ('dataset', 'accuracy', 'ci95', 'episodes', 'adapt_macs', 'forward_passes',
           'forward_backward_steps', 'seconds_per_task', 'parameters', 'trainable_parameters')


def _first_episode(source):
  return in_memory.episode_from_dict(next(iter(source.episodes())))


def find_weights(train_dir, which='best'):
  """train_dir/best/learner.weights.h5 ('best', falling back to the final weights) or
  train_dir/learner.weights.h5 ('final')."""
  candidates = ([os.path.join(train_dir, 'best', 'learner.weights.h5')] if which == 'best'
                else [])
  candidates.append(os.path.join(train_dir, 'learner.weights.h5'))
  for path in candidates:
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f'--train_dir={train_dir!r}: no learner weights (looked for '
                          f'{candidates}); train first with bin/train.py')


@gin.configurable
def run_evaluation(learner, weights_path, datasets=None, num_episodes=600, split='test'):
  """Mean accuracy over `num_episodes` episodes of each dataset, with 95% CI and cost.

  Args:
    learner: the learner built as in training (its weights are loaded from weights_path).
    weights_path: learner weights (train_dir/best/learner.weights.h5 by default).
    datasets: {name: callable split -> episode source}; default: the training source,
      `{'default': run_training.episode_source}`.
    num_episodes: K, episodes per dataset (600, as in the paper).
    split: which split's classes to sample.
  Returns:
    list of row dicts (COLUMNS).
  """
  if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
    raise ValueError(f'run_evaluation.num_episodes must be an integer >= 1; got '
                     f'{num_episodes!r}')
  if not datasets:
    datasets = {'default': gin.query_parameter('run_training.episode_source')
                .scoped_configurable_fn}
  rows = []
  loaded = False
  for name, make_source in datasets.items():
    source = adapters.make_episode_source(make_source, split)
    first = _first_episode(source)
    episode_lib.validate_episode(first, image_size=getattr(learner, 'image_size', None))
    if not loaded:
      if isinstance(learner, learner_base.Learner):
        with learner.unpooled():
          learner(episode_lib.building_episode(first).to_dict())
      checkpoints.load_learner_weights(learner, weights_path)
      meta_model = lite_model.make_meta_model(learner)
      loaded = True
    mean, half_width, _, seconds = evaluate.evaluate_episodes(
        meta_model.predict_episode, source.episodes(), num_episodes, label=f'{name}')
    cost = evaluate.test_time_cost(learner)
    total, trainable = evaluate.count_parameters(learner)
    rows.append({
        'dataset': name, 'accuracy': mean, 'ci95': half_width, 'episodes': num_episodes,
        'adapt_macs': evaluate.macs_for_model(meta_model, first),
        'forward_passes': cost['forward_passes'],
        'forward_backward_steps': cost['forward_backward_steps'],
        'seconds_per_task': evaluate.median_seconds(seconds),
        'parameters': total, 'trainable_parameters': trainable})
    logging.info('%s: %.4f +/- %.4f', name, mean, half_width)
  return rows


def _fmt_macs(macs):
  return '-' if macs is None else f'{macs / 1e9:.2f} G'


def markdown_table(rows):
  lines = ['| dataset | accuracy (%) | 95% CI (%) | episodes | MACs to adapt | forward passes '
           '| forward-backward steps | seconds / task | parameters |',
           '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for r in rows:
    lines.append(f"| {r['dataset']} | {100 * r['accuracy']:.2f} | {100 * r['ci95']:.2f} | "
                 f"{r['episodes']} | {_fmt_macs(r['adapt_macs'])} | {r['forward_passes']} | "
                 f"{r['forward_backward_steps']} | {r['seconds_per_task']:.3f} | "
                 f"{r['parameters'] / 1e6:.2f} M |")
  return '\n'.join(lines) + '\n'


def write_report(rows, output_dir):
  """results.json, results.csv and results.md in output_dir, each written atomically."""
  atomic.write_json(os.path.join(output_dir, 'results.json'), {'results': rows}, indent=1)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
  writer.writeheader()
  writer.writerows(rows)
  atomic.write_text(os.path.join(output_dir, 'results.csv'), buffer.getvalue())
  atomic.write_text(os.path.join(output_dir, 'results.md'), markdown_table(rows))
