"""The segmentation pipeline: load → clean → features → scale → fit → assign → write."""

from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import __version__
from .backend import (Backend, default_workers, get_namespace, host_to_device, probe_cudf, resolve_backend,
                      short_error, to_numpy)
from .cleaning import day_date
from .cluster.fit import KMeansFit, fit_kmeans, nearest
from .coding import is_text
from .columns import ColumnMapping, resolve_columns
from .cudf_reading import load_cudf
from .config import SegmentConfig
from .errors import GpusegError
from .features import CustomerFeatures, compute_features
from .ingest import Ingested, ingest
from .identity import match_reference, migration, new_ids
from .generate import demo_table
from .memory import MemoryPlan, device_free_bytes, plan_fit
from .model import SegmentModel
from .outputs import (ASSIGNMENTS, FEATURES_FILE, MIGRATION, MODEL, REPORT, SEGMENTS, segment_names,
                      staged_output, write_json, write_parquet, write_segments_csv)
from .reading import check_amount_choice, expand_inputs, iter_readers, read_column_names
from .scaling import Moments, Scaler, first_non_finite
from .summary import SegmentResult, SegmentSums, fit_warnings, segment_report
from .timing import StageTimer

DEMO_SOURCE = "<demo>"
log = logging.getLogger(__name__)


class Progress(Protocol):
    """What the pipeline tells a progress display."""

    def stage(self, name: str) -> None: ...

    def rows(self, n: int) -> None: ...


class _Silent:
    def stage(self, name: str) -> None:
        pass

    def rows(self, n: int) -> None:
        pass


class Transfers:
    """Timed host↔device copies, for the report."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.log: list[dict[str, Any]] = []

    def to_device(self, name: str, a: Any) -> Any:
        if not self.backend.on_gpu or not isinstance(a, np.ndarray):
            return a
        t0 = time.perf_counter()
        out = host_to_device(self.backend.xp, a)
        self.backend.synchronize()
        self.log.append({"what": name, "direction": "host_to_device", "bytes": int(a.nbytes),
                         "seconds": round(time.perf_counter() - t0, 6)})
        return out

    def to_host(self, name: str, a: Any) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        t0 = time.perf_counter()
        out = to_numpy(a)
        self.log.append({"what": name, "direction": "device_to_host", "bytes": int(out.nbytes),
                         "seconds": round(time.perf_counter() - t0, 6)})
        return out


def load_transactions(config: SegmentConfig, timer: StageTimer, progress: Progress, xp: Any = np,
                      cudf_ok: bool = False, fallbacks: list[str] | None = None,
                      ) -> tuple[Ingested, list[str], dict[str, str | None]]:
    """Read, clean and sum the inputs (or the demo data); stages ``load`` and ``clean``.

    ``load`` runs :func:`gpuseg.ingest.ingest`'s per-batch work on a thread
    pool of every core: decoding batches (Parquet row groups, CSV blocks),
    screening their rows, coding and summing them, in ``xp`` (on the device
    for a GPU backend; only text stays on the host). ``clean`` merges the
    batches' sums. With ``cudf_ok`` files are read and cleaned by cuDF instead;
    where cuDF fails on them (other than with a :class:`GpusegError`, bad
    input, which stops the run) they are read as without it, and the reason is
    appended to ``fallbacks``. Returns the merged sums, the sources and the
    column mapping.
    """
    if config.inputs:
        with timer.stage("load"):
            files = expand_inputs(config.inputs)
            names = read_column_names(files[0])
        sources = [str(f) for f in files]
        mapping = resolve_columns(names, config.columns)
        check_amount_choice(files, mapping, config.columns, names)
        if cudf_ok:
            why = None
            try:
                return _load_cudf(files, mapping, config, timer), sources, mapping.to_dict()
            except GpusegError:
                raise
            except Exception as exc:  # noqa: BLE001 - any cuDF failure: the host reader has the last word
                why = short_error(exc)
            # Out of the except block: the exception and its traceback, which hold the failed
            # attempt's device columns, are released before the host reader starts.
            line = f"cudf: reading failed ({why}); reading and cleaning on the host with pyarrow"
            log.warning("%s", line)
            if fallbacks is not None:
                fallbacks.append(line)
        items: Any = ((f, reader) for f in files for reader in iter_readers(f, mapping))
    else:
        with timer.stage("load"):
            table = demo_table(config.demo_customers, seed=0)
        sources = [DEMO_SOURCE]
        mapping = resolve_columns(table.column_names, config.columns)
        items = ((Path(DEMO_SOURCE), b) for b in table.to_batches(1 << 20))
    tx = ingest(items, mapping, config.date_format, config.as_of, xp, default_workers(), progress.rows, timer)
    return tx, sources, mapping.to_dict()


def _load_cudf(files: list[Path], mapping: ColumnMapping, config: SegmentConfig, timer: StageTimer) -> Ingested:
    """The inputs read and cleaned by cuDF, and their features (stages ``load`` and ``features``)."""
    with timer.stage("load"):
        tx = load_cudf(files, mapping, config.date_format, config.as_of)
    with timer.stage("features"):
        feats = compute_features(tx.customer, tx.day, tx.amount, tx.order, tx.n_customers, tx.n_orders, tx.as_of)
    return Ingested(feats, tx.customer_ids, tx.n_orders, tx.as_of, tx.rows)


def use_cudf(config: SegmentConfig, backend: Backend, fallbacks: list[str]) -> bool:
    """Whether cuDF reads and cleans the inputs: on a GPU backend, for files, when it imports
    (else the reason is appended to ``fallbacks``)."""
    if not backend.on_gpu:
        return False
    cudf, why = probe_cudf()
    if cudf is None:
        fallbacks.append(f"cudf: {why}; reading and cleaning on the host with pyarrow")
        return False
    return bool(config.inputs)


def resolve_precision(config: SegmentConfig, backend: Backend) -> str:
    """``auto`` is float32 on a GPU (half the bytes per Lloyd pass) and float64 on the CPU."""
    if config.precision != "auto":
        return config.precision
    return "float32" if backend.on_gpu else "float64"


def fit_centroids(Z: Any, config: SegmentConfig, backend: Backend,
                  plan: MemoryPlan | None) -> tuple[KMeansFit, list[str]]:
    """Fit k-means on the scaled matrix with the backend's engine; returns the fit and notes."""
    if backend.name == "cuml":
        from .cluster.cuml import fit_cuml
        fit = fit_cuml(Z, config.k, n_init=config.n_init, max_iter=config.max_iter, tol=config.tol,
                       seed=config.seed)
    else:
        streamed = plan is not None and plan.mode == "streamed"
        fit = fit_kmeans(Z, config.k, n_init=config.n_init, max_iter=config.max_iter, tol=config.tol,
                         random_state=config.seed, copy_x=False, engine="streamed" if streamed else "auto",
                         stream_rows=plan.stream_rows if streamed else None)
    return fit, fit_warnings(fit, config.k, config.max_iter)


def _plan(Z: Any, config: SegmentConfig, backend: Backend) -> MemoryPlan | None:
    if not backend.on_gpu or backend.name == "cuml":
        return None
    return plan_fit(Z.shape[0], Z.shape[1], config.k, Z.dtype, device_free_bytes(backend.xp))


#: Every front-end's words when no customer is left to segment or score.
NO_PURCHASE = "no customer has a purchase order (every order nets to zero or less)"


@dataclass
class Unusable:
    """Customers whose features cannot be used, found part by part (a streamed partition, a Dask
    task) and reported as one process reports them: the first check that fails, and for it the
    first customer in id order, with counts over the whole input.

    The checks, in order: a feature that is not finite (every line amount is finite, by the drop
    rule, so it is a sum past float64's range: a corrupt amount column, which dropping the
    customer would hide); scaled features whose distances would overflow ``precision`` (a model's
    scaler on data far beyond what it was fitted on); a distance that overflows.
    """

    precision: str = "float64"
    names: tuple[str, ...] = ()                                        # the features scaled
    order: list[str] = field(default_factory=list)                    # feature columns, as computed
    features: dict[str, list[Any]] = field(default_factory=dict)      # name -> [who, value, count]
    scaled: list[Any] = field(default_factory=list)                   # the first customer, if any
    distance: list[Any] = field(default_factory=list)

    def check_features(self, feats: CustomerFeatures, customer_ids: pa.Array) -> "Unusable":
        self.order = self.order or list(feats.columns)
        for name, col in feats.columns.items():
            row = first_non_finite(col)
            if row is not None:
                xp = get_namespace(col)
                count = int(col.shape[0] - xp.count_nonzero(xp.isfinite(col)))
                self._first(self.features.setdefault(name, []), customer_ids[int(feats.customer[row])].as_py(),
                            float(col[row]), count)
        return self

    def check_scaled(self, Z: Any, who: Callable[[int], Any]) -> "Unusable":
        """``who(row)``: the id of the customer of a row of ``Z``."""
        row = unmeasurable_row(Z)
        if row is not None:
            self._first(self.scaled, who(row))
        return self

    def check_distance(self, distance: Any, ids: pa.Array) -> "Unusable":
        row = first_non_finite(distance)
        if row is not None:
            self._first(self.distance, ids[row].as_py())
        return self

    @staticmethod
    def _first(slot: list[Any], who: Any, value: float = 0.0, count: int = 1) -> None:
        if not slot:
            slot[:] = [who, value, count]
            return
        if who < slot[0]:  # ids of one type throughout (gpuseg.coding.unified_type)
            slot[0], slot[1] = who, value
        slot[2] += count

    def __iadd__(self, other: "Unusable") -> "Unusable":
        self.order = self.order or other.order
        for name, slot in other.features.items():
            self._first(self.features.setdefault(name, []), *slot)
        for mine, theirs in ((self.scaled, other.scaled), (self.distance, other.distance)):
            if theirs:
                self._first(mine, *theirs)
        return self

    def refuse(self) -> None:
        """Raise the error one process would raise for the whole input, if any."""
        for name in self.order:
            if name in self.features:
                who, value, count = self.features[name]
                raise GpusegError(
                    f"customer {who!r} has a {name} of {value} ({count} customer(s) in all): their line "
                    "amounts sum past float64's range (about 1.8e308); fix or remove those rows, every feature "
                    "must be finite")
        if self.scaled:
            raise GpusegError(f"customer {self.scaled[0]!r} is too far from every segment to measure: its features "
                              f"({', '.join(self.names)}) scale to values beyond {self.precision}'s range for "
                              "distances, far outside what the scaler was fitted on; check the amount column")
        if self.distance:
            raise GpusegError(f"customer {self.distance[0]!r} is too far from every segment to measure (its "
                              "distance overflows float64): its features are far outside what the model was "
                              "trained on; check the amount column")


def refuse_non_finite(feats: CustomerFeatures, customer_ids: pa.Array) -> None:
    """Stop on a customer with a non-finite feature, naming the customer (see :class:`Unusable`)."""
    Unusable().check_features(feats, customer_ids).refuse()


#: Largest scaled value whose distances can be measured, per precision: its square, summed
#: over up to 32 features, stays below the type's range.
MEASURABLE = {"float64": 1e150, "float32": 1e18}


def refuse_non_finite_scaled(Z: Any, feats: CustomerFeatures, customer_ids: pa.Array, names: Any,
                             precision: str) -> None:
    """Stop when a finite feature scales to a value whose distances overflow, or past the range of
    ``precision``: a model's scaler on data far beyond what it was fitted on."""
    Unusable(precision, tuple(names)).check_scaled(
        Z, lambda row: customer_ids[int(feats.customer[row])].as_py()).refuse()


def unmeasurable_row(Z: Any) -> int | None:
    """The first row of scaled features whose distances would overflow (or NaN), or None."""
    xp = get_namespace(Z)
    limit = MEASURABLE[str(Z.dtype)]
    # Two reductions without temporaries decide the usual case (a NaN makes both comparisons false).
    if Z.size == 0 or (float(Z.max()) <= limit and float(Z.min()) >= -limit):
        return None
    bad = ~(xp.abs(Z) <= limit)  # NaN and inf too
    if bad.ndim > 1:
        bad = bad.any(axis=1)
    return int(xp.argmax(bad)) if int(xp.count_nonzero(bad)) else None


def date_warnings(as_of: int, given: dt.date | None, today: dt.date | None = None) -> list[str]:
    """A note when as_of, taken from the data, lies in the future: a date typo (2206 for 2026)
    inside the accepted range would otherwise make every recency silently wrong."""
    today = today or dt.date.today()
    if given is not None or day_date(as_of) <= today + dt.timedelta(days=1):
        return []
    return [f"the latest date used, {day_date(as_of - 1)}, is after today ({today}); every recency counts from "
            "it: check the date column, or give --as-of"]


def dotted_ids(ids: pa.Array) -> pa.Array:
    """The text ids written with a decimal point and zeros, without them ('12346.0' -> '12346'), one
    per such id; empty for ids that are not text."""
    if not is_text(ids.type) or not len(ids):
        return pa.array([], pa.string())
    dotted = pc.match_substring_regex(ids, r"^-?[0-9]+\.0+$")
    if not pc.any(dotted).as_py():
        return pa.array([], pa.string())
    return pc.replace_substring_regex(ids.filter(dotted), r"\.0+$", "").cast(pa.string())


def dotted_twins(ids: pa.Array) -> int:
    """How many text customer ids are another id written with a decimal point and zeros ('12346.0'
    beside '12346'): a CSV export of float ids writes them so, Parquet and integer files do not.
    Every front-end counts them among the customers it segments (those with a purchase)."""
    stripped = dotted_ids(ids)
    return int(pc.sum(pc.is_in(stripped, value_set=ids)).as_py() or 0) if len(stripped) else 0


def id_warnings(twins: int) -> list[str]:
    """A note when :func:`dotted_twins` found some: they are counted as different customers."""
    if not twins:
        return []
    return [f"{twins} customer id(s) appear both as a whole number and with a decimal point (as 12346 and "
            "12346.0) and are counted as different customers; write the ids one way in every file (a CSV "
            "export of float ids writes the .0)"]


def refuse_empty_segments(n_distinct: int, k: int, n: int, features: Any, option: str = "--k") -> None:
    """Stop when k-means could fill fewer than ``k`` segments.

    Lloyd's iteration moves an empty cluster onto a far point, so a segment
    stays empty only when the customers have fewer than ``k`` distinct
    feature rows (identical customers); an empty segment has no profile.
    """
    if n_distinct < k:
        raise GpusegError(f"{option} {k}: the {n} customers have only {n_distinct} distinct value(s) of "
                          f"{','.join(features)}, so {k - n_distinct} segment(s) would be empty; "
                          f"allowed: {option} <= {n_distinct}")


@dataclass
class Prepared:
    """Everything up to the scaled feature matrix: shared by segment, choose-k and score."""

    backend: Backend
    timer: StageTimer
    transfers: Transfers
    fallbacks: list[str]
    tx: Ingested
    sources: list[str]
    columns: dict[str, str | None]
    feats: CustomerFeatures
    scaler: Scaler
    Z: Any
    precision: str


def prepare(config: SegmentConfig, progress: Progress | None = None, scaler: Scaler | None = None) -> Prepared:
    """Resolve the backend, then load, clean, build features and scale them.

    With ``scaler`` (a saved model's) the features are transformed with it
    instead of fitting a new one. Stages ``load``, ``clean``, ``features``, ``scale``.
    """
    progress = progress or _Silent()
    backend = resolve_backend(config.backend)
    fallbacks = list(backend.fallbacks)
    cudf_ok = use_cudf(config, backend, fallbacks)
    timer = StageTimer(sync=backend.synchronize, on_start=progress.stage)
    transfers = Transfers(backend)
    # cuDF reads files only (use_cudf); the demo data, and files read without cuDF or after it
    # failed, are cleaned and summed in the backend's namespace, on the device for a GPU backend.
    tx, sources, columns = load_transactions(config, timer, progress, backend.xp, cudf_ok, fallbacks)
    if tx.device_bytes:
        transfers.log.append({"what": "decoded batches, cleaned and summed on the device (overlapped with decoding)",
                              "direction": "host_to_device", "bytes": int(tx.device_bytes), "seconds": None})

    feats = tx.features
    if len(feats) == 0:
        raise GpusegError(NO_PURCHASE)
    refuse_non_finite(feats, tx.customer_ids)

    precision = resolve_precision(config, backend)
    with timer.stage("scale"):
        names = scaler.features if scaler is not None else config.features
        # Column by column, on every core: no (n, d) float64 copy of the features is made.
        cols = [feats.columns[name] for name in names]
        workers = default_workers()
        scaler = scaler if scaler is not None else Scaler.from_moments(Moments.of_columns(cols, workers), names)
        # Feature-major on the host: its Lloyd step's X·Cᵀ over contiguous columns is a GEMM
        # about twice as fast (gpuseg.cluster.host); the device steps take rows.
        Z = scaler.transform_columns(cols, precision, workers, order="C" if backend.on_gpu else "F")
        del cols
        refuse_non_finite_scaled(Z, feats, tx.customer_ids, names, precision)
    return Prepared(backend, timer, transfers, fallbacks, tx, sources, columns, feats, scaler, Z, precision)


def run(config: SegmentConfig, progress: Progress | None = None) -> SegmentResult:
    """Run the whole pipeline for ``config`` and write its outputs.

    Raises
    ------
    GpusegError
        For bad input or options; nothing is written to ``config.out`` then.
    """
    p = prepare(config, progress)
    backend, timer, transfers, fallbacks = p.backend, p.timer, p.transfers, p.fallbacks
    tx, sources, columns, feats, scaler, Z, precision = p.tx, p.sources, p.columns, p.feats, p.scaler, p.Z, p.precision
    del p
    n = len(feats)
    if config.k > n:
        raise GpusegError(f"--k {config.k} is more than the {n} customers with a purchase; allowed: 1..{n}")

    # features.parquet needs nothing after the features stage: a writer thread encodes it while the
    # fit and the assignment run (they leave cores idle), and the other writer the assignments
    # after them (Arrow's writer releases the GIL). The staging folder is made first, so a failed
    # fit leaves no partial output; the writers are waited for before it is removed, so that
    # failure reaches the user once the features are written (seconds at 10⁸ rows).
    with staged_output(config.out) as tmp, ThreadPoolExecutor(2) as writers:
        with timer.stage("fit"):  # the features' copy back and the start of their write are charged here
            host = {name: transfers.to_host(name, col) for name, col in feats.columns.items()}
            # feats.customer picks increasing codes: as many as there are ids means all, in order.
            ids = tx.customer_ids if len(feats) == len(tx.customer_ids) else \
                tx.customer_ids.take(pa.array(transfers.to_host("customer", feats.customer)))
            features_written = writers.submit(write_parquet, tmp / FEATURES_FILE, {"customer_id": ids, **host})
            plan = _plan(Z, config, backend)
            if plan is not None and plan.mode == "streamed":
                Z = transfers.to_host("scaled features (streamed fit)", Z)
            km, notes = fit_centroids(Z, config, backend, plan)
            notes += date_warnings(tx.as_of, config.as_of) + id_warnings(dotted_twins(ids))
            refuse_empty_segments(km.n_distinct, config.k, n, config.features)

        with timer.stage("assign"):
            streamed = plan is not None and plan.mode == "streamed"
            labels, sqdist = nearest(Z, km.centers, engine="streamed" if streamed else "auto",
                                     stream_rows=plan.stream_rows if streamed else None)
            lxp = get_namespace(labels)
            distance = lxp.sqrt(sqdist)
            # A streamed fit assigns on the host; the sums need the features where the labels are.
            columns_here = feats.columns if lxp is backend.xp else host
            sums = SegmentSums.of(labels, columns_here, config.k, distance)  # k rows come back
            perm = sums.revenue_order()
            rank = np.argsort(perm)
            sums = sums.relabel(rank)
            labels = lxp.asarray(rank.astype(np.int32))[labels]
            centroids = to_numpy(km.centers).astype(np.float64)[perm]

        with timer.stage("write"):
            segment_np = transfers.to_host("segment", labels)
            distance_np = transfers.to_host("distance", distance)
            names = sums.names()
            moves, retired = None, ()
            if config.reference_model is not None:
                segment_np, centroids, names, moves, retired = _follow_reference(
                    config.reference_model, scaler, segment_np, centroids, names, ids)
                sums = SegmentSums.of(segment_np, host, centroids.shape[0], distance_np)
            profiles = sums.profiles(names)
            model = SegmentModel(
                features=config.features, scaler=scaler, centroids=centroids, seed=config.seed,
                as_of=day_date(tx.as_of), backend=backend.name, columns=columns,
                date_format=config.date_format, version=__version__, segment_names=tuple(names),
                training=sums.training(), retired=retired)
            written = [writers.submit(write_parquet, tmp / ASSIGNMENTS,
                                      {"customer_id": ids, "segment": segment_np,
                                       "segment_name": segment_names(segment_np, names), "distance": distance_np}),
                       features_written]
            write_segments_csv(tmp / SEGMENTS, profiles)
            if moves:
                write_segments_csv(tmp / MIGRATION, moves)
            model.save(tmp / MODEL)
            for f in written:
                f.result()
        if config.reference_model is not None:
            migrated = ("written to migration.csv" if moves else
                        "no customers in common with the reference run" if moves == [] else
                        "no assignments.parquet beside the reference model")
            if not moves:  # the user asked for a migration table and gets none: say so where they look
                notes.append(f"--reference-model: no migration.csv, {migrated}")
        report = segment_report(
            config, km, inputs=sources, columns=columns, as_of=tx.as_of, backend=backend.name,
            device=backend.device, fallbacks=fallbacks, rows=tx.rows, n_customers=n,
            customers_without_purchase=feats.n_without_purchase, warnings=notes, timings=timer.as_dict(),
            demo=sources == [DEMO_SOURCE], precision=precision, memory_plan=plan.to_dict() if plan else None,
            transfers=transfers.log)
        if config.reference_model is not None:
            report["reference_model"] = str(config.reference_model)
            report["migration"] = migrated
        write_json(tmp / REPORT, report)
    return SegmentResult(config.out, report, profiles, model)


def _follow_reference(path: Path, scaler: Scaler, segment: np.ndarray, centroids: np.ndarray, names: list[str],
                      ids: pa.Array) -> tuple[np.ndarray, np.ndarray, list[str], list[dict] | None, tuple[int, ...]]:
    """Relabel segments to the reference model's ids and names; also the migration table, and
    the reference's ids that no new segment took (kept, named, in the model as retired)."""
    reference = SegmentModel.load(path)
    match = match_reference(reference, scaler, centroids)
    new = new_ids(match, reference.k)
    k_out = max(int(new.max()) + 1, reference.k)  # every reference id stays, the unmatched ones retired
    old_names = reference.names()
    out_names = [f"Segment {i}" for i in range(k_out)]
    out_centroids = np.zeros((k_out, centroids.shape[1]))
    for j, i in enumerate(new):
        out_centroids[i] = centroids[j]
        out_names[i] = old_names[match[j]] if match[j] >= 0 else names[j]
    taken = set()
    for i, name in enumerate(out_names):  # an unmatched segment's own name may repeat a kept one
        while name in taken:
            name += " (new)"
        out_names[i] = name
        taken.add(name)
    if k_out > len(new):  # reference ids with no new segment: keep them empty, named
        for i in set(range(k_out)) - set(new.tolist()):
            out_names[i] = old_names[i] if i < len(old_names) else out_names[i]
            out_centroids[i] = scaler.transform(reference.scaler.inverse_transform(reference.centroids[i:i + 1]))[0]
    segment = new.astype(np.int32)[segment]
    moves = migration(Path(path).parent, ids, segment, old_names, out_names)
    return segment, out_centroids, out_names, moves, tuple(sorted(set(range(k_out)) - set(new.tolist())))


def segment(inputs: str | Sequence[str] = (), **options: Any) -> SegmentResult:
    """Segment customers from transaction files (or the demo data when empty).

    ``options`` are the fields of :class:`SegmentConfig` (``out``, ``k``,
    ``features``, ``backend``, ``columns``, ``date_format``, ``as_of``, ...).

    Examples
    --------
    >>> result = gpuseg.segment(["sales/*.parquet"], out="segments", k=6)  # doctest: +SKIP
    >>> result.report["n_customers"]  # doctest: +SKIP
    """
    return run(SegmentConfig(inputs=inputs, **options))  # type: ignore[arg-type]  # a path, several, or None
