"""AtomFinder: the U-Net column finder, generic out of the box or trained from one frame."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from .checks import as_image
from .heatmap import heatmap_to_xy
from .quality import (
    MIN_AGREEMENT,
    MIN_NEIGHBOUR_FRACTION,
    SPACING_RANGE,
    assess,
    filter_columns,
    frame_memo,
    memoised,
    nearest_distance,
    neighbour_fraction,
    noise_sigma,
    poisson_significant,
    sparse_counts,
)
from .scale import (
    TARGET_NN_PX,
    ModelScale,
    check_period,
    choose_scale,
    period_near_columns,
    resample,
)
from .sublattice import fill_vacant_sites, find_missed_sublattice, weak_off_lattice
from .table import AtomTable
from .training import d4, default_device, train_unet
from .training_data import MODEL_PERIOD_PX, column_mask, normalize_image
from .unet import UNet, seeded_unet

_TILE_PX = 768
_OVERLAP_PX = 48
#: median column significance (noise sigmas) above which the twin-trained companion's result is
#: kept without asking the generic network (clear columns; below it, near the detection limit,
#: the two are compared: twin graphene and hBN at <= 1e5 e/A^2, any lattice at a low dose)
_Z_CONFIDENT = 10.0
#: side (model px) of the central square on which the companion is tried first on a large frame
_TEST_PX = 192


class AtomFinder:
    """Find atomic columns with a U-Net (scikit-learn shape: ``fit``, ``predict``, ``save``, ``load``).

    Args:
        model: the network (default: a fresh ``UNet(base=8, depth=3)``, weights drawn with seed 0).
        threshold: probability above which a pixel belongs to a column.
        refine: sub-pixel refinement on the original image: ``"com"``, ``"gaussian"`` or ``None``.
        device: torch device (default: CUDA when present, else CPU).

    Example:
        >>> finder = AtomFinder.generic()                       # doctest: +SKIP
        >>> table = finder.predict(image)                        # doctest: +SKIP
    """

    def __init__(self, model: UNet | None = None, *, threshold: float = 0.5, refine: str | None = "com",
                 device: str | torch.device | None = None) -> None:
        self.model = model if model is not None else seeded_unet(0, base=8, depth=3)
        self.model.eval()
        if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.integer | np.floating) \
                or not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold={threshold!r} must be a probability strictly between 0 and 1")
        if refine not in (None, "com", "gaussian"):
            raise ValueError(f"refine={refine!r}: use 'com', 'gaussian' or None")
        self.threshold = float(threshold)
        self.refine = refine
        self.device = torch.device(device) if device is not None else default_device()
        self.model.to(self.device)
        self._version = 0  # bumped by fit(): the fused inference copy is rebuilt
        #: a network tried first by :meth:`predict` (the generic finder's twin-trained one); its
        #: result is kept when it passes its checks without rejecting many detections
        self.companion: AtomFinder | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def generic(cls, **kwargs) -> AtomFinder:
        """The finder shipped with atomsmith, trained on the twin (see :mod:`.generic`)."""
        from .generic import GENERIC_WEIGHTS, TWIN_WEIGHTS

        if not GENERIC_WEIGHTS.exists():
            raise FileNotFoundError(
                f"the generic weights {GENERIC_WEIGHTS} are missing; run `atomsmith train-generic`")
        finder = cls.load(GENERIC_WEIGHTS, **kwargs)
        if TWIN_WEIGHTS.exists():
            finder.companion = cls.load(TWIN_WEIGHTS, **{k: v for k, v in kwargs.items() if k != "threshold"})
        return finder

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> AtomFinder:
        """Load weights saved by :meth:`save` (``torch.load(weights_only=True)``)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no model file {path}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = UNet(**ckpt["arch"])
        model.load_state_dict(ckpt["state_dict"])
        kwargs.setdefault("threshold", float(ckpt.get("threshold", 0.5)))
        return cls(model, **kwargs)

    def save(self, path: str | Path) -> Path:
        """Save architecture, weights and threshold (weights only, no pickled code)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"arch": {"base": self.model.base, "depth": self.model.depth},
                    "state_dict": {k: v.cpu() for k, v in self.model.state_dict().items()},
                    "threshold": self.threshold}, path)
        return path

    # ------------------------------------------------------------------ inference
    def predict_probability(self, image: np.ndarray, *, period_px: float | None = None,
                            scale: ModelScale | None = None) -> tuple[np.ndarray, ModelScale]:
        """Column probability at model scale, and the scale used (``scale``: one already chosen)."""
        img = as_image(image)
        if scale is None:
            scale = choose_scale(img, period_px)
        return self._forward_tiled(_model_input(img, scale.factor)), scale

    def _inference_model(self) -> UNet:
        """The model with BatchNorm folded into the convolutions (rebuilt after training)."""
        from .unet import fuse_batchnorm

        key = id(self.model), self._version
        if getattr(self, "_fused_key", None) != key:
            # channels-last: the CPU convolutions run ~2x faster on this layout (512^2: 44 vs 90 ms
            # on 2 cores), to the same values within 1e-5
            self._fused = fuse_batchnorm(self.model).to(self.device).to(memory_format=torch.channels_last)
            self._fused_key = key
        return self._fused

    def _forward_tiled(self, x: np.ndarray) -> np.ndarray:
        model = self._inference_model()
        h, w = x.shape
        out = np.zeros((h, w), dtype=np.float32)
        step = _TILE_PX - 2 * _OVERLAP_PX
        with torch.inference_mode():
            for r0 in range(0, h, step):
                for c0 in range(0, w, step):
                    ra, ca = max(r0 - _OVERLAP_PX, 0), max(c0 - _OVERLAP_PX, 0)
                    rb, cb = min(r0 + step + _OVERLAP_PX, h), min(c0 + step + _OVERLAP_PX, w)
                    t = torch.from_numpy(np.ascontiguousarray(x[ra:rb, ca:cb]))[None, None].to(self.device)
                    t = t.contiguous(memory_format=torch.channels_last)
                    p = torch.sigmoid(model(t))[0, 0].cpu().numpy()
                    out[r0:min(r0 + step, h), c0:min(c0 + step, w)] = \
                        p[r0 - ra:r0 - ra + min(step, h - r0), c0 - ca:c0 - ca + min(step, w - c0)]
        return out

    def predict(self, image: np.ndarray, *, pixel_size_nm: float | None = None, period_px: float | None = None,
                refine: str | None | bool = True, blend: bool = True) -> AtomTable:
        """Find the columns of one image.

        Args:
            image: (H, W) image (any dtype, any intensity scale).
            pixel_size_nm: calibration stored in the result.
            period_px: dominant lattice period if known (default: measured from the image).
            refine: ``True`` uses the finder's setting; ``"com"``, ``"gaussian"`` or ``None``.
            blend: blend the refined positions with the network's by their noise measured on the
                image (:func:`~atomsmith.atoms.shrinkage.blend_with_network`): better at low counts,
                the same at high counts. ``False`` keeps the refined positions as they are.

        Returns:
            :class:`AtomTable` with positions in pixels of ``image``.
        """
        img = as_image(image)
        period_px = check_period(period_px, img.shape)
        with frame_memo():  # smoothings, noise and neighbour statistics computed once per call
            scale = choose_scale(img, period_px)  # measured once, for both networks
            method = self.refine if refine is True else (refine or None)
            sigma = noise_sigma(img)
            given = period_px is not None
            comp = self.companion
            first = None
            if comp is not None and _twin_lattice(img, scale) and comp._may_suit(img, scale, sigma):
                # the twin-trained companion first: on the twin's kind of image (its materials,
                # down to the lowest doses) it is the more complete. Its result is kept at once
                # when it passes its checks with clear columns; where it rejects a fifth of its
                # detections (it painted its materials' lattice into the empty cells of another)
                # this network takes over
                first = comp._detect(img, scale, given, sigma, max_rejected=0.2)
                if first is not None and first[3].ok and len(first[0]) and first[3].significance >= _Z_CONFIDENT:
                    return _as_twin(comp._finish(img, *first, method, pixel_size_nm, blend))
            found = self._detect(img, scale, given, sigma)
            if first is not None and len(first[0]):
                if not found[3].ok or len(found[0]) < 10:
                    if first[3].ok or not len(found[0]):
                        # (where this network found nothing, the companion's lattice is returned
                        # even when a classical finder cannot confirm it: with the warning)
                        return _as_twin(comp._finish(img, *first, method, pixel_size_nm, blend))
                elif first[3].ok:
                    # both passed, near the detection limit: the companion's result where its
                    # extra columns sit on sites of this network's lattice (faint columns this
                    # network left out), else this one's with those vacancies filled
                    if _fills_sites(found, first):
                        return _as_twin(comp._finish(img, *first, method, pixel_size_nm, blend))
                    found = _fill_vacancies(img, found, first, sigma)
            return self._finish(img, *found, method, pixel_size_nm, blend)

    def _may_suit(self, img: np.ndarray, scale: ModelScale, sigma: float) -> bool:
        """A quick test on the central 192^2 (model scale) of a large frame: False when more than
        a fifth of this network's detections there are rejected (see :meth:`predict`), which
        spares the full pass on a lattice it does not know. Small frames: True."""
        x = _model_input(img, scale.factor)
        h, w = x.shape
        if min(h, w) < 384:
            return True
        r0, c0 = (h - _TEST_PX) // 2, (w - _TEST_PX) // 2
        prob = self._forward_tiled(np.ascontiguousarray(x[r0:r0 + _TEST_PX, c0:c0 + _TEST_PX]))
        xy, _ = heatmap_to_xy(prob, self.threshold)
        if len(xy) < 20:
            return True
        xy = (xy + [c0, r0]) / scale.factor
        keep, _, _ = filter_columns(img, xy, period_px=scale.period_px, sigma=sigma)
        return bool(np.mean(~keep) <= 0.2)

    def _detect(self, img: np.ndarray, scale: ModelScale, given: bool, sigma: float,
                max_rejected: float | None = None):
        """Detections that pass the significance filter, with their report.

        Returns (xy, conf, meta, quality), or None when more than ``max_rejected`` of the
        detections were rejected (the caller then tries another network; no report is made).
        """
        prob, scale = self.predict_probability(img, scale=scale)
        xy, conf = heatmap_to_xy(prob, self.threshold)
        xy = xy / scale.factor
        how = scale.method
        xy, conf, scale, how = self._rescale_if_inconsistent(img, xy, conf, scale, how, given)
        # columns must stand above the noise and above their surroundings (an empty cell centre,
        # a noise bump or a contamination ripple does not)
        n_det = len(xy)
        contrast, notes = None, ()
        if (len(xy) and how in ("columns", "none") and sparse_counts(img)
                and not neighbour_fraction(xy, img.shape, nearest_distance(xy)) >= MIN_NEIGHBOUR_FRACTION):
            # no lattice behind the detections (no period, no regular neighbourhood), on sparse
            # counts: each must hold more electrons than the background explains (single
            # electrons pass a Gaussian z, and hundreds of them would drown the real isolated
            # atoms in the filter's statistics). A small frame of a lattice, whose period the
            # spectrum cannot give, keeps its columns of a few counts: the network sees them by
            # their neighbourhood
            held = poisson_significant(img, xy, nearest_distance(xy))
            xy, conf = xy[held], conf[held]
        if len(xy) > 1:
            measured = scale.period_px if how != "none" else float("nan")
            keep, contrast, notes = filter_columns(img, xy, period_px=measured, sigma=sigma,
                                                   regular=0.75 if how == "columns" else 0.6)
            # (a period from the columns alone: a stricter regularity)
            xy, conf, contrast = xy[keep], conf[keep], contrast[keep]
        n_rejected = n_det - len(xy)
        if max_rejected is not None and n_rejected > max_rejected * max(n_det, 1):
            return None
        meta = {"finder": "unet", "scale": scale.to_dict(), "threshold": self.threshold,
                # (how to assess the result again after the lattice passes in _finish)
                "_assess": {"period_px": scale.period_px, "period_method": how, "n_rejected": n_rejected,
                            "notes": notes}}
        quality = assess(img, xy, period_px=scale.period_px, period_method=how, n_rejected=n_rejected,
                         contrast=contrast, sigma=sigma, notes=notes)
        unconfirmed = not quality.agreement >= MIN_AGREEMENT
        irregular = not quality.neighbour_fraction >= 0.7
        if len(xy) and not quality.ok and (how == "none" or (unconfirmed and (
                how == "columns" or len(xy) < 20 or irregular))):
            # no lattice (no period, or only the spacing of "columns" a classical finder does not
            # confirm), or "columns" that a classical finder does not confirm and that are few or
            # do not form a regular lattice (the bumps of a smooth background): nothing
            # trustworthy to return
            quality = assess(img, xy[:0], period_px=scale.period_px, period_method=how,
                             n_rejected=n_det, sigma=sigma, agreement=False)
            xy, conf = xy[:0], conf[:0]
        return xy, conf, meta, quality

    def _finish(self, img: np.ndarray, xy: np.ndarray, conf: np.ndarray, meta: dict, quality, method: str | None,
                pixel_size_nm: float | None, blend: bool) -> AtomTable:
        """The lattice passes on the chosen detections (:func:`_lattice_passes`, once per call,
        not for every network tried), then refine them on the original image and build the table."""
        meta = {**meta, "refine": method}
        again = meta.pop("_assess", None)
        if again is not None and len(xy) >= 20:
            sigma = noise_sigma(img)
            xy, conf, changed, notes = _lattice_passes(img, xy, conf, sigma, meta)
            if changed or notes:
                quality = assess(img, xy, sigma=sigma, **{**again, "notes": tuple(again["notes"]) + notes})
        if len(xy) == 0:
            return AtomTable.empty(pixel_size_nm, **meta).replace(quality=quality)
        if method:
            table = _refine(img, xy, method, meta["scale"]["period_px"], pixel_size_nm, blend)
            return table.replace(confidence=np.minimum(conf, table.confidence),
                                 metadata={**table.metadata, **meta}, quality=quality)
        vals = img[np.clip(np.round(xy[:, 1]).astype(int), 0, img.shape[0] - 1),
                   np.clip(np.round(xy[:, 0]).astype(int), 0, img.shape[1] - 1)]
        return AtomTable(xy, vals, np.zeros(len(xy), int), conf, pixel_size_nm=pixel_size_nm, metadata=meta,
                         quality=quality)

    def _rescale_if_inconsistent(self, img, xy, conf, scale: ModelScale, how: str, given: bool):
        """A second pass when the first pass's columns say the scale was wrong.

        The network is trained for columns 4-20 px apart at model scale. When the columns found
        at the measured period lie outside 5-16 px there (or no period was measured), the image
        is brought to the scale where they would be 9 px apart and searched again; the second
        pass is kept when its columns confirm that scale.
        """
        if given or len(xy) < 6:
            return xy, conf, scale, how
        nn = nearest_distance(xy)
        nn_model = nn * scale.factor
        if how != "none" and 5.0 <= nn_model <= 16.0:
            return xy, conf, scale, how
        factor = TARGET_NN_PX / nn
        if not 0.05 <= factor <= 4.0:
            return xy, conf, scale, how
        scale2 = ModelScale(float(factor), scale.period_px if how != "none" else float(MODEL_PERIOD_PX / factor),
                            "fft+columns" if how.startswith("fft") else "columns", scale.columns_nn_px)
        prob2 = self._forward_tiled(_model_input(img, scale2.factor))
        xy2, conf2 = heatmap_to_xy(prob2, self.threshold)
        xy2 = xy2 / scale2.factor
        if len(xy2) < 6:
            return xy, conf, scale, how
        nn2 = nearest_distance(xy2) * scale2.factor
        if 5.0 <= nn2 <= 16.0:
            if how.startswith("fft") and not SPACING_RANGE[0] <= nn2 / scale2.factor / scale2.period_px <= SPACING_RANGE[1]:
                # the spectrum's period was not the lattice's (a sparse frame's low-frequency
                # noise): the period is sought again among those the columns allow, else none
                scale2 = _period_near_columns(img, scale2, nn2 / scale2.factor)
            return xy2, conf2, scale2, scale2.method
        return xy, conf, scale, how

    # ------------------------------------------------------------------ training
    def fit(self, images: Sequence[np.ndarray], targets: Sequence[np.ndarray], *, steps: int = 600,
            batch_size: int = 8, crop_px: int = 128, learning_rate: float = 1e-3, seed: int = 0,
            progress: bool = True, should_stop: Callable[[], bool] | None = None) -> AtomFinder:
        """Train (or fine-tune) on images with known column positions.

        Args:
            images: list of (H, W) images.
            targets: list of (N_i, 2) column positions (x, y) in pixels, one array per image.
            steps, batch_size, crop_px, learning_rate, seed: training settings.
            progress: progress bar; should_stop: return True to cancel.

        Every batch draws random crops with the eight square symmetries, a random zoom
        (+-15 %), blur, scan-line jitter, Poisson-like noise, contrast and offset.
        """
        if len(images) == 0 or len(images) != len(targets):
            raise ValueError(f"need one target array per image; got {len(images)} images, {len(targets)} targets")
        from .refine import estimate_spacing_px

        prepared = []
        for img, xy in zip(images, targets, strict=True):
            im = as_image(img)
            xy = np.asarray(xy, float).reshape(-1, 2)
            scale = choose_scale(im)
            x = resample(im, scale.factor)
            pts = xy * scale.factor
            nn = estimate_spacing_px(pts) if len(pts) > 1 else 8.0
            prepared.append((x, pts, max(1.2, 0.2 * nn)))
        make_batch = _augmenting_batches(prepared, batch_size, crop_px)
        train_unet(self.model, make_batch, steps=steps, learning_rate=learning_rate, seed=seed,
                   device=self.device, progress=progress, should_stop=should_stop,
                   description="training on labelled frames")
        self._version += 1
        self.companion = None  # trained for these frames: the generic finder's companion no longer applies
        return self

    @classmethod
    def from_single_frame(cls, frame: np.ndarray, xy: np.ndarray | None = None, *, steps: int = 400,
                          start_from_generic: bool = True, seed: int = 0, progress: bool = True,
                          should_stop: Callable[[], bool] | None = None, **kwargs) -> AtomFinder:
        """The seed workflow: label one frame (or take ``xy``), augment it, train, return the finder.

        Without ``xy`` the frame is labelled by the generic finder (or the classical finder if
        no generic weights are installed). Training starts from the generic weights unless
        ``start_from_generic=False``; then from a fresh network whose weights ``seed`` draws, so
        that the result depends on ``seed`` (and on torch's thread count, in the last bits of the
        arithmetic), never on what ran before.
        """
        img = as_image(frame)
        finder = None
        if start_from_generic:
            try:
                finder = cls.generic(**kwargs)
            except FileNotFoundError:
                finder = None
        if xy is None:
            if finder is not None:
                xy = finder.predict(img).xy
            else:
                from .classical import find_peaks_classical

                xy, _ = find_peaks_classical(img)
        if finder is None:  # a fresh network, its initial weights drawn from ``seed``
            finder = cls(seeded_unet(seed, base=8, depth=3), **kwargs)
        return finder.fit([img], [xy], steps=steps, seed=seed, progress=progress, should_stop=should_stop)


def _lattice_passes(img: np.ndarray, xy: np.ndarray, conf: np.ndarray, sigma: float, meta: dict):
    """The lattice's own checks of a network's detections (:mod:`.sublattice`), with one lattice
    fit for all three: faint detections between the sites dropped, a sublattice of shoulder
    columns the network left out added, a sublattice it reported in part completed. Returns
    (xy, conf, changed, notes); what acted is recorded in ``meta``, what the passes doubt in
    ``notes`` (for the quality report)."""
    fit_on = xy
    changed = False
    intruders = weak_off_lattice(img, xy, sigma=sigma, lattice_xy=fit_on)
    if intruders.any():
        # faint detections between the sites of a lattice: no lattice context vouches for them
        xy, conf, changed = xy[~intruders], conf[~intruders], True
        meta["off_lattice_dropped"] = int(intruders.sum())
    missed = find_missed_sublattice(img, xy, sigma=sigma, lattice_xy=fit_on)
    notes: tuple[str, ...] = ()
    if missed is not None and not missed.accepted:
        # significant, but too faint to tell columns from the probe's tails at this dose
        meta["doubtful_sublattice"] = {"n": len(missed.xy), "significance": missed.significance,
                                       "relative": missed.relative}
        notes = (f"a sublattice of {len(missed.xy)} sites between the columns stands "
                 f"{missed.significance:.0f} sigma above the noise at {missed.relative:.0%} of the "
                 f"columns' contrast, too faint to tell columns (e.g. perovskite [110] B sites) from "
                 f"the probe's tails at this dose; it was not added",)
        missed = None
    if missed is not None:
        # a sublattice of shoulder columns the network left out (wide columns of half the
        # brightness on a bright column's flank): added at its sites, refined later
        xy, conf, changed = *_with_added(xy, conf, missed.xy), True
        meta["missed_sublattice"] = {"n": len(missed.xy), "significance": missed.significance,
                                     "occupancy_z": missed.occupancy_z}
    filled = fill_vacant_sites(img, xy, sigma=sigma, lattice_xy=fit_on)
    if len(filled):
        # columns of a sublattice the network reported only in part
        xy, conf, changed = *_with_added(xy, conf, filled), True
        meta["filled_sites"] = len(filled)
    if missed is None and "doubtful_sublattice" not in meta:
        notes = notes + _unexplained_cell_intensity(img, xy, sigma, meta, fit_on)
    return xy, conf, changed, notes


#: a residual of the lattice-averaged cell this many noise sigmas high, and this fraction of a
#: column's height, is reported. Measured: the stress grid's passing images <= 4.1 sigma; the
#: probe's tails in the empty hexagon centres of twin graphene and hBN 3-5 % (up to 19 sigma at
#: 1e6 e/A^2); a hidden shoulder sublattice (stress perovskite [110], the B column at 0.4,
#: sigma 0.35 nn, low dose) 10-16 sigma and 11-14 %. (At 0.3 and a high dose it reads 7 %,
#: which this does not report)
Z_MOTIF, MIN_MOTIF_RELATIVE = 8.0, 0.09
#: see :func:`_unexplained_cell_intensity`
_WIDE_LOG_RATIO = 1.75


def _unexplained_cell_intensity(img: np.ndarray, xy: np.ndarray, sigma: float, meta: dict,
                                lattice_xy: np.ndarray | None = None) -> tuple[str, ...]:
    """A note (for the quality report) where the lattice-averaged cell holds intensity that no
    found column explains (:func:`~atomsmith.atoms.motif.unexplained_motif`): a sublattice of
    shoulder columns may be missing. Only for wide columns, where a column can hide as a
    shoulder (a sharp one makes its own maximum): the found columns' Laplacian at 0.25 nn
    reaches ``_WIDE_LOG_RATIO`` times that at 0.1 nn (the vacancy pass's views, already
    computed). For a Gaussian column of width s the ratio is ~0.9 at s = 0.15 nn, 1.7 at 0.22
    and 2.7 at 0.3; measured: twin MoS2 1.56, stress perovskite [110] at width 0.2 1.5-1.7 and
    at 0.35 1.8-2.0. (A cost gate: the cell average costs ~20 ms a frame.)"""
    from .motif import unexplained_motif
    from .sublattice import _log_view

    narrow, wide = _log_view(img, xy, sigma, 0.1), _log_view(img, xy, sigma, 0.25)
    if narrow is None or wide is None or not wide.ref * wide.noise >= _WIDE_LOG_RATIO * narrow.ref * narrow.noise:
        return ()
    m = unexplained_motif(img, xy, lattice_xy)
    if m is None or not (m.z >= Z_MOTIF and m.relative >= MIN_MOTIF_RELATIVE):
        return ()
    meta["unexplained_cell_intensity"] = {"offset": list(m.offset), "z": m.z, "relative": m.relative}
    return (f"the lattice-averaged cell holds intensity ({m.relative:.0%} of a column's height, "
            f"{m.z:.0f} sigma) at cell offset ({m.offset[0]:.2f}, {m.offset[1]:.2f}) that no found "
            f"column explains: a sublattice of faint columns hidden on the bright ones' flanks may "
            f"be missing (e.g. perovskite [110] B sites)",)


def _with_added(xy: np.ndarray, conf: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns the lattice passes add (no network confidence of their own: 0.5)."""
    return np.vstack([xy, new]), np.concatenate([conf, np.full(len(new), 0.5, conf.dtype)])


def _period_near_columns(img: np.ndarray, scale: ModelScale, nn_px: float) -> ModelScale:
    """``scale`` with its period re-measured among those the columns allow (``"fft+columns"``),
    or, where no period stands out there, the columns' own scale (``"columns"``)."""
    period = period_near_columns(img, nn_px)
    if np.isfinite(period):
        return ModelScale(scale.factor, float(period), "fft+columns", scale.columns_nn_px)
    return ModelScale(scale.factor, float(MODEL_PERIOD_PX / scale.factor), "columns", scale.columns_nn_px)


def _twin_lattice(img: np.ndarray, scale: ModelScale) -> bool:
    """Whether the spectrum at the lattice period is hexagonal or square (the twin's lattices),
    or no period was measured.

    The twin-trained companion knows the twin's 2D materials (graphene, hBN, MX2: hexagonal
    spectra) and cubic perovskites along [001] (square); on rectangular, centred-rectangular
    (perovskite [110]), dumbbell or oblique lattices it paints or misses columns. One harmonic
    must dominate: the six- or fourfold part >= 0.6 with the others <= 0.35 (the stress
    lattices and twin images give >= 0.87 and <= 0.13).
    """
    from .spacing import angular_harmonics

    c2, c4, c6 = angular_harmonics(img, scale.period_px)
    if not np.isfinite(c6):
        return True
    return (c6 >= 0.6 and max(c2, c4) <= 0.35) or (c4 >= 0.6 and max(c2, c6) <= 0.35)


def _model_input(img: np.ndarray, factor: float) -> np.ndarray:
    """The image at model scale, normalised (memoised within one finding call: both networks
    and the companion's quick test read it)."""
    return memoised(img, ("model_input", float(factor)), lambda: normalize_image(resample(img, factor)))


def _as_twin(table: AtomTable) -> AtomTable:
    return table.replace(metadata={**table.metadata, "network": "twin"})


def _extra_on_sites(found: tuple, other_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``other_xy`` are new to ``found`` (no partner within 0.3 nn), and which of those
    sit on a site of the found lattice: no nearer than 0.8 nn to a found column and with no more
    neighbours within 1.35 nn than the usual count (a cell centre has more, or nearer, ones)."""
    xy, nn = found[0], found[3].nn_distance_px
    tree = cKDTree(xy)
    d, _ = tree.query(other_xy)
    new = d > 0.3 * nn
    if not new.any():
        return new, new
    usual = int(np.bincount(tree.query_ball_point(xy, 1.35 * nn, return_length=True) - 1).argmax())
    site = new & (d >= 0.8 * nn) & (tree.query_ball_point(other_xy, 1.35 * nn, return_length=True) <= usual)
    return new, site


def _fills_sites(found: tuple, other: tuple) -> bool:
    """Whether ``other``'s result is ``found``'s plus faint columns on its lattice's sites: at most
    15 % more columns, and at least 40 % of its new ones on sites (twin graphene and hBN at
    1e4-2e4 e/A^2: 53-76 %; a lattice the companion does not know: 0-17 %)."""
    if len(other[0]) > 1.15 * len(found[0]):
        return False
    new, site = _extra_on_sites(found, other[0])
    return not new.any() or site.sum() >= 0.4 * new.sum()


def _fill_vacancies(img: np.ndarray, found: tuple, other: tuple, sigma: float) -> tuple:
    """``found`` (xy, conf, meta, quality) plus the columns of ``other`` on its lattice's empty
    sites (:func:`_extra_on_sites`), when these are few (at most 15 % of the found ones; more is
    a painted sublattice)."""
    xy, conf, meta, quality = found
    _, site = _extra_on_sites(found, other[0])
    if not site.any() or site.sum() > 0.15 * len(xy):
        return found
    xy2 = np.vstack([xy, other[0][site]])
    conf2 = np.concatenate([conf, other[1][site]])
    q = assess(img, xy2, period_px=quality.period_px, period_method=quality.period_method,
               n_rejected=quality.n_rejected, sigma=sigma)
    return xy2, conf2, {**meta, "network": "generic+twin", "filled_by_twin": int(site.sum())}, q


def _refine(img: np.ndarray, xy: np.ndarray, method: str, period_px: float, pixel_size_nm: float | None,
            blend: bool = True):
    """Sub-pixel refinement of detections on the original image, blended with the network's positions.

    Non-negative images (counts or scattered fractions; Poisson weights are scale-free) are
    fitted with Poisson weights, images with an offset below zero uniformly. A Gaussian fit that
    moves a column by more than a quarter of the column spacing from its centre of mass keeps
    the centre of mass (``max_shift_px``).
    """
    from .refine import estimate_spacing_px, refine_positions

    spacing = estimate_spacing_px(xy) if len(xy) > 2 else (0.6 * period_px if np.isfinite(period_px) else 8.0)
    if method == "com":
        table = refine_positions(img, xy, method="com", spacing_px=spacing, pixel_size_nm=pixel_size_nm)
    else:
        table = refine_positions(img, xy, method=method, spacing_px=spacing, pixel_size_nm=pixel_size_nm,
                                 weights="poisson" if img.min() >= 0 else "uniform", max_shift_px=0.25 * spacing)
    if not blend:
        return table
    from .shrinkage import blend_with_network

    xy_b, weight = blend_with_network(img, xy, table.xy, table.intensity, 0.45 * spacing)
    return table.replace(xy=xy_b, metadata={**table.metadata, "blend_weight_median": float(np.median(weight))})


def _augmenting_batches(prepared, batch_size: int, crop_px: int):
    from scipy import ndimage

    def make_batch(rng: np.random.Generator):
        xs, ys = [], []
        for _ in range(batch_size):
            img, pts, radius = prepared[rng.integers(len(prepared))]
            zoom = float(np.exp(rng.uniform(-0.15, 0.15)))
            h, w = img.shape
            size = int(np.ceil(crop_px / zoom))
            size_r, size_c = min(size, h), min(size, w)
            r0 = int(rng.integers(0, h - size_r + 1))
            c0 = int(rng.integers(0, w - size_c + 1))
            # sample the crop at zoom (bilinear), with per-line jitter
            n_r, n_c = int(round(size_r * zoom)), int(round(size_c * zoom))
            rows = r0 + np.arange(n_r) / zoom
            jitter = rng.normal(0, rng.uniform(0, 0.4), n_r) if rng.random() < 0.5 else np.zeros(n_r)
            cols = c0 + np.arange(n_c)[None, :] / zoom + jitter[:, None]
            crop = ndimage.map_coordinates(img, [np.repeat(rows[:, None], n_c, 1), cols], order=1, mode="reflect")
            sel = ((pts[:, 0] >= c0 - 2) & (pts[:, 0] < c0 + size_c + 2) & (pts[:, 1] >= r0 - 2)
                   & (pts[:, 1] < r0 + size_r + 2))
            local = np.stack([(pts[sel, 0] - c0) * zoom, (pts[sel, 1] - r0) * zoom], 1)
            tgt = column_mask(local, crop.shape, radius * zoom)
            if rng.random() < 0.3:
                crop = ndimage.gaussian_filter(crop, rng.uniform(0.3, 1.2))
            crop = normalize_image(crop)
            if rng.random() < 0.5:  # extra shot-like noise and contrast changes
                crop = crop + rng.normal(0, rng.uniform(0.02, 0.2), crop.shape).astype(np.float32)
            crop = crop * float(np.exp(rng.uniform(-0.3, 0.3))) + float(rng.normal(0, 0.1))
            k = int(rng.integers(8))
            crop, tgt = d4(crop, k), d4(tgt, k)
            pad_r, pad_c = crop_px - crop.shape[0], crop_px - crop.shape[1]
            if pad_r > 0 or pad_c > 0:
                crop = np.pad(crop, ((0, max(pad_r, 0)), (0, max(pad_c, 0))), mode="reflect")
                tgt = np.pad(tgt, ((0, max(pad_r, 0)), (0, max(pad_c, 0))), mode="constant")
            xs.append(crop[:crop_px, :crop_px])
            ys.append(tgt[:crop_px, :crop_px])
        return np.stack(xs), np.stack(ys)

    return make_batch
