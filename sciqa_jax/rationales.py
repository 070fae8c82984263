"""generate.py's library half: load the splits, ask the teacher, parse and filter, write the cache.

For each split in `teacher.splits`, examples are cut into fixed shards of `teacher.shard_size`
(the cache's unit of resumption, see sciqa_jax.cache). Per shard:

  1. the teacher explains every example `teacher.num_samples` times (diverse reasoning;
     `sciqa_jax.teacher.explain`);
     completion teachers get the prompts of `teacher.prompt_style` (sciqa_jax.teacher.prompts) in
     batches of `teacher.batch_size`, example teachers get the Examples; step 2's answer trigger
     fits the task's answer type (`prompts.answer_trigger`), and few_shot_cot's exemplars are
     `teacher.few_shot_path`'s or, when it is empty, the ones shipped for the task;
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

Imported rationales (`teacher.backend="import"`, `teacher.import_format`: this project's JSONL,
Fine-tune-CoT's completion files, distilling step-by-step's llm/ files; `teacher/adapters.py`) go
through the same parser and filter as a live teacher's, so a published rationale whose answer is
wrong is dropped and one without a readable answer is counted unparseable. A step_by_step import
is aligned with each split by position: the split is bound to it before its first shard.

Coverage is reported, never lost silently: per split, the questions left without any kept
rationale (`examples_without_kept`) and, for the import teacher, the ids of its file that match no
question of the split (`unmatched_ids`, with the first few in `first_unmatched_ids`) are logged as
warnings and shown in the summary. A split that ends with no kept rationale at all (no examples,
every record bad, no imported id matching, every rationale wrong) is an `errors.DataError` naming
the split and the cause, and is not marked complete, unless `teacher.allow_empty`.

Everything that can be checked before work starts is: the config (`config.check`, then
`validate_config`), then every split's examples (`registry.load_splits`: loaded, and disjoint),
then the cache's producing settings, and only then is the teacher built and the first file
written, so a mistake leaves no stub cache directory behind.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import tqdm

from sciqa_jax import cache as cache_lib
from sciqa_jax import config as config_lib
from sciqa_jax import errors
from sciqa_jax.data import registry
from sciqa_jax.data.example import Example
from sciqa_jax.data.registry import Task
from sciqa_jax.teacher import BACKENDS, make_teacher
from sciqa_jax.teacher import importer
from sciqa_jax.teacher import prompts as prompts_lib
from sciqa_jax.teacher.explain import derive_seed, explain, first_occurrences, is_example_teacher

KEEP_MODES = ("correct", "all")
COUNT_KEYS = ("examples", "samples", "kept", "correct", "wrong", "unparseable", "duplicates",
              "examples_with_kept")
SUMMARY_COLUMNS = ("examples", "samples", "kept", "wrong", "unparseable", "duplicates",
                   "examples_with_kept", "examples_without_kept")
# Example teachers see no prompt: their records and manifest name the backend as the prompt style.
EXAMPLE_BACKENDS = ("template", "import")
FIRST_IDS = 5  # unmatched import ids quoted in warnings and the summary

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
  """{dotted key: value} of the settings that determine the records (PRODUCING_KEYS present).

  An example teacher (template, import) uses no prompt, so its teacher.prompt_style is recorded as
  the backend's name: the manifest says what produced the records, not an unused default.
  """
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
  if out.get("teacher.backend") in EXAMPLE_BACKENDS:
    out["teacher.prompt_style"] = out["teacher.backend"]
  t = config.teacher
  # Recorded only where they matter, so that caches written before these settings existed
  # (JSONL imports, explicit exemplar files) still resume.
  if t.backend == "import" and t.get("import_format", "jsonl") != "jsonl":
    out["teacher.import_format"] = t.import_format
  if t.backend not in EXAMPLE_BACKENDS and t.prompt_style == prompts_lib.FEW_SHOT_COT:
    out["teacher.few_shot_path"] = prompts_lib.exemplars_id(t.few_shot_path,
                                                            _task_name(config))
  return out


def _task_name(config) -> str:
  return registry.get_task(config.task).name


def validate_config(config) -> None:
  """Fails early, naming the key, on settings that cannot produce a cache (errors.ConfigError;
  a missing import or exemplar file is errors.MissingFileError, a malformed exemplar file
  errors.DataError). Reads no dataset, only the few-shot exemplars, and writes nothing."""
  t = config.teacher
  if not config.cache_dir:
    raise errors.ConfigError("config.cache_dir is empty: set --config.cache_dir=<dir> for the "
                             "cache")
  if t.backend not in BACKENDS:
    raise errors.ConfigError(f"unknown teacher.backend={t.backend!r}; choose one of "
                             f"{', '.join(BACKENDS)}")
  if t.backend == "import" and not t.model:
    raise errors.ConfigError("teacher.backend='import' needs teacher.model = the JSONL file of "
                             "rationales (or the file or directory of teacher.import_format)")
  if t.backend == "import":
    importer.check_path(t.model, t.get("import_format", "jsonl"))
  _validate_splits(config)
  if t.prompt_style not in prompts_lib.PROMPT_STYLES:
    raise errors.ConfigError(f"teacher.prompt_style={t.prompt_style!r}; expected one of "
                             f"{prompts_lib.PROMPT_STYLES}")
  if t.keep not in KEEP_MODES:
    raise errors.ConfigError(f"teacher.keep={t.keep!r}; expected one of {KEEP_MODES}")
  if t.num_samples < 1:
    raise errors.ConfigError(f"teacher.num_samples={t.num_samples} must be >= 1")
  if t.temperature == 0 and t.num_samples > 1 and t.backend not in EXAMPLE_BACKENDS:
    raise errors.ConfigError(f"teacher.num_samples={t.num_samples} needs sampling: set "
                             "teacher.temperature > 0 (greedy decoding gives one rationale)")
  if t.shard_size < 1 or t.batch_size < 1:
    raise errors.ConfigError(f"teacher.shard_size={t.shard_size} and teacher.batch_size="
                             f"{t.batch_size} must be >= 1")
  if t.prompt_style == prompts_lib.FEW_SHOT_COT and t.backend not in EXAMPLE_BACKENDS:
    prompts_lib.load_task_exemplars(t.few_shot_path, _task_name(config))  # given, or shipped


def _validate_splits(config) -> None:
  """teacher.splits: a non-empty tuple of distinct split names of the task.

  On the command line a tuple needs quotes around each name: an unquoted
  `--config.teacher.splits=train,validation` arrives as the one string "train,validation".
  """
  splits = config.teacher.splits
  how = "e.g. --config.teacher.splits='(\"train\", \"validation\")'"
  if isinstance(splits, str) or not isinstance(splits, (tuple, list)) or not splits or \
      not all(isinstance(split, str) and split for split in splits):
    raise errors.ConfigError(f"teacher.splits={splits!r}: expected a non-empty tuple of split "
                             f"names, {how}")
  try:
    task = registry.get_task(config.task)
  except errors.UserError:
    raise
  except ValueError as e:
    raise errors.ConfigError(f"task={config.task!r}: {e}") from None
  unknown = [split for split in splits if split not in task.splits]
  if unknown:
    raise errors.ConfigError(
        f"teacher.splits={tuple(splits)!r}: {', '.join(map(repr, unknown))} is not a split of "
        f"task {task.name!r} (its splits: {', '.join(task.splits)}); quote each name, {how}")
  if len(set(splits)) != len(splits):
    raise errors.ConfigError(f"teacher.splits={tuple(splits)!r} names a split twice")


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


def build_cache(config, *, teacher=None, processes=None,
                progress: bool = True) -> dict[str, dict[str, Any]]:
  """Builds (or resumes) the rationale cache of `config`; returns the counts per split.

  Args:
    config: a full config (sciqa_jax.config.base_config schema).
    teacher: a teacher to use instead of building `config.teacher`'s (tests, notebooks).
    processes: the job's processes (`sharding.ProcessGroup()`; default: this one alone). Every
      process calls build_cache; `teacher.multiprocess` says who explains which shard
      (sciqa_jax.cache's docstring): "replicas" each its own shards, "sharded" all of them
      together. Process 0 alone writes the manifest; every process returns the same counts.
    progress: show a tqdm bar (examples/s, kept samples, question coverage) on process 0.

  Returns:
    {split: COUNT_KEYS counts plus "examples_without_kept"; with the import teacher also
    "unmatched_ids" and "first_unmatched_ids" (module doc)}.

  Raises:
    errors.ConfigError, errors.MissingFileError: a setting or file is wrong (nothing written).
    errors.DataError: a split ended with no kept rationale and teacher.allow_empty is False.
    cache.CacheConfigMismatchError: config.cache_dir holds a cache made with other settings.
  """
  config_lib.check(config)
  validate_config(config)
  t = config.teacher
  allow_empty = bool(t.get("allow_empty", False))
  splits = registry.load_splits(config, t.splits)
  for loaded in splits.values():
    if not loaded.examples and not allow_empty:
      raise _empty_split_error(loaded.name, _no_examples_cause(config, loaded))
  processes = processes or cache_lib.SingleProcess()
  writer = cache_lib.CacheWriter(config.cache_dir, producing_config(config), processes=processes,
                                 mode=t.get("multiprocess", "replicas"))
  teacher = build_teacher(config) if teacher is None else teacher
  exemplars = ()
  if not is_example_teacher(teacher) and t.prompt_style == prompts_lib.FEW_SHOT_COT:
    exemplars = prompts_lib.load_task_exemplars(t.few_shot_path, _task_name(config))
  run = _Run(config, teacher, writer, exemplars, progress=progress and not processes.index)
  return {split: run.split(loaded, allow_empty=allow_empty) for split, loaded in splits.items()}


class _Run:
  """One build_cache call: the teacher and the writer shared by its splits."""

  def __init__(self, config, teacher, writer: cache_lib.CacheWriter, exemplars, *,
               progress: bool):
    self.config, self.teacher, self.writer = config, teacher, writer
    self.exemplars, self.progress = exemplars, progress
    t = config.teacher
    self.prompt_style = t.backend if is_example_teacher(teacher) else t.prompt_style

  def split(self, loaded: registry.Split, *, allow_empty: bool) -> dict[str, Any]:
    """Writes (or resumes) one split's shards and returns its counts (module doc)."""
    num_shards = math.ceil(len(loaded.examples) / self.config.teacher.shard_size)
    if hasattr(self.teacher, "bind"):  # an import aligned by position (step_by_step)
      self.teacher.bind(loaded.name, loaded.examples,
                        truncated=bool(self.config.data.max_examples),
                        skipped=loaded.report.num_skipped)
    done = self.writer.start_split(loaded.name, loaded.examples, num_shards,
                                   skipped_records=loaded.report.num_skipped)
    if done:
      logging.info("split %s: resuming, %d of %d shards already complete", loaded.name,
                   len(done), num_shards)
    # This process's shards, then every process's in the manifest (a barrier with several).
    self.writer.collect_split(loaded.name,
                              lambda: self._write_missing_shards(loaded, num_shards, done))
    counts = self._coverage(loaded)
    if not counts["kept"]:
      if not allow_empty:
        unmatched = counts.get("first_unmatched_ids")
        raise _empty_split_error(loaded.name, _no_kept_cause(self.config, loaded, counts,
                                                             unmatched))
      logging.warning("split %s: no kept rationale (teacher.allow_empty=True)", loaded.name)
    self.writer.finish_split(loaded.name)
    return counts

  def _write_missing_shards(self, loaded: registry.Split, num_shards: int,
                            done: set[int]) -> None:
    size, split, examples = self.config.teacher.shard_size, loaded.name, loaded.examples
    mine = {shard for shard in range(num_shards) if self.writer.owns(shard)}
    bar = _progress_bar(split, examples, set(range(num_shards)) - (mine - done), size,
                        enabled=self.progress)
    for shard in sorted(mine):
      if shard not in done:
        shard_examples = examples[shard * size:(shard + 1) * size]
        self._write_shard(loaded.task, split, shard, shard_examples)
        if bar is not None:
          bar.set_postfix_str(_progress_text(self.writer.manifest["counts"][split]))
          bar.update(len(shard_examples))
    if bar is not None:
      bar.close()

  def _coverage(self, loaded: registry.Split) -> dict[str, Any]:
    """The split's counts with its coverage, logged as warnings where incomplete."""
    counts = coverage_counts(self.writer.manifest["counts"][loaded.name])
    if hasattr(self.teacher, "unmatched_ids"):  # the import teacher
      unmatched = self.teacher.unmatched_ids(loaded.examples)
      counts["unmatched_ids"] = len(unmatched)
      counts["first_unmatched_ids"] = unmatched[:FIRST_IDS]
    _warn_coverage(loaded.name, counts)
    return counts

  def _write_shard(self, task: Task, split: str, shard: int,
                   shard_examples: Sequence[Example]) -> None:
    t, teacher = self.config.teacher, self.teacher
    outputs = explain(teacher, shard_examples, t, seed=derive_seed(self.config.seed, split, shard),
                      exemplars=self.exemplars, answer_type=task.answer_type)
    if len(outputs) != len(shard_examples):
      raise RuntimeError(f"teacher {teacher.name!r} returned {len(outputs)} results for "
                         f"{len(shard_examples)} examples")
    records, shard_counts = [], []
    for example, per_example in zip(shard_examples, outputs):
      kept, example_counts = filter_samples(task, example, per_example, keep=t.keep,
                                            teacher_name=teacher.name,
                                            prompt_style=self.prompt_style)
      records.extend(kept)
      shard_counts.append(example_counts)
    self.writer.write_shard(split, shard, records, cache_lib.sum_counts(shard_counts))


def coverage_counts(totals: Mapping[str, int]) -> dict[str, Any]:
  """COUNT_KEYS of a split's summed shard counts, plus the questions left without a rationale."""
  counts: dict[str, Any] = {key: int(totals.get(key, 0)) for key in COUNT_KEYS}
  counts["examples_without_kept"] = counts["examples"] - counts["examples_with_kept"]
  return counts


def _progress_text(counts: Mapping[str, int]) -> str:
  """The bar's figures: question coverage first, because a kept share of samples can read 100%
  while many questions got no rationale at all (an import file covering half the split)."""
  examples, covered = counts.get("examples", 0), counts.get("examples_with_kept", 0)
  return (f"questions with a rationale {covered}/{examples} ({covered / max(examples, 1):.1%}), "
          f"kept samples {counts.get('kept', 0)}/{counts.get('samples', 0)}")


def _warn_coverage(split: str, counts: Mapping[str, Any]) -> None:
  if counts["examples_without_kept"]:
    logging.warning("split %s: %d of %d questions have no kept rationale (samples: %d wrong, %d "
                    "unparseable)", split, counts["examples_without_kept"], counts["examples"],
                    counts["wrong"], counts["unparseable"])
  if counts.get("unmatched_ids"):
    logging.warning("split %s: %d ids of the import file match no question of the split "
                    "(first: %s)", split, counts["unmatched_ids"],
                    ", ".join(counts["first_unmatched_ids"]))


def _empty_split_error(split: str, cause: str) -> errors.DataError:
  return errors.DataError(f"split {split!r} has no kept rationale: {cause}. Set "
                          "teacher.allow_empty=True to write it empty anyway")


def _no_examples_cause(config, loaded: registry.Split) -> str:
  report = loaded.report
  if report.num_skipped and report.num_skipped == report.num_records:
    return (f"all {report.num_skipped} of its records are bad and were skipped "
            "(data.skip_bad_records=True); fix the data (data.path) or see the skipped-record "
            "warning for why")
  return (f"it has no examples (task={config.task!r}, data.source={config.data.source!r}, "
          f"data.path={config.data.path!r})")


def _no_kept_cause(config, loaded: registry.Split, counts: Mapping[str, Any],
                   unmatched: Sequence[str] | None) -> str:
  """Why a split kept nothing; `unmatched`: the first unmatched import ids (None: no import)."""
  t = config.teacher
  if not counts["examples"]:
    return _no_examples_cause(config, loaded)
  if not counts["samples"]:
    if unmatched is not None:
      return (f"none of the ids in the import file teacher.model={t.model!r} matches one of its "
              f"{counts['examples']} questions ({counts['unmatched_ids']} file ids unmatched, "
              f"first: {', '.join(unmatched)}; the split's ids look like "
              f"{loaded.examples[0].id!r})")
    return f"the teacher returned no rationale for any of its {counts['examples']} questions"
  return (f"all {counts['samples']} samples were dropped ({counts['wrong']} wrong, "
          f"{counts['unparseable']} unparseable, {counts['duplicates']} duplicates; "
          f"teacher.keep={t.keep!r})")


def _progress_bar(split: str, examples: Sequence[Example], done: set[int], shard_size: int, *,
                  enabled: bool):
  if not enabled:
    return None
  already = sum(len(examples[k * shard_size:(k + 1) * shard_size]) for k in done)
  return tqdm.tqdm(total=len(examples), initial=already, unit="ex", desc=f"explaining {split}",
                   dynamic_ncols=True)


def format_summary(counts: Mapping[str, Mapping[str, Any]]) -> str:
  """A Markdown table, one row per split (SUMMARY_COLUMNS, plus unmatched_ids with the import
  teacher), then one line per split whose coverage is incomplete."""
  columns = SUMMARY_COLUMNS
  if any("unmatched_ids" in c for c in counts.values()):
    columns += ("unmatched_ids",)
  header = "| split | " + " | ".join(columns) + " |"
  rule = "|---|" + "---:|" * len(columns)
  rows = [f"| {split} | " + " | ".join(str(c.get(key, 0)) for key in columns) + " |"
          for split, c in counts.items()]
  notes = []
  for split, c in counts.items():
    if c.get("examples_without_kept"):
      notes.append(f"{split}: {c['examples_without_kept']} of {c['examples']} questions have no "
                   "kept rationale")
    if c.get("unmatched_ids"):
      notes.append(f"{split}: {c['unmatched_ids']} ids of the import file match no question "
                   f"(first: {', '.join(c['first_unmatched_ids'])})")
  return "\n".join([header, rule, *rows] + ([""] + notes if notes else []))
