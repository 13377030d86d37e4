"""Demos: ``python -m demos.NAME [--headless --frames N --out DIR]`` (see README)."""
