"""Loads configs/demo.py the way ml_collections' config_flags does (by path, with a variant)."""

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_demo_config(variant: str = "full"):
  spec = importlib.util.spec_from_file_location("demo_config_file", REPO / "configs" / "demo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)
