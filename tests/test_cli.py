"""The scripts' console: third-party noise filtered at the default verbosity, shown at --verbosity=1."""

import logging
import os

import pytest
from absl import logging as absl_logging

from sciqa_jax import cli

ORBAX_WARNING = "Requested `tracked_metric`; did not provide metrics."


@pytest.fixture
def restore_logging():
  """Leaves the worker's loggers and environment as the test found them."""
  env = dict(os.environ)
  levels = {name: logging.getLogger(name).level for name in (*cli._LOGGER_LEVELS, "sciqa_jax")}
  yield
  cli.set_verbosity(1)
  os.environ.clear()
  os.environ.update(env)
  for name, level in levels.items():
    logging.getLogger(name).setLevel(level)


def _save_without_metrics(tmp_path):
  """orbax's own call path for the spurious warning: a best-tracking manager saved without a score."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  options = ocp.CheckpointManagerOptions(best_fn=lambda m: m["accuracy"], best_mode="max",
                                         enable_async_checkpointing=False)
  with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
    manager.save(1, args=ocp.args.Composite(meta=ocp.args.JsonSave({"step": 1})))


def _messages(caplog):
  return [r.getMessage() for r in caplog.records]


def test_orbax_noise_hidden_by_default_shown_at_verbosity_1(tmp_path, caplog, restore_logging):
  caplog.set_level(logging.DEBUG)
  cli.quiet_third_party(argv=["--config", "configs/demo.py"])
  cli.set_verbosity(0)
  _save_without_metrics(tmp_path / "quiet")
  assert ORBAX_WARNING not in _messages(caplog)
  assert not [r for r in caplog.records if r.pathname.find("orbax") >= 0 and r.levelno < logging.WARNING]
  absl_logging.warning("a real warning")
  assert "a real warning" in _messages(caplog)

  caplog.clear()
  cli.set_verbosity(1)
  _save_without_metrics(tmp_path / "verbose")
  assert ORBAX_WARNING in _messages(caplog)
  assert any("orbax" in r.pathname and r.levelno == logging.INFO for r in caplog.records)


def _record(path, level, msg):
  return logging.LogRecord("absl", level, path, 1, msg, (), None)


def test_filter_keeps_the_project_and_real_warnings():
  keep = cli.ThirdPartyFilter().filter
  orbax = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
  assert keep(_record(os.path.join(cli._PACKAGE_DIR, "checkpoints.py"), logging.INFO, "saved"))
  assert keep(_record(orbax, logging.WARNING, "Checkpoint step 3 is corrupt"))
  assert not keep(_record(orbax, logging.INFO, "Restoring checkpoint"))
  assert not keep(_record(orbax, logging.WARNING, ORBAX_WARNING))


@pytest.mark.parametrize("argv,verbosity", [
    ([], 0), (["--config", "c.py"], 0), (["--verbosity=1"], 1), (["--verbosity", "2"], 2),
    (["-v", "1"], 1), (["--v=-1"], -1), (["--verbosity=x"], 0), (["--", "--verbosity=1"], 0)])
def test_verbosity_from_argv(argv, verbosity):
  assert cli.verbosity_from_argv(argv) == verbosity


def test_environment_set_only_when_quiet_and_not_overriding_the_user(monkeypatch, restore_logging):
  monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
  cli.quiet_third_party(argv=["--verbosity=1"])
  assert "GRPC_VERBOSITY" not in os.environ
  cli.quiet_third_party(argv=[])
  assert os.environ["GRPC_VERBOSITY"] == "ERROR"
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's choice stands
  cli.set_verbosity(1)
  assert "GRPC_VERBOSITY" not in os.environ


def test_tensorflow_loads_silently_once_quieted():
  # TensorFlow's C++ runtime logs a oneDNN notice (and absl's pre-init banner) at import, where
  # TF_CPP_MIN_LOG_LEVEL does not reach; the scripts import it for TFRecords and TensorBoard.
  import subprocess
  import sys
  code = "from sciqa_jax import cli; cli.quiet_third_party([]); import tensorflow"
  env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GLOG", "GRPC"))}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          timeout=120)
  assert result.returncode == 0 and result.stderr == "", result.stderr
