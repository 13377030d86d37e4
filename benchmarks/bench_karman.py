"""Karman wake timings (the PBDL solver-in-the-loop scene) against the measured anchors.

    python -m benchmarks.bench_karman [--arch cpu] [--scales 1 2 4 8] [--repeats 5] [--phiflow] [--quick]
                                      [--precision f32|f64] [--threads T] [--out|--json out.json]

For each grid (32×64 · scale, x × y): one forward step, and forward + backward of a 4-step unroll
(loss = sum over the 4 states, gradient w.r.t. the initial velocity); pressure-solve iterations per
step (multigrid-PCG, rel. tol 1e-3 like the anchors); Taichi kernel launches per step; peak memory of
the process (CPU: max RSS growth) or of the device (CUDA). Float32, batch 1. With ``--phiflow`` (and
PhiFlow 3.4 installed: ``pip install -e .[bench]``) the same workload also runs in PhiFlow in this
process (:mod:`benchmarks.phiflow_karman`; 256×512 skipped, see there); otherwise the PhiFlow and
``torch.compile`` figures are the anchors measured on the same machine kind (ANCHORS.md). Command line,
metadata, timing and output: :mod:`benchmarks.harness` (``--sizes`` is an alias of ``--scales``;
``--quick``: scale 1, 2 repeats).
"""

from __future__ import annotations

import resource
import time

import torch

from benchmarks.harness import Record, close_meta, metadata, parse, parser, side_by_side, start, write_json
from benchmarks.timing import LaunchCounter, median_seconds
from taichi_dp.ops import linear_solve
from taichi_dp.scenes import karman
from taichi_dp.solvers import rollout

# Measured anchors, 2 CPU cores (ANCHORS.md): grid → (PhiFlow step, PhiFlow fwd+bwd, torch eager step,
# torch.compile step, torch.compile fwd+bwd), seconds.
CPU_ANCHORS = {
    (64, 32): (0.022, 0.30, 0.0089, 0.00184, 0.014),
    (128, 64): (0.034, 1.2, 0.0146, 0.0042, 0.046),
    (256, 128): (0.100, 8.1, 0.061, 0.0172, 0.21),
    (512, 256): (0.566, 58.0, 0.344, 0.107, 1.34),
}


def run(scales: list[int], repeats: int, phiflow: bool = False) -> list[dict]:
    """One row per scale: taichi_dp step and 4-step fwd+bwd, PCG iterations, launches, peak memory, and the
    PhiFlow figures (measured here with ``phiflow``; anchors where the grid has them)."""
    rows = []
    for scale in scales:
        scene = karman(scale=scale, reynolds=200.0)
        st = scene.stepper
        with torch.no_grad():  # a developed state, not the start-up transient
            v = rollout(st, scene.state0, 5)[:, -1].contiguous()

        def step(v=v, st=st):
            with torch.no_grad():
                st(v)

        def fwd_bwd(v=v, st=st):
            v0 = v.clone().requires_grad_()
            rollout(st, v0, 4, include_initial=False).sum().backward()

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t_step = median_seconds(step, repeats)
        its = linear_solve.last_solve.iterations
        with LaunchCounter() as c:
            step()
        t_fb = median_seconds(fwd_bwd, max(1, repeats // 2))
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        anchors = CPU_ANCHORS.get(st.grid.shape)
        row = {
            "grid_xy": f"{st.grid.shape[1]}x{st.grid.shape[0]}",
            "step_s": t_step,
            "fwd_bwd_4_s": t_fb,
            "pressure_iterations": its,
            "launches_per_step": c.count,
            "peak_rss_growth_mb": peak_mb,
        }
        if phiflow and st.grid.shape != (512, 256):
            from benchmarks import phiflow_karman

            row["phiflow_measured_step_s"], row["phiflow_measured_fwd_bwd_s"] = phiflow_karman.karman_times(
                st.grid.shape[1], st.grid.shape[0], repeats
            )
            print(
                f"{row['grid_xy']:>8}  PhiFlow 3.4 here: step {1e3 * row['phiflow_measured_step_s']:8.1f} ms  "
                f"fwd+bwd(4) {1e3 * row['phiflow_measured_fwd_bwd_s']:8.1f} ms  → taichi_dp "
                f"×{row['phiflow_measured_step_s'] / t_step:5.2f} / ×{row['phiflow_measured_fwd_bwd_s'] / t_fb:5.2f}"
            )
        if anchors:
            row.update(
                phiflow_step_s=anchors[0],
                phiflow_fwd_bwd_s=anchors[1],
                torch_compile_step_s=anchors[3],
                torch_compile_fwd_bwd_s=anchors[4],
            )
        rows.append(row)
        print(
            f"{row['grid_xy']:>8}  step {1e3 * t_step:8.1f} ms  fwd+bwd(4) {1e3 * t_fb:8.1f} ms  "
            f"CG its {its:3d}  launches/step {c.count:4d}  peak +{peak_mb:6.0f} MB"
            + (
                f"  | PhiFlow ×{anchors[0] / t_step:5.2f} / ×{anchors[1] / t_fb:5.2f}"
                f"  torch.compile ×{anchors[3] / t_step:5.2f} / ×{anchors[4] / t_fb:5.2f}"
                if anchors
                else ""
            )
        )
    return rows


ANCHOR_IMPLS = {"phiflow_measured": "phiflow", "phiflow": "phiflow (anchor)", "torch_compile": "torch.compile (anchor)"}


def records(rows: list[dict]) -> list[Record]:
    """The rows as harness records: taichi_dp's measured figures, PhiFlow measured here, and the anchors."""
    out = []
    for r in rows:
        g = r["grid_xy"]
        out += [Record("karman", g, "step_s", r["step_s"], "s"), Record("karman", g, "fwd_bwd_4_s", r["fwd_bwd_4_s"], "s"),
                Record("karman", g, "pressure_iterations", r["pressure_iterations"], "")]
        for prefix, impl in ANCHOR_IMPLS.items():
            for metric, key in (("step_s", f"{prefix}_step_s"), ("fwd_bwd_4_s", f"{prefix}_fwd_bwd_s")):
                if key in r:
                    out.append(Record("karman", g, metric, r[key], "s", impl))
    return out


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the result dictionary."""
    ap = parser(__doc__, precisions=("f32", "f64"), sizes="karman grid scales s (32·s × 64·s; default 1 2 4 8)",
                sizes_flags=("--scales", "--sizes"), quick="CI size: scale 1, 2 repeats")
    ap.add_argument("--phiflow", action="store_true", help="also time PhiFlow 3.4 in this process (if installed)")
    args = parse(ap, argv)
    rt = start(args)
    t0 = time.perf_counter()
    meta = metadata(rt.arch, args.precision, threads=args.threads, quick=args.quick)
    print("speed-up factors: anchor time / taichi_dp time (> 1 means taichi_dp is faster)")
    from benchmarks import phiflow_karman

    if args.phiflow and not phiflow_karman.available():
        raise SystemExit("--phiflow needs PhiFlow 3.4: pip install -e '.[bench]'")
    scales = args.sizes or ([1] if args.quick else [1, 2, 4, 8])
    rows = run(scales, args.repeats or (2 if args.quick else 5), args.phiflow)
    recs = records(rows)
    close_meta(meta, time.perf_counter() - t0)
    print(side_by_side(recs))
    res = {"suite": "taichi_dp benchmarks.bench_karman", "meta": meta, "rows": rows, "records": [r.as_dict() for r in recs]}
    if args.out:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
