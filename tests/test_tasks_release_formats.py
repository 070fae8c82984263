"""The arithmetic tasks from their own releases and hub copies: GSM8K's original JSONL files, and
the record parsers on rows in the schemas of the hub ids the registry names (hub loading needs the
network, so the hub is replaced by those rows)."""

import json

import pytest

from sciqa_jax import errors
from sciqa_jax.data import loaders, registry
from sciqa_jax.data.loaders import RecordError
from sciqa_jax.data.registry import get_task

GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                 "clips in May. How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
               "clips altogether in April and May.\n#### 72"},
    {"question": "A house costs $80,000 and repairs $50,000. How much in total?",
     "answer": "80,000+50,000=$<<80000+50000=130000>>130,000\n#### 130,000"},
]


def gsm8k_release(root, num_train=40, num_test=3):
  """grade_school_math/data/{train,test}.jsonl as OpenAI released them (no dataset name)."""
  data = root / "grade_school_math" / "data"
  data.mkdir(parents=True)
  def rows(split, count):
    return [{"question": f"{GSM8K_ROWS[i % 2]['question']} ({split} {i})",
             "answer": GSM8K_ROWS[i % 2]["answer"]} for i in range(count)]
  for split, count in (("train", num_train), ("test", num_test)):
    (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(split, count)))
  return data


def test_gsm8k_original_release(tmp_path):
  data = gsm8k_release(tmp_path)
  task = get_task("gsm8k")
  test = task.load("test", source="local", path=str(data))
  assert [e.id for e in test] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
  assert [e.answer for e in test] == ["72", "130000", "72"]  # after "#### ", commas dropped
  assert test[0].solution == ("Natalia sold 48/2 = 24 clips in May.",
                              "Natalia sold 48+24 = 72 clips altogether in April and May.")
  # No validation split in the release: 10% of train is held out, disjoint by construction.
  train = task.load("train", source="local", path=str(data))
  validation = task.load("validation", source="local", path=str(data))
  assert (len(train), len(validation)) == (36, 4)
  assert len(task.load("train_full", source="local", path=str(data / "train.jsonl"))) == 40
  assert not {e.id for e in train} & {e.id for e in validation}
  pattern = str(data / "{split}.jsonl")
  assert task.load("test", source="local", path=pattern) == test


def test_gsm8k_record_without_final_answer_names_the_field(tmp_path):
  data = gsm8k_release(tmp_path)
  with open(data / "test.jsonl", "a") as f:
    f.write(json.dumps({"question": "How many?", "answer": "It is 5."}) + "\n")
  with pytest.raises(loaders.BadRecordError) as info:
    get_task("gsm8k").load("test", source="local", path=str(data))
  assert f"{data / 'test.jsonl'}:4" in str(info.value) and "(answer)" in str(info.value)


# ---- hub schemas ----------------------------------------------------------------------------------


AQUA_RAT = {"question": "A car finishes a journey in 20 hours at 60 km/h. At what speed must it "
                        "travel to finish it in 10 hours?",
            "options": ["A)60 km/hr", "B)100 km/hr", "C)120 km/hr", "D)140 km/hr", "E)160 km/hr"],
            "rationale": "Distance = 60 x 20 = 1200 km.\nSpeed = 1200 / 10 = 120 km/hr.\nAnswer C",
            "correct": "C"}
SVAMP = {"ID": "chal-777", "Body": "There are 87 oranges and 290 bananas in Philip's collection. "
                                   "If the bananas are organized into 2 groups and oranges are "
                                   "organized into 93 groups",
         "Question": "How big is each group of bananas?", "Equation": "( 290.0 / 2.0 )",
         "Answer": 145.0, "Type": "Common-Division",
         "question_concat": "There are 87 oranges ... How big is each group of bananas?"}
MULTIARITH = {"question": " For Halloween Debby and her sister combined the candy they received. "
                          "Debby had 32 pieces of candy while her sister had 42. If they ate 35 "
                          "pieces the first night, how many pieces do they have left?",
              "final_ans": "39"}
STRATEGYQA = {"qid": "b8677742616fef051f00", "term": "Genghis Khan",
              "description": "founder and first Great Khan of the Mongol Empire",
              "question": "Are more people today related to Genghis Khan than Julius Caesar?",
              "answer": True, "facts": ["Julius Caesar had three children."]}


def test_hub_record_parsers():
  aqua = loaders.aqua_record(AQUA_RAT, 0, "test")
  assert aqua.labels == tuple("ABCDE") and aqua.choice_text("C") == "120 km/hr"
  assert aqua.answer == "C" and aqua.solution[-1] == "Answer C" and aqua.id == "aqua-test-0"
  svamp = loaders.svamp_record(SVAMP, 3, "train")
  assert svamp.id == "chal-777" and svamp.answer == "145"
  assert svamp.question.startswith("There are 87") and svamp.question.endswith("groups How big "
                                                                                "is each group of bananas?")
  multiarith = loaders.multiarith_record(MULTIARITH, 5, "test")
  assert (multiarith.id, multiarith.answer) == ("multiarith-test-5", "39")
  assert multiarith.question.startswith("For Halloween")
  gsm8k = loaders.gsm8k_record(GSM8K_ROWS[1], 0, "train")  # openai/gsm8k "main": the release
  assert gsm8k.answer == "130000" and gsm8k.solution == ("80,000+50,000=$130,000",)
  strategy = loaders.strategyqa_record(STRATEGYQA, 0, "train")
  assert (strategy.id, strategy.answer) == ("b8677742616fef051f00", "yes")


@pytest.mark.parametrize("parser,row,field", [
    (loaders.aqua_record, {**AQUA_RAT, "correct": "F"}, "(correct)"),
    (loaders.aqua_record, {**AQUA_RAT, "options": ["60 km/hr"]}, "(options)"),
    (loaders.aqua_record, {**AQUA_RAT, "options": None}, "(options)"),
    (loaders.svamp_record, {**SVAMP, "Answer": None}, "(Answer)"),
    (loaders.svamp_record, {"Answer": 3.0}, "(Body, Question)"),
    (loaders.multiarith_record, {**MULTIARITH, "final_ans": "thirty-nine"}, "final_ans"),
    (loaders.multiarith_record, {"final_ans": "39"}, "(question)"),
    (loaders.gsm8k_record, {"question": "Q?", "answer": "#### many"}, "answer after ####"),
])
def test_record_that_does_not_parse_names_the_field(parser, row, field):
  with pytest.raises(RecordError) as info:
    parser(row, 0, "train")
  assert field in str(info.value)


@pytest.mark.parametrize("key,hub,row,held_out", [
    ("gsm8k", ("openai/gsm8k", "main"), GSM8K_ROWS[0], True),
    ("svamp", ("ChilleD/SVAMP", None), SVAMP, True),
    ("multiarith", ("ChilleD/MultiArith", None), MULTIARITH, True),
    ("aqua", ("deepmind/aqua_rat", "raw"), AQUA_RAT, False),
    ("strategy_qa", ("ChilleD/StrategyQA", None), STRATEGYQA, True),
])
def test_hub_sources_are_wired(monkeypatch, key, hub, row, held_out):
  calls = []
  def fake_hub_rows(hub_id, config_name, split):
    calls.append((hub_id, config_name, split))
    field = "Body" if "Body" in row else "question"  # SVAMP: Body + Question
    for i in range(20):
      changed = {**row, field: f"{row[field]} ({split} {i})"}
      changed.pop("ID", None), changed.pop("qid", None)
      yield f"hub {hub_id} split {split} row {i}", changed
  monkeypatch.setattr(loaders, "iter_hub_rows", fake_hub_rows)
  task = get_task(key)
  assert task.hub == hub and "hf" in task.sources
  train = task.load("train", source="hf")
  validation = task.load("validation", source="hf")
  assert calls[0] == (hub[0], hub[1], "train")
  if held_out:  # the hub copy has no validation split: held out of its train split
    assert (len(train), len(validation)) == (18, 2) and calls[-1][2] == "train"
  else:  # AQuA's hub copy has its own
    assert (len(train), len(validation)) == (20, 20) and calls[-1][2] == "validation"
  assert len(task.load("train_full", source="hf")) == 20


def test_tasks_without_a_hub_copy_say_so():
  for key in ("single_eq", "addsub", "date_understanding", "tracking_shuffled_objects"):
    assert get_task(key).sources == ("local",)
    with pytest.raises(errors.ConfigError, match="its sources are local"):
      get_task(key).load("train", source="hf")
  assert registry.get_task("commonsense_qa").hub == ("tau/commonsense_qa", None)
