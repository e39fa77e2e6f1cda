"""Everything the CLI prints is readable at 80 columns: no line is longer, nothing is cut with "…".

Rich takes the width from ``COLUMNS`` at print time (the consoles are made at import, so
a width fixed then is cleared here). Tables keep numbers whole, wrap names at spaces, and leave
columns out, saying which, when even that does not fit.
"""

from __future__ import annotations

import io
import json

import pyarrow.csv as pacsv
import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from gpuseg import cli
from gpuseg.bench import summarise
from gpuseg.cli import app

runner = CliRunner()

SEGMENT_HEADERS = ["seg", "name", "customers", "share", "revenue", "share", "recency", "(days)", "frequency",
                   "monetary", "avg", "order"]


@pytest.fixture(autouse=True)
def width_from_environment(monkeypatch):
    monkeypatch.setattr(cli.out_console, "_width", None)
    monkeypatch.setattr(cli.err_console, "_width", None)


def at(width, *args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)})


def fits(output: str, width: int = 80) -> list[str]:
    """The output's lines, after checking that none is wider than ``width`` and nothing is cut."""
    lines = output.splitlines()
    too_wide = [line for line in lines if cell_len(line) > width]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in output, output
    return lines


def whole_words(output: str, texts) -> None:
    """Each word of each text is a word of the output: wrapped at spaces, never cut."""
    words = set(output.split())
    for text in texts:
        for word in text.split():
            assert word in words, (word, output)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A generated log, segmented into ten segments (names like "Potential loyalists" and "At risk 2")."""
    root = tmp_path_factory.mktemp("width")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli.out_console, "_width", None)
        gen = at(80, "generate", "--transactions", 20_000, "--customers", 2_000, "--out", root / "tx.parquet")
        seg = at(80, "segment", root / "tx.parquet", "--k", 10, "--out", root / "seg")
    assert gen.exit_code == 0, gen.output
    assert seg.exit_code == 0, seg.output
    return root, gen.output, seg.output


def segment_names(out) -> list[str]:
    return pacsv.read_csv(out / "segments.csv").column("name").to_pylist()


def test_segment_prints_every_column_and_whole_names_at_80(runs):
    root, _, output = runs
    lines = fits(output)
    names = segment_names(root / "seg")
    assert len(names) == 10 and any(" " in n for n in names)
    whole_words(output, names + SEGMENT_HEADERS)
    assert "Not shown" not in output
    # Each segment's row starts with its id and carries its customer count.
    segments = pacsv.read_csv(root / "seg" / "segments.csv").to_pylist()
    for s in segments:
        row = next(line for line in lines if line.split()[:1] == [str(s["segment"])])
        assert f"{s['n_customers']:,}" in row.split()
    whole_words(output, ["load", "clean", "features", "scale", "fit", "assign", "write", "total"])


def test_a_narrower_terminal_leaves_columns_out_and_says_which(runs):
    root, _, _ = runs
    result = at(50, "segment", root / "tx.parquet", "--k", 10, "--out", root / "seg50")
    assert result.exit_code == 0, result.output
    fits(result.output, 50)
    whole_words(result.output, segment_names(root / "seg50") + ["seg", "name", "customers"])
    assert "Not shown at this width:" in result.output and "segments.csv" in result.output
    assert "avg order" in " ".join(result.output.split())  # the first to go, named on one line


def test_choose_k_score_and_report_fit_80(runs):
    root, _, _ = runs
    ck = at(80, "choose-k", root / "tx.parquet", "--k-max", 5, "--runs", 2, "--out", root / "ck")
    assert ck.exit_code == 0, ck.output
    fits(ck.output)
    whole_words(ck.output, ["k", "inertia", "silhouette", "Calinski-", "Harabasz", "Davies-", "Bouldin", "stability"])
    recommended = json.loads((root / "ck" / "choose_k.json").read_text())["recommended_k"]
    assert f"Recommended k = {recommended}:" in ck.output

    sc = at(80, "score", root / "tx.parquet", "--model", root / "seg" / "model.json", "--out", root / "sc")
    assert sc.exit_code == 0, sc.output
    fits(sc.output)
    whole_words(sc.output, segment_names(root / "seg") + ["training", "change", "mean", "distance"])

    rep = at(80, "report", root / "seg", "--choose-k", root / "ck")
    assert rep.exit_code == 0, rep.output
    fits(rep.output)


def test_generate_fits_80(runs):
    _, output, _ = runs
    fits(output)
    assert "Wrote 20,000 rows for 2,000 customers" in " ".join(output.split())


def test_bench_summary_fits_80_with_the_widest_cells(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    runs = [{"size": size, "backend": backend, "repeat": r, "wall_s": 1234.5 + r, "peak_host_mib": 123456.0,
             "peak_device_mib": 65432.0, "ari_vs_cpu": 0.99995,
             "timings": {"features": 1.0, "scale": 1.0, "fit": 100.0 + r, "assign": 1.0, "total": 1234.0}}
            for size in (100_000, 100_000_000) for backend in ("cpu", "cupy", "pandas+sklearn") for r in (1, 2)]
    result = {"machine": {"cpu": "AMD EPYC 9654 96-Core Processor (192 cores)", "ram_gib": 1511.6,
                          "gpu": {"name": "NVIDIA H200", "driver": "580.65", "memory": "143771 MiB"}},
              "config": {"k": 8, "repeats": 2, "sizes": [100_000, 100_000_000]},
              "backends_run": ["cpu", "cupy", "pandas+sklearn"], "runs": runs, "records": summarise(runs),
              "unavailable": [{"backend": "cuml", "reason": "cuML is not installed (ModuleNotFoundError: No module "
                                                           "named 'cuml')"}]}
    cli._print_bench(result, tmp_path)
    output = capsys.readouterr().out
    lines = fits(output)
    whole_words(output, ["transactions", "backend", "pandas+sklearn", "100,000,000", "fit", "(s)"])
    assert "Not shown at this width:" in output and "bench.md" in output
    # The rows hold the medians: 1234.5 + (1, 2) -> 1236.000.
    assert sum("1236.000" in line.split() for line in lines) == 6


def test_kernel_bench_fits_80(tmp_path):
    result = at(80, "bench", "--kernel", "--sizes", 2000, "--kernel-d", 3, "--kernel-k", 2, "--backends", "cpu",
                "--out", tmp_path / "k")
    assert result.exit_code == 0, result.output
    fits(result.output)
    whole_words(result.output, ["impl", "ms", "iteration", "floor", "(ms)", "cpu", "2,000"])


@pytest.mark.parametrize("args", [["segment", "missing.csv"], ["segment", "--k", "abc"],
                                  ["score", "x.csv", "--model", "missing/model.json"]])
def test_an_error_is_one_line_whatever_the_width(tmp_path, args):
    # A line longer than the terminal is left to the terminal to wrap: an error stays one line.
    result = at(40, *args, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.output.startswith("Error:") and result.output.count("\n") == 1, result.output
    assert "…" not in result.output


def test_progress_messages_fit_80(monkeypatch):
    seen = []

    class Status:
        def update(self, text):
            seen.append(text)

    progress = cli._StatusProgress(Status())
    for stage in cli.STAGE_LABELS:
        progress.stage(stage)
        progress.rows(999_999_999)
    assert len(seen) == 2 * len(cli.STAGE_LABELS)
    assert max(cell_len(text) for text in seen) <= 80 - 2  # a spinner and a space before each

    console = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None)
    monkeypatch.setattr(cli, "out_console", console)
    for bar, description, done, total in [(cli._score_progress(False), "Reading and partitioning rows",
                                           999_999_999, None),
                                          (cli._generate_progress(False), "Generating", 5 * 10**8, 10**9)]:
        task = bar.add_task(description, total=total)
        bar.update(task, completed=done)
        console.print(bar.get_renderable())
    fits(console.file.getvalue())
    whole_words(console.file.getvalue(), ["Reading", "and", "partitioning", "rows", "999,999,999", "Generating"])


def test_a_name_too_long_for_the_column_folds_rather_than_being_cut(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    cli._print_table("T", [cli._Col("seg"), cli._Col("name", "left", wrap=True), cli._Col("customers")],
                     [["0", "Extraordinarilyloyalcustomersfromthenorth", "1,234"]], full="x.csv")
    output = capsys.readouterr().out
    fits(output, 30)
    assert "".join(line[5:].split("1,234")[0].strip() for line in output.splitlines()[3:]) == \
        "Extraordinarilyloyalcustomersfromthenorth"
