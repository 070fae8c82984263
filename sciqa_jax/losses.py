"""Token cross-entropy and the objective loss: pure, jittable functions.

`token_cross_entropy` returns *sums* (loss, z-loss, correct tokens, tokens) rather than means, so
that callers can combine them exactly: across streams, evaluation batches or hosts. The mean is
taken once, in `objective_loss`, per stream.

Everything is computed in float32 whatever the model's compute dtype: bf16 activations are fine in
the network, but the softmax over a large vocabulary and the sum over tokens are not (T5X does the
same). Label smoothing follows T5X: the one-hot target becomes `1 - s` on the label and
`s / (V - 1)` elsewhere, and the entropy of that soft target is subtracted so that a perfect
prediction has loss 0 (the logged value stays comparable across smoothing settings). The z-loss of
PaLM/T5X, `z * logsumexp(logits)^2`, keeps the softmax normaliser close to 1 so that bf16 logits do
not drift.

`objective_loss` evaluates every stream of an `Objective` (see `sciqa_jax.objectives`) with the
params of that stream's student and returns `sum(weight * mean token loss)`. A stream's mean is over
its non-padding target tokens in the whole (global) batch, so the loss does not depend on how the
batch is split over devices.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from sciqa_jax.objectives import Objective

# The keys of one stream's sub-batch (see docs/ARCHITECTURE.md, "Training").
BATCH_KEYS = ("input_ids", "attention_mask", "decoder_input_ids", "labels",
              "decoder_attention_mask")


def token_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Masked token cross-entropy, summed over tokens.

  Args:
    logits: `[..., T, V]` logits in any float dtype (promoted to float32 here).
    labels: `[..., T]` integer target ids.
    mask: `[..., T]` 1 for target tokens, 0 for padding (the decoder attention mask).
    label_smoothing: T5X-style smoothing mass `s` in [0, 1).
    z_loss: coefficient of the `logsumexp(logits)^2` auxiliary loss (0 = off).

  Returns:
    `(loss_sum, z_loss_sum, num_correct, num_tokens)`, float32 scalars. `loss_sum` is the total to
    optimise (smoothed cross-entropy plus z-loss); `z_loss_sum` is its z-loss part, for logging.
    `num_correct` counts masked tokens whose label has the largest logit (ties count as correct).
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing={label_smoothing} must lie in [0, 1)")
  logits = logits.astype(jnp.float32)
  mask = mask.astype(jnp.float32)
  vocab = logits.shape[-1]
  labels = labels.astype(jnp.int32)

  log_z = jax.nn.logsumexp(logits, axis=-1)
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  nll = log_z - label_logit
  if label_smoothing > 0.0:
    # -sum_v q_v log p_v with q = on/off values, written without a [.., V] one-hot:
    # -(on - off) * log p_label - off * sum_v log p_v.
    on = 1.0 - label_smoothing
    off = label_smoothing / (vocab - 1)
    sum_log_p = jnp.sum(logits, axis=-1) - vocab * log_z
    # Entropy of the soft target: the minimum of the smoothed loss, subtracted so it becomes 0.
    min_loss = -(on * jnp.log(on) + (vocab - 1) * off * jnp.log(off))
    token_loss = (on - off) * nll - off * sum_log_p - min_loss
  else:
    token_loss = nll
  token_z = z_loss * jnp.square(log_z)

  # `where`, not multiplication by the mask: a NaN or inf at a padding position (NaN * 0 = NaN)
  # must not leak into the sum.
  loss_sum = jnp.sum(jnp.where(mask > 0, token_loss + token_z, 0.0))
  z_loss_sum = jnp.sum(jnp.where(mask > 0, token_z, 0.0))
  # "The label's logit is the largest" rather than `argmax == label`: the same except on exact
  # ties, and the row maximum is the one logsumexp already takes, where a vocabulary-wide argmax
  # costs a reduction of its own.
  correct = (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  num_correct = jnp.sum(correct * mask)
  num_tokens = jnp.sum(mask)
  return loss_sum, z_loss_sum, num_correct, num_tokens


def objective_loss(
    apply_fn: Callable[..., jax.Array],
    params: Mapping[str, Any],
    batch: Mapping[str, Mapping[str, jax.Array]],
    objective: Objective,
    *,
    rng: jax.Array | None,
    deterministic: bool = False,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted sum over the objective's streams of each stream's mean token loss.

  Args:
    apply_fn: the T5 module's `apply` (`model.apply`), returning float32 logits `[B, T, V]`.
    params: `{student name: t5 params}` for `objective.students`.
    batch: `{stream name: {"input_ids", "attention_mask", "decoder_input_ids", "labels",
      "decoder_attention_mask"}}` for `objective.streams`.
    objective: which streams, students and weights.
    rng: dropout key (a raw uint32 key or a typed key); folded with the stream index so streams
      draw independent masks. May be None only when `deterministic`.
    deterministic: True disables dropout (evaluation).
    label_smoothing, z_loss: see `token_cross_entropy`.

  Returns:
    `(loss, metrics)`: the scalar loss, and float32 scalars `loss`, `z_loss` (if z_loss > 0) and,
    per stream, `<stream>/loss` (mean token loss), `<stream>/accuracy` (token accuracy) and
    `<stream>/tokens` (the stream's target-token count in the batch).
  """
  if rng is None and not deterministic:
    raise ValueError("objective_loss needs a dropout `rng` unless deterministic=True")
  # Check every stream before running the model, so a malformed batch fails at once.
  for stream in objective.streams:
    if stream.name not in batch:
      raise KeyError(f"the batch has no sub-batch for stream {stream.name!r} of objective "
                     f"{objective.name!r} (batch streams: {sorted(batch)})")
    if stream.student not in params:
      raise KeyError(f"params have no student {stream.student!r} for stream {stream.name!r} "
                     f"(params students: {sorted(params)})")
    missing = [key for key in BATCH_KEYS if key not in batch[stream.name]]
    if missing:
      raise KeyError(f"sub-batch {stream.name!r} lacks {missing}")
  total = jnp.zeros((), jnp.float32)
  total_z = jnp.zeros((), jnp.float32)
  metrics = {}
  for index, stream in enumerate(objective.streams):
    sub = batch[stream.name]
    rngs = {} if deterministic else {"dropout": jax.random.fold_in(rng, index)}
    logits = apply_fn({"params": params[stream.student]}, sub["input_ids"], sub["attention_mask"],
                      sub["decoder_input_ids"], sub["decoder_attention_mask"],
                      deterministic=deterministic, rngs=rngs)
    loss_sum, z_sum, correct, tokens = token_cross_entropy(
        logits, sub["labels"], sub["decoder_attention_mask"], label_smoothing=label_smoothing,
        z_loss=z_loss)
    # max(., 1): an all-padding stream (possible in a tiny last batch) contributes 0, not NaN.
    denom = jnp.maximum(tokens, 1.0)
    stream_loss = loss_sum / denom
    total = total + stream.weight * stream_loss
    total_z = total_z + stream.weight * z_sum / denom
    metrics[f"{stream.name}/loss"] = stream_loss
    metrics[f"{stream.name}/accuracy"] = correct / denom
    metrics[f"{stream.name}/tokens"] = tokens
  metrics["loss"] = total
  if z_loss > 0.0:
    metrics["z_loss"] = total_z
  return total, metrics
