"""The reader refuses what the writer refuses: every chunk is checked against the one run schema
(types, nulls, row keys, the row count meta.json gives) and every file must be the run's own (no
symlink); a glob that matches nothing says how to escape a literal bracket."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from varprobe.record import RunWriter, check_run, load_run, load_runs
from varprobe.record import reader as reader_module

COLS = ["step", "layer", "depth", "mode", "module_type", "role", "quantity", "value"]


def make_frame(step0: int, steps: int = 2) -> pd.DataFrame:
    """Rows as the probe writes them: per step, train and eval rows of the same layer and quantity."""
    rows = []
    for s in range(step0, step0 + steps):
        for d in range(2):
            for mode in ("train", "eval"):
                rows.append((s, f"block{d}.conv", d, mode, "Conv2d", "conv", "out.var", float(s + d)))
        rows.append((s, "", -1, "train", "", "", "loss", 1.0 / (s + 1)))
    return pd.DataFrame(rows, columns=COLS)


def write_run(path: Path, chunks: int = 3) -> list[Path]:
    with RunWriter(path, {"seed": 0}) as w:
        return [w.append(make_frame(2 * i)) for i in range(chunks)]


def rewrite(chunk: Path, **columns: pa.Array) -> None:
    """Replace ``chunk`` by a valid Parquet file with the same rows, some columns replaced."""
    table = pq.read_table(chunk)
    for name, array in columns.items():
        table = table.set_column(table.column_names.index(name), name, array)
    pq.write_table(table, chunk)


def chunk_rows(chunk: Path) -> int:
    return pq.ParquetFile(chunk).metadata.num_rows


def refused(run: Path, chunk: Path, why: str) -> list[str]:
    """The run is refused naming ``chunk`` and ``why``; skip_corrupt skips that chunk, warning; the
    problem is what check_run lists."""
    with pytest.raises(ValueError, match=re.escape(str(chunk)) + ".*" + why):
        load_run(run)
    with pytest.warns(RuntimeWarning, match=re.escape(str(chunk))):
        partial = load_run(run, skip_corrupt=True)
    assert chunk in partial.skipped and partial.damaged
    assert partial.frame.step.dtype == np.int64 and partial.frame.value.dtype == np.float64
    assert check_run(run) == partial.problems
    return partial.problems


# -- bug 10: a chunk the writer would refuse is refused, naming the file ---------------------------

@pytest.mark.parametrize("step", [pa.array([None] + [1] * 9, pa.int64()),
                                  pa.array([float("nan")] + [1.0] * 9, pa.float64())],
                         ids=["null", "nan"])
def test_chunk_with_a_null_or_nan_step_is_refused(tmp_path, step):
    run = tmp_path / "r"
    chunks = write_run(run)
    rewrite(chunks[1], step=step)
    refused(run, chunks[1], "step")
    with pytest.raises(ValueError, match=re.escape(str(chunks[1]))):
        load_runs([run])
    with pytest.warns(RuntimeWarning):
        table = load_runs([run], skip_corrupt=True)
    assert table.step.dtype == np.int64 and sorted(set(table.step)) == [0, 1, 4, 5]


def test_value_stored_as_strings_is_refused_not_cast(tmp_path):
    run = tmp_path / "r"
    chunks = write_run(run)
    values = pq.read_table(chunks[0]).column("value").to_pylist()
    rewrite(chunks[0], value=pa.array([str(v) for v in values]))
    [problem] = refused(run, chunks[0], "column 'value'")
    assert "string" in problem


def test_null_in_a_string_column_or_value_is_refused(tmp_path):
    run = tmp_path / "r"
    chunks = write_run(run)
    quantity = pq.read_table(chunks[2]).column("quantity").to_pylist()
    rewrite(chunks[2], quantity=pa.array([None] + quantity[1:], pa.string()))
    refused(run, chunks[2], "column 'quantity' has 1 null")
    values = pq.read_table(chunks[1]).column("value").to_pylist()
    rewrite(chunks[1], value=pa.array([None] + values[1:], pa.float64()))
    with pytest.raises(ValueError, match=re.escape(str(chunks[1])) + ".*column 'value' has 1 null"):
        load_run(run)


def test_duplicate_rows_within_a_chunk_are_refused(tmp_path):
    run = tmp_path / "r"
    chunks = write_run(run)
    layer = pq.read_table(chunks[1]).column("layer").to_pylist()
    assert layer[:2] == ["block0.conv"] * 2  # rows 0 and 1: train and eval: not a duplicate
    layer[2] = "block0.conv"  # row 2 (train) now repeats row 0: (step 2, train, block0.conv, out.var)
    rewrite(chunks[1], layer=pa.array(layer).dictionary_encode())
    refused(run, chunks[1], r"two rows share .*step=2, mode='train', layer='block0.conv', "
                            r"quantity='out.var'")


def test_rows_repeating_an_earlier_chunk_are_refused_naming_both(tmp_path):
    run = tmp_path / "r"
    chunks = write_run(run)
    step = pq.read_table(chunks[2]).column("step").to_pylist()
    rewrite(chunks[2], step=pa.array([s - 4 for s in step], pa.int64()))  # steps 4, 5 -> 0, 1
    refused(run, chunks[2], "repeats rows of " + re.escape(str(chunks[0])))
    with pytest.warns(RuntimeWarning):
        partial = load_run(run, skip_corrupt=True)
    pd.testing.assert_frame_equal(partial.frame, pd.concat([make_frame(0), make_frame(2)],
                                                           ignore_index=True))


def test_writer_refuses_duplicate_rows_with_the_same_check(tmp_path):
    frame = make_frame(0)
    twice = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    with RunWriter(tmp_path / "r") as w:
        with pytest.raises(ValueError, match=r"two rows share .*step=0, mode='eval', "
                                             r"layer='block1.conv', quantity='out.var'"):
            w.append(twice)
        w.append(frame)  # train and eval rows of one step, layer and quantity are distinct rows
    pd.testing.assert_frame_equal(load_run(tmp_path / "r").frame, frame)


# -- the row count of meta.json, read from the footers before any chunk is decoded -----------------

def test_chunk_with_more_rows_than_meta_counts_is_refused_before_decoding(tmp_path, monkeypatch):
    run = tmp_path / "r"
    chunks = write_run(run)
    meta = json.loads((run / "meta.json").read_text())
    big = pa.concat_tables([pq.read_table(chunks[1])] * 1000)  # a few kB on disk, 10000 rows
    pq.write_table(big, chunks[1])
    decoded = []
    real = pq.read_table
    monkeypatch.setattr(reader_module.pq, "read_table",
                        lambda source, *a, **k: decoded.append(Path(source)) or real(source, *a, **k))
    with pytest.raises(ValueError, match=re.escape(str(chunks[1])) + r".*10000 rows.*meta\.json counts "
                                         + str(meta["rows"]) + r" rows in 3 chunk"):
        load_run(run)
    assert chunks[1] not in decoded
    with pytest.warns(RuntimeWarning, match=re.escape(str(chunks[1]))):
        partial = load_run(run, skip_corrupt=True)
    assert partial.skipped == [chunks[1]] and len(partial.frame) == 2 * 10
    assert chunks[1] not in decoded


def test_chunks_with_fewer_rows_than_meta_counts_are_reported(tmp_path):
    run = tmp_path / "r"
    chunks = write_run(run)
    pq.write_table(pq.read_table(chunks[2]).slice(0, 4), chunks[2])
    with pytest.raises(ValueError, match=r"hold 24 rows, but .*meta\.json counts 30"):
        load_run(run)
    with pytest.warns(RuntimeWarning, match="hold 24 rows"):
        partial = load_run(run, skip_corrupt=True)
    assert partial.damaged and len(partial.frame) == 24 and partial.skipped == []


def test_uncounted_chunk_of_a_closed_run_is_refused_but_of_a_killed_run_read(tmp_path):
    run = tmp_path / "r"
    chunks = write_run(run, chunks=2)
    extra = run / "stats" / "chunk-000002.parquet"
    pq.write_table(pa.concat_tables([pq.read_table(chunks[0])] * 100), extra)
    refused(run, extra, r"not counted in .*meta\.json .*status 'finished'")
    meta_path = run / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "running"}))  # killed between chunk and meta
    extra.unlink()
    write_run(tmp_path / "other", chunks=3)
    (tmp_path / "other" / "stats" / "chunk-000002.parquet").rename(extra)
    loaded = load_run(run)
    assert loaded.status == "interrupted" and not loaded.damaged
    assert sorted(set(loaded.frame.step)) == [0, 1, 2, 3, 4, 5]


def test_live_run_is_read_while_meta_lags_behind_the_chunks(tmp_path):
    run = tmp_path / "r"
    with RunWriter(run) as w:
        for i in range(3):
            w.append(make_frame(2 * i))
            frame = load_run(run).frame
            assert len(frame) == 10 * (i + 1) and check_run(run) == []


# -- symlinks: a run's files are its own -----------------------------------------------------------

def test_symlinked_chunk_is_refused_and_listed_by_check_run(tmp_path):
    run, other = tmp_path / "r", tmp_path / "other"
    chunks = write_run(run)
    foreign = write_run(other)
    chunks[1].unlink()
    chunks[1].symlink_to(foreign[1])
    [problem] = refused(run, chunks[1], "symbolic link")
    assert str(foreign[1]) in problem


def test_symlinked_stats_directory_is_refused(tmp_path):
    run, other = tmp_path / "r", tmp_path / "other"
    write_run(run)
    write_run(other)
    stats = run / "stats"
    for p in stats.iterdir():
        p.unlink()
    stats.rmdir()
    stats.symlink_to(other / "stats")
    with pytest.raises(ValueError, match=re.escape(str(stats)) + ".*symbolic link"):
        load_run(run)
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        partial = load_run(run, skip_corrupt=True)
    assert partial.frame.empty and partial.damaged
    assert any("symbolic link" in p and str(other / "stats") in p for p in check_run(run))


def test_symlinked_meta_json_is_refused(tmp_path):
    run, other = tmp_path / "r", tmp_path / "other"
    write_run(run)
    write_run(other)
    (run / "meta.json").unlink()
    (run / "meta.json").symlink_to(other / "meta.json")
    for skip in (False, True):
        with pytest.raises(ValueError, match=re.escape(str(run / "meta.json")) + ".*symbolic link"):
            load_run(run, skip_corrupt=skip)
    [problem] = check_run(run)
    assert "symbolic link" in problem and str(other / "meta.json") in problem


# -- globs -------------------------------------------------------------------------------------

def test_glob_matching_nothing_says_how_to_escape_a_literal_bracket(tmp_path):
    root = tmp_path / "root[1]"
    write_run(root / "a", chunks=1)
    pattern = str(root / "*")
    escaped = glob.escape(str(root)) + "/*"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{str(root)!r} exists") + ".*"
                       + re.escape(f"glob.escape: {escaped!r}")):
        load_runs(pattern)
    assert load_runs(escaped).run.unique().tolist() == ["a"]
    assert load_runs(root / "a").run.unique().tolist() == ["a"]  # an existing path is never a glob


def test_row_keys_refuse_a_chunk_repeating_an_earlier_one_loading_only_overlapping_chunks():
    from varprobe.record.schema import RowKeys, frame_to_table

    tables = [frame_to_table(make_frame(2 * i)) for i in range(3)]  # steps 0-1, 2-3, 4-5
    loaded = []
    keys = RowKeys(lambda i: loaded.append(i) or tables[i])
    for t in tables:
        keys.check(t)
        keys.add(t)
    assert loaded == []  # no (step, mode) shared: nothing compared
    eval_only = make_frame(2)
    eval_only = eval_only[eval_only["mode"] == "eval"]
    train_of_step_3 = make_frame(3, steps=1)
    train_of_step_3 = train_of_step_3[train_of_step_3["mode"] == "train"]
    keys.check(frame_to_table(eval_only.assign(quantity="out.mean")))  # same steps, new quantity
    assert loaded == [1]
    with pytest.raises(ValueError, match=r"repeat rows of chunk 1 \(first: step=3, mode='train', "
                                         r"layer='block0.conv', quantity='out.var'\)"):
        keys.check(frame_to_table(train_of_step_3))


@pytest.mark.parametrize("far", [1, 10**15], ids=["dense-steps", "sparse-steps"])
def test_repeated_keys_exact_for_any_step_values(far):
    from varprobe.record.schema import frame_to_table, repeated_keys

    a = make_frame(0, steps=1)
    b = make_frame(0, steps=1).assign(step=far)
    assert repeated_keys([frame_to_table(a), frame_to_table(b)]) == {}
    c = b.iloc[[2]].assign(value=7.0)  # (far, train, block1.conv, out.var) again, another value
    assert repeated_keys([frame_to_table(a), frame_to_table(b), frame_to_table(c)]) == {
        2: (1, f"step={far}, mode='train', layer='block1.conv', quantity='out.var'")}
    assert repeated_keys([pa.concat_tables([frame_to_table(b), frame_to_table(c)])]) == {
        0: (0, f"step={far}, mode='train', layer='block1.conv', quantity='out.var'")}
