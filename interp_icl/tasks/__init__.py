"""In-context learning tasks: seeded samplers with exact oracles."""

from interp_icl.config import TaskConfig
from interp_icl.tasks.base import Batch, Task
from interp_icl.tasks.markov import MarkovTask
from interp_icl.tasks.repeated import RepeatedTokensTask


def make_task(config: TaskConfig) -> Task:
    """Build the task a config names."""
    if config.name == "markov":
        return MarkovTask(config)
    return RepeatedTokensTask(config)


__all__ = ["Batch", "MarkovTask", "RepeatedTokensTask", "Task", "TaskConfig", "make_task"]
