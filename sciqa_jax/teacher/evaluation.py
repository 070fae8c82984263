"""The teacher as a baseline: its accuracy on a split, by the students' interval and rows.

Completion teachers are asked the prompt style's chain-of-thought prompts (`explain`, exactly
what generate.py asks) or plain zero-shot answering; example teachers (template, imported) are
judged by their concluded answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from sciqa_jax import errors
from sciqa_jax.data.example import Example
from sciqa_jax.data.formatting import format_question
from sciqa_jax.statistics import EvalResult, majority_vote, result_from_predictions
from sciqa_jax.teacher import prompts
from sciqa_jax.teacher.explain import derive_seed, explain, is_example_teacher


def _zero_shot_completions(teacher, examples: Sequence[Example], teacher_config, seed: int
                           ) -> list[list[tuple[str, str]]]:
  """Zero-shot without reasoning: `Q: {question}\\nA: Therefore, the answer is` -> answer text.

  Built from the Zero-shot-CoT answer trigger of `teacher/prompts.py`, so the two teacher
  baselines differ only in the missing "Let's think step by step." rationale.
  """
  t = teacher_config
  completions = teacher.complete(
      [f"Q: {format_question(ex)}\nA: {prompts.ANSWER_TRIGGER}" for ex in examples],
      num_samples=t.num_samples, temperature=t.temperature, top_p=t.top_p,
      max_new_tokens=t.answer_max_new_tokens, seed=derive_seed(seed, "zero_shot"))
  return [[("", prompts.clean_answer(c)) for c in per_example] for per_example in completions]


def evaluate_teacher(teacher, examples: Sequence[Example], task, teacher_config, *, seed: int = 0,
                     progress: bool = True, chain_of_thought: bool = True,
                     max_examples: int = 0) -> EvalResult:
  """Accuracy of the teacher itself, by the same interval and prediction rows as the students.

  Args:
    teacher: a CompletionTeacher or ExampleTeacher (`sciqa_jax.teacher.make_teacher`).
    examples: the split.
    task: its `Task` (answer parser and matching).
    teacher_config: the `teacher` config section: prompt style, samples, temperature, lengths.
    seed: sampling seed.
    progress: show a tqdm bar (examples/s).
    chain_of_thought: completion teachers only: the configured prompt style's two-step prompts
      (zero-shot-CoT by default; exactly what generate.py asks), or, if False, plain zero-shot
      answering. Example teachers (template, imported) are always judged by their concluded
      answers.
    max_examples: keep only the first that many examples (0 = all).

  With `teacher.num_samples > 1` the parsed answers are majority-voted (a repeated rationale
  votes with its first occurrence's answer); samples carry no likelihood, so a tie goes to the
  answer voted for first.
  """
  examples = list(examples)
  if max_examples:
    examples = examples[:max_examples]
  if not examples:
    raise errors.DataError("no examples to evaluate: the split is empty (check data.source / "
                           "data.path and the split name)")
  exemplars = ()
  if teacher_config.prompt_style == prompts.FEW_SHOT_COT and not is_example_teacher(
      teacher):
    exemplars = prompts.load_exemplars(teacher_config.few_shot_path)
  predictions = []
  bar = tqdm(total=len(examples), unit="ex", disable=not progress, desc=f"eval {teacher.name}",
             dynamic_ncols=True)
  chunk_size = max(1, teacher_config.batch_size)
  for b, start in enumerate(range(0, len(examples), chunk_size)):
    chunk = examples[start:start + chunk_size]
    chunk_seed = derive_seed(seed, "evaluate", b)
    if chain_of_thought or is_example_teacher(teacher):
      outputs = explain(teacher, chunk, teacher_config, seed=chunk_seed,
                                   exemplars=exemplars)
    else:
      outputs = _zero_shot_completions(teacher, chunk, teacher_config, chunk_seed)
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
