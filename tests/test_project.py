"""Project-level checks: the README's commands, CI and the core's import rules."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert 'pip install . && atomsmith demo' in blocks
    test_cmd = 'pip install ".[dev]" && python -m pytest'
    assert test_cmd in blocks
    assert test_cmd in ci.splitlines()
    assert "pip install torch==2.13.0" in ci


def test_core_imports_no_front_end():
    pattern = re.compile(r"^\s*(import|from)\s+(hyperspy|pyxem|exspy|nion)\b", re.M)
    offenders = [str(p) for p in (ROOT / "core").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_import_is_light():
    """Importing atomsmith and the twin does not pull in torch or matplotlib's pyplot."""
    code = ("import sys, atomsmith, atomsmith.simulate, atomsmith.instrument; "
            "print('torch' in sys.modules, 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
