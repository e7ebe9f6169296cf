"""atomsmith in Nion Swift: menu items, live atom finding, training on a frame, beam manipulation.

Swift imports this package (``nionswift_plugin`` is a namespace package: no ``__init__.py`` one
level up) and instantiates every ``*Extension`` class with an ``extension_id``. The plugin is a
thin layer: every algorithm lives in the core package ``atomsmith``.
"""

from .extension import AtomsmithExtension  # noqa: F401  (found by Swift's plug-in loader)


def run() -> None:
    """Called by Swift after the plug-in is loaded (nothing to do: the extension does it all)."""
