"""The answer phase's rows when stage 2 learns from the stage-1 student's own rationales.

With `objective.stage2_rationales` "student" or "mix" (`sciqa_jax.phases`), the trained rationale
student writes one greedy rationale per training question, and the answer student trains on
`question + student rationale -> answer`: the rationales it will read at test time. The
rationales are written once to `<workdir>/stage2_rationales.jsonl` (atomically, by process 0) and
reused by a resumed run, so a restart in the answer phase trains on exactly the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax

from sciqa_jax import inference
from sciqa_jax import reporting
from sciqa_jax.data.example import Example
from sciqa_jax.objectives import RATIONALE, Objective
from sciqa_jax.statistics import majority_vote

FILENAME = "stage2_rationales.jsonl"


def student_rationales(runner: inference.Runner, objective: Objective,
                       examples: Sequence[Example], max_new_tokens: int) -> list[str]:
  """Greedy rationales of the runner's rationale student for `examples`, in order."""
  generated = runner.generate(RATIONALE, [objective.rationale_input(e) for e in examples],
                              jax.random.key(0), max_new_tokens=max_new_tokens, method="greedy")
  return [samples[0].text for samples in generated]


def answer_phase_examples(teacher_pairs: Sequence[tuple[Example, str]]) -> list[Example]:
  """One example per training question, in first-seen order, holding the answer most of its
  rows hold: the gold one, or with `objective.answer_source="teacher"` the teacher's majority
  answer (its rationales may conclude different answers; the student's one rationale gets the
  answer the teacher gave most often, the first of them on a tie)."""
  groups: dict[str, list[Example]] = {}
  for example, _ in teacher_pairs:
    groups.setdefault(example.id, []).append(example)
  out = []
  for group in groups.values():
    answer = majority_vote([e.answer for e in group], [0.0] * len(group))
    out.append(next(e for e in group if e.answer == answer))
  return out


def answer_phase_pairs(config, workdir: str, runner: inference.Runner, objective: Objective,
                       teacher_pairs: Sequence[tuple[Example, str]], is_writer: bool
                       ) -> list[tuple[Example, str]]:
  """(example, rationale) rows of the answer phase: the student's rationales (and the
  teacher's too, for "mix"), one per distinct training question."""
  examples = answer_phase_examples(teacher_pairs)
  path = os.path.join(workdir, FILENAME)
  by_id = {row["id"]: row["rationale"] for row in reporting.read_jsonl(path)}
  if set(by_id) != {e.id for e in examples}:
    texts = student_rationales(runner, objective, examples, config.eval.max_rationale_length)
    by_id = {e.id: t for e, t in zip(examples, texts)}
    if is_writer:
      reporting.write_jsonl(path, ({"id": e.id, "rationale": by_id[e.id]} for e in examples))
  pairs = [(e, by_id[e.id]) for e in examples]
  if objective.stage2_rationales == "mix":
    pairs = list(teacher_pairs) + pairs
  return pairs
