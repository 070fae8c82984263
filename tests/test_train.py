"""The trainer end to end on a tiny task: every objective learns, one compilation, stage-2 student
rationales, NaN guard, SIGKILL + resume reproduces the uninterrupted run, load_students."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from sciqa_jax import checkpoints as ckpt
from sciqa_jax import phases
from sciqa_jax import trainer
from sciqa_jax.cache import CacheWriter, RationaleRecord
from sciqa_jax.config import base_config
from sciqa_jax.data.registry import get_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 24


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  """A cache with two rationales per question (diverse reasoning), through the cache writer."""
  path = str(tmp_path_factory.mktemp("cache"))
  examples = get_task("science_demo").load("train", source="builtin", max_examples=NUM_EXAMPLES)
  records = [RationaleRecord(e, prefix + "; ".join(e.solution), e.answer, True, k, "template",
                             "zero_shot_cot")
             for e in examples for k, prefix in enumerate(("", "Step by step: "))]
  writer = CacheWriter(path, {"teacher": "template"})
  writer.start_split("train", examples, 1)
  writer.write_shard("train", 0, records, {"kept": len(records)})
  writer.finish_split("train")
  return path


@pytest.fixture(scope="module")
def tokenizer_dir(cache_dir, tmp_path_factory):
  """One trained tokenizer shared by every run (each would otherwise train the same one)."""
  from sciqa_jax import input_pipeline
  from sciqa_jax.objectives import Objective
  c = tiny_config(cache_dir)
  objective = Objective.from_config(c.objective)
  pairs = input_pipeline.training_pairs(c, objective)
  root = str(tmp_path_factory.mktemp("tokenizer_run"))
  input_pipeline.prepare_tokenizer(c.model, root,
                                   input_pipeline.tokenizer_training_texts(pairs, objective))
  return os.path.join(root, "tokenizer")


def workdir_with_tokenizer(tokenizer_dir, path):
  shutil.copytree(tokenizer_dir, os.path.join(path, "tokenizer"))
  return str(path)


def tiny_config(cache_dir, objective="two_stage", **train):
  c = base_config()
  c.cache_dir = cache_dir
  c.objective.name = objective
  m = c.model
  m.d_model, m.d_kv, m.d_ff, m.num_heads = 32, 16, 64, 2
  m.num_layers = m.num_decoder_layers = 1
  m.tokenizer_vocab_size = 300
  m.dropout_rate = 0.0
  t = c.train
  t.steps, t.batch_size, t.max_input_length, t.max_target_length = 16, 8, 96, 48
  t.learning_rate, t.log_every, t.checkpoint_every = 1e-2, 4, 16
  t.validate, t.export_hf = False, False
  for key, value in train.items():
    t[key] = value
  c.eval.batch_size, c.eval.max_rationale_length = 8, 8
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [row for row in map(json.loads, f) if row["split"] == "train"]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["two_stage", "fine_tune_cot", "step_by_step", "answer_only"])
def test_every_objective_learns_with_one_compilation(cache_dir, tokenizer_dir, tmp_path, objective):
  export = objective == "two_stage"
  summary = trainer.train(tiny_config(cache_dir, objective, export_hf=export),
                          workdir_with_tokenizer(tokenizer_dir, tmp_path))
  rows = read_metrics(tmp_path)
  assert [r["step"] for r in rows] == [4, 8, 12, 16]
  assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], [r["loss"] for r in rows]
  # Fixed shapes: every batch ran through the same executable.
  assert summary.train_step_compilations == 1
  assert summary.final_step == 16 and summary.tokens_per_sec > 0 and summary.mfu is None
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["objective"]["name"] == objective
  if objective == "fine_tune_cot":
    assert "48 rows" in next(iter(summary.truncation.values()))  # 2 rationales per question
  if export:
    loaded = ckpt.load_students(str(tmp_path), step="latest")
    assert set(loaded.params) == {"rationale", "answer"} and loaded.step == 16
    from sciqa_jax.models import load_pretrained
    _, exported = load_pretrained(summary.exported["answer"])
    np.testing.assert_allclose(np.asarray(exported["shared"]["embedding"]),
                               np.asarray(loaded.params["answer"]["shared"]["embedding"]))
    assert os.path.exists(os.path.join(summary.exported["answer"], "tokenizer.json"))


@pytest.mark.slow
def test_stage2_on_student_rationales(cache_dir, tokenizer_dir, tmp_path):
  c = tiny_config(cache_dir, steps=4, answer_steps=2, checkpoint_every=4, log_every=2)
  c.objective.stage2_rationales = "mix"
  summary = trainer.train(c, workdir_with_tokenizer(tokenizer_dir, tmp_path))
  assert summary.final_step == 6  # rationale phase 1-4, answer phase 5-6
  with open(tmp_path / "stage2_rationales.jsonl") as f:
    assert len(f.readlines()) == NUM_EXAMPLES
  # The answer phase trains on 2 teacher + 1 student rationale per question.
  assert f"{3 * NUM_EXAMPLES} rows" in summary.truncation["student/answer"]
  manager = ckpt.Checkpointer(str(tmp_path), read_only=True)
  first, second = manager.restore_params(4), manager.restore_params(6)
  manager.close()
  assert _same(first["rationale"], second["rationale"])  # frozen in the answer phase
  assert not _same(first["answer"], second["answer"])


def _same(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_plan_phases():
  from sciqa_jax.objectives import Objective
  plan = lambda objective, *steps: [(p.name, p.start, p.end, p.rows)
                                    for p in phases.plan_phases(objective, *steps)]
  two_stage = Objective("two_stage")
  assert plan(two_stage, 8) == plan(two_stage, 8, 8) == [("joint", 0, 8, "teacher")]
  assert plan(two_stage, 8, 3) == [("joint", 0, 3, "teacher"), ("rationale", 3, 8, "teacher")]
  assert plan(two_stage, 3, 8) == [("joint", 0, 3, "teacher"), ("answer", 3, 8, "teacher")]
  staged = Objective("two_stage", stage2_rationales="student")
  assert plan(staged, 8, 3) == [("rationale", 0, 8, "teacher"), ("answer", 8, 11, "student")]
  assert phases.student_spans(phases.plan_phases(staged, 8, 3)) == {"rationale": (0, 8),
                                                                       "answer": (8, 11)}
  assert phases.student_spans(phases.plan_phases(two_stage, 8, 3)) == {"rationale": (0, 8),
                                                                          "answer": (0, 3)}
  # Validation (of the whole pipeline) waits for stage 2 to start, and always ends the run.
  validation_steps = lambda plan: [step for step in range(1, plan[-1].end + 1)
                                  if phases.is_validation_step(step, plan, 2)]
  assert validation_steps(phases.plan_phases(staged, 8, 3)) == [10, 11]
  assert validation_steps(phases.plan_phases(two_stage, 8, 3)) == [2, 4, 6, 8]
  # The answer-only baseline gets the answer budget; a student that also explains, train.steps.
  assert plan(Objective("answer_only"), 8, 3) == [("joint", 0, 3, "teacher")]
  assert plan(Objective("answer_only"), 8) == [("joint", 0, 8, "teacher")]
  for one_student in (Objective("fine_tune_cot"), Objective("two_stage", shared_student=True)):
    assert plan(one_student, 8, 3) == [("joint", 0, 8, "teacher")]
  with pytest.raises(ValueError, match="needs two students"):
    phases.plan_phases(Objective("two_stage", shared_student=True,
                                  stage2_rationales="student"), 8)
  with pytest.raises(ValueError, match="train.steps=0"):
    phases.plan_phases(two_stage, 0)


def test_answer_only_baseline_optimizer_spans_the_answer_budget():
  from sciqa_jax.objectives import Objective
  from sciqa_jax.train_step import make_optimizer
  c = base_config()
  c.train.optimizer, c.train.schedule, c.train.steps, c.train.warmup_steps = "adamw", "cosine", 8, 0
  tx = phases.make_run_optimizer(c.train, phases.plan_phases(Objective("answer_only"), 8, 3))
  c.train.steps = 3
  alone = make_optimizer(c.train)  # what a 3-step run would use
  params = {"student": {"w": np.linspace(-1.0, 1.0, 6, dtype=np.float32)}}
  state, alone_state = tx.init(params), alone.init(params)
  for i in range(3):
    grads = jax.tree.map(lambda p, i=i: np.sin((i + 1) * p), params)
    got, state = tx.update(grads, state, params)
    want, alone_state = alone.update(grads, alone_state, params)
    np.testing.assert_allclose(got["student"]["w"], want["student"]["w"], rtol=1e-6)


def test_partial_accumulation_at_a_span_end_is_reported(caplog):
  from sciqa_jax.objectives import Objective
  c = base_config()
  c.train.warmup_steps, c.train.grad_accum_steps = 0, 2
  with caplog.at_level(logging.WARNING, logger=phases.__name__):
    phases.make_run_optimizer(c.train, phases.plan_phases(Objective("two_stage"), 8, 3))
  assert [r.getMessage() for r in caplog.records] == [
      "student 'answer' trains for 3 steps, not a multiple of train.grad_accum_steps=2: the "
      "gradients of its last 1 batch(es) are accumulated but never applied"]


@pytest.mark.slow
def test_answer_budget_freezes_the_answer_student_and_resumes_after_the_boundary(
    cache_dir, tokenizer_dir, tmp_path):
  c = tiny_config(cache_dir, steps=8, answer_steps=4, checkpoint_every=2, log_every=2,
                  keep_checkpoints=4)
  run = workdir_with_tokenizer(tokenizer_dir, tmp_path / "run")
  summary = trainer.train(c, run)
  assert summary.final_step == 8
  assert summary.train_step_compilations == 2  # joint steps 1-4, rationale alone 5-8
  rows = read_metrics(run)
  assert [(r["step"], "answer/loss" in r, "answer/learning_rate" in r, "rationale/loss" in r)
          for r in rows] == [(2, True, True, True), (4, True, True, True),
                             (6, False, False, True), (8, False, False, True)]
  manager = ckpt.Checkpointer(run, read_only=True)
  params = {step: manager.restore_params(step) for step in (4, 6, 8)}
  manager.close()
  assert _same(params[4]["answer"], params[8]["answer"])
  assert not _same(params[4]["rationale"], params[8]["rationale"])

  # Killed after step 6's checkpoint: the resumed run restores into the rationale-alone phase
  # (its batch iterator continues the joint phase's) and ends where the uninterrupted run did.
  resumed = tmp_path / "resumed"
  shutil.copytree(run, resumed)
  shutil.rmtree(resumed / "checkpoints" / "8")
  again = trainer.train(c, str(resumed))
  assert again.resumed_from == 6 and again.final_step == 8
  manager = ckpt.Checkpointer(str(resumed), read_only=True)
  final = manager.restore_params(8)
  manager.close()
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(params[8])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert read_metrics(resumed)[-1]["loss"] == pytest.approx(rows[-1]["loss"], rel=1e-6)
  # Another answer budget would put the checkpoint in another phase: refused, naming the keys.
  c.train.answer_steps = 0
  with pytest.raises(ckpt.CheckpointMismatchError, match="train.answer_steps"):
    trainer.train(c, str(resumed))


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(cache_dir, tokenizer_dir, tmp_path):
  c = tiny_config(cache_dir, "answer_only", learning_rate=1e30, checkpoint_every=1, log_every=100)
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step 2 .*latest checkpoint is step 1"):
    trainer.train(c, workdir_with_tokenizer(tokenizer_dir, tmp_path))
  manager = ckpt.Checkpointer(str(tmp_path), read_only=True)
  assert manager.all_steps() == [1]
  manager.close()


def _validation_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [row for row in map(json.loads, f) if row["split"] == "validation"]


@pytest.mark.slow
def test_periodic_validation_ranks_checkpoints_and_exports_the_best(cache_dir, tokenizer_dir,
                                                                    tmp_path):
  c = tiny_config(cache_dir, "answer_only", steps=12, eval_every=4, checkpoint_every=100,
                  keep_checkpoints=1, validate=True, export_hf=True)
  c.data.max_examples = NUM_EXAMPLES  # the validation split, scored at steps 4, 8, 12
  summary = trainer.train(c, workdir_with_tokenizer(tokenizer_dir, tmp_path))
  rows = _validation_rows(tmp_path)
  assert [r["step"] for r in rows] == [4, 8, 12]
  accuracies = {r["step"]: r["accuracy"] for r in rows}
  assert summary.best_val_accuracy == max(accuracies.values())
  assert accuracies[summary.best_step] == summary.best_val_accuracy
  # The logged accuracy is what evaluation gives for the checkpoint at that step, independently.
  from sciqa_jax.evaluation import evaluate_split
  from sciqa_jax.objectives import Objective
  from sciqa_jax.tokenizer import load_tokenizer
  students = ckpt.load_students(str(tmp_path), step=summary.best_step)
  task = get_task("science_demo")
  examples = task.load("validation", source="builtin", max_examples=NUM_EXAMPLES)
  result = evaluate_split(students.model, students.params, load_tokenizer(tokenizer_dir),
                          Objective.from_config(c.objective), examples, c.eval,
                          answer_type=task.answer_type, seed=c.seed, progress=False)
  assert result.num_examples == NUM_EXAMPLES
  assert result.accuracy == pytest.approx(summary.best_val_accuracy)
  # The best checkpoint survives keep_checkpoints=1, and it is the one exported.
  manager = ckpt.Checkpointer(str(tmp_path), read_only=True)
  assert summary.best_step in manager.all_steps() and 12 in manager.all_steps()
  manager.close()
  from sciqa_jax.models import load_pretrained
  (student,) = students.params  # answer_only trains one student
  _, exported = load_pretrained(summary.exported[student])
  np.testing.assert_array_equal(np.asarray(exported["shared"]["embedding"]),
                                np.asarray(students.params[student]["shared"]["embedding"]))


@pytest.mark.slow
def test_init_from_a_pretrained_checkpoint_directory(cache_dir, tokenizer_dir, tmp_path):
  """model.init=pretrained starts every student from the checkpoint, with its tokenizer."""
  from sciqa_jax.models import T5Config, init_params, save_pretrained
  from sciqa_jax.tokenizer import load_tokenizer
  tokenizer = load_tokenizer(tokenizer_dir)
  pretrained_dir = str(tmp_path / "pretrained")
  config = T5Config(vocab_size=len(tokenizer) + 28, d_model=32, d_kv=16, d_ff=64, num_layers=1,
                    num_decoder_layers=1, num_heads=2, feed_forward_proj="gated-gelu",
                    tie_word_embeddings=False)
  pretrained = init_params(config, jax.random.key(7))
  save_pretrained(config, pretrained, pretrained_dir, tokenizer=tokenizer)
  c = tiny_config(cache_dir, steps=2, checkpoint_every=2, log_every=2, learning_rate=0.0)
  c.model.init, c.model.pretrained, c.model.tokenizer = "pretrained", pretrained_dir, ""
  c.model.d_model = 64  # ignored: the checkpoint brings its own architecture
  workdir = tmp_path / "run"
  trainer.train(c, str(workdir))
  assert load_tokenizer(str(workdir / "tokenizer")).get_vocab() == tokenizer.get_vocab()
  students = ckpt.load_students(str(workdir), step="latest")
  assert students.model.config.d_model == 32
  for student in ("rationale", "answer"):  # learning rate 0: still exactly the checkpoint
    for got, want in zip(jax.tree.leaves(students.params[student]), jax.tree.leaves(pretrained)):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


CONFIG_FILE = """
from sciqa_jax.config import base_config
def get_config():
  c = base_config()
  c.cache_dir = {cache_dir!r}
  c.model.d_model, c.model.d_kv, c.model.d_ff, c.model.num_heads = 32, 16, 64, 2
  c.model.num_layers = c.model.num_decoder_layers = 1
  c.model.tokenizer_vocab_size = 300
  c.train.steps, c.train.batch_size = 120, 16
  c.train.max_input_length, c.train.max_target_length = 96, 48
  c.train.learning_rate, c.train.log_every, c.train.checkpoint_every = 3e-3, 10, 20
  c.train.validate, c.train.export_hf = False, False
  return c
"""


def _train_cmd(config_path, workdir):
  return [sys.executable, os.path.join(REPO, "train.py"), "--config", str(config_path),
          "--workdir", str(workdir)]


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted_run(cache_dir, tokenizer_dir, tmp_path):
  config_path = tmp_path / "tiny.py"
  config_path.write_text(textwrap.dedent(CONFIG_FILE.format(cache_dir=cache_dir)))
  env = dict(os.environ, PYTHONPATH=REPO, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  reference, resumed = tmp_path / "reference", tmp_path / "resumed"
  for workdir in (reference, resumed):
    workdir_with_tokenizer(tokenizer_dir, workdir)
  subprocess.run(_train_cmd(config_path, reference), env=env, check=True, capture_output=True)

  proc = subprocess.Popen(_train_cmd(config_path, resumed), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first = resumed / "checkpoints" / "20"
  deadline = time.time() + 240
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = max(int(r["step"]) for r in read_metrics(resumed))
  assert killed_at < 120
  # A save interrupted by the kill leaves a temporary directory: never loaded.
  partial = resumed / "checkpoints" / "100.orbax-checkpoint-tmp-1700000000"
  partial.mkdir(parents=True, exist_ok=True)
  (partial / "junk").write_bytes(b"\0")

  out = subprocess.run(_train_cmd(config_path, resumed), env=env, check=True, capture_output=True,
                       text=True)
  assert "resumed from step" in out.stdout

  ref_rows, res_rows = read_metrics(reference), read_metrics(resumed)
  assert [r["step"] for r in res_rows] == [r["step"] for r in ref_rows] == list(range(10, 121, 10))
  np.testing.assert_allclose([r["loss"] for r in res_rows], [r["loss"] for r in ref_rows],
                             rtol=1e-4)
  params = []
  for workdir in (reference, resumed):
    manager = ckpt.Checkpointer(str(workdir), read_only=True)
    assert manager.latest_step() == 120
    params.append(manager.restore_params(120))
    manager.close()
  for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_a_cache_of_another_task_or_data_is_refused(tmp_path):
  from sciqa_jax import errors
  from sciqa_jax import input_pipeline
  from sciqa_jax.objectives import Objective
  examples = get_task("science_demo").load("train", source="builtin", max_examples=4)
  records = [RationaleRecord(e, "; ".join(e.solution), e.answer, True, 0, "template",
                             "zero_shot_cot") for e in examples]
  cache = str(tmp_path / "cache")
  writer = CacheWriter(cache, {"task": "arc_challenge", "data.source": "local",
                               "data.path": "/data/arc"})
  writer.start_split("train", examples, 1)
  writer.write_shard("train", 0, records, {"kept": len(records)})
  writer.finish_split("train")
  c = tiny_config(cache)
  c.task, c.data.source, c.data.path = "arc_easy", "local", "/data/arc"
  with pytest.raises(errors.RunMismatchError, match=r"task: cache 'arc_challenge', config "
                                                    r"'arc_easy'"):
    input_pipeline.training_pairs(c, Objective.from_config(c.objective))
  c.task, c.data.path = "arc_challenge", "/elsewhere"
  with pytest.raises(errors.RunMismatchError, match=r"data.path: cache '/data/arc'"):
    trainer.train(c, str(tmp_path / "run"))
  c.data.path = "/data/arc"
  assert len(input_pipeline.training_pairs(c, Objective.from_config(c.objective))) == 4


@pytest.mark.slow
def test_metrics_rows_after_a_resume_between_two_rows_equal_the_uninterrupted_run(
    cache_dir, tokenizer_dir, tmp_path):
  # Checkpoints at 3 and 6, metrics rows at 4 and 8: a run resumed from step 3 or 6 must average
  # steps 1-4 and 5-8 into its rows as the uninterrupted run does.
  c = tiny_config(cache_dir, steps=8, checkpoint_every=3, log_every=4, keep_checkpoints=5)
  run = workdir_with_tokenizer(tokenizer_dir, tmp_path / "run")
  trainer.train(c, run)
  reference = read_metrics(run)
  assert [r["step"] for r in reference] == [4, 8]
  timing = {"tokens_per_sec", "steps_per_sec", "mfu", "flops_per_sec"}
  for resume_from in (3, 6):
    resumed = tmp_path / f"resumed_{resume_from}"
    shutil.copytree(run, resumed)
    for step in (3, 6, 8):
      if step > resume_from:
        shutil.rmtree(resumed / "checkpoints" / str(step))
    summary = trainer.train(c, str(resumed))
    assert summary.resumed_from == resume_from
    rows = read_metrics(resumed)
    assert [r["step"] for r in rows] == [4, 8]
    for got, want in zip(rows, reference):
      assert {k: v for k, v in got.items() if k not in timing} == \
          {k: v for k, v in want.items() if k not in timing}


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("--config.train.batch_size=0", "train.py: error: train.batch_size=0 is out of range"),
    ("--config.cache_dir=/nowhere/cache", "train.py: error: no rationale cache at '/nowhere/cache'"),
])
def test_train_py_user_errors_are_one_line(cache_dir, tmp_path, override, message):
  config_path = tmp_path / "tiny.py"
  config_path.write_text(textwrap.dedent(CONFIG_FILE.format(cache_dir=cache_dir)))
  result = subprocess.run([*_train_cmd(config_path, tmp_path / "run"), override],
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                          timeout=300)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith(message) and "Traceback" not in result.stderr
