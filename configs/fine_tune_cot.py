"""Fine-tune-CoT (Ho, Schmid, Yun 2023) on any of its 12 tasks: the task is the config's argument.

  python generate.py --config configs/fine_tune_cot.py:multiarith \\
      --config.data.path=/path/to/reasoning-teacher     # teacher rationales -> the cache
  python train.py --config configs/fine_tune_cot.py:multiarith \\
      --config.data.path=/path/to/reasoning-teacher \\
      --workdir runs/fine_tune_cot/multiarith/flan_t5_small
  python evaluate.py --config configs/fine_tune_cot.py:multiarith \\
      --config.data.path=/path/to/reasoning-teacher \\
      --checkpoint runs/fine_tune_cot/multiarith/flan_t5_small --split test
  python -m sciqa_jax.comparison --results_dir runs/fine_tune_cot   # tasks x methods table

Tasks: single_eq, addsub, multiarith, gsm8k, aqua, svamp, date_understanding,
tracking_shuffled_objects, coin_flip, last_letter_concatenation, commonsense_qa, strategy_qa
(`configs/fine_tune_cot.py` alone: multiarith). Data: Fine-tune-CoT's own files and split
(`data.source=local`, `data.path` = a checkout of Fine-tune-CoT's repository, reasoning-teacher;
`DATA_ROOT` by default), except coin flip and last-letter concatenation, generated offline
(`builtin`; `--config.data.source=local` reads the paper's files for them too).

Fine-tune-CoT's settings:
  * Teacher: zero-shot-CoT prompts ("Let's think step by step", then an answer trigger fitting
    the task's answer type) to an OpenAI-compatible completion API; the paper's text-davinci-002
    is retired, `gpt-3.5-turbo-instruct` is its successor (key from $OPENAI_API_KEY). Any other
    teacher by override, e.g. a vLLM server: `--config.teacher.base_url=http://127.0.0.1:8000/v1
    --config.teacher.model=<served name>`, or `--config.teacher.backend=hf`.
  * Diverse reasoning: 8 samples per question at temperature 0.7, the correct and distinct
    ones kept, each one training row `question -> rationale --> answer`.
  * Student: Flan-T5-small, its own tokenizer; larger students by override alone:
    `--config.model.pretrained=google/flan-t5-xl` (add `--config.train.parallelism=fsdp` on
    several small accelerators).
  * The paper's train split (`train_full`, where the task has one) and its test split; no
    checkpoint selection on held-out data (the final checkpoint is exported and evaluated),
    as in the paper. Training budget: about 10 passes over the question x sample rows (fewer rows
    are kept, since wrong rationales are dropped), between 1000 and 20000 steps.
  * Few-shot ablations: `--config.data.train_subsample=8` (32, 128) trains on that many training
    questions drawn by `--config.seed`. Distilling step-by-step's teacher-answer option:
    `--config.objective.answer_source=teacher` (meaningful with `--config.teacher.keep=all`).
"""

import math

from sciqa_jax.config import base_config
from sciqa_jax.data import registry

DEFAULT_TASK = "multiarith"  # the paper's headline arithmetic task
# Where Fine-tune-CoT's files are by default: a checkout of its repository in the working
# directory (github.com/itsnamgyu/reasoning-teacher: data/dataset/<key>.json and
# data/split/<key>__default.json; sciqa_jax/data/fine_tune_cot.py has the layout).
DATA_ROOT = "reasoning-teacher"
NUM_SAMPLES = 8
BATCH_SIZE = 64
EPOCHS = 10
MIN_STEPS, MAX_STEPS = 1000, 20000


def _train_questions(task) -> int:
  """Training questions of the task (Fine-tune-CoT's split sizes; 1000 for a generated task)."""
  sizes = getattr(registry, "FINE_TUNE_COT_SPLIT_SIZES", {})
  return sizes.get(task.name, (1000, 0))[0]


def _steps(task) -> int:
  rows = _train_questions(task) * NUM_SAMPLES
  return min(MAX_STEPS, max(MIN_STEPS, math.ceil(EPOCHS * rows / BATCH_SIZE / 100) * 100))


def get_config(task_name: str = DEFAULT_TASK):
  task = registry.get_task(task_name)  # an unknown task fails here, listing the registered ones
  c = base_config()
  c.task = task.name
  builtin = "builtin" in task.sources
  c.data.source = "builtin" if builtin else "local"
  c.data.path = "" if builtin else DATA_ROOT
  c.data.train_split = "train_full" if "train_full" in task.splits else "train"
  c.data.eval_split = "test"
  c.cache_dir = f"runs/fine_tune_cot/{task.name}/cache"

  c.teacher.backend = "http"
  c.teacher.base_url = "https://api.openai.com/v1"
  c.teacher.model = "gpt-3.5-turbo-instruct"
  c.teacher.prompt_style = "zero_shot_cot"
  c.teacher.num_samples = NUM_SAMPLES
  c.teacher.temperature = 0.7
  c.teacher.max_new_tokens = 128
  c.teacher.keep = "correct"
  c.teacher.splits = (c.data.train_split,)

  c.model.init = "pretrained"
  c.model.pretrained = "google/flan-t5-small"
  c.model.tokenizer = ""  # the pretrained student's own, so a larger student brings its own too
  c.model.dtype = "bfloat16"

  c.objective.name = "fine_tune_cot"

  c.train.steps = _steps(task)
  c.train.batch_size = BATCH_SIZE
  c.train.max_input_length = "auto"  # 99% of the rows whole (GSM8K and Date questions run long)
  c.train.max_target_length = "auto"
  c.train.optimizer = "adamw"
  c.train.learning_rate = 3e-4
  c.train.weight_decay = 0.01
  c.train.schedule = "linear"
  c.train.warmup_steps = c.train.steps // 20
  c.train.validate = False
  c.train.log_every = 50
  c.train.checkpoint_every = 1000

  c.eval.batch_size = 64
  c.eval.max_rationale_length = 128
  c.eval.max_answer_length = 16
  return c
