"""Bad input and faults through the five binaries, as a user meets them: one table.

Every case runs a binary in a fresh process and asserts its exit code, that the first line of
stderr names the culprit (flag, gin binding or file) and what was expected, that no traceback
is printed, and what is left on disk (nothing half-written, nothing of the user's replaced).
Cases share one trained demo run (conftest's trained_demo_dir) and copy it when they would
change it.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from typing import Callable, Optional

import numpy as np
from PIL import Image
import pytest

from conftest import FIXTURE
from conftest import first_line
from conftest import REPO_ROOT

GIN = os.path.join(REPO_ROOT, 'gin')
DEMO = os.path.join(GIN, 'demo_protonets.gin')
SHORT = ['run_training.num_steps=2', 'run_training.steps_per_log=2',
         'run_training.valid_episodes=1', 'run_training.test_episodes=1']


class Context:
  """What a case needs: a scratch folder, the shared trained run, the records fixture."""

  def __init__(self, tmp_path, trained):
    self.tmp = tmp_path
    self._trained = trained

  def trained_copy(self):
    """A private copy of the shared trained demo run (train_dir)."""
    copy = self.tmp / 'trained'
    if not copy.exists():
      shutil.copytree(self._trained, copy)
    return copy

  def trained(self):
    return self._trained

  def images(self, classes=3, per_class=4, name='images'):
    root = self.tmp / name
    rng = np.random.RandomState(0)
    for c in range(classes):
      (root / f'class{c}').mkdir(parents=True)
      for i in range(per_class):
        Image.fromarray(rng.randint(0, 256, (12, 12, 3), dtype=np.uint8)).save(
            root / f'class{c}' / f'{i}.png')
    return root

  def records_copy(self):
    if not os.path.exists(os.path.join(FIXTURE, 'dataset_spec.json')):
      pytest.skip(f'Meta-Dataset fixture not found at {FIXTURE}')
    copy = self.tmp / 'records'
    if not copy.exists():
      shutil.copytree(FIXTURE, copy)
    return copy


def _digest(path):
  return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def _other_learner_weights(path):
  """Weights of a MAML learner (Conv-4, 28x28) where a ProtoNets run's weights belong."""
  code = ('import sys, numpy as np\n'
          'from lite_tf.learners import maml\n'
          "m = maml.Maml(backbone='conv4', image_size=28, max_way=5)\n"
          'm(np.zeros((1, 28, 28, 3), np.float32))\n'
          'm.save_weights(sys.argv[1])\n')
  subprocess.run([sys.executable, '-c', code, str(path)], check=True, capture_output=True,
                 timeout=300)


@dataclasses.dataclass
class Case:
  name: str
  binary: str
  args: Callable  # Context -> list of arguments
  message: str  # in stderr's first line (for exit 0: anywhere in stderr)
  code: int = 1
  check: Optional[Callable] = None  # (Context, state from args) -> None: the files left behind
  slow: bool = False


def _train_dir_args(ctx, *bindings, gin_file=DEMO, train_dir=None):
  train_dir = train_dir or ctx.tmp / 'run'
  return [f'--train_dir={train_dir}', f'--gin_config={gin_file}'] + [
      f'--gin_bindings={b}' for b in bindings]


def _refused_on_trained(*bindings, gin_file=DEMO):
  """Args that resume the copied trained run with a setting that must be refused; the state
  records its operative config and checkpoint index to check they are kept."""
  def args(ctx):
    train_dir = ctx.trained_copy()
    ctx.state = {p: _digest(train_dir / p) for p in ('operative_config.gin',
                                                      'checkpoints/checkpoint')}
    return _train_dir_args(ctx, *bindings, gin_file=gin_file, train_dir=train_dir)
  return args


# The bindings of conftest's trained_demo_dir, which re-run it unchanged.
TRAINED = ('run_training.num_steps=50', 'run_training.steps_per_log=25',
           'run_training.valid_episodes=2', 'run_training.test_episodes=2')


def _kept_all(ctx):
  """Nothing of the finished run was rewritten: config, index, results, history, weights."""
  train_dir = ctx.trained_copy()
  for path in ('test_results.json', 'history.jsonl', 'learner.weights.h5'):
    assert _digest(train_dir / path) == _digest(ctx.trained() / path), f'{path} was rewritten'
  _kept(ctx)


def _recorded_test_episodes(ctx):
  train_dir = ctx.trained_copy()
  changes = [json.loads(line) for line in (train_dir / 'config_changes.jsonl').read_text()
             .splitlines()]
  assert changes == [{'changed': [['run_training.test_episodes', '2', '3']]}]
  assert json.loads((train_dir / 'test_results.json').read_text())['num_test_episodes'] == 3
  for path in ('history.jsonl', 'learner.weights.h5'):  # nothing retrained
    assert _digest(train_dir / path) == _digest(ctx.trained() / path), f'{path} was rewritten'


def _deleted_index(ctx):
  train_dir = ctx.trained_copy()
  (train_dir / 'checkpoints' / 'checkpoint').unlink()
  return _train_dir_args(ctx, *TRAINED, train_dir=train_dir)


def _no_checkpoints(ctx):
  train_dir = ctx.trained_copy()
  shutil.rmtree(train_dir / 'checkpoints')
  return _train_dir_args(ctx, *TRAINED, train_dir=train_dir)


def _history_kept(ctx):
  """The run resumed (or was refused) without training over it: the history is the run's."""
  train_dir = ctx.trained_copy()
  assert _digest(train_dir / 'history.jsonl') == _digest(ctx.trained() / 'history.jsonl')


def _truncated_checkpoint(ctx):
  train_dir = ctx.trained_copy()
  data = next((train_dir / 'checkpoints').glob('ckpt-50.data-*'))
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  return _train_dir_args(ctx, *TRAINED, train_dir=train_dir)


def _kept(ctx):
  for path, digest in ctx.state.items():
    assert _digest(ctx.trained_copy() / path) == digest, f'{path} was rewritten'


def _missing_include(ctx):
  gin_file = ctx.tmp / 'bad.gin'
  gin_file.write_text("include 'gin/no_such_file.gin'\n")
  return [f'--train_dir={ctx.tmp / "run"}', f'--gin_config={gin_file}']


def _file_in_the_way(ctx):
  blocker = ctx.tmp / 'a_file'
  blocker.write_text('not a folder')
  return blocker


def _with_orphans(ctx):
  train_dir = ctx.trained_copy()
  (train_dir / 'best' / '.tmp-abc123.weights.h5').write_bytes(b'x' * 100)
  (train_dir / 'checkpoints' / 'ckpt-9_temp').mkdir()
  (train_dir / 'checkpoints' / 'ckpt-9_temp' / 'part-00000').write_bytes(b'x')
  (train_dir / 'notes.tmp-keep').write_text('the user\'s file')
  return _train_dir_args(ctx, 'run_training.num_steps=50', 'run_training.steps_per_log=25',
                         'run_training.valid_episodes=2', 'run_training.test_episodes=2',
                         train_dir=train_dir)


def _orphans_gone(ctx):
  train_dir = ctx.trained_copy()
  assert not (train_dir / 'best' / '.tmp-abc123.weights.h5').exists()
  assert not (train_dir / 'checkpoints' / 'ckpt-9_temp').exists()
  assert (train_dir / 'notes.tmp-keep').read_text() == 'the user\'s file'
  mode = os.stat(train_dir / 'operative_config.gin').st_mode & 0o777  # rewritten: umask kept
  assert mode == 0o666 & ~_umask(), oct(mode)


def _garbage_weights(ctx):
  train_dir = ctx.trained_copy()
  (train_dir / 'best' / 'learner.weights.h5').write_bytes(b'\x89HDF\r\n garbage')
  return [f'--train_dir={train_dir}', '--num_episodes=2']


def _other_weights(binary):
  def args(ctx):
    train_dir = ctx.trained_copy()
    _other_learner_weights(train_dir / 'best' / 'learner.weights.h5')
    if binary == 'evaluate':
      return [f'--train_dir={train_dir}', '--num_episodes=2']
    support = ctx.images(classes=2, per_class=2, name='support')
    return [f'--train_dir={train_dir}', f'--support_dir={support}']
  return args


def _convert_args(ctx, *extra, classes=3):
  return [f'--input_dir={ctx.images(classes=classes)}', f'--output_dir={ctx.tmp / "out"}',
          *extra]


def _non_empty_output(ctx):
  out = ctx.tmp / 'out'
  out.mkdir()
  (out / 'dataset_spec.json').write_text('{"the": "old dataset"}')
  (out / '0.tfrecords').write_bytes(b'old records')
  return _convert_args(ctx)


def _corrupt_image(ctx):
  root = ctx.images()
  (root / 'class1' / 'broken.png').write_bytes(b'\x89PNG not really')
  return [f'--input_dir={root}', f'--output_dir={ctx.tmp / "out"}']


def _old_output_kept(ctx):
  assert (ctx.tmp / 'out' / 'dataset_spec.json').read_text() == '{"the": "old dataset"}'
  assert (ctx.tmp / 'out' / '0.tfrecords').read_bytes() == b'old records'
  assert sorted(os.listdir(ctx.tmp)) == ['images', 'out']  # no temporary folder left


def _not_a_dataset(ctx):
  out = ctx.tmp / 'out'
  out.mkdir()
  (out / 'thesis.tex').write_text('the user\'s work')
  return _convert_args(ctx, '--overwrite')


def _user_folder_kept(ctx):
  assert (ctx.tmp / 'out' / 'thesis.tex').read_text() == 'the user\'s work'
  assert sorted(os.listdir(ctx.tmp / 'out')) == ['thesis.tex']


def _overwrite(ctx):
  out = ctx.tmp / 'out'
  out.mkdir()
  for stale in ('37.tfrecords', 'old_splits.json', 'dataset_spec.json'):
    (out / stale).write_text('stale')
  return _convert_args(ctx, '--overwrite', '--split_ratios=0.34,0.33,0.33')


def _replaced_whole(ctx):
  names = sorted(os.listdir(ctx.tmp / 'out'))
  assert names == ['0.tfrecords', '1.tfrecords', '2.tfrecords', 'dataset_spec.json',
                   'out_splits.json'], names
  assert sorted(os.listdir(ctx.tmp)) == ['images', 'out']
  mode = os.stat(ctx.tmp / 'out' / 'dataset_spec.json').st_mode & 0o777
  assert mode == 0o666 & ~_umask(), oct(mode)


def _umask():
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _records_run(ctx, *bindings, records=None):
  records = records or ctx.records_copy()
  return _train_dir_args(ctx, f"records_episodes.records_dir='{records}'",
                         'records_episodes.image_size=28', 'IMAGE_SIZE=28',
                         'records_episodes.shuffle_buffer=0', *SHORT, *bindings,
                         gin_file=os.path.join(GIN, 'records_protonets.gin'))


def _corrupt_record(ctx):
  """Class 5's record 3 keeps its framing and CRC but its image bytes are not an image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  records = ctx.records_copy()
  path = records / '5.tfrecords'
  raw = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
  bad = tf.train.Example(features=tf.train.Features(feature={
      'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'not an image'])),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[5])),
  })).SerializeToString()
  raw[3] = bad
  with tf.io.TFRecordWriter(str(path)) as writer:
    for r in raw:
      writer.write(r)
  # Fixed 5-way episodes over every train class soon reach class 5.
  return _records_run(ctx, 'EpisodeDescriptionConfig.num_ways=33',
                      'EpisodeDescriptionConfig.num_support=16',
                      'EpisodeDescriptionConfig.num_query=4', 'lite.num_backprop=8',
                      'records_episodes.config=@EpisodeDescriptionConfig()',
                      "EpisodeDescriptionConfig.max_ways_upper_bound=50")


def _spec_claims_more(ctx):
  records = ctx.records_copy()
  spec = json.loads((records / 'dataset_spec.json').read_text())
  spec['images_per_class']['7'] = 25
  (records / 'dataset_spec.json').write_text(json.dumps(spec))
  return _records_run(ctx, 'EpisodeDescriptionConfig.num_ways=33',
                      'EpisodeDescriptionConfig.num_support=1',
                      'EpisodeDescriptionConfig.num_query=1', 'lite.num_backprop=8')


def _orbit_twin_slugs(ctx):
  """The reference tree with a second object of P901 whose name differs from 't shirt' only
  by a hyphen: the release's video and frame names could not tell them apart."""
  root = ctx.tmp / 'orbit'
  shutil.copytree(os.path.join(REPO_ROOT, 'tests', 'data', 'orbit_reference', 'tree'), root)
  user = root / 'test' / 'P901'
  shutil.copytree(user / 't shirt', user / 't-shirt')
  return [f'--train_dir={ctx.tmp / "run"}',
          f"--gin_config={os.path.join(GIN, 'orbit_demo_protonets.gin')}",
          f'--gin_bindings=orbit_episodes.root="{root}"',
          *[f'--gin_bindings={b}' for b in SHORT]]


CASES = [
    # bin/train.py: gin bindings and files.
    Case('train_unknown_binding', 'train', lambda c: _train_dir_args(c, 'lite.num_backprob=3'),
         'num_backprob'),
    Case('train_negative_backprop', 'train', lambda c: _train_dir_args(c, 'lite.num_backprop=-1'),
         'LiteModel.num_backprop must be an integer >= 0 (0: the query path only, for '
         'ProtoNets); got -1'),
    Case('train_wrong_image_size', 'train',
         lambda c: _train_dir_args(c, 'protonets.image_size=32'),
         'are 28x28 but the model expects 32x32'),
    Case('train_unknown_backbone', 'train',
         lambda c: _train_dir_args(c, 'protonets.backbone="resnet50"'),
         "unknown backbone 'resnet50'"),
    Case('train_num_steps_string', 'train',
         lambda c: _train_dir_args(c, 'run_training.num_steps="ten"'),
         "run_training.num_steps must be an integer >= 1; got 'ten'"),
    Case('train_num_steps_zero', 'train', lambda c: _train_dir_args(c, 'run_training.num_steps=0'),
         'run_training.num_steps must be an integer >= 1; got 0'),
    Case('train_steps_per_log_zero', 'train',
         lambda c: _train_dir_args(c, 'run_training.steps_per_log=0'),
         'run_training.steps_per_log must be an integer >= 1; got 0'),
    Case('train_missing_gin_file', 'train',
         lambda c: [f'--train_dir={c.tmp / "run"}', f'--gin_config={c.tmp / "nope.gin"}'],
         'no such file'),
    Case('train_missing_include', 'train', _missing_include, 'no_such_file.gin'),
    Case('train_no_gin_config', 'train', lambda c: [f'--train_dir={c.tmp / "run"}'],
         '--gin_config: give at least one gin file'),
    Case('train_dir_is_a_file', 'train',
         lambda c: _train_dir_args(c, train_dir=_file_in_the_way(c) / 'run'), '--train_dir'),
    Case('train_other_learner_on_a_trained_dir', 'train',
         _refused_on_trained(gin_file=os.path.join(GIN, 'demo_maml.gin')),
         'holds a run trained with another configuration (', check=_kept),
    Case('train_other_steps_per_log_on_a_trained_dir', 'train',
         _refused_on_trained('run_training.steps_per_log=20', 'run_training.num_steps=100'),
         'run_training.steps_per_log = 25 in the run, 20 now', check=_kept),
    # A finished run is never trained over or rewritten by another configuration.
    Case('train_changed_way_on_a_finished_run', 'train',
         _refused_on_trained(*TRAINED, 'glyph_episodes.way=3'),
         'holds a run trained with another configuration (glyph_episodes.way = 5 in the run, 3 '
         "now); nothing was written", check=_kept_all),
    Case('train_changed_learning_rate_on_a_finished_run', 'train',
         _refused_on_trained(*TRAINED, 'make_optimizer.learning_rate=0.5'),
         'make_optimizer.learning_rate = 0.001 in the run, 0.5 now', check=_kept_all),
    Case('train_changed_image_size_on_a_finished_run', 'train',
         _refused_on_trained(*TRAINED, 'IMAGE_SIZE=32'), 'IMAGE_SIZE = 28 in the run, 32 now',
         check=_kept_all),
    Case('train_evaluation_episodes_change_is_allowed_and_recorded', 'train',
         _refused_on_trained(*TRAINED[:-1], 'run_training.test_episodes=3'), '', code=0,
         check=_recorded_test_episodes),
    Case('train_deleted_checkpoint_index_resumes_the_run', 'train', _deleted_index,
         'no checkpoint index file; resuming from the newest checkpoint present, ckpt-50',
         code=0, check=_history_kept),
    Case('train_without_checkpoints_is_not_trained_over', 'train', _no_checkpoints,
         'holds a run (history.jsonl, learner.weights.h5) but no checkpoint',
         check=_history_kept),
    Case('train_truncated_checkpoint_is_named', 'train', _truncated_checkpoint,
         'checkpoints/ckpt-50: unreadable checkpoint (truncated or damaged?'),
    Case('train_removes_orphans_of_killed_writes', 'train', _with_orphans, '', code=0,
         check=_orphans_gone),
    Case('train_num_steps_not_a_multiple_says_how_many', 'train',
         lambda c: _train_dir_args(c, 'run_training.num_steps=3', 'run_training.steps_per_log=2',
                                   'run_training.valid_episodes=1',
                                   'run_training.test_episodes=1'),
         'run_training.num_steps=3 is not a multiple of run_training.steps_per_log=2: 2 tasks '
         'will run', code=0),
    Case('train_simple_cnaps_without_backbone_weights_warns', 'train',
         lambda c: _train_dir_args(c, *SHORT, gin_file=os.path.join(GIN, 'demo_simple_cnaps.gin')),
         'WARNING: SimpleCnaps has no backbone weights (BACKBONE_WEIGHTS = None)', code=0,
         slow=True),
    # bin/train.py on Meta-Dataset records.
    Case('records_corrupt_image_after_the_first_episode', 'train', _corrupt_record,
         "5.tfrecords: record 3 of class 5 ('"),
    Case('records_spec_claims_more_images_than_the_file', 'train', _spec_claims_more,
         '7.tfrecords: class 7 '),
    Case('records_classes_too_small_for_the_fixed_shots', 'train',
         lambda c: _records_run(c, 'records_episodes.config=@EpisodeDescriptionConfig()',
                                'EpisodeDescriptionConfig.num_support=30'),
         'has 20 images but EpisodeDescriptionConfig.num_support = 30 needs at least 31'),
    # bin/evaluate.py
    Case('evaluate_untrained_dir', 'evaluate', lambda c: [f'--train_dir={c.tmp}'],
         'no operative_config.gin'),
    Case('evaluate_zero_episodes', 'evaluate',
         lambda c: [f'--train_dir={c.trained()}', '--num_episodes=0'],
         '--num_episodes must be at least 1; got 0'),
    Case('evaluate_output_dir_is_a_file', 'evaluate',
         lambda c: [f'--train_dir={c.trained()}', f'--output_dir={_file_in_the_way(c)}'],
         'is a file, not a folder'),
    Case('evaluate_unknown_split', 'evaluate',
         lambda c: [f'--train_dir={c.trained()}', "--gin_bindings=run_evaluation.split='tset'"],
         "unknown split 'tset'"),
    Case('evaluate_garbage_weights', 'evaluate', _garbage_weights,
         'learner.weights.h5: not a readable Keras .weights.h5 file'),
    Case('evaluate_weights_of_another_learner', 'evaluate', _other_weights('evaluate'),
         'holds the weights of a different learner'),
    Case('train_way_one', 'train', lambda c: _train_dir_args(c, *SHORT, 'glyph_episodes.way=1'),
         'glyph_episodes.way must be an integer >= 2; got 1'),
    Case('train_shot_zero', 'train', lambda c: _train_dir_args(c, *SHORT, 'glyph_episodes.shot=0'),
         'glyph_episodes.shot must be an integer >= 1; got 0'),
    Case('train_image_size_negative', 'train', lambda c: _train_dir_args(c, *SHORT, 'IMAGE_SIZE=-4'),
         'protonets.image_size (IMAGE_SIZE in the gin files) must be an integer >= 1; '
         'got -4'),
    Case('pretrain_num_steps_zero', 'pretrain',
         lambda c: [f'--output={c.tmp / "w.h5"}', f'--gin_config={GIN}/pretrain_demo.gin',
                    '--gin_bindings=run_pretraining.num_steps=0'],
         'run_pretraining.num_steps must be an integer >= 1; got 0'),
    Case('pretrain_batches_of_another_size', 'pretrain',
         lambda c: [f'--output={c.tmp / "w.h5"}', f'--gin_config={GIN}/pretrain_demo.gin',
                    '--gin_bindings=glyph_batches.image_size=32'],
         'run_pretraining.batch_source gives 32x32 images but run_pretraining.image_size=28'),
    Case('train_negative_learning_rate', 'train',
         lambda c: _train_dir_args(c, *SHORT, 'make_optimizer.learning_rate=-0.1'),
         'make_optimizer.learning_rate must be a number > 0; got -0.1'),
    Case('train_multi_worker_without_tf_config', 'train',
         lambda c: _train_dir_args(c, *SHORT) + ['--distribution=multi_worker'],
         '--distribution=multi_worker needs TF_CONFIG, naming the cluster and this worker'),
    Case('train_orbit_objects_whose_names_share_a_slug', 'train', _orbit_twin_slugs,
         "P901/t-shirt: two objects of P901 whose names differ only in spaces and hyphens"),
    # bin/personalize.py
    Case('personalize_weights_of_another_learner', 'personalize', _other_weights('personalize'),
         'holds the weights of a different learner'),
    Case('personalize_class_folder_without_images', 'personalize',
         lambda c: [f'--train_dir={c.trained()}',
                    f"--support_dir={os.path.dirname(_empty_class(c))}"],
         'only_class'),
    # bin/convert_to_records.py
    Case('convert_missing_input', 'convert',
         lambda c: [f'--input_dir={c.tmp / "nope"}', f'--output_dir={c.tmp / "out"}'],
         'is not a directory'),
    Case('convert_ratios_not_summing_to_one', 'convert',
         lambda c: _convert_args(c, '--split_ratios=0.5,0.5,0.5'), 'summing to 1'),
    Case('convert_ratios_not_numbers', 'convert',
         lambda c: _convert_args(c, '--split_ratios=a,b,c'),
         "--split_ratios must be three numbers (train,valid,test class ratios, e.g. "
         "0.7,0.15,0.15); got 'a,b,c'"),
    Case('convert_output_is_a_file', 'convert',
         lambda c: [f'--input_dir={c.images()}', f'--output_dir={_file_in_the_way(c)}'],
         'is a file, not a folder'),
    Case('convert_refuses_a_non_empty_output', 'convert', _non_empty_output,
         'is not empty (2 entries); pass --overwrite', check=_old_output_kept),
    Case('convert_overwrite_replaces_the_whole_folder', 'convert', _overwrite, '', code=0,
         check=_replaced_whole),
    Case('convert_overwrite_refuses_a_folder_without_a_dataset', 'convert', _not_a_dataset,
         'holds no dataset (dataset_spec.json is missing)', check=_user_folder_kept),
    Case('convert_refuses_an_input_inside_the_output', 'convert',
         lambda c: [f'--input_dir={c.images()}', f'--output_dir={c.tmp}', '--overwrite'],
         'overlap; write the records to a separate folder'),
    Case('convert_names_and_counts_a_corrupt_image', 'convert', _corrupt_image,
         'warning: left out 1 unreadable image(s) of --input_dir (the dataset holds the 12 '
         'others):', code=0),
    Case('convert_single_class_warns', 'convert', lambda c: _convert_args(c, classes=1),
         'warning: the valid split has no classes', code=0),
    # bin/pretrain.py
    Case('pretrain_output_in_a_file', 'pretrain',
         lambda c: [f'--output={_file_in_the_way(c) / "w.h5"}',
                    f'--gin_config={GIN}/pretrain_demo.gin'], '--output'),
    Case('pretrain_no_gin_config', 'pretrain', lambda c: [f'--output={c.tmp / "w.h5"}'],
         '--gin_config: give at least one gin file'),
    Case('pretrain_missing_required_binding', 'pretrain',
         lambda c: [f'--output={c.tmp / "w.h5"}', f'--gin_config={_empty_gin(c)}'],
         "gin: Required bindings for `run_pretraining` not provided in config: ['batch_source']"),
    Case('pretrain_output_an_existing_folder', 'pretrain',
         lambda c: [f'--output={c.tmp}', f'--gin_config={GIN}/pretrain_demo.gin'],
         'is an existing folder'),
    Case('pretrain_output_unknown_format', 'pretrain',
         lambda c: [f'--output={c.tmp / "w.txt"}', f'--gin_config={GIN}/pretrain_demo.gin'],
         "unknown format '.txt'"),
]


def _empty_gin(ctx):
  path = ctx.tmp / 'empty.gin'
  path.write_text('# nothing bound\n')
  return path


def _empty_class(ctx):
  folder = ctx.tmp / 'support' / 'only_class'
  folder.mkdir(parents=True)
  return folder


SCRIPTS = {'train': 'train.py', 'evaluate': 'evaluate.py', 'personalize': 'personalize.py',
           'convert': 'convert_to_records.py', 'pretrain': 'pretrain.py'}


@pytest.mark.parametrize('case', [pytest.param(c, id=c.name, marks=[pytest.mark.slow] * c.slow)
                                  for c in CASES])
def test_bad_input(case, tmp_path, trained_demo_dir, glyph_cache):
  ctx = Context(tmp_path, trained_demo_dir)
  args = case.args(ctx)
  result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'bin', SCRIPTS[case.binary]),
                           *map(str, args)], capture_output=True, text=True, timeout=600,
                          cwd=REPO_ROOT)
  stderr = result.stderr
  assert result.returncode == case.code, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  if case.code:
    assert case.message in first_line(stderr), stderr[-3000:]
  else:
    assert case.message in stderr, stderr[-3000:]
  if case.check:
    case.check(ctx)
