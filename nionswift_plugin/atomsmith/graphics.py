"""Columns as Swift graphics on a display, and Swift data <-> atomsmith arrays.

Swift graphics are costly in numbers (measured headless, nionswift 16.16: adding one takes ~2-4
ms inside a display-item transaction, and the inspector then builds a section per graphic, ~45
ms each: 600 graphics froze the test UI for 30 s). So an image with more than ``max_graphics``
columns is shown whole as the RGB overlay of :func:`atomsmith.atoms.overlay.atom_overlay_rgb`
(every column ringed in its class colour) and only its minority-class columns (dopants) get
graphics (:func:`columns_to_mark`).
"""

from __future__ import annotations

import typing

import numpy as np

GRAPHIC_ID = "atomsmith.atom"
#: length units of a calibration -> nm
LENGTH_NM = {"nm": 1.0, "Å": 0.1, "A": 0.1, "pm": 1e-3, "um": 1e3, "µm": 1e3}


def pixel_size_nm(xdata: typing.Any) -> float | None:
    """nm per pixel of a 2D Swift ``DataAndMetadata`` whose axes are calibrated in nm or Å
    (equal scales on both axes); ``None`` otherwise."""
    cals = list(getattr(xdata, "dimensional_calibrations", []) or [])
    if len(cals) != 2:
        return None
    scales = []
    for cal in cals:
        f = LENGTH_NM.get(str(cal.units or "").strip())
        if f is None or not (cal.scale and np.isfinite(cal.scale) and cal.scale > 0):
            return None
        scales.append(abs(cal.scale) * f)
    if abs(scales[0] - scales[1]) > 1e-3 * max(scales):
        return None
    return float(scales[0])


def is_partial_frame(xdata: typing.Any) -> bool:
    """True for a frame a live scan is still filling (``valid_rows`` below the frame height)."""
    md = getattr(xdata, "metadata", None) or {}
    valid = md.get("hardware_source", {}).get("valid_rows", md.get("scan", {}).get("valid_rows"))
    shape = getattr(xdata, "data_shape", None) or ()
    return valid is not None and len(shape) >= 1 and int(valid) < int(shape[0])


def image_of(xdata: typing.Any) -> np.ndarray:
    """The 2D float image of a Swift data item's data (RGB and complex data are refused)."""
    if xdata is None:
        raise ValueError("the data item holds no data")
    data = np.asarray(xdata.data)
    if data.ndim != 2:
        raise ValueError(f"atom finding needs a 2D image; this data item is {data.ndim}D with shape {data.shape}")
    if np.iscomplexobj(data):
        raise ValueError("atom finding needs a real image; this one is complex")
    return data.astype(np.float32, copy=False)


def clear_atom_graphics(display_item: typing.Any) -> int:
    """Remove the graphics atomsmith drew on a (native) display item; returns how many."""
    ours = [g for g in display_item.graphics if getattr(g, "graphic_id", None) == GRAPHIC_ID]
    for g in ours:
        display_item.remove_graphic(g).close()
    return len(ours)


def columns_to_mark(table: typing.Any, max_graphics: int) -> np.ndarray:
    """Indices of the columns to draw as graphics: all of them when there are at most
    ``max_graphics``, else those outside the most common class (dopants, substitutions), at
    most ``max_graphics``, farthest from the majority's median intensity first."""
    n = len(table)
    if n <= max_graphics:
        return np.arange(n)
    labels = np.asarray(table.label)
    major = np.bincount(labels).argmax() if n else 0
    idx = np.flatnonzero(labels != major)
    if idx.size > max_graphics:
        ref = np.median(np.asarray(table.intensity)[labels == major])
        dev = np.abs(np.asarray(table.intensity)[idx] - ref)
        idx = idx[np.argsort(dev)[::-1][:max_graphics]]
    return np.sort(idx)


def draw_atom_graphics(document_model: typing.Any, display_item: typing.Any, table: typing.Any,
                       shape: tuple[int, int], *, max_graphics: int = 150) -> int:
    """Replace atomsmith's graphics on ``display_item`` with one point per column chosen by
    :func:`columns_to_mark` (an :class:`atomsmith.AtomTable`), coloured and labelled by class,
    in one transaction. Returns the number drawn."""
    from nion.swift.model import Graphics
    from nion.utils import Geometry

    from atomsmith.atoms.overlay import class_colour_hex

    h, w = shape
    idx = columns_to_mark(table, max_graphics)
    names = tuple(getattr(table, "class_names", ()) or ())
    with document_model.begin_display_item_transaction(display_item):
        clear_atom_graphics(display_item)
        for (x, y), lab in zip(table.xy[idx], table.label[idx], strict=True):
            g = Graphics.PointGraphic()
            # Swift's fractional coordinates: pixel centre (r, c) -> ((r + 0.5) / H, (c + 0.5) / W)
            g.position = Geometry.FloatPoint((float(y) + 0.5) / h, (float(x) + 0.5) / w)
            g.graphic_id = GRAPHIC_ID
            g.stroke_color = class_colour_hex(int(lab))
            if names and 0 <= int(lab) < len(names):
                g.label = names[int(lab)]
            display_item.add_graphic(g)
    return len(idx)


def swift_rgb(rgb: np.ndarray) -> np.ndarray:
    """An (H, W, 3) RGB picture in Swift's channel order (Swift stores colour images as BGR)."""
    return np.ascontiguousarray(np.asarray(rgb)[..., ::-1])
