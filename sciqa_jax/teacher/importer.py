"""Rationales produced elsewhere (another toolkit, a paid API run, human annotation), as a teacher.

The file is JSONL, one rationale a line: `{"id": str, "rationale": str, optional "answer": str}`.
An id may appear on several lines (diverse reasoning done elsewhere): the file decides how many
samples an example has, in file order, and `num_samples` is not used. Without "answer", the
rationale's own answer sentence ("... Therefore, the answer is (B).") is split off and used as the
answer text, so imported chains of thought go through the same correctness filter as generated
ones. Ids absent from the file get no rationale; ids in the file that match no question of a split
are reported by the pipeline (`unmatched_ids`), since a file keyed by other ids (another dataset
version, a prefix) would otherwise silently produce an empty cache.

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
from sciqa_jax.data.example import Example
from sciqa_jax.teacher import prompts
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
  """An ExampleTeacher that looks rationales up by example id."""

  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise errors.MissingFileError(f"teacher.model={path!r}: no such JSONL file of rationales "
                                    "(teacher.backend='import')")
    self.name = f"import:{os.path.basename(path)}"
    self.path = path
    self._outputs: dict[str, list[TeacherOutput]] = {}
    try:
      rows = list(loaders.iter_local_rows(path))
    except errors.UserError:
      raise
    except (ValueError, OSError) as e:
      raise errors.ConfigError(f"teacher.model={path!r}: {e}") from None
    for location, row in rows:
      self._add(location, row)
    self._used: set[str] = set()

  def _add(self, location: str, row) -> None:
    if isinstance(row, loaders.BadRecord):
      raise errors.DataError(f"{location}: {row.reason} (the import file teacher.model)")
    example_id, rationale = row.get("id"), row.get("rationale")
    if example_id in (None, "") or not isinstance(rationale, str) or not rationale.strip():
      raise errors.DataError(f"{location}: an imported rationale needs a non-empty \"id\" and "
                             "\"rationale\" (the import file teacher.model)")
    answer = row.get("answer")
    if isinstance(answer, bool):
      answer = "yes" if answer else "no"
    if answer is None or str(answer).strip() == "":
      rationale, answer = prompts.split_completion(rationale)
      answer = answer or rationale  # no answer sentence: parse the rationale itself
    self._outputs.setdefault(str(example_id), []).append(
        TeacherOutput(rationale=" ".join(rationale.split()), answer_text=str(answer)))

  @property
  def unused_ids(self) -> int:
    """Ids of the file not requested so far."""
    return len(set(self._outputs) - self._used)

  def unmatched_ids(self, examples: Sequence[Example]) -> list[str]:
    """The file's ids that match none of `examples`, in file order."""
    ids = {example.id for example in examples}
    return [example_id for example_id in self._outputs if example_id not in ids]

  def explain(self, examples: Sequence[Example], *, num_samples: int = 1, seed: int = 0
              ) -> list[list[TeacherOutput]]:
    del num_samples, seed  # the file fixes the rationales (module doc)
    self._used.update(example.id for example in examples)
    return [[TeacherOutput(o.rationale, choice_answer(o.answer_text, example))
             for o in self._outputs.get(example.id, [])] for example in examples]
