"""Tasks, loaders (local files in the datasets' own formats, hub and TFDS paths), answer parsing."""

import json
import re

import numpy as np
import pytest

from sciqa_jax.data import answers, loaders, registry, synthetic
from sciqa_jax.data.example import CHOICE, NUMBER, TEXT, YES_NO, Example
from sciqa_jax.data.registry import get_task, list_tasks


def write_jsonl(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


def arc_ai2_row(qid, labels, answer, stem="Which is a liquid?"):
  texts = ["ice", "water", "steam", "rock", "salt"][:len(labels)]
  return {"id": qid, "question": {"stem": stem,
                                  "choices": [{"text": t, "label": l} for t, l in zip(texts, labels)]},
          "answerKey": answer}


def hf_row(qid, answer="B"):
  return {"id": qid, "question": f"Question {qid}?",
          "choices": {"text": ["ice", "water", "steam", "rock"], "label": ["A", "B", "C", "D"]},
          "answerKey": answer}


# ---- local files ----------------------------------------------------------------------------


def test_arc_ai2_jsonl_digit_labels_and_split_files(tmp_path):
  write_jsonl(tmp_path / "ARC-Easy-Train.jsonl",
              [arc_ai2_row("q1", ["1", "2", "3", "4"], "2"), arc_ai2_row("q2", ["A", "B", "C"], "C")])
  write_jsonl(tmp_path / "ARC-Easy-Dev.jsonl", [arc_ai2_row("d1", ["1", "2", "3"], "3")])
  task = get_task("arc_easy")
  train = task.load("train", source="local", path=str(tmp_path))
  assert [e.id for e in train] == ["q1", "q2"]
  assert train[0].labels == ("A", "B", "C", "D") and train[0].answer == "B"
  assert train[0].choice_text("B") == "water" and train[0].question == "Which is a liquid?"
  assert train[1].answer == "C"
  dev = task.load("validation", source="local", path=str(tmp_path))  # "Dev" names validation
  assert [(e.id, e.answer) for e in dev] == [("d1", "C")]
  pattern = task.load("train", source="local", path=str(tmp_path / "ARC-Easy-{split}.jsonl")
                      .replace("{split}", "Train"))
  assert pattern == train
  with pytest.raises(FileNotFoundError, match="test"):
    task.load("test", source="local", path=str(tmp_path))


def test_hf_style_exports_json_jsonl_parquet_agree(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  rows = [hf_row("a", "A"), hf_row("b", "D"), hf_row("c", "B")]
  write_jsonl(tmp_path / "train.jsonl", rows)
  (tmp_path / "train.json").write_text(json.dumps(rows))  # a file serves the split its name names
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train-00000-of-00001.parquet")
  task = get_task("arc_challenge")
  loaded = [task.load("train", source="local", path=str(tmp_path / name))
            for name in ("train.jsonl", "train.json", "train-00000-of-00001.parquet")]
  assert loaded[0] == loaded[1] == loaded[2]
  assert [(e.id, e.answer, e.question) for e in loaded[0]] == [
      ("a", "A", "Question a?"), ("b", "D", "Question b?"), ("c", "B", "Question c?")]
  assert task.load("train", source="local", path=str(tmp_path / "train.jsonl"), max_examples=2) \
      == loaded[0][:2]


def test_sciq_release_format_deterministic_order(tmp_path):
  rows = [{"question": f"What gas do plants absorb, variant {i}?", "distractor1": "oxygen",
           "distractor2": "helium", "distractor3": "neon", "correct_answer": "carbon dioxide",
           "support": "Plants take in carbon dioxide."} for i in range(12)]
  (tmp_path / "train.json").write_text(json.dumps(rows))
  task = get_task("sciq")
  first = task.load("train", source="local", path=str(tmp_path / "train.json"))
  again = task.load("train", source="local", path=str(tmp_path / "train.json"))
  assert first == again
  for example in first:
    assert example.choice_text(example.answer) == "carbon dioxide"
    assert sorted(t for _, t in example.choices) == ["carbon dioxide", "helium", "neon", "oxygen"]
  assert len({e.answer for e in first}) > 1  # the gold answer is not always in the same slot
  assert len({e.id for e in first}) == 12


def test_openbookqa_fact_as_context(tmp_path):
  original = {"id": "7-980", "question": {"stem": "The sun is the source of energy for",
                                          "choices": [{"text": "plants", "label": "A"},
                                                      {"text": "rocks", "label": "B"}]},
              "fact1": "the sun is the source of energy for life", "answerKey": "A"}
  hub = {"id": "8-1", "question_stem": "Which is warm?",
         "choices": {"text": ["ice", "sun"], "label": ["A", "B"]}, "answerKey": "B",
         "fact1": "the sun is hot"}
  write_jsonl(tmp_path / "train_complete.jsonl", [original, hub])
  examples = get_task("openbookqa").load("train", source="local", path=str(tmp_path))
  assert examples[0].context == "the sun is the source of energy for life"
  assert examples[0].question == "The sun is the source of energy for"
  assert (examples[1].question, examples[1].answer, examples[1].context) == \
      ("Which is warm?", "B", "the sun is hot")


def test_commonsense_qa_and_strategyqa(tmp_path):
  csqa = {"answerKey": "E", "id": "075e48", "question": {
      "question_concept": "revolving door", "stem": "A revolving door is convenient for two "
      "direction travel, but it also serves as a security measure at a what?",
      "choices": [{"label": l, "text": t} for l, t in zip(
          "ABCDE", ["bank", "library", "department store", "mall", "new york"])]}}
  write_jsonl(tmp_path / "train_rand_split.jsonl", [csqa])
  (example,) = get_task("commonsense_qa").load("train", source="local", path=str(tmp_path))
  assert example.labels == tuple("ABCDE") and example.answer == "E" and example.context == ""

  strategy = [{"qid": "s1", "term": "Rock", "question": "Can a rock float?", "answer": False,
               "facts": ["Most rocks are dense."]},
              {"qid": "s2", "question": "Is water wet?", "answer": True}]
  (tmp_path / "strategyqa_train.json").write_text(json.dumps(strategy))
  task = get_task("strategyqa")  # today's name, an alias of strategy_qa
  # The release has no validation split: "train_full" is the whole file (registry doc).
  examples = task.load("train_full", source="local", path=str(tmp_path / "strategyqa_train.json"))
  assert [(e.id, e.answer, e.choices) for e in examples] == [("s1", "no", ()), ("s2", "yes", ())]
  assert task.answer_type == YES_NO


# ---- bad records ------------------------------------------------------------------------------

BAD_CASES = [
    ("{not json", "invalid JSON"),
    ({"id": "m", "question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}},
     "missing answer key"),
    (hf_row("k", "E"), "answer key 'E' is not among the labels"),
    ({"id": "n", "question": "Q?", "choices": {"text": [], "label": []}, "answerKey": "A"},
     "no choices"),
    (hf_row("good1"), "duplicate id 'good1'"),
]


@pytest.mark.parametrize("bad,reason", BAD_CASES, ids=[r for _, r in BAD_CASES])
def test_bad_record_names_file_and_line(tmp_path, bad, reason):
  path = write_jsonl(tmp_path / "train.jsonl", [hf_row("good1"), hf_row("good2"), bad])
  with pytest.raises(loaders.BadRecordError) as info:
    get_task("arc_easy").load("train", source="local", path=str(path))
  message = str(info.value)
  assert f"{path}:3" in message and reason in message
  assert "skip_bad_records" in message


def test_skip_bad_records_counts(tmp_path):
  rows = [hf_row("good1")] + [bad for bad, _ in BAD_CASES] + [hf_row("good2")]
  path = write_jsonl(tmp_path / "train.jsonl", rows)
  examples, report = get_task("arc_easy").load_with_report(
      "train", source="local", path=str(path), skip_bad_records=True)
  assert [e.id for e in examples] == ["good1", "good2"]
  assert report.num_records == len(rows) and report.num_skipped == len(BAD_CASES)
  assert all(re.search(r"train\.jsonl:\d+", s) for s in report.skipped)


def test_broken_json_file_names_line(tmp_path):
  path = tmp_path / "train.json"
  path.write_text('[\n {"question": "a"},\n {oops}\n]')
  with pytest.raises(loaders.BadRecordError, match=r"train\.json:3"):
    get_task("sciq").load("train", source="local", path=str(path))


# ---- hub and TFDS code paths (no network: the library calls are faked) ---------------------------


def test_hub_loader(monkeypatch):
  import datasets

  calls = []

  def fake_load_dataset(path, name=None, split=None):
    calls.append((path, name, split))
    return [hf_row("h1", "C"), {**hf_row("h2"), "choices": {"text": ["x", "y"], "label": ["1", "2"]},
                                "answerKey": "2"}]

  monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
  examples = get_task("arc_easy").load("validation", source="hf")
  assert calls == [("allenai/ai2_arc", "ARC-Easy", "validation")]
  assert [(e.id, e.answer, e.labels) for e in examples] == [
      ("h1", "C", ("A", "B", "C", "D")), ("h2", "B", ("A", "B"))]
  get_task("openbookqa").load("train", source="hf", path="mirror/obqa:main")
  assert calls[-1] == ("mirror/obqa", "main", "train")

  monkeypatch.setattr(datasets, "load_dataset",
                      lambda *a, **k: [{"question": "Is ice cold?", "answer": True, "qid": "z"}])
  (example,) = get_task("strategyqa").load("train", source="hf")
  assert (example.id, example.answer) == ("z", "yes")


def test_tfds_loader_decodes_class_labels(monkeypatch):
  import tensorflow as tf
  import tensorflow_datasets as tfds

  calls = []

  def fake_load(name, split, **kwargs):
    calls.append((name, split, kwargs.get("download")))
    info = tfds.builder(name).info  # the real feature spec, offline
    if name == "openbookqa":
      rows = {"question": {"stem": [b"Sun?"], "choice_A": [b"a"], "choice_B": [b"b"],
                           "choice_C": [b"c"], "choice_D": [b"d"]},
              "fact1": [b"the sun is a star"], "answerKey": np.array([2]),
              "humanScore": [1.0], "clarity": [2.0], "turkIdAnonymized": [b"t"]}
    else:  # ai2_arc: ClassLabel ints as TFDS stores them
      rows = {"id": [b"t1", b"t2"], "question": [b"Hot?", b"Cold?"],
              "choices": {"text": [[b"sun", b"ice", b"tea"], [b"sun", b"ice", b"tea"]],
                          "label": np.array([[0, 1, 2], [0, 1, 2]])},
              "answerKey": np.array([0, 1])}
    return tf.data.Dataset.from_tensor_slices(rows), info

  monkeypatch.setattr(tfds, "load", fake_load)
  examples = get_task("arc_challenge").load("test", source="tfds")
  assert calls == [("ai2_arc/ARC-Challenge", "test", False)]
  assert [(e.id, e.question, e.answer) for e in examples] == [("t1", "Hot?", "A"), ("t2", "Cold?", "B")]
  assert examples[0].choices == (("A", "sun"), ("B", "ice"), ("C", "tea"))
  (obqa,) = get_task("openbookqa").load("train", source="tfds")
  assert obqa.labels == ("A", "B", "C", "D") and obqa.answer == "C"
  assert obqa.context == "the sun is a star" and obqa.question == "Sun?"


# ---- registry, synthetic tasks --------------------------------------------------------------------


def test_registry_lists_and_errors():
  names = list_tasks()
  for name in ("arc_easy", "arc_challenge", "openbookqa", "sciq", "commonsense_qa", "strategy_qa",
               "coin_flip", "last_letter_concatenation", "science_demo"):
    assert name in names
  assert "strategyqa" not in names and get_task("strategyqa").name == "strategy_qa"  # an alias
  with pytest.raises(ValueError, match="registered tasks"):
    get_task("no_such_task")
  with pytest.raises(ValueError, match="cannot be loaded from data.source='builtin'"):
    get_task("arc_easy").load("train", source="builtin")
  assert get_task("sciq").sources == ("hf", "local")
  assert get_task("arc_easy").sources == ("hf", "tfds", "local")


def test_synthetic_tasks_are_seeded_and_self_consistent():
  coin = get_task("coin_flip").load("train", source="builtin", max_examples=30)
  assert coin == synthetic.coin_flip("train", num_examples=30)
  assert coin != synthetic.coin_flip("train", seed=1, num_examples=30)
  assert coin[:10] == synthetic.coin_flip("train", num_examples=10)
  assert {e.answer for e in coin} == {"yes", "no"}
  for example in coin:
    flips = example.question.count(" flips the coin")
    assert example.answer == ("yes" if flips % 2 == 0 else "no")
  letters = synthetic.last_letter_concatenation("test", num_examples=20)
  for example in letters:
    words = example.question.split('"')[1].split()
    assert len(words) == 4 and example.answer == "".join(w[-1] for w in words).lower()
  assert len(synthetic.coin_flip("validation")) == synthetic.SPLIT_SIZES["validation"]


# ---- answer extraction ------------------------------------------------------------------------------

MC = Example(id="x", question="Q", choices=(("A", "ice"), ("B", "liquid water"), ("C", "water"),
                                            ("D", "steam")), answer="B")


@pytest.mark.parametrize("text,expected", [
    ("(B)", "B"), ("B", "B"), ("b) liquid water", "B"), ("D.", "D"),
    ("the answer is C", "C"), ("Therefore, the answer is (D) steam.", "D"),
    ("It could be (A), but the answer is (C).", "C"),
    ("liquid water", "B"), ("Water.", "C"), ("I think steam, not ice", "D"),
    ("A plant needs light", None), ("(E)", None), ("", None), ("no idea", None),
])
def test_parse_choice(text, expected):
  assert answers.parse_answer(text, MC, CHOICE) == expected


@pytest.mark.parametrize("text,answer_type,expected", [
    ("Yes.", YES_NO, "yes"), ("so the answer is no", YES_NO, "no"), ("False", YES_NO, "no"),
    ("maybe", YES_NO, None), ("Yesterday it rained", YES_NO, None),
    ("3 + 4 = 7, so 7 apples", NUMBER, "7"), ("The answer is 1,250.50 dollars, not 3", NUMBER, "1250.5"),
    ("4.0", NUMBER, "4"), ("none", NUMBER, None),
    ('The answer is "NKMK".', TEXT, "nkmk"), ("  ab  cd ", TEXT, "abcd"), (" . ", TEXT, None),
])
def test_parse_other_types(text, answer_type, expected):
  assert answers.parse_answer(text, MC, answer_type) == expected


def test_answers_match_normalises():
  assert answers.answers_match("4", "4.00", NUMBER)
  assert not answers.answers_match("5", "4", NUMBER)
  assert answers.answers_match("NKMK", "nkmk", TEXT)
  assert not answers.answers_match(None, "B", CHOICE)
  task = get_task("coin_flip")
  example = synthetic.coin_flip("test", num_examples=1)[0]
  assert task.is_correct(task.parse_answer(f"So the answer is {example.answer}.", example), example)
  assert registry.get_task("arc_easy").parse_answer("(C)", MC) == "C"
