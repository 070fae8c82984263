"""sciqa-jax: distil chain-of-thought rationales from large teachers into small Flax T5 students."""

__version__ = "0.1.0"
