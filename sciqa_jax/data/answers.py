"""Answer extraction: turn a model's (teacher's or student's) answer text into a comparable answer.

One parser per answer type (see `sciqa_jax.data.example`). Every parser returns None when the text
holds no answer of that type, so callers can count "unparseable" separately from "wrong".

Common first step, the *answer phrase*: if the text contains "answer is" / "answer:" (any case,
e.g. "Therefore, the answer is (B)."), only the text after the LAST such phrase is parsed. Chains
of thought often mention several candidates while reasoning; the conclusion is what counts.

Rules per type, applied to that text in order, first hit wins:

  choice   1. the first parenthesised valid label: "(B)", "( b )";
           2. a bare valid label that is the whole text or is followed by ")", "." or ":" -- "B",
              "B.", "b) liquid"; a lone "A" followed by a space is NOT a label ("A plant ...");
           3. the text of a choice (case- and punctuation-insensitive, whole words): among the
              choices whose text occurs, the one occurring first, ties broken by the longest text
              ("liquid water" beats "water" at the same position).
  yes_no   the first standalone word among yes/no/true/false ("true" -> "yes", "false" -> "no").
  number   with an answer phrase, the first number after it; without, the LAST number in the text
           (chains of thought end on their result). Thousands separators are dropped and the
           number is normalised ("3.50" -> "3.5", "4.0" -> "4", "-0" -> "0").
  text     the text itself, lower-cased, whitespace collapsed, surrounding quotes and trailing
           punctuation removed; None when nothing is left.

`answers_match` compares a parsed answer with the gold one under the same normalisation.
"""

from __future__ import annotations

import re

from sciqa_jax.data.example import ANSWER_TYPES, CHOICE, NUMBER, TEXT, YES_NO, Example

_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_YES_NO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_YES_NO_MAP = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_WORDS = re.compile(r"[^\w]+")


def after_answer_phrase(text: str) -> str:
  """The text after the last "answer is" / "answer:" phrase, or the whole text if none."""
  matches = list(_ANSWER_PHRASE.finditer(text))
  return text[matches[-1].end():] if matches else text


def _normalize_words(text: str) -> str:
  return " ".join(_WORDS.sub(" ", text.lower()).split())


def parse_choice(text: str, example: Example) -> str | None:
  """The choice label `text` selects among `example.choices`, or None (rules in the module doc)."""
  labels = {label.upper(): label for label in example.labels}
  if not labels:
    return None
  text = after_answer_phrase(text)
  for match in re.finditer(r"\(\s*([A-Za-z0-9])\s*\)", text):
    label = labels.get(match.group(1).upper())
    if label is not None:
      return label
  match = re.match(r"\s*([A-Za-z0-9])\s*(?:[).:]|$)", text)
  if match and match.group(1).upper() in labels:
    return labels[match.group(1).upper()]
  haystack = f" {_normalize_words(text)} "
  best: tuple[int, int, str] | None = None  # (position, -length, label): smallest wins
  for label, choice_text in example.choices:
    needle = _normalize_words(choice_text)
    if not needle:
      continue
    position = haystack.find(f" {needle} ")
    if position >= 0:
      candidate = (position, -len(needle), label)
      if best is None or candidate < best:
        best = candidate
  return best[2] if best else None


def parse_yes_no(text: str) -> str | None:
  """"yes" or "no" (rules in the module doc), or None."""
  match = _YES_NO.search(after_answer_phrase(text))
  return _YES_NO_MAP[match.group(1).lower()] if match else None


def normalize_number(text: str) -> str | None:
  """A canonical string for a number ("1,000.50" -> "1000.5"), or None if it is not one."""
  try:
    value = float(text.replace(",", ""))
  except ValueError:
    return None
  if value != value or value in (float("inf"), float("-inf")):
    return None
  if value == int(value):
    return str(int(value))
  return repr(value)


def parse_number(text: str) -> str | None:
  """The answer number (rules in the module doc), normalised, or None."""
  has_phrase = _ANSWER_PHRASE.search(text) is not None
  numbers = _NUMBER.findall(after_answer_phrase(text))
  if not numbers:
    return None
  return normalize_number(numbers[0] if has_phrase else numbers[-1])


def normalize_text(text: str) -> str:
  text = " ".join(text.split()).lower()
  text = text.rstrip(".!?,;:")
  return text.strip("\"'` ").rstrip(".!?,;:").strip()


def parse_text(text: str) -> str | None:
  """The normalised free-text answer (rules in the module doc), or None when empty."""
  return normalize_text(after_answer_phrase(text)) or None


def parse_answer(text: str, example: Example, answer_type: str) -> str | None:
  """Dispatches to the parser of `answer_type`; None when `text` holds no answer."""
  if answer_type == CHOICE:
    return parse_choice(text, example)
  if answer_type == YES_NO:
    return parse_yes_no(text)
  if answer_type == NUMBER:
    return parse_number(text)
  if answer_type == TEXT:
    return parse_text(text)
  raise ValueError(f"unknown answer type {answer_type!r}; expected one of {ANSWER_TYPES}")


def answers_match(parsed: str | None, gold: str, answer_type: str) -> bool:
  """Whether a parsed answer equals the gold answer under the type's normalisation."""
  if parsed is None:
    return False
  if answer_type == NUMBER:
    return normalize_number(parsed) == normalize_number(gold)
  if answer_type == TEXT:
    return normalize_text(parsed) == normalize_text(gold)
  if answer_type == YES_NO:
    return parsed.lower() == gold.lower()
  return parsed == gold
