"""Outputs: assignments, features, segment profiles, model and report.

Everything is written into a staging folder beside ``--out``, which replaces
``--out`` whole only when complete: a failed run leaves nothing behind, and a
finished one leaves exactly its own files (see :func:`staged_output`).
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import GpusegError
from .reading import EMPTY_INPUT
from .summary import SegmentSums

ASSIGNMENTS = "assignments.parquet"
FEATURES_FILE = "features.parquet"
SEGMENTS = "segments.csv"
MODEL = "model.json"
REPORT = "report.json"
MIGRATION = "migration.csv"


#: Everything a gpuseg command writes into ``--out`` (Dask writes the two datasets as folders).
#: A folder holding anything else was not written by gpuseg and is never replaced.
OUTPUT_NAMES = frozenset({ASSIGNMENTS, FEATURES_FILE, SEGMENTS, MODEL, REPORT, MIGRATION, "report.html",
                          "drift.json", "score_report.json", "choose_k.json", "choose_k.png",
                          "assignments", "features", "bench.json", "bench.md", "bench.png",
                          ".report.html.partial",  # left by a `gpuseg report` that was killed
                          ".partial-bench.json", ".partial-bench.md", ".partial-bench.png",  # and `gpuseg bench`
                          ".DS_Store", "Thumbs.db"})  # what file browsers leave in a folder they showed


def owner_tag() -> str:
    """Host and process id, written into staging names so that a later run can tell a dead run's leftovers."""
    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def sweep_stale(folder: Path, prefix: str, restore: Path | None = None, min_age_s: float = 0) -> None:
    """Remove the entries ``prefix + HOST-PID-*`` in ``folder`` left by dead runs on this host.

    A run killed by SIGKILL (or a power cut) cannot clean up after itself;
    the next run does. Entries of live processes, and of other hosts (a
    shared filesystem), are left alone. With ``restore``, an entry that
    holds a previous output set aside during a swap is moved back to
    ``restore`` when that is missing (the run died between the two renames). With ``min_age_s``
    only entries untouched that long go: a live run in another PID namespace (a container of
    the same host name) cannot be told from a dead one, but a file being written is fresh.
    """
    host = socket.gethostname().replace("-", "_")
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        parts = entry.name[len(prefix):].split("-")
        if len(parts) < 3 or parts[0] != host or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        if min_age_s:
            try:
                if time.time() - entry.stat().st_mtime < min_age_s:
                    continue
            except OSError:
                continue
        if restore is not None and not restore.exists():
            try:
                os.replace(entry, restore)
                continue
            except OSError:
                pass
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)  # a file (gpuseg generate's partial log)


def check_out(out: Path | str, inputs: tuple[str, ...] = (), models: dict[str, Path | None] | None = None) -> Path:
    """``out`` as an absolute path, if a run may write it; else :class:`GpusegError`.

    The rule: ``--out`` is a folder of its own (not a link to one). It may be new, empty, or a
    folder that holds only gpuseg outputs (:data:`OUTPUT_NAMES`, from an
    earlier run, which it then replaces whole). It may not be the current
    folder or hold it, nor be, hold or lie inside an input folder, nor hold
    an input file, nor hold a model the run reads (``models``: option ->
    path, e.g. ``{"--model": ...}``), which replacing it would destroy.
    """
    text = os.fspath(out) if isinstance(out, os.PathLike) else str(out)
    if not text.strip():
        raise GpusegError("--out is empty; give a folder for the outputs, e.g. --out segments")
    path = Path(os.path.abspath(text))
    if path.is_symlink():  # replacing --out whole would replace the link, not the folder it names
        raise GpusegError(f"--out {text!r} is a symbolic link (to {os.readlink(path)!r}); a run replaces --out "
                          "whole: give the folder itself, or another folder")
    cwd = Path(os.getcwd())
    if path == cwd or path in cwd.parents:
        raise GpusegError(f"--out {text!r} is the current folder or holds it; give a folder of its own, "
                          "e.g. --out segments")
    for above in path.parents:  # the nearest that exists must be a folder to make --out in
        if above.exists():
            if not above.is_dir():
                raise GpusegError(f"--out {text!r} lies under {str(above)!r}, which is a file, not a folder")
            break
    real = Path(os.path.realpath(path))  # through links: a linked folder is where it points
    for item in inputs:
        if not item.strip():
            raise GpusegError(EMPTY_INPUT)
        if glob.has_magic(item):
            parts = Path(item).parts
            fixed = parts[:next(i for i, part in enumerate(parts) if glob.has_magic(part))]
            src = Path(os.path.abspath(Path(*fixed))) if fixed else cwd
            wild = parts[len(fixed):]
            if not _reaches(wild, path, src) and not _reaches(wild, real, Path(os.path.realpath(src))):
                continue
        else:
            src = Path(os.path.abspath(item))
        for out_at, src_at in ((path, src), (real, Path(os.path.realpath(src)))):
            if src_at == out_at or out_at in src_at.parents:
                raise GpusegError(f"--out {text!r} holds the input {item!r}; give another folder")
            if src_at.is_dir() and src_at in out_at.parents:
                raise GpusegError(f"--out {text!r} is inside the input folder {item!r}, where the next run "
                                  "would read the outputs as input; give a folder outside it")
    for option, model in (models or {}).items():
        if model is not None and path in Path(os.path.abspath(model)).parents:
            raise GpusegError(f"--out {text!r} holds the {option} {str(model)!r}, which this run would replace; "
                              "give another folder")
    if path.exists():
        if not path.is_dir():
            raise GpusegError(f"--out {text!r} exists and is not a folder")
        try:
            names = [p.name for p in path.iterdir()]
        except OSError as exc:
            raise GpusegError(f"--out {text!r} cannot be read: {exc.strerror}") from None
        foreign = sorted(name for name in names if name not in OUTPUT_NAMES)
        if foreign:
            raise GpusegError(f"--out {text!r} holds files gpuseg did not write (e.g. {foreign[0]!r}), and a run "
                              "replaces the whole folder; give a new or empty folder, or an earlier run's --out")
        if names and not os.access(path, os.W_OK | os.X_OK):  # set aside, its files could never be removed
            raise GpusegError(f"--out {text!r} holds an earlier run's files that this user may not remove (the "
                              "folder is not writable to it); give another folder, or make it writable")
    return path


def _reaches(wild: tuple[str, ...], out: Path, base: Path) -> bool:
    """Whether the wildcard parts ``wild`` of a glob rooted at ``base`` could match files that a
    run writes in ``out`` (its files, or the parts of a Dask run's folders): always with
    ``**``, else when the pattern is as deep as they are and its parts match ``out``'s."""
    if "**" in wild or ".." in wild:  # any depth, or back up: it may reach anywhere below the root's parent
        return True
    try:
        rel = out.relative_to(base).parts
    except ValueError:
        return False
    if len(wild) not in (len(rel) + 1, len(rel) + 2):
        return False
    return all(fnmatch.fnmatchcase(name, part) for name, part in zip(rel, wild))


@contextmanager
def staged_output(out: Path | str, swap_on_interrupt: Callable[[], bool] | None = None) -> Iterator[Path]:
    """Yield a fresh staging folder beside ``out``; on success it replaces ``out`` whole.

    ``out`` then holds exactly one run's outputs: the previous folder is
    renamed aside, the staging folder renamed into place, and the previous
    one removed (a failure between the renames puts it back). On an
    exception, SIGINT or SIGTERM (see :func:`gpuseg.cli.main`) the staging
    folder is removed, and ``out``'s parent if this call created it; ``out``
    is left as it was. Leftovers of dead runs (SIGKILL) are swept first.
    ``out`` must pass :func:`check_out`. When ``swap_on_interrupt()`` says so, an interrupted
    run (KeyboardInterrupt: SIGINT or SIGTERM) swaps in what it wrote, for a command whose partial
    results are worth keeping (``gpuseg bench``, once it measured something).
    """
    out = check_out(out)
    made: list[Path] = []
    parent = out.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out.parent, f".{out.name}.partial-")
    sweep_stale(out.parent, f".{out.name}.old-", restore=out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{owner_tag()}", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output folder should not be
    try:
        yield tmp
        _swap(tmp, out)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and tmp.exists() and swap_on_interrupt and swap_on_interrupt():
            _swap(tmp, out)  # (tmp is gone when the interrupt came in the swap itself: out is the new run)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:
            try:
                p.rmdir()
            except OSError:
                pass
        if _disk_full(exc):  # Arrow's message names no file: say where
            raise GpusegError(f"no space left to write --out {str(out)!r} (the disk or quota of "
                              f"{str(out.parent)!r} is full); free some, or give --out elsewhere") from None
        raise


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or the user's quota is full (OSError, or Arrow's error text)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "[errno 28]" in str(exc).lower() or "no space left on device" in str(exc).lower()


#: Raised by the run that loses a race to swap its outputs into the same --out.
RACE = ("another gpuseg run wrote --out {out!r} at the same time and its outputs are there; this run's were "
        "not kept (give each run a folder of its own)")


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back until the block ends, then acted on as the handlers they found
    would have: a signal in the middle of a swap left --out replaced, a ``.old`` folder beside it,
    and an exit code that said the run had failed or been stopped. Python runs signal handlers on
    the main thread, so only there can they be held; a handler set from C (``None`` here) is left
    alone. A signal while the handlers are swapped in or back never leaves one swapped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    before: dict[int, Any] = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) is not None:
                before[s] = signal.signal(s, lambda signum, frame: caught.append(signum))
        yield
    finally:
        interrupted = None
        for s, handler in before.items():
            try:
                signal.signal(s, handler)
            except KeyboardInterrupt as exc:  # a signal already put back raised: finish putting them back
                signal.signal(s, handler)
                interrupted = exc
        if interrupted is not None:
            raise interrupted
        for signum in dict.fromkeys(caught):  # the first signal whose handler acts, as it would have acted
            handler = before[signum]
            if callable(handler):
                handler(signum, None)  # gpuseg's SIGTERM handler and Python's SIGINT one raise KeyboardInterrupt
                break
            if handler == signal.SIG_DFL:
                signal.raise_signal(signum)
                break


def _swap(new: Path, out: Path) -> None:
    """Put the folder ``new`` in the place of ``out`` (which may not exist).

    Another run may swap into ``out`` at the same moment: whichever puts its folder in place
    first keeps it, and the other stops with :data:`RACE`, leaving nothing of its own behind.
    """
    with _signals_held():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{owner_tag()}", dir=out.parent))
        try:
            try:
                os.replace(out, old)  # onto an empty folder: allowed, and atomic
            except FileNotFoundError:
                pass  # no earlier outputs (or another run has just moved them aside)
            try:
                os.replace(new, out)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not out.is_dir():
                    if not out.exists() and any(old.iterdir()):
                        os.replace(old, out)  # put the earlier outputs back
                    raise
                shutil.rmtree(new, ignore_errors=True)  # another run's outputs took the place first
                raise GpusegError(RACE.format(out=str(out))) from None
        finally:
            shutil.rmtree(old, ignore_errors=True)


def segment_profiles(segment: Any, columns: dict[str, Any], k: int,
                     names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per segment: name, size, share, revenue share, mean of each feature.

    ``segment`` (n,) and the (n,) ``columns`` in one namespace; the rule is
    :meth:`gpuseg.summary.SegmentSums.profiles`, which the Dask path reaches
    through sums added over partitions.
    """
    return SegmentSums.of(segment, columns, k).profiles(names)


def write_parquet(path: Path, columns: dict[str, Any]) -> None:
    """Write ``columns`` as one Parquet file (snappy).

    Only small integers and dictionary columns are dictionary-encoded: an id
    or float column has about one value per row, so its dictionary is built
    and then thrown away (half the writer's time on 10⁷ customers, for a
    larger file)."""
    table = pa.table(columns)
    dictionary = [f.name for f in table.schema
                  if pa.types.is_dictionary(f.type) or (pa.types.is_integer(f.type) and f.name != "customer_id")]
    pq.write_table(table, path, compression="snappy", use_dictionary=dictionary)


def write_segments_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    pacsv.write_csv(pa.Table.from_pylist(rows), path)


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON: a value that is not a finite number (an undefined metric) is written as null."""
    path.write_text(json.dumps(_finite(obj), indent=2, default=_jsonable, allow_nan=False) + "\n",
                    encoding="utf-8")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    return obj


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def segment_names(segment: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    """The name of each row's segment, dictionary-encoded (one string per segment, not per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(segment, dtype=np.int32)), pa.array(names, pa.string()))
