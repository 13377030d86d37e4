"""Physics diagnostics of staggered 2D flow rollouts (the Karman wake): vorticity, kinetic energy, vorticity
spectra, vortex-shedding frequency, blow-up and error-crossing steps.

A low L1 error does not make a correct wake: a correction that damps the vortex street can track the
reference's mean flow closely and still shed at the wrong frequency, with the wrong energy, or with its
small scales smeared out. These functions measure those properties on rollouts; they are plain PyTorch
(CPU or any device, float32 or float64, no Taichi kernel) and never build autograd graphs on purpose
(call them under ``torch.no_grad()`` on trajectories that carry gradients).

Layout (:mod:`taichi_dp.grid.staggered`): a velocity frame is ``(..., 2, H+1, W+1)`` with channel 0 =
``v_y`` on the y-faces (valid entries ``[..., 0, :, :W]``, ``H+1 × W``) and channel 1 = ``v_x`` on the
x-faces (valid ``[..., 1, :H, :]``, ``H × W+1``); the rest is padding. Rows are ``y``, columns ``x``.

In the karman scene (:func:`taichi_dp.scenes.karman`, ``scale=1``: ``H, W = 64, 32`` cells of side
3.125 on a 200 (y) × 100 (x) domain) the flow goes along **+y**: inflow at ``y = 0``, outflow at
``y = 200``, no-slip walls at ``x = 0`` and ``x = 100``, a cylinder of diameter ``D = 20`` at
``(y, x) = (50, 50)``, inflow speed ``U = 1``, ``dt = 1`` per source step. The streamwise axis is
therefore ``y`` (rows) and the transverse velocity is ``v_x`` (channel 1). Its value on the centre line
``x = 50`` behind the cylinder oscillates at the shedding frequency ``f`` (the streamwise ``v_y`` there
at ``2f``): :func:`karman_probe` picks that face, :func:`shedding_frequency` measures ``f`` and
:func:`strouhal` turns it into ``St = f·D/U``.

Units: lengths in grid cells, times in steps (frequencies in cycles per step, wavenumbers in cycles
per cell), velocities as stored, unless a function takes a ``spacing``/``dt``.
"""

from __future__ import annotations

import math
import numbers

import torch

from ..runtime import check_positive
from ..scenes.flow import KARMAN_CYLINDER, KARMAN_EXTENT, KARMAN_LENGTH

__all__ = [
    "crossing_step",
    "finite_fraction",
    "finite_steps",
    "karman_probe",
    "kinetic_energy",
    "shedding_frequency",
    "spectrum_distance",
    "strouhal",
    "vorticity",
    "vorticity_spectrum",
]


# ----------------------------------------------------------------------------------------------- checks


def _check_tensor(name: str, x: object, min_ndim: int, floating: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float32/float64), got {x.dtype}")
    return x


def _check_velocity(name: str, v: object, lead: int = 0) -> torch.Tensor:
    """A staggered velocity ``(*lead dims, ..., 2, H+1, W+1)`` with ``H, W ≥ 2``."""
    v = _check_tensor(name, v, 3 + lead)
    if v.shape[-3] != 2 or v.shape[-2] < 3 or v.shape[-1] < 3:
        raise ValueError(f"{name} must be staggered 2D velocities (..., 2, H+1, W+1) with H, W >= 2, got shape {tuple(v.shape)}")
    return v


def _check_trajectories(name: str, traj: object) -> torch.Tensor:
    """Trajectories of staggered velocities ``(S, T, 2, H+1, W+1)``."""
    traj = _check_tensor(name, traj, 0)
    if traj.ndim != 5:
        raise ValueError(f"{name} must be trajectories (S, T, 2, H+1, W+1), got shape {tuple(traj.shape)}")
    return _check_velocity(name, traj, lead=2)


def _check_int(name: str, x: object, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(x).__name__} {x!r}")
    if x < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x}")
    return int(x)


def _check_frames(frames: object, steps: int) -> int:
    """``frames`` (``None``: all ``steps``) as an int in ``[1, steps]``."""
    if frames is None:
        return steps
    n = _check_int("frames", frames, 1)
    if n > steps:
        raise ValueError(f"frames must be at most the trajectory length T = {steps}, got {n}")
    return n


# --------------------------------------------------------------------------------------- field measures


def vorticity(v: torch.Tensor, spacing: float | tuple[float, float] = 1.0) -> torch.Tensor:
    """Vorticity at the interior cell corners, ``∂v_x/∂y − ∂v_y/∂x`` by centred differences of the faces.

    The sign is the curl in the layout's axis order ``(y, x)``; in the usual right-handed ``(x, y)``
    picture (x to the right, y up, ``imshow(origin="lower")``) it is ``−ω_z``: a solid-body rotation
    ``v_y = −Ω (x − x₀)``, ``v_x = Ω (y − y₀)`` (clockwise in that picture) gives ``+2Ω``. With the
    default ``spacing`` it is the vorticity the karman plots show (grid units, as the experiment's
    vorticity strips).

    Args:
        v: staggered velocities ``(..., 2, H+1, W+1)`` (float32/float64).
        spacing: cell size, a number or ``(h_y, h_x)``; the default 1 gives grid units (velocity per
            cell). The karman scene's physical cell is 3.125 (both axes, every ``scale`` 1 cell).

    Returns:
        ``(..., H−1, W−1)``: entry ``[..., i, j]`` is the corner ``(y, x) = (i+1, j+1)`` (in cells).
    """
    v = _check_velocity("v", v)
    if isinstance(spacing, tuple | list):
        if len(spacing) != 2:
            raise ValueError(f"spacing must be a number or an (h_y, h_x) pair, got {spacing!r}")
        hy, hx = (check_positive("spacing", h) for h in spacing)
    else:
        hy = hx = check_positive("spacing", spacing)
    vy, vx = v[..., 0, :, :-1], v[..., 1, :-1, :]
    dvx_dy = vx[..., 1:, 1:-1] - vx[..., :-1, 1:-1]
    dvy_dx = vy[..., 1:-1, 1:] - vy[..., 1:-1, :-1]
    if hy == 1.0 and hx == 1.0:
        return dvx_dy - dvy_dx
    return dvx_dy / hy - dvy_dx / hx


def kinetic_energy(v: torch.Tensor) -> torch.Tensor:
    """Mean kinetic energy per unit mass: ``½ mean(v_y²) + ½ mean(v_x²)`` over each component's valid faces.

    Padding entries (``[..., 0, :, W]`` and ``[..., 1, H, :]``) are excluded; every valid face counts,
    closed ones (walls, faces inside an obstacle, which hold 0) included, so the number is comparable
    between rollouts of the same scene.

    Args:
        v: staggered velocities ``(..., 2, H+1, W+1)`` (float32/float64).

    Returns:
        ``(...)``: energy in velocity units squared (a uniform flow ``(u_y, u_x)`` gives ``½(u_y² + u_x²)``).
    """
    v = _check_velocity("v", v)
    vy, vx = v[..., 0, :, :-1], v[..., 1, :-1, :]
    return 0.5 * (vy.square().mean(dim=(-2, -1)) + vx.square().mean(dim=(-2, -1)))


# --------------------------------------------------------------------------------------------- spectra


def vorticity_spectrum(traj: torch.Tensor, frames: int | None = None, axis: str = "y") -> tuple[torch.Tensor, torch.Tensor]:
    """One-dimensional power spectrum of the vorticity along the streamwise axis, averaged over lines and time.

    For each of the last ``frames`` frames, the corner vorticity (:func:`vorticity`, grid units) is cut
    into lines along ``axis``; each line has its mean removed and is multiplied by a symmetric Hann window
    (the channel is not periodic along either axis), and ``|rfft|² / Σ window²`` is averaged over the
    lines and the frames.

    Args:
        traj: trajectories of staggered velocities ``(S, T, 2, H+1, W+1)``.
        frames: how many of the last frames to average over, ``1 ≤ frames ≤ T``; ``None``: all of them.
        axis: ``"y"`` (default: along the rows' direction, the karman flow direction; lines of ``H − 1``
            corners, one per interior column) or ``"x"`` (across; lines of ``W − 1`` corners).

    Returns:
        ``(wavenumbers (K,), spectrum (S, K))``: wavenumbers ``0, 1/N, …, ⌊N/2⌋/N`` in cycles per grid cell
        (``N`` the line length, ``K = ⌊N/2⌋ + 1``; divide by the cell size for cycles per length unit) and
        the power per wavenumber bin in (vorticity in grid units)², in ``traj``'s dtype. Bin 0 is ~0 (means
        removed; only the window's leakage is left).
    """
    traj = _check_trajectories("traj", traj)
    n = _check_frames(frames, traj.shape[1])
    if axis not in ("y", "x"):
        raise ValueError(f"axis must be 'y' (streamwise in the karman scene) or 'x', got {axis!r}")
    w = vorticity(traj[:, -n:])  # (S, F, H−1, W−1)
    if axis == "y":
        w = w.transpose(-2, -1)  # (S, F, lines, N): the transform runs along the last dimension
    length = w.shape[-1]
    window = torch.hann_window(length, periodic=False, dtype=w.dtype, device=w.device)
    lines = (w - w.mean(dim=-1, keepdim=True)) * window
    power = torch.fft.rfft(lines, dim=-1).abs().square() / window.square().sum()
    wavenumbers = torch.fft.rfftfreq(length, d=1.0, dtype=w.dtype, device=w.device)
    return wavenumbers, power.mean(dim=(1, 2))


def spectrum_distance(
    pred_spec: torch.Tensor, ref_spec: torch.Tensor, kmax: int | None = None, floor: float = 1e-30
) -> torch.Tensor:
    """Mean absolute decimal log-ratio of two spectra, ``mean_k |log10(pred_k / ref_k)|`` over bins ``1…kmax``.

    0 for identical spectra; a spectrum ``c`` times the other everywhere gives ``|log10 c|`` (4× → 0.602).
    Bin 0 (the removed mean) is excluded. Both spectra are clamped to at least ``floor`` first, so an
    empty bin gives a large finite distance instead of ``inf``; a non-finite bin gives NaN.

    Args:
        pred_spec: spectra ``(S, K)`` (e.g. of a corrected rollout, :func:`vorticity_spectrum`).
        ref_spec: reference spectra ``(S, K)`` or ``(K,)`` (broadcast over samples).
        kmax: the last bin index included, ``1 ≤ kmax ≤ K − 1``; ``None``: every bin but 0.
        floor: lower clamp > 0 of both spectra.

    Returns:
        ``(S,)`` distances in decades.
    """
    pred_spec = _check_tensor("pred_spec", pred_spec, 2)
    ref_spec = _check_tensor("ref_spec", ref_spec, 1)
    if pred_spec.ndim != 2:
        raise ValueError(f"pred_spec must be spectra (S, K), got shape {tuple(pred_spec.shape)}")
    rows_ok = ref_spec.ndim == 1 or (ref_spec.ndim == 2 and ref_spec.shape[0] in (1, pred_spec.shape[0]))
    if not rows_ok or ref_spec.shape[-1] != pred_spec.shape[-1]:
        raise ValueError(
            f"ref_spec must be (S, K) or (K,) matching pred_spec {tuple(pred_spec.shape)}, got shape {tuple(ref_spec.shape)}"
        )
    k = pred_spec.shape[-1]
    if k < 2:
        raise ValueError(f"pred_spec must have at least 2 wavenumber bins (K >= 2), got K = {k}")
    top = k - 1 if kmax is None else _check_int("kmax", kmax, 1)
    if top > k - 1:
        raise ValueError(f"kmax must be at most K - 1 = {k - 1}, got {top}")
    fl = check_positive("floor", floor)
    p = pred_spec[..., 1 : top + 1].clamp_min(fl)
    r = ref_spec[..., 1 : top + 1].clamp_min(fl)
    return (torch.log10(p) - torch.log10(r)).abs().mean(dim=-1)


# ---------------------------------------------------------------------------------------------- shedding


def karman_probe(height: int, width: int, diameters: float = 2.5) -> tuple[int, int]:
    """The ``v_x`` face ``(row, column)`` on the karman centre line ``diameters`` cylinder diameters behind
    the cylinder's centre, on a karman grid of ``height × width`` cells (any ``scale``).

    The default cylinder sits at ``(y, x) = (50, 50)`` with ``D = 20`` on the 200 × 100 domain
    (:data:`~taichi_dp.scenes.flow.KARMAN_CYLINDER`); x-face ``[i, j]`` is at ``y = (i + ½) h_y``,
    ``x = j h_x``. ``scale=1`` (64 × 32) with the default 2.5 diameters: ``y ≈ 100``, ``x = 50`` → ``(32, 16)``.

    Args:
        height: ``H``, cells along y (64·scale).
        width: ``W``, cells along x (32·scale).
        diameters: distance behind the cylinder's centre in diameters, > 0, inside the domain.

    Returns:
        ``(row, column)`` into the ``v_x`` face array ``[..., 1, :H, :]``.
    """
    h = _check_int("height", height, 2)
    w = _check_int("width", width, 2)
    dist = check_positive("diameters", diameters)
    (cy, cx), _ = KARMAN_CYLINDER.centre, KARMAN_CYLINDER.radius
    hy, hx = KARMAN_EXTENT[0] / h, KARMAN_EXTENT[1] / w
    row = round((cy + dist * KARMAN_LENGTH) / hy - 0.5)
    if not 0 <= row < h:
        y = cy + dist * KARMAN_LENGTH
        raise ValueError(f"diameters puts the probe at y = {y:g}, outside the domain [0, {KARMAN_EXTENT[0]:g}], got {dist:g}")
    return row, round(cx / hx)


def shedding_frequency(
    traj: torch.Tensor,
    probe: tuple[int, int] | None = None,
    frames: int | None = None,
    channel: int = 1,
    oversample: int = 8,
) -> torch.Tensor:
    """Dominant frequency of the transverse velocity at a probe face, in cycles per step.

    The probe's series over the last ``frames`` steps has its mean removed, is multiplied by a symmetric
    Hann window and zero-padded to a power of two ≥ ``oversample`` × its length; the largest magnitude bin
    (bin 0 excluded) is refined by a parabola through the log-magnitudes of it and its two neighbours.
    Measured on ``sin(2π f t)`` (120–257 steps, f = 0.013–0.43): error ≤ 2e-5 cycles per step with ≥ 2.5
    cycles in the window, 1e-3 with 1.5 cycles. The source karman wake (``Re`` 200–1000) sheds at
    ``f ≈ 0.0095`` (a period of ~105 steps), so give it ``frames ≥ 250``.

    Args:
        traj: trajectories of staggered velocities ``(S, T, 2, H+1, W+1)``, one frame per step.
        probe: ``(row, column)`` into the valid faces of ``channel``; ``None``: :func:`karman_probe` of the
            grid (the karman centre line 2.5 diameters behind the cylinder).
        frames: how many of the last frames to use, ``4 ≤ frames ≤ T``; ``None``: all of them.
        channel: the velocity component: 1 = ``v_x`` (default: transverse in the karman scene), 0 = ``v_y``.
        oversample: zero-padding factor ≥ 1.

    Returns:
        ``(S,)`` float64 frequencies in cycles per step (``0 < f ≤ ½``); NaN for a sample whose window holds
        a non-finite value or is flat (peak-to-peak ≤ 8 ε of its dtype × its largest magnitude).
    """
    traj = _check_trajectories("traj", traj)
    s, t = traj.shape[:2]
    n = _check_frames(frames, t)
    if n < 4:
        raise ValueError(f"frames must be >= 4 (a window of at least 4 steps), got {n}")
    if channel not in (0, 1) or isinstance(channel, bool):
        raise ValueError(f"channel must be 0 (v_y) or 1 (v_x), got {channel!r}")
    pad = _check_int("oversample", oversample, 1)
    h, w = traj.shape[-2] - 1, traj.shape[-1] - 1
    if probe is None:
        probe = karman_probe(h, w)
    rows, cols = (h + 1, w) if channel == 0 else (h, w + 1)
    if (
        not isinstance(probe, tuple | list)
        or len(probe) != 2
        or any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in probe)
        or not (0 <= probe[0] < rows and 0 <= probe[1] < cols)
    ):
        raise ValueError(f"probe must be a (row, column) inside the {rows} × {cols} faces of channel {channel}, got {probe!r}")
    series = traj[:, -n:, channel, int(probe[0]), int(probe[1])].detach().to(torch.float64)  # (S, F)
    finite = torch.isfinite(series).all(dim=1)
    series = torch.where(finite[:, None], series, torch.zeros_like(series))
    peak_to_peak = series.amax(dim=1) - series.amin(dim=1)
    flat = peak_to_peak <= 8 * torch.finfo(traj.dtype).eps * series.abs().amax(dim=1)
    window = torch.hann_window(n, periodic=False, dtype=torch.float64, device=series.device)
    nfft = 1 << max(pad * n - 1, 1).bit_length()
    spec = torch.fft.rfft((series - series.mean(dim=1, keepdim=True)) * window, n=nfft, dim=1).abs()
    logm = torch.log(spec.clamp_min(1e-300))
    k = 1 + spec[:, 1:].argmax(dim=1)  # (S,), bin 0 excluded
    inner = (k > 0) & (k < spec.shape[1] - 1)
    km, kp = (k - 1).clamp(min=0), (k + 1).clamp(max=spec.shape[1] - 1)
    a, b, c = (logm.gather(1, i[:, None])[:, 0] for i in (km, k, kp))
    denom = a - 2 * b + c  # < 0 at a strict maximum; otherwise keep the bin
    curved = inner & (denom < 0)
    shift = torch.where(curved, 0.5 * (a - c) / torch.where(curved, denom, -torch.ones_like(denom)), 0.0)
    freq = (k.to(torch.float64) + shift) / nfft
    nan = torch.full((s,), math.nan, dtype=torch.float64, device=series.device)
    return torch.where(finite & ~flat, freq, nan)


def strouhal(
    freq: torch.Tensor | float, diameter: float = KARMAN_LENGTH, speed: float = 1.0, dt: float = 1.0
) -> torch.Tensor | float:
    """Strouhal number ``St = f D / U`` of a shedding frequency ``freq`` in cycles per step.

    The defaults are the karman scene's: cylinder diameter ``D = 20``
    (:data:`~taichi_dp.scenes.flow.KARMAN_LENGTH`), inflow speed ``U = 1``, one step = ``dt = 1`` time unit
    (the source solver; the reference data is also stored once per source step). A cylinder in a free
    stream sheds at ``St ≈ 0.2`` for ``Re ≈ 100–1000``. Measured (perturbation 1, steps 100–400, probe
    :func:`karman_probe`): the 32×64 source 0.196 / 0.193 / 0.189 / 0.186 at Re 90 / 244 / 663 / 1800, the
    4× reference (:mod:`taichi_dp.learn.karman_data`, factor 4) 0.218 / 0.221 / 0.221 / 0.220 (2×: 0.209–0.204).

    Args:
        freq: frequency in cycles per step (a number or a tensor, e.g. :func:`shedding_frequency`'s).
        diameter: ``D`` > 0 in length units.
        speed: ``U`` > 0 in length units per time unit.
        dt: time units per step > 0.

    Returns:
        ``freq / dt · D / U`` (same type as ``freq``; NaN stays NaN).
    """
    d = check_positive("diameter", diameter)
    u = check_positive("speed", speed)
    step = check_positive("dt", dt)
    if isinstance(freq, torch.Tensor):
        return freq * (d / (u * step))
    if isinstance(freq, bool) or not isinstance(freq, numbers.Real):
        raise TypeError(f"freq must be a number or a tensor, got {type(freq).__name__} {freq!r}")
    return float(freq) * d / (u * step)


# ------------------------------------------------------------------------------------- blow-up, crossing


def finite_steps(traj: torch.Tensor) -> torch.Tensor:
    """Whether each rollout is still finite: ``[s, t]`` is True iff every value of frames ``0 … t`` of sample
    ``s`` is finite (cumulative: once a NaN/Inf appears the rest is False, even if later frames look finite).

    Args:
        traj: trajectories ``(S, T, ...)`` of any dtype (integer ones are always finite).

    Returns:
        ``(S, T)`` bool.
    """
    traj = _check_tensor("traj", traj, 2, floating=False)
    ok = torch.isfinite(traj).reshape(*traj.shape[:2], -1).all(dim=2)
    return torch.cummin(ok.to(torch.uint8), dim=1).values.bool()


def finite_fraction(traj: torch.Tensor, horizon: int) -> float:
    """Fraction of the samples whose first ``horizon`` frames are all finite (:func:`finite_steps`).

    Args:
        traj: trajectories ``(S, T, ...)``.
        horizon: number of leading frames that must be finite, ``1 ≤ horizon ≤ T``.

    Returns:
        A float in ``[0, 1]``.
    """
    ok = finite_steps(traj)
    hz = _check_int("horizon", horizon, 1)
    if hz > ok.shape[1]:
        raise ValueError(f"horizon must be at most the trajectory length T = {ok.shape[1]}, got {hz}")
    return float(ok[:, hz - 1].to(torch.float64).mean())


def crossing_step(err: torch.Tensor, src: torch.Tensor, persist: int = 1) -> torch.Tensor:
    """The step at which a corrected rollout's error first exceeds the bare source's, and stays above.

    Step ``t`` (1-based: index ``t − 1`` of the last dimension) *exceeds* when ``err > src`` or ``err`` is
    not finite (a blown-up correction is worse); a non-finite ``src`` with a finite ``err`` does not
    exceed. The result is the first step of the first run of at least ``persist`` consecutive exceeding
    steps that fits within the ``T`` steps (so a run still shorter than ``persist`` at the end does not
    count), or 0 when there is none (also when ``persist > T``).

    Args:
        err: error curves ``(..., T)`` of the corrected rollouts.
        src: the source's error curves, broadcastable to ``err`` (e.g. ``(T,)`` for every seed).
        persist: run length ≥ 1 that confirms a crossing (1: the first exceeding step).

    Returns:
        ``(...)`` int64 steps in ``[0, T]``.
    """
    err = _check_tensor("err", err, 1)
    src = _check_tensor("src", src, 1)
    run = _check_int("persist", persist, 1)
    try:
        shape = torch.broadcast_shapes(err.shape, src.shape)
    except RuntimeError:
        raise ValueError(f"src must broadcast to err's shape {tuple(err.shape)}, got {tuple(src.shape)}") from None
    if shape != err.shape:
        raise ValueError(f"src must broadcast to err's shape {tuple(err.shape)}, got {tuple(src.shape)}")
    t = err.shape[-1]
    if t == 0:
        raise ValueError("err must have at least one step (T >= 1), got T = 0")
    exceed = (err > src) | ~torch.isfinite(err)
    if run > t:
        return torch.zeros(shape[:-1], dtype=torch.int64, device=err.device)
    confirmed = exceed.unfold(-1, run, 1).all(dim=-1)  # (..., T − run + 1): a run starting at each index
    first = confirmed.to(torch.uint8).argmax(dim=-1)
    return torch.where(confirmed.any(dim=-1), first + 1, torch.zeros_like(first)).to(torch.int64)
