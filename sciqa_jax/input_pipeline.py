"""Rationale cache -> tokenised, padded, sharded, deterministic training batches.

Design:
  * Text layouts come only from `Objective.training_pairs`: every (example, rationale) pair gives
    one row in *every* stream of the objective, so the streams are row-aligned and "zipping" them
    is simply indexing all of them with the same row indices. An example with several kept
    rationales (diverse reasoning) gives several rows; answer_only gives one row per example.
  * The answer a target writes is chosen here, not in the layouts: the gold one or the teacher's
    (`objective.answer_source`), numbers in their canonical spelling (`student_answer`). A
    seeded subsample of the training questions (`data.train_subsample`, `subsample_questions`)
    is drawn here too, after that.
  * Tokenisation runs once, up front, on the host with the fast (Rust) batch tokenizer into numpy.
    Every row is truncated and padded to the config's fixed lengths, so every batch has the same
    shapes and the jitted train step compiles exactly once.
  * The data position is the step: global batch k is a pure function of (num_rows, seed, k)
    (`batch_indices`), so there is no iterator state to checkpoint and a run resumed at step k
    (after SIGKILL or not) sees exactly the batches an uninterrupted run sees. The rows are read
    as an endless stream of epochs; epoch e is a permutation of the rows keyed by (seed, e);
    batch k is stream positions [k * b, (k + 1) * b) with b the global batch size. A batch may
    straddle two (or, with fewer rows than a batch, more) epochs: no row is ever dropped.
  * The permutation is our own, not numpy's `Generator.permutation` (whose stream numpy does not
    promise to keep across versions): epoch e of n rows sorts positions 0..n-1 by the 64-bit key
    m(m(m(m(seed)) ^ e) ^ i), m = splitmix64, all in wrapping uint64 integer arithmetic (seed and
    e taken modulo 2**64). m is a bijection, so the keys are distinct and the order is exact and
    the same on every platform and numpy version.
  * Batches hold row *indices*; the numpy gather that turns them into token arrays is cheap and
    exact. `Batches.get(k)` caches only the permutations of the epochs batch k touches, so
    sequential access costs one sort per epoch.
  * Multi-process: every process tokenises all rows and computes the same global batch k, then
    gathers only its block (process p of P: rows [p * b / P, (p + 1) * b / P) of the batch); the
    trainer assembles the global array from the blocks. A run trains on the same batches whatever
    its process count.

Sequence conventions (T5): inputs and labels end with EOS (truncation keeps the EOS, and a text
holding a rationale loses the rationale's middle: `tokenizer.tokenize`);
`decoder_input_ids` are the labels shifted right with decoder start token 0; padding is 0 and is
masked by `attention_mask` / `decoder_attention_mask`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Sequence

import numpy as np

from sciqa_jax import cache as cache_lib
from sciqa_jax import errors
from sciqa_jax import tokenizer as tokenizer_lib
from sciqa_jax.data import answers as answers_lib
from sciqa_jax.data.example import NUMBER, Example
from sciqa_jax.data.registry import Task, canonical_task_name, get_task, load_examples
from sciqa_jax.objectives import TEACHER, Objective
from sciqa_jax.statistics import majority_vote

log = logging.getLogger(__name__)

DECODER_START_TOKEN_ID = 0

Batch = dict[str, dict[str, np.ndarray]]


# `auto` lengths and suggested lengths cover this share of a stream's rows untruncated.
AUTO_LENGTH_COVERAGE = 0.99
AUTO = "auto"
_UNLIMITED = 1 << 30


def covering_length(lengths: Sequence[int], coverage: float = AUTO_LENGTH_COVERAGE) -> int:
  """The smallest multiple of 8 that holds `coverage` of `lengths` (at least 8)."""
  if not len(lengths):
    return 8
  ordered = np.sort(np.asarray(lengths))
  needed = int(ordered[max(0, int(np.ceil(coverage * len(ordered))) - 1)])
  return max(8, -(-needed // 8) * 8)


@dataclasses.dataclass(frozen=True)
class TruncationStats:
  """How many rows of one stream lost tokens to its lengths, and what length would fit them."""

  rows: int
  max_input_length: int
  max_target_length: int
  truncated_inputs: int
  truncated_targets: int
  max_input_tokens: int  # longest untruncated input, to help pick max_input_length
  max_target_tokens: int
  suggested_input_length: int  # covering_length of the inputs
  suggested_target_length: int
  auto_input: bool = False  # max_input_length was "auto" (then 1% truncation is by design)
  auto_target: bool = False

  @classmethod
  def from_tokenized(cls, inputs: tokenizer_lib.Tokenized, targets: tokenizer_lib.Tokenized, *,
                     auto_input: bool = False, auto_target: bool = False) -> "TruncationStats":
    return cls(len(inputs.lengths), inputs.max_length, targets.max_length, inputs.truncated,
               targets.truncated, inputs.longest, targets.longest,
               covering_length(inputs.lengths), covering_length(targets.lengths),
               auto_input, auto_target)

  def describe(self, stream: str) -> str:
    def limit(length: int, auto: bool) -> str:
      return f"{AUTO} = {length}" if auto else str(length)

    return (f"stream {stream!r}: {self.rows} rows; inputs up to "
            f"{limit(self.max_input_length, self.auto_input)} tokens, {self.truncated_inputs} "
            f"truncated (longest {self.max_input_tokens}); targets up to "
            f"{limit(self.max_target_length, self.auto_target)} tokens, "
            f"{self.truncated_targets} truncated (longest {self.max_target_tokens})")

  def warnings(self, stream: str) -> list[str]:
    """One actionable line per side (input, target) of the stream that lost tokens."""
    out = []
    for side, count, limit, suggested, auto in (
        ("inputs", self.truncated_inputs, self.max_input_length, self.suggested_input_length,
         self.auto_input),
        ("targets", self.truncated_targets, self.max_target_length,
         self.suggested_target_length, self.auto_target)):
      if count and not auto:
        key = "train.max_input_length" if side == "inputs" else "train.max_target_length"
        out.append(
            f"stream {stream!r}: {count} of {self.rows} {side} ({100 * count / self.rows:.1f}%) "
            f"are longer than {key}={limit} and lose tokens (a rationale loses its middle); "
            f"{key}={suggested} would hold {AUTO_LENGTH_COVERAGE:.0%} of them untruncated "
            f"(or set it to {AUTO!r})")
    return out


@dataclasses.dataclass(frozen=True)
class TokenizedRows:
  """All training rows of every stream, tokenised; `arrays[stream][feature]` is [rows, length]."""

  arrays: dict[str, dict[str, np.ndarray]]
  stats: dict[str, TruncationStats]

  @property
  def num_rows(self) -> int:
    return next(iter(next(iter(self.arrays.values())).values())).shape[0]


# ---- rows ----------------------------------------------------------------------------------


def student_answer(example: Example, answer: str, task: Task | None) -> Example:
  """`example` with `answer` as the answer its targets hold, written as students write it.

  Numbers are written canonically, as the task's parser reads them ("43.0", "1,000", "$5" ->
  "43", "1000", "5"): one spelling per value to learn, the one evaluation extracts (any spelling
  the comparison rule accepts would score the same, but ".0" and thousands separators are tokens
  a student would spend capacity on and could get wrong). Other answers are kept as given (a
  choice label, "yes"/"no", a text answer in the dataset's case). Without a task, unchanged.
  """
  if task is not None and task.answer_type == NUMBER:
    canonical = task.parse_answer(answer, example)
    if canonical is not None and answers_lib.answers_match(canonical, answer, NUMBER):
      answer = canonical
  return example if answer == example.answer else dataclasses.replace(example, answer=answer)


def _fields(record) -> tuple[Example, str | None, str | None, bool]:
  """(example, rationale, teacher answer, is a cache record) of a cache record or a bare Example."""
  if isinstance(record, Example):
    return record, None, None, False
  return record.example, record.rationale, getattr(record, "teacher_answer", None), True


def _one_per_question(rows: list, teacher: bool, task: Task | None) -> list:
  """answer_only: each question once, in first-seen order; with the teacher's answers, the
  majority of its records' answers (the teacher's self-consistency answer; ties: the first)."""
  by_id: dict[str, list] = {}
  for row in rows:
    by_id.setdefault(row[0].id, []).append(row)
  out = []
  for group in by_id.values():
    example = group[0][0]
    answer = None
    if teacher:
      same = None if task is None else (
          lambda a, b: answers_lib.answers_match(a, b, task.answer_type))
      answer = majority_vote([r[2] for r in group], [0.0] * len(group), same)
    out.append((example, None, answer, group[0][3]))
  return out


def training_examples(records: Iterable, objective: Objective,
                      task: Task | None = None) -> list[tuple[Example, str | None]]:
  """(example, rationale) pairs for the objective from cache records (or bare Examples).

  Records are used in the cache's order (deterministic). answer_only ignores rationales and keeps
  each example once; the rationale objectives keep every record, so N kept rationales of one
  question give N rows. Each pair's example holds the answer its targets write
  (`objective.answer_source`: the gold one, or the record's teacher answer; `student_answer`
  spells it). A record whose teacher answer did not parse has no answer to train on with
  `answer_source="teacher"` and is left out, with a warning counting them.
  """
  teacher = objective.answer_source == TEACHER
  rows = [_fields(record) for record in records]
  if teacher and any(not from_cache for *_, from_cache in rows):
    raise errors.ConfigError("objective.answer_source='teacher' trains on the teacher's answers "
                             "in the rationale cache: run generate.py and pass --config.cache_dir")
  if not objective.uses_rationales:
    rows = _one_per_question(rows, teacher, task)
  pairs, unanswered = [], 0
  for example, rationale, teacher_answer, _ in rows:
    if objective.uses_rationales and rationale is None:
      raise ValueError(f"objective {objective.name!r} needs rationales but example {example.id!r} "
                       "has none: build the cache with generate.py first")
    answer = teacher_answer if teacher else example.answer
    if answer is None:
      unanswered += 1
      continue
    pairs.append((student_answer(example, answer, task), rationale))
  if unanswered:
    log.warning("objective.answer_source='teacher': %d of %d training rows have no parseable "
                "teacher answer and are left out", unanswered, len(rows))
  if not pairs:
    raise ValueError("no training examples: the cache's train split is empty"
                     + (" of rows with a teacher answer" if rows else ""))
  return pairs


def subsample_questions(pairs: Sequence[tuple[Example, str | None]], num_questions: int,
                        seed: int) -> list[tuple[Example, str | None]]:
  """The pairs of `num_questions` training questions drawn by `seed` (0 = all), in the same order.

  By question: a kept question keeps all its rows (diverse reasoning's several rationales). A
  pure function of (seed, the questions' ids): the questions are ranked by sha256 of
  (seed, id) and the first N kept, so the draw depends on neither the cache's order nor its
  sharding, and a seed's smaller subsamples nest in its larger ones (8 in 32 in 128 shots).
  Asking for more questions than there are is an error, not a silently full run.
  """
  if not num_questions:
    return list(pairs)
  ids = list(dict.fromkeys(example.id for example, _ in pairs))
  if num_questions > len(ids):
    raise errors.ConfigError(
        f"data.train_subsample={num_questions} but the training split has {len(ids)} questions "
        "(with a usable row): set it to at most that, or 0 for all")
  rank = lambda i: hashlib.sha256(f"{seed}\x00{i}".encode("utf-8")).digest()
  kept = set(sorted(ids, key=rank)[:num_questions])
  return [pair for pair in pairs if pair[0].id in kept]


# The cache's settings that must equal the training config's: the task and which data it read.
# (Validation reads the task from the training config, so a cache of another task or data source
# would train on one dataset and select checkpoints on another.)
CACHE_KEYS_MATCHING_TRAINING = ("task", "data.source", "data.path")


def check_cache_matches(config) -> None:
  """Refuses a cache written for another task or data source than `config`'s, naming both."""
  written = cache_lib.read_manifest(config.cache_dir).get("config", {})
  differences = []
  for key in CACHE_KEYS_MATCHING_TRAINING:
    if key not in written:
      continue  # not recorded (a cache written by CacheWriter directly, e.g. in tests)
    node = config
    for part in key.split("."):
      node = node[part]
    same = (canonical_task_name(written[key]) == canonical_task_name(node) if key == "task"
            else written[key] == node)  # a task may be named by an alias (strategyqa)
    if not same:
      differences.append(f"{key}: cache {written[key]!r}, config {node!r}")
  if differences:
    raise errors.RunMismatchError(
        f"the rationale cache {config.cache_dir} was written for other data than this config's "
        f"({'; '.join(differences)}): pass the config that generated it, or another "
        "--config.cache_dir")


def training_pairs(config, objective: Objective) -> list[tuple[Example, str | None]]:
  """(example, rationale) rows of a run: the cache's train split (answer_only without a cache
  reads the task's train split directly), with the answers of `objective.answer_source`, on the
  `data.train_subsample` questions drawn by `config.seed` when that is set."""
  split = config.data.train_split
  if config.cache_dir:
    check_cache_matches(config)
    if not os.path.isdir(os.path.join(config.cache_dir, split)):
      raise errors.MissingFileError(
          f"{config.cache_dir}/{split} not found: the cache has no {split!r} split; run "
          f"generate.py with --config.teacher.splits including {split!r}")
    records = cache_lib.read_records(config.cache_dir, split)
  elif not objective.uses_rationales:
    records = load_examples(config, split).examples
  else:
    raise ValueError(f"config.cache_dir is empty but objective {objective.name!r} trains on "
                     "teacher rationales: run generate.py and pass --config.cache_dir")
  pairs = training_examples(records, objective, get_task(config.task))
  return subsample_questions(pairs, config.data.train_subsample, config.seed)


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
                 max_length: int | str) -> tuple[np.ndarray, np.ndarray, tokenizer_lib.Tokenized]:
  """Token ids [N, L] (`tokenizer.tokenize`'s students' layout, 0-padded), the rows' lengths
  and the tokenisation (untruncated lengths).

  `max_length` is a cap: L is the longest row rounded up to a multiple of 8, at most `max_length`.
  The rows are tokenised once for the whole run, so L is fixed and jit compiles once per stream,
  while short streams (answers of a few tokens) do not pay for the longest stream's padding.
  "auto" caps at the texts' `covering_length`: 99% of them fit untruncated.
  """
  if max_length == AUTO:
    untruncated = tokenizer_lib.tokenize(tokenizer, texts, _UNLIMITED)
    max_length = covering_length(untruncated.lengths)
  tokenized = tokenizer_lib.tokenize(tokenizer, texts, max_length)
  rows = tokenized.rows
  width = min(max_length, -(-max((len(row) for row in rows), default=2) // 8) * 8)
  ids = np.zeros((len(rows), width), np.int32)
  lengths = np.array([len(row) for row in rows], np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)] = row
  return ids, lengths, tokenized


def tokenize_stream(tokenizer, inputs: list[str], targets: list[str], *,
                    max_input_length: int | str, max_target_length: int | str
                    ) -> tuple[dict[str, np.ndarray], TruncationStats]:
  """Fixed-shape int32 features of one stream (see the module docstring for conventions)."""
  input_ids, input_lengths, tokenized_inputs = encode_texts(tokenizer, inputs, max_input_length)
  labels, label_lengths, tokenized_targets = encode_texts(tokenizer, targets, max_target_length)
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
  return features, TruncationStats.from_tokenized(
      tokenized_inputs, tokenized_targets, auto_input=max_input_length == AUTO,
      auto_target=max_target_length == AUTO)


def tokenize_rows(pairs: Sequence[tuple[Example, str | None]], objective: Objective, tokenizer, *,
                  max_input_length: int | str, max_target_length: int | str,
                  streams: Sequence[str] | None = None) -> TokenizedRows:
  """Every training row of the objective's streams (or of `streams`), tokenised and padded."""
  arrays, stats = {}, {}
  for stream, (inputs, targets) in text_pairs(pairs, objective, streams).items():
    arrays[stream], stats[stream] = tokenize_stream(
        tokenizer, inputs, targets, max_input_length=max_input_length,
        max_target_length=max_target_length)
  return TokenizedRows(arrays, stats)


# ---- batching --------------------------------------------------------------------------------


_UINT64 = 1 << 64


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser (a bijection of uint64), elementwise with wrapping arithmetic."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  """The order (positions 0..n-1, int64) in which the n rows are read in `epoch`.

  Sorts the positions i by m(m(m(m(seed)) ^ epoch) ^ i), m = splitmix64: integer-only, so
  identical on every platform and numpy version (see the module docstring).
  """
  if epoch < 0:
    raise ValueError(f"epoch {epoch} is negative")
  key = _splitmix64(_splitmix64(np.array([seed % _UINT64], np.uint64)))
  key = _splitmix64(key ^ np.uint64(epoch % _UINT64))
  return np.argsort(_splitmix64(key ^ np.arange(n, dtype=np.uint64)), kind="stable")


def _stream_indices(num_rows: int, k: int, batch_size: int, permutation) -> np.ndarray:
  """Row indices at positions [k*b, (k+1)*b) of the endless stream of epochs over the rows."""
  if k < 0:
    raise ValueError(f"batch index {k} is negative")
  if batch_size < 1:
    raise ValueError(f"batch size {batch_size} must be positive")
  positions = k * batch_size + np.arange(batch_size, dtype=np.int64)
  epochs, offsets = np.divmod(positions, num_rows)
  out = np.empty((batch_size,), np.int64)
  for epoch in range(int(epochs[0]), int(epochs[-1]) + 1):
    where = epochs == epoch
    out[where] = permutation(epoch)[offsets[where]]
  return out


def batch_indices(num_rows: int, k: int, *, batch_size: int, seed: int) -> np.ndarray:
  """The row indices (int64 [batch_size]) of global batch k: a pure function of its arguments.

  The rows are read as an endless stream of epochs, epoch e in the order
  `epoch_permutation(num_rows, seed, e)`; batch k is stream positions [k * b, (k + 1) * b).
  """
  return _stream_indices(num_rows, k, batch_size,
                         lambda epoch: epoch_permutation(num_rows, seed, epoch))


class Batches:
  """This process's part of the run's training batches, by index: `get(k)` is block
  `process_index` of `process_count` equal blocks of global batch k (`batch_indices`).

  Every process computes the same global batches, so a run trains on the same batches whatever
  its process count, and `sharding.shard_batch` assembles the global array from the blocks in
  process order. `get(k)` returns `{stream: {feature: np.int32 [block rows, length]}}`. There is
  no iterator state: any k may be asked for in any order, and two `Batches` with the same rows
  and settings give identical batches. Only the permutations of the epochs the latest batch
  touched are kept, so stepping k = 0, 1, 2, ... sorts each epoch once.
  """

  def __init__(self, rows: TokenizedRows, *, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    if global_batch_size % process_count:
      raise errors.ConfigError(f"train.batch_size={global_batch_size} is not divisible by the "
                               f"{process_count} processes")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    self.rows = rows
    self.seed = seed
    self.batch_size = global_batch_size
    block = global_batch_size // process_count
    self.block = slice(process_index * block, (process_index + 1) * block)
    self._permutations: dict[int, np.ndarray] = {}

  def indices(self, k: int) -> np.ndarray:
    """The row indices of global batch k (equal to `batch_indices` with these settings)."""
    kept = {}

    def permutation(epoch: int) -> np.ndarray:
      if epoch not in kept:
        kept[epoch] = self._permutations.get(epoch)
        if kept[epoch] is None:
          kept[epoch] = epoch_permutation(self.rows.num_rows, self.seed, epoch)
      return kept[epoch]

    out = _stream_indices(self.rows.num_rows, k, self.batch_size, permutation)
    self._permutations = kept
    return out

  def get(self, k: int) -> Batch:
    indices = self.indices(k)[self.block]
    return {stream: {key: value[indices] for key, value in features.items()}
            for stream, features in self.rows.arrays.items()}


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
  loaded and copied. The directory is written under a temporary name and renamed when complete,
  so a run killed while writing it leaves nothing a rerun would trust. Only the writer process
  (process 0) writes; call it there first and on the other processes after a barrier.
  """
  out_dir = os.path.join(workdir, "tokenizer")
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    try:
      return tokenizer_lib.load_tokenizer(out_dir)
    except OSError as e:
      raise errors.CorruptFileError(
          f"the run's tokenizer {out_dir} cannot be loaded ({e}); it is incomplete or damaged: "
          "delete that directory and rerun (train.py rebuilds it from the same data)") from None
  if not is_writer:
    raise errors.MissingFileError(
        f"{out_dir} is missing: process 0 must prepare the tokenizer first")
  source = model_config.tokenizer or model_config.pretrained
  if not source:
    raise errors.ConfigError(
        "model.tokenizer is empty and there is no model.pretrained to take the tokenizer from: "
        "set model.tokenizer to 'train', a hub id or a directory")
  partial = out_dir + ".partial"
  shutil.rmtree(partial, ignore_errors=True)  # left by a run killed while writing
  if source == "train":
    tokenizer_lib.train_sentencepiece_tokenizer(list(texts), partial,
                                                vocab_size=model_config.tokenizer_vocab_size)
  else:
    tokenizer_lib.load_tokenizer(source).save_pretrained(partial)
  os.replace(partial, out_dir)
  return tokenizer_lib.load_tokenizer(out_dir)
