"""Asking a teacher to explain examples: the prompts of a prompt style, sampling, step 2.

Completion teachers get the prompts of `teacher.prompt_style` (`prompts`) in batches of
`teacher.batch_size`; example teachers (template, imported) get the Examples. Identical rationales
of one example (after whitespace normalisation) are duplicates: they are returned, but the teacher
is never asked step 2 (the answer) for them. Step 2 is asked (greedy) only for samples whose
step-1 completion had no answer sentence.

Used by the generation pipeline (`sciqa_jax.rationales`) and by teacher evaluation
(`sciqa_jax.teacher.evaluation`), so a teacher is judged on exactly what it writes into a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

from sciqa_jax.data.example import Example
from sciqa_jax.teacher import prompts as prompts_lib


def derive_seed(*parts: Any) -> int:
  """A 31-bit seed from any values (stable across processes and Python versions)."""
  digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


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
            exemplars: Sequence[prompts_lib.Exemplar] = (),
            answer_type: str | None = None) -> list[list[tuple[str, str]]]:
  """Per example, (rationale, answer text) for every sample the teacher wrote (module doc 1-2).

  Duplicate samples are returned too (with an empty answer text, never asked for): the caller
  counts them. `answer_type` (the task's) picks step 2's answer trigger
  (`prompts.answer_trigger`); None asks with the generic one.
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
                                                          exemplars, answer_type)))
  if pending:
    answers = _complete_in_batches(
        teacher, [prompt for _, prompt in pending], batch_size=t.batch_size,
        seed=derive_seed(seed, "answer"), num_samples=1, temperature=0.0, top_p=1.0,
        max_new_tokens=t.answer_max_new_tokens)
    for (sample, _), answer in zip(pending, answers):
      sample.answer_text = prompts_lib.clean_answer(answer[0]) if answer else ""
  return [[(s.rationale, s.answer_text or "") for s in per_example] for per_example in samples]
