"""Few-shot LLM baseline throughput: sciqa_jax.baselines vs lm-evaluation-harness's `hf` backend.

Both score the same random Llama-shaped causal LM (d 512, 8 layers, 8 heads, 2 KV heads, MLP 1408,
a 32000-token vocabulary like Llama 2's: the tokenizer, a byte-level BPE trained on the questions,
uses the first ids; fp32) on the same local ARC-Easy-schema files (the built-in science questions),
k-shot, and must agree on every question's acc. Timed: the whole evaluation after loading the
model (prompts, tokenisation, scoring, metrics), after a warm-up (ours: the same run, which also
compiles the JAX backend's shapes; the harness: a few questions). The CPU may be shared with other
jobs, so `--rounds` rounds interleave ours, the matmul peak and the harness (kept running in its
own process between rounds: each side sees the same load) and the fastest run of each counts;
questions/s on each side, the ratio, and the median of the rounds' ratios. The harness runs in its own environment (`--lm_eval_python`, as
`make lm-eval-check` installs it) with the same thread count; without it only ours is timed.

FLOPs: the arithmetic each method performs (linear layers, attention scores and values, output
head), counted from the token counts: the harness runs every (context, choice) pair whole with
the head on every position; ours runs each context once (head on its last position only) and
each choice's tokens on its cache. Our achieved FLOP/s is given as a fraction of this CPU's fp32
matmul peak (a large `torch.mm`: the scoring runs in PyTorch), i.e. of the FLOP bound.

  python bench/bench_llm_baseline.py [--num_fewshot 5] [--num_questions 48] [--backend torch|jax]
      [--lm_eval_python build/lm-eval-venv/bin/python]
  python bench/bench_llm_baseline.py --quick   # tiny shapes, seconds: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import configure_torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_DIR = os.path.join(REPO, "tools", "lm_eval_check")
sys.path.insert(0, CHECK_DIR)

import check  # noqa: E402  pylint: disable=wrong-import-position
import harness_run  # noqa: E402  pylint: disable=wrong-import-position
import tiny_lm  # noqa: E402  pylint: disable=wrong-import-position

torch = configure_torch()

SHAPE = dict(vocab_size=32000, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=2, intermediate_size=1408, max_position_embeddings=2048)
QUICK = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=128, max_position_embeddings=2048)
WARMUP = 4


def layer_flops(cfg: dict, tokens: int, attended: int) -> float:
  """Linear-layer and attention FLOPs of `tokens` positions attending `attended` keys in total."""
  d, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
  head_dim = d // heads
  linear = d * heads * head_dim * 2 + d * kv * head_dim * 2 + 3 * d * cfg["intermediate_size"]
  return cfg["num_hidden_layers"] * (2 * tokens * linear + 4 * attended * heads * head_dim)


def method_flops(cfg: dict, requests) -> tuple[float, float]:
  """(ours, harness) FLOPs for [(context ids, [continuation ids])] per question."""
  head = 2 * cfg["hidden_size"] * cfg["vocab_size"]
  ours = harness = 0.0
  for context, conts in requests:
    n = len(context)
    ours += layer_flops(cfg, n, n * (n + 1) // 2) + head
    for cont in conts:
      m = len(cont) - 1  # the choice's tokens fed after the context (its last is only predicted)
      ours += layer_flops(cfg, m, m * n + m * (m + 1) // 2) + head * m
      total = n + len(cont) - 1
      harness += layer_flops(cfg, total, total * (total + 1) // 2) + head * total
  return ours, harness


def matmul_peak(n: int, repeats: int = 5) -> float:
  """FLOP/s of the fastest of `repeats` large fp32 `torch.mm`s."""
  a = torch.randn(n, n)
  torch.mm(a, a)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    torch.mm(a, a)
    times.append(time.perf_counter() - start)
  return 2 * n**3 / min(times)


class Ours:
  """Our evaluation of the first n test questions, set up (and warmed up) once, timed per round."""

  def __init__(self, model_dir: str, data_dir: str, k: int, n: int, batch_size: int,
               backend: str):
    from sciqa_jax import baselines  # pylint: disable=g-import-not-at-top
    from sciqa_jax.data.registry import get_task  # pylint: disable=g-import-not-at-top

    task = get_task("arc_easy")
    path = os.path.join(data_dir, "arc_easy", "ARC-Easy-{split}.jsonl")
    self.test, self.train = (task.load(s, source="local", path=path) for s in ("test", "train"))
    self.baselines, self.k, self.n = baselines, k, n
    self.scorer = baselines.load_scorer(model_dir, batch_size=batch_size, device="cpu",
                                        backend=backend)
    self.rows = self.evaluate().predictions  # the JAX backend compiles its shapes; torch warms up

  def evaluate(self):
    return self.baselines.evaluate_llm(self.scorer, self.test, self.train, "arc_easy",
                                       num_fewshot=self.k, max_examples=self.n, progress=False)

  def seconds(self) -> float:
    start = time.perf_counter()
    self.evaluate()
    return time.perf_counter() - start

  def requests(self):
    """[(context ids, [continuation ids])] per question, as scored."""
    b, test = self.baselines, self.test[:self.n]
    fmt = b.harness_format("arc_easy")
    shots = b.sample_exemplars(test, self.train, self.k)
    contexts = [b.build_context(fmt, s, ex) for s, ex in zip(shots, test)]
    conts = [[" " + c for c in fmt.choices(ex)] for ex in test]
    return b.encode_requests(self.scorer.tokenizer, contexts, conts)


class Harness:
  """lm-eval in its own environment and process, set up and warmed up once; one timed evaluation
  per `seconds()` call (`harness_run.py --serve`), so that rounds interleave with ours."""

  def __init__(self, python: str, model_dir: str, task_dir: str, k: int, n: int,
               batch_size: int, workdir: str):
    self.out = os.path.join(workdir, "harness.json")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS=str(torch.get_num_threads()),
               HF_DATASETS_CACHE=os.path.join(workdir, "hf_datasets_cache"))
    self.process = subprocess.Popen(
        [python, os.path.join(CHECK_DIR, "harness_run.py"), "--model", model_dir,
         "--tasks", "sciqa_arc_easy", "--include_path", task_dir, "--num_fewshot", str(k),
         "--limit", str(n), "--warmup", str(WARMUP), "--batch_size", str(batch_size),
         "--out", self.out, "--serve"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    self._read_until(harness_run.READY)

  def _read_until(self, prefix: str) -> str:
    for line in self.process.stdout:
      if line.startswith(prefix):
        return line[len(prefix):]
    raise RuntimeError(f"harness_run.py exited (status {self.process.wait()}) before {prefix!r}")

  def seconds(self) -> float:
    self.process.stdin.write("run\n")
    self.process.stdin.flush()
    return json.loads(self._read_until(harness_run.RESULT))["seconds"]

  def close(self) -> dict:
    """Stops the harness; its fastest run's report (timings, every question's scores)."""
    self.process.stdin.write("quit\n")
    self.process.stdin.close()
    if self.process.wait():
      raise RuntimeError(f"harness_run.py failed (status {self.process.returncode})")
    with open(self.out, encoding="utf-8") as f:
      return json.load(f)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_fewshot", type=int, default=5)
  parser.add_argument("--num_questions", type=int, default=48)
  parser.add_argument("--batch_size", type=int, default=16, help="ours: questions per batch")
  parser.add_argument("--harness_batch_size", type=int, default=16,
                      help="the harness: requests (question, choice) per batch")
  parser.add_argument("--backend", default="torch", choices=("torch", "jax"),
                      help="ours: PyTorch, or the Flax CausalLM (jit-compiled first, untimed)")
  parser.add_argument("--lm_eval_python",
                      default=os.path.join(REPO, "build", "lm-eval-venv", "bin", "python"))
  parser.add_argument("--rounds", type=int, default=5,
                      help="rounds of (ours, matmul peak, the harness), interleaved so that both "
                      "sides see the same machine load; the fastest of each counts")
  parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
  args = parser.parse_args()
  shape = QUICK if args.quick else SHAPE
  n, k = (8, 1) if args.quick else (args.num_questions, args.num_fewshot)
  rounds = 1 if args.quick else args.rounds
  harness = os.path.exists(args.lm_eval_python)
  print(f"cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}; model: {shape}")
  with tempfile.TemporaryDirectory() as workdir:
    data_dir = os.path.join(workdir, "data")
    texts = check.write_data(data_dir, num_train=200, num_eval=n + WARMUP)
    tokenizer = tiny_lm.make_tokenizer(texts, os.path.join(workdir, "tokenizer"))
    model_dir = tiny_lm.make_llama(os.path.join(workdir, "model"), tokenizer, **shape)
    ours = Ours(model_dir, data_dir, k, n, args.batch_size, args.backend)
    peer = None
    if harness:
      check.write_tasks(os.path.join(workdir, "tasks"), _harness_tasks(args.lm_eval_python),
                        data_dir)
      peer = Harness(args.lm_eval_python, model_dir, os.path.join(workdir, "tasks"), k, n,
                     args.harness_batch_size, workdir)
    times, peaks, peer_times = [], [], []
    for _ in range(rounds):
      times.append(ours.seconds())
      peaks.append(matmul_peak(512 if args.quick else 2048))
      if peer:
        peer_times.append(peer.seconds())
    report = peer.close() if peer else None
    _report(args, shape, n, k, ours, times, peaks, peer_times, report)


def _report(args, shape, n, k, ours, times, peaks, peer_times, report):
  seconds, peak = min(times), max(peaks)
  requests = ours.requests()
  ours_flops, harness_flops = method_flops(shape, requests)
  print(f"ARC-Easy schema, {n} questions x 4 choices, {k}-shot, mean context "
        f"{sum(len(c) for c, _ in requests) / n:.0f} tokens; fastest of {len(times)} interleaved "
        "rounds")
  print(f"  sciqa_jax.baselines  {n / seconds:8.2f} questions/s  ({seconds:.1f} s; rounds "
        f"{', '.join(f'{t:.1f}' for t in times)} s; batch {args.batch_size} questions, "
        f"{args.backend})")
  if report:
    samples = report["tasks"]["sciqa_arc_easy"]["samples"]
    agree = sum(float(r["correct_acc"]) == s["acc"] for r, s in zip(ours.rows, samples))
    ratios = sorted(p / t for p, t in zip(peer_times, times))
    best = report["seconds"]
    print(f"  lm-eval hf backend   {n / best:8.2f} questions/s  ({best:.1f} s, "
          f"{report['loglikelihood_seconds']:.1f} s of it in loglikelihood; rounds "
          f"{', '.join(f'{t:.1f}' for t in peer_times)} s; batch {args.harness_batch_size} "
          "requests)")
    print(f"  speed-up {best / seconds:.2f}x fastest vs fastest, {ratios[len(ratios) // 2]:.2f}x "
          f"median of the rounds (target >= 2x), {report['loglikelihood_seconds'] / seconds:.2f}x "
          f"against the harness's loglikelihood calls alone; acc agrees on {agree}/{n} questions")
  else:
    print(f"  (no lm-eval at {args.lm_eval_python}: `make lm-eval-check` installs it; the "
          "harness is not timed)")
  print(f"FLOPs: ours {ours_flops / 1e9:,.1f} GFLOP, the harness's method "
        f"{harness_flops / 1e9:,.1f} GFLOP ({harness_flops / ours_flops:.1f}x); ours achieved "
        f"{ours_flops / seconds / 1e9:,.1f} GFLOP/s, fp32 matmul peak {peak / 1e9:,.1f} GFLOP/s "
        f"(torch.mm), fraction of the FLOP bound {ours_flops / seconds / peak:.2f}")


def _harness_tasks(python: str) -> str:
  return subprocess.run([python, "-c", "import lm_eval.tasks, os; "
                         "print(os.path.dirname(lm_eval.tasks.__file__))"],
                        check=True, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
  main()
