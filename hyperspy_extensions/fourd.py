"""4D-STEM as a HyperSpy signal: a subclass of pyxem's ``Diffraction2D`` with atomsmith's centre
of mass, electric field, charge density, projected potential and virtual images.

``s.set_signal_type("atomsmith_4dstem")``. Calibrations are read from the axes: the detector
axes in ``mrad`` (or in ``1/nm`` / ``1/Å`` with the beam energy in
``metadata.Acquisition_instrument.TEM.beam_energy``, keV), zero angle where the axis value is
0 (the middle of the detector when both offsets are 0); the scan axes in a length unit. Results
are calibrated HyperSpy signals: the centre of mass is a pyxem ``BeamShift`` (mrad), the field a
``Signal1D`` of (x, y) components in V, charge density (V/Å^2) and potential (V·Å) ``Signal2D``
maps on the scan axes. Lazy signals stay lazy: the reductions run chunk by chunk on ``s.data``.
"""

from __future__ import annotations

import typing

import numpy as np
from pyxem.signals import BeamShift, Diffraction2D, LazyBeamShift, LazyDiffraction2D

from ._axes import copy_axes, length_scale_nm, record, scan_map

_INV_LENGTH_PER_NM = {"1/nm": 1.0, "nm^-1": 1.0, "1/å": 10.0, "1/a": 10.0, "å^-1": 10.0, "a^-1": 10.0,
                      "1/angstrom": 10.0}


def _is_lazy(signal: typing.Any) -> bool:
    return bool(getattr(signal, "_lazy", False))


class FourDSTEM(Diffraction2D):
    """4D-STEM data (navigation: scan, signal: detector) with atomsmith's field analysis."""

    _signal_type = "atomsmith_4dstem"
    _alias_signal_types = ["atomsmith_4d_stem"]

    # ----------------------------------------------------------------- calibrations
    def beam_energy_keV(self, *, required: bool = True) -> float | None:
        """Beam energy from ``metadata.Acquisition_instrument.TEM.beam_energy`` (keV)."""
        e = self.metadata.get_item("Acquisition_instrument.TEM.beam_energy")
        if e is None or not float(e) > 0:
            if required:
                raise ValueError("the beam energy is missing: set "
                                 "s.metadata.set_item('Acquisition_instrument.TEM.beam_energy', 60.0)  # keV")
            return None
        return float(e)

    def detector_calibration(self, *, required: bool = True) -> tuple[float | None, tuple[float, float]]:
        """(mrad per pixel or None, zero-angle pixel (qy, qx)) from the detector axes."""
        ax_x, ax_y = self.axes_manager.signal_axes
        qy, qx = ax_y.size, ax_x.size
        if ax_x.offset == 0 and ax_y.offset == 0:
            center = (qy // 2, qx // 2)
        else:
            center = (-ax_y.offset / ax_y.scale, -ax_x.offset / ax_x.scale)
        units = str(ax_x.units or "").strip().lower()
        if units == "mrad":
            mrad = float(ax_x.scale)
        elif units in _INV_LENGTH_PER_NM:
            from atomsmith.simulate.probe import wavelength_A

            energy = self.beam_energy_keV(required=required)
            mrad = None if energy is None else float(ax_x.scale) * _INV_LENGTH_PER_NM[units] * wavelength_A(energy) / 10 * 1e3
        else:
            mrad = None
        if mrad is None and required:
            raise ValueError(f"the detector axes are not calibrated (units {ax_x.units!r}): give them in mrad, e.g. "
                             "s.axes_manager.signal_axes[0].units = 'mrad' and .scale = <mrad per pixel>")
        if mrad is not None and not np.isclose(abs(ax_y.scale), abs(ax_x.scale), rtol=1e-3) and units == "mrad":
            raise ValueError("the detector pixels are not square in angle")
        return mrad, center

    def scan_step_A(self) -> float:
        """Scan step in Å from the navigation axes (a length unit is required)."""
        axes = self.axes_manager.navigation_axes
        if len(axes) != 2:
            raise ValueError(f"field maps need a 2D scan; this signal has {len(axes)} navigation axes")
        steps = [length_scale_nm(a) for a in axes]
        if any(s is None for s in steps):
            raise ValueError(f"the scan axes are not calibrated (units {[str(a.units) for a in axes]}): "
                             "set s.axes_manager.navigation_axes[i].units = 'nm' and .scale")
        if not np.isclose(steps[0], steps[1], rtol=1e-3):
            raise ValueError(f"the scan steps differ ({steps[0]:g} nm, {steps[1]:g} nm)")
        return float(steps[0]) * 10.0

    def _check_dims(self) -> None:
        if self.axes_manager.signal_dimension != 2:
            raise ValueError(f"4D-STEM needs 2 detector (signal) axes; got {self.axes_manager.signal_dimension}")
        if self.axes_manager.navigation_dimension < 1:
            raise ValueError("4D-STEM needs at least one scan (navigation) axis")

    def _nav_signal(self, data: typing.Any, cls: type, title: str) -> typing.Any:
        out = cls(data)
        copy_axes(out.axes_manager.navigation_axes, self.axes_manager.navigation_axes)
        out.metadata.General.title = title
        return out

    def _map(self, data: typing.Any, title: str, units: str) -> typing.Any:
        return scan_map(self, data, title, units)

    # ----------------------------------------------------------------- reductions
    def center_of_mass(self, *, mask: typing.Any = None, threshold: float | None = None) -> BeamShift:
        """Centre of mass of every pattern as a pyxem ``BeamShift`` (x, y), in mrad when the
        detector is calibrated, else in pixels; from the zero-angle pixel.

        Args:
            mask: (qy, qx) array or a circle ``(x, y, r)`` in detector pixels.
            threshold: ignore pixels below this fraction of their pattern's maximum.
        """
        from atomsmith.fourd import center_of_mass

        self._check_dims()
        mrad, center = self.detector_calibration(required=False)
        com = center_of_mass(self.data, center_px=center, mrad_per_px=mrad, mask=mask, threshold=threshold)
        out = self._nav_signal(com, LazyBeamShift if _is_lazy(self) else BeamShift, "Centre of mass")
        ax = out.axes_manager.signal_axes[0]
        ax.name, ax.units = "shift (x, y)", "mrad" if mrad else "px"
        params = {"mask": None if mask is None else (list(mask) if isinstance(mask, tuple) else "array"),
                  "threshold": threshold, "mrad_per_px": mrad, "center_px": list(center)}
        record(out, "center_of_mass", params)
        record(self, "center_of_mass", params)
        return out

    def electric_field(self, com: typing.Any = None, **com_kwargs: typing.Any) -> typing.Any:
        """Projected electric field (V), ``(x, y)`` per scan position, from the centre of mass
        (computed here unless a calibrated ``BeamShift`` in mrad is given)."""
        import hyperspy.api as hs

        from atomsmith.fourd import com_to_field

        energy = self.beam_energy_keV()
        if com is None:
            self.detector_calibration(required=True)
            com = self.center_of_mass(**com_kwargs)
        units = str(com.axes_manager.signal_axes[0].units)
        if units != "mrad":
            raise ValueError(f"the centre of mass must be in mrad (got {units!r}); calibrate the detector axes")
        data = com.data
        if hasattr(data, "map_blocks"):
            field = data.map_blocks(com_to_field, energy, dtype=float)
            out = self._nav_signal(field, hs.signals.Signal1D, "Projected electric field").as_lazy()
        else:
            out = self._nav_signal(com_to_field(np.asarray(data), energy), hs.signals.Signal1D,
                                   "Projected electric field")
        ax = out.axes_manager.signal_axes[0]
        ax.name, ax.units = "field (x, y)", "V"
        record(out, "electric_field", {"beam_energy_keV": energy})
        return out

    def _field_array(self, field: typing.Any) -> np.ndarray:
        if field is None:
            field = self.electric_field()
        data = field.data
        if hasattr(data, "compute"):
            data = data.compute()  # field maps are small: (ny, nx, 2)
        if str(field.axes_manager.signal_axes[0].units) != "V":
            raise ValueError("field must be the result of electric_field() (units V)")
        return np.asarray(data, float)

    def charge_density(self, field: typing.Any = None) -> typing.Any:
        """Charge density ``div E`` (V/Å^2) on the scan axes, from :meth:`electric_field`."""
        from atomsmith.fourd import charge_density

        step = self.scan_step_A()
        out = self._map(charge_density(self._field_array(field), step), "Charge density (div E)", "V/Å^2")
        record(out, "charge_density", {"scan_step_A": step})
        return out

    def projected_potential(self, field: typing.Any = None) -> typing.Any:
        """Projected potential (V·Å, mean zero) on the scan axes: the field integrated in
        Fourier space (iDPC-like)."""
        from atomsmith.fourd import projected_potential

        step = self.scan_step_A()
        out = self._map(projected_potential(self._field_array(field), step), "Projected potential", "V·Å")
        record(out, "projected_potential", {"scan_step_A": step})
        return out

    def virtual_image(self, inner: float = 0.0, outer: float | None = None) -> typing.Any:
        """Virtual annular detector image on the scan axes; radii in mrad when the detector is
        calibrated, else in pixels (``inner=0``: bright field; ``outer=None``: to the corners)."""
        from atomsmith.fourd import virtual_image

        self._check_dims()
        mrad, center = self.detector_calibration(required=False)
        img = virtual_image(self.data, inner=inner, outer=outer, center_px=center, mrad_per_px=mrad)
        unit = "mrad" if mrad else "px"
        out = self._map(img, f"Virtual image {inner:g}-{outer if outer is not None else 'edge'} {unit}", "counts")
        record(out, "virtual_image", {"inner": inner, "outer": outer, "units": unit})
        return out


    def segmented_dpc(self, n_segments: int = 4, *, semiangle: float | None = None, outer: float | None = None,
                      rotation_deg: float = 0.0) -> BeamShift:
        """Beam shift from a virtual segmented (DPC) detector of ``n_segments`` sectors covering
        the bright-field disc: a ``BeamShift`` in mrad (first-moment estimate, see
        :mod:`atomsmith.fourd.dpc`). ``semiangle``: the bright-field semi-angle in mrad
        (default ``metadata.Acquisition_instrument.TEM.convergence_angle``); ``outer`` defaults
        to 1.3 x the semi-angle."""
        from atomsmith.fourd import dpc_shift, segment_images

        self._check_dims()
        mrad, center = self.detector_calibration(required=True)
        alpha = semiangle if semiangle is not None else self.metadata.get_item(
            "Acquisition_instrument.TEM.convergence_angle")
        if alpha is None or not float(alpha) > 0:
            raise ValueError("the bright-field semi-angle is missing: pass semiangle= (mrad) or set "
                             "metadata.Acquisition_instrument.TEM.convergence_angle")
        alpha = float(alpha)
        seg = segment_images(self.data, n_segments, outer=1.3 * alpha if outer is None else outer,
                             rotation_deg=rotation_deg, center_px=center, mrad_per_px=mrad)
        shift = dpc_shift(seg, alpha, rotation_deg=rotation_deg)
        out = self._nav_signal(shift, LazyBeamShift if _is_lazy(self) else BeamShift, "Segmented DPC shift")
        ax = out.axes_manager.signal_axes[0]
        ax.name, ax.units = "shift (x, y)", "mrad"
        params = {"n_segments": n_segments, "semiangle_mrad": alpha, "outer": outer, "rotation_deg": rotation_deg}
        record(out, "segmented_dpc", params)
        record(self, "segmented_dpc", params)
        return out

    def bragg_strain(self, reference: typing.Any = None, *, disc_radius: float | None = None) -> typing.Any:
        """Strain maps from Bragg-disc positions (NBED): ``exx, eyy, exy`` and ``rotation_deg``
        as a ``Signal2D`` stack on the scan axes, relative to ``reference``: a (qy, qx) pattern,
        a signal of patterns (their mean is used), or None for the mean of all patterns.
        ``disc_radius`` in mrad when the detector is calibrated, else pixels (default the
        convergence angle in the metadata)."""
        import hyperspy.api as hs

        from atomsmith.fourd import bragg_strain, find_bragg_lattice

        self._check_dims()
        mrad, _ = self.detector_calibration(required=False)
        r = disc_radius if disc_radius is not None else self.metadata.get_item(
            "Acquisition_instrument.TEM.convergence_angle")
        if r is None:
            raise ValueError("give disc_radius (mrad, or pixels without a calibration) or set "
                             "metadata.Acquisition_instrument.TEM.convergence_angle")
        r_px = float(r) / mrad if mrad else float(r)
        if reference is None:
            ref = self.mean(axis=self.axes_manager.navigation_axes).data
        elif hasattr(reference, "axes_manager"):
            ref = (reference.mean(axis=reference.axes_manager.navigation_axes).data
                   if reference.axes_manager.navigation_dimension else reference.data)
        else:
            ref = reference
        ref = np.asarray(ref.compute() if hasattr(ref, "compute") else ref, float)
        lattice = find_bragg_lattice(ref, r_px)
        res = bragg_strain(self.data, lattice)
        stack = np.stack([res.exx, res.eyy, res.exy, res.rotation_deg])
        if hasattr(stack, "compute"):
            stack = stack.compute()
        out = hs.signals.Signal2D(stack)
        copy_axes(out.axes_manager.signal_axes, self.axes_manager.navigation_axes)
        out.axes_manager.navigation_axes[0].name = "component (exx, eyy, exy, rotation_deg)"
        out.metadata.General.title = "Bragg-disc strain"
        out.metadata.set_item("atomsmith.components", ["exx", "eyy", "exy", "rotation_deg"])
        params = {"disc_radius_px": r_px, "n_discs": len(lattice.hk), "g_px": lattice.g}
        record(out, "bragg_strain", params)
        record(self, "bragg_strain", params)
        return out


class LazyFourDSTEM(LazyDiffraction2D, FourDSTEM):
    """Lazy (dask) variant: every method returns lazy results where the data allow."""

    _lazy = True
