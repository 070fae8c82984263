"""Fine-tune-CoT-style data files for tests, written in the release's own formats.

`write_fine_tune_cot(root, key)` writes <root>/data/dataset/<key>.json and
<root>/data/split/<key>__default.json with full-size splits (the counts of Fine-tune-CoT's split
files, `registry.FINE_TUNE_COT_SPLIT_SIZES`) over short synthetic records: rows are cheap, so the
real counts are exercised. Each task's rows have its real question and answer layout (numbers as
"43.0" or "1,234", choices inside the question after "Answer choices:", "Yes"/"no", last letters);
the split interleaves train and test indices (a seeded permutation), and a few records belong to no
split, as AQuA's do.
"""

from __future__ import annotations

import json
import random

from sciqa_jax.data.registry import FINE_TUNE_COT_SPLIT_SIZES

UNUSED_RECORDS = 5  # records in the dataset file that neither split uses
NAMES = ("Whitney", "Erika", "Tj", "Benito", "Lucas", "Ana", "Mia", "Raj")


def _letters(i: int, count: int) -> str:
  return "ABCDEF"[i % count]


def _numeric(key: str, i: int) -> dict:
  if key == "gsm8k":  # answers as Fine-tune-CoT writes them, some with thousands separators
    total = 1000 + 7 * i
    return {"question": f"Sam sells {total - 4} cups and then 4 more (batch {i}). How many cups "
                        "did he sell?", "answer": f"{total:,}",
            "reasoning": f"He sold {total - 4} + 4 = <<{total - 4}+4={total}>>{total} cups.\n"}
  return {"question": f"Joan found {i + 70} seashells. She gave Sam 27. How many seashells does "
                      f"she have left ?", "answer": f"{i + 43}.0"}


def _choice(key: str, i: int) -> dict:
  if key == "aqua":
    options = [f"{i + k}.5" for k in range(5)]
    listing = ", ".join(f"({label}) {text}" for label, text in zip("ABCDE", options))
    return {"question": f"A train runs {i} km in half an hour; what is its speed? Answer choices: "
                        f"{listing}.", "answer": _letters(i, 5),
            "rationale": f"Speed = {i} / 0.5.\nAnswer: {_letters(i, 5)}"}
  if key == "date_understanding":
    dates = [f"0{k + 1}/{10 + i % 18}/20{10 + i % 80:02d}" for k in range(6)]
    listing = ", ".join(f"({label}) {text}" for label, text in zip("ABCDEF", dates))
    return {"question": f"Today is day {i} of the year. What is the date tomorrow in MM/DD/YYYY?"
                        f"\nWhich choice is true? Answer choices: {listing}.",
            "answer": _letters(i, 6)}
  if key == "tracking_shuffled_objects":
    return {"question": f"Alice, Bob, and Claire are playing game {i}. Alice has a orange ball, Bob "
                        "has a white ball, and Claire has a blue ball. \n\nFirst, Alice and Bob "
                        "swap balls. At the end of the game, Alice has the \nWhich choice is true? "
                        "Answer choices: (A) orange ball, (B) white ball, (C) blue ball.",
            "answer": _letters(i, 3)}
  return {"question": f"Where would you put grapes number {i} just before checking out? Answer "
                      "choices: (A) mouth, (B) grocery cart, (C) super market, (D) fruit basket, "
                      "(E) fruit market.", "answer": _letters(i, 5)}


def synthetic_row(key: str, i: int) -> dict:
  """Record `i` of `key`'s dataset file, in the task's real question and answer layout."""
  if key in ("single_eq", "addsub", "multiarith", "gsm8k", "svamp"):
    return _numeric(key, i)
  if key in ("aqua", "date_understanding", "tracking_shuffled_objects", "commonsense_qa"):
    return _choice(key, i)
  if key == "coin_flip":
    flips = i % 3
    people = " ".join(f"{NAMES[k]} flips the coin." for k in range(flips))
    return {"question": f"A coin is heads up (game {i}). {people} Is the coin still heads up?",
            "answer": "yes" if flips % 2 == 0 else "no"}
  if key == "last_letter_concatenation":
    words = [NAMES[(i + k) % len(NAMES)] for k in range(4)] + [f"Q{i}x"]
    return {"question": f'Take the last letters of each words in "{" ".join(words)}" and '
                        "concatenate them.", "answer": "".join(w[-1] for w in words).lower()}
  if key == "strategy_qa":
    return {"question": f"Could a llama birth twice during War in Vietnam (number {i})?",
            "answer": "Yes" if i % 2 else "No",
            "rationale": "The war lasted around 6 months. A llama's gestation is 11 months."}
  raise ValueError(f"no synthetic rows for {key!r}")


def split_indices(key: str, sizes: tuple[int, int] | None = None,
                  unused: int = UNUSED_RECORDS) -> tuple[dict[str, list[int]], int]:
  """({"train": [...], "test": [...]}, number of records): a seeded permutation, sorted."""
  num_train, num_test = sizes or FINE_TUNE_COT_SPLIT_SIZES[key]
  total = num_train + num_test + unused
  order = list(range(total))
  random.Random(key).shuffle(order)
  return ({"train": sorted(order[:num_train]),
           "test": sorted(order[num_train:num_train + num_test])}, total)


def write_fine_tune_cot(root, key: str, *, released: bool = True, dataset_dir: str = "data/dataset",
                        split: dict | None = None, rows: list | None = None) -> dict:
  """Writes `key`'s dataset and split files under `root` and returns the split written.

  released: the {"metadata", "data": [{"sample_index", ...}]} form, else a plain JSON array.
  split / rows: override the full-size split and the synthetic rows.
  """
  default_split, total = split_indices(key)
  split = default_split if split is None else split
  rows = [synthetic_row(key, i) for i in range(total)] if rows is None else rows
  data = ({"metadata": {"dataset_key": key},
           "data": [{"sample_index": i, **row} for i, row in enumerate(rows)]}
          if released else rows)
  (root / dataset_dir).mkdir(parents=True, exist_ok=True)
  (root / dataset_dir / f"{key}.json").write_text(json.dumps(data))
  (root / "data" / "split").mkdir(parents=True, exist_ok=True)
  (root / "data" / "split" / f"{key}__default.json").write_text(json.dumps(split))
  return split
