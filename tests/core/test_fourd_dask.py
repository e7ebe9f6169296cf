"""atomsmith.fourd reductions on Dask (a distributed cluster and the threaded scheduler) and the
in-memory fast paths (threads, dtype conversion, threshold, NaN checks) against a float64
reference written out here."""

import dask
import numpy as np
import pytest

from atomsmith.fourd import center_of_mass, virtual_image
from atomsmith.fourd import com as com_module

da = pytest.importorskip("dask.array")


def _reference_com(data, center, mask=None, threshold=None):
    """(..., 2) (x, y) centre of mass minus ``center`` (qy, qx), in float64, pattern by pattern."""
    d = np.asarray(data, np.float64)
    if threshold is not None:
        d = np.where(d >= threshold * d.max(axis=(-2, -1), keepdims=True), d, 0.0)
    if mask is not None:
        d = d * mask
    yy, xx = np.mgrid[: d.shape[-2], : d.shape[-1]]
    s = d.sum(axis=(-2, -1))
    return np.stack(
        [
            (d * (xx - center[1])).sum(axis=(-2, -1)) / s,
            (d * (yy - center[0])).sum(axis=(-2, -1)) / s,
        ],
        axis=-1,
    )


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:24, :20]
    shift = rng.uniform(-2, 2, (6, 7, 2))
    disc = (xx - 10 - shift[..., 0, None, None]) ** 2 + (
        yy - 12 - shift[..., 1, None, None]
    ) ** 2 < 36
    return rng.poisson(30.0 * disc + 0.5).astype(np.uint16)  # (6, 7, 24, 20) detector counts


def test_distributed_cluster_gives_the_numpy_numbers(counts):
    distributed = pytest.importorskip("distributed")
    lazy = da.from_array(counts.astype(np.float32), chunks=(2, 3, 12, 20))  # detector split too
    center = (11.5, 10.0)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        com = center_of_mass(lazy, center_px=center, mask=(10, 12, 8))
        assert isinstance(com, da.Array)
        got = com.compute()
        bf = virtual_image(lazy, outer=8.0, center_px=center).compute()
    mask = com_module.detector_mask((24, 20), (10, 12, 8))
    np.testing.assert_allclose(got, _reference_com(counts, center, mask), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        got, center_of_mass(counts, center_px=center, mask=(10, 12, 8)), rtol=1e-6, atol=1e-9
    )
    yy, xx = np.mgrid[:24, :20]
    inside = np.hypot(xx - 10.0, yy - 11.5) < 8.0
    np.testing.assert_array_equal(bf, (counts * inside).sum(axis=(-2, -1)))


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_every_path_matches_the_float64_reference(counts, dtype, threshold, monkeypatch):
    data = counts.astype(dtype)
    ref = _reference_com(counts, (12, 10), threshold=threshold)
    assert np.isfinite(ref).all()
    # default blocks, then tiny blocks and work units so that several threads share the work
    for block, task in [(None, None), (2 * 480 * 8, 5 * 480 * 8)]:
        if block is not None:
            monkeypatch.setattr(com_module, "_BLOCK_BYTES", block)
            monkeypatch.setattr(com_module, "_TASK_BYTES", task)
        for threads in (1, 3):
            got = com_module._weighted_sums_np(
                data,
                np.stack(
                    [
                        np.ones(480),
                        np.tile(np.arange(20) - 10.0, 24),
                        np.repeat(np.arange(24) - 12.0, 20),
                    ],
                    -1,
                ),
                threshold,
                threads=threads,
            )
            np.testing.assert_allclose(got[..., 1:] / got[..., :1], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            center_of_mass(data, threshold=threshold), ref, rtol=1e-5, atol=1e-6
        )
    lazy = da.from_array(data, chunks=(4, 5, 24, 20))
    with dask.config.set(scheduler="threads"):
        np.testing.assert_allclose(
            center_of_mass(lazy, threshold=threshold).compute(), ref, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_nan_and_inf_are_caught_on_every_path(counts, bad, threshold):
    for dtype in (np.float32, np.float64):
        data = counts.astype(dtype)
        data[3, 4, 12, 10] = bad  # inside the disc
        with pytest.raises(ValueError, match="NaN or inf"):
            center_of_mass(data, threshold=threshold)
        with pytest.raises(ValueError, match="NaN or inf"):
            center_of_mass(da.from_array(data, chunks=(2, 7, 24, 20)), threshold=threshold).compute(
                scheduler="threads"
            )
        with pytest.raises(ValueError, match="NaN or inf"):
            virtual_image(data, outer=5.0)


def test_blas_threads_are_restored_and_float32_overflow_is_not_an_error(counts):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [
            i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
        ]

    before = blas_threads()
    center_of_mass(counts)
    assert blas_threads() == before
    huge = np.full((2, 2, 8, 8), 3e38, np.float32)  # finite data whose float32 sums overflow
    with np.errstate(all="ignore"):
        assert not np.isfinite(center_of_mass(huge)).all()  # as before: no error, non-finite
    assert blas_threads() == before
