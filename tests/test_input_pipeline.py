"""input_pipeline: fixed shapes, shift-right and masks, determinism, per-host sharding, resume."""

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
  assert "20 targets truncated" in stats.describe(RATIONALE)
  # The untruncated label round-trips to the target text.
  text = tokenizer.decode(rows.arrays[RATIONALE]["labels"][0], skip_special_tokens=True)
  assert text == pairs[0][1]


def test_streams_zipped_and_subset(rows, pairs, tokenizer):
  # Row i of every stream comes from the same (example, rationale) pair.
  obj = Objective("two_stage")
  answer_inputs = [obj.answer_input(e, r) for e, r in pairs[:4]]
  ids, _, _, _ = ip.encode_texts(tokenizer, answer_inputs, MAX_IN)
  np.testing.assert_array_equal(rows.arrays[ANSWER]["input_ids"][:4], ids)
  only = ip.tokenize_rows(pairs, obj, tokenizer, max_input_length=MAX_IN,
                          max_target_length=MAX_TGT, streams=[ANSWER])
  assert set(only.arrays) == {ANSWER}
  cot = ip.tokenize_rows(pairs, Objective("fine_tune_cot"), tokenizer, max_input_length=MAX_IN,
                         max_target_length=MAX_TGT)
  assert set(cot.arrays) == {COT}


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_deterministic_reshuffled_and_resumable(rows):
  a = ip.BatchIterator(rows, global_batch_size=8, seed=3)
  b = ip.BatchIterator(rows, global_batch_size=8, seed=3)
  c = ip.BatchIterator(rows, global_batch_size=8, seed=4)
  first, second = _take(a, 10), _take(b, 10)
  for x, y in zip(first, second):
    for stream in x:
      for key in x[stream]:
        np.testing.assert_array_equal(x[stream][key], y[stream][key])
  ids = lambda batches: np.concatenate([bt[ANSWER]["input_ids"] for bt in batches])
  assert not np.array_equal(ids(first), ids(_take(c, 10)))
  # Epoch 1 (batches 0-4) and epoch 2 (batches 5-9) are different permutations of the same rows.
  epoch1, epoch2 = ids(first[:5]), ids(first[5:])
  assert not np.array_equal(epoch1, epoch2)
  assert sorted(map(bytes, epoch1)) == sorted(map(bytes, epoch2))

  # Save mid-epoch, continue; a fresh iterator restored from the state yields the same batches.
  state = a.get_state()
  expected = _take(a, 7)
  resumed = ip.BatchIterator(rows, global_batch_size=8, seed=3)
  resumed.set_state(state)
  got = _take(resumed, 7)
  np.testing.assert_array_equal(ids(expected), ids(got))
  np.testing.assert_array_equal(np.concatenate([bt[RATIONALE]["labels"] for bt in expected]),
                                np.concatenate([bt[RATIONALE]["labels"] for bt in got]))


def test_per_host_sharding_is_disjoint_and_complete(rows):
  def row_keys(batches):
    # A row is identified by its question (rationale input) and its rationale (labels).
    return [bytes(np.concatenate([x, y])) for bt in batches
            for x, y in zip(bt[RATIONALE]["input_ids"], bt[RATIONALE]["labels"])]

  all_rows = set(row_keys([rows.arrays]))
  assert len(all_rows) == 40
  per_host = []
  for host in range(2):
    it = ip.BatchIterator(rows, global_batch_size=8, seed=0, process_index=host, process_count=2)
    batches = _take(it, 5)  # one epoch of this host's 20 rows, 4 per batch
    assert batches[0][ANSWER]["input_ids"].shape == (4, rows.arrays[ANSWER]["input_ids"].shape[1])
    keys = row_keys(batches)
    assert len(set(keys)) == 20
    per_host.append(set(keys))
  assert not per_host[0] & per_host[1]
  assert per_host[0] | per_host[1] == all_rows
  with pytest.raises(ValueError, match="not divisible"):
    ip.BatchIterator(rows, global_batch_size=7, seed=0, process_index=0, process_count=2)


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
