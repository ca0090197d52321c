"""moot's import graph has no circle, no module takes a private name from another package, and
no module runs over 500 lines (`benchmarks/architecture.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_graph_has_no_circle_no_private_reach_and_no_long_module():
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "architecture.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_script_finds_a_circle_a_private_import_and_a_long_module(tmp_path):
    package = tmp_path / "pkg"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.b import g\n")  # inside a function
    (package / "b.py").write_text("from pkg.a import f\n" + "x = 1\n" * 600)
    (package / "inner" / "__init__.py").write_text("")
    (package / "inner" / "_hidden.py").write_text("VALUE = 1\n")
    (package / "c.py").write_text("from pkg.inner._hidden import VALUE\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "architecture.py"), "--root", str(package)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "pkg.a <-> pkg.b" in run.stdout
    assert "pkg.inner._hidden import VALUE" in run.stdout
    assert "b.py: 601 lines" in run.stdout
