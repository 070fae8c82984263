"""The students of a run: one T5 architecture, one parameter set per student of the objective."""

from __future__ import annotations

import jax

from sciqa_jax import errors
from sciqa_jax.models.convert import load_pretrained
from sciqa_jax.models.t5 import T5, T5Config, init_params

# Embedding rows are rounded up to a multiple of this (lane-friendly shapes on TPUs and GPUs).
VOCAB_MULTIPLE = 128


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def random_init_config(model_config, tokenizer) -> T5Config:
  """The students' T5Config for random init: architecture from `config.model`, vocab from the
  tokenizer."""
  m = model_config
  return T5Config(vocab_size=round_up(len(tokenizer), VOCAB_MULTIPLE), d_model=m.d_model,
                  d_kv=m.d_kv, d_ff=m.d_ff, num_layers=m.num_layers,
                  num_decoder_layers=m.num_decoder_layers, num_heads=m.num_heads,
                  feed_forward_proj=m.feed_forward_proj,
                  tie_word_embeddings=m.tie_word_embeddings, dropout_rate=m.dropout_rate,
                  dtype=m.dtype, param_dtype=m.param_dtype,
                  eos_token_id=int(tokenizer.eos_token_id),
                  pad_token_id=int(tokenizer.pad_token_id or 0))


def init_students(config, tokenizer, students: tuple[str, ...]
                  ) -> tuple[T5, T5Config, dict[str, dict]]:
  """(model, model_config, {student: params}) from random init or `config.model.pretrained`.

  Params are made on one device and laid out by the caller's jit: `init_params` compiles once per
  architecture per process (several students, and several runs in one process, share it), which
  costs far less than tracing the initialiser inside the sharded state creation.
  """
  m = config.model
  if m.init == "random":
    model_config = random_init_config(m, tokenizer)
    keys = jax.random.split(jax.random.key(config.seed), len(students))
    params = {s: init_params(model_config, keys[i]) for i, s in enumerate(students)}
    return T5(model_config), model_config, params
  if m.init != "pretrained":
    raise errors.ConfigError(f"model.init={m.init!r}; expected 'random' or 'pretrained'")
  if not m.pretrained:
    raise errors.ConfigError(
        "model.init='pretrained' needs model.pretrained (a hub id or directory)")
  model, params = load_pretrained(m.pretrained, dtype=m.dtype, param_dtype=m.param_dtype)
  if not isinstance(model, T5):
    raise errors.ConfigError(
        f"model.pretrained={m.pretrained!r} is a {type(model).__name__} ({model.config.model_type}"
        "): students are T5 encoder-decoders; decoder-only models serve as teachers "
        "(teacher.model)")
  model_config = model.config.replace(dropout_rate=m.dropout_rate)
  if len(tokenizer) > model_config.vocab_size:
    raise errors.ConfigError(f"tokenizer {m.tokenizer!r} has {len(tokenizer)} tokens but "
                     f"{m.pretrained} only {model_config.vocab_size} embeddings")
  # The same arrays for every student: jit's outputs are distinct buffers per student.
  return T5(model_config), model_config, {s: params for s in students}
