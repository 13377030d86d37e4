"""The long-horizon study's pieces (issue 17): the budget sweep (learning curves at equal cost), stability
(finite rollouts, the step where a corrected rollout's error crosses the source's), physics diagnostics,
autograd memory per update, the SOL-vs-NON verdict of the report, and the ``medium`` preset.

The flow diagnostics themselves (spectrum, shedding frequency, energy, crossing step) are checked against
analytic cases in ``tests/test_flow_metrics.py``; here they are checked inside runs.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from taichi_dp.learn import io
from taichi_dp.learn.autograd_memory import SavedTensorMeter, peak_saved_bytes
from taichi_dp.learn.experiment import (
    TrainSection,
    Trajectories,
    _sweep_verdict,
    comparisons,
    sweep_fraction,
    sweep_protocol,
    update_memory,
)
from taichi_dp.learn.karman_experiment import KarmanExperiment

MIB = 2**20


def _tiny(*overrides: str):
    return KarmanExperiment.configure(preset="tiny", overrides=overrides)[0]


# ------------------------------------------------------------------------------------------ autograd memory
def test_meter_counts_each_saved_storage_once_and_releases_in_backward():
    x = torch.randn(MIB // 4, requires_grad=True)  # 1 MiB, a leaf: not counted
    with SavedTensorMeter() as meter:
        y = x
        for _ in range(8):
            y = torch.tanh(y)  # tanh saves its output: 8 new 1 MiB storages
        a = y.exp()
        z = (a * a).sum()  # exp saves its result `a`, mul saves `a` twice: one more storage
        assert meter.live == 9 * MIB
        z.backward()
        del y, a, z
    assert meter.peak == 9 * MIB
    assert meter.live == 0  # backward released every saved tensor


def test_checkpointing_lowers_the_peak_the_meter_sees():
    x = torch.randn(MIB // 4, requires_grad=True)

    def chain(u):
        for _ in range(8):
            u = torch.tanh(u)
        return u

    full = peak_saved_bytes(lambda: chain(x).sum())
    ck = peak_saved_bytes(lambda: checkpoint(chain, x, use_reentrant=False).sum())
    assert full == 8 * MIB and ck < MIB


@pytest.mark.slow
def test_update_memory_grows_with_the_unroll_and_checkpointing_cuts_it(tmp_path):
    exp = KarmanExperiment(_tiny("train.variants=NON,SOL-2,SOL-4", "data.train.steps=6"))
    data = exp.make_data("train", cache=tmp_path, progress=False)
    non, sol2, sol4 = (update_memory(exp, v, data) for v in ("NON", "SOL-2", "SOL-4"))
    assert 0 < non["stored"] < sol2["stored"] < sol4["stored"]
    assert sol4["stored"] == pytest.approx(2 * sol2["stored"], rel=0.25)  # ~linear in k
    assert sol4["peak"] == sol4["stored"] == sol4["stored_without_checkpointing"]  # no checkpointing configured
    exp.cfg.train.unroll_checkpoint = 1
    ck = update_memory(exp, "SOL-4", data)
    assert exp.cfg.train.unroll_checkpoint == 1  # restored
    assert ck["stored"] < 0.5 * ck["stored_without_checkpointing"]
    assert ck["stored_without_checkpointing"] == pytest.approx(sol4["stored"], rel=1e-6)
    assert ck["peak"] == pytest.approx(ck["stored"] + ck["stored_without_checkpointing"] / 4)


# ------------------------------------------------------------------------------------------ budget sweep
def test_sweep_jobs_reuse_the_wall_runs_and_budgets_scale():
    t = TrainSection(variants=("NON", "SOL-4"), protocols=("updates", "wall"), seeds=(0, 1), seconds=40.0,
                     sweep=(0.5, 1.0, 2.0), sweep_variants=("NON",))  # fmt: skip
    t.validate(10, "data.train.steps")
    assert t.sweep_protocols() == {0.5: "wall-0.5x", 1.0: "wall", 2.0: "wall-2x"}
    jobs = t.jobs()
    assert len(jobs) == 2 * 2 * 2 + 2 * 2 and len(set(jobs)) == len(jobs)
    assert jobs[-4:] == [("wall-0.5x", 0, "NON"), ("wall-0.5x", 1, "NON"), ("wall-2x", 0, "NON"), ("wall-2x", 1, "NON")]
    assert t.budget("wall-0.5x", 3).max_seconds == 20.0 and t.budget("wall-2x", 3).max_seconds == 80.0
    assert t.budget("wall", 3).max_seconds == 40.0 and t.budget("updates", 3).max_seconds is None
    only_updates = TrainSection(variants=("NON",), protocols=("updates",), sweep=(1.0,), sweep_variants=("NON",))
    assert only_updates.jobs() == [("updates", 0, "NON"), ("wall-1x", 0, "NON")]  # no wall runs to reuse
    assert sweep_fraction(sweep_protocol(0.25)) == 0.25 and sweep_fraction("wall") == 1.0
    with pytest.raises(ValueError, match="protocol must be 'updates', 'wall' or 'wall-<fraction>x', got 'fast'"):
        sweep_fraction("fast")


@pytest.mark.parametrize(
    "sweep, variants, message",
    [
        ((0.5,), (), "train.sweep (0.5,) and train.sweep_variants (): give both"),
        ((), ("NON",), "give both"),
        ((0.5, -1.0), ("NON",), "train.sweep (a fraction of train.seconds) must be a finite number > 0, got -1.0"),
        ((0.5, 0.5), ("NON",), "train.sweep must not repeat a value"),
        ((0.5,), ("SOL-16",), "train.sweep_variants: 'SOL-16' is not one of train.variants ('NON', 'SOL-4')"),
        ((0.5,), ("NON", "NON"), "train.sweep_variants must not repeat a value"),
    ],
)
def test_sweep_configuration_errors_name_the_key(sweep, variants, message):
    t = TrainSection(variants=("NON", "SOL-4"), sweep=sweep, sweep_variants=variants)
    with pytest.raises(ValueError) as e:
        t.validate(10, "data.train.steps")
    assert message in str(e.value)


def test_a_run_folder_from_before_the_sweep_resumes():
    saved = {"train": {"iterations": 4}}
    assert io.config_diff(saved, {"train": {"iterations": 4, "sweep": [], "sweep_variants": []}}) == []
    assert io.config_diff(saved, {"train": {"iterations": 4, "sweep": [0.5]}}) == ["train.sweep: saved '(absent)', now [0.5]"]


def test_medium_preset_is_the_study_of_the_issue():
    cfg = KarmanExperiment.preset("medium")
    quick = KarmanExperiment.preset("quick")
    t = cfg.train
    assert t.variants == ("NON", "PRE-4", "SOL-4", "SOL-16", "NON+SOL-16")
    assert t.protocols == ("updates", "wall") and t.seeds == (0, 1, 2)
    assert cfg.eval.horizons == (100, 250, 500) and cfg.data.test.steps == 500
    assert t.sweep == (0.25, 0.5, 1.0, 2.0) and t.sweep_variants == ("NON", "SOL-16")
    assert len(t.jobs()) == 5 * 2 * 3 + 3 * 2 * 3
    assert cfg.data.train == quick.data.train  # one cached training set for both presets


# ------------------------------------------------------------------------------------------ report pieces
def _summary(per_seed, per_test):
    return {"mean": sum(per_seed) / len(per_seed), "min": min(per_seed), "max": max(per_seed), "per_seed": per_seed,
            "per_test": per_test}  # fmt: skip


def test_comparisons_pick_the_best_sol_variant_and_count_seeds():
    exp = KarmanExperiment(_tiny())
    m = {
        "metrics": ["l1"],
        "horizons": [10],
        "variants": {
            "updates": {
                "NON": {"10": {"l1": _summary([0.2, 0.2, 0.2], [0.1, 0.3])}},
                "SOL-4": {"10": {"l1": _summary([0.1, 0.3, 0.1], [0.05, 0.3])}},
                "NON+SOL-4": {"10": {"l1": _summary([0.3, 0.3, 0.3], [0.3, 0.3])}},
                "PRE-4": {"10": {"l1": _summary([0.01, 0.01, 0.01], [0.01, 0.01])}},  # not a SOL variant
            },
            "wall": {"SOL-4": {"10": {"l1": _summary([0.1], [0.1, 0.1])}}},  # no NON: no comparison
        },
    }
    (row,) = comparisons(exp, m)
    assert row["variant"] == "SOL-4" and row["protocol"] == "updates" and row["horizon"] == 10
    assert row["ratio"] == pytest.approx(0.2 / (0.5 / 3))
    assert row["per_test"] == pytest.approx([2.0, 1.0])
    assert (row["seeds_won"], row["seeds"]) == (2, 3)


def _point(fraction, err):
    return {"fraction": fraction, "seconds": 10 * fraction, "updates": 1, "errors": {"5": {"l1": _summary([err], [err])}}}


def test_sweep_verdict_says_where_the_learning_curves_cross():
    m = {"horizons": [5]}
    sweep = {"variants": {"NON": [_point(f, e) for f, e in ((0.25, 0.1), (0.5, 0.1), (1.0, 0.1), (2.0, 0.1))],
                          "SOL-16": [_point(f, e) for f, e in ((0.25, 0.2), (0.5, 0.15), (1.0, 0.08), (2.0, 0.05))]}}  # fmt: skip
    (line,) = _sweep_verdict(m, sweep, "l1")
    assert "0.50× at 0.25×" in line and "2.00× at 2×" in line
    assert "the curves cross between 0.5× and 1× of the budget" in line
    sweep["variants"]["SOL-16"] = [_point(f, 0.2) for f in (0.25, 0.5, 1.0, 2.0)]
    assert "do not cross (NON ahead at every budget)" in _sweep_verdict(m, sweep, "l1")[0]


# ------------------------------------------------------------------------------------------ stability
class _Blowup(nn.Module):
    """A correction that is zero for a few calls, then NaN: a rollout that diverges at a known step."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, s: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.zeros_like(s) if self.calls <= self.after else torch.full_like(s, float("nan"))


def test_a_diverged_rollout_counts_as_error_one_from_its_first_non_finite_step(tmp_path):
    exp = KarmanExperiment(_tiny())
    test = exp.make_data("test", cache=tmp_path, progress=False)
    out = exp.rollouts({"source": None, "blowup": _Blowup(after=2)}, test)
    src, bad = out["source"], out["blowup"]
    assert bad["finite"][:, :2].all() and not bad["finite"][:, 2:].any()
    assert torch.equal(bad["l1"][:, :2], src["l1"][:, :2])  # a zero correction is the source
    assert torch.equal(bad["l1"][:, 2:], torch.ones_like(bad["l1"][:, 2:]))
    assert math.isnan(float(bad["traj"][0, -1].sum()))


@pytest.mark.slow
def test_tiny_study_with_a_sweep_writes_every_section(tmp_path):
    from taichi_dp.learn.karman_experiment import run

    cfg = _tiny("train.protocols=updates,wall", "train.seconds=0.6", "train.sweep=0.5,1,2",
                "train.sweep_variants=NON,SOL-2", "train.seeds=0,1")  # fmt: skip
    m = run(cfg, tmp_path / "run", cache=tmp_path / "cache", progress=False)
    sweep = m["sweep"]
    assert sweep["fractions"] == [0.5, 1.0, 2.0] and sweep["seconds"] == 0.6
    for v in ("NON", "SOL-2"):
        points = sweep["variants"][v]
        assert [p["protocol"] for p in points] == ["wall-0.5x", "wall", "wall-2x"]
        assert points[0]["updates"] < points[2]["updates"]  # twice the time, more updates
        assert [p["seconds"] for p in points] == pytest.approx([0.3, 0.6, 1.2], abs=0.5)
        # the 1× point is the wall protocol's own result
        assert points[1]["errors"] == {h: m["variants"]["wall"][v][h] for h in points[1]["errors"]}
    assert set(m["variants"]) == {"updates", "wall"}  # the sweep's extra runs are not protocols of the tables
    for protocol in ("updates", "wall"):
        for v in ("NON", "SOL-2"):
            st = m["stability"][protocol][v]
            assert st["finite"] == {"4": 1.0} and len(st["crossing"]) == 3
            assert all(isinstance(c, int) and 0 <= c <= 4 for c in st["crossing"])
            phys = m["physics"]["variants"][protocol][v]
            assert set(phys) == {"spectrum_distance", "energy_ratio"}  # 4 steps: too short for a Strouhal number
            assert len(phys["energy_ratio"]["per_test"]) == 3 and 0.5 < phys["energy_ratio"]["mean"] < 2
    assert m["physics"]["reference"]["spectrum_distance"] == [0.0, 0.0, 0.0]
    assert m["physics"]["reference"]["energy_ratio"] == pytest.approx([1.0, 1.0, 1.0])
    assert m["memory"]["SOL-2"]["stored"] > m["memory"]["NON"]["stored"] > 0
    report = (tmp_path / "run" / "report.md").read_text()
    for section in ("## When does training through the solver pay?", "## Stability", "## Budget sweep",
                    "autograd memory per update", "![learning curves](plots/learning_curves.png)",
                    "![error vs horizon](plots/error_vs_horizon.png)", "![spectra](plots/spectra.png)"):  # fmt: skip
        assert section in report, section
    for plot in ("learning_curves", "error_vs_horizon", "spectra", "kinetic_energy", "vorticity_strip"):
        assert (tmp_path / "run" / "plots" / f"{plot}.png").is_file(), plot
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["sweep"] == sweep


def _constant(steps: int) -> Trajectories:
    one = torch.zeros(1, dtype=torch.long)
    return Trajectories(reference=torch.ones(1, steps + 1, 2, 65, 33), params=torch.ones(1), values=(1.0,), group=one)


def test_strouhal_needs_a_long_rollout():
    exp = KarmanExperiment(_tiny())
    assert "strouhal" not in exp.diagnostics(torch.zeros(1, 10, 2, 65, 33), _constant(10))
    assert "strouhal" in exp.diagnostics(torch.zeros(1, 300, 2, 65, 33), _constant(300))


def test_guarded_rollout_equals_the_plain_rollout_while_finite(tmp_path):
    from taichi_dp.learn.experiment import guarded_rollout
    from taichi_dp.learn.hybrid import hybrid_rollout

    exp = KarmanExperiment(_tiny())
    test = exp.make_data("test", cache=tmp_path, progress=False)
    solver, cond = exp.source(test.params), exp.condition(test.params)
    model = exp.make_model(0)
    with torch.no_grad():
        for p in model.parameters():  # a non-zero correction
            p.add_(1e-3 * torch.randn_like(p))
        plain = hybrid_rollout(solver, model, test.reference[:, 0].contiguous(), 4, cond, include_initial=False)
    assert torch.equal(guarded_rollout(solver, model, test.reference[:, 0].contiguous(), 4, cond), plain)
