"""train.py's loop: data, students, mesh, the jitted step, logging, validation, checkpoints, export.

All side effects of training live here; the step itself is the pure `train_step.make_train_step`.

Run outline (`train(config, workdir)`):
  1. Training rows from the rationale cache's train split (`input_pipeline`), the student tokenizer
     (trained or copied into `<workdir>/tokenizer/`), fixed-shape batches per host.
  2. Students: random init from `config.model.*` (vocab = the tokenizer's, rounded up to a multiple
     of 128) or one copy of `config.model.pretrained` per student, then laid out by a jitted state
     creation on a 1-D data mesh (`train.parallelism`: data-parallel or FSDP).
  3. Resume: if `<workdir>/checkpoints/` has a finished checkpoint, the state, the phase and the
     data-iterator position are restored, so the resumed run sees exactly the batches (and dropout
     keys) the uninterrupted run would have; `metrics.jsonl` is cut back to the restored step.
  4. The phases' steps (below) of the donated, jitted step. Every `log_every` steps the interval's
     mean metrics (loss, per-stream loss/accuracy, learning rate, grad norm, tokens/s, MFU where the
     device's peak is known; `loss` sums the phase's streams, so it drops where a stream stops)
     go to `metrics.jsonl` and TensorBoard (process 0 only). Metrics are fetched from the device
     only at log/checkpoint boundaries, so the host keeps queueing steps.
  5. Validation accuracy (`evaluation.evaluate_split` on `data.eval_split`, never test) every
     `eval_every` steps once every student has started training, and at the end; checkpoints
     every `checkpoint_every` steps and at the end, with the accuracy attached so the best one is
     kept.
  6. NaN guard: every step's `finite` flag is checked before any checkpoint and at every log step;
     a non-finite loss raises `NonFiniteLossError` naming the first bad step, and the bad state is
     never saved (the previous checkpoint stays the latest).
  7. Export of the best (highest validation accuracy; else final) students to
     `<workdir>/export/<student>/` as Hugging Face directories with the tokenizer.

Phases (`plan_phases`). Training is a sequence of phases over one TrainState; a phase is a span
of global steps, the streams whose loss it trains, and the rows it reads. Each student has its own
optimizer over the steps of the phases that train it (`train_step.make_students_optimizer`), so
a student that sits a phase out keeps its parameters and optimizer state exactly.
  Single-student objectives: one "joint" phase of `train.steps` (answer_only: of
  `train.answer_steps` when set, the budget of a student whose only job is answering).
  two_stage, `objective.stage2_rationales`:
  teacher  both streams on the teacher's rationales (Sci-CoT). With `train.answer_steps` A less
           than `train.steps` S: "joint" for steps 0..A, then "rationale" alone for A..S on the
           same batch sequence, so the rationale student trains exactly as in a joint run of S
           steps while the answer student (whose stream is learnt early and costs about half of
           each joint step) is an A-step run. (A > S: the answer stream goes on alone instead.)
  student  "rationale" (steps 0..S, teacher rows), then the trained rationale student generates
           (greedy, `eval.max_rationale_length` tokens) one rationale per train question, written
           to `<workdir>/stage2_rationales.jsonl`, and "answer" (steps S..S+A) trains the answer
           student on `question + student rationale -> answer`, the rationales it will see at
           test time.
  mix      as student, but the answer phase trains on the teacher's and the student's rationales
           (both rows for every question).
  Checkpoint steps count globally across phases, and the phase is stored with each checkpoint, so
  a run interrupted in any phase resumes in it. A shared student (`objective.shared_student`)
  explains and answers with one model: one "joint" phase of `train.steps`, teacher rationales only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import numpy as np

from sciqa_jax import checkpoints as checkpoints_lib
from sciqa_jax import input_pipeline
from sciqa_jax import sharding
from sciqa_jax import train_step as train_step_lib
from sciqa_jax.objectives import ANSWER, ANSWER_ONLY, RATIONALE, TWO_STAGE, Objective, Stream

log = logging.getLogger(__name__)

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


class NonFiniteLossError(FloatingPointError):
  """The training loss or gradient became NaN/inf."""


# Where a phase's rows come from: the cache's (teacher) rationales, or the stage-1 student's.
TEACHER_ROWS = "teacher"
STUDENT_ROWS = "student"


@dataclasses.dataclass(frozen=True)
class Phase:
  """Steps `start .. end - 1` train `streams` on the rows of `rows` (see the module docstring)."""

  name: str  # "joint" | "rationale" | "answer"
  streams: tuple[Stream, ...]
  start: int
  end: int
  rows: str  # TEACHER_ROWS | STUDENT_ROWS


@dataclasses.dataclass(frozen=True)
class _StreamsView:
  """The loss's view of an objective restricted to some streams (`losses.objective_loss` reads
  only `.name` and `.streams`)."""

  name: str
  streams: tuple[Stream, ...]


@dataclasses.dataclass
class TrainSummary:
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
    lines = [f"workdir: {self.workdir}", f"final step: {self.final_step}",
             f"final train loss: {_fmt(self.final_loss)}",
             f"best step: {self.best_step} (validation accuracy {_fmt(self.best_val_accuracy)})",
             f"throughput: {_fmt(self.tokens_per_sec)} tokens/s, MFU {_fmt(self.mfu)}",
             f"train step compilations: {self.train_step_compilations}"]
    if self.resumed_from is not None:
      lines.append(f"resumed from step {self.resumed_from}")
    lines += [f"truncation, {text}" for text in self.truncation.values()]
    lines += [f"exported {student}: {path}" for student, path in self.exported.items()]
    return "\n".join(lines)


def _fmt(value) -> str:
  return "n/a" if value is None else f"{value:.4g}"


# ---- planning --------------------------------------------------------------------------------


def plan_phases(objective: Objective, steps: int, answer_steps: int = 0) -> list[Phase]:
  """The training phases of an objective (see the module docstring); `answer_steps` 0 = `steps`."""
  if steps < 1 or answer_steps < 0:
    raise ValueError(f"train.steps={steps} must be >= 1 and train.answer_steps={answer_steps} "
                     ">= 0")
  answer_steps = answer_steps or steps
  if objective.name == ANSWER_ONLY:
    return [Phase("joint", objective.streams, 0, answer_steps, TEACHER_ROWS)]
  if objective.name != TWO_STAGE:
    return [Phase("joint", objective.streams, 0, steps, TEACHER_ROWS)]
  if objective.shared_student:
    if objective.stage2_rationales != "teacher":
      raise ValueError(f"objective.stage2_rationales={objective.stage2_rationales!r} needs two "
                       "students; set objective.shared_student=False or stage2_rationales='teacher'")
    return [Phase("joint", objective.streams, 0, steps, TEACHER_ROWS)]
  by_name = {stream.name: stream for stream in objective.streams}
  rationale, answer = by_name[RATIONALE], by_name[ANSWER]
  if objective.stage2_rationales != "teacher":
    return [Phase(RATIONALE, (rationale,), 0, steps, TEACHER_ROWS),
            Phase(ANSWER, (answer,), steps, steps + answer_steps, STUDENT_ROWS)]
  both = min(steps, answer_steps)
  phases = [Phase("joint", (rationale, answer), 0, both, TEACHER_ROWS)]
  if steps > both:
    phases.append(Phase(RATIONALE, (rationale,), both, steps, TEACHER_ROWS))
  if answer_steps > both:
    phases.append(Phase(ANSWER, (answer,), both, answer_steps, TEACHER_ROWS))
  return phases


def student_spans(phases: list[Phase]) -> dict[str, tuple[int, int]]:
  """{student: (first step, end step)} of the phases that train it (contiguous by construction)."""
  spans: dict[str, tuple[int, int]] = {}
  for phase in phases:
    for stream in phase.streams:
      start, end = spans.get(stream.student, (phase.start, phase.end))
      spans[stream.student] = (min(start, phase.start), max(end, phase.end))
  return spans


def is_validation_step(step: int, phases: list[Phase], eval_every: int) -> bool:
  """At the end of the run, and every `eval_every` steps once every student has started training:
  validation scores the whole pipeline (stage 2 on student rationales starts after stage 1)."""
  if step == phases[-1].end:
    return True
  every_student_started = max(start for start, _ in student_spans(phases).values())
  return bool(eval_every) and step > every_student_started and step % eval_every == 0


def make_run_optimizer(train_config, phases: list[Phase]):
  """`make_optimizer` for one student; one optimizer per student over its span for several."""
  spans = student_spans(phases)
  accum = int(train_config.grad_accum_steps)
  for student, (start, end) in spans.items():
    if accum > 1 and (end - start) % accum:
      log.warning("student %r trains for %d steps, not a multiple of train.grad_accum_steps=%d: "
                  "the gradients of its last %d batch(es) are accumulated but never applied",
                  student, end - start, accum, (end - start) % accum)
  if len(spans) == 1:
    (steps,) = (end for start, end in spans.values())  # one student trains from step 0
    single = train_config.copy_and_resolve_references()
    single.steps = steps
    return train_step_lib.make_optimizer(single)
  return train_step_lib.make_students_optimizer(train_config, spans)


def device_peak_flops(device: jax.Device) -> float | None:
  if device.platform == "cpu":
    return None
  kind = device.device_kind.lower()
  for name, peak in PEAK_FLOPS:
    if name.lower() in kind:
      return peak
  return None


def train_flops_per_row(params: dict, streams: tuple[Stream, ...],
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


# ---- metrics output --------------------------------------------------------------------------


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
      with open(self.path, "w") as f:
        f.writelines(kept)
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2
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


# ---- students --------------------------------------------------------------------------------


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def model_config_from(config, tokenizer):
  """The students' T5Config for random init (architecture from config.model)."""
  from sciqa_jax.models import T5Config
  m = config.model
  return T5Config(vocab_size=round_up(len(tokenizer), 128), d_model=m.d_model, d_kv=m.d_kv,
                  d_ff=m.d_ff, num_layers=m.num_layers, num_decoder_layers=m.num_decoder_layers,
                  num_heads=m.num_heads, feed_forward_proj=m.feed_forward_proj,
                  tie_word_embeddings=m.tie_word_embeddings, dropout_rate=m.dropout_rate,
                  dtype=m.dtype, param_dtype=m.param_dtype,
                  eos_token_id=int(tokenizer.eos_token_id),
                  pad_token_id=int(tokenizer.pad_token_id or 0))


def init_students(config, tokenizer, students: tuple[str, ...]):
  """(model, model_config, {student: params}) from random init or `model.pretrained`.

  Params are made on one device and then laid out by the caller's jit: `models.init_params`
  compiles once per architecture per process (several students, and runs in one process, share
  it), which costs far less than tracing the initialiser inside the sharded state creation.
  """
  from sciqa_jax.models import T5, init_params, load_pretrained
  if config.model.init == "random":
    model_config = model_config_from(config, tokenizer)
    keys = jax.random.split(jax.random.key(config.seed), len(students))
    params = {s: init_params(model_config, keys[i]) for i, s in enumerate(students)}
    return T5(model_config), model_config, params
  if config.model.init != "pretrained":
    raise ValueError(f"model.init={config.model.init!r}; expected 'random' or 'pretrained'")
  if not config.model.pretrained:
    raise ValueError("model.init='pretrained' needs model.pretrained (a hub id or directory)")
  model, params = load_pretrained(config.model.pretrained, dtype=config.model.dtype,
                                  param_dtype=config.model.param_dtype)
  model_config = model.config.replace(dropout_rate=config.model.dropout_rate)
  if len(tokenizer) > model_config.vocab_size:
    raise ValueError(f"tokenizer {config.model.tokenizer!r} has {len(tokenizer)} tokens but "
                     f"{config.model.pretrained} only {model_config.vocab_size} embeddings")
  # The same arrays for every student: jit's outputs are distinct buffers per student.
  return T5(model_config), model_config, {s: params for s in students}


# ---- data ------------------------------------------------------------------------------------


def load_training_pairs(config, objective: Objective):
  """(example, rationale) rows from the cache's train split (answer_only may read the task)."""
  if config.cache_dir:
    from sciqa_jax.cache import read_records
    if not os.path.isdir(os.path.join(config.cache_dir, config.data.train_split)):
      raise FileNotFoundError(f"{config.cache_dir}/{config.data.train_split} not found: run "
                              "generate.py with this config first (config.cache_dir)")
    records = read_records(config.cache_dir, config.data.train_split)
  elif not objective.uses_rationales:
    records = _task(config).load(config.data.train_split, source=config.data.source,
                                 path=config.data.path,
                                 skip_bad_records=config.data.skip_bad_records,
                                 max_examples=config.data.max_examples)
  else:
    raise ValueError(f"config.cache_dir is empty but objective {objective.name!r} trains on "
                     "teacher rationales: run generate.py and pass --config.cache_dir")
  return input_pipeline.training_examples(records, objective)


def _task(config):
  from sciqa_jax.data.registry import get_task
  return get_task(config.task)


def _validation_examples(config):
  """The eval split's examples, or None (with a log line) when validation cannot run."""
  if not config.train.validate:
    return None
  try:
    from sciqa_jax import evaluation  # noqa: F401  (availability check)
    task = _task(config)
  except ImportError as error:
    log.warning("validation disabled: %s", error)
    return None
  if config.data.eval_split not in task.splits:
    log.warning("validation disabled: task %s has no split %r", task.name, config.data.eval_split)
    return None
  return task, task.load(config.data.eval_split, source=config.data.source, path=config.data.path,
                         skip_bad_records=config.data.skip_bad_records,
                         max_examples=config.data.max_examples)


def generate_rationales(model, params, tokenizer, objective: Objective, examples, *,
                        batch_size: int, max_input_length: int, max_new_tokens: int) -> list[str]:
  """Greedy rationales of the rationale student for `examples` (fixed shapes: one compilation)."""
  from sciqa_jax import decoding
  generate_fn = jax.jit(decoding.make_generate_fn(model, method="greedy",
                                                  max_new_tokens=max_new_tokens))
  ids, lengths, _, _ = input_pipeline.encode_texts(
      tokenizer, [objective.rationale_input(e) for e in examples], max_input_length)
  mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int32)
  device = jax.local_devices()[0]
  params = jax.device_put(params, device)
  rng = jax.random.key(0)
  texts = []
  for start in range(0, len(examples), batch_size):
    rows = np.arange(start, min(start + batch_size, len(examples)))
    padded = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
    out = generate_fn(params, ids[padded], mask[padded], rng)
    tokens = np.asarray(out.tokens)[:len(rows), 0]
    texts += tokenizer.batch_decode(tokens, skip_special_tokens=True)
  return [t.strip() for t in texts]


def stage2_pairs(config, workdir: str, phase_params, model, tokenizer, objective: Objective,
                 teacher_pairs, is_writer: bool):
  """The answer phase's rows: student rationales (and the teacher's, for "mix")."""
  examples = list({e.id: e for e, _ in teacher_pairs}.values())
  path = os.path.join(workdir, "stage2_rationales.jsonl")
  by_id = {}
  if os.path.exists(path):
    with open(path) as f:
      by_id = {row["id"]: row["rationale"] for row in map(json.loads, f)}
  if set(by_id) != {e.id for e in examples}:
    texts = generate_rationales(
        model, phase_params[RATIONALE], tokenizer, objective, examples,
        batch_size=config.eval.batch_size, max_input_length=config.train.max_input_length,
        max_new_tokens=config.eval.max_rationale_length)
    by_id = {e.id: t for e, t in zip(examples, texts)}
    if is_writer:
      with open(path + ".tmp", "w") as f:
        for e in examples:
          f.write(json.dumps({"id": e.id, "rationale": by_id[e.id]}) + "\n")
      os.replace(path + ".tmp", path)
  pairs = [(e, by_id[e.id]) for e in examples]
  if objective.stage2_rationales == "mix":
    pairs = list(teacher_pairs) + pairs
  return pairs


# ---- the loop --------------------------------------------------------------------------------


def _config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  keys = [k for k in history[-1] if k != "finite"]
  return {k: float(np.mean([h[k] for h in history])) for k in keys}


def _real_tokens(batch) -> int:
  return int(sum(b["attention_mask"].sum() + b["decoder_attention_mask"].sum()
                 for b in batch.values()))


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def train(config, workdir: str) -> TrainSummary:
  """Runs (or resumes) training as configured; returns the summary train.py prints."""
  workdir = os.path.abspath(workdir)
  is_writer = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  objective = Objective.from_config(config.objective)
  phases = plan_phases(objective, int(config.train.steps), int(config.train.answer_steps))
  # Built first, though used later: a bad optimizer setting fails before any data or model loads.
  optimizer = make_run_optimizer(config.train, phases)
  config_dict = _config_dict(config)

  checkpointer = checkpoints_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  latest = checkpointer.latest_step()
  old_config_path = os.path.join(workdir, "config.json")
  if latest is not None and os.path.exists(old_config_path):
    with open(old_config_path) as f:
      checkpoints_lib.check_compatible(json.load(f), config_dict)

  # ---- data and tokenizer ----
  teacher_pairs = load_training_pairs(config, objective)
  if is_writer:
    tokenizer = input_pipeline.prepare_tokenizer(
        config.model, workdir, input_pipeline.tokenizer_training_texts(teacher_pairs, objective))
  _barrier("tokenizer")
  if not is_writer:
    tokenizer = input_pipeline.prepare_tokenizer(config.model, workdir, (), is_writer=False)
  if is_writer:
    with open(old_config_path, "w") as f:
      json.dump(config_dict, f, indent=2)

  # ---- students, mesh ----
  model, model_config, init = init_students(config, tokenizer, objective.students)
  mesh = sharding.make_mesh(config.train.parallelism)
  batch_sharding = sharding.batch_sharding(mesh)
  rng = jax.random.key(config.seed + 1)

  resume_step = latest
  validation = _validation_examples(config)
  writer = MetricWriter(workdir, is_writer, resume_step=resume_step)
  peak = device_peak_flops(jax.devices()[0])
  plan = [[phase.name, phase.start, phase.end] for phase in phases]
  meta_base = {"config": config_dict, "t5_config": model_config.to_hf(),
               "students": list(objective.students), "phases": plan}
  truncation: dict[str, str] = {}
  summary_loss, tokens_per_sec, mfu = None, None, None
  compilations = 0
  # Rows and their batch iterator per row source; phases on the same rows share the iterator, so
  # a phase that continues another one continues its batch sequence.
  data: dict[str, tuple[input_pipeline.TokenizedRows, input_pipeline.BatchIterator]] = {}

  try:
    # ---- the one TrainState of the run (restored if there is a checkpoint) ----
    make_state = lambda p: train_step_lib.create_train_state(p, optimizer, rng)
    abstract_state = jax.eval_shape(make_state, init)
    shardings = sharding.state_shardings(abstract_state, mesh, config.train.parallelism)
    state = jax.jit(make_state, out_shardings=shardings)(init)
    del init
    phase_index, global_step, data_state = 0, 0, None
    if latest is not None:
      # The phase and the optimizer spans a checkpoint is in depend on the plan: compared from
      # the checkpoint's meta before any array is read (after the model / objective keys, so a
      # changed objective is named as such).
      saved_meta = checkpointer.read_meta(latest)
      checkpoints_lib.check_compatible(saved_meta["config"], config_dict)
      saved_plan = saved_meta.get("phases")
      if saved_plan != plan:
        raise checkpoints_lib.CheckpointMismatchError(
            f"checkpoint step {latest} in {workdir} was made for the phases "
            f"{saved_plan or '(none recorded: an older sciqa-jax)'} (name, start, end) but this "
            f"run plans {plan}: train.steps, train.answer_steps or objective.stage2_rationales "
            "changed; use another --workdir or the same settings")
      restored = checkpointer.restore(latest, state, shardings, config=config_dict)
      state, global_step = restored.state, latest
      phase_index = restored.meta["phase_index"]
      data_state = restored.data_state[f"process_{jax.process_index()}"]

    for index, phase in enumerate(phases):
      if index < phase_index:
        continue
      if phase.rows not in data:
        if phase.rows == STUDENT_ROWS:
          pairs = stage2_pairs(config, workdir, _host_params(state.params), model, tokenizer,
                               objective, teacher_pairs, is_writer)
        else:
          pairs = teacher_pairs
        streams = list(dict.fromkeys(s.name for p in phases if p.rows == phase.rows
                                     for s in p.streams))
        rows = input_pipeline.tokenize_rows(
            pairs, objective, tokenizer, max_input_length=config.train.max_input_length,
            max_target_length=config.train.max_target_length, streams=streams)
        for name, stats in rows.stats.items():
          truncation[f"{phase.rows}/{name}"] = stats.describe(name)
          if is_writer:
            log.info("%s rows, %s", phase.rows, stats.describe(name))
        iterator = input_pipeline.BatchIterator(
            rows, global_batch_size=config.train.batch_size,
            seed=config.seed + (phase.rows == STUDENT_ROWS),
            process_index=jax.process_index(), process_count=jax.process_count())
        data[phase.rows] = rows, iterator
      rows, iterator = data[phase.rows]
      if data_state is not None:
        iterator.set_state(data_state)
        data_state = None
      global_step = max(global_step, phase.start)

      stream_names = [stream.name for stream in phase.streams]
      view = _StreamsView(objective.name, phase.streams)
      step_fn = sharding.jit_train_step(
          train_step_lib.make_train_step(model, optimizer, view,
                                         label_smoothing=config.train.label_smoothing,
                                         z_loss=config.train.z_loss),
          shardings, batch_sharding)
      flops_per_step = config.train.batch_size * train_flops_per_row(
          jax.eval_shape(lambda s: s.params, abstract_state), phase.streams,
          {name: (rows.arrays[name]["input_ids"].shape[1], rows.arrays[name]["labels"].shape[1])
           for name in stream_names})
      meta = dict(meta_base, phase=phase.name, phase_index=index)

      history: list[tuple[int, Any]] = []  # (step, device metrics) not yet fetched
      interval: list[dict] = []
      timer_start, timer_tokens, timer_steps = None, 0, 0

      def flush(upto_log: bool):
        """Fetches pending metrics; raises on the first non-finite step; logs if asked."""
        nonlocal history, interval, summary_loss
        fetched = jax.device_get([m for _, m in history])
        for (step, _), m in zip(history, fetched):
          if not bool(m["finite"]):
            raise NonFiniteLossError(
                f"non-finite loss ({float(m['loss'])}) or gradient norm "
                f"({float(m['grad_norm'])}) at step {step} (phase {phase.name}); the state was "
                f"not saved, the latest checkpoint is step {checkpointer.latest_step()}. Lower "
                "train.learning_rate or check the data")
          interval.append(m)
        history = []
        if upto_log and interval:
          summary_loss = float(np.mean([m["loss"] for m in interval]))
          return _mean_metrics(interval)
        return None

      while global_step < phase.end:
        batch = {name: features for name, features in next(iterator).items()
                 if name in stream_names}
        timer_tokens += _real_tokens(batch) * jax.process_count()
        state, metrics = step_fn(state, sharding.shard_batch(batch, mesh))
        global_step += 1
        history.append((global_step, metrics))
        if timer_start is None:
          # Exclude the first step (compilation) from throughput.
          jax.block_until_ready(metrics)
          timer_start, timer_tokens, timer_steps = time.perf_counter(), 0, 0
        else:
          timer_steps += 1
        is_last = global_step == phase.end
        do_log = global_step % config.train.log_every == 0 or is_last
        do_eval = validation is not None and is_validation_step(global_step, phases,
                                                                config.train.eval_every)
        do_save = global_step % config.train.checkpoint_every == 0 or is_last or do_eval
        if not (do_log or do_save):
          continue
        means = flush(do_log)
        if means is not None:
          elapsed = time.perf_counter() - timer_start
          if timer_steps and elapsed > 0:
            tokens_per_sec = timer_tokens / elapsed
            means["tokens_per_sec"] = tokens_per_sec
            means["steps_per_sec"] = timer_steps / elapsed
            if peak is not None:
              mfu = flops_per_step * timer_steps / elapsed / (peak * jax.device_count())
              means["mfu"] = mfu
          timer_start, timer_tokens, timer_steps = time.perf_counter(), 0, 0
          writer.write(global_step, "train", means)
          interval = []
        val_accuracy = None
        if do_eval:
          val_accuracy = _validate(state.params, model, tokenizer, objective, validation, config)
          writer.write(global_step, "validation", {"accuracy": val_accuracy})
        if do_save:
          data_state_now = checkpoints_lib.gather_data_states(iterator.get_state())
          checkpointer.save(global_step, state, meta=meta, data_state=data_state_now,
                            val_accuracy=val_accuracy)
      compilations += step_fn._cache_size()  # pylint: disable=protected-access
    params = state.params
    checkpointer.wait()

    # Checkpoints with a validation accuracy are ranked by it (across restarts, from orbax's
    # stored metrics); without validation the final params are "best".
    best_step = checkpointer.manager.best_step()
    best = (best_step, None if best_step is None else
            checkpointer.manager.metrics(best_step)[checkpoints_lib.VAL_METRIC])
    exported = {}
    if config.train.export_hf:
      exported = _export(workdir, checkpointer, params, model_config, tokenizer, objective,
                         best_step, is_writer)
  finally:
    checkpointer.close()
    writer.close()

  summary = TrainSummary(
      workdir=workdir, final_step=global_step, final_loss=summary_loss, best_step=best[0],
      best_val_accuracy=best[1], tokens_per_sec=tokens_per_sec, mfu=mfu,
      train_step_compilations=compilations, truncation=truncation, exported=exported,
      resumed_from=resume_step)
  if is_writer:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(dataclasses.asdict(summary), f, indent=2)
  return summary


def _host_params(params):
  if jax.process_count() == 1:
    return jax.device_get(params)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(params, tiled=True)


def _validate(params, model, tokenizer, objective, validation, config) -> float:
  from sciqa_jax.evaluation import evaluate_split
  task, examples = validation
  result = evaluate_split(model, _host_params(params), tokenizer, objective, examples, config.eval,
                          answer_type=task.answer_type, seed=config.seed, progress=False,
                          parse_answer=task.parse_answer)
  return float(result.accuracy)


def _export(workdir, checkpointer, params, model_config, tokenizer, objective, best_step,
            is_writer) -> dict[str, str]:
  """Writes the best (else final) students as Hugging Face directories; returns their paths."""
  from sciqa_jax.models import save_pretrained
  if best_step is not None and best_step != checkpointer.latest_step():
    # Checkpoint params are stored whole, so restoring on one device works for any mesh.
    params = checkpointer.restore_params(best_step)
  else:
    params = _host_params(params)
  out = {}
  for student in objective.students:
    path = os.path.join(workdir, "export", student)
    if is_writer:
      save_pretrained(model_config, params[student], path, tokenizer=tokenizer)
    out[student] = path
  return out
