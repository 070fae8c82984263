"""Sci-CoT (Ma et al. 2023) on ARC-Challenge with two Flan-T5-base students.

  python generate.py --config configs/sci_cot_arc_challenge_flan_t5_base.py
  python train.py --config configs/sci_cot_arc_challenge_flan_t5_base.py --workdir runs/sci_cot_chal

ARC-Challenge (allenai/ai2_arc, 1119 train questions) from the hub; rationales from Flan-T5-XL
(zero-shot CoT, greedy, correct ones kept). Flan-T5-base students (248M params each) train with
Adafactor (lr 5e-4, smaller than for -small as the model is larger), batch 32, 4000 steps
(~115 epochs of the small train split), FSDP-ready (`--config.train.parallelism=fsdp` on many chips).
"""

from sciqa_jax.config import base_config


def get_config():
  c = base_config()
  c.task = "arc_challenge"
  c.data.source = "hf"
  c.data.eval_split = "validation"
  c.cache_dir = "runs/sci_cot_arc_challenge/cache"

  c.teacher.backend = "hf"
  c.teacher.model = "google/flan-t5-xl"
  c.teacher.prompt_style = "zero_shot_cot"
  c.teacher.num_samples = 1
  c.teacher.temperature = 0.0
  c.teacher.keep = "correct"
  c.teacher.max_new_tokens = 128

  c.model.init = "pretrained"
  c.model.pretrained = "google/flan-t5-base"
  c.model.tokenizer = "google/flan-t5-base"
  c.model.dropout_rate = 0.1
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"

  c.objective.name = "two_stage"
  c.objective.stage2_rationales = "teacher"

  c.train.steps = 4000
  c.train.batch_size = 32
  c.train.max_input_length = 512
  c.train.max_target_length = 128
  c.train.optimizer = "adafactor"
  c.train.learning_rate = 5e-4
  c.train.schedule = "constant"
  c.train.warmup_steps = 100
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500

  c.eval.batch_size = 32
  c.eval.max_rationale_length = 128
  return c
