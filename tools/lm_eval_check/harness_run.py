"""Runs lm-evaluation-harness's `hf` model on tasks and writes what it scored, as JSON.

Runs in the harness's own environment (`make lm-eval-check` installs it apart from the project's):
it imports lm_eval and the standard library only. For each task it writes every question's
requests (context, continuation), the log-likelihood of each, acc and acc_norm, and the task's
aggregate results; and the wall time of the evaluation and of the model's `loglikelihood` calls
(the fastest of `--repeats`; bench/bench_llm_baseline.py reads those).

  python harness_run.py --model DIR --tasks sciqa_arc_easy --include_path DIR --num_fewshot 5 \\
      --out harness.json [--batch_size 8] [--limit N] [--warmup N] [--repeats N | --serve]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

READY, RESULT = "@@ready", "@@result "  # --serve's protocol lines on stdout


def _timed_loglikelihood(lm):
  """Wraps lm.loglikelihood to accumulate the seconds spent in it (the model's share)."""
  inner = lm.loglikelihood
  spent = {"seconds": 0.0, "inner": inner}

  def loglikelihood(requests, *args, **kwargs):
    start = time.perf_counter()
    try:
      return inner(requests, *args, **kwargs)
    finally:
      spent["seconds"] += time.perf_counter() - start

  lm.loglikelihood = loglikelihood
  return spent


def _samples(samples):
  rows = []
  for s in samples:
    rows.append({"doc_id": s["doc_id"], "id": s["doc"].get("id"),
                 "arguments": [list(a) for a in s["arguments"]],
                 "lls": [float(r[0]) for r in s["filtered_resps"]],
                 "acc": s["acc"], "acc_norm": s.get("acc_norm")})
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True)
  parser.add_argument("--tasks", required=True, help="comma-separated")
  parser.add_argument("--include_path", required=True)
  parser.add_argument("--num_fewshot", type=int, default=0)
  parser.add_argument("--batch_size", default="8")
  parser.add_argument("--limit", type=int, default=None)
  parser.add_argument("--warmup", type=int, default=0,
                      help="first evaluate this many questions untimed (bench)")
  parser.add_argument("--repeats", type=int, default=1,
                      help="timed evaluations; the fastest is reported (bench)")
  parser.add_argument("--serve", action="store_true",
                      help="after the warm-up, one timed run per 'run' line on stdin (bench: "
                      "interleaved with another program's runs)")
  parser.add_argument("--device", default="cpu")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()

  import lm_eval  # pylint: disable=g-import-not-at-top
  from lm_eval.models.huggingface import HFLM  # pylint: disable=g-import-not-at-top
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top

  batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
  lm = HFLM(pretrained=args.model, dtype="float32", device=args.device, batch_size=batch_size)
  manager = TaskManager(include_path=args.include_path)
  tasks = args.tasks.split(",")

  def evaluate(limit):
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=args.num_fewshot,
                                   task_manager=manager, log_samples=True, limit=limit,
                                   bootstrap_iters=0)

  def timed():
    spent = _timed_loglikelihood(lm)
    start = time.perf_counter()
    out = evaluate(args.limit)
    lm.loglikelihood = spent["inner"]
    return time.perf_counter() - start, spent["seconds"], out

  if args.warmup:
    evaluate(args.warmup)
  runs = []  # (seconds, seconds in loglikelihood, output) per timed run; the fastest is reported
  if args.serve:  # one timed run per "run" line on stdin, until another line or EOF
    print(READY, flush=True)
    for line in sys.stdin:
      if line.strip() != "run":
        break
      runs.append(timed())
      print(RESULT + json.dumps({"seconds": runs[-1][0], "loglikelihood_seconds": runs[-1][1]}),
            flush=True)
  else:
    runs = [timed() for _ in range(args.repeats)]
  seconds, loglikelihood_seconds, out = min(runs, key=lambda run: run[0])
  report = {"seconds": seconds, "loglikelihood_seconds": loglikelihood_seconds,
            "all_seconds": [run[0] for run in runs],
            "tasks": {t: {"results": out["results"][t], "samples": _samples(out["samples"][t])}
                      for t in tasks}}
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(report, f, ensure_ascii=False)


if __name__ == "__main__":
  main()
