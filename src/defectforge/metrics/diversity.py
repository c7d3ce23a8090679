"""LPIPS (Zhang et al., CVPR 2018, version 0.1) and IC-LPIPS, the intra-cluster diversity of
generated defects, with the three published protocols.

LPIPS here is written from the paper and the reference package's documented behaviour: inputs in
``[-1, 1]`` are shifted and scaled per channel (shift ``(-0.030, -0.088, -0.188)``, scale
``(0.458, 0.448, 0.450)``), five ReLU outputs of an ImageNet backbone (AlexNet: relu1..relu5;
VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) are unit-normalised over channels
(``f / (|f| + 1e-10)``), squared differences are weighted per channel by the non-negative
linear layers of ``lpips`` v0.1, averaged over space and summed over layers.

Because the weights are non-negative, the distance is a squared Euclidean distance between
per-image embeddings ``u = concat_l sqrt(w_l / (H_l W_l)) * f_l``, so each image passes the
backbone once and whole distance matrices are matrix products (the reference code runs the
network twice for every pair).

Weights: the backbone is a torchvision ImageNet state dict (``alexnet-owt-7be5be79.pth`` or
``vgg16-397923af.pth``) and the linear layers come from ``lpips``'s wheel (``weights/v0.1/``);
none ship offline, see :mod:`defectforge.metrics.weights`. The layer layout is read from the
state dict, so tiny stand-ins with the same layer indices load too (tests use them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .features import load_image
from .weights import resolve_weights

__all__ = [
    "LPIPS",
    "load_lpips",
    "IcLpipsProtocol",
    "IC_LPIPS_PROTOCOLS",
    "lpips_distance_matrix",
    "ic_lpips",
    "prepare_lpips_images",
]

#: LPIPS v0.1 input normalisation (lpips.ScalingLayer).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

#: torchvision ``features`` layouts: (kind, stride, padding) per index; taps are the ReLU indices
#: LPIPS reads. Channel counts and kernel sizes are read from the state dict.
_LAYOUTS: dict[str, dict[str, Any]] = {
    "alex": {
        "layers": ["conv:4:2", "relu", "pool", "conv:1:2", "relu", "pool", "conv:1:1", "relu",
                   "conv:1:1", "relu", "conv:1:1", "relu"],
        "taps": (1, 4, 7, 9, 11),
    },
    "vgg": {
        "layers": ["conv:1:1", "relu", "conv:1:1", "relu", "pool2",
                   "conv:1:1", "relu", "conv:1:1", "relu", "pool2",
                   "conv:1:1", "relu", "conv:1:1", "relu", "conv:1:1", "relu", "pool2",
                   "conv:1:1", "relu", "conv:1:1", "relu", "conv:1:1", "relu", "pool2",
                   "conv:1:1", "relu", "conv:1:1", "relu", "conv:1:1", "relu"],
        "taps": (3, 8, 15, 22, 29),
    },
}


def _build_features(net: str, state: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    layout = _LAYOUTS[net]
    modules: list[torch.nn.Module] = []
    for index, kind in enumerate(layout["layers"]):
        if kind.startswith("conv"):
            _, stride, padding = kind.split(":")
            key = f"features.{index}.weight"
            if key not in state:
                raise ValueError(f"the {net} backbone state dict has no {key!r}; expected a torchvision "
                                 f"{'alexnet' if net == 'alex' else 'vgg16'} state dict")
            out_ch, in_ch, kh, kw = state[key].shape
            modules.append(torch.nn.Conv2d(in_ch, out_ch, (kh, kw), stride=int(stride), padding=int(padding)))
        elif kind == "relu":
            modules.append(torch.nn.ReLU(inplace=False))
        elif kind == "pool":
            modules.append(torch.nn.MaxPool2d(3, 2))  # AlexNet
        else:
            modules.append(torch.nn.MaxPool2d(2, 2))  # VGG
    features = torch.nn.Sequential(*modules)
    wanted = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    features.load_state_dict(wanted, strict=True)
    return features


class LPIPS(torch.nn.Module):
    """LPIPS v0.1 distance with an AlexNet or VGG16 backbone.

    Parameters
    ----------
    net : {"alex", "vgg"}
    backbone_state : dict
        torchvision state dict (``features.*`` keys are used).
    linear_state : dict
        ``lpips`` v0.1 linear weights (``lin{k}.model.1.weight``, shape ``(1, C_k, 1, 1)``).
    """

    def __init__(self, net: str, backbone_state: dict[str, torch.Tensor], linear_state: dict[str, torch.Tensor]):
        super().__init__()
        if net not in _LAYOUTS:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.features = _build_features(net, backbone_state)
        self.taps = _LAYOUTS[net]["taps"]
        weights = []
        for k in range(len(self.taps)):
            key = f"lin{k}.model.1.weight"
            if key not in linear_state:
                raise ValueError(f"the LPIPS linear weights have no {key!r}; expected lpips' weights/v0.1/{net}.pth")
            w = linear_state[key].reshape(-1).float()
            if torch.any(w < 0):
                raise ValueError(f"LPIPS linear weights {key} have negative entries; v0.1 weights are non-negative")
            weights.append(w)
        self.lin = torch.nn.ParameterList([torch.nn.Parameter(w, requires_grad=False) for w in weights])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.eval()

    def layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised backbone outputs of ``x`` (``(N, 3, H, W)`` in ``[-1, 1]``)."""
        h = (x - self.shift) / self.scale
        outs = []
        for index, module in enumerate(self.features):
            h = module(h)
            if index in self.taps:
                outs.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            if index == self.taps[-1]:
                break
        for f, w in zip(outs, self.lin):
            if f.shape[1] != w.numel():
                raise ValueError(f"LPIPS linear layer has {w.numel()} channels but the backbone gives {f.shape[1]}")
        return outs

    @torch.no_grad()
    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """LPIPS between paired images, ``(N,)``: the reference formula, layer by layer."""
        total = 0
        for f0, f1, w in zip(self.layer_features(x0), self.layer_features(x1), self.lin):
            total = total + ((f0 - f1).pow(2) * w.view(1, -1, 1, 1)).sum(dim=1).mean(dim=(1, 2))
        return total

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` embeddings whose squared Euclidean distances are the LPIPS distances."""
        parts = []
        for f, w in zip(self.layer_features(x), self.lin):
            hw = f.shape[2] * f.shape[3]
            parts.append((f * (w / hw).sqrt().view(1, -1, 1, 1)).flatten(1))
        return torch.cat(parts, dim=1)


def _load_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable state dict for {what}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict for {what}")
    return state


def load_lpips(net: str, backbone: str | os.PathLike | None = None, linear: str | os.PathLike | None = None,
               device: str = "cpu") -> LPIPS:
    """LPIPS from local files (``lpips_{net}_backbone`` and ``lpips_{net}_linear``, see weights)."""
    if net not in _LAYOUTS:
        raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
    backbone_file = resolve_weights(f"lpips_{net}_backbone", backbone)
    linear_file = resolve_weights(f"lpips_{net}_linear", linear)
    model = LPIPS(net, _load_state(backbone_file, f"the LPIPS {net} backbone"),
                  _load_state(linear_file, f"the LPIPS {net} linear layers"))
    return model.to(device)


@dataclass(frozen=True)
class IcLpipsProtocol:
    """One published way of computing IC-LPIPS."""

    name: str
    net: str
    cap: int
    max_generated: int | None
    centres: str
    source: str

    def describe(self) -> str:
        limit = f", first {self.max_generated} generated" if self.max_generated else ""
        return (f"IC-LPIPS[{self.name}]: LPIPS-{self.net} v0.1 at 256x256, centres = {self.centres}, "
                f"at most {self.cap} images per cluster{limit} ({self.source})")


#: The three incompatible protocols of the field (methods.md, "Measuring synthesis").
IC_LPIPS_PROTOCOLS: dict[str, IcLpipsProtocol] = {
    "dfmgan": IcLpipsProtocol("dfmgan", "alex", 200, 1000,
                              "the real defect images used for training (first third of each defect type)",
                              "DFMGAN, Duan et al. AAAI 2023"),
    "anomalydiffusion": IcLpipsProtocol("anomalydiffusion", "vgg", 50, None,
                                        "first third of the real test anomalies of each defect type",
                                        "AnomalyDiffusion, Hu et al. AAAI 2024; DualAnoDiff"),
    # SeaS states VGG and 140 per cluster; the centre choice is taken from AnomalyDiffusion, which
    # SeaS compares against (an assumption, not stated in methods.md).
    "seas": IcLpipsProtocol("seas", "vgg", 140, None,
                            "first third of the real test anomalies of each defect type",
                            "SeaS, Dai et al. 2024"),
}

#: Side the images are resized to before LPIPS (DFMGAN and AnomalyDiffusion generate 256x256).
LPIPS_IMAGE_SIZE = 256


def prepare_lpips_images(images: torch.Tensor, size: int = LPIPS_IMAGE_SIZE) -> torch.Tensor:
    """uint8 (or 0..255 float) ``(N, 3, H, W)`` to ``[-1, 1]`` at ``size`` (bilinear, antialiased)."""
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x / 127.5 - 1.0


ImageSource = Sequence[str | os.PathLike] | torch.Tensor


def _batch_loader(images: ImageSource, size: int) -> tuple[int, Callable[[Sequence[int]], torch.Tensor]]:
    if isinstance(images, torch.Tensor):
        return images.shape[0], lambda idx: prepare_lpips_images(images[list(idx)], size)
    paths = [Path(p) for p in images]

    def load(idx: Sequence[int]) -> torch.Tensor:
        return torch.cat([prepare_lpips_images(load_image(paths[i])[None], size) for i in idx])

    return len(paths), load


def _embed_all(model: LPIPS, load, indices: Sequence[int], batch_size: int, device) -> torch.Tensor:
    chunks = [model.embed(load(indices[i:i + batch_size]).to(device)).float().cpu()
              for i in range(0, len(indices), batch_size)]
    return torch.cat(chunks)


def _sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # |a|^2 + |b|^2 - 2 a.b in float32 cancels badly for close images; centring both sets on a's
    # mean (distances are translation invariant) shrinks the norms and the rounding error.
    centre = a.mean(dim=0, keepdim=True)
    a, b = a - centre, b - centre
    aa = a.double().pow(2).sum(1)[:, None]
    bb = b.double().pow(2).sum(1)[None, :]
    return (aa + bb - 2.0 * (a @ b.T).double()).clamp_min(0.0)


def lpips_distance_matrix(model: LPIPS, images_a: ImageSource, images_b: ImageSource | None = None, *,
                          size: int = LPIPS_IMAGE_SIZE, batch_size: int = 8, max_memory_gb: float = 2.0,
                          progress: bool = False, desc: str = "LPIPS") -> np.ndarray:
    """All LPIPS distances between two image sets (or within one), ``(len(a), len(b))``.

    Embeddings of ``a`` are held in blocks that fit ``max_memory_gb``; ``b`` is streamed past each
    block, so memory stays bounded (VGG16 at 256x256 is about 32 MB per image).
    """
    n_a, load_a = _batch_loader(images_a, size)
    same = images_b is None
    n_b, load_b = (n_a, load_a) if same else _batch_loader(images_b, size)
    device = next(model.parameters()).device
    if n_a == 0 or n_b == 0:
        return np.zeros((n_a, n_b))
    probe = model.embed(load_a([0]).to(device))
    bytes_per_image = probe.shape[1] * 4
    block = max(1, min(n_a, int(max_memory_gb * 2**30 / 2 // bytes_per_image)))
    out = np.zeros((n_a, n_b))
    blocks = range(0, n_a, block)
    with tqdm(total=len(blocks) * n_b, desc=desc, unit="img", disable=not progress) as bar:
        for start in blocks:
            rows = list(range(start, min(start + block, n_a)))
            emb_a = _embed_all(model, load_a, rows, batch_size, device)
            if same and len(rows) == n_a:
                out[:, :] = _sq_distances(emb_a, emb_a).numpy()
                bar.update(n_b)
                continue
            for j in range(0, n_b, batch_size):
                cols = list(range(j, min(j + batch_size, n_b)))
                emb_b = _embed_all(model, load_b, cols, batch_size, device)
                out[start:start + len(rows), j:j + len(cols)] = _sq_distances(emb_a, emb_b).numpy()
                bar.update(len(cols))
    if same:
        np.fill_diagonal(out, 0.0)
        out = (out + out.T) / 2  # exact symmetry despite rounding
    return out


def ic_lpips(model: LPIPS, generated: ImageSource, centres: ImageSource, *, cap: int,
             max_generated: int | None = None, size: int = LPIPS_IMAGE_SIZE, batch_size: int = 8,
             max_memory_gb: float = 2.0, progress: bool = False) -> dict[str, Any]:
    """Intra-cluster LPIPS: assign each generated image to its nearest centre, then average the
    mean pairwise LPIPS within each cluster.

    Generated images are taken in order (the first ``max_generated``), and so are the first
    ``cap`` members of each cluster. Clusters with fewer than two members have no pairs and are
    left out of the average (their count is reported).

    Returns
    -------
    dict
        ``ic_lpips`` (nan when no cluster has two members), ``clusters_used``, ``clusters``,
        ``n_generated``, ``cluster_sizes``.
    """
    n_gen = len(generated)
    if max_generated is not None:
        n_gen = min(n_gen, int(max_generated))
        generated = generated[:n_gen]
    if len(centres) == 0:
        raise ValueError("IC-LPIPS needs at least one real centre image")
    if cap < 2:
        raise ValueError(f"cap must be >= 2, got {cap}")
    to_centres = lpips_distance_matrix(model, generated, centres, size=size, batch_size=batch_size,
                                       max_memory_gb=max_memory_gb, progress=progress, desc="IC-LPIPS assign")
    nearest = to_centres.argmin(axis=1) if n_gen else np.zeros(0, dtype=int)
    per_cluster = []
    sizes = []
    for c in range(len(centres)):
        members = np.flatnonzero(nearest == c)
        sizes.append(int(members.size))
        members = members[:cap]
        if members.size < 2:
            continue
        subset = generated[members.tolist()] if isinstance(generated, torch.Tensor) else [generated[i] for i in members]
        dist = lpips_distance_matrix(model, subset, size=size, batch_size=batch_size,
                                     max_memory_gb=max_memory_gb, desc="IC-LPIPS pairs")
        upper = dist[np.triu_indices(members.size, k=1)]
        per_cluster.append(float(upper.mean()))
    value = float(np.mean(per_cluster)) if per_cluster else math.nan
    return {"ic_lpips": value, "clusters_used": len(per_cluster), "clusters": len(centres),
            "n_generated": int(n_gen), "cluster_sizes": sizes}
