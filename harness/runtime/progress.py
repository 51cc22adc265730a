"""Progress and an ETA for long work: training steps, feature extraction, shard launches.

The work reports through :func:`task` (``with task("features train", total=n, unit="batch") as
advance: … advance(1)``) and never decides where, or whether, it is shown: the session does, by
installing a :class:`Terminal` with :func:`show` (the pytest plugin's fixtures, the ``launch``
verb). Without one, :func:`task` is silent, so a notebook, a test or a CI log sees nothing.

Bars are tqdm's (its rate and remaining time are the ETA). A :class:`Terminal` is only made
:func:`wanted` on an interactive terminal: never with ``-q``, never when ``CI`` is set (every CI
service sets it; a log file would fill with carriage-return redraws), never on a pipe.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TextIO

from tqdm import tqdm

Advance = Callable[[int], None]


def wanted(stream: TextIO, *, quiet: bool = False) -> bool:
    """Whether bars belong on ``stream``: an interactive terminal, not ``-q``, not CI."""
    return not quiet and not os.environ.get("CI") and stream.isatty()


class Terminal:
    """Bars drawn on ``stream`` (through ``guard``, a context that lets the writes through: pytest's
    output capture, for one), with ``prefix`` before each description (a case's id), redrawn at
    most every ``interval_s`` seconds; a finished bar is cleared (the record holds the figures)."""

    def __init__(self, stream: TextIO, *, prefix: str = "", guard: Callable[[], AbstractContextManager[None]] | None = None,
                 interval_s: float = 0.5) -> None:
        self.stream, self.prefix, self.guard, self.interval_s = stream, prefix, guard, interval_s

    @contextmanager
    def _through(self) -> Iterator[None]:
        if self.guard is None:
            yield
        else:
            with self.guard():
                yield

    @contextmanager
    def bar(self, what: str, total: int, unit: str) -> Iterator[Advance]:
        with self._through():
            bar = tqdm(total=total, desc=f"{self.prefix}{what}", unit=unit, file=self.stream, leave=False, dynamic_ncols=True,
                       mininterval=self.interval_s, miniters=1)

        def advance(n: int) -> None:
            with self._through():
                bar.update(n)

        try:
            yield advance
        finally:
            with self._through():
                bar.close()


_current: list[Terminal] = []


@contextmanager
def show(terminal: Terminal | None) -> Iterator[None]:
    """Show the bars of the work done inside the block on ``terminal`` (``None``: nothing shown)."""
    if terminal is None:
        yield
        return
    _current.append(terminal)
    try:
        yield
    finally:
        _current.remove(terminal)


@contextmanager
def task(what: str, total: int, unit: str) -> Iterator[Advance]:
    """A unit of long work of ``total`` ``unit``\\ s: call the yielded function with each part done."""
    if not _current or total <= 0:
        yield lambda n: None
        return
    with _current[-1].bar(what, total, unit) as advance:
        yield advance


def stderr_terminal(*, quiet: bool = False) -> Terminal | None:
    """Bars on this process's standard error when :func:`wanted` there (a command line's own)."""
    return Terminal(sys.stderr) if wanted(sys.stderr, quiet=quiet) else None
