"""The ``atomsmith`` command: ``atomsmith demo``, ``atomsmith simulate {image,movie,4d,eels}``."""

from .main import main

__all__ = ["main"]
