"""TensorBoard: one event-file folder per case, ``<track-dir>/tensorboard/<label>/<case id>``.

Written with :class:`torch.utils.tensorboard.SummaryWriter` (it needs the ``tensorboard``
package). Scalars are written new-style in double precision: TensorBoard's classic scalars are
float32, which would turn a 88.44444444444444 % top-1 into 88.44444580078125. Metrics are the
scalars ``metrics/<key>`` at step 0, curve points ``curve/<key>`` at their epoch, and params the
HParams plugin's session (TensorBoard's HPARAMS tab lists every case with them). ``tensorboard
--logdir <track-dir>/tensorboard`` shows the runs by session and case.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from harness.results.trackers import Tracked

_METRIC_PREFIX = "metrics/"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=,/-]")


def run_dir(directory: Path, label: str) -> Path:
    """The session's folder: its label with what a path cannot hold (``:`` of the time zone) as ``-``."""
    return directory / "tensorboard" / _UNSAFE.sub("-", label)


def log(cases: Sequence[Tracked], directory: Path, label: str) -> str:
    """One event-file folder per case: hparams, metrics at step 0, curves by epoch."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    root = run_dir(directory, label)
    for case in cases:
        # A case id's "/" (train/…) nests the folders as the ids read; anything odd becomes "-".
        writer = SummaryWriter(log_dir=str(root / _UNSAFE.sub("-", case.name)))
        try:
            # The hparams summaries go to this case's own file (SummaryWriter.add_hparams would open a sub-run).
            summaries = hparams(dict(case.params), {f"{_METRIC_PREFIX}{key}": value for key, value in case.metrics.items()})  # type: ignore[no-untyped-call]
            file_writer = writer.file_writer
            if file_writer is None:  # SummaryWriter opens it in __init__; typed Optional for after close()
                raise RuntimeError(f"TensorBoard's writer of {case.name} is closed")
            for summary in summaries:
                file_writer.add_summary(summary)
            for key, value in case.metrics.items():
                writer.add_scalar(f"{_METRIC_PREFIX}{key}", value, global_step=0, new_style=True, double_precision=True)
            for key, points in case.curves.items():
                for epoch, value in points:
                    writer.add_scalar(key, value, global_step=epoch, new_style=True, double_precision=True)
        finally:
            writer.close()
    return f"{root} (tensorboard --logdir {directory / 'tensorboard'})"


def read(directory: Path, label: str) -> dict[str, Tracked]:
    """The cases of ``label`` read back with TensorBoard's ``EventAccumulator``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from tensorboard.util.tensor_util import make_ndarray

    found: dict[str, Tracked] = {}
    root = run_dir(directory, label)
    for folder in sorted({path.parent for path in root.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(folder), size_guidance={"tensors": 0})  # 0: keep every point
        events.Reload()
        content = events.PluginTagToContent("hparams").get("_hparams_/session_start_info", b"")
        session = HParamsPluginData.FromString(content).session_start_info
        params = {key: value.string_value for key, value in session.hparams.items()}
        name = params.get("case_id", str(folder.relative_to(root)))  # the folder, when the case id was made path-safe
        metrics: dict[str, float] = {}
        curves: dict[str, list[tuple[int, float]]] = {}
        for tag in events.Tags()["tensors"]:
            points = [(int(event.step), float(make_ndarray(event.tensor_proto).item())) for event in events.Tensors(tag)]
            if tag.startswith(_METRIC_PREFIX):
                metrics[tag.removeprefix(_METRIC_PREFIX)] = points[-1][1]
            else:
                curves[tag] = sorted(points)
        found[name] = Tracked(name, params, metrics, curves)
    return found
