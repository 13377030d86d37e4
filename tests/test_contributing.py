"""CONTRIBUTING.md's worked examples run as written: its ```python blocks, in order, as one module (the
operator's kernel, bridge, validated function, reference and tests; the stepper; the scene), and every
``test_*`` function they define passes."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", CONTRIBUTING.read_text(), re.S)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    # a real file, not exec(): Taichi reads a kernel's source code
    path = tmp_path_factory.mktemp("contributing") / "contributing_example.py"
    path.write_text("\n\n".join(python_blocks()))
    spec = importlib.util.spec_from_file_location("contributing_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_contributing_has_the_three_examples():
    code = "\n".join(python_blocks())
    for piece in ("KernelOp(", "def advection_rate(", "def advection_rate_reference(", "gradcheck", "(Stepper):", "-> Scene:"):
        assert piece in code, piece


def test_contributing_examples_pass(example):
    tests = [getattr(example, name) for name in dir(example) if name.startswith("test_")]
    assert len(tests) >= 3
    for test in tests:
        test()
