"""Step 6, batch planning on CUDA: ``pytest benchmarks -m plan --plan-budget 4GiB``.

For a CNN and a ViT at 224 px the suite fits fixed + per-sample bytes (``max_memory_allocated``
over one forward, or over the engine's profiled optimiser step) on two probe batches, plans for
90% of the budget, runs the estimate, and searches the true largest batch. Reported: estimate
against searched maximum, and whether the estimate fits; the case itself fails when the
estimate does not fit or the search finds more than twice the estimate.
"""

from __future__ import annotations

from gpu_proof_steps.common import MIN_SESSION_S, StepContext, pytest_session

BUDGET = "4GiB"
SESSION_SHARE_S = 50.0


def run(ctx: StepContext) -> None:
    backbones, size, budget = ("resnet18,deit_small_patch16_224", "224", BUDGET) if not ctx.rehearse else ("resnet18", "32", "256MiB")
    values: dict[str, str | bool | None] = {
        "backbones": backbones, "img-sizes": size, "precisions": "fp32", "devices": ctx.device, "plan-budget": budget,
    }
    session = pytest_session(ctx, "plan", ["-m", "plan"], values)
    ctx.require_cuda()

    seconds = ctx.budget(SESSION_SHARE_S)
    if seconds < MIN_SESSION_S:
        ctx.unproven("the plan session did not run: step cap reached")
        return
    session.run(seconds)
    ctx.figures["session"] = session.summary()
    if session.problem():
        ctx.unproven(str(session.problem()))
    rows = []
    for case_id, record in session.cases.items():
        row = {"case": case_id, "status": record.get("status"), "error": record.get("error"), "budget_bytes": record.get("plan_budget_bytes")}
        for what in ("inference", "train"):
            for key in ("estimated_max_batch", "searched_max_batch", "estimate_fits", "searched_over_estimate", "per_sample_bytes", "fixed_bytes", "probe_batches"):
                row[f"{what}_{key}"] = record.get(f"plan_{what}_{key}")
        rows.append(row)
        ctx.log("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
        for what in ("inference", "train"):
            ratio = row[f"{what}_searched_over_estimate"]
            if row["status"] == "ok" and row[f"{what}_searched_max_batch"] == 0:  # not even the least batch fits: as test_batch_plan judges it
                ctx.check(f"{case_id} {what}: no batch fits, and the estimate says so", row[f"{what}_estimated_max_batch"] == 0,
                          f"estimate {row[f'{what}_estimated_max_batch']}, searched 0", "estimate 0")
                continue
            ok = row["status"] == "ok" and bool(row[f"{what}_estimate_fits"]) and isinstance(ratio, float) and 1.0 <= ratio <= 2.0
            ctx.check(f"{case_id} {what}: estimate fits, searched/estimate in [1, 2]", ok,
                      f"estimate {row[f'{what}_estimated_max_batch']}, searched {row[f'{what}_searched_max_batch']}, ratio {ratio}", "fits; 1.0-2.0")
    ctx.figures["rows"] = rows
