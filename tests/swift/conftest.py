"""Headless Nion Swift for the plug-in's tests (nion.ui's test UI; skipped without Nion Swift)."""

import asyncio
import threading
import time

import pytest

try:
    from nion.swift import Facade
    from nion.swift.model import PlugInManager
    from nion.swift.test import TestContext
except ImportError:  # pragma: no cover - Nion Swift is a test dependency
    Facade = None
else:
    Facade.initialize()  # before any API computation (reference/nion-swift.md, section 7)


@pytest.fixture
def swift(tmp_path, monkeypatch):
    """A document controller in a memory profile, the plug-in's extension, and its API."""
    if Facade is None:
        pytest.skip("Nion Swift is not installed")
    monkeypatch.setenv("ATOMSMITH_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from nionswift_plugin.atomsmith.extension import AtomsmithExtension
    from nionswift_plugin.atomsmith.state import STATE

    TestContext.begin_leaks()
    setup = TestContext.TestSetup(set_global=True)  # keep alive: it owns the event loop
    with TestContext.create_memory_context() as tc:
        dc = tc.create_document_controller_with_application()  # before get_api (pitfall 2)
        ext = AtomsmithExtension(PlugInManager.APIBroker())
        STATE.data_location = tmp_path
        try:
            yield dc, ext, ext.api
        finally:
            ext.close()
            STATE.set_finder(None, None)
    del setup
    asyncio.set_event_loop(asyncio.new_event_loop())


def _show(dc, api, data_item):
    """Show ``data_item`` in the first display panel and select that panel; returns the window."""
    panel = dc.workspace_controller.display_panels[0]
    panel.set_display_panel_display_item(dc.document_model.get_display_item_for_data_item(data_item._data_item))
    dc.selected_display_panel = panel
    return api.application.document_windows[0]


@pytest.fixture
def show():
    """``show(dc, api, data_item)``: the data item shown and selected; returns the window."""
    return _show


@pytest.fixture
def twin_swift(tmp_path, monkeypatch):
    """``start(**kwargs)`` -> the twin's headless Swift context (closed, threads checked, after)."""
    monkeypatch.chdir(tmp_path)
    from nion.swift import Facade
    from nion.swift.test import TestContext

    from nionswift_plugin.atomsmith.swift_twin import twin_test_context

    Facade.initialize()
    before = set(threading.enumerate())
    setup = TestContext.TestSetup(set_global=True)  # keep alive: it owns the event loop
    made = []

    def start(**kwargs):
        ctx = twin_test_context(tmp_path / "test_data", **kwargs)
        made.append(ctx)
        return ctx

    yield start
    for ctx in made:
        ctx.close()
    del setup
    asyncio.set_event_loop(asyncio.new_event_loop())
    deadline = time.perf_counter() + 5.0
    while time.perf_counter() < deadline:
        # the devices' acquisition threads must be gone (idle executor workers of Swift's document
        # and daemon threads, e.g. tqdm's monitor, do not hold the interpreter at exit)
        left = [t for t in set(threading.enumerate()) - before
                if t.is_alive() and not t.daemon and not t.name.startswith("ThreadPoolExecutor")]
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"threads left running: {left}"
