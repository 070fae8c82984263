"""generate.py / sciqa_jax.rationales: counts, idempotence, and crash-and-resume under SIGKILL."""

import builtins
import collections
import hashlib
import json
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import ml_collections
import pytest

from sciqa_jax import cache, errors, rationales
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


# ---- coverage: questions without a rationale, unmatched import ids, empty splits ----------------


def jsonl(rows) -> str:
  return "".join(json.dumps(row) + "\n" for row in rows)


def arc_row(i: int, labels: str = "1234", answer: int = 2) -> dict:
  """An ARC record in AI2's layout; digit labels as some ARC questions have (normalised to A-D)."""
  return {"id": f"arc-{i}", "question": {"stem": f"Question {i}: which option?", "choices": [
      {"label": label, "text": f"option {label} of {i}"} for label in labels]},
          "answerKey": labels[answer - 1]}


def import_config(tmp_path, records, imported, **teacher) -> "ml_collections.ConfigDict":
  """arc_easy from a local file, explained by the import teacher."""
  data = tmp_path / "data"
  data.mkdir(exist_ok=True)
  (data / "train.jsonl").write_text(jsonl(records))
  (tmp_path / "imported.jsonl").write_text(jsonl(imported))
  config = base_config()
  config.task = "arc_easy"
  config.data.source = "local"
  config.data.path = str(data / "{split}.jsonl")
  config.teacher.backend = "import"
  config.teacher.model = str(tmp_path / "imported.jsonl")
  config.teacher.shard_size = 4
  config.cache_dir = str(tmp_path / "cache")
  for key, value in teacher.items():
    config.teacher[key] = value
  return config


def test_import_digit_answers_and_prompt_style(tmp_path):
  records = [arc_row(i) for i in range(6)]
  imported = [{"id": f"arc-{i}", "rationale": f"Option 2 fits {i}.", "answer": "2"}
              for i in range(3)]
  imported += [{"id": f"arc-{i}", "rationale": f"It is option 2. Therefore, the answer is ({2})."}
               for i in range(3, 6)]
  config = import_config(tmp_path, records, imported)
  counts = rationales.build_cache(config, progress=False)["train"]
  assert counts["unparseable"] == 0 and counts["kept"] == 6 and counts["examples_without_kept"] == 0
  manifest = cache.read_manifest(config.cache_dir)
  assert manifest["config"]["teacher.prompt_style"] == "import"  # not a prompt it never used
  assert {r.prompt_style for r in cache.read_records(config.cache_dir, "train")} == {"import"}


def test_coverage_is_reported(tmp_path, caplog, capsys):
  records = [arc_row(i) for i in range(8)]
  # Every other question: each shard of 4 is half covered, so no figure may read 100%.
  imported = [{"id": f"arc-{i}", "rationale": f"Option 2 fits {i}.", "answer": "(B)"}
              for i in range(0, 8, 2)]
  imported += [{"id": f"other-{i}", "rationale": "Elsewhere.", "answer": "A"} for i in range(7)]
  config = import_config(tmp_path, records, imported)
  with caplog.at_level(logging.WARNING):
    counts = rationales.build_cache(config, progress=True)["train"]
  assert counts["kept"] == counts["samples"] == 4  # every sample kept ...
  assert counts["examples_with_kept"] == 4 and counts["examples_without_kept"] == 4  # ... not all
  assert counts["unmatched_ids"] == 7
  assert counts["first_unmatched_ids"] == [f"other-{i}" for i in range(rationales.FIRST_IDS)]
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any("4 of 8 questions have no kept rationale" in w for w in warnings), warnings
  assert any("7 ids of the import file match no question" in w and "other-0" in w
             for w in warnings), warnings
  bar = capsys.readouterr().err
  assert "4/8 (50.0%)" in bar and "100.0%" not in bar.split("explaining train")[-1], bar
  summary = rationales.format_summary({"train": counts})
  assert "examples_without_kept" in summary and "unmatched_ids" in summary
  assert "| train | 8 | 4 | 4 |" in summary
  assert "train: 4 of 8 questions have no kept rationale" in summary
  assert "train: 7 ids of the import file match no question (first: other-0, other-1" in summary


ZERO_KEPT_CASES = {
    "empty split": (lambda: [], lambda: [], {}, "has no examples"),
    "every record bad": (lambda: [{**arc_row(i), "answerKey": ""} for i in range(3)],
                         lambda: [], {"skip_bad_records": True},
                         "all 3 of its records are bad and were skipped"),
    "no import id matches": (lambda: [arc_row(i) for i in range(5)],
                             lambda: [{"id": f"ARC-{i}", "rationale": "x", "answer": "B"}
                                      for i in range(5)], {},
                             "none of the ids in the import file"),
    "every rationale wrong": (lambda: [arc_row(i) for i in range(5)],
                              lambda: [{"id": f"arc-{i}", "rationale": "x", "answer": "1"}
                                       for i in range(5)], {},
                              "all 5 samples were dropped (5 wrong"),
}


@pytest.mark.parametrize("case", sorted(ZERO_KEPT_CASES))
def test_split_without_kept_rationale_is_an_error(tmp_path, case):
  records, imported, data, cause = ZERO_KEPT_CASES[case]
  config = import_config(tmp_path, records(), imported())
  for key, value in data.items():
    config.data[key] = value
  with pytest.raises(errors.DataError) as info:
    rationales.build_cache(config, progress=False)
  message = str(info.value)
  assert "split 'train'" in message and cause in message and "teacher.allow_empty" in message
  manifest_path = os.path.join(config.cache_dir, cache.MANIFEST)
  if os.path.exists(manifest_path):
    assert not cache.read_manifest(config.cache_dir)["splits"]["train"]["complete"]
  config.teacher.allow_empty = True
  counts = rationales.build_cache(config, progress=False)["train"]
  assert counts["kept"] == 0
  assert cache.read_manifest(config.cache_dir)["splits"]["train"]["complete"]
  assert list(cache.read_records(config.cache_dir, "train")) == []


# ---- integrity: deterministic shards, repair of a damaged cache ----------------------------------


def shard_digests(cache_dir) -> dict[str, str]:
  return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
          for path in sorted((pathlib.Path(cache_dir) / "train").glob("*.tfrecord"))}


@pytest.mark.parametrize("how", ["overwritten", "truncated"])
def test_damaged_shard_is_caught_and_repaired(tmp_path, reference, how):
  reference_dir, reference_counts = reference
  cache_dir = tmp_path / "cache"
  shutil.copytree(reference_dir, cache_dir)
  shard = cache_dir / "train" / cache.shard_name(3)
  data = shard.read_bytes()
  if how == "truncated":
    shard.write_bytes(data[:-5])
  else:
    shard.write_bytes(data[:40] + bytes([data[40] ^ 0x55]) + data[41:])
  with pytest.raises(errors.CorruptFileError, match=re.escape(str(shard))):
    list(cache.read_records(str(cache_dir), "train"))
  counts = rationales.build_cache(small_config(cache_dir), teacher=FakeTeacher(), progress=False)
  assert counts == reference_counts
  assert shard_digests(cache_dir) == shard_digests(reference_dir)
  assert cache.read_manifest(str(cache_dir)) == cache.read_manifest(str(reference_dir))
  assert serialized(cache_dir) == serialized(reference_dir)


def test_same_config_gives_identical_shards(tmp_path, reference):
  reference_dir, _ = reference
  rationales.build_cache(small_config(tmp_path), teacher=FakeTeacher(), progress=False)
  assert shard_digests(tmp_path) == shard_digests(reference_dir)


# ---- a complete cache is only read; config errors leave nothing behind ---------------------------


def test_complete_cache_in_read_only_directory(tmp_path, reference):
  reference_dir, reference_counts = reference
  cache_dir = tmp_path / "cache"
  shutil.copytree(reference_dir, cache_dir)
  manifest = (cache_dir / cache.MANIFEST).read_bytes()
  if os.geteuid() != 0:
    subprocess.run(["chmod", "-R", "a-w", str(cache_dir)], check=True)
  try:
    with pytest.MonkeyPatch.context() as patch:  # undone before the cleanup below
      _forbid_writes(patch)
      counts = rationales.build_cache(small_config(cache_dir), teacher=FakeTeacher(),
                                      progress=False)
      summary = rationales.format_summary(counts)
      records = serialized(cache_dir)
  finally:
    subprocess.run(["chmod", "-R", "u+w", str(cache_dir)], check=True)
  assert counts == reference_counts and "| train | 40 | 120 |" in summary
  assert records == serialized(reference_dir)
  assert (cache_dir / cache.MANIFEST).read_bytes() == manifest


def _forbid_writes(patch) -> None:
  real_open = builtins.open

  def guarded_open(file, mode="r", *args, **kwargs):
    if any(flag in mode for flag in "wax+"):
      raise PermissionError(f"read-only: {file}")
    return real_open(file, mode, *args, **kwargs)

  def refuse(*args, **kwargs):
    raise PermissionError(f"read-only: {args}")

  patch.setattr(builtins, "open", guarded_open)
  for name in ("replace", "rename", "remove", "unlink", "mkdir", "makedirs"):
    patch.setattr(os, name, refuse)


@pytest.mark.parametrize("key, value, match", [
    ("teacher.splits", ("train,validation",), r"teacher\.splits=\('train,validation',\)"),
    ("teacher.splits", ("train", "dev"), r"teacher\.splits=.*'dev' is not a split"),
    ("teacher.splits", (), r"teacher\.splits=\(\): expected a non-empty tuple"),
    ("teacher.splits", ("train", "train"), r"names a split twice"),
    ("teacher.backend", "gpt9", r"teacher\.backend='gpt9'"),
    ("teacher.keep", "best", r"teacher\.keep='best'"),
    ("teacher.model", "", r"teacher\.model"),
    ("teacher.top_p", 0.0, r"teacher\.top_p=0\.0"),  # config.check's numeric ranges
])
def test_config_errors_leave_nothing_behind(tmp_path, key, value, match):
  config = small_config(tmp_path / "cache")
  config.teacher.backend = "import"
  config.teacher.model = str(tmp_path / "imported.jsonl")
  (tmp_path / "imported.jsonl").write_text('{"id": "x", "rationale": "r"}\n')
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(errors.ConfigError, match=match):
    rationales.build_cache(config, progress=False)
  assert not (tmp_path / "cache").exists()


def test_overlapping_splits_leave_nothing_behind(tmp_path):
  records = [arc_row(i) for i in range(4)]
  config = import_config(tmp_path, records, [{"id": "arc-0", "rationale": "r", "answer": "B"}],
                         splits=("train", "validation"))
  (tmp_path / "data" / "validation.jsonl").write_text(jsonl(records[2:]))
  with pytest.raises(errors.DataError, match=r"splits 'train' and 'validation'.* share 2"):
    rationales.build_cache(config, progress=False)
  assert not os.path.exists(config.cache_dir)


def test_missing_import_file_leaves_nothing_behind(tmp_path):
  config = small_config(tmp_path / "cache")
  config.teacher.backend = "import"
  config.teacher.model = str(tmp_path / "nowhere.jsonl")
  with pytest.raises(errors.MissingFileError, match=r"teacher\.model=.*nowhere\.jsonl"):
    rationales.build_cache(config, progress=False)
  assert not (tmp_path / "cache").exists()


# ---- generate.py: user errors are one line -------------------------------------------------------


def run_generate(tmp_path, *overrides):
  (tmp_path / "config.py").write_text(textwrap.dedent(CONFIG_FILE))
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run(
      [sys.executable, str(REPO / "generate.py"), "--config", str(tmp_path / "config.py"),
       f"--config.cache_dir={tmp_path / 'cache'}", *overrides], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("overrides, match", [
    (("--config.teacher.backend=import", "--config.teacher.model=/nowhere/rationales.jsonl"),
     "teacher.model='/nowhere/rationales.jsonl'"),
    (("--config.teacher.splits=train,validation",), "teacher.splits=('train,validation',)"),
])
def test_generate_user_error_is_one_line(tmp_path, overrides, match):
  result = run_generate(tmp_path, *overrides)
  lines = result.stderr.strip().splitlines()  # nothing else: no start-up noise either
  assert result.returncode == 2, result.stderr
  assert len(lines) == 1 and lines[0].startswith("generate.py: error: "), result.stderr
  assert match in lines[0] and "Traceback" not in result.stderr
  assert not (tmp_path / "cache").exists()
