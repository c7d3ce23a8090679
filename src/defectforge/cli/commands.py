"""Imports every command module so that it registers on the app."""

from . import bench, benchmark, evaluate, export, importer, synthesis, train, ui  # noqa: F401
