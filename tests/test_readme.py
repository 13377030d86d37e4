"""The README's Python code runs as written (each ```python block, in order, in one fresh process)."""

import subprocess
import sys
from pathlib import Path

import pytest
from markdown_blocks import python_blocks, script

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_has_python_examples():
    assert len(python_blocks(README)) >= 2


@pytest.mark.slow  # a Python subprocess running the README examples
def test_readme_python_blocks_run(tmp_path):
    p = subprocess.run([sys.executable, "-c", script(README)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not list(tmp_path.iterdir())  # the examples leave nothing behind
