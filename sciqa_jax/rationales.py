"""generate.py's library half: load the splits, ask the teacher, parse and filter, write the cache.

For each split in `teacher.splits`, examples are cut into fixed shards of `teacher.shard_size`
(the cache's unit of resumption, see sciqa_jax.cache). Per shard:

  1. the teacher explains every example `teacher.num_samples` times (diverse reasoning;
     `sciqa_jax.teacher.explain`);
     completion teachers get the prompts of `teacher.prompt_style` (sciqa_jax.teacher.prompts) in
     batches of `teacher.batch_size`, example teachers get the Examples;
  2. identical rationales of one example (after whitespace normalisation) are dropped as
     duplicates; completion teachers are asked for the answer (step 2, greedy) only for the
     remaining samples whose step-1 completion had no answer sentence;
  3. the task's parser turns each answer text into an answer; samples are counted as correct,
     wrong or unparseable, and kept if correct (`teacher.keep="correct"`, the Fine-tune-CoT /
     Sci-CoT filter) or always (`"all"`, records keep their `correct` flag).

Counts per split: `samples = correct + wrong + unparseable + duplicates`, and with keep="correct"
`kept = correct`. The teacher's seed for a shard is derived from (config.seed, split, shard), and
for a batch from that and the batch index, so a resumed run asks exactly the questions with
exactly the seeds an uninterrupted run would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import tqdm

from sciqa_jax import cache as cache_lib
from sciqa_jax.data.example import Example
from sciqa_jax.data.registry import Task, load_examples
from sciqa_jax.teacher import make_teacher
from sciqa_jax.teacher import prompts as prompts_lib
from sciqa_jax.teacher.explain import derive_seed, explain, first_occurrences, is_example_teacher

KEEP_MODES = ("correct", "all")
COUNT_KEYS = ("examples", "samples", "kept", "correct", "wrong", "unparseable", "duplicates",
              "examples_with_kept")
SUMMARY_COLUMNS = ("examples", "samples", "kept", "wrong", "unparseable", "duplicates",
                   "examples_with_kept")

# The settings that determine a cache's records; everything else (endpoints, concurrency,
# retries, which splits to run) may change between a run and its resumption.
PRODUCING_KEYS = (
    "seed", "task", "data.source", "data.path", "data.skip_bad_records", "data.max_examples",
    "teacher.backend", "teacher.model", "teacher.chat", "teacher.prompt_style",
    "teacher.few_shot_path", "teacher.num_samples", "teacher.temperature", "teacher.top_p",
    "teacher.max_new_tokens", "teacher.answer_max_new_tokens", "teacher.batch_size",
    "teacher.keep", "teacher.error_rate", "teacher.shard_size", "teacher.use_chat_template",
    "teacher.max_input_length")


def producing_config(config) -> dict[str, Any]:
  """{dotted key: value} of the settings that determine the records (PRODUCING_KEYS present)."""
  out = {}
  for key in PRODUCING_KEYS:
    node, present = config, True
    for part in key.split("."):
      if part not in node:
        present = False
        break
      node = node[part]
    if present:
      out[key] = node
  return out


def validate_config(config) -> None:
  """Fails early, naming the key, on teacher settings that cannot produce a cache."""
  t = config.teacher
  if t.prompt_style not in prompts_lib.PROMPT_STYLES:
    raise ValueError(f"teacher.prompt_style={t.prompt_style!r}; expected one of "
                     f"{prompts_lib.PROMPT_STYLES}")
  if t.keep not in KEEP_MODES:
    raise ValueError(f"teacher.keep={t.keep!r}; expected one of {KEEP_MODES}")
  if t.num_samples < 1:
    raise ValueError(f"teacher.num_samples={t.num_samples} must be >= 1")
  if t.temperature == 0 and t.num_samples > 1 and t.backend not in ("template", "import"):
    raise ValueError(f"teacher.num_samples={t.num_samples} needs sampling: set "
                     "teacher.temperature > 0 (greedy decoding gives one rationale)")
  if t.shard_size < 1 or t.batch_size < 1:
    raise ValueError(f"teacher.shard_size={t.shard_size} and teacher.batch_size={t.batch_size} "
                     "must be >= 1")
  if t.prompt_style == prompts_lib.FEW_SHOT_COT and not t.few_shot_path and \
      t.backend not in ("template", "import"):
    raise ValueError("teacher.prompt_style='few_shot_cot' needs teacher.few_shot_path = a JSONL "
                     "file of exemplars")
  if not config.cache_dir:
    raise ValueError("config.cache_dir is empty: set --config.cache_dir=<dir> for the cache")


def build_teacher(config):
  """The teacher of `config.teacher` (factory: sciqa_jax.teacher.make_teacher)."""
  return make_teacher(config.teacher, config.seed)


def filter_samples(task: Task, example: Example, outputs: Sequence[tuple[str, str]], *,
                   keep: str, teacher_name: str, prompt_style: str
                   ) -> tuple[list[cache_lib.RationaleRecord], dict[str, int]]:
  """Parses, de-duplicates and filters one example's samples (module doc 2-3)."""
  counts = dict.fromkeys(COUNT_KEYS, 0)
  counts["examples"], counts["samples"] = 1, len(outputs)
  records = []
  firsts = first_occurrences([rationale for rationale, _ in outputs])
  for sample_index, ((rationale, answer_text), first) in enumerate(zip(outputs, firsts)):
    if not first:
      counts["duplicates"] += 1
      continue
    rationale = " ".join(rationale.split())
    # An empty rationale teaches nothing, whatever its answer: count it as unparseable.
    parsed = task.parse_answer(answer_text, example) if rationale else None
    correct = task.is_correct(parsed, example)
    counts["correct" if correct else "unparseable" if parsed is None else "wrong"] += 1
    if rationale and (correct or keep == "all"):
      records.append(cache_lib.RationaleRecord(
          example=example, rationale=rationale, teacher_answer=parsed, correct=correct,
          sample_index=sample_index, teacher=teacher_name, prompt_style=prompt_style,
          teacher_answer_text=answer_text))
  counts["kept"] = len(records)
  counts["examples_with_kept"] = int(bool(records))
  return records, counts


def build_cache(config, *, teacher=None, process_index: int = 0,
                progress: bool = True) -> dict[str, dict[str, int]]:
  """Builds (or resumes) the rationale cache of `config`; returns the counts per split.

  Args:
    config: a full config (sciqa_jax.config.base_config schema).
    teacher: a teacher to use instead of building `config.teacher`'s (tests, notebooks).
    process_index: this process's index; only process 0 writes files, the others run the teacher
      (a multi-host teacher needs every process) and skip the same completed shards.
    progress: show a tqdm bar (examples/s, kept ratio) on process 0.
  """
  validate_config(config)
  teacher = build_teacher(config) if teacher is None else teacher
  t = config.teacher
  example_teacher = is_example_teacher(teacher)
  exemplars = ()
  if not example_teacher and t.prompt_style == prompts_lib.FEW_SHOT_COT:
    exemplars = prompts_lib.load_exemplars(t.few_shot_path)
  prompt_style = t.backend if example_teacher else t.prompt_style
  writer = cache_lib.CacheWriter(config.cache_dir, producing_config(config),
                                 read_only=process_index != 0)
  counts: dict[str, dict[str, int]] = {}
  for split in t.splits:
    loaded = load_examples(config, split)
    task, examples, report = loaded.task, loaded.examples, loaded.report
    num_shards = math.ceil(len(examples) / t.shard_size)
    done = writer.start_split(split, examples, num_shards, skipped_records=report.num_skipped)
    if done:
      logging.info("split %s: resuming, %d of %d shards already complete", split, len(done),
                   num_shards)
    bar = _progress_bar(split, examples, done, t.shard_size, enabled=progress and not process_index)
    for shard in range(num_shards):
      if shard in done:
        continue
      shard_examples = examples[shard * t.shard_size:(shard + 1) * t.shard_size]
      outputs = explain(teacher, shard_examples, t, seed=derive_seed(config.seed, split, shard),
                        exemplars=exemplars)
      if len(outputs) != len(shard_examples):
        raise RuntimeError(f"teacher {teacher.name!r} returned {len(outputs)} results for "
                           f"{len(shard_examples)} examples")
      records, shard_counts = [], []
      for example, per_example in zip(shard_examples, outputs):
        kept, example_counts = filter_samples(task, example, per_example, keep=t.keep,
                                              teacher_name=teacher.name, prompt_style=prompt_style)
        records.extend(kept)
        shard_counts.append(example_counts)
      writer.write_shard(split, shard, records, cache_lib.sum_counts(shard_counts))
      if bar is not None:
        split_counts = writer.manifest["counts"][split]
        bar.set_postfix(kept=f"{split_counts['kept'] / max(split_counts['samples'], 1):.1%}")
        bar.update(len(shard_examples))
    if bar is not None:
      bar.close()
    totals = writer.finish_split(split)
    counts[split] = {key: totals.get(key, 0) for key in COUNT_KEYS}
  return counts


def _progress_bar(split: str, examples: Sequence[Example], done: set[int], shard_size: int, *,
                  enabled: bool):
  if not enabled:
    return None
  already = sum(len(examples[k * shard_size:(k + 1) * shard_size]) for k in done)
  return tqdm.tqdm(total=len(examples), initial=already, unit="ex", desc=f"explaining {split}",
                   dynamic_ncols=True)


def format_summary(counts: dict[str, dict[str, int]]) -> str:
  """A Markdown table: one row per split, the SUMMARY_COLUMNS counts."""
  header = "| split | " + " | ".join(SUMMARY_COLUMNS) + " |"
  rule = "|---|" + "---:|" * len(SUMMARY_COLUMNS)
  rows = [f"| {split} | " + " | ".join(str(c.get(key, 0)) for key in SUMMARY_COLUMNS) + " |"
          for split, c in counts.items()]
  return "\n".join([header, rule, *rows])
