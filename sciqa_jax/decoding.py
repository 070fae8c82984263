"""Fixed-shape generation for T5 (greedy, sampling, beam search) and decoder-only LMs (greedy,
sampling) over a KV cache.

Every method is one jitted program: the encoder runs once per batch, `T5.init_cache` projects the
cross-attention keys/values once, and a `lax.while_loop` emits one token per iteration into
preallocated [batch, max_new_tokens] buffers. The loop exits as soon as every sequence has emitted
EOS (beam search: as soon as Hugging Face's stopping rule says no beam can improve), so short
answers do not pay for `max_new_tokens` steps; shapes never depend on the data, so a new batch
with the same shapes never recompiles.

Outputs (`GenerateOutput`): `tokens` [B, N, L] int32, the generated ids without the decoder start
token, EOS included, pad (0) after it; `log_probs` [B, N, L] fp32, each token's log-probability
under the model itself (log-softmax of the logits before temperature / top-k / top-p, so scores
are comparable across decoding settings; 0 on padding); `lengths` [B, N], tokens up to and
including EOS (L when no EOS). N is `num_samples` for sampling, 1 otherwise.

Beam search follows transformers' (v4.50+/v5) vectorised beam search step by step: 2K candidates
per step, candidates ending in EOS (or at the length limit) are scored `sum_logprob / length **
length_penalty` (length counts generated tokens, EOS included) and only enter the finished set
from the top K candidates; `early_stopping` True / False / "never" keeps HF's meaning (False: stop
when the best running beam, scored at the current length, cannot beat the worst finished one). The
same checkpoint and settings therefore give the same best beam as HF `generate(num_beams=K)`.

Decoder-only LMs (`make_lm_generate_fn`, `generate_lm`) take left-padded prompts [B, P]: one
prefill call writes the whole prompt into a cache of P + max_new_tokens slots (the mask marks the
pads; positions count real tokens only, as HF's `generate` does), then the same `lax.while_loop`
emits one token per iteration. `tokens` hold only the new tokens, in the same layout as T5's.
`generate_lm` left-aligns any padding and pads the prompt length up the `padded_length` ladder, so
prompts of similar lengths share one compiled program.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sciqa_jax.models.decoder_only import CausalLM
from sciqa_jax.models.t5 import T5

METHODS = ("greedy", "sample", "beam")
_NEG = -1.0e9  # HF's "impossible" score
MIN_PADDED_LENGTH = 8


def padded_length(length: int, cap: int) -> int:
  """The input length to compile for: the smallest of 8, 12, 16, 24, 32, 48, ... >= length, capped.

  Callers pad each batch to this length so a run compiles at most two programs per doubling of
  the length, not one per batch. Power-of-two lengths alone waste up to half of every encoder
  pass (a 170-token question + rationale padded to 256); with the 1.5x steps between them a bucket
  is less than a third longer than its longest row (above 8 tokens), for at most twice the
  compiled shapes.
  """
  bucket = MIN_PADDED_LENGTH
  while bucket < length:
    is_power_of_two = bucket & (bucket - 1) == 0
    bucket = bucket * 3 // 2 if is_power_of_two else bucket * 4 // 3
  return min(bucket, cap)


class GenerateOutput(NamedTuple):
  tokens: jax.Array  # [B, N, L] int32
  log_probs: jax.Array  # [B, N, L] fp32
  lengths: jax.Array  # [B, N] int32


def _check_options(method, max_new_tokens, temperature, top_k, top_p, num_beams, num_samples,
                   early_stopping):
  if method not in METHODS:
    raise ValueError(f"generate: method={method!r}; expected one of {METHODS}.")
  if max_new_tokens < 1:
    raise ValueError(f"generate: max_new_tokens={max_new_tokens} must be >= 1.")
  if method == "sample":
    if temperature <= 0:
      raise ValueError(f"generate: temperature={temperature} must be > 0 for sampling "
                       "(use method='greedy' for temperature 0).")
    if top_k < 0 or not 0 < top_p <= 1:
      raise ValueError(f"generate: need top_k >= 0 and 0 < top_p <= 1, got {top_k}, {top_p}.")
  if num_samples < 1 or (num_samples > 1 and method != "sample"):
    raise ValueError(f"generate: num_samples={num_samples} needs method='sample' (and >= 1).")
  if method == "beam" and num_beams < 1:
    raise ValueError(f"generate: num_beams={num_beams} must be >= 1.")
  if early_stopping not in (True, False, "never"):
    raise ValueError(f"generate: early_stopping={early_stopping!r}; expected True, False or 'never'.")


def _filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """Masks logits outside the top-k set and outside the top-p nucleus (keeps >= 1 token)."""
  if top_k > 0:
    kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # A token is kept while the mass strictly before it is < top_p: the first is always kept.
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    cutoff_index = jnp.sum(mass_before < top_p, axis=-1, keepdims=True) - 1
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log softmax(logits)[token] for logits [..., V] and tokens [...]: the one token
  log-likelihood of generation and candidate scoring."""
  picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def make_generate_fn(model: T5, *, max_new_tokens: int, method: str = "greedy",
                     temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                     num_beams: int = 4, length_penalty: float = 1.0, num_samples: int = 1,
                     early_stopping: bool | str = False):
  """Returns `fn(params, input_ids, attention_mask, rng) -> GenerateOutput`.

  `fn` is pure and closes over static options only, so it can be wrapped in `jax.jit` or
  `jax.pmap` (replicated params, per-device batches and keys). `rng` is only read by sampling
  (pass any key, e.g. `jax.random.key(0)`, otherwise).
  """
  _check_options(method, max_new_tokens, temperature, top_k, top_p, num_beams, num_samples,
                 early_stopping)
  cfg = model.config
  length = max_new_tokens
  pad, eos, start = cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id

  def encode_and_cache(params, input_ids, attention_mask, copies):
    encoded = model.apply({"params": params}, input_ids, attention_mask, method=T5.encode)
    # Encode B rows once, then copy the encoder output per sample / beam.
    encoded = jnp.repeat(encoded, copies, axis=0)
    mask = jnp.repeat(attention_mask, copies, axis=0)
    _, variables = model.apply({"params": params}, encoded, mask, length, method=T5.init_cache,
                               mutable=["cache"])
    return encoded, mask, variables["cache"]

  def step(params, cache, tokens, encoded, mask):
    logits, variables = model.apply({"params": params, "cache": cache}, tokens[:, None], encoded,
                                    mask, decode=True, method=T5.decode, mutable=["cache"])
    return logits[:, 0], variables["cache"]

  def sample_or_greedy(params, input_ids, attention_mask, rng):
    batch = input_ids.shape[0]
    copies = num_samples if method == "sample" else 1
    rows = batch * copies
    encoded, mask, cache = encode_and_cache(params, input_ids, attention_mask, copies)

    def cond(state):
      t, _, _, done, _, _ = state
      return (t < length) & ~jnp.all(done)

    def body(state):
      t, tokens, log_probs, done, last, cache = state
      logits, cache = step(params, cache, last, encoded, mask)
      if method == "greedy":
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
      else:
        scaled = _filter_logits(logits / temperature, top_k, top_p)
        token = jax.random.categorical(jax.random.fold_in(rng, t), scaled).astype(jnp.int32)
      token_lp = token_log_probs(logits, token)
      token = jnp.where(done, pad, token)
      token_lp = jnp.where(done, 0.0, token_lp)
      tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, t))
      log_probs = jax.lax.dynamic_update_slice(log_probs, token_lp[:, None], (0, t))
      return t + 1, tokens, log_probs, done | (token == eos), token, cache

    state = (jnp.array(0, jnp.int32), jnp.full((rows, length), pad, jnp.int32),
             jnp.zeros((rows, length), jnp.float32), jnp.zeros((rows,), bool),
             jnp.full((rows,), start, jnp.int32), cache)
    _, tokens, log_probs, _, _, _ = jax.lax.while_loop(cond, body, state)
    is_eos = tokens == eos
    lengths = jnp.where(is_eos.any(-1), jnp.argmax(is_eos, axis=-1) + 1, length).astype(jnp.int32)
    return GenerateOutput(tokens.reshape(batch, copies, length),
                          log_probs.reshape(batch, copies, length), lengths.reshape(batch, copies))

  def beam_search(params, input_ids, attention_mask, rng):
    del rng  # deterministic
    batch, k = input_ids.shape[0], num_beams
    keep = 2 * k  # HF: max(2, 1 + #eos) * num_beams candidates per step
    encoded, mask, cache = encode_and_cache(params, input_ids, attention_mask, k)
    # HF's running sequences include the start token at position 0: `cur_len = t + 1`.

    def gather(x, idx):  # x [B, M, ...], idx [B, N] -> [B, N, ...]
      return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)

    def cond(state):
      t, unsat, finished, hits_all = state[0], state[1], state[2], state[3]
      open_beam = ~(jnp.all(finished) & (early_stopping is True))
      return (t < length) & jnp.any(unsat) & open_beam & ~hits_all

    def body(state):
      (t, unsat, finished, _, run_seq, run_lp, run_scores, seq, seq_lp, seq_len, scores,
       cache) = state
      last = jnp.where(t == 0, start, run_seq[:, :, jnp.maximum(t - 1, 0)]).reshape(-1)
      logits, cache = step(params, cache, last, encoded, mask)
      log_probs = jax.nn.log_softmax(logits, axis=-1).reshape(batch, k, -1)
      vocab = log_probs.shape[-1]
      accumulated = (log_probs + run_scores[:, :, None]).reshape(batch, k * vocab)
      cand_scores, flat_idx = jax.lax.top_k(accumulated, keep)
      parent, token = flat_idx // vocab, (flat_idx % vocab).astype(jnp.int32)
      token_lp = jnp.take_along_axis(log_probs.reshape(batch, k * vocab), flat_idx, axis=1)
      cand_seq = gather(run_seq, parent).at[:, :, t].set(token)
      cand_lp = gather(run_lp, parent).at[:, :, t].set(token_lp)
      hits = (token == eos) | (t + 1 >= length)

      # Running beams: the best K candidates that did not just finish.
      running_scores = cand_scores + hits.astype(jnp.float32) * _NEG
      next_scores, pick = jax.lax.top_k(running_scores, k)
      run_seq, run_lp = gather(cand_seq, pick), gather(cand_lp, pick)
      beam_parent = jnp.take_along_axis(parent, pick, axis=1)
      flat_parent = (beam_parent + jnp.arange(batch)[:, None] * k).reshape(-1)
      cache = jax.tree_util.tree_map_with_path(
          lambda path, x: x[flat_parent] if path[-1].key in ("cached_key", "cached_value") else x,
          cache)

      # Finished set: candidates among the top K that just finished, length-penalised.
      just_finished = hits & (jnp.arange(keep) < k)[None, :]
      fin_scores = cand_scores / ((t + 1).astype(jnp.float32)**length_penalty)
      if early_stopping is True:
        fin_scores += jnp.all(finished, axis=-1, keepdims=True) * _NEG
      fin_scores += (~unsat).astype(jnp.float32) * _NEG
      fin_scores += (~just_finished).astype(jnp.float32) * _NEG
      merged_scores = jnp.concatenate([scores, fin_scores], axis=1)
      scores, best = jax.lax.top_k(merged_scores, k)
      seq = gather(jnp.concatenate([seq, cand_seq], axis=1), best)
      seq_lp = gather(jnp.concatenate([seq_lp, cand_lp], axis=1), best)
      seq_len = gather(jnp.concatenate([seq_len, jnp.full((batch, keep), t + 1)], axis=1), best)
      finished = gather(jnp.concatenate([finished, just_finished], axis=1), best)

      # HF's heuristic: can the best running beam still beat the worst finished one?
      if early_stopping == "never" and length_penalty > 0.0:
        best_len = jnp.float32(length)
      else:
        best_len = (t + 1).astype(jnp.float32)
      best_running = next_scores[:, :1] / best_len**length_penalty
      worst_finished = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), _NEG)
      unsat = unsat & jnp.any(best_running > worst_finished, axis=-1, keepdims=True)
      return (t + 1, unsat, finished, jnp.all(hits), run_seq, run_lp, next_scores, seq, seq_lp,
              seq_len, scores, cache)

    zeros_seq = jnp.full((batch, k, length), pad, jnp.int32)
    zeros_lp = jnp.zeros((batch, k, length), jnp.float32)
    run_scores = jnp.zeros((batch, k), jnp.float32).at[:, 1:].set(_NEG)
    state = (jnp.array(0, jnp.int32), jnp.ones((batch, 1), bool), jnp.zeros((batch, k), bool),
             jnp.array(False), zeros_seq, zeros_lp, run_scores, zeros_seq, zeros_lp,
             jnp.zeros((batch, k), jnp.int32), jnp.full((batch, k), _NEG, jnp.float32), cache)
    state = jax.lax.while_loop(cond, body, state)
    seq, seq_lp, seq_len = state[7][:, :1], state[8][:, :1], state[9][:, :1]
    valid = jnp.arange(length)[None, None, :] < seq_len[..., None]
    return GenerateOutput(jnp.where(valid, seq, pad), jnp.where(valid, seq_lp, 0.0),
                          seq_len.astype(jnp.int32))

  return beam_search if method == "beam" else sample_or_greedy


@functools.lru_cache(maxsize=32)
def _jitted_generate_fn(model: T5, options: tuple[tuple[str, Any], ...]):
  return jax.jit(make_generate_fn(model, **dict(options)))


def generate(model: T5, params: Any, input_ids: jax.Array, attention_mask: jax.Array, *,
             max_new_tokens: int, method: str = "greedy", rng: jax.Array | None = None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_beams: int = 4,
             length_penalty: float = 1.0, num_samples: int = 1,
             early_stopping: bool | str = False) -> GenerateOutput:
  """Generates continuations for a batch of encoder inputs (see the module docstring).

  The jitted program is cached per (model config, options), so repeated calls with the same
  shapes do not recompile. `rng` is required for `method="sample"`.
  """
  if method == "sample" and rng is None:
    raise ValueError("generate: method='sample' needs an explicit rng key.")
  options = dict(max_new_tokens=max_new_tokens, method=method, temperature=temperature,
                 top_k=top_k, top_p=top_p, num_beams=num_beams, length_penalty=length_penalty,
                 num_samples=num_samples, early_stopping=early_stopping)
  fn = _jitted_generate_fn(model, tuple(sorted(options.items())))
  rng = jax.random.key(0) if rng is None else rng
  return fn(params, jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32), rng)


# ------------------------------------------------------------------------------------------------
# Decoder-only LMs
# ------------------------------------------------------------------------------------------------
LM_METHODS = ("greedy", "sample")


def as_token_ids(value) -> tuple[int, ...]:
  """None, one id or several ids (as HF configs write EOS) -> a tuple of ints."""
  if value is None:
    return ()
  if isinstance(value, (int, np.integer)):
    return (int(value),)
  return tuple(int(v) for v in value)


def _lm_special_ids(model: CausalLM, eos_token_id, pad_token_id) -> tuple[tuple[int, ...], int]:
  """(EOS ids, pad id): the arguments, else the config's; pad falls back to the first EOS (HF's
  rule when a model has no pad token), then 0."""
  eos = as_token_ids(model.config.eos_token_ids if eos_token_id is None else eos_token_id)
  pad = model.config.pad_token_id if pad_token_id is None else pad_token_id
  if pad is None:
    pad = eos[0] if eos else 0
  return eos, int(pad)


def make_lm_generate_fn(model: CausalLM, *, max_new_tokens: int, method: str = "greedy",
                        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                        num_samples: int = 1, eos_token_id: int | Sequence[int] | None = None,
                        pad_token_id: int | None = None):
  """Returns `fn(params, input_ids, attention_mask, rng) -> GenerateOutput` for a `CausalLM`.

  `input_ids` [B, P] are left-padded prompts (real tokens last in every row; `left_pad` makes
  them), `attention_mask` their 0/1 mask. Generation stops at any of `eos_token_id` (default the
  config's; several for Llama 3 chat models) per row; `pad_token_id` (default the config's, else
  the first EOS) fills the rest. `fn` is pure and closes over static options only: safe to
  `jax.jit` or `jax.pmap`, and with sharded params under `jax.jit` on a mesh. `rng` is only read
  by sampling.
  """
  if method not in LM_METHODS:
    raise ValueError(f"generate: method={method!r}; a decoder-only LM supports {LM_METHODS}.")
  _check_options(method, max_new_tokens, temperature, top_k, top_p, 1, num_samples, False)
  eos_ids, pad = _lm_special_ids(model, eos_token_id, pad_token_id)
  eos_array = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)
  length = max_new_tokens
  copies = num_samples if method == "sample" else 1

  def prefill(params, input_ids, attention_mask):
    """Cache of P + length slots holding the prompt, and the logits after its last token."""
    batch, prompt_length = input_ids.shape
    _, variables = model.apply({"params": params}, batch, prompt_length + length,
                               method=CausalLM.init_cache, mutable=["cache"])
    logits, variables = model.apply({"params": params, "cache": variables["cache"]}, input_ids,
                                    attention_mask, decode=True, logits_to_keep=1,
                                    mutable=["cache"])
    return logits[:, 0], variables["cache"]

  def step(params, cache, token):
    logits, variables = model.apply({"params": params, "cache": cache}, token[:, None],
                                    decode=True, mutable=["cache"])
    return logits[:, 0], variables["cache"]

  def choose(logits, t, rng):
    if method == "greedy":
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = _filter_logits(logits / temperature, top_k, top_p)
    return jax.random.categorical(jax.random.fold_in(rng, t), scaled).astype(jnp.int32)

  def emit(t, logits, tokens, log_probs, done, rng):
    """Picks step t's token for every row and records it (pad and 0 after a row's EOS)."""
    token = choose(logits, t, rng)
    token_lp = jnp.where(done, 0.0, token_log_probs(logits, token))
    token = jnp.where(done, pad, token)
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, t))
    log_probs = jax.lax.dynamic_update_slice(log_probs, token_lp[:, None], (0, t))
    return token, tokens, log_probs, done | jnp.isin(token, eos_array)

  def generate_fn(params, input_ids, attention_mask, rng):
    batch = input_ids.shape[0]
    rows = batch * copies
    logits, cache = prefill(params, input_ids.astype(jnp.int32),
                            attention_mask.astype(jnp.int32))
    if copies > 1:  # Prefill B prompts once, then copy their caches per sample.
      logits = jnp.repeat(logits, copies, axis=0)
      cache = jax.tree.map(lambda x: jnp.repeat(x, copies, axis=0) if x.ndim else x, cache)
    tokens = jnp.full((rows, length), pad, jnp.int32)
    log_probs = jnp.zeros((rows, length), jnp.float32)
    last, tokens, log_probs, done = emit(0, logits, tokens, log_probs,
                                         jnp.zeros((rows,), bool), rng)

    def cond(state):
      t, _, _, done, _, _ = state
      return (t < length) & ~jnp.all(done)

    def body(state):
      t, tokens, log_probs, done, last, cache = state
      logits, cache = step(params, cache, last)
      last, tokens, log_probs, done = emit(t, logits, tokens, log_probs, done, rng)
      return t + 1, tokens, log_probs, done, last, cache

    state = (jnp.array(1, jnp.int32), tokens, log_probs, done, last, cache)
    _, tokens, log_probs, _, _, _ = jax.lax.while_loop(cond, body, state)
    is_eos = jnp.isin(tokens, eos_array)
    lengths = jnp.where(is_eos.any(-1), jnp.argmax(is_eos, axis=-1) + 1, length).astype(jnp.int32)
    return GenerateOutput(tokens.reshape(batch, copies, length),
                          log_probs.reshape(batch, copies, length), lengths.reshape(batch, copies))

  return generate_fn


def left_pad(input_ids: np.ndarray, attention_mask: np.ndarray, length: int,
             pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Host-side: each row's real tokens (mask 1, in order) moved to the end of a [B, length] row.

  Accepts right- or left-padded input; a decoder-only prompt must end at its last column so the
  next token follows it directly.
  """
  input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
  counts = attention_mask.sum(-1)
  if counts.max(initial=0) > length:
    raise ValueError(f"left_pad: a prompt has {counts.max()} tokens, more than length={length}.")
  ids = np.full((input_ids.shape[0], length), pad_token_id, np.int32)
  mask = np.zeros((input_ids.shape[0], length), np.int32)
  for row, count in enumerate(counts):
    if count:
      ids[row, length - count:] = input_ids[row][attention_mask[row] > 0]
      mask[row, length - count:] = 1
  return ids, mask


@functools.lru_cache(maxsize=32)
def _jitted_lm_generate_fn(model: CausalLM, options: tuple[tuple[str, Any], ...]):
  return jax.jit(make_lm_generate_fn(model, **dict(options)))


def generate_lm(model: CausalLM, params: Any, input_ids: Any, attention_mask: Any, *,
                max_new_tokens: int, method: str = "greedy", rng: jax.Array | None = None,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                num_samples: int = 1, eos_token_id: int | Sequence[int] | None = None,
                pad_token_id: int | None = None,
                max_prompt_length: int | None = None) -> GenerateOutput:
  """`make_lm_generate_fn`, jitted and cached, on prompts left-padded to the `padded_length`
  ladder (capped at `max_prompt_length`, default uncapped); input padding may be left or right.
  `rng` is required for `method="sample"`."""
  if method == "sample" and rng is None:
    raise ValueError("generate_lm: method='sample' needs an explicit rng key.")
  mask = np.asarray(attention_mask)
  longest = int(mask.sum(-1).max(initial=1))
  if max_prompt_length is not None and longest > max_prompt_length:
    raise ValueError(f"generate_lm: a prompt has {longest} tokens, more than "
                     f"max_prompt_length={max_prompt_length}.")
  _, pad = _lm_special_ids(model, eos_token_id, pad_token_id)
  ids, mask = left_pad(input_ids, mask, padded_length(longest, max_prompt_length or 1 << 30),
                       pad)
  options = dict(max_new_tokens=max_new_tokens, method=method, temperature=temperature,
                 top_k=top_k, top_p=top_p, num_samples=num_samples,
                 eos_token_id=(eos_token_id if eos_token_id is None or
                               isinstance(eos_token_id, int) else tuple(eos_token_id)),
                 pad_token_id=pad_token_id)
  fn = _jitted_lm_generate_fn(model, tuple(sorted(options.items())))
  rng = jax.random.key(0) if rng is None else rng
  return fn(params, ids, mask, rng)
