"""Burgers 1D timings: taichi_dp vs a plain-PyTorch implementation of the same discretization.

    python -m benchmarks.bench_burgers [--arch cpu] [--json out.json] [--repeats 20]

Workloads (float32, periodic, explicit diffusion + semi-Lagrangian, the PBDL scheme):
- ``step``: one forward step, N = 128, batch 1 and batch 32;
- ``rollout32 fwd`` / ``fwd+bwd``: the PBDL preset (N = 128, 32 steps), gradient w.r.t. u0;
- ``sol8 update``: one SOL-8 training update of the Burgers experiment (batch 32, N = 32), split into
  solver and network time.
Prints a table and writes JSON with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform

import torch

import taichi_dp as tdp
from benchmarks.timing import median_seconds
from models import ResidualCNN
from taichi_dp.learn.hybrid import sol_loss
from taichi_dp.scenes import pbdl_burgers
from taichi_dp.solvers import Burgers, rollout


def torch_burgers_step(u: torch.Tensor, nu: float, dt: float, h: float) -> torch.Tensor:
    """Plain PyTorch, same discretization: explicit diffusion, then semi-Lagrangian self-advection
    with linear interpolation on a periodic grid. ``u``: ``(B, 1, N)``."""
    n = u.shape[-1]
    u = u + nu * dt / h**2 * (torch.roll(u, 1, -1) - 2 * u + torch.roll(u, -1, -1))
    p = torch.arange(n, dtype=u.dtype, device=u.device) - dt * u / h
    f = torch.floor(p)
    w = p - f
    i0 = f.long() % n
    i1 = (i0 + 1) % n
    return (1 - w) * torch.gather(u, -1, i0) + w * torch.gather(u, -1, i1)


def run(repeats: int) -> dict:

    def timed(fn) -> float:
        return median_seconds(fn, repeats, warmup=2)

    rt = tdp.current()
    scene = pbdl_burgers()
    st = scene.stepper
    h, nu, dt = st.grid.spacing[0], st.nu, st.dt
    rows = {}
    for b in (1, 32):
        u = scene.state0.expand(b, -1, -1).contiguous()
        rows[f"step N=128 B={b}"] = {
            "taichi_dp": timed(lambda u=u: st(u)),
            "torch_eager": timed(lambda u=u: torch_burgers_step(u, nu, dt, h)),
        }

    def td_fwd():
        with torch.no_grad():
            rollout(st, scene.state0, 32)

    def td_bwd():
        u0 = scene.state0.clone().requires_grad_()
        rollout(st, u0, 32, include_initial=False)[:, -1].square().mean().backward()

    def pt_roll(u):
        for _ in range(32):
            u = torch_burgers_step(u, nu, dt, h)
        return u

    def pt_fwd():
        with torch.no_grad():
            pt_roll(scene.state0)

    def pt_bwd():
        u0 = scene.state0.clone().requires_grad_()
        pt_roll(u0).square().mean().backward()

    rows["rollout32 fwd"] = {
        "taichi_dp": timed(td_fwd),
        "torch_eager": timed(pt_fwd),
    }
    rows["rollout32 fwd+bwd"] = {
        "taichi_dp": timed(td_bwd),
        "torch_eager": timed(pt_bwd),
    }

    # One SOL-8 update of the experiment: batch 32, N = 32; network alone for the split.
    grid = tdp.Grid.line(32, -1, 1)
    nus = torch.full((32,), 0.01, dtype=rt.dtype)
    coarse = Burgers(grid, tdp.Boundary.periodic(1), nus, 1 / 32)
    model = ResidualCNN(1, 1, conditioning=("nu",)).to(rt.dtype)
    torch.nn.init.normal_(model.out.weight, std=1e-3)
    ref = 0.5 * torch.randn(32, 9, 1, 32, dtype=rt.dtype)
    cond = {"nu": torch.zeros(32, dtype=rt.dtype)}

    def sol_update():
        model.zero_grad()
        sol_loss(coarse, model, ref, cond).backward()

    def net_only():
        model.zero_grad()
        x = ref[:, 0]
        loss = 0
        for _ in range(8):
            x = x + model(x, **cond)
            loss = loss + x.square().mean()
        loss.backward()

    def solver_only():
        u = ref[:, 0].contiguous().requires_grad_()
        x = u
        for _ in range(8):
            x = coarse(x)
        x.square().mean().backward()

    rows["SOL-8 update (B=32, N=32)"] = {"taichi_dp": timed(sol_update)}
    rows["  of which network (8 fwd+bwd)"] = {"taichi_dp": timed(net_only)}
    rows["  of which solver (8 fwd+bwd)"] = {"taichi_dp": timed(solver_only)}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rt = tdp.init(args.arch, "f32")
    rows = run(args.repeats)
    print(f"{'workload':34s} {'taichi_dp':>12s} {'torch eager':>12s} {'ratio':>7s}")
    for name, r in rows.items():
        pt = r.get("torch_eager")
        ratio = f"{pt / r['taichi_dp']:.2f}x" if pt else ""
        print(f"{name:34s} {1e3 * r['taichi_dp']:10.3f}ms {'' if pt is None else f'{1e3 * pt:10.3f}ms':>12s} {ratio:>7s}")
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "arch": rt.arch,
        "torch": torch.__version__,
        "taichi_dp": tdp.__version__,
        "seconds": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
