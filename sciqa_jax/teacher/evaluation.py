"""The teacher as a baseline: its accuracy on a split, by the students' interval and rows.

Completion teachers are asked the prompt style's chain-of-thought prompts (`explain`, exactly
what generate.py asks, with the task's answer trigger), or, without chain of thought, an
answer-only baseline: few-shot (`prompts.FEW_SHOT`: the few_shot_cot exemplars without their
rationales) when the prompt style is few_shot_cot, else zero-shot (`prompts.ZERO_SHOT`). Example
teachers (template, imported) are judged by their concluded answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from sciqa_jax import errors
from sciqa_jax.data.example import Example
from sciqa_jax.statistics import EvalResult, majority_vote, result_from_predictions
from sciqa_jax.teacher import prompts
from sciqa_jax.teacher.explain import derive_seed, explain, is_example_teacher


def evaluated_style(teacher, teacher_config, chain_of_thought: bool = True) -> str:
  """The prompt style `evaluate_teacher` uses, for the results' labels: the backend's name for
  example teachers, the configured style with chain of thought, else the answer-only baseline
  (few_shot with few_shot_cot, zero_shot otherwise)."""
  if is_example_teacher(teacher):
    return teacher_config.backend
  if chain_of_thought:
    return teacher_config.prompt_style
  return prompts.FEW_SHOT if teacher_config.prompt_style == prompts.FEW_SHOT_COT else \
      prompts.ZERO_SHOT


def _answer_only_completions(teacher, examples: Sequence[Example], teacher_config, seed: int, *,
                             answer_type: str | None, exemplars: Sequence[prompts.Exemplar]
                             ) -> list[list[tuple[str, str]]]:
  """An answer-only baseline (module doc) -> answer texts.

  Zero-shot is `Q: {question}\\nA: {trigger}`, with zero_shot_cot's step-2 trigger for the
  task's answer type; few-shot is few_shot_cot's prompt with answer-only exemplars. Each differs
  from its chain-of-thought style only in the missing rationale.
  """
  t = teacher_config
  if exemplars:
    texts = [prompts.few_shot_prompt(ex, exemplars) for ex in examples]
  else:
    texts = [prompts.zero_shot_prompt(ex, answer_type) for ex in examples]
  completions = teacher.complete(
      texts, num_samples=t.num_samples, temperature=t.temperature, top_p=t.top_p,
      max_new_tokens=t.answer_max_new_tokens, seed=derive_seed(seed, "zero_shot"))
  return [[("", prompts.clean_answer(c)) for c in per_example] for per_example in completions]


def evaluate_teacher(teacher, examples: Sequence[Example], task, teacher_config, *, seed: int = 0,
                     progress: bool = True, chain_of_thought: bool = True,
                     max_examples: int = 0, split: str = "") -> EvalResult:
  """Accuracy of the teacher itself, by the same interval and prediction rows as the students.

  Args:
    teacher: a CompletionTeacher or ExampleTeacher (`sciqa_jax.teacher.make_teacher`).
    examples: the split.
    task: its `Task` (answer parser and matching).
    teacher_config: the `teacher` config section: prompt style, samples, temperature, lengths.
    seed: sampling seed.
    progress: show a tqdm bar (examples/s).
    chain_of_thought: completion teachers only: the configured prompt style's two-step prompts
      (zero-shot-CoT by default; exactly what generate.py asks), or, if False, the answer-only
      baseline (`evaluated_style`). Example teachers (template, imported) are always judged by
      their concluded answers.
    max_examples: keep only the first that many examples (0 = all).
    split: the split's name; needed by imports aligned with a split by position
      (teacher.import_format='step_by_step').

  With `teacher.num_samples > 1` the parsed answers are majority-voted (a repeated rationale
  votes with its first occurrence's answer); samples carry no likelihood, so a tie goes to the
  answer voted for first.
  """
  examples = list(examples)
  num_given = len(examples)
  if max_examples:
    examples = examples[:max_examples]
  if not examples:
    raise errors.DataError("no examples to evaluate: the split is empty (check data.source / "
                           "data.path and the split name)")
  exemplars = ()
  if teacher_config.prompt_style == prompts.FEW_SHOT_COT and not is_example_teacher(teacher):
    exemplars = prompts.load_task_exemplars(teacher_config.few_shot_path, task.name)
  _bind(teacher, split, examples, truncated=len(examples) < num_given)
  predictions = []
  bar = tqdm(total=len(examples), unit="ex", disable=not progress, desc=f"eval {teacher.name}",
             dynamic_ncols=True)
  chunk_size = max(1, teacher_config.batch_size)
  for b, start in enumerate(range(0, len(examples), chunk_size)):
    chunk = examples[start:start + chunk_size]
    chunk_seed = derive_seed(seed, "evaluate", b)
    if chain_of_thought or is_example_teacher(teacher):
      outputs = explain(teacher, chunk, teacher_config, seed=chunk_seed, exemplars=exemplars,
                        answer_type=task.answer_type)
    else:
      outputs = _answer_only_completions(teacher, chunk, teacher_config, chunk_seed,
                                         answer_type=task.answer_type, exemplars=exemplars)
    for ex, samples in zip(chunk, outputs):
      # explain() leaves repeated rationales unanswered: they vote like their first occurrence.
      first_answer: dict[str, str] = {}
      answer_texts = []
      for rationale, answer_text in samples:
        key = " ".join(rationale.split())
        if rationale and key in first_answer and not answer_text:
          answer_text = first_answer[key]
        first_answer.setdefault(key, answer_text)
        answer_texts.append(answer_text)
      parsed = [task.parse_answer(text, ex) if text else None for text in answer_texts]
      prediction = majority_vote(parsed, [0.0] * len(parsed))
      predictions.append({"id": ex.id, "question": ex.question,
                          "rationales": [r for r, _ in samples if r], "answer_texts": answer_texts,
                          "answers": parsed, "prediction": prediction, "gold": ex.answer,
                          "correct": task.is_correct(prediction, ex)})
    bar.update(len(chunk))
  bar.close()
  return result_from_predictions(predictions, len(examples))


def _bind(teacher, split: str, examples: Sequence[Example], *, truncated: bool) -> None:
  """Aligns an import bound to a split by position (step_by_step) with `examples`."""
  if not getattr(teacher, "requires_split", False):
    return
  if not split:
    raise errors.ConfigError(
        f"teacher {teacher.name!r} aligns its rationales with a split by position "
        "(teacher.import_format='step_by_step'): evaluate_teacher needs the split's name")
  teacher.bind(split, examples, truncated=truncated)
