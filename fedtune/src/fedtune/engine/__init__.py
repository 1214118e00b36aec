"""The simulation engine: round loop, client sampling, backends, checkpoints."""

from fedtune.engine.loop import Run, RunError, RunResult, resume_experiment, run_experiment

__all__ = ["Run", "RunError", "RunResult", "resume_experiment", "run_experiment"]
