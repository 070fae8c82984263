"""Two-stage evaluation throughput: sciqa_jax (pmapped JAX) vs transformers' PyTorch generate.

The procedure timed on both sides is the one evaluate.py runs for `two_stage` on multiple choice:

  stage 1  greedy generation of a rationale (64 new tokens) from `Objective.rationale_input`,
           decoded to text;
  stage 2  rank classification: the log-likelihood of each of the 4 formatted choices given
           `Objective.answer_input(example, rationale)`, highest wins.

Both sides use the same Flan-T5-small-shaped students (random weights, converted from our Flax
params with `save_pretrained`, so they compute the same function: the script also reports how
often their predictions agree) and the same tokenizer (SentencePiece with a 32k vocabulary,
trained here on the task's text plus random words so that generated ids decode to text). The
PyTorch baseline is the straightforward recipe: `generate(max_new_tokens=64, do_sample=False)`,
then one teacher-forced forward pass over every (question, choice) pair with padded labels.

Timings exclude compilation (a warm-up run on the same shapes comes first; its time is printed
too) and are taken in one process, on this machine's CPU, with the same batch size; torch uses every
core, with denormals flushed to zero as XLA does (`common.py`).

  python bench/bench_eval.py [--num_questions 64] [--batch_size 32]
  python bench/bench_eval.py --quick  # tiny shapes, seconds: a smoke test; figures mean nothing
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import numpy as np

from common import FLAN_T5_SMALL, FLAN_T5_SMALL_VOCAB, TINY, configure_torch


def _tokenizer(texts: list[str], out_dir: str, vocab_size: int):
  from sciqa_jax.tokenizer import train_sentencepiece_tokenizer

  rng = random.Random(0)
  words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 9)))
           for _ in range(60000)]
  filler = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
  return train_sentencepiece_tokenizer(texts + filler, out_dir, vocab_size=vocab_size)


def _torch_two_stage(model, tokenizer, objective, examples, batch_size: int, max_new: int):
  """The PyTorch baseline: HF generate, then one scoring forward pass per batch of pairs."""
  import torch

  from sciqa_jax.data.formatting import candidate_answers

  predictions = []
  with torch.inference_mode():
    for start in range(0, len(examples), batch_size):
      chunk = examples[start:start + batch_size]
      enc = tokenizer([objective.rationale_input(ex) for ex in chunk], return_tensors="pt",
                      padding=True, truncation=True, max_length=512)
      out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, num_beams=1)
      rationales = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
      inputs, targets = [], []
      for ex, rationale in zip(chunk, rationales):
        candidates = candidate_answers(ex)
        inputs += [objective.answer_input(ex, rationale)] * len(candidates)
        targets += candidates
      enc = tokenizer(inputs, return_tensors="pt", padding=True, truncation=True, max_length=512)
      labels = tokenizer(targets, return_tensors="pt", padding=True).input_ids
      labels[labels == tokenizer.pad_token_id] = -100
      logits = model(**enc, labels=labels).logits
      log_probs = torch.log_softmax(logits.float(), dim=-1)
      mask = labels != -100
      picked = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
      scores = (picked * mask).sum(-1).numpy()
      offset = 0
      for ex in chunk:
        n = len(ex.choices)
        predictions.append(ex.labels[int(np.argmax(scores[offset:offset + n]))])
        offset += n
  return predictions


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_questions", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
  args = parser.parse_args()
  # The SentencePiece vocabulary trained here; the model's is padded by 28, as Flan-T5's is.
  shape, vocab_size = FLAN_T5_SMALL, FLAN_T5_SMALL_VOCAB - 28
  if args.quick:
    shape, vocab_size = TINY, 1000
    args.num_questions, args.batch_size, args.max_new_tokens = 8, 4, 8

  import jax
  import transformers
  torch = configure_torch()

  from sciqa_jax import evaluation
  from sciqa_jax.config import base_config
  from sciqa_jax.data.example import CHOICE
  from sciqa_jax.data.registry import get_task
  from sciqa_jax.models import T5, T5Config, init_params, save_pretrained
  from sciqa_jax.objectives import Objective

  task = get_task("science_demo")
  examples = task.load("test", source="builtin", max_examples=args.num_questions)
  assert all(len(ex.choices) == 4 for ex in examples)
  objective = Objective(name="two_stage")
  work = tempfile.mkdtemp(prefix="bench_eval_")
  train_texts = [objective.answer_input(ex, " ".join(ex.solution))
                 for ex in task.load("train", source="builtin")]
  tokenizer = _tokenizer(train_texts, f"{work}/tokenizer", vocab_size)
  config = T5Config(vocab_size=vocab_size + 28, **shape, dropout_rate=0.0)
  model = T5(config)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  params = {"rationale": init_params(config, keys[0]), "answer": init_params(config, keys[1])}

  eval_config = base_config().eval
  eval_config.batch_size = args.batch_size
  eval_config.max_rationale_length = args.max_new_tokens
  run_jax = lambda: evaluation.evaluate_split(model, params, tokenizer, objective, examples,
                                              eval_config, answer_type=CHOICE, progress=False)
  t0 = time.perf_counter()
  run_jax()
  jax_warmup = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax_result = run_jax()
  jax_time = time.perf_counter() - t0

  torch_models = {}
  for name, p in params.items():
    save_pretrained(config, p, f"{work}/{name}")
    torch_models[name] = transformers.T5ForConditionalGeneration.from_pretrained(
        f"{work}/{name}").eval()
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(f"{work}/tokenizer")

  class _TwoStudents(torch.nn.Module):
    """Routes generate() to the rationale student and forward() to the answer student."""

    def __init__(self):
      super().__init__()
      self.rationale, self.answer = torch_models["rationale"], torch_models["answer"]

    def generate(self, **kw):
      return self.rationale.generate(**kw)

    def forward(self, **kw):
      return self.answer(**kw)

  torch_model = _TwoStudents()
  small = examples[:args.batch_size]
  t0 = time.perf_counter()
  _torch_two_stage(torch_model, hf_tokenizer, objective, small, args.batch_size,
                   args.max_new_tokens)
  torch_warmup = time.perf_counter() - t0
  t0 = time.perf_counter()
  torch_preds = _torch_two_stage(torch_model, hf_tokenizer, objective, examples, args.batch_size,
                                 args.max_new_tokens)
  torch_time = time.perf_counter() - t0

  jax_preds = [row["prediction"] for row in jax_result.predictions]
  agree = np.mean([a == b for a, b in zip(jax_preds, torch_preds)])
  jax_qps, torch_qps = len(examples) / jax_time, len(examples) / torch_time
  print(f"two-stage evaluation, {len(examples)} questions x 4 choices, greedy "
        f"{args.max_new_tokens}-token rationales, {'tiny' if args.quick else 'Flan-T5-small'} "
        "shape (random weights), "
        f"batch {args.batch_size}, {jax.local_device_count()} JAX device(s) "
        f"[{jax.devices()[0].platform}], torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads")
  print(f"  sciqa_jax (pmap)        {jax_qps:8.2f} questions/s  ({jax_time:.1f} s; first run with "
        f"compilation {jax_warmup:.1f} s)")
  print(f"  transformers (PyTorch)  {torch_qps:8.2f} questions/s  ({torch_time:.1f} s; warm-up "
        f"batch {torch_warmup:.1f} s)")
  print(f"  speed-up {jax_qps / torch_qps:.2f}x (target >= 5x); predictions agree on "
        f"{100 * agree:.0f}% of questions")


if __name__ == "__main__":
  main()
