"""Evaluation of students (and teachers) on a split: pmapped two-stage inference and scoring.

One machinery serves the four objectives, and train.py's periodic validation as well as
evaluate.py:

  two_stage      stage 1: the rationale student generates k rationales per question from
                 `Objective.rationale_input`; stage 2: the answer student scores each candidate
                 answer given `Objective.answer_input(example, rationale)` (multiple choice), or
                 generates an answer that the task's parser reads (open answers).
  fine_tune_cot  the student generates `rationale --> answer`; the answer is parsed (see
                 `parse_cot_output` for the one rule).
  step_by_step   the `predict:` input, scored like stage 2 (no rationale is generated).
  answer_only    the plain input, scored like stage 2.

Multiple choice is rank classification: the log-likelihood of every formatted candidate
(`formatting.candidate_answers`), optionally divided by its token count, highest wins. Every
(input, candidate) pair of a batch of questions goes through one fixed-shape pmapped scoring call,
so a question's candidates are scored by the same compiled function however many there are.

Self-consistency (`eval.self_consistency = k > 1`) samples k rationales (temperature from the
config), takes each one's stage-2 answer and keeps the majority; ties go to the answer whose votes
have the larger summed log-likelihood (`majority_vote`). Objectives without rationales have nothing
to sample and are scored once.

Execution. Everything that runs on the accelerator is `jax.pmap`ped over the local devices: the
parameters are replicated once per call of `evaluate_split` (not per batch); questions are
processed in global batches of `per_device_batch * num_devices` rows, and the last, ragged batch is
padded to the full size with copies of its first row (real inputs, so generation stops when it
would anyway and no all-masked row exists), so it reuses the compiled function; padding rows are
dropped on the host and never counted. Token lengths are padded per batch to the next bucket of
`decoding.padded_length` (8, 12, 16, 24, 32, 48, ...: powers of two and 1.5x powers of two),
capped by `eval.max_input_length` / `eval.max_answer_length`: a handful of compilations at most, a
bucket less than a third longer than a batch's longest row (above 8 tokens), and short questions
do not pay for the cap's length.
Tokenisation, detokenisation, parsing and voting run on the host in numpy / Python.

Sampling keys are derived from (seed, batch index, device index), so sampled rationales depend on
the device count; greedy and beam decoding, and all scoring, do not.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from sciqa_jax import decoding
from sciqa_jax import objectives as objectives_lib
from sciqa_jax.data import answers as answers_lib
from sciqa_jax.data.example import CHOICE, Example
from sciqa_jax.data.formatting import candidate_answers

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054
# Decode-cache tensors with one row per sequence (cache index and positions are shared).
_PER_ROW_CACHE = ("cached_key", "cached_value", "cross_key", "cross_value")

ParseFn = Callable[[str, Example], "str | None"]


# ---- statistics and voting (pure Python, unit-tested directly) ------------------------------


def wilson_interval(num_correct: int, num_examples: int, z: float = Z_95) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion (95% by default).

  Unlike the normal approximation it stays inside [0, 1] and is sensible at 0% / 100% accuracy
  and for the small splits these tasks have.
  """
  if num_examples <= 0:
    raise ValueError(f"a confidence interval needs at least one example (got {num_examples})")
  if not 0 <= num_correct <= num_examples:
    raise ValueError(f"num_correct={num_correct} must lie in [0, {num_examples}]")
  n = num_examples
  p = num_correct / n
  z2 = z * z
  denom = 1.0 + z2 / n
  centre = (p + z2 / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
  return max(0.0, centre - half), min(1.0, centre + half)


def majority_vote(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
  """The most frequent answer; ties go to the larger summed score (log-likelihood) of its votes.

  Unparseable answers (None) do not vote; if none parsed, the result is None (counted wrong).
  On a tie both in votes and summed score, the answer voted for first wins (deterministic).
  """
  if len(answers) != len(scores):
    raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
  votes: collections.Counter[str] = collections.Counter()
  totals: dict[str, float] = collections.defaultdict(float)
  for answer, score in zip(answers, scores):
    if answer is None:
      continue
    votes[answer] += 1
    totals[answer] += float(score)
  if not votes:
    return None
  # max() keeps the first maximal key in insertion order, i.e. the first answer voted for.
  return max(votes, key=lambda a: (votes[a], totals[a]))


def last_answer(text: str, example: Example, parse_answer: ParseFn) -> str | None:
  """The last answer-like token of `text`: the parse of the shortest word-suffix that parses.

  The answer parsers read the FIRST label / yes-no word of a text (after an "answer is" phrase);
  a chain of thought with no such phrase ends on its conclusion, so the last one is wanted.
  """
  for match in reversed(list(re.finditer(r"\S+", text))):
    answer = parse_answer(text[match.start():], example)
    if answer is not None:
      return answer
  return None


def parse_cot_output(text: str, example: Example, parse_answer: ParseFn) -> tuple[str, str | None]:
  """Splits a Fine-tune-CoT generation `rationale --> answer` into (rationale, parsed answer).

  The one rule, for every answer type including multiple choice (parsed, not rank-classified):
  the answer parser reads the text after the LAST `-->`; if there is no separator or the parser
  finds nothing there, the answer is the last answer-like token of the whole generation
  (`last_answer`).
  """
  separator = objectives_lib.COT_SEPARATOR.strip()
  rationale = text
  if separator in text:
    rationale, tail = text.rsplit(separator, 1)
    answer = parse_answer(tail, example)
    if answer is not None:
      return rationale.strip(), answer
  return rationale.strip(), last_answer(text, example, parse_answer)


def default_parser(answer_type: str) -> ParseFn:
  """The answer parser of an answer type, from `sciqa_jax.data.answers`."""
  return lambda text, example: answers_lib.parse_answer(text, example, answer_type)


def is_correct(prediction: str | None, example: Example, answer_type: str) -> bool:
  """Whether a parsed prediction matches the gold answer under the answer type's normalisation."""
  return answers_lib.answers_match(prediction, example.answer, answer_type)


# ---- results --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Accuracy on a split with its 95% Wilson interval and one prediction row per example.

  Prediction rows: id, question, rationales (per sample; empty without a rationale stage),
  answers (per-sample parsed answers), scores (per sample: {label: score} for multiple choice,
  the generation's log-likelihood otherwise), generations (open answers: the raw stage-2 /
  Fine-tune-CoT text per sample), prediction, gold, correct.
  """

  accuracy: float
  ci_low: float
  ci_high: float
  num_examples: int
  predictions: list[dict[str, Any]]

  @property
  def num_correct(self) -> int:
    return sum(bool(row["correct"]) for row in self.predictions)

  def metrics(self) -> dict[str, float | int]:
    """The JSON-serialisable summary (metrics.json, results tables, training logs)."""
    return {"accuracy": self.accuracy, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "num_examples": self.num_examples, "num_correct": self.num_correct}


def result_from_predictions(predictions: list[dict[str, Any]], expected: int) -> EvalResult:
  """Accuracy + interval from prediction rows, asserting every example was scored exactly once."""
  ids = [row["id"] for row in predictions]
  if len(predictions) != expected or len(set(ids)) != expected:
    raise AssertionError(f"scored {len(predictions)} predictions ({len(set(ids))} distinct ids) for "
                         f"{expected} examples: every example must be counted exactly once")
  num_correct = sum(bool(row["correct"]) for row in predictions)
  low, high = wilson_interval(num_correct, expected)
  return EvalResult(accuracy=num_correct / expected, ci_low=low, ci_high=high,
                    num_examples=expected, predictions=predictions)


# ---- host-side tokenisation -----------------------------------------------------------------


def _encode(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
  """Token ids ending with EOS, truncated to max_length keeping the EOS (the training layout)."""
  eos = tokenizer.eos_token_id
  if eos is None:
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; T5 students need one")
  rows = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
  return [list(row[:max_length - 1]) + [eos] for row in rows]


def _pad_rows(rows: Sequence[Sequence[int]], num_rows: int, cap: int, *,
              fill_with_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """[num_rows, bucket] ids and 0/1 mask.

  Rows past len(rows) (the padding of a ragged batch) repeat row 0 by default: real inputs, so
  generation on them stops when row 0 does. With fill_with_first=False they, like empty rows, stay
  all-zero (candidate slots that must score nothing).
  """
  length = decoding.padded_length(max((len(row) for row in rows), default=1), cap)
  ids = np.zeros((num_rows, length), np.int32)
  mask = np.zeros((num_rows, length), np.int32)
  for i in range(num_rows):
    row = rows[i] if i < len(rows) else (rows[0] if fill_with_first else ())
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask


# ---- candidate scoring (pure, jittable) -----------------------------------------------------


def candidate_log_likelihoods(model, params, input_ids: jax.Array, attention_mask: jax.Array,
                              labels: jax.Array, label_mask: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
  """Summed log-probability and token count of C candidate targets per input.

  Args:
    model: the T5 module.
    params: its params.
    input_ids, attention_mask: [R, S] inputs.
    labels, label_mask: [R, C, T] candidate targets (EOS-terminated, 0-padded); a candidate slot
      with an all-zero mask (an example with fewer choices) scores 0 with count 0.

  Returns:
    ([R, C] fp32 summed log-probs over the masked tokens, [R, C] int32 token counts).

  Each input is encoded ONCE, and its cross-attention keys and values are projected once, and
  shared by its C candidates: rank classification costs one encoder pass and one cross-attention
  projection per question instead of one per (question, choice) (the projections over the whole
  input were a quarter of the scoring work for four choices). The decoder then runs over all T
  candidate positions at once on that cache (`T5.decode(decode=True)` with T new tokens: causal
  self-attention, the same function as teacher forcing on the labels shifted right behind decoder
  start token 0, as in training; padding after a candidate's EOS is causally invisible to it).
  """
  from sciqa_jax.models import T5  # pylint: disable=g-import-not-at-top

  r, c, t = labels.shape
  variables = {"params": params}
  encoded = model.apply(variables, input_ids, attention_mask, method=T5.encode)
  _, state = model.apply(variables, encoded, attention_mask, t, method=T5.init_cache,
                         mutable=["cache"])
  # Row i*C + j = (input i, candidate j): the per-row cache tensors are copied C times.
  cache = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.repeat(x, c, axis=0) if path[-1].key in _PER_ROW_CACHE else x,
      state["cache"])
  flat_labels = labels.reshape(r * c, t)
  flat_mask = label_mask.reshape(r * c, t)
  decoder_input_ids = jnp.pad(flat_labels, ((0, 0), (1, 0)))[:, :-1]
  # The encoder states themselves are not read again (the cache holds their projections).
  logits, _ = model.apply({"params": params, "cache": cache}, decoder_input_ids,
                          jnp.repeat(encoded, c, axis=0), jnp.repeat(attention_mask, c, axis=0),
                          decode=True, method=T5.decode, mutable=["cache"])
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, flat_labels[..., None], axis=-1)[..., 0]
  token_log_probs = picked - jax.nn.logsumexp(logits, axis=-1)
  totals = jnp.where(flat_mask > 0, token_log_probs, 0.0).sum(-1).reshape(r, c)
  counts = flat_mask.sum(-1).astype(jnp.int32).reshape(r, c)
  return totals, counts


# ---- the pmapped runner ---------------------------------------------------------------------


def _replicate(tree, devices: Sequence[jax.Device]):
  """One copy of every leaf per device, laid out as pmap expects (leading device axis)."""
  n = len(devices)
  mesh = jax.sharding.Mesh(np.asarray(devices), ("devices",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices"))

  def put(x):
    x = np.asarray(x)
    # A broadcast view: each device receives its slice without n host copies being materialised.
    return jax.device_put(np.broadcast_to(x[None], (n,) + x.shape), sharding)

  return jax.tree.map(put, tree)


# The pmapped functions are cached by (model, devices, options): train.py's periodic validation
# calls evaluate_split again and again, and a fresh jax.pmap object would recompile every time.
@functools.lru_cache(maxsize=32)
def _pmapped_generate(model, devices: tuple[jax.Device, ...], options: tuple[tuple[str, Any], ...]):
  return jax.pmap(decoding.make_generate_fn(model, **dict(options)), devices=devices)


@functools.lru_cache(maxsize=8)
def _pmapped_score(model, devices: tuple[jax.Device, ...]):
  return jax.pmap(functools.partial(candidate_log_likelihoods, model), devices=devices)


class _Runner:
  """Pmapped generation and sequence scoring with replicated params and fixed batch shapes."""

  def __init__(self, model, params: dict[str, Any], tokenizer, devices: Sequence[jax.Device],
               batch_size: int, max_input_length: int, max_answer_length: int):
    if batch_size < 1:
      raise ValueError(f"eval.batch_size={batch_size} must be >= 1")
    self.model = model
    self.tokenizer = tokenizer
    self.devices = list(devices)
    self.num_devices = len(self.devices)
    self.per_device = -(-batch_size // self.num_devices)
    self.global_batch = self.per_device * self.num_devices
    self.max_input_length = max_input_length
    self.max_answer_length = max_answer_length
    self.params = {name: _replicate(p, self.devices) for name, p in params.items()}

  def _shard(self, x: np.ndarray) -> np.ndarray:
    return x.reshape((self.num_devices, -1) + x.shape[1:])

  def _unshard(self, x) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape((-1,) + x.shape[2:])

  def generate(self, student: str, texts: Sequence[str], rng: jax.Array, *, max_new_tokens: int,
               method: str, num_samples: int = 1, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, num_beams: int = 4) -> list[list[tuple[str, float, int]]]:
    """Per text, num_samples (decoded text, summed token log-prob, token count)."""
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "method": method,
                               "num_samples": num_samples}
    if method == "sample":
      options.update(temperature=temperature, top_k=top_k, top_p=top_p)
    elif method == "beam":
      options.update(num_beams=num_beams)
    fn = _pmapped_generate(self.model, tuple(self.devices), tuple(sorted(options.items())))
    encoded = _encode(self.tokenizer, texts, self.max_input_length)
    results: list[list[tuple[str, float, int]]] = []
    for b, start in enumerate(range(0, len(encoded), self.global_batch)):
      rows = encoded[start:start + self.global_batch]
      ids, mask = _pad_rows(rows, self.global_batch, self.max_input_length)
      rngs = jax.random.split(jax.random.fold_in(rng, b), self.num_devices)
      out = fn(self.params[student], self._shard(ids), self._shard(mask), rngs)
      tokens = self._unshard(out.tokens)[:len(rows)]  # [n, N, L]
      log_probs = self._unshard(out.log_probs)[:len(rows)]
      lengths = self._unshard(out.lengths)[:len(rows)]
      valid = np.arange(tokens.shape[-1])[None, None, :] < lengths[..., None]
      totals = np.where(valid, log_probs, 0.0).sum(-1)
      flat = tokens.reshape(-1, tokens.shape[-1])
      decoded = self.tokenizer.batch_decode(flat, skip_special_tokens=True)
      n = tokens.shape[1]
      for i in range(len(rows)):
        results.append([(decoded[i * n + j].strip(), float(totals[i, j]), int(lengths[i, j]))
                        for j in range(n)])
    return results

  def score(self, student: str, inputs: Sequence[str], candidates: Sequence[Sequence[str]],
            max_choices: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per input, the summed log-likelihood and token count of each of its candidates.

    Calls have a fixed shape: [global batch] inputs x [max_choices] candidate slots.
    """
    fn = _pmapped_score(self.model, tuple(self.devices))
    enc_inputs = _encode(self.tokenizer, inputs, self.max_input_length)
    sums, counts = [], []
    for start in range(0, len(inputs), self.global_batch):
      rows = enc_inputs[start:start + self.global_batch]
      groups = candidates[start:start + self.global_batch]
      ids, mask = _pad_rows(rows, self.global_batch, self.max_input_length)
      # Candidate slots, row-major (input, slot); missing slots and padding inputs stay empty.
      encoded = iter(_encode(self.tokenizer, [c for group in groups for c in group],
                             self.max_answer_length))
      slots: list[list[int]] = [[] for _ in range(self.global_batch * max_choices)]
      for i, group in enumerate(groups):
        for j in range(len(group)):
          slots[i * max_choices + j] = next(encoded)
      labels, label_mask = _pad_rows(slots, len(slots), self.max_answer_length,
                                     fill_with_first=False)
      total, count = fn(self.params[student], self._shard(ids), self._shard(mask),
                        self._shard(labels.reshape(self.global_batch, max_choices, -1)),
                        self._shard(label_mask.reshape(self.global_batch, max_choices, -1)))
      total, count = self._unshard(total), self._unshard(count)
      for i, group in enumerate(groups):
        sums.append(total[i, :len(group)])
        counts.append(count[i, :len(group)])
    return sums, counts


# ---- evaluate_split -------------------------------------------------------------------------


def _stream_student(objective: objectives_lib.Objective, stream: str) -> str:
  for s in objective.streams:
    if s.name == stream:
      return s.student
  raise ValueError(f"objective {objective.name!r} has no {stream!r} stream")


def _check_inputs(objective, params, examples, answer_type, eval_config) -> None:
  missing = [s for s in objective.students if s not in params]
  if missing:
    raise ValueError(f"objective {objective.name!r} needs params for students {objective.students}; "
                     f"missing {missing} (got {sorted(params)})")
  if not examples:
    raise ValueError("no examples to evaluate: the split is empty (check data.source / data.path "
                     "and the split name)")
  if answer_type == CHOICE:
    bad = [ex.id for ex in examples if not ex.choices]
    if bad:
      raise ValueError(f"multiple-choice evaluation but examples {bad[:5]} have no choices")
  if eval_config.decoding not in decoding.METHODS:
    raise ValueError(f"eval.decoding={eval_config.decoding!r}; expected one of {decoding.METHODS}")
  if eval_config.self_consistency < 1:
    raise ValueError(f"eval.self_consistency={eval_config.self_consistency} must be >= 1")
  if eval_config.self_consistency > 1 and eval_config.temperature <= 0:
    raise ValueError(f"eval.self_consistency={eval_config.self_consistency} samples rationales: set "
                     f"eval.temperature > 0 (got {eval_config.temperature})")


def evaluate_split(model, params: dict[str, Any], tokenizer, objective, examples: Sequence[Example],
                   eval_config, *, answer_type: str, seed: int = 0, progress: bool = True,
                   devices: Sequence[jax.Device] | None = None,
                   parse_answer: ParseFn | None = None) -> EvalResult:
  """Evaluates the students of `objective` on `examples`.

  Args:
    model: the T5 module shared by the students.
    params: {student name: params} (the keys of `objective.students`).
    tokenizer: the students' tokenizer (Hugging Face, pad 0, with an EOS token).
    objective: an `Objective` or the `objective` config section.
    examples: the split; `eval_config.max_examples > 0` keeps only the first that many.
    eval_config: the `eval` config section.
    answer_type: the task's answer type (`sciqa_jax.data.example.ANSWER_TYPES`).
    seed: sampling seed (self-consistency / `eval.decoding == "sample"`).
    progress: show a tqdm bar (examples/s).
    devices: devices to pmap over; all local devices by default.
    parse_answer: `(text, example) -> answer | None` for open answers and Fine-tune-CoT; defaults
      to the answer type's parser in `sciqa_jax.data.answers` (pass `task.parse_answer`).

  Returns:
    EvalResult with one prediction row per example, in input order.
  """
  if not isinstance(objective, objectives_lib.Objective):
    objective = objectives_lib.Objective.from_config(objective)
  examples = list(examples)
  if eval_config.max_examples:
    examples = examples[:eval_config.max_examples]
  _check_inputs(objective, params, examples, answer_type, eval_config)
  parse = parse_answer or default_parser(answer_type)
  runner = _Runner(model, {s: params[s] for s in objective.students}, tokenizer,
                   devices or jax.local_devices(), eval_config.batch_size,
                   eval_config.max_input_length, eval_config.max_answer_length)
  multiple_choice = answer_type == CHOICE
  # Fixed candidate slots per input for the whole split: one compiled scoring shape.
  max_choices = max(len(ex.choices) for ex in examples) if multiple_choice else 1
  has_rationales = objective.name in (objectives_lib.TWO_STAGE, objectives_lib.FINE_TUNE_COT)
  k = eval_config.self_consistency if has_rationales else 1
  sampling = {"method": "sample" if k > 1 else eval_config.decoding, "num_samples": k,
              "temperature": eval_config.temperature, "top_k": eval_config.top_k,
              "top_p": eval_config.top_p, "num_beams": eval_config.num_beams}
  rng = jax.random.PRNGKey(seed)

  predictions: list[dict[str, Any]] = []
  bar = tqdm(total=len(examples), unit="ex", disable=not progress,
             desc=f"eval {objective.name}", dynamic_ncols=True)
  for b, start in enumerate(range(0, len(examples), runner.global_batch)):
    chunk = examples[start:start + runner.global_batch]
    chunk_rng = jax.random.fold_in(rng, b)
    if objective.name == objectives_lib.FINE_TUNE_COT:
      rows = _fine_tune_cot_rows(runner, objective, chunk, chunk_rng, sampling, eval_config, parse)
    else:
      rationales: list[list[str | None]] = [[None] for _ in chunk]
      if objective.name == objectives_lib.TWO_STAGE:
        generated = runner.generate(
            _stream_student(objective, objectives_lib.RATIONALE),
            [objective.rationale_input(ex) for ex in chunk], chunk_rng,
            max_new_tokens=eval_config.max_rationale_length, **sampling)
        rationales = [[text for text, _, _ in samples] for samples in generated]
      answer_student = _stream_student(objective, objectives_lib.ANSWER)
      inputs = [[objective.answer_input(ex, r) for r in rs] for ex, rs in zip(chunk, rationales)]
      if multiple_choice:
        rows = _rank_rows(runner, answer_student, chunk, inputs, max_choices,
                          eval_config.length_normalize)
      else:
        rows = _open_rows(runner, answer_student, chunk, inputs, chunk_rng, eval_config, parse)
      for row, rs in zip(rows, rationales):
        row["rationales"] = [r for r in rs if r is not None]
    for ex, row in zip(chunk, rows):
      predictions.append({"id": ex.id, "question": ex.question, **row, "gold": ex.answer,
                          "correct": is_correct(row["prediction"], ex, answer_type)})
    bar.update(len(chunk))
  bar.close()
  return result_from_predictions(predictions, len(examples))


def _rank_rows(runner: _Runner, student: str, chunk: Sequence[Example],
               inputs: Sequence[Sequence[str]], max_choices: int,
               length_normalize: bool) -> list[dict[str, Any]]:
  """Rank classification of every candidate for every (example, sample input) of a chunk."""
  flat_inputs, flat_candidates = [], []
  for ex, sample_inputs in zip(chunk, inputs):
    candidates = candidate_answers(ex)
    flat_inputs.extend(sample_inputs)
    flat_candidates.extend([candidates] * len(sample_inputs))
  sums, counts = runner.score(student, flat_inputs, flat_candidates, max_choices)
  rows, offset = [], 0
  for ex, sample_inputs in zip(chunk, inputs):
    labels = ex.labels
    answers, answer_scores, per_sample = [], [], []
    for j in range(len(sample_inputs)):
      total, count = sums[offset + j], counts[offset + j]
      s = total / np.maximum(count, 1) if length_normalize else total
      best = int(np.argmax(s))  # first maximum on exact ties: the earlier label
      answers.append(labels[best])
      answer_scores.append(float(s[best]))
      per_sample.append({label: float(v) for label, v in zip(labels, s)})
    offset += len(sample_inputs)
    rows.append({"answers": answers, "scores": per_sample,
                 "prediction": majority_vote(answers, answer_scores)})
  return rows


def _open_rows(runner: _Runner, student: str, chunk: Sequence[Example],
               inputs: Sequence[Sequence[str]], rng: jax.Array, eval_config,
               parse: ParseFn) -> list[dict[str, Any]]:
  """Greedy answer generation + the task's parser for every (example, sample input) of a chunk."""
  flat = [text for sample_inputs in inputs for text in sample_inputs]
  generated = runner.generate(student, flat, rng, max_new_tokens=eval_config.max_answer_length,
                              method="greedy")
  rows, offset = [], 0
  for ex, sample_inputs in zip(chunk, inputs):
    outs = [generated[offset + j][0] for j in range(len(sample_inputs))]
    offset += len(sample_inputs)
    rows.append(_vote_generations(outs, [parse(text, ex) for text, _, _ in outs],
                                  eval_config.length_normalize))
  return rows


def _fine_tune_cot_rows(runner: _Runner, objective, chunk: Sequence[Example], rng: jax.Array,
                        sampling: dict[str, Any], eval_config, parse: ParseFn
                        ) -> list[dict[str, Any]]:
  """`question -> rationale --> answer` generation (k samples), parsed, majority-voted."""
  generated = runner.generate(
      _stream_student(objective, objectives_lib.COT), [objective.cot_input(ex) for ex in chunk],
      rng, max_new_tokens=eval_config.max_rationale_length + eval_config.max_answer_length,
      **sampling)
  rows = []
  for ex, samples in zip(chunk, generated):
    parsed = [parse_cot_output(text, ex, parse) for text, _, _ in samples]
    row = _vote_generations(samples, [a for _, a in parsed], eval_config.length_normalize)
    row["rationales"] = [r for r, _ in parsed]
    rows.append(row)
  return rows


def _vote_generations(outs: Sequence[tuple[str, float, int]], answers: list[str | None],
                      length_normalize: bool) -> dict[str, Any]:
  """Majority vote over generated answers, scored by their (optionally mean) log-likelihood."""
  scores = [total / max(count, 1) if length_normalize else total for _, total, count in outs]
  return {"answers": answers, "scores": scores, "generations": [text for text, _, _ in outs],
          "prediction": majority_vote(answers, scores)}


# ---- the teacher as a baseline ----------------------------------------------------------------


def _zero_shot_completions(teacher, examples: Sequence[Example], teacher_config, seed: int
                           ) -> list[list[tuple[str, str]]]:
  """Zero-shot without reasoning: `Q: {question}\\nA: Therefore, the answer is` -> answer text.

  Built from the Zero-shot-CoT answer trigger of `teacher/prompts.py`, so the two teacher
  baselines differ only in the missing "Let's think step by step." rationale.
  """
  from sciqa_jax import rationales  # pylint: disable=g-import-not-at-top
  from sciqa_jax.data.formatting import format_question  # pylint: disable=g-import-not-at-top
  from sciqa_jax.teacher import prompts  # pylint: disable=g-import-not-at-top

  t = teacher_config
  completions = teacher.complete(
      [f"Q: {format_question(ex)}\nA: {prompts.ANSWER_TRIGGER}" for ex in examples],
      num_samples=t.num_samples, temperature=t.temperature, top_p=t.top_p,
      max_new_tokens=t.answer_max_new_tokens, seed=rationales.derive_seed(seed, "zero_shot"))
  return [[("", prompts.clean_answer(c)) for c in per_example] for per_example in completions]


def evaluate_teacher(teacher, examples: Sequence[Example], task, teacher_config, *, seed: int = 0,
                     progress: bool = True, chain_of_thought: bool = True,
                     max_examples: int = 0) -> EvalResult:
  """Accuracy of the teacher itself, by the same interval and prediction rows as the students.

  Args:
    teacher: a CompletionTeacher or ExampleTeacher (`sciqa_jax.teacher.make_teacher`).
    examples: the split.
    task: its `Task` (answer parser and matching).
    teacher_config: the `teacher` config section: prompt style, samples, temperature, lengths.
    seed: sampling seed.
    progress: show a tqdm bar (examples/s).
    chain_of_thought: completion teachers only: the configured prompt style's two-step prompts
      (zero-shot-CoT by default; exactly what generate.py asks), or, if False, plain zero-shot
      answering. Example teachers (template, imported) are always judged by their concluded
      answers.
    max_examples: keep only the first that many examples (0 = all).

  With `teacher.num_samples > 1` the parsed answers are majority-voted (a repeated rationale
  votes with its first occurrence's answer); samples carry no likelihood, so a tie goes to the
  answer voted for first.
  """
  from sciqa_jax import rationales  # pylint: disable=g-import-not-at-top
  from sciqa_jax.teacher import prompts  # pylint: disable=g-import-not-at-top

  examples = list(examples)
  if max_examples:
    examples = examples[:max_examples]
  if not examples:
    raise ValueError("no examples to evaluate: the split is empty (check data.source / data.path "
                     "and the split name)")
  exemplars = ()
  if teacher_config.prompt_style == prompts.FEW_SHOT_COT and not rationales.is_example_teacher(
      teacher):
    exemplars = prompts.load_exemplars(teacher_config.few_shot_path)
  predictions = []
  bar = tqdm(total=len(examples), unit="ex", disable=not progress, desc=f"eval {teacher.name}",
             dynamic_ncols=True)
  chunk_size = max(1, teacher_config.batch_size)
  for b, start in enumerate(range(0, len(examples), chunk_size)):
    chunk = examples[start:start + chunk_size]
    chunk_seed = rationales.derive_seed(seed, "evaluate", b)
    if chain_of_thought or rationales.is_example_teacher(teacher):
      outputs = rationales.explain(teacher, chunk, teacher_config, seed=chunk_seed,
                                   exemplars=exemplars)
    else:
      outputs = _zero_shot_completions(teacher, chunk, teacher_config, chunk_seed)
    for ex, samples in zip(chunk, outputs):
      # explain() leaves repeated rationales unanswered: they vote like their first occurrence.
      first_answer: dict[str, str] = {}
      answer_texts = []
      for rationale, answer_text in samples:
        key = " ".join(rationale.split())
        if rationale and key in first_answer and not answer_text:
          answer_text = first_answer[key]
        first_answer.setdefault(key, answer_text)
        answer_texts.append(answer_text)
      parsed = [task.parse_answer(text, ex) if text else None for text in answer_texts]
      prediction = majority_vote(parsed, [0.0] * len(parsed))
      predictions.append({"id": ex.id, "question": ex.question,
                          "rationales": [r for r, _ in samples if r], "answer_texts": answer_texts,
                          "answers": parsed, "prediction": prediction, "gold": ex.answer,
                          "correct": task.is_correct(prediction, ex)})
    bar.update(len(chunk))
  bar.close()
  return result_from_predictions(predictions, len(examples))
