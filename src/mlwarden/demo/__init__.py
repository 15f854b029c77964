"""`mlwarden demo`: the whole loop on this machine, no cluster (see story.py)."""

from mlwarden.demo.story import DemoError, DemoResult, run_demo, write_iris_model, write_models

__all__ = ["DemoError", "DemoResult", "run_demo", "write_iris_model", "write_models"]
