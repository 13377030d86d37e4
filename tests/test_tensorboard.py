"""Experiment logging (``--log tensorboard``, :mod:`taichi_dp.learn.experiment_log`): event files written during
training and evaluation, read back with TensorBoard's own reader; logging off imports nothing and logging on
changes no result."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from taichi_dp import cli
from taichi_dp.learn import burgers_experiment, experiment_log, io, karman_experiment
from taichi_dp.learn.config import apply_overrides
from taichi_dp.learn.experiment_log import ExperimentLog, TensorBoardLog, colour_image, make_log
from taichi_dp.learn.trainer import TrainConfig, learning_rate, train

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="the tensorboard package (pip install 'taichi_dp[log]') is missing"
)


def _events(folder: Path):
    """TensorBoard's own reader of the event files under ``folder`` (every event kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _f32(values: list[float]) -> list[float]:
    """What an event file holds for python floats (TensorBoard stores scalars as float32)."""
    return [float(np.float32(v)) for v in values]


# ------------------------------------------------------------------------------------------------ unit tests
def test_none_is_a_no_op_and_unknown_kinds_are_refused(tmp_path):
    log = make_log("none", tmp_path)
    assert type(log) is ExperimentLog and not log.enabled
    run = log.run("NON")
    assert not run.enabled and run.training_callback() is None  # the trainer then runs exactly as before
    run.scalar("a", 1.0, 0)
    run.image("b", torch.zeros(3, 2, 2), 0)
    log.close()
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="log must be one of none, tensorboard, got 'wandb'"):
        make_log("wandb", tmp_path)


def test_missing_tensorboard_names_the_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    with pytest.raises(RuntimeError, match=r"pip install 'taichi_dp\[log\]'"):
        make_log("tensorboard", tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.slow  # a fresh interpreter imports torch and Taichi (~6 s)
def test_logging_off_never_imports_tensorboard():
    code = (
        "import sys\n"
        "from taichi_dp import cli\n"
        "from taichi_dp.learn import burgers_experiment, karman_experiment, experiment_log\n"
        "experiment_log.make_log('none', 'unused').run('NON').training_callback()\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('tensorboard', 'torch.utils.tensorboard')))\n"
        "assert not bad, bad\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]


@needs_tensorboard
def test_tensorboard_log_scalars_images_and_resumed_sessions(tmp_path):
    with make_log("tensorboard", tmp_path) as log:
        assert isinstance(log, TensorBoardLog) and log.run("a/seed0/NON") is log.run("a/seed0/NON")
        run = log.run("a/seed0/NON")
        for step in range(5):
            run.scalars({"train/loss": 1.0 / (step + 1), "train/lr": 0.1}, step)
        run.scalar("train/loss", math.nan, 5)  # not recorded
        run.image("vorticity/reference", colour_image(torch.linspace(-1, 1, 12).reshape(3, 4), vmax=1.0), 5)
        with pytest.raises(ValueError, match=r"RGB tensor \(3, H, W\), got shape \(2, 2\)"):
            run.image("bad", torch.zeros(2, 2), 5)
    acc = _events(tmp_path / "tensorboard" / "a" / "seed0" / "NON")
    assert _scalars(acc, "train/loss") == list(enumerate(_f32([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])))
    assert [s for s, _ in _scalars(acc, "train/lr")] == [0, 1, 2, 3, 4]
    (img,) = acc.Images("vorticity/reference")
    assert (img.step, img.width, img.height) == (5, 4, 3)
    # a resumed session that replays steps 3.. replaces them (no step drawn twice)
    with make_log("tensorboard", tmp_path) as log:
        log.run("a/seed0/NON").scalars({"train/loss": 7.0}, 3)
        log.run("a/seed0/NON").scalars({"train/loss": 8.0}, 4)
    assert _scalars(_events(tmp_path / "tensorboard" / "a" / "seed0" / "NON"), "train/loss") == [
        *enumerate(_f32([1.0, 1 / 2, 1 / 3])),
        (3, 7.0),
        (4, 8.0),
    ]


def test_colour_image_maps_the_symmetric_range_through_the_colour_map():
    field = torch.tensor([[-2.0, 0.0, 2.0], [-1.0, 0.0, 5.0]])  # row 0 = bottom row of the image
    img = colour_image(field, vmax=2.0)
    assert img.shape == (3, 2, 3) and float(img.min()) >= 0 and float(img.max()) <= 1
    assert torch.equal(img[:, 1, 0], colour_image(torch.tensor([[-5.0]]), 2.0)[:, 0, 0])  # clipped at -vmax, flipped
    assert torch.allclose(img[:, 0, 1], img[:, 1, 1])  # zero: the colour map's centre


@needs_tensorboard
def test_trainer_callback_sees_every_iteration_and_the_tensorboard_callback_logs_it(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)

    def loss(idx: torch.Tensor) -> torch.Tensor:
        return torch.mean((model(x[idx]) - y[idx]) ** 2)

    config = TrainConfig(iterations=7, batch_size=4, lr=0.05)
    seen: list[tuple[int, float, float]] = []
    with make_log("tensorboard", tmp_path) as log:
        logged = log.run("toy").training_callback(offset=10)

        def callback(it, result):
            seen.append((it, result.losses[-1], result.learning_rate))
            logged(it, result)

        result = train(model, loss, 16, config, progress=False, callback=callback)
    assert [s[0] for s in seen] == list(range(7)) and [s[1] for s in seen] == result.losses
    assert [s[2] for s in seen] == [learning_rate(config, it) for it in range(7)]
    acc = _events(tmp_path / "tensorboard" / "toy")
    assert _scalars(acc, "train/loss") == list(zip(range(10, 17), _f32(result.losses)))
    assert _scalars(acc, "train/lr") == list(zip(range(10, 17), _f32([s[2] for s in seen])))


def test_cli_log_flag_reaches_both_experiments_and_defaults_to_none(monkeypatch, tmp_path):
    calls = []

    def fake_run(cfg, out, **kw):
        calls.append(kw["log"])
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.md").write_text("# report\n")
        return {}

    monkeypatch.setattr(karman_experiment, "run", fake_run)
    monkeypatch.setattr(burgers_experiment, "run", fake_run)
    for i, flags in enumerate(([], ["--log", "tensorboard"], ["--log", "none"])):
        assert cli.main(["train", "karman", "--preset", "tiny", "--out", str(tmp_path / f"k{i}"), *flags]) == 0
        assert cli.main(["burgers", "--quick", "--out", str(tmp_path / f"b{i}"), *flags]) == 0
    assert calls == ["none", "none", "tensorboard", "tensorboard", "none", "none"]
    with pytest.raises(SystemExit):
        cli.main(["burgers", "--log", "wandb"])


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def karman_runs(tmp_path_factory):
    """The tiny karman study twice (same data cache): without and with ``log="tensorboard"``."""
    root = tmp_path_factory.mktemp("karman_tb")
    cfg = karman_experiment.KarmanExperimentConfig.preset("tiny")
    plain = karman_experiment.run(cfg, root / "plain", cache=root / "cache", progress=False)
    logged = karman_experiment.run(cfg, root / "logged", cache=root / "cache", progress=False, log="tensorboard")
    return cfg, root, plain, logged


def _same_results(a: dict, b: dict) -> None:
    """Equal metrics except the wall-clock fields."""

    def strip(m: dict) -> dict:
        m = json.loads(json.dumps(m))
        m.pop("datagen_seconds", None)
        for runs in m.get("training", {}).values():
            for per_seed in runs.values():
                for r in per_seed:
                    r.pop("seconds")
        return m

    assert strip(a) == strip(b)


@needs_tensorboard
@pytest.mark.slow  # two tiny karman studies (~18 s on 2 cores)
def test_karman_tensorboard_logs_training_validation_and_vorticity(karman_runs):
    cfg, root, plain, logged = karman_runs
    _same_results(plain, logged)
    assert not (root / "plain" / "tensorboard").exists()
    assert json.loads((root / "plain" / "config.json").read_text()) == json.loads((root / "logged" / "config.json").read_text())
    n = cfg.train.iterations
    for variant in cfg.train.variants:
        acc = _events(root / "logged" / "tensorboard" / "updates" / "seed0" / variant)
        losses = io.load_checkpoint(root / "logged" / "checkpoints" / "updates" / "seed0" / f"{variant.lower()}.pt")["losses"]
        assert _scalars(acc, "train/loss") == list(enumerate(_f32(losses))) and len(losses) == n
        lrs = _scalars(acc, "train/lr")
        assert lrs == list(enumerate(_f32([learning_rate(cfg.train.budget("updates", 0), it) for it in range(n)])))
        h = cfg.eval.horizons[0]
        tags = set(acc.Tags()["scalars"])
        expected = {f"val/{m}_h{h}" for m in ("l1", "l2")} | {f"val/source_{m}_h{h}" for m in ("l1", "l2")}
        expected |= {f"val_per_test/l1_h{h}_Re{r:g}" for r in cfg.data.test.reynolds}
        assert expected <= tags, expected - tags
        ((step, value),) = _scalars(acc, f"val/l1_h{h}")
        assert step == n and value == pytest.approx(logged["variants"]["updates"][variant][str(h)]["l1"]["mean"], rel=1e-6)
        ((_, source),) = _scalars(acc, f"val/source_l1_h{h}")
        assert source == pytest.approx(logged["source"][str(h)]["l1"]["mean"], rel=1e-6)
        assert all(math.isfinite(v) for tag in tags for _, v in _scalars(acc, tag))
        images = {tag: acc.Images(tag) for tag in acc.Tags()["images"]}
        assert set(images) == {"vorticity/reference", "vorticity/source", "vorticity/corrected"}
        assert all(len(v) == 1 and v[0].step == n and min(v[0].width, v[0].height) > 8 for v in images.values())
        assert len({(v[0].width, v[0].height) for v in images.values()}) == 1  # the same strip layout


@needs_tensorboard
@pytest.mark.slow  # a resumed tiny karman study (~2 s after the fixture)
def test_karman_resume_may_switch_logging_on(karman_runs, tmp_path):
    import shutil

    cfg, root, plain, _ = karman_runs
    out = tmp_path / "run"
    shutil.copytree(root / "plain", out)
    again = karman_experiment.run(cfg, out, cache=root / "cache", progress=False, resume=True, log="tensorboard")
    _same_results(plain, again)
    acc = _events(out / "tensorboard" / "updates" / "seed0" / "NON")  # finished variants: only the evaluation
    assert acc.Tags()["scalars"] and "train/loss" not in acc.Tags()["scalars"]
    assert [s for s, _ in _scalars(acc, f"val/l1_h{cfg.eval.horizons[0]}")] == [cfg.train.iterations]


TINY_BURGERS = [
    "data.steps=6", "data.train.states=2", "data.test.states=1", "train.variants=NON,SOL-2", "model.width=4",
    "model.blocks=1", "train.iterations=5", "train.batch_size=4", "eval.horizons=6",
]  # fmt: skip


def _tiny_burgers() -> burgers_experiment.BurgersExperimentConfig:
    return apply_overrides(burgers_experiment.BurgersExperimentConfig(), TINY_BURGERS)


@needs_tensorboard
@pytest.mark.slow  # two tiny burgers runs (~17 s)
def test_burgers_tensorboard_logs_training_and_validation(tmp_path):
    cfg = _tiny_burgers()
    plain = burgers_experiment.run(cfg, tmp_path / "plain", progress=False)
    logged = burgers_experiment.run(cfg, tmp_path / "logged", progress=False, log="tensorboard")
    _same_results(plain, logged)
    assert not (tmp_path / "plain" / "tensorboard").exists()
    for name, file in (("NON", "non.pt"), ("SOL-2", "sol-2.pt")):
        acc = _events(tmp_path / "logged" / "tensorboard" / "updates" / "seed0" / name)
        losses = io.load_checkpoint(tmp_path / "logged" / "checkpoints" / "updates" / "seed0" / file)["losses"]
        assert len(losses) == 5 and _scalars(acc, "train/loss") == list(enumerate(_f32(losses)))
        assert [s for s, _ in _scalars(acc, "train/lr")] == list(range(5))
        ((step, value),) = _scalars(acc, "val/l2_h6")
        assert step == 5 and value == pytest.approx(logged["variants"]["updates"][name]["6"]["l2"]["mean"], rel=1e-6)
        ((_, source),) = _scalars(acc, "val/source_l2_h6")
        assert source == pytest.approx(logged["source"]["6"]["l2"]["mean"], rel=1e-6)
        for tag in ("val/l1_h6", "val/l2_h6_interpolation", "val/l2_h6_extrapolation", "val_per_test/l2_h6_ν0.002"):
            ((s, v),) = _scalars(acc, tag)
            assert s == 5 and math.isfinite(v)


@needs_tensorboard
@pytest.mark.slow  # the burgers command in-process, then resumed with logging on (~5 s)
def test_cli_burgers_resume_accepts_another_log_setting(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    tiny = [o for o in TINY_BURGERS if not o.startswith("train.iterations=")]  # KEY=VALUE would beat --iterations
    base = ["burgers", "--out", str(out), "--no-progress", "--precision", "f64", *tiny]
    assert cli.main([*base, "--iterations", "3"]) == 0
    assert not (out / "tensorboard").exists()
    config = (out / "config.json").read_bytes()
    assert cli.main([*base, "--iterations", "5", "--resume", "--log", "tensorboard"]) == 2  # another result: refused
    assert "train.iterations" in capsys.readouterr().err
    assert cli.main([*base, "--iterations", "3", "--resume", "--log", "tensorboard"]) == 0
    assert (out / "config.json").read_bytes() == config  # `log` is not part of the configuration
    acc = _events(out / "tensorboard" / "updates" / "seed0" / "SOL-2")
    assert [s for s, _ in _scalars(acc, "val/l2_h6")] == [3]  # training had finished: only the evaluation
    assert experiment_log.LOG_FOLDER == "tensorboard"
