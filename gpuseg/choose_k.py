"""Choosing k with evidence: quality metrics over a range of k, and a recommendation.

For every k in ``k_min..k_max`` the scaled features are clustered ``runs``
times from different seeds (seed, seed+1, ...). The first run gives inertia,
silhouette (on a sample), Calinski-Harabasz and Davies-Bouldin; all runs
together give stability, the mean adjusted Rand index between every pair.
Metrics run where the data live (NumPy or CuPy).

Recommendation rule: among the k whose stability is at least
:data:`MIN_STABILITY` (all k if none is), the one with the highest silhouette;
ties go to the smaller k. The reasons name the k the other metrics prefer too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from . import __version__
from .cluster.fit import fit_kmeans
from .config import SEED_MAX, SegmentConfig, _int
from .errors import GpusegError
from .cluster.metrics import adjusted_rand, calinski_harabasz, davies_bouldin, silhouette
from .outputs import staged_output, write_json
from .pipeline import Progress, prepare, refuse_empty_segments

MIN_STABILITY = 0.8
RESULT = "choose_k.json"
PLOT = "choose_k.png"


@dataclass(frozen=True)
class KMetrics:
    k: int
    inertia: float
    silhouette: float
    calinski_harabasz: float
    davies_bouldin: float
    stability: float | None
    n_iter: int


def recommend(metrics: list[KMetrics], runs: int) -> tuple[int, list[str]]:
    """The recommended k and the reasons, by the rule in the module docstring."""
    stable = [m for m in metrics if m.stability is None or m.stability >= MIN_STABILITY]
    pool = stable or metrics
    best = max(pool, key=lambda m: (round(m.silhouette, 9), -m.k))
    if runs > 1 and stable:
        why = (f"highest silhouette ({best.silhouette:.3f}) among the k whose clusters are stable across "
               f"{runs} seeds (mean adjusted Rand index >= {MIN_STABILITY}; {best.stability:.3f} at k={best.k})")
    elif runs > 1:
        why = (f"highest silhouette ({best.silhouette:.3f}); no k reached a stability of {MIN_STABILITY} "
               f"across {runs} seeds, so the clusters may shift between runs")
    else:
        why = f"highest silhouette ({best.silhouette:.3f}); stability not measured (--runs 1)"
    reasons = [why]
    ch = max(metrics, key=lambda m: m.calinski_harabasz).k
    db = min(metrics, key=lambda m: m.davies_bouldin).k
    reasons.append(f"Calinski-Harabasz is highest at k={ch}" + (" too" if ch == best.k else ""))
    reasons.append(f"Davies-Bouldin is lowest at k={db}" + (" too" if db == best.k else ""))
    if len(metrics) >= 3:
        inertia = [m.inertia for m in metrics]
        bend = max(range(1, len(metrics) - 1), key=lambda i: inertia[i - 1] - 2 * inertia[i] + inertia[i + 1])
        reasons.append(f"the inertia curve bends most at k={metrics[bend].k}")
    return best.k, reasons


def plot(result: dict[str, Any], path: Path) -> None:
    """choose_k.png: the four curves, the recommended k marked."""
    from .html_report import subplots
    m = result["metrics"]
    ks = [x["k"] for x in m]
    fig, axes = subplots(2, 2, figsize=(10, 7))
    panels = [("inertia", "inertia (lower is tighter)"), ("silhouette", "silhouette (higher is better)"),
              ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
              ("davies_bouldin", "Davies-Bouldin (lower is better)")]
    for ax, (key, title) in zip(axes.ravel(), panels):
        ax.plot(ks, [x[key] for x in m], marker="o")
        ax.axvline(result["recommended_k"], color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("k")
        ax.grid(alpha=0.3)
        if key == "silhouette" and any(x["stability"] is not None for x in m):
            twin = ax.twinx()
            twin.plot(ks, [x["stability"] for x in m], marker="s", color="tab:green", alpha=0.7)
            twin.set_ylabel("stability (mean ARI)", color="tab:green")
            twin.set_ylim(0, 1.05)
    fig.suptitle(f"choosing k: recommended k = {result['recommended_k']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def choose_k(config: SegmentConfig, k_min: int = 2, k_max: int = 12, sample_size: int = 5000, runs: int = 3,
             progress: Progress | None = None) -> dict[str, Any]:
    """Score every k in ``k_min..k_max`` and write choose_k.json and choose_k.png to ``config.out``.

    Raises
    ------
    GpusegError
        For bad options or input; nothing is written then.
    """
    for name, value, low in (("--k-min", k_min, 2), ("--k-max", k_max, 2), ("--sample-size", sample_size, 2),
                             ("--runs", runs, 1)):
        _int(name, value, low)  # NumPy integers too
    k_min, k_max, sample_size, runs = int(k_min), int(k_max), int(sample_size), int(runs)
    if k_max < k_min:
        raise GpusegError(f"--k-max ({k_max}) must be >= --k-min ({k_min})")
    if sample_size <= k_max:  # as for --k-max and the customers: silhouette needs fewer clusters than points
        raise GpusegError(f"--sample-size {sample_size} must be above --k-max {k_max}: the silhouette needs more "
                          f"sampled customers than clusters; allowed: --sample-size >= {k_max + 1}")
    if config.seed + runs - 1 > SEED_MAX:  # run r uses seed + r
        raise GpusegError(f"--seed {config.seed} with --runs {runs} passes the largest seed, {SEED_MAX}; "
                          f"allowed: --seed <= {SEED_MAX - runs + 1}")
    p = prepare(config, progress)
    n = len(p.feats)
    if k_max >= n:
        raise GpusegError(f"--k-max {k_max} needs more customers: {n} have a purchase; allowed: --k-max <= {n - 1}")
    metrics: list[KMetrics] = []
    with p.timer.stage("choose_k"):
        for k in range(k_min, k_max + 1):
            if progress is not None:
                progress.stage(f"k={k}")
            fits = [fit_kmeans(p.Z, k, random_state=config.seed + r, max_iter=config.max_iter, tol=config.tol)
                    for r in range(runs)]
            first = fits[0]
            # Fewer distinct customers than k: no k from here on has a meaning.
            if first.n_distinct < k_min:
                raise GpusegError(f"the {n} customers have only {first.n_distinct} distinct value(s) of "
                                  f"{','.join(config.features)}; choose-k needs at least --k-min {k_min}")
            refuse_empty_segments(first.n_distinct, k, n, config.features, "--k-max")
            stability = (sum(adjusted_rand(a.labels, b.labels) for a, b in combinations(fits, 2))
                         / (runs * (runs - 1) / 2)) if runs > 1 else None
            metrics.append(KMetrics(k=k, inertia=first.inertia,
                                    silhouette=silhouette(p.Z, first.labels, k, sample_size, config.seed),
                                    calinski_harabasz=calinski_harabasz(p.Z, first.labels, k),
                                    davies_bouldin=davies_bouldin(p.Z, first.labels, k),
                                    stability=stability, n_iter=first.n_iter))
    best, reasons = recommend(metrics, runs)
    result = {
        "recommended_k": best,
        "reasons": reasons,
        "metrics": [asdict(m) for m in metrics],
        "k_min": k_min, "k_max": k_max, "sample_size": min(sample_size, n), "runs": runs, "seed": config.seed,
        "min_stability": MIN_STABILITY, "features": list(config.features), "n_customers": n,
        "inputs": p.sources, "backend": p.backend.name, "device": p.backend.device, "fallbacks": p.fallbacks,
        "precision": p.precision, "gpuseg_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "timings": p.timer.as_dict(),
    }
    with staged_output(config.out) as tmp:
        write_json(tmp / RESULT, result)
        plot(result, tmp / PLOT)
    return result
