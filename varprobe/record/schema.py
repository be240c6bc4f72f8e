"""The fixed column schema of a run's statistics table, and its conversion to and from Arrow.

Every chunk of every run has exactly these columns, in this order:

========== ========= ======================================================
column     dtype     on disk (Parquet via Arrow)
========== ========= ======================================================
step       int64     int64
layer      string    dictionary<int32, string>
depth      int64     int64
mode       string    dictionary<int32, string>
module_type string   dictionary<int32, string>
role       string    dictionary<int32, string>
quantity   string    dictionary<int32, string>
value      float64   float64 (NaN and +-inf are stored as such, not as null)
========== ========= ======================================================

``role`` is one of :data:`varprobe.vocabulary.ROLES`, or ``""`` for rows of no layer (run format 2;
a format-1 chunk, which has no ``role``, gets it on read: :func:`add_legacy_role`).

No column holds nulls. A run holds at most one row per :data:`KEY_COLUMNS`
(step, mode, layer, quantity): a step's train and eval rows of one layer and
quantity are two rows, the same row twice is not data.

Strings come back as pandas' default string dtype (``str`` on pandas >= 3,
``object`` before), never as categoricals, so frames from different chunks and
runs concatenate without surprises.

:func:`check_table` is the one definition of a valid chunk: the writer applies it to
every chunk it writes (through :func:`frame_to_table`), the reader to every chunk it
reads; :func:`repeated_keys` (reader) and :class:`RowKeys` (writer) extend the key check
across a run's chunks.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..vocabulary import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, LEGACY_ROLES, STRING_COLUMNS

__all__ = ["COLUMNS", "INT_COLUMNS", "STRING_COLUMNS", "FLOAT_COLUMNS", "KEY_COLUMNS", "DISK_SCHEMA",
           "PLAIN_SCHEMA", "check_table", "add_legacy_role", "repeated_keys", "RowKeys", "frame_to_table",
           "table_to_frame", "empty_frame"]

#: The columns that identify a row: a run holds at most one row per combination.
KEY_COLUMNS: tuple[str, ...] = ("step", "mode", "layer", "quantity")


_DICT = pa.dictionary(pa.int32(), pa.string())
_DISK_TYPES = {"step": pa.int64(), "depth": pa.int64(), "value": pa.float64(),
               **{c: _DICT for c in STRING_COLUMNS}}
_PLAIN_TYPES = {**_DISK_TYPES, **{c: pa.string() for c in STRING_COLUMNS}}

#: Schema of a chunk as written to disk.
DISK_SCHEMA: pa.Schema = pa.schema([(c, _DISK_TYPES[c]) for c in COLUMNS])
#: Schema of a chunk after reading (dictionaries decoded).
PLAIN_SCHEMA: pa.Schema = pa.schema([(c, _PLAIN_TYPES[c]) for c in COLUMNS])


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _kind_problem(name: str, t: pa.DataType) -> str | None:
    """Why a column of Arrow type ``t`` cannot be column ``name`` of a chunk, or None."""
    if name in INT_COLUMNS:
        ok, must = pa.types.is_integer(t), "integers (int64)"
    elif name in FLOAT_COLUMNS:
        ok, must = pa.types.is_floating(t) or pa.types.is_integer(t), "numbers (float64)"
    else:
        ok = _is_text(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type))
        must = "strings"
    return None if ok else f"column {name!r} must hold {must}, got {t}"


def _describe_key(row: dict[str, Any]) -> str:
    return ", ".join(f"{c}={row[c]!r}" for c in KEY_COLUMNS)


def check_table(table: pa.Table, *, unique: bool = True) -> pa.Table:
    """Check a chunk against the run schema and return it with :data:`DISK_SCHEMA`.

    A chunk has exactly the columns of :data:`COLUMNS`; ``step`` and ``depth`` hold integers,
    ``value`` numbers (integers are converted exactly or refused), the other columns strings
    (plain or dictionary-encoded); no column holds a null (a NaN ``value`` is a float, not a
    null); and with ``unique`` no two rows share a :data:`KEY_COLUMNS` key.

    Raises:
        ValueError: one line naming the column (and the first bad row or key) and what it must be.
    """
    names = table.column_names
    if sorted(names) != sorted(COLUMNS):
        raise ValueError(f"columns {names} do not match the run schema {list(COLUMNS)}")
    for name in COLUMNS:
        column = table.column(name)
        problem = _kind_problem(name, column.type)
        if problem is not None:
            raise ValueError(problem)
        if column.null_count:
            first = pc.index(pc.is_null(column), True).as_py()
            what = "; NaN is stored as NaN" if name in FLOAT_COLUMNS else ""
            raise ValueError(f"column {name!r} has {column.null_count} null value(s) (first at row "
                             f"{first}); a run's columns hold no nulls{what}")
    try:
        arrays = [table.column(c).cast(DISK_SCHEMA.field(c).type) for c in COLUMNS]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"a column cannot be stored as the run schema {DISK_SCHEMA.types}: "
                         f"{exc}") from None
    out = pa.Table.from_arrays(arrays, schema=DISK_SCHEMA)
    if unique:
        repeats = repeated_keys([out])
        if repeats:
            raise ValueError(f"two rows share the key {repeats[0][1]}; a run holds one row per "
                             f"{', '.join(KEY_COLUMNS)}")
    return out


def add_legacy_role(table: pa.Table) -> pa.Table:
    """A chunk of run format 1 (the columns of :data:`COLUMNS` but ``role``) with its ``role``
    column, from the exact table :data:`varprobe.vocabulary.LEGACY_ROLES` of ``module_type`` names:
    ``"block"`` for ``block.out.*`` and ``branch.out.*`` rows, ``""`` for rows of layer ``""``,
    ``"other"`` for a type the table does not name. A table that has ``role`` is returned as is;
    one that lacks a column ``role`` is computed from is returned as is too (:func:`check_table`
    then names what is missing)."""
    names = table.column_names
    if "role" in names or not {"layer", "module_type", "quantity"} <= set(names):
        return table
    layer = table.column("layer").to_pylist()
    kind = table.column("module_type").to_pylist()
    quantity = table.column("quantity").to_pylist()
    role = ["" if n == "" else "block" if isinstance(q, str) and q.startswith(("block.out.", "branch.out."))
            else LEGACY_ROLES.get(k, "other") for n, k, q in zip(layer, kind, quantity)]
    return table.add_column(names.index("module_type") + 1, "role", pa.array(role, pa.string()))


def _dense(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes 0 .. card - 1 for the int64 ``values``, equal exactly where the values are, and card."""
    if len(values) == 0:
        return values, 0
    low, span = int(values.min()), int(values.max()) - int(values.min()) + 1
    if span <= 4 * len(values):
        return values - low, span
    uniques, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), len(uniques)


def _key_codes(tables: Sequence[pa.Table]) -> tuple[np.ndarray, int]:
    """One int64 per row of the concatenated ``tables`` (DISK_SCHEMA, no nulls), equal for two rows
    exactly when their :data:`KEY_COLUMNS` are equal, and a bound: every code is below it."""
    codes, bound = np.zeros(sum(t.num_rows for t in tables), np.int64), 1
    for name in KEY_COLUMNS:
        if name not in STRING_COLUMNS:
            column, card = _dense(np.concatenate([np.zeros(0, np.int64)]
                                                 + [t.column(name).to_numpy() for t in tables]))
        else:  # dictionary indices mapped onto one code per distinct string
            seen: dict[str, int] = {}
            parts = [np.zeros(0, np.int64)]
            for t in tables:
                for chunk in t.column(name).chunks:
                    lut = np.array([seen.setdefault(v, len(seen)) for v in chunk.dictionary.to_pylist()],
                                   np.int64)
                    parts.append(lut[chunk.indices.to_numpy(zero_copy_only=False)])
            column, card = np.concatenate(parts), len(seen)
        if bound * max(card, 1) >= 2**62:  # keep the product exact: renumber the codes so far
            codes, bound = _dense(codes)
        codes, bound = codes * max(card, 1) + column, bound * max(card, 1)
    return codes, bound


def _all_distinct(codes: np.ndarray, bound: int) -> bool:
    if bound <= 8 * len(codes) + (1 << 20):
        seen = np.zeros(bound, dtype=bool)
        seen[codes] = True
        return int(np.count_nonzero(seen)) == len(codes)
    ordered = np.sort(codes)
    return not bool((ordered[1:] == ordered[:-1]).any())


def repeated_keys(tables: Sequence[pa.Table]) -> dict[int, tuple[int, str]]:
    """The tables (DISK_SCHEMA, as :func:`check_table` returns them) that hold a row whose
    :data:`KEY_COLUMNS` key is in an earlier row: of an earlier table, or of the same table.

    Returns:
        ``{index: (index of the table holding the key first, the first repeated key)}``, sorted;
        the two indices are equal for a key repeated within one table. ``{}`` when every key is
        unique (one integer code per row, marked in a table or sorted).
    """
    codes, bound = _key_codes(tables)
    if _all_distinct(codes, bound):
        return {}
    owner = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    first = pd.Series(owner).groupby(codes).transform("first").to_numpy()
    repeated = np.flatnonzero(pd.Series(codes).duplicated(keep="first").to_numpy())
    keys = pa.concat_tables([t.select(list(KEY_COLUMNS)) for t in tables])
    out: dict[int, tuple[int, str]] = {}
    for row in repeated:
        i = int(owner[row])
        if i not in out:
            out[i] = (int(first[row]), _describe_key(keys.slice(int(row), 1).to_pylist()[0]))
    return dict(sorted(out.items()))


class RowKeys:
    """The (step, mode) pairs of a run's chunks so far, for a writer to refuse a chunk that repeats
    a row key of an earlier chunk (what the reader refuses) without keeping any row in memory.

    Only a chunk that shares a (step, mode) pair with earlier chunks is compared with them, on
    their key columns loaded by ``load(index)`` (a probe never writes a step of one mode in two
    chunks, so it never pays for that).
    """

    def __init__(self, load: Callable[[int], pa.Table]) -> None:
        self._load = load
        self._where: dict[tuple[int, str], list[int]] = {}
        self._count = 0

    @staticmethod
    def _pairs(table: pa.Table) -> list[tuple[int, str]]:
        frame = pd.DataFrame({"step": table.column("step").to_numpy(),
                              "mode": table.column("mode").to_numpy(zero_copy_only=False)})
        return list(frame.drop_duplicates().itertuples(index=False, name=None))

    def check(self, table: pa.Table) -> None:
        """Raise ValueError (naming the earlier chunk's number and the first repeated key) if
        ``table`` repeats a row key of a chunk added before."""
        earlier = sorted({i for pair in self._pairs(table) for i in self._where.get(pair, ())})
        if earlier:
            repeats = repeated_keys([self._load(i) for i in earlier] + [table])
            if len(earlier) in repeats:  # the earlier chunks were refused repeats of their own
                j, key = repeats[len(earlier)]
                raise ValueError(f"the rows repeat rows of chunk {earlier[j]} (first: {key}); a run "
                                 f"holds one row per {', '.join(KEY_COLUMNS)}")

    def add(self, table: pa.Table) -> None:
        """Count ``table`` as the next chunk (number 0, 1, ...)."""
        for pair in self._pairs(table):
            self._where.setdefault(pair, []).append(self._count)
        self._count += 1


def _int_column(frame: pd.DataFrame, name: str) -> pa.Array:
    s = frame[name]
    if not pd.api.types.is_integer_dtype(s):
        raise ValueError(f"column {name!r} must have an integer dtype, got {s.dtype}")
    if s.isna().any():
        raise ValueError(f"column {name!r} has missing values")
    return pa.array(s.to_numpy(dtype=np.int64), type=pa.int64())


def _float_column(frame: pd.DataFrame, name: str) -> pa.Array:
    s = frame[name]
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        raise ValueError(f"column {name!r} must have a numeric dtype, got {s.dtype}")
    # From a numpy array, NaN stays NaN (a recorded non-finite value is data, not "missing").
    return pa.array(s.to_numpy(dtype=np.float64, na_value=np.nan), type=pa.float64())


def _string_column(frame: pd.DataFrame, name: str) -> pa.Array:
    s = frame[name]
    if s.isna().any():
        bad = s[s.isna()].index[0]
        raise ValueError(f"column {name!r} has missing values (first at index {bad!r}); "
                         "use '' for step-level rows")
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    try:
        arr = pa.array(s, from_pandas=True)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise pa.ArrowTypeError(f"got Arrow type {arr.type}")
        arr = arr.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"column {name!r} must hold strings ({exc})") from None
    return arr.dictionary_encode()


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """Convert a long-format statistics frame to an Arrow table with :data:`DISK_SCHEMA`.

    Args:
        frame: A DataFrame with exactly the columns of :data:`COLUMNS` (any order).
            ``step``/``depth`` must be integers without missing values, ``value`` numeric
            (NaN/inf allowed), the string columns strings without missing values.

    Returns:
        The table, columns in schema order, string columns dictionary-encoded.

    Raises:
        ValueError: a column is missing, unexpected, or has the wrong kind of values (the
            message names the column), or two rows share a key (:func:`check_table`; the
            message names the key).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in COLUMNS]
    if missing or extra:
        raise ValueError(f"frame does not match the run schema {list(COLUMNS)}: "
                         f"missing columns {missing}, unexpected columns {extra}")
    if frame.columns.has_duplicates:
        raise ValueError(f"frame has duplicate columns: {list(frame.columns)}")
    arrays = []
    for c in COLUMNS:
        if c in INT_COLUMNS:
            arrays.append(_int_column(frame, c))
        elif c in FLOAT_COLUMNS:
            arrays.append(_float_column(frame, c))
        else:
            arrays.append(_string_column(frame, c))
    return check_table(pa.Table.from_arrays(arrays, schema=DISK_SCHEMA))


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """Convert a table read from chunks (or a concatenation of them) to a pandas frame.

    Args:
        table: A table whose columns are :data:`COLUMNS`, strings plain or dictionary-encoded.

    Returns:
        A frame with a fresh RangeIndex: ``step``/``depth`` int64, ``value`` float64,
        string columns in pandas' default string dtype.
    """
    return table.select(list(COLUMNS)).cast(PLAIN_SCHEMA).to_pandas()


def empty_frame() -> pd.DataFrame:
    """An empty frame with the run schema's columns and dtypes."""
    return table_to_frame(PLAIN_SCHEMA.empty_table())
