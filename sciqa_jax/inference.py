"""Running a T5 over batches of texts: the one inference layer.

Everything that runs a model over texts comes here: evaluation (evaluate.py and train.py's
validation), the stage-1 student writing rationales for stage 2, and the Flax T5 teacher.

  * Texts are encoded by the one rule of `tokenizer.tokenize`: the students' layout (text, then
    EOS), or a pretrained teacher's own special tokens.
  * Each call sees `batch_rows` rows (the batch size rounded up to the placement's row multiple),
    padded to the `decoding.padded_length` ladder (8, 12, 16, 24, 32, 48, ... capped): at most two
    compiled lengths per doubling, and a batch pads its longest row by less than a third. A ragged
    last batch is filled with copies of its first row (real inputs: generation on them stops when
    it would anyway, and no row is all padding); filler rows are dropped on the host.
  * Two kernels: `decoding.make_generate_fn` (greedy, sampling, beam) and
    `candidate_log_likelihoods` (rank classification: every candidate target of an input scored
    in one pass over a shared encoder output and cross-attention cache).
  * The device scheme is a parameter (`Placement`):
      `Replicated`  `jax.pmap` over the local devices, params replicated: a student that fits one
                    device (evaluate.py).
      `OnMesh`      `jax.jit` over a `Mesh` with `NamedSharding`s, params left in the layout they
                    have (replicated or FSDP-sharded) and the batch split along "data": a sharded
                    student during validation, whose parameters never gather onto one host, and
                    the Flax T5 teacher. Every process passes the same texts (multi-host), and
                    results come back replicated, so every process reads all of them.

Tokenisation, padding and detokenisation run on the host in numpy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sciqa_jax import decoding
from sciqa_jax import errors
from sciqa_jax import sharding
from sciqa_jax.models.t5 import T5
from sciqa_jax.tokenizer import tokenize

# Decode-cache tensors with one row per sequence (cache index and positions are shared).
_PER_ROW_CACHE = ("cached_key", "cached_value", "cross_key", "cross_value")
OVERFLOW_MODES = ("truncate", "error")


class InputTooLongError(errors.ConfigError):
  """An input is longer than the runner's `max_input_length` and overflow="error"."""


class Generation(NamedTuple):
  """One generated continuation: its text, summed token log-probability and token count."""

  text: str
  log_prob: float
  num_tokens: int


# ---- host-side batches -----------------------------------------------------------------------


def pad_rows(rows: Sequence[Sequence[int]], num_rows: int, cap: int, *,
             fill_with_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """[num_rows, padded length] int32 ids and 0/1 mask (length from `decoding.padded_length`).

  Rows past len(rows) (the filler of a ragged batch) repeat row 0 by default. With
  fill_with_first=False they, like empty rows, stay all-zero (candidate slots that score nothing).
  """
  length = decoding.padded_length(max((len(row) for row in rows), default=1), cap)
  ids = np.zeros((num_rows, length), np.int32)
  mask = np.zeros((num_rows, length), np.int32)
  for i in range(num_rows):
    row = rows[i] if i < len(rows) else (rows[0] if fill_with_first else ())
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask


# ---- candidate scoring (pure, jittable) ------------------------------------------------------


def candidate_log_likelihoods(model: T5, params, input_ids: jax.Array, attention_mask: jax.Array,
                              labels: jax.Array, label_mask: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
  """Summed log-probability and token count of C candidate targets per input.

  Args:
    model: the T5 module.
    params: its params.
    input_ids, attention_mask: [R, S] inputs.
    labels, label_mask: [R, C, T] candidate targets (EOS-terminated, 0-padded); a candidate slot
      with an all-zero mask (an example with fewer choices) scores 0 with count 0.

  Returns:
    ([R, C] fp32 summed log-probs over the masked tokens, [R, C] int32 token counts).

  Each input is encoded once and its cross-attention keys and values projected once, shared by
  its C candidates. The decoder then runs over all T candidate positions at once on that cache
  (`T5.decode(decode=True)` with T new tokens: causal self-attention, the same function as
  teacher forcing on the labels shifted right behind decoder start token 0, as in training;
  padding after a candidate's EOS is causally invisible to it).
  """
  r, c, t = labels.shape
  variables = {"params": params}
  encoded = model.apply(variables, input_ids, attention_mask, method=T5.encode)
  _, state = model.apply(variables, encoded, attention_mask, t, method=T5.init_cache,
                         mutable=["cache"])
  # Row i*C + j = (input i, candidate j): the per-row cache tensors are copied C times.
  cache = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.repeat(x, c, axis=0) if path[-1].key in _PER_ROW_CACHE else x,
      state["cache"])
  flat_labels = labels.reshape(r * c, t)
  flat_mask = label_mask.reshape(r * c, t)
  decoder_input_ids = jnp.pad(flat_labels, ((0, 0), (1, 0)))[:, :-1]
  # The encoder states themselves are not read again (the cache holds their projections).
  logits, _ = model.apply({"params": params, "cache": cache}, decoder_input_ids,
                          jnp.repeat(encoded, c, axis=0), jnp.repeat(attention_mask, c, axis=0),
                          decode=True, method=T5.decode, mutable=["cache"])
  token_log_probs = decoding.token_log_probs(logits.astype(jnp.float32), flat_labels)
  totals = jnp.where(flat_mask > 0, token_log_probs, 0.0).sum(-1).reshape(r, c)
  counts = flat_mask.sum(-1).astype(jnp.int32).reshape(r, c)
  return totals, counts


# ---- device placements -----------------------------------------------------------------------


class Replicated:
  """`jax.pmap` over local devices; params are replicated once by `put_params`."""

  def __init__(self, devices: Sequence[jax.Device] | None = None):
    self.devices = tuple(devices or jax.local_devices())
    self.row_multiple = len(self.devices)

  def put_params(self, params):
    n = len(self.devices)
    mesh = Mesh(np.asarray(self.devices), ("devices",))
    stacked = NamedSharding(mesh, P("devices"))

    def put(x):
      x = np.asarray(x)
      # A broadcast view: each device receives its slice without n host copies.
      return jax.device_put(np.broadcast_to(x[None], (n,) + x.shape), stacked)

    return jax.tree.map(put, params)

  def compile(self, fn: Callable) -> Callable:
    """`fn(params, *arrays, rng)` on host arrays [rows, ...] -> numpy outputs [rows, ...]."""
    pmapped = _pmapped(fn, self.devices)
    n = len(self.devices)

    def run(params, *arrays_and_rng):
      *arrays, rng = arrays_and_rng
      split = [a.reshape((n, -1) + a.shape[1:]) for a in arrays]
      rngs = jax.random.split(rng, n)
      out = pmapped(params, *split, rngs)
      return jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), out)

    return run


class OnMesh:
  """`jax.jit` over `mesh`: params stay in their layout, the batch is split along "data"."""

  def __init__(self, mesh: Mesh):
    self.mesh = mesh
    self.row_multiple = mesh.shape[sharding.DATA_AXIS]
    self._batch = NamedSharding(mesh, P(sharding.DATA_AXIS))
    self._replicated = NamedSharding(mesh, P())

  def put_params(self, params):
    """Arrays already on this mesh keep their sharding; anything else is replicated on it."""
    def put(x):
      if isinstance(x, jax.Array) and getattr(x.sharding, "mesh", None) == self.mesh:
        return x
      return jax.device_put(x, self._replicated)
    return jax.tree.map(put, params)

  def compile(self, fn: Callable) -> Callable:
    jitted = _jitted(fn, self._replicated)

    def run(params, *arrays_and_rng):
      *arrays, rng = arrays_and_rng
      # Every process holds the whole batch; each device takes its rows from it.
      global_arrays = [jax.make_array_from_callback(a.shape, self._batch,
                                                    functools.partial(_index, a))
                       for a in arrays]
      out = jitted(params, *global_arrays, rng)
      return jax.tree.map(np.asarray, out)

    return run


Placement = Replicated | OnMesh


def _index(array: np.ndarray, index) -> np.ndarray:
  return array[index]


# Compiled functions are cached by (kernel, devices): validation runs again and again, and a fresh
# jax.pmap / jax.jit object would recompile every time.
@functools.lru_cache(maxsize=32)
def _pmapped(fn: Callable, devices: tuple[jax.Device, ...]):
  return jax.pmap(fn, devices=devices)


@functools.lru_cache(maxsize=32)
def _jitted(fn: Callable, replicated: NamedSharding):
  return jax.jit(fn, out_shardings=replicated)


@functools.lru_cache(maxsize=32)
def _generate_kernel(model: T5, options: tuple[tuple[str, Any], ...]) -> Callable:
  return decoding.make_generate_fn(model, **dict(options))


def _score(model: T5, params, input_ids, attention_mask, labels, label_mask, rng):
  del rng  # scoring is deterministic; placements pass every kernel a key
  return candidate_log_likelihoods(model, params, input_ids, attention_mask, labels, label_mask)


@functools.lru_cache(maxsize=8)
def _score_kernel(model: T5) -> Callable:
  return functools.partial(_score, model)


def generation_options(method: str, max_new_tokens: int, *, num_samples: int = 1,
                       temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                       num_beams: int = 4) -> tuple[tuple[str, Any], ...]:
  """The static options of a generate kernel, keeping only those `method` reads."""
  options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "method": method,
                             "num_samples": num_samples}
  if method == "sample":
    options.update(temperature=float(temperature), top_k=top_k, top_p=float(top_p))
  elif method == "beam":
    options.update(num_beams=num_beams)
  return tuple(sorted(options.items()))


# ---- the runner ------------------------------------------------------------------------------


class Runner:
  """Generation and candidate scoring for one or more models sharing a tokenizer.

  Args:
    model: the T5 module (shared by every params set).
    params: {name: params}, e.g. {"rationale": ..., "answer": ...}.
    tokenizer: the models' tokenizer (pad 0, with an EOS token).
    placement: `Replicated()` (default) or `OnMesh(mesh)`.
    batch_size: inputs per call before rounding up to the placement's row multiple.
    max_input_length: cap of the padded input length.
    max_target_length: cap of a scored candidate's length.
    overflow: "truncate" inputs longer than `max_input_length` (students) or raise an "error"
      naming the input (a teacher prompt cut short loses its question or its cue).
    special_tokens: "eos" (the students' layout) or "tokenizer" (a pretrained model's own).
  """

  def __init__(self, model: T5, params: dict[str, Any], tokenizer, *,
               placement: Placement | None = None, batch_size: int, max_input_length: int,
               max_target_length: int = 32, overflow: str = "truncate",
               special_tokens: str = "eos"):
    if batch_size < 1:
      raise ValueError(f"batch size {batch_size} must be >= 1")
    if overflow not in OVERFLOW_MODES:
      raise ValueError(f"overflow={overflow!r}; expected one of {OVERFLOW_MODES}")
    self.model = model
    self.tokenizer = tokenizer
    self.placement = placement or Replicated()
    multiple = self.placement.row_multiple
    self.batch_rows = -(-batch_size // multiple) * multiple
    self.max_input_length = max_input_length
    self.max_target_length = max_target_length
    self.overflow = overflow
    self.special_tokens = special_tokens
    self.params = {name: self.placement.put_params(p) for name, p in params.items()}

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    tokenized = tokenize(self.tokenizer, texts, self.max_input_length,
                         special_tokens=self.special_tokens)
    if tokenized.truncated and self.overflow == "error":
      index = max(range(len(texts)), key=lambda i: tokenized.lengths[i])
      raise InputTooLongError(
          f"input {index} of this batch has {tokenized.longest} tokens, more than the limit of "
          f"{self.max_input_length} ({tokenized.truncated} of {len(texts)} inputs are too long; "
          f"it begins {texts[index][:60]!r})")
    return tokenized.rows

  def generate(self, name: str, texts: Sequence[str], rng: jax.Array, *, max_new_tokens: int,
               method: str = "greedy", num_samples: int = 1, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, num_beams: int = 4
               ) -> list[list[Generation]]:
    """Per text, `num_samples` generations (1 unless sampling) of params set `name`."""
    options = generation_options(method, max_new_tokens, num_samples=num_samples,
                                 temperature=temperature, top_k=top_k, top_p=top_p,
                                 num_beams=num_beams)
    run = self.placement.compile(_generate_kernel(self.model, options))
    encoded = self.encode(texts)
    results: list[list[Generation]] = []
    for b, start in enumerate(range(0, len(encoded), self.batch_rows)):
      rows = encoded[start:start + self.batch_rows]
      ids, mask = pad_rows(rows, self.batch_rows, self.max_input_length)
      out = run(self.params[name], ids, mask, jax.random.fold_in(rng, b))
      tokens, log_probs, lengths = (x[:len(rows)] for x in (out.tokens, out.log_probs,
                                                            out.lengths))  # [n, N, L], [n, N]
      valid = np.arange(tokens.shape[-1])[None, None, :] < lengths[..., None]
      totals = np.where(valid, log_probs, 0.0).sum(-1)
      n = tokens.shape[1]
      decoded = self.tokenizer.batch_decode(tokens.reshape(-1, tokens.shape[-1]),
                                            skip_special_tokens=True)
      for i in range(len(rows)):
        results.append([Generation(decoded[i * n + j].strip(), float(totals[i, j]),
                                   int(lengths[i, j])) for j in range(n)])
    return results

  def score(self, name: str, inputs: Sequence[str], candidates: Sequence[Sequence[str]],
            max_choices: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per input, the summed log-likelihood and token count of each of its candidates.

    Calls have a fixed shape: `batch_rows` inputs x `max_choices` candidate slots.
    """
    run = self.placement.compile(_score_kernel(self.model))
    encoded_inputs = self.encode(inputs)
    encoded_candidates = iter(tokenize(
        self.tokenizer, [c for group in candidates for c in group], self.max_target_length).rows)
    sums, counts = [], []
    for start in range(0, len(inputs), self.batch_rows):
      rows = encoded_inputs[start:start + self.batch_rows]
      groups = candidates[start:start + self.batch_rows]
      ids, mask = pad_rows(rows, self.batch_rows, self.max_input_length)
      # Candidate slots, row-major (input, slot); missing slots and filler inputs stay empty.
      slots: list[list[int]] = [[] for _ in range(self.batch_rows * max_choices)]
      for i, group in enumerate(groups):
        for j in range(len(group)):
          slots[i * max_choices + j] = next(encoded_candidates)
      labels, label_mask = pad_rows(slots, len(slots), self.max_target_length,
                                    fill_with_first=False)
      shape = (self.batch_rows, max_choices, -1)
      total, count = run(self.params[name], ids, mask, labels.reshape(shape),
                         label_mask.reshape(shape), jax.random.key(0))
      for i, group in enumerate(groups):
        sums.append(total[i, :len(group)])
        counts.append(count[i, :len(group)])
    return sums, counts
