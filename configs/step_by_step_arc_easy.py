"""Distilling step-by-step (Hsieh et al. 2023) on ARC-Easy, one Flan-T5-small student.

  python generate.py --config configs/step_by_step_arc_easy.py
  python train.py --config configs/step_by_step_arc_easy.py --workdir runs/sbs_easy

Multi-task training: `predict: question -> answer` (weight alpha = 0.5) and
`explain: question -> rationale` (weight 1 - alpha); at test time only `predict:` runs, so inference
costs the same as the answer-only baseline. Settings in the spirit of the paper's T5 runs (AdamW,
lr 5e-5, batch 64): linear decay over 5000 steps (~140 epochs of ARC-Easy).
"""

from sciqa_jax.config import base_config


def get_config():
  c = base_config()
  c.task = "arc_easy"
  c.data.source = "hf"
  c.cache_dir = "runs/step_by_step_arc_easy/cache"

  c.teacher.backend = "hf"
  c.teacher.model = "google/flan-t5-xl"
  c.teacher.prompt_style = "zero_shot_cot"
  c.teacher.num_samples = 1
  c.teacher.temperature = 0.0
  c.teacher.keep = "correct"

  c.model.init = "pretrained"
  c.model.pretrained = "google/flan-t5-small"
  c.model.tokenizer = "google/flan-t5-small"
  c.model.dtype = "bfloat16"

  c.objective.name = "step_by_step"
  c.objective.step_by_step_alpha = 0.5

  c.train.steps = 5000
  c.train.batch_size = 64
  c.train.max_input_length = 256
  c.train.max_target_length = 128
  c.train.optimizer = "adamw"
  c.train.learning_rate = 5e-5
  c.train.schedule = "linear"
  c.train.warmup_steps = 0
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500

  c.eval.batch_size = 64
  return c
