"""Benchmark: greedy generation with our Flax decoder-only LM vs transformers' PyTorch Llama.

A Llama-shaped model of about 110M parameters (hidden 768, 12 layers, 12 heads, intermediate 2048,
vocab 32000, untied head), random weights, in `--dtype` (float32 by default, or bfloat16) on both
sides. The weights are written once by transformers (`save_pretrained`) and read back by
`sciqa_jax.models.load_pretrained`, so both sides compute with the same numbers. Figures:
  (a) greedy generation, batch 16, prompts of 128 tokens, exactly 128 new tokens on both sides (our
      EOS id set to -1, HF `min_new_tokens=128`): new tokens/s, ours/HF, and how many of our new
      tokens equal HF's (random weights leave near ties, so a few may differ, more in bf16);
  (b) the memory-bandwidth floor: a decode step must read every weight it uses once (all but the
      input embedding table, of which it gathers one row per sequence) and the KV cache filled so
      far (prompt + t slots at step t, averaged over the 128 steps, in the compute dtype). Those
      bytes over the machine's streaming bandwidth (the best of a threaded numpy sum and a threaded
      numpy copy over 1 GiB, one thread per core) give the floor time per step; printed is floor /
      measured time per step, the step time taken as (time for 128 new tokens - time for 1) / 127
      so the prompt's prefill, which is compute-bound, is not counted; the same with the prefill
      in, total / 128, follows it;
  (c) what the matmul kernels alone allow: one decode step's weight products only (every
      projection of every layer and the head, batch 16, in a loop so the weights come from memory
      as in a real step), timed for XLA (our jitted program) and for PyTorch (`F.linear`), each with
      the fraction of the floor it would reach if attention and everything else were free;
  (d) the same floor fraction for the T5 student's greedy decode at `bench_t5.py`'s decode shape
      (Flan-T5-small, batch 16, source 256, 64 new): decoder weights, output head, the
      cross-attention keys/values of the source and the self-attention cache, per step
      (`--skip-t5` leaves it out).
Each timing is the median of `--repeats` runs after a warm-up. torch uses every core, with
denormals flushed to zero as XLA does (`common.py`).

  python bench/bench_lm_decode.py                      # full run, float32
  python bench/bench_lm_decode.py --dtype bfloat16 --skip-t5
  python bench/bench_lm_decode.py --quick              # tiny shapes, seconds (smoke test)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import transformers

from bench_t5 import FULL as T5_FULL, QUICK as T5_QUICK, batch_arrays, bench_decode_jax, median_time
from common import configure_torch

from sciqa_jax.decoding import make_lm_generate_fn
from sciqa_jax.models import T5Config, init_params, load_pretrained

torch = configure_torch()

LLAMA_110M = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=2048, vocab_size=32000, max_position_embeddings=512)
FULL = dict(shape=LLAMA_110M, decode=(16, 128, 128), stream_mib=1024)
QUICK = dict(shape=dict(LLAMA_110M, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, vocab_size=512),
             decode=(2, 16, 8), stream_mib=64)


def stream_bandwidth(mib: int, repeats: int) -> tuple[float, float]:
  """-> (read bytes/s of a threaded sum, read + write bytes/s of a threaded copy), one thread per
  core, each on its own slice of a `mib` MiB fp32 array."""
  cores = os.cpu_count()
  src = np.random.RandomState(0).rand(mib * 2**18).astype(np.float32)
  dst = np.empty_like(src)
  parts = np.array_split(np.arange(src.size), cores)
  slices = [slice(int(p[0]), int(p[-1]) + 1) for p in parts]
  with concurrent.futures.ThreadPoolExecutor(cores) as pool:
    t_sum = median_time(lambda: list(pool.map(lambda s: src[s].sum(), slices)), repeats)
    t_copy = median_time(lambda: list(pool.map(lambda s: np.copyto(dst[s], src[s]), slices)),
                         repeats)
  return src.nbytes / t_sum, 2 * src.nbytes / t_copy


def build_models(shape: dict, directory: str, dtype: str):
  hf_config = transformers.LlamaConfig(**shape, tie_word_embeddings=False, pad_token_id=0,
                                       bos_token_id=1, eos_token_id=2)
  torch.manual_seed(0)
  hf = transformers.LlamaForCausalLM(hf_config).eval().to(getattr(torch, dtype))
  hf.save_pretrained(directory)
  model, params = load_pretrained(directory, dtype=dtype, param_dtype=dtype)
  return hf, model, params


def bench_jax(model, params, ids, new_tokens, repeats):
  fn = jax.jit(make_lm_generate_fn(model, max_new_tokens=new_tokens, eos_token_id=-1))
  ids_j, mask, key = jnp.asarray(ids), jnp.ones(ids.shape, jnp.int32), jax.random.key(0)
  result = {}

  def run():
    out = fn(params, ids_j, mask, key)
    out.tokens.block_until_ready()
    assert int(out.lengths.min()) == new_tokens
    result["tokens"] = np.asarray(out.tokens[:, 0])

  return median_time(run, repeats), result["tokens"]


def bench_torch(hf, ids, new_tokens, repeats):
  ids_t = torch.from_numpy(ids).long()
  mask = torch.ones_like(ids_t)
  result = {}

  def run():
    with torch.no_grad():
      out = hf.generate(input_ids=ids_t, attention_mask=mask, max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens, do_sample=False, num_beams=1, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + new_tokens
    result["tokens"] = out[:, ids.shape[1]:].numpy()

  return median_time(run, repeats), result["tokens"]


def nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def lm_step_bytes(config, params, batch, prompt, new_tokens) -> float:
  """Weights read once (less the input embedding table) + the average KV cache in the compute
  dtype, per step."""
  weights = nbytes(params) - nbytes(params["model"]["embed_tokens"])
  per_slot = (2 * config.num_hidden_layers * batch * config.num_key_value_heads * config.head_dim
              * config.compute_dtype.itemsize)
  return weights + per_slot * (prompt + (new_tokens - 1) / 2)


def step_weights(params) -> tuple[list[list[Any]], Any]:
  """Per layer, its projections' [out, in] weights in the order a step uses them; and the head."""
  order = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
           ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"),
           ("mlp", "down_proj")]
  layers = [params["model"][name] for name in sorted(
      (k for k in params["model"] if k.startswith("layers_")), key=lambda k: int(k[7:]))]
  weights = [[layer[a][b]["weight"] for a, b in order] for layer in layers]
  return weights, params["lm_head"]["weight"]


def matmul_chain(x, layers, head, linear):
  """One step's weight products: q, k, v (summed: their shapes agree), o, gate and up, down."""
  for q, k, v, o, gate, up, down in layers:
    h = linear(linear(x, q) + linear(x, k) + linear(x, v), o)
    x = linear(linear(h, gate) * linear(h, up), down)
  return linear(x, head)


def bench_matmuls(params, batch: int, steps: int, repeats: int) -> tuple[float, float]:
  """-> seconds per step of the weight products alone: (XLA, PyTorch), weights streamed from
  memory as in decoding (each step reads every matrix once)."""
  layers, head = step_weights(params)
  dtype = head.dtype

  def linear_jax(x, w):
    return jnp.einsum("ti,oi->to", x, w, preferred_element_type=jnp.float32).astype(dtype)

  def loop(layers, head, x):
    def body(_, x):  # feed a little of the logits back so no step can be skipped
      return x + 1e-6 * matmul_chain(x, layers, head, linear_jax)[:, :x.shape[1]]
    return jax.lax.fori_loop(0, steps, body, x)

  run = jax.jit(loop)
  x = jnp.full((batch, head.shape[1]), 0.1, dtype)
  t_jax = median_time(lambda: run(layers, head, x).block_until_ready(), repeats) / steps

  def to_torch(a):
    return torch.from_numpy(np.array(a, np.float32)).to(getattr(torch, jnp.dtype(dtype).name))

  layers_t = [[to_torch(w) for w in layer] for layer in layers]
  head_t, x_t = to_torch(head), to_torch(x)

  def run_torch():
    with torch.no_grad():
      for _ in range(steps):
        matmul_chain(x_t, layers_t, head_t, torch.nn.functional.linear)

  return t_jax, median_time(run_torch, repeats) / steps


def t5_floor_fraction(bandwidth: float, quick: bool, repeats: int) -> tuple[float, float, int]:
  """-> (floor fraction per decode step, GB read per step, new tokens) at bench_t5.py's decode
  shape, the step time taken as for the LM."""
  setup = T5_QUICK if quick else T5_FULL
  config = T5Config(**setup["shape"])
  batch, src, new = setup["decode"]
  ids, mask, _, _ = batch_arrays(np.random.RandomState(0), batch, src, 1, config.vocab_size)
  t_new = bench_decode_jax(config, ids, mask, new, repeats)
  t_one = bench_decode_jax(config, ids, mask, 1, repeats)
  params = init_params(config, jax.random.key(0))
  weights = nbytes(params["decoder"]) + nbytes(params["lm_head"])
  kv = config.num_heads * config.d_kv * 4 * 2 * config.num_decoder_layers * batch
  step_bytes = weights + kv * src + kv * (new - 1) / 2  # cross-attention + average self-attention
  return step_bytes / bandwidth / ((t_new - t_one) / (new - 1)), step_bytes / 1e9, new


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="params and compute on both sides")
  parser.add_argument("--skip-t5", action="store_true", help="leave out figure (d)")
  args = parser.parse_args()
  setup = QUICK if args.quick else FULL
  transformers.logging.set_verbosity_error()
  print(f"devices: {jax.devices()}, cores: {os.cpu_count()}, torch threads: "
        f"{torch.get_num_threads()}")
  batch, prompt, new = setup["decode"]
  with tempfile.TemporaryDirectory() as directory:
    hf, model, params = build_models(setup["shape"], directory, args.dtype)
  config = model.config
  print(f"shapes: {setup['shape']}, {sum(x.size for x in jax.tree.leaves(params)) / 1e6:,.1f}M "
        f"parameters, {args.dtype}")
  ids = np.random.RandomState(0).randint(3, config.vocab_size, (batch, prompt)).astype(np.int32)

  t_jax, ours = bench_jax(model, params, ids, new, args.repeats)
  t_one, _ = bench_jax(model, params, ids, 1, args.repeats)
  t_torch, theirs = bench_torch(hf, ids, new, args.repeats)
  print(f"(a) greedy generate b={batch} prompt={prompt} new={new}: ours {batch * new / t_jax:,.0f} "
        f"new tok/s ({t_jax * 1e3:.0f} ms), HF generate {batch * new / t_torch:,.0f} new tok/s "
        f"({t_torch * 1e3:.0f} ms), ours/HF = {t_torch / t_jax:.2f}x; same tokens as HF: "
        f"{(ours == theirs).mean():.3f}")

  read_bw, copy_bw = stream_bandwidth(setup["stream_mib"], args.repeats)
  bandwidth = max(read_bw, copy_bw)
  step_bytes = lm_step_bytes(config, params, batch, prompt, new)
  floor = step_bytes / bandwidth
  step = (t_jax - t_one) / (new - 1)
  print(f"(b) streaming bandwidth ({os.cpu_count()} threads, {setup['stream_mib']} MiB): sum "
        f"{read_bw / 1e9:.1f} GB/s, copy {copy_bw / 1e9:.1f} GB/s (read + write); per step "
        f"{step_bytes / 1e9:.3f} GB read -> floor {floor * 1e3:.1f} ms/step; ours "
        f"{step * 1e3:.1f} ms/step (prefill {t_one * 1e3:.0f} ms excluded): fraction of floor "
        f"{floor / step:.2f}; with the prefill in ({t_jax / new * 1e3:.1f} ms/token) "
        f"{floor / (t_jax / new):.2f}")
  t_mm, t_mm_torch = bench_matmuls(params, batch, min(new, 16), args.repeats)
  print(f"(c) the weight products alone, per step: XLA {t_mm * 1e3:.1f} ms (fraction of floor "
        f"{floor / t_mm:.2f}), PyTorch {t_mm_torch * 1e3:.1f} ms ({floor / t_mm_torch:.2f}): the "
        f"best either library's matmul kernels allow at batch {batch}")
  if args.skip_t5:
    print("(d) T5 student: skipped (--skip-t5)")
  else:
    fraction, gb, t5_new = t5_floor_fraction(bandwidth, args.quick, args.repeats)
    print(f"(d) T5 student greedy decode (bench_t5.py's shape, {t5_new} new): {gb:.3f} GB read "
          f"per step, fraction of floor {fraction:.2f}")


if __name__ == "__main__":
  main()
