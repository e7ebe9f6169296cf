"""Live atom finding: a Swift computation that finds the columns of every completed scan frame.

The computation re-runs whenever its source changes; a live scan changes it on every partial
frame, which is skipped (``valid_rows`` below the frame height). ``execute`` (a worker thread)
finds, classifies and draws the columns into an RGB overlay; ``commit`` (the UI thread) only
stores the result, so the UI is never blocked by the model.
"""

from __future__ import annotations

import time
import typing

import numpy as np

from .graphics import draw_atom_graphics, image_of, is_partial_frame, pixel_size_nm, swift_rgb
from .state import STATE

COMPUTATION_ID = "atomsmith.live_find_atoms"
#: graphics on the result: every column of frames with at most this many, else the minority
#: classes only (see graphics.py for what graphics cost in Swift); the overlay's rings show all
MAX_LIVE_GRAPHICS = 60


#: live frames reuse the column classes fitted on an earlier frame of the same source (a
#: mixture fit with BIC costs ~70 ms on 4000 columns, labelling with it ~1 ms); refitted every
#: ``REFIT_EVERY`` frames, when the column count changes by a quarter, or when the classes no
#: longer describe the intensities (mean log-likelihood 2 nats below the fitting frame's)
REFIT_EVERY = 25
_class_cache: dict[typing.Any, dict] = {}


def find_columns(image: np.ndarray, px_nm: float | None, source_key: typing.Any = None) -> typing.Any:
    """The plug-in's atom finding: the current model, centre-of-mass refinement, classes (cached
    per live source when ``source_key`` is given)."""
    from atomsmith.atoms.classify import fit_column_classes
    from atomsmith.atoms.find import find_atoms

    table = find_atoms(image, pixel_size_nm=px_nm, model=STATE.model)
    if len(table) == 0:
        return table
    v = np.asarray(table.intensity, float).reshape(-1, 1)
    c = _class_cache.get(source_key) if source_key is not None else None
    if c is not None:
        c["frames"] += 1
        stale = (c["frames"] >= REFIT_EVERY or abs(len(table) - c["n"]) > 0.25 * c["n"]
                 or c["classes"].mixture.score(v) < c["score"] - 2.0)
        if not stale:
            return c["classes"].apply(table)
    classes = fit_column_classes(table)
    if source_key is not None:
        _class_cache[source_key] = {"classes": classes, "n": len(table), "frames": 0,
                                    "score": float(classes.mixture.score(v))}
    return classes.apply(table)


def _key(computation: typing.Any) -> typing.Any:
    inner = getattr(computation, "_computation", None)
    return getattr(inner, "uuid", None) or id(computation)


class LiveAtomFinding:
    """Swift computation handler (old-style API, present in every supported Swift)."""

    computation_id = COMPUTATION_ID
    label = "Atomsmith Live Atom Finding"

    def __init__(self, computation: typing.Any, **kwargs: typing.Any) -> None:
        self.computation = computation
        self.__result: dict | None = None
        self.frames_done = 0
        self.frames_skipped = 0

    def execute(self, src: typing.Any, **kwargs: typing.Any) -> None:
        self.__result = None
        xdata = src.xdata
        if xdata is None or is_partial_frame(xdata):
            self.frames_skipped += 1
            return
        from nion.data import DataAndMetadata

        from atomsmith.atoms.overlay import atom_overlay_rgb

        t0 = time.perf_counter()
        img = image_of(xdata)
        px = pixel_size_nm(xdata)
        try:
            table = find_columns(img, px, source_key=_key(self.computation))
            error = None
        except ValueError as exc:  # e.g. a blank frame: report it, keep the scan going
            table, error = None, str(exc)
        latency_ms = (time.perf_counter() - t0) * 1e3
        if table is not None:
            rgb = swift_rgb(atom_overlay_rgb(img, table.xy, table.label))
            counts = {name: int((table.label == k).sum()) for k, name in enumerate(table.class_names)}
        else:
            rgb = atom_overlay_rgb(img, np.zeros((0, 2)))
            counts = {}
        frame_md = (getattr(xdata, "metadata", None) or {}).get("hardware_source", {})
        md = {"atomsmith": {"n_columns": 0 if table is None else len(table), "class_counts": counts,
                            "latency_ms": latency_ms, "pixel_size_nm": px, "error": error,
                            "frame_index": frame_md.get("frame_index"), "computed_at": time.time(),
                            "model": "generic" if STATE.model == "generic" else str(STATE.model_path)}}
        overlay = DataAndMetadata.new_data_and_metadata(
            rgb, dimensional_calibrations=list(xdata.dimensional_calibrations)[:2], metadata=md)
        self.__result = {"overlay": overlay, "table": table, "shape": img.shape, "md": md["atomsmith"]}
        self.frames_done += 1

    def commit(self) -> None:
        res = self.__result
        if res is None:
            return
        self.computation.set_referenced_xdata("overlay", res["overlay"])
        out = self.computation.get_result("overlay")
        if out is None:
            return
        n = res["md"]["n_columns"]
        out.title = f"Atoms ({n} columns)" if res["md"]["error"] is None else "Atoms (none found)"
        from nion.swift import Facade

        document_model = Facade.get_api("~1.0", "~1.0").library._document_model
        display_item = document_model.get_display_item_for_data_item(out._data_item)
        if display_item is not None:
            table = res["table"]
            if table is not None:
                draw_atom_graphics(document_model, display_item, table, res["shape"], max_graphics=MAX_LIVE_GRAPHICS)
            else:
                from .graphics import clear_atom_graphics

                clear_atom_graphics(display_item)


def register(api: typing.Any) -> None:
    """Register the computation type with Swift (once per process; later calls replace it)."""
    api.register_computation_type(COMPUTATION_ID, LiveAtomFinding)


def attach(api: typing.Any, data_item: typing.Any) -> typing.Any:
    """Attach live atom finding to ``data_item`` (a Facade DataItem, e.g. a live scan's HAADF);
    returns the Facade computation. Its result is a new data item "Atoms (N columns)"."""
    return api.library.create_computation(
        COMPUTATION_ID, inputs={"src": {"object": data_item, "type": "data_source"}}, outputs={"overlay": None})
