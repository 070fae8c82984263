"""The few-shot-CoT exemplars shipped per task (sciqa_jax/teacher/exemplars/<task>.jsonl): every
file parses, holds 4 to 8 exemplars of the task's answer type, and each exemplar's answer is what
the task's own parser reads from its rationale (and from the rendered exemplar, as a teacher's
completion is read)."""

import pathlib
import re
import tomllib

import pytest

from sciqa_jax.data import registry
from sciqa_jax.data.example import CHOICE, NUMBER, TEXT, YES_NO
from sciqa_jax.data.registry import question_key
from sciqa_jax.teacher import adapters, prompts

REPO = pathlib.Path(__file__).resolve().parents[1]
FINE_TUNE_COT_TASKS = ("single_eq", "addsub", "multiarith", "gsm8k", "aqua", "svamp",
                       "date_understanding", "tracking_shuffled_objects", "coin_flip",
                       "last_letter_concatenation", "commonsense_qa", "strategy_qa")
SCIENCE_TASKS = ("arc_easy", "arc_challenge", "openbookqa", "sciq", "qasc", "science_demo")
# Each task's answer type, checked against the registry where the task is registered.
EXPECTED_TYPES = {
    **dict.fromkeys(("single_eq", "addsub", "multiarith", "gsm8k", "svamp"), NUMBER),
    **dict.fromkeys(("aqua", "date_understanding", "tracking_shuffled_objects",
                     "commonsense_qa") + SCIENCE_TASKS, CHOICE),
    "coin_flip": YES_NO, "strategy_qa": YES_NO, "last_letter_concatenation": TEXT,
}
# Claims of worked arithmetic, "a op b [op c ...] = r", operands with an optional unit
# ("4 * 3 * 2 * 1 = 24", "300 s / 60 = 5", "20 N / 10 kg = 2").
_OPERAND = r"\d+(?:\.\d+)?(?: [A-Za-z]+)?"
_CLAIM = re.compile(rf"(?<![\d.])((?:{_OPERAND} [-+*/] )+{_OPERAND}) = (\d+(?:\.\d+)?)")


def shipped(task_name):
  return prompts.load_task_exemplars("", task_name)


def registered_task(name):
  if name not in registry.list_tasks():
    pytest.skip(f"task {name!r} is not registered yet: its exemplars' answers are unchecked")
  return registry.get_task(name)


def exemplar_type(exemplar) -> str:
  example = exemplar.example
  if example.choices:
    return CHOICE
  if example.answer in ("yes", "no"):
    return YES_NO
  return NUMBER if re.fullmatch(r"-?\d+(?:\.\d+)?", example.answer) else TEXT


def test_every_task_ships_exemplars():
  assert set(FINE_TUNE_COT_TASKS + SCIENCE_TASKS) <= set(prompts.shipped_tasks())
  assert set(prompts.shipped_tasks()) <= set(EXPECTED_TYPES), "a file for an unknown task"


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_shipped_file_parses_with_4_to_8_exemplars_of_the_tasks_type(name):
  exemplars = shipped(name)
  assert 4 <= len(exemplars) <= 8
  assert {exemplar_type(e) for e in exemplars} == {EXPECTED_TYPES[name]}
  assert len({question_key(e.example) for e in exemplars}) == len(exemplars)
  assert all(e.rationale and e.example.question for e in exemplars)
  if EXPECTED_TYPES[name] == CHOICE:
    answers = [e.example.answer for e in exemplars]
    assert len(set(answers)) >= 3, f"answers {answers}: not one position over and over"
  task = registered_task(name)
  assert task.answer_type == EXPECTED_TYPES[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_each_answer_is_what_the_tasks_parser_reads_from_its_rationale(name):
  task = registered_task(name)
  for exemplar in shipped(name):
    example = exemplar.example
    parsed = task.parse_answer(exemplar.rationale, example)
    assert task.is_correct(parsed, example), (exemplar.rationale, parsed, example.answer)
    # Rendered into a prompt, the exemplar is read back as a teacher's completion would be.
    completion = " " + exemplar.render().split("\nA: ", 1)[1]
    rationale, answer_text = prompts.split_completion(completion)
    assert rationale == exemplar.rationale
    assert task.is_correct(task.parse_answer(answer_text, example), example), answer_text


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_worked_arithmetic_is_right(name):
  claims = 0
  for exemplar in shipped(name):
    for expression, result in _CLAIM.findall(exemplar.rationale):
      value = adapters.evaluate_arithmetic(re.sub(r" [A-Za-z]+", "", expression))
      assert float(value) == pytest.approx(float(result)), (name, f"{expression} = {result}")
      claims += 1
  if EXPECTED_TYPES[name] == NUMBER:
    assert claims >= 4, "arithmetic exemplars show their working"


@pytest.mark.parametrize("name", ["science_demo", "coin_flip", "last_letter_concatenation"])
def test_exemplars_are_not_questions_of_a_builtin_split(name):
  task = registered_task(name)
  keys = {question_key(e.example) for e in shipped(name)}
  for split in ("train", "validation", "test"):
    examples = task.load(split, source="builtin")
    assert not keys & {question_key(example) for example in examples}, split


def test_exemplars_are_packaged():
  config = tomllib.loads((REPO / "pyproject.toml").read_text())
  patterns = config["tool"]["setuptools"]["package-data"]["sciqa_jax.teacher"]
  files = {path.name for pattern in patterns
           for path in (REPO / "sciqa_jax" / "teacher").glob(pattern)}
  assert files == {f"{name}.jsonl" for name in prompts.shipped_tasks()}
