"""checkpoints: mesh round trip, latest-N + best, half-written steps, mismatches, old items."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sciqa_jax import checkpoints as ckpt
from sciqa_jax import sharding
from sciqa_jax import train_step as ts
from sciqa_jax.config import base_config


def _state(width=8, seed=0, optimizer="adafactor"):
  params = {"answer": {"dense": {"kernel": jax.random.normal(jax.random.key(seed), (width, 4))},
                       "norm": {"scale": jnp.ones((4,))}}}
  c = base_config()
  c.train.optimizer = optimizer
  return ts.create_train_state(params, ts.make_optimizer(c.train), jax.random.key(seed + 1))


def _meta(config=None):
  return {"config": config or base_config().to_dict(), "phase": "joint", "phase_index": 0}


def _save(manager, step, state, val=None, config=None):
  assert manager.save(step, state, meta=_meta(config), val_accuracy=val)


def _assert_states_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_onto_fsdp_mesh(tmp_path):
  state = _state()
  manager = ckpt.Checkpointer(str(tmp_path), keep=2)
  _save(manager, 5, state, val=0.25)
  manager.wait()
  manager.close()

  mesh = sharding.make_mesh("fsdp")
  target = _state(seed=7)  # different values, same structure
  shardings = sharding.state_shardings(target, mesh, "fsdp")
  reader = ckpt.Checkpointer(str(tmp_path), keep=2)
  assert reader.latest_step() == 5
  restored = reader.restore(5, target, shardings, config=base_config().to_dict())
  reader.close()
  _assert_states_equal(state, restored.state)
  kernel = restored.state.params["answer"]["dense"]["kernel"]
  assert kernel.sharding == shardings.params["answer"]["dense"]["kernel"]
  assert len(kernel.sharding.device_set) == 4
  assert restored.meta["step"] == 5 and restored.meta["val_accuracy"] == 0.25
  assert isinstance(restored.state, ts.TrainState)
  # Three items (and orbax's metrics), no data-iterator blob: the data position is the step.
  assert sorted(p.name for p in (tmp_path / "checkpoints" / "5").iterdir()
                if p.is_dir()) == ["meta", "metrics", "params", "train"]


def test_checkpoint_with_an_old_data_item_restores(tmp_path, caplog):
  # What the previous version wrote: the same three items plus `data` (iterator positions).
  state = _state()
  params, rest = ckpt._to_savable(state)  # pylint: disable=protected-access
  old = ocp.CheckpointManager(
      str(tmp_path / "checkpoints"),
      item_handlers={"params": ocp.StandardCheckpointHandler(),
                     "train": ocp.StandardCheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})
  old.save(4, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params), train=ocp.args.StandardSave(rest),
      meta=ocp.args.JsonSave(dict(_meta(), step=4, val_accuracy=None)),
      data=ocp.args.JsonSave({"process_0": "b64-iterator-state"})))
  old.wait_until_finished()
  old.close()
  assert (tmp_path / "checkpoints" / "4" / "data").is_dir()

  caplog.set_level(logging.WARNING)
  mesh = sharding.make_mesh("data")
  target = _state(seed=7)
  reader = ckpt.Checkpointer(str(tmp_path), keep=2)
  assert reader.latest_step() == 4 and reader.read_meta(4)["step"] == 4
  restored = reader.restore(4, target, sharding.state_shardings(target, mesh, "data"),
                            config=base_config().to_dict())
  _assert_states_equal(state, restored.state)
  _assert_states_equal(state.params, reader.restore_params(4))
  # The old item is skipped silently (orbax warns about item directories it has no handler for).
  assert not [r for r in caplog.records if '"data"' in r.getMessage()]
  # A resumed run keeps saving (three items) beside the old checkpoint.
  _save(reader, 6, restored.state)
  reader.wait()
  assert reader.all_steps() == [4, 6]
  reader.close()


def test_keeps_latest_n_and_best(tmp_path):
  manager = ckpt.Checkpointer(str(tmp_path), keep=1)
  state = _state()
  for step, val in ((1, 0.5), (2, 0.9), (3, 0.3), (4, None)):
    _save(manager, step, state, val=val)
    manager.wait()
  assert manager.all_steps() == [2, 4]
  assert manager.best_step() == 2 and manager.latest_step() == 4
  manager.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_half_written_checkpoint_is_ignored(tmp_path):
  manager = ckpt.Checkpointer(str(tmp_path), keep=2)
  _save(manager, 3, _state())
  manager.wait()
  manager.close()
  # What a run killed during an orbax save leaves behind: a temporary step directory.
  partial = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1700000000"
  (partial / "params").mkdir(parents=True)
  (partial / "params" / "garbage").write_bytes(b"\0" * 10)
  reader = ckpt.Checkpointer(str(tmp_path), keep=2)
  assert reader.latest_step() == 3 and reader.all_steps() == [3]
  with pytest.raises(RuntimeError, match="not finalised"):
    reader._verify_finalized(9)  # pylint: disable=protected-access
  reader.close()


def test_mismatched_model_or_objective_is_named(tmp_path):
  manager = ckpt.Checkpointer(str(tmp_path), keep=2)
  _save(manager, 1, _state(width=8))
  manager.wait()
  mesh = sharding.make_mesh("data")
  other = _state(width=6)
  shardings = sharding.state_shardings(other, mesh, "data")
  with pytest.raises(ckpt.CheckpointMismatchError, match=r"params/answer/dense/kernel.*\(8, 4\)"):
    manager.restore(1, other, shardings, config=base_config().to_dict())

  config = base_config().to_dict()
  config["model"]["d_model"] = 64
  with pytest.raises(ckpt.CheckpointMismatchError, match="model.d_model=128.*model.d_model=64"):
    manager.restore(1, _state(), shardings, config=config)
  config = base_config().to_dict()
  config["objective"]["name"] = "answer_only"
  with pytest.raises(ckpt.CheckpointMismatchError, match="objective.name='two_stage'"):
    manager.restore(1, _state(), shardings, config=config)
  # Same params, another optimizer: its state is named instead of orbax's tree dump.
  adamw = _state(optimizer="adamw")
  with pytest.raises(ckpt.CheckpointMismatchError,
                     match=r"train/opt_state/.*/mu/answer/dense/kernel .*train.optimizer"):
    manager.restore(1, adamw, sharding.state_shardings(adamw, mesh, "data"),
                    config=base_config().to_dict())
  manager.close()


def test_check_compatible_refuses_another_task_or_other_training_rows():
  from sciqa_jax.config import base_config
  saved = base_config().to_dict()
  saved["task"] = "strategy_qa"
  same = dict(saved, task="strategyqa")  # an alias of the same task
  ckpt.check_compatible(saved, same)
  with pytest.raises(ckpt.CheckpointMismatchError, match="task 'strategy_qa'.*'arc_easy'"):
    ckpt.check_compatible(saved, dict(saved, task="arc_easy"))
  for section, key, value in (("data", "train_subsample", 32), ("objective", "answer_source",
                                                                 "teacher")):
    changed = dict(saved, **{section: dict(saved[section], **{key: value})})
    with pytest.raises(ckpt.CheckpointMismatchError, match=f"{section}.{key}"):
      ckpt.check_compatible(saved, changed)
  # A checkpoint written before a setting existed is not compared on it.
  older = dict(saved, data={k: v for k, v in saved["data"].items() if k != "train_subsample"})
  ckpt.check_compatible(older, dict(saved, data=dict(saved["data"], train_subsample=32)))
