"""Burgers 1D timings: taichi_dp vs a plain-PyTorch implementation of the same discretization.

    python -m benchmarks.bench_burgers [--arch cpu] [--precision f32|f64] [--threads T] [--repeats 20] [--quick]
                                       [--out|--json out.json]

Workloads (float32, periodic, explicit diffusion + semi-Lagrangian, the PBDL scheme):
- ``step``: one forward step, N = 128, batch 1 and batch 32;
- ``rollout32 fwd`` / ``fwd+bwd``: the PBDL preset (N = 128, 32 steps), gradient w.r.t. u0;
- ``sol8 update``: one SOL-8 training update of the Burgers experiment (batch 32, N = 32), split into
  solver and network time.
Prints the side-by-side table and writes JSON (machine, versions, date, records) through
:mod:`benchmarks.harness`; ``--quick``: 2 repeats.
"""

from __future__ import annotations

import time

import torch

import taichi_dp as tdp
from benchmarks.harness import Record, close_meta, metadata, parse, parser, side_by_side, start, write_json
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
    """Median seconds per workload and implementation (``{"workload": {"taichi_dp": s, "torch_eager": s}}``)."""

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


def records(rows: dict) -> list[Record]:
    """The rows as harness records (metric ``seconds``, implementations taichi_dp and torch eager)."""
    impl = {"taichi_dp": "taichi", "torch_eager": "torch_eager"}
    return [Record(name, "", "seconds", t, "s", impl[k]) for name, r in rows.items() for k, t in r.items()]


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the result dictionary."""
    ap = parser(__doc__, precisions=("f32", "f64"), repeats_default=None, quick="CI size: 2 repeats")
    args = parse(ap, argv)
    rt = start(args)
    t0 = time.perf_counter()
    meta = metadata(rt.arch, args.precision, threads=args.threads, quick=args.quick)
    rows = run(args.repeats or (2 if args.quick else 20))
    recs = records(rows)
    close_meta(meta, time.perf_counter() - t0)
    print(side_by_side(recs))
    res = {"suite": "taichi_dp benchmarks.bench_burgers", "meta": meta, "seconds": rows,
           "records": [r.as_dict() for r in recs]}
    if args.out:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
