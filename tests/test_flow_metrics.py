"""Flow diagnostics (:mod:`taichi_dp.learn.flow_metrics`): known answers on synthetic fields and series, and a
short source rollout of the karman wake whose shedding frequency must be the physical one."""

import math

import pytest
import torch

from taichi_dp.learn.flow_metrics import (
    crossing_step,
    finite_fraction,
    finite_steps,
    karman_probe,
    kinetic_energy,
    shedding_frequency,
    spectrum_distance,
    strouhal,
    vorticity,
    vorticity_spectrum,
)

H, W = 16, 12


def _vorticity(v: torch.Tensor) -> torch.Tensor:
    """The karman experiment's own vorticity before it moved to ``flow_metrics`` (verbatim), for comparison."""
    vy, vx = v[..., 0, :, :-1], v[..., 1, :-1, :]
    return (vx[..., 1:, 1:-1] - vx[..., :-1, 1:-1]) - (vy[..., 1:-1, 1:] - vy[..., 1:-1, :-1])


def _faces(h: int = H, w: int = W, dtype=torch.float64):
    """Face-centre coordinates (grid units): ``v_y`` faces at ``(y, x) = (i, j + ½)``, ``v_x`` at ``(i + ½, j)``."""
    iy = torch.arange(h + 1, dtype=dtype)[:, None]
    jx = torch.arange(w + 1, dtype=dtype)[None, :]
    return (iy, jx + 0.5), (iy + 0.5, jx)


def _padded(vy: torch.Tensor, vx: torch.Tensor, garbage: float = 0.0) -> torch.Tensor:
    """``(..., 2, H+1, W+1)`` from the valid faces ``vy (..., H+1, W)`` and ``vx (..., H, W+1)``, padding = ``garbage``."""
    h1, w = vy.shape[-2:]
    v = torch.full((*vy.shape[:-2], 2, h1, w + 1), garbage, dtype=vy.dtype)
    v[..., 0, :, :w] = vy
    v[..., 1, : h1 - 1, :] = vx
    return v


def test_vorticity_agrees_with_the_experiment_and_is_twice_the_rotation_rate():
    v = torch.randn(3, 2, 2, H + 1, W + 1, dtype=torch.float64)
    assert torch.equal(vorticity(v), _vorticity(v))
    assert vorticity(v).shape == (3, 2, H - 1, W - 1)

    omega, y0, x0 = 0.37, 7.3, 5.1
    (_, xy), (yx, _) = _faces()
    # rotation in the layout's (y, x) orientation: v_y = −Ω (x − x0), v_x = Ω (y − y0), sampled on the faces
    vy = (-omega * (xy - x0)).expand(H + 1, W + 1)[:, :W]
    vx = (omega * (yx - y0)).expand(H + 1, W + 1)[:H, :]
    rotation = _padded(vy, vx, garbage=1e3)  # padding never enters the stencil
    torch.testing.assert_close(vorticity(rotation), torch.full((H - 1, W - 1), 2 * omega, dtype=torch.float64))
    # counter-clockwise in the usual (x right, y up) picture: −2Ω (documented sign)
    torch.testing.assert_close(vorticity(-rotation), torch.full((H - 1, W - 1), -2 * omega, dtype=torch.float64))
    # physical units: the same rotation on cells of side h has velocities h× larger, vorticity unchanged
    torch.testing.assert_close(vorticity(3.125 * rotation, spacing=3.125), vorticity(rotation))
    anisotropic = torch.full((H - 1, W - 1), 1.5 * omega, dtype=torch.float64)  # Ω/2 + Ω
    torch.testing.assert_close(vorticity(rotation, spacing=(2.0, 1.0)), anisotropic)


def test_kinetic_energy_of_a_uniform_flow_ignores_the_padding():
    uy, ux = 1.5, -0.5
    v = _padded(torch.full((4, H + 1, W), uy), torch.full((4, H, W + 1), ux), garbage=1e6)
    torch.testing.assert_close(kinetic_energy(v), torch.full((4,), 0.5 * (uy**2 + ux**2)))
    v[0, 0, :, W] = math.nan
    v[0, 1, H, :] = math.inf
    assert torch.isfinite(kinetic_energy(v)).all()
    # each component is averaged over its own faces: v_y on half the rows only → ½ · ½ · 4
    vy = torch.zeros(H + 1, W, dtype=torch.float64)
    vy[: (H + 1) // 2 + 1] = 2.0
    ke = kinetic_energy(_padded(vy, torch.zeros(H, W + 1, dtype=torch.float64)))
    torch.testing.assert_close(ke, torch.tensor(0.5 * 4.0 * ((H + 1) // 2 + 1) / (H + 1), dtype=torch.float64))


def _shear_trajectory(k_y: float, k_x: float, frames: int = 3, h: int = 64, w: int = 32) -> torch.Tensor:
    """``(1, frames, 2, h+1, w+1)``: ``v_x = sin(2π k_y y)`` (vorticity waves along y) plus
    ``v_y = sin(2π k_x x)`` (along x)."""
    (_, xy), (yx, _) = _faces(h, w)
    vy = torch.sin(2 * math.pi * k_x * xy).expand(h + 1, w + 1)[:, :w]
    vx = torch.sin(2 * math.pi * k_y * yx).expand(h + 1, w + 1)[:h, :]
    return _padded(vy, vx)[None, None].expand(1, frames, 2, h + 1, w + 1).clone()


def test_vorticity_spectrum_peaks_at_the_wavelength_of_the_field():
    traj = _shear_trajectory(k_y=0.125, k_x=0.0)
    k, spec = vorticity_spectrum(traj)
    assert k.shape == (32,) and spec.shape == (1, 32)  # lines of 63 corners along y
    torch.testing.assert_close(k, torch.arange(32, dtype=torch.float64) / 63)
    assert abs(float(k[spec[0].argmax()]) - 0.125) <= 0.5 / 63
    assert float(spec[0, spec[0].argmax()]) > 100 * float(spec[0, 20:].max())  # one sharp peak (Hann leakage only)

    across = _shear_trajectory(k_y=0.0, k_x=0.25)
    kx, spec_x = vorticity_spectrum(across, axis="x")
    assert abs(float(kx[spec_x[0].argmax()]) - 0.25) <= 0.5 / 31
    assert float(vorticity_spectrum(across)[1].max()) < 1e-20  # constant along y: nothing left after the mean

    # only the last `frames` frames count
    both = torch.cat([_shear_trajectory(0.3, 0.0, frames=2), _shear_trajectory(0.125, 0.0, frames=1)], dim=1)
    _, last = vorticity_spectrum(both, frames=1)
    _, every = vorticity_spectrum(both)
    assert abs(float(k[last[0].argmax()]) - 0.125) <= 0.5 / 63
    assert abs(float(k[every[0].argmax()]) - 0.3) <= 0.5 / 63


def test_spectrum_distance():
    spec = torch.rand(3, 17, dtype=torch.float64) + 0.1
    torch.testing.assert_close(spectrum_distance(spec, spec), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(spectrum_distance(4 * spec, spec), torch.full((3,), math.log10(4), dtype=torch.float64))
    one = spec[0]  # a (K,) reference broadcasts over the samples
    torch.testing.assert_close(spectrum_distance(one.expand(3, 17), 4 * one), torch.full((3,), math.log10(4)).double())
    assert abs(math.log10(4) - 0.602) < 1e-3
    off = spec.clone()
    off[:, 0] *= 1e6  # bin 0 never counts
    off[:, 9:] *= 10.0  # bins past kmax = 8 do not count with kmax
    torch.testing.assert_close(spectrum_distance(off, spec, kmax=8), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(spectrum_distance(off, spec), torch.full((3,), 8 / 16, dtype=torch.float64))
    zero = spec.clone()
    zero[:, 1:] = 0.0
    assert torch.isfinite(spectrum_distance(zero, spec)).all() and (spectrum_distance(zero, spec) > 20).all()


def _probe_trajectory(series: torch.Tensor, h: int = 64, w: int = 32) -> torch.Tensor:
    """``(S, T, 2, h+1, w+1)`` zeros except the transverse velocity at the default karman probe."""
    s, t = series.shape
    traj = torch.zeros(s, t, 2, h + 1, w + 1, dtype=series.dtype)
    row, col = karman_probe(h, w)
    traj[:, :, 1, row, col] = series
    return traj


@pytest.mark.parametrize("steps", [160, 257])
def test_shedding_frequency_recovers_a_sine(steps):
    freqs = torch.tensor([0.0173, 0.0371, 0.0952, 0.2117, 0.4316], dtype=torch.float64)  # ≥ 2.7 cycles, non-integer
    t = torch.arange(steps, dtype=torch.float64)
    series = torch.sin(2 * math.pi * freqs[:, None] * t + 0.4) + 0.7  # an offset: the mean is removed
    measured = shedding_frequency(_probe_trajectory(series))
    assert measured.dtype == torch.float64 and measured.shape == (5,)
    assert (measured - freqs).abs().max() < 1e-4
    # float32 data and a window of the last frames only (the first ones at another frequency)
    mixed = series.clone()
    mixed[:, : steps - 150] = torch.sin(2 * math.pi * 0.3 * t[: steps - 150])
    assert (shedding_frequency(_probe_trajectory(mixed.float()), frames=150) - freqs).abs().max() < 1e-4


def test_shedding_frequency_is_nan_for_flat_or_non_finite_windows():
    t = torch.arange(200, dtype=torch.float64)
    series = torch.stack([torch.full_like(t, 0.3), torch.sin(2 * math.pi * 0.05 * t), torch.sin(2 * math.pi * 0.05 * t)])
    series[2, 150] = math.nan
    f = shedding_frequency(_probe_trajectory(series))
    assert math.isnan(f[0]) and math.isnan(f[2]) and abs(float(f[1]) - 0.05) < 1e-4
    # a NaN before the window does not matter
    assert abs(float(shedding_frequency(_probe_trajectory(series[2:]), frames=40)[0]) - 0.05) < 1e-3
    assert torch.isnan(shedding_frequency(_probe_trajectory(torch.zeros(1, 50, dtype=torch.float64)))).all()


def test_karman_probe_and_strouhal():
    assert karman_probe(64, 32) == (32, 16)  # y = 32.5 · 3.125 ≈ 101.6 = 50 + 2.6 D, x = 50: the centre line
    assert karman_probe(128, 64) == (64, 32)
    assert karman_probe(64, 32, diameters=1.0) == (22, 16)
    with pytest.raises(ValueError, match="diameters"):
        karman_probe(64, 32, diameters=10.0)
    assert strouhal(0.01) == pytest.approx(0.2)
    torch.testing.assert_close(strouhal(torch.tensor([0.01, 0.02]), dt=0.5), torch.tensor([0.4, 0.8]))


def test_shedding_of_the_source_karman_wake_is_physical():
    """The 32×64 source scene at Re = 200 (the study's start: perturbation 1, street developed after ~100 steps).

    A cylinder in a free stream sheds at St ≈ 0.197 at Re = 200 (Williamson 1996's fit St = 0.2175 − 5.1064/Re);
    here the channel walls block D/W = 20 % of it, which raises St (≈ 0.22–0.25 for that blockage in the
    literature), while the coarse grid (D = 6.4 cells, semi-Lagrangian advection at dt = 1) adds numerical
    viscosity, which lowers it (St ≈ 0.16–0.18 at Re 50–100). Measured: 0.193 (source); the study's 4× reference
    (``karman_data``, factor 4) sheds at 0.218–0.221 for Re 90–1800, the source at 0.196–0.186.
    """
    from taichi_dp.scenes import karman
    from taichi_dp.solvers import rollout

    scene = karman(reynolds=200.0, perturbation=1.0)
    with torch.no_grad():
        traj = rollout(scene.stepper, scene.state0, 360)
    assert finite_steps(traj).all()
    f = shedding_frequency(traj, frames=256)
    st = strouhal(f)
    assert torch.isfinite(st).all() and 0.15 < float(st[0]) < 0.25, float(st[0])
    # the same frequency a diameter further downstream (one street, not a local mode)
    assert abs(float(shedding_frequency(traj, probe=karman_probe(64, 32, 3.5), frames=256)[0]) - float(f[0])) < 5e-4
    # a developed street is statistically stationary (measured 0.004 between steps 160–259 and 261–360) and
    # far from the start-up flow (0.31 against steps 0–29)
    _, late = vorticity_spectrum(traj, frames=100)
    _, earlier = vorticity_spectrum(traj[:, :260], frames=100)
    _, start = vorticity_spectrum(traj[:, :30])
    assert float(spectrum_distance(late, earlier)[0]) < 0.05 < 0.2 < float(spectrum_distance(late, start)[0])
    assert float(kinetic_energy(traj[:, -1])[0]) == pytest.approx(0.59, abs=0.05)  # ½ U² plus the wake's share


def test_finite_steps_is_cumulative():
    traj = torch.zeros(2, 6, 2, 5, 5, dtype=torch.float32)
    traj[1, 3, 0, 2, 2] = math.nan
    traj[0, 5, 1, 4, 4] = math.inf  # in the padding: still a value of the frame
    ok = finite_steps(traj)
    assert ok.dtype == torch.bool and ok.shape == (2, 6)
    assert ok[0].tolist() == [True] * 5 + [False]
    assert ok[1].tolist() == [True, True, True, False, False, False]  # frames 4, 5 are finite but come after
    assert finite_fraction(traj, 3) == 1.0
    assert finite_fraction(traj, 4) == 0.5
    assert finite_fraction(traj, 6) == 0.0
    with pytest.raises(ValueError, match="horizon"):
        finite_fraction(traj, 7)


def test_crossing_step():
    src = torch.linspace(1.0, 2.0, 8, dtype=torch.float64)
    never = 0.5 * src
    at_once = 2.0 * src
    blip = never.clone()
    blip[1] = 3.0  # step 2 only
    blip[4:] = 3.0  # and for good from step 5
    nan = never.clone()
    nan[3] = math.nan  # blow-up at step 4
    err = torch.stack([never, at_once, blip, nan])
    assert crossing_step(err, src).tolist() == [0, 1, 2, 4]
    assert crossing_step(err, src, persist=2).tolist() == [0, 1, 5, 0]  # a single NaN step is one step
    nan[4:] = math.nan
    assert crossing_step(nan, src, persist=3).item() == 4
    assert crossing_step(err, src, persist=5).tolist() == [0, 1, 0, 0]  # steps 5–8: a run of 4, not 5
    assert crossing_step(err, src, persist=9).tolist() == [0, 0, 0, 0]
    assert crossing_step(err, src.expand(4, 8)).dtype == torch.int64
    # a source that blew up is not beaten by a finite error
    assert crossing_step(never, torch.full_like(src, math.nan)).item() == 0
    # batches of curves (seeds × samples)
    assert crossing_step(err.reshape(2, 2, 8), src).tolist() == [[0, 1], [2, 4]]


def test_arguments_are_validated():
    v = torch.zeros(2, 2, H + 1, W + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="v must be staggered"):
        vorticity(v[:, :1])
    with pytest.raises(TypeError, match="v must be a torch"):
        kinetic_energy(v.numpy())
    with pytest.raises(ValueError, match="v must be a floating-point"):
        kinetic_energy(v.long())
    with pytest.raises(ValueError, match="spacing"):
        vorticity(v, spacing=0.0)
    with pytest.raises(ValueError, match="traj must be trajectories"):
        vorticity_spectrum(v)
    with pytest.raises(ValueError, match="frames"):
        vorticity_spectrum(v[None], frames=3)
    with pytest.raises(ValueError, match="axis"):
        vorticity_spectrum(v[None], axis="z")
    long = torch.zeros(1, 8, 2, H + 1, W + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="probe"):
        shedding_frequency(long, probe=(H, 0))  # v_x has H rows: row H is padding
    with pytest.raises(ValueError, match="channel"):
        shedding_frequency(long, probe=(0, 0), channel=2)
    with pytest.raises(ValueError, match="frames"):
        shedding_frequency(long, probe=(0, 0), frames=3)
    with pytest.raises(ValueError, match="ref_spec"):
        spectrum_distance(torch.ones(2, 5), torch.ones(2, 4))
    with pytest.raises(ValueError, match="kmax"):
        spectrum_distance(torch.ones(2, 5), torch.ones(5), kmax=5)
    with pytest.raises(ValueError, match="persist"):
        crossing_step(torch.ones(3), torch.ones(3), persist=0)
    with pytest.raises(ValueError, match="src must broadcast"):
        crossing_step(torch.ones(2, 3), torch.ones(4))
