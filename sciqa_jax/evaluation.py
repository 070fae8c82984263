"""Evaluation of students (and teachers) on a split: pmapped two-stage inference and scoring.

One machinery serves the four objectives, and train.py's periodic validation as well as
evaluate.py:

  two_stage      stage 1: the rationale student generates k rationales per question from
                 `Objective.rationale_input`; stage 2: the answer student scores each candidate
                 answer given `Objective.answer_input(example, rationale)` (multiple choice), or
                 generates an answer that the task's parser reads (open answers).
  fine_tune_cot  the student generates `rationale --> answer`; the answer is parsed (see
                 `parse_cot_output` for the one rule), for every answer type.
  step_by_step   the `predict:` input, scored like stage 2 (no rationale is generated).
  answer_only    the plain input, scored like stage 2.

Multiple choice (answer type "choice") is rank classification: the log-likelihood of every
formatted candidate (`formatting.candidate_answers`), optionally divided by its token count,
highest wins. Every (input, candidate) pair of a batch of questions goes through one fixed-shape
pmapped scoring call, so a question's candidates are scored by the same compiled function however
many there are.

Open answers (every other type: numbers, yes/no, text) are never rank-classified, even when the
examples carry choices: the answer student generates its answer (greedy, or beam search with
`eval.decoding="beam"`; `eval.max_answer_length` tokens at most) and the task's parser
(`Task.parse_answer`) extracts it; correctness is `answers.answers_match`, the task's one
comparison rule ("43.0" equals "43"). Students are trained to write numbers canonically ("43",
`input_pipeline.student_answer`), and the parser reads any spelling the comparison accepts.

Self-consistency (`eval.self_consistency = k > 1`) samples k rationales (temperature from the
config), takes each one's answer (stage 2's for two_stage, the text after `-->` for
fine_tune_cot) and keeps the majority; ties go to the answer whose votes have the larger summed
log-likelihood (`majority_vote`). Votes are counted on extracted answers under the comparison rule,
so "43.0" and "43" are one vote. Objectives without rationales have nothing to sample and are
scored once.

Execution goes through `sciqa_jax.inference.Runner`: evaluate.py pmaps over the local devices
(`inference.Replicated`, the parameters replicated once per call of `evaluate_split`); train.py's
validation runs on the training mesh (`inference.OnMesh`), with the parameters in their training
layout. Questions are processed in batches of `eval.batch_size` rows (rounded up to the device
count) padded to the `decoding.padded_length` ladder; parsing and voting run on the host.

Sampling keys are derived from (seed, batch index) and, when pmapped, the device index, so
sampled rationales depend on the device count; greedy and beam decoding, and all scoring, do not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from sciqa_jax import decoding
from sciqa_jax import inference
from sciqa_jax import objectives as objectives_lib
from sciqa_jax.data import answers as answers_lib
from sciqa_jax.data.example import ANSWER_TYPES, CHOICE, Example
from sciqa_jax.data.formatting import candidate_answers
from sciqa_jax.statistics import EvalResult, majority_vote, result_from_predictions

ParseFn = Callable[[str, Example], "str | None"]


# ---- reading answers out of generations -----------------------------------------------------


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


def same_answer(answer_type: str) -> Callable[[str, str], bool]:
  """When two extracted answers are one vote: the answer type's comparison rule, the rule that
  scores them against the gold answer ("43.0" and "43" are one number)."""
  return lambda a, b: answers_lib.answers_match(a, b, answer_type)


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
  if answer_type not in ANSWER_TYPES:
    raise ValueError(f"answer_type={answer_type!r}; expected one of {ANSWER_TYPES} (pass the "
                     "task's answer_type)")
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


def _check_gold_parses(examples: Sequence[Example], parse: ParseFn, answer_type: str) -> None:
  """Open answers: every gold answer must be an answer the parser reads, or no prediction could
  ever match it (a task evaluated under the wrong answer type scores 0 without this)."""
  bad = [ex.id for ex in examples if parse(ex.answer, ex) is None]
  if bad:
    raise ValueError(f"{len(bad)} gold answers are not {answer_type!r} answers (e.g. examples "
                     f"{bad[:5]}): is {answer_type!r} the task's answer type?")


def evaluate_split(model, params: dict[str, Any], tokenizer, objective, examples: Sequence[Example],
                   eval_config, *, answer_type: str, seed: int = 0, progress: bool = True,
                   placement: inference.Placement | None = None,
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
    placement: where the students run (`inference.Replicated()`, pmapped over the local devices,
      by default; `inference.OnMesh(mesh)` for students sharded on a training mesh).
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
  if answer_type != CHOICE:
    _check_gold_parses(examples, parse, answer_type)
  runner = inference.Runner(model, {s: params[s] for s in objective.students}, tokenizer,
                            placement=placement, batch_size=eval_config.batch_size,
                            max_input_length=eval_config.max_input_length,
                            max_target_length=eval_config.max_answer_length)
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
  for b, start in enumerate(range(0, len(examples), runner.batch_rows)):
    chunk = examples[start:start + runner.batch_rows]
    chunk_rng = jax.random.fold_in(rng, b)
    if objective.name == objectives_lib.FINE_TUNE_COT:
      rows = _fine_tune_cot_rows(runner, objective, chunk, chunk_rng, sampling, eval_config, parse,
                                 None if multiple_choice else same_answer(answer_type))
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
        rows = _open_rows(runner, answer_student, chunk, inputs, chunk_rng, eval_config, parse,
                          same_answer(answer_type))
      for row, rs in zip(rows, rationales):
        row["rationales"] = [r for r in rs if r is not None]
    for ex, row in zip(chunk, rows):
      predictions.append({"id": ex.id, "question": ex.question, **row, "gold": ex.answer,
                          "correct": is_correct(row["prediction"], ex, answer_type)})
    bar.update(len(chunk))
  bar.close()
  return result_from_predictions(predictions, len(examples))


def _rank_rows(runner: inference.Runner, student: str, chunk: Sequence[Example],
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


def answer_decoding(eval_config) -> dict[str, Any]:
  """How an open answer is generated: beam search with `eval.decoding="beam"`, else greedy.

  Never sampled: self-consistency samples the rationales (or Fine-tune-CoT's whole output), and
  a single sampled answer would only add noise to a greedy one.
  """
  if eval_config.decoding == "beam":
    return {"method": "beam", "num_beams": eval_config.num_beams}
  return {"method": "greedy"}


def _open_rows(runner: inference.Runner, student: str, chunk: Sequence[Example],
               inputs: Sequence[Sequence[str]], rng: jax.Array, eval_config,
               parse: ParseFn, same: Callable[[str, str], bool]) -> list[dict[str, Any]]:
  """Answer generation + the task's parser for every (example, sample input) of a chunk."""
  flat = [text for sample_inputs in inputs for text in sample_inputs]
  generated = runner.generate(student, flat, rng, max_new_tokens=eval_config.max_answer_length,
                              **answer_decoding(eval_config))
  rows, offset = [], 0
  for ex, sample_inputs in zip(chunk, inputs):
    outs = [generated[offset + j][0] for j in range(len(sample_inputs))]
    offset += len(sample_inputs)
    rows.append(_vote_generations(outs, [parse(text, ex) for text, _, _ in outs],
                                  eval_config.length_normalize, same))
  return rows


def _fine_tune_cot_rows(runner: inference.Runner, objective, chunk: Sequence[Example], rng: jax.Array,
                        sampling: dict[str, Any], eval_config, parse: ParseFn,
                        same: Callable[[str, str], bool] | None) -> list[dict[str, Any]]:
  """`question -> rationale --> answer` generation (k samples), parsed, majority-voted."""
  generated = runner.generate(
      _stream_student(objective, objectives_lib.COT), [objective.cot_input(ex) for ex in chunk],
      rng, max_new_tokens=eval_config.max_rationale_length + eval_config.max_answer_length,
      **sampling)
  rows = []
  for ex, samples in zip(chunk, generated):
    parsed = [parse_cot_output(text, ex, parse) for text, _, _ in samples]
    row = _vote_generations(samples, [a for _, a in parsed], eval_config.length_normalize, same)
    row["rationales"] = [r for r, _ in parsed]
    rows.append(row)
  return rows


def _vote_generations(outs: Sequence[tuple[str, float, int]], answers: list[str | None],
                      length_normalize: bool,
                      same: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
  """Majority vote over generated answers (one vote per answer under `same`), scored by their
  (optionally mean) log-likelihood."""
  scores = [total / max(count, 1) if length_normalize else total for _, total, count in outs]
  return {"answers": answers, "scores": scores, "generations": [text for text, _, _ in outs],
          "prediction": majority_vote(answers, scores, same)}
