"""EELS spectrum images as a HyperSpy signal: a subclass of exspy's ``EELSSpectrum`` with
atomsmith's vectorised edge maps, L3/L2 white-line ratios, peak fits and denoising.

``s.set_signal_type("atomsmith_eels")``. The energy axis (the signal axis) must be calibrated in
eV (it is converted from keV or meV); results are ``Signal2D`` maps on the navigation axes (or
``BaseSignal`` for other navigation shapes), lazy where the input is. Every exspy method is
still there.
"""

from __future__ import annotations

import typing

import numpy as np
from exspy.signals import EELSSpectrum, LazyEELSSpectrum

from ._axes import record, scan_map

_ENERGY_TO_EV = {"ev": 1.0, "kev": 1e3, "mev": 1e-3}


class AtomsmithEELS(EELSSpectrum):
    """An EELS spectrum image (navigation: scan, signal: energy loss) with atomsmith's maps."""

    _signal_type = "atomsmith_eels"
    _alias_signal_types = ["atomsmith_EELS"]

    def energy_axis_eV(self) -> np.ndarray:
        """Channel centres (eV) of the signal axis; a clear error if it is not in energy units."""
        ax = self.axes_manager.signal_axes[0]
        units = str(ax.units or "").strip().lower()
        if units not in _ENERGY_TO_EV:
            raise ValueError(f"the energy axis is not calibrated in eV (units {ax.units!r}): set "
                             "s.axes_manager.signal_axes[0].units = 'eV' with its scale and offset")
        return np.asarray(ax.axis, float) * _ENERGY_TO_EV[units]

    def _check(self) -> None:
        if self.axes_manager.signal_dimension != 1:
            raise ValueError(f"EELS needs one energy (signal) axis; got {self.axes_manager.signal_dimension}")
        if not hasattr(self.data, "compute") and not np.all(np.isfinite(self.data)):
            bad = int(np.sum(~np.isfinite(self.data)))
            raise ValueError(f"the spectrum image contains {bad} NaN or inf values; fill or crop them first "
                             "(lazy signals are not scanned: their pixels with NaN give NaN in the maps)")

    def _nav_map(self, data: typing.Any, title: str, quantity: str) -> typing.Any:
        return scan_map(self, data, title, quantity)

    # ----------------------------------------------------------------- maps
    def edge_maps(self, elements: typing.Iterable[str], width: float = 50.0, *, method: str = "mle") -> dict:
        """Background-subtracted edge integrals (counts) of ``elements`` (onsets from
        atomsmith's edge table), a power law fitted before each edge: ``{element: map}``."""
        from atomsmith.eels import edge_maps

        self._check()
        elements = list(elements)
        maps = edge_maps(self.data, self.energy_axis_eV(), elements, width, method=method)
        out = {el: self._nav_map(m, f"{el} edge ({width:g} eV)", "counts") for el, m in maps.items()}
        for el, sig in out.items():
            record(sig, "edge_map", {"element": el, "width_eV": width, "method": method})
        record(self, "edge_maps", {"elements": elements, "width_eV": width, "method": method})
        return out

    def edge_map(self, onset: float, width: float = 50.0, *, pre_edge: tuple[float, float] | None = None,
                 method: str = "mle") -> typing.Any:
        """Background-subtracted integral over ``[onset, onset + width)`` eV of every pixel."""
        from atomsmith.eels import edge_map

        self._check()
        m = edge_map(self.data, self.energy_axis_eV(), onset, width, pre_edge_eV=pre_edge, method=method)
        out = self._nav_map(m, f"edge {onset:g}-{onset + width:g} eV", "counts")
        record(out, "edge_map", {"onset_eV": onset, "width_eV": width, "pre_edge_eV": pre_edge, "method": method})
        return out

    def l3_l2_ratio(self, element: str, *, method: str = "fit", **kwargs: typing.Any) -> typing.Any:
        """L3/L2 white-line ratio map of a transition metal (Ti, Mn, Fe): shared line shapes from
        the mean spectrum, per-pixel amplitudes (:func:`atomsmith.eels.white_line_ratio`)."""
        from atomsmith.eels import element_white_line_ratio

        self._check()
        res = element_white_line_ratio(self.data, self.energy_axis_eV(), element, method=method, **kwargs)
        out = self._nav_map(res.ratio, f"{element} L3/L2", "L3/L2 area ratio")
        record(out, "l3_l2_ratio", {"element": element, "method": method, **kwargs})
        record(self, "l3_l2_ratio", {"element": element, "method": method, **kwargs})
        return out

    def fit_peak_maps(self, window: tuple[float, float], *, shape: str = "gaussian") -> dict:
        """One peak plus a line fitted in ``window`` (eV) for every pixel: maps of ``centre``
        (eV), ``fwhm`` (eV) and ``area`` (counts)."""
        from atomsmith.eels import fit_peak

        self._check()
        res = fit_peak(self.data, self.energy_axis_eV(), window, shape=shape)
        out = {"centre": self._nav_map(res.centre_eV, "peak centre", "eV"),
               "fwhm": self._nav_map(res.fwhm_eV, "peak FWHM", "eV"),
               "area": self._nav_map(res.area, "peak area", "counts")}
        record(self, "fit_peak_maps", {"window_eV": list(window), "shape": shape})
        return out

    def denoise(self, n_components: int, *, method: str = "pca", weighting: str | None = "poisson") -> typing.Any:
        """A denoised copy (same class and axes) rebuilt from ``n_components`` PCA or NMF
        components (Poisson-weighted by default)."""
        from atomsmith.eels import denoise_nmf, denoise_pca

        self._check()
        if method not in ("pca", "nmf"):
            raise ValueError(f"method={method!r} must be 'pca' or 'nmf'")
        fn = denoise_pca if method == "pca" else denoise_nmf
        clean = fn(self.data, n_components, weighting=weighting)
        out = self._eager_copy(np.asarray(clean))
        out.metadata.General.title = f"{self.metadata.General.title} (denoised, {method} {n_components})"
        record(out, "denoise", {"n_components": n_components, "method": method, "weighting": weighting})
        return out

    def _eager_copy(self, data: np.ndarray) -> typing.Any:
        """A copy of this signal (class, axes, metadata) holding ``data`` in memory, also when this
        signal is lazy (HyperSpy's ``compute()`` works in place and returns None)."""
        out = self._deepcopy_with_new_data(data)
        if out._lazy:
            out.compute()
        return out

    # ----------------------------------------------------------------- learning with an image
    def _image_pair(self, image: typing.Any) -> tuple[np.ndarray, np.ndarray]:
        self._check()
        if self.axes_manager.navigation_dimension != 2:
            raise ValueError(f"this method needs a 2D spectrum image (two scan axes); this one has "
                             f"{self.axes_manager.navigation_dimension}")
        img = np.asarray(image.data if hasattr(image, "axes_manager") else image, float)
        data = self.data.compute() if hasattr(self.data, "compute") else np.asarray(self.data)
        if img.shape != data.shape[:2]:
            raise ValueError(f"the image {img.shape} must be on the spectrum image's scan grid {data.shape[:2]}")
        return img, np.asarray(data, float)

    def im2spec(self, image: typing.Any, patch_px: int | None = None, **kwargs: typing.Any) -> dict:
        """Learn to predict this spectrum image from ``image`` (a HAADF image on the same scan
        grid, array or Signal2D): :func:`atomsmith.learn.fit_im2spec` (image patch -> spectrum at
        its centre, scored on a held-out strip; ``test_fraction``, ``side``, ``epochs``, ...).

        Returns ``{"model", "r2_held_out", "r2_train", "predicted" (an AtomsmithEELS with these
        axes, NaN where no patch fits), "test_mask" (held-out centres, a scan map)}``."""
        from atomsmith.learn import fit_im2spec

        img, data = self._image_pair(image)
        fit = fit_im2spec(img, data, patch_px, **kwargs)
        pred = self._eager_copy(fit.predicted)
        pred.metadata.General.title = f"{self.metadata.General.title} (im2spec prediction)"
        params = {"patch_px": fit.patch_px, **kwargs}
        record(pred, "im2spec", params, r2_held_out=fit.r2_held_out, r2_train=fit.r2_train)
        record(self, "im2spec", params, r2_held_out=fit.r2_held_out, r2_train=fit.r2_train)
        return {"model": fit.model, "r2_held_out": fit.r2_held_out, "r2_train": fit.r2_train, "predicted": pred,
                "test_mask": self._nav_map(fit.test_mask.astype(float), "im2spec held-out centres", "held out")}

    def spec2im(self, image: typing.Any, patch_px: int | None = None, **kwargs: typing.Any) -> dict:
        """Learn the reverse: the image patch around each scan pixel from its spectrum
        (:func:`atomsmith.learn.fit_spec2im`, held-out strip as in :meth:`im2spec`).

        Returns ``{"model", "r2_held_out", "r2_train", "predicted" (Signal2D: navigation = scan,
        signal = the predicted patch), "test_mask"}``."""
        import hyperspy.api as hs

        from atomsmith.learn import fit_spec2im

        from ._axes import copy_axes

        img, data = self._image_pair(image)
        fit = fit_spec2im(img, data, patch_px, **kwargs)
        pred = hs.signals.Signal2D(fit.predicted)
        copy_axes(pred.axes_manager.navigation_axes, self.axes_manager.navigation_axes)
        for ax, nav in zip(pred.axes_manager.signal_axes, self.axes_manager.navigation_axes, strict=True):
            ax.scale, ax.units, ax.offset = nav.scale, nav.units, -nav.scale * (fit.patch_px // 2)
        pred.metadata.General.title = "spec2im predicted patches"
        record(pred, "spec2im", {"patch_px": fit.patch_px, **kwargs}, r2_held_out=fit.r2_held_out)
        return {"model": fit.model, "r2_held_out": fit.r2_held_out, "r2_train": fit.r2_train, "predicted": pred,
                "test_mask": self._nav_map(fit.test_mask.astype(float), "spec2im held-out centres", "held out")}


    # ----------------------------------------------------------------- automated experiment replay
    def replay_active_learning(self, image: typing.Any, criterion: typing.Any, budget: typing.Any, *,
                               model: str | object = "dkl", **kwargs: typing.Any) -> dict:
        """Replay an automated experiment offline: image patches steer where the next spectrum of
        this spectrum image is "measured" and ``criterion(spectrum)`` (or an element symbol: its
        edge integral) is the target. Returns the chosen points (calibrated, in order), the
        predicted and full-grid criterion maps and scores
        (:func:`atomsmith_hyperspy.explore.replay_active_learning`)."""
        from .explore import replay_active_learning

        return replay_active_learning(self, image, criterion, budget, model=model, **kwargs)

class LazyAtomsmithEELS(LazyEELSSpectrum, AtomsmithEELS):
    """Lazy (dask) variant: maps stay lazy; denoising computes the data."""

    _lazy = True
