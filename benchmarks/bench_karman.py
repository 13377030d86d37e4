"""Karman wake timings (the PBDL solver-in-the-loop scene) against the measured anchors.

    python -m benchmarks.bench_karman [--arch cpu] [--scales 1 2 4 8] [--repeats 5] [--json out.json]

For each grid (32×64 · scale, x × y): one forward step, and forward + backward of a 4-step unroll
(loss = sum over the 4 states, gradient w.r.t. the initial velocity); pressure-solve iterations per
step (multigrid-PCG, rel. tol 1e-3 like the anchors); Taichi kernel launches per step; peak memory of
the process (CPU: max RSS growth) or of the device (CUDA). Float32, batch 1. With ``--phiflow`` (and
PhiFlow 3.4 installed: ``pip install -e .[bench]``) the same workload also runs in PhiFlow in this
process (:mod:`benchmarks.phiflow_karman`; 256×512 skipped, see there); otherwise the PhiFlow and
``torch.compile`` figures are the anchors measured on the same machine kind (ANCHORS.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource

import torch

import taichi_dp as tdp
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="cpu")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--phiflow", action="store_true", help="also time PhiFlow 3.4 in this process (if installed)")
    args = ap.parse_args()
    rt = tdp.init(args.arch, "f32")
    print("speed-up factors: anchor time / taichi_dp time (> 1 means taichi_dp is faster)")
    from benchmarks import phiflow_karman

    if args.phiflow and not phiflow_karman.available():
        raise SystemExit("--phiflow needs PhiFlow 3.4: pip install -e '.[bench]'")
    rows = run(args.scales, args.repeats, args.phiflow)
    if args.json:
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.platform(),
            "arch": rt.arch,
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "rows": rows,
        }
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
