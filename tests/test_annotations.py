"""Readers of labelled real defects (labelme, COCO, YOLO-seg, mask folders, MVTec), on tiny files made here."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from defectforge.io.annotations import AnnotationError, detect_format, read_annotations, rle_decode
from defectforge.io.images import write_image
from defectforge.pipelines.export import export
from defectforge.sources.defects import DefectBank

H, W = 48, 64


def _image(path, value=120, size=(H, W)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), value, np.uint8)).save(path)
    return path


def _labelme(path, image_name, shapes, size=(H, W)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "5.4.1", "imagePath": image_name, "imageHeight": size[0],
                                "imageWidth": size[1], "imageData": None,
                                "shapes": [{"label": label, "points": points, "shape_type": kind, "group_id": None,
                                            "flags": {}} for label, points, kind in shapes]}))


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _masks(im, size=(H, W)):
    return im.type_masks(*size)


# --- labelme ---------------------------------------------------------------------------------------

def test_labelme_polygon_of_known_area(tmp_path):
    """labelme's rule: pixel centres inside or on the polygon (PIL fill + outline). For integer
    vertices and edges that are axis-parallel or at 45 degrees that is exactly Pick's count
    A + B/2 + 1 (A the area, B the lattice points on the boundary)."""
    _image(tmp_path / "a.png")
    triangle = [[2, 3], [22, 3], [2, 23]]          # A = 200, B = 20 + 20 + 20 = 60 -> 231 pixels
    rectangle_poly = _square(30, 5, 39, 14)         # 10 x 10 pixel centres
    _labelme(tmp_path / "a.json", "a.png", [("crack", triangle, "polygon"), ("dent", rectangle_poly, "polygon")])
    labelled = read_annotations(tmp_path)
    assert labelled.format == "labelme" and detect_format(tmp_path) == "labelme"
    masks = _masks(labelled.images[0])
    assert int(masks["crack"].sum()) == 200 + 60 // 2 + 1
    assert int(masks["dent"].sum()) == 100 and masks["dent"][5:15, 30:40].all()
    assert labelled.images[0].group == "combined" and labelled.images[0].mask_kind == "pixel"


def test_labelme_normal_images_rectangles_and_bank(tmp_path):
    for k in range(4):
        image = np.full((H, W, 3), 120, np.uint8)
        image[10:20, 10:30] = 30
        write_image(tmp_path / "parts" / f"p{k}.png", image)
        _labelme(tmp_path / "parts" / f"p{k}.json", f"p{k}.png", [("scratch", _square(10, 10, 29, 19), "polygon")])
    _image(tmp_path / "parts" / "good0.png")
    _image(tmp_path / "parts" / "good1.png")
    _image(tmp_path / "boxed" / "b.png")
    _labelme(tmp_path / "boxed" / "b.json", "b.png", [("stain", [[5, 5], [14, 12]], "rectangle")])
    labelled = read_annotations(tmp_path)
    assert [im.name for im in labelled.normals] == ["parts/good0.png", "parts/good1.png"]
    boxed = next(im for im in labelled.images if im.name == "boxed/b.png")
    assert boxed.mask_kind == "box" and int(_masks(boxed)["stain"].sum()) == 10 * 8
    bank = DefectBank.from_folder(tmp_path, few_shot="1/2")
    assert bank.types == ["scratch", "stain"] and bank.mask_kinds == {"scratch": "pixel", "stain": "box"}
    entry = bank.of_type("scratch")[0]
    assert entry.area == 200 and (entry.crop[entry.mask] == 30).all()
    assert bank.of_type("stain")[0].record()["mask_kind"] == "box"
    assert bank.source["format"] == "labelme"
    assert DefectBank.from_description(bank.describe()).describe() == bank.describe()


@pytest.mark.parametrize("shapes, message", [
    ([("crack", [[2, 2], [10, 10]], "polygon")], "fewer than 3"),
    ([("crack", [[2, 2], [80, 2], [40, 30]], "polygon")], "outside the 64x48 image"),
    ([("crack", [[2, 2], [20, 2]], "line")], "outlines no area"),
    ([("crack", [[5, 5], [5, 5], [5, 5]], "polygon")], None),
])
def test_labelme_bad_shapes_name_the_file(tmp_path, shapes, message):
    _image(tmp_path / "a.png")
    _labelme(tmp_path / "a.json", "a.png", shapes)
    if message is None:  # a degenerate polygon still covers its one pixel: not empty
        assert int(_masks(read_annotations(tmp_path).images[0])["crack"].sum()) == 1
        return
    with pytest.raises(AnnotationError, match=message) as info:
        read_annotations(tmp_path)
    assert str(tmp_path / "a.json") in str(info.value) and "\n" not in str(info.value)


def test_labelme_mask_shapes(tmp_path):
    import base64
    import io

    small = np.zeros((6, 9), np.uint8)
    small[1:5, 2:8] = 1
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, format="PNG")
    _image(tmp_path / "a.png")
    (tmp_path / "a.json").write_text(json.dumps({
        "imagePath": "a.png", "imageHeight": H, "imageWidth": W,
        "shapes": [{"label": "stain", "points": [[20, 10], [28, 15]], "shape_type": "mask",
                    "mask": base64.b64encode(buf.getvalue()).decode()}]}))
    mask = _masks(read_annotations(tmp_path).images[0])["stain"]
    expected = np.zeros((H, W), bool)
    expected[11:15, 22:28] = True
    assert np.array_equal(mask, expected)


def test_labelme_missing_image_and_wrong_size(tmp_path):
    _labelme(tmp_path / "a.json", "gone.png", [("crack", _square(2, 2, 9, 9), "polygon")])
    with pytest.raises(AnnotationError, match="gone.png"):
        read_annotations(tmp_path)
    (tmp_path / "a.json").unlink()
    _image(tmp_path / "b.png", size=(40, 64))
    _labelme(tmp_path / "b.json", "b.png", [("crack", _square(2, 2, 9, 9), "polygon")])
    with pytest.raises(AnnotationError, match=r"says the image is 64x48 .*is 64x40"):
        DefectBank.from_folder(tmp_path)


# --- COCO ------------------------------------------------------------------------------------------

def _coco(tmp_path, annotations, images=None, categories=None):
    if images is None:
        images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                  {"id": 2, "file_name": "b.png", "height": H, "width": W}]
        _image(tmp_path / "a.png")
        _image(tmp_path / "b.png")
    data = {"images": images, "annotations": annotations,
            "categories": categories or [{"id": 1, "name": "crack"}, {"id": 2, "name": "dent"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    return tmp_path / "annotations.json"


def test_coco_rle_either_iscrowd_boxes_and_normals(tmp_path):
    square = np.zeros((H, W), bool)
    square[4:12, 6:16] = True
    counts, run, value = [], 0, False
    for v in square.T.reshape(-1):  # uncompressed RLE, column-major, from the background
        if v != value:
            counts.append(run)
            run, value = 0, v
        run += 1
    counts.append(run)
    path = _coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": counts}},
        {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "bbox": [30, 20, 10.5, 5], "segmentation": []},
    ])
    assert detect_format(tmp_path) == "coco" and detect_format(path) == "coco"
    labelled = read_annotations(tmp_path)
    a, b = labelled.images
    assert b.normal and a.types == ["crack", "dent"] and a.mask_kind == "mixed"
    masks = _masks(a)
    assert np.array_equal(masks["crack"], square)
    assert int(masks["dent"].sum()) == 11 * 5 and masks["dent"][20:25, 30:41].all()


def test_coco_polygons_use_the_coco_api_rule(tmp_path):
    pytest.importorskip("pycocotools", reason="COCO polygons are rasterised by pycocotools (export extra)")
    from pycocotools import mask as mask_utils

    polygon = [4.0, 4.0, 30.5, 6.0, 20.0, 30.0]
    _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [polygon]}])
    got = _masks(read_annotations(tmp_path).images[0])["crack"]
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], H, W))).astype(bool)
    assert got.any() and np.array_equal(got, expected)


def test_rle_decoder_matches_pycocotools():
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for k in range(50):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((h, w)) < rng.random()
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert np.array_equal(rle_decode({"size": rle["size"], "counts": rle["counts"].decode()}, "t"), mask)


@pytest.mark.parametrize("case, message", [
    ("unknown category", "category_id 7 is not among the categories"),
    ("missing image id", "names image_id 9"),
    ("missing file", "'gone.png' is not under"),
    ("size", "says the image is 64x40"),
    ("few points", "fewer than 3"),
    ("outside", "outside the 64x48 image"),
    ("empty", "covers no pixel"),
    ("duplicate", "lists .* again"),
])
def test_coco_bad_inputs_name_the_file_and_the_fix(tmp_path, case, message):
    pytest.importorskip("pycocotools")
    ann = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[2, 2, 20, 2, 10, 15]]}
    images = None
    if case == "unknown category":
        ann["category_id"] = 7
    elif case == "missing image id":
        ann["image_id"] = 9
    elif case == "missing file":
        images = [{"id": 1, "file_name": "gone.png", "height": H, "width": W}]
        _image(tmp_path / "a.png")
    elif case == "size":
        images = [{"id": 1, "file_name": "a.png", "height": 40, "width": W}]
        _image(tmp_path / "a.png")
        ann["segmentation"] = [[2, 2, 20, 2, 10, 15]]
    elif case == "few points":
        ann["segmentation"] = [[2, 2, 20, 2]]
    elif case == "outside":
        ann["segmentation"] = [[2, 2, 90, 2, 10, 15]]
    elif case == "empty":
        ann["segmentation"] = {"size": [H, W], "counts": [H * W]}
    elif case == "duplicate":
        images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                  {"id": 2, "file_name": "./a.png", "height": H, "width": W}]
        _image(tmp_path / "a.png")
    path = _coco(tmp_path, [ann], images)
    with pytest.raises(AnnotationError, match=message) as info:
        DefectBank.from_folder(tmp_path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- round trips with this library's own export ----------------------------------------------------

def _blob_dataset(root, n=6, size=60):  # not a power of 2: x / 60 is not exact in 6 decimals
    """A folder shaped like `generate`'s output (manifest + masks), masks irregular blobs with holes."""
    rng = np.random.default_rng(5)
    lines = []
    for i in range(n):
        field = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 3)
        mask = field > np.quantile(field, 0.7)
        if i == 0:
            mask[:] = False
        if i == 1:  # a ring: a component with a hole
            mask[20:40, 20:40] = True
            mask[27:33, 27:33] = False
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        method = "blob" if i % 2 else "smudge"
        record = {"index": i, "image_path": f"test/{method}/{i:06d}.png", "label": int(mask.any()), "method": method}
        write_image(root / record["image_path"], image)
        if mask.any():
            record["mask_path"] = f"ground_truth/{method}/{i:06d}_mask.png"
            write_image(root / record["mask_path"], mask.astype(np.uint8) * 255)
        lines.append(json.dumps(record))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _filled(mask):
    """``mask`` with its holes filled (background not reachable from the border)."""
    padded = np.pad((~mask).astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(padded, None, (0, 0), 2)  # 4-connected background: the dual of 8-connected components
    return (padded[1:-1, 1:-1] != 2)


def _manifest(root):
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def test_coco_export_round_trip_is_exact(tmp_path):
    pytest.importorskip("pycocotools")
    data = _blob_dataset(tmp_path / "data")
    export(data, tmp_path / "coco", "coco")
    labelled = read_annotations(tmp_path / "coco" / "annotations.json")
    assert labelled.classes == ["blob", "smudge"]
    by_name = {im.name: im for im in labelled.images}
    for record in _manifest(data):
        im = by_name[record["image_path"]]
        if not record["label"]:
            assert im.normal
            continue
        mask = np.asarray(Image.open(data / record["mask_path"])) > 127
        assert im.types == [record["method"]]
        assert np.array_equal(_masks(im, mask.shape)[record["method"]], mask)


def test_yolo_seg_export_round_trip_is_exact_holes_included(tmp_path):
    data = _blob_dataset(tmp_path / "data")
    export(data, tmp_path / "yolo", "yolo-seg", val_fraction=0.5)
    assert detect_format(tmp_path / "yolo") == "yolo-seg"
    labelled = read_annotations(tmp_path / "yolo")
    by_stem = {im.path.stem: im for im in labelled.images}
    holes = 0
    for record in _manifest(data):
        im = by_stem[f"{record['method']}_{record['index']:06d}"]
        if not record["label"]:
            assert im.normal
            continue
        mask = np.asarray(Image.open(data / record["mask_path"])) > 127
        got = _masks(im, mask.shape)[record["method"]]
        assert np.array_equal(got, mask)  # holes are bridged into the polygon, so they come back empty
        holes += int((_filled(mask) != mask).sum())
    assert holes > 0  # the blobs did have holes, so the bridges were exercised


def test_yolo_seg_boxes_and_bad_lines(tmp_path):
    _image(tmp_path / "images" / "train" / "a.png")
    _image(tmp_path / "images" / "train" / "b.png")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    (tmp_path / "labels" / "train" / "b.txt").write_text("")
    (tmp_path / "data.yaml").write_text("names: [crack, dent]\n")
    labelled = read_annotations(tmp_path)
    a, b = labelled.images
    assert b.normal and a.mask_kind == "box" and int(_masks(a)["dent"].sum()) == 16 * 24
    for text, message in [("0 0.1 0.1 0.2 0.2 0.3", "at least 3 points"), ("5 0.1 0.1 0.2 0.2 0.3 0.1", "class 5"),
                          ("0 0.1 0.1 1.2 0.2 0.3 0.1", "outside the image")]:
        (tmp_path / "labels" / "train" / "a.txt").write_text(text + "\n")
        with pytest.raises(AnnotationError, match=message):
            read_annotations(tmp_path)
    (tmp_path / "labels" / "train" / "a.txt").write_text("")
    (tmp_path / "labels" / "train" / "c.txt").write_text("0 0.1 0.1 0.2 0.2 0.3 0.1\n")
    with pytest.raises(AnnotationError, match="c.txt: labels an image that is not there"):
        read_annotations(tmp_path)


# --- mask folders and MVTec ------------------------------------------------------------------------

def test_mask_folders_suffixes_twins_and_palettes(tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 5:25] = 255
    _image(tmp_path / "pairs" / "dent" / "a.png")
    write_image(tmp_path / "pairs" / "dent" / "a_gt.png", mask)
    _image(tmp_path / "pairs" / "dent" / "b.png")
    write_image(tmp_path / "pairs" / "dent" / "b_mask.png", np.zeros((H, W), np.uint8))  # all zero: normal
    labelled = read_annotations(tmp_path / "pairs")
    assert labelled.format == "masks" and [im.name for im in labelled.defects] == ["dent/a.png"]
    assert [im.name for im in labelled.normals] == ["dent/b.png"]
    # images/ + masks/ twins, a palette PNG whose indices are classes named by classes.txt
    _image(tmp_path / "twins" / "images" / "x.png")
    _image(tmp_path / "twins" / "images" / "y.png")
    classes = np.zeros((H, W), np.uint8)
    classes[2:10, 2:10] = 1
    classes[20:30, 30:50] = 2
    palette = Image.fromarray(classes, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    (tmp_path / "twins" / "masks").mkdir(parents=True)
    palette.save(tmp_path / "twins" / "masks" / "x.png")
    (tmp_path / "twins" / "classes.txt").write_text("background\nhole\nstain\n")
    assert detect_format(tmp_path / "twins") == "masks"
    twins = read_annotations(tmp_path / "twins")
    x = twins.images[0]
    assert x.types == ["hole", "stain"] and twins.images[1].normal
    masks = _masks(x)
    assert int(masks["hole"].sum()) == 64 and int(masks["stain"].sum()) == 200
    bank = DefectBank.from_folder(tmp_path / "twins")
    assert bank.types == ["hole", "stain"] and len(bank) == 2
    assert not any(e.context[e.mask].any() for e in bank.entries)


def test_mask_of_another_size_names_the_file(tmp_path):
    _image(tmp_path / "a.png")
    write_image(tmp_path / "a_mask.png", np.full((10, 10), 255, np.uint8))
    with pytest.raises(AnnotationError, match="a_mask.png: size 10x10 differs"):
        DefectBank.from_folder(tmp_path)


def test_detection_refuses_an_unknown_layout_and_format_can_be_named(tmp_path):
    _image(tmp_path / "plain" / "x.png")
    with pytest.raises(AnnotationError, match="no defect image with a mask"):
        detect_format(tmp_path / "plain")
    with pytest.raises(ValueError, match="not one of labelme, coco"):
        read_annotations(tmp_path / "plain", "pascal")
    # a folder of labelme JSONs read as masks (named) has no masks: every image is normal
    _image(tmp_path / "lm" / "a.png")
    _labelme(tmp_path / "lm" / "a.json", "a.png", [("crack", _square(2, 2, 9, 9), "polygon")])
    assert read_annotations(tmp_path / "lm", "masks").defects == []
    with pytest.raises(ValueError, match="holds no defect image"):
        DefectBank.from_folder(tmp_path / "lm", format="masks")


# --- defectforge import ----------------------------------------------------------------------------

def _labelme_set(root, goods=6, defects=3):
    for k in range(defects):
        image = np.full((H, W, 3), 120, np.uint8)
        image[10:20, 10:30] = 30
        write_image(root / "lot" / f"d{k}.png", image)
        shapes = [("scratch", _square(10, 10, 29, 19), "polygon")]
        if k == 2:
            shapes.append(("stain", [[40, 30], [50, 40]], "rectangle"))
        _labelme(root / "lot" / f"d{k}.json", f"d{k}.png", shapes)
    for k in range(goods):
        _image(root / "lot" / f"part{k // 2}_{'ab'[k % 2]}.png", value=100 + k)
    return root


def test_import_writes_an_mvtec_category_with_a_recorded_grouped_split(tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app
    from defectforge.io.mvtec import check_mvtec_category

    _register_commands()
    src = _labelme_set(tmp_path / "src")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["import", "labelme", str(src), str(out), "--seed", "3", "--test-fraction", "0.3",
                                      "--group", r"part(\d+)_"])
    assert result.exit_code == 0, result.output
    layout = check_mvtec_category(out)
    assert len(layout["train"]) + len([t for t in layout["test"] if t[1] == "good"]) == 6
    record = json.loads((out / "import.json").read_text())
    assert record["format"] == "labelme" and record["split"]["seed"] == 3 and record["split"]["test_good"] == 2
    groups = {side: {e["group"] for n, e in record["files"].items() if n.startswith(side)}
              for side in ("train/good", "test/good")}
    assert groups["train/good"] and groups["test/good"] and not groups["train/good"] & groups["test/good"]
    assert sorted(p.name for p in (out / "test" / "scratch").iterdir()) == ["d0.png", "d1.png"]
    assert (out / "test" / "combined" / "d2.png").read_bytes() == (src / "lot" / "d2.png").read_bytes()
    mask = np.asarray(Image.open(out / "ground_truth" / "combined" / "d2_mask.png"))
    assert set(np.unique(mask)) == {0, 255} and int((mask > 0).sum()) == 200 + 11 * 11
    assert record["mask_kinds"] == {"combined": "mixed", "scratch": "pixel"}
    # the same seed and data give the same split; another seed another one
    again = CliRunner().invoke(app, ["import", "auto", str(src), str(tmp_path / "again"), "--seed", "3",
                                     "--test-fraction", "0.3", "--group", r"part(\d+)_"])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "import.json").read_text())["files"] == record["files"]
    # the imported category is a bank like any other
    bank = DefectBank.from_folder(out)
    assert bank.types == ["combined", "scratch"]


def test_import_bad_input_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app

    _register_commands()
    src = _labelme_set(tmp_path / "src")
    _labelme(src / "lot" / "d1.json", "d1.png", [("scratch", [[1, 1], [5, 5]], "polygon")])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["import", "labelme", str(src), str(out)])
    assert result.exit_code == 2 and "d1.json" in result.output and "fewer than 3" in result.output
    assert "Traceback" not in result.output and not out.exists()
    _labelme(src / "lot" / "d1.json", "d1.png", [("scratch", _square(10, 10, 29, 19), "polygon")])
    _image(src / "other" / "part0_a.png")  # the same name as lot/part0_a.png
    result = CliRunner().invoke(app, ["import", "labelme", str(src), str(out)])
    assert result.exit_code == 2 and "share a name" in result.output and not out.exists()
    for args, message in [(["import", "labelme", str(src), str(src / "inside")], "inside the source"),
                          (["import", "pascal", str(src), str(out)], "not one of"),
                          (["import", "labelme", str(src), str(out), "--group", "("], "not a regular expression")]:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert not out.exists() and not (src / "inside").exists()


def test_boxes_are_refused_by_pixel_metrics_unless_accepted(tmp_path):
    from defectforge.io.annotations import require_pixel_masks

    src = tmp_path / "src"
    _image(src / "images" / "a.png")
    for k in range(3):
        _image(src / "images" / f"g{k}.png")
    (src / "labels").mkdir(parents=True)
    (src / "labels" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (src / "data.yaml").write_text("names: {0: dent}\n")
    from defectforge.pipelines.importer import import_dataset

    record = import_dataset(src, tmp_path / "out")
    assert record["mask_kinds"] == {"dent": "box"} and record["files"]["test/dent/a.png"]["mask_kind"] == "box"
    with pytest.raises(ValueError, match="boxes around the defects.*--accept-box-masks"):
        require_pixel_masks(tmp_path / "out")
    require_pixel_masks(tmp_path / "out", accept_boxes=True)
    bank = DefectBank.from_folder(tmp_path / "out")
    assert bank.mask_kinds == {"dent": "box"}


def test_coco_image_root_and_cvat_layout(tmp_path):
    rle = {"size": [H, W], "counts": [10, 5, H * W - 15]}
    data = {"images": [{"id": 1, "file_name": "frame_0.png", "height": H, "width": W}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": rle}],
            "categories": [{"id": 1, "name": "crack"}]}
    (tmp_path / "cvat" / "annotations").mkdir(parents=True)
    (tmp_path / "cvat" / "annotations" / "instances_default.json").write_text(json.dumps(data))
    _image(tmp_path / "cvat" / "images" / "frame_0.png")  # CVAT's layout: images/ beside annotations/
    assert detect_format(tmp_path / "cvat") == "coco"
    assert read_annotations(tmp_path / "cvat").images[0].path == (tmp_path / "cvat" / "images" / "frame_0.png")
    _image(tmp_path / "elsewhere" / "frame_0.png", value=7)
    moved = read_annotations(tmp_path / "cvat", image_root=tmp_path / "elsewhere")
    assert moved.images[0].path == tmp_path / "elsewhere" / "frame_0.png"
    with pytest.raises(ValueError, match="image root is for COCO"):
        read_annotations(tmp_path / "cvat", "labelme", image_root=tmp_path / "elsewhere")


def test_coco_polygons_without_pycocotools_name_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import pycocotools now raises ImportError
    _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[2, 2, 20, 2, 10, 15]]},
                     {"id": 2, "image_id": 2, "category_id": 1, "iscrowd": 1,
                      "segmentation": {"size": [H, W], "counts": [10, 5, H * W - 15]}}])
    labelled = read_annotations(tmp_path)
    assert int(_masks(labelled.images[1])["crack"].sum()) == 5  # RLE needs no extra
    with pytest.raises(AnnotationError, match=r"annotation 1: COCO polygons .*pip install 'defectforge\[export\]'"):
        _masks(labelled.images[0])
