"""`gpuseg segment --backend cpu` against polars (and pandas) + scikit-learn, on the CPU.

For each log (gpuseg's generator, benchmarks/retail_log.py's retailer-shaped
export, and benchmarks/cdnow_log.py's real CDNOW purchases tiled to size) and
each size, runs interleaved, each as a fresh process:

- ``gpuseg segment INPUT --backend cpu -q --k 5``;
- the polars + scikit-learn peer (benchmarks/peers.py: one lazy polars query
  with gpuseg's feature definitions, gpuseg's transform, ``KMeans(5,
  n_init=1)``);
- the pandas + scikit-learn peer, when asked (default: below 10⁸ rows).

Each runs once per core count (``--cores 1,2``: ``taskset`` pins the child to
the first N CPUs); one untimed warm-up round fills the file cache. Recorded
per run: wall clock and peak RSS from the child's rusage (``os.wait4``),
gpuseg's stage timings from its report.json (start-up = wall − report
total), the peer's import and compute seconds. The answers are checked on
the all-core runs: same customers, largest feature difference, adjusted Rand
index of gpuseg's segments against each peer's, inertia of each in gpuseg's
scaled space (model.json's scaler).

Writes benchmarks/results/cpu-pipeline.json (rewritten after every log, so
an interrupted run keeps what it measured) and prints markdown tables of the
medians. Missing logs are generated under benchmarks/data/ first.

Usage: python benchmarks/bench_pipeline.py [--rows 1e7,1e8] [--data gpuseg,retail,cdnow] [--repeats 3]
           [--cores 1,2] [--pandas auto|yes|no] [--timeout S] [--out benchmarks/results/cpu-pipeline.json]
       python benchmarks/bench_pipeline.py --report benchmarks/results/cpu-pipeline.json   # tables only
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: gpuseg's column options, and the peer's (benchmarks/peers.py), for each log.
COLUMNS = {
    "gpuseg": ([], ["--columns", "gpuseg"]),
    "retail": (["--customer-col", "Customer ID", "--date-col", "InvoiceDate", "--invoice-col", "Invoice",
                "--quantity-col", "Quantity", "--price-col", "Price"], ["--columns", "retail"]),
    # Real purchases without invoice ids: orders are customer-days; amounts are line totals.
    "cdnow": (["--customer-col", "customer_id", "--date-col", "date", "--amount-col", "amount"],
              ["--col", "customer=customer_id", "--col", "date=date", "--col", "invoice=", "--col", "amount=amount"]),
}
FEATURES = ("recency_days", "frequency", "monetary")
GPUSEG, POLARS, PANDAS = "gpuseg --backend cpu", "polars+sklearn", "pandas+sklearn"


def parse_list(text: str, kind: type, name: str) -> list:
    try:
        values = [kind(float(v)) if kind is int else kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{name} takes a comma-separated list, got {text!r}") from None
    if not values:
        raise SystemExit(f"{name} is empty")
    return values


def tag(rows: int) -> str:
    """10000000 -> '1e7', 200000 -> '2e5', 150000 -> '150000' (the data files' names, the tables)."""
    text = f"{rows:.0e}".replace("e+0", "e").replace("e+", "e")
    return text if float(text) == rows else str(rows)


# -- running one child ---------------------------------------------------------------

def busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), None where unreadable."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_measured(cmd: list[str], timeout: float, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, peak RSS (MiB) of that child, exit status, stdout, stderr tail.

    ``others_cpu_s`` is the CPU time the rest of the machine used meanwhile (busy
    time from /proc/stat less the child's own): other people's work that the
    timing shares the cores with. The child gets its own session so a timeout
    kills it and anything it started.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy0 = busy_cpu_s()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or a step timeout: the child, in its own session, must not outlive us
            kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        busy1 = busy_cpu_s()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    result = {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "rc": proc.returncode,
              "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
              "others_cpu_s": (None if busy0 is None or busy1 is None
                               else max(0.0, busy1 - busy0 - usage.ru_utime - usage.ru_stime))}
    if timed_out.is_set():
        result["error"] = f"timed out after {timeout:g} s"
    elif proc.returncode != 0:
        result["error"] = f"exit status {proc.returncode}: {stderr.strip()[-2000:]}"
    result["stdout"] = stdout
    return result


def pinned(cmd: list[str], cores: int) -> list[str]:
    """``cmd`` pinned to the first ``cores`` CPUs this process may use (as is when that is all of them)."""
    cpus = sorted(os.sched_getaffinity(0))
    if cores >= len(cpus):
        return cmd
    return ["taskset", "-c", ",".join(str(c) for c in cpus[:cores])] + cmd


def gpuseg_cmd(path: Path, data: str, out: Path) -> list[str]:
    exe = Path(sys.executable).parent / "gpuseg"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "gpuseg.cli"]
    return base + ["segment", str(path), "--backend", "cpu", "-q", "--k", "5", "--out", str(out)] + \
        COLUMNS[data][0]


def peer_cmd(engine: str, path: Path, data: str, out: Path) -> list[str]:
    return [sys.executable, str(HERE / "peers.py"), engine, str(path), str(out), "--k", "5"] + COLUMNS[data][1]


def measure(runner: str, path: Path, data: str, work: Path, cores: int, timeout: float) -> dict[str, Any]:
    """One fresh-process run of ``runner``; its outputs are left in ``work/<runner>``."""
    out = work / runner.split()[0]
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    if runner == GPUSEG:
        r = run_measured(pinned(gpuseg_cmd(path, data, out), cores), timeout, cwd=work)
        if "error" not in r:
            timings = json.loads((out / "report.json").read_text())["timings"]
            r["timings"] = timings
            r["compute_s"] = timings["total"]
            r["startup_s"] = r["wall_s"] - timings["total"]
    else:
        engine = runner.split("+")[0]
        r = run_measured(pinned(peer_cmd(engine, path, data, out), cores), timeout, cwd=work)
        if "error" not in r:
            line = json.loads(r["stdout"].strip().splitlines()[-1])
            r["import_s"], r["compute_s"], r["imports"] = line["import_s"], line["compute_s"], line.get("imports")
            r["startup_s"] = r["wall_s"] - r["import_s"] - r["compute_s"]  # interpreter, numpy, the peer module
    del r["stdout"]
    return r


# -- data ------------------------------------------------------------------------------

def ensure_data(data: str, rows: int, folder: Path, timeout: float) -> Path:
    """The log for ``data`` at ``rows`` rows, generated if missing; refuses a file still being written."""
    import pyarrow.parquet as pq
    path = folder / f"{data}-{tag(rows)}.parquet"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part.parquet")
        if data == "gpuseg":
            exe = Path(sys.executable).parent / "gpuseg"
            cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "gpuseg.cli"]) + [
                "generate", "--transactions", str(rows), "--customers", str(rows // 10), "--dirty", "0.001",
                "--out", str(part), "-q"]
        else:
            cmd = [sys.executable, str(HERE / f"{data}_log.py"), "--rows", str(rows), "--out", str(part)]
        print(f"generating {path} ...", flush=True)
        r = run_measured(cmd, timeout)
        if "error" in r:
            raise SystemExit(f"could not generate {path}: {r['error']}")
        part.rename(path)
    try:
        n = pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # a file with no footer yet: another process is still writing it
        raise SystemExit(f"{path} is not a complete Parquet file ({exc}); is it still being generated?") from None
    if n != rows:
        print(f"note: {path} has {n:,} rows, not {rows:,}", flush=True)
    return path


# -- checks ----------------------------------------------------------------------------

def scaled(model_json: Path, X: np.ndarray) -> np.ndarray:
    """gpuseg's scaled space: model.json's scaler (signed log1p where chosen, then z-scores)."""
    sc = json.loads(model_json.read_text())["scaler"]
    Z = np.array(X, dtype=np.float64)
    for j, use_log in enumerate(sc["log1p"]):
        if use_log:
            Z[:, j] = np.sign(Z[:, j]) * np.log1p(np.abs(Z[:, j]))
    return (Z - np.asarray(sc["mean"])) / np.asarray(sc["scale"])


def inertia_of(Z: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances to each label's mean (the centres Lloyd would settle on)."""
    k = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    centers = np.stack([np.bincount(labels, weights=Z[:, j], minlength=k) for j in range(Z.shape[1])], axis=1)
    centers /= np.maximum(counts, 1)[:, None]
    return float(((Z - centers[labels]) ** 2).sum())


def _by_customer(table: Any, columns: list[str]) -> dict[str, np.ndarray]:
    ids = table.column("customer_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    return {"customer_id": ids[order], **{c: table.column(c).to_numpy()[order] for c in columns}}


def check_answers(work: Path, peers: list[str]) -> dict[str, Any]:
    """Features, segments and inertia of the peers' last runs against gpuseg's."""
    import pyarrow.parquet as pq
    from sklearn.metrics import adjusted_rand_score
    g = work / "gpuseg"
    feats = _by_customer(pq.read_table(g / "features.parquet"), list(FEATURES))
    seg = _by_customer(pq.read_table(g / "assignments.parquet"), ["segment"])
    if not np.array_equal(feats["customer_id"], seg["customer_id"]):
        return {"error": "gpuseg's features and assignments list different customers"}
    X = np.stack([feats[c].astype(np.float64) for c in FEATURES], axis=1)
    Z = scaled(g / "model.json", X)
    checks: dict[str, Any] = {"n_customers": len(X), "gpuseg": {"inertia": inertia_of(Z, seg["segment"])}}
    for peer in peers:
        path = work / peer
        if not path.exists():
            checks[peer] = {"error": "no output (the run failed)"}
            continue
        p = _by_customer(pq.read_table(path), list(FEATURES) + ["segment"])
        same = bool(np.array_equal(p["customer_id"], feats["customer_id"]))
        entry: dict[str, Any] = {"same_customers": same, "n_customers": len(p["customer_id"])}
        if same:
            diff = {c: np.abs(p[c].astype(np.float64) - feats[c].astype(np.float64)) for c in FEATURES}
            entry["max_abs_diff"] = {c: float(d.max()) for c, d in diff.items()}
            # Sums in another order differ in the last bits; relative to the value that is ~1e-15.
            entry["max_rel_diff"] = {c: float((d / np.maximum(np.abs(feats[c].astype(np.float64)), 1.0)).max())
                                     for c, d in diff.items()}
            entry["ari_vs_gpuseg"] = float(adjusted_rand_score(seg["segment"], p["segment"]))
            entry["inertia"] = inertia_of(Z, p["segment"])
            entry["inertia_vs_gpuseg"] = entry["inertia"] / checks["gpuseg"]["inertia"]
        checks[peer] = entry
    return checks


# -- summary ---------------------------------------------------------------------------

def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None and "error" not in r]
    return statistics.median(values) if values else None


def summarise(runs: list[dict], runners: list[str], cores: list[int]) -> dict[str, Any]:
    """Medians per runner and core count, gpuseg/polars ratios, and the speed-up from 1 core to the most."""
    med: dict[str, dict[str, Any]] = {}
    for runner in runners:
        med[runner] = {}
        for c in cores:
            rs = [r for r in runs if r["runner"] == runner and r["cores"] == c and r["round"] > 0]
            m = {key: _median(rs, key) for key in ("wall_s", "compute_s", "import_s", "startup_s", "peak_rss_mib")}
            ok = [r["wall_s"] for r in rs if "error" not in r]
            m["wall_min_s"] = min(ok) if ok else None  # the least disturbed run, where others share the machine
            m["n"] = len(ok)
            m["errors"] = [r["error"] for r in rs if "error" in r]
            if runner == GPUSEG:
                stages = {s for r in rs if "timings" in r for s in r["timings"]}
                m["stages"] = {s: statistics.median([r["timings"][s] for r in rs if s in r.get("timings", {})])
                               for s in sorted(stages)}
            med[runner][str(c)] = m
    ratios = {}
    if POLARS in med:
        for c in cores:
            a, b = med[GPUSEG][str(c)], med[POLARS][str(c)]
            ratios[str(c)] = {f"gpuseg/polars {key}": (a.get(key) / b[key] if a.get(key) and b.get(key) else None)
                              for key in ("wall_s", "wall_min_s", "compute_s", "peak_rss_mib")}
    speedup = {}
    if len(cores) > 1:
        lo, hi = str(min(cores)), str(max(cores))
        for runner in runners:
            a, b = med[runner][lo], med[runner][hi]
            speedup[runner] = {key: (a[key] / b[key] if a[key] and b[key] else None) for key in ("wall_s", "compute_s")}
    return {"median": med, "ratios": ratios, f"speedup_{max(cores)}_over_{min(cores)}_cores": speedup}


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def markdown(cases: list[dict], cores: list[int]) -> str:
    lines = ["Medians over the timed rounds (wall: median, and the fastest run in brackets).", "",
             "| log | rows | pipeline | cores | wall (s) | compute (s) | import (s) | start-up (s) | peak RSS (MiB) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for case in cases:
        for runner, per in case["summary"]["median"].items():
            for c, m in per.items():
                lines.append(f"| {case['data']} | {tag(case['rows'])} | {runner} | {c} | {_f(m['wall_s'])} "
                             f"({_f(m.get('wall_min_s'))}) | "
                             f"{_f(m['compute_s'])} | {_f(m['import_s'])} | {_f(m['startup_s'])} | "
                             f"{_f(m['peak_rss_mib'], '.0f')} |" + (f" {len(m['errors'])} failed" if m["errors"] else ""))
    lines += ["", "| log | rows | cores | gpuseg/polars wall | (fastest runs) | gpuseg/polars compute | "
              "gpuseg/polars peak RSS |", "|---|---:|---:|---:|---:|---:|---:|"]
    for case in cases:
        for c, r in case["summary"]["ratios"].items():
            lines.append(f"| {case['data']} | {tag(case['rows'])} | {c} | {_f(r['gpuseg/polars wall_s'])} | "
                         f"{_f(r.get('gpuseg/polars wall_min_s'))} | "
                         f"{_f(r['gpuseg/polars compute_s'])} | {_f(r['gpuseg/polars peak_rss_mib'])} |")
    if len(cores) > 1:
        key = f"speedup_{max(cores)}_over_{min(cores)}_cores"
        lines += ["", f"| log | rows | pipeline | {max(cores)} cores vs {min(cores)}: wall | compute |", "|---|---:|---|---:|---:|"]
        for case in cases:
            for runner, s in case["summary"][key].items():
                lines.append(f"| {case['data']} | {tag(case['rows'])} | {runner} | {_x(s['wall_s'])} | {_x(s['compute_s'])} |")
    lines += ["", "Other work on the machine during the timed runs (CPU seconds used by everything but the "
              "run, per second of the run's wall clock; 0 = a quiet machine):"]
    for case in cases:
        share = [r["others_cpu_s"] / r["wall_s"] for r in case["runs"]
                 if r["round"] > 0 and r.get("others_cpu_s") is not None]
        if share:
            lines.append(f"- {case['data']} {tag(case['rows'])}: median {statistics.median(share):.2f}, "
                         f"max {max(share):.2f} of {case.get('cpus', '?')} CPUs")
        code = case.get("code") or {}
        if code.get("before") and code.get("before") != code.get("after"):
            lines.append(f"- {case['data']} {tag(case['rows'])}: the checkout changed during these runs "
                         f"({code['before']} -> {code['after']}); gpuseg's runs may mix versions")
    lines += ["", "| log | rows | peer | same customers | max abs diff (recency, frequency, monetary) | "
              "max rel diff monetary | ARI vs gpuseg | inertia peer/gpuseg |", "|---|---:|---|---|---|---:|---:|---:|"]
    for case in cases:
        for peer, ch in case["checks"].items():
            if peer in ("gpuseg", "n_customers") or not isinstance(ch, dict):
                continue
            diff = ch.get("max_abs_diff")
            lines.append(f"| {case['data']} | {tag(case['rows'])} | {peer} | {ch.get('same_customers', ch.get('error'))} | "
                         + (", ".join(f"{diff[c]:.1e}" for c in FEATURES) if diff else "–")
                         + f" | {_f(ch.get('max_rel_diff', {}).get('monetary'), '.1e')}"
                         + f" | {_f(ch.get('ari_vs_gpuseg'), '.4f')} | {_f(ch.get('inertia_vs_gpuseg'), '.4f')} |")
    return "\n".join(lines)


def code_state() -> dict[str, Any] | None:
    """The checkout's commit and gpuseg's uncommitted files: what the gpuseg runs ran."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "gpuseg"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=30).stdout.splitlines()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "gpuseg"], cwd=ROOT, capture_output=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "gpuseg_uncommitted": [line[3:] for line in changed],
            "gpuseg_diff_sha1": hashlib.sha1(diff).hexdigest()[:12] if diff else None}


def machine() -> dict[str, Any]:
    import pyarrow
    versions = {"python": platform.python_version(), "numpy": np.__version__, "pyarrow": pyarrow.__version__}
    for mod in ("gpuseg", "sklearn", "polars", "pandas"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # not installed, or a tree mid-edit: the record says so
            versions[mod] = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_gib": round(mem, 1),
            "platform": platform.platform(), "versions": versions, "load_average_at_start": os.getloadavg()}


def compile_sources() -> None:
    """Byte-compile gpuseg as an installed package is (pip compiles what it installs).

    With an editable install and PYTHONDONTWRITEBYTECODE (set on the VM of runs 1-6)
    every timed run compiled gpuseg's ~10,000 lines again: about 0.1 s of its start-up.
    """
    import compileall
    import importlib.util
    spec = importlib.util.find_spec("gpuseg")
    if spec is not None and spec.origin:
        compileall.compile_dir(str(Path(spec.origin).parent), quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1e7", help="sizes, comma-separated, e.g. 1e7,1e8")
    ap.add_argument("--data", default="gpuseg,retail", help="logs: gpuseg (its generator), retail (retail_log.py), "
                    "cdnow (real purchases, cdnow_log.py)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up round")
    ap.add_argument("--cores", default=None, help="core counts, e.g. 1,2 (default: all cores only)")
    ap.add_argument("--pandas", choices=["auto", "yes", "no"], default="auto", help="auto: below 1e8 rows")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run (default 120 + 3 s per 1e6 rows)")
    ap.add_argument("--data-dir", default=str(HERE / "data"))
    ap.add_argument("--out", default=str(HERE / "results" / "cpu-pipeline.json"))
    ap.add_argument("--report", metavar="JSON", help="print the tables of an earlier results file and stop")
    args = ap.parse_args()
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        cores = saved["config"]["cores"]
        for case in saved["cases"]:  # summaries again from the runs, so new columns show for old files
            case["summary"] = summarise(case["runs"], case["runners"], cores)
        print(markdown(saved["cases"], cores))
        return
    compile_sources()
    rows_list = parse_list(args.rows, int, "--rows")
    datas = parse_list(args.data, str, "--data")
    if set(datas) - set(COLUMNS):
        raise SystemExit(f"--data takes any of {', '.join(COLUMNS)}, got {args.data!r}")
    n_cpus = len(os.sched_getaffinity(0))
    cores = sorted(set(parse_list(args.cores, int, "--cores"))) if args.cores else [n_cpus]
    if any(c < 1 or c > n_cpus for c in cores):
        raise SystemExit(f"--cores must be in 1..{n_cpus} here, got {args.cores!r}")
    if any(c < n_cpus for c in cores) and shutil.which("taskset") is None:
        raise SystemExit("--cores below the machine's count needs taskset (util-linux)")
    have = {lib: importlib_ok(lib) for lib in ("polars", "pandas")}

    result: dict[str, Any] = {"machine": machine(), "created": dt.datetime.now().isoformat(timespec="seconds"),
                              "config": {"rows": rows_list, "data": datas, "repeats": args.repeats, "cores": cores,
                                         "pandas": args.pandas, "k": 5},
                              "notes": [], "cases": []}
    for lib, ok in have.items():
        if not ok:
            result["notes"].append(f"{lib} is not installed: its peer was not run")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for rows in rows_list:
        timeout = args.timeout or 120 + 3 * rows / 1e6
        for data in datas:
            path = ensure_data(data, rows, Path(args.data_dir), timeout=max(timeout, 1800))
            runners = [GPUSEG] + ([POLARS] if have["polars"] else [])
            if have["pandas"] and (args.pandas == "yes" or (args.pandas == "auto" and rows < 10**8)):
                runners.append(PANDAS)
            work = Path(tempfile.mkdtemp(prefix=f"bench-{data}-{tag(rows)}-"))
            code_before = code_state()
            runs: list[dict] = []
            plan = [(rnd, c, runner) for rnd in range(args.repeats + 1)
                    for c in (cores if rnd else [max(cores)]) for runner in runners]
            for i, (rnd, c, runner) in enumerate(plan):
                load = os.getloadavg()[0]  # others' work on the machine shows up here
                r = measure(runner, path, data, work, c, timeout)
                r.update({"round": rnd, "cores": c, "runner": runner, "load_avg_1min_before": load})
                runs.append(r)
                extra = (f" compute {r['compute_s']:.2f} s" if r.get("compute_s") is not None else "") + \
                    (f" import {r['import_s']:.2f} s" if r.get("import_s") is not None else "")
                print(f"[{i + 1}/{len(plan)}] {data} {tag(rows)} round {rnd}{' (warm-up)' if not rnd else ''} "
                      f"{c} core(s) {runner:22s} {r['wall_s']:7.2f} s {r['peak_rss_mib']:7.0f} MiB{extra}"
                      + (f"  ERROR {r['error'][:300]}" if "error" in r else ""), flush=True)
            # The last round runs on the most cores last, so the outputs left are all-core runs.
            last = {r["runner"]: r for r in runs if r["round"] == args.repeats and r["cores"] == max(cores)}
            if "error" in last[GPUSEG]:
                checks = {"error": "gpuseg's last run failed; answers not checked"}
            else:
                checks = check_answers(work, [p for p in runners if p != GPUSEG and "error" not in last[p]])
                checks.update({p: {"error": "its last run failed"} for p in runners if "error" in last[p]})
            case = {"data": data, "rows": rows, "file": str(path), "timeout_s": timeout, "runners": runners,
                    "cpus": n_cpus, "code": {"before": code_before, "after": code_state()},
                    "runs": runs, "summary": summarise(runs, runners, cores), "checks": checks}
            result["cases"].append(case)
            result["machine"]["load_average_at_end"] = os.getloadavg()
            out_path.write_text(json.dumps(result, indent=2))
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(result["cases"], cores))
    print(f"\nwrote {out_path}")


def importlib_ok(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
