"""Sci-CoT (Ma et al. 2023) on ARC-Easy: two Flan-T5-small students, rationale then answer.

  python generate.py --config configs/sci_cot_arc_easy_flan_t5_small.py   # teacher -> cache
  python train.py --config configs/sci_cot_arc_easy_flan_t5_small.py --workdir runs/sci_cot_easy
  python evaluate.py --config configs/sci_cot_arc_easy_flan_t5_small.py \
      --checkpoint runs/sci_cot_easy --split test

Data from the hub (allenai/ai2_arc, ARC-Easy); rationales from a hub teacher (Flan-T5-XL, zero-shot
CoT, greedy, only rationales whose answer is correct are kept). Students start from
google/flan-t5-small with its tokenizer. Optimisation follows the standard T5 fine-tuning recipe,
which is robust for Flan-T5: Adafactor (lr 1e-3, constant, 100 warmup steps), batch 64, 3000 steps
(~85 epochs of ARC-Easy's 2251 train questions), inputs up to 512 tokens (question + rationale),
rationales up to 128.
"""

from sciqa_jax.config import base_config


def get_config():
  c = base_config()
  c.task = "arc_easy"
  c.data.source = "hf"
  c.data.eval_split = "validation"
  c.cache_dir = "runs/sci_cot_arc_easy/cache"

  c.teacher.backend = "hf"
  c.teacher.model = "google/flan-t5-xl"
  c.teacher.prompt_style = "zero_shot_cot"
  c.teacher.num_samples = 1
  c.teacher.temperature = 0.0
  c.teacher.keep = "correct"
  c.teacher.max_new_tokens = 128

  c.model.init = "pretrained"
  c.model.pretrained = "google/flan-t5-small"
  c.model.tokenizer = "google/flan-t5-small"
  c.model.dropout_rate = 0.1
  c.model.dtype = "bfloat16"  # activations; params and optimizer stay float32
  c.model.param_dtype = "float32"

  c.objective.name = "two_stage"
  c.objective.shared_student = False
  c.objective.stage2_rationales = "teacher"

  c.train.steps = 3000
  c.train.batch_size = 64
  c.train.max_input_length = 512
  c.train.max_target_length = 128
  c.train.optimizer = "adafactor"
  c.train.learning_rate = 1e-3
  c.train.schedule = "constant"
  c.train.warmup_steps = 100
  c.train.grad_clip_norm = 1.0
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2

  c.eval.batch_size = 64
  c.eval.decoding = "greedy"
  c.eval.max_rationale_length = 128
  return c
