"""Data-parallel and FSDP training on 4 fake CPU devices, and a two-process job, vs one device.

Every run goes through the same path as train.py: `init_sharded_state` -> `jit_train_step` ->
`shard_batch` per step. A one-device mesh is the reference. The multi-process test starts two
local JAX processes (2 CPU devices each, gloo collectives) that each feed their half of every
batch; this module doubles as their worker library (`run_steps`, `process_local_run`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import flax
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sciqa_jax.models.t5 import T5
from sciqa_jax.objectives import Objective
from sciqa_jax.sharding import (batch_sharding, fsdp_spec, init_sharded_state,
                                initialize_distributed, jit_train_step, make_mesh, shard_batch,
                                state_shardings)
from sciqa_jax.train_step import create_train_state, make_optimizer, make_train_step
from tests.test_train_step import (COMPILER_OPTIONS, make_batch, make_params, make_train_config,
                             tiny_config)

OBJECTIVE = Objective("fine_tune_cot")
STEPS = 3
GLOBAL_BATCH = 8
LEARNING_RATE = 1e-2


def global_batches() -> list[dict]:
  return [make_batch(OBJECTIVE, seed=10 + i, batch_size=GLOBAL_BATCH) for i in range(STEPS)]


def run_steps(mesh, parallelism: str, local_batches: list[dict], params: dict):
  """STEPS train steps on `mesh`; returns (final state, per-step losses, first state's leaf).

  The first state's leaf is returned to check that the jitted step donated it.
  """
  model = T5(tiny_config())
  # Clipping on: the global gradient norm needs a cross-device reduction to be right.
  optimizer = make_optimizer(make_train_config(optimizer="adamw", learning_rate=LEARNING_RATE,
                                               grad_clip_norm=0.5))
  state, shardings = init_sharded_state(
      lambda p: create_train_state(p, optimizer, jax.random.PRNGKey(0)), params, mesh=mesh,
      parallelism=parallelism)
  first_leaf = jax.tree.leaves(state.params)[0]
  step = jit_train_step(make_train_step(model, optimizer, OBJECTIVE), shardings,
                        batch_sharding(mesh))
  step = step.lower(state, shard_batch(local_batches[0], mesh)).compile(COMPILER_OPTIONS)
  losses = []
  for batch in local_batches:
    state, metrics = step(state, shard_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  return state, losses, first_leaf


def process_local_run(process_id: int, process_count: int,
                      params_file: str) -> tuple[list[np.ndarray], list[float]]:
  """A multi-process worker's data-parallel run on its rows of each global batch.

  The initial params come from `params_file` (written by the test), which spares every worker
  the compilation of the model's init.
  """
  params = flax.traverse_util.unflatten_dict(dict(np.load(params_file)), sep="/")
  rows = GLOBAL_BATCH // process_count
  local = [jax.tree.map(lambda x: x[process_id * rows:(process_id + 1) * rows], batch)
           for batch in global_batches()]
  state, losses, _ = run_steps(make_mesh("data"), "data", local, params)
  # Data parallel: every process holds the whole (replicated) params.
  return [np.asarray(leaf.addressable_data(0)) for leaf in jax.tree.leaves(state.params)], losses


@pytest.fixture(scope="module")
def reference():
  state, losses, _ = run_steps(make_mesh("data", devices=jax.devices()[:1]), "data",
                               global_batches(), make_params(OBJECTIVE))
  return [np.asarray(leaf) for leaf in jax.tree.leaves(state.params)], losses


def assert_params_close(got, want):
  """Equal up to float reassociation in the gradient reductions.

  Adam divides by the root of the second moment, so a near-zero gradient that differs in its last
  bits can move its parameter by a visible fraction of the learning rate; a real bug (gradients
  not all-reduced, a wrong shard) moves most parameters by about the learning rate itself.
  """
  assert len(got) == len(want)
  for a, b in zip(got, want):
    diff = np.abs(np.asarray(a, np.float64) - b)
    assert diff.max() < 0.05 * LEARNING_RATE, diff.max()
    assert np.mean(diff > 1e-5) < 0.01, np.mean(diff > 1e-5)


def test_fsdp_spec():
  assert fsdp_spec((64, 32), 4) == P("data")
  assert fsdp_spec((30, 32), 4) == P(None, "data")  # the largest divisible dimension
  assert fsdp_spec((32, 64, 8), 4) == P(None, "data")
  assert fsdp_spec((6, 10), 4) == P()  # nothing divisible: replicated
  assert fsdp_spec((), 4) == P()
  assert fsdp_spec((64, 32), 1) == P()


def test_make_mesh():
  mesh = make_mesh("fsdp")
  assert mesh.axis_names == ("data",) and mesh.shape["data"] == jax.device_count() == 4
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  with pytest.raises(ValueError, match="train.parallelism"):
    make_mesh("tensor")


@pytest.mark.slow
@pytest.mark.parametrize("parallelism", ["data", "fsdp"])
def test_sharded_training_matches_one_device(reference, parallelism):
  ref_params, ref_losses = reference
  mesh = make_mesh(parallelism)
  state, losses, first_leaf = run_steps(mesh, parallelism, global_batches(),
                                        make_params(OBJECTIVE))
  assert first_leaf.is_deleted(), "the jitted step should donate the input state"
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert_params_close(jax.tree.leaves(state.params), ref_params)

  embedding = state.params["student"]["shared"]["embedding"]
  mu = state.opt_state[1].inner_state[0].mu["student"]["shared"]["embedding"]
  if parallelism == "data":
    assert embedding.sharding.is_fully_replicated
  else:
    # [vocab 64, d_model 32]: split along the vocabulary, a quarter per device; Adam's first
    # moment follows its param.
    assert embedding.sharding.spec == P("data") == mu.sharding.spec
    assert {shard.data.shape for shard in embedding.addressable_shards} == {(16, 32)}
  assert state.step.sharding.is_fully_replicated and state.rng.sharding.is_fully_replicated


def test_state_shardings_accepts_abstract_state():
  optimizer = make_optimizer(make_train_config())  # Adafactor: factored statistics too
  params = make_params(OBJECTIVE)
  abstract = jax.eval_shape(lambda: create_train_state(params, optimizer, jax.random.PRNGKey(0)))
  shardings = state_shardings(abstract, make_mesh("fsdp"), "fsdp")
  tree = (abstract.params, abstract.opt_state)
  specs = [s.spec for s in jax.tree.leaves((shardings.params, shardings.opt_state))]
  assert specs == [fsdp_spec(leaf.shape, 4) for leaf in jax.tree.leaves(tree)]
  assert P("data") in specs  # something is actually sharded
  assert shardings.step.spec == shardings.rng.spec == P()


def test_shard_batch_rejects_indivisible_batch():
  batch = make_batch(OBJECTIVE, seed=0, batch_size=6)
  with pytest.raises(ValueError, match=r"\['cot'\]\['\w+'\] has shape \(6, \d+\).*4 devices"):
    shard_batch(batch, make_mesh("data"))


def test_initialize_distributed_arguments():
  initialize_distributed(num_processes=1)  # single process: nothing to join
  with pytest.raises(ValueError, match="num_processes"):
    initialize_distributed(coordinator_address="127.0.0.1:1234")


WORKER = """
import sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from sciqa_jax.sharding import initialize_distributed
initialize_distributed(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import numpy as np
from tests import test_sharding
assert jax.process_count() == 2 and jax.device_count() == 4
params, losses = test_sharding.process_local_run(jax.process_index(), 2, sys.argv[3])
np.savez(sys.argv[4], *params, losses=np.asarray(losses))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(reference, tmp_path):
  ref_params, ref_losses = reference
  repo_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([repo_dir, os.environ.get("PYTHONPATH", "")]))
  env.pop("XLA_FLAGS", None)  # each worker gets 2 devices from jax_num_cpu_devices instead
  address = f"127.0.0.1:{_free_port()}"
  params_file = tmp_path / "initial_params.npz"
  np.savez(params_file, **flax.traverse_util.flatten_dict(
      jax.tree.map(np.asarray, make_params(OBJECTIVE)), sep="/"))
  outputs = [tmp_path / f"process{i}.npz" for i in range(2)]
  logs = [tmp_path / f"process{i}.log" for i in range(2)]
  workers = []
  for i in range(2):
    with open(logs[i], "w") as log:
      workers.append(subprocess.Popen(
          [sys.executable, "-c", WORKER, address, str(i), str(params_file), str(outputs[i])],
          env=env, stdout=log, stderr=subprocess.STDOUT))
  # A failed worker leaves the other waiting on the coordinator: stop both at the first failure.
  deadline = time.monotonic() + 240
  try:
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
      if any(w.poll() not in (None, 0) for w in workers):
        break
      time.sleep(0.2)
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.wait()
  for i, worker in enumerate(workers):
    assert worker.returncode == 0, f"process {i} failed:\n{logs[i].read_text()[-3000:]}"
  for output in outputs:
    result = np.load(output)
    np.testing.assert_allclose(result["losses"], ref_losses, rtol=1e-5)
    assert_params_close([result[f"arr_{i}"] for i in range(len(ref_params))], ref_params)
