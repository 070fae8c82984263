"""input_pipeline: fixed shapes, shift-right and masks; batches as a pure function of the step."""

import numpy as np
import pytest

from sciqa_jax import input_pipeline as ip
from sciqa_jax.data.example import Example
from sciqa_jax.objectives import ANSWER, COT, RATIONALE, Objective
from sciqa_jax.tokenizer import train_sentencepiece_tokenizer

MAX_IN, MAX_TGT = 96, 48


def _examples(n):
  return [Example(f"q{i}", f"Which object number {i} is heavier than the {i % 7} others?",
                  (("A", "a rock"), ("B", "a feather")), "A") for i in range(n)]


@pytest.fixture(scope="module")
def pairs():
  # Two rationales per question (diverse reasoning); one is long enough to be truncated.
  out = []
  for e in _examples(20):
    out.append((e, f"A rock weighs more than a feather, so object {e.id} is heavier."))
    out.append((e, "Rocks are dense. " * 12))
  return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, pairs):
  texts = ip.tokenizer_training_texts(pairs, Objective("fine_tune_cot"))
  return train_sentencepiece_tokenizer(texts, str(tmp_path_factory.mktemp("tok")), vocab_size=200)


@pytest.fixture(scope="module")
def rows(pairs, tokenizer):
  return ip.tokenize_rows(pairs, Objective("two_stage"), tokenizer, max_input_length=MAX_IN,
                          max_target_length=MAX_TGT)


def test_rows_per_rationale_and_answer_only_dedupes(pairs):
  class Record:
    def __init__(self, example, rationale):
      self.example, self.rationale = example, rationale

  records = [Record(e, r) for e, r in pairs]
  assert len(ip.training_examples(records, Objective("fine_tune_cot"))) == 40
  answer_only = ip.training_examples(records, Objective("answer_only"))
  assert len(answer_only) == 20 and all(r is None for _, r in answer_only)
  with pytest.raises(ValueError, match="q0"):
    ip.training_examples([Record(pairs[0][0], None)], Objective("two_stage"))


def test_fixed_shapes_shift_right_and_masks(rows, tokenizer, pairs):
  assert set(rows.arrays) == {RATIONALE, ANSWER}
  for stream, f in rows.arrays.items():
    # One length per stream and side for the whole run: the longest row rounded up to a
    # multiple of 8, capped by the configured maximum.
    length_in, length_tgt = f["input_ids"].shape[1], f["labels"].shape[1]
    assert length_in <= MAX_IN and (length_in % 8 == 0 or length_in == MAX_IN)
    assert length_tgt <= MAX_TGT and (length_tgt % 8 == 0 or length_tgt == MAX_TGT)
    assert f["input_ids"].shape == f["attention_mask"].shape == (40, length_in)
    for key in ("decoder_input_ids", "labels", "decoder_attention_mask"):
      assert f[key].shape == (40, length_tgt) and f[key].dtype == np.int32
    # Shift right with decoder start 0.
    np.testing.assert_array_equal(f["decoder_input_ids"][:, 0], 0)
    np.testing.assert_array_equal(f["decoder_input_ids"][:, 1:], f["labels"][:, :-1])
    for ids, mask in ((f["input_ids"], f["attention_mask"]),
                      (f["labels"], f["decoder_attention_mask"])):
      lengths = mask.sum(1)
      # Every sequence ends with EOS, padding is 0 and masked, the mask is a prefix.
      assert (ids[np.arange(len(ids)), lengths - 1] == tokenizer.eos_token_id).all()
      assert (ids[mask == 0] == 0).all()
      assert (np.diff(mask, axis=1) <= 0).all()
  # The long rationales were truncated (keeping EOS) and counted; the short ones were not.
  stats = rows.stats[RATIONALE]
  assert stats.truncated_targets == 20 and stats.max_target_tokens > MAX_TGT
  assert "targets up to 48 tokens, 20 truncated (longest 49)" in stats.describe(RATIONALE)
  # The untruncated label round-trips to the target text.
  text = tokenizer.decode(rows.arrays[RATIONALE]["labels"][0], skip_special_tokens=True)
  assert text == pairs[0][1]


def test_streams_zipped_and_subset(rows, pairs, tokenizer):
  # Row i of every stream comes from the same (example, rationale) pair.
  obj = Objective("two_stage")
  answer_inputs = [obj.answer_input(e, r) for e, r in pairs[:4]]
  ids, _, _ = ip.encode_texts(tokenizer, answer_inputs, MAX_IN)
  np.testing.assert_array_equal(rows.arrays[ANSWER]["input_ids"][:4], ids)
  only = ip.tokenize_rows(pairs, obj, tokenizer, max_input_length=MAX_IN,
                          max_target_length=MAX_TGT, streams=[ANSWER])
  assert set(only.arrays) == {ANSWER}
  cot = ip.tokenize_rows(pairs, Objective("fine_tune_cot"), tokenizer, max_input_length=MAX_IN,
                         max_target_length=MAX_TGT)
  assert set(cot.arrays) == {COT}


# ---- batches: the data position is the step ---------------------------------------------------

_MASK = (1 << 64) - 1


def _splitmix64_reference(x):
  """splitmix64 in Python integers (independent of numpy's uint64 arithmetic)."""
  x = (x + 0x9E3779B97F4A7C15) & _MASK
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
  return x ^ (x >> 31)


def _reference_permutation(n, seed, epoch):
  key = _splitmix64_reference(_splitmix64_reference(seed & _MASK))
  key = _splitmix64_reference(key ^ (epoch & _MASK))
  return sorted(range(n), key=lambda i: _splitmix64_reference(key ^ i))


def _assert_batches_equal(x, y):
  assert set(x) == set(y)
  for stream in x:
    assert set(x[stream]) == set(y[stream])
    for key in x[stream]:
      np.testing.assert_array_equal(x[stream][key], y[stream][key])


def _indices(k, num_rows=40, b=8, seed=3):
  return ip.batch_indices(num_rows, k, batch_size=b, seed=seed)


def test_permutation_is_the_documented_integer_hash():
  # The order is fixed by integer arithmetic alone (same on every platform / numpy version):
  # checked against a pure-Python splitmix64, including negative and 64-bit seeds.
  for n, seed, epoch in ((1, 0, 0), (10, 0, 0), (37, 3, 5), (50, -1, 2), (64, 2**63 + 7, 1 << 40)):
    np.testing.assert_array_equal(ip.epoch_permutation(n, seed, epoch),
                                  _reference_permutation(n, seed, epoch))
  # Pinned: changing the order breaks resuming runs started with an earlier version.
  np.testing.assert_array_equal(_indices(0, num_rows=10, b=10, seed=0),
                                _reference_permutation(10, 0, 0))
  assert ip.epoch_permutation(10, 0, 0).tolist() == [0, 1, 9, 4, 2, 3, 6, 8, 7, 5]
  with pytest.raises(ValueError, match="negative"):
    ip.epoch_permutation(10, 0, -1)


def test_batch_k_is_a_pure_function_of_k(rows):
  # Batch k asked of fresh objects, in any order, equals batch k of a sequential pass, and both
  # are the rows at `batch_indices`: a resumed run at step k sees what an uninterrupted one sees.
  sequential = ip.Batches(rows, global_batch_size=8, seed=3)
  expected = [sequential.get(k) for k in range(23)]
  shuffled = ip.Batches(rows, global_batch_size=8, seed=3)
  for k in (22, 7, 0, 13, 7, 5, 6, 1):
    _assert_batches_equal(shuffled.get(k), expected[k])
    _assert_batches_equal(ip.Batches(rows, global_batch_size=8, seed=3).get(k), expected[k])
    indices = _indices(k)
    np.testing.assert_array_equal(shuffled.indices(k), indices)
    for stream, features in expected[k].items():
      for key, value in features.items():
        assert value.dtype == np.int32 and value.shape == (8, rows.arrays[stream][key].shape[1])
        np.testing.assert_array_equal(value, rows.arrays[stream][key][indices])
  # A long-lived object never drifts from the pure function, forwards or backwards.
  for k in list(range(60)) + list(range(59, -1, -7)):
    np.testing.assert_array_equal(sequential.indices(k), _indices(k))
  # Far-away steps need no replay of the earlier ones.
  far = 10**9 + 3
  np.testing.assert_array_equal(ip.Batches(rows, global_batch_size=8, seed=3).indices(far),
                                _indices(far))
  with pytest.raises(ValueError, match="negative"):
    sequential.get(-1)


def test_epochs_are_permutations_and_reshuffled():
  # 40 rows, batches of 6: batches straddle epochs; every 40 consecutive stream positions from
  # an epoch start are each row exactly once, and each epoch has its own order.
  stream = np.concatenate([_indices(k, b=6) for k in range(20)])  # 120 positions = 3 epochs
  epochs = stream.reshape(3, 40)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(40))
  assert len({tuple(e) for e in epochs}) == 3
  # The same stream whatever the batch size: positions, not batches, are shuffled.
  np.testing.assert_array_equal(np.concatenate([_indices(k, b=8) for k in range(15)]), stream)
  # Another seed, another order (of the same rows); the same seed, the same order.
  other = np.concatenate([_indices(k, b=8, seed=4) for k in range(5)])
  assert not np.array_equal(other, stream[:40])
  np.testing.assert_array_equal(np.sort(other), np.arange(40))
  np.testing.assert_array_equal(np.concatenate([_indices(k, b=8) for k in range(5)]), stream[:40])


def test_fewer_rows_than_a_batch():
  # 3 rows, batches of 8: one batch spans parts of 3-4 epochs and still drops no row.
  stream = np.concatenate([_indices(k, num_rows=3, b=8) for k in range(3)])  # 24 = 8 epochs
  for epoch in stream.reshape(8, 3):
    np.testing.assert_array_equal(np.sort(epoch), np.arange(3))
  np.testing.assert_array_equal(_indices(1, num_rows=3, b=8), stream[8:16])
  # A single row: every position is that row.
  np.testing.assert_array_equal(_indices(5, num_rows=1, b=4), [0, 0, 0, 0])
  tiny = ip.TokenizedRows({ANSWER: {"input_ids": np.arange(6, dtype=np.int32).reshape(3, 2)}}, {})
  batch = ip.Batches(tiny, global_batch_size=8, seed=3).get(1)
  np.testing.assert_array_equal(batch[ANSWER]["input_ids"],
                                tiny.arrays[ANSWER]["input_ids"][stream[8:16]])


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_processes_read_blocks_of_the_same_global_batches(rows, process_count):
  # Whatever the process count, the run trains on the same batches: process p's part of batch k
  # is block p of global batch k, and the blocks in process order are the global batch.
  whole = ip.Batches(rows, global_batch_size=8, seed=0)
  parts = [ip.Batches(rows, global_batch_size=8, seed=0, process_index=p,
                      process_count=process_count) for p in range(process_count)]
  for k in (0, 1, 4, 9):
    blocks = [part.get(k) for part in parts]
    for stream, features in whole.get(k).items():
      for key, value in features.items():
        assert blocks[0][stream][key].shape[0] == 8 // process_count
        np.testing.assert_array_equal(
            np.concatenate([block[stream][key] for block in blocks]), value)


def test_a_batch_the_processes_cannot_split_evenly_is_refused(rows):
  from sciqa_jax import errors
  with pytest.raises(errors.ConfigError, match="train.batch_size=7 is not divisible by the 2"):
    ip.Batches(rows, global_batch_size=7, seed=0, process_index=0, process_count=2)
  with pytest.raises(ValueError, match="outside"):
    ip.Batches(rows, global_batch_size=8, seed=0, process_index=2, process_count=2)


def test_sequential_access_sorts_each_epoch_once(rows, monkeypatch):
  calls = []
  permutation = ip.epoch_permutation

  def counted(n, seed, epoch):
    calls.append(epoch)
    return permutation(n, seed, epoch)

  monkeypatch.setattr(ip, "epoch_permutation", counted)
  batches = ip.Batches(rows, global_batch_size=6, seed=3)  # 40 rows: batches straddle epochs
  for k in range(20):  # 3 epochs
    batches.get(k)
    assert len(batches._permutations) <= 2  # pylint: disable=protected-access
  assert calls == [0, 1, 2]
  batches.get(0)  # going back recomputes (nothing but the current epochs is kept)
  assert calls == [0, 1, 2, 0]


def test_prepare_tokenizer_trains_once_and_reuses(tmp_path, pairs):
  from sciqa_jax.config import base_config
  model = base_config().model
  model.tokenizer_vocab_size = 150
  texts = ip.tokenizer_training_texts(pairs, Objective("two_stage"))
  tok = ip.prepare_tokenizer(model, str(tmp_path), texts)
  assert (tmp_path / "tokenizer").is_dir()
  again = ip.prepare_tokenizer(model, str(tmp_path), ["unrelated text only"])
  assert again.get_vocab() == tok.get_vocab()
  with pytest.raises(FileNotFoundError, match="process 0"):
    ip.prepare_tokenizer(model, str(tmp_path / "other"), texts, is_writer=False)


_KILLED_WHILE_WRITING = """
import json, os, sys, time
import transformers
from sciqa_jax import input_pipeline as ip
from sciqa_jax.config import base_config

# Pause right after spiece.model is written, where a SIGKILL used to leave tokenizer/ unusable.
original = transformers.T5Tokenizer.from_pretrained
def paused(path, *args, **kwargs):
  open(sys.argv[2], "w").close()
  time.sleep(600)
  return original(path, *args, **kwargs)
transformers.T5Tokenizer.from_pretrained = paused
model = base_config().model
model.tokenizer_vocab_size = 150
ip.prepare_tokenizer(model, sys.argv[1], json.load(open(sys.argv[3])))
"""


@pytest.mark.slow
def test_sigkill_while_writing_the_tokenizer_leaves_a_workdir_that_resumes(tmp_path, pairs):
  import json
  import os
  import signal
  import subprocess
  import sys
  import time

  from sciqa_jax.config import base_config
  texts = ip.tokenizer_training_texts(pairs, Objective("two_stage"))
  (tmp_path / "texts.json").write_text(json.dumps(texts))
  workdir, ready = tmp_path / "run", tmp_path / "ready"
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.Popen(
      [sys.executable, "-c", _KILLED_WHILE_WRITING, str(workdir), str(ready),
       str(tmp_path / "texts.json")], env=dict(os.environ, PYTHONPATH=repo))
  deadline = time.time() + 120
  while not ready.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert ready.exists(), "the writer never reached the pause"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  # Killed mid-write: whatever is on disk is not where a rerun loads the tokenizer from.
  assert not (workdir / "tokenizer").exists()
  model = base_config().model
  model.tokenizer_vocab_size = 150
  resumed = ip.prepare_tokenizer(model, str(workdir), texts)
  reference = ip.prepare_tokenizer(model, str(tmp_path / "uninterrupted"), texts)
  assert resumed.get_vocab() == reference.get_vocab()
  assert sorted(os.listdir(workdir)) == ["tokenizer"]  # the partial directory was replaced


def test_a_damaged_tokenizer_directory_is_named_with_what_to_do(tmp_path):
  from sciqa_jax import errors
  from sciqa_jax.config import base_config
  (tmp_path / "tokenizer").mkdir()
  (tmp_path / "tokenizer" / "spiece.model").write_bytes(b"not a sentencepiece model")
  with pytest.raises(errors.CorruptFileError, match=r"tokenizer.*delete that directory"):
    ip.prepare_tokenizer(base_config().model, str(tmp_path), ["text"])


# ---- truncation keeps the conclusion ---------------------------------------------------------

LONG_RATIONALE = ("Rocks are dense. " * 30) + "so the rock is heavier (A)."


def _decode(tokenizer, row):
  return tokenizer.decode(row, skip_special_tokens=True)


@pytest.mark.parametrize("objective, stream, side", [
    ("two_stage", ANSWER, "input_ids"),  # stage 2 reads question + rationale
    ("two_stage", RATIONALE, "labels"),  # stage 1 writes the rationale
    ("fine_tune_cot", COT, "labels"),  # `rationale --> answer`
])
def test_a_long_rationale_loses_its_middle_not_its_conclusion(tokenizer, objective, stream,
                                                              side):
  example = _examples(1)[0]
  pairs = [(example, LONG_RATIONALE)]
  rows = ip.tokenize_rows(pairs, Objective(objective), tokenizer, max_input_length=64,
                          max_target_length=40)
  stats = rows.stats[stream]
  assert (stats.truncated_inputs if side == "input_ids" else stats.truncated_targets) == 1
  text = _decode(tokenizer, rows.arrays[stream][side][0])
  assert text.startswith("Question:" if side == "input_ids" else "Rocks are dense.")
  assert "so the rock is heavier (A)." in text  # the conclusion, past the limit, survives
  if stream == COT:
    assert text.endswith("--> a rock (A)")  # and so does the answer after it
  assert text.count("Rocks are dense.") < 30  # what went is the middle
  # The question of a stage-2 input is whole.
  if side == "input_ids":
    assert "(A) a rock (B) a feather" in text


def test_texts_without_a_rationale_are_cut_at_the_end(tokenizer):
  example = Example("q", "Which is heavier? " * 40, (("A", "a rock"), ("B", "a feather")), "A")
  rows = ip.tokenize_rows([(example, "short")], Objective("answer_only"), tokenizer,
                          max_input_length=24, max_target_length=16)
  text = _decode(tokenizer, rows.arrays[ANSWER]["input_ids"][0])
  assert text.startswith("Question: Which is heavier?") and "a feather" not in text
  assert rows.arrays[ANSWER]["input_ids"][0][23] == tokenizer.eos_token_id


def test_truncation_warns_with_the_share_and_a_length_that_fits(tokenizer, pairs):
  rows = ip.tokenize_rows(pairs, Objective("fine_tune_cot"), tokenizer, max_input_length=MAX_IN,
                          max_target_length=16)
  stats = rows.stats[COT]
  assert stats.truncated_targets == 40 and stats.truncated_inputs == 0
  (warning,) = stats.warnings(COT)
  assert "40 of 40 targets (100.0%)" in warning and "train.max_target_length=16" in warning
  suggested = stats.suggested_target_length
  assert suggested % 8 == 0 and suggested >= stats.max_target_tokens * 0.99
  assert f"train.max_target_length={suggested}" in warning
  # At the suggested length nothing is cut, and nothing is warned about.
  again = ip.tokenize_rows(pairs, Objective("fine_tune_cot"), tokenizer,
                           max_input_length=MAX_IN, max_target_length=suggested)
  assert again.stats[COT].truncated_targets == 0 and again.stats[COT].warnings(COT) == []


def test_auto_lengths_hold_99_percent_of_each_stream(tokenizer, pairs):
  rows = ip.tokenize_rows(pairs, Objective("two_stage"), tokenizer, max_input_length="auto",
                          max_target_length="auto")
  for stream in (RATIONALE, ANSWER):
    stats = rows.stats[stream]
    assert stats.auto_input and stats.auto_target and stats.warnings(stream) == []
    assert stats.max_input_length == ip.covering_length(
        [int(n) for n in (rows.arrays[stream]["attention_mask"].sum(1))]) or \
        stats.truncated_inputs <= 0.01 * stats.rows
    assert stats.truncated_inputs <= 0.01 * stats.rows
    assert stats.truncated_targets <= 0.01 * stats.rows
    assert "auto = " in stats.describe(stream)
  # Per stream: stage-2 inputs (question + rationale) get a longer cap than stage-1 inputs.
  assert rows.stats[ANSWER].max_input_length > rows.stats[RATIONALE].max_input_length


def test_covering_length():
  assert ip.covering_length([]) == 8
  assert ip.covering_length([3] * 100) == 8
  assert ip.covering_length([10] * 99 + [500]) == 16  # one outlier in 100 is not covered
  assert ip.covering_length([10] * 98 + [500] * 2) == 504
