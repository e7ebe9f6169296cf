"""The command line: datasets with truth, and one-line errors with exit code 2."""

import subprocess
import sys

import numpy as np
import pytest

from atomsmith.cli import main
from atomsmith.simulate.io import load_dataset


def test_simulate_image_writes_truth(tmp_path, capsys):
    out = tmp_path / "mos2.h5"
    rc = main(["simulate", "image", "--material", "MoS2", "--shape", "96", "96", "--substitute", "W:2",
               "--partial", "1", "--vacancies", "1", "--adatoms", "Mo:1", "--dose", "1e4", "-o", str(out),
               "--csv", str(tmp_path / "t.csv"), "--png", str(tmp_path / "p.png")])
    assert rc == 0
    d = load_dataset(out)
    assert d["atomsmith_kind"] == "image"
    assert d["image"].shape == (96, 96)
    labels = list(d["truth"]["label"])
    assert labels.count("substitution") == 2 and labels.count("adatom") == 1
    assert labels.count("partial") == 1 and labels.count("vacancy") == 1
    assert d["truth"]["x"].dtype.kind == "f"
    assert d["dose_e_per_A2"] == 1e4
    assert (tmp_path / "t.csv").read_text().startswith("x,y,x0,y0,species,Z,label")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_simulate_movie(tmp_path):
    out = tmp_path / "m.h5"
    assert main(["simulate", "movie", "--frames", "4", "--shape", "48", "48", "--defects", "1",
                 "--transition-matrix", "0.8,0.2;0.3,0.7", "-o", str(out)]) == 0
    d = load_dataset(out)
    assert d["frames"].shape == (4, 48, 48)
    np.testing.assert_allclose(d["transition_matrix"], [[0.8, 0.2], [0.3, 0.7]])
    assert len(d["truth"]) == 4


@pytest.mark.parametrize("argv,needle", [
    (["simulate", "image", "--dose", "-5"], "--dose: -5 is outside the allowed range (0, inf]"),
    (["simulate", "image", "--material", "unobtainium"], "unknown material 'unobtainium'; allowed: graphene"),
    (["simulate", "image", "--pixel-size-nm", "0.2"], "--pixel-size-nm 0.2 cannot resolve graphene"),
    (["simulate", "image", "--substitute", "Xx:1"], "unknown element symbol 'Xx'"),
    (["simulate", "movie", "--transition-matrix", "0.5,0.6;0.1,0.9"], "transition_matrix must be"),
    (["simulate", "4d", "--scan", "0", "4"], "--scan: 0 is outside the allowed range [2, 1024]"),
    (["simulate", "eels", "--dispersion-ev", "0"], "--dispersion-ev: 0 is outside the allowed range"),
])
def test_bad_input_one_line_exit_2(tmp_path, argv, needle):
    proc = subprocess.run([sys.executable, "-m", "atomsmith", *argv, "-o", str(tmp_path / "x.h5")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("atomsmith: error:") and needle in lines[0], lines[0]
    assert not (tmp_path / "x.h5").exists()


def test_missing_output_folder(tmp_path):
    assert main(["simulate", "image", "--shape", "16", "16", "-o", str(tmp_path / "no" / "x.h5")]) == 2


@pytest.mark.slow
def test_demo_writes_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    for name in ["haadf_gallery.png", "haadf_dose_series.png", "movie.png", "fourd.png", "eels.png",
                 "instrument.png", "report.md", "report.html"]:
        assert (out / name).stat().st_size > 500, name
    md = (out / "report.md").read_text()
    assert "![" in md and "4D-STEM" in md and "EELS" in md
    # the automated experiment: DKL measures a Si column within its 20 spectra (the explore extra is
    # part of the test install)
    assert (out / "explore.png").stat().st_size > 500
    row = next(line for line in md.splitlines() if line.startswith("| first spectrum on a Si column"))
    assert int(row.split("|")[2]) <= 20, row


def test_simulate_4d_and_eels(tmp_path):
    assert main(["simulate", "4d", "--material", "MoS2", "--scan", "8", "8", "--detector-pixels", "32",
                 "-o", str(tmp_path / "f.h5")]) == 0
    d = load_dataset(tmp_path / "f.h5")
    assert d["data"].shape == (8, 8, 32, 32) and d["truth"]["com_mrad"].shape == (8, 8, 2)
    assert main(["simulate", "eels", "--shape", "6", "5", "--channels", "300", "--elements", "O", "Mn",
                 "-o", str(tmp_path / "e.h5")]) == 0
    e = load_dataset(tmp_path / "e.h5")
    assert e["data"].shape == (6, 5, 300) and e["atomsmith_kind"] == "eels"


def test_find_atoms_with_defects(tmp_path, capsys):
    img = tmp_path / "mos2.h5"
    assert main(["simulate", "image", "--material", "MoS2", "--shape", "160", "160", "--substitute", "W:2",
                 "--vacancies", "2", "--dose", "1e5", "--seed", "4", "-o", str(img)]) == 0
    assert main(["find-atoms", str(img), "--defects", "--png", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "2 vacancies, 2 heavier" in out
    rows = (tmp_path / "mos2_defects.csv").read_text().splitlines()
    assert rows[0].startswith("kind,x,y") and len(rows) == 5
    truth = load_dataset(img)["truth"]
    vac = np.stack([truth["x"], truth["y"]], 1)[np.asarray(truth["label"]) == "vacancy"]
    found = np.array([[float(v) for v in r.split(",")[1:3]] for r in rows[1:] if r.startswith("vacancy")])
    assert np.hypot(*(found[:, None] - vac[None]).transpose(2, 0, 1)).min(axis=1).max() < 1.5
