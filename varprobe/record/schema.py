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
quantity   string    dictionary<int32, string>
value      float64   float64 (NaN and +-inf are stored as such, not as null)
========== ========= ======================================================

Strings come back as pandas' default string dtype (``str`` on pandas >= 3,
``object`` before), never as categoricals, so frames from different chunks and
runs concatenate without surprises.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from ..vocabulary import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, STRING_COLUMNS

__all__ = ["COLUMNS", "INT_COLUMNS", "STRING_COLUMNS", "FLOAT_COLUMNS", "DISK_SCHEMA",
           "PLAIN_SCHEMA", "frame_to_table", "table_to_frame", "empty_frame"]


_DICT = pa.dictionary(pa.int32(), pa.string())
_DISK_TYPES = {"step": pa.int64(), "depth": pa.int64(), "value": pa.float64(),
               **{c: _DICT for c in STRING_COLUMNS}}
_PLAIN_TYPES = {**_DISK_TYPES, **{c: pa.string() for c in STRING_COLUMNS}}

#: Schema of a chunk as written to disk.
DISK_SCHEMA: pa.Schema = pa.schema([(c, _DISK_TYPES[c]) for c in COLUMNS])
#: Schema of a chunk after reading (dictionaries decoded).
PLAIN_SCHEMA: pa.Schema = pa.schema([(c, _PLAIN_TYPES[c]) for c in COLUMNS])


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
        ValueError: a column is missing, unexpected, or has the wrong kind of values;
            the message names the column.
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
    return pa.Table.from_arrays(arrays, schema=DISK_SCHEMA)


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
