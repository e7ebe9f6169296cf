"""The "Atomsmith Automated Experiment" panel: choose the survey image, the criterion and the
budget, start, watch, stop and resume a run of :class:`.automated_experiment.AutomatedExperiment`.

Atomsmith > Automated Experiment shows the panel (also in Window > Atomsmith Automated
Experiment). Its fields:

* **Survey**: a 2D image calibrated in nm from the library (``Selected`` takes the image of the
  selected display panel; ``Refresh`` re-reads the library);
* **Criterion**: ``Si`` (the Si edge integral), ``N/C`` (an edge ratio) or ``280-300`` (counts in a
  window, eV), with the edge **width** in eV;
* **Budget** (spectra, seeds included; optionally a **time** limit in s and a **peak dose** in
  e/Å² on the instrument's dose map: the run stops at whichever comes first), **Candidates** (``pixels`` every ``stride`` pixels, or
  ``atoms``: the columns found in the survey), **Model** (``dkl``, ``gp``), **Acquisition**
  (``ucb``, ``ei``, ``ue``), **Seeds** (random points first) and **Exposure** (ms);
* **Run folder**: where the run is stored; filled in when a run starts; **Resume** continues the
  run stored there (same survey; stored points count towards the budget).

While a run goes on the panel shows its progress (points / budget), the best value and where it
is, and the run's state; the measured points and the predicted map are drawn by the runner.
**Stop** stops before the next beam action (beam blanked, probe parked, measurements kept).
"""

from __future__ import annotations

import pathlib
import typing

from .actions import log
from .automated_experiment import PREDICTED_TITLE

if typing.TYPE_CHECKING:
    from .automated_experiment import AutomatedExperiment

PANEL_ID = "atomsmith-automated-experiment-panel"
PANEL_NAME = "Atomsmith Automated Experiment"


def _is_survey(data_item: typing.Any) -> bool:
    """A 2D, real image that is not one of atomsmith's predicted maps."""
    try:
        xd = data_item.xdata
        return (xd is not None and len(xd.data_shape) == 2 and not xd.is_data_complex_type
                and not str(data_item.title or "").startswith(PREDICTED_TITLE))
    except Exception:  # noqa: BLE001
        return False


def _parse(text: str | None, kind: typing.Callable[[str], typing.Any], name: str, lo: float) -> typing.Any:
    try:
        v = kind(str(text).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    if not v >= lo:
        raise ValueError(f"{name} must be >= {lo:g}, not {v}")
    return v


class AutomatedExperimentView:
    """One window's panel content (widgets and their callbacks) over the shared runner."""

    def __init__(self, api: typing.Any, runner: AutomatedExperiment, ui: typing.Any, window: typing.Any) -> None:
        self.api, self.runner, self.window = api, runner, window
        col = ui.create_column_widget()

        def row(*widgets: typing.Any) -> None:
            r = ui.create_row_widget()
            for w in widgets:
                r.add_spacing(4)
                r.add(w)
            r.add_stretch()
            col.add(r)

        self.survey_combo = ui.create_combo_box_widget([], lambda d: str(d.title or "untitled"))
        self.selected_button = ui.create_push_button_widget("Selected")
        self.refresh_button = ui.create_push_button_widget("Refresh")
        row(ui.create_label_widget("Survey"), self.survey_combo, self.selected_button, self.refresh_button)
        self.criterion_edit = ui.create_line_edit_widget("Si")
        self.width_edit = ui.create_line_edit_widget("40")
        row(ui.create_label_widget("Criterion"), self.criterion_edit, ui.create_label_widget("width (eV)"),
            self.width_edit)
        row(ui.create_label_widget('e.g. "Si" (edge), "N/C" (ratio), "280-300" (eV window)'))
        self.budget_edit = ui.create_line_edit_widget("50")
        self.time_edit = ui.create_line_edit_widget("")
        self.dose_edit = ui.create_line_edit_widget("")
        row(ui.create_label_widget("Budget (spectra)"), self.budget_edit, ui.create_label_widget("time (s)"),
            self.time_edit, ui.create_label_widget("peak dose (e/Å²)"), self.dose_edit)
        self.candidates_combo = ui.create_combo_box_widget(["pixels", "atoms"])
        self.stride_edit = ui.create_line_edit_widget("1")
        row(ui.create_label_widget("Candidates"), self.candidates_combo, ui.create_label_widget("stride (px)"),
            self.stride_edit)
        self.model_combo = ui.create_combo_box_widget(["dkl", "gp"])
        self.acquisition_combo = ui.create_combo_box_widget(["ucb", "ei", "ue"])
        self.seeds_edit = ui.create_line_edit_widget("5")
        self.exposure_edit = ui.create_line_edit_widget("10")
        row(ui.create_label_widget("Model"), self.model_combo, ui.create_label_widget("Acquisition"),
            self.acquisition_combo)
        row(ui.create_label_widget("Seeds"), self.seeds_edit, ui.create_label_widget("Exposure (ms)"),
            self.exposure_edit)
        self.run_dir_edit = ui.create_line_edit_widget("")
        row(ui.create_label_widget("Run folder"), self.run_dir_edit)
        self.start_button = ui.create_push_button_widget("Start")
        self.stop_button = ui.create_push_button_widget("Stop")
        self.resume_button = ui.create_push_button_widget("Resume")
        row(self.start_button, self.stop_button, self.resume_button)
        self.progress = ui.create_progress_bar_widget(0, 0, 50)
        row(self.progress)
        self.status_label = ui.create_label_widget("idle")
        row(self.status_label)
        col.add_stretch()
        self.widget = col

        self.selected_button.on_clicked = self.use_selected
        self.refresh_button.on_clicked = self.refresh_surveys
        self.start_button.on_clicked = self.start
        self.stop_button.on_clicked = self.stop
        self.resume_button.on_clicked = self.resume
        self.refresh_surveys()
        self.use_selected()
        runner.listeners.append(self.update)
        self.update(runner)

    # ----------------------------------------------------------------- survey
    def refresh_surveys(self) -> None:
        """Re-read the library's 2D images into the survey list (the current choice is kept)."""
        current = self.survey
        items = [d for d in self.api.library.data_items if _is_survey(d)]
        self.survey_combo.items = items
        self._select_survey(current if current is not None else (items[-1] if items else None))

    def use_selected(self) -> None:
        """The image of the window's selected display panel becomes the survey."""
        di = self.window.target_data_item
        if di is not None and _is_survey(di):
            if not any(d.uuid == di.uuid for d in self.survey_combo.items):
                self.survey_combo.items = list(self.survey_combo.items) + [di]
            self._select_survey(di)

    def _select_survey(self, di: typing.Any) -> None:
        if di is None:
            return
        for i, d in enumerate(self.survey_combo.items):
            if d.uuid == di.uuid:
                self.survey_combo.current_index = i
                return

    @property
    def survey(self) -> typing.Any:
        """The chosen survey data item (None when the library has no 2D image)."""
        try:
            return self.survey_combo.current_item
        except Exception:  # noqa: BLE001
            return None

    # ----------------------------------------------------------------- settings and control
    def apply_settings(self) -> None:
        """Copy the fields into the runner.

        Raises:
            ValueError: a field is not a valid number or criterion, naming the field.
        """
        from atomsmith.explore.criteria import criterion_from

        r = self.runner
        width = _parse(self.width_edit.text, float, "the edge width (eV)", 1e-6)
        text = str(self.criterion_edit.text or "").strip()
        try:
            criterion_from(text, width)  # a bad text is refused here, before anything runs
        except ValueError as exc:
            raise ValueError(f"the criterion {text!r}: {exc}") from None
        r.criterion, r.edge_width_eV = text, width
        from atomsmith.explore import Budget

        points = _parse(self.budget_edit.text, int, "the budget (spectra)", 2)
        time_s = self._optional(self.time_edit, "the time limit (s)")
        dose = self._optional(self.dose_edit, "the peak dose (e/Å²)")
        r.budget = points if time_s is None and dose is None else Budget(points=points, time_s=time_s,
                                                                           dose_e_per_A2=dose)
        r.candidates = str(self.candidates_combo.current_item or "pixels")
        r.learner_kwargs = {
            "model": str(self.model_combo.current_item or "dkl"),
            "acquisition": str(self.acquisition_combo.current_item or "ucb"),
            "n_seed": _parse(self.seeds_edit.text, int, "the number of seed points", 1),
            "exposure_ms": _parse(self.exposure_edit.text, float, "the exposure (ms)", 1e-6),
            "stride_px": _parse(self.stride_edit.text, int, "the stride (px)", 1),
        }

    @staticmethod
    def _optional(field: typing.Any, name: str) -> float | None:
        """A positive number from ``field``, or None when it is blank."""
        text = str(field.text or "").strip()
        return None if not text else _parse(text, float, name, 1e-9)

    def _run(self, resume_dir: str | None) -> bool:
        if self.runner.running:
            self.status_label.text = "a run is going on: stop it first"
            return False
        survey = self.survey
        if survey is None:
            self.status_label.text = "choose a survey image (a 2D image calibrated in nm)"
            return False
        try:
            self.apply_settings()
        except ValueError as exc:
            self.status_label.text = f"refused: {exc}"
            return False
        ok = self.runner.start(self.window, survey, resume_dir=resume_dir)
        if ok:
            self.run_dir_edit.text = str(self.runner.run_dir)
        self.update(self.runner)
        return ok

    def start(self) -> bool:
        """Start a new run with the panel's settings (False, with the reason shown, if refused)."""
        return self._run(None)

    def resume(self) -> bool:
        """Continue the run stored in the Run folder (False, with the reason shown, if refused)."""
        folder = str(self.run_dir_edit.text or "").strip()
        if not folder:
            self.status_label.text = "give the folder of the run to resume"
            return False
        return self._run(str(pathlib.Path(folder).expanduser()))

    def stop(self) -> None:
        """Stop the run before its next beam action (beam blanked, measurements kept)."""
        if self.runner.running:
            self.runner.stop()
            self.status_label.text = "stopping ..."

    def update(self, runner: AutomatedExperiment) -> None:
        """Show the runner's state (called on the UI thread after every point and at the end)."""
        total = runner.budget_points or max(runner.n_measured, 1)
        self.progress.maximum = int(total)
        self.progress.value = int(min(runner.n_measured, total))
        text = f"{runner.state}: {runner.n_measured}/{total} spectra"
        if runner.best is not None:
            v, (x, y) = runner.best
            text += f"; best {v:.4g} at ({x:.3f}, {y:.3f}) nm"
        if runner.state == "stopped":
            text += "; beam blanked, points kept (Resume continues)"
        elif runner.state == "finished" and runner.result is not None:
            text += f" ({runner.result.stop_reason}); beam blanked"
        if runner.error:
            text += f"; {runner.error}"
        self.status_label.text = text
        if runner.run_dir is not None and not self.run_dir_edit.text:
            self.run_dir_edit.text = str(runner.run_dir)

    def close(self) -> None:
        try:
            self.runner.listeners.remove(self.update)
        except ValueError:
            pass


class AutomatedExperimentPanel:
    """The panel's delegate for ``api.create_panel``: one :class:`AutomatedExperimentView` per window."""

    panel_id = PANEL_ID
    panel_name = PANEL_NAME
    panel_positions = ["left", "right"]
    panel_position = "right"

    def __init__(self, api: typing.Any, runner: AutomatedExperiment) -> None:
        self.api, self.runner = api, runner
        self.views: list[AutomatedExperimentView] = []

    def create_panel_widget(self, ui: typing.Any, document_window: typing.Any) -> typing.Any:
        view = AutomatedExperimentView(self.api, self.runner, ui, document_window)
        self.views.append(view)
        return view.widget

    def view_for(self, window: typing.Any) -> AutomatedExperimentView | None:
        """The panel content shown in ``window`` (a Facade document window), if any."""
        dc = getattr(window, "_document_controller", None)
        for v in self.views:
            if getattr(v.window, "_document_controller", None) is dc:
                return v
        return None

    def show(self, window: typing.Any) -> bool:
        """Show the panel in ``window`` (created there if the window was opened before the plug-in)."""
        dc = window._document_controller
        panel = dc.find_dock_panel(PANEL_ID)
        if panel is None:
            panel = dc.workspace_controller.create_panel(dc, PANEL_ID, PANEL_NAME, self.panel_positions,
                                                         self.panel_position, {})
        if panel is None:
            return False
        panel.show()
        view = self.view_for(window)
        if view is not None:
            view.refresh_surveys()
            view.use_selected()
        return True

    def close(self) -> None:
        for v in self.views:
            v.close()
        self.views = []


def register(api: typing.Any, runner: AutomatedExperiment) -> tuple[AutomatedExperimentPanel, typing.Any]:
    """Register the panel with Swift; the runner's menu item then shows it."""
    panel = AutomatedExperimentPanel(api, runner)
    ref = api.create_panel(panel)
    runner.show_panel = panel.show
    return panel, ref


def unregister() -> None:
    """Remove the panel type from Swift's workspace manager (the extension's close)."""
    try:
        from nion.swift import Workspace

        Workspace.WorkspaceManager().unregister_panel(PANEL_ID)
    except Exception:  # noqa: BLE001
        log.debug("atomsmith: the automated-experiment panel was not registered")
