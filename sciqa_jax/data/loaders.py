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
      gsm8k_record            GSM8K's release JSONL and hub copy: question, answer = worked
                              solution + "#### <number>"; the solution (calculator annotations
                              "<<48/2=24>>" removed) becomes Example.solution.
      aqua_record             AQuA-RAT (hub deepmind/aqua_rat): question, options ["A)21", ...],
                              correct, rationale (-> Example.solution).
      svamp_record            SVAMP (hub ChilleD/SVAMP): Body + Question, Answer, ID.
      multiarith_record       MultiArith (hub ChilleD/MultiArith): question, final_ans.
      fine_tune_cot_record    a row of Fine-tune-CoT's dataset files (sciqa_jax.data.fine_tune_cot):
                              question, answer as a string, per answer type; multiple-choice
                              questions carry their choices in the text ("Answer choices: (A) ...,
                              (B) ..."), parsed out by `choices_from_question`.
  A record that does not parse raises RecordError naming the field at fault.

Local files (source local, `resolve_local_files`): splits are never guessed. A file serves a split
only when its name says so: it has one of the split's SPLIT_ALIASES as a whole word, in any case
("ARC-Easy-Dev.jsonl" and "valid.json" are validation, "strategyqa_train.json" is train). data.path
may be
  * a file: used for a split its name names, refused for any other split (ask StrategyQA's
    "strategyqa_train.json" for test and the error says so); a file whose name names no split
    ("export.json") serves no split, unless the task has a single published split;
  * a pattern with "{split}": "{split}" stands for each of the split's aliases, in any case, and
    exactly one existing path must match: "data/ARC-Easy-{split}.jsonl" is ARC-Easy-Train.jsonl for
    train and ARC-Easy-Dev.jsonl for validation; the path found may be a directory (searched as
    below) and "{split}" may stand in a directory's name too ("data/{split}/rows.jsonl");
  * a directory: its .jsonl/.json/.parquet files whose name names the split and that belong to the
    task. Where a dataset's release names its files after it (`Task.file_names`: "ARC-Challenge-
    Train.jsonl", CommonsenseQA's "train_rand_split.jsonl", "strategyqa_train.json"), a file
    belongs if its name carries that name, or if it names no dataset and the directory's own name
    does ("ARC-Challenge/train-00000-of-00001.parquet", the hub's layout); releases whose file names
    carry no dataset name (OpenBookQA, QASC, SciQ: "train.jsonl") take any file of the split.
    A file naming another registered dataset is never the task's (ARC-Easy files are not
    ARC-Challenge's), given as data.path or found in a directory. Exactly one file must remain,
    or the complete shards of one ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet",
    read in order); none, several, or missing shards fail listing the candidates.

`build_examples` joins them: bad records (invalid JSON, missing answer key, answer key not among
the labels, no choices, duplicate ids) raise ONE `BadRecordError` naming the location, unless
`skip_bad_records`, in which case they are dropped and counted in the returned `LoadReport`.

Normalisation: labels are strings, digit labels ("1".."9", used by some ARC questions) become
letters ("A".."I") for both the choices and the answer key, lower-case letters become upper-case.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from sciqa_jax import errors
from sciqa_jax.data import answers as answers_lib
from sciqa_jax.data.example import CHOICE, NUMBER, TEXT, YES_NO, Example

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


def _tokens(name: str) -> list[str]:
  """The words of a file name, lower case: "ARC-Easy-Dev.jsonl" -> [arc, easy, dev, jsonl]."""
  return [token for token in re.split(r"[^a-z0-9]+", name.lower()) if token]


def names_dataset(filename: str, name: str) -> bool:
  """Whether `filename` carries the dataset name `name` as whole words ("ARC-Easy" is in
  "ARC-Easy-Train.jsonl", not in "ARC-Challenge-Train.jsonl")."""
  want, have = _tokens(name), _tokens(filename)
  return bool(want) and any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))


def splits_named(filename: str) -> list[str]:
  """The splits whose SPLIT_ALIASES tokens occur in `filename` as whole words."""
  tokens = set(_tokens(filename))
  return [split for split, aliases in SPLIT_ALIASES.items() if tokens & set(aliases)]


def _aliases(split: str) -> tuple[str, ...]:
  return SPLIT_ALIASES.get(split, (split,))


def _other_dataset(filename: str, names: tuple[str, ...], other_names: tuple[str, ...]) -> str:
  """The other dataset `filename` names ("" if none, or if it also names this task's dataset)."""
  if any(names_dataset(filename, name) for name in names):
    return ""
  return next((name for name in other_names if names_dataset(filename, name)), "")


def _check_file(path: str, split: str, *, names: tuple[str, ...], other_names: tuple[str, ...],
                splits: tuple[str, ...], split_in_name: bool) -> None:
  """A file given as data.path serves `split` only when its name says so (module doc)."""
  filename = os.path.basename(path)
  other = _other_dataset(filename, names, other_names)
  if other:
    raise errors.DataError(
        f"data.path={path!r} is a file of another dataset ({other}, by its name), not this task's"
        + (f" ({' / '.join(names)} files)" if names else "") + ": check data.path and task")
  if not split_in_name:
    return
  named = splits_named(filename)
  if split in named or (not named and len(splits) == 1):
    return
  if named:
    token = next(a for a in _aliases(named[0]) if a in _tokens(filename))
    pattern = os.path.join(os.path.dirname(path), re.sub(
        rf"(?i)(?<![a-z0-9]){token}(?![a-z0-9])", "{split}", filename, count=1))
    raise errors.DataError(
        f"data.path={path!r} holds the {'/'.join(named)} split (its file name says so), not "
        f"{split!r}: give each split its own file and set data.path to their directory or to a "
        f"pattern such as {pattern!r}")
  stem, ext = os.path.splitext(filename)
  raise errors.DataError(
      f"data.path={path!r}: the file name does not say which split it holds (no word of "
      f"{', '.join(a for s in SPLIT_ALIASES.values() for a in s)}), so it is used for no split: "
      f"rename it (e.g. {stem}_{split}{ext}) or set data.path to a {{split}} pattern")


def _expand_split_pattern(path: str, split: str) -> str:
  """The one existing path that `path` names for `split`, "{split}" standing for any alias of the
  split in any case (module doc)."""
  aliases = _aliases(split)
  parts = [glob.escape(part) for part in path.split("{split}")]
  found = set()
  for alias in aliases:
    any_case = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else glob.escape(c) for c in alias)
    found.update(glob.glob(any_case.join(parts)))
  if not found:
    raise errors.MissingFileError(
        f"data.path={path!r}: nothing there for split {split!r} ({{split}} stands for "
        f"{' / '.join(aliases)}, in any case): check the path or add the split's file")
  if len(found) > 1:
    raise errors.DataError(
        f"data.path={path!r} matches several paths for split {split!r}: {sorted(found)}: keep one "
        "or make the pattern more specific")
  return found.pop()


_SHARD = re.compile(r"(.*)-(\d+)-of-(\d+)(\.\w+)")  # train-00000-of-00003.parquet


def _check_one_file_or_shards(directory: str, split: str, files: list[str]) -> None:
  """Several files serve one split only as the complete shards of one file."""
  matches = [_SHARD.fullmatch(name) for name in files]
  if all(matches) and len({(m[1], m[3], m[4]) for m in matches}) == 1:
    total = int(matches[0][3])
    if sorted(int(m[2]) for m in matches) != list(range(total)):
      raise errors.DataError(
          f"{directory}: split {split!r} has {len(files)} of the {total} shards "
          f"{matches[0][1]}-*-of-{matches[0][3]}{matches[0][4]} ({files}): add the missing ones")
    return
  if len(files) > 1:
    raise errors.DataError(
        f"several files in {directory} could hold split {split!r}: {files}: set data.path to one "
        "of them or to a {split} pattern")


def _directory_files(directory: str, split: str, *, names: tuple[str, ...],
                     other_names: tuple[str, ...]) -> list[str]:
  """The file (or shards) of `split` in `directory` that belong to the task (module doc)."""
  data_files = sorted(name for name in os.listdir(directory)
                      if name.endswith(LOCAL_EXTENSIONS)
                      and os.path.isfile(os.path.join(directory, name)))
  folder = os.path.basename(os.path.normpath(directory))
  named_by_folder = any(names_dataset(folder, name) for name in names)

  def belongs(filename: str) -> bool:
    if any(names_dataset(filename, name) for name in names):
      return True
    return not _other_dataset(filename, names, other_names) and (not names or named_by_folder)

  aliases = _aliases(split)
  files = [name for name in data_files if set(_tokens(name)) & set(aliases) and belongs(name)]
  if not files:
    wanted = f"one of the words {aliases}" + (
        f" and the dataset's name ({' or '.join(names)})" if names else "")
    raise errors.MissingFileError(
        f"no file for split {split!r} in {directory}: expected a .jsonl/.json/.parquet file whose "
        f"name has {wanted}; data files there: {data_files or 'none'}: add it, or set data.path "
        "to the file or a {split} pattern")
  _check_one_file_or_shards(directory, split, files)
  return [os.path.join(directory, name) for name in files]


def resolve_local_files(path: str, split: str, *, names: tuple[str, ...] = (),
                        other_names: tuple[str, ...] = (),
                        splits: tuple[str, ...] = tuple(SPLIT_ALIASES)) -> list[str]:
  """The local files holding `split`: one file, or the complete shards of one (module doc).

  Args:
    path: data.path: a file, a directory, or a pattern with "{split}".
    split: the split wanted.
    names: the dataset's name as its release files carry it (Task.file_names); () if they carry
      none.
    other_names: the other registered datasets' names: a file naming one of them is not this
      task's.
    splits: the task's published splits (a file naming no split serves a single-split task).
  """
  if not path:
    raise errors.ConfigError("data.source='local' needs data.path: a file, a directory, or a "
                             "pattern with {split} such as data/ARC-Easy-{split}.jsonl")
  split_in_name = True
  if "{split}" in path:
    path, split_in_name = _expand_split_pattern(path, split), False
  if os.path.isfile(path):
    _check_file(path, split, names=names, other_names=other_names, splits=splits,
                split_in_name=split_in_name)
    return [path]
  if not os.path.isdir(path):
    raise errors.MissingFileError(f"data.path={path!r} (split {split!r}) is neither a file nor a "
                                  "directory: check the path")
  return _directory_files(path, split, names=names, other_names=other_names)


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
  for key in ("id", "qid", "ID"):
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


def _yes_no(answer: Any, field: str) -> str:
  """A gold yes/no answer: a boolean or "yes"/"no"/"true"/"false" in any case."""
  if isinstance(answer, bool):
    return "yes" if answer else "no"
  if isinstance(answer, str) and answer.strip().lower() in _BOOL_STRINGS:
    return _BOOL_STRINGS[answer.strip().lower()]
  if answer is None or answer == "":
    raise RecordError(f"missing answer key ({field})")
  raise RecordError(f"{field} {answer!r} is not a boolean / yes / no")


def strategyqa_record(row: dict[str, Any], index: int, split: str) -> Example:
  """StrategyQA: a yes/no question with a boolean answer (release JSON and hub copies)."""
  question = str(row.get("question") or "").strip()
  if not question:
    raise RecordError("missing question text")
  return Example(id=_record_id(row, index, split, "strategyqa"), question=question, choices=(),
                 answer=_yes_no(row.get("answer"), "answer"))


def _question(row: dict[str, Any], field: str = "question") -> str:
  question = row.get(field)
  if not isinstance(question, str) or not question.strip():
    raise RecordError(f"missing question text ({field})")
  return question.strip()


def _gold_number(answer: Any, field: str) -> str:
  """A gold numeric answer in canonical form ("43.0" -> "43", "1,000" -> "1000")."""
  if answer is None or (isinstance(answer, str) and not answer.strip()):
    raise RecordError(f"missing answer ({field})")
  if isinstance(answer, bool) or not isinstance(answer, (int, float, str)):
    raise RecordError(f"{field} {answer!r} is not a number")
  value = answers_lib.number_value(answer) if isinstance(answer, str) else float(answer)
  if value is None or not math.isfinite(value):
    raise RecordError(f"{field} {answer!r} is not a number")
  return answers_lib.format_number(value)


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def solution_steps(text: Any) -> tuple[str, ...]:
  """A published worked solution as steps: its non-empty lines, GSM8K's calculator annotations
  ("<<48/2=24>>") removed, since a rationale never shows them."""
  if not isinstance(text, str):
    return ()
  lines = (" ".join(_CALCULATOR.sub("", line).split()) for line in text.splitlines())
  return tuple(line for line in lines if line)


def gsm8k_record(row: dict[str, Any], index: int, split: str) -> Example:
  """GSM8K (release JSONL, hub openai/gsm8k "main"): the final answer follows "#### "."""
  question = _question(row)
  answer = row.get("answer")
  if not isinstance(answer, str) or "####" not in answer:
    raise RecordError("answer has no '#### <number>' final answer (answer)")
  solution, _, final = answer.rpartition("####")
  return Example(id=_record_id(row, index, split, "gsm8k"), question=question, choices=(),
                 answer=_gold_number(final, "answer after ####"),
                 solution=solution_steps(solution))


_OPTION = re.compile(r"\s*\(?\s*([A-Za-z])\s*\)\s*(.*)", re.DOTALL)


def aqua_record(row: dict[str, Any], index: int, split: str) -> Example:
  """AQuA-RAT (hub deepmind/aqua_rat "raw", release JSON): options "A)21" ... "E)23"."""
  question = _question(row)
  options = row.get("options")
  if not isinstance(options, list) or not options:
    raise RecordError("missing options (options)")
  choices = []
  for option in options:
    match = _OPTION.fullmatch(str(option))
    if not match:
      raise RecordError(f"option {option!r} is not 'A)text' (options)")
    choices.append((match.group(1).upper(), match.group(2).strip()))
  answer = normalize_label(row.get("correct") or "")
  if answer not in [label for label, _ in choices]:
    raise RecordError(f"correct {row.get('correct')!r} is not among the option labels (correct)")
  return Example(id=_record_id(row, index, split, "aqua"), question=question,
                 choices=tuple(choices), answer=answer,
                 solution=solution_steps(row.get("rationale")))


def svamp_record(row: dict[str, Any], index: int, split: str) -> Example:
  """SVAMP (hub ChilleD/SVAMP, release SVAMP.json): the question is Body + " " + Question."""
  if isinstance(row.get("Body"), str) and isinstance(row.get("Question"), str):
    question = f"{row['Body'].strip()} {row['Question'].strip()}".strip()
  else:
    question = str(row.get("question_concat") or "").strip()
  if not question:
    raise RecordError("missing question text (Body, Question)")
  return Example(id=_record_id(row, index, split, "svamp"), question=question, choices=(),
                 answer=_gold_number(row.get("Answer"), "Answer"))


def multiarith_record(row: dict[str, Any], index: int, split: str) -> Example:
  """MultiArith (hub ChilleD/MultiArith): question, final_ans."""
  return Example(id=_record_id(row, index, split, "multiarith"), question=_question(row),
                 choices=(), answer=_gold_number(row.get("final_ans"), "final_ans"))


_CHOICES_LINE = re.compile(r"answer\s+choices\s*:", re.IGNORECASE)
_CHOICE_MARK = re.compile(r"\(([A-Z])\)")


def choices_from_question(question: str) -> tuple[str, tuple[tuple[str, str], ...]]:
  """(stem, choices) of a question that lists its choices inline, as Fine-tune-CoT's and
  zero-shot-CoT's files do: "... what? Answer choices: (A) ignore, (B) enforce, (C) avoid.".

  The stem is the text before the last "Answer choices:" (any case), without a trailing comma:
  `formatting.format_question` writes the choices again on their own line, so the student reads
  them once. Labels must run A, B, C, ... from the first marker; a choice's text ends at the
  next label, without the ", " separator (and the final "."). Raises RecordError when the text
  lists no choices.
  """
  lines = list(_CHOICES_LINE.finditer(question))
  if not lines:
    raise RecordError("the question lists no choices ('Answer choices: (A) ...') (question)")
  stem = question[:lines[-1].start()].strip().rstrip(",").strip()
  rest = question[lines[-1].end():]
  marks, expected = [], "A"
  for match in _CHOICE_MARK.finditer(rest):
    if match.group(1) == expected:
      marks.append(match)
      expected = chr(ord(expected) + 1)
  if len(marks) < 2 or rest[:marks[0].start()].strip():
    raise RecordError("the choices after 'Answer choices:' are not (A) ..., (B) ... (question)")
  choices = []
  for i, match in enumerate(marks):
    end = marks[i + 1].start() if i + 1 < len(marks) else len(rest)
    text = rest[match.end():end].strip()
    text = text.rstrip(".").strip() if i + 1 == len(marks) else text.rstrip(",;").strip()
    if not text:
      raise RecordError(f"choice ({match.group(1)}) has no text (question)")
    choices.append((match.group(1), text))
  if not stem:
    raise RecordError("missing question text before 'Answer choices:' (question)")
  return stem, tuple(choices)


def fine_tune_cot_record(row: dict[str, Any], index: int, split: str, *, key: str,
                         answer_type: str) -> Example:
  """A row of a Fine-tune-CoT dataset file ({"question", "answer": str, ...}); the id is
  "<key>-<sample_index>", stable across splits and runs. A published "rationale" or "reasoning"
  field (AQuA's, StrategyQA's, GSM8K's) becomes Example.solution."""
  question = _question(row)
  answer, choices = row.get("answer"), ()
  if answer_type == NUMBER:
    answer = _gold_number(answer, "answer")
  elif answer_type == YES_NO:
    answer = _yes_no(answer, "answer")
  elif answer_type == CHOICE:
    question, choices = choices_from_question(question)
    labels = [label for label, _ in choices]
    answer = normalize_label(answer) if isinstance(answer, str) and answer.strip() else None
    if answer not in labels:
      raise RecordError(f"answer {row.get('answer')!r} is not among the choices {labels} "
                        "listed in the question (answer)")
  elif answer_type == TEXT:
    if not isinstance(answer, str) or not answer.strip():
      raise RecordError("missing answer (answer)")
    answer = answer.strip()
  else:
    raise ValueError(f"unknown answer type {answer_type!r}")
  sample_index = row.get("sample_index", index)
  solution = solution_steps(row.get("rationale") or row.get("reasoning"))
  return Example(id=f"{key}-{sample_index}", question=question, choices=choices, answer=answer,
                 solution=solution)


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


def local_rows(path: str, split: str, **layout) -> Iterator[tuple[str, Row]]:
  """The rows of `split` from the local files `resolve_local_files(path, split, **layout)` finds."""
  for file in resolve_local_files(path, split, **layout):
    yield from iter_local_rows(file)
