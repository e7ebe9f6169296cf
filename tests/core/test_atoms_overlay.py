import numpy as np
import pytest

from atomsmith.atoms.overlay import CLASS_COLOURS, atom_overlay_rgb, class_colour_hex


def test_overlay_rings_each_column_in_its_class_colour():
    img = np.zeros((64, 80))
    xy = np.array([[20.0, 30.0], [60.2, 10.7]])
    rgb = atom_overlay_rgb(img, xy, np.array([0, 1]), radius_px=4)
    assert rgb.shape == (64, 80, 3) and rgb.dtype == np.uint8
    # a ring pixel of each column, the centre left grey
    assert tuple(rgb[30, 24]) == CLASS_COLOURS[0] and tuple(rgb[11, 64]) == CLASS_COLOURS[1]
    assert tuple(rgb[30, 20]) == (0, 0, 0)
    assert class_colour_hex(1) == "#{:02x}{:02x}{:02x}".format(*CLASS_COLOURS[1])


def test_overlay_refuses_mismatched_labels():
    with pytest.raises(ValueError, match="label"):
        atom_overlay_rgb(np.zeros((10, 10)), np.zeros((3, 2)), np.zeros(2, int))
