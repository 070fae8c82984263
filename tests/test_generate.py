"""generate.py / sciqa_jax.rationales: counts, idempotence, and crash-and-resume under SIGKILL."""

import collections
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sciqa_jax import cache, rationales
from sciqa_jax.config import base_config
from sciqa_jax.teacher.base import TeacherOutput

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_EXAMPLES, SHARD_SIZE, NUM_SAMPLES = 40, 4, 3


class FakeTeacher:
  """A seeded ExampleTeacher for yes/no tasks: correct, wrong, unparseable and duplicate samples.

  Outputs depend on (seed, example id, sample), so a resumed run only matches an uninterrupted one
  if every shard is asked with the same seed. `delay` slows each call down (crash test).
  """

  name = "fake"

  def __init__(self, delay: float = 0.0):
    self.delay = delay

  def explain(self, examples, *, num_samples=1, seed=0):
    time.sleep(self.delay)
    out = []
    for example in examples:
      samples = []
      for k in range(num_samples):
        rng = random.Random(f"{seed}/{example.id}/{k}")
        roll, salt = rng.random(), rng.randrange(1000)
        if k and roll < 0.15:
          samples.append(samples[0])  # a duplicate rationale
          continue
        wrong = {"yes": "no", "no": "yes"}[example.answer]
        answer = example.answer if roll < 0.7 else wrong if roll < 0.9 else "maybe"
        samples.append(TeacherOutput(f"Reasoning {salt} about {example.id}.",
                                     f"So the answer is {answer}."))
      out.append(samples)
    return out


def small_config(cache_dir) -> "ml_collections.ConfigDict":
  config = base_config()
  config.task = "coin_flip"
  config.data.source = "builtin"
  config.data.max_examples = NUM_EXAMPLES
  config.teacher.backend = "template"
  config.teacher.num_samples = NUM_SAMPLES
  config.teacher.temperature = 0.7
  config.teacher.shard_size = SHARD_SIZE
  config.cache_dir = str(cache_dir)
  return config


def serialized(cache_dir):
  return [cache.serialize_record(r) for r in cache.read_records(str(cache_dir), "train")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run: (cache dir, counts)."""
  cache_dir = tmp_path_factory.mktemp("reference")
  counts = rationales.build_cache(small_config(cache_dir), teacher=FakeTeacher(),
                                          progress=False)
  return cache_dir, counts


def test_counts_and_idempotent_rerun(reference):
  cache_dir, counts = reference
  train = counts["train"]
  assert train["examples"] == NUM_EXAMPLES and train["samples"] == NUM_EXAMPLES * NUM_SAMPLES
  assert train["kept"] + train["wrong"] + train["unparseable"] + train["duplicates"] == \
      train["samples"]
  assert min(train["wrong"], train["unparseable"], train["duplicates"], train["kept"]) > 0
  records = list(cache.read_records(str(cache_dir), "train"))
  assert len(records) == train["kept"] and all(r.correct for r in records)
  assert train["examples_with_kept"] == len({r.example.id for r in records})
  manifest = cache.read_manifest(str(cache_dir))
  assert manifest["splits"]["train"]["num_shards"] == NUM_EXAMPLES // SHARD_SIZE
  assert manifest["config"]["teacher.num_samples"] == NUM_SAMPLES

  class NoTeacher(FakeTeacher):
    def explain(self, *args, **kwargs):
      raise AssertionError("a complete cache must not ask the teacher again")

  again = rationales.build_cache(small_config(cache_dir), teacher=NoTeacher(),
                                         progress=False)
  assert again == counts
  table = rationales.format_summary(counts)
  assert "| train | 40 | 120 |" in table and "examples_with_kept" in table


def test_template_teacher_on_builtin_task(tmp_path):
  config = small_config(tmp_path)
  config.task = "science_demo"
  config.data.max_examples = 12
  config.teacher.error_rate = 0.3
  counts = rationales.build_cache(config, progress=False)["train"]
  assert counts["examples"] == 12 and counts["kept"] > 0
  assert counts["kept"] + counts["wrong"] + counts["unparseable"] + counts["duplicates"] == 36
  assert {r.teacher for r in cache.read_records(str(tmp_path), "train")} == {"template"}


WRAPPER = """
import sys
sys.path.insert(0, {repo!r})
from absl import app
import generate
from sciqa_jax import rationales
from tests.test_generate import FakeTeacher
rationales.build_teacher = lambda config: FakeTeacher(delay={delay})
app.run(generate.main)
"""

CONFIG_FILE = """
from tests.test_generate import small_config
def get_config():
  return small_config("")
"""


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path, reference):
  reference_dir, reference_counts = reference
  (tmp_path / "wrapper.py").write_text(WRAPPER.format(repo=str(REPO), delay=0.25))
  (tmp_path / "config.py").write_text(textwrap.dedent(CONFIG_FILE))
  cache_dir = tmp_path / "cache"
  env = dict(os.environ, PYTHONPATH=str(REPO))
  process = subprocess.Popen(
      [sys.executable, str(tmp_path / "wrapper.py"), "--config", str(tmp_path / "config.py"),
       f"--config.cache_dir={cache_dir}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE)
  first_shard = cache_dir / "train" / cache.shard_name(0)
  deadline = time.time() + 120
  while not first_shard.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  os.kill(process.pid, signal.SIGKILL)
  _, stderr = process.communicate(timeout=30)
  assert process.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
  manifest = cache.read_manifest(str(cache_dir))
  assert not manifest["splits"]["train"]["complete"]  # really killed mid-run

  counts = rationales.build_cache(small_config(cache_dir), teacher=FakeTeacher(),
                                          progress=False)
  assert counts == reference_counts
  resumed, uninterrupted = serialized(cache_dir), serialized(reference_dir)
  assert collections.Counter(resumed) == collections.Counter(uninterrupted)
  assert len(set(resumed)) == len(resumed)  # no record written twice
  assert not list((cache_dir / "train").glob("*.tmp"))
