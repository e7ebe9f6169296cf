"""Atomic-resolution images and image stacks / movies as HyperSpy signals.

``s.set_signal_type("atomsmith_atomic_image")`` (alias ``"atomic_resolution_image"``) on a
``Signal2D``; ``"atomsmith_movie"`` for a stack whose navigation axis is time. Every method is a
thin adapter over :mod:`atomsmith.atoms` and :mod:`atomsmith.lattice`: the frame's pixels go in,
the signal axes' calibration (nm, Å, pm) gives the pixel size, and results come back calibrated
(markers in axis units, maps with the image's axes). The last atom table is kept in
``metadata.atomsmith.atoms`` (so it survives saving to .hspy) and each method records its
parameters in ``metadata.atomsmith.<method>``.
"""

from __future__ import annotations

import typing

import numpy as np
from hyperspy.signals import LazySignal2D, Signal2D

from ._axes import check_finite, copy_axes, image_pixel_size_nm, px_to_axes, record, set_image_axes


def _nav_indices(signal: typing.Any) -> list[tuple[int, ...]]:
    shape = signal.axes_manager.navigation_shape[::-1]  # array order
    return [tuple(i) for i in np.ndindex(*shape)] if shape else [()]


def _frame(signal: typing.Any, index: tuple[int, ...]) -> np.ndarray:
    data = signal.data[index] if index else signal.data
    if hasattr(data, "compute"):
        data = data.compute()
    return check_finite(np.asarray(data, float), f"frame {index or 0}")


def _table_to_metadata(signal: typing.Any, tables: list, indices: list[tuple[int, ...]]) -> None:
    xy = np.concatenate([t.xy for t in tables]) if tables else np.zeros((0, 2))
    frame = np.concatenate([np.full(len(t), k) for k, t in enumerate(tables)]) if tables else np.zeros(0, int)
    signal.metadata.set_item("atomsmith.atoms", {
        "xy_px": xy,
        "intensity": np.concatenate([t.intensity for t in tables]) if tables else np.zeros(0),
        "label": np.concatenate([t.label for t in tables]) if tables else np.zeros(0, int),
        "confidence": np.concatenate([t.confidence for t in tables]) if tables else np.zeros(0),
        "frame": frame.astype(int),
        "frame_index": np.array([list(i) for i in indices]) if indices and indices[0] else np.zeros((len(indices), 0)),
        "class_names": list(tables[0].class_names) if tables else [],
    })


class AtomicResolutionImage(Signal2D):
    """An atomic-resolution (HAADF / ABF / ...) image, or a stack of them, with atomsmith methods."""

    _signal_type = "atomsmith_atomic_image"
    _alias_signal_types = ["atomic_resolution_image"]

    # ----------------------------------------------------------------- the atom table
    def atom_tables(self) -> list:
        """The atom tables stored by the last :meth:`find_atoms` (one per frame)."""
        from atomsmith.atoms.table import AtomTable

        md = self.metadata.get_item("atomsmith.atoms")
        if md is None:
            raise ValueError("no atoms yet: run find_atoms() first")
        md = md.as_dictionary() if hasattr(md, "as_dictionary") else md
        px = image_pixel_size_nm(self)
        frame = np.asarray(md["frame"], int)
        n_frames = len(_nav_indices(self))
        names = tuple(md.get("class_names", []) or ())
        return [AtomTable(np.asarray(md["xy_px"])[frame == k], np.asarray(md["intensity"])[frame == k],
                          np.asarray(md["label"])[frame == k], np.asarray(md["confidence"])[frame == k],
                          class_names=names, pixel_size_nm=px) for k in range(n_frames)]

    def atom_table(self) -> typing.Any:
        """The atom table of a single image (the first frame of a stack)."""
        return self.atom_tables()[0]

    def _store(self, tables: list, add_markers: bool) -> None:
        indices = _nav_indices(self)
        _table_to_metadata(self, tables, indices)
        if add_markers and not self.axes_manager.navigation_shape:
            if self.metadata.has_item("Markers"):  # replace earlier atom markers
                for name in [n for n, _ in self.metadata.Markers if str(n).startswith("atomsmith_atoms")]:
                    self.metadata.Markers.__delattr__(name)
            self.add_marker(self.atom_markers(), permanent=True, plot_marker=False)

    def atom_markers(self) -> typing.Any:
        """HyperSpy point markers of the stored columns, coloured by class, in axis units: one
        set per frame for a stack (add them to a plot with ``s.plot(); s.add_marker(m)``).

        A single image gets them as permanent markers (``metadata.Markers``) from every atom
        method; a stack does not, because rosettasciio 0.x cannot load per-frame (ragged)
        permanent markers lazily."""
        import hyperspy.api as hs

        from atomsmith.atoms.overlay import class_colour_hex

        tables, indices = self.atom_tables(), _nav_indices(self)
        nav = self.axes_manager.navigation_shape[::-1]
        if not nav:
            t = tables[0]
            m = hs.plot.markers.Points(offsets=px_to_axes(self, t.xy), sizes=4, facecolors="none",
                                       edgecolors=[class_colour_hex(int(k)) for k in t.label], linewidths=1.2)
        else:
            offsets = np.empty(nav, dtype=object)
            for idx, t in zip(indices, tables, strict=True):
                offsets[idx] = px_to_axes(self, t.xy)
            m = hs.plot.markers.Points(offsets=offsets, sizes=4, facecolors="none", edgecolors="cyan", linewidths=1.2)
        m.name = "atomsmith_atoms"
        return m

    # ----------------------------------------------------------------- atoms
    def find_atoms(self, model: typing.Any = "generic", *, refine: str | None = "com", classify: bool | int = True,
                   add_markers: bool = True, show_progressbar: bool | None = None) -> typing.Any:
        """Find the atomic columns of the image (every frame of a stack).

        Args:
            model: ``"generic"`` (the shipped U-Net), ``"classical"``, an
                :class:`atomsmith.atoms.AtomFinder` or a path to saved weights.
            refine: ``"com"``, ``"gaussian"`` or None.
            classify: label columns by intensity (True: number of classes by BIC; an int: that
                many). In a stack the classes fitted on the first frame label every frame.
            add_markers: add permanent point markers (``metadata.Markers``) coloured by class.
            show_progressbar: progress over the frames of a stack.

        Returns:
            :class:`atomsmith.AtomTable` (positions in pixels; ``pixel_size_nm`` from the axes),
            or a list of them for a stack. Each carries its quality report (``table.quality``);
            a doubtful frame issues an :class:`atomsmith.atoms.AtomFindingWarning`, and the
            reports' ``ok`` and problems are recorded in the signal's metadata.
        """
        from tqdm.auto import tqdm

        from atomsmith.atoms.classify import fit_column_classes
        from atomsmith.atoms.find import find_atoms

        px = image_pixel_size_nm(self)
        indices = _nav_indices(self)
        tables, classes = [], None
        show = len(indices) > 1 if show_progressbar is None else show_progressbar
        for idx in tqdm(indices, desc="find_atoms", unit="frame", disable=not show):
            t = find_atoms(_frame(self, idx), pixel_size_nm=px, model=model, refine=refine)
            if classify and len(t):
                if classes is None:
                    n = None if classify is True else int(classify)
                    classes = fit_column_classes(t, n)
                t = classes.apply(t)
            tables.append(t)
        self._store(tables, add_markers)
        record(self, "find_atoms", {"model": model if isinstance(model, str) else type(model).__name__,
                                    "refine": refine, "classify": classify, "pixel_size_nm": px},
               n_columns=[len(t) for t in tables],
               quality_ok=[None if t.quality is None else bool(t.quality.ok) for t in tables],
               quality_problems=[[] if t.quality is None else list(t.quality.problems) for t in tables])
        return tables[0] if not self.axes_manager.navigation_shape else tables

    def refine_atoms(self, method: str = "gaussian", *, add_markers: bool = True, **kwargs: typing.Any) -> typing.Any:
        """Refine the stored columns (:func:`atomsmith.refine_positions`; ``"gaussian"`` or
        ``"com"``), keeping their classes. Returns the table (a list for a stack)."""
        from atomsmith.atoms.refine import refine_positions

        px = image_pixel_size_nm(self)
        out = []
        for idx, t in zip(_nav_indices(self), self.atom_tables(), strict=True):
            if len(t) == 0:
                out.append(t)
                continue
            r = refine_positions(_frame(self, idx), t.xy, method, pixel_size_nm=px, **kwargs)
            out.append(r.replace(label=t.label, class_names=t.class_names))
        self._store(out, add_markers)
        record(self, "refine_atoms", {"method": method, **kwargs})
        return out[0] if not self.axes_manager.navigation_shape else out

    def classify_columns(self, n_classes: int | None = None, *, class_names: tuple[str, ...] | None = None,
                         add_markers: bool = True) -> typing.Any:
        """Label the stored columns by intensity (Gaussian mixture; classes of the first frame
        applied to every frame). Returns the table (a list for a stack)."""
        from atomsmith.atoms.classify import fit_column_classes

        tables = self.atom_tables()
        if not any(len(t) for t in tables):
            raise ValueError("no columns to classify")
        first = next(t for t in tables if len(t))
        classes = fit_column_classes(first, n_classes, class_names=class_names)
        out = [classes.apply(t) if len(t) else t for t in tables]
        self._store(out, add_markers)
        record(self, "classify_columns", {"n_classes": n_classes, "class_names": class_names},
               class_names=list(classes.class_names))
        return out[0] if not self.axes_manager.navigation_shape else out

    def _single(self, what: str) -> tuple[np.ndarray, typing.Any, float | None]:
        if self.axes_manager.navigation_shape:
            raise ValueError(f"{what} works on a single image; take one frame with s.inav[i]")
        return _frame(self, ()), self.atom_table(), image_pixel_size_nm(self)

    # ----------------------------------------------------------------- representation learning
    def rvae(self, patch_px: int | None = None, *, n_latent: int = 1, n_classes: int | None = None,
             **kwargs: typing.Any) -> typing.Any:
        """Rotationally invariant VAE on the patches around the found columns (run
        :meth:`find_atoms` first): :func:`atomsmith.learn.rvae_on_positions`. With ``n_classes``
        a joint rVAE learns column classes without labels. Returns
        :class:`atomsmith.learn.PatchLatents` (angle, shift, z, classes per column); the angles
        and classes are also recorded in ``metadata``."""
        from atomsmith.learn import rvae_on_positions

        image, t, _ = self._single("rvae")
        res = rvae_on_positions(image, t.xy, patch_px, n_latent=n_latent, n_classes=n_classes, **kwargs)
        record(self, "rvae", {"patch_px": res.patch_px, "n_latent": n_latent, "n_classes": n_classes, **kwargs},
               angle_rad=res.angle_rad, classes=res.classes)
        return res

    # ----------------------------------------------------------------- local crystallography
    def local_crystallography(self, n_classes: int | None = 2, *, k: int = 6, **kwargs: typing.Any) -> typing.Any:
        """Classify columns by their neighbourhood (radius-vector descriptors, PCA + GMM):
        :class:`atomsmith.lattice.LocalCrystallography`; labels in ``metadata``."""
        from atomsmith.lattice import local_crystallography, radius_vector_descriptors

        image, t, px = self._single("local_crystallography")
        desc = radius_vector_descriptors(t.xy, k, image_shape=image.shape, pixel_size_nm=px)
        res = local_crystallography(desc, n_classes, **kwargs)
        record(self, "local_crystallography", {"n_classes": n_classes, "k": k, **kwargs},
               labels=np.asarray(res.labels))
        return res

    def polarization(self, a_label: typing.Any = None, b_label: typing.Any = None, *, add_markers: bool = True,
                     **kwargs: typing.Any) -> typing.Any:
        """B-site displacement from the centre of the four A sites (perovskites), from the
        stored column classes. ``a_label`` / ``b_label``: class names or numbers (default: the
        brightest class is A, the next B). Adds arrow markers (displacement x 10)."""
        from atomsmith.lattice import polarization

        image, t, px = self._single("polarization")
        if len(t.class_names) < 2 and len(np.unique(t.label)) < 2:
            raise ValueError("polarization needs at least two column classes: run classify_columns(2) first")
        names = list(t.class_names)

        def as_int(v: typing.Any, default: int) -> int:
            if v is None:
                return default
            if isinstance(v, str):
                if v not in names:
                    raise ValueError(f"no column class '{v}' (classes: {names})")
                return names.index(v)
            return int(v)

        top = int(t.label.max())
        a, b = as_int(a_label, top), as_int(b_label, top - 1)
        res = polarization(t.xy, labels=t.label, a_label=a, b_label=b, pixel_size_nm=px, **kwargs)
        if add_markers and res.valid.any():
            import hyperspy.api as hs

            v = res.valid
            scale = self.axes_manager.signal_axes[0].scale
            m = hs.plot.markers.Arrows(offsets=px_to_axes(self, res.b_xy_px[v]), U=res.displacement_px[v, 0] * scale * 10,
                                       V=res.displacement_px[v, 1] * scale * 10, color="yellow")
            m.name = "atomsmith_polarization"
            self.add_marker(m, permanent=True, plot_marker=False)
        record(self, "polarization", {"a_label": a, "b_label": b, **kwargs}, n_valid=int(res.valid.sum()))
        return res

    def strain(self, *, sigma_px: float | None = None, use_classes: bool = True) -> Signal2D:
        """Strain maps from the stored columns: a reference lattice is fitted, every column's
        strain measured from its neighbours and mapped onto the image grid.

        Returns:
            ``Signal2D`` stack (navigation: ``exx, eyy, exy`` (dimensionless) and
            ``rotation_deg``), on the image's calibrated axes.
        """
        import hyperspy.api as hs

        from atomsmith.lattice import fit_reference_lattice, local_strain, strain_map

        image, t, px = self._single("strain")
        classes = t.label if use_classes and len(np.unique(t.label)) > 1 else None
        lattice = fit_reference_lattice(t.xy, classes=classes, image_shape=image.shape, pixel_size_nm=px)
        res = local_strain(t.xy, lattice, image_shape=image.shape, pixel_size_nm=px)
        maps = strain_map(res, image.shape, sigma_px=sigma_px)
        out = hs.signals.Signal2D(np.stack([maps.exx, maps.eyy, maps.exy, maps.rotation_deg]))
        set_image_axes(out, self)
        nav = out.axes_manager.navigation_axes[0]
        nav.name = "component (exx, eyy, exy, rotation_deg)"
        out.metadata.General.title = f"Strain of {self.metadata.General.title or 'image'}"
        out.metadata.set_item("atomsmith.components", ["exx", "eyy", "exy", "rotation_deg"])
        record(out, "strain", {"sigma_px": maps.sigma_px, "use_classes": use_classes})
        record(self, "strain", {"sigma_px": maps.sigma_px, "use_classes": use_classes},
               n_valid=int(np.sum(res.valid)))
        return out

    def sliding_fft(self, window_px: int = 64, step_px: int = 16, *, n_components: int = 4, method: str = "pca",
                    **kwargs: typing.Any) -> tuple[Signal2D, Signal2D]:
        """Local FFTs over a sliding window, decomposed by PCA or NMF.

        Returns:
            (loadings, components): loadings as a ``Signal2D`` stack (one map per component,
            axes calibrated at the window centres), components as a ``Signal2D`` stack of FFT
            patterns (axes in cycles per length unit of the image, or per pixel).
        """
        import hyperspy.api as hs

        from atomsmith.lattice import sliding_fft

        image, _, px = (self._single("sliding_fft")[0], None, image_pixel_size_nm(self))
        res = sliding_fft(image, window_px, step_px, n_components=n_components, method=method,
                          pixel_size_nm=px, **kwargs)
        loadings = hs.signals.Signal2D(res.loadings)
        set_image_axes(loadings, self, scale_px=step_px, offset_px=float(res.centers_px[0, 0, 0]))
        loadings.axes_manager.signal_axes[1].offset = (self.axes_manager.signal_axes[1].offset
                                                       + self.axes_manager.signal_axes[1].scale
                                                       * float(res.centers_px[0, 0, 1]))
        comps = hs.signals.Signal2D(res.components)
        ax_unit = self.axes_manager.signal_axes[0]
        f = res.frequencies_per_px
        for a in comps.axes_manager.signal_axes:
            a.scale = float(f[1] - f[0]) / float(ax_unit.scale)
            a.offset = float(f[0]) / float(ax_unit.scale)
            a.units = f"1/{ax_unit.units}" if str(ax_unit.units) not in ("", "<undefined>") else "1/px"
        loadings.metadata.General.title = f"Sliding FFT loadings ({method})"
        comps.metadata.General.title = f"Sliding FFT components ({method})"
        params = {"window_px": window_px, "step_px": step_px, "n_components": n_components, "method": method, **kwargs}
        record(loadings, "sliding_fft", params)
        record(self, "sliding_fft", params)
        return loadings, comps


    def replay_active_learning(self, spectrum_image: typing.Any, criterion: typing.Any, budget: typing.Any, *,
                               model: str | object = "dkl", **kwargs: typing.Any) -> dict:
        """Replay an automated experiment on ``spectrum_image`` (an AtomsmithEELS on this image's
        scan grid) steered by this image's patches; see
        :func:`atomsmith_hyperspy.explore.replay_active_learning`."""
        from .explore import replay_active_learning

        if not hasattr(spectrum_image, "energy_axis_eV"):
            raise TypeError("spectrum_image must be an AtomsmithEELS signal "
                            "(s.set_signal_type('atomsmith_eels'))")
        return replay_active_learning(spectrum_image, self, criterion, budget, model=model, **kwargs)

class LazyAtomicResolutionImage(LazySignal2D, AtomicResolutionImage):
    """Lazy (dask) variant: frames are computed one at a time when a method needs them."""

    _lazy = True


class AtomicResolutionMovie(AtomicResolutionImage):
    """An image series whose navigation axis is time: per-frame atom finding with column classes
    shared across frames, column counts over time, and defect dynamics (``track_defects``,
    ``defect_classes``, ``transition_matrix``, ``diffusion``)."""

    _signal_type = "atomsmith_movie"
    _alias_signal_types = ["atomic_resolution_movie"]

    def _frame_time_s(self, frame_time_s: float | None) -> float:
        if frame_time_s is not None:
            return float(frame_time_s)
        ax = self.axes_manager.navigation_axes[0]
        factor = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "min": 60.0}.get(str(ax.units).strip().lower())
        if factor is None:
            raise ValueError(f"the time axis has units {ax.units!r}: set them to s (or ms) with the frame time as "
                             "scale, or pass frame_time_s=")
        return float(ax.scale) * factor

    def track_defects(self, frame_time_s: float | None = None, *, n_classes: int | None = None,
                      **kwargs: typing.Any) -> typing.Any:
        """Find the defects in every frame, classify them from their sub-images, link them into
        tracks and measure the Markov matrix and diffusion per class
        (:func:`atomsmith.dynamics.analyse_movie`). Frame time from the time axis (s or ms)
        unless given; the pixel size from the signal axes (required). Returns
        :class:`atomsmith.dynamics.MovieDynamics`; a summary goes to ``metadata``."""
        from atomsmith.dynamics import analyse_movie

        if self.axes_manager.navigation_dimension != 1:
            raise ValueError("track_defects needs a movie with one navigation (time) axis")
        px = image_pixel_size_nm(self, required=True, what="track_defects")
        dt = self._frame_time_s(frame_time_s)
        data = self.data.compute() if hasattr(self.data, "compute") else np.asarray(self.data)
        check_finite(data, "the movie")
        dyn = analyse_movie(data, dt, px, n_classes=n_classes, **kwargs)
        self._dynamics = dyn
        record(self, "track_defects", {"frame_time_s": dt, "pixel_size_nm": px, "n_classes": n_classes, **kwargs},
               n_tracks=len(dyn.tracks), n_classes_found=dyn.classes.n_classes,
               transition_matrix=dyn.transitions.matrix,
               D_nm2_per_s=[np.nan if r is None else r.D_nm2_per_s for r in dyn.diffusion])
        return dyn

    def _dyn(self) -> typing.Any:
        dyn = getattr(self, "_dynamics", None)
        if dyn is None:
            raise ValueError("no defect dynamics yet: run track_defects() first")
        return dyn

    def defect_classes(self) -> typing.Any:
        """The defect classes of the last :meth:`track_defects` (labels, class-mean images, BIC)."""
        return self._dyn().classes

    def transition_matrix(self) -> typing.Any:
        """Per-frame Markov matrix between defect classes with 95 % intervals and the stationary
        distribution, from the last :meth:`track_defects`."""
        return self._dyn().transitions

    def diffusion(self) -> list:
        """Diffusion coefficient (nm^2/s, 95 % interval) of each defect class, from the last
        :meth:`track_defects`."""
        return self._dyn().diffusion

    def normal_modes(self) -> list:
        """Statistical normal modes of each defect class's neighbourhood (PCA of the distortions
        of its first neighbour shell; :class:`atomsmith.dynamics.NormalModes` per class, px),
        from the last :meth:`track_defects`."""
        modes = self._dyn().normal_modes
        if modes is None:
            raise ValueError("no normal modes: track_defects was given defect positions without atoms")
        return modes

    def plot_trajectories(self, names: typing.Any = None) -> typing.Any:
        """Matplotlib figure: the tracks of the last :meth:`track_defects` over the mean frame,
        coloured by class, with a scale bar."""
        from atomsmith.dynamics.figures import plot_trajectories

        dyn = self._dyn()
        data = self.data.mean(0)
        data = data.compute() if hasattr(data, "compute") else np.asarray(data)
        return plot_trajectories(data, dyn.tracks, dyn.track_labels,
                                 pixel_size_nm=image_pixel_size_nm(self, required=False), names=names)

    def plot_transition_graph(self, names: typing.Any = None) -> typing.Any:
        """Matplotlib figure: the Markov chain of the last :meth:`track_defects` as a graph
        (class-mean images at the nodes, probabilities with 95 % intervals on the arrows)."""
        from atomsmith.dynamics.figures import plot_transition_graph

        dyn = self._dyn()
        return plot_transition_graph(dyn.transitions, class_images=dyn.classes.mean_images, names=names)

    def plot_class_gallery(self, n_examples: int = 6, names: typing.Any = None) -> typing.Any:
        """Matplotlib figure: per defect class, its mean sub-image and random members."""
        from atomsmith.dynamics.figures import plot_class_gallery

        dyn = self._dyn()
        return plot_class_gallery(dyn.stack, dyn.classes.labels, n_examples=n_examples, names=names)

    def defect_counts(self) -> typing.Any:
        """Number of defects of each class in every frame, from the last :meth:`track_defects`:
        ``Signal1D`` (navigation: class, signal: time)."""
        import hyperspy.api as hs

        from atomsmith.dynamics import class_counts

        dyn = self._dyn()
        out = hs.signals.Signal1D(class_counts(dyn.labels, dyn.classes.n_classes))
        copy_axes(out.axes_manager.signal_axes, self.axes_manager.navigation_axes[:1])
        out.metadata.General.title = "Defect counts per class"
        return out

    def column_counts(self) -> typing.Any:
        """Number of columns of each class in every frame: ``Signal1D`` (navigation: class,
        signal: time) from the stored tables."""
        import hyperspy.api as hs

        tables = self.atom_tables()
        names = tables[0].class_names or ("all",)
        counts = np.array([[int(np.sum(t.label == k)) if t.class_names else len(t) for t in tables]
                           for k in range(len(names))], float)
        out = hs.signals.Signal1D(counts)
        copy_axes(out.axes_manager.signal_axes, self.axes_manager.navigation_axes[:1])
        out.metadata.General.title = "Column counts"
        out.metadata.set_item("atomsmith.classes", list(names))
        return out


class LazyAtomicResolutionMovie(LazySignal2D, AtomicResolutionMovie):
    """Lazy (dask) variant of :class:`AtomicResolutionMovie`."""

    _lazy = True
