"""ImageNet-style hierarchical datasets: Meta-Dataset's HierarchicalDatasetSpecification
(read, written, built from an is-a relation by the converter) and its DAG episode sampling."""

import json
import math
import os

import numpy as np
from PIL import Image
import pytest

from conftest import run_binary
from lite_tf.data import batches
from lite_tf.data.meta_dataset import dataset_spec
from lite_tf.data.meta_dataset import ontology
from lite_tf.data.meta_dataset import reader
from lite_tf.data.meta_dataset import records
from lite_tf.data.meta_dataset import sampling
import md_reference

# A miniature WordNet: (parent, child) pairs. 'carnivore' and 'device' are the valid and test
# roots, as in Meta-Dataset's ImageNet; n31 sits below both 'device' and 'container'; n80 and
# n81 sit below both roots (one goes to valid, one to test); 'structure' has one child and is
# collapsed away.
TREE = {
    'n00': ['n01', 'n02'],                       # entity -> animal, artifact
    'n01': ['n10', 'n11', 'n12'],                # animal -> carnivore, bird, fish
    'n10': ['n40', 'n41', 'n42', 'n43', 'n44', 'n45', 'n80', 'n81'],  # carnivore
    'n11': ['n13', 'n50', 'n51', 'n52'],         # bird -> raptor + 3
    'n13': ['n53', 'n54', 'n55'],                # raptor
    'n12': ['n60', 'n61', 'n62', 'n63', 'n64'],  # fish
    'n02': ['n20', 'n21', 'n22'],                # artifact -> device, container, structure
    'n20': ['n23', 'n30', 'n31', 'n32', 'n80', 'n81'],  # device -> instrument + ...
    'n23': ['n33', 'n34', 'n35'],                # instrument
    'n21': ['n31', 'n70', 'n71', 'n72', 'n73'],  # container
    'n22': ['n24'],                              # structure -> building (collapsed)
    'n24': ['n90', 'n91', 'n92', 'n93', 'n94'],  # building
}
WORDS = {'n00': 'entity', 'n01': 'animal', 'n02': 'artifact', 'n10': 'carnivore', 'n11': 'bird',
         'n12': 'fish', 'n13': 'raptor', 'n20': 'device', 'n21': 'container',
         'n22': 'structure', 'n23': 'instrument', 'n24': 'building'}
CLASSES = sorted({c for children in TREE.values() for c in children} - set(TREE))
IMAGES_PER_CLASS = 12


def _write_imagenet_like(root):
  """root/images/<wn_id>/*.png, root/wordnet.is_a.txt, root/words.txt."""
  rng = np.random.RandomState(0)
  for k, wn_id in enumerate(CLASSES):
    os.makedirs(root / 'images' / wn_id)
    for i in range(IMAGES_PER_CLASS - (k % 3)):
      pixels = rng.randint(0, 256, size=(10, 10, 3)).astype(np.uint8)
      Image.fromarray(pixels).save(root / 'images' / wn_id / f'{wn_id}_{i}.png')
  with open(root / 'wordnet.is_a.txt', 'w') as f:
    f.writelines(f'{p} {c}\n' for p, children in TREE.items() for c in children)
  with open(root / 'words.txt', 'w') as f:
    f.writelines(f'{w}\t{words}\n' for w, words in WORDS.items())


@pytest.fixture(scope='module')
def imagenet_like(tmp_path_factory):
  """Records converted by bin/convert_to_records.py from a miniature ImageNet layout."""
  root = tmp_path_factory.mktemp('imagenet_like')
  _write_imagenet_like(root)
  # In the format of Meta-Dataset's ImageNet_*_duplicates.txt.
  (root / 'duplicates.txt').write_text('# duplicates of another dataset\n'
                                       'n90/n90_0.png  # 0001.jpg\n\nn91/n91_3.png # 0002.jpg\n')
  result = run_binary('convert_to_records.py', f"--input_dir={root / 'images'}",
                      f"--output_dir={root / 'records'}", '--name=mini_imagenet',
                      f"--is_a={root / 'wordnet.is_a.txt'}", f"--words={root / 'words.txt'}",
                      '--valid_root=n10', '--test_root=n20',
                      f"--exclude_lists={root / 'duplicates.txt'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'wrote' in result.stdout and 'of 34 classes' in result.stdout
  assert 'left out 2 images named in --exclude_lists' in result.stdout
  return root


@pytest.fixture(scope='module')
def spec(imagenet_like):
  return dataset_spec.load(str(imagenet_like / 'records'))


def _chi_square_z(observed, expected):
  """Wilson-Hilferty normal approximation of the chi-square statistic's upper tail."""
  stat = ((observed - expected) ** 2 / expected).sum()
  df = len(observed) - 1
  return ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))


def _tiny_spec_json():
  """A spec laid out exactly as Meta-Dataset's converter writes ilsvrc_2012's (same keys,
  order and nesting; node lists sorted by wn_id; images_per_class for every node)."""
  def node(wn_id, words, children=(), parents=()):
    return {'wn_id': wn_id, 'words': words, 'children_ids': list(children),
            'parents_ids': list(parents)}
  leaves = {'TRAIN': ['n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475'],
            'VALID': ['n02085620', 'n02085782', 'n02085936', 'n02086079', 'n02086240'],
            'TEST': ['n02666196', 'n02672831', 'n02676566', 'n02708093', 'n02749479']}
  roots = {'TRAIN': 'n00001740', 'VALID': 'n02075296', 'TEST': 'n03183080'}
  graphs, images = {}, {}
  for split, names in leaves.items():
    graphs[split] = sorted([node(roots[split], 'root', children=names)] + [
        node(w, f'class {w}', parents=[roots[split]]) for w in names], key=lambda n: n['wn_id'])
    images[split] = {w: 1300 - i for i, w in enumerate(names)}
    images[split][roots[split]] = sum(images[split].values())
  all_leaves = leaves['TRAIN'] + leaves['VALID'] + leaves['TEST']
  return {'name': 'ilsvrc_2012', 'split_subgraphs': graphs, 'images_per_class': images,
          'class_names': {str(i): w for i, w in enumerate(all_leaves)},
          'path': '/path/to/records/ilsvrc_2012', 'file_pattern': '{}.tfrecords',
          '__class__': 'HierarchicalDatasetSpecification'}


def test_reads_and_writes_meta_dataset_layout(tmp_path):
  original = _tiny_spec_json()
  (tmp_path / 'dataset_spec.json').write_text(json.dumps(original, indent=2))
  spec = dataset_spec.load(str(tmp_path))
  assert isinstance(spec, dataset_spec.HierarchicalDatasetSpec)
  assert spec.path == str(tmp_path)  # the folder read from, as Meta-Dataset's loader does
  assert spec.classes_per_split == {'TRAIN': 5, 'VALID': 5, 'TEST': 5}
  assert list(spec.class_ids('valid')) == [5, 6, 7, 8, 9]
  assert spec.num_images(0) == 1300 and spec.num_images(9) == 1296
  assert spec.class_names[7] == 'n02085936'
  assert spec.spanning_leaves('test')['n03183080'] == frozenset(spec.leaves('test'))
  assert spec.class_file(12).endswith('12.tfrecords')
  out = tmp_path / 'written'
  dataset_spec.save(spec, str(out))
  written = json.loads((out / 'dataset_spec.json').read_text())
  assert list(written) == list(original)
  assert {k: v for k, v in written.items() if k != 'path'} == {
      k: v for k, v in original.items() if k != 'path'}


def test_converter_follows_meta_dataset_splitting(spec, imagenet_like):
  # Valid: the classes below 'carnivore'; test: below 'device'; n80/n81 lie below both and
  # go to valid and test in turn; n31 (device and container) is a test class.
  assert spec.leaves('valid') == ['n40', 'n41', 'n42', 'n43', 'n44', 'n45', 'n80']
  assert spec.leaves('test') == ['n30', 'n31', 'n32', 'n33', 'n34', 'n35', 'n81']
  assert len(spec.leaves('train')) == 20 and 'n31' not in spec.split_subgraphs['TRAIN']
  # Class ids: each split's leaves in wn_id order, TRAIN then VALID then TEST.
  ordered = spec.leaves('train') + spec.leaves('valid') + spec.leaves('test')
  assert [spec.class_names[i] for i in range(34)] == ordered
  train = spec.split_subgraphs['TRAIN']
  # 'structure' had one child: collapsed, its child hangs from 'artifact'.
  assert 'n22' not in train and train['n24'].parents == {'n02'}
  # 'carnivore' and 'device' have no train classes below them: not in the train graph.
  assert 'n10' not in train and 'n20' not in train and train['n01'].children == {'n11', 'n12'}
  # The valid/test graphs start at their root.
  assert spec.split_subgraphs['VALID']['n10'].parents == set()
  assert spec.split_subgraphs['TEST']['n20'].children == {'n23', 'n30', 'n31', 'n32', 'n81'}
  # images_per_class: every node, the images of the leaves it spans.
  counts = spec.images_per_class['TRAIN']
  assert counts['n13'] == sum(counts[w] for w in ('n53', 'n54', 'n55'))
  assert counts['n00'] == sum(spec.num_images(k) for k in spec.class_ids('train'))
  assert spec.num_images(0) == len(os.listdir(imagenet_like / 'images' / ordered[0]))
  n90 = spec.class_names_to_ids['n90']
  assert spec.num_images(n90) == len(os.listdir(imagenet_like / 'images' / 'n90')) - 1
  images, labels = records.read_class(spec, 30, image_size=10)
  assert images.shape[0] == spec.num_images(30) and set(labels.numpy()) == {30}
  splits = json.loads((imagenet_like / 'records' / 'mini_imagenet_splits.json').read_text())
  assert splits['test'] == spec.leaves('test')
  assert spec.split_subgraphs['TRAIN']['n11'].words == 'bird'


def _node_law(spec, split, max_ways, bound=392, min_ways=5):
  """The reference algorithm's law: the eligible internal nodes, each drawn with probability
  1/len, and the ways min(span, max_ways)."""
  spans = spec.spanning_leaves(split)
  leaves = set(spec.leaves(split))
  return [sorted(spec.class_names_to_ids[w] for w in spans[n])
          for n in sorted(set(spans) - leaves) if min_ways <= len(spans[n]) <= bound]


def test_dag_episodes_come_from_one_node_and_keep_every_constraint(spec):
  sampler = sampling.EpisodeDescriptionSampler(spec, 'train', seed=3)
  nodes = [set(n) for n in _node_law(spec, 'train', 50)]
  assert [sorted(n) for n in nodes] == sampler.dag_nodes
  # entity (20 classes), animal (11), artifact (9), bird (6), fish (5), building (5); raptor
  # and container span fewer than 5 classes.
  assert sorted(len(n) for n in nodes) == [5, 5, 6, 9, 11, 20]
  sizes = {k: spec.num_images(k) for k in spec.class_ids('train')}
  for _ in range(2000):
    description = sampler.sample()
    classes = {k for k, _, _ in description}
    assert classes in nodes  # every class of the node (all span <= 50)
    query = description[0][2]
    assert query == min(10, min(sizes[k] for k in classes) // 2)
    for k, shots, q in description:
      assert q == query and 1 <= shots and shots + q <= sizes[k]
    assert len(classes) <= sum(s for _, s, _ in description) <= 500


def test_dag_ways_and_class_frequencies_match_the_reference_law(spec):
  """With max_ways_upper_bound=8 the three nodes spanning more classes are subsampled:
  P(class k in an episode) = mean over nodes of [k below node] * min(1, 8 / span)."""
  config = sampling.EpisodeDescriptionConfig(max_ways_upper_bound=8)
  sampler = sampling.EpisodeDescriptionSampler(spec, 'train', config, seed=4)
  nodes = _node_law(spec, 'train', 8)
  draws = 6000
  ways_law = {}
  class_law = np.zeros(20)
  for node in nodes:
    ways = min(len(node), 8)
    ways_law[ways] = ways_law.get(ways, 0) + 1 / len(nodes)
    for k in node:
      class_law[k] += ways / len(node) / len(nodes)
  ways_seen = {w: 0 for w in ways_law}
  class_seen = np.zeros(20)
  for _ in range(draws):
    description = sampler.sample()
    ways_seen[len(description)] += 1
    for k, _, _ in description:
      class_seen[k] += 1
  keys = sorted(ways_law)
  assert _chi_square_z(np.array([ways_seen[k] for k in keys]),
                       np.array([ways_law[k] * draws for k in keys])) < 3.5
  # Each class's inclusion count is binomial(draws, p_k).
  z = (class_seen - draws * class_law) / np.sqrt(draws * class_law * (1 - class_law))
  assert np.abs(z).max() < 4.0, z


@pytest.mark.parametrize('ignore_p', [0.0, 0.4])
def test_dag_episodes_equal_meta_datasets_for_the_same_seed(spec, ignore_p):
  """Meta-Dataset's draw order on a DAG: "ignore the ontology?" (made even when its
  probability is 0), a node, a subsample of its classes; the eligible nodes from the
  reference law in wn_id order, as Meta-Dataset sorts them."""
  config = sampling.EpisodeDescriptionConfig(max_ways_upper_bound=8,
                                             ignore_hierarchy_probability=ignore_p)
  sampler = sampling.EpisodeDescriptionSampler(spec, 'train', config, seed=12)
  images = {k: spec.num_images(k) for k in spec.class_ids('train')}
  expected = md_reference.dag_episodes(_node_law(spec, 'train', 8), list(spec.class_ids('train')),
                                       images, 12, 300, 8, ignore_p)
  assert [sampler.sample() for _ in range(300)] == expected


def test_every_class_is_reachable_and_ontology_can_be_ignored(spec):
  sampler = sampling.EpisodeDescriptionSampler(spec, 'train', seed=5)
  assert set().union(*map(set, sampler.dag_nodes)) == set(spec.class_ids('train'))
  flat = sampling.EpisodeDescriptionSampler(
      spec, 'train', sampling.EpisodeDescriptionConfig(ignore_dag_ontology=True), seed=5)
  nodes = [set(n) for n in sampler.dag_nodes]
  mixed = [{k for k, _, _ in flat.sample()} for _ in range(200)]
  assert any(classes not in nodes for classes in mixed)
  fixed = sampling.EpisodeDescriptionSampler(spec, 'train', sampling.EpisodeDescriptionConfig(
      num_ways=5, num_support=1, num_query=2, ignore_dag_ontology=True), seed=5)
  assert len(fixed.sample()) == 5
  with pytest.raises(ValueError, match='ignore_dag_ontology'):
    sampling.EpisodeDescriptionSampler(spec, 'train',
                                       sampling.EpisodeDescriptionConfig(num_ways=5))
  with pytest.raises(ValueError, match='max_spanning_leaves_eligible'):
    sampling.EpisodeDescriptionSampler(
        spec, 'valid', sampling.EpisodeDescriptionConfig(max_spanning_leaves_eligible=6))


def test_records_episodes_from_a_hierarchical_dataset(spec, imagenet_like):
  source = reader.RecordsEpisodeSource(str(imagenet_like / 'records'), 'test', image_size=16,
                                       seed=6)
  for e in source.as_dataset(num_episodes=3):
    assert set(e['support_class_ids'].numpy()) == set(spec.class_ids('test'))
    assert e['support_images'].shape[1:] == (16, 16, 3)
    assert len(e['query_labels']) == 7 * 5  # 7 classes, min(10, 10 // 2) queries each
  dataset, num_classes = batches.labelled_batches(str(imagenet_like / 'records'), 'valid',
                                                  image_size=16, batch_size=64, repeat=False)
  labels = np.concatenate([l.numpy() for _, l in dataset])
  assert num_classes == 7 and sorted(set(labels)) == list(range(7))
  assert len(labels) == sum(spec.num_images(k) for k in spec.class_ids('valid'))


def _load_with(tmp_path, edit):
  d = _tiny_spec_json()
  edit(d)
  (tmp_path / 'dataset_spec.json').write_text(json.dumps(d))
  return dataset_spec.load(str(tmp_path))


@pytest.mark.parametrize('edit, message', [
    (lambda d: d['split_subgraphs']['TRAIN'][0]['children_ids'].append('n99999999'),
     r"split_subgraphs\[TRAIN\]: node 'n00001740' has child 'n99999999' outside the graph"),
    (lambda d: d['split_subgraphs']['VALID'][1]['children_ids'].append('n02075296'),
     r"split_subgraphs\[VALID\]: node 'n02085620' lists child 'n02075296', which does not"),
    (lambda d: d['split_subgraphs']['TEST'].append(d['split_subgraphs']['TEST'][1]),
     r"split_subgraphs\[TEST\]: duplicate node 'n02672831'"),
    (lambda d: d['images_per_class']['TEST'].pop('n02708093'),
     r"images_per_class\[TEST\] lacks classes \['n02708093'\]"),
    (lambda d: d['class_names'].pop('3'),
     r"the TRAIN leaves must have class ids 0..4 in class_names; leaves without an id: "
     r"\['n01491361'\]"),
    (lambda d: d['split_subgraphs'].pop('VALID'), r'split_subgraphs must have keys'),
])
def test_malformed_hierarchical_spec_is_a_clear_error(tmp_path, edit, message):
  with pytest.raises(dataset_spec.DatasetSpecError, match=r'dataset_spec.json: .*' + message):
    _load_with(tmp_path, edit)


def test_cycle_is_reported():
  graph = ontology.graph_from_is_a([('a', 'b'), ('b', 'c'), ('c', 'a'), ('c', 'd')])
  with pytest.raises(ontology.OntologyError, match='cycle through node'):
    ontology.check_graph(graph)


def test_converter_errors_name_the_flag(tmp_path, imagenet_like):
  bad = tmp_path / 'is_a.txt'
  bad.write_text('n00 n01\nn01\n')
  result = run_binary('convert_to_records.py', f"--input_dir={imagenet_like / 'images'}",
                      f'--output_dir={tmp_path / "out"}', f'--is_a={bad}')
  assert result.returncode == 1
  assert f'--is_a {bad}, line 2: expected two fields' in result.stderr
  from lite_tf.data.meta_dataset import convert
  edges = tmp_path / 'edges.txt'
  edges.write_text(''.join(f'{p} {c}\n' for p, cs in TREE.items() for c in cs if c != 'n94'))
  with pytest.raises(ValueError, match=r"class folders \['n94'\] are not in --is_a"):
    convert.convert_hierarchical(str(imagenet_like / 'images'), str(tmp_path / 'out'), 'x',
                                 str(edges), 'n10', 'n20')
  with pytest.raises(ValueError, match=r'--exclude_lists .*missing.txt: cannot read'):
    convert.read_exclusion_lists([str(tmp_path / 'missing.txt')])
  with pytest.raises(ValueError, match="test root 'n22' has a single child .* collapses into: 'n24'"):
    convert.convert_hierarchical(str(imagenet_like / 'images'), str(tmp_path / 'out'), 'x',
                                 str(imagenet_like / 'wordnet.is_a.txt'), 'n10', 'n22')
  with pytest.raises(ValueError, match="test root 'n99' is not an ancestor of any class"):
    convert.convert_hierarchical(str(imagenet_like / 'images'), str(tmp_path / 'out'), 'x',
                                 str(imagenet_like / 'wordnet.is_a.txt'), 'n10', 'n99')


def test_imagenet_v2_spec_puts_every_class_in_train(imagenet_like, tmp_path):
  """--train_split_only: Meta-Dataset's ilsvrc_2012_v2 (MD-v2 trains on all of ImageNet's
  classes): one TRAIN graph over every class, empty VALID and TEST."""
  root = imagenet_like
  result = run_binary('convert_to_records.py', f"--input_dir={root / 'images'}",
                      f"--output_dir={tmp_path / 'v2'}", '--name=mini_imagenet_v2',
                      f"--is_a={root / 'wordnet.is_a.txt'}", f"--words={root / 'words.txt'}",
                      '--train_split_only')
  assert result.returncode == 0, result.stderr[-3000:]
  v1 = dataset_spec.load(str(root / 'records'))
  v2 = dataset_spec.load(str(tmp_path / 'v2'))
  assert len(v2.class_ids('train')) == 34 and len(v2.class_ids('valid')) == 0
  assert len(v2.class_ids('test')) == 0
  assert sorted(v2.class_names.values()) == sorted(v1.class_names.values())
  source = reader.RecordsEpisodeSource(str(tmp_path / 'v2'), 'train', image_size=8, seed=1)
  seen = set()
  for _, e in zip(range(20), source.episodes()):
    seen |= set(v2.class_names[int(c)] for c in e['support_class_ids'])
  # classes of v1's VALID and TEST subtrees are now training classes
  held_out = {v1.class_names[c] for s in ('valid', 'test') for c in v1.class_ids(s)}
  assert seen & held_out
