"""Strong and weak scaling of SOL-4 training throughput over processes (torchrun; gloo on CPU, NCCL on GPUs).

    python -m benchmarks.bench_scaling [--procs 1 2] [--batch 4] [--iterations 12] [--arch cpu|cuda] [--json out.json]

Workload: the karman solver-in-the-loop update of :mod:`taichi_dp.learn.karman_experiment` (SOL-4 through
the 32×64 source solver, the quick preset's ResidualCNN as a ``StaggeredCorrection``, float32) on reference
data from :mod:`taichi_dp.learn.karman_data` (factor 2, 4 Reynolds numbers). Each configuration runs in
a fresh ``torchrun`` job. Threads per process: Taichi's ``TI_CPU_MAX_NUM_THREADS`` = ``cores // procs``
(every configuration uses all cores; ``--taichi-threads`` overrides) and torch's ``OMP_NUM_THREADS`` =
``--torch-threads`` (default 1: the network is small, and on this 2-core machine two torch intra-op
threads made a single process ~6× slower, see RESULTS.md). Per job: 2 warm-up updates (compilation, DDP
buckets), then ``--iterations`` timed updates; throughput = global batch × updates / loop time (rank 0).

- strong scaling: fixed global batch ``max(procs) × batch`` split over N processes;
  efficiency = (time per update with 1 process) / (N × time per update with N processes).
- weak scaling: fixed per-process batch ``batch`` (global batch N × batch);
  efficiency = throughput(N) / (N × throughput(1)).

The hidden ``--worker`` entry point is what each torchrun job starts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = dict(reynolds=(150.0, 250.0, 400.0, 650.0), scale=1, factor=2, warmup=20, steps=12)


def _data_config():
    from taichi_dp.learn.karman_data import KarmanDataConfig

    return KarmanDataConfig(**DATA)


def worker(global_batch: int, iterations: int, cache: str, out: str, arch: str = "cpu") -> None:
    """One rank of a timed job: SOL-4 updates with global batch ``global_batch``; rank 0 writes ``out``."""
    import torch

    from taichi_dp.learn import TrainConfig, train
    from taichi_dp.learn import distributed as dist
    from taichi_dp.learn.karman_data import load_or_generate
    from taichi_dp.learn.karman_experiment import KarmanExperimentConfig, make_model, variant_loss
    from taichi_dp.scenes import karman

    ctx = dist.setup(arch, "f32")
    data = load_or_generate(_data_config(), cache, progress=False)
    ref, re_ = (data[k].to(torch.float32).to(ctx.device) for k in ("velocity", "reynolds"))
    cfg = KarmanExperimentConfig.quick()
    cfg.train = _data_config()
    base = karman(scale=1, reynolds=re_).stepper
    model = make_model(cfg, base, seed=0)
    net = dist.wrap(model)
    loss, n = variant_loss(cfg, "SOL-4", net, ref, re_, base)
    train(net, loss, n, TrainConfig(iterations=2, batch_size=global_batch, lr=1e-4), progress=False)  # warm-up
    res = train(net, loss, n, TrainConfig(iterations=iterations, batch_size=global_batch, lr=1e-4, seed=1), progress=False)
    if dist.is_main():
        row = {
            "procs": ctx.world_size,
            "taichi_threads_per_proc": int(os.environ.get("TI_CPU_MAX_NUM_THREADS", "0")),
            "torch_threads_per_proc": torch.get_num_threads(),
            "global_batch": global_batch,
            "iterations": res.iterations,
            "seconds": res.seconds,
            "seconds_per_update": res.seconds_per_iteration,
            "samples_per_second": global_batch * res.iterations / res.seconds,
        }
        Path(out).write_text(json.dumps(row))
    dist.teardown()


def _job(
    procs: int, global_batch: int, iterations: int, cache: str, taichi_threads: int, torch_threads: int, arch: str
) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(torch_threads),
        "TI_CPU_MAX_NUM_THREADS": str(taichi_threads),
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        cmd += ["-m", "benchmarks.bench_scaling", "--worker", "--global-batch", str(global_batch)]
        cmd += ["--iterations", str(iterations), "--cache", cache, "--out", str(out), "--arch", arch]
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"torchrun job (procs={procs}, batch={global_batch}) failed:\n{p.stderr[-4000:]}")
        row = json.loads(out.read_text())
    row["job_seconds"] = time.perf_counter() - t
    print(
        f"procs {procs}  threads/proc taichi {taichi_threads} torch {torch_threads}  global batch {global_batch:3d}: "
        f"{1e3 * row['seconds_per_update']:7.1f} ms/update"
        f"  {row['samples_per_second']:6.2f} samples/s  (job {row['job_seconds']:.0f} s incl. start-up)"
    )
    return row


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run(
    procs: list[int],
    batch: int,
    iterations: int,
    cache: str,
    taichi_threads: int | None = None,
    torch_threads: int = 1,
    arch: str = "cpu",
) -> dict:
    """Time every configuration; returns rows and the strong/weak efficiencies."""
    import taichi_dp as tdp
    from taichi_dp.learn.karman_data import load_or_generate

    tdp.init("cpu", "f32")
    load_or_generate(_data_config(), cache, progress=False)  # generated once, outside the timings
    cores = os.cpu_count() or 1
    load_before = _loadavg()
    n_max = max(procs)

    def job(p: int, global_batch: int) -> dict:
        return _job(p, global_batch, iterations, cache, taichi_threads or max(1, cores // p), torch_threads, arch)

    strong = {p: job(p, n_max * batch) for p in procs}
    weak = {p: (strong[p] if p == n_max else job(p, p * batch)) for p in procs}
    load_after = _loadavg()
    s1, w1 = strong[min(procs)], weak[min(procs)]
    p0 = min(procs)
    summary = {
        "strong": {
            str(p): {
                "global_batch": r["global_batch"],
                "seconds_per_update": r["seconds_per_update"],
                "speedup": s1["seconds_per_update"] / r["seconds_per_update"],
                "efficiency": s1["seconds_per_update"] / r["seconds_per_update"] / (p / p0),
            }
            for p, r in strong.items()
        },
        "weak": {
            str(p): {
                "global_batch": r["global_batch"],
                "samples_per_second": r["samples_per_second"],
                "efficiency": r["samples_per_second"] / (w1["samples_per_second"] * p / p0),
            }
            for p, r in weak.items()
        },
    }
    for kind in ("strong", "weak"):
        for p, s in summary[kind].items():
            print(f"{kind:6s} scaling, {p} process(es): efficiency {100 * s['efficiency']:5.1f}%")
    return {
        "cores": cores,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "rows": {"strong": list(strong.values()), "weak": list(weak.values())},
        **summary,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=4, help="per-process batch of the weak scaling (strong: max(procs) × this)")
    ap.add_argument("--iterations", type=int, default=12, help="timed updates per job")
    ap.add_argument("--taichi-threads", type=int, help="Taichi CPU threads per process (default: cores // processes)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads per process (default 1)")
    ap.add_argument("--arch", default="cpu", choices=["cpu", "cuda"], help="cpu: gloo; cuda: NCCL, one GPU per process")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--global-batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.global_batch, args.iterations, args.cache, args.out, args.arch)
        return
    if min(args.procs) < 1 or args.batch < 1 or args.iterations < 1:
        raise SystemExit("error: --procs, --batch and --iterations must be >= 1")
    procs = sorted(set(args.procs))
    result = run(procs, args.batch, args.iterations, args.cache, args.taichi_threads, args.torch_threads, args.arch)
    import torch

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "backend": "nccl" if args.arch == "cuda" else "gloo",
        "arch": args.arch,
        "workload": "karman SOL-4 update, 32x64 source, ResidualCNN (quick preset), float32",
        "data": DATA,
        "per_process_batch": args.batch,
        "timed_updates": args.iterations,
        **result,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(meta, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
