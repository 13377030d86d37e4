"""Command line: ``python -m taichi_dp COMMAND [options]`` (also installed as ``taichi-dp``).

Commands:
    burgers          solver-in-the-loop on 1D Burgers: source vs NON vs SOL-k; writes a run folder
    burgers-inverse  recover Burgers' initial state from a later observation through the solver
    train karman     solver-in-the-loop on the Karman wake (quick CPU preset): source vs NON vs SOL-k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--out", default=out, help=f"run folder (default: {out})")
    p.add_argument("--arch", default="cpu", choices=["auto", "cpu", "cuda", "vulkan"], help="Taichi arch (default: cpu)")
    p.add_argument("--precision", default="f32", choices=["f32", "f64"])
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m taichi_dp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("burgers", help="solver-in-the-loop training + evaluation on 1D Burgers")
    _common(b, "runs/burgers")
    b.add_argument("--quick", action="store_true", help="tiny configuration (~1 min) for smoke tests")
    b.add_argument("--iterations", type=int, help="updates per variant (default 600)")
    b.add_argument("--unroll", type=int, help="k of SOL-k (default 8)")
    b.add_argument("--seed", type=int, default=0)

    inv = sub.add_parser("burgers-inverse", help="recover the initial state of Burgers from a later observation")
    _common(inv, "runs/burgers_inverse")
    inv.add_argument("--iterations", type=int, default=300)
    inv.add_argument("--lr", type=float, default=0.02)

    tr = sub.add_parser("train", help="train a corrector through a solver")
    tr.add_argument("scene", choices=["karman"])
    _common(tr, "runs/karman")
    tr.add_argument("--iterations", type=int, help="updates per variant (default 150)")
    tr.add_argument("--unroll", type=int, help="k of SOL-k (default 4)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--cache", default="runs/cache", help="reference-data cache folder (default: runs/cache)")

    args = parser.parse_args(argv)
    import taichi_dp

    taichi_dp.init(args.arch, args.precision)
    out = Path(args.out)
    if args.command == "burgers":
        return _burgers(args, out)
    if args.command == "train":
        return _train_karman(args, out)
    return _inverse(args, out)


def _train_karman(args: argparse.Namespace, out: Path) -> int:
    from .learn.karman_experiment import KarmanExperimentConfig, run

    cfg = KarmanExperimentConfig(seed=args.seed)
    cfg.optim.seed = args.seed
    if args.iterations:
        cfg.optim.iterations = args.iterations
    if args.unroll:
        cfg.unroll = args.unroll
    run(cfg, out, cache=args.cache, progress=not args.no_progress)
    print((out / "report.md").read_text())
    print(f"wrote {out}/report.md, metrics.json, config.json, checkpoints/")
    return 0


def _burgers(args: argparse.Namespace, out: Path) -> int:
    from .learn.burgers_experiment import BurgersExperimentConfig, run

    cfg = BurgersExperimentConfig.quick() if args.quick else BurgersExperimentConfig()
    cfg.seed = cfg.train.seed = args.seed
    if args.iterations:
        cfg.train.iterations = args.iterations
    if args.unroll:
        cfg.unroll = args.unroll
    run(cfg, out, progress=not args.no_progress)
    print((out / "report.md").read_text())
    print(f"wrote {out}/report.md, metrics.json, config.json, plots/, checkpoints/")
    return 0


def _inverse(args: argparse.Namespace, out: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .learn import io
    from .learn.inverse import burgers_inverse

    r = burgers_inverse(args.iterations, args.lr, progress=not args.no_progress)
    io.write_json(out / "metrics.json", {"losses": r.losses, "reduction": r.reduction, "seconds": r.seconds})
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
    ax[0].semilogy(r.losses)
    ax[0].set(xlabel="iteration", ylabel="loss at step 16", title=f"loss reduced {r.reduction:.1e}×")
    x = [-1 + (i + 0.5) * 2 / r.observed.shape[0] for i in range(r.observed.shape[0])]
    ax[1].plot(x, r.observed, "k-", lw=2, label="observation (step 16)")
    ax[1].plot(x, r.reached, "--", color="tab:green", label="reached from estimate")
    ax[1].set(xlabel="x", title="state at step 16")
    ax[1].legend()
    ax[2].plot(x, r.initial_true, "k-", lw=2, label="true u0 = -sin(πx)")
    ax[2].plot(x, r.initial_estimate, "-", color="tab:green", label="recovered u0")
    ax[2].set(xlabel="x", title="initial state")
    ax[2].legend()
    io.save_figure(out / "plots" / "inverse.png", fig)
    print(
        f"loss {r.losses[0]:.3e} -> {r.losses[-1]:.3e} ({r.reduction:.1e}x) in {r.seconds:.1f} s; wrote {out}/plots/inverse.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
