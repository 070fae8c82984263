"""What the scripts (generate.py, train.py, evaluate.py) share: a console with the pipeline's own
progress and nothing else at the default verbosity, everything with absl's `--verbosity=1`.

  from sciqa_jax import cli
  cli.quiet_third_party()  # at import time, before TensorFlow / JAX are imported
  ...
  def main(argv):
    cli.set_verbosity()  # first thing in main(), once absl has parsed the flags
  ...
  if __name__ == "__main__":
    cli.run(main)  # a sciqa_jax.errors.UserError prints one line, not a traceback

At the default verbosity this silences:
- TensorFlow's and XLA's C++ start-up logs (`cpu_feature_guard.cc ... This TensorFlow binary is
  optimized ...`, the `All log messages before absl::InitializeLog()` banner that precedes them)
  and gRPC's: environment variables read when those libraries load, so set before any import;
- TensorFlow's python logger, and transformers' / datasets' INFO and WARNING chatter;
- JAX's backend probing (`Unable to initialize backend 'tpu': ... Failed to open libtpu.so`);
- orbax's INFO logs (dozens of lines per checkpoint load) and its spurious warnings: `Requested
  \`tracked_metric\`; did not provide metrics.` on every save without a validation score, and the
  `read_only=True` notices of a read-only CheckpointManager (evaluation).
orbax logs through absl, like this project's scripts, so it is filtered by source file rather than
by logger: absl records from the scripts and from sciqa_jax always pass, third-party ones only from
WARNING up. Environment variables a user has set are left alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Imported before the "absl" logger is first looked up: absl installs its own logger class
# there, which reports the caller's file (a plain logger would name absl's).
from absl import logging as absl_logging

from sciqa_jax import errors

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# Read by the C++ runtimes when they load: TensorFlow and XLA (2: errors only), gRPC, glog.
_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # TensorFlow (used here only for TFRecord I/O and TensorBoard files, never for compute) logs
    # a oneDNN notice at import, before absl's C++ logging is initialised, where no level
    # applies; with its oneDNN ops off there is nothing to log.
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
}
# Python loggers turned down (not "jax": a level set on it before JAX is imported makes JAX attach
# a second console handler of its own).
_LOGGER_LEVELS = {
    "tensorflow": logging.ERROR,
    "transformers": logging.ERROR,
    "datasets": logging.ERROR,
    "jax._src.xla_bridge": logging.WARNING,  # "Unable to initialize backend 'tpu'", platform probes
}
# Third-party warnings that never call for action here (message templates, prefix match).
SPURIOUS_WARNINGS = (
    # orbax: a checkpoint saved without a validation score (validation runs on its own schedule;
    # such checkpoints are kept by the latest-N policy).
    "Requested `tracked_metric`; did not provide metrics.",
    # orbax: the read-only CheckpointManager that evaluation loads students with.
    "CheckpointManagerOptions.read_only=True, setting",
    "Given directory is read only=",
)

_env_set: list[str] = []
_levels_set: dict[str, int] = {}


def _own_files() -> tuple[str, ...]:
  main = getattr(sys.modules.get("__main__"), "__file__", None)
  return (_PACKAGE_DIR + os.sep,) + ((os.path.abspath(main),) if main else ())


class ThirdPartyFilter(logging.Filter):
  """On the absl logger: the project's records pass; third-party ones from WARNING up, less the
  spurious warnings."""

  def filter(self, record: logging.LogRecord) -> bool:
    path = os.path.abspath(record.pathname)
    if any(path == own or (own.endswith(os.sep) and path.startswith(own)) for own in _own_files()):
      return True
    if record.levelno < logging.WARNING:
      return False
    return not (isinstance(record.msg, str) and record.msg.startswith(SPURIOUS_WARNINGS))


_FILTER = ThirdPartyFilter()


def verbosity_from_argv(argv: Sequence[str] | None = None) -> int:
  """absl's --verbosity (-v, --v) from the command line, before absl has parsed it; 0 if absent."""
  argv = list(sys.argv[1:] if argv is None else argv)
  verbosity = 0
  for i, arg in enumerate(argv):
    if arg == "--":
      break
    name, eq, value = arg.lstrip("-").partition("=")
    if not arg.startswith("-") or name not in ("verbosity", "v"):
      continue
    if not eq:
      value = argv[i + 1] if i + 1 < len(argv) else ""
    try:
      verbosity = int(value)
    except ValueError:
      pass  # absl reports the bad value when it parses the flags
  return verbosity


def quiet_third_party(argv: Sequence[str] | None = None) -> None:
  """Silences third-party start-up noise unless the command line asks for --verbosity >= 1.

  Call at import time, before anything imports TensorFlow, JAX, orbax or transformers.
  """
  if verbosity_from_argv(argv) >= 1:
    return
  for name, value in _ENV.items():
    if name not in os.environ:
      os.environ[name] = value
      _env_set.append(name)
  for name, level in _LOGGER_LEVELS.items():
    logger = logging.getLogger(name)
    _levels_set.setdefault(name, logger.level)
    logger.setLevel(level)
  absl_logger = logging.getLogger("absl")
  if _FILTER not in absl_logger.filters:
    absl_logger.addFilter(_FILTER)


def set_verbosity(verbosity: int | None = None) -> None:
  """Applies the parsed verbosity (default: absl's --verbosity): quiet at 0 and below, at 1 and
  above everything quiet_third_party() silenced is restored. The project's INFO logs are shown."""
  if verbosity is None:
    verbosity = absl_logging.get_verbosity()
  logging.getLogger("sciqa_jax").setLevel(logging.INFO if verbosity < 1 else logging.DEBUG)
  if verbosity < 1:
    quiet_third_party(argv=[])
    return
  while _env_set:  # for the libraries not imported yet
    os.environ.pop(_env_set.pop(), None)
  for name, level in _levels_set.items():
    logging.getLogger(name).setLevel(level)
  _levels_set.clear()
  logging.getLogger("absl").removeFilter(_FILTER)
  for name in ("transformers", "datasets"):  # already configured from their *_VERBOSITY at import
    if name in sys.modules:
      logging.getLogger(name).setLevel(logging.NOTSET)


def define_common_flags(*, config_help: str):
  """The flags every script takes, defined once so they mean the same everywhere: --config
  (ml_collections config file, `--config.key=value` overrides), --progress / --noprogress and,
  for multi-process jobs, --coordinator_address / --num_processes / --process_id. absl adds
  --verbosity (1 shows third-party logs and tracebacks of user errors). Returns the flag holders
  (config, progress, coordinator_address, num_processes, process_id)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  return CommonFlags(
      config=config_flags.DEFINE_config_file("config", None, config_help, lock_config=True),
      progress=flags.DEFINE_bool("progress", True, "Show progress bars."),
      coordinator_address=flags.DEFINE_string(
          "coordinator_address", None, "Multi-process jobs: host:port of process 0."),
      num_processes=flags.DEFINE_integer("num_processes", None,
                                         "Multi-process jobs: process count."),
      process_id=flags.DEFINE_integer("process_id", None,
                                      "Multi-process jobs: this process's index."),
  )


@dataclasses.dataclass(frozen=True)
class CommonFlags:
  config: Any
  progress: Any
  coordinator_address: Any
  num_processes: Any
  process_id: Any


def format_user_error(script: str, error: BaseException) -> str:
  """`<script>: error: <message>` on one line (a message's own line breaks become "; ")."""
  message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
  return f"{script}: error: {message or type(error).__name__}"


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)`, where a `sciqa_jax.errors.UserError` ends the script with its message
  on one line and exit status 2 instead of a traceback (kept with --verbosity=1). Other exceptions
  are bugs and keep their traceback."""
  from absl import app  # pylint: disable=g-import-not-at-top

  def guarded(argv):
    try:
      return main(argv)
    except errors.UserError as e:
      if absl_logging.get_verbosity() >= 1:
        raise
      print(format_user_error(os.path.basename(sys.argv[0]), e), file=sys.stderr, flush=True)
      sys.exit(2)

  app.run(guarded)
