"""Fine-tune-CoT with diverse reasoning (Ho et al. 2023) on ARC-Easy, Flan-T5-small student.

  python generate.py --config configs/fine_tune_cot_arc_easy.py
  python train.py --config configs/fine_tune_cot_arc_easy.py --workdir runs/ft_cot_easy

The teacher samples 8 zero-shot-CoT rationales per question at temperature 0.7 and keeps the correct,
distinct ones ("diverse reasoning"): each kept rationale is one training row
`question -> rationale --> answer`. The paper fine-tunes with AdamW at a small learning rate
(3e-4 here, linear decay, 5% warmup) and batch 64; 4000 steps cover the enlarged data set (up to
8x ARC-Easy's 2251 questions) about 10 times.
"""

from sciqa_jax.config import base_config


def get_config():
  c = base_config()
  c.task = "arc_easy"
  c.data.source = "hf"
  c.cache_dir = "runs/fine_tune_cot_arc_easy/cache"

  c.teacher.backend = "hf"
  c.teacher.model = "google/flan-t5-xl"
  c.teacher.prompt_style = "zero_shot_cot"
  c.teacher.num_samples = 8
  c.teacher.temperature = 0.7
  c.teacher.keep = "correct"
  c.teacher.max_new_tokens = 128

  c.model.init = "pretrained"
  c.model.pretrained = "google/flan-t5-small"
  c.model.tokenizer = "google/flan-t5-small"
  c.model.dtype = "bfloat16"

  c.objective.name = "fine_tune_cot"

  c.train.steps = 4000
  c.train.batch_size = 64
  c.train.max_input_length = 256
  c.train.max_target_length = 160  # rationale + " --> (B) answer"
  c.train.optimizer = "adamw"
  c.train.learning_rate = 3e-4
  c.train.weight_decay = 0.01
  c.train.schedule = "linear"
  c.train.warmup_steps = 200
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500

  c.eval.batch_size = 64
  c.eval.max_rationale_length = 160
  return c
