"""The one answer rule (sciqa_jax.data.answers), table-driven: each row a model's text, the answer
type, what parses out of it, and whether that matches the gold answer. The same rows go through the
registry's entry points, `Task.parse_answer` / `Task.is_correct`, which evaluation and the
teacher's correctness filter call."""

import pytest

from sciqa_jax.data import answers
from sciqa_jax.data.example import CHOICE, NUMBER, TEXT, YES_NO, Example
from sciqa_jax.data.registry import get_task

OPEN = Example(id="o", question="Q", choices=(), answer="")
MC = Example(id="m", question="Q", choices=(("A", "21"), ("B", "21.5"), ("C", "22"), ("D", "22.5"),
                                            ("E", "23")), answer="C")

# (text, answer type, parsed, gold, correct)
TABLE = [
    # numbers: after the trigger the first number, else the last one
    ("The answer is 12.", NUMBER, "12", "12", True),
    ("The answer is 12. Check: 12 + 3 = 15", NUMBER, "12", "12", True),
    ("3 + 4 = 7, so 7 apples", NUMBER, "7", "7.0", True),
    ("There are 43.0 seashells", NUMBER, "43", "43", True),
    ("So she gave 43 seashells", NUMBER, "43", "43.0", True),  # Fine-tune-CoT's "43.0" gold
    ("He made $1,250.50 in total", NUMBER, "1250.5", "1,250.50", True),
    ("The answer is $70,000.", NUMBER, "70000", "70000", True),
    ("The answer is 1/2", NUMBER, "0.5", "0.5", True),  # a fraction, not 1 and not 2
    ("half of it: 1 / 2", NUMBER, "0.5", "1/2", True),
    ("The temperature fell to -5 degrees.", NUMBER, "-5", "-5", True),
    ("10-3=7", NUMBER, "7", "7", True),  # "-3" is not negative after a digit
    ("The answer (arabic numerals) is 8 apples, not 9", NUMBER, "8", "8", True),
    ("The answer is 0.333", NUMBER, "0.333", "1/3", False),
    ("the answer is 51.0", NUMBER, "51", "52", False),
    ("Tomorrow is 11/12/2019 so 4 days", NUMBER, "4", "4", True),  # a date is no number
    ("no numbers here", NUMBER, None, "4", False),
    # text: Fine-tune-CoT's normalisation
    ("n e o y", TEXT, "neoy", "neoy", True),
    ('The answer is "NEOY".', TEXT, "neoy", "neoy", True),
    ("So the answer is ne oy", TEXT, "neoy", "neoy", True),
    ("the answer is nkmk", TEXT, "nkmk", "neoy", False),
    (" . ", TEXT, None, "neoy", False),
    # yes / no, any case
    ("Yes.", YES_NO, "yes", "yes", True),
    ("So the answer is NO", YES_NO, "no", "No", True),
    ("True", YES_NO, "yes", "Yes", True),
    ("maybe", YES_NO, None, "yes", False),
    ("Yesterday it rained", YES_NO, None, "no", False),
    # multiple choice: a label among the example's own
    ("Therefore, among A through E, the answer is (C).", CHOICE, "C", "C", True),
    ("The answer is c", CHOICE, "C", "C", True),
    ("the speed is 22.5", CHOICE, "D", "C", False),
    ("The answer is (F).", CHOICE, None, "C", False),
]


@pytest.mark.parametrize("text,answer_type,parsed,gold,correct", TABLE,
                         ids=[f"{t}:{text[:30]}" for text, t, *_ in TABLE])
def test_answer_rule(text, answer_type, parsed, gold, correct):
  example = MC if answer_type == CHOICE else OPEN
  assert answers.parse_answer(text, example, answer_type) == parsed
  assert answers.answers_match(parsed, gold, answer_type) is correct


TASKS = {NUMBER: "gsm8k", TEXT: "last_letter_concatenation", YES_NO: "strategy_qa",
         CHOICE: "aqua"}


@pytest.mark.parametrize("text,answer_type,parsed,gold,correct", TABLE,
                         ids=[f"{t}:{text[:30]}" for text, t, *_ in TABLE])
def test_task_entry_points_use_the_rule(text, answer_type, parsed, gold, correct):
  task = get_task(TASKS[answer_type])
  assert task.answer_type == answer_type
  example = Example(id="e", question="Q", choices=MC.choices if answer_type == CHOICE else (),
                    answer=gold)
  assert task.parse_answer(text, example) == parsed
  assert task.is_correct(task.parse_answer(text, example), example) is correct


@pytest.mark.parametrize("text,value", [
    ("43.0", 43.0), ("1,000", 1000.0), ("$5", 5.0), ("-3.", -3.0), ("1/2", 0.5), (" 51.0 ", 51.0),
    (".5", 0.5), ("12 apples", None), ("4/19/1969", None), ("1/0", None), ("", None), ("abc", None),
])
def test_number_value_reads_one_gold_number(text, value):
  assert answers.number_value(text) == value


def test_canonical_forms_group_equal_answers():
  """Votes over parsed answers count "1/2" and "0.50" as one answer, "n e o y" and "NEOY" too."""
  assert answers.parse_number("it is 1/2") == answers.parse_number("it is 0.50") == "0.5"
  assert answers.parse_number("it is -0") == "0" and answers.format_number(1e20) == "1e+20"
  assert answers.parse_text("n e o y") == answers.parse_text("NEOY.") == "neoy"
