"""Device mesh, data-parallel and FSDP shardings, and the multi-host plumbing around them.

One 1-D mesh with a single axis, "data", over every device of every process serves both modes:

  data  the state is replicated on every device; the batch is split along its leading axis. XLA
        inserts the gradient all-reduce.
  fsdp  the batch is split the same way, and every state array (params, and optimizer-state
        leaves, which have the shapes of the params or of their factored statistics) is sharded
        along its largest dimension divisible by the device count; arrays with no such dimension
        are replicated. XLA gathers params for the forward/backward pass and reduce-scatters the
        gradients, so the per-device state memory drops by about the device count.

Both are expressed as `NamedSharding`s given to `jax.jit` (`jit_train_step`): the step function
itself is the same single-device code, and jit's sharding propagation does the rest. The mesh uses
`AxisType.Auto` so that propagation is implicit (jax.make_mesh's default Explicit axes would ask
every op for sharding annotations).

Multi-host: every process runs the same program; `initialize_distributed` joins the processes into
one job, `shard_batch` turns each process's host-local numpy batch into one global array, and
`init_sharded_state` creates the state directly in its sharded layout under jit, so no process
ever materialises a full copy of an FSDP-sharded state. `ProcessGroup` is the job as host code
sees it (this process's index, the process count, an exchange of small JSON values): what
generation's cache writers coordinate with (sciqa_jax.cache).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from sciqa_jax.train_step import TrainState

log = logging.getLogger(__name__)

DATA_AXIS = "data"
PARALLELISMS = ("data", "fsdp")


def _check_parallelism(parallelism: str) -> None:
  if parallelism not in PARALLELISMS:
    raise ValueError(f"train.parallelism={parallelism!r}; expected one of {PARALLELISMS}")


def make_mesh(parallelism: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D ("data",) mesh over `devices` (default: all devices of all processes).

  Both parallelisms use the same mesh (they differ in the state shardings); `parallelism` is
  validated here so that a misspelt config value fails before anything is compiled.
  """
  _check_parallelism(parallelism)
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("make_mesh needs at least one device")
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def fsdp_spec(shape: Sequence[int], num_shards: int) -> P:
  """Shard the largest dimension divisible by `num_shards` (the first on ties), else replicate."""
  if num_shards > 1:
    order = sorted(range(len(shape)), key=lambda dim: -shape[dim])
    for dim in order:
      if shape[dim] >= num_shards and shape[dim] % num_shards == 0:
        return P(*([None] * dim + [DATA_AXIS]))
  return P()


def state_shardings(state: TrainState, mesh: Mesh, parallelism: str) -> TrainState:
  """A `TrainState` of NamedShardings for `state` (arrays or `jax.eval_shape` structs).

  `step` and `rng` are always replicated; params and optimizer state follow `parallelism` (see
  the module docstring). Optimizer-state leaves shaped like a param get that param's sharding.
  """
  _check_parallelism(parallelism)
  replicated = NamedSharding(mesh, P())
  if parallelism == "data":
    return jax.tree.map(lambda _: replicated, state)
  num_shards = mesh.shape[DATA_AXIS]

  def leaf_sharding(leaf):
    return NamedSharding(mesh, fsdp_spec(np.shape(leaf), num_shards))

  return TrainState(step=replicated,
                    params=jax.tree.map(leaf_sharding, state.params),
                    opt_state=jax.tree.map(leaf_sharding, state.opt_state),
                    rng=replicated)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data", everything else whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Global arrays from this process's host-local numpy batch (a pytree of `[b, ...]` arrays).

  Every process passes its own `b` rows (its share of the global batch, in process order); the
  result's leading dimension is `b * process_count`. Works unchanged on a single host.
  """
  sharding = batch_sharding(mesh)
  local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())

  def put(path, leaf):
    leaf = np.asarray(leaf)
    if leaf.ndim == 0 or leaf.shape[0] % local_devices:
      raise ValueError(f"batch entry {jax.tree_util.keystr(path)} has shape {leaf.shape}: its "
                       f"leading (batch) dimension must be divisible by this process's "
                       f"{local_devices} devices")
    return jax.make_array_from_process_local_data(sharding, leaf)

  return jax.tree_util.tree_map_with_path(put, batch)


def init_sharded_state(init_fn: Callable[..., TrainState], *args, mesh: Mesh,
                       parallelism: str) -> tuple[TrainState, TrainState]:
  """Run `init_fn(*args)` (e.g. `create_train_state` on initial params) under jit, output
  already sharded.

  Returns `(state, shardings)`. Pass large inputs (initial params) as `args`, not in a closure:
  jit would bake closed-over arrays into the program as constants. `init_fn` must be
  deterministic (same seed on every process), as every process computes its own shards of the
  same state.
  """
  shardings = state_shardings(jax.eval_shape(init_fn, *args), mesh, parallelism)
  return jax.jit(init_fn, out_shardings=shardings)(*args), shardings


def jit_train_step(train_step: Callable, state_shardings: TrainState,
                   batch_sharding: NamedSharding) -> Callable:
  """`jax.jit(train_step)` with the state and batch layouts fixed and the input state donated.

  Metrics come back replicated, so every process can read them. After a call, the state passed
  in is invalid (its buffers were reused for the new state).
  """
  replicated = NamedSharding(batch_sharding.mesh, P())
  return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, replicated), donate_argnums=0)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Join this process to a multi-process JAX job.

  Call it first thing in a script's main, before any JAX computation or `jax.devices()` call:
  JAX can only join a job before its backend starts.

  * With no arguments: JAX's cluster auto-detection (Cloud TPU VMs, SLURM, Open MPI, k8s) is
    tried; where it finds no cluster this is a single-process run and nothing happens. If the
    backend is already running (e.g. `train.main` called from a test), a warning is logged and
    the process carries on as it is.
  * With `coordinator_address` ("host:port" of process 0), `num_processes` and `process_id`:
    an explicit job (e.g. several GPU hosts, or several local CPU processes).
  * `num_processes=1` without a coordinator: single process, nothing happens.
  """
  if jax.distributed.is_initialized():
    return
  if coordinator_address is None and num_processes is None and process_id is None:
    try:
      jax.distributed.initialize()
    except ValueError as error:
      # Raised, before any connection attempt, when no cluster environment was detected and no
      # coordinator was given: this is a plain single-process run.
      if "coordinator_address" not in str(error):
        raise
    except RuntimeError as error:
      # Too late to join anything; nothing was asked for explicitly, so carry on as we are.
      log.warning("initialize_distributed: %s; continuing with %d process(es)", error,
                  jax.process_count())
    return
  if coordinator_address is None and num_processes == 1:
    return
  if coordinator_address is not None and (num_processes is None or process_id is None):
    raise ValueError(f"initialize_distributed(coordinator_address={coordinator_address!r}) also "
                     f"needs num_processes (got {num_processes}) and process_id (got {process_id})")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


class ProcessGroup:
  """The processes of this JAX job, for host-side coordination: `index`, `count`, `allgather`.

  Generation's cache writers (sciqa_jax.cache.CacheWriter) need only this much: which shards are
  mine, and one exchange of a small JSON value at each sync point. The exchange goes through the
  devices (`multihost_utils.process_allgather`), so it doubles as a barrier: no process returns
  from `allgather` before every process has called it. A one-process job exchanges nothing.
  """

  def __init__(self):
    self.index, self.count = jax.process_index(), jax.process_count()

  def allgather(self, value: Any) -> list[Any]:
    """Every process's JSON-serialisable `value`, in process order (a barrier too)."""
    if self.count == 1:
      return [value]
    data = json.dumps(value, sort_keys=True).encode("utf-8")
    lengths = multihost_utils.process_allgather(np.asarray([len(data)], np.int32))
    # Padded to a power of two: a handful of compiled gather shapes however the values grow.
    size = 1 << max(6, int(lengths.max() - 1).bit_length())
    padded = np.zeros(size, np.int32)  # int32: every backend's collectives take it
    padded[:len(data)] = np.frombuffer(data, np.uint8)
    gathered = multihost_utils.process_allgather(padded)
    return [json.loads(np.asarray(row[:int(n)], np.uint8).tobytes().decode("utf-8"))
            for row, n in zip(np.asarray(gathered), np.asarray(lengths).reshape(-1))]


# ---- inference meshes: weights sharded by rules (FSDP or Megatron tensor parallelism) ----------
#
# Inference (a teacher larger than one device) uses a 2-D ("data", "model") mesh: the batch is
# split along "data", weights along "data" (fsdp: `fsdp_spec`, the training rule) or along "model"
# (tensor: `TENSOR_PARALLEL_RULES`). Both are rules given as data, path -> PartitionSpec; jit's
# sharding propagation turns them into the collectives (all-gathers per layer for fsdp, one
# all-reduce after each row-parallel matmul for tensor), so the model code stays single-device.

import re  # noqa: E402  (this section is appended; the imports above are another section's)

MODEL_AXIS = "model"
INFERENCE_PARALLELISMS = ("data", "fsdp", "tensor")

# Megatron-LM's layout (Shoeybi et al. 2019), first matching rule wins, its first spec whose
# sharded dimensions divide by the axis size is used (else the leaf is replicated). Column-parallel
# projections (q, k, v, gate, up: output features split, each device holds whole heads when the
# head count divides) feed row-parallel ones (o, down: input features split), so the activations
# between them stay sharded and only one all-reduce per block is needed. Embedding and head are
# split over the vocabulary, or over d_model when the vocabulary does not divide (e.g. 32001).
# Decoder-only names (models/decoder_only.py) and T5 names (models/t5.py) both appear.
TENSOR_PARALLEL_RULES: tuple[tuple[str, tuple[P, ...]], ...] = (
    # T5 kernels are [in, out]; decoder-only weights are torch's [out, in].
    (r"(^|/)(q|k|v|wi|wi_0|wi_1)/kernel$", (P(None, MODEL_AXIS),)),
    (r"(^|/)(q_proj|k_proj|v_proj|gate_proj|up_proj)/weight$", (P(MODEL_AXIS, None),)),
    (r"(^|/)(q_proj|k_proj|v_proj|gate_proj|up_proj)/bias$", (P(MODEL_AXIS),)),
    (r"(^|/)(o|wo)/kernel$", (P(MODEL_AXIS, None),)),
    (r"(^|/)(o_proj|down_proj)/weight$", (P(None, MODEL_AXIS),)),
    (r"(^|/)(embed_tokens|shared)/embedding$", (P(MODEL_AXIS, None), P(None, MODEL_AXIS))),
    (r"(^|/)lm_head/weight$", (P(MODEL_AXIS, None), P(None, MODEL_AXIS))),
    (r"(^|/)lm_head/kernel$", (P(None, MODEL_AXIS), P(MODEL_AXIS, None))),
    (r"(^|/)relative_attention_bias$", (P(None, MODEL_AXIS),)),  # [buckets, heads]: per head
)


def _check_inference_parallelism(parallelism: str) -> None:
  if parallelism not in INFERENCE_PARALLELISMS:
    raise ValueError(f"teacher.parallelism={parallelism!r}; expected one of "
                     f"{INFERENCE_PARALLELISMS}")


def make_inference_mesh(parallelism: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ("data", "model") mesh over `devices` (default all): (n, 1) for data and fsdp, (1, n) for
  tensor, where the whole batch goes to every device and each holds 1/n of every layer."""
  _check_inference_parallelism(parallelism)
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("make_inference_mesh needs at least one device")
  shape = (1, len(devices)) if parallelism == "tensor" else (len(devices), 1)
  return Mesh(np.asarray(devices).reshape(shape), (DATA_AXIS, MODEL_AXIS),
              axis_types=(AxisType.Auto, AxisType.Auto))


def _divides(spec: P, shape: Sequence[int], sizes: dict[str, int]) -> bool:
  if len(spec) > len(shape):
    return False
  return all(axis is None or shape[dim] % sizes[axis] == 0 for dim, axis in enumerate(spec))


def rule_spec(path: str, shape: Sequence[int], axis_sizes: dict[str, int],
              rules: Sequence[tuple[str, Sequence[P]]] = TENSOR_PARALLEL_RULES) -> P:
  """The spec of the first rule matching `path` ("a/b/kernel") whose dimensions divide, else P()."""
  for pattern, specs in rules:
    if re.search(pattern, path):
      return next((spec for spec in specs if _divides(spec, shape, axis_sizes)), P())
  return P()


def param_specs(params: Any, mesh: Mesh, parallelism: str,
                rules: Sequence[tuple[str, Sequence[P]]] = TENSOR_PARALLEL_RULES) -> Any:
  """A pytree of PartitionSpecs for `params` (arrays or shape structs) on an inference mesh.

  data: replicated; fsdp: `fsdp_spec` over "data" (training's rule); tensor: `rules` over
  "model". Only shapes are read, so this works on `jax.eval_shape` output or numpy host params.
  """
  _check_inference_parallelism(parallelism)
  sizes = dict(mesh.shape)

  def spec(path, leaf):
    shape = np.shape(leaf)
    if parallelism == "fsdp":
      return fsdp_spec(shape, sizes[DATA_AXIS])
    if parallelism == "tensor":
      name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
      return rule_spec(name, shape, sizes, rules)
    return P()

  return jax.tree_util.tree_map_with_path(spec, params)


def place_params(params: Any, mesh: Mesh, specs: Any) -> Any:
  """Host (numpy) params -> global arrays on `mesh`, leaf by leaf, each device receiving only its
  block (`make_array_from_callback`): the whole model is never on one device, and it works the
  same when the mesh spans several processes (each places its own devices' blocks)."""
  def put(leaf, spec):
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec),
                                        lambda index: host[index])

  return jax.tree.map(put, params, specs)
