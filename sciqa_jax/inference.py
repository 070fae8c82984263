"""Running a T5 or a decoder-only LM over batches of texts: the one inference layer.

Everything that runs a model over texts comes here: evaluation (evaluate.py and train.py's
validation), the stage-1 student writing rationales for stage 2, and the JAX teacher (a Flax T5
or a `CausalLM`: Llama, Qwen2, Mistral, Gemma).

  * Texts are encoded by the one rule of `tokenizer.tokenize`: the students' layout (text, then
    EOS), or a pretrained model's own special tokens (a decoder-only LM's BOS). A decoder-only
    LM's prompt may be wrapped in its tokenizer's chat template first (one user turn, then the
    generation prompt; the template writes BOS itself, so its text gets no special tokens added).
  * Each call sees `batch_rows` rows (the batch size rounded up to the placement's row multiple),
    padded to the `decoding.padded_length` ladder (8, 12, 16, 24, 32, 48, ... capped): at most two
    compiled lengths per doubling, and a batch pads its longest row by less than a third. A ragged
    last batch is filled with copies of its first row (real inputs: generation on them stops when
    it would anyway, and no row is all padding); filler rows are dropped on the host.
  * Two kernels per model kind. T5: `decoding.make_generate_fn` (greedy, sampling, beam) and
    `candidate_log_likelihoods` (rank classification: every candidate target of an input scored
    in one pass over a shared encoder output and cross-attention cache). Decoder-only:
    `decoding.make_lm_generate_fn` (greedy, sampling) on left-padded prompts, stopping at any of
    the model's EOS ids (`lm_special_ids`: generation_config.json's, the config's and the
    tokenizer's), and `lm_candidate_log_likelihoods` (the context prefilled once into a KV cache
    shared by its candidates, each candidate token scored by the logits one position before it).
  * The device scheme is a parameter (`Placement`):
      `Replicated`  `jax.pmap` over the local devices, params replicated: a student that fits one
                    device (evaluate.py).
      `OnMesh`      `jax.jit` over a `Mesh` with `NamedSharding`s, params left in the layout they
                    have (replicated or FSDP-sharded) and the batch split along "data": a sharded
                    student during validation, whose parameters never gather onto one host, and
                    the JAX teacher, whose weights may be sharded FSDP- or tensor-parallel
                    (`sharding.param_specs`). Every process passes the same texts (multi-host),
                    and results come back replicated, so every process reads all of them.

Tokenisation, padding and detokenisation run on the host in numpy.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sciqa_jax import decoding
from sciqa_jax import errors
from sciqa_jax import sharding
from sciqa_jax.models.decoder_only import CausalLM
from sciqa_jax.models.t5 import T5
from sciqa_jax.tokenizer import Tokenized, tokenize

# Decode-cache tensors with one row per sequence (cache index and positions are shared).
_PER_ROW_CACHE = ("cached_key", "cached_value", "cross_key", "cross_value")
OVERFLOW_MODES = ("truncate", "error")
GENERATION_CONFIG_FILE = "generation_config.json"
Model = T5 | CausalLM


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


def lm_candidate_log_likelihoods(model: CausalLM, params, input_ids: jax.Array,
                                 attention_mask: jax.Array, labels: jax.Array,
                                 label_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`candidate_log_likelihoods` for a decoder-only LM: log P(candidate | context).

  Args:
    model: the `CausalLM`.
    params: its params.
    input_ids, attention_mask: [R, S] LEFT-padded contexts (each ends at column S - 1).
    labels, label_mask: [R, C, T] candidate continuations (0-padded on the right, no EOS); an
      all-zero mask scores 0 with count 0.

  Returns:
    ([R, C] fp32 summed log-probs of the candidate tokens, [R, C] int32 token counts).

  The context is prefilled once into a cache of S + T slots, copied to its C candidates, which
  then run as one T-token call: candidate token j is scored by the logits after token j - 1 (the
  context's last logits for j = 0), exactly the logits of one forward pass over context +
  candidate shifted by one. Positions come from the masks, so left pads and a candidate's right
  pads (causally after its real tokens) change nothing.
  """
  r, c, t = labels.shape
  _, state = model.apply({"params": params}, r, input_ids.shape[1] + t,
                         method=CausalLM.init_cache, mutable=["cache"])
  last, state = model.apply({"params": params, "cache": state["cache"]}, input_ids,
                            attention_mask, decode=True, logits_to_keep=1, mutable=["cache"])
  cache = jax.tree.map(lambda x: jnp.repeat(x, c, axis=0) if x.ndim else x, state["cache"])
  flat_labels = labels.reshape(r * c, t)
  flat_mask = label_mask.reshape(r * c, t)
  logits, _ = model.apply({"params": params, "cache": cache}, flat_labels, flat_mask,
                          decode=True, mutable=["cache"])
  predictors = jnp.concatenate([jnp.repeat(last, c, axis=0), logits[:, :-1]], axis=1)
  token_log_probs = decoding.token_log_probs(predictors.astype(jnp.float32), flat_labels)
  totals = jnp.where(flat_mask > 0, token_log_probs, 0.0).sum(-1).reshape(r, c)
  counts = flat_mask.sum(-1).astype(jnp.int32).reshape(r, c)
  return totals, counts


# ---- a decoder-only LM's special tokens ------------------------------------------------------


def read_generation_config(model_dir: str) -> dict[str, Any]:
  """A model directory's generation_config.json as a dict ({} when it has none)."""
  path = os.path.join(model_dir, GENERATION_CONFIG_FILE)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise errors.CorruptFileError(f"{path}: not a readable JSON file ({e})") from None


def lm_special_ids(model: CausalLM, tokenizer, generation_config: dict[str, Any] | None = None
                   ) -> tuple[tuple[int, ...], int]:
  """(EOS ids, pad id) for generating with a decoder-only LM.

  EOS: generation_config.json's ids (what HF's `generate` stops at; Llama 3 chat models list
  several, e.g. <|end_of_text|> and <|eot_id|>), else config.json's, plus the tokenizer's EOS (the
  token its chat template closes a turn with), in that order. Pad: the tokenizer's, else
  generation_config.json's, else config.json's, else the first EOS (HF's rule; most causal LMs'
  tokenizers have none). Pads only fill masked prompt columns and the steps after a row's EOS.
  """
  generation_config = generation_config or {}
  as_ids = decoding.as_token_ids
  eos = as_ids(generation_config.get("eos_token_id")) or model.config.eos_token_ids
  eos = tuple(dict.fromkeys(eos + as_ids(getattr(tokenizer, "eos_token_id", None))))
  candidates = (getattr(tokenizer, "pad_token_id", None), generation_config.get("pad_token_id"),
                model.config.pad_token_id, eos[0] if eos else 0)
  return eos, int(next(p for p in candidates if p is not None))


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
def _generate_kernel(model: Model, options: tuple[tuple[str, Any], ...]) -> Callable:
  if isinstance(model, CausalLM):
    return decoding.make_lm_generate_fn(model, **dict(options))
  return decoding.make_generate_fn(model, **dict(options))


def _score(model: Model, params, input_ids, attention_mask, labels, label_mask, rng):
  del rng  # scoring is deterministic; placements pass every kernel a key
  kernel = (lm_candidate_log_likelihoods if isinstance(model, CausalLM)
            else candidate_log_likelihoods)
  return kernel(model, params, input_ids, attention_mask, labels, label_mask)


@functools.lru_cache(maxsize=8)
def _score_kernel(model: Model) -> Callable:
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
    model: the T5 or `CausalLM` module (shared by every params set).
    params: {name: params}, e.g. {"rationale": ..., "answer": ...}.
    tokenizer: the models' tokenizer (T5: pad 0, with an EOS token).
    placement: `Replicated()` (default) or `OnMesh(mesh)`.
    batch_size: inputs per call before rounding up to the placement's row multiple.
    max_input_length: cap of the padded input length (a decoder-only LM: of the prompt).
    max_target_length: cap of a scored candidate's length.
    overflow: "truncate" inputs longer than `max_input_length` (students) or raise an "error"
      naming the input (a teacher prompt cut short loses its question or its cue).
    special_tokens: "eos" (the students' layout) or "tokenizer" (a pretrained model's own); default
      "eos" for T5, and a decoder-only LM only takes "tokenizer" (BOS, never a trailing EOS).
    chat_template: (decoder-only) wrap each input in the tokenizer's chat template as one user turn
      with the generation prompt.
    eos_token_ids, pad_token_id: (decoder-only) where generation stops and what fills after it;
      default `lm_special_ids(model, tokenizer)` (the teacher adds generation_config.json's).
  """

  def __init__(self, model: Model, params: dict[str, Any], tokenizer, *,
               placement: Placement | None = None, batch_size: int, max_input_length: int,
               max_target_length: int = 32, overflow: str = "truncate",
               special_tokens: str | None = None, chat_template: bool = False,
               eos_token_ids: Sequence[int] | None = None, pad_token_id: int | None = None):
    if batch_size < 1:
      raise ValueError(f"batch size {batch_size} must be >= 1")
    if overflow not in OVERFLOW_MODES:
      raise ValueError(f"overflow={overflow!r}; expected one of {OVERFLOW_MODES}")
    self.model = model
    self.causal = isinstance(model, CausalLM)
    self.tokenizer = tokenizer
    self.placement = placement or Replicated()
    multiple = self.placement.row_multiple
    self.batch_rows = -(-batch_size // multiple) * multiple
    self.max_input_length = max_input_length
    self.max_target_length = max_target_length
    self.overflow = overflow
    self.special_tokens = special_tokens or ("tokenizer" if self.causal else "eos")
    self.chat_template = chat_template
    self._check_prompt_options()
    # T5 decodes with its config's ids (decoding.make_generate_fn); these are the LM's.
    self.eos_token_ids, self.pad_token_id = (), 0
    if self.causal:
      default_eos, default_pad = lm_special_ids(model, tokenizer)
      self.eos_token_ids = (default_eos if eos_token_ids is None
                            else decoding.as_token_ids(eos_token_ids))
      self.pad_token_id = default_pad if pad_token_id is None else int(pad_token_id)
    self.params = {name: self.placement.put_params(p) for name, p in params.items()}

  def _check_prompt_options(self) -> None:
    if self.causal and self.special_tokens != "tokenizer":
      raise ValueError(f"special_tokens={self.special_tokens!r}: a decoder-only LM's prompts take "
                       "its tokenizer's own special tokens ('tokenizer'), never a trailing EOS")
    if self.chat_template and not self.causal:
      raise ValueError("chat_template=True needs a decoder-only LM (T5 prompts are plain text)")
    if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
      raise errors.ConfigError("a chat template was asked for but the tokenizer has none: set "
                               "teacher.use_chat_template=False")

  def format_prompts(self, texts: Sequence[str]) -> list[str]:
    """The text the model reads: each input as one chat turn when `chat_template` is on."""
    if not self.chat_template:
      return list(texts)
    return [self.tokenizer.apply_chat_template([{"role": "user", "content": str(text)}],
                                               tokenize=False, add_generation_prompt=True)
            for text in texts]

  def _tokenize(self, texts: Sequence[str]) -> Tokenized:
    if not self.chat_template:
      return tokenize(self.tokenizer, texts, self.max_input_length,
                      special_tokens=self.special_tokens)
    # The template wrote the special tokens (BOS, turn markers): none are added.
    rows = self.tokenizer(self.format_prompts(texts), add_special_tokens=False)["input_ids"]
    return Tokenized([list(row[:self.max_input_length]) for row in rows],
                     [len(row) for row in rows], self.max_input_length)

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    tokenized = self._tokenize(texts)
    if tokenized.truncated and self.overflow == "error":
      index = max(range(len(texts)), key=lambda i: tokenized.lengths[i])
      raise InputTooLongError(
          f"input {index} of this batch has {tokenized.longest} tokens, more than the limit of "
          f"{self.max_input_length} ({tokenized.truncated} of {len(texts)} inputs are too long; "
          f"it begins {texts[index][:60]!r})")
    return tokenized.rows

  def _encode_candidates(self, texts: Sequence[str]) -> list[list[int]]:
    """T5: targets in the students' layout (EOS-terminated). Decoder-only: the continuation's
    tokens alone (no BOS, no EOS), appended to the context's: give it its leading space."""
    if not self.causal:
      return tokenize(self.tokenizer, texts, self.max_target_length).rows
    rows = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [list(row[:self.max_target_length]) for row in rows]

  def _input_batch(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """[batch_rows, ladder length] ids and mask; left-padded for a decoder-only LM, whose prompt
    must end at the last column for the next token to follow it."""
    ids, mask = pad_rows(rows, self.batch_rows, self.max_input_length)
    if self.causal:
      ids, mask = decoding.left_pad(ids, mask, ids.shape[1], self.pad_token_id)
    return ids, mask

  def _options(self, method: str, max_new_tokens: int, **sampling) -> tuple[tuple[str, Any], ...]:
    if not self.causal:
      return generation_options(method, max_new_tokens, **sampling)
    if method not in decoding.LM_METHODS:
      raise ValueError(f"method={method!r}: a decoder-only LM generates with "
                       f"{decoding.LM_METHODS}")
    options = dict(generation_options(method, max_new_tokens, **sampling))
    options.update(eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id)
    return tuple(sorted(options.items()))

  def _decode(self, tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Each row's tokens up to its length (EOS included: a special token, skipped), decoded
    without special tokens, as HF's pipelines do; the pads after it are never read."""
    rows = [row[:int(n)].tolist()
            for row, n in zip(tokens.reshape(-1, tokens.shape[-1]), lengths.reshape(-1))]
    return [text.strip() for text in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

  def generate(self, name: str, texts: Sequence[str], rng: jax.Array, *, max_new_tokens: int,
               method: str = "greedy", num_samples: int = 1, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, num_beams: int = 4
               ) -> list[list[Generation]]:
    """Per text, `num_samples` generations (1 unless sampling) of params set `name`."""
    options = self._options(method, max_new_tokens, num_samples=num_samples,
                            temperature=temperature, top_k=top_k, top_p=top_p,
                            num_beams=num_beams)
    run = self.placement.compile(_generate_kernel(self.model, options))
    encoded = self.encode(texts)
    results: list[list[Generation]] = []
    for b, start in enumerate(range(0, len(encoded), self.batch_rows)):
      rows = encoded[start:start + self.batch_rows]
      ids, mask = self._input_batch(rows)
      out = run(self.params[name], ids, mask, jax.random.fold_in(rng, b))
      tokens, log_probs, lengths = (x[:len(rows)] for x in (out.tokens, out.log_probs,
                                                            out.lengths))  # [n, N, L], [n, N]
      valid = np.arange(tokens.shape[-1])[None, None, :] < lengths[..., None]
      totals = np.where(valid, log_probs, 0.0).sum(-1)
      n = tokens.shape[1]
      decoded = self._decode(tokens, lengths)
      for i in range(len(rows)):
        results.append([Generation(decoded[i * n + j], float(totals[i, j]), int(lengths[i, j]))
                        for j in range(n)])
    return results

  def score(self, name: str, inputs: Sequence[str], candidates: Sequence[Sequence[str]],
            max_choices: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per input, the summed log-likelihood and token count of each of its candidates.

    Calls have a fixed shape: `batch_rows` inputs x `max_choices` candidate slots. For a
    decoder-only LM an input is the context (chat-wrapped when `chat_template` is on) and a
    candidate its continuation (`_encode_candidates`).
    """
    run = self.placement.compile(_score_kernel(self.model))
    encoded_inputs = self.encode(inputs)
    encoded_candidates = iter(self._encode_candidates([c for group in candidates for c in group]))
    sums, counts = [], []
    for start in range(0, len(inputs), self.batch_rows):
      rows = encoded_inputs[start:start + self.batch_rows]
      groups = candidates[start:start + self.batch_rows]
      ids, mask = self._input_batch(rows)
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
