"""``gpuseg report OUT_DIR``: one self-contained HTML page about a segmentation run.

Everything is embedded (figures as base64 PNG, styles inline, no scripts,
no external references), so the file can be mailed or archived as is.
Sections: summary, segment sizes and revenue shares, per-segment feature
profiles, a 2-D projection of a sample of customers coloured by segment, the
choose-k curves of a ``gpuseg choose-k`` run when one is given, and the stage timings.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .backend import short_error
from .errors import GpusegError
from .model import SegmentModel
from .naming import describe, standings

REPORT_HTML = "report.html"
NEEDED = ("segments.csv", "features.parquet", "assignments.parquet", "model.json", "report.json")
PROJECTION_SAMPLE = 5000


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots`` without pyplot: a figure of its own, drawn by Agg when saved, so that a
    program (a notebook) that calls gpuseg keeps its own matplotlib backend and figure list."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(value: float | None, spec: str) -> str:
    """A mean as ``spec``; an empty segment has none."""
    return "–" if value is None else format(value, spec)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _load(out: Path, choose_k_dir: Path | None = None) -> dict[str, Any]:
    if not out.is_dir():
        raise GpusegError(f"{str(out)!r} is not a folder; give the --out folder of a gpuseg segment run")
    # One process writes the two tables as files, a Dask run as folders of parts (in the same order).
    tables = {name: out / f"{name}.parquet" if (out / f"{name}.parquet").exists() else out / name
              for name in ("features", "assignments")}
    missing = [name for name in NEEDED if not (out / name).exists()
               and not (name.endswith(".parquet") and tables[name[:-len(".parquet")]].is_dir())]
    if missing:
        raise GpusegError(f"{str(out)!r} is not a complete gpuseg segment output: missing {', '.join(missing)}")
    try:
        segments = pacsv.read_csv(out / "segments.csv").to_pylist()
        features = pq.read_table(tables["features"])
        assignments = pq.read_table(tables["assignments"], columns=["segment"])
        report = json.loads((out / "report.json").read_text())
    except Exception as exc:  # any unreadable piece is one clear error
        raise GpusegError(f"cannot read the outputs in {str(out)!r}: {short_error(exc)[:300]}") from None
    if not isinstance(report, dict):
        raise GpusegError(f"{str(out / 'report.json')!r} is not a gpuseg report (a JSON object); run gpuseg segment "
                          "again")
    model = SegmentModel.load(out / "model.json")
    segment = assignments.column("segment").to_numpy()
    problem = _mismatch(segments, features, segment, model)
    if problem:
        raise GpusegError(f"the outputs in {str(out)!r} do not fit together as one gpuseg segment run wrote them "
                          f"({problem}); run gpuseg segment again")
    choose = None
    if choose_k_dir is not None:
        path = choose_k_dir / "choose_k.json" if choose_k_dir.is_dir() else choose_k_dir
        if path.exists() and not path.is_file():  # a FIFO would block the read forever
            raise GpusegError(f"--choose-k {str(choose_k_dir)!r}: {str(path)!r} is not a file")
        try:
            choose = json.loads(path.read_text(encoding="utf-8"))
            int(choose["recommended_k"]), list(choose["metrics"])
        except FileNotFoundError:
            raise GpusegError(f"--choose-k {str(choose_k_dir)!r} holds no choose_k.json; give the --out folder "
                              "of a gpuseg choose-k run") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError, OverflowError) as exc:
            raise GpusegError(f"--choose-k {str(choose_k_dir)!r}: choose_k.json is not a gpuseg choose-k "
                              f"result ({type(exc).__name__})") from None
    return {"segments": segments, "features": features, "segment": segment,
            "report": report, "model": model, "choose_k": choose}


def _mismatch(segments: list[dict[str, Any]], features: pa.Table, segment: np.ndarray,
              model: SegmentModel) -> str | None:
    """How a segment run's files disagree with each other (edited, or from different runs), or None."""
    ids = [s.get("segment") for s in segments]
    if ids != list(range(model.k)):
        return f"segments.csv lists segments {ids[:12]}, the model has segments 0 to {model.k - 1}"
    if features.num_rows != len(segment):
        return f"{features.num_rows} customers in the features, {len(segment)} in the assignments"
    if len(segment) and (segment.min() < 0 or segment.max() >= model.k):
        return f"assignments name segment {int(segment.max() if segment.max() >= model.k else segment.min())}"
    counts = np.bincount(segment, minlength=model.k).tolist()
    listed = [s.get("n_customers") for s in segments]
    if counts != listed:
        return f"segments.csv counts {listed[:12]} customers per segment, the assignments {counts[:12]}"
    return None


def _sizes_figure(segments: list[dict[str, Any]]) -> str:
    names = [f"{s['segment']}: {s['name']}" for s in segments]
    x = np.arange(len(segments))
    fig, ax = subplots(figsize=(8, 3.6))
    ax.bar(x - 0.2, [100 * s["share"] for s in segments], width=0.4, label="customers (%)")
    revenue = [np.nan if s["revenue_share"] is None else 100 * s["revenue_share"] for s in segments]
    ax.bar(x + 0.2, revenue, width=0.4, label="revenue (%)")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("% of total")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


def _profile_figure(columns: dict[str, np.ndarray], segment: np.ndarray, segments: list[dict[str, Any]]) -> str:
    k = len(segments)
    names = list(columns)
    counts = np.bincount(segment, minlength=k)
    Z = np.zeros((k, len(names)))
    for j, name in enumerate(names):
        t = columns[name].astype(np.float64)
        t = np.sign(t) * np.log1p(np.abs(t))
        with np.errstate(invalid="ignore"):  # an empty segment has no mean: a blank row
            means = np.bincount(segment, weights=t, minlength=k) / np.where(counts > 0, counts, np.nan)
        Z[:, j] = (means - t.mean()) / (t.std() or 1.0)
    fig, ax = subplots(figsize=(9, 0.5 * k + 1.6))
    im = ax.imshow(Z, cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
    ax.set_yticks(range(k), [f"{s['segment']}: {s['name']}" for s in segments])
    for i in range(k):
        for j in range(len(names)):
            ax.text(j, i, "–" if np.isnan(Z[i, j]) else f"{Z[i, j]:+.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="standing (z-score of log mean)")
    return _figure_png(fig)


def _projection_figure(Z: np.ndarray, segment: np.ndarray, segments: list[dict[str, Any]]) -> str:
    rng = np.random.default_rng(0)
    idx = rng.choice(len(Z), size=min(len(Z), PROJECTION_SAMPLE), replace=False)
    S, lab = Z[idx], segment[idx]
    S = S - S.mean(axis=0)
    if S.shape[1] >= 2:
        _, _, vt = np.linalg.svd(S, full_matrices=False)
        P = S @ vt[:2].T
    else:
        P = np.column_stack([S[:, 0], rng.normal(0, 0.05, len(S))])
    fig, ax = subplots(figsize=(7, 5))
    for s in segments:
        m = lab == s["segment"]
        ax.scatter(P[m, 0], P[m, 1], s=4, alpha=0.5, label=f"{s['segment']}: {s['name']}")
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.legend(markerscale=4, fontsize=8)
    ax.set_title(f"{len(S):,} customers, scaled features")
    return _figure_png(fig)


def _timings_figure(timings: dict[str, float]) -> str:
    stages = [s for s in timings if s != "total"]
    fig, ax = subplots(figsize=(7, 2.8))
    ax.barh(stages, [timings[s] for s in stages])
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds (total {timings.get('total', 0):.2f} s)")
    ax.grid(axis="x", alpha=0.3)
    return _figure_png(fig)


def _choose_k_figure(choose: dict[str, Any]) -> str:
    m = choose["metrics"]
    ks = [x["k"] for x in m]
    fig, axes = subplots(1, 3, figsize=(11, 3.2))
    for ax, key, title in ((axes[0], "inertia", "inertia"), (axes[1], "silhouette", "silhouette"),
                           (axes[2], "stability", "stability (mean ARI)")):
        ys = [x[key] for x in m]
        if all(y is None for y in ys):
            ax.set_visible(False)
            continue
        ax.plot(ks, [np.nan if y is None else y for y in ys], marker="o")
        ax.axvline(choose["recommended_k"], color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("k")
        ax.grid(alpha=0.3)
    return _figure_png(fig)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}h1{margin-bottom:.2rem}.muted{color:#666}table{border-collapse:collapse;margin:1rem 0;
font-size:.9rem}th,td{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}img{max-width:100%;margin:.5rem 0}section{margin-top:2rem}
"""


def build_html(data: dict[str, Any]) -> str:
    """The report page as a string."""
    rep, model, segments = data["report"], data["model"], data["segments"]
    feats = data["features"]
    columns = {name: feats.column(name).to_numpy() for name in feats.column_names if name != "customer_id"}
    segment = data["segment"].astype(np.int64)
    k = len(segments)
    X = np.stack([columns[f].astype(np.float64) for f in model.features], axis=1)
    Z = model.scaler.transform(X)
    S = standings(columns, segment, k) if all(c in columns for c in ("recency_days", "frequency", "monetary")) else None
    esc = html.escape
    rows = rep.get("rows", {})
    dropped = ", ".join(f"{esc(r)} {v:,}" for r, v in rows.get("dropped", {}).items() if v) or "none"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>gpuseg report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Customer segments</h1>",
             f"<p class='muted'>{rep.get('n_customers', 0):,} customers from {rows.get('used', 0):,} of "
             f"{rows.get('read', 0):,} transaction rows (dropped: {dropped}); as of {esc(str(rep.get('as_of')))}; "
             f"k = {model.k} on {esc(', '.join(model.features))}; backend {esc(str(rep.get('backend')))} on "
             f"{esc(str(rep.get('device')))}; gpuseg {esc(str(rep.get('gpuseg_version')))}.</p>",
             "<section><h2>Sizes and revenue</h2>", _img(_sizes_figure(segments), "segment sizes and revenue shares"),
             "<table><tr><th>segment</th><th class='l'>name</th><th class='l'>reading</th><th>customers</th>"
             "<th>share</th><th>revenue share</th><th>recency (d)</th><th>frequency</th><th>monetary</th></tr>"]
    for i, s in enumerate(segments):
        reading = describe(S[i]) if S is not None and s["n_customers"] else ""  # an empty segment has no standing
        parts.append(f"<tr><td>{s['segment']}</td><td class='l'>{esc(str(s['name']))}</td><td class='l'>{esc(reading)}</td>"
                     f"<td>{s['n_customers']:,}</td><td>{s['share']:.1%}</td><td>{_fmt(s['revenue_share'], '.1%')}</td>"
                     f"<td>{_fmt(s['mean_recency_days'], '.0f')}</td><td>{_fmt(s['mean_frequency'], '.1f')}</td>"
                     f"<td>{_fmt(s['mean_monetary'], ',.0f')}</td></tr>")
    parts.append("</table></section>")
    parts += ["<section><h2>Feature profiles</h2><p class='muted'>Each cell: the segment's mean of the feature "
              "(signed log1p) as a z-score against all customers.</p>",
              _img(_profile_figure(columns, segment, segments), "feature profiles by segment"), "</section>",
              "<section><h2>Customers in two dimensions</h2>",
              _img(_projection_figure(Z, segment, segments), "2-D projection of customers by segment"), "</section>"]
    if data["choose_k"]:
        ck = data["choose_k"]
        parts += ["<section><h2>Choosing k</h2>",
                  f"<p>Recommended k = <b>{int(ck['recommended_k'])}</b>: "
                  f"{esc('; '.join(ck.get('reasons', [])))}.</p>",
                  _img(_choose_k_figure(ck), "choose-k curves"), "</section>"]
    if rep.get("timings"):
        parts += ["<section><h2>Stage timings</h2>", _img(_timings_figure(rep["timings"]), "stage timings"),
                  "</section>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: str | os.PathLike[str], choose_k: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.html`` into a segment run's output folder; returns its path.

    ``choose_k``: the output folder (or ``choose_k.json``) of a ``gpuseg
    choose-k`` run, whose curves the page then shows.
    """
    out = Path(out)
    run = _run_identity(out)
    data = _load(out, Path(choose_k) if choose_k is not None else None)
    try:
        page = build_html(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, pa.ArrowException) as exc:
        # The files parse, but do not fit together as one run wrote them (edited, or from other runs).
        _check_same_run(out, run)
        raise GpusegError(f"the outputs in {str(out)!r} do not fit together as one gpuseg segment run wrote them "
                          f"({short_error(exc)[:300]}); run gpuseg segment again (if they are one run's, "
                          "unedited, this is a bug in gpuseg report: please report it)") from None
    path = out / REPORT_HTML
    if path.exists() and not path.is_file():
        raise GpusegError(f"{str(path)!r} exists and is not a file; move it away to write the report")
    tmp = out / f".{REPORT_HTML}.partial"
    try:
        tmp.write_text(page, encoding="utf-8")
        _check_same_run(out, run)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _run_identity(out: Path) -> tuple[int, ...] | None:
    """What tells one run's output folder from the next one's in the same place (a run replaces
    the folder whole): the folder's and its model's inodes and the model's write time."""
    try:
        folder, model = out.stat(), (out / "model.json").stat()
    except OSError:
        return None
    return folder.st_ino, model.st_ino, model.st_mtime_ns


def _check_same_run(out: Path, before: tuple[int, ...] | None) -> None:
    """Refuse to write a page beside another run's outputs: a segment run into ``out`` while the
    report was built replaced the folder, and the page would describe the files no longer there."""
    if before is not None and _run_identity(out) != before:
        raise GpusegError(f"another gpuseg run replaced the outputs in {str(out)!r} while the report was built; "
                          "run gpuseg report again")
