"""Training phases: which steps train which streams of an objective, on which rows.

Training is a sequence of phases over one TrainState; a phase is a span of global steps, the
streams whose loss it trains, and the rows it reads. Each student has its own optimizer over the
steps of the phases that train it (`make_run_optimizer`, `train_step.make_students_optimizer`), so
a student that sits a phase out keeps its parameters and optimizer state exactly.

  Single-student objectives: one "joint" phase of `train.steps` (answer_only: of
  `train.answer_steps` when set, the budget of a student whose only job is answering).
  two_stage, `objective.stage2_rationales`:
  teacher  both streams on the teacher's rationales (Sci-CoT). With `train.answer_steps` A less
           than `train.steps` S: "joint" for steps 0..A, then "rationale" alone for A..S on the
           same batch sequence, so the rationale student trains exactly as in a joint run of S
           steps while the answer student (whose stream is learnt early and costs about half of
           each joint step) is an A-step run. (A > S: the answer stream goes on alone instead.)
  student  "rationale" (steps 0..S, teacher rows), then the trained rationale student writes one
           greedy rationale per train question (`sciqa_jax.stage2`) and "answer" (steps S..S+A)
           trains the answer student on `question + student rationale -> answer`, the
           rationales it will see at test time.
  mix      as student, but the answer phase trains on the teacher's and the student's rationales
           (both rows for every question).
  A shared student (`objective.shared_student`) explains and answers with one model: one "joint"
  phase of `train.steps`, teacher rationales only.

Phases on the same rows read one batch sequence: batch k of a row source is read at its k-th step
(`batch_index`), so a phase that continues another continues its batches, and a resumed run needs
only the global step to know its data position.
"""

from __future__ import annotations

import dataclasses
import logging

from sciqa_jax import train_step as train_step_lib
from sciqa_jax.objectives import ANSWER, ANSWER_ONLY, RATIONALE, TWO_STAGE, Objective, Stream

log = logging.getLogger(__name__)

# Where a phase's rows come from: the cache's (teacher) rationales, or the stage-1 student's.
TEACHER_ROWS = "teacher"
STUDENT_ROWS = "student"


@dataclasses.dataclass(frozen=True)
class Phase:
  """Steps `start .. end - 1` train `streams` on the rows of `rows` (see the module docstring)."""

  name: str  # "joint" | "rationale" | "answer"
  streams: tuple[Stream, ...]
  start: int
  end: int
  rows: str  # TEACHER_ROWS | STUDENT_ROWS

  @property
  def stream_names(self) -> list[str]:
    return [stream.name for stream in self.streams]


@dataclasses.dataclass(frozen=True)
class StreamsView:
  """The loss's view of an objective restricted to a phase's streams (`losses.objective_loss`
  reads only `.name` and `.streams`)."""

  name: str
  streams: tuple[Stream, ...]



def plan_phases(objective: Objective, steps: int, answer_steps: int = 0) -> list[Phase]:
  """The training phases of an objective (see the module docstring); `answer_steps` 0 = `steps`."""
  if steps < 1 or answer_steps < 0:
    raise ValueError(f"train.steps={steps} must be >= 1 and train.answer_steps={answer_steps} "
                     ">= 0")
  answer_steps = answer_steps or steps
  if objective.name == ANSWER_ONLY:
    return [Phase("joint", objective.streams, 0, answer_steps, TEACHER_ROWS)]
  if objective.name != TWO_STAGE:
    return [Phase("joint", objective.streams, 0, steps, TEACHER_ROWS)]
  if objective.shared_student:
    if objective.stage2_rationales != "teacher":
      raise ValueError(f"objective.stage2_rationales={objective.stage2_rationales!r} needs two "
                       "students; set objective.shared_student=False or stage2_rationales='teacher'")
    return [Phase("joint", objective.streams, 0, steps, TEACHER_ROWS)]
  by_name = {stream.name: stream for stream in objective.streams}
  rationale, answer = by_name[RATIONALE], by_name[ANSWER]
  if objective.stage2_rationales != "teacher":
    return [Phase(RATIONALE, (rationale,), 0, steps, TEACHER_ROWS),
            Phase(ANSWER, (answer,), steps, steps + answer_steps, STUDENT_ROWS)]
  both = min(steps, answer_steps)
  phases = [Phase("joint", (rationale, answer), 0, both, TEACHER_ROWS)]
  if steps > both:
    phases.append(Phase(RATIONALE, (rationale,), both, steps, TEACHER_ROWS))
  if answer_steps > both:
    phases.append(Phase(ANSWER, (answer,), both, answer_steps, TEACHER_ROWS))
  return phases


def student_spans(phases: list[Phase]) -> dict[str, tuple[int, int]]:
  """{student: (first step, end step)} of the phases that train it (contiguous by construction)."""
  spans: dict[str, tuple[int, int]] = {}
  for phase in phases:
    for stream in phase.streams:
      start, end = spans.get(stream.student, (phase.start, phase.end))
      spans[stream.student] = (min(start, phase.start), max(end, phase.end))
  return spans


def is_validation_step(step: int, phases: list[Phase], eval_every: int) -> bool:
  """At the end of the run, and every `eval_every` steps once every student has started training:
  validation scores the whole pipeline (stage 2 on student rationales starts after stage 1)."""
  if step == phases[-1].end:
    return True
  every_student_started = max(start for start, _ in student_spans(phases).values())
  return bool(eval_every) and step > every_student_started and step % eval_every == 0


def make_run_optimizer(train_config, phases: list[Phase]):
  """`make_optimizer` for one student; one optimizer per student over its span for several."""
  spans = student_spans(phases)
  accum = int(train_config.grad_accum_steps)
  for student, (start, end) in spans.items():
    if accum > 1 and (end - start) % accum:
      log.warning("student %r trains for %d steps, not a multiple of train.grad_accum_steps=%d: "
                  "the gradients of its last %d batch(es) are accumulated but never applied",
                  student, end - start, accum, (end - start) % accum)
  if len(spans) == 1:
    (steps,) = (end for start, end in spans.values())  # one student trains from step 0
    single = train_config.copy_and_resolve_references()
    single.steps = steps
    return train_step_lib.make_optimizer(single)
  return train_step_lib.make_students_optimizer(train_config, spans)


def batch_index(global_step: int, phase: Phase, phases: list[Phase]) -> int:
  """The index, in its row source's batch sequence, of the batch read at `global_step`."""
  first = min(p.start for p in phases if p.rows == phase.rows)
  return global_step - first


def rows_streams(rows: str, phases: list[Phase]) -> list[str]:
  """The streams any phase trains on the rows `rows`, in first-use order."""
  return list(dict.fromkeys(name for p in phases if p.rows == rows for name in p.stream_names))


def plan_table(phases: list[Phase]) -> list[list]:
  """[[name, start, end], ...]: what a checkpoint records to refuse a run with another plan."""
  return [[phase.name, phase.start, phase.end] for phase in phases]
