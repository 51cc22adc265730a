"""The end of a run: the summary a person reads (harness.results.summary), and the plugin printing it
after pytest-benchmark's table, which keeps the kinds timed once (training, planning) out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.contract import KINDS
from harness.results.summary import RunFacts, closing_lines, ranking_lines
from tests.test_plugin import FAST, suite  # noqa: F401  (the pytester project fixture)


def _inference(backbone: str, p50: float, ips: float, mem: int, status: str = "ok") -> dict[str, object]:
    return {"kind": "inference", "case_id": f"inference/{backbone}-cpu-bs1-32px-fp32", "backbone": backbone, "status": status,
            "latency_p50_ms": p50, "throughput_ips": ips, "peak_mem_bytes": mem}


def test_each_headline_metric_names_its_best_and_worst_backbone_in_its_unit() -> None:
    records = [_inference("resnet18", 2.5, 400.0, 50 * 2**20), _inference("vit_base_patch16_224", 40.0, 25.0, 350 * 2**20),
               _inference("mobilenetv3_large_100", 1.25, 800.0, 20 * 2**20), _inference("deit_small_patch16_224", 0.0, 0.0, 0, "failed"),
               {"kind": "train", "case_id": "train/resnet18-digits_full-cpu-bs128-32px-fp32", "backbone": "resnet18",
                "backbone_name": "resnet18", "status": "ok", "top1": 97.25, "train_time_s": 101.0},
               {"kind": "train", "case_id": "train/mobilevit_xs-digits_full-cpu-bs128-32px-fp32", "backbone": "mobilevit_xs",
                "backbone_name": "mobilevit_xs", "status": "ok", "top1": 80.5, "train_time_s": 240.0}]
    assert ranking_lines(records, skipped=2) == [
        "inference: 3 case(s) ok, 1 failed: inference/deit_small_patch16_224-cpu-bs1-32px-fp32",
        "  latency_p50_ms                    best mobilenetv3_large_100 1.25 ms, worst vit_base_patch16_224 40 ms",
        "  throughput_ips                    best mobilenetv3_large_100 800 img/s, worst vit_base_patch16_224 25 img/s",
        "  peak_mem_bytes                    best mobilenetv3_large_100 20.0 MiB, worst vit_base_patch16_224 350.0 MiB",
        "train: 2 case(s) ok",
        "  top1                              best resnet18 97.2%, worst mobilevit_xs 80.5%",
        "  train_time_s                      best resnet18 101 s, worst mobilevit_xs 240 s",
        "skipped: 2 case(s) (-rs shows each reason)",
    ]


def test_cases_of_one_backbone_are_named_by_their_case_id_and_one_case_has_no_worst() -> None:
    records = [_inference("resnet18", 2.0, 500.0, 2**20), {**_inference("resnet18", 3.0, 667.0, 2 * 2**20), "case_id": "inference/resnet18-cpu-bs2-32px-fp32"}]
    assert ranking_lines(records)[1] == ("  latency_p50_ms                    best inference/resnet18-cpu-bs1-32px-fp32 2 ms, "
                                         "worst inference/resnet18-cpu-bs2-32px-fp32 3 ms")
    assert ranking_lines(records[:1])[1:] == ["  latency_p50_ms                    best resnet18 2 ms",
                                              "  throughput_ips                    best resnet18 500 img/s",
                                              "  peak_mem_bytes                    best resnet18 1.0 MiB"]


def test_the_closing_lines_give_the_gate_verdict_and_the_next_command() -> None:
    saved = Path("baselines/m/0002_smoke.json")
    assert closing_lines(RunFacts(saved, None, "0001", 1)) == [
        "gate against 0001: regression (exit 1)",
        "next: python -m harness report latest --out reports/   (Markdown, CSV and plots of the saved run)"]
    assert closing_lines(RunFacts(None, Path("pr.json"), "smoke", 0)) == [
        "gate against smoke: passed", "next: python -m harness report pr.json --out reports/   (Markdown, CSV and plots of the run)"]
    assert closing_lines(RunFacts()) == ["not saved: pass --benchmark-save=NAME (into the storage) or --benchmark-json=PATH to keep the run"]


def test_every_headline_metric_is_one_its_kind_records() -> None:
    for kind in KINDS.values():
        assert kind.headline and set(kind.headline) <= set(kind.metrics), kind.name


def _shown(value: float) -> str:
    """How a figure reads: whole above 100, one decimal from 10, three significant figures below."""
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _line(key: str, records: list[dict[str, object]], unit: str, higher: bool, scale: float = 1.0) -> str:
    ranked = sorted(records, key=lambda r: float(r[key]) * (1 if higher else -1), reverse=True)  # type: ignore[arg-type]
    best, worst = ranked[0], ranked[-1]
    show = (lambda v: f"{v / scale:,.1f}") if scale != 1.0 else _shown
    return f"  {key:<33} best {best['case_id']} {show(best[key])} {unit}, worst {worst['case_id']} {show(worst[key])} {unit}"  # type: ignore[arg-type]


def test_the_main_job_ends_with_its_answer_and_the_table_times_latency_only(suite: pytest.Pytester) -> None:  # noqa: F811
    result = suite.runpytest("-m", "inference or train", "--backbones", "resnet18", "--batch-sizes", "1,2", "--devices", "cpu",
                             "--protocols", "knn", "--subsets", "100", "--seeds", "1", *FAST, "--benchmark-save=first")
    result.assert_outcomes(passed=3)
    out = result.outlines
    saved = next(Path(suite.path, "baselines").glob("*/0001_first.json"))
    records = [b["extra_info"] for b in json.loads(saved.read_text())["benchmarks"]]
    inference = [r for r in records if r["kind"] == "inference"]
    train = next(r for r in records if r["kind"] == "train")
    # pytest-benchmark's table: the two latency rows, not the training's one round; no ratio against an IQR of 0.
    rows = sorted(line.split()[0] for line in out if line.startswith("test_") and "[" in line.split()[0])
    assert rows == ["test_inference[resnet18-cpu-bs1-32px-fp32]", "test_inference[resnet18-cpu-bs2-32px-fp32]"]
    assert any(line.startswith("-") and "benchmark: 2 tests" in line for line in out)
    assert not any("(inf)" in line for line in out)
    answer = next(i for i, line in enumerate(out) if "backbone-bench: the answer" in line)
    assert answer > next(i for i, line in enumerate(out) if line.startswith("Legend:"))
    assert "train_time_s" not in train or train["train_time_s"] is None  # knn trains nothing: no line for it
    assert out[answer + 1:answer + 8] == [
        "inference: 2 case(s) ok",
        _line("latency_p50_ms", inference, "ms", higher=False),
        _line("throughput_ips", inference, "img/s", higher=True),
        _line("peak_mem_bytes", inference, "MiB", higher=False, scale=2**20),
        "train: 1 case(s) ok",
        f"  top1                              best resnet18 {_shown(train['top1'])}%",
        f"backbone-bench: saved 3 case(s) to {saved}",
    ]
    assert out[answer + 8] == "next: python -m harness report latest --out reports/   (Markdown, CSV and plots of the saved run)"
    assert out[answer + 9].startswith("=") and "3 passed" in out[answer + 9]  # pytest's own last line follows
