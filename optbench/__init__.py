"""optbench: a command-line experiment runner for studying deep-learning optimizers."""

__version__ = "0.1.0"
