"""Test-session set-up shared by every test module.

Four fake CPU devices are created before JAX initialises, so the pmap / sharding tests see a
multi-device machine; everything else runs on device 0 as usual. XLA's backend optimisations are
turned down: the tests' tiny models spend far longer compiling than running, and this cuts a train
step's compilation roughly in half on the 2-core CI machine (numerics are unchanged up to float
rounding, well inside every tolerance the tests use).
"""

import atexit
import os
import shutil
import tempfile

FAST_COMPILE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 " + FAST_COMPILE_XLA_FLAGS)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One XLA compilation cache for the session, inherited by the scripts the tests run as
# subprocesses: the suite compiles the same tiny programs many times over (a training run, its
# validation, then a resumed run of it...), and a cache hit skips XLA's backend compile. Fresh for
# every session, so nothing carries over from one CI run to the next.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="sciqa-jax-xla-cache-")
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
