"""``gpuseg bench``: honest CPU-vs-GPU benchmark runs, with tables and plots.

Pipeline mode: for each size, a synthetic log (cached) is segmented by each
available backend and by the peers a user would compare against, each in
its own worker process (so that peak host memory is that run's alone):

- ``cpu``, ``cupy``, ``cuml``: the full ``gpuseg segment`` pipeline;
- ``sklearn``: scikit-learn's ``KMeans`` on the cpu run's scaled feature
  matrix from the same initial centroids (the fit stage alone);
- ``pandas+sklearn``, ``polars+sklearn``: the group-by pipelines of
  :mod:`gpuseg.peers`, when those libraries are installed.

Every worker runs once untimed (imports, CUDA context, kernel compilation),
then ``repeats`` timed runs; stage timers synchronise the device before they
stop. Each run's labels are compared with the cpu run's by adjusted Rand
index. Kernel mode times the Lloyd step alone against the memory-bandwidth
floor. Results are rewritten after every worker, so an interrupted run keeps
what it gathered.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .backend import _import, cpu_description
from .config import parse_counts
from .errors import GpusegError
from .generate import MAX_ROWS
from .outputs import check_out, owner_tag, staged_output, sweep_stale

GPUSEG_BACKENDS = ("cpu", "cupy", "cuml")
GPU_STAGES = ("features", "scale", "fit", "assign")


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"1e5,1e6"`` -> (100000, 1000000)."""
    return parse_counts(text, "--sizes", 100, MAX_ROWS)


#: The largest d and k the kernel benchmark times (a float64 (n, d) array and a (chunk, k) distance block).
KERNEL_MAX_DK = 4096


def kernel_grid(sizes: str, d: str, k: str) -> dict[str, tuple[int, ...]]:
    """The n, d and k of ``gpuseg bench --kernel``: whole numbers, k no more than the smallest n."""
    grid = {"n": parse_sizes(sizes), "d": parse_counts(d, "--kernel-d", 1, KERNEL_MAX_DK),
            "k": parse_counts(k, "--kernel-k", 1, KERNEL_MAX_DK)}
    if max(grid["k"]) > min(grid["n"]):
        raise GpusegError(f"--kernel-k {max(grid['k'])} is more than the {min(grid['n']):,} points of the smallest "
                          "--sizes; k centres need at least k points")
    return grid


def check_backends(backends: tuple[str, ...]) -> None:
    unknown = [b for b in backends if b not in GPUSEG_BACKENDS]
    if unknown or not backends:
        raise GpusegError(f"unknown backend {unknown[0] if unknown else ''!r} in --backends; "
                          f"allowed: {', '.join(GPUSEG_BACKENDS)} (peers are added automatically)")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpuseg" / "bench"


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark; validated on construction."""

    out: Path
    sizes: tuple[int, ...] = (100_000, 1_000_000, 10_000_000)
    k: int = 8
    backends: tuple[str, ...] = GPUSEG_BACKENDS
    repeats: int = 3
    cache: Path = field(default_factory=default_cache)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "cache", Path(self.cache))
        if self.cache.exists() and not self.cache.is_dir():
            raise GpusegError(f"--cache {str(self.cache)!r} is a file; give a folder for the generated logs")
        check_backends(self.backends)
        if "cpu" not in self.backends:
            raise GpusegError("--backends must include cpu: every other backend is compared with it")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise GpusegError(f"--k must be an integer >= 1, got {self.k!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise GpusegError(f"--repeats must be an integer >= 1, got {self.repeats!r}")
        smallest = min(self.sizes) // 10  # the customers of the smallest log (see ensure_log)
        if self.k > smallest:
            raise GpusegError(f"--k {self.k} is more than the {smallest:,} customers of the smallest log "
                              f"({min(self.sizes):,} transactions, one customer per 10); give a smaller --k or "
                              "larger --sizes")
        check_out(self.out)


# -- the machine ------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, GPU and driver, library versions."""
    info: dict[str, Any] = {"cpu": cpu_description(), "cores": os.cpu_count(), "platform": platform.platform()}
    try:
        info["ram_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["ram_gib"] = None
    versions = {"python": platform.python_version(), "gpuseg": __version__}
    for mod in ("numpy", "pyarrow", "sklearn", "cupy", "cudf", "cuml", "pandas", "polars"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # not installed, or a broken GPU install
            continue
    info["versions"] = versions
    info["gpu"] = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            name, driver, memory = (p.strip() for p in out.stdout.strip().splitlines()[0].split(","))
            info["gpu"] = {"name": name, "driver": driver, "memory": memory}
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def availability(backends: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]]]:
    """Split backends and peers into those that can run here and those that cannot (with why)."""
    from .backend import resolve_backend
    from .peers import why_unavailable
    ok, missing = [], []
    for b in backends:
        if b == "cpu":
            ok.append(b)
            continue
        try:
            resolve_backend(b)
            ok.append(b)
        except GpusegError as exc:
            missing.append({"backend": b, "reason": str(exc)})
    ok.append("sklearn")
    for peer in ("pandas+sklearn", "polars+sklearn"):
        reason = why_unavailable(peer)
        if reason is None:
            ok.append(peer)
        else:
            missing.append({"backend": peer, "reason": reason})
    return ok, missing


# -- workers (one process per size and backend) -----------------------------------

def _peak_host_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device_pool() -> Any:
    cp = sys.modules.get("cupy")
    return cp.get_default_memory_pool() if cp is not None else None


def _labels(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq
    return pq.read_table(path, columns=["segment"]).column("segment").to_numpy()


def _ari(a: np.ndarray | None, b: np.ndarray) -> float | None:
    if a is None or len(a) != len(b):
        return None
    from sklearn.metrics import adjusted_rand_score
    return float(adjusted_rand_score(a, b))


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def worker(backend: str, data: Path, k: int, repeats: int, seed: int, work: Path,
           cpu_labels: Path | None) -> None:
    """Run one backend on one log: one untimed run, then ``repeats`` timed ones.

    Prints one JSON line per timed run.
    """
    reference = _labels(cpu_labels) if cpu_labels and cpu_labels.exists() else None
    if backend in GPUSEG_BACKENDS:
        from .config import SegmentConfig
        from .pipeline import run
        for r in range(repeats + 1):
            pool = _device_pool()
            if pool is not None:
                pool.free_all_blocks()  # so the pool's size after the run is this run's peak
            out = work / backend
            t0 = time.perf_counter()
            result = run(SegmentConfig(inputs=(str(data),), out=out, backend=backend, k=k, seed=seed))
            wall = time.perf_counter() - t0
            pool = _device_pool()
            labels = _labels(out / "assignments.parquet")
            if r == 0:
                if backend == "cpu":  # the cpu runs are checked against their untimed run: a measured 1.0
                    reference = labels
                continue
            rep = result.report
            _emit({"repeat": r, "wall_s": wall, "timings": rep["timings"], "n_customers": rep["n_customers"],
                   "inertia": rep["inertia"], "n_iter": rep["n_iter"], "engine": rep["engine"],
                   "precision": rep["precision"], "peak_host_mib": _peak_host_mib(),
                   "peak_device_mib": pool.total_bytes() / 2**20 if pool is not None else None,
                   "ari_vs_cpu": _ari(reference, labels)})
        return
    if backend == "sklearn":
        _sklearn_worker(k, repeats, seed, work, reference)
        return
    from .peers import run_peer
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        peer = run_peer(backend, data, work / f"{backend}.parquet", k=k, seed=seed)
        wall = time.perf_counter() - t0
        if r:
            _emit({"repeat": r, "wall_s": wall, "timings": {"total": wall}, "inertia": peer.inertia,
                   "peak_host_mib": _peak_host_mib(), "peak_device_mib": None,
                   "ari_vs_cpu": _ari(reference, peer.labels)})


def _sklearn_worker(k: int, repeats: int, seed: int, work: Path, reference: np.ndarray | None) -> None:
    """scikit-learn's KMeans on the cpu run's scaled features, from the cpu run's initial centres."""
    import pyarrow.parquet as pq
    from sklearn.cluster import KMeans

    from .cluster.init import check_random_state, kmeans_plusplus
    from .model import SegmentModel
    model = SegmentModel.load(work / "cpu" / "model.json")
    table = pq.read_table(work / "cpu" / "features.parquet", columns=list(model.features))
    Z = model.scaler.transform(np.stack([table.column(f).to_numpy().astype(np.float64)
                                         for f in model.features], axis=1))
    mean = Z.mean(axis=0)
    # The same draws as the cpu run's k-means++ on the same centred data.
    init = kmeans_plusplus(Z - mean, k, check_random_state(seed)) + mean
    from .cluster.fit import fit_kmeans
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        km = KMeans(k, init=init, n_init=1, max_iter=300, tol=1e-4).fit(Z)
        fit_s = time.perf_counter() - t0
        # gpuseg's own fit from the same centres, interleaved: the like-for-like comparison.
        t0 = time.perf_counter()
        fit_kmeans(Z, k, init=init, max_iter=300, tol=1e-4)
        ours_s = time.perf_counter() - t0
        if r:
            _emit({"repeat": r, "wall_s": fit_s, "timings": {"fit": fit_s, "gpuseg_fit_same_init": ours_s},
                   "n_iter": int(km.n_iter_), "inertia": float(km.inertia_), "peak_host_mib": _peak_host_mib(),
                   "peak_device_mib": None, "ari_vs_cpu": _ari(reference, km.labels_)})


# -- the driver -----------------------------------------------------------------------

def ensure_log(cache: Path, size: int, seed: int) -> Path:
    """The cached synthetic log of ``size`` rows (size // 10 customers), made if missing."""
    from .generate import GENERATOR_VERSION, write_log
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"tx-{size}-seed{seed}-v{GENERATOR_VERSION}.parquet"
    if not path.exists():
        write_log(path, size, max(1, size // 10), seed=seed, dirty=0.001)
    return path


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per size × backend × stage: median, min, max over the repeats."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["size"], run["backend"]), []).append(run)
    records = []
    for (size, backend), group in sorted(groups.items()):
        # The sklearn peer times the fit alone: it has no end-to-end time.
        stages = {} if backend == "sklearn" else {"end_to_end": [g["wall_s"] for g in group]}
        for stage in group[0]["timings"]:
            stages[stage] = [g["timings"][stage] for g in group]
        if all(s in group[0]["timings"] for s in GPU_STAGES):
            stages["features_to_assign"] = [sum(g["timings"][s] for s in GPU_STAGES) for g in group]
        for stage, values in stages.items():
            records.append({"size": size, "backend": backend, "stage": stage, "median_s": statistics.median(values),
                            "min_s": min(values), "max_s": max(values), "n": len(values)})
    return records


def _median(records: list[dict[str, Any]], size: int, backend: str, stage: str) -> float | None:
    for r in records:
        if (r["size"], r["backend"], r["stage"]) == (size, backend, stage):
            return r["median_s"]
    return None


#: The summary table's columns, in order (bench.md shows them all; the terminal as many as fit).
SUMMARY_COLUMNS = ("transactions", "backend", "end to end", "features→assign", "fit", "speed-up (e2e)",
                   "speed-up (fit)", "ARI vs cpu", "inertia / cpu", "peak host MiB", "peak device MiB")


def summary_rows(result: dict[str, Any], ranges: bool = True) -> list[dict[str, str]]:
    """One row per size × backend run: cells keyed by :data:`SUMMARY_COLUMNS`.

    Times are medians, followed by ``(min–max)`` when ``ranges`` (and more than one run).
    ``inertia / cpu`` is the largest of the backend's inertias over the cpu runs' median
    (each k-means in its own scaled space: the same transform, written out by the peers).
    """
    runs = result["runs"]
    records = result["records"]

    def inertia_ratio(size: int, group: list[dict[str, Any]]) -> str:
        cpu = [r["inertia"] for r in runs if r["size"] == size and r["backend"] == "cpu" and r.get("inertia")]
        ours = [r["inertia"] for r in group if r.get("inertia") is not None]
        return f"{max(ours) / statistics.median(cpu):.4f}" if cpu and ours else "–"
    rows = []
    for size in result["config"]["sizes"]:
        for backend in result["backends_run"]:
            group = [r for r in runs if r["size"] == size and r["backend"] == backend]
            if not group:
                continue

            def cell(stage: str) -> str:
                rec = next((r for r in records if (r["size"], r["backend"], r["stage"]) == (size, backend, stage)), None)
                if rec is None:
                    return "–"
                return f"{rec['median_s']:.3f}" + (f" ({rec['min_s']:.3f}–{rec['max_s']:.3f})"
                                                   if ranges and rec["n"] > 1 else "")

            def speedup(stage: str) -> str:
                base, this = _median(records, size, "cpu", stage), _median(records, size, backend, stage)
                if backend == "sklearn" and stage == "fit":  # against gpuseg's fit from the same centres
                    base = _median(records, size, "sklearn", "gpuseg_fit_same_init")
                return f"{base / this:.2f}×" if base and this else "–"

            aris = [r["ari_vs_cpu"] for r in group if r.get("ari_vs_cpu") is not None]
            dev = [r["peak_device_mib"] for r in group if r.get("peak_device_mib") is not None]
            cells = (f"{size:,}", backend, "–" if backend == "sklearn" else cell("end_to_end"),
                     cell("features_to_assign"), cell("fit"), "–" if backend == "sklearn" else speedup("end_to_end"),
                     speedup("fit"), f"{min(aris):.4f}" if aris else "–", inertia_ratio(size, group),
                     f"{max(r['peak_host_mib'] for r in group):.0f}", f"{max(dev):.0f}" if dev else "–")
            rows.append(dict(zip(SUMMARY_COLUMNS, cells)))
    return rows


def markdown(result: dict[str, Any]) -> str:
    """A table a person can paste into a report: medians (min–max), speed-ups vs cpu, checks."""
    m = result["machine"]
    gpu = m.get("gpu")
    lines = [f"# gpuseg bench ({result['created']})", "",
             f"Machine: {m['cpu']}, {m.get('ram_gib')} GiB RAM"
             + (f", {gpu['name']} (driver {gpu['driver']}, {gpu['memory']})" if gpu else ", no GPU") + ".",
             f"k = {result['config']['k']}, {result['config']['repeats']} timed runs each after one untimed run; "
             "times in seconds, median (min–max); speed-up = cpu median / backend median. "
             "gpuseg's fit stage includes k-means++ seeding; sklearn is scikit-learn's KMeans on the cpu run's "
             "scaled features from the cpu run's initial centres, and its fit speed-up is against gpuseg's fit "
             "from those same centres, timed interleaved in the same process. ARI vs cpu: the lowest adjusted Rand "
             "index of a backend's runs against the cpu run's labels (the cpu runs against their untimed run); "
             "inertia / cpu: its highest inertia over the cpu median.", ""]
    lines += ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|---:|---|" + "---:|" * (len(SUMMARY_COLUMNS) - 2)]
    lines += ["| " + " | ".join(row.values()) + " |" for row in summary_rows(result)]
    if result["unavailable"]:
        lines += ["", "Not run:"]
        lines += [f"- {u['backend']}: {u['reason']}" for u in result["unavailable"]]
    if result.get("interrupted"):
        lines += ["", "Interrupted: the table holds the runs finished before the interruption."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """bench.png: end-to-end and fit time against transactions, log-log, one line per backend."""
    from .html_report import subplots
    fig, axes = subplots(1, 2, figsize=(11, 4.2))
    for ax, stage, title in ((axes[0], "end_to_end", "end to end"), (axes[1], "fit", "k-means fit")):
        for backend in result["backends_run"]:
            pts = sorted((r["size"], r["median_s"]) for r in result["records"]
                         if r["backend"] == backend and r["stage"] == stage)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=backend)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("transactions")
        ax.set_ylabel("seconds (median)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # none before the first backend has a run (interrupted)
            ax.legend(fontsize=8)
    fig.suptitle(f"gpuseg bench, k={result['config']['k']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """bench.json, bench.md and bench.png, each replaced whole (they are rewritten after every
    backend, so that an interrupted run keeps what it measured)."""
    out.mkdir(parents=True, exist_ok=True)
    result["records"] = summarise(result["runs"])
    for name, write in (("bench.json", lambda p: p.write_text(json.dumps(result, indent=2) + "\n")),
                        ("bench.md", lambda p: p.write_text(markdown(result))),
                        ("bench.png", lambda p: plot(result, p))):
        tmp = out / f".partial-{name}"  # keeps the suffix: matplotlib picks the format by it
        write(tmp)
        os.replace(tmp, out / name)


def run_bench(config: BenchConfig, on_event: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the pipeline benchmark; returns the result written to ``config.out``.

    ``on_event(kind, info)`` is told about progress ("data", "start", "run",
    "done"). On Ctrl-C the worker is stopped, the runs gathered so far are
    written, and KeyboardInterrupt is raised again.
    """
    notify = on_event or (lambda kind, info: None)
    ok, missing = availability(config.backends)
    # cpu first: the others are compared with its labels; sklearn needs its features.
    order = [b for b in ("cpu", "cupy", "cuml", "sklearn", "pandas+sklearn", "polars+sklearn") if b in ok]
    result: dict[str, Any] = {
        "gpuseg_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"sizes": list(config.sizes), "k": config.k, "backends": list(config.backends),
                   "repeats": config.repeats, "seed": config.seed},
        "backends_run": order, "unavailable": missing, "runs": [], "records": [], "interrupted": False,
    }
    # Into a staging folder that replaces --out at the end, or when interrupted (what was measured
    # is kept); a killed run leaves --out as it was, and the next run sweeps the staging folder.
    with staged_output(config.out, swap_on_interrupt=lambda: bool(result["runs"])) as out:
        _run_workers(config, order, result, notify, out)
    return result


def _run_workers(config: BenchConfig, order: list[str], result: dict[str, Any],
                 notify: Callable[[str, dict[str, Any]], None], out: Path) -> None:
    proc: subprocess.Popen | None = None
    # Scratch named by host and process: a later run removes what a killed one left.
    sweep_stale(Path(tempfile.gettempdir()), "gpuseg-bench-", min_age_s=3600)
    try:
        for size in config.sizes:
            notify("data", {"size": size})
            data = ensure_log(config.cache, size, config.seed)
            with tempfile.TemporaryDirectory(prefix=f"gpuseg-bench-{owner_tag()}") as tmp:
                work = Path(tmp)
                for backend in order:
                    notify("start", {"size": size, "backend": backend})
                    cmd = [sys.executable, "-m", "gpuseg.bench", "worker", backend, str(data), str(config.k),
                           str(config.repeats), str(config.seed), str(work), str(work / "cpu" / "assignments.parquet")]
                    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        record = {"size": size, "backend": backend, **json.loads(line)}
                        result["runs"].append(record)
                        notify("run", record)
                    err = proc.stderr.read() if proc.stderr else ""
                    if proc.wait() != 0:
                        last = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
                        result["unavailable"].append({"backend": f"{backend} at {size:,} rows", "reason": last})
                    proc = None
                    write_outputs(result, out)
        notify("done", {})
    except KeyboardInterrupt:
        result["interrupted"] = True  # first: a second interrupt below must not leave a run that looks whole
        try:
            write_outputs(result, out)
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    proc.kill()
        raise
    write_outputs(result, out)


# -- kernel mode -------------------------------------------------------------------

def _median_time(fn: Callable[[], Any], sync: Callable[[], None], reps: int) -> float:
    fn()  # warm-up: compilation, allocation
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def host_bandwidth_gbs(nbytes: int = 256 << 20) -> float:
    """Host memory copy bandwidth, counting bytes read and written."""
    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    t = _median_time(lambda: np.copyto(b, a), lambda: None, 5)
    return 2 * nbytes / t / 1e9


def device_bandwidth_gbs(cp: Any, nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth, counting bytes read and written."""
    a = cp.ones(nbytes // 4, dtype=cp.float32)
    b = cp.empty_like(a)
    sync = cp.cuda.get_current_stream().synchronize
    t = _median_time(lambda: cp.copyto(b, a), sync, 10)
    return 2 * nbytes / t / 1e9


def probe_flash_kmeans() -> tuple[Any, str | None]:
    """Flash-KMeans' one-iteration function (FlashAssign + sorted centroid update), or None and why not.

    Flash-KMeans (PyPI ``flash-kmeans``) is built on PyTorch and Triton; its
    package quietly falls back to a plain PyTorch loop when its Triton
    kernels do not import, so the Triton module is imported directly here.
    """
    try:
        import torch
        from flash_kmeans.kmeans_triton_impl import _euclid_iter
    except Exception as exc:  # not installed, or torch/triton missing or broken
        return None, f"flash-kmeans with its Triton kernels is not importable ({type(exc).__name__}: {exc})"
    if not torch.cuda.is_available():
        return None, "flash-kmeans needs a CUDA device visible to PyTorch"
    return _euclid_iter, None


def flash_kmeans_iteration(euclid_iter: Any, X: Any, C: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """One Flash-KMeans iteration over CuPy ``X`` (n, d) from centres ``C`` (k, d), float32.

    The arrays are shared with PyTorch through DLPack (no copy); the squared
    norms are computed once, untimed, as Flash-KMeans computes them once per fit.
    Returns ``(iterate, labels)``: ``iterate()`` runs one iteration;
    ``labels()`` its assignment as a CuPy int32 array.
    """
    import torch
    cp = _import("cupy")
    x = torch.from_dlpack(X).unsqueeze(0)
    c = torch.from_dlpack(C).unsqueeze(0).contiguous()
    x_sq = torch.empty((1, x.shape[1]), device=x.device, dtype=x.dtype)
    for s in range(0, x.shape[1], 1 << 20):  # in chunks: no (n, d) temporary
        x_sq[:, s:s + (1 << 20)] = (x[:, s:s + (1 << 20)] ** 2).sum(dim=-1)

    def iterate() -> Any:
        return euclid_iter(x, x_sq, c)

    def labels() -> Any:
        return cp.from_dlpack(iterate()[2][0].contiguous()).astype(cp.int32)

    return iterate, labels


def fused_iteration(step: Any, C: Any) -> Any:
    """One Lloyd iteration of the fused step: the step, then the new centres (as the driver moves them)."""
    xp = step.xp
    part = step.partials(C)
    counts = part.counts[:, None]
    return xp.where(counts > 0, part.sums / xp.maximum(counts, 1), C).astype(C.dtype)


def run_kernel_bench(grid: dict[str, tuple[int, ...]], backends: tuple[str, ...], reps: int = 5,
                     on_case: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Time one Lloyd iteration over the grid of n, d, k for each implementation available.

    Implementations: ``cpu`` (NumPy, float64, all cores: the step), ``fused``
    (the fused kernel and the centre update: one iteration) and ``generic``
    (the array-generic CuPy step) in float32 when a GPU is there, and
    ``flash-kmeans`` (one iteration of Flash-KMeans, from the same data and
    centres) when it is importable. Each case reports the median time and
    the bandwidth floor: the bytes the step must read once over the measured
    copy bandwidth of its memory.
    """
    from contextlib import ExitStack

    from .backend import probe_cupy
    from .cluster.host import host_step
    from .cluster.steps import ChunkedStep, default_chunk_size
    notify = on_case or (lambda case: None)
    cases: list[dict[str, Any]] = []
    out: dict[str, Any] = {"host_bandwidth_gbs": host_bandwidth_gbs(), "cases": cases, "unavailable": []}
    cp, why = probe_cupy() if any(b != "cpu" for b in backends) else (None, None)
    if cp is None and why:
        out["unavailable"].append({"backend": "cupy (fused, generic)", "reason": why})
    flash = None
    if cp is not None:
        out["device_bandwidth_gbs"] = device_bandwidth_gbs(cp)
        flash, why_not = probe_flash_kmeans()
        if flash is None:
            out["unavailable"].append({"backend": "flash-kmeans", "reason": why_not})
    rng = np.random.default_rng(0)
    for n in grid["n"]:
        for d in grid["d"]:
            for k in grid["k"]:
                if "cpu" in backends:
                    X = rng.standard_normal((d, n)).T  # feature-major, the layout a host fit uses
                    C = X[:k].copy()
                    with ExitStack() as stack:
                        step = host_step(X, stack, k, track_labels=False)
                        t = _median_time(lambda: step.partials(C), lambda: None, reps)
                    floor = X.nbytes / (out["host_bandwidth_gbs"] * 1e9)
                    cases.append({"impl": "cpu", "n": n, "d": d, "k": k, "ms_per_iter": t * 1e3,
                                  "floor_ms": floor * 1e3, "pct_of_floor": 100 * floor / t})
                    notify(cases[-1])
                    del X
                if cp is None:
                    continue
                from .cluster.engine import fused_failure
                from .cluster.fused import FusedStep, why_unsupported
                Xd = cp.random.default_rng(1).standard_normal((n, d), dtype=cp.float32)
                Cd = Xd[:k].copy()

                def sync() -> None:
                    cp.cuda.Device().synchronize()  # every stream: PyTorch's too

                floor = Xd.nbytes / (out["device_bandwidth_gbs"] * 1e9)
                impls: list[tuple[str, Callable[[], Any]]] = []
                fused = None
                if why_unsupported(d, k, np.float32) is None:
                    try:
                        fused = FusedStep(Xd, k)
                        impls.append(("fused", lambda: fused_iteration(fused, Cd)))
                    except Exception as exc:  # a device it does not build or launch on: reported, not fatal
                        out["unavailable"].append({"backend": f"fused at n={n}, d={d}, k={k}",
                                                   "reason": fused_failure(exc)})
                generic = ChunkedStep(Xd, default_chunk_size(cp, k, d), track_labels=False)
                impls.append(("generic", lambda: generic.partials(Cd)))
                if flash is not None:
                    try:
                        flash_iter, _ = flash_kmeans_iteration(flash, Xd, Cd)
                        impls.append(("flash-kmeans", flash_iter))
                    except Exception as exc:
                        out["unavailable"].append({"backend": f"flash-kmeans at n={n}, d={d}, k={k}",
                                                   "reason": f"{type(exc).__name__}: {exc}"})
                for name, fn in impls:
                    try:
                        t = _median_time(fn, sync, reps)
                    except Exception as exc:  # fused or a peer failing on a shape is reported, not fatal
                        if name == "generic":
                            raise
                        reason = fused_failure(exc) if name == "fused" else f"{type(exc).__name__}: {exc}"
                        out["unavailable"].append({"backend": f"{name} at n={n}, d={d}, k={k}", "reason": reason})
                        continue
                    cases.append({"impl": name, "n": n, "d": d, "k": k, "ms_per_iter": t * 1e3,
                                  "floor_ms": floor * 1e3, "pct_of_floor": 100 * floor / t})
                    notify(cases[-1])
                Xd = Cd = fused = generic = impls = flash_iter = None
                cp.get_default_memory_pool().free_all_blocks()
                if flash is not None:
                    import torch
                    torch.cuda.empty_cache()  # PyTorch's cache too: the next case's data need the memory
    return out


def kernel_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# gpuseg bench --kernel ({result['created']})", "",
             f"Machine: {m['cpu']}" + (f", {m['gpu']['name']}" if m.get("gpu") else ", no GPU")
             + f". Host copy bandwidth {result['host_bandwidth_gbs']:.1f} GB/s"
             + (f", device copy bandwidth {result['device_bandwidth_gbs']:.0f} GB/s" if "device_bandwidth_gbs" in result
                else "") + ". Floor = bytes of X read once / bandwidth.", "",
             "| impl | n | d | k | ms / iteration | floor (ms) | % of floor |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c in result["cases"]:
        lines.append(f"| {c['impl']} | {c['n']:,} | {c['d']} | {c['k']} | {c['ms_per_iter']:.3f} | "
                     f"{c['floor_ms']:.3f} | {c['pct_of_floor']:.0f}% |")
    for u in result["unavailable"]:
        lines.append(f"\nNot run: {u['backend']}: {u['reason']}")
    return "\n".join(lines) + "\n"


def _main(argv: list[str]) -> None:
    if len(argv) == 8 and argv[0] == "worker":
        backend, data, k, repeats, seed, work, cpu_labels = argv[1:]
        worker(backend, Path(data), int(k), int(repeats), int(seed), Path(work), Path(cpu_labels))
        return
    raise SystemExit("usage: python -m gpuseg.bench worker BACKEND DATA K REPEATS SEED WORK CPU_LABELS")


if __name__ == "__main__":
    _main(sys.argv[1:])
