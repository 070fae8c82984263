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

_FLAGS = cli.define_common_flags(config_help="Config file (configs/<name>.py[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, export).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.set_verbosity()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Before anything touches the devices.
  from sciqa_jax import sharding
  sharding.initialize_distributed(_FLAGS.coordinator_address.value, _FLAGS.num_processes.value,
                                  _FLAGS.process_id.value)

  import jax
  from sciqa_jax import trainer

  summary = trainer.train(_FLAGS.config.value, _WORKDIR.value, progress=_FLAGS.progress.value)
  if jax.process_index() == 0:
    print(summary.describe(), flush=True)


if __name__ == "__main__":
  cli.run(main)
