"""A pytest plugin (``-p gpu_proof_steps.worker_probe``) that says where each process ran its cases.

At the end of a session every process (the serial one, each xdist worker) writes
``$GPU_PROOF_PROBE_DIR/<worker>.json``: its pid, xdist worker id, the CUDA device torch had
current, the GPU's name, the peak memory it allocated there and its CPU thread count. It only
reads; it changes nothing the suite does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    folder = os.environ.get("GPU_PROOF_PROBE_DIR")
    if not folder:
        return
    import torch

    config = session.config
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None and getattr(config.option, "numprocesses", None):
        return  # the xdist controller: it ran no case
    facts: dict[str, Any] = {
        "worker": workerinput["workerid"] if workerinput is not None else "serial", "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(), "cuda_initialized": torch.cuda.is_initialized(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        index = torch.cuda.current_device()
        facts.update(cuda_device=index, gpu=torch.cuda.get_device_name(index), device_count=torch.cuda.device_count(),
                     max_memory_allocated=int(torch.cuda.max_memory_allocated(index)))
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{facts['worker']}.json").write_text(json.dumps(facts, indent=1), encoding="utf-8")
