"""End-to-end: the README's main job (quick preset) and the inverse problem, as a user runs them."""

import json
import subprocess
import sys

import pytest


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taichi_dp", *args], capture_output=True, text=True, timeout=timeout)


def test_burgers_quick_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    p = _run("burgers", "--quick", "--out", str(out), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    for name in (
        "config.json",
        "metrics.json",
        "report.md",
        "plots/error_over_time.png",
        "plots/states.png",
        "checkpoints/non.pt",
        "checkpoints/sol4.pt",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["mean_relative_l2"]) == {"source", "NON", "SOL-4"}
    assert all(v > 0 for v in m["mean_relative_l2"].values())
    assert "| test ν | regime |" in (out / "report.md").read_text()
    assert not list(out.rglob("*.tmp"))


def test_burgers_inverse_reduces_the_loss_by_orders_of_magnitude(tmp_path):
    p = _run("burgers-inverse", "--out", str(tmp_path), "--iterations", "150", "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    print(f"\ninverse: loss {m['losses'][0]:.3e} -> {m['losses'][-1]:.3e}")
    assert m["reduction"] > 1e4
    assert (tmp_path / "plots" / "inverse.png").stat().st_size > 10_000


@pytest.mark.parametrize("args,msg", [(["burgers", "--arch", "metal"], "invalid choice"), (["nonsense"], "invalid choice")])
def test_cli_rejects_bad_arguments(args, msg):
    p = _run(*args, timeout=120)
    assert p.returncode == 2 and msg in p.stderr
