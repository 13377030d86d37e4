"""Mutation check: do the tests notice plausible one-line bugs in the critical modules?

Each mutant replaces one exact fragment of one line of a source file. For every mutant, the file is patched
in a temporary COPY of the repository (the working tree itself is never modified: other people may be
editing it), the named tests run there with ``python -m pytest -x -q`` (``PYTHONPATH`` pointing at the
copy), and the mutant is *killed* when they fail and *survives* when they pass. The score is killed / run.

    python tests/mutation/run.py --list          # the mutants
    python tests/mutation/run.py                 # all of them (slow: ~1 min per mutant on 2 cores)
    python tests/mutation/run.py --only 7        # one (numbers from --list; several: --only 3,7,12)
    python tests/mutation/run.py --only 7 --show # print the test output too

A baseline run (no mutant; the union of the selected mutants' tests) comes first, since a failing baseline
would make every mutant look killed; ``--no-baseline`` skips it. A mutant whose fragment is no longer found
exactly once in its file is reported as *stale* (the code moved on: update the fragment) and counts as
neither killed nor survived.

Not collected by pytest: the name does not match ``test_*.py`` (and this folder has no conftest.py, which
would shadow ``tests/conftest.py`` as the module ``conftest``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "runs", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", "imgui.ini", "*.pyc"
)


@dataclass(frozen=True)
class Mutant:
    file: str  # relative to the repository root
    original: str  # an exact fragment of one line; must occur exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest arguments (files, node ids, -k expressions) that should kill it
    why: str  # the bug it models


T_BITES = "tests/test_bites.py"
MUTANTS: tuple[Mutant, ...] = (
    # ---------------------------------------------------------------- runtime.py
    Mutant(
        "taichi_dp/runtime.py",
        "_current = dataclasses.replace(_current, check_inputs=check_inputs)",
        "_current = _current",
        (T_BITES, "tests/test_runtime.py"),
        "init(check_inputs=False) ignored when Taichi is already initialised",
    ),
    Mutant(
        "taichi_dp/runtime.py",
        "if finite and not bool(torch.isfinite(x).all()):",
        "if finite and not bool(torch.isfinite(x).any()):",
        (T_BITES, "tests/test_validation.py"),
        "NaN check only fires when every value is non-finite",
    ),
    Mutant(
        "taichi_dp/runtime.py",
        "if x.dtype != rt.dtype:",
        "if x.dtype != rt.dtype and x.dtype != torch.float64:",
        ("tests/test_f32.py", "tests/test_validation.py"),
        "a float64 state accepted by a float32 runtime",
    ),
    Mutant(
        "taichi_dp/runtime.py",
        "return value.reshape(-1).expand(batch).contiguous()",
        "return value.reshape(-1)[:1].expand(batch).contiguous()",
        (T_BITES, "tests/test_bridge.py"),
        "a per-batch (B,) parameter collapsed to its first value",
    ),
    Mutant(
        "taichi_dp/runtime.py",
        "if positive and value < 0:",
        "if positive and value < -1:",
        ("tests/test_validation.py",),
        "negative viscosity accepted",
    ),
    Mutant(
        "taichi_dp/runtime.py",
        'default_fp=ti.f64 if precision == "f64" else ti.f32',
        "default_fp=ti.f32",
        ("tests/test_bridge.py", "tests/test_runtime.py"),
        "precision='f64' silently runs the kernels in float32",
    ),
    # ---------------------------------------------------------------- bridge.py
    Mutant(
        "taichi_dp/grad_routes.py",
        "leaf.grad = torch.zeros_like(leaf)",
        "leaf.grad = torch.ones_like(leaf)",
        ("tests/test_grad_routes.py", "tests/test_bridge.py"),
        "kernel.grad accumulates into a stale (non-zero) gradient buffer",
    ),
    Mutant(
        "taichi_dp/bridge.py",
        "return v if template else type(v)",
        "return type(v)",
        ("tests/test_bridge.py",),
        "template values (boundary codes) left out of the launch-plan key",
    ),
    Mutant(
        "taichi_dp/bridge.py",
        "zip(grads, ctx.needs_input_grad[3:])",
        "zip(grads, ctx.needs_input_grad[2:])",
        ("tests/test_bridge.py",),
        "gradients matched to the wrong inputs of a bridged op",
    ),
    # ---------------------------------------------------------------- ops/_stencil.py, advection.py, diffusion.py
    Mutant(
        "taichi_dp/ops/_stencil.py",
        "a = ti.select(i < 0, 2.0 * g_lo, a)",
        "a = ti.select(i < 0, g_lo, a)",
        ("tests/test_diffusion.py", "tests/test_advection.py"),
        "Dirichlet ghost value g instead of 2g − u",
    ),
    Mutant(
        "taichi_dp/ops/_stencil.py",
        "q = ti.min(q, n - 0.5)",
        "q = ti.min(q, n - 1.0)",
        ("tests/test_advection.py",),
        "upper Dirichlet back-trace clamped to the last centre, not the wall",
    ),
    Mutant(
        "taichi_dp/ops/_stencil.py",
        "(1.0 - wl) * corners[2 * k] + wl * corners[2 * k + 1]",
        "(1.0 - wl) * corners[2 * k] + wl * corners[2 * k]",
        ("tests/test_advection.py",),
        "multilinear interpolation reads the wrong corner",
    ),
    Mutant(
        "taichi_dp/ops/advection.py",
        "return dt[ix[0]] * v[replaced(ix, 1, axis)] * inv_h[axis]",
        "return dt[ix[0]] * v[replaced(ix, 1, axis)] * inv_h[0]",
        ("tests/test_advection.py",),
        "every axis's back-trace scaled by the first axis's spacing",
    ),
    Mutant(
        "taichi_dp/ops/advection.py",
        "corrected = q_hat[ix] + 0.5 * (q[ix] - q_bar)",
        "corrected = q_hat[ix] + 0.5 * (q_bar - q[ix])",
        ("tests/test_advection.py",),
        "MacCormack error compensation with the wrong sign",
    ),
    Mutant(
        "taichi_dp/ops/advection.py",
        "out[ix] = ti.min(ti.max(corrected, tree_min(corners)), tree_max(corners))",
        "out[ix] = corrected",
        ("tests/test_advection.py",),
        "MacCormack limiter dropped",
    ),
    Mutant(
        "taichi_dp/ops/diffusion.py",
        "return neighbour(u, ix, axis, -1, bc, g) - 2.0 * centre",
        "return neighbour(u, ix, axis, -1, bc, g) - 1.0 * centre",
        ("tests/test_diffusion.py",),
        "Laplacian stencil (every dimension)",
    ),
    Mutant(
        "taichi_dp/ops/diffusion.py",
        "if s > 0.5:",
        "if s > 1.0:",
        (T_BITES, "tests/test_validation.py", "tests/test_diffusion.py"),
        "explicit-diffusion stability limit too lax",
    ),
    Mutant(
        "taichi_dp/ops/diffusion.py",
        "return add_laplacian(x, -k_, grid, boundary, homogeneous=True)",
        "return add_laplacian(x, -k_, grid, boundary, homogeneous=False)",
        ("tests/test_diffusion.py",),
        "implicit-diffusion operator includes the (affine) Dirichlet values",
    ),
    Mutant(
        "taichi_dp/ops/diffusion.py",
        "if any(v != 0.0 for v in boundary.values):",
        "if all(v != 0.0 for v in boundary.values):",
        ("tests/test_diffusion.py",),
        "implicit diffusion drops the Dirichlet term when one side is zero",
    ),
    # ---------------------------------------------------------------- ops/linear_solve.py
    Mutant(
        "taichi_dp/ops/linear_solve.py",
        "while not bool(done.all()) and it < max_iter:",
        "while not bool(done.any()) and it < max_iter:",
        (T_BITES,),
        "batched CG stops when ANY sample converged",
    ),
    Mutant(
        "taichi_dp/ops/linear_solve.py",
        "grad_outputs=-lam, allow_unused=True",
        "grad_outputs=lam, allow_unused=True",
        ("tests/test_linear_solve.py",),
        "implicit adjoint: parameter gradient with the wrong sign",
    ),
    Mutant(
        "taichi_dp/ops/linear_solve.py",
        "target = torch.clamp(rtol * b_norm, min=atol)",
        "target = torch.clamp(rtol * b_norm.max(), min=atol)",
        (T_BITES, "tests/test_linear_solve.py::test_cg_tolerance_is_relative_to_each_samples_own_rhs"),
        "one tolerance for the whole batch (relative to the largest rhs)",
    ),
    # ---------------------------------------------------------------- ops/multigrid/ (solver, pcg, vcycle, faces)
    Mutant(
        "taichi_dp/ops/multigrid/solver.py",
        "not bool((sc[_DONE::_NSC] != 0).all())",
        "not bool((sc[_DONE::_NSC] != 0).any())",
        (T_BITES,),
        "per-iteration PCG host loop stops when ANY sample converged",
    ),
    Mutant(
        "taichi_dp/ops/multigrid/pcg.py",
        "while sc[b * _NSC + _DONE] == 0.0 and sc[b * _NSC + _ITERS] < max_iter:",
        "while sc[_DONE] == 0.0 and sc[b * _NSC + _ITERS] < max_iter:",
        (T_BITES,),
        "one-launch PCG loop reads sample 0's convergence flag for every sample",
    ),
    Mutant(
        "taichi_dp/ops/multigrid/pcg.py",
        "sc[b * _NSC + _TARGET] = rtol * rtol * sc[b * _NSC + _BB]",
        "sc[b * _NSC + _TARGET] = rtol * sc[b * _NSC + _BB]",
        (T_BITES,),
        "PCG target ‖r‖² ≤ rtol‖b‖² (tolerance √rtol)",
    ),
    Mutant(
        "taichi_dp/ops/multigrid/vcycle.py",
        "acc += work[wb + ro + k] - _apply_ix(",
        "acc += work[wb + ro + k] + _apply_ix(",
        ("tests/test_multigrid.py",),
        "V-cycle restricts rhs + A x",
    ),
    Mutant(
        "taichi_dp/ops/multigrid/faces.py",
        "g = -2.0 * stat[sb + plan.fluid + cn] * p[pb + cn] * plan.inv_h[c]",
        "g = 2.0 * stat[sb + plan.fluid + cn] * p[pb + cn] * plan.inv_h[c]",
        ("tests/test_multigrid.py",),
        "outflow-face pressure gradient with the wrong sign",
    ),
    Mutant(
        "taichi_dp/ops/multigrid/pcg.py",
        "live = ti.select(sc[b * _NSC + _BB] == 0.0, 0.0, 1.0)",
        "live = ti.select(sc[b * _NSC + _BB] == 0.0, 1.0, 1.0)",
        ("tests/test_multigrid.py",),
        "a zero right-hand side returns the warm start instead of 0",
    ),
    # ---------------------------------------------------------------- ops/pressure.py, staggered ops
    Mutant(
        "taichi_dp/ops/pressure.py",
        "singular = DIRICHLET not in codes",
        "singular = DIRICHLET in codes",
        ("tests/test_multigrid.py", "tests/test_pressure.py"),
        "plain-CG projection: null space handled on the wrong systems",
    ),
    Mutant(
        "taichi_dp/ops/pressure.py",
        'net += (getattr(lo, "speed", 0.0) - getattr(hi, "speed", 0.0)) * area',
        'net += (getattr(lo, "speed", 0.0) + getattr(hi, "speed", 0.0)) * area',
        ("tests/test_navier_stokes.py", "tests/test_pressure.py"),
        "flux balance adds the outgoing inflow",
    ),
    Mutant(
        "taichi_dp/ops/staggered_advection.py",
        "corrected = v_hat[ix] + 0.5 * (v[ix] - bar)",
        "corrected = v_hat[ix] + 0.5 * (bar - v[ix])",
        ("tests/test_staggered_ops.py",),
        "staggered MacCormack compensation with the wrong sign",
    ),
    Mutant(
        "taichi_dp/ops/staggered_diffusion.py",
        "out[ix] = ti.select(real, centre + k[ix[0]] * lap, 0.0)",
        "out[ix] = ti.select(real, centre + 2.0 * k[ix[0]] * lap, 0.0)",
        ("tests/test_staggered_ops.py",),
        "viscosity applied twice",
    ),
    # ---------------------------------------------------------------- solvers
    Mutant(
        "taichi_dp/solvers/navier_stokes.py",
        "v = v + dt.view(-1, *([1] * (v.ndim - 1))) * self.forcing",
        "v = v + self.forcing",
        (T_BITES, "tests/test_navier_stokes.py"),
        "Navier–Stokes forcing v + f instead of v + Δt f",
    ),
    Mutant(
        "taichi_dp/solvers/navier_stokes.py",
        "v = apply_velocity_diffusion(v, nu, dt / self.viscosity_substeps,",
        "v = apply_velocity_diffusion(v, nu, dt,",
        ("tests/test_navier_stokes.py",),
        "each viscosity sub-step takes the whole Δt",
    ),
    Mutant(
        "taichi_dp/solvers/navier_stokes.py",
        "max(1, math.ceil(s / 0.5 - 1e-12))",
        "max(1, math.ceil(s / 1.0 - 1e-12))",
        ("tests/test_navier_stokes.py",),
        "too few (unstable) viscosity sub-steps",
    ),
    Mutant(
        "taichi_dp/solvers/burgers.py",
        "u = u + dt.view(-1, *([1] * (u.ndim - 1))) * self.forcing",
        "u = u + self.forcing",
        ("tests/test_burgers.py", "tests/test_control.py"),
        "Burgers forcing u + f instead of u + Δt f",
    ),
    Mutant(
        "taichi_dp/solvers/smoke.py",
        "rho = rho + dt.view(-1, *([1] * (rho.ndim - 1))) * self.source",
        "rho = rho + self.source",
        ("tests/test_smoke.py::test_source_enters_as_dt_times_s",),
        "smoke source added without Δt",
    ),
    Mutant(
        "taichi_dp/solvers/base.py",
        "n = min(checkpoint_every, steps - done)",
        "n = checkpoint_every",
        ("tests/test_learn.py", "tests/test_solvers.py"),
        "checkpointed rollout overshoots when steps % chunk != 0",
    ),
    # ---------------------------------------------------------------- learn/metrics.py, io.py, trainer.py
    Mutant(
        "taichi_dp/learn/metrics.py",
        "(pred - ref).flatten(2).norm(p=p, dim=2)",
        "(pred - ref).flatten(2).norm(p=2, dim=2)",
        (T_BITES,),
        "the reported L1 error computed as L2",
    ),
    Mutant(
        "taichi_dp/learn/metrics.py",
        "ref.flatten(2).norm(p=p, dim=2)",
        "ref.flatten(2).norm(p=2, dim=2)",
        (T_BITES,),
        "relative L1 error normalised by the L2 norm of the reference",
    ),
    Mutant(
        "taichi_dp/learn/io.py",
        "    _verify_checkpoint(path, data, unverified)\n",
        "    pass\n",
        ("tests/test_learn.py", "tests/test_trust.py::test_bit_rot_in_a_checkpoint_is_refused_naming_the_file"),
        "checkpoint digest never verified on load",
    ),
    Mutant(
        "taichi_dp/learn/trainer.py",
        "return final + 0.5 * (config.lr - final) * (1 + math.cos(phase))",
        "return final + 0.5 * (config.lr - final) * (1 - math.cos(phase))",
        ("tests/test_learn.py",),
        "cosine schedule runs backwards (warm-up from lr·final to lr)",
    ),
    Mutant(
        "taichi_dp/learn/trainer.py",
        'gen.set_state(state["generator"])',
        "pass",
        ("tests/test_learn.py",),
        "resume restarts the sampling order",
    ),
    Mutant(
        "taichi_dp/learn/trainer.py",
        "opt.zero_grad(set_to_none=True)",
        "pass",
        ("tests/test_learn.py",),
        "gradients accumulate across iterations",
    ),
    Mutant(
        "taichi_dp/learn/trainer.py",
        "if config.checkpoint_every and (it + 1) % config.checkpoint_every == 0:",
        "if config.checkpoint_every and it % config.checkpoint_every == 0:",
        ("tests/test_learn.py",),
        "trainer checkpoints one iteration early",
    ),
    # ---------------------------------------------------------------- 3D only (2D computes the same)
    Mutant(
        "taichi_dp/ops/multigrid/faces.py",
        "k = (b * plan.nd + c) * ti.static(math.prod(_padded(plan))) + a * pst[c]",
        "k = (b * 2 + c) * ti.static(math.prod(_padded(plan))) + a * pst[c]",
        ("tests/test_pressure_3d.py",),
        "fused projection indexes sample b's faces as if there were 2 components",
    ),
    Mutant(
        "taichi_dp/ops/multigrid/hierarchy.py",
        "inner = sum(_children(c, (*o[:a], 1, *o[a:])) for a, c in enumerate(coup) for o in others)",
        "inner = sum(_children(c, (*o[:a], 1, *o[a:])) for a, c in enumerate(coup[:2]) for o in others)",
        ("tests/test_pressure_3d.py",),
        "Galerkin coarse diagonal forgets the third axis' inner couplings",
    ),
)


def _copy_tree(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    return dest


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TI_SKIP_VERSION_CHECK", "ON")
    return env


def _pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """Run ``tests`` in ``copy``: ("pass" | "fail" | "timeout", seconds, output tail)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            env=_env(copy),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", time.perf_counter() - t0, out[-3000:]
    return ("pass" if p.returncode == 0 else "fail"), time.perf_counter() - t0, (p.stdout + p.stderr)[-3000:]


def _apply(copy: Path, m: Mutant) -> str | None:
    """Patch the copy; returns the original text (to restore), or None when the fragment is stale."""
    path = copy / m.file
    if not path.is_file():
        return None
    text = path.read_text()
    if text.count(m.original) != 1:
        return None
    path.write_text(text.replace(m.original, m.replacement))
    return text


def _select(only: str | None) -> list[tuple[int, Mutant]]:
    numbered = list(enumerate(MUTANTS, start=1))
    if not only:
        return numbered
    wanted = {int(x) for x in only.split(",") if x.strip()}
    bad = wanted - {i for i, _ in numbered}
    if bad:
        raise SystemExit(f"--only: no mutant numbered {sorted(bad)} (1..{len(MUTANTS)})")
    return [(i, m) for i, m in numbered if i in wanted]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--only", help="comma-separated mutant numbers (see --list)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run (a timeout counts as killed)")
    ap.add_argument("--show", action="store_true", help="print the tail of each pytest run")
    args = ap.parse_args(argv)

    chosen = _select(args.only)
    if args.list:
        for i, m in chosen:
            print(f"{i:3d}  {m.file}: {m.why}\n     - {m.original.strip()}\n     + {m.replacement.strip()}")
            print(f"     tests: {' '.join(m.tests)}")
        return 0

    with tempfile.TemporaryDirectory(prefix="tdp-mutation-") as tmp:
        copy = _copy_tree(Path(tmp) / "repo")
        where = (
            subprocess.run(
                [sys.executable, "-c", "import taichi_dp; print(taichi_dp.__file__)"],
                cwd=copy,
                env=_env(copy),
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1:]
        )  # after Taichi's banner
        where = where[0] if where else ""
        if not where.startswith(str(copy)):
            raise SystemExit(f"the copy's taichi_dp is not the one imported ({where!r}): refusing to run")
        print(f"copy of {ROOT} in {copy}; {len(chosen)} mutant(s)", flush=True)
        if not args.no_baseline:
            union = tuple(dict.fromkeys(t for _, m in chosen for t in m.tests))
            status, secs, tail = _pytest(copy, union, args.timeout * 3)
            print(f"baseline ({' '.join(union)}): {status} in {secs:.0f} s", flush=True)
            if status != "pass":
                print(tail)
                raise SystemExit("the unmutated tests do not pass: fix that first (or use --no-baseline)")
        results: list[tuple[int, Mutant, str, float]] = []
        for i, m in chosen:
            original = _apply(copy, m)
            if original is None:
                results.append((i, m, "stale", 0.0))
                print(f"[{i:3d}] STALE     {m.file}: fragment not found exactly once: {m.original.strip()!r}", flush=True)
                continue
            try:
                status, secs, tail = _pytest(copy, m.tests, args.timeout)
            finally:
                (copy / m.file).write_text(original)
            verdict = "survived" if status == "pass" else "killed"
            results.append((i, m, verdict, secs))
            note = " (timeout)" if status == "timeout" else ""
            print(f"[{i:3d}] {verdict.upper():9s} {secs:5.0f} s  {m.file}: {m.why}{note}", flush=True)
            if args.show or verdict == "survived":
                print("      " + "\n      ".join(tail.strip().splitlines()[-6:]), flush=True)
    run = [r for r in results if r[2] != "stale"]
    killed = sum(r[2] == "killed" for r in run)
    stale = len(results) - len(run)
    score = 100.0 * killed / len(run) if run else 0.0
    print(f"\nmutation score: {killed}/{len(run)} killed ({score:.0f}%)" + (f", {stale} stale" if stale else ""))
    for i, m, verdict, _ in results:
        if verdict != "killed":
            print(f"  {verdict}: [{i}] {m.file}: {m.why}")
    return 0 if killed == len(run) else 1


if __name__ == "__main__":
    sys.exit(main())
