"""sciqa_jax.comparison: the tasks x methods table from evaluate.py's outputs, and the exact McNemar
test between two methods on the same questions."""

import math
import os
import subprocess
import sys

import pytest

from sciqa_jax import comparison
from sciqa_jax import errors
from sciqa_jax import reporting
from sciqa_jax import statistics

# ---- exact McNemar ------------------------------------------------------------------------------


@pytest.mark.parametrize("only_a,only_b,expected", [
    (0, 0, 1.0),  # no discordant question: no evidence of a difference
    (5, 5, 1.0),
    (2, 3, 1.0),  # 2 * (1 + 5 + 10) / 32 = 1
    (0, 1, 1.0),
    (10, 0, 2 / 1024),
    (0, 10, 2 / 1024),
    (0, 5, 2 / 32),
    (1, 9, 2 * (1 + 10) / 1024),
    (3, 7, 2 * (1 + 10 + 45 + 120) / 1024),
    (5, 1, 2 * (1 + 6) / 64),
])
def test_mcnemar_exact_known_values(only_a, only_b, expected):
  assert statistics.mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_matches_the_binomial_test():
  scipy_stats = pytest.importorskip("scipy.stats")
  for only_a, only_b in [(1, 2), (4, 11), (30, 45), (120, 80), (400, 500), (7, 7), (0, 60)]:
    expected = scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert statistics.mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_exact_large_counts_and_bad_counts():
  # Exact integers: no underflow where 0.5 ** n would be 0 in floating point.
  p = statistics.mcnemar_exact(700, 1400)
  assert 0 < p < 1e-40
  assert math.isclose(statistics.mcnemar_exact(1400, 700), p)
  with pytest.raises(ValueError, match="discordant"):
    statistics.mcnemar_exact(-1, 3)


def test_majority_vote_groups_answers_the_comparison_rule_calls_equal():
  same = lambda a, b: float(a) == float(b)
  answers, scores = ["43.0", "43", "44"], [-5.0, -5.0, -0.1]
  assert statistics.majority_vote(answers, scores) == "44"  # as strings: three one-vote answers
  assert statistics.majority_vote(answers, scores, same) == "43.0"  # as numbers: 43 has two
  assert statistics.majority_vote([None, "7", "7.0"], [0.0, 0.0, 0.0], same) == "7"


# ---- fixtures: evaluate.py's outputs ------------------------------------------------------------

MULTIARITH = [f"m{i}" for i in range(10)]
FT_COT = [1, 1, 1, 1, 1, 1, 1, 0, 0, 1]  # 8/10
ANSWER_ONLY = [1, 0, 0, 0, 1, 0, 1, 0, 1, 0]  # 4/10: right only by fine_tune_cot 5, only by it 1
TEACHER = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]


def _evaluate(results_dir, name, task, ids, correct, *, split="test", checkpoint=True,
              objective=None):
  """What evaluate.py writes: predictions.jsonl (under the checkpoint, or the results dir for a
  teacher) and a row in <results_dir>/results.jsonl."""
  rows = [{"id": i, "question": f"question {i}", "prediction": "1", "gold": "1", "correct": bool(c)}
          for i, c in zip(ids, correct)]
  result = statistics.result_from_predictions(rows, len(rows))
  extra = {}
  if checkpoint:
    run = os.path.join(results_dir, name)
    extra = {"checkpoint": os.path.abspath(run), "step": 100}
    out = os.path.join(run, "eval", task, split, name)
  else:
    extra = {"teacher": "scripted"}
    out = os.path.join(results_dir, "eval", task, split, name)
  reporting.write_jsonl(os.path.join(out, "predictions.jsonl"), rows)
  path = os.path.join(results_dir, reporting.RESULTS_JSONL)
  old = reporting.read_jsonl(path)
  row = reporting.results_row(name, objective or name, task, split, result.metrics(), **extra)
  reporting.write_jsonl(path, old + [row])
  return row


@pytest.fixture
def runs(tmp_path):
  root = tmp_path / "runs"
  gsm8k, multiarith = str(root / "gsm8k"), str(root / "multiarith")
  _evaluate(gsm8k, "fine_tune_cot", "gsm8k", ["g0", "g1", "g2", "g3"], [1, 0, 1, 0])
  _evaluate(multiarith, "fine_tune_cot", "multiarith", MULTIARITH, FT_COT)
  _evaluate(multiarith, "answer_only", "multiarith", MULTIARITH, ANSWER_ONLY)
  _evaluate(multiarith, "teacher", "multiarith", MULTIARITH, TEACHER, checkpoint=False,
            objective="teacher:http")
  _evaluate(multiarith, "answer_only", "multiarith", ["v0", "v1"], [1, 1], split="validation")
  return str(root)


def _cell(k, n):
  low, high = statistics.wilson_interval(k, n)
  return f"{100 * k / n:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


# ---- the table ----------------------------------------------------------------------------------


def test_results_table_has_methods_as_rows_and_tasks_as_columns(runs):
  results = comparison.load_results(runs)
  assert len(results) == 5
  table = comparison.results_table(results, "test")
  assert table.splitlines() == [
      "Accuracy (%) on the test split, 95% Wilson intervals.",
      "",
      "| method | multiarith | gsm8k |",  # Fine-tune-CoT's task order
      "|---|---:|---:|",
      f"| fine_tune_cot | {_cell(8, 10)} | {_cell(2, 4)} |",
      f"| answer_only | {_cell(4, 10)} | – |",
      f"| teacher | {_cell(9, 10)} | – |",
      "| n | 10 | 4 |",
  ]
  validation = comparison.results_table(results, "validation")
  assert f"| answer_only | {_cell(2, 2)} |" in validation
  with pytest.raises(errors.DataError, match="no results on split 'dev'.*test, validation"):
    comparison.results_table(results, "dev")


def test_one_evaluation_recorded_twice_counts_once_two_under_one_name_are_refused(runs):
  elsewhere = os.path.join(runs, "copy")
  row = reporting.read_jsonl(os.path.join(runs, "multiarith", reporting.RESULTS_JSONL))[0]
  reporting.write_jsonl(os.path.join(elsewhere, reporting.RESULTS_JSONL), [row])
  assert len(comparison.load_results(runs)) == 5
  reporting.write_jsonl(os.path.join(elsewhere, reporting.RESULTS_JSONL),
                        [{**row, "accuracy": 0.1, "checkpoint": "/other/run"}])
  with pytest.raises(errors.RunMismatchError, match="'fine_tune_cot' on multiarith/test"):
    comparison.load_results(runs)


def test_empty_or_missing_results_dir(tmp_path):
  with pytest.raises(errors.MissingFileError, match="not a directory"):
    comparison.load_results(str(tmp_path / "nowhere"))
  with pytest.raises(errors.MissingFileError, match="no results.jsonl"):
    comparison.load_results(str(tmp_path))
  (tmp_path / reporting.RESULTS_JSONL).write_text('{"name": "x"}\n')
  with pytest.raises(errors.CorruptFileError, match="row 1 has no task"):
    comparison.load_results(str(tmp_path))


# ---- paired tests -------------------------------------------------------------------------------


def test_paired_test_counts_discordant_questions(runs):
  results = comparison.load_results(runs)
  tests, unpaired = comparison.paired_tests(results, "test", "fine_tune_cot", "answer_only")
  (test,) = tests
  assert (test.task, test.n, test.correct_a, test.correct_b) == ("multiarith", 10, 8, 4)
  assert (test.only_a, test.only_b) == (5, 1)
  assert test.p_value == pytest.approx(2 * (1 + 6) / 64)
  assert unpaired == ["gsm8k"]
  table = comparison.paired_table(tests, unpaired)
  assert "| multiarith | 10 | 80.0 | 40.0 | 5 | 1 | 0.219 |" in table
  assert "Not paired (results of one of them only): gsm8k." in table
  # A teacher row's predictions live under the results directory.
  (teacher,), _ = comparison.paired_tests(results, "test", "teacher", "answer_only")
  assert (teacher.only_a, teacher.only_b) == (5, 0) and teacher.p_value == pytest.approx(2 / 32)


def test_predictions_on_other_questions_are_refused_naming_them(runs):
  multiarith = os.path.join(runs, "multiarith")
  path = os.path.join(multiarith, "answer_only", "eval", "multiarith", "test", "answer_only",
                      "predictions.jsonl")
  rows = reporting.read_jsonl(path)
  reporting.write_jsonl(path, rows[:8] + [{**rows[8], "id": "x9"}])
  results = comparison.load_results(runs)
  with pytest.raises(errors.DataError) as info:
    comparison.paired_tests(results, "test", "fine_tune_cot", "answer_only")
  message = str(info.value)
  assert "'answer_only' lacks 2 question(s) ('m8', 'm9')" in message
  assert "'fine_tune_cot' lacks 1 question(s) ('x9')" in message and "\n" not in message


def test_missing_predictions_and_a_moved_runs_directory(runs, tmp_path):
  moved = str(tmp_path / "moved")
  os.rename(runs, moved)  # rows still name the old absolute checkpoints
  results = comparison.load_results(moved)
  (test,), _ = comparison.paired_tests(results, "test", "fine_tune_cot", "answer_only")
  assert (test.only_a, test.only_b) == (5, 1)
  os.remove(os.path.join(moved, "multiarith", "answer_only", "eval", "multiarith", "test",
                         "answer_only", "predictions.jsonl"))
  with pytest.raises(errors.MissingFileError, match="predictions of 'answer_only' on multiarith"):
    comparison.paired_tests(results, "test", "fine_tune_cot", "answer_only")


def test_pair_names_must_exist_and_share_a_task(runs):
  results = comparison.load_results(runs)
  with pytest.raises(errors.DataError, match="no results named 'two_stage'.*answer_only"):
    comparison.paired_tests(results, "test", "fine_tune_cot", "two_stage")
  _evaluate(os.path.join(runs, "gsm8k"), "zero_shot", "gsm8k", ["g0", "g1", "g2", "g3"],
            [0, 0, 0, 0], checkpoint=False)
  with pytest.raises(errors.DataError, match="no task in common"):
    comparison.paired_tests(comparison.load_results(runs), "test", "zero_shot", "answer_only")
  for bad in ("fine_tune_cot", "a,a", "a,b,c", ",b"):
    with pytest.raises(errors.ConfigError, match="--pair"):
      comparison.compare(runs, pairs=[bad])


def test_compare_joins_the_table_and_each_pair(runs):
  text = comparison.compare(runs, pairs=["fine_tune_cot,answer_only", "teacher,fine_tune_cot"])
  assert text.startswith("Accuracy (%) on the test split")
  assert "fine_tune_cot vs answer_only: paired" in text and "teacher vs fine_tune_cot" in text


@pytest.mark.slow
def test_command_line_prints_and_writes_comparison_md(runs):
  command = [sys.executable, "-m", "sciqa_jax.comparison", f"--results_dir={runs}",
             "--pair=fine_tune_cot,answer_only"]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  with open(os.path.join(runs, comparison.COMPARISON_MD), encoding="utf-8") as f:
    assert f.read() == done.stdout == comparison.compare(runs, pairs=["fine_tune_cot,answer_only"])
  done = subprocess.run(command[:-1] + ["--pair=fine_tune_cot,two_stage"], capture_output=True,
                        text=True, check=False)
  assert done.returncode == 2
  assert done.stderr.strip().startswith("comparison.py: error: --pair: no results named")
  assert len(done.stderr.strip().splitlines()) == 1
