"""The digital twin as an instrument: scans, parked probe, beam-induced hops, spectra, dose."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..simulate.crystal import build_crystal
from ..simulate.defects import substitute
from ..simulate.haadf import ScanSettings, render_haadf
from ..simulate.probe import Probe
from ..simulate.scattering import Detector
from ..simulate.structure import Structure
from .protocol import OutOfFieldError, ScanFrame, Spectrum
from .safety import PARK_CHUNK_MS

_E_CHARGE = 1.602176634e-19
BARN_A2 = 1e-8  # 1 barn = 1e-28 m^2 = 1e-8 A^2


@dataclass(frozen=True)
class BeamEvent:
    """A beam-induced change of the sample: a dopant swapped with a neighbour."""

    time_s: float
    kind: str
    from_nm: tuple[float, float]
    to_nm: tuple[float, float]
    species: str


class SimulatedInstrument:
    """A STEM whose sample is atomsmith's twin; implements :class:`~atomsmith.instrument.Instrument`.

    Scans render the current sample with :func:`~atomsmith.simulate.render_haadf` at the dose
    the beam current and dwell give. Parking the probe delivers ``current * dwell / e``
    electrons there; beam-induced swaps of a dopant with a host neighbour (e.g. Si with C in
    graphene) happen as a Poisson process with, per electron, probability
    ``cross_section * PSF(distance from probe to the neighbour)`` (PSF in 1/A^2), so a probe
    sitting on one C neighbour of a Si makes that pair swap. Scans drive the same process with
    their uniform dose. All dose is tallied in :attr:`dose_e_per_A2`.

    Args:
        sample: the sample structure (angstrom); default: graphene with one Si dopant at the centre.
        field_nm: (width, height) of the sample field the beam may visit, nm.
        beam_current_pA: probe current, pA.
        probe, detector: optics (defaults as in :func:`render_haadf`).
        swap_cross_sections_barn: {(dopant, host): cross-section in barn}; default Si-C 0.1 b.
        dose_cell_nm: cell size of the dose map, nm.
        drift_nm_per_s: linear sample drift (vx, vy) in nm/s.
        seed: seed for noise and beam events.
    """

    def __init__(
        self,
        sample: Structure | None = None,
        *,
        field_nm: tuple[float, float] = (6.0, 6.0),
        beam_current_pA: float = 20.0,
        probe: Probe | None = None,
        detector: Detector | None = None,
        swap_cross_sections_barn: dict[tuple[str, str], float] | None = None,
        dose_cell_nm: float = 0.1,
        drift_nm_per_s: tuple[float, float] = (0.0, 0.0),
        background: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        if not beam_current_pA > 0:
            raise ValueError(f"beam_current_pA={beam_current_pA} must be > 0")
        if not dose_cell_nm > 0:
            raise ValueError(f"dose_cell_nm={dose_cell_nm} must be > 0")
        self.field_nm = (float(field_nm[0]), float(field_nm[1]))
        if sample is None:
            sample = build_crystal("graphene", (self.field_nm[0] * 10, self.field_nm[1] * 10))
            centre = np.array(self.field_nm) * 5.0
            idx = int(np.argmin(np.hypot(*(sample.xy_A - centre).T)))
            sample = substitute(sample, "Si", indices=[idx])
        self.sample = sample
        # swaps only exchange column contents, so the column positions (and this tree) never change
        self._tree = cKDTree(sample.xy_A)
        self.beam_current_pA = float(beam_current_pA)
        self.probe = probe or Probe()
        self.detector = detector or Detector()
        self.swap_cross_sections_barn = (
            {("Si", "C"): 0.1} if swap_cross_sections_barn is None else dict(swap_cross_sections_barn))
        self.drift_nm_per_s = tuple(float(v) for v in drift_nm_per_s)
        self.background = background
        self.rng = np.random.default_rng(seed)
        self.time_s = 0.0
        self.blanked = True
        #: set by any thread to stop a park between its 20 ms pieces (the beam is then blanked)
        self.abort_event = threading.Event()
        #: cumulative time the beam was on the sample (scans, parks, exposures), instrument clock, s
        self.beam_on_s = 0.0
        self._lock = threading.RLock()
        self.probe_position_nm: tuple[float, float] | None = None
        self.events: list[BeamEvent] = []
        self.total_electrons = 0.0
        self.dose_cell_nm = float(dose_cell_nm)
        #: energy-loss axis of :meth:`acquire_spectrum` (eV): 0.5 eV channels from 80 to 1080 eV
        self.spectrometer_energy_eV = np.arange(80.0, 1080.0, 0.5)
        nx = max(1, int(np.ceil(self.field_nm[0] / dose_cell_nm)))
        ny = max(1, int(np.ceil(self.field_nm[1] / dose_cell_nm)))
        self._dose_counts = np.zeros((ny, nx))  # electrons per cell

    # ----------------------------------------------------------------- bookkeeping
    @property
    def electrons_per_us(self) -> float:
        """Electrons per microsecond at the current beam current."""
        return self.beam_current_pA * 1e-12 / _E_CHARGE * 1e-6

    @property
    def beam_blanked(self) -> bool:
        """Whether the beam is off the sample now."""
        return bool(self.blanked)

    @property
    def dose_e_per_A2(self) -> np.ndarray:
        """(ny, nx) cumulative dose map over the field in e/A^2 (cell ``dose_cell_nm``, row = y)."""
        return self._dose_counts / (self.dose_cell_nm * 10.0) ** 2

    def _check_point(self, xy_nm, name: str = "xy_nm") -> np.ndarray:
        p = np.asarray(xy_nm, dtype=float)
        if p.shape != (2,) or not np.all(np.isfinite(p)):
            raise ValueError(f"{name}={xy_nm!r} must be two finite numbers (x, y) in nm")
        w, h = self.field_nm
        if not (0.0 <= p[0] <= w and 0.0 <= p[1] <= h):
            raise OutOfFieldError(
                f"{name}=({p[0]:.3f}, {p[1]:.3f}) nm is outside the sample field x in [0, {w:g}] nm, "
                f"y in [0, {h:g}] nm")
        return p

    def _deposit(self, xy_nm: np.ndarray, electrons: np.ndarray | float) -> None:
        xy = np.atleast_2d(xy_nm)
        ny, nx = self._dose_counts.shape
        ix = np.clip((xy[:, 0] / self.dose_cell_nm).astype(int), 0, nx - 1)
        iy = np.clip((xy[:, 1] / self.dose_cell_nm).astype(int), 0, ny - 1)
        e = np.broadcast_to(np.asarray(electrons, float), ix.shape)
        np.add.at(self._dose_counts, (iy, ix), e)
        self.total_electrons += float(e.sum())

    def _sample_shift_A(self, t_s: float) -> np.ndarray:
        return np.asarray(self.drift_nm_per_s) * 10.0 * t_s

    # ----------------------------------------------------------------- beam actions
    def scan(self, shape_px: tuple[int, int], fov_nm: float, dwell_us: float) -> ScanFrame:
        """Scan a square field of view of side ``fov_nm`` centred on the sample field."""
        return self.subscan((self.field_nm[0] / 2, self.field_nm[1] / 2), shape_px, fov_nm, dwell_us)

    def subscan(self, center_nm, shape_px, fov_nm: float, dwell_us: float, *,
                clip_to_field: bool = False, keep_beam_on: bool = False) -> ScanFrame:
        """Scan a square of side ``fov_nm`` centred at ``center_nm``; the square must lie in the field.

        With ``clip_to_field`` the frame may reach (or lie) outside the field, as a Swift scan may:
        the columns there are still imaged, but dose and beam events are counted inside the field only.
        The beam is blanked when the frame ends unless ``keep_beam_on``.
        """
        if clip_to_field:
            c = np.asarray(center_nm, dtype=float)
            if c.shape != (2,) or not np.all(np.isfinite(c)):
                raise ValueError(f"center_nm={center_nm!r} must be two finite numbers (x, y) in nm")
        else:
            c = self._check_point(center_nm, "center_nm")
        h, w = (int(shape_px[0]), int(shape_px[1]))
        if h < 2 or w < 2:
            raise ValueError(f"shape_px={shape_px} must be at least (2, 2)")
        if not fov_nm > 0:
            raise ValueError(f"fov_nm={fov_nm} must be > 0")
        if not dwell_us > 0:
            raise ValueError(f"dwell_us={dwell_us} must be > 0")
        px_nm = fov_nm / max(h, w)
        half = np.array([w * px_nm, h * px_nm]) / 2
        if not clip_to_field:
            for corner in (c - half, c + half):
                self._check_point(corner, "scan corner")
        origin = c - half + px_nm / 2
        scan = ScanSettings(dwell_us=dwell_us, t0_s=self.time_s, drift_nm_per_s=self.drift_nm_per_s)
        electrons_per_px = self.electrons_per_us * dwell_us
        dose = electrons_per_px / (px_nm * 10.0) ** 2
        self.blanked = False
        img = render_haadf(self.sample, (h, w), px_nm, origin_nm=tuple(origin), probe=self.probe,
                           detector=self.detector, dose_e_per_A2=dose, background=self.background,
                           scan=scan, seed=self.rng)
        start = self.time_s
        # dose: every probe position gets electrons_per_px (positions in the sample frame)
        yy, xx = np.mgrid[0:h, 0:w]
        t_px = start + (yy * w + xx) * dwell_us * 1e-6
        pos = origin + np.stack([xx, yy], -1) * px_nm - (np.asarray(self.drift_nm_per_s) * t_px[..., None])
        inside = ((pos[..., 0] >= 0) & (pos[..., 0] <= self.field_nm[0])
                  & (pos[..., 1] >= 0) & (pos[..., 1] <= self.field_nm[1]))
        self._deposit(pos[inside], electrons_per_px)
        self.time_s += scan.frame_time_s((h, w))
        self.beam_on_s += h * w * dwell_us * 1e-6
        self._beam_swaps_uniform(dose, origin, (w * px_nm, h * px_nm))
        self.probe_position_nm = tuple(origin + np.array([w - 1, h - 1]) * px_nm)
        if not keep_beam_on:
            self.blank()
        return ScanFrame(image=img.image, pixel_size_nm=px_nm, origin_nm=tuple(origin), time_s=start,
                         dwell_us=dwell_us, truth=img.truth,
                         metadata={"dose_e_per_A2": dose, "beam_current_pA": self.beam_current_pA})

    def park_probe(self, xy_nm, dwell_ms: float, *, keep_beam_on: bool = False) -> float:
        """Park the probe at ``xy_nm`` for ``dwell_ms``: delivers dose and may trigger swaps.

        The park runs in pieces of at most ``PARK_CHUNK_MS`` and stops early when
        :attr:`abort_event` is set; the beam is blanked at the end unless ``keep_beam_on`` (and
        always on an abort). Returns the milliseconds the beam was on.
        """
        p = self._check_point(xy_nm)
        if not dwell_ms >= 0:
            raise ValueError(f"dwell_ms={dwell_ms} must be >= 0")
        delivered = 0.0
        with self._lock:
            self.blanked = False
        self.probe_position_nm = (float(p[0]), float(p[1]))
        while delivered < dwell_ms and not self.abort_event.is_set():
            delivered = min(float(dwell_ms), delivered + PARK_CHUNK_MS)
        if self.abort_event.is_set():
            keep_beam_on = False
        electrons = self.electrons_per_us * delivered * 1e3
        sample_xy = p - np.asarray(self.drift_nm_per_s) * self.time_s
        self._deposit(sample_xy, electrons)
        self._beam_swaps_point(sample_xy * 10.0, electrons)
        self.time_s += delivered * 1e-3
        self.beam_on_s += delivered * 1e-3
        if not keep_beam_on:
            self.blank()
        return delivered

    def blank(self) -> None:
        """Blank the beam (no dose until the next acquisition); safe from any thread."""
        with self._lock:
            self.blanked = True

    def _expose(self, xy_nm, exposure_ms: float) -> tuple[np.ndarray, float, np.ndarray]:
        """Park for an exposure; returns (probe nm, electrons, probe position in the sample frame, A)."""
        p = self._check_point(xy_nm)
        if not exposure_ms > 0:
            raise ValueError(f"exposure_ms={exposure_ms} must be > 0")
        sample_xy_A = p * 10.0 - self._sample_shift_A(self.time_s)
        self.park_probe(tuple(p), exposure_ms)
        return p, self.electrons_per_us * exposure_ms * 1e3, sample_xy_A

    def acquire_spectrum(self, xy_nm, exposure_ms: float) -> Spectrum:
        """EEL spectrum of the atoms under the probe (PSF-weighted), with Poisson noise."""
        start = self.time_s
        p, electrons, sample_xy_A = self._expose(xy_nm, exposure_ms)
        counts = self._spectrum(sample_xy_A, electrons, self.spectrometer_energy_eV)
        return Spectrum(energy_eV=self.spectrometer_energy_eV, counts=counts, xy_nm=(float(p[0]), float(p[1])),
                        exposure_ms=float(exposure_ms), time_s=start)

    def spectrum_at(self, xy_nm, electrons: float, energy_eV: np.ndarray | None = None) -> np.ndarray:
        """The EEL spectrum (counts per channel, Poisson noise) that ``electrons`` incident at
        ``xy_nm`` give now, without exposing the sample (no dose, no time, no beam events): for a
        detector whose beam time is accounted elsewhere (the twin's Swift EELS camera).
        ``energy_eV``: evenly spaced channel centres (default the twin's spectrometer)."""
        p = self._check_point(xy_nm)
        if not electrons >= 0:
            raise ValueError(f"electrons={electrons} must be >= 0")
        energy = self.spectrometer_energy_eV if energy_eV is None else np.asarray(energy_eV, float)
        if electrons == 0:
            return np.zeros(energy.size)
        return self._spectrum(p * 10.0 - self._sample_shift_A(self.time_s), float(electrons), energy)

    def _spectrum(self, sample_xy_A: np.ndarray, electrons: float, energy_eV: np.ndarray) -> np.ndarray:
        from ..simulate.eels import EDGES, eels_spectrum

        amounts = self._local_amounts(sample_xy_A)
        amounts = {el: a for el, a in amounts.items() if el in EDGES}  # elements with a tabulated edge
        return eels_spectrum(energy_eV, amounts, electrons=electrons, seed=self.rng).data

    def acquire_diffraction(self, xy_nm, exposure_ms: float) -> np.ndarray:
        """Convergent-beam diffraction pattern with the probe at ``xy_nm`` (electrons per pixel)."""
        from ..simulate.fourd import diffraction_pattern

        _, electrons, sample_xy_A = self._expose(xy_nm, exposure_ms)
        pattern = diffraction_pattern(self.sample, sample_xy_A, probe=self.probe, electrons=electrons, seed=self.rng)
        return pattern.data

    def diffraction_at(self, xy_nm, electrons: float) -> np.ndarray:
        """The diffraction pattern (electrons per pixel, Poisson noise) that ``electrons`` incident
        at ``xy_nm`` give now, without exposing the sample (no dose, no time, no beam events): for
        a detector whose beam time is accounted elsewhere (the twin's Swift camera)."""
        from ..simulate.fourd import diffraction_pattern

        p = self._check_point(xy_nm)
        if not electrons > 0:
            raise ValueError(f"electrons={electrons} must be > 0")
        sample_xy_A = p * 10.0 - self._sample_shift_A(self.time_s)
        return diffraction_pattern(self.sample, sample_xy_A, probe=self.probe, electrons=float(electrons),
                                   seed=self.rng).data

    # ----------------------------------------------------------------- sample physics
    def _local_amounts(self, xy_A: np.ndarray) -> dict[str, float]:
        """PSF-weighted number of atoms of each element under a probe at ``xy_A``."""
        from ..simulate.elements import atomic_number  # noqa: F401  (validates symbols)

        r_tab, psf_tab, r_max = self.probe.radial_profile()
        d = np.hypot(*(self.sample.xy_A - xy_A).T)
        near = np.flatnonzero(d < r_max)
        amounts: dict[str, float] = {}
        for i in near:
            wgt = float(np.interp(d[i], r_tab, psf_tab)) / psf_tab[0]
            for sym, _ in self.sample.kinds[self.sample.kind[i]].atoms:
                amounts[sym] = amounts.get(sym, 0.0) + wgt * self.sample.thickness_cells
        return amounts

    def _swap_pairs(self) -> list[tuple[int, int, float]]:
        """(dopant index, host neighbour index, cross-section A^2) for every swappable pair."""
        s = self.sample
        if not self.swap_cross_sections_barn:
            return []
        names = s.species
        tree = self._tree
        nn = s.material.nearest_column_distance_A
        pairs = []
        for (dop, host), xs in self.swap_cross_sections_barn.items():
            for i in np.flatnonzero(names == dop):
                for j in tree.query_ball_point(s.xy_A[i], nn * 1.15):
                    if j != i and names[j] == host:
                        pairs.append((int(i), int(j), xs * BARN_A2))
        return pairs

    def _swap(self, i: int, j: int, kind: str) -> None:
        s = self.sample
        k = s.kind.copy()
        lab = s.label.copy()
        k[i], k[j] = k[j], k[i]
        lab[i], lab[j] = lab[j], lab[i]
        self.sample = s.replace(kind=k, label=lab)
        self.events.append(BeamEvent(self.time_s, kind, tuple(float(v) for v in s.xy_A[i] / 10.0),
                                     tuple(float(v) for v in s.xy_A[j] / 10.0),
                                     str(s.species[i])))

    def _beam_swaps_point(self, xy_A: np.ndarray, electrons: float) -> None:
        r_tab, psf_tab, _ = self.probe.radial_profile()
        remaining = electrons
        for _ in range(1000):
            pairs = self._swap_pairs()
            if not pairs:
                return
            rates = np.array([xs * float(np.interp(np.hypot(*(self.sample.xy_A[j] - xy_A)), r_tab, psf_tab, right=0.0))
                              for _, j, xs in pairs])  # swaps per electron
            total = rates.sum()
            if total <= 0:
                return
            wait = self.rng.exponential(1.0 / total)
            if wait > remaining:
                return
            remaining -= wait
            i, j, _ = pairs[self.rng.choice(len(pairs), p=rates / total)]
            self._swap(i, j, "swap (parked probe)")

    def _beam_swaps_uniform(self, dose_e_per_A2: float, origin_nm, size_nm) -> None:
        lo = np.asarray(origin_nm) * 10.0
        hi = lo + np.asarray(size_nm) * 10.0
        pairs = self._swap_pairs()
        done: set[int] = set()
        for i, j, xs in pairs:
            xy = self.sample.xy_A[j]
            if i in done or not (np.all(xy >= lo) and np.all(xy <= hi)):
                continue
            if self.rng.random() < 1.0 - np.exp(-xs * dose_e_per_A2):
                self._swap(i, j, "swap (scan)")
                done.add(j)
