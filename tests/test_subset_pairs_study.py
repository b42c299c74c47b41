"""bin/subset_pairs_study.py end to end on a smaller task than the docs' (N = 4, |H| = 1): a row
per learner and set_encoder_norm, the default 'task' and 'none' exact in value and unbiased,
the reference's 'batch' neither (the table in docs/STUDIES.md comes from this binary)."""

import re

import pytest

from conftest import run_binary


@pytest.mark.slow  # 2 learners x 3 norms x 16 subset pairs: about a minute on 2 cores
def test_the_table_has_every_row_and_tells_exact_from_biased():
  proc = run_binary('subset_pairs_study.py', '--num_support=4', '--num_backprop=1',
                    '--chunk_size=2')
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {}
  for line in proc.stdout.splitlines():
    match = re.match(r"\| (Simple CNAPs|CNAPs) \| `'(\w+)'` \| ([\d.]+) \| ([\d.]+) - ([\d.]+) \| "
                     r'(\S+) \| (\S+) \| (\S+) \| (\S+) \|$', line)
    if match:
      rows[match.group(1), match.group(2)] = [float(v) for v in match.groups()[2:]]
  assert set(rows) == {(l, n) for l in ('Simple CNAPs', 'CNAPs') for n in ('task', 'batch', 'none')}
  for (learner, norm), (_, _, _, mismatch, set_encoder, film, everything) in rows.items():
    if norm == 'batch':
      assert mismatch > 1e-3 and set_encoder > 1e-2, (learner, rows[learner, norm])
    else:
      assert mismatch < 1e-5 and max(set_encoder, film, everything) < 1e-4, (
          learner, norm, rows[learner, norm])
