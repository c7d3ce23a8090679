import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def rgb_batch():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(4, 3, 64, 64, generator=g) * 255).to(torch.uint8)


@pytest.fixture
def surface_batch():
    from defectforge.sources.procedural import surface

    imgs = [surface(k, 96, seed=i) for i, k in enumerate(["metal", "fabric", "wood", "tiles"])]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
