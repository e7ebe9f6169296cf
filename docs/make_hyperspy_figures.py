"""Make the figures of docs/hyperspy.md from the twin's data through atomsmith's HyperSpy types.

Run: ``python docs/make_hyperspy_figures.py`` (needs the ``hyperspy`` extra; writes docs/img/hs_*.png).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "img"


def atomic_image() -> None:
    import hyperspy.api as hs
    import matplotlib.pyplot as plt

    import atomsmith.simulate as sim

    crystal = sim.substitute(sim.build_crystal("graphene", (35.0, 35.0), rotation_deg=10), "Si", 2, seed=1)
    im = sim.render_haadf(crystal, (160, 160), 0.02, dose_e_per_A2=2e5, seed=0, progress=False)
    s = hs.signals.Signal2D(im.image.astype(np.float32))
    for a in s.axes_manager.signal_axes:
        a.scale, a.units = 0.02, "nm"
    s.metadata.General.title = "graphene + Si (twin, 2e5 e/Å²)"
    s.set_signal_type("atomsmith_atomic_image")
    s.find_atoms()
    s.classify_columns(2, class_names=("C", "Si"))
    s.plot(colorbar=False)  # the permanent markers are drawn by HyperSpy itself
    fig = s._plot.signal_plot.figure
    fig.set_size_inches(5.5, 5.5)
    fig.savefig(OUT / "hs_find_atoms.png", dpi=110)
    plt.close("all")

    strain = s.strain()
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.6))
    ext = [0, 160 * 0.02, 160 * 0.02, 0]
    for k, name in enumerate(["exx", "eyy", "exy", "rotation (deg)"]):
        lim = 0.01 if k < 3 else 0.5
        h = ax[k].imshow(strain.data[k], cmap="RdBu_r", vmin=-lim, vmax=lim, extent=ext)
        ax[k].set(title=name, xlabel="nm")
        fig.colorbar(h, ax=ax[k], shrink=0.8)
    fig.suptitle("s.strain(): the twin's graphene is unstrained (|exx| < 0.5 %, edges excluded)")
    fig.tight_layout()
    fig.savefig(OUT / "hs_strain.png", dpi=100)
    plt.close("all")


def movie() -> None:
    import hyperspy.api as hs
    import matplotlib.pyplot as plt

    from atomsmith.simulate.movie import simulate_movie

    mv = simulate_movie("MoS2", n_frames=20, shape_px=(128, 128), pixel_size_nm=0.02, dose_e_per_A2=1e5, seed=2,
                        progress=False)
    s = hs.signals.Signal2D(mv.frames)
    for a in s.axes_manager.signal_axes:
        a.scale, a.units = 0.02, "nm"
    t = s.axes_manager.navigation_axes[0]
    t.name, t.units, t.scale = "time", "s", float(mv.metadata.get("frame_time_s", 1.0) or 1.0)
    s.set_signal_type("atomsmith_movie")
    tables = s.find_atoms(classify=3, show_progressbar=False)  # Mo, S2, single-S (vacancy) columns
    counts = s.column_counts()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.4))
    ax[0].imshow(mv.frames[0], cmap="gray")
    colours = ("tab:red", "tab:cyan", "tab:orange", "tab:green")
    for k, colour in enumerate(colours[:len(tables[0].class_names)]):
        xy = tables[0].xy[tables[0].label == k]
        ax[0].scatter(*xy.T, s=14, facecolors="none", edgecolors=colour, linewidths=0.8,
                      label=tables[0].class_names[k])
    ax[0].set(title="frame 0: columns by class (MoS2 movie, 1e5 e/Å²)", xticks=[], yticks=[])
    ax[0].legend(fontsize=8, loc="lower right")
    names = counts.metadata.atomsmith.classes
    for k, name in enumerate(names):
        ax[1].plot(counts.axes_manager.signal_axes[0].axis, counts.data[k], "o-", ms=3, label=name,
                   color=colours[k])
    ax[1].set(title="movie.column_counts()", xlabel=f"time ({t.units})", ylabel="columns")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "hs_movie.png", dpi=100)
    plt.close("all")


def fourd() -> None:
    import hyperspy.api as hs
    import matplotlib.pyplot as plt

    import atomsmith.simulate as sim

    crystal = sim.build_crystal("MoS2", (45.0, 45.0), rotation_deg=7)
    d = sim.simulate_4dstem(crystal, (48, 48), 0.025, origin_nm=(1.2, 1.2), dose_e_per_A2=1e6, seed=0,
                            progress=False)
    s = hs.signals.Signal2D(d.data)
    for a in s.axes_manager.navigation_axes:
        a.scale, a.units = 0.025, "nm"
    for a, c in zip(s.axes_manager.signal_axes, d.center_px[::-1], strict=True):
        a.scale, a.units, a.offset = d.mrad_per_px, "mrad", -c * d.mrad_per_px
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 60.0)
    s.set_signal_type("atomsmith_4dstem")
    s = s.as_lazy()  # the same calls on a lazy signal
    field = s.electric_field()
    maps = [("|E| (V)", np.hypot(*np.moveaxis(np.asarray(field.data), -1, 0)), np.hypot(*np.moveaxis(d.truth.field_probe_V, -1, 0))),
            ("div E (V/Å²)", s.charge_density(field).data, d.truth.charge_probe_V_per_A2),
            ("potential (V·Å)", s.projected_potential(field).data, d.truth.potential_probe_V_A),
            ("virtual ADF 40+ mrad", np.asarray(s.virtual_image(40).data), None)]
    fig, ax = plt.subplots(2, 4, figsize=(15, 7.4))
    for k, (name, got, truth) in enumerate(maps):
        ax[0, k].imshow(got, cmap="magma")
        r = "" if truth is None else f"  r = {np.corrcoef(np.ravel(got), np.ravel(truth))[0, 1]:.3f}"
        ax[0, k].set_title(f"{name}{r}", fontsize=10)
        if truth is not None:
            ax[1, k].imshow(truth, cmap="magma")
            ax[1, k].set_title("twin's truth (probe-averaged)", fontsize=10)
        else:
            ax[1, k].imshow(np.log10(np.asarray(s.inav[10, 10].data) + 1), cmap="gray")
            ax[1, k].set_title("one pattern (log)", fontsize=10)
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle("atomsmith_4dstem (lazy) on the twin's MoS2 at 1e6 e/Å² (62,500 e per pattern): field, charge, potential, virtual ADF")
    fig.tight_layout()
    fig.savefig(OUT / "hs_fourd.png", dpi=95)
    plt.close("all")


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore")
    OUT.mkdir(exist_ok=True)
    atomic_image()
    movie()
    fourd()
    print(f"wrote {sorted(p.name for p in OUT.glob('hs_*.png'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
