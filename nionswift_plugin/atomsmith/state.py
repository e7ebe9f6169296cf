"""What the plug-in remembers between menu actions: the finder live atom finding uses, where models go."""

from __future__ import annotations

import os
import pathlib
import threading
import typing

MENU_ID = "atomsmith_menu"
MENU_NAME = "Atomsmith"
MENU_BEFORE_ID = "window_menu"


class PluginState:
    """The model that "Find Atoms" and live atom finding use (``None``: the shipped generic U-Net)
    and where trained models are saved."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finder: typing.Any = None  # an atomsmith.atoms.AtomFinder, or None for "generic"
        self.model_path: pathlib.Path | None = None
        self.data_location: pathlib.Path | None = None

    @property
    def model(self) -> typing.Any:
        """What to pass as ``find_atoms(..., model=...)``."""
        with self.lock:
            return self.finder if self.finder is not None else "generic"

    def set_finder(self, finder: typing.Any, path: pathlib.Path | None) -> None:
        with self.lock:
            self.finder, self.model_path = finder, path

    def _dir(self, name: str) -> pathlib.Path:
        base = self.data_location
        if base is None or not str(base) or not pathlib.Path(base).is_absolute():
            base = pathlib.Path(os.environ.get("ATOMSMITH_DATA", pathlib.Path.home() / ".local" / "share"))
        path = pathlib.Path(base) / "atomsmith" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_run_dir(self, kind: str) -> pathlib.Path:
        """A new run folder's path, ``<data location>/atomsmith/<kind>/<date-time>`` (the
        folder itself is made by the run's log)."""
        import datetime

        return self._dir(kind) / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")

    def models_dir(self) -> pathlib.Path:
        """``<Swift data location>/atomsmith/models`` (created on demand); without a Swift data
        location, ``$ATOMSMITH_DATA/atomsmith/models`` or ``~/.local/share/atomsmith/models``."""
        return self._dir("models")

    def tables_dir(self) -> pathlib.Path:
        """Where Find Atoms saves its tables (CSV), beside :meth:`models_dir`."""
        return self._dir("tables")


#: the one state of this Swift process
STATE = PluginState()
