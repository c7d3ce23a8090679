"""The integration tests: real anomalib, ultralytics and Lightning, in their own environment.

They need torch with a torchvision that imports beside it, which the main environment's CPU build of
torch 2.13.0 lacks; ``.ci/run`` builds ``.venv-integration`` from ``constraints-integration.txt``
and runs ``pytest -m integration tests/integration`` there with ``DEFECTFORGE_REQUIRE_INTEGRATION=1``:
then a missing package fails the run instead of skipping it. Elsewhere they skip.
"""

from __future__ import annotations

import importlib
import os
import socket

import numpy as np
import pytest

REQUIRED = os.environ.get("DEFECTFORGE_REQUIRE_INTEGRATION") == "1"


def require(module: str):
    """Import ``module``; skip the test without it, unless CI requires the integration environment."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install (torchvision beside the wrong torch) too
        if REQUIRED:
            pytest.fail(f"DEFECTFORGE_REQUIRE_INTEGRATION=1 but {module} does not import: {type(exc).__name__}: {exc}")
        pytest.skip(f"{module} does not import here ({type(exc).__name__}); the integration environment has it "
                    "(.ci/run builds .venv-integration)")


@pytest.fixture
def no_network(monkeypatch):
    """Refuse every connection except to this machine: a test that would download something fails."""
    refused = []
    connect = socket.socket.connect

    def local_only(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            refused.append(address)
            raise OSError(f"network access refused in the integration tests: {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    return refused


def write_surfaces(folder, count: int, size: int = 64, first_seed: int = 0) -> list:
    """``count`` procedural normal surfaces (metal) as PNGs in ``folder``."""
    from defectforge.io.images import write_image
    from defectforge.sources.procedural import surface

    paths = []
    for k in range(count):
        path = folder / f"n{k:03d}.png"
        write_image(path, np.ascontiguousarray(surface("metal", size, seed=first_seed + k)))
        paths.append(path)
    return paths
