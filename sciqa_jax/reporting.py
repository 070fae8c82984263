"""Reporting: JSON(L) writers, the results table and plot, training metrics, FLOPs and MFU.

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

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np

from sciqa_jax import errors

RESULTS_JSONL = "results.jsonl"
RESULTS_MD = "results.md"
RESULTS_PNG = "results.png"
COLUMNS = ("name", "objective", "task", "split", "n", "accuracy", "95% CI")


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


def write_text(path: str, text: str) -> None:
  """A text file (a Markdown table), written atomically."""
  _atomic_write(path, lambda f: f.write(text))


def write_json(path: str, obj: Any) -> None:
  """Pretty-printed JSON, written atomically."""
  _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))


def results_row(name: str, objective: str, task: str, split: str, metrics: dict[str, Any],
                **extra: Any) -> dict[str, Any]:
  """A results-table row from `EvalResult.metrics()` (accuracy, ci_low, ci_high, num_examples)."""
  return {"name": name, "objective": objective, "task": task, "split": split,
          "n": int(metrics["num_examples"]),
          "accuracy": float(metrics["accuracy"]), "ci_low": float(metrics["ci_low"]),
          "ci_high": float(metrics["ci_high"]), **extra}


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  """`| name | objective | task | split | n | accuracy | 95% CI |`, accuracies in percent."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * 3) + "|"]
  for row in rows:
    lines.append(
        f"| {row['name']} | {row['objective']} | {row.get('task', '?')} | {row['split']} | "
        f"{row['n']} | "
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


# A results row is identified by these; a second evaluation under the same identity replaces the
# row only if it evaluated the same thing (ROW_DETAILS), i.e. it is a rerun.
ROW_IDENTITY = ("name", "task", "split")
ROW_DETAILS = ("objective", "checkpoint", "step", "teacher", "llm")


def record_result(results_dir: str, row: dict[str, Any], *, echo: bool = True) -> list[dict[str, Any]]:
  """Adds a row to `results_dir` (or replaces a rerun's) and regenerates table + plot.

  A row with the name, task and split of an existing one that evaluated something else (another
  checkpoint, step, objective or teacher) is refused: its results would be lost. Returns all rows.
  With `echo`, prints the Markdown table.
  """
  path = os.path.join(results_dir, RESULTS_JSONL)
  rows = []
  for old in read_jsonl(path):
    if tuple(old.get(k) for k in ROW_IDENTITY) != tuple(row.get(k) for k in ROW_IDENTITY):
      rows.append(old)
      continue
    changed = [k for k in ROW_DETAILS if old.get(k) != row.get(k)]
    if changed:
      raise errors.RunMismatchError(
          f"{path} already has a row {row['name']!r} for {row.get('task')}/{row['split']} that "
          f"evaluated another {', '.join(changed)} ({', '.join(f'{old.get(k)!r}' for k in changed)}"
          "): pass another --name, or --results_dir")
  rows.append(row)
  write_jsonl(path, rows)
  table = markdown_table(rows)
  _atomic_write(os.path.join(results_dir, RESULTS_MD), lambda f: f.write(table))
  if len(rows) >= 2:
    plot_accuracy(rows, os.path.join(results_dir, RESULTS_PNG))
  if echo:
    print(table, flush=True)
  return rows


# ---- training metrics -------------------------------------------------------------------


# Dense bf16 peak FLOP/s per chip, matched against `device.device_kind` (first match wins). MFU is
# reported against these whatever the compute dtype; unknown devices (and CPUs) report no MFU.
PEAK_FLOPS = (
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v4", 275e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def device_peak_flops(device: jax.Device) -> float | None:
  if device.platform == "cpu":
    return None
  kind = device.device_kind.lower()
  for name, peak in PEAK_FLOPS:
    if name.lower() in kind:
      return peak
  return None


def train_flops_per_row(params: dict, streams: Sequence,
                        lengths: dict[str, tuple[int, int]]) -> float:
  """Matmul FLOPs (forward + backward = 6 per weight per token) of one row of every stream.

  `lengths[stream]` is its (input, target) padded length. Encoder weights see the input tokens,
  decoder weights and the output head the target tokens; the embedding gather and attention
  scores are left out (small at these lengths).
  """
  flops = 0.0
  for stream in streams:
    input_length, target_length = lengths[stream.name]
    p = params[stream.student]
    size = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    encoder = size(p["encoder"])
    head = size(p["lm_head"]) if "lm_head" in p else size(p["shared"])
    decoder = size(p["decoder"]) + head
    flops += 6.0 * (encoder * input_length + decoder * target_length)
  return flops


@dataclasses.dataclass
class TrainSummary:
  """What train.py prints at the end of a run (and writes to `<workdir>/summary.json`)."""

  workdir: str
  final_step: int
  final_loss: float | None
  best_step: int | None
  best_val_accuracy: float | None
  tokens_per_sec: float | None
  mfu: float | None
  train_step_compilations: int
  truncation: dict[str, str]
  exported: dict[str, str]
  resumed_from: int | None

  def describe(self) -> str:
    fmt = lambda value: "n/a" if value is None else f"{value:.4g}"
    lines = [f"workdir: {self.workdir}", f"final step: {self.final_step}",
             f"final train loss: {fmt(self.final_loss)}",
             f"best step: {self.best_step} (validation accuracy {fmt(self.best_val_accuracy)})",
             f"throughput: {fmt(self.tokens_per_sec)} tokens/s, MFU {fmt(self.mfu)}",
             f"train step compilations: {self.train_step_compilations}"]
    if self.resumed_from is not None:
      lines.append(f"resumed from step {self.resumed_from}")
    lines += [f"truncation, {text}" for text in self.truncation.values()]
    lines += [f"exported {student}: {path}" for student, path in self.exported.items()]
    return "\n".join(lines)


class Throughput:
  """Tokens/s, steps/s and MFU since the last `rates()`; a phase's first step (compiling) is not
  timed."""

  def __init__(self):
    self.start, self.tokens, self.steps = None, 0, 0

  def add_tokens(self, count: int) -> None:
    self.tokens += count

  def step(self, metrics) -> None:
    """Call after dispatching each step with its (device) metrics."""
    if self.start is None:
      jax.block_until_ready(metrics)
      self.start, self.tokens, self.steps = time.perf_counter(), 0, 0
    else:
      self.steps += 1

  def rates(self, flops_per_step: float, peak_flops: float | None) -> dict[str, float]:
    elapsed = time.perf_counter() - self.start
    out = {}
    if self.steps and elapsed > 0:
      out["tokens_per_sec"] = self.tokens / elapsed
      out["steps_per_sec"] = self.steps / elapsed
      if peak_flops is not None:
        out["mfu"] = flops_per_step * self.steps / elapsed / (peak_flops * jax.device_count())
    self.start, self.tokens, self.steps = time.perf_counter(), 0, 0
    return out


def metrics_to_json(interval: list[dict]) -> list[dict]:
  """Step metrics as JSON, with their dtypes, so a restored mean is computed exactly as before."""
  return [{k: [np.asarray(v).dtype.str, np.asarray(v).item()] for k, v in m.items()}
          for m in interval]


def metrics_from_json(rows: list[dict]) -> list[dict]:
  """The inverse of `metrics_to_json`: numpy scalars of the original dtypes."""
  return [{k: np.asarray(v, dtype=dtype) for k, (dtype, v) in m.items()} for m in rows]


class MetricWriter:
  """`<workdir>/metrics.jsonl` and TensorBoard; writes nothing on processes other than 0."""

  def __init__(self, workdir: str, enabled: bool, *, resume_step: int | None):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    if os.path.exists(self.path):
      # A resumed run replays the steps after its checkpoint: drop their old lines.
      with open(self.path) as f:
        kept = [line for line in f
                if resume_step is not None and json.loads(line)["step"] <= resume_step]
      _atomic_write(self.path, lambda f: f.writelines(kept))
    # Imported on use: TensorFlow's start-up costs seconds, and only the writer process needs it.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
    self._tf = tf
    # tf.summary.scalar lives in the tensorboard package (not a dependency); the core
    # tf.summary.write with the scalars plugin's metadata writes the same event records.
    self._metadata = summary_pb2.SummaryMetadata(data_class=summary_pb2.DATA_CLASS_SCALAR)
    self._metadata.plugin_data.plugin_name = "scalars"
    self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    with self._tb.as_default(step=int(step)):
      for key, value in metrics.items():
        self._tf.summary.write(f"{split}/{key}", self._tf.constant(float(value), self._tf.float32),
                               metadata=self._metadata)
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
