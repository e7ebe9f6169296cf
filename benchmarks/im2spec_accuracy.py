"""im2spec / spec2im accuracy on held-out regions of a twin HAADF + EELS pair, vs ridge regression.

For each seed, :func:`atomsmith.simulate.haadf_eels_pair.simulate_haadf_eels_pair` builds one
random sample (random rotation and shift, random dopant columns: by default SrTiO3 at 200 kV,
4 nm thick, 6 % Mn and 4 % Fe on the B sites) and simulates a HAADF image and an EELS spectrum
image on the same SIZE x SIZE grid with Poisson noise at DOSE electrons per pixel. Patches
(PATCH x PATCH) are centred on pixels; the spectrum at the centre is the target.

Regions (no patch of one overlaps a patch centre of another):

* test: the right quarter of the field (all its pixels);
* validation: the bottom fifth of the rest (used only to pick the epoch / ridge alpha);
* training: the remainder (every STRIDE-th pixel; default all).

Models: :class:`atomsmith.learn.im2spec.Im2Spec` (patch -> spectrum) and ``Spec2Im`` (spectrum ->
patch). Reference, measured in the same run on the same patches: scikit-learn ``Ridge`` on the
standardised pixels (im2spec) or standardised spectra (spec2im), alpha chosen on the validation
region. ``R^2`` is :func:`atomsmith.learn.im2spec.r2_score` (1 - SSE/SST over all channels of all
held-out samples, SST about the held-out per-channel mean), computed against

* the noise-free expected spectra of the held-out pixels ("truth"): how well the physics is
  learnt;
* the measured, Poisson-noisy spectra ("measured"): bounded by the noise ceiling, the R^2 the
  noise-free truth itself reaches on the measured spectra (printed).

spec2im is scored against the measured patches (the HAADF noise is small). It prints the mean
(and spread) over seeds, training times, and the ratio of each model's R^2 to the reference.

Usage: python benchmarks/im2spec_accuracy.py [--material SrTiO3] [--dose 1e6] [--size 128]
            [--patch 17] [--channels 256] [--epochs 40] [--stride 1] [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from atomsmith.learn.im2spec import Im2Spec, Spec2Im, r2_score
from atomsmith.simulate.haadf_eels_pair import (
    patches_and_spectra,
    simulate_haadf_eels_pair,
    spatial_split,
)

ALPHAS = np.logspace(-2, 5, 15)


def regions(centers: np.ndarray, shape: tuple[int, int], patch: int, stride: int):
    """Boolean masks (train, validation, test) over the patch centres."""
    train, test = spatial_split(centers, shape, patch, test_fraction=0.25, side="right")
    # validation: bottom fifth of the training side, kept a patch width away from training
    tr2, val = spatial_split(centers, shape, patch, test_fraction=0.2, side="bottom")
    val &= train
    train &= tr2
    train &= (centers % stride == 0).all(1)
    return train, val, test


def ridge(x_tr, y_tr, x_val, y_val):
    """Ridge on standardised inputs, alpha with the lowest validation error."""
    best = None
    for a in ALPHAS:
        m = make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(x_tr, y_tr)
        err = float(np.mean((m.predict(x_val) - y_val) ** 2))
        if best is None or err < best[0]:
            best = (err, m, a)
    return best[1], best[2]


def run(seed: int, args) -> dict:
    t = time.perf_counter()
    pair = simulate_haadf_eels_pair(args.material, (args.size, args.size), args.pixel_nm,
                                    electrons_per_pixel=args.dose, n_channels=args.channels, seed=seed)
    t_sim = time.perf_counter() - t
    s = args.patch
    meas = patches_and_spectra(pair.image, pair.spectrum_image, s)
    clean = patches_and_spectra(pair.image, pair.spectrum_clean, s)
    tr, val, te = regions(meas.centers_yx, pair.image.shape, s, args.stride)
    x, y, y0 = meas.patches, meas.spectra, clean.spectra
    out = {"sim_s": t_sim, "n_train": int(tr.sum()), "n_val": int(val.sum()), "n_test": int(te.sum()),
           "dopants": pair.metadata["n_dopant_columns"], "rotation": pair.metadata["rotation_deg"],
           "ceiling": r2_score(y[te], y0[te])}

    torch.manual_seed(seed)
    t = time.perf_counter()
    m = Im2Spec(s, args.channels, seed=seed).fit(x[tr], y[tr], epochs=args.epochs, validation=(x[val], y[val]),
                                                progress=False)
    out["im2spec_fit_s"] = time.perf_counter() - t
    p = m.predict(x[te])
    out["im2spec_truth"], out["im2spec_meas"] = r2_score(y0[te], p), r2_score(y[te], p)

    flat = x.reshape(len(x), -1)
    t = time.perf_counter()
    rg, alpha = ridge(flat[tr], y[tr], flat[val], y[val])
    out["ridge_fit_s"], out["ridge_alpha"] = time.perf_counter() - t, alpha
    pr = rg.predict(flat[te])
    out["ridge_truth"], out["ridge_meas"] = r2_score(y0[te], pr), r2_score(y[te], pr)

    t = time.perf_counter()
    m2 = Spec2Im(args.channels, s, seed=seed).fit(y[tr], x[tr], epochs=args.epochs, validation=(y[val], x[val]),
                                                 progress=False)
    out["spec2im_fit_s"] = time.perf_counter() - t
    out["spec2im"] = r2_score(x[te], m2.predict(y[te]))
    rg2, _ = ridge(y[tr], flat[tr], y[val], flat[val])
    out["ridge_s2i"] = r2_score(flat[te], rg2.predict(y[te]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--material", default="SrTiO3")
    ap.add_argument("--dose", type=float, default=1e6, help="electrons per pixel (default 1e6, ~16 pA x 10 ms)")
    ap.add_argument("--size", type=int, default=128, help="pixels per side (default 128)")
    ap.add_argument("--pixel-nm", type=float, default=0.04, help="pixel size in nm (default 0.04)")
    ap.add_argument("--patch", type=int, default=17, help="patch side in pixels (odd; default 17)")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--stride", type=int, default=1, help="step between training centres (pixels)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: these small models gain little from more, and "
                         "several threads collapse when the cores are shared)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.threads))

    print(f"{args.material}, {args.size}x{args.size} px of {args.pixel_nm} nm, {args.dose:.0e} e/px, "
          f"{args.channels} channels, patch {args.patch} px, {args.epochs} epochs, torch threads "
          f"{torch.get_num_threads()}")
    rows = []
    for seed in args.seeds:
        r = run(seed, args)
        rows.append(r)
        print(f"seed {seed}: rot {r['rotation']:.0f} deg, {r['dopants']} dopant columns, train/val/test "
              f"{r['n_train']}/{r['n_val']}/{r['n_test']}; R^2 vs truth: im2spec {r['im2spec_truth']:.3f}, "
              f"ridge {r['ridge_truth']:.3f}; vs measured: im2spec {r['im2spec_meas']:.4f}, ridge "
              f"{r['ridge_meas']:.4f}, ceiling {r['ceiling']:.4f}; spec2im {r['spec2im']:.3f}, ridge "
              f"{r['ridge_s2i']:.3f}; fit im2spec {r['im2spec_fit_s']:.1f} s, spec2im {r['spec2im_fit_s']:.1f} s, "
              f"ridge {r['ridge_fit_s']:.1f} s, simulation {r['sim_s']:.1f} s")

    def stat(k):
        v = np.array([r[k] for r in rows])
        return v.mean(), v.std()

    print(f"\n{'held-out R^2 (mean +- sd over ' + str(len(rows)) + ' seeds)':44s} {'model':>14s} {'ridge (ref)':>14s} {'ratio':>7s}")
    for label, a, b in (("im2spec vs noise-free truth", "im2spec_truth", "ridge_truth"),
                        ("im2spec vs measured spectra", "im2spec_meas", "ridge_meas"),
                        ("spec2im vs measured patches", "spec2im", "ridge_s2i")):
        (ma, sa), (mb, sb) = stat(a), stat(b)
        ratio = f"{ma / mb:7.2f}" if mb > 0 else "    n/a"
        print(f"{label:44s} {ma:7.3f} +- {sa:.3f} {mb:7.3f} +- {sb:.3f} {ratio}")
    mc, _ = stat("ceiling")
    mm, _ = stat("im2spec_meas")
    print(f"noise ceiling on measured spectra (truth vs measured): {mc:.4f}; im2spec reaches "
          f"{mm / mc:.2f} of it")
    med = {k: float(np.median([r[k] for r in rows])) for k in ("im2spec_fit_s", "spec2im_fit_s", "ridge_fit_s")}
    print(f"training time (median over seeds, wall clock; CPU contention inflates it): im2spec "
          f"{med['im2spec_fit_s']:.1f} s, spec2im {med['spec2im_fit_s']:.1f} s, ridge (15 alphas) "
          f"{med['ridge_fit_s']:.1f} s; im2spec / ridge time {med['im2spec_fit_s'] / med['ridge_fit_s']:.1f}x")
    ok = stat("im2spec_truth")[0] >= 0.9
    print(f"im2spec held-out R^2 vs truth >= 0.9: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
