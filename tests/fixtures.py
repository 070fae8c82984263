"""Shared test helpers: tiny Hugging Face T5 checkpoints and tokenizers built offline in temp dirs.

`make_tiny_t5_dir` saves a random-init transformers `T5ForConditionalGeneration`:
  variant="v1.0"  ReLU FFN, head tied to the embedding, decoder output scaled by d_model**-0.5.
  variant="v1.1"  gated-GELU FFN and a *distinct* lm_head. transformers v5 ties the head whenever
                  the file has no separate `lm_head.weight`, even for `tie_word_embeddings=False`,
                  so the helper gives the head its own random tensor before saving.
The returned model is reloaded from the saved directory, so it is exactly what the files hold.
"""

from __future__ import annotations

import os

TINY_TEXTS = (
    "Question: Which state of matter has a fixed shape? Answer choices: (A) solid (B) gas",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Plants use sunlight, water and carbon dioxide to make sugar.",
    "The moon orbits the Earth and reflects light from the Sun.",
    "A magnet attracts iron nails but not pieces of wood.",
    "Because ice is frozen water, it melts when it gets warm. So the answer is (A).",
    "Sound travels faster through solids than through air.",
    "Heat flows from a warmer object to a cooler object.",
)

TINY_CONFIG = dict(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=20,
                   dropout_rate=0.0)


def make_tiny_tokenizer(tmp_dir, texts=TINY_TEXTS, vocab_size: int = 200):
  """Trains and saves a SentencePiece T5 tokenizer in `tmp_dir`; returns it."""
  from sciqa_jax.tokenizer import train_sentencepiece_tokenizer  # pylint: disable=g-import-not-at-top
  return train_sentencepiece_tokenizer(list(texts) * 4, str(tmp_dir), vocab_size=vocab_size)


def make_tiny_t5_dir(tmp_path, variant: str = "v1.1", seed: int = 0, tokenizer: bool = False,
                     eos_logit_scale: float = 1.0, **config_overrides):
  """Saves a random tiny HF T5 (`variant` v1.0 or v1.1) in `tmp_path`; returns (dir, torch model).

  With `tokenizer=True` a tiny trained tokenizer (len <= vocab_size) is saved alongside.
  `eos_logit_scale` (v1.1 only) scales the head's EOS row, so that a random model emits EOS at
  varied positions and decoding tests exercise early stopping.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  if variant not in ("v1.0", "v1.1"):
    raise ValueError(f"variant must be 'v1.0' or 'v1.1', got {variant!r}")
  tied = variant == "v1.0"
  kwargs = dict(TINY_CONFIG, feed_forward_proj="relu" if tied else "gated-gelu",
                tie_word_embeddings=tied, decoder_start_token_id=0, pad_token_id=0,
                eos_token_id=1)
  kwargs.update(config_overrides)
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**kwargs))
  if not tied:
    head = torch.randn(kwargs["vocab_size"], kwargs["d_model"])
    head[kwargs["eos_token_id"]] *= eos_logit_scale
    model.lm_head.weight = torch.nn.Parameter(head)
  elif eos_logit_scale != 1.0:
    raise ValueError("eos_logit_scale needs variant='v1.1' (v1.0's head is the input embedding).")
  out = str(tmp_path)
  os.makedirs(out, exist_ok=True)
  model.save_pretrained(out)
  if tokenizer:
    make_tiny_tokenizer(os.path.join(out, "_tokenizer")).save_pretrained(out)
  model = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
  return out, model


def science_corpus(seed: int = 0) -> list[str]:
  """The built-in task's text, as the demo's tokenizer sees it: formatted training questions,
  their answer candidates and template-teacher rationales (correct and deliberately wrong ones)."""
  from sciqa_jax.data import science
  from sciqa_jax.data.formatting import candidate_answers, format_question
  from sciqa_jax.teacher.template import TemplateTeacher

  examples = science.load_split("train", seed=seed)
  rationales = TemplateTeacher(error_rate=0.2, seed=seed).explain(examples, num_samples=2, seed=seed)
  texts = []
  for example, outputs in zip(examples, rationales):
    texts.append(format_question(example))
    texts.extend(candidate_answers(example))
    texts.extend(dict.fromkeys(output.rationale for output in outputs))
  return texts


# ---- tiny decoder-only LMs (Llama 3, Qwen2, Mistral, Gemma) ------------------------------------

DECODER_VOCAB, DECODER_EOS, DECODER_PAD, DECODER_BOS = 96, 1, 0, 2
_DECODER_COMMON = dict(vocab_size=DECODER_VOCAB, hidden_size=32, intermediate_size=48,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=128, pad_token_id=DECODER_PAD,
                       eos_token_id=DECODER_EOS, bos_token_id=DECODER_BOS)


def _transformers():
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers


# One tiny config per family, each exercising what sets it apart.
DECODER_FAMILIES = {
    # Llama 3: rope_theta 500000 and "llama3" frequency scaling whose original context (16) puts
    # the head's frequencies in all three bands; grouped-query attention; untied head.
    "llama3": lambda: _transformers().LlamaConfig(
        **_DECODER_COMMON, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    # Llama 2 style with every optional bias, multi-head attention, tied head.
    "llama2_bias": lambda: _transformers().LlamaConfig(
        **dict(_DECODER_COMMON, num_key_value_heads=4), attention_bias=True, mlp_bias=True,
        tie_word_embeddings=True),
    # Qwen2: q/k/v biases, tied head (as the small Qwen2.5 checkpoints).
    "qwen2": lambda: _transformers().Qwen2Config(**_DECODER_COMMON, tie_word_embeddings=True),
    # Qwen2 with its sliding window on the second layer only (`max_window_layers`).
    "qwen2_window": lambda: _transformers().Qwen2Config(
        **_DECODER_COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=1),
    # Mistral with a window shorter than the prompts, so the sliding window is exercised.
    "mistral": lambda: _transformers().MistralConfig(**_DECODER_COMMON, sliding_window=5),
    # Gemma: one kv head, head_dim != hidden / heads, GeGLU, (1 + w) norms, scaled embeddings.
    "gemma": lambda: _transformers().GemmaConfig(**dict(_DECODER_COMMON, num_key_value_heads=1),
                                                 head_dim=16),
}


def make_tiny_decoder_dir(path, family: str, *, seed: int = 0, eos_scale: float = 2.0,
                          dtype=None, max_shard_size=None, tokenizer: str | None = None,
                          generation_eos=None):
  """Saves a random tiny HF causal LM of `family` at `path`; returns (dir, torch model).

  Weights are redrawn with std 0.3 (norm weights around their neutral value) so every component
  moves the logits visibly; the head's EOS row is scaled by `eos_scale` so that greedy rows end
  at different steps. `tokenizer` ("llama" or "qwen", `make_tiny_lm_tokenizer`) saves a tokenizer
  alongside; `generation_eos` (ids) is written as generation_config.json's eos_token_id.
  """
  import torch  # pylint: disable=g-import-not-at-top
  transformers = _transformers()
  config = DECODER_FAMILIES[family]()
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.normal_(0, 0.3)
      if name.endswith("norm.weight") and config.model_type != "gemma":
        p.add_(1.0)
    model.get_output_embeddings().weight[DECODER_EOS] *= eos_scale
  if generation_eos is not None:
    model.generation_config.eos_token_id = list(generation_eos)
  out = str(path)
  if dtype is not None:
    model = model.to(dtype)
  kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
  model.save_pretrained(out, **kwargs)
  if tokenizer is not None:
    make_tiny_lm_tokenizer(tokenizer).save_pretrained(out)
  return out, transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()


LM_CORPUS = (
    "Q: Which state of matter is ice? Answer choices: (A) solid (B) liquid (C) gas (D) plasma",
    "A: Let's think step by step. Ice is frozen water, so it is a solid.",
    "Therefore, among A through D, the answer is (A).",
    "Plants make food from sunlight, water and carbon dioxide.",
    "Sound travels faster through solids than through air.",
)
# Chat templates in the two shapes real ones come in: Llama 3's writes BOS itself, Qwen2's
# (ChatML-like) has no BOS at all.
LLAMA_CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|user|>{{ m['content'] }}"
                       "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
QWEN_CHAT_TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}</s>\n{% endfor %}"
                      "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_tiny_lm_tokenizer(style: str = "llama", vocab_size: int = DECODER_VOCAB):
  """A BPE tokenizer (<pad>=0, </s>=1 EOS, <s>=2 BOS, <unk>=3, chat markers 4-5) of at most
  `vocab_size` tokens, trained on `LM_CORPUS`, with a chat template.

  style="llama": BOS prepended to every text, no pad token (like Llama's tokenizers).
  style="qwen": no BOS, "<pad>" as pad token (like Qwen2's).
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  if style not in ("llama", "qwen"):
    raise ValueError(f"style must be 'llama' or 'qwen', got {style!r}")
  specials = ["<pad>", "</s>", "<s>", "<unk>", "<|user|>", "<|assistant|>"]
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
  tok.decoder = tokenizers.decoders.Metaspace()
  tok.train_from_iterator(list(LM_CORPUS) * 10, tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=specials))
  if style == "llama":
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", DECODER_BOS)])
  wrapped = _transformers().PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
      pad_token="<pad>" if style == "qwen" else None,
      additional_special_tokens=["<|user|>", "<|assistant|>"])
  wrapped.chat_template = LLAMA_CHAT_TEMPLATE if style == "llama" else QWEN_CHAT_TEMPLATE
  return wrapped
