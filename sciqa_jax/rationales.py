"""generate.py's library half: load the splits, ask the teacher, parse and filter, write the cache.

For each split in `teacher.splits`, examples are cut into fixed shards of `teacher.shard_size`
(the cache's unit of resumption, see sciqa_jax.cache). Per shard:

  1. the teacher explains every example `teacher.num_samples` times (diverse reasoning);
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

import dataclasses
import hashlib
import logging
import math
from collections.abc import Sequence
from typing import Any

from sciqa_jax import cache as cache_lib
from sciqa_jax.data.example import Example
from sciqa_jax.data.registry import Task, get_task
from sciqa_jax.teacher import prompts as prompts_lib

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


def derive_seed(*parts: Any) -> int:
  """A 31-bit seed from any values (stable across processes and Python versions)."""
  digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


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
  """The teacher of `config.teacher` (factory: sciqa_jax.teacher.base.make_teacher)."""
  from sciqa_jax.teacher import base  # pylint: disable=g-import-not-at-top

  return base.make_teacher(config.teacher, config.seed)


def is_example_teacher(teacher) -> bool:
  return hasattr(teacher, "explain")


def first_occurrences(rationales: Sequence[str]) -> list[bool]:
  """Per sample, whether it is the first with its (whitespace-normalised) rationale."""
  seen, first = set(), []
  for rationale in rationales:
    key = " ".join(rationale.split())
    first.append(key not in seen)
    seen.add(key)
  return first


@dataclasses.dataclass
class _Sample:
  rationale: str
  answer_text: str | None  # None until step 2 answered it


def _complete_in_batches(teacher, prompts: list[str], *, batch_size: int, seed: int,
                         **options) -> list[list[str]]:
  out: list[list[str]] = []
  for b, start in enumerate(range(0, len(prompts), batch_size)):
    batch = prompts[start:start + batch_size]
    completions = teacher.complete(batch, seed=derive_seed(seed, b), **options)
    if len(completions) != len(batch):
      raise RuntimeError(f"teacher {teacher.name!r} returned {len(completions)} completion lists "
                         f"for {len(batch)} prompts")
    out.extend(completions)
  return out


def explain(teacher, examples: Sequence[Example], teacher_config, *, seed: int,
            exemplars: Sequence[prompts_lib.Exemplar] = ()) -> list[list[tuple[str, str]]]:
  """Per example, (rationale, answer text) for every sample the teacher wrote (module doc 1-2).

  Duplicate samples are returned too (with an empty answer text, never asked for): the caller
  counts them.
  """
  t = teacher_config
  if is_example_teacher(teacher):
    outputs = teacher.explain(list(examples), num_samples=t.num_samples, seed=seed)
    return [[(o.rationale, o.answer_text) for o in per_example] for per_example in outputs]
  style = t.prompt_style
  completions = _complete_in_batches(
      teacher, [prompts_lib.rationale_prompt(e, style, exemplars) for e in examples],
      batch_size=t.batch_size, seed=derive_seed(seed, "rationale"), num_samples=t.num_samples,
      temperature=t.temperature, top_p=t.top_p, max_new_tokens=t.max_new_tokens)
  samples = [[_Sample(*prompts_lib.split_completion(c)) for c in per_example]
             for per_example in completions]
  pending: list[tuple[_Sample, str]] = []
  for example, per_example in zip(examples, samples):
    firsts = first_occurrences([s.rationale for s in per_example])
    for sample, first in zip(per_example, firsts):
      if first and sample.answer_text is None and sample.rationale:
        pending.append((sample, prompts_lib.answer_prompt(example, sample.rationale, style,
                                                          exemplars)))
  if pending:
    answers = _complete_in_batches(
        teacher, [prompt for _, prompt in pending], batch_size=t.batch_size,
        seed=derive_seed(seed, "answer"), num_samples=1, temperature=0.0, top_p=1.0,
        max_new_tokens=t.answer_max_new_tokens)
    for (sample, _), answer in zip(pending, answers):
      sample.answer_text = prompts_lib.clean_answer(answer[0]) if answer else ""
  return [[(s.rationale, s.answer_text or "") for s in per_example] for per_example in samples]


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


def generate_rationales(config, *, teacher=None, process_index: int = 0,
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
  task = get_task(config.task)
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
    examples, report = task.load_with_report(
        split, source=config.data.source, path=config.data.path,
        skip_bad_records=config.data.skip_bad_records, max_examples=config.data.max_examples)
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
  import tqdm  # pylint: disable=g-import-not-at-top

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
