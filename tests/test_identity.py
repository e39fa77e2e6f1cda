"""--reference-model: ids and names kept across a refresh, and the migration table."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.config import SegmentConfig
from gpuseg.pipeline import run

runner = CliRunner()


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "jan"
    return run(SegmentConfig(out=out, k=5, demo_customers=4000, seed=0))


def test_refit_keeps_ids_and_names(first, tmp_path):
    # Another seed orders the clusters differently; the reference maps them back.
    result = runner.invoke(app, ["segment", "--k", "5", "--seed", "11", "--out", str(tmp_path / "feb"),
                                 "--reference-model", str(first.out / "model.json")])
    # The CLI demo has 50,000 customers; use the library for the same 4,000-customer demo.
    assert result.exit_code == 0, result.output
    second = run(SegmentConfig(out=tmp_path / "feb2", k=5, demo_customers=4000, seed=11,
                               reference_model=first.out / "model.json"))
    assert second.model.names() == first.model.names()
    a = pq.read_table(first.out / "assignments.parquet")
    b = pq.read_table(second.out / "assignments.parquet")
    same = np.mean(a.column("segment").to_numpy() == b.column("segment").to_numpy())
    assert same > 0.95  # the same data: nearly every customer keeps its segment id
    moves = pacsv.read_csv(second.out / "migration.csv").to_pylist()
    assert sum(m["customers"] for m in moves) == a.num_rows
    stay = sum(m["customers"] for m in moves if m["old_segment"] == m["new_segment"])
    assert stay / a.num_rows == pytest.approx(same)
    assert all(m["old_name"] == first.model.names()[m["old_segment"]] for m in moves)
    rep = json.loads((second.out / "report.json").read_text())
    assert rep["migration"] == "written to migration.csv"


def test_different_k_keeps_names_of_matched_segments(first, tmp_path):
    second = run(SegmentConfig(out=tmp_path / "k6", k=6, demo_customers=4000, seed=0,
                               reference_model=first.out / "model.json"))
    names = second.model.names()
    assert len(names) == 6 and len(set(names)) == 6
    assert set(first.model.names()) <= set(names)


def test_reference_with_other_features_is_an_error(first, tmp_path):
    result = runner.invoke(app, ["segment", "--features", "recency_days,monetary", "--out", str(tmp_path / "x"),
                                 "--reference-model", str(first.out / "model.json")])
    assert result.exit_code == 2 and "reference model uses features" in result.output
    assert not (tmp_path / "x").exists()


def test_missing_reference_is_an_error(tmp_path):
    result = runner.invoke(app, ["segment", "--out", str(tmp_path / "x"), "--reference-model",
                                 str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "--reference-model" in result.output and "does not exist" in result.output


def test_no_migration_table_is_a_warning_not_silence(first, tmp_path):
    # The reference run's customers are none of these: migration.csv was left out without a word.
    import shutil

    other = tmp_path / "other"
    shutil.copytree(first.out, other)
    t = pq.read_table(other / "assignments.parquet")
    renamed = pc.binary_join_element_wise("x-", t.column("customer_id").cast("string"), "")
    pq.write_table(t.set_column(0, "customer_id", renamed), other / "assignments.parquet")
    result = runner.invoke(app, ["segment", "--k", "5", "--out", str(tmp_path / "feb"),
                                 "--reference-model", str(other / "model.json")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "feb" / "migration.csv").exists()
    assert "no migration.csv, no customers in common with the reference run" in " ".join(result.output.split())
    rep = json.loads((tmp_path / "feb" / "report.json").read_text())
    assert rep["migration"] == "no customers in common with the reference run"
    assert any("no migration.csv" in w for w in rep["warnings"])


def test_a_model_with_ids_left_empty_scores_its_own_customers_as_they_were_assigned(first, tmp_path):
    # k = 3 against a k = 5 reference: the reference ids no new segment took stay in the model
    # (named, empty) as retired; scoring assigned customers to them once, and 398 of 1,983
    # customers moved.
    from gpuseg.generate import demo_table
    from gpuseg.scoring import ScoreConfig, score
    log = tmp_path / "tx.parquet"
    pq.write_table(demo_table(4000, seed=0), log)
    third = run(SegmentConfig(inputs=(str(log),), out=tmp_path / "k3", k=3, reference_model=first.out / "model.json"))
    retired = list(third.model.retired)
    assert third.model.k > 3 and len(retired) == third.model.k - 3
    assert json.loads((tmp_path / "k3" / "model.json").read_text())["retired"] == retired
    a = pq.read_table(tmp_path / "k3" / "assignments.parquet").sort_by("customer_id")
    assert not set(retired) & set(a.column("segment").to_pylist())
    for partitions in (None, 2):
        score(ScoreConfig(model=tmp_path / "k3" / "model.json", inputs=(str(log),), out=tmp_path / f"s{partitions}",
                          partitions=partitions))
        b = pq.read_table(tmp_path / f"s{partitions}" / "assignments.parquet").sort_by("customer_id")
        assert b.column("segment").equals(a.column("segment"))
    # A retired segment has no mean distance (null, not 0), in the model and in the drift.
    training = json.loads((tmp_path / "k3" / "model.json").read_text())["training"]
    assert [training["segment_mean_distance"][s] for s in retired] == [None] * len(retired)
    assert all(d > 0 for s, d in enumerate(training["segment_mean_distance"]) if s not in retired)
    drift = json.loads((tmp_path / "sNone" / "drift.json").read_text())["segments"]
    assert [drift[s]["training_mean_distance"] for s in retired] == [None] * len(retired)
    # The report reads no standing into a segment without customers, and shows none in its profile.
    assert runner.invoke(app, ["report", str(tmp_path / "k3")]).exit_code == 0
    page = (tmp_path / "k3" / "report.html").read_text()
    names = third.model.names()
    for s in retired:
        row = re.search(rf"<tr><td>{s}</td><td class='l'>[^<]*</td><td class='l'>([^<]*)</td>", page)
        assert row and row.group(1) == "", names[s]
    kept = [s for s in range(third.model.k) if s not in retired]
    assert all(re.search(rf"<tr><td>{s}</td><td class='l'>[^<]*</td><td class='l'>[^<]+</td>", page) for s in kept)


def test_every_reference_id_no_new_segment_takes_is_kept(first, tmp_path):
    # Found by an oracle of the README: k = 3 against a k = 7 reference kept ids 0..5 only when the
    # new segments took 0, 1 and 5, so id 6 and its name left the model (retired listed 2, 3, 4).
    seven = run(SegmentConfig(out=tmp_path / "k7", k=7, demo_customers=4000, seed=0,
                              reference_model=first.out / "model.json"))
    assert seven.model.k == 7
    three = run(SegmentConfig(out=tmp_path / "k3", k=3, demo_customers=4000, seed=0,
                              reference_model=seven.out / "model.json"))
    taken = sorted(set(pq.read_table(three.out / "assignments.parquet").column("segment").to_pylist()))
    assert three.model.k == 7 and len(taken) == 3
    assert sorted(taken + list(three.model.retired)) == list(range(7))
    assert [three.model.names()[s] for s in three.model.retired] == [seven.model.names()[s]
                                                                     for s in three.model.retired]


def test_a_dask_runs_folder_of_assignments_gives_the_migration_table(first, tmp_path):
    # segment --scheduler writes assignments/ as a dataset: "no assignments.parquet beside the reference model".
    import shutil
    ref = tmp_path / "ref"
    shutil.copytree(first.out, ref)
    table = pq.read_table(ref / "assignments.parquet")
    (ref / "assignments.parquet").unlink()
    (ref / "assignments").mkdir()
    pq.write_table(table.slice(0, 1000), ref / "assignments" / "part-00000.parquet")
    pq.write_table(table.slice(1000), ref / "assignments" / "part-00001.parquet")
    second = run(SegmentConfig(out=tmp_path / "feb", k=5, demo_customers=4000, seed=0,
                               reference_model=ref / "model.json"))
    moves = pacsv.read_csv(second.out / "migration.csv").to_pylist()
    assert sum(m["customers"] for m in moves) == table.num_rows
