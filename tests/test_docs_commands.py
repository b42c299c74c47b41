"""Every command and path that README.md and the guides in docs/ show is valid: each
`bin/X.py` exists and defines every `--flag` a command gives it, each `--gin_config=gin/...`
parses with its `--gin_bindings` (lite_tf.config, as the binaries parse them), each repository
path (`lite_tf/`, `bin/`, `gin/`, `docs/`, `tests/`) exists, each `make` target is in the
Makefile, and each relative markdown link resolves, to its heading too. Each guide opens with
its commands. Every test lists all the problems it finds at once.

Commands are read from code blocks (indented or fenced; `\\` continues a line) and from inline
code spans. Placeholders are skipped: values holding `<...>`, `...` or `$VARIABLE`, and paths
outside the repository (/data/..., runs/...)."""

import concurrent.futures
import functools
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import gin
import pytest

from conftest import REPO_ROOT

DOC_FILES = [os.path.join(REPO_ROOT, 'README.md')] + sorted(
    glob.glob(os.path.join(REPO_ROOT, 'docs', '*.md')))
GUIDES = ['TRAINING.md', 'META_DATASET.md', 'ORBIT.md', 'VTAB_MD.md', 'STUDIES.md',
          'BENCHMARKS.md']
# Flags the guides name that belong to other programs' command lines (ORBIT's code), not to a
# lite_tf binary: a bare `--flag` span must be one of these or some binary's flag.
FOREIGN_FLAGS = {'num_lite_samples', 'with_train_shot_caps', 'annotations_to_load'}
# Scripts outside bin/ whose flags the docs show (argparse; read from their sources).
SCRIPTS_WITH_FLAGS = ('tests/mutation_run.py',)
_BINARY = re.compile(r'(?<![\w/.-])bin/(\w+)\.py\b')
_FLAG = re.compile(r'(?<![\w-])--([A-Za-z][\w-]*)')
_REPO_PATH = re.compile(r'(?<![\w./~-])((?:lite_tf|bin|gin|docs|tests)/[\w./{},*<>$-]*)')
# Paths a command shows as its output that the repository does not hold, and why.
NOT_WRITTEN = {
    'docs/benchmarks/plan_memory_simple_cnaps_effb0_s224.json':
        'the run stopped in its 8 GB budget; docs/BENCHMARKS.md points to its .log',
}
_LINK = re.compile(r'!?\[((?:[^\]\\]|\\.)*)\]\(([^)\s]+)\)')
_PLACEHOLDER = re.compile(r'<[^>]*>|\.\.\.|\$')

# Prints every flag a binary accepts (its own, the modules' it imports, absl's), without
# running main; no binary starts TensorFlow's runtime while it defines its flags.
_FLAGS_OF = '''
import runpy, sys
from absl import app, flags
runpy.run_path(sys.argv[1], run_name='binary_under_test')
app.define_help_flags()
print(' '.join(sorted(flags.FLAGS)))
'''


def _rel(path):
  return os.path.relpath(path, REPO_ROOT)


@functools.lru_cache(maxsize=None)
def _read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def _split_code(text):
  """(code lines, prose): code blocks' logical lines (with their line numbers) and the text
  outside them. An indented block starts after a blank line; fenced blocks anywhere."""
  code, prose = [], []
  lines = text.splitlines()
  in_fence = in_block = False
  pending, pending_no = '', 0
  for no, line in enumerate(lines, 1):
    if line.lstrip().startswith('```'):
      in_fence = not in_fence
      prose.append('')
      continue
    indented = line.startswith('    ') and line.strip()
    after_blank = no == 1 or not lines[no - 2].strip()
    if in_fence or (indented and (in_block or after_blank or pending)):
      in_block = not in_fence
      body = line.strip()
      if not pending:
        pending_no = no
      if body.endswith('\\'):
        pending += body[:-1] + ' '
      else:
        code.append((pending_no, pending + body))
        pending = ''
      prose.append('')
      continue
    in_block = False
    if pending:
      code.append((pending_no, pending))
      pending = ''
    prose.append(line)
  if pending:
    code.append((pending_no, pending))
  return code, '\n'.join(prose)


def _spans(prose):
  """Inline code spans (they may wrap a line), with the line they start on."""
  for m in re.finditer(r'`([^`]+)`', prose):
    yield prose.count('\n', 0, m.start()) + 1, ' '.join(m.group(1).split())


def _commands():
  """(where, binary, argument text) for every `bin/X.py` in a code line or an inline span."""
  found = []
  for path in DOC_FILES:
    code, prose = _split_code(_read(path))
    for no, text in code + list(_spans(prose)):
      text = re.split(r'(?:^|\s)#', text)[0]  # a shell comment
      matches = list(_BINARY.finditer(text))
      for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        args = re.split(r'\s(?:;|&&|\|\|?)\s', text[m.end():end])[0]
        found.append((f'{_rel(path)}:{no}', m.group(1), args))
  return found


def _bare_flag_spans():
  for path in DOC_FILES:
    _, prose = _split_code(_read(path))
    for no, span in _spans(prose):
      if span.startswith('--'):
        yield f'{_rel(path)}:{no}', _FLAG.match(span).group(1)


@functools.lru_cache(maxsize=None)
def _binary_flags():
  """{binary name: set of its flags}, one subprocess per binary, two at a time."""
  names = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(REPO_ROOT, 'bin', '*.py')))
  env = dict(os.environ, LITE_TF_NATIVE_LOG='show', PYTHONPATH=os.pathsep.join(
      [REPO_ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))

  def flags_of(name):
    result = subprocess.run(
        [sys.executable, '-c', _FLAGS_OF, os.path.join(REPO_ROOT, 'bin', f'{name}.py')],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, f'bin/{name}.py: {result.stderr[-3000:]}'
    return set(result.stdout.split())

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    return dict(zip(names, pool.map(flags_of, names)))


def _accepts(flags, flag):
  return flag in flags or (flag.startswith('no') and flag[2:] in flags)


def test_docs_show_commands():
  assert len(_commands()) > 50, _commands()


def test_binaries_exist_and_define_every_flag_shown():
  binary_flags = _binary_flags()
  problems = []
  for where, name, args in _commands():
    if name not in binary_flags:
      problems.append(f'{where}: bin/{name}.py does not exist')
      continue
    for flag in _FLAG.findall(args):
      if not _accepts(binary_flags[name], flag):
        problems.append(f'{where}: bin/{name}.py has no flag --{flag}')
  every_flag = set().union(*binary_flags.values())
  for script in SCRIPTS_WITH_FLAGS:
    every_flag |= set(re.findall(r"add_argument\('--(\w+)'", _read(os.path.join(REPO_ROOT,
                                                                                script))))
  for where, flag in _bare_flag_spans():
    if flag not in FOREIGN_FLAGS and not _accepts(every_flag, flag):
      problems.append(f'{where}: no binary has a flag --{flag}')
  assert not problems, '\n'.join(problems)


def _gin_runs():
  """(where, config files, bindings) of each command that names a gin file of the repository;
  bindings holding placeholders are left out."""
  runs = []
  for where, name, args in _commands():
    try:
      words = shlex.split(args)
    except ValueError:  # an unclosed quote: a command quoted inside another (bash -c '...')
      continue
    configs = [w.split('=', 1)[1] for w in words if w.startswith('--gin_config=')]
    if not any(c.startswith('gin/') for c in configs) or any(
        not c.startswith('gin/') or _PLACEHOLDER.search(c) for c in configs):
      continue
    bindings = [w.split('=', 1)[1] for w in words if w.startswith('--gin_bindings=')]
    runs.append((f'{where} (bin/{name}.py)', configs,
                 [b for b in bindings if not _PLACEHOLDER.search(b)]))
  return runs


def test_gin_configs_of_the_commands_parse_with_their_bindings():
  from lite_tf import config  # pylint: disable=g-import-not-at-top
  runs = _gin_runs()
  assert len(runs) > 20, runs
  problems = []
  for where, configs, bindings in runs:
    gin.clear_config()
    try:
      config.parse([os.path.join(REPO_ROOT, c) for c in configs], bindings,
                   check_precision_device=False)
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f'{where}: {configs} {bindings}: {type(e).__name__}: {e}')
  assert not problems, '\n'.join(problems)


def _expand_braces(path):
  m = re.search(r'\{([^{}]*)\}', path)
  if not m:
    return [path]
  return [e for alt in m.group(1).split(',')
          for e in _expand_braces(path[:m.start()] + alt + path[m.end():])]


def _repo_paths():
  """(where, path) for every repository path the docs mention, braces expanded."""
  for path in DOC_FILES:
    for no, line in enumerate(_read(path).splitlines(), 1):
      for m in _REPO_PATH.finditer(line):
        mention = m.group(1).rstrip('.,')
        if _PLACEHOLDER.search(mention) or re.search(r'\{[^}]*$', mention):
          continue  # a placeholder, or braces that wrap onto the next line
        for p in _expand_braces(mention):
          yield f'{_rel(path)}:{no}', p


def test_repository_paths_exist():
  """All at once, so a tree reorganised after the docs were written shows every stale path."""
  mentions = list(_repo_paths())
  assert len(mentions) > 100, mentions
  missing = sorted({f'{p}  ({where})' for where, p in mentions
                    if p not in NOT_WRITTEN and not glob.glob(os.path.join(REPO_ROOT, p))})
  assert not missing, f'{len(missing)} paths the docs show do not exist:\n' + '\n'.join(missing)


def test_make_targets_exist():
  targets = set(re.findall(r'^([\w.-]+):', _read(os.path.join(REPO_ROOT, 'Makefile')), re.M))
  problems, seen = [], 0
  for path in DOC_FILES:
    code, prose = _split_code(_read(path))
    for no, text in code + list(_spans(prose)):
      for m in re.finditer(r'(?:^|[\s(])make\s+([a-z][\w-]*)', text):
        seen += 1
        if m.group(1) not in targets:
          problems.append(f'{_rel(path)}:{no}: no make target {m.group(1)!r}')
  assert seen >= 4 and not problems, '\n'.join(problems) or seen


def _anchors(path):
  """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-',
  a repeated anchor numbered."""
  anchors, counts = set(), {}
  code, prose = _split_code(_read(path))
  del code
  for line in prose.splitlines():
    m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
    if m:
      slug = re.sub(r'[^\w\- ]', '', m.group(1).lower()).replace(' ', '-')
      n = counts.get(slug, 0)
      counts[slug] = n + 1
      anchors.add(slug if n == 0 else f'{slug}-{n}')
  return anchors


def test_relative_links_resolve():
  problems, seen = [], 0
  for path in DOC_FILES:
    _, prose = _split_code(_read(path))
    prose = re.sub(r'`[^`]+`', lambda m: re.sub(r'[^\n]', ' ', m.group()), prose)
    for m in _LINK.finditer(prose):
      target = m.group(2)
      if re.match(r'[a-z]+:', target):
        continue
      seen += 1
      file_part, _, anchor = target.partition('#')
      resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if (
          file_part) else path
      where = f'{_rel(path)}:{prose.count(chr(10), 0, m.start()) + 1}: {target}'
      if not os.path.exists(resolved):
        problems.append(f'{where}: {_rel(resolved)} does not exist')
      elif anchor and resolved.endswith('.md') and anchor not in _anchors(resolved):
        problems.append(f'{where}: no heading #{anchor} in {_rel(resolved)}')
  assert seen > 30 and not problems, '\n'.join(problems) or seen


def test_readme_starts_with_the_two_commands_and_links_every_guide():
  readme = _read(os.path.join(REPO_ROOT, 'README.md'))
  lines = readme.splitlines()
  assert lines[2].startswith('    make demo   # ') and lines[3].startswith('    make test   # ')
  for guide in GUIDES:
    assert f'](docs/{guide})' in readme, guide


@pytest.mark.parametrize('guide', GUIDES)
def test_each_guide_opens_with_its_commands(guide):
  lines = _read(os.path.join(REPO_ROOT, 'docs', guide)).splitlines()
  assert lines[0].startswith('# ') and not lines[1].strip(), lines[:2]
  assert lines[2].startswith('    ') and ('bin/' in lines[2] or 'make ' in lines[2]), lines[2]


if __name__ == '__main__':
  print(json.dumps(_commands(), indent=1))
