"""Memory of long SOL unrolls with and without gradient checkpointing (karman scene, CPU).

    python -m benchmarks.bench_memory [--unroll 32] [--batch 8] [--every 0 8] [--json out.json]

Each configuration runs in a fresh subprocess (so peak RSS is its own): one SOL-k loss + backward
through ``k`` karman steps (32×64, float32) with a ResidualCNN corrector, ``checkpoint_every`` = 0
(store every step) or n (recompute chunks of n steps in backward). Reports peak RSS growth over the
process baseline and wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(unroll: int, batch: int, every: int) -> dict:
    import torch

    import taichi_dp as tdp
    from models import ResidualCNN
    from taichi_dp.learn.hybrid import StaggeredCorrection, sol_loss
    from taichi_dp.scenes import karman
    from taichi_dp.solvers import rollout

    tdp.init("cpu", "f32")
    scene = karman(reynolds=torch.linspace(150.0, 600.0, batch))
    st = scene.stepper
    with torch.no_grad():
        ref = rollout(st, scene.state0, unroll).contiguous()  # a stand-in reference window
    net = ResidualCNN(2, 2, conditioning=("re",), width=24, blocks=2, padding_mode="replicate")
    torch.nn.init.normal_(net.out.weight, std=1e-3)
    model = StaggeredCorrection(net, st.grid, st.boundary, st.fluid)
    cond = {"re": torch.zeros(batch)}
    sol_loss(st, model, ref[:, :3], cond).backward()  # warm-up: compile kernels, build caches
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    sol_loss(st, model, ref, cond, checkpoint_every=every).backward()
    return {
        "unroll": unroll,
        "batch": batch,
        "checkpoint_every": every,
        "seconds": time.perf_counter() - t,
        "peak_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unroll", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--every", type=int, nargs="+", default=[0, 8])
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.unroll, args.batch, args.child)))
        return
    rows = []
    for every in args.every:
        cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--unroll", str(args.unroll), "--batch", str(args.batch)]
        out = subprocess.run([*cmd, "--child", str(every)], capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"SOL-{row['unroll']} batch {row['batch']} checkpoint_every={every:2d}: "
            f"peak +{row['peak_rss_growth_mb']:7.1f} MB, {row['seconds']:.2f} s"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
