"""Lloyd step micro-benchmark on a GPU: the fused kernel, the array-generic CuPy step, the CPU.

Times one Lloyd step (the part repeated every iteration: assignment, partial
sums and their reduction) per implementation and shape, after a warm-up,
with the device synchronised (CUDA events) before each timer stops; reports
the median. Beside each GPU time: the bandwidth floor, bytes the step must
read once over the measured device-to-device copy bandwidth.

Usage: python benchmarks/bench_lloyd_gpu.py --out results.json [--quick]
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
    import cupy as cp

    from gpuseg.backend import gpu_description
    from gpuseg.cluster.fused import FusedStep, padded_width
    from gpuseg.cluster.steps import ChunkedStep, chunked_step, default_chunk_size

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="smaller grid, for a second run")
    args = ap.parse_args()

    bw = bandwidth_gbs(cp)
    print(f"device-to-device copy: {bw:.0f} GB/s", flush=True)
    shapes = [(100_000_000, 8, 16), (10_000_000, 8, 16), (10_000_000, 3, 5), (10_000_000, 32, 64),
              (1_000_000, 8, 16)]
    if args.quick:
        shapes = shapes[:3]
    cases = []
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
        for mode, label in ((1, "fused-atomics"), (2, "fused-no-sums")):
            variant = FusedStep(Xd, k, mode=mode)
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
    # The CPU step on this machine's cores, on a shape it can do in seconds.
    n, d, k = 10_000_000, 8, 16
    Xh = np.random.default_rng(2).standard_normal((n, d))
    Ch = Xh[:k].copy()
    with ExitStack() as stack:
        step = chunked_step(Xh, stack, k, track_labels=False)
        ms = time_cpu(lambda: step.partials(Ch), 3)
    cases.append({"impl": "cpu", "n": n, "d": d, "k": k, "ms_per_iter": ms, "threads": os.cpu_count()})
    print(f"cpu      n={n:>11,} d={d:>2} k={k:>2}: {ms:8.3f} ms  ({os.cpu_count()} threads, float64)", flush=True)
    result = {"device": gpu_description(cp), "bandwidth_gbs": bw, "cupy": cp.__version__,
              "cases": cases}
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
