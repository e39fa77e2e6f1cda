"""Lloyd step micro-benchmark on a GPU: the fused kernel, the array-generic CuPy step, the CPU, Flash-KMeans.

Times one Lloyd step (the part repeated every iteration: assignment, partial
sums and their reduction) per implementation and shape, after a warm-up,
with the device synchronised (CUDA events) before each timer stops; reports
the median. Beside each GPU time: the bandwidth floor, bytes the step must
read once over the measured device-to-device copy bandwidth.

``--grid`` then compares one whole iteration (``"timed": "iteration"``) of
the fused step (the step and the new centres) with one iteration of
Flash-KMeans (its FlashAssign and sorted centroid update), float32, over
n ∈ {10⁷, 10⁸} × d ∈ {3, 8, 16, 32} × k ∈ {5, 16, 64}: the same data and
initial centres, the same number of timed iterations, in the same process.
Labels of one iteration from those centres are compared; every disagreement
must be a near-tie (the two centres' squared distances within 1e-5 of the
norms involved). The staged candidate kernel is timed beside the fused step
(``"impl": "fused-staged"``) wherever its rows fit the shared memory. Cases
run until ``--budget-s`` seconds have passed; the results file is rewritten
after every case, so a run cut short keeps them.

Usage: python benchmarks/bench_lloyd_gpu.py --out results.json [--quick] [--grid] [--budget-s 150]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import ExitStack

import numpy as np


def bandwidth_gbs(cp, nbytes: int = 4 << 30, reps: int = 10) -> float:
    """Device-to-device copy, counting bytes read plus bytes written."""
    a = cp.random.default_rng(0).random(nbytes // 4, dtype=cp.float32)
    b = cp.empty_like(a)
    cp.copyto(b, a)
    times = []
    for _ in range(reps):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        cp.copyto(b, a)
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    del a, b
    return 2 * nbytes / statistics.median(times) / 1e9


def time_gpu(cp, fn, reps: int) -> float:
    fn()  # warm-up: compilation, allocations
    fn()
    times = []
    for _ in range(reps):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def time_cpu(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description="One Lloyd step on a CUDA GPU (needs CuPy): fused kernel, "
                                             "array-generic CuPy step, CPU step, and Flash-KMeans with --grid.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="smaller grid, for a second run")
    ap.add_argument("--grid", action="store_true", help="fused against Flash-KMeans over the issue's grid")
    ap.add_argument("--budget-s", type=float, default=float("inf"), help="start no case after this many seconds")
    args = ap.parse_args()
    try:
        import cupy as cp
    except ImportError as exc:
        raise SystemExit(f"bench_lloyd_gpu.py needs CuPy and a CUDA GPU: {exc}") from None

    from gpuseg.backend import gpu_description
    from gpuseg.cluster.fused import FusedStep, padded_width
    from gpuseg.cluster.host import host_step
    from gpuseg.cluster.steps import ChunkedStep, default_chunk_size
    deadline = time.monotonic() + args.budget_s

    bw = bandwidth_gbs(cp)
    print(f"device-to-device copy: {bw:.0f} GB/s", flush=True)
    shapes = [(100_000_000, 8, 16), (10_000_000, 8, 16), (10_000_000, 3, 5), (10_000_000, 32, 64),
              (1_000_000, 8, 16)]
    if args.quick:
        shapes = shapes[:3]
    cases = []
    result = {"device": gpu_description(cp), "bandwidth_gbs": bw, "cupy": cp.__version__, "cases": cases}

    def write() -> None:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)

    rng = cp.random.default_rng(1)
    for n, d, k in shapes:
        ld = padded_width(d, np.float32)
        Xd = rng.standard_normal((n, d), dtype=cp.float32)
        Cd = Xd[rng.integers(0, n, k)].copy()
        floor_ms = n * ld * 4 / (bw * 1e9) * 1e3
        fused = FusedStep(Xd, k)  # holds the padded (n, ld) layout: a copy when ld > d
        reps = 20 if n >= 10**8 else 50
        ms = time_gpu(cp, lambda: fused.partials(Cd), reps)
        cases.append({"impl": "fused", "n": n, "d": d, "k": k, "ms_per_iter": ms, "floor_ms": floor_ms,
                      "pct_of_floor": 100 * floor_ms / ms})
        print(f"fused    n={n:>11,} d={d:>2} k={k:>2}: {ms:8.3f} ms  (floor {floor_ms:.3f} ms, "
              f"{100 * floor_ms / ms:.0f}%)", flush=True)
        # Variants that change one stage, to place the time (see the kernel's modes).
        variants = [({"mode": 1}, "fused-atomics"), ({"mode": 2}, "fused-no-sums"),
                    ({"staged": True}, "fused-staged")]  # the candidate (FusedStep's staged kernel)
        if n >= 10**8:
            # At the headline shape: the sm_75 (shuffle) variant on this device, and the block size,
            # which sets how many float64 partials are written and reduced (for tuning, not defaults).
            variants += [({"variant": "shuffle"}, "fused-shuffle")]
            variants += [({"points_per_block": p}, f"fused-ppb-{p}") for p in (2048, 4096, 16384, 32768)]
        for options, label in variants:
            try:
                variant = FusedStep(Xd, k, **options)
            except ValueError as exc:  # the staged candidate where its rows do not fit
                print(f"{label:14s} n={n:>11,} d={d:>2} k={k:>2}: not run ({exc})", flush=True)
                continue
            vms = time_gpu(cp, lambda: variant.partials(Cd), reps)
            cases.append({"impl": label, "n": n, "d": d, "k": k, "ms_per_iter": vms, "floor_ms": floor_ms,
                          "pct_of_floor": 100 * floor_ms / vms})
            print(f"{label:14s} n={n:>11,} d={d:>2} k={k:>2}: {vms:8.3f} ms", flush=True)
            variant = None
        generic = ChunkedStep(Xd, default_chunk_size(cp, k, d), track_labels=False)
        ms = time_gpu(cp, lambda: generic.partials(Cd), 5 if n >= 10**8 else 10)
        cases.append({"impl": "generic", "n": n, "d": d, "k": k, "ms_per_iter": ms, "floor_ms": floor_ms,
                      "pct_of_floor": 100 * floor_ms / ms})
        print(f"generic  n={n:>11,} d={d:>2} k={k:>2}: {ms:8.3f} ms", flush=True)
        Xd = Cd = fused = generic = None  # free before the next shape
        cp.get_default_memory_pool().free_all_blocks()
        write()
    # The CPU step on this machine's cores, on a shape it can do in seconds.
    n, d, k = 10_000_000, 8, 16
    Xh = np.random.default_rng(2).standard_normal((d, n)).T  # feature-major, the layout a host fit uses
    Ch = Xh[:k].copy()
    with ExitStack() as stack:
        step = host_step(Xh, stack, k, track_labels=False)
        ms = time_cpu(lambda: step.partials(Ch), 3)
    cases.append({"impl": "cpu", "n": n, "d": d, "k": k, "ms_per_iter": ms, "threads": os.cpu_count()})
    print(f"cpu      n={n:>11,} d={d:>2} k={k:>2}: {ms:8.3f} ms  ({os.cpu_count()} threads, float64)", flush=True)
    Xh = Ch = None
    write()
    if args.grid:
        flash_grid(cp, bw, result, write, deadline)


GRID = [(n, d, k) for n in (10_000_000, 100_000_000) for d in (3, 8, 16, 32) for k in (5, 16, 64)]


def near_tie_check(cp, X, C, ours, theirs) -> dict:
    """Rows where two labelings differ, and how many of them are not near-ties."""
    rows = cp.flatnonzero(ours != theirs)
    if rows.size == 0:
        return {"labels_differ": 0, "labels_differ_not_near_tie": 0}
    x = X[rows].astype(cp.float64)
    c = C.astype(cp.float64)
    a, b = ours[rows].astype(cp.int64), theirs[rows].astype(cp.int64)
    da = ((x - c[a]) ** 2).sum(axis=1)
    db = ((x - c[b]) ** 2).sum(axis=1)
    # float32 distances by the expansion carry errors of the order of the norms involved.
    scale = (x * x).sum(axis=1) + cp.maximum((c[a] ** 2).sum(axis=1), (c[b] ** 2).sum(axis=1))
    near = cp.abs(da - db) <= 1e-5 * cp.maximum(scale, 1e-12)
    return {"labels_differ": int(rows.size), "labels_differ_not_near_tie": int((~near).sum())}


def flash_grid(cp, bw: float, result: dict, write, deadline: float) -> None:
    """One iteration of the fused step against one of Flash-KMeans over :data:`GRID`."""
    from gpuseg.bench import flash_kmeans_iteration, fused_iteration, probe_flash_kmeans
    from gpuseg.cluster.fused import FusedStep, padded_width

    flash, why = probe_flash_kmeans()
    result["flash_kmeans"] = {"available": flash is not None, "reason": why}
    if flash is not None:
        import importlib.metadata

        import torch
        import triton
        result["flash_kmeans"].update(version=importlib.metadata.version("flash-kmeans"), torch=torch.__version__,
                                      triton=triton.__version__)
    print(f"flash-kmeans: {'available' if flash is not None else why}", flush=True)
    cases = result["cases"]
    rng = cp.random.default_rng(3)
    # The headline shape first, then the rest in size order.
    grid = [(100_000_000, 8, 16)] + [g for g in GRID if g != (100_000_000, 8, 16)]
    for n, d, k in grid:
        if time.monotonic() > deadline:
            result.setdefault("grid_not_run", []).append({"n": n, "d": d, "k": k})
            continue
        X = rng.standard_normal((n, d), dtype=cp.float32)
        C = X[rng.integers(0, n, k)].copy()
        floor_ms = n * padded_width(d, np.float32) * 4 / (bw * 1e9) * 1e3
        reps = 10 if n >= 10**8 else 20
        fused = FusedStep(X, k)
        ms = time_gpu(cp, lambda: fused_iteration(fused, C), reps)
        cases.append({"impl": "fused", "timed": "iteration", "n": n, "d": d, "k": k, "ms_per_iter": ms,
                      "floor_ms": floor_ms, "pct_of_floor": 100 * floor_ms / ms})
        line = f"grid n={n:>11,} d={d:>2} k={k:>2}: fused {ms:8.3f} ms"
        try:  # the staged candidate, where its rows fit
            staged = FusedStep(X, k, staged=True)
        except ValueError:
            staged = None
        if staged is not None:
            sms = time_gpu(cp, lambda: fused_iteration(staged, C), reps)
            cases.append({"impl": "fused-staged", "timed": "iteration", "n": n, "d": d, "k": k, "ms_per_iter": sms,
                          "floor_ms": floor_ms, "pct_of_floor": 100 * floor_ms / sms})
            line += f", staged {sms:8.3f} ms"
            staged = None
        if flash is not None:
            try:
                iterate, labels = flash_kmeans_iteration(flash, X, C)
                fms = time_gpu(cp, iterate, reps)
                check = near_tie_check(cp, X, C, fused.assign(C)[0], labels())
                cases.append({"impl": "flash-kmeans", "timed": "iteration", "n": n, "d": d, "k": k,
                              "ms_per_iter": fms, "floor_ms": floor_ms, "pct_of_floor": 100 * floor_ms / fms,
                              "fused_over_flash": ms / fms, **check})
                line += f", flash-kmeans {fms:8.3f} ms, fused/flash {ms / fms:.2f}, labels differ " \
                        f"{check['labels_differ']} ({check['labels_differ_not_near_tie']} not near-ties)"
            except Exception as exc:  # a shape the peer cannot run is recorded, not fatal
                cases.append({"impl": "flash-kmeans", "timed": "iteration", "n": n, "d": d, "k": k,
                              "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                line += f", flash-kmeans failed: {type(exc).__name__}"
            iterate = labels = None
        print(line, flush=True)
        X = C = fused = None
        cp.get_default_memory_pool().free_all_blocks()
        if flash is not None:
            import torch
            torch.cuda.empty_cache()
        write()


if __name__ == "__main__":
    main()
