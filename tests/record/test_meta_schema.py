"""meta.json is validated on read: every malformed field is named, with its file, in one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from varprobe.record import RunFormatError, RunWriter, check_run, load_run
from varprobe.record.meta import FORMAT_VERSION, STATUSES


def write_run(path: Path, chunks: int = 3) -> None:
    with RunWriter(path, {"seed": 0}) as w:
        for i in range(chunks):
            w.append(pd.DataFrame({"step": [i], "layer": ["conv"], "depth": [0], "mode": ["train"],
                                   "module_type": ["Conv2d"], "role": ["conv"], "quantity": ["out.var"],
                                   "value": [float(i)]}))


def edit_meta(run: Path, **changes) -> Path:
    meta_path = run / "meta.json"
    meta = json.loads(meta_path.read_text())
    for k, v in changes.items():
        if v is KeyError:
            meta.pop(k)
        else:
            meta[k] = v
    meta_path.write_text(json.dumps(meta))
    return meta_path


BAD_FIELDS = [  # field, value, what the message says
    ("config", [1, 2], r"field 'config' must be an object \(the run configuration\), got list \[1, 2\]"),
    ("config", KeyError, r"field 'config' must be an object .*but it is missing"),
    ("status", None, r"field 'status' must be one of 'running', 'finished', 'collapsed', 'failed', "
                     r"'interrupted', got NoneType None"),
    ("status", "done", r"field 'status' must be one of .*got str 'done'"),
    ("format", "something-else", r"not a varprobe run's meta.json: field 'format' must be 'varprobe-run'"),
    ("format", KeyError, r"field 'format' must be 'varprobe-run', but it is missing"),
    ("format_version", "1", r"field 'format_version' must be an integer from 1 to 2, got str '1'"),
    ("format_version", True, r"field 'format_version' must be an integer"),
    ("format_version", 0, r"field 'format_version' must be an integer from 1"),
    ("chunks", -1, r"field 'chunks' must be a non-negative integer, got int -1"),
    ("chunks", 2.0, r"field 'chunks' must be a non-negative integer, got float 2.0"),
    ("rows", "10", r"field 'rows' must be a non-negative integer"),
    ("start_time", 5, r"field 'start_time' must be an ISO 8601 string, got int 5"),
    ("end_time", [], r"field 'end_time' must be an ISO 8601 string or null"),
    ("duration_s", "1s", r"field 'duration_s' must be a non-negative number or null"),
    ("versions", {"torch": 2}, r"field 'versions' must be an object of version strings"),
    ("host", "localhost", r"field 'host' must be an object"),
    ("numeric_path", "AVX2", r"field 'numeric_path' must be an object or null, got str 'AVX2'"),
    ("run_id", 7, r"field 'run_id' must be a non-empty string"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_malformed_field_is_named_with_its_file(tmp_path, field, value, message):
    run = tmp_path / "r"
    write_run(run)
    meta_path = edit_meta(run, **{field: value})
    with pytest.raises(RunFormatError, match=message) as exc:
        load_run(run)
    assert isinstance(exc.value, ValueError)
    text = str(exc.value)
    assert text.startswith(f"{meta_path}: ") and "\n" not in text
    assert exc.value.field == field and exc.value.path == str(meta_path)
    assert check_run(run) == [text]


def test_meta_that_is_not_an_object_or_not_json(tmp_path):
    run = tmp_path / "r"
    write_run(run)
    (run / "meta.json").write_text("[1, 2]")
    with pytest.raises(RunFormatError, match=r"corrupt .*meta.json: expected a JSON object, got list"):
        load_run(run)
    (run / "meta.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(RunFormatError, match=r"corrupt .*meta.json: not UTF-8"):
        load_run(run)


def test_newer_format_version_is_refused_naming_the_writer(tmp_path):
    run = tmp_path / "r"
    write_run(run)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["written_by"].startswith("varprobe ") and meta["versions"]["varprobe"]
    edit_meta(run, format_version=99, written_by="varprobe 7.1")
    with pytest.raises(RunFormatError, match=rf"'format_version' is 99, newer than this varprobe reads "
                                             rf"\(up to {FORMAT_VERSION}\); the run was written by "
                                             r"varprobe 7.1: upgrade varprobe"):
        load_run(run)
    edit_meta(run, written_by=KeyError)  # older files: the version under "versions"
    with pytest.raises(RunFormatError, match=rf"written by varprobe {meta['versions']['varprobe']}"):
        load_run(run)


def test_huge_chunk_count_does_not_hang_and_is_reported_compactly(tmp_path):
    run = tmp_path / "r"
    write_run(run, chunks=3)
    edit_meta(run, chunks=10**7)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"is missing 9999997 chunk\(s\): .*chunk-000003.parquet \.\. "
                                         r"chunk-9999999.parquet \(9999997 chunks\) \(meta.json counts "
                                         r"10000000 chunks, 3 on disk\)"):
        load_run(run)
    with pytest.warns(RuntimeWarning, match="skipped 9999997 missing"):
        partial = load_run(run, skip_corrupt=True)
    assert time.perf_counter() - t0 < 5
    assert partial.damaged and partial.frame.value.tolist() == [0.0, 1.0, 2.0]
    assert len(partial.skipped) == 1000  # listed up to a bound; the problem line counts them all
    assert partial.problems == [f"9999997 chunk(s) missing: {run / 'stats' / 'chunk-000003.parquet'} .. "
                                "chunk-9999999.parquet (9999997 chunks) (meta.json counts 10000000 "
                                "chunks, 3 on disk)"]


def test_every_status_the_reader_accepts_the_writer_can_write(tmp_path):
    for status in STATUSES[1:]:
        w = RunWriter(tmp_path / status)
        w.close(status)
        assert load_run(tmp_path / status).meta["status"] == status
    w = RunWriter(tmp_path / "x")
    with pytest.raises(ValueError, match=r"status must be a non-empty string, one of 'finished', "
                                         r"'collapsed', 'failed', 'interrupted'; got 'done'"):
        w.close("done")
    assert not w.closed  # refused before anything changed
    w.close()
