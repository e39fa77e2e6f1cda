"""`gpuseg report`: one self-contained HTML file, every figure embedded; renders in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gpuseg.choose_k import choose_k
from gpuseg.cli import app
from gpuseg.config import SegmentConfig
from gpuseg.pipeline import run

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "segments"
    run(SegmentConfig(out=out, k=4, demo_customers=3000))
    chosen = out.parent / "choose-k"
    choose_k(SegmentConfig(out=chosen, demo_customers=3000), k_min=2, k_max=5, sample_size=500, runs=2)
    result = runner.invoke(app, ["report", str(out), "--choose-k", str(chosen)])
    assert result.exit_code == 0, result.output
    return out


def test_every_figure_is_embedded_and_nothing_is_fetched(out_dir):
    page = (out_dir / "report.html").read_text()
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    # sizes, profiles, projection, choose-k curves, timings
    assert len(images) == 5
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    assert "<script" not in page and "<link" not in page


def test_content_names_segments_and_choose_k(out_dir):
    page = (out_dir / "report.html").read_text()
    import pyarrow.csv as pacsv
    names = pacsv.read_csv(out_dir / "segments.csv").column("name").to_pylist()
    assert all(name.replace("'", "&#x27;") in page for name in names)
    assert "Choosing k" in page and "Recommended k =" in page and "Stage timings" in page


def test_without_choose_k_the_section_is_left_out(tmp_path):
    out = tmp_path / "plain"
    run(SegmentConfig(out=out, k=3, demo_customers=2000))
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    page = (out / "report.html").read_text()
    assert "Choosing k" not in page and len(re.findall(r"<img ", page)) == 4


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "is not a folder"),
    (lambda p: p.mkdir(), "missing segments.csv"),
])
def test_not_a_segment_folder(tmp_path, make, message):
    target = tmp_path / "x"
    make(target)
    result = runner.invoke(app, ["report", str(target)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_renders_in_headless_chromium(out_dir, tmp_path):
    shot = tmp_path / "page.png"
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                          "--no-first-run", "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          (out_dir / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<img") == 5 and "Customer segments" in dom.stdout
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,2400",
                           f"--screenshot={shot}", (out_dir / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 50_000


def _edit_json(name, edit):
    def apply(folder):
        path = folder / name
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return apply


def _edit_table(name, edit):
    def apply(folder):
        pq.write_table(edit(pq.read_table(folder / name)), folder / name)
    return apply


@pytest.mark.parametrize("spoil, fragment", [
    (_edit_json("report.json", lambda d: d.update(rows="x")), "do not fit together"),
    (lambda f: (f / "report.json").write_text("[]"), "is not a gpuseg report (a JSON object)"),
    (_edit_json("report.json", lambda d: d.update(n_customers=None)), "do not fit together"),
    (lambda f: (f / "segments.csv").write_text("a,b\n1,2\n"), "do not fit together"),
    (_edit_table("features.parquet", lambda t: t.select(["customer_id"])), "do not fit together"),
    (_edit_table("assignments.parquet", lambda t: t.slice(0, 0)), "do not fit together"),
    (_edit_table("assignments.parquet", lambda t: t.drop(["segment"])), "cannot read the outputs"),
    (lambda f: (f / "report.html").mkdir(), "exists and is not a file"),
    # Edited, or mixed from two runs: the report was written with a segment 9 nobody is in.
    (lambda f: (f / "segments.csv").write_text((f / "segments.csv").read_text().replace("\n0,", "\n9,", 1)),
     "segments.csv lists segments [9"),
    (lambda f: (f / "segments.csv").write_text((f / "segments.csv").read_text()
                                               + (f / "segments.csv").read_text().splitlines()[-1] + "\n"),
     "the model has segments 0 to 3"),
    (_edit_table("assignments.parquet", lambda t: t.set_column(1, "segment", pa.array([0] * t.num_rows, pa.int32()))),
     "customers per segment"),
])
def test_spoiled_outputs_are_one_error_and_leave_nothing(out_dir, tmp_path, spoil, fragment):
    # Each was a traceback (or a multi-line Arrow message); a folder in report.html's place left a partial file.
    folder = tmp_path / "spoiled"
    shutil.copytree(out_dir, folder)
    (folder / "report.html").unlink()
    spoil(folder)
    result = runner.invoke(app, ["report", str(folder)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.output
    assert not (folder / ".report.html.partial").exists() and not (folder / "report.html").is_file()


def test_a_choose_k_file_that_is_no_number_or_no_file_is_one_error(out_dir, tmp_path):
    chosen = out_dir.parent / "choose-k"
    bad = tmp_path / "bad"
    shutil.copytree(chosen, bad)
    path = bad / "choose_k.json"
    path.write_text(re.sub(r'"recommended_k": \d+', '"recommended_k": 1e999', path.read_text()))  # OverflowError
    result = runner.invoke(app, ["report", str(out_dir), "--choose-k", str(bad)])
    assert result.exit_code == 2 and "is not a gpuseg choose-k result (OverflowError)" in result.output
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it blocked forever
    result = runner.invoke(app, ["report", str(out_dir), "--choose-k", str(fifo)])
    assert result.exit_code == 2 and "is not a file" in result.output


def test_a_dask_runs_folders_of_parts_are_read(out_dir, tmp_path):
    # segment --scheduler writes features/ and assignments/ as Parquet datasets: "missing features.parquet".
    folder = tmp_path / "dask"
    shutil.copytree(out_dir, folder)
    (folder / "report.html").unlink()
    for name in ("features", "assignments"):
        table = pq.read_table(folder / f"{name}.parquet")
        (folder / f"{name}.parquet").unlink()
        (folder / name).mkdir()
        half = table.num_rows // 2
        pq.write_table(table.slice(0, half), folder / name / "part-00000.parquet")
        pq.write_table(table.slice(half), folder / name / "part-00001.parquet")
    result = runner.invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    page = (folder / "report.html").read_text()
    for segment in pq.read_table(out_dir / "assignments.parquet").column("segment_name").unique().to_pylist():
        assert segment in page
    assert f"{pq.read_metadata(out_dir / 'features.parquet').num_rows:,}" in page


def test_the_figures_leave_the_callers_matplotlib_backend_alone(out_dir, tmp_path):
    # choose-k, report and bench called matplotlib.use("Agg"): a notebook that called them lost its
    # inline backend. In a process of its own, so that no other test sees the backend set here.
    import subprocess
    import sys
    script = f"""
import matplotlib
matplotlib.use("svg")
from gpuseg.html_report import write_report
from gpuseg.choose_k import plot
write_report({str(out_dir)!r})
plot({{"metrics": [{{"k": 2, "inertia": 3.0, "silhouette": 0.5, "calinski_harabasz": 9.0, "davies_bouldin": 0.7,
                  "stability": 0.9}}], "recommended_k": 2}}, __import__("pathlib").Path({str(tmp_path / "ck.png")!r}))
print(matplotlib.get_backend())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().lower() == "svg"
    assert (tmp_path / "ck.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_that_replaces_the_folder_while_the_report_is_built_stops_the_report(out_dir, tmp_path, monkeypatch):
    # Found with a report racing a segment run into the same folder: the page (k = 5) was written
    # beside the other run's files (k = 6), exit 0.
    import shutil

    from gpuseg import html_report
    from gpuseg.errors import GpusegError
    folder = tmp_path / "seg"
    shutil.copytree(out_dir, folder)
    (folder / "report.html").unlink(missing_ok=True)
    real = html_report.build_html

    def replaced_meanwhile(data):
        page = real(data)
        aside = tmp_path / "aside"
        folder.rename(aside)  # as staged_output swaps a new run in
        shutil.copytree(aside, folder)
        return page
    monkeypatch.setattr(html_report, "build_html", replaced_meanwhile)
    with pytest.raises(GpusegError, match="another gpuseg run replaced the outputs"):
        html_report.write_report(folder)
    assert not (folder / "report.html").exists() and not (folder / ".report.html.partial").exists()
