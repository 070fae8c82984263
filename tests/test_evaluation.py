"""Evaluation: pmapped two-stage inference, rank classification, voting, parsing, errors.

One tiny real T5 (d_model 32, one layer each side) with a SentencePiece tokenizer trained here on
the built-in task's text. Compilations are the budget: evaluate_split's pmapped functions are
cached per (model, devices, options), and the tests share module-scoped results.
"""

import importlib.util
import json
import os
import pathlib

import jax
from jax.sharding import NamedSharding
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import app

from sciqa_jax import errors
from sciqa_jax import evaluation
from sciqa_jax import inference
from sciqa_jax import sharding
from sciqa_jax import statistics
from sciqa_jax.config import base_config
from sciqa_jax.data.example import CHOICE, YES_NO, Example
from sciqa_jax.data.formatting import candidate_answers
from sciqa_jax.data.registry import get_task
from sciqa_jax.models import T5, T5Config, init_params
from sciqa_jax.objectives import Objective
from sciqa_jax.teacher.evaluation import evaluate_teacher
from sciqa_jax.tokenizer import train_sentencepiece_tokenizer

REPO = pathlib.Path(__file__).resolve().parents[1]
# Short questions keep the inputs in a few small length buckets: few compilations per function
# and device count. 10 questions with batch 8 on 4 devices: a full batch and a ragged one of 2.
# Some have fewer choices, so candidate slots are left empty and must not leak into the scores.
QUESTIONS = [
    ("What state is ice?", ("solid", "a liquid that flows", "gas", "plasma"), "A"),
    ("What do plants need to make food?", ("sand", "light from the sun", "salt"), "B"),
    ("Which is a mammal?", ("shark", "small green frog", "whale", "trout"), "C"),
    ("What pulls objects toward Earth?", ("magnetism of rocks", "gravity"), "B"),
    ("Which is a metal?", ("wood", "glass", "rubber from trees", "copper"), "D"),
    ("Boiling water turns into what?", ("steam", "ice", "salt crystals", "sand"), "A"),
    ("What gives off its own light?", ("the moon", "sun", "a mirror on a wall"), "B"),
    ("Which organ pumps blood?", ("lung", "heart", "skin", "bone"), "B"),
    ("What turns a windmill?", ("wind", "the soil under it"), "A"),
    ("Which object floats on water?", ("rock", "nail", "cork", "a heavy iron coin"), "C"),
]
NUM_EXAMPLES = len(QUESTIONS)
YES_NO_QUESTIONS = [("Is ice cold?", "yes"), ("Is the sun a planet?", "no"),
                    ("Do fish live in water?", "yes"), ("Is copper a gas?", "no"),
                    ("Can birds fly?", "yes")]
PAD_IN, PAD_OUT = 256, 16  # the independent reference pads to these fixed shapes


def _eval_config(**overrides):
  c = base_config().eval
  c.batch_size = 8
  c.max_rationale_length = 8
  c.max_answer_length = PAD_OUT
  c.max_input_length = PAD_IN
  for key, value in overrides.items():
    setattr(c, key, value)
  return c


@pytest.fixture(scope="module")
def examples():
  return [Example(id=f"q{i}", question=q, choices=tuple(zip("ABCD", choices)), answer=a)
          for i, (q, choices, a) in enumerate(QUESTIONS)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, examples):
  objective = Objective(name="two_stage")
  texts = [objective.answer_input(ex, "because it is") for ex in examples]
  texts += [c for ex in examples for c in candidate_answers(ex)]
  texts += [f"Question: {q} --> {a}" for q, a in YES_NO_QUESTIONS]
  return train_sentencepiece_tokenizer(texts, str(tmp_path_factory.mktemp("tok")), vocab_size=150)


@pytest.fixture(scope="module")
def model_and_params(tokenizer):
  config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                    num_decoder_layers=1, num_heads=4, feed_forward_proj="gated-gelu",
                    tie_word_embeddings=False, dropout_rate=0.0)
  model = T5(config)
  init = jax.jit(lambda key: init_params(config, key))  # one compilation for both students
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  return model, {"rationale": _without_early_stop(init(keys[0])), "answer": init(keys[1])}


def _without_early_stop(params):
  """Zeroes the head's pad/EOS columns: a random student then writes text instead of stopping at
  once (which would leave the generation tests nothing to parse); real tokens win over logit 0."""
  kernel = params["lm_head"]["kernel"]
  return {**params, "lm_head": {**params["lm_head"], "kernel": kernel.at[:, :2].set(0.0)}}


@pytest.fixture(scope="module")
def reference(model_and_params, tokenizer):
  """Independent scorer: one (text, candidate) pair at a time through the plain forward pass."""
  model, _ = model_and_params

  @jax.jit
  def log_likelihood(params, ids, mask, decoder_in, labels, label_mask):
    logits = model.apply({"params": params}, ids, mask, decoder_in)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return (picked * label_mask).sum()

  def score(params, text, candidate):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [1]
    labels = tokenizer(candidate, add_special_tokens=False)["input_ids"] + [1]
    assert len(ids) <= PAD_IN and len(labels) <= PAD_OUT, "grow PAD_IN / PAD_OUT"
    pad = lambda row, n: np.asarray([row + [0] * (n - len(row))], np.int32)
    total = log_likelihood(params, pad(ids, PAD_IN), pad([1] * len(ids), PAD_IN),
                           pad([0] + labels[:-1], PAD_OUT), pad(labels, PAD_OUT),
                           pad([1] * len(labels), PAD_OUT))
    return float(total), len(labels)

  return score


@pytest.fixture(scope="module")
def two_stage_results(model_and_params, tokenizer, examples):
  model, params = model_and_params
  objective = Objective(name="two_stage")
  run = lambda params, placement: evaluation.evaluate_split(
      model, params, tokenizer, objective, examples, _eval_config(), answer_type=CHOICE,
      progress=False, placement=placement)
  # As train.py validates an FSDP student: every parameter sharded over the 4-device mesh.
  mesh = sharding.make_mesh("fsdp")
  sharded = jax.tree.map(
      lambda x: jax.device_put(x, NamedSharding(mesh, sharding.fsdp_spec(x.shape, 4))), params)
  assert any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(sharded))
  return (run(params, inference.Replicated()),
          run(params, inference.Replicated(jax.local_devices()[:1])),
          run(sharded, inference.OnMesh(mesh)))


# ---- pmapped evaluation ---------------------------------------------------------------------


@pytest.mark.slow
def test_four_devices_and_a_sharded_mesh_match_one_device(two_stage_results, examples):
  assert jax.local_device_count() == 4
  multi, single, on_mesh = two_stage_results
  for result in (multi, single, on_mesh):
    assert result.num_examples == NUM_EXAMPLES
    assert [row["id"] for row in result.predictions] == [ex.id for ex in examples]
  for other in (multi, on_mesh):
    for a, b in zip(other.predictions, single.predictions):
      assert a["rationales"] == b["rationales"]
      assert a["prediction"] == b["prediction"]
      assert a["scores"][0].keys() == b["scores"][0].keys()
      np.testing.assert_allclose(list(a["scores"][0].values()), list(b["scores"][0].values()),
                                 rtol=1e-5, atol=1e-5)
    assert other.accuracy == single.accuracy
  assert (multi.ci_low, multi.ci_high) == statistics.wilson_interval(multi.num_correct,
                                                                      NUM_EXAMPLES)


@pytest.mark.slow
def test_two_stage_scores_are_answer_student_likelihoods(two_stage_results, model_and_params,
                                                         reference, examples):
  """Stage-2 scores = the answer student's likelihood of each candidate given the rationale."""
  _, params = model_and_params
  objective = Objective(name="two_stage")
  multi, _, _ = two_stage_results
  for ex, row in zip(examples, multi.predictions):  # the ragged batch included
    assert len(row["rationales"]) == 1 and len(row["scores"][0]) == len(ex.choices)
    text = objective.answer_input(ex, row["rationales"][0])
    for label, candidate in zip(ex.labels, candidate_answers(ex)):
      expected, _ = reference(params["answer"], text, candidate)
      assert row["scores"][0][label] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert row["prediction"] == max(row["scores"][0], key=row["scores"][0].get)
    assert row["correct"] == (row["prediction"] == ex.answer)


@pytest.mark.parametrize("length_normalize", [False, True])
def test_rank_classification_picks_highest_likelihood(model_and_params, reference, tokenizer,
                                                      examples, length_normalize):
  model, params = model_and_params
  objective = Objective(name="answer_only")
  result = evaluation.evaluate_split(
      model, {"student": params["answer"]}, tokenizer, objective, examples,
      _eval_config(length_normalize=length_normalize), answer_type=CHOICE, progress=False)
  normalised_differs = False
  for ex, row in zip(examples, result.predictions):
    expected, summed = {}, {}
    for label, candidate in zip(ex.labels, candidate_answers(ex)):
      total, count = reference(params["answer"], objective.answer_input(ex), candidate)
      expected[label] = total / count if length_normalize else total
      summed[label] = total
    np.testing.assert_allclose([row["scores"][0][l] for l in ex.labels],
                               [expected[l] for l in ex.labels], rtol=1e-4, atol=1e-4)
    assert row["prediction"] == max(expected, key=expected.get)
    normalised_differs |= max(expected, key=expected.get) != max(summed, key=summed.get)
    assert row["rationales"] == []
  if length_normalize:  # the option must matter somewhere on this data, or the test is vacuous
    assert normalised_differs


def test_candidate_slots_padding_does_not_change_scores(model_and_params, reference, tokenizer):
  """A candidate scores the same alone or beside longer ones and empty slots."""
  model, params = model_and_params
  enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"] + [1]
  texts = ["Question: What state is ice?", "Question: Can birds fly?"]
  cands = [["(A) steam", "(B) solid ice cube"], ["(A) cold"]]
  ids = np.zeros((2, 32), np.int32)
  mask = np.zeros_like(ids)
  for i, text in enumerate(texts):
    row = enc(text)
    ids[i, :len(row)], mask[i, :len(row)] = row, 1
  labels = np.zeros((2, 3, PAD_OUT), np.int32)
  label_mask = np.zeros_like(labels)
  for i, group in enumerate(cands):
    for j, c in enumerate(group):
      row = enc(c)
      labels[i, j, :len(row)], label_mask[i, j, :len(row)] = row, 1
  totals, counts = jax.jit(inference.candidate_log_likelihoods, static_argnums=0)(
      model, params["answer"], ids, mask, labels, label_mask)
  for i, (text, group) in enumerate(zip(texts, cands)):
    for j, c in enumerate(group):
      expected, n = reference(params["answer"], text, c)
      assert float(totals[i, j]) == pytest.approx(expected, rel=1e-4, abs=1e-4)
      assert int(counts[i, j]) == n
  assert float(totals[1, 1]) == 0.0 and int(counts[1, 2]) == 0


# ---- open answers: Fine-tune-CoT generation + parsing ------------------------------------------


def test_fine_tune_cot_open_answers_follow_parse_rule(model_and_params, tokenizer):
  model, params = model_and_params
  task = get_task("coin_flip")
  assert task.answer_type == YES_NO
  examples = [Example(id=f"yn{i}", question=q, choices=(), answer=a)
              for i, (q, a) in enumerate(YES_NO_QUESTIONS)]
  result = evaluation.evaluate_split(
      model, {"student": params["rationale"]}, tokenizer, Objective(name="fine_tune_cot"),
      examples, _eval_config(), answer_type=YES_NO, progress=False,
      parse_answer=task.parse_answer)
  assert result.num_examples == len(examples)
  for ex, row in zip(examples, result.predictions):
    (generation,) = row["generations"]
    rationale, answer = evaluation.parse_cot_output(generation, ex, task.parse_answer)
    assert row["rationales"] == [rationale] and row["answers"] == [answer]
    assert row["prediction"] == answer
    assert row["correct"] == task.is_correct(answer, ex)
  assert any(row["generations"][0] for row in result.predictions)  # not vacuous: text was parsed


def test_two_stage_open_answers_generate_and_parse(model_and_params, tokenizer):
  model, params = model_and_params
  task = get_task("coin_flip")
  examples = [Example(id=f"yn{i}", question=q, choices=(), answer=a)
              for i, (q, a) in enumerate(YES_NO_QUESTIONS)]
  seen = []
  parse = lambda text, ex: seen.append((text, ex.id)) or task.parse_answer(text, ex)
  result = evaluation.evaluate_split(
      model, params, tokenizer, Objective(name="two_stage"), examples, _eval_config(),
      answer_type=YES_NO, progress=False, placement=inference.Replicated(jax.local_devices()[:1]),
      parse_answer=parse)
  for ex, row in zip(examples, result.predictions):
    (generation,) = row["generations"]
    assert (generation, ex.id) in seen  # the stage-2 generation went through the task's parser
    assert row["answers"] == [task.parse_answer(generation, ex)] == [row["prediction"]]
    assert len(row["rationales"]) == 1 and isinstance(row["scores"][0], float)
    assert row["scores"][0] < 0  # a log-likelihood
  assert result.num_correct == sum(
      task.is_correct(row["prediction"], ex) for ex, row in zip(examples, result.predictions))


# ---- the teacher as a baseline ------------------------------------------------------------


class _ScriptedTeacher:
  """A CompletionTeacher stand-in: answers from a script, records the prompts it was sent."""

  name = "scripted"

  def __init__(self, reply):
    self.reply = reply
    self.prompts = []

  def complete(self, prompts, *, num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=128,
               seed=0):
    self.prompts.extend(prompts)
    return [[self.reply(p, j) for j in range(num_samples)] for p in prompts]


def test_evaluate_teacher_zero_shot_cot_and_zero_shot(examples):
  task = get_task("science_demo")
  config = base_config().teacher
  config.batch_size = 4
  config.num_samples = 3
  config.temperature = 0.7
  gold = {ex.question: ex.answer for ex in examples}
  wrong = {ex.question: next(l for l in ex.labels if l != ex.answer) for ex in examples}

  def reply(prompt, j):  # two of three samples conclude the gold answer on even questions
    q = next(q for q in gold if q in prompt)
    even = sorted(gold).index(q) % 2 == 0
    label = gold[q] if (even and j < 2) or (not even and j == 0) else wrong[q]
    if prompt.endswith("Let's think step by step."):
      return f" Reason {j} about it. Therefore, the answer is ({label})."
    return f" ({label})"

  teacher = _ScriptedTeacher(reply)
  result = evaluate_teacher(teacher, examples, task, config, progress=False)
  expected = [sorted(gold).index(ex.question) % 2 == 0 for ex in examples]
  assert [row["correct"] for row in result.predictions] == expected
  assert result.num_examples == len(examples) and result.accuracy == sum(expected) / len(examples)
  assert all(len(row["rationales"]) == 3 for row in result.predictions)
  assert all(p.startswith("Q: Question:") for p in teacher.prompts)

  zero_shot = _ScriptedTeacher(reply)
  result = evaluate_teacher(zero_shot, examples, task, config, progress=False,
                                       chain_of_thought=False)
  # Zero-shot-CoT's step 2 without the reasoning: the question, then the task's answer trigger.
  from sciqa_jax.teacher import prompts
  assert len(zero_shot.prompts) == len(examples)
  for prompt, ex in zip(zero_shot.prompts, examples):
    assert prompt.endswith(prompts.answer_trigger(ex, task.answer_type)), prompt
    assert "step by step" not in prompt
  assert [row["correct"] for row in result.predictions] == expected
  assert all(row["rationales"] == [] for row in result.predictions)


def test_evaluate_teacher_template_concluded_answers():
  from sciqa_jax.teacher import make_teacher
  task = get_task("science_demo")
  examples = task.load("test", source="builtin", max_examples=12)
  config = base_config().teacher
  faithful = evaluate_teacher(make_teacher(config), examples, task, config,
                                         progress=False)
  assert faithful.accuracy == 1.0 and faithful.num_examples == 12
  config.error_rate = 1.0  # every rationale deliberately wrong
  assert evaluate_teacher(make_teacher(config), examples, task, config,
                                     progress=False).accuracy == 0.0


# ---- pure helpers -------------------------------------------------------------------------


@pytest.mark.parametrize("k,n,low,high", [
    # Reference values: scipy.stats.binomtest(k, n).proportion_ci(method="wilson").
    (0, 10, 0.0, 0.277533), (5, 10, 0.236593, 0.763407), (10, 10, 0.722467, 1.0),
    (81, 263, 0.255289, 0.366210), (1, 3, 0.061492, 0.792340)])
def test_wilson_interval_known_values(k, n, low, high):
  got = statistics.wilson_interval(k, n)
  assert got == pytest.approx((low, high), abs=1e-6)


def test_wilson_interval_rejects_bad_counts():
  with pytest.raises(ValueError, match="at least one example"):
    statistics.wilson_interval(0, 0)
  with pytest.raises(ValueError, match="num_correct"):
    statistics.wilson_interval(4, 3)


def test_majority_vote_majority_and_tie_break():
  # Majority wins even against a higher-likelihood minority.
  assert statistics.majority_vote(["A", "B", "A"], [-5.0, -0.1, -6.0]) == "A"
  # Tie in votes: larger summed log-likelihood wins.
  assert statistics.majority_vote(["A", "B", "B", "A"], [-1.0, -0.5, -0.6, -0.05]) == "A"
  assert statistics.majority_vote(["A", "B", "B", "A"], [-1.0, -0.5, -0.6, -0.9]) == "B"
  # Unparseable samples do not vote; all unparseable -> None; full tie -> first voted.
  assert statistics.majority_vote([None, None, "C"], [0.0, 0.0, -9.0]) == "C"
  assert statistics.majority_vote([None, None], [0.0, 0.0]) is None
  assert statistics.majority_vote(["B", "A"], [-1.0, -1.0]) == "B"
  with pytest.raises(ValueError):
    statistics.majority_vote(["A"], [])


def test_parse_cot_output_rule():
  ex = Example(id="q", question="What is ice?", choices=(("A", "gas"), ("B", "solid")), answer="B")
  parse = get_task("science_demo").parse_answer
  # After the last separator.
  assert evaluation.parse_cot_output("Ice is (A) not a gas --> (B) solid", ex, parse) == (
      "Ice is (A) not a gas", "B")
  assert evaluation.parse_cot_output("x --> (A) gas --> (B) solid", ex, parse)[1] == "B"
  # Nothing parseable after the separator, or no separator: the LAST answer-like token.
  assert evaluation.parse_cot_output("not (A), it is (B) --> ???", ex, parse) == (
      "not (A), it is (B)", "B")
  assert evaluation.parse_cot_output("(B) no wait (A)", ex, parse)[1] == "A"
  assert evaluation.parse_cot_output("nothing here", ex, parse) == ("nothing here", None)
  yes_no = get_task("coin_flip").parse_answer
  assert evaluation.parse_cot_output("yes it flips, so no", ex, yes_no)[1] == "no"


# ---- self-consistency end to end (sampled rationales, voting) ------------------------------------


def test_self_consistency_votes_over_sampled_rationales(model_and_params, tokenizer, examples):
  model, params = model_and_params
  objective = Objective(name="two_stage")
  result = evaluation.evaluate_split(
      model, params, tokenizer, objective, examples[:3],
      _eval_config(self_consistency=3, temperature=1.0), answer_type=CHOICE, progress=False,
      seed=1)
  for ex, row in zip(examples, result.predictions):
    assert len(row["rationales"]) == 3 and len(row["answers"]) == 3 and len(row["scores"]) == 3
    assert len(set(row["rationales"])) > 1  # sampled, not three copies of one
    per_sample = [max(s, key=s.get) for s in row["scores"]]
    assert row["answers"] == per_sample
    assert row["prediction"] == statistics.majority_vote(
        per_sample, [s[a] for s, a in zip(row["scores"], per_sample)])


# ---- errors -------------------------------------------------------------------------------


def test_empty_dataset_and_missing_student_are_clear_errors(model_and_params, tokenizer, examples):
  model, params = model_and_params
  with pytest.raises(ValueError, match="no examples"):
    evaluation.evaluate_split(model, params, tokenizer, Objective(), [], _eval_config(),
                              answer_type=CHOICE, progress=False)
  with pytest.raises(ValueError, match=r"missing \['student'\]"):
    evaluation.evaluate_split(model, params, tokenizer, Objective(name="answer_only"), examples,
                              _eval_config(), answer_type=CHOICE, progress=False)
  with pytest.raises(ValueError, match="eval.temperature"):
    evaluation.evaluate_split(model, params, tokenizer, Objective(), examples,
                              _eval_config(self_consistency=3, temperature=0.0),
                              answer_type=CHOICE, progress=False)


@pytest.fixture(scope="module")
def evaluate_script():
  spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "evaluate.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_unknown_split_lists_valid_ones(evaluate_script):
  config = base_config()
  with pytest.raises(errors.ConfigError, match=r"'dev' is not a split.*train, validation, test"):
    evaluate_script._load_examples(config, "dev")


def test_corrupt_checkpoint_error_names_path(evaluate_script, tmp_path):
  with pytest.raises(FileNotFoundError, match="not a directory"):
    evaluate_script._load_students(str(tmp_path / "missing"), "best")
  run = tmp_path / "run"
  (run / "checkpoints" / "5").mkdir(parents=True)
  (run / "config.json").write_text(base_config().to_json())
  (run / "checkpoints" / "5" / "garbage").write_bytes(os.urandom(64))
  with pytest.raises(Exception, match=str(run)):
    evaluate_script._load_students(str(run), "best")


def test_students_are_evaluated_on_their_own_task_unless_told_otherwise(evaluate_script):
  trained = base_config()
  trained.task, trained.data.source, trained.data.path = "arc_easy", "local", "/data/arc"
  checkpoint_config = ml_collections.ConfigDict(trained.to_dict())
  # Without --config: the checkpoint's task and data.
  merged = evaluate_script.student_eval_config(checkpoint_config, None, None)
  assert (merged.task, merged.data.path) == ("arc_easy", "/data/arc")
  # A config of another task (the demo's) is refused, naming both tasks and the way out.
  other = base_config()
  with pytest.raises(errors.RunMismatchError,
                     match=r"--config is for task 'science_demo' but the checkpoint was trained "
                           r"on 'arc_easy'.*--task=science_demo"):
    evaluate_script.student_eval_config(checkpoint_config, other, None)
  # On purpose, with --task: that task and the config's data.
  merged = evaluate_script.student_eval_config(checkpoint_config, other, "science_demo")
  assert (merged.task, merged.data.source) == ("science_demo", "builtin")
  assert merged.objective.name == trained.objective.name
  with pytest.raises(app.UsageError, match="pass --config"):
    evaluate_script.student_eval_config(checkpoint_config, None, "arc_challenge")
  # A config of the same task brings its eval settings and data (e.g. a moved data.path).
  same = base_config()
  same.task, same.data.source, same.data.path = "arc_easy", "local", "/moved/arc"
  same.eval.batch_size = 7
  merged = evaluate_script.student_eval_config(checkpoint_config, same, None)
  assert (merged.data.path, merged.eval.batch_size) == ("/moved/arc", 7)


def test_an_evaluation_never_replaces_another(evaluate_script, tmp_path):
  metrics = {"name": "two_stage", "objective": "two_stage", "task": "arc_easy", "split": "test",
             "checkpoint": "/runs/a", "step": 100, "eval": base_config().eval.to_dict()}
  out = tmp_path / "eval" / "arc_easy" / "test" / "two_stage"
  evaluate_script.check_not_overwriting(str(out), metrics)  # nothing there yet
  out.mkdir(parents=True)
  (out / "metrics.json").write_text(json.dumps(dict(metrics, accuracy=0.5)))
  evaluate_script.check_not_overwriting(str(out), metrics)  # a rerun replaces its own output
  for changed in ({"step": 200}, {"checkpoint": "/runs/b"},
                  {"eval": dict(metrics["eval"], decoding="beam")}):
    with pytest.raises(errors.RunMismatchError, match="another --name"):
      evaluate_script.check_not_overwriting(str(out), dict(metrics, **changed))


@pytest.mark.parametrize("n", [1, 6, 7, 13, 100, 501])
def test_wilson_bounds_never_exclude_the_observed_rate(n):
  # 0/6 once gave a lower bound of 2.8e-17 > 0: a negative error bar that crashed the plot.
  for correct in (0, n):
    low, high = statistics.wilson_interval(correct, n)
    assert low <= correct / n <= high
  assert statistics.wilson_interval(0, n)[0] == 0.0
  assert statistics.wilson_interval(n, n)[1] == 1.0
