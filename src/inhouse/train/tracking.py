"""Experiment tracking through the Trainer's own integrations (`report_to`), off unless a recipe names one.

The integrations read where to write from the environment when the Trainer is built and training starts.
`tracking_env` sets, for one run only and only where the user has not, a local destination: tensorboard
in the run's folder, MLflow in a file store under INHOUSE_HOME. wandb gets nothing from us: the user's own
wandb settings (WANDB_MODE, WANDB_PROJECT, login) decide where it goes.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inhouse import paths
from inhouse.errors import InvalidInputError

TRACKING_DIR = "tensorboard"  # inside the run's folder; kept when the checkpoints go
# tracker -> (modules any one of which will do, the package to install)
NEEDS = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"), "mlflow": (("mlflow",), "mlflow"),
         "wandb": (("wandb",), "wandb")}


def check_installed(trackers: list[str]) -> None:
    """Fail before any model is loaded, naming the package, rather than deep inside the Trainer."""
    for tracker in trackers:
        modules, package = NEEDS[tracker]
        if not any(importlib.util.find_spec(m) for m in modules):
            raise InvalidInputError(f"tracking: {tracker} needs the {package} package; "
                                    f"pip install {package} (or leave {tracker} out of tracking)")


def destinations(trackers: list[str], run_dir: Path) -> dict[str, str]:
    """The environment each chosen tracker reads its local destination from."""
    wanted = {}
    if "tensorboard" in trackers:
        wanted["TENSORBOARD_LOGGING_DIR"] = str(run_dir / TRACKING_DIR)
    if "mlflow" in trackers:
        wanted["MLFLOW_TRACKING_URI"] = paths.mlruns().resolve().as_uri()
    return wanted


@contextmanager
def tracking_env(trackers: list[str], run_dir: Path) -> Iterator[dict[str, str]]:
    """The destinations the user has not set themselves, in the environment while the block runs."""
    added = {k: v for k, v in destinations(trackers, run_dir).items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield added
    finally:
        for key in added:
            os.environ.pop(key, None)
