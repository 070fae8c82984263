"""The four distillation objectives, as data.

Every objective is a set of *streams*: an (input text -> target text) mapping that one student is
trained on with a weight in the loss. Training turns each stream into a padded sub-batch keyed by
the stream's name; the loss is `sum(weight * token_cross_entropy(params[student], sub_batch))`.
Evaluation reads the same definitions, so a student is always scored on the layout it learnt.
Every text that holds a rationale marks it (`formatting.ElidableText`), so that a text too long for
its limit loses the rationale's middle, never its conclusion or what follows it.

  two_stage      Sci-CoT (Ma et al. 2023). Stage 1 `question -> rationale`, stage 2
                 `question + rationale -> answer`; two students by default, or one shared
                 student told apart by task prefixes (`shared_student=True`).
  fine_tune_cot  Fine-tune-CoT (Ho et al. 2023). One student, `question -> rationale --> answer`.
  step_by_step   Distilling step-by-step (Hsieh et al. 2023). One student, `predict: question ->
                 answer` with weight alpha and `explain: question -> rationale` with 1 - alpha.
  answer_only    The plain fine-tuning baseline, `question -> answer`.
"""

from __future__ import annotations

import dataclasses

from sciqa_jax.data.example import Example
from sciqa_jax.data.formatting import ElidableText, format_answer, format_question

TWO_STAGE = "two_stage"
FINE_TUNE_COT = "fine_tune_cot"
STEP_BY_STEP = "step_by_step"
ANSWER_ONLY = "answer_only"
OBJECTIVES = (TWO_STAGE, FINE_TUNE_COT, STEP_BY_STEP, ANSWER_ONLY)

# Stream names (keys of a training batch) and student names (keys of the params pytree).
RATIONALE = "rationale"
ANSWER = "answer"
COT = "cot"
STUDENT = "student"

# Fine-tune-CoT's separator between the rationale and the answer.
COT_SEPARATOR = " --> "
PREDICT_PREFIX = "predict: "
EXPLAIN_PREFIX = "explain: "

# Where stage 2 of two_stage gets the rationales it trains on.
STAGE2_RATIONALE_SOURCES = ("teacher", "student", "mix")
# Which answer the answer targets hold: the dataset's gold answer, or the teacher's own answer
# to the question (distilling step-by-step's option; with teacher.keep="all" they differ).
GOLD = "gold"
TEACHER = "teacher"
ANSWER_SOURCES = (GOLD, TEACHER)


@dataclasses.dataclass(frozen=True)
class Stream:
  name: str  # key of the sub-batch
  student: str  # key of the params pytree this stream trains
  weight: float  # weight of this stream's mean token loss in the total loss


@dataclasses.dataclass(frozen=True)
class Objective:
  """One objective's settings (the `objective` section of a config)."""

  name: str = TWO_STAGE
  shared_student: bool = False  # two_stage only: one student with task prefixes
  step_by_step_alpha: float = 0.5  # step_by_step only: weight of the answer stream
  stage2_rationales: str = "teacher"  # two_stage only: one of STAGE2_RATIONALE_SOURCES
  # The answer the targets hold (ANSWER_SOURCES); `sciqa_jax.input_pipeline` puts it in the
  # examples it hands to `training_pairs`, so the layouts here always write `example.answer`.
  answer_source: str = GOLD

  def __post_init__(self):
    if self.name not in OBJECTIVES:
      raise ValueError(f"unknown objective {self.name!r}; expected one of {OBJECTIVES}")
    if self.stage2_rationales not in STAGE2_RATIONALE_SOURCES:
      raise ValueError(f"objective.stage2_rationales={self.stage2_rationales!r}; expected one of "
                       f"{STAGE2_RATIONALE_SOURCES}")
    if self.answer_source not in ANSWER_SOURCES:
      raise ValueError(f"objective.answer_source={self.answer_source!r}; expected one of "
                       f"{ANSWER_SOURCES}")
    if not 0.0 <= self.step_by_step_alpha <= 1.0:
      raise ValueError(f"objective.step_by_step_alpha={self.step_by_step_alpha} must lie in [0, 1]")

  @classmethod
  def from_config(cls, config) -> "Objective":
    """From the `objective` section of a config (a ConfigDict or a mapping)."""
    return cls(**dict(config))

  @property
  def streams(self) -> tuple[Stream, ...]:
    if self.name == TWO_STAGE:
      if self.shared_student:
        return (Stream(RATIONALE, STUDENT, 1.0), Stream(ANSWER, STUDENT, 1.0))
      return (Stream(RATIONALE, RATIONALE, 1.0), Stream(ANSWER, ANSWER, 1.0))
    if self.name == FINE_TUNE_COT:
      return (Stream(COT, STUDENT, 1.0),)
    if self.name == STEP_BY_STEP:
      alpha = self.step_by_step_alpha
      return (Stream(ANSWER, STUDENT, alpha), Stream(RATIONALE, STUDENT, 1.0 - alpha))
    return (Stream(ANSWER, STUDENT, 1.0),)

  @property
  def students(self) -> tuple[str, ...]:
    """Params-pytree keys, in a fixed order."""
    return tuple(dict.fromkeys(stream.student for stream in self.streams))

  @property
  def uses_rationales(self) -> bool:
    return self.name != ANSWER_ONLY

  # ---- text layouts -------------------------------------------------------------------------

  def _prefix(self, stream: str) -> str:
    prefixed = self.name == STEP_BY_STEP or (self.name == TWO_STAGE and self.shared_student)
    if not prefixed:
      return ""
    return EXPLAIN_PREFIX if stream == RATIONALE else PREDICT_PREFIX

  def rationale_input(self, example: Example) -> str:
    """Input of the rationale stream (and of stage-1 generation at evaluation)."""
    return self._prefix(RATIONALE) + format_question(example)

  def answer_input(self, example: Example, rationale: str | None = None) -> str:
    """Input of the answer stream: with the rationale (last, elidable) for two_stage, without it
    otherwise."""
    text = self._prefix(ANSWER) + format_question(example)
    if self.name == TWO_STAGE:
      if rationale is None:
        raise ValueError("two_stage answer inputs need a rationale")
      text += "\nRationale: "
      return ElidableText(text + rationale, len(text), len(text) + len(rationale))
    return text

  def cot_input(self, example: Example) -> str:
    return format_question(example)

  def cot_target(self, example: Example, rationale: str) -> str:
    """`rationale --> answer`; the rationale is elidable, so the answer survives truncation."""
    return ElidableText(f"{rationale}{COT_SEPARATOR}{format_answer(example)}", 0, len(rationale))

  @staticmethod
  def rationale_target(rationale: str) -> str:
    """Target of the rationale stream: the rationale, elidable as a whole."""
    return ElidableText(rationale, 0, len(rationale))

  def training_pairs(self, example: Example, rationale: str | None) -> dict[str, tuple[str, str]]:
    """{stream name: (input text, target text)} for one training example.

    `rationale` is the teacher's (or, for stage 2 with student rationales, the stage-1 student's);
    it may be None only for answer_only.
    """
    if self.uses_rationales and rationale is None:
      raise ValueError(f"objective {self.name!r} needs a rationale for example {example.id!r}")
    answer = format_answer(example)
    if self.name == TWO_STAGE:
      return {RATIONALE: (self.rationale_input(example), self.rationale_target(rationale)),
              ANSWER: (self.answer_input(example, rationale), answer)}
    if self.name == FINE_TUNE_COT:
      return {COT: (self.cot_input(example), self.cot_target(example, rationale))}
    if self.name == STEP_BY_STEP:
      return {ANSWER: (self.answer_input(example), answer),
              RATIONALE: (self.rationale_input(example), self.rationale_target(rationale))}
    return {ANSWER: (self.answer_input(example), answer)}
