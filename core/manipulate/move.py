"""Move one dopant atom to a target lattice site with the parked probe (e.g. Si through graphene).

The loop (Dyck et al., Appl. Phys. Lett. 111, 113104 (2017); Susi et al., Ultramicroscopy 180,
163 (2017)): image a sub-scan around the dopant and the target, find the columns, pick the
dopant (the brightest intensity outlier near where it was), plan the fewest-hop path along the
lattice sites, park the probe on the next site of the path (the host atom the dopant should
swap with) for a dwell, image again and check where the dopant went: onto the intended site ->
next step; elsewhere -> re-plan from there; not moved -> dwell again, longer (up to a cap).
It stops when the dopant sits on the target, when the electron budget is spent, when the dopant
is lost, after ``max_steps`` or when aborted.

Safety: the dopant and target are checked against the instrument's field before any beam
action (:class:`~atomsmith.instrument.OutOfFieldError`), every dwell is capped, and on every way
out the beam is blanked and the blank confirmed (:func:`~atomsmith.instrument.blank_or_raise`:
retried, then :class:`~atomsmith.instrument.BeamSafetyError`, never a success with the beam
possibly on). Every frame and action is passed to ``on_step`` as it happens and kept in the
result, also when an error ends the loop (:class:`ManipulationError` carries the partial result;
a failed park is recorded as a step with its frame and dopant position). Electrons are counted
from the beam-on time the instrument reports (``beam_on_s``) where it reports one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..instrument.protocol import OutOfFieldError, ScanFrame
from ..instrument.safety import BeamSafetyError, beam_on_s, blank_or_raise
from .log import ManipulationLog
from .path import plan_path

#: electrons per picoampere-microsecond
_E_PER_PA_US = 1e-12 / 1.602176634e-19 * 1e-6


@dataclass(frozen=True, eq=False)
class ManipulationStep:
    """One pass of the loop.

    Attributes:
        index: step number (0 = the first image).
        frame: the sub-scan taken at this step.
        dopant_nm: (x, y) of the dopant found in ``frame`` (NaN when not found).
        hopped: the dopant moved by more than half a site spacing since the previous step.
        park_nm: where the probe was then parked (NaN: not parked at this step).
        dwell_ms: how long it was parked.
        electrons: electrons delivered by the loop so far (scans and parks).
        note: what happened (``"moved as planned"``, ``"moved elsewhere: re-planned"``, ...).
    """

    index: int
    frame: ScanFrame
    dopant_nm: tuple[float, float]
    hopped: bool
    park_nm: tuple[float, float]
    dwell_ms: float
    electrons: float
    note: str

    def to_dict(self) -> dict:
        """Fields as a dict (the frame as its own dict)."""
        return {"index": self.index, "frame": self.frame.to_dict(), "dopant_nm": self.dopant_nm,
                "hopped": self.hopped, "park_nm": self.park_nm, "dwell_ms": self.dwell_ms,
                "electrons": self.electrons, "note": self.note}


@dataclass(frozen=True, eq=False)
class ManipulationResult:
    """What :func:`move_atom` did.

    Attributes:
        success: the dopant ended on the target site.
        reason: ``"reached"``, ``"electron budget"``, ``"lost"``, ``"aborted"``, ``"max steps"``
            or ``"error: ..."``.
        steps: every step, in order (frames included).
        dopant_path_nm: (K, 2) the dopant's positions, one per step where it was found.
        n_hops: how many times the dopant moved.
        electrons: electrons delivered by the loop.
        park_time_s: total time the probe was parked.
        target_nm: the target site (snapped to the lattice when found), nm.
        beam_safe: the beam was confirmed blanked at the end (False only inside a
            :class:`~atomsmith.instrument.BeamSafetyError`).
    """

    success: bool
    reason: str
    steps: tuple[ManipulationStep, ...]
    dopant_path_nm: np.ndarray
    n_hops: int
    electrons: float
    park_time_s: float
    target_nm: tuple[float, float]
    metadata: dict = field(default_factory=dict)
    beam_safe: bool = True

    def to_dict(self) -> dict:
        """Fields as a dict (steps as dicts)."""
        return {"success": self.success, "reason": self.reason, "steps": [s.to_dict() for s in self.steps],
                "dopant_path_nm": self.dopant_path_nm, "n_hops": self.n_hops, "electrons": self.electrons,
                "park_time_s": self.park_time_s, "target_nm": self.target_nm, "metadata": self.metadata,
                "beam_safe": self.beam_safe}


class ManipulationError(RuntimeError):
    """The loop ended on an error; ``result`` holds every step taken until then (beam blanked)."""

    def __init__(self, message: str, result: ManipulationResult):
        super().__init__(message)
        self.result = result


def find_dopant(xy_nm: np.ndarray, intensity: np.ndarray, near_nm: np.ndarray, radius_nm: float,
                min_z: float = 6.0) -> int | None:
    """Index of the dopant among the columns: the brightest column within ``radius_nm`` of
    ``near_nm`` whose intensity stands at least ``min_z`` robust standard deviations (1.4826 x
    the median absolute deviation) above the median column; ``None`` if there is none."""
    xy = np.asarray(xy_nm, float).reshape(-1, 2)
    inten = np.asarray(intensity, float).reshape(-1)
    if len(xy) < 3:
        return None
    med = np.median(inten)
    mad = 1.4826 * np.median(np.abs(inten - med))
    z = (inten - med) / max(mad, 1e-12 * max(abs(med), 1e-30))
    d = np.hypot(*(xy - np.asarray(near_nm, float)).T)
    cand = np.flatnonzero((d <= radius_nm) & (z >= min_z))
    if cand.size == 0:
        return None
    return int(cand[np.argmax(inten[cand])])


def _check(xy, name: str) -> np.ndarray:
    p = np.asarray(xy, float).reshape(-1)
    if p.shape != (2,) or not np.all(np.isfinite(p)):
        raise ValueError(f"{name}={xy!r} must be two finite numbers (x, y) in nm")
    return p


def _aborted(abort) -> bool:
    if abort is None:
        return False
    if hasattr(abort, "is_set"):
        return bool(abort.is_set())
    return bool(abort())


def move_atom(instrument, dopant_xy_nm, target_xy_nm, *, spacing_nm: float = 0.142,
              pixel_size_nm: float = 0.02, margin_nm: float = 0.5, scan_dwell_us: float = 16.0,
              dwell_ms: float = 3000.0, max_dwell_ms: float = 20000.0, dwell_growth: float = 1.5,
              max_electrons: float = 1e10, max_steps: int = 40, beam_current_pA: float | None = None,
              model="generic", abort=None, on_step: Callable[[ManipulationStep], None] | None = None,
              progress: bool = False, log: str | Path | None = None,
              resume: str | Path | None = None) -> ManipulationResult:
    """Move the dopant at ``dopant_xy_nm`` to the lattice site at ``target_xy_nm`` with the beam.

    Args:
        instrument: an :class:`~atomsmith.instrument.Instrument` (positions in nm).
        dopant_xy_nm, target_xy_nm: (x, y) in nm, instrument frame.
        spacing_nm: nearest-neighbour site spacing (graphene 0.142 nm): sets search radii.
        pixel_size_nm: sub-scan pixel size; margin_nm: field around dopant and target.
        scan_dwell_us: sub-scan dwell per pixel, microseconds.
        dwell_ms: first park time per step, milliseconds; multiplied by ``dwell_growth`` after a
            dwell that moved nothing, capped at ``max_dwell_ms`` (each park is at most that).
        max_electrons: electron budget of the whole run (scans and parks).
        max_steps: most sub-scans.
        beam_current_pA: probe current for the electron count (default the instrument's
            ``beam_current_pA`` attribute, else 20 pA).
        model: atom-finding model for :func:`atomsmith.find_atoms`.
        abort: a ``threading.Event`` (or a callable returning True) that stops the loop.
        on_step: called with every :class:`ManipulationStep` as it happens (record it there).
        progress: print one line per step.
        log: a directory the run is written to as it goes (:mod:`.log`: every step's frame and
            line, fsync'ed, then how it ended).
        resume: the directory of an earlier run to continue: its steps come first in the result,
            the electrons it spent count towards ``max_electrons``, the dopant starts from its
            last position there, and the new steps are written to it (unless ``log`` is given).

    Returns:
        :class:`ManipulationResult` (``success`` False with a ``reason`` when it stopped early).

    Raises:
        OutOfFieldError: the dopant or the target (with the margin) lies outside the field; no
            beam action has been taken.
        ManipulationError: any other error; ``.result`` has every step so far. The beam is
            blanked in every case.
    """
    from ..atoms.find import find_atoms

    dop = _check(dopant_xy_nm, "dopant_xy_nm")
    tgt = _check(target_xy_nm, "target_xy_nm")
    for name, value in (("spacing_nm", spacing_nm), ("pixel_size_nm", pixel_size_nm), ("dwell_ms", dwell_ms),
                        ("max_dwell_ms", max_dwell_ms), ("scan_dwell_us", scan_dwell_us),
                        ("max_electrons", max_electrons)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} must be > 0")
    field_nm = getattr(instrument, "field_nm", None)
    if field_nm is not None:  # refuse before any beam action
        for name, p in (("dopant_xy_nm", dop), ("target_xy_nm", tgt)):
            if not (0.0 <= p[0] <= field_nm[0] and 0.0 <= p[1] <= field_nm[1]):
                raise OutOfFieldError(f"{name}=({p[0]:.3f}, {p[1]:.3f}) nm is outside the field "
                                      f"x in [0, {field_nm[0]:g}], y in [0, {field_nm[1]:g}] nm")
    current = float(beam_current_pA if beam_current_pA is not None
                    else getattr(instrument, "beam_current_pA", 20.0))
    e_per_us = current * _E_PER_PA_US
    steps: list[ManipulationStep] = []
    path_nm: list[np.ndarray] = []
    state = {"electrons": 0.0, "requested": 0.0, "park_s": 0.0, "hops": 0}
    target_site = tgt.copy()
    first_index, spent = 0, 0.0
    if resume is not None:
        prior = ManipulationLog(resume).read_steps()
        if not prior:
            raise ValueError(f"resume={str(resume)!r}: no step was written there; nothing to resume")
        for st in prior:
            steps.append(st)
            if np.all(np.isfinite(st.dopant_nm)):
                path_nm.append(np.asarray(st.dopant_nm, float))
            state["hops"] += int(st.hopped)
            if np.all(np.isfinite(st.park_nm)) and np.isfinite(st.dwell_ms):
                state["park_s"] += st.dwell_ms * 1e-3
        first_index, spent = prior[-1].index + 1, prior[-1].electrons
        if path_nm:
            dop = path_nm[-1].copy()  # the dopant's last position seen
        log = resume if log is None else log
    logbook = ManipulationLog(log) if log is not None else None
    if logbook is not None:
        logbook.write_run({"target_xy_nm": [float(v) for v in tgt], "dopant_xy_nm": [float(v) for v in dop],
                           "spacing_nm": spacing_nm, "pixel_size_nm": pixel_size_nm, "dwell_ms": dwell_ms,
                           "max_dwell_ms": max_dwell_ms, "max_electrons": max_electrons})
    on_s0 = beam_on_s(instrument)

    def count(requested_electrons: float) -> None:
        """Add an action's electrons: the instrument's beam-on time where it reports one (a
        resumed run starts from what the earlier one spent)."""
        state["requested"] += requested_electrons
        on_s = beam_on_s(instrument)
        state["electrons"] = spent + (state["requested"] if on_s is None or on_s0 is None
                                      else (on_s - on_s0) * 1e6 * e_per_us)

    def result(success: bool, reason: str, beam_safe: bool = True) -> ManipulationResult:
        count(0.0)  # what the instrument delivered, also in an action that then failed
        return ManipulationResult(success, reason, tuple(steps), np.array(path_nm).reshape(-1, 2),
                                  state["hops"], state["electrons"], state["park_s"],
                                  (float(target_site[0]), float(target_site[1])),
                                  {"beam_current_pA": current, "spacing_nm": spacing_nm,
                                   "dwell_ms": dwell_ms, "max_dwell_ms": max_dwell_ms,
                                   "electrons_requested": state["requested"],
                                   "electrons_from": "requested" if on_s0 is None else "instrument beam-on time"},
                                  beam_safe)

    def record(step: ManipulationStep) -> None:
        steps.append(step)
        if logbook is not None:
            logbook.append(step)
        if progress:
            print(f"step {step.index}: {step.note} (dopant at {step.dopant_nm[0]:.3f}, "
                  f"{step.dopant_nm[1]:.3f} nm; {step.electrons:.3g} electrons)")
        if on_step is not None:
            on_step(step)

    nan2 = (float("nan"), float("nan"))
    dwell = float(min(dwell_ms, max_dwell_ms))
    last = dop.copy()
    planned: np.ndarray | None = None  # where the dopant should be after the last park
    lost_once = False

    def run() -> ManipulationResult:
        nonlocal dwell, last, planned, lost_once, target_site
        for index in range(first_index, first_index + int(max_steps)):
            if _aborted(abort):
                return result(False, "aborted")
            # sub-scan around the dopant and the target (re-centred every step: follows drift)
            centre = (last + tgt) / 2.0
            fov = float(max(np.abs(last - tgt).max() + 2.0 * margin_nm, 4.0 * spacing_nm))
            n_px = int(np.ceil(fov / pixel_size_nm))
            frame = instrument.subscan((float(centre[0]), float(centre[1])), (n_px, n_px), fov, scan_dwell_us)
            count(n_px * n_px * scan_dwell_us * e_per_us)
            table = find_atoms(frame.image, pixel_size_nm=frame.pixel_size_nm, model=model)
            sites = frame.pixel_to_nm(table.xy)
            k = find_dopant(sites, table.intensity, last, 2.5 * spacing_nm)
            if k is None:
                note = "dopant not found"
                record(ManipulationStep(index, frame, nan2, False, nan2, 0.0, state["electrons"], note))
                if lost_once:
                    return result(False, "lost")
                lost_once = True  # one noisy frame is not a lost atom: image again
                continue
            lost_once = False
            here = sites[k]
            hopped = bool(np.hypot(*(here - last)) > 0.5 * spacing_nm)
            if hopped:
                state["hops"] += 1
                dwell = float(min(dwell_ms, max_dwell_ms))
                on_plan = planned is not None and np.hypot(*(here - planned)) < 0.35 * spacing_nm
                note = "moved as planned" if on_plan else "moved elsewhere: re-planned"
            elif planned is not None:
                dwell = float(min(dwell * dwell_growth, max_dwell_ms))
                note = "did not move: dwell again"
            else:
                note = "found"
            last = here
            path_nm.append(here.copy())
            t_idx = int(np.argmin(np.hypot(*(sites - tgt).T)))
            if np.hypot(*(sites[t_idx] - tgt)) > 0.5 * spacing_nm:
                raise ValueError(f"no lattice site within {0.5 * spacing_nm:.3f} nm of the target "
                                 f"({tgt[0]:.3f}, {tgt[1]:.3f}) nm")
            target_site = sites[t_idx]
            if t_idx == k:
                record(ManipulationStep(index, frame, tuple(map(float, here)), hopped, nan2, 0.0,
                                        state["electrons"], note + "; on the target"))
                return result(True, "reached")
            if state["electrons"] + dwell * 1e3 * e_per_us > max_electrons:
                record(ManipulationStep(index, frame, tuple(map(float, here)), hopped, nan2, 0.0,
                                        state["electrons"], note + "; budget spent"))
                return result(False, "electron budget")
            others = [i for i in np.flatnonzero(table.intensity > table.intensity[k] * 0.8) if i != k]
            path = plan_path(sites, k, t_idx, spacing=spacing_nm, avoid=others)
            nxt = sites[path[1]]
            if _aborted(abort):
                record(ManipulationStep(index, frame, tuple(map(float, here)), hopped, nan2, 0.0,
                                        state["electrons"], note))
                return result(False, "aborted")
            try:
                got = instrument.park_probe((float(nxt[0]), float(nxt[1])), dwell)
            except Exception as exc:
                # the frame and the dopant position of this step cost dose: kept with the failure
                # (the electrons: as asked, unless the instrument reports its beam-on time)
                count(dwell * 1e3 * e_per_us)
                record(ManipulationStep(index, frame, tuple(map(float, here)), hopped, tuple(map(float, nxt)),
                                        float("nan"), state["electrons"],
                                        f"{note}; park failed: {type(exc).__name__}: {exc}"))
                raise
            parked = float(got) if isinstance(got, int | float) and np.isfinite(got) else dwell
            count(parked * 1e3 * e_per_us)
            state["park_s"] += parked * 1e-3
            planned = nxt
            if parked < dwell - 1e-9:  # the instrument stopped the park (its abort event)
                record(ManipulationStep(index, frame, tuple(map(float, here)), hopped, tuple(map(float, nxt)),
                                        parked, state["electrons"], f"{note}; park stopped after {parked:.0f} ms"))
                return result(False, "aborted")
            record(ManipulationStep(index, frame, tuple(map(float, here)), hopped, tuple(map(float, nxt)),
                                    dwell, state["electrons"], f"{note}; parked {dwell:.0f} ms on the next site"))
        return result(False, "max steps")

    outcome: ManipulationResult | None = None
    error: BaseException | None = None
    try:
        outcome = run()
    except OutOfFieldError as exc:
        error = (ManipulationError("a position left the field", result(False, "error: out of field"))
                 if steps else exc)
    except Exception as exc:  # noqa: BLE001  (reported with every step so far)
        error = ManipulationError(f"manipulation stopped: {type(exc).__name__}: {exc}",
                                  result(False, f"error: {type(exc).__name__}: {exc}"))
        error.__cause__ = exc
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: the beam off first, then on its way
        try:
            blank_or_raise(instrument)
        except BeamSafetyError as alarm:
            raise BeamSafetyError(str(alarm), result(False, "beam not blanked", beam_safe=False)) from exc
        raise
    # the beam off, confirmed, on every way out; else an alarm, never a success
    try:
        blank_or_raise(instrument)
    except BeamSafetyError as alarm:
        unsafe = result(False, "beam not blanked", beam_safe=False)
        if logbook is not None:
            logbook.write_result(unsafe)
        raise BeamSafetyError(str(alarm), unsafe) from (error or alarm)
    if logbook is not None:
        logbook.write_result(outcome if error is None else getattr(error, "result", None) or result(False, "error"))
    if error is not None:
        raise error
    return outcome
