"""The pytest plugin: options, markers, the matrix, the results channel, saving, gating.

Wiring only; the work lives in the rest of :mod:`harness`. This module holds the hooks;
:mod:`harness.plugin.session` the session's state (results, shard, baseline, the end of the run),
:mod:`harness.plugin.saving` how pytest-benchmark's options are read. Every case reports its record
through ``item.user_properties`` (which xdist carries from workers to the controller), so one
path collects results serially and in parallel, and one writer (:mod:`harness.results.storage`)
saves them. pytest-benchmark is used through its public surface: its options
(``--benchmark-save``, ``--benchmark-autosave``, ``--benchmark-json``, ``--benchmark-storage``)
are read from pytest's option namespace and honoured here, because pytest-benchmark saves nothing
under xdist; its timing options that the cases replace are refused with the option to use; the
run's JSON is shaped through its hooks (machine and commit info).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from harness.cli.common import argtype
from harness.config.options import OPTIONS
from harness.errors import SettingError
from harness.matrix.cases import MARKERS
from harness.plugin.saving import refuse_replaced_options, take_over_saving
from harness.plugin.session import CASE_FIXTURES, CASE_KEY, RESULT_KEY, BenchSession
from harness.results.records import CaseResult
from harness.runtime.distributed import check_session, current_world, init_distributed, shutdown_distributed
from harness.settings import Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backbone-bench", "backbone-bench (each option can be pinned in pytest.ini under its ini key)")
    for option in OPTIONS:
        if option.flag:
            group.addoption(f"--{option.name}", dest=f"bb_{option.field}", action="store_const", const=True, default=None, help=option.help_text())
        else:
            group.addoption(f"--{option.name}", dest=f"bb_{option.field}", metavar=option.metavar, type=argtype(option.parse), default=None, help=option.help_text())
        parser.addini(option.ini, help=option.help, default="")


def bench_session(config: pytest.Config) -> BenchSession:
    """The session state of the plugin."""
    return config.stash[_KEY]


_KEY = pytest.StashKey[BenchSession]()
_PROFILE_KEY = pytest.StashKey[Any]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: pytest-benchmark builds its session in a trylast pytest_configure, after this
    # one has taken the saving options over.
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    from harness.config.options import settings_from
    from harness.config.preflight import check_available

    try:
        refuse_replaced_options(config)
        settings = settings_from(lambda field: config.getoption(f"bb_{field}"), lambda key: str(config.getini(key)))
        check_available(settings)  # a device, dataset or weights named explicitly that this machine lacks
        save_name, json_path = take_over_saving(config)
        # torchrun: refuse -n and global batches the ranks cannot split, before any rank waits on the others.
        check_session(current_world(), settings, xdist=bool(getattr(config.option, "numprocesses", None)) or hasattr(config, "workerinput"))
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    bench = BenchSession(config, settings, save_name, json_path)
    bench.check_destinations(cases=1)  # writable at all; collection_finish checks the room for the selection
    config.stash[_KEY] = bench
    config.pluginmanager.register(bench, "backbone-bench-session")
    init_distributed(settings.devices, share_cores=settings.edge_profile is None)  # torchrun: join the ranks' process group
    _apply_runtime_settings(config, settings)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: before -m deselects anything, so a misspelt marker is named instead of selecting nothing.
    expression = str(config.getoption("markexpr", "") or "")
    if expression:
        from harness.matrix.cases import unknown_markers_message

        registered = [line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")]
        message = unknown_markers_message(expression, registered)
        if message:
            raise pytest.UsageError(message)


def _apply_runtime_settings(config: pytest.Config, settings: Settings) -> None:
    import torch

    if settings.edge_profile is not None:
        from harness.edge.profiles import apply

        # Threads, CPU affinity and the CUDA memory fraction hold for the whole session.
        cuda = next((d for d in settings.devices if d.startswith("cuda")), None)
        applied = apply(settings.edge_profile, cuda)
        applied.__enter__()
        config.stash[_PROFILE_KEY] = applied
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and workers > 1 and settings.edge_profile is None:
        # Share the cores between workers: N workers each running torch's default (all cores)
        # oversubscribe the CPU, and OpenMP threads then spin waiting for each other.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    if worker.startswith("gw") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        # One GPU per xdist worker: gw0 → cuda:0, gw1 → cuda:1, … wrapping around.
        torch.cuda.set_device(int(worker[2:]) % torch.cuda.device_count())


def pytest_unconfigure(config: pytest.Config) -> None:
    applied = config.stash.get(_PROFILE_KEY, None)
    if applied is not None:
        applied.__exit__(None, None, None)
    shutdown_distributed()  # torchrun: leave the process group


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from harness.kinds import build

    for argname, kind in CASE_FIXTURES.items():
        if argname not in metafunc.fixturenames:
            continue
        params = []
        for case in build(kind, bench_session(metafunc.config).settings):
            marks = [getattr(pytest.mark, name) for name in case.spec.markers()]
            if case.skip:
                marks.append(pytest.mark.skip(reason=case.skip))
            params.append(pytest.param(case.spec, id=case.spec.id, marks=marks))
        metafunc.parametrize(argname, params)


def report_case(node: pytest.Item, name: str, param: str, base: dict[str, Any]) -> None:
    """Announce a case, so that a crash in it is still recorded as a failed case."""
    node.user_properties.append((CASE_KEY, (name, param, base)))


def report_result(node: pytest.Item, result: CaseResult) -> None:
    """Send a case's result to the collector (this process, or the xdist controller)."""
    node.user_properties.append((RESULT_KEY, result.to_wire()))
