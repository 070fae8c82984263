"""The one config schema shared by generate.py, train.py and evaluate.py.

Config files in `configs/` start from `base_config()` and override fields; scripts load them with
`ml_collections.config_flags` so any field can be overridden from the command line
(`--config.train.steps=500`). The returned ConfigDict is locked: a misspelt key, in a file or on
the command line, fails with an error naming the key instead of being silently ignored.
"""

from __future__ import annotations

import ml_collections


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

  # ---- the teacher and the rationale cache (generate.py) ----------------------------------
  c.cache_dir = ""  # TFRecord rationale cache; train/evaluate read it
  c.teacher = ml_collections.ConfigDict()
  c.teacher.backend = "template"  # template | hf | jax_t5 | http | import
  c.teacher.model = ""  # hub id or local dir (hf, jax_t5), model name (http), JSONL path (import)
  c.teacher.base_url = ""  # http backend: e.g. http://127.0.0.1:8000/v1
  c.teacher.api_key_env = "OPENAI_API_KEY"  # http backend: env var holding the key
  c.teacher.chat = False  # http backend: /v1/chat/completions instead of /v1/completions
  c.teacher.prompt_style = "zero_shot_cot"  # zero_shot_cot | few_shot_cot | rationalize
  c.teacher.few_shot_path = ""  # few_shot_cot: JSONL exemplars
  c.teacher.num_samples = 1  # diverse reasoning: N rationales per question
  c.teacher.temperature = 0.0  # 0 = greedy (then num_samples must be 1)
  c.teacher.top_p = 1.0
  c.teacher.max_new_tokens = 128
  c.teacher.answer_max_new_tokens = 16
  c.teacher.batch_size = 8
  c.teacher.max_in_flight = 4  # http backend: concurrent requests
  c.teacher.max_retries = 6  # http backend: retries on 429/5xx/connection errors, then fail
  c.teacher.request_timeout_s = 300.0  # http backend: per-request socket timeout
  c.teacher.use_chat_template = True  # hf backend: wrap prompts in the tokenizer's chat template
  c.teacher.max_input_length = 1024  # jax_t5 backend: longest prompt in tokens (longer = error)
  c.teacher.parallelism = "data"  # jax_t5 backend: weights replicated (data) or sharded (fsdp)
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

  # ---- training (train.py) -----------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  # Steps of a student whose only job is answering (0 = train.steps): two_stage's answer student
  # (with two students; the rationale student still trains for train.steps, unchanged) and the
  # answer_only baseline, so the baseline can get the same budget. fine_tune_cot, step_by_step
  # and a shared two_stage student answer and explain with one model: train.steps.
  c.train.answer_steps = 0
  c.train.batch_size = 32  # global batch, split over hosts and devices
  c.train.max_input_length = 256
  c.train.max_target_length = 128
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
