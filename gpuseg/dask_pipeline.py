"""The same pipeline on a Dask cluster: ``gpuseg segment ... --scheduler ADDRESS|local``.

Each task reads a piece of one input file with gpuseg's own reader
(:func:`gpuseg.reading.read_piece`) and cleans it by :class:`gpuseg.cleaning.Cleaner`,
as one process reads and cleans it; the ids of all pieces are converted to the
one type one process gives them (:func:`gpuseg.coding.unified_type`); rows are then
shuffled on the customer id, so that every customer's rows meet in one
partition, where :func:`gpuseg.features.compute_features` builds the features
exactly as in one process. The scaler is :meth:`gpuseg.scaling.Scaler.from_moments`
of per-partition :class:`~gpuseg.scaling.Moments`, and the Lloyd iteration runs
as per-partition partial sums (:func:`gpuseg.cluster.steps.lloyd_partials`)
reduced on the client each iteration, through the same driver
(:func:`gpuseg.cluster.lloyd.lloyd`) and the same Step contract (:class:`DaskStep`). Revenue order, names, ``segments.csv``, the
model's training summary and the report come from per-partition
:class:`~gpuseg.summary.SegmentSums` added on the client, by the same code as
in one process. Workers
write the outputs as Parquet datasets (one file per partition) into a staging
folder next to ``--out``, which is moved into place only when everything
succeeded: ``--out`` must be on storage that every worker and the client can
reach.

Seeding: when the customers fit in :data:`SEED_ROWS` rows the client gathers
the scaled features in customer-id order and runs k-means++ exactly as one
process does, so the same seed gives the same result; beyond that it seeds
from a random sample of that many rows.

Worker memory: Dask spills partitions to disk when a worker passes its memory
limit (60–70% of ``memory_limit``); a worker needs room for one input
partition and one shuffled partition being featurised (about 100 bytes per
transaction row, like the single-process pipeline).
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__
from .backend import _import
from .cleaning import (AFTER_AS_OF, BatchStats, Cleaner, KeptRows, RowCounts, as_of_of, assemble, check_rows,
                       day_date, day_number, ids_to_int)
from .cluster.contract import Partials, reduce_partials
from .coding import IdFacts, id_facts, to_unified, unified_type
from .cluster.fit import KMeansFit, nearest
from .cluster.init import check_random_state, kmeans_plusplus
from .cluster.lloyd import LloydResult, lloyd
from .cluster.steps import lloyd_partials
from .columns import ColumnMapping, resolve_columns
from .config import SegmentConfig
from .errors import GpusegError
from .features import FEATURES, compute_features
from .model import SegmentModel
from .outputs import MODEL, REPORT, SEGMENTS, segment_names, staged_output, write_json, write_segments_csv
from .pipeline import NO_PURCHASE, Unusable, date_warnings, dotted_ids, id_warnings, refuse_empty_segments
from .reading import FilePiece, check_amount_choice, expand_inputs, file_pieces, read_column_names, read_piece
from .scaling import Moments, Scaler
from .summary import SegmentResult, SegmentSums, fit_warnings, run_report, segment_report
from .timing import StageTimer

#: Customers up to which seeding gathers every scaled row to the client (else a sample of
#: this many): 4M rows of a few features is tens of MB.
SEED_ROWS = 1 << 22


# -- connecting ---------------------------------------------------------------------

def connect(scheduler: str) -> tuple[Any, Any, str]:
    """A Dask client for ``scheduler``: an address, or ``local`` for a cluster on this machine.

    ``local`` starts a ``LocalCUDACluster`` (one worker per GPU) when dask-cuda
    and a GPU are present, else a ``LocalCluster`` with one single-threaded
    worker process per core. Returns (client, cluster or None, description).
    """
    if not scheduler.strip():
        raise GpusegError("--scheduler is empty; allowed: 'local' (a cluster on this machine) or a scheduler's "
                          "address such as tcp://host:8786")
    try:
        distributed = _import("distributed")
    except ImportError as exc:
        raise GpusegError(f"--scheduler needs Dask: {exc}; install the gpuseg[dask] extra") from None
    if scheduler == "local":
        try:
            from .backend import probe_cupy
            cp, _ = probe_cupy()
            if cp is not None:
                cluster = _import("dask_cuda").LocalCUDACluster(silence_logs=logging.CRITICAL, dashboard_address=":0")
                return distributed.Client(cluster), cluster, "LocalCUDACluster"
        except ImportError:
            pass
        # Workers' own logs (a task's error, shutdown chatter) stay quiet: gpuseg reports errors itself.
        # The dashboard takes any free port: 8787 may be another cluster's, which Dask warns about.
        with _children_ignore_sigint():
            cluster = distributed.LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                               silence_logs=logging.CRITICAL, dashboard_address=":0")
        return distributed.Client(cluster), cluster, "LocalCluster"
    try:
        return distributed.Client(scheduler, timeout="10s"), None, scheduler
    except (ValueError, TypeError) as exc:
        raise GpusegError(f"--scheduler {scheduler!r} is not a Dask scheduler address ({exc}); allowed: an "
                          "address such as tcp://host:8786, or 'local'") from None
    except (OSError, TimeoutError) as exc:
        raise GpusegError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None


@contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start the local workers with SIGINT ignored: a terminal's Ctrl-C reaches the whole process
    group, and workers that took it printed tracebacks while gpuseg stopped the run and closed
    them. Only the main thread may set handlers; elsewhere nothing changes. A Ctrl-C in the second
    or so the workers take to start is lost (an ignored signal is discarded; blocking it instead
    is not inherited by Dask's worker processes): the run goes on and stops at the next one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- tasks that run on the workers (module-level, so they pickle) --------------------

@dataclass
class CleanedPiece:
    """One input piece cleaned on a worker: each batch's kept rows, what happened to the
    others, and the facts that decide the one id type of the whole input."""

    kept: list[KeptRows]
    stats: BatchStats
    customer_facts: list[IdFacts]
    invoice_facts: list[IdFacts]


def _clean_piece(piece: FilePiece, mapping: ColumnMapping, date_format: str | None,
                 as_of: dt.date | None) -> CleanedPiece:
    """Read and clean one piece of an input file, batch by batch, as one process does."""
    cleaner = Cleaner(mapping, date_format, as_of)
    kept = [k for b in read_piece(piece, mapping) if (k := cleaner.batch(Path(piece.path), b)) is not None
            and len(k.day)]
    return CleanedPiece(kept, cleaner.stats, [id_facts(k.ids) for k in kept],
                        [id_facts(k.invoices) for k in kept] if mapping.invoice else [])


def _facts(piece: CleanedPiece) -> tuple[BatchStats, list[IdFacts], list[IdFacts]]:
    return piece.stats, piece.customer_facts, piece.invoice_facts


def _frame(schema: pa.Schema, kept: list[KeptRows] = ()) -> Any:
    """Kept rows as one pandas frame of Arrow-backed columns in ``schema``'s types, their ids
    converted to the one type of the whole input (:func:`gpuseg.coding.to_unified`)."""
    import pandas as pd
    customer, invoice = schema.field("customer").type, \
        schema.field("invoice").type if "invoice" in schema.names else None
    cols = {"customer": [to_unified(k.ids, customer) for k in kept],
            "day": [pa.array(k.day, pa.int32()) for k in kept],
            "amount": [pa.array(k.amount, pa.float64()) for k in kept]}
    if invoice is not None:
        cols["invoice"] = [to_unified(k.invoices, invoice) for k in kept]
    table = pa.table({name: pa.chunked_array(parts, schema.field(name).type).combine_chunks()
                      for name, parts in cols.items()}, schema=schema)
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _piece_frame(piece: CleanedPiece, schema: pa.Schema) -> Any:
    return _frame(schema, piece.kept)


def _features_part(pdf: Any, as_of: int, schema: pa.Schema) -> tuple[Any, tuple[int, Unusable]]:
    """Features of the customers of one shuffled partition (all their rows are here), and the
    customers without a purchase and those whose features cannot be used (the client reports them)."""
    import pandas as pd
    table = pa.Table.from_pandas(pdf, preserve_index=False)
    if table.num_rows == 0:
        return pd.DataFrame(), (0, Unusable())
    has_invoice = "invoice" in schema.names
    # The ids have the input's one type already (as Dask handed them: the schema's again).
    kept = KeptRows(ids=table.column("customer").combine_chunks().cast(schema.field("customer").type),
                    invoices=table.column("invoice").combine_chunks().cast(schema.field("invoice").type)
                    if has_invoice else None,
                    day=table.column("day").to_numpy(), amount=table.column("amount").to_numpy())
    tx = assemble([kept], as_of, RowCounts(), False, has_invoice)
    feats = compute_features(tx.customer, tx.day, tx.amount, tx.order, tx.n_customers, tx.n_orders, tx.as_of)
    unusable = Unusable().check_features(feats, tx.customer_ids)
    ids = tx.customer_ids.take(pa.array(feats.customer))
    out = pa.table({"customer_id": ids, **{name: feats.columns[name] for name in FEATURES}})
    return out.to_pandas(types_mapper=pd.ArrowDtype), (feats.n_without_purchase, unusable)


def _matrix(pdf: Any, names: tuple[str, ...]) -> np.ndarray:
    return np.stack([pdf[n].to_numpy(dtype=np.float64) for n in names], axis=1) if len(pdf) else \
        np.empty((0, len(names)))


def _moments(pdf: Any, names: tuple[str, ...]) -> Moments:
    return Moments.of(_matrix(pdf, names))


def _scaled(pdf: Any, scaler: Scaler, shift: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(scaler.transform(_matrix(pdf, scaler.features)) - shift)


def _partials(Z: np.ndarray, centers: np.ndarray) -> Partials:
    if len(Z) == 0:
        k, d = centers.shape
        return Partials(np.zeros((k, d)), np.zeros(k), 0.0)
    return lloyd_partials(Z, centers)


def _assign_part(Z: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(Z) == 0:
        return np.empty(0, np.int32), np.empty(0)
    return nearest(Z, centers, n_threads=1)


def _rows(Z: np.ndarray, i: np.ndarray) -> np.ndarray:
    return Z[i]


def _segment_sums(pdf: Any, Z: np.ndarray, centers: np.ndarray) -> SegmentSums:
    """Per-segment sums of one partition (for the revenue order, names, profiles and distances)."""
    labels, sqdist = _assign_part(Z, centers)
    columns = {name: pdf[name].to_numpy(dtype=np.float64) if len(pdf) else np.empty(0) for name in FEATURES}
    return SegmentSums.of(labels, columns, centers.shape[0], np.sqrt(sqdist), workers=1)  # a task: no nested pool


def _write_part(pdf: Any, Z: np.ndarray, index: int, centers: np.ndarray, rank: np.ndarray, names: list[str],
                folder: str, id_type: pa.DataType) -> int:
    """Write one partition of assignments and features; returns its row count."""
    if len(pdf) == 0:
        return 0
    labels, sqdist = _assign_part(Z, centers)
    seg = rank.astype(np.int32)[labels]
    feats = _with_id_type(pa.Table.from_pandas(pdf, preserve_index=False), id_type)
    ids = feats.column("customer_id")
    pq.write_table(pa.table({"customer_id": ids, "segment": seg, "segment_name": segment_names(seg, names),
                             "distance": np.sqrt(sqdist)}), Path(folder) / "assignments" / f"part-{index:05d}.parquet")
    pq.write_table(feats, Path(folder) / "features" / f"part-{index:05d}.parquet")
    return len(pdf)


def _with_id_type(table: pa.Table, id_type: pa.DataType) -> pa.Table:
    """``customer_id`` in the input's id type again (pandas hands text back as large_string)."""
    i = table.schema.get_field_index("customer_id")
    return table.set_column(i, pa.field("customer_id", id_type), table.column(i).cast(id_type))


# -- the Lloyd step over partitions --------------------------------------------------

class DaskStep:
    """The Lloyd :class:`~gpuseg.cluster.contract.Step` over the scaled features held by the
    workers: partial sums per partition, reduced on the client."""

    name = "dask"
    xp = np

    def __init__(self, client: Any, parts: list[Any], sizes: list[int], d: int):
        self.client, self.parts, self.d = client, parts, d
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def count(self) -> int:
        return int(self.offsets[-1])

    def dim(self) -> int:
        return self.d

    def get_subset(self, indices: np.ndarray | None) -> np.ndarray:
        """The rows, gathered with one task per partition that holds any of them."""
        if indices is None:
            return np.concatenate(self.client.gather(self.parts))
        indices = np.asarray(indices, dtype=np.int64)
        part = np.searchsorted(self.offsets, indices, side="right") - 1
        out = np.empty((len(indices), self.d))
        wanted = np.unique(part)
        futures = [self.client.submit(_rows, self.parts[p], indices[part == p] - self.offsets[p], pure=False)
                   for p in wanted]
        for p, rows in zip(wanted, self.client.gather(futures)):
            out[part == p] = rows
        return out

    def labels(self) -> None:
        return None

    def restart(self) -> None:
        pass

    def partials(self, centers: np.ndarray, delta: bool = False) -> Partials:
        futures = self.client.map(_partials, self.parts, centers=centers, pure=False)
        return reduce_partials(self.client.gather(futures))

    def assign(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = self.client.gather(self.client.map(_assign_part, self.parts, centers=centers, pure=False))
        return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])

    def inertia(self, centers: np.ndarray) -> float:
        return float(self.assign(centers)[1].sum())


# -- the run ----------------------------------------------------------------------------

def _combine_stats(stats: list[BatchStats], as_of: dt.date | None) -> BatchStats:
    """The partitions' cleaning stats merged in input order, as one process merges its batches'."""
    total = BatchStats(RowCounts())
    if as_of is not None:
        total.rows.dropped[AFTER_AS_OF] = 0
    for s in stats:
        total.merge(s)
    return total


def _fit_scaler(client: Any, parts: list[Any], names: tuple[str, ...]) -> tuple[Scaler, int]:
    """The scaler from per-partition moments, and the number of customers."""
    moments = reduce(operator.add, client.gather(client.map(_moments, parts, names=names, pure=False)),
                     Moments.empty(len(names)))
    if moments.n == 0:
        raise GpusegError(NO_PURCHASE)
    return Scaler.from_moments(moments, names), moments.n


def _seed(client: Any, step: DaskStep, feats: list[Any], k: int, seed: int) -> np.ndarray:
    """k-means++ centres: on every row in customer-id order when they fit, else on a sample."""
    state = check_random_state(seed)
    n = step.count()
    if n <= SEED_ROWS:
        Z = step.get_subset(None)
        ids = pa.concat_arrays([pa.Table.from_pandas(f[["customer_id"]], preserve_index=False)
                                .column(0).combine_chunks() for f in client.gather(feats) if len(f)])
        if pa.types.is_float16(ids.type):  # Arrow sorts no half floats; float32 holds them exactly
            ids = ids.cast(pa.float32())
        order = np.asarray(pc.sort_indices(ids))
        return kmeans_plusplus(Z[order], k, state)
    rows = np.sort(state.choice(n, size=SEED_ROWS, replace=False))
    return kmeans_plusplus(step.get_subset(rows), k, state)


@contextmanager
def _session(scheduler: str, client: Any) -> Iterator[tuple[Any, str]]:
    """A client (the given one, or a new connection closed afterwards); failures on
    the cluster come out as one clear error."""
    own = client is None
    cluster = None
    if own:
        client, cluster, where = connect(scheduler)
    else:
        where = str(client.scheduler_info().get("address", "client"))
    try:
        yield client, where
    except GpusegError:
        raise
    except Exception as exc:
        raise _cluster_error(exc) from None
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()


def _cluster_error(exc: BaseException) -> BaseException:
    """A failure on the cluster as one clear line (nothing is written then)."""
    if type(exc).__name__ == "KilledWorker":
        return GpusegError("Dask workers kept dying while running a task (often: out of memory); give the workers "
                           f"a larger memory limit or more partitions. Dask said: {str(exc).splitlines()[0]}")
    if isinstance(exc, (OSError, TimeoutError)) or type(exc).__name__ in ("CommClosedError", "CancelledError"):
        return GpusegError(f"lost the Dask cluster during the run ({type(exc).__name__}: {exc})")
    return exc


def run_dask(config: SegmentConfig, scheduler: str = "local", init: np.ndarray | None = None,
             on_stage: Callable[[str], None] | None = None, client: Any = None) -> SegmentResult:
    """Run ``gpuseg segment`` on a Dask cluster; writes ``config.out``.

    Returns the same :class:`~gpuseg.summary.SegmentResult` as
    :func:`gpuseg.pipeline.run`.

    ``init`` (k × d, in the scaled units) replaces k-means++ seeding; ``client``
    reuses an existing Dask client instead of connecting to ``scheduler``.

    Raises
    ------
    GpusegError
        For bad input or options, or a scheduler that cannot be reached;
        nothing is written to ``config.out`` then.
    """
    if not config.inputs:
        raise GpusegError("--scheduler needs INPUT files; the demo data runs in one process")
    _refuse_gpu_backend(config.backend)
    with _session(scheduler, client) as (client, where):
        return _run(config, client, where, StageTimer(on_start=on_stage), init)


def _refuse_gpu_backend(backend: str) -> None:
    """The workers compute on their CPUs in this version: a GPU backend asked for is an
    error, not a run that quietly does without it."""
    if backend in ("cupy", "cuml"):
        raise GpusegError(f"--backend {backend} is not supported with --scheduler yet: the Dask path computes on "
                          "the workers' CPUs; use --backend cpu or auto, or run without --scheduler")


@dataclass
class ClusterFeatures:
    """Per-customer features held by the workers, one pandas frame per partition."""

    parts: list[Any]
    files: list[Path]
    mapping: ColumnMapping
    rows: RowCounts
    as_of: int
    n_without: int
    workers: int
    id_type: pa.DataType
    twins: int = 0  # ids written 12346.0 beside 12346 (pipeline.dotted_twins), over every partition


def cluster_features(client: Any, inputs: tuple[str, ...], columns: dict[str, str], date_format: str | None,
                     as_of: dt.date | None, timer: StageTimer) -> ClusterFeatures:
    """Read, clean, shuffle on customer id and build features on the cluster (stages clean, features)."""
    dask = _import("dask")
    dd = _import("dask.dataframe")
    files = expand_inputs(inputs)
    names = read_column_names(files[0])
    mapping = resolve_columns(names, columns)
    check_amount_choice(files, mapping, columns, names)
    workers = len(client.scheduler_info().get("workers", {}))

    # Delayed tasks over a dask-expr frame (a function with two results per partition) make Dask
    # note that it materialises the graph: a note for Dask's developers, not for gpuseg's users.
    warnings.filterwarnings("ignore", message="Computing mixed collections", category=UserWarning)
    with timer.stage("clean"):
        pieces = [p for f in files for p in file_pieces(f, mapping)]
        cleaned = client.map(_clean_piece, pieces, mapping=mapping, date_format=date_format, as_of=as_of, pure=False)
        facts = client.gather(client.map(_facts, cleaned, pure=False))
        total = _combine_stats([f[0] for f in facts], as_of)
        check_rows(total, mapping, date_format)
        rows, as_of_day = total.rows, as_of_of(total, day_number(as_of) if as_of is not None else None)
        # The one type of the ids of all pieces, as one process gives them (every piece then
        # converts its own), so that equal customers meet in the shuffle and types agree.
        fields = [pa.field("customer", unified_type([c for f in facts for c in f[1]], ids_to_int(total))),
                  pa.field("day", pa.int32()), pa.field("amount", pa.float64())]
        if mapping.invoice is not None:
            fields.append(pa.field("invoice", unified_type([c for f in facts for c in f[2]], True)))
        schema = pa.schema(fields)
        frames = client.map(_piece_frame, cleaned, schema=schema, pure=False)
        kept = dd.from_delayed([dask.delayed(f) for f in frames], meta=_frame(schema))
        del cleaned

    with timer.stage("features"):
        # Task-based shuffle: its pieces are ordinary (spillable) results, which keeps
        # workers with tight memory limits moving where the p2p shuffle stalled.
        shuffled = kept.shuffle(on="customer", npartitions=max(1, kept.npartitions), shuffle_method="tasks")
        pairs = [dask.delayed(_features_part, nout=2)(p, as_of_day, schema) for p in shuffled.to_delayed()]
        futures = client.compute([p[0] for p in pairs] + [p[1] for p in pairs])  # one pass over each partition
        feats, checks = futures[:len(pairs)], futures[len(pairs):]
        n_without, unusable = 0, Unusable()
        for n, found in client.gather(checks):
            n_without += n
            unusable += found
        unusable.refuse()  # as one process: the first customer in id order, counts over all partitions
        del kept, shuffled, frames
    return ClusterFeatures(feats, files, mapping, rows, as_of_day, int(n_without), workers,
                           schema.field("customer").type, _twins(client, feats))


def _ids(pdf: Any) -> pa.Array:
    """A features partition's customer ids as one Arrow array."""
    return pa.Table.from_pandas(pdf[["customer_id"]], preserve_index=False).column(0).combine_chunks()


def _dotted(pdf: Any) -> pa.Array:
    return dotted_ids(_ids(pdf)) if len(pdf) else pa.array([], pa.string())


def _present(pdf: Any, values: pa.Array) -> pa.Array:
    """Which of ``values`` are ids of this partition."""
    if not len(pdf):
        return pa.array([], pa.string())
    return values.filter(pc.is_in(values, value_set=_ids(pdf).cast(pa.string())))


def _twins(client: Any, feats: list[Any]) -> int:
    """:func:`gpuseg.pipeline.dotted_twins` over partitions that hash 12346.0 and 12346 apart: each
    sends its dotted ids stripped (usually none), each says which of them it holds, and a dotted
    id counts when its whole-number twin is anywhere."""
    dotted = [d for d in client.gather(client.map(_dotted, feats, pure=False)) if len(d)]
    if not dotted:
        return 0
    values = pc.unique(pa.concat_arrays(dotted))
    found = pa.concat_arrays(client.gather(client.map(_present, feats, values=values, pure=False)))
    return sum(int(pc.sum(pc.is_in(d, value_set=found)).as_py() or 0) for d in dotted)


def _run(config: SegmentConfig, client: Any, where: str, timer: StageTimer, init: np.ndarray | None) -> SegmentResult:
    cf = cluster_features(client, config.inputs, config.columns, config.date_format, config.as_of, timer)
    feats, files, mapping, rows, as_of, n_without, workers = (cf.parts, cf.files, cf.mapping, cf.rows, cf.as_of,
                                                              cf.n_without, cf.workers)

    with timer.stage("scale"):
        scaler, n = _fit_scaler(client, feats, config.features)
        if config.k > n:
            raise GpusegError(f"--k {config.k} is more than the {n} customers with a purchase; allowed: 1..{n}")
        scaled = client.map(_scaled, feats, scaler=scaler, shift=np.zeros(len(config.features)), pure=False)
        sizes = [int(s) for s in client.gather(client.map(len, scaled, pure=False))]
        # Centre the data as one process does, for the same distances.
        shift = sum(client.gather(client.map(lambda z: z.sum(axis=0), scaled, pure=False))) / n
        Z = client.map(lambda z, s: z - s, scaled, s=shift, pure=False)
        step = DaskStep(client, Z, sizes, len(config.features))

    with timer.stage("fit"):
        sq = sum(client.gather(client.map(lambda z: float((z * z).sum()), Z, pure=False)))
        abs_tol = sq / (n * step.dim()) * config.tol
        centers0 = (init - shift) if init is not None else _seed(client, step, feats, config.k, config.seed)
        result: LloydResult = lloyd(step, centers0, max_iter=config.max_iter, tol=abs_tol)
        fit = KMeansFit(result.centers + shift, result.labels, result.inertia, result.n_iter, result.converged,
                        result.history, int(np.count_nonzero(np.bincount(result.labels, minlength=config.k))),
                        engine="dask")
        refuse_empty_segments(fit.n_distinct, config.k, n, config.features)

    with timer.stage("assign"):
        k = config.k
        sums = reduce(operator.add, client.gather(client.map(_segment_sums, feats, Z, centers=result.centers,
                                                             pure=False)))
        perm = sums.revenue_order()
        rank = np.argsort(perm)
        sums = sums.relabel(rank)
        names = sums.names()

    with staged_output(config.out) as tmp:
        with timer.stage("write"):
            (tmp / "assignments").mkdir()
            (tmp / "features").mkdir()
            written = client.gather(client.map(_write_part, feats, Z, list(range(len(feats))),
                                               centers=result.centers, rank=rank, names=names, folder=str(tmp),
                                               id_type=cf.id_type, pure=False))
            if sum(written) != n:
                raise GpusegError(f"workers wrote {sum(written)} of {n} customers; the run is incomplete")
            profiles = sums.profiles(names)
            write_segments_csv(tmp / SEGMENTS, profiles)
            model = SegmentModel(
                features=config.features, scaler=scaler, centroids=(result.centers + shift)[perm], seed=config.seed,
                as_of=day_date(as_of), backend="cpu", columns=mapping.to_dict(), date_format=config.date_format,
                version=__version__, segment_names=tuple(names), training=sums.training())
            model.save(tmp / MODEL)
        notes = fit_warnings(fit, k, config.max_iter) + date_warnings(as_of, config.as_of) + id_warnings(cf.twins)
        if config.n_init > 1:
            notes.append(f"--n-init {config.n_init}: with --scheduler one initialisation runs")
        report = segment_report(
            config, fit, inputs=[str(f) for f in files], columns=mapping.to_dict(), as_of=as_of, backend="cpu",
            device=f"Dask ({where})", fallbacks=[], rows=rows, n_customers=n, customers_without_purchase=n_without,
            warnings=notes, timings=timer.as_dict(), n_init=1, scheduler=where, workers=workers,
            partitions=len(feats),
            outputs={"assignments": "assignments/ (one Parquet file per partition)",
                     "features": "features/ (one Parquet file per partition)"})
        write_json(tmp / REPORT, report)
    return SegmentResult(config.out, report, profiles, model)


def _score_part(pdf: Any, index: int, model: SegmentModel, folder: str,
                id_type: pa.DataType) -> tuple[SegmentSums, Unusable]:
    """Assign one partition to the model's segments, write it, and return its sums (counts,
    distances) and the customers too far to measure (the client reports them, as one process)."""
    from .scoring import assign_to_model
    if len(pdf) == 0:
        return SegmentSums.of(np.empty(0, np.int32), {}, model.k, np.empty(0)), Unusable()
    ids = _ids(pdf).cast(id_type)
    Z = model.scaler.transform(_matrix(pdf, model.features))
    unusable = Unusable().check_scaled(Z, lambda row: ids[row].as_py())
    if unusable.scaled:  # the run stops (on the client); distances would overflow
        return SegmentSums.of(np.empty(0, np.int32), {}, model.k, np.empty(0)), unusable
    labels, dist = assign_to_model(model, Z)
    unusable.check_distance(dist, ids)
    pq.write_table(pa.table({"customer_id": ids, "segment": labels.astype(np.int32),
                             "segment_name": segment_names(labels, model.names()), "distance": dist}),
                   Path(folder) / "assignments" / f"part-{index:05d}.parquet")
    return SegmentSums.of(labels, {}, model.k, dist, workers=1), unusable  # a task: no nested pool


def score_dask(config: Any, scheduler: str = "local", client: Any = None) -> dict[str, Any]:
    """``gpuseg score`` on a Dask cluster: assignments as a Parquet dataset, drift and a report.

    ``config`` is a :class:`gpuseg.scoring.ScoreConfig`.
    """
    from .scoring import DRIFT, SCORE_REPORT, _drift_from_counts, _mapping, mapping_warnings, with_model_as_of
    _refuse_gpu_backend(config.backend)
    with _session(scheduler, client) as (client, where):
        model = SegmentModel.load(config.model)
        config = with_model_as_of(config, model)
        files = expand_inputs(config.inputs)
        mapping = _mapping(model, config, read_column_names(files[0]), files[0])
        date_format = config.date_format if config.date_format is not None else model.date_format
        timer = StageTimer()
        columns = mapping.explicit()
        cf = cluster_features(client, config.inputs, columns, date_format, config.as_of, timer)
        with staged_output(config.out) as tmp:
            with timer.stage("assign"):
                (tmp / "assignments").mkdir()
                parts = client.gather(client.map(_score_part, cf.parts, list(range(len(cf.parts))),
                                                 model=model, folder=str(tmp), id_type=cf.id_type, pure=False))
            unusable = Unusable("float64", model.features)
            for _, found in parts:
                unusable += found
            unusable.refuse()
            sums = reduce(operator.add, [p[0] for p in parts])
            if not int(sums.counts.sum()):
                raise GpusegError(NO_PURCHASE)  # as one process (it wrote outputs for no customer)
            drift = _drift_from_counts(model, sums.counts, sums.distance_sums)
            report = run_report(inputs=[str(f) for f in files], columns=mapping.to_dict(), date_format=date_format,
                                as_of=cf.as_of, backend="cpu", device=f"Dask ({where})", fallbacks=[], rows=cf.rows,
                                timings=timer.as_dict(), customers_without_purchase=cf.n_without,
                                warnings=mapping_warnings(model, mapping) + date_warnings(cf.as_of, config.as_of)
                                + id_warnings(cf.twins),
                                model=str(config.model),
                                model_as_of=model.as_of.isoformat(), scheduler=where, workers=cf.workers,
                                partitions=len(cf.parts), streamed=False,
                                partitions_with_rows=sum(1 for sums, _ in parts if sums.counts.sum()))
            write_json(tmp / DRIFT, drift)
            write_json(tmp / SCORE_REPORT, report)
        return {"drift": drift, "report": report}
