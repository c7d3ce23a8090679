import json

import torch
from torch.utils.data import DataLoader

import defectforge
from defectforge.io.online import SyntheticAnomalyDataset


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
