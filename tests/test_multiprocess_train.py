"""train.py as a two-process JAX job (gloo collectives on 127.0.0.1, one CPU device each) against
one process with two devices: the same metrics rows, checkpoints, validation accuracies, best step
and exported students, also when one process is SIGKILLed and both are restarted (resume).

Every process computes the same global batch k and feeds its block of it (the trainer's
`_host_block`), so the job trains on exactly the batches of one process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap

import jax
import numpy as np
import pytest

from sciqa_jax import checkpoints as ckpt
from sciqa_jax import rationales
from sciqa_jax.config import base_config
from sciqa_jax.models import load_pretrained
from tests.test_multiprocess_generate import REPO, job_env, run_job, start_job, wait_job

CONFIG_FILE = """
from sciqa_jax.config import base_config
def get_config():
  c = base_config()
  c.cache_dir = {cache_dir!r}
  c.data.max_examples = 24
  m = c.model
  m.d_model, m.d_kv, m.d_ff, m.num_heads = 32, 16, 64, 2
  m.num_layers = m.num_decoder_layers = 1
  m.tokenizer_vocab_size, m.dropout_rate = 300, 0.1  # dropout: per-step keys must agree too
  t = c.train
  t.steps, t.answer_steps, t.batch_size = 8, 4, 8
  t.max_input_length, t.max_target_length = 96, 48
  t.learning_rate, t.log_every, t.checkpoint_every, t.eval_every = 1e-2, 2, 2, 4
  t.validate, t.export_hf, t.keep_checkpoints = True, True, 5
  c.eval.batch_size, c.eval.max_rationale_length = 8, 8
  return c
"""

# train.py, plus a test hook: at the save of checkpoint KILL_AT_CHECKPOINT every process first
# waits for the earlier saves to finish, then the one with KILL_ME set SIGKILLs itself.
WRAPPER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import train
from sciqa_jax import checkpoints, cli

if os.environ.get("KILL_AT_CHECKPOINT"):
  real_save = checkpoints.Checkpointer.save
  def save_or_die(self, step, *args, **kwargs):
    if step == int(os.environ["KILL_AT_CHECKPOINT"]):
      self.wait()
      if os.environ.get("KILL_ME"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(self, step, *args, **kwargs)
  checkpoints.Checkpointer.save = save_or_die

cli.run(train.main)
"""

TIMING = {"tokens_per_sec", "steps_per_sec", "mfu", "flops_per_sec"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(train command without --workdir, reference workdir): the reference is one process with
  two devices, run as a script like the jobs."""
  import subprocess  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("train_mp")
  config = base_config()
  config.data.max_examples = 24
  config.teacher.num_samples, config.teacher.error_rate, config.teacher.shard_size = 2, 0.2, 8
  config.cache_dir = str(root / "cache")
  rationales.build_cache(config, progress=False)
  config_file = root / "tiny.py"
  config_file.write_text(textwrap.dedent(CONFIG_FILE.format(cache_dir=config.cache_dir)))
  wrapper = root / "train_wrapper.py"
  wrapper.write_text(WRAPPER.format(repo=str(REPO)))
  command = [sys.executable, str(wrapper), "--config", str(config_file), "--noprogress"]
  reference = root / "reference"
  subprocess.run(command + [f"--workdir={reference}"], cwd=REPO, env=job_env(2), check=True,
                 capture_output=True)
  return command, reference


def metrics_rows(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def assert_rows_close(got: list[dict], want: list[dict]) -> None:
  assert [(r["step"], r["split"], sorted(r)) for r in got] == \
      [(r["step"], r["split"], sorted(r)) for r in want]
  for g, w in zip(got, want):
    for key, value in w.items():
      if isinstance(value, float):
        assert g[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (g["step"], key)
      else:
        assert g[key] == value, (g["step"], key)


def assert_trees_close(got, want) -> None:
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def assert_same_run(workdir, reference, *, resumed: bool = False) -> None:
  """Metrics rows (train and validation), every checkpoint's params, the summary's best step and
  validation accuracy, and the exported students of `workdir` equal the reference's."""
  assert_rows_close(metrics_rows(workdir), metrics_rows(reference))
  managers = [ckpt.Checkpointer(str(d), read_only=True) for d in (workdir, reference)]
  try:
    assert managers[0].all_steps() == managers[1].all_steps() == [2, 4, 6, 8]
    assert managers[0].best_step() == managers[1].best_step()
    for step in (4, 8):
      assert_trees_close(managers[0].restore_params(step), managers[1].restore_params(step))
  finally:
    for manager in managers:
      manager.close()
  summaries = [json.loads((d / "summary.json").read_text()) for d in (workdir, reference)]
  keys = ("final_step", "best_step", "best_val_accuracy")
  for key in keys if resumed else keys + ("train_step_compilations",):  # resumed: phase 2 only
    assert summaries[0][key] == summaries[1][key], key
  assert summaries[0]["final_loss"] == pytest.approx(summaries[1]["final_loss"], rel=1e-4)
  for student in ("rationale", "answer"):
    exported = [d / "export" / student for d in (workdir, reference)]
    assert sorted(os.listdir(exported[0])) == sorted(os.listdir(exported[1]))
    for name in ("config.json", "tokenizer.json"):
      assert (exported[0] / name).read_bytes() == (exported[1] / name).read_bytes()
    assert_trees_close(load_pretrained(str(exported[0]))[1], load_pretrained(str(exported[1]))[1])


@pytest.mark.slow
def test_two_processes_train_like_one(setup, tmp_path):
  command, reference = setup
  workdir = tmp_path / "run"
  run_job(command + [f"--workdir={workdir}"], tmp_path, "train", devices=1)
  assert_same_run(workdir, reference)
  assert "exported answer:" in (tmp_path / "train.0.log").read_text()


@pytest.mark.slow
def test_sigkill_of_one_process_then_restart_of_both_resumes(setup, tmp_path):
  """Process 0 (the writer of metrics, summary and export) dies as checkpoint 6 is due, after
  validation at 4 and checkpoints 2 and 4; process 1 is then SIGKILLed at its own save of 6."""
  command, reference = setup
  workdir = tmp_path / "run"
  command = command + [f"--workdir={workdir}"]
  workers = start_job(command, tmp_path, "killed", devices=1,
                      envs=({"KILL_AT_CHECKPOINT": "6", "KILL_ME": "1"},
                            {"KILL_AT_CHECKPOINT": "6"}))
  codes = wait_job(workers)
  assert codes[0] == -signal.SIGKILL, workers[0][1].read_text()[-3000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  assert max(row["step"] for row in metrics_rows(workdir)) == 6  # rows past 4: redone

  run_job(command, tmp_path, "restarted", devices=1)
  assert "resumed from step 4" in (tmp_path / "restarted.0.log").read_text()
  assert_same_run(workdir, reference, resumed=True)
