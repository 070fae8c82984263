"""Results reporting: atomic JSONL, the Markdown table, the plot, replace-or-append semantics."""

import json
import os

import pytest

from sciqa_jax import errors
from sciqa_jax import reporting


def _metrics(correct, n, low, high):
  return {"accuracy": correct / n, "ci_low": low, "ci_high": high, "num_examples": n}


def test_write_jsonl_roundtrip_and_atomic(tmp_path, monkeypatch):
  path = str(tmp_path / "sub" / "rows.jsonl")
  rows = [{"id": "a", "text": "ünïcode"}, {"id": "b", "scores": [1.5, -2.0]}]
  reporting.write_jsonl(path, rows)
  assert reporting.read_jsonl(path) == rows

  # A failure mid-write leaves the previous file intact and no temporary file behind.
  def boom():
    yield {"id": "c"}
    raise RuntimeError("interrupted")

  with pytest.raises(RuntimeError):
    reporting.write_jsonl(path, boom())
  assert reporting.read_jsonl(path) == rows
  assert os.listdir(tmp_path / "sub") == ["rows.jsonl"]


def test_read_jsonl_names_bad_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"ok": 1}\n{not json\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2"):
    reporting.read_jsonl(str(path))
  assert reporting.read_jsonl(str(tmp_path / "missing.jsonl")) == []


def test_markdown_table_rows_and_formatting():
  row = reporting.results_row("two_stage", "two_stage", "arc_easy", "test",
                              _metrics(3, 4, 0.3006, 0.9544))
  table = reporting.markdown_table([row])
  lines = table.strip().splitlines()
  assert lines[0] == "| name | objective | task | split | n | accuracy | 95% CI |"
  assert lines[2] == "| two_stage | two_stage | arc_easy | test | 4 | 75.0 | [30.1, 95.4] |"


def test_record_result_replaces_a_rerun_of_the_same_name_task_and_split(tmp_path, capsys):
  d = str(tmp_path)
  reporting.record_result(d, reporting.results_row("a", "answer_only", "sciq", "test",
                                                   _metrics(1, 2, 0.1, 0.9)))
  assert not (tmp_path / reporting.RESULTS_PNG).exists()  # one model: nothing to compare
  reporting.record_result(d, reporting.results_row("b", "two_stage", "sciq", "test",
                                                   _metrics(2, 2, 0.3, 1.0)))
  rows = reporting.record_result(d, reporting.results_row("a", "answer_only", "sciq", "test",
                                                          _metrics(0, 2, 0.0, 0.6)))
  assert [(r["name"], r["accuracy"]) for r in rows] == [("b", 1.0), ("a", 0.0)]
  stored = [json.loads(l) for l in (tmp_path / reporting.RESULTS_JSONL).read_text().splitlines()]
  assert stored == rows
  table = (tmp_path / reporting.RESULTS_MD).read_text()
  assert table.count("| a |") == 1 and "| b |" in table
  assert table in capsys.readouterr().out
  png = (tmp_path / reporting.RESULTS_PNG).read_bytes()
  assert png.startswith(b"\x89PNG")


def test_record_result_keeps_other_tasks_and_refuses_to_replace_another_checkpoint(tmp_path):
  d = str(tmp_path)
  first = reporting.results_row("two_stage", "two_stage", "arc_easy", "test",
                                _metrics(1, 2, 0.1, 0.9), checkpoint="/runs/a", step=100)
  reporting.record_result(d, first, echo=False)
  # The same name on another task is another row, and the table says which task each is.
  other_task = dict(first, task="arc_challenge")
  rows = reporting.record_result(d, other_task, echo=False)
  assert [(r["name"], r["task"]) for r in rows] == [("two_stage", "arc_easy"),
                                                    ("two_stage", "arc_challenge")]
  assert "| arc_challenge |" in (tmp_path / reporting.RESULTS_MD).read_text()
  # The same name, task and split for another checkpoint or step would lose a result: refused.
  before = (tmp_path / reporting.RESULTS_JSONL).read_text()
  for changed in ({"checkpoint": "/runs/b"}, {"step": 200}):
    with pytest.raises(errors.RunMismatchError, match="another --name"):
      reporting.record_result(d, dict(first, **changed), echo=False)
  assert (tmp_path / reporting.RESULTS_JSONL).read_text() == before
