"""The TFRecord rationale cache, prompts, filtering and the import teacher."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

from sciqa_jax import cache, errors, rationales
from sciqa_jax.data.example import Example
from sciqa_jax.data.registry import get_task
from sciqa_jax.teacher import importer, prompts

MC = Example(id="q1", question="Which is a liquid?", choices=(("A", "ice"), ("B", "water")),
             answer="B", context="Water flows.", solution=("step one", "step two"))
OPEN = Example(id="q2", question="Is the coin still heads up? ünïcode", choices=(), answer="yes")


def record(example, rationale, index, answer="B", correct=True):
  return cache.RationaleRecord(example=example, rationale=rationale, teacher_answer=answer,
                               correct=correct, sample_index=index, teacher="fake",
                               prompt_style="zero_shot_cot", teacher_answer_text=f"({answer})")


def test_record_round_trip_and_format():
  records = [record(MC, "Ice is solid; water is liquid.", 3),
             record(OPEN, "Two flips cancel out.", 0, answer=None, correct=False)]
  for r in records:
    assert cache.parse_record(cache.serialize_record(r)) == r
  # The on-disk format: a tf.train.Example with these features (what older caches hold).
  mc, open_ = (tf.train.Example.FromString(cache.serialize_record(r)).features.feature
               for r in records)
  assert sorted(mc) == sorted(open_) == [
      "answer", "choice_labels", "choice_texts", "context", "correct", "id", "prompt_style",
      "question", "rationale", "sample_index", "solution", "teacher", "teacher_answer",
      "teacher_answer_text"]
  assert mc["rationale"].bytes_list.value == [records[0].rationale.encode()]
  assert mc["choice_labels"].bytes_list.value == [b"A", b"B"]
  assert mc["solution"].bytes_list.value == [b"step one", b"step two"]
  assert mc["sample_index"].int64_list.value == [3] and mc["correct"].int64_list.value == [1]
  assert open_["teacher_answer"].bytes_list.value == []  # unparseable answer: no value
  assert open_["question"].bytes_list.value == [OPEN.question.encode("utf-8")]
  assert open_["choice_labels"].bytes_list.value == [] and open_["correct"].int64_list.value == [0]


def write_cache(cache_dir, config, shards):
  writer = cache.CacheWriter(str(cache_dir), config)
  examples = [MC] * (2 * len(shards))
  done = writer.start_split("train", examples, len(shards))
  for index, records in enumerate(shards):
    if index not in done:
      writer.write_shard("train", index, records, {"examples": 2, "kept": len(records)})
  return writer, writer.finish_split("train")


def test_writer_reader_manifest(tmp_path):
  shards = [[record(MC, f"r{i}-{k}", k) for k in range(i + 1)] for i in range(3)]
  config = {"task": "arc_easy", "teacher.num_samples": 4, "teacher.splits": ("train",)}
  _, totals = write_cache(tmp_path, config, shards)
  assert totals == {"examples": 6, "kept": 6}
  flat = [r for shard in shards for r in shard]
  assert list(cache.read_records(str(tmp_path), "train")) == flat

  manifest = cache.read_manifest(str(tmp_path))
  assert manifest["config"]["task"] == "arc_easy" and manifest["counts"]["train"]["kept"] == 6
  entry = manifest["splits"]["train"]
  assert entry["complete"] and entry["num_shards"] == 3
  for index, shard in enumerate(shards):
    info = entry["shards"][str(index)]
    path = tmp_path / "train" / cache.shard_name(index)
    assert info["records"] == len(shard) and info["sha256"] == cache.sha256_file(str(path))
  assert not list((tmp_path / "train").glob("*.tmp"))

  # Rerunning with the same config finds every shard done and rewrites nothing.
  mtimes = [os.stat(tmp_path / "train" / cache.shard_name(i)).st_mtime_ns for i in range(3)]
  writer = cache.CacheWriter(str(tmp_path), config)
  assert writer.start_split("train", [MC] * 6, 3) == {0, 1, 2}
  assert mtimes == [os.stat(tmp_path / "train" / cache.shard_name(i)).st_mtime_ns for i in range(3)]


def test_config_mismatch_is_refused_naming_keys(tmp_path):
  write_cache(tmp_path, {"task": "arc_easy", "teacher.temperature": 0.7}, [[]])
  with pytest.raises(cache.CacheConfigMismatchError) as info:
    cache.CacheWriter(str(tmp_path), {"task": "arc_easy", "teacher.temperature": 1.0,
                                      "teacher.model": "x"})
  message = str(info.value)
  assert "teacher.temperature: 0.7 -> 1.0" in message and "teacher.model" in message
  assert "task" not in message.split("settings:")[1]
  writer = cache.CacheWriter(str(tmp_path), {"task": "arc_easy", "teacher.temperature": 0.7})
  with pytest.raises(cache.CacheConfigMismatchError, match="data changed"):
    writer.start_split("train", [OPEN, OPEN], 1)


def test_corrupt_or_unlisted_shards_are_redone(tmp_path):
  shards = [[record(MC, "a", 0)], [record(MC, "b", 0)]]
  write_cache(tmp_path, {"task": "t"}, shards)
  with open(tmp_path / "train" / cache.shard_name(1), "ab") as f:
    f.write(b"garbage")
  (tmp_path / "train" / "rationales-00001.tfrecord.tmp").write_bytes(b"partial")
  writer = cache.CacheWriter(str(tmp_path), {"task": "t"})
  assert writer.start_split("train", [MC] * 4, 2) == {0}
  assert not (tmp_path / "train" / "rationales-00001.tfrecord.tmp").exists()
  with pytest.raises(RuntimeError, match=r"lacks shards \[1\]"):
    writer.finish_split("train")
  with pytest.raises(ValueError, match="incomplete"):
    list(cache.read_records(str(tmp_path), "train"))
  with pytest.raises(FileNotFoundError, match="generate.py"):
    cache.read_manifest(str(tmp_path / "nowhere"))


# ---- integrity: deterministic bytes, verified reads ----------------------------------------------


def test_serialization_is_canonical():
  """Features are written in key order (deterministic map serialisation), not hash-table order."""
  for r in (record(MC, "Ice is solid; water is liquid.", 3),
            record(OPEN, "Two flips cancel out.", 0, answer=None, correct=False)):
    serialized = cache.serialize_record(r)
    assert serialized == tf.train.Example.FromString(serialized).SerializeToString(
        deterministic=True)


SERIALIZE_SCRIPT = """
import hashlib, sys
sys.path.insert(0, {repo!r})
from tests.test_cache import MC, record
from sciqa_jax import cache
print(hashlib.sha256(cache.serialize_record(record(MC, "Ice is solid.", 3))).hexdigest())
"""


@pytest.mark.slow
def test_serialization_same_bytes_in_fresh_processes(tmp_path):
  repo = pathlib.Path(__file__).resolve().parents[1]
  script = tmp_path / "serialize.py"
  script.write_text(SERIALIZE_SCRIPT.format(repo=str(repo)))
  digests = set()
  for hash_seed in ("1", "2"):
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=repo, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    digests.add(out.split()[-1])
  here = hashlib.sha256(cache.serialize_record(record(MC, "Ice is solid.", 3))).hexdigest()
  assert digests == {here}


def _damage(path, how):
  data = path.read_bytes()
  if how == "truncated":
    path.write_bytes(data[:len(data) - 7])
  elif how == "overwritten":  # same length, different bytes (a flipped byte inside a record)
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
  else:
    path.unlink()


@pytest.mark.parametrize("how", ["truncated", "overwritten", "missing"])
def test_readers_verify_each_shard(tmp_path, how):
  shards = [[record(MC, f"r{i}-{k}", k) for k in range(3)] for i in range(2)]
  write_cache(tmp_path, {"task": "t"}, shards)
  shard = tmp_path / "train" / cache.shard_name(1)
  _damage(shard, how)
  for read in (lambda: list(cache.read_records(str(tmp_path), "train")),
               lambda: cache.shard_files(str(tmp_path), "train")):
    with pytest.raises(errors.CorruptFileError) as info:
      read()
    message = str(info.value)
    assert str(shard) in message and "rerun generate.py with the same config" in message
    assert "\n" not in message
  # generate.py's writer finds the damaged shard and redoes only it.
  writer = cache.CacheWriter(str(tmp_path), {"task": "t"})
  assert writer.start_split("train", [MC] * 4, 2) == {0}


def test_manifest_record_count_is_checked(tmp_path):
  write_cache(tmp_path, {"task": "t"}, [[record(MC, "a", 0), record(MC, "b", 1)]])
  manifest = json.loads((tmp_path / cache.MANIFEST).read_text())
  manifest["splits"]["train"]["shards"]["0"]["records"] = 3
  (tmp_path / cache.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(errors.CorruptFileError, match=r"holds 2 records but the manifest lists 3"):
    list(cache.read_records(str(tmp_path), "train"))
  assert cache.CacheWriter(str(tmp_path), {"task": "t"}).start_split("train", [MC] * 2, 1) == set()


@pytest.mark.parametrize("text", ['{"splits": {', "[1, 2]", "\xff\xfe"])
def test_damaged_manifest_names_its_path(tmp_path, text):
  write_cache(tmp_path, {"task": "t"}, [[record(MC, "a", 0)]])
  path = tmp_path / cache.MANIFEST
  path.write_bytes(text.encode("latin-1"))
  for open_cache in (lambda: cache.read_manifest(str(tmp_path)),
                     lambda: list(cache.read_records(str(tmp_path), "train")),
                     lambda: cache.CacheWriter(str(tmp_path), {"task": "t"})):
    with pytest.raises(errors.CorruptFileError, match="manifest") as info:
      open_cache()
    assert str(path) in str(info.value) and "generate.py" in str(info.value)


def test_missing_cache_is_a_user_error(tmp_path):
  with pytest.raises(errors.MissingFileError, match="generate.py"):
    list(cache.read_records(str(tmp_path / "nowhere"), "train"))
  write_cache(tmp_path, {"task": "t"}, [[record(MC, "a", 0)]])
  with pytest.raises(errors.DataError, match="no split 'validation'"):
    list(cache.read_records(str(tmp_path), "validation"))


# ---- filtering -----------------------------------------------------------------------------------


def test_filter_counts_and_keep_modes():
  task = get_task("arc_easy")
  outputs = [("Water flows.", "(B)"), ("Ice melts.", "the answer is A"), ("No clue.", "hmm"),
             ("Water  flows.", "(B)"), ("", "(B)"), ("It is liquid.", "water")]
  records, counts = rationales.filter_samples(task, MC, outputs, keep="correct", teacher_name="t",
                                              prompt_style="s")
  assert [(r.rationale, r.sample_index, r.teacher_answer) for r in records] == [
      ("Water flows.", 0, "B"), ("It is liquid.", 5, "B")]
  assert counts == {"examples": 1, "samples": 6, "kept": 2, "correct": 2, "wrong": 1,
                    "unparseable": 2, "duplicates": 1, "examples_with_kept": 1}
  assert counts["kept"] + counts["wrong"] + counts["unparseable"] + counts["duplicates"] == 6
  records, counts = rationales.filter_samples(task, MC, outputs, keep="all", teacher_name="t",
                                              prompt_style="s")
  assert [(r.sample_index, r.correct, r.teacher_answer) for r in records] == [
      (0, True, "B"), (1, False, "A"), (2, False, None), (5, True, "B")]
  assert counts["kept"] == 4 and counts["correct"] == 2


# ---- prompts and the two-step completion flow ----------------------------------------------------


class EchoTeacher:
  """A completion teacher that records its calls; step 1 answers only every other sample."""

  name = "echo"

  def __init__(self):
    self.calls = []

  def complete(self, prompts_, *, num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=128,
               seed=0):
    self.calls.append((list(prompts_), num_samples, temperature, max_new_tokens, seed))
    if prompts_[0].endswith(prompts.ANSWER_TRIGGER):
      return [[" (B) water.\nQ: next"] for _ in prompts_]
    return [[f" Reason {k % 2}." + (" Therefore, the answer is (A)." if k == 0 else "")
             for k in range(num_samples)] for _ in prompts_]


def test_zero_shot_two_step_flow():
  teacher = EchoTeacher()
  t = {"prompt_style": "zero_shot_cot", "num_samples": 3, "temperature": 0.7, "top_p": 1.0,
       "max_new_tokens": 64, "answer_max_new_tokens": 8, "batch_size": 2}

  class Cfg(dict):
    __getattr__ = dict.__getitem__

  outputs = rationales.explain(teacher, [MC, MC, MC], Cfg(t), seed=5)
  assert outputs[0] == [("Reason 0.", "(A)."), ("Reason 1.", "(B) water."), ("Reason 0.", "")]
  step1 = [c for c in teacher.calls if c[1] == 3]
  step2 = [c for c in teacher.calls if c[1] == 1]
  assert [len(c[0]) for c in step1] == [2, 1] and [len(c[0]) for c in step2] == [2, 1]
  assert step1[0][0][0] == f"Q: {prompts.format_question(MC)}\nA: Let's think step by step."
  assert step2[0][0][0].endswith("Let's think step by step. Reason 1.\nTherefore, the answer is")
  assert all(c[2] == 0.0 and c[3] == 8 for c in step2)  # the answer step is greedy and short
  assert len({c[4] for c in teacher.calls}) == len(teacher.calls)  # distinct per-batch seeds
  again = EchoTeacher()
  rationales.explain(again, [MC, MC, MC], Cfg(t), seed=5)
  assert [c[4] for c in again.calls] == [c[4] for c in teacher.calls]


def test_few_shot_and_rationalize_prompts(tmp_path):
  path = tmp_path / "shots.jsonl"
  path.write_text(json.dumps({"question": "Is ice cold?", "rationale": "Ice is frozen water.",
                              "answer": "yes"}) + "\n" + json.dumps({
                                  "question": "Pick the gas.", "choices": {"label": ["A", "B"],
                                                                           "text": ["air", "rock"]},
                                  "rationale": "Air is a gas.", "answer": "A"}) + "\n")
  shots = prompts.load_exemplars(str(path))
  prompt = prompts.rationale_prompt(MC, prompts.FEW_SHOT_COT, shots)
  assert "A: Ice is frozen water. Therefore, the answer is yes.\n\n" in prompt
  assert "Therefore, the answer is (A) air." in prompt and prompt.endswith("(B) water\nA:")
  hint = prompts.rationale_prompt(MC, prompts.RATIONALIZE)
  assert "The correct answer is (B) water." in hint
  assert "correct answer" not in prompts.answer_prompt(MC, "Because.", prompts.RATIONALIZE)
  assert prompts.split_completion(" Water flows.\nQ: another question") == ("Water flows.", None)
  path.write_text('{"question": "q", "rationale": "r"}\n')
  with pytest.raises(ValueError, match=r"shots\.jsonl:1.*answer"):
    prompts.load_exemplars(str(path))


def test_import_teacher(tmp_path):
  path = tmp_path / "rationales.jsonl"
  lines = [{"id": "q1", "rationale": "Water is liquid.", "answer": "(B)"},
           {"id": "q1", "rationale": "Ice is solid, so not A. Therefore, the answer is (B)."},
           {"id": "q2", "rationale": "Two flips.", "answer": True}, {"id": "zz", "rationale": "x"}]
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  teacher = importer.ImportedRationales(str(path))
  out = teacher.explain([MC, OPEN, Example("q3", "?", (), "no")])
  assert [(o.rationale, o.answer_text) for o in out[0]] == [
      ("Water is liquid.", "(B)"), ("Ice is solid, so not A.", "(B).")]
  assert [(o.rationale, o.answer_text) for o in out[1]] == [("Two flips.", "yes")]
  assert out[2] == [] and teacher.unused_ids == 1
  path.write_text('{"id": "q1"}\n')
  with pytest.raises(ValueError, match=r"rationales\.jsonl:1"):
    importer.ImportedRationales(str(path))


def test_import_teacher_user_errors(tmp_path):
  path = tmp_path / "rationales.jsonl"
  with pytest.raises(errors.MissingFileError, match=r"teacher\.model=.*rationales\.jsonl"):
    importer.ImportedRationales(str(path))
  path.write_text('{"id": "q1", "rationale": "ok"}\nnot json\n')
  with pytest.raises(errors.DataError, match=r"rationales\.jsonl:2: invalid JSON"):
    importer.ImportedRationales(str(path))
  path.write_text('{"id": "", "rationale": "no id"}\n')
  with pytest.raises(errors.DataError, match=r"rationales\.jsonl:1: .*\"id\""):
    importer.ImportedRationales(str(path))
  other = tmp_path / "rationales.txt"
  other.write_text("q1 because\n")
  with pytest.raises(errors.ConfigError, match=r"teacher\.model=.*unsupported file type"):
    importer.ImportedRationales(str(other))


ARC_DIGITS = Example(id="d1", question="Which is a liquid?",
                     choices=(("A", "ice"), ("B", "water"), ("C", "rock"), ("D", "2")), answer="B")


@pytest.mark.parametrize("answer, expected", [
    ("2", "B"), ("(2)", "B"), ("2.", "B"), (" 4 ", "D"), ("the answer is 2.", "B"),
    ("(B)", "(B)"), ("water", "water"), ("2 apples", "2 apples"), ("7", "7")])
def test_import_digit_labels_map_to_choices(answer, expected):
  assert importer.choice_answer(answer, ARC_DIGITS) == expected
  assert importer.choice_answer(answer, OPEN) == answer  # no choices: nothing to map
  digit_labelled = Example(id="d2", question="?", choices=(("1", "ice"), ("2", "water")),
                           answer="2")
  assert importer.choice_answer(answer, digit_labelled) == answer


def test_import_teacher_reads_digit_answers(tmp_path):
  path = tmp_path / "rationales.jsonl"
  lines = [{"id": "d1", "rationale": "Water flows.", "answer": "2"},
           {"id": "d1", "rationale": "Water is wet. Therefore, the answer is (2)."},
           {"id": "d1", "rationale": "Rock is hard.", "answer": 3}]
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  (outputs,) = importer.ImportedRationales(str(path)).explain([ARC_DIGITS])
  task = get_task("arc_easy")
  assert [task.parse_answer(o.answer_text, ARC_DIGITS) for o in outputs] == ["B", "B", "C"]
  _, counts = rationales.filter_samples(task, ARC_DIGITS, [(o.rationale, o.answer_text)
                                                           for o in outputs],
                                        keep="correct", teacher_name="t", prompt_style="import")
  assert counts["unparseable"] == 0 and counts["kept"] == 2 and counts["wrong"] == 1
