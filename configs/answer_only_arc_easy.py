"""The answer-only fine-tuning baseline on ARC-Easy, Flan-T5-small: `question -> (B) answer`.

  python train.py --config configs/answer_only_arc_easy.py --workdir runs/answer_only_easy

No teacher and no cache are needed: with `cache_dir` empty the trainer reads the task's train split
directly. Same optimisation as the Sci-CoT small config (Adafactor, lr 1e-3, batch 64) with fewer
steps, as targets are a few tokens long; inputs carry no rationale, so 256 tokens suffice.
"""

from sciqa_jax.config import base_config


def get_config():
  c = base_config()
  c.task = "arc_easy"
  c.data.source = "hf"
  c.cache_dir = ""

  c.model.init = "pretrained"
  c.model.pretrained = "google/flan-t5-small"
  c.model.tokenizer = "google/flan-t5-small"
  c.model.dtype = "bfloat16"

  c.objective.name = "answer_only"

  c.train.steps = 2000
  c.train.batch_size = 64
  c.train.max_input_length = 256
  c.train.max_target_length = 32
  c.train.optimizer = "adafactor"
  c.train.learning_rate = 1e-3
  c.train.schedule = "constant"
  c.train.warmup_steps = 100
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500

  c.eval.batch_size = 64
  return c
