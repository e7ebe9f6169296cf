"""Blending refined positions with the network's: noise estimate and accuracy on the twin."""

import numpy as np

import atomsmith.simulate as sim
from atomsmith.atoms import find_atoms
from atomsmith.atoms.metrics import match_positions
from atomsmith.atoms.shrinkage import split_com_variance_px2


def _com(img, xy, r):
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    out = []
    for x, y in xy:
        m = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        v = img[m] - img[m].min()
        out.append([np.sum(v * xx[m]) / v.sum(), np.sum(v * yy[m]) / v.sum()])
    return np.array(out)


def test_split_variance_matches_repeated_noise():
    # 49 Gaussian peaks on a grid, Poisson noise: the checkerboard estimate of one frame must
    # match the centre-of-mass variance over 40 noise realisations
    rng = np.random.default_rng(0)
    g = np.arange(7) * 12.0 + 8.3
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.uniform(-0.5, 0.5, (49, 2))
    yy, xx = np.mgrid[:92, :92]
    lam = 0.5 + sum(30 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.8**2)) for x, y in xy)
    coms = np.array([_com(rng.poisson(lam).astype(float), xy, 5.0) for _ in range(40)])
    true_var = coms.var(axis=0).mean()  # per axis, averaged over columns
    est = split_com_variance_px2(rng.poisson(lam).astype(float), xy, 5.0).mean()
    assert 0.7 < est / true_var < 1.4


def _rms(table, truth, nn_px, shape):
    return match_positions(table.xy, truth.xy, 0.35 * nn_px, border_px=0.5 * nn_px, shape_px=shape).rms_error_px


def test_blend_helps_at_low_counts_and_keeps_heavy_columns():
    g = sim.build_crystal("graphene", (192 * 0.14, 192 * 0.14), rotation_deg=11, shift_A=(0.23, 0.61))
    img = sim.render_haadf(g, (192, 192), 0.014, dose_e_per_A2=2e4, seed=3)
    t = img.truth.select(img.truth.occupied)
    plain = _rms(find_atoms(img.image, blend=False), t, 10.1, (192, 192))
    blended = find_atoms(img.image)
    assert _rms(blended, t, 10.1, (192, 192)) < 0.8 * plain
    assert blended.metadata["blend_weight_median"] < 0.8
    # PbTiO3 with a 25 pm polar displacement: the weight stays ~1, the displacement is kept
    kw = dict(rotation_deg=0, shift_A=(0.31, 0.17), thickness_nm=4)
    s = sim.build_crystal("PbTiO3", (128 * 0.2, 128 * 0.2), polarization_pm=(0.0, 25.0), **kw)
    ref = sim.render_haadf(sim.build_crystal("PbTiO3", (128 * 0.2, 128 * 0.2), **kw), (128, 128), 0.02).truth
    img = sim.render_haadf(s, (128, 128), 0.02, dose_e_per_A2=2e5, seed=2)
    tab = find_atoms(img.image)
    assert tab.metadata["blend_weight_median"] > 0.9
    ti = np.array([sp.startswith("Ti") for sp in img.truth.species])
    m = match_positions(tab.xy, img.truth.xy[ti], 3.0, border_px=5, shape_px=(128, 128))
    dy_pm = (tab.xy[m.pairs[:, 0], 1] - ref.xy[ti][m.pairs[:, 1], 1]).mean() * 20
    assert abs(dy_pm - 25.0) < 1.5
