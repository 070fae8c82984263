"""The README's main job, end to end, at a smaller size: the three real scripts as subprocesses.

Runs `make demo-pipeline` with `configs/demo.py:fast` (the same command sequence `make demo` runs) and
checks every artifact a newcomer is told about in the README.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from sciqa_jax.data.registry import get_task
from tests.conftest import FAST_COMPILE_XLA_FLAGS
from tests.demo_config import load_demo_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fast_demo_end_to_end(tmp_path):
  workdir = tmp_path / "demo"
  env = dict(os.environ)
  # The scripts run on this machine's real device count, compiled quickly like the rest of the suite.
  env["XLA_FLAGS"] = FAST_COMPILE_XLA_FLAGS
  result = subprocess.run(
      ["make", "--no-print-directory", "demo-pipeline", f"PY={sys.executable}", f"WORKDIR={workdir}",
       "DEMO_CONFIG=configs/demo.py:fast"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

  config = load_demo_config("fast")
  task = get_task(config.task)
  num_train = len(task.load("train", source=config.data.source, max_examples=config.data.max_examples))
  num_test = len(task.load("test", source=config.data.source, max_examples=config.data.max_examples))

  manifest = json.loads((workdir / "cache" / "manifest.json").read_text())
  train_counts = manifest["counts"]["train"]
  assert train_counts["examples"] == num_train
  assert train_counts["kept"] + train_counts["wrong"] + train_counts["unparseable"] + \
      train_counts["duplicates"] == num_train * config.teacher.num_samples
  assert 0 < train_counts["kept"] and train_counts["wrong"] > 0  # the filter removed the planted errors

  for run in ("two_stage", "answer_only"):
    assert any((workdir / run / "checkpoints").iterdir()), f"no checkpoint in {run}"
    out = workdir / run / "eval" / config.task / "test" / run
    predictions = (out / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == num_test
    ids = {json.loads(line)["id"] for line in predictions}
    assert len(ids) == num_test
  assert (workdir / "two_stage" / "export" / "rationale" / "config.json").exists()
  assert (workdir / "two_stage" / "export" / "answer" / "config.json").exists()

  table = (workdir / "results.md").read_text()
  for name, objective in (("teacher", "teacher:template"), ("answer_only", "answer_only"),
                          ("two_stage", "two_stage")):
    assert f"| {name} | {objective} | {config.task} | test |" in table
  assert (workdir / "results.png").stat().st_size > 0
  assert (workdir / "eval" / config.task / "test" / "teacher" / "metrics.json").exists()

  # A config of another task is refused in one line, naming both tasks; nothing is written.
  evaluated = workdir / "two_stage" / "eval"
  before = sorted(str(p) for p in evaluated.rglob("*"))
  refused = subprocess.run(
      [sys.executable, "evaluate.py", "--config", "configs/generate_arc_easy.py",
       "--checkpoint", str(workdir / "two_stage"), "--split", "test"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert refused.returncode == 2, refused.stderr[-2000:]
  last = refused.stderr.strip().splitlines()[-1]
  assert last.startswith("evaluate.py: error: --config is for task 'arc_easy'"), last
  assert "'arc_easy'" in refused.stderr and f"'{config.task}'" in refused.stderr
  assert "Traceback" not in refused.stderr
  assert sorted(str(p) for p in evaluated.rglob("*")) == before
