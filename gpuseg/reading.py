"""Reading transaction logs: CSV or Parquet files, folders and globs, in batches.

Only the columns that the mapping needs are read. Batches keep memory
bounded by what cleaning keeps, not by the raw file: a 10⁸-row log is read
a few million rows at a time.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .columns import ColumnMapping
from .errors import GpusegError

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
ALLOWED = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)



def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise GpusegError(f"unsupported input file {str(path)!r}; allowed suffixes: {ALLOWED}")


#: An input given as "" (Path("") is the current folder, which the run would read whole).
EMPTY_INPUT = "an input is empty (''); give a file, a folder or a glob pattern"


def _supported(path: Path) -> bool:
    return path.name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files named by ``inputs``: files as given, folders searched recursively
    for CSV/Parquet files, glob patterns expanded. Order is stable and
    duplicates are removed.
    """
    files: list[Path] = []
    for item in inputs:
        text = str(item)
        if not text.strip():
            raise GpusegError(EMPTY_INPUT)
        path = Path(text)
        if path.is_dir():
            found = _folder_files(path)
            if not found:
                raise GpusegError(f"folder {text!r} holds no input files ({ALLOWED})")
            files.extend(found)
        elif path.is_file():
            file_format(path)
            files.append(path)
        elif glob.has_magic(text):
            found = _glob_files(text)
            if not found:
                raise GpusegError(f"pattern {text!r} matches no input files ({ALLOWED})")
            files.extend(found)
        elif path.exists():
            raise GpusegError(f"input {text!r} is not a regular file or folder (a device, FIFO or socket); "
                              f"allowed: files ({ALLOWED}), folders of them, or glob patterns")
        else:
            raise GpusegError(f"input {text!r} does not exist")
    # One file named twice (by a folder and itself, through "..", a link) is read once.
    unique: dict[tuple[int, int] | str, Path] = {}
    for f in files:
        st = f.stat()
        # Some file systems report no inode numbers (0): there, the resolved path.
        unique.setdefault((st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(f), f)
    return list(unique.values())


def _folder_files(folder: Path) -> list[Path]:
    """The input files below ``folder``, sorted, leaving out names that start with "." or
    "_" (and what is below them) and linked folders; a subfolder that cannot be read is an
    error, not files quietly left out."""
    def refuse(exc: OSError) -> None:
        top = Path(exc.filename or folder) == folder
        where = "the input folder" if top else f"the folder below input {str(folder)!r}"
        raise GpusegError(f"cannot read {where} {exc.filename!r}: {exc.strerror or exc} (folders whose names start "
                          "with '_' or '.' are skipped: rename it so to leave it out)") from None

    found = []
    for root, dirs, names in os.walk(folder, onerror=refuse):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        found.extend(p for p in (Path(root) / n for n in names)
                     if not p.name.startswith((".", "_")) and p.is_file())
    return _readable(sorted(found), f"folder {str(folder)!r} holds")


#: A name that says CSV or Parquet data, compressed or not (c.csv.xz, sales.tsv, x.parquet.snappy); sidecars
#: such as q1.csv.metadata (Athena) or x.parquet.sha256 say otherwise.
_DATA_NAME = re.compile(r"\.(csv|tsv|parquet|pq)(\.(gz|gzip|bz2|zst|zstd|xz|lz4|lzo|lzma|deflate|zip|7z|snappy|br|z|"
                        r"tar|tgz))?$", re.IGNORECASE)


def _readable(files: list[Path], where: str) -> list[Path]:
    """The files gpuseg reads; one whose name says it holds data in a form gpuseg does not read
    (``c.csv.xz``, ``sales.tsv``) is an error rather than rows left out without a word."""
    for f in files:
        if not _supported(f) and _DATA_NAME.search(f.name):
            raise GpusegError(f"{where} {str(f)!r}, which looks like data gpuseg cannot read; allowed: "
                              f"{ALLOWED} (convert it, or move it out of the way: names starting with '_' or "
                              "'.' are left out)")
    return [f for f in files if _supported(f)]


def _glob_files(pattern: str) -> list[Path]:
    """The input files a glob pattern matches, sorted, leaving out what a folder given as
    input leaves out: names that a wildcard matched and that start with "_" (Spark's
    ``_temporary`` attempts, ``_SUCCESS``) or "." (Python's glob leaves those out itself),
    and what is below them. A name the pattern spells out, or a wildcard part that starts
    with "_" itself (``_*.parquet``), is kept, as glob keeps hidden names a pattern asks for."""
    parts = Path(pattern).parts
    fixed = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))
    # A name is asked for when the pattern spells it out, or has a part that starts with its first
    # character and matches it (``_*``); "*" and "**" do not ask for "_" or "." names.
    asks = [p for p in parts[fixed:] if p != "**"]

    def left_out(path: Path) -> bool:
        return any(name.startswith(("_", ".")) and not any(p.startswith(name[0]) and fnmatch.fnmatchcase(name, p)
                                                           for p in asks)
                   for name in path.parts[fixed:])

    return _readable(sorted(p for p in map(Path, glob.glob(pattern, recursive=True))
                            if p.is_file() and not left_out(p)), f"pattern {pattern!r} matches")


def _fail(path: Path, exc: BaseException) -> GpusegError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # Arrow numbers a CSV row within the block it parsed (only when parsing on one thread): not a line of the file.
    msg = re.sub(r"Row #\d+: ", "", msg)
    if path.exists() and path.stat().st_size == 0:
        return GpusegError(f"input file {str(path)!r} is empty")
    if "Empty CSV file" in msg:  # Arrow's word for a header line with no end, and nothing after it
        return GpusegError(f"input file {str(path)!r} has no data rows (a header at most)")
    shape = re.search(r"Expected (\d+) columns, got (\d+)", msg)
    if file_format(path) == "csv" and shape:
        first, second = (_head_lines(path, 2) + ["", ""])[:2]
        # Excel's "sep=," or a "# comment" first line: one field, while the header below has more.
        if (first.lower().startswith("sep=") or first.startswith("#")) and int(shape.group(1)) == \
                len(first.split(",")) and len(second.split(",")) != len(first.split(",")):
            return GpusegError(f"cannot read {str(path)!r} as csv: its first line is {first[:40]!r}, not the header; "
                               "gpuseg reads comma-separated CSV whose first line names the columns, without "
                               "Excel's 'sep=' line or '#' comment lines (remove them)")
        if int(shape.group(1)) == 1 and (sep := _other_separator(first)):
            return GpusegError(f"input file {str(path)!r}: {separator_error(first, sep)}")
    column = re.search(r"In CSV column #(\d+): CSV conversion error to \w+: invalid value '(.*)'", msg)
    if column and file_format(path) == "csv":
        index, value = int(column.group(1)), column.group(2)
        names = _header_names(path)
        name = names[index] if index < len(names) else f"#{index + 1}"
        if value == name:
            return GpusegError(f"cannot read {str(path)!r} as csv: a line repeats the header (exports joined "
                               "together?); remove the repeated header lines")
        return GpusegError(f"cannot read {str(path)!r} as csv: {value!r} in column {name!r} is not a number; "
                           "amounts, quantities and prices must be plain numbers with '.' as the decimal point "
                           "(no thousands separators, currency signs, or minus signs after the number)")
    if file_format(path) == "csv" and ("UTF8" in msg or "utf-8" in msg.lower() or _utf16(path)):
        return GpusegError(f"cannot read {str(path)!r} as csv: it is not UTF-8 text ({msg}); CSV files must be "
                           "UTF-8 (save or convert it so, e.g. iconv -f latin1 -t utf-8)")
    return GpusegError(f"cannot read {str(path)!r} as {file_format(path)}: {msg}")


def _head_lines(path: Path, n: int) -> list[str]:
    """The first ``n`` lines of a (possibly compressed) text file, for messages; [] when unreadable."""
    try:
        with pa.input_stream(str(path), compression="detect") as fh:
            head = fh.read(1 << 16)
    except (pa.ArrowException, OSError):
        return []
    return head.decode("utf-8", "replace").lstrip("\ufeff").splitlines()[:n]


def _other_separator(header: str) -> str | None:
    """The separator a one-field header line holds instead of commas (';', tab or '|'), or None."""
    if "," in header:
        return None
    return next((c for c in (";", "\t", "|") if c in header), None)


def separator_error(header: str, sep: str) -> str:
    """The error for a header of one column holding ``sep``: a semicolon-separated export (European Excel)."""
    return (f"the header is one column holding {sep!r} ({header[:60]!r}): gpuseg reads comma-separated CSV; "
            "save the file as comma-separated (Excel: CSV UTF-8) or as Parquet")


def _header_names(path: Path) -> list[str]:
    """A CSV file's column names, for messages; [] when unreadable."""
    try:
        return read_column_names(path)
    except GpusegError:
        return []


def _utf16(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) in (b"\xff\xfe", b"\xfe\xff")
    except OSError:
        return False


def read_column_names(path: Path) -> list[str]:
    """Column names of a file, reading only its header or footer."""
    try:
        if file_format(path) == "parquet":
            return list(pq.read_schema(path).names)
        try:
            with open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)) as reader:
                names = list(reader.schema.names)
        except pa.ArrowInvalid as exc:  # a header longer than the block: read a block as large as a batch's
            if "Empty CSV file" not in str(exc):
                raise
            with open_csv(path, read_options=pacsv.ReadOptions(block_size=64 << 20)) as reader:
                names = list(reader.schema.names)
        # One column holding ';', a tab or '|': a semicolon-separated export (European Excel), which no
        # mapping can read (a customer and a date need two columns).
        if len(names) == 1 and (sep := _other_separator(names[0])):
            raise GpusegError(f"input file {str(path)!r}: {separator_error(names[0], sep)}")
        return names
    except GpusegError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _fail(path, exc) from None


#: Rows of the input compared by :func:`check_amount_choice` (over its first files).
AMOUNT_CHECK_ROWS = 100_000


def check_amount_choice(files: Sequence[Path], mapping: ColumnMapping, explicit: dict[str, str],
                        names: list[str]) -> None:
    """Refuse to guess between an amount column found by name and quantity × unit price when the
    two disagree on the first rows of the input: an order total repeated on every line (a Shopify
    export's ``Total``) was read as each line's amount, counting the order once per line.

    Only when neither was named. The first :data:`AMOUNT_CHECK_ROWS` rows that have all three
    values, over the first files (a first part of a few rows does not decide alone), are
    compared: they agree (to the cent, or 10⁻⁶ of the amount) on a line total, and part on more
    than 1% of them for an order total or discounts.
    """
    if not mapping.amount or {"amount", "quantity", "price"} & set(explicit):
        return
    from .columns import found_quantity_price
    pair = found_quantity_price(names, explicit, mapping.amount)
    if pair is None:
        return
    columns = [mapping.amount, *pair]
    n = m = 0  # rows apart, rows compared
    example = None
    for path in list(files)[:64]:
        got = _amount_sample(path, columns, AMOUNT_CHECK_ROWS - m)
        if got is not None:
            amount, qty, price = got
            with np.errstate(invalid="ignore", over="ignore"):
                line = qty * price
                both = np.isfinite(amount) & np.isfinite(line)
                apart = both & (np.abs(amount - line) > 0.01 + 1e-6 * np.abs(amount))
            if example is None and apart.any():
                i = int(np.argmax(apart))
                example = (path, amount[i], qty[i], price[i])
            n, m = n + int(apart.sum()), m + int(both.sum())
        if m >= AMOUNT_CHECK_ROWS:
            break
    if n * 100 > m and example is not None:
        path, a, q, p = example
        raise GpusegError(f"both column {mapping.amount!r} and {pair[0]!r} × {pair[1]!r} could be the line amount, "
                          f"and they disagree on {n:,} of the first {m:,} rows (e.g. {a:g} against {q:g} × {p:g} in "
                          f"{str(path)!r}): an order total on every line would count each order once per line; name "
                          f"the line amount with --amount-col {mapping.amount!r}, or with --quantity-col {pair[0]!r} "
                          f"--price-col {pair[1]!r}")


def _amount_sample(path: Path, columns: list[str], rows: int) -> tuple[np.ndarray, ...] | None:
    """Up to ``rows`` rows of ``columns`` (amount, quantity, price) of one file as float64, or None
    when the file lacks them or they are not numbers (the run itself says so)."""
    try:
        if file_format(path) == "parquet":
            pf = open_parquet(path)
            if any(c not in pf.schema_arrow.names for c in columns):
                return None
            batch = next(pf.iter_batches(batch_size=max(rows, 1), columns=columns), None)
        else:
            if any(c not in read_column_names(path) for c in columns):
                return None
            types = dict.fromkeys(columns, pa.float64())
            with open_csv(path, convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types,
                                                                     strings_can_be_null=True)) as reader:
                batch = next(iter(reader), None)
        if batch is None:
            return None
        return tuple(pc.cast(batch.column(c), pa.float64()).to_numpy(zero_copy_only=False)[:rows] for c in columns)
    except (GpusegError, pa.ArrowException, OSError, ValueError, TypeError):
        return None


def check_columns(path: Path, mapping: ColumnMapping, names: list[str] | None = None) -> None:
    """Refuse a file that lacks a mapped column, or has one twice; ``names`` when its header
    is read already."""
    names = read_column_names(path) if names is None else names
    missing = [c for c in mapping.needed if c not in names]
    if missing:
        raise GpusegError(f"input file {str(path)!r} lacks column(s) {', '.join(map(repr, missing))}; "
                          f"its columns are: {', '.join(names)}")
    twice = [c for c in mapping.needed if names.count(c) > 1]
    if twice:
        raise GpusegError(f"input file {str(path)!r} has {'columns' if len(twice) > 1 else 'a column'} named "
                          f"{', '.join(map(repr, twice))} more than once; each column gpuseg reads must have a "
                          "name of its own (rename or drop the others)")


def open_parquet(path: Path, **options: Any) -> pq.ParquetFile:
    """A Parquet file opened for reading its rows. INT96 timestamps (Spark's and Impala's
    default) come back in microseconds, which hold years 1 to 9999: as nanoseconds,
    Arrow's default, dates past 2262 would wrap around into range instead of being
    dropped as out of range."""
    return pq.ParquetFile(path, coerce_int96_timestamp_unit="us", **options)


def _row_group_reader(path: Path, index: int, columns: list[str], as_dictionary: list[str],
                      metadata: pq.FileMetaData) -> Callable[[], pa.RecordBatch | None]:
    def read() -> pa.RecordBatch | None:
        try:
            # A file handle per call: row groups are decoded on several threads at once. The
            # footer is parsed once per file, not per row group (~4 ms on the retail log).
            table = open_parquet(path, metadata=metadata, read_dictionary=as_dictionary).read_row_group(
                index, columns=columns, use_threads=False)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise _fail(path, exc) from None
        batches = table.combine_chunks().to_batches()
        return batches[0] if batches else None
    return read


def iter_readers(path: Path, mapping: ColumnMapping) -> Iterator[pa.RecordBatch | Callable[[], pa.RecordBatch | None]]:
    """The mapped columns of one file, as work for a thread pool.

    Parquet: one callable per row group, which decodes it (so that row
    groups decode on every core), text customer ids as a dictionary (Parquet
    stores them dictionary-encoded, so no string is built and no row is
    hashed). Text invoices are read plain: with about one entry per order
    they outgrow the writer's dictionary page, its later pages are plain,
    and reading those as a dictionary hashes every row (retail log: 77
    against 25 ms a row group); :class:`~gpuseg.coding.EncodedText` codes
    them by runs instead. CSV: record batches of 64 MB blocks, parsed by
    Arrow's own threads as they are taken.

    Raises
    ------
    GpusegError
        When the file cannot be read or lacks a mapped column.
    """
    if file_format(path) != "parquet":
        yield from iter_batches(path, mapping)
        return
    try:
        pf = open_parquet(path)
        schema, n, metadata = pf.schema_arrow, pf.num_row_groups, pf.metadata
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _fail(path, exc) from None
    check_columns(path, mapping, schema.names)  # the footer just parsed, not read again
    as_dictionary = [c for c in (mapping.customer,) if pa.types.is_string(schema.field(c).type)]
    for i in range(n):
        yield _row_group_reader(path, i, mapping.needed, as_dictionary, metadata)


def iter_batches(path: Path, mapping: ColumnMapping, batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
    """Yield the mapped columns of one file as record batches.

    By default a batch is a Parquet row group or a 64 MB CSV block; with
    ``batch_rows`` batches hold at most that many rows (lower peak memory).

    Raises
    ------
    GpusegError
        When the file cannot be read or lacks a mapped column.
    """
    columns = mapping.needed
    check_columns(path, mapping)
    try:
        if file_format(path) == "parquet":
            # Whole row groups decode faster (columns in parallel) than
            # iter_batches, and bound memory by the row group.
            pf = open_parquet(path)
            if pf.num_row_groups == 0:
                return
            if batch_rows:
                yield from pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True)
                return
            for i in range(pf.num_row_groups):
                yield from pf.read_row_groups([i], columns=columns, use_threads=True).to_batches()
            return
        read = pacsv.ReadOptions(block_size=min(64 << 20, max(1 << 20, (batch_rows or 1 << 30) * 48)))
        with open_csv(path, read_options=read, convert_options=csv_convert(mapping)) as reader:
            yield from reader
    except GpusegError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _fail(path, exc) from None


def open_csv(path: Path, **options: Any) -> pacsv.CSVStreamingReader:
    """A CSV file opened for reading in blocks. A lone header line without a line end (which
    Arrow calls an empty file) is read as the header it is: a file of no rows, as the same
    header with a line end is."""
    try:
        return pacsv.open_csv(path, **options)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" not in str(exc):
            raise
        with pa.input_stream(str(path), compression="detect") as fh:  # .csv.gz too, as Arrow reads it
            head = fh.read(1 << 20)
        if len(head) == 1 << 20 or not head.strip() or b"\n" in head or b"\r" in head:
            raise
        return pacsv.open_csv(pa.BufferReader(head + b"\n"), **options)


def csv_convert(mapping: ColumnMapping) -> pacsv.ConvertOptions:
    """How CSV columns are read (ids and dates as text, amounts as float64; Arrow's null spellings)."""
    return pacsv.ConvertOptions(include_columns=mapping.needed, strings_can_be_null=True,
                                column_types=mapping.csv_types(pa.string(), pa.float64()))


#: Bytes of an uncompressed CSV file that one task reads (``--scheduler``), as ``dask.dataframe.read_csv``'s blocksize.
CSV_BLOCK_BYTES = 64 << 20

#: Rows of a Parquet file's consecutive row groups that one task reads (``--scheduler``).
TASK_ROWS = 1 << 22


@dataclass(frozen=True)
class FilePiece:
    """A part of one input file that one task reads: Parquet row groups, or the lines of a
    CSV file that start in a byte range (``stop`` None: to the end)."""

    path: str
    row_groups: tuple[int, ...] = ()
    start: int = 0
    stop: int | None = None


def file_pieces(path: Path, mapping: ColumnMapping) -> list[FilePiece]:
    """``path`` cut into pieces for tasks: consecutive row groups of about :data:`TASK_ROWS`
    rows, or :data:`CSV_BLOCK_BYTES` of an uncompressed CSV file (compressed ones whole).

    Raises
    ------
    GpusegError
        When the file cannot be read or lacks a mapped column.
    """
    check_columns(path, mapping)
    try:
        if file_format(path) == "parquet":
            meta = pq.ParquetFile(path).metadata
            pieces, groups, rows = [], [], 0
            for i in range(meta.num_row_groups):
                groups.append(i)
                rows += meta.row_group(i).num_rows
                if rows >= TASK_ROWS:
                    pieces.append(FilePiece(str(path), tuple(groups)))
                    groups, rows = [], 0
            return pieces + [FilePiece(str(path), tuple(groups))] if groups or not pieces else pieces
        if not path.name.lower().endswith(".csv") or not _splits_at_newlines(path):
            return [FilePiece(str(path))]
        size = path.stat().st_size
        return [FilePiece(str(path), start=a, stop=a + CSV_BLOCK_BYTES if a + CSV_BLOCK_BYTES < size else None)
                for a in range(0, max(size, 1), CSV_BLOCK_BYTES)]
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _fail(path, exc) from None


def _header_line(fh: Any) -> bytes:
    """The header line of an open CSV file (Arrow skips blank lines before it too); the file is left
    after it."""
    line = fh.readline()
    while line and not line.lstrip(b"\xef\xbb\xbf").strip(b"\r\n"):
        line = fh.readline()
    return line


def _quoted_line_break(body: bytes) -> bool:
    """Whether a quoted field of ``body`` holds a line break, or is still open at its end: a
    field opens with a quote at its start (a quote inside an unquoted field, 12" PIZZA TRAY,
    opens nothing, as Arrow reads it), two quotes inside are one, one quote closes it."""
    if b'"' not in body:
        return False
    data = np.frombuffer(body, dtype=np.uint8)
    quotes = np.flatnonzero(data == 34)
    before = data[np.maximum(quotes - 1, 0)]
    opens = (quotes == 0) | (before == 44) | (before == 10) | (before == 13)
    if not opens.any():
        return False
    lines = np.flatnonzero(data == 10)
    line = np.searchsorted(lines, quotes)  # the line of each quote
    # The usual case at NumPy speed: every line's quotes open and close fields on it (an even count,
    # each at a field's start or end), so no field spans a line.
    after = data[np.minimum(quotes + 1, len(data) - 1)]
    edge = opens | (after == 44) | (after == 10) | (after == 13) | (after == 34) | (quotes == len(data) - 1)
    if edge.all() and not (np.bincount(line) % 2).any():
        return False
    inside, i, n = False, 0, len(quotes)
    start = 0
    while i < n:  # the quotes in order, as Arrow's parser meets them
        q = int(quotes[i])
        if not inside:
            if opens[i]:
                inside, start = True, q
        elif i + 1 < n and int(quotes[i + 1]) == q + 1:
            i += 1  # an escaped quote ("")
        else:
            if line[i] != np.searchsorted(lines, start):
                return True
            inside = False
        i += 1
    return inside


def _splits_at_newlines(path: Path) -> bool:
    """Whether a CSV file's lines end in a line feed, as cutting it at line ends assumes: Arrow also
    ends lines at a lone carriage return (old Mac files), which such a file is kept whole for."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    lone = head.count(b"\r") - head.count(b"\r\n") - head.endswith(b"\r")  # a CRLF cut at the sample's end
    return lone == 0 and b"\n" in head


def read_piece(piece: FilePiece, mapping: ColumnMapping) -> list[pa.RecordBatch]:
    """The mapped columns of one :class:`FilePiece`, read as :func:`iter_batches` reads the
    whole file. A CSV piece holds the lines that start in its byte range, parsed below the
    file's header line: as with ``dask.dataframe.read_csv``, a quoted field must not hold
    a line break (a piece that shows one is an error, not rows cut in two).

    Raises
    ------
    GpusegError
        When the file cannot be read.
    """
    path = Path(piece.path)
    try:
        if file_format(path) == "parquet":
            if not piece.row_groups:
                return []
            return open_parquet(path).read_row_groups(list(piece.row_groups), columns=mapping.needed,
                                                      use_threads=False).to_batches()
        if piece.start == 0 and piece.stop is None:
            return list(iter_batches(path, mapping))
        with open(path, "rb") as fh:
            header = _header_line(fh)
            start = max(piece.start, fh.tell())
            if start > fh.tell():
                fh.seek(start - 1)
                start += len(fh.readline()) - 1  # to the end of the line that holds byte start - 1
            end = path.stat().st_size
            if piece.stop is not None and piece.stop < end:
                fh.seek(piece.stop - 1)
                end = piece.stop - 1 + len(fh.readline())
            if end <= start:
                return []
            fh.seek(start)
            body = fh.read(end - start)
        if _quoted_line_break(body):
            raise GpusegError(f"input file {str(path)!r} has a line with an unpaired quote character (a quoted "
                              "field holding a line break, or a stray quote); with --scheduler a CSV file is cut "
                              "at line ends for the workers: convert it to Parquet, or run without --scheduler")
        table = pacsv.read_csv(pa.BufferReader(header + body), convert_options=csv_convert(mapping),
                               read_options=pacsv.ReadOptions(block_size=64 << 20))  # as iter_batches reads
        return table.combine_chunks().to_batches()
    except GpusegError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _fail(path, exc) from None
