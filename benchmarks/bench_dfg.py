"""Convergence of the DFG "flow around a cylinder" benchmark, case 2D-1 (Schäfer & Turek 1996, Re = 20, steady).

    python -m benchmarks.bench_dfg [--sizes 5 10 20] [--obstacle cut_cells staircase] [--shifts 0,0 0,0.5 ...]
                                   [--tol 1e-4] [--cfl 0.5] [--advection maccormack]
                                   [--arch cpu] [--precision f64|f32] [--threads T] [--json PATH] [--quick]

Per obstacle form (``cut_cells``: :class:`taichi_dp.grid.cut_cells.CutCells`; ``staircase``: the binary mask),
resolution (cells per cylinder diameter; :func:`taichi_dp.scenes.dfg_2d1`) and sub-cell shift of the
cylinder's centre (``--shifts dy,dx`` in cells; default none): run to the steady state
(:func:`taichi_dp.scenes.solve_dfg_2d1`, residual ``--tol``), then measure the drag and lift coefficients
by the force estimators of :mod:`taichi_dp.ops.forces` (the staircase surface integral, mask only, and the
control-volume momentum balance) and the pressure difference Δp across the cylinder; their relative
errors against the reference (5.5795, 0.0106, 0.1175), the observed order between consecutive
resolutions ``log(e_coarse / e_fine) / log(n_fine / n_coarse)``, the steps taken and the wall time.

Output: a Markdown table on stdout and, with ``--json`` (default for a full run:
``benchmarks/results/dfg_<arch>_<date>.json``), every figure and the machine. ``--quick`` runs resolution
5 to a loose tolerance and writes nothing unless ``--json`` is given (a smoke test that the path runs,
not a measurement).
"""

from __future__ import annotations

import math
import time
from typing import Any

from benchmarks.harness import close_meta, default_json, finish, machine_line, metadata, parse, parser, positive_float, start

QUANTITIES = ("drag_surface", "drag_cv", "lift_surface", "lift_cv", "pressure_drop")
REFERENCE_KEY = {"drag_surface": "drag", "drag_cv": "drag", "lift_surface": "lift", "lift_cv": "lift",
                 "pressure_drop": "pressure_drop"}


def measure(
    resolution: int, tol: float, cfl: float, advection: str, obstacle: str = "cut_cells", shift: tuple[float, float] = (0.0, 0.0)
) -> dict[str, Any]:
    """Steady state and quantities at one resolution, obstacle form and sub-cell shift (in cells)."""
    from taichi_dp.scenes import DFG_2D1_REFERENCE, dfg_grid, dfg_quantities, solve_dfg_2d1
    from taichi_dp.scenes.dfg import DFG_CENTRE

    h_y, h_x = dfg_grid(resolution).spacing
    centre = (DFG_CENTRE[0] + shift[0] * h_y, DFG_CENTRE[1] + shift[1] * h_x)
    began = time.perf_counter()
    cut = obstacle == "cut_cells"
    scene, steady, p, cv = solve_dfg_2d1(
        resolution, tol=tol, cfl=cfl, advection=advection, on_fail="warn", cut_cells=cut, centre=centre,
        method="control_volume",
    )
    wall = time.perf_counter() - began
    # the surface integral runs over the mask's staircase: none for cut cells (dfg_forces refuses it)
    surface = None if cut else dfg_quantities(scene, steady.v, p, "surface", centre)

    def of(q: Any, name: str) -> float | None:
        return None if q is None else float(getattr(q, name))

    row: dict[str, Any] = {
        "obstacle": obstacle,
        "shift": list(shift),
        "resolution": resolution,
        "grid": list(scene.stepper.grid.shape),
        "dt": scene.stepper.dt,
        "steps": steady.steps,
        "residual": steady.residual,
        "wall_s": wall,
        "drag_surface": of(surface, "drag"),
        "drag_surface_pressure": of(surface, "drag_pressure"),
        "drag_surface_viscous": of(surface, "drag_viscous"),
        "drag_cv": float(cv.drag),
        "lift_surface": of(surface, "lift"),
        "lift_cv": float(cv.lift),
        "pressure_drop": float(cv.pressure_drop),
    }
    for q in QUANTITIES:
        ref = getattr(DFG_2D1_REFERENCE, REFERENCE_KEY[q])
        row[f"{q}_error"] = None if row[q] is None else row[q] / ref - 1.0
    return row


def add_orders(rows: list[dict[str, Any]]) -> None:
    """``order_<q>`` between each unshifted row and the previous (coarser) one of the same obstacle form, from
    the absolute relative errors."""
    for form in {r["obstacle"] for r in rows}:
        series = [r for r in rows if r["obstacle"] == form and r["shift"] == [0.0, 0.0]]
        _orders(sorted(series, key=lambda r: r["resolution"]))


def _orders(rows: list[dict[str, Any]]) -> None:
    for coarse, fine in zip(rows, rows[1:]):
        for q in QUANTITIES:
            if coarse[f"{q}_error"] is None or fine[f"{q}_error"] is None:
                fine[f"order_{q}"] = None
                continue
            e0, e1 = abs(coarse[f"{q}_error"]), abs(fine[f"{q}_error"])
            ok = e0 > 0 and e1 > 0
            fine[f"order_{q}"] = math.log(e0 / e1) / math.log(fine["resolution"] / coarse["resolution"]) if ok else None


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]

    def order(r: dict, q: str) -> str:
        x = r.get(f"order_{q}")
        return "" if x is None else f" ({x:.2f})"

    lines = [
        f"DFG 2D-1 (Re = 20), {m['advection']}, CFL {m['cfl']:g}, steady to {m['tol']:g}, {m['precision']}, arch "
        f"{m['arch']}; reference c_D 5.5795, c_L 0.0106, Δp 0.1175; relative error (observed order); {machine_line(m)}",
        "",
        "| obstacle | D/h | shift (cells) | grid | c_D surface | c_D control volume | c_L surface | c_L control volume | Δp "
        "| steps | wall s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        cells = [
            "—" if r[q] is None else f"{r[q]:.4f} ({100 * r[f'{q}_error']:+.1f}%{order(r, q)})" for q in QUANTITIES
        ]
        lines.append(
            f"| {r['obstacle']} | {r['resolution']} | {r['shift'][0]:g}, {r['shift'][1]:g} | {r['grid'][0]}×{r['grid'][1]} | "
            + " | ".join(cells)
            + f" | {r['steps']} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def run(args: Any) -> dict[str, Any]:
    rt = start(args)
    meta = metadata(rt.arch, args.precision, threads=args.threads, quick=args.quick, sizes=args.sizes, tol=args.tol,
                    cfl=args.cfl, advection=args.advection, obstacles=args.obstacle, shifts=args.shifts)
    began = time.perf_counter()
    rows = []
    for form, n, shift in [(f, n, s) for f in args.obstacle for n in args.sizes for s in args.shifts]:
        rows.append(measure(n, args.tol, args.cfl, args.advection, form, shift))
        r = rows[-1]
        surface = "" if r["drag_surface"] is None else f"{r['drag_surface']:.4f} (surface) "
        print(f"{form} D/h = {n:3d} shift {shift}: c_D {surface}{r['drag_cv']:.4f} (control volume), "
              f"c_L {r['lift_cv']:.4f}, Δp {r['pressure_drop']:.4f}, "
              f"{r['steps']} steps, {r['wall_s']:.0f} s", flush=True)
    add_orders(rows)
    close_meta(meta, time.perf_counter() - began)
    return {"benchmark": "dfg_2d1", "meta": meta, "rows": rows}


def shift_pair(text: str) -> tuple[float, float]:
    """``'dy,dx'`` (cells, each in ``[-1, 1]``) → ``(dy, dx)``; argparse reports a ValueError as a usage error."""
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"a shift is 'dy,dx', got {text!r}")
    dy, dx = (float(p) for p in parts)
    if not (math.isfinite(dy) and math.isfinite(dx) and abs(dy) <= 1 and abs(dx) <= 1):
        raise ValueError(f"a shift is two finite numbers in [-1, 1] (cells), got {text!r}")
    return dy, dx


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, arches=("cpu", "vulkan", "cuda"), precisions=("f64", "f32"), repeats=False,
                sizes="resolutions: cells per cylinder diameter (default 5 10 20)", min_size=4,
                quick="resolution 5, tolerance 1e-2: a smoke run, not a measurement",
                out="write the result here (default for a full run: benchmarks/results/)")
    ap.add_argument("--tol", type=positive_float, default=1e-4, help="steady-state residual (default 1e-4)")
    ap.add_argument("--cfl", type=positive_float, default=0.5, help="dt = cfl·h/U_max (default 0.5)")
    ap.add_argument("--advection", choices=("maccormack", "semi_lagrangian"), default="maccormack")
    ap.add_argument("--obstacle", nargs="+", choices=("cut_cells", "staircase"), default=["cut_cells", "staircase"],
                    help="obstacle forms to measure (default both)")
    ap.add_argument("--shifts", nargs="+", type=shift_pair, default=[(0.0, 0.0)],
                    help="sub-cell shifts 'dy,dx' of the cylinder's centre, in cells (default 0,0)")
    args = parse(ap, argv)
    if args.quick:
        args.sizes, args.tol = [5], 1e-2
    elif args.sizes is None:
        args.sizes = [5, 10, 20]
    args.sizes = sorted(set(args.sizes))
    res = run(args)
    finish(res, markdown(res), default_json(args, "dfg", res))


if __name__ == "__main__":
    main()
