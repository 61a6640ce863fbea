"""Pickled data files (the CIFAR-10 python batches) read as data: nothing in them may run code.

``pickle.load`` calls whatever function a file names (a ``__reduce__`` can name ``os.system``). The
restricted unpickler here resolves only the names that plain data needs: the builtin containers and
numbers (``set``, ``frozenset``, ``bytearray``, ``complex``; dicts, lists, tuples, str, bytes, ints and
floats need no name at all) and numpy arrays, dtypes and scalars. Any other name stops the load with a
one-line ``MsrsError`` naming the file and the name; nothing from the file is called.
"""
from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import functools
import pickle
from typing import Any

from core.errors import MsrsError


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-0..2 pickles use to store bytes (``_codecs.encode(text, 'latin1')``), limited to latin-1:
    the general ``_codecs.encode`` looks codecs up by a name the file chooses."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


@functools.lru_cache(maxsize=1)
def _numpy_names() -> dict[tuple[str, str], Any]:
    import numpy as np
    try:  # numpy >= 2 keeps the implementation in numpy._core; files written by numpy 1 say numpy.core
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    names: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        names[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        names[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        names[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return names


_BUILTINS = {("builtins", n): getattr(builtins, n) for n in ("set", "frozenset", "bytearray", "complex")}


class DataUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` knows only plain-data names (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        # Python 2 names (the official CIFAR-10 files are Python 2 pickles); no Python 3 name is remapped
        if key in _compat_pickle.NAME_MAPPING:
            key = _compat_pickle.NAME_MAPPING[key]
        elif module in _compat_pickle.IMPORT_MAPPING:
            key = (_compat_pickle.IMPORT_MAPPING[module], name)
        if key == ("_codecs", "encode"):
            return _latin1_encode
        if key in _BUILTINS:
            return _BUILTINS[key]
        if key in _numpy_names():
            return _numpy_names()[key]
        raise pickle.UnpicklingError(f"it names {key[0]}.{key[1]}, which is not plain data")


def load_data_pickle(path: str, what: str, how: str, encoding: str = "latin1") -> Any:
    """Unpickle a data file with ``DataUnpickler``; any failure is a one-line MsrsError naming ``path``.

    what: the kind of file (e.g. "CIFAR-10 file"); how: what the user should do (e.g. where to get it).
    """
    try:
        with open(path, "rb") as f:
            return DataUnpickler(f, encoding=encoding).load()
    except pickle.UnpicklingError as e:
        raise MsrsError(f"refusing to load {what} {path}: {e} (data files may hold only builtin containers, "
                        f"numbers, strings, bytes and numpy arrays); {how}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeError, OSError,
            MemoryError) as e:
        raise MsrsError(f"{what} {path} is unreadable ({type(e).__name__}: {str(e)[:120]}); {how}") from None
