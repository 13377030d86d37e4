"""The README's Python code runs as written (each ```python block, in order, in one fresh process)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.slow  # a Python subprocess running the README examples
def test_readme_python_blocks_run(tmp_path):
    code = "\n\n".join(python_blocks())
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not list(tmp_path.iterdir())  # the examples leave nothing behind
