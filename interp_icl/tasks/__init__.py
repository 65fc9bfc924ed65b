"""In-context learning tasks: seeded samplers with exact oracles, made from registered configs."""

from interp_icl.builtin_tasks import (
    ClassificationConfig,
    MarkovConfig,
    RegressionConfig,
    RepeatedConfig,
)
from interp_icl.config import TaskConfig
from interp_icl.registry import TaskConfigBase, task_entry
from interp_icl.tasks.base import Batch, Task
from interp_icl.tasks.classification import ClassificationTask
from interp_icl.tasks.markov import MarkovTask
from interp_icl.tasks.regression import RegressionTask
from interp_icl.tasks.repeated import RepeatedTokensTask


def make_task(config: TaskConfigBase) -> Task:
    """Build the task a config names (through the task registry)."""
    return task_entry(config.name).make(config)


def is_continuous(task: Task) -> bool:
    """Whether the task's tokens are vectors (regression, classification) rather than token ids;
    such tasks bring their own loss and metrics (``train_loss``, ``evaluate``,
    ``baseline_losses``)."""
    return type(task.config).continuous


__all__ = [
    "Batch",
    "ClassificationConfig",
    "ClassificationTask",
    "MarkovConfig",
    "MarkovTask",
    "RegressionConfig",
    "RegressionTask",
    "RepeatedConfig",
    "RepeatedTokensTask",
    "Task",
    "TaskConfig",
    "TaskConfigBase",
    "is_continuous",
    "make_task",
]
