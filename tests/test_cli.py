"""End-to-end: the README's main job (quick preset) and the inverse problem, as a user runs them."""

import json
import subprocess
import sys

import pytest


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taichi_dp", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
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
        "checkpoints/updates/seed0/non.pt",
        "checkpoints/updates/seed0/sol-4.pt",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["variants"]["updates"]) == {"NON", "SOL-4"}
    assert m["source"]["32"]["l2"]["mean"] > 0 and all(v["32"]["l2"]["mean"] > 0 for v in m["variants"]["updates"].values())
    assert "| test ν | regime |" in (out / "report.md").read_text()
    assert not list(out.rglob("*.tmp"))
    # re-running into the folder with other settings never reuses (and relabels) its checkpoints
    config = (out / "config.json").read_bytes()
    p = _run("burgers", "--quick", "--out", str(out), "--precision", "f64", "--no-progress", timeout=120)
    assert p.returncode == 2 and "--resume" in p.stderr.splitlines()[-1]
    p = _run("burgers", "--quick", "--out", str(out), "--precision", "f64", "--resume", "--no-progress", timeout=120)
    assert p.returncode == 2 and "precision: saved 'f32', now 'f64'" in p.stderr.splitlines()[-1]
    assert (out / "config.json").read_bytes() == config


@pytest.mark.slow
def test_burgers_inverse_reduces_the_loss_by_orders_of_magnitude(tmp_path):
    p = _run("burgers-inverse", "--out", str(tmp_path), "--iterations", "150", "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    print(f"\ninverse: loss {m['losses'][0]:.3e} -> {m['losses'][-1]:.3e}")
    assert m["reduction"] > 1e4
    assert (tmp_path / "plots" / "inverse.png").stat().st_size > 10_000


@pytest.mark.slow  # a CLI subprocess per case
@pytest.mark.parametrize("args,msg", [(["burgers", "--arch", "metal"], "invalid choice"), (["nonsense"], "invalid choice")])
def test_cli_rejects_bad_arguments(args, msg):
    p = _run(*args, timeout=120)
    assert p.returncode == 2 and msg in p.stderr


@pytest.mark.slow
def test_train_karman_tiny_eval_and_refusal_to_overwrite(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    p = _run("train", "karman", "--preset", "tiny", "--out", str(out), "--cache", str(cache), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("config.json", "metrics.json", "report.md", "plots/error_over_time.png", "plots/vorticity_strip.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["variants"]["updates"]) == {"NON", "SOL-2"}
    p = _run("train", "karman", "--preset", "tiny", "--out", str(out), "--cache", str(cache), "--no-progress")
    assert p.returncode == 2 and "--resume" in p.stderr  # an existing run is never overwritten
    (out / "metrics.json").unlink()
    p = _run("eval", str(out), "--cache", str(cache), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["variants"] == m["variants"]
    p = _run("eval", str(tmp_path / "missing"), timeout=120)
    assert p.returncode == 2 and "config.json not found" in p.stderr
    # bit rot in a weights file without a trainer state to rebuild it from: refused, naming the file
    weights = out / "checkpoints" / "updates" / "seed0" / "non.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    for state in out.rglob("non.*.state.pt"):
        state.unlink()
    p = _run("eval", str(out), "--cache", str(cache), "--no-progress")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines()[-1].startswith("error: ") and "non.pt is corrupt: damaged" in p.stderr.splitlines()[-1]


@pytest.mark.slow
def test_killed_karman_run_resumes_to_the_uninterrupted_result(tmp_path):
    """Kill a training run (SIGKILL) after its first SOL trainer checkpoint; `--resume` finishes it with
    exactly the weights of an uninterrupted run."""
    import time

    import torch

    cache = tmp_path / "cache"
    args = ["train", "karman", "--preset", "tiny", "--iterations", "120", "--checkpoint-every", "2", "--cache", str(cache)]
    full = _run(*args, "--out", str(tmp_path / "full"), "--no-progress")
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "taichi_dp", *args, "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "checkpoints" / "updates" / "seed0" / "sol-2.0.state.pt"
    deadline = time.monotonic() + 300
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    weights = out / "checkpoints" / "updates" / "seed0" / "sol-2.pt"
    assert state.is_file() and not weights.is_file(), "the run was not interrupted during SOL training"
    resumed = _run(*args, "--out", str(out), "--no-progress", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("non.pt", "sol-2.pt"):
        a = torch.load(tmp_path / "full" / "checkpoints" / "updates" / "seed0" / name, weights_only=True)
        b = torch.load(out / "checkpoints" / "updates" / "seed0" / name, weights_only=True)
        assert a["losses"] == b["losses"], name
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
