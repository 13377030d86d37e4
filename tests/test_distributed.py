"""Distributed training on CPU (gloo, 2 processes started by ``torchrun``): the ranks stay identical and
follow the single-process run with the same global batch and seed; a killed rank fails the job in bounded
time and ``resume`` completes it; the karman reference data is generated in shares across ranks.

The worker is this file run as a script (``python -m torch.distributed.run ... tests/test_distributed.py``).
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import taichi_dp as tdp
from taichi_dp.learn import TrainConfig, load_checkpoint, sol_loss, train
from taichi_dp.learn import distributed as dist
from taichi_dp.solvers import Burgers

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
# global batch 5 over 2 ranks: uneven shards (3 + 2) exercise the loss scaling
CFG = dict(iterations=8, batch_size=5, lr=1e-2, checkpoint_every=2)
N_SAMPLES = 12
KILL_AT = 5  # rank 1 kills itself when computing its 5th loss (iteration 4; checkpoint holds 4 iterations)
FAIL_BOUND_S = 20.0  # asserted: kill -> torchrun exited non-zero
DATA = dict(reynolds=(150.0, 300.0, 500.0), scale=1, factor=2, warmup=1, steps=2)


def _problem() -> tuple[nn.Module, Burgers, torch.Tensor]:
    """A 1D Burgers SOL-3 problem: a circular Conv1d correction trained through 3 real solver steps."""
    torch.manual_seed(0)
    ref = 0.5 * torch.randn(N_SAMPLES, 4, 1, 16, dtype=torch.float64)
    model = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular").double()
    solver = Burgers(tdp.Grid.line(16, -1, 1), tdp.Boundary.periodic(1), 0.01, 1 / 32)
    return model, solver, ref


def _fit(model: nn.Module, solver: Burgers, ref: torch.Tensor, cfg: TrainConfig, checkpoint=None, hook=None):
    net = dist.wrap(model)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        if hook is not None:
            hook()
        return sol_loss(solver, lambda s: net(s), ref[idx], {})

    return train(net, batch_loss, N_SAMPLES, cfg, progress=False, checkpoint=checkpoint)


def _worker(out: Path, mode: str) -> None:
    """One rank: train, write this rank's parameters/losses; ``mode`` ``kill`` makes rank 1 die mid-run.
    A crash in native code (an abort in a communication thread) prints every thread's Python stack
    (``faulthandler``), and ``phases<r>.txt`` records how far the rank got, for the test's message."""
    faulthandler.enable(all_threads=True)
    ctx = dist.setup("cpu", "f64", timeout_s=30)
    r = ctx.rank

    def phase(name: str) -> None:
        with open(out / f"phases{r}.txt", "a") as f:
            f.write(name + "\n")

    phase(f"{mode}:setup")
    model, solver, ref = _problem()
    if mode == "train+data":  # reference data in shares: rank 0 simulates Re 150 and 300, rank 1 Re 500
        from taichi_dp.learn.karman_data import KarmanDataConfig, load_or_generate

        data = load_or_generate(KarmanDataConfig(**DATA), out / "cache", progress=False)
        torch.save(data["velocity"], out / f"data{r}.pt")
    try:  # a plain (unwrapped) model is refused in a distributed run
        train(model, lambda idx: model.weight.sum(), N_SAMPLES, TrainConfig(**CFG), progress=False)
        refused = False
    except ValueError as e:
        refused = "distributed.wrap" in str(e)
    calls = {"n": 0}

    def hook() -> None:
        calls["n"] += 1
        if mode == "kill" and r == 1 and calls["n"] == KILL_AT:
            (out / "killed_at").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)

    res = _fit(model, solver, ref, TrainConfig(**CFG), checkpoint=out / "state.pt", hook=hook)
    phase("trained")
    # a wall-clock budget: rank 0 decides, every rank stops at the same iteration
    m2, _, _ = _problem()
    budget = _fit(m2, solver, ref, TrainConfig(iterations=10**6, batch_size=4, max_seconds=0.3))
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / f"params{r}.pt")
    info = dict(losses=res.losses, refused=refused, budget_iterations=budget.iterations, budget_stop=budget.stopped_by_budget)
    (out / f"rank{r}.json").write_text(json.dumps(info))
    phase("written")
    dist.teardown()
    phase("teardown")


def _torchrun(out: Path, mode: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=0"]
    cmd += [str(HERE), str(out), mode]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    print(f"\ntorchrun {mode}: {time.time() - t:.1f} s, exit code {p.returncode}")
    return p, time.time()


def _tail(p: subprocess.CompletedProcess, out: Path | None = None) -> str:
    """The end of a torchrun's output, and how far each rank got (``phases<r>.txt``, written by the worker)."""
    phases = ""
    if out is not None:
        for r in (0, 1):
            f = out / f"phases{r}.txt"
            phases += f"rank {r} phases: {f.read_text().split() if f.is_file() else 'none'}\n"
    return phases + p.stdout[-2000:] + "\n".join(line for line in p.stderr.splitlines() if "Warning" not in line)[-6000:]


def _single_process_reference(cfg: TrainConfig):
    model, solver, ref = _problem()
    return model, _fit(model, solver, ref, cfg)


@pytest.mark.slow
def test_two_ranks_match_single_process_and_each_other_and_share_data_generation(tmp_path):
    from taichi_dp.learn.karman_data import KarmanDataConfig, generate

    p, _ = _torchrun(tmp_path, "train+data")
    assert p.returncode == 0, _tail(p, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    params = [torch.load(tmp_path / f"params{r}.pt", weights_only=True) for r in (0, 1)]
    for k in params[0]:  # DDP keeps the replicas bit-identical
        assert torch.equal(params[0][k], params[1][k]), k
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert all(r["refused"] for r in ranks)
    # the budget stopped both ranks at the same iteration
    assert ranks[0]["budget_stop"] and ranks[1]["budget_stop"]
    assert ranks[0]["budget_iterations"] == ranks[1]["budget_iterations"] >= 1

    model, res = _single_process_reference(TrainConfig(**CFG))
    assert ranks[0]["losses"] == pytest.approx(res.losses, rel=1e-10)
    for k, v in model.state_dict().items():
        assert torch.allclose(params[0][k], v, rtol=1e-10, atol=1e-12), k
    # the weights moved (the comparison is not between two untouched initialisations)
    assert not torch.allclose(params[0]["weight"], _problem()[0].weight, atol=1e-4)
    # the distributed checkpoint is an ordinary single-process checkpoint
    state = load_checkpoint(tmp_path / "state.pt")
    assert len(state["losses"]) == CFG["iterations"] and torch.equal(state["model"]["weight"], params[0]["weight"])

    # the reference data gathered from the ranks' shares is the single-process (batched) data set
    single = generate(KarmanDataConfig(**DATA), progress=False)["velocity"]
    for r in (0, 1):
        assert torch.equal(torch.load(tmp_path / f"data{r}.pt", weights_only=True), single)
    assert len(list((tmp_path / "cache").glob("karman-*.pt"))) == 1


@pytest.mark.slow
def test_killed_rank_fails_fast_and_resume_completes(tmp_path):
    p, ended = _torchrun(tmp_path, "kill")
    assert p.returncode != 0
    killed = float((tmp_path / "killed_at").read_text())
    detect = ended - killed
    print(f"\nkill -> torchrun exit: {detect:.2f} s")
    assert detect < FAIL_BOUND_S
    assert "FAILED" in p.stderr and "SIGKILL" in p.stderr  # torchrun names the dead rank and its signal
    assert len(load_checkpoint(tmp_path / "state.pt")["losses"]) == KILL_AT - 1
    assert not (tmp_path / "rank0.json").exists()

    p, _ = _torchrun(tmp_path, "train")  # the same command resumes from the checkpoint
    assert p.returncode == 0, _tail(p, tmp_path)
    params = torch.load(tmp_path / "params0.pt", weights_only=True)
    model, res = _single_process_reference(TrainConfig(**CFG))
    losses = json.loads((tmp_path / "rank0.json").read_text())["losses"]
    assert losses == pytest.approx(res.losses, rel=1e-10)
    for k, v in model.state_dict().items():
        assert torch.allclose(params[k], v, rtol=1e-10, atol=1e-12), k


def test_helpers_are_the_identity_without_a_process_group():
    assert (dist.rank(), dist.world_size(), dist.is_main(), dist.is_distributed()) == (0, 1, True, False)
    idx = torch.arange(7)
    assert torch.equal(dist.shard(idx), idx) and dist.shard_range(3) == range(3)
    m = nn.Linear(2, 2)
    assert dist.wrap(m) is m and dist.unwrap(m) is m
    dist.barrier()
    assert dist.broadcast_from_main([1.0, 2.0]) == [1.0, 2.0]
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer")
    assert dist.is_peer_failure(gloo) and not dist.is_peer_failure(RuntimeError("shapes (2, 3) and (4,) differ"))
    with dist.single_process():
        assert not dist.is_distributed()
    with pytest.raises(RuntimeError, match="torchrun"):
        if not dist.launched_by_torchrun():
            dist.setup("cpu", "f64")
        else:  # pragma: no cover - only when pytest itself runs under torchrun
            raise RuntimeError("torchrun")


def test_time_budget_stops_training_and_records_iterations(tmp_path):
    x = torch.randn(16, 2, dtype=torch.float64)
    model = nn.Linear(2, 1).double()

    def slow_loss(idx):
        time.sleep(0.01)
        return model(x[idx]).square().mean()

    cfg = TrainConfig(iterations=10**6, batch_size=4, max_seconds=0.2, checkpoint_every=5)
    res = train(model, slow_loss, 16, cfg, progress=False, checkpoint=tmp_path / "b.pt")
    assert res.stopped_by_budget and 1 <= res.iterations == len(res.losses) < 100
    assert 0.2 <= res.seconds < 10.0  # an ignored budget runs ~10⁴ s; the bound leaves room for load
    # resuming with a larger budget continues the same run (the budget is not part of the resume key)
    cfg2 = TrainConfig(iterations=10**6, batch_size=4, max_seconds=0.4, checkpoint_every=5)
    res2 = train(model, slow_loss, 16, cfg2, progress=False, checkpoint=tmp_path / "b.pt")
    assert res2.iterations > res.iterations and res2.losses[: res.iterations] == res.losses
    unbudgeted = train(model, slow_loss, 16, TrainConfig(iterations=3, batch_size=4), progress=False)
    assert unbudgeted.iterations == 3 and not unbudgeted.stopped_by_budget
    with pytest.raises(ValueError, match="max_seconds"):
        train(model, slow_loss, 16, TrainConfig(max_seconds=0.0), progress=False)


def test_cli_distributed_outside_torchrun_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from taichi_dp.cli import main

    for v in dist.ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    rc = main(["train", "karman", "--distributed", "--arch", "cpu", "--precision", "f64", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and re.match(r"error: --distributed: .*torchrun --nproc_per_node", err[0]), err
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match=r"must be 'cpu', 'cuda' or 'vulkan'"):
        monkeypatch.setenv("RANK", "0")
        for v, x in (("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "localhost"), ("MASTER_PORT", "1")):
            monkeypatch.setenv(v, x)
        dist.setup("auto", "f64")
    assert dist.context() is None


if __name__ == "__main__":  # a torchrun worker
    _worker(Path(sys.argv[1]), sys.argv[2])
