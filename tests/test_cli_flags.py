"""Every command-line flag of ``train karman``, ``datagen karman`` and ``burgers`` reaches the configuration
it names, and nothing else changes: ``taichi_dp.cli.main(argv)`` runs in-process with the experiment's
``run`` (or the data generator) replaced by a recorder, so no training runs. Only valid values are tested
here (refusals: tests/test_cli.py). One real ``datagen karman --preset tiny`` runs in a subprocess."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import taichi_dp
from taichi_dp import cli
from taichi_dp.learn import burgers_experiment, karman_data, karman_experiment
from taichi_dp.learn.burgers_experiment import BurgersExperimentConfig
from taichi_dp.learn.karman_experiment import KarmanExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {name: (lambda name=name: KarmanExperimentConfig.preset(name)) for name in ("quick", "medium", "paper", "tiny")}


@pytest.fixture
def recorder(monkeypatch, tmp_path):
    """Replace the work of a command by recorders: ``calls["run"]`` (cfg, out, kwargs) of an experiment,
    ``calls["data"]`` the data configurations generated, ``calls["init"]``/``calls["threads"]`` the
    runtime set-up. Taichi and torch's thread count are left as they are."""
    calls: dict[str, list] = {"run": [], "data": [], "init": [], "threads": []}

    def fake_run(cfg, out, **kw):
        calls["run"].append((cfg, Path(out), kw))
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.md").write_text("# report\n")
        return {}

    def fake_data(cfg, cache, **kw):
        calls["data"].append((cfg, Path(cache)))
        return {"velocity": torch.zeros(len(cfg.reynolds), cfg.steps + 1, 2, 65, 33), "reynolds": torch.tensor(cfg.reynolds)}

    monkeypatch.setattr(karman_experiment, "run", fake_run)
    monkeypatch.setattr(burgers_experiment, "run", fake_run)
    monkeypatch.setattr(karman_data, "load_or_generate", fake_data)
    monkeypatch.setattr(taichi_dp, "init", lambda *a, **k: calls["init"].append((a, k)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls["threads"].append(n))
    monkeypatch.chdir(tmp_path)  # default --out / --cache folders land here, never in the repository
    return calls


def _main(*argv: str) -> int:
    return cli.main(list(argv))


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{dotted key: value}`` of a nested configuration dict (lists as tuples)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


def _diff(base, cfg) -> dict:
    """The dotted fields of ``cfg`` that differ from ``base`` (two configurations)."""
    a, b = _flat(dataclasses.asdict(base)), _flat(dataclasses.asdict(cfg))
    return {k: v for k, v in b.items() if a[k] != v}


def _changes(preset: str, cfg) -> dict:
    """The fields of ``cfg`` that differ from the karman preset's configuration (dotted names)."""
    return _diff(PRESETS[preset](), cfg)


# ----------------------------------------------------------------------------------------- train karman
@pytest.mark.parametrize("preset", list(PRESETS))
def test_train_karman_presets_are_the_preset_configurations(recorder, tmp_path, preset):
    out = tmp_path / "run"
    assert _main("train", "karman", "--preset", preset, "--out", str(out), "--no-progress") == 0
    ((cfg, got_out, kw),) = recorder["run"]
    assert isinstance(cfg, KarmanExperimentConfig) and _changes(preset, cfg) == {}
    assert got_out == out and kw == {"cache": "runs/cache", "progress": False, "resume": False, "log": "none"}
    assert recorder["init"] == [(("cpu", "f32"), {})]  # the defaults: CPU, float32
    assert recorder["threads"] == [1]


def test_train_karman_default_preset_is_quick(recorder):
    assert _main("train", "karman", "--no-progress") == 0
    ((cfg, out, _),) = recorder["run"]
    assert _changes("quick", cfg) == {} and out == Path("runs/karman")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--variants", "SOL-2, NON,"], {"train.variants": ("SOL-2", "NON")}),
        (["--variants", "PRE-2,NON+SOL-2"], {"train.variants": ("PRE-2", "NON+SOL-2")}),
        (["--model", "cnn"], {"model.kind": "cnn", "model.width": 21}),
        (["--model", "unet"], {"model.width": 10}),  # tiny is a unet of width 4: the flag sets the standard width
        (["--iterations", "3"], {"train.iterations": 3}),
        (["--seconds", "2.5"], {"train.seconds": 2.5}),
        (["--protocols", "wall,updates"], {"train.protocols": ("wall", "updates")}),
        (["--seeds", "0,3,7"], {"train.seeds": (0, 3, 7)}),
        (["--reproject"], {"model.reproject": True}),
        (["--checkpoint-every", "3"], {"train.save_every": 3}),
        (["--threads", "2"], {}),
        (["train.seconds=300"], {"train.seconds": 300.0}),  # KEY=VALUE overrides anywhere after the command
        (
            ["train.variants=[\"NON\", \"PRE-3\"]", "eval.horizons=2,4"],
            {"train.variants": ("NON", "PRE-3"), "eval.horizons": (2, 4)},
        ),
        (["--iterations", "3", "train.iterations=5"], {"train.iterations": 5}),  # KEY=VALUE beats a flag
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_train_karman_flag_sets_its_field_and_nothing_else(recorder, tmp_path, flags, expected):
    assert _main("train", "karman", "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress", *flags) == 0
    ((cfg, _, _),) = recorder["run"]
    assert _changes("tiny", cfg) == expected
    assert recorder["threads"] == [2 if "--threads" in flags else 1]


def test_train_karman_all_flags_together(recorder, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"
    argv = ["train", "karman", "--preset", "tiny", "--out", str(out), "--cache", str(cache), "--variants", "NON,SOL-3",
            "--model", "cnn", "--iterations", "5", "--seconds", "1.5", "--protocols", "updates,wall", "--seeds", "1,2",
            "--reproject", "--threads", "3", "--checkpoint-every", "4", "--resume", "--precision", "f64", "--arch", "cpu",
            "--no-progress"]
    assert _main(*argv) == 0
    ((cfg, got_out, kw),) = recorder["run"]
    assert _changes("tiny", cfg) == {
        "train.variants": ("NON", "SOL-3"), "model.kind": "cnn", "model.width": 21, "train.iterations": 5,
        "train.seconds": 1.5, "train.protocols": ("updates", "wall"), "train.seeds": (1, 2), "model.reproject": True,
        "train.save_every": 4,
    }
    assert got_out == out and kw == {"cache": str(cache), "progress": False, "resume": True, "log": "none"}
    assert recorder["init"] == [(("cpu", "f64"), {})] and recorder["threads"] == [3]


def test_train_karman_flags_on_other_presets(recorder, tmp_path):
    """Flags override the quick and paper presets the same way (the preset is the base, not tiny)."""
    for preset in ("quick", "medium", "paper"):
        recorder["run"].clear()
        assert _main("train", "karman", "--preset", preset, "--out", str(tmp_path / preset), "--no-progress",
                     "--iterations", "7", "--seeds", "4") == 0
        ((cfg, _, _),) = recorder["run"]
        assert _changes(preset, cfg) == {"train.iterations": 7, "train.seeds": (4,)}


# ----------------------------------------------------------------------------------------- datagen karman
@pytest.mark.parametrize("preset", list(PRESETS))
def test_datagen_karman_generates_the_presets_train_and_test_data(recorder, tmp_path, capsys, preset):
    cache = tmp_path / "cache"
    assert _main("datagen", "karman", "--preset", preset, "--cache", str(cache), "--no-progress", "--threads", "2") == 0
    cfg = PRESETS[preset]()
    assert recorder["data"] == [(cfg.data.train, cache), (cfg.data.test, cache)]
    assert recorder["run"] == [] and recorder["threads"] == [2] and recorder["init"] == [(("cpu", "f32"), {})]
    text = capsys.readouterr().out
    assert f"karman-{cfg.data.train.key()}.pt" in text and f"karman-{cfg.data.test.key()}.pt" in text


@pytest.mark.slow  # a Python start, Taichi compiles, a small 2x reference simulation
def test_datagen_karman_tiny_end_to_end(tmp_path):
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "taichi_dp", "datagen", "karman", "--preset", "tiny", "--cache", str(cache), "--no-progress"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = KarmanExperimentConfig.preset("tiny").data
    files = sorted(f.name for f in cache.glob("karman-*.pt"))
    assert files == sorted({f"karman-{cfg.train.key()}.pt", f"karman-{cfg.test.key()}.pt"}), files
    data = karman_data.load_or_generate(cfg.train, cache, progress=False)  # the cached file, read back
    assert tuple(data["velocity"].shape[:2]) == (len(cfg.train.reynolds), cfg.train.steps + 1)
    assert bool(torch.isfinite(data["velocity"]).all()) and float(data["velocity"].abs().max()) > 0.1
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # verified, not regenerated
    assert again.returncode == 0 and again.stdout.count("velocity") == 2, again.stderr[-3000:]


# ----------------------------------------------------------------------------------------- burgers
def test_burgers_default_and_quick_configurations(recorder, tmp_path):
    assert _main("burgers", "--out", str(tmp_path / "a"), "--no-progress") == 0
    assert _main("burgers", "--quick", "--out", str(tmp_path / "b"), "--no-progress") == 0
    assert _main("burgers", "--preset", "quick", "--out", str(tmp_path / "c"), "--no-progress") == 0
    (full, out_a, kw_a), (quick, out_b, _), (quick2, _, _) = recorder["run"]
    assert isinstance(full, BurgersExperimentConfig)
    assert full == BurgersExperimentConfig() == BurgersExperimentConfig.preset("default")
    assert quick == quick2 == BurgersExperimentConfig.preset("quick")
    assert (out_a, out_b) == (tmp_path / "a", tmp_path / "b") and kw_a == {"progress": False, "resume": False, "log": "none"}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--iterations", "9"], {"train.iterations": 9}),
        (["--unroll", "2"], {"train.variants": ("NON", "SOL-2")}),
        (["--seed", "5"], {"data.seed": 5, "train.seeds": (5,)}),  # one seed: data, initialisation, sampling
        (["--seeds", "1,2"], {"train.seeds": (1, 2)}),  # the train flags every experiment shares
        (["--seconds", "3", "--protocols", "wall"], {"train.seconds": 3.0, "train.protocols": ("wall",)}),
        (["--variants", "NON,PRE-2,SOL-3", "--unroll", "5"], {"train.variants": ("NON", "PRE-2", "SOL-5")}),
        (["--checkpoint-every", "4"], {"train.save_every": 4}),
        (["data.test.states=1", "model.width=8"], {"data.test.states": 1, "model.width": 8}),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_burgers_flag_sets_its_field(recorder, tmp_path, flags, expected):
    assert _main("burgers", "--quick", "--out", str(tmp_path / "run"), "--no-progress", *flags) == 0
    ((cfg, _, _),) = recorder["run"]
    assert _diff(BurgersExperimentConfig.preset("quick"), cfg) == expected


def test_burgers_runtime_flags(recorder, tmp_path):
    assert _main("burgers", "--quick", "--out", str(tmp_path / "run"), "--precision", "f64", "--threads", "2") == 0
    ((_, _, kw),) = recorder["run"]
    assert recorder["init"] == [(("cpu", "f64"), {})] and recorder["threads"] == [2] and kw["progress"] is True


def test_recorded_run_configuration_is_json_serialisable(recorder, tmp_path):
    """What the command hands to ``run`` is what ends up in config.json: it must serialise."""
    assert _main("train", "karman", "--preset", "tiny", "--out", str(tmp_path / "run"), "--variants", "NON") == 0
    ((cfg, _, _),) = recorder["run"]
    assert json.loads(json.dumps(dataclasses.asdict(cfg)))["train"]["variants"] == ["NON"]
