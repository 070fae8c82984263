"""Choices written inside the question ("Answer choices: (A) ..., (B) ..."), as Fine-tune-CoT's and
zero-shot-CoT's files write AQuA, Date Understanding, Tracking Shuffled Objects and CommonsenseQA:
parsed into Example.choices so rank classification works, the stem kept without them so the
student reads the choices once (format_question writes them on their own line)."""

import pytest

from sciqa_jax.data.example import Example
from sciqa_jax.data.formatting import format_question
from sciqa_jax.data.loaders import RecordError, choices_from_question, fine_tune_cot_record

CASES = [
    # CommonsenseQA in Fine-tune-CoT's file: "what?, Answer choices", a choice ending in "."
    ("The fox walked from the city into the forest, what was it looking for?, Answer choices: "
     "(A) pretty flowers., (B) hen house, (C) natural habitat, (D) storybook, (E) dense forest.",
     "The fox walked from the city into the forest, what was it looking for?",
     (("A", "pretty flowers."), ("B", "hen house"), ("C", "natural habitat"), ("D", "storybook"),
      ("E", "dense forest"))),
    # Date Understanding: six choices after "Which choice is true?", dates with slashes.
    ("Yesterday was April 30, 2021. What is the date today in MM/DD/YYYY?\nWhich choice is true? "
     "Answer choices: (A) 06/12/2021, (B) 03/11/2021, (C) 02/23/2021, (D) 05/09/2021, "
     "(E) 04/29/2021, (F) 05/01/2021.",
     "Yesterday was April 30, 2021. What is the date today in MM/DD/YYYY?\nWhich choice is true?",
     tuple(zip("ABCDEF", ("06/12/2021", "03/11/2021", "02/23/2021", "05/09/2021", "04/29/2021",
                          "05/01/2021")))),
    # Tracking Shuffled Objects: the stem ends mid-sentence before the choices.
    ("Alice, Bob, and Claire are playing a game. \n\nFirst, Alice and Bob swap balls. At the end of "
     "the game, Alice has the \nWhich choice is true? Answer choices: (A) orange ball, "
     "(B) white ball, (C) blue ball.",
     "Alice, Bob, and Claire are playing a game. \n\nFirst, Alice and Bob swap balls. At the end "
     "of the game, Alice has the \nWhich choice is true?",
     (("A", "orange ball"), ("B", "white ball"), ("C", "blue ball"))),
    # AQuA as zero-shot-CoT writes it: "Answer Choices:", no commas, thousands and parentheses.
    ("A shop sells 1,000 pens at (x + 1) dollars each. What is x? Answer Choices: (A) 1,000 "
     "(B) 2 (C) (x + 3) (D) 4.5 (E) none",
     "A shop sells 1,000 pens at (x + 1) dollars each. What is x?",
     (("A", "1,000"), ("B", "2"), ("C", "(x + 3)"), ("D", "4.5"), ("E", "none"))),
]


@pytest.mark.parametrize("question,stem,choices", CASES, ids=["csqa", "date", "tracking", "aqua"])
def test_choices_are_parsed_out_of_the_question(question, stem, choices):
  assert choices_from_question(question) == (stem, choices)


def test_the_student_reads_the_choices_once():
  row = {"question": CASES[2][0], "answer": "C", "sample_index": 7}
  example = fine_tune_cot_record(row, 0, "test", key="tracking_shuffled_objects",
                                 answer_type="choice")
  assert example.id == "tracking_shuffled_objects-7" and example.answer == "C"
  text = format_question(example)
  assert text.count("orange ball") == 1 and text.count("Answer choices") == 1
  assert text.endswith("Answer choices: (A) orange ball (B) white ball (C) blue ball")


@pytest.mark.parametrize("question,reason", [
    ("How many apples are left?", "lists no choices"),
    ("Which? Answer choices: (B) one, (C) two", "are not (A) ..., (B) ..."),
    ("Which? Answer choices: (A) one", "are not (A) ..., (B) ..."),
    ("Which? Answer choices: (A) , (B) two", "choice (A) has no text"),
    ("Answer choices: (A) one, (B) two", "missing question text"),
])
def test_unparseable_choices_name_the_field(question, reason):
  with pytest.raises(RecordError, match=r"\(question\)") as info:
    choices_from_question(question)
  assert reason in str(info.value)


def test_answer_must_be_a_listed_label():
  row = {"question": CASES[2][0], "answer": "D"}
  with pytest.raises(RecordError, match=r"answer 'D' is not among the choices \['A', 'B', 'C'\]"):
    fine_tune_cot_record(row, 0, "test", key="tracking_shuffled_objects", answer_type="choice")
  lower = fine_tune_cot_record({**row, "answer": "b"}, 0, "test", key="aqua", answer_type="choice")
  assert isinstance(lower, Example) and lower.answer == "B"
