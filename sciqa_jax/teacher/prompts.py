"""Prompt styles for completion teachers, and turning completions back into rationale + answer.

Three styles (`teacher.prompt_style`):

  zero_shot_cot  Fine-tune-CoT's two-step Zero-shot-CoT (Kojima et al. 2022; Ho et al. 2023).
                 Step 1 `Q: {question}\\nA: Let's think step by step.` -> the rationale; step 2
                 appends `{rationale}\\nTherefore, the answer is` and reads the answer.
  few_shot_cot   Wei et al. 2022: exemplars (question, rationale, answer), each written as
                 `Q: ...\\nA: {rationale} Therefore, the answer is {answer}.`, then `Q: {question}\\nA:`.
                 The teacher usually writes rationale and answer in one go; when its completion
                 has no answer sentence, step 2 asks for it as in zero_shot_cot.
  rationalize    STaR-style rationalization (Zelikman et al. 2022): step 1 is told the gold answer
                 and asked to explain it; step 2 is zero_shot_cot's answer prompt WITHOUT the hint,
                 so the correctness filter still checks that the rationale leads to the answer.

`{question}` is always `format_question(example)`: the text layout students are trained on.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

from sciqa_jax import errors
from sciqa_jax.data import loaders
from sciqa_jax.data.example import Example
from sciqa_jax.data.formatting import format_choice, format_question

ZERO_SHOT_COT = "zero_shot_cot"
FEW_SHOT_COT = "few_shot_cot"
RATIONALIZE = "rationalize"
PROMPT_STYLES = (ZERO_SHOT_COT, FEW_SHOT_COT, RATIONALIZE)

STEP_BY_STEP = "Let's think step by step."
ANSWER_TRIGGER = "Therefore, the answer is"
# Where a rationale ends: the answer sentence, or (few-shot) the model starting the next question.
_RATIONALE_END = re.compile(r"Therefore,?\s+the\s+answer\s+is|\n\s*Q:", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Exemplar:
  """A few-shot exemplar: an example with its reasoning."""

  example: Example
  rationale: str

  def render(self) -> str:
    return (f"Q: {format_question(self.example)}\nA: {self.rationale} {ANSWER_TRIGGER} "
            f"{format_choice(self.example)}.")


def load_exemplars(path: str) -> list[Exemplar]:
  """Few-shot exemplars from JSONL, one a line.

  Each line: `{"question": str, "rationale": str, "answer": str, optional "context": str,
  optional "choices": {"label": [...], "text": [...]} or [{"label", "text"}]}`; for multiple choice
  `answer` is a label. Errors name the file and line (errors.DataError; a missing file is
  errors.MissingFileError).
  """
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"teacher.few_shot_path={path!r}: no such JSONL file of "
                                  "few-shot exemplars")
  exemplars = []
  for location, row in loaders.iter_local_rows(path):
    if isinstance(row, loaders.BadRecord):
      raise errors.DataError(f"{location}: {row.reason}")
    missing = [key for key in ("question", "rationale", "answer") if not row.get(key)]
    if missing:
      raise errors.DataError(f"{location}: few-shot exemplar lacks {', '.join(missing)}")
    choices: tuple[tuple[str, str], ...] = ()
    raw = row.get("choices")
    if isinstance(raw, dict):
      choices = tuple(zip(map(str, raw.get("label", [])), map(str, raw.get("text", []))))
    elif isinstance(raw, list):
      choices = tuple((str(c["label"]), str(c["text"])) for c in raw)
    answer = str(row["answer"])
    if choices and answer not in dict(choices):
      raise errors.DataError(f"{location}: exemplar answer {answer!r} is not among its choice "
                             f"labels {[label for label, _ in choices]}")
    example = Example(id=f"exemplar-{len(exemplars)}", question=str(row["question"]),
                      choices=choices, answer=answer, context=str(row.get("context", "")))
    exemplars.append(Exemplar(example, str(row["rationale"]).strip()))
  if not exemplars:
    raise errors.DataError(f"{path}: no few-shot exemplars (teacher.few_shot_path)")
  return exemplars


def rationale_prompt(example: Example, style: str, exemplars: Sequence[Exemplar] = ()) -> str:
  """Step 1: the prompt whose completion is the rationale."""
  question = format_question(example)
  if style == ZERO_SHOT_COT:
    return f"Q: {question}\nA: {STEP_BY_STEP}"
  if style == FEW_SHOT_COT:
    if not exemplars:
      raise errors.ConfigError("teacher.prompt_style='few_shot_cot' needs exemplars "
                               "(teacher.few_shot_path)")
    shots = "\n\n".join(exemplar.render() for exemplar in exemplars)
    return f"{shots}\n\nQ: {question}\nA:"
  if style == RATIONALIZE:
    return (f"Q: {question}\nThe correct answer is {format_choice(example)}. Explain why.\n"
            f"A: {STEP_BY_STEP}")
  raise errors.ConfigError(f"unknown teacher.prompt_style={style!r}; expected one of "
                           f"{PROMPT_STYLES}")


def answer_prompt(example: Example, rationale: str, style: str,
                  exemplars: Sequence[Exemplar] = ()) -> str:
  """Step 2: the prompt whose completion is the answer, given the rationale."""
  if style == FEW_SHOT_COT:
    return f"{rationale_prompt(example, style, exemplars)} {rationale} {ANSWER_TRIGGER}"
  if style in (ZERO_SHOT_COT, RATIONALIZE):
    return f"Q: {format_question(example)}\nA: {STEP_BY_STEP} {rationale}\n{ANSWER_TRIGGER}"
  raise errors.ConfigError(f"unknown teacher.prompt_style={style!r}; expected one of "
                           f"{PROMPT_STYLES}")


def split_completion(text: str) -> tuple[str, str | None]:
  """(rationale, answer text or None) from a step-1 completion.

  The rationale ends at the answer sentence or where the model starts a new "Q:"; the answer text
  is what follows "Therefore, the answer is" up to the end of its line, None when the completion
  has no answer sentence (step 2 then asks for it).
  """
  match = _RATIONALE_END.search(text)
  if match is None:
    return " ".join(text.split()), None
  rationale = " ".join(text[:match.start()].split())
  if not match.group(0).lower().startswith("therefore"):
    return rationale, None
  answer = text[match.end():].strip().split("\n", 1)[0].strip()
  return rationale, answer or None


def clean_answer(text: str) -> str:
  """A step-2 completion cut to its first line (models continue with the next question)."""
  return text.strip().split("\n", 1)[0].strip()
