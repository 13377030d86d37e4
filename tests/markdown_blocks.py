"""The executable code of a markdown page: its ```python blocks, in order (shared by the README and docs tests)."""

from __future__ import annotations

import re
from pathlib import Path

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    """The bodies of the page's top-level ```python blocks, in order (other fences, e.g. ```bash, are text)."""
    return _PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def script(page: Path) -> str:
    """The page's python blocks joined into one script, in order: exactly the code a reader sees."""
    return "\n\n".join(python_blocks(page))
