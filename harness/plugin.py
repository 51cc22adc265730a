"""The pytest plugin: options, markers, the matrix, the results channel, saving, gating.

Wiring only; the work lives in the rest of :mod:`harness`. Every case reports its record
through ``item.user_properties`` (which xdist carries from workers to the controller), so one
path collects results serially and in parallel, and one writer (:mod:`harness.results.storage`)
saves them. pytest-benchmark is used through its public surface: its options
(``--benchmark-save``, ``--benchmark-autosave``, ``--benchmark-json``, ``--benchmark-storage``)
are read from pytest's option namespace and honoured here, because pytest-benchmark saves nothing
under xdist; its timing options that the cases replace are refused with the option to use; the
run's JSON is shaped through its hooks (machine and commit info).
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.cli.common import argtype
from harness.config.options import OPTIONS
from harness.config.parsers import run_name
from harness.errors import SettingError
from harness.matrix.cases import MARKERS, CaseSpec
from harness.results.records import CaseResult
from harness.runtime.distributed import check_session, current_world, init_distributed, shutdown_distributed
from harness.settings import Settings

RESULT_KEY = "backbone_bench"
CASE_KEY = "backbone_bench_case"
SHARD_KEY = "backbone_bench_shard"
CASE_FIXTURES = {"inference_case": "inference", "train_case": "train", "plan_case": "plan"}
# A session whose every selected benchmark case skipped measured nothing: it exits with pytest's
# "no tests ran" status, so CI is not green on nothing, and its last line says so.
ALL_SKIPPED = pytest.ExitCode.NO_TESTS_COLLECTED
ALL_SKIPPED_STAT = "run measured nothing: every benchmark case skipped"
# pytest-benchmark's timing options: the cases time with their own protocol (warm-up of 3 calls
# and 0.1 s, then at least 20 rounds filling --bench-time), so these would be silently ignored.
REPLACED_OPTIONS = {
    "--benchmark-max-time": "--bench-time SECONDS (ini key bench_time)",
    "--benchmark-min-rounds": "--bench-time SECONDS: a latency case times at least 20 rounds and fills that time",
    "--benchmark-min-time": "--bench-time SECONDS",
    "--benchmark-calibration-precision": "nothing: a round is one call, no calibration is needed",
    "--benchmark-warmup": "nothing: every case warms up until 3 calls and 0.1 s have passed",
    "--benchmark-warmup-iterations": "nothing: every case warms up until 3 calls and 0.1 s have passed",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backbone-bench", "backbone-bench (each option can be pinned in pytest.ini under its ini key)")
    for option in OPTIONS:
        if option.flag:
            group.addoption(f"--{option.name}", dest=f"bb_{option.field}", action="store_const", const=True, default=None, help=option.help_text())
        else:
            group.addoption(f"--{option.name}", dest=f"bb_{option.field}", metavar=option.metavar, type=argtype(option.parse), default=None, help=option.help_text())
        parser.addini(option.ini, help=option.help, default="")


class BenchSession:
    """The plugin's state for one pytest session, registered as a plugin for its hooks."""

    def __init__(self, config: pytest.Config, settings: Settings, save_name: str | None, json_path: Path | None) -> None:
        self.config = config
        self.settings = settings
        self.save_name = save_name
        self.json_path = json_path
        self.results: dict[str, CaseResult] = {}
        # An xdist worker, or a torchrun rank > 0: rank 0 alone records, saves, gates and prints.
        self.is_worker = hasattr(config, "workerinput") or not current_world().is_main
        self.saved_path: Path | None = None
        self.baseline: Any = None
        self.gate_lines: list[str] = []
        self.save_lines: list[str] = []  # orphans recovered by the save, or where a refused run went
        self.durations: dict[str, float] = {}  # nodeid → seconds of setup + call + teardown
        self.shard_record: dict[str, Any] | None = None
        self.case_outcomes: dict[str, str] = {}  # nodeid → passed, failed or skipped, of benchmark cases only
        self.all_skipped = False
        storage = str(config.getoption("benchmark_storage", "baselines")).removeprefix("file://")
        path = Path(storage)
        self.storage = path if path.is_absolute() else config.rootpath / path

    # -- before any case runs ------------------------------------------------------------------
    def load_baseline(self, devices: Iterable[str]) -> None:
        """Resolve ``--gate`` among the stored runs of the machine the selected cases will run on."""
        devices = sorted(set(devices))
        if not self.settings.gate or self.is_worker or self.baseline is not None or not devices:
            return  # no case will run: nothing to gate
        from harness.results.gate import load_baseline
        from harness.runtime.machine import machine_facts

        key = str(machine_facts(devices, self.settings.edge_profile)["baseline_key"])
        try:
            self.baseline = load_baseline(self.settings.gate, self.storage, key)
        except ValueError as exc:
            raise pytest.UsageError(f"--gate: {exc}") from None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        # trylast: after -k/-m deselected theirs, so a shard is a part of what remains.
        if self.settings.shard is None:
            return
        try:
            keep, self.shard_record = _shard_items(items, self.settings, self.storage)
        except SettingError as exc:
            raise pytest.UsageError(str(exc)) from None
        kept = set(map(id, keep))
        deselected = [item for item in items if id(item) not in kept]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = keep
        if hasattr(config, "workeroutput"):  # xdist carries the shard to the controller, which records it
            config.workeroutput[SHARD_KEY] = self.shard_record

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        record = getattr(node, "workeroutput", {}).get(SHARD_KEY)
        if record is not None:
            self.shard_record = record

    def check_destinations(self, cases: int) -> None:
        """Refuse a ``--benchmark-save`` storage or ``--benchmark-json`` folder that cannot take a run of
        ``cases`` cases (read-only, full) before any case runs, rather than lose the run after them."""
        from harness.results.space import check_destination
        from harness.results.storage import StorageError

        try:
            if self.save_name and not self.is_worker:
                check_destination(self.storage, "--benchmark-storage", cases)
            if self.json_path is not None and not self.is_worker:
                check_destination(self.json_path.absolute().parent, "--benchmark-json's folder", cases)
        except StorageError as exc:
            raise pytest.UsageError(str(exc)) from None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.check_destinations(sum(1 for item in session.items if _spec(item) is not None))
        self.load_baseline(_devices(session.items))

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Under xdist the controller collects nothing itself; the workers' ids name the cases.
        # Every worker reports; the matrix is rebuilt only while a --gate baseline is still unresolved.
        if not self.settings.gate or self.baseline is not None:
            return
        cases = {case.spec.id: case for case in _all_cases(self.settings)}
        self.load_baseline(case.spec.device for nodeid in ids if (case := cases.get(_param(nodeid))) is not None and not case.skip)

    # -- while cases run -----------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
        if any(kind in report.keywords for kind in CASE_FIXTURES.values()):  # a benchmark case (its kind marker)
            if report.skipped or report.when == "call" or report.failed:
                self.case_outcomes.setdefault(report.nodeid, report.outcome)
        if not (report.when == "call" or (report.when == "setup" and report.failed)):
            return
        properties: dict[str, Any] = dict(report.user_properties)
        if RESULT_KEY in properties:
            self.results[report.nodeid] = CaseResult.from_wire(properties[RESULT_KEY])
        elif report.failed and CASE_KEY in properties:
            # A case that crashed with an unexpected error (a bug; pytest shows its traceback):
            # still recorded, as failed, so the run says so.
            name, param, base = properties[CASE_KEY]
            crash = getattr(report.longrepr, "reprcrash", None)
            error = str(getattr(crash, "message", "") or report.longreprtext.strip() or "failed").splitlines()[0]
            self.results[report.nodeid] = CaseResult(name, report.nodeid, param, {**base, "status": "failed", "error": error})

    # -- after the last case -------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # A shard's part may be all skips while the whole measured something: launch and merge judge
        # the whole, and a shard exiting 5 would read to launch as a failed shard.
        if not self.is_worker and self.settings.shard is None and session.exitstatus == pytest.ExitCode.OK and self.case_outcomes \
                and all(outcome == "skipped" for outcome in self.case_outcomes.values()):
            self.all_skipped = True
            session.exitstatus = ALL_SKIPPED
        # A shard writes its run even when all its cases skipped: the merge needs every part.
        if self.is_worker or not ((self.results or self.shard_record is not None) and (self.save_name or self.json_path or self.baseline is not None)):
            return
        from harness.results.records import build_run

        results = [replace(r, record={**r.record, "duration_s": round(self.durations.get(r.fullname, 0.0), 3)}) for r in self.results.values()]
        run = build_run(results, machine_info=self.machine_info(), commit_info=self.commit_info(),
                        options={"bench_time_s": self.settings.bench_time_s}, shard=self.shard_record)
        if self._write(run) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # the run is not where it was asked to go
        if self.baseline is not None:
            from harness.results.gate import gate_run

            self.gate_lines, code = gate_run(self.baseline, run, self.settings, storage=self.storage)
            if code:
                session.exitstatus = code

    def _write(self, run: dict[str, Any]) -> bool:
        """Save and write ``run`` as asked; True when a destination refused it (it is then in a
        fallback file, named with the command that moves it, in :attr:`save_lines`)."""
        from harness.files import write_atomic
        from harness.results.storage import SaveFailed, StorageError, dumps, reason_of, save_failure_lines, save_run, write_fallback

        key = str(run["machine_info"]["baseline_key"])
        failed = False
        try:
            if self.save_name:
                try:
                    self.saved_path = save_run(self.storage, key, self.save_name, run, on_recover=lambda line: self.save_lines.append(f"backbone-bench: {line}"))
                except SaveFailed as exc:
                    self.save_lines += save_failure_lines(exc)
                    failed = True
            if self.json_path is not None:
                text, path = dumps(run), self.json_path
                try:
                    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
                except OSError as exc:
                    self.json_path, failed = None, True
                    move = write_fallback(text, key, path.stem, str(path), reason_of(exc), lambda f: shlex.join(["mv", str(f), str(path)]))
                    self.save_lines += save_failure_lines(move)
        except StorageError as exc:  # not even a fallback could take it
            self.save_lines.append(f"backbone-bench: {exc}")
            failed = True
        return failed

    def machine_info(self) -> dict[str, Any]:
        """pytest-benchmark's machine info, updated through its public hook (our facts included)."""
        info: dict[str, Any] = self.config.hook.pytest_benchmark_generate_machine_info(config=self.config)
        self.config.hook.pytest_benchmark_update_machine_info(config=self.config, machine_info=info)
        return info

    def commit_info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.config.hook.pytest_benchmark_generate_commit_info(config=self.config)
        self.config.hook.pytest_benchmark_update_commit_info(config=self.config, commit_info=info)
        return info

    def pytest_benchmark_update_machine_info(self, config: pytest.Config, machine_info: dict[str, Any]) -> None:
        from harness.runtime.machine import machine_facts

        # The baseline key names the hardware the cases actually ran on (a CPU-only selection on
        # a GPU machine is a CPU run), not every device the matrix could have used.
        ran_on = sorted({str(r.record["device"]) for r in self.results.values() if r.record.get("device")})
        if self.shard_record is not None:
            # A shard names the machine of the whole selection, so that a shard that drew only
            # CPU cases of a CPU+CUDA study merges with the others.
            ran_on = list(self.shard_record["devices"]) or ran_on
        machine_info.update(machine_facts(ran_on or self.settings.devices, self.settings.edge_profile))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        if self.shard_record is not None:
            r = self.shard_record
            terminalreporter.write_line(
                f"backbone-bench: shard {r['index']}/{r['count']}: {r['cases']} case(s) of the selection, expected {r['expected_s']:.0f} s "
                f"({r['costs_from_stored_runs']} costed from stored runs); merge the shards' runs with python -m harness merge")
        for line in self.save_lines:
            terminalreporter.write_line(line)
        if self.saved_path is not None:
            terminalreporter.write_line(f"backbone-bench: saved {len(self.results)} case(s) to {self.saved_path}")
        if self.json_path is not None and self.results:
            terminalreporter.write_line(f"backbone-bench: wrote {len(self.results)} case(s) to {self.json_path}")
        for line in self.gate_lines:
            terminalreporter.write_line(line)
        if self.all_skipped:
            count = len(self.case_outcomes)
            terminalreporter.write_line(
                f"backbone-bench: all {count} selected benchmark case(s) skipped, nothing was measured (exit {int(ALL_SKIPPED)}); "
                "-rs shows each reason")
            # An entry of its own in pytest's last line ("1 skipped, 1 run measured nothing: ...").
            # (other plugins read each stats entry's attributes: a plain object, not a string).
            terminalreporter.stats.setdefault(ALL_SKIPPED_STAT, []).append(SimpleNamespace(reason=ALL_SKIPPED_STAT))


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
        _refuse_replaced_options(config)
        settings = settings_from(lambda field: config.getoption(f"bb_{field}"), lambda key: str(config.getini(key)))
        check_available(settings)  # a device, dataset or weights named explicitly that this machine lacks
        save_name, json_path = _take_over_saving(config)
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


def _given_options(config: pytest.Config) -> list[str]:
    """Every option token the user gave: command line, PYTEST_ADDOPTS and the ini's addopts.

    pytest parses long options without abbreviations, so an option appears spelled in full.
    """
    tokens = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    tokens += [str(t) for t in config.getini("addopts")]
    return [str(t).split("=", 1)[0] for t in tokens if str(t).startswith("--")]


def _refuse_replaced_options(config: pytest.Config) -> None:
    for option in _given_options(config):
        if option in REPLACED_OPTIONS:
            raise SettingError(f"{option} is pytest-benchmark's timing control, which backbone-bench's cases replace; use {REPLACED_OPTIONS[option]}")


def _take_over_saving(config: pytest.Config) -> tuple[str | None, Path | None]:
    """Read ``--benchmark-save/-autosave/-json`` and switch pytest-benchmark's own saving off.

    pytest-benchmark saves nothing under xdist and writes non-atomically; this plugin's writer
    saves the same contract serially and in parallel. ``--benchmark-json`` is an open file before
    pytest-benchmark 5.3 and a path from 5.3 on: either way it names the file to write.
    """
    option = config.option
    save = getattr(option, "benchmark_save", None)
    if not save and getattr(option, "benchmark_autosave", False):
        save = _autosave_name(config)
    if save:
        save = run_name(save)
    raw_json = getattr(option, "benchmark_json", None)
    json_path: Path | None = None
    if isinstance(raw_json, (str, os.PathLike)):  # pytest-benchmark >= 5.3: the path itself
        json_path = Path(raw_json)
    elif raw_json is not None:  # before 5.3: a file opened for writing; its .name is the path as given
        json_path = Path(raw_json.name)
        raw_json.close()
    for name, off in (("benchmark_save", None), ("benchmark_autosave", False), ("benchmark_json", None)):
        if hasattr(option, name):
            setattr(option, name, off)
    if hasattr(config, "workerinput") or not current_world().is_main:
        return None, None  # the xdist controller, or torchrun's rank 0, saves
    return save, json_path


def _autosave_name(config: pytest.Config) -> str:
    """``<commit>_<UTC time>[_uncommitted-changes]``, like pytest-benchmark's autosave, from its public hook."""
    info = config.hook.pytest_benchmark_generate_commit_info(config=config) or {}
    parts = [str(info.get("id") or "unversioned")[:12], dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d_%H%M%S")]
    if info.get("dirty"):
        parts.append("uncommitted-changes")
    return "_".join(parts)


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


def _all_cases(settings: Settings) -> list[Any]:
    from harness.matrix.expand import build

    return [case for kind in CASE_FIXTURES.values() for case in build(kind, settings)]


def _shard_items(items: list[pytest.Item], settings: Settings, storage: Path) -> tuple[list[pytest.Item], dict[str, Any]]:
    """The items of ``settings.shard`` among ``items`` and the record of the split (harness/scale/shards.py)."""
    from harness.contract import settings_digest
    from harness.kinds import case_settings
    from harness.scale.shards import CaseFacts, CostModel, case_facts, plan

    shard = settings.shard
    if not items:
        raise SettingError(f"--shard {shard}: the selection is empty, nothing to split; check -k/-m and the paths (the cases live in benchmarks/)")
    if len(items) < shard.count:
        raise SettingError(f"--shard {shard}: the selection has {len(items)} test(s), fewer than {shard.count} shards; use at most {max(1, len(items))} shards")
    selected: list[tuple[str, str, CaseFacts | None]] = []
    for item in items:
        spec = _spec(item)
        if spec is None:
            selected.append((item.nodeid, "", None))
            continue
        digested = case_settings(spec, settings)
        selected.append((spec.case_id, settings_digest(digested), case_facts(spec, settings, digested)))
    split = plan(selected, shard.count, CostModel.from_storage(storage))
    mine = set(split.keys_of(shard.index))
    # Collection order within the shard, as in a serial run.
    return [item for item, (key, _, _) in zip(items, selected, strict=True) if key in mine], {**split.record(shard), "devices": sorted(set(_devices(items)))}


def _spec(item: pytest.Item) -> CaseSpec | None:
    callspec = getattr(item, "callspec", None)
    return next((v for v in (callspec.params.values() if callspec else ()) if isinstance(v, CaseSpec)), None)


def _param(nodeid: str) -> str:
    return nodeid.rsplit("[", 1)[1].rstrip("]") if nodeid.endswith("]") else ""


def _devices(items: Iterable[pytest.Item]) -> list[str]:
    """The devices of the selected cases (after -k/-m) that will run (not skipped up front)."""
    devices = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if item.get_closest_marker("skip") is not None:
            continue
        for value in (callspec.params.values() if callspec else ()):
            if isinstance(value, CaseSpec):
                devices.append(value.device)
    return devices


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from harness.matrix.expand import build

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
