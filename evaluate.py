"""Evaluates trained students, or the configured teacher, on one split of the task.

  python evaluate.py --config configs/demo.py --checkpoint runs/demo/two_stage [--split test]
      [--step best|latest|N] [--name two_stage] [--results_dir runs/demo]
  python evaluate.py --config configs/demo.py --teacher --split test --name teacher \\
      --results_dir runs/demo

Students: the checkpoint directory is a train.py --workdir. The students, their tokenizer and the
objective they were trained for come from the checkpoint (its config.json); the task, data source
and `eval.*` settings come from --config (or, without --config, from the checkpoint's config), so
one config file evaluates both a two_stage and an answer_only run. Writes
`<checkpoint>/eval/<split>/predictions.jsonl` and `metrics.json`.

Teacher: evaluates `config.teacher` (zero-shot / zero-shot-CoT prompts for completion backends,
the concluded answers for the template / imported teachers) by the same accuracy and interval;
writes `<results_dir>/<name>/eval/<split>/`.

Either way a row (name, objective, split, n, accuracy, 95% CI) is recorded in `--results_dir`
(default: the checkpoint's parent directory): results.jsonl, results.md (printed) and, once two
or more rows exist, results.png.
"""

from __future__ import annotations

import os

from sciqa_jax import cli

cli.quiet_third_party()  # before TensorFlow / JAX are imported

from absl import app
from absl import flags
from absl import logging

from sciqa_jax import checkpoints
from sciqa_jax import evaluation
from sciqa_jax import reporting
from sciqa_jax.data.registry import load_examples
from sciqa_jax.teacher import make_teacher
from sciqa_jax.teacher.evaluation import evaluate_teacher

_FLAGS = cli.define_common_flags(
    config_help="Config file (configs/<name>.py[:variant]); default: the checkpoint's config.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The train.py --workdir to evaluate.")
_TEACHER = flags.DEFINE_bool("teacher", False, "Evaluate the configured teacher instead.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate; default: config.data.eval_split.")
_STEP = flags.DEFINE_string("step", "best", "Checkpoint step: best, latest or a step number.")
_NAME = flags.DEFINE_string("name", None, "Row name in the results table; default: the "
                            "checkpoint directory's name, or 'teacher'.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where results.jsonl/.md/.png live; "
                                   "default: the checkpoint's parent directory.")
_TEACHER_COT = flags.DEFINE_bool(
    "teacher_cot", True, "--teacher with a completion backend: the prompt style's chain-of-thought "
    "prompts (default zero-shot-CoT); --noteacher_cot asks for the answer directly (zero-shot).")


def _parse_step(step: str) -> str | int:
  if step in ("best", "latest"):
    return step
  try:
    return int(step)
  except ValueError:
    raise app.UsageError(f"--step={step!r}: expected best, latest or a step number") from None


def _load_examples(config, split: str):
  """(task, examples) of the split; an unknown split or an empty one is a usage error."""
  try:
    loaded = load_examples(config, split)
  except ValueError as e:
    raise app.UsageError(f"--split: {e}") from None
  if not loaded.examples:
    raise ValueError(f"split {split!r} of task {loaded.task.name!r} "
                     f"(data.source={config.data.source!r}, data.path={config.data.path!r}) has "
                     "no examples")
  return loaded.task, loaded.examples


def _load_students(path: str, step: str | int):
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--checkpoint={path} is not a directory (expected a train.py --workdir)")
  try:
    return checkpoints.load_students(path, step=step)
  except (FileNotFoundError, checkpoints.CheckpointMismatchError):
    raise  # these already name the file / key at fault
  except Exception as e:  # orbax / JSON errors on a corrupt checkpoint do not name the run
    raise RuntimeError(f"cannot load the students from checkpoint {path} (step {step}): "
                       f"{type(e).__name__}: {e}") from e


def main(argv):
  cli.set_verbosity()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _TEACHER.value == bool(_CHECKPOINT.value):
    raise app.UsageError("pass exactly one of --checkpoint DIR or --teacher")
  config = _FLAGS.config.value
  if _TEACHER.value:
    if config is None:
      raise app.UsageError("--teacher needs --config (the teacher section to evaluate)")
    if not _RESULTS_DIR.value:
      raise app.UsageError("--teacher needs --results_dir")
    name = _NAME.value or "teacher"
    split = _SPLIT.value or config.data.eval_split
    task, examples = _load_examples(config, split)
    teacher = make_teacher(config.teacher, seed=config.seed)
    result = evaluate_teacher(teacher, examples, task, config.teacher, seed=config.seed,
                                         progress=_FLAGS.progress.value,
                                         chain_of_thought=_TEACHER_COT.value,
                                         max_examples=config.eval.max_examples)
    objective = f"teacher:{config.teacher.backend}"
    out_dir = os.path.join(_RESULTS_DIR.value, name, "eval", split)
    results_dir = _RESULTS_DIR.value
    extra = {"teacher": teacher.name,
             "prompt_style": config.teacher.prompt_style if _TEACHER_COT.value else "zero_shot"}
  else:
    checkpoint = os.path.abspath(_CHECKPOINT.value)
    loaded = _load_students(checkpoint, _parse_step(_STEP.value))
    config = config if config is not None else loaded.config
    name = _NAME.value or os.path.basename(checkpoint)
    split = _SPLIT.value or config.data.eval_split
    task, examples = _load_examples(config, split)
    objective = loaded.config.objective.name  # what the students were trained for
    logging.info("evaluating %s (objective %s, step %d) on %s/%s: %d examples", checkpoint,
                 objective, loaded.step, task.name, split, len(examples))
    result = evaluation.evaluate_split(
        loaded.model, loaded.params, loaded.tokenizer, loaded.config.objective, examples,
        config.eval, answer_type=task.answer_type, seed=config.seed, progress=_FLAGS.progress.value,
        parse_answer=task.parse_answer)
    out_dir = os.path.join(checkpoint, "eval", split)
    results_dir = _RESULTS_DIR.value or os.path.dirname(checkpoint)
    extra = {"checkpoint": checkpoint, "step": loaded.step}

  metrics = {"name": name, "objective": objective, "task": task.name, "split": split,
             **result.metrics(), **extra, "eval": config.eval.to_dict()}
  reporting.write_jsonl(os.path.join(out_dir, "predictions.jsonl"), result.predictions)
  reporting.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  logging.info("%s: accuracy %.4f [%.4f, %.4f] on %d examples; predictions in %s", name,
               result.accuracy, result.ci_low, result.ci_high, result.num_examples, out_dir)
  reporting.record_result(results_dir, reporting.results_row(name, objective, split,
                                                             result.metrics(), task=task.name,
                                                             **extra))


if __name__ == "__main__":
  cli.run(main)
