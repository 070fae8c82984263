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
  * `position_bias_lr_scale` multiplies the updates of T5's relative-position bias tables. Adam and
    Adafactor move every parameter by about the learning rate per step, and those tables start
    near 0 (std d_model**-0.5) yet need values of several units before attention can pick a
    position sharply. At a from-scratch learning rate of ~1e-3 that takes thousands of steps, and
    until then a student cannot point at a position: it cannot copy the concluded choice from the
    end of a rationale, or the number beside an item's name (found on the built-in task: stage 2
    sat at chance for 1600 steps, and reached 100% on teacher rationales within 400 steps with a
    30x scale). Fine-tuning a pretrained T5, whose tables are already trained, keeps the default 1.

Step counting: `train.steps` and `train.warmup_steps` count `train_step` calls (batches). With
`grad_accum_steps = k` the optimizer updates once every k calls, so the schedule runs over
`steps // k` updates with `warmup_steps // k` warmup updates.
"""

from __future__ import annotations

from typing import Any, Callable

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


def _injected_learning_rate(opt_state: Any) -> jax.Array | None:
  """The learning rate recorded by `inject_hyperparams` in `opt_state`, or None if there is none.

  With `make_optimizer` it is the rate of the most recent optimizer update; a user-supplied
  optimizer without inject_hyperparams simply has no learning-rate metric.
  """
  hyper_types = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
  leaves = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, hyper_types))
  for leaf in leaves:
    if isinstance(leaf, hyper_types) and "learning_rate" in leaf.hyperparams:
      return jnp.asarray(leaf.hyperparams["learning_rate"], jnp.float32)
  return None


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
  before clipping), `learning_rate` (when the optimizer injects it, as `make_optimizer`'s does),
  and `finite` (bool: loss and gradient norm are finite; the caller decides what to do if not —
  the update has been applied either way).
  """

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
    learning_rate = _injected_learning_rate(opt_state)
    if learning_rate is not None:
      metrics["learning_rate"] = learning_rate
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
