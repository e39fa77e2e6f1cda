"""`gpuseg segment` on a GPU against `--backend cpu` on the same machine.

Generates (or reuses) a log of N transactions, then runs the pipeline in
this process: a small warm-up run on the GPU (CUDA context, kernel
compilation), the GPU run, and the CPU run on all cores. Reports stage
timings, the GPU stages (features through assign) against the same CPU
stages, end to end, and checks the answer: adjusted Rand index of the
assignments and the inertia of both.

Usage: python benchmarks/bench_pipeline_gpu.py --rows 1e8 --data DIR --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    import pyarrow.parquet as pq
    from sklearn.metrics import adjusted_rand_score

    from gpuseg.config import SegmentConfig
    from gpuseg.generate import write_log
    from gpuseg.pipeline import run

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=float, default=1e8)
    ap.add_argument("--data", default="/tmp/gpuseg-bench")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = int(args.rows)
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"tx-{rows:.0e}.parquet".replace("+", "")
    t0 = time.perf_counter()
    if not path.exists():
        write_log(path, rows, rows // 10, seed=0, dirty=0.001, workers=min(os.cpu_count() or 1, 16))
    gen_s = time.perf_counter() - t0
    print(f"data: {path} ({rows:,} rows, generated in {gen_s:.1f} s)", flush=True)

    run(SegmentConfig(out=data / "warmup", backend="cupy", demo_customers=5_000))
    results = {}
    for backend in ("cupy", "cpu"):
        t0 = time.perf_counter()
        r = run(SegmentConfig(inputs=(str(path),), out=data / backend, backend=backend))
        wall = time.perf_counter() - t0
        rep = r.report
        results[backend] = {"wall_s": wall, "timings": rep["timings"], "n_customers": rep["n_customers"],
                            "inertia": rep["inertia"], "n_iter": rep["n_iter"], "engine": rep["engine"],
                            "precision": rep["precision"], "device": rep["device"],
                            "transfers": rep["transfers"], "fallbacks": rep["fallbacks"]}
        print(f"{backend}: {wall:.2f} s  {rep['timings']}", flush=True)
    stages = ("features", "scale", "fit", "assign")
    gpu_s = sum(results["cupy"]["timings"][s] for s in stages)
    cpu_s = sum(results["cpu"]["timings"][s] for s in stages)
    a = pq.read_table(data / "cpu" / "assignments.parquet").column("segment").to_numpy()
    b = pq.read_table(data / "cupy" / "assignments.parquet").column("segment").to_numpy()
    summary = {
        "rows": rows, "stages": list(stages), "gpu_stages_s": gpu_s, "cpu_stages_s": cpu_s,
        "stage_speedup": cpu_s / gpu_s, "end_to_end_speedup": results["cpu"]["wall_s"] / results["cupy"]["wall_s"],
        "ari_gpu_vs_cpu": float(adjusted_rand_score(a, b)), "cpu_cores": os.cpu_count(),
        "runs": results,
    }
    print(f"features..assign: GPU {gpu_s:.3f} s vs CPU {cpu_s:.3f} s -> {cpu_s / gpu_s:.1f}x; "
          f"end to end {summary['end_to_end_speedup']:.2f}x; ARI {summary['ari_gpu_vs_cpu']:.4f}", flush=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
