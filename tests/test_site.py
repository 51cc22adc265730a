"""The static site: change points where a step was injected and none in A/A noise, segments split
where settings change, the last gate's table, a corrupt run named, and every bad input one error."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ruptures", reason="the site extra is not installed: pip install -e '.[site]'")
pytest.importorskip("plotly", reason="the site extra is not installed: pip install -e '.[site]'")

from harness.__main__ import main  # noqa: E402
from harness.contract import KINDS, METRICS  # noqa: E402
from harness.results.compare import compare_runs  # noqa: E402
from harness.results.runs import RunError, read_run_file  # noqa: E402
from harness.results.site import build_site  # noqa: E402
from harness.results.site.changes import change_points  # noqa: E402
from harness.results.site.data import gather, series  # noqa: E402
from harness.results.tolerances import parse_tolerances  # noqa: E402
from tests.data import synth  # noqa: E402
from tests.sitedata import SLOW_FROM, stepped, write_history  # noqa: E402

RESNET = "inference/resnet18-cpu-bs1-32px-fp32"
FOLDER = synth.CPU_KEY  # the machine's folder name in the site: the baseline key is already path-safe
# The inference metrics synth's records carry: weights_bytes, energy and duration are not recorded.
RECORDED = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "throughput_ips", "params", "gmacs", "peak_mem_bytes"]


def _figures(page: str) -> dict[str, Any]:
    found = re.search(r"const FIGURES = (\{.*?\});\n", page)
    assert found is not None
    figures: dict[str, Any] = json.loads(found[1])
    return figures


def _machine(storage: Path) -> Any:
    return gather(storage).machines[synth.CPU_KEY]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_30_percent_slowdown_halfway_is_one_change_point_at_its_first_run(tmp_path: Path, seed: int) -> None:
    write_history(tmp_path, stepped(10, 1.3), seed=seed)
    s = series(_machine(tmp_path), RESNET, METRICS["latency_p50_ms"])
    assert [(len(seg.points), seg.changes) for seg in s.segments] == [(10, (SLOW_FROM,))]
    assert s.segments[0].points[SLOW_FROM].run.name == "0006_run6"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_aa_series_of_ten_runs_has_no_change_point(tmp_path: Path, seed: int) -> None:
    write_history(tmp_path, [1.0] * 10, seed=seed)
    machine = _machine(tmp_path)
    for case_id in machine.cases():
        for key in RECORDED:
            assert series(machine, case_id, METRICS[key]).segments[0].changes == (), (case_id, key)


def test_change_points_by_noise_class() -> None:
    assert change_points([10.0, 10.1, 9.9, 10.0, 13.0, 13.1, 12.9, 13.0], "timed") == [4]
    assert change_points([10.0, 10.1, 9.9], "timed") == []  # too few runs for two levels of two
    assert change_points([10.0, 10.0, 10.0, 10.0, 10.0], "timed") == []  # flat: the noise floor, not zero
    # exact metrics: every change of value, even a single run's
    assert change_points([5.0, 5.0, 6.0, 6.0, 5.0], "exact") == [2, 4]
    assert change_points([2.0, 2.0, 2.0], "seeded") == []


def test_other_settings_split_the_series_and_are_never_joined(tmp_path: Path) -> None:
    write_history(tmp_path, [1.0] * 8, threads=lambda i: 4 if i < 4 else 2)
    s = series(_machine(tmp_path), RESNET, METRICS["latency_p50_ms"])
    assert [(len(seg.points), seg.differs) for seg in s.segments] == [(4, ""), (4, "threads 4 → 2")]
    result = build_site(tmp_path, tmp_path.parent / "site")
    page = (result.out / FOLDER / "cases" / "inference_resnet18-cpu-bs1-32px-fp32.html").read_text()
    p50 = _figures(page)["m0"]
    lines = [t for t in p50["data"] if t["mode"] == "lines+markers"]
    assert [t["x"] for t in lines] == [[1, 2, 3, 4], [5, 6, 7, 8]]  # two traces: no line from run 4 to run 5
    assert [a["text"] for a in p50["layout"]["annotations"]] == ["settings changed"]
    assert p50["layout"]["annotations"][0]["hovertext"] == "threads 4 → 2"


def test_trend_page_has_one_plot_per_recorded_contract_metric_with_the_step_marked(tmp_path: Path) -> None:
    write_history(tmp_path, stepped(10, 1.3))
    result = build_site(tmp_path, tmp_path.parent / "site")
    page = (result.out / FOLDER / "cases" / "inference_resnet18-cpu-bs1-32px-fp32.html").read_text()
    figures = _figures(page)
    wanted = [key for key in KINDS["inference"].metrics if key in RECORDED]
    assert re.findall(r"<h3>(\w+):", page) == wanted and len(figures) == len(wanted)
    assert "Not recorded by this case: instructions, weights_bytes, energy_mj_per_img, clip_params_total, text_encode_ms, duration_s." in page
    p50 = figures["m0"]
    value = next(t for t in p50["data"] if t["mode"] == "lines+markers")
    assert value["x"] == list(range(1, 11)) and value["customdata"][SLOW_FROM][:2] == [f"{FOLDER}/0006_run6", "0000006c"]
    assert value["marker"]["symbol"] == ["circle"] * SLOW_FROM + ["diamond"] + ["circle"] * (9 - SLOW_FROM)
    assert [t.get("name") for t in p50["data"] if t.get("fill")] == ["rounds p10–p90"]  # the band: latency rounds
    assert [(s["x0"], s["line"]["color"]) for s in p50["layout"]["shapes"]] == [(5.5, "#d62728")]
    assert re.fullmatch(r"step \+\d\d\.\d%", p50["layout"]["annotations"][0]["text"])
    assert not [t for t in figures["m4"]["data"] if t.get("fill")]  # throughput: its rounds are latencies, no band
    assert "latency_p50_ms +" in page and "at 0006_run6" in page


def test_index_shows_latest_gated_values_and_the_last_gate_and_compare_page_is_compares_table(tmp_path: Path) -> None:
    paths = write_history(tmp_path, [1.0, 1.0, 1.0, 1.0, 1.6])  # the newest run 60% slower: the gate fails
    result = build_site(tmp_path, tmp_path.parent / "site")
    base, cur = read_run_file(paths[-2], f"{FOLDER}/0004_run4"), read_run_file(paths[-1], f"{FOLDER}/0005_run5")
    history = [read_run_file(p, f"{FOLDER}/{p.stem}") for p in paths]
    comparison = compare_runs(base, cur, parse_tolerances(None), history=history)
    assert result.gates == {synth.CPU_KEY: comparison.summary()} and comparison.summary().startswith("FAIL")
    index = (result.out / "index.html").read_text()
    assert "Last gate, 0004_run4 → 0005_run5: <b>" + html.escape(comparison.summary()) in index
    assert "<th>latency_p50_ms (ms)</th><th>params (count)</th><th>gmacs (GMACs)</th><th>peak_mem_bytes (bytes)</th><th>Last gate</th>" in index
    latest = cur.cases[RESNET].value("latency_p50_ms")
    assert f'<td class="num">{latest:.4g} ms</td><td class="num">11.182M</td><td class="num">0.0371 GMACs</td><td class="num">96.0 MiB</td><td>regression</td>' in index
    compare = (result.out / FOLDER / "compare.html").read_text()
    for row in comparison.table():
        assert "<td>" + "</td><td>".join(html.escape(c) for c in row[:2]) + "</td>" in compare
        assert "".join(f'<td class="num">{html.escape(c)}</td>' for c in row[2:6]) in compare
    assert html.escape("\n".join(comparison.preamble())) in compare


def test_training_runs_get_curves_accuracy_and_pareto(tmp_path: Path) -> None:
    write_history(tmp_path, [1.0, 1.0], train=True)
    result = build_site(tmp_path, tmp_path.parent / "site")
    assert [p for p in result.pages if "/train/" in p] == [f"{FOLDER}/train/0001_run1.html", f"{FOLDER}/train/0002_run2.html"]
    figures = _figures((result.out / FOLDER / "train" / "0002_run2.html").read_text())
    assert sorted(figures) == ["curve_loss", "curve_top1", "pareto_0", "subset_0"]
    assert figures["curve_top1"]["data"][0]["y"] == [46.0 / 3, 46.0 * 2 / 3, 46.0]
    assert [t["name"] for t in figures["pareto_0"]["data"]] == ["resnet18 · scratch", "Pareto front"]


def test_a_corrupt_run_is_skipped_and_named_in_stdout_and_on_the_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "runs"
    write_history(storage, [1.0] * 3)
    (storage / synth.CPU_KEY / "0004_broken.json").write_text('{"benchmarks": [', encoding="utf-8")
    out = tmp_path / "site"
    assert main(["site", "--out", str(out), "--benchmark-storage", str(storage)]) == 0
    stdout = capsys.readouterr().out
    assert f"skipped: {FOLDER}/0004_broken: corrupt JSON at line 1 column 17" in stdout
    assert f"wrote 4 pages to {out}" in stdout  # index, compare, two trend pages
    assert f"{FOLDER}/0004_broken: corrupt JSON" in (out / "index.html").read_text()


@pytest.mark.parametrize("layout", ["empty", "missing", "only_corrupt"])
def test_storage_without_a_readable_run_is_one_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str) -> None:
    storage = tmp_path / "runs"
    if layout != "missing":
        (storage / synth.CPU_KEY).mkdir(parents=True)
    if layout == "only_corrupt":
        (storage / synth.CPU_KEY / "0001_x.json").write_text("", encoding="utf-8")
    assert main(["site", "--out", str(tmp_path / "site"), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = {"empty": f"error: no runs in {storage}: nothing to build a site from",
                "missing": f"error: storage directory {storage} does not exist",
                "only_corrupt": f"error: no readable run in {storage}; skipped: {FOLDER}/0001_x: the file is empty"}[layout]
    assert len(err) == 1 and err[0].startswith(expected)
    assert not (tmp_path / "site").exists()


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ruptures" else real(name, *a))
    assert main(["site", "--out", str(tmp_path / "site")]) == 2
    assert capsys.readouterr().err == ("error: python -m harness site needs the 'site' extra, missing: ruptures (the change points); "
                                       "install it with pip install -e '.[site]'\n")


def test_a_rebuild_replaces_the_site_at_once_and_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    write_history(storage, [1.0] * 2)
    out = tmp_path / "site"
    build_site(storage, out)
    (out / "stale.html").write_text("old", encoding="utf-8")
    build_site(storage, out)
    assert not (out / "stale.html").exists() and (out / "plotly.min.js").stat().st_size > 1_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "site"]  # no temporary or old folder left beside it
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match="is not a site this command built"):
        build_site(storage, foreign)
    assert [p.name for p in foreign.iterdir()] == ["todo.txt"]
    with pytest.raises(RunError):
        build_site(tmp_path / "nothing", tmp_path / "site2")


def test_pages_load_nothing_from_the_network(tmp_path: Path) -> None:
    write_history(tmp_path / "runs", stepped(6), train=True)
    out = build_site(tmp_path / "runs", tmp_path / "site").out
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), page
        depth = len(page.relative_to(out).parts) - 1
        if "const FIGURES" in text:
            assert f'<script src="{"../" * depth}plotly.min.js"></script>' in text


def test_the_site_refuses_to_write_into_the_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_history(tmp_path, [1.0])
    assert main(["site", "--out", str(tmp_path / "site"), "--storage", str(tmp_path)]) == 2
    assert "is inside the storage" in capsys.readouterr().err


def test_a_code_change_of_an_own_backbone_splits_the_series_and_is_named_on_its_page(tmp_path: Path) -> None:
    paths = write_history(tmp_path, [1.0] * 6)
    for i, path in enumerate(paths):  # the same case id, its code changed in the last run (the one the last gate judges)
        doc = json.loads(path.read_text())
        for bench in doc["benchmarks"]:
            bench["extra_info"]["backbone_code_digest"] = "aaaa" if i < 5 else "bbbb"
        path.write_text(json.dumps(doc))
    s = series(_machine(tmp_path), RESNET, METRICS["latency_p50_ms"])
    assert [(len(seg.points), seg.differs) for seg in s.segments] == [(5, ""), (1, "code digest changed (aaaa → bbbb)")]
    result = build_site(tmp_path, tmp_path.parent / "site")
    p50 = _figures((result.out / FOLDER / "cases" / "inference_resnet18-cpu-bs1-32px-fp32.html").read_text())["m0"]
    assert [(a["text"], a["hovertext"]) for a in p50["layout"]["annotations"]] == [("code digest changed", "code digest changed (aaaa → bbbb)")]
    assert "code digest changed (aaaa → bbbb)" in (result.out / FOLDER / "compare.html").read_text()
