"""train.py's loop: the jitted step over the phases, logging, validation, checkpoints, export.

All side effects of training live here; the step itself is the pure `train_step.make_train_step`,
the phase plan is `phases`, the rows and batches are `input_pipeline`, the students are
`models.init_students`, and validation is `evaluation.evaluate_split` on the training mesh.

`train(config, workdir)`:
  1. Settings are checked and the phase plan and optimizer built before any data or model loads;
     a workdir whose config or checkpoint was made for other settings is refused.
  2. Rows from the cache's train split, the tokenizer (`<workdir>/tokenizer/`), the students, and
     one TrainState created in its layout on a 1-D mesh (`train.parallelism`: data or FSDP).
  3. Resume: the latest checkpoint gives the state and the global step, which is the whole data
     position (batch k is a pure function of seed and k); `metrics.jsonl` is cut back to it and
     the open metrics interval restored, so the rows equal an uninterrupted run's.
  4. Each phase runs the donated, jitted step; every `log_every` steps the interval's mean
     metrics (losses, learning rates, grad norm, tokens/s, MFU where the peak is known) go to
     `metrics.jsonl`, TensorBoard and the progress bar. Device metrics are fetched only at log
     and checkpoint boundaries, so the host keeps queueing steps.
  5. Validation on `data.eval_split` (never test) every `eval_every` steps and at the end;
     checkpoints every `checkpoint_every` steps and at the end, ranked by that accuracy.
  6. A non-finite loss raises `NonFiniteLossError` before anything is saved.
  7. The best (else final) students are exported as Hugging Face directories.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from sciqa_jax import checkpoints as checkpoints_lib
from sciqa_jax import config as config_lib
from sciqa_jax import errors
from sciqa_jax import evaluation
from sciqa_jax import inference
from sciqa_jax import input_pipeline
from sciqa_jax import phases as phases_lib
from sciqa_jax import reporting
from sciqa_jax import sharding
from sciqa_jax import stage2
from sciqa_jax import train_step as train_step_lib
from sciqa_jax.data.registry import Split, check_disjoint, get_task, load_examples
from sciqa_jax.models import init_students, save_pretrained
from sciqa_jax.objectives import Objective

log = logging.getLogger(__name__)


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """The training loss or gradient became NaN/inf."""


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _validation_split(config, training_examples):
  """The eval split's examples, or None (with a warning) when validation cannot run. Checked
  disjoint from the examples training reads: a leaked question would select checkpoints on it."""
  if not config.train.validate:
    return None
  task = get_task(config.task)
  if config.data.eval_split not in task.splits:
    log.warning("validation disabled: task %s has no split %r (its splits: %s)", task.name,
                config.data.eval_split, ", ".join(task.splits))
    return None
  validation = load_examples(config, config.data.eval_split)
  trained_on = Split(task, config.data.train_split, training_examples, validation.report)
  check_disjoint(config, trained_on, validation)
  return validation


def _host_params(params):
  """The whole params on every host (export writes complete files)."""
  if jax.process_count() == 1:
    return jax.device_get(params)
  return multihost_utils.process_allgather(params, tiled=True)


class _Run:
  """One training run's context: built by `train`, read by the phase loop."""

  def __init__(self, config, workdir: str, *, progress: bool):
    self.config, self.workdir = config, os.path.abspath(workdir)
    self.is_writer = jax.process_index() == 0
    os.makedirs(self.workdir, exist_ok=True)
    self.objective = Objective.from_config(config.objective)
    self.phases = phases_lib.plan_phases(self.objective, int(config.train.steps),
                                         int(config.train.answer_steps))
    self.optimizer = phases_lib.make_run_optimizer(config.train, self.phases)
    self.config_dict = json.loads(config.to_json_best_effort())
    self.checkpointer = checkpoints_lib.Checkpointer(self.workdir,
                                                     keep=config.train.keep_checkpoints)
    self.resumed_from = self.checkpointer.latest_step()
    config_path = os.path.join(self.workdir, "config.json")
    if self.resumed_from is not None and os.path.exists(config_path):
      with open(config_path) as f:
        checkpoints_lib.check_compatible(json.load(f), self.config_dict)
    self.teacher_pairs = input_pipeline.training_pairs(config, self.objective)
    self.tokenizer = self._tokenizer()
    if self.is_writer:
      reporting.write_json(config_path, self.config_dict)
    self.model, self.model_config, init = init_students(config, self.tokenizer,
                                                        self.objective.students)
    self.mesh = sharding.make_mesh(config.train.parallelism)
    rng = jax.random.key(config.seed + 1)
    self.state, self.shardings = sharding.init_sharded_state(
        lambda p: train_step_lib.create_train_state(p, self.optimizer, rng), init,
        mesh=self.mesh, parallelism=config.train.parallelism)
    self.validation = _validation_split(
        config, list({e.id: e for e, _ in self.teacher_pairs}.values()))
    self.writer = reporting.MetricWriter(self.workdir, self.is_writer,
                                         resume_step=self.resumed_from)
    self.peak = reporting.device_peak_flops(jax.devices()[0])
    self.meta = {"config": self.config_dict, "t5_config": self.model_config.to_hf(),
                 "students": list(self.objective.students),
                 "phases": phases_lib.plan_table(self.phases)}
    self.bar = tqdm(total=self.phases[-1].end, unit="step", desc="train", dynamic_ncols=True,
                    disable=not (progress and self.is_writer))
    self.batches: dict[str, input_pipeline.Batches] = {}
    self.truncation: dict[str, str] = {}
    self.loss = self.tokens_per_sec = self.mfu = None
    self.compilations = 0
    # Step metrics fetched since the last metrics row, restored from a checkpoint saved between
    # two rows: the next row then averages the same steps as in an uninterrupted run.
    self.open_interval: list[dict] = []

  def _tokenizer(self):
    texts = input_pipeline.tokenizer_training_texts(self.teacher_pairs, self.objective)
    if self.is_writer:
      tokenizer = input_pipeline.prepare_tokenizer(self.config.model, self.workdir, texts)
    _barrier("tokenizer")
    if not self.is_writer:
      tokenizer = input_pipeline.prepare_tokenizer(self.config.model, self.workdir, (),
                                                   is_writer=False)
    return tokenizer

  def restore(self) -> tuple[int, int]:
    """Restores the latest checkpoint into `self.state`; returns (global step, phase index)."""
    step = self.resumed_from
    saved = self.checkpointer.read_meta(step)
    checkpoints_lib.check_compatible(saved["config"], self.config_dict)
    if saved.get("phases") != self.meta["phases"]:
      raise checkpoints_lib.CheckpointMismatchError(
          f"checkpoint step {step} in {self.workdir} was made for the phases "
          f"{saved.get('phases') or '(none recorded: an older sciqa-jax)'} (name, start, end) "
          f"but this run plans {self.meta['phases']}: train.steps, train.answer_steps or "
          "objective.stage2_rationales changed; use another --workdir or the same settings")
    restored = self.checkpointer.restore(step, self.state, self.shardings,
                                         config=self.config_dict)
    self.state = restored.state
    self.open_interval = reporting.metrics_from_json(restored.meta.get("open_interval", []))
    return step, restored.meta["phase_index"]

  def runner(self, max_input_length: int, max_target_length: int) -> inference.Runner:
    """The students where they train: on the mesh, in their training layout."""
    return inference.Runner(self.model, self.state.params, self.tokenizer,
                            placement=inference.OnMesh(self.mesh),
                            batch_size=self.config.eval.batch_size,
                            max_input_length=max_input_length,
                            max_target_length=max_target_length)

  def batches_for(self, phase: phases_lib.Phase) -> input_pipeline.Batches:
    """The batch sequence of the phase's row source (built on first use, shared by phases)."""
    if phase.rows not in self.batches:
      pairs = self.teacher_pairs
      c = self.config
      if phase.rows == phases_lib.STUDENT_ROWS:
        # Stage-1 inputs are padded per batch (the ladder); an "auto" cap defers to evaluation's.
        cap = c.train.max_input_length
        runner = self.runner(c.eval.max_input_length if cap == input_pipeline.AUTO else cap,
                             c.eval.max_rationale_length)
        pairs = stage2.answer_phase_pairs(c, self.workdir, runner, self.objective, pairs,
                                          self.is_writer)
      rows = input_pipeline.tokenize_rows(
          pairs, self.objective, self.tokenizer, max_input_length=c.train.max_input_length,
          max_target_length=c.train.max_target_length,
          streams=phases_lib.rows_streams(phase.rows, self.phases))
      for name, stats in rows.stats.items():
        self.truncation[f"{phase.rows}/{name}"] = stats.describe(name)
        log.info("%s rows, %s", phase.rows, stats.describe(name))
        for warning in stats.warnings(name):
          log.warning("%s rows, %s", phase.rows, warning)
      self.batches[phase.rows] = input_pipeline.Batches(
          rows, global_batch_size=c.train.batch_size,
          seed=c.seed + (phase.rows == phases_lib.STUDENT_ROWS),
          process_index=jax.process_index(), process_count=jax.process_count())
    return self.batches[phase.rows]

  def validate(self) -> float:
    split = self.validation
    result = evaluation.evaluate_split(
        self.model, self.state.params, self.tokenizer, self.objective, split.examples,
        self.config.eval, answer_type=split.task.answer_type, seed=self.config.seed,
        progress=False, placement=inference.OnMesh(self.mesh),
        parse_answer=split.task.parse_answer)
    return float(result.accuracy)

  def export(self) -> dict[str, str]:
    """Writes the best (else final) students as Hugging Face directories; returns their paths."""
    best_step = self.checkpointer.manager.best_step()
    if best_step is not None and best_step != self.checkpointer.latest_step():
      params = self.checkpointer.restore_params(best_step)  # stored whole: fits any mesh
    else:
      params = _host_params(self.state.params)
    out = {}
    for student in self.objective.students:
      out[student] = os.path.join(self.workdir, "export", student)
      if self.is_writer:
        save_pretrained(self.model_config, params[student], out[student],
                        tokenizer=self.tokenizer)
    return out


def _run_phase(run: _Run, phase: phases_lib.Phase, index: int, global_step: int) -> int:
  """Trains `phase` from `global_step` to its end; returns the global step reached."""
  c = run.config.train
  batches = run.batches_for(phase)
  step_fn = sharding.jit_train_step(
      train_step_lib.make_train_step(run.model, run.optimizer,
                                     phases_lib.StreamsView(run.objective.name, phase.streams),
                                     label_smoothing=c.label_smoothing, z_loss=c.z_loss),
      run.shardings, sharding.batch_sharding(run.mesh))
  flops_per_step = c.batch_size * reporting.train_flops_per_row(
      run.state.params, phase.streams,
      {name: (batches.rows.arrays[name]["input_ids"].shape[1],
              batches.rows.arrays[name]["labels"].shape[1]) for name in phase.stream_names})
  meta = dict(run.meta, phase=phase.name, phase_index=index)
  pending = []  # (step, device metrics) not yet fetched
  interval, run.open_interval = run.open_interval, []  # fetched since the last metrics row
  timer = reporting.Throughput()
  while global_step < phase.end:
    k = phases_lib.batch_index(global_step, phase, run.phases)
    rows = batches.get(k)
    batch = {name: rows[name] for name in phase.stream_names}
    timer.add_tokens(sum(int(b["attention_mask"].sum() + b["decoder_attention_mask"].sum())
                         for b in batch.values()) * jax.process_count())
    run.state, metrics = step_fn(run.state, sharding.shard_batch(batch, run.mesh))
    global_step += 1
    pending.append((global_step, metrics))
    timer.step(metrics)
    run.bar.update(1)
    do_log = global_step % c.log_every == 0 or global_step == phase.end
    do_eval = run.validation is not None and phases_lib.is_validation_step(
        global_step, run.phases, c.eval_every)
    do_save = global_step % c.checkpoint_every == 0 or global_step == phase.end or do_eval
    if not (do_log or do_save):
      continue
    interval += _fetch_finite(pending, phase, run.checkpointer)
    pending = []
    if do_log:
      means = {k: float(np.mean([m[k] for m in interval])) for k in interval[-1] if k != "finite"}
      means.update(timer.rates(flops_per_step, run.peak))
      run.loss, interval = means["loss"], []
      run.tokens_per_sec = means.get("tokens_per_sec", run.tokens_per_sec)
      run.mfu = means.get("mfu", run.mfu)
      run.writer.write(global_step, "train", means)
      run.bar.set_postfix(loss=f"{run.loss:.4f}", phase=phase.name)
    val_accuracy = None
    if do_eval:
      val_accuracy = run.validate()
      run.writer.write(global_step, "validation", {"accuracy": val_accuracy})
      run.bar.set_postfix(loss=f"{run.loss:.4f}", val_acc=f"{val_accuracy:.3f}")
    if do_save:
      run.checkpointer.save(global_step, run.state, val_accuracy=val_accuracy,
                            meta=dict(meta, open_interval=reporting.metrics_to_json(interval)))
  run.compilations += step_fn._cache_size()  # pylint: disable=protected-access
  return global_step


def _fetch_finite(pending, phase: phases_lib.Phase, checkpointer) -> list[dict]:
  """Device metrics to host; raises on the first non-finite step, before anything is saved."""
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, fetched):
    if not bool(m["finite"]):
      raise NonFiniteLossError(
          f"non-finite loss ({float(m['loss'])}) or gradient norm ({float(m['grad_norm'])}) at "
          f"step {step} (phase {phase.name}); the state was not saved, the latest checkpoint is "
          f"step {checkpointer.latest_step()}. Lower train.learning_rate or check the data")
  return fetched


def train(config, workdir: str, *, progress: bool = True) -> reporting.TrainSummary:
  """Runs (or resumes) training as configured; returns the summary train.py prints."""
  config_lib.check(config)
  run = _Run(config, workdir, progress=progress)
  try:
    global_step, phase_index = (0, 0) if run.resumed_from is None else run.restore()
    run.bar.update(global_step)
    for index in range(phase_index, len(run.phases)):
      phase = run.phases[index]
      global_step = _run_phase(run, phase, index, max(global_step, phase.start))
    run.checkpointer.wait()
    # Checkpoints with a validation accuracy are ranked by it (across restarts, from orbax's
    # stored metrics); without validation the final params are "best".
    best_step = run.checkpointer.manager.best_step()
    best_accuracy = None if best_step is None else \
        run.checkpointer.manager.metrics(best_step)[checkpoints_lib.VAL_METRIC]
    exported = run.export() if config.train.export_hf else {}
  finally:
    run.bar.close()
    run.checkpointer.close()
    run.writer.close()
  summary = reporting.TrainSummary(
      workdir=run.workdir, final_step=global_step, final_loss=run.loss, best_step=best_step,
      best_val_accuracy=best_accuracy, tokens_per_sec=run.tokens_per_sec, mfu=run.mfu,
      train_step_compilations=run.compilations, truncation=run.truncation, exported=exported,
      resumed_from=run.resumed_from)
  if run.is_writer:
    reporting.write_json(os.path.join(run.workdir, "summary.json"), dataclasses.asdict(summary))
  return summary
