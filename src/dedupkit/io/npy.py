"""Memory-mapped ``.npy`` files that hold no file descriptor.

``np.load(path, mmap_mode="r")`` keeps one open file descriptor per array (Python's ``mmap``
duplicates it), so a run over 10,000 shards that maps one feature file per scan task fails with
"Too many open files" under the usual ``ulimit -n`` of 1024. A mapping does not need its file
to stay open: Arrow's memory map closes the descriptor and keeps the mapping alive for as long as
an array uses it.
"""

from __future__ import annotations

import os

import numpy as np


def load_npy(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Read a ``.npy`` file, memory-mapped (read-only) without holding a file descriptor.

    Args:
        path: the ``.npy`` file.
        mmap: map the file (default); false reads it into memory.

    Returns:
        The array (read-only when mapped).

    Raises:
        OSError, ValueError: the file is missing or not a ``.npy`` file (as ``np.load``).
    """
    if not mmap:
        return np.load(path)
    import pyarrow as pa

    with open(path, "rb") as fh:
        shape, fortran, dtype, offset = npy_header(fh)
    if dtype.hasobject:
        raise ValueError(f"{path}: holds Python objects; refusing to load it")
    count = int(np.prod(shape)) if shape else 1
    if count == 0:
        return np.zeros(shape, dtype)
    with pa.memory_map(str(path), "r") as mm:
        buf = mm.read_buffer()
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data_offset)`` of the ``.npy`` file open as ``fh`` (binary,
    at its start); ``fh`` is left at the data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return shape, fortran, dtype, fh.tell()
