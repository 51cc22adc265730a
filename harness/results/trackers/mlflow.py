"""MLflow: one MLflow run per case in a local SQLite store, ``<track-dir>/mlflow.db``.

Written through :class:`mlflow.tracking.MlflowClient` bound to the store's URI, never the global
``mlflow.set_tracking_uri`` (a notebook's own tracking stays untouched). The experiment
``backbone-bench`` keeps its artifacts under ``<track-dir>/mlflow-artifacts`` (MLflow's default is
``./mlruns`` in whatever folder pytest ran from). Metrics are logged at step 0, curve points at
their epoch; every run is tagged with the session's label and its case id as the run name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.results.trackers import CURVE_PREFIX, LABEL_KEY, Tracked

EXPERIMENT = "backbone-bench"
# MlflowClient.log_batch takes at most 100 params and 1000 metrics a call (MLflow's limits).
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000


def store_uri(directory: Path) -> str:
    """The SQLite store under ``directory``: what ``mlflow ui --backend-store-uri`` takes."""
    return f"sqlite:///{(directory / 'mlflow.db').absolute()}"


def _client(directory: Path, create: bool) -> tuple[Any, str | None]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(directory))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return client, str(experiment.experiment_id)
    if not create:
        return client, None
    artifacts = (directory / "mlflow-artifacts").absolute().as_uri()
    return client, str(client.create_experiment(EXPERIMENT, artifact_location=artifacts))


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's INFO lines about creating and migrating a new store's tables, held back."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def log(cases: Sequence[Tracked], directory: Path, label: str) -> str:
    """One MLflow run per case: params, metrics at step 0, curves by epoch; finished."""
    from mlflow.entities import Metric, Param

    directory.mkdir(parents=True, exist_ok=True)
    with _quiet():
        client, experiment = _client(directory, create=True)
    stamp = int(time.time() * 1000)
    for case in cases:
        run_id = client.create_run(experiment, run_name=case.name, tags={LABEL_KEY: label}).info.run_id
        params = [Param(key, value) for key, value in case.params.items()]
        metrics = [Metric(key, value, stamp, 0) for key, value in case.metrics.items()]
        metrics += [Metric(key, value, stamp, epoch) for key, points in case.curves.items() for epoch, value in points]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start:start + _PARAMS_PER_BATCH])
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + _METRICS_PER_BATCH])
        client.set_terminated(run_id)
    return f"{store_uri(directory)} (mlflow ui --backend-store-uri {store_uri(directory)})"


def read(directory: Path, label: str) -> dict[str, Tracked]:
    """The cases of ``label`` read back from the store with ``search_runs`` and the metric histories."""
    client, experiment = _client(directory, create=False)
    if experiment is None:
        return {}
    found: dict[str, Tracked] = {}
    for run in client.search_runs([experiment], filter_string=f"tags.{LABEL_KEY} = '{label}'", max_results=50_000):
        run_id = run.info.run_id
        metrics = {key: float(value) for key, value in run.data.metrics.items() if not key.startswith(CURVE_PREFIX)}
        curves = {key: sorted((int(m.step), float(m.value)) for m in client.get_metric_history(run_id, key))
                  for key in run.data.metrics if key.startswith(CURVE_PREFIX)}
        found[run.info.run_name] = Tracked(run.info.run_name, dict(run.data.params), metrics, curves)
    return found
