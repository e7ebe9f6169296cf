"""EELS: spectra and spectrum images with edges, white lines, plasmons and exact ground truth.

Model (all densities per incident electron per eV; a channel holds ``electrons * density *
dispersion`` expected counts)
-----------------------------------------------------------------------------------------------
* **Zero-loss peak**: Gaussian of FWHM ``zlp_fwhm_eV`` at 0 eV with area ``exp(-t/lambda)``.
* **Plasmons**: the n-fold plasmon has the Poisson weight ``exp(-t/lambda) (t/lambda)^n / n!``
  and a Drude shape ``(2/pi) G Ep^2 / ((E^2 - Ep^2)^2 + (E G)^2)`` (unit area; peak at
  ``sqrt(Ep^2 - G^2/2)``) with ``Ep -> n Ep`` and ``G -> n G`` (``G = plasmon_width_eV``).
* **Background**: ``A E^-r`` (E in eV). The low loss hands over to the power law through an
  error-function blend centred at ``E_b = max(40, 3 Ep)`` eV, 4 eV wide: above ``E_b + 16`` eV
  the non-edge signal is exactly ``A E^-r``; below ``E_b - 16`` eV it is exactly the low-loss
  model. Each plasmon order is renormalised after the hand-over so its area stays the Poisson
  weight, hence ``t/lambda = ln(I_low_loss / I_zlp)`` (the power law adds about
  ``A / (2 E_b^2)`` to a low-loss sum, ~0.01 per incident electron with the defaults).
* **Edges** (single scattering; no plural convolution with the low loss): a continuum
  ``h * step(E - E0) * (E/E0)^-s`` with a Gaussian-smoothed step (width from the energy
  resolution), and for the L2,3 edges of Ti, Mn and Fe two steps (2/3 at L3, 1/3 at L2) plus
  Lorentzian white lines of total area ``W`` split as ``L3/L2 = ratio``. The Lorentzians are
  switched off smoothly 4 eV below their centres (no pre-edge tails) and renormalised, so their
  areas are exactly ``W ratio / (1 + ratio)`` and ``W / (1 + ratio)``. Edge shapes are
  integrated over each channel; the low loss and the background are sampled at channel centres.

Element amounts are relative areal densities: amount 1 gives the tabulated onset height ``h``
(1 to 2.3 times the default background ``80 E^-3`` at the onset; white lines come on top). The ground-truth edge integral of an element
is the sum of its noise-free edge counts over channels whose centres lie in
``[E0, E0 + edge_window_eV)`` (E0: the K or L3 onset). Truth maps are in the units of ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Edge:
    """One ionisation edge of the model.

    Attributes:
        element: element symbol.
        shell: ``"K"`` or ``"L2,3"``.
        onset_eV: K or L3 onset energy (eV).
        l2_eV: L2 onset energy (eV) for split L2,3 edges, else ``None``.
        height: continuum height just above the onset per eV per incident electron for amount 1.
        decay: exponent s of the post-edge decay ``(E/E0)^-s``.
        white_line_area_eV: total white-line area in units of ``height`` x 1 eV (0: none).
        gamma_l3_eV, gamma_l2_eV: Lorentzian FWHM of the white lines (eV).
        default_ratio: L3/L2 white-line area ratio used when none is given.
    """

    element: str
    shell: str
    onset_eV: float
    l2_eV: float | None
    height: float
    decay: float
    white_line_area_eV: float = 0.0
    gamma_l3_eV: float = 1.0
    gamma_l2_eV: float = 1.5
    default_ratio: float = 2.0


#: The edges the model knows, by element.
EDGES: dict[str, Edge] = {
    "Si": Edge("Si", "L2,3", 99.0, None, 8.0e-5, 2.0),
    "B": Edge("B", "K", 188.0, None, 2.4e-5, 2.5),
    "C": Edge("C", "K", 284.0, None, 8.0e-6, 2.5),
    "N": Edge("N", "K", 401.0, None, 2.4e-6, 2.5),
    "Ti": Edge("Ti", "L2,3", 456.0, 462.0, 1.0e-6, 2.5, 8.0, 0.8, 1.5, 0.8),
    "O": Edge("O", "K", 532.0, None, 1.0e-6, 2.5),
    "Mn": Edge("Mn", "L2,3", 640.0, 651.0, 4.0e-7, 2.5, 10.0, 1.5, 2.0, 3.0),
    "Fe": Edge("Fe", "L2,3", 708.0, 721.0, 3.2e-7, 2.5, 10.0, 1.5, 2.0, 4.5),
}

#: Elements whose L3/L2 ratio varies by default in a spectrum image (range of the default map).
_DEFAULT_RATIO_RANGE = {"Mn": (2.0, 4.0)}
_BLEND_MIN_EV = 40.0  # the hand-over is at max(40 eV, 3 Ep)
_BLEND_EP_FACTOR = 3.0
_BLEND_WIDTH_EV = 4.0
_INTRINSIC_ONSET_EV = 0.5  # standard deviation of the edge onset before instrumental broadening
_WL_CUT_BELOW_EV = 4.0
_SUBSAMPLES = 16


@dataclass(frozen=True, eq=False)
class EELSTruth:
    """Ground truth of simulated EELS, per pixel (maps (ny, nx), or 0-d for one spectrum).

    All intensities are in the units of the data (expected counts; per incident electron when
    no electron count was given).

    Attributes:
        amount: element -> relative areal density used.
        edge_integral: element -> noise-free edge counts summed over ``edge_windows_eV``.
        edge_windows_eV: element -> (start, stop) of the integration window (eV).
        white_line_area: element -> (..., 2) total L3 and L2 white-line counts.
        l3_l2_ratio: element -> L3/L2 white-line area ratio.
        background_A: power-law prefactor: counts per channel = A E^-r (E in eV).
        background_r: power-law exponent r.
        thickness_t_over_lambda: thickness in inelastic mean free paths.
        plasmon_energy_eV: Drude plasmon energy Ep (eV).
    """

    amount: dict[str, np.ndarray]
    edge_integral: dict[str, np.ndarray]
    edge_windows_eV: dict[str, tuple[float, float]]
    white_line_area: dict[str, np.ndarray]
    l3_l2_ratio: dict[str, np.ndarray]
    background_A: np.ndarray
    background_r: np.ndarray
    thickness_t_over_lambda: np.ndarray
    plasmon_energy_eV: np.ndarray

    def to_dict(self) -> dict:
        """All truth as a (nested) dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)
class EELSSpectrumImage:
    """A simulated EELS spectrum image with its ground truth.

    Attributes:
        data: (ny, nx, n_channels) float32 counts (Poisson if noisy), or expected counts per
            incident electron when ``electrons_per_pixel`` is ``None``.
        energy_eV: (n_channels,) energy loss at each channel centre (eV).
        dispersion_eV: channel width (eV).
        electrons_per_pixel: incident electrons per pixel (``None``: per electron).
        truth: ground-truth maps.
        metadata: simulation parameters.
    """

    data: np.ndarray
    energy_eV: np.ndarray
    dispersion_eV: float
    electrons_per_pixel: float | None
    truth: EELSTruth
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Arrays, calibration and truth (nested dict)."""
        return {"data": self.data, "energy_eV": self.energy_eV, "dispersion_eV": self.dispersion_eV,
                "electrons_per_pixel": self.electrons_per_pixel, "truth": self.truth.to_dict(),
                "metadata": self.metadata}


@dataclass(frozen=True, eq=False)
class EELSSpectrum:
    """One simulated spectrum.

    Attributes:
        data: (n_channels,) float32 counts (or expected counts per incident electron).
        energy_eV: (n_channels,) channel centres (eV).
        dispersion_eV: channel width (eV).
        electrons: incident electrons (``None``: per electron).
        truth: ground truth with 0-d arrays.
    """

    data: np.ndarray
    energy_eV: np.ndarray
    dispersion_eV: float
    electrons: float | None
    truth: EELSTruth

    def to_dict(self) -> dict:
        """Arrays, calibration and truth (nested dict)."""
        return {"data": self.data, "energy_eV": self.energy_eV, "dispersion_eV": self.dispersion_eV,
                "electrons": self.electrons, "truth": self.truth.to_dict()}


# ----------------------------------------------------------------------------------------------
# spectral shapes
# ----------------------------------------------------------------------------------------------

def _edge_of(element: str) -> Edge:
    try:
        return EDGES[element]
    except (KeyError, TypeError):
        raise ValueError(f"unknown element {element!r} for EELS; supported: {', '.join(EDGES)}") from None


def _step(e: np.ndarray, e0: float, sd: float) -> np.ndarray:
    return ndtr((e - e0) / sd)


def _lorentz(e: np.ndarray, e0: float, fwhm: float) -> np.ndarray:
    hw = fwhm / 2.0
    return (hw / np.pi) / ((e - e0) ** 2 + hw * hw)


def _white_line(e: np.ndarray, e0: float, fwhm: float, sd: float) -> np.ndarray:
    """Lorentzian switched off below ``e0 - 4 eV``, renormalised to unit area."""
    fine = np.linspace(e0 - 12.0 - 6 * sd, e0 + 400.0 * fwhm, 400_001)
    prof = _lorentz(fine, e0, fwhm) * _step(fine, e0 - _WL_CUT_BELOW_EV, sd)
    # the Lorentzian tail beyond the fine grid (analytic) completes the area
    tail = 0.5 - np.arctan((fine[-1] - e0) / (fwhm / 2.0)) / np.pi
    area = np.sum(prof) * (fine[1] - fine[0]) + tail
    return _lorentz(e, e0, fwhm) * _step(e, e0 - _WL_CUT_BELOW_EV, sd) / area


def _channel_integral(func, energy: np.ndarray, disp: float) -> np.ndarray:
    """Integral of a density over each channel [E - d/2, E + d/2] (mid-point rule, 16 points)."""
    off = ((np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5) * disp
    return func(energy[:, None] + off[None, :]).mean(axis=1) * disp


def _edge_bases(edge: Edge, energy: np.ndarray, disp: float, sd: float) -> np.ndarray:
    """(3, n) per-channel probabilities for amount 1: continuum, unit-area L3 and L2 lines."""
    h, e0, s = edge.height, edge.onset_eV, edge.decay

    def continuum(e):
        decay = np.power(np.maximum(e, 1.0) / e0, -s)
        if edge.l2_eV is None:
            return h * _step(e, e0, sd) * decay
        return h * (2.0 / 3.0 * _step(e, e0, sd) + 1.0 / 3.0 * _step(e, edge.l2_eV, sd)) * decay

    out = np.zeros((3, len(energy)))
    out[0] = _channel_integral(continuum, energy, disp)
    if edge.white_line_area_eV > 0 and edge.l2_eV is not None:
        out[1] = _channel_integral(lambda e: _white_line(e, e0, edge.gamma_l3_eV, sd), energy, disp)
        out[2] = _channel_integral(lambda e: _white_line(e, edge.l2_eV, edge.gamma_l2_eV, sd),
                                   energy, disp)
    return out


def _drude(e: np.ndarray, ep: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Unit-area Drude loss density (2/pi) G Ep^2 / ((E^2-Ep^2)^2 + (E G)^2), per eV."""
    return (2.0 / np.pi) * gamma * ep**2 / ((e**2 - ep**2) ** 2 + (e * gamma) ** 2)


def _blend_center(ep: np.ndarray) -> np.ndarray:
    """Energy (eV) where the low loss hands over to the power-law background."""
    return np.maximum(_BLEND_MIN_EV, _BLEND_EP_FACTOR * ep)


def _blend(e: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Weight of the power-law background (0 in the low loss, 1 in the core loss)."""
    return ndtr((e - center) / _BLEND_WIDTH_EV)


def _plasmon_norms(ep: np.ndarray, width: float, n_orders: int) -> np.ndarray:
    """(P, n_orders) area of each Drude order kept below the hand-over (for renormalisation)."""
    center = _blend_center(ep)
    top = float(center.max()) + 8 * _BLEND_WIDTH_EV
    step = min(0.05, width / 20.0)
    e = np.arange(step / 2, top, step)
    keep = 1.0 - _blend(e[None, :], center[:, None])
    out = np.empty((len(ep), n_orders))
    for k in range(1, n_orders + 1):
        out[:, k - 1] = np.sum(_drude(e[None, :], k * ep[:, None], k * width) * keep, axis=1) * step
    return np.maximum(out, 1e-300)


def _model(energy: np.ndarray, disp: float, elements: list[str], amount: np.ndarray,
           ratio: dict[str, np.ndarray], tau: np.ndarray, ep: np.ndarray, bg_a: np.ndarray,
           bg_r: np.ndarray, zlp_fwhm: float, plasmon_width: float, window: float,
           rng: np.random.Generator | None, scale: float, progress: bool,
           ) -> tuple[np.ndarray, dict]:
    """Spectra (P, n) (counts, Poisson if ``rng``) and truth for P pixels given flat parameters."""
    npx, nch = len(tau), len(energy)
    sd = float(np.hypot(_INTRINSIC_ONSET_EV, zlp_fwhm / 2.3548200450309493))
    edges = [_edge_of(el) for el in elements]
    bases = [_edge_bases(ed, energy, disp, sd) for ed in edges]
    # per-pixel amplitudes of every basis row (continuum, L3, L2 per element)
    amps = np.zeros((npx, 3 * len(edges)))
    truth_int, truth_wl, windows = {}, {}, {}
    for i, (ed, b) in enumerate(zip(edges, bases, strict=True)):
        c = amount[:, i]
        amps[:, 3 * i] = c
        win = (energy >= ed.onset_eV) & (energy < ed.onset_eV + window)
        windows[ed.element] = (ed.onset_eV, ed.onset_eV + window)
        if ed.white_line_area_eV > 0:
            w = ed.white_line_area_eV * ed.height
            r = ratio[ed.element]
            a3, a2 = c * w * r / (1 + r), c * w / (1 + r)
            amps[:, 3 * i + 1], amps[:, 3 * i + 2] = a3, a2
            truth_wl[ed.element] = np.stack([a3, a2], axis=-1) * scale
        truth_int[ed.element] = (amps[:, 3 * i:3 * i + 3] @ b[:, win].sum(axis=1)) * scale
    basis = np.concatenate(bases, axis=0) if bases else np.zeros((0, nch))

    zlp_sd = zlp_fwhm / 2.3548200450309493
    zlp = ndtr((energy + disp / 2) / zlp_sd) - ndtr((energy - disp / 2) / zlp_sd)
    centers = _blend_center(ep)
    ll = (energy > 0) & (energy < float(centers.max(initial=0.0)) + 8 * _BLEND_WIDTH_EV)
    e_ll = energy[ll]
    bgc = energy > max(1.0, float(centers.min(initial=_BLEND_MIN_EV)) - 8 * _BLEND_WIDTH_EV)
    e_bg = energy[bgc]
    log_bg = np.log(e_bg)
    n_pl = int(min(15, max(4, np.ceil(3 * float(tau.max(initial=0.0)) + 4))))
    log_fact = np.cumsum(np.log(np.arange(1, n_pl + 1)))

    out = np.empty((npx, nch), dtype=np.float32)
    chunk = max(1, (1 << 21) // max(nch, 1))
    for p0 in tqdm(range(0, npx, chunk), desc="EELS", unit="block", disable=not progress):
        p1 = min(npx, p0 + chunk)
        spec = amps[p0:p1] @ basis
        t = tau[p0:p1, None]
        spec += np.exp(-t) * zlp[None, :]
        cen = centers[p0:p1, None]
        if e_ll.size:
            norms = _plasmon_norms(ep[p0:p1], plasmon_width, n_pl)
            pl = np.zeros((p1 - p0, e_ll.size))
            for k in range(1, n_pl + 1):
                wk = np.exp(-t + k * np.log(np.maximum(t, 1e-300)) - log_fact[k - 1])
                pl += (wk / norms[:, k - 1:k]) * _drude(e_ll[None, :], k * ep[p0:p1, None],
                                                         k * plasmon_width)
            spec[:, ll] += pl * (1.0 - _blend(e_ll[None, :], cen)) * disp
        if e_bg.size:
            spec[:, bgc] += ((bg_a[p0:p1, None] * disp) * np.exp(-bg_r[p0:p1, None] * log_bg)
                             * _blend(e_bg[None, :], cen))
        spec *= scale
        out[p0:p1] = rng.poisson(spec) if rng is not None else spec
    truth = {"edge_integral": truth_int, "white_line_area": truth_wl, "windows": windows,
             "background_A": bg_a * disp * scale}
    return out, truth


# ----------------------------------------------------------------------------------------------
# parameter handling
# ----------------------------------------------------------------------------------------------

def _smooth_map(shape: tuple[int, int], lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random map scaled to [lo, hi]."""
    noise = rng.standard_normal(shape)
    g = gaussian_filter(noise, sigma=max(shape) / 8.0, mode="reflect")
    span = g.max() - g.min()
    g = (g - g.min()) / span if span > 0 else np.full(shape, 0.5)
    return lo + (hi - lo) * g


def _param_map(name: str, value, shape: tuple[int, int], lo: float, hi: float,
               default: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A (ny, nx) map from None (smooth default in ``default``), a number or an array."""
    if value is None:
        return _smooth_map(shape, *default, rng)
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(shape, float(arr))
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; expected a number or a map of shape {shape}")
    if not (np.all(np.isfinite(arr)) and arr.min() >= lo and arr.max() <= hi):
        raise ValueError(f"{name} must lie in the allowed range {lo}..{hi}")
    return arr


def _check_energy(energy_start_eV: float, dispersion_eV: float, n_channels: int) -> np.ndarray:
    if not (np.isfinite(dispersion_eV) and 0 < dispersion_eV <= 100.0):
        raise ValueError(f"dispersion_eV={dispersion_eV} outside the allowed range (0, 100] eV per channel")
    if isinstance(n_channels, bool) or int(n_channels) != n_channels or not 1 <= int(n_channels) <= 65536:
        raise ValueError(f"n_channels={n_channels} must be an integer in 1..65536 (a positive-length axis)")
    if not (np.isfinite(energy_start_eV) and -1000.0 <= energy_start_eV <= 20000.0):
        raise ValueError(f"energy_start_eV={energy_start_eV} outside the allowed range -1000..20000 eV")
    return float(energy_start_eV) + float(dispersion_eV) * np.arange(int(n_channels))


def _check_common(zlp_fwhm_eV: float, plasmon_width_eV: float, edge_window_eV: float) -> None:
    if not (np.isfinite(zlp_fwhm_eV) and 0.01 <= zlp_fwhm_eV <= 10.0):
        raise ValueError(f"zlp_fwhm_eV={zlp_fwhm_eV} outside the allowed range 0.01..10 eV")
    if not (np.isfinite(plasmon_width_eV) and 0.1 <= plasmon_width_eV <= 30.0):
        raise ValueError(f"plasmon_width_eV={plasmon_width_eV} outside the allowed range 0.1..30 eV")
    if not (np.isfinite(edge_window_eV) and 1.0 <= edge_window_eV <= 1000.0):
        raise ValueError(f"edge_window_eV={edge_window_eV} outside the allowed range 1..1000 eV")



def _ratio_maps(l3_l2_ratio, elements: list[str], shape: tuple[int, int],
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    wl = [el for el in elements if EDGES[el].white_line_area_eV > 0]
    if isinstance(l3_l2_ratio, dict):
        for el in l3_l2_ratio:
            if el not in wl:
                raise ValueError(f"l3_l2_ratio given for {el!r}; white-line elements in this "
                                 f"simulation: {', '.join(wl) or 'none'}")
    for el in wl:
        val = l3_l2_ratio.get(el) if isinstance(l3_l2_ratio, dict) else l3_l2_ratio
        if val is None:
            rng_range = _DEFAULT_RATIO_RANGE.get(el)
            if rng_range is not None:
                out[el] = _smooth_map(shape, *rng_range, rng)
                continue
            val = EDGES[el].default_ratio
        out[el] = _param_map(f"l3_l2_ratio[{el!r}]", val, shape, 0.1, 20.0, (1.0, 1.0), rng)
    return out


# ----------------------------------------------------------------------------------------------
# public generators
# ----------------------------------------------------------------------------------------------

def simulate_eels_si(
    shape_px: tuple[int, int],
    *,
    energy_start_eV: float = 250.0,
    dispersion_eV: float = 0.5,
    n_channels: int = 1024,
    elements: tuple[str, ...] | list[str] | None = None,
    maps: dict[str, np.ndarray | float] | None = None,
    l3_l2_ratio: float | np.ndarray | dict[str, float | np.ndarray] | None = None,
    thickness_t_over_lambda: float | np.ndarray | None = None,
    plasmon_energy_eV: float | np.ndarray | None = None,
    background_A: float | np.ndarray | None = None,
    background_r: float | np.ndarray | None = None,
    zlp_fwhm_eV: float = 0.8,
    plasmon_width_eV: float = 5.0,
    electrons_per_pixel: float | None = 1e8,
    noise: bool = True,
    edge_window_eV: float = 50.0,
    seed: int | np.random.Generator | None = None,
    progress: bool = True,
) -> EELSSpectrumImage:
    """Simulate an EELS spectrum image with ground-truth maps (model in the module docstring).

    Maps given as ``None`` are generated as smooth random fields from ``seed`` (amounts
    0.2..1, t/lambda 0.2..0.8, Ep 15..25 eV, A 60..100, r 2.7..3.3, Mn L3/L2 2..4; Ti and Fe
    L3/L2 default to 0.8 and 4.5). A number gives a constant map.

    Args:
        shape_px: (ny, nx) pixels, each 1..1024.
        energy_start_eV: energy loss of the first channel centre (eV).
        dispersion_eV: channel width (eV per channel, > 0).
        n_channels: number of channels (>= 1).
        elements: elements with edges (see :data:`EDGES`); default the keys of ``maps`` or
            ``("C", "Ti", "O", "Mn")``.
        maps: element -> relative areal density map (ny, nx) or number, >= 0.
        l3_l2_ratio: L3/L2 white-line area ratio: one number/map for every white-line element
            (Ti, Mn, Fe) in ``elements``, or a dict per element (0.1..20).
        thickness_t_over_lambda: thickness in inelastic mean free paths (0..5).
        plasmon_energy_eV: Drude plasmon energy (3..60 eV).
        background_A: power-law prefactor per eV per incident electron (E in eV), >= 0.
        background_r: power-law exponent (0.5..8).
        zlp_fwhm_eV: energy resolution, FWHM of the zero-loss peak (eV).
        plasmon_width_eV: Drude damping (FWHM-like width) of the plasmon (eV).
        electrons_per_pixel: incident electrons per pixel (> 0); ``None`` gives expected counts
            per incident electron without noise.
        noise: draw Poisson counts (only with ``electrons_per_pixel``).
        edge_window_eV: width of the edge-integral window above each onset (eV).
        seed: seed or Generator for the default maps and the noise.
        progress: show a tqdm progress bar.

    Returns:
        :class:`EELSSpectrumImage` with ``data`` (ny, nx, n_channels) float32 and truth.

    Example:
        >>> si = simulate_eels_si((8, 8), n_channels=256, elements=("C",), seed=0, progress=False)
        >>> si.data.shape, sorted(si.truth.edge_integral)
        ((8, 8, 256), ['C'])
    """
    try:
        ny, nx = (int(shape_px[0]), int(shape_px[1]))
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"shape_px={shape_px!r} must be (ny, nx), two integers in 1..1024") from None
    if len(shape_px) != 2 or not (1 <= ny <= 1024 and 1 <= nx <= 1024):
        raise ValueError(f"shape_px={shape_px!r} must be (ny, nx), two integers in 1..1024")
    energy = _check_energy(energy_start_eV, dispersion_eV, n_channels)
    _check_common(zlp_fwhm_eV, plasmon_width_eV, edge_window_eV)
    if electrons_per_pixel is not None and not (np.isfinite(electrons_per_pixel) and electrons_per_pixel > 0):
        raise ValueError(f"electrons_per_pixel={electrons_per_pixel} must be > 0 (or None: per electron, no noise)")
    maps = dict(maps or {})
    if elements is None:
        elements = tuple(maps) if maps else ("C", "Ti", "O", "Mn")
    elements = list(dict.fromkeys(elements))
    for el in list(elements) + list(maps):
        _edge_of(el)
    extra = [el for el in maps if el not in elements]
    if extra:
        raise ValueError(f"maps given for {extra} which are not in elements={elements}")
    shape = (ny, nx)
    rng = np.random.default_rng(seed)
    amount = np.stack([_param_map(f"maps[{el!r}]", maps.get(el), shape, 0.0, 1e6, (0.2, 1.0), rng)
                       for el in elements], axis=-1) if elements else np.zeros(shape + (0,))
    ratio = _ratio_maps(l3_l2_ratio, elements, shape, rng)
    tau = _param_map("thickness_t_over_lambda", thickness_t_over_lambda, shape, 0.0, 5.0, (0.2, 0.8), rng)
    ep = _param_map("plasmon_energy_eV", plasmon_energy_eV, shape, 3.0, 60.0, (15.0, 25.0), rng)
    bg_a = _param_map("background_A", background_A, shape, 0.0, 1e12, (60.0, 100.0), rng)
    bg_r = _param_map("background_r", background_r, shape, 0.5, 8.0, (2.7, 3.3), rng)

    scale = 1.0 if electrons_per_pixel is None else float(electrons_per_pixel)
    noisy = electrons_per_pixel is not None and noise
    flat = {k: v.reshape(ny * nx) for k, v in ratio.items()}
    data, t = _model(energy, float(dispersion_eV), elements, amount.reshape(ny * nx, -1), flat,
                     tau.ravel(), ep.ravel(), bg_a.ravel(), bg_r.ravel(), float(zlp_fwhm_eV),
                     float(plasmon_width_eV), float(edge_window_eV), rng if noisy else None, scale,
                     progress)
    truth = EELSTruth(
        amount={el: amount[..., i] for i, el in enumerate(elements)},
        edge_integral={el: v.reshape(shape) for el, v in t["edge_integral"].items()},
        edge_windows_eV=t["windows"],
        white_line_area={el: v.reshape(shape + (2,)) for el, v in t["white_line_area"].items()},
        l3_l2_ratio=ratio,
        background_A=t["background_A"].reshape(shape),
        background_r=bg_r,
        thickness_t_over_lambda=tau,
        plasmon_energy_eV=ep,
    )
    meta = {"elements": elements, "zlp_fwhm_eV": float(zlp_fwhm_eV),
            "plasmon_width_eV": float(plasmon_width_eV), "edge_window_eV": float(edge_window_eV),
            "noise": bool(noisy),
            "edges": {el: {"onset_eV": EDGES[el].onset_eV, "l2_eV": EDGES[el].l2_eV,
                           "shell": EDGES[el].shell} for el in elements}}
    return EELSSpectrumImage(data=data.reshape(ny, nx, len(energy)), energy_eV=energy,
                             dispersion_eV=float(dispersion_eV),
                             electrons_per_pixel=None if electrons_per_pixel is None else scale,
                             truth=truth, metadata=meta)


def eels_spectrum(
    energy_eV: np.ndarray,
    amounts: dict[str, float],
    *,
    thickness_t_over_lambda: float = 0.3,
    plasmon_energy_eV: float = 22.0,
    l3_l2_ratio: float | dict[str, float] | None = None,
    background_A: float = 80.0,
    background_r: float = 3.0,
    zlp_fwhm_eV: float = 0.8,
    plasmon_width_eV: float = 5.0,
    electrons: float | None = None,
    noise: bool = True,
    edge_window_eV: float = 50.0,
    seed: int | np.random.Generator | None = None,
) -> EELSSpectrum:
    """One EELS spectrum from element amounts (same model as :func:`simulate_eels_si`).

    Args:
        energy_eV: (n,) evenly spaced, increasing channel centres (eV), n >= 2.
        amounts: element -> relative areal density (>= 0); elements from :data:`EDGES`.
        thickness_t_over_lambda: thickness in inelastic mean free paths (0..5).
        plasmon_energy_eV: Drude plasmon energy (3..60 eV).
        l3_l2_ratio: white-line L3/L2 area ratio for every white-line element, or per element
            (default: Ti 0.8, Mn 3.0, Fe 4.5).
        background_A: power-law prefactor per eV per incident electron (E in eV), >= 0.
        background_r: power-law exponent (0.5..8).
        zlp_fwhm_eV: energy resolution (eV).
        plasmon_width_eV: Drude damping (eV).
        electrons: incident electrons (> 0); ``None``: expected counts per electron, no noise.
        noise: draw Poisson counts (only with ``electrons``).
        edge_window_eV: width of the edge-integral window above each onset (eV).
        seed: seed or Generator for the noise.

    Returns:
        :class:`EELSSpectrum` with the (n,) float32 spectrum and 0-d truth.

    Example:
        >>> e = np.arange(200.0, 400.0, 0.5)
        >>> s = eels_spectrum(e, {"C": 1.0})
        >>> s.data.shape
        (400,)
    """
    e = np.asarray(energy_eV, dtype=float)
    if e.ndim != 1 or e.size < 2:
        raise ValueError("energy_eV must be a 1-D axis of at least 2 channel centres (eV)")
    disp = float(e[1] - e[0])
    if not (disp > 0 and np.all(np.isfinite(e)) and np.allclose(np.diff(e), disp, rtol=1e-6, atol=1e-9)):
        raise ValueError("energy_eV must be finite, increasing and evenly spaced (dispersion > 0)")
    energy = _check_energy(float(e[0]), disp, e.size)
    _check_common(zlp_fwhm_eV, plasmon_width_eV, edge_window_eV)
    if electrons is not None and not (np.isfinite(electrons) and electrons > 0):
        raise ValueError(f"electrons={electrons} must be > 0 (or None: per electron, no noise)")
    if not isinstance(amounts, dict):
        raise ValueError("amounts must be a dict element -> amount, e.g. {'C': 1.0}")
    elements = list(amounts)
    for el in elements:
        _edge_of(el)
        if not (np.isfinite(amounts[el]) and amounts[el] >= 0):
            raise ValueError(f"amounts[{el!r}]={amounts[el]} must be >= 0")
    shape = (1, 1)
    rng = np.random.default_rng(seed)
    ratio = _ratio_maps(l3_l2_ratio if l3_l2_ratio is not None else
                        {el: EDGES[el].default_ratio for el in elements
                         if EDGES[el].white_line_area_eV > 0},
                        elements, shape, rng)
    tau = _param_map("thickness_t_over_lambda", thickness_t_over_lambda, shape, 0.0, 5.0, (0, 0), rng)
    ep = _param_map("plasmon_energy_eV", plasmon_energy_eV, shape, 3.0, 60.0, (0, 0), rng)
    bg_a = _param_map("background_A", background_A, shape, 0.0, 1e12, (0, 0), rng)
    bg_r = _param_map("background_r", background_r, shape, 0.5, 8.0, (0, 0), rng)
    amount = np.array([[float(amounts[el]) for el in elements]]).reshape(1, len(elements))
    scale = 1.0 if electrons is None else float(electrons)
    noisy = electrons is not None and noise
    data, t = _model(energy, disp, elements, amount, {k: v.ravel() for k, v in ratio.items()},
                     tau.ravel(), ep.ravel(), bg_a.ravel(), bg_r.ravel(), float(zlp_fwhm_eV),
                     float(plasmon_width_eV), float(edge_window_eV), rng if noisy else None, scale,
                     False)
    truth = EELSTruth(
        amount={el: np.asarray(float(amounts[el])) for el in elements},
        edge_integral={el: np.asarray(float(v[0])) for el, v in t["edge_integral"].items()},
        edge_windows_eV=t["windows"],
        white_line_area={el: np.asarray(v[0]) for el, v in t["white_line_area"].items()},
        l3_l2_ratio={el: np.asarray(float(v[0, 0])) for el, v in ratio.items()},
        background_A=np.asarray(float(t["background_A"][0])),
        background_r=np.asarray(float(bg_r[0, 0])),
        thickness_t_over_lambda=np.asarray(float(tau[0, 0])),
        plasmon_energy_eV=np.asarray(float(ep[0, 0])),
    )
    return EELSSpectrum(data=data[0], energy_eV=energy, dispersion_eV=disp,
                        electrons=None if electrons is None else scale, truth=truth)
