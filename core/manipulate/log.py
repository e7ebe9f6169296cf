"""A manipulation run written to disk as it goes, and read back to resume it.

Layout of the directory: ``run.json`` (the run's settings and target, written first),
``steps.jsonl`` (one JSON line per step, fsync'ed: index, dopant and park positions, dwell,
electrons so far, note), ``frames/step_NNNNNN.npz`` (each step's frame, written before its line)
and ``result.json`` (how the run ended). A resumed run reads the steps back: the electrons
already spent count towards the budget, the dopant's last position is where it starts, and the
step numbers go on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..instrument.protocol import ScanFrame


def _fsync_append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _json_float(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


class ManipulationLog:
    """The directory of one run (created when missing)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        (self.directory / "frames").mkdir(parents=True, exist_ok=True)

    @property
    def steps_path(self) -> Path:
        return self.directory / "steps.jsonl"

    def write_run(self, settings: dict) -> None:
        """The run's settings (first run only: a resumed run keeps the original file)."""
        path = self.directory / "run.json"
        if not path.exists():
            path.write_text(json.dumps(settings, indent=1), encoding="utf-8")

    def append(self, step) -> None:
        """One :class:`~atomsmith.manipulate.ManipulationStep`: its frame first, then its line."""
        f = step.frame
        tmp = self.directory / "frames" / f".step_{step.index:06d}.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, image=np.asarray(f.image), pixel_size_nm=f.pixel_size_nm, origin_nm=np.asarray(f.origin_nm),
                     time_s=f.time_s, dwell_us=f.dwell_us)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / "frames" / f"step_{step.index:06d}.npz")
        _fsync_append(self.steps_path, json.dumps({
            "index": int(step.index), "dopant_nm": [_json_float(v) for v in step.dopant_nm], "hopped": bool(step.hopped),
            "park_nm": [_json_float(v) for v in step.park_nm], "dwell_ms": _json_float(step.dwell_ms),
            "electrons": float(step.electrons), "note": step.note}))

    def write_result(self, result) -> None:
        """How the run ended (reason, success, electrons, beam_safe)."""
        (self.directory / "result.json").write_text(json.dumps({
            "success": bool(result.success), "reason": result.reason, "electrons": float(result.electrons),
            "park_time_s": float(result.park_time_s), "n_hops": int(result.n_hops), "beam_safe": bool(result.beam_safe),
            "n_steps": len(result.steps)}, indent=1), encoding="utf-8")

    def read_steps(self) -> list:
        """The complete :class:`~atomsmith.manipulate.ManipulationStep` s written so far (a
        half-written last line is skipped)."""
        from .move import ManipulationStep

        out: list[ManipulationStep] = []
        if not self.steps_path.exists():
            return out
        for line in self.steps_path.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                break
            z = np.load(self.directory / "frames" / f"step_{int(d['index']):06d}.npz")
            frame = ScanFrame(image=z["image"], pixel_size_nm=float(z["pixel_size_nm"]),
                              origin_nm=tuple(float(v) for v in z["origin_nm"]), time_s=float(z["time_s"]),
                              dwell_us=float(z["dwell_us"]))

            def pair(v):
                return tuple(float("nan") if x is None else float(x) for x in v)

            out.append(ManipulationStep(int(d["index"]), frame, pair(d["dopant_nm"]), bool(d["hopped"]), pair(d["park_nm"]),
                                  float("nan") if d["dwell_ms"] is None else float(d["dwell_ms"]),
                                  float(d["electrons"]), str(d["note"])))
        return out
