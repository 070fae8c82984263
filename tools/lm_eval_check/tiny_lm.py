"""A tiny random causal LM and a byte-level BPE tokenizer, both built offline and saved with
`save_pretrained`, so that lm-evaluation-harness and sciqa_jax load the very same files.

The tokenizer is Llama-like where it matters for log-likelihood scoring: it prepends BOS by
default (the harness's `tok_encode` keeps the tokenizer's default special tokens), and it is
byte-level BPE whose pre-tokeniser keeps a leading space on each word (" Paris" and "Paris" are
different tokens), so the context / continuation boundary rules are exercised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def make_tokenizer(texts: Sequence[str], out_dir: str, vocab_size: int = 600):
  """Trains a byte-level BPE tokenizer on `texts`, saves it in `out_dir`; returns it."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from tokenizers import (  # pylint: disable=g-import-not-at-top
      decoders, models, pre_tokenizers, processors, trainers)

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(list(texts), trainer)
  bos = tok.token_to_id(BOS)
  tok.post_processor = processors.TemplateProcessing(
      single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)])
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS,
                                              eos_token=EOS, pad_token=PAD)
  os.makedirs(out_dir, exist_ok=True)
  fast.save_pretrained(out_dir)
  return transformers.AutoTokenizer.from_pretrained(out_dir)


def make_llama(out_dir: str, tokenizer, *, seed: int = 0, vocab_size: int | None = None,
               hidden_size: int = 64, num_hidden_layers: int = 2, num_attention_heads: int = 4,
               num_key_value_heads: int = 2, intermediate_size: int = 128,
               max_position_embeddings: int = 1024):
  """Saves a random LlamaForCausalLM (float32) and `tokenizer` in `out_dir`; returns the dir.

  `vocab_size` defaults to the tokenizer's; a larger one pads the embedding like real models do.
  The output head is scaled up so that the random model's log-likelihoods are spread out and
  its predictions depend on the tokens (a near-uniform model would make every choice tie).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  config = transformers.LlamaConfig(
      vocab_size=vocab_size or len(tokenizer), hidden_size=hidden_size,
      num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
      num_key_value_heads=num_key_value_heads, intermediate_size=intermediate_size,
      max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
      tie_word_embeddings=False, torch_dtype="float32")
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(config)
  with torch.no_grad():
    model.lm_head.weight.mul_(8.0)
  os.makedirs(out_dir, exist_ok=True)
  model.save_pretrained(out_dir)
  tokenizer.save_pretrained(out_dir)
  return out_dir
