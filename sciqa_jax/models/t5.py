"""T5 encoder-decoder in Flax Linen: T5 v1.0 and T5 v1.1 / Flan-T5 from one module.

Why Linen: a Linen module is a pure function of an explicit params pytree. That tree is what orbax
saves, what `jax.jit`/`pjit` shard leaf by leaf, what optax updates and what `convert.py` maps to
and from Hugging Face tensor names, with no object state to thread through a train step. The KV
cache is just another variable collection (`cache`), so decoding stays a pure function too.

Variants (both from `T5Config`):
  v1.0      `feed_forward_proj="relu"`, head tied to the input embedding, decoder output scaled by
            d_model**-0.5 before the head.
  v1.1/Flan `feed_forward_proj="gated-gelu"` (tanh-approximate GELU), separate `lm_head`, no scale.
`tie_word_embeddings` decides whether an `lm_head` parameter exists; `scale_decoder_outputs`
decides the d_model**-0.5 scaling. They are separate because transformers v5 decouples them (see
`T5Config.from_hf`).

Numerics: params live in `param_dtype`, activations in `dtype` (bf16 on accelerators); RMS-norm
statistics, attention logits/softmax and the output logits are always fp32. There is no 1/sqrt(d)
attention scaling in T5 (it is folded into the initialisation).

Efficiency: the relative position bias is computed once per stack (in effect "layer 0") and added
to the padding/causal mask once, so every layer only adds one precomputed [B|1, H, T, S] tensor.
In decoding mode (`decode=True`) the self-attention keys/values of past steps live in the `cache`
collection and cross-attention keys/values are projected from the encoder output once, when the
cache is created (`T5.init_cache`), and read back on every step.

Parameter tree (kernels are [in, out], i.e. the transposes of the torch Linear weights):
  shared/embedding [V, d]                       lm_head/kernel [d, V]  (untied only)
  encoder/relative_attention_bias [buckets, H]  encoder/final_norm/scale [d]
  encoder/block_<i>/self_attention/{q,k,v,o}/kernel, encoder/block_<i>/self_attention_norm/scale
  encoder/block_<i>/mlp/{wi | wi_0, wi_1, wo}/kernel, encoder/block_<i>/mlp_norm/scale
  decoder/...: as encoder plus block_<i>/cross_attention/{q,k,v,o}, block_<i>/cross_attention_norm
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Additive mask value: large enough to zero a softmax term, small enough that adding a position
# bias never overflows to -inf (an all-masked row must stay finite: it yields a uniform softmax).
_MASK_VALUE = -1e9

# The parameter name of each stack's relative-position bias table; train_step.py's optimizer finds
# the tables by it to give them their own learning-rate scale.
POSITION_BIAS_PARAM = "relative_attention_bias"

# HF `feed_forward_proj` activation names -> functions. HF maps "gated-gelu" to gelu_new, the
# tanh approximation (Flax's default); a bare "gelu" is the exact erf GELU.
_ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "silu": nn.silu,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """T5 hyper-parameters with Hugging Face's field names, plus dtypes as strings."""

  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 2048
  num_layers: int = 6
  num_decoder_layers: int | None = None
  num_heads: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.1
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "relu"
  tie_word_embeddings: bool = True
  pad_token_id: int = 0
  eos_token_id: int = 1
  decoder_start_token_id: int = 0
  # None = follow `tie_word_embeddings` (v1.0 tied+scaled, v1.1 untied+unscaled).
  scale_decoder_outputs: bool | None = None
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.num_decoder_layers is None:
      object.__setattr__(self, "num_decoder_layers", self.num_layers)
    if self.scale_decoder_outputs is None:
      object.__setattr__(self, "scale_decoder_outputs", bool(self.tie_word_embeddings))
    parts = self.feed_forward_proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or parts[-1] not in _ACTIVATIONS:
      raise ValueError(
          f"T5Config.feed_forward_proj={self.feed_forward_proj!r} is not supported; use one of "
          f"{sorted(_ACTIVATIONS)} optionally prefixed by 'gated-' (e.g. 'relu', 'gated-gelu').")
    for name in ("dtype", "param_dtype"):
      value = getattr(self, name)
      if value not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"T5Config.{name}={value!r}; expected float32, bfloat16 or float16.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate={self.dropout_rate}; expected 0 <= rate < 1.")

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self):
    name = self.feed_forward_proj.split("-")[-1]
    # HF's backwards-compatibility rule: only the gated GELU is the tanh approximation.
    if self.feed_forward_proj == "gated-gelu":
      name = "gelu_new"
    return _ACTIVATIONS[name]

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **kwargs) -> "T5Config":
    return dataclasses.replace(self, **kwargs)

  @classmethod
  def from_hf(cls, hf: dict[str, Any], **overrides) -> "T5Config":
    """Builds a config from a Hugging Face `config.json` dict.

    transformers v5 always writes `tie_word_embeddings: true` and records the real v1.0/v1.1 choice
    as `scale_decoder_outputs`; older files only have `tie_word_embeddings` (false for v1.1/Flan).
    Whether the head is *really* tied depends on the weights file (a distinct `lm_head.weight`);
    `load_pretrained` settles that and overrides `tie_word_embeddings` accordingly.
    """
    if hf.get("model_type", "t5") != "t5":
      raise ValueError(f"config.json has model_type={hf.get('model_type')!r}; expected 't5'.")
    tie = hf.get("tie_word_embeddings", True) is not False
    scale = hf.get("scale_decoder_outputs")
    if scale is None:
      scale = tie
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in hf.items() if k in fields and v is not None}
    eos = kwargs.get("eos_token_id", 1)
    if isinstance(eos, (list, tuple)):
      kwargs["eos_token_id"] = int(eos[0])
    kwargs.pop("dtype", None)  # HF's dtype is the storage dtype, not our compute dtype.
    kwargs.update(tie_word_embeddings=tie, scale_decoder_outputs=bool(scale))
    kwargs.setdefault("decoder_start_token_id", kwargs.get("pad_token_id", 0))
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf(self) -> dict[str, Any]:
    """A `config.json` dict that transformers (v4 and v5) loads as this architecture."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": self.vocab_size,
        "d_model": self.d_model,
        "d_kv": self.d_kv,
        "d_ff": self.d_ff,
        "num_layers": self.num_layers,
        "num_decoder_layers": self.num_decoder_layers,
        "num_heads": self.num_heads,
        "relative_attention_num_buckets": self.relative_attention_num_buckets,
        "relative_attention_max_distance": self.relative_attention_max_distance,
        "dropout_rate": self.dropout_rate,
        "layer_norm_epsilon": self.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": self.feed_forward_proj,
        "is_encoder_decoder": True,
        "tie_word_embeddings": self.tie_word_embeddings,
        "scale_decoder_outputs": self.scale_decoder_outputs,
        "pad_token_id": self.pad_token_id,
        "eos_token_id": self.eos_token_id,
        "decoder_start_token_id": self.decoder_start_token_id,
        "use_cache": True,
    }


def relative_position_bucket(relative_position: jax.Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
  """Mesh-TF / HF bucketing of `memory_position - query_position` into [0, num_buckets)."""
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative_position > 0).astype(relative_position.dtype) * num_buckets
    relative_position = jnp.abs(relative_position)
  else:
    relative_position = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = relative_position < max_exact
  # log(0) = -inf for the small positions; `where` discards those lanes.
  large = max_exact + (
      jnp.log(jnp.maximum(relative_position, 1).astype(jnp.float32) / max_exact) /
      math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(relative_position.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, relative_position, large)


def _normal(stddev: float):
  return nn.initializers.normal(stddev=stddev)


class RMSNorm(nn.Module):
  """T5 layer norm: no mean subtraction, no bias, fp32 variance."""

  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), cfg.params_dtype)
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = (x32 * jax.lax.rsqrt(variance + cfg.layer_norm_epsilon)).astype(cfg.compute_dtype)
    return y * scale.astype(cfg.compute_dtype)


def _dense(features: int, stddev: float, cfg: T5Config, name: str) -> nn.Dense:
  return nn.Dense(features, use_bias=False, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
                  kernel_init=_normal(stddev), name=name)


def _per_token(layer: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """`layer` applied to [B, L, d] as one [B * L, d] matrix product.

  Why: with batch and length kept as two dimensions, XLA's CPU backend computed the weight
  gradients from an operand it first wrote out transposed, element by element; the 2-D form needs
  no such copy (figures in docs/benchmarks.md).
  """
  return layer(x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1] + (-1,))


class Dropout(nn.Module):
  """Inverted dropout from 16 random bits per element: two elements per 32-bit threefry word.

  flax's nn.Dropout draws a 32-bit word per element and converts it to a float to compare; on CPU
  that threefry work is a visible share of a train step (docs/benchmarks.md). Here each word is
  bitcast to two 16-bit lanes for neighbouring elements of the last axis (a free reshape, fused
  into the select), so half as many words are drawn. Batch axes keep `x`'s layout, so
  batch-sharded activations draw their bits locally. The drop probability is `rate` rounded to a
  multiple of 2**-16 (0.1 -> 0.100006; a rate that rounds to 0 drops nothing, one that rounds to 1
  everything); kept values are scaled by the exact inverse of the resulting keep probability.
  Masks come from the "dropout" RNG collection, a new one per call. Only what T5 needs: no
  `broadcast_dims`, no scalar inputs.
  """

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if not 0.0 <= self.rate <= 1.0:
      raise ValueError(f"Dropout rate={self.rate}; expected 0 <= rate <= 1")
    lane_values = 1 << 16
    threshold = round(self.rate * lane_values)
    if deterministic or threshold == 0:
      return x
    if threshold == lane_values:
      return jnp.zeros_like(x)
    width = x.shape[-1]
    words = jax.random.bits(self.make_rng("dropout"), x.shape[:-1] + (-(-width // 2),),
                            jnp.uint32)
    lanes = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(x.shape[:-1] + (-1,))
    keep = lanes[..., :width] >= jnp.uint16(threshold)
    scale = lane_values / (lane_values - threshold)
    return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


class Attention(nn.Module):
  """Multi-head attention without 1/sqrt(d) scaling; the caller supplies an additive fp32 bias.

  `kind` is "self" or "cross". With `decode=True`:
    self:  keys/values are written to `cached_key`/`cached_value` [B, H, L, Dk] at `cache_index`
           (created as zeros by the first, initialising call whose input length is L).
    cross: keys/values are projected from the encoder output by the initialising call only and
           stored as `cross_key`/`cross_value` [B, H, S, Dk]; later steps read them and skip the
           projection.
  Heads are split heads-major ([B, H, L, Dk]), the layout of the batched products: a cache kept as
  [B, L, H, Dk] had to be transposed whole on every decoding step, which cost the XLA CPU decode
  step of a Flan-T5-small-sized model more than all its matrix products together.
  """

  config: T5Config
  kind: str

  @nn.compact
  def __call__(self, x: jax.Array, kv: jax.Array | None, bias: jax.Array, *, deterministic: bool,
               decode: bool = False, cache_index: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    heads, d_kv, d = cfg.num_heads, cfg.d_kv, cfg.d_model
    inner = heads * d_kv
    q_proj = _dense(inner, (d * d_kv)**-0.5, cfg, "q")
    k_proj = _dense(inner, d**-0.5, cfg, "k")
    v_proj = _dense(inner, d**-0.5, cfg, "v")

    def split(t):  # [B, L, H * Dk] -> [B, H, L, Dk]
      return t.reshape(t.shape[:2] + (heads, d_kv)).transpose(0, 2, 1, 3)

    q = split(_per_token(q_proj, x))
    if self.kind == "cross":
      if decode:
        ck = self.variable("cache", "cross_key", lambda: split(_per_token(k_proj, kv)))
        cv = self.variable("cache", "cross_value", lambda: split(_per_token(v_proj, kv)))
        k, v = ck.value, cv.value
      else:
        k, v = split(_per_token(k_proj, kv)), split(_per_token(v_proj, kv))
    else:
      k, v = split(_per_token(k_proj, x)), split(_per_token(v_proj, x))
      if decode:
        initialised = self.has_variable("cache", "cached_key")
        ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        if initialised:
          start = (0, 0, cache_index, 0)
          k = jax.lax.dynamic_update_slice(ck.value, k, start)
          v = jax.lax.dynamic_update_slice(cv.value, v, start)
          ck.value, cv.value = k, v

    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)
    probs = Dropout(cfg.dropout_rate)(probs, deterministic=deterministic)
    out = jnp.einsum("bhqk,bhkd->bqhd", probs, v).reshape(x.shape[:2] + (inner,))
    return _per_token(_dense(d, inner**-0.5, cfg, "o"), out)


class MLP(nn.Module):
  """T5 feed-forward: wi -> act -> dropout -> wo, or the gated form act(wi_0 x) * wi_1 x."""

  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    cfg = self.config
    if cfg.is_gated:
      h = cfg.activation(_per_token(_dense(cfg.d_ff, cfg.d_model**-0.5, cfg, "wi_0"), x))
      h = h * _per_token(_dense(cfg.d_ff, cfg.d_model**-0.5, cfg, "wi_1"), x)
    else:
      h = cfg.activation(_per_token(_dense(cfg.d_ff, cfg.d_model**-0.5, cfg, "wi"), x))
    h = Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    return _per_token(_dense(cfg.d_model, cfg.d_ff**-0.5, cfg, "wo"), h)


class Block(nn.Module):
  """One pre-norm T5 layer: self-attention, (decoder) cross-attention, feed-forward."""

  config: T5Config
  is_decoder: bool

  @nn.compact
  def __call__(self, x, bias, encoder_hidden_states=None, cross_bias=None, *, deterministic: bool,
               decode: bool = False, cache_index=None):
    cfg = self.config
    drop = Dropout(cfg.dropout_rate)
    h = RMSNorm(cfg, name="self_attention_norm")(x)
    h = Attention(cfg, "self", name="self_attention")(
        h, None, bias, deterministic=deterministic, decode=decode, cache_index=cache_index)
    x = x + drop(h, deterministic=deterministic)
    if self.is_decoder:
      h = RMSNorm(cfg, name="cross_attention_norm")(x)
      h = Attention(cfg, "cross", name="cross_attention")(
          h, encoder_hidden_states, cross_bias, deterministic=deterministic, decode=decode)
      x = x + drop(h, deterministic=deterministic)
    h = MLP(cfg, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x), deterministic=deterministic)
    return x + drop(h, deterministic=deterministic)


def _padding_bias(mask: jax.Array) -> jax.Array:
  """[B, S] 0/1 key mask -> additive fp32 bias [B, 1, 1, S]."""
  return jnp.where(mask[:, None, None, :] > 0, 0.0, _MASK_VALUE).astype(jnp.float32)


class Stack(nn.Module):
  """Encoder or decoder stack over already-embedded inputs (the embedding is shared, in T5)."""

  config: T5Config
  is_decoder: bool

  def _position_bias(self, table, query_positions, key_positions):
    cfg = self.config
    buckets = relative_position_bucket(
        key_positions[None, :] - query_positions[:, None], bidirectional=not self.is_decoder,
        num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance)
    values = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [T, S, H]
    return jnp.transpose(values, (2, 0, 1))[None]  # [1, H, T, S]

  @nn.compact
  def __call__(self, x, mask, encoder_hidden_states=None, encoder_mask=None, *,
               deterministic: bool, decode: bool = False):
    cfg = self.config
    num_layers = cfg.num_decoder_layers if self.is_decoder else cfg.num_layers
    table = self.param(POSITION_BIAS_PARAM, _normal(cfg.d_model**-0.5),
                       (cfg.relative_attention_num_buckets, cfg.num_heads), cfg.params_dtype)
    length = x.shape[1]
    cache_index = None
    if decode and self.has_variable("cache", "cache_index"):
      # One decoding step (or a chunk of steps) against a cache of `max_len` positions.
      index_var = self.variable("cache", "cache_index")
      max_len = self.variable("cache", "key_positions").value.shape[0]
      cache_index = index_var.value
      index_var.value = cache_index + length
      query_pos = cache_index + jnp.arange(length, dtype=jnp.int32)
      key_pos = jnp.arange(max_len, dtype=jnp.int32)
      bias = self._position_bias(table, query_pos, key_pos)
      bias = bias + jnp.where(key_pos[None, :] <= query_pos[:, None], 0.0, _MASK_VALUE)
    else:
      if decode:  # The initialising call: record the cache length, start at position 0.
        self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        self.variable("cache", "key_positions", lambda: jnp.zeros((length,), jnp.int32))
      pos = jnp.arange(length, dtype=jnp.int32)
      bias = self._position_bias(table, pos, pos)
      if self.is_decoder:
        bias = bias + jnp.where(pos[None, :] <= pos[:, None], 0.0, _MASK_VALUE)
      if mask is not None:
        bias = bias + _padding_bias(mask)
    cross_bias = _padding_bias(encoder_mask) if self.is_decoder else None

    drop = Dropout(cfg.dropout_rate)
    x = drop(x, deterministic=deterministic)
    for i in range(num_layers):
      x = Block(cfg, self.is_decoder, name=f"block_{i}")(
          x, bias, encoder_hidden_states, cross_bias, deterministic=deterministic, decode=decode,
          cache_index=cache_index)
    x = RMSNorm(cfg, name="final_norm")(x)
    return drop(x, deterministic=deterministic)


class Embedding(nn.Module):
  """The shared token embedding; `attend` is the tied output head."""

  config: T5Config

  def setup(self):
    cfg = self.config
    self.embedding = self.param("embedding", _normal(1.0), (cfg.vocab_size, cfg.d_model),
                                cfg.params_dtype)

  def __call__(self, ids: jax.Array) -> jax.Array:
    # Gather from the stored table, then cast: casting the whole [V, d] table first is wasted work.
    return jnp.take(self.embedding, ids, axis=0).astype(self.config.compute_dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    w = self.embedding.astype(self.config.compute_dtype)
    return _per_token(
        lambda t: jnp.einsum("td,vd->tv", t, w, preferred_element_type=jnp.float32), x)


class LMHead(nn.Module):
  """The untied output head; fp32 accumulation and fp32 logits even for bf16 activations."""

  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    # Fan-in scaled, as T5X initialises its untied logits layer: the inputs are RMS-normalised, so
    # logits start with unit scale. (transformers draws this head with std 1, which makes the
    # initial logits ~sqrt(d_model) large; a student trained from scratch then spends its first
    # hundreds of steps shrinking the head. Pretrained checkpoints overwrite it either way.)
    w = self.param("kernel", _normal(cfg.d_model**-0.5), (cfg.d_model, cfg.vocab_size),
                   cfg.params_dtype)
    w = w.astype(cfg.compute_dtype)
    return _per_token(
        lambda t: jnp.einsum("td,dv->tv", t, w, preferred_element_type=jnp.float32), x)


class T5(nn.Module):
  """T5ForConditionalGeneration: `__call__` (teacher forcing), `encode`, `decode`, `init_cache`."""

  config: T5Config

  def setup(self):
    cfg = self.config
    self.shared = Embedding(cfg)
    if not cfg.tie_word_embeddings:
      self.lm_head = LMHead(cfg)
    self.encoder = Stack(cfg, is_decoder=False)
    self.decoder = Stack(cfg, is_decoder=True)

  def encode(self, input_ids: jax.Array, attention_mask: jax.Array, *,
             deterministic: bool = True) -> jax.Array:
    """[B, S] ids and 0/1 mask -> encoder hidden states [B, S, d] in the compute dtype."""
    return self.encoder(self.shared(input_ids), attention_mask, deterministic=deterministic)

  def decode(self, decoder_input_ids: jax.Array, encoder_hidden_states: jax.Array,
             encoder_attention_mask: jax.Array, decoder_attention_mask: jax.Array | None = None, *,
             deterministic: bool = True, decode: bool = False) -> jax.Array:
    """Decoder + head -> fp32 logits [B, T, V].

    With `decode=True` (and the `cache` collection mutable) this is one incremental step: T new
    tokens (normally 1) at the cache's current index. The cache must first be created with
    `init_cache`.
    """
    cfg = self.config
    x = self.decoder(self.shared(decoder_input_ids), decoder_attention_mask, encoder_hidden_states,
                     encoder_attention_mask, deterministic=deterministic, decode=decode)
    if cfg.scale_decoder_outputs:
      x = x * (cfg.d_model**-0.5)
    if cfg.tie_word_embeddings:
      return self.shared.attend(x)
    return self.lm_head(x)

  def init_cache(self, encoder_hidden_states: jax.Array, encoder_attention_mask: jax.Array,
                 max_length: int) -> None:
    """Creates the `cache` collection (call with `mutable=['cache']`, under jit).

    Self-attention caches are zeros of length `max_length`; cross-attention keys/values are
    projected from `encoder_hidden_states` here, once. The decoder pass on dummy tokens that
    creates the variables has no live outputs besides those, so XLA removes it under jit.
    """
    batch = encoder_hidden_states.shape[0]
    dummy = jnp.zeros((batch, max_length), jnp.int32)
    self.decode(dummy, encoder_hidden_states, encoder_attention_mask, decode=True)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, decoder_input_ids: jax.Array,
               decoder_attention_mask: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    """Teacher-forced forward pass -> fp32 logits [B, T, V]."""
    encoded = self.encode(input_ids, attention_mask, deterministic=deterministic)
    return self.decode(decoder_input_ids, encoded, attention_mask, decoder_attention_mask,
                       deterministic=deterministic)


@functools.lru_cache(maxsize=16)
def _jitted_init(config: T5Config):
  model = T5(config)
  ids = jnp.ones((1, 1), jnp.int32)
  return jax.jit(lambda key: model.init(key, ids, ids, ids)["params"])


def init_params(config: T5Config, rng: jax.Array) -> Any:
  """Randomly initialised params (HF/Mesh-TF initialiser scales); shapes depend only on config.

  The jitted initialiser is cached per config, so several students of one architecture compile
  it once.
  """
  return _jitted_init(config)(rng)
