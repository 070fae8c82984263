"""The rationale cache: teacher rationales as sharded TFRecord files plus a JSON manifest.

Layout:
  cache_dir/manifest.json                       producing config, counts, per-shard checksums
  cache_dir/<split>/rationales-<k:05d>.tfrecord one `tf.train.Example` per kept rationale

Shards are the unit of work and of resumption. Shard k of a split holds the records of examples
[k * shard_size, (k + 1) * shard_size) of that split, in example order then sample order, so a
shard is a pure function of (config, data, k) when the teacher is deterministic given its seed.

Crash safety (a run may be killed with SIGKILL at any instruction):
  * a shard is written to `<name>.tmp`, fsynced, then `os.replace`d onto its final name, so a
    final-name file is always complete;
  * the manifest is rewritten the same way (temp + fsync + `os.replace`) after each shard, so it
    is always a valid JSON document describing only complete shards;
  * on restart, a shard counts as done only if the manifest lists it AND the file's sha256 matches;
    anything else (a shard renamed but not yet in the manifest, a truncated or edited file) is
    regenerated and overwritten, and stale `.tmp` files are deleted. A resumed run therefore ends
    with exactly the records an uninterrupted run writes.

The manifest's `config` holds the settings that determine the records (`rationales.
producing_config`); a run whose settings differ is refused with the differing keys named, so one
cache never mixes two teachers or prompt styles. `splits[split]["examples_sha256"]` fingerprints
the loaded examples, catching data files edited between runs.

Only one process writes a cache (process 0 of a multi-host job). Readers use `read_records`:
every record of a split, in shard order, on every host (the trainer splits the tokenised rows
between hosts itself, see `input_pipeline.host_rows`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tensorflow as tf

from sciqa_jax import errors
from sciqa_jax.data.example import Example

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class CacheConfigMismatchError(errors.RunMismatchError):
  """The cache directory was produced with different settings."""


@dataclasses.dataclass(frozen=True)
class RationaleRecord:
  """One teacher rationale for one example.

  Attributes:
    example: the example explained (with its gold answer).
    rationale: the reasoning text.
    teacher_answer: the teacher's answer parsed with the task's parser; None if unparseable.
    correct: whether `teacher_answer` equals the gold answer.
    sample_index: which of the teacher's samples for this example it was (0-based, before
      de-duplication, so indices of kept samples may have gaps).
    teacher: the teacher's name.
    prompt_style: the prompt style that produced it.
    teacher_answer_text: the teacher's raw answer string, before parsing.
  """

  example: Example
  rationale: str
  teacher_answer: str | None
  correct: bool
  sample_index: int
  teacher: str
  prompt_style: str
  teacher_answer_text: str = ""


# ---- (de)serialization ------------------------------------------------------------------------


def _bytes(*values: str) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def _int(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def serialize_record(record: RationaleRecord) -> bytes:
  """A record as a serialized `tf.train.Example`.

  Features (all bytes lists of UTF-8 strings unless noted): id, question, choice_labels,
  choice_texts, answer, context, solution, rationale, teacher_answer (no value = unparseable),
  teacher_answer_text, teacher, prompt_style; correct and sample_index are int64.
  """
  example = record.example
  features = {
      "id": _bytes(example.id),
      "question": _bytes(example.question),
      "choice_labels": _bytes(*example.labels),
      "choice_texts": _bytes(*(text for _, text in example.choices)),
      "answer": _bytes(example.answer),
      "context": _bytes(example.context),
      "solution": _bytes(*example.solution),
      "rationale": _bytes(record.rationale),
      "teacher_answer": _bytes(*(() if record.teacher_answer is None else (record.teacher_answer,))),
      "teacher_answer_text": _bytes(record.teacher_answer_text),
      "correct": _int(record.correct),
      "sample_index": _int(record.sample_index),
      "teacher": _bytes(record.teacher),
      "prompt_style": _bytes(record.prompt_style),
  }
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def parse_record(serialized: bytes) -> RationaleRecord:
  """The inverse of `serialize_record`."""
  feature = tf.train.Example.FromString(serialized).features.feature

  def strings(key: str) -> list[str]:
    return [v.decode("utf-8") for v in feature[key].bytes_list.value]

  def string(key: str) -> str:
    values = strings(key)
    return values[0] if values else ""

  teacher_answer = strings("teacher_answer")
  example = Example(id=string("id"), question=string("question"),
                    choices=tuple(zip(strings("choice_labels"), strings("choice_texts"))),
                    answer=string("answer"), context=string("context"),
                    solution=tuple(strings("solution")))
  return RationaleRecord(
      example=example, rationale=string("rationale"),
      teacher_answer=teacher_answer[0] if teacher_answer else None,
      correct=bool(feature["correct"].int64_list.value[0]),
      sample_index=int(feature["sample_index"].int64_list.value[0]),
      teacher=string("teacher"), prompt_style=string("prompt_style"),
      teacher_answer_text=string("teacher_answer_text"))


# ---- files ------------------------------------------------------------------------------------


def shard_name(index: int) -> str:
  return f"rationales-{index:05d}.tfrecord"


def sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def examples_fingerprint(examples: Sequence[Example]) -> str:
  """sha256 of the examples' content, in order (detects data edited between runs)."""
  digest = hashlib.sha256()
  for example in examples:
    digest.update(repr(dataclasses.astuple(example)).encode("utf-8"))
  return digest.hexdigest()


def _fsync_file(path: str) -> None:
  with open(path, "rb") as f:
    os.fsync(f.fileno())


def _write_json_atomic(path: str, data: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_manifest(cache_dir: str) -> dict:
  """The cache's manifest; a missing one fails naming the path and the command that writes it."""
  path = os.path.join(cache_dir, MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no rationale cache at {cache_dir!r} ({path} is missing): run "
                            "`python generate.py --config ... --config.cache_dir=...` first")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """`key: old -> new` for every setting that differs (keys missing on one side included)."""
  return [f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
          for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def sum_counts(counts: Sequence[Mapping[str, int]]) -> dict[str, int]:
  total: dict[str, int] = {}
  for count in counts:
    for key, value in count.items():
      total[key] = total.get(key, 0) + int(value)
  return total


class CacheWriter:
  """Writes one cache directory shard by shard, resuming where an earlier run stopped.

  Usage: `done = writer.start_split(split, examples, num_shards)`, then `write_shard` for every
  shard index not in `done`, then `finish_split(split)`.
  """

  def __init__(self, cache_dir: str, config: Mapping[str, Any], *, read_only: bool = False):
    """Opens (or creates) `cache_dir` for a run producing records with `config`.

    Args:
      cache_dir: the cache directory.
      config: the producing settings (compared with an existing manifest's).
      read_only: track progress in memory only and write nothing: processes other than 0 of a
        multi-host job, which must skip the same completed shards as process 0.

    Raises:
      CacheConfigMismatchError: the directory holds a cache made with other settings.
    """
    if not cache_dir:
      raise ValueError("config.cache_dir is empty: set --config.cache_dir=<dir> for the cache")
    self.cache_dir = cache_dir
    self.read_only = read_only
    self.config = json.loads(json.dumps(dict(config)))  # JSON-normalised (tuples -> lists)
    self._manifest_path = os.path.join(cache_dir, MANIFEST)
    if os.path.exists(self._manifest_path):
      self.manifest = read_manifest(cache_dir)
      differences = diff_configs(self.manifest.get("config", {}), self.config)
      if differences:
        raise CacheConfigMismatchError(
            f"the cache in {cache_dir!r} was produced with different settings: "
            + "; ".join(differences)
            + ". Use another config.cache_dir, delete this one, or restore those settings.")
    else:
      self.manifest = {"format_version": FORMAT_VERSION, "config": self.config, "splits": {},
                       "counts": {}}
      self._save()

  def _save(self) -> None:
    if self.read_only:
      return
    os.makedirs(self.cache_dir, exist_ok=True)
    _write_json_atomic(self._manifest_path, self.manifest)

  def _split_dir(self, split: str) -> str:
    return os.path.join(self.cache_dir, split)

  def start_split(self, split: str, examples: Sequence[Example], num_shards: int, *,
                  skipped_records: int = 0) -> set[int]:
    """Registers a split and returns the indices of its shards that are complete and verified.

    `skipped_records` (bad records the loader dropped) is noted in the split's manifest entry.
    """
    split_dir = self._split_dir(split)
    if not self.read_only:
      os.makedirs(split_dir, exist_ok=True)
      for name in os.listdir(split_dir):
        if name.endswith(".tmp"):  # left by a killed run: never complete, never listed
          os.remove(os.path.join(split_dir, name))
    fingerprint = examples_fingerprint(examples)
    entry = self.manifest["splits"].get(split)
    if entry is not None and entry.get("examples_sha256") != fingerprint:
      raise CacheConfigMismatchError(
          f"the examples of split {split!r} differ from those the cache in {self.cache_dir!r} was "
          "started with (the data changed); use another config.cache_dir or delete this one")
    if entry is None:
      entry = {"num_examples": len(examples), "num_shards": num_shards,
               "examples_sha256": fingerprint, "bad_records_skipped": skipped_records,
               "complete": False, "shards": {}}
      self.manifest["splits"][split] = entry
    done = set()
    for key, shard in list(entry["shards"].items()):
      path = os.path.join(split_dir, shard["file"])
      if os.path.exists(path) and sha256_file(path) == shard["sha256"]:
        done.add(int(key))
      else:  # missing or corrupt: forget it, it will be regenerated
        del entry["shards"][key]
        entry["complete"] = False
    self._update_counts(split)
    self._save()
    return done

  def write_shard(self, split: str, index: int, records: Sequence[RationaleRecord],
                  counts: Mapping[str, int]) -> None:
    """Writes shard `index` of `split` atomically and records it in the manifest."""
    checksum = ""
    if not self.read_only:
      final = os.path.join(self._split_dir(split), shard_name(index))
      tmp = final + ".tmp"
      with tf.io.TFRecordWriter(tmp) as writer:
        for record in records:
          writer.write(serialize_record(record))
      _fsync_file(tmp)
      os.replace(tmp, final)
      checksum = sha256_file(final)
    self.manifest["splits"][split]["shards"][str(index)] = {
        "file": shard_name(index), "records": len(records), "sha256": checksum,
        "counts": dict(counts)}
    self._update_counts(split)
    self._save()

  def finish_split(self, split: str) -> dict[str, int]:
    """Marks a split complete (all its shards written) and returns its total counts."""
    entry = self.manifest["splits"][split]
    missing = sorted(set(range(entry["num_shards"])) - {int(k) for k in entry["shards"]})
    if missing:
      raise RuntimeError(f"split {split!r} still lacks shards {missing[:10]}")
    entry["complete"] = True
    self._save()
    return self.manifest["counts"][split]

  def _update_counts(self, split: str) -> None:
    shards = self.manifest["splits"][split]["shards"]
    self.manifest["counts"][split] = sum_counts([s["counts"] for s in shards.values()])


# ---- reading ------------------------------------------------------------------------------------


def shard_files(cache_dir: str, split: str) -> list[str]:
  """The split's shard files in shard order; the split must be complete."""
  manifest = read_manifest(cache_dir)
  entry = manifest.get("splits", {}).get(split)
  if entry is None:
    raise ValueError(f"the cache in {cache_dir!r} has no split {split!r}; it has "
                     f"{sorted(manifest.get('splits', {}))} (generate.py's teacher.splits)")
  if not entry.get("complete"):
    raise ValueError(f"split {split!r} of the cache in {cache_dir!r} is incomplete "
                     f"({len(entry['shards'])} of {entry['num_shards']} shards): rerun generate.py "
                     "with the same config to finish it")
  return [os.path.join(cache_dir, split, entry["shards"][str(k)]["file"])
          for k in range(entry["num_shards"])]


def read_records(cache_dir: str, split: str) -> Iterator[RationaleRecord]:
  """Every record of a complete split, in shard order (host-local, deterministic)."""
  files = shard_files(cache_dir, split)
  if not files:
    return
  for serialized in tf.data.TFRecordDataset(files).as_numpy_iterator():
    yield parse_record(serialized)
