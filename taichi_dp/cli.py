"""Command line: ``python -m taichi_dp COMMAND [options]`` (also installed as ``taichi-dp``).

Commands:
    burgers          solver-in-the-loop on 1D Burgers: source vs NON vs SOL-k; writes a run folder
    burgers-inverse  recover Burgers' initial state from a later observation through the solver
    train karman     solver-in-the-loop on the Karman wake: source vs NON / PRE-k / SOL-k (--preset quick|paper)
    eval RUN_DIR     re-evaluate a finished karman run folder from its checkpoints (report, metrics, plots)
    datagen karman   generate (or verify) the cached karman reference data of a preset
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """Every usage error is one ``error: …`` line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _integer(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (``0`` is a value, never "use the default")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _positive(text: str) -> float:
    """An argparse type: a finite number > 0 (``inf``/``nan``/``0`` refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--out", default=out, help=f"run folder (default: {out})")
    p.add_argument("--arch", default="cpu", choices=["auto", "cpu", "cuda", "vulkan"], help="Taichi arch (default: cpu)")
    p.add_argument("--precision", default="f32", choices=["f32", "f64"])
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads",
        type=_integer(1),
        default=1,
        help="torch CPU threads (default 1: on 2 shared cores a second OpenMP thread made the network up to 13x slower)",
    )


def _log_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log",
        default="none",
        choices=["none", "tensorboard"],
        help="experiment logging (default none): tensorboard writes losses, learning rate, validation errors"
        " (and karman vorticity images) to OUT/tensorboard/ (pip install 'taichi_dp[log]'); not part of the"
        " configuration: a --resume may change it",
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one ``error: …`` line on stderr and a non-zero exit status (set
    ``TAICHI_DP_TRACEBACK=1`` to also print the traceback of an unexpected error)."""
    args = _parser().parse_args(argv)
    # Taichi's native warnings (e.g. a kernel-cache lock held by another process) would break the promise
    # of one `error:`/`warning:` line per problem; TI_LOG_LEVEL=warn brings them back.
    quiet_taichi = "TI_LOG_LEVEL" not in os.environ
    if quiet_taichi:
        os.environ["TI_LOG_LEVEL"] = "error"
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("error: interrupted (a run folder continues with --resume)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, ArithmeticError) as e:
        return _fail(e, "")
    except Exception as e:  # a bug: still one line, with the exception type
        return _fail(e, f"unexpected {type(e).__name__}: ")
    finally:  # in-process callers (tests, notebooks) keep their own warning format and Taichi log level
        warnings.formatwarning = formatwarning
        if quiet_taichi:
            os.environ.pop("TI_LOG_LEVEL", None)


def _one_line(text: str) -> str:
    """``text`` with every run of white space (newlines included) folded to one space."""
    return " ".join(text.split())


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {_one_line(str(message))}\n"


def _fail(e: BaseException, prefix: str) -> int:
    if os.environ.get("TAICHI_DP_TRACEBACK"):
        traceback.print_exc()
    print(f"error: {prefix}{_one_line(str(e)) or type(e).__name__}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m taichi_dp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("burgers", help="solver-in-the-loop training + evaluation on 1D Burgers")
    _common(b, "runs/burgers")
    b.add_argument("--quick", action="store_true", help="tiny configuration (~1 min) for smoke tests")
    b.add_argument("--iterations", type=_integer(1), help="updates per variant (default 600)")
    b.add_argument("--unroll", type=_integer(1), help="k of SOL-k (default 8)")
    b.add_argument("--seed", type=_integer(0), default=0)
    b.add_argument("--resume", action="store_true", help="continue the run in --out (same configuration) from its checkpoints")
    _log_option(b)

    inv = sub.add_parser("burgers-inverse", help="recover the initial state of Burgers from a later observation")
    _common(inv, "runs/burgers_inverse")
    inv.add_argument("--iterations", type=_integer(1), default=300)
    inv.add_argument("--lr", type=_positive, default=0.02)
    inv.add_argument(
        "--resume", action="store_true", help="accept an existing --out run with the same configuration (it is recomputed)"
    )

    tr = sub.add_parser("train", help="train a corrector through a solver")
    tr.add_argument("scene", choices=["karman"])
    _common(tr, "runs/karman")
    tr.add_argument(
        "--preset",
        default="quick",
        choices=["quick", "paper", "tiny"],
        help="quick: 2 CPU cores, ~15 min (default); paper: the full protocol (GPU); tiny: seconds (smoke test)",
    )
    tr.add_argument("--variants", help="comma-separated, e.g. NON,PRE-4,SOL-4,SOL-16,NON+SOL-16 (default: the preset's)")
    tr.add_argument("--model", choices=["cnn", "unet"], help="correction network (default: the preset's, unet)")
    tr.add_argument("--iterations", type=_integer(1), help="updates per variant for the 'updates' protocol")
    tr.add_argument("--seconds", type=_positive, help="wall-clock seconds per variant for the 'wall' protocol")
    tr.add_argument("--protocols", help="comma-separated: updates, wall (default: the preset's)")
    tr.add_argument("--seeds", help="comma-separated seeds (default: the preset's)")
    tr.add_argument("--reproject", action="store_true", help="project the corrected velocity onto divergence-free fields")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its checkpoints")
    tr.add_argument("--checkpoint-every", type=_integer(1), help="save the trainer state every N updates (default: the preset's)")
    tr.add_argument(
        "--distributed", action="store_true", help="data-parallel training over the processes of a torchrun job (README)"
    )
    tr.add_argument(
        "--dist-timeout", type=_positive, default=180.0, help="seconds a collective waits for a hung peer (default 180)"
    )
    tr.add_argument("--cache", default="runs/cache", help="reference-data cache folder (default: runs/cache)")
    _log_option(tr)

    ev = sub.add_parser("eval", help="re-evaluate a finished karman run folder from its checkpoints")
    ev.add_argument("run_dir")
    ev.add_argument("--arch", default="cpu", choices=["auto", "cpu", "cuda", "vulkan"])
    ev.add_argument("--precision", default="f32", choices=["f32", "f64"])
    ev.add_argument("--cache", default="runs/cache")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--threads", type=_integer(1), default=1, help="torch CPU threads (default 1, as in training)")

    dg = sub.add_parser("datagen", help="generate or verify cached reference data")
    dg.add_argument("scene", choices=["karman"])
    dg.add_argument("--preset", default="quick", choices=["quick", "paper", "tiny"])
    dg.add_argument("--arch", default="cpu", choices=["auto", "cpu", "cuda", "vulkan"])
    dg.add_argument("--precision", default="f32", choices=["f32", "f64"])
    dg.add_argument("--cache", default="runs/cache")
    dg.add_argument("--no-progress", action="store_true")
    dg.add_argument("--threads", type=_integer(1), default=1, help="torch CPU threads (default 1)")
    return parser


def _check_out(out: Path) -> None:
    """Refuse an unusable ``--out`` before any work (nothing is created here)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: {parent} is not a writable folder")


def _dispatch(args: argparse.Namespace) -> int:
    import torch

    import taichi_dp

    if getattr(args, "out", None) is not None:
        _check_out(Path(args.out))
    torch.set_num_threads(args.threads)

    if getattr(args, "distributed", False):
        from .learn import distributed

        try:
            distributed.setup(args.arch, args.precision, timeout_s=args.dist_timeout)  # Taichi on this rank's device
        except (RuntimeError, ValueError) as e:
            raise RuntimeError(f"--distributed: {e}") from None
    else:
        taichi_dp.init(args.arch, args.precision)
    if args.command == "eval":
        return _eval_karman(args)
    if args.command == "datagen":
        return _datagen_karman(args)
    out = Path(args.out)
    if args.command == "burgers":
        return _burgers(args, out)
    if args.command == "train":
        return _train_karman(args, out)
    return _inverse(args, out)


def _karman_config(args: argparse.Namespace):
    from .learn.karman_experiment import KarmanExperimentConfig

    cfg = {"quick": KarmanExperimentConfig.quick, "paper": KarmanExperimentConfig.paper, "tiny": KarmanExperimentConfig.tiny}[
        args.preset
    ]()

    def items(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())

    if getattr(args, "variants", None) is not None:
        cfg.variants = items(args.variants)
    if getattr(args, "model", None) is not None:
        cfg.model = args.model
        cfg.width = 21 if args.model == "cnn" else 10
    if getattr(args, "reproject", False):
        cfg.reproject = True
    if getattr(args, "iterations", None) is not None:
        cfg.optim.iterations = args.iterations
    if getattr(args, "seconds", None) is not None:
        cfg.wall_seconds = args.seconds
    if getattr(args, "protocols", None) is not None:
        cfg.protocols = items(args.protocols)
    if getattr(args, "seeds", None) is not None:
        try:
            cfg.seeds = tuple(_integer(0)(x) for x in items(args.seeds))
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--seeds must be comma-separated integers >= 0, got {args.seeds!r}: {e}") from None
    cfg.validate()
    return cfg


def _train_karman(args: argparse.Namespace, out: Path) -> int:
    from .learn import distributed
    from .learn.karman_experiment import run

    cfg = _karman_config(args)
    if args.checkpoint_every is not None:
        cfg.save_every = args.checkpoint_every
    main_rank = distributed.is_main()  # rank 0 (or the only process) reports
    try:
        run(cfg, out, cache=args.cache, progress=not args.no_progress, resume=args.resume, log=args.log)
    finally:
        distributed.teardown()
    if not main_rank:
        return 0
    print((out / "report.md").read_text())
    print(f"wrote {out}/report.md, metrics.json, config.json, plots/, checkpoints/")
    return 0


def _eval_karman(args: argparse.Namespace) -> int:
    from .learn.karman_experiment import evaluate_run

    evaluate_run(args.run_dir, cache=args.cache, progress=not args.no_progress)
    print(Path(args.run_dir, "report.md").read_text())
    print(f"wrote {args.run_dir}/report.md, metrics.json, plots/")
    return 0


def _datagen_karman(args: argparse.Namespace) -> int:
    from .learn.karman_data import load_or_generate

    cfg = _karman_config(args)
    for name, data_cfg in (("train", cfg.train), ("test", cfg.test)):
        data = load_or_generate(data_cfg, args.cache, progress=not args.no_progress)
        print(
            f"{name}: Re {list(data_cfg.reynolds)}, velocity {tuple(data['velocity'].shape)}"
            f" in {args.cache}/karman-{data_cfg.key()}.pt"
        )
    return 0


def _burgers(args: argparse.Namespace, out: Path) -> int:
    from .learn.burgers_experiment import BurgersExperimentConfig, run

    cfg = BurgersExperimentConfig.quick() if args.quick else BurgersExperimentConfig()
    cfg.seed = cfg.train.seed = args.seed
    if args.iterations is not None:
        cfg.train.iterations = args.iterations
    if args.unroll is not None:
        cfg.unroll = args.unroll
    run(cfg, out, progress=not args.no_progress, resume=args.resume, log=args.log)
    print((out / "report.md").read_text())
    print(f"wrote {out}/report.md, metrics.json, config.json, plots/, checkpoints/")
    return 0


def _inverse(args: argparse.Namespace, out: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .learn import io
    from .learn.inverse import burgers_inverse
    from .runtime import ensure_init

    rt = ensure_init()
    config = {"experiment": "burgers-inverse", "iterations": args.iterations, "lr": args.lr}
    config.update(arch=rt.arch, precision=rt.precision)
    if not io.check_run_folder(out, config, "burgers-inverse", resume=args.resume):
        io.write_json(out / "config.json", config)
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
