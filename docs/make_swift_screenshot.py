"""Make docs/img/swift_live_atoms.png: a real Nion Swift window (PySide6) with the atomsmith twin
started as its own Swift instrument (Atomsmith > Start Digital Twin: scan device "Atomsmith Twin
Scan"), scanning, and live atom finding on the scan.

Run under a virtual screen, then grab it (Debian: xvfb, xdotool, imagemagick)::

    Xvfb :77 -screen 0 1600x1000x24 &
    DISPLAY=:77 HOME=/tmp/swift-home python docs/make_swift_screenshot.py &
    # a new profile asks for a project: click "New...", then "Create Project"
    sleep 15; DISPLAY=:77 xdotool mousemove 51 253 click 1; sleep 3
    DISPLAY=:77 xdotool mousemove 375 182 click 1; sleep 45
    DISPLAY=:77 import -window root -crop 1292x578+0+0 docs/img/swift_live_atoms.png

(nionswift 16.16's ``nionswift`` command passes a UI key nionui 10.2 does not know, so Swift is
started here as its ``nionui_app.nionswift`` main with ``{"qt": None}``.)
"""

import threading
import time

from nionui_app.nionswift import main as swift_main

app = swift_main.main(["nionui_app.nionswift"], {"qt": None})
state: dict = {"step": 0}


def step() -> None:
    """One step of the set-up, on Swift's UI thread."""
    from nion.swift import Facade
    from nion.utils import Geometry

    from nionswift_plugin.atomsmith import live
    from nionswift_plugin.atomsmith.swift_twin import start_twin

    dc = state["dc"]
    api = Facade.get_api("~1.0", "~1.0")
    if state["step"] == 0:  # the twin's own scan device (200 pA); scan 256^2 over 4 nm at 4 us
        state["twin"] = start_twin(with_eels=True, with_ronchigram=True, beam_current_pA=200.0)
        hs = api.get_hardware_source_by_id("atomsmith_twin_scan", version="1.0")
        native = hs._hardware_source
        fp = native.get_current_frame_parameters()
        fp.pixel_size, fp.fov_nm, fp.pixel_time_us = Geometry.IntSize(256, 256), 4.0, 4.0
        native.set_current_frame_parameters(fp)
        state["twin"].instrument.SetVal("C_Blank", 0.0)
        hs.start_playing()
        state["step"] = 1
    elif state["step"] == 1:  # live atom finding on the HAADF channel once it exists
        items = [d for d in dc.document_model.data_items if ("HAADF" in (d.title or "") or "Twin" in (d.title or "")) and d.xdata is not None
                 and d.xdata.data_shape == (256, 256)]
        if items:
            state["computation"] = live.attach(api, api._new_api_object(items[0]))
            state["step"] = 2
    elif state["step"] == 2:  # show the result
        out = state["computation"].get_result("overlay")
        if out is not None:
            panel = dc.workspace_controller.display_panels[0]
            panel.set_display_panel_display_item(dc.document_model.get_display_item_for_data_item(out._data_item))
            state["step"] = 3


def driver() -> None:
    while state["step"] < 3:
        time.sleep(1.0)
        dcs = [dc for dc in getattr(app, "document_controllers", []) if hasattr(dc, "document_model")]
        if dcs:
            state["dc"] = dcs[0]
            dcs[0].queue_task(step)


threading.Thread(target=driver, daemon=True).start()
app.run()
