"""The rationale cache written by several processes (sciqa_jax.cache, "Several processes"), fast:
processes are threads with an in-memory allgather, the teacher is test_generate's seeded fake.

Both modes must end with the manifest and shards of a one-process run, byte for byte; a process
that fails mid-split stops every process with its error; the restart of all, with any process
count, merges what the failed run recorded and redoes only the rest. The real thing (JAX
processes, the jax_t5 teacher, SIGKILL) is tests/test_multiprocess_generate.py.
"""

from __future__ import annotations

import json
import pathlib
import threading

import pytest

from sciqa_jax import cache, config as config_lib, errors, rationales
from sciqa_jax.data import registry
from tests.test_generate import FakeTeacher, shard_digests, small_config


class ThreadGroup:
  """One thread's view of a process group of `count` threads (sharding.ProcessGroup's protocol)."""

  def __init__(self, index: int, count: int, board: dict):
    self.index, self.count, self.board = index, count, board

  def allgather(self, value):
    board = self.board
    board["values"][self.index] = json.loads(json.dumps(value))  # what crosses a process boundary
    board["barrier"].wait()
    out = list(board["values"])
    board["barrier"].wait()  # nobody overwrites a value before everyone has read it
    return out


class FailingTeacher(FakeTeacher):
  """Raises `error` on its `calls`-th explain call (0-based)."""

  def __init__(self, calls: int, error: Exception):
    super().__init__()
    self.calls, self.error = calls, error

  def explain(self, examples, **kwargs):
    if self.calls == 0:
      raise self.error
    self.calls -= 1
    return super().explain(examples, **kwargs)


def run_processes(config, count: int, teachers=None) -> list:
  """build_cache in `count` threads; returns each one's counts or the exception it raised."""
  board = {"values": [None] * count, "barrier": threading.Barrier(count, timeout=60)}
  results: list = [None] * count

  def process(index):
    teacher = teachers[index] if teachers else FakeTeacher()
    try:
      results[index] = rationales.build_cache(config, teacher=teacher, progress=False,
                                              processes=ThreadGroup(index, count, board))
    except Exception as e:  # pylint: disable=broad-except
      results[index] = e

  threads = [threading.Thread(target=process, args=(i,)) for i in range(count)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=120)
  assert not any(thread.is_alive() for thread in threads), "a process is stuck at a sync point"
  return results


def mp_config(cache_dir, mode: str):
  config = small_config(cache_dir)
  config.teacher.multiprocess = mode
  return config


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  cache_dir = tmp_path_factory.mktemp("reference")
  counts = rationales.build_cache(small_config(cache_dir), teacher=FakeTeacher(), progress=False)
  return cache_dir, counts


def manifest_bytes(cache_dir) -> bytes:
  return (pathlib.Path(cache_dir) / cache.MANIFEST).read_bytes()


def assert_same_cache(cache_dir, reference_dir):
  assert manifest_bytes(cache_dir) == manifest_bytes(reference_dir)
  assert shard_digests(cache_dir) == shard_digests(reference_dir)
  leftovers = [p.name for p in (pathlib.Path(cache_dir) / "train").iterdir()
               if not p.name.endswith(".tfrecord")]
  assert leftovers == []  # no process record, no temp file


def test_modes_are_the_config_choices():
  assert config_lib.CHOICES["teacher.multiprocess"] == cache.MULTIPROCESS_MODES
  assert config_lib.base_config().teacher.multiprocess == "replicas"


@pytest.mark.parametrize("mode, count", [("replicas", 2), ("replicas", 3), ("sharded", 2)])
def test_processes_write_the_cache_of_one(tmp_path, reference, mode, count):
  reference_dir, reference_counts = reference
  results = run_processes(mp_config(tmp_path, mode), count)
  assert results == [reference_counts] * count  # every process returns the merged counts
  assert_same_cache(tmp_path, reference_dir)


def test_replicas_split_the_shards(tmp_path):
  asked = [set(), set()]

  class Recording(FakeTeacher):
    def __init__(self, index):
      super().__init__()
      self.index = index

    def explain(self, examples, **kwargs):
      asked[self.index].update(e.id for e in examples)
      return super().explain(examples, **kwargs)

  config = mp_config(tmp_path, "replicas")
  run_processes(config, 2, [Recording(0), Recording(1)])
  # 40 examples in shards of 4: process p explains shards p, p + 2, ...
  examples = registry.load_examples(config, "train").examples
  shard_of = {e.id: n // 4 for n, e in enumerate(examples)}
  assert asked[0] and asked[1] and not asked[0] & asked[1]
  assert {shard_of[i] % 2 for i in asked[0]} == {0} and {shard_of[i] % 2 for i in asked[1]} == {1}


def test_a_user_error_in_one_process_stops_all(tmp_path):
  error = errors.ConfigError("prompt 3 has 80 tokens (teacher.max_input_length=64)")
  results = run_processes(mp_config(tmp_path, "replicas"), 2,
                          [FakeTeacher(), FailingTeacher(2, error)])
  assert results[1] is error
  assert type(results[0]) is errors.ConfigError and str(results[0]) == str(error)


@pytest.mark.parametrize("failing, restart_count", [(1, 2), (1, 1), (0, 3)])
def test_restart_after_a_failed_process_resumes(tmp_path, reference, failing, restart_count):
  reference_dir, reference_counts = reference
  teachers = [FakeTeacher(), FakeTeacher()]
  teachers[failing] = FailingTeacher(3, RuntimeError("killed"))
  results = run_processes(mp_config(tmp_path, "replicas"), 2, teachers)
  assert all(isinstance(r, RuntimeError) for r in results), results
  # Process 1's finished shards are in its process record (not yet merged); nothing is complete.
  record = tmp_path / "train" / cache.PROCESS_RECORD.format(index=1)
  assert len(json.loads(record.read_text())["shards"]) == (3 if failing == 1 else 5)
  assert not cache.read_manifest(str(tmp_path))["splits"]["train"]["complete"]

  class Counting(FakeTeacher):
    shards = 0

    def explain(self, examples, **kwargs):
      Counting.shards += 1
      return super().explain(examples, **kwargs)

  results = run_processes(mp_config(tmp_path, "replicas"), restart_count,
                          [Counting() for _ in range(restart_count)])
  assert results == [reference_counts] * restart_count
  assert_same_cache(tmp_path, reference_dir)
  # The failed process had finished 3 of its 5 shards, the other all 5: only 2 are redone.
  assert Counting.shards == 10 - 3 - 5


def test_a_process_record_of_another_config_is_ignored(tmp_path, reference):
  reference_dir, _ = reference
  run_processes(mp_config(tmp_path, "replicas"), 2,
                [FakeTeacher(), FailingTeacher(2, RuntimeError("killed"))])
  record = tmp_path / "train" / cache.PROCESS_RECORD.format(index=1)
  data = json.loads(record.read_text())
  data["config"]["teacher.num_samples"] = 99
  record.write_text(json.dumps(data))
  run_processes(mp_config(tmp_path, "replicas"), 2)
  assert_same_cache(tmp_path, reference_dir)


def test_config_mismatch_is_raised_on_every_process(tmp_path, reference):
  run_processes(mp_config(tmp_path, "sharded"), 1)
  config = mp_config(tmp_path, "sharded")
  config.teacher.num_samples = 2
  results = run_processes(config, 2)
  for result in results:
    assert isinstance(result, cache.CacheConfigMismatchError), results
    assert "teacher.num_samples: 3 -> 2" in str(result)
