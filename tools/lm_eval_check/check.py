"""The LLM baseline against lm-evaluation-harness itself: same model, same files, same numbers.

Builds, offline, a tiny random Llama (LlamaForCausalLM) and a byte-level BPE tokenizer that adds
BOS like Llama's (`tiny_lm.py`), both saved with `save_pretrained`, and local JSONL files of three
tasks in their hub schemas, from the built-in science questions: ARC-Easy (test split),
OpenBookQA (test) and CommonsenseQA (validation, five choices, lettered prompt). Then, for each
scenario (0-shot; 5-shot, with our PyTorch and our JAX backend; 5-shot with the model's length
cut to 160 tokens, so that long prompts lose tokens on the left), it runs

  ours     evaluate.py --llm <model> --llm_backend torch|jax --config configs/demo.py
           --config.task=<task> --config.data.source=local ... --num_fewshot k   (this project's
           environment)
  harness  lm_eval's `hf` model on the harness's own task yamls, included unchanged but for their
           data files (tasks/*.yaml), --num_fewshot k (`harness_run.py`, in the harness's own
           environment, `--lm_eval_python`)

and compares, question by question: the prompt and continuations of every request (ours rebuilt
from the exemplar ids evaluate.py recorded), each choice's log-likelihood (within 1e-4), and acc
and acc_norm (identical, per question and in total). The exemplars match because both sides draw
them with the harness's sampler and seed (1234) over the same files in the same order. Exits 1 on
any difference.

  make lm-eval-check   # installs lm-eval into build/lm-eval-venv, then:
  python tools/lm_eval_check/check.py --lm_eval_python build/lm-eval-venv/bin/python
      [--workdir runs/lm_eval_check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import tiny_lm  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

TOLERANCE = 1e-4
NUM_TRAIN, NUM_EVAL = 40, 30
# task -> (harness task name, evaluated split, data subdirectory, evaluate.py's data.path)
TASKS = {
    "arc_easy": ("sciqa_arc_easy", "test", "arc_easy", "arc_easy/ARC-Easy-{split}.jsonl"),
    "openbookqa": ("sciqa_openbookqa", "test", "openbookqa", "openbookqa"),
    "commonsense_qa": ("sciqa_commonsense_qa", "validation", "commonsense_qa", "commonsense_qa"),
}
# (label, num_fewshot, model directory name, tasks, our --llm_backend); one harness run per
# (model, num_fewshot).
SCENARIOS = (("0-shot", 0, "model", tuple(TASKS), "torch"),
             ("5-shot", 5, "model", tuple(TASKS), "torch"),
             ("5-shot, JAX backend", 5, "model", tuple(TASKS), "jax"),
             ("5-shot, 160-token model", 5, "model_160", ("arc_easy",), "torch"))


# ---- the files -------------------------------------------------------------------------------


def _questions(num_train: int, num_eval: int):
  """(train, validation, test) science questions with their (label, text) choices and answer."""
  from sciqa_jax.data import science  # pylint: disable=g-import-not-at-top
  return [science.load_split(split, seed=0, num_examples=n)
          for split, n in (("train", num_train), ("validation", num_eval), ("test", num_eval))]


def _arc_row(ex):
  return {"id": f"Mercury_{ex.id}", "question": ex.question,
          "choices": {"text": [t for _, t in ex.choices], "label": list(ex.labels)},
          "answerKey": ex.answer}


def _obqa_row(ex):
  return {"id": f"{ex.id}-obqa", "question_stem": ex.question,
          "choices": {"text": [t for _, t in ex.choices], "label": list(ex.labels)},
          "answerKey": ex.answer}


def _csqa_row(ex, extra: str):
  texts = [t for _, t in ex.choices] + [extra]
  return {"id": f"csqa-{ex.id}", "question": ex.question, "question_concept": "science",
          "choices": {"label": list("ABCDE"), "text": texts}, "answerKey": ex.answer}


def _write_jsonl(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_data(data_dir: str, num_train: int = NUM_TRAIN, num_eval: int = NUM_EVAL
               ) -> list[str]:
  """The three tasks' local files; returns their text (to train the tokenizer on)."""
  splits = _questions(num_train, num_eval)
  names = ("train", "validation", "test")
  arc_files = {"train": "Train", "validation": "Dev", "test": "Test"}
  csqa_files = {"train": "train_rand_split", "validation": "dev_rand_split"}
  texts = []
  for name, examples in zip(names, splits):
    _write_jsonl(f"{data_dir}/arc_easy/ARC-Easy-{arc_files[name]}.jsonl",
                 [_arc_row(ex) for ex in examples])
    _write_jsonl(f"{data_dir}/openbookqa/{name}.jsonl",
                 [_obqa_row(ex) for ex in examples])
    if name in csqa_files:
      extras = ["none of these", "all of them", "it cannot be known"]
      _write_jsonl(f"{data_dir}/commonsense_qa/{csqa_files[name]}.jsonl",
                   [_csqa_row(ex, extras[i % 3]) for i, ex in enumerate(examples)])
    texts += [f"Question: {ex.question}\nAnswer: " + " ".join(t for _, t in ex.choices)
              for ex in examples]
  return texts + ["A. B. C. D. E. none of these all of them it cannot be known"]


def build_models(workdir: str, texts: list[str]) -> None:
  """The tokenizer and two copies of one random Llama: full length, and max length 160."""
  tokenizer = tiny_lm.make_tokenizer(texts, os.path.join(workdir, "tokenizer"))
  tiny_lm.make_llama(os.path.join(workdir, "model"), tokenizer)
  tiny_lm.make_llama(os.path.join(workdir, "model_160"), tokenizer, max_position_embeddings=160)


def write_tasks(task_dir: str, harness_tasks: str, data_dir: str) -> None:
  os.makedirs(task_dir, exist_ok=True)
  for name in os.listdir(os.path.join(HERE, "tasks")):
    with open(os.path.join(HERE, "tasks", name), encoding="utf-8") as f:
      text = f.read().replace("@HARNESS_TASKS@", harness_tasks).replace("@DATA@", data_dir)
    with open(os.path.join(task_dir, name), "w", encoding="utf-8") as f:
      f.write(text)


# ---- the two runs ----------------------------------------------------------------------------


def _run(cmd, **kwargs):
  print("+", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True, **kwargs)


def run_harness(python: str, model: str, task_dir: str, tasks, k: int, out: str) -> dict:
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             HF_DATASETS_CACHE=os.path.join(os.path.dirname(out), "hf_datasets_cache"))
  _run([python, os.path.join(HERE, "harness_run.py"), "--model", model,
        "--tasks", ",".join(TASKS[t][0] for t in tasks), "--include_path", task_dir,
        "--num_fewshot", str(k), "--batch_size", "4", "--out", out], env=env)
  with open(out, encoding="utf-8") as f:
    return json.load(f)


def run_ours(model: str, task: str, k: int, backend: str, data_dir: str, results_dir: str
             ) -> list[dict]:
  _, split, _, path = TASKS[task]
  _run([sys.executable, os.path.join(REPO, "evaluate.py"), "--llm", model,
        f"--llm_backend={backend}",
        "--config", os.path.join(REPO, "configs/demo.py"), f"--config.task={task}",
        "--config.data.source=local", f"--config.data.path={os.path.join(data_dir, path)}",
        f"--split={split}", f"--num_fewshot={k}", "--results_dir", results_dir,
        f"--name={task}", "--noprogress"], cwd=REPO)
  from sciqa_jax import reporting  # pylint: disable=g-import-not-at-top
  return reporting.read_jsonl(os.path.join(results_dir, "eval", task, split, task,
                                           "predictions.jsonl"))


# ---- the comparison --------------------------------------------------------------------------


def _our_requests(task: str, data_dir: str, rows: list[dict]) -> list[list[tuple[str, str]]]:
  """The requests evaluate.py scored, rebuilt from the exemplar ids it recorded."""
  from sciqa_jax import baselines  # pylint: disable=g-import-not-at-top
  from sciqa_jax.data.registry import get_task  # pylint: disable=g-import-not-at-top

  _, split, _, path = TASKS[task]
  load = get_task(task).load
  examples = load(split, source="local", path=os.path.join(data_dir, path))
  train = {ex.id: ex for ex in load("train", source="local", path=os.path.join(data_dir, path))}
  fmt = baselines.harness_format(task)
  requests = []
  for ex, row in zip(examples, rows):
    context = baselines.build_context(fmt, [train[i] for i in row["exemplars"]], ex)
    requests.append([(context, fmt.target_delimiter + c) for c in fmt.choices(ex)])
  return requests


def compare(task: str, ours: list[dict], harness: dict, requests) -> tuple[list[str], dict]:
  """Differences between the two runs of one task (empty: none), and a summary."""
  samples = sorted(harness["samples"], key=lambda s: s["doc_id"])
  problems = []
  if len(samples) != len(ours):
    return [f"{task}: harness scored {len(samples)} questions, ours {len(ours)}"], {}
  worst = 0.0
  for q, (row, sample, reqs) in enumerate(zip(ours, samples, requests)):
    if [tuple(a) for a in sample["arguments"]] != reqs:
      problems.append(f"{task} question {q}: the prompts differ:\n  ours    {reqs[0]!r}\n"
                      f"  harness {tuple(sample['arguments'][0])!r}")
    ours_lls = list(row["scores"].values())
    worst = max([worst] + [abs(a - b) for a, b in zip(ours_lls, sample["lls"])])
    if any(abs(a - b) > TOLERANCE for a, b in zip(ours_lls, sample["lls"])):
      problems.append(f"{task} question {q}: log-likelihoods ours {ours_lls} harness "
                      f"{sample['lls']}")
    for metric in ("acc", "acc_norm"):
      if sample.get(metric) is not None and float(row[f"correct_{metric}"]) != sample[metric]:
        problems.append(f"{task} question {q}: {metric} ours {row[f'correct_{metric}']} "
                        f"harness {sample[metric]}")
  n = len(ours)
  summary = {"n": n, "max_abs_diff": worst,
             "ours_acc": sum(r["correct_acc"] for r in ours) / n,
             "harness_acc": sum(s["acc"] for s in samples) / n,
             "ours_acc_norm": sum(r["correct_acc_norm"] for r in ours) / n,
             "harness_acc_norm": (sum(s["acc_norm"] for s in samples) / n
                                  if samples[0].get("acc_norm") is not None else None)}
  return problems, summary


def _fraction(value) -> str:
  return "(not reported)" if value is None else f"{value:.4f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lm_eval_python", required=True,
                      help="python of an environment with lm-eval[hf] installed")
  parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "lm_eval_check"))
  args = parser.parse_args()
  workdir = os.path.abspath(args.workdir)
  shutil.rmtree(workdir, ignore_errors=True)
  data_dir = os.path.join(workdir, "data")
  harness_tasks = subprocess.run(
      [args.lm_eval_python, "-c", "import lm_eval.tasks, os; "
       "print(os.path.dirname(lm_eval.tasks.__file__))"],
      check=True, capture_output=True, text=True).stdout.strip()
  build_models(workdir, write_data(data_dir))
  write_tasks(os.path.join(workdir, "tasks"), harness_tasks, data_dir)

  problems, lines, harness_runs = [], [], {}
  for label, k, model_name, tasks, backend in SCENARIOS:
    model = os.path.join(workdir, model_name)
    slug = f"{model_name}-{k}shot"
    if slug not in harness_runs:
      harness_runs[slug] = run_harness(
          args.lm_eval_python, model, os.path.join(workdir, "tasks"), tasks, k,
          os.path.join(workdir, "harness", f"{slug}.json"))
    harness = harness_runs[slug]
    for task in tasks:
      ours = run_ours(model, task, k, backend, data_dir,
                      os.path.join(workdir, "ours", f"{slug}-{backend}"))
      found, summary = compare(task, ours, harness["tasks"][TASKS[task][0]],
                               _our_requests(task, data_dir, ours))
      problems += found
      if summary:
        lines.append(f"| {label} | {task} | {summary['n']} | {summary['max_abs_diff']:.1e} | "
                     f"{summary['ours_acc']:.4f} / {summary['harness_acc']:.4f} | "
                     f"{summary['ours_acc_norm']:.4f} / {_fraction(summary['harness_acc_norm'])} |")
  print("\n| scenario | task | n | max abs log-lik diff | acc ours / harness | "
        "acc_norm ours / harness |\n|---|---|---:|---:|---:|---:|")
  print("\n".join(lines))
  if problems:
    print(f"\n{len(problems)} differences:\n" + "\n".join(problems[:20]))
    sys.exit(1)
  print(f"\nlm-eval check passed: prompts identical, log-likelihoods within {TOLERANCE:g}, "
        "acc and acc_norm identical on every question.")


if __name__ == "__main__":
  main()
