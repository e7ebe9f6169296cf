"""Headless Nion Swift for the plug-in's tests (nion.ui's test UI; skipped without Nion Swift)."""

import asyncio

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


