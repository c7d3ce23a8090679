"""Imports every command module so that it registers on the app."""

from . import bench, benchmark, evaluate, synthesis, train  # noqa: F401
