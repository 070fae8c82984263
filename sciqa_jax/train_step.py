"""The functional training core: TrainState, the optimizer from the config, train and eval steps.

Design:
  * `TrainState` holds arrays only (step, params, optimizer state, rng key data). The model and the
    optimizer are closed over by the step function instead, so the state is an ordinary pytree that
    orbax can checkpoint, `jax.jit` can donate, and `sharding.state_shardings` can annotate leaf by
    leaf.
  * `make_train_step` returns a pure function `(state, batch) -> (state, metrics)`: no I/O, no
    globals, fixed shapes; the caller jits it (see `sharding.jit_train_step`, which wires shardings
    and `donate_argnums=0`). Dropout keys are split from `state.rng` every step, so a run is a
    function of the seed and the data order only, and restarts from a checkpoint reproduce it.
  * Mixed precision is the model's business (`T5Config.dtype`, e.g. bfloat16 activations with
    float32 params); the loss is computed in float32 (`sciqa_jax.losses`), and gradients are cast to
    float32 before the optimizer so that the optimizer state and the updates stay float32.
  * `make_optimizer` builds the whole optax chain from `config.train`: global-norm clipping, then
    Adafactor or AdamW with a warmup + decay schedule wrapped in `optax.inject_hyperparams` (so the
    learning rate actually applied is in the optimizer state and is logged from there), then
    `optax.MultiSteps` for gradient accumulation. Clipping sits inside MultiSteps, so it clips the
    accumulated gradient, as one large batch would be clipped.
  * `make_students_optimizer` gives each student of a multi-student objective (two_stage's
    rationale and answer students) its own such chain over its own span of steps, so one student
    can stop (or start) training while the other goes on, and each sees the optimizer of a
    standalone run of its length.
  * `position_bias_lr_scale` multiplies the updates of T5's relative-position bias tables. Adam and
    Adafactor move every parameter by about the learning rate per step, and those tables start
    near 0 (std d_model**-0.5) yet need values of several units before attention can pick a
    position sharply. At a from-scratch learning rate of ~1e-3 that takes thousands of steps, and
    until then a student cannot point at a position: it cannot copy the concluded choice from the
    end of a rationale, or the number beside an item's name (found on the built-in task; evidence
    in docs/recipe_notes.md). Fine-tuning a pretrained T5, whose tables are already trained,
    keeps the default 1.

Step counting: `train.steps` and `train.warmup_steps` count `train_step` calls (batches). With
`grad_accum_steps = k` the optimizer updates once every k calls, so the schedule runs over
`steps // k` updates with `warmup_steps // k` warmup updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sciqa_jax.losses import objective_loss
from sciqa_jax.models.t5 import POSITION_BIAS_PARAM
from sciqa_jax.objectives import Objective

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("constant", "linear", "cosine", "rsqrt")

Batch = dict[str, dict[str, jax.Array]]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as arrays.

  Attributes:
    step: int32 scalar, the number of `train_step` calls so far (micro-steps with accumulation).
    params: `{student name: t5 params}`.
    opt_state: the optax state of `make_optimizer`'s transformation.
    rng: uint32 `[2]` raw key data (not a typed key, which checkpoints less portably).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def create_train_state(params: Any, optimizer: optax.GradientTransformation,
                       rng: jax.Array) -> TrainState:
  """A fresh state at step 0. `rng` may be a raw uint32 key or a typed key (stored as key data)."""
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=jnp.asarray(rng, jnp.uint32))


def _train_section(config):
  """`config.train` given a whole config, or the train section itself."""
  return config.train if "train" in config else config


def make_schedule(train_config) -> optax.Schedule:
  """The learning-rate schedule of `train_config` as a function of the optimizer-update count.

  Linear warmup from 0 to `learning_rate` over the warmup updates, then:
    constant  `learning_rate`;
    linear    linear decay to 0 at the last update;
    cosine    cosine decay to 0 at the last update;
    rsqrt     `learning_rate * sqrt(w / (w + t))`, t updates after warmup, w = max(warmup, 1):
              T5's inverse square root, continuous with the warmup's end.
  """
  train = _train_section(train_config)
  if train.schedule not in SCHEDULES:
    raise ValueError(f"train.schedule={train.schedule!r}; expected one of {SCHEDULES}")
  accum = int(train.grad_accum_steps)
  if accum < 1:
    raise ValueError(f"train.grad_accum_steps={accum} must be >= 1")
  lr = float(train.learning_rate)
  total = max(int(train.steps) // accum, 1)
  warmup = int(train.warmup_steps) // accum
  if int(train.warmup_steps) < 0 or warmup >= total:
    # make_students_optimizer passes a student's span as `steps`: name where that comes from.
    raise ValueError(
        f"train.warmup_steps={train.warmup_steps} leaves no step after warmup in the "
        f"{train.steps} steps this learning-rate schedule covers ({total} optimizer updates with "
        f"train.grad_accum_steps={accum}; the steps are train.steps, or for a student that trains "
        "only part of the run its span, e.g. train.answer_steps): the learning rate would never "
        "leave warmup")
  decay_steps = max(total - warmup, 1)
  if train.schedule == "constant":
    decay = optax.constant_schedule(lr)
  elif train.schedule == "linear":
    decay = optax.linear_schedule(lr, 0.0, decay_steps)
  elif train.schedule == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps)
  else:
    scale = float(max(warmup, 1))
    # join_schedules also evaluates this before the boundary (count < 0): clamp.
    decay = lambda count: lr * jnp.sqrt(scale / (scale + jnp.maximum(count, 0)))
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _is_position_bias(path) -> bool:
  return any(getattr(key, "key", None) == POSITION_BIAS_PARAM for key in path)


def scale_position_bias_updates(scale: float) -> optax.GradientTransformation:
  """Multiplies the updates of every `relative_attention_bias` leaf by `scale` (others unchanged)."""

  def update(updates, state, params=None):
    del params
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, u: u * scale if _is_position_bias(path) else u, updates)
    return scaled, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _decay_mask(params: Any) -> Any:
  """AdamW decays matrices only: layer-norm scales (1-D) are left alone, as is customary."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(train_config) -> optax.GradientTransformation:
  """The optax transformation described by `config.train` (or a whole config).

  Reads `optimizer` (adafactor | adamw), `learning_rate`, `schedule`, `warmup_steps`, `steps`,
  `weight_decay` (adamw only), `grad_clip_norm` (0 = off), `grad_accum_steps` and
  `position_bias_lr_scale` (see the module docstring).
  Adafactor keeps optax's (= T5's) defaults: factored second moments, decay rate 0.8, update
  clipping 1.0, updates scaled by the parameter RMS.
  """
  train = _train_section(train_config)
  if train.optimizer not in OPTIMIZERS:
    raise ValueError(f"train.optimizer={train.optimizer!r}; expected one of {OPTIMIZERS}")
  schedule = make_schedule(train)
  position_bias_lr_scale = float(train.position_bias_lr_scale)
  if position_bias_lr_scale <= 0:
    raise ValueError(f"train.position_bias_lr_scale={position_bias_lr_scale} must be > 0")

  # Closures taking only `learning_rate`, so inject_hyperparams turns just that into state
  # (injecting Adafactor's integer/dtype arguments would make them tracers under jit).
  if train.optimizer == "adafactor":
    def base(learning_rate):
      return optax.adafactor(learning_rate=learning_rate)
  else:
    weight_decay = float(train.weight_decay)

    def base(learning_rate):
      return optax.adamw(learning_rate=learning_rate, weight_decay=weight_decay, mask=_decay_mask)
  parts = []
  if train.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(train.grad_clip_norm)))
  parts.append(optax.inject_hyperparams(base)(learning_rate=schedule))
  if position_bias_lr_scale != 1.0:
    parts.append(scale_position_bias_updates(position_bias_lr_scale))
  optimizer = optax.chain(*parts)
  if int(train.grad_accum_steps) > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=int(train.grad_accum_steps))
    optimizer = optimizer.gradient_transformation()
  return optimizer


class ActiveBetweenState(NamedTuple):
  calls: jax.Array  # int32: update calls so far (train_step calls)
  inner: Any


def active_between(start: int, end: int,
                   inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner` on update calls `start .. end - 1` (counted from 0); outside them zero updates, and
  `inner`'s state is left as it was.

  So a student trained for a span of a longer run sees exactly the optimizer of a standalone run
  of `end - start` steps (schedule position, moments, bias correction), not one that kept counting
  or kept moving the parameters on momentum while its stream was out of the loss.
  """
  if not 0 <= start < end:
    raise ValueError(f"optimizer span [{start}, {end}) is empty or negative")

  def init(params):
    return ActiveBetweenState(jnp.zeros((), jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    active = (state.calls >= start) & (state.calls < end)
    # Selects rather than lax.cond: on CPU the conditional made a two-stage step slower than a
    # single optimizer and the selects did not (docs/benchmarks.md). An inactive student's
    # discarded update is only elementwise work.
    new_updates, new_inner = inner.update(updates, state.inner, params)
    new_updates = jax.tree.map(lambda u: jnp.where(active, u, jnp.zeros_like(u)), new_updates)
    new_inner = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_inner, state.inner)
    return new_updates, ActiveBetweenState(state.calls + 1, new_inner)

  return optax.GradientTransformation(init, update)


def make_students_optimizer(train_config,
                            spans: Mapping[str, tuple[int, int]]) -> optax.GradientTransformation:
  """One `make_optimizer` chain per student (top-level key of the params), each for its own span.

  `spans[student] = (start, end)` in train_step calls: the student's optimizer, clipping and
  schedule are those of a run of `end - start` steps, applied only on those calls
  (`active_between`). Two students are two models: each is clipped by its own gradient norm, as it
  would be if trained alone. The trainer derives the spans from its phases (two_stage's answer
  student may train for fewer steps than the rationale student, or after it).
  """
  train = _train_section(train_config)
  transforms = {}
  for student, (start, end) in spans.items():
    student_train = train.copy_and_resolve_references()
    student_train.steps = end - start
    transforms[student] = active_between(start, end, make_optimizer(student_train))

  def labels(params):
    unknown = set(params) - set(spans)
    if unknown:
      raise ValueError(f"no optimizer span for students {sorted(unknown)}")
    return {student: jax.tree.map(lambda _, s=student: s, tree) for student, tree in params.items()}

  return optax.multi_transform(transforms, labels)


def _injected_learning_rates(opt_state: Any, students: set[str]) -> dict[str, jax.Array]:
  """The learning rates recorded by `inject_hyperparams` in `opt_state`, as metrics.

  `learning_rate` for one optimizer (`make_optimizer`); `<student>/learning_rate` for each of
  `make_students_optimizer`'s that belongs to one of `students` (those the step trains: a student
  sitting out keeps the rate of its last update, which would read as if it were still training).
  A user-supplied optimizer without inject_hyperparams simply has no learning-rate metric.
  """
  hyper_types = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
  found = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      opt_state, is_leaf=lambda x: isinstance(x, hyper_types))[0]:
    if isinstance(leaf, hyper_types) and "learning_rate" in leaf.hyperparams:
      student = next((k.key for k in path if isinstance(k, jax.tree_util.DictKey)), None)
      found.append((student, jnp.asarray(leaf.hyperparams["learning_rate"], jnp.float32)))
  if len(found) == 1:
    return {"learning_rate": found[0][1]}
  return {f"{student}/learning_rate": rate for student, rate in found if student in students}


def make_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    objective: Objective,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """A pure `train_step(state, batch) -> (state, metrics)`; jit it with `donate_argnums=0`.

  Metrics (float32 scalars unless noted): `loss`, per stream `<stream>/loss`, `<stream>/accuracy`,
  `<stream>/tokens`, `z_loss` when enabled, `grad_norm` (global norm of this batch's gradient
  before clipping), `learning_rate` (when the optimizer injects it, as `make_optimizer`'s does;
  `<student>/learning_rate` per student with `make_students_optimizer`),
  and `finite` (bool: loss and gradient norm are finite; the caller decides what to do if not —
  the update has been applied either way).
  """

  trained_students = {stream.student for stream in objective.streams}

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng, dropout_rng = jax.random.split(state.rng)

    def loss_fn(params):
      return objective_loss(model.apply, params, batch, objective, rng=dropout_rng,
                            deterministic=False, label_smoothing=label_smoothing, z_loss=z_loss)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    metrics = dict(metrics)
    metrics["grad_norm"] = grad_norm
    metrics.update(_injected_learning_rates(opt_state, trained_students))
    metrics["finite"] = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, objective: Objective) -> Callable[[Any, Batch], Metrics]:
  """A pure `eval_step(params, batch) -> metrics`: the objective's losses without dropout.

  The validation loss is the plain cross-entropy (no label smoothing, no z-loss), so it is
  comparable between runs with different regularisers. Metrics are those of
  `losses.objective_loss`; average `<stream>/loss` over batches weighted by `<stream>/tokens`.
  """

  def eval_step(params: Any, batch: Batch) -> Metrics:
    _, metrics = objective_loss(model.apply, params, batch, objective, rng=None,
                                deterministic=True)
    return metrics

  return eval_step
