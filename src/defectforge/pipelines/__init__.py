"""Pipelines: the dataset generator, the online ``Dataset`` and preview grids.

They sit above the synthesizers and sources and below the detectors and the CLI; file
handling (reading images, finding inputs, writing PNGs) stays in :mod:`defectforge.io`.
"""
