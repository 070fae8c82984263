"""The README's benchmark commands run: each bench script end to end in its `--quick` mode.

Tiny shapes, so the figures mean nothing; what is checked is that every code path of the benches
(ours, the PyTorch peer, train.py as a subprocess, the printed ratio) still runs against the current
package, so the commands the README's performance table cites do not rot between measurements.
"""

import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import FAST_COMPILE_XLA_FLAGS

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script,expected", [
    ("bench_t5.py", "ours/HF = "),
    ("bench_train.py", "ours/peer = "),
    ("bench_eval.py", "speed-up "),
    ("bench_lm_decode.py", "fraction of floor "),
])
def test_bench_quick(script, expected):
  env = dict(os.environ, XLA_FLAGS=FAST_COMPILE_XLA_FLAGS)
  result = subprocess.run([sys.executable, str(REPO / "bench" / script), "--quick"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert expected in result.stdout, result.stdout[-3000:]
