"""Swift finds the plug-in on an install made the README's way (``pip install .``).

Swift lists plug-ins with ``pkgutil.iter_modules(nionswift_plugin.__path__)``, which setuptools'
default editable install hides (reference/nion-swift.md, section 2), so this runs Swift's own
loader in a fresh interpreter outside the source tree; it is skipped on an editable install.
"""

import json
import subprocess
import sys

import pytest

pytest.importorskip("nion.swift")

SCRIPT = r"""
import json, os, pkgutil, sys
from importlib import metadata
direct = json.loads(metadata.distribution("atomsmith").read_text("direct_url.json") or "{}")
if direct.get("dir_info", {}).get("editable"):
    print(json.dumps({"editable": True}))
    os._exit(0)
from nion.swift import Facade
Facade.initialize()
from nion.swift.test import TestContext
setup = TestContext.TestSetup(set_global=True)
from nion.swift.model import PlugInManager
import nionswift_plugin
names = [m.name for m in pkgutil.iter_modules(nionswift_plugin.__path__)]
PlugInManager.load_plug_ins(None, sys.argv[1], None)
print(json.dumps({"names": names, "extensions": [type(e).__name__ for e in PlugInManager.extensions]}))
os._exit(0)  # the instrument plug-ins' threads would keep the interpreter alive
"""


def test_swift_loads_the_plugin_from_the_installed_package(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if found.get("editable"):
        pytest.skip("editable install: Swift cannot list the plug-in (install with pip install .)")
    assert "atomsmith" in found["names"]
    assert found["extensions"].count("AtomsmithExtension") == 1  # one extension: menu items once
