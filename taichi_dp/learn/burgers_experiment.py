"""Solver-in-the-loop on 1D Burgers: a coarse solver corrected towards a 4× finer reference.

Source solver: 32 periodic cells on [−1, 1], explicit diffusion + semi-Lagrangian advection (the PBDL
book's scheme), dt = 1/32. Reference: 4× finer in space and time with MacCormack advection and implicit
diffusion, averaged back onto the coarse cells. Random smooth initial states steepen into shocks; the
viscosity varies per trajectory and conditions the network. Training viscosities and held-out test
viscosities (inside the training range: interpolation; outside on both sides: extrapolation) never
overlap, and test initial states are new draws.

Variants, identical network/optimiser/schedule/number of updates:
- NON: one supervised step from pre-computed source states (no solver gradient);
- SOL-k: k hybrid steps unrolled through the differentiable solver.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from models import ResidualCNN

from ..grid import Boundary, Grid
from ..runtime import ensure_init
from ..scenes import random_sines
from ..solvers import Burgers, Repeated
from . import io
from .experiment_log import ExperimentLog, make_log
from .hybrid import hybrid_rollout, non_loss, sol_loss
from .metrics import relative_errors
from .trainer import TrainConfig, TrainResult, train, validate_train_config


@dataclass
class BurgersExperimentConfig:
    """Everything that defines a run (serialised to ``config.json``)."""

    n: int = 32  # coarse cells on [-1, 1]
    factor: int = 4  # reference refinement in space and time
    dt: float = 1.0 / 32
    steps: int = 64  # trajectory length in coarse steps (t = 2)
    train_nus: tuple[float, ...] = (0.003, 0.0055, 0.01, 0.018, 0.032)
    test_nus: tuple[float, ...] = (0.002, 0.004, 0.0075, 0.014, 0.024, 0.045)
    train_states: int = 16  # initial states per training viscosity
    test_states: int = 8  # initial states per test viscosity
    unroll: int = 8  # k of SOL-k
    width: int = 32
    blocks: int = 2
    train: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=600, batch_size=32, lr=1e-3))
    seed: int = 0

    def validate(self) -> None:
        """``ValueError`` naming the field for an unusable configuration (before anything is written)."""
        for name in ("n", "factor", "steps", "train_states", "test_states", "width", "blocks"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 1 <= self.unroll <= self.steps:
            raise ValueError(f"unroll must be between 1 and steps = {self.steps}, got {self.unroll}")
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be a finite number > 0, got {self.dt}")
        for name in ("train_nus", "test_nus"):
            nus = getattr(self, name)
            if not nus or not all(math.isfinite(v) and v > 0 for v in nus):
                raise ValueError(f"{name} must be non-empty finite viscosities > 0, got {nus}")
        validate_train_config("train", self.train)

    @staticmethod
    def quick() -> BurgersExperimentConfig:
        """A ~1-minute version for smoke tests."""
        return BurgersExperimentConfig(
            steps=32, train_states=4, test_states=2, unroll=4, train=TrainConfig(iterations=60, batch_size=16)
        )


@dataclass
class BurgersData:
    """Coarse-grid trajectories ``(S, T+1, 1, n)`` with their viscosities ``(S,)``."""

    reference: torch.Tensor
    nu: torch.Tensor


def _periodic_line(n: int) -> tuple[Grid, Boundary]:
    return Grid.line(n, -1.0, 1.0), Boundary.periodic(1)


def source_solver(cfg: BurgersExperimentConfig, nu: torch.Tensor) -> Burgers:
    """The coarse solver to be corrected, with one viscosity per batch element."""
    grid, bc = _periodic_line(cfg.n)
    return Burgers(grid, bc, nu=nu, dt=cfg.dt, diffusion="explicit", advection="semi_lagrangian")


def reference_data(cfg: BurgersExperimentConfig, nus: tuple[float, ...], per_nu: int, generator: torch.Generator) -> BurgersData:
    """Simulate random initial states on the fine grid and average them onto the coarse grid."""
    rt = ensure_init()
    grid, bc = _periodic_line(cfg.n * cfg.factor)
    nu = torch.tensor(nus, dtype=rt.dtype, device=rt.device).repeat_interleave(per_nu)
    fine = Burgers(grid, bc, nu=nu, dt=cfg.dt / cfg.factor, diffusion="implicit", advection="maccormack", cg_rtol=1e-8)
    step = Repeated(fine, cfg.factor)  # one coarse step of the fine solver
    u = random_sines(grid, nu.shape[0], generator=generator)
    frames = [F.avg_pool1d(u, cfg.factor)]
    with torch.no_grad():
        for _ in range(cfg.steps):
            u = step(u)
            frames.append(F.avg_pool1d(u, cfg.factor))
    return BurgersData(torch.stack(frames, dim=1).contiguous(), nu)


def nu_feature(cfg: BurgersExperimentConfig, nu: torch.Tensor) -> torch.Tensor:
    """Normalised log-viscosity: −1 … 1 across the training range."""
    lo, hi = math.log(min(cfg.train_nus)), math.log(max(cfg.train_nus))
    return (torch.log(nu) - 0.5 * (lo + hi)) / (0.5 * (hi - lo))


def make_model(cfg: BurgersExperimentConfig, seed: int) -> ResidualCNN:
    torch.manual_seed(seed)
    rt = ensure_init()
    model = ResidualCNN(1, 1, conditioning=("nu",), width=cfg.width, blocks=cfg.blocks, kernel_size=5)
    return model.to(dtype=rt.dtype, device=rt.device)


def train_non(
    cfg: BurgersExperimentConfig,
    data: BurgersData,
    progress: bool = True,
    checkpoint: Path | None = None,
    callback: Callable[[int, TrainResult], None] | None = None,
) -> tuple[ResidualCNN, TrainResult]:
    """NON: supervised one-step correction of pre-computed source states (``callback``: see :func:`train`)."""
    s, t1 = data.reference.shape[:2]
    ref = data.reference
    nu_all = data.nu.repeat_interleave(t1 - 1)
    with torch.no_grad():  # source states solver(r_t) for every (trajectory, t), computed once
        inputs = ref[:, :-1].reshape(-1, *ref.shape[2:]).contiguous()
        source = source_solver(cfg, nu_all)(inputs)
    target = ref[:, 1:].reshape(-1, *ref.shape[2:])
    model = make_model(cfg, cfg.seed)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return non_loss(model, source[idx], target[idx], {"nu": nu_feature(cfg, nu_all[idx])})

    result = train(
        model, batch_loss, s * (t1 - 1), cfg.train, desc="NON", progress=progress, checkpoint=checkpoint, callback=callback
    )
    return model, result


def train_sol(
    cfg: BurgersExperimentConfig,
    data: BurgersData,
    progress: bool = True,
    checkpoint: Path | None = None,
    callback: Callable[[int, TrainResult], None] | None = None,
) -> tuple[ResidualCNN, TrainResult]:
    """SOL-k: k hybrid steps unrolled through the differentiable solver (``callback``: see :func:`train`)."""
    k = cfg.unroll
    s, t1 = data.reference.shape[:2]
    windows = t1 - k  # start times 0 .. T-k
    model = make_model(cfg, cfg.seed)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        traj, start = idx // windows, idx % windows
        offsets = start[:, None] + torch.arange(k + 1)[None, :]
        window = data.reference[traj[:, None], offsets]  # (B, k+1, 1, n)
        nu = data.nu[traj]
        return sol_loss(source_solver(cfg, nu), model, window, {"nu": nu_feature(cfg, nu)})

    result = train(
        model, batch_loss, s * windows, cfg.train, desc=f"SOL-{k}", progress=progress, checkpoint=checkpoint, callback=callback
    )
    return model, result


def evaluate(cfg: BurgersExperimentConfig, data: BurgersData, models: dict[str, ResidualCNN | None]) -> dict[str, torch.Tensor]:
    """Roll every variant out from the reference initial states; returns ``(S, T)`` errors per variant
    (step 0 excluded)."""
    steps = data.reference.shape[1] - 1
    u0 = data.reference[:, 0].contiguous()
    solver = source_solver(cfg, data.nu)
    cond = {"nu": nu_feature(cfg, data.nu)}
    out = {}
    with torch.no_grad():
        for name, model in models.items():
            traj = hybrid_rollout(solver, model, u0, steps, cond, include_initial=False)
            out[name] = relative_errors(traj, data.reference[:, 1:])
    return out


RESUME_FREE = ("train.checkpoint_every",)  # config fields a resume may change (they do not change the result)


def run(cfg: BurgersExperimentConfig, out: str | Path, *, progress: bool = True, resume: bool = False, log: str = "none") -> dict:
    """Generate data, train NON and SOL-k, evaluate on held-out viscosities, write the run folder
    (``config.json``, ``metrics.json``, ``report.md``, ``checkpoints/``, ``plots/``). Returns the metrics.

    An existing run folder is an error (``FileExistsError``) unless ``resume``, which continues it from its
    checkpoints and needs the configuration (arch and precision included) it was started with
    (``ValueError`` naming each differing field otherwise).

    ``log="tensorboard"`` also writes training curves and validation errors to ``out/tensorboard/NON`` and
    ``out/tensorboard/SOL-k`` (:mod:`~taichi_dp.learn.experiment_log`). It is not part of ``config.json``: it
    does not change the result, so a resumed run may log differently from its first session."""
    cfg.validate()
    explog = make_log(log, out)  # a missing tensorboard package is reported before any work
    rt = ensure_init()
    out = Path(out)
    config_json = {"experiment": "burgers", **asdict(cfg), "arch": rt.arch, "precision": rt.precision}
    if not io.check_run_folder(out, config_json, "burgers", resume=resume, free=RESUME_FREE):
        io.write_json(out / "config.json", config_json)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train_data = reference_data(cfg, cfg.train_nus, cfg.train_states, gen)
    test_data = reference_data(cfg, cfg.test_nus, cfg.test_states, gen)
    datagen_s = time.perf_counter() - t0

    sol_name = f"SOL-{cfg.unroll}"
    with explog:
        non, non_res = train_non(cfg, train_data, progress, out / "checkpoints" / "non.pt", explog.run("NON").training_callback())
        sol, sol_res = train_sol(
            cfg, train_data, progress, out / "checkpoints" / f"sol{cfg.unroll}.pt", explog.run(sol_name).training_callback()
        )
        errors = evaluate(cfg, test_data, {"source": None, "NON": non, sol_name: sol})
        _log_validation(explog, cfg, test_data, errors, {"NON": len(non_res.losses), sol_name: len(sol_res.losses)})

    nus = test_data.nu.cpu()
    lo, hi = min(cfg.train_nus), max(cfg.train_nus)
    per_nu = {}
    for nu in cfg.test_nus:
        sel = torch.isclose(nus, torch.tensor(nu, dtype=nus.dtype))
        per_nu[f"{nu:g}"] = {
            "regime": "interpolation" if lo <= nu <= hi else "extrapolation",
            **{name: float(e[sel].mean()) for name, e in errors.items()},
        }
    metrics = {
        "mean_relative_l2": {name: float(e.mean()) for name, e in errors.items()},
        "final_step_relative_l2": {name: float(e[:, -1].mean()) for name, e in errors.items()},
        "per_test_nu": per_nu,
        "error_over_time": {name: e.mean(0).tolist() for name, e in errors.items()},
        "train": {
            "NON": {"iterations": len(non_res.losses), "seconds": non_res.seconds, "final_loss": non_res.losses[-1]},
            sol_name: {"iterations": len(sol_res.losses), "seconds": sol_res.seconds, "final_loss": sol_res.losses[-1]},
        },
        "datagen_seconds": datagen_s,
    }
    io.write_json(out / "metrics.json", metrics)
    _plots(out / "plots", cfg, test_data, errors, {"NON": non, sol_name: sol}, {"NON": non_res, sol_name: sol_res})
    io.write_text(out / "report.md", _report(cfg, metrics, sol_name, rt))
    return metrics


def _log_validation(
    explog: ExperimentLog, cfg: BurgersExperimentConfig, data: BurgersData, errors: dict, updates: dict[str, int]
) -> None:
    """``val/*`` scalars of every trained variant at step = its number of updates (the bare source's errors as
    ``val/source_*`` in each sub-run, as a reference line)."""
    if not explog.enabled:
        return
    lo, hi = min(cfg.train_nus), max(cfg.train_nus)
    nus = data.nu.cpu()
    inside = (nus >= lo * (1 - 1e-6)) & (nus <= hi * (1 + 1e-6))

    def values(e: torch.Tensor, prefix: str) -> dict[str, float]:
        e = e.cpu()
        out = {f"val/{prefix}relative_l2": float(e.mean()), f"val/{prefix}final_step_relative_l2": float(e[:, -1].mean())}
        for regime, sel in (("interpolation", inside), ("extrapolation", ~inside)):
            if bool(sel.any()):
                out[f"val/{prefix}relative_l2_{regime}"] = float(e[sel].mean())
        return out

    for name, steps in updates.items():
        explog.run(name).scalars({**values(errors[name], ""), **values(errors["source"], "source_")}, steps)


def _report(cfg: BurgersExperimentConfig, m: dict, sol_name: str, rt) -> str:
    names = ["source", "NON", sol_name]
    lines = [
        "# Burgers solver-in-the-loop: source vs NON vs " + sol_name,
        "",
        f"Coarse grid {cfg.n} cells, reference {cfg.factor}× finer in space and time, {cfg.steps}-step rollouts "
        f"(dt = {cfg.dt:g}); train ν = {list(cfg.train_nus)}, {cfg.train_states} initial states each; "
        f"{cfg.train.iterations} updates of batch {cfg.train.batch_size} per variant; arch={rt.arch}, {rt.precision}.",
        "",
        "Mean relative L2 error over the rollout, held-out initial states:",
        "",
        "| test ν | regime | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for nu, row in m["per_test_nu"].items():
        lines.append(f"| {nu} | {row['regime']} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |")
    mean = m["mean_relative_l2"]
    lines.append("| **all** | | " + " | ".join(f"**{mean[n]:.4f}**" for n in names) + " |")
    lines += [
        "",
        f"Error reduction vs source: NON {mean['source'] / mean['NON']:.2f}×, {sol_name} {mean['source'] / mean[sol_name]:.2f}×.",
        "",
        "| variant | updates | train wall time | per update | final loss |",
        "|---|---|---|---|---|",
    ]
    for name, t in m["train"].items():
        per_update = 1000 * t["seconds"] / max(t["iterations"], 1)
        lines.append(f"| {name} | {t['iterations']} | {t['seconds']:.1f} s | {per_update:.1f} ms | {t['final_loss']:.3e} |")
    lines += ["", "![error over time](plots/error_over_time.png)", "", "![states](plots/states.png)", ""]
    return "\n".join(lines)


def _plots(folder: Path, cfg: BurgersExperimentConfig, data: BurgersData, errors: dict, models: dict, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"source": "tab:red", "NON": "tab:blue"}
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    t = [cfg.dt * (i + 1) for i in range(errors["source"].shape[1])]
    for name, e in errors.items():
        ax[0].plot(t, e.mean(0).cpu(), label=name, color=colours.get(name, "tab:green"))
    ax[0].set(yscale="log", xlabel="time", ylabel="relative L2 error", title="held-out rollouts (mean)")
    ax[0].legend()
    for name, r in results.items():
        ax[1].plot(r.losses, label=name, color=colours.get(name, "tab:green"), alpha=0.8)
    ax[1].set(yscale="log", xlabel="update", ylabel="training loss", title="training")
    ax[1].legend()
    io.save_figure(folder / "error_over_time.png", fig)

    # One extrapolation case (smallest viscosity): states at a few times.
    idx = int(torch.argmin(data.nu))
    u0 = data.reference[idx : idx + 1, 0].contiguous()
    nu = data.nu[idx : idx + 1]
    solver = source_solver(cfg, nu)
    cond = {"nu": nu_feature(cfg, nu)}
    steps = data.reference.shape[1] - 1
    with torch.no_grad():
        trajs = {
            name: hybrid_rollout(solver, m, u0, steps, cond)[0, :, 0].cpu() for name, m in {"source": None, **models}.items()
        }
    x = _periodic_line(cfg.n)[0].centers(0)
    times = [steps // 4, steps // 2, steps]
    fig, axes = plt.subplots(1, len(times), figsize=(4 * len(times), 3.2), sharey=True)
    for a, ti in zip(axes, times):
        a.plot(x, data.reference[idx, ti, 0].cpu(), "k-", lw=2, label="reference")
        for name, tr in trajs.items():
            a.plot(x, tr[ti], "-", color=colours.get(name, "tab:green"), label=name)
        a.set(title=f"t = {ti * cfg.dt:.2f} (ν = {float(nu[0]):g})", xlabel="x")
    axes[0].set_ylabel("u")
    axes[0].legend(fontsize=8)
    io.save_figure(folder / "states.png", fig)


def load_run(run_dir: str | Path) -> tuple[BurgersExperimentConfig, dict[str, ResidualCNN]]:
    """The configuration and trained correctors (``{"NON": ..., "SOL-k": ...}``) of a finished
    ``python -m taichi_dp burgers`` run folder. Raises ``FileNotFoundError``/``ValueError`` naming the
    missing or corrupt file."""
    run_dir = Path(run_dir)
    raw = io.read_run_config(run_dir, "burgers")
    try:
        fields = {f.name for f in dataclasses.fields(BurgersExperimentConfig)}
        kwargs = {k: v for k, v in raw.items() if k in fields and k != "train"}
        cfg = BurgersExperimentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
        cfg.train = TrainConfig(**raw["train"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{run_dir / 'config.json'} is corrupt or from another experiment: {e}") from None
    models = {}
    for name, file in (("NON", "non.pt"), (f"SOL-{cfg.unroll}", f"sol{cfg.unroll}.pt")):
        state = io.load_checkpoint(run_dir / "checkpoints" / file)
        model = make_model(cfg, cfg.seed)
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as e:
            raise ValueError(f"{run_dir / 'checkpoints' / file} does not fit the run's model: {e}") from None
        models[name] = model.eval()
    return cfg, models
