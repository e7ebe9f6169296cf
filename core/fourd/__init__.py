"""4D-STEM analysis: centre of mass, virtual and segmented (DPC) detectors, electric field,
charge density, projected potential and strain from Bragg discs. Reductions work on numpy or dask arrays (chunk by chunk, lazily)."""

from .bragg import BraggLattice, BraggStrain, bragg_strain, find_bragg_lattice
from .com import center_of_mass, detector_mask, virtual_image
from .dpc import dpc_shift, segment_images, segment_weights
from .fields import charge_density, com_to_field, projected_potential

__all__ = ["BraggLattice", "BraggStrain", "bragg_strain", "find_bragg_lattice", "center_of_mass", "charge_density", "com_to_field", "detector_mask", "dpc_shift", "projected_potential",
           "segment_images", "segment_weights", "virtual_image"]
