"""The report's transfer sections on a hand-made study: 2 architectures with pretrained weights × 2
protocols × 3 subsets (3 seeds each), inference cases for both architectures on two devices.

Every top-1 is the mean of seeds ``t-1, t, t+1`` (std 1.0), so each expected cell can be checked by
hand; the subsets double, then quadruple (1k, 2k, 8k), so the mean top-1 over log-size is a weighted
mean with weights 1 and 2.
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Any

import matplotlib.image
import pandas as pd
import pytest

from harness.cli.report import add_report_arguments, report_options
from harness.results.deployment import choose_inference, deployment_frame, deployment_tables
from harness.results.report import ReportOptions, cases_frame, pareto_front, write_report
from harness.results.runs import Run, RunError, read_run_file
from harness.results.transfer import mean_over_log_size, train_points
from tests.data import synth

DATA = Path(__file__).parent / "data"
PNG = b"\x89PNG\r\n\x1a\n"

RESNET, MOBILE = "resnet18.a1_in1k", "mobilenetv3_small_100.lamb_in1k"
SUBSETS = (("1k", 1000), ("2k", 2000), ("8k", 8000))
# (backbone_name, protocol): top-1 at 1k, 2k, 8k
TOP1 = {
    (RESNET, "finetune"): (40.0, 60.0, 70.0),
    (RESNET, "linear"): (50.0, 55.0, 58.0),
    (MOBILE, "finetune"): (30.0, 50.0, 62.0),
    (MOBILE, "linear"): (45.0, 52.0, 54.0),
}
BINS = "imagefolder:/data/bins"  # a second dataset whose name is no file name
CONSTRAINED = ReportOptions(max_latency_ms=10.0, max_memory_bytes=64 * 2**20, min_top1=55.0)


def train(name: str, protocol: str, subset: str, size: int, top1: float, *, dataset: str = "cifar10", px: int = 224,
          seeds: list[float] | None = None) -> dict[str, Any]:
    """A train entry as the suite now records it: weights, protocol and resolution in the record."""
    arch, weights = name.split(".", 1)
    bench = synth.train_case(arch, subset, size, seeds or [top1 - 1.0, top1, top1 + 1.0])
    label = "imagefolder-bins" if dataset == BINS else dataset
    cid = f"{name}-{label}_{subset}-{protocol}-cpu-bs64-{px}px-fp32"
    bench["extra_info"].update(case_id=f"train/{cid}", dataset=dataset, backbone_name=name, protocol=protocol, weights=weights,
                               weights_sha256=None, img_size=px, eval_time_s=0.4, feature_time_s=1.5 if protocol == "linear" else None,
                               case_wall_s=12.0)
    bench.update(name=f"test_train[{cid}]", param=cid, params={"case": cid})
    return bench


def inference(arch: str, latency_ms: float, mib: float, *, device: str = "cpu", batch: int = 1, px: int = 224) -> dict[str, Any]:
    """An inference entry of ``arch`` whose latency p50 is exactly ``latency_ms``."""
    bench = synth.inference_case(arch, [latency_ms] * 5, device=device, peak_mib=mib, batch_size=batch)
    cid = f"{arch}-{device}-bs{batch}-{px}px-fp32"
    bench["extra_info"].update(case_id=f"inference/{cid}", img_size=px)
    bench.update(name=f"test_inference[{cid}]", param=cid, params={"case": cid})
    return bench


# cpu: 5 cases (the default device), cuda: 2. On cpu bs1 the 224 px case is the one joined (trained at
# 224), not bs8 nor 160 px; on cuda resnet18 has 160 and 256 px only and mobilenet nothing.
INFERENCE = [
    inference("resnet18", 12.0, 96.0), inference("mobilenetv3_small_100", 4.0, 31.0),
    inference("resnet18", 40.0, 300.0, batch=8), inference("mobilenetv3_small_100", 15.0, 90.0, batch=8),
    inference("resnet18", 7.0, 60.0, px=160),
    inference("resnet18", 2.5, 500.0, device="cuda", px=160), inference("resnet18", 3.0, 700.0, device="cuda", px=256),
]


def study() -> Run:
    benches = [train(name, protocol, label, size, top1) for (name, protocol), accs in TOP1.items()
               for (label, size), top1 in zip(SUBSETS, accs, strict=True)]
    benches += [train(RESNET, "finetune", "500", 500, 80.0, dataset=BINS), train(RESNET, "finetune", "2k", 2000, 90.0, dataset=BINS)]
    return Run.from_json(synth.make_run(benches + INFERENCE), source="study")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("transfer")
    return out, write_report([study()], out, CONSTRAINED)


def section(md: str, heading: str) -> str:
    return md.split(heading + "\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def deployment_md(runs: list[Run], options: ReportOptions) -> tuple[str, pd.DataFrame]:
    """The deployment section and rows alone (no plots drawn)."""
    frame = cases_frame(runs)
    ok = frame[frame["status"] == "ok"]
    choice = choose_inference(ok, options, {m: f"[M{i + 1}]" for i, m in enumerate(dict.fromkeys(frame["machine"]))})
    rows = deployment_frame(train_points(ok, runs), choice, options)
    return "\n".join(deployment_tables(rows, choice, options)), rows


def test_mean_top1_over_log_size_by_hand() -> None:
    # log2 steps 1 (1k->2k) and 2 (2k->8k): (50·1 + 65·2) / 3 = 60
    assert mean_over_log_size([1000, 2000, 8000], [40.0, 60.0, 70.0]) == pytest.approx(60.0)
    assert mean_over_log_size([1000], [42.0]) == 42.0


def test_deployment_joins_bs1_latency_at_the_training_resolution_and_checks_constraints(report: tuple[Path, Any]) -> None:
    md = (report[0] / "report.md").read_text()
    assert "cpu · batch 1 · fp32 · eager on [M1]" in md
    assert "Constraints: latency p50 ≤ 10 ms, peak memory ≤ 64 MiB, top-1 ≥ 55 %." in md
    table = section(md, "### cifar10 · 8k (8,000 training images)")
    assert table.splitlines()[1:7] == [
        "| Model | Protocol | Train px | Top-1 (%) | Latency p50 (ms) | Peak memory (MiB) | Params (M) | Pareto | Meets constraints |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {RESNET} | finetune | 224 | 70.0 ± 1.0 | 12.00 | 96.0 | 11.18 | ★ | ✗ latency 12.00 > 10 ms; peak memory 96.0 > 64 MiB |",
        f"| {MOBILE} | finetune | 224 | 62.0 ± 1.0 | 4.00 | 31.0 | 1.53 | ★ | ✓ |",
        f"| {RESNET} | linear | 224 | 58.0 ± 1.0 | 12.00 | 96.0 | 11.18 |  | ✗ latency 12.00 > 10 ms; peak memory 96.0 > 64 MiB |",
        f"| {MOBILE} | linear | 224 | 54.0 ± 1.0 | 4.00 | 31.0 | 1.53 |  | ✗ top-1 54.0 < 55 % |",
    ]
    assert f"**Best within constraints:** {MOBILE} · finetune: top-1 62.0 ± 1.0 %, latency p50 4.00 ms, peak memory 31.0 MiB" in table
    assert "**Best within constraints:** none meets: latency > 10 ms (2 of 4), peak memory > 64 MiB (2 of 4), top-1 < 55 % (4 of 4)" in section(
        md, "### cifar10 · 1k (1,000 training images)")
    assert "Notes:" not in md.split("## Deployment")[1].split("### ")[0]  # every model joined at its training resolution


def test_pareto_stars_are_the_hand_computed_front(report: tuple[Path, Any]) -> None:
    csv = pd.read_csv(report[0] / "deployment.csv")
    cifar = csv[csv["dataset"] == "cifar10"]
    stars = {size: {(r.backbone_name, r.protocol) for r in g.itertuples() if r.pareto} for size, g in cifar.groupby("train_size")}
    assert stars == {
        1000: {(RESNET, "linear"), (MOBILE, "linear")},  # mobile 4 ms: linear 45 beats finetune 30; resnet 12 ms: 50 > 45
        2000: {(MOBILE, "linear"), (RESNET, "finetune")},
        8000: {(MOBILE, "finetune"), (RESNET, "finetune")},
    }
    for size, g in cifar.groupby("train_size"):  # and the same as pareto_front on those points
        points = {f"{r.backbone_name} {r.protocol}": (r.latency_p50_ms, r.top1) for r in g.itertuples()}
        assert set(pareto_front(points)) == {f"{n} {p}" for n, p in stars[size]}


def test_deployment_csv_columns_and_joined_values(report: tuple[Path, Any]) -> None:
    csv = pd.read_csv(report[0] / "deployment.csv")
    assert list(csv.columns) == [
        "dataset", "subset", "train_size", "backbone_name", "protocol", "train_img_size", "backbone", "top1", "top1_std", "seeds",
        "inference_device", "inference_batch_size", "inference_precision", "inference_runtime", "inference_machine",
        "inference_img_size", "inference_img_size_from", "latency_p50_ms", "peak_mem_bytes", "params", "pareto",
        "meets_constraints", "reasons", "mce",
    ]
    assert len(csv) == 4 * 3 + 2
    row = csv[(csv["backbone_name"] == MOBILE) & (csv["protocol"] == "finetune") & (csv["train_size"] == 8000)].iloc[0]
    assert (row["backbone"], row["top1"], row["top1_std"], row["seeds"]) == ("mobilenetv3_small_100", 62.0, 1.0, 3)
    assert (row["inference_device"], row["inference_batch_size"], row["inference_img_size"], row["inference_img_size_from"]) == ("cpu", 1, 224, "train")
    assert (row["latency_p50_ms"], row["peak_mem_bytes"], row["params"], bool(row["meets_constraints"])) == (4.0, 31 * 2**20, 1_528_106, True)
    assert set(csv.loc[csv["dataset"] == BINS, "reasons"]) == {"latency 12.00 > 10 ms; peak memory 96.0 > 64 MiB"}


def test_data_efficiency_default_target_is_90_percent_of_each_curves_best(report: tuple[Path, Any]) -> None:
    md = (report[0] / "report.md").read_text()
    table = section(md, "### cifar10: data efficiency (target top-1: 90% of each curve's own best top-1)")
    assert table.splitlines()[1:7] == [
        "| Model | Protocol | Top-1 at smallest (%) | Top-1 at largest (%) | Target (%) | Reaches target at (images) | Mean top-1 over log-size (%) | Seeds |",
        "|---|---|---|---|---|---|---|---|",
        f"| {MOBILE} | finetune | 30.0 ± 1.0 @ 1,000 | 62.0 ± 1.0 @ 8,000 | 55.8 | 8,000 | 50.7 | 3 |",  # (40 + 56·2) / 3
        f"| {MOBILE} | linear | 45.0 ± 1.0 @ 1,000 | 54.0 ± 1.0 @ 8,000 | 48.6 | 2,000 | 51.5 | 3 |",  # (48.5 + 53·2) / 3
        f"| {RESNET} | finetune | 40.0 ± 1.0 @ 1,000 | 70.0 ± 1.0 @ 8,000 | 63.0 | 8,000 | 60.0 | 3 |",  # (50 + 65·2) / 3
        f"| {RESNET} | linear | 50.0 ± 1.0 @ 1,000 | 58.0 ± 1.0 @ 8,000 | 52.2 | 2,000 | 55.2 | 3 |",  # (52.5 + 56.5·2) / 3
    ]
    assert f"| {RESNET} | finetune | 80.0 ± 1.0 @ 500 | 90.0 ± 1.0 @ 2,000 | 81.0 | 2,000 | 85.0 | 3 |" in md


def test_data_efficiency_with_a_target_top1() -> None:
    from harness.results.transfer import efficiency_tables

    run = study()
    frame = cases_frame([run])
    md = "\n".join(efficiency_tables(train_points(frame[frame["status"] == "ok"], [run]), ReportOptions(target_top1=55.0)))
    rows = [line.split(" | ") for line in section(md, "### cifar10: data efficiency (target top-1: 55 %)").splitlines() if "@" in line]
    reached = {f"{row[0][2:]} {row[1]}": row[5] for row in rows}
    assert reached == {f"{MOBILE} finetune": "8,000", f"{MOBILE} linear": "not reached (best 54.0)", f"{RESNET} finetune": "2,000",
                       f"{RESNET} linear": "2,000"}  # 55.0 reaches 55


def test_one_png_per_dataset_valid_and_readable(report: tuple[Path, Any]) -> None:
    out, result = report
    pngs = ["accuracy_vs_subset_cifar10.png", "accuracy_vs_subset_imagefolder_data_bins.png", "pareto_cifar10.png", "pareto_imagefolder_data_bins.png",
            "peak_memory.png", "latency.png"]
    assert [p.name for p in result.files] == ["report.md", "report.csv", "deployment.csv", *pngs] and result.skipped == []
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500  # a drawn figure at 120 dpi
    md = (out / "report.md").read_text()
    assert "![pareto_cifar10.png](pareto_cifar10.png)" in md and "![accuracy_vs_subset_cifar10.png](accuracy_vs_subset_cifar10.png)" in md


def test_another_device_joins_the_nearest_resolution_and_flags_missing_latency() -> None:
    md, rows = deployment_md([study()], ReportOptions(device="cuda", max_latency_ms=10.0))
    assert "cuda · batch 1 · fp32 · eager on [M1]" in md
    table = section(md, "### cifar10 · 8k (8,000 training images)")
    # resnet18 trained at 224 px: cuda measured 160 and 256 px; 256 is nearer
    assert f"| {RESNET} | finetune | 224 | 70.0 ± 1.0 | 3.00 @256px | 700.0 @256px | 11.18 | ★ | ✓ |" in table
    assert f"| {MOBILE} | finetune | 224 | 62.0 ± 1.0 | – | – | 1.53 | – | ✗ no latency measured for mobilenetv3_small_100 on cuda bs1 224px |" in table
    assert "- resnet18 (trained at 224 px): latency and memory joined at the nearest measured, 256 px" in md
    assert "- mobilenetv3_small_100: no inference case on cuda · batch 1 · fp32 · eager on [M1]" in md
    md, rows = deployment_md([study()], ReportOptions(device="cuda", img_size=160))
    assert f"| {RESNET} | finetune | 224 | 70.0 ± 1.0 | 2.50 @160px | 500.0 @160px | 11.18 | ★ | ✓ |" in md
    assert set(rows.loc[rows["backbone"] == "resnet18", "inference_img_size_from"]) == {"img-size"}


def test_a_device_or_batch_without_inference_cases_is_a_run_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"^no inference cases on mps; the runs have: cpu, cuda$"):
        write_report([study()], tmp_path / "out", ReportOptions(device="mps"))
    with pytest.raises(RunError, match=r"^no inference cases at batch 4 on cpu; it has batch sizes: 1, 8$"):
        write_report([study()], tmp_path / "out", ReportOptions(batch_size=4))
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(RunError, match=r"^no inference cases on cuda; the runs have: cpu$"):
        write_report([read_run_file(DATA / "run_cpu_base.json")], tmp_path / "out", ReportOptions(device="cuda"))


def test_old_runs_without_protocol_or_backbone_name_still_report(tmp_path: Path) -> None:
    cpu = read_run_file(DATA / "run_cpu_base.json")
    result = write_report([cpu], tmp_path)
    assert {"deployment.csv", "accuracy_vs_subset_cifar10.png", "pareto_cifar10.png"} <= {p.name for p in result.files}
    md = (tmp_path / "report.md").read_text()
    latency = cpu.cases["inference/resnet18-cpu-bs1-32px-fp32"].extra["latency_p50_ms"]
    assert f"| resnet18 | scratch | – | 71.0 ± 0.7 | {latency:.2f} @32px | 96.0 @32px | 11.18 | ★ | ✓ |" in md
    assert "- resnet18 (training resolution not recorded): latency and memory joined at the only resolution measured, 32 px" in md
    assert "| resnet18 | scratch | 46.2 ± 0.6 @ 1,000 | 71.0 ± 0.7 @ 10,000 |" in md
    csv = pd.read_csv(tmp_path / "deployment.csv")
    assert (csv["backbone_name"] == csv["backbone"]).all() and set(csv["protocol"]) == {"scratch"}


def test_pareto_plot_skipped_when_no_model_has_a_latency(tmp_path: Path) -> None:
    doc = synth.make_run([train(RESNET, "linear", label, size, 50.0 + i) for i, (label, size) in enumerate(SUBSETS)])
    result = write_report([Run.from_json(doc)], tmp_path, ReportOptions(max_latency_ms=5.0))
    assert result.skipped == ["pareto_cifar10.png skipped: no model at the largest cifar10 subset (8,000 images) has both a top-1 and a latency "
                              "(no successful inference cases in these runs)",
                              "latency.png skipped: no successful inference case recorded latency_p50_ms"]
    assert not (tmp_path / "pareto_cifar10.png").exists() and (tmp_path / "accuracy_vs_subset_cifar10.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert f"| {RESNET} | linear | 224 | 52.0 ± 1.0 | – | – | – | – | ✗ no latency measured for resnet18 (the runs have no successful inference case) |" in md
    assert "**Best within constraints:** none meets: no latency measured (1 of 1)" in md


def test_seeds_of_one_point_from_two_machines_pool() -> None:
    a = synth.make_run([train(RESNET, "linear", "8k", 8000, 70.0, seeds=[69.0, 70.0, 71.0])])
    b = synth.make_run([train(RESNET, "linear", "8k", 8000, 72.0, seeds=[71.0, 72.0, 73.0])], key=synth.CUDA_KEY)
    runs = [Run.from_json(a, "a"), Run.from_json(b, "b")]
    points = train_points(cases_frame(runs), runs)
    # six seeds: mean 71, squared deviations 4+1+0+0+1+4 = 10, sample variance 10/5 = 2
    assert len(points) == 1 and points.loc[0, "top1"] == 71.0 and points.loc[0, "top1_std"] == pytest.approx(2**0.5) and points.loc[0, "seeds"] == 6


GOOD = [
    ([], ReportOptions()),
    (["--device", "cuda", "--batch-size", "8", "--img-size", "224"], ReportOptions(device="cuda", batch_size=8, img_size=224)),
    (["--max-latency-ms", "12.5", "--max-memory", "512MiB", "--min-top1", "100"], ReportOptions(max_latency_ms=12.5, max_memory_bytes=512 * 2**20, min_top1=100.0)),
    (["--max-memory", "2GiB", "--target-top1", "0.5"], ReportOptions(max_memory_bytes=2 * 2**30, target_top1=0.5)),
    (["--max-memory", "1048576"], ReportOptions(max_memory_bytes=2**20)),  # a bare number is bytes
]
BAD = [
    (["--min-top1", "0"], "percentage in (0, 100]"), (["--min-top1", "100.5"], "percentage in (0, 100]"), (["--target-top1", "nan"], "percentage"),
    (["--target-top1", "high"], "percentage"), (["--max-latency-ms", "0"], "number > 0"), (["--max-latency-ms", "-3"], "number > 0"),
    (["--max-memory", "0"], "above zero"), (["--max-memory", "12XB"], "memory unit"), (["--max-memory", "lots"], "needs a number and a unit"),
    (["--batch-size", "0"], "positive integer"), (["--img-size", "2.5"], "positive integer"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="report", exit_on_error=False)
    add_report_arguments(parser)
    return parser


@pytest.mark.parametrize(("argv", "expected"), GOOD)
def test_report_options_parse(argv: list[str], expected: ReportOptions) -> None:
    assert report_options(_parser().parse_args(argv)) == expected


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_report_options_are_rejected_at_parse_time(argv: list[str], message: str) -> None:
    with pytest.raises(argparse.ArgumentError, match=re.escape(f"argument {argv[0]}: ") + ".*" + re.escape(message)):
        _parser().parse_args(argv)


def test_report_options_default_when_the_namespace_lacks_them() -> None:
    assert report_options(argparse.Namespace(runs=["x"], out=Path("o"))) == ReportOptions()
    assert copy.copy(CONSTRAINED) == CONSTRAINED and hash(CONSTRAINED) == hash(ReportOptions(max_latency_ms=10.0, max_memory_bytes=64 * 2**20, min_top1=55.0))


def test_dataset_file_names_are_sanitised_and_never_clash() -> None:
    from harness.results.transfer import file_stems

    assert file_stems(["a/b", "a:b", "cifar10", "imagefolder:/data/bins", "../"]) == {
        "../": "dataset", "a/b": "a_b", "a:b": "a_b-2", "cifar10": "cifar10", "imagefolder:/data/bins": "imagefolder_data_bins"}
