"""Transformers (PyTorch) teacher: any causal or seq2seq LM from the hub or a local directory.

The model class follows the checkpoint's config: `is_encoder_decoder` selects
AutoModelForSeq2SeqLM (T5, Flan-T5, BART), anything else AutoModelForCausalLM (Llama, Mistral,
Qwen, GPT-2 ...). Design points:

- Causal models are batched with LEFT padding, so every prompt ends at the same position and the
  new tokens of the whole batch start at one column: the completion is `sequences[:, prompt_len:]`.
  Models without a pad token (most causal LMs) reuse their EOS token for padding; the attention
  mask keeps pads out of attention and generation derives position ids from it, so a prompt's
  greedy output does not depend on what it is batched with.
- Instruction-tuned models carry a chat template; prompts are wrapped as one user turn with the
  generation prompt appended when the tokenizer has a template (`use_chat_template`, default on).
  The template already writes BOS, so templated text is tokenised without special tokens.
- bf16 weights on a GPU that supports it (fp32 otherwise: T5 overflows in fp16). A model whose
  weights do not fit on one GPU is spread with `device_map="auto"` (needs `accelerate`).
- Sampling is seeded inside `torch.random.fork_rng`, so `complete(..., seed=s)` is reproducible and
  does not disturb the caller's global torch RNG state.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import transformers

from sciqa_jax import errors
from sciqa_jax.teacher.base import MissingDependencyError, check_sampling_args

# Fraction of GPU memory the weights may take before the model is spread over devices; the rest
# is left for activations and the KV cache of a batch.
_WEIGHT_MEMORY_FRACTION = 0.8


def _weights_bytes(model_cls, config, dtype: torch.dtype) -> int:
  """Size of the model's weights in `dtype`, counted on the meta device (allocates nothing)."""
  with torch.device("meta"):
    model = model_cls.from_config(config)
  return sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits // 8


class TransformersTeacher:
  """A transformers model behind the CompletionTeacher protocol.

  Attributes:
    name: `hf:<model>`, recorded in the cache as the teacher id.
    is_encoder_decoder: whether the model is seq2seq (else causal).
    use_chat_template: whether prompts are wrapped in the tokenizer's chat template.
  """

  def __init__(self, model: str, *, batch_size: int = 8, use_chat_template: bool = True,
               device: str | None = None, dtype: torch.dtype | None = None):
    """Loads the model and tokenizer.

    Args:
      model: hub id or local directory with config.json, weights and a tokenizer.
      batch_size: prompts per `generate` call; larger inputs to `complete` are chunked.
      use_chat_template: wrap prompts in the tokenizer's chat template when it has one.
      device: torch device; default `cuda` when available, else `cpu`.
      dtype: weight/compute dtype; default bf16 on a bf16-capable GPU, else fp32.
    """
    if batch_size < 1:
      raise errors.ConfigError(f"teacher.batch_size={batch_size} must be >= 1")
    self.name = f"hf:{model}"
    self.batch_size = batch_size
    try:
      config = transformers.AutoConfig.from_pretrained(model)
    except OSError as e:  # not a local dir with config.json, not a reachable hub id
      raise errors.MissingFileError(f"teacher.model={model!r}: cannot load its config ({e})"
                                    ) from e
    self.is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    model_cls = (transformers.AutoModelForSeq2SeqLM if self.is_encoder_decoder
                 else transformers.AutoModelForCausalLM)

    self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    if not self.is_encoder_decoder:
      self.tokenizer.padding_side = "left"
    if self.tokenizer.pad_token is None:
      if self.tokenizer.eos_token is None:
        raise errors.ConfigError(f"teacher.model={model!r}: its tokenizer has neither a pad nor an "
                                 "EOS token; add a pad_token to its tokenizer_config.json")
      self.tokenizer.pad_token = self.tokenizer.eos_token
    self.use_chat_template = bool(use_chat_template and self.tokenizer.chat_template)

    if device is None:
      device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = torch.device(device).type == "cuda"
    if dtype is None:
      dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32

    device_map = None
    if on_gpu:
      needed = _weights_bytes(model_cls, config, dtype)
      available = torch.cuda.get_device_properties(torch.device(device)).total_memory
      if needed > _WEIGHT_MEMORY_FRACTION * available:
        try:
          import accelerate  # noqa: F401  (device_map="auto" is implemented by accelerate)
        except ModuleNotFoundError as e:
          raise MissingDependencyError(
              f"{model!r} needs {needed / 2**30:.1f} GiB of weights but one GPU has "
              f"{available / 2**30:.1f} GiB; `pip install accelerate` so the model can be spread "
              "over the GPUs (device_map='auto')") from e
        device_map = "auto"
        logging.info("%s: %.1f GiB of weights, spreading over %d GPU(s) with device_map='auto'",
                     model, needed / 2**30, torch.cuda.device_count())

    self.model = model_cls.from_pretrained(model, dtype=dtype, device_map=device_map)
    if device_map is None:
      self.model.to(device)
    self.model.eval()
    # Inputs go where the first layer lives (with device_map="auto", accelerate moves them on).
    self.device = self.model.device

  def format_prompts(self, prompts: Sequence[str]) -> list[str]:
    """The text the model sees: each prompt as one chat turn when the chat template is used."""
    if not self.use_chat_template:
      return list(prompts)
    return [self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                               tokenize=False, add_generation_prompt=True)
            for prompt in prompts]

  def complete(self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 0.0,
               top_p: float = 1.0, max_new_tokens: int = 128, seed: int = 0) -> list[list[str]]:
    """Per prompt, `num_samples` completions (new text only, special tokens removed, stripped)."""
    check_sampling_args(num_samples, temperature, top_p, max_new_tokens)
    texts = self.format_prompts(prompts)
    options = dict(max_new_tokens=max_new_tokens, num_return_sequences=num_samples, num_beams=1,
                   pad_token_id=self.tokenizer.pad_token_id)
    if temperature > 0:
      # top_k=0 turns off transformers' default top-50 filter: only temperature and top_p apply,
      # like the other backends.
      options.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
      # Explicit Nones override sampling defaults some checkpoints ship in generation_config.json.
      options.update(do_sample=False, temperature=None, top_p=None, top_k=None)

    # Every GPU's generator: with device_map="auto" sampling may run on any of them.
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    results: list[list[str]] = []
    with torch.random.fork_rng(devices=cuda_devices), torch.inference_mode():
      torch.manual_seed(seed)
      for start in range(0, len(texts), self.batch_size):
        chunk = texts[start:start + self.batch_size]
        inputs = self.tokenizer(chunk, return_tensors="pt", padding=True,
                                add_special_tokens=not self.use_chat_template).to(self.device)
        sequences = self.model.generate(**inputs, **options)
        if not self.is_encoder_decoder:
          sequences = sequences[:, inputs["input_ids"].shape[1]:]
        decoded = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        # generate() returns each prompt's samples consecutively.
        for i in range(len(chunk)):
          results.append([text.strip() for text in decoded[i * num_samples:(i + 1) * num_samples]])
    return results
