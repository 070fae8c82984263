"""Answer extraction and comparison: the one answer rule, for teachers' and students' texts alike.

`parse_answer(text, example, answer_type)` turns a model's answer text into a canonical answer
string, or None when the text holds no answer of that type (so callers count "unparseable"
separately from "wrong"). `answers_match(parsed, gold, answer_type)` compares it with the gold
answer. `Task.parse_answer` / `Task.is_correct` (sciqa_jax.data.registry) call these two, and
every consumer (evaluation, the teacher's correctness filter, self-consistency votes) goes through
them, so an answer counts the same everywhere. Parsed answers are canonical ("1/2" -> "0.5",
"n e o y" -> "neoy"), so votes over parsed answers group equal answers.

Common first step, the *answer trigger*: if the text contains "answer is", "answer:" or a
zero-shot-CoT trigger with a parenthesis ("the answer (arabic numerals) is"), in any case, only
the text after the LAST such trigger is parsed. Chains of thought mention several candidates while
reasoning; the conclusion is what counts.

Rules per type, applied to that text:

  choice   first hit wins: 1. the first parenthesised valid label: "(B)", "( b )"; 2. a bare valid
           label that is the whole text or is followed by ")", "." or ":" -- "B", "B.",
           "b) liquid"; a lone "A" followed by a space is NOT a label ("A plant ..."); 3. the text of
           a choice (case- and punctuation-insensitive, whole words): among the choices whose text
           occurs, the one occurring first, ties broken by the longest text ("liquid water" beats
           "water" at the same position). Only the example's own labels count.
  yes_no   the first standalone word among yes/no/true/false, any case ("true" -> "yes").
  number   after a trigger, the FIRST number after it ("The answer is 12. Check: 12 + 3 = 15" ->
           12); without one, the LAST number in the text (chains of thought end on their result).
           A number: optional "-" (not after a letter or digit: "10-3" is 10 and 3) and "$";
           digits with optional thousands separators in groups of three ("1,250"; "1,2" is two
           numbers) and decimals ("3.50", ".5"); a simple fraction "1/2" is one number (0.5),
           while a date "4/19/1969" is three. A trailing period is punctuation ("12." is 12).
           Mixed numbers ("1 1/2") and number words ("twelve") are not read as one number.
           Canonical form: integral values without decimals ("43.0" -> "43"), others as Python
           writes the float ("0.5"). Two numbers match when equal within 1e-6.
  text     Fine-tune-CoT's normalisation: lower-cased, all whitespace, quotes and periods removed,
           trailing ",;:!?" dropped ("n e o y" and "NEOY." are "neoy"); None when nothing is left.
"""

from __future__ import annotations

import math
import re

from sciqa_jax.data.example import ANSWER_TYPES, CHOICE, NUMBER, TEXT, YES_NO, Example

ANSWER_PHRASE = re.compile(r"answer\s*(?:\([^()]*\)\s*)?(?:is|:)", re.IGNORECASE)
_ANSWER_PHRASE = ANSWER_PHRASE  # the old private name, kept for importers
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d++)(?:\.\d++)?"
# A date ("4/19/1969") is matched as a whole (group "date") so that it yields no number.
_NUMBER = re.compile(
    r"(?<![\w./])(?:(?P<date>\d++(?:/\d++){2,})"
    rf"|(?P<sign>-)?\$?(?P<num>{_DIGITS}|\.\d++)(?:\s*/\s*(?P<den>{_DIGITS}))?)")
_YES_NO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_YES_NO_MAP = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_WORDS = re.compile(r"[^\w]+")
_TEXT_DROPPED = re.compile(r"[\s\"'`\u2018\u2019\u201c\u201d.]+")
NUMBER_TOLERANCE = 1e-6


def after_answer_phrase(text: str) -> str:
  """The text after the last answer trigger (module doc), or the whole text if none."""
  matches = list(ANSWER_PHRASE.finditer(text))
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


def _match_value(match: re.Match) -> float | None:
  if match.group("date"):
    return None
  value = float(match.group("num").replace(",", ""))
  if match.group("den") is not None:
    denominator = float(match.group("den").replace(",", ""))
    if denominator == 0:
      return None
    value /= denominator
  return -value if match.group("sign") else value


def _numbers(text: str) -> list[float]:
  values = (_match_value(match) for match in _NUMBER.finditer(text))
  return [value for value in values if value is not None and math.isfinite(value)]


def format_number(value: float) -> str:
  """The canonical string of a number: "43" for 43.0, "0.5", "-2.25"; "0" for -0."""
  if value == int(value) and abs(value) < 1e16:
    return str(int(value))
  return repr(value)


def number_value(text: str) -> float | None:
  """The value of a text that is one number ("43.0", "1,000", "$5", "-3.", "1/2"), else None.

  Gold answers go through this: the whole text must be the number (surrounding spaces, a "$"
  and a trailing period aside), so "12 apples" or "4/19/1969" is not a gold number.
  """
  text = str(text).strip().rstrip(".").strip()
  match = _NUMBER.fullmatch(text)
  if not match:
    return None
  value = _match_value(match)
  return value if value is not None and math.isfinite(value) else None


def normalize_number(text: str) -> str | None:
  """The canonical string of a text that is one number ("1,000.50" -> "1000.5"), or None."""
  value = number_value(text)
  return None if value is None else format_number(value)


def parse_number(text: str) -> str | None:
  """The answer number (rules in the module doc), canonical, or None."""
  has_phrase = ANSWER_PHRASE.search(text) is not None
  numbers = _numbers(after_answer_phrase(text))
  if not numbers:
    return None
  return format_number(numbers[0] if has_phrase else numbers[-1])


def normalize_text(text: str) -> str:
  """Fine-tune-CoT's text normalisation (module doc): "N e o y." -> "neoy"."""
  return _TEXT_DROPPED.sub("", text.lower()).strip(",;:!?")


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


def numbers_match(parsed: str, gold: str) -> bool:
  """Whether two number texts have equal values (within NUMBER_TOLERANCE)."""
  a, b = number_value(parsed), number_value(gold)
  return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9,
                                                          abs_tol=NUMBER_TOLERANCE)


def answers_match(parsed: str | None, gold: str, answer_type: str) -> bool:
  """Whether a parsed answer equals the gold answer under the type's rule (module doc)."""
  if parsed is None:
    return False
  if answer_type == NUMBER:
    return numbers_match(parsed, gold)
  if answer_type == TEXT:
    return normalize_text(parsed) == normalize_text(gold)
  if answer_type in (YES_NO, CHOICE):
    return parsed.strip().lower() == gold.strip().lower()
  raise ValueError(f"unknown answer type {answer_type!r}; expected one of {ANSWER_TYPES}")
