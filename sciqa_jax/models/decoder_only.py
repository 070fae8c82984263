"""Decoder-only causal LMs in Flax Linen: Llama 2/3, Mistral, Qwen2/2.5 and Gemma from one module.

Why one module: these families are the same pre-norm transformer (RMSNorm, rotary positions,
grouped-query attention, a gated MLP) and differ only in a few switches that `DecoderConfig`
derives from Hugging Face's `config.json`:

  llama    SwiGLU, optional `attention_bias` (q, k, v, o) and `mlp_bias`, RoPE "default",
           "linear" or Llama 3's "llama3" frequency scaling, tied or untied head.
  mistral  as llama, no biases; `sliding_window` attention (see below).
  qwen2    as llama with a bias on q, k, v (never on o); sliding window only when
           `use_sliding_window` (on the layers `layer_types` names).
  gemma    embeddings scaled by sqrt(hidden_size) (the scale rounded to the compute dtype, as HF
           does), GeGLU with the tanh-approximate GELU, RMSNorm computing x * (1 + weight) in fp32,
           `head_dim` from the config (not hidden_size / heads), tied head.

The parameter tree keeps Hugging Face's module names and tensor layouts, so converting a checkpoint
is a rename (`convert.decoder_name_map`): `model.layers.3.self_attn.q_proj.weight` is
`model/layers_3/self_attn/q_proj/weight`, [out, in] as in torch; norms keep their weight as
`scale`, the embedding as `embedding`:

  model/embed_tokens/embedding [V, d]                   lm_head/weight [V, d]  (untied only)
  model/layers_<i>/input_layernorm/scale [d]            model/norm/scale [d]
  model/layers_<i>/self_attn/{q,k,v,o}_proj/weight (+ bias where the family has one)
  model/layers_<i>/post_attention_layernorm/scale [d]
  model/layers_<i>/mlp/{gate,up,down}_proj/weight (+ bias with `mlp_bias`)

Why [out, in] rather than Flax's [in, out] kernels: decoding multiplies a few rows (the batch) by
every weight matrix, and XLA's CPU matmul (YNNPACK) runs such products faster, most of all in
bf16, when the weight's contracted dimension is its minor one (measurements in docs/benchmarks.md);
on TPU and GPU the layout costs nothing. The head then has the embedding's layout: tied and untied
heads are one product (`_logits`).

Positions come from the attention mask (position = number of real tokens before it, as HF's
`generate` computes them), so left-padded batches give every row the positions it would have
alone. Sliding-window attention is applied on cache slots (a key is visible when `query_slot -
key_slot < sliding_window`), HF's rule; with left padding the real tokens are contiguous, so slot
distances equal position distances. A context shorter than the window never meets it.

Numerics: params in `param_dtype`, activations in `dtype`; RMSNorm statistics, rotary angles,
attention logits and softmax and the output logits are fp32.

Decoding (`decode=True`, `cache` mutable): `init_cache(batch, max_length)` creates a cache of
`max_length` slots per row: keys/values [B, KVH, L, Dh] per layer (heads-major, like `t5.py`, so a
step never transposes the cache), a 0/1 `key_mask` [B, L] of filled real slots, each row's next
`position` [B] and the scalar `cache_index`. Each call writes its T tokens at `cache_index`; a
left-padded prompt is one call (its mask marks the pads), then one token per call.
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
import numpy as np
from flax import traverse_util

MODEL_TYPES = ("llama", "mistral", "qwen2", "gemma")
ROPE_TYPES = ("default", "linear", "llama3")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                  "qwen2": "Qwen2ForCausalLM", "gemma": "GemmaForCausalLM"}

# Additive mask value (as in t5.py): zeroes a softmax term; an all-masked row (a pad query) stays
# finite and yields a uniform softmax, whose output nobody reads.
_MASK_VALUE = -1e9

# HF activation names -> functions. "gelu" is the exact erf GELU except in Gemma, whose configs say
# "gelu" for the tanh approximation (HF rewrites it; see `DecoderConfig.from_hf`).
_ACTIVATIONS = {
    "silu": nn.silu,
    "swish": nn.silu,
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: nn.gelu(x, approximate=True),
}

# transformers' per-family defaults for keys a config.json may leave out.
_HF_DEFAULTS = {
    "llama": dict(hidden_act="silu", tie_word_embeddings=False, max_position_embeddings=2048),
    "mistral": dict(hidden_act="silu", tie_word_embeddings=False, max_position_embeddings=131072,
                    sliding_window=4096),
    "qwen2": dict(hidden_act="silu", tie_word_embeddings=False, max_position_embeddings=32768),
    "gemma": dict(hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True, head_dim=256,
                  max_position_embeddings=8192),
}


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Decoder-only hyper-parameters with Hugging Face's field names, plus dtypes as strings.

  `rope_scaling` is HF's RoPE dict without `rope_theta` (e.g. {"rope_type": "llama3", "factor":
  8.0, ...}), stored as sorted (key, value) pairs so the config stays hashable (jit caches and
  Flax modules hash it); None is plain RoPE. `eos_token_id` may be several ids (Llama 3 chat).
  """

  model_type: str = "llama"
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int | None = None
  head_dim: int | None = None
  hidden_act: str = "silu"
  max_position_embeddings: int = 2048
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: Any = None
  attention_bias: bool = False
  mlp_bias: bool = False
  tie_word_embeddings: bool = False
  sliding_window: int | None = None
  layer_types: tuple[str, ...] | None = None
  pad_token_id: int | None = None
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    def put(name, value):
      object.__setattr__(self, name, value)

    if self.model_type not in MODEL_TYPES:
      raise ValueError(f"DecoderConfig.model_type={self.model_type!r}; expected one of "
                       f"{MODEL_TYPES}.")
    if self.num_key_value_heads is None:
      put("num_key_value_heads", self.num_attention_heads)
    if self.head_dim is None:
      put("head_dim", self.hidden_size // self.num_attention_heads)
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"DecoderConfig: num_attention_heads={self.num_attention_heads} is not a "
                       f"multiple of num_key_value_heads={self.num_key_value_heads}.")
    if isinstance(self.rope_scaling, dict):
      put("rope_scaling", tuple(sorted(self.rope_scaling.items())) or None)
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(f"DecoderConfig: rope_type {self.rope_type!r} is not supported; expected "
                       f"one of {ROPE_TYPES}.")
    if isinstance(self.eos_token_id, (list, tuple)):
      put("eos_token_id", tuple(int(i) for i in self.eos_token_id))
    if self.layer_types is not None:
      put("layer_types", tuple(self.layer_types))
      if len(self.layer_types) != self.num_hidden_layers:
        raise ValueError(f"DecoderConfig: {len(self.layer_types)} layer_types for "
                         f"{self.num_hidden_layers} layers.")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"DecoderConfig.hidden_act={self.hidden_act!r}; expected one of "
                       f"{sorted(_ACTIVATIONS)}.")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"DecoderConfig.{name}={getattr(self, name)!r}; expected float32, "
                         "bfloat16 or float16.")

  # ---- derived switches -------------------------------------------------------------------------
  @property
  def rope_parameters(self) -> dict[str, Any]:
    return dict(self.rope_scaling or ())

  @property
  def rope_type(self) -> str:
    return self.rope_parameters.get("rope_type", "default")

  @property
  def qkv_bias(self) -> bool:
    return self.model_type == "qwen2" or (self.attention_bias and self.model_type != "mistral")

  @property
  def o_bias(self) -> bool:
    return self.attention_bias and self.model_type in ("llama", "gemma")

  @property
  def gemma_style(self) -> bool:
    """Scaled embeddings and (1 + weight) norms."""
    return self.model_type == "gemma"

  @property
  def eos_token_ids(self) -> tuple[int, ...]:
    eos = self.eos_token_id
    return () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)

  def layer_window(self, i: int) -> int | None:
    """Layer i's sliding window (None: full causal attention)."""
    if self.sliding_window is None:
      return None
    if self.layer_types is not None and self.layer_types[i] != "sliding_attention":
      return None
    return self.sliding_window

  @property
  def activation(self) -> Callable[[jax.Array], jax.Array]:
    return _ACTIVATIONS[self.hidden_act]

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **kwargs) -> DecoderConfig:
    return dataclasses.replace(self, **kwargs)

  # ---- Hugging Face config.json -----------------------------------------------------------------
  @classmethod
  def from_hf(cls, hf: dict[str, Any], **overrides) -> DecoderConfig:
    """Builds a config from a Hugging Face `config.json` dict (transformers v4 or v5 layout).

    RoPE settings are read from v5's `rope_parameters` or v4's `rope_theta` + `rope_scaling`.
    Whether the head is really tied also depends on the weights file; `load_pretrained` settles
    it. Mistral's `sliding_window` defaults to HF's 4096 when absent; Qwen2's applies only with
    `use_sliding_window`.
    """
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
      raise ValueError(f"config.json has model_type={model_type!r}; the decoder-only model "
                       f"supports {MODEL_TYPES}.")
    fields = {f.name for f in dataclasses.fields(cls)} - {"dtype", "param_dtype", "rope_scaling",
                                                          "rope_theta"}
    kwargs = dict(_HF_DEFAULTS[model_type])
    kwargs.update({k: v for k, v in hf.items() if k in fields and v is not None})
    if "sliding_window" in hf and hf["sliding_window"] is None:
      kwargs.pop("sliding_window", None)
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    kwargs["rope_theta"] = float(rope.pop("rope_theta", hf.get("rope_theta") or 10000.0))
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    if rope_type != "default":
      if rope_type == "llama3":
        rope.setdefault("original_max_position_embeddings", kwargs["max_position_embeddings"])
      kwargs["rope_scaling"] = {"rope_type": rope_type, **rope}
    if model_type == "qwen2":
      if not hf.get("use_sliding_window", False):
        kwargs.pop("sliding_window", None)
        kwargs.pop("layer_types", None)
      elif "layer_types" not in kwargs:
        first = hf.get("max_window_layers", 28)
        kwargs["layer_types"] = tuple("sliding_attention" if i >= first else "full_attention"
                                      for i in range(kwargs["num_hidden_layers"]))
    if model_type == "gemma":
      # transformers v4 Gemma read `hidden_activation`; configs' "gelu" means the tanh GELU.
      act = hf.get("hidden_activation") or kwargs["hidden_act"]
      kwargs["hidden_act"] = "gelu_pytorch_tanh" if act == "gelu" else act
    if model_type in ("llama", "gemma", "mistral") and "layer_types" in kwargs:
      kwargs.pop("layer_types")  # mistral/llama ignore it; the window rule is per family.
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf(self) -> dict[str, Any]:
    """A `config.json` dict that transformers (v4 and v5) loads as this architecture."""
    rope = {"rope_theta": self.rope_theta, "rope_type": "default", **self.rope_parameters}
    hf = {
        "architectures": [_ARCHITECTURES[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads,
        "head_dim": self.head_dim,
        "hidden_act": self.hidden_act,
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_parameters": rope,
        "tie_word_embeddings": self.tie_word_embeddings,
        "pad_token_id": self.pad_token_id,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": (list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
                         else self.eos_token_id),
        "use_cache": True,
    }
    if self.model_type in ("llama", "gemma"):
      hf["attention_bias"] = self.attention_bias
    if self.model_type == "llama":
      hf["mlp_bias"] = self.mlp_bias
    if self.model_type == "gemma":
      hf["hidden_activation"] = self.hidden_act
    if self.model_type == "mistral":
      hf["sliding_window"] = self.sliding_window
    if self.model_type == "qwen2":
      hf["use_sliding_window"] = self.sliding_window is not None
      hf["sliding_window"] = self.sliding_window
      if self.layer_types is not None:
        hf["layer_types"] = list(self.layer_types)
        hf["max_window_layers"] = self.num_hidden_layers  # unused when layer_types is given
    return hf


# ------------------------------------------------------------------------------------------------
# Rotary position embedding
# ------------------------------------------------------------------------------------------------
def rope_inv_freq(config: DecoderConfig) -> np.ndarray:
  """Inverse frequencies [head_dim / 2], float32, computed as transformers does (float32 math).

  "linear" divides every frequency by `factor`; "llama3" divides the low frequencies (wavelength
  above original_max_position_embeddings / low_freq_factor) by `factor`, keeps the high ones and
  interpolates smoothly in between.
  """
  dim = config.head_dim
  exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
  inv_freq = (np.float32(1.0) / np.power(np.float32(config.rope_theta), exponents)).astype(
      np.float32)
  rope = config.rope_parameters
  if config.rope_type == "linear":
    return (inv_freq / np.float32(rope["factor"])).astype(np.float32)
  if config.rope_type == "llama3":
    factor = np.float32(rope["factor"])
    low, high = np.float32(rope["low_freq_factor"]), np.float32(rope["high_freq_factor"])
    old_len = np.float32(rope["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
  return inv_freq


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates [B, H, T, Dh] by angles given as cos/sin [B, T, Dh/2] (HF's rotate-half layout:
  dimension j pairs with j + Dh/2). Computed in fp32, returned in x's dtype."""
  half = x.shape[-1] // 2
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., :half], x32[..., half:]
  cos, sin = cos[:, None], sin[:, None]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------
def _per_token(layer: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """`layer` on [B, L, d] as one [B * L, d] product (why: see `t5._per_token`, XLA CPU layouts)."""
  return layer(x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1] + (-1,))


class Linear(nn.Module):
  """torch's Linear: `weight` [out, in] (HF's layout, see the module docstring), optional `bias`;
  computes in the config's compute dtype on [..., in] inputs."""

  features: int
  config: DecoderConfig
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    w = self.param("weight", nn.initializers.normal(0.02), (self.features, x.shape[-1]),
                   cfg.params_dtype).astype(cfg.compute_dtype)
    # An fp32 result, rounded once after the bias (as torch's Linear does). Asking for it also
    # keeps XLA's CPU backend on its bf16 kernels; a bf16 result makes it upcast the weights.
    y = _per_token(lambda t: jnp.einsum("ti,oi->to", t.astype(cfg.compute_dtype), w,
                                        preferred_element_type=jnp.float32), x)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                         cfg.params_dtype).astype(jnp.float32)
    return y.astype(cfg.compute_dtype)


class RMSNorm(nn.Module):
  """Llama: fp32 statistics, cast back, times weight. Gemma: (x_normed * (1 + weight)) in fp32,
  then cast (the order matters in bf16, and the weight starts at 0 rather than 1)."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    init = nn.initializers.zeros if cfg.gemma_style else nn.initializers.ones
    scale = self.param("scale", init, (x.shape[-1],), cfg.params_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) +
                                 cfg.rms_norm_eps)
    if cfg.gemma_style:
      return (normed * (1.0 + scale.astype(jnp.float32))).astype(cfg.compute_dtype)
    return normed.astype(cfg.compute_dtype) * scale.astype(cfg.compute_dtype)


def _cache_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """The KV cache's dtype: the compute dtype, except float32 on the CPU backend. XLA's CPU dot has
  no bf16 kernel for attention's batched products, so a bf16 cache would be converted to fp32 in
  full at every decoding step (most of a step's time); an fp32 cache holds the same bf16 values
  exactly, so results are unchanged and only its memory doubles."""
  return jnp.dtype(jnp.float32) if jax.default_backend() == "cpu" else jnp.dtype(dtype)


class Attention(nn.Module):
  """Grouped-query self-attention with rotary positions and an optional KV cache.

  Queries are grouped by the key/value head they share ([B, KVH, G, T, Dh], HF's head order:
  query head h reads kv head h // G), so keys and values are never repeated in memory.
  """

  config: DecoderConfig

  @nn.compact
  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, bias: jax.Array, *,
               decode: bool = False, cache_index: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    heads, kv_heads, dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    batch, length = x.shape[:2]

    def project(features, name, heads_):  # [B, T, d] -> [B, heads_, T, Dh]
      t = Linear(features, cfg, cfg.qkv_bias, name=name)(x)
      return t.reshape(batch, length, heads_, dh).transpose(0, 2, 1, 3)

    q = apply_rope(project(heads * dh, "q_proj", heads), cos, sin)
    k = apply_rope(project(kv_heads * dh, "k_proj", kv_heads), cos, sin)
    v = project(kv_heads * dh, "v_proj", kv_heads)
    if decode:
      initialised = self.has_variable("cache", "cached_key")
      ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, _cache_dtype(k.dtype))
      cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, _cache_dtype(v.dtype))
      if initialised:
        start = (0, 0, cache_index, 0)
        k = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype), start)
        v = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype), start)
        ck.value, cv.value = k, v

    q = q.reshape(batch, kv_heads, heads // kv_heads, length, dh) * jnp.asarray(dh**-0.5, q.dtype)
    scores = jnp.einsum("bkgqd,bksd->bkgqs", q, k, preferred_element_type=jnp.float32) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)
    out = jnp.einsum("bkgqs,bksd->bqkgd", probs, v).reshape(batch, length, heads * dh)
    return Linear(cfg.hidden_size, cfg, cfg.o_bias, name="o_proj")(out)


class MLP(nn.Module):
  """Gated feed-forward: down(act(gate(x)) * up(x)); SwiGLU (silu) or GeGLU (Gemma)."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    gate = Linear(cfg.intermediate_size, cfg, cfg.mlp_bias, name="gate_proj")(x)
    up = Linear(cfg.intermediate_size, cfg, cfg.mlp_bias, name="up_proj")(x)
    return Linear(cfg.hidden_size, cfg, cfg.mlp_bias, name="down_proj")(cfg.activation(gate) * up)


class DecoderLayer(nn.Module):
  """One pre-norm layer: x + attn(norm(x)), then x + mlp(norm(x))."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x, cos, sin, bias, *, decode=False, cache_index=None):
    cfg = self.config
    h = RMSNorm(cfg, name="input_layernorm")(x)
    x = x + Attention(cfg, name="self_attn")(h, cos, sin, bias, decode=decode,
                                             cache_index=cache_index)
    return x + MLP(cfg, name="mlp")(RMSNorm(cfg, name="post_attention_layernorm")(x))


def _attention_bias(key_mask: jax.Array, query_slots: jax.Array, key_slots: jax.Array,
                    window: int | None) -> jax.Array:
  """Additive fp32 bias [B, 1, 1, T, S]: a key is visible when it is real, not in the query's
  future and (with a window) fewer than `window` slots back."""
  visible = (key_slots[None, :] <= query_slots[:, None])[None] & (key_mask[:, None, :] > 0)
  if window is not None:
    visible &= (query_slots[:, None] - key_slots[None, :] < window)[None]
  return jnp.where(visible, 0.0, _MASK_VALUE).astype(jnp.float32)[:, None, None]


def _positions(mask: jax.Array) -> jax.Array:
  """Position ids from a 0/1 mask: real tokens count from 0 within their row; left pads get 0."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def _logits(x: jax.Array, weight: jax.Array, cfg: DecoderConfig) -> jax.Array:
  """fp32 logits [..., V] from hidden states [..., d] and a [V, d] head (tied or untied)."""
  w = weight.astype(cfg.compute_dtype)
  return _per_token(
      lambda t: jnp.einsum("td,vd->tv", t, w, preferred_element_type=jnp.float32), x)


class Embedding(nn.Module):
  """The token embedding (`model.embed_tokens`); `attend` is the tied output head."""

  config: DecoderConfig

  def setup(self):
    cfg = self.config
    self.embedding = self.param("embedding", nn.initializers.normal(0.02),
                                (cfg.vocab_size, cfg.hidden_size), cfg.params_dtype)

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding, ids, axis=0).astype(self.config.compute_dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    return _logits(x, self.embedding, self.config)


class Slots(nn.Module):
  """Where a call's tokens go: the cache bookkeeping (`cache_index`, `key_mask`,
  `next_position`) in decoding mode; plain 0..T-1 otherwise. No parameters."""

  @nn.compact
  def __call__(self, mask: jax.Array, decode: bool):
    """-> (query slots [T], key slots [S], key mask [B, S], positions [B, T], cache index)."""
    length = mask.shape[1]
    if not decode or not self.has_variable("cache", "cache_index"):
      if decode:  # The initialising call: records the cache's length (the dummy input's).
        self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        self.variable("cache", "key_mask", jnp.zeros, mask.shape, jnp.int32)
        self.variable("cache", "next_position", jnp.zeros, mask.shape[:1], jnp.int32)
      slots = jnp.arange(length, dtype=jnp.int32)
      return slots, slots, mask, _positions(mask), None
    index_var = self.variable("cache", "cache_index")
    key_mask_var = self.variable("cache", "key_mask")
    position_var = self.variable("cache", "next_position")
    index = index_var.value
    key_mask = jax.lax.dynamic_update_slice(key_mask_var.value, mask.astype(jnp.int32), (0, index))
    positions = position_var.value[:, None] + _positions(mask)
    index_var.value = index + length
    key_mask_var.value = key_mask
    position_var.value = position_var.value + jnp.sum(mask, axis=-1, dtype=jnp.int32)
    query_slots = index + jnp.arange(length, dtype=jnp.int32)
    key_slots = jnp.arange(key_mask.shape[1], dtype=jnp.int32)
    return query_slots, key_slots, key_mask, positions, index


class DecoderStack(nn.Module):
  """HF's `model`: embedding, layers, final norm."""

  config: DecoderConfig

  def setup(self):
    cfg = self.config
    self.embed_tokens = Embedding(cfg)
    self.layers = [DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]  # layers_<i>
    self.norm = RMSNorm(cfg)
    self.slots = Slots()

  def __call__(self, input_ids, attention_mask, *, decode=False):
    cfg = self.config
    query_slots, key_slots, key_mask, positions, index = self.slots(attention_mask, decode)
    angles = positions[..., None].astype(jnp.float32) * jnp.asarray(rope_inv_freq(cfg))
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    biases = {w: _attention_bias(key_mask, query_slots, key_slots, w)
              for w in {cfg.layer_window(i) for i in range(cfg.num_hidden_layers)}}
    x = self.embed_tokens(input_ids)
    if cfg.gemma_style:
      x = x * jnp.asarray(cfg.hidden_size**0.5, cfg.compute_dtype)
    for i, layer in enumerate(self.layers):
      x = layer(x, cos, sin, biases[cfg.layer_window(i)], decode=decode, cache_index=index)
    return self.norm(x)


class LMHead(nn.Module):
  """The untied output head (`lm_head`, weight [V, d] like the embedding); fp32 accumulation and
  logits."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    w = self.param("weight", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.hidden_size),
                   cfg.params_dtype)
    return _logits(x, w, cfg)


class CausalLM(nn.Module):
  """HF's `*ForCausalLM`: `__call__` -> fp32 logits; `init_cache` for decoding."""

  config: DecoderConfig

  def setup(self):
    self.model = DecoderStack(self.config)
    if not self.config.tie_word_embeddings:
      self.lm_head = LMHead(self.config)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
               decode: bool = False, logits_to_keep: int = 0) -> jax.Array:
    """[B, T] ids and 0/1 mask (default all ones) -> fp32 logits [B, T, V].

    `logits_to_keep` > 0 computes only the last that many positions' logits (HF's name): a
    prefill needs the last one, and the head is the largest matrix product of a big-vocabulary
    model. With `decode=True` (cache mutable, created by `init_cache`) the T tokens are written
    at the cache's index; `attention_mask` then marks which of them are real (left pads of a
    prompt).
    """
    if attention_mask is None:
      attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    x = self.model(input_ids, attention_mask, decode=decode)
    if logits_to_keep:
      x = x[:, -logits_to_keep:]
    if self.config.tie_word_embeddings:
      return self.model.embed_tokens.attend(x)
    return self.lm_head(x)

  def init_cache(self, batch_size: int, max_length: int) -> None:
    """Creates the `cache` collection (call with `mutable=["cache"]`): zeros for `max_length`
    slots per row. The pass over dummy tokens that creates it has no live output under jit."""
    dummy = jnp.zeros((batch_size, max_length), jnp.int32)
    self.model(dummy, dummy, decode=True)


@functools.lru_cache(maxsize=16)
def _jitted_init(config: DecoderConfig):
  model = CausalLM(config)
  ids = jnp.ones((1, 1), jnp.int32)
  return jax.jit(lambda key: model.init(key, ids)["params"])


def init_params(config: DecoderConfig, rng: jax.Array) -> Any:
  """Randomly initialised params (std 0.02, HF's initializer_range); shapes depend on config."""
  return _jitted_init(config)(rng)


def param_shapes(config: DecoderConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flattened path -> shape of the params `CausalLM(config)` expects (nothing is allocated)."""
  ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  abstract = jax.eval_shape(lambda i: CausalLM(config).init(jax.random.key(0), i), ids)["params"]
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(abstract).items()}
