"""Weights & Biases: one offline W&B run per case, ``<track-dir>/wandb/offline-run-*``.

``wandb.init(mode="offline")`` writes each run's records to its ``.wandb`` file and contacts no
server (``wandb sync`` uploads them later). The case id is the run's name, the session's label its
group; params are the run's config, metrics its summary, curve points its history at their epoch.
System metrics, console capture and machine facts are off: the run's JSON has those already.

Reading back: wandb 0.18+ moved its Python reader of ``.wandb`` files into its Go core, so
:func:`read` walks the file's framing itself (a LevelDB log: 32 KiB blocks of checksummed chunks
after a 7-byte ``:W&B`` header) and decodes every record with wandb's own protobuf,
``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.results.trackers import CURVE_PREFIX, Tracked, text

PROJECT = "backbone-bench"
_HEADER = b":W&B"
_HEADER_SIZE = 7  # ident (4 bytes), magic (2), version (1)
_BLOCK = 32 * 1024
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def log(cases: Sequence[Tracked], directory: Path, label: str) -> str:
    """One offline W&B run per case: config, history by epoch, summary; finished."""
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True, save_code=False)
    try:
        for case in cases:
            run = wandb.init(mode="offline", dir=str(directory), project=PROJECT, name=case.name, group=label,
                             config=dict(case.params), settings=settings, reinit="create_new")
            by_epoch: dict[int, dict[str, float]] = {}
            for key, points in case.curves.items():
                for epoch, value in points:
                    by_epoch.setdefault(epoch, {})[key] = value
            for epoch in sorted(by_epoch):
                run.log(by_epoch[epoch], step=epoch)
            run.summary.update(case.metrics)
            run.finish()
    finally:
        wandb.teardown()  # stop wandb's service process: the session ends without waiting on it
    return f"{directory / 'wandb'}/offline-run-* (wandb sync uploads them)"


def read(directory: Path, label: str) -> dict[str, Tracked]:
    """The cases of ``label`` read back from the ``.wandb`` files of ``directory/wandb``."""
    from wandb.proto import wandb_internal_pb2

    found: dict[str, Tracked] = {}
    for path in sorted((directory / "wandb").glob("offline-run-*/run-*.wandb")):
        name = group = ""
        params: dict[str, str] = {}
        summary: dict[str, float] = {}
        curves: dict[str, list[tuple[int, float]]] = {}
        for data in records(path):
            record = getattr(wandb_internal_pb2, "Record")()  # noqa: B009  (generated protobuf: its stub lacks the messages)
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name, group = record.run.display_name, record.run.run_group
                params = {item.key: text(json.loads(item.value_json)) for item in record.run.config.update if not item.key.startswith("_")}
            elif kind == "history":
                values = {_key(item): json.loads(item.value_json) for item in record.history.item}
                for key, value in values.items():
                    if key.startswith(CURVE_PREFIX):
                        curves.setdefault(key, []).append((int(values["_step"]), float(value)))
            elif kind == "summary":
                summary.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
        if group == label:
            metrics = {key: float(value) for key, value in summary.items() if key and not key.startswith(("_", CURVE_PREFIX))}
            found[name] = Tracked(name, params, metrics, curves)
    return found


def records(path: Path) -> Iterator[bytes]:
    """The records of a ``.wandb`` file, each checked against its chunks' CRC-32 checksums."""
    data = path.read_bytes()
    if data[:len(_HEADER)] != _HEADER:
        raise ValueError(f"{path}: not a W&B run file (no {_HEADER!r} header)")
    position, pending = _HEADER_SIZE, b""
    while position + _CHUNK_HEADER.size <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < _CHUNK_HEADER.size:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, position)
        if kind == 0:  # zero padding up to the block's end
            position += left
            continue
        chunk = data[position + _CHUNK_HEADER.size:position + _CHUNK_HEADER.size + length]
        if zlib.crc32(bytes([kind]) + chunk) != checksum:
            raise ValueError(f"{path}: corrupt chunk at byte {position}")
        position += _CHUNK_HEADER.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk


def _key(item: Any) -> str:
    return str(item.key) or "/".join(item.nested_key)
