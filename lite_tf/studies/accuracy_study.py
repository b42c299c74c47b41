"""bin/accuracy_study.py's work: meta-train and evaluate over a grid of |H|, image sizes and
seeds through bin/train.py (one resumable train_dir per run), then a table and a plot of
held-out accuracy against |H| per image size (the shape of the LITE paper's Table 2).

|H| = 'all' trains with exact back-propagation (train_method.method = 'no_lite'); 0 is only
for learners whose query path carries every parameter (ProtoNets)."""

import csv
import io
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from lite_tf import atomic

ALL = 'all'
# |H| grid per learner: the paper's smallest useful |H| first (0 for ProtoNets, 1 for Simple
# CNAPs, whose set encoder needs a back-propagated image), then 10, 40 and every image.
DEFAULT_GRID = {'protonets': ('0', '10', '40', ALL), 'simple_cnaps': ('1', '10', '40', ALL)}
LEARNERS = {'protonets': '@protonets()', 'simple_cnaps': '@simple_cnaps()',
            'cnaps': '@cnaps()'}
# Learners whose backbone is frozen: pre-trained once per image size (bin/pretrain.py).
FROZEN_BACKBONE = ('simple_cnaps', 'cnaps')


def run_name(learner, image_size, subset, seed):
  return f'{learner}_s{image_size}_h{subset}_seed{seed}'


class RunFailed(Exception):
  """One run of the grid failed; the message names it, its error line and its log."""


def _run(cmd, log_path):
  with open(log_path, 'w', encoding='utf-8') as log:
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
  if proc.returncode:
    with open(log_path, encoding='utf-8') as f:
      lines = f.read().splitlines()
    reason = next((l for l in lines if l.startswith('error:')), lines[-1] if lines else '')
    raise RunFailed(f'{os.path.basename(os.path.dirname(log_path)) or log_path} failed (exit '
                    f'{proc.returncode}): {reason} (log: {log_path}; command: {" ".join(cmd)})')


def _bin(name):
  return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), 'bin', name)


def pretrained_backbone(output_dir, image_size, extra_bindings, report):
  """The frozen learners' Conv-4, pre-trained on the glyph train classes at image_size."""
  path = os.path.join(output_dir, 'pretrained', f'conv4_s{image_size}.weights.h5')
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    report(f'pre-training Conv-4 at {image_size}x{image_size}')
    repo = os.path.dirname(os.path.dirname(_bin('x')))
    _run([sys.executable, _bin('pretrain.py'),
          f'--gin_config={os.path.join(repo, "gin", "pretrain_demo.gin")}', f'--output={path}',
          f'--gin_bindings=run_pretraining.image_size={image_size}',
          f'--gin_bindings=glyph_batches.image_size={image_size}'] +
         [f'--gin_bindings={b}' for b in extra_bindings
          if b.startswith(('glyph_', 'run_pretraining.'))],
         path + '.log')
  return path


def run_grid(output_dir, gin_config, learners, image_sizes, grid, seeds, extra_bindings=(),
             report=print):
  """Trains and evaluates every (learner, image size, |H|, seed) not already done; returns
  the rows {learner, image_size, subset_size, seed, test_accuracy, test_ci95, seconds}."""
  rows = []
  for image_size in image_sizes:
    for learner in learners:
      weights = None
      if learner in FROZEN_BACKBONE:
        weights = pretrained_backbone(output_dir, image_size, extra_bindings, report)
      for subset in grid[learner]:
        for seed in seeds:
          name = run_name(learner, image_size, subset, seed)
          train_dir = os.path.join(output_dir, 'runs', name)
          results = os.path.join(train_dir, 'test_results.json')
          start = time.perf_counter()
          if not os.path.exists(results):
            report(f'training {name}')
            bindings = [f'run_training.learner = {LEARNERS[learner]}',
                        f'IMAGE_SIZE = {image_size}', f'lite.seed = {seed}']
            if subset == ALL:
              bindings.append("train_method.method = 'no_lite'")
            else:
              bindings.append(f'lite.num_backprop = {int(subset)}')
            if weights:
              bindings.append(f"BACKBONE_WEIGHTS = '{weights}'")
            bindings += list(extra_bindings)
            os.makedirs(train_dir, exist_ok=True)
            _run([sys.executable, _bin('train.py'), f'--gin_config={gin_config}',
                  f'--train_dir={train_dir}', f'--seed={seed}'] +
                 [f'--gin_bindings={b}' for b in bindings], os.path.join(train_dir, 'log.txt'))
          with open(results, encoding='utf-8') as f:
            result = json.load(f)
          rows.append({'learner': learner, 'image_size': image_size, 'subset_size': subset,
                       'seed': seed, 'test_accuracy': result['test_accuracy'],
                       'test_ci95': result['test_ci95'],
                       'seconds': time.perf_counter() - start})
          report(f'{name}: {100 * result["test_accuracy"]:.2f}% +/- '
                 f'{100 * result["test_ci95"]:.2f}%')
  return rows


# Two-sided 95% quantiles of Student's t with 1 to 30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(dof):
  """Student's t 97.5% quantile (tabulated to 30 degrees of freedom, then 1.96 + 2.4 / dof,
  within 0.002 of the exact value)."""
  return _T975[dof - 1] if dof <= len(_T975) else 1.96 + 2.4 / dof


def cell_interval(accuracies, episode_cis):
  """The 95% half-width of a cell's mean accuracy over seeds, and its two parts.

  Every seed is tested on the same episodes (the episode source's seed is the study's), so
  the test-episode error is shared by the seeds and does not shrink with them: its part is the
  runs' RMS test-episode half-width. The seed part is Student's t over the seeds' accuracies,
  t(S - 1) * std / sqrt(S), which also holds what training noise each run adds. The two are
  combined in quadrature. With one seed there is no seed part: the interval then covers the
  test episodes only (includes_seeds False).

  Returns:
    (half_width, episode_half_width, seed_half_width or None, includes_seeds).
  """
  accuracies = np.asarray(accuracies, dtype=float)
  episode = float(np.sqrt(np.mean(np.square(np.asarray(episode_cis, dtype=float)))))
  if len(accuracies) < 2:
    return episode, episode, None, False
  seed = (t_quantile_975(len(accuracies) - 1) * float(accuracies.std(ddof=1))
          / math.sqrt(len(accuracies)))
  return math.sqrt(episode ** 2 + seed ** 2), episode, seed, True


def aggregate(rows):
  """Per (learner, image size, |H|): the mean accuracy over seeds, its 95% CI with seed
  variance (cell_interval), the test-episode and seed parts of it, and the seeds' spread."""
  groups = {}
  for r in rows:
    groups.setdefault((r['learner'], r['image_size'], r['subset_size']), []).append(r)
  table = []
  for (learner, size, subset), members in groups.items():
    accuracies = np.array([m['test_accuracy'] for m in members])
    ci, episode_ci, seed_ci, includes_seeds = cell_interval(
        accuracies, [m['test_ci95'] for m in members])
    table.append({'learner': learner, 'image_size': size, 'subset_size': subset,
                  'accuracy': float(accuracies.mean()), 'ci95': ci,
                  'episode_ci95': episode_ci, 'seed_ci95': seed_ci,
                  'ci_includes_seeds': includes_seeds,
                  'seed_std': float(accuracies.std(ddof=1)) if len(members) > 1 else 0.0,
                  'seeds': len(members)})
  order = {ALL: 10 ** 9}
  table.sort(key=lambda r: (r['learner'], r['image_size'],
                            order.get(r['subset_size'], 0) or int(r['subset_size'])))
  return table


def markdown_table(table):
  lines = ['| learner | image size | \\|H\\| | accuracy (%) | 95% CI (%) | episodes part (%) '
           '| seeds part (%) | seed std (%) | seeds |',
           '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for r in table:
    seed_part = '-' if r.get('seed_ci95') is None else f"{100 * r['seed_ci95']:.2f}"
    lines.append(f"| {r['learner']} | {r['image_size']} | {r['subset_size']} | "
                 f"{100 * r['accuracy']:.2f} | {100 * r['ci95']:.2f} | "
                 f"{100 * r['episode_ci95']:.2f} | {seed_part} | "
                 f"{100 * r['seed_std']:.2f} | {r['seeds']} |")
  return '\n'.join(lines) + '\n'


def plot(table, path):
  """Accuracy against |H| (categorical axis), one panel per image size, a line per learner."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  sizes = sorted({r['image_size'] for r in table})
  fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
  colours = {'protonets': '#4c72b0', 'simple_cnaps': '#c44e52', 'cnaps': '#55a868'}
  for ax, size in zip(axes[0], sizes):
    chosen = [r for r in table if r['image_size'] == size]
    labels = []
    for r in chosen:
      if r['subset_size'] not in labels:
        labels.append(r['subset_size'])
    labels.sort(key=lambda s: 10 ** 9 if s == ALL else int(s))
    for learner in sorted({r['learner'] for r in chosen}):
      points = [r for r in chosen if r['learner'] == learner]
      x = [labels.index(r['subset_size']) for r in points]
      ax.errorbar(x, [100 * r['accuracy'] for r in points],
                  yerr=[100 * r['ci95'] for r in points], marker='o', capsize=3,
                  label=learner, color=colours.get(learner))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel('|H| (support images back-propagated)')
    ax.set_ylabel('held-out accuracy (%)')
    ax.set_title(f'{size}x{size}', fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  with atomic.atomic_path(path, suffix='.png') as tmp:
    fig.savefig(tmp, format='png', dpi=120)
  plt.close(fig)


def write_report(rows, table, setting, output_dir):
  atomic.write_json(os.path.join(output_dir, 'accuracy_study.json'),
                    {'setting': setting, 'runs': rows, 'table': table}, indent=1)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else ['learner'])
  writer.writeheader()
  writer.writerows(table)
  atomic.write_text(os.path.join(output_dir, 'accuracy_study.csv'), buffer.getvalue())
  atomic.write_text(os.path.join(output_dir, 'accuracy_study.md'), markdown_table(table))
  plot(table, os.path.join(output_dir, 'accuracy_study.png'))
