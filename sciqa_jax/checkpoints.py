"""Orbax checkpoints of a training run: the latest N plus the best by validation accuracy.

One checkpoint step directory (`<workdir>/checkpoints/<step>/`) holds three items, saved together
with `ocp.args.Composite` so they are finalised (made visible) atomically:

  params  the students' parameters `{student: t5_params}` (StandardSave)
  train   everything else of the TrainState (step, optimizer state, rng) (StandardSave); kept
          apart from `params` so that `load_students` reads parameters without optimizer state
  meta    JSON: the resolved run config, the students' T5 config (HF dict), the phase and global
          step, the validation accuracy if one was measured

There is no data-iterator item: the data position is the step (batch k is a pure function of the
run's rows, seed and k, see `input_pipeline.batch_indices`), so the restored step is all a resumed
run needs. Checkpoints of older versions also hold a `data` item (iterator positions): restores
name the items they read, so it is never read and such checkpoints restore as they are; a JSON
handler stays registered under that name only so that orbax's metadata scan, which visits every
item directory, does not warn about it.

Saves are asynchronous (training continues while the arrays are written); `wait()` blocks until the
last one is committed. Orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames on commit (or
writes a commit marker on object stores), so a run killed mid-save leaves a temporary directory
that the manager ignores; `restore` additionally verifies the step is finalised before reading it.

Retention uses `preservation_policy` (the non-deprecated API): `LatestN(keep)` OR `BestN(1)` on
`val_accuracy`; checkpoints saved without a validation accuracy only count for LatestN.

Restores are resharded onto the *current* mesh: the target is a tree of `jax.ShapeDtypeStruct`s
carrying the NamedShardings of the live state. Before reading arrays, the saved config's model and
objective sections and the saved tensor shapes (parameters and optimizer state) are compared with
the current run, so restoring the wrong checkpoint fails with a message naming the differing key or
tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from sciqa_jax import errors
from sciqa_jax.data.registry import canonical_task_name
from sciqa_jax.models import T5, T5Config
from sciqa_jax.tokenizer import load_tokenizer

# Config keys that decide the parameter shapes / what the students are: a checkpoint is only
# compatible with a run that agrees on all of them. (dropout, compute dtype, lr... may change.)
MODEL_KEYS = ("init", "pretrained", "tokenizer", "tokenizer_vocab_size", "d_model", "d_kv", "d_ff",
              "num_layers", "num_decoder_layers", "num_heads", "feed_forward_proj",
              "tie_word_embeddings", "param_dtype")
OBJECTIVE_KEYS = ("name", "shared_student", "stage2_rationales", "answer_source")
# Settings that choose the training rows: batch k of a resumed run is batch k of the same rows
# only if these are unchanged (the task is compared by its registry key, aliases allowed).
DATA_KEYS = ("train_split", "train_subsample")
VAL_METRIC = "val_accuracy"
# The data-iterator item of checkpoints written before the data position was the step: never
# written nor read, its handler only keeps orbax from warning about the directory.
LEGACY_DATA_ITEM = "data"


class CheckpointMismatchError(errors.RunMismatchError):
  """The checkpoint was made for another model shape, objective, optimizer or phase plan."""


@dataclasses.dataclass
class Restored:
  state: Any  # the same type as the target state, with arrays on the target shardings
  meta: dict


@dataclasses.dataclass
class LoadedStudents:
  model: Any  # sciqa_jax.models.T5
  params: dict  # {student: t5_params}
  tokenizer: Any
  config: Any  # ml_collections.ConfigDict of the run
  step: int


# ---- state <-> savable trees -----------------------------------------------------------------


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(state) -> tuple[dict, dict]:
  """(params, rest) nested dicts of arrays; typed PRNG keys become their raw uint32 data."""
  tree = flax.serialization.to_state_dict(state)
  tree = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)
  tree = dict(tree)
  params = tree.pop("params")
  return params, tree


def _from_savable(target_state, params: dict, rest: dict):
  target_rest = {k: v for k, v in flax.serialization.to_state_dict(target_state).items()
                 if k != "params"}
  rest = jax.tree.map(
      lambda t, x: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
      target_rest, rest)
  return flax.serialization.from_state_dict(target_state, dict(rest, params=params))


def _abstract(tree, shardings) -> Any:
  """ShapeDtypeStructs carrying the target shardings (orbax reshards on load)."""
  def leaf(x, sharding):
    if _is_key(x):
      x = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree.map(leaf, tree, shardings)


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def first_shape_difference(saved: dict, current: dict, item: str = "params") -> str | None:
  """A message naming the first tensor of `item` whose path or shape differs between two trees."""
  saved_leaves = {_path_name(p): tuple(x.shape)
                  for p, x in jax.tree_util.tree_leaves_with_path(saved)}
  current_leaves = {_path_name(p): tuple(x.shape)
                    for p, x in jax.tree_util.tree_leaves_with_path(current)}
  for name in sorted(set(saved_leaves) | set(current_leaves)):
    if name not in saved_leaves:
      return f"tensor {item}/{name} {current_leaves[name]} is not in the checkpoint"
    if name not in current_leaves:
      return f"checkpoint tensor {item}/{name} {saved_leaves[name]} is not in the current run"
    if saved_leaves[name] != current_leaves[name]:
      return (f"tensor {item}/{name} has shape {saved_leaves[name]} in the checkpoint but "
              f"{current_leaves[name]} in the current run")
  return None


def check_compatible(saved_config: dict, config: dict) -> None:
  """Raises CheckpointMismatchError naming the first differing model / objective / data key (or
  the task). A key the saved config lacks (written before the setting existed) is not compared."""
  if "task" in saved_config and \
      canonical_task_name(saved_config["task"]) != canonical_task_name(config.get("task", "")):
    raise CheckpointMismatchError(
        f"the checkpoint was made for task {saved_config['task']!r} but this run's task is "
        f"{config.get('task')!r}: use another --workdir or the same task")
  for section, keys in (("model", MODEL_KEYS), ("objective", OBJECTIVE_KEYS),
                        ("data", DATA_KEYS)):
    saved, current = saved_config.get(section, {}), config.get(section, {})
    for key in keys:
      if key in saved and saved[key] != current.get(key):
        raise CheckpointMismatchError(
            f"the checkpoint was made with {section}.{key}={saved.get(key)!r} but this run has "
            f"{section}.{key}={current.get(key)!r}: use another --workdir or the same {section} "
            "settings")


# ---- the manager -----------------------------------------------------------------------------


class Checkpointer:
  """`<workdir>/checkpoints/` of one run (see the module docstring)."""

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=max(1, keep)),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[VAL_METRIC], reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=lambda m: m[VAL_METRIC], best_mode="max",
        enable_async_checkpointing=async_save, read_only=read_only, create=not read_only)
    # Handlers declared up front, so a fresh manager (a resumed run, evaluate.py) can read
    # metadata and single items before any save registered them.
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"params": ocp.StandardCheckpointHandler(),
                       "train": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler(),
                       LEGACY_DATA_ITEM: ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the highest validation accuracy; the latest if none was evaluated."""
    return self.manager.best_step() or self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, *, meta: dict, val_accuracy: float | None = None) -> bool:
    """Starts an asynchronous save of `state` at `step`; returns whether a save was started."""
    params, rest = _to_savable(state)
    meta = dict(meta, step=step, val_accuracy=val_accuracy)
    metrics = None if val_accuracy is None else {VAL_METRIC: float(val_accuracy)}
    return self.manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), train=ocp.args.StandardSave(rest),
            meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=True)

  def _verify_finalized(self, step: int) -> None:
    path = os.path.join(self.directory, str(step))
    if not ocp.path.step.is_checkpoint_finalized(path):
      raise RuntimeError(f"checkpoint {path} is not finalised (a save was interrupted); "
                         "delete it or restore another step")

  def read_meta(self, step: int) -> dict:
    self._verify_finalized(step)
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def saved_param_shapes(self, step: int) -> dict:
    return self.manager.item_metadata(step)["params"]

  def restore(self, step: int, target_state, shardings, *, config: dict) -> Restored:
    """Restores `step` onto the shardings of `target_state` (a pytree like `shardings`).

    `config` is the current run's config dict, compared with the saved one first.
    """
    meta = self.read_meta(step)
    check_compatible(meta["config"], config)
    target_params, target_rest = _to_savable(target_state)
    shard_params, shard_rest = _to_savable(shardings)
    saved = self.manager.item_metadata(step)
    for item, target, hint in (
        ("params", target_params, ""),
        ("train", target_rest, " (the optimizer state is laid out differently: another "
         "train.optimizer, train.grad_clip_norm on/off, train.grad_accum_steps, or a checkpoint "
         "from another sciqa-jax version)")):
      difference = first_shape_difference(saved[item], target, item)
      if difference:
        raise CheckpointMismatchError(f"checkpoint step {step} in {self.directory} does not fit: "
                                      f"{difference}{hint}")
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(target_params, shard_params)),
        train=ocp.args.StandardRestore(_abstract(target_rest, shard_rest)),
        meta=ocp.args.JsonRestore()))
    state = _from_savable(target_state, restored.params, restored.train)
    return Restored(state, restored.meta)

  def restore_params(self, step: int) -> dict:
    """Only the params item, onto the first local device (for evaluation and export)."""
    self._verify_finalized(step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
                          self.saved_param_shapes(step))
    return self.manager.restore(
        step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))).params

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


# ---- loading trained students ----------------------------------------------------------------


def resolve_step(checkpointer: Checkpointer, step: str | int) -> int:
  if step == "best":
    resolved = checkpointer.best_step()
  elif step == "latest":
    resolved = checkpointer.latest_step()
  else:
    resolved = int(step)
    if resolved not in checkpointer.all_steps():
      raise FileNotFoundError(f"no checkpoint step {resolved} in {checkpointer.directory}; "
                              f"available: {checkpointer.all_steps()}")
  if resolved is None:
    raise FileNotFoundError(f"no finished checkpoint in {checkpointer.directory}")
  return resolved


def load_students(path: str, *, step: str | int = "best") -> LoadedStudents:
  """The trained students of a run directory: model, params {student: params}, tokenizer, config.

  `path` is the run's workdir (with config.json, tokenizer/ and checkpoints/); `step` is "best"
  (highest validation accuracy, else latest), "latest", or a step number. Only parameters are read.
  """
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{config_path} not found: is {path} a train.py --workdir?")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  checkpointer = Checkpointer(path, read_only=True)
  try:
    resolved = resolve_step(checkpointer, step)
    meta = checkpointer.read_meta(resolved)
    params = checkpointer.restore_params(resolved)
  finally:
    checkpointer.close()
  model = T5(T5Config.from_hf(meta["t5_config"]).replace(dtype=config.model.dtype,
                                                         param_dtype=config.model.param_dtype))
  tokenizer = load_tokenizer(os.path.join(path, "tokenizer"))
  params = jax.tree.map(jnp.asarray, params)
  return LoadedStudents(model, params, tokenizer, config, resolved)
