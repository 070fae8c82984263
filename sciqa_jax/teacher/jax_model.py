"""The JAX teacher: a Flax T5 (Flan-T5-XL/XXL) or a decoder-only LM (Llama 2/3, Qwen2/2.5,
Mistral, Gemma) from a Hugging Face checkpoint, on TPU/GPU VMs without torch.

`teacher.backend="jax"` (`"jax_t5"` is the same backend under its old name, kept for configs and
caches that say so). The checkpoint's config.json picks the model (`models.load_pretrained`), and
the inference layer runs it (`sciqa_jax.inference.Runner` on an `OnMesh` placement over a device
mesh: this host's devices by default, or every process's, `devices=jax.devices()`, for
generate.py's `teacher.multiprocess="sharded"`; then every process must make the same `complete`
calls):

- Weights sharded by rules (`teacher.parallelism`, `sharding.param_specs`):
    data    replicated on every device; the batch rows are split over the devices.
    fsdp    each large tensor split along its largest divisible dimension (training's rule),
            gathered layer by layer as the program runs; the batch split as in data.
    tensor  Megatron's layout: q/k/v/gate/up split on their output features, o/down on their
            input features, embedding and head on the vocabulary; every device runs the whole
            batch on its slice of every layer.
  The host copy is placed leaf by leaf, each device receiving only its block, so a model larger
  than one device's memory (or, over every process's devices, one host's) runs. A decoder-only
  checkpoint is read into host memory (`to_device=False`); a T5 onto the host's CPU device.
- Prompts: a decoder-only LM's get its tokenizer's special tokens (BOS), or, with
  `use_chat_template` and a tokenizer that has a template, become one user turn of it with the
  generation prompt (instruction-tuned models answer in their own format, as the hf backend does).
  Generation stops at any EOS id of generation_config.json, config.json and the tokenizer
  (`inference.lm_special_ids`: Llama 3 chat models end a turn with <|eot_id|>, not
  <|end_of_text|>). T5 prompts are plain text with the tokenizer's EOS.
- Fixed shapes. Every compiled call sees `rows` prompts (the batch size rounded up to a multiple
  of the mesh's "data" size) padded to the `decoding.padded_length` ladder (8, 12, 16, 24, 32,
  48, ... capped at `max_input_length`): at most two compiled lengths per doubling of the prompt
  length, and a prompt padded by less than a third.
- Samples do not depend on the mesh. A prompt's samples are a function of the call's seed, the
  prompt, its position in the call and the decode step only: the filler rows that round a batch up
  to the device count are appended after the real ones, and JAX's partitionable threefry (checked
  at construction) draws each row's random bits from its own position, not from the batch shape or
  its layout. So one, four or sixty-four devices, in one process or several, data, fsdp or tensor,
  write the same rationales (generate.py's caches equal a one-process run's).
- bf16 on accelerators: compute and parameters in bfloat16 (inference only, so fp32 master weights
  buy nothing and bf16 halves the memory an 8B or 11B model needs); norms, attention softmax and
  logits stay fp32 in the models. On CPU everything stays fp32.
- Prompts longer than `max_input_length` tokens are an error rather than silently truncated: a cut
  prompt loses either the question or the "Let's think step by step" cue.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from sciqa_jax import errors
from sciqa_jax import inference
from sciqa_jax import models
from sciqa_jax import sharding
from sciqa_jax import tokenizer as tokenizer_lib
from sciqa_jax.models import convert
from sciqa_jax.models import decoder_only
from sciqa_jax.teacher.base import check_sampling_args

PARALLELISMS = sharding.INFERENCE_PARALLELISMS
BACKEND_NAMES = ("jax", "jax_t5")  # the one backend, under its name and its old name
_MODEL = "teacher"


class JaxTeacher:
  """A Flax T5 or decoder-only checkpoint behind the CompletionTeacher protocol.

  Attributes:
    name: `<backend>:<model>` (e.g. `jax:meta-llama/Llama-3.2-1B-Instruct`), recorded in the cache
      as the teacher id.
    model: the `T5` or `CausalLM` module; `params` its weights on the mesh.
    use_chat_template: whether prompts are wrapped in the tokenizer's chat template.
    rows: prompts per compiled call (batch size rounded up to the mesh's "data" size).
  """

  def __init__(self, model: str, *, batch_size: int = 8, max_input_length: int = 1024,
               dtype: str | None = None, param_dtype: str | None = None,
               parallelism: str = "data", use_chat_template: bool = True,
               devices: Sequence[jax.Device] | None = None, backend: str = "jax"):
    """Loads the model, tokenizer and device mesh.

    Args:
      model: hub id or directory of a Hugging Face T5, Llama, Qwen2, Mistral or Gemma checkpoint
        (with its tokenizer).
      batch_size: prompts per compiled call before rounding up to the mesh's "data" size.
      max_input_length: the longest prompt, in tokens, that `complete` accepts.
      dtype: compute dtype; default bfloat16 on accelerators, float32 on CPU.
      param_dtype: parameter dtype; default the same as `dtype`.
      parallelism: "data" (weights replicated), "fsdp" or "tensor" (weights sharded; module doc).
      use_chat_template: wrap a decoder-only LM's prompts in its tokenizer's chat template when it
        has one (T5 prompts are never wrapped).
      devices: the mesh's devices; default this process's. Devices of several processes make one
        teacher of them all: every process then calls `complete` with the same arguments.
      backend: the name the teacher is recorded under ("jax", or the old "jax_t5").
    """
    _check_options(batch_size, max_input_length, parallelism, backend)
    _check_partitionable_rng()
    dtype = dtype or ("bfloat16" if jax.default_backend() != "cpu" else "float32")
    self.name = f"{backend}:{model}"
    model_dir = convert.resolve_model_dir(model)
    self.model, host_params = _load_to_host(model_dir, dtype, param_dtype or dtype)
    self.tokenizer = tokenizer_lib.load_tokenizer(model)
    self.max_input_length = max_input_length
    causal = isinstance(self.model, models.CausalLM)
    self.use_chat_template = bool(use_chat_template and causal and
                                  getattr(self.tokenizer, "chat_template", None))
    mesh = sharding.make_inference_mesh(parallelism, jax.local_devices() if devices is None
                                        else devices)
    params = sharding.place_params(host_params, mesh,
                                   sharding.param_specs(host_params, mesh, parallelism))
    del host_params
    special = {}
    if causal:
      eos, pad = inference.lm_special_ids(self.model, self.tokenizer,
                                          inference.read_generation_config(model_dir))
      special = {"chat_template": self.use_chat_template, "eos_token_ids": eos,
                 "pad_token_id": pad}
    self.runner = inference.Runner(self.model, {_MODEL: params}, self.tokenizer,
                                   placement=inference.OnMesh(mesh), batch_size=batch_size,
                                   max_input_length=max_input_length, overflow="error",
                                   special_tokens="tokenizer", **special)
    self.rows = self.runner.batch_rows

  @classmethod
  def from_config(cls, teacher_config, *, devices: Sequence[jax.Device] | None = None
                  ) -> "JaxTeacher":
    """The teacher of a `teacher` config section (as `teacher.base.make_teacher` builds it), on
    `devices` (default this process's)."""
    get = teacher_config.get
    backend = get("backend", "jax")
    return cls(teacher_config.model, batch_size=teacher_config.batch_size,
               max_input_length=get("max_input_length", 1024),
               parallelism=get("parallelism", "data"),
               use_chat_template=get("use_chat_template", True), devices=devices,
               backend=backend if backend in BACKEND_NAMES else "jax")

  @property
  def params(self):
    return self.runner.params[_MODEL]

  def format_prompts(self, prompts: Sequence[str]) -> list[str]:
    """The text the model reads: each prompt as one chat turn when the chat template is used."""
    return self.runner.format_prompts(prompts)

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
          f"teacher prompt too long: {e} (teacher.max_input_length={self.max_input_length}): "
          "raise it or shorten the prompt, e.g. fewer few-shot exemplars") from None
    return [[g.text for g in samples] for samples in generated]


JaxT5Teacher = JaxTeacher  # the old name (teacher.backend="jax_t5")


def _check_options(batch_size: int, max_input_length: int, parallelism: str,
                   backend: str) -> None:
  if batch_size < 1:
    raise errors.ConfigError(f"teacher.batch_size={batch_size} must be >= 1")
  if max_input_length < 1:
    raise errors.ConfigError(f"teacher.max_input_length={max_input_length} must be >= 1")
  if parallelism not in PARALLELISMS:
    raise errors.ConfigError(f"teacher.parallelism={parallelism!r}; expected one of "
                             f"{PARALLELISMS}")
  if backend not in BACKEND_NAMES:
    raise errors.ConfigError(f"teacher.backend={backend!r}; the JAX teacher is one of "
                             f"{BACKEND_NAMES}")


def _check_partitionable_rng() -> None:
  """Samples independent of the mesh need JAX's partitionable threefry (the default since 0.5)."""
  if not jax.config.jax_threefry_partitionable:
    raise errors.ConfigError(
        "jax_threefry_partitionable is off (JAX_THREEFRY_PARTITIONABLE=0?): the JAX teacher's "
        "samples would then depend on the device count; unset it")


def _load_to_host(model_dir: str, dtype: str, param_dtype: str):
  """(module, params in host memory): nothing lands whole on an accelerator before placement.

  A decoder-only checkpoint is read as numpy arrays; a T5 (whose loader always makes JAX arrays)
  onto this host's CPU device.
  """
  model_type = convert.read_hf_config(model_dir).get("model_type")
  if model_type in decoder_only.MODEL_TYPES:
    return models.load_pretrained(model_dir, dtype=dtype, param_dtype=param_dtype,
                                  to_device=False)
  try:
    host = jax.local_devices(backend="cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS leaves the CPU backend out: the default device it is
    return models.load_pretrained(model_dir, dtype=dtype, param_dtype=param_dtype)
  with jax.default_device(host):
    return models.load_pretrained(model_dir, dtype=dtype, param_dtype=param_dtype)
