"""The rendering helper shared by the demos: matplotlib figures → RGB frames → a window or files.

With a display, frames go to a Taichi ``ti.GUI`` window (Esc or closing the window quits, Space
pauses). Headless (``--headless``, or no display found) they are written as PNG files plus an animated
GIF to ``--out`` and the paths are printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def parser(description: str, out: str) -> argparse.ArgumentParser:
    """The demos' common command line."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--headless", action="store_true", help="no window: write PNG frames and a GIF")
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


class FrameSink:
    """Shows frames in a window, or writes them to ``out`` when headless."""

    def __init__(self, title: str, out: str | Path, headless: bool) -> None:
        self.headless = headless or not os.environ.get("DISPLAY")
        self.out, self.title = Path(out), title
        self.frames: list[np.ndarray] = []
        self.gui = None
        self.paused = False

    def show(self, rgb: np.ndarray) -> bool:
        """Display or store one frame; returns ``False`` when the user closed the window."""
        if self.headless:
            self.frames.append(rgb)
            return True
        import taichi as ti

        if self.gui is None:
            self.gui = ti.GUI(self.title, res=(rgb.shape[1], rgb.shape[0]))
        for e in self.gui.get_events(ti.GUI.PRESS):
            if e.key in (ti.GUI.ESCAPE, ti.GUI.EXIT):
                return False
            if e.key == ti.GUI.SPACE:
                self.paused = not self.paused
        self.gui.set_image(np.ascontiguousarray(np.flipud(rgb).transpose(1, 0, 2)))  # ti.GUI is (x, y)
        self.gui.show()
        return self.gui.running

    def close(self) -> list[Path]:
        """Write the stored frames (PNG each, plus ``animation.gif``) and return the paths."""
        if not self.headless or not self.frames:
            return []
        from PIL import Image

        self.out.mkdir(parents=True, exist_ok=True)
        images = [Image.fromarray(f) for f in self.frames]
        paths = []
        for i, img in enumerate(images):
            paths.append(self.out / f"frame_{i:04d}.png")
            img.save(paths[-1])
        gif = self.out / "animation.gif"
        images[0].save(gif, save_all=True, append_images=images[1:], duration=80, loop=0)
        print(f"wrote {len(images)} frames to {self.out}/frame_*.png and {gif}")
        return [*paths, gif]
