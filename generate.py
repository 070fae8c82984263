"""Write the rationale cache: `python generate.py --config configs/<name>.py [--config.key=value ...]`.

Loads the task's splits (`teacher.splits`), has the teacher explain every example
`teacher.num_samples` times, keeps the rationales whose answer is correct (`teacher.keep`) and
writes them to `config.cache_dir` (sciqa_jax.cache). Rerunning the same command resumes a killed
run, rewrites a damaged shard, and on a complete cache only reads it and prints the summary; a
different config on the same cache_dir is refused. The summary counts, per split, the questions
left without a rationale. The work is in sciqa_jax.rationales.

Several processes, with the JAX teacher (`teacher.backend=jax`): run the same command in every
process, on a TPU pod slice (detected, like train.py) or with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I`. `teacher.multiprocess` says how they share the work:
  replicas  (default) every process runs its own copy of the teacher on its local devices and
            explains its own share of the shards (p, p + N, ...) into a cache_dir every host sees;
  sharded   one teacher spans every process's devices (`teacher.parallelism=fsdp` splits its
            weights over them all: a model larger than one host) and the processes run every
            batch together; process 0 writes.
Either way the cache is byte-identical to a one-process run's, and after a killed process,
restarting all of them resumes it (sciqa_jax/cache.py's docstring). Other backends run as one
process.
"""

from sciqa_jax import cli

cli.quiet_third_party()  # before TensorFlow / JAX are imported

from absl import app
from absl import logging

from sciqa_jax import config as config_lib
from sciqa_jax import errors
from sciqa_jax import rationales

_FLAGS = cli.define_common_flags(config_help="Config file (configs/<name>.py[:variant]).")

JAX_BACKENDS = ("jax", "jax_t5")  # the teachers that can span processes (jax_t5: old name)


def _processes(config):
  """The job's processes (None: this one alone, JAX untouched).

  JAX is not initialised for the other backends: on a GPU machine that would reserve most of the
  memory the PyTorch teacher needs.
  """
  num_processes = _FLAGS.num_processes.value
  if config.teacher.backend not in JAX_BACKENDS:
    if num_processes is not None and num_processes > 1:
      raise errors.ConfigError(
          f"--num_processes={num_processes}: only a JAX teacher (teacher.backend="
          f"{' or '.join(JAX_BACKENDS)}) spans processes; run teacher.backend="
          f"{config.teacher.backend!r} as one process")
    return None
  from sciqa_jax import sharding  # pylint: disable=g-import-not-at-top

  # Before anything touches the devices: JAX can only join a job before its backend starts.
  sharding.initialize_distributed(_FLAGS.coordinator_address.value, num_processes,
                                  _FLAGS.process_id.value)
  return sharding.ProcessGroup()


def _teacher(config, processes):
  """A teacher over every process's devices for teacher.multiprocess="sharded"; else None (the
  teacher build_cache makes of config.teacher, on this process's devices)."""
  if processes is None or processes.count == 1 or config.teacher.multiprocess != "sharded":
    return None
  import jax  # pylint: disable=g-import-not-at-top
  from sciqa_jax.teacher import jax_model  # pylint: disable=g-import-not-at-top

  rationales.validate_config(config)  # before minutes of loading a model
  return jax_model.JaxTeacher.from_config(config.teacher, devices=jax.devices())


def main(argv) -> None:
  cli.set_verbosity()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _FLAGS.config.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/generate_arc_easy.py")
  config_lib.check(config)
  processes = _processes(config)
  counts = rationales.build_cache(config, teacher=_teacher(config, processes),
                                  processes=processes, progress=_FLAGS.progress.value)
  if processes is None or processes.index == 0:
    logging.info("rationale cache: %s", config.cache_dir)
    print(rationales.format_summary(counts), flush=True)


if __name__ == "__main__":
  cli.run(main)
