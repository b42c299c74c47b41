"""Class ontologies as DAGs: the WordNet subgraphs of Meta-Dataset's ImageNet.

A graph is a dict `wn_id -> Synset` whose parent/child links stay inside the dict. Leaves are
the classes; an internal node stands for the set of leaves below it ("spanning leaves"), which
is what DAG episode sampling draws from (Triantafillou et al., 2020, Sec. 3.2: an internal node
is drawn uniformly among those spanning between min_ways and 392 leaves).

JSON form, as Meta-Dataset's `imagenet_specification.export_graph` writes it inside
`dataset_spec.json`: a list of {"wn_id", "words", "children_ids", "parents_ids"} sorted by
wn_id, id lists sorted.

Building split subgraphs from a WordNet is-a relation follows Meta-Dataset's
`create_imagenet_specification`: keep the classes and their ancestors, cut links leaving that
set, collapse nodes with a single child; the valid and test classes are the leaves below two
chosen roots (a leaf below both goes alternately to valid and test), train the rest; each split
gets its own copy of the graph rebuilt from its leaves (valid/test restricted to their root).
"""

import dataclasses
from typing import Dict, Iterable, List, Optional, Set


class OntologyError(ValueError):
  """A class graph that is malformed (dangling link, duplicate id, cycle)."""


@dataclasses.dataclass
class Synset:
  """One node: WordNet id, its words, and the wn_ids of its children and parents."""
  wn_id: str
  words: str
  children: Set[str] = dataclasses.field(default_factory=set)
  parents: Set[str] = dataclasses.field(default_factory=set)


Graph = Dict[str, Synset]


def import_graph(node_list, where='graph'):
  """Graph from Meta-Dataset's JSON node list; errors name `where` and the offending node."""
  if not isinstance(node_list, list):
    raise OntologyError(f'{where}: expected a list of nodes; got {type(node_list).__name__}')
  graph = {}
  for node in node_list:
    if not isinstance(node, dict) or not {'wn_id', 'children_ids', 'parents_ids'} <= set(node):
      raise OntologyError(f'{where}: every node needs wn_id, words, children_ids, parents_ids; '
                          f'got {str(node)[:200]}')
    wn_id = node['wn_id']
    if wn_id in graph:
      raise OntologyError(f'{where}: duplicate node {wn_id!r}')
    graph[wn_id] = Synset(wn_id, node.get('words', ''), set(node['children_ids']),
                          set(node['parents_ids']))
  check_graph(graph, where)
  return graph


def check_graph(graph, where='graph'):
  """Links point inside the graph, agree both ways, and contain no cycle."""
  for wn_id, node in graph.items():
    for kind, linked, inverse, inverse_kind in (('child', node.children, 'parents', 'parent'),
                                                ('parent', node.parents, 'children', 'child')):
      for other in sorted(linked):
        if other not in graph:
          raise OntologyError(f'{where}: node {wn_id!r} has {kind} {other!r} outside the graph')
        if wn_id not in getattr(graph[other], inverse):
          raise OntologyError(f'{where}: node {wn_id!r} lists {kind} {other!r}, which does not '
                              f'list it as a {inverse_kind}')
  spanning_leaves(graph, where)  # raises on a cycle


def export_graph(graph):
  """Meta-Dataset's JSON node list: nodes sorted by wn_id, id lists sorted."""
  return [{'wn_id': wn_id, 'words': graph[wn_id].words,
           'children_ids': sorted(graph[wn_id].children),
           'parents_ids': sorted(graph[wn_id].parents)} for wn_id in sorted(graph)]


def leaves(graph):
  """Sorted wn_ids of the nodes without children (the classes)."""
  return sorted(wn_id for wn_id, node in graph.items() if not node.children)


def spanning_leaves(graph, where='graph'):
  """wn_id -> frozenset of the leaves reachable downwards (a leaf spans itself)."""
  spans = {}
  for start in graph:
    if start in spans:
      continue
    stack, on_path = [(start, iter(sorted(graph[start].children)))], {start}
    while stack:
      wn_id, children = stack[-1]
      child = next(children, None)
      if child is None:
        stack.pop()
        on_path.discard(wn_id)
        node = graph[wn_id]
        spans[wn_id] = (frozenset([wn_id]) if not node.children else
                        frozenset().union(*(spans[c] for c in node.children)))
      elif child in on_path:
        raise OntologyError(f'{where}: cycle through node {child!r}')
      elif child not in spans:
        stack.append((child, iter(sorted(graph[child].children))))
        on_path.add(child)
  return spans


def spanning_images(graph, leaf_images):
  """wn_id -> total images of the leaves it spans (Meta-Dataset's images_per_class)."""
  return {wn_id: sum(leaf_images[leaf] for leaf in span)
          for wn_id, span in spanning_leaves(graph).items()}


def graph_from_is_a(edges: Iterable, words: Optional[Dict[str, str]] = None):
  """Graph of (parent, child) wn_id pairs, as in WordNet's `wordnet.is_a.txt`."""
  words = words or {}
  graph = {}
  for parent, child in edges:
    for wn_id in (parent, child):
      if wn_id not in graph:
        graph[wn_id] = Synset(wn_id, words.get(wn_id, ''))
    graph[parent].children.add(child)
    graph[child].parents.add(parent)
  return graph


def _reachable(graph, wn_ids, direction):
  """The nodes reached from `wn_ids` (excluded) along `direction` ('parents' or 'children')."""
  seen, stack = set(), list(wn_ids)
  while stack:
    for other in getattr(graph[stack.pop()], direction):
      if other not in seen:
        seen.add(other)
        stack.append(other)
  return seen


def sampling_graph(graph, classes, root=None):
  """New graph of `classes` and their ancestors (only `root` and below, if given), links
  leaving it cut, and every node with one child removed (its child joins its parents)."""
  missing = sorted(set(classes) - set(graph))
  if missing:
    raise OntologyError(f'classes {missing[:10]} are not in the is-a graph')
  keep = _reachable(graph, classes, 'parents')
  if root is not None:
    keep &= _reachable(graph, [root], 'children') | {root}
  keep |= set(classes)
  sub = {w: Synset(w, graph[w].words, graph[w].children & keep, graph[w].parents & keep)
         for w in keep}
  inner = sorted(c for c in classes if sub[c].children)
  if inner:
    raise OntologyError(f'classes {inner[:10]} are ancestors of other classes; classes must be '
                        'leaves of the is-a graph')
  changed = True
  while changed:
    changed = False
    for wn_id in sorted(sub):
      node = sub.get(wn_id)
      if node is None or len(node.children) != 1:
        continue
      (child,) = node.children
      for parent in node.parents:
        sub[parent].children.discard(wn_id)
        sub[parent].children.add(child)
        sub[child].parents.add(parent)
      sub[child].parents.discard(wn_id)
      del sub[wn_id]
      changed = True
  return sub


def class_splits(graph, valid_root, test_root):
  """{'TRAIN', 'VALID', 'TEST'} -> sorted class wn_ids: the leaves below `valid_root` and
  `test_root`; a leaf below both goes to valid and test in turn (sorted order); the rest train."""
  for role, root in (('valid', valid_root), ('test', test_root)):
    if root not in graph:
      raise OntologyError(f'{role} root {root!r} is not an ancestor of any class')
  if valid_root == test_root:
    raise OntologyError(f'valid and test roots are the same node {valid_root!r}')
  spans = spanning_leaves(graph)
  valid, test = set(spans[valid_root]), set(spans[test_root])
  for i, wn_id in enumerate(sorted(valid & test)):
    (test if i % 2 == 0 else valid).discard(wn_id)
  train = set(leaves(graph)) - valid - test
  return {'TRAIN': sorted(train), 'VALID': sorted(valid), 'TEST': sorted(test)}


def split_subgraphs(graph, classes: List[str], valid_root, test_root):
  """Meta-Dataset's split subgraphs for `classes` (the dataset's leaves) under an is-a graph:
  returns ({split: graph}, {split: sorted class wn_ids})."""
  full = sampling_graph(graph, classes)
  for role, root in (('valid', valid_root), ('test', test_root)):
    if root in graph and root not in full:
      below = _reachable(graph, [root], 'children')
      kept = sorted(below & set(full))
      if kept and set(classes) & below:
        top = [w for w in kept if not _reachable(full, [w], 'parents') & below]
        raise OntologyError(
            f'{role} root {root!r} has a single child among the classes\' ancestors, so it is '
            f'collapsed away (as Meta-Dataset does); use the node it collapses into: '
            f'{", ".join(repr(w) for w in top)}')
  splits = class_splits(full, valid_root, test_root)
  roots = {'TRAIN': None, 'VALID': valid_root, 'TEST': test_root}
  subgraphs = {split: sampling_graph(full, splits[split], roots[split]) for split in splits}
  return subgraphs, splits
