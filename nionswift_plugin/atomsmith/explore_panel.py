"""Automated experiments from Swift: "Automated Experiment" runs :class:`atomsmith.explore.ActiveLearner`
on the selected survey image; "Stop Automated Experiment" stops it.

The selected data item is the survey (a 2D image calibrated in nm, taken by Swift's scan device
so that it is Swift's scan context): the learner does not scan again, it cuts a patch around
every candidate pixel of this image (``stride_px``), measures a few random seed spectra, then
lets the surrogate (deep kernel learning by default) choose where the next spectrum goes, until
the ``budget`` is spent. Each spectrum is reduced to one number by ``criterion(spectrum)``; the
default is the background-subtracted edge integral of ``element`` (:func:`atomsmith.eels.edge_map`,
onset from atomsmith's edge table). Everything the run measures is written to disk point by point
by the core (``<data>/atomsmith/experiments/<time>/``: ``survey.npz``, ``measurements.jsonl``,
``spectra/``) and the beam is blanked on every way out (the probe stays parked at the last point).

While it runs (in a background thread, UI changes posted with the window's ``queue_task``):

* every measured point becomes a point graphic on the survey, labelled with its number and value;
* a data item "Automated experiment: predicted ..." with the survey's shape and calibration
  holds the surrogate's predicted criterion map, updated at each decision and refitted on all
  points at the end.

"Stop Automated Experiment" (or :meth:`AutomatedExperiment.stop`) stops the run before its next
beam action; the beam is blanked and every stored measurement is kept. Errors are shown in Swift's
notification area and kept in :attr:`AutomatedExperiment.error`; they never escape into Swift.

Scripting: the handler is ``AtomsmithExtension.handlers["automated_experiment"]``; set its
attributes before running (``criterion``, ``element``, ``edge_width_eV``, ``budget``,
``learner_kwargs``, ``instrument_kwargs``, ``instrument_factory``, ``log_dir``).
"""

from __future__ import annotations

import datetime
import pathlib
import threading
import typing

import numpy as np

from .actions import _MenuItem, log, notify
from .state import STATE

EXPLORE_GRAPHIC_ID = "atomsmith.explore"
_LENGTH_NM = {"nm": 1.0, "Å": 0.1, "A": 0.1, "pm": 1e-3, "um": 1e3, "µm": 1e3}


class ExperimentStopped(RuntimeError):
    """The user stopped the automated experiment."""


class EdgeCriterion:
    """``criterion(spectrum)``: background-subtracted edge integral (counts) of ``element``.

    The onset comes from :data:`atomsmith.simulate.eels.EDGES`; a power law is fitted over the
    default pre-edge window (:func:`atomsmith.eels.edge_map`). NaN when the fit fails.

    Args:
        element: element symbol with an edge in atomsmith's table (e.g. ``"Si"``, ``"N"``, ``"Ti"``).
        width_eV: integration width above the onset, eV.
    """

    def __init__(self, element: str = "Si", width_eV: float = 40.0) -> None:
        from atomsmith.simulate.eels import EDGES

        if element not in EDGES:
            raise ValueError(f"unknown element {element!r}; known edges: {', '.join(EDGES)}")
        self.element, self.width_eV = str(element), float(width_eV)
        self.onset_eV = float(EDGES[element].onset_eV)

    def __call__(self, spectrum: typing.Any) -> float:
        from atomsmith.eels import edge_map

        counts = np.asarray(spectrum.counts, float)[None]
        return float(np.asarray(edge_map(counts, spectrum.energy_eV, self.onset_eV, self.width_eV)).ravel()[0])

    def __repr__(self) -> str:
        return f"{self.element} edge ({self.onset_eV:g} eV + {self.width_eV:g} eV)"


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
        f = _LENGTH_NM.get(str(cal.units or "").strip())
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

    def park_probe(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        self._check()
        self._inner.park_probe(*args, **kwargs)

    def acquire_spectrum(self, xy_nm: typing.Any, exposure_ms: float) -> typing.Any:
        self._check()
        return self._inner.acquire_spectrum(xy_nm, exposure_ms)

    def acquire_diffraction(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        self._check()
        return self._inner.acquire_diffraction(*args, **kwargs)

    def blank(self) -> None:
        self._inner.blank()

    @property
    def dose_e_per_A2(self) -> np.ndarray:
        return self._inner.dose_e_per_A2

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self._inner, name)


class _ObservedModel:
    """The surrogate, with every prediction over all candidates handed to ``on_predict``."""

    def __init__(self, inner: typing.Any, n_candidates: int,
                 on_predict: typing.Callable[[np.ndarray, np.ndarray], None]) -> None:
        self._inner, self._n, self._on_predict = inner, int(n_candidates), on_predict
        self.name = getattr(inner, "name", type(inner).__name__)

    def fit(self, X: np.ndarray, y: np.ndarray, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        return self._inner.fit(X, y, *args, **kwargs)

    def predict(self, X: np.ndarray, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        mean, var = self._inner.predict(X, *args, **kwargs)
        if len(X) == self._n:
            try:
                self._on_predict(np.asarray(mean, float), np.asarray(var, float))
            except Exception:  # noqa: BLE001  (display only: never stop the run)
                log.exception("atomsmith: could not show the predicted map")
        return mean, var

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self._inner, name)


def candidate_grid(shape_px: tuple[int, int], stride_px: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, 2) (row, col) of the learner's ``"pixels"`` candidates and the grid's shape."""
    ny, nx = int(shape_px[0]), int(shape_px[1])
    s = int(stride_px)
    yy, xx = np.mgrid[0:ny:s, 0:nx:s]
    return np.stack([yy.ravel(), xx.ravel()], 1), yy.shape


def candidate_map(values: np.ndarray, grid_shape: tuple[int, int], stride_px: int,
                  shape_px: tuple[int, int]) -> np.ndarray:
    """Per-candidate values as an image of the survey's shape (each value fills its stride cell)."""
    m = np.asarray(values, np.float32).reshape(grid_shape)
    s = int(stride_px)
    if s > 1:
        m = np.repeat(np.repeat(m, s, axis=0), s, axis=1)
    return np.ascontiguousarray(m[: shape_px[0], : shape_px[1]])


class AutomatedExperiment(_MenuItem):
    """Steer the probe over the selected survey to where ``criterion(spectrum)`` is highest.

    Attributes (set from a script before running):
        criterion: ``criterion(spectrum) -> float`` (None: :class:`EdgeCriterion` of ``element``).
        element, edge_width_eV: the default criterion's edge.
        budget: points (int, seeds included) or :class:`atomsmith.explore.Budget`.
        learner_kwargs: more :class:`~atomsmith.explore.ActiveLearner` arguments (``model``,
            ``acquisition``, ``n_seed``, ``exposure_ms``, ``patch_px``, ``stride_px``, ``seed``, ...).
        instrument_factory: ``f(data_item) -> Instrument`` (default: :class:`.NionInstrument`
            for the scan device that took the survey, with ``instrument_kwargs``).
        instrument_kwargs: passed to ``NionInstrument.for_data_item`` (``eels_camera_id``,
            ``field_nm``, ``time_scale``, ...; the EELS camera defaults to the twin's or the
            first camera whose id contains "eels").
        log_dir: where the core writes the run (default ``<data>/atomsmith/experiments/<time>``).

    After a run: :attr:`result` (:class:`~atomsmith.explore.ExperimentResult`, None when stopped
    or failed), :attr:`measurements` (what is stored), :attr:`stopped`, :attr:`error`,
    :attr:`point_graphics`, :attr:`predicted_item`, :attr:`run_dir`.
    """

    menu_item_name = "Automated Experiment"

    def __init__(self, api: typing.Any, instrument_factory: typing.Callable[[typing.Any], typing.Any] | None = None
                 ) -> None:
        super().__init__(api)
        self.instrument_factory = instrument_factory
        self.instrument_kwargs: dict[str, typing.Any] = {}
        self.criterion: typing.Callable[[typing.Any], float] | None = None
        self.element = "Si"
        self.edge_width_eV = 40.0
        self.budget: typing.Any = 50
        self.learner_kwargs: dict[str, typing.Any] = {}
        self.log_dir: str | pathlib.Path | None = None
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        self.result: typing.Any = None
        self.measurements: list[typing.Any] = []
        self.error: str | None = None
        self.stopped = False
        self.point_graphics: list[typing.Any] = []
        self.predicted_item: typing.Any = None
        self.predicted_mean: np.ndarray | None = None
        self.n_updates = 0
        self.run_dir: pathlib.Path | None = None

    # ----------------------------------------------------------------- control
    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, wait_s: float | None = None) -> None:
        """Stop before the next beam action (beam blanked, measurements kept); optionally wait."""
        self.stop_event.set()
        if wait_s is not None and self.thread is not None:
            self.thread.join(wait_s)

    def menu_item_execute(self, window: typing.Any) -> None:
        try:
            self.execute(window)
        except Exception as exc:  # noqa: BLE001  (never into Swift)
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("atomsmith: %s failed", self.menu_item_name)
            notify(f"{self.menu_item_name} refused", self.error)

    def _instrument(self, data_item: typing.Any) -> typing.Any:
        if self.instrument_factory is not None:
            return self.instrument_factory(data_item)
        from .instrument_adapter import NionInstrument

        kwargs = dict(self.instrument_kwargs)
        kwargs.setdefault("eels_camera_id", _find_eels_camera())
        return NionInstrument.for_data_item(self.api, data_item, **kwargs)

    # ----------------------------------------------------------------- the run
    def execute(self, window: typing.Any) -> None:
        from atomsmith.explore import ActiveLearner, Budget, ExperimentInterrupted, make_model

        if self.running:
            raise RuntimeError("an automated experiment is running; stop it first "
                               "(Atomsmith > Stop Automated Experiment)")
        self._reset()
        di = self._target(window)
        survey_frame(di.xdata)  # refuse a bad survey before touching the instrument
        instrument = self._instrument(di)
        frame = survey_frame(di.xdata, getattr(instrument, "calibrated_to_instrument_nm", None))
        criterion = self.criterion if self.criterion is not None else EdgeCriterion(self.element, self.edge_width_eV)
        budget = Budget.coerce(self.budget)
        kw = dict(self.learner_kwargs)
        fixed = {"candidates", "survey_shape_px", "survey_fov_nm", "dwell_us", "budget"} & set(kw)
        if fixed:
            raise ValueError(f"learner_kwargs {sorted(fixed)} are set by the survey / the budget attribute here")
        stride = int(kw.pop("stride_px", 1))
        seed = int(kw.get("seed", 0))
        model_name = kw.pop("model", "dkl")
        if isinstance(model_name, str) and model_name.lower() == "random":
            raise ValueError("model='random' has no predicted map; use 'dkl' or 'gp'")
        shape = frame.shape_px
        yx, grid_shape = candidate_grid(shape, stride)
        if budget.points is not None and budget.points > len(yx):
            raise ValueError(f"budget of {budget.points} points exceeds the {len(yx)} candidates")
        run_dir = pathlib.Path(self.log_dir) if self.log_dir is not None else (
            STATE._dir("experiments") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
        if (run_dir / "survey.npz").exists():
            raise FileExistsError(f"{run_dir} holds a run already; choose another log_dir")
        self.run_dir = run_dir

        # the predicted map: a data item with the survey's shape and calibration
        from nion.data import DataAndMetadata

        cals = list(di.xdata.dimensional_calibrations)

        def xdata_of(m: np.ndarray, md: dict) -> typing.Any:
            return DataAndMetadata.new_data_and_metadata(m, dimensional_calibrations=cals, metadata={"atomsmith": md})

        title = f"Automated experiment: predicted {criterion!r}"
        self.predicted_item = self.api.library.create_data_item_from_data_and_metadata(
            xdata_of(np.zeros(shape, np.float32), {"n_points": 0, "log_dir": str(run_dir)}), title)
        predicted_item = self.predicted_item
        survey_item = di
        lock = threading.Lock()
        latest: dict[str, typing.Any] = {}
        n_measured = [0]

        def on_predict(mean: np.ndarray, var: np.ndarray) -> None:  # worker thread
            m = candidate_map(mean, grid_shape, stride, shape)
            with lock:
                pending = "map" in latest
                latest["map"] = (m, n_measured[0])
                self.predicted_mean = m
            if not pending:
                window.queue_task(show_map)

        def show_map() -> None:  # UI thread: the newest map only
            with lock:
                m, n = latest.pop("map", (None, 0))
            if m is None:
                return
            try:
                predicted_item.set_data_and_metadata(xdata_of(m, {"n_points": n, "log_dir": str(run_dir)}))
                self.n_updates += 1
            except Exception:  # noqa: BLE001  (the item was deleted by the user)
                log.exception("atomsmith: could not update the predicted map")

        def on_value(xy_nm: typing.Any, value: float) -> None:  # worker thread
            n_measured[0] += 1
            number = n_measured[0]
            col, row = frame.nm_to_pixel(np.asarray(xy_nm, float))

            def add() -> None:
                try:
                    g = survey_item.add_point_region((row + 0.5) / shape[0], (col + 0.5) / shape[1])
                    g.label = f"{number}: {value:.3g}"
                    try:
                        g.set_property("graphic_id", EXPLORE_GRAPHIC_ID)
                    except Exception:  # noqa: BLE001
                        pass
                    self.point_graphics.append(g)
                except Exception:  # noqa: BLE001
                    log.exception("atomsmith: could not draw a measured point")

            window.queue_task(add)

        def observed_criterion(spectrum: typing.Any) -> float:
            try:
                v = float(criterion(spectrum))
            except (ArithmeticError, ValueError):
                v = float("nan")
            on_value(spectrum.xy_nm, v)
            return v

        surrogate = _ObservedModel(make_model(model_name, seed=seed, **(kw.pop("model_options", None) or {})),
                                   len(yx), on_predict)
        proxy = _SurveyInstrument(instrument, frame, self.stop_event)
        learner = ActiveLearner(proxy, observed_criterion, run_dir, budget=budget, model=surrogate,
                                survey_shape_px=shape, survey_fov_nm=frame.fov_nm[1], dwell_us=frame.dwell_us,
                                candidates="pixels", stride_px=stride, **kw)
        self.stop_event.clear()

        def work() -> None:
            try:
                res = learner.run()
                self.result, self.measurements = res, list(res.measurements)
                try:
                    mean, var = res.learning.predict()
                    on_predict(mean, var)
                except Exception:  # noqa: BLE001  (the map from the last decision stays)
                    log.exception("atomsmith: final prediction failed")
                b = res.best
                notify("Automated Experiment", f"{len(res.measurements)} points ({res.stop_reason}); best "
                       f"{b.value:.3g} at ({b.xy_nm[0]:.3f}, {b.xy_nm[1]:.3f}) nm; beam blanked; log in {run_dir}")
            except ExperimentInterrupted as exc:
                self.measurements = list(exc.measurements)
                if isinstance(exc.__cause__, ExperimentStopped):
                    self.stopped = True
                    notify("Automated Experiment stopped", f"{len(exc.measurements)} points kept in {run_dir}; "
                           "beam blanked")
                else:
                    self.error = str(exc)
                    log.exception("atomsmith: Automated Experiment stopped")
                    notify("Automated Experiment failed", f"{exc}; beam blanked, log in {run_dir}")
            except Exception as exc:  # noqa: BLE001
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("atomsmith: Automated Experiment failed")
                notify("Automated Experiment failed", self.error)
                try:
                    instrument.blank()
                except Exception:  # noqa: BLE001
                    pass

        self.thread = threading.Thread(target=work, name="atomsmith automated experiment", daemon=True)
        self.thread.start()


def _find_eels_camera() -> str | None:
    """The twin's EELS camera when registered, else the first hardware source with "eels" in its id."""
    try:
        from nion.instrumentation import HardwareSource

        from .swift_twin import TWIN_EELS_ID

        manager = HardwareSource.HardwareSourceManager()
        if manager.get_hardware_source_for_hardware_source_id(TWIN_EELS_ID) is not None:
            return TWIN_EELS_ID
        for hs in manager.hardware_sources:
            if "eels" in str(getattr(hs, "hardware_source_id", "")).lower():
                return hs.hardware_source_id
    except Exception:  # noqa: BLE001
        pass
    return None


class StopAutomatedExperiment(_MenuItem):
    """Stop the running automated experiment (beam blanked; measurements kept on disk)."""

    menu_item_name = "Stop Automated Experiment"

    def __init__(self, api: typing.Any, runner: AutomatedExperiment) -> None:
        super().__init__(api)
        self.runner = runner

    def execute(self, window: typing.Any) -> None:
        if not self.runner.running:
            notify("Stop Automated Experiment", "no automated experiment is running")
            return
        self.runner.stop()
