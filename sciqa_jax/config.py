"""The one config schema shared by generate.py, train.py and evaluate.py.

Config files in `configs/` start from `base_config()` and override fields; scripts load them with
`ml_collections.config_flags` so any field can be overridden from the command line
(`--config.train.steps=500`). The returned ConfigDict is locked: a misspelt key, in a file or on
the command line, fails with an error naming the key instead of being silently ignored.

`check(config)` rejects values that cannot be right (a negative count, a probability above 1, an
unknown backend), naming the key: the entry points call it first, so a typo fails in a second
instead of after a teacher run, or as a silently wrong run (data.max_examples=-1 would have
dropped the last example of every split).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_collections

from sciqa_jax import errors


def _int_or_auto(value: int | str) -> ml_collections.FieldReference:
  # A field that takes both an int and the string "auto" (a plain ConfigDict field keeps the type
  # of its default); on the command line `=auto` and `=384` both parse.
  return ml_collections.FieldReference(value, field_type=object)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---- the task and where its examples come from (sciqa_jax.data) -------------------------
  c.task = "science_demo"  # a name in sciqa_jax.data.registry
  c.data = ml_collections.ConfigDict()
  c.data.source = "builtin"  # builtin | hf | tfds | local
  c.data.path = ""  # local files (a file or dir) or an HF hub id / TFDS name overriding the task's
  c.data.train_split = "train"
  c.data.eval_split = "validation"  # model selection only ever uses this split
  c.data.skip_bad_records = False
  c.data.max_examples = 0  # 0 = all; >0 truncates every split (smoke tests)
  # N > 0: train on N training questions only, drawn by config.seed, with all their rationales
  # (Fine-tune-CoT's 8/32/128-shot ablations); nested: a seed's 8 questions are among its 32.
  # Evaluation splits are never subsampled (sciqa_jax.input_pipeline.subsample_questions).
  c.data.train_subsample = 0

  # ---- the teacher and the rationale cache (generate.py) ----------------------------------
  c.cache_dir = ""  # TFRecord rationale cache; train/evaluate read it
  c.teacher = ml_collections.ConfigDict()
  c.teacher.backend = "template"  # template | hf | jax (jax_t5: its old name) | http | import
  c.teacher.model = ""  # hub id or local dir (hf, jax), model name (http), JSONL path (import)
  # import backend: the layout of teacher.model, never guessed (sciqa_jax/teacher/adapters.py):
  # jsonl ({"id", "rationale", "answer"}), fine_tune_cot (its completion file), step_by_step
  # (distilling step-by-step's llm/ directory of <split>_CoT_<k>.json)
  c.teacher.import_format = "jsonl"
  c.teacher.base_url = ""  # http backend: e.g. http://127.0.0.1:8000/v1
  c.teacher.api_key_env = "OPENAI_API_KEY"  # http backend: env var holding the key
  c.teacher.chat = False  # http backend: /v1/chat/completions instead of /v1/completions
  c.teacher.prompt_style = "zero_shot_cot"  # zero_shot_cot | few_shot_cot | rationalize
  c.teacher.few_shot_path = ""  # few_shot_cot: JSONL exemplars; "" = the task's shipped ones
  c.teacher.num_samples = 1  # diverse reasoning: N rationales per question
  c.teacher.temperature = 0.0  # 0 = greedy (then num_samples must be 1)
  c.teacher.top_p = 1.0
  c.teacher.max_new_tokens = 128
  c.teacher.answer_max_new_tokens = 16
  c.teacher.batch_size = 8
  c.teacher.max_in_flight = 4  # http backend: concurrent requests
  c.teacher.max_retries = 6  # http backend: retries on 429/5xx/connection errors, then fail
  c.teacher.request_timeout_s = 300.0  # http backend: per-request socket timeout
  c.teacher.use_chat_template = True  # hf, jax backends: prompts in the tokenizer's chat template
  c.teacher.max_input_length = 1024  # jax backend: longest prompt in tokens (longer = error)
  # jax backend: weights replicated (data) or sharded: fsdp, or tensor (Megatron layout)
  c.teacher.parallelism = "data"
  # jax backend, several processes (a pod slice, or --num_processes): "replicas" = every
  # process runs its own teacher on its local devices and explains shards p, p+P, ...; "sharded"
  # = one teacher over every process's devices (with parallelism=fsdp or tensor: a model larger
  # than one host), all processes running each batch together (sciqa_jax/cache.py's docstring).
  c.teacher.multiprocess = "replicas"
  c.teacher.keep = "correct"  # correct | all
  c.teacher.error_rate = 0.0  # template teacher only: fraction of deliberately wrong rationales
  c.teacher.splits = ("train",)  # splits to explain
  c.teacher.shard_size = 256  # examples per TFRecord shard (the unit of resumption)
  # A split that ends with no kept rationale (no examples, every record bad, no imported id
  # matching, every rationale wrong) is an error unless this is True.
  c.teacher.allow_empty = False

  # ---- the students (sciqa_jax.models) -------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.init = "random"  # random | pretrained
  c.model.pretrained = ""  # hub id or dir, used when init == pretrained (e.g. google/flan-t5-small)
  c.model.tokenizer = "train"  # hub id or dir; "train" = SentencePiece trained on the cache's text
  c.model.tokenizer_vocab_size = 1000  # only for tokenizer == "train"
  # Architecture for init == random (ignored for pretrained, which brings its own config.json).
  c.model.d_model = 128
  c.model.d_kv = 32
  c.model.d_ff = 256
  c.model.num_layers = 2
  c.model.num_decoder_layers = 2
  c.model.num_heads = 4
  c.model.feed_forward_proj = "gated-gelu"
  c.model.tie_word_embeddings = False
  c.model.dropout_rate = 0.1
  c.model.dtype = "float32"  # compute dtype (bfloat16 on accelerators)
  c.model.param_dtype = "float32"

  # ---- the objective (sciqa_jax.objectives) -----------------------------------------------
  c.objective = ml_collections.ConfigDict()
  c.objective.name = "two_stage"  # two_stage | fine_tune_cot | step_by_step | answer_only
  c.objective.shared_student = False
  c.objective.step_by_step_alpha = 0.5
  c.objective.stage2_rationales = "teacher"  # teacher | student | mix
  # The answers the students learn to write: the dataset's (gold) or the teacher's own, as parsed
  # into the cache (teacher; distilling step-by-step's option, differs with teacher.keep=all).
  c.objective.answer_source = "gold"  # gold | teacher

  # ---- training (train.py) -----------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  # Steps of a student whose only job is answering (0 = train.steps): two_stage's answer student
  # (with two students; the rationale student still trains for train.steps, unchanged) and the
  # answer_only baseline, so the baseline can get the same budget. fine_tune_cot, step_by_step
  # and a shared two_stage student answer and explain with one model: train.steps.
  c.train.answer_steps = 0
  c.train.batch_size = 32  # global batch, split over hosts and devices
  # Token caps of training rows, per stream: an int, or "auto" for the length that holds 99% of
  # the stream's rows untruncated (sciqa_jax.input_pipeline). Longer rows lose tokens, a rationale
  # from its middle (sciqa_jax.tokenizer.tokenize).
  c.train.max_input_length = _int_or_auto(256)
  c.train.max_target_length = _int_or_auto(128)
  c.train.optimizer = "adafactor"  # adafactor | adamw
  c.train.learning_rate = 1e-3
  c.train.weight_decay = 0.0  # adamw only
  c.train.schedule = "constant"  # constant | linear | cosine | rsqrt
  c.train.warmup_steps = 0
  c.train.grad_clip_norm = 1.0  # 0 = off
  # Learning-rate multiplier of the relative-position bias tables; >1 for students trained from
  # scratch (see sciqa_jax/train_step.py), 1 for fine-tuning pretrained T5.
  c.train.position_bias_lr_scale = 1.0
  c.train.grad_accum_steps = 1
  c.train.label_smoothing = 0.0
  c.train.z_loss = 0.0
  c.train.parallelism = "data"  # data | fsdp
  c.train.log_every = 50
  c.train.eval_every = 0  # 0 = only at the end
  c.train.validate = True  # False: no validation (the final checkpoint is exported as "best")
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2  # latest N, plus the best by validation accuracy
  c.train.export_hf = True  # write the best student(s) as Hugging Face directories at the end

  # ---- evaluation (evaluate.py) ------------------------------------------------------------
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 32  # global; padded to a multiple of the device count
  c.eval.decoding = "greedy"  # greedy | sample | beam
  c.eval.num_beams = 4
  c.eval.temperature = 0.7
  c.eval.max_rationale_length = 128
  c.eval.self_consistency = 1  # k sampled rationales per question, majority vote
  c.eval.length_normalize = False  # rank classification by mean instead of summed log-prob
  c.eval.max_examples = 0  # 0 = whole split
  # Inputs are padded per batch to the smallest bucket (8, 12, 16, 24, 32, 48, ...) that fits the
  # longest one, so short questions do not pay for the cap; only inputs longer than the cap are
  # truncated.
  c.eval.max_input_length = 512
  c.eval.max_answer_length = 32  # tokens of an answer candidate / a generated open answer
  c.eval.top_k = 0  # sampling only: 0 = off
  c.eval.top_p = 1.0  # sampling only: nucleus mass

  c.lock()
  return c


# The values each string setting accepts. The modules that read them hold the same lists
# (tests/test_config.py checks that they agree); they are repeated here so that checking a config
# imports neither JAX nor a teacher backend.
CHOICES = {
    "data.source": ("builtin", "hf", "tfds", "local"),
    "teacher.backend": ("template", "hf", "jax", "jax_t5", "http", "import"),
    "teacher.import_format": ("jsonl", "fine_tune_cot", "step_by_step"),
    "teacher.prompt_style": ("zero_shot_cot", "few_shot_cot", "rationalize"),
    "teacher.parallelism": ("data", "fsdp", "tensor"),
    "teacher.multiprocess": ("replicas", "sharded"),
    "teacher.keep": ("correct", "all"),
    "model.init": ("random", "pretrained"),
    "model.feed_forward_proj": ("relu", "gelu", "gelu_new", "silu", "gated-relu", "gated-gelu",
                                "gated-gelu_new", "gated-silu"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.param_dtype": ("float32", "bfloat16", "float16"),
    "objective.name": ("two_stage", "fine_tune_cot", "step_by_step", "answer_only"),
    "objective.stage2_rationales": ("teacher", "student", "mix"),
    "objective.answer_source": ("gold", "teacher"),
    "train.optimizer": ("adafactor", "adamw"),
    "train.schedule": ("constant", "linear", "cosine", "rsqrt"),
    "train.parallelism": ("data", "fsdp"),
    "eval.decoding": ("greedy", "sample", "beam"),
}

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what is expected, in words)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_from(low: int) -> Rule:
  return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def _number(low: float, high: float = math.inf, *, above: bool = False,
            below: bool = False) -> Rule:
  """A finite number in the interval from `low` to `high`, excluding the ends flagged."""
  def ok(v):
    return (_is_number(v) and (v > low if above else v >= low)
            and (v < high if below else v <= high))
  if high == math.inf:
    return ok, f"a number {'>' if above else '>='} {low:g}"
  return ok, f"a number in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"


_LENGTH_OR_AUTO: Rule = (lambda v: v == "auto" or (_is_int(v) and v >= 1),
                         'an integer >= 1 or "auto"')
_PROBABILITY = _number(0, 1)

# Every numeric setting of base_config() and what it accepts.
RULES: dict[str, Rule] = {
    "seed": _int_from(0),
    "data.max_examples": _int_from(0),
    "data.train_subsample": _int_from(0),
    "teacher.num_samples": _int_from(1),
    "teacher.temperature": _number(0),
    "teacher.top_p": _number(0, 1, above=True),
    "teacher.max_new_tokens": _int_from(1),
    "teacher.answer_max_new_tokens": _int_from(1),
    "teacher.batch_size": _int_from(1),
    "teacher.max_in_flight": _int_from(1),
    "teacher.max_retries": _int_from(0),
    "teacher.request_timeout_s": _number(0, above=True),
    "teacher.max_input_length": _int_from(1),
    "teacher.error_rate": _PROBABILITY,
    "teacher.shard_size": _int_from(1),
    "model.tokenizer_vocab_size": _int_from(1),
    "model.d_model": _int_from(1),
    "model.d_kv": _int_from(1),
    "model.d_ff": _int_from(1),
    "model.num_layers": _int_from(1),
    "model.num_decoder_layers": _int_from(1),
    "model.num_heads": _int_from(1),
    "model.dropout_rate": _number(0, 1, below=True),
    "objective.step_by_step_alpha": _PROBABILITY,
    "train.steps": _int_from(1),
    "train.answer_steps": _int_from(0),
    "train.batch_size": _int_from(1),
    "train.max_input_length": _LENGTH_OR_AUTO,
    "train.max_target_length": _LENGTH_OR_AUTO,
    "train.learning_rate": _number(0),  # 0 freezes the students (e.g. to check an init)
    "train.weight_decay": _number(0),
    "train.warmup_steps": _int_from(0),
    "train.grad_clip_norm": _number(0),
    "train.position_bias_lr_scale": _number(0, above=True),
    "train.grad_accum_steps": _int_from(1),
    "train.label_smoothing": _number(0, 1, below=True),
    "train.z_loss": _number(0),
    "train.log_every": _int_from(1),
    "train.eval_every": _int_from(0),
    "train.checkpoint_every": _int_from(1),
    "train.keep_checkpoints": _int_from(1),
    "eval.batch_size": _int_from(1),
    "eval.num_beams": _int_from(1),
    "eval.temperature": _number(0),
    "eval.max_rationale_length": _int_from(1),
    "eval.self_consistency": _int_from(1),
    "eval.max_examples": _int_from(0),
    "eval.max_input_length": _int_from(1),
    "eval.max_answer_length": _int_from(1),
    "eval.top_k": _int_from(0),
    "eval.top_p": _number(0, 1, above=True),
}


def _get(config, key: str) -> Any:
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def check(config) -> None:
  """Raises errors.ConfigError naming the first setting of `config` that cannot be right: a
  value out of its range (RULES), not one of its choices (CHOICES), or inconsistent with another
  setting or the task."""
  for key, choices in CHOICES.items():
    value = _get(config, key)
    if value not in choices:
      raise errors.ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
  for key, (ok, expected) in RULES.items():
    value = _get(config, key)
    if not ok(value):
      raise errors.ConfigError(f"{key}={value!r} is out of range: expected {expected}")
  _check_data(config)
  _check_consistency(config)


def _check_data(config) -> None:
  from sciqa_jax.data import registry  # pylint: disable=g-import-not-at-top  (imports NumPy)

  task = registry.get_task(config.task)
  d = config.data
  if d.source not in task.sources:
    raise errors.ConfigError(f"task {task.name!r} cannot be loaded from data.source={d.source!r}; "
                             f"its sources are {', '.join(task.sources)}")
  if d.source == "local" and not d.path:
    raise errors.ConfigError("data.source='local' needs data.path: a file, a directory, or a "
                             "pattern with {split} such as data/ARC-Easy-{split}.jsonl")
  if d.train_split not in task.splits:
    raise errors.ConfigError(f"data.train_split={d.train_split!r} is not a split of task "
                             f"{task.name!r}; its splits are {', '.join(task.splits)}")
  if d.eval_split == d.train_split:
    raise errors.ConfigError(f"data.eval_split={d.eval_split!r} is the training split: model "
                             "selection needs held-out data (e.g. validation)")


def _check_consistency(config) -> None:
  t, e, train = config.teacher, config.eval, config.train
  if t.temperature == 0 and t.num_samples > 1 and t.backend not in ("template", "import"):
    raise errors.ConfigError(f"teacher.num_samples={t.num_samples} needs teacher.temperature > 0: "
                             "greedy decoding (temperature 0) gives one rationale")
  if e.temperature == 0 and (e.decoding == "sample" or e.self_consistency > 1):
    raise errors.ConfigError(f"eval.temperature=0 cannot sample (eval.decoding={e.decoding!r}, "
                             f"eval.self_consistency={e.self_consistency}): set it > 0, e.g. 0.7")
  if config.model.init == "pretrained" and not config.model.pretrained:
    raise errors.ConfigError("model.init='pretrained' needs model.pretrained: a hub id or a "
                             "directory (e.g. google/flan-t5-small)")
  updates = max(train.steps // train.grad_accum_steps, 1)
  if train.warmup_steps // train.grad_accum_steps >= updates:
    raise errors.ConfigError(f"train.warmup_steps={train.warmup_steps} leaves no step after warmup "
                             f"in train.steps={train.steps}: the learning rate would never leave "
                             "warmup")
