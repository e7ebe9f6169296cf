"""atomsmith in Nion Swift: menu items, live atom finding, training on a frame, beam manipulation.

Swift imports this package (``nionswift_plugin`` is a namespace package: no ``__init__.py`` one
level up) and instantiates every ``*Extension`` class with an ``extension_id``. The plugin is a
thin layer: every algorithm lives in the core package ``atomsmith``.
"""

# Swift's loader instantiates the *Extension classes of this package's members and of its
# sub-modules' members: the class is reached through the ``extension`` sub-module only (importing
# it here as well would make two extensions and two of every menu item)
from . import extension  # noqa: F401


def run() -> None:
    """Called by Swift after the plug-in is loaded (nothing to do: the extension does it all)."""
