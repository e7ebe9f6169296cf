"""Point defects from found columns: vacancies as empty lattice sites, substitutions as intensity outliers.

The method, step by step:

1. Columns are grouped by integrated intensity (:func:`~atomsmith.atoms.classify_columns`, a
   Gaussian mixture). Classes holding at least ``major_fraction`` of the columns are the host
   lattice; rarer classes (a few Si in graphene, W in MoS2) are defect candidates and are left out
   of the lattice fit.
2. A Bravais lattice with a basis is fitted to the host columns
   (:func:`atomsmith.lattice.fit_reference_lattice`), with the classes when that describes the
   columns as well as geometry alone does (SrTiO3 [001]: Sr, Ti-O and O sites), otherwise
   geometry only (a class split by noise is ignored).
3. Every lattice site in the field gets an expected position, corrected by the median residual of
   its nearest fitted columns (so slow distortions, scan drift and strain do not create false
   vacancies), and is matched to the nearest found column within ``match_radius`` of the
   nearest-neighbour distance.
4. A site with no column, inside the field and with at least 60 % of the usual number of found
   neighbours (so not outside a flake edge or inside a hole), is a
   **vacancy**; so is a site whose column has less than ``empty_below`` of the site's median
   intensity. A column far from every site is **off lattice** (adatom, interstitial, another
   grain).
5. For each basis site the column intensities get a robust z-score (median and MAD); columns with
   ``|z| >= z_threshold`` and a relative change of at least ``min_relative_change`` are
   **substitutions**: ``"heavier"`` (e.g. Si for C, W for Mo) or ``"lighter"`` (e.g. an S2
   column with one S missing). Columns whose integration disc is cut by the image border are not
   scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from .table import AtomTable

__all__ = ["Defects", "find_defects"]


@dataclass(frozen=True, eq=False)
class Defects:
    """Point defects of one image, all positions in pixels (x = column, y = row).

    Attributes:
        vacancy_xy: (V, 2) expected positions of the empty lattice sites.
        vacancy_site: (V,) basis site of each vacancy (index into ``site_labels``).
        substitution_index: (S,) rows of the input table whose intensity is an outlier for its site.
        substitution_z: (S,) robust z-score of those intensities (positive = brighter).
        substitution_change: (S,) relative intensity change, ``I / median(I of the site) - 1``.
        off_lattice_index: (K,) rows of the input table that sit on no lattice site.
        site: (N,) basis site of every column of the input table (-1 when off lattice).
        site_labels: (M,) class of each basis site (``class_names`` entry, or the site number).
        site_intensity: (M,) median column intensity of each basis site.
        xy: (N, 2) positions of the input columns (for plotting and summaries).
        lattice: the fitted :class:`~atomsmith.lattice.ReferenceLattice`.
        pixel_size_nm: calibration (nm per pixel) or None.
    """

    vacancy_xy: np.ndarray
    vacancy_site: np.ndarray
    substitution_index: np.ndarray
    substitution_z: np.ndarray
    substitution_change: np.ndarray
    off_lattice_index: np.ndarray
    site: np.ndarray
    site_labels: np.ndarray
    site_intensity: np.ndarray
    xy: np.ndarray
    lattice: object = field(repr=False)
    pixel_size_nm: float | None = None

    @property
    def substitution_xy(self) -> np.ndarray:
        """(S, 2) positions of the substituted columns."""
        return self.xy[self.substitution_index]

    @property
    def substitution_kind(self) -> np.ndarray:
        """(S,) ``"heavier"`` or ``"lighter"`` than the site's usual column."""
        return np.where(self.substitution_z > 0, "heavier", "lighter")

    @property
    def off_lattice_xy(self) -> np.ndarray:
        """(K, 2) positions of the columns on no lattice site."""
        return self.xy[self.off_lattice_index]

    def summary(self) -> str:
        """One line: counts of each kind of defect."""
        kinds = self.substitution_kind
        return (f"{len(self.vacancy_xy)} vacancies, {int(np.sum(kinds == 'heavier'))} heavier and "
                f"{int(np.sum(kinds == 'lighter'))} lighter substitutions, "
                f"{len(self.off_lattice_index)} off-lattice columns ({len(self.site_labels)} basis sites)")

    def to_dict(self) -> dict:
        """Arrays as a dict (the lattice as its own dict)."""
        return {
            "vacancy_x": self.vacancy_xy[:, 0], "vacancy_y": self.vacancy_xy[:, 1],
            "vacancy_site": self.vacancy_site, "vacancy_site_label": self.site_labels[self.vacancy_site],
            "substitution_index": self.substitution_index, "substitution_z": self.substitution_z,
            "substitution_change": self.substitution_change, "substitution_kind": self.substitution_kind,
            "off_lattice_index": self.off_lattice_index, "site": self.site,
            "site_labels": self.site_labels, "site_intensity": self.site_intensity,
            "pixel_size_nm": self.pixel_size_nm, "lattice": self.lattice.to_dict(),
        }


def _candidate_lattices(xy, labels, names, major_fraction, image_shape, pixel_size_nm):
    """Lattices fitted to the majority classes: geometry only, and with the classes when they fit."""
    from atomsmith.lattice import fit_reference_lattice

    counts = np.bincount(labels)
    major = counts[labels] >= major_fraction * len(labels)
    if major.sum() < 4:
        major = np.ones(len(labels), bool)
    out = [fit_reference_lattice(xy[major], image_shape=image_shape, pixel_size_nm=pixel_size_nm)]
    if len(np.unique(labels[major])) > 1:
        cls = np.asarray(names, dtype=object)[labels[major]] if names else labels[major]
        try:
            out.append(fit_reference_lattice(xy[major], classes=cls, image_shape=image_shape,
                                             pixel_size_nm=pixel_size_nm))
        except ValueError:
            pass
    return out, major


def _match_sites(lattice, xy, major, shape, r_match, margin, nn):
    """Expected sites (residual-corrected), their basis site, which are empty, and each column's site."""
    sites_xy, sites_b = _sites_in_field(lattice, shape, pad=r_match)
    fitted_xy = xy[major][lattice.on_lattice]
    resid = lattice.residuals_px[lattice.on_lattice]
    if len(fitted_xy) >= 1:
        k = min(6, len(fitted_xy))
        _, idx = cKDTree(fitted_xy).query(sites_xy, k=k)
        sites_xy = sites_xy + np.median(resid[idx.reshape(len(sites_xy), k)], axis=1)
    d_col, s_col = cKDTree(sites_xy).query(xy)
    col_site = np.where(d_col <= r_match, sites_b[s_col], -1)
    tree = cKDTree(xy)
    d_site, _ = tree.query(sites_xy)
    n_near = tree.query_ball_point(sites_xy, 1.5 * nn, return_length=True)
    # as many found neighbours as a column usually has (60 %, at least two): a site outside a
    # flake edge or a hole has fewer
    typical = np.median(tree.query_ball_point(xy, 1.5 * nn, return_length=True) - 1)
    empty = _inside(sites_xy, shape, margin) & (d_site > r_match) & (n_near >= max(2.0, 0.6 * typical))
    return sites_xy, sites_b, empty, col_site


def _inside(xy, shape, margin):
    h, w = shape
    return (xy[:, 0] >= margin) & (xy[:, 0] <= w - 1 - margin) & (xy[:, 1] >= margin) & (xy[:, 1] <= h - 1 - margin)


def _sites_in_field(lattice, shape, pad):
    """All (i, j, site) whose ideal position lies within ``pad`` outside the field; (K, 2) xy, (K,) site."""
    h, w = shape
    corners = np.array([[-pad, -pad], [w - 1 + pad, -pad], [-pad, h - 1 + pad], [w - 1 + pad, h - 1 + pad]])
    frac = (corners - lattice.origin_px) @ np.linalg.inv(lattice.matrix_px).T
    lo = np.floor(frac.min(axis=0)).astype(int) - 1
    hi = np.ceil(frac.max(axis=0)).astype(int) + 1
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    ij = np.stack([ii.ravel(), jj.ravel()], axis=1)
    m = len(lattice.basis_frac)
    ij_all = np.repeat(ij, m, axis=0)
    site = np.tile(np.arange(m), len(ij))
    xy = lattice.ideal_xy_px(ij_all, site)
    inside = (xy[:, 0] >= -pad) & (xy[:, 0] <= w - 1 + pad) & (xy[:, 1] >= -pad) & (xy[:, 1] <= h - 1 + pad)
    return xy[inside], site[inside]


def find_defects(
    table: AtomTable,
    image_shape: tuple[int, int] | None = None,
    *,
    match_radius: float = 0.35,
    z_threshold: float = 4.0,
    min_relative_change: float = 0.1,
    major_fraction: float = 0.1,
    border: float = 0.5,
    empty_below: float = 0.3,
) -> Defects:
    """Find vacancies (empty lattice sites) and substitutions (intensity outliers) among found columns.

    Args:
        table: found columns (``xy`` px, ``intensity``), e.g. from :func:`~atomsmith.find_atoms`;
            at least 8 columns of one grain. Its labels are used when it is classified, otherwise
            it is classified here by intensity.
        image_shape: (rows, cols) of the image; default: the bounding box of the columns.
        match_radius: a site is occupied when a column lies within this fraction of the
            nearest-neighbour distance of it (0.35, as in the accuracy benchmarks).
        z_threshold: robust z-score (median / 1.4826 MAD per basis site) a substitution must reach.
        min_relative_change: smallest relative intensity change counted as a substitution (0.1 =
            10 %), so that counting noise at a high dose is not flagged.
        major_fraction: classes with at least this fraction of the columns form the host lattice.
        border: sites and columns closer than this fraction of the nearest-neighbour distance to
            the image border are not scored (their columns are cut by the edge).

        empty_below: a column with less than this fraction of its site's median intensity is
            counted as a vacancy (the finder took the neighbours' tails for a column). Thick
            crystals keep some intensity in an emptied column: an O vacancy column in 2 nm SrTiO3
            keeps ~40 % and is reported as a ``"lighter"`` substitution.

    Returns:
        :class:`Defects`.

    Raises:
        ValueError: too few columns, non-finite intensities, or no lattice in the positions.
    """
    if not isinstance(table, AtomTable):
        raise TypeError(f"table must be an AtomTable (from find_atoms), not {type(table).__name__}")
    n = len(table)
    if n < 8:
        raise ValueError(f"find_defects needs at least 8 columns to fit a lattice; the table has {n}")
    if not np.all(np.isfinite(table.intensity)) or not np.all(np.isfinite(table.xy)):
        raise ValueError("table has NaN or inf positions or intensities")
    for name, value, hi in (("match_radius", match_radius, 0.5), ("border", border, 5.0),
                            ("major_fraction", major_fraction, 1.0)):
        if not 0 < value < hi:
            raise ValueError(f"{name}={value} must be between 0 and {hi}")
    if not (z_threshold > 0 and min_relative_change >= 0):
        raise ValueError("z_threshold must be > 0 and min_relative_change >= 0")
    xy = table.xy
    if image_shape is None:
        image_shape = (int(np.ceil(xy[:, 1].max())) + 1, int(np.ceil(xy[:, 0].max())) + 1)
    shape = (int(image_shape[0]), int(image_shape[1]))
    if table.class_names:
        labels, names = table.label, table.class_names
    else:
        from .classify import classify_columns

        c = classify_columns(table)
        labels, names = c.label, c.class_names

    nn = float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1]))
    r_match = match_radius * nn
    margin = border * nn
    # the lattice that leaves the fewest sites empty (a class split by noise leaves many); on a
    # tie the one with classes, whose basis sites each hold one kind of column
    lattices, major = _candidate_lattices(xy, labels, names, major_fraction, shape, table.pixel_size_nm)
    matched = [_match_sites(lat, xy, major, shape, r_match, margin, nn) for lat in lattices]
    best = min(range(len(lattices)), key=lambda i: (int(matched[i][2].sum()), -i))
    lattice = lattices[best]
    sites_xy, sites_b, empty, col_site = matched[best]

    # substitutions: robust z-score of the intensity per basis site
    col_inside = _inside(xy, shape, margin)
    n_sites = len(lattice.basis_frac)
    z = np.zeros(n)
    change = np.zeros(n)
    site_med = np.full(n_sites, np.nan)
    for b in range(n_sites):
        sel = (col_site == b) & col_inside
        if sel.sum() < 3:
            continue
        v = table.intensity[sel]
        med = float(np.median(v))
        mad = 1.4826 * float(np.median(np.abs(v - med)))
        scale = max(mad, 1e-6 * abs(med), 1e-300)
        site_med[b] = med
        z[sel] = (v - med) / scale
        change[sel] = v / med - 1.0 if med != 0 else 0.0
    outlier = (np.abs(z) >= z_threshold) & (np.abs(change) >= min_relative_change)
    # a 'column' much dimmer than its site is an empty site whose neighbours' tails the finder took
    # for a column (graphene, MX2 monolayers): a vacancy, not a substitution
    hollow = outlier & (change < empty_below - 1.0)
    sub_idx = np.flatnonzero(outlier & ~hollow)
    vac_xy = np.concatenate([sites_xy[empty], xy[hollow]])
    vac_site = np.concatenate([sites_b[empty], col_site[hollow]])
    labels_out = np.asarray(lattice.basis_labels)
    return Defects(
        vacancy_xy=vac_xy, vacancy_site=vac_site, substitution_index=sub_idx,
        substitution_z=z[sub_idx], substitution_change=change[sub_idx],
        off_lattice_index=np.flatnonzero((col_site < 0) & _inside(xy, shape, max(margin, nn))), site=col_site,
        site_labels=labels_out, site_intensity=site_med, xy=xy.copy(), lattice=lattice,
        pixel_size_nm=table.pixel_size_nm,
    )
