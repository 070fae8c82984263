"""Our Flax T5 as a teacher: Flan-T5-XL/XXL (or any converted T5) on TPU/GPU VMs without torch.

The checkpoint is loaded with `sciqa_jax.models.load_pretrained` and run through the inference
layer (`sciqa_jax.inference.Runner` on an `OnMesh` placement over this host's devices):

- Fixed shapes. Every compiled call sees `rows` prompts (the batch size rounded up to a multiple
  of the local device count) padded to the `decoding.padded_length` ladder (8, 12, 16, 24, 32,
  48, ... capped at `max_input_length`): at most two compiled lengths per doubling of the prompt
  length, and a prompt padded by less than a third.
- The batch rows are split over the host's devices. The weights are replicated
  (`parallelism="data"`) or sharded over the devices (`"fsdp"`: each device holds about 1/n of
  every large tensor, gathered layer by layer as the program runs), so a model larger than one
  device's memory runs.
- bf16 on accelerators: compute and parameters in bfloat16 (inference only, so fp32 master weights
  buy nothing and bf16 halves the memory an 11B XXL needs); T5's norms and logits stay fp32 in the
  model. On CPU everything stays fp32.
- Prompts longer than `max_input_length` tokens are an error rather than silently truncated: a cut
  prompt loses either the question or the "Let's think step by step" cue.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import NamedSharding

from sciqa_jax import errors
from sciqa_jax import inference
from sciqa_jax import models
from sciqa_jax import sharding
from sciqa_jax import tokenizer as tokenizer_lib
from sciqa_jax.teacher.base import check_sampling_args

PARALLELISMS = ("data", "fsdp")
_MODEL = "teacher"


class JaxT5Teacher:
  """A Flax T5 checkpoint behind the CompletionTeacher protocol.

  Attributes:
    name: `jax_t5:<model>`, recorded in the cache as the teacher id.
    rows: prompts per compiled call (batch size rounded up to the local device count).
  """

  def __init__(self, model: str, *, batch_size: int = 8, max_input_length: int = 1024,
               dtype: str | None = None, param_dtype: str | None = None,
               parallelism: str = "data"):
    """Loads the model, tokenizer and device mesh.

    Args:
      model: hub id or directory of a Hugging Face T5 checkpoint (with its tokenizer).
      batch_size: prompts per compiled call before rounding up to the device count.
      max_input_length: the longest prompt, in tokens, that `complete` accepts.
      dtype: compute dtype; default bfloat16 on accelerators, float32 on CPU.
      param_dtype: parameter dtype; default the same as `dtype`.
      parallelism: "data" (weights replicated on every local device) or "fsdp" (sharded).
    """
    if batch_size < 1:
      raise errors.ConfigError(f"teacher.batch_size={batch_size} must be >= 1")
    if max_input_length < 1:
      raise errors.ConfigError(f"teacher.max_input_length={max_input_length} must be >= 1")
    if parallelism not in PARALLELISMS:
      raise errors.ConfigError(f"teacher.parallelism={parallelism!r}; expected one of "
                               f"{PARALLELISMS}")
    on_accelerator = jax.default_backend() != "cpu"
    dtype = dtype or ("bfloat16" if on_accelerator else "float32")
    self.name = f"jax_t5:{model}"
    self.model, params = models.load_pretrained(model, dtype=dtype,
                                                param_dtype=param_dtype or dtype)
    self.tokenizer = tokenizer_lib.load_tokenizer(model)
    self.max_input_length = max_input_length
    mesh = sharding.make_mesh("data", jax.local_devices())
    if parallelism == "fsdp":
      count = mesh.shape[sharding.DATA_AXIS]
      params = jax.tree.map(
          lambda x: jax.device_put(x, NamedSharding(mesh, sharding.fsdp_spec(x.shape, count))),
          params)
    self.runner = inference.Runner(self.model, {_MODEL: params}, self.tokenizer,
                                   placement=inference.OnMesh(mesh), batch_size=batch_size,
                                   max_input_length=max_input_length, overflow="error",
                                   special_tokens="tokenizer")
    self.rows = self.runner.batch_rows

  @property
  def params(self):
    return self.runner.params[_MODEL]

  def complete(self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 0.0,
               top_p: float = 1.0, max_new_tokens: int = 128, seed: int = 0) -> list[list[str]]:
    """Per prompt, `num_samples` completions (decoded without special tokens, stripped)."""
    check_sampling_args(num_samples, temperature, top_p, max_new_tokens)
    if temperature > 0:
      sampling = {"method": "sample", "num_samples": num_samples, "temperature": temperature,
                  "top_p": top_p}
    else:
      sampling = {"method": "greedy"}
    try:
      generated = self.runner.generate(_MODEL, list(prompts), jax.random.PRNGKey(seed),
                                       max_new_tokens=max_new_tokens, **sampling)
    except inference.InputTooLongError as e:
      raise errors.ConfigError(
          f"prompt {e} tokens (teacher.max_input_length={self.max_input_length}): raise it or "
          "shorten the prompt, e.g. fewer few-shot exemplars") from None
    return [[g.text for g in samples] for samples in generated]
