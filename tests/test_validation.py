"""Input validation of the public ops and of the runtime: clear errors naming the argument."""

import pytest
import torch

import taichi_dp as tdp
from taichi_dp import Boundary, Dirichlet, Grid, Periodic, ZeroGradient
from taichi_dp.ops import advect, diffuse

F64 = torch.float64
GRIDS = {1: Grid.line(7), 2: Grid.rect((5, 6), (1.0, 1.5))}
BOUNDARIES = {1: Boundary(((Dirichlet(0.5), ZeroGradient()),)), 2: Boundary.uniform(Dirichlet(0.0), 2)}


def good(ndim: int) -> dict:
    """Valid arguments for both ops; tests replace one of them."""
    grid = GRIDS[ndim]
    return {
        "q": torch.randn(2, 2, *grid.shape, dtype=F64),
        "velocity": 0.5 * torch.randn(2, ndim, *grid.shape, dtype=F64),
        "nu": 0.01,
        "dt": 0.05,
        "grid": grid,
        "boundary": BOUNDARIES[ndim],
    }


def run_advect(a: dict, **kw) -> torch.Tensor:
    return advect(a["q"], a["velocity"], a["dt"], a["grid"], a["boundary"], **kw)


def run_diffuse(a: dict, **kw) -> torch.Tensor:
    return diffuse(a["q"], a["nu"], a["dt"], a["grid"], a["boundary"], **kw)


OPS = {"advect": (run_advect, "q"), "diffuse": (run_diffuse, "u")}
PARAMS = [(op, ndim) for op in OPS for ndim in (1, 2)]


def nonfinite(value: float):
    def corrupt(a: dict) -> None:
        a["q"] = a["q"].clone()
        a["q"].view(-1)[5] = value

    return corrupt


# (id, how to break the arguments, exception type, regex the message must match; {name} = state name)
STATE_ERRORS = [
    ("missing_batch_dim", lambda a: a.update(q=a["q"][0]), ValueError, r"^{name} must have layout .*add a batch dim"),
    ("extra_dim", lambda a: a.update(q=a["q"][None]), ValueError, r"^{name} must have layout \(B, C, "),
    ("spatial_shape", lambda a: a.update(q=a["q"][..., :-1].contiguous()), ValueError, r"^{name} must have spatial"),
    ("float32", lambda a: a.update(q=a["q"].float()), TypeError, r"^{name} must have dtype torch.float64"),
    ("non_contiguous", lambda a: a.update(q=a["q"].transpose(0, 1)), ValueError, r"^{name} must be contiguous"),
    ("nan", nonfinite(float("nan")), ValueError, r"^{name} contains 1 NaN/Inf"),
    ("inf", nonfinite(float("inf")), ValueError, r"^{name} contains 1 NaN/Inf"),
    ("not_a_tensor", lambda a: a.update(q=a["q"].tolist()), TypeError, r"^{name} must be a torch.Tensor"),
]


@pytest.mark.parametrize(("case", "breaker", "exc", "pattern"), STATE_ERRORS, ids=[c[0] for c in STATE_ERRORS])
@pytest.mark.parametrize(("op", "ndim"), PARAMS)
def test_bad_state(op, ndim, case, breaker, exc, pattern):
    fn, name = OPS[op]
    a = good(ndim)
    breaker(a)
    with pytest.raises(exc, match=pattern.format(name=name)):
        fn(a)


@pytest.mark.parametrize(("op", "ndim"), PARAMS)
def test_meta_device_tensor(op, ndim):
    """Device mismatch (no GPU here): a ``meta`` tensor is not on the runtime's cpu device."""
    fn, name = OPS[op]
    a = good(ndim)
    a["q"] = torch.empty(a["q"].shape, dtype=F64, device="meta")
    with pytest.raises(ValueError, match=rf"^{name} must be on torch device 'cpu'"):
        fn(a)


VELOCITY_ERRORS = [
    ("channels", lambda v: v[:, :1].contiguous() if v.shape[1] == 2 else torch.cat([v, v], 1), ValueError, "channel"),
    ("batch", lambda v: v[:1].contiguous(), ValueError, "batch size 2"),
    ("spatial", lambda v: v[..., :-1].contiguous(), ValueError, "spatial shape"),
    ("float32", lambda v: v.float(), TypeError, "dtype"),
    ("non_contiguous", lambda v: torch.stack([v, v], -1)[..., 0], ValueError, "contiguous"),
    ("nan", lambda v: v.masked_fill(v > 0, float("nan")), ValueError, "NaN"),
]


@pytest.mark.parametrize(("case", "breaker", "exc", "pattern"), VELOCITY_ERRORS, ids=[c[0] for c in VELOCITY_ERRORS])
@pytest.mark.parametrize("ndim", [1, 2])
def test_bad_velocity(ndim, case, breaker, exc, pattern):
    a = good(ndim)
    a["velocity"] = breaker(a["velocity"])
    with pytest.raises(exc, match=rf"^velocity .*{pattern}"):
        run_advect(a)


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("nu", [-0.1, "tensor"])
def test_negative_nu(ndim, nu):
    a = good(ndim)
    a["nu"] = torch.tensor([0.01, -0.02], dtype=F64) if nu == "tensor" else nu
    for scheme in ("explicit", "implicit"):
        with pytest.raises(ValueError, match=r"^nu must be >= 0"):
            run_diffuse(a, scheme=scheme)


@pytest.mark.parametrize(
    ("arg", "value", "exc", "pattern"),
    [
        ("nu", torch.tensor([0.1, 0.1], dtype=torch.float32), TypeError, r"^nu must have dtype"),
        ("nu", torch.zeros(2, 2, dtype=F64), ValueError, r"^nu must be a float, a 0-d tensor or a \(B,\) tensor"),
        ("nu", torch.zeros(3, dtype=F64), ValueError, r"^nu has shape \(3,\) but the state's batch size is 2"),
        ("nu", float("nan"), ValueError, r"^nu must be finite"),
        ("nu", "0.1", TypeError, r"^nu must be a float or a tensor"),
        ("dt", -0.1, ValueError, r"^dt must be >= 0"),
        ("dt", torch.tensor([0.1, float("inf")], dtype=F64), ValueError, r"^dt contains NaN/Inf"),
    ],
)
def test_bad_parameters(arg, value, exc, pattern):
    a = good(1)
    a[arg] = value
    with pytest.raises(exc, match=pattern):
        run_diffuse(a)


@pytest.mark.parametrize("ndim", [1, 2])
def test_explicit_diffusion_stability(ndim):
    a = good(ndim)
    a["nu"] = 1.0  # nu dt sum(1/h^2) = 0.05 * 49 (1D), 0.05 * 41 (2D): > 0.5
    with pytest.raises(ValueError, match=r"explicit diffusion is unstable"):
        run_diffuse(a)
    run_diffuse(a, scheme="implicit")  # unconditionally stable: accepted


@pytest.mark.parametrize("op", list(OPS))
def test_boundary_with_wrong_number_of_axes(op):
    fn, _ = OPS[op]
    a = good(1)
    a["boundary"] = Boundary.periodic(2)
    with pytest.raises(ValueError, match=r"^boundary has 2 axes but the grid has 1"):
        fn(a)
    a = good(2)
    a["boundary"] = Boundary.periodic(1)
    with pytest.raises(ValueError, match=r"^boundary has 1 axes but the grid has 2"):
        fn(a)


@pytest.mark.parametrize("op", list(OPS))
def test_grid_and_boundary_types(op):
    fn, _ = OPS[op]
    a = good(1)
    a["grid"] = (7,)
    with pytest.raises(TypeError, match=r"^grid must be a taichi_dp.Grid"):
        fn(a)
    a = good(1)
    a["boundary"] = ((Periodic(), Periodic()),)
    with pytest.raises(TypeError, match=r"^boundary must be a taichi_dp.Boundary"):
        fn(a)


@pytest.mark.parametrize("pair", [(Periodic(), Dirichlet(0.0)), (ZeroGradient(), Periodic())])
def test_periodic_on_one_side_only(pair):
    with pytest.raises(ValueError, match=r"Boundary.sides\[1\]: Periodic must be set on both sides"):
        Boundary(((Dirichlet(0.0), Dirichlet(0.0)), pair))


def test_other_boundary_errors():
    with pytest.raises(ValueError, match=r"Boundary.sides\[0\] must be a \(low, high\) pair"):
        Boundary(((Periodic(),),))
    with pytest.raises(TypeError, match=r"Boundary.sides\[0\] entries must be"):
        Boundary(((Dirichlet(0.0), 0.0),))
    with pytest.raises(ValueError, match=r"Dirichlet value must be finite"):
        Dirichlet(float("nan"))


@pytest.mark.parametrize(
    ("op", "scheme"), [("advect", "rk4"), ("advect", "implicit"), ("diffuse", "crank"), ("diffuse", "maccormack")]
)
def test_unknown_scheme(op, scheme):
    fn, _ = OPS[op]
    with pytest.raises(ValueError, match=rf"^scheme must be one of .* got '{scheme}'"):
        fn(good(1), scheme=scheme)


@pytest.fixture
def restore_runtime():
    """Whatever a test does to the runtime, the session continues on cpu/f64."""
    try:
        yield tdp.current()
    finally:
        rt = tdp.init("cpu", "f64")
        assert (rt.arch, rt.precision, rt.dtype) == ("cpu", "f64", F64)


def test_init_unknown_arch(restore_runtime):
    with pytest.raises(ValueError, match=r"^arch must be one of .* got 'nonsense'"):
        tdp.init(arch="nonsense")
    with pytest.raises(ValueError, match=r"^precision must be one of .* got 'f16'"):
        tdp.init("cpu", "f16")
    assert tdp.current() is restore_runtime  # nothing was re-initialised


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_init_cuda_unavailable(restore_runtime):
    with pytest.raises(RuntimeError, match=r"arch='cuda' was requested but is not available"):
        tdp.init(arch="cuda", precision="f64")
    assert tdp.current() is restore_runtime


def test_init_is_idempotent(restore_runtime):
    rt = tdp.init("cpu", "f64")
    assert rt is restore_runtime
    assert (rt.device, rt.dtype, rt.check_inputs) == (torch.device("cpu"), F64, True)


def test_grid_validation():
    with pytest.raises(ValueError, match=r"Grid.shape must have 1, 2 or 3 axes"):
        Grid((2, 2, 2, 2), ((0, 1),) * 4)
    with pytest.raises(ValueError, match=r"Grid.shape entries must be integers >= 2"):
        Grid.line(1)
    with pytest.raises(ValueError, match=r"Grid.bounds must have hi > lo"):
        Grid.line(4, 1.0, 0.0)


def test_explicit_stability_is_checked_per_batch_element():
    """Each element's own ν·Δt decides, not max(ν)·max(Δt) across the batch."""
    grid = Grid.line(7)
    u = torch.randn(2, 1, 7, dtype=torch.float64)
    nu = torch.tensor([1.0, 0.01], dtype=torch.float64)
    diffuse(u, nu, torch.tensor([0.001, 0.1], dtype=torch.float64), grid, Boundary.periodic(1))  # 0.049 each: stable
    with pytest.raises(ValueError, match=r"unstable.*nu=1, dt=0\.1"):
        diffuse(u, nu, torch.tensor([0.1, 0.1], dtype=torch.float64), grid, Boundary.periodic(1))
