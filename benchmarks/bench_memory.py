"""Memory of long SOL unrolls with and without gradient checkpointing (karman scene, CPU).

    python -m benchmarks.bench_memory [--unroll 32] [--batch 8] [--every 0 8] [--threads T] [--quick]
                                      [--out|--json out.json]

Each configuration runs in a fresh subprocess (so peak RSS is its own): one SOL-k loss + backward
through ``k`` karman steps (32×64, float32) with a ResidualCNN corrector, ``checkpoint_every`` = 0
(store every step) or n (recompute chunks of n steps in backward). Reports peak RSS growth over the
process baseline and wall time. Command line, metadata and output: :mod:`benchmarks.harness`
(``--quick``: SOL-4, batch 2, ``checkpoint_every`` 0 and 2).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from benchmarks.harness import ROOT, Record, apply_threads, at_least, close_meta, metadata, parse, parser, write_json


def child(unroll: int, batch: int, every: int) -> dict:
    """In this (fresh) process: peak RSS growth and seconds of one SOL-``unroll`` loss + backward."""
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


def main(argv: list[str] | None = None) -> dict | None:
    """Command-line entry point; returns the result dictionary (``None`` in a child)."""
    ap = parser(__doc__, arches=("cpu",), repeats=False, quick="CI size: SOL-4, batch 2, checkpoint_every 0 and 2")
    ap.add_argument("--unroll", type=at_least(1), default=None, help="SOL unroll k (default 32)")
    ap.add_argument("--batch", type=at_least(1), default=None, help="batch size (default 8)")
    ap.add_argument("--every", type=at_least(0), nargs="+", default=None, help="checkpoint_every values (default 0 8)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parse(ap, argv)
    unroll, batch = args.unroll or (4 if args.quick else 32), args.batch or (2 if args.quick else 8)
    if args.child is not None:
        apply_threads(args.threads)
        print(json.dumps(child(unroll, batch, args.child)))
        return None
    t0 = time.perf_counter()
    meta = metadata("cpu", args.precision, threads=args.threads, quick=args.quick, unroll=unroll, batch=batch)
    rows = []
    for every in args.every or ([0, 2] if args.quick else [0, 8]):
        cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--unroll", str(unroll), "--batch", str(batch)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        out = subprocess.run([*cmd, "--child", str(every)], capture_output=True, text=True, check=True, cwd=ROOT).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"SOL-{row['unroll']} batch {row['batch']} checkpoint_every={every:2d}: "
            f"peak +{row['peak_rss_growth_mb']:7.1f} MB, {row['seconds']:.2f} s"
        )
    close_meta(meta, time.perf_counter() - t0)
    recs = [Record(f"SOL-{r['unroll']} batch {r['batch']} checkpoint_every={r['checkpoint_every']}", "32x64", m, r[k], u)
            for r in rows for m, k, u in (("peak_rss_growth_mb", "peak_rss_growth_mb", "MB"), ("seconds", "seconds", "s"))]
    res = {"suite": "taichi_dp benchmarks.bench_memory", "meta": meta, "rows": rows, "records": [r.as_dict() for r in recs]}
    if args.out:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
