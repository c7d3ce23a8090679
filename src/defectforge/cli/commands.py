"""Imports every command module so that it registers on the app."""

from . import bench, synthesis  # noqa: F401
