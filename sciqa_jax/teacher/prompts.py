"""Prompt styles for completion teachers, and turning completions back into rationale + answer.

Three styles (`teacher.prompt_style`):

  zero_shot_cot  Fine-tune-CoT's two-step Zero-shot-CoT (Kojima et al. 2022; Ho et al. 2023).
                 Step 1 `Q: {question}\\nA: Let's think step by step.` -> the rationale; step 2
                 appends `{rationale}\\n{trigger}` and reads the answer. The trigger fits the
                 task's answer type (`answer_trigger`), as in Kojima et al.: "Therefore, the answer
                 (arabic numerals) is" for numbers, "Therefore, among A through E, the answer is"
                 with the question's own first and last labels for multiple choice, "Therefore,
                 the answer (Yes or No) is" for yes/no, "Therefore, the answer is" for text. A
                 typed trigger keeps the teacher from answering "the third option" or "twelve".
  few_shot_cot   Wei et al. 2022: exemplars (question, rationale, answer), each written as
                 `Q: ...\\nA: {rationale} Therefore, the answer is {answer}.`, then
                 `Q: {question}\\nA:`.
                 The teacher usually writes rationale and answer in one go; when its completion
                 has no answer sentence, step 2 asks for it with the exemplars' own trigger.
                 Exemplars come from `teacher.few_shot_path`, or, when that is empty, from the file
                 shipped for the task (`exemplars/<task>.jsonl`, `shipped_exemplars_path`).
  rationalize    STaR-style rationalization (Zelikman et al. 2022): step 1 is told the gold answer
                 and asked to explain it; step 2 is zero_shot_cot's answer prompt WITHOUT the hint,
                 so the correctness filter still checks that the rationale leads to the answer.

Two answer-only baselines for teacher evaluation (`teacher.evaluation`), not for generation:
zero-shot `Q: {question}\\nA: {trigger}` and few-shot (`FEW_SHOT`, `few_shot_prompt`): the
few_shot_cot exemplars without their rationales, so each baseline differs from its chain-of-thought
style only in the missing reasoning.

`{question}` is always `format_question(example)`: the text layout students are trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence

from sciqa_jax import errors
from sciqa_jax.data import loaders
from sciqa_jax.data.example import CHOICE, NUMBER, YES_NO, Example
from sciqa_jax.data.formatting import format_choice, format_question

ZERO_SHOT_COT = "zero_shot_cot"
FEW_SHOT_COT = "few_shot_cot"
RATIONALIZE = "rationalize"
PROMPT_STYLES = (ZERO_SHOT_COT, FEW_SHOT_COT, RATIONALIZE)
# The answer-only baselines of teacher evaluation (module doc); never a teacher.prompt_style.
ZERO_SHOT = "zero_shot"
FEW_SHOT = "few_shot"

STEP_BY_STEP = "Let's think step by step."
ANSWER_TRIGGER = "Therefore, the answer is"
NUMBER_TRIGGER = "Therefore, the answer (arabic numerals) is"
YES_NO_TRIGGER = "Therefore, the answer (Yes or No) is"
# Where a rationale ends: an answer sentence (any trigger above), or (few-shot) the model starting
# the next question.
_RATIONALE_END = re.compile(
    r"Therefore,?\s+(?:among\s+\S+\s+through\s+\S+?,?\s+)?the\s+answer(?:\s*\([^)\n]*\))?\s+is"
    r"|\n\s*Q:", re.IGNORECASE)
EXEMPLAR_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exemplars")


def answer_trigger(example: Example, answer_type: str | None = None) -> str:
  """Zero-shot-CoT's step-2 trigger for `answer_type` (module doc); the generic one when the type
  is unknown (None) or text, or a multiple-choice example has no choices."""
  if answer_type == CHOICE and example.labels:
    return f"Therefore, among {example.labels[0]} through {example.labels[-1]}, the answer is"
  if answer_type == NUMBER:
    return NUMBER_TRIGGER
  if answer_type == YES_NO:
    return YES_NO_TRIGGER
  return ANSWER_TRIGGER


@dataclasses.dataclass(frozen=True)
class Exemplar:
  """A few-shot exemplar: an example with its reasoning."""

  example: Example
  rationale: str

  def render(self) -> str:
    return (f"Q: {format_question(self.example)}\nA: {self.rationale} {ANSWER_TRIGGER} "
            f"{format_choice(self.example)}.")

  def render_answer_only(self) -> str:
    """The few-shot baseline's exemplar: the same, without the reasoning."""
    return f"Q: {format_question(self.example)}\nA: {ANSWER_TRIGGER} {format_choice(self.example)}."


def _choices(raw) -> tuple[tuple[str, str], ...]:
  if isinstance(raw, dict):
    return tuple(zip(map(str, raw.get("label", [])), map(str, raw.get("text", []))))
  if isinstance(raw, list):
    return tuple((str(c["label"]), str(c["text"])) for c in raw)
  return ()


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
    try:
      choices = _choices(row.get("choices"))
    except (KeyError, TypeError):
      raise errors.DataError(f"{location}: exemplar choices must be {{\"label\": [...], "
                             "\"text\": [...]} or a list of {\"label\", \"text\"}") from None
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


def shipped_exemplars_path(task_name: str) -> str:
  """The exemplar file shipped for a task (its canonical registry name); may not exist."""
  return os.path.join(EXEMPLAR_DIR, f"{task_name}.jsonl")


def shipped_tasks() -> list[str]:
  """The tasks with a shipped exemplar file."""
  if not os.path.isdir(EXEMPLAR_DIR):
    return []
  return sorted(name[:-len(".jsonl")] for name in os.listdir(EXEMPLAR_DIR)
                if name.endswith(".jsonl"))


def exemplars_path(few_shot_path: str, task_name: str) -> str:
  """`teacher.few_shot_path` if set (it always wins), else the task's shipped file.

  Raises errors.ConfigError when neither exists, naming the tasks that ship exemplars.
  """
  if few_shot_path:
    return few_shot_path
  path = shipped_exemplars_path(task_name)
  if not os.path.isfile(path):
    raise errors.ConfigError(
        f"teacher.prompt_style='few_shot_cot' needs teacher.few_shot_path = a JSONL file of "
        f"exemplars: none is shipped for task {task_name!r} (shipped for: "
        f"{', '.join(shipped_tasks())})")
  return path


def exemplars_id(few_shot_path: str, task_name: str) -> str:
  """What the cache manifest records as teacher.few_shot_path: the path given, or the shipped
  file's name and content hash (a shipped file edited later is another prompt)."""
  if few_shot_path:
    return few_shot_path
  path = exemplars_path(few_shot_path, task_name)
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:16]
  return f"shipped:{os.path.basename(path)}@sha256:{digest}"


def load_task_exemplars(few_shot_path: str, task_name: str) -> list[Exemplar]:
  """The exemplars of `exemplars_path` (an explicit path overrides the shipped file)."""
  return load_exemplars(exemplars_path(few_shot_path, task_name))


def _few_shot_prefix(style: str, exemplars: Sequence[Exemplar],
                     render=Exemplar.render) -> str:
  if not exemplars:
    raise errors.ConfigError(f"prompt style {style!r} needs exemplars (teacher.few_shot_path, or "
                             "the file shipped for the task)")
  return "\n\n".join(render(exemplar) for exemplar in exemplars)


def rationale_prompt(example: Example, style: str, exemplars: Sequence[Exemplar] = ()) -> str:
  """Step 1: the prompt whose completion is the rationale."""
  question = format_question(example)
  if style == ZERO_SHOT_COT:
    return f"Q: {question}\nA: {STEP_BY_STEP}"
  if style == FEW_SHOT_COT:
    return f"{_few_shot_prefix(style, exemplars)}\n\nQ: {question}\nA:"
  if style == RATIONALIZE:
    return (f"Q: {question}\nThe correct answer is {format_choice(example)}. Explain why.\n"
            f"A: {STEP_BY_STEP}")
  raise errors.ConfigError(f"unknown teacher.prompt_style={style!r}; expected one of "
                           f"{PROMPT_STYLES}")


def answer_prompt(example: Example, rationale: str, style: str,
                  exemplars: Sequence[Exemplar] = (), answer_type: str | None = None) -> str:
  """Step 2: the prompt whose completion is the answer, given the rationale.

  `answer_type` (the task's) picks zero_shot_cot's and rationalize's trigger (`answer_trigger`);
  few_shot_cot keeps its exemplars' trigger, which the teacher has just seen answered.
  """
  if style == FEW_SHOT_COT:
    return f"{rationale_prompt(example, style, exemplars)} {rationale} {ANSWER_TRIGGER}"
  if style in (ZERO_SHOT_COT, RATIONALIZE):
    return (f"Q: {format_question(example)}\nA: {STEP_BY_STEP} {rationale}\n"
            f"{answer_trigger(example, answer_type)}")
  raise errors.ConfigError(f"unknown teacher.prompt_style={style!r}; expected one of "
                           f"{PROMPT_STYLES}")


def zero_shot_prompt(example: Example, answer_type: str | None = None) -> str:
  """The zero-shot baseline: zero_shot_cot's step 2 without the reasoning."""
  return f"Q: {format_question(example)}\nA: {answer_trigger(example, answer_type)}"


def few_shot_prompt(example: Example, exemplars: Sequence[Exemplar]) -> str:
  """The few-shot baseline: few_shot_cot's prompt with answer-only exemplars, ending on the
  exemplars' trigger so that the completion is the answer."""
  shots = _few_shot_prefix(FEW_SHOT, exemplars, Exemplar.render_answer_only)
  return f"{shots}\n\nQ: {format_question(example)}\nA: {ANSWER_TRIGGER}"


def split_completion(text: str) -> tuple[str, str | None]:
  """(rationale, answer text or None) from a step-1 completion.

  The rationale ends at the answer sentence (any trigger of `answer_trigger`) or where the model
  starts a new "Q:"; the answer text is what follows the trigger up to the end of its line, None
  when the completion has no answer sentence (step 2 then asks for it).
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
