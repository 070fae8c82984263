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
