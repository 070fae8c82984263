"""The models: T5 students, decoder-only LMs (teachers), Hugging Face checkpoint conversion."""

from sciqa_jax.models.convert import check_params, load_pretrained, save_pretrained
from sciqa_jax.models.decoder_only import CausalLM, DecoderConfig
from sciqa_jax.models.students import init_students
from sciqa_jax.models.t5 import T5, T5Config, init_params

__all__ = ["T5", "CausalLM", "DecoderConfig", "T5Config", "check_params", "init_params",
           "init_students", "load_pretrained", "save_pretrained"]
