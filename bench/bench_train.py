"""Training throughput: train.py end to end, and the two-stage step against a PyTorch peer.

  python bench/bench_train.py [--steps 30] [--batch 8] [--input_len 256] [--target_len 128]
  python bench/bench_train.py --quick  # tiny shapes, seconds: a smoke test; figures mean nothing

1. End to end: `train.py` as a subprocess on a synthetic rationale cache (the built-in science task,
   its worked solutions as rationales), two students with the Flan-T5-small body (d_model 512,
   8+8 layers, 6 heads, d_ff 1024, gated-GELU, untied head) initialised at random; the vocabulary is
   the SentencePiece tokenizer trained on the cache (no hub access). Steady-state tokens/s is read
   from metrics.jsonl (the trainer leaves the compiling first step out of its timer; the first
   log interval is also dropped here).
2. The two-stage train step alone (both students, both streams, AdamW, the full 32128 vocabulary)
   against two Hugging Face `T5ForConditionalGeneration` models of the same config in PyTorch with
   `torch.optim.AdamW`, same batch and lengths, random token ids, denormals flushed to zero on both
   sides (`common.py`). Prints steps/s of each and the ours/peer ratio (> 1 = we are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

from common import FLAN_T5_SMALL, FLAN_T5_SMALL_VOCAB, TINY, configure_torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


CONFIG = """
from sciqa_jax.config import base_config
def get_config():
  c = base_config()
  c.cache_dir = {cache!r}
  for k, v in {arch!r}.items():
    c.model[k] = v
  c.model.tokenizer_vocab_size = 2000
  c.model.dtype = {dtype!r}
  c.train.steps, c.train.batch_size = {steps}, {batch}
  c.train.max_input_length, c.train.max_target_length = {input_len}, {target_len}
  c.train.log_every = {log_every}
  c.train.checkpoint_every = {steps}
  c.train.validate, c.train.export_hf = False, False
  return c
"""


def build_cache(path: str, num_examples: int = 256) -> None:
  from sciqa_jax.cache import CacheWriter, RationaleRecord
  from sciqa_jax.data.registry import get_task
  examples = get_task("science_demo").load("train", source="builtin", max_examples=num_examples)
  records = [RationaleRecord(e, "; ".join(e.solution), e.answer, True, 0, "template", "bench")
             for e in examples]
  writer = CacheWriter(path, {"bench": True})
  writer.start_split("train", examples, 1)
  writer.write_shard("train", 0, records, {"kept": len(records)})
  writer.finish_split("train")


def bench_end_to_end(args, dtype: str) -> float:
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, "cache")
    build_cache(cache)
    log_every = max(args.steps // 5, 1)
    config = os.path.join(tmp, "bench_config.py")
    with open(config, "w") as f:
      f.write(textwrap.dedent(CONFIG.format(
          cache=cache, arch=args.arch, dtype=dtype, steps=args.steps, batch=args.batch,
          input_len=args.input_len, target_len=args.target_len, log_every=log_every)))
    workdir = os.path.join(tmp, "work")
    subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--config", config,
                    "--workdir", workdir], check=True, env=dict(os.environ, PYTHONPATH=REPO),
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [r for r in map(json.loads, f) if r["split"] == "train" and "tokens_per_sec" in r]
    steady = rows[1:] or rows
    return sum(r["tokens_per_sec"] for r in steady) / len(steady)


def random_batch(rng, batch: int, input_len: int, target_len: int, vocab: int):
  import numpy as np
  def stream():
    labels = rng.integers(2, vocab, (batch, target_len)).astype(np.int32)
    labels[:, -1] = 1
    decoder_input_ids = np.concatenate([np.zeros((batch, 1), np.int32), labels[:, :-1]], 1)
    return {"input_ids": rng.integers(2, vocab, (batch, input_len)).astype(np.int32),
            "attention_mask": np.ones((batch, input_len), np.int32),
            "decoder_input_ids": decoder_input_ids, "labels": labels,
            "decoder_attention_mask": np.ones((batch, target_len), np.int32)}
  return {"rationale": stream(), "answer": stream()}


def bench_ours(args, batch_np, dtype: str) -> float:
  import jax
  from sciqa_jax import sharding
  from sciqa_jax import train_step as ts
  from sciqa_jax.config import base_config
  from sciqa_jax.models import T5, T5Config, init_params
  from sciqa_jax.objectives import Objective
  config = T5Config(vocab_size=args.vocab, dropout_rate=0.0, dtype=dtype, **args.arch)
  c = base_config()
  c.train.optimizer, c.train.learning_rate, c.train.grad_clip_norm = "adamw", 1e-4, 0.0
  objective = Objective("two_stage")
  # What train.py runs for two students: one optimizer each over the whole run.
  optimizer = ts.make_students_optimizer(
      c.train, {student: (0, c.train.steps) for student in objective.students})
  keys = jax.random.split(jax.random.key(0), 2)
  params = {s: init_params(config, keys[i]) for i, s in enumerate(objective.students)}
  mesh = sharding.make_mesh("data")
  make = lambda p: ts.create_train_state(p, optimizer, jax.random.key(1))
  shardings = sharding.state_shardings(jax.eval_shape(make, params), mesh, "data")
  state = jax.jit(make, out_shardings=shardings)(params)
  step = sharding.jit_train_step(ts.make_train_step(T5(config), optimizer, objective), shardings,
                                 sharding.batch_sharding(mesh))
  batch = sharding.shard_batch(batch_np, mesh)
  state, metrics = step(state, batch)  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.pair_steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return args.pair_steps / (time.perf_counter() - start)


def bench_peer(args, batch_np) -> float:
  import transformers
  torch = configure_torch()
  config = transformers.T5Config(vocab_size=args.vocab, dropout_rate=0.0, **args.arch)
  torch.manual_seed(0)
  models = {s: transformers.T5ForConditionalGeneration(config) for s in ("rationale", "answer")}
  params = [p for m in models.values() for p in m.parameters()]
  optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
  batch = {s: {k: torch.from_numpy(v).long() for k, v in b.items()} for s, b in batch_np.items()}

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = 0
    for stream, model in models.items():
      b = batch[stream]
      out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                  decoder_input_ids=b["decoder_input_ids"],
                  decoder_attention_mask=b["decoder_attention_mask"], labels=b["labels"])
      loss = loss + out.loss
    loss.backward()
    optimizer.step()
    return float(loss.detach())

  for m in models.values():
    m.train()
  step()  # warm-up
  start = time.perf_counter()
  for _ in range(args.pair_steps):
    step()
  return args.pair_steps / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=30, help="train.py steps (end to end)")
  parser.add_argument("--pair_steps", type=int, default=5, help="timed steps of the step bench")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--input_len", type=int, default=256)
  parser.add_argument("--target_len", type=int, default=128)
  parser.add_argument("--skip_end_to_end", action="store_true")
  parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
  args = parser.parse_args()
  args.arch, args.vocab, shape = FLAN_T5_SMALL, FLAN_T5_SMALL_VOCAB, "Flan-T5-small"
  if args.quick:
    args.arch, args.vocab, shape = TINY, 512, "tiny (--quick)"
    args.steps, args.pair_steps, args.batch, args.input_len, args.target_len = 4, 1, 2, 32, 16

  import jax
  import numpy as np
  device = jax.devices()[0]
  # bfloat16 activations on accelerators; float32 on CPU, where bf16 matmuls are emulated.
  dtype = "float32" if device.platform == "cpu" else "bfloat16"
  print(f"device: {jax.device_count()} x {device.device_kind} ({device.platform}), dtype {dtype}, "
        f"batch {args.batch}, lengths {args.input_len}/{args.target_len}")
  if not args.skip_end_to_end:
    tokens = bench_end_to_end(args, dtype)
    print(f"train.py end to end ({shape} body, two students): {tokens:,.0f} tokens/s "
          "(real tokens, steady state)")
  batch_np = random_batch(np.random.default_rng(0), args.batch, args.input_len, args.target_len,
                          args.vocab)
  ours = bench_ours(args, batch_np, dtype)
  peer = bench_peer(args, batch_np)
  print(f"two-stage step, {shape} x2, AdamW: ours {ours:.3f} steps/s, "
        f"PyTorch peer {peer:.3f} steps/s, ours/peer = {ours / peer:.2f}")


if __name__ == "__main__":
  main()
