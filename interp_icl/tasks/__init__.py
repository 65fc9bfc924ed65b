"""In-context learning tasks: seeded samplers with exact oracles."""

from interp_icl.config import CONTINUOUS_TASKS, TaskConfig
from interp_icl.tasks.base import Batch, Task
from interp_icl.tasks.classification import ClassificationTask
from interp_icl.tasks.markov import MarkovTask
from interp_icl.tasks.regression import RegressionTask
from interp_icl.tasks.repeated import RepeatedTokensTask


def make_task(config: TaskConfig) -> Task:
    """Build the task a config names."""
    if config.name == "markov":
        return MarkovTask(config)
    if config.name == "regression":
        return RegressionTask(config)
    if config.name == "classification":
        return ClassificationTask(config)
    return RepeatedTokensTask(config)


def is_continuous(task: Task) -> bool:
    """Whether the task's tokens are vectors (regression, classification) rather than token ids;
    such tasks bring their own loss and metrics (``train_loss``, ``evaluate``,
    ``baseline_losses``)."""
    return task.config.name in CONTINUOUS_TASKS


__all__ = [
    "Batch",
    "ClassificationTask",
    "MarkovTask",
    "RegressionTask",
    "RepeatedTokensTask",
    "Task",
    "TaskConfig",
    "is_continuous",
    "make_task",
]
