"""Demos run headless and write non-blank frames; the inverse demo reduces its loss ≥ 10×; a missing or
corrupt run folder is a clear error (exit code 2), not a traceback."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taichi_dp.learn import TrainConfig
from taichi_dp.learn.burgers_experiment import BurgersExperimentConfig, run


def _demo(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TI_SKIP_VERSION_CHECK": "ON"}  # no DISPLAY: headless
    root = Path(__file__).resolve().parents[1]  # demos/ is run from the repository root
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, env=env, cwd=root)


def _frames_ok(folder, n_min: int) -> list[np.ndarray]:
    frames = sorted(folder.glob("frame_*.png"))
    assert len(frames) >= n_min and (folder / "animation.gif").is_file()
    images = [np.asarray(Image.open(f).convert("L"), dtype=np.float64) for f in frames]
    assert all(img.std() > 5.0 for img in images)  # not blank
    return images


@pytest.fixture(scope="module")
def burgers_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = BurgersExperimentConfig(steps=8, train_nus=(0.005, 0.02), test_nus=(0.01,), train_states=2, test_states=1, unroll=2)
    cfg.train = TrainConfig(iterations=5, batch_size=4)
    run(cfg, out, progress=False)
    return out


def test_burgers_demo_headless(burgers_run, tmp_path):
    p = _demo("demos.burgers", "--run", str(burgers_run), "--headless", "--frames", "3", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    images = _frames_ok(tmp_path, 3)
    assert np.abs(images[0] - images[-1]).mean() > 0.1  # the solution moves


def test_burgers_demo_bad_run_folders(burgers_run, tmp_path):
    p = _demo("demos.burgers", "--run", str(tmp_path / "missing"), "--headless", "--frames", "2", "--out", str(tmp_path))
    assert p.returncode == 2 and "config.json not found" in p.stderr
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "config.json").write_text((burgers_run / "config.json").read_text())
    (broken / "checkpoints" / "non.pt").write_bytes(b"garbage")
    p = _demo("demos.burgers", "--run", str(broken), "--headless", "--frames", "2", "--out", str(tmp_path))
    assert p.returncode == 2 and "corrupt" in p.stderr


def test_burgers_inverse_demo_reduces_loss_10x(tmp_path):
    p = _demo("demos.burgers_inverse", "--headless", "--frames", "4", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    _frames_ok(tmp_path, 4)
    first, last = (float(v) for v in p.stdout.split("loss ")[1].split(" (")[0].split(" -> "))
    assert first / last >= 10.0


def test_smoke_demo_headless(tmp_path):
    p = _demo("demos.smoke", "--headless", "--frames", "6", "--n", "32", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    images = _frames_ok(tmp_path, 6)
    assert np.abs(images[0] - images[-1]).mean() > 0.1  # the plume develops


def test_karman_demo_headless_three_panels(tmp_path):
    from taichi_dp.learn.karman_data import KarmanDataConfig
    from taichi_dp.learn.karman_experiment import KarmanExperimentConfig
    from taichi_dp.learn.karman_experiment import run as run_karman

    tiny = KarmanDataConfig(reynolds=(150.0, 300.0), scale=1, factor=2, warmup=1, steps=3)
    cfg = KarmanExperimentConfig(
        train=tiny, test=tiny, unroll=2, width=4, blocks=1, optim=TrainConfig(iterations=2, batch_size=2)
    )
    run_karman(cfg, tmp_path / "run", cache=tmp_path / "cache", progress=False)
    out = tmp_path / "frames"
    p = _demo("demos.karman", "--run", str(tmp_path / "run"), "--headless", "--frames", "2", "--warmup", "2", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    img = _frames_ok(out, 2)[-1]
    w = img.shape[1]
    span = int(w * 0.26)
    thirds = [img[:, int(w * a) : int(w * a) + span] for a in (0.1, 0.33, 0.56)]
    assert all(np.abs(a - b).mean() > 0.05 for a, b in ((thirds[0], thirds[1]), (thirds[1], thirds[2]), (thirds[0], thirds[2])))
    bad = _demo("demos.karman", "--run", str(tmp_path / "missing"), "--headless", "--frames", "1", "--out", str(out))
    assert bad.returncode == 2 and "train karman" in bad.stderr
