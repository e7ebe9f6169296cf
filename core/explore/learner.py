"""The automated experiment on an :class:`~atomsmith.instrument.Instrument`: survey, candidates,
spectra at chosen positions, a physics criterion, stored point by point, beam safe on any exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .criteria import evaluate
from .loop import ActiveLearningResult, Budget, active_learning
from .scenes import cut_patches
from .storage import Measurement, MeasurementLog

if TYPE_CHECKING:  # type hints only: importing atomsmith.instrument loads the simulator
    from ..instrument.protocol import Instrument, Spectrum


class ExperimentInterrupted(RuntimeError):
    """The run stopped on an error; the beam was blanked and every measurement so far is stored.

    Attributes:
        measurements: the stored measurements (also in the log directory).
        log_dir: the log directory (pass it to :meth:`ActiveLearner.resume`).
    """

    def __init__(self, message: str, measurements: list[Measurement], log_dir: Path) -> None:
        super().__init__(message)
        self.measurements = measurements
        self.log_dir = log_dir


class _BudgetSpent(Exception):
    pass


@dataclass(frozen=True, eq=False)
class ExperimentResult:
    """What an :class:`ActiveLearner` run produced.

    Attributes:
        measurements: every stored measurement, in order (resumed runs included).
        candidates_xy_nm: (N, 2) candidate positions, nm.
        survey_image: the survey frame's image.
        stop_reason: ``"points"``, ``"time"``, ``"dose"`` or ``"exhausted"``.
        learning: the loop's :class:`ActiveLearningResult` (``predict()`` maps the criterion).
    """

    measurements: list[Measurement]
    candidates_xy_nm: np.ndarray
    survey_image: np.ndarray
    stop_reason: str
    learning: ActiveLearningResult | None = field(default=None, repr=False)

    @property
    def values(self) -> np.ndarray:
        """(n,) criterion values in measurement order."""
        return np.array([m.value for m in self.measurements], float)

    @property
    def indices(self) -> np.ndarray:
        """(n,) candidate indices in measurement order."""
        return np.array([m.index for m in self.measurements], int)

    @property
    def best(self) -> Measurement:
        """The measurement with the highest criterion value."""
        v = np.where(np.isfinite(self.values), self.values, -np.inf)
        return self.measurements[int(np.argmax(v))]

    def to_dict(self) -> dict:
        """Measurements and arrays as a dict."""
        return {"measurements": [m.to_dict() for m in self.measurements],
                "candidates_xy_nm": self.candidates_xy_nm, "survey_image": self.survey_image,
                "stop_reason": self.stop_reason}


def local_maxima_yx(image: np.ndarray, min_distance_px: int = 2, threshold_rel: float = 0.2) -> np.ndarray:
    """(M, 2) integer (row, col) of local maxima of a lightly smoothed image (quick atom finder)."""
    from scipy.ndimage import gaussian_filter
    from skimage.feature import peak_local_max

    sm = gaussian_filter(np.asarray(image, float), 1.0)
    return peak_local_max(sm, min_distance=int(min_distance_px), threshold_rel=threshold_rel, exclude_border=False)


class ActiveLearner:
    """Steer the probe to where a physics criterion of the spectrum is highest.

    The run: scan a survey image; cut a patch around every candidate position (all pixels on a
    ``stride_px`` grid, or the local maxima = atoms, or positions you give); measure a few
    random seed spectra; then fit the surrogate to (patch, criterion) pairs, pick the next
    position by the acquisition, acquire its spectrum, repeat until the budget is spent.
    Each measurement (position, instrument time, spectrum, criterion) is written to
    ``log_dir`` when it arrives; :meth:`resume` continues an interrupted run from there.
    On every way out the beam is blanked (the probe stays parked at the last position); an
    error is re-raised as :class:`ExperimentInterrupted`.

    Args:
        instrument: anything implementing :class:`~atomsmith.instrument.Instrument`.
        criterion: ``criterion(spectrum) -> float`` (e.g. an edge ratio); NaN allowed.
        log_dir: directory of the on-disk record.
        budget: int (points, seeds included) or :class:`Budget` (points, wall ``time_s``,
            peak ``dose_e_per_A2`` on the instrument's dose map).
        model, acquisition, n_seed, beta, batch_size, model_options, seed: as
            :func:`~atomsmith.explore.active_learning`.
        survey_shape_px: survey scan size (rows, cols).
        survey_fov_nm: survey field of view, nm (default: the instrument's ``field_nm`` width
            when it has one, else 4 nm).
        dwell_us: survey dwell per pixel, us.
        exposure_ms: spectrum exposure, ms.
        patch_px: patch side, px.
        candidates: ``"pixels"``, ``"atoms"`` (the atomic columns found in the survey with
            :func:`~atomsmith.atoms.find_atoms`: dopants and defects sit on columns, so this is
            what a microscopist probes; give the survey enough pixels to resolve the lattice,
            e.g. ~0.02-0.03 nm per pixel) or an (N, 2) array of positions in nm.
        stride_px: candidate grid step for ``"pixels"``.
        travel_penalty: acquisition units (standardised) per nm of probe travel.
        atom_finder: ``model`` of :func:`~atomsmith.atoms.find_atoms` for ``"atoms"``
            (``"generic"``, ``"classical"``, an ``AtomFinder``, or ``"maxima"`` for plain local
            maxima of the smoothed survey); if the finder fails, local maxima are used.
        seed_design: ``"diverse"``, ``"mixed"`` or ``"random"`` seed points, see
            :func:`~atomsmith.explore.active_learning`.
        progress: tqdm progress bar.
    """

    def __init__(self, instrument: Instrument, criterion: Callable[[Spectrum], float], log_dir: str | Path, *,
                 budget: int | Budget = 50, model: str | object = "dkl", acquisition: str = "ucb",
                 n_seed: int = 5, beta: float = 4.0, batch_size: int = 1, model_options: dict | None = None,
                 survey_shape_px: tuple[int, int] = (64, 64), survey_fov_nm: float | None = None,
                 dwell_us: float = 2.0, exposure_ms: float = 10.0, patch_px: int = 8,
                 candidates: str | np.ndarray = "pixels", stride_px: int = 1, travel_penalty: float = 0.0,
                 atom_finder: str | object = "generic", seed_design: str = "diverse", seed: int = 0,
                 progress: bool = False) -> None:
        self.instrument = instrument
        self.criterion = criterion
        self.log = MeasurementLog(log_dir)
        self.budget = Budget.coerce(budget)
        self.model, self.acquisition = model, acquisition
        self.n_seed, self.beta, self.batch_size = int(n_seed), float(beta), int(batch_size)
        self.model_options = model_options
        self.survey_shape_px = (int(survey_shape_px[0]), int(survey_shape_px[1]))
        if survey_fov_nm is None:
            fld = getattr(instrument, "field_nm", None)
            survey_fov_nm = float(min(fld)) * 0.98 if fld is not None else 4.0
        self.survey_fov_nm = float(survey_fov_nm)
        self.dwell_us, self.exposure_ms = float(dwell_us), float(exposure_ms)
        if not (self.dwell_us > 0 and self.exposure_ms > 0):
            raise ValueError(f"dwell_us={dwell_us} and exposure_ms={exposure_ms} must be > 0")
        self.patch_px, self.candidates, self.stride_px = int(patch_px), candidates, int(stride_px)
        self.travel_penalty, self.seed, self.progress = float(travel_penalty), int(seed), bool(progress)
        self.atom_finder = atom_finder
        self.seed_design = str(seed_design)
        self.candidates_xy_nm: np.ndarray | None = None
        self.features: np.ndarray | None = None
        self.survey_image: np.ndarray | None = None

    # ------------------------------------------------------------------ survey
    def survey(self) -> None:
        """Scan the survey, choose candidates, cut their patches and store all of it."""
        frame = self.instrument.scan(self.survey_shape_px, self.survey_fov_nm, self.dwell_us)
        img = np.asarray(frame.image, np.float32)
        ny, nx = img.shape
        if isinstance(self.candidates, str):
            if self.candidates == "pixels":
                s = self.stride_px
                yy, xx = np.mgrid[0:ny:s, 0:nx:s]
                yx = np.stack([yy.ravel(), xx.ravel()], 1)
                xy_nm = frame.pixel_to_nm(yx[:, ::-1].astype(float))
            elif self.candidates == "atoms":
                xy_px = self._find_atoms(img, frame.pixel_size_nm)
                inside = np.all((xy_px >= 0) & (xy_px <= np.array([nx - 1, ny - 1])), axis=1)
                xy_px = xy_px[inside]
                yx = np.rint(xy_px[:, ::-1]).astype(int)
                xy_nm = frame.pixel_to_nm(xy_px)
            else:
                raise ValueError(f"candidates={self.candidates!r} must be 'pixels', 'atoms' or an (N, 2) nm array")
        else:
            xy_nm = np.asarray(self.candidates, float).reshape(-1, 2)
            yx = np.rint(frame.nm_to_pixel(xy_nm)[:, ::-1]).astype(int)
            if np.any((yx < 0) | (yx >= np.array([ny, nx]))):
                raise ValueError("some candidate positions lie outside the survey frame")
        if len(yx) < 2:
            raise ValueError(f"only {len(yx)} candidate(s) found in the survey")
        feats = cut_patches(img, yx, self.patch_px)
        self.log.write_survey(image=img, pixel_size_nm=frame.pixel_size_nm, origin_nm=frame.origin_nm,
                              time_s=frame.time_s, candidates_xy_nm=xy_nm, features=feats,
                              settings={"patch_px": self.patch_px, "fov_nm": self.survey_fov_nm,
                                        "dwell_us": self.dwell_us, "exposure_ms": self.exposure_ms})
        self._load_survey()

    def _find_atoms(self, img: np.ndarray, pixel_size_nm: float) -> np.ndarray:
        """(M, 2) sub-pixel (x, y) positions of the atomic columns in the survey."""
        if not (isinstance(self.atom_finder, str) and self.atom_finder == "maxima"):
            try:
                from ..atoms import find_atoms

                xy = np.asarray(find_atoms(img, pixel_size_nm=pixel_size_nm, model=self.atom_finder).xy, float)
                if len(xy) >= 2:
                    return xy.reshape(-1, 2)
            except (ValueError, RuntimeError, ImportError):  # no lattice found, no weights, ...
                pass
        return local_maxima_yx(img)[:, ::-1].astype(float)

    def _load_survey(self) -> None:
        s = self.log.read_survey()
        self.candidates_xy_nm, self.features, self.survey_image = s["candidates_xy_nm"], s["features"], s["image"]

    # ------------------------------------------------------------------ run
    def _peak_dose(self) -> float | None:
        try:
            return float(np.max(self.instrument.dose_e_per_A2))
        except Exception:  # noqa: BLE001  (an instrument without a dose map)
            return None

    def run(self) -> ExperimentResult:
        """Run (or continue) the experiment until the budget is spent; beam blanked at the end.

        Raises:
            ExperimentInterrupted: on any error (instrument fault, criterion error, ...), after
                blanking; the measurements so far are stored and attached (a spectrum whose
                criterion raised is stored with value NaN and scored again on resume).
            BeamSafetyError: the beam could not be confirmed blanked at the end (an alarm; its
                ``result`` holds the stored measurements).
        """
        t0 = time.perf_counter()
        learning = None
        spent_s = None  # elapsed seconds when the instrument budget (time, dose or points) stopped the run
        try:
            if self.features is None:
                if self.log.has_survey():
                    self._load_survey()
                else:
                    self.survey()
            done = self.log.read()
            initial = (np.array([m.index for m in done], int), self._scores(done))
            xy = self.candidates_xy_nm

            def measure(i: int) -> float:
                if self.budget.reached(len(self.log), time.perf_counter() - t0, self._peak_dose()):
                    raise _BudgetSpent
                p = (float(xy[i, 0]), float(xy[i, 1]))
                spec = self.instrument.acquire_spectrum(p, self.exposure_ms)
                try:
                    v = evaluate(self.criterion, spec)
                except Exception:
                    # the spectrum cost dose: stored (value NaN) before the error ends the run;
                    # a resumed run scores it again with the criterion it is given
                    self.log.append(index=i, xy_nm=p, value=float("nan"), time_s=spec.time_s,
                                    exposure_ms=spec.exposure_ms, energy_eV=spec.energy_eV, counts=spec.counts)
                    raise
                self.log.append(index=i, xy_nm=p, value=v, time_s=spec.time_s, exposure_ms=spec.exposure_ms,
                                energy_eV=spec.energy_eV, counts=spec.counts)
                return v

            try:
                learning = active_learning(
                    self.features, measure, Budget(points=self.budget.points or len(xy)), model=self.model,
                    acquisition=self.acquisition, n_seed=self.n_seed, seed=self.seed, beta=self.beta,
                    seed_design=self.seed_design,
                    batch_size=self.batch_size, xy=xy, travel_penalty=self.travel_penalty,
                    model_options=self.model_options, initial=initial if len(done) else None,
                    progress=self.progress)
            except _BudgetSpent:
                spent_s = time.perf_counter() - t0
        except Exception as exc:
            ms = self.log.read()
            raise ExperimentInterrupted(f"experiment stopped after {len(ms)} stored measurements: "
                                        f"{type(exc).__name__}: {exc}", ms, self.log.directory) from exc
        finally:
            self._blank()  # also before an ExperimentInterrupted reaches the caller
        if self.budget.points is not None and len(self.log) >= self.budget.points:
            reason = "points"
        elif spent_s is None:
            reason = "exhausted"
        elif self.budget.time_s is not None and spent_s >= self.budget.time_s:
            reason = "time"
        else:
            reason = "dose"
        return ExperimentResult(measurements=self.log.read(), candidates_xy_nm=self.candidates_xy_nm,
                                survey_image=self.survey_image, stop_reason=reason, learning=learning)

    def _scores(self, done: list[Measurement]) -> np.ndarray:
        """The stored values, with those whose criterion failed scored again from their stored
        spectra (no beam); one that still fails stops the run before any beam action."""
        from ..instrument.protocol import Spectrum

        values = np.array([m.value for m in done], float)
        for k, m in enumerate(done):
            if np.isfinite(m.value):
                continue
            energy, counts = self.log.spectrum(m.number)
            spec = Spectrum(energy_eV=energy, counts=counts, xy_nm=m.xy_nm, exposure_ms=m.exposure_ms,
                            time_s=m.time_s)
            try:
                values[k] = evaluate(self.criterion, spec)
            except Exception as exc:
                raise RuntimeError(f"the criterion fails on stored spectrum {m.number} "
                                   f"({type(exc).__name__}: {exc}); fix it before resuming") from exc
        return values

    def _blank(self) -> None:
        """The beam off, confirmed (retried); a failure is an alarm: :class:`BeamSafetyError`
        with the stored measurements as its ``result`` (raised over any other error)."""
        from ..instrument.safety import BeamSafetyError, blank_or_raise

        try:
            blank_or_raise(self.instrument)
        except BeamSafetyError as alarm:
            raise BeamSafetyError(str(alarm), self.log.read()) from alarm

    @classmethod
    def resume(cls, log_dir: str | Path, instrument: Instrument, criterion: Callable[[Spectrum], float],
               **kwargs) -> ActiveLearner:
        """A learner that continues the run stored in ``log_dir`` (same survey and candidates;
        stored measurements count towards the budget and are not repeated). Call :meth:`run`."""
        log = MeasurementLog(log_dir)
        if not log.has_survey():
            raise FileNotFoundError(f"{log_dir} holds no survey to resume from")
        settings = log.read_survey()["settings"]
        kwargs.setdefault("patch_px", settings.get("patch_px", 8))
        kwargs.setdefault("exposure_ms", settings.get("exposure_ms", 10.0))
        learner = cls(instrument, criterion, log_dir, **kwargs)
        learner._load_survey()
        return learner
