"""Rationales produced elsewhere (another toolkit, a paid API run, human annotation), as a teacher.

`teacher.model` is the file (or directory) and `teacher.import_format` its layout, one of
`adapters.IMPORT_FORMATS` (jsonl, fine_tune_cot, step_by_step; `teacher/adapters.py` describes
each). The file decides how many samples an example has, in file order, and `num_samples` is not
used. Examples absent from the file get no rationale; entries of the file that match no question
of a split are reported by the pipeline (`unmatched_ids`), since a file keyed by other ids
(another dataset version, a prefix) would otherwise silently produce an empty cache.

How rows join examples: jsonl by `id`; fine_tune_cot by `<dataset_key>-<sample_index>`, the id of
a Fine-tune-CoT-layout example (a file without a dataset_key joins on the sample index alone);
step_by_step by position within the split, so the pipeline first `bind`s the split's examples
(and a split whose records were skipped or that is not the file's split, by count, is refused).

Multiple-choice answers may be written in the dataset's own labels: some ARC questions label their
choices 1-4, which the loaders normalise to A-D (`loaders.normalize_label`), so an imported answer
"2" (or "(2)", "the answer is 2.") for such a question means choice B. A bare digit is read as a
label, as the answer parser prefers a label to a choice's text, unless the question's own labels
are digits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from sciqa_jax import errors
from sciqa_jax.data import answers
from sciqa_jax.data import loaders
from sciqa_jax.data import registry
from sciqa_jax.data.example import Example
from sciqa_jax.teacher import adapters
from sciqa_jax.teacher.base import TeacherOutput

# A bare digit label, optionally parenthesised and followed by "." / ":" / ")".
_DIGIT_LABEL = re.compile(r"\s*\(?\s*([1-9])\s*\)?\s*[.:]?\s*")


def choice_answer(answer_text: str, example: Example) -> str:
  """`answer_text`, with an answer written as a digit label ("2") turned into the example's
  normalised label ("B"); other answers unchanged."""
  if not example.choices:
    return answer_text
  match = _DIGIT_LABEL.fullmatch(answers.after_answer_phrase(answer_text))
  if match is None or match.group(1) in example.labels:
    return answer_text
  label = loaders.normalize_label(match.group(1))
  return label if label in example.labels else answer_text


class ImportedRationales:
  """An ExampleTeacher that looks rationales up by example id (or, step_by_step, position)."""

  def __init__(self, path: str, import_format: str = adapters.JSONL):
    if import_format not in adapters.IMPORT_FORMATS:
      raise errors.ConfigError(f"unknown teacher.import_format={import_format!r}; choose one of "
                               f"{', '.join(adapters.IMPORT_FORMATS)}")
    self.path, self.import_format = path, import_format
    check_path(path, import_format)
    prefix = "import" if import_format == adapters.JSONL else f"import:{import_format}"
    self.name = f"{prefix}:{os.path.basename(os.path.normpath(path))}"
    self._outputs: dict[str, list[TeacherOutput]] = {}
    self._by_index = False  # fine_tune_cot without a dataset key: join on the sample index
    # step_by_step: split -> ids of its bound examples, and the positions past them.
    self._split_ids: dict[str, set[str]] = {}
    self._unbound: dict[str, list[str]] = {}
    if import_format == adapters.JSONL:
      self._outputs = adapters.read_jsonl(path)
    elif import_format == adapters.FINE_TUNE_COT:
      key, by_index = adapters.read_fine_tune_cot(path)
      key = _canonical_task(key) if key else ""
      self._by_index = not key
      self._outputs = {(f"{key}-{i}" if key else str(i)): outputs
                       for i, outputs in by_index.items()}
    self._used: set[str] = set()

  @property
  def requires_split(self) -> bool:
    """Whether `bind` must be called before `explain` (rows are aligned by position)."""
    return self.import_format == adapters.STEP_BY_STEP

  def bind(self, split: str, examples: Sequence[Example], *, truncated: bool = False,
           skipped: int = 0) -> None:
    """Step_by_step: pairs the split's completions with `examples` by position.

    Args:
      split: the split's name (train, validation, test).
      examples: the split's examples in published order.
      truncated: `examples` is a prefix of the split (data.max_examples): the files may hold
        more completions than examples.
      skipped: records the loader skipped (data.skip_bad_records); positions no longer align, so
        any is an error.

    The other layouts join by id and ignore this.
    """
    if not self.requires_split:
      return
    files = adapters.step_by_step_files(self.path, split)
    where = files[0] if len(files) == 1 else f"{os.path.dirname(files[0])} ({len(files)} files)"
    if skipped:
      raise errors.DataError(
          f"{where}: completions align with split {split!r} by position, but {skipped} of its "
          "records were skipped (data.skip_bad_records): fix the data instead")
    outputs = adapters.read_step_by_step(self.path, split)
    if len(outputs) < len(examples) or (len(outputs) > len(examples) and not truncated):
      raise errors.DataError(
          f"{where}: {len(outputs)} completions for the {len(examples)} examples of split "
          f"{split!r}; they align by position, so they must be of the same split file "
          "(check data.path and teacher.model)")
    for example, output in zip(examples, outputs):
      self._outputs[example.id] = [output]
    self._split_ids[split] = {example.id for example in examples}
    self._unbound[split] = [f"{split}#{i}" for i in range(len(examples), len(outputs))]

  def _key(self, example: Example) -> str:
    return example.id.rpartition("-")[2] if self._by_index else example.id

  @property
  def unused_ids(self) -> int:
    """Ids of the file not requested so far."""
    return len(set(self._outputs) - self._used)

  def unmatched_ids(self, examples: Sequence[Example]) -> list[str]:
    """The file's ids that match none of `examples`, in file order (step_by_step: positions past
    the examples of a truncated split, `<split>#<position>`)."""
    if self.requires_split:
      ids = {example.id for example in examples}
      return [entry for split, entries in self._unbound.items() if self._split_ids[split] & ids
              for entry in entries]
    keys = {self._key(example) for example in examples}
    return [key for key in self._outputs if key not in keys]

  def explain(self, examples: Sequence[Example], *, num_samples: int = 1, seed: int = 0
              ) -> list[list[TeacherOutput]]:
    del num_samples, seed  # the file fixes the rationales (module doc)
    if self.requires_split:
      bound = set().union(*self._split_ids.values())
      unbound = [example.id for example in examples if example.id not in bound]
      if unbound:
        raise errors.ConfigError(
            f"teacher.import_format={self.import_format!r} aligns completions with a split by "
            f"position: the split of {unbound[0]!r} was never bound (ImportedRationales.bind)")
    keys = [self._key(example) for example in examples]
    self._used.update(keys)
    return [[TeacherOutput(o.rationale, choice_answer(o.answer_text, example))
             for o in self._outputs.get(key, [])] for key, example in zip(keys, examples)]


def check_path(path: str, import_format: str = adapters.JSONL) -> None:
  """Raises errors.MissingFileError unless `teacher.model` exists as the format needs it: a file
  (jsonl, fine_tune_cot) or a directory (step_by_step)."""
  if import_format == adapters.STEP_BY_STEP:
    adapters.step_by_step_dir(path)
  elif not os.path.isfile(path):
    what = "JSONL file of rationales" if import_format == adapters.JSONL else \
        "Fine-tune-CoT completion file"
    raise errors.MissingFileError(f"teacher.model={path!r}: no such {what} (teacher.backend="
                                  f"'import', teacher.import_format={import_format!r})")


def _canonical_task(key: str) -> str:
  """A Fine-tune-CoT dataset key as the registry names the task (aliases resolved); a key of no
  registered task stays as it is, and then matches no example (reported as unmatched ids)."""
  try:
    return registry.canonical_task_name(key)
  except errors.ConfigError:
    return key
