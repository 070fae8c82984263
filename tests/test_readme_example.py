"""The README's train-step example runs as written.

The code is the ```python block right after the line `<!-- example: train_step -->` in README.md.
It runs in a fresh interpreter, as a user would run it, with XLA's backend optimisations off to
keep compilation cheap on CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- example: train_step -->"


def extract_example() -> tuple[str, str]:
  """(source file, code) of the block after the marker."""
  path = os.path.join(ROOT, "README.md")
  text = open(path, encoding="utf-8").read()
  assert MARKER in text, f"{path} has no {MARKER!r} line"
  after = text[text.index(MARKER) + len(MARKER):]
  match = re.match(r"\s*```python\n(.*?)\n```", after, re.DOTALL)
  assert match, f"{path}: no ```python block right after {MARKER!r}"
  return path, match.group(1)


@pytest.mark.slow
def test_train_step_example_runs():
  path, code = extract_example()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS=" ".join(
      ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]))
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, f"the example in {path} failed:\n{result.stderr[-3000:]}"
  losses = [float(x) for x in re.findall(r"^step \d+ loss ([-\d.naif]+)$", result.stdout, re.M)]
  assert len(losses) == 5, result.stdout
  assert all(0 < loss < 10 for loss in losses) and losses[-1] < losses[0], losses
