import json

import torch
from torch.utils.data import DataLoader

import defectforge
from defectforge.pipelines.online import SyntheticAnomalyDataset


def test_dataloader_workers_match_batched_call(surface_batch):
    normal = [img for img in surface_batch]
    synth = defectforge.create("draem", anomaly_probability=0.5)
    data = SyntheticAnomalyDataset(normal, synth, seed=4)
    data.set_epoch(2)
    batched = synth(surface_batch, seed=4, indices=[8, 9, 10, 11])
    for workers in (0, 2):
        loaded = next(iter(DataLoader(data, batch_size=4, num_workers=workers)))
        assert torch.equal(loaded["image"], batched.images)
        assert torch.equal(loaded["mask"], batched.masks)
        assert [json.loads(p) for p in loaded["params"]] == batched.params


def test_epochs_draw_new_anomalies(surface_batch):
    data = SyntheticAnomalyDataset([img for img in surface_batch], "cutpaste", seed=0)
    first = data[0]["mask"]
    data.set_epoch(1)
    assert not torch.equal(first, data[0]["mask"])


def test_online_foreground_donors_and_extras():
    import torch

    from defectforge.pipelines.online import SyntheticAnomalyDataset

    g = torch.Generator().manual_seed(0)
    items = [(torch.rand(3, 48, 48, generator=g) * 40).to(torch.uint8) for _ in range(4)]
    for img in items:
        img[:, 8:40, 8:40] += 150
    data = SyntheticAnomalyDataset(items, "nsa", seed=1, foreground="otsu")
    item = data[2]
    params = __import__("json").loads(item["params"])
    assert all("donor_index" in q for q in params["patches"])
    assert item["soft_mask"].shape == (1, 48, 48)
    fg = torch.zeros(1, 48, 48)
    fg[:, 8:40, 8:40] = 1
    for q in params["patches"]:
        ty, tx = q["target"]
        dh, dw = q["placed_size"]
        assert fg[0, ty:ty + dh, tx:tx + dw].mean() >= 0.25
    again = data[2]
    assert torch.equal(again["image"], item["image"])
