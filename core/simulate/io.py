"""Write simulated datasets and their ground truth to HDF5, and read them back.

Layout: the nested dict of a result's ``to_dict()`` becomes groups; arrays become datasets
(strings as UTF-8), scalars and short tuples become attributes. The root carries
``atomsmith_kind`` (``"image"``, ``"movie"``, ``"4d"``, ``"eels"``) and the package version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np


def _write(group: h5py.Group, key: str, value: Any) -> None:
    if value is None:
        group.attrs[key] = "None"
    elif isinstance(value, dict):
        sub = group.create_group(key)
        for k, v in value.items():
            _write(sub, str(k), v)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        sub = group.create_group(key)
        sub.attrs["__list__"] = len(value)
        for i, v in enumerate(value):
            _write(sub, str(i), v)
    elif isinstance(value, np.ndarray) and value.dtype == object:
        group.create_dataset(key, data=np.asarray([str(v) for v in value.ravel()], dtype=h5py.string_dtype()).reshape(value.shape))
    elif isinstance(value, np.ndarray):
        kw = {"compression": "gzip", "compression_opts": 4} if value.size > 4096 else {}
        group.create_dataset(key, data=value, **kw)
    elif isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        group.attrs[key] = np.asarray(value, dtype=h5py.string_dtype())
    elif isinstance(value, (tuple, list)):
        group.attrs[key] = np.asarray(value)
    elif isinstance(value, (str, int, float, bool, np.integer, np.floating, np.bool_)):
        group.attrs[key] = value
    else:
        group.attrs[key] = str(value)


def save_dataset(path: str | Path, kind: str, data: dict) -> Path:
    """Write ``data`` (a result's ``to_dict()``) to an HDF5 file tagged with ``kind``; returns the path."""
    from .. import __version__

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    with h5py.File(path, "w") as f:
        f.attrs["atomsmith_kind"] = kind
        f.attrs["atomsmith_version"] = __version__
        for k, v in data.items():
            _write(f, k, v)
    return path


def _read(obj) -> Any:
    if isinstance(obj, h5py.Dataset):
        v = obj[()]
        if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype):
            return np.asarray(obj.asstr()[()], dtype=object)
        return v
    out: dict[str, Any] = {}
    for k, v in obj.attrs.items():
        if isinstance(v, str) and v == "None":
            out[k] = None
        elif isinstance(v, np.ndarray) and v.dtype.kind == "O":
            out[k] = tuple(str(x) for x in v)
        elif isinstance(v, bytes):
            out[k] = v.decode()
        else:
            out[k] = v
    for k, v in obj.items():
        out[k] = _read(v)
    if "__list__" in out:
        n = int(out.pop("__list__"))
        return [out[str(i)] for i in range(n)]
    return out


def load_dataset(path: str | Path) -> dict:
    """Read an atomsmith HDF5 file back into a nested dict (``atomsmith_kind`` included)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset file: {path}")
    with h5py.File(path, "r") as f:
        return _read(f)
