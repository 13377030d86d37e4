"""The shared experiment skeleton (:mod:`taichi_dp.learn.experiment`): window slicing, variant grammar,
budgets, a toy experiment run end to end through the one driver (pluggable metric and loss kind, run-folder
and resume rules, evaluation, load_run), and, for karman and burgers, a run reproduced bit for bit from its
own ``config.json`` and the same command-line run-folder rules."""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from taichi_dp import cli
from taichi_dp.learn import config, experiment, io
from taichi_dp.learn.experiment import (
    LOSSES,
    EvalSection,
    Experiment,
    LossKind,
    TrainSection,
    Trajectories,
    parse_variant,
    window_count,
    windows,
)
from taichi_dp.runtime import ensure_init


# ------------------------------------------------------------------------------------------------ pieces
def test_windows_are_consecutive_frames_of_one_trajectory():
    ref = torch.arange(2 * 5, dtype=torch.float64).reshape(2, 5, 1)  # S=2 trajectories of T+1=5 frames
    assert window_count(ref, 3) == 2 * 2
    traj, frames = windows(ref, 3, torch.tensor([0, 1, 2, 3]))
    assert traj.tolist() == [0, 0, 1, 1]
    assert frames[..., 0].tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [5, 6, 7, 8], [6, 7, 8, 9]]
    _, frames = windows(ref, 4, torch.tensor([1]))  # k = T: one window per trajectory
    assert frames[..., 0].tolist() == [[5, 6, 7, 8, 9]]


def test_variant_grammar():
    assert parse_variant("NON") == [("NON", 1)]
    assert parse_variant("PRE-4") == [("PRE", 4)]
    assert parse_variant("NON+SOL-16") == [("NON", 1), ("SOL", 16)]
    for bad in ("SOL", "SOL-0", "NON-2", "sol-4", "NON+", "MAGIC-3", ""):
        with pytest.raises(ValueError, match=re.escape(f"train.variants: {bad!r} is not a variant")):
            parse_variant(bad)
    kinds = {**LOSSES, "LAST": LossKind(lambda *a: None, unroll=True)}  # an experiment's own kind
    assert parse_variant("NON+LAST-3", kinds) == [("NON", 1), ("LAST", 3)]


def test_train_section_budgets():
    t = TrainSection(iterations=7, seconds=2.5, batch_size=3, lr=0.1, lr_final_factor=0.5, save_every=2)
    updates, wall = t.budget("updates", 4), t.budget("wall", 5)
    assert (updates.iterations, updates.max_seconds, updates.seed, updates.checkpoint_every) == (7, None, 4, 2)
    assert (wall.iterations, wall.max_seconds, wall.seed, wall.batch_size, wall.lr) == (10**9, 2.5, 5, 3, 0.1)


# ------------------------------------------------------------------------------------------------ a toy experiment
@dataclass
class ToyData:
    train: tuple[float, ...] = (0.8, 1.0)  # decay factors a of u_{t+1} = a u_t
    test: tuple[float, ...] = (0.7, 0.9)
    steps: int = 6


@dataclass
class ToyConfig:
    data: ToyData = field(default_factory=ToyData)
    train: TrainSection = field(
        default_factory=lambda: TrainSection(variants=("NON", "SOL-2", "LAST-3"), iterations=8, batch_size=2, lr=0.2)
    )
    eval: EvalSection = field(default_factory=lambda: EvalSection(horizons=(3, 6)))

    def validate(self) -> None:
        self.train.validate(self.data.steps + 1, "data.steps", ToyExperiment.losses)
        self.eval.validate(self.data.steps, "data.steps")


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1, bias=False, dtype=torch.float64)
        nn.init.zeros_(self.lin.weight)  # zero correction at first, as the real experiments' models

    def forward(self, u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([u, a.view(-1, 1, 1).expand_as(u) * u], dim=-1)
        return self.lin(feats)[..., 0]


def last_frame_loss(exp, k, model, data):
    """An experiment's own stage kind: k hybrid steps, only the last frame compared."""

    def batch_loss(idx):
        traj, frames = windows(data.reference, k, idx)
        p = data.params[traj]
        u = frames[:, 0]
        for _ in range(k):
            u = exp.source(p)(u) + model(exp.source(p)(u), **exp.condition(p))
        return torch.mean((u - frames[:, -1]) ** 2)

    return batch_loss, window_count(data.reference, k)


def max_abs(pred, ref):
    """An extra metric: the largest absolute error per trajectory and step."""
    return (pred - ref).flatten(2).abs().amax(2)


def _source(u):
    return 0.85 * u


class ToyExperiment(Experiment):
    name = "toy"
    command = "toy"
    config_class = ToyConfig
    title = "Toy decay"
    parameter = "a"
    metrics = {"l2": experiment.relative_l2, "max_abs": max_abs}  # noqa: RUF012
    losses = {**LOSSES, "LAST": LossKind(last_frame_loss, unroll=True)}  # noqa: RUF012

    def make_data(self, split, *, cache, progress):
        values = getattr(self.cfg.data, split)
        a = torch.tensor(values, dtype=torch.float64)
        u0 = torch.linspace(0.5, 1.0, 3, dtype=torch.float64).expand(len(values), 1, 3)
        ref = torch.stack([u0 * a.view(-1, 1, 1) ** t for t in range(self.cfg.data.steps + 1)], dim=1)
        return Trajectories(ref, a, tuple(values), torch.arange(len(values)))

    def source(self, params):
        return _source

    def condition(self, params):
        return {"a": params}

    def make_model(self, seed):
        torch.manual_seed(seed)
        return ToyModel()

    def train_values(self):
        return self.cfg.data.train


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(experiment.EXPERIMENTS, "toy", f"{__name__}:ToyExperiment")
    ensure_init()
    return ToyExperiment(ToyConfig())


def _without_timings(m: dict) -> dict:
    m = json.loads(json.dumps(m))
    m.pop("datagen_seconds", None)
    for by_variant in m["training"].values():
        for runs in by_variant.values():
            for r in runs:
                r.pop("seconds")
    return m


def test_toy_experiment_through_the_one_driver(toy, tmp_path):
    out = tmp_path / "run"
    m = experiment.run(toy, out, progress=False)
    assert m["metrics"] == ["l2", "max_abs"] and m["parameter"] == "a" and m["test_values"] == [0.7, 0.9]
    assert m["regime"] == ["extrapolation", "interpolation"]  # 0.7 below the training range [0.8, 1.0]
    assert set(m["variants"]["updates"]) == {"NON", "SOL-2", "LAST-3"}
    for variant, by_h in m["variants"]["updates"].items():
        assert set(by_h) == {"3", "6"} and len(by_h["6"]["max_abs"]["per_test"]) == 2
        assert m["training"]["updates"][variant][0]["iterations"] == 8
    assert set(m["error_over_time"]) == {"l2", "max_abs"} and len(m["error_over_time"]["l2"]["source"]) == 6
    source = m["source"]["6"]["l2"]["mean"]
    assert source > 0.05 and m["best"]["value"] < source  # training helps the toy
    for name in ("config.json", "metrics.json", "report.md", "plots/error_over_time.png"):
        assert (out / name).is_file(), name
    for name in ("non.pt", "sol-2.pt", "last-3.pt", "non.0.state.pt", "last-3.0.state.pt"):
        assert (out / "checkpoints" / "updates" / "seed0" / name).is_file(), name
    text = (out / "report.md").read_text()
    assert "| test a | regime | source | NON | SOL-2 | LAST-3 |" in text and "| max_abs (all) |" in text
    assert json.loads((out / "config.json").read_text()) == toy.config_json(ensure_init())

    # the run-folder rules of every experiment
    with pytest.raises(FileExistsError, match="--resume"):
        experiment.run(toy, out, progress=False)
    other = ToyExperiment(config.apply_overrides(toy.cfg, ["train.lr=0.5", "eval.horizons=6"]))
    with pytest.raises(ValueError, match=r"train\.lr: saved 0\.2, now 0\.5; eval\.horizons: saved \[3, 6\], now \[6\]"):
        experiment.run(other, out, progress=False, resume=True)
    before = (out / "config.json").read_bytes()
    free = ToyExperiment(config.apply_overrides(toy.cfg, ["train.save_every=3"]))  # does not change the result
    assert _without_timings(experiment.run(free, out, progress=False, resume=True)) == _without_timings(m)
    assert (out / "config.json").read_bytes() == before
    assert _without_timings(experiment.evaluate_run(out, progress=False)) == _without_timings(m)

    # config.json reproduces the run bit for bit in a new folder
    raw = config.load_file(out / "config.json")
    again = ToyExperiment(config.from_dict(ToyConfig, config.split_meta(raw)[0]))
    assert _without_timings(experiment.run(again, tmp_path / "again", progress=False)) == _without_timings(m)

    cfg, models = experiment.load_run(out)
    assert cfg == toy.cfg and set(models) == {"NON", "SOL-2", "LAST-3"} and not models["NON"].training


def test_a_multi_stage_variant_shares_the_budget_and_resumes_per_stage(toy, tmp_path):
    cfg = config.apply_overrides(toy.cfg, ["train.variants=NON+LAST-2", "train.iterations=5", "train.seeds=0,1"])
    m = experiment.run(ToyExperiment(cfg), tmp_path / "run", progress=False)
    runs = m["training"]["updates"]["NON+LAST-2"]
    assert [r["iterations"] for r in runs] == [4, 4] and [r["seed"] for r in runs] == [0, 1]  # 5 // 2 each stage
    assert len(m["variants"]["updates"]["NON+LAST-2"]["3"]["l2"]["per_seed"]) == 2
    folder = tmp_path / "run" / "checkpoints" / "updates" / "seed1"
    assert sorted(p.name for p in folder.iterdir()) == ["non_last-2.0.state.pt", "non_last-2.1.state.pt", "non_last-2.pt"]


# ------------------------------------------------------------------------------------------------ karman and burgers
BURGERS_SMALL = [  # the quick preset at a small size (seconds)
    "data.steps=8", "data.train.states=2", "data.test.states=1", "data.train.nus=0.005,0.02", "data.test.nus=0.003,0.01",
    "model.width=8", "model.blocks=1", "train.iterations=5", "train.batch_size=4", "train.variants=NON,SOL-2",
    "eval.horizons=4,8",
]  # fmt: skip


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """Each experiment run twice through the command line: from a preset, then from the first run's
    config.json into a new folder (the runtime, f64 here, comes from the file)."""
    root = tmp_path_factory.mktemp("reproduce")
    cache = str(root / "cache")
    commands = {
        "karman": ["train", "karman", "--preset", "tiny", "--cache", cache],
        "burgers": ["burgers", "--preset", "quick", *BURGERS_SMALL],
    }
    runs = {}
    for name, first in commands.items():
        a, b = root / name / "a", root / name / "b"
        assert cli.main([*first, "--out", str(a), "--no-progress", "--precision", "f64"]) == 0
        second = [first[0], *(first[1:2] if first[0] == "train" else []), "--config", str(a / "config.json"), "--out", str(b)]
        extra = ["--no-progress", *(["--cache", cache] if name == "karman" else [])]
        assert cli.main([*second, *extra]) == 0
        runs[name] = (a, b, second, extra)
    return runs


@pytest.mark.slow  # a tiny karman study and a small burgers run, twice each (~80 s on 2 cores)
@pytest.mark.parametrize("name", ["karman", "burgers"])
def test_config_json_reproduces_the_run_exactly(reproduced, name):
    a, b, _, _ = reproduced[name]
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()
    assert json.loads((a / "config.json").read_text())["precision"] == "f64"
    ma, mb = (json.loads((x / "metrics.json").read_text()) for x in (a, b))
    assert _without_timings(ma) == _without_timings(mb)  # every number but the timings, bit for bit
    assert all(math.isfinite(v) for v in ma["error_over_time"][ma["metrics"][0]]["source"])


@pytest.mark.slow  # uses the runs above; each resume re-evaluates (~10 s)
@pytest.mark.parametrize("name", ["karman", "burgers"])
def test_the_same_run_folder_rules_for_every_experiment(reproduced, name, capsys):
    _, b, command, extra = reproduced[name]
    before = (b / "config.json").read_bytes()
    assert cli.main([*command, *extra]) == 2
    assert "already holds a run: pass resume=True (--resume)" in capsys.readouterr().err
    assert cli.main([*command, *extra, "--resume", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: saved" in err and "only train.save_every may change" in err
    assert cli.main([*command, *extra, "--resume", "--checkpoint-every", "3"]) == 0  # a result-neutral change
    assert (b / "config.json").read_bytes() == before
    assert cli.main(["eval", str(b), *extra]) == 0  # eval reads the experiment from config.json
    assert Path(b / "report.md").read_text().startswith("# ")
    assert io.read_json(b / "metrics.json", unverified="error")["experiment"] == name
