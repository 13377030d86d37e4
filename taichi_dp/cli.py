"""Command line: ``python -m taichi_dp COMMAND [options] [KEY=VALUE ...]`` (also installed as ``taichi-dp``).

Commands:
    burgers          solver-in-the-loop on 1D Burgers: source vs NON vs SOL-k; writes a run folder
    burgers-inverse  recover Burgers' initial state from a later observation through the solver
    train karman     solver-in-the-loop on the Karman wake: source vs NON / PRE-k / SOL-k (--preset quick|medium|paper|tiny)
    eval RUN_DIR     re-evaluate a finished run folder (karman or burgers) from its checkpoints
    datagen karman   generate (or verify) the cached karman reference data of a configuration (--format pt|zarr|netcdf)
    export RUN_DIR   write a karman run's test reference and rollouts as an xarray Dataset (--format netcdf|zarr)

Every experiment runs from a configuration: a shipped preset (``--preset NAME``, a TOML file in
``taichi_dp/presets/``) or a file (``--config FILE``: TOML, or a run folder's ``config.json``, which
reproduces that run), then the flags (each sets the configuration key its help names), then positional
``KEY=VALUE`` overrides with dotted keys (``train.seconds=300 train.seeds=0,1,2``). Precedence, lowest
first: preset or config file < flags < KEY=VALUE. ``--arch``/``--precision`` default to the values recorded
in a ``config.json`` passed with ``--config``, else cpu / f32.

This module only parses and dispatches: configurations are built by :mod:`taichi_dp.learn.config` and
the experiments (:mod:`taichi_dp.learn.experiment`).
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


def _common(p: argparse.ArgumentParser, out: str, *, presets: str | None, log: bool = True) -> None:
    """The options every experiment command has."""
    if presets is not None:
        from .learn.config import preset_names

        names = preset_names(presets)
        p.add_argument("--preset", choices=names, help=f"a shipped configuration: {', '.join(names)} (taichi_dp/presets/)")
    p.add_argument("--config", metavar="FILE", help="configuration file: TOML, or a run folder's config.json (reproduces it)")
    p.add_argument("--out", default=out, help=f"run folder (default: {out})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (same configuration) from its checkpoints")
    _runtime(p)
    if log:
        p.add_argument(
            "--log",
            default="none",
            choices=["none", "tensorboard"],
            help="experiment logging (default none): tensorboard writes losses, learning rate, validation errors"
            " (and karman vorticity images) to OUT/tensorboard/ (pip install 'taichi_dp[log]'); not part of the"
            " configuration: a --resume may change it",
        )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides, e.g. train.seconds=300")


def _runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=["auto", "cpu", "cuda", "vulkan"], help="Taichi arch (default: a --config file's, else cpu)")
    p.add_argument("--precision", choices=["f32", "f64"], help="default: a --config file's, else f32")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads",
        type=_integer(1),
        default=1,
        help="torch CPU threads (default 1: on 2 shared cores a second OpenMP thread made the network up to 13x slower)",
    )


def _train_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the ``train`` section every experiment shares (each one a configuration key)."""
    p.add_argument("--variants", help="train.variants, comma-separated, e.g. NON,PRE-4,SOL-4,SOL-16,NON+SOL-16")
    p.add_argument("--iterations", type=_integer(1), help="train.iterations: updates per variant ('updates' protocol)")
    p.add_argument("--seconds", type=_positive, help="train.seconds: wall-clock seconds per variant ('wall' protocol)")
    p.add_argument("--protocols", help="train.protocols, comma-separated: updates, wall")
    p.add_argument("--seeds", help="train.seeds, comma-separated integers >= 0")
    p.add_argument("--checkpoint-every", type=_integer(1), help="train.save_every: save the trainer state every N updates")
    p.add_argument(
        "--distributed", action="store_true", help="data-parallel training over the processes of a torchrun job (README)"
    )
    p.add_argument(
        "--dist-timeout", type=_positive, default=180.0, help="seconds a collective waits for a hung peer (default 180)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one ``error: …`` line on stderr and a non-zero exit status (set
    ``TAICHI_DP_TRACEBACK=1`` to also print the traceback of an unexpected error)."""
    args = _parse(argv)
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
    _common(b, "runs/burgers", presets="burgers")
    b.add_argument("--quick", action="store_true", help="the same as --preset quick (~1 min, smoke tests)")
    _train_flags(b)
    b.add_argument("--unroll", type=_integer(1), help="k of the SOL-k variants (train.variants)")
    b.add_argument("--seed", type=_integer(0), help="data.seed and train.seeds = [SEED]")

    inv = sub.add_parser("burgers-inverse", help="recover the initial state of Burgers from a later observation")
    _common(inv, "runs/burgers_inverse", presets=None, log=False)
    inv.add_argument("--iterations", type=_integer(1), help="iterations (default 300)")
    inv.add_argument("--lr", type=_positive, help="lr (default 0.02)")

    tr = sub.add_parser("train", help="train a corrector through a solver")
    tr.add_argument("scene", choices=["karman"])
    _common(tr, "runs/karman", presets="karman")
    _train_flags(tr)
    tr.add_argument("--model", choices=["cnn", "unet"], help="model.kind (and its standard model.width: cnn 21, unet 10)")
    tr.add_argument(
        "--reproject", action="store_true", help="model.reproject: project the corrected velocity onto divergence-free fields"
    )
    tr.add_argument("--cache", default="runs/cache", help="reference-data cache folder (default: runs/cache)")

    ev = sub.add_parser("eval", help="re-evaluate a finished run folder (karman or burgers) from its checkpoints")
    ev.add_argument("run_dir")
    _runtime(ev)
    ev.add_argument("--cache", default="runs/cache", help="reference-data cache folder (karman; default: runs/cache)")

    dg = sub.add_parser("datagen", help="generate or verify cached reference data")
    dg.add_argument("scene", choices=["karman"])
    from .learn.config import preset_names

    dg.add_argument("--preset", choices=preset_names("karman"), help="default: quick")
    dg.add_argument("--config", metavar="FILE", help="configuration file: TOML, or a run folder's config.json")
    _runtime(dg)
    dg.add_argument("--cache", default="runs/cache")
    dg.add_argument(
        "--format",
        default="pt",
        choices=["pt", "zarr", "netcdf"],
        help="cache format (default pt); zarr/netcdf write an xarray store that training reads too"
        " (pip install 'taichi_dp[data]')",
    )
    dg.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides, e.g. data.test.steps=200")

    ex = sub.add_parser("export", help="write a karman run's test reference and rollouts as NetCDF or Zarr")
    ex.add_argument("run_dir")
    ex.add_argument(
        "--format", default="netcdf", choices=["netcdf", "zarr"], help="default netcdf (pip install 'taichi_dp[data]')"
    )
    ex.add_argument("--out", help="destination (default: RUN_DIR/rollouts.nc or RUN_DIR/rollouts.zarr)")
    ex.add_argument("--protocol", choices=["updates", "wall"], help="which protocol's models (default: the run's first)")
    ex.add_argument("--seed", type=_integer(0), help="which seed's models (default: the run's first)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    _runtime(ex)
    ex.add_argument("--cache", default="runs/cache", help="reference-data cache folder (default: runs/cache)")
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; ``KEY=VALUE`` words anywhere after the command are configuration overrides."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *extra]
        bad = [x for x in args.overrides if "=" not in x]
        if bad:
            parser.error(f"argument KEY=VALUE: expected a configuration override such as train.seconds=300, got {bad[0]!r}")
    return args


def _check_out(out: Path) -> None:
    """Refuse an unusable ``--out`` before any work (nothing is created here)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: {parent} is not a writable folder")


def _experiment_module(args: argparse.Namespace):
    """The experiment module of a training command (looked up at call time: tests replace its ``run``)."""
    from .learn import burgers_experiment, karman_experiment

    return karman_experiment if args.command == "train" else burgers_experiment


def _configure(args: argparse.Namespace):
    """``(configuration, recorded runtime)`` of the command (nothing is written, no Taichi)."""
    if args.command == "burgers-inverse":
        from .learn.burgers_experiment import configure_inverse

        return configure_inverse(config=args.config, flags=vars(args), overrides=args.overrides)
    if args.command in ("eval", "export"):
        from .learn.experiment import read_run

        exp, recorded = read_run(args.run_dir)  # errors name the missing or damaged file
        return exp.cfg, recorded
    from .learn.burgers_experiment import BurgersExperiment
    from .learn.karman_experiment import KarmanExperiment

    exp = BurgersExperiment if args.command == "burgers" else KarmanExperiment
    preset = args.preset
    if getattr(args, "quick", False):
        if preset not in (None, "quick"):
            raise ValueError(f"--quick and --preset {preset}: give one of them")
        preset = "quick"
    return exp.configure(preset=preset, config=args.config, flags=vars(args), overrides=args.overrides)


def _dispatch(args: argparse.Namespace) -> int:
    import torch

    import taichi_dp

    from .learn.experiment import runtime_choice

    if getattr(args, "out", None) is not None:
        _check_out(Path(args.out))
    cfg, recorded = _configure(args)
    arch, precision = runtime_choice(args.arch, args.precision, recorded)
    torch.set_num_threads(args.threads)

    if getattr(args, "distributed", False):
        from .learn import distributed

        try:
            distributed.setup(arch, precision, timeout_s=args.dist_timeout)  # Taichi on this rank's device
        except (RuntimeError, ValueError) as e:
            raise RuntimeError(f"--distributed: {e}") from None
    else:
        taichi_dp.init(arch, precision)
    if args.command == "eval":
        return _eval(args)
    if args.command == "datagen":
        return _datagen_karman(args, cfg)
    if args.command == "export":
        return _export(args)
    if args.command == "burgers-inverse":
        return _inverse(args, cfg)
    return _train(args, cfg)


def _train(args: argparse.Namespace, cfg) -> int:
    from .learn import distributed

    out = Path(args.out)
    kwargs = {"progress": not args.no_progress, "resume": args.resume, "log": args.log}
    if getattr(args, "cache", None) is not None:
        kwargs["cache"] = args.cache
    main_rank = distributed.is_main()  # rank 0 (or the only process) reports
    try:
        _experiment_module(args).run(cfg, out, **kwargs)
    finally:
        distributed.teardown()
    if not main_rank:
        return 0
    print((out / "report.md").read_text())
    print(f"wrote {out}/report.md, metrics.json, config.json, plots/, checkpoints/")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .learn.experiment import evaluate_run

    evaluate_run(args.run_dir, cache=args.cache, progress=not args.no_progress)
    print(Path(args.run_dir, "report.md").read_text())
    print(f"wrote {args.run_dir}/report.md, metrics.json, plots/")
    return 0


def _datagen_karman(args: argparse.Namespace, cfg) -> int:
    from .learn.karman_experiment import datagen

    for split, data_cfg, path, data in datagen(cfg, args.cache, progress=not args.no_progress, format=args.format):
        print(f"{split}: Re {list(data_cfg.reynolds)}, velocity {tuple(data['velocity'].shape)} in {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .learn.datasets import export_run

    suffix = ".nc" if args.format == "netcdf" else ".zarr"
    out = Path(args.out) if args.out else Path(args.run_dir) / f"rollouts{suffix}"
    path = export_run(
        args.run_dir,
        out,
        args.format,
        cache=args.cache,
        protocol=args.protocol,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {path}")
    return 0


def _inverse(args: argparse.Namespace, cfg) -> int:
    from .learn.burgers_experiment import run_inverse

    out = Path(args.out)
    m = run_inverse(cfg, out, progress=not args.no_progress, resume=args.resume)
    losses = m["losses"]
    print(
        f"loss {losses[0]:.3e} -> {losses[-1]:.3e} ({m['reduction']:.1e}x) in {m['seconds']:.1f} s; wrote {out}/plots/inverse.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
