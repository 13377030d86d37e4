"""The rendering helper shared by the demos: matplotlib figures → RGB frames → a window or files.

With a display, frames go to a Taichi window: GGUI (``ti.ui.Window``) when the runtime arch is
``vulkan`` or ``cuda``, the CPU-drawn ``ti.GUI`` otherwise. Esc or closing the window quits, Space
pauses; the frame rate is shown in the window and printed at the end. Headless (``--headless``, or no
display found) the frames are written as PNG files plus ``animation.mp4`` (when the optional ``imageio``
and ``imageio-ffmpeg`` are installed: ``pip install -e ".[demos]"``) or else ``animation.gif``. Frames
are streamed to disk as they come (PNG and video), so a long headless run holds one frame in memory.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def parser(description: str, out: str) -> argparse.ArgumentParser:
    """The demos' common command line."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--headless", action="store_true", help="no window: write PNG frames and an MP4 or GIF")
    p.add_argument("--frames", type=int, default=64, help="number of frames (default 64)")
    p.add_argument("--out", default=out, help=f"output folder for --headless (default {out})")
    p.add_argument("--arch", default="cpu", choices=["auto", "cpu", "cuda", "vulkan"])
    return p


def figure_to_rgb(fig) -> np.ndarray:
    """Render a matplotlib figure to an ``(H, W, 3)`` uint8 array and close it."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def _video_writer():
    """``imageio.v2`` when it and an ffmpeg binary (``imageio-ffmpeg``) are usable, else ``None``."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None
    return imageio


class FrameSink:
    """Shows ``(H, W, 3)`` uint8 frames in a window, or stores them and writes them to ``out`` when headless.

    ``gui`` is the window once the first frame is shown (``ti.GUI`` or ``ti.ui.Window``; both offer
    ``is_pressed``, ``get_cursor_pos`` and ``running`` for the demos' interaction).
    """

    def __init__(self, title: str, out: str | Path, headless: bool) -> None:
        self.headless = headless or not os.environ.get("DISPLAY")
        self.out, self.title = Path(out), title
        self.paths: list[Path] = []  # headless: the PNG frames written so far
        self._video: Any = None  # headless: the open MP4 writer (imageio), if any
        self.gui = None
        self.ggui = False
        self.paused = False
        self.shown, self.fps = 0, 0.0
        self._start = self._last = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.shown == 0:
            self._start = now
        elif now > self._last:
            rate = 1.0 / (now - self._last)
            self.fps = rate if self.shown == 1 else 0.9 * self.fps + 0.1 * rate  # smoothed for display
        self._last, self.shown = now, self.shown + 1

    def _open(self, width: int, height: int) -> None:
        import taichi as ti

        from taichi_dp import current

        rt = current()
        if rt is not None and rt.arch in ("vulkan", "cuda"):
            try:
                self.gui, self.ggui = ti.ui.Window(self.title, res=(width, height), vsync=False), True
                return
            except Exception as e:  # GGUINotAvailableException, or no Vulkan driver: ti.GUI still works
                print(f"GGUI unavailable ({e}); using ti.GUI")
        self.gui = ti.GUI(self.title, res=(width, height))

    def show(self, rgb: np.ndarray) -> bool:
        """Display or store one frame; returns ``False`` when the user closed the window or pressed Esc."""
        self._tick()
        if self.headless:
            self._write(rgb)
            return True
        import taichi as ti

        if self.gui is None:
            self._open(rgb.shape[1], rgb.shape[0])
        gui, ggui = self.gui, self.ggui
        for e in gui.get_events(ti.ui.PRESS if ggui else ti.GUI.PRESS):
            if e.key in (ti.GUI.ESCAPE, ti.GUI.EXIT):
                return False
            if e.key == ti.GUI.SPACE:
                self.paused = not self.paused
        image = np.ascontiguousarray(np.flipud(rgb).transpose(1, 0, 2))  # Taichi windows are (x, y)
        label = f"{self.fps:5.1f} fps" + ("  (paused)" if self.paused else "")
        if ggui:
            gui.get_canvas().set_image(image)
            with gui.get_gui().sub_window("fps", 0.0, 0.0, 0.16, 0.06) as w:
                w.text(label)
        else:
            gui.set_image(image)
            gui.text(label, pos=(0.005, 0.995), font_size=16, color=0x000000)
        gui.show()
        return gui.running

    def hold(self, rgb: np.ndarray) -> bool:
        """:meth:`show` one frame, and keep showing it while the user has paused (Space), so that a demo
        driven by an optimiser's callback waits there; ``False`` when the window was closed."""
        while True:
            if not self.show(rgb):
                return False
            if not self.paused:
                return True
            time.sleep(0.05)

    def _write(self, rgb: np.ndarray) -> None:
        """Headless: write one frame as a PNG and append it to the MP4 (opened at the first frame)."""
        from PIL import Image

        if not self.paths:
            self.out.mkdir(parents=True, exist_ok=True)
            imageio = _video_writer()
            if imageio is not None:
                self._video = imageio.get_writer(self.out / "animation.mp4", fps=12, macro_block_size=2, quality=8)
        self.paths.append(self.out / f"frame_{len(self.paths):04d}.png")
        Image.fromarray(rgb).save(self.paths[-1])
        if self._video is not None:
            h, w = rgb.shape[:2]  # H.264 wants even sizes: pad with white
            self._video.append_data(np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255))

    def close(self) -> list[Path]:
        """Print the frame rate; headless, finish the video (``animation.mp4``, or ``animation.gif`` built
        from the PNG frames without imageio) and return the paths written."""
        if self.shown > 1:
            seconds = self._last - self._start
            print(f"{self.shown} frames in {seconds:.1f} s: {(self.shown - 1) / max(seconds, 1e-9):.2f} fps")
        if not self.headless or not self.paths:
            return []
        if self._video is not None:
            self._video.close()
            video = self.out / "animation.mp4"
        else:
            from PIL import Image

            video = self.out / "animation.gif"
            first, *rest = (Image.open(p) for p in self.paths)
            first.save(video, save_all=True, append_images=rest, duration=80, loop=0)
        print(f"wrote {len(self.paths)} frames to {self.out}/frame_*.png and {video}")
        return [*self.paths, video]


def volume_rgb(density, solid=None, absorption: float = 1.0, axis: int = 0, light: int | None = None) -> np.ndarray:
    """Emission–absorption ray marching of a 3D density volume seen from the high end of ``axis``: an
    ``(A, B, 3)`` float image in ``[0, 1]`` on black, ``A`` and ``B`` the other two axes in order. Each
    cell's opacity is ``1 − exp(−absorption·ρ)`` (``absorption``: optical depth per unit density per cell);
    its warm-white glow is dimmed by the smoke between it and a light at the high end of axis ``light``
    (``None``: unlit). ``solid`` (bool, same shape) cells are opaque and bluish grey, brighter where the
    surface is nearer the viewer."""
    tau = absorption * np.clip(np.asarray(density, dtype=np.float32), 0.0, None)  # optical depth of each cell
    glow = np.ones_like(tau)
    if light is not None:  # the optical depth between each cell and the light, that cell excluded
        glow = 0.3 + 0.7 * np.exp(-(np.flip(np.cumsum(np.flip(tau, light), light), light) - tau))
    colour = glow[..., None] * np.array([1.0, 0.85, 0.65], dtype=np.float32)
    alpha, colour = (np.flip(np.moveaxis(a, axis, 0), 0) for a in (1.0 - np.exp(-tau), colour))  # index 0: nearest
    if solid is not None and np.asarray(solid).any():
        solid = np.flip(np.moveaxis(np.asarray(solid, dtype=bool), axis, 0), 0)  # index 0 nearest the viewer
        hit = solid.argmax(0)[solid.any(0)]  # the depth of the first solid cell along each ray that meets one
        depth = np.arange(alpha.shape[0], dtype=np.float32)[:, None, None]
        grey = np.clip(0.9 - 0.65 * (depth - hit.min()) / max(hit.max() - hit.min(), 1), 0.2, 0.9)
        alpha = np.where(solid, 1.0, alpha)
        colour = np.where(solid[..., None], grey[..., None] * np.array([0.55, 0.7, 0.85], dtype=np.float32), colour)
    seen = np.cumprod(np.concatenate([np.ones_like(alpha[:1]), 1.0 - alpha[:-1]]), axis=0)  # transmittance
    return ((seen * alpha)[..., None] * colour).sum(0).clip(0.0, 1.0)
