"""Make docs/img/swift_twin_spectra.png: the twin as a Swift instrument (headless Swift 16.16),
driven through ``NionInstrument``: a sub-scan from the twin's scan device, EEL spectra from its
EELS camera on the Si column and on a C column, and a diffraction pattern from its camera.

Run: ``python docs/make_swift_twin_figure.py`` (needs the ``swift`` extra; writes into docs/img).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the plug-in from the source tree


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nion.swift import Facade
    from nion.swift.test import TestContext

    from atomsmith import find_atoms
    from nionswift_plugin.atomsmith.swift_twin import twin_test_context

    out = ROOT / "docs" / "img" / "swift_twin_spectra.png"
    os.chdir(tempfile.mkdtemp())
    Facade.initialize()
    setup = TestContext.TestSetup(set_global=True)
    ctx = twin_test_context(seed=6, with_eels=True, with_ronchigram=True, time_scale=10.0)
    try:
        twin = ctx.handles.twin
        ins = ctx.handles.nion_instrument()
        xy = twin.sample.xy_A / 10.0
        si = int(np.flatnonzero(twin.sample.species == "Si")[0])
        d = np.hypot(*(xy - xy[si]).T)
        c = int(np.flatnonzero((d > 0.35) & (d < 0.45))[0])
        frame = ins.subscan(tuple(xy[si]), (128, 128), 1.6, 8.0)
        table = find_atoms(frame.image, pixel_size_nm=frame.pixel_size_nm, classify=True)
        on_si = ins.acquire_spectrum(tuple(xy[si]), 50.0)
        on_c = ins.acquire_spectrum(tuple(xy[c]), 50.0)
        pattern = ins.acquire_diffraction(tuple(xy[si]), 20.0)
        assert ins.blanked
    finally:
        ctx.close()
        del setup
        asyncio.set_event_loop(asyncio.new_event_loop())

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    ext = [0, frame.image.shape[1] * frame.pixel_size_nm, frame.image.shape[0] * frame.pixel_size_nm, 0]
    ax[0].imshow(frame.image, cmap="gray", extent=ext)
    pts = table.xy * frame.pixel_size_nm
    ax[0].scatter(pts[:, 0], pts[:, 1], s=6, c=table.label, cmap="cool")
    for k, (name, col) in enumerate((("Si (EELS, diffraction)", "tab:red"),
                                     ("C (EELS)", "tab:blue"))):
        p = np.asarray(frame.nm_to_pixel((on_si if k == 0 else on_c).xy_nm)) * frame.pixel_size_nm
        ax[0].plot(*p, "o", mfc="none", mec=col, ms=14, mew=2, label=name)
    ax[0].legend(loc="lower right", fontsize=8)
    ax[0].set(title=f"Twin scan device: 128^2, 8 us, {len(table)} columns found", xlabel="nm", ylabel="nm")
    e = on_si.energy_eV
    ax[1].semilogy(e, np.maximum(on_si.counts, 1), color="tab:red", lw=0.8, label="probe on the Si column")
    ax[1].semilogy(e, np.maximum(on_c.counts, 1), color="tab:blue", lw=0.8, label="probe on a C column")
    for edge, name in ((99.0, "Si L2,3"), (284.0, "C K")):
        ax[1].axvline(edge, color="k", ls=":", lw=0.8)
        ax[1].text(edge + 5, ax[1].get_ylim()[1] / 3 if ax[1].get_ylim()[1] > 1 else 1, name, fontsize=8)
    ax[1].set(xlim=(80, 400), title="Twin EELS camera: 50 ms each", xlabel="energy loss (eV)",
              ylabel="counts per channel")
    ax[1].legend(fontsize=8)
    im = ax[2].imshow(np.log10(np.maximum(pattern, 1)), cmap="magma")
    fig.colorbar(im, ax=ax[2], label="log10 counts")
    ax[2].set(title="Twin Ronchigram camera: on the Si, 20 ms", xlabel="px", ylabel="px")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    os._exit(0)  # Swift's worker threads would keep the interpreter alive


if __name__ == "__main__":
    raise SystemExit(main())
