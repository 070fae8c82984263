"""Results reporting: JSON(L) writers, the Markdown results table and the accuracy plot.

A results directory holds one table of evaluated models:

  results.jsonl  one JSON object per (name, split): name, objective, split, n, accuracy, ci_low,
                 ci_high (+ anything else the caller records: checkpoint, step, task, ...)
  results.md     the same rows as a Markdown table (also printed)
  results.png    accuracy with 95% interval bars, once at least two rows are compared

`results.jsonl` is the source of truth: `record_result` reads it, replaces the row with the same
(name, split) or appends a new one, and regenerates the other two files from it, so re-running an
evaluation updates its row instead of duplicating it. Every file is written atomically (temporary
file in the same directory + `os.replace`), so an interrupted run never leaves a half-written
table or predictions file behind.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

RESULTS_JSONL = "results.jsonl"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"
COLUMNS = ("name", "objective", "split", "n", "accuracy", "95% CI")


def _atomic_write(path: str, write, binary: bool = False) -> None:
  """Calls write(file) on a temporary file next to `path`, then renames it over `path`.

  The temporary name is unique per process and call, so concurrent writers never share one; the
  file is created with open() (not mkstemp, which forces mode 0600) so it gets the umask's mode.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
  try:
    with open(tmp, "xb") if binary else open(tmp, "x", encoding="utf-8") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> None:
  """One JSON object per line, written atomically."""

  def write(f):
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")

  _atomic_write(path, write)


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The rows of a JSONL file; [] if it does not exist. A malformed line is an error naming it."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno} is not valid JSON ({e.msg}); fix or delete the line") from e
  return rows


def write_json(path: str, obj: Any) -> None:
  """Pretty-printed JSON, written atomically."""
  _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))


def results_row(name: str, objective: str, split: str, metrics: dict[str, Any],
                **extra: Any) -> dict[str, Any]:
  """A results-table row from `EvalResult.metrics()` (accuracy, ci_low, ci_high, num_examples)."""
  return {"name": name, "objective": objective, "split": split, "n": int(metrics["num_examples"]),
          "accuracy": float(metrics["accuracy"]), "ci_low": float(metrics["ci_low"]),
          "ci_high": float(metrics["ci_high"]), **extra}


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  """`| name | objective | split | n | accuracy | 95% CI |`, accuracies in percent."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 3) + "|"]
  for row in rows:
    lines.append(
        f"| {row['name']} | {row['objective']} | {row['split']} | {row['n']} | "
        f"{100 * row['accuracy']:.1f} | [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}] |")
  return "\n".join(lines) + "\n"


def plot_accuracy(rows: Sequence[dict[str, Any]], path: str) -> None:
  """Horizontal bars of accuracy with 95% interval whiskers, one per row, written atomically."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")  # no display on servers / CI
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  labels = [f"{row['name']} ({row['split']})" for row in rows]
  acc = [100 * row["accuracy"] for row in rows]
  err = [[100 * (row["accuracy"] - row["ci_low"]) for row in rows],
         [100 * (row["ci_high"] - row["accuracy"]) for row in rows]]
  fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(rows)))
  try:
    positions = list(range(len(rows)))
    ax.barh(positions, acc, xerr=err, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()  # first row on top, like the table
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%), 95% Wilson interval")
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)
  finally:
    plt.close(fig)


def record_result(results_dir: str, row: dict[str, Any], *, echo: bool = True) -> list[dict[str, Any]]:
  """Adds (or replaces, by name and split) a row in `results_dir` and regenerates table + plot.

  Returns all rows. With `echo`, prints the Markdown table.
  """
  path = os.path.join(results_dir, RESULTS_JSONL)
  rows = [r for r in read_jsonl(path) if (r.get("name"), r.get("split")) != (row["name"],
                                                                             row["split"])]
  rows.append(row)
  write_jsonl(path, rows)
  table = markdown_table(rows)
  _atomic_write(os.path.join(results_dir, RESULTS_MD), lambda f: f.write(table))
  if len(rows) >= 2:
    plot_accuracy(rows, os.path.join(results_dir, RESULTS_PNG))
  if echo:
    print(table, flush=True)
  return rows
