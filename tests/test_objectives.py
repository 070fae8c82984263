"""Training targets: which answer they hold (gold or the teacher's), how numbers are written, and
the seeded subsample of training questions; targets and evaluation's extraction agree."""

import logging

import pytest

from sciqa_jax import config as config_lib
from sciqa_jax import errors
from sciqa_jax import evaluation
from sciqa_jax import input_pipeline as ip
from sciqa_jax import objectives
from sciqa_jax.cache import CacheWriter, RationaleRecord
from sciqa_jax.data.example import NUMBER, TEXT, YES_NO, Example
from sciqa_jax.data.registry import Task, get_task, list_tasks
from sciqa_jax.objectives import (ANSWER, ANSWER_ONLY, COT, FINE_TUNE_COT, OBJECTIVES, STEP_BY_STEP,
                                  TWO_STAGE, Objective)

NUMBERS = Task(name="numbers", answer_type=NUMBER)


def _record(example, rationale, teacher_answer, sample_index=0):
  correct = teacher_answer is not None and NUMBERS.is_correct(teacher_answer, example)
  return RationaleRecord(example, rationale, teacher_answer, correct, sample_index, "scripted",
                         "zero_shot_cot")


# ---- settings ----------------------------------------------------------------------------------


def test_answer_source_setting():
  assert Objective().answer_source == "gold"
  assert config_lib.CHOICES["objective.answer_source"] == objectives.ANSWER_SOURCES
  with pytest.raises(ValueError, match="objective.answer_source='both'"):
    Objective(answer_source="both")
  for key, value in (("objective.answer_source", "both"), ("data.train_subsample", -1)):
    config = config_lib.base_config()
    section, _, name = key.rpartition(".")
    setattr(config[section], name, value)
    with pytest.raises(errors.ConfigError, match=f"^{key}="):
      config_lib.check(config)
  config = config_lib.base_config()
  config.objective.answer_source, config.data.train_subsample = "teacher", 8
  config_lib.check(config)
  assert Objective.from_config(config.objective).answer_source == "teacher"


# ---- numbers: one spelling, the one evaluation reads -------------------------------------------


@pytest.mark.parametrize("gold,written", [("43.0", "43"), ("1,000", "1000"), ("-3", "-3"),
                                          ("2.50", "2.5"), ("7", "7")])
@pytest.mark.parametrize("objective_name", OBJECTIVES)
def test_number_targets_are_canonical_and_parse_back_correct(objective_name, gold, written):
  objective = Objective(name=objective_name)
  example = Example("q", "Tom has 40 apples and buys 3 more. How many now?", (), gold)
  record = _record(example, "40 + 3 = 43, so 43.", gold)
  ((target_example, rationale),) = ip.training_examples([record], objective, NUMBERS)
  assert target_example.answer == written and target_example.id == example.id
  texts = objective.training_pairs(target_example, rationale)
  if objective_name == FINE_TUNE_COT:
    target = texts[COT][1]
    assert target.endswith(f"{objectives.COT_SEPARATOR}{written}")
    _, parsed = evaluation.parse_cot_output(target, example, NUMBERS.parse_answer)
  else:
    target = texts[ANSWER][1]
    assert target == written
    parsed = NUMBERS.parse_answer(target, example)
  assert NUMBERS.is_correct(parsed, example)  # scored against the dataset's own spelling


def test_other_answer_types_keep_the_gold_spelling():
  for answer_type, gold in ((YES_NO, "Yes"), (TEXT, "New York")):
    task = Task(name="t", answer_type=answer_type)
    example = Example("q", "?", (), gold)
    assert ip.student_answer(example, gold, task) is example
  example = Example("q", "?", (), "43.0")
  assert ip.student_answer(example, "43.0", None) is example  # no task: unchanged


# ---- the teacher's answers ---------------------------------------------------------------------


def _diverse_records():
  """Two questions, three rationales each; the teacher is wrong or unparseable on some
  (teacher.keep=all)."""
  q0 = Example("q0", "2 + 2?", (), "4")
  q1 = Example("q1", "3 * 3?", (), "9.0")
  return [_record(q0, "two and two", "5", 0), _record(q0, "2+2=4", "4.0", 1),
          _record(q0, "twice two", "5", 2), _record(q1, "three threes", "9", 0),
          _record(q1, "hmm", None, 1), _record(q1, "3*3=6", "6", 2)]


def test_teacher_answers_replace_gold_per_rationale(caplog):
  records = _diverse_records()
  gold = ip.training_examples(records, Objective(STEP_BY_STEP), NUMBERS)
  assert [e.answer for e, _ in gold] == ["4", "4", "4", "9", "9", "9"]
  with caplog.at_level(logging.WARNING):
    teacher = ip.training_examples(records, Objective(STEP_BY_STEP, answer_source="teacher"),
                                   NUMBERS)
  # Each rationale keeps the answer it concluded; the unparseable one has none and is left out.
  assert [(e.id, r, e.answer) for e, r in teacher] == [
      ("q0", "two and two", "5"), ("q0", "2+2=4", "4"), ("q0", "twice two", "5"),
      ("q1", "three threes", "9"), ("q1", "3*3=6", "6")]
  assert "1 of 6 training rows have no parseable teacher answer" in caplog.text
  pairs = Objective(STEP_BY_STEP).training_pairs(*teacher[0])
  assert pairs[ANSWER][1] == "5"


def test_answer_only_trains_on_the_teachers_majority_answer():
  records = _diverse_records()
  pairs = ip.training_examples(records, Objective(ANSWER_ONLY, answer_source="teacher"), NUMBERS)
  # q0: "5" twice against "4"; q1: "9" and "6" tie, the first voted wins; None does not vote.
  assert [(e.id, e.answer, r) for e, r in pairs] == [("q0", "5", None), ("q1", "9", None)]
  gold = ip.training_examples(records, Objective(ANSWER_ONLY), NUMBERS)
  assert [(e.id, e.answer) for e, _ in gold] == [("q0", "4"), ("q1", "9")]


def test_teacher_answers_need_a_cache():
  example = Example("q0", "2 + 2?", (), "4")
  with pytest.raises(errors.ConfigError, match="answer_source='teacher'.*cache_dir"):
    ip.training_examples([example], Objective(ANSWER_ONLY, answer_source="teacher"), NUMBERS)
  with pytest.raises(ValueError, match="no training examples"):
    ip.training_examples([_record(example, "r", None)],
                         Objective(TWO_STAGE, answer_source="teacher"), NUMBERS)


# ---- the seeded subsample of training questions ------------------------------------------------


def _pairs(num_questions=40, per_question=2):
  return [(Example(f"q{i}", f"question {i}", (), str(i)), f"rationale {k} of {i}")
          for i in range(num_questions) for k in range(per_question)]


def test_subsample_keeps_whole_questions_and_is_a_function_of_the_seed():
  pairs = _pairs()
  eight = ip.subsample_questions(pairs, 8, seed=0)
  ids = {e.id for e, _ in eight}
  assert len(ids) == 8 and len(eight) == 16  # every rationale of a kept question
  assert eight == [p for p in pairs if p[0].id in ids]  # in the original order
  assert ip.subsample_questions(pairs, 8, seed=0) == eight
  # Neither the rows' order nor other questions' presence changes the draw among the same ids.
  reordered = ip.subsample_questions(list(reversed(pairs)), 8, seed=0)
  assert {e.id for e, _ in reordered} == ids
  # Nested: the 8 questions of a seed are among its 32.
  assert ids <= {e.id for e, _ in ip.subsample_questions(pairs, 32, seed=0)}
  assert {e.id for e, _ in ip.subsample_questions(pairs, 8, seed=1)} != ids
  assert ip.subsample_questions(pairs, 0, seed=0) == pairs
  assert len(ip.subsample_questions(pairs, 40, seed=0)) == len(pairs)
  with pytest.raises(errors.ConfigError, match="data.train_subsample=41 .* 40 questions"):
    ip.subsample_questions(pairs, 41, seed=0)


def _write_cache(path, records):
  examples = list({r.example.id: r.example for r in records}.values())
  writer = CacheWriter(path, {})
  writer.start_split("train", examples, 1)
  writer.write_shard("train", 0, records, {"kept": len(records)})
  writer.finish_split("train")
  return path


def test_training_pairs_reads_answers_and_subsample_from_the_config(tmp_path):
  task = get_task("coin_flip")
  examples = task.load("train", source="builtin", max_examples=12)
  flip = {"yes": "no", "no": "yes"}
  records = [RationaleRecord(e, f"step {k} for {e.id}", e.answer if k == 0 else flip[e.answer],
                             k == 0, k, "scripted", "zero_shot_cot")
             for e in examples for k in range(2)]
  c = config_lib.base_config()
  c.task, c.data.source, c.cache_dir = "coin_flip", "builtin", _write_cache(str(tmp_path), records)
  c.objective.name = FINE_TUNE_COT
  pairs = ip.training_pairs(c, Objective.from_config(c.objective))
  assert len(pairs) == 24 and all(e.answer == r.example.answer for (e, _), r in zip(pairs, records))
  c.objective.answer_source, c.data.train_subsample, c.seed = "teacher", 5, 3
  pairs = ip.training_pairs(c, Objective.from_config(c.objective))
  assert len({e.id for e, _ in pairs}) == 5 and len(pairs) == 10
  by_rationale = {r.rationale: r.teacher_answer for r in records}
  assert all(e.answer == by_rationale[rationale] for e, rationale in pairs)
  assert pairs == ip.subsample_questions(
      ip.training_examples(records, Objective.from_config(c.objective), task), 5, seed=3)


def test_training_pairs_write_a_number_tasks_answers_canonically(tmp_path):
  number_tasks = [name for name in list_tasks() if get_task(name).answer_type == NUMBER
                  and "builtin" not in get_task(name).sources]
  if not number_tasks:
    pytest.skip("no number task registered yet")
  task = get_task(number_tasks[0])
  examples = [Example(f"{task.name}-{i}", f"What is {i} + 0.0?", (), f"{i}.0") for i in range(3)]
  records = [RationaleRecord(e, f"{i} + 0 = {i}", str(i), True, 0, "scripted", "zero_shot_cot")
             for i, e in enumerate(examples)]
  c = config_lib.base_config()
  c.task, c.cache_dir = task.name, _write_cache(str(tmp_path), records)
  c.objective.name = FINE_TUNE_COT
  pairs = ip.training_pairs(c, Objective.from_config(c.objective))
  assert [e.answer for e, _ in pairs] == ["0", "1", "2"]


def test_stage2_student_rationales_get_the_teachers_majority_answer():
  from sciqa_jax import stage2
  records = _diverse_records()
  teacher = ip.training_examples(records, Objective(TWO_STAGE, answer_source="teacher"), NUMBERS)
  examples = stage2.answer_phase_examples(teacher)
  assert [(e.id, e.answer) for e in examples] == [("q0", "5"), ("q1", "9")]
  gold = ip.training_examples(records, Objective(TWO_STAGE), NUMBERS)
  assert [(e.id, e.answer) for e in stage2.answer_phase_examples(gold)] == [("q0", "4"),
                                                                            ("q1", "9")]
