"""Tasks x methods: Fine-tune-CoT's main-table layout built from evaluate.py's outputs, with paired
tests between methods.

  python -m sciqa_jax.comparison --results_dir runs/ [--split test] [--pair two_stage,answer_only]

Reads every `results.jsonl` under `--results_dir` (one per results directory: evaluate.py's
`--results_dir`, by default a checkpoint's parent), so one call covers runs kept per task
(`runs/multiarith/`, `runs/gsm8k/`, ...). A method is a results row's name (evaluate.py's
`--name`), a column a task; each cell is the accuracy with its 95% Wilson interval, in percent.
Prints the Markdown and writes it to `<results_dir>/comparison.md` (atomically).

Why a paired test: two methods scored on the same test questions are not independent samples, so
overlapping Wilson intervals say little about their difference (the demo's two-stage 38.6
[34.4, 42.9] against answer-only 31.0 [27.1, 35.2] is such a case). `--pair a,b` compares them
question by question from their `predictions.jsonl`: the exact McNemar test
(`statistics.mcnemar_exact`) on the discordant questions (right for one method, wrong for the
other), reported with both counts and the two-sided p-value, per task. Predictions on different
questions (another split, another eval.max_examples, another data version) are refused, naming
the ids one side lacks: a paired test over unmatched questions would compare nothing.

Where predictions are: a student's row names its checkpoint, whose
`eval/<task>/<split>/<name>/predictions.jsonl` evaluate.py wrote; a teacher's row has none and
its files are under the results directory (`<results_dir>/eval/<task>/<split>/<name>/`). A runs
directory moved since evaluation is found by the checkpoint's name under the results directory.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

from sciqa_jax import errors
from sciqa_jax import reporting
from sciqa_jax import statistics

COMPARISON_MD = "comparison.md"
REQUIRED_KEYS = ("name", "task", "split", "n", "accuracy", "ci_low", "ci_high")
# Directories that never hold a results.jsonl: not walked (checkpoints can hold many files).
_SKIPPED_DIRS = {"checkpoints", "tensorboard", "cache", "eval", "export", "tokenizer"}
# A results row that describes the same evaluation as another agrees on these.
_SAME_EVALUATION = ("objective", "n", "accuracy", "checkpoint", "step", "teacher")
MISSING = "–"


@dataclasses.dataclass(frozen=True)
class Result:
  """One results row (evaluate.py's), with the results.jsonl it was read from."""

  row: dict[str, Any]
  source: str

  @property
  def name(self) -> str:
    return str(self.row["name"])

  @property
  def task(self) -> str:
    return canonical_task(str(self.row["task"]))

  @property
  def split(self) -> str:
    return str(self.row["split"])

  def predictions_candidates(self) -> list[str]:
    """Where evaluate.py wrote this row's predictions.jsonl, most likely first."""
    tail = ("eval", str(self.row["task"]), self.split, self.name, "predictions.jsonl")
    here = os.path.dirname(self.source)
    checkpoint = self.row.get("checkpoint")
    if not checkpoint:
      return [os.path.join(here, *tail)]
    return [os.path.join(checkpoint, *tail),
            os.path.join(here, os.path.basename(os.path.normpath(checkpoint)), *tail)]


def canonical_task(name: str) -> str:
  """The registry's key for a task name (an alias such as `strategyqa` reads as its key); an
  unregistered name (results of a task since removed) is kept as written."""
  from sciqa_jax.data import registry  # pylint: disable=g-import-not-at-top

  try:
    return registry.get_task(name).name
  except errors.UserError:
    return name


# ---- reading results ------------------------------------------------------------------------


def results_files(results_dir: str) -> list[str]:
  """Every results.jsonl under `results_dir`, in sorted path order."""
  if not os.path.isdir(results_dir):
    raise errors.MissingFileError(f"--results_dir={results_dir} is not a directory")
  found = []
  for root, dirs, files in os.walk(results_dir):
    dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
    if reporting.RESULTS_JSONL in files:
      found.append(os.path.join(root, reporting.RESULTS_JSONL))
  return sorted(found)


def _read_rows(path: str) -> list[dict[str, Any]]:
  try:
    rows = reporting.read_jsonl(path)
  except ValueError as e:
    raise errors.CorruptFileError(str(e)) from None
  for i, row in enumerate(rows, 1):
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
      raise errors.CorruptFileError(f"{path}: row {i} has no {', '.join(missing)}: not a "
                                    "results row of evaluate.py")
  return rows


def load_results(results_dir: str) -> list[Result]:
  """The results rows under `results_dir`, one per (name, task, split).

  The same row in two files (one evaluation recorded twice) counts once; two different
  evaluations under one (name, task, split) are an error naming both files, since a table cell
  can hold only one of them.
  """
  paths = results_files(results_dir)
  if not paths:
    raise errors.MissingFileError(f"no {reporting.RESULTS_JSONL} under {results_dir}: run "
                                  "evaluate.py with --results_dir there first")
  kept: dict[tuple[str, str, str], Result] = {}
  for path in paths:
    for row in _read_rows(path):
      result = Result(row, path)
      key = (result.name, result.task, result.split)
      other = kept.get(key)
      if other is None:
        kept[key] = result
      elif any(other.row.get(k) != row.get(k) for k in _SAME_EVALUATION):
        raise errors.RunMismatchError(
            f"two different evaluations are named {result.name!r} on {result.task}/"
            f"{result.split}: in {other.source} and {path}; give one another evaluate.py --name "
            "or compare the directories separately")
  return list(kept.values())


def task_order(tasks: Iterable[str]) -> list[str]:
  """Fine-tune-CoT's task order first (its table's), then any other task alphabetically."""
  from sciqa_jax.data import registry  # pylint: disable=g-import-not-at-top

  tasks = set(tasks)
  paper = [t for t in getattr(registry, "FINE_TUNE_COT_TASKS", ()) if t in tasks]
  return paper + sorted(tasks - set(paper))


def _on_split(results: Sequence[Result], split: str) -> list[Result]:
  chosen = [r for r in results if r.split == split]
  if not chosen:
    splits = sorted({r.split for r in results})
    raise errors.DataError(f"no results on split {split!r}; the results are on "
                           f"{', '.join(splits)}: pass --split")
  return chosen


# ---- the table ------------------------------------------------------------------------------


def _percent(row: dict[str, Any]) -> str:
  return (f"{100 * row['accuracy']:.1f} [{100 * row['ci_low']:.1f}, "
          f"{100 * row['ci_high']:.1f}]")


def results_table(results: Sequence[Result], split: str) -> str:
  """Markdown: a row per method (name, in first-seen order), a column per task, cells accuracy %
  [95% Wilson interval]; a last row gives each column's question count (several when methods
  were scored on different numbers of questions)."""
  results = _on_split(results, split)
  tasks = task_order(r.task for r in results)
  methods = list(dict.fromkeys(r.name for r in results))
  cells = {(r.name, r.task): r.row for r in results}
  lines = [f"Accuracy (%) on the {split} split, 95% Wilson intervals.", "",
           "| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
  for method in methods:
    values = [_percent(cells[method, t]) if (method, t) in cells else MISSING for t in tasks]
    lines.append(f"| {method} | " + " | ".join(values) + " |")
  counts = []
  for t in tasks:
    ns = sorted({int(r.row["n"]) for r in results if r.task == t})
    counts.append("/".join(str(n) for n in ns))
  lines.append("| n | " + " | ".join(counts) + " |")
  return "\n".join(lines) + "\n"


# ---- paired tests ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PairedTest:
  """Two methods on the same questions: accuracies, discordant counts and the exact McNemar
  p-value (two-sided)."""

  task: str
  a: str
  b: str
  n: int
  correct_a: int
  correct_b: int
  only_a: int  # questions A answered correctly and B did not
  only_b: int
  p_value: float


def read_correct(path: str) -> dict[str, bool]:
  """{question id: correct} of a predictions.jsonl; a repeated id is an error (each question is
  scored once)."""
  try:
    rows = reporting.read_jsonl(path)
  except ValueError as e:
    raise errors.CorruptFileError(str(e)) from None
  correct: dict[str, bool] = {}
  for i, row in enumerate(rows, 1):
    if "id" not in row or "correct" not in row:
      raise errors.CorruptFileError(f"{path}: row {i} has no id or correct field: not a "
                                    "predictions file of evaluate.py")
    if str(row["id"]) in correct:
      raise errors.CorruptFileError(f"{path}: question id {row['id']!r} is scored twice")
    correct[str(row["id"])] = bool(row["correct"])
  return correct


def _predictions(result: Result) -> dict[str, bool]:
  candidates = result.predictions_candidates()
  for path in candidates:
    if os.path.exists(path):
      return read_correct(path)
  raise errors.MissingFileError(
      f"the predictions of {result.name!r} on {result.task}/{result.split} (row of "
      f"{result.source}) are not at {' nor '.join(candidates)}")


def _ids(ids: Iterable[str], limit: int = 5) -> str:
  ids = sorted(ids)
  shown = ", ".join(repr(i) for i in ids[:limit])
  return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def paired_test(a: dict[str, bool], b: dict[str, bool], *, task: str, names: tuple[str, str]
                ) -> PairedTest:
  """The exact McNemar test of two methods' {id: correct}; refuses unmatched question sets."""
  name_a, name_b = names
  if set(a) != set(b):
    problems = []
    for name, lacking in ((name_a, set(b) - set(a)), (name_b, set(a) - set(b))):
      if lacking:
        problems.append(f"{name!r} lacks {len(lacking)} question(s) ({_ids(lacking)})")
    raise errors.DataError(
        f"cannot pair {name_a!r} and {name_b!r} on {task}: they were scored on different "
        f"questions: {'; '.join(problems)}; evaluate both on the same split, data and "
        "eval.max_examples")
  only_a = sum(a[i] and not b[i] for i in a)
  only_b = sum(b[i] and not a[i] for i in a)
  return PairedTest(task=task, a=name_a, b=name_b, n=len(a), correct_a=sum(a.values()),
                    correct_b=sum(b.values()), only_a=only_a, only_b=only_b,
                    p_value=statistics.mcnemar_exact(only_a, only_b))


def paired_tests(results: Sequence[Result], split: str, a: str, b: str
                 ) -> tuple[list[PairedTest], list[str]]:
  """Per task with results of both `a` and `b` on `split`, their paired test; and the tasks that
  have only one of them. Neither name, or no task with both, is an error."""
  results = _on_split(results, split)
  by_method: dict[str, dict[str, Result]] = collections.defaultdict(dict)
  for r in results:
    by_method[r.name][r.task] = r
  for name in (a, b):
    if name not in by_method:
      raise errors.DataError(f"--pair: no results named {name!r} on split {split!r}; the "
                             f"methods are {', '.join(sorted(by_method))}")
  shared = [t for t in task_order(by_method[a]) if t in by_method[b]]
  if not shared:
    raise errors.DataError(f"--pair: {a!r} and {b!r} have no task in common on split {split!r}")
  unpaired = [t for t in task_order(set(by_method[a]) | set(by_method[b])) if t not in shared]
  tests = [paired_test(_predictions(by_method[a][t]), _predictions(by_method[b][t]), task=t,
                       names=(a, b)) for t in shared]
  return tests, unpaired


def format_p(p: float) -> str:
  return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def paired_table(tests: Sequence[PairedTest], unpaired: Sequence[str]) -> str:
  """Markdown: per task, n, both accuracies (%), the discordant counts and the p-value."""
  a, b = tests[0].a, tests[0].b
  lines = [f"{a} vs {b}: paired on the same questions, exact McNemar test (two-sided).", "",
           f"| task | n | {a} | {b} | right only by {a} | right only by {b} | p |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for t in tests:
    lines.append(f"| {t.task} | {t.n} | {100 * t.correct_a / t.n:.1f} | "
                 f"{100 * t.correct_b / t.n:.1f} | {t.only_a} | {t.only_b} | "
                 f"{format_p(t.p_value)} |")
  if unpaired:
    lines += ["", f"Not paired (results of one of them only): {', '.join(unpaired)}."]
  return "\n".join(lines) + "\n"


def _parse_pair(text: str) -> tuple[str, str]:
  names = [n.strip() for n in text.split(",")]
  if len(names) != 2 or not all(names) or names[0] == names[1]:
    raise errors.ConfigError(f"--pair={text!r}: expected two different method names, a,b")
  return names[0], names[1]


def compare(results_dir: str, *, split: str = "test", pairs: Sequence[str] = ()) -> str:
  """The Markdown of the table and of each `--pair a,b` (see the module docstring)."""
  pairs = [_parse_pair(p) for p in pairs]  # a malformed --pair fails before any reading
  results = load_results(results_dir)
  parts = [results_table(results, split)]
  for a, b in pairs:
    parts.append(paired_table(*paired_tests(results, split, a, b)))
  return "\n".join(parts)


def main(argv: Sequence[str]) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top

  if len(argv) > 1:
    raise errors.ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
  values = flags.FLAGS
  text = compare(values.results_dir, split=values.split, pairs=values.pair or ())
  print(text, end="", flush=True)
  reporting.write_text(os.path.join(values.results_dir, COMPARISON_MD), text)


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("results_dir", None, "Directory searched for results.jsonl files "
                      "(recursively); comparison.md is written there.", required=True)
  flags.DEFINE_string("split", "test", "The split whose results are compared.")
  flags.DEFINE_multi_string("pair", [], "a,b: a paired test of methods a and b per task "
                            "(repeatable).")


if __name__ == "__main__":
  from sciqa_jax import cli  # pylint: disable=g-import-not-at-top

  _define_flags()
  cli.run(main)
