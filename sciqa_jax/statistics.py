"""Statistics of an evaluation: Wilson intervals, majority votes, accuracy with its interval, and
the exact McNemar test between two systems scored on the same questions.

Pure Python, shared by student and teacher evaluation (and unit-tested directly).
"""

from __future__ import annotations

import collections
import dataclasses
import fractions
import math
from collections.abc import Callable, Sequence
from typing import Any

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(num_correct: int, num_examples: int, z: float = Z_95) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion (95% by default).

  Unlike the normal approximation it stays inside [0, 1] and is sensible at 0% / 100% accuracy
  and for the small splits these tasks have.
  """
  if num_examples <= 0:
    raise ValueError(f"a confidence interval needs at least one example (got {num_examples})")
  if not 0 <= num_correct <= num_examples:
    raise ValueError(f"num_correct={num_correct} must lie in [0, {num_examples}]")
  n = num_examples
  p = num_correct / n
  z2 = z * z
  denom = 1.0 + z2 / n
  centre = (p + z2 / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
  # At 0% (100%) the exact lower (upper) bound equals p; rounding in centre - half can land a
  # hair on the wrong side of it, which a plot's error bar then rejects as negative.
  return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def majority_vote(answers: Sequence[str | None], scores: Sequence[float],
                  same: Callable[[str, str], bool] | None = None) -> str | None:
  """The most frequent answer; ties go to the larger summed score (log-likelihood) of its votes.

  Unparseable answers (None) do not vote; if none parsed, the result is None (counted wrong).
  On a tie both in votes and summed score, the answer voted for first wins (deterministic).
  `same(a, b)` says when two answers are one vote (e.g. the numbers "43.0" and "43": the task's
  comparison rule, so votes and scoring never disagree); an answer joins the first earlier answer
  it is the same as, and the group is named by that first answer. Default: string equality.
  """
  if len(answers) != len(scores):
    raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
  votes: collections.Counter[str] = collections.Counter()
  totals: dict[str, float] = collections.defaultdict(float)
  for answer, score in zip(answers, scores):
    if answer is None:
      continue
    if same is not None and answer not in votes:
      answer = next((a for a in votes if same(answer, a)), answer)
    votes[answer] += 1
    totals[answer] += float(score)
  if not votes:
    return None
  # max() keeps the first maximal key in insertion order, i.e. the first answer voted for.
  return max(votes, key=lambda a: (votes[a], totals[a]))


def mcnemar_exact(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar p-value from the discordant pairs of a paired comparison.

  `only_a` questions were answered correctly by system A alone, `only_b` by B alone; under the
  null hypothesis (equal accuracy) each discordant question is a fair coin, so the p-value is the
  two-sided binomial test of min(only_a, only_b) in only_a + only_b trials at 1/2:
  min(1, 2 * P[X <= min]). Computed with exact integers (no overflow or underflow at any n).
  Concordant questions carry no information about the difference and do not enter.
  """
  if min(only_a, only_b) < 0:
    raise ValueError(f"discordant counts must be >= 0 (got {only_a}, {only_b})")
  n, k = only_a + only_b, min(only_a, only_b)
  if n == 0:
    return 1.0
  tail = fractions.Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
  return float(min(fractions.Fraction(1), 2 * tail))


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Accuracy on a split with its 95% Wilson interval and one prediction row per example.

  Prediction rows: id, question, rationales (per sample; empty without a rationale stage),
  answers (per-sample parsed answers), scores (per sample: {label: score} for multiple choice,
  the generation's log-likelihood otherwise), generations (open answers: the raw stage-2 /
  Fine-tune-CoT text per sample), prediction, gold, correct.
  """

  accuracy: float
  ci_low: float
  ci_high: float
  num_examples: int
  predictions: list[dict[str, Any]]

  @property
  def num_correct(self) -> int:
    return sum(bool(row["correct"]) for row in self.predictions)

  def metrics(self) -> dict[str, float | int]:
    """The JSON-serialisable summary (metrics.json, results tables, training logs)."""
    return {"accuracy": self.accuracy, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "num_examples": self.num_examples, "num_correct": self.num_correct}


def result_from_predictions(predictions: list[dict[str, Any]], expected: int) -> EvalResult:
  """Accuracy + interval from prediction rows, asserting every example was scored exactly once."""
  ids = [row["id"] for row in predictions]
  if len(predictions) != expected or len(set(ids)) != expected:
    raise AssertionError(f"scored {len(predictions)} predictions ({len(set(ids))} distinct ids) for "
                         f"{expected} examples: every example must be counted exactly once")
  num_correct = sum(bool(row["correct"]) for row in predictions)
  low, high = wilson_interval(num_correct, expected)
  return EvalResult(accuracy=num_correct / expected, ci_low=low, ci_high=high,
                    num_examples=expected, predictions=predictions)
