"""Realistic synthetic backbone-bench runs for the compare/report tests.

Figures are modelled on a Xeon 8481C running timm backbones at 32 px, batch 1, fp32, 4 threads,
and on 10-class CIFAR-10 subsets fine-tuned for a few epochs. Latency rounds are log-normal with
occasional interrupt outliers, which is what CPU timings look like. ``python tests/data/synth.py``
regenerates the JSON files in this directory (deterministic: fixed seeds).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

CPU_KEY = "Linux-CPython-3.11-64bit-cpu-intel-xeon-platinum-8481c"
CUDA_KEY = "Linux-CPython-3.11-64bit-cuda-nvidia-h100-80gb-hbm3"
# backbone: (family, params at 10 classes, GMACs at 32 px, CPU p50 ms at bs1, peak MiB)
BACKBONES: dict[str, tuple[str, int, float, float, float]] = {
    "resnet18": ("cnn", 11_181_642, 0.0371, 2.1, 96.0),
    "mobilenetv3_small_100": ("cnn", 1_528_106, 0.0012, 2.8, 31.0),
    "efficientnet_b0": ("cnn", 4_020_358, 0.0080, 6.0, 58.0),
    "vit_tiny_patch16_224": ("transformer", 5_526_346, 0.0260, 1.6, 44.0),
    "mobilevit_xxs": ("hybrid", 951_242, 0.0066, 5.1, 40.0),
}
# backbone: top1 (%) at the 1k / 5k / 10k CIFAR-10 subsets after fine-tuning
TOP1 = {
    "resnet18": (46.0, 63.5, 71.0),
    "mobilenetv3_small_100": (38.0, 52.0, 58.5),
    "efficientnet_b0": (44.0, 61.0, 69.5),
    "vit_tiny_patch16_224": (35.5, 50.0, 60.0),
    "mobilevit_xxs": (41.0, 57.5, 65.0),
}
SUBSETS = (("1k", 1000), ("5k", 5000), ("10k", 10000))


def latency_samples(rng: np.random.Generator, median_ms: float, sigma: float = 0.05, rounds: int = 30) -> list[float]:
    """Timed rounds: log-normal around ``median_ms``; 5% of rounds hit by a 1.2-1.8x interrupt outlier."""
    samples = median_ms * rng.lognormal(0.0, sigma, rounds)
    hit = rng.random(rounds) < 0.05
    samples[hit] *= rng.uniform(1.2, 1.8, int(hit.sum()))
    return [round(float(s), 5) for s in samples]


def _stats(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {
        "min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()), "stddev": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "median": float(med), "iqr": float(q3 - q1), "q1": float(q1), "q3": float(q3),
        "rounds": len(a), "ops": float(1 / a.mean()), "total": float(a.sum()),
    }


def inference_case(backbone: str, samples_ms: list[float], *, device: str = "cpu", peak_mib: float | None = None,
                   params: int | None = None, gmacs: float | None = None, batch_size: int = 1) -> dict[str, Any]:
    """One inference benchmark entry whose latency keys are computed from ``samples_ms``."""
    family, p, g, _, mib = BACKBONES[backbone]
    a = np.asarray(samples_ms)
    cid = f"{backbone}-{device}-bs{batch_size}-32px-fp32"
    extra = {
        "kind": "inference", "case_id": f"inference/{cid}", "backbone": backbone, "family": family,
        "device": device, "precision": "fp32", "status": "ok", "batch_size": batch_size, "img_size": 32,
        "num_classes": 10, "threads": 4, "runtime": "eager", "params": params or p, "gmacs": gmacs or g,
        "latency_p50_ms": float(np.median(a)), "latency_p90_ms": float(np.percentile(a, 90)),
        "latency_p99_ms": float(np.percentile(a, 99)), "latency_mean_ms": float(a.mean()),
        "throughput_ips": float(batch_size * 1000 / np.median(a)),
        "peak_mem_bytes": int((peak_mib or mib) * 2**20), "latency_samples_ms": samples_ms,
    }
    return {"group": None, "name": f"test_inference[{cid}]", "fullname": f"benchmarks/test_inference.py::test_inference[{cid}]",
            "params": {"case": cid}, "param": cid, "extra_info": extra, "options": {}, "stats": _stats([s / 1000 for s in samples_ms])}


def train_case(backbone: str, subset: str, train_size: int, per_seed: list[float], *, device: str = "cpu") -> dict[str, Any]:
    """One train benchmark entry; ``top1`` is the mean of ``per_seed`` and ``top1_std`` their sample std."""
    family, *_ = BACKBONES[backbone]
    top1 = float(np.mean(per_seed))
    cid = f"{backbone}-cifar10_{subset}-{device}-bs64-32px-fp32"
    train_time = train_size / 900.0 * 3  # ~900 img/s on the Xeon, 3 epochs
    extra = {
        "kind": "train", "case_id": f"train/{cid}", "backbone": backbone, "family": family, "device": device,
        "precision": "fp32", "status": "ok", "dataset": "cifar10", "subset": subset, "train_size": train_size,
        "class_counts": {str(c): train_size // 10 for c in range(10)}, "seeds": list(range(len(per_seed))),
        "epochs": 3, "train_batch_size": 64, "top1": top1, "top5": min(100.0, top1 + 38.0),
        "macro_f1": round(top1 / 100 - 0.01, 4), "per_class_acc": [top1] * 10,
        "top1_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0, "top1_per_seed": per_seed,
        "epochs_to_target": None, "train_time_s": train_time, "train_ips": train_size * 3 / train_time,
        "peak_train_mem_bytes": int(BACKBONES[backbone][4] * 6 * 2**20), "curve": [],
    }
    return {"group": None, "name": f"test_train[{cid}]", "fullname": f"benchmarks/test_train.py::test_train[{cid}]",
            "params": {"case": cid}, "param": cid, "extra_info": extra, "options": {}, "stats": _stats([train_time])}


def plan_case(backbone: str, inference: tuple[int, int], train: tuple[int, int], *, device: str = "cpu",
              budget: int = 512 * 2**20) -> dict[str, Any]:
    """One batch-plan entry: (estimated, searched) largest batch for inference and for training."""
    family, *_ = BACKBONES[backbone]
    cid = f"{backbone}-{device}-32px-fp32"
    extra: dict[str, Any] = {
        "kind": "plan", "case_id": f"plan/{cid}", "backbone": backbone, "family": family, "edge": False, "device": device,
        "img_size": 32, "num_classes": 10, "precision": "fp32", "channels_last": False, "status": "ok", "plan_budget_bytes": budget,
    }
    for what, (estimated, searched) in (("inference", inference), ("train", train)):
        extra.update({
            f"plan_{what}_estimated_max_batch": estimated, f"plan_{what}_estimate_fits": True,
            f"plan_{what}_searched_max_batch": searched, f"plan_{what}_searched_over_estimate": searched / estimated,
            f"plan_{what}_per_sample_bytes": budget // (2 * searched), f"plan_{what}_fixed_bytes": budget // 2,
            f"plan_{what}_probe_batches": [1, 2],
        })
    return {"group": None, "name": f"test_batch_plan[{cid}]", "fullname": f"benchmarks/test_plan.py::test_batch_plan[{cid}]",
            "params": {"case": cid}, "param": cid, "extra_info": extra, "options": {}, "stats": _stats([12.0])}


def dense_case(backbone: str, dataset: str, per_seed: list[float], *, device: str = "cpu") -> dict[str, Any]:
    """One segmentation-probe entry: mIoU per seed on ``dataset`` (a ``voc:``/``ade:``/``segfolder:`` name)."""
    family, *_ = BACKBONES[backbone]
    cid = f"{backbone}-{dataset.split(':')[0]}-cpu-64px-fp32"
    extra: dict[str, Any] = {
        "kind": "dense", "case_id": f"dense/{cid}", "backbone": backbone, "family": family, "edge": False, "device": device,
        "batch_size": 1, "img_size": 64, "num_classes": 5, "precision": "fp32", "channels_last": False, "runtime": "eager",
        "dataset": dataset, "weights": None, "backbone_name": backbone, "status": "ok",
        "miou": float(np.mean(per_seed)), "miou_per_seed": per_seed, "pixel_acc": 89.6, "latency_p50_ms": 28.0,
    }
    return {"group": None, "name": f"test_dense[{cid}]", "fullname": f"benchmarks/test_dense.py::test_dense[{cid}]",
            "params": {"case": cid}, "param": cid, "extra_info": extra, "options": {}, "stats": _stats([90.0])}


# Schema 4: the settings each kind records (harness.contract.KINDS[kind].settings), as a default
# session on the Xeon resolves them: 4 threads, 1 s of rounds, no edge profile, no power sampling.
# Schemas 2-3 recorded "epochs 3" as epochs: 3 and had no tune/hflip (with_settings writes that shape).
SETTINGS: dict[str, dict[str, Any]] = {
    "inference": {"num_classes": 10, "threads": 4, "bench_time_s": 1.0, "edge_profile": None, "power": False},
    "train": {"threads": 4, "seeds": 3, "schedule": "epochs 3", "optimizer": "sgd", "lr": 0.025, "weight_decay": 5e-5,
              "label_smoothing": 0.1, "augment": ["standard"], "hflip": None, "early_stop": None, "val_fraction": None, "grad_accum": 1,
              "clip_grad": None, "tune": None, "edge_profile": None, "weights_sha256": None, "robustness": None},
    "plan": {"num_classes": 10, "plan_budget_bytes": 512 * 2**20, "edge_profile": None},
    "dense": {"threads": 4, "seeds": 2, "seg_steps": 300, "seg_layers": "last4", "tune": None, "bench_time_s": 1.0, "weights_sha256": None},
}


def with_settings(bench: dict[str, Any], *, schema: int = 3, **changes: Any) -> dict[str, Any]:
    """A copy of ``bench`` whose record carries the settings of ``schema`` (2, 3 or 4: the kind's
    defaults, ``changes`` applied; before 4, ``epochs=N`` stands for the schedule) and their digest."""
    from harness.contract import settings_digest  # imported here: `python synth.py` runs without the package
    from harness.results.schema import ADDED_AFTER_V2, ADDED_IN_V4, ADDED_IN_V5, RENAMED_IN_V4

    bench = copy.deepcopy(bench)
    extra = bench["extra_info"]
    kind = extra["kind"]
    added = {**(ADDED_AFTER_V2[kind] if schema == 2 else {}), **(ADDED_IN_V4[kind] if schema < 4 else {}), **(ADDED_IN_V5[kind] if schema < 5 else {})}
    settings = {**SETTINGS[kind], **changes}
    if schema < 4:
        for old, new in RENAMED_IN_V4[kind].items():
            value = settings.pop(new)
            settings[old] = changes.get(old, int(value.split()[1]) if isinstance(value, str) else value)
    extra["settings"] = {k: v for k, v in settings.items() if k not in added}
    extra["settings_digest"] = settings_digest(extra["settings"])
    return bench


def make_run(benchmarks: list[dict[str, Any]], key: str = CPU_KEY, failed: list[dict[str, Any]] | None = None, *, schema: int = 1,
             **machine: Any) -> dict[str, Any]:
    """A run document as the plugin writes it: ``machine`` overrides machine_info keys; ``failed``
    entries (benchmark dicts) go under ``backbone_bench.failed`` without stats, as failed cases do.
    ``schema >= 2`` gives every record without settings the defaults of :data:`SETTINGS` (without
    the keys schema 3 added, for 2)."""
    if schema >= 2:
        benchmarks = [b if "settings" in b["extra_info"] else with_settings(b, schema=schema) for b in benchmarks]
        failed = [f if "settings" in f["extra_info"] else with_settings(f, schema=schema) for f in failed or []]
    cuda = key == CUDA_KEY
    info = {
        "node": "bench-01", "processor": "x86_64", "machine": "x86_64", "python_implementation": "CPython",
        "python_version": "3.11.7", "system": "Linux", "release": "6.8.0", "baseline_key": key,
        "device_kind": "cuda" if cuda else "cpu", "cpu_model": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
        "gpu_name": "NVIDIA H100 80GB HBM3" if cuda else None, "torch": "2.5.1", "torchvision": "0.20.1",
        "timm": "1.0.11", "fvcore": "0.1.5.post20221221", "cuda": "12.4" if cuda else None, "jetson": None, "edge_profile": None,
    }
    info.update(machine)
    return {"machine_info": info, "commit_info": {"id": "3f2c1e0", "branch": "main", "dirty": False, "time": "2026-11-20T10:00:00+00:00"},
            "benchmarks": copy.deepcopy(benchmarks), "datetime": "2026-11-20T10:05:00+00:00", "version": "5.2.3",
            "backbone_bench": {"schema": schema, "failed": [{k: copy.deepcopy(f[k]) for k in ("name", "fullname", "extra_info")} for f in failed or []]}}


def full_run(seed: int, *, key: str = CPU_KEY, slow: dict[str, float] | None = None, top1_shift: float = 0.0) -> dict[str, Any]:
    """Every backbone's inference case plus 3-seed train cases; ``slow`` multiplies chosen latencies."""
    rng = np.random.default_rng(seed)
    speed = 0.25 if key == CUDA_KEY else 1.0  # an H100 at batch 1 is launch-bound, ~4x faster than the Xeon
    device = "cuda" if key == CUDA_KEY else "cpu"
    benches = [inference_case(b, latency_samples(rng, ms * speed * (slow or {}).get(b, 1.0)), device=device)
               for b, (_, _, _, ms, _) in BACKBONES.items()]
    if key == CPU_KEY:
        for b, accs in TOP1.items():
            for (label, size), acc in zip(SUBSETS, accs, strict=True):
                seeds = [round(float(acc + top1_shift + rng.normal(0, 0.6)), 2) for _ in range(3)]
                benches.append(train_case(b, label, size, seeds))
    return make_run(benches, key)


def other_tool_run() -> dict[str, Any]:
    """A genuine pytest-benchmark run of some other project: no backbone-bench extra_info."""
    doc = make_run([])
    doc["benchmarks"] = [{"group": None, "name": "test_parse_small", "fullname": "tests/test_parser.py::test_parse_small",
                          "params": None, "param": None, "extra_info": {}, "options": {}, "stats": _stats([0.0012, 0.0011, 0.0013])}]
    del doc["machine_info"]["baseline_key"]
    return doc


def main(out: Path) -> None:
    """Write the static fixtures used by test_runs.py and test_report.py."""
    files = {
        "run_cpu_base.json": full_run(1),
        "run_cpu_slow.json": full_run(2, slow={"efficientnet_b0": 1.25}),
        "run_cuda.json": full_run(3, key=CUDA_KEY),
        "other_tool.json": other_tool_run(),
    }
    for name, doc in files.items():
        (out / name).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
