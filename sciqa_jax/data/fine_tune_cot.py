"""Fine-tune-CoT's data files (Ho, Schmid, Yun 2023; github.com/itsnamgyu/reasoning-teacher).

Layout under a root directory (data.path, source local), per dataset key such as "multiarith":

  <root>/data/dataset/<key>.json      the dataset (the repository's layout; or <root>/dataset/<key>.json,
                                      as in its earlier commits: exactly one of the two may exist)
  <root>/data/split/<key>__default.json   {"train": [indices], "test": [indices]}: the paper's split

A dataset file is either the released form {"metadata": {"dataset_key": key, ...}, "data":
[{"sample_index": int, "question": str, "answer": str, ...}, ...]} or a plain JSON array of
{"question", "answer", ...} objects. Either way a record's index is its position in the list, as
Fine-tune-CoT's own `Dataset.select_samples` reads it; a released record whose "sample_index"
disagrees with its position is a bad record. Records outside both splits are never parsed (AQuA's
file holds 97,721 records, of which the split uses 10,254).

The split file is checked before any record is read, against the counts Fine-tune-CoT's split
files have (`registry.FINE_TUNE_COT_SPLIT_SIZES`): every index an int inside the dataset, none
twice, none in both splits, and each split exactly its published size. A split file that fails is
a DataError naming it: the split is never guessed, and a paper split of the wrong size is a bug.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from sciqa_jax import errors
from sciqa_jax.data.loaders import BadRecord, Row

SPLITS = ("train", "test")
SPLIT_FILE = os.path.join("data", "split", "{key}__default.json")
DATASET_FILES = (os.path.join("data", "dataset", "{key}.json"), os.path.join("dataset", "{key}.json"))


def split_file(root: str, key: str) -> str:
  return os.path.join(root, SPLIT_FILE.format(key=key))


def _dataset_files(root: str, key: str) -> list[str]:
  return [os.path.join(root, name.format(key=key)) for name in DATASET_FILES
          if os.path.isfile(os.path.join(root, name.format(key=key)))]


def is_layout(root: str, key: str) -> bool:
  """Whether `root` is a directory holding any of `key`'s Fine-tune-CoT files."""
  return bool(root) and os.path.isdir(root) and (
      os.path.isfile(split_file(root, key)) or bool(_dataset_files(root, key)))


def layout_hint(root: str, key: str) -> str:
  """Where a Fine-tune-CoT root must hold `key`'s files, for error messages."""
  return (f"{os.path.join(root, DATASET_FILES[0].format(key=key))} (or "
          f"{os.path.join(root, DATASET_FILES[1].format(key=key))}) and {split_file(root, key)}")


def dataset_file(root: str, key: str) -> str:
  """The one dataset file of `key` under `root` (module doc)."""
  found = _dataset_files(root, key)
  if not found:
    raise errors.MissingFileError(
        f"data.path={root!r} has Fine-tune-CoT's split file for {key} but no dataset file: "
        f"expected {layout_hint(root, key)}: add the dataset file from Fine-tune-CoT's release")
  if len(found) > 1:
    raise errors.DataError(f"data.path={root!r} holds two dataset files for {key}: {found}: keep "
                           "one (they may differ)")
  return found[0]


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise errors.DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg}): restore the file from "
                           "Fine-tune-CoT's release") from None


def read_records(root: str, key: str) -> tuple[str, list[Any]]:
  """(path, records) of `key`'s dataset file; the released form's dataset_key must be `key`."""
  path = dataset_file(root, key)
  data = _read_json(path)
  if isinstance(data, dict):
    metadata = data.get("metadata")
    found = metadata.get("dataset_key") if isinstance(metadata, dict) else None
    if found is not None and found != key:
      raise errors.DataError(f"{path} is the dataset {found!r} (metadata.dataset_key), not "
                             f"{key!r}: check the file, or set task={found}")
    data = data.get("data")
  if not isinstance(data, list):
    raise errors.DataError(f"{path}: expected a JSON list of records or {{\"metadata\": ..., "
                           "\"data\": [...]}} (Fine-tune-CoT's dataset format)")
  return path, data


def _indices(path: str, split_data: dict, split: str, num_records: int,
             dataset_path: str) -> list[int]:
  indices = split_data.get(split)
  if not isinstance(indices, list):
    raise errors.DataError(f"{path}: no {split!r} list of indices (expected {{\"train\": [...], "
                           "\"test\": [...]}}): use Fine-tune-CoT's split file")
  for index in indices:
    if isinstance(index, bool) or not isinstance(index, int):
      raise errors.DataError(f"{path}: {split} index {index!r} is not an integer: use "
                             "Fine-tune-CoT's split file")
    if not 0 <= index < num_records:
      raise errors.DataError(f"{path}: {split} index {index} is outside {dataset_path} "
                             f"({num_records} records): the split file and the dataset file "
                             "are from different releases")
  if len(set(indices)) != len(indices):
    seen: set[int] = set()
    twice = next(i for i in indices if i in seen or seen.add(i))
    raise errors.DataError(f"{path}: {split} index {twice} occurs twice: use Fine-tune-CoT's "
                           "split file")
  return indices


def read_split(root: str, key: str, expected: tuple[int, int], num_records: int,
               dataset_path: str) -> dict[str, list[int]]:
  """{"train": [...], "test": [...]} from `key`'s split file, checked (module doc)."""
  path = split_file(root, key)
  if not os.path.isfile(path):
    raise errors.DataError(
        f"data.path={root!r} has Fine-tune-CoT's dataset file for {key} but not its split file "
        f"{path}: add it from Fine-tune-CoT's release (splits are never guessed)")
  data = _read_json(path)
  if not isinstance(data, dict):
    raise errors.DataError(f"{path}: expected {{\"train\": [...], \"test\": [...]}}: use "
                           "Fine-tune-CoT's split file")
  split = {name: _indices(path, data, name, num_records, dataset_path) for name in SPLITS}
  shared = set(split["train"]) & set(split["test"])
  if shared:
    raise errors.DataError(f"{path}: train and test share {len(shared)} indices, e.g. "
                           f"{min(shared)}: use Fine-tune-CoT's split file")
  counts = tuple(len(split[name]) for name in SPLITS)
  if counts != tuple(expected):
    raise errors.DataError(
        f"{path}: {counts[0]} train / {counts[1]} test indices, but Fine-tune-CoT's split of "
        f"{key} has {expected[0]} / {expected[1]}: use the split file of Fine-tune-CoT's release, "
        "unmodified")
  return split


def _row(path: str, records: list[Any], index: int) -> tuple[str, Row]:
  location = f"{path}: record {index}"
  record = records[index]
  if not isinstance(record, dict):
    return location, BadRecord("not a JSON object")
  sample_index = record.get("sample_index", index)
  if sample_index != index:
    return location, BadRecord(f"sample_index {sample_index!r} is not the record's position "
                               f"{index} (sample_index)")
  return location, {**record, "sample_index": index}


def split_rows(root: str, key: str, split: str, expected: tuple[int, int]
               ) -> Iterator[tuple[str, Row]]:
  """`(location, row)` of `split` ("train" or "test") in the split file's order, each row
  carrying its "sample_index"."""
  if split not in SPLITS:
    raise ValueError(f"Fine-tune-CoT's split files have {SPLITS}, not {split!r}")
  path, records = read_records(root, key)
  indices = read_split(root, key, expected, len(records), path)[split]
  for index in indices:
    yield _row(path, records, index)
