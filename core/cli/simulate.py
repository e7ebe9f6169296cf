"""``atomsmith simulate {image,movie,4d,eels}``: write a twin dataset with its ground truth (HDF5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .options import (
    add_probe_options,
    check_pixel_size_resolves,
    default_pixel_size_nm,
    material_name,
    probe_from,
    ranged,
    species_count,
)

POS = ranged(0, None, lo_open=True)


def add_parser(sub) -> None:
    """Register ``simulate`` and its four kinds."""
    p = sub.add_parser("simulate", help="write a simulated dataset with ground truth (HDF5)",
                       description="Simulate STEM data with the digital twin and write it, with its "
                                   "ground truth, to an HDF5 file.")
    kinds = p.add_subparsers(dest="kind", required=True, parser_class=type(p))

    img = kinds.add_parser("image", help="HAADF image of a crystal with defects")
    _common_sample(img)
    img.add_argument("--shape", type=ranged(8, 16384, "px", integer=True), nargs=2, default=[256, 256],
                     metavar=("ROWS", "COLS"), help="frame size in pixels (default 256 256)")
    img.add_argument("--vacancies", type=ranged(0, 10000, integer=True), default=0, help="empty columns")
    img.add_argument("--substitute", type=species_count, action="append", default=[], metavar="EL[:N]",
                     help="replace the heaviest atom of N columns by EL (repeatable), e.g. Si:1, W:2")
    img.add_argument("--adatoms", type=species_count, action="append", default=[], metavar="EL[:N]",
                     help="add N adatoms of EL (repeatable)")
    img.add_argument("--partial", type=ranged(0, 10000, integer=True), default=0,
                     help="columns with one atom removed (e.g. single S vacancies in MoS2)")
    img.add_argument("--csv", type=Path, default=None, help="also write the truth table as CSV")
    img.add_argument("--png", type=Path, default=None, help="also write a preview PNG")
    _common_scan(img)
    img.set_defaults(func=run_image)

    mov = kinds.add_parser("movie", help="HAADF movie of hopping, switching defects")
    _common_sample(mov)
    mov.add_argument("--shape", type=ranged(8, 4096, "px", integer=True), nargs=2, default=[128, 128],
                     metavar=("ROWS", "COLS"))
    mov.add_argument("--frames", type=ranged(2, 100000, integer=True), default=50)
    mov.add_argument("--defects", type=ranged(0, 1000, integer=True), default=3, help="mobile defects")
    mov.add_argument("--diffusion-nm2-per-s", type=ranged(0, None, "nm^2/s"), nargs="+", default=[0.01],
                     help="diffusion coefficient, one value or one per defect class")
    mov.add_argument("--transition-matrix", type=str, default=None,
                     help="per-frame Markov matrix, rows separated by ';', e.g. '0.9,0.1;0.2,0.8'")
    mov.add_argument("--frame-time-s", type=POS, default=None, help="time between frames (default: scan time)")
    _common_scan(mov)
    mov.set_defaults(func=run_movie)

    four = kinds.add_parser("4d", help="4D-STEM dataset with field and charge ground truth")
    _common_sample(four, thick=True)
    four.add_argument("--scan", type=ranged(2, 1024, "px", integer=True), nargs=2, default=[48, 48],
                      metavar=("ROWS", "COLS"))
    four.add_argument("--step-nm", type=POS, default=None, help="scan step (default: pixel size)")
    four.add_argument("--detector-pixels", type=ranged(8, 512, integer=True), default=64)
    four.add_argument("--max-angle-mrad", type=POS, default=None, help="detector half-width (default: 2x semiangle)")
    four.add_argument("--dose", type=POS, default=1e5, help="electron dose in e/A^2 (> 0)")
    four.add_argument("--seed", type=int, default=0)
    four.add_argument("-o", "--output", type=Path, required=True, help="output .h5 file")
    add_probe_options(four)
    four.set_defaults(func=run_4d)

    eels = kinds.add_parser("eels", help="EELS spectrum image with elemental and L3/L2 ground truth")
    eels.add_argument("--shape", type=ranged(1, 2048, "px", integer=True), nargs=2, default=[48, 48],
                      metavar=("ROWS", "COLS"))
    eels.add_argument("--energy-start-ev", type=ranged(0, 5000, "eV"), default=400.0)
    eels.add_argument("--dispersion-ev", type=POS, default=0.5, help="eV per channel (> 0)")
    eels.add_argument("--channels", type=ranged(16, 16384, integer=True), default=800)
    eels.add_argument("--elements", nargs="+", default=["O", "Mn"], help="edges to include")
    eels.add_argument("--electrons-per-pixel", type=POS, default=1e8,
                      help="incident electrons per spectrum (sets the Poisson noise; default 1e8)")
    eels.add_argument("--seed", type=int, default=0)
    eels.add_argument("-o", "--output", type=Path, required=True, help="output .h5 file")
    eels.set_defaults(func=run_eels)


def _common_sample(p, thick: bool = True) -> None:
    p.add_argument("--material", type=material_name, default="graphene",
                   help="graphene, hBN, MoS2, WS2, MoSe2, WSe2, SrTiO3, BaTiO3, PbTiO3, LaMnO3, BiFeO3")
    p.add_argument("--pixel-size-nm", type=POS, default=None,
                   help="scan step in nm (default: ~8 px per column spacing)")
    p.add_argument("--rotation-deg", type=ranged(-360, 360, "deg"), default=0.0)
    if thick:
        p.add_argument("--thickness-nm", type=POS, default=None, help="thickness of bulk crystals")


def _common_scan(p) -> None:
    p.add_argument("--dose", type=POS, default=1e5, help="electron dose per frame in e/A^2 (> 0)")
    p.add_argument("--jitter-px", type=ranged(0, 50, "px"), default=0.0, help="scan-line jitter (std)")
    p.add_argument("--drift-nm-per-s", type=ranged(-1e3, 1e3, "nm/s"), nargs=2, default=[0.0, 0.0],
                   metavar=("VX", "VY"))
    p.add_argument("--dwell-us", type=POS, default=1.0, help="dwell per pixel in microseconds")
    p.add_argument("--background", type=ranged(0, 1), default=0.0, help="uniform scattered fraction")
    p.add_argument("--detector-noise", type=ranged(0, None, "counts"), default=0.0)
    p.add_argument("--z-exponent", type=ranged(0.5, 2.5), default=None,
                   help="use a Z^n contrast law instead of screened-Rutherford cross-sections")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, required=True, help="output .h5 file")
    add_probe_options(p)


def _pixel_size(args) -> float:
    px = args.pixel_size_nm or default_pixel_size_nm(args.material)
    check_pixel_size_resolves(args.material, px)
    return px


def _output(path: Path) -> Path:
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"-o/--output folder {path.parent} does not exist")
    return path


def _scan(args):
    from ..simulate.haadf import ScanSettings

    return ScanSettings(dwell_us=args.dwell_us, jitter_px=args.jitter_px, drift_nm_per_s=tuple(args.drift_nm_per_s))


def run_image(args) -> int:
    """Write one HAADF frame."""
    from .. import simulate as sim
    from ..simulate.io import save_dataset

    out = _output(args.output)
    px = _pixel_size(args)
    h, w = args.shape
    extent = (w * px * 10, h * px * 10)
    rng = np.random.default_rng(args.seed)
    s = sim.build_crystal(args.material, extent, rotation_deg=args.rotation_deg, thickness_nm=args.thickness_nm)
    for sym, n in args.substitute:
        s = sim.substitute(s, sym, n, seed=rng)
    if args.vacancies:
        s = sim.add_vacancies(s, args.vacancies, seed=rng)
    if args.partial:
        multi = [i for i, sl in enumerate(s.material.sublattices) if len(sl.atoms) > 1]
        if not multi:
            raise ValueError(f"--partial needs columns with more than one atom; {s.material.name} has none")
        s = sim.remove_atoms(s, args.partial, sublattice=s.material.sublattices[multi[-1]].name, seed=rng)
    for sym, n in args.adatoms:
        s = sim.add_adatoms(s, sym, n, seed=rng)
    img = sim.render_haadf(s, (h, w), px, probe=probe_from(args), dose_e_per_A2=args.dose,
                           background=args.background, detector_noise=args.detector_noise,
                           z_exponent=args.z_exponent, scan=_scan(args), seed=rng)
    save_dataset(out, "image", img.to_dict())
    if args.csv:
        img.truth.to_csv(args.csv)
    if args.png:
        from ..plot import _figure, show_image_with_truth

        fig, ax = _figure()
        show_image_with_truth(ax[0, 0], img.image, img.truth, px, f"{s.material.name}, {args.dose:g} e/Å²")
        fig.savefig(args.png, dpi=110)
    n_def = int(np.sum(img.truth.label != "lattice"))
    print(f"wrote {out}: {h}x{w} px at {px * 1000:.1f} pm/px, {len(img.truth)} columns ({n_def} defects)")
    return 0


def _parse_matrix(text: str | None):
    if text is None:
        return None
    try:
        return np.array([[float(v) for v in row.split(",")] for row in text.split(";")])
    except ValueError:
        raise ValueError(f"--transition-matrix {text!r}: rows of comma-separated numbers separated by ';'") from None


def run_movie(args) -> int:
    """Write a movie of hopping defects."""
    from ..simulate.io import save_dataset
    from ..simulate.movie import simulate_movie

    out = _output(args.output)
    px = _pixel_size(args)
    diff = args.diffusion_nm2_per_s[0] if len(args.diffusion_nm2_per_s) == 1 else np.array(args.diffusion_nm2_per_s)
    m = simulate_movie(args.material, n_frames=args.frames, shape_px=tuple(args.shape), pixel_size_nm=px,
                       n_defects=args.defects, transition_matrix=_parse_matrix(args.transition_matrix),
                       diffusion_nm2_per_s=diff, frame_time_s=args.frame_time_s, dose_e_per_A2=args.dose,
                       probe=probe_from(args), scan=_scan(args), rotation_deg=args.rotation_deg,
                       thickness_nm=args.thickness_nm, background=args.background, seed=args.seed)
    save_dataset(out, "movie", m.to_dict())
    print(f"wrote {out}: {args.frames} frames of {args.shape[0]}x{args.shape[1]} px, {args.defects} defects, "
          f"classes {', '.join(m.class_names)}")
    return 0


def run_4d(args) -> int:
    """Write a 4D-STEM dataset."""
    from .. import simulate as sim
    from ..simulate.fourd import simulate_4dstem
    from ..simulate.io import save_dataset

    out = _output(args.output)
    step = args.step_nm or args.pixel_size_nm or default_pixel_size_nm(args.material)
    check_pixel_size_resolves(args.material, step, "--step-nm")
    ny, nx = args.scan
    margin = 15.0  # the structure must reach half a diffraction window beyond the scan
    s = sim.build_crystal(args.material, (nx * step * 10, ny * step * 10), rotation_deg=args.rotation_deg,
                          thickness_nm=args.thickness_nm, margin_A=margin)
    d = simulate_4dstem(s, (ny, nx), step, probe=probe_from(args), detector_pixels=args.detector_pixels,
                        max_angle_mrad=args.max_angle_mrad, dose_e_per_A2=args.dose, seed=args.seed)
    save_dataset(out, "4d", d.to_dict())
    print(f"wrote {out}: {ny}x{nx} positions x {args.detector_pixels}x{args.detector_pixels} px, "
          f"{d.mrad_per_px:.2f} mrad/px, {d.electrons_per_position:.3g} e per position")
    return 0


def run_eels(args) -> int:
    """Write an EELS spectrum image."""
    from ..simulate.eels import simulate_eels_si
    from ..simulate.io import save_dataset

    out = _output(args.output)
    si = simulate_eels_si(tuple(args.shape), energy_start_eV=args.energy_start_ev, dispersion_eV=args.dispersion_ev,
                          n_channels=args.channels, elements=tuple(args.elements),
                          electrons_per_pixel=args.electrons_per_pixel, seed=args.seed)
    save_dataset(out, "eels", si.to_dict())
    e = si.energy_eV
    print(f"wrote {out}: {args.shape[0]}x{args.shape[1]} spectra, {e[0]:.1f}-{e[-1]:.1f} eV, "
          f"edges {', '.join(args.elements)}")
    return 0
