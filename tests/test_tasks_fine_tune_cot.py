"""Fine-tune-CoT's 12 tasks from its own files (source local, data.path = a Fine-tune-CoT root).

Every split file the tests write has the real counts (`FINE_TUNE_COT_SPLIT_SIZES`) over short
synthetic rows in each task's real layout (tests/fixtures_fine_tune_cot.py): a loader that gets a
count wrong fails here.
"""

import json

import pytest

from sciqa_jax import errors
from sciqa_jax.config import base_config
from sciqa_jax.data import loaders, registry
from sciqa_jax.data.example import CHOICE, NUMBER, TEXT, YES_NO
from sciqa_jax.data.registry import (FINE_TUNE_COT_SPLIT_SIZES, FINE_TUNE_COT_TASKS, get_task,
                                     load_splits)
from tests.fixtures_fine_tune_cot import split_indices, synthetic_row, write_fine_tune_cot

ANSWER_TYPES = {
    "single_eq": NUMBER, "addsub": NUMBER, "multiarith": NUMBER, "gsm8k": NUMBER, "aqua": CHOICE,
    "svamp": NUMBER, "date_understanding": CHOICE, "tracking_shuffled_objects": CHOICE,
    "coin_flip": YES_NO, "last_letter_concatenation": TEXT, "commonsense_qa": CHOICE,
    "strategy_qa": YES_NO,
}
PAPER_SIZES = {  # Fine-tune-CoT's data/split/<key>__default.json, train / test
    "single_eq": (356, 152), "addsub": (276, 119), "multiarith": (420, 180), "gsm8k": (7473, 1319),
    "aqua": (10000, 254), "svamp": (700, 300), "date_understanding": (258, 111),
    "tracking_shuffled_objects": (525, 225), "coin_flip": (350, 150),
    "last_letter_concatenation": (350, 150), "commonsense_qa": (9741, 1221),
    "strategy_qa": (1603, 687),
}


def load(key, split, root, **kw):
  return get_task(key).load(split, source="local", path=str(root), **kw)


def record(key, root, index):
  """The example of record `index`, from whichever paper split holds it."""
  examples = load(key, "train_full", root) + load(key, "test", root)
  return next(e for e in examples if e.id == f"{key}-{index}")


def config_for(task, root):
  config = base_config()
  config.task, config.data.source, config.data.path = task, "local", str(root)
  return config


def test_registry_has_the_twelve_tasks_with_the_paper_sizes():
  assert FINE_TUNE_COT_TASKS == tuple(PAPER_SIZES)
  assert FINE_TUNE_COT_SPLIT_SIZES == PAPER_SIZES
  for key, answer_type in ANSWER_TYPES.items():
    task = get_task(key)
    assert task.name == key and task.answer_type == answer_type
    assert task.splits == ("train", "validation", "test", "train_full") and "local" in task.sources
    assert task.fine_tune_cot_sizes == PAPER_SIZES[key]


@pytest.mark.parametrize("key", list(PAPER_SIZES))
def test_each_task_reads_its_paper_split_with_exact_counts(tmp_path, key):
  split = write_fine_tune_cot(tmp_path, key)
  num_train, num_test = PAPER_SIZES[key]
  test = load(key, "test", tmp_path)
  train_full = load(key, "train_full", tmp_path)
  assert (len(train_full), len(test)) == (num_train, num_test)
  assert [e.id for e in test] == [f"{key}-{i}" for i in split["test"]]  # the split file's order
  assert [e.id for e in train_full] == [f"{key}-{i}" for i in split["train"]]
  splits = load_splits(config_for(key, tmp_path), ["train", "validation", "test"])  # disjoint
  train, validation = splits["train"].examples, splits["validation"].examples
  assert len(validation) == registry.validation_size(num_train) > 0
  assert len(train) + len(validation) == num_train
  assert {e.id for e in train} | {e.id for e in validation} == {e.id for e in train_full}
  task = get_task(key)
  for example in test[:20]:
    row = synthetic_row(key, int(example.id.rsplit("-", 1)[1]))
    assert task.is_correct(example.answer, example)
    if task.answer_type == CHOICE:
      assert "Answer choices" not in example.question and len(example.choices) >= 3
      assert example.answer in example.labels and example.answer == row["answer"]
    elif task.answer_type == NUMBER:
      assert "," not in example.answer and not example.answer.endswith(".0")
    else:
      assert example.question == row["question"] and example.choices == ()


def test_numbers_are_canonical_and_solutions_kept(tmp_path):
  write_fine_tune_cot(tmp_path, "gsm8k")
  write_fine_tune_cot(tmp_path, "single_eq")
  example = record("gsm8k", tmp_path, 3)
  assert synthetic_row("gsm8k", 3)["answer"] == "1,021" and example.answer == "1021"
  assert example.solution == ("He sold 1017 + 4 = 1021 cups.",)  # calculator annotation removed
  example = record("single_eq", tmp_path, 0)
  assert example.answer == "43" and example.solution == ()  # "43.0" in the file


def test_multiple_choice_stem_and_choices_come_from_the_question(tmp_path):
  write_fine_tune_cot(tmp_path, "date_understanding")
  example = record("date_understanding", tmp_path, 5)
  assert example.question == ("Today is day 5 of the year. What is the date tomorrow in "
                              "MM/DD/YYYY?\nWhich choice is true?")
  assert example.labels == tuple("ABCDEF") and example.choice_text("F") == "06/15/2015"
  assert example.answer == "F"


def test_validation_is_a_stable_held_out_slice(tmp_path):
  write_fine_tune_cot(tmp_path, "multiarith")
  first = load("multiarith", "validation", tmp_path)
  assert first == load("multiarith", "validation", tmp_path, seed=3)  # not the run's seed
  assert len(first) == 42 and first == sorted(first, key=lambda e: int(e.id.split("-")[1]))
  # The paper's whole train split overlaps validation: load_splits refuses the pair.
  with pytest.raises(errors.DataError, match="share 42 example"):
    load_splits(config_for("multiarith", tmp_path), ["train_full", "validation"])


def test_repeated_questions_stay_on_one_side_of_the_held_out_split(tmp_path):
  """Releases repeat some questions: both copies go to train or both to validation."""
  split, total = split_indices("multiarith")
  rows = [synthetic_row("multiarith", i) for i in range(total)]
  for i in split["train"][1::2]:  # every train question twice
    rows[i] = rows[split["train"][split["train"].index(i) - 1]]
  write_fine_tune_cot(tmp_path, "multiarith", rows=rows)
  splits = load_splits(config_for("multiarith", tmp_path), ["train", "validation"])  # no overlap
  train, validation = splits["train"].examples, splits["validation"].examples
  assert len(train) + len(validation) == 420 and len(validation) in (42, 43)
  assert len({e.question for e in validation}) * 2 == len(validation)


def test_validation_size_rule():
  assert [registry.validation_size(n) for n in (0, 1, 2, 258, 1603, 7473, 10000)] == [
      0, 0, 1, 26, 160, 500, 500]


def test_alias_loads_the_same_task(tmp_path):
  write_fine_tune_cot(tmp_path, "strategy_qa")
  assert get_task("strategyqa") is get_task("strategy_qa")
  assert registry.canonical_task_name("strategyqa") == "strategy_qa"
  assert get_task("singleeq") is get_task("single_eq") and get_task("aqua_rat") is get_task("aqua")
  examples = load("strategyqa", "test", tmp_path)
  assert len(examples) == 687 and {e.answer for e in examples} == {"yes", "no"}  # "Yes"/"No"
  assert examples[0].solution == ("The war lasted around 6 months. A llama's gestation is 11 "
                                  "months.",)  # the published rationale
  assert load_splits(config_for("strategyqa", tmp_path), ["test"])["test"].task.name == "strategy_qa"


def test_plain_array_and_top_level_dataset_dir_read_the_same(tmp_path):
  write_fine_tune_cot(tmp_path / "released", "addsub")
  write_fine_tune_cot(tmp_path / "plain", "addsub", released=False, dataset_dir="dataset")
  assert json.loads((tmp_path / "plain" / "dataset" / "addsub.json").read_text())[0] == (
      synthetic_row("addsub", 0))
  for split in ("train", "test"):
    assert load("addsub", split, tmp_path / "released") == load("addsub", split, tmp_path / "plain")


def test_builtin_stays_the_default_for_the_symbolic_tasks(tmp_path):
  for key in ("coin_flip", "last_letter_concatenation"):
    assert get_task(key).sources == ("builtin", "local")
    assert len(get_task(key).load("validation", source="builtin")) == 200
  write_fine_tune_cot(tmp_path, "last_letter_concatenation")
  example = load("last_letter_concatenation", "test", tmp_path)[0]
  assert example.answer == synthetic_row("last_letter_concatenation",
                                         int(example.id.rsplit("-", 1)[1]))["answer"]


# ---- the split file is checked, never guessed ----------------------------------------------------


def _drop_one(split):
  return {"train": split["train"][1:], "test": split["test"]}


def _out_of_range(split):
  return {"train": split["train"][:-1] + [10 ** 6], "test": split["test"]}


def _twice(split):
  return {"train": split["train"][:-1] + split["train"][:1], "test": split["test"]}


def _shared(split):
  return {"train": split["train"][:-1] + split["test"][:1], "test": split["test"]}


def _not_int(split):
  return {"train": split["train"][:-1] + ["7"], "test": split["test"]}


SPLIT_FILE_CASES = [
    (_drop_one, "419 train / 180 test indices, but Fine-tune-CoT's split of multiarith has 420 / 180"),
    (_out_of_range, "train index 1000000 is outside"),
    (_twice, "occurs twice"),
    (_shared, "train and test share 1 indices"),
    (_not_int, "train index '7' is not an integer"),
    (lambda split: {"train": split["train"]}, "no 'test' list of indices"),
]


@pytest.mark.parametrize("change,reason", SPLIT_FILE_CASES, ids=[r[:24] for _, r in SPLIT_FILE_CASES])
def test_bad_split_file_is_a_data_error_naming_it(tmp_path, change, reason):
  split, _ = split_indices("multiarith")
  write_fine_tune_cot(tmp_path, "multiarith", split=change(split))
  for name in ("train", "test"):
    with pytest.raises(errors.DataError) as info:
      load("multiarith", name, tmp_path)
    message = str(info.value)
    assert reason in message and str(tmp_path / "data/split/multiarith__default.json") in message
    assert "\n" not in message


def test_missing_or_mismatched_files(tmp_path):
  with pytest.raises(errors.MissingFileError, match="not a Fine-tune-CoT root") as info:
    load("single_eq", "train", tmp_path)  # an empty directory
  assert "data/split/single_eq__default.json" in str(info.value)
  write_fine_tune_cot(tmp_path, "svamp")
  (tmp_path / "data" / "split" / "svamp__default.json").unlink()
  with pytest.raises(errors.DataError, match="not its split file"):
    load("svamp", "test", tmp_path)
  write_fine_tune_cot(tmp_path, "svamp")
  (tmp_path / "data" / "dataset" / "svamp.json").unlink()
  with pytest.raises(errors.MissingFileError, match="no dataset file"):
    load("svamp", "test", tmp_path)
  write_fine_tune_cot(tmp_path, "svamp")
  write_fine_tune_cot(tmp_path, "svamp", dataset_dir="dataset")
  with pytest.raises(errors.DataError, match="two dataset files"):
    load("svamp", "test", tmp_path)


def test_dataset_key_must_match(tmp_path):
  write_fine_tune_cot(tmp_path, "addsub")
  path = tmp_path / "data" / "dataset" / "addsub.json"
  data = json.loads(path.read_text())
  data["metadata"]["dataset_key"] = "single_eq"
  path.write_text(json.dumps(data))
  with pytest.raises(errors.DataError, match="is the dataset 'single_eq'") as info:
    load("addsub", "test", tmp_path)
  assert str(path) in str(info.value)


def test_bad_records_name_the_record_and_field(tmp_path):
  split, total = split_indices("aqua")
  rows = [synthetic_row("aqua", i) for i in range(total)]
  bad = split["test"][3]
  rows[bad] = {**rows[bad], "answer": "F"}  # not among (A)-(E)
  write_fine_tune_cot(tmp_path, "aqua", rows=rows)
  with pytest.raises(loaders.BadRecordError) as info:
    load("aqua", "test", tmp_path)
  message = str(info.value)
  assert f"aqua.json: record {bad}" in message and "(answer)" in message and "'F'" in message
  examples, report = get_task("aqua").load_with_report("test", source="local", path=str(tmp_path),
                                                       skip_bad_records=True)
  assert len(examples) == 253 and report.num_skipped == 1
  assert len(load("aqua", "train_full", tmp_path)) == 10000  # the bad record is not in train


def test_sample_index_must_be_the_position(tmp_path):
  write_fine_tune_cot(tmp_path, "coin_flip")
  path = tmp_path / "data" / "dataset" / "coin_flip.json"
  data = json.loads(path.read_text())
  split, _ = split_indices("coin_flip")
  index = split["test"][0]
  data["data"][index]["sample_index"] = index + 1
  path.write_text(json.dumps(data))
  with pytest.raises(loaders.BadRecordError, match=f"record {index}: sample_index {index + 1}"):
    load("coin_flip", "test", tmp_path)


def test_release_files_still_serve_the_tasks_that_have_them(tmp_path):
  """A directory without Fine-tune-CoT files is read in the dataset's own release layout."""
  row = {"answerKey": "B", "id": "c1", "question": {"stem": "Where do grapes go?", "choices": [
      {"label": label, "text": text} for label, text in zip("ABC", ("mouth", "cart", "market"))]}}
  (tmp_path / "train_rand_split.jsonl").write_text(json.dumps(row) + "\n")
  (example,) = load("commonsense_qa", "train", tmp_path)
  assert example.id == "c1" and example.answer == "B"
