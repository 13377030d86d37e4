"""Ready-made problems (presets, initial conditions, exact solutions)."""

from .burgers import Scene, cole_hopf, pbdl_burgers, random_sines, sine_initial

__all__ = ["Scene", "cole_hopf", "pbdl_burgers", "random_sines", "sine_initial"]
