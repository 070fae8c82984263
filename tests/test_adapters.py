"""Published rationales imported by adapter (teacher.import_format): Fine-tune-CoT's completion
files and distilling step-by-step's llm/<split>_CoT_<k>.json, on fixture files in those layouts,
through the same correctness filter as a live teacher (wrong answers dropped, unparseable ones
counted); a file of another layout is a one-line DataError naming the file and the layout."""

import json
import logging

import pytest

from sciqa_jax import cache, errors, rationales
from sciqa_jax import config as config_lib
from sciqa_jax.config import base_config
from sciqa_jax.data import registry
from sciqa_jax.teacher import adapters, importer, make_teacher
from sciqa_jax.teacher.evaluation import evaluate_teacher
from tests.fixtures_fine_tune_cot import write_fine_tune_cot


def one_line(info, *names):
  message = str(info.value)
  assert isinstance(info.value, errors.UserError) and "\n" not in message, message
  assert all(name in message for name in names), message


# ---- Fine-tune-CoT completion files ----------------------------------------------------------


def completion(index, k, reasoning, answer=None, **extra):
  row = {"sample_index": index, "completion_index": k, "question": f"question {index}",
         "answer": "gold", "reasoning_prompt": f"Q: question {index}\nA: Let's think step by step.",
         "reasoning_completion": reasoning, "prompt": "...\nTherefore, the answer is", **extra}
  if answer is not None:
    row["completion"] = answer
  return row


@pytest.fixture(scope="module")
def multiarith(tmp_path_factory):
  """A Fine-tune-CoT root for multiarith (answer of record i: i + 43) and its split indices."""
  root = tmp_path_factory.mktemp("fine_tune_cot")
  split = write_fine_tune_cot(root, "multiarith")
  train = registry.get_task("multiarith").load("train", source="local", path=str(root))
  return root, split, [int(example.id.rpartition("-")[2]) for example in train]


def completion_file(path, multiarith, *, dataset_key="multiarith"):
  """Samples a-d of the train split: correct + wrong, unparseable, an answer only in the
  reasoning (and a run-on question), a duplicate; then a test sample and an unknown index."""
  _, split, train = multiarith
  a, b, c, d = train[:4]
  data = {
      str(a): [completion(a, 1, " 70 - 27 = 44? No.", " 44."),  # wrong, listed first
               completion(a, 0, f" Joan keeps {a + 70} - 27 = {a + 43}.",
                          f" {a + 43}.\n\nQ: an invented question")],
      str(b): [completion(b, 0, " Hmm.", " I am not sure.")],  # unparseable
      str(c): [completion(c, 0, f" So {c + 43}. Therefore, the answer is {c + 43}.\n\nQ: next\n"
                          "A: Let's think step by step. Therefore, the answer is 1.")],
      str(d): [completion(d, 0, " Count them.", f"{d + 43}"),
               completion(d, 1, " Count  them.", f"{d + 43}")],  # a duplicate rationale
      str(split["test"][0]): [completion(split["test"][0], 0, " Test.", " 1")],
      "99999": [completion(99999, 0, " Nowhere.", " 1")],
  }
  path.write_text(json.dumps({"metadata": {"dataset_key": dataset_key} if dataset_key else {},
                              "data": data}))
  return str(path)


def import_config(tmp_path, data_path, task, model, import_format, **data):
  config = base_config()
  config.task = task
  config.data.source = "local"
  config.data.path = str(data_path)
  config.teacher.backend = "import"
  config.teacher.model = str(model)
  config.teacher.import_format = import_format
  config.teacher.shard_size = 1000
  config.cache_dir = str(tmp_path / "cache")
  for key, value in data.items():
    config.data[key] = value
  return config


@pytest.mark.parametrize("dataset_key", ["multiarith", ""])
def test_fine_tune_cot_completions_filtered_and_counted(tmp_path, multiarith, caplog, dataset_key):
  root, split, train = multiarith
  model = completion_file(tmp_path / "D_multiarith.json", multiarith, dataset_key=dataset_key)
  config = import_config(tmp_path, root, "multiarith", model, "fine_tune_cot")
  with caplog.at_level(logging.WARNING):
    counts = rationales.build_cache(config, progress=False)["train"]
  assert (counts["samples"], counts["correct"], counts["wrong"], counts["unparseable"],
          counts["duplicates"], counts["kept"]) == (6, 3, 1, 1, 1, 3)
  assert counts["examples_with_kept"] == 3 and counts["examples"] == len(train)
  expected = [f"multiarith-{split['test'][0]}", "multiarith-99999"] if dataset_key else \
      [str(split["test"][0]), "99999"]
  assert counts["unmatched_ids"] == 2 and counts["first_unmatched_ids"] == expected
  records = {(r.example.id, r.sample_index): r for r in cache.read_records(config.cache_dir,
                                                                           "train")}
  a, _, c, d = train[:4]
  assert sorted(records) == sorted([(f"multiarith-{a}", 0), (f"multiarith-{c}", 0),
                                    (f"multiarith-{d}", 0)])
  first = records[(f"multiarith-{a}", 0)]  # completion_index 0, though listed second
  assert first.rationale == f"Joan keeps {a + 70} - 27 = {a + 43}."
  assert first.teacher_answer_text == f"{a + 43}." and first.teacher_answer == str(a + 43)
  assert records[(f"multiarith-{c}", 0)].rationale == f"So {c + 43}."  # cut at its answer
  assert {r.prompt_style for r in records.values()} == {"import"}
  manifest = cache.read_manifest(config.cache_dir)
  assert manifest["config"]["teacher.import_format"] == "fine_tune_cot"


def test_fine_tune_cot_of_another_dataset_matches_nothing(tmp_path, multiarith):
  root, _, _ = multiarith
  model = completion_file(tmp_path / "D_gsm8k.json", multiarith, dataset_key="gsm8k")
  config = import_config(tmp_path, root, "multiarith", model, "fine_tune_cot")
  with pytest.raises(errors.DataError) as info:
    rationales.build_cache(config, progress=False)
  one_line(info, "none of the ids in the import file", "gsm8k-", "multiarith-")


@pytest.mark.parametrize("content, problem", [
    ({"metadata": {}, "data": [{"question": "q", "answer": "1"}]}, "(a dataset file?)"),
    ([{"id": "x"}], "a JSON list without a \"data\" object"),
    ({"data": {"seven": []}}, "sample index 'seven'"),
    ({"data": {"3": [{"sample_index": 3, "question": "q"}]}}, "without \"reasoning_completion\""),
    ({"data": {"3": [{"sample_index": 4, "completion": "1"}]}}, "sample_index 4"),
    ("{\"id\": \"q1\", \"rationale\": \"r\"}\n{\"id\": \"q2\"}\n", "invalid JSON"),
])
def test_fine_tune_cot_layout_errors_name_the_file(tmp_path, content, problem):
  path = tmp_path / "completions.json"
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  with pytest.raises(errors.DataError) as info:
    importer.ImportedRationales(str(path), "fine_tune_cot")
  one_line(info, str(path), problem, "teacher.import_format='fine_tune_cot' expects "
           "Fine-tune-CoT's completion file")


def test_jsonl_format_refuses_a_completion_file_and_names_its_format(tmp_path, multiarith):
  model = completion_file(tmp_path / "D_multiarith.json", multiarith)
  with pytest.raises(errors.DataError) as info:
    importer.ImportedRationales(model, "jsonl")
  one_line(info, model, "teacher.import_format='fine_tune_cot'")
  llm = tmp_path / "train_CoT_0.json"
  llm.write_text(json.dumps(["So the answer is (a)."]))
  with pytest.raises(errors.DataError) as info:
    importer.ImportedRationales(str(llm), "jsonl")
  one_line(info, str(llm), "teacher.import_format='step_by_step'")


# ---- distilling step-by-step's llm/ files -----------------------------------------------------


CSQA_TEXTS = ("mouth", "grocery cart", "super market", "fruit basket", "fruit market")


def csqa_row(i, answer):
  return {"id": f"csqa-{i}", "answerKey": answer, "question": {
      "stem": f"Where would you put grapes number {i} just before checking out?",
      "choices": [{"label": label, "text": text} for label, text in zip("ABCDE", CSQA_TEXTS)]}}


RUN_ON = ("\n\nQ: What do people use to absorb extra ink from a fountain pen?\nAnswer Choices:\n"
          "(a) shirt pocket\n(b) calligrapher's hand\n(c) inkwell\n(d) desk drawer\n(e) blotter\n"
          "A: The answer must be used to absorb extra ink. So the answer is (e) blotter.")
# Completions aligned with csqa-0 .. csqa-4 (gold B, B, C, D, E).
LLM_FILES = [
    [" Grapes are put in a cart before paying. So the answer is (b) grocery cart." + RUN_ON,
     " You eat grapes. So the answer is (a) mouth.\n\nQ: Another?",  # wrong
     " I cannot decide between them." + RUN_ON.replace(" So the answer is (e) blotter.", "")],
    [" Baskets hold fruit. So the answer is (d) fruit basket.",
     " A market sells fruit. So the answer is (e) fruit market. Q: invented A: (a)"],
]


@pytest.fixture
def csqa(tmp_path):
  """CommonsenseQA release files (5 train questions) and an llm/ directory for them."""
  data = tmp_path / "csqa"
  data.mkdir()
  rows = [csqa_row(i, answer) for i, answer in enumerate("BBCDE")]
  (data / "train_rand_split.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  llm = tmp_path / "cqa" / "llm"
  llm.mkdir(parents=True)
  for k, completions in enumerate(LLM_FILES):
    (llm / f"train_CoT_{k}.json").write_text(json.dumps(completions))
  return data, llm


def test_step_by_step_completions_cut_filtered_and_counted(tmp_path, csqa):
  data, llm = csqa
  for model in (llm, llm.parent):  # the llm/ directory, or the dataset directory holding it
    config = import_config(tmp_path, data / "{split}_rand_split.jsonl", "commonsense_qa", model,
                           "step_by_step")
    config.cache_dir = str(tmp_path / f"cache-{model.name}")
    counts = rationales.build_cache(config, progress=False)["train"]
    assert (counts["samples"], counts["correct"], counts["wrong"], counts["unparseable"],
            counts["kept"]) == (5, 3, 1, 1, 3)
    assert counts["unmatched_ids"] == 0
    records = {r.example.id: r for r in cache.read_records(config.cache_dir, "train")}
    assert sorted(records) == ["csqa-0", "csqa-3", "csqa-4"]
    assert records["csqa-0"].rationale == "Grapes are put in a cart before paying."
    assert records["csqa-0"].teacher_answer_text == "(b) grocery cart."
    assert records["csqa-4"].teacher_answer_text == "(e) fruit market."
    assert all("Q:" not in r.rationale for r in records.values())


def test_step_by_step_truncated_split_and_position_errors(tmp_path, csqa):
  data, llm = csqa
  path = data / "{split}_rand_split.jsonl"
  config = import_config(tmp_path, path, "commonsense_qa", llm, "step_by_step", max_examples=3)
  counts = rationales.build_cache(config, progress=False)["train"]
  assert counts["samples"] == 3 and counts["first_unmatched_ids"] == ["train#3", "train#4"]

  (llm / "train_CoT_1.json").unlink()  # 3 completions for 5 questions: another split's file
  config = import_config(tmp_path, path, "commonsense_qa", llm, "step_by_step")
  config.cache_dir = str(tmp_path / "whole-split")
  with pytest.raises(errors.DataError) as info:
    rationales.build_cache(config, progress=False)
  one_line(info, "train_CoT_0.json", "3 completions for the 5 examples of split 'train'")
  assert not (tmp_path / "whole-split").exists()  # refused before anything is written

  (llm / "train_CoT_2.json").write_text(json.dumps(["x", "y"]))
  with pytest.raises(errors.DataError) as info:
    rationales.build_cache(config, progress=False)
  one_line(info, "train_CoT_1.json is missing")

  (llm / "train_CoT_2.json").rename(llm / "train_CoT_1.json")
  (llm / "train_CoT_1.json").write_text(json.dumps({"0": "So the answer is (b)."}))
  with pytest.raises(errors.DataError) as info:
    rationales.build_cache(config, progress=False)
  one_line(info, "train_CoT_1.json", "a JSON dict", "teacher.import_format='step_by_step' "
           "expects distilling step-by-step's llm/<split>_CoT_<k>.json")


def test_step_by_step_refuses_skipped_records_and_missing_files(tmp_path, csqa):
  data, llm = csqa
  path = data / "{split}_rand_split.jsonl"
  with open(data / "train_rand_split.jsonl", "a") as f:
    f.write(json.dumps({**csqa_row(5, "B"), "answerKey": ""}) + "\n")
  config = import_config(tmp_path, path, "commonsense_qa", llm, "step_by_step",
                         skip_bad_records=True)
  with pytest.raises(errors.DataError) as info:
    rationales.build_cache(config, progress=False)
  one_line(info, "align with split 'train' by position", "1 of its records were skipped")

  config = import_config(tmp_path, path, "commonsense_qa", tmp_path / "nowhere",
                         "step_by_step")
  with pytest.raises(errors.MissingFileError) as info:
    rationales.build_cache(config, progress=False)
  one_line(info, "teacher.model=", "nowhere", "llm/ directory")
  assert not (tmp_path / "cache").exists()
  config = import_config(tmp_path, path, "commonsense_qa", llm, "step_by_step")
  config.teacher.splits = ("validation",)
  (data / "dev_rand_split.jsonl").write_text(json.dumps(csqa_row(9, "A")) + "\n")
  with pytest.raises(errors.MissingFileError) as info:
    rationales.build_cache(config, progress=False)
  one_line(info, "no valid_CoT_0.json for split 'validation'")


@pytest.mark.parametrize("text, value", [
    ("(12 - 5)", "7"), ("( 4.5 * 2 ).", "9"), ("(10 / 4)", "2.5"), ("-(3 + 4)", "-7"),
    ("((2 + 3) * 4)", "20"), ("12", None), ("(b) stone", None), ("(1 / 0)", None),
    ("(2 ** 8)", None), ("", None),
])
def test_evaluate_arithmetic(text, value):
  assert adapters.evaluate_arithmetic(text) == value


def test_step_by_step_output_svamp_and_without_answer():
  out = adapters.step_by_step_output(
      " Jack had 12 pens and gave away 5. The answer is (12 - 5).\n\nQ: Invented? A: (1 + 1)")
  assert (out.rationale, out.answer_text) == ("Jack had 12 pens and gave away 5.", "7")
  out = adapters.step_by_step_output(" Nothing concluded.\nQ: next")
  assert (out.rationale, out.answer_text) == ("Nothing concluded.", "")
  task = registry.get_task("svamp")
  assert task.parse_answer(out.answer_text, None) is None  # counted unparseable


def test_evaluate_teacher_binds_a_step_by_step_import(csqa):
  data, llm = csqa
  task = registry.get_task("commonsense_qa")
  examples = task.load("train", source="local", path=str(data / "{split}_rand_split.jsonl"))
  config = base_config().teacher
  config.backend, config.model, config.import_format = "import", str(llm), "step_by_step"
  result = evaluate_teacher(make_teacher(config), examples, task, config, progress=False,
                            split="train")
  assert [row["correct"] for row in result.predictions] == [True, False, False, True, True]
  with pytest.raises(errors.ConfigError) as info:
    evaluate_teacher(make_teacher(config), examples, task, config, progress=False)
  one_line(info, "step_by_step", "split")


# ---- the setting --------------------------------------------------------------------------------


def test_import_format_setting():
  assert config_lib.CHOICES["teacher.import_format"] == adapters.IMPORT_FORMATS
  config = base_config()
  assert config.teacher.import_format == "jsonl"
  config.teacher.import_format = "csv"
  with pytest.raises(errors.ConfigError) as info:
    config_lib.check(config)
  one_line(info, "teacher.import_format='csv'", "fine_tune_cot")
  with pytest.raises(errors.ConfigError) as info:
    importer.ImportedRationales("x.jsonl", "csv")
  one_line(info, "teacher.import_format='csv'", "step_by_step")
