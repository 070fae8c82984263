"""Evaluates trained students, the configured teacher, or a few-shot LLM on one split of a task.

  python evaluate.py --checkpoint runs/demo/two_stage --split test [--step best|latest|N]
      [--config configs/demo.py] [--name two_stage] [--results_dir runs/demo]
  python evaluate.py --config configs/demo.py --teacher --split test --name teacher \\
      --results_dir runs/demo

Students: the checkpoint directory is a train.py --workdir. The students, their tokenizer, the
objective they were trained for, and the task and data settings they were trained on all come from
the checkpoint (its config.json). --config supplies the `eval.*` settings (and data settings, e.g.
a moved data.path) but must name the checkpoint's task: a config of another task is refused,
naming both. To score students on another task on purpose, pass --task=<name> with a --config of
that task. Writes `<checkpoint>/eval/<task>/<split>/<name>/predictions.jsonl` and `metrics.json`.

Teacher: evaluates `config.teacher` (zero-shot / zero-shot-CoT prompts for completion backends,
the concluded answers for the template / imported teachers) by the same accuracy and interval;
writes `<results_dir>/eval/<task>/<split>/<name>/`.

LLM baseline: `--llm <hub id or dir> [--num_fewshot k] [--llm_metric acc|acc_norm]` scores a
causal LM (transformers' PyTorch, or `--llm_backend=jax`, the default on an accelerator for
Llama / Mistral / Qwen2 / Gemma: our Flax CausalLM pmapped over the local devices) or a
T5-family seq2seq LM (Flax T5) on `--config`'s multiple-choice task exactly as
lm-evaluation-harness scores it (`sciqa_jax.baselines`): k exemplars drawn from the whole train
split by the harness's sampler (`--fewshot_seed`, default the harness's 1234), each
choice ranked by its log-likelihood (acc) or that divided by its length in characters
(acc_norm); both are in metrics.json with their intervals, the one --llm_metric names is the
row's accuracy (objective `llm:<k>-shot`). Writes `<results_dir>/eval/<task>/<split>/<name>/`.

  python evaluate.py --config configs/sci_cot_arc_easy_flan_t5_small.py --split test \\
      --llm bigscience/bloom-560m --num_fewshot 5 --results_dir runs/arc_easy

Either way a row (name, objective, task, split, n, accuracy, 95% CI) is recorded in
`--results_dir` (default: the checkpoint's parent directory): results.jsonl, results.md (printed)
and, once two or more rows exist, results.png. Nothing is overwritten: rerunning an evaluation
replaces its own outputs, but a name already used for another checkpoint, step or settings is
refused (pass another --name).
"""

from __future__ import annotations

import json
import os

from sciqa_jax import cli

cli.quiet_third_party()  # before TensorFlow / JAX are imported

from absl import app
from absl import flags
from absl import logging
import ml_collections

from sciqa_jax import baselines
from sciqa_jax import checkpoints
from sciqa_jax import config as config_lib
from sciqa_jax import errors
from sciqa_jax import evaluation
from sciqa_jax import reporting
from sciqa_jax.data.registry import canonical_task_name, load_examples, load_splits
from sciqa_jax.teacher import make_teacher
from sciqa_jax.teacher.evaluation import evaluate_teacher, evaluated_style

_FLAGS = cli.define_common_flags(
    config_help="Config file (configs/<name>.py[:variant]); default: the checkpoint's config.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The train.py --workdir to evaluate.")
_TEACHER = flags.DEFINE_bool("teacher", False, "Evaluate the configured teacher instead.")
_TASK = flags.DEFINE_string(
    "task", None, "--checkpoint only: evaluate on this task although the students were trained on "
    "another (needs --config of that task); default: the checkpoint's task.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate; default: config.data.eval_split.")
_STEP = flags.DEFINE_string("step", "best", "Checkpoint step: best, latest or a step number.")
_NAME = flags.DEFINE_string("name", None, "Row name in the results table; default: the "
                            "checkpoint directory's name, or 'teacher'.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where results.jsonl/.md/.png live; "
                                   "default: the checkpoint's parent directory.")
_LLM = flags.DEFINE_string(
    "llm", None, "Evaluate this causal or T5-family LM (hub id or directory) as a few-shot "
    "baseline, scored as lm-evaluation-harness scores it.")
_NUM_FEWSHOT = flags.DEFINE_integer("num_fewshot", 0, "--llm: exemplars per question, drawn "
                                    "from the train split.")
_FEWSHOT_SEED = flags.DEFINE_integer("fewshot_seed", baselines.HARNESS_FEWSHOT_SEED,
                                     "--llm: the few-shot sampler's seed (the harness's default).")
_LLM_METRIC = flags.DEFINE_enum("llm_metric", "acc", baselines.METRICS, "--llm: the metric "
                                "recorded as the row's accuracy (both are in metrics.json).")
_LLM_BACKEND = flags.DEFINE_enum(
    "llm_backend", "auto", baselines.BACKENDS, "--llm, causal models: transformers' PyTorch "
    "(torch), or our Flax CausalLM pmapped over the local devices (jax: Llama, Mistral, Qwen2, "
    "Gemma); auto = jax on an accelerator for those, else torch. T5 models always run in JAX.")
_LLM_FLAGS = ("num_fewshot", "fewshot_seed", "llm_metric", "llm_backend")
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
  """(task, examples) of the split; an unknown or empty split is an error naming the data."""
  loaded = load_examples(config, split)
  if not loaded.examples:
    raise errors.DataError(
        f"split {split!r} of task {loaded.task.name!r} (data.source={config.data.source!r}, "
        f"data.path={config.data.path!r}) has no examples")
  return loaded.task, loaded.examples


def _load_students(path: str, step: str | int):
  if not os.path.isdir(path):
    raise errors.MissingFileError(
        f"--checkpoint={path} is not a directory (expected a train.py --workdir)")
  try:
    return checkpoints.load_students(path, step=step)
  except (errors.UserError, FileNotFoundError):
    raise  # these already name the file / key at fault
  except Exception as e:  # orbax / JSON errors on a corrupt checkpoint do not name the run
    raise errors.CorruptFileError(
        f"cannot load the students from checkpoint {path} (step {step}): "
        f"{type(e).__name__}: {e}") from e


def student_eval_config(checkpoint_config, config, task: str | None):
  """The config students are evaluated with: the checkpoint's, with `eval.*` and `data.*` from
  `config` when given. A `config` of another task than the checkpoint's is refused unless `task`
  names that task explicitly (evaluation on another task on purpose)."""
  trained_on = canonical_task_name(checkpoint_config.task)
  task = canonical_task_name(task) if task is not None else None
  if task is not None and task != trained_on and config is None:
    raise app.UsageError(f"--task={task} differs from the checkpoint's task {trained_on!r}: pass "
                         f"--config with the data settings of {task!r}")
  wanted = task or trained_on
  if config is None:
    return checkpoint_config
  if canonical_task_name(config.task) != wanted:
    raise errors.RunMismatchError(
        f"--config is for task {config.task!r} but "
        + (f"--task is {task!r}" if task else f"the checkpoint was trained on {trained_on!r}")
        + ": pass a config of that task"
        + ("" if task else f", or --task={config.task} to evaluate on {config.task!r} on purpose"))
  merged = ml_collections.ConfigDict(checkpoint_config.to_dict())
  merged.task = wanted
  merged.seed = config.seed
  merged.data = ml_collections.ConfigDict(config.data.to_dict())
  merged.eval = ml_collections.ConfigDict(config.eval.to_dict())
  return merged


def check_not_overwriting(out_dir: str, metrics: dict) -> None:
  """Refuses to replace an evaluation of something else (OUTPUT_IDENTITY) in `out_dir`."""
  path = os.path.join(out_dir, "metrics.json")
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    try:
      old = json.load(f)
    except json.JSONDecodeError:
      return  # never completed (the writes are atomic, so this is a hand-made file): replace it
  changed = [k for k in OUTPUT_IDENTITY if old.get(k) != metrics.get(k)]
  if changed:
    raise errors.RunMismatchError(
        f"{out_dir} holds an evaluation with another {', '.join(changed)}: pass another --name "
        "to keep both")


# What an output directory's metrics.json must share with a new evaluation for the new one to
# replace it (a rerun); anything else is another evaluation and gets its own --name.
OUTPUT_IDENTITY = ("name", "objective", "task", "split", "checkpoint", "step", "teacher",
                   "prompt_style", "eval", "llm", "fewshot_seed")


def _evaluate_teacher(config, split: str, name: str):
  if config is None:
    raise app.UsageError("--teacher needs --config (the teacher section to evaluate)")
  if not _RESULTS_DIR.value:
    raise app.UsageError("--teacher needs --results_dir")
  task, examples = _load_examples(config, split)
  teacher = make_teacher(config.teacher, seed=config.seed)
  identity = {"objective": f"teacher:{config.teacher.backend}", "teacher": teacher.name,
              "prompt_style": evaluated_style(teacher, config.teacher, _TEACHER_COT.value)}
  out_dir = os.path.join(_RESULTS_DIR.value, "eval", task.name, split, name)

  def run():
    return evaluate_teacher(teacher, examples, task, config.teacher, seed=config.seed, split=split,
                            progress=_FLAGS.progress.value, chain_of_thought=_TEACHER_COT.value,
                            max_examples=config.eval.max_examples)

  return task, identity, out_dir, _RESULTS_DIR.value, config, run


def _evaluate_llm(config, split: str, name: str | None):
  """The --llm baseline on --config's task: (task, identity, out_dir, results_dir, run, name)."""
  if config is None:
    raise app.UsageError("--llm needs --config (the task and data to evaluate on)")
  if not _RESULTS_DIR.value:
    raise app.UsageError("--llm needs --results_dir")
  k = _NUM_FEWSHOT.value
  task, examples = _load_examples(config, split)
  baselines.check_task(task.name, task.answer_type)
  pool = []
  if k:  # the harness draws from the whole train split, whatever data.max_examples says
    whole = ml_collections.ConfigDict(config.to_dict())
    whole.data.max_examples = 0
    pool = _load_examples(whole, config.data.train_split)[1]
  llm = os.path.abspath(_LLM.value) if os.path.isdir(_LLM.value) else _LLM.value
  name = name or f"{baselines.model_name(llm)}-{k}shot"
  metric = _LLM_METRIC.value
  objective = f"llm:{k}-shot" + ("" if metric == "acc" else f":{metric}")
  # "llm", not "checkpoint": the predictions are under --results_dir, where a row without a
  # checkpoint has them (sciqa_jax.comparison's paired tests look there).
  identity = {"objective": objective, "llm": llm, "fewshot_seed": _FEWSHOT_SEED.value}
  out_dir = os.path.join(_RESULTS_DIR.value, "eval", task.name, split, name)

  def run():
    scorer = baselines.load_scorer(_LLM.value, batch_size=config.eval.batch_size,
                                   backend=_LLM_BACKEND.value)
    return baselines.evaluate_llm(
        scorer, examples, pool, task.name, num_fewshot=k, seed=_FEWSHOT_SEED.value,
        metric=metric, answer_type=task.answer_type, max_examples=config.eval.max_examples,
        progress=_FLAGS.progress.value)

  return task, identity, out_dir, _RESULTS_DIR.value, run, name


def _evaluate_students(config, split: str | None, name: str | None):
  checkpoint = os.path.abspath(_CHECKPOINT.value)
  loaded = _load_students(checkpoint, _parse_step(_STEP.value))
  config = student_eval_config(loaded.config, config, _TASK.value)
  split = split or config.data.eval_split
  name = name or os.path.basename(checkpoint)
  task, examples = _load_examples(config, split)
  if task.name == canonical_task_name(loaded.config.task) and split != config.data.train_split:
    # A held-out score only if no question of the split was trained on.
    load_splits(config, [config.data.train_split, split])
  identity = {"objective": loaded.config.objective.name, "checkpoint": checkpoint,
              "step": loaded.step}
  out_dir = os.path.join(checkpoint, "eval", task.name, split, name)

  def run():
    logging.info("evaluating %s (objective %s, step %d, trained on %s) on %s/%s: %d examples",
                 checkpoint, identity["objective"], loaded.step, loaded.config.task, task.name,
                 split, len(examples))
    return evaluation.evaluate_split(
        loaded.model, loaded.params, loaded.tokenizer, loaded.config.objective, examples,
        config.eval, answer_type=task.answer_type, seed=config.seed,
        progress=_FLAGS.progress.value, parse_answer=task.parse_answer)

  results_dir = _RESULTS_DIR.value or os.path.dirname(checkpoint)
  return task, identity, out_dir, results_dir, config, run, split, name


def main(argv):
  cli.set_verbosity()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _TEACHER.value + bool(_CHECKPOINT.value) + bool(_LLM.value) != 1:
    raise app.UsageError("pass exactly one of --checkpoint DIR, --teacher or --llm MODEL")
  config = _FLAGS.config.value
  if config is not None:
    config_lib.check(config)
  if (_TEACHER.value or _LLM.value) and _TASK.value:
    raise app.UsageError("--task is for --checkpoint; --teacher and --llm use --config's task")
  llm_only = [f"--{f}" for f in _LLM_FLAGS if flags.FLAGS[f].present]
  if llm_only and not _LLM.value:
    raise app.UsageError(f"{', '.join(llm_only)} set without --llm")
  if _LLM.value:
    split = _SPLIT.value or (config.data.eval_split if config is not None else None)
    task, identity, out_dir, results_dir, run, name = _evaluate_llm(config, split, _NAME.value)
  elif _TEACHER.value:
    name = _NAME.value or "teacher"
    split = _SPLIT.value or (config.data.eval_split if config is not None else None)
    task, identity, out_dir, results_dir, config, run = _evaluate_teacher(config, split, name)
  else:
    task, identity, out_dir, results_dir, config, run, split, name = _evaluate_students(
        config, _SPLIT.value, _NAME.value)
  base = {"name": name, **identity, "task": task.name, "split": split,
          "eval": config.eval.to_dict()}
  check_not_overwriting(out_dir, base)
  result = run()
  metrics = {**base, **result.metrics()}
  reporting.write_jsonl(os.path.join(out_dir, "predictions.jsonl"), result.predictions)
  reporting.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  logging.info("%s: accuracy %.4f [%.4f, %.4f] on %d examples; predictions in %s", name,
               result.accuracy, result.ci_low, result.ci_high, result.num_examples, out_dir)
  details = {k: v for k, v in identity.items() if k != "objective"}
  if _LLM.value:  # both metrics in the row, whichever is its accuracy
    details.update({k: metrics[k] for k in baselines.ROW_METRICS})
  reporting.record_result(results_dir, reporting.results_row(
      name, identity["objective"], task.name, split, result.metrics(), **details))


if __name__ == "__main__":
  cli.run(main)
