"""Configuration files (:mod:`taichi_dp.learn.config`): TOML presets and files, a run folder's JSON,
``key=value`` overrides parsed by field type, every error message, the precedence preset/file < flags <
KEY=VALUE, and the shipped presets equal the Python presets they replaced. No Taichi kernel runs here."""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from taichi_dp.learn import config, io
from taichi_dp.learn.burgers_experiment import BurgersExperiment, BurgersExperimentConfig, InverseConfig, configure_inverse
from taichi_dp.learn.karman_experiment import KarmanExperiment, KarmanExperimentConfig


@dataclass
class Inner:
    count: int = 1
    rate: float = 0.5
    on: bool = False
    name: str = "a"
    items: tuple[int, ...] = (1, 2)
    limit: float | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    tags: tuple[str, ...] = ("x",)


# ------------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("inner.count=7", {"inner": {"count": 7}}),
        ("inner.rate=2", {"inner": {"rate": 2.0}}),
        ("inner.rate=1e-3", {"inner": {"rate": 1e-3}}),
        ("inner.on=true", {"inner": {"on": True}}),
        ("inner.on=0", {"inner": {"on": False}}),
        ("inner.name=hello world", {"inner": {"name": "hello world"}}),
        ("inner.items=3,4, 5,", {"inner": {"items": (3, 4, 5)}}),
        ("inner.items=[6, 7]", {"inner": {"items": (6, 7)}}),
        ("inner.items=", {"inner": {"items": ()}}),
        ("inner.limit=2.5", {"inner": {"limit": 2.5}}),
        ("inner.limit=none", {"inner": {"limit": None}}),
        ('tags=["a,b", "c"]', {"tags": ("a,b", "c")}),  # a TOML array keeps commas inside strings
        ("tags=p,q", {"tags": ("p", "q")}),
    ],
)
def test_overrides_are_parsed_by_the_field_type(override, expected):
    cfg = config.apply_overrides(Outer(), [override])
    base = config.to_dict(Outer())
    for section, value in expected.items():
        if isinstance(value, dict):
            base[section].update(value)
        else:
            base[section] = value
    assert cfg == config.from_dict(Outer, base)
    assert isinstance(cfg.inner.items, tuple) and Outer() == Outer()  # the input is not modified


def test_typed_overrides_and_order():
    cfg = config.apply_overrides(Outer(), {"inner.count": 3, "inner.rate": 4, "tags": ["z"]})
    assert (cfg.inner.count, cfg.inner.rate, cfg.tags) == (3, 4.0, ("z",)) and isinstance(cfg.inner.rate, float)
    assert config.apply_overrides(Outer(), ["inner.count=2", "inner.count=9"]).inner.count == 9  # the last one wins


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inner.count=1.5", "inner.count: expected int, got '1.5'"),
        ("inner.rate=fast", "inner.rate: expected float, got 'fast'"),
        ("inner.on=maybe", "inner.on: expected bool, got 'maybe'"),
        ("inner.items=1,x", "inner.items: expected list of int, got '1,x'"),
        ("inner.items=[1, ", "inner.items: expected list of int, got '[1, '"),
        ("inner.limit=big", "inner.limit: expected float or none, got 'big'"),
        (
            "inner.size=3",
            "unknown configuration key 'inner.size' in section [inner]; valid keys: count, rate, on, name, items, limit",
        ),
        ("outer=3", "unknown configuration key 'outer' in the top level; valid keys: inner, tags"),
        ("inner=3", "inner is a section, not a value: set its keys (inner.count, inner.rate"),
        ("tags.first=3", "tags is a value, not a section"),
        ("inner.count", "override must be KEY=VALUE with a dotted KEY (e.g. train.seconds=300), got 'inner.count'"),
        ("=3", "override must be KEY=VALUE"),
    ],
)
def test_override_errors_name_the_key_the_type_and_the_value(override, message):
    with pytest.raises(ValueError) as e:
        config.apply_overrides(Outer(), [override])
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inner": {"count": "3"}}, "inner.count: expected int, got '3'"),
        ({"inner": {"count": True}}, "inner.count: expected int, got True"),
        ({"inner": {"rate": "x"}}, "inner.rate: expected float, got 'x'"),
        ({"inner": {"on": 1}}, "inner.on: expected bool, got 1"),
        ({"inner": {"items": 3}}, "inner.items: expected list of int, got 3"),
        ({"inner": {"name": 3}}, "inner.name: expected str, got 3"),
        ({"inner": {"bogus": 3}}, "unknown configuration key 'bogus' in section [inner]; valid keys: count, rate"),
        ({"extra": {}}, "unknown configuration key 'extra' in the top level; valid keys: inner, tags"),
        ({"inner": 5}, "inner: expected a table of keys, got 5"),
    ],
)
def test_file_values_are_checked_against_the_field_types(data, message):
    with pytest.raises(ValueError) as e:
        config.from_dict(Outer, data)
    assert message in str(e.value)


def test_missing_keys_keep_the_defaults_and_lists_become_tuples():
    cfg = config.from_dict(Outer, {"inner": {"items": [4]}, "tags": []})
    assert cfg == Outer(inner=Inner(items=(4,)), tags=())


# ------------------------------------------------------------------------------------------------ files
def test_toml_and_json_files(tmp_path):
    toml = tmp_path / "study.toml"
    toml.write_text('tags = ["a"]\n[inner]\ncount = 4\nrate = 1\n')
    assert config.from_dict(Outer, config.load_file(toml)) == Outer(Inner(count=4, rate=1.0), ("a",))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"inner": {"on": True}}))  # a hand-written JSON file: no sidecar needed
    assert config.from_dict(Outer, config.load_file(plain)).inner.on is True
    written = io.write_json(tmp_path / "config.json", config.to_dict(Outer(tags=("q",))))  # a run folder's
    assert config.from_dict(Outer, config.load_file(written)) == Outer(tags=("q",))
    written.write_text(written.read_text().replace('"q"', '"r"'))  # edited after it was written: refused
    with pytest.raises(io.IntegrityError, match=r"config\.json is corrupt"):
        config.load_file(written)


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("missing.toml", None, FileNotFoundError, "missing.toml not found"),
        ("study.yaml", "a: 1", ValueError, "must be a .toml or .json file, got suffix '.yaml'"),
        ("broken.toml", "[inner\ncount = 1", ValueError, "broken.toml is not valid TOML"),
        ("list.json", "[1, 2]", ValueError, "must hold a table of sections, got list"),
        ("broken.json", "{not json", ValueError, "broken.json is corrupt"),
    ],
)
def test_file_errors_name_the_file(tmp_path, name, content, error, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=message.replace(".", r"\.").replace("(", r"\(").replace("[", r"\[")):
        config.load_file(path)


# ------------------------------------------------------------------------------------------------ presets
def test_shipped_presets_are_listed():
    assert config.preset_names("karman") == ["medium", "paper", "quick", "tiny"]
    assert config.preset_names("burgers") == ["default", "quick"]
    with pytest.raises(ValueError, match="preset must be one of medium, paper, quick, tiny for karman, got 'huge'"):
        config.preset_file("karman", "huge")


def _old_karman_data(reynolds, steps, warmup=100, factor=4, perturbation=1.0):
    return {
        "reynolds": tuple(reynolds),
        "scale": 1,
        "factor": factor,
        "warmup": warmup,
        "steps": steps,
        "perturbation": perturbation,
    }


TRAIN_RE = (125.5, 175.1, 340.8, 475.4, 925.0, 1290.4)
TEST_RE = (90.0, 244.3, 663.1, 1800.0)
OLD_KARMAN = {  # the values of the KarmanExperimentConfig.quick()/paper()/tiny() classmethods the files replace
    "quick": dict(train=_old_karman_data(TRAIN_RE, 60), test=_old_karman_data(TEST_RE, 100), variants=("NON", "SOL-4"),
                  model="unet", width=10, blocks=2, padding_mode="zeros", reproject=False, iterations=400, batch_size=4,
                  lr=1e-3, lr_final_factor=0.01, protocols=("wall",), wall_seconds=150.0, seeds=(0,), horizons=(100,),
                  checkpoint_every=0, save_every=50),
    "paper": dict(train=_old_karman_data(TRAIN_RE, 300, 150), test=_old_karman_data(TEST_RE, 500, 150),
                  variants=("NON", "PRE-4", "SOL-4", "SOL-16", "SOL-32", "NON+SOL-16"), model="unet", width=10, blocks=2,
                  padding_mode="zeros", reproject=False, iterations=10_000, batch_size=8, lr=1e-3, lr_final_factor=0.01,
                  protocols=("updates", "wall"), wall_seconds=1800.0, seeds=(0, 1, 2), horizons=(100, 250, 500),
                  checkpoint_every=8, save_every=200),
    "tiny": dict(train=_old_karman_data((150.0, 300.0), 4, 1, 2, 0.1), test=_old_karman_data((100.0, 200.0, 400.0), 4, 1, 2, 0.1),
                 variants=("NON", "SOL-2"), model="unet", width=4, blocks=1, padding_mode="zeros", reproject=False,
                 iterations=6, batch_size=2, lr=1e-4, lr_final_factor=0.01, protocols=("updates",), wall_seconds=150.0,
                 seeds=(0,), horizons=(4,), checkpoint_every=0, save_every=2),
}  # fmt: skip


@pytest.mark.parametrize("name", list(OLD_KARMAN))
def test_karman_preset_files_equal_the_old_python_presets(name):
    old, cfg = OLD_KARMAN[name], KarmanExperimentConfig.preset(name)
    assert dataclasses.asdict(cfg.data) == {"train": old["train"], "test": old["test"]}
    names = {"kind": "model", "width": "width", "blocks": "blocks", "padding_mode": "padding_mode", "reproject": "reproject"}
    assert dataclasses.asdict(cfg.model) == {k: old[m] for k, m in names.items()}
    t = cfg.train
    assert (t.variants, t.protocols, t.seeds, t.iterations, t.seconds, t.batch_size, t.lr, t.lr_final_factor) == (
        old["variants"], old["protocols"], old["seeds"], old["iterations"], old["wall_seconds"], old["batch_size"],
        old["lr"], old["lr_final_factor"],
    )  # fmt: skip
    assert (t.save_every, t.unroll_checkpoint, cfg.eval.horizons) == (old["save_every"], old["checkpoint_every"], old["horizons"])
    if name == "quick":
        assert cfg == KarmanExperimentConfig()  # the dataclass defaults are the default preset


OLD_BURGERS = {  # BurgersExperimentConfig() and BurgersExperimentConfig.quick() before the files
    "default": dict(n=32, factor=4, dt=1 / 32, steps=64, train_nus=(0.003, 0.0055, 0.01, 0.018, 0.032),
                    test_nus=(0.002, 0.004, 0.0075, 0.014, 0.024, 0.045), train_states=16, test_states=8, unroll=8,
                    width=32, blocks=2, iterations=600, batch_size=32, lr=1e-3, lr_final_factor=0.01, seed=0),
    "quick": dict(n=32, factor=4, dt=1 / 32, steps=32, train_nus=(0.003, 0.0055, 0.01, 0.018, 0.032),
                  test_nus=(0.002, 0.004, 0.0075, 0.014, 0.024, 0.045), train_states=4, test_states=2, unroll=4,
                  width=32, blocks=2, iterations=60, batch_size=16, lr=1e-3, lr_final_factor=0.01, seed=0),
}  # fmt: skip


@pytest.mark.parametrize("name", list(OLD_BURGERS))
def test_burgers_preset_files_equal_the_old_python_presets(name):
    old, cfg = OLD_BURGERS[name], BurgersExperimentConfig.preset(name)
    d, t = cfg.data, cfg.train
    assert (d.n, d.factor, d.dt, d.steps, d.seed) == (old["n"], old["factor"], old["dt"], old["steps"], old["seed"])
    assert (d.train.nus, d.train.states, d.test.nus, d.test.states) == (
        old["train_nus"], old["train_states"], old["test_nus"], old["test_states"],
    )  # fmt: skip
    assert (cfg.model.width, cfg.model.blocks, cfg.model.kernel_size) == (old["width"], old["blocks"], 5)
    assert t.variants == ("NON", f"SOL-{old['unroll']}") and t.protocols == ("updates",) and t.seeds == (old["seed"],)
    assert (t.iterations, t.batch_size, t.lr, t.lr_final_factor, t.save_every) == (
        old["iterations"], old["batch_size"], old["lr"], old["lr_final_factor"], 0,
    )  # fmt: skip
    assert cfg.eval.horizons == (old["steps"],)  # the old report averaged over the whole rollout
    if name == "default":
        assert cfg == BurgersExperimentConfig()


def test_every_preset_file_sets_every_key():
    """A preset is a complete, readable record: no key is left to the dataclass defaults."""
    for experiment, cls in (("karman", KarmanExperimentConfig), ("burgers", BurgersExperimentConfig)):
        for name in config.preset_names(experiment):
            raw = config.load_file(config.preset_file(experiment, name))
            assert set(_keys(raw)) == set(_keys(config.to_dict(cls()))), (experiment, name)


def _keys(tree: dict, prefix: str = "") -> list[str]:
    return [k for key, v in tree.items() for k in (_keys(v, f"{prefix}{key}.") if isinstance(v, dict) else [f"{prefix}{key}"])]


# ------------------------------------------------------------------------------------------------ precedence
def test_precedence_preset_or_file_then_flags_then_key_value(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text("[train]\niterations = 11\nseconds = 5.0\n[eval]\nhorizons = [50]\n")
    cfg, runtime = KarmanExperiment.configure(config=study)
    assert (cfg.train.iterations, cfg.train.seconds, cfg.eval.horizons) == (11, 5.0, (50,))
    assert cfg.train.variants == KarmanExperimentConfig().train.variants and runtime == {}  # the rest: defaults
    flags = {"iterations": 12, "seconds": 6.0, "seeds": "1,2", "model": "cnn"}
    cfg, _ = KarmanExperiment.configure(config=study, flags=flags)
    assert (cfg.train.iterations, cfg.train.seconds, cfg.train.seeds, cfg.model.kind, cfg.model.width) == (
        12,
        6.0,
        (1, 2),
        "cnn",
        21,
    )
    cfg, _ = KarmanExperiment.configure(config=study, flags=flags, overrides=["train.seconds=300", "model.width=8"])
    assert (cfg.train.iterations, cfg.train.seconds, cfg.model.width) == (12, 300.0, 8)
    cfg, _ = KarmanExperiment.configure(preset="tiny", flags={"iterations": 3}, overrides=["train.iterations=4"])
    assert cfg.train.iterations == 4 and cfg.model.width == 4
    assert KarmanExperiment.configure()[0] == KarmanExperimentConfig()  # no preset, no file: the default preset
    assert BurgersExperiment.configure()[0] == BurgersExperimentConfig()


def test_a_run_folders_config_json_carries_its_runtime(tmp_path):
    cfg = KarmanExperimentConfig.preset("tiny")
    path = io.write_json(
        tmp_path / "config.json", {"experiment": "karman", **config.to_dict(cfg), "arch": "cuda", "precision": "f64"}
    )
    again, runtime = KarmanExperiment.configure(config=path)
    assert again == cfg and runtime == {"arch": "cuda", "precision": "f64"}
    from taichi_dp.learn.experiment import runtime_choice

    assert runtime_choice(None, None, runtime) == ("cuda", "f64")  # --arch/--precision not given: the recorded ones
    assert runtime_choice("cpu", None, runtime) == ("cpu", "f64")
    assert runtime_choice(None, None, {}) == ("cpu", "f32")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "tiny", "config": "x.toml"}, "--preset tiny and --config x.toml: give one of them"),
        ({"preset": "huge"}, "preset must be one of medium, paper, quick, tiny for karman, got 'huge'"),
        ({"overrides": ["train.seconds=0"]}, "train.seconds must be a finite number > 0, got 0.0"),
        ({"overrides": ["train.variants=SOL-0"]}, "train.variants: 'SOL-0' is not a variant"),
        ({"overrides": ["train.variants=NON-2"]}, "train.variants: 'NON-2' is not a variant"),
        (
            {"overrides": ["train.variants=SOL-99"]},
            "train.variants: SOL-99 needs 100 consecutive frames but data.train.steps is 60",
        ),
        ({"overrides": ["train.variants=NON,NON"]}, "train.variants must not repeat a value"),
        ({"overrides": ["train.protocols=fast"]}, "train.protocols: 'fast' is not 'updates' or 'wall'"),
        ({"overrides": ["train.seeds="]}, "train.seeds must be a non-empty list of integers >= 0, got ()"),
        ({"overrides": ["eval.horizons=101"]}, "eval.horizons (101,) must be non-empty, >= 1 and <= data.test.steps = 100"),
        ({"overrides": ["model.kind=mlp"]}, "model.kind must be 'cnn' or 'unet', got 'mlp'"),
        ({"overrides": ["data.test.scale=2"]}, "data.test.scale must equal data.train.scale = 1, got 2"),
        ({"overrides": ["data.train.reynolds="]}, "data.train.reynolds must be non-empty finite numbers > 0, got ()"),
        ({"overrides": ["train.lr=nan"]}, "train.lr must be a finite number > 0, got nan"),
    ],
)
def test_karman_configuration_errors(kwargs, message):
    with pytest.raises(ValueError) as e:
        KarmanExperiment.configure(**kwargs)
    assert message in str(e.value)


def test_a_file_of_another_experiment_or_with_unknown_keys_is_refused(tmp_path):
    burgers = io.write_json(
        tmp_path / "b" / "config.json", {"experiment": "burgers", **config.to_dict(BurgersExperimentConfig())}
    )
    with pytest.raises(ValueError, match=r"config\.json is for experiment 'burgers', not 'karman'"):
        KarmanExperiment.configure(config=burgers)
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nwall_seconds = 3\n")
    with pytest.raises(
        ValueError, match=r"bad\.toml: unknown configuration key 'wall_seconds' in section \[train\]; valid keys: variants"
    ):
        KarmanExperiment.configure(config=bad)


def test_burgers_unroll_and_seed_flags_and_errors():
    cfg, _ = BurgersExperiment.configure(preset="quick", flags={"unroll": 2, "seed": 3})
    assert cfg.train.variants == ("NON", "SOL-2") and cfg.data.seed == 3 and cfg.train.seeds == (3,)
    with pytest.raises(ValueError, match=r"train\.variants: SOL-1000 needs 1001 consecutive frames but data\.steps is 32"):
        BurgersExperiment.configure(preset="quick", flags={"unroll": 1000})
    with pytest.raises(ValueError, match=r"data\.train\.nus must be non-empty finite viscosities > 0, got \(\)"):
        BurgersExperiment.configure(overrides=["data.train.nus="])


def test_first_schema_run_configurations_are_migrated():
    """A config.json written before the sections existed reads as the same configuration today."""
    old = {"experiment": "karman", **{k: list(v) if isinstance(v, tuple) else v for k, v in OLD_KARMAN["quick"].items()
                                      if k not in ("iterations", "batch_size", "lr", "lr_final_factor")},
           "optim": {"iterations": 400, "batch_size": 4, "lr": 1e-3, "lr_final_factor": 0.01, "seed": 0,
                     "checkpoint_every": 0, "max_seconds": None}, "arch": "cpu", "precision": "f32"}  # fmt: skip
    body, meta = config.split_meta(KarmanExperiment.migrate(json.loads(json.dumps(old))))
    assert config.from_dict(KarmanExperimentConfig, body) == KarmanExperimentConfig() and meta["precision"] == "f32"
    q = OLD_BURGERS["default"]
    old = {"experiment": "burgers", **{k: q[k] for k in ("n", "factor", "dt", "steps", "train_nus", "test_nus", "train_states",
           "test_states", "unroll", "width", "blocks", "seed")}, "train": {"iterations": 600, "batch_size": 32, "lr": 1e-3,
           "lr_final_factor": 0.01, "seed": 0, "checkpoint_every": 0, "max_seconds": None}}  # fmt: skip
    body, _ = config.split_meta(BurgersExperiment.migrate(json.loads(json.dumps(old))))
    assert config.from_dict(BurgersExperimentConfig, body) == BurgersExperimentConfig()
    current = config.to_dict(BurgersExperimentConfig())
    assert BurgersExperiment.migrate(current) is current


def test_shipped_pretrained_configs_are_current_and_verified():
    root = Path(__file__).resolve().parents[1] / "models" / "pretrained"
    for name, exp in (("karman_quick", KarmanExperiment), ("burgers_quick", BurgersExperiment)):
        raw = io.read_json(root / name / "config.json", unverified="error")
        assert exp.migrate(raw) is raw  # already the current schema (migrated once through io.write_json)
        _, runtime = exp.configure(config=root / name / "config.json")
        assert runtime == {"arch": "cpu", "precision": "f32"}
    assert KarmanExperiment.configure(config=root / "karman_quick" / "config.json")[0] == KarmanExperimentConfig()
    assert BurgersExperiment.configure(config=root / "burgers_quick" / "config.json")[0] == BurgersExperimentConfig()


def test_inverse_configuration(tmp_path):
    assert configure_inverse() == (InverseConfig(300, 0.02), {})
    cfg, _ = configure_inverse(flags={"iterations": 5, "lr": None}, overrides=["lr=0.5"])
    assert cfg == InverseConfig(5, 0.5)
    path = io.write_json(
        tmp_path / "config.json", {"experiment": "burgers-inverse", "iterations": 7, "lr": 0.1, "arch": "cpu", "precision": "f64"}
    )
    assert configure_inverse(config=path) == (InverseConfig(7, 0.1), {"arch": "cpu", "precision": "f64"})
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got 0\.0"):
        configure_inverse(overrides=["lr=0"])
    with pytest.raises(ValueError, match="unknown configuration key 'steps' in the top level; valid keys: iterations, lr"):
        configure_inverse(overrides=["steps=3"])
