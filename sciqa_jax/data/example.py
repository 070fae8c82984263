"""The one example type every loader produces and every later stage consumes."""

from __future__ import annotations

import dataclasses

# How a task's gold answer is written and parsed.
CHOICE = "choice"  # multiple choice: `answer` is one of the choice labels ("A".."E")
YES_NO = "yes_no"  # `answer` is "yes" or "no"
NUMBER = "number"  # `answer` is a number written as a string ("42", "3.5")
TEXT = "text"  # free text compared after normalisation (e.g. last-letter concatenation)
ANSWER_TYPES = (CHOICE, YES_NO, NUMBER, TEXT)


@dataclasses.dataclass(frozen=True)
class Example:
  """A question with its gold answer.

  Attributes:
    id: unique within a split.
    question: the question stem, without the choices.
    choices: (label, text) pairs in display order; empty for open-answer tasks.
    answer: the gold answer: a choice label for multiple choice, else the answer string.
    context: optional supporting text (OpenBookQA's fact, a passage); empty if none.
    solution: optional worked steps: known to the task itself (the built-in task and the synthetic
      Fine-tune-CoT tasks), or published with the dataset (GSM8K's solutions, AQuA's rationales);
      the template teacher writes rationales from them. Empty when the dataset has none.
  """

  id: str
  question: str
  choices: tuple[tuple[str, str], ...]
  answer: str
  context: str = ""
  solution: tuple[str, ...] = ()

  @property
  def labels(self) -> tuple[str, ...]:
    return tuple(label for label, _ in self.choices)

  def choice_text(self, label: str) -> str:
    for choice_label, text in self.choices:
      if choice_label == label:
        return text
    raise KeyError(f"example {self.id!r} has no choice labelled {label!r} (labels: {self.labels})")
