"""Defect dynamics in Nion Swift: "Track Defects" on a recorded sequence, "Live Defect Counts" on
a live scan.

**Track Defects** (Atomsmith > Track Defects) takes the selected sequence data item (T frames of
ny x nx, spatial axes calibrated in nm; the time between frames from the sequence axis calibration,
in s or ms, or ``frame_time_s`` in the metadata). Off the UI thread, with progress in Swift's task
panel, it finds the defects of every frame (:func:`atomsmith.dynamics.find_movie_defects`, with
the model Find Atoms uses), then classifies, links and measures them
(:func:`atomsmith.dynamics.analyse_movie`). It adds, without touching the source:

- "Defect tracks of <title>": the mean frame with one point (labelled with its number and class)
  at the start of each track and a line for each of its steps, coloured by the class it had; if
  there are more steps than graphics allow (see graphics.py for their cost), the longest tracks
  are drawn and "... (all tracks)", an RGB picture with every track, is added too;
- "Defect class counts of <title>": a line plot, one line per class, of the defects found in each
  frame (shape (n_classes, T): Swift draws a line per row; the x axis is the sequence's time);
- on both, in the description and in ``metadata["atomsmith"]["track_defects"]``: D per class
  (nm^2/s, 95 % interval) and the per-frame Markov matrix with its 95 % intervals; the tracks go to
  a CSV file beside Find Atoms' tables (its path is in the metadata).

**Live Defect Counts** (Atomsmith > Live Defect Counts) attaches a live computation to the selected
2D scan image (like Live Atom Finding, :class:`live.LiveSource` catches every completed frame in a
worker thread). Each frame's defects are found; the first ``fit_frames`` frames (and at least
``min_defects`` defects) are kept in a buffer and the classes are fitted on them
(:func:`atomsmith.dynamics.defect_classes`); the classes are then fixed and every later frame's
defects are classified with the fitted model (:meth:`DefectClasses.predict`). The result data item "Defect class counts (live)"
is a line plot of the count of each class per analysed frame that grows with the scan (before the
classes exist it shows the total).

Errors become notifications (and ``error`` on the handler); nothing is raised into Swift.
"""

from __future__ import annotations

import collections
import csv
import threading
import time
import types
import typing

import numpy as np

from . import live
from .actions import _MenuItem, _slug, _stamp, close_task, log, notify, open_task, report_failure
from .graphics import image_of, pixel_size_nm, swift_rgb
from .state import STATE

COMPUTATION_ID = "atomsmith.live_defect_counts"
TRACK_GRAPHIC_ID = "atomsmith.track"
#: time units of a sequence axis -> seconds
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}
NO_FRAME_TIME = ("Track Defects needs the time between frames: calibrate the sequence axis in s (Inspector > "
                 "Calibrations, scale = frame time) or put frame_time_s (seconds) in the data item's metadata")


# ---------------------------------------------------------------------------------------------
# Swift data -> a movie with its calibration


def frame_time_s(xdata: typing.Any, override: float | None = None) -> float:
    """Seconds between the frames of a sequence: ``override`` if given, else the sequence axis
    calibration when it has time units, else ``frame_time_s`` in the metadata (top level or one
    level down, e.g. ``metadata["hardware_source"]["frame_time_s"]``). Raises ValueError with what
    to do when there is none or it is not a positive number."""
    if override is not None:
        v = float(override)
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"frame time {override!r} must be a positive number of seconds")
        return v
    cal = list(xdata.dimensional_calibrations)[0]
    units = str(cal.units or "").strip()
    if units:
        factor = TIME_UNITS.get(units, TIME_UNITS.get(units.lower()))
        if factor is None:
            raise ValueError(f"the sequence axis is calibrated in {units!r}, not in time; {NO_FRAME_TIME}")
        scale = float(cal.scale) if cal.scale is not None else float("nan")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"the sequence axis is in {units} but its scale is {scale}, not a positive "
                             f"frame time; {NO_FRAME_TIME}")
        return scale * factor
    md = dict(getattr(xdata, "metadata", None) or {})
    found = None
    if "frame_time_s" in md:
        found = md["frame_time_s"]
    else:
        for section in md.values():
            if isinstance(section, dict) and "frame_time_s" in section:
                found = section["frame_time_s"]
                break
    if found is None:
        raise ValueError(NO_FRAME_TIME)
    try:
        v = float(found)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"frame_time_s in the metadata is {found!r}, not a positive number; {NO_FRAME_TIME}")
    return v


def movie_of(xdata: typing.Any, title: str | None = None) -> tuple[np.ndarray, float]:
    """(frames (T, ny, nx) float32, a copy; nm per pixel) of a Swift sequence of 2D images.
    Raises ValueError saying what is wrong: not a sequence, not 2D frames, complex or RGB data,
    NaN or inf, spatial axes not in nm (or Å, pm)."""
    name = f"'{title}'" if title else "this data item"
    if xdata is None:
        raise ValueError(f"{name} holds no data")
    shape = tuple(xdata.data_shape)
    if not getattr(xdata, "is_sequence", False):
        hint = " For a live scan use Atomsmith > Live Defect Counts." if len(shape) == 2 else ""
        raise ValueError(f"Track Defects needs a sequence (a movie of T frames of ny x nx); {name} is not a "
                         f"sequence but {len(shape)}D data of shape {shape}.{hint}")
    if len(shape) != 3 or xdata.collection_dimension_count != 0 or xdata.datum_dimension_count != 2:
        raise ValueError(f"Track Defects needs a sequence of 2D frames, shape (T, ny, nx); {name} is a sequence "
                         f"of shape {shape} ({xdata.data_descriptor})")
    data = np.asarray(xdata.data)
    if np.iscomplexobj(data) or getattr(xdata, "is_data_rgb_type", False):
        raise ValueError(f"Track Defects needs real (not complex or RGB) frames; {name} has dtype {data.dtype}")
    if shape[0] < 2:
        raise ValueError(f"Track Defects needs at least 2 frames; {name} has {shape[0]}")
    cals = list(xdata.dimensional_calibrations)[1:]
    px = pixel_size_nm(types.SimpleNamespace(dimensional_calibrations=cals))
    if px is None:
        got = ", ".join(f"{c.scale:g} {c.units or '(no units)'}" for c in cals)
        raise ValueError(f"Track Defects needs the frame axes calibrated in nm (equal scales); {name} has {got}")
    frames = np.array(data, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{name} holds NaN or inf values")
    return frames, px


def movie_period_px(frames: typing.Sequence[np.ndarray]) -> float | None:
    """The lattice period (px) of a movie as :func:`atomsmith.dynamics.find_movie_defects`
    measures it: once, on the mean of the first 8 frames (None when there is no clear lattice:
    then it is measured per frame)."""
    from atomsmith.atoms.spacing import estimate_lattice_period

    try:
        return estimate_lattice_period(np.mean([np.asarray(f, float) for f in frames[:8]], axis=0)).period_px
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# results -> numbers, text, Swift data


def class_names(n_classes: int) -> list[str]:
    """Names of the defect classes (numbered by decreasing size, as the core numbers them)."""
    return [f"class {k}" for k in range(int(n_classes))]


def _num(x: typing.Any) -> float | None:
    """A float for JSON metadata (None for NaN / inf)."""
    v = float(x)
    return v if np.isfinite(v) else None


def _nums(a: typing.Any) -> list:
    return [[_num(v) for v in row] for row in np.asarray(a, float)] if np.ndim(a) == 2 else [_num(v) for v in a]


def dynamics_summary(dyn: typing.Any, frame_time: float, px_nm: float) -> dict:
    """The numbers of a :class:`atomsmith.dynamics.MovieDynamics` as plain JSON-able values."""
    from atomsmith.dynamics import class_counts

    k = dyn.classes.n_classes
    names = class_names(k)
    counts = class_counts(dyn.labels, k)
    tm = dyn.transitions
    diff = []
    for name, r in zip(names, dyn.diffusion, strict=True):
        diff.append(None if r is None else {
            "class": name, "D_nm2_per_s": _num(r.D_nm2_per_s), "ci_low": _num(r.ci_low), "ci_high": _num(r.ci_high),
            "n_steps": int(r.n_steps), "n_tracks": int(r.n_tracks), "localisation_nm": _num(r.localisation_nm)})
    return {
        "n_frames": len(dyn.labels), "frame_time_s": float(frame_time), "pixel_size_nm": float(px_nm),
        "n_classes": int(k), "class_names": names, "bic": _nums(dyn.classes.bic),
        "defects_per_frame": [int(len(p)) for p in dyn.positions],
        "class_counts": [[int(v) for v in row] for row in counts],
        "n_tracks": len(dyn.tracks), "track_lengths": [int(len(t)) for t in dyn.tracks],
        "diffusion": diff,
        "transition_matrix": {"matrix": _nums(tm.matrix), "ci_low": _nums(tm.ci_low), "ci_high": _nums(tm.ci_high),
                              "counts": _nums(tm.counts), "stationary": _nums(tm.stationary)},
    }


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def dynamics_table(summary: dict, title: str = "") -> str:
    """The description text: D per class with its 95 % interval and the Markov matrix with its
    95 % intervals, as a plain-text table."""
    names = summary["class_names"]
    lines = [f"Defect dynamics{' of ' + title if title else ''}: {summary['n_frames']} frames, "
             f"{summary['frame_time_s']:.4g} s apart, {summary['pixel_size_nm']:.4g} nm/px; "
             f"{sum(summary['defects_per_frame'])} defects found, {summary['n_classes']} classes, "
             f"{summary['n_tracks']} tracks.", "",
             "Diffusion coefficient per class, D (nm^2/s) [95 % interval]:"]
    for name, r in zip(names, summary["diffusion"], strict=True):
        if r is None:
            lines.append(f"  {name:>9}: - (no steps)")
        else:
            lines.append(f"  {name:>9}: {_f(r['D_nm2_per_s'], '.4g')} [{_f(r['ci_low'], '.4g')}, "
                         f"{_f(r['ci_high'], '.4g')}]  ({r['n_steps']} steps, {r['n_tracks']} tracks)")
    tm = summary["transition_matrix"]
    lines += ["", "Markov transition matrix per frame (row: from, column: to), ML [95 % interval]:",
              "  " + " " * 9 + "".join(f"{n:>24}" for n in names)]
    for i, name in enumerate(names):
        cells = "".join(f"{_f(tm['matrix'][i][j], '.2f') + ' [' + _f(tm['ci_low'][i][j], '.2f') + ', ' + _f(tm['ci_high'][i][j], '.2f') + ']':>24}"
                        for j in range(len(names)))
        lines.append(f"  {name:>9}{cells}   (n = {int(sum(tm['counts'][i]))})")
    lines.append("  stationary: " + ", ".join(f"{n} {_f(p, '.2f')}" for n, p in zip(names, tm["stationary"], strict=True)))
    return "\n".join(lines)


def counts_xdata(counts: np.ndarray, *, scale: float = 1.0, offset: float = 0.0, units: str = "",
                 metadata: dict | None = None) -> typing.Any:
    """(n_lines, T) counts as Swift data: a 2D array that :func:`style_count_plot` shows as a line
    plot with a line per row (Swift draws a collection of 1D data one row at a time)."""
    from nion.data import Calibration, DataAndMetadata

    c = np.asarray(counts, np.float32).reshape(-1, np.shape(counts)[-1])
    return DataAndMetadata.new_data_and_metadata(
        c, intensity_calibration=Calibration.Calibration(units="defects"),
        dimensional_calibrations=[Calibration.Calibration(), Calibration.Calibration(offset, scale, units)],
        metadata=metadata or {}, data_descriptor=DataAndMetadata.DataDescriptor(False, 0, 2))


def style_count_plot(display_item: typing.Any, names: typing.Sequence[str]) -> None:
    """A (native) display item of :func:`counts_xdata` as a line plot, one labelled line per row in
    the class colours of the overlays (Swift makes a layer per row when the display type is set)."""
    from atomsmith.atoms.overlay import class_colour_hex

    if display_item.display_type != "line_plot" or len(display_item.display_layers) != len(names):
        display_item.display_type = None
        display_item.display_type = "line_plot"
    # set only what differs: a live plot is restyled on every frame, and each property set is a
    # change Swift records and redraws
    for i, name in enumerate(names[: len(display_item.display_layers)]):
        colour = class_colour_hex(i) if len(names) > 1 else "#808080"
        want = {"label": name, "stroke_color": colour, "fill_color": None}
        if any(display_item.get_display_layer_property(i, k) != v for k, v in want.items()):
            display_item._set_display_layer_properties(i, **want)
    if display_item.get_display_property("legend_position") != "top-right":
        display_item.set_display_property("legend_position", "top-right")


def _track_steps(track: np.ndarray, labels: np.ndarray, min_step_px: float) -> list[tuple[int, int, int]]:
    """(row i, row i + 1, class) of the steps of a track between consecutive rows longer than
    ``min_step_px`` (a column that stays put needs no line)."""
    tr = np.asarray(track, float)
    steps = np.hypot(*np.diff(tr[:, 1:], axis=0).T)
    return [(i, i + 1, int(labels[i])) for i in range(len(tr) - 1) if steps[i] >= min_step_px]


def clear_track_graphics(display_item: typing.Any) -> int:
    ours = [g for g in display_item.graphics if getattr(g, "graphic_id", None) == TRACK_GRAPHIC_ID]
    for g in ours:
        display_item.remove_graphic(g).close()
    return len(ours)


def draw_track_graphics(document_model: typing.Any, display_item: typing.Any, tracks: typing.Sequence[np.ndarray],
                        track_labels: typing.Sequence[np.ndarray], shape: tuple[int, int], *, max_graphics: int = 150,
                        min_step_px: float = 1.0) -> tuple[int, int]:
    """Each track as a point at its start (labelled "T<n> <class>") and a line per step, coloured
    by the class at the step's start, on a (native) display item, in one transaction. Whole tracks,
    longest first, while the graphics stay within ``max_graphics``. Returns (graphics, tracks) drawn."""
    from nion.swift.model import Graphics
    from nion.utils import Geometry

    from atomsmith.atoms.overlay import class_colour_hex

    h, w = shape

    def frac(x: float, y: float) -> Geometry.FloatPoint:  # pixel centre (r, c) -> ((r + .5) / H, (c + .5) / W)
        return Geometry.FloatPoint((float(y) + 0.5) / h, (float(x) + 0.5) / w)

    order = sorted(range(len(tracks)), key=lambda i: -len(tracks[i]))
    n_graphics = n_tracks = 0
    with document_model.begin_display_item_transaction(display_item):
        clear_track_graphics(display_item)
        for i in order:
            tr, lab = np.asarray(tracks[i], float), np.asarray(track_labels[i], int)
            steps = _track_steps(tr, lab, min_step_px)
            if n_graphics + 1 + len(steps) > max_graphics:
                continue
            p = Graphics.PointGraphic()
            p.position = frac(tr[0, 1], tr[0, 2])
            p.graphic_id = TRACK_GRAPHIC_ID
            p.stroke_color = class_colour_hex(int(lab[0])) if lab[0] >= 0 else "#c0c0c0"
            p.label = f"T{i} class {int(lab[0])}"
            display_item.add_graphic(p)
            for a, b, k in steps:
                g = Graphics.LineGraphic()
                g.start = frac(tr[a, 1], tr[a, 2])
                g.end = frac(tr[b, 1], tr[b, 2])
                g.graphic_id = TRACK_GRAPHIC_ID
                g.stroke_color = class_colour_hex(k) if k >= 0 else "#c0c0c0"
                display_item.add_graphic(g)
            n_graphics += 1 + len(steps)
            n_tracks += 1
    return n_graphics, n_tracks


def tracks_rgb(image: np.ndarray, tracks: typing.Sequence[np.ndarray], track_labels: typing.Sequence[np.ndarray]) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the image in grey with every track drawn in its class colours (a white
    dot at each start); for when there are too many steps for Swift graphics."""
    from skimage.draw import disk, line

    from atomsmith.atoms.overlay import CLASS_COLOURS, atom_overlay_rgb

    rgb = atom_overlay_rgb(np.asarray(image, float), np.zeros((0, 2)))
    h, w = rgb.shape[:2]
    for tr, lab in zip(tracks, track_labels, strict=True):
        tr, lab = np.asarray(tr, float), np.asarray(lab, int)
        xy = np.round(tr[:, 1:]).astype(int)
        for j in range(len(tr) - 1):
            rr, cc = line(xy[j, 1], xy[j, 0], xy[j + 1, 1], xy[j + 1, 0])
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            rgb[rr[ok], cc[ok]] = CLASS_COLOURS[int(lab[j]) % len(CLASS_COLOURS)] if lab[j] >= 0 else (192, 192, 192)
        rr, cc = disk((tr[0, 2], tr[0, 1]), 1.5, shape=(h, w))
        rgb[rr, cc] = (255, 255, 255)
    return rgb


def save_tracks_csv(path: typing.Any, dyn: typing.Any, frame_time: float, cals: typing.Sequence[typing.Any]) -> typing.Any:
    """The tracks as CSV rows (track, frame, time_s, x_px, y_px, x_nm, y_nm, class); x_nm and y_nm
    in the image's calibrated coordinates (Swift's offset is pixel 0's outer edge)."""
    cy, cx = cals[0], cals[1]
    with open(path, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["track", "frame", "time_s", "x_px", "y_px", "x_nm", "y_nm", "class"])
        for i, (tr, lab) in enumerate(zip(dyn.tracks, dyn.track_labels, strict=True)):
            for (f, x, y), k in zip(tr, lab, strict=True):
                wr.writerow([i, int(f), f"{f * frame_time:.6g}", f"{x:.3f}", f"{y:.3f}",
                             f"{cx.offset + cx.scale * (x + 0.5):.5f}", f"{cy.offset + cy.scale * (y + 0.5):.5f}", int(k)])
    return path


# ---------------------------------------------------------------------------------------------
# Atomsmith > Track Defects


class TrackDefects(_MenuItem):
    """Find, classify and track the defects of the selected sequence; D per class and the Markov
    matrix; result data items as described in the module docstring."""

    menu_item_name = "Track Defects"
    #: at most this many graphics (track starts + steps) on the tracks item; more: an RGB picture
    max_graphics = 150
    #: number of defect classes (None: chosen by BIC, the core's default)
    n_classes: int | None = None
    #: seconds between frames, overriding the calibration / metadata (None: from the data item)
    frame_time_s: float | None = None

    def __init__(self, api: typing.Any) -> None:
        super().__init__(api)
        self.thread: threading.Thread | None = None
        self.progress: tuple[int, int] = (0, 0)
        self.error: str | None = None
        self.result: typing.Any = None  # the MovieDynamics of the last run
        self.summary: dict | None = None
        self.items: dict[str, typing.Any] = {}  # the result data items of the last run (Facade)
        self.timings: dict[str, float] = {}

    def execute(self, window: typing.Any) -> None:
        if self.thread is not None and self.thread.is_alive():
            done, total = self.progress
            raise RuntimeError(f"Track Defects is running (frame {done} of {total}); wait for it to finish")
        self.error, self.result, self.summary, self.items = None, None, None, {}
        try:
            di = self._target(window)
            xdata = di.xdata
            frames, px = movie_of(xdata, di.title)
            dt = frame_time_s(xdata, self.frame_time_s)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        title = di.title
        cals = list(xdata.dimensional_calibrations)
        n_classes, model = self.n_classes, STATE.model
        model_name = "generic" if model == "generic" else str(STATE.model_path)
        self.progress = (0, len(frames))
        task = open_task(window, f"Atomsmith: track defects in {title}")

        def report(text: str) -> None:
            if task is not None:
                done, total = self.progress
                window.queue_task(lambda: task.update_progress(text, (done, total)))

        def work() -> None:
            from atomsmith.dynamics import analyse_movie, find_movie_defects

            try:
                t0 = time.perf_counter()
                positions = []
                for t in range(len(frames)):
                    positions.append(find_movie_defects(frames[t:t + 1], model=model, progress=False)[0])
                    self.progress = (t + 1, len(frames))
                    report(f"finding defects: frame {t + 1} of {len(frames)}")
                t1 = time.perf_counter()
                report("classifying and tracking")
                dyn = analyse_movie(frames, dt, px, positions=positions, n_classes=n_classes, progress=False)
                summary = dynamics_summary(dyn, dt, px)
                summary.update(source=title, model=model_name)
                summary["tracks_csv"] = str(save_tracks_csv(
                    STATE.tables_dir() / f"{_slug(title)}-tracks-{_stamp()}.csv", dyn, dt, cals[1:]))
                mean = frames.mean(axis=0).astype(np.float32)
                text = dynamics_table(summary, title)
                self.timings = {"find_s": t1 - t0, "analyse_s": time.perf_counter() - t1}
            except Exception as exc:  # noqa: BLE001  (never into Swift)
                self.error = report_failure("Track Defects", exc, f"{title}: ")
                return
            finally:
                close_task(window, task)

            def commit() -> None:
                try:
                    self._commit(di, mean, text, cals, dyn, summary)
                except Exception as exc:  # noqa: BLE001  (never into Swift)
                    self.error = report_failure("Track Defects", exc, f"{title}: ")

            window.queue_task(commit)

        self.thread = threading.Thread(target=work, name="atomsmith track defects", daemon=True)
        self.thread.start()

    def _commit(self, di: typing.Any, mean: np.ndarray, text: str, cals: list, dyn: typing.Any,
                summary: dict) -> None:
        """UI thread: the result data items (``mean``: the mean frame; ``text``: the description)."""
        from nion.data import DataAndMetadata

        t0 = time.perf_counter()
        library = self.api.library
        dm = library._document_model
        title, names = di.title, summary["class_names"]
        md = {"atomsmith": {"track_defects": summary}}
        tracks_item = library.create_data_item_from_data_and_metadata(
            DataAndMetadata.new_data_and_metadata(mean, dimensional_calibrations=cals[1:], metadata=md),
            f"Defect tracks of {title}")
        tracks_item._data_item.description = text
        display_item = dm.get_display_item_for_data_item(tracks_item._data_item)
        n_graphics, n_drawn = draw_track_graphics(dm, display_item, dyn.tracks, dyn.track_labels, mean.shape,
                                                  max_graphics=self.max_graphics)
        summary["n_graphics"], summary["n_tracks_drawn"] = n_graphics, n_drawn
        items = {"tracks": tracks_item}
        if n_drawn < len(dyn.tracks):
            rgb = swift_rgb(tracks_rgb(mean, dyn.tracks, dyn.track_labels))
            items["tracks_rgb"] = library.create_data_item_from_data_and_metadata(
                DataAndMetadata.new_data_and_metadata(rgb, dimensional_calibrations=cals[1:], metadata=md),
                f"Defect tracks of {title} (all tracks)")
            items["tracks_rgb"]._data_item.description = text
        seq = cals[0]
        scale, offset = summary["frame_time_s"], 0.0
        if str(seq.units or "").strip() in TIME_UNITS:  # keep the sequence's own time origin
            factor = TIME_UNITS.get(str(seq.units).strip(), 1.0)
            offset = float(seq.offset) * factor if np.isfinite(seq.offset) else 0.0
        counts = np.asarray(summary["class_counts"], float)
        counts_item = library.create_data_item_from_data_and_metadata(
            counts_xdata(counts, scale=scale, offset=offset, units="s", metadata=md),
            f"Defect class counts of {title}")
        counts_item._data_item.description = text
        style_count_plot(dm.get_display_item_for_data_item(counts_item._data_item),
                         [f"{n} ({int(c.sum())})" for n, c in zip(names, counts, strict=True)])
        items["counts"] = counts_item
        tracks_item.set_metadata({"atomsmith": {"track_defects": summary}})  # with the graphics counts
        self.items, self.result, self.summary = items, dyn, summary
        self.timings["commit_s"] = time.perf_counter() - t0
        d = ", ".join(f"{n} {_f(r['D_nm2_per_s'] if r else None, '.3g')}" for n, r in zip(names, summary["diffusion"], strict=True))
        more = "" if n_drawn == len(dyn.tracks) else f" ({n_drawn} drawn as graphics, all in the RGB picture)"
        notify("Track Defects", f"{title}: {sum(summary['defects_per_frame'])} defects in {summary['n_frames']} frames, "
               f"{summary['n_classes']} classes, {summary['n_tracks']} tracks{more}; D (nm^2/s): {d}; "
               f"tables in the descriptions of '{tracks_item.title}' and '{counts_item.title}'")


# ---------------------------------------------------------------------------------------------
# Atomsmith > Live Defect Counts


#: settings of each live computation (by its key), set when it is attached
_live_settings: dict[typing.Any, dict] = {}


#: the most points of the live counts plot (see :meth:`DefectCountSource._result`)
MAX_PLOT_POINTS = 250


class DefectCountSource(live.LiveSource):
    """The live defect counts of one source data item: per completed frame, its defects
    (:func:`atomsmith.dynamics.find_movie_defects`); the frames and their defects are kept in a
    rolling buffer until the classes are fitted on them (``fit_frames`` frames with at least
    ``min_defects`` defects, or ``2 n_classes`` when the number of classes is given; at the latest
    when the buffer is full, with at least 2 defects); from then on the classes
    are fixed and each new defect is classified by the fitted model (:meth:`DefectClasses.predict`).
    Per analysed frame the counts of each class; the result is the
    line plot of all of them."""

    fit_frames = 10
    #: the core's choice of the number of classes (BIC) needs ~80 defects: with fewer it splits
    #: the classes (measured on twin movies: 20-60 defects gave 3-6 classes for 2 true ones)
    min_defects = 80
    buffer_frames = 30
    #: fixed number of classes (None: by BIC)
    n_classes: int | None = None

    def __init__(self, key: typing.Any, computation: typing.Any, data_item: typing.Any) -> None:
        for name, value in _live_settings.get(key, {}).items():
            setattr(self, name, value)
        self.buffer: collections.deque = collections.deque(maxlen=max(int(self.buffer_frames), 3 * int(self.fit_frames)))
        self.records: list[dict] = []  # per analysed frame: positions, labels (None before the fit), frame info
        self.classes: typing.Any = None  # the core's DefectClasses of the fit
        self.patch_px: int | None = None
        self._period: tuple[tuple, float] | None = None  # ((shape, nm/px), lattice period px) of the first frames
        self.fitted_on = 0
        self.error: str | None = None
        self.errors = 0
        super().__init__(key, computation, data_item)

    # worker thread ---------------------------------------------------------------------------

    def analyse(self, frame: typing.Any) -> dict:
        t0 = time.perf_counter()
        try:
            self._add_frame(frame)
            error = None
        except Exception as exc:  # noqa: BLE001  (report it, keep the scan going)
            error = f"{type(exc).__name__}: {exc}"
            self.errors += 1
            log.exception("atomsmith live defect counts")
            if self.error is None:
                notify("Live Defect Counts", f"a frame could not be analysed: {error}")
            self.error = error
        return self._result(error, (time.perf_counter() - t0) * 1e3)

    def _add_frame(self, frame: typing.Any) -> None:
        from atomsmith.dynamics import find_movie_defects

        img = image_of(frame)
        px = pixel_size_nm(frame)
        if px is None:
            raise ValueError("live defect counts need frames calibrated in nm (equal x and y scales)")
        if self.patch_px is None:
            self.patch_px = int(round(0.22 / px)) | 1  # the core's default sub-image (analyse_movie)
        geometry = (img.shape, px)
        if self._period is None or self._period[0] != geometry:  # measured once, as for a movie
            period_px = movie_period_px([img])
            if period_px is not None:
                self._period = (geometry, period_px)
        else:
            period_px = self._period[1]
        pos = find_movie_defects([img], model=STATE.model, period_px=period_px, progress=False)[0]
        hs = (getattr(frame, "metadata", None) or {}).get("hardware_source", {})
        ts = getattr(frame, "timestamp", None)
        rec = {"positions": np.asarray(pos, float).reshape(-1, 2), "labels": None,
               "frame_index": hs.get("frame_index"), "timestamp": str(ts) if ts is not None else None}
        self.records.append(rec)
        if self.classes is None:  # the frames the classes are fitted on
            self.buffer.append((len(self.records) - 1, img))
            self._maybe_fit()
        elif len(pos):
            rec["labels"] = self._predict([img], [rec["positions"]])

    def _maybe_fit(self) -> None:
        from atomsmith.dynamics import defect_classes, subimage_stack

        idx = [i for i, _ in self.buffer]
        n_def = sum(len(self.records[i]["positions"]) for i in idx)
        enough = self.min_defects if self.n_classes is None else 2 * int(self.n_classes)
        if not ((len(idx) >= self.fit_frames and n_def >= enough) or (len(idx) >= self.buffer.maxlen and n_def >= 2)):
            return
        imgs = [im for _, im in self.buffer]
        pos = [self.records[i]["positions"] for i in idx]
        stack, index = subimage_stack(imgs, pos, self.patch_px)
        classes = defect_classes(stack, self.n_classes)
        for i in idx:
            self.records[i]["labels"] = np.full(len(self.records[i]["positions"]), -1)
        for (b, j), lab in zip(index, classes.labels, strict=True):
            self.records[idx[b]]["labels"][j] = lab
        self.classes, self.fitted_on = classes, len(idx)

    def _predict(self, imgs: list, pos: list) -> np.ndarray:
        """The fitted classes (:meth:`DefectClasses.predict`) of each defect's sub-image."""
        from atomsmith.dynamics import subimage_stack

        stack, _ = subimage_stack(imgs, pos, self.patch_px)
        return self.classes.predict(stack)

    def counts(self) -> tuple[np.ndarray, list[str]]:
        """(lines, frames) counts so far and the line names: per class once fitted, else the total."""
        if self.classes is None:
            return (np.array([[len(r["positions"]) for r in self.records]], float),
                    [f"all defects (classes after {self.fit_frames} frames)"])
        from atomsmith.dynamics import class_counts

        k = self.classes.n_classes
        labels = [r["labels"] if r["labels"] is not None else np.full(len(r["positions"]), -1) for r in self.records]
        return class_counts(labels, k), class_names(k)

    def _result(self, error: str | None, ms: float) -> dict:
        counts, names = self.counts()
        md = {"atomsmith": {"live_defect_counts": {
            "n_frames": len(self.records), "line_names": names, "counts": [[int(v) for v in row] for row in counts],
            "defects_per_frame": [int(len(r["positions"])) for r in self.records],
            "fitted": self.classes is not None, "fitted_on_frames": self.fitted_on,
            "n_classes": None if self.classes is None else int(self.classes.n_classes),
            "frame_index": [r["frame_index"] for r in self.records], "timestamps": [r["timestamp"] for r in self.records],
            "dropped_frames": int(self.dropped), "errors": int(self.errors), "error": error,
            "analysis_ms": ms, "computed_at": time.time()}}}
        # the plot holds at most MAX_PLOT_POINTS points: beyond, each point is the mean of k
        # consecutive frames (the metadata keeps every frame's counts). A line plot that grows
        # by a point per frame grew Swift's drawing working set with it (a 1000-frame soak:
        # +5.4 % RSS; capped: +0.4 %)
        k = max(1, -(-counts.shape[-1] // MAX_PLOT_POINTS))
        md["atomsmith"]["live_defect_counts"]["frames_per_point"] = k
        if k > 1:
            starts = np.arange(0, counts.shape[-1], k)
            sizes = np.diff(np.append(starts, counts.shape[-1]))
            counts = np.add.reduceat(np.asarray(counts, float), starts, axis=-1) / sizes
        xdata = counts_xdata(counts, scale=float(k), offset=0.5 * (k - 1), units="frame", metadata=md)
        return {"xdata": xdata, "names": names, "error": error, "frames_per_point": k, "n_frames": len(self.records)}

    # UI thread -------------------------------------------------------------------------------

    def _deliver(self, res: dict) -> None:
        out = self._store_result("counts", res["xdata"])
        if out is None:
            return
        n = res["n_frames"]
        fitted = "" if self.classes is None else f", {self.classes.n_classes} classes"
        failed = "" if res["error"] is None else "; the last frame failed (see the metadata)"
        binned = "" if res.get("frames_per_point", 1) == 1 else f", mean of {res['frames_per_point']} frames a point"
        out.title = f"Defect class counts (live): {n} frames{fitted}{binned}{failed}"
        display_item = live._document_model().get_display_item_for_data_item(out._data_item)
        if display_item is not None:
            style_count_plot(display_item, res["names"])

    def close(self) -> None:
        super().close()
        _live_settings.pop(self.key, None)


class LiveDefectCounts(live.LiveAtomFinding):
    """Swift computation handler (old-style API): makes sure the source's
    :class:`DefectCountSource` listens and queues the current frame if complete and new."""

    computation_id = COMPUTATION_ID
    label = "Atomsmith Live Defect Counts"
    source_factory = DefectCountSource


class LiveDefectCountsMenu(_MenuItem):
    """Attach live defect class counts to the selected live 2D scan image (delete the result data
    item to stop)."""

    menu_item_name = "Live Defect Counts"
    #: passed to the :class:`DefectCountSource` of the computations attached from here
    fit_frames = DefectCountSource.fit_frames
    min_defects = DefectCountSource.min_defects
    buffer_frames = DefectCountSource.buffer_frames
    n_classes: int | None = None

    def __init__(self, api: typing.Any) -> None:
        super().__init__(api)
        self.computation: typing.Any = None

    def execute(self, window: typing.Any) -> None:
        di = self._target(window)
        xdata = di.xdata
        if xdata is None or len(xdata.data_shape) != 2 or getattr(xdata, "is_sequence", False):
            shape = None if xdata is None else tuple(xdata.data_shape)
            raise ValueError(f"Live Defect Counts needs a 2D scan image (a live scan channel); '{di.title}' has "
                             f"shape {shape}. For a recorded sequence use Atomsmith > Track Defects.")
        if pixel_size_nm(xdata) is None:
            raise ValueError(f"Live Defect Counts needs the image axes calibrated in nm; '{di.title}' is not")
        computation = self.api.library.create_computation(
            COMPUTATION_ID, inputs={"src": {"object": di, "type": "data_source"}}, outputs={"counts": None})
        _live_settings[live._key(computation)] = {"fit_frames": int(self.fit_frames), "min_defects": int(self.min_defects),
                                                  "buffer_frames": int(self.buffer_frames), "n_classes": self.n_classes}
        self.computation = computation
        notify("Live Defect Counts", f"attached to {di.title}: the defects of every completed frame are counted; "
               f"classes are fitted on the first {self.fit_frames} frames (delete the counts data item to stop)")


def register(api: typing.Any) -> None:
    """Register the live computation type with Swift."""
    api.register_computation_type(COMPUTATION_ID, LiveDefectCounts)

