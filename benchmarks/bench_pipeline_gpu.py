"""The GPU node check of issue 9: `gpuseg segment --backend cupy` against `--backend cpu`
and polars + scikit-learn on the same node, 10⁸ transactions, each a fresh process.

Data: ``gpuseg generate --transactions ROWS --customers ROWS/10`` (Parquet),
made once under ``--data``. First one untimed warm-up of every runner on a
small log (CUDA context and CuPy's on-disk kernel cache, imports in the file
cache), then ``--repeats`` interleaved rounds of the timed runs. Wall clock
includes start-up; gpuseg's stage timings come from its report.json; the
peer (benchmarks/peers.py) reports its import and compute seconds apart.

Checks: adjusted Rand index of the cupy run against the cpu run (and the
peer), features of the peer against the cpu run, and the inertia of each
labelling in gpuseg's scaled space (the cpu run's model.json).

Writes ``OUT_DIR/gpu-pipeline-<device>.json``::

    {"device", "rows", "cpu_cores",
     "runs": {"gpuseg-cupy": {"wall_s", "timings", ...}, "gpuseg-cpu": {"wall_s", "timings", ...},
              "polars+sklearn": {"wall_s", "import_s", "compute_s", ...}},
     "ari_gpu_vs_cpu", "inertia", ...}

With ``--retail-rows N`` the same runs on benchmarks/retail_log.py's
retailer-shaped log of N rows, under "retail"; with ``--cdnow-rows N`` on the
real CDNOW purchases tiled to N rows (benchmarks/cdnow_log.py; it needs the
Lifetimes wheel or package), under "cdnow". ``--backends cpu,polars``
leaves the GPU out, so the script can be tried on a machine without one.

Usage: python benchmarks/bench_pipeline_gpu.py [--rows 1e8] [--data /tmp/gpuseg-bench] [--out-dir benchmarks/results]
           [--backends cupy,cpu,polars] [--repeats 1] [--retail-rows 0] [--cdnow-rows 0] [--timeout 240]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_pipeline import COLUMNS, FEATURES, inertia_of, machine, run_measured, scaled, tag  # noqa: E402

RUNNERS = {"cupy": "gpuseg-cupy", "cpu": "gpuseg-cpu", "polars": "polars+sklearn"}


def device_name() -> str | None:
    """The GPU's name from nvidia-smi, else from the CuPy that gpuseg would import (the
    CuPy emulator of a dry run names itself), else None."""
    for cmd in (["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                [sys.executable, "-c", "import cupy; n = cupy.cuda.runtime.getDeviceProperties(0)['name']; "
                                       "print(n.decode() if isinstance(n, bytes) else n)"]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0].strip()
    return None


def slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the results files' names)."""
    return re.sub(r"[^a-z0-9]+", "-", name.split("(")[0].strip().lower()).strip("-")


def gpuseg_exe() -> list[str]:
    exe = Path(sys.executable).parent / "gpuseg"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gpuseg.cli"]


def command(runner: str, path: Path, out: Path, kind: str) -> list[str]:
    if runner in ("cupy", "cpu"):
        return gpuseg_exe() + ["segment", str(path), "--backend", runner, "-q", "--k", "5", "--out", str(out)] + \
            COLUMNS[kind][0]
    return [sys.executable, str(HERE / "peers.py"), "polars", str(path), str(out), "--k", "5"] + COLUMNS[kind][1]


def measure(runner: str, path: Path, work: Path, kind: str, timeout: float) -> dict[str, Any]:
    out = work / runner
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    r = run_measured(command(runner, path, out, kind), timeout, cwd=work)
    stdout = r.pop("stdout")
    if "error" in r:
        return r
    if runner == "polars":
        line = json.loads(stdout.strip().splitlines()[-1])
        r["import_s"], r["compute_s"], r["imports"] = line["import_s"], line["compute_s"], line.get("imports")
        r["startup_s"] = r["wall_s"] - r["import_s"] - r["compute_s"]
    else:
        rep = json.loads((out / "report.json").read_text())
        r["timings"] = rep["timings"]
        r["startup_s"] = r["wall_s"] - rep["timings"]["total"]
        r["report"] = {key: rep.get(key) for key in ("engine", "precision", "device", "fallbacks", "transfers",
                                                     "n_customers", "n_iter", "inertia", "rows")}
    return r


def generate(kind: str, rows: int, folder: Path, timeout: float) -> tuple[Path, float | None]:
    """The log (made if missing) and the seconds making it took (None when it existed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{tag(rows)}.parquet"
    if path.exists():
        return path, None
    part = path.with_suffix(".part.parquet")
    if kind == "gpuseg":
        cmd = gpuseg_exe() + ["generate", "--transactions", str(rows), "--customers", str(max(1, rows // 10)),
                              "--out", str(part), "-q"]
    else:
        cmd = [sys.executable, str(HERE / f"{kind}_log.py"), "--rows", str(rows), "--out", str(part)]
    t0 = time.perf_counter()
    r = run_measured(cmd, timeout)
    if "error" in r:
        raise SystemExit(f"could not generate {path}: {r['error']}")
    part.rename(path)
    return path, time.perf_counter() - t0


def _by_customer(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq
    t = pq.read_table(path, columns=["customer_id"] + columns)
    ids = t.column("customer_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    return {"customer_id": ids[order], **{c: t.column(c).to_numpy()[order] for c in columns}}


def checks(work: Path, runners: list[str]) -> dict[str, Any]:
    """ARI of the cupy run (and the peer) against the cpu run; inertia of each in gpuseg's scaled space."""
    from sklearn.metrics import adjusted_rand_score
    ref = "cpu" if (work / "cpu" / "model.json").exists() else "cupy"
    if not (work / ref / "model.json").exists():
        return {"error": "no gpuseg run finished; nothing to check"}
    feats = _by_customer(work / ref / "features.parquet", list(FEATURES))
    X = np.stack([feats[c].astype(np.float64) for c in FEATURES], axis=1)
    Z = scaled(work / ref / "model.json", X)
    labels: dict[str, np.ndarray] = {}
    result: dict[str, Any] = {"reference": RUNNERS[ref], "inertia": {}, "same_customers": {}}
    for runner in runners:
        if runner in ("cupy", "cpu"):
            path, cols = work / runner / "assignments.parquet", ["segment"]
        else:
            path, cols = work / runner, ["segment"] + list(FEATURES)
        if not path.exists():
            continue
        got = _by_customer(path, cols)
        same = bool(np.array_equal(got["customer_id"], feats["customer_id"]))
        result["same_customers"][RUNNERS[runner]] = same
        if not same:
            continue
        labels[runner] = got["segment"]
        result["inertia"][RUNNERS[runner]] = inertia_of(Z, got["segment"])
        if runner == "polars":
            result["peer_max_abs_feature_diff"] = {
                c: float(np.abs(got[c].astype(np.float64) - feats[c].astype(np.float64)).max()) for c in FEATURES}
    if "cupy" in labels and "cpu" in labels:
        result["ari_gpu_vs_cpu"] = float(adjusted_rand_score(labels["cpu"], labels["cupy"]))
    for runner in ("cupy", "cpu"):
        if runner in labels and "polars" in labels:
            result[f"ari_{runner}_vs_polars"] = float(adjusted_rand_score(labels[runner], labels["polars"]))
    return result


def bench_log(kind: str, rows: int, args: argparse.Namespace, runners: list[str], work: Path,
              sink: dict[str, Any]) -> dict[str, Any]:
    """Warm-up, timed rounds and checks on one log; ``sink["raw_runs"]`` grows run by run (kept if cut short)."""
    raw = sink.setdefault("raw_runs", [])
    data = Path(args.data)
    path, gen_s = generate(kind, rows, data, timeout=args.gen_timeout)
    print(f"{kind} log: {path} ({rows:,} rows" + (f", generated in {gen_s:.1f} s)" if gen_s else ", cached)"),
          flush=True)
    small, _ = generate(kind, 10**6, data, timeout=args.gen_timeout)
    for runner in runners:  # untimed: CUDA context, kernel cache, imports
        r = measure(runner, small, work, kind, args.timeout)
        print(f"warm-up {RUNNERS[runner]:15s} {r['wall_s']:7.2f} s" + (f"  ERROR {r['error']}" if "error" in r else ""),
              flush=True)
    walls: dict[str, list[dict]] = {r: [] for r in runners}
    for rnd in range(1, args.repeats + 1):
        for runner in runners:
            r = measure(runner, path, work, kind, args.timeout)
            walls[runner].append(r)
            raw.append({"round": rnd, "runner": RUNNERS[runner], **r})
            detail = (f" compute {r['compute_s']:.2f} s import {r['import_s']:.2f} s" if "compute_s" in r
                      else f" {r['timings']}" if "timings" in r else "")
            print(f"round {rnd} {RUNNERS[runner]:15s} {r['wall_s']:7.2f} s {r['peak_rss_mib']:7.0f} MiB{detail}"
                  + (f"  ERROR {r['error'][:500]}" if "error" in r else ""), flush=True)
    runs: dict[str, Any] = {}
    for runner, rs in walls.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            runs[RUNNERS[runner]] = {"wall_s": None, "errors": [r["error"] for r in rs]}
            continue
        best = sorted(ok, key=lambda r: r["wall_s"])[(len(ok) - 1) // 2]  # the median run (lower middle)
        entry = {"wall_s": statistics.median(r["wall_s"] for r in ok), "all_wall_s": [r["wall_s"] for r in ok],
                 "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in ok), "startup_s": best["startup_s"]}
        if runner == "polars":
            entry.update(import_s=statistics.median(r["import_s"] for r in ok),
                         compute_s=statistics.median(r["compute_s"] for r in ok))
        else:
            entry.update(timings=best["timings"], report=best["report"])
        if len(ok) < len(rs):
            entry["errors"] = [r["error"] for r in rs if "error" in r]
        runs[RUNNERS[runner]] = entry
    result: dict[str, Any] = {"rows": rows, "file": str(path), "generate_s": gen_s,
                              "generator": ("gpuseg generate --transactions {0} --customers {1}" if kind == "gpuseg"
                                            else f"python benchmarks/{kind}_log.py --rows {{0}}").format(
                                  tag(rows), tag(max(1, rows // 10))),
                              "runs": runs}
    result.update(checks(work, runners))
    wall = {name: run.get("wall_s") for name, run in runs.items()}
    ratios = {}
    for a, b in (("gpuseg-cupy", "polars+sklearn"), ("gpuseg-cpu", "polars+sklearn"), ("gpuseg-cupy", "gpuseg-cpu")):
        if wall.get(a) and wall.get(b):
            ratios[f"{b} / {a} wall"] = wall[b] / wall[a]  # > 1: the first is faster
    result["speedups"] = ratios
    sink.update(result)
    return sink


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=1e8)
    ap.add_argument("--data", default="/tmp/gpuseg-bench", help="where logs are generated and cached")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--backends", default="cupy,cpu,polars", help="any of cupy, cpu, polars")
    ap.add_argument("--repeats", type=int, default=1, help="timed rounds (interleaved)")
    ap.add_argument("--retail-rows", type=float, default=0, help="also the retail log of this many rows (0: off)")
    ap.add_argument("--cdnow-rows", type=float, default=0, help="also the real CDNOW log tiled to this many rows (0: off)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per run")
    ap.add_argument("--gen-timeout", type=float, default=600, help="seconds to generate one log")
    args = ap.parse_args()
    runners = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not runners or set(runners) - set(RUNNERS):
        raise SystemExit(f"--backends takes some of {', '.join(RUNNERS)}, got {args.backends!r}")
    device = device_name() if "cupy" in runners else None
    if "cupy" in runners and device is None:
        raise SystemExit("no CUDA device found (nvidia-smi, CuPy); leave cupy out of --backends to run the rest")
    rows = int(args.rows)
    work = Path(args.data) / "runs"
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"gpu-pipeline-{slug(device) if device else 'no-gpu'}.json"

    result: dict[str, Any] = {"device": device, "rows": rows, "cpu_cores": len(os.sched_getaffinity(0)),
                              "machine": machine(), "backends": [RUNNERS[r] for r in runners],
                              "repeats": args.repeats}
    try:
        main_log = bench_log("gpuseg", rows, args, runners, work, result.setdefault("gpuseg_log", {}))
        result.update({key: main_log[key] for key in ("runs", "ari_gpu_vs_cpu", "inertia") if key in main_log})
        out.write_text(json.dumps(result, indent=2))  # kept if the retail part runs out of time
        for kind, extra in (("retail", args.retail_rows), ("cdnow", args.cdnow_rows)):
            if extra:
                bench_log(kind, int(extra), args, runners, work, result.setdefault(kind, {}))
                out.write_text(json.dumps(result, indent=2))
    except KeyboardInterrupt:  # the step's time limit: keep the runs that finished
        result["interrupted"] = True
        out.write_text(json.dumps(result, indent=2))
        print(f"interrupted; wrote what finished to {out}", flush=True)
        raise SystemExit(130) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for name, log in [("gpuseg", main_log)] + [(kind, result[kind]) for kind in ("retail", "cdnow") if kind in result]:
        print(f"\n{name} log, {log['rows']:,} rows, {result['cpu_cores']} CPU cores, {device or 'no GPU'}:")
        for runner, run in log["runs"].items():
            if run.get("wall_s") is None:
                print(f"  {runner:15s} failed: {run.get('errors')}")
                continue
            t = run.get("timings", {})
            extra = (f"import {run['import_s']:.2f} s, compute {run['compute_s']:.2f} s" if "compute_s" in run
                     else ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
            print(f"  {runner:15s} wall {run['wall_s']:7.2f} s  peak RSS {run['peak_rss_mib']:6.0f} MiB  ({extra})")
        print(f"  speed-ups: {json.dumps({k: round(v, 2) for k, v in log['speedups'].items()})}")
        print(f"  ARI gpu vs cpu: {log.get('ari_gpu_vs_cpu')}; inertia: {json.dumps(log.get('inertia'))}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
