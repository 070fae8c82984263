"""Hugging Face checkpoints <-> Flax params: T5, and decoder-only LMs (Llama, Mistral, Qwen2, Gemma).

`load_pretrained` reads a local directory or a hub id (downloaded with `huggingface_hub`) holding
`config.json` and one of: `model.safetensors`, a sharded `model.safetensors.index.json`, or
`pytorch_model.bin` (+ index; only this format needs torch), and dispatches on config.json's
`model_type`: "t5" gives a `T5`, "llama" / "mistral" / "qwen2" / "gemma" a
`decoder_only.CausalLM`. `save_pretrained` writes a T5 back: `config.json` + `model.safetensors`
(+ tokenizer files), which transformers loads as a `T5ForConditionalGeneration`.

safetensors files are parsed directly (an 8-byte header length, a JSON header, raw little-endian
bytes) and memory-mapped with numpy, using `ml_dtypes.bfloat16` for BF16 tensors: the safetensors
numpy backend rejects bf16, and no deep-learning framework is needed to read a checkpoint.

The mapping is a fixed table from HF tensor names to paths in our params tree (see `t5.py`; the
decoder-only tree keeps HF's module names, so its table is a rename, see `decoder_only.py`);
torch Linear weights are [out, in] and are transposed to Flax kernels [in, out]. Every tensor is
checked against the shape the config implies, so a mismatched config/weights pair fails with the
tensor's name and both shapes instead of a broadcasting error deep inside a jit.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

import huggingface_hub
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from sciqa_jax.models import decoder_only
from sciqa_jax.models.decoder_only import CausalLM, DecoderConfig
from sciqa_jax.models.t5 import T5, T5Config

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"

# Tensors some checkpoints carry that T5ForConditionalGeneration never uses (aliases of
# `shared.weight`, and an old, unused cross-attention position bias).
_IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")

_ST_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}

Path = tuple[str, ...]


# ------------------------------------------------------------------------------------------------
# Name mapping
# ------------------------------------------------------------------------------------------------
def hf_name_map(config: T5Config) -> dict[str, tuple[Path, bool]]:
  """HF tensor name -> (path in our params tree, transpose?) for this architecture."""
  names: dict[str, tuple[Path, bool]] = {"shared.weight": (("shared", "embedding"), False)}
  if not config.tie_word_embeddings:
    names["lm_head.weight"] = (("lm_head", "kernel"), True)
  mlp = ("wi_0", "wi_1", "wo") if config.is_gated else ("wi", "wo")
  for stack, num_layers in (("encoder", config.num_layers), ("decoder", config.num_decoder_layers)):
    names[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
        (stack, "relative_attention_bias"), False)
    names[f"{stack}.final_layer_norm.weight"] = ((stack, "final_norm", "scale"), False)
    for i in range(num_layers):
      hf, ours = f"{stack}.block.{i}.layer", (stack, f"block_{i}")
      sublayers = [("0", "SelfAttention", "self_attention")]
      if stack == "decoder":
        sublayers.append(("1", "EncDecAttention", "cross_attention"))
      for idx, hf_attn, attn in sublayers:
        for proj in ("q", "k", "v", "o"):
          names[f"{hf}.{idx}.{hf_attn}.{proj}.weight"] = (ours + (attn, proj, "kernel"), True)
        names[f"{hf}.{idx}.layer_norm.weight"] = (ours + (f"{attn}_norm", "scale"), False)
      ff = "2" if stack == "decoder" else "1"
      for proj in mlp:
        names[f"{hf}.{ff}.DenseReluDense.{proj}.weight"] = (ours + ("mlp", proj, "kernel"), True)
      names[f"{hf}.{ff}.layer_norm.weight"] = (ours + ("mlp_norm", "scale"), False)
  return names


def param_shapes(config: T5Config) -> dict[Path, tuple[int, ...]]:
  """Flattened path -> shape of the params `T5(config)` expects (no arrays are allocated)."""
  model = T5(config)
  ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  abstract = jax.eval_shape(lambda i: model.init(jax.random.key(0), i, i, i), ids)["params"]
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(abstract).items()}


def check_params(params: Any, config: T5Config) -> None:
  """Raises ValueError naming every missing/unexpected/misshaped leaf of `params` for `config`.

  Used when restoring checkpoints and before exporting, so a params tree from another
  architecture never reaches a jitted function.
  """
  expected = param_shapes(config)
  got = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(dict(params)).items()}
  problems = [f"missing {'/'.join(k)} {s}" for k, s in expected.items() if k not in got]
  problems += [f"unexpected {'/'.join(k)} {s}" for k, s in got.items() if k not in expected]
  problems += [f"{'/'.join(k)} has shape {got[k]}, config implies {s}"
               for k, s in expected.items() if k in got and got[k] != s]
  if problems:
    raise ValueError("params do not match the T5 config: " + "; ".join(sorted(problems)))


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def read_safetensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, array) from a .safetensors file, memory-mapped, bf16 as ml_dtypes.bfloat16."""
  with open(path, "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_len))
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _ST_DTYPES:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}.")
    start, end = info["data_offsets"]
    yield name, data[start:end].view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])


def _read_torch(path: str) -> Iterator[tuple[str, np.ndarray]]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{path} is a PyTorch checkpoint; reading it needs torch installed "
                      "(or convert it to model.safetensors).") from e
  for name, t in torch.load(path, map_location="cpu", weights_only=True).items():
    if t.dtype == torch.bfloat16:
      yield name, t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
      yield name, t.numpy()


def _read_state_dict(model_dir: str) -> dict[str, np.ndarray]:
  def from_index(index_file, reader):
    with open(os.path.join(model_dir, index_file)) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for shard in shards:
      shard_path = os.path.join(model_dir, shard)
      if not os.path.isfile(shard_path):
        raise FileNotFoundError(f"{index_file} in {model_dir} lists shard {shard}, which is missing.")
      tensors.update(reader(shard_path))
    return tensors

  if os.path.isfile(os.path.join(model_dir, SAFETENSORS_FILE)):
    return dict(read_safetensors(os.path.join(model_dir, SAFETENSORS_FILE)))
  if os.path.isfile(os.path.join(model_dir, SAFETENSORS_INDEX)):
    return from_index(SAFETENSORS_INDEX, read_safetensors)
  if os.path.isfile(os.path.join(model_dir, TORCH_FILE)):
    return dict(_read_torch(os.path.join(model_dir, TORCH_FILE)))
  if os.path.isfile(os.path.join(model_dir, TORCH_INDEX)):
    return from_index(TORCH_INDEX, _read_torch)
  raise FileNotFoundError(
      f"No weights in {model_dir}: expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, {TORCH_FILE} "
      f"or {TORCH_INDEX}.")


def resolve_model_dir(path_or_hub_id: str) -> str:
  """A local directory as is; otherwise a hub id downloaded (config, weights, tokenizer files)."""
  if os.path.isdir(path_or_hub_id):
    return path_or_hub_id
  looks_local = (os.path.isabs(path_or_hub_id) or path_or_hub_id.startswith(".") or
                 os.path.exists(path_or_hub_id) or path_or_hub_id.count("/") > 1)
  if looks_local:
    raise FileNotFoundError(f"Model directory {path_or_hub_id} does not exist (or is not a dir).")
  try:
    return huggingface_hub.snapshot_download(
        path_or_hub_id,
        allow_patterns=[CONFIG_FILE, "*.safetensors", SAFETENSORS_INDEX, "*.json", "*.model"])
  except Exception as e:  # hub errors come in many types; all mean "cannot get this id"
    raise FileNotFoundError(
        f"{path_or_hub_id!r} is neither a local directory nor a downloadable Hugging Face hub id "
        f"({type(e).__name__}: {e}).") from e


def read_hf_config(model_dir: str) -> dict[str, Any]:
  """config.json of a model directory, as a dict."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: a model directory needs {CONFIG_FILE}.")
  with open(path) as f:
    return json.load(f)


def load_hf_config(model_dir: str, **overrides) -> T5Config:
  hf = read_hf_config(model_dir)
  if hf.get("model_type") != "t5":
    raise ValueError(f"{os.path.join(model_dir, CONFIG_FILE)} has model_type="
                     f"{hf.get('model_type')!r}; only 't5' models (T5 v1.0, T5 v1.1, Flan-T5) are "
                     "supported.")
  return T5Config.from_hf(hf, **overrides)


def params_from_state_dict(state: dict[str, np.ndarray], config: T5Config,
                           source: str = "checkpoint") -> tuple[T5Config, Any]:
  """Maps HF tensors to (config with the real tie setting, params tree in `config.param_dtype`)."""
  # transformers' rule: the head is the embedding unless the file has a distinct lm_head.weight.
  # A tied v1.0 file may still carry an identical copy; that stays tied.
  head = state.get("lm_head.weight")
  tied = head is None or (config.tie_word_embeddings and "shared.weight" in state and
                          np.array_equal(head, state["shared.weight"]))
  config = config.replace(tie_word_embeddings=tied)
  def ignored(name: str) -> bool:
    return name in _IGNORED or name == "lm_head.weight"

  return config, _map_tensors(state, hf_name_map(config), param_shapes(config), source,
                              f"a {config.feed_forward_proj} T5", ignored, config.params_dtype,
                              to_device=True)


def _map_tensors(state: dict[str, np.ndarray], names: dict[str, tuple[Path, bool]],
                 shapes: dict[Path, tuple[int, ...]], source: str, what: str,
                 ignored: Callable[[str], bool], dtype, *, to_device: bool) -> Any:
  """HF tensors -> params tree by a name map (the one rule for T5 and decoder-only models):
  missing tensors and wrong shapes are errors naming the tensor, unexpected ones a warning."""
  missing = sorted(n for n in names if n not in state)
  if missing:
    raise ValueError(f"{source} lacks {len(missing)} tensor(s) {what} with this config.json "
                     f"needs, e.g. {', '.join(missing[:5])}.")
  unexpected = sorted(n for n in set(state) - set(names) if not ignored(n))
  if unexpected:
    logging.warning("%s: ignoring %d unexpected tensor(s), e.g. %s", source, len(unexpected),
                    ", ".join(unexpected[:5]))
  flat = {}
  for hf_name, (path, transpose) in names.items():
    array = state[hf_name]
    want = shapes[path][::-1] if transpose else shapes[path]
    if tuple(array.shape) != tuple(want):
      raise ValueError(f"{source}: tensor {hf_name} has shape {tuple(array.shape)} but config.json "
                       f"implies {tuple(want)}.")
    flat[path] = _to_params_dtype(array, transpose, dtype, to_device)
  return traverse_util.unflatten_dict(flat)


def _to_params_dtype(array: np.ndarray, transpose: bool, dtype, to_device: bool):
  array = np.asarray(array)
  array = array.T if transpose else array
  if to_device:
    return jnp.asarray(array, dtype=dtype)
  return np.ascontiguousarray(array.astype(np.dtype(dtype), copy=False))


# ------------------------------------------------------------------------------------------------
# Decoder-only LMs
# ------------------------------------------------------------------------------------------------
def decoder_name_map(config: DecoderConfig) -> dict[str, tuple[Path, bool]]:
  """HF tensor name -> (path in our params tree, transpose? never): `layers_3` is `layers.3`,
  `scale` / `embedding` are `weight`; `weight` and `bias` keep their names and layouts."""
  names = {}
  for path in decoder_only.param_shapes(config):
    modules = [p.replace("layers_", "layers.") if p.startswith("layers_") else p for p in path[:-1]]
    hf_leaf = "bias" if path[-1] == "bias" else "weight"
    names[".".join(modules + [hf_leaf])] = (path, False)
  return names


def decoder_params_from_state_dict(state: dict[str, np.ndarray], config: DecoderConfig,
                                   source: str = "checkpoint", to_device: bool = True
                                   ) -> tuple[DecoderConfig, Any]:
  """Maps HF tensors to (config with the real tie setting, params tree in `config.param_dtype`).

  The head is tied when config.json says so (transformers then ignores any `lm_head.weight`), or
  when the file has no `lm_head.weight` (transformers would start a random head instead, which no
  teacher wants). `to_device=False` keeps numpy arrays, for a caller that places a model larger
  than one device straight onto its shardings.
  """
  if not config.tie_word_embeddings and "lm_head.weight" not in state:
    logging.warning("%s: config.json says the head is untied but the weights have no "
                    "lm_head.weight; tying it to the embedding.", source)
    config = config.replace(tie_word_embeddings=True)
  def ignored(name: str) -> bool:
    return name == "lm_head.weight" or name.endswith("rotary_emb.inv_freq")

  return config, _map_tensors(state, decoder_name_map(config), decoder_only.param_shapes(config),
                              source, f"a {config.model_type} model", ignored,
                              config.params_dtype, to_device=to_device)


def load_pretrained(path_or_hub_id: str, dtype: str | None = None,
                    param_dtype: str | None = None, *, to_device: bool = True
                    ) -> tuple[T5 | CausalLM, Any]:
  """Loads an HF model directory or hub id -> (module, params), by config.json's `model_type`.

  "t5" -> `T5`; "llama", "mistral", "qwen2", "gemma" -> `decoder_only.CausalLM`. `dtype` is the
  compute dtype (default float32), `param_dtype` the dtype params are stored in (default float32,
  whatever the file's storage dtype). `to_device=False` returns numpy arrays (decoder-only only):
  nothing lands on the default device, so a sharded placement can follow.
  """
  model_dir = resolve_model_dir(path_or_hub_id)
  overrides = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v is not None}
  hf = read_hf_config(model_dir)
  model_type = hf.get("model_type")
  if model_type in decoder_only.MODEL_TYPES:
    config = DecoderConfig.from_hf(hf, **overrides)
    config, params = decoder_params_from_state_dict(_read_state_dict(model_dir), config,
                                                    source=model_dir, to_device=to_device)
    return CausalLM(config), params
  if model_type != "t5":
    raise ValueError(f"{os.path.join(model_dir, CONFIG_FILE)} has model_type={model_type!r}; "
                     "supported are 't5' (T5 v1.0, T5 v1.1, Flan-T5) and the decoder-only "
                     f"{', '.join(repr(t) for t in decoder_only.MODEL_TYPES)}.")
  if not to_device:
    raise ValueError("load_pretrained: to_device=False is only supported for decoder-only models.")
  config = T5Config.from_hf(hf, **overrides)
  config, params = params_from_state_dict(_read_state_dict(model_dir), config, source=model_dir)
  return T5(config), params


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
  """Writes a safetensors file (sorted names, 8-byte aligned header, `format: pt` metadata)."""
  header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
  offset = 0
  arrays = []
  for name in sorted(tensors):
    array = np.ascontiguousarray(tensors[name])
    if array.dtype not in _ST_NAMES:
      raise ValueError(f"Cannot write tensor {name} of dtype {array.dtype} to safetensors.")
    header[name] = {"dtype": _ST_NAMES[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + array.nbytes]}
    offset += array.nbytes
    arrays.append(array)
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for array in arrays:
      f.write(array.tobytes())


def save_pretrained(model_or_config: T5 | T5Config, params: Any, out_dir: str,
                    tokenizer: Any = None) -> str:
  """Writes params as an HF T5 directory (config.json, model.safetensors, tokenizer files).

  Tensors keep the params' dtype (fp32 or bf16). Returns `out_dir`.
  """
  config = model_or_config.config if isinstance(model_or_config, T5) else model_or_config
  check_params(params, config)
  flat = traverse_util.flatten_dict(dict(params))
  tensors = {}
  for hf_name, (path, transpose) in hf_name_map(config).items():
    array = np.asarray(jax.device_get(flat[path]))
    tensors[hf_name] = array.T if transpose else array
  os.makedirs(out_dir, exist_ok=True)
  write_safetensors(os.path.join(out_dir, SAFETENSORS_FILE), tensors)
  hf_config = config.to_hf()
  hf_config["dtype"] = str(np.dtype(config.params_dtype))
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
  if tokenizer is not None:
    tokenizer.save_pretrained(out_dir)
  return out_dir
