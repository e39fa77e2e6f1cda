"""`gpuseg segment --backend cpu` against the pipelines a user would otherwise write.

Generates (once, cached under benchmarks/data/) a Parquet log of N rows for
N/10 customers, then runs, interleaved and each as a fresh process:
`gpuseg segment --backend cpu`, pandas + scikit-learn, polars + scikit-learn
(benchmarks/peers.py: same feature definitions, same transform, k=5). Wall
time and peak resident memory come from the child's rusage; medians over the
repeats are reported with the ratios, and the answers are checked: features
equal, adjusted Rand index of the segments, inertia of each in the same
scaled space.

Then `gpuseg.KMeans.fit` against `sklearn.cluster.KMeans.fit` on gpuseg's
scaled feature matrix from the same k-means++ centres, interleaved.

Usage: python benchmarks/bench_pipeline.py [--rows 1e7] [--repeats 3] [--out benchmarks/results/cpu-pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MiB) of that child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return wall, usage.ru_maxrss / 1024


def machine() -> dict:
    import pyarrow
    import sklearn
    from gpuseg.backend import cpu_description
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {"python": platform.python_version(), "numpy": np.__version__, "pyarrow": pyarrow.__version__,
                "scikit-learn": sklearn.__version__}
    for mod in ("pandas", "polars"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {"cpu": cpu_description(), "memory_gib": round(mem, 1), "versions": versions}


def inertia_of(Z: np.ndarray, labels: np.ndarray) -> float:
    k = labels.max() + 1
    centers = np.stack([Z[labels == j].mean(axis=0) for j in range(k)])
    return float(((Z - centers[labels]) ** 2).sum())


def main() -> None:
    import pyarrow.parquet as pq
    from sklearn.metrics import adjusted_rand_score

    from gpuseg.generate import write_log
    from gpuseg.model import SegmentModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "cpu-pipeline.json"))
    args = ap.parse_args()
    rows = int(args.rows)
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    path = data / f"tx-{rows:.0e}.parquet".replace("+0", "").replace("+", "")
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        write_log(path, rows, rows // 10, seed=0, dirty=0.002)
    work = Path(tempfile.mkdtemp(prefix="gpuseg-bench-"))
    gpuseg_cli = [sys.executable, "-m", "gpuseg.cli"]
    runners = {
        "gpuseg --backend cpu": gpuseg_cli + ["segment", str(path), "--backend", "cpu", "--k", "5", "-q",
                                              "--out", str(work / "gpuseg")],
        "pandas + sklearn": [sys.executable, str(HERE / "peers.py"), "pandas", str(path), str(work / "pandas.parquet")],
        "polars + sklearn": [sys.executable, str(HERE / "peers.py"), "polars", str(path), str(work / "polars.parquet")],
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    peaks: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(args.repeats + 1):  # the first round warms the file cache and is not counted
        for name, cmd in runners.items():
            wall, peak = run_measured(cmd)
            if r:
                times[name].append(wall)
                peaks[name].append(peak)
            print(f"round {r} {name:22s} {wall:6.2f} s  {peak:7.0f} MiB", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}

    # Check the answers: same features, same segments up to relabelling, inertia in one space.
    feats = pq.read_table(work / "gpuseg" / "features.parquet").to_pandas().set_index("customer_id")
    ours = pq.read_table(work / "gpuseg" / "assignments.parquet").to_pandas().set_index("customer_id")
    model = SegmentModel.load(work / "gpuseg" / "model.json")
    Z = model.scaler.transform(feats[list(model.features)].to_numpy(np.float64))
    checks = {"gpuseg": {"inertia": inertia_of(Z, ours["segment"].to_numpy())}}
    for peer in ("pandas", "polars"):
        p = pq.read_table(work / f"{peer}.parquet").to_pandas().set_index("customer_id")
        same_ids = bool(p.index.equals(feats.index))
        max_diff = {c: float(np.abs(p[c].to_numpy() - feats[c].to_numpy()).max()) for c in model.features} if same_ids else None
        checks[peer] = {"same_customers": same_ids, "max_feature_diff": max_diff,
                        "ari_vs_gpuseg": float(adjusted_rand_score(ours["segment"], p["segment"])),
                        "inertia": inertia_of(Z, p["segment"].to_numpy())}

    # KMeans.fit against scikit-learn on the same matrix and initial centres.
    from sklearn.cluster import KMeans as SKKMeans

    from gpuseg import KMeans
    from gpuseg.clustering import check_random_state, kmeans_plusplus
    Zc = Z - Z.mean(axis=0)
    init = kmeans_plusplus(Zc, 5, check_random_state(0)) + Z.mean(axis=0)
    fit_times = {"gpuseg.KMeans": [], "sklearn.KMeans": []}
    fits = {}
    for r in range(args.repeats + 3):
        for name, est in (("gpuseg.KMeans", KMeans(5, init=init)), ("sklearn.KMeans", SKKMeans(5, init=init, n_init=1))):
            t0 = time.perf_counter()
            fits[name] = est.fit(Z)
            if r:
                fit_times[name].append(time.perf_counter() - t0)
    fit_med = {name: statistics.median(v) for name, v in fit_times.items()}
    a, b = fits["gpuseg.KMeans"], fits["sklearn.KMeans"]
    kmeans = {"n": int(Z.shape[0]), "d": int(Z.shape[1]), "k": 5, "median_s": fit_med,
              "ratio": fit_med["gpuseg.KMeans"] / fit_med["sklearn.KMeans"],
              "n_iter": {"gpuseg": int(a.n_iter_), "sklearn": int(b.n_iter_)},
              "labels_equal": bool(np.array_equal(a.labels_, b.labels_)),
              "inertia_rel_diff": abs(a.inertia_ - b.inertia_) / b.inertia_}

    result = {"machine": machine(), "rows": rows, "customers": rows // 10, "repeats": args.repeats,
              "median_wall_s": med, "median_peak_mib": {n: statistics.median(v) for n, v in peaks.items()},
              "all_wall_s": times, "ratios": {"gpuseg/polars": med["gpuseg --backend cpu"] / med["polars + sklearn"],
                                              "gpuseg/pandas": med["gpuseg --backend cpu"] / med["pandas + sklearn"]},
              "checks": checks, "kmeans_fit": kmeans}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)

    print(f"\n| pipeline ({rows:,} rows) | median wall (s) | vs gpuseg | peak RSS (MiB) |")
    print("|---|---:|---:|---:|")
    for name in runners:
        print(f"| {name} | {med[name]:.2f} | {med[name] / med['gpuseg --backend cpu']:.2f}x | "
              f"{result['median_peak_mib'][name]:.0f} |")
    print(f"\ngpuseg/polars = {result['ratios']['gpuseg/polars']:.2f}, gpuseg/pandas = {result['ratios']['gpuseg/pandas']:.2f}")
    print(f"KMeans.fit n={kmeans['n']:,}: gpuseg {fit_med['gpuseg.KMeans']:.3f} s, sklearn {fit_med['sklearn.KMeans']:.3f} s "
          f"(ratio {kmeans['ratio']:.2f}); labels equal: {kmeans['labels_equal']}, n_iter {kmeans['n_iter']}")
    print(json.dumps(checks, indent=1))


if __name__ == "__main__":
    main()
