"""Imports every command module so that it registers on the app."""

from . import bench, evaluate, synthesis  # noqa: F401
