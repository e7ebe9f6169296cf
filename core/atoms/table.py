"""AtomTable: found atomic columns, the result of every atom finder."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class AtomTable:
    """Atomic columns found in one image.

    Attributes:
        xy: (N, 2) float positions (x, y) in pixels, x = column index, y = row index.
        intensity: (N,) integrated column intensity (image units x pixels) above the local
            background, or the peak value where no integration was done.
        label: (N,) int column class (0 when not classified); see ``class_names``.
        confidence: (N,) detection confidence in [0, 1].
        class_names: names of the labels, e.g. ``("C", "Si")``; empty when unclassified.
        pixel_size_nm: calibration (nm per pixel) or ``None``.
        metadata: how the table was made (method, parameters).
        quality: the finder's quality report (:class:`~atomsmith.atoms.quality.FindingQuality`:
            measured period and how, spacing, neighbours, agreement of two finders, ``ok``),
            or ``None`` for a table not made by a finder.
    """

    xy: np.ndarray
    intensity: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    class_names: tuple[str, ...] = ()
    pixel_size_nm: float | None = None
    metadata: dict = field(default_factory=dict)
    quality: object | None = None

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy, dtype=float).reshape(-1, 2)
        object.__setattr__(self, "xy", xy)
        n = len(xy)
        for name, dtype in (("intensity", float), ("label", int), ("confidence", float)):
            arr = np.asarray(getattr(self, name), dtype=dtype).reshape(-1)
            if arr.size == 1 and n != 1:
                arr = np.full(n, arr[0], dtype=dtype)
            if len(arr) != n:
                raise ValueError(f"AtomTable.{name} has {len(arr)} entries; expected {n}")
            object.__setattr__(self, name, arr)

    @classmethod
    def empty(cls, pixel_size_nm: float | None = None, **metadata) -> AtomTable:
        """A table with no atoms."""
        return cls(np.zeros((0, 2)), np.zeros(0), np.zeros(0, int), np.zeros(0),
                   pixel_size_nm=pixel_size_nm, metadata=dict(metadata))

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def x(self) -> np.ndarray:
        """(N,) column coordinate in pixels."""
        return self.xy[:, 0]

    @property
    def y(self) -> np.ndarray:
        """(N,) row coordinate in pixels."""
        return self.xy[:, 1]

    @property
    def xy_nm(self) -> np.ndarray:
        """(N, 2) positions in nm from pixel (0, 0); needs ``pixel_size_nm``."""
        if self.pixel_size_nm is None:
            raise ValueError("this AtomTable has no pixel_size_nm calibration")
        return self.xy * self.pixel_size_nm

    @property
    def label_names(self) -> np.ndarray:
        """(N,) class name of each column ('' when unclassified)."""
        if not self.class_names:
            return np.full(len(self), "", dtype=object)
        return np.asarray(self.class_names, dtype=object)[self.label]

    def select(self, mask: np.ndarray) -> AtomTable:
        """Rows where ``mask`` is True (or the given indices)."""
        return AtomTable(self.xy[mask], self.intensity[mask], self.label[mask], self.confidence[mask],
                         self.class_names, self.pixel_size_nm, dict(self.metadata), self.quality)

    def replace(self, **changes) -> AtomTable:
        """A copy with fields replaced."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(changes)
        return AtomTable(**d)

    def to_dict(self) -> dict:
        """Arrays and metadata as a dict (``x``, ``y`` split out for tables)."""
        return {"x": self.xy[:, 0], "y": self.xy[:, 1], "intensity": self.intensity, "label": self.label,
                "label_name": self.label_names, "confidence": self.confidence,
                "class_names": self.class_names, "pixel_size_nm": self.pixel_size_nm,
                "metadata": self.metadata,
                "quality": self.quality.to_dict() if self.quality is not None else None}

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per column: x, y (px), [x_nm, y_nm], intensity, label, label_name, confidence."""
        path = Path(path)
        cal = self.pixel_size_nm is not None
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["x", "y"] + (["x_nm", "y_nm"] if cal else []) +
                       ["intensity", "label", "label_name", "confidence"])
            names = self.label_names
            for i in range(len(self)):
                row = [f"{self.xy[i, 0]:.4f}", f"{self.xy[i, 1]:.4f}"]
                if cal:
                    row += [f"{self.xy[i, 0] * self.pixel_size_nm:.5f}", f"{self.xy[i, 1] * self.pixel_size_nm:.5f}"]
                row += [f"{self.intensity[i]:.6g}", int(self.label[i]), names[i], f"{self.confidence[i]:.4f}"]
                w.writerow(row)
        return path
