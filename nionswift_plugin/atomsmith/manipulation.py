"""Beam manipulation from Swift: "Move Dopant" runs :func:`atomsmith.manipulate.move_atom` on the
instrument behind the selected scan image; "Stop Manipulation" aborts it.

The user puts two point graphics on the scan image: the first (or one labelled "dopant") on the
dopant, the second (or "target") on the target site. Their positions are read in the image's
calibrated coordinates (nm, Swift's convention: the offset is pixel 0's outer edge) and turned
into the instrument's frame by the instrument (``calibrated_to_instrument_nm``; the identity for
the bare twin). The loop runs in a background thread; every sub-scan it takes is added to the library as
it arrives (data group "Atomsmith manipulation <time>", with the step in its metadata), so an
abort or an error loses nothing, and the beam is blanked on every way out (``move_atom``'s
guarantee; the adapter parks the probe too).
"""

from __future__ import annotations

import datetime
import pathlib
import threading
import typing

import numpy as np

from .actions import _MenuItem, _StopItem, log, notify
from .state import STATE


def _graphic_positions_nm(data_item: typing.Any) -> tuple[np.ndarray, np.ndarray]:
    """(dopant, target) in nm from the data item's point graphics and calibration."""
    xdata = data_item.xdata
    if xdata is None or len(xdata.data_shape) != 2:
        raise ValueError("select the 2D scan image with the dopant and target marked")
    points = [g for g in data_item.graphics if g.graphic_type == "point-graphic"
              and g.get_property("graphic_id") != "atomsmith.atom"]
    labelled = {str(g.label or "").strip().lower(): g for g in points}
    if "dopant" in labelled and "target" in labelled:
        pair = [labelled["dopant"], labelled["target"]]
    elif len(points) == 2:
        pair = points
    else:
        raise ValueError(f"mark the dopant and the target with two point graphics (found {len(points)}; "
                         "with more, label them 'dopant' and 'target')")
    h, w = xdata.data_shape
    cy, cx = xdata.dimensional_calibrations[0], xdata.dimensional_calibrations[1]
    out = []
    for g in pair:
        fy, fx = g.position  # fractional (y, x): pixel centre (r, c) at ((r + .5) / H, (c + .5) / W)
        row, col = fy * h - 0.5, fx * w - 0.5
        # Swift's calibration offset is the outer edge of pixel 0: its centre is half a pixel in
        out.append(np.array([cx.offset + cx.scale * (col + 0.5), cy.offset + cy.scale * (row + 0.5)]))
    return out[0], out[1]


class MoveDopant(_MenuItem):
    """Move the marked dopant to the marked target site with the parked beam."""

    menu_item_name = "Move Dopant"

    def __init__(self, api: typing.Any, instrument_factory: typing.Callable[[typing.Any], typing.Any] | None = None,
                 **move_kwargs: typing.Any) -> None:
        super().__init__(api)
        #: builds the Instrument for a scan data item (default: the Nion adapter over Swift's scan device)
        self.instrument_factory = instrument_factory
        self.move_kwargs = move_kwargs
        #: passed to NionInstrument.for_data_item (e.g. field_nm, beam_current_pA)
        self.instrument_kwargs: dict[str, typing.Any] = {}
        self.abort = threading.Event()
        self.instrument: typing.Any = None  # the running run's instrument (Stop blanks it at once)
        self.thread: threading.Thread | None = None
        self.result: typing.Any = None
        self.error: str | None = None
        self.recorded: list[typing.Any] = []
        #: where runs are written as they go (default: a new folder per run under
        #: ``<data location>/atomsmith/manipulations``)
        self.log_dir: str | pathlib.Path | None = None
        #: the folder of the current or last run (what :meth:`resume` continues)
        self.run_dir: pathlib.Path | None = None

    def _instrument(self, data_item: typing.Any) -> typing.Any:
        from .instrument_adapter import instrument_for  # the adapter over Swift's devices

        return instrument_for(self.api, data_item, self.instrument_factory, self.instrument_kwargs)

    def resume(self, window: typing.Any, run_dir: str | pathlib.Path | None = None) -> None:
        """Continue the run written in ``run_dir`` (default: the last run) after a fault or a
        Stop: its steps and the electrons it spent count, the dopant starts from its last
        position there, nothing is repeated, and the new steps are written to the same folder."""
        run_dir = self.run_dir if run_dir is None else run_dir
        if run_dir is None:
            raise ValueError("no earlier run to resume: give its folder (run_dir=...)")
        self.execute(window, resume_dir=run_dir)

    def execute(self, window: typing.Any, resume_dir: str | pathlib.Path | None = None) -> None:
        if self.thread is not None and self.thread.is_alive():
            raise RuntimeError("a manipulation is running; stop it first (Atomsmith > Stop Manipulation)")
        di = self._target(window)
        dopant, target = _graphic_positions_nm(di)
        if resume_dir is not None:
            from atomsmith.manipulate.log import ManipulationLog

            if not pathlib.Path(resume_dir).is_dir() or not ManipulationLog(resume_dir).read_steps():
                raise FileNotFoundError(f"{resume_dir} holds no manipulation step to resume")
            run_dir, where = pathlib.Path(resume_dir), {"resume": resume_dir}
        else:
            run_dir = pathlib.Path(self.log_dir) if self.log_dir is not None else (
                STATE.new_run_dir("manipulations"))
            where = {"log": run_dir}
        instrument = self._instrument(di)
        self.instrument = instrument
        to_instrument = getattr(instrument, "calibrated_to_instrument_nm", None)
        if to_instrument is not None:  # Swift's scan coordinates -> the instrument's field
            dopant, target = to_instrument(dopant), to_instrument(target)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        group = self.api.library.get_or_create_data_group(f"Atomsmith manipulation {stamp}")
        self.abort.clear()
        self.result, self.error, self.recorded = None, None, []
        self.run_dir = run_dir

        def record(step: typing.Any) -> None:  # worker thread: hand the frame to the UI thread
            def add() -> None:
                from nion.data import Calibration, DataAndMetadata

                f = step.frame
                edge = np.asarray(f.origin_nm) - f.pixel_size_nm / 2.0  # Swift: offset = pixel 0's edge
                back = getattr(instrument, "instrument_to_calibrated_nm", None)
                edge = back(edge) if back is not None else edge
                cal = [Calibration.Calibration(float(edge[1]), f.pixel_size_nm, "nm"),
                       Calibration.Calibration(float(edge[0]), f.pixel_size_nm, "nm")]
                md = {"atomsmith": {"step": step.index, "note": step.note, "dopant_nm": list(step.dopant_nm),
                                    "park_nm": list(step.park_nm), "dwell_ms": step.dwell_ms,
                                    "electrons": step.electrons, "time_s": f.time_s}}
                xd = DataAndMetadata.new_data_and_metadata(np.asarray(f.image, np.float32),
                                                           dimensional_calibrations=cal, metadata=md)
                item = self.api.library.create_data_item_from_data_and_metadata(
                    xd, f"Manipulation step {step.index}: {step.note}")
                group.add_data_item(item)
                self.recorded.append(item)

            window.queue_task(add)

        def work() -> None:
            from atomsmith.instrument import BeamSafetyError
            from atomsmith.manipulate import ManipulationError, move_atom

            try:
                self.result = move_atom(instrument, dopant, target, abort=self.abort, on_step=record,
                                        **where, **self.move_kwargs)
                r = self.result
                notify("Move Dopant", f"{r.reason}: {r.n_hops} hops, {len(r.steps)} frames, "
                       f"{r.electrons:.2e} electrons, {r.park_time_s:.1f} s parked (beam blanked)")
            except BeamSafetyError as exc:  # the alarm: the beam may still be on the sample
                self.result, self.error = exc.result, f"BEAM NOT BLANKED: {exc}"
                log.error("atomsmith: Move Dopant: %s", self.error)
                notify("BEAM NOT BLANKED", f"{exc}")
            except ManipulationError as exc:
                self.result, self.error = exc.result, str(exc)
                log.exception("atomsmith: Move Dopant stopped")
                notify("Move Dopant stopped", f"{exc}; {len(exc.result.steps)} frames kept, beam blanked")
            except Exception as exc:  # noqa: BLE001  (refusals: out of field, bad input)
                self.error = f"{type(exc).__name__}: {exc}"
                notify("Move Dopant refused", self.error)
                try:
                    instrument.blank()
                except Exception:  # noqa: BLE001
                    pass

        self.thread = threading.Thread(target=work, name="atomsmith manipulation", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop now (any thread, the UI's included): the loop's abort and the instrument's abort
        event are set and the beam is blanked at once, not when the current park ends."""
        self.abort.set()
        ins = self.instrument
        if ins is None:
            return
        event = getattr(ins, "abort_event", None)
        if event is not None:
            event.set()
        try:
            ins.blank()
        except Exception as exc:  # noqa: BLE001  (the worker's own blank retries and raises the alarm)
            log.error("atomsmith: Stop could not blank the beam: %s", exc)
            notify("BEAM NOT BLANKED", f"Stop could not blank the beam: {exc}")


class StopManipulation(_StopItem):
    """Abort the running manipulation (the beam is blanked; the frames so far are kept)."""

    menu_item_name = "Stop Manipulation"

    def __init__(self, api: typing.Any, mover: MoveDopant) -> None:
        super().__init__(api, mover.stop)
        self.mover = mover


class ResumeManipulation(_MenuItem):
    """Continue the last Move Dopant run (after a fault or a Stop) on the selected scan image: its
    steps and electrons count and nothing is repeated (:meth:`MoveDopant.resume`)."""

    menu_item_name = "Resume Manipulation"

    def __init__(self, api: typing.Any, mover: MoveDopant) -> None:
        super().__init__(api)
        self.mover = mover

    def execute(self, window: typing.Any) -> None:
        self.mover.resume(window)
