"""Command line: ``python -m harness compare BASELINE [CURRENT]`` and ``python -m harness report RUN... --out DIR``.

Exit codes: 0 nothing regressed (or report written), 1 regressions found, 2 usage error (bad
arguments, unreadable runs, bad tolerance spec: one ``error: ...`` line on stderr) or runs that
are not comparable (other hardware, or cases whose settings differ, unless ``--force``).
``python -m harness merge RUN... (--save NAME | --json FILE)`` joins the runs of ``pytest --shard
K/N`` sessions into one run (:mod:`harness.results.merge`), refusing shards of different machines,
commits, selections or splits with exit 2 before writing anything. ``merge --save`` is the only
command that writes into the storage directory: a new numbered file, never over an old one.
``python -m harness launch --executor local|slurm --shards N [...] -- PYTEST_ARGS`` runs those
shard sessions through submitit (:mod:`harness.cli.launch`) and merges them the same way; its
``--save`` writes the merged run only, after every shard has finished (a failed shard: exit 2,
named with its logs and the ``--rerun K`` command, nothing merged or saved).

The verbs live in :mod:`harness.cli`, one module each; this is only the entry point (:func:`harness.cli.main.main`).
"""

from __future__ import annotations

import sys

from harness.cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
