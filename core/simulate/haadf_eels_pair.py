"""A physically tied pair: a HAADF image and an EELS spectrum image of ONE sample, same pixel grid.

Both signals come from the same atoms under the same probe positions (no scan distortions):

* **HAADF**: :func:`~atomsmith.simulate.render_haadf` of the structure (column cross-sections
  seen through the probe's PSF), Poisson noise at ``electrons_per_pixel / pixel_area``.
* **EELS**: at every pixel, the amount of element ``X`` is the number of ``X`` atoms under the
  probe, each weighted by ``g_X(d) / PSF(0)``: ``PSF`` is the probe's intensity (as the twin's
  :meth:`~atomsmith.instrument.SimulatedInstrument.spectrum_at` uses it) and ``g_X`` is that PSF
  convolved with a Gaussian *delocalisation* of FWHM ``d50`` of the element's edge (Egerton:
  ``d50 = 0.5 lambda / theta_E^(3/4)``, ``theta_E = E_edge / (gamma m0 v^2)``; about 2.2 A for the
  C K edge and 5 A for the Si L2,3 edge at 60 kV). The convolution keeps each atom's total
  signal, so with ``delocalization=False`` the amounts are exactly the twin's. The amounts feed
  :func:`~atomsmith.simulate.simulate_eels_si` (edges, white lines, plasmon, power-law
  background) and the counts are Poisson at ``electrons_per_pixel``.

The power-law background is a constant map (valence-loss tails are delocalised over the field);
its prefactor is ``80`` per atom under the probe on average, so an edge of amount 1 keeps the
onset-height / background ratio of :data:`~atomsmith.simulate.eels.EDGES`. White-line L3/L2
ratios are the elements' defaults everywhere (as in the twin's spectra): the sample has no
valence variation that the image could not show.

Helpers cut patches centred on pixels with their spectra (:func:`patches_and_spectra`) and split
them into spatially separate training and held-out regions (:func:`spatial_split`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from .crystal import build_crystal
from .defects import add_vacancies, substitute
from .eels import EDGES, EELSTruth, simulate_eels_si
from .haadf import render_haadf
from .materials import Material, get_material
from .probe import Probe, _fwhm_to_sigma
from .scattering import Detector
from .structure import Structure
from .truth import ColumnTruth

#: Default substitutions when ``dopants`` is None: species -> fraction of the eligible columns
#: inside the field (B sites for perovskites, any column otherwise).
DEFAULT_DOPANT_FRACTIONS: dict[str, dict[str, float]] = {
    "graphene": {"Si": 0.01, "N": 0.01},
    "hBN": {"C": 0.02},
    "perovskite": {"Mn": 0.06, "Fe": 0.04},
}
_VACANCY_FRACTION = 0.005  # default vacancies in monolayers (fraction of columns in the field)
_MEAN_FREE_PATH_NM = 100.0  # inelastic mean free path used for t/lambda (60-200 kV, light elements)
_MONOLAYER_NM = 0.335
_BACKGROUND_PER_ATOM = 80.0


@dataclass(frozen=True, eq=False)
class HAADFEELSPair:
    """A HAADF image and an EELS spectrum image of the same sample on the same pixel grid.

    Attributes:
        image: (ny, nx) float32 HAADF counts (detected electrons per pixel, Poisson).
        image_clean: (ny, nx) float32 expectation of ``image``.
        spectrum_image: (ny, nx, C) float32 EELS counts per channel (Poisson).
        spectrum_clean: (ny, nx, C) float32 expectation of ``spectrum_image``.
        energy_eV: (C,) energy loss at the channel centres (eV).
        pixel_size_nm: scan step (nm per pixel), the same for both signals.
        electrons_per_pixel: incident electrons per probe position (both signals).
        element_maps: element -> (ny, nx) amount under the probe (atoms, PSF- and
            delocalisation-weighted; the ``maps`` given to the EELS model).
        delocalization_fwhm_A: element -> FWHM of its Gaussian delocalisation (angstrom).
        columns: true columns in pixel coordinates (from the HAADF renderer).
        eels_truth: truth of the EELS model (edge integrals, amounts, background).
        structure: the sample (angstrom).
        metadata: parameters used.
    """

    image: np.ndarray
    image_clean: np.ndarray
    spectrum_image: np.ndarray
    spectrum_clean: np.ndarray
    energy_eV: np.ndarray
    pixel_size_nm: float
    electrons_per_pixel: float
    element_maps: dict[str, np.ndarray]
    delocalization_fwhm_A: dict[str, float]
    columns: ColumnTruth
    eels_truth: EELSTruth
    structure: Structure
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Arrays, calibration and truth as a (nested) dict (the structure is left out)."""
        return {"image": self.image, "image_clean": self.image_clean,
                "spectrum_image": self.spectrum_image, "spectrum_clean": self.spectrum_clean,
                "energy_eV": self.energy_eV, "pixel_size_nm": self.pixel_size_nm,
                "electrons_per_pixel": self.electrons_per_pixel, "element_maps": self.element_maps,
                "delocalization_fwhm_A": self.delocalization_fwhm_A,
                "columns": self.columns.to_dict(), "eels_truth": self.eels_truth.to_dict(),
                "metadata": self.metadata}


@dataclass(frozen=True, eq=False)
class PatchSpectrumSet:
    """Image patches with the spectrum recorded at each patch's centre pixel.

    Attributes:
        patches: (N, s, s) float32 image patches (input units).
        spectra: (N, C) float32 spectra (input units).
        centers_yx: (N, 2) int pixel (row, column) of each patch centre (index ``s // 2``).
        patch_px: side ``s`` of the patches.
    """

    patches: np.ndarray
    spectra: np.ndarray
    centers_yx: np.ndarray
    patch_px: int

    def __len__(self) -> int:
        return len(self.patches)

    def select(self, mask: np.ndarray) -> PatchSpectrumSet:
        """The rows where ``mask`` (N,) is True."""
        m = np.asarray(mask, bool)
        return PatchSpectrumSet(self.patches[m], self.spectra[m], self.centers_yx[m], self.patch_px)

    def to_dict(self) -> dict:
        """Arrays as a dict."""
        return {"patches": self.patches, "spectra": self.spectra, "centers_yx": self.centers_yx,
                "patch_px": self.patch_px}


# ----------------------------------------------------------------------------------------------
# physics helpers
# ----------------------------------------------------------------------------------------------

def delocalization_d50_A(edge_eV: float, beam_keV: float) -> float:
    """Egerton's delocalisation diameter ``d50 = 0.5 lambda / theta_E^(3/4)`` (angstrom).

    ``theta_E = E / (gamma m0 v^2)`` is the characteristic angle (rad) of a loss ``E`` (eV) at
    beam energy ``beam_keV``; ``lambda`` the electron wavelength (angstrom). For a 2D Gaussian,
    the diameter holding 50 % of the signal equals its FWHM, which is how it is used here.
    """
    from .probe import _C, _ME, _QE, wavelength_A

    if not (edge_eV > 0 and beam_keV > 0):
        raise ValueError(f"edge_eV={edge_eV} and beam_keV={beam_keV} must be > 0")
    rest_eV = _ME * _C**2 / _QE  # electron rest energy, 510999 eV
    gamma = 1.0 + beam_keV * 1e3 / rest_eV
    beta2 = 1.0 - 1.0 / gamma**2
    theta_e = edge_eV / (gamma * rest_eV * beta2)
    return float(0.5 * wavelength_A(beam_keV) / theta_e**0.75)


def _weight_profile(probe: Probe, fwhm_A: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(r_A, weight, r_cut_A): the probe PSF convolved with a Gaussian of ``fwhm_A``, divided by
    the bare PSF's peak (so an atom right under a point-like-delocalised probe weighs 1)."""
    r_tab, psf_tab, r_max = probe.radial_profile()
    peak = float(psf_tab[0])
    if fwhm_A <= 0:
        return np.asarray(r_tab), np.asarray(psf_tab) / peak, float(r_max)
    sigma = _fwhm_to_sigma(fwhm_A)
    r_cut = float(r_max + 4.0 * sigma)
    step = min(0.05, float(r_max) / 20.0)
    n = int(np.ceil(r_cut / step))
    ax = np.arange(-n, n + 1) * step
    rr = np.hypot(ax[None, :], ax[:, None])
    img = np.interp(rr, r_tab, psf_tab, right=0.0)
    img = gaussian_filter(img, sigma / step, mode="constant", truncate=4.5)
    r = ax[n:]
    prof = img[n, n:]
    return r, prof / peak, r_cut


def _element_counts(structure: Structure) -> tuple[list[str], np.ndarray]:
    """Elements and (N_columns, n_elements) atoms of each per column (thickness included)."""
    els: list[str] = []
    for k in structure.kinds:
        for sym, _ in k.atoms:
            if sym not in els:
                els.append(sym)
    per_kind = np.zeros((len(structure.kinds), len(els)))
    for i, k in enumerate(structure.kinds):
        for sym, _ in k.atoms:
            per_kind[i, els.index(sym)] += 1
    return els, per_kind[structure.kind] * structure.thickness_cells


def element_amount_maps(structure: Structure, shape_px: tuple[int, int], pixel_size_nm: float, *,
                        origin_nm: tuple[float, float] = (0.0, 0.0), probe: Probe | None = None,
                        delocalization_fwhm_A: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Atoms of each element under the probe at every pixel, (ny, nx) per element.

    Pixel ``(row, col)`` has the probe at ``origin + (col, row) * pixel_size`` (sample frame).
    Each atom counts ``g(d) / PSF(0)``, ``g`` the probe PSF convolved with the element's
    Gaussian delocalisation (FWHM in ``delocalization_fwhm_A``, default 0: the twin's weights).
    """
    probe = probe or Probe()
    deloc = dict(delocalization_fwhm_A or {})
    ny, nx = int(shape_px[0]), int(shape_px[1])
    px_A = float(pixel_size_nm) * 10.0
    yy, xx = np.mgrid[0:ny, 0:nx]
    pts = np.stack([xx.ravel() * px_A, yy.ravel() * px_A], 1) + np.asarray(origin_nm, float) * 10.0
    els, counts = _element_counts(structure)
    occ = counts.sum(1) > 0
    xy, counts = structure.xy_A[occ], counts[occ]
    out: dict[str, np.ndarray] = {}
    tree_p = cKDTree(pts)
    tree_c = cKDTree(xy) if len(xy) else None
    cache: dict[float, tuple] = {}
    for j, el in enumerate(els):
        fw = float(deloc.get(el, 0.0))
        if fw not in cache:
            r, w, r_cut = _weight_profile(probe, fw)
            pairs = (tree_p.sparse_distance_matrix(tree_c, r_cut, output_type="ndarray")
                     if tree_c is not None else None)  # keeps zero distances
            cache[fw] = (r, w, pairs)
        r, w, pairs = cache[fw]
        amount = np.zeros(ny * nx)
        if pairs is not None and len(pairs):
            wt = np.interp(pairs["v"], r, w, right=0.0) * counts[pairs["j"], j]
            amount += np.bincount(pairs["i"], weights=wt, minlength=ny * nx)
        out[el] = amount.reshape(ny, nx)
    return out


def _default_fractions(mat: Material) -> dict[str, float]:
    if mat.name in DEFAULT_DOPANT_FRACTIONS:
        return DEFAULT_DOPANT_FRACTIONS[mat.name]
    if mat.period_z_A is not None and any(x.name == "B" for x in mat.sublattices):
        return DEFAULT_DOPANT_FRACTIONS["perovskite"]
    return {}


def _default_dopants(s: Structure, sublattice: str | None) -> dict[str, int]:
    mat = s.material
    frac = _default_fractions(mat)
    if not frac:
        return {}
    ok = s.inside(3.0) & s.occupied
    if sublattice is not None:
        ok &= s.sublattice == mat.sublattice_index(sublattice)
    return {sp: max(1, int(round(f * int(ok.sum())))) for sp, f in frac.items()}


# ----------------------------------------------------------------------------------------------
# the pair
# ----------------------------------------------------------------------------------------------

def simulate_haadf_eels_pair(
    material: str | Material = "SrTiO3",
    shape_px: tuple[int, int] = (128, 128),
    pixel_size_nm: float = 0.04,
    *,
    dopants: dict[str, int] | None = None,
    dopant_sublattice: str | None = None,
    vacancies: int | None = None,
    rotation_deg: float | None = None,
    thickness_nm: float | None = None,
    electrons_per_pixel: float = 1e6,
    probe: Probe | None = None,
    detector: Detector | None = None,
    energy_range_eV: tuple[float, float] | None = None,
    n_channels: int = 256,
    delocalization: bool = True,
    plasmon_energy_eV: float = 20.0,
    background_A: float | None = None,
    structure: Structure | None = None,
    seed: int | np.random.Generator | None = 0,
    progress: bool = False,
) -> HAADFEELSPair:
    """Simulate a HAADF image and an EELS spectrum image of one random, defective sample.

    The crystal has a random in-plane rotation and shift (``seed``), ``dopants`` substituted
    columns and ``vacancies`` empty columns at random sites; both signals are computed from
    those atoms at the same probe positions (model in the module docstring).

    Args:
        material: built-in name (SrTiO3, LaMnO3, graphene, hBN, ...) or a :class:`Material`;
            at least one element (after doping) must have an edge in ``EDGES``.
        shape_px: (ny, nx) pixels of both signals.
        pixel_size_nm: scan step, nm per pixel (> 0).
        dopants: species -> number of substituted columns; default
            :data:`DEFAULT_DOPANT_FRACTIONS` of the eligible columns in the field (1 % each of Si
            and N in graphene, 2 % C in hBN, 6 % Mn and 4 % Fe on the B sites of perovskites).
        dopant_sublattice: sublattice the dopants go to (default ``"B"`` for perovskites, any
            otherwise).
        vacancies: empty columns (default 0.5 % of the columns for monolayers, 0 for bulk).
        rotation_deg: in-plane rotation (degrees); default random from ``seed``.
        thickness_nm: sample thickness for bulk crystals (default 4 nm); ignored for monolayers.
        electrons_per_pixel: incident electrons per probe position for both signals (> 0;
            1e6 is ~16 pA for 10 ms); the HAADF dose is this over the pixel area.
        probe, detector: optics (default probe: 200 kV, 25 mrad for bulk crystals, 60 kV,
            30 mrad for monolayers; detector 80-200 mrad).
        energy_range_eV: (first, last) channel centre (eV); default 30 eV below the lowest edge
            present (but above the low-loss hand-over) to 120 eV above the highest.
        n_channels: EELS channels (>= 2).
        delocalization: blur each element's amounts by its edge's ``d50`` (else: probe only).
        plasmon_energy_eV: Drude plasmon energy (eV).
        background_A: power-law prefactor per eV per incident electron; default 80 x the mean
            number of atoms under the probe.
        structure: use this sample instead of building one (``material``, ``dopants``,
            ``vacancies``, ``rotation_deg``, ``thickness_nm`` are then ignored).
        seed: seed or Generator (structure, then HAADF noise, then EELS noise).
        progress: progress bars of the simulators.

    Returns:
        :class:`HAADFEELSPair`.

    Example:
        >>> p = simulate_haadf_eels_pair(shape_px=(32, 32), n_channels=64, seed=1)
        >>> p.image.shape, p.spectrum_image.shape
        ((32, 32), (32, 32, 64))
    """
    try:
        ny, nx = int(shape_px[0]), int(shape_px[1])
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"shape_px={shape_px!r} must be (ny, nx), two integers in 4..1024") from None
    if len(shape_px) != 2 or not (4 <= ny <= 1024 and 4 <= nx <= 1024):
        raise ValueError(f"shape_px={shape_px!r} must be (ny, nx), two integers in 4..1024")
    if not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm={pixel_size_nm} must be > 0")
    if not (np.isfinite(electrons_per_pixel) and electrons_per_pixel > 0):
        raise ValueError(f"electrons_per_pixel={electrons_per_pixel} must be > 0")
    if isinstance(n_channels, bool) or int(n_channels) != n_channels or int(n_channels) < 2:
        raise ValueError(f"n_channels={n_channels} must be an integer >= 2")
    rng = np.random.default_rng(seed)
    if probe is None:
        bulk_sample = (structure.material if structure is not None else get_material(material)).period_z_A
        probe = Probe(200.0, 25.0) if bulk_sample is not None else Probe()
    detector = detector or Detector()
    px_A = float(pixel_size_nm) * 10.0
    extent = (nx * px_A, ny * px_A)

    if structure is None:
        mat = get_material(material)
        bulk = mat.period_z_A is not None
        rot = float(rng.uniform(0.0, 360.0)) if rotation_deg is None else float(rotation_deg)
        shift = tuple(rng.uniform(-5.0, 5.0, 2))
        # columns beyond the field still send delocalised signal into it: pad by the widest reach
        present = ({sym for x in mat.sublattices for sym, _ in x.atoms}
                   | set(_default_fractions(mat) if dopants is None else dopants))
        onsets = [EDGES[el].onset_eV for el in present if el in EDGES] or [1000.0]
        d50 = delocalization_d50_A(min(onsets), probe.energy_keV) if delocalization else 0.0
        reach = probe.radial_profile()[2] + 4.0 * _fwhm_to_sigma(d50)
        s = build_crystal(mat, extent, rotation_deg=rot, shift_A=shift,
                          thickness_nm=(4.0 if thickness_nm is None else thickness_nm) if bulk else None,
                          margin_A=max(6.0, reach + 2.0))
        if dopant_sublattice is None and bulk and any(x.name == "B" for x in mat.sublattices):
            dopant_sublattice = "B"
        for sp, count in (_default_dopants(s, dopant_sublattice) if dopants is None else dict(dopants)).items():
            if int(count) > 0:
                s = substitute(s, sp, int(count), sublattice=dopant_sublattice, min_separation_A=4.0,
                               seed=rng)
        if vacancies is None:
            n_vac = 0 if bulk else max(1, int(round(_VACANCY_FRACTION * int(s.inside(3.0).sum()))))
        else:
            n_vac = int(vacancies)
        if n_vac > 0:
            s = add_vacancies(s, n_vac, min_separation_A=4.0, seed=rng)
        structure = s
    else:
        rot = None
    els_all, counts = _element_counts(structure)
    edge_els = [el for el in els_all if el in EDGES and counts[:, els_all.index(el)].sum() > 0]
    if not edge_els:
        raise ValueError(f"no element of the sample ({', '.join(els_all) or 'none'}) has an EELS edge "
                         f"in the model; supported: {', '.join(EDGES)}")

    # --- the HAADF image (same probe positions: pixel (r, c) at (c, r) * pixel size)
    dose = float(electrons_per_pixel) / px_A**2
    img = render_haadf(structure, (ny, nx), float(pixel_size_nm), probe=probe, detector=detector,
                       dose_e_per_A2=dose, seed=rng, progress=progress)

    # --- element amounts under the probe, delocalised per edge
    deloc = {el: (delocalization_d50_A(EDGES[el].onset_eV, probe.energy_keV) if delocalization else 0.0)
             for el in edge_els}
    amounts = element_amount_maps(structure, (ny, nx), float(pixel_size_nm), probe=probe,
                                  delocalization_fwhm_A=deloc)
    edge_maps = {el: amounts[el] for el in edge_els}
    total_mean = float(np.mean(sum(amounts.values())))

    # --- energy axis and the spectrum image
    ep = float(plasmon_energy_eV)
    floor = max(40.0, 3.0 * ep) + 20.0  # above the low-loss hand-over of the EELS model
    onsets = [EDGES[el].onset_eV for el in edge_els]
    if energy_range_eV is None:
        lo, hi = max(min(onsets) - 30.0, floor), max(onsets) + 120.0
    else:
        lo, hi = float(energy_range_eV[0]), float(energy_range_eV[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"energy_range_eV={energy_range_eV} must be (first, last) with last > first")
    disp = (hi - lo) / (int(n_channels) - 1)
    period = structure.material.period_z_A
    t_nm = structure.thickness_cells * period / 10.0 if period else _MONOLAYER_NM
    bg = _BACKGROUND_PER_ATOM * total_mean if background_A is None else float(background_A)
    si = simulate_eels_si((ny, nx), energy_start_eV=lo, dispersion_eV=disp, n_channels=int(n_channels),
                          elements=edge_els, maps=edge_maps, thickness_t_over_lambda=min(5.0, t_nm / _MEAN_FREE_PATH_NM),
                          plasmon_energy_eV=ep, background_A=bg, background_r=3.0,
                          l3_l2_ratio={el: EDGES[el].default_ratio for el in edge_els
                                       if EDGES[el].white_line_area_eV > 0},
                          electrons_per_pixel=float(electrons_per_pixel), noise=False, seed=rng,
                          progress=progress)
    clean = si.data
    noisy = rng.poisson(clean).astype(np.float32)
    meta = {"material": structure.material.name, "rotation_deg": rot, "edge_elements": edge_els,
            "dose_e_per_A2": dose, "thickness_nm": t_nm, "background_A": bg,
            "plasmon_energy_eV": ep, "dispersion_eV": disp, "probe": probe.to_dict(),
            "detector": {"inner_mrad": detector.inner_mrad, "outer_mrad": detector.outer_mrad},
            "n_dopant_columns": int(np.sum(structure.label == "substitution")),
            "n_vacancies": int(np.sum(structure.label == "vacancy")), "delocalization": bool(delocalization)}
    return HAADFEELSPair(
        image=img.image, image_clean=img.clean, spectrum_image=noisy, spectrum_clean=clean,
        energy_eV=si.energy_eV, pixel_size_nm=float(pixel_size_nm),
        electrons_per_pixel=float(electrons_per_pixel), element_maps=edge_maps,
        delocalization_fwhm_A=deloc, columns=img.truth, eels_truth=si.truth, structure=structure,
        metadata=meta)


# ----------------------------------------------------------------------------------------------
# patches
# ----------------------------------------------------------------------------------------------

def patches_and_spectra(image: np.ndarray, spectrum_image: np.ndarray, patch_px: int, *,
                        stride: int = 1, centers_yx: np.ndarray | None = None) -> PatchSpectrumSet:
    """Patches of ``image`` centred on pixels, each with the spectrum at its centre pixel.

    Args:
        image: (ny, nx) image.
        spectrum_image: (ny, nx, C) spectra on the same grid.
        patch_px: patch side s (>= 2); the centre pixel is at index ``s // 2`` of the patch.
        stride: step between centres (pixels) when ``centers_yx`` is None; every centre whose
            patch lies fully inside the image is used.
        centers_yx: (M, 2) integer (row, column) centres to use instead (e.g. found atoms);
            those whose patch would leave the image are dropped.

    Returns:
        :class:`PatchSpectrumSet` (float32 arrays).
    """
    img = np.asarray(image)
    si = np.asarray(spectrum_image)
    if img.ndim != 2 or si.ndim != 3 or si.shape[:2] != img.shape:
        raise ValueError(f"image must be (ny, nx) and spectrum_image (ny, nx, C) on the same grid; "
                         f"got {img.shape} and {si.shape}")
    s = int(patch_px)
    ny, nx = img.shape
    if not 2 <= s <= min(ny, nx):
        raise ValueError(f"patch_px={patch_px} must be in 2..{min(ny, nx)}")
    h = s // 2
    if centers_yx is None:
        if int(stride) < 1:
            raise ValueError(f"stride={stride} must be >= 1")
        ys, xs = np.arange(h, ny - (s - h) + 1, int(stride)), np.arange(h, nx - (s - h) + 1, int(stride))
        cy, cx = np.meshgrid(ys, xs, indexing="ij")
        c = np.stack([cy.ravel(), cx.ravel()], 1)
    else:
        c = np.rint(np.asarray(centers_yx, float)).astype(int).reshape(-1, 2)
        ok = (c[:, 0] >= h) & (c[:, 0] <= ny - (s - h)) & (c[:, 1] >= h) & (c[:, 1] <= nx - (s - h))
        c = c[ok]
    win = np.lib.stride_tricks.sliding_window_view(img, (s, s))  # [r0, c0] -> patch at top-left r0, c0
    patches = np.ascontiguousarray(win[c[:, 0] - h, c[:, 1] - h], dtype=np.float32)
    spectra = np.ascontiguousarray(si[c[:, 0], c[:, 1]], dtype=np.float32)
    return PatchSpectrumSet(patches=patches.reshape(-1, s, s), spectra=spectra.reshape(len(c), si.shape[2]),
                            centers_yx=c, patch_px=s)


def spatial_split(centers_yx: np.ndarray, shape_px: tuple[int, int], patch_px: int, *,
                  test_fraction: float = 0.25, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out masks (N,) for patch centres, split by a straight boundary.

    The held-out region is the strip of width ``test_fraction`` of the field on ``side``
    (``"right"``, ``"left"``, ``"top"``, ``"bottom"``); training centres keep ``patch_px``
    pixels away from it, so no training patch overlaps a held-out patch or centre.
    """
    c = np.asarray(centers_yx).reshape(-1, 2)
    ny, nx = int(shape_px[0]), int(shape_px[1])
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
    axis, size = {"right": (1, nx), "left": (1, nx), "bottom": (0, ny), "top": (0, ny)}.get(side, (None, 0))
    if axis is None:
        raise ValueError(f"side={side!r} must be 'right', 'left', 'top' or 'bottom'")
    coord = c[:, axis] if side in ("right", "bottom") else (size - 1) - c[:, axis]
    cut = size * (1.0 - test_fraction)
    test = coord >= cut
    train = coord < cut - int(patch_px)
    return train, test
