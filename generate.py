"""Write the rationale cache: `python generate.py --config configs/<name>.py [--config.key=value ...]`.

Loads the task's splits (`teacher.splits`), has the teacher explain every example
`teacher.num_samples` times, keeps the rationales whose answer is correct (`teacher.keep`) and
writes them to `config.cache_dir` (sciqa_jax.cache). Rerunning the same command resumes a killed
run, rewrites a damaged shard, and on a complete cache only reads it and prints the summary; a
different config on the same cache_dir is refused. The summary counts, per split, the questions
left without a rationale. The work is in sciqa_jax.rationales.
"""

from sciqa_jax import cli

cli.quiet_third_party()  # before TensorFlow / JAX are imported

from absl import app
from absl import logging

from sciqa_jax import rationales

_FLAGS = cli.define_common_flags(config_help="Config file (configs/<name>.py[:variant]).")


def _process_index(config) -> int:
  # Only the Flax teacher can span hosts. JAX is not initialised for the other backends: on a GPU
  # machine that would reserve most of the memory the PyTorch teacher needs.
  if config.teacher.backend != "jax_t5":
    return 0
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_index()


def main(argv) -> None:
  cli.set_verbosity()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _FLAGS.config.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config configs/generate_arc_easy.py")
  process_index = _process_index(config)
  counts = rationales.build_cache(config, process_index=process_index,
                                  progress=_FLAGS.progress.value)
  if process_index == 0:
    logging.info("rationale cache: %s", config.cache_dir)
    print(rationales.format_summary(counts), flush=True)


if __name__ == "__main__":
  cli.run(main)
