"""bin/personalize.py: support folder -> one-forward-pass classifier -> SavedModel that plain
TensorFlow serves (in a process that never imports lite_tf) with the same predictions."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import glyph_folders
from conftest import run_binary


def test_personalize_export_and_serve_without_lite_tf(trained_demo_dir, tmp_path, glyph_cache):
  support, query, truth = glyph_folders(tmp_path, glyph_cache)
  export_dir = tmp_path / 'exported'
  predictions_path = tmp_path / 'predictions.json'
  result = run_binary('personalize.py', f'--train_dir={trained_demo_dir}', f'--support_dir={support}',
                f'--query={query}', f'--export_dir={export_dir}', f'--output={predictions_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'in one forward pass' in result.stdout
  predictions = json.loads(predictions_path.read_text())['predictions']
  assert len(predictions) == 9
  accuracy = np.mean([p['class'] == truth[p['file']] for p in predictions])
  assert accuracy > 0.5, predictions  # 3-way chance: 33%
  for p in predictions:
    assert abs(sum(p['probabilities'].values()) - 1) < 1e-4

  serve = (
      'import sys, json, numpy as np, tensorflow as tf\n'
      'from PIL import Image\n'
      f'model = tf.saved_model.load({str(export_dir)!r})\n'
      'files = json.loads(sys.argv[1])\n'
      'images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])\n'
      'out = model.signatures["serving_default"](images=tf.constant(images))\n'
      'assert not any(m.startswith("lite_tf") for m in sys.modules), "lite_tf was imported"\n'
      'print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),\n'
      '                  "names": [n.decode() for n in out["class_name"].numpy()]}))\n')
  files = [p['file'] for p in predictions]
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  served = subprocess.run([sys.executable, '-c', serve, json.dumps(files)], capture_output=True,
                          text=True, timeout=600, cwd=str(tmp_path), env=env)
  assert served.returncode == 0, served.stderr[-3000:]
  out = json.loads(served.stdout.strip().splitlines()[-1])
  assert out['names'] == [p['class'] for p in predictions]
  expected = [[p['probabilities'][c] for c in sorted(p['probabilities'])] for p in predictions]
  np.testing.assert_allclose(np.asarray(out['probabilities']), np.asarray(expected), atol=1e-5)
