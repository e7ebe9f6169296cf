"""The "Atomsmith" menu: Find Atoms, Live Atom Finding, Train on This Frame, Stop Training.

Every action runs its work off the UI thread and posts the result back with the window's
``queue_task`` (the window the menu item was chosen in: ``api.queue_task`` goes to Swift's first
document controller, which need not be that window);
errors never escape into Swift: they become a notification (and a log line).
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
import time
import typing

from . import live
from .graphics import draw_atom_graphics, image_of, pixel_size_nm, swift_rgb
from .state import MENU_BEFORE_ID, MENU_ID, MENU_NAME, STATE

log = logging.getLogger("atomsmith")


def notify(title: str, text: str) -> None:
    """Show a message in Swift's notification area (and the log)."""
    log.info("%s: %s", title, text)
    try:
        from nion.swift.model import Notification

        Notification.notify(Notification.Notification("atomsmith", "Atomsmith", title, text))
    except Exception:  # noqa: BLE001  (no notification area: the log has it)
        pass


def report_failure(name: str, exc: BaseException, detail: str = "") -> str:
    """In an ``except`` block: log ``exc`` with its traceback and notify "<name> failed" with
    ``detail`` and the error; returns the error as "<Type>: <message>"."""
    error = f"{type(exc).__name__}: {exc}"
    log.exception("atomsmith: %s failed", name)
    notify(f"{name} failed", detail + error)
    return error


def open_task(window: typing.Any, title: str) -> typing.Any:
    """A progress entry in the window's task panel (entered), or None when there is no task panel."""
    try:
        task = window.create_task_context_manager(title, "table")
        task.__enter__()
    except Exception:  # noqa: BLE001  (no task panel: the notification and log remain)
        return None
    return task


def close_task(window: typing.Any, task: typing.Any) -> None:
    """Any thread: end a task of :func:`open_task` (None: nothing) on the window's UI thread."""
    if task is not None:
        window.queue_task(lambda: task.__exit__(None, None, None))


def _slug(text: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text or "image").strip("-")[:40] or "image"


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


class _MenuItem:
    menu_id = MENU_ID
    menu_name = MENU_NAME
    menu_before_id = MENU_BEFORE_ID
    menu_item_name = ""

    def __init__(self, api: typing.Any) -> None:
        self.api = api

    def menu_item_execute(self, window: typing.Any) -> None:
        try:
            self.execute(window)
        except Exception as exc:  # noqa: BLE001  (never into Swift)
            report_failure(self.menu_item_name, exc)

    def execute(self, window: typing.Any) -> None:
        raise NotImplementedError

    @staticmethod
    def _target(window: typing.Any) -> typing.Any:
        di = window.target_data_item
        if di is None:
            raise ValueError("select an image first (click its display panel)")
        return di


class _StopItem(_MenuItem):
    """A menu item that stops a background run by calling ``stop()``; with ``is_running``, only
    when one runs (else ``idle_text`` is shown as a notification)."""

    idle_text = ""

    def __init__(self, api: typing.Any, stop: typing.Callable[[], typing.Any],
                 is_running: typing.Callable[[], bool] | None = None) -> None:
        super().__init__(api)
        self._stop, self._is_running = stop, is_running

    def execute(self, window: typing.Any) -> None:
        if self._is_running is not None and not self._is_running():
            notify(self.menu_item_name, self.idle_text)
            return
        self._stop()


class FindAtoms(_MenuItem):
    """Mark the columns of the selected image as point graphics coloured by class."""

    menu_item_name = "Find Atoms"
    #: at most this many columns are marked as graphics (see graphics.py for their cost in
    #: Swift); larger tables mark their minority classes and show all in an overlay image
    max_graphics = 150

    def __init__(self, api: typing.Any) -> None:
        super().__init__(api)
        self.commit_s = float("nan")
        self.last_thread: threading.Thread | None = None
        self.last_table: typing.Any = None
        self.last_overlay: typing.Any = None
        self.last_message: str | None = None  # the count (and any doubt) of the last result, as notified

    def execute(self, window: typing.Any) -> None:
        di = self._target(window)
        xdata = di.xdata
        img = image_of(xdata)
        px = pixel_size_nm(xdata)

        def work() -> None:
            try:
                table = live.find_columns(img, px)
            except Exception as exc:  # noqa: BLE001
                notify("Find Atoms failed", f"{type(exc).__name__}: {exc}")
                return

            def commit() -> None:
                try:
                    _commit()
                except Exception as exc:  # noqa: BLE001  (never into Swift)
                    report_failure("Find Atoms", exc)

            def _commit() -> None:
                t0 = time.perf_counter()
                dm = self.api.library._document_model
                display_item = dm.get_display_item_for_data_item(di._data_item)
                if display_item is None:
                    return
                n = draw_atom_graphics(dm, display_item, table, img.shape, max_graphics=self.max_graphics)
                overlay = None
                if n < len(table):  # all columns, ringed by class, in a data item of their own
                    from nion.data import DataAndMetadata

                    from atomsmith.atoms.overlay import atom_overlay_rgb

                    xd = DataAndMetadata.new_data_and_metadata(
                        swift_rgb(atom_overlay_rgb(img, table.xy, table.label)),
                        dimensional_calibrations=list(di.xdata.dimensional_calibrations)[:2])
                    overlay = self.api.library.create_data_item_from_data_and_metadata(
                        xd, f"Atoms of {di.title} ({len(table)} columns)")
                    self.last_overlay = overlay
                counts = ", ".join(f"{int((table.label == k).sum())} {name}"
                                   for k, name in enumerate(table.class_names))
                csv = table.to_csv(STATE.tables_dir() / f"{_slug(di.title)}-{_stamp()}.csv")
                md = dict(di.metadata)
                quality = live.quality_dict(table)
                md["atomsmith"] = {"n_columns": len(table), "class_counts": counts, "pixel_size_nm": px,
                                   "n_graphics": n, "table_csv": str(csv), "quality": quality}
                di.set_metadata(md)
                self.last_table = table
                more = "" if n == len(table) else (f"; {n} minority-class columns marked, all shown in "
                                                   f"'{overlay.title}' and saved to {csv}")
                doubt = ""
                if quality is not None and not quality["ok"]:  # the result never hides doubt
                    doubt = "; doubtful: " + "; ".join(quality["problems"])
                notify("Find Atoms", f"{len(table)} columns ({counts}) in {di.title}{more}{doubt}")
                self.last_message = f"{len(table)} columns{doubt}"
                self.commit_s = time.perf_counter() - t0

            window.queue_task(commit)

        self.last_thread = threading.Thread(target=work, name="atomsmith find atoms", daemon=True)
        self.last_thread.start()


class LiveAtomFinding(_MenuItem):
    """Attach live atom finding to the selected (live) data item."""

    menu_item_name = "Live Atom Finding"

    def execute(self, window: typing.Any) -> None:
        di = self._target(window)
        if di.xdata is None or len(di.xdata.data_shape) != 2:
            raise ValueError("live atom finding needs a 2D image data item (a scan channel)")
        self.computation = live.attach(self.api, di)
        notify("Live Atom Finding", f"attached to {di.title}: every completed frame is searched")


class TrainOnFrame(_MenuItem):
    """Train the atom finder on the selected frame (the seed workflow) in the background;
    live atom finding and Find Atoms then use it. Saved in Swift's data location."""

    menu_item_name = "Train on This Frame"
    steps = 300

    def __init__(self, api: typing.Any) -> None:
        super().__init__(api)
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.progress: tuple[int, int] = (0, 0)
        self.result_path = None
        self.error: str | None = None

    def execute(self, window: typing.Any) -> None:
        if self.thread is not None and self.thread.is_alive():
            raise RuntimeError("a training run is going on; stop it first (Atomsmith > Stop Training)")
        di = self._target(window)
        img = image_of(di.xdata)
        title = _slug(di.title)
        self.stop_event.clear()
        self.progress, self.result_path, self.error = (0, self.steps), None, None
        task = open_task(window, f"Atomsmith: train on {di.title}")

        def report() -> None:
            if task is not None:
                done, total = self.progress
                task.update_progress(f"training step {done} of {total}", (done, total))

        def tick() -> bool:
            self.progress = (self.progress[0] + 1, self.steps)
            if self.progress[0] % 10 == 0:
                window.queue_task(report)
            return self.stop_event.is_set()

        def work() -> None:
            from atomsmith.atoms.finder import AtomFinder

            try:
                t0 = time.perf_counter()
                finder = AtomFinder.from_single_frame(img, steps=self.steps, progress=False, should_stop=tick)
                path = finder.save(STATE.models_dir() / f"{title}-{_stamp()}.pt")
                STATE.set_finder(finder, path)
                self.result_path = path
                stopped = " (stopped early)" if self.stop_event.is_set() else ""
                notify("Train on This Frame", f"model trained in {time.perf_counter() - t0:.0f} s{stopped}, "
                       f"saved to {path}; Find Atoms and live atom finding now use it")
            except Exception as exc:  # noqa: BLE001
                self.error = f"{type(exc).__name__}: {exc}"
                notify("Train on This Frame failed", self.error)
            finally:
                close_task(window, task)

        self.thread = threading.Thread(target=work, name="atomsmith training", daemon=True)
        self.thread.start()


class StopTraining(_StopItem):
    """Stop the training run (the model keeps what it has learnt and is used)."""

    menu_item_name = "Stop Training"

    def __init__(self, api: typing.Any, trainer: TrainOnFrame) -> None:
        super().__init__(api, trainer.stop_event.set)
        self.trainer = trainer


class UseGenericModel(_MenuItem):
    """Go back to the shipped generic U-Net."""

    menu_item_name = "Use Generic Model"

    def execute(self, window: typing.Any) -> None:
        STATE.set_finder(None, None)
        notify("Atomsmith", "Find Atoms and live atom finding use the generic model")


class StartDigitalTwin(_MenuItem):
    """Register atomsmith's twin as a Swift instrument (graphene with a Si dopant): a scan device
    "Atomsmith Twin Scan", its STEM controller, an EELS and a diffraction camera, beside usim or a
    microscope."""

    menu_item_name = "Start Digital Twin"

    def __init__(self, api: typing.Any) -> None:
        super().__init__(api)
        self.handles: typing.Any = None

    def execute(self, window: typing.Any) -> None:
        from .swift_twin import start_twin

        if self.handles is not None and not self.handles.stopped:
            notify("Digital twin", f"already running as scan device '{self.handles.scan_id}'")
            return
        self.handles = start_twin(with_eels=True, with_ronchigram=True)
        twin = self.handles.twin
        w, h = twin.field_nm
        notify("Digital twin", f"scan device '{self.handles.scan_id}' images the twin: "
               f"{len(twin.sample.xy_A)} columns over {w:g} x {h:g} nm, {twin.beam_current_pA:g} pA; "
               "parking the probe on a neighbour of the Si makes it hop")

    def close(self) -> None:
        """Stop the twin (Swift closes the extension)."""
        from .swift_twin import stop_twin

        if self.handles is not None:
            stop_twin(self.handles)
            self.handles = None
