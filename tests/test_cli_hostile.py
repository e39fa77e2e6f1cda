"""Hostile input (issue 11): every class gets a result or one ``Error:`` line with exit code 2,
never a traceback, a hang, NaN or Infinity in a JSON output, or stale and misplaced files."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from cli_helpers import invoke, ok, runner

from gpuseg.cli import app
from gpuseg.model import SegmentModel


def refused(result, *fragments):
    """One ``Error:`` line naming the problem, exit code 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def log(path: Path, n_customers: int = 30, ids=None, extra: list[tuple] = (), seed: int = 0) -> Path:
    """A small CSV log: 1-4 invoices per customer over 2024; ``extra`` rows (customer, date, invoice, amount)."""
    rng = np.random.default_rng(seed)
    ids = list(range(1, n_customers + 1)) if ids is None else ids
    rows = []
    for i, cid in enumerate(ids):
        for j in range(int(rng.integers(1, 5))):
            day = dt.date(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 330)))
            rows.append((cid, day.isoformat(), f"I{i}-{j}", float(rng.integers(1, 100) * (1 + i % 5))))
    rows += list(extra)
    cols = list(zip(*rows))
    pacsv.write_csv(pa.table({"customer_id": pa.array(cols[0]), "invoice_date": pa.array(cols[1]),
                              "invoice": pa.array(cols[2]), "amount": pa.array(cols[3], pa.float64())}), path)
    return path


def no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def strict_json(path: Path):
    def refuse(token):
        raise AssertionError(f"{path.name} holds {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


# -- 1. sums past float64's range ------------------------------------------------------

@pytest.fixture
def overflow_log(tmp_path):
    # Every line is finite; customer 99's two lines sum past 1.8e308.
    return log(tmp_path / "overflow.csv", extra=[(99, "2024-03-01", "X1", 1e308), (99, "2024-03-02", "X2", 1e308)])


def test_segment_refuses_a_customer_whose_sum_overflows(overflow_log, tmp_path):
    line = refused(invoke("segment", overflow_log, "--k", 3, "--out", tmp_path / "out"), "customer 99", "monetary")
    assert "finite" in line
    assert not (tmp_path / "out").exists()
    no_leftovers(tmp_path)


def test_an_order_whose_sum_overflows_is_refused_not_left_out(tmp_path):
    # Both lines on one invoice: the order nets inf, which no purchase test passes, so customer 99
    # was counted without a purchase and left out quietly.
    data = log(tmp_path / "overflow1.csv", extra=[(99, "2024-03-01", "X1", 1e308), (99, "2024-03-01", "X1", 1e308)])
    refused(invoke("segment", data, "--k", 3, "--out", tmp_path / "out"), "customer 99", "monetary")
    assert not (tmp_path / "out").exists()


def test_choose_k_refuses_it_too(overflow_log, tmp_path):
    refused(invoke("choose-k", overflow_log, "--k-min", 2, "--k-max", 3, "--out", tmp_path / "ck"), "customer 99")
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("streamed", [False, True])
def test_score_refuses_it_in_memory_and_streamed(overflow_log, tmp_path, streamed):
    ok(invoke("segment", log(tmp_path / "train.csv"), "--k", 3, "--out", tmp_path / "seg", "-q"))
    args = ["--partitions", 2] if streamed else []
    refused(invoke("score", overflow_log, "--model", tmp_path / "seg" / "model.json", "--out", tmp_path / "sc",
                   *args), "customer 99")
    assert not (tmp_path / "sc").exists()


def test_json_outputs_are_strict_even_for_undefined_values(tmp_path):
    from gpuseg.outputs import write_json
    write_json(tmp_path / "x.json", {"a": float("nan"), "b": [np.float64("-inf"), 1.5], "c": np.array([np.inf])})
    assert strict_json(tmp_path / "x.json") == {"a": None, "b": [None, 1.5], "c": [None]}


# -- 3. --out holds exactly one run's outputs ------------------------------------------

def test_a_rerun_replaces_the_whole_folder(tmp_path):
    data = log(tmp_path / "a.csv")
    out = tmp_path / "seg"
    ok(invoke("segment", data, "--k", 3, "--out", out, "-q"))
    ok(invoke("report", out))
    (out / "migration.csv").write_text("old_segment\n0\n")  # as a reference run would have left
    (out / ".DS_Store").write_bytes(b"\0")  # a file browser showed the folder
    ok(invoke("segment", data, "--k", 2, "--out", out, "-q"))
    assert sorted(p.name for p in out.iterdir()) == ["assignments.parquet", "features.parquet", "model.json",
                                                      "report.json", "segments.csv"]
    assert SegmentModel.load(out / "model.json").k == 2
    no_leftovers(tmp_path)


def test_a_folder_with_other_files_is_never_replaced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    refused(invoke("segment", log(tmp_path / "a.csv"), "--out", out), "notes.txt", "did not write")
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_failed_swap_puts_the_previous_outputs_back(tmp_path, monkeypatch):
    from gpuseg import outputs
    out = tmp_path / "seg"
    ok(invoke("segment", log(tmp_path / "a.csv"), "--k", 3, "--out", out, "-q"))
    before = (out / "assignments.parquet").read_bytes()
    real = os.replace

    def fail_second(src, dst):
        if ".partial-" in str(src):
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)
    monkeypatch.setattr(outputs.os, "replace", fail_second)
    refused(invoke("segment", log(tmp_path / "b.csv", seed=1), "--k", 2, "--out", out), "no space left to write --out")
    assert (out / "assignments.parquet").read_bytes() == before
    no_leftovers(tmp_path)


# -- 4. signals and dead runs -------------------------------------------------------------

def test_sigterm_removes_the_staging_folder(tmp_path):
    # The CLI's handler, then SIGTERM inside a staged write: the folder must go, the run must stop.
    script = f"""
import os, signal, sys
from pathlib import Path
from gpuseg.cli import _terminate
from gpuseg.outputs import staged_output
signal.signal(signal.SIGTERM, _terminate)
try:
    with staged_output(Path({str(tmp_path / 'out')!r})) as tmp:
        (tmp / "report.json").write_text("{{}}")
        os.kill(os.getpid(), signal.SIGTERM)
        import time; time.sleep(5)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert not (tmp_path / "out").exists()
    no_leftovers(tmp_path)


def test_sigterm_before_a_command_runs_is_exit_130_without_a_traceback():
    # Found by a contract audit: SIGTERM in the ~30 ms while Typer built the commands printed a
    # traceback ending in "KeyboardInterrupt: signal 15".
    script = """
import os, signal, time
from gpuseg import cli
def building():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
cli.app = building
cli.main()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr


def test_a_run_that_loses_the_race_into_the_same_out_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    # Found with two real runs: the loser said "Directory not empty: .out.old-..." and left that
    # folder, holding the run before both.
    from gpuseg import outputs
    from gpuseg.errors import GpusegError
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("earlier")
    real = os.replace

    def other_run_in_between(src, dst):
        real(src, dst)
        if Path(src) == out:  # ours moved the earlier outputs aside; the other run's land now
            out.mkdir()
            (out / "report.json").write_text("other")
    monkeypatch.setattr(outputs.os, "replace", other_run_in_between)
    with pytest.raises(GpusegError, match="another gpuseg run wrote --out"):
        with outputs.staged_output(out) as tmp:
            (tmp / "report.json").write_text("ours")
    assert sorted(os.listdir(tmp_path)) == ["out"] and (out / "report.json").read_text() == "other"


def test_a_signal_during_the_swap_is_handled_once_the_outputs_are_in_place(tmp_path):
    # SIGTERM between the renames: exit 2 ("Directory not empty") or 130, with --out replaced and a
    # .out.old-* folder left beside it. Held until the swap is done, it now finds the outputs whole.
    script = f"""
import os, signal, sys
from pathlib import Path
from gpuseg import outputs
from gpuseg.cli import _terminate
signal.signal(signal.SIGTERM, _terminate)
out = Path({str(tmp_path / 'out')!r})
out.mkdir()
(out / "report.json").write_text("earlier")
real = os.replace
def signalled(src, dst):
    real(src, dst)
    os.kill(os.getpid(), signal.SIGTERM)
outputs.os.replace = signalled
try:
    with outputs.staged_output(out) as tmp:
        (tmp / "report.json").write_text("new")
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert (tmp_path / "out" / "report.json").read_text() == "new"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_runs_are_swept_and_live_ones_kept(tmp_path):
    from gpuseg.outputs import owner_tag
    host = owner_tag().split("-")[0]
    dead = tmp_path / f".seg.partial-{host}-{_dead_pid()}-abc"
    live = tmp_path / f".seg.partial-{host}-{os.getpid()}-abc"
    other_host = tmp_path / f".seg.partial-elsewhere-{_dead_pid()}-abc"
    for p in (dead, live, other_host):
        p.mkdir()
        (p / "assignments.parquet").write_bytes(b"x" * 100)
    ok(invoke("segment", log(tmp_path / "a.csv"), "--k", 2, "--out", tmp_path / "seg", "-q"))
    assert not dead.exists()
    assert live.exists() and other_host.exists()


def test_outputs_set_aside_by_a_dead_run_come_back(tmp_path):
    # Killed between the two renames of a swap: --out is missing, the previous outputs are set aside.
    from gpuseg.outputs import owner_tag, sweep_stale
    host = owner_tag().split("-")[0]
    aside = tmp_path / f".seg.old-{host}-{_dead_pid()}-abc"
    aside.mkdir()
    (aside / "model.json").write_text("{}")
    sweep_stale(tmp_path, ".seg.old-", restore=tmp_path / "seg")
    assert (tmp_path / "seg" / "model.json").exists() and not aside.exists()


def test_streamed_score_scratch_of_a_dead_run_is_swept(tmp_path, monkeypatch):
    import tempfile
    from gpuseg.outputs import owner_tag
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    host = owner_tag().split("-")[0]
    stale = scratch_root / f"gpuseg-score-{host}-{_dead_pid()}-xyz"
    stale.mkdir()
    data = log(tmp_path / "a.csv")
    ok(invoke("segment", data, "--k", 2, "--out", tmp_path / "seg", "-q"))
    ok(invoke("score", data, "--model", tmp_path / "seg" / "model.json", "--out", tmp_path / "sc", "--partitions",
              2, "-q"))
    assert list(scratch_root.iterdir()) == []


# -- 5. --out in the wrong place ---------------------------------------------------------

def test_out_may_not_be_an_input_folder_or_inside_one(tmp_path, monkeypatch):
    folder = tmp_path / "sales"
    folder.mkdir()
    log(folder / "jan.csv")
    refused(invoke("segment", folder, "--out", folder), "holds the input")
    refused(invoke("segment", folder, "--out", folder / "segments"), "inside the input folder")
    refused(invoke("score", folder, "--model", tmp_path / "m.json", "--out", folder), "holds the input")
    assert sorted(p.name for p in folder.iterdir()) == ["jan.csv"]


def test_a_glob_that_cannot_reach_out_leaves_it_be(tmp_path, monkeypatch):
    # 'tx*.parquet' with the default --out segments was refused as "inside the input folder 'tx*.parquet'",
    # and a glob that matched nothing got that message instead of its own; an input '' got it too.
    monkeypatch.chdir(tmp_path)
    log(tmp_path / "tx1.csv")
    ok(invoke("segment", "tx*.csv", "--k", 2))
    assert (tmp_path / "segments" / "model.json").exists()
    refused(invoke("segment", "nomatch*.csv", "--out", "o1"), "matches no input files")
    refused(invoke("segment", "", "--out", "o2"), "an input is empty")
    # A glob that does reach --out is refused as before (it matches files now, and would match the
    # outputs next time): at any depth, through "..", and through a link to the folder.
    (tmp_path / "jan").mkdir()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "jan" / "a.parquet")
    (tmp_path / "link").symlink_to(tmp_path)
    for pattern in ("**/*.parquet", "*/*.parquet", "jan/../*/*.parquet", "link/*/*.parquet"):
        refused(invoke("segment", pattern, "--out", "o3"), "inside the input folder")
    refused(invoke("segment", "*.csv", "--out", "."), "current folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jan", "link", "segments", "tx1.csv"]


@pytest.mark.parametrize("out", ["", " ", "."])
def test_out_may_not_be_empty_or_the_current_folder(tmp_path, monkeypatch, out):
    data = log(tmp_path / "a.csv")
    monkeypatch.chdir(tmp_path)
    refused(invoke("segment", data, "--out", out), "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


# -- 10. noise ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["segment", "--k", "abc"], "'--k'"),
    (["score", "x.csv"], "'--model'"),
    (["segment", "--no-such-option"], "--no-such-option"),
    (["choose-k", "--k-min", "2.5"], "'--k-min'"),
])
def test_a_bad_option_value_is_one_error_line(args, fragment):
    refused(runner.invoke(app, args), fragment)


def test_score_and_choose_k_have_quiet(tmp_path):
    data = log(tmp_path / "a.csv")
    ok(invoke("segment", data, "--k", 2, "--out", tmp_path / "seg", "-q"))
    result = ok(invoke("score", data, "--model", tmp_path / "seg" / "model.json", "--out", tmp_path / "sc", "-q"))
    assert result.output == ""
    assert pq.read_table(tmp_path / "sc" / "assignments.parquet").num_rows == 30
    result = ok(invoke("choose-k", data, "--k-min", 2, "--k-max", 3, "--out", tmp_path / "ck", "-q"))
    assert result.output == ""
    assert json.loads((tmp_path / "ck" / "choose_k.json").read_text())["recommended_k"] in (2, 3)


# -- 2. migration when id types differ ---------------------------------------------------

def test_migration_matches_ids_as_written_when_types_differ(tmp_path):
    # January's ids are text ("0007" keeps the column text); February's are integers.
    jan = log(tmp_path / "jan.csv", ids=["0007", "007"] + [str(i) for i in range(1, 31)])
    feb = log(tmp_path / "feb.csv", ids=list(range(1, 31)), seed=1)
    ok(invoke("segment", jan, "--k", 3, "--out", tmp_path / "jan", "-q"))
    assert pq.read_schema(tmp_path / "jan" / "assignments.parquet").field("customer_id").type == pa.string()
    ok(invoke("segment", feb, "--k", 3, "--out", tmp_path / "feb", "-q",
              "--reference-model", tmp_path / "jan" / "model.json"))
    moves = pacsv.read_csv(tmp_path / "feb" / "migration.csv")
    # 1..30 are in both runs, once each; "0007" and "007" are other customers than 7.
    assert sum(moves.column("customers").to_pylist()) == 30
    old = dict(zip(*pq.read_table(tmp_path / "jan" / "assignments.parquet").select(["customer_id", "segment"])
                   .to_pydict().values()))
    new = dict(zip(*pq.read_table(tmp_path / "feb" / "assignments.parquet").select(["customer_id", "segment"])
                   .to_pydict().values()))
    want = {}
    for cid in range(1, 31):
        key = (old[str(cid)], new[cid])
        want[key] = want.get(key, 0) + 1
    got = {(o, n): c for o, n, c in zip(moves.column("old_segment").to_pylist(),
                                        moves.column("new_segment").to_pylist(),
                                        moves.column("customers").to_pylist())}
    assert got == want


def test_migration_ids_as_text():
    from gpuseg.identity import _as_text
    assert _as_text(pa.array([7, -3])).to_pylist() == ["7", "-3"]
    assert _as_text(pa.array([7.0, 2.5])).to_pylist() == ["7", "2.5"]
    # As the run writes float ids as text: whole ones past int64 exactly (a cast wrapped them), float32 as written.
    assert _as_text(pa.chunked_array([[1e19, 1e15 + 0.5, -0.0]])).to_pylist() == \
        ["10000000000000000000", "1.0000000000000005e+15", "0"]
    assert _as_text(pa.array([0.1], pa.float32())).to_pylist() == ["0.1"]
    assert _as_text(pa.array(["007", "7"])).to_pylist() == ["007", "7"]


# -- 6. inputs that used to end in a traceback --------------------------------------------

@pytest.fixture
def trained(tmp_path):
    data = log(tmp_path / "train.csv")
    ok(invoke("segment", data, "--k", 3, "--out", tmp_path / "seg", "-q"))
    return data, tmp_path / "seg" / "model.json"


def _edited_model(path: Path, tmp_path: Path, edit, name: str = "edited.json") -> Path:
    d = json.loads(path.read_text())
    edit(d)
    out = tmp_path / name
    out.write_text(json.dumps(d))
    return out


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.update(date_format=5), "date_format"),
    (lambda d: d.update(date_format=["%Y"]), "date_format"),
    (lambda d: d["training"].update(segment_shares=[1.0]), "segment_shares"),
    (lambda d: d["training"].update(segment_mean_distance="x"), "segment_mean_distance"),
    (lambda d: d["training"].update(mean_distance=None, n_customers="many"), "n_customers"),
    (lambda d: d["columns"].update(customer=3), "customer"),
    (lambda d: d["scaler"].update(mean=[float("nan")] * 3), "not finite"),
    (lambda d: d.update(as_of="9999-12-31"), "as_of 9999-12-31 is out of range"),
    # These spoke Python (TypeError: 'NoneType' object is not iterable; an inhomogeneous shape ...).
    (lambda d: d.update(as_of=None), "as_of must be a date written YYYY-MM-DD, got None"),
    (lambda d: d.update(as_of="garbage"), "as_of must be a date written YYYY-MM-DD, got 'garbage'"),
    (lambda d: d.update(columns=None), "columns must be an object"),
    (lambda d: d["centroids"].__setitem__(0, [1, 2]), "centroids must be rows of 3 numbers"),
    (lambda d: d.pop("scaler"), "scaler is missing"),
    (lambda d: d.update(segment_names="abc"), "segment_names must be a list"),  # was three names a, b, c
    (lambda d: d.update(seed=1.5), "seed must be a whole number"),  # was cut to 1
    (lambda d: d["training"].update(segment_shares=[-1.0, 1.0, 1.0]), "numbers of 0 or more"),
    (lambda d: d["training"].update(segment_shares=[None, 0.5, 0.5]), "numbers of 0 or more"),
    (lambda d: d["training"].update(segment_mean_distance=[None, -1.0, 1.0]), "null for an empty segment"),
    (lambda d: d.update(columns=[["customer", "customer_id"]]), "columns must be an object"),
    (lambda d: d["columns"].update(shop="store"), "unknown role 'shop'"),
    (lambda d: d.update(segment_names=["\x1b[2J", "b", "c"]), "printable"),  # would clear the terminal
    # Types Python converts quietly, and a k that is not the centroids' count (all were accepted).
    (lambda d: d.update(k=9), "k is 9 but there are 3 centroids"),
    (lambda d: d.update(k="3"), "k must be a whole number"),
    (lambda d: d.pop("k"), "k is missing"),
    (lambda d: d["scaler"].update(scale=["1"] * 3), "scale must be a list of numbers"),
    (lambda d: d["centroids"][0].__setitem__(0, True), "centroids must be a list of rows"),
    (lambda d: d.update(segment_names=[1, 2, 3]), "segment_names must be text"),
    (lambda d: d.update(retired=[0, 0]), "retired must list distinct segment ids"),
    (lambda d: d.update(retired=[0, 1, 2]), "not all of them"),
    (lambda d: d.update(retired=[3]), "below k (3)"),
])
def test_a_malformed_model_is_one_error(trained, tmp_path, edit, fragment):
    data, model = trained
    bad = _edited_model(model, tmp_path, edit)
    refused(invoke("score", data, "--model", bad, "--out", tmp_path / "sc"), "corrupted" if "finite" not in fragment
            else "scaler", fragment)
    assert not (tmp_path / "sc").exists()


def test_an_empty_training_segment_has_no_mean_distance_in_the_drift(trained, tmp_path):
    # A segment no training customer joined: null in the model (models before wrote 0.0, read as null too).
    data, model = trained
    for written in (None, 0.0):
        def empty_first(d, written=written):
            d["training"]["segment_shares"][0] = 0.0
            d["training"]["segment_mean_distance"][0] = written
        edited = _edited_model(model, tmp_path, empty_first, f"m{written}.json")
        ok(invoke("score", data, "--model", edited, "--out", tmp_path / f"sc{written}", "-q"))
        drift = json.loads((tmp_path / f"sc{written}" / "drift.json").read_text())["segments"]
        assert drift[0]["training_mean_distance"] is None and drift[1]["training_mean_distance"] > 0


def test_a_model_without_features_is_one_error_streamed_or_not(trained, tmp_path):
    # Was "--features is empty" (an option nobody gave) in memory, and a traceback streamed.
    data, model = trained
    bad = _edited_model(model, tmp_path, lambda d: d.update(
        features=[], scaler={"features": [], "log1p": [], "mean": [], "scale": []}, centroids=[[], []], k=2,
        segment_names=["a", "b"], training={}))
    for extra in ((), ("--partitions", 2)):
        refused(invoke("score", data, "--model", bad, "--out", tmp_path / "sc", *extra),
                "features must name at least one feature")
        assert not (tmp_path / "sc").exists()


def test_models_that_parse_but_mean_nothing(trained, tmp_path):
    data, model = trained
    text = model.read_text()
    huge = tmp_path / "huge.json"  # json.loads refuses integers of 4300+ digits with a ValueError
    huge.write_text(text.replace('"seed": 0', '"seed": ' + "9" * 5000))
    assert huge.read_text() != text
    version = _edited_model(model, tmp_path, lambda d: d.update(format_version=True))  # True == 1 in Python
    log1p = _edited_model(model, tmp_path, lambda d: d["scaler"].update(log1p=["no"] * 3), "log1p.json")  # bool("no")
    for bad, fragment in ((huge, "not valid JSON"), (version, "format version True"), (log1p, "log1p")):
        refused(invoke("score", data, "--model", bad, "--out", tmp_path / "sc"), fragment)
        refused(invoke("segment", data, "--out", tmp_path / "seg2", "--reference-model", bad), fragment)
        assert not (tmp_path / "sc").exists() and not (tmp_path / "seg2").exists()


def test_a_reference_model_too_far_to_compare_is_one_error(trained, tmp_path):
    # Finite but extreme centroids gave infinite distances, and a traceback in the matching.
    data, model = trained
    far = _edited_model(model, tmp_path, lambda d: d.update(centroids=[[1e308] * 3, [-1e308] * 3, [0.0] * 3]))
    refused(invoke("segment", data, "--k", 3, "--out", tmp_path / "seg2", "--reference-model", far),
            "too far from this run's to compare")
    assert not (tmp_path / "seg2").exists()


def test_deeply_nested_json_as_model_or_reference(trained, tmp_path):
    data, _ = trained
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    refused(invoke("score", data, "--model", deep, "--out", tmp_path / "sc"), "nested")
    refused(invoke("segment", data, "--out", tmp_path / "seg2", "--reference-model", deep), "nested")


def test_a_date_beyond_9999_as_of(tmp_path):
    # 9999-12-31 would make as_of 10000-01-01; it is dropped as out of range instead.
    data = log(tmp_path / "a.csv", extra=[(5, "9999-12-31", "Z", 10.0), (6, "2500-06-01", "Y", 10.0)])
    ok(invoke("segment", data, "--k", 2, "--out", tmp_path / "seg", "-q"))
    rep = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert rep["rows"]["dropped"]["date_out_of_range"] == 2
    assert rep["as_of"] < "2025-01-01"
    refused(invoke("segment", data, "--as-of", "9999-12-31", "--out", tmp_path / "x"), "--as-of", "2262-04-12")


def test_scheduler_that_is_not_an_address(tmp_path):
    pytest.importorskip("distributed")
    refused(invoke("segment", log(tmp_path / "a.csv"), "--out", tmp_path / "seg", "--scheduler", "foo:bar:baz"),
            "not a Dask scheduler address", "tcp://")


@pytest.mark.parametrize("backend", ["cupy", "cuml"])
def test_a_gpu_backend_on_dask_is_refused_not_run_on_the_cpu(trained, tmp_path, backend):
    # The Dask path computes on the workers' CPUs: asked for a GPU, it ran there and said nothing.
    pytest.importorskip("distributed")
    data, model = trained
    for args in (("segment", data, "--out", tmp_path / "dask-seg"),
                 ("score", data, "--model", model, "--out", tmp_path / "dask-sc")):
        refused(invoke(*args, "--backend", backend, "--scheduler", "local"),
                f"--backend {backend} is not supported with --scheduler", "--backend cpu or auto")
        assert not args[-1].exists()


@pytest.mark.parametrize("limit", ["1e400GB", "1e30TB", "inf", "nan", "-1GB", "0"])
def test_memory_limit_out_of_range(trained, tmp_path, limit):
    data, model = trained
    refused(invoke("score", data, "--model", model, "--out", tmp_path / "sc", "--memory-limit", limit),
            "--memory-limit")


def test_devices_and_fifos_are_not_missing_files(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    refused(invoke("segment", fifo, "--out", tmp_path / "seg"), "not a regular file")
    if Path("/dev/zero").exists():
        refused(invoke("segment", "/dev/zero", "--out", tmp_path / "seg"), "not a regular file")
    refused(invoke("segment", tmp_path / "nope.csv", "--out", tmp_path / "seg"), "does not exist")


# -- 7. score's as_of promise ----------------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True])
def test_scoring_the_training_data_as_of_the_model_reproduces_it(tmp_path, streamed):
    data = log(tmp_path / "a.csv", 40)
    ok(invoke("segment", data, "--k", 3, "--as-of", "2024-08-01", "--out", tmp_path / "seg", "-q"))
    train = pq.read_table(tmp_path / "seg" / "assignments.parquet")
    args = ["--partitions", 3] if streamed else []
    ok(invoke("score", data, "--model", tmp_path / "seg" / "model.json", "--as-of", "model",
              "--out", tmp_path / "sc", "-q", *args))
    scored = pq.read_table(tmp_path / "sc" / "assignments.parquet").sort_by("customer_id")
    assert scored["customer_id"].equals(train["customer_id"])
    assert scored["segment"].to_pylist() == train["segment"].to_pylist()
    assert json.loads((tmp_path / "sc" / "score_report.json").read_text())["as_of"] == "2024-08-01"
    # The data's own as_of is a later day: that is scoring as of another day, which the README says.
    ok(invoke("score", data, "--model", tmp_path / "seg" / "model.json", "--out", tmp_path / "sc2", "-q"))
    assert json.loads((tmp_path / "sc2" / "score_report.json").read_text())["as_of"] > "2024-08-01"


def test_as_of_model_and_a_date_are_exclusive():
    from gpuseg.errors import GpusegError
    from gpuseg.scoring import ScoreConfig
    with pytest.raises(GpusegError, match="not both"):
        ScoreConfig(model=Path("m.json"), inputs=("a.csv",), out=Path("sc"), as_of=dt.date(2024, 1, 1),
                    as_of_from_model=True)


# -- 9. identical customers ------------------------------------------------------------------

@pytest.fixture
def identical(tmp_path):
    rows = [(c, "2024-03-01", f"I{c}", 10.0) for c in range(10)] + [(c, "2024-05-01", f"J{c}", 4.0) for c in range(5)]
    return log(tmp_path / "same.csv", ids=[], extra=rows)  # two kinds of customer, five of each


def test_more_segments_than_distinct_customers_is_refused(identical, tmp_path):
    ok(invoke("segment", identical, "--k", 2, "--out", tmp_path / "two", "-q"))
    segments = pacsv.read_csv(tmp_path / "two" / "segments.csv").to_pylist()
    assert [s["n_customers"] for s in segments] == [5, 5]
    refused(invoke("segment", identical, "--k", 3, "--out", tmp_path / "three"), "--k 3", "only 2 distinct",
            "allowed: --k <= 2")
    # Refused in the fit, while features.parquet was being written into the staging folder:
    # neither the output folder nor the staging one is left.
    assert not (tmp_path / "three").exists()
    no_leftovers(tmp_path)
    refused(invoke("choose-k", identical, "--k-min", 2, "--k-max", 4, "--out", tmp_path / "ck"),
            "allowed: --k-max <= 2")


def test_all_identical_customers_in_choose_k(tmp_path):
    data = log(tmp_path / "same.csv", ids=[], extra=[(c, "2024-03-01", f"I{c}", 10.0) for c in range(10)])
    refused(invoke("choose-k", data, "--k-min", 2, "--k-max", 3, "--out", tmp_path / "ck"), "only 1 distinct")


def test_an_empty_segment_has_no_means_not_nan():
    from gpuseg.summary import SegmentSums
    sums = SegmentSums.of(np.array([0, 0, 2]), {"recency_days": np.array([1.0, 2.0, 3.0]),
                                                "frequency": np.array([1.0, 1.0, 2.0]),
                                                "monetary": np.array([5.0, 6.0, 7.0])}, 3)
    rows = sums.profiles()
    assert rows[1]["n_customers"] == 0 and rows[1]["mean_monetary"] is None
    assert rows[0]["mean_monetary"] == 5.5


# -- 10. noise on Dask, and the Dask path keeps the same rules --------------------------------

@pytest.mark.slow
def test_dask_quiet_prints_nothing_and_plain_prints_no_dask_logs(tmp_path):
    pytest.importorskip("distributed")
    data = log(tmp_path / "a.csv")

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "gpuseg.cli", "segment", str(data), "--k", "2", "--out",
                               str(tmp_path / "seg"), "--scheduler", "local", *extra],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
    quiet = run("-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""
    assert (tmp_path / "seg" / "model.json").exists()
    plain = run()
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr == "" and "distributed" not in plain.stdout and "30 customers" in plain.stdout


def test_dask_refuses_an_overflowing_customer(overflow_log, tmp_path):
    pytest.importorskip("distributed")
    refused(invoke("segment", overflow_log, "--k", 3, "--out", tmp_path / "out", "--scheduler", "local", "-q"),
            "customer 99")
    assert not (tmp_path / "out").exists()
    no_leftovers(tmp_path)


def test_score_refuses_a_customer_too_far_to_measure(tmp_path):
    # monetary is not skewed in training, so the model does not log it; a finite 1e300 then
    # scales to about 1e298, whose square overflows: the distance would be inf.
    train = log(tmp_path / "train.csv", ids=[], extra=[(c, f"2024-0{1 + c % 9}-1{c % 10}", f"I{c}", 10.0 + c)
                                                       for c in range(40)])
    ok(invoke("segment", train, "--k", 2, "--out", tmp_path / "seg", "-q"))
    assert not SegmentModel.load(tmp_path / "seg" / "model.json").scaler.log1p[2]
    new = log(tmp_path / "new.csv", ids=[], extra=[(1, "2024-05-01", "A", 20.0), (2, "2024-05-02", "B", 1e300)])
    for args in ([], ["--partitions", 2]):
        refused(invoke("score", new, "--model", tmp_path / "seg" / "model.json", "--out", tmp_path / "sc", *args),
                "customer 2", "too far")
        assert not (tmp_path / "sc").exists()


@pytest.mark.parametrize("command, args, fragment", [
    ("segment", ["--seed", "4294967296"], "from 0 to 4294967295"),
    ("choose-k", ["--seed", "4294967295", "--runs", "3"], "allowed: --seed <= 4294967293"),
])
def test_seeds_beyond_32_bits(tmp_path, command, args, fragment):
    refused(invoke(command, log(tmp_path / "a.csv"), "--out", tmp_path / "o", *args), fragment)


@pytest.mark.parametrize("table", [None, pa.table({"x": [1]}), pa.table({"customer_id": [1, 2], "segment": [0, 7]})])
def test_a_broken_reference_run_is_one_error(trained, tmp_path, table):
    data, model = trained
    target = model.parent / "assignments.parquet"
    if table is None:
        target.write_bytes(b"not parquet")
    else:
        pq.write_table(table, target)
    refused(invoke("segment", data, "--k", 3, "--out", tmp_path / "feb", "--reference-model", model),
            "reference run", "assignments.parquet")
    assert not (tmp_path / "feb").exists()


def test_out_may_not_hold_the_model_the_run_reads(trained, tmp_path):
    data, model = trained
    refused(invoke("score", data, "--model", model, "--out", model.parent), "holds the --model")
    refused(invoke("segment", data, "--out", model.parent, "--reference-model", model),
            "holds the --reference-model")
    assert SegmentModel.load(model).k == 3


def test_a_future_date_inside_the_range_is_reported(tmp_path):
    # 2206 for 2026 is a possible date, so it is kept; as_of then lies in the future, which is said.
    data = log(tmp_path / "a.csv", extra=[(7, "2206-05-01", "T", 10.0)])
    result = ok(invoke("segment", data, "--k", 2, "--out", tmp_path / "seg"))
    rep = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert any("2206-05-01" in w and "after today" in w for w in rep["warnings"])
    assert "2206-05-01" in result.output
    ok(invoke("segment", log(tmp_path / "b.csv"), "--k", 2, "--out", tmp_path / "seg2", "-q"))
    assert not json.loads((tmp_path / "seg2" / "report.json").read_text())["warnings"]
    ok(invoke("segment", data, "--k", 2, "--out", tmp_path / "seg3", "-q", "--as-of", "2230-01-01"))
    assert not json.loads((tmp_path / "seg3" / "report.json").read_text())["warnings"]


def test_one_file_named_twice_is_read_once(tmp_path):
    # By its folder and itself, through "..", and through a link: the rows were counted twice.
    folder = tmp_path / "d"
    folder.mkdir()
    data = log(folder / "a.csv")
    (tmp_path / "link.csv").symlink_to(data)
    ok(invoke("segment", data, "--k", 2, "--out", tmp_path / "once", "-q"))
    once = json.loads((tmp_path / "once" / "report.json").read_text())["rows"]
    for name, inputs in (("folder", (folder, data)), ("dots", (data, folder / ".." / "d" / "a.csv")),
                         ("link", (data, tmp_path / "link.csv"))):
        ok(invoke("segment", *inputs, "--k", 2, "--out", tmp_path / name, "-q"))
        assert json.loads((tmp_path / name / "report.json").read_text())["rows"] == once, name


def test_out_through_a_link_into_the_input_folder_is_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    log(folder / "a.csv")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "inlink").symlink_to(folder)
    refused(invoke("segment", folder, "--out", tmp_path / "o" / "inlink" / "seg"), "inside the input folder")
    assert not (folder / "seg").exists()


def test_an_unreadable_subfolder_is_an_error_not_rows_left_out(tmp_path, monkeypatch):
    # Its files were left out without a word. (A folder this user may not list, even as root.)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    log(folder / "a.csv")
    log(folder / "sub" / "b.csv")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    refused(invoke("segment", folder, "--out", tmp_path / "seg"), "cannot read the folder below input", "sub",
            "Permission denied", "rename it so to leave it out")
    assert not (tmp_path / "seg").exists()


@pytest.mark.parametrize("id_type", ["float32", "float16"])
@pytest.mark.parametrize("with_invoice", [False, True])
def test_narrow_float_ids_segment_as_float64_ones(tmp_path, id_type, with_invoice):
    # Keyed by their bits viewed as int64: float32 ids gave half as many keys, and a traceback.
    n = 300
    cols = {"customer_id": np.arange(n) % 20 + 1.0,
            "date": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=i * 7 % 330) for i in range(n)], pa.date32()),
            "amount": np.arange(n) % 7 + 1.0}
    if with_invoice:
        cols["invoice"] = [f"I{i // 3}" for i in range(n)]
    out = {}
    for t in ("float64", id_type):
        path = tmp_path / f"{t}.parquet"
        pq.write_table(pa.table({**cols, "customer_id": pa.array(cols["customer_id"].astype(t))}), path)
        ok(invoke("segment", path, "--k", 3, "--out", tmp_path / t, "-q"))
        out[t] = pq.read_table(tmp_path / t / "features.parquet")
    assert out[id_type].schema.field("customer_id").type == pa.from_numpy_dtype(np.dtype(id_type))
    assert out[id_type].column("customer_id").to_pylist() == list(range(1, 21))
    assert out[id_type].drop(["customer_id"]).equals(out["float64"].drop(["customer_id"]))


@pytest.mark.parametrize("case", ["past_2_63", "past_2_63_with_invoices", "one_at_2_64_less_1"])
def test_uint64_ids_past_2_63(tmp_path, case):
    # Tracebacks on every path: the ids' range overflowed int64, and keys wrapped negative.
    n = 300
    ids = (np.arange(n) % 20 + 1).astype(np.uint64)
    if case == "one_at_2_64_less_1":
        ids[0] = np.uint64(2**64 - 1)
    else:
        ids += np.uint64(2**63)
    cols = {"customer_id": pa.array(ids),
            "date": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=i * 7 % 330) for i in range(n)], pa.date32()),
            "amount": np.arange(n) % 7 + 1.0}
    if case.endswith("invoices"):
        cols["invoice"] = [f"I{i // 3}" for i in range(n)]
    path = tmp_path / "u64.parquet"
    pq.write_table(pa.table(cols), path)
    ok(invoke("segment", path, "--k", 3, "--out", tmp_path / "seg", "-q"))
    got = pq.read_table(tmp_path / "seg" / "features.parquet")
    assert got.schema.field("customer_id").type == pa.uint64()
    want = {}
    for c, a in zip(ids.tolist(), cols["amount"].tolist()):
        want[c] = want.get(c, 0.0) + a
    assert dict(zip(got.column("customer_id").to_pylist(), got.column("monetary").to_pylist())) == want
    ok(invoke("score", path, "--model", tmp_path / "seg" / "model.json", "--out", tmp_path / "sc", "-q"))
    assert pq.read_table(tmp_path / "sc" / "assignments.parquet").num_rows == len(want)


def test_a_column_named_twice_is_refused(tmp_path):
    # Parquet: a traceback on every path; CSV: the first of the two was taken without a word.
    n = 30
    parquet, csv = tmp_path / "dup.parquet", tmp_path / "dup.csv"
    pq.write_table(pa.Table.from_arrays([pa.array(np.arange(n) % 5), pa.array([f"2024-01-0{i % 9 + 1}" for i in range(n)]),
                                         pa.array(np.ones(n)), pa.array(np.zeros(n))],
                                        names=["customer_id", "date", "amount", "amount"]), parquet)
    csv.write_text("customer_id,date,customer_id,amount\n"
                   + "".join(f"{i % 5},2024-01-0{i % 9 + 1},{i},{i + 1.0}\n" for i in range(n)))
    dask = [("--scheduler", "local")] if importlib.util.find_spec("distributed") else []
    for path, column in ((parquet, "'amount'"), (csv, "'customer_id'")):
        for extra in [()] + dask:
            refused(invoke("segment", path, "--out", tmp_path / "seg", *extra), "dup.",
                    f"a column named {column} more than once")
            assert not (tmp_path / "seg").exists()


@pytest.mark.parametrize("parts", ["0", "10001", "9223372036854775807", "99999999999999999999"])
def test_partitions_out_of_range(trained, tmp_path, parts):
    data, model = trained
    refused(invoke("score", data, "--model", model, "--out", tmp_path / "sc", "--partitions", parts),
            "--partitions must be an integer from 1 to 10000")


def test_partitions_beyond_the_soft_limit_on_open_files(trained, tmp_path):
    # Each partition is an open file: the soft limit is raised towards the hard one, or the error says so.
    import resource

    data, model = trained
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2_000:
        pytest.skip("the hard limit on open files is too low to raise towards")
    resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))
    try:
        ok(invoke("score", data, "--model", model, "--out", tmp_path / "sc", "--partitions", 1_000, "-q"))
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 300  # put back once the files are closed
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert json.loads((tmp_path / "sc" / "score_report.json").read_text())["streamed"]


def test_partitions_beyond_the_hard_limit_on_open_files(trained, tmp_path, monkeypatch):
    # A hard limit cannot be undone in this process: the limits are faked.
    import resource

    data, model = trained
    monkeypatch.setattr(resource, "getrlimit", lambda which: (300, 300))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: None)
    refused(invoke("score", data, "--model", model, "--out", tmp_path / "sc", "--partitions", 1_000),
            "1,000 partitions need 1,256 open files and this system allows 300", "--partitions 44 or fewer")
    assert not (tmp_path / "sc").exists()


def test_an_earlier_out_this_user_may_not_change_is_refused(trained, tmp_path, monkeypatch):
    # Its outputs were set aside as .seg.old-* and never removed (they could not be). As root every
    # folder is writable, so the permission is faked.
    from gpuseg import outputs

    data, _ = trained
    seg, empty = tmp_path / "seg", tmp_path / "empty"  # seg holds the trained run's outputs
    empty.mkdir()
    real_access = os.access
    monkeypatch.setattr(outputs.os, "access",
                        lambda p, mode: False if Path(p) in (seg, empty) else real_access(p, mode))
    refused(invoke("segment", data, "--k", 3, "--out", seg), "may not remove")
    ok(invoke("segment", data, "--k", 3, "--out", empty, "-q"))  # nothing to remove: no problem


def test_n_init_has_a_ceiling_and_tol_is_finite(trained, tmp_path):
    # 10^11 initialisations ran on for hours; --tol inf stopped after one iteration, reported converged.
    data, _ = trained
    refused(invoke("segment", data, "--out", tmp_path / "x", "--n-init", "100000000000"),
            "--n-init must be an integer from 1 to 1000")
    refused(invoke("segment", data, "--out", tmp_path / "x", "--tol", "inf"), "--tol must be a finite number")


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_a_csv_file_that_is_not_utf8_says_so(tmp_path, encoding):
    # UTF-16 read as "Expected 3 columns, got 1" with NULs in the line; Latin-1 as "invalid UTF8 data".
    path = tmp_path / "enc.csv"
    path.write_bytes(("customer_id,date,amount\n" + "".join(f"c{i % 5}\u00e9,2024-01-0{i % 9 + 1},{i}.5\n"
                                                           for i in range(40))).encode(encoding))
    line = refused(invoke("segment", path, "--out", tmp_path / "seg"), "not UTF-8 text", "CSV files must be UTF-8")
    assert line.isprintable()


def test_out_under_a_file(trained, tmp_path):
    # "File exists: ..." for segment, and the hidden partial file's name for generate.
    data, _ = trained
    (tmp_path / "afile.csv").write_text("x\n")
    refused(invoke("segment", data, "--out", tmp_path / "afile.csv" / "seg"), "which is a file, not a folder")
    refused(invoke("generate", "--out", tmp_path / "afile.csv" / "x.csv", "--transactions", 100, "--customers", 10),
            "is a file, not a folder")


def test_a_header_without_a_newline_has_no_data_rows(tmp_path):
    path = tmp_path / "hdr.csv"
    path.write_text("customer_id,date,amount")  # was "is empty"
    refused(invoke("segment", path, "--out", tmp_path / "seg"), "has no data rows")


def test_a_header_without_a_newline_beside_other_files_is_a_file_of_no_rows(tmp_path):
    # Arrow calls a lone header without a line end an empty file: beside files with rows the run
    # stopped, where the same header with a line end (or a Parquet file of no rows) added nothing.
    import gzip

    data = log(tmp_path / "a.csv")
    header = data.read_text().splitlines()[0]
    outs = {}
    for name, write in {"newline": lambda p: p.with_suffix(".csv").write_text(header + "\n"),
                        "none": lambda p: p.with_suffix(".csv").write_text(header),
                        "gzip, none": lambda p: p.with_suffix(".csv.gz").write_bytes(gzip.compress(header.encode()))}.items():
        folder = tmp_path / name.replace(", ", "-")
        folder.mkdir()
        (folder / "a.csv").write_bytes(data.read_bytes())
        write(folder / "b")
        ok(invoke("segment", folder, "--k", 2, "--out", tmp_path / f"seg-{folder.name}"))
        outs[name] = (tmp_path / f"seg-{folder.name}" / "assignments.parquet").read_bytes()
        report = json.loads((tmp_path / f"seg-{folder.name}" / "report.json").read_text())
        assert len(report["inputs"]) == 2 and report["rows"]["read"] == len(data.read_text().splitlines()) - 1
    assert outs["none"] == outs["newline"] == outs["gzip, none"]


def test_a_glob_leaves_out_what_a_folder_leaves_out(tmp_path):
    # Found by a differential of folder and glob inputs: "out/**/*.parquet" read a Spark task's
    # leftover under out/_temporary/, which the folder form skips, and counted its rows twice.
    from gpuseg.errors import GpusegError
    from gpuseg.reading import expand_inputs

    out = tmp_path / "out"
    kept = [out / "year=2024" / "part-0.parquet", out / "year=2025" / "part-0.parquet"]
    skipped = [out / "_temporary" / "0" / "part-0.parquet", out / "year=2024" / "_part-9.parquet",
               out / ".staging" / "part-0.parquet", out / "_SUCCESS.parquet"]
    for path in kept + skipped:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1")
    assert expand_inputs([out]) == kept
    assert expand_inputs([f"{out}/**/*.parquet"]) == kept
    assert expand_inputs([f"{out}/*/*.parquet"]) == kept
    with pytest.raises(GpusegError, match="matches no input files"):  # _SUCCESS.parquet alone, left out
        expand_inputs([f"{out}/*"])
    assert expand_inputs([f"{out}/year=2024/*.parquet"]) == kept[:1]
    # Names the pattern spells out, or asks for with a leading "_", are kept.
    assert expand_inputs([f"{out}/_temporary/**/*.parquet"]) == skipped[:1]
    assert expand_inputs([f"{out}/year=2024/_*.parquet"]) == [skipped[1]]
    assert expand_inputs([f"{out}/**/_part-*.parquet"]) == [skipped[1]]
    assert expand_inputs([f"{out}/_*/0/*.parquet"]) == skipped[:1]
    # A name spelled out after a second "**", at any depth below it.
    deep = out / "x" / "_staging" / "2024" / "01" / "part.parquet"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"PAR1")
    assert expand_inputs([f"{out}/**/_staging/**/*.parquet"]) == [deep]


@pytest.mark.parametrize("target", ["empty", "earlier run", "nothing"])
def test_out_as_a_symbolic_link_is_refused_before_the_run(tmp_path, target):
    # The run failed after writing everything ("Is a directory"), leaving a .NAME.old-* folder each time.
    data = log(tmp_path / "a.csv")
    good = tmp_path / "good"
    ok(invoke("segment", data, "--k", 2, "--out", good))
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    dest = {"empty": tmp_path / "empty", "earlier run": good, "nothing": tmp_path / "gone"}[target]
    if target == "empty":
        dest.mkdir()
    (tmp_path / "link").symlink_to(dest)
    entries = set(os.listdir(tmp_path))
    for command in (("segment", data, "--k", 2), ("score", data, "--model", good / "model.json")):
        refused(invoke(*command, "--out", tmp_path / "link"), "is a symbolic link")
    assert set(os.listdir(tmp_path)) == entries
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before


def test_string_view_columns_are_text(tmp_path):
    # pyarrow writes string_view columns to Parquet as such: ids and dates of that type were refused
    # ("has type string_view; allowed: integers or text").
    rng = np.random.default_rng(0)
    n = 600
    cols = {"customer_id": [f"c{i}" for i in rng.integers(0, 60, n)],
            "invoice_date": [f"2024-{m:02d}-{d:02d}" for m, d in zip(rng.integers(1, 13, n), rng.integers(1, 29, n))],
            "amount": rng.random(n) * 100}
    pq.write_table(pa.table(cols), tmp_path / "plain.parquet")
    pq.write_table(pa.table({**cols, **{c: pa.array(cols[c], pa.string_view()) for c in ("customer_id", "invoice_date")}}),
                   tmp_path / "view.parquet")
    for name in ("plain", "view"):
        ok(invoke("segment", tmp_path / f"{name}.parquet", "--k", 3, "--out", tmp_path / f"o-{name}"))
    for f in ("assignments.parquet", "features.parquet"):
        assert (tmp_path / "o-view" / f).read_bytes() == (tmp_path / "o-plain" / f).read_bytes()


def test_empty_option_values_are_refused_not_taken_for_the_default(trained, tmp_path):
    # --scheduler '' ran without Dask, --memory-limit '' took a quarter of RAM, generate --out '' said
    # "unsupported output '.'", bench --cache naming a file said "File exists".
    data, model = trained
    refused(invoke("segment", data, "--k", 2, "--out", tmp_path / "a", "--scheduler", ""), "--scheduler is empty")
    refused(invoke("score", data, "--model", model, "--out", tmp_path / "b", "--memory-limit", ""),
            "--memory-limit must be a size")
    refused(invoke("generate", "--out", ""), "--out is empty")
    (tmp_path / "afile").write_text("x")
    refused(invoke("bench", "--sizes", "1000", "--backends", "cpu", "--out", tmp_path / "c", "--cache",
                   tmp_path / "afile"), "--cache", "is a file")
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))


def test_a_header_longer_than_the_first_block_is_read(tmp_path):
    # A header past 64 KiB (a wide export) was "no data rows (a header at most)".
    data = log(tmp_path / "a.csv").read_text().splitlines()
    pad = [f"unused_column_with_a_long_name_{i:05d}" for i in range(3000)]
    wide = tmp_path / "wide.csv"
    wide.write_text("\n".join([",".join([data[0], *pad])] + [",".join([line, *[""] * len(pad)])
                                                                for line in data[1:]]) + "\n")
    assert len(wide.read_text().splitlines()[0]) > 1 << 16
    ok(invoke("segment", wide, "--k", 2, "--out", tmp_path / "w"))
    ok(invoke("segment", tmp_path / "a.csv", "--k", 2, "--out", tmp_path / "n"))
    assert (tmp_path / "w" / "assignments.parquet").read_bytes() == (tmp_path / "n" / "assignments.parquet").read_bytes()


def test_an_order_total_on_every_line_is_not_taken_for_the_line_amount(tmp_path):
    # Found with a Shopify-like export: 'total' (the order's) was found by name and taken over
    # quantity x unit_price, counting each order once per line (alice 100 for 50).
    head = "customer_id,order_id,order_date,quantity,unit_price,total\n"
    rows = ["alice,1001,2024-03-01,2,10.00,25.00", "alice,1001,2024-03-01,1,5.00,25.00",
            "alice,1003,2024-03-10,3,7.50,25.00", "alice,1003,2024-03-10,1,2.50,25.00",
            "bob,1002,2024-03-05,1,40.00,40.00"]
    orders = tmp_path / "orders.csv"
    orders.write_text(head + "\n".join(rows) + "\n")
    refused(invoke("segment", orders, "--k", 1, "--out", tmp_path / "o"), "'total'", "disagree on 4 of the first 5",
            "--amount-col 'total'", "--quantity-col 'quantity' --price-col 'unit_price'")
    # A first file of a few rows (or none) does not decide alone.
    (tmp_path / "tiny.csv").write_text(head + "bob,1002,2024-03-05,1,40.00,40.00\n")
    (tmp_path / "none.csv").write_text(head)
    for first in ("tiny.csv", "none.csv"):
        refused(invoke("segment", tmp_path / first, orders, "--k", 1, "--out", tmp_path / "o"), "disagree on 4 of")
    ok(invoke("segment", orders, "--k", 1, "--out", tmp_path / "q", "--quantity-col", "quantity", "--price-col",
              "unit_price"))
    monetary = pq.read_table(tmp_path / "q" / "features.parquet").to_pydict()["monetary"]
    assert monetary == [50.0, 40.0]
    # A line total that is quantity x price (to the cent) is used as before.
    lines = tmp_path / "lines.csv"
    lines.write_text("customer_id,order_id,order_date,quantity,unit_price,line_total\n"
                     "a,1,2024-03-01,3,0.333,1.00\nb,2,2024-03-02,2,5.00,10.00\n")
    ok(invoke("segment", lines, "--k", 1, "--out", tmp_path / "l"))
    assert json.loads((tmp_path / "l" / "report.json").read_text())["columns"]["amount"] == "line_total"


def test_a_day_first_file_read_month_first_is_refused_not_half_swapped(tmp_path):
    # --date-format '%m/%d/%Y' on dd/mm/yyyy dates dropped every day past the 12th and kept the
    # rest with day and month exchanged, without a warning (as_of months ahead).
    import datetime as dt
    lines = ["customer_id,invoice_date,amount"]
    for i in range(120):
        d = dt.date(2024, 1, 1) + dt.timedelta(days=i)
        lines.append(f"C{i % 30},{d:%d/%m/%Y},{10 + i % 7}")
    path = tmp_path / "dm.csv"
    path.write_text("\n".join(lines) + "\n")
    refused(invoke("segment", path, "--k", 2, "--date-format", "%m/%d/%Y", "--out", tmp_path / "o"),
            "with day and month exchanged", "--date-format '%d/%m/%Y'")
    ok(invoke("segment", path, "--k", 2, "--date-format", "%d/%m/%Y", "--out", tmp_path / "p"))
    # A few typos that happen to read exchanged (under 10% of the rows) are dropped and counted, as before.
    month_first = ["customer_id,invoice_date,amount"] + [
        f"C{i % 30},{dt.date(2024, 1, 1) + dt.timedelta(days=i):%m/%d/%Y},10" for i in range(120)] + [
        "C1,13/01/2024,10", "C2,14/02/2024,10"]
    path.write_text("\n".join(month_first) + "\n")
    ok(invoke("segment", path, "--k", 2, "--date-format", "%m/%d/%Y", "--out", tmp_path / "q"))
    assert json.loads((tmp_path / "q" / "report.json").read_text())["rows"]["dropped"]["unparseable_date"] == 2
    # Nor do blank dates beside one such typo (they made 10% with it, and both formats were refused).
    path.write_text("\n".join(month_first[:21] + ["C1,13/01/2024,10", "C2,,5", "C3,,5"]) + "\n")
    ok(invoke("segment", path, "--k", 2, "--date-format", "%m/%d/%Y", "--out", tmp_path / "r"))
    # A blank first date: the example quoted is a date that reads exchanged, and the count says how many do.
    path.write_text("\n".join(lines[:1] + ["C0,,5"] + lines[1:]) + "\n")
    line = refused(invoke("segment", path, "--k", 2, "--date-format", "%m/%d/%Y", "--out", tmp_path / "o"),
                   "of them read with day and month exchanged (e.g. '13/01/2024'")
    assert "None" not in line


@pytest.mark.parametrize("text, fragments", [
    ("customer_id;invoice_date;amount\nC1;2024-03-01;10.00\n", ["one column holding ';'", "comma-separated"]),
    ("sep=,\ncustomer_id,invoice_date,amount\nC1,2024-03-01,10.00\n", ["first line is 'sep=,'", "remove"]),
    ("# POS export\ncustomer_id,invoice_date,amount\nC1,2024-03-01,10.00\n", ["first line is '# POS export'"]),
    ('customer_id,invoice_date,quantity,unit_price\nC1,2024-03-01,2,"1,50"\n',
     ["'1,50' in column 'unit_price' is not a number", "'.' as the decimal point"]),
    ("customer_id,invoice_date,amount\nC1,2024-03-01,10\ncustomer_id,invoice_date,amount\nC2,2024-03-02,5\n",
     ["a line repeats the header"]),
    ("customer_id,invoice_date,amount\nC1,45385,10\nC2,45390,5\n", ["serial day number"]),
    # The usual European export: semicolons and decimal commas (Arrow stopped at the second field).
    ("customer_id;invoice_date;amount\n1;2023-01-05;1,5\n", ["one column holding ';'"]),
    # A comment line holding ';' is a comment line, not a semicolon header.
    ("# export; shop A\ncustomer_id,invoice_date,amount\nC1,2024-01-01,5.5\n", ["first line is '# export; shop A'"]),
    # A '#' in the header's first name is no comment line: the bad row is the one to show.
    ("#customer_id,invoice_date,amount\n1,2023-01-05,2\n2,2023-01-06,2.5,extra\n",
     ["Expected 3 columns, got 4: 2,2023-01-06,2.5,extra"]),
])
def test_export_quirks_get_an_error_that_says_what_to_change(tmp_path, text, fragments):
    # Found with exports as Excel, POS systems and ERPs write them: the errors named Arrow's column
    # numbers from 0, called the real header a bad row, or suggested a --date-format no format can meet.
    path = tmp_path / "export.csv"
    path.write_text(text)
    refused(invoke("segment", path, "--k", 1, "--out", tmp_path / "o"), *fragments)


def test_a_semicolon_file_beside_others_or_scored_is_named_as_such(trained, tmp_path):
    data, model = trained
    semi = tmp_path / "semi.csv"
    semi.write_text("customer_id;invoice_date;amount\n1;2023-01-05;2\n")
    refused(invoke("segment", data, semi, "--k", 2, "--out", tmp_path / "o"), "semi.csv'", "one column holding ';'")
    refused(invoke("score", semi, "--model", model, "--out", tmp_path / "s"), "one column holding ';'")
    deflated = tmp_path / "fold"
    deflated.mkdir()
    (deflated / "a.csv.deflate").write_bytes(b"x")  # Hadoop's deflate suffix: data, not a sidecar
    refused(invoke("segment", deflated, "--out", tmp_path / "d"), "looks like data gpuseg cannot read")


def test_a_header_not_in_utf8_gets_the_conversion_hint(tmp_path):
    path = tmp_path / "lat.csv"
    path.write_bytes(b"customer_id,invoice_date,amount,caf\xe9\n1,2024-01-01,3,x\n")
    refused(invoke("segment", path, "--out", tmp_path / "o"), "not UTF-8", "iconv")


def test_data_in_a_form_gpuseg_cannot_read_stops_a_folder_or_glob_run(tmp_path):
    # c.csv.xz beside a.csv was left out of the folder's rows without a word.
    folder = tmp_path / "fold"
    folder.mkdir()
    log(folder / "a.csv")
    (folder / "notes.txt").write_text("not data")  # other files are left out, as before
    ok(invoke("segment", folder, "--k", 2, "--out", tmp_path / "o1"))
    # Sidecars are not data: Athena's q1.csv.metadata, checksums, notes.
    for name in ("a.csv.metadata", "x.parquet.sha256", "report.csv.md"):
        (folder / name).write_text("{}")
    ok(invoke("segment", folder, "--k", 2, "--out", tmp_path / "o3"))
    for name in ("c.csv.xz", "d.tsv", "e.parquet.lz4"):
        (folder / name).write_bytes(b"x")
        refused(invoke("segment", folder, "--k", 2, "--out", tmp_path / "o2"), "folder", repr(str(folder / name)),
                "cannot read")
        refused(invoke("segment", f"{folder}/*", "--k", 2, "--out", tmp_path / "o2"), "pattern", "cannot read")
        (folder / name).unlink()
    assert not (tmp_path / "o2").exists()


def test_a_full_disk_names_the_output_folder(tmp_path):
    import errno

    from gpuseg.errors import GpusegError
    from gpuseg.outputs import staged_output
    for exc in (OSError(errno.ENOSPC, "No space left on device"),
                OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")):
        with pytest.raises(GpusegError, match=r"no space left to write --out .*seg'"):
            with staged_output(tmp_path / "seg") as tmp:
                (tmp / "report.json").write_text("{}")
                raise exc
        assert sorted(os.listdir(tmp_path)) == []
    with pytest.raises(OSError, match="Permission denied"):  # other errors are not disguised
        with staged_output(tmp_path / "seg"):
            raise OSError(errno.EACCES, "Permission denied")


def test_uint64_ids_past_2_63_beside_other_integer_types(tmp_path):
    # Files typed uint32 and uint64 were cast to int64 together, which uint64 ids past 2**63 do not fit.
    n = 60
    days = pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=i * 7 % 330) for i in range(n)], pa.date32())
    ids = {"small": (np.arange(n) % 10 + 1).astype(np.uint32),
           "big": (np.arange(n) % 10 + 1).astype(np.uint64) + np.uint64(2**63 + 16),
           "negative": (np.arange(n) % 10 - 5).astype(np.int64)}
    for name, values in ids.items():
        pq.write_table(pa.table({"customer_id": pa.array(values), "date": days, "amount": np.full(n, 5.0)}),
                       tmp_path / f"{name}.parquet")
    ok(invoke("segment", tmp_path / "small.parquet", tmp_path / "big.parquet", "--k", 3, "--out", tmp_path / "a", "-q"))
    got = pq.read_table(tmp_path / "a" / "features.parquet")
    assert got.schema.field("customer_id").type == pa.uint64()
    assert sorted(got.column("customer_id").to_pylist()) == sorted(set(ids["small"].tolist()) | set(ids["big"].tolist()))
    refused(invoke("segment", tmp_path / "big.parquet", tmp_path / "negative.parquet", "--out", tmp_path / "b"),
            "uint64 past 2**63", "negative")


def test_column_names_with_escape_sequences_are_not_sent_to_the_terminal(tmp_path):
    # "no customer column found (columns are: cust\x1b[31mX, ...)" reached the terminal raw.
    path = tmp_path / "esc.csv"
    path.write_text("cust\x1b[31mX,date,amount\n1,2024-01-02,3.0\n")
    line = refused(invoke("segment", path, "--out", tmp_path / "seg"), "cust?[31mX")
    assert "\x1b" not in line


def test_files_on_a_file_system_without_inode_numbers_are_told_apart(tmp_path, monkeypatch):
    # Where st_ino is 0 every file would have been one file: the resolved paths decide there.
    from gpuseg.reading import expand_inputs

    a, b = log(tmp_path / "a.csv"), log(tmp_path / "b.csv", seed=1)
    (tmp_path / "link.csv").symlink_to(a)
    real_stat = Path.stat

    def no_inode(self, *args, **kwargs):
        st = real_stat(self, *args, **kwargs)
        return os.stat_result((st.st_mode, 0, *tuple(st)[2:]))

    monkeypatch.setattr(Path, "stat", no_inode)
    assert expand_inputs([a, b, tmp_path / "link.csv"]) == [a, b]


def test_numeric_ids_and_no_purchase_is_one_error(tmp_path):
    # Found by differential fuzzing: the range merge of no customers ended in an IndexError.
    path = tmp_path / "returns.parquet"
    pq.write_table(pa.table({"customer_id": pa.array([1, 2], pa.int64()), "date": ["2024-01-01", "2024-01-02"],
                             "amount": [-5.0, -1.0]}), path)
    refused(invoke("segment", path, "--k", 1, "--out", tmp_path / "seg"), "no customer has a purchase order")


def test_an_id_with_and_without_spaces_beside_a_file_of_integer_ids(tmp_path):
    # Found by differential fuzzing: re-encoding the CSV batch's ids for the mixed-type merge made
    # "A" and " A" one entry while their sums stayed two (a ValueError or IndexError).
    (tmp_path / "a.csv").write_text("customer_id,date,amount\nA,2024-01-01,5\n A,2024-01-02,3\n")
    pq.write_table(pa.table({"customer_id": pa.array([2], pa.int64()), "date": ["2024-01-02"], "amount": [7.0]}),
                   tmp_path / "b.parquet")
    ok(invoke("segment", tmp_path / "a.csv", tmp_path / "b.parquet", "--k", 1, "--out", tmp_path / "seg", "-q"))
    got = pq.read_table(tmp_path / "seg" / "features.parquet", columns=["customer_id", "frequency", "monetary"])
    assert got.to_pydict() == {"customer_id": ["2", "A"], "frequency": [1, 2], "monetary": [7.0, 8.0]}


def test_a_row_group_of_only_null_text_ids(tmp_path):
    # Found by differential fuzzing: its dictionary is empty, and id_present indexed into it.
    path = tmp_path / "guests.parquet"
    pq.write_table(pa.table({"customer_id": pa.array(["A", "B", None]), "date": ["2024-01-01", "2024-01-02", "2024-01-03"],
                             "amount": [5.0, 7.0, 1.0]}), path, row_group_size=1)
    ok(invoke("segment", path, "--k", 2, "--out", tmp_path / "seg", "-q"))
    rows = json.loads((tmp_path / "seg" / "report.json").read_text())["rows"]
    assert rows["used"] == 2 and rows["dropped"]["missing_customer_id"] == 1


def test_a_decimal_id_is_one_customer_whatever_batch_it_is_in(tmp_path):
    # Found by differential fuzzing: a batch of whole decimals became integers (101) and a batch with a
    # fraction became text ("101.00"), so customer 101.00 was split in two.
    import decimal

    ids = pa.array([decimal.Decimal(v) for v in ("101.00", "102.00", "101.00", "101.50", "-0.00", "0.50")],
                   pa.decimal128(10, 2))
    path = tmp_path / "dec.parquet"
    pq.write_table(pa.table({"customer_id": ids, "date": [f"2024-01-0{i + 1}" for i in range(6)],
                             "amount": [5.0, 7.0, 1.0, 2.0, 3.0, 4.0]}), path, row_group_size=2)
    ok(invoke("segment", path, "--k", 2, "--out", tmp_path / "seg", "-q"))
    got = pq.read_table(tmp_path / "seg" / "features.parquet", columns=["customer_id", "frequency", "monetary"])
    assert dict(zip(got.column("customer_id").to_pylist(), got.column("monetary").to_pylist())) == \
        {"0": 3.0, "0.50": 4.0, "101": 6.0, "101.50": 2.0, "102": 7.0}
