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


def tiny_defect_bank():
    """A bank of 3 real-looking defects (2 types) drawn in code, for methods that need one."""
    from defectforge.sources.defects import DefectBank

    images, masks = [], []
    for k in range(3):
        g = np.random.default_rng(k)
        image = (110 + g.normal(0, 6, (48, 48, 3))).clip(0, 255).astype(np.uint8)
        mask = np.zeros((48, 48), np.uint8)
        if k < 2:  # dark blob
            yy, xx = np.mgrid[:48, :48]
            mask[(yy - 24) ** 2 / 64 + (xx - 20 - 4 * k) ** 2 / 25 <= 1] = 255
            image[mask > 0] = (image[mask > 0] * 0.3).astype(np.uint8)
        else:  # bright scratch
            mask[10:38, 22:25] = 255
            image[mask > 0] = 230
        images.append(image)
        masks.append(mask)
    return DefectBank.from_arrays(images, masks, ["blob", "blob", "scratch"], names=["b0", "b1", "s0"])
