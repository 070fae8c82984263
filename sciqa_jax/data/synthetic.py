"""The two symbolic tasks of Fine-tune-CoT (Ho et al. 2023; after Wei et al. / Kojima et al.),
generated in code.

  coin_flip                  "A coin is heads up. Ann flips the coin. Bo does not flip the coin.
                             Is the coin still heads up?" -> yes/no (4 people per question).
  last_letter_concatenation  "Take the last letters of each word in "Ann Lee Bo Ray" and
                             concatenate them." -> "neoy" (4 words: two first + last names).

Every example is a pure function of (task, split, seed, index): a split's examples come from a
NumPy generator seeded with a hash of (task, split, seed), so a split is reproducible bit for bit,
different splits and seeds give different streams, and the first k examples of a larger split
equal a smaller split's. Each example carries its worked `solution` steps, from which the template
teacher writes rationales.

Splits are disjoint, whatever the seed: a question belongs to the split that a hash of its text
selects (SPLIT_BUCKETS), and a split's stream skips questions of other splits and repeats. Drawn
independently, two splits of last-letter concatenation (810,000 possible questions) would share
about one question in every 1,000 x 500 drawn, and `registry.load_splits` refuses overlapping splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from sciqa_jax.data.example import Example

SPLIT_SIZES = {"train": 1000, "validation": 200, "test": 500}
NUM_PEOPLE = 4
NUM_NAME_PAIRS = 2
# Share of question space (a question's hash, out of 1000) that belongs to each split.
SPLIT_BUCKETS = {"train": (0, 600), "validation": (600, 720), "test": (720, 1000)}
# Draws per requested example before giving up (a request larger than the split's question space).
_MAX_DRAWS_PER_EXAMPLE = 100

FIRST_NAMES = (
    "Ann", "Bo", "Carla", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena",
    "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vera", "Wen", "Yusuf",
    "Zoe", "Ravi", "Maya", "Luis", "Aiko", "Pablo")
LAST_NAMES = (
    "Lee", "Ray", "Silva", "Kowalski", "Okafor", "Nguyen", "Haddad", "Berg", "Costa", "Moreau",
    "Tanaka", "Ibrahim", "Novak", "Fischer", "Garcia", "Mensah", "Rossi", "Yilmaz", "Park", "Olsen",
    "Dubois", "Kaur", "Sato", "Alvarez", "Brennan", "Petrov", "Adeyemi", "Lindqvist", "Chen", "Mwangi")


def _rng(task: str, split: str, seed: int) -> np.random.Generator:
  digest = hashlib.sha256(f"{task}/{split}/{seed}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _size(split: str, num_examples: int | None) -> int:
  if split not in SPLIT_SIZES:
    raise ValueError(f"unknown split {split!r} for a synthetic task; expected one of "
                     f"{tuple(SPLIT_SIZES)}")
  return SPLIT_SIZES[split] if not num_examples else int(num_examples)


def split_of_question(question: str) -> str:
  """The split a synthetic question belongs to (a fixed partition of question space)."""
  bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 1000
  return next(split for split, (lo, hi) in SPLIT_BUCKETS.items() if lo <= bucket < hi)


Draw = Callable[[np.random.Generator], tuple[str, str, list[str]]]  # -> question, answer, steps


def _generate(task: str, split: str, seed: int, num_examples: int | None, draw: Draw,
              id_prefix: str) -> list[Example]:
  """The examples of `split` in `draw`'s seeded stream, skipping other splits' questions and
  repeats."""
  n = _size(split, num_examples)
  rng = _rng(task, split, seed)
  seen: set[str] = set()
  examples = []
  for _ in range(n * _MAX_DRAWS_PER_EXAMPLE):
    if len(examples) == n:
      break
    question, answer, steps = draw(rng)
    if question in seen or split_of_question(question) != split:
      continue
    seen.add(question)
    examples.append(Example(id=f"{id_prefix}-{split}-{len(examples)}", question=question,
                            choices=(), answer=answer, solution=tuple(steps)))
  if len(examples) < n:
    raise ValueError(f"{task}: could only generate {len(examples)} distinct {split} questions of "
                     f"the {n} requested")
  return examples


def coin_flip(split: str, *, seed: int = 0, num_examples: int | None = None) -> list[Example]:
  """Coin-flip questions; the answer is "yes" iff the number of flips is even."""
  return _generate("coin_flip", split, seed, num_examples, _coin_flip, "coin_flip")


def last_letter_concatenation(split: str, *, seed: int = 0,
                              num_examples: int | None = None) -> list[Example]:
  """Last-letter concatenation over two random "First Last" names (four words)."""
  return _generate("last_letter_concatenation", split, seed, num_examples, _last_letters,
                   "last_letter")


def _coin_flip(rng: np.random.Generator) -> tuple[str, str, list[str]]:
  people = [FIRST_NAMES[i] for i in rng.choice(len(FIRST_NAMES), NUM_PEOPLE, replace=False)]
  flips = rng.integers(0, 2, NUM_PEOPLE).astype(bool)
  sentences = [f"{name} flips the coin." if flip else f"{name} does not flip the coin."
               for name, flip in zip(people, flips)]
  question = "A coin is heads up. " + " ".join(sentences) + " Is the coin still heads up?"
  steps, heads = ["The coin starts heads up."], True
  for name, flip in zip(people, flips):
    if flip:
      heads = not heads
      steps.append(f"{name} flips it, so it is now {'heads' if heads else 'tails'} up.")
    else:
      steps.append(f"{name} does not flip it, so it stays {'heads' if heads else 'tails'} up.")
  answer = "yes" if heads else "no"
  steps.append(f"The coin ends {'heads' if heads else 'tails'} up, so the answer is {answer}.")
  return question, answer, steps


def _last_letters(rng: np.random.Generator) -> tuple[str, str, list[str]]:
  words = []
  for _ in range(NUM_NAME_PAIRS):
    words.append(FIRST_NAMES[rng.integers(len(FIRST_NAMES))])
    words.append(LAST_NAMES[rng.integers(len(LAST_NAMES))])
  phrase = " ".join(words)
  answer = "".join(word[-1] for word in words).lower()
  steps = [f'The last letter of "{word}" is "{word[-1].lower()}".' for word in words]
  steps.append(f'Concatenating them gives "{answer}", so the answer is {answer}.')
  question = f'Take the last letters of each word in "{phrase}" and concatenate them.'
  return question, answer, steps
