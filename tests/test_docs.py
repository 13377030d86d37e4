"""The documentation site (``mkdocs.yml``, ``docs/``) builds and its code runs.

- every ```python block of a page runs, in order, as one script in a fresh subprocess (a real file:
  Taichi reads kernel sources), exactly as the reader sees it; tutorials run at the small sizes of
  :data:`SMALL` (their ``TAICHI_DP_DOCS_*`` knobs), their own ``assert`` s included, and write a figure;
- every page is in the navigation and every navigation entry exists;
- ``mkdocs build --strict`` succeeds (broken links, unknown API objects and docstring warnings fail it).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_blocks import python_blocks, script

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
EXECUTABLE = [p for p in PAGES if python_blocks(DOCS / p)]
TUTORIALS = [p for p in PAGES if p.startswith("tutorials/")]
KNOB = re.compile(r"TAICHI_DP_DOCS_[A-Z0-9_]+")

SMALL = {
    "tutorials/burgers-solver-in-the-loop.md": {"TAICHI_DP_DOCS_ITERATIONS": "40", "TAICHI_DP_DOCS_STEPS": "12"},
    "tutorials/karman.md": {"TAICHI_DP_DOCS_WARMUP": "2", "TAICHI_DP_DOCS_STEPS": "6", "TAICHI_DP_DOCS_ITERATIONS": "8"},
    "tutorials/inverse-problem.md": {"TAICHI_DP_DOCS_ITERATIONS": "30", "TAICHI_DP_DOCS_NU_ITERATIONS": "5"},
    "tutorials/smoke-control.md": {"TAICHI_DP_DOCS_N": "16", "TAICHI_DP_DOCS_STEPS": "4", "TAICHI_DP_DOCS_ITERATIONS": "6"},
    "tutorials/new-operator.md": {},
}
"""The sizes the suite runs each tutorial at (every knob a page reads must be here, and nothing else)."""


def nav_pages() -> list[str]:
    yaml = pytest.importorskip("yaml")  # installed with mkdocs
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def walk(entry: object) -> list[str]:
        if isinstance(entry, str):
            return [entry]
        if isinstance(entry, dict):
            return [p for value in entry.values() for p in walk(value)]
        if isinstance(entry, list):
            return [p for value in entry for p in walk(value)]
        raise AssertionError(f"unexpected nav entry {entry!r}")

    return walk(config["nav"])


def run_page(page: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = tmp_path / ("page_" + re.sub(r"\W", "_", page.removesuffix(".md")) + ".py")
    path.write_text(script(DOCS / page), encoding="utf-8")
    work = tmp_path / "cwd"
    work.mkdir()
    # one thread each (unless set): these small sizes gain nothing from threads, and torch's spinning worker
    # threads cost several times the work on a loaded machine (Burgers tutorial: 92 s of CPU time instead of 7 s)
    threads = {"OMP_NUM_THREADS": "1", "TI_CPU_MAX_NUM_THREADS": "1"}
    full_env = {**threads, **os.environ, "TAICHI_DP_DOCS_OUT": str(tmp_path / "out"), **env}
    return subprocess.run([sys.executable, str(path)], cwd=work, env=full_env, capture_output=True, text=True, timeout=900)


def check_ran(page: str, tmp_path: Path, p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, f"{page} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    if "TAICHI_DP_DOCS_OUT" in (DOCS / page).read_text():
        figures = list((tmp_path / "out").glob("*.png"))
        assert figures and all(f.stat().st_size > 1000 for f in figures), f"{page} wrote no figure"
    assert not list((tmp_path / "cwd").iterdir()), f"{page} wrote into the working directory"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = nav_pages()
    missing, unknown = sorted(set(PAGES) - set(nav)), sorted(set(nav) - set(PAGES))
    assert sorted(nav) == PAGES, f"pages not in the nav: {missing}; nav entries without a file: {unknown}"
    assert len(nav) == len(set(nav))


def test_the_site_has_the_promised_pages():
    concepts = ("state-layout", "staggered-grid", "boundary-conditions", "bridge", "implicit-adjoints", "architectures")
    for page in ("getting-started.md", *(f"concepts/{c}.md" for c in concepts)):
        assert page in EXECUTABLE, page
    assert sorted(TUTORIALS) == sorted(SMALL)
    api = "\n".join((DOCS / p).read_text() for p in PAGES if p.startswith("reference/"))
    for module in ("taichi_dp.runtime", "taichi_dp.bridge", "taichi_dp.grid.staggered", "taichi_dp.ops.linear_solve",
                   "taichi_dp.solvers.burgers", "taichi_dp.scenes.flow", "taichi_dp.learn.hybrid", "models.unet"):
        assert f"::: {module}\n" in api, module


@pytest.mark.parametrize("page", TUTORIALS)
def test_tutorial_sizes_are_knobs_the_test_sets(page):
    text = (DOCS / page).read_text()
    assert set(KNOB.findall(text)) - {"TAICHI_DP_DOCS_OUT"} == set(SMALL[page]), "page knobs and SMALL differ"
    if SMALL[page]:  # the sizes come first, visibly, before any work
        first = python_blocks(DOCS / page)[0]
        assert all(knob in first for knob in SMALL[page]), "the first python block must set every size"


@pytest.mark.parametrize("page", EXECUTABLE)
def test_page_runs(page, tmp_path):
    check_ran(page, tmp_path, run_page(page, tmp_path, SMALL.get(page, {})))


@pytest.mark.slow  # the tutorials at the sizes the pages document (minutes): their asserts and printed claims hold there too
@pytest.mark.parametrize("page", [p for p in TUTORIALS if SMALL[p]])
def test_tutorial_runs_at_its_documented_sizes(page, tmp_path):
    check_ran(page, tmp_path, run_page(page, tmp_path, {}))


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    config = str(ROOT / "mkdocs.yml")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", config, "--site-dir", str(site)]
    p = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    for page in PAGES:  # mkdocs writes docs/a/b.md to site/a/b/index.html
        assert (site / page.removesuffix(".md").removesuffix("index") / "index.html").is_file(), page
    assert (site / "index.html").is_file() and (site / "search" / "search_index.json").is_file()
    assert "periodic_laplacian" in (site / "tutorials" / "new-operator" / "index.html").read_text()
