"""The README's real-distillation commands (ARC-Easy, hub teacher, Flan-T5-small student), offline.

The three commands run as the README writes them, with the configs it names
(`configs/generate_arc_easy.py`, `configs/sci_cot_arc_easy_flan_t5_small.py`), plus overrides that
put files this test writes where the hub would be: ARC-Easy JSONL in the AI2 schema
(`data.source=local`), and one tiny random T5 with a tokenizer, saved as a Hugging Face directory,
standing in for the teacher (`google/flan-t5-xl`) and for the pretrained students and their
tokenizer (`google/flan-t5-small`). Sizes and step counts are overridden down to a smoke test. A
random teacher is rarely right, so its rationales are all kept (`teacher.keep=all`); everything else
(the hf teacher backend, pretrained init, bf16 activations, two students, export) is the configs'
own.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import FAST_COMPILE_XLA_FLAGS
from tests.fixtures import make_tiny_t5_dir

REPO = pathlib.Path(__file__).resolve().parents[1]
STEMS = ["Which is a liquid?", "What melts ice?", "Which is a gas at room temperature?",
         "Which object is the hardest?"]


def _write_arc_easy(data_dir: pathlib.Path, split_file: str, count: int, offset: int) -> None:
  rows = []
  for i in range(count):
    labels = ["A", "B", "C", "D"] if i % 2 else ["1", "2", "3", "4"]  # both AI2 label styles
    rows.append({"id": f"{split_file}-{i + offset}",
                 # Each split asks its own questions: splits that share one are refused.
                 "question": {"stem": f"{STEMS[i % len(STEMS)]} (item {i + offset})",
                              "choices": [{"text": text, "label": label} for text, label
                                          in zip(["ice", "water", "steam", "rock"], labels)]},
                 "answerKey": labels[(i + offset) % 4]})
  path = data_dir / f"ARC-Easy-{split_file}.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(args, env):
  result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_readme_real_distillation_commands_run_offline(tmp_path):
  data_dir = tmp_path / "arc"
  data_dir.mkdir()
  for split_file, count, offset in (("Train", 8, 0), ("Dev", 4, 100), ("Test", 5, 200)):
    _write_arc_easy(data_dir, split_file, count, offset)
  hub_model, _ = make_tiny_t5_dir(tmp_path / "hub_t5", tokenizer=True)
  cache, workdir = tmp_path / "runs" / "cache", tmp_path / "runs" / "two_stage"
  env = dict(os.environ, XLA_FLAGS=FAST_COMPILE_XLA_FLAGS)
  data = ["--config.data.source=local", f"--config.data.path={data_dir}",
          f"--config.cache_dir={cache}"]
  student = [f"--config.model.pretrained={hub_model}", f"--config.model.tokenizer={hub_model}",
             "--config.train.steps=4", "--config.train.warmup_steps=0",
             "--config.train.batch_size=4",
             "--config.train.max_input_length=64", "--config.train.max_target_length=16",
             "--config.train.log_every=2", "--config.train.checkpoint_every=2",
             "--config.eval.batch_size=4", "--config.eval.max_rationale_length=8"]
  train_config = "configs/sci_cot_arc_easy_flan_t5_small.py"

  _run(["generate.py", "--config", "configs/generate_arc_easy.py", *data,
        f"--config.teacher.model={hub_model}", "--config.teacher.num_samples=2",
        "--config.teacher.max_new_tokens=8", "--config.teacher.answer_max_new_tokens=4",
        "--config.teacher.batch_size=4", "--config.teacher.keep=all"], env)
  manifest = json.loads((cache / "manifest.json").read_text())
  assert manifest["counts"]["train"]["examples"] == 8

  _run(["train.py", "--config", train_config, *data, *student, "--workdir", str(workdir)], env)
  assert (workdir / "checkpoints" / "4").is_dir()
  for name in ("rationale", "answer"):
    assert (workdir / "export" / name / "config.json").exists()

  _run(["evaluate.py", "--config", train_config, *data, *student, "--checkpoint", str(workdir),
        "--split", "test"], env)
  predictions = [json.loads(line) for line in
                 (workdir / "eval" / "arc_easy" / "test" / workdir.name / "predictions.jsonl").read_text().splitlines()]
  assert sorted(p["id"] for p in predictions) == [f"Test-{i}" for i in range(200, 205)]
  assert all(p["prediction"] in ("A", "B", "C", "D") for p in predictions)
