"""Run tracking: the lines of metrics.jsonl (the same for every phase, written by training/loop.py) also go to
the trackers named in `train.loggers`.

    [train]
    loggers = ["jsonl", "tensorboard", "wandb", "mlflow"]

    jsonl         <out>/metrics.jsonl, always written (plots, resume and the training report read it)
    tensorboard   <out>/tensorboard/ event files                    tensorboard --logdir runs/
    wandb         Weights & Biases, offline unless WANDB_MODE says otherwise (<out>/wandb/; `wandb sync` uploads);
                  project from WANDB_PROJECT (default "qwenforge")
    mlflow        MLflow, to MLFLOW_TRACKING_URI or a SQLite store <out>/mlflow.db
                  (`mlflow ui --backend-store-uri sqlite:///runs/demo/sft/mlflow.db`)

The three trackers are optional packages (`pip install -e ".[tracking]"`); naming one that is not installed
is a one-line error naming train.loggers and the package. Each run is one tracker run named after the output
folder and the phase; the resolved recipe is its config / params.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from common.errors import UserError

# logger name -> the package that provides it (None: built in)
LOGGERS = {"jsonl": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny"}


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics line, without its step."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}


class TensorBoard:
    def __init__(self, out: Path, run: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / "tensorboard"))
        self.writer.add_text("recipe", "```\n" + json.dumps(config, indent=2) + "\n```")

    def log(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, out: Path, run: str, config: dict):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "qwenforge"), name=run, dir=str(out),
                              config=config, mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, record: dict) -> None:
        self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


class MLflow:
    def __init__(self, out: Path, run: str, config: dict):
        from mlflow import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"
        self.client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "qwenforge")
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=run).info.run_id
        for key, value in flatten(config).items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, record["step"]) for k, v in scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


def flatten(config: dict, prefix: str = "") -> dict:
    """{"train": {"steps": 5}} -> {"train.steps": 5}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def open_trackers(names: tuple[str, ...], out: Path, run: str, config: dict) -> list:
    """The trackers of train.loggers besides jsonl (which MetricsLog writes), opened for one run."""
    trackers = []
    for name in names:
        if name == "jsonl":
            continue
        try:
            trackers.append(TRACKERS[name](Path(out), run, config))
        except ImportError as err:
            raise UserError(f"train.loggers names {name!r} but {err.name or name} is not installed "
                            f"(pip install {LOGGERS[name]}, or the project's [tracking] extra)") from None
    return trackers
