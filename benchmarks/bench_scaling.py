"""Strong and weak scaling of SOL-4 training throughput over processes (torchrun; gloo on CPU, NCCL on GPUs).

    python -m benchmarks.bench_scaling [--procs 1 2] [--batch 4] [--iterations 12] [--arch cpu|cuda] [--quick]
                                       [--out|--json out.json]

Workload: the karman solver-in-the-loop update of :mod:`taichi_dp.learn.karman_experiment` (SOL-4 through
the 32×64 source solver, the quick preset's network as a ``StaggeredCorrection``, float32) on reference
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

The hidden ``--worker`` entry point is what each torchrun job starts. Command line, metadata and output:
:mod:`benchmarks.harness` (``--quick``: one process, batch 1, 2 timed updates).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ROOT, Record, at_least, close_meta, metadata, parse, parser, write_json

DATA = dict(reynolds=(150.0, 250.0, 400.0, 650.0), scale=1, factor=2, warmup=20, steps=12)


def _data_config():
    from taichi_dp.learn.karman_data import KarmanDataConfig

    return KarmanDataConfig(**DATA)


def worker(global_batch: int, iterations: int, cache: str, out: str, arch: str = "cpu") -> None:
    """One rank of a timed job: SOL-4 updates with global batch ``global_batch``; rank 0 writes ``out``."""
    import torch

    from taichi_dp.learn import TrainConfig, train
    from taichi_dp.learn import distributed as dist
    from taichi_dp.learn.karman_experiment import KarmanExperiment, KarmanExperimentConfig

    ctx = dist.setup(arch, "f32")
    cfg = KarmanExperimentConfig.preset("quick")
    cfg.data.train = _data_config()
    exp = KarmanExperiment(cfg)
    data = exp.make_data("train", cache=cache, progress=False)
    model = exp.make_model(seed=0)
    net = dist.wrap(model)
    loss, n = exp.loss("SOL-4", net, data)
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
        cmd += ["--iterations", str(iterations), "--cache", cache, "--worker-out", str(out), "--arch", arch]
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


def main(argv: list[str] | None = None) -> dict | None:
    """Command-line entry point; returns the result dictionary (``None`` in a worker)."""
    ap = parser(__doc__, arches=("cpu", "cuda"), threads=False, repeats=False,
                quick="CI size: one process, batch 1, 2 timed updates")
    ap.add_argument("--procs", type=at_least(1), nargs="+", default=None, help="process counts (default 1 2)")
    ap.add_argument("--batch", type=at_least(1), default=None,
                    help="per-process batch of the weak scaling (strong: max(procs) × this; default 4)")
    ap.add_argument("--iterations", type=at_least(1), default=None, help="timed updates per job (default 12)")
    ap.add_argument("--taichi-threads", type=at_least(1), help="Taichi CPU threads per process (default: cores // processes)")
    ap.add_argument("--torch-threads", type=at_least(1), default=1, help="torch intra-op threads per process (default 1)")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--global-batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parse(ap, argv)
    iterations = args.iterations or (2 if args.quick else 12)
    if args.worker:
        worker(args.global_batch, iterations, args.cache, args.worker_out, args.arch)
        return None
    procs = sorted(set(args.procs or ([1] if args.quick else [1, 2])))
    batch = args.batch or (1 if args.quick else 4)
    t0 = time.perf_counter()
    meta = metadata(args.arch, args.precision, quick=args.quick, backend="nccl" if args.arch == "cuda" else "gloo")
    result = run(procs, batch, iterations, args.cache, args.taichi_threads, args.torch_threads, args.arch)
    close_meta(meta, time.perf_counter() - t0)
    recs = [Record(f"SOL-4 update, {kind} scaling", f"{p} procs", metric, s[metric], unit)
            for kind in ("strong", "weak") for p, s in result[kind].items()
            for metric, unit in (("seconds_per_update", "s"), ("samples_per_second", "1/s"), ("efficiency", ""))
            if metric in s]
    res = {
        "suite": "taichi_dp benchmarks.bench_scaling",
        "meta": meta,
        "backend": meta["backend"],
        "arch": args.arch,
        "workload": "karman SOL-4 update, 32x64 source, the quick preset's network, float32",
        "data": DATA,
        "per_process_batch": batch,
        "timed_updates": iterations,
        **result,
        "records": [r.as_dict() for r in recs],
    }
    if args.out:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
