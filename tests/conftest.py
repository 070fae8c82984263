"""Test-session set-up shared by every test module.

Four fake CPU devices are created before JAX initialises, so the pmap / sharding tests see a
multi-device machine; everything else runs on device 0 as usual. XLA's backend optimisations are
turned down: the tests' tiny models spend far longer compiling than running, and this cuts a train
step's compilation roughly in half on the 2-core CI machine (numerics are unchanged up to float
rounding, well inside every tolerance the tests use).
"""

import os

FAST_COMPILE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 " + FAST_COMPILE_XLA_FLAGS)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
