"""Real data: explain ARC-Easy (from the Hugging Face hub) with Flan-T5-XL, 8 samples at T=0.7.

  python generate.py --config configs/generate_arc_easy.py --config.cache_dir=runs/arc_easy/cache

Needs network access to the hub and a GPU for a reasonable speed (the hf backend runs
transformers/PyTorch). Train on the result with the same config's task and cache_dir.
"""

from sciqa_jax.config import base_config


def get_config():
  config = base_config()
  config.task = "arc_easy"
  config.data.source = "hf"  # allenai/ai2_arc, configuration ARC-Easy
  config.cache_dir = "runs/arc_easy/cache"
  config.teacher.backend = "hf"
  config.teacher.model = "google/flan-t5-xl"
  config.teacher.prompt_style = "zero_shot_cot"
  config.teacher.num_samples = 8  # diverse reasoning
  config.teacher.temperature = 0.7
  config.teacher.max_new_tokens = 128
  config.teacher.batch_size = 16
  config.teacher.keep = "correct"
  config.teacher.splits = ("train",)
  config.teacher.shard_size = 256
  return config
