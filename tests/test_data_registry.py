"""The registry's contract with the scripts: user errors that name the setting, and
`load_splits`, which refuses splits that share examples."""

import json

import pytest

from sciqa_jax import errors
from sciqa_jax.config import base_config
from sciqa_jax.data import registry, synthetic
from sciqa_jax.data.registry import get_task, load_examples
from tests.test_data_local_files import arc_rows, write_arc, write_jsonl


def local_config(task, path):
  config = base_config()
  config.task, config.data.source, config.data.path = task, "local", str(path)
  return config


def assert_one_line(error):
  assert isinstance(error, errors.UserError) and "\n" not in str(error)


# ---- user errors ------------------------------------------------------------------------------


def test_unknown_task_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="registered tasks") as info:
    get_task("arc_eazy")
  assert "'arc_easy'" in str(info.value)  # the closest name is suggested
  assert_one_line(info.value)
  config = base_config()
  config.task = "nope"
  with pytest.raises(errors.ConfigError, match="task='nope'"):
    load_examples(config, "train")


def test_split_the_task_lacks_is_a_config_error(tmp_path):
  path = tmp_path / "strategyqa_train.json"
  path.write_text(json.dumps([{"qid": "s", "question": "Is ice cold?", "answer": True}]))
  for load in (lambda: get_task("strategyqa").load("dev", source="local", path=str(path)),
               lambda: load_examples(local_config("strategyqa", path), "dev"),
               lambda: get_task("science_demo").load("dev", source="builtin")):
    with pytest.raises(errors.ConfigError, match="valid splits") as info:
      load()
    assert "data.eval_split" in str(info.value)
    assert_one_line(info.value)


def test_source_the_task_lacks_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="data.source='tfds'") as info:
    get_task("sciq").load("train", source="tfds")
  assert "hf, local" in str(info.value)
  assert_one_line(info.value)


def test_missing_or_empty_local_path(tmp_path):
  with pytest.raises(errors.ConfigError, match="needs data.path"):
    get_task("arc_easy").load("train", source="local", path="")
  with pytest.raises(errors.MissingFileError, match="neither a file nor a directory") as info:
    load_examples(local_config("arc_easy", tmp_path / "nowhere"), "train")
  assert str(tmp_path / "nowhere") in str(info.value)
  assert_one_line(info.value)
  with pytest.raises(errors.MissingFileError) as info:  # an empty directory: names what it wants
    get_task("arc_easy").load("train", source="local", path=str(tmp_path))
  assert "ARC-Easy" in str(info.value)


def test_negative_max_examples_is_refused(tmp_path):
  write_arc(tmp_path, "ARC-Easy", (4, 1, 1))
  task = get_task("arc_easy")
  assert len(task.load("train", source="local", path=str(tmp_path), max_examples=3)) == 3
  with pytest.raises(errors.ConfigError, match="data.max_examples=-1"):
    task.load("train", source="local", path=str(tmp_path), max_examples=-1)
  with pytest.raises(errors.ConfigError, match="data.max_examples"):
    get_task("coin_flip").load("train", source="builtin", max_examples=-2)


# ---- load_splits: disjoint splits -----------------------------------------------------------------


def test_load_splits_returns_each_split_once(tmp_path):
  write_arc(tmp_path, "ARC-Challenge", (3, 2, 1))
  config = local_config("arc_challenge", tmp_path)
  splits = registry.load_splits(config, ["train", "validation", "test", "train"])
  assert list(splits) == ["train", "validation", "test"]
  for name, split in splits.items():
    assert split == load_examples(config, name)
  assert len(splits["validation"].examples) == 2


def test_load_splits_refuses_a_shared_id(tmp_path):
  write_arc(tmp_path, "ARC-Easy", (3, 0, 0))
  leaked = arc_rows("ARC-Easy-Train", 2, stem="Another question")  # same ids, other text
  write_jsonl(tmp_path / "ARC-Easy-Dev.jsonl", leaked)
  with pytest.raises(errors.DataError) as info:
    registry.load_splits(local_config("arc_easy", tmp_path), ["train", "validation"])
  message = str(info.value)
  assert "'train' and 'validation'" in message and "share 2 example" in message
  assert "'ARC-Easy-Train-0'" in message
  assert_one_line(info.value)


def test_load_splits_refuses_a_shared_question(tmp_path):
  write_arc(tmp_path, "ARC-Easy", (3, 0, 0))
  train = [json.loads(line) for line in (tmp_path / "ARC-Easy-Train.jsonl").read_text().split("\n")
           if line]
  copy = json.loads(json.dumps(train[1]))
  copy["id"] = "new-id"
  copy["question"]["stem"] = "  " + copy["question"]["stem"].upper().replace(" ", "\t ") + " "
  copy["question"]["choices"].reverse()  # the same question, its choices listed in another order
  other = json.loads(json.dumps(train[2]))  # the same stem with other choices: another question
  other["id"], other["question"]["choices"][0]["text"] = "other-id", "lava"
  write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", [other, copy])
  config = local_config("arc_easy", tmp_path)
  with pytest.raises(errors.DataError, match="'train' and 'test' of task 'arc_easy' share 1 ") as info:
    registry.load_splits(config, ["train", "test"])
  assert "'new-id'" in str(info.value)
  write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", [other])
  assert len(registry.load_splits(config, ["train", "test"])["test"].examples) == 1


def test_one_file_for_two_splits_cannot_pass(tmp_path):
  path = tmp_path / "strategyqa_train.json"
  path.write_text(json.dumps([{"qid": f"s{i}", "question": f"Q{i}?", "answer": True}
                              for i in range(3)]))
  with pytest.raises(errors.DataError, match="holds the train split"):
    registry.load_splits(local_config("strategyqa", path), ["train", "test"])


@pytest.mark.parametrize("task", ["science_demo", "coin_flip", "last_letter_concatenation"])
def test_builtin_splits_are_disjoint(task):
  config = base_config()
  config.task = task
  splits = registry.load_splits(config, ["train", "validation", "test"])
  assert all(split.examples for split in splits.values())


def test_synthetic_split_of_question_partition():
  for split in synthetic.SPLIT_SIZES:
    examples = synthetic.last_letter_concatenation(split, seed=3, num_examples=50)
    assert {synthetic.split_of_question(e.question) for e in examples} == {split}
    assert len({e.question for e in examples}) == 50
