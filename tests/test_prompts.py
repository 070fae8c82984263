"""Teacher prompts per answer type: zero-shot-CoT's typed answer triggers, few-shot-CoT's shipped
exemplars (an explicit teacher.few_shot_path overrides them), and the answer-only baselines of
teacher evaluation (zero-shot, few-shot)."""

import json

import pytest

from sciqa_jax import cache, errors, rationales
from sciqa_jax.config import base_config
from sciqa_jax.data import registry
from sciqa_jax.data.example import CHOICE, NUMBER, TEXT, YES_NO, Example
from sciqa_jax.teacher import prompts
from sciqa_jax.teacher.evaluation import evaluate_teacher, evaluated_style
from sciqa_jax.teacher.explain import explain

NUMBER_Q = Example("n1", "Tom has 3 apples and buys 4 more. How many apples does he have?", (), "7")
YES_NO_Q = Example("y1", "Is ice colder than steam?", (), "yes")
TEXT_Q = Example("t1", 'Take the last letters of each word in "Ann Bo" and concatenate them.', (),
                 "no")
CHOICE_E = Example("c1", "Which is a gas?", tuple(zip("ABCDE", ("ice", "air", "rock", "wood",
                                                                  "milk"))), "B")
CHOICE_C = Example("c2", "Which is a solid?", (("A", "ice"), ("B", "air"), ("C", "steam")), "A")
CHOICE_F = Example("c3", "Which date?", tuple(zip("ABCDEF", "uvwxyz")), "F")


class ScriptedTeacher:
  """A CompletionTeacher: step 1 without an answer sentence, step 2 from `answers`; it records
  every prompt."""

  name = "scripted"

  def __init__(self, answers=None, rationale=" Think about it."):
    self.answers = answers or {}
    self.rationale = rationale
    self.prompts = []

  def complete(self, prompts_, *, num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=128,
               seed=0):
    self.prompts.extend(prompts_)
    out = []
    for prompt in prompts_:
      if prompt.rstrip().endswith(" is"):  # an answer trigger: step 2 or a baseline
        question = next(q for q in self.answers if q in prompt.rsplit("Q: ", 1)[-1])
        out.append([f" {self.answers[question]}.\nQ: an invented next question"] * num_samples)
      else:
        out.append([self.rationale] * num_samples)
    return out


def teacher_config(**overrides):
  config = base_config().teacher
  config.update(overrides)
  return config


# ---- zero-shot-CoT's answer trigger per answer type ------------------------------------------


@pytest.mark.parametrize("example, answer_type, trigger", [
    (NUMBER_Q, NUMBER, "Therefore, the answer (arabic numerals) is"),
    (CHOICE_E, CHOICE, "Therefore, among A through E, the answer is"),
    (CHOICE_C, CHOICE, "Therefore, among A through C, the answer is"),
    (CHOICE_F, CHOICE, "Therefore, among A through F, the answer is"),
    (YES_NO_Q, YES_NO, "Therefore, the answer (Yes or No) is"),
    (TEXT_Q, TEXT, "Therefore, the answer is"),
    (CHOICE_E, None, "Therefore, the answer is"),  # the type unknown: the generic trigger
])
def test_answer_trigger_per_type(example, answer_type, trigger):
  assert prompts.answer_trigger(example, answer_type) == trigger
  step2 = prompts.answer_prompt(example, "Some reasoning.", prompts.ZERO_SHOT_COT,
                                answer_type=answer_type)
  assert step2 == (f"Q: {prompts.format_question(example)}\nA: Let's think step by step. "
                   f"Some reasoning.\n{trigger}")
  assert prompts.answer_prompt(example, "Why.", prompts.RATIONALIZE,
                               answer_type=answer_type).endswith(f"Why.\n{trigger}")
  assert prompts.zero_shot_prompt(example, answer_type) == (
      f"Q: {prompts.format_question(example)}\nA: {trigger}")


@pytest.mark.parametrize("task_name, example, reply, parsed", [
    ("multiarith", NUMBER_Q, "7", "7"),
    ("commonsense_qa", CHOICE_E, "(B) air", "B"),
    ("strategy_qa", YES_NO_Q, "Yes", "yes"),
    ("last_letter_concatenation", TEXT_Q, "no", "no"),
])
def test_explain_asks_step_two_with_the_tasks_trigger(task_name, example, reply, parsed):
  task = registry.get_task(task_name)
  teacher = ScriptedTeacher({example.question: reply})
  outputs = explain(teacher, [example], teacher_config(), seed=0, answer_type=task.answer_type)
  trigger = prompts.answer_trigger(example, task.answer_type)
  assert teacher.prompts[1].endswith(f"Think about it.\n{trigger}")
  (rationale, answer_text), = outputs[0]
  assert rationale == "Think about it." and answer_text == f"{reply}."  # the first line only
  assert task.parse_answer(answer_text, example) == parsed
  assert task.is_correct(task.parse_answer(answer_text, example), example)


@pytest.mark.parametrize("text, rationale, answer", [
    (" 3 + 4 = 7. Therefore, the answer (arabic numerals) is 7.\nQ: more", "3 + 4 = 7.", "7."),
    (" Air is a gas. Therefore, among A through E, the answer is (B).", "Air is a gas.", "(B)."),
    (" Ice is cold.\nTherefore, the answer (Yes or No) is Yes.", "Ice is cold.", "Yes."),
    (" Last letters n, o. Therefore, the answer is no.", "Last letters n, o.", "no."),
    (" No conclusion yet.\n\nQ: an invented question", "No conclusion yet.", None),
])
def test_split_completion_knows_every_trigger(text, rationale, answer):
  assert prompts.split_completion(text) == (rationale, answer)


def test_few_shot_cot_keeps_its_exemplars_trigger():
  shots = prompts.load_task_exemplars("", "multiarith")
  step2 = prompts.answer_prompt(NUMBER_Q, "3 + 4 = 7.", prompts.FEW_SHOT_COT, shots,
                                answer_type=NUMBER)
  assert step2.endswith("A: 3 + 4 = 7. Therefore, the answer is")
  assert step2.count("Therefore, the answer is") == len(shots) + 1


# ---- few-shot-CoT: shipped exemplars, an explicit path overrides them --------------------------


def write_shots(path, answer="yes"):
  path.write_text(json.dumps({"question": "Is a whale a mammal?",
                              "rationale": "Whales breathe air and feed milk to their young.",
                              "answer": answer}) + "\n")
  return str(path)


def test_empty_few_shot_path_uses_the_tasks_shipped_file(tmp_path):
  assert prompts.exemplars_path("", "coin_flip") == prompts.shipped_exemplars_path("coin_flip")
  shipped = prompts.load_task_exemplars("", "coin_flip")
  prompt = prompts.rationale_prompt(YES_NO_Q, prompts.FEW_SHOT_COT, shipped)
  assert shipped[0].example.question in prompt and prompt.endswith(
      f"Q: {prompts.format_question(YES_NO_Q)}\nA:")
  explicit = write_shots(tmp_path / "mine.jsonl")
  assert prompts.exemplars_path(explicit, "coin_flip") == explicit
  mine = prompts.load_task_exemplars(explicit, "coin_flip")
  assert [s.example.question for s in mine] == ["Is a whale a mammal?"]
  assert prompts.exemplars_id(explicit, "coin_flip") == explicit
  assert prompts.exemplars_id("", "coin_flip").startswith("shipped:coin_flip.jsonl@sha256:")


def test_task_without_shipped_exemplars_needs_a_path(monkeypatch, tmp_path):
  monkeypatch.setattr(prompts, "EXEMPLAR_DIR", str(tmp_path))
  with pytest.raises(errors.ConfigError) as info:
    prompts.exemplars_path("", "gsm8k")
  message = str(info.value)
  assert "teacher.few_shot_path" in message and "'gsm8k'" in message and "\n" not in message


def few_shot_generate_config(tmp_path, few_shot_path=""):
  config = base_config()
  config.task = "coin_flip"
  config.data.max_examples = 6
  config.teacher.backend = "hf"  # replaced by the scripted teacher below
  config.teacher.model = "unused"
  config.teacher.prompt_style = prompts.FEW_SHOT_COT
  config.teacher.few_shot_path = few_shot_path
  config.teacher.allow_empty = True
  config.cache_dir = str(tmp_path / "cache")
  return config


def test_generate_few_shot_cot_with_shipped_and_explicit_exemplars(tmp_path):
  examples = registry.get_task("coin_flip").load("train", source="builtin", max_examples=6)
  answers = {ex.question: ex.answer for ex in examples}
  teacher = ScriptedTeacher(answers)
  counts = rationales.build_cache(few_shot_generate_config(tmp_path), teacher=teacher,
                                  progress=False)["train"]
  assert counts["kept"] == 6 and counts["unparseable"] == 0
  shipped = prompts.load_task_exemplars("", "coin_flip")
  step1 = [p for p in teacher.prompts if p.endswith("\nA:")]
  assert len(step1) == 6 and all(p.startswith(shipped[0].render()) for p in step1)
  manifest = cache.read_manifest(str(tmp_path / "cache"))
  assert manifest["config"]["teacher.few_shot_path"] == prompts.exemplars_id("", "coin_flip")
  records = list(cache.read_records(str(tmp_path / "cache"), "train"))
  assert {r.prompt_style for r in records} == {prompts.FEW_SHOT_COT}

  explicit = write_shots(tmp_path / "mine.jsonl")
  teacher = ScriptedTeacher(answers)
  config = few_shot_generate_config(tmp_path, explicit)
  config.cache_dir = str(tmp_path / "cache2")
  rationales.build_cache(config, teacher=teacher, progress=False)
  assert all(p.startswith("Q: Question: Is a whale a mammal?") for p in teacher.prompts)
  assert cache.read_manifest(config.cache_dir)["config"]["teacher.few_shot_path"] == explicit


def test_generate_few_shot_cot_without_exemplars_is_a_config_error(tmp_path, monkeypatch):
  missing = str(tmp_path / "missing.jsonl")
  with pytest.raises(errors.MissingFileError, match="teacher.few_shot_path=.*missing.jsonl"):
    rationales.build_cache(few_shot_generate_config(tmp_path, missing), teacher=ScriptedTeacher(),
                           progress=False)
  monkeypatch.setattr(prompts, "EXEMPLAR_DIR", str(tmp_path / "none"))
  with pytest.raises(errors.ConfigError, match="teacher.few_shot_path"):
    rationales.build_cache(few_shot_generate_config(tmp_path), teacher=ScriptedTeacher(),
                           progress=False)
  assert not (tmp_path / "cache").exists()


# ---- teacher evaluation: zero-shot and few-shot answer-only baselines -----------------------------


def test_evaluate_teacher_few_shot_baseline_has_answers_without_rationales():
  task = registry.get_task("multiarith")
  examples = [NUMBER_Q, Example("n2", "What is 6 times 7?", (), "42")]
  teacher = ScriptedTeacher({NUMBER_Q.question: "7", examples[1].question: "41"})
  config = teacher_config(prompt_style=prompts.FEW_SHOT_COT)
  result = evaluate_teacher(teacher, examples, task, config, progress=False,
                            chain_of_thought=False)
  assert [row["correct"] for row in result.predictions] == [True, False]
  assert all(row["rationales"] == [] for row in result.predictions)
  shots = prompts.load_task_exemplars("", "multiarith")
  prompt = teacher.prompts[0]
  assert prompt == prompts.few_shot_prompt(NUMBER_Q, shots)
  assert prompt.startswith(f"Q: {prompts.format_question(shots[0].example)}\nA: Therefore, the "
                           f"answer is {shots[0].example.answer}.\n\nQ: ")
  assert shots[0].rationale not in prompt and prompt.endswith("A: Therefore, the answer is")
  assert evaluated_style(teacher, config, chain_of_thought=False) == prompts.FEW_SHOT
  assert evaluated_style(teacher, config, chain_of_thought=True) == prompts.FEW_SHOT_COT


def test_evaluate_teacher_zero_shot_baseline_uses_the_typed_trigger():
  task = registry.get_task("commonsense_qa")
  teacher = ScriptedTeacher({CHOICE_E.question: "(B)"})
  config = teacher_config()
  result = evaluate_teacher(teacher, [CHOICE_E], task, config, progress=False,
                            chain_of_thought=False)
  assert result.accuracy == 1.0
  assert teacher.prompts == [f"Q: {prompts.format_question(CHOICE_E)}\nA: Therefore, among A "
                             "through E, the answer is"]
  assert evaluated_style(teacher, config, chain_of_thought=False) == prompts.ZERO_SHOT


def test_evaluate_teacher_few_shot_cot_uses_the_shipped_exemplars():
  task = registry.get_task("strategy_qa")
  teacher = ScriptedTeacher({YES_NO_Q.question: "Yes"})
  result = evaluate_teacher(teacher, [YES_NO_Q], task,
                            teacher_config(prompt_style=prompts.FEW_SHOT_COT), progress=False)
  assert result.accuracy == 1.0
  shots = prompts.load_task_exemplars("", "strategy_qa")
  assert teacher.prompts[0] == prompts.rationale_prompt(YES_NO_Q, prompts.FEW_SHOT_COT, shots)
  assert teacher.prompts[1].endswith("Think about it. Therefore, the answer is")
