"""Spectral (FFT) against multigrid-PCG pressure projection on fully periodic boxes, 2D and 3D.

    python -m benchmarks.bench_projection [--sizes2d 64 128 256 512] [--sizes3d 32 64 128] [--batch B]
                                          [--repeats R] [--rtol 1e-5] [--arch cpu] [--precision f32|f64]
                                          [--threads T] [--json PATH] [--quick]

Workload: :func:`taichi_dp.ops.pressure.project` of a random staggered velocity (seeded, batch ``B``) on the
unit box with :meth:`FlowBoundary.periodic` sides and no obstacle, once with ``preconditioner="fft"``
(:mod:`taichi_dp.ops.spectral_projection`: exact, one real FFT pair) and once with the default fused
multigrid-PCG at ``--rtol`` (default 1e-5, the pressure solve's default). Per size and method:

- ``forward``: one projection (no autograd), median wall time (:func:`benchmarks.timing.time_call`,
  one warm-up run first: compilation and caches are not timed);
- ``forward_backward``: projection, then the gradient of ``Σ w·v⁺ + Σ w_p·p`` with respect to the input
  (the FFT backward is the same FFT projection; the multigrid one an adjoint solve);
- ``pcg_iterations`` (multigrid) and the largest difference of the two ``v⁺`` relative to its largest
  value, which is the multigrid solve's error at ``--rtol`` (the FFT solve is exact to round-off).

Output: a Markdown table on stdout and, with ``--json`` (default for a full run:
``benchmarks/results/projection_<arch>_<date>.json``), every figure with its spread and the machine.
``--quick`` runs 2D 16² and 3D 8³ with 2 repeats and writes nothing unless ``--json`` is given (a smoke
test that every path runs, not a measurement).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.harness import (
    at_least,
    close_meta,
    default_json,
    finish,
    machine_line,
    metadata,
    parse,
    parser,
    positive_float,
    start,
)
from benchmarks.timing import time_call

METHODS = {"fft": "fft", "multigrid": "multigrid"}  # column name -> ``preconditioner=``


def _setup(shape: tuple[int, ...], batch: int) -> tuple[Any, Any, torch.Tensor]:
    from taichi_dp import Grid
    from taichi_dp.grid.staggered import FlowBoundary
    from taichi_dp.runtime import ensure_init

    rt = ensure_init()
    grid = Grid(shape, tuple((0.0, 1.0) for _ in shape))
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(batch, len(shape), *(n + 1 for n in shape), generator=gen, dtype=torch.float64)
    return grid, FlowBoundary.periodic(len(shape)), v.to(dtype=rt.dtype, device=rt.device)


def measure_size(shape: tuple[int, ...], batch: int, repeats: int, rtol: float) -> dict[str, Any]:
    """Times of both methods at one grid ``shape`` (forward, forward + backward), PCG iterations, and the
    difference of the results."""
    from taichi_dp.ops.linear_solve import last_solve
    from taichi_dp.ops.pressure import project

    grid, boundary, v = _setup(shape, batch)
    w_out = torch.randn_like(v)
    w_p = torch.randn(batch, 1, *shape, dtype=v.dtype, device=v.device)
    row: dict[str, Any] = {"shape": list(shape), "cells": int(torch.tensor(shape).prod()), "batch": batch}
    outs = {}
    for name, pc in METHODS.items():

        def forward(pc: str = pc) -> tuple[torch.Tensor, torch.Tensor]:
            return project(v, grid, boundary, rtol=rtol, preconditioner=pc)

        def forward_backward(pc: str = pc) -> torch.Tensor:
            x = v.detach().requires_grad_()
            out, p = project(x, grid, boundary, rtol=rtol, preconditioner=pc)
            return torch.autograd.grad((out * w_out).sum() + (p * w_p).sum(), x)[0]

        outs[name] = forward()[0]
        if name == "multigrid":
            row["pcg_iterations"] = int(last_solve.iterations)
        row[f"{name}_forward"] = time_call(forward, repeats).as_dict()
        row[f"{name}_forward_backward"] = time_call(forward_backward, repeats).as_dict()
    for kind in ("forward", "forward_backward"):
        row[f"speedup_{kind}"] = row[f"multigrid_{kind}"]["median_s"] / row[f"fft_{kind}"]["median_s"]
    row["max_rel_difference"] = float((outs["fft"] - outs["multigrid"]).abs().max() / outs["multigrid"].abs().max())
    return row


def markdown(res: dict[str, Any]) -> str:
    """The result as a Markdown table (milliseconds, medians)."""
    m = res["meta"]
    lines = [
        f"Pressure projection, fully periodic box, batch {m['batch']}, {m['precision']}, arch {m['arch']}, "
        f"multigrid rtol {m['rtol']:g} (medians of {m['repeats']} runs); {machine_line(m)}",
        "",
        "| grid | FFT fwd ms | MG fwd ms | MG/FFT fwd | FFT fwd+bwd ms | MG fwd+bwd ms | MG/FFT fwd+bwd | PCG it "
        "| max rel diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        grid = "×".join(str(n) for n in r["shape"])
        ms = {k: 1e3 * r[k]["median_s"] for k in ("fft_forward", "multigrid_forward", "fft_forward_backward",
                                                  "multigrid_forward_backward")}
        lines.append(
            f"| {grid} | {ms['fft_forward']:.3f} | {ms['multigrid_forward']:.3f} | {r['speedup_forward']:.1f}× "
            f"| {ms['fft_forward_backward']:.3f} | {ms['multigrid_forward_backward']:.3f} "
            f"| {r['speedup_forward_backward']:.1f}× | {r['pcg_iterations']} | {r['max_rel_difference']:.1e} |"
        )
    return "\n".join(lines)


def run(sizes2d: list[int], sizes3d: list[int], batch: int, repeats: int, rtol: float, args: Any) -> dict:
    """Measure every size; returns the JSON-ready result (``meta`` and ``rows``)."""
    rt = start(args)
    meta = metadata(rt.arch, args.precision, threads=args.threads, quick=args.quick, batch=batch, repeats=repeats,
                    rtol=rtol, sizes2d=sizes2d, sizes3d=sizes3d)
    began = time.perf_counter()
    shapes = [(n, n) for n in sizes2d] + [(n, n, n) for n in sizes3d]
    rows = []
    for shape in shapes:
        rows.append(measure_size(shape, batch, repeats, rtol))
        r = rows[-1]
        print(
            f"{'×'.join(map(str, shape)):>11}: fft {1e3 * r['fft_forward']['median_s']:9.3f} ms, "
            f"multigrid {1e3 * r['multigrid_forward']['median_s']:9.3f} ms ({r['pcg_iterations']} it), "
            f"fwd+bwd fft {1e3 * r['fft_forward_backward']['median_s']:9.3f} ms, "
            f"multigrid {1e3 * r['multigrid_forward_backward']['median_s']:9.3f} ms",
            flush=True,
        )
    close_meta(meta, time.perf_counter() - began)
    return {"benchmark": "projection", "meta": meta, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, arches=("cpu", "vulkan", "cuda"), precisions=("f32", "f64"), repeats_default=5,
                quick="2D 16², 3D 8³, 2 repeats: a smoke run, not a measurement",
                out="write the result here (default for a full run: benchmarks/results/)")
    ap.add_argument("--sizes2d", type=at_least(4), nargs="*", default=[64, 128, 256, 512], help="2D sizes n (n² cells)")
    ap.add_argument("--sizes3d", type=at_least(4), nargs="*", default=[32, 64, 128], help="3D sizes n (n³ cells)")
    ap.add_argument("--batch", type=at_least(1), default=1)
    ap.add_argument("--rtol", type=positive_float, default=1e-5, help="multigrid-PCG tolerance (default: the pressure default)")
    args = parse(ap, argv)
    if not args.rtol < 1:
        ap.error(f"argument --rtol: expected a number in (0, 1), got {args.rtol}")
    if args.quick:
        args.sizes2d, args.sizes3d, args.repeats = [16], [8], 2
    res = run(args.sizes2d, args.sizes3d, args.batch, args.repeats, args.rtol, args)
    finish(res, markdown(res), default_json(args, "projection", res))


if __name__ == "__main__":
    main()
