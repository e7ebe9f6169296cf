"""atomsmith's signal types for HyperSpy 2.x (registered through ``hyperspy_extension.yaml`` and the
``hyperspy.extensions`` entry point ``atomsmith_hyperspy``).

- ``"atomsmith_atomic_image"``: :class:`~atomsmith_hyperspy.image.AtomicResolutionImage`
  (``find_atoms``, ``refine_atoms``, ``classify_columns``, ``local_crystallography``,
  ``polarization``, ``strain``, ``sliding_fft``);
- ``"atomsmith_movie"``: :class:`~atomsmith_hyperspy.image.AtomicResolutionMovie` (per-frame
  atom finding, ``column_counts``);
- ``"atomsmith_4dstem"``: :class:`~atomsmith_hyperspy.fourd.FourDSTEM` (a pyxem
  ``Diffraction2D``: ``center_of_mass``, ``electric_field``, ``charge_density``,
  ``projected_potential``, ``virtual_image``, ``segmented_dpc``, ``bragg_strain``);

- ``"atomsmith_eels"``: :class:`~atomsmith_hyperspy.eels.AtomsmithEELS` (an exspy
  ``EELSSpectrum``: ``edge_maps``, ``edge_map``, ``l3_l2_ratio``, ``fit_peak_maps``, ``denoise``);

each with a Lazy variant. The classes are imported by HyperSpy when a signal gets their type.
"""

from atomsmith import __version__

__all__ = ["__version__"]
