"""The few-shot LLM baseline (sciqa_jax.baselines): the harness's rules, checked by hand.

lm-evaluation-harness itself is not needed here: `make lm-eval-check` compares with it. These
tests pin each rule that comparison relies on with values worked out by hand (prompt strings,
the sampler's draws, the token split at the context / continuation boundary, acc_norm's
denominator), and check that the shared-context scorer computes what the harness's per-pair
forward pass computes.
"""

import importlib.util
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

from sciqa_jax import baselines
from sciqa_jax import errors
from sciqa_jax import statistics
from sciqa_jax.data.example import Example

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tiny_lm_module():
  spec = importlib.util.spec_from_file_location(
      "tiny_lm", REPO / "tools" / "lm_eval_check" / "tiny_lm.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _example(i, question="Which is a gas?", choices=("ice", "steam", "water"), answer="B"):
  labels = "ABCDE"[:len(choices)]
  return Example(id=f"q{i}", question=question, choices=tuple(zip(labels, choices)),
                 answer=answer)


# ---- prompts -------------------------------------------------------------------------------


def test_prompts_follow_the_harness_yamls():
  shot = _example(0, "What melts ice?", ("heat", "cold"), "A")
  ex = _example(1)
  arc = baselines.harness_format("arc_easy")
  assert baselines.build_context(arc, [], ex) == "Question: Which is a gas?\nAnswer:"
  assert baselines.build_context(arc, [shot, shot], ex) == (
      "Question: What melts ice?\nAnswer: heat\n\n" * 2 + "Question: Which is a gas?\nAnswer:")
  assert arc.choices(ex) == ["ice", "steam", "water"] and arc.gold(ex) == 1
  assert baselines.harness_format("science_demo") is baselines.ARC  # any other choice task
  obqa = baselines.harness_format("openbookqa")
  assert baselines.build_context(obqa, [shot], ex) == "What melts ice? heat\n\nWhich is a gas?"
  csqa = baselines.harness_format("commonsense_qa")
  assert baselines.build_context(csqa, [shot], ex) == (
      "Question: What melts ice?\nA. heat\nB. cold\nAnswer: A\n\n"
      "Question: Which is a gas?\nA. ice\nB. steam\nC. water\nAnswer:")
  assert csqa.choices(ex) == ["A", "B", "C"] and not csqa.has_test_split


def test_exemplars_are_the_harness_samplers_draws():
  pool = [_example(i, f"question {i}") for i in range(10)]
  # random.Random(1234).sample(range(10), 2), three times in a row: [7, 1], [0, 1], [9, 0].
  drawn = baselines.sample_exemplars([_example(20 + i) for i in range(3)], pool, 2)
  assert [[x.id for x in shots] for shots in drawn] == [["q7", "q1"], ["q0", "q1"], ["q9", "q0"]]
  # Without a test split the harness draws k + 1 ([7, 1, 0], [1, 0, 9], [1, 5, 3]) and drops the
  # evaluated question itself.
  drawn = baselines.sample_exemplars(pool[:3], pool, 2, exclude_self=True)
  assert [[x.id for x in shots] for shots in drawn] == [["q7", "q1"], ["q0", "q9"], ["q1", "q5"]]
  assert baselines.sample_exemplars(pool[:2], pool, 0) == [[], []]
  other = baselines.sample_exemplars(pool[:1], pool, 2, seed=7)[0]
  assert other == random.Random(7).sample(pool, 2)
  with pytest.raises(errors.ConfigError, match="needs at least 11 training examples"):
    baselines.sample_exemplars(pool[:1], pool, 10, exclude_self=True)


# ---- tokenisation --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hand_tokenizer():
  """BPE without pre-tokeniser (merges cross spaces), BOS prepended by default like Llama's.

  ids: <pad> 0, <s> 1, </s> 2, a 3, b 4, " " 5, x 6, ab 7, " x" 8.
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, processors  # pylint: disable=g-import-not-at-top

  vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, " ": 5, "x": 6, "ab": 7, " x": 8}
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), (" ", "x")]))
  tok.add_special_tokens(["<pad>", "<s>", "</s>"])
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>",
                                              eos_token="</s>", pad_token="<pad>")


def test_continuation_is_what_follows_the_contexts_tokens(hand_tokenizer):
  (context, conts), = baselines.encode_requests(hand_tokenizer, ["xa"], [[" x", "b", " b"]])
  assert context == [1, 6, 3]  # BOS x a
  # "xa x" -> BOS x a " x"; "xab" -> BOS x ab: the merged token is the context's, nothing is left;
  # "xa b" -> BOS x a " " b.
  assert conts == [[8], [], [5, 4]]
  with pytest.raises(errors.DataError, match="choice 1 encodes to no token"):
    baselines.make_units(context, conts, 100)


def test_trailing_whitespace_moves_to_the_continuation(hand_tokenizer):
  (context, conts), = baselines.encode_requests(hand_tokenizer, ["a "], [["x"]])
  # Context "a", continuation " x" (one merged token); left on the context, the space would have
  # been a token of its own and "a x" would have left nothing after it.
  assert (context, conts) == ([1, 3], [[8]])


def test_text_starting_with_bos_gets_no_second_one(hand_tokenizer):
  (context, conts), = baselines.encode_requests(hand_tokenizer, ["<s>a"], [[" x"]])
  assert (context, conts) == ([1, 3], [[8]])


def test_seq2seq_encodes_continuations_alone_without_special_tokens(hand_tokenizer):
  (context, conts), = baselines.encode_requests(hand_tokenizer, ["xa "], [["b", "x"]],
                                                seq2seq=True)
  assert (context, conts) == ([1, 6, 3], [[5, 4], [8]])


def test_long_prompts_lose_tokens_on_the_left_per_choice():
  context, conts = list(range(10, 20)), [[1], [2, 3], [4, 5, 6]]
  # max_length 8: (context + choice)[-9:][:-1] sees the last 8, 7, 6 context tokens.
  units = baselines.make_units(context, conts, 8)
  assert [(u.context, [i for i, _ in u.continuations]) for u in units] == [
      (tuple(range(12, 20)), [0]), (tuple(range(13, 20)), [1]), (tuple(range(14, 20)), [2])]
  (whole,) = baselines.make_units(context, conts, 100)
  assert whole.context == tuple(context) and len(whole.continuations) == 3
  (s2s,) = baselines.make_units(context, conts, 4, seq2seq=True)
  assert s2s.context == tuple(range(16, 20))
  with pytest.raises(errors.DataError, match="more than the model's 2"):
    baselines.make_units(context, conts, 2)


def test_max_length_follows_the_harness():
  class Config:
    n_positions, max_position_embeddings = None, 512

  class Tokenizer:
    model_max_length = 128

  assert baselines.harness_max_length(Config(), Tokenizer()) == 512
  Config.max_position_embeddings = None
  assert baselines.harness_max_length(Config(), Tokenizer()) == 128
  Tokenizer.model_max_length = 1000000000000000019884624838656
  assert baselines.harness_max_length(Config(), Tokenizer()) == 2048


# ---- metrics -------------------------------------------------------------------------------


def test_acc_norm_divides_by_the_choice_length_without_the_delimiter():
  ex = _example(0, choices=("ab", "abcdef"), answer="B")
  fmt = baselines.ARC
  row = baselines.prediction_row(ex, fmt, np.array([-4.0, -6.0]), [], "acc")
  # acc: -4 > -6 picks A; acc_norm: -4 / 2 = -2 < -6 / 6 = -1 picks B (with " " it would be
  # -4 / 3 > -6 / 7 and pick A).
  assert (row["prediction_acc"], row["prediction_acc_norm"]) == ("A", "B")
  assert (row["correct_acc"], row["correct_acc_norm"], row["correct"]) == (False, True, False)
  assert row["norm_scores"] == {"A": -2.0, "B": -1.0}
  tie = baselines.prediction_row(ex, fmt, np.array([-3.0, -3.0]), [], "acc_norm")
  assert (tie["prediction_acc"], tie["prediction"]) == ("A", "B")  # np.argmax: first of equals
  csqa = baselines.prediction_row(_example(1), baselines.COMMONSENSE_QA,
                                  np.array([-1.0, -2.0, -3.0]), [], "acc")
  assert csqa["norm_scores"] == {"A": -1.0, "B": -2.0, "C": -3.0}  # letters: length 1


# ---- scoring -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
  tiny_lm = _tiny_lm_module()
  out = tmp_path_factory.mktemp("llama")
  from sciqa_jax.data import science  # pylint: disable=g-import-not-at-top
  texts = [f"Question: {ex.question}\nAnswer: " + " ".join(t for _, t in ex.choices)
           for ex in science.load_split("train", seed=0, num_examples=60)]
  tokenizer = tiny_lm.make_tokenizer(texts, str(out / "tokenizer"), vocab_size=300)
  return tiny_lm.make_llama(str(out / "model"), tokenizer)


def _reference_causal(model, units, max_length):
  """The harness's computation: each (context, choice) whole, right-padded, its own row."""
  import torch  # pylint: disable=g-import-not-at-top
  out = []
  with torch.inference_mode():
    for unit in units:
      values = []
      for _, cont in unit.continuations:
        ids = (list(unit.context) + list(cont))[-(max_length + 1):][:-1]
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        values.append(float(log_probs[-len(cont):].gather(-1, torch.tensor(cont)[:, None]).sum()))
      out.append(np.array(values))
  return out


def _units(tokenizer, max_length, fmt=baselines.ARC, k=2):
  from sciqa_jax.data import science  # pylint: disable=g-import-not-at-top
  pool = science.load_split("train", seed=0, num_examples=20)
  examples = science.load_split("test", seed=0, num_examples=7)
  # Ragged choice counts: 2, 3 and 4 choices.
  examples = [ex if i % 3 == 0 else Example(ex.id, ex.question, ex.choices[:2 + i % 3],
                                            ex.choices[0][0]) for i, ex in enumerate(examples)]
  shots = baselines.sample_exemplars(examples, pool, k)
  contexts = [baselines.build_context(fmt, s, ex) for s, ex in zip(shots, examples)]
  conts = [[" " + c for c in fmt.choices(ex)] for ex in examples]
  return [u for context, cs in baselines.encode_requests(tokenizer, contexts, conts)
          for u in baselines.make_units(context, cs, max_length)]


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("max_length,batch_size", [(1024, 3), (40, 2)])
def test_shared_context_scores_equal_the_harness_per_pair_pass(tiny_llama, backend, max_length,
                                                               batch_size):
  """PyTorch on the CPU, and the Flax CausalLM pmapped over the 4 test devices."""
  import transformers  # pylint: disable=g-import-not-at-top
  model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
  tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama)
  if backend == "torch":
    scorer = baselines.TorchCausalScorer(model, tokenizer, batch_size=batch_size,
                                   max_length=max_length)
  else:
    from sciqa_jax.models import load_pretrained  # pylint: disable=g-import-not-at-top
    flax_model, params = load_pretrained(tiny_llama)
    scorer = baselines.FlaxScorer(flax_model, params, tokenizer, batch_size=batch_size,
                                  max_length=max_length)
  units = _units(tokenizer, max_length)
  if max_length == 40:  # the 2-shot prompts are longer: choices see differently cut contexts
    assert len(units) > 7
  got = scorer.score(units)
  want = _reference_causal(model, units, max_length)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=0)


def test_evaluate_llm_metrics_and_rows(tiny_llama):
  from sciqa_jax.data import science  # pylint: disable=g-import-not-at-top
  scorer = baselines.load_scorer(tiny_llama, batch_size=4, device="cpu")
  pool = science.load_split("train", seed=0, num_examples=30)
  test = science.load_split("test", seed=0, num_examples=12)
  result = baselines.evaluate_llm(scorer, test, pool, "science_demo", num_fewshot=3,
                                  metric="acc_norm", max_examples=10, progress=False)
  metrics = result.metrics()
  assert result.num_examples == 10 and metrics["num_fewshot"] == 3
  for name in ("acc", "acc_norm"):
    correct = sum(row[f"correct_{name}"] for row in result.predictions)
    assert metrics[name] == correct / 10
    assert (metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"]) == (
        statistics.wilson_interval(correct, 10))
  assert result.accuracy == metrics["acc_norm"]
  row = result.predictions[0]
  assert set(row["scores"]) == set(test[0].labels) and len(row["exemplars"]) == 3
  # The first 10 questions' exemplars do not depend on how many questions are scored (--limit).
  shots = baselines.sample_exemplars(test, pool, 3)
  assert [r["exemplars"] for r in result.predictions] == [[x.id for x in s] for s in shots[:10]]
  assert isinstance(baselines.load_scorer(tiny_llama, batch_size=4, backend="jax"),
                    baselines.FlaxScorer)
  with pytest.raises(errors.ConfigError, match="multiple-choice tasks only"):
    baselines.evaluate_llm(scorer, test, pool, "coin_flip", answer_type="yes_no")


def test_seq2seq_t5_scores_equal_the_harness_labels_pass(tmp_path):
  """Flan-T5-style: the project's Flax T5 vs the harness's `model(input_ids, labels=cont)`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  from tests.fixtures import make_tiny_t5_dir  # pylint: disable=g-import-not-at-top
  path, model = make_tiny_t5_dir(tmp_path / "t5", tokenizer=True)
  scorer = baselines.load_scorer(path, batch_size=3)
  assert scorer.seq2seq
  tokenizer = transformers.AutoTokenizer.from_pretrained(path)
  contexts = ["the cat sat on", "a dog ran", "birds fly over the "]
  conts = [[" the mat", " a hat", " it"], [" away", " home"], [" sea", " hills", " town", " x"]]
  encoded = baselines.encode_requests(tokenizer, contexts, conts, seq2seq=True)
  units = [u for c, cs in encoded for u in baselines.make_units(c, cs, 512, seq2seq=True)]
  got = scorer.score(units)
  with torch.inference_mode():
    for unit, values in zip(units, got):
      for (_, cont), value in zip(unit.continuations, values):
        logits = model(input_ids=torch.tensor([unit.context]),
                       attention_mask=torch.ones(1, len(unit.context), dtype=torch.long),
                       labels=torch.tensor([cont])).logits
        want = torch.log_softmax(logits[0], -1).gather(-1, torch.tensor(cont)[:, None]).sum()
        assert abs(value - float(want)) < 1e-4


# ---- evaluate.py -----------------------------------------------------------------------------


def _evaluate(*args):
  return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *args, "--noprogress"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_evaluate_py_llm_row_in_the_results_table(tiny_llama, tmp_path):
  common = ["--llm", tiny_llama, "--config", str(REPO / "configs" / "demo.py"),
            "--config.eval.max_examples=8", "--split=test", "--results_dir", str(tmp_path),
            "--name=tiny"]
  result = _evaluate(*common, "--num_fewshot=2", "--llm_metric=acc_norm")
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  assert (row["objective"], row["n"], row["num_fewshot"]) == ("llm:2-shot:acc_norm", 8, 2)
  assert row["accuracy"] == row["acc_norm"] and "acc_ci_low" in row
  out = tmp_path / "eval" / "science_demo" / "test" / "tiny"
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["llm"] == os.path.abspath(tiny_llama) and metrics["fewshot_seed"] == 1234
  assert row["llm"] == metrics["llm"] and "checkpoint" not in row
  assert len((out / "predictions.jsonl").read_text().splitlines()) == 8
  # A second row (acc) in the same table, and the paired test between the two rows. (8 questions:
  # on 6 this random model's acc is 0%, whose Wilson interval rounds to [2.8e-17, ...] and
  # reporting.plot_accuracy then fails on a negative error bar: reported, not ours to fix.)
  result = _evaluate(*common[:-1], "--name=tiny_acc", "--num_fewshot=2")
  assert result.returncode == 0, result.stderr[-3000:]
  from sciqa_jax import comparison  # pylint: disable=g-import-not-at-top
  table = comparison.compare(str(tmp_path), split="test", pairs=["tiny,tiny_acc"])
  assert "tiny vs tiny_acc: paired on the same questions, exact McNemar" in table
  # Another seed under the same name would replace another evaluation: refused.
  result = _evaluate(*common, "--num_fewshot=2", "--llm_metric=acc_norm", "--fewshot_seed=7")
  assert result.returncode == 2 and "another fewshot_seed" in result.stderr
  result = _evaluate("--teacher", "--num_fewshot=2", "--config", str(REPO / "configs/demo.py"),
                     "--results_dir", str(tmp_path))
  assert result.returncode != 0 and "--num_fewshot set without --llm" in result.stderr


@pytest.mark.slow
def test_bench_quick_runs_without_the_harness(tmp_path):
  """The benchmark's own side runs (tiny shapes); the harness needs `make lm-eval-check`'s venv."""
  result = subprocess.run([sys.executable, str(REPO / "bench" / "bench_llm_baseline.py"),
                           "--quick", "--lm_eval_python", str(tmp_path / "none")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "questions/s" in result.stdout and "fraction of the FLOP bound" in result.stdout
