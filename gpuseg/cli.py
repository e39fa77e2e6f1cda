"""The ``gpuseg`` command line: thin commands over the library.

Each command builds a config, calls one library function and prints. A
:class:`~gpuseg.errors.GpusegError` becomes one ``Error:`` line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Optional

import typer
# Typer carries its own copy of click; its exceptions are the ones raised here.
from typer._click import exceptions as click_errors
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import __version__
from .config import SegmentConfig, _int, parse_count, parse_date, parse_features
from .errors import GpusegError
from .features import DEFAULT_FEATURES, FEATURES

class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (``--k abc``, a missing option) as one ``Error:`` line and exit code 2, like library errors."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_errors.NoArgsIsHelpError as exc:
            out_console.print(exc.ctx.get_help() if exc.ctx else str(exc), markup=False, highlight=False)
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            hint = (f" (see '{exc.ctx.command_path} --help')" if isinstance(exc, click_errors.UsageError) and exc.ctx
                    else "")
            message = _printable(" ".join(exc.format_message().split()))
            err_console.print(f"[bold red]Error:[/] {escape(message)}{escape(hint)}", highlight=False,
                              soft_wrap=True)
            sys.exit(EXIT_BAD_INPUT if isinstance(exc, click_errors.UsageError) else exc.exit_code)
        except typer.Abort:
            err_console.print("Aborted.")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="gpuseg",
    cls=_OneLineErrors,
    help="Customer segmentation from retail transaction logs, on NVIDIA GPUs or the CPU.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out_console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2

STAGE_LABELS = {"load": "Reading, cleaning and summing batches", "clean": "Merging batches",
                "features": "Building features",
                "scale": "Scaling features", "fit": "Fitting k-means", "assign": "Assigning segments",
                "write": "Writing outputs"}


def _printable(text: str) -> str:
    """``text`` with what a terminal would act on (escape sequences, line breaks) shown as "?":
    messages quote column names, ids and file names from the user's data."""
    return "".join(c if c.isprintable() else "?" for c in text)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn library errors into one line and a non-zero exit."""
    try:
        yield
    except GpusegError as exc:
        err_console.print(f"[bold red]Error:[/] {escape(_printable(str(exc)))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except MemoryError:
        err_console.print("[bold red]Error:[/] out of memory; try fewer rows per run or a larger machine",
                          highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as exc:
        err_console.print(f"[bold red]Error:[/] {escape(_printable(str(exc.strerror or exc)))}: "
                          f"{escape(_printable(str(exc.filename or '')))}".rstrip(": "),
                          highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


class _StatusProgress:
    """Shows the current stage, and rows read while reading."""

    def __init__(self, status: Any):
        self.status = status
        self.n_rows = 0
        self.current = ""

    def stage(self, name: str) -> None:
        self.current = STAGE_LABELS.get(name, name)
        self.status.update(f"{self.current}…")

    def rows(self, n: int) -> None:
        self.n_rows += n
        self.status.update(f"{self.current}… {self.n_rows:,} rows")


#: Columns between two table columns: one space of padding, one of the (blank) border.
_GAP = 2


@dataclass(frozen=True)
class _Col:
    """A column of a terminal table. ``header`` may hold a line break; only a ``wrap`` column (names)
    wraps its cells, at spaces. ``drop`` ranks the columns left out, lowest first, when the table
    does not fit the terminal; ``None`` is always shown."""

    header: str
    justify: Literal["left", "right"] = "right"
    wrap: bool = False
    drop: int | None = None


def _needed_width(col: _Col, cells: list[str]) -> int:
    """Columns the cells need: their widest line, or for a wrapping column its longest word."""
    lines = [line for text in (col.header, *cells) for line in text.split("\n")]
    if col.wrap:
        return max((cell_len(word) for line in lines for word in line.split()), default=1)
    return max((cell_len(line) for line in lines), default=1)


def _print_table(title: str, columns: list[_Col], rows: list[list[str]], *, full: str,
                 style: list[str | None] | None = None) -> None:
    """Print ``rows`` as a table that fits the terminal: numbers are never cut and names only wrap.

    The table is borderless, two spaces between columns (``_GAP``). When the columns cannot all fit
    even with the names wrapped, the droppable ones go, lowest ``drop`` first, and a line says
    which and that ``full`` has them all.
    """
    keep = list(range(len(columns)))
    needs = [_needed_width(c, [row[i] for row in rows]) for i, c in enumerate(columns)]

    def width(idx: list[int]) -> int:
        return sum(needs[i] for i in idx) + _GAP * (len(idx) - 1)

    for i in sorted((i for i, c in enumerate(columns) if c.drop is not None), key=lambda i: columns[i].drop):
        if width(keep) <= out_console.width:
            break
        keep.remove(i)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, _GAP - 1, 0, 0), header_style="bold")
    for i in keep:
        c = columns[i]
        table.add_column(c.header, justify=c.justify, no_wrap=not c.wrap, overflow="fold")
    for n, row in enumerate(rows):
        table.add_row(*(Text(row[i]) for i in keep), style=style[n] if style else None)
    out_console.print(table)
    left_out = [_one_line(columns[i].header) for i in range(len(columns)) if i not in keep]
    if left_out:
        out_console.print(f"Not shown at this width: {', '.join(left_out)} (all columns are in {full}).",
                          style="dim", highlight=False, markup=False)


def _one_line(header: str) -> str:
    """A two-line header on one line: "Calinski-\\nHarabasz" -> "Calinski-Harabasz", "avg\\norder" -> "avg order"."""
    lines = header.split("\n")
    return "".join(a + ("" if a.endswith(("-", "→")) else " ") for a in lines[:-1]) + lines[-1]


# Per segment; at 80 columns the names wrap. Dropped first when the terminal is narrower: the
# average order (monetary / frequency), the shares, then the means.
SEGMENT_COLUMNS = [_Col("seg"), _Col("name", "left", wrap=True), _Col("customers"), _Col("share", drop=1),
                   _Col("revenue\nshare", drop=2), _Col("recency\n(days)", drop=6), _Col("frequency", drop=5),
                   _Col("monetary", drop=4), _Col("avg\norder", drop=0)]
CHOOSE_K_COLUMNS = [_Col("k"), _Col("inertia", drop=0), _Col("silhouette"), _Col("Calinski-\nHarabasz", drop=1),
                    _Col("Davies-\nBouldin", drop=2), _Col("stability")]
SCORE_COLUMNS = [_Col("seg"), _Col("name", "left", wrap=True), _Col("customers"), _Col("share"),
                 _Col("training\nshare", drop=2), _Col("change", drop=3), _Col("mean\ndistance", drop=1),
                 _Col("training\ndistance", drop=0)]


def _print_items(marker: str, items: list[str], style: str | None = None) -> None:
    """One line per item after ``marker``; an item longer than the terminal wraps under its own start."""
    for item in items:
        grid = Table.grid(padding=(0, 1, 0, 0))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row(marker, Text(item), style=style)
        out_console.print(grid)


def _score_progress(quiet: bool) -> Any:
    """Stage, bar and rows done; the longest stage and 10⁹ rows fit in 80 columns."""
    from rich.progress import BarColumn, Progress, TextColumn

    return Progress(TextColumn("{task.description}"), BarColumn(bar_width=30), TextColumn("{task.completed:,}"),
                    console=out_console, transient=True, disable=_no_live(quiet))


def _generate_progress(quiet: bool) -> Any:
    from rich.progress import Progress

    return Progress(console=out_console, transient=True, disable=_no_live(quiet))


def _no_live(quiet: bool) -> bool:
    """No bar with -q, nor into a pipe or a file, where a finished transient bar still leaves an empty line."""
    return quiet or not out_console.is_terminal


def _count(text: str | int) -> int:
    """'100000', '1e8' or '10_000_000' -> int (an int is a default Typer passes through)."""
    if isinstance(text, int):
        return text
    try:
        return parse_count(text, "the value")
    except GpusegError as exc:
        raise typer.BadParameter(str(exc).replace("the value ", "", 1)) from None


def _version(value: bool) -> None:
    if value:
        out_console.print(f"gpuseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the library does.")] = False,
) -> None:
    level = logging.INFO if verbose else logging.WARNING
    before = set(logging.root.handlers)
    logging.basicConfig(level=level, format="%(name)s: %(message)s")
    # Libraries that set their own loggers' levels (Dask's are INFO) still pass through the handler.
    for handler in set(logging.root.handlers) - before:
        handler.setLevel(level)


@contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """``-q``: print only errors, for the duration of one command. gpuseg's own errors reach the
    user as ``Error:`` lines, not through logging, so log records and warnings are dropped."""
    if not quiet:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


FEATURE_HELP = f"Comma-separated clustering features; any of: {', '.join(FEATURES)}."

# Options shared by segment, choose-k and score.
Inputs = Annotated[Optional[list[str]], typer.Argument(
    metavar="[INPUT]...", help="CSV or Parquet files, folders or globs. None: the built-in demo data.",
    show_default=False)]
CustomerCol = Annotated[Optional[str], typer.Option(help="Customer id column.", rich_help_panel="Columns")]
DateCol = Annotated[Optional[str], typer.Option(help="Date column.", rich_help_panel="Columns")]
InvoiceCol = Annotated[Optional[str], typer.Option(help="Invoice/order id column (optional).", rich_help_panel="Columns")]
AmountCol = Annotated[Optional[str], typer.Option(help="Line amount column.", rich_help_panel="Columns")]
QuantityCol = Annotated[Optional[str], typer.Option(help="Quantity column (amount = quantity × price).",
                                                    rich_help_panel="Columns")]
PriceCol = Annotated[Optional[str], typer.Option(help="Unit price column.", rich_help_panel="Columns")]
DateFormat = Annotated[Optional[str], typer.Option(help="strptime format of text dates, e.g. '%m/%d/%Y %H:%M'.",
                                                   rich_help_panel="Columns")]
AsOf = Annotated[Optional[str], typer.Option(help="Reference day YYYY-MM-DD (default: the day after the last row).")]
Features = Annotated[str, typer.Option(help=FEATURE_HELP)]
Scheduler = Annotated[Optional[str], typer.Option(
    help="Run on Dask: a scheduler address (tcp://host:8786) or 'local' for a cluster on this machine.",
    rich_help_panel="Dask")]


def _columns(customer: str | None, date: str | None, invoice: str | None, amount: str | None,
             quantity: str | None, price: str | None) -> dict[str, str]:
    """Role -> column for the column options that were given."""
    return {role: name for role, name in (("customer", customer), ("date", date), ("invoice", invoice),
                                          ("amount", amount), ("quantity", quantity), ("price", price)) if name}


@app.command()
def segment(
    inputs: Inputs = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Number of segments.")] = 5,
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (replaced whole by each run).")] = "segments",
    features: Features = ",".join(DEFAULT_FEATURES),
    backend: Annotated[str, typer.Option(help="auto, cpu, cupy or cuml.")] = "auto",
    customer_col: CustomerCol = None,
    date_col: DateCol = None,
    invoice_col: InvoiceCol = None,
    amount_col: AmountCol = None,
    quantity_col: QuantityCol = None,
    price_col: PriceCol = None,
    date_format: DateFormat = None,
    as_of: AsOf = None,
    max_iter: Annotated[int, typer.Option(help="Most Lloyd iterations.", rich_help_panel="K-means")] = 300,
    tol: Annotated[float, typer.Option(help="Relative tolerance on centre shift.", rich_help_panel="K-means")] = 1e-4,
    n_init: Annotated[int, typer.Option(help="Runs from different seeds; the best is kept.", rich_help_panel="K-means")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same result).", rich_help_panel="K-means")] = 0,
    precision: Annotated[str, typer.Option(help="auto (float32 on a GPU, float64 on the CPU), float32 or float64.", rich_help_panel="K-means")] = "auto",
    reference_model: Annotated[Optional[Path], typer.Option(help="A previous run's model.json: keep its segment ids and names, and write migration.csv.")] = None,
    scheduler: Scheduler = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Segment customers: read transactions, build features, cluster, write results.

    Example: [bold]gpuseg segment sales/*.parquet --k 6 --out segments/[/]
    """
    from .pipeline import run

    with _silenced(quiet), _user_errors():
        config = _segment_config(inputs, out, k, features, backend, customer_col, date_col, invoice_col, amount_col,
                                 quantity_col, price_col, date_format, as_of, max_iter=max_iter, tol=tol,
                                 n_init=n_init, seed=seed, precision=precision, reference_model=reference_model)
        if scheduler is not None:
            from .dask_pipeline import run_dask
            if config.reference_model is not None:
                raise GpusegError("--reference-model is not supported with --scheduler yet; run without it")
            with out_console.status("Running on Dask…") if not quiet else nullcontext() as status:
                report = run_dask(config, scheduler, on_stage=(lambda name: status.update(
                    f"{STAGE_LABELS.get(name, name)} on Dask…")) if status is not None else None).report
            if not quiet:
                out_console.print(f"[bold]{report['n_customers']:,}[/] customers on {escape(report['scheduler'])} "
                                  f"({_counted(report['workers'], 'worker')}, "
                                  f"{_counted(report['partitions'], 'partition')}); "
                                  f"{_counted(report['n_iter'], 'iteration')}; wrote {_folder(config.out)}/ "
                                  "(assignments/ and features/ as Parquet datasets)", highlight=False)
            return
        if not config.inputs and not quiet:
            out_console.print(f"No INPUT given: running on the built-in demo data "
                              f"({config.demo_customers:,} customers, seed 0).")
        with out_console.status("Starting…", spinner="dots") if not quiet else nullcontext() as status:
            result = run(config, _StatusProgress(status) if status is not None else None)
    if not quiet:
        _print_result(result)


def _rows_line(rep: dict[str, Any], n_customers: int) -> str:
    """Customers and rows, what was dropped and who was left out: every command that reads transactions."""
    rows = rep["rows"]
    dropped = {k: v for k, v in rows["dropped"].items() if v}
    return (f"[bold]{n_customers:,}[/] customers from {rows['used']:,} of {rows['read']:,} rows"
            + (f" (dropped: {', '.join(f'{k} {v:,}' for k, v in dropped.items())})" if dropped else "")
            + (f"; {rep['customers_without_purchase']:,} customers without a purchase left out"
               if rep["customers_without_purchase"] else ""))


def _print_result(result: Any) -> None:
    rep = result.report
    out_console.print(_rows_line(rep, rep["n_customers"]), highlight=False)
    out_console.print(f"backend [bold]{rep['backend']}[/] on {escape(rep['device'])}; as of {rep['as_of']}; "
                      f"{rep['n_iter']} iterations, {'converged' if rep['converged'] else 'NOT converged'}",
                      highlight=False)
    _print_items("  fallback:", rep["fallbacks"], style="dim")
    _print_items("  warning:", rep["warnings"], style="yellow")

    _print_table("Segments", SEGMENT_COLUMNS, [
        [str(p["segment"]), p["name"], f"{p['n_customers']:,}", f"{p['share']:.1%}", _fmt(p["revenue_share"], ".1%"),
         _fmt(p["mean_recency_days"], ".0f"), _fmt(p["mean_frequency"], ".1f"), _fmt(p["mean_monetary"], ",.0f"),
         _fmt(p["mean_avg_order_value"], ",.1f")] for p in result.profiles], full="segments.csv")
    stages = rep["timings"]
    _print_table("Stage timings (s)", [_Col(name) for name in stages], [[f"{v:.3f}" for v in stages.values()]],
                 full="report.json")
    migration = ", migration.csv" if (Path(result.out) / "migration.csv").exists() else ""
    out_console.print(f"Wrote {_folder(result.out)}/: assignments.parquet, features.parquet, segments.csv, "
                      f"model.json, report.json{migration}", highlight=False)


def _counted(n: int, word: str) -> str:
    """``n`` and ``word``, plural unless n is 1 ("1 partition", "2 workers")."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _folder(path: str | Path) -> str:
    """A folder's name for a message, without the slash it was given with (``choose-k/`` + ``/x``)."""
    return escape(str(Path(path)))


def _fmt(value: float | None, spec: str) -> str:
    """A number as ``spec``; an empty segment's missing mean as a dash."""
    return "–" if value is None else format(value, spec)


def _segment_config(inputs: list[str] | None, out: str, k: int, features: str, backend: str,
                    customer_col: str | None, date_col: str | None, invoice_col: str | None, amount_col: str | None,
                    quantity_col: str | None, price_col: str | None, date_format: str | None, as_of: str | None,
                    **options: Any) -> SegmentConfig:
    columns = _columns(customer_col, date_col, invoice_col, amount_col, quantity_col, price_col)
    return SegmentConfig(inputs=tuple(inputs or ()), out=out, k=k, features=parse_features(features),
                         backend=backend, columns=columns, date_format=date_format,
                         as_of=parse_date(as_of) if as_of else None, **options)


@app.command("choose-k")
def choose_k_command(
    inputs: Inputs = None,
    k_min: Annotated[int, typer.Option(help="Smallest k to try (>= 2).")] = 2,
    k_max: Annotated[int, typer.Option(help="Largest k to try.")] = 12,
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder for choose_k.json and choose_k.png (replaced whole).")] = "choose-k",
    sample_size: Annotated[int, typer.Option(help="Customers sampled for the silhouette.")] = 5000,
    runs: Annotated[int, typer.Option(help="Seeds per k, for stability (mean adjusted Rand index).")] = 3,
    features: Features = ",".join(DEFAULT_FEATURES),
    backend: Annotated[str, typer.Option(help="auto, cpu, cupy or cuml (k-means runs on cpu/cupy).")] = "auto",
    customer_col: CustomerCol = None,
    date_col: DateCol = None,
    invoice_col: InvoiceCol = None,
    amount_col: AmountCol = None,
    quantity_col: QuantityCol = None,
    price_col: PriceCol = None,
    date_format: DateFormat = None,
    as_of: AsOf = None,
    seed: Annotated[int, typer.Option(help="First random seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Score k = k-min..k-max (inertia, silhouette, Calinski-Harabasz, Davies-Bouldin, stability) and recommend one.

    Example: [bold]gpuseg choose-k sales.parquet --k-min 2 --k-max 10 --out choose-k/[/]
    """
    from .choose_k import choose_k

    with _silenced(quiet), _user_errors():
        _int("--k-min", k_min, 2)  # before it serves as the config's k, which would name --k
        config = _segment_config(inputs, out, k_min, features, backend, customer_col, date_col, invoice_col,
                                 amount_col, quantity_col, price_col, date_format, as_of, seed=seed)
        with out_console.status("Starting…") if not quiet else nullcontext() as status:
            result = choose_k(config, k_min=k_min, k_max=k_max, sample_size=sample_size, runs=runs,
                              progress=_StatusProgress(status) if status is not None else None)
    if quiet:
        return
    _print_table(f"Choosing k ({result['n_customers']:,} customers)", CHOOSE_K_COLUMNS, [
        [f"{m['k']}{' ◀' if m['k'] == result['recommended_k'] else ''}", f"{m['inertia']:,.1f}",
         f"{m['silhouette']:.3f}", f"{m['calinski_harabasz']:,.1f}", f"{m['davies_bouldin']:.3f}",
         "–" if m["stability"] is None else f"{m['stability']:.3f}"] for m in result["metrics"]],
        full="choose_k.json",
        style=["bold" if m["k"] == result["recommended_k"] else None for m in result["metrics"]])
    out_console.print(f"Recommended k = [bold]{result['recommended_k']}[/]:", highlight=False)
    _print_items("  -", result["reasons"])
    out_console.print(f"Wrote {_folder(out)}/choose_k.json and choose_k.png", highlight=False)


@app.command()
def score(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="CSV or Parquet files, folders or globs to score.",
                                               show_default=False)],
    model: Annotated[Path, typer.Option("--model", "-m", help="model.json written by gpuseg segment.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (replaced whole by each run).")] = "scores",
    backend: Annotated[str, typer.Option(help="auto, cpu, cupy or cuml (nearest centroid runs on cpu or cupy).")] = "auto",
    customer_col: Annotated[Optional[str], typer.Option(help="Customer id column (default: as in the model).", rich_help_panel="Columns")] = None,
    date_col: DateCol = None,
    invoice_col: InvoiceCol = None,
    amount_col: AmountCol = None,
    quantity_col: QuantityCol = None,
    price_col: PriceCol = None,
    date_format: DateFormat = None,
    as_of: Annotated[Optional[str], typer.Option(help="Reference day YYYY-MM-DD, or 'model' for the model's own (default: the day after the last row).")] = None,
    memory_limit: Annotated[Optional[str], typer.Option(help="Memory to stay within, e.g. 4GB; larger inputs are streamed in partitions (default: a quarter of RAM).")] = None,
    partitions: Annotated[Optional[int], typer.Option(help="Stream through this many partitions regardless of size.")] = None,
    scheduler: Scheduler = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Assign new transactions' customers to a saved model's segments, and summarise drift.

    Example: [bold]gpuseg score new/*.parquet --model segments/model.json --out scores/[/]
    """
    from .scoring import ScoreConfig, parse_memory, score as run_score

    with _silenced(quiet), _user_errors():
        columns = _columns(customer_col, date_col, invoice_col, amount_col, quantity_col, price_col)
        config = ScoreConfig(model=model, inputs=tuple(inputs), out=out, backend=backend, columns=columns,
                             date_format=date_format,
                             as_of=parse_date(as_of) if as_of and as_of.strip() != "model" else None,
                             as_of_from_model=bool(as_of) and as_of.strip() == "model", partitions=partitions,
                             **({"memory_limit": parse_memory(memory_limit)} if memory_limit is not None else {}))
        if scheduler is not None:
            from .dask_pipeline import score_dask
            with out_console.status("Scoring on Dask…") if not quiet else nullcontext():
                res = score_dask(config, scheduler)
            if quiet:
                return
            out_console.print(f"Scored {res['drift']['n_customers']:,} customers on {escape(res['report']['scheduler'])} "
                              f"({_counted(res['report']['workers'], 'worker')}); wrote {_folder(config.out)}/ "
                              "(assignments/ as a Parquet dataset, drift.json, score_report.json)", highlight=False)
            out_console.print(_rows_line(res["report"], res["drift"]["n_customers"]), highlight=False)
            _print_items("  warning:", res["report"]["warnings"], style="yellow")
            return
        with _score_progress(quiet) as bar:
            task = bar.add_task("Scoring", total=None)

            def progress(stage: str, done: int, total: int | None) -> None:
                label = "Reading and partitioning rows" if stage == "read" else "Scoring partitions"
                bar.update(task, description=label, completed=done, total=total)

            result = run_score(config, progress)
    if quiet:
        return
    drift = result.drift
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.1%}"

    def dist(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    _print_table(f"Scored {drift['n_customers']:,} customers (as of {result.report['as_of']})", SCORE_COLUMNS, [
        [str(s["segment"]), s["name"], f"{s['customers']:,}", pct(s["share"]), pct(s["training_share"]),
         "–" if s["share_change"] is None else f"{100 * s['share_change']:+.1f} pt", dist(s["mean_distance"]),
         dist(s["training_mean_distance"])] for s in drift["segments"]], full="drift.json")
    rep = result.report
    out_console.print(_rows_line(rep, drift["n_customers"]), highlight=False)
    _print_items("  warning:", rep["warnings"], style="yellow")
    out_console.print(f"{'Streamed through ' + _counted(rep['partitions'], 'partition') if rep['streamed'] else 'In memory'}"
                      f"; backend {rep['backend']}; wrote {_folder(result.out)}/assignments.parquet, drift.json, "
                      "score_report.json", highlight=False)


@app.command()
def report(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="The --out folder of a gpuseg segment run.")],
    choose_k: Annotated[Optional[Path], typer.Option("--choose-k", help="The --out folder of a gpuseg choose-k run: add its curves.")] = None,
) -> None:
    """Write OUT_DIR/report.html: one self-contained page with the segments, profiles, a projection and timings.

    Example: [bold]gpuseg segment sales.parquet --out segments/ && gpuseg report segments/ --choose-k choose-k/[/]
    """
    from .html_report import write_report

    with _user_errors():
        path = write_report(out_dir, choose_k)
    out_console.print(f"Wrote {escape(str(path))}", highlight=False)


@app.command()
def generate(
    out: Annotated[str, typer.Option("--out", "-o", help="Output file, .csv or .parquet.")],
    transactions: Annotated[int, typer.Option(parser=_count, metavar="N", help="Rows (transaction lines), e.g. 1e7.")] = 1_000_000,
    customers: Annotated[int, typer.Option(parser=_count, metavar="M", help="Customers, e.g. 1e5.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 0,
    dirty: Annotated[float, typer.Option(help="Share of rows that lose their customer id (half of them) or their price.")] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Write a synthetic transaction log with planted customer behaviours.

    Large logs stream to disk in blocks. Example: [bold]gpuseg generate --transactions 1e7 --customers 1e6 --out tx.parquet[/]
    """
    from .generate import write_log

    with _user_errors():
        with _generate_progress(quiet) as bar:
            task = bar.add_task("Generating", total=transactions)
            n = write_log(out, transactions, customers, seed=seed, dirty=dirty,
                          on_block=lambda rows: bar.advance(task, rows))
    if not quiet:
        import numpy as np
        share = np.format_float_positional(100 * dirty, precision=3, unique=True, fractional=False, trim="-")
        lost = f" ({share}% of rows without their customer id or price)" if dirty else ""
        out_console.print(f"Wrote {n:,} rows for {customers:,} customers to {escape(str(out))}{lost}", highlight=False)


@app.command()
def bench(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for bench.json, bench.md and bench.png (kernel mode: bench.json and bench.md).")],
    sizes: Annotated[str, typer.Option(help="Transactions per run, comma-separated (kernel mode: points n).")] = "1e5,1e6,1e7",
    k: Annotated[int, typer.Option("--k", "-k", help="Segments (clusters).")] = 8,
    backends: Annotated[str, typer.Option(help="gpuseg backends to compare: cpu,cupy,cuml; peers are added when installed.")] = "cpu,cupy,cuml",
    repeats: Annotated[int, typer.Option(help="Timed runs per backend and size (kernel mode: per case), after one untimed run.")] = 3,
    cache: Annotated[Optional[Path], typer.Option(help="Where generated logs are cached (default ~/.cache/gpuseg/bench).")] = None,
    kernel: Annotated[bool, typer.Option("--kernel", help="Time the Lloyd step alone over a grid of n, d, k.")] = False,
    kernel_d: Annotated[str, typer.Option(help="Kernel mode: feature counts d.")] = "3,8",
    kernel_k: Annotated[str, typer.Option(help="Kernel mode: cluster counts k.")] = "5,16",
) -> None:
    """Benchmark backends and the usual peers on generated logs: medians, speed-ups, checks, plots.

    Example: [bold]gpuseg bench --sizes 1e5,1e6,1e7 --backends cpu,cupy --out bench/[/]
    Kernel mode: [bold]gpuseg bench --kernel --sizes 1e6,1e7 --out bench-kernel/[/]
    """
    from .bench import (BenchConfig, check_backends, kernel_grid, kernel_markdown, machine_info, parse_sizes,
                        run_bench, run_kernel_bench)
    from .outputs import check_out, staged_output

    with _user_errors():
        backend_list = tuple(b.strip() for b in backends.split(",") if b.strip())
        if kernel:
            grid = kernel_grid(sizes, kernel_d, kernel_k)
            check_backends(backend_list)
            check_out(out)
            _int("--repeats", repeats, 1)
            with out_console.status("Timing the Lloyd step…") as status:
                res = run_kernel_bench(grid, backend_list, reps=repeats, on_case=lambda c: status.update(
                    f"{c['impl']} n={c['n']:,} d={c['d']} k={c['k']}: {c['ms_per_iter']:.3f} ms"))
            import datetime as _dt
            import json as _json
            res.update({"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "machine": machine_info(), "mode": "kernel", "repeats": repeats})
            with staged_output(out) as tmp:
                (tmp / "bench.json").write_text(_json.dumps(res, indent=2) + "\n")
                (tmp / "bench.md").write_text(kernel_markdown(res))
            _print_kernel_bench(res, out)
            return
        config = BenchConfig(out=out, sizes=parse_sizes(sizes), k=k, backends=backend_list, repeats=repeats,
                             **({"cache": cache} if cache else {}))
        with out_console.status("Starting…") as status:
            def event(kind: str, info: dict) -> None:
                if kind == "data":
                    status.update(f"Preparing a log of {info['size']:,} transactions…")
                elif kind == "start":
                    status.update(f"{info['size']:,} transactions · {info['backend']} · warming up…")
                elif kind == "run":
                    status.update(f"{info['size']:,} transactions · {info['backend']} · run {info['repeat']}/"
                                  f"{repeats} took {info['wall_s']:.2f} s")
            try:
                result = run_bench(config, event)
            except KeyboardInterrupt:
                err_console.print(f"Interrupted: the runs so far are in {out}/bench.json, bench.md, bench.png")
                raise typer.Exit(130) from None
    _print_bench(result, out)


# bench.md's columns on the terminal, with the drop rank of those that may go (see _print_table).
BENCH_COLUMNS = {"transactions": _Col("transactions"), "backend": _Col("backend", "left"),
                 "end to end": _Col("end to\nend (s)"), "features→assign": _Col("features→\nassign (s)", drop=1),
                 "fit": _Col("fit (s)"), "speed-up (e2e)": _Col("speed-up\n(e2e)", drop=5),
                 "speed-up (fit)": _Col("speed-up\n(fit)", drop=6), "ARI vs cpu": _Col("ARI vs\ncpu", drop=4),
                 "inertia / cpu": _Col("inertia\n/ cpu", drop=3),
                 "peak host MiB": _Col("peak host\nMiB", drop=2), "peak device MiB": _Col("peak\ndevice MiB", drop=0)}
KERNEL_COLUMNS = [_Col("impl", "left"), _Col("n"), _Col("d"), _Col("k"), _Col("ms /\niteration"),
                  _Col("floor\n(ms)"), _Col("% of\nfloor")]


def _print_bench(result: dict[str, Any], out: Path) -> None:
    """The summary of ``bench.md`` in medians; bench.md adds min–max, every column and the method notes."""
    from .bench import SUMMARY_COLUMNS, summary_rows

    m, cfg = result["machine"], result["config"]
    gpu = m.get("gpu")
    out_console.print(f"Machine: {m['cpu']}, {m.get('ram_gib')} GiB RAM"
                      + (f", {gpu['name']} ({gpu['memory']})" if gpu else ", no GPU") + ".",
                      highlight=False, markup=False)
    out_console.print(f"k = {cfg['k']}, {cfg['repeats']} timed runs each after one untimed run; median times in "
                      "seconds; speed-up = cpu median / backend median.", highlight=False, markup=False)
    _print_table("Benchmark", [BENCH_COLUMNS[c] for c in SUMMARY_COLUMNS],
                 [list(row.values()) for row in summary_rows(result, ranges=False)], full=f"{out}/bench.md")
    for u in result["unavailable"]:
        out_console.print(f"not run: {u['backend']}: {u['reason']}", style="dim", highlight=False, markup=False)
    out_console.print(f"Wrote {out}/bench.json, bench.md (with min–max and notes) and bench.png",
                      highlight=False, markup=False)


def _print_kernel_bench(res: dict[str, Any], out: Path) -> None:
    m = res["machine"]
    out_console.print(f"Machine: {m['cpu']}" + (f", {m['gpu']['name']}" if m.get("gpu") else ", no GPU")
                      + f". Host copy bandwidth {res['host_bandwidth_gbs']:.1f} GB/s"
                      + (f", device copy bandwidth {res['device_bandwidth_gbs']:.0f} GB/s"
                         if "device_bandwidth_gbs" in res else "")
                      + ". Floor = bytes of X read once / bandwidth.", highlight=False, markup=False)
    _print_table("Lloyd iteration", KERNEL_COLUMNS, [
        [c["impl"], f"{c['n']:,}", str(c["d"]), str(c["k"]), f"{c['ms_per_iter']:.3f}", f"{c['floor_ms']:.3f}",
         f"{c['pct_of_floor']:.0f}%"] for c in res["cases"]], full=f"{out}/bench.md")
    for u in res["unavailable"]:
        out_console.print(f"not run: {u['backend']}: {u['reason']}", style="dim", highlight=False, markup=False)
    out_console.print(f"Wrote {out}/bench.json and bench.md", highlight=False, markup=False)


def _keep_freed_memory() -> None:
    """Let glibc keep freed large blocks for reuse instead of returning them to the OS.

    A run allocates and frees many arrays of tens to hundreds of MB; with the
    default thresholds each goes back to the kernel and the next one is
    faulted in and zeroed afresh, which cost about 0.7 s of system time on
    10⁷ rows (3.0 s -> 2.3 s wall). Only the CLI process does this: it runs
    one job and exits; the library leaves the allocator alone.

    The blocks are kept in one arena for every thread: with glibc's arena per
    thread, what the merge frees on the pool's threads could not serve the
    fit's arrays on the main thread, and the peak RSS was the two added
    (CDNOW's purchases tiled to 10⁷ rows, 3.4·10⁶ customers: 1.24-1.51 GiB,
    against 1.09-1.11 with one arena set here, at the same CPU time; 0.93-1.05
    with MALLOC_ARENA_MAX=1 set before start, as threads that exist by now keep
    their own arenas).
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve large blocks from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not hand the heap top back eagerly
        if "MALLOC_ARENA_MAX" not in os.environ:  # a limit the user set is left alone
            libc.mallopt(-8, 1)  # M_ARENA_MAX: one arena, so freed blocks serve every thread
    except (OSError, AttributeError):
        return
    # Arrow's own pool (mimalloc) hands decoded row groups' pages back and faults
    # them in again for the next: 6 s of system time on 10⁸ rows, 3.8 s through
    # glibc with the thresholds above (24.7 s -> 22.9 s wall). A pool the user
    # chose is left alone.
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        import pyarrow as pa
        pa.set_memory_pool(pa.system_memory_pool())


def _small_pages() -> None:
    """Ask NumPy not to request transparent huge pages for its arrays.

    NumPy asks the kernel for 2 MiB pages (``madvise``) on every array of
    4 MiB or more. A huge page is zeroed whole when first touched, and on a
    virtual machine whose host takes back the guest's free memory (virtio
    free page reporting, as on the development VM) each fresh 2 MiB block is
    faulted in on the host as well: zeroing huge pages was 12% of the run's
    CPU time on gpuseg's log at 10⁸ rows, most of it in the stages after the
    merge, whose arrays take the room the merge handed back. With 4 KiB
    pages, interleaved pairs on the development VM (run total): gpuseg's log
    at 10⁸ rows 15.35, 15.46 -> 14.43, 14.74 s; the retail log at 10⁸ 12.40,
    12.71 -> 11.81, 12.18 s, at 10⁷ 1.35, 1.34, 1.29, 1.27 -> 1.27, 1.24,
    1.27, 1.22 s; CDNOW at 10⁷ 4.05, 3.65, 3.93 -> 3.55, 3.54, 3.63 s; the
    same peak RSS and the same user time (no gain from fewer TLB misses
    showed). polars + scikit-learn gains as much from the same setting (retail
    log at 10⁸ rows: 15.3 -> 14.5 s), which its users would have to set
    themselves. On a machine without reporting, huge pages would save a
    little of the faulting instead. ``NUMPY_MADVISE_HUGEPAGE``, when the user
    set it, is left to decide. Only the CLI process does this.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _set_madvise_hugepage
    _set_madvise_hugepage(False)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    """Console-script entry point.

    SIGTERM (what ``kill``, batch schedulers and container runtimes send)
    is handled like Ctrl-C: the run stops with exit code 130 and removes its
    staging and scratch folders on the way out.
    """
    _keep_freed_memory()
    _small_pages()
    from .cleaning import one_job_process
    one_job_process()  # pyarrow is told pandas is absent unless something imports it (see there)
    # The ~40,000 objects of the modules imported so far live until exit: left out of every
    # collection, the run's ~120 collections took 24-35 ms instead of 72-82 (10⁷ rows), each
    # holding the GIL, and the one at exit (_exit_now) half as long.
    gc.freeze()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except SystemExit as exc:
        _exit_now(exc.code)
    except KeyboardInterrupt:  # before a command runs (Typer building them): nothing to clean up yet
        _exit_now(130)


def _exit_now(code: Any) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, less the interpreter's teardown.

    After a run the interpreter unloaded ~800 modules (numpy, pyarrow,
    pandas...) and collected their objects: 0.12-0.18 s of every run's wall
    clock on 10⁷ rows, about 5%; CUDA contexts and CuPy's pools add to it on
    a GPU. The run's files are written and closed by then. What teardown would
    still do that matters is done here: cyclic garbage is collected (its
    finalizers close what it holds), exit handlers run (logging, Dask's
    clusters, child processes), the console streams are flushed. It exits as
    usual where the interpreter has no ``atexit._run_exitfuncs``, and under
    ``python -i``, a debugger or a profiler, which act after ``main`` returns.
    Programs that run the CLI in-process call ``app``, not ``main``.
    """
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None or sys.flags.interactive or sys.gettrace() is not None \
            or sys.getprofile() is not None:  # python -i, a debugger, cProfile: they act after main returns
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    gc.collect()
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: the descriptor was closed at start (gpuseg ... >&-)
                stream.flush()
        except (OSError, ValueError):  # a closed pipe (gpuseg ... | head) or stream
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
