"""bin/evaluate.py for VTAB+MD: a trained learner on every MD-v2 and VTAB-v2 task that is
present, with the LITE paper's aggregates (its Fig. 3 and Table 2).

`gin/vtab_md.gin` turns it on (`vtab_md_suite.enabled = True`) and names the data:

  python bin/evaluate.py --train_dir=runs/md --gin_config=gin/vtab_md.gin \\
      --gin_bindings="run_vtab_md_evaluation.md_records_root = '/data/records'" \\
      --gin_bindings="run_vtab_md_evaluation.vtab_data_dir = '/data/tfds'"

MD-v2: the 8 test datasets (records folders `<md_records_root>/<name>`), `md_episodes` (600)
test episodes each, mean accuracy with 1.96 std / sqrt(episodes). VTAB-v2: each task's 1000
support images adapt the learner once (one chunked forward pass for LITE learners), then its
whole test split is classified in chunks; accuracy over every test example (those of a class
absent from the support set count as errors), with the binomial 95% CI
1.96 sqrt(p (1 - p) / n). Aggregates: the mean over a section's present tasks, CI from the
tasks' standard errors as independent (1.96 sqrt(sum se_i^2) / k). Tasks whose data are
absent are listed, not guessed. Written atomically to the output folder: vtab_md_results.json,
vtab_md_table.csv / .md, vtab_md_chart.png (bars with 95% CIs per section, as the paper's
Fig. 3).
"""

import csv
import io
import os
import time

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from lite_tf import atomic
from lite_tf import episode as episode_lib
from lite_tf import progress
from lite_tf.data.meta_dataset import reader
from lite_tf.data import saved_episodes
from lite_tf.data import vtab
from lite_tf.learners import base as learner_base
from lite_tf.lite import estimator
from lite_tf.lite import model as lite_model
from lite_tf.training import checkpoints
from lite_tf.training import evaluate

# Meta-Dataset v2's test datasets in VTAB+MD (VGG Flower left MD for VTAB; ImageNet is train).
MD_V2_TEST = ('omniglot', 'aircraft', 'cu_birds', 'dtd', 'quickdraw', 'fungi', 'traffic_sign',
              'mscoco')
SECTIONS = ('MD-v2', 'VTAB natural', 'VTAB specialized', 'VTAB structured')
COLUMNS = ('section', 'task', 'accuracy', 'ci95', 'n', 'unit', 'adapt_macs', 'forward_passes',
           'forward_backward_steps', 'seconds_per_task')


@gin.configurable
def vtab_md_suite(enabled=False):
  """gin switch read by bin/evaluate.py (gin/vtab_md.gin binds it True)."""
  return enabled


def is_vtab_md_run():
  try:
    return bool(gin.query_parameter('vtab_md_suite.enabled'))
  except ValueError:
    return False


def _vtab_section(task):
  return f'VTAB {task.group}'


class _Model:
  """The learner with its weights, built on the first episode it sees."""

  def __init__(self, learner, weights_path):
    self.learner, self.weights_path, self.meta_model = learner, weights_path, None

  def ready(self, first_episode):
    if self.meta_model is None:
      if isinstance(self.learner, learner_base.Learner):
        with self.learner.unpooled():
          self.learner(episode_lib.building_episode(first_episode).to_dict())
      checkpoints.load_learner_weights(self.learner, self.weights_path)
      self.meta_model = lite_model.make_meta_model(self.learner)
    return self.meta_model


def _cost(model, episode):
  cost = evaluate.test_time_cost(model.learner)
  return {'adapt_macs': evaluate.macs_for_model(model.meta_model, episode),
          'forward_passes': cost['forward_passes'],
          'forward_backward_steps': cost['forward_backward_steps']}


def _one_query(d):
  return dict(d, query_images=d['query_images'][:1], query_labels=d['query_labels'][:1])


def evaluate_vtab_task(model, source, label='task'):
  """(correct, total, seconds): adapt once to the support set, classify the test split."""
  learner = model.learner
  support = {'support_images': source.support_images, 'support_labels': source.support_labels,
             'way': tf.constant(source.way, tf.int32)}
  lite = isinstance(learner, learner_base.Learner)
  chunk = getattr(model.meta_model, 'chunk_size', 64)
  if lite:
    adapt = tf.function(lambda d: estimator.adapt_task(learner, episode_lib.Episode.from_dict(
        dict(d, query_images=d['support_images'][:1], query_labels=d['support_labels'][:1])),
                                                       chunk))
    classify = tf.function(lambda adapted, images: tf.argmax(estimator.adapted_query_logits(
        learner, adapted, episode_lib.to_model_input(images)), -1, output_type=tf.int32),
                           reduce_retracing=True)
  else:  # MAML / FineTuner adapt per call: every query chunk repeats the adaptation
    predict = tf.function(lambda d: tf.argmax(model.meta_model.predict_episode(
        episode_lib.Episode.from_dict(d)), -1, output_type=tf.int32), reduce_retracing=True)
  start = time.perf_counter()
  adapted = adapt(support) if lite else None
  correct = total = 0
  with progress.Progress(None, f'VTAB {label}', 'test examples') as shown:
    for chunk_dict in source.episodes():
      total += int(chunk_dict['query_labels'].shape[0]) + chunk_dict['query_dropped']
      if chunk_dict['query_labels'].shape[0] == 0:  # never run a network on an empty batch
        continue
      if lite:
        predictions = classify(adapted, chunk_dict['query_images'])
      else:
        predictions = predict({k: v for k, v in chunk_dict.items() if k != 'query_dropped'})
      correct += int(np.sum(predictions.numpy() == chunk_dict['query_labels'].numpy()))
      shown.update(total)
  return correct, total, time.perf_counter() - start


@gin.configurable
def run_vtab_md_evaluation(learner, weights_path, md_records_root=None, md_datasets=MD_V2_TEST,
                           md_episodes=600, md_config=None, vtab_data_dir=None,
                           vtab_tasks=None, vtab_support='train800val200', query_size=100,
                           image_size=None, max_query=None, seed=0, md_episodes_dir=None):
  """Evaluates on every present MD-v2 and VTAB-v2 task.

  Args:
    learner, weights_path: as run_evaluation (the learner built as in training).
    md_records_root: folder of Meta-Dataset records folders, one per dataset (None: no MD).
    md_datasets: the MD-v2 test datasets looked for under md_records_root.
    md_episodes: test episodes per MD dataset (600, as the paper).
    md_config: EpisodeDescriptionConfig of the test episodes (None: Meta-Dataset's).
    vtab_data_dir: TFDS data_dir with the prepared VTAB datasets (None: TFDS's default).
    vtab_tasks: VTAB-v2 task names (None: all 18).
    vtab_support: 'train800val200' (VTAB's) or 'first1000' (the LITE reference code's).
    query_size: test examples per chunk.
    image_size: side S (None: the learner's image_size).
    max_query: VTAB: only the first max_query test examples (None: all; for smoke runs).
    seed: seeds the MD test episodes.
    md_episodes_dir: saved episodes (bin/dump_episodes.py), `<dir>/<name>.json` per MD dataset:
      where present, the dataset is evaluated on exactly those episodes (all of them).
  Returns:
    (rows: one per present task, then one per section aggregate; missing: {task: reason}).
  """
  if isinstance(md_episodes, bool) or not isinstance(md_episodes, int) or md_episodes < 1:
    raise ValueError(f'run_vtab_md_evaluation.md_episodes must be an integer >= 1; got '
                     f'{md_episodes!r}')
  if vtab_support not in ('train800val200', 'first1000'):
    raise ValueError("run_vtab_md_evaluation.vtab_support must be 'train800val200' (VTAB's) or "
                     f"'first1000' (the LITE reference code's); got {vtab_support!r}")
  if md_episodes_dir is not None and not os.path.isdir(md_episodes_dir):
    raise ValueError(f'run_vtab_md_evaluation.md_episodes_dir={md_episodes_dir!r} is not a '
                     'folder (of bin/dump_episodes.py files, <dir>/<dataset>.json); unbind it to '
                     'sample fresh episodes')
  size = image_size or getattr(learner, 'image_size', None) or 84
  model = _Model(learner, weights_path)
  rows, missing = [], {}
  for name in md_datasets:
    records_dir = os.path.join(md_records_root, name) if md_records_root else None
    if not records_dir or not os.path.exists(os.path.join(records_dir, 'dataset_spec.json')):
      missing[f'MD-v2/{name}'] = (f'no records at {records_dir}/dataset_spec.json' if records_dir
                                  else 'run_vtab_md_evaluation.md_records_root is not set')
      continue
    saved = os.path.join(md_episodes_dir, f'{name}.json') if md_episodes_dir else None
    if saved and os.path.exists(saved):
      source = saved_episodes.SavedEpisodesSource(saved, records_dir, image_size=size)
      count, unit = source.num_episodes, f'saved episodes ({os.path.basename(saved)})'
    else:
      source = reader.records_episodes('test', records_dir=records_dir, image_size=size,
                                       config=md_config, seed=seed)
      count, unit = md_episodes, 'episodes'
    first = episode_lib.Episode.from_dict(next(iter(source.episodes())))
    meta_model = model.ready(first)
    mean, half, _, seconds = evaluate.evaluate_episodes(meta_model.predict_episode,
                                                        source.episodes(), count,
                                                        label=f'MD-v2 {name}')
    rows.append({'section': 'MD-v2', 'task': name, 'accuracy': mean, 'ci95': half,
                 'n': count, 'unit': unit, **_cost(model, first),
                 'seconds_per_task': evaluate.median_seconds(seconds)})
    logging.info('MD-v2 %s: %.4f +/- %.4f', name, mean, half)
  for name in (vtab_tasks or [t.name for t in vtab.TASKS]):
    task = vtab.get_task(name)
    try:
      source = vtab.VtabTaskSource(task, data_dir=vtab_data_dir, image_size=size,
                                   query_size=query_size, support=vtab_support,
                                   max_query=max_query)
    except vtab.VtabDataMissing as e:
      missing[f'VTAB/{name}'] = str(e)
      continue
    first_chunk = next(iter(source.episodes()), None)
    if first_chunk is None:
      raise vtab.VtabDataError(f'VTAB task {name!r}: the query split {source.query_split!r} '
                               f'in data_dir={vtab_data_dir!r} is empty')
    first = episode_lib.Episode.from_dict(
        {k: v for k, v in _one_query(first_chunk).items() if k != 'query_dropped'})
    model.ready(first)
    correct, total, seconds = evaluate_vtab_task(model, source, name)
    p = correct / total
    rows.append({'section': _vtab_section(task), 'task': name, 'accuracy': p,
                 'ci95': 1.96 * float(np.sqrt(p * (1 - p) / total)), 'n': total,
                 'unit': 'test examples', **_cost(model, first), 'seconds_per_task': seconds,
                 'tfds': f'{task.tfds_name}:{source.tfds_version}',
                 'splits': f'{source.support_split} / {source.query_split}'})
    logging.info('VTAB %s: %.4f +/- %.4f over %d', name, p, rows[-1]['ci95'], total)
  if not rows:
    raise ValueError('no MD-v2 or VTAB-v2 task is present: ' + '; '.join(
        f'{k}: {v}' for k, v in missing.items()))
  return rows + aggregates(rows), missing


def aggregates(rows):
  """Section means over the present tasks: MD-v2, VTAB all, natural, specialized, structured
  (the paper's Fig. 3 columns), with CIs from the tasks' standard errors."""
  out = []
  groups = [('MD-v2', lambda r: r['section'] == 'MD-v2'),
            ('VTAB all', lambda r: r['section'].startswith('VTAB')),
            ('VTAB natural', lambda r: r['section'] == 'VTAB natural'),
            ('VTAB specialized', lambda r: r['section'] == 'VTAB specialized'),
            ('VTAB structured', lambda r: r['section'] == 'VTAB structured')]
  expected = {'MD-v2': len(MD_V2_TEST), 'VTAB all': len(vtab.TASKS)}
  for group in vtab.GROUPS:
    expected[f'VTAB {group}'] = sum(t.group == group for t in vtab.TASKS)
  for name, member in groups:
    chosen = [r for r in rows if member(r)]
    if not chosen:
      continue
    k = len(chosen)
    se = np.sqrt(sum((r['ci95'] / 1.96) ** 2 for r in chosen)) / k
    out.append({'section': 'mean', 'task': f'{name} ({k}/{expected[name]} tasks)',
                'accuracy': float(np.mean([r['accuracy'] for r in chosen])),
                'ci95': float(1.96 * se), 'n': k, 'unit': 'tasks', 'adapt_macs': None,
                'forward_passes': None, 'forward_backward_steps': None,
                'seconds_per_task': None})
  return out


def _fmt(value, fmt):
  return '-' if value is None else format(value, fmt)


def markdown_table(rows, missing):
  lines = ['| section | task | accuracy (%) | 95% CI (%) | n | MACs to adapt | forward passes '
           '| steps | seconds / task |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for r in rows:
    macs = None if r['adapt_macs'] is None else r['adapt_macs'] / 1e9
    lines.append(f"| {r['section']} | {r['task']} | {100 * r['accuracy']:.2f} | "
                 f"{100 * r['ci95']:.2f} | {r['n']} {r['unit']} | {_fmt(macs, '.2f')} G | "
                 f"{_fmt(r['forward_passes'], 'd')} | {_fmt(r['forward_backward_steps'], 'd')} "
                 f"| {_fmt(r['seconds_per_task'], '.2f')} |")
  if missing:
    lines += ['', f'Not evaluated ({len(missing)}, data absent): ' + ', '.join(sorted(missing))]
  return '\n'.join(lines) + '\n'


def _chart(rows, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = [r for r in rows if r['section'] != 'mean']
  means = [r for r in rows if r['section'] == 'mean']
  colours = {'MD-v2': '#4c72b0', 'VTAB natural': '#55a868', 'VTAB specialized': '#c44e52',
             'VTAB structured': '#8172b2', 'mean': '#444444'}
  fig, (ax_mean, ax_tasks) = plt.subplots(
      1, 2, figsize=(4 + 0.35 * len(tasks) + 0.6 * len(means), 4.2),
      gridspec_kw={'width_ratios': [max(1, len(means)), max(1, len(tasks))]})
  for ax, chosen, label in ((ax_mean, means, 'section means'), (ax_tasks, tasks, 'tasks')):
    x = np.arange(len(chosen))
    ax.bar(x, [100 * r['accuracy'] for r in chosen], yerr=[100 * r['ci95'] for r in chosen],
           color=[colours.get(r['section'], '#888888') if label == 'tasks' else
                  colours.get(r['task'].split(' (')[0], '#444444') for r in chosen],
           capsize=3)
    ax.set_xticks(x)
    ax.set_xticklabels([r['task'] for r in chosen], rotation=60, ha='right', fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel('accuracy (%)')
    ax.set_title(label, fontsize=9)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  with atomic.atomic_path(path, suffix='.png') as tmp:
    fig.savefig(tmp, format='png', dpi=120)
  plt.close(fig)


def write_report(rows, missing, output_dir, model_name='model'):
  atomic.write_json(os.path.join(output_dir, 'vtab_md_results.json'),
                    {'model': model_name, 'results': rows, 'missing': missing}, indent=1)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=COLUMNS + ('tfds', 'splits'), restval='')
  writer.writeheader()
  writer.writerows(rows)
  atomic.write_text(os.path.join(output_dir, 'vtab_md_table.csv'), buffer.getvalue())
  atomic.write_text(os.path.join(output_dir, 'vtab_md_table.md'), markdown_table(rows, missing))
  _chart(rows, os.path.join(output_dir, 'vtab_md_chart.png'), f'VTAB+MD: {model_name}')
