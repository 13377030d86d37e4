"""How closely :func:`taichi_dp.scenes.pbdl_karman` reproduces PhiFlow 3.4 (needs ``pip install -e .[bench]``).

    python -m benchmarks.pbdl_karman_match [--steps 13] [--reynolds 200] [--threads T] [--quick] [--out|--json PATH]

Runs PhiFlow's karman step (:mod:`benchmarks.pbdl_karman_reference`: float64, CG converged to 1e-12)
and ``pbdl_karman`` (float64, CPU arch) from the same ``v0`` at 32×64, with the open bottom (default)
and the closed one of :mod:`benchmarks.phiflow_karman`, and prints the relative error
``‖v_tdp − v_phi‖ / ‖v_phi‖`` after every step, for ``pbdl_karman``'s default pressure tolerance (1e-8)
and a converged one (1e-12), plus the seconds per step of each. Writes JSON under
``benchmarks/results/`` (``pbdl_karman_match_<date>.json``) unless ``--json`` names another file
(``--quick``: 2 steps, no file unless named). Command line, metadata, output: :mod:`benchmarks.harness`.
"""

from __future__ import annotations

import datetime
import time

import numpy as np
import torch

from benchmarks.harness import RESULTS, Record, at_least, close_meta, metadata, parse, parser, start, write_json
from benchmarks.pbdl_karman_reference import RESOLUTION, initial_velocity, phiflow_rollout
from taichi_dp.grid.staggered import Outflow, Wall
from taichi_dp.scenes import pbdl_karman
from taichi_dp.solvers import SolveOptions


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the result dictionary."""
    ap = parser(__doc__, arches=("cpu",), precisions=("f64",), repeats=False, quick="CI size: 2 steps, no file unless named")
    ap.add_argument("--steps", type=at_least(1), default=None, help="steps compared (default 13)")
    ap.add_argument("--reynolds", type=float, default=200.0)
    args = parse(ap, argv)
    args.steps = args.steps or (2 if args.quick else 13)
    import phi
    import phiml

    rt = start(args)
    t_start = time.perf_counter()
    result: dict = {
        "suite": "taichi_dp benchmarks.pbdl_karman_match",
        "meta": metadata(rt.arch, args.precision, threads=args.threads, quick=args.quick),
        "date": datetime.date.today().isoformat(),
        "versions": {"phiflow": phi.__version__, "phiml": phiml.__version__, "torch": torch.__version__},
        "resolution_xy": [RESOLUTION[1], RESOLUTION[0]],
        "reynolds": args.reynolds,
        "phiflow_seconds_per_step": {},
        "runs": {},
    }
    print(f"PhiFlow {phi.__version__} / phiml {phiml.__version__}, {RESOLUTION[1]}×{RESOLUTION[0]}, Re {args.reynolds:g}")
    for bottom, side in (("open", Outflow()), ("closed", Wall())):
        v0 = initial_velocity(open_bottom=bottom == "open")
        t0 = time.perf_counter()
        expected = phiflow_rollout(v0, args.steps, reynolds=args.reynolds, open_bottom=bottom == "open")
        result["phiflow_seconds_per_step"][bottom] = (time.perf_counter() - t0) / args.steps
        for rtol in (1e-8, 1e-12):
            pressure = SolveOptions(rtol=rtol, max_iter=20000, method="cg")
            scene = pbdl_karman(RESOLUTION, args.reynolds, v0=torch.tensor(v0), bottom=side, pressure=pressure)
            scene.stepper(scene.state0)  # warm-up: kernel compilation is not timed
            v, errors = scene.state0, []
            t0 = time.perf_counter()
            for k in range(args.steps):
                v = scene.stepper(v)
                ref = torch.tensor(expected[k])
                errors.append(float(torch.linalg.norm(v - ref) / torch.linalg.norm(ref)))
            seconds = (time.perf_counter() - t0) / args.steps
            result["runs"][f"{bottom} bottom, rtol {rtol:g}"] = {"relative_error": errors, "seconds_per_step": seconds}
    header = "step  " + "  ".join(f"{name:>26}" for name in result["runs"])
    print(header)
    for k in range(args.steps):
        print(f"{k + 1:4d}  " + "  ".join(f"{run['relative_error'][k]:26.3e}" for run in result["runs"].values()))
    phi_t = ", ".join(f"{b} {t:.3f}" for b, t in result["phiflow_seconds_per_step"].items())
    timings = "; ".join(f"{n} {r['seconds_per_step']:.3f}" for n, r in result["runs"].items())
    print(f"seconds/step: PhiFlow (converged CG, float64, not jit-compiled) {phi_t}; taichi_dp {timings}")
    worst = max(max(r["relative_error"]) for r in result["runs"].values())
    result["max_relative_error"] = worst
    recs = [Record("karman 32x64, PhiFlow converged CG", f"{b} bottom", "seconds_per_step", t, "s", "phiflow")
            for b, t in result["phiflow_seconds_per_step"].items()]
    for name, r in result["runs"].items():
        bottom, rtol = name.split(", ")
        recs += [Record(f"karman 32x64, {rtol}", bottom, "seconds_per_step", r["seconds_per_step"], "s"),
                 Record(f"karman 32x64, {rtol}", bottom, "max_relative_error", max(r["relative_error"]), "")]
    result["records"] = [r.as_dict() for r in recs]
    close_meta(result["meta"], time.perf_counter() - t_start)
    out = args.out or (None if args.quick else RESULTS / f"pbdl_karman_match_{result['date']}.json")
    if out:
        write_json(out, result)
    print(f"max relative error {worst:.2e} ({'≤' if worst <= 1e-4 else '>'} 1e-4)" + (f"; wrote {out}" if out else ""))
    if not np.isfinite(worst):
        raise SystemExit(f"error: a relative error is not finite ({worst})")
    return result


if __name__ == "__main__":
    main()
