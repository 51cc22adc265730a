"""The pytest plugin: options, ini keys, markers, the matrix, the results channel, saving, gating.

Wiring only; the work lives in the rest of :mod:`harness`. Every case reports its record
through ``item.user_properties`` (which xdist carries from workers to the controller), so one
path collects results serially and in parallel, and one writer (:mod:`harness.results.storage`) saves
them: this plugin takes ``--benchmark-save``/``--benchmark-autosave``/``--benchmark-json``
over from pytest-benchmark, whose own saving is disabled under xdist.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.config.options import OPTIONS
from harness.results.records import CaseResult
from harness.config.settings import SettingError, Settings

RESULT_KEY = "backbone_bench"
CASE_KEY = "backbone_bench_case"
MARKERS = {
    "inference": "inference latency/throughput/params/GMACs/memory cases",
    "train": "small-data training cases",
    "cnn": "convolutional backbones",
    "transformer": "vision transformers",
    "hybrid": "hybrid conv/attention and MetaFormer backbones",
    "edge": "edge-tagged backbones",
    "gpu": "cases that run on an accelerator (cuda, mps)",
    "jetson": "edge backbones at batch 1: the cases meant to run on a Jetson board",
    "smoke": "the small fast offline subset (CPU, 32 px, batch 1, fp32; digits for training)",
    "plan": "batch-size planning under a memory budget",
    "slow": "large inputs, full datasets, batch-size searches",
}
CASE_FIXTURES = {"inference_case": "inference", "train_case": "train", "plan_case": "plan"}


def _argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backbone-bench", "backbone-bench matrix (each option can be pinned in pytest.ini)")
    for option in OPTIONS:
        help_text = f"{option.help} (default: {option.default or 'unset'}; ini key: {option.ini})"
        if option.flag:
            group.addoption(f"--{option.name}", dest=f"bb_{option.field}", action="store_const", const=True, default=None, help=help_text)
        else:
            group.addoption(f"--{option.name}", dest=f"bb_{option.field}", metavar=option.metavar, type=_argtype(option.parse), default=None, help=help_text)
        parser.addini(option.ini, help=option.help, default="")
    group.addoption("--gate", dest="bb_gate", metavar="BASELINE", default=None, help="after the run, gate it against BASELINE (a run id in the storage or a file); regressions fail the session")
    group.addoption("--fail-on", dest="bb_fail_on", metavar="SPEC", default=None, help="gate tolerances, e.g. latency_p50_ms:10%%,top1:-1pp,peak_mem_bytes:5%%,gmacs:0 (default: the built-in tolerances; ini key: fail_on)")
    group.addoption("--fail-on-missing", dest="bb_fail_on_missing", action="store_true", default=False, help="with --gate: cases missing from this run fail the gate")
    group.addoption("--gate-force", dest="bb_gate_force", action="store_true", default=False, help="with --gate: gate even when the baseline was run on a different device")
    parser.addini("fail_on", help="gate tolerances (see --fail-on)", default="")


class BenchSession:
    """The plugin's state for one pytest session, registered as a plugin for its hooks."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.results: dict[str, CaseResult] = {}
        self.is_worker = hasattr(config, "workerinput")
        self.save_name: str | None = None
        self.json_file: Any = None
        self.saved_path: Path | None = None
        self.baseline: Any = None
        self.gate_lines: list[str] = []
        storage = str(config.getoption("benchmark_storage", "baselines")).removeprefix("file://")
        path = Path(storage)
        self.storage = path if path.is_absolute() else config.rootpath / path
        self._facts: dict[str, Any] | None = None

    def machine_facts(self) -> dict[str, Any]:
        if self._facts is None:
            from harness.machine import machine_facts

            self._facts = machine_facts(self.settings.devices, self.settings.edge_profile)
        return self._facts

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker or not (report.when == "call" or (report.when == "setup" and report.failed)):
            return
        properties: dict[str, Any] = dict(report.user_properties)
        if RESULT_KEY in properties:
            self.results[report.nodeid] = CaseResult.from_wire(properties[RESULT_KEY])
        elif report.failed and CASE_KEY in properties:
            # A case that crashed without reporting: still recorded, as failed, with the error.
            name, param, identity = properties[CASE_KEY]
            crash = getattr(report.longrepr, "reprcrash", None)
            error = str(getattr(crash, "message", "") or report.longreprtext.strip() or "failed").splitlines()[0]
            self.results[report.nodeid] = CaseResult(name, report.nodeid, param, {**identity, "status": "failed", "error": error})

    def pytest_benchmark_update_machine_info(self, config: pytest.Config, machine_info: dict[str, Any]) -> None:
        machine_info.update(self.machine_facts())

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker or not (self.results or self.json_file is not None):
            return
        from harness.results.records import build_run
        from harness.results.storage import dumps, save_run

        config = session.config
        from harness.machine import machine_facts

        # The baseline key names the hardware the cases actually ran on (a CPU-only selection on
        # a GPU machine is a CPU run), not every device the matrix could have used.
        ran_on = sorted({str(r.record.get("device")) for r in self.results.values() if r.record.get("device")})
        self._facts = machine_facts(ran_on or self.settings.devices, self.settings.edge_profile)
        machine_info: dict[str, Any] = config.hook.pytest_benchmark_generate_machine_info(config=config)
        config.hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
        run = build_run(
            self.results.values(),
            machine_info=machine_info,
            commit_info=config.hook.pytest_benchmark_generate_commit_info(config=config),
            options={"timer": "perf_counter", "min_rounds": 20, "bench_time_s": self.settings.bench_time_s},
        )
        if self.save_name:
            self.saved_path = save_run(self.storage, self.machine_facts()["baseline_key"], self.save_name, run)
        if self.json_file is not None:
            with self.json_file as fh:
                fh.write(dumps(run).encode())
        if self.baseline is not None:
            from harness.results.gate import gate_run

            self.gate_lines, failed = gate_run(self.baseline, run, config.getoption("bb_fail_on") or config.getini("fail_on") or None,
                                               fail_on_missing=config.getoption("bb_fail_on_missing"), force=config.getoption("bb_gate_force"),
                                               storage=self.storage)
            if failed:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        if self.saved_path is not None:
            terminalreporter.write_line(f"backbone-bench: saved {len(self.results)} case(s) to {self.saved_path}")
        for line in self.gate_lines:
            terminalreporter.write_line(line)


def bench_session(config: pytest.Config) -> BenchSession:
    """The session state of the plugin."""
    return config.stash[_KEY]


_KEY = pytest.StashKey[BenchSession]()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    from harness.config.options import settings_from

    try:
        settings = settings_from(lambda field: config.getoption(f"bb_{field}"), lambda key: str(config.getini(key)))
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    bench = BenchSession(config, settings)
    config.stash[_KEY] = bench
    config.pluginmanager.register(bench, "backbone-bench-session")
    _apply_runtime_settings(config, settings)

    pb = getattr(config, "_benchmarksession", None)
    if pb is not None and not bench.is_worker:
        # One writer for serial and xdist runs alike: take saving over from pytest-benchmark.
        bench.save_name = pb.save or (pb.autosave and _autosave_name(config))
        bench.json_file = pb.json
        pb.save = pb.autosave = pb.json = None
    if config.getoption("bb_gate") and not bench.is_worker:
        from harness.results.gate import load_baseline

        try:
            bench.baseline = load_baseline(config.getoption("bb_gate"), bench.storage, bench.machine_facts()["baseline_key"])
        except ValueError as exc:
            raise pytest.UsageError(f"--gate: {exc}") from None


def _autosave_name(config: pytest.Config) -> str:
    from pytest_benchmark.utils import get_tag

    return str(get_tag(config.getoption("benchmark_project_name", None)))


def _apply_runtime_settings(config: pytest.Config, settings: Settings) -> None:
    import torch

    if settings.edge_profile is not None:
        from harness.edge.profiles import apply

        # Threads, CPU affinity and the CUDA memory fraction hold for the whole session.
        cuda = next((d for d in settings.devices if d.startswith("cuda")), None)
        applied = apply(settings.edge_profile, cuda)  # type: ignore[arg-type]
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


_PROFILE_KEY = pytest.StashKey[Any]()


def pytest_unconfigure(config: pytest.Config) -> None:
    applied = config.stash.get(_PROFILE_KEY, None)
    if applied is not None:
        applied.__exit__(None, None, None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from harness.matrix import inference_cases, plan_cases, train_cases

    builders = {"inference": inference_cases, "train": train_cases, "plan": plan_cases}

    for argname, kind in CASE_FIXTURES.items():
        if argname not in metafunc.fixturenames:
            continue
        settings = bench_session(metafunc.config).settings
        cases = builders[kind](settings)
        params = []
        for case in cases:
            marks = [getattr(pytest.mark, name) for name in case.spec.markers()]
            if case.skip:
                marks.append(pytest.mark.skip(reason=case.skip))
            params.append(pytest.param(case.spec, id=case.spec.id, marks=marks))
        metafunc.parametrize(argname, params)


def report_case(node: pytest.Item, name: str, param: str, identity: dict[str, Any]) -> None:
    """Announce a case, so that a crash in it is still recorded as a failed case."""
    node.user_properties.append((CASE_KEY, (name, param, identity)))


def report_result(node: pytest.Item, result: CaseResult) -> None:
    """Send a case's result to the collector (this process, or the xdist controller)."""
    node.user_properties.append((RESULT_KEY, result.to_wire()))


