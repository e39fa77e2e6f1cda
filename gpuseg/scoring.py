"""``gpuseg score``: apply a saved model to new transactions.

Scoring cleans and builds features exactly as ``segment`` does (the model's
column mapping and date format unless overridden; as_of from the new data
unless ``--as-of``), transforms them with the model's scaler and assigns
each customer to the nearest of the model's centroids on the chosen backend.
Scoring the training data with its own model reproduces the training
assignments exactly when as_of is the same: by default when the model took
its as_of from the data, and with ``--as-of model`` (the model's as_of) when
it was trained with ``--as-of``. New data is scored as of its own last day.

**Bounded memory.** When the input's rows times :data:`BYTES_PER_ROW` exceed
``memory_limit``, scoring streams: pass 1 reads the files batch by batch (a
:data:`STREAM_BATCH_ROWS` rows at a time), cleans each batch and
appends its rows to one of P partition files chosen by a hash of the customer
id, so all of a customer's rows land together; pass 2 scores the partitions
one at a time. Peak memory is then the process's footprint before scoring
(the libraries) plus one batch plus one partition's working set; P is chosen
(:func:`partitions_for`) so that a partition's working set takes a third of
what the limit leaves after that footprint.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .backend import resolve_backend, to_numpy
from .cleaning import Cleaner, KeptRows, assemble
from .coding import INT_TEXT, IdFacts, id_facts, to_unified, unified_type
from .cluster.fit import nearest
from .columns import NO_COLUMN, OPTION_NAMES, ColumnMapping, resolve_columns
from .config import SegmentConfig, _int, as_date, as_inputs
from .errors import GpusegError
from .features import compute_features
from .model import SegmentModel
from .outputs import ASSIGNMENTS, check_out, owner_tag, segment_names, staged_output, sweep_stale, write_json
from .pipeline import NO_PURCHASE, Transfers, Unusable, date_warnings, dotted_twins, id_warnings, prepare
from .reading import expand_inputs, file_format, iter_batches, read_column_names
from .summary import SegmentSums, run_report
from .timing import StageTimer

DRIFT = "drift.json"
SCORE_REPORT = "score_report.json"
#: Working bytes per transaction row while rows are scored in memory (ids,
#: invoice, day, amount, codes, order temporaries, features); the CPU
#: pipeline peaked at about 100 bytes per row on 10^7 rows.
BYTES_PER_ROW = 100
#: Bytes of CSV text per row, to estimate the row count of CSV inputs.
CSV_BYTES_PER_ROW = 40
#: Rows per batch in the streaming pass.
STREAM_BATCH_ROWS = 1 << 18


def parse_memory(text: str) -> int:
    """``"2GB"``, ``"512MiB"``, ``"1e9"`` -> bytes."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    t = text.strip().lower().replace(" ", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in units or not 0 < value < float("inf"):
        raise GpusegError(f"--memory-limit must be a size such as 2GB or 512MiB, got {text!r}")
    size = value * units.get(unit, 1)
    if size >= 2**63:
        raise GpusegError(f"--memory-limit {text!r} is too large; allowed: up to 8 EiB")
    return max(int(size), 1)


def default_memory_limit() -> int:
    """A quarter of physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 10**9


@dataclass(frozen=True)
class ScoreConfig:
    model: Path
    inputs: tuple[str, ...]
    out: Path
    backend: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    date_format: str | None = None
    as_of: dt.date | None = None
    memory_limit: int = field(default_factory=default_memory_limit)
    partitions: int | None = None  # force streaming with this many partitions
    as_of_from_model: bool = False  # --as-of model: the model's as_of, not the data's

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", as_inputs(self.inputs))
        if not self.inputs:
            raise GpusegError("score needs INPUT files: the new transactions to score")
        for name in ("model", "out"):
            if not isinstance(getattr(self, name), (str, os.PathLike)):
                raise GpusegError(f"{name} must be a path (str or Path), got {getattr(self, name)!r:.80}")
        object.__setattr__(self, "model", Path(os.fspath(self.model)))
        object.__setattr__(self, "out", Path(os.fspath(self.out)))
        check_out(self.out, self.inputs, {"--model": self.model})
        if isinstance(self.as_of, str) and self.as_of.strip() == "model":  # as the CLI's --as-of model
            object.__setattr__(self, "as_of", None)
            object.__setattr__(self, "as_of_from_model", True)
        object.__setattr__(self, "as_of", as_date(self.as_of))
        if self.as_of_from_model and self.as_of is not None:
            raise GpusegError("give --as-of a date or 'model', not both")
        object.__setattr__(self, "out", Path(self.out))
        if self.memory_limit is None:
            object.__setattr__(self, "memory_limit", default_memory_limit())
        elif isinstance(self.memory_limit, str):  # from Python, as the CLI takes it: "4GB"
            object.__setattr__(self, "memory_limit", parse_memory(self.memory_limit))
        _int("memory_limit", self.memory_limit, 1)
        if self.partitions is not None:
            _int("--partitions", self.partitions, 1, MAX_PARTITIONS)
            object.__setattr__(self, "partitions", int(self.partitions))


@dataclass
class ScoreResult:
    out: Path
    drift: dict[str, Any]
    report: dict[str, Any]


def _mapping(model: SegmentModel, config: ScoreConfig, names: list[str], source: Path) -> ColumnMapping:
    """The model's columns, with those named on the command line in their place.

    A column the model reads that ``source`` (the first input file) lacks is an
    error that says which option names it: looking another column up by name
    put a gross amount where the model had read a net one, without a word.
    """
    explicit = {role: col for role, col in model.columns.items() if col and role not in config.columns}
    if "quantity" in config.columns or "price" in config.columns:
        explicit.pop("amount", None)
    if "amount" in config.columns:
        explicit.pop("quantity", None)
        explicit.pop("price", None)
    # Invoices are optional: files without the model's invoice column count orders as customer-days
    # (mapping_warnings says so), as a model that had none does; no other column is looked up for them.
    if explicit.get("invoice") not in (None, *names) or model.columns.get("invoice", "") is None:
        explicit["invoice"] = NO_COLUMN
    for role, col in explicit.items():
        if col and col not in names:
            other = {"amount": "--amount-col, or --quantity-col and --price-col",
                     "quantity": "--quantity-col and --price-col, or --amount-col",
                     "price": "--quantity-col and --price-col, or --amount-col"}.get(role, OPTION_NAMES[role])
            raise GpusegError(f"the model reads the {role} from column {col!r}, which input file {str(source)!r} "
                              f"lacks (its columns: {', '.join(names)}); name the column(s) to use with {other}")
    return resolve_columns(names, {**explicit, **config.columns})


def mapping_warnings(model: SegmentModel, mapping: ColumnMapping) -> list[str]:
    """What scoring with ``mapping`` reads differently from the model's training run."""
    invoice = model.columns.get("invoice")
    if invoice and mapping.invoice is None:
        return [f"the model counted orders by invoice (column {invoice!r}), which the new files lack: orders are "
                "customer-days here, so frequency and recency may read otherwise than in training"]
    return []


def estimate_rows(files: list[Path]) -> int:
    """Rows in the inputs: exact for Parquet (from the footer), estimated for CSV."""
    total = 0
    for f in files:
        if file_format(f) == "parquet":
            try:
                total += pq.ParquetFile(f).metadata.num_rows
            except (pa.ArrowException, OSError):
                total += f.stat().st_size // 8
        else:
            total += f.stat().st_size // CSV_BYTES_PER_ROW
    return int(total)


def _drift(model: SegmentModel, segment: np.ndarray, distance: np.ndarray) -> dict[str, Any]:
    sums = SegmentSums.of(segment, {}, model.k, distance)
    return _drift_from_counts(model, sums.counts, sums.distance_sums)


def _drift_from_counts(model: SegmentModel, counts: np.ndarray, distance_sums: np.ndarray) -> dict[str, Any]:
    """Segment shares and mean distances now, against the training run's."""
    k = model.k
    n = max(int(counts.sum()), 1)
    shares = (counts / n).tolist()
    train = model.training
    train_shares = train.get("segment_shares") or [None] * k
    per_train = train.get("segment_mean_distance") or [None] * k
    per_now = (distance_sums / np.maximum(counts, 1)).tolist()
    names = model.names()
    segments = []
    for i in range(k):
        segments.append({"segment": i, "name": names[i], "customers": int(counts[i]), "share": shares[i],
                         "training_share": train_shares[i],
                         "share_change": None if train_shares[i] is None else shares[i] - train_shares[i],
                         "mean_distance": per_now[i] if counts[i] else None,
                         # An empty training segment has no mean distance (earlier models wrote 0 for it).
                         "training_mean_distance": None if train_shares[i] == 0 else per_train[i]})
    mean_now = float(distance_sums.sum() / n) if counts.sum() else None
    mean_train = train.get("mean_distance")
    return {"n_customers": int(counts.sum()), "training_n_customers": train.get("n_customers"),
            "mean_distance": mean_now, "training_mean_distance": mean_train,
            "mean_distance_ratio": (mean_now / mean_train) if mean_now is not None and mean_train else None,
            "segments": segments}


def assign_to_model(model: SegmentModel, Z: Any, backend_xp: Any = np) -> tuple[np.ndarray, np.ndarray]:
    """Each row's segment (the nearest of the model's segments that are not retired) and its
    distance, on the host."""
    active = model.assigned()
    centroids = backend_xp.asarray(model.centroids[active], dtype=Z.dtype)
    labels, sqdist = nearest(Z, centroids)
    return active.astype(np.int32)[to_numpy(labels)], np.sqrt(to_numpy(sqdist))


def _hash_partition(ids: pa.Array, parts: int) -> np.ndarray:
    """Partition of each id, the same for the same id in any batch or run, and for ids that
    batches of different types make one customer (:func:`gpuseg.coding.unified_type`): each
    id is keyed by its text as that rule writes it, canonical integers by their value (5,
    5.0, "5" and " 5" alike); short integers directly, other ids once per distinct value."""
    if _short_integers(ids):
        key = ids.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    else:
        enc = ids if pa.types.is_dictionary(ids.type) else pc.dictionary_encode(ids)
        key = _text_keys(enc.dictionary)[enc.indices.to_numpy(zero_copy_only=False)]
    mixed = (key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    return (mixed % np.uint64(parts)).astype(np.int64)


def _text_keys(values: pa.Array) -> np.ndarray:
    """A uint64 key of each (distinct) id: its value when its text is a canonical integer, else a
    checksum of its text."""
    key = np.empty(len(values), dtype=np.uint64)
    text = to_unified(values, pa.string())
    if pc.any(pc.match_substring(text, ".0")).as_py():
        # 12346.0 shares 12346's partition, so that a partition can tell the two apart (pipeline.dotted_twins).
        text = pc.replace_substring_regex(text, r"^(-?[0-9]+)\.0+$", r"\1")
    whole = pc.fill_null(pc.match_substring_regex(text, INT_TEXT), False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(whole)
    key[rows] = text.take(pa.array(rows)).cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
    rows = np.flatnonzero(~whole)
    words = [zlib.crc32(s.encode("utf-8")) for s in text.take(pa.array(rows)).to_pylist()]
    key[rows] = np.asarray(words, dtype=np.uint64) | np.uint64(1 << 63)
    return key


def _short_integers(ids: pa.Array) -> bool:
    """Integers that :data:`gpuseg.coding.INT_TEXT` matches as text (under 10**18 in size)."""
    if not pa.types.is_integer(ids.type):
        return False
    lo, hi = (v.as_py() for v in pc.min_max(ids).values())
    return lo is None or (-10**18 < lo and hi < 10**18)


def score(config: ScoreConfig, on_progress: Callable[[str, int, int | None], None] | None = None) -> ScoreResult:
    """Score ``config.inputs`` with ``config.model``; writes assignments, drift and a report to ``config.out``.

    ``on_progress(stage, done, total)`` reports rows read (pass 1) and
    partitions scored (pass 2).

    Raises
    ------
    GpusegError
        For a missing, corrupted or unsupported model, input the model's
        mapping cannot read, or bad options; nothing is written then.
    """
    notify = on_progress or (lambda stage, done, total: None)
    # A streamed score killed earlier left its scratch: any score removes it, streamed or not.
    sweep_stale(Path(tempfile.gettempdir()), "gpuseg-score-")
    model = SegmentModel.load(config.model)
    config = with_model_as_of(config, model)
    files = expand_inputs(config.inputs)
    mapping = _mapping(model, config, read_column_names(files[0]), files[0])
    date_format = config.date_format if config.date_format is not None else model.date_format
    estimate = estimate_rows(files)
    streamed = config.partitions is not None or estimate * BYTES_PER_ROW > config.memory_limit
    t0 = time.perf_counter()
    if not streamed:
        seg = SegmentConfig(inputs=tuple(str(f) for f in files), out=config.out, k=model.k, features=model.features,
                            backend=config.backend, columns=mapping.explicit(),
                            date_format=date_format, as_of=config.as_of, precision="float64")
        p = prepare(seg, scaler=model.scaler)
        with p.timer.stage("assign"):
            segment, distance = assign_to_model(model, p.Z, p.backend.xp)
        ids = p.tx.customer_ids.take(pa.array(p.transfers.to_host("customer", p.feats.customer)))
        Unusable().check_distance(distance, ids).refuse()
        rows, as_of, timer, backend = p.tx.rows, p.tx.as_of, p.timer, p.backend
        n_parts = None
        with staged_output(config.out) as tmp:
            _write_assignments(pq.ParquetWriter(tmp / ASSIGNMENTS, _schema(ids.type)), model,
                               [(ids, segment, distance)])
            drift = _drift(model, segment, distance)
            report = _score_report(config, model, mapping, date_format, rows, as_of, timer, backend, streamed,
                                   n_parts, estimate, t0, files, p.feats.n_without_purchase,
                                   dotted_twins(ids))
            write_json(tmp / DRIFT, drift)
            write_json(tmp / SCORE_REPORT, report)
        return ScoreResult(config.out, drift, report)
    return _score_streamed(config, model, files, mapping, date_format, estimate, notify, t0)


def with_model_as_of(config: ScoreConfig, model: SegmentModel) -> ScoreConfig:
    """``config`` with the model's as_of when it asks for it (``--as-of model``)."""
    if not config.as_of_from_model:
        return config
    return replace(config, as_of=model.as_of, as_of_from_model=False)


def _schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema([("customer_id", id_type), ("segment", pa.int32()),
                      ("segment_name", pa.dictionary(pa.int32(), pa.string())), ("distance", pa.float64())])


def _write_assignments(writer: pq.ParquetWriter, model: SegmentModel,
                       chunks: list[tuple[pa.Array, np.ndarray, np.ndarray]]) -> None:
    names = model.names()
    with writer:
        for ids, segment, distance in chunks:
            writer.write_table(pa.table({"customer_id": ids, "segment": pa.array(segment, pa.int32()),
                                         "segment_name": segment_names(segment, names),
                                         "distance": pa.array(distance, pa.float64())}, schema=writer.schema))


def _resident_bytes() -> int:
    """Current resident memory of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


#: Most partitions a streamed score writes: each is a file open until pass 1 ends.
MAX_PARTITIONS = 10_000
#: Open files kept for the libraries' own (files, sockets) beside the partitions'.
_SPARE_FILES = 256


def partitions_for(rows: int, memory_limit: int, baseline: int | None = None) -> int:
    """Partitions such that one partition's working set fits a third of what the
    limit leaves after the process's present footprint (libraries loaded);
    the other two thirds hold the batch being read and the allocators' slack."""
    baseline = _resident_bytes() if baseline is None else baseline
    budget = max((memory_limit - baseline) // 3, 16 << 20)
    # Past MAX_PARTITIONS (10^9 rows and more within a few GB) a partition outgrows its third.
    return min(MAX_PARTITIONS, max(1, -(-(rows * BYTES_PER_ROW) // budget)))


@contextmanager
def _room_for_open_files(n: int, automatic: bool) -> Iterator[None]:
    """Let this process hold ``n`` more partition files open at once while the block runs: raise
    its soft limit on open files towards the hard one (as build tools do), and put it back once
    no streamed score of this process holds any (scores may run on several threads); else say
    what the system allows. No check where the platform has no such limit."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        yield
        return
    global _files_held, _files_soft
    with _files_lock:
        need = _files_held + n + _SPARE_FILES
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < need:
            room = need if hard == resource.RLIM_INFINITY else min(need, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (room, hard))
                _files_soft = soft if _files_soft is None else _files_soft
            except (ValueError, OSError):
                room = soft
            if room < need:
                raise GpusegError(f"{n:,} partitions need {need - _files_held:,} open files and this system allows "
                                  f"{room - _files_held:,}; give --partitions "
                                  f"{max(1, room - _files_held - _SPARE_FILES):,} or fewer"
                                  + (", or a larger --memory-limit (fewer, larger partitions)" if automatic else ""))
        _files_held += n
    try:
        yield
    finally:
        with _files_lock:
            _files_held -= n
            if _files_held == 0 and _files_soft is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (_files_soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
                _files_soft = None


#: Partition files the streamed scores running in this process hold open, and the soft limit
#: on open files before the first of them raised it (put back when the last ends).
_files_lock = threading.Lock()
_files_held = 0
_files_soft: int | None = None


def _score_streamed(config: ScoreConfig, model: SegmentModel, files: list[Path], mapping: ColumnMapping,
                    date_format: str | None, estimate: int, notify: Callable[[str, int, int | None], None],
                    t0: float) -> ScoreResult:
    backend = resolve_backend(config.backend)
    timer = StageTimer(sync=backend.synchronize)
    transfers = Transfers(backend)
    n_parts = config.partitions or partitions_for(estimate, config.memory_limit)
    cleaner = Cleaner(mapping, date_format, config.as_of)
    segments_all, distance_all = [], []
    n_without = twins = 0
    unusable = Unusable("float64", model.features)
    # Named by host and process, so that a later run removes what a killed one left.
    sweep_stale(Path(tempfile.gettempdir()), "gpuseg-score-")
    with _room_for_open_files(n_parts, config.partitions is None), \
            tempfile.TemporaryDirectory(prefix=f"gpuseg-score-{owner_tag()}") as scratch:
        scratch = Path(scratch)
        # Arrow IPC streams, written as they come (no encoding buffers per open file): one per
        # partition and batch schema, as id types may change between files.
        # At most n_parts streams are open at once (the open-file budget): a stream of another
        # schema closes the one written least recently, and its partition gets a new file.
        writers: OrderedDict[tuple[int, pa.Schema], Any] = OrderedDict()
        streams: dict[int, list[str]] = {}
        facts: dict[str, list[IdFacts]] = {"customer": [], "invoice": []}
        read = 0
        with timer.stage("partition"):
            for f in files:
                for batch in iter_batches(f, mapping, batch_rows=STREAM_BATCH_ROWS):
                    kept = cleaner.batch(f, batch)
                    read += batch.num_rows
                    notify("read", read, None)
                    if kept is None or len(kept.day) == 0:
                        continue
                    part = _hash_partition(kept.ids, n_parts)
                    facts["customer"].append(id_facts(kept.ids))
                    if kept.invoices is not None:
                        facts["invoice"].append(id_facts(kept.invoices))
                    table = pa.table({"customer": kept.ids,
                                      "invoice": kept.invoices if kept.invoices is not None
                                      else pa.nulls(len(kept.day)),
                                      "day": pa.array(kept.day, pa.int32()),
                                      "amount": pa.array(kept.amount, pa.float64())})
                    order = np.argsort(part, kind="stable")
                    table = table.take(pa.array(order))
                    bounds = np.searchsorted(part[order], np.arange(n_parts + 1))
                    for j in range(n_parts):
                        lo, hi = int(bounds[j]), int(bounds[j + 1])
                        if hi > lo:
                            key = (j, table.schema)
                            if key in writers:
                                writers.move_to_end(key)
                            else:
                                if len(writers) >= n_parts:
                                    writers.popitem(last=False)[1].close()
                                name = f"part-{j}-{len(streams.setdefault(j, []))}.arrow"
                                streams[j].append(name)
                                writers[key] = pa.ipc.new_stream(str(scratch / name), table.schema)
                            writers[key].write_table(table.slice(lo, hi - lo))
        for w in writers.values():
            w.close()
        pa.default_memory_pool().release_unused()
        cleaner.check()
        as_of = cleaner.as_of
        # The one id type of the whole input, as one process gives it; each partition's
        # batches are converted to it before they are coded together.
        id_type = unified_type(facts["customer"], cleaner.ids_to_int)
        invoice_type = unified_type(facts["invoice"], True) if mapping.invoice else None
        outs: list[tuple[pa.Array, np.ndarray, np.ndarray]] = []
        for done, j in enumerate(sorted(streams), start=1):
            with timer.stage("score"):
                parts = []
                for name in streams[j]:
                    with pa.memory_map(str(scratch / name)) as source:
                        t = pa.ipc.open_stream(source).read_all()
                    parts.append(KeptRows(
                        ids=to_unified(t.column("customer").combine_chunks(), id_type),
                        invoices=to_unified(t.column("invoice").combine_chunks(), invoice_type)
                        if invoice_type is not None else None,
                        day=t.column("day").to_numpy(), amount=t.column("amount").to_numpy()))
                    del t
                tx = assemble(parts, as_of, cleaner.rows, False, mapping.invoice is not None)
                arrays = [transfers.to_device(name, getattr(tx, name))
                          for name in ("customer", "day", "amount", "order")]
                feats = compute_features(*arrays, n_customers=tx.n_customers, n_orders=tx.n_orders, as_of=tx.as_of)
                n_without += feats.n_without_purchase
                # A customer that cannot be used is reported once every partition is seen, as one
                # process reports it (the first in id order, counts over the whole input).
                unusable += Unusable().check_features(feats, tx.customer_ids)
                if len(feats) and not unusable.features:
                    Z = model.scaler.transform(feats.matrix(model.features))
                    unusable += Unusable().check_scaled(
                        Z, lambda row, ids=tx.customer_ids, code=feats.customer: ids[int(code[row])].as_py())
                if len(feats) and not unusable.features and not unusable.scaled:
                    segment, distance = assign_to_model(model, Z, backend.xp)
                    ids = tx.customer_ids.take(pa.array(transfers.to_host("customer", feats.customer)))
                    twins += dotted_twins(ids)  # both forms share a partition (_text_keys)
                    unusable += Unusable().check_distance(distance, ids)
                    outs.append((ids, segment, distance))
                    segments_all.append(segment)
                    distance_all.append(distance)
            pa.default_memory_pool().release_unused()
            notify("score", done, len(streams))
    unusable.refuse()
    if not outs:
        raise GpusegError(NO_PURCHASE)
    segment = np.concatenate(segments_all)
    distance = np.concatenate(distance_all)
    with staged_output(config.out) as tmp:
        _write_assignments(pq.ParquetWriter(tmp / ASSIGNMENTS, _schema(id_type)), model, outs)
        drift = _drift(model, segment, distance)
        report = _score_report(config, model, mapping, date_format, cleaner.rows, as_of, timer, backend, True,
                               n_parts, estimate, t0, files, n_without, twins, len(streams))
        write_json(tmp / DRIFT, drift)
        write_json(tmp / SCORE_REPORT, report)
    return ScoreResult(config.out, drift, report)


def _score_report(config: ScoreConfig, model: SegmentModel, mapping: ColumnMapping, date_format: str | None,
                  rows: Any, as_of: int, timer: StageTimer, backend: Any, streamed: bool, n_parts: int | None,
                  estimate: int, t0: float, files: list[Path], n_without: int, twins: int,
                  with_rows: int | None = None) -> dict[str, Any]:
    return run_report(
        inputs=[str(f) for f in files], columns=mapping.to_dict(), date_format=date_format, as_of=as_of,
        backend=backend.name, device=backend.device, fallbacks=backend.fallbacks, rows=rows,
        timings={**timer.as_dict(), "total": round(time.perf_counter() - t0, 6)},
        customers_without_purchase=int(n_without),
        warnings=mapping_warnings(model, mapping) + date_warnings(as_of, config.as_of) + id_warnings(twins),
        model=str(config.model), model_as_of=model.as_of.isoformat(), streamed=streamed, partitions=n_parts,
        partitions_with_rows=with_rows,
        memory_limit_bytes=config.memory_limit, estimated_rows=estimate,
        estimated_working_bytes=estimate * BYTES_PER_ROW)
