"""Make docs/img/swift_automated_experiment.png: a run of the Automated Experiment panel in a
headless Swift 16.16 on the twin's Swift devices (scan, STEM controller, EELS camera).

The panel's fields are filled as a user would (survey, criterion "Si", 30 spectra, candidates
"atoms") and Start is pressed; the figure shows what Swift shows: the survey with the measured
points, the predicted criterion map, and the criterion against the spectrum number.

Run: ``python docs/make_swift_explore_figure.py`` (needs the ``swift`` and ``explore`` extras).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the plug-in from the source tree


def main(seed: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nion.swift import Facade
    from nion.swift.model import PlugInManager
    from nion.swift.test import TestContext

    from nionswift_plugin.atomsmith.extension import AtomsmithExtension
    from nionswift_plugin.atomsmith.swift_twin import record_frame, twin_test_context

    out = ROOT / "docs" / "img" / "swift_automated_experiment.png"
    tmp = Path(tempfile.mkdtemp())
    os.chdir(tmp)
    os.environ["ATOMSMITH_DATA"] = str(tmp)
    Facade.initialize()
    setup = TestContext.TestSetup(set_global=True)
    ctx = twin_test_context(tmp / "test_data", seed=6, with_eels=True, time_scale=10.0)
    ext = AtomsmithExtension(PlugInManager.APIBroker())
    try:
        twin, dc, api = ctx.handles.twin, ctx.document_controller, ext.api
        runner = ext.handlers["automated_experiment"]
        runner.instrument_kwargs = {"time_scale": 0.1, "field_nm": twin.field_nm}
        # the survey: 96 x 96 px over 2 nm, taken by Swift's scan of the twin (the scan context)
        xd = record_frame(ctx, 96, 2.0, 8.0)
        di = api.library.create_data_item_from_data_and_metadata(xd, "survey")
        panel = dc.workspace_controller.display_panels[0]
        panel.set_display_panel_display_item(dc.document_model.get_display_item_for_data_item(di._data_item))
        dc.selected_display_panel = panel
        win = api.application.document_windows[0]
        runner.menu_item_execute(win)  # Atomsmith > Automated Experiment shows the panel
        view = ext.explore_panel.view_for(win)
        view.use_selected()
        view.criterion_edit.text, view.budget_edit.text, view.seeds_edit.text = "Si", "30", "5"
        view.candidates_combo.current_index = 1  # atoms
        view.apply_settings()
        runner.learner_kwargs["seed"] = seed
        t0 = time.perf_counter()
        assert runner.start(win, view.survey), runner.error
        while runner.running:
            dc.periodic()
            time.sleep(0.02)
        runner.thread.join()
        dc.periodic()
        elapsed = time.perf_counter() - t0
        res = runner.result
        survey = np.asarray(di.xdata.data)
        pred = np.asarray(runner.predicted_item.xdata.data)
        px = 2.0 / 96
        edge = np.asarray(twin.field_nm) / 2 - 1.0
        pts = np.array([(np.asarray(m.xy_nm) - edge) / px - 0.5 for m in res.measurements])
        si = twin.sample.xy_A[twin.sample.species == "Si"] / 10.0
        si_px = (si - edge) / px - 0.5
        vals = res.values

        fig, ax = plt.subplots(1, 3, figsize=(15, 5))
        ax[0].imshow(survey, cmap="gray")
        sc = ax[0].scatter(pts[:, 0], pts[:, 1], c=vals, cmap="viridis", s=40, edgecolors="w")
        for i, (x, y) in enumerate(pts):
            ax[0].annotate(str(i + 1), (x, y), color="yellow", fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax[0].scatter(si_px[:, 0], si_px[:, 1], marker="s", s=160, facecolors="none", edgecolors="r", label="Si (truth)")
        ax[0].set_xlim(-0.5, 95.5)
        ax[0].set_ylim(95.5, -0.5)
        ax[0].legend(loc="lower right", fontsize=8)
        ax[0].set_title(f"survey, 2 nm: {len(vals)} spectra, numbered")
        plt.colorbar(sc, ax=ax[0], label="Si L2,3 edge integral (counts)")
        im = ax[1].imshow(pred, cmap="magma")
        ax[1].scatter(pts[:, 0], pts[:, 1], s=8, c="c")
        ax[1].set_title("predicted map (cell of each column)")
        plt.colorbar(im, ax=ax[1], label="predicted Si edge integral")
        n = np.arange(1, len(vals) + 1)
        ax[2].plot(n, vals, "o-", label="measured")
        ax[2].plot(n, np.maximum.accumulate(np.nan_to_num(vals, nan=-np.inf)), "r--", label="best so far")
        ax[2].axvline(5.5, color="gray", ls=":", label="end of the seed points")
        ax[2].set_xlabel("spectrum number")
        ax[2].set_ylabel("Si L2,3 edge integral (counts)")
        ax[2].legend(fontsize=8)
        ax[2].set_title(f"{len(res.candidates_xy_nm)} columns, {len(vals)} spectra, {elapsed:.1f} s")
        fig.suptitle(f"Atomsmith Automated Experiment panel on the twin (DKL, UCB, learner seed {seed}): "
                     f"{view.status_label.text}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out, dpi=90)
        print(f"wrote {out}: {view.status_label.text}")
    finally:
        ext.close()
        ctx.close()
        del setup
    sys.stdout.flush()
    os._exit(0)  # Swift's stdout catcher breaks absl's logging shutdown at interpreter exit


if __name__ == "__main__":
    main()
