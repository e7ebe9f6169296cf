"""Live atom finding: a Swift computation that finds the columns of every completed scan frame.

A live scan writes its data item on every partial frame; partial frames (``valid_rows`` below
the frame height) are skipped. Each completed frame is taken the moment the device completes it
and analysed (find, classify, draw the columns into an RGB overlay) in a worker thread of its own
(:class:`LiveSource`); the result goes into the computation's result data item on the UI thread,
which does no more than store it, so the UI is never blocked by the model.

A live data item's pixels are not a snapshot (nionswift-instrumentation 23.6, nionswift 16.16):
the hardware source's data channel writes the next frame's first partial rows *in place* into
the array the data item holds for the frame just completed, before the data item's metadata says
so. A copy taken from the data item some time after the frame completed (a computation's
``execute`` runs later, on a thread of its own) can hold the top of frame N+1 under frame N's
metadata. So frames of a playing device are taken from the hardware source's
``data_channel_updated_event`` on the acquisition thread (what instrumentation's own
``ViewTaskBuffer`` does), where the completed frame cannot change while it is copied, and a frame
is known by its scan id and frame index, never by its pixels (see :func:`_frame_id`).

What is shown: a frame whose result passes its checks (the finder's quality report, at least a
quarter of the last good frame's columns, no error) replaces the result ("Atoms (N columns)").
Any other frame is skipped: the last good result stays on screen and the title says why ("Atoms
(362 columns; frame 17 skipped: <reason>)"); the metadata counts good, skipped and ignored
frames. A blank frame (constant: a blanked beam; or ending in empty rows: an aborted scan) is
ignored unanalysed. The lattice scale is reused from a good frame only (see ``_period_cache``).
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
import typing

import numpy as np

from .graphics import draw_atom_graphics, image_of, is_partial_frame, pixel_size_nm, swift_rgb
from .state import STATE

COMPUTATION_ID = "atomsmith.live_find_atoms"
log = logging.getLogger(__name__)
#: graphics on the result: every column of frames with at most this many, else the minority
#: classes only (see graphics.py for what graphics cost in Swift); the overlay's rings show all
MAX_LIVE_GRAPHICS = 60


#: live frames reuse the column classes fitted on an earlier frame of the same source (a
#: mixture fit with BIC costs ~70 ms on 4000 columns, labelling with it ~1 ms); refitted every
#: ``REFIT_EVERY`` frames, when the column count changes by a quarter, or when the classes no
#: longer describe the intensities (mean log-likelihood 2 nats below the fitting frame's)
REFIT_EVERY = 25
_class_cache: dict[typing.Any, dict] = {}


#: live frames reuse the lattice scale of an earlier good frame of the same source with the same
#: shape and calibration (measuring it costs ~13 ms of a ~140 ms 512^2 find); re-measured every
#: ``REMEASURE_PERIOD_EVERY`` frames, and at once when a frame found with it fails its checks
REMEASURE_PERIOD_EVERY = 10
_period_cache: dict[typing.Any, dict] = {}
#: a period is cached only when it spans an atomic lattice period (nm) on a calibrated frame
PLAUSIBLE_PERIOD_NM = (0.1, 2.0)
#: a frame found with the cached period whose column count falls below this fraction of the
#: count the period was cached with is re-measured (a wrong scale finds a handful of columns
#: that can pass the checks: "Atoms (7 columns)" on a frame of 362)
RETRY_BELOW_FRACTION = 0.5
#: a frame with fewer columns than this fraction of the last good frame's (same shape and
#: calibration) is not shown; a change that lasts ``ACCEPT_CHANGE_AFTER`` frames is accepted
MIN_COLUMN_FRACTION = 0.25
ACCEPT_CHANGE_AFTER = 3


def _quality_ok(table: typing.Any) -> bool:
    q = getattr(table, "quality", None)
    return q is None or bool(q.ok)


def first_problem(table: typing.Any) -> str | None:
    """The first problem of a table's quality report (None when it has none)."""
    q = getattr(table, "quality", None)
    if q is None or q.ok:
        return None
    return q.problems[0] if q.problems else "the result failed its quality check"


def scale_period_px(table: typing.Any, shape: tuple[int, int]) -> float | None:
    """The period (px) that, passed as ``period_px``, makes the finder work at the scale it used
    for ``table`` (``metadata["scale"]``): the measured period when that gives the same factor,
    else ``MODEL_PERIOD_PX / factor`` (the scale may have been set by the columns' spacing, not
    by the spectrum's period). None when the scale is not a usable number."""
    from atomsmith.atoms.scale import check_period, choose_scale
    from atomsmith.atoms.training_data import MODEL_PERIOD_PX

    scale = (getattr(table, "metadata", None) or {}).get("scale") or {}
    try:
        factor = float(scale.get("factor"))
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(factor) and factor > 0):
        return None
    candidates = []
    try:
        measured = float(scale.get("period_px"))
    except (TypeError, ValueError):
        measured = float("nan")
    if np.isfinite(measured) and measured > 0:
        candidates.append(measured)
    candidates.append(float(MODEL_PERIOD_PX / factor))
    for p in candidates:
        try:
            p = check_period(p, shape)
        except ValueError:
            continue
        if p is not None and abs(choose_scale(np.zeros((1, 1)), period_px=p).factor - factor) <= 1e-6 * factor:
            return p
    try:  # (a factor inside the training band but not 1: 12 / factor brings the image to the band)
        return check_period(candidates[-1], shape)
    except ValueError:
        return None


def plausible_period(period_px: float | None, px_nm: float | None) -> bool:
    """A finite period (px) that, on a calibrated frame, spans an atomic lattice period."""
    if period_px is None or not np.isfinite(period_px) or period_px <= 0:
        return False
    if px_nm is None:
        return True
    lo, hi = PLAUSIBLE_PERIOD_NM
    return lo <= period_px * px_nm <= hi


def find_columns(image: np.ndarray, px_nm: float | None, source_key: typing.Any = None) -> typing.Any:
    """The plug-in's atom finding: the current model, centre-of-mass refinement, classes (cached
    per live source when ``source_key`` is given, as is the lattice scale).

    With ``source_key`` (live): the scale of the source's last good frame is reused (see
    ``_period_cache``); a frame found with it that fails its quality check, or finds far fewer
    columns, is found again with the scale measured on it. A scale is cached only from a
    result whose quality is ok, finite and (calibrated) plausible. A table that fails its
    checks is returned unclassified (it is not shown) and changes no cache. The table's
    ``metadata["live"]`` says which period was used and whether the frame was re-measured.
    """
    import warnings

    from atomsmith.atoms import AtomFindingWarning
    from atomsmith.atoms.classify import fit_column_classes
    from atomsmith.atoms.find import find_atoms

    # the quality report travels with the table; the warning would be printed once per frame
    warnings.filterwarnings("ignore", category=AtomFindingWarning, module=__name__)

    period_px = None
    geometry = (image.shape, px_nm, str(STATE.model_path))
    p = _period_cache.get(source_key) if source_key is not None else None
    if p is not None and p["geometry"] == geometry and p["frames"] < REMEASURE_PERIOD_EVERY:
        period_px = p["period_px"]
        p["frames"] += 1
    table = find_atoms(image, pixel_size_nm=px_nm, model=STATE.model, period_px=period_px)
    info = {"period_px": period_px, "period_from": "cache" if period_px is not None else "measured",
            "retried": False, "cached": False}
    if period_px is not None and (not _quality_ok(table) or len(table) < RETRY_BELOW_FRACTION * p["n_columns"]):
        # the cached scale does not fit this frame: forget it and measure it on this frame
        _period_cache.pop(source_key, None)
        info["retry_reason"] = first_problem(table) or f"{len(table)} columns (cached with {p['n_columns']})"
        period_px = None
        table = find_atoms(image, pixel_size_nm=px_nm, model=STATE.model, period_px=None)
        info.update(period_px=None, period_from="measured", retried=True)
    ok = _quality_ok(table) and len(table) > 0
    if source_key is not None and period_px is None and ok:
        eff = scale_period_px(table, image.shape)
        if plausible_period(eff, px_nm):
            _period_cache[source_key] = {"geometry": geometry, "period_px": float(eff), "frames": 0,
                                         "n_columns": len(table)}
            info["cached"] = True
    table = table.replace(metadata={**table.metadata, "live": info})
    if len(table) == 0 or (source_key is not None and not ok):
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


def blank_frame_reason(image: np.ndarray) -> str | None:
    """Why a frame holds no image (None when it does): constant (a blanked beam, an aborted
    scan's empty frame) or ending in empty rows (a scan aborted part-way: at least 5 % of the
    rows, and at least 2, exactly zero at the bottom)."""
    img = np.asarray(image)
    finite = np.isfinite(img)
    if not finite.any():
        return "no finite pixel"
    lo, hi = float(np.min(img, where=finite, initial=np.inf)), float(np.max(img, where=finite, initial=-np.inf))
    if hi == lo:
        return f"a constant frame ({lo:g})"
    rows = np.flatnonzero(np.any(img != 0, axis=1))
    empty = img.shape[0] - 1 - int(rows[-1]) if rows.size else img.shape[0]
    if empty >= max(2, 0.05 * img.shape[0]):
        return f"the last {empty} rows are empty (an aborted scan)"
    return None


def _is_blank(xdata: typing.Any) -> bool:
    """A real 2D frame that holds no image (:func:`blank_frame_reason`)."""
    data = np.asarray(xdata.data)
    return data.ndim == 2 and not np.iscomplexobj(data) and blank_frame_reason(data) is not None


def _with_metadata(xdata: typing.Any, metadata: dict) -> typing.Any:
    """``xdata`` (its data and calibrations) with ``metadata``."""
    from nion.data import DataAndMetadata

    return DataAndMetadata.new_data_and_metadata(
        xdata.data, dimensional_calibrations=list(xdata.dimensional_calibrations), metadata=metadata)


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _json_safe(value: typing.Any) -> typing.Any:
    """NaN/inf -> None, numpy scalars -> Python (Swift's metadata must be JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def quality_dict(table: typing.Any) -> dict | None:
    """A table's quality report as JSON-safe metadata (None without one)."""
    q = getattr(table, "quality", None)
    return None if q is None else _json_safe(q.to_dict())


def analyse_frame(xdata: typing.Any, source_key: typing.Any = None, reference: dict | None = None) -> dict:
    """Find, classify and draw the columns of one complete frame (any thread).

    Returns a dict: ``problem`` (None for a good frame, else why it is not shown: its first
    quality problem, the error it raised, or a column count far below ``reference``'s, the last
    good frame of the source: ``{"geometry": (shape, nm/px), "n_columns": ...}``), ``md``
    (the ``atomsmith`` metadata), ``table``, ``shape``, and for a good frame ``overlay`` (RGB in
    Swift's order, the frame's calibrations, ``md`` as metadata; None otherwise).
    """
    from nion.data import DataAndMetadata

    from atomsmith.atoms.overlay import atom_overlay_rgb

    t0 = time.perf_counter()
    img = image_of(xdata)
    px = pixel_size_nm(xdata)
    try:
        table = find_columns(img, px, source_key=source_key)
        problem = error = None
    except Exception as exc:  # noqa: BLE001  (any failure skips the frame; the scan goes on)
        if not isinstance(exc, ValueError):
            log.exception("atomsmith live: finding the columns of a frame")
        table, error = None, f"{type(exc).__name__}: {exc}"
        problem = error
    find_ms = (time.perf_counter() - t0) * 1e3
    count_drop = False
    if table is not None:
        problem = first_problem(table)
        if problem is None and len(table) == 0:
            problem = "no columns found"
        if (problem is None and reference is not None and reference.get("geometry") == (img.shape, px)
                and len(table) < MIN_COLUMN_FRACTION * reference["n_columns"]):
            problem = (f"{len(table)} columns where frame {reference.get('frame_label', '?')} had "
                       f"{reference['n_columns']}")
            count_drop = True
    frame_md = (getattr(xdata, "metadata", None) or {}).get("hardware_source", {})
    good = problem is None
    counts = ({name: int((table.label == k).sum()) for k, name in enumerate(table.class_names)}
              if good else {})
    live_info = _json_safe((table.metadata.get("live") if table is not None else None) or {})
    md = {"n_columns": 0 if table is None else len(table), "class_counts": counts,
          "latency_ms": find_ms, "pixel_size_nm": px, "error": error, "problem": problem,
          "quality": quality_dict(table), "period": live_info,
          "frame_index": frame_md.get("frame_index"), "computed_at": time.time(),
          "model": "generic" if STATE.model == "generic" else str(STATE.model_path)}
    overlay = None
    if good:
        rgb = swift_rgb(atom_overlay_rgb(img, table.xy, table.label))
        md["analysis_ms"] = (time.perf_counter() - t0) * 1e3
        overlay = DataAndMetadata.new_data_and_metadata(
            rgb, dimensional_calibrations=list(xdata.dimensional_calibrations)[:2], metadata={"atomsmith": md})
    else:
        md["analysis_ms"] = (time.perf_counter() - t0) * 1e3
    return {"overlay": overlay, "table": table, "shape": img.shape, "md": md, "problem": problem,
            "count_drop": count_drop, "geometry": (img.shape, px), "frame": xdata}


def _frame_id(xdata: typing.Any) -> tuple:
    """A frame's identity. A device's frame is its hardware source, channel, scan id and frame
    index (instrumentation gives every frame of a continuous scan a scan id of its own; a camera
    frame without one adds its timestamp): the same frame read twice is the same frame even if
    its pixels were overwritten in between. Any other image is its timestamp, shape and pixels."""
    md = getattr(xdata, "metadata", None) or {}
    hw = md.get("hardware_source") or {}
    shape = tuple(getattr(xdata, "data_shape", None) or np.shape(xdata.data))
    if hw.get("frame_index") is not None:
        scan_id = (md.get("scan") or {}).get("scan_id")
        return ("device", hw.get("hardware_source_id"), hw.get("channel_id"), scan_id, hw.get("frame_index"),
                shape, None if scan_id else str(getattr(xdata, "timestamp", "")))
    data = np.asarray(xdata.data)
    sample = data.reshape(-1)[:: max(1, data.size // 4096)]  # a few thousand pixels identify an image
    return ("image", str(getattr(xdata, "timestamp", "")), shape, hash(sample.tobytes()))


class LiveSource:
    """The live analysis of one source data item: catches every completed frame the moment it is
    complete, analyses the newest one in its own worker thread and hands the result to Swift's UI
    thread, which stores it in the computation's result.

    Frames come from the hardware source that feeds the data item while it plays (its
    ``data_channel_updated_event``, state ``"complete"``, copied on the acquisition thread; see
    the module's notes on why the data item's own pixels are not read then), and from the data
    item (its ``data_changed_event`` and the computation's ``execute``) otherwise: a static image,
    or the last frame of a stopped scan. Every frame is analysed at most once (``analysed`` keeps
    the identities of the recent ones).

    Why not inside the computation's ``execute``: Swift waits 0.1 s after every run of a
    computation (``DocumentModel.run_computation``), and while it waits a live scan may already
    have overwritten a completed frame with the next one's partial data; both cost frames at
    512^2 / 1 us. Here a frame is taken as soon as it is complete and the only limit is the
    analysis time. A frame that completes while the worker is busy waits; if a newer one completes
    first, the older is dropped (counted in ``dropped``). The worker ends when the computation is
    deleted or after ``idle_s`` without frames (the next frame starts a new one).
    """

    idle_s = 30.0

    def __init__(self, key: typing.Any, computation: typing.Any, data_item: typing.Any) -> None:
        self.key = key
        self.computation = computation  # the Facade computation (its result is written on the UI thread)
        self.data_item = data_item  # the native source DataItem
        self.cond = threading.Condition()
        self.pending: tuple[tuple, typing.Any] | None = None  # (frame id, frame) waiting for the worker
        self.submitted: set[tuple] = set()
        self.thread: threading.Thread | None = None
        self.done = self.dropped = 0
        #: frames ignored unanalysed (blank: a blanked beam, an aborted scan), and, of the
        #: analysed ones (``done``), those shown and those skipped (the last good result stays)
        self.ignored = self.good = self.skipped = 0
        #: the last good frame: {"geometry", "n_columns", "frame_label", "table"} (worker thread)
        self.last_good: dict | None = None
        #: why the last frame was not shown: {"frame_label", "reason"} (None after a good frame)
        self.last_skip: dict | None = None
        self._count_drops = 0  # consecutive frames skipped for their column count alone
        self.analysed: collections.deque[tuple] = collections.deque(maxlen=1000)  # frame ids, oldest first
        self.closed = False
        self._analysing = False
        self.hardware_source: typing.Any = None
        self.hardware_source_listener: typing.Any = None
        self.listener = data_item.data_changed_event.listen(self._data_changed)
        try:
            self._listen_to_hardware_source()
        except Exception:  # noqa: BLE001  (no device: the data item's frames are used)
            log.exception("atomsmith live: following the data item's hardware source")

    # ------------------------------------------------------------------ frames from the device
    def _listen_to_hardware_source(self) -> None:
        """Listen to the hardware source whose frames the data item shows, if it has one."""
        xdata = self.data_item.xdata
        hw = ((getattr(xdata, "metadata", None) or {}).get("hardware_source") or {}) if xdata is not None else {}
        hs_id = hw.get("hardware_source_id")
        if not hs_id:
            return
        from nion.instrumentation import HardwareSource

        hs = HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id(hs_id)
        event = getattr(hs, "data_channel_updated_event", None)
        if event is None:
            return
        self.hardware_source = hs
        self.hardware_source_listener = event.listen(self._device_data)

    def _device_data(self, args: typing.Any, xdata: typing.Any) -> None:
        """Acquisition thread: a data channel of the hardware source was updated. A completed frame
        of the channel shown by this data item is copied now, before the device writes the next."""
        try:
            if self.closed or getattr(args, "state", None) != "complete":
                return
            reference = _document_model().get_data_item_channel_reference(
                self.hardware_source.hardware_source_id, args.data_channel_id)
            if reference.data_item is not self.data_item:
                return
            self.submit(xdata, from_device=True)
        except Exception:  # noqa: BLE001  (never disturb the acquisition)
            log.exception("atomsmith live: reading a frame")

    def _device_delivers(self, xdata: typing.Any) -> bool:
        """Whether the hardware source delivers this data item's frame itself (it is playing and
        the frame is one of its own): then the data item's pixels, which the device overwrites
        in place, are not read."""
        hs = self.hardware_source
        if hs is None or self.hardware_source_listener is None or not getattr(hs, "is_playing", False):
            return False
        hw = (getattr(xdata, "metadata", None) or {}).get("hardware_source") or {}
        return hw.get("hardware_source_id") == hs.hardware_source_id

    # ------------------------------------------------------------------ frames from the data item
    def _data_changed(self, *args: typing.Any) -> None:
        try:
            self.submit(self.data_item.xdata)
        except Exception:  # noqa: BLE001  (never disturb the acquisition)
            log.exception("atomsmith live: reading a frame")

    def submit(self, xdata: typing.Any, *, from_device: bool = False) -> bool:
        """Queue a frame if it is complete, new and not blank (counted in ``ignored``); returns
        whether it was queued.

        ``from_device``: the frame comes straight from the hardware source (acquisition thread);
        otherwise it was read from the data item, and a frame of a playing hardware source that
        delivers its frames itself is left to it."""
        if self.closed or xdata is None or is_partial_frame(xdata):
            return False
        if not from_device and self._device_delivers(xdata):
            return False
        fid = _frame_id(xdata)
        with self.cond:
            if fid in self.submitted:
                return False
            if len(self.submitted) > 1000:
                self.submitted.clear()
            self.submitted.add(fid)
            from nion.data import DataAndMetadata

            frame = DataAndMetadata.new_data_and_metadata(
                np.array(xdata.data, copy=True), dimensional_calibrations=list(xdata.dimensional_calibrations),
                metadata=dict(xdata.metadata or {}), timestamp=getattr(xdata, "timestamp", None))
            if _is_blank(frame):  # a blanked beam or an aborted scan: nothing to analyse, nothing to say,
                self.ignored += 1  # and a frame waiting for the worker stays queued
                return False
            if self.pending is not None:
                self.dropped += 1
            self.pending = (fid, frame)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="atomsmith-live", daemon=True)
                self.thread.start()
            self.cond.notify()
        return True

    def _computation_closed(self) -> bool:
        inner = getattr(self.computation, "_computation", None)
        return bool(getattr(inner, "_closed", False))

    def _run(self) -> None:
        while True:
            with self.cond:
                if self.pending is None:
                    self.cond.wait(self.idle_s)
                pending, self.pending = self.pending, None
                self._analysing = pending is not None and not self.closed
                if pending is None or self.closed:
                    if self.thread is threading.current_thread():
                        self.thread = None
                    return
            if self._computation_closed():
                self._analysing = False  # (else wait_idle waits for a frame that is never analysed)
                self.close()
                return
            fid, frame = pending
            try:
                self.analysed.append(fid)
                result = self.analyse(frame)
                self.done += 1
                if self.done == 1:
                    freeze_loaded_objects()
                if self.done % TRIM_EVERY == 0:
                    return_freed_memory()
                _call_on_ui_thread(self.computation, lambda r=result: self._deliver_safely(r))
            except Exception:  # noqa: BLE001
                log.exception("atomsmith live: analysing a frame")
            finally:
                self._analysing = False

    def analyse(self, frame: typing.Any) -> dict:
        """Worker thread: the analysis of one complete frame (subclasses replace it, with
        :meth:`_deliver`, for other live analyses; here live atom finding). A frame whose result
        fails its checks (:func:`analyse_frame`'s ``problem``) is counted as skipped and leaves
        the last good result on screen; the first frames, before any good one, show the frame
        itself with the reason."""
        reference = self.last_good if self._count_drops < ACCEPT_CHANGE_AFTER - 1 else None
        label = self._frame_label(frame)
        res = analyse_frame(frame, self.key, reference)
        res["frame_label"] = label
        if res["problem"] is None:
            self.good += 1
            self._count_drops = 0
            self.last_good = {"geometry": res["geometry"], "n_columns": len(res["table"]), "frame_label": label,
                              "table": res["table"], "frame_index": res["md"]["frame_index"]}
            self.last_skip = None
        else:
            self.skipped += 1
            self._count_drops = self._count_drops + 1 if res["count_drop"] else 0
            self.last_skip = {"frame_label": label, "frame_index": res["md"]["frame_index"],
                              "reason": res["problem"]}
            log.info("atomsmith live: frame %s skipped: %s", label, res["problem"])
            if self.last_good is None:  # nothing to keep: the frame itself, without rings
                from nion.data import DataAndMetadata

                from atomsmith.atoms.overlay import atom_overlay_rgb

                img = image_of(frame)
                res["placeholder"] = DataAndMetadata.new_data_and_metadata(
                    swift_rgb(atom_overlay_rgb(img, np.zeros((0, 2)))),
                    dimensional_calibrations=list(frame.dimensional_calibrations)[:2],
                    metadata={"atomsmith": {**res["md"], "n_columns": 0}})
        res["counters"] = self.counters()
        res["last_skip"] = None if self.last_skip is None else dict(self.last_skip)
        for name in ("overlay", "placeholder"):  # the counters travel with the result's metadata
            x = res.get(name)
            if x is not None:
                md = {**x.metadata["atomsmith"], "frames": res["counters"], "skipped": res["last_skip"]}
                res[name] = _with_metadata(x, {"atomsmith": _json_safe(md)})
        res["last_good_label"] = None if self.last_good is None else self.last_good["frame_label"]
        res.pop("frame", None)
        return res

    def _frame_label(self, frame: typing.Any) -> typing.Any:
        """How a frame is called in titles: the device's frame index, else its order here."""
        hw = (getattr(frame, "metadata", None) or {}).get("hardware_source") or {}
        index = hw.get("frame_index")
        return index if index is not None else self.done + 1

    def counters(self) -> dict:
        """Frames so far: good (shown), skipped (kept the last good result), ignored (blank),
        dropped (a newer frame came while it waited)."""
        return {"good": int(self.good), "skipped": int(self.skipped), "ignored": int(self.ignored),
                "dropped": int(self.dropped)}

    def _deliver_safely(self, res: dict) -> None:
        """UI thread: :meth:`_deliver`, whose errors go to the log, never into Swift."""
        try:
            self._deliver(res)
        except Exception:  # noqa: BLE001
            log.exception("atomsmith live: showing a result")

    def _store_result(self, name: str, xdata: typing.Any) -> typing.Any:
        """UI thread: ``xdata`` into the computation's result ``name``; returns that result data
        item (Facade), or None when the source or the computation is closed or it has none."""
        if self.closed or self._computation_closed():
            return None
        self.computation.set_referenced_xdata(name, xdata)
        return self.computation.get_result(name)

    def _deliver(self, res: dict) -> None:
        """UI thread: a good result into the computation's result data item, graphics on it; a
        skipped frame only changes the title ("Atoms (362 columns; frame 17 skipped: ...)") and
        the frame counters in the metadata, and the last good result stays on screen."""
        skip = res.get("last_skip")
        if res["overlay"] is not None:
            out = self._store_result("overlay", res["overlay"])
            if out is None:
                return
            out.title = f"Atoms ({res['md']['n_columns']} columns)"
            document_model = _document_model()
            display_item = document_model.get_display_item_for_data_item(out._data_item)
            if display_item is not None:
                draw_atom_graphics(document_model, display_item, res["table"], res["shape"],
                                   max_graphics=MAX_LIVE_GRAPHICS)
            return
        if self.closed or self._computation_closed():
            return
        out = self.computation.get_result("overlay")
        if out is None or out.xdata is None or "placeholder" in res:
            if "placeholder" not in res:
                return
            out = self._store_result("overlay", res["placeholder"])
            if out is None:
                return
            from .graphics import clear_atom_graphics

            display_item = _document_model().get_display_item_for_data_item(out._data_item)
            if display_item is not None:
                clear_atom_graphics(display_item)
        else:
            md = dict(out.metadata or {})
            md["atomsmith"] = {**(md.get("atomsmith") or {}), "frames": res["counters"], "skipped": skip}
            out.set_metadata(_json_safe(md))
        n = (out.metadata or {}).get("atomsmith", {}).get("n_columns", 0)
        shown = f"{n} columns" if res.get("last_good_label") is not None else "none yet"
        reason = _short(skip["reason"]) if skip else "?"
        label = skip["frame_label"] if skip else res.get("frame_label")
        out.title = f"Atoms ({shown}; frame {label} skipped: {reason})"

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no frame is pending or being analysed (tests, scripts)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.cond:
                busy = self.pending is not None or self._analysing
            if not busy:
                return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        self.closed = True
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.hardware_source_listener is not None:
            self.hardware_source_listener.close()
            self.hardware_source_listener = None
        with self.cond:
            self.pending = None
            self.cond.notify_all()
        _sources.pop(self.key, None)
        _period_cache.pop(self.key, None)
        _class_cache.pop(self.key, None)


_sources: dict[typing.Any, LiveSource] = {}
_sources_lock = threading.Lock()


def _document_model() -> typing.Any:
    from nion.swift import Facade

    return Facade.get_api("~1.0", "~1.0").library._document_model


#: frames between two hand-backs of freed heap memory to the system (:func:`return_freed_memory`)
TRIM_EVERY = 25


def return_freed_memory() -> bool:
    """Hand the C heap's freed pages back to the system (glibc's ``malloc_trim(0)``; elsewhere a
    no-op). Returns whether it was called.

    A live analysis allocates and frees arrays of many sizes per frame (torch's CPU tensors are
    outside Python's allocator and ``tracemalloc``); glibc keeps the freed pages in the middle
    of its heaps, so the process's resident memory creeps up over thousands of frames although
    nothing is held. Called every ``TRIM_EVERY`` frames (~1 ms each)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


_frozen = threading.Event()


def freeze_loaded_objects() -> bool:
    """Move the objects alive now (Swift, torch, scipy, the models: ~300,000) out of the cyclic
    garbage collector's reach, once per process (:func:`gc.freeze`); returns whether this call
    did it.

    Python's full (generation 2) collection walks every tracked object; with Swift, torch and
    the plug-in loaded one pass took 160-190 ms, and it runs on whichever thread allocates at
    that moment, the UI thread included: the longest UI pass of a live soak was such a
    collection (after it: 20-35 ms). Called after the first analysed frame (the models and
    libraries are loaded then); later objects are collected as before. The frozen objects are the long-lived ones of
    the session; a cycle among them is no longer freed."""
    import gc

    if _frozen.is_set():
        return False
    _frozen.set()
    gc.collect()  # (once, in the worker: only what is alive is frozen, not garbage awaiting collection)
    gc.freeze()
    return True


@functools.cache
def _glibc() -> typing.Any:
    """The C library when it has ``malloc_trim`` (glibc on Linux), else None."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return lib if hasattr(lib, "malloc_trim") else None


def _call_on_ui_thread(computation: typing.Any, fn: typing.Callable[[], None]) -> None:
    dm = _document_model()
    call_soon = getattr(dm, "_call_soon", None)  # Swift's own route for computation commits
    if call_soon is not None:
        call_soon(fn)
    else:
        from nion.swift import Facade

        Facade.get_api("~1.0", "~1.0").queue_task(fn)


def _source_data_item(computation: typing.Any) -> typing.Any:
    """The native DataItem bound to the computation's ``src`` input (None if not bound)."""
    inner = getattr(computation, "_computation", None)
    if inner is None:
        return None
    get = getattr(inner, "get_input_data_item", None)
    if get is not None:
        return get("src")
    variable = inner._get_variable("src")
    bound = variable.bound_item if variable else None
    items = bound.base_items if bound else []
    return items[0] if items else None


def live_source(computation: typing.Any, create: bool = False,
                factory: typing.Callable[..., LiveSource] | None = None) -> LiveSource | None:
    """The :class:`LiveSource` of a live computation (``create``: made on first use, by
    ``factory(key, computation, data_item)``, default :class:`LiveSource`)."""
    key = _key(computation)
    with _sources_lock:
        ls = _sources.get(key)
        if ls is None and create:
            native = _source_data_item(computation)
            if native is None:
                return None
            ls = _sources[key] = (factory or LiveSource)(key, computation, native)
        return ls


def close_all() -> None:
    """Stop every live source (the extension closes)."""
    for ls in list(_sources.values()):
        ls.close()


class LiveAtomFinding:
    """Swift computation handler (old-style API, present in every supported Swift).

    ``execute`` does no analysis itself: it makes sure the source's :class:`LiveSource` listens,
    and queues the current frame if it is complete and new (the first frame, a static image);
    the result data item is written by the LiveSource on the UI thread.
    """

    computation_id = COMPUTATION_ID
    label = "Atomsmith Live Atom Finding"
    #: makes the computation's live source (subclasses for other live analyses)
    source_factory: typing.Callable[..., LiveSource] = LiveSource

    def __init__(self, computation: typing.Any, **kwargs: typing.Any) -> None:
        self.computation = computation
        self.frames_skipped = 0

    def execute(self, src: typing.Any, **kwargs: typing.Any) -> None:
        ls = live_source(self.computation, create=True, factory=self.source_factory)
        xdata = src.xdata
        if ls is None or not ls.submit(xdata):
            self.frames_skipped += 1

    def commit(self) -> None:
        pass


def register(api: typing.Any) -> None:
    """Register the computation type with Swift (once per process; later calls replace it)."""
    api.register_computation_type(COMPUTATION_ID, LiveAtomFinding)


def attach(api: typing.Any, data_item: typing.Any) -> typing.Any:
    """Attach live atom finding to ``data_item`` (a Facade DataItem, e.g. a live scan's HAADF);
    returns the Facade computation. Its result is a new data item "Atoms (N columns)"."""
    return api.library.create_computation(
        COMPUTATION_ID, inputs={"src": {"object": data_item, "type": "data_source"}}, outputs={"overlay": None})
