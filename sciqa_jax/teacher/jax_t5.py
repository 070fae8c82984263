"""Our Flax T5 as a teacher: Flan-T5-XL/XXL (or any converted T5) on TPU/GPU VMs without torch.

The checkpoint is loaded with `sciqa_jax.models.load_pretrained` and decoded with
`sciqa_jax.decoding.make_generate_fn`, jitted once per (input-length bucket, decoding options):

- Fixed shapes. Every call to the compiled function sees `rows` prompts (the batch size rounded
  up to a multiple of the local device count; short batches are filled with one-token dummy rows)
  padded to `decoding.padded_length` (8, 12, 16, 24, 32, 48, ... capped at `max_input_length`).
  A run therefore compiles at most two programs per doubling of the prompt length (11 for
  prompts of 32 to 1024 tokens) instead of one per batch, and pads a prompt by less than a third.
- Data parallelism over the host's devices. A one-axis mesh over `jax.local_devices()` shards the
  batch rows (NamedSharding, P("data")); parameters are replicated. Each host of a multi-host job
  runs its own teacher on its own devices, on its own share of the examples.
- bf16 on accelerators: compute and parameters in bfloat16 (inference only, so fp32 master weights
  buy nothing and bf16 halves the memory an 11B XXL needs); T5's norms and logits stay fp32 in the
  model. On CPU everything stays fp32.
- Prompts longer than `max_input_length` tokens are an error rather than silently truncated: a cut
  prompt loses either the question or the "Let's think step by step" cue.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sciqa_jax import decoding
from sciqa_jax import models
from sciqa_jax import tokenizer as tokenizer_lib
from sciqa_jax.teacher.base import check_sampling_args

_DATA_AXIS = "data"


class JaxT5Teacher:
  """A Flax T5 checkpoint behind the CompletionTeacher protocol.

  Attributes:
    name: `jax_t5:<model>`, recorded in the cache as the teacher id.
    rows: prompts per compiled call (batch size rounded up to the local device count).
  """

  def __init__(self, model: str, *, batch_size: int = 8, max_input_length: int = 1024,
               dtype: str | None = None, param_dtype: str | None = None):
    """Loads the model, tokenizer and device mesh.

    Args:
      model: hub id or directory of a Hugging Face T5 checkpoint (with its tokenizer).
      batch_size: prompts per compiled call before rounding up to the device count.
      max_input_length: the longest prompt, in tokens, that `complete` accepts.
      dtype: compute dtype; default bfloat16 on accelerators, float32 on CPU.
      param_dtype: parameter dtype; default the same as `dtype`.
    """
    if batch_size < 1:
      raise ValueError(f"teacher.batch_size={batch_size} must be >= 1")
    if max_input_length < 1:
      raise ValueError(f"teacher.max_input_length={max_input_length} must be >= 1")
    on_accelerator = jax.default_backend() != "cpu"
    dtype = dtype or ("bfloat16" if on_accelerator else "float32")
    param_dtype = param_dtype or dtype
    self.name = f"jax_t5:{model}"
    self.model, params = models.load_pretrained(model, dtype=dtype, param_dtype=param_dtype)
    self.tokenizer = tokenizer_lib.load_tokenizer(model)
    self.eos_id = self.tokenizer.eos_token_id
    self.pad_id = self.tokenizer.pad_token_id or 0

    devices = jax.local_devices()
    self.mesh = Mesh(np.array(devices), (_DATA_AXIS,))
    self.rows = -(-batch_size // len(devices)) * len(devices)
    self.max_input_length = max_input_length
    self._replicated = NamedSharding(self.mesh, P())
    self._batch_sharded = NamedSharding(self.mesh, P(_DATA_AXIS))
    self.params = jax.device_put(params, self._replicated)
    self._compiled: dict[tuple, Callable] = {}

  def _generate_fn(self, options: tuple):
    """The jitted generate function for one set of static decoding options (built once)."""
    if options not in self._compiled:
      fn = decoding.make_generate_fn(self.model, **dict(options))
      self._compiled[options] = jax.jit(
          fn, in_shardings=(self._replicated, self._batch_sharded, self._batch_sharded,
                            self._replicated))
    return self._compiled[options]

  def _encode(self, prompts: Sequence[str], offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenises a chunk: [rows, padded length] ids and mask, right-padded, dummy rows added."""
    ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    longest = max(len(row) for row in ids)
    if longest > self.max_input_length:
      index = max(range(len(ids)), key=lambda i: len(ids[i]))
      raise ValueError(f"prompt {offset + index} has {longest} tokens, more than "
                       f"teacher.max_input_length={self.max_input_length}; raise it or shorten "
                       "the prompt (e.g. fewer few-shot exemplars)")
    length = decoding.padded_length(longest, self.max_input_length)
    input_ids = np.full((self.rows, length), self.pad_id, np.int32)
    attention_mask = np.zeros((self.rows, length), np.int32)
    for i, row in enumerate(ids):
      input_ids[i, :len(row)] = row
      attention_mask[i, :len(row)] = 1
    # Dummy rows hold one EOS token: a fully masked row is never fed to attention.
    input_ids[len(ids):, 0] = self.eos_id
    attention_mask[len(ids):, 0] = 1
    return input_ids, attention_mask

  def complete(self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 0.0,
               top_p: float = 1.0, max_new_tokens: int = 128, seed: int = 0) -> list[list[str]]:
    """Per prompt, `num_samples` completions (decoded without special tokens, stripped)."""
    check_sampling_args(num_samples, temperature, top_p, max_new_tokens)
    if temperature > 0:
      options = (("max_new_tokens", max_new_tokens), ("method", "sample"),
                 ("num_samples", num_samples), ("temperature", float(temperature)),
                 ("top_p", float(top_p)))
    else:
      options = (("max_new_tokens", max_new_tokens), ("method", "greedy"))
    generate = self._generate_fn(options)
    base_rng = jax.random.PRNGKey(seed)
    results: list[list[str]] = []
    for chunk_index, start in enumerate(range(0, len(prompts), self.rows)):
      chunk = prompts[start:start + self.rows]
      input_ids, attention_mask = self._encode(chunk, start)
      output = generate(self.params, input_ids, attention_mask,
                        jax.random.fold_in(base_rng, chunk_index))
      tokens = np.asarray(jax.device_get(output.tokens))  # [rows, N, L]
      for row in tokens[:len(chunk)]:
        texts = self.tokenizer.batch_decode(row.tolist(), skip_special_tokens=True)
        results.append([text.strip() for text in texts])
    return results
