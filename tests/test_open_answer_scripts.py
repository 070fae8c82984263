"""generate.py -> train.py -> evaluate.py as subprocesses on open-answer tasks: a numeric task
(GSM8K's release files, written here) and a text task (last-letter concatenation, built in).

Tiny students trained for a few steps score near zero; what is checked is the path: the scripts
accept the tasks, the answers are generated and parsed (never rank-classified), and the results
carry the task.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from sciqa_jax.data.answers import parse_number

REPO = pathlib.Path(__file__).resolve().parents[1]

CONFIG = """
from sciqa_jax.config import base_config

def get_config():
  c = base_config()
  c.task = {task!r}
  c.data.source, c.data.path = {source!r}, {path!r}
  c.data.max_examples = {max_examples}
  c.cache_dir = {cache!r}
  c.teacher.backend, c.teacher.error_rate = "template", 0.0
  c.objective.name = {objective!r}
  m = c.model
  m.d_model, m.d_kv, m.d_ff, m.num_heads, m.num_layers, m.num_decoder_layers = 32, 16, 64, 2, 1, 1
  m.tokenizer_vocab_size, m.dropout_rate = 200, 0.0
  t = c.train
  t.steps, t.batch_size, t.max_input_length, t.max_target_length = 6, 8, "auto", "auto"
  t.log_every, t.checkpoint_every, t.export_hf = 3, 6, False
  c.eval.batch_size, c.eval.max_rationale_length, c.eval.max_answer_length = 8, 12, 6
  return c
"""


def _write_gsm8k(root: pathlib.Path) -> None:
  root.mkdir()
  for split, count, offset in (("train", 40, 0), ("test", 6, 1000)):
    rows = []
    for i in range(count):
      a, b = i + offset + 2, (i % 7) + 3
      rows.append({"question": f"Ann has {a} apples and buys {b} more. How many apples now?",
                   "answer": f"Ann has {a} apples.\nShe buys {b} more: {a} + {b} = <<{a}+{b}="
                             f"{a + b}>>{a + b}.\n#### {a + b:,}"})
    (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(script, config, *args):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run([sys.executable, str(REPO / script), "--config", str(config),
                           "--noprogress", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


@pytest.mark.slow
@pytest.mark.parametrize("task, objective", [("gsm8k", "fine_tune_cot"),
                                             ("last_letter_concatenation", "two_stage")])
def test_open_answer_task_through_the_scripts(tmp_path, task, objective):
  if task == "gsm8k":
    _write_gsm8k(tmp_path / "gsm8k")
    source, path, max_examples = "local", str(tmp_path / "gsm8k"), 0
  else:
    source, path, max_examples = "builtin", "", 40
  config = tmp_path / "config.py"
  config.write_text(textwrap.dedent(CONFIG.format(
      task=task, source=source, path=path, max_examples=max_examples,
      cache=str(tmp_path / "cache"), objective=objective)))
  _run("generate.py", config)
  workdir = tmp_path / "run"
  _run("train.py", config, "--workdir", str(workdir))
  _run("evaluate.py", config, "--checkpoint", str(workdir), "--split", "test", "--name", "tiny")

  out = workdir / "eval" / task / "test" / "tiny"
  predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
  metrics = json.loads((out / "metrics.json").read_text())
  assert len(predictions) == metrics["num_examples"] > 0
  for row in predictions:
    assert "generations" in row and "scores" in row  # generated, not rank-classified
    if task == "gsm8k":
      assert row["gold"] == str(int(row["gold"]))  # "1,021" was read as 1021
      assert row["prediction"] is None or parse_number(row["prediction"]) == row["prediction"]
    assert row["correct"] == (row["prediction"] == row["gold"])
  (result,) = [json.loads(line) for line in (workdir.parent / "results.jsonl").read_text()
               .splitlines()]
  assert (result["task"], result["objective"], result["n"]) == (task, objective, len(predictions))
