"""Loaders for the real datasets, from the HF hub, TFDS, or local files in their own release formats.

Two layers:

  * *Row sources* yield `(location, row)` pairs: `location` says where the row came from in words a
    user can act on ("data/ARC-Easy-Train.jsonl:17", "hub allenai/ai2_arc[ARC-Easy] split train
    row 17"), `row` is the raw record as a dict, or a `BadRecord` when the source could not even
    decode it (invalid JSON). Local files: JSONL (one record a line), JSON (a list of records, or an
    object holding one under "data"), parquet. TFDS rows are converted back to plain Python with
    the builder's feature spec (ClassLabel ints become their names, bytes become str).
  * *Record parsers* turn one row into an `Example`, raising `RecordError(reason)` when the record
    is unusable. Each parser accepts every layout its dataset is published in, so one parser
    serves the hub, TFDS and local files alike:
      multiple_choice_record  ARC / CommonsenseQA / OpenBookQA / QASC: AI2's original nested
                              layout {"question": {"stem", "choices": [{"text", "label"}]}}, the
                              hub's flat layout {"question", "choices": {"text": [], "label": []}},
                              OpenBookQA's "question_stem", TFDS OpenBookQA's "choice_A".."choice_D".
      sciq_record             question, distractor1-3, correct_answer (support unused).
      strategyqa_record       question, answer (bool or "yes"/"no"/"true"/"false").

`build_examples` joins them: bad records (invalid JSON, missing answer key, answer key not among
the labels, no choices, duplicate ids) raise ONE `BadRecordError` naming the location, unless
`skip_bad_records`, in which case they are dropped and counted in the returned `LoadReport`.

Normalisation: labels are strings, digit labels ("1".."9", used by some ARC questions) become
letters ("A".."I") for both the choices and the answer key, lower-case letters become upper-case.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from sciqa_jax import errors
from sciqa_jax.data.example import Example

LOCAL_EXTENSIONS = (".jsonl", ".json", ".parquet")
# Published split names and the file-name tokens that denote them in the datasets' own releases
# (ARC: "ARC-Easy-Dev.jsonl", CSQA: "dev_rand_split.jsonl", OpenBookQA: "dev.jsonl").
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "dev", "val", "valid"),
                 "test": ("test",)}
MAX_REPORTED_SKIPS = 20  # skipped-record reasons kept in a LoadReport (the count is exact)


class BadRecordError(errors.DataError):
  """An unusable record; the message names the file (or hub/TFDS source) and line/row."""


class RecordError(ValueError):
  """Raised by a record parser; `build_examples` adds the location."""


@dataclasses.dataclass(frozen=True)
class BadRecord:
  """A row its source could not decode (e.g. a JSONL line that is not JSON)."""

  reason: str


@dataclasses.dataclass
class LoadReport:
  """What a load read and skipped."""

  source: str
  num_records: int = 0
  num_skipped: int = 0
  skipped: list[str] = dataclasses.field(default_factory=list)  # first MAX_REPORTED_SKIPS

  def describe(self) -> str:
    text = f"{self.source}: {self.num_records} records, {self.num_skipped} bad records skipped"
    if self.skipped:
      text += " (" + "; ".join(self.skipped[:5]) + (" ..." if self.num_skipped > 5 else "") + ")"
    return text


Row = dict[str, Any] | BadRecord
RecordParser = Callable[[dict[str, Any], int, str], Example]


# ---- row sources -------------------------------------------------------------------------------


def _split_tokens(filename: str) -> set[str]:
  return set(re.split(r"[^a-z0-9]+", filename.lower()))


def resolve_local_files(path: str, split: str) -> list[str]:
  """The local files holding `split`.

  `path` is a file (used as is), a pattern with "{split}" (e.g. "data/ARC-Easy-{split}.jsonl"),
  or a directory searched for JSON/JSONL/parquet files whose name contains the split's name
  ("validation" also matches "dev"/"val"); several matches (parquet shards) are read in name order.
  """
  if not path:
    raise ValueError("data.source='local' needs data.path = a file, a directory, or a pattern "
                     "with {split}")
  if "{split}" in path:
    path = path.replace("{split}", split)
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f"data.path={path!r} (split {split!r}) is neither a file nor a directory")
  aliases = SPLIT_ALIASES.get(split, (split,))
  files = sorted(
      os.path.join(path, name) for name in os.listdir(path)
      if name.endswith(LOCAL_EXTENSIONS) and _split_tokens(name) & set(aliases))
  if not files:
    raise FileNotFoundError(
        f"no file for split {split!r} in {path!r}: expected a .jsonl/.json/.parquet file whose name "
        f"contains one of {aliases}; found {sorted(os.listdir(path))}")
  return files


def iter_local_rows(path: str) -> Iterator[tuple[str, Row]]:
  """`(location, row)` for every record of one local file (JSONL, JSON or parquet)."""
  if path.endswith(".jsonl"):
    with open(path, encoding="utf-8") as f:
      for line_number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        location = f"{path}:{line_number}"
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          yield location, BadRecord(f"invalid JSON ({e.msg})")
          continue
        yield location, row if isinstance(row, dict) else BadRecord("not a JSON object")
  elif path.endswith(".json"):
    with open(path, encoding="utf-8") as f:
      text = f.read()
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      # A broken JSON file has no records to skip: always an error, at the parser's line.
      raise BadRecordError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
      data = data["data"]
    if not isinstance(data, list):
      raise BadRecordError(f"{path}: expected a JSON list of records (or {{\"data\": [...]}})")
    for index, row in enumerate(data):
      location = f"{path}: record {index}"
      yield location, row if isinstance(row, dict) else BadRecord("not a JSON object")
  elif path.endswith(".parquet"):
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    for index, row in enumerate(pq.read_table(path).to_pylist()):
      yield f"{path}: row {index}", row
  else:
    raise ValueError(f"unsupported file type {path!r}; expected one of {LOCAL_EXTENSIONS}")


def iter_hub_rows(hub_id: str, config_name: str | None, split: str) -> Iterator[tuple[str, Row]]:
  """`(location, row)` for a split of a Hugging Face hub dataset (`datasets.load_dataset`)."""
  import datasets  # pylint: disable=g-import-not-at-top

  name = f"{hub_id}[{config_name}]" if config_name else hub_id
  try:
    dataset = datasets.load_dataset(hub_id, config_name, split=split)
  except Exception as e:  # datasets raises many types (network, missing split, ...): add context.
    raise RuntimeError(f"could not load hub dataset {name} split {split!r}: {e}") from e
  for index, row in enumerate(dataset):
    yield f"hub {name} split {split} row {index}", dict(row)


def _tfds_to_python(value: Any, feature: Any) -> Any:
  """A numpy TFDS value as plain Python, ClassLabel ints mapped to their names."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if isinstance(feature, tfds.features.FeaturesDict):
    return {key: _tfds_to_python(value[key], feature[key]) for key in value}
  if isinstance(feature, tfds.features.Sequence):
    return _tfds_to_python(value, feature.feature)
  if isinstance(feature, tfds.features.ClassLabel):
    if isinstance(value, np.ndarray) and value.ndim:
      return [feature.int2str(int(v)) for v in value]
    return feature.int2str(int(value))
  if isinstance(value, np.ndarray):
    return [_tfds_to_python(v, feature) for v in value] if value.ndim else value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8")
  return value.item() if isinstance(value, np.generic) else value


def iter_tfds_rows(name: str, split: str, data_dir: str | None = None) -> Iterator[tuple[str, Row]]:
  """`(location, row)` for a split of a prepared TFDS dataset (never downloads)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    dataset, info = tfds.load(name, split=split, data_dir=data_dir, download=False,
                              shuffle_files=False, with_info=True)
  except Exception as e:  # not prepared, unknown split, ...
    raise RuntimeError(
        f"could not load TFDS dataset {name!r} split {split!r}: {e}. Prepare it first "
        f"(`tfds build {name}`, with --manual_dir when offline) or set TFDS_DATA_DIR") from e
  for index, row in enumerate(tfds.as_numpy(dataset)):
    yield f"tfds {name} split {split} row {index}", _tfds_to_python(row, info.features)


# ---- record parsers ------------------------------------------------------------------------------


def normalize_label(label: Any) -> str:
  """"1".."9" -> "A".."I"; letters upper-cased; other labels kept as strings."""
  label = str(label).strip()
  if len(label) == 1 and label in "123456789":
    return chr(ord("A") + int(label) - 1)
  return label.upper()


def _record_id(row: dict[str, Any], index: int, split: str, prefix: str) -> str:
  for key in ("id", "qid"):
    if row.get(key) not in (None, ""):
      return str(row[key])
  return f"{prefix}-{split}-{index}"


def _answer_key(row: dict[str, Any]) -> str:
  answer = row.get("answerKey")
  if answer is None or str(answer).strip() == "":
    raise RecordError("missing answer key (answerKey)")
  return normalize_label(answer)


def multiple_choice_record(row: dict[str, Any], index: int, split: str, *,
                           context_field: str = "", id_prefix: str = "mc") -> Example:
  """ARC / CommonsenseQA / OpenBookQA / QASC in any of their published layouts (module doc)."""
  question = row.get("question")
  choices_raw: Any = row.get("choices")
  if isinstance(question, dict):  # AI2 / CSQA original JSONL, or TFDS OpenBookQA
    stem = question.get("stem", "")
    if "choices" in question:
      choices_raw = question["choices"]
    elif "choice_A" in question:
      choices_raw = [{"label": key[len("choice_"):], "text": value}
                     for key, value in sorted(question.items()) if key.startswith("choice_")]
  elif "question_stem" in row:  # OpenBookQA on the hub
    stem = row["question_stem"]
  else:
    stem = question or ""
  if not str(stem).strip():
    raise RecordError("missing question text")
  if isinstance(choices_raw, dict):  # {"text": [...], "label": [...]}
    texts, labels = list(choices_raw.get("text") or []), list(choices_raw.get("label") or [])
    if len(texts) != len(labels):
      raise RecordError(f"{len(texts)} choice texts but {len(labels)} labels")
    pairs = list(zip(labels, texts))
  elif isinstance(choices_raw, list):
    pairs = [(c.get("label"), c.get("text")) for c in choices_raw if isinstance(c, dict)]
  else:
    pairs = []
  if not pairs:
    raise RecordError("no choices")
  choices = tuple((normalize_label(label), str(text)) for label, text in pairs)
  labels = [label for label, _ in choices]
  if len(set(labels)) != len(labels):
    raise RecordError(f"duplicate choice labels {labels}")
  answer = _answer_key(row)
  if answer not in labels:
    raise RecordError(f"answer key {answer!r} is not among the labels {labels}")
  context = str(row.get(context_field) or "") if context_field else ""
  return Example(id=_record_id(row, index, split, id_prefix), question=str(stem).strip(),
                 choices=choices, answer=answer, context=context.strip())


def sciq_record(row: dict[str, Any], index: int, split: str) -> Example:
  """SciQ: the correct answer and three distractors, in a deterministic order.

  The order is a permutation seeded by a hash of the question and its correct answer, so it is the
  same on every machine and from every source, and the gold label is spread over A-D (listing the
  correct answer first would teach students "always A").
  """
  question = str(row.get("question") or "").strip()
  if not question:
    raise RecordError("missing question text")
  correct = row.get("correct_answer")
  if correct is None or str(correct).strip() == "":
    raise RecordError("missing answer key (correct_answer)")
  distractors = [row.get(f"distractor{i}") for i in (1, 2, 3)]
  texts = [str(correct)] + [str(d) for d in distractors if d not in (None, "")]
  if len(texts) < 2:
    raise RecordError("no choices (distractor1-3 missing)")
  digest = hashlib.sha256(f"{question}\x00{correct}".encode()).digest()
  order = sorted(range(len(texts)), key=lambda i: hashlib.sha256(digest + bytes([i])).digest())
  labels = [chr(ord("A") + i) for i in range(len(texts))]
  choices = tuple((label, texts[i]) for label, i in zip(labels, order))
  answer = labels[order.index(0)]
  return Example(id=_record_id(row, index, split, "sciq"), question=question, choices=choices,
                 answer=answer)


_BOOL_STRINGS = {"true": "yes", "yes": "yes", "false": "no", "no": "no"}


def strategyqa_record(row: dict[str, Any], index: int, split: str) -> Example:
  """StrategyQA: a yes/no question with a boolean answer (release JSON and hub copies)."""
  question = str(row.get("question") or "").strip()
  if not question:
    raise RecordError("missing question text")
  answer = row.get("answer")
  if isinstance(answer, bool):
    answer = "yes" if answer else "no"
  elif isinstance(answer, str) and answer.strip().lower() in _BOOL_STRINGS:
    answer = _BOOL_STRINGS[answer.strip().lower()]
  elif answer is None or answer == "":
    raise RecordError("missing answer key (answer)")
  else:
    raise RecordError(f"answer {answer!r} is not a boolean / yes / no")
  return Example(id=_record_id(row, index, split, "strategyqa"), question=question, choices=(),
                 answer=answer)


# ---- rows -> examples -------------------------------------------------------------------------


def build_examples(rows: Iterable[tuple[str, Row]], parse: RecordParser, split: str, *,
                   source: str, skip_bad_records: bool = False
                   ) -> tuple[list[Example], LoadReport]:
  """Parses rows into Examples in source order, raising or counting bad records (module doc)."""
  report = LoadReport(source=source)
  examples: list[Example] = []
  first_location: dict[str, str] = {}
  for index, (location, row) in enumerate(rows):
    report.num_records += 1
    try:
      if isinstance(row, BadRecord):
        raise RecordError(row.reason)
      example = parse(row, index, split)
      if example.id in first_location:
        raise RecordError(f"duplicate id {example.id!r} (first seen at {first_location[example.id]})")
    except RecordError as e:
      message = f"{location}: {e}"
      if not skip_bad_records:
        raise BadRecordError(message + " (set data.skip_bad_records=True to skip such records)"
                             ) from None
      report.num_skipped += 1
      if len(report.skipped) < MAX_REPORTED_SKIPS:
        report.skipped.append(message)
      continue
    first_location[example.id] = location
    examples.append(example)
  return examples, report


def local_rows(path: str, split: str) -> Iterator[tuple[str, Row]]:
  for file in resolve_local_files(path, split):
    yield from iter_local_rows(file)
