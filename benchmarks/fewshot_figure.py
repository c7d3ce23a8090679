"""Real defects beside their synthetic copies, per defect type (docs/images/fewshot.png).

Rows: the defect types of an MVTec-AD category. Columns: PER held-out real defects (the test part
of the few-shot split), then PER samples of each method made from the training part on normal
training images (one image per column, picked by seed; ``defect_types`` = the row's type). Each
tile is a CROP px square around the mask (inside the image), upscaled to TILE px, the mask
outlined in red (synthetic defects can be faint). Images are resized to SIZE px first.

    python benchmarks/fewshot_figure.py /path/to/magnetic_tile docs/images/fewshot.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import defectforge
from defectforge.io.images import read_image, write_image
from defectforge.pipelines.preview import overlay
from defectforge.sources.defects import DefectBank


def crop(image: np.ndarray, mask: np.ndarray, side: int, tile: int) -> np.ndarray:
    """A ``side`` px square around the mask's centre (kept inside the image), upscaled, outlined."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (h // 2, w // 2)
    y0, x0 = min(max(cy - side // 2, 0), h - side), min(max(cx - side // 2, 0), w - side)
    image, mask = image[y0:y0 + side, x0:x0 + side], mask[y0:y0 + side, x0:x0 + side]
    big = cv2.resize(np.repeat(image, 3, 2) if image.shape[2] == 1 else image, (tile, tile),
                     interpolation=cv2.INTER_LINEAR)
    return overlay(big, cv2.resize(mask.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST) > 0,
                   fill=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("category", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--methods", default="copy_paste,defect_transplant")
    parser.add_argument("--per", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--tile", type=int, default=110)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    methods = args.methods.split(",")
    bank = DefectBank.from_folder(args.category, few_shot="1/3")
    normals = sorted((args.category / "train/good").iterdir())
    rng = np.random.default_rng(args.seed)

    def resized(path: Path, channels: int, nearest: bool = False) -> np.ndarray:
        array = read_image(path, channels=channels)
        flag = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
        out = cv2.resize(array, (args.size, args.size), interpolation=flag)
        return out[..., None] if out.ndim == 2 else out

    rows = []
    for t in bank.types:
        tiles = []
        for rel in bank.split.test[t][:args.per]:
            image = resized(args.category / rel, 3)
            mask_path = args.category / "ground_truth" / t / (Path(rel).stem + "_mask.png")
            tiles.append(crop(image, resized(mask_path, 1, nearest=True)[..., 0] > 127, args.crop, args.tile))
        for method in methods:
            synth = defectforge.create(method, bank=bank, defect_types=[t])
            picks = rng.choice(len(normals), args.per, replace=False)
            batch = torch.from_numpy(np.stack([resized(normals[i], 3) for i in picks])).permute(0, 3, 1, 2)
            out = synth(batch.contiguous(), seed=args.seed)
            for image, mask in zip(out.images.permute(0, 2, 3, 1).numpy(), out.masks[:, 0].numpy() > 0.5):
                tiles.append(crop(image, mask, args.crop, args.tile))
        rows.append((t, tiles))

    label_w, head, gap = 70, 20, 4
    columns = ["real (held out)"] * args.per + [m for m in methods for _ in range(args.per)]
    width = label_w + len(columns) * (args.tile + gap)
    canvas = Image.new("RGB", (width, head + len(rows) * (args.tile + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    for k, name in enumerate(columns):
        if k % args.per == 0:  # one name over each group of columns
            draw.text((label_w + k * (args.tile + gap) + 2, 3), name, fill="black", font=font)
    for r, (t, tiles) in enumerate(rows):
        y = head + r * (args.tile + gap)
        draw.text((4, y + args.tile // 2 - 6), t, fill="black", font=font)
        for k, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (label_w + k * (args.tile + gap), y))
    write_image(args.output, np.asarray(canvas))
    print(f"wrote {args.output}: {len(rows)} types x {len(columns)} columns")


if __name__ == "__main__":
    main()
