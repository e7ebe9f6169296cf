"""Representation learning with torch.

- :class:`VAE`, :class:`ConditionalVAE`: patch autoencoders (the second conditioned on a label or
  vector).
- :class:`RotationalVAE` (rVAE): latent angle and translation applied to the coordinate grid of a
  spatial decoder; :class:`JointRotationalVAE` adds a discrete latent (classes without labels).
- :class:`Im2Spec` / :class:`Spec2Im`: image patch -> local spectrum and back;
  :func:`fit_im2spec` / :func:`fit_spec2im` train them on one image + spectrum-image pair with a
  held-out strip.
- :func:`rvae_on_positions`: (joint) rVAE on the patches around found columns.

All have ``fit``, ``encode`` / ``transform``, ``decode``, ``save`` / ``load`` (weights only),
progress bars, seeds, and run on the CPU by default (``device=None``: the GPU when present).
"""

from .atom_patches import PatchLatents, rvae_on_positions
from .im2spec import Im2Spec, Spec2Im, r2_score
from .image_spectrum import ImageSpectrumFit, default_patch_px, fit_im2spec, fit_spec2im
from .jrvae import JointRotationalVAE
from .rvae import RotationalVAE
from .vae import VAE, ConditionalVAE

__all__ = ["VAE", "ConditionalVAE", "ImageSpectrumFit", "Im2Spec", "JointRotationalVAE", "PatchLatents",
           "RotationalVAE", "Spec2Im", "default_patch_px", "fit_im2spec", "fit_spec2im", "r2_score",
           "rvae_on_positions"]
