"""CPU time and size of each PNG encoding of ``generate --png-compression`` on a folder of images.

Every image found under FOLDER (read as stored, grey or RGB, resized to ``--size`` when given) is
encoded with each named encoding (``defectforge.io.images.PNG_COMPRESSIONS``; ``--masks``: the
0/255 mask variant); the report gives the CPU milliseconds per file (main thread's clock, best of
``--repeat`` passes, so it holds on a busy machine) and the mean file size, and checks that every
encoding decodes to the same pixels.

    python benchmarks/png_encodings.py OUT/test/draem                # a generated dataset's images
    python benchmarks/png_encodings.py OUT/ground_truth/draem --masks
    python benchmarks/png_encodings.py /path/to/photos --size 256 --limit 60
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from defectforge.io.images import PNG_COMPRESSIONS, decode_png, encode_png, list_images, png_parameters, read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--masks", action="store_true", help="the images are 0/255 masks")
    parser.add_argument("--size", type=int, default=None, help="resize to SIZE x SIZE first")
    parser.add_argument("--limit", type=int, default=100, help="at most this many images")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    images = []
    for path in list_images(Path(args.folder))[:args.limit]:
        image = read_image(path)
        if args.size is not None:
            image = cv2.resize(image, (args.size, args.size), interpolation=cv2.INTER_AREA).reshape(
                args.size, args.size, -1)
        images.append(image)
    if not images:
        raise SystemExit(f"no images under {args.folder}")
    print(f"{len(images)} images {images[0].shape[1]}x{images[0].shape[0]}x{images[0].shape[2]} from {args.folder}")
    reference = None
    for name in PNG_COMPRESSIONS:
        parameters = png_parameters(name, binary=args.masks)
        best = float("inf")
        for _ in range(args.repeat):
            start = time.thread_time()
            encoded = [encode_png(image, parameters=parameters) for image in images]
            best = min(best, time.thread_time() - start)
        pixels = [decode_png(data) for data in encoded]
        if reference is None:
            reference = pixels
        same = all(np.array_equal(a, b) for a, b in zip(pixels, reference))
        size = np.mean([len(data) for data in encoded]) / 1024
        print(f"  {name:<8} {1e3 * best / len(images):6.3f} ms/file  {size:7.1f} KiB  "
              f"{'same pixels' if same else 'PIXELS DIFFER'}")


if __name__ == "__main__":
    main()
