"""Tasks, examples and answer parsing: everything about the datasets, nothing about models.

`load_examples(config, split)` is the one entry point for data (`load_splits(config, names)` for
several, checked to be disjoint); see `registry` for the sources and `loaders` for the accepted
file layouts.
"""

from sciqa_jax.data.example import ANSWER_TYPES
from sciqa_jax.data.example import CHOICE
from sciqa_jax.data.example import NUMBER
from sciqa_jax.data.example import TEXT
from sciqa_jax.data.example import YES_NO
from sciqa_jax.data.example import Example
from sciqa_jax.data.loaders import BadRecordError
from sciqa_jax.data.loaders import LoadReport
from sciqa_jax.data.registry import FINE_TUNE_COT_SPLIT_SIZES
from sciqa_jax.data.registry import FINE_TUNE_COT_TASKS
from sciqa_jax.data.registry import SOURCES
from sciqa_jax.data.registry import TASK_ALIASES
from sciqa_jax.data.registry import Split
from sciqa_jax.data.registry import Task
from sciqa_jax.data.registry import canonical_task_name
from sciqa_jax.data.registry import get_task
from sciqa_jax.data.registry import list_tasks
from sciqa_jax.data.registry import load_examples
from sciqa_jax.data.registry import load_splits

__all__ = ["ANSWER_TYPES", "CHOICE", "NUMBER", "TEXT", "YES_NO", "Example", "BadRecordError",
           "LoadReport", "FINE_TUNE_COT_SPLIT_SIZES", "FINE_TUNE_COT_TASKS", "SOURCES",
           "TASK_ALIASES", "Split", "Task", "canonical_task_name", "get_task", "list_tasks",
           "load_examples", "load_splits"]
