"""Train the students of a config on its rationale cache.

  python train.py --config configs/sci_cot_arc_easy_flan_t5_small.py --workdir runs/arc_easy \
      [--config.train.steps=2000 ...] \
      [--coordinator_address=host0:1234 --num_processes=2 --process_id=0]

Rerunning with the same --workdir resumes from its latest checkpoint (state and data position).
See sciqa_jax/trainer.py for what is written under the workdir.
"""

from __future__ import annotations

from sciqa_jax import cli

cli.quiet_third_party()  # before TensorFlow / JAX are imported

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, export).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "Multi-process jobs: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process jobs: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process jobs: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.set_verbosity()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Before anything touches the devices.
  from sciqa_jax import sharding
  sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)

  import jax
  from sciqa_jax import trainer

  summary = trainer.train(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    print(summary.describe(), flush=True)


if __name__ == "__main__":
  app.run(main)
