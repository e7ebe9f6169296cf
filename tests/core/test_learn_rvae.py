"""rVAE: the latent angle follows the true rotation of rotated patches; save / load; bad input."""

import numpy as np
import pytest
from scipy.ndimage import rotate

from atomsmith.learn import RotationalVAE


def _rotated(n_patches=800, n=16, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2

    def blob(x0, y0, s, a):
        return a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s))

    base = blob(0, 0, 1.5, 1.0) + blob(4.5, 0, 1.2, 0.6) + blob(0, 3.5, 1.0, 0.35)  # no symmetry
    ang = rng.uniform(-np.pi, np.pi, n_patches)
    patches = np.stack([rotate(base, np.degrees(a), reshape=False, order=1) for a in ang])
    return patches + rng.normal(0, 0.02, patches.shape), ang


@pytest.mark.slow
def test_latent_angle_follows_the_rotation(tmp_path):
    patches, ang = _rotated()
    m = RotationalVAE(16, 1, seed=0).fit(patches, epochs=10, n_init=1, progress=False)
    est = m.transform(patches)[:, 0]
    # circular correlation up to the sense of rotation (image rows point down) and an offset
    r = max(abs(np.mean(np.exp(1j * (est - s * ang)))) for s in (1, -1))
    assert r >= 0.95, r
    assert m.history[-1] < 0.5 * m.history[0]
    back = RotationalVAE.load(m.save(tmp_path / "rvae.pt"))
    np.testing.assert_allclose(back.transform(patches[:20]), m.transform(patches[:20]), atol=1e-5)
    assert m.decode(m.transform(patches[:3])).shape == (3, 16, 16)


def test_bad_input():
    m = RotationalVAE(8, 1)
    with pytest.raises(ValueError, match=r"\(N, 8, 8\)"):
        m.fit(np.zeros((4, 9, 9)), epochs=1, progress=False)
    bad = np.ones((4, 8, 8))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.fit(bad, epochs=1, progress=False)
