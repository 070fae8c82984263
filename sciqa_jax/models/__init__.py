"""T5 students: the Flax module, Hugging Face checkpoint conversion, a run's students."""

from sciqa_jax.models.convert import check_params, load_pretrained, save_pretrained
from sciqa_jax.models.students import init_students
from sciqa_jax.models.t5 import T5, T5Config, init_params

__all__ = ["T5", "T5Config", "check_params", "init_params", "init_students", "load_pretrained",
           "save_pretrained"]
