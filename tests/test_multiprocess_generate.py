"""generate.py as a two-process JAX job (gloo collectives on 127.0.0.1, CPU devices) with the
jax_t5 teacher on a tiny random T5: both `teacher.multiprocess` modes write the cache of a
one-process run, byte for byte, and so does a job whose process was SIGKILLed, once every process
is restarted.

The one-process reference runs here, on the session's 4 devices; the jobs' processes get 1
(replicas) or 2 (sharded: one mesh of 4 over both) devices each, and teacher.batch_size=3 is
rounded up to 3 or 4 rows: the samples must depend on neither. This module also serves
tests/test_multiprocess_train.py (`run_job`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from sciqa_jax import cache, rationales
from tests.conftest import FAST_COMPILE_XLA_FLAGS

REPO = pathlib.Path(__file__).resolve().parents[1]

CONFIG_FILE = """
from sciqa_jax.config import base_config
def get_config():
  c = base_config()
  c.task = "coin_flip"
  c.data.max_examples = 8
  t = c.teacher
  t.backend, t.model = "jax_t5", {model!r}
  t.num_samples, t.temperature = 2, 1.0  # sampling: seeds must not depend on the process count
  t.max_new_tokens, t.answer_max_new_tokens = 8, 4
  t.batch_size, t.shard_size, t.max_input_length = 3, 2, 256
  t.keep, t.allow_empty = "all", True  # a random model's answers are never right
  return c
"""

# generate.py, plus two test hooks: KILL_AT_SHARD=k SIGKILLs this process once its k-th shard
# file is renamed into place but before it is recorded anywhere (the narrowest window), and
# TEACHER_BYTES=path writes the teacher's parameter bytes (total, on this process's devices).
WRAPPER = """
import json, os, signal, sys
sys.path.insert(0, {repo!r})
import generate
from sciqa_jax import cache, cli
from sciqa_jax.teacher import jax_model

if os.environ.get("KILL_AT_SHARD"):
  real_sha256, renamed = cache.sha256_file, []
  def sha256_or_die(path):
    renamed.append(path)
    if len(renamed) == int(os.environ["KILL_AT_SHARD"]):
      os.kill(os.getpid(), signal.SIGKILL)
    return real_sha256(path)
  cache.sha256_file = sha256_or_die

if os.environ.get("TEACHER_BYTES"):
  import jax
  real_init = jax_model.JaxTeacher.__init__
  def init_and_report(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    leaves = jax.tree.leaves(self.params)
    with open(os.environ["TEACHER_BYTES"], "w") as f:
      json.dump({{"total": sum(x.nbytes for x in leaves),
                 "here": sum(s.data.nbytes for x in leaves for s in x.addressable_shards),
                 "devices": len(self.runner.placement.mesh.devices.flat)}}, f)
  jax_model.JaxTeacher.__init__ = init_and_report

cli.run(generate.main)
"""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def job_env(devices: int, **extra) -> dict:
  """A worker's environment: CPU JAX with `devices` devices and gloo collectives."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", XLA_FLAGS=FAST_COMPILE_XLA_FLAGS,
             PYTHONPATH=str(REPO))
  env.update(extra)
  return env


def start_job(command: list[str], tmp_path, name: str, *, devices: int,
              envs: tuple[dict, ...] = ({}, {})) -> list[tuple[subprocess.Popen, pathlib.Path]]:
  """`command` in len(envs) processes of one job (process i gets envs[i] on top)."""
  address = f"127.0.0.1:{free_port()}"
  workers = []
  for i, extra in enumerate(envs):
    log = tmp_path / f"{name}.{i}.log"
    with open(log, "w") as out:
      workers.append((subprocess.Popen(
          command + [f"--coordinator_address={address}", f"--num_processes={len(envs)}",
                     f"--process_id={i}"], cwd=REPO, env=job_env(devices, **extra), stdout=out,
          stderr=subprocess.STDOUT), log))
  return workers


def wait_job(workers, timeout: float = 240) -> list[int]:
  """Waits for every process; at the first failure (or the deadline) SIGKILLs the others, which
  would otherwise wait for it at a collective. Returns the exit codes."""
  deadline = time.monotonic() + timeout
  try:
    while any(w.poll() is None for w, _ in workers) and time.monotonic() < deadline:
      if any(w.poll() not in (None, 0) for w, _ in workers):
        break
      time.sleep(0.1)
  finally:
    for worker, _ in workers:
      if worker.poll() is None:
        worker.kill()
        worker.wait()
  return [w.returncode for w, _ in workers]


def run_job(command, tmp_path, name, *, devices, envs=({}, {}), timeout=240) -> None:
  workers = start_job(command, tmp_path, name, devices=devices, envs=envs)
  codes = wait_job(workers, timeout)
  for i, (code, (_, log)) in enumerate(zip(codes, workers)):
    assert code == 0, f"{name}: process {i} exited {code}:\n{log.read_text()[-4000:]}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(config file, wrapper script, reference cache dir): the reference is one process here."""
  from tests.fixtures import make_tiny_t5_dir
  root = tmp_path_factory.mktemp("generate_mp")
  model, _ = make_tiny_t5_dir(root / "t5", tokenizer=True)
  config_file = root / "tiny_t5.py"
  config_file.write_text(textwrap.dedent(CONFIG_FILE.format(model=model)))
  wrapper = root / "generate_wrapper.py"
  wrapper.write_text(WRAPPER.format(repo=str(REPO)))
  reference = root / "reference"
  sys.path.insert(0, str(root))
  try:
    config = __import__("tiny_t5").get_config()
  finally:
    sys.path.remove(str(root))
  config.cache_dir = str(reference)
  rationales.build_cache(config, progress=False)
  return config_file, wrapper, reference


def cache_files(cache_dir) -> dict[str, str]:
  """{relative path: sha256} of every file of a cache directory (the manifest included)."""
  root = pathlib.Path(cache_dir)
  return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
          for path in sorted(root.rglob("*")) if path.is_file()}


def generate_command(setup, cache_dir, mode: str) -> list[str]:
  config_file, wrapper, _ = setup
  command = [sys.executable, str(wrapper), "--config", str(config_file), "--noprogress",
             f"--config.cache_dir={cache_dir}", f"--config.teacher.multiprocess={mode}"]
  if mode == "sharded":
    command.append("--config.teacher.parallelism=fsdp")
  return command


DEVICES = {"replicas": 1, "sharded": 2}


def assert_reference_cache(cache_dir, reference):
  manifest = cache.read_manifest(str(cache_dir))
  assert manifest["splits"]["train"]["complete"] and manifest["counts"]["train"]["examples"] == 8
  assert manifest["splits"]["train"]["num_shards"] == 4
  assert cache_files(cache_dir) == cache_files(reference)  # manifest and shards, byte for byte


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["replicas", "sharded"])
def test_two_processes_write_the_cache_of_one(setup, tmp_path, mode):
  reference = setup[2]
  cache_dir = tmp_path / "cache"
  envs = tuple({"TEACHER_BYTES": str(tmp_path / f"teacher{i}.json")} for i in range(2))
  run_job(generate_command(setup, cache_dir, mode), tmp_path, mode, devices=DEVICES[mode],
          envs=envs)
  assert_reference_cache(cache_dir, reference)
  teachers = [json.loads((tmp_path / f"teacher{i}.json").read_text()) for i in range(2)]
  for teacher in teachers:
    if mode == "replicas":  # a whole copy on this process's one device
      assert teacher["devices"] == 1 and teacher["here"] == teacher["total"]
    else:  # one teacher over both processes' 4 devices: this process holds about half of it
      assert teacher["devices"] == 4 and teacher["here"] < 0.6 * teacher["total"], teacher
  summary = (tmp_path / f"{mode}.0.log").read_text()
  assert "| train | 8 | 16 |" in summary
  assert "| train |" not in (tmp_path / f"{mode}.1.log").read_text()  # process 0 reports


@pytest.mark.slow
@pytest.mark.parametrize("mode, victim, at_shard", [("replicas", 1, 1), ("sharded", 0, 2)])
def test_sigkill_of_one_process_then_restart_of_all(setup, tmp_path, mode, victim, at_shard):
  """The victim dies right after a shard file is renamed into place, before any record of it
  (replicas: process 1's first shard, shard 1; sharded: process 0's second, shard 1); the other
  process is then SIGKILLed wherever it is, as a job's launcher would. The restart of both must
  end with the reference cache."""
  reference = setup[2]
  cache_dir = tmp_path / "cache"
  command = generate_command(setup, cache_dir, mode)
  envs = [{}, {}]
  envs[victim] = {"KILL_AT_SHARD": str(at_shard)}
  workers = start_job(command, tmp_path, "killed", devices=DEVICES[mode], envs=tuple(envs))
  codes = wait_job(workers)
  assert codes[victim] == -signal.SIGKILL, workers[victim][1].read_text()[-3000:]
  shard_1 = cache_dir / "train" / cache.shard_name(1)
  assert shard_1.exists()  # renamed into place ...
  manifest = cache.read_manifest(str(cache_dir))
  assert "1" not in manifest["splits"]["train"]["shards"]  # ... but recorded nowhere
  assert not manifest["splits"]["train"]["complete"]

  run_job(command, tmp_path, "restarted", devices=DEVICES[mode])
  assert_reference_cache(cache_dir, reference)
