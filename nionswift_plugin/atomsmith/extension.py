"""The Swift extension: registers the live computation and builds the "Atomsmith" menu."""

from __future__ import annotations

import pathlib
import typing

from . import actions, automated_experiment, explore_panel, live, manipulation, track_defects
from .state import STATE


class AtomsmithExtension:
    """Instantiated by Swift's plug-in manager with its API broker."""

    extension_id = "atomsmith.extension"

    def __init__(self, api_broker: typing.Any) -> None:
        api = api_broker.get_api(version="~1.0", ui_version="~1.0")
        self.api = api
        try:
            STATE.data_location = pathlib.Path(api.application._application.ui.get_data_location())
        except Exception:  # noqa: BLE001  (outside a full application: the default location)
            STATE.data_location = None
        live.register(api)
        track_defects.register(api)
        trainer = actions.TrainOnFrame(api)
        mover = manipulation.MoveDopant(api)
        self.handlers = {
            "find_atoms": actions.FindAtoms(api),
            "live_atom_finding": actions.LiveAtomFinding(api),
            "train_on_frame": trainer,
            "stop_training": actions.StopTraining(api, trainer),
            "use_generic_model": actions.UseGenericModel(api),
            "move_dopant": mover,
            "stop_manipulation": manipulation.StopManipulation(api, mover),
            "resume_manipulation": manipulation.ResumeManipulation(api, mover),
            "start_digital_twin": actions.StartDigitalTwin(api),
            "track_defects": track_defects.TrackDefects(api),
            "live_defect_counts": track_defects.LiveDefectCountsMenu(api),
        }
        explorer = automated_experiment.AutomatedExperiment(api)
        self.handlers["automated_experiment"] = explorer
        self.handlers["stop_automated_experiment"] = automated_experiment.StopAutomatedExperiment(api, explorer)
        self.explore_panel, self._panel_ref = explore_panel.register(api, explorer)
        self.menu_items = [api.create_menu_item(h) for h in self.handlers.values()]

    def close(self) -> None:
        self.handlers["automated_experiment"].stop(wait_s=30.0)  # beam blanked, measurements kept
        self.explore_panel.close()
        explore_panel.unregister()
        for ref in self.menu_items:
            ref.close()
        self.menu_items = []
        self.handlers["start_digital_twin"].close()
        live.close_all()
