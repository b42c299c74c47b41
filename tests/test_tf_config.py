"""--distribution=multi_worker: TF_CONFIG read and refused by name, and peers waited for with
a timeout (lite_tf.training.distribute)."""

import json
import socket
import time

import pytest

from lite_tf.training import distribute


def _config(cluster, task):
  return {'TF_CONFIG': json.dumps({'cluster': cluster, 'task': task})}


def test_a_valid_cluster_is_read():
  cluster = {'worker': ['127.0.0.1:1', '127.0.0.1:2']}
  assert distribute.read_tf_config(_config(cluster, {'type': 'worker', 'index': 1})) == (
      cluster, 'worker', 1)


@pytest.mark.parametrize('environ,message', [
    ({}, '--distribution=multi_worker needs TF_CONFIG, naming the cluster and this worker'),
    ({'TF_CONFIG': '{"cluster": '}, 'TF_CONFIG is not valid JSON'),
    (_config({'worker': ['a:1', 'b:2']}, {'type': 'worker', 'index': 2}),
     r'TF_CONFIG\["task"\]\["index"\] = 2 is outside the cluster\'s 2 worker task\(s\) \(0 to 1\)'),
    (_config({'worker': ['a:1']}, {'type': 'chief', 'index': 0}),
     r'TF_CONFIG\["task"\]\["type"\] must be one of the cluster\'s jobs \[\'worker\'\]'),
    (_config({'worker': []}, {'type': 'worker', 'index': 0}),
     r'TF_CONFIG\["cluster"\] must map job names to lists of "host:port"'),
])
def test_bad_tf_config_is_refused_by_name(environ, message):
  with pytest.raises(ValueError, match=message):
    distribute.read_tf_config(environ)


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_a_worker_waits_for_its_peers_then_gives_up_naming_them(capsys):
  port = _closed_port()
  cluster = {'worker': ['127.0.0.1:1', f'127.0.0.1:{port}']}
  start = time.monotonic()
  with pytest.raises(ValueError, match=(f'worker 0: gave up after 1 s waiting for worker 1 '
                                        rf'\(127.0.0.1:{port}\) to start')):
    distribute.wait_for_peers(cluster, 'worker', 0, timeout=1, poll=0.2)
  assert time.monotonic() - start < 5
  assert f'worker 0: waiting for worker 1 (127.0.0.1:{port}) to start' in capsys.readouterr().err
  with socket.socket() as server:  # a peer that listens is not waited for
    server.bind(('127.0.0.1', 0))
    server.listen()
    cluster = {'worker': ['127.0.0.1:1', f'127.0.0.1:{server.getsockname()[1]}']}
    distribute.wait_for_peers(cluster, 'worker', 0, timeout=1, poll=0.2)
