"""Open answers (numbers, yes/no, text) end to end through evaluate_split, for every objective.

Two kinds of test:
  * scripted: `inference.Runner` replaced by a stand-in whose `generate` returns known texts per
    (student, input) and whose `score` fails: the prediction path (which student sees which
    input, what is extracted, how votes are counted, what is correct) is checked exactly, and
    rank classification is proven never to run for an open answer type;
  * real: one tiny random T5 per objective on an open-answer task, through the real runner, to
    prove the generation shapes compile and the rows are built from what the model wrote.
"""

import jax
import pytest

from sciqa_jax import evaluation
from sciqa_jax import inference
from sciqa_jax.config import base_config
from sciqa_jax.data import answers as answers_lib
from sciqa_jax.data.example import CHOICE, NUMBER, TEXT, YES_NO, Example
from sciqa_jax.data.formatting import format_question
from sciqa_jax.models import T5, T5Config, init_params
from sciqa_jax.objectives import (ANSWER_ONLY, FINE_TUNE_COT, OBJECTIVES, STEP_BY_STEP, TWO_STAGE,
                                  Objective)
from sciqa_jax.tokenizer import train_sentencepiece_tokenizer

# Per answer type: two examples, and per example the answer text a student writes that is right
# (in another spelling than the gold one where the type has several) and one that is wrong.
CASES = {
    NUMBER: [(Example("n0", "Tom has 40 apples and buys 3 more. How many now?", (), "43.0"),
              "43", "The answer is 44"),
             (Example("n1", "A farm sells 250 eggs a day. How many in 4 days?", (), "1,000"),
              "1000", "999")],
    YES_NO: [(Example("y0", "A coin is heads up. Nobody flips it. Is it still heads up?", (),
                      "Yes"), "yes", "no"),
             # Choices on a yes/no example must not turn on rank classification.
             (Example("y1", "Is the sun a planet?", (("A", "yes"), ("B", "no")), "no"),
              "No.", "yes")],
    TEXT: [(Example("t0", 'Take the last letters of the words in "Elon Musk".', (), "nk"),
            "NK", "nm"),
           (Example("t1", 'Take the last letters of the words in "Larry Page".', (), "ye"),
            "ye.", "ya")],
}


def _eval_config(**overrides):
  c = base_config().eval
  c.batch_size = 8
  c.max_rationale_length = 8
  c.max_answer_length = 8
  c.max_input_length = 128
  for key, value in overrides.items():
    setattr(c, key, value)
  return c


class ScriptedRunner:
  """inference.Runner's interface; `generate` answers from `SCRIPT[(student, input)]`, a list of
  (text, log-prob) samples, and records every call. `score` is never allowed."""

  script: dict = {}
  calls: list = []

  def __init__(self, model, params, tokenizer, *, placement=None, batch_size, max_input_length,
               max_target_length=32, **_):
    self.students = set(params)
    self.batch_rows = batch_size

  def generate(self, name, texts, rng, *, max_new_tokens, method="greedy", num_samples=1,
               **options):
    assert name in self.students
    type(self).calls.append({"student": name, "texts": list(texts), "method": method,
                             "num_samples": num_samples, "max_new_tokens": max_new_tokens})
    out = []
    for text in texts:
      samples = self.script[(name, str(text))]
      assert len(samples) == num_samples, (text, samples)
      out.append([inference.Generation(t, lp, max(1, len(t.split()))) for t, lp in samples])
    return out

  def score(self, *args, **kwargs):
    raise AssertionError("rank classification must not run for open answers")


@pytest.fixture
def scripted(monkeypatch):
  ScriptedRunner.script, ScriptedRunner.calls = {}, []
  monkeypatch.setattr(inference, "Runner", ScriptedRunner)
  return ScriptedRunner


def _students(objective):
  return {s: None for s in objective.students}


def _script_answers(scripted, objective, examples, answers):
  """Scripts each example's generations so that its extracted answer text is `answers[i]`;
  returns the rationale each example's stage 1 / CoT writes."""
  rationales = {}
  for ex, answer in zip(examples, answers):
    rationale = f"Reasoning about {ex.id}."
    rationales[ex.id] = rationale
    if objective.name == FINE_TUNE_COT:
      scripted.script[("student", objective.cot_input(ex))] = [(f"{rationale} --> {answer}", -1.0)]
    elif objective.name == TWO_STAGE:
      scripted.script[("rationale", objective.rationale_input(ex))] = [(rationale, -1.0)]
      scripted.script[("answer", objective.answer_input(ex, rationale))] = [(answer, -0.5)]
    else:
      scripted.script[("student", objective.answer_input(ex))] = [(answer, -0.5)]
  return rationales


@pytest.mark.parametrize("answer_type", [NUMBER, YES_NO, TEXT])
@pytest.mark.parametrize("objective_name", OBJECTIVES)
def test_open_answers_are_generated_and_extracted(scripted, objective_name, answer_type):
  objective = Objective(name=objective_name)
  (ex0, right0, _), (ex1, _, wrong1) = CASES[answer_type]
  examples = [ex0, ex1]
  rationales = _script_answers(scripted, objective, examples, [right0, wrong1])
  result = evaluation.evaluate_split(None, _students(objective), None, objective, examples,
                                     _eval_config(), answer_type=answer_type, progress=False)
  assert [row["correct"] for row in result.predictions] == [True, False]
  assert result.accuracy == 0.5 and result.num_examples == 2
  for ex, row, written in zip(examples, result.predictions, [right0, wrong1]):
    expected = answers_lib.parse_answer(written, ex, answer_type)
    assert expected is not None
    assert row["answers"] == [expected] and row["prediction"] == expected
    assert row["gold"] == ex.answer and len(row["generations"]) == 1
    if objective.uses_rationales and objective.name != STEP_BY_STEP:
      assert row["rationales"] == [rationales[ex.id]]
    else:
      assert row["rationales"] == []
  # Which student saw which input: the layouts of sciqa_jax.objectives.
  by_student = {}
  for call in scripted.calls:
    by_student.setdefault(call["student"], []).extend(call["texts"])
    assert call["method"] == "greedy"
  if objective_name == TWO_STAGE:
    assert by_student["answer"] == [objective.answer_input(ex, rationales[ex.id])
                                    for ex in examples]
  elif objective_name == STEP_BY_STEP:
    assert by_student["student"] == ["predict: " + format_question(ex) for ex in examples]
  elif objective_name == ANSWER_ONLY:
    assert by_student["student"] == [format_question(ex) for ex in examples]
  else:
    assert by_student["student"] == [format_question(ex) for ex in examples]
    (call,) = scripted.calls  # one generation of `rationale --> answer`, long enough for both
    assert call["max_new_tokens"] == 8 + 8


@pytest.mark.parametrize("objective_name", [TWO_STAGE, FINE_TUNE_COT])
def test_unparseable_generation_counts_wrong_not_crash(scripted, objective_name):
  objective = Objective(name=objective_name)
  ex = CASES[NUMBER][0][0]
  _script_answers(scripted, objective, [ex], ["no idea"])
  if objective_name == FINE_TUNE_COT:  # nothing after -->, and no number anywhere
    scripted.script[("student", objective.cot_input(ex))] = [("I cannot say -->", -1.0)]
  result = evaluation.evaluate_split(None, _students(objective), None, objective, [ex],
                                     _eval_config(), answer_type=NUMBER, progress=False)
  (row,) = result.predictions
  assert row["answers"] == [None] and row["prediction"] is None and not row["correct"]


def test_fine_tune_cot_reads_the_answer_after_the_separator(scripted):
  objective = Objective(name=FINE_TUNE_COT)
  ex = CASES[NUMBER][0][0]
  # The rationale's last number is 40; the answer after the separator is what counts.
  scripted.script[("student", objective.cot_input(ex))] = [("3 + 40 = 43, not 40 --> 43.0", -1.0)]
  result = evaluation.evaluate_split(None, _students(objective), None, objective, [ex],
                                     _eval_config(), answer_type=NUMBER, progress=False)
  (row,) = result.predictions
  assert row["rationales"] == ["3 + 40 = 43, not 40"] and row["correct"]
  assert answers_lib.answers_match(row["prediction"], "43", NUMBER)


def test_beam_decoding_is_used_for_answers_when_asked(scripted):
  objective = Objective(name=ANSWER_ONLY)
  ex = CASES[YES_NO][0][0]
  _script_answers(scripted, objective, [ex], ["yes"])
  evaluation.evaluate_split(None, _students(objective), None, objective, [ex],
                            _eval_config(decoding="beam"), answer_type=YES_NO, progress=False)
  assert [call["method"] for call in scripted.calls] == ["beam"]


# ---- self-consistency: votes over extracted answers -------------------------------------------


# Three samples: two write 43 (spelt "43.0" and "43"), one writes 44 with the best likelihood.
# Counted as strings, each answer has one vote and 44 wins the tie on likelihood; counted as
# numbers, 43 has two votes and wins.
SAMPLES = [("43.0", -5.0), ("43", -5.0), ("44", -0.1)]


def _raw_parse(text, example):
  """A parser that does not canonicalise ("43.0" stays "43.0"): the votes must still group."""
  tail = text.rsplit("-->", 1)[-1].strip()
  return tail or None


@pytest.mark.parametrize("parser", ["task", "raw"])
@pytest.mark.parametrize("objective_name", [TWO_STAGE, FINE_TUNE_COT])
def test_self_consistency_votes_on_the_compared_value(scripted, objective_name, parser):
  objective = Objective(name=objective_name)
  ex = CASES[NUMBER][0][0]
  if objective_name == TWO_STAGE:
    scripted.script[("rationale", objective.rationale_input(ex))] = [
        (f"sample {j}", -1.0) for j in range(3)]
    for j, sample in enumerate(SAMPLES):
      scripted.script[("answer", objective.answer_input(ex, f"sample {j}"))] = [sample]
  else:
    scripted.script[("student", objective.cot_input(ex))] = [
        (f"sample {j} --> {text}", lp) for j, (text, lp) in enumerate(SAMPLES)]
  result = evaluation.evaluate_split(
      None, _students(objective), None, objective, [ex],
      _eval_config(self_consistency=3, temperature=0.7), answer_type=NUMBER, progress=False,
      parse_answer=_raw_parse if parser == "raw" else None)
  (row,) = result.predictions
  assert len(row["answers"]) == 3 and row["correct"]
  assert answers_lib.answers_match(row["prediction"], "43", NUMBER)
  first = scripted.calls[0]
  assert first["method"] == "sample" and first["num_samples"] == 3


def test_answer_objectives_are_scored_once_under_self_consistency(scripted):
  objective = Objective(name=STEP_BY_STEP)
  ex = CASES[TEXT][0][0]
  _script_answers(scripted, objective, [ex], ["nk"])
  result = evaluation.evaluate_split(None, _students(objective), None, objective, [ex],
                                     _eval_config(self_consistency=5), answer_type=TEXT,
                                     progress=False)
  assert result.predictions[0]["answers"] == ["nk"] and result.accuracy == 1.0
  assert [call["num_samples"] for call in scripted.calls] == [1]


# ---- errors -----------------------------------------------------------------------------------


def test_unknown_answer_type_and_gold_of_another_type_are_refused(scripted):
  objective = Objective(name=ANSWER_ONLY)
  ex = CASES[YES_NO][0][0]
  with pytest.raises(ValueError, match="answer_type='numeric'"):
    evaluation.evaluate_split(None, _students(objective), None, objective, [ex], _eval_config(),
                              answer_type="numeric", progress=False)
  # A yes/no task evaluated as numbers: no prediction could ever match its gold answers.
  with pytest.raises(ValueError, match=r"gold answers are not 'number' answers .*'y0'"):
    evaluation.evaluate_split(None, _students(objective), None, objective, [ex], _eval_config(),
                              answer_type=NUMBER, progress=False)
  assert not scripted.calls


def test_choice_tasks_are_still_rank_classified(scripted):
  objective = Objective(name=ANSWER_ONLY)
  ex = CASES[YES_NO][1][0]  # has choices
  with pytest.raises(AssertionError, match="rank classification"):
    evaluation.evaluate_split(None, _students(objective), None, objective,
                              [Example("c", ex.question, ex.choices, "B")], _eval_config(),
                              answer_type=CHOICE, progress=False)


# ---- real tiny models: the shapes compile, the rows come from what the model wrote -------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  texts = []
  for cases in CASES.values():
    for ex, right, wrong in cases:
      texts += [format_question(ex), "predict: " + format_question(ex), right, wrong,
                f"Reasoning about {ex.id}. --> {right}"]
  tokenizer = train_sentencepiece_tokenizer(texts * 4, str(tmp_path_factory.mktemp("tok")),
                                            vocab_size=120)
  config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                    num_decoder_layers=1, num_heads=2, feed_forward_proj="gated-gelu",
                    tie_word_embeddings=False, dropout_rate=0.0)
  params = jax.jit(lambda key: init_params(config, key))(jax.random.PRNGKey(3))
  # Pad/EOS columns of the head zeroed: a random student writes some text before stopping.
  kernel = params["lm_head"]["kernel"]
  params = {**params, "lm_head": {**params["lm_head"], "kernel": kernel.at[:, :2].set(0.0)}}
  return T5(config), params, tokenizer


@pytest.mark.parametrize("objective_name,answer_type", [
    (TWO_STAGE, NUMBER), (FINE_TUNE_COT, TEXT), (STEP_BY_STEP, NUMBER), (ANSWER_ONLY, YES_NO)])
def test_real_tiny_student_on_open_answers(tiny, objective_name, answer_type):
  model, params, tokenizer = tiny
  objective = Objective(name=objective_name)
  examples = [ex for ex, _, _ in CASES[answer_type]]
  seen = []

  def parse(text, ex):
    seen.append(text)
    return answers_lib.parse_answer(text, ex, answer_type)

  result = evaluation.evaluate_split(
      model, {s: params for s in objective.students}, tokenizer, objective, examples,
      _eval_config(), answer_type=answer_type, progress=False, parse_answer=parse,
      placement=inference.Replicated(jax.local_devices()[:1]))
  assert result.num_examples == len(examples)
  for ex, row in zip(examples, result.predictions):
    (generation,) = row["generations"]
    assert isinstance(generation, str) and isinstance(row["scores"][0], float)
    if objective_name == FINE_TUNE_COT:
      rationale, answer = evaluation.parse_cot_output(generation, ex, parse)
      assert row["rationales"] == [rationale]
    else:
      assert generation in seen  # the generation went through the task's parser
      answer = answers_lib.parse_answer(generation, ex, answer_type)
    assert row["answers"] == [answer] and row["prediction"] == answer
    assert row["correct"] == answers_lib.answers_match(answer, ex.answer, answer_type)
    assert len(row["rationales"]) == (1 if objective_name in (TWO_STAGE, FINE_TUNE_COT) else 0)
  assert any(row["generations"][0] for row in result.predictions)  # not vacuous
