"""Rationale cache -> tokenised, padded, sharded, deterministic training batches.

Design:
  * Text layouts come only from `Objective.training_pairs`: every (example, rationale) pair gives
    one row in *every* stream of the objective, so the streams are row-aligned and "zipping" them
    is simply indexing all of them with the same row indices. An example with several kept
    rationales (diverse reasoning) gives several rows; answer_only gives one row per example.
  * Tokenisation runs once, up front, on the host with the fast (Rust) batch tokenizer into numpy.
    Every row is truncated and padded to the config's fixed lengths, so every batch has the same
    shapes and the jitted train step compiles exactly once.
  * tf.data shuffles *row indices*, not rows: the iterator's state (what `tf.train.Checkpoint`
    saves) is then a few kilobytes of int64 indices however long the sequences are, and the numpy
    gather that turns an index batch into token arrays is cheap and exact. The sequence of batches
    is a deterministic function of (rows, seed, process_index, process_count): shuffling uses a
    fixed op seed and reshuffles every epoch in a deterministic order.
  * Multi-host: rows are split disjointly by `jax.process_index()` (row i goes to host
    i % process_count) and each host batches `global_batch // process_count` of its own rows; the
    trainer assembles the global array from the per-host pieces.

Sequence conventions (T5): inputs and labels end with EOS (truncation keeps the EOS);
`decoder_input_ids` are the labels shifted right with decoder start token 0; padding is 0 and is
masked by `attention_mask` / `decoder_attention_mask`.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from sciqa_jax.data.example import Example
from sciqa_jax.objectives import Objective

DECODER_START_TOKEN_ID = 0
FEATURE_KEYS = ("input_ids", "attention_mask", "decoder_input_ids", "labels",
                "decoder_attention_mask")

Batch = dict[str, dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class TruncationStats:
  """How many rows of one stream lost tokens to the fixed lengths."""

  rows: int
  truncated_inputs: int
  truncated_targets: int
  max_input_tokens: int  # longest untruncated input, to help pick max_input_length
  max_target_tokens: int

  def describe(self, stream: str) -> str:
    return (f"stream {stream!r}: {self.rows} rows, {self.truncated_inputs} inputs truncated "
            f"(longest {self.max_input_tokens} tokens), {self.truncated_targets} targets truncated "
            f"(longest {self.max_target_tokens} tokens)")


@dataclasses.dataclass(frozen=True)
class TokenizedRows:
  """All training rows of every stream, tokenised; `arrays[stream][feature]` is [rows, length]."""

  arrays: dict[str, dict[str, np.ndarray]]
  stats: dict[str, TruncationStats]

  @property
  def num_rows(self) -> int:
    return next(iter(next(iter(self.arrays.values())).values())).shape[0]


# ---- rows ----------------------------------------------------------------------------------


def training_examples(records: Iterable, objective: Objective) -> list[tuple[Example, str | None]]:
  """(example, rationale) pairs for the objective from cache records (or bare Examples).

  Records are used in the cache's order (deterministic). answer_only ignores rationales and keeps
  each example once; the rationale objectives keep every record, so N kept rationales of one
  question give N rows.
  """
  pairs = []
  seen = set()
  for record in records:
    if isinstance(record, Example):
      example, rationale = record, None
    else:
      example, rationale = record.example, record.rationale
    if not objective.uses_rationales:
      if example.id in seen:
        continue
      seen.add(example.id)
      rationale = None
    elif rationale is None:
      raise ValueError(f"objective {objective.name!r} needs rationales but example {example.id!r} "
                       "has none: build the cache with generate.py first")
    pairs.append((example, rationale))
  if not pairs:
    raise ValueError("no training examples: the cache's train split is empty")
  return pairs


def text_pairs(pairs: Sequence[tuple[Example, str | None]], objective: Objective,
               streams: Sequence[str] | None = None) -> dict[str, tuple[list[str], list[str]]]:
  """{stream: (inputs, targets)} with one entry per pair, in the order of `pairs`.

  `streams` keeps a subset of the objective's streams (two_stage trained stage by stage).
  """
  names = [s.name for s in objective.streams] if streams is None else list(streams)
  out: dict[str, tuple[list[str], list[str]]] = {name: ([], []) for name in names}
  for example, rationale in pairs:
    texts = objective.training_pairs(example, rationale)
    for name in names:
      out[name][0].append(texts[name][0])
      out[name][1].append(texts[name][1])
  return out


# ---- tokenisation ----------------------------------------------------------------------------


def encode_texts(tokenizer, texts: Sequence[str],
                 max_length: int) -> tuple[np.ndarray, np.ndarray, int, int]:
  """Token ids [N, L] (EOS-terminated, truncated keeping EOS, 0-padded) and lengths.

  `max_length` is a cap: L is the longest row rounded up to a multiple of 8, at most `max_length`.
  The rows are tokenised once for the whole run, so L is fixed and jit compiles once per stream,
  while short streams (answers of a few tokens) do not pay for the longest stream's padding.
  """
  if max_length < 2:
    raise ValueError(f"sequence length {max_length} is too short (need room for a token and EOS)")
  eos = tokenizer.eos_token_id
  if eos is None:
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; T5 students need one")
  # One batch call through the fast tokenizer; no truncation here so we can count what is lost.
  encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
  longest_with_eos = max((len(row) + 1 for row in encoded), default=2)
  max_length = min(max_length, -(-longest_with_eos // 8) * 8)
  ids = np.zeros((len(texts), max_length), np.int32)
  lengths = np.zeros((len(texts),), np.int32)
  truncated = 0
  longest = 0
  for i, row in enumerate(encoded):
    longest = max(longest, len(row) + 1)
    if len(row) + 1 > max_length:
      truncated += 1
      row = row[:max_length - 1]
    n = len(row)
    ids[i, :n] = row
    ids[i, n] = eos
    lengths[i] = n + 1
  return ids, lengths, truncated, longest


def tokenize_stream(tokenizer, inputs: list[str], targets: list[str], *, max_input_length: int,
                    max_target_length: int) -> tuple[dict[str, np.ndarray], TruncationStats]:
  """Fixed-shape int32 features of one stream (see the module docstring for conventions)."""
  input_ids, input_lengths, trunc_in, longest_in = encode_texts(
      tokenizer, inputs, max_input_length)
  labels, label_lengths, trunc_tgt, longest_tgt = encode_texts(
      tokenizer, targets, max_target_length)
  positions_in = np.arange(input_ids.shape[1])[None, :]
  positions_tgt = np.arange(labels.shape[1])[None, :]
  decoder_input_ids = np.full_like(labels, DECODER_START_TOKEN_ID)
  decoder_input_ids[:, 1:] = labels[:, :-1]
  features = {
      "input_ids": input_ids,
      "attention_mask": (positions_in < input_lengths[:, None]).astype(np.int32),
      "decoder_input_ids": decoder_input_ids,
      "labels": labels,
      "decoder_attention_mask": (positions_tgt < label_lengths[:, None]).astype(np.int32),
  }
  stats = TruncationStats(len(inputs), trunc_in, trunc_tgt, longest_in, longest_tgt)
  return features, stats


def tokenize_rows(pairs: Sequence[tuple[Example, str | None]], objective: Objective, tokenizer, *,
                  max_input_length: int, max_target_length: int,
                  streams: Sequence[str] | None = None) -> TokenizedRows:
  """Every training row of the objective's streams (or of `streams`), tokenised and padded."""
  arrays, stats = {}, {}
  for stream, (inputs, targets) in text_pairs(pairs, objective, streams).items():
    arrays[stream], stats[stream] = tokenize_stream(
        tokenizer, inputs, targets, max_input_length=max_input_length,
        max_target_length=max_target_length)
  return TokenizedRows(arrays, stats)


# ---- batching --------------------------------------------------------------------------------


def host_rows(num_rows: int, process_index: int, process_count: int) -> np.ndarray:
  """The global row indices this host trains on (disjoint across hosts, covering all rows)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  rows = np.arange(num_rows, dtype=np.int64)[process_index::process_count]
  if rows.size == 0:
    raise ValueError(f"{num_rows} training rows cannot feed {process_count} hosts")
  return rows


def per_host_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"train.batch_size={global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  return global_batch_size // process_count


class BatchIterator:
  """Endless deterministic batches of one host; its position can be saved and restored.

  `next()` returns `{stream: {feature: np.int32 [per_host_batch, length]}}`.
  `get_state()` / `set_state()` exchange the tf.data iterator position as a base64 string (fits in
  a JSON checkpoint item); restoring it makes the following batches identical to the ones an
  uninterrupted run would have seen.
  """

  def __init__(self, rows: TokenizedRows, *, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1, prefetch: int = 2):
    self.rows = rows
    self.batch_size = per_host_batch_size(global_batch_size, process_count)
    local = host_rows(rows.num_rows, process_index, process_count)
    dataset = tf.data.Dataset.from_tensor_slices(local)
    # The buffer holds every local index, so each epoch is a full uniform permutation.
    dataset = dataset.shuffle(len(local), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat().batch(self.batch_size, drop_remainder=True).prefetch(prefetch)
    options = tf.data.Options()
    options.deterministic = True
    self._dataset = dataset.with_options(options)
    self._iterator = iter(self._dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    indices = next(self._iterator).numpy()
    return {stream: {key: value[indices] for key, value in features.items()}
            for stream, features in self.rows.arrays.items()}

  def get_state(self) -> str:
    with tempfile.TemporaryDirectory() as tmp:
      self._checkpoint.write(os.path.join(tmp, "iterator"))
      blob = {}
      for name in sorted(os.listdir(tmp)):
        with open(os.path.join(tmp, name), "rb") as f:
          blob[name] = f.read()
    # Length-prefixed concatenation of (name, bytes): no extra dependency, exact round trip.
    parts = []
    for name, data in blob.items():
      encoded = name.encode()
      parts += [len(encoded).to_bytes(4, "little"), encoded, len(data).to_bytes(8, "little"), data]
    return base64.b64encode(b"".join(parts)).decode("ascii")

  def set_state(self, state: str) -> None:
    raw = base64.b64decode(state.encode("ascii"))
    with tempfile.TemporaryDirectory() as tmp:
      pos = 0
      while pos < len(raw):
        n = int.from_bytes(raw[pos:pos + 4], "little")
        name = raw[pos + 4:pos + 4 + n].decode()
        pos += 4 + n
        m = int.from_bytes(raw[pos:pos + 8], "little")
        with open(os.path.join(tmp, name), "wb") as f:
          f.write(raw[pos + 8:pos + 8 + m])
        pos += 8 + m
      self._checkpoint.read(os.path.join(tmp, "iterator")).assert_consumed()


# ---- tokenizer set-up ------------------------------------------------------------------------


def tokenizer_training_texts(pairs: Sequence[tuple[Example, str | None]],
                             objective: Objective) -> list[str]:
  """Every input and target text of the training rows, deduplicated in first-seen order."""
  texts: dict[str, None] = {}
  for inputs, targets in text_pairs(pairs, objective).values():
    texts.update(dict.fromkeys(inputs))
    texts.update(dict.fromkeys(targets))
  return list(texts)


def prepare_tokenizer(model_config, workdir: str, texts: Sequence[str], *, is_writer: bool = True):
  """The student tokenizer, saved under `<workdir>/tokenizer/` and reused from there if present.

  `model.tokenizer == "train"` trains a SentencePiece tokenizer deterministically on `texts`;
  otherwise the hub id or directory in `model.tokenizer` (or, if empty, `model.pretrained`) is
  loaded and copied. Only the writer process (process 0) writes; call it there first and on the
  other processes after a barrier.
  """
  from sciqa_jax import tokenizer as tokenizer_lib

  out_dir = os.path.join(workdir, "tokenizer")
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    return tokenizer_lib.load_tokenizer(out_dir)
  if not is_writer:
    raise FileNotFoundError(f"{out_dir} is missing: process 0 must prepare the tokenizer first")
  source = model_config.tokenizer or model_config.pretrained
  if not source:
    raise ValueError("config.model.tokenizer is empty and there is no model.pretrained to take the "
                     "tokenizer from: set model.tokenizer to 'train', a hub id or a directory")
  if source == "train":
    return tokenizer_lib.train_sentencepiece_tokenizer(
        list(texts), out_dir, vocab_size=model_config.tokenizer_vocab_size)
  tokenizer = tokenizer_lib.load_tokenizer(source)
  tokenizer.save_pretrained(out_dir)
  return tokenizer
