"""The plugin's state for one pytest session: what the cases reported, the shard they are, the
baseline they are gated against, and the end of the run (:func:`harness.results.publish.publish_run`)."""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.contract import KIND_NAMES, KINDS
from harness.errors import SettingError
from harness.matrix.cases import CaseSpec
from harness.results.records import CaseResult
from harness.runtime.distributed import current_world
from harness.settings import Settings, Shard

RESULT_KEY = "backbone_bench"
CASE_KEY = "backbone_bench_case"
SHARD_KEY = "backbone_bench_shard"
# Each kind's case fixture is named after it: inference_case, train_case, plan_case (fixtures/<kind>.py).
CASE_FIXTURES = {f"{kind}_case": kind for kind in KIND_NAMES}
# A session whose every selected benchmark case skipped measured nothing: it exits with pytest's
# "no tests ran" status, so CI is not green on nothing, and its last line says so.
ALL_SKIPPED = pytest.ExitCode.NO_TESTS_COLLECTED
ALL_SKIPPED_STAT = "run measured nothing: every benchmark case skipped"


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
        self.gate_code = 0  # the gate's exit code (harness.results.gate): 0 passed, 1 regression, 2 not comparable
        self.save_lines: list[str] = []  # orphans recovered by the save, or where a refused run went
        self.track_lines: list[str] = []  # where --track logged the run, or why a tracker failed
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
            keep, self.shard_record = _shard_items(items, self.settings, self.settings.shard, self.storage)
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
        from harness.results.storage import StorageError, check_json_path, check_run_name

        try:
            if self.save_name and not self.is_worker:
                check_run_name(self.save_name, self.storage)
                check_destination(self.storage, "--benchmark-storage", cases)
            if self.json_path is not None and not self.is_worker:
                check_json_path(self.json_path)
                check_destination(self.json_path.absolute().parent, "--benchmark-json's folder", cases)
        except StorageError as exc:
            raise pytest.UsageError(str(exc)) from None

    def check_work_folders(self, specs: list[CaseSpec]) -> None:
        """Refuse a ``--checkpoint-dir`` or ``--feature-cache`` the selected train cases would write and cannot,
        before any case runs, rather than fail each case after its data is loaded."""
        from harness.contract import PROTOCOL_SPECS
        from harness.results.space import check_writable
        from harness.results.storage import StorageError

        rows = [PROTOCOL_SPECS[spec.protocol] for spec in specs if spec.kind == "train"]
        wanted = (("--checkpoint-dir", self.settings.checkpoint_dir, any(not row.features for row in rows)),  # networks checkpoint
                  ("--feature-cache", self.settings.feature_cache, any(row.features or row.recipe == "finetune" for row in rows)))
        try:
            for what, folder, needed in wanted:
                if needed and not self.is_worker:
                    check_writable(folder, what)
        except StorageError as exc:
            raise pytest.UsageError(str(exc)) from None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.check_destinations(sum(1 for item in session.items if _spec(item) is not None))
        self.check_work_folders([spec for item in session.items if (spec := _spec(item)) is not None and item.get_closest_marker("skip") is None])
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
        wanted = self.save_name or self.json_path or self.baseline is not None or self.settings.track
        if self.is_worker or not ((self.results or self.shard_record is not None) and wanted):
            return
        from harness.results.publish import UnwritableRun, keep_unwritable, publish_run
        from harness.results.records import build_run

        results = [replace(r, record={**r.record, "duration_s": round(self.durations.get(r.fullname, 0.0), 3)}) for r in self.results.values()]
        run = build_run(results, machine_info=self.machine_info(), commit_info=self.commit_info(),
                        options={"bench_time_s": self.settings.bench_time_s}, shard=self.shard_record)
        try:
            published = publish_run(run, storage=self.storage, save=self.save_name, json_path=self.json_path,
                                    baseline=self.baseline, gate=self.settings)
        except UnwritableRun as exc:  # a case recorded NaN or Infinity: no reader would take the run, no gate judges it
            kept = keep_unwritable(run, self.save_name or "run")
            self.save_lines = [f"backbone-bench: the run was not saved: {exc}",
                               f"backbone-bench: it was kept for inspection in {kept}" if kept else "backbone-bench: no fallback folder took it either"]
            self.json_path = None
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
        self.saved_path, self.json_path = published.saved, published.written
        self.save_lines, self.gate_lines, self.gate_code = published.lines, published.gate_lines, published.code
        if published.refused and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # the run is not where it was asked to go
        if published.code:
            session.exitstatus = published.code
        if self.settings.track and self.results:
            from harness.results.trackers import track_run

            # After the save: a tracker that fails loses nothing, the run is on disk.
            self.track_lines, tracked = track_run(run, self.settings.track, self.settings.track_dir)
            if not tracked and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

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
        from harness.runtime.host import host_fingerprint

        # The host class's evidence (harness.results.hosts): calibrated once per process, after the
        # cases ran (on the controller under xdist, when the workers are done: nothing competes).
        machine_info["host"] = host_fingerprint()

    @pytest.hookimpl(wrapper=True)
    def pytest_benchmark_group_stats(self, config: pytest.Config, benchmarks: Any, group_by: str) -> Generator[None, Any, Any]:
        """pytest-benchmark's table shows the kinds timed over many rounds only (latency).

        A kind timed once (a training, a batch plan) is one round: its IQR is 0, its OPS the inverse
        of minutes, and in a group with the latency rows its IQR of 0 is the best, against which every
        latency row's IQR reads ``(inf)``. Its figures are in the run's summary instead.
        """
        groups = yield
        once = {kind.name for kind in KINDS.values() if kind.rounds == "once"}
        kept = [(name, [b for b in rows if (b["extra_info"] or {}).get("kind") not in once]) for name, rows in groups]
        return [(name, rows) for name, rows in kept if rows]

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's table: the run ends with its answer
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        from harness.results.summary import RunFacts, closing_lines, ranking_lines

        skipped = sum(outcome == "skipped" for outcome in self.case_outcomes.values())
        if not self.results and not self.shard_record and not self.save_lines and not skipped:
            return
        terminalreporter.write_sep("=", "backbone-bench: the answer")
        for line in ranking_lines([r.record for r in self.results.values()], skipped):
            terminalreporter.write_line(line)
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
        for line in self.track_lines:
            terminalreporter.write_line(line)
        for line in self.gate_lines:
            terminalreporter.write_line(line)
        if self.results:
            facts = RunFacts(self.saved_path, self.json_path if self.results else None,
                             self.settings.gate if self.baseline is not None else None, self.gate_code)
            for line in closing_lines(facts):
                terminalreporter.write_line(line)
        if self.all_skipped:
            count = len(self.case_outcomes)
            terminalreporter.write_line(
                f"backbone-bench: all {count} selected benchmark case(s) skipped, nothing was measured (exit {int(ALL_SKIPPED)}); "
                "-rs shows each reason")
            # An entry of its own in pytest's last line ("1 skipped, 1 run measured nothing: ...").
            # (other plugins read each stats entry's attributes: a plain object, not a string).
            terminalreporter.stats.setdefault(ALL_SKIPPED_STAT, []).append(SimpleNamespace(reason=ALL_SKIPPED_STAT))


def _all_cases(settings: Settings) -> list[Any]:
    from harness.kinds import all_cases

    return all_cases(settings)


def _shard_items(items: list[pytest.Item], settings: Settings, shard: Shard, storage: Path) -> tuple[list[pytest.Item], dict[str, Any]]:
    """The items of ``shard`` among ``items`` and the record of the split (harness/scale/shards.py)."""
    from harness.contract import settings_digest
    from harness.kinds import case_settings
    from harness.scale.shards import CaseFacts, CostModel, case_facts, plan

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
