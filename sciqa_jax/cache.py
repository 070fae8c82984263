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
  * on restart, a shard counts as done only if the manifest lists it AND the file's sha256 and
    record count match; anything else (a shard renamed but not yet in the manifest, a truncated or
    edited file) is regenerated and overwritten, and stale `.tmp` files are deleted. A resumed run
    therefore ends with exactly the records an uninterrupted run writes;
  * the manifest is written only when its content changes, so rerunning generate.py on a complete
    cache reads it and writes nothing (a cache on a read-only file system stays usable).

Shard bytes are a pure function of the records: each `tf.train.Example` is serialised
deterministically (features in key order), so two runs, processes or machines that produce the
same records write byte-identical shards with the same sha256.

The manifest's `config` holds the settings that determine the records (`rationales.
producing_config`); a run whose settings differ is refused with the differing keys named, so one
cache never mixes two teachers or prompt styles. `splits[split]["examples_sha256"]` fingerprints
the loaded examples, catching data files edited between runs.

Several processes (generate.py on a pod slice, or with --num_processes; `CacheWriter(processes=,
mode=)`). Process 0 alone reads and writes the manifest; the others adopt its content at each sync
point (`processes.allgather`), so every process skips the same shards and sees the same counts.
Per split:
  1. start: process 0 deletes stale `.tmp` files, merges any process records a killed run left
     (below), verifies every listed shard and saves the manifest; then every process takes it.
     Nobody writes a shard before this point, so the cleaning never races a writer;
  2. shards, by `teacher.multiprocess`:
       replicas  every process runs its own teacher and writes the shards it owns, p, p + P, ...
                 (needs a cache_dir every host sees, e.g. NFS). Shard files are written exactly
                 as above (temp + fsync + rename); process 0 records its own in the manifest,
                 process p > 0 in its *process record* `<split>/process-<p:05d>.json` (the
                 producing config, the examples' fingerprint and its shards' entries, rewritten
                 atomically after each shard). No two processes write one file at once;
       sharded   one teacher spans every process's devices; every process runs every batch and
                 process 0 alone writes (the other hosts need not see the cache);
  3. collect (a barrier): process 0 verifies the shards the process records list, adds them to the
     manifest, saves it, and only then deletes the records; every process takes the manifest;
  4. finish: process 0 marks the split complete.
A SIGKILL anywhere leaves complete shard files, a valid manifest and valid process records; the
restart of all processes (any process count) merges the records a killed run left at step 1 and
redoes only the shards no one recorded, so the manifest ends as an uninterrupted run's. The entries
are the same whichever process wrote a shard and the manifest is written with sorted keys, so it is
byte-identical to a single-process run's. A user error (or any exception) in one process's step
is raised on every process at the next sync point (`run_together`) instead of leaving them waiting.

Readers use `read_records`: every record of a split, in shard order, on every host (the trainer
builds the same global batches on every host and each feeds its block of them). Readers trust
nothing on disk: every shard's sha256 and record count are checked against the manifest before its
records are used, and a damaged manifest or shard is an `errors.CorruptFileError` naming the file
(rerunning generate.py with the same config rewrites a damaged shard).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import tensorflow as tf
from google.protobuf.message import DecodeError

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
  example_proto = tf.train.Example(features=tf.train.Features(feature=features))
  # `feature` is a protobuf map, whose default serialisation order is the hash table's (it may
  # differ between processes); deterministic=True writes the keys sorted, so shards and their
  # checksums are reproducible.
  return example_proto.SerializeToString(deterministic=True)


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


def _canonical(data: Any) -> str:
  return json.dumps(data, sort_keys=True)


def _write_json_atomic(path: str, data: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_manifest(cache_dir: str) -> dict:
  """The cache's manifest.

  Raises:
    errors.MissingFileError: there is none (the message names the command that writes it).
    errors.CorruptFileError: it is not a JSON object (a damaged file: nothing in it can be
      trusted, so the fix is to delete it and regenerate the shards).
  """
  path = os.path.join(cache_dir, MANIFEST)
  if not os.path.exists(path):
    raise errors.MissingFileError(
        f"no rationale cache at {cache_dir!r} ({path} is missing): run "
        "`python generate.py --config ... --config.cache_dir=...` first")
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise _corrupt_manifest(path, f"it is not valid JSON ({e})") from None
  if not isinstance(manifest, dict) or not isinstance(manifest.get("splits", {}), dict):
    raise _corrupt_manifest(path, "it is not a JSON object with a \"splits\" object")
  return manifest


def _corrupt_manifest(path: str, what: str) -> errors.CorruptFileError:
  return errors.CorruptFileError(
      f"the rationale cache manifest {path} is damaged: {what}. Delete it and rerun generate.py "
      "with the same config, which regenerates the cache's shards")


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


MULTIPROCESS_MODES = ("replicas", "sharded")
PROCESS_RECORD = "process-{index:05d}.json"  # a replicas-mode process's completed shards


class SingleProcess:
  """The process group of a one-process run (`sharding.ProcessGroup` is a JAX job's)."""

  index, count = 0, 1

  def allgather(self, value: Any) -> list[Any]:
    return [value]


def _user_error_class(name: str) -> type:
  """The `errors.UserError` subclass called `name` (UserError itself if there is none)."""
  pending = [errors.UserError]
  while pending:
    cls = pending.pop()
    if cls.__name__ == name:
      return cls
    pending.extend(cls.__subclasses__())
  return errors.UserError


def run_together(processes, work: Callable[[], Any]) -> Any:
  """`work()` on this process, then a sync point: if any process's `work` raised, every process
  raises (the same user error, by kind and message), so one process's mistake ends the job with
  one line instead of leaving the others waiting at the next sync point until JAX times out."""
  error, failure = None, None
  try:
    result = work()
  except Exception as e:  # pylint: disable=broad-except  (raised below, on every process)
    error, result = e, None
    failure = [type(e).__name__, str(e), isinstance(e, errors.UserError)]
  failures = processes.allgather(failure)
  if error is not None:
    raise error
  for index, other in enumerate(failures):
    if other is not None:
      name, message, is_user_error = other
      if is_user_error:
        raise _user_error_class(name)(message)
      raise RuntimeError(f"process {index} of the job failed: {name}: {message}")
  return result


class CacheWriter:
  """Writes one cache directory shard by shard, resuming where an earlier run stopped, from one
  process or several (module doc, "Several processes").

  Usage: `done = writer.start_split(split, examples, num_shards)`; then
  `writer.collect_split(split, work)`, where `work()` calls `write_shard` for every shard index
  not in `done` that this process `owns`; then `finish_split(split)`. Every process of the job
  makes the same calls in the same order.
  """

  def __init__(self, cache_dir: str, config: Mapping[str, Any], *, read_only: bool = False,
               processes=None, mode: str = "replicas"):
    """Opens `cache_dir` for a run producing records with `config` (created by start_split).

    Args:
      cache_dir: the cache directory.
      config: the producing settings (compared with an existing manifest's).
      read_only: track progress in memory only and write nothing.
      processes: the job's processes (`index`, `count`, `allgather`, e.g.
        `sharding.ProcessGroup()`); default one process.
      mode: with several processes, "replicas" (each writes the shards it owns) or "sharded"
        (every process runs every shard, process 0 alone writes).

    Raises:
      CacheConfigMismatchError: the directory holds a cache made with other settings (on every
        process of the job).
    """
    if not cache_dir:
      raise errors.ConfigError("config.cache_dir is empty: set --config.cache_dir=<dir> for the "
                               "cache")
    if mode not in MULTIPROCESS_MODES:
      raise errors.ConfigError(f"teacher.multiprocess={mode!r}; expected one of "
                               f"{', '.join(MULTIPROCESS_MODES)}")
    self.cache_dir = cache_dir
    self.processes = processes or SingleProcess()
    self.mode = mode
    index = self.processes.index
    self.read_only = read_only or index != 0  # the manifest: process 0's alone
    self.writes_shards = not read_only and (index == 0 or mode == "replicas")
    self.config = json.loads(json.dumps(dict(config)))  # JSON-normalised (tuples -> lists)
    self._manifest_path = os.path.join(cache_dir, MANIFEST)
    # Written by the first start_split: opening a cache creates nothing, so a run that fails
    # before its first split leaves no stub directory behind.
    self.manifest = {"format_version": FORMAT_VERSION, "config": self.config, "splits": {},
                     "counts": {}}
    self._saved = None
    self._mine: dict[str, dict] = {}  # {split: shards this process recorded} (other replicas)
    # Only process 0 reads the directory; the others adopt its manifest at each sync point
    # (with sharded teachers their hosts need not see the cache at all).
    run_together(self.processes, self._open if index == 0 else lambda: None)

  def _open(self) -> None:
    if not os.path.exists(self._manifest_path):
      return
    self.manifest = read_manifest(self.cache_dir)
    differences = diff_configs(self.manifest.get("config", {}), self.config)
    if differences:
      raise CacheConfigMismatchError(
          f"the cache in {self.cache_dir!r} was produced with different settings: "
          + "; ".join(differences)
          + ". Use another config.cache_dir, delete this one, or restore those settings.")
    self._saved = _canonical(self.manifest)

  def _save(self) -> None:
    """Writes the manifest if its content changed since it was last read or written."""
    if self.read_only or _canonical(self.manifest) == self._saved:
      return
    os.makedirs(self.cache_dir, exist_ok=True)
    _write_json_atomic(self._manifest_path, self.manifest)
    self._saved = _canonical(self.manifest)

  def _split_dir(self, split: str) -> str:
    return os.path.join(self.cache_dir, split)

  def _share_manifest(self) -> None:
    """Every process takes process 0's manifest (a sync point)."""
    manifest = self.processes.allgather(self.manifest if self.processes.index == 0 else None)[0]
    if self.processes.index != 0:
      self.manifest = manifest

  def owns(self, shard: int) -> bool:
    """Whether this process explains `shard`: replicas take shards p, p + P, ...; a sharded
    teacher needs every process on every shard."""
    if self.mode == "sharded":
      return True
    return shard % self.processes.count == self.processes.index

  def start_split(self, split: str, examples: Sequence[Example], num_shards: int, *,
                  skipped_records: int = 0) -> set[int]:
    """Registers a split and returns the indices of its shards that are complete and verified
    (the same set on every process: process 0's).

    `skipped_records` (bad records the loader dropped) is noted in the split's manifest entry.
    """
    def start():
      if self.processes.index == 0:
        self._start_split(split, examples, num_shards, skipped_records)

    run_together(self.processes, start)
    self._share_manifest()
    self._mine[split] = {}  # process 0 has merged and deleted any earlier record
    return {int(k) for k in self.manifest["splits"][split]["shards"]}

  def _start_split(self, split: str, examples: Sequence[Example], num_shards: int,
                   skipped_records: int) -> None:
    split_dir = self._split_dir(split)
    fingerprint = examples_fingerprint(examples)
    entry = self.manifest["splits"].get(split)
    if entry is not None and entry.get("examples_sha256") != fingerprint:
      raise CacheConfigMismatchError(
          f"the examples of split {split!r} differ from those the cache in {self.cache_dir!r} was "
          "started with (the data changed); use another config.cache_dir or delete this one")
    if not self.read_only:
      if not os.path.isdir(split_dir):
        os.makedirs(split_dir)
      for name in os.listdir(split_dir):
        # Left by a killed run: never complete, never listed. No other process writes yet (they
        # wait for this process's manifest).
        if name.endswith(".tmp"):
          os.remove(os.path.join(split_dir, name))
    if entry is None:
      entry = {"num_examples": len(examples), "num_shards": num_shards,
               "examples_sha256": fingerprint, "bad_records_skipped": skipped_records,
               "complete": False, "shards": {}}
      self.manifest["splits"][split] = entry
    records, _ = self._merge_process_records(split)  # a killed multi-process run's last shards
    for key, shard in list(entry["shards"].items()):
      try:
        read_shard(os.path.join(split_dir, shard["file"]), shard)
      except errors.CorruptFileError as e:  # missing or damaged: forget it, it will be redone
        logging.warning("%s; regenerating it", e)
        del entry["shards"][key]
        entry["complete"] = False
    self._update_counts(split)
    self._save()
    self._remove(records)

  def _process_record_path(self, split: str) -> str:
    return os.path.join(self._split_dir(split), PROCESS_RECORD.format(index=self.processes.index))

  def _merge_process_records(self, split: str) -> tuple[list[str], set[str]]:
    """Adds the shards listed by the split's process records (of this run or a killed one) to
    the manifest, unverified (callers verify); returns the record files, which the caller
    deletes once the manifest holding their shards is saved, and the shard keys added."""
    split_dir = self._split_dir(split)
    if self.read_only or not os.path.isdir(split_dir):
      return [], set()
    entry = self.manifest["splits"][split]
    paths = sorted(os.path.join(split_dir, name) for name in os.listdir(split_dir)
                   if name.startswith("process-") and name.endswith(".json"))
    added = set()
    for path in paths:
      try:
        with open(path, encoding="utf-8") as f:
          record = json.load(f)
        if record["config"] != self.config or \
            record["examples_sha256"] != entry["examples_sha256"]:
          continue  # another config's leftovers: its shards are redone
        shards = dict(record["shards"])
      except (OSError, ValueError, KeyError, TypeError) as e:
        logging.warning("ignoring the damaged process record %s (%s): its shards are redone",
                        path, e)
        continue
      for key, info in shards.items():
        if int(key) < entry["num_shards"]:
          entry["shards"][key] = info
          added.add(key)
    return paths, added

  def _remove(self, paths: Sequence[str]) -> None:
    for path in paths:
      try:
        os.remove(path)
      except FileNotFoundError:
        pass

  def write_shard(self, split: str, index: int, records: Sequence[RationaleRecord],
                  counts: Mapping[str, int]) -> None:
    """Writes shard `index` of `split` atomically and records it: in the manifest (process 0),
    in this process's record (other replicas), or only in memory (sharded, other processes)."""
    checksum = ""
    if self.writes_shards:
      final = os.path.join(self._split_dir(split), shard_name(index))
      tmp = final + ".tmp"
      with tf.io.TFRecordWriter(tmp) as writer:
        for record in records:
          writer.write(serialize_record(record))
      _fsync_file(tmp)
      os.replace(tmp, final)
      checksum = sha256_file(final)
    entry = self.manifest["splits"][split]
    info = {"file": shard_name(index), "records": len(records), "sha256": checksum,
            "counts": dict(counts)}
    entry["shards"][str(index)] = info
    self._update_counts(split)
    self._save()
    if self.writes_shards and self.processes.index != 0:
      mine = self._mine.setdefault(split, {})
      mine[str(index)] = info
      _write_json_atomic(self._process_record_path(split), {
          "config": self.config, "examples_sha256": entry["examples_sha256"], "shards": mine})

  def collect_split(self, split: str, work: Callable[[], Any]) -> None:
    """Runs `work()` (this process's `write_shard` calls for `split`), then waits for every
    process: process 0 adds the other replicas' shards to the manifest, verified, and every
    process takes that manifest. An error in any process's `work` is raised on all of them."""
    run_together(self.processes, work)
    if self.processes.count == 1:
      return
    if self.mode == "replicas":
      run_together(self.processes,
                   lambda: self._merge_split(split) if self.processes.index == 0 else None)
    self._share_manifest()

  def _merge_split(self, split: str) -> None:
    records, added = self._merge_process_records(split)
    entry = self.manifest["splits"][split]
    for key in sorted(added, key=int):
      shard = entry["shards"][key]
      try:
        read_shard(os.path.join(self._split_dir(split), shard["file"]), shard)
      except errors.CorruptFileError as e:  # finish_split names what is missing
        logging.warning("%s; it is redone by the next run", e)
        del entry["shards"][key]
    self._update_counts(split)
    self._save()
    self._remove(records)

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


_REPAIR = "rerun generate.py with the same config, which rewrites it"


def tfrecord_payloads(data: bytes) -> list[bytes] | None:
  """The records of a TFRecord file's bytes, or None if the framing is broken (truncated).

  Each record is framed as: uint64 length, uint32 CRC of the length, the bytes, uint32 CRC of the
  bytes (little-endian). The CRCs are not checked: callers verify the whole file's sha256 first.
  """
  records, position = [], 0
  while position < len(data):
    if position + 12 > len(data):
      return None
    (length,) = struct.unpack_from("<Q", data, position)
    start = position + 12
    end = start + length
    if end + 4 > len(data):
      return None
    records.append(data[start:end])
    position = end + 4
  return records


def read_shard(path: str, info: Mapping[str, Any]) -> list[bytes]:
  """The serialized records of one shard, after checking it against its manifest entry `info`.

  The file is read once and the checked bytes are the ones parsed, so a file changing in between
  cannot slip through.

  Raises:
    errors.CorruptFileError: the file is missing, or its sha256 or record count differs from the
      manifest's (truncated, overwritten, or the manifest edited).
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise errors.CorruptFileError(f"rationale cache shard {path} is missing: "
                                  f"{_REPAIR}") from None
  if hashlib.sha256(data).hexdigest() != info.get("sha256"):
    raise errors.CorruptFileError(
        f"rationale cache shard {path} is damaged (truncated or overwritten: its sha256 differs "
        f"from the manifest's): {_REPAIR}")
  payloads = tfrecord_payloads(data)
  if payloads is None or len(payloads) != info.get("records"):
    found = "unreadable TFRecord framing" if payloads is None else f"{len(payloads)} records"
    raise errors.CorruptFileError(
        f"rationale cache shard {path} holds {found} but the manifest lists "
        f"{info.get('records')}: {_REPAIR}")
  return payloads


def _shards(cache_dir: str, split: str) -> list[tuple[str, dict]]:
  """(path, manifest entry) of every shard of a complete split, in shard order."""
  manifest = read_manifest(cache_dir)
  entry = manifest.get("splits", {}).get(split)
  if entry is None:
    raise errors.DataError(f"the cache in {cache_dir!r} has no split {split!r}; it has "
                           f"{sorted(manifest.get('splits', {}))} (generate.py's teacher.splits)")
  try:
    if not entry["complete"]:
      raise errors.DataError(
          f"split {split!r} of the cache in {cache_dir!r} is incomplete ({len(entry['shards'])} "
          f"of {entry['num_shards']} shards): rerun generate.py with the same config to finish it")
    infos = [entry["shards"][str(k)] for k in range(entry["num_shards"])]
    return [(os.path.join(cache_dir, split, info["file"]), info) for info in infos]
  except (KeyError, TypeError) as e:
    raise _corrupt_manifest(os.path.join(cache_dir, MANIFEST),
                            f"split {split!r} lacks the entry {e}") from None


def shard_files(cache_dir: str, split: str) -> list[str]:
  """The split's shard files in shard order, each checked against the manifest (`read_shard`);
  the split must be complete."""
  files = []
  for path, info in _shards(cache_dir, split):
    read_shard(path, info)
    files.append(path)
  return files


def read_records(cache_dir: str, split: str) -> Iterator[RationaleRecord]:
  """Every record of a complete split, in shard order (host-local, deterministic).

  Each shard is checked (`read_shard`) before any of its records is yielded.
  """
  for path, info in _shards(cache_dir, split):
    for index, serialized in enumerate(read_shard(path, info)):
      try:
        record = parse_record(serialized)
      except (DecodeError, IndexError, UnicodeDecodeError) as e:
        raise errors.CorruptFileError(
            f"rationale cache shard {path}: record {index} is not a rationale record ({e}): "
            f"{_REPAIR}") from None
      yield record
