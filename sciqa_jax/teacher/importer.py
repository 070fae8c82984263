"""Rationales produced elsewhere (another toolkit, a paid API run, human annotation), as a teacher.

The file is JSONL, one rationale a line: `{"id": str, "rationale": str, optional "answer": str}`.
An id may appear on several lines (diverse reasoning done elsewhere): the file decides how many
samples an example has, in file order, and `num_samples` is not used. Without "answer", the
rationale's own answer sentence ("... Therefore, the answer is (B).") is split off and used as the
answer text, so imported chains of thought go through the same correctness filter as generated
ones. Ids absent from the file get no rationale; ids in the file but not in the data are ignored
(and counted in `unused_ids`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sciqa_jax.data import loaders
from sciqa_jax.data.example import Example
from sciqa_jax.teacher import prompts
from sciqa_jax.teacher.base import TeacherOutput


class ImportedRationales:
  """An ExampleTeacher that looks rationales up by example id."""

  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"teacher.model={path!r}: no such JSONL file of rationales")
    self.name = f"import:{os.path.basename(path)}"
    self._outputs: dict[str, list[TeacherOutput]] = {}
    for location, row in loaders.iter_local_rows(path):
      if isinstance(row, loaders.BadRecord):
        raise ValueError(f"{location}: {row.reason}")
      example_id, rationale = row.get("id"), row.get("rationale")
      if example_id in (None, "") or not isinstance(rationale, str) or not rationale.strip():
        raise ValueError(f"{location}: an imported rationale needs a non-empty \"id\" and "
                         "\"rationale\"")
      answer = row.get("answer")
      if isinstance(answer, bool):
        answer = "yes" if answer else "no"
      if answer is None or str(answer).strip() == "":
        rationale, answer = prompts.split_completion(rationale)
        answer = answer or rationale  # no answer sentence: parse the rationale itself
      self._outputs.setdefault(str(example_id), []).append(
          TeacherOutput(rationale=" ".join(rationale.split()), answer_text=str(answer)))
    self._used: set[str] = set()

  @property
  def unused_ids(self) -> int:
    """Ids of the file not requested so far."""
    return len(set(self._outputs) - self._used)

  def explain(self, examples: Sequence[Example], *, num_samples: int = 1, seed: int = 0
              ) -> list[list[TeacherOutput]]:
    del num_samples, seed  # the file fixes the rationales (module doc)
    self._used.update(example.id for example in examples)
    return [list(self._outputs.get(example.id, [])) for example in examples]
