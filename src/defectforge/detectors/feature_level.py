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
    the map -> Linear(258 -> 1); each batch is doubled and both copies are Perlin-noised (half
    the masks empty, so about half the maps anomalous); the map enters the classification head
    detached (``stop_grad``); loss focal (gamma 4) + truncated L1 (margin 0.5) on the map and
    focal on the score; AdamW 1e-4 (adaptor) and 2e-4 (heads, weight decay 1e-5) with
    ``MultiStepLR`` (0.4 at 80% and 90%); image score = the classification head's.
``glass``
    SimpleNet's adaptor and discriminator with a sigmoid; loss BCE(D(normal), 0) + BCE(D(GAS
    features), 1) + focal loss (gamma 2) on the hardest 50% of the cells of image-level
    ``glass_las`` anomalies (``p = 0.5``); the GAS term trains the projection too; manifold or
    hypersphere mode; score = D.
``pbas``
    adaptor and sigmoid discriminator; centre bank built once before training
    (:func:`~defectforge.features.build_centre_bank`) and then fixed; loss = mean distance to
    the nearest centre (compactness) + BCE(normal, 0) + BCE(pushed, 1); score = D.
``uniad``
    a feature reconstructor in UniAD's layout (input projection, transformer encoder, decoder
    with learned queries, output projection) trained with MSE to rebuild the clean features
    from jittered ones, gradient norm clipped at 0.1; score = per-cell L2 reconstruction error.

GLASS and PBAS optimise the projection with Adam (weight decay 1e-5) and the discriminator with
AdamW, as their ``load``. Every detector can keep its best checkpoint on a validation set
(``fit(validation=..., select_every=N)``, :func:`validation_criterion`): the official SimpleNet,
GLASS and PBAS keep the epoch with the best image + pixel AUROC *on the test set* (UniAD: the best
test pixel AUROC), and their published numbers include that selection; the benchmark's rows
here are the last step's weights (unless ``defectforge benchmark --select-every N``, which
selects on held-out training normals, :mod:`.benchmark.selection`), so a paper number beside one
of them is the more optimistic of the two protocols. The class docstrings say what matches the official code and what differs
(docs/features.md has the table with the official files).

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

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..core.seeding import torch_generator
from ..features import CentreBank, build_centre_bank, nearest_centres
from .backbones import Backbone
from .base import DetectorBase
from .training import TrainingRecord, maps_from_cells, scoring_features

__all__ = ["FeatureDetector", "SimpleNetDetector", "SuperSimpleNetDetector", "GlassDetector", "PBASDetector",
           "UniADDetector", "validation_criterion", "synthetic_validation_set"]


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


class FeatureDetector(DetectorBase):
    """Shared training loop and scoring of the feature-level detectors (module docstring).

    Subclasses define ``method`` (default synthesizer), ``build(channels)``, ``optimisers()``,
    ``loss(x, step, seed, synth)`` and ``cell_scores(x)``; optionally ``setup`` (before training),
    ``before_step`` (GLASS's per-epoch centres), ``schedulers`` and ``synthesizer_options``.
    """

    name = ""
    kind = "feature"
    method = ""
    uses_backbone_features = True
    #: ``--width`` sets the hidden size (discriminator / heads / transformer).
    width_option = "hidden"
    #: Gradient-norm clipping of every trained parameter (None: none; UniAD: 0.1).
    clip_grad_norm: float | None = None

    def __init__(self, backbone: Backbone, neighbourhood: int = 3, device: str | torch.device | None = None):
        self.backbone = backbone
        self.neighbourhood = int(neighbourhood)
        self.device = torch.device(device) if device is not None else backbone.device
        self.mean = self.std = None
        self.modules: nn.ModuleDict | None = None
        self.synthesis_seconds = 0.0
        self.batch_size = 8

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

    def schedulers(self, optimisers: list, steps: int) -> list:
        """Learning-rate schedulers stepped once per training step (none by default)."""
        return []

    def synthesizer_options(self, name: str) -> dict:
        """Constructor arguments of the registry method ``name`` when the detector creates it."""
        return {}

    def before_step(self, step: int, features: torch.Tensor) -> None:
        """Anything refreshed before a training step (GLASS's hypersphere centres, once per epoch)."""

    # --- shared -------------------------------------------------------------------------
    def fit_statistics(self, features: torch.Tensor) -> None:
        """Per-channel mean and standard deviation of the training ``features`` that
        :meth:`prepare` standardises with (``fit`` calls it)."""
        flat = features.float().transpose(0, 1).reshape(features.shape[1], -1)
        self.mean = flat.mean(1).view(1, -1, 1, 1).to(self.device)
        self.std = flat.std(1).clamp_min(1e-6).view(1, -1, 1, 1).to(self.device)

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

    def epoch_batches(self, features: torch.Tensor, seed: int):
        """The prepared training maps once each, ``batch_size`` at a time, in a seeded order (an epoch
        of a shuffled loader, for what the official code computes over the training loader)."""
        order = torch.randperm(features.shape[0], generator=torch_generator(int(seed) + 3))
        for i in range(0, features.shape[0], self.batch_size):
            yield self.prepare(features[order[i:i + self.batch_size]])

    def fit(self, images: torch.Tensor, synthesizer=None, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features: torch.Tensor | None = None, checkpoint_every: int = 0, evaluate=None,
            validation=None, select_every: int = 0) -> TrainingRecord:
        """Train for ``steps`` steps of ``batch_size`` normal feature maps plus their synthetic twins.

        ``synthesizer`` is a feature-level registry name or synthesizer (default: the detector's
        own method); ``features`` the cached backbone features of ``images``.

        ``validation`` (a callable ``detector -> float``, higher is better, e.g.
        :func:`validation_criterion` on held-out *training* images) with ``select_every = N``
        scores the detector every ``N`` steps and after the last, and keeps the weights of the best
        score (``record.selected_step``). The official SimpleNet, GLASS and PBAS keep the epoch of
        the best *test* image + pixel AUROC (UniAD the best test pixel AUROC); a validation set
        made without test images is the honest version of that selection. Default: no selection,
        the last step's weights.
        """
        import defectforge

        start = time.perf_counter()
        record = TrainingRecord(steps=int(steps), batch_size=int(batch_size))
        if features is None:
            t = time.perf_counter()
            features = self.backbone.extract(images)
            record.feature_seconds += time.perf_counter() - t
        self.channels = int(features.shape[1])
        synth = synthesizer or self.method
        if isinstance(synth, str):
            info = defectforge.method_info(synth)
            if info.level != "feature":
                raise ValueError(f"detector {self.name!r} trains on feature-level methods; {synth!r} is "
                                 f"{info.level}-level (feature methods: {', '.join(defectforge.list_methods(level='feature'))})")
            synth = defectforge.create(synth, **self.synthesizer_options(synth))
        if validation is not None and int(select_every) < 1:
            raise ValueError("validation needs select_every >= 1 (score the detector every N steps)")
        self.fit_statistics(features)
        self.synthesis_seconds = 0.0
        self.batch_size = int(batch_size)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation and dropout, global state untouched
            torch.manual_seed(int(seed))
            self.modules = self.build(features.shape[1]).to(self.device)
            self.setup(images, features, seed, record)
            self._train(features, int(steps), int(batch_size), int(seed), synth, record, checkpoint_every, evaluate,
                        validation, int(select_every))
        return record.finish(start, self.synthesis_seconds)

    def _train(self, features, steps, batch_size, seed, synth, record, checkpoint_every, evaluate,
               validation=None, select_every=0) -> None:
        optimisers = self.optimisers()
        schedulers = self.schedulers(optimisers, steps)
        gen = torch_generator(seed)
        best = None
        for step in range(steps):
            self.before_step(step, features)
            idx = torch.randint(features.shape[0], (batch_size,), generator=gen)
            x = self.prepare(features[idx])
            self.modules.train()
            loss = self.loss(x, step, seed, synth)
            record.optimise(loss, optimisers, step, evaluate, checkpoint_every, self, clip_norm=self.clip_grad_norm)
            for sched in schedulers:
                sched.step()
            if validation is not None and ((step + 1) % select_every == 0 or step + 1 == steps):
                t = time.perf_counter()
                with torch.random.fork_rng(devices=[]):
                    score = float(validation(self))
                record.checkpoints.append({"step": step + 1, "validation": score})
                if best is None or score > best[0]:
                    best = (score, step + 1, copy.deepcopy(self.modules.state_dict()))
                record.checkpoint_seconds += time.perf_counter() - t
        if best is not None:
            self.modules.load_state_dict(best[2])
            record.selected_step = best[1]

    def setup(self, images: torch.Tensor, features: torch.Tensor, seed: int, record: TrainingRecord) -> None:
        """Anything a detector prepares before training (GLASS: its LAS pool; PBAS: its centre bank)."""

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                   size: int | None = None, chunk: int = 32) -> torch.Tensor:
        """``(N, size, size)`` anomaly maps, upsampled and smoothed."""
        if self.modules is None:
            raise RuntimeError("call fit() before score_maps()")
        features, size = scoring_features(self.backbone, images, features, size)
        self.modules.eval()
        return maps_from_cells(features, size, lambda f: self.cell_scores(self.prepare(f)), chunk)


def validation_criterion(images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                         features: torch.Tensor | None = None):
    """The official selection criterion, image AUROC + pixel AUROC, on a validation set.

    Parameters
    ----------
    images, masks, labels : torch.Tensor
        ``(N, C, H, W)`` uint8 images, ``(N, 1, H, W)`` masks and ``(N,)`` labels that are *not*
        the test set: e.g. held-out normal training images and their synthetic anomalies
        (:func:`synthetic_validation_set`).
    features : torch.Tensor, optional
        Their cached backbone features.

    Returns
    -------
    callable
        ``detector -> float`` for :meth:`FeatureDetector.fit`'s ``validation``.
    """
    from ..metrics.detection import image_auroc, pixel_auroc

    y = labels.cpu().numpy()
    gt = (masks[:, 0] > 0.5).cpu().numpy()
    if len(set(y.tolist())) < 2:
        raise ValueError("the validation set needs normal and anomalous images")

    def score(detector) -> float:
        maps = detector.score_maps(images, features=features, size=images.shape[-1])
        scores = detector.image_scores(maps)
        return image_auroc(scores.numpy(), y) + pixel_auroc(maps.numpy(), gt)

    return score


def synthetic_validation_set(images: torch.Tensor, method: str = "draem", seed: int = 0):
    """A validation set from held-out normal *training* images: the first half stays normal, the
    second half gets the image-level ``method``'s anomalies. Returns ``(images, masks, labels)``."""
    from ..core.registry import create

    half = images.shape[0] // 2
    if half < 1 or images.shape[0] - half < 1:
        raise ValueError("a validation set needs at least 2 images")
    out = create(method, anomaly_probability=1.0)(images[half:], seed=int(seed), indices=range(images.shape[0] - half))
    masks = torch.cat([torch.zeros((half, *out.masks.shape[1:])), out.masks.float().cpu()])
    labels = torch.cat([torch.zeros(half, dtype=torch.long), (out.masks.flatten(1).amax(1) > 0).long()])
    return torch.cat([images[:half], out.images]), masks, labels


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
    """SuperSimpleNet: adaptor, segmentation and classification heads, Perlin-masked noise.

    As blaz-r/SuperSimpleNet (``model/supersimplenet.py``, ``train.py``'s ``run_unsup``):

    - each step's batch is doubled and *both* copies go through the anomaly generator
      (``AnomalyGenerator.forward`` concatenates ``(input, input)`` and draws ``b * 2`` Perlin
      masks, half of them emptied), so about half of the 2B maps are anomalous;
    - ``stop_grad=True`` (``run_unsup``): the map enters the classification head detached
      (``Discriminator.forward`` detaches ``map_dec_copy``, ``map_max`` and ``map_avg``), so the
      classification loss trains the classification head and, through the features, the
      adaptor, but never the segmentation head;
    - image score = the classification head's ``sigmoid(score)`` (``test``: ``results["score"]``,
      the paper's I-AUROC); ``image_score="map"`` uses the map's maximum instead
      (the official ``seg-I-AUROC``);
    - AdamW with ``MultiStepLR`` (``gamma`` 0.4 at 80% and 90% of the training,
      ``get_optimizers``), no gradient clipping (``clip_grad: False``).

    Parameters
    ----------
    noise_both_copies : bool
        ``True`` (official): both copies noised. ``False``: the first copy stays clean (a quarter
        of the maps anomalous; the previous behaviour, kept for the ablation).
    stop_grad : bool
        Detach the map inside the classification head (official MVTec / VisA setting ``True``).
    image_score : {"head", "map"}
        Where the image score comes from.
    lr_schedule : bool
        The official ``MultiStepLR`` (``False``: constant rates).
    """

    name = "supersimplenet"
    method = "supersimplenet"

    def __init__(self, backbone: Backbone, hidden: int = 1024, seg_lr: float = 1e-3, adaptor_lr: float = 1e-3,
                 margin: float = 0.5, gamma: float = 4.0, noise_both_copies: bool = True, stop_grad: bool = True,
                 image_score: str = "head", lr_schedule: bool = True, **kwargs):
        super().__init__(backbone, **kwargs)
        self.hidden, self.seg_lr, self.adaptor_lr = int(hidden), float(seg_lr), float(adaptor_lr)
        self.margin, self.gamma = float(margin), float(gamma)
        self.noise_both_copies, self.stop_grad = bool(noise_both_copies), bool(stop_grad)
        if image_score not in ("head", "map"):
            raise ValueError(f"image_score must be 'head' or 'map', got {image_score!r}")
        self.image_score, self.lr_schedule = image_score, bool(lr_schedule)
        self._head_scores = None

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

    def schedulers(self, optimisers, steps):
        if not self.lr_schedule:
            return []
        # get_optimizers: MultiStepLR(milestones=[epochs * 0.8, epochs * 0.9], gamma=0.4), here in steps
        return [torch.optim.lr_scheduler.MultiStepLR(opt, [int(steps * 0.8), int(steps * 0.9)], gamma=0.4)
                for opt in optimisers]

    def heads(self, adapted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg = self.modules["seg"](adapted)
        seg_in = seg.detach() if self.stop_grad else seg
        dec = self.modules["dec"](torch.cat([adapted, seg_in], dim=1))
        pooled = torch.cat([dec.amax((2, 3)), dec.mean((2, 3)), seg_in.amax((2, 3)), seg_in.mean((2, 3))], dim=1)
        return seg, self.modules["fc"](pooled)[:, 0]

    def training_batch(self, adapted: torch.Tensor, step: int, seed: int, synth):
        """The doubled batch ``(2B, C, h, w)`` of step ``step``, its masks and labels.

        Both copies go through the synthesizer (samples ``2B * step + j``); with
        ``noise_both_copies=False`` the first copy stays clean.
        """
        doubled = torch.cat([adapted, adapted])
        if self.noise_both_copies:
            out = self.synthesize(synth, doubled.detach(), step, seed)
            return doubled + (out.features - doubled.detach()), out.masks, out.labels.float()
        out = self.synthesize(synth, adapted.detach(), step, seed)
        noised = adapted + (out.features - adapted.detach())
        return (torch.cat([adapted, noised]), torch.cat([torch.zeros_like(out.masks), out.masks]),
                torch.cat([torch.zeros_like(out.labels), out.labels]).float())

    def loss(self, x, step, seed, synth):
        features, mask, label = self.training_batch(self.modules["adaptor"](x), step, seed, synth)
        seg, score = self.heads(features)
        focal = binary_focal_loss(torch.sigmoid(seg), mask, self.gamma).mean()
        normal, anomalous = seg[mask == 0], seg[mask > 0]
        trunc_l1 = F.relu(normal + self.margin).mean()
        if anomalous.numel():
            trunc_l1 = trunc_l1 + F.relu(self.margin - anomalous).mean()
        return focal + trunc_l1 + binary_focal_loss(torch.sigmoid(score), label, self.gamma).mean()

    def cell_scores(self, x):
        seg, score = self.heads(self.modules["adaptor"](x))
        if isinstance(self._head_scores, list):  # collected by score_maps
            self._head_scores.append(torch.sigmoid(score).cpu())
        return seg

    @torch.no_grad()
    def score_maps(self, images=None, features=None, size=None, chunk: int = 32) -> torch.Tensor:
        """The segmentation maps; the classification head's scores of the same images are kept
        for :meth:`image_scores`."""
        self._head_scores = []
        maps = super().score_maps(images, features, size, chunk)
        self._head_scores = (maps, torch.cat(self._head_scores))
        return maps

    def image_scores(self, maps: torch.Tensor) -> torch.Tensor:
        """The classification head's score of the images ``maps`` came from (``image_score="head"``),
        else the map's maximum."""
        if self.image_score == "map":
            return maps.amax(dim=(1, 2))
        if not isinstance(self._head_scores, tuple) or self._head_scores[0] is not maps:
            raise RuntimeError("image_scores(maps) needs the maps of the last score_maps() call")
        return self._head_scores[1]


class _SigmoidDiscriminatorDetector(SimpleNetDetector):
    """Adaptor + SimpleNet discriminator with a sigmoid (GLASS, PBAS).

    Optimisers as GLASS's and PBAS's ``load``: Adam with weight decay 1e-5 for the projection
    (``proj_opt``), AdamW for the discriminator (``dsc_opt``); rates as the module docstring says.
    """

    def build(self, channels: int) -> nn.ModuleDict:
        adaptor = nn.Linear(channels, channels)
        _init_xavier(adaptor)
        return nn.ModuleDict({"adaptor": adaptor, "discriminator": _Discriminator(channels, self.hidden, sigmoid=True)})

    def optimisers(self):
        return [torch.optim.Adam(self.modules["adaptor"].parameters(), lr=self.adaptor_lr, weight_decay=1e-5),
                torch.optim.AdamW(self.modules["discriminator"].parameters(), lr=self.lr)]

    def cell_scores(self, x):
        b, _, h, w = x.shape
        return _grid(self.modules["discriminator"](_rows(self.adapt(x))), b, h, w)

    @torch.no_grad()
    def position_centres(self, features: torch.Tensor) -> torch.Tensor:
        """``(h*w, C)`` mean adapted feature per grid position over all training maps (GLASS's
        ``self.c``, the mean of the per-batch means of an epoch)."""
        total, n = None, 0
        for x in self.epoch_batches(features, 0):
            mean = self.adapt(x).mean(0).flatten(1).T
            total = mean if total is None else total + mean
            n += 1
        return total / n


def _bce(scores: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy(scores, torch.full_like(scores, target))


class GlassDetector(_SigmoidDiscriminatorDetector):
    """GLASS: GAS (feature level) + LAS (image level, ``glass_las``) branches on one discriminator.

    As cqylunlun/GLASS ``glass.py`` (``GLASS._train_discriminator``):

    - the GAS features start from the *projected* normal features and stay in the projection's
      graph (the ascent adds to them under ``no_grad``; the projections rescale the offset), so
      ``BCE(D(gas), 1)`` trains the projection as well as the discriminator. In manifold mode the
      official Jacobian of the GAS features with respect to the projected ones is exactly the
      identity (each rescaling multiplies an offset whose graph does not depend on them), which
      is what ``gas_into_projection=True`` gives: ``gas = true + (gas - true).detach()``. In
      hypersphere mode the rescaling around the (constant) centre has a Jacobian the
      straight-through gradient leaves out;
    - ``mode``: ``"manifold"`` (``svd=0``: anchor the normal feature, ``r = 0.5``) or
      ``"hypersphere"`` (``svd=1``: anchor the centre of the feature's grid position, the mean
      adapted normal feature, recomputed once per epoch with the current projection;
      ``r = r_t``, the 0.75-quantile of the batch's distances to the centres; the LAS features
      inside the mask are pushed to ``[2 r_t, 4 r_t]`` from their centres). The official MVTec
      runs choose per class (``datasets/excel/mvtec_distribution.xlsx``, read by
      ``trainer``); for a new category the official code's ``distribution=1`` judges from the
      spectrum of the average training image (``utils.distribution_judge``). Here no rule
      picks: run both on a validation set (:func:`validation_criterion`) and keep the better.

    Parameters
    ----------
    las_pool : int
        Synthetic ``glass_las`` images whose features are computed once (0: no LAS branch).
    hard_fraction : float
        Quantile of the hardest LAS cells kept by the focal loss (``p = 0.5``).
    mode : {"manifold", "hypersphere"}
        GAS's projection (see above).
    gas_into_projection : bool
        ``True`` (official): the GAS loss trains the projection. ``False``: GAS features
        detached (the previous behaviour, kept for the ablation).
    """

    name = "glass"
    method = "glass_gas"

    def __init__(self, backbone: Backbone, las_pool: int = 128, hard_fraction: float = 0.5, mode: str = "manifold",
                 gas_into_projection: bool = True, **kwargs):
        super().__init__(backbone, **kwargs)
        self.las_pool = int(las_pool)
        self.hard_fraction = float(hard_fraction)
        if mode not in ("manifold", "hypersphere"):
            raise ValueError(f"mode must be 'manifold' or 'hypersphere', got {mode!r}")
        self.mode = mode
        self.gas_into_projection = bool(gas_into_projection)
        self.pool_features = self.pool_masks = None
        self.centres = None

    def synthesizer_options(self, name):
        return {"mode": self.mode} if name == "glass_gas" else {}

    def setup(self, images, features, seed, record):
        """The LAS pool: ``las_pool`` ``glass_las`` anomalies of training images, through the backbone once."""
        self.centres = None
        self._epoch = max(1, -(-features.shape[0] // self.batch_size))
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

    def before_step(self, step, features):
        if self.mode == "hypersphere" and step % self._epoch == 0:  # trainer: centres recomputed every epoch
            self.modules.eval()
            self.centres = self.position_centres(features)

    def gas_scores(self, true: torch.Tensor, step: int, seed: int, synth) -> tuple[torch.Tensor, torch.Tensor]:
        """Discriminator scores of the adapted normal features and of their GAS features."""
        d = self.modules["discriminator"]
        d.eval()  # GAS ascends a frozen-statistics discriminator (module docstring)
        gas = self.synthesize(synth, true.detach(), step, seed, discriminator=d, centres=self.centres).features
        d.train()
        if self.gas_into_projection:
            gas = true + (gas - true.detach())
        scores = d(torch.cat([_rows(true), _rows(gas)]))
        n = scores.shape[0] // 2
        return scores[:n], scores[n:]

    def loss(self, x, step, seed, synth):
        d = self.modules["discriminator"]
        true = self.adapt(x)
        true_scores, gas_scores = self.gas_scores(true, step, seed, synth)
        loss = _bce(true_scores, 0.0) + _bce(gas_scores, 1.0)
        if self.pool_features is not None:
            pick = torch.randint(self.pool_features.shape[0], (x.shape[0],), generator=self._pool_gen)
            las = _rows(self.adapt(self.prepare(self.pool_features[pick])))
            target = _rows(self.pool_masks[pick].to(self.device))
            if self.mode == "hypersphere":
                las = self._push_las(las, target, true)
            prob = d(las)
            focal = binary_focal_loss(prob, target, 2.0).reshape(-1)
            dist = ((prob - target) ** 2).reshape(-1)
            hard = dist >= torch.quantile(dist.detach(), self.hard_fraction)
            loss = loss + focal[hard].mean()
        return loss

    def _push_las(self, las: torch.Tensor, target: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Hypersphere mode: LAS features inside the mask rescaled to ``[2 r_t, 4 r_t]`` from their centres."""
        b = true.shape[0]
        centres = self.centres.to(las).repeat(b, 1)
        with torch.no_grad():
            r_t = torch.quantile((_rows(true) - centres).norm(dim=1), 0.75)
        inside = target[:, 0] > 0.5
        h = las - centres
        norm = h.norm(dim=1, keepdim=True)
        pushed = centres + h * (norm.clamp(2 * r_t, 4 * r_t) / (norm + 1e-10))
        return torch.where(inside[:, None], pushed, las)


class PBASDetector(_SigmoidDiscriminatorDetector):
    """PBAS: centre bank, compactness loss and BCE against features pushed from the centres.

    As cqylunlun/PBAS ``pbas.py``: the centre bank is built once before training, through the
    freshly initialised projection, by :func:`~defectforge.features.build_centre_bank` over one
    seeded pass of the training maps in batches of ``batch_size`` (``PBAS.trainer``), and stays
    fixed; the loss is ``mean ||f - c*||`` (``svdd_loss = r_ct``) + BCE(normal, 0) + BCE(pushed, 1)
    (``_train_discriminator``).

    Parameters
    ----------
    bank : {"fixed", "moving"}
        ``"fixed"`` (official) or ``"moving"``: an exponential average (0.9) of every step's batch
        mean (:class:`~defectforge.features.CentreBank`), the previous behaviour, kept for the
        ablation: the compactness loss then chases a target that moves with the projection.
    """

    name = "pbas"
    method = "pbas"

    def __init__(self, backbone: Backbone, bank: str = "fixed", **kwargs):
        super().__init__(backbone, **kwargs)
        if bank not in ("fixed", "moving"):
            raise ValueError(f"bank must be 'fixed' or 'moving', got {bank!r}")
        self.bank_kind = bank
        self.centres = None

    def setup(self, images, features, seed, record):
        if self.bank_kind == "moving":
            self.bank = CentreBank(momentum=0.9)
            self.centres = None
            return
        self.modules.eval()
        with torch.no_grad():
            self.centres = build_centre_bank(self.adapt(x) for x in self.epoch_batches(features, seed))

    def loss(self, x, step, seed, synth):
        true = self.adapt(x)
        centres = self.bank.update(true) if self.bank_kind == "moving" else self.centres
        rows = _rows(true)
        b, _, h, w = true.shape
        with torch.no_grad():  # one search serves the compactness loss and the push (both need c*)
            nearest = nearest_centres(rows.detach(), centres)
        compact = (rows - nearest).norm(dim=1).mean()
        fake = self.synthesize(synth, true.detach(), step, seed, centres=centres, nearest=_grid(nearest, b, h, w)).features
        fake = true + (fake - true.detach())  # PBAS detaches only the push
        scores = self.modules["discriminator"](torch.cat([rows, _rows(fake)]))
        n = scores.shape[0] // 2
        return compact + _bce(scores[:n], 0.0) + _bce(scores[n:], 1.0)


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
    """UniAD: reconstruct clean features from jittered ones; score = reconstruction error.

    ``clip_grad_norm`` 0.1: UniAD clips the gradient norm of every trained parameter
    (``trainer.clip_max_norm``, ``experiments/MVTec-AD/config.yaml``); ``None`` turns it off.
    """

    name = "uniad"
    method = "uniad_jitter"

    #: UniAD's feature channels: EfficientNet-b4 stages 1-4 through its MFCN neck (24 + 32 + 56 + 160).
    PAPER_CHANNELS = 272

    def __init__(self, backbone: Backbone, hidden: int = 128, layers: int = 2, heads: int = 4, lr: float = 1e-3,
                 pool: int = 2, clip_grad_norm: float | None = 0.1, jitter_scale: float | str = 20.0, **kwargs):
        super().__init__(backbone, **kwargs)
        if not (jitter_scale == "matched" or isinstance(jitter_scale, (int, float))):
            raise ValueError(f"jitter_scale must be a number or 'matched', got {jitter_scale!r}")
        self.jitter_scale = jitter_scale
        self.hidden, self.layers, self.heads, self.lr = int(hidden), int(layers), int(heads), float(lr)
        self.pool = int(pool)
        # trainer.clip_max_norm: 0.1 (experiments/MVTec-AD/config.yaml, applied in tools/train_val.py)
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)

    def synthesizer_options(self, name):
        """``jitter_scale="matched"``: ``20 * sqrt(C / 272)``, the jitter whose norm relative to the
        feature's, ``scale / sqrt(C)``, is UniAD's on its 272 channels (docs/features.md, "Feature
        scale"); a number: that scale (UniAD's 20 by default)."""
        if name != "uniad_jitter":
            return {}
        if self.jitter_scale == "matched":
            return {"scale": 20.0 * (self.channels / self.PAPER_CHANNELS) ** 0.5}
        return {"scale": float(self.jitter_scale)}

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
