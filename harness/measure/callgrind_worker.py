"""The process that counts instructions, run under valgrind's callgrind by :mod:`harness.measure.instructions`.

Started once per session with instrumentation off (``--instr-atstart=no``), so importing torch and timm
costs valgrind's translation only; it then turns instrumentation on for itself (``callgrind_control -i
on``) and answers requests, one JSON line each on standard input: ``{"model": PATH, "input": PATH,
"forwards": N}``. The model file is the case's own model, saved whole by the suite's process
(``torch.save``), so what is counted is exactly what was timed and loading it costs a copy, not an
initialisation. Each request: one forward uncounted (first-call paths: oneDNN primitive creation,
allocator growth), then ``N`` forwards collected, then a dump; the dump's ``summary`` is the answer,
written as ``{"part": K}`` (the dump file ``callgrind.out.<pid>.<K>``) on the descriptor it was given.

Instrumentation stays on from the first request to the end: switching it off and on again between
cases makes callgrind's later dumps carry counts of earlier ones (seen with valgrind 3.19).
Nothing here is imported by the suite's own process: it runs as ``python -m``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, TextIO


def count(request: dict[str, Any]) -> None:
    """Run the request's forwards with collection on around the counted ones, then dump."""
    import torch

    # Written by our own parent process, never a user's file. Mapped, not read: copying a large model's
    # weights (344 MB for vit_base) byte by byte under instrumentation costs seconds and counts nothing.
    model = torch.load(request["model"], weights_only=False, mmap=True)
    example = torch.load(request["input"])
    with torch.inference_mode():
        model(example)
        torch._C._valgrind_toggle()
        for _ in range(int(request["forwards"])):
            model(example)
        torch._C._valgrind_toggle_and_dump_stats()


def serve(requests: TextIO, answers: TextIO) -> None:
    """Answer every request line until standard input closes: ``{"part": K}`` or ``{"error": TEXT}``."""
    part = 0
    for line in requests:
        if not line.strip():
            continue
        try:
            count(json.loads(line))
            part += 1
            answer: dict[str, Any] = {"part": part}
        except Exception as exc:  # the parent fails the case with this text
            text = str(exc).strip().splitlines()
            answer = {"error": f"{type(exc).__name__}: {text[0] if text else ''}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main() -> None:
    answers = os.fdopen(int(sys.argv[1]), "w")  # a descriptor of its own: stdout stays free for libraries' prints
    import timm  # noqa: F401  what unpickling a timm model imports, paid before instrumentation
    import torch

    # One thread: with more, callgrind serialises the pool's threads and counts their spin-waits too,
    # which repeat from nothing. A forward's instructions are the same work whatever the thread count.
    torch.set_num_threads(1)
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    serve(sys.stdin, answers)
    answers.close()
    # No interpreter teardown: under instrumentation, unloading torch takes minutes of callgrind's time
    # and counts nothing anyone reads (every request's dump is written already).
    os._exit(0)


if __name__ == "__main__":
    main()
