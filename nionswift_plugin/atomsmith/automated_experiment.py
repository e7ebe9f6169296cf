"""Automated experiments from Swift: the runner behind the "Automated Experiment" panel.

:class:`AutomatedExperiment` runs :class:`atomsmith.explore.ActiveLearner` on a survey image
(a 2D image calibrated in nm, taken by Swift's scan device so that it is Swift's scan context):
the learner does not scan again, it cuts a patch around every candidate (the pixels of the survey
every ``stride_px``, or the atomic columns found in it), measures a few random seed spectra, then
lets the surrogate (deep kernel learning by default) choose where the next spectrum goes, until
the budget is spent. Each spectrum is reduced to one number by ``criterion(spectrum)``: any
callable, or a text for :func:`atomsmith.explore.criteria.criterion_from` (``"Si"``: the Si edge
integral, ``"N/C"``: an edge ratio, ``"280-300"``: counts in a window, eV). Everything the run
measures is written to disk point by point by the core (``<data>/atomsmith/experiments/<time>/``:
``survey.npz``, ``measurements.jsonl``, ``spectra/``) and the beam is blanked on every way out
(the probe stays parked at the last point). A stopped or failed run can be resumed from its
folder: the stored points count towards the budget and are not measured again.

While it runs (in a background thread, UI changes posted with the window's ``queue_task``):

* every measured point becomes a point graphic on the survey, labelled with its number and value;
* a data item "Automated experiment: predicted ..." with the survey's shape and calibration
  holds the surrogate's predicted criterion map (each pixel shows its nearest candidate), updated
  at each decision and refitted on all points at the end;
* ``listeners`` (e.g. the panel) are called on the UI thread after every point and at the end.

:meth:`AutomatedExperiment.stop` (the panel's Stop button, or "Stop Automated Experiment") stops
the run before its next beam action; the beam is blanked and every stored measurement is kept.
Errors are shown in Swift's notification area and kept in :attr:`AutomatedExperiment.error`; they
never escape into Swift.

Scripting: the runner is ``AtomsmithExtension.handlers["automated_experiment"]``; set its
attributes (``criterion``, ``edge_width_eV``, ``budget``, ``candidates``, ``learner_kwargs``,
``instrument_kwargs``, ``instrument_factory``, ``log_dir``) and call
``start(window, survey_item)`` or ``start(window, survey_item, resume_dir=...)``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
import typing

import numpy as np

from .actions import _MenuItem, _StopItem, log, notify
from .graphics import LENGTH_NM
from .state import STATE

EXPLORE_GRAPHIC_ID = "atomsmith.explore"
#: the start of the predicted map's title (the panel leaves such items out of its survey list)
PREDICTED_TITLE = "Automated experiment: predicted"


class ExperimentStopped(RuntimeError):
    """The user stopped the automated experiment."""


def survey_frame(xdata: typing.Any, to_instrument: typing.Callable[[typing.Any], np.ndarray] | None = None
                 ) -> typing.Any:
    """The selected Swift image as a :class:`~atomsmith.instrument.ScanFrame` in the instrument's nm.

    Swift's calibration offset is the outer edge of pixel 0; ``to_instrument`` maps Swift's
    calibrated scan coordinates (x, y) to the instrument frame (identity when None).

    Raises:
        ValueError: not a real 2D image, or its axes are not calibrated in a length unit with
            square pixels.
    """
    from atomsmith.instrument.protocol import ScanFrame

    if xdata is None:
        raise ValueError("the selected data item holds no data")
    data = np.asarray(xdata.data)
    if data.ndim != 2 or np.iscomplexobj(data) or min(data.shape) < 4:
        raise ValueError(f"the automated experiment needs a real 2D survey image (at least 4 x 4); the selected "
                         f"data item is {data.ndim}D with shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("the survey image contains NaN or inf values")
    cals = list(xdata.dimensional_calibrations)
    scales, offsets = [], []
    for cal in cals:
        f = LENGTH_NM.get(str(cal.units or "").strip())
        if f is None or not (cal.scale and np.isfinite(cal.scale) and cal.scale > 0):
            raise ValueError(f"the survey image must be calibrated in nm (square pixels); its axes have units "
                             f"{[str(c.units) for c in cals]} and scales {[c.scale for c in cals]}")
        scales.append(cal.scale * f)
        offsets.append(cal.offset * f)
    if abs(scales[0] - scales[1]) > 1e-3 * max(scales):
        raise ValueError(f"the survey pixels are not square: {scales[1]:g} x {scales[0]:g} nm")
    px = float(scales[0])
    centre0 = np.array([offsets[1] + px / 2.0, offsets[0] + px / 2.0])  # pixel (0, 0)'s centre, (x, y)
    origin = np.asarray(to_instrument(centre0), float) if to_instrument is not None else centre0
    md = getattr(xdata, "metadata", None) or {}
    dwell = md.get("hardware_source", {}).get("pixel_time_us") or md.get("scan", {}).get("pixel_time_us") or 1.0
    return ScanFrame(image=data.astype(np.float32), pixel_size_nm=px, origin_nm=(float(origin[0]), float(origin[1])),
                     time_s=0.0, dwell_us=float(dwell), metadata={"source": "selected Swift data item"})


def _remove_explore_points(data_item: typing.Any) -> int:
    """Remove the measured-point graphics an earlier run drew on ``data_item``; returns how many."""
    n = 0
    for g in list(data_item.graphics):
        try:
            mine = g.get_property("graphic_id") == EXPLORE_GRAPHIC_ID
        except Exception:  # noqa: BLE001  (a graphic without that property)
            mine = False
        if mine:
            data_item.remove_region(g)
            n += 1
    return n


class _SurveyInstrument:
    """The run's view of the instrument: ``scan`` returns the selected survey (no new exposure);
    every beam action first checks the stop flag; everything else goes to the real instrument."""

    def __init__(self, inner: typing.Any, frame: typing.Any, stop: threading.Event) -> None:
        self._inner, self._frame, self._stop = inner, frame, stop

    def _check(self) -> None:
        if self._stop.is_set():
            raise ExperimentStopped("stopped by the user")

    def scan(self, shape_px: typing.Any, fov_nm: float, dwell_us: float) -> typing.Any:
        self._check()
        return self._frame

    def subscan(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        self._check()
        return self._inner.subscan(*args, **kwargs)

    def park_probe(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        self._check()
        return self._inner.park_probe(*args, **kwargs)

    def acquire_spectrum(self, xy_nm: typing.Any, exposure_ms: float) -> typing.Any:
        self._check()
        return self._inner.acquire_spectrum(xy_nm, exposure_ms)

    def acquire_diffraction(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        self._check()
        return self._inner.acquire_diffraction(*args, **kwargs)

    def blank(self) -> None:
        self._inner.blank()

    @property
    def beam_blanked(self) -> bool | None:
        """The real instrument's read-back of the blank (None where it has none)."""
        return getattr(self._inner, "beam_blanked", None)

    @property
    def beam_on_s(self) -> float | None:
        return getattr(self._inner, "beam_on_s", None)

    @property
    def dose_e_per_A2(self) -> np.ndarray:
        return self._inner.dose_e_per_A2

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self._inner, name)


class _ObservedModel:
    """The surrogate, with every prediction over all candidates handed to ``on_predict``."""

    def __init__(self, inner: typing.Any, on_predict: typing.Callable[[np.ndarray, np.ndarray], None]) -> None:
        self._inner, self._on_predict = inner, on_predict
        self.name = getattr(inner, "name", type(inner).__name__)

    def fit(self, X: np.ndarray, y: np.ndarray, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        return self._inner.fit(X, y, *args, **kwargs)

    def predict(self, X: np.ndarray, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        mean, var = self._inner.predict(X, *args, **kwargs)
        try:
            self._on_predict(np.asarray(mean, float), np.asarray(var, float))
        except Exception:  # noqa: BLE001  (display only: never stop the run)
            log.exception("atomsmith: could not show the predicted map")
        return mean, var

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self._inner, name)


def nearest_candidate_index(candidates_px_xy: np.ndarray, shape_px: tuple[int, int]) -> np.ndarray:
    """(rows, cols) int map: for every pixel of the survey, the index of its nearest candidate.

    ``candidates_px_xy`` are (N, 2) (x, y) survey pixel positions (sub-pixel allowed). Used to
    show per-candidate predictions as an image: pixel candidates fill their stride cell, atomic
    columns their Voronoi cell.
    """
    from scipy.spatial import cKDTree

    c = np.asarray(candidates_px_xy, float).reshape(-1, 2)
    if len(c) == 0:
        raise ValueError("no candidates to map")
    ny, nx = int(shape_px[0]), int(shape_px[1])
    yy, xx = np.mgrid[0:ny, 0:nx]
    _, idx = cKDTree(c).query(np.stack([xx.ravel(), yy.ravel()], 1).astype(float))
    return np.asarray(idx, np.int64).reshape(ny, nx)


class AutomatedExperiment(_MenuItem):
    """Steer the probe over a survey image to where ``criterion(spectrum)`` is highest.

    Attributes (the panel sets them; scripts may too):
        criterion: ``criterion(spectrum) -> float``, or a text for
            :func:`atomsmith.explore.criteria.criterion_from` (default ``"Si"``: Si edge integral).
        edge_width_eV: integration width of the edges of a text criterion, eV.
        budget: points (int, seeds included) or :class:`atomsmith.explore.Budget`.
        candidates: ``"pixels"`` (every ``stride_px`` pixel of the survey) or ``"atoms"`` (the
            columns atomsmith finds in the survey).
        learner_kwargs: more :class:`~atomsmith.explore.ActiveLearner` arguments (``model``,
            ``acquisition``, ``n_seed``, ``exposure_ms``, ``patch_px``, ``stride_px``, ``seed``, ...).
        instrument_factory: ``f(data_item) -> Instrument`` (default: :class:`.NionInstrument`
            for the scan device that took the survey, with ``instrument_kwargs``).
        instrument_kwargs: passed to ``NionInstrument.for_data_item`` (``eels_camera_id``,
            ``field_nm``, ``time_scale``, ...; the EELS camera defaults to the twin's or the
            first camera whose id contains "eels").
        log_dir: where the core writes the next run (default ``<data>/atomsmith/experiments/<time>``).
        listeners: callables ``f(runner)`` run on the UI thread after every point and at the end.

    After a run: :attr:`state` (``"idle"``, ``"running"``, ``"finished"``, ``"stopped"``,
    ``"failed"``), :attr:`result` (:class:`~atomsmith.explore.ExperimentResult`, None when
    stopped or failed), :attr:`measurements` (what is stored), :attr:`n_measured`,
    :attr:`best` ((value, (x, y) nm) of the best point so far), :attr:`stopped`, :attr:`error`,
    :attr:`point_graphics`, :attr:`predicted_item`, :attr:`run_dir`.
    """

    menu_item_name = "Automated Experiment"

    def __init__(self, api: typing.Any, instrument_factory: typing.Callable[[typing.Any], typing.Any] | None = None
                 ) -> None:
        super().__init__(api)
        self.instrument_factory = instrument_factory
        self.instrument_kwargs: dict[str, typing.Any] = {}
        self.criterion: typing.Callable[[typing.Any], float] | str = "Si"
        self.edge_width_eV = 40.0
        self.budget: typing.Any = 50
        self.candidates = "pixels"
        self.learner_kwargs: dict[str, typing.Any] = {}
        self.log_dir: str | pathlib.Path | None = None
        self.listeners: list[typing.Callable[[AutomatedExperiment], None]] = []
        self.show_panel: typing.Callable[[typing.Any], bool] | None = None  # set by the extension
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        self.result: typing.Any = None
        self.measurements: list[typing.Any] = []
        self.error: str | None = None
        self.state = "idle"
        self.point_graphics: list[typing.Any] = []
        self.predicted_item: typing.Any = None
        self.n_measured = 0
        self.best: tuple[float, tuple[float, float]] | None = None
        self.budget_points: int | None = None
        self.run_dir: pathlib.Path | None = None

    # ----------------------------------------------------------------- control
    @property
    def stopped(self) -> bool:
        """Whether the last run was stopped by the user."""
        return self.state == "stopped"

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, wait_s: float | None = None) -> None:
        """Stop before the next beam action (beam blanked, measurements kept); optionally wait."""
        self.stop_event.set()
        if wait_s is not None and self.thread is not None:
            self.thread.join(wait_s)

    def menu_item_execute(self, window: typing.Any) -> None:
        """The menu shows the Automated Experiment panel (a run starts from its Start button)."""
        try:
            if self.show_panel is not None and self.show_panel(window):
                return
        except Exception:  # noqa: BLE001
            log.exception("atomsmith: could not show the Automated Experiment panel")
        notify(self.menu_item_name, "open the panel from Window > Atomsmith Automated Experiment")

    def start(self, window: typing.Any, survey_item: typing.Any = None,
              resume_dir: str | pathlib.Path | None = None) -> bool:
        """Start a run on ``survey_item`` (default: the window's selected data item) in a
        background thread, or continue the run stored in ``resume_dir``. Never raises: a refusal
        is kept in :attr:`error`, shown as a notification, and False is returned."""
        try:
            self.execute(window, survey_item, resume_dir)
            return True
        except Exception as exc:  # noqa: BLE001  (never into Swift)
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            log.exception("atomsmith: %s refused", self.menu_item_name)
            notify(f"{self.menu_item_name} refused", self.error)
            self._notify_listeners()
            return False

    def _notify_listeners(self) -> None:
        for f in list(self.listeners):
            try:
                f(self)
            except Exception:  # noqa: BLE001  (display only)
                log.exception("atomsmith: an automated-experiment listener failed")

    def _instrument(self, data_item: typing.Any) -> typing.Any:
        from .instrument_adapter import instrument_for

        return instrument_for(self.api, data_item, self.instrument_factory, self.instrument_kwargs, eels=True)

    def _criterion(self) -> typing.Callable[[typing.Any], float]:
        c = self.criterion
        if isinstance(c, str):
            from atomsmith.explore.criteria import criterion_from

            return criterion_from(c, self.edge_width_eV)
        if not callable(c):
            raise TypeError(f"criterion={c!r} must be callable as criterion(spectrum) -> float or a text "
                            f"such as \"Si\", \"N/C\" or \"280-300\"")
        return c

    # ----------------------------------------------------------------- the run
    def execute(self, window: typing.Any, survey_item: typing.Any = None,
                resume_dir: str | pathlib.Path | None = None) -> None:
        """As :meth:`start`, but errors are raised."""
        from atomsmith.explore import (
            ActiveLearner,
            Budget,
            ExperimentInterrupted,
            MeasurementLog,
            make_model,
        )

        if self.running:
            raise RuntimeError("an automated experiment is running; stop it first")
        self._reset()
        di = survey_item if survey_item is not None else self._target(window)
        frame = survey_frame(di.xdata)  # refuse a bad survey before touching the instrument
        criterion = self._criterion()
        budget = Budget.coerce(self.budget)
        kw = dict(self.learner_kwargs)
        fixed = {"candidates", "survey_shape_px", "survey_fov_nm", "dwell_us", "budget"} & set(kw)
        if fixed:
            raise ValueError(f"learner_kwargs {sorted(fixed)} are set by the survey / the budget / the "
                             f"candidates attribute here")
        if self.candidates not in ("pixels", "atoms"):
            raise ValueError(f"candidates={self.candidates!r} must be 'pixels' or 'atoms'")
        stride = int(kw.pop("stride_px", 1))
        if stride < 1:
            raise ValueError(f"stride_px={stride} must be >= 1")
        seed = int(kw.get("seed", 0))
        model_name = kw.pop("model", "dkl")
        if isinstance(model_name, str) and model_name.lower() == "random":
            raise ValueError("model='random' has no predicted map; use 'dkl' or 'gp'")
        shape = frame.shape_px
        if self.candidates == "pixels":
            n_cand = len(range(0, shape[0], stride)) * len(range(0, shape[1], stride))
            if budget.points is not None and budget.points > n_cand:
                raise ValueError(f"budget of {budget.points} points exceeds the {n_cand} candidates")
        stored: list[typing.Any] = []
        if resume_dir is not None:
            run_dir = pathlib.Path(resume_dir)
            log_ = MeasurementLog(run_dir)
            if not log_.has_survey():
                raise FileNotFoundError(f"{run_dir} holds no automated experiment to resume")
            with np.load(log_.survey_path) as f:
                stored_shape = tuple(f["image"].shape)
            if stored_shape != shape:
                raise ValueError(f"the run in {run_dir} was made on a {stored_shape} survey; "
                                 f"choose that survey (this one is {shape})")
            stored = log_.read()
        else:
            run_dir = pathlib.Path(self.log_dir) if self.log_dir is not None else (
                STATE.new_run_dir("experiments"))
            if (run_dir / "survey.npz").exists():
                raise FileExistsError(f"{run_dir} holds a run already; resume it or choose another log_dir")
        instrument = self._instrument(di)
        to_instrument = getattr(instrument, "calibrated_to_instrument_nm", None)
        if to_instrument is not None:  # Swift's scan coordinates -> the instrument's field
            origin = np.asarray(to_instrument(np.asarray(frame.origin_nm, float)), float)
            frame = dataclasses.replace(frame, origin_nm=(float(origin[0]), float(origin[1])))
        self.run_dir = run_dir
        self.budget_points = budget.points

        # the predicted map: a data item with the survey's shape and calibration
        from nion.data import DataAndMetadata

        cals = list(di.xdata.dimensional_calibrations)

        def xdata_of(m: np.ndarray, md: dict) -> typing.Any:
            return DataAndMetadata.new_data_and_metadata(m, dimensional_calibrations=cals, metadata={"atomsmith": md})

        title = f"{PREDICTED_TITLE} {criterion!r}"
        self.predicted_item = self.api.library.create_data_item_from_data_and_metadata(
            xdata_of(np.zeros(shape, np.float32), {"n_points": 0, "log_dir": str(run_dir)}), title)
        predicted_item = self.predicted_item
        try:  # shown in the window's result panel, as Swift shows processing results (if one is set)
            window.display_data_item(predicted_item)
        except Exception:  # noqa: BLE001
            log.debug("atomsmith: no result panel for the predicted map")
        lock = threading.Lock()
        latest: dict[str, typing.Any] = {}
        nearest: dict[str, np.ndarray] = {}

        def on_predict(mean: np.ndarray, var: np.ndarray) -> None:  # worker thread
            candidates = learner.candidates_xy_nm
            if candidates is None or len(mean) != len(candidates):  # not a prediction over all candidates
                return
            if "idx" not in nearest:
                nearest["idx"] = nearest_candidate_index(frame.nm_to_pixel(candidates), shape)
            m = np.asarray(mean, np.float32)[nearest["idx"]]
            with lock:
                pending = "map" in latest
                latest["map"] = (m, self.n_measured)
            if not pending:
                window.queue_task(show_map)

        def show_map() -> None:  # UI thread: the newest map only
            with lock:
                m, n = latest.pop("map", (None, 0))
            if m is None:
                return
            try:
                predicted_item.set_data_and_metadata(xdata_of(m, {"n_points": n, "log_dir": str(run_dir)}))
            except Exception:  # noqa: BLE001  (the item was deleted by the user)
                log.exception("atomsmith: could not update the predicted map")

        def on_value(xy_nm: typing.Any, value: float) -> None:  # worker thread
            self.n_measured += 1
            number = self.n_measured
            if np.isfinite(value) and (self.best is None or value > self.best[0]):
                self.best = (float(value), (float(xy_nm[0]), float(xy_nm[1])))
            col, row = frame.nm_to_pixel(np.asarray(xy_nm, float))

            def add() -> None:
                try:
                    g = di.add_point_region((row + 0.5) / shape[0], (col + 0.5) / shape[1])
                    g.label = f"{number}: {value:.3g}"
                    try:
                        g.set_property("graphic_id", EXPLORE_GRAPHIC_ID)
                    except Exception:  # noqa: BLE001
                        pass
                    self.point_graphics.append(g)
                except Exception:  # noqa: BLE001
                    log.exception("atomsmith: could not draw a measured point")
                self._notify_listeners()

            window.queue_task(add)

        if stored:  # a resumed run shows what it has already: its points, once
            _remove_explore_points(di)
        for m in stored:
            on_value(m.xy_nm, float(m.value))

        def observed_criterion(spectrum: typing.Any) -> float:
            try:
                v = float(criterion(spectrum))
            except (ArithmeticError, ValueError):
                v = float("nan")
            on_value(spectrum.xy_nm, v)
            return v

        surrogate = _ObservedModel(make_model(model_name, seed=seed, **(kw.pop("model_options", None) or {})),
                                   on_predict)
        proxy = _SurveyInstrument(instrument, frame, self.stop_event)
        common = dict(budget=budget, model=surrogate, survey_shape_px=shape, survey_fov_nm=frame.fov_nm[1],
                      dwell_us=frame.dwell_us, candidates=self.candidates, stride_px=stride, **kw)
        if resume_dir is not None:
            learner = ActiveLearner.resume(run_dir, proxy, observed_criterion, **common)
        else:
            learner = ActiveLearner(proxy, observed_criterion, run_dir, **common)

        self.stop_event.clear()
        self.state = "running"

        def work() -> None:
            from atomsmith.instrument import BeamSafetyError

            try:
                if learner.features is None:
                    learner.survey()
                res = learner.run()
                self.result, self.measurements = res, list(res.measurements)
                try:
                    mean, var = res.learning.predict()
                    on_predict(mean, var)
                except Exception:  # noqa: BLE001  (the map from the last decision stays)
                    log.exception("atomsmith: final prediction failed")
                b = res.best
                self.state = "finished"
                notify("Automated Experiment", f"{len(res.measurements)} points ({res.stop_reason}); best "
                       f"{b.value:.3g} at ({b.xy_nm[0]:.3f}, {b.xy_nm[1]:.3f}) nm; beam blanked; log in {run_dir}")
            except BeamSafetyError as exc:  # the alarm: the beam may still be on the sample
                self.error, self.state = f"BEAM NOT BLANKED: {exc}", "failed"
                self.measurements = list(exc.result or [])
                log.error("atomsmith: Automated Experiment: %s", self.error)
                notify("BEAM NOT BLANKED", f"{exc}; {len(self.measurements)} points kept in {run_dir}")
            except ExperimentInterrupted as exc:
                self.measurements = list(exc.measurements)
                if isinstance(exc.__cause__, ExperimentStopped):
                    self.state = "stopped"
                    notify("Automated Experiment stopped", f"{len(exc.measurements)} points kept in {run_dir}; "
                           "beam blanked")
                else:
                    self.error, self.state = str(exc), "failed"
                    log.exception("atomsmith: Automated Experiment stopped")
                    notify("Automated Experiment failed", f"{exc}; beam blanked, log in {run_dir}")
            except Exception as exc:  # noqa: BLE001
                self.state = "stopped" if isinstance(exc, ExperimentStopped) else "failed"
                self.error = None if self.stopped else f"{type(exc).__name__}: {exc}"
                if not self.stopped:
                    log.exception("atomsmith: Automated Experiment failed")
                    notify("Automated Experiment failed", self.error)
                try:
                    instrument.blank()
                except Exception:  # noqa: BLE001
                    pass
                try:
                    self.measurements = MeasurementLog(run_dir).read()
                except Exception:  # noqa: BLE001
                    pass
            finally:
                window.queue_task(self._notify_listeners)

        self.thread = threading.Thread(target=work, name="atomsmith automated experiment", daemon=True)
        self.thread.start()


class StopAutomatedExperiment(_StopItem):
    """Stop the running automated experiment (beam blanked; measurements kept on disk)."""

    menu_item_name = "Stop Automated Experiment"
    idle_text = "no automated experiment is running"

    def __init__(self, api: typing.Any, runner: AutomatedExperiment) -> None:
        super().__init__(api, runner.stop, lambda: runner.running)
        self.runner = runner
