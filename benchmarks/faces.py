"""Which face detector `crop=face` uses: candidates compared on the tests' face pictures.

For each candidate, on the same grey copy (long side `DETECT_SIDE`) the service detects on:
faces found of those marked by hand (tests/portraits.py), whether the most prominent one is the
marked one, detections where no face is, how well the boxes sit (IoU with the marked box, centre
error in face heights), time on the 1280 px photos, and what the package weighs installed.
Then what the chosen path costs per request beside one inference at 512 px.

    make compare-faces   # installs the other candidate (OpenCV 4.x) and writes RESULTS.md
"""

from __future__ import annotations

import importlib.metadata
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.common import PHOTOS, ROOT, machine
from benchmarks.report import replace_section
from deployments.core import face_blend, faces, imaging, pipeline
from deployments.core.engine import Engine, gate_picture
from deployments.core.faces import Box
from deployments.core.network import Generator
from deployments.core.options import StylizeOptions
from deployments.core.settings import Crop, Settings
from deployments.core.weights import seeded_state_dict
from tests.portraits import Portrait, corner, group, portraits

Detector = Callable[[np.ndarray], list[Box]]


@dataclass
class Candidate:
    name: str
    package: str  # the distribution that carries it
    detect: Detector


def candidates() -> list[Candidate]:
    found = [Candidate("dlib HOG, upsampled once (chosen)", "dlib-bin", faces.find_faces)]
    try:
        import cv2
    except ImportError:
        print("OpenCV is missing: `make compare-faces` installs it; comparing dlib alone")
        return found
    for cascade in ("haarcascade_frontalface_default", "haarcascade_frontalface_alt2"):
        folder = cv2.data.haarcascades  # type: ignore[attr-defined,unused-ignore]
        classifier = cv2.CascadeClassifier(f"{folder}{cascade}.xml")
        found.append(
            Candidate(
                f"OpenCV Haar {cascade.removeprefix('haarcascade_')}",
                "opencv-python-headless",
                _haar(classifier),
            )
        )
    return found


NOT_COMPARED = [
    "Looked at and left out, because they cannot be installed as the service needs: "
    "mediapipe 1.2 (its face detector reads a .tflite file fetched at run time, and the wheel "
    "pulls opencv-contrib-python and matplotlib); OpenCV's YuNet (no wheel carries its model); "
    "facenet-pytorch 2.6 (MTCNN weights in the wheel, but it pins torch<2.3 and Pillow<10.3); "
    "OpenCV 5.0 (no Haar cascades in its wheels). dlib is taken from the `dlib-bin` wheel: the "
    "`dlib` package itself is a source build needing CMake and a C++ compiler.",
]


def _haar(classifier: Any) -> Detector:
    def detect(gray: np.ndarray) -> list[Box]:
        boxes = classifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
        return [Box(*(int(v) for v in box)) for box in boxes]

    return detect


def sight(data: bytes) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The grey copy the service looks for faces on, its scale, and the upright size."""
    width, height = imaging.decode(data, max_pixels=10**9).size
    image = imaging.decode(data, max_pixels=10**9, scale=faces.DETECT_SIDE / max(width, height))
    gray = image.convert("L")
    gray.thumbnail((faces.DETECT_SIDE, faces.DETECT_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(gray), gray.width / width, (width, height)


def iou(a: Box, b: Box) -> float:
    left, top = max(a.x, b.x), max(a.y, b.y)
    right, bottom = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / (a.width * a.height + b.width * b.height - inter)


def matches(box: Box, face: Box) -> bool:
    """The detection is on this face: centres within half a face height, sizes within 2x."""
    (bx, by), (fx, fy) = box.centre, face.centre
    near = max(abs(bx - fx), abs(by - fy)) <= face.height / 2
    return near and 0.5 <= box.width / face.width <= 2.0


@dataclass
class Score:
    found: int = 0
    faces: int = 0
    prominent: int = 0
    pictures: int = 0
    false: int = 0
    ious: list[float] = field(default_factory=list)
    centre_errors: list[float] = field(default_factory=list)


def score(candidate: Candidate, pictures: list[Portrait]) -> Score:
    result = Score()
    for picture in pictures:
        gray, scale, (width, height) = sight(picture.data)
        boxes = [box.scaled(1 / scale) for box in candidate.detect(gray)]
        result.false += sum(not any(matches(b, f) for f in picture.faces) for b in boxes)
        for face in picture.faces:
            result.faces += 1
            hit = next((b for b in boxes if matches(b, face)), None)
            if hit is not None:
                result.found += 1
                result.ious.append(iou(hit, face))
                dx, dy = hit.centre[0] - face.centre[0], hit.centre[1] - face.centre[1]
                result.centre_errors.append(max(abs(dx), abs(dy)) / face.height)
        if picture.faces:
            result.pictures += 1
            chosen = faces.most_prominent(boxes, width, height)
            result.prominent += chosen is not None and matches(chosen, picture.faces[0])
    return result


def median_ms(work: Callable[[], object], rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def installed_mb(package: str) -> float:
    files = importlib.metadata.distribution(package).files or []
    paths = [Path(str(f.locate())) for f in files]
    return sum(path.stat().st_size for path in paths if path.exists()) / 1e6


def main() -> None:
    pictures = portraits()
    photos = [p.read_bytes() for p in sorted(PHOTOS.glob("*.jpg"))]  # 1280 px, for timing
    sights = [sight(data)[0] for data in photos]
    lines = [
        "## Finding the face (`crop=face`)",
        "",
        f"Measured by `make compare-faces` (python -m benchmarks.faces): {machine()}.",
        f"Every candidate looks at the same grey copy, long side {faces.DETECT_SIDE} px, of "
        f"the {len(pictures)} pictures of tests/portraits.py (faces of 100-125 px cut from "
        "kimono-street.jpg, enlarged 4x: in a corner, turned by EXIF, small in a large picture, "
        "two sizes; and pictures with no face). Time: median on the 1280 px photos of "
        "../shared/photos.",
        "",
        "| detector | faces found | most prominent right | false detections | mean IoU | "
        "centre error (face heights) | ms per 1280 px photo | installed MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for candidate in candidates():
        s = score(candidate, pictures)
        ms = statistics.median(median_ms(partial(candidate.detect, g)) for g in sights)
        accuracy = statistics.mean(s.ious or [0]), statistics.mean(s.centre_errors or [0])
        lines.append(
            f"| {candidate.name} | {s.found}/{s.faces} | {s.prominent}/{s.pictures} | {s.false} "
            f"| {accuracy[0]:.2f} | {accuracy[1]:.2f} "
            f"| {ms:.0f} | {installed_mb(candidate.package):.0f} |"
        )
    lines += ["", *NOT_COMPARED, "", *cost_beside_the_model(photos), "", *small_faces()]
    draw_example(corner())
    draw_group(group())
    report = "\n".join(lines)
    path = ROOT / "benchmarks" / "RESULTS.md"
    path.write_text(replace_section(path.read_text() if path.exists() else "", "faces", report))
    print(report)


def cost_beside_the_model(photos: list[bytes]) -> list[str]:
    """The whole `crop=face` decode of a 1280 px photo against `crop=square`, and one inference."""

    def decoding(crop: Crop) -> float:
        load = partial(imaging.load, size=512, crop=crop, max_pixels=10**9)
        return statistics.median(median_ms(partial(load, data)) for data in photos)

    face, square = decoding("face"), decoding("square")
    network = Generator()
    network.load_state_dict(seeded_state_dict(0))
    precision = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    engine = Engine({"s": network}, precision=precision)
    picture = gate_picture(512)
    engine.run("s", [picture])
    inference = median_ms(partial(engine.run, "s", [picture]), rounds=3)
    added = face - square
    return [
        f"Decoding a 1280 px photo to 512 px: {face:.0f} ms with `crop=face` (decode at reduced "
        f"scale, detect, decode the box), {square:.0f} ms with `crop=square`. One {precision} "
        f"inference at 512 px on {torch.get_num_threads()} threads: {inference:.0f} ms. Finding "
        f"the face adds {added:.0f} ms, {100 * added / inference:.0f}% of the inference "
        "(none of these photos has a face the 640 px copy shows, so each pays the 1600 px pass "
        "for small faces too; see the next table for one pass alone).",
    ]


SIZES = (1280, 1600, 4000)  # the group picture's long side as uploaded


def small_faces() -> list[str]:
    """Each pass (the copy's long side) on the group picture at two sizes: the faces it finds
    by size, its false detections on every test picture, and its cost beside one inference."""
    scenes = {side: _scaled(group(), side) for side in SIZES}
    others = portraits()
    inference_1, inference_2 = _inference_ms(1), _inference_ms(2)
    lines = [
        "### Small faces (`face_style`, and `crop=face` when the small copy shows none)",
        "",
        f"The group picture of tests/portraits.py (four faces, heights 1/40 to 1/11 of the long "
        f"side) uploaded at {', '.join(f'{s} px' for s in SIZES)}; false detections over "
        f"it and the {len(others)} pictures of the table above. The {faces.SMALL_FACES_SIDE} px "
        "copy of a smaller upload is enlarged to that side (at most twice), as the service "
        "does; the other copies never are. Time: decoding the copy (at reduced JPEG scale), "
        "detecting, median of 7. One fp32 inference at 512 px on this "
        f"machine: {inference_1:.0f} ms on 1 thread (as a model replica of serve_config.yaml "
        f"runs it), {inference_2:.0f} ms on 2.",
        "",
        "| copy's long side | upload | faces found (1/11, 1/18, 1/27, 1/40) | false detections "
        "| ms | share of one 1-thread inference |",
        "| ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for copy_side in (faces.DETECT_SIDE, 1280, faces.SMALL_FACES_SIDE):
        for side, scene in scenes.items():
            found, false = _found(scene, copy_side)
            for other in others:
                false += _found(other, copy_side)[1]
            ms = median_ms(partial(_detect, scene.data, copy_side))
            lines.append(
                f"| {copy_side} | {side} | {' '.join('yes' if f else 'no' for f in found)} "
                f"| {false} | {ms:.0f} | {100 * ms / inference_1:.0f}% |"
            )
    return lines


def _scaled(picture: Portrait, side: int) -> Portrait:
    """`picture` uploaded at long side `side` (its faces scaled with it)."""
    image = imaging.decode(picture.data, max_pixels=10**9)
    scale = side / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    boxes = tuple(face.scaled(scale) for face in picture.faces)
    return Portrait(picture.name, out.getvalue(), image.size, boxes)


def _detect(data: bytes, copy_side: int) -> list[Box]:
    """What the service's pass finds: the copy decoded at reduced scale, then detected on."""
    width, height = imaging.probe(data, max_pixels=10**9).size
    copy = imaging.decode(data, max_pixels=10**9, scale=copy_side / max(width, height))
    if (copy.width > copy.height) != (width > height):  # turned upright by its EXIF
        width, height = height, width
    return imaging.detect(copy, width, height, side=copy_side)


def _found(picture: Portrait, copy_side: int) -> tuple[list[bool], int]:
    boxes = _detect(picture.data, copy_side)
    found = [any(matches(b, face) for b in boxes) for face in picture.faces]
    return found, sum(not any(matches(b, f) for f in picture.faces) for b in boxes)


def _inference_ms(threads: int) -> float:
    network = Generator()
    network.load_state_dict(seeded_state_dict(0))
    engine = Engine({"s": network}, precision="fp32")
    picture = gate_picture(512)
    engine.run("s", [picture], threads=threads)
    return median_ms(partial(engine.run, "s", [picture], threads=threads), rounds=3)


def draw_group(picture: Portrait, side: int = 800) -> None:
    """docs/group-faces.png: a group photo as `style=paprika&face_style=face_paint_512_v2`
    draws it (seeded weights), the faces' squares marked beside it."""
    options = StylizeOptions.build(
        Settings(), style="paprika", size=side, face_style="face_paint_512_v2"
    )
    settings = Settings()
    pixels, _, found = pipeline.decode_faces(picture.data, options, settings)
    networks = {}
    for seed, name in enumerate(("paprika", "face_paint_512_v2")):
        networks[name] = Generator()
        networks[name].load_state_dict(seeded_state_dict(seed))
    engine = Engine(networks, precision="fp32")
    (whole,) = engine.run("paprika", [pixels])
    drawn = [engine.run("face_paint_512_v2", [face.pixels])[0] for face in found]
    result = face_blend.compose(whole, [(f.square, d) for f, d in zip(found, drawn, strict=True)])
    marked = Image.fromarray(pixels)
    draw = ImageDraw.Draw(marked)
    for face in found:
        box = face.square
        draw.rectangle(
            (box.x, box.y, box.x + box.width, box.y + box.height), outline=(40, 220, 90), width=2
        )
    sheet = Image.new("RGB", (2 * side + 36, marked.height + 46), (250, 250, 250))
    sheet.paste(marked, (12, 34))
    sheet.paste(Image.fromarray(result), (side + 24, 34))
    ImageDraw.Draw(sheet).text((12, 12), f"the upload, {len(found)} faces found", fill=(30, 30, 30))
    ImageDraw.Draw(sheet).text(
        (side + 24, 12),
        "style=paprika, face_style=face_paint_512_v2 (seeded weights)",
        fill=(30, 30, 30),
    )
    sheet.save(ROOT / "docs" / "group-faces.png", optimize=True)


def draw_example(picture: Portrait, side: int = 300) -> None:
    """docs/face-crop.png: the photo with both squares, what each crop gives the model, and the
    face crop stylized (seeded weights: texture, not anime)."""
    photo = imaging.decode(picture.data, max_pixels=10**9)
    panels = []
    boxes = {}
    for crop in ("square", "face"):
        pixels, cut = imaging.load(picture.data, size=side, crop=crop, max_pixels=10**9)
        panels.append((f"crop={crop}: {cut.how} {cut.box.width} px", Image.fromarray(pixels)))
        boxes[crop] = cut.box
    network = Generator()
    network.load_state_dict(seeded_state_dict(0))
    (stylized,) = Engine({"s": network}, precision="fp32").run("s", [np.asarray(panels[1][1])])
    panels.append(("crop=face, stylized (seeded)", Image.fromarray(stylized)))
    overview = photo.copy()
    overview.thumbnail((side * 16 // 9, side))
    scale = overview.width / photo.width
    draw = ImageDraw.Draw(overview)
    for crop, colour in (("square", (255, 255, 255)), ("face", (40, 220, 90))):
        box = boxes[crop].scaled(scale)
        draw.rectangle(
            (box.x, box.y, box.x + box.width, box.y + box.height), outline=colour, width=3
        )
    panels.insert(0, ("the upload: white crop=square, green crop=face", overview))
    gap, caption = 12, 22
    width = sum(image.width for _, image in panels) + gap * (len(panels) + 1)
    sheet = Image.new("RGB", (width, side + caption + 2 * gap), (250, 250, 250))
    x = gap
    for title, image in panels:
        sheet.paste(image, (x, gap + caption))
        ImageDraw.Draw(sheet).text((x, gap), title, fill=(30, 30, 30))
        x += image.width + gap
    sheet.save(ROOT / "docs" / "face-crop.png", optimize=True)


if __name__ == "__main__":
    main()
