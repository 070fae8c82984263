"""The offline default: the whole pipeline on the built-in science task, on a laptop CPU.

Template teacher (diverse reasoning, with deliberate errors for the correctness filter to remove) ->
TFRecord cache -> tiny T5 students trained from scratch with a SentencePiece tokenizer trained on the
task's text -> pmapped two-stage evaluation. `make demo` runs it; `configs/demo.py:fast` is the
smaller variant the test suite runs end to end.
"""

from sciqa_jax.config import base_config


def get_config(variant: str = "full"):
  if variant not in ("full", "fast"):
    raise ValueError(f"configs/demo.py variant {variant!r}: expected 'full' or 'fast'")
  c = base_config()
  c.seed = 0
  c.task = "science_demo"
  c.data.source = "builtin"
  c.cache_dir = "runs/demo/cache"

  c.teacher.backend = "template"
  c.teacher.num_samples = 4  # diverse reasoning
  c.teacher.temperature = 0.7
  c.teacher.error_rate = 0.15  # wrong rationales the correctness filter must remove
  c.teacher.keep = "correct"
  c.teacher.splits = ("train",)

  c.model.init = "random"
  c.model.tokenizer = "train"
  c.model.tokenizer_vocab_size = 1000
  c.model.d_model = 128
  # Eight narrow heads rather than four wide ones (same FLOPs): a student from scratch spends heads
  # on positional jobs (the number beside each name, the conclusion at the end), and with 8 the
  # stage-1 student's rationales concluded the gold choice most often (docs/recipe_notes.md).
  c.model.d_kv = 16
  c.model.num_heads = 8
  c.model.d_ff = 256
  c.model.num_layers = 2
  c.model.num_decoder_layers = 2
  c.model.feed_forward_proj = "gated-gelu"
  c.model.dropout_rate = 0.0

  c.objective.name = "two_stage"

  c.train.steps = 800
  # Students whose only job is answering stop at 300 steps; the rationale student goes on to 800.
  # The two-stage answer student has learnt to read the rationale's conclusion by then (its stream
  # costs half of each joint step), and the answer-only baseline has plateaued
  # (docs/recipe_notes.md).
  c.train.answer_steps = 300
  c.train.batch_size = 32
  c.train.max_input_length = 192
  c.train.max_target_length = 72
  c.train.optimizer = "adamw"
  c.train.learning_rate = 2e-3
  # From scratch, the position-bias tables must grow fast or no student can point at a position
  # (the concluded choice at the end of a rationale, the number beside a name): train_step.py.
  c.train.position_bias_lr_scale = 30.0
  c.train.schedule = "cosine"
  c.train.warmup_steps = 50
  c.train.log_every = 100
  c.train.eval_every = 0
  c.train.checkpoint_every = 400

  c.eval.batch_size = 64
  c.eval.max_rationale_length = 72

  if variant == "fast":
    c.data.max_examples = 200
    c.teacher.num_samples = 2
    c.train.steps = 60
    c.train.answer_steps = 30
    c.train.warmup_steps = 10
    c.train.log_every = 20
    c.train.checkpoint_every = 30
    c.model.d_model = 64
    c.model.d_kv = 16
    c.model.num_heads = 4
    c.model.d_ff = 128
    c.model.num_layers = 1
    c.model.num_decoder_layers = 1
    c.model.tokenizer_vocab_size = 600
    c.eval.max_rationale_length = 48
  return c
