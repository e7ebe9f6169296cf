"""An on-disk record of an automated experiment, written point by point as measurements arrive.

Layout of a log directory::

    survey.npz            survey image, calibration, candidate positions and features
    measurements.jsonl    one JSON line per measurement (appended, flushed and fsync'ed)
    spectra/000012.npz    the raw spectrum of measurement 12 (written before its line)

Each file is written to a temporary name and renamed, and the JSON line is appended only after
its spectrum file exists, so a run killed at any moment leaves a consistent log: every line has
its spectrum; a half-written last line (power cut) is ignored on reading.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Measurement:
    """One measurement of an automated experiment.

    Attributes:
        number: running number (0, 1, ...) in the order taken.
        index: candidate index.
        xy_nm: probe position (x, y), nm.
        value: criterion value (NaN if the criterion failed).
        time_s: instrument clock at the start of the exposure, s.
        wall_time: Unix time when it was stored, s.
        exposure_ms: exposure, ms.
    """

    number: int
    index: int
    xy_nm: tuple[float, float]
    value: float
    time_s: float
    wall_time: float
    exposure_ms: float

    def to_dict(self) -> dict:
        """Fields as a dict (JSON-ready)."""
        d = asdict(self)
        d["xy_nm"] = [float(v) for v in self.xy_nm]
        d["value"] = None if not np.isfinite(self.value) else float(self.value)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Measurement:
        """Inverse of :meth:`to_dict`."""
        v = d.get("value")
        return cls(number=int(d["number"]), index=int(d["index"]), xy_nm=tuple(float(x) for x in d["xy_nm"]),
                   value=float("nan") if v is None else float(v), time_s=float(d["time_s"]),
                   wall_time=float(d["wall_time"]), exposure_ms=float(d["exposure_ms"]))


def _atomic_savez(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MeasurementLog:
    """Append-only record of one experiment in ``directory`` (created if missing).

    Args:
        directory: where the log lives.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "spectra").mkdir(exist_ok=True)
        self._count: int | None = None  # complete measurements; read from disk once, then kept
        self._end = 0  # byte offset after the last complete line (set with _count)

    def __len__(self) -> int:
        """Number of complete measurements (the file is read once; appends keep the count)."""
        if self._count is None:
            self.read()
        return int(self._count)

    @property
    def survey_path(self) -> Path:
        return self.directory / "survey.npz"

    @property
    def lines_path(self) -> Path:
        return self.directory / "measurements.jsonl"

    def has_survey(self) -> bool:
        """True when a survey was stored."""
        return self.survey_path.exists()

    def write_survey(self, *, image: np.ndarray, pixel_size_nm: float, origin_nm: tuple[float, float],
                     time_s: float, candidates_xy_nm: np.ndarray, features: np.ndarray,
                     settings: dict | None = None) -> None:
        """Store the survey frame, candidate positions (nm) and features (atomic write)."""
        _atomic_savez(self.survey_path, image=np.asarray(image), pixel_size_nm=float(pixel_size_nm),
                      origin_nm=np.asarray(origin_nm, float), time_s=float(time_s),
                      candidates_xy_nm=np.asarray(candidates_xy_nm, float), features=np.asarray(features),
                      settings=json.dumps(settings or {}))

    def read_survey(self) -> dict:
        """The stored survey as a dict of arrays (``settings`` parsed back into a dict)."""
        if not self.has_survey():
            raise FileNotFoundError(f"no survey in {self.directory}")
        with np.load(self.survey_path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
        out["settings"] = json.loads(str(out["settings"]))
        out["pixel_size_nm"] = float(out["pixel_size_nm"])
        out["time_s"] = float(out["time_s"])
        return out

    def append(self, *, index: int, xy_nm: tuple[float, float], value: float, time_s: float,
               exposure_ms: float, energy_eV: np.ndarray | None = None,
               counts: np.ndarray | None = None) -> Measurement:
        """Store one measurement now: the spectrum file first, then its JSON line (fsync'ed)."""
        number = len(self)
        m = Measurement(number=number, index=int(index), xy_nm=(float(xy_nm[0]), float(xy_nm[1])),
                        value=float(value), time_s=float(time_s), wall_time=time.time(),
                        exposure_ms=float(exposure_ms))
        if counts is not None:
            _atomic_savez(self.directory / "spectra" / f"{number:06d}.npz", counts=np.asarray(counts),
                          energy_eV=np.asarray(energy_eV if energy_eV is not None else []))
        line = (json.dumps(m.to_dict()) + "\n").encode("utf-8")
        with open(self.lines_path, "ab") as f:
            if f.tell() > self._end:  # drop a half-written last line, or the new one would join it
                f.truncate(self._end)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._count, self._end = number + 1, self._end + len(line)
        return m

    def read(self) -> list[Measurement]:
        """All complete measurements in order (a truncated last line is skipped)."""
        out: list[Measurement] = []
        end = 0
        if self.lines_path.exists():
            with open(self.lines_path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # half-written
                    try:
                        out.append(Measurement.from_dict(json.loads(line)))
                    except (ValueError, KeyError):
                        break
                    end += len(line)
        self._count, self._end = len(out), end
        return out

    def spectrum(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """(energy_eV, counts) of measurement ``number``."""
        with np.load(self.directory / "spectra" / f"{int(number):06d}.npz", allow_pickle=False) as f:
            return f["energy_eV"], f["counts"]
