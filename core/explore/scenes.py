"""Twin scenes with a hidden property map, for testing and benchmarking automated experiments.

:func:`dopant_scene` renders a HAADF image of graphene with Si (and N) substitutions and
vacancies, and computes at every pixel the EELS edge ratio the probe would measure there: the
Si L2,3 amount over the C K amount under the probe (PSF-weighted, each edge delocalised by its
Egerton ``d50``, as :func:`~atomsmith.simulate.haadf_eels_pair.element_amount_maps`). The ratio
peaks on Si dopants; the image shows them as bright columns, so a surrogate that reads image
patches can learn where the ratio is high.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class PropertyScene:
    """A HAADF image, the hidden property at every pixel and candidate patches.

    Attributes:
        image: (ny, nx) float32 HAADF counts (Poisson noise).
        property_map: (ny, nx) hidden property (here Si/C edge-amount ratio, dimensionless).
        patches: (N, s*s) float32 flattened patches centred on the candidates.
        centers_yx: (N, 2) int pixel (row, column) of each candidate (patch centre).
        values: (N,) noise-free property at the candidates.
        pixel_size_nm: nm per pixel.
        patch_px: patch side s.
    """

    image: np.ndarray
    property_map: np.ndarray
    patches: np.ndarray
    centers_yx: np.ndarray
    values: np.ndarray
    pixel_size_nm: float
    patch_px: int

    @property
    def xy_nm(self) -> np.ndarray:
        """(N, 2) candidate positions (x, y) in nm from the image's pixel (0, 0)."""
        return self.centers_yx[:, ::-1] * self.pixel_size_nm

    def top_fraction(self, fraction: float = 0.01) -> np.ndarray:
        """(N,) bool: candidates whose true value is in the top ``fraction``."""
        thr = np.quantile(self.values, 1.0 - fraction)
        return self.values >= thr

    def to_dict(self) -> dict:
        """Arrays as a dict."""
        return {"image": self.image, "property_map": self.property_map, "patches": self.patches,
                "centers_yx": self.centers_yx, "values": self.values, "pixel_size_nm": self.pixel_size_nm,
                "patch_px": self.patch_px}


def cut_patches(image: np.ndarray, centers_yx: np.ndarray, patch_px: int) -> np.ndarray:
    """(N, s*s) flattened patches of side ``patch_px`` centred on ``centers_yx`` (row, col).

    Patches reaching past the border are padded by reflection.
    """
    img = np.asarray(image, np.float32)
    s = int(patch_px)
    if s < 2:
        raise ValueError(f"patch_px={patch_px} must be >= 2")
    h = s // 2
    pad = np.pad(img, s, mode="reflect")
    c = np.rint(np.asarray(centers_yx, float)).astype(int).reshape(-1, 2) + s
    win = np.lib.stride_tricks.sliding_window_view(pad, (s, s))
    return np.ascontiguousarray(win[c[:, 0] - h, c[:, 1] - h].reshape(len(c), s * s))


def dopant_scene(shape_px: tuple[int, int] = (73, 73), pixel_size_nm: float = 0.04, *, patch_px: int = 10,
                 n_si: int = 3, n_n: int = 3, n_vacancies: int = 2, dose_e_per_A2: float = 1e5,
                 stride_px: int = 1, seed: int = 0) -> PropertyScene:
    """Graphene with Si and N dopants and vacancies; hidden property = Si/C EELS amount ratio.

    Candidates are the pixel centres (every ``stride_px``) whose patch lies inside the image:
    the default 73 x 73 image with 10 x 10 patches gives 64 x 64 = 4096 candidates.

    Args:
        shape_px: (ny, nx) image size.
        pixel_size_nm: nm per pixel.
        patch_px: patch side.
        n_si, n_n, n_vacancies: substituted Si, N columns and empty columns.
        dose_e_per_A2: HAADF dose (Poisson noise).
        stride_px: step between candidate centres.
        seed: lattice rotation/shift, defect sites and noise.
    """
    from ..simulate.crystal import build_crystal
    from ..simulate.defects import add_vacancies, substitute
    from ..simulate.eels import EDGES
    from ..simulate.haadf import render_haadf
    from ..simulate.haadf_eels_pair import delocalization_d50_A, element_amount_maps
    from ..simulate.probe import Probe

    rng = np.random.default_rng(seed)
    ny, nx = int(shape_px[0]), int(shape_px[1])
    px_A = pixel_size_nm * 10.0
    s = build_crystal("graphene", (nx * px_A, ny * px_A), rotation_deg=float(rng.uniform(0, 60)),
                      shift_A=tuple(rng.uniform(-2, 2, 2)), margin_A=8.0)
    if n_si:
        s = substitute(s, "Si", int(n_si), min_separation_A=6.0, edge_margin_A=6.0, seed=rng)
    if n_n:
        s = substitute(s, "N", int(n_n), old_species="C", min_separation_A=4.0, edge_margin_A=4.0, seed=rng)
    if n_vacancies:
        s = add_vacancies(s, int(n_vacancies), min_separation_A=4.0, seed=rng)
    probe = Probe()
    img = render_haadf(s, (ny, nx), pixel_size_nm, probe=probe, dose_e_per_A2=dose_e_per_A2, seed=rng)
    deloc = {el: delocalization_d50_A(EDGES[el].onset_eV, probe.energy_keV) for el in ("Si", "C")}
    amounts = element_amount_maps(s, (ny, nx), pixel_size_nm, probe=probe, delocalization_fwhm_A=deloc)
    si = amounts.get("Si", np.zeros((ny, nx)))
    prop = si / (amounts["C"] + 1e-3)
    h = int(patch_px) // 2
    ys = np.arange(h, ny - (int(patch_px) - h) + 1, int(stride_px))
    xs = np.arange(h, nx - (int(patch_px) - h) + 1, int(stride_px))
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    centers = np.stack([cy.ravel(), cx.ravel()], 1)
    patches = cut_patches(img.image, centers, patch_px)
    return PropertyScene(image=img.image, property_map=prop, patches=patches, centers_yx=centers,
                         values=prop[centers[:, 0], centers[:, 1]], pixel_size_nm=float(pixel_size_nm),
                         patch_px=int(patch_px))
