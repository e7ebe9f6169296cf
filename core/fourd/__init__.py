"""4D-STEM analysis: centre of mass, virtual detectors, electric field, charge density and
projected potential. Reductions work on numpy or dask arrays (chunk by chunk, lazily)."""

from .com import center_of_mass, detector_mask, virtual_image
from .fields import charge_density, com_to_field, projected_potential

__all__ = ["center_of_mass", "charge_density", "com_to_field", "detector_mask", "projected_potential",
           "virtual_image"]
