"""Demos run headless and write non-blank frames and a video; the inverse demo reduces its loss ≥ 10×; a
missing or corrupt run folder is a clear error (exit code 2), not a traceback."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import taichi_dp as tdp
from taichi_dp.learn.burgers_experiment import BurgersExperimentConfig, run
from taichi_dp.learn.config import apply_overrides

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # demos/ is a folder of scripts at the repository root, not an installed package
    sys.path.insert(0, str(ROOT))
from demos._render import FrameSink  # noqa: E402

VIDEO = "animation.mp4" if importlib.util.find_spec("imageio") and importlib.util.find_spec("imageio_ffmpeg") else "animation.gif"


def _demo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TI_SKIP_VERSION_CHECK": "ON"}  # no DISPLAY: headless
    if cwd != ROOT:  # elsewhere (e.g. a folder without runs/), demos/ is found through the path
        env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def _frames_ok(folder, n_min: int) -> list[np.ndarray]:
    frames = sorted(folder.glob("frame_*.png"))
    assert len(frames) >= n_min and (folder / VIDEO).is_file()
    images = [np.asarray(Image.open(f).convert("L"), dtype=np.float64) for f in frames]
    assert all(img.std() > 5.0 for img in images)  # not blank
    return images


@pytest.fixture(scope="module")
def burgers_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    small = ["data.steps=8", "data.train.nus=0.005,0.02", "data.test.nus=0.01", "data.train.states=2", "data.test.states=1",
             "train.variants=NON,SOL-2", "train.iterations=5", "train.batch_size=4", "eval.horizons=8"]  # fmt: skip
    run(apply_overrides(BurgersExperimentConfig(), small), out, progress=False)
    return out


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, a training run)
def test_burgers_demo_headless(burgers_run, tmp_path):
    p = _demo("demos.burgers", "--run", str(burgers_run), "--headless", "--frames", "3", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    images = _frames_ok(tmp_path, 3)
    assert np.abs(images[0] - images[-1]).mean() > 0.1  # the solution moves


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, a training run)
def test_burgers_demo_bad_run_folders(burgers_run, tmp_path):
    p = _demo("demos.burgers", "--run", str(tmp_path / "missing"), "--headless", "--frames", "2", "--out", str(tmp_path))
    assert p.returncode == 2 and "config.json not found" in p.stderr
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "config.json").write_text((burgers_run / "config.json").read_text())
    (broken / "checkpoints" / "non.pt").write_bytes(b"garbage")
    p = _demo("demos.burgers", "--run", str(broken), "--headless", "--frames", "2", "--out", str(tmp_path))
    assert p.returncode == 2 and "corrupt" in p.stderr


BURGERS_SHIPPED = ("config.json", "config.json.sha256", "report.md", "checkpoints/non.pt", "checkpoints/sol8.pt")


@pytest.mark.slow  # a corrected Burgers rollout
def test_shipped_pretrained_burgers_corrector_loads_and_corrects():
    """models/pretrained/burgers_quick is a run folder of ``python -m taichi_dp burgers``: every file is there
    and matches its digest, it loads through the same path as a user's run, and on new initial states at the
    demo's held-out viscosity both corrections roll out closer to the reference than the bare source solver."""
    import torch

    from demos.burgers import PRETRAINED
    from taichi_dp.learn import io
    from taichi_dp.learn.burgers_experiment import evaluate, load_run, reference_data

    missing = [f for f in BURGERS_SHIPPED if not (PRETRAINED / f).is_file()]
    assert not missing, f"shipped Burgers corrector incomplete, missing {missing} in {PRETRAINED}"
    io.read_json(PRETRAINED / "config.json", unverified="error")  # a missing or wrong digest is an error here
    for f in ("non.pt", "sol8.pt"):
        io.load_checkpoint(PRETRAINED / "checkpoints" / f, unverified="error")
    assert sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file()) < 1_000_000
    cfg, models = load_run(PRETRAINED)
    assert set(models) == {"NON", "SOL-8"}
    nu = 0.004  # the demo's default viscosity: held out from training
    assert nu in cfg.data.test.nus and nu not in cfg.data.train.nus
    cfg.data.steps = 32
    data = reference_data(cfg, (nu,), 4, torch.Generator().manual_seed(1))  # not the run's own draws (seed 0)
    err = {name: float(e.mean()) for name, e in evaluate(cfg, data, {"source": None, **models}).items()}
    assert err["SOL-8"] < 0.8 * err["source"] and err["NON"] < err["source"], err


def test_shipped_pretrained_burgers_corrector_refuses_a_damaged_copy(tmp_path):
    """The check above is not vacuous: one flipped byte in a copy of the shipped weights is refused."""
    from demos.burgers import PRETRAINED
    from taichi_dp.learn.burgers_experiment import load_run
    from taichi_dp.learn.io import IntegrityError

    copy = tmp_path / "burgers_quick"
    shutil.copytree(PRETRAINED, copy)
    weights = copy / "checkpoints" / "sol8.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="corrupt"):
        load_run(copy)


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles)
def test_burgers_demo_runs_out_of_the_box_with_the_shipped_corrector(tmp_path):
    """A fresh checkout (no runs/ folder in the working directory) and no --run: the demo uses the shipped
    corrector and says so."""
    out = tmp_path / "frames"
    p = _demo("demos.burgers", "--headless", "--frames", "3", "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "corrections from" in p.stdout and "burgers_quick" in p.stdout and "SOL-8" in p.stdout, p.stdout
    images = _frames_ok(out, 3)
    assert np.abs(images[0] - images[-1]).mean() > 0.1


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, a training run)
def test_burgers_inverse_demo_reduces_loss_10x(tmp_path):
    p = _demo("demos.burgers_inverse", "--headless", "--frames", "4", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    _frames_ok(tmp_path, 4)
    first, last = (float(v) for v in p.stdout.split("loss ")[1].split(" (")[0].split(" -> "))
    assert first / last >= 10.0


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, a training run)
def test_smoke_demo_headless(tmp_path):
    p = _demo("demos.smoke", "--headless", "--frames", "6", "--n", "32", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    images = _frames_ok(tmp_path, 6)
    assert np.abs(images[0] - images[-1]).mean() > 0.1  # the plume develops


@pytest.fixture(scope="module")
def karman_run(tmp_path_factory):
    from taichi_dp.learn.karman_data import KarmanDataConfig
    from taichi_dp.learn.karman_experiment import KarmanData, KarmanExperimentConfig
    from taichi_dp.learn.karman_experiment import run as run_karman

    tmp = tmp_path_factory.mktemp("karman")
    tiny = KarmanDataConfig(reynolds=(150.0, 300.0), scale=1, factor=2, warmup=1, steps=3)
    cfg = apply_overrides(
        KarmanExperimentConfig(data=KarmanData(train=tiny, test=tiny)),
        ["train.variants=NON,SOL-2", "model.width=4", "model.blocks=1", "train.iterations=2", "train.batch_size=2",
         "train.protocols=updates", "eval.horizons=2"],
    )  # fmt: skip
    run_karman(cfg, tmp / "run", cache=tmp / "cache", progress=False)
    return tmp / "run"


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, a training run)
def test_karman_demo_headless_three_panels(karman_run, tmp_path):
    out = tmp_path / "frames"
    p = _demo("demos.karman", "--run", str(karman_run), "--headless", "--frames", "2", "--warmup", "2", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    img = _frames_ok(out, 2)[-1]
    w = img.shape[1]
    span = int(w * 0.26)
    thirds = [img[:, int(w * a) : int(w * a) + span] for a in (0.1, 0.33, 0.56)]
    assert all(np.abs(a - b).mean() > 0.05 for a, b in ((thirds[0], thirds[1]), (thirds[1], thirds[2]), (thirds[0], thirds[2])))


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, a training run)
def test_karman_demo_missing_or_corrupt_run_folder(karman_run, tmp_path, capsys):
    p = _demo("demos.karman", "--run", str(tmp_path / "missing"), "--headless", "--frames", "1", "--out", str(tmp_path))
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "config.json not found" in p.stderr and "python -m taichi_dp train karman" in p.stderr

    from demos.karman import main  # the other cases in-process: faster than a Python start each

    def fails(run: Path, expected: str) -> None:
        try:
            rc = main(["--run", str(run), "--headless", "--frames", "1", "--out", str(tmp_path / "frames")])
        finally:
            tdp.init("cpu", "f64")  # the demo switched this process to float32
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and "train karman" in err, err
        assert not (tmp_path / "frames").exists()

    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "config.json").write_text("{not json")
    fails(garbled, "corrupt")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((karman_run / "config.json").read_text())
    fails(broken, "checkpoint not found")  # config.json alone: training never finished
    weights = [p.relative_to(karman_run) for p in karman_run.rglob("*.pt")]
    assert weights
    for w in weights:
        (broken / w).parent.mkdir(parents=True, exist_ok=True)
        (broken / w).write_bytes(b"garbage")
    fails(broken, "corrupt")


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, a training run)
def test_control_demo_headless(tmp_path):
    p = _demo("demos.control", "--headless", "--iterations", "4", "--frames", "3", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    images = _frames_ok(tmp_path, 3)
    assert np.abs(images[0] - images[-1]).mean() > 0.1  # the estimate (and the loss curve) changes
    first, last = (float(v) for v in p.stdout.split("loss ")[1].split(" (")[0].split(" -> "))
    assert last < first
    assert "3 frames in" in p.stdout and "fps" in p.stdout


@pytest.mark.slow  # a demo end to end (a Python start, Taichi compiles, an optimisation through the solver)
def test_place_obstacle_demo_headless(tmp_path):
    p = _demo("demos.place_obstacle", "--headless", "--n", "8", "--steps", "4", "--iterations", "3", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list(tmp_path.glob("*.png"))) >= 3


def _test_frames() -> list[np.ndarray]:
    y, x = np.mgrid[0:31, 0:45]  # odd sizes: the MP4 writer has to pad them
    return [np.stack([(x * 5 + 60 * k) % 256, y * 8, np.full_like(x, 40 * k)], -1).astype(np.uint8) for k in range(3)]


def test_frame_sink_writes_a_gif_without_imageio(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "imageio", None)  # `import imageio` raises ImportError
    sink = FrameSink("test", tmp_path, headless=True)
    assert all(sink.show(f) for f in _test_frames())
    paths = sink.close()
    assert [p.name for p in paths] == ["frame_0000.png", "frame_0001.png", "frame_0002.png", "animation.gif"]
    with Image.open(tmp_path / "animation.gif") as gif:
        assert gif.n_frames == 3
    assert np.array_equal(np.asarray(Image.open(paths[1])), _test_frames()[1])
    assert "3 frames in" in capsys.readouterr().out


def test_frame_sink_writes_an_mp4_with_imageio(tmp_path):
    """Runs wherever imageio and imageio-ffmpeg are installed (the ``test`` extra should include them so
    that CI runs it; without them the sink writes a GIF, tested above)."""
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg not installed (pip install imageio imageio-ffmpeg)")
    imageio = pytest.importorskip("imageio.v2", reason="imageio not installed (pip install imageio imageio-ffmpeg)")
    sink = FrameSink("test", tmp_path, headless=True)
    for f in _test_frames():
        sink.show(f)
    assert sink.close()[-1] == tmp_path / "animation.mp4"
    with imageio.get_reader(tmp_path / "animation.mp4") as reader:
        frames = list(reader.iter_data())
    assert len(frames) == 3 and frames[0].shape == (32, 46, 3)
    assert np.abs(frames[2][:31, :45].astype(float) - _test_frames()[2]).mean() < 12.0  # lossy, but the same picture


@pytest.fixture
def display(monkeypatch):
    """A virtual X display (Xvfb) for window tests; skipped where Xvfb is not installed."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed")
    proc = subprocess.Popen([xvfb, "-displayfd", "1", "-screen", "0", "640x480x24"], stdout=subprocess.PIPE)
    try:
        number = proc.stdout.readline().strip().decode()
        assert number.isdigit(), "Xvfb did not report a display"
        monkeypatch.setenv("DISPLAY", f":{number}")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("arch", ["cpu", "vulkan"])
def test_window_opens_ti_gui_or_ggui_and_counts_fps(display, monkeypatch, tmp_path, capsys, arch):
    import taichi as ti

    import taichi_dp

    monkeypatch.setattr(taichi_dp, "current", lambda: SimpleNamespace(arch=arch))
    monkeypatch.chdir(tmp_path)  # GGUI writes imgui.ini into the working directory: not into the repository
    out = tmp_path / "frames"
    sink = FrameSink("test", out, headless=False)
    try:
        assert not sink.headless
        assert all(sink.show(f) for f in _test_frames())
        if arch == "cpu" or not sink.ggui:  # GGUI only for vulkan/cuda, and only where Taichi has it
            assert isinstance(sink.gui, ti.GUI) and sink.gui.res == (45, 31)
        assert sink.shown == 3 and sink.fps > 0
        assert sink.close() == [] and (not out.exists() or not list(out.iterdir()))  # a window writes no frames
        out = capsys.readouterr().out
        assert "3 frames in" in out and ("GGUI unavailable" in out) == (arch == "vulkan" and not sink.ggui)
    finally:
        if sink.gui is not None and not sink.ggui:
            sink.gui.close()


@pytest.mark.slow  # a corrected karman rollout
def test_shipped_pretrained_karman_corrector_loads_and_corrects():
    """models/pretrained/karman_quick is a run folder of the training command; it loads through the same
    path as a user's run and its SOL-4 correction is non-zero (trained, not the zero initialisation)."""
    import torch

    from demos.karman import PRETRAINED
    from taichi_dp.learn.karman_experiment import load_run
    from taichi_dp.scenes import karman

    cfg, models = load_run(PRETRAINED)
    assert set(models) == {"NON", "SOL-4"} and cfg.model.kind == "unet"
    scene = karman(reynolds=300.0)
    v = scene.stepper(scene.state0)
    with torch.no_grad():
        dv = models["SOL-4"](v, re=torch.zeros(1, dtype=v.dtype))
    assert float(dv.abs().max()) > 1e-4


def test_headless_frames_are_streamed_to_disk_as_they_come(tmp_path):
    """A long headless run must not hold its frames in memory: each frame is on disk when show returns."""
    from demos._render import FrameSink

    sink = FrameSink("t", tmp_path / "out", headless=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        assert sink.show(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8))
        assert sorted(p.name for p in (tmp_path / "out").glob("frame_*.png")) == [f"frame_{k:04d}.png" for k in range(i + 1)]
    assert not any(isinstance(v, list) and v and isinstance(v[0], np.ndarray) for v in vars(sink).values())
    paths = sink.close()
    assert paths[-1].name in ("animation.mp4", "animation.gif") and paths[-1].stat().st_size > 0
