"""The 3D smoke demo: its ray marcher (fast, synthetic volumes); headless, a small plume is written as
non-blank frames that change from frame to frame plus a video; bad arguments are one ``error:`` line."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # demos/ is a folder of scripts at the repository root, not an installed package
    sys.path.insert(0, str(ROOT))
from demos._render import volume_rgb  # noqa: E402

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="cuda is available here")
VIDEO = "animation.mp4" if importlib.util.find_spec("imageio") and importlib.util.find_spec("imageio_ffmpeg") else "animation.gif"


def _demo(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TI_SKIP_VERSION_CHECK": "ON"}  # no DISPLAY: headless
    cmd = [sys.executable, "-m", "demos.smoke3d", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def _ball(n: int, centre: tuple[float, float, float], radius: float) -> np.ndarray:
    z, y, x = np.mgrid[0:n, 0:n, 0:n] + 0.5
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


def test_ray_marcher_on_synthetic_volumes():
    n = 16
    assert np.array_equal(volume_rgb(np.zeros((n, n, n))), np.zeros((n, n, 3)))  # no smoke: black
    blob = 3.0 * _ball(n, (8, 8, 8), 4)
    img = volume_rgb(blob, absorption=1.0, light=1)
    assert img.shape == (n, n, 3) and img[8, 8].min() > 0.2 and img[0, 0].max() == 0.0  # glows where it is
    assert img[8, 8, 0] > img[8, 8, 2]  # warm smoke
    assert img[10, 8].sum() > img[6, 8].sum()  # lit from the high end of axis 1: its lower half in shadow
    off = 3.0 * _ball(n, (3.5, 8.5, 12.5), 2)  # (z, y, x)
    for axis, (row, col) in ((0, (8, 12)), (1, (3, 12)), (2, (3, 8))):  # the image: the other two axes in order
        assert np.unravel_index(volume_rgb(off, axis=axis).sum(-1).argmax(), (n, n)) == (row, col)
    sphere = _ball(n, (8, 8, 8), 5)
    solid = volume_rgb(np.zeros((n, n, n)), sphere)
    assert solid[8, 8].sum() > solid[8, 4].sum() > 0.0 and solid[0, 0].max() == 0.0  # brighter where nearer
    near, far = (3.0 * _ball(n, (z, 8, 8), 2) for z in (14, 2))  # the viewer is at the high end of axis 0
    assert np.abs(volume_rgb(near, sphere)[8, 8] - solid[8, 8]).max() > 0.1  # smoke in front veils the sphere
    assert np.array_equal(volume_rgb(far, sphere)[8, 8], solid[8, 8])  # smoke behind an opaque solid: unseen
    assert np.array_equal(volume_rgb(near, sphere, axis=2)[8, 8], volume_rgb(far, sphere, axis=2)[8, 8])  # side on


def test_render_shows_both_views_of_a_synthetic_plume():
    from demos.smoke3d import render

    n = 16
    sphere = _ball(n, (8, 8, 8), 3)
    frames = [render(2.0 * _ball(n, (8, y, 8), 5) * ~sphere, sphere, "synthetic") for y in (3, 13)]  # under, over
    assert frames[0].shape == frames[1].shape and frames[0].ndim == 3
    w = frames[0].shape[1]
    for frame in frames:
        smoke = (frame[..., 0].astype(int) - frame[..., 2]) > 30  # warm pixels
        assert smoke[:, : w // 2].sum() > 100 and smoke[:, w // 2 :].sum() > 100  # front and top views
    assert np.abs(frames[0].astype(float) - frames[1]).mean() > 1.0


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, 3D pressure solves)
def test_smoke3d_demo_headless(tmp_path):
    p = _demo("--headless", "--frames", "4", "--n", "16", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "4 frames in" in p.stdout and "fps" in p.stdout, p.stdout
    frames = sorted(tmp_path.glob("frame_*.png"))
    assert len(frames) == 4 and (tmp_path / VIDEO).is_file() and (tmp_path / VIDEO).stat().st_size > 0
    images = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float64) for f in frames]
    h = images[0].shape[0]
    panels = [img[int(0.2 * h) :] for img in images]  # below the title (whose step number changes anyway)
    for img in panels[1:]:  # frame 0 is the box before the first injection
        assert ((img[..., 0] - img[..., 2]) > 30).sum() > 200  # warm smoke pixels: not blank
    assert all(np.abs(a - b).mean() > 0.02 for a, b in zip(panels, panels[1:]))  # every frame changes


@pytest.mark.slow  # a Python start per case
@pytest.mark.parametrize(
    "args,msg",
    [
        (["--n", "4"], "n must be an integer >= 8, got 4"),
        (["--frames", "0"], "--frames must be >= 1, got 0"),
        (["--n", "abc"], "argument --n: invalid int value: 'abc'"),
        (["--advection", "upwind"], "argument --advection: invalid choice: 'upwind'"),
        (["--buoyancy", "nan"], "buoyancy must be finite, got nan"),
        pytest.param(["--arch", "cuda"], "arch='cuda' was requested but is not available", marks=NO_CUDA),
    ],
)
def test_smoke3d_demo_bad_arguments_are_one_error_line(args, msg, tmp_path):
    out = tmp_path / "frames"
    p = _demo("--headless", "--out", str(out), *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and p.stderr.startswith("error: ") and msg in p.stderr, p.stderr
    assert not out.exists()
