"""Silently wrong results: every file the project writes and reads back is verified, atomic writes are
crash-consistent, non-finite training stops before it damages a checkpoint, run folders are never reused
with other settings, and bad options are refused loudly."""

import json
import math
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from taichi_dp.learn import TrainConfig, io, train
from taichi_dp.learn import trainer as trainer_mod

# ----------------------------------------------------------------------------------------- helpers


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _flip_inside(path: Path, needle: bytes) -> None:
    """Flip one bit inside the first occurrence of ``needle`` (e.g. a tensor's raw bytes) in ``path``."""
    data = path.read_bytes()
    at = data.find(needle)
    assert at >= 0, "pattern not found in the file"
    _flip(path, at + len(needle) // 2)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------------------- 1. digests


def test_bit_rot_in_a_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "m.pt"
    w = torch.arange(64, dtype=torch.float64)
    io.save_checkpoint(path, {"w": w, "step": 3})
    assert torch.equal(io.load_checkpoint(path)["w"], w)
    _flip_inside(path, w.numpy().tobytes())  # torch.load does not check the zip CRCs: it would load other numbers
    with pytest.raises(io.IntegrityError, match=r"m\.pt is corrupt: damaged"):
        io.load_checkpoint(path)


def test_torn_checkpoint_write_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    io.save_checkpoint(path, {"w": torch.ones(1000)})
    full = path.read_bytes()
    for size in (len(full) - 1, len(full) - 100, len(full) // 2, 10):
        path.write_bytes(full[:size])
        with pytest.raises(ValueError, match=r"m\.pt"):
            io.load_checkpoint(path)


def test_checkpoint_stays_a_plain_torch_file_and_digest_record_damage_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    io.save_checkpoint(path, {"w": torch.ones(3)})
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))  # still torch.load-able
    _flip(path, len(path.read_bytes()) - 5)  # inside the recorded digest
    with pytest.raises(io.IntegrityError, match="damaged"):
        io.load_checkpoint(path)
    _flip(path, len(path.read_bytes()) - 5)
    _flip(path, len(path.read_bytes()) - 70)  # inside the marker: must not pass as an old file without digest
    with pytest.raises(io.IntegrityError, match="damaged"):
        io.load_checkpoint(path)


def test_checkpoint_without_digest_is_never_silently_trusted(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(3)}, path)  # a file of an older taichi_dp
    with pytest.warns(RuntimeWarning, match=r"old\.pt has no digest.*unverified"):
        assert torch.equal(io.load_checkpoint(path)["w"], torch.ones(3))
    with pytest.raises(io.IntegrityError, match="no digest"):
        io.load_checkpoint(path, unverified="error")


def test_json_files_are_verified_on_read(tmp_path):
    path = tmp_path / "config.json"
    io.write_json(path, {"a": 1, "b": [1.5, 2.5]})
    assert io.read_json(path) == {"a": 1, "b": [1.5, 2.5]}
    assert io.read_run_config(tmp_path, "x") == {"a": 1, "b": [1.5, 2.5]}
    path.write_text(path.read_text().replace("1.5", "1.6"))  # still valid JSON
    with pytest.raises(io.IntegrityError, match=r"config\.json is corrupt: damaged"):
        io.read_run_config(tmp_path, "x")
    io.sidecar(path).unlink()
    with pytest.warns(RuntimeWarning, match="no digest"):
        io.read_json(path)


def _fail_at_replace(monkeypatch, n: int) -> None:
    """Make the ``n``-th ``os.replace`` call (1-based) raise, as a crash between write and rename would."""
    real, calls = os.replace, {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError("injected fault between write and rename")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_fault_between_write_and_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    io.save_checkpoint(path, {"w": torch.zeros(4)})
    _fail_at_replace(monkeypatch, 1)
    with pytest.raises(OSError, match="injected"):
        io.save_checkpoint(path, {"w": torch.ones(4)})
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["w"], torch.zeros(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


@pytest.mark.parametrize("fault", [1, 2, 3])
def test_fault_in_any_rename_of_a_json_write_leaves_a_verifiable_file(tmp_path, monkeypatch, fault):
    path = tmp_path / "metrics.json"
    io.write_json(path, {"v": 1})
    _fail_at_replace(monkeypatch, fault)  # the sidecar (old + new digests), the file, the sidecar (new digest)
    with pytest.raises(OSError, match="injected"):
        io.write_json(path, {"v": 2})
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert io.read_json(path) == ({"v": 1} if fault <= 2 else {"v": 2})
    io.write_json(path, {"v": 3})
    assert io.read_json(path) == {"v": 3}
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_fault_in_text_and_figure_writes_keeps_the_previous_file(tmp_path, monkeypatch):
    io.write_text(tmp_path / "report.md", "old\n")
    _fail_at_replace(monkeypatch, 1)
    with pytest.raises(OSError, match="injected"):
        io.write_text(tmp_path / "report.md", "new\n")
    monkeypatch.undo()
    assert (tmp_path / "report.md").read_text() == "old\n"


def test_written_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        io.save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(1)})
        io.write_json(tmp_path / "c.json", {})
        io.write_text(tmp_path / "r.md", "x")
    finally:
        os.umask(old)
    for name in ("m.pt", "c.json", "c.json.sha256", "r.md"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_leftover_tmp_files_of_killed_writes_are_removed_by_the_next_write(tmp_path):
    host = io._host()
    stale = tmp_path / f".m.pt.{host}-{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".m.pt.{host}-{os.getpid()}.def456.tmp"  # a writer that still runs: kept
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    io.save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(1)})
    assert not stale.exists() and live.exists()


# ----------------------------------------------------------------------------------------- 3. training guards


def _linear_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1).double()
    x = torch.randn(32, 3, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)

    def loss(idx):
        return ((model(x[idx]) - y[idx]) ** 2).mean()

    return model, loss


def _poisoned(model, loss, at_call: int, kind: str):
    """``loss`` whose ``at_call``-th evaluation has a NaN loss (``kind="loss"``) or a finite loss with a NaN
    gradient (``kind="grad"``: ``0·√(0·w)`` is 0 but its derivative is 0·∞)."""
    calls = {"n": 0}

    def batch_loss(idx):
        calls["n"] += 1
        value = loss(idx)
        if calls["n"] == at_call:
            if kind == "loss":
                return value * float("nan")
            return value + 0.0 * torch.sqrt(0.0 * model.weight.sum())
        return value

    return batch_loss


def test_nan_gradient_with_finite_loss_stops_before_the_step_and_keeps_the_checkpoint(tmp_path):
    ckpt = tmp_path / "state.pt"
    cfg = TrainConfig(iterations=10, batch_size=4, lr=1e-2, checkpoint_every=1)
    model, loss = _linear_setup()
    with pytest.raises(FloatingPointError, match=r"gradient of weight.*iteration 4.*left untouched"):
        train(model, _poisoned(model, loss, 5, "grad"), 32, cfg, progress=False, checkpoint=ckpt)
    state = io.load_checkpoint(ckpt)
    assert len(state["losses"]) == 4 and all(math.isfinite(v) for v in state["losses"])
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step was never taken
    before = ckpt.read_bytes()
    # resuming replays the same batches from the last good state: it fails again, loudly, and keeps the file
    model2, loss2 = _linear_setup()
    with pytest.raises(FloatingPointError, match="iteration 4"):
        train(model2, _poisoned(model2, loss2, 1, "grad"), 32, cfg, progress=False, checkpoint=ckpt)
    assert ckpt.read_bytes() == before


def test_nan_loss_guard_fires_and_keeps_the_checkpoint(tmp_path):
    ckpt = tmp_path / "state.pt"
    cfg = TrainConfig(iterations=10, batch_size=4, checkpoint_every=1)
    model, loss = _linear_setup()
    with pytest.raises(FloatingPointError, match="loss became nan at iteration 2"):
        train(model, _poisoned(model, loss, 3, "loss"), 32, cfg, progress=False, checkpoint=ckpt)
    state = io.load_checkpoint(ckpt)
    assert len(state["losses"]) == 2 and all(torch.isfinite(t).all() for t in state["model"].values())


def test_cosine_learning_rate_schedule_values(monkeypatch):
    seen = []

    class SpyAdam(torch.optim.Adam):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", SpyAdam)
    cfg = TrainConfig(iterations=10, batch_size=4, lr=1e-2, lr_final_factor=0.01)
    model, loss = _linear_setup()
    train(model, loss, 32, cfg, progress=False)
    final = 1e-4
    expected = {0: 1e-2, 5: final + 0.5 * (1e-2 - final), 9: final + 0.5 * (1e-2 - final) * (1 + math.cos(0.9 * math.pi))}
    assert expected[5] == pytest.approx(0.00505, rel=1e-12) and expected[9] == pytest.approx(3.4227e-4, rel=1e-4)
    assert len(seen) == 10
    for it, value in expected.items():
        assert seen[it] == pytest.approx(value, rel=1e-12), it
    assert all(a > b for a, b in zip(seen, seen[1:]))  # monotone decay
    # the wall-clock schedule: whichever of the iteration and time fractions is further along
    assert trainer_mod.learning_rate(cfg, 0, 0.5) == pytest.approx(expected[5], rel=1e-12)
    assert trainer_mod.learning_rate(cfg, 0, 1.0) == pytest.approx(final, rel=1e-12)
    assert trainer_mod.learning_rate(cfg, 10, 0.0) == pytest.approx(final, rel=1e-12)
    assert trainer_mod.learning_rate(cfg, 9, 0.1) == pytest.approx(expected[9], rel=1e-12)


def test_damaged_trainer_state_is_refused_on_resume(tmp_path):
    ckpt = tmp_path / "state.pt"
    cfg = TrainConfig(iterations=4, batch_size=4, checkpoint_every=2)
    model, loss = _linear_setup()
    train(model, loss, 32, cfg, progress=False, checkpoint=ckpt)
    _flip(ckpt, len(ckpt.read_bytes()) // 2)
    with pytest.raises(ValueError, match=r"state\.pt.*damaged"):
        train(_linear_setup()[0], loss, 32, cfg, progress=False, checkpoint=ckpt)


def test_trainer_state_of_another_model_is_refused_naming_the_file(tmp_path):
    ckpt = tmp_path / "state.pt"
    cfg = TrainConfig(iterations=2, batch_size=4, checkpoint_every=1)
    model, loss = _linear_setup()
    train(model, loss, 32, cfg, progress=False, checkpoint=ckpt)
    other = torch.nn.Linear(4, 1).double()  # same TrainConfig, another model

    def other_loss(idx):
        return other(torch.ones(len(idx), 4, dtype=torch.float64)).sum()

    with pytest.raises(ValueError, match=r"state\.pt holds the trainer state of another model.*another shape.*weight"):
        train(other, other_loss, 32, cfg, progress=False, checkpoint=ckpt)
    bigger = torch.nn.Sequential(torch.nn.Linear(3, 1)).double()
    expected = r"another model \(2 missing parameter\(s\) \(e\.g\. 0\.weight\), 2 unexpected \(e\.g\. weight\)\)"
    with pytest.raises(ValueError, match=expected):
        train(bigger, loss, 32, cfg, progress=False, checkpoint=ckpt)


def _full_disk(monkeypatch) -> None:
    """Every file write of :mod:`taichi_dp.learn.io` lands on ``/dev/full`` (ENOSPC, as on a full disk)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    real = io._write_bytes
    monkeypatch.setattr(io, "_write_bytes", lambda tmp, data: real("/dev/full", data))


def test_full_disk_says_so_and_keeps_the_previous_files(tmp_path, monkeypatch):
    io.save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(3)})
    io.write_json(tmp_path / "metrics.json", {"a": 1})
    _full_disk(monkeypatch)
    with pytest.raises(OSError, match=r"no space left on device while writing .*m\.pt \(not written; any previous"):
        io.save_checkpoint(tmp_path / "m.pt", {"w": torch.zeros(3)})
    with pytest.raises(OSError, match=r"no space left on device while writing .*metrics\.json"):
        io.write_json(tmp_path / "metrics.json", {"a": 2})
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(tmp_path / "m.pt")["w"], torch.ones(3))
    assert io.read_json(tmp_path / "metrics.json") == {"a": 1}
    assert not list(tmp_path.glob(".*.tmp"))


def test_full_disk_is_one_error_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    from taichi_dp.cli import main

    _full_disk(monkeypatch)
    out = tmp_path / "run"
    assert main(["burgers-inverse", "--iterations", "1", "--no-progress", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("error: no space left on device while writing") and "config.json" in err[-1], err
    assert not (out / "config.json").exists()


def test_checkpoint_interval_may_change_on_resume(tmp_path):
    ckpt = tmp_path / "state.pt"
    model, loss = _linear_setup()
    full = train(model, loss, 32, TrainConfig(iterations=8, batch_size=4), progress=False)
    m2, l2 = _linear_setup()
    calls = {"n": 0}

    def interrupted(idx):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return l2(idx)

    with pytest.raises(KeyboardInterrupt):
        train(m2, interrupted, 32, TrainConfig(iterations=8, batch_size=4, checkpoint_every=2), progress=False, checkpoint=ckpt)
    m3, l3 = _linear_setup()
    resumed = train(m3, l3, 32, TrainConfig(iterations=8, batch_size=4, checkpoint_every=3), progress=False, checkpoint=ckpt)
    assert resumed.losses == full.losses


# ----------------------------------------------------------------------------------------- 1. run folders


@pytest.fixture(scope="module")
def karman_tiny(tmp_path_factory):
    """A finished tiny karman run folder (f64) and its metrics; tests work on copies."""
    from taichi_dp.learn.karman_experiment import KarmanExperimentConfig, run

    root = tmp_path_factory.mktemp("karman")
    cfg = KarmanExperimentConfig.preset("tiny")
    metrics = run(cfg, root / "run", cache=root / "cache", progress=False)
    return cfg, root / "run", root / "cache", metrics


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _weights_needle(path: Path) -> bytes:
    state = io.load_checkpoint(path)
    big = max(state["model"].values(), key=lambda t: t.numel())
    return big.contiguous().numpy().tobytes()


@pytest.mark.slow  # uses the tiny karman run
def test_bit_rot_in_run_weights_is_rebuilt_from_the_trainer_state_or_refused(karman_tiny, tmp_path):
    from taichi_dp.learn.karman_experiment import evaluate_run

    _, src, cache, metrics = karman_tiny
    out = _copy_run(src, tmp_path / "run")
    weights = out / "checkpoints" / "updates" / "seed0" / "sol-2.pt"
    good = io.load_checkpoint(weights)
    _flip_inside(weights, _weights_needle(weights))
    with pytest.warns(RuntimeWarning, match=r"sol-2\.pt.*damaged.*rebuilt"):
        again = evaluate_run(out, cache=cache, progress=False)
    assert again["variants"] == metrics["variants"]
    rebuilt = io.load_checkpoint(weights)  # verifies again, same content
    assert rebuilt["losses"] == good["losses"] and rebuilt["seconds"] == good["seconds"]
    assert all(torch.equal(rebuilt["model"][k], good["model"][k]) for k in good["model"])
    _flip_inside(weights, _weights_needle(weights))
    (out / "checkpoints" / "updates" / "seed0" / "sol-2.0.state.pt").unlink()
    with pytest.raises(io.IntegrityError, match=r"sol-2\.pt is corrupt: damaged"):
        evaluate_run(out, cache=cache, progress=False)


@pytest.mark.slow  # uses the tiny karman run
def test_resume_rebuilds_damaged_weights_and_refuses_a_damaged_state(karman_tiny, tmp_path):
    from taichi_dp.learn.karman_experiment import run

    cfg, src, cache, metrics = karman_tiny
    out = _copy_run(src, tmp_path / "run")
    weights = out / "checkpoints" / "updates" / "seed0" / "non.pt"
    _flip_inside(weights, _weights_needle(weights))
    with pytest.warns(RuntimeWarning, match=r"non\.pt.*rebuilt"):
        again = run(cfg, out, cache=cache, progress=False, resume=True)
    assert again["variants"] == metrics["variants"]
    # an unfinished variant whose trainer state rotted: refused, naming the file
    (out / "checkpoints" / "updates" / "seed0" / "sol-2.pt").unlink()
    state = out / "checkpoints" / "updates" / "seed0" / "sol-2.0.state.pt"
    _flip_inside(state, _weights_needle(state))
    with pytest.raises(io.IntegrityError, match=r"sol-2\.0\.state\.pt is corrupt: damaged"):
        run(cfg, out, cache=cache, progress=False, resume=True)


@pytest.mark.slow  # uses the tiny karman run
def test_damaged_config_json_is_refused_on_eval(karman_tiny, tmp_path):
    from taichi_dp.learn.karman_experiment import evaluate_run

    _, src, cache, _ = karman_tiny
    out = _copy_run(src, tmp_path / "run")
    text = (out / "config.json").read_text()
    (out / "config.json").write_text(text.replace('"width": 4', '"width": 5'))
    with pytest.raises(io.IntegrityError, match=r"config\.json is corrupt: damaged"):
        evaluate_run(out, cache=cache, progress=False)


@pytest.mark.slow  # uses the tiny karman run
def test_resume_names_the_differing_field_and_accepts_result_neutral_changes(karman_tiny, tmp_path):
    from taichi_dp.learn.config import apply_overrides
    from taichi_dp.learn.karman_experiment import run

    cfg, src, cache, metrics = karman_tiny
    out = _copy_run(src, tmp_path / "run")
    other = apply_overrides(cfg, ["train.lr=2e-4"])
    with pytest.raises(ValueError, match=r"train\.lr: saved 0\.0001, now 0\.0002"):
        run(other, out, cache=cache, progress=False, resume=True)
    config = json.loads((out / "config.json").read_text())
    config["precision"] = "f32"  # a run made in f32 is not continued in f64 (and relabelled)
    io.write_json(out / "config.json", config)
    with pytest.raises(ValueError, match=r"precision: saved 'f32', now 'f64'"):
        run(cfg, out, cache=cache, progress=False, resume=True)
    config["precision"] = "f64"
    io.write_json(out / "config.json", config)
    before = (out / "config.json").read_bytes()
    more_often = apply_overrides(cfg, ["train.save_every=1"])
    assert run(more_often, out, cache=cache, progress=False, resume=True)["variants"] == metrics["variants"]
    assert (out / "config.json").read_bytes() == before  # config.json is not rewritten by a resume


# ----------------------------------------------------------------------------------------- 2. data cache


@pytest.mark.slow  # uses the tiny karman run
def test_cache_with_corrupted_reynolds_numbers_is_regenerated(karman_tiny, tmp_path):
    import shutil

    from taichi_dp.learn.karman_data import load_or_generate

    cfg, _, cache, _ = karman_tiny
    shutil.copytree(cache, tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob(f"karman-{cfg.data.train.key()}.pt")
    good = load_or_generate(cfg.data.train, tmp_path / "cache", progress=False)
    # bit rot in the Reynolds-number tensor (the old digest covered the velocities only)
    _flip_inside(path, good["reynolds"].numpy().tobytes())
    with pytest.warns(RuntimeWarning, match=r"karman-.*invalid.*damaged.*regenerating"):
        data = load_or_generate(cfg.data.train, tmp_path / "cache", progress=False)
    assert data["reynolds"].tolist() == list(cfg.data.train.reynolds)
    assert torch.equal(data["velocity"], good["velocity"])


@pytest.mark.slow  # uses the tiny karman run
def test_cache_whose_reynolds_numbers_differ_from_the_config_is_regenerated(karman_tiny, tmp_path, monkeypatch):
    """A consistent, digested file whose metadata do not match the configuration (a writer bug, an old
    format, a copied file) is not trained on."""
    from taichi_dp.learn import karman_data

    cfg, _, cache, _ = karman_tiny
    good = karman_data.load_or_generate(cfg.data.train, cache, progress=False)
    blob = {"config": dataclasses_asdict(cfg.data.train), "velocity": good["velocity"], "reynolds": good["reynolds"] * 10}
    path = tmp_path / f"karman-{cfg.data.train.key()}.pt"
    io.save_checkpoint(path, {**blob, "sha256": karman_data._digest(blob["config"], blob)})
    with pytest.warns(RuntimeWarning, match=r"Reynolds numbers \[1500\.0, 3000\.0\].*differ.*regenerating"):
        data = karman_data.load_or_generate(cfg.data.train, tmp_path, progress=False)
    assert data["reynolds"].tolist() == list(cfg.data.train.reynolds)


def dataclasses_asdict(x):
    import dataclasses

    return dataclasses.asdict(x)


# ----------------------------------------------------------------------------------------- 4. burgers run folders


def _tiny_burgers(*overrides: str):
    from taichi_dp.learn.burgers_experiment import BurgersExperimentConfig
    from taichi_dp.learn.config import apply_overrides

    small = ["data.n=16", "data.steps=8", "data.train.nus=0.005,0.02", "data.test.nus=0.01", "data.train.states=2",
             "data.test.states=1", "train.variants=NON,SOL-3", "model.width=8", "model.blocks=1", "train.iterations=6",
             "train.batch_size=4", "eval.horizons=8"]  # fmt: skip
    return apply_overrides(BurgersExperimentConfig(), [*small, *overrides])


@pytest.mark.slow  # tiny Burgers runs end to end
def test_burgers_rerun_into_an_existing_folder_is_refused_or_resumed_with_the_same_config(tmp_path):
    from taichi_dp.learn.burgers_experiment import run

    out = tmp_path / "run"
    metrics = run(_tiny_burgers(), out, progress=False)
    before = (out / "config.json").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        run(_tiny_burgers(), out, progress=False)
    with pytest.raises(ValueError, match=r"train\.variants: saved \['NON', 'SOL-3'\], now \['NON', 'SOL-2'\]"):
        run(_tiny_burgers("train.variants=NON,SOL-2"), out, progress=False, resume=True)
    config = json.loads(before)
    io.write_json(out / "config.json", {**config, "precision": "f32"})  # a run made in f32 is not reused in f64
    with pytest.raises(ValueError, match=r"precision: saved 'f32', now 'f64'"):
        run(_tiny_burgers(), out, progress=False, resume=True)
    io.write_json(out / "config.json", {**config, "arch": "cuda"})
    with pytest.raises(ValueError, match=r"arch: saved 'cuda', now 'cpu'"):
        run(_tiny_burgers(), out, progress=False, resume=True)
    io.write_json(out / "config.json", config)
    before = (out / "config.json").read_bytes()
    cfg = _tiny_burgers("train.save_every=2")  # does not change the result
    again = run(cfg, out, progress=False, resume=True)
    assert again["variants"] == metrics["variants"]
    assert (out / "config.json").read_bytes() == before


@pytest.mark.slow  # inverse runs end to end
def test_burgers_inverse_rerun_follows_the_run_folder_rule(tmp_path, capsys):
    from taichi_dp.cli import main

    out = str(tmp_path / "run")
    argv = ["burgers-inverse", "--iterations", "2", "--no-progress", "--out", out]
    assert main(argv) == 0
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*argv[:2], "3", *argv[3:], "--resume"]) == 2
    assert "iterations: saved 2, now 3" in capsys.readouterr().err
    assert main(["burgers-inverse", "--iterations", "2", "--no-progress", "--out", out, "--precision", "f64", "--resume"]) == 2
    assert "precision: saved 'f32', now 'f64'" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before  # refused runs wrote nothing
    assert main([*argv, "--resume"]) == 0  # the same configuration is recomputed


# ----------------------------------------------------------------------------------------- 5. command line


@pytest.mark.parametrize(
    "argv",
    [
        ["burgers", "--iterations", "0"],
        ["burgers", "--unroll", "0"],
        ["burgers", "--threads", "0"],
        ["burgers", "--seed", "-1"],
        ["train", "karman", "--seconds", "0"],
        ["train", "karman", "--seconds", "inf"],
        ["train", "karman", "--seconds", "nan"],
        ["train", "karman", "--iterations", "0"],
        ["train", "karman", "--checkpoint-every", "0"],
        ["train", "karman", "--dist-timeout", "-1"],
        ["eval", "somewhere", "--threads", "0"],
        ["burgers-inverse", "--lr", "0"],
        ["burgers-inverse", "--iterations", "0"],
    ],
)
def test_zero_and_non_finite_flags_are_refused_before_anything_is_written(argv, tmp_path, capsys):
    from taichi_dp import cli

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, *(["--out", str(out)] if argv[0] != "eval" else [])])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --"), err
    assert not out.exists()


@pytest.mark.slow  # a CLI subprocess per case
@pytest.mark.parametrize(
    "argv,msg",
    [
        (["train", "karman", "--variants", ""], "train.variants must not be empty"),
        (["train", "karman", "--seeds", "0,-1"], "train.seeds must be a non-empty list of integers >= 0, got (0, -1)"),
        (["train", "karman", "train.seeds=0,x"], "train.seeds: expected list of int, got '0,x'"),
        (["train", "karman", "train.wall_seconds=3"], "unknown configuration key 'train.wall_seconds' in section [train]"),
        (["burgers", "--quick", "--unroll", "1000"], "SOL-1000 needs 1001 consecutive frames but data.steps is 32"),
    ],
)
def test_inconsistent_settings_are_refused_before_anything_is_written(argv, msg, tmp_path):
    out = tmp_path / "run"
    cache = ["--cache", str(tmp_path / "cache")] if argv[0] == "train" else []
    p = _cli(*argv, "--out", str(out), *cache)
    _assert_one_error_line(p, msg)
    assert not out.exists() and not (tmp_path / "cache").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taichi_dp", *args], capture_output=True, text=True, timeout=300)


def _assert_one_error_line(p: subprocess.CompletedProcess, msg: str) -> None:
    """Non-zero exit, no traceback, stderr ends in one ``error: …`` line (other lines are one-line warnings)."""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert lines and lines[-1].startswith("error: ") and msg in lines[-1], p.stderr[-2000:]
    assert all(line.startswith("warning: ") for line in lines[:-1]), p.stderr[-2000:]


@pytest.mark.slow  # a CLI subprocess
def test_unavailable_arch_is_one_error_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("cuda is available here")
    out = tmp_path / "run"
    _assert_one_error_line(_cli("burgers", "--arch", "cuda", "--out", str(out)), "arch='cuda'")
    assert not out.exists()


@pytest.mark.slow  # CLI subprocesses
def test_unusable_out_is_one_error_line(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    _assert_one_error_line(_cli("burgers", "--quick", "--out", str(file)), "is not a folder")
    if os.geteuid() == 0:  # root writes into chmod-protected folders: use a read-only file system
        if not Path("/sys").is_dir():
            pytest.skip("no read-only folder to test with")
        readonly = Path("/sys/taichi_dp_test/run")
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        readonly = tmp_path / "ro" / "run"
    p = _cli("train", "karman", "--preset", "tiny", "--out", str(readonly), "--cache", str(tmp_path / "cache"))
    _assert_one_error_line(p, str(readonly.parent))
    assert not readonly.exists()


@pytest.mark.slow  # a CLI subprocess per case
@pytest.mark.parametrize("content", ["[1, 2]", "null"])
def test_config_json_that_is_not_an_object_is_one_error_line(tmp_path, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(content)
    _assert_one_error_line(_cli("eval", str(run_dir), "--cache", str(tmp_path / "cache")), "expected a JSON object")
    p = _cli("train", "karman", "--preset", "tiny", "--resume", "--out", str(run_dir), "--cache", str(tmp_path / "cache"))
    _assert_one_error_line(p, "expected a JSON object")
    p = _cli("burgers", "--quick", "--resume", "--out", str(run_dir))
    _assert_one_error_line(p, "expected a JSON object")


# ----------------------------------------------------------------------------------------- 6. solver options


@pytest.mark.parametrize(
    "option,value,error,msg",
    [
        ("pressure", 1e-5, TypeError, r"pressure must be a SolveOptions\(rtol=.*\), got float 1e-05"),
        ("viscosity", "cg", TypeError, r"viscosity must be a SolveOptions"),
        ("viscosity", "mgpcg-options", ValueError, r"viscosity\.method must be one of \('cg',\) for this solve, got 'mgpcg'"),
        ("viscosity_substeps", 0, ValueError, r"viscosity_substeps must be an integer >= 1 or None, got 0"),
        ("viscosity_substeps", 2.5, ValueError, r"viscosity_substeps must be an integer >= 1 or None, got 2\.5"),
        ("dt", 0.0, ValueError, r"dt must be > 0"),
    ],
)
def test_navier_stokes_options_are_validated_at_construction(option, value, error, msg):
    import taichi_dp as tdp
    from taichi_dp.grid.staggered import FlowBoundary
    from taichi_dp.solvers import NavierStokes, SolveOptions

    grid = tdp.Grid.rect((8, 8), (1.0, 1.0))
    kwargs = {"nu": 0.01, "dt": 0.1, option: SolveOptions(method="mgpcg") if value == "mgpcg-options" else value}
    with pytest.raises(error, match=msg):
        NavierStokes(grid, FlowBoundary.box(), **kwargs)


@pytest.mark.parametrize(
    "option,value,error,msg",
    [
        ("rtol", -1.0, ValueError, r"rtol must be a finite float in \(0, 1\), got -1\.0"),
        ("rtol", 0.0, ValueError, r"rtol .*\(0, 1\), got 0\.0"),
        ("rtol", 2.0, ValueError, r"rtol .*\(0, 1\), got 2\.0"),
        ("rtol", float("nan"), ValueError, r"rtol .*got nan"),
        ("rtol", "1e-5", TypeError, r"rtol must be a float in \(0, 1\), got str"),
        ("rtol", True, TypeError, r"rtol must be a float in \(0, 1\), got bool"),
        ("max_iter", 0, ValueError, r"max_iter must be an integer >= 1, got 0"),
        ("max_iter", -5, ValueError, r"max_iter must be an integer >= 1, got -5"),
        ("max_iter", 10.5, TypeError, r"max_iter must be an integer >= 1, got float 10\.5"),
        ("method", "none", ValueError, r"method must be one of \('mgpcg', 'cg', 'fft'\), got 'none'"),
        ("method", "multigrid", ValueError, r"method must be one of \('mgpcg', 'cg', 'fft'\), got 'multigrid'"),
    ],
)
def test_solve_options_are_validated_at_construction(option, value, error, msg):
    from taichi_dp.solvers import SolveOptions

    with pytest.raises(error, match=msg):
        SolveOptions(**{option: value})


def test_solve_options_translate_to_the_projection():
    from taichi_dp.ops.solve_options import projection_kwargs
    from taichi_dp.solvers import SolveOptions

    assert SolveOptions() == SolveOptions(rtol=1e-5, max_iter=5000, method="mgpcg")
    assert projection_kwargs(SolveOptions()) == {"rtol": 1e-5, "max_iter": 5000, "preconditioner": "multigrid"}
    assert projection_kwargs(SolveOptions(1e-8, 20, "cg")) == {"rtol": 1e-8, "max_iter": 20, "preconditioner": "none"}


def test_smoke_options_are_validated_at_construction():
    import taichi_dp as tdp
    from taichi_dp.grid.staggered import FlowBoundary
    from taichi_dp.solvers import NavierStokes
    from taichi_dp.solvers.smoke import SmokePlume

    flow = NavierStokes(tdp.Grid.rect((8, 8), (1.0, 1.0)), FlowBoundary.box(), nu=0.01, dt=0.1)
    with pytest.raises(ValueError, match="density_advection"):
        SmokePlume(flow, density_advection="upwind")
    with pytest.raises(TypeError, match="density_boundary must be a Boundary"):
        SmokePlume(flow, density_boundary="zero")
    with pytest.raises(ValueError, match="buoyancy must be finite"):
        SmokePlume(flow, buoyancy=float("inf"))
