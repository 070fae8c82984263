"""Benchmark: our Flax T5 vs transformers' PyTorch T5 on this machine's CPU.

Flan-T5-small shapes (d_model 512, 8+8 layers, 6 heads, d_kv 64, d_ff 1024, vocab 32128), random
weights, fp32. Figures:
  (a) training step (forward + backward + AdamW), batch 8, source 256, target 128:
      tokens/s counting source + target tokens;
  (b) greedy decoding, batch 16, source 256, exactly 64 new tokens on both sides (our EOS id set
      to -1, HF `min_new_tokens=64`): new tokens/s;
  (c) achieved FLOP/s of our train step (XLA cost analysis of the compiled step) as a fraction of
      the machine's fp32 matmul peak, measured with a large `jnp.dot`;
  (d) the best ratio any implementation of the same arithmetic could reach against each peer: the
      peer's time over (FLOPs / matmul peak), where the FLOPs are the train step's, and for
      decoding a teacher-forced forward pass over the source and the 64 new tokens (the least
      arithmetic a greedy decode needs: the encoder once, every new token through the decoder
      and the output head once).
Each timing is the median of `--repeats` runs after a warm-up. torch uses every core, with
denormals flushed to zero as XLA does (`common.py`).

  python bench/bench_t5.py            # full run
  python bench/bench_t5.py --quick    # tiny shapes, seconds (smoke test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import transformers

from common import FLAN_T5_SMALL, FLAN_T5_SMALL_VOCAB, TINY, configure_torch

from sciqa_jax.decoding import make_generate_fn
from sciqa_jax.models import T5, T5Config, init_params

torch = configure_torch()

FULL = dict(shape=dict(FLAN_T5_SMALL, vocab_size=FLAN_T5_SMALL_VOCAB), train=(8, 256, 128),
            decode=(16, 256, 64), peak_n=4096)
QUICK = dict(shape=dict(TINY, vocab_size=512), train=(4, 32, 16), decode=(4, 32, 8), peak_n=1024)


def median_time(fn, repeats: int) -> float:
  fn()  # warm-up (compilation, allocator)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak(n: int, repeats: int) -> float:
  a = jnp.asarray(np.random.RandomState(0).randn(n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  return 2 * n**3 / median_time(lambda: dot(a, a).block_until_ready(), repeats)


def batch_arrays(rs, batch, src, tgt, vocab):
  ids = rs.randint(2, vocab, (batch, src)).astype(np.int32)
  labels = rs.randint(2, vocab, (batch, tgt)).astype(np.int32)
  dec = np.concatenate([np.zeros((batch, 1), np.int32), labels[:, :-1]], axis=1)
  return ids, np.ones_like(ids), dec, labels


def bench_train_jax(config, arrays, repeats):
  model = T5(config)
  params = init_params(config, jax.random.key(0))
  optimizer = optax.adamw(1e-4)
  opt_state = optimizer.init(params)
  ids, mask, dec, labels = (jnp.asarray(a) for a in arrays)

  def loss_fn(p, key):
    logits = model.apply({"params": p}, ids, mask, dec, deterministic=False,
                         rngs={"dropout": key})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def step(p, s, key):
    loss, grads = jax.value_and_grad(loss_fn)(p, key)
    updates, s = optimizer.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  key = jax.random.key(1)
  flops = step.lower(params, opt_state, key).compile().cost_analysis()
  flops = flops[0] if isinstance(flops, list) else flops
  state = {"p": params, "s": opt_state}

  def run():
    state["p"], state["s"], loss = step(state["p"], state["s"], key)
    loss.block_until_ready()

  return median_time(run, repeats), float(flops.get("flops", float("nan")))


def forward_flops(config, ids, mask, new_tokens) -> float:
  """XLA's FLOP count of one teacher-forced forward pass with `new_tokens` decoder positions."""
  model = T5(config)
  params = init_params(config, jax.random.key(0))
  dec = jnp.zeros((ids.shape[0], new_tokens), jnp.int32)
  forward = jax.jit(lambda p: model.apply({"params": p}, jnp.asarray(ids), jnp.asarray(mask), dec))
  cost = forward.lower(params).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def hf_model(config):
  hf_config = transformers.T5Config(**config.to_hf())
  torch.manual_seed(0)
  return transformers.T5ForConditionalGeneration(hf_config)


def bench_train_torch(config, arrays, repeats):
  model = hf_model(config)
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
  ids, mask, dec, labels = (torch.from_numpy(a).long() for a in arrays)

  def run():
    optimizer.zero_grad(set_to_none=True)
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, labels=labels)
    out.loss.backward()
    optimizer.step()

  return median_time(run, repeats)


def bench_decode_jax(config, ids, mask, new_tokens, repeats):
  # An EOS id that never occurs forces exactly `new_tokens` steps.
  model = T5(config.replace(eos_token_id=-1))
  params = init_params(config, jax.random.key(0))
  fn = jax.jit(make_generate_fn(model, max_new_tokens=new_tokens))
  ids, mask, key = jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0)

  def run():
    out = fn(params, ids, mask, key)
    out.tokens.block_until_ready()
    assert int(out.lengths.min()) == new_tokens

  return median_time(run, repeats)


def bench_decode_torch(config, ids, mask, new_tokens, repeats):
  model = hf_model(config).eval()
  ids, mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()

  def run():
    with torch.no_grad():
      out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, num_beams=1)
    assert out.shape[1] == new_tokens + 1

  return median_time(run, repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  setup = QUICK if args.quick else FULL
  cores = os.cpu_count()
  transformers.logging.set_verbosity_error()
  config = T5Config(**setup["shape"])
  rs = np.random.RandomState(0)
  print(f"devices: {jax.devices()}, cores: {cores}, torch threads: {torch.get_num_threads()}")
  print(f"shapes: {setup['shape']}")

  batch, src, tgt = setup["train"]
  arrays = batch_arrays(rs, batch, src, tgt, config.vocab_size)
  tokens = batch * (src + tgt)
  t_jax, flops = bench_train_jax(config, arrays, args.repeats)
  t_torch = bench_train_torch(config, arrays, args.repeats)
  print(f"(a) train step b={batch} src={src} tgt={tgt}: ours {tokens / t_jax:,.0f} tok/s "
        f"({t_jax * 1e3:.0f} ms), PyTorch {tokens / t_torch:,.0f} tok/s ({t_torch * 1e3:.0f} ms), "
        f"ours/PyTorch = {t_torch / t_jax:.2f}x")

  batch, src, new = setup["decode"]
  ids, mask, _, _ = batch_arrays(rs, batch, src, 1, config.vocab_size)
  d_jax = bench_decode_jax(config, ids, mask, new, args.repeats)
  d_torch = bench_decode_torch(config, ids, mask, new, args.repeats)
  print(f"(b) greedy decode b={batch} src={src} new={new}: ours {batch * new / d_jax:,.0f} "
        f"new tok/s ({d_jax * 1e3:.0f} ms), HF generate {batch * new / d_torch:,.0f} new tok/s "
        f"({d_torch * 1e3:.0f} ms), ours/HF = {d_torch / d_jax:.2f}x")

  peak = matmul_peak(setup["peak_n"], args.repeats)
  achieved = flops / t_jax
  print(f"(c) train step {flops / 1e9:,.1f} GFLOP (XLA cost analysis), achieved "
        f"{achieved / 1e9:,.1f} GFLOP/s; fp32 matmul peak {peak / 1e9:,.1f} GFLOP/s "
        f"(jnp.dot {setup['peak_n']}^2); fraction of peak {achieved / peak:.2f}")
  decode_flops = forward_flops(config, ids, mask, new)
  print(f"(d) at the matmul peak: train step >= {flops / peak * 1e3:.0f} ms, best possible "
        f"ours/PyTorch = {t_torch * peak / flops:.2f}x; greedy decode ({decode_flops / 1e9:,.1f} "
        f"GFLOP) >= {decode_flops / peak * 1e3:.0f} ms, best possible ours/HF = "
        f"{d_torch * peak / decode_flops:.2f}x")


if __name__ == "__main__":
  main()
