"""``atomsmith find-atoms`` and ``atomsmith train-generic``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .options import ranged


def add_parser(sub) -> None:
    """Register ``find-atoms`` and ``train-generic``."""
    p = sub.add_parser("find-atoms", help="find atomic columns in an image and write a CSV table",
                       description="Find the atomic columns of an image (.npy, .npz, .h5 from `atomsmith "
                                   "simulate image`, .tif or .png) and write x, y (px), intensity, class.")
    p.add_argument("image", type=Path)
    p.add_argument("--key", default=None, help="array name inside .npz/.h5 files (default: 'image' or the first)")
    p.add_argument("--pixel-size-nm", type=ranged(0, None, "nm", lo_open=True), default=None)
    p.add_argument("--model", default="generic", help="'generic', 'classical' or a weights file from AtomFinder.save")
    p.add_argument("--refine", choices=["com", "gaussian", "none"], default="com")
    p.add_argument("--classify", action="store_true", help="label columns by intensity (GMM)")
    p.add_argument("--defects", action="store_true",
                   help="also find vacancies and substitutions (write IMAGE stem + _defects.csv)")
    p.add_argument("-o", "--output", type=Path, default=None, help="CSV file (default: IMAGE stem + _atoms.csv)")
    p.add_argument("--png", type=Path, default=None, help="also write the image with the columns marked")
    p.set_defaults(func=run_find_atoms)

    t = sub.add_parser("train-generic", help="reproduce the shipped generic U-Net weights",
                       description="Render twin images (graphene, hBN, MX2, perovskites) and parametric lattices "
                                   "and train the generic column-finding U-Net (about 35 min on 2 CPU cores).")
    t.add_argument("--out", type=Path, default=None, help="weights file (default: the package's generic_unet.pt)")
    t.add_argument("--samples", type=ranged(16, 10**6, integer=True), default=800,
                   help="twin training images")
    t.add_argument("--lattice-samples", type=ranged(0, 10**6, integer=True), default=4000,
                   help="parametric lattice training images")
    t.add_argument("--steps", type=ranged(1, 10**7, integer=True), default=5000)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_train_generic)


def load_image(path: Path, key: str | None = None) -> np.ndarray:
    """Read a 2D image from .npy, .npz, .h5/.hdf5, .tif/.tiff or .png/.jpg."""
    if not path.exists():
        raise FileNotFoundError(f"no such image file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path)
    if suffix == ".npz":
        with np.load(path) as z:
            name = key or ("image" if "image" in z else z.files[0])
            if name not in z:
                raise ValueError(f"{path} has no array {name!r}; it has {', '.join(z.files)}")
            return z[name]
    if suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            name = key or "image"
            if name not in f:
                raise ValueError(f"{path} has no dataset {name!r}; give --key")
            return f[name][()]
    if suffix in (".tif", ".tiff", ".png", ".jpg", ".jpeg"):
        from skimage import io

        arr = io.imread(path)
        return arr.mean(axis=-1) if arr.ndim == 3 else arr
    raise ValueError(f"unsupported image file type {suffix!r}; use .npy, .npz, .h5, .tif or .png")


def run_find_atoms(args) -> int:
    """Find columns and write the CSV (and PNG)."""
    from ..atoms import find_atoms

    img = load_image(args.image, args.key)
    t0 = time.perf_counter()
    table = find_atoms(img, pixel_size_nm=args.pixel_size_nm, model=args.model,
                       refine=None if args.refine == "none" else args.refine, classify=args.classify)
    dt = time.perf_counter() - t0
    out = args.output or args.image.with_name(args.image.stem + "_atoms.csv")
    table.to_csv(out)
    defects = None
    if args.defects:
        from ..atoms.defects import find_defects

        defects = find_defects(table, img.shape)
        d_out = out.with_name(out.stem.removesuffix("_atoms") + "_defects.csv")
        _write_defects(defects, d_out)
    if args.png:
        from ..plot import _figure

        fig, ax = _figure()
        a = ax[0, 0]
        a.imshow(img, cmap="gray")
        colours = {"c": table.label, "cmap": "tab10"} if args.classify else {"c": "tab:red"}
        a.scatter(table.x, table.y, s=6, **colours)
        if defects is not None:
            a.scatter(*defects.vacancy_xy.T, s=60, facecolors="none", edgecolors="cyan", label="vacancy")
            a.scatter(*defects.substitution_xy.T, s=60, marker="s", facecolors="none", edgecolors="yellow",
                      label="substitution")
            a.legend(loc="upper right", fontsize=7)
        a.set_title(f"{len(table)} columns", fontsize=10)
        a.set_xticks([])
        a.set_yticks([])
        fig.savefig(args.png, dpi=120)
    print(f"found {len(table)} columns in {dt * 1000:.0f} ms; wrote {out}")
    if defects is not None:
        print(f"{defects.summary()}; wrote {d_out}")
    return 0


def _write_defects(defects, path: Path) -> None:
    """One row per defect: kind, x, y (px), basis site, relative intensity change, z-score."""
    import csv

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["kind", "x", "y", "site", "intensity_change", "z"])
        for (x, y), site in zip(defects.vacancy_xy, defects.vacancy_site, strict=True):
            w.writerow(["vacancy", f"{x:.3f}", f"{y:.3f}", defects.site_labels[site], "", ""])
        for (x, y), i, kind, c, z in zip(defects.substitution_xy, defects.substitution_index,
                                         defects.substitution_kind, defects.substitution_change,
                                         defects.substitution_z, strict=True):
            w.writerow([f"substitution ({kind})", f"{x:.3f}", f"{y:.3f}", defects.site_labels[defects.site[i]],
                        f"{c:.3f}", f"{z:.1f}"])
        for x, y in defects.off_lattice_xy:
            w.writerow(["off lattice", f"{x:.3f}", f"{y:.3f}", "", "", ""])


def run_train_generic(args) -> int:
    """Reproduce the generic weights."""
    from ..atoms.generic import GENERIC_WEIGHTS, train_generic_model

    out = args.out or GENERIC_WEIGHTS
    r = train_generic_model(out, n_samples=args.samples, n_lattice=args.lattice_samples, steps=args.steps,
                            seed=args.seed)
    print(f"wrote {r['path']}: rendering {r['render_s']:.0f} s, training {r['train_s']:.0f} s, "
          f"final loss {r['final_loss']:.3f}")
    return 0
