"""Teachers: the models (or stand-ins) that write the rationales students are distilled from.

Only the protocols and the factory are imported here; backends load lazily through
`make_teacher`, so `import sciqa_jax.teacher` never pulls in torch or a model.
"""

from sciqa_jax.teacher.base import BACKENDS
from sciqa_jax.teacher.base import CompletionTeacher
from sciqa_jax.teacher.base import ExampleTeacher
from sciqa_jax.teacher.base import TeacherOutput
from sciqa_jax.teacher.base import make_teacher

__all__ = ["BACKENDS", "CompletionTeacher", "ExampleTeacher", "TeacherOutput", "make_teacher"]
