"""Local files (data.source=local): which file serves which split of which task.

The files are named as the datasets' own releases name them: ARC's "ARC-Easy-Train.jsonl" /
"ARC-Challenge-Dev.jsonl" in AI2's nested layout, StrategyQA's single "strategyqa_train.json",
CommonsenseQA's "train_rand_split.jsonl" / "dev_rand_split.jsonl", the hub's parquet shards.
"""

import json

import pytest

from sciqa_jax import errors
from sciqa_jax.data.registry import get_task


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(row) + "\n" for row in rows))
  return path


def arc_rows(prefix, count, stem="Which is a liquid?"):
  """AI2's nested ARC layout, ids and stems distinct per prefix."""
  return [{"id": f"{prefix}-{i}",
           "question": {"stem": f"{stem} ({prefix} {i})",
                        "choices": [{"text": t, "label": l} for t, l in zip(("ice", "water",
                                                                             "steam"), "ABC")]},
           "answerKey": "B"} for i in range(count)]


def write_arc(directory, dataset, sizes):
  """ARC release files: `dataset`-Train/Dev/Test.jsonl, `sizes` examples each."""
  directory.mkdir(parents=True, exist_ok=True)
  for split_word, count in zip(("Train", "Dev", "Test"), sizes):
    write_jsonl(directory / f"{dataset}-{split_word}.jsonl",
                arc_rows(f"{dataset}-{split_word}", count))
  return directory


def strategyqa_rows(count, prefix="s"):
  return [{"qid": f"{prefix}{i}", "term": "Rock", "question": f"Can rock {i} float?",
           "answer": i % 2 == 0, "facts": ["Most rocks are dense."]} for i in range(count)]


def ids(examples):
  return [e.id for e in examples]


# ---- a file serves only the split its name names ------------------------------------------------


def test_file_named_for_train_is_refused_for_other_splits(tmp_path):
  path = tmp_path / "strategyqa_train.json"
  path.write_text(json.dumps(strategyqa_rows(3)))
  task = get_task("strategyqa")
  assert ids(task.load("train_full", source="local", path=str(path))) == ["s0", "s1", "s2"]
  with pytest.raises(errors.DataError) as info:
    task.load("test", source="local", path=str(path))
  message = str(info.value)
  assert str(path) in message and "'test'" in message and "train split" in message
  assert str(tmp_path / "strategyqa_{split}.json") in message  # the fix: a pattern per split
  assert "\n" not in message


@pytest.mark.parametrize("name", ["strategyqa.json", "export.json"])
def test_file_naming_no_split_serves_no_split(tmp_path, name):
  path = tmp_path / name
  path.write_text(json.dumps(strategyqa_rows(2)))
  for split in ("train", "test"):
    with pytest.raises(errors.DataError, match="does not say which split") as info:
      get_task("strategyqa").load(split, source="local", path=str(path))
    assert str(path) in str(info.value) and "{split}" in str(info.value)


def test_dev_file_serves_validation_only(tmp_path):
  path = write_jsonl(tmp_path / "ARC-Challenge-Dev.jsonl", arc_rows("d", 2))
  task = get_task("arc_challenge")
  assert ids(task.load("validation", source="local", path=str(path))) == ["d-0", "d-1"]
  with pytest.raises(errors.DataError, match="'train'"):
    task.load("train", source="local", path=str(path))


def test_file_of_another_dataset_is_refused(tmp_path):
  path = write_jsonl(tmp_path / "ARC-Easy-Train.jsonl", arc_rows("e", 2))
  with pytest.raises(errors.DataError, match="another dataset.*ARC-Easy"):
    get_task("arc_challenge").load("train", source="local", path=str(path))
  assert len(get_task("arc_easy").load("train", source="local", path=str(path))) == 2


# ---- {split} patterns -----------------------------------------------------------------------------


def test_split_pattern_takes_aliases_in_any_case(tmp_path):
  write_arc(tmp_path, "ARC-Easy", (3, 2, 1))
  task, pattern = get_task("arc_easy"), str(tmp_path / "ARC-Easy-{split}.jsonl")
  assert ids(task.load("train", source="local", path=pattern))[0] == "ARC-Easy-Train-0"
  assert ids(task.load("validation", source="local", path=pattern)) == \
      ["ARC-Easy-Dev-0", "ARC-Easy-Dev-1"]  # {split} = Dev for validation
  assert ids(task.load("test", source="local", path=pattern)) == ["ARC-Easy-Test-0"]
  # Lower-case release names and {split} in a directory's name.
  (tmp_path / "valid").mkdir()
  write_jsonl(tmp_path / "valid" / "rows.jsonl", arc_rows("v", 1))
  assert ids(task.load("validation", source="local", path=str(tmp_path / "{split}" / "rows.jsonl"))
             ) == ["v-0"]


def test_split_pattern_ambiguous_or_missing(tmp_path):
  write_jsonl(tmp_path / "dev.jsonl", arc_rows("a", 1))
  write_jsonl(tmp_path / "validation.jsonl", arc_rows("b", 1))
  task, pattern = get_task("qasc"), str(tmp_path / "{split}.jsonl")
  with pytest.raises(errors.DataError, match="several paths") as info:
    task.load("validation", source="local", path=pattern)
  assert "dev.jsonl" in str(info.value) and "validation.jsonl" in str(info.value)
  with pytest.raises(errors.MissingFileError, match="'test'"):
    task.load("test", source="local", path=pattern)


# ---- a directory's files must belong to the task --------------------------------------------------


def test_directory_keeps_only_the_tasks_files(tmp_path):
  write_arc(tmp_path, "ARC-Easy", (5, 2, 2))
  write_arc(tmp_path, "ARC-Challenge", (3, 1, 2))
  challenge, easy = get_task("arc_challenge"), get_task("arc_easy")
  train = challenge.load("train", source="local", path=str(tmp_path))
  assert ids(train) == [f"ARC-Challenge-Train-{i}" for i in range(3)]
  assert ids(challenge.load("validation", source="local", path=str(tmp_path))) == \
      ["ARC-Challenge-Dev-0"]
  assert len(easy.load("train", source="local", path=str(tmp_path))) == 5
  assert len(easy.load("test", source="local", path=str(tmp_path))) == 2


def test_commonsense_qa_release_directory(tmp_path):
  write_arc(tmp_path, "ARC-Easy", (1, 1, 1))  # "Dev" would name validation for any task
  csqa = [{"answerKey": "A", "id": f"c{i}", "question": {
      "question_concept": "door", "stem": f"Where is door {i}?",
      "choices": [{"label": l, "text": t} for l, t in zip("ABC", ["bank", "mall", "park"])]}}
      for i in range(2)]
  write_jsonl(tmp_path / "train_rand_split.jsonl", csqa)
  write_jsonl(tmp_path / "dev_rand_split.jsonl", csqa[1:])
  task = get_task("commonsense_qa")
  assert ids(task.load("train", source="local", path=str(tmp_path))) == ["c0", "c1"]
  assert ids(task.load("validation", source="local", path=str(tmp_path))) == ["c1"]


def test_directory_with_no_or_several_candidates_lists_them(tmp_path):
  write_arc(tmp_path, "ARC-Easy", (1, 1, 1))
  with pytest.raises(errors.MissingFileError) as info:
    get_task("arc_challenge").load("train", source="local", path=str(tmp_path))
  message = str(info.value)
  assert "'train'" in message and "ARC-Challenge" in message and "ARC-Easy-Train.jsonl" in message
  # StrategyQA's full release holds three files whose names say train.
  for name in ("strategyqa_train.json", "strategyqa_train_filtered.json",
               "strategyqa_train_paragraphs.json"):
    (tmp_path / name).write_text(json.dumps(strategyqa_rows(1)))
  with pytest.raises(errors.DataError, match="several files") as info:
    get_task("strategyqa").load("train", source="local", path=str(tmp_path))
  assert "strategyqa_train_filtered.json" in str(info.value)
  assert len(get_task("strategyqa").load(
      "train", source="local", path=str(tmp_path / "strategyqa_train.json"))) == 1


def test_hub_layout_directory_named_for_the_dataset(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  def hub_rows(prefix, count):
    return [{"id": f"{prefix}{i}", "question": f"Q {prefix}{i}?", "answerKey": "A",
             "choices": {"text": ["x", "y"], "label": ["A", "B"]}} for i in range(count)]

  directory = tmp_path / "ARC-Challenge"
  directory.mkdir()
  pq.write_table(pa.Table.from_pylist(hub_rows("a", 2)), directory / "train-00000-of-00002.parquet")
  pq.write_table(pa.Table.from_pylist(hub_rows("b", 1)), directory / "train-00001-of-00002.parquet")
  pq.write_table(pa.Table.from_pylist(hub_rows("t", 1)), directory / "test-00000-of-00001.parquet")
  task = get_task("arc_challenge")
  assert ids(task.load("train", source="local", path=str(directory))) == ["a0", "a1", "b0"]
  assert ids(task.load("test", source="local", path=str(directory))) == ["t0"]
  with pytest.raises(errors.MissingFileError):  # the folder is ARC-Challenge's, not ARC-Easy's
    get_task("arc_easy").load("train", source="local", path=str(directory))
  (directory / "train-00001-of-00002.parquet").unlink()
  with pytest.raises(errors.DataError, match="1 of the 2 shards"):
    task.load("train", source="local", path=str(directory))
