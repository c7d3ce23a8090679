"""Detectors trained on feature-level synthetic anomalies (the distribution-hypothesis family).

Each trains small networks on the frozen backbone's cached features of the normal training
images, with anomalies made in feature space by its registered synthesizer
(:mod:`defectforge.features`), so a training step costs no backbone pass (except GLASS's
image-level LAS branch, see below). Shared by all of them:

- backbone features standardised per channel (training mean and std), then aggregated over a
  3x3 neighbourhood (average, stride 1), the ``patchsize 3`` of SimpleNet/PatchCore/GLASS/PBAS;
- per step ``batch_size`` normal feature maps drawn by a generator seeded with ``seed``;
  synthetic sample ``j`` of step ``s`` is sample ``s * batch_size + j`` of the synthesizer's run
  ``seed`` (reproducible, new anomalies every step);
- score maps: one score per feature cell, upsampled bilinearly to the image and smoothed with a
  Gaussian of sigma 4 (as every detector of the benchmark); image score = maximum of the map.

The detectors (official architecture and loss, read from the sources named in
:mod:`defectforge.features`):

``simplenet``
    ``Projection`` adaptor (one Linear C->C) and ``Discriminator`` (Linear C->1024, BatchNorm1d,
    LeakyReLU 0.2, Linear 1024->1 without bias, Xavier-normal init); loss
    ``mean(relu(m - D(true))) + mean(relu(m + D(fake)))``, ``m = 0.5`` (the paper and the
    ``dsc_margin`` comment of ``simplenet.py``; the code default is 0.8); Adam 2e-4 with weight
    decay 1e-5 for the discriminator, AdamW 1e-4 for the adaptor (``lr * 0.1``); score ``-D``.
``supersimplenet``
    1x1 conv adaptor; segmentation head 1x1 conv C->1024, BatchNorm, LeakyReLU 0.2, 1x1 conv
    ->1; classification head 5x5 conv (C+1 -> 128), BatchNorm, ReLU, max and mean of it and of
    the map -> Linear(258 -> 1); each batch is the normal maps plus a Perlin-noised copy; loss
    focal (gamma 4) + truncated L1 (margin 0.5) on the map and focal on the score; AdamW 1e-4
    (adaptor) and 2e-4 (heads, weight decay 1e-5); score = the map (the classification head is
    trained but the image score is the map's maximum, as for every detector here).
``glass``
    SimpleNet's adaptor and discriminator with a sigmoid; loss BCE(D(normal), 0) + BCE(D(GAS
    features), 1) + focal loss (gamma 2) on the hardest 50% of the cells of image-level
    ``glass_las`` anomalies (``p = 0.5``); score = D.
``pbas``
    adaptor and sigmoid discriminator; centre bank (:class:`~defectforge.features.CentreBank`);
    loss = mean distance to the nearest centre (compactness) + BCE(normal, 0) + BCE(pushed, 1);
    score = D.
``uniad``
    a feature reconstructor in UniAD's layout (input projection, transformer encoder, decoder
    with learned queries, output projection) trained with MSE to rebuild the clean features
    from jittered ones; score = per-cell L2 reconstruction error.

Deliberate differences, for a shared 2-core CPU and the benchmark's backbones: learning rates
are 1e-3 for every trained part (SimpleNet: 2e-4 discriminator, 1e-4 adaptor; SuperSimpleNet: 2e-4
heads, 1e-4 adaptor; UniAD: 1e-4), because the benchmark trains a few hundred steps where the
papers train thousands (SimpleNet: 40 x 4 epochs, batch 8; at the official rates its loss had
not left its starting plateau after 60 steps on magnetic tile); the backbone is
the benchmark's (MobileNetV2 stride-8 + stride-16 maps, 128 channels, by default; the papers
use WideResNet50 layer2 + layer3, 1536 channels after pooling, see ``load_backbone``); training
is a few hundred steps instead of tens of epochs (``steps`` x ``batch_size``); SuperSimpleNet's
features are not upsampled to twice the layer-2 resolution; GLASS's LAS branch uses a pool of
``las_pool`` synthetic images whose backbone features are computed once per run (GLASS makes a
new LAS image per normal image per epoch); GAS ascends the discriminator in eval mode (its
batch-norm statistics frozen during the ascent); UniAD's transformer is smaller (hidden 128, 2 +
2 layers, 4 heads; UniAD: 256, 4 + 4, 8), has no neighbour-masked attention, and works on the
stride-8 maps average-pooled 2x2 (stride 16, UniAD's token stride: 16x16 tokens at 256 px).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..core.seeding import torch_generator
from ..features import CentreBank, nearest_centres
from .backbones import Backbone
from .training import TrainingRecord, maps_from_cells, scoring_features

__all__ = ["FEATURE_DETECTORS", "FeatureDetector", "SimpleNetDetector", "SuperSimpleNetDetector", "GlassDetector",
           "PBASDetector", "UniADDetector", "make_feature_detector"]


def _init_xavier(module: nn.Module) -> None:
    """Xavier-normal weights of Linear/Conv layers (``init_weight`` of SimpleNet, GLASS, PBAS)."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_normal_(module.weight)


class _Discriminator(nn.Module):
    """SimpleNet's discriminator on ``(N, C)`` rows: Linear, BatchNorm1d, LeakyReLU(0.2), Linear."""

    def __init__(self, channels: int, hidden: int = 1024, sigmoid: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
        self.tail = nn.Linear(hidden, 1, bias=False)
        self.sigmoid = sigmoid
        self.apply(_init_xavier)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        out = self.tail(self.body(rows))
        return torch.sigmoid(out) if self.sigmoid else out


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _grid(rows: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    return rows.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def binary_focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Focal loss on probabilities (Lin et al., ICCV 2017), elementwise."""
    prob = prob.clamp(1e-6, 1 - 1e-6)
    bce = -(target * prob.log() + (1 - target) * (1 - prob).log())
    p_t = prob * target + (1 - prob) * (1 - target)
    return (1 - p_t) ** gamma * bce


class FeatureDetector:
    """Shared training loop and scoring of the feature-level detectors (module docstring).

    Subclasses define ``method`` (default synthesizer), ``build(channels)``, ``loss(x, step,
    synth)`` and ``cell_scores(x)``.
    """

    name = ""
    method = ""
    uses_features = True
    level = "feature"

    def __init__(self, backbone: Backbone, neighbourhood: int = 3, device: str | torch.device | None = None):
        self.backbone = backbone
        self.neighbourhood = int(neighbourhood)
        self.device = torch.device(device) if device is not None else backbone.device
        self.mean = self.std = None
        self.modules: nn.ModuleDict | None = None
        self.synthesis_seconds = 0.0

    # --- to implement -------------------------------------------------------------------
    def build(self, channels: int) -> nn.ModuleDict:
        raise NotImplementedError

    def optimisers(self) -> list[torch.optim.Optimizer]:
        raise NotImplementedError

    def loss(self, x: torch.Tensor, step: int, seed: int, synth) -> torch.Tensor:
        raise NotImplementedError

    def cell_scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, h, w)`` anomaly scores of prepared features (higher = more anomalous)."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """Standardise per channel, then average over the 3x3 neighbourhood."""
        x = (features.to(self.device).float() - self.mean) / self.std
        k = self.neighbourhood
        return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False) if k > 1 else x

    def synthesize(self, synth, x: torch.Tensor, step: int, seed: int, **context):
        """The synthesizer's output for the batch of step ``step`` (timed)."""
        start = time.perf_counter()
        ids = [step * x.shape[0] + j for j in range(x.shape[0])]
        out = synth(x, seed=seed, indices=ids, **context)
        self.synthesis_seconds += time.perf_counter() - start
        return out

    def fit(self, images: torch.Tensor, synthesizer=None, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features: torch.Tensor | None = None, checkpoint_every: int = 0, evaluate=None) -> TrainingRecord:
        """Train for ``steps`` steps of ``batch_size`` normal feature maps plus their synthetic twins.

        ``synthesizer`` is a feature-level registry name or synthesizer (default: the detector's
        own method); ``features`` the cached backbone features of ``images``.
        """
        import defectforge

        start = time.perf_counter()
        record = TrainingRecord(steps=int(steps), batch_size=int(batch_size))
        if features is None:
            t = time.perf_counter()
            features = self.backbone.extract(images)
            record.feature_seconds += time.perf_counter() - t
        synth = synthesizer or self.method
        if isinstance(synth, str):
            info = defectforge.method_info(synth)
            if info.level != "feature":
                raise ValueError(f"detector {self.name!r} trains on feature-level methods; {synth!r} is "
                                 f"{info.level}-level (feature methods: {', '.join(defectforge.list_methods(level='feature'))})")
            synth = defectforge.create(synth)
        flat = features.float().transpose(0, 1).reshape(features.shape[1], -1)
        self.mean = flat.mean(1).view(1, -1, 1, 1).to(self.device)
        self.std = flat.std(1).clamp_min(1e-6).view(1, -1, 1, 1).to(self.device)
        self.synthesis_seconds = 0.0
        with torch.random.fork_rng(devices=[]):  # seeded initialisation and dropout, global state untouched
            torch.manual_seed(int(seed))
            self.modules = self.build(features.shape[1]).to(self.device)
            self.setup(images, features, seed, record)
            self._train(features, int(steps), int(batch_size), int(seed), synth, record, checkpoint_every, evaluate)
        return record.finish(start, self.synthesis_seconds)

    def _train(self, features, steps, batch_size, seed, synth, record, checkpoint_every, evaluate) -> None:
        optimisers = self.optimisers()
        gen = torch_generator(seed)
        for step in range(steps):
            idx = torch.randint(features.shape[0], (batch_size,), generator=gen)
            x = self.prepare(features[idx])
            self.modules.train()
            loss = self.loss(x, step, seed, synth)
            record.optimise(loss, optimisers, step, evaluate, checkpoint_every, self)

    def setup(self, images: torch.Tensor, features: torch.Tensor, seed: int, record: TrainingRecord) -> None:
        """Anything a detector prepares before training (GLASS: its LAS pool)."""

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                   size: int | None = None, chunk: int = 32) -> torch.Tensor:
        """``(N, size, size)`` anomaly maps, upsampled and smoothed."""
        if self.modules is None:
            raise RuntimeError("call fit() before score_maps()")
        features, size = scoring_features(self.backbone, images, features, size)
        self.modules.eval()
        return maps_from_cells(features, size, lambda f: self.cell_scores(self.prepare(f)), chunk)


class SimpleNetDetector(FeatureDetector):
    """SimpleNet: adaptor + discriminator, hinge loss against Gaussian-noised features.

    Examples
    --------
    >>> import torch
    >>> from defectforge.detectors import load_backbone
    >>> det = SimpleNetDetector(load_backbone("tiny"))
    >>> train = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    >>> record = det.fit(train, steps=2, batch_size=2, seed=0)
    >>> tuple(det.score_maps(train[:2]).shape)
    (2, 64, 64)
    """

    name = "simplenet"
    method = "simplenet"

    def __init__(self, backbone: Backbone, margin: float = 0.5, hidden: int = 1024, lr: float = 1e-3,
                 adaptor_lr: float = 1e-3, **kwargs):
        super().__init__(backbone, **kwargs)
        self.margin, self.hidden, self.lr, self.adaptor_lr = float(margin), int(hidden), float(lr), float(adaptor_lr)

    def build(self, channels: int) -> nn.ModuleDict:
        adaptor = nn.Linear(channels, channels)
        _init_xavier(adaptor)
        return nn.ModuleDict({"adaptor": adaptor, "discriminator": _Discriminator(channels, self.hidden)})

    def optimisers(self):
        return [torch.optim.AdamW(self.modules["adaptor"].parameters(), lr=self.adaptor_lr),
                torch.optim.Adam(self.modules["discriminator"].parameters(), lr=self.lr, weight_decay=1e-5)]

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return _grid(self.modules["adaptor"](_rows(x)), b, h, w)

    def loss(self, x, step, seed, synth):
        true = self.adapt(x)
        fake = self.synthesize(synth, true.detach(), step, seed).features
        fake = true + (fake - true.detach())  # the noise on the adapted features, gradient through the adaptor
        scores = self.modules["discriminator"](torch.cat([_rows(true), _rows(fake)]))
        n = scores.shape[0] // 2
        return F.relu(self.margin - scores[:n]).mean() + F.relu(self.margin + scores[n:]).mean()

    def cell_scores(self, x):
        b, _, h, w = x.shape
        return _grid(-self.modules["discriminator"](_rows(self.adapt(x))), b, h, w)


class SuperSimpleNetDetector(FeatureDetector):
    """SuperSimpleNet: adaptor, segmentation and classification heads, Perlin-masked noise."""

    name = "supersimplenet"
    method = "supersimplenet"

    def __init__(self, backbone: Backbone, hidden: int = 1024, seg_lr: float = 1e-3, adaptor_lr: float = 1e-3,
                 margin: float = 0.5, gamma: float = 4.0, **kwargs):
        super().__init__(backbone, **kwargs)
        self.hidden, self.seg_lr, self.adaptor_lr = int(hidden), float(seg_lr), float(adaptor_lr)
        self.margin, self.gamma = float(margin), float(gamma)

    def build(self, channels: int) -> nn.ModuleDict:
        mods = nn.ModuleDict({
            "adaptor": nn.Conv2d(channels, channels, 1),
            "seg": nn.Sequential(nn.Conv2d(channels, self.hidden, 1), nn.BatchNorm2d(self.hidden), nn.LeakyReLU(0.2),
                                 nn.Conv2d(self.hidden, 1, 1, bias=False)),
            "dec": nn.Sequential(nn.Conv2d(channels + 1, 128, 5, padding=2), nn.BatchNorm2d(128), nn.ReLU()),
            "fc": nn.Linear(128 * 2 + 2, 1),
        })
        mods.apply(_init_xavier)
        return mods

    def optimisers(self):
        m = self.modules
        return [torch.optim.AdamW([
            {"params": m["adaptor"].parameters(), "lr": self.adaptor_lr},
            {"params": m["seg"].parameters(), "lr": self.seg_lr, "weight_decay": 1e-5},
            {"params": list(m["dec"].parameters()) + list(m["fc"].parameters()), "lr": self.seg_lr,
             "weight_decay": 1e-5}])]

    def heads(self, adapted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg = self.modules["seg"](adapted)
        dec = self.modules["dec"](torch.cat([adapted, seg], dim=1))
        pooled = torch.cat([dec.amax((2, 3)), dec.mean((2, 3)), seg.amax((2, 3)), seg.mean((2, 3))], dim=1)
        return seg, self.modules["fc"](pooled)[:, 0]

    def loss(self, x, step, seed, synth):
        adapted = self.modules["adaptor"](x)
        out = self.synthesize(synth, adapted.detach(), step, seed)
        noised = adapted + (out.features - adapted.detach())
        seg, score = self.heads(torch.cat([adapted, noised]))
        mask = torch.cat([torch.zeros_like(out.masks), out.masks])
        label = torch.cat([torch.zeros_like(out.labels), out.labels]).float()
        focal = binary_focal_loss(torch.sigmoid(seg), mask, self.gamma).mean()
        normal, anomalous = seg[mask == 0], seg[mask > 0]
        trunc_l1 = F.relu(normal + self.margin).mean()
        if anomalous.numel():
            trunc_l1 = trunc_l1 + F.relu(self.margin - anomalous).mean()
        return focal + trunc_l1 + binary_focal_loss(torch.sigmoid(score), label, self.gamma).mean()

    def cell_scores(self, x):
        return self.modules["seg"](self.modules["adaptor"](x))


class _SigmoidDiscriminatorDetector(SimpleNetDetector):
    """Adaptor + SimpleNet discriminator with a sigmoid (GLASS, PBAS)."""

    def build(self, channels: int) -> nn.ModuleDict:
        adaptor = nn.Linear(channels, channels)
        _init_xavier(adaptor)
        return nn.ModuleDict({"adaptor": adaptor, "discriminator": _Discriminator(channels, self.hidden, sigmoid=True)})

    def cell_scores(self, x):
        b, _, h, w = x.shape
        return _grid(self.modules["discriminator"](_rows(self.adapt(x))), b, h, w)


class GlassDetector(_SigmoidDiscriminatorDetector):
    """GLASS: GAS (feature level) + LAS (image level, ``glass_las``) branches on one discriminator."""

    name = "glass"
    method = "glass_gas"

    def __init__(self, backbone: Backbone, las_pool: int = 128, hard_fraction: float = 0.5, **kwargs):
        super().__init__(backbone, **kwargs)
        self.las_pool = int(las_pool)
        self.hard_fraction = float(hard_fraction)
        self.pool_features = self.pool_masks = None

    def setup(self, images, features, seed, record):
        """The LAS pool: ``las_pool`` ``glass_las`` anomalies of training images, through the backbone once."""
        if self.las_pool <= 0:
            return
        from .training import resolve_synthesizer

        gen = torch_generator(int(seed) + 1)
        idx = torch.randint(images.shape[0], (self.las_pool,), generator=gen)
        t = time.perf_counter()
        out = resolve_synthesizer("glass_las")(images[idx], seed=int(seed), indices=range(self.las_pool))
        self.synthesis_seconds += time.perf_counter() - t
        t = time.perf_counter()
        self.pool_features = self.backbone.extract(out.images)
        record.feature_seconds += time.perf_counter() - t
        grid = features.shape[-2:]
        self.pool_masks = (F.adaptive_avg_pool2d(out.masks.float(), grid) >= 0.5).float()
        self._pool_gen = torch_generator(int(seed) + 2)

    def loss(self, x, step, seed, synth):
        d = self.modules["discriminator"]
        true = self.adapt(x)
        d.eval()  # GAS ascends a frozen-statistics discriminator (module docstring)
        gas = self.synthesize(synth, true.detach(), step, seed, discriminator=d).features
        d.train()
        scores = d(torch.cat([_rows(true), _rows(gas)]))
        n = scores.shape[0] // 2
        loss = F.binary_cross_entropy(scores[:n], torch.zeros_like(scores[:n])) + \
            F.binary_cross_entropy(scores[n:], torch.ones_like(scores[n:]))
        if self.pool_features is not None:
            pick = torch.randint(self.pool_features.shape[0], (x.shape[0],), generator=self._pool_gen)
            las = self.adapt(self.prepare(self.pool_features[pick]))
            target = _rows(self.pool_masks[pick].to(self.device))
            prob = d(_rows(las))
            focal = binary_focal_loss(prob, target, 2.0).reshape(-1)
            dist = ((prob - target) ** 2).reshape(-1)
            hard = dist >= torch.quantile(dist.detach(), self.hard_fraction)
            loss = loss + focal[hard].mean()
        return loss


class PBASDetector(_SigmoidDiscriminatorDetector):
    """PBAS: centre bank, compactness loss and BCE against features pushed from the centres."""

    name = "pbas"
    method = "pbas"

    def setup(self, images, features, seed, record):
        self.bank = CentreBank(momentum=0.9)

    def loss(self, x, step, seed, synth):
        true = self.adapt(x)
        centres = self.bank.update(true)
        rows = _rows(true)
        b, _, h, w = true.shape
        with torch.no_grad():  # one search serves the compactness loss and the push (both need c*)
            nearest = nearest_centres(rows.detach(), centres)
        compact = (rows - nearest).norm(dim=1).mean()
        fake = self.synthesize(synth, true.detach(), step, seed, centres=centres, nearest=_grid(nearest, b, h, w)).features
        fake = true + (fake - true.detach())  # PBAS detaches only the push
        scores = self.modules["discriminator"](torch.cat([rows, _rows(fake)]))
        n = scores.shape[0] // 2
        return compact + F.binary_cross_entropy(scores[:n], torch.zeros_like(scores[:n])) + \
            F.binary_cross_entropy(scores[n:], torch.ones_like(scores[n:]))


class _Reconstructor(nn.Module):
    """UniAD's layout: input projection, transformer encoder, decoder with learned queries, output projection."""

    def __init__(self, channels: int, cells: int, hidden: int, layers: int, heads: int):
        super().__init__()
        self.input_proj = nn.Linear(channels, hidden)
        self.pos = nn.Parameter(torch.randn(1, cells, hidden) * 0.02)
        self.query = nn.Parameter(torch.randn(1, cells, hidden) * 0.02)
        self.transformer = nn.Transformer(hidden, heads, layers, layers, dim_feedforward=hidden * 4, dropout=0.1,
                                          batch_first=True)
        self.output_proj = nn.Linear(hidden, channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        src = self.input_proj(tokens) + self.pos
        tgt = self.query.expand(tokens.shape[0], -1, -1) + self.pos
        return self.output_proj(self.transformer(src, tgt))


class UniADDetector(FeatureDetector):
    """UniAD: reconstruct clean features from jittered ones; score = reconstruction error."""

    name = "uniad"
    method = "uniad_jitter"

    def __init__(self, backbone: Backbone, hidden: int = 128, layers: int = 2, heads: int = 4, lr: float = 1e-3,
                 pool: int = 2, **kwargs):
        super().__init__(backbone, **kwargs)
        self.hidden, self.layers, self.heads, self.lr = int(hidden), int(layers), int(heads), float(lr)
        self.pool = int(pool)

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """As every detector, then average-pooled ``pool x pool``: UniAD's tokens are stride-16
        features (14x14 at 224 px); the benchmark's maps are stride 8."""
        x = super().prepare(features)
        return F.avg_pool2d(x, self.pool, ceil_mode=True) if self.pool > 1 else x

    def build(self, channels: int) -> nn.ModuleDict:
        return nn.ModuleDict({})

    def setup(self, images, features, seed, record):
        """The reconstructor, whose learned position embeddings need the feature grid's size."""
        h, w = (-(-n // self.pool) for n in features.shape[-2:])
        self.modules["reconstructor"] = _Reconstructor(features.shape[1], h * w, self.hidden, self.layers,
                                                       self.heads).to(self.device)

    def optimisers(self):
        # UniAD: AdamW, weight decay 1e-4 (experiments/MVTec-AD/config.yaml); lr 1e-3 instead of 1e-4 (module docstring)
        return [torch.optim.AdamW(self.modules.parameters(), lr=self.lr, weight_decay=1e-4)]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        rec = self.modules["reconstructor"](x.flatten(2).transpose(1, 2))
        return rec.transpose(1, 2).reshape(b, c, h, w)

    def loss(self, x, step, seed, synth):
        jittered = self.synthesize(synth, x, step, seed).features
        return F.mse_loss(self.reconstruct(jittered), x)

    def cell_scores(self, x):
        return (self.reconstruct(x) - x).norm(dim=1, keepdim=True)


FEATURE_DETECTORS = {cls.name: cls for cls in (SimpleNetDetector, SuperSimpleNetDetector, GlassDetector, PBASDetector,
                                               UniADDetector)}


def make_feature_detector(name: str, backbone: Backbone, device=None, width: int = 0, **kwargs) -> FeatureDetector:
    """A fresh feature-level detector by name (``simplenet``, ``supersimplenet``, ``glass``, ``pbas``, ``uniad``);
    ``width`` (when > 0) sets its ``hidden`` size (discriminator / head / transformer)."""
    if width:
        kwargs["hidden"] = int(width)
    return FEATURE_DETECTORS[name](backbone, device=device, **kwargs)

