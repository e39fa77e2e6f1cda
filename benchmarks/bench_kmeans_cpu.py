"""gpuseg.KMeans.fit against scikit-learn's KMeans.fit on the CPU, from the same initial centres.

Both fit the same float64 data from the same k-means++ centres (drawn once,
as gpuseg and scikit-learn draw them), with ``n_init=1``, ``max_iter=300``,
``tol=1e-4`` and every core (scikit-learn's OpenMP threads, gpuseg's thread
pool). The two run interleaved in one process, alternating which goes first,
after one untimed warm-up round; the result is the median of each and the
median of the per-round ratios. Every round checks that labels and n_iter
are identical and the inertias agree.

Shapes (the issue's): ``blobs``, 10⁶ × 6, k = 8 (Gaussian clusters), and
``rfm``, 10⁶ × 3, k = 5 (recency, frequency, monetary drawn as skewed retail
features, log1p and standardised the way gpuseg scales them).

``--reference COMMIT`` also fits with gpuseg as it was at COMMIT (its
``gpuseg/`` exported with ``git archive`` into a temporary folder and run in a
subprocess on the same data) and checks that labels and n_iter are unchanged.

Usage: python benchmarks/bench_kmeans_cpu.py --out results/cpu-kmeans.json [--rounds 7] [--reference SHA]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"blobs": (1_000_000, 6, 8), "rfm": (1_000_000, 3, 5)}


def make_data(shape: str, seed: int = 0) -> tuple[np.ndarray, int]:
    n, d, k = SHAPES[shape]
    rng = np.random.default_rng(seed)
    if shape == "blobs":
        centres = rng.normal(0, 2.0, (k, d))
        return centres[rng.integers(0, k, n)] + rng.normal(0, 1.5, (n, d)), k
    frequency = rng.negative_binomial(1.2, 0.25, n) + 1
    recency = rng.exponential(120, n) / np.sqrt(frequency)
    monetary = frequency * rng.lognormal(3.5, 0.8, n)
    X = np.log1p(np.stack([recency, frequency, monetary], axis=1))
    return (X - X.mean(axis=0)) / X.std(axis=0), k


def initial_centres(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    from gpuseg.cluster.init import check_random_state, kmeans_plusplus
    mean = X.mean(axis=0)
    return kmeans_plusplus(X - mean, k, check_random_state(seed)) + mean


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fit_sklearn(X: np.ndarray, init: np.ndarray, threads: int):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=threads, user_api="openmp"):
        km = KMeans(init.shape[0], init=init, n_init=1, max_iter=300, tol=1e-4).fit(X)
    return km.labels_, int(km.n_iter_), float(km.inertia_)


def fit_gpuseg(X: np.ndarray, init: np.ndarray, threads: int):
    import gpuseg
    km = gpuseg.KMeans(init.shape[0], init=init, n_init=1, max_iter=300, tol=1e-4, n_threads=threads).fit(X)
    return km.labels_, int(km.n_iter_), float(km.inertia_)


def reference_fit(commit: str, X: np.ndarray, init: np.ndarray, threads: int) -> tuple[np.ndarray, int, float]:
    """gpuseg.KMeans at ``commit``, in a subprocess, on the same data."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "gpuseg"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        np.save(Path(tmp) / "X.npy", X)
        np.save(Path(tmp) / "init.npy", init)
        module = "gpuseg.estimator" if (src / "gpuseg" / "estimator.py").exists() else "gpuseg.cluster.estimator"
        code = (f"import sys, numpy as np\nfrom {module} import KMeans\n"
                "X = np.load(sys.argv[1]); init = np.load(sys.argv[2])\n"
                f"km = KMeans(init.shape[0], init=init, n_init=1, max_iter=300, tol=1e-4, n_threads={threads}).fit(X)\n"
                "np.save(sys.argv[3], km.labels_); print(km.n_iter_, repr(km.inertia_))\n")
        env = {**os.environ, "PYTHONPATH": str(src)}
        out = subprocess.run([sys.executable, "-c", code, str(Path(tmp) / "X.npy"), str(Path(tmp) / "init.npy"),
                              str(Path(tmp) / "labels.npy")], capture_output=True, text=True, env=env, cwd=tmp)
        if out.returncode:
            raise RuntimeError(f"gpuseg at {commit} failed:\n{out.stderr}")
        n_iter, inertia = out.stdout.split()
        return np.load(Path(tmp) / "labels.npy"), int(n_iter), float(inertia)


def run_shape(shape: str, rounds: int, threads: int, reference: str | None) -> dict:
    X, k = make_data(shape)
    init = initial_centres(X, k)
    runners = {"gpuseg": fit_gpuseg, "sklearn": fit_sklearn}
    times: dict[str, list[float]] = {name: [] for name in runners}
    ratios, checks = [], []
    for r in range(rounds + 1):  # round 0 is the warm-up
        order = list(runners) if r % 2 else list(reversed(runners))
        got = {}
        for name in order:
            t0 = time.perf_counter()
            got[name] = runners[name](X, init, threads)
            elapsed = time.perf_counter() - t0
            if r:
                times[name].append(elapsed)
        (lg, ig, eg), (ls, is_, es) = got["gpuseg"], got["sklearn"]
        checks.append({"labels_equal": bool(np.array_equal(lg, ls)), "n_iter": [ig, is_],
                       "inertia_rel_diff": abs(eg - es) / es})
        if r:
            ratios.append(times["gpuseg"][-1] / times["sklearn"][-1])
        print(f"{shape} round {r}{' (warm-up)' if not r else ''}: "
              + ", ".join(f"{n} {times[n][-1]:.3f} s" if r else n for n in order)
              + f"; labels equal {checks[-1]['labels_equal']}, n_iter {ig}/{is_}", flush=True)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    result = {"shape": shape, "n": X.shape[0], "d": X.shape[1], "k": k, "threads": threads, "rounds": rounds,
              "seconds": times, "median_s": med, "min_s": {n: min(ts) for n, ts in times.items()},
              "ratio_of_medians": med["gpuseg"] / med["sklearn"], "median_ratio": statistics.median(ratios),
              "labels_equal_every_round": all(c["labels_equal"] for c in checks),
              "n_iter": checks[-1]["n_iter"], "max_inertia_rel_diff": max(c["inertia_rel_diff"] for c in checks)}
    if reference:
        labels_ref, n_iter_ref, inertia_ref = reference_fit(reference, X, init, threads)
        labels_now, n_iter_now, inertia_now = fit_gpuseg(X, init, threads)
        result["reference"] = {"commit": reference, "labels_equal": bool(np.array_equal(labels_ref, labels_now)),
                               "n_iter": [n_iter_now, n_iter_ref],
                               "inertia_rel_diff": abs(inertia_now - inertia_ref) / inertia_ref}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shapes", default="blobs,rfm")
    ap.add_argument("--reference", help="a commit whose gpuseg must give the same labels and n_iter")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import sklearn

    load_before = os.getloadavg()
    t0 = time.time()
    cases = [run_shape(s, args.rounds, args.threads, args.reference) for s in args.shapes.split(",")]
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "cpu": cpu_model(),
              "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
              "sklearn": sklearn.__version__, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "cases": cases}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for c in cases:
        print(f"{c['shape']} {c['n']:,}x{c['d']} k={c['k']}: gpuseg {c['median_s']['gpuseg']:.3f} s, "
              f"sklearn {c['median_s']['sklearn']:.3f} s, ratio of medians {c['ratio_of_medians']:.2f} "
              f"(median ratio {c['median_ratio']:.2f}); labels equal {c['labels_equal_every_round']}, "
              f"n_iter {c['n_iter']}" + (f"; against {c['reference']['commit'][:10]}: labels equal "
                                          f"{c['reference']['labels_equal']}, n_iter {c['reference']['n_iter']}"
                                          if "reference" in c else ""))


if __name__ == "__main__":
    main()
