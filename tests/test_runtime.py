"""taichi_dp.init: idempotent, records the chosen arch, never phones home."""

import os

import torch

import taichi_dp as tdp


def test_init_is_idempotent_and_reports_the_runtime():
    rt = tdp.init("cpu", "f64")
    assert tdp.init("cpu", "f64") is rt  # same arguments: nothing re-initialised
    assert tdp.current() is rt
    assert (rt.arch, rt.precision, rt.dtype, rt.device.type) == ("cpu", "f64", torch.float64, "cpu")
    assert os.environ["TI_SKIP_VERSION_CHECK"] == "ON"


def test_auto_arch_picks_an_available_arch_and_reinit_switches_precision():
    try:
        rt = tdp.init("auto", "f32")
        assert rt.arch in ("cuda", "vulkan", "cpu")
        if not torch.cuda.is_available():
            assert rt.arch != "cuda"
        assert rt.dtype == torch.float32
    finally:
        rt = tdp.init("cpu", "f64")
    assert rt.dtype == torch.float64
