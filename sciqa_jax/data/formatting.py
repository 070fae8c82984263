"""How questions, answers and rationales are written as text.

One module shared by teacher prompts, student inputs and evaluation, so that the student is scored
on exactly the text layout it was trained on.
"""

from __future__ import annotations

from sciqa_jax.data.example import Example


def format_question(example: Example) -> str:
  """`Question: ... Answer choices: (A) ... (B) ...` (the choices line only for multiple choice)."""
  parts = []
  if example.context:
    parts.append(f"Context: {example.context}")
  parts.append(f"Question: {example.question}")
  if example.choices:
    parts.append("Answer choices: " + " ".join(f"({label}) {text}" for label, text in example.choices))
  return "\n".join(parts)


def format_choice(example: Example, answer: str | None = None) -> str:
  """The answer as teacher prompts quote it: `(B) liquid` for multiple choice, else the answer."""
  answer = example.answer if answer is None else answer
  if example.choices:
    return f"({answer}) {example.choice_text(answer)}"
  return answer


def format_answer(example: Example, answer: str | None = None) -> str:
  """The answer as a student writes it: `liquid (B)` for multiple choice, else the answer itself.

  The choice's words come first and its letter last, so the words can be read off the reasoning
  ("... so it is a liquid."). With the letter first, a student trained with teacher forcing learns
  to predict each choice's words from its letter (the choices list pairs them), so rank
  classification scores every choice's words alike and only the letter, a lookup the student must
  make before writing anything, decides. `answer` defaults to the gold answer; pass a label to
  format another.
  """
  answer = example.answer if answer is None else answer
  if example.choices:
    return f"{example.choice_text(answer)} ({answer})"
  return answer


def candidate_answers(example: Example) -> list[str]:
  """Every formatted choice, in label order: the candidates rank classification scores."""
  return [format_answer(example, label) for label in example.labels]


class ElidableText(str):
  """A text with a span (character offsets `elidable = (start, end)`) that loses its middle first
  when the tokenised text is longer than its limit.

  The objectives mark the rationale this way in every text that holds one (stage-2 inputs,
  rationale targets, Fine-tune-CoT's `rationale --> answer` targets): cut from the end, a long
  rationale would lose its conclusion, the part stage 2 must read and the part before the answer
  a student must learn to write. It is a `str`, so everything else reads it as plain text.
  """

  elidable: tuple[int, int]

  def __new__(cls, text: str, start: int, end: int):
    if not 0 <= start <= end <= len(text):
      raise ValueError(f"elidable span ({start}, {end}) outside a text of {len(text)} characters")
    obj = super().__new__(cls, text)
    obj.elidable = (start, end)
    return obj
