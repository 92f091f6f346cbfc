"""Faces: where they are (YuNet), their five landmarks, and an FFHQ-like aligned crop of each.

YuNet is the small CNN face detector of the OpenCV model zoo (MIT licence; 230 KB ONNX shipped in
`realitycheck/assets/`). It runs in ONNX Runtime with OpenCV's own decoding (YuNetRuntime; OpenCV's
`cv2.FaceDetectorYN` when ONNX Runtime is missing). It finds faces the Haar cascade missed
(non-frontal, large diffusion portraits: docs/generalization.md has the rates per source) and gives
five landmarks per face, which is what alignment needs.

Alignment follows the FFHQ recipe (eyes and mouth corners -> an oriented square), with a `zoom`
that tightens it: every face reaches the model at one scale and one framing whatever the photo's
resolution or crop, so "how big is the face" and "how was it framed" stop being cues.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

YUNET_PATH = Path(__file__).resolve().parent.parent / "assets" / "face_detection_yunet_2026may.onnx"
YUNET_LICENCE = "YuNet face detector, OpenCV model zoo (opencv_zoo/models/face_detection_yunet), MIT licence"
DETECT_MAX_SIDE = 640  # detection runs on a downscaled copy: same faces, 4-30 ms instead of 100+
SCORE_THRESHOLD = 0.6
# The "refine" method (find_faces): a half-scale probe finds the faces, then one crop around them is
# detected again at the full method's scale, so landmarks match it. Not the default: on the shared
# sources it is no faster (docs/generalization.md, "Faster face detection").
DETECT_METHOD = "full"
REFINE_MIN_SIDE = 512  # detection sides below this: the whole image costs little more than probe + crop
REFINE_MARGIN = 96  # px (detection scale) kept around each face: YuNet's reach, so crop landmarks match
REFINE_MARGIN_FRACTION = 0.5  # ... or this share of the face's side, if more: a large face sees further
REFINE_MAX_AREA = 0.75  # a crop over this share of the image would save too little: detect on all of it
PROBE_THRESHOLD = 0.4  # below SCORE_THRESHOLD, so the probe keeps every face the full scale would keep
MIN_FACE_FRACTION = 0.04  # ignore faces under 4% of the image's shorter side (crowd in the background)
MAX_FACES = 8  # beyond this, only the largest are scored


@dataclass
class Face:
    box: tuple[int, int, int, int]  # (x, y, w, h) in image pixels
    landmarks: np.ndarray  # (5, 2): right eye, left eye (the person's), nose tip, right and left mouth corner
    score: float

    @property
    def eyes(self) -> tuple[np.ndarray, np.ndarray]:
        """(eye on the image's left, eye on the image's right)."""
        a, b = self.landmarks[0], self.landmarks[1]
        return (a, b) if a[0] <= b[0] else (b, a)


@dataclass
class FaceReport:
    count: int
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # (x, y, w, h), largest first
    available: bool = True  # False when the detector cannot run: count is then unknown
    faces: list[Face] = field(default_factory=list)  # same order as boxes
    error: str = ""

    @property
    def message(self) -> str:
        if not self.available:
            return f"face check unavailable{': ' + self.error if self.error else ''}"
        if self.count == 0:
            return "no face found: the model was trained on clear, prominent faces, so this verdict is unreliable"
        if self.count == 1:
            return "1 face found"
        return f"{self.count} faces found"


class FaceDetectorUnavailable(RuntimeError):
    """YuNet could not be loaded (missing file, OpenCV without FaceDetectorYN)."""


_local = threading.local()  # detectors keep per-call state: one per thread

STRIDES = (8, 16, 32)
NMS_THRESHOLD, TOP_K = 0.3, 50


class YuNetRuntime:
    """YuNet run by ONNX Runtime on one thread, decoded exactly as OpenCV's FaceDetectorYN decodes it.

    Why: on this project's 2-core machines OpenCV's DNN module spends ~5-10 ms on a 256 px photo
    where ONNX Runtime needs ~1.5 ms, and detection is the slowest stage of predicting a face
    (README, Speed). One thread, because detection runs inside loader processes that already use
    the cores. The output rows are FaceDetectorYN's: x, y, w, h, 5 landmarks (x, y), score.
    """

    def __init__(self, path: Path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.outputs = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]

    def detect(self, rgb: np.ndarray, threshold: float = SCORE_THRESHOLD) -> np.ndarray | None:
        """Faces in an RGB uint8 array: rows of x, y, w, h, 5 landmarks, score (score >= threshold)."""
        import cv2

        h, w = rgb.shape[:2]
        pad_h, pad_w = -(-h // 32) * 32, -(-w // 32) * 32  # OpenCV pads bottom/right with zeros to /32
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        for c in range(3):  # BGR planes straight from RGB: 2-3x faster than flipping and transposing a copy
            blob[0, c, :h, :w] = rgb[:, :, 2 - c]
        out = dict(zip(self.outputs, self.session.run(self.outputs, {"input": blob})))
        rows = []
        for s in STRIDES:
            cols = pad_w // s
            cls = np.clip(out[f"cls_{s}"].reshape(-1), 0, 1)
            obj = np.clip(out[f"obj_{s}"].reshape(-1), 0, 1)
            score = np.sqrt(cls * obj)
            idx = np.flatnonzero(score >= threshold)
            if not idx.size:
                continue
            r, c = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            bbox, kps = out[f"bbox_{s}"].reshape(-1, 4)[idx], out[f"kps_{s}"].reshape(-1, 10)[idx]
            bw, bh = np.exp(bbox[:, 2]) * s, np.exp(bbox[:, 3]) * s
            cx, cy = (c + bbox[:, 0]) * s, (r + bbox[:, 1]) * s
            lm = np.empty((idx.size, 10), np.float32)
            lm[:, 0::2] = (kps[:, 0::2] + c[:, None]) * s
            lm[:, 1::2] = (kps[:, 1::2] + r[:, None]) * s
            rows.append(np.column_stack([cx - bw / 2, cy - bh / 2, bw, bh, lm, score[idx]]).astype(np.float32))
        if not rows:
            return None
        faces = np.concatenate(rows)
        if len(faces) > 1:
            boxes = [[int(v) for v in f[:4]] for f in faces]  # OpenCV's NMS sees integer boxes
            keep = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), threshold, NMS_THRESHOLD, top_k=TOP_K)
            faces = faces[np.asarray(keep, dtype=int).reshape(-1)]
        return faces


class _OpenCVYuNet:
    """The same detector in OpenCV's DNN module (FaceDetectorYN): used when ONNX Runtime is missing."""

    def __init__(self, path: Path):
        import cv2

        self.det = cv2.FaceDetectorYN.create(str(path), "", (320, 320), SCORE_THRESHOLD, NMS_THRESHOLD, TOP_K)

    def detect(self, rgb: np.ndarray, threshold: float = SCORE_THRESHOLD) -> np.ndarray | None:
        import cv2

        self.det.setInputSize((rgb.shape[1], rgb.shape[0]))
        self.det.setScoreThreshold(threshold)
        return self.det.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1]


def _detector(backend: str = "auto"):
    """This thread's YuNet: ONNX Runtime ("auto" when it is installed) or OpenCV's FaceDetectorYN."""
    if backend not in ("auto", "onnxruntime", "opencv"):
        raise FaceDetectorUnavailable(f"unknown face detector backend {backend!r}: auto, onnxruntime or opencv")
    key = f"yunet_{backend}"
    det = getattr(_local, key, None)
    if det is None:
        try:
            import cv2
        except ImportError as exc:  # pragma: no cover - OpenCV is a requirement
            raise FaceDetectorUnavailable(f"OpenCV is not installed ({exc})") from None
        if not YUNET_PATH.is_file():
            raise FaceDetectorUnavailable(f"face detector model missing at {YUNET_PATH} (reinstall the package)")
        if backend == "auto":
            try:
                import onnxruntime  # noqa: F401
                backend = "onnxruntime"
            except ImportError:
                backend = "opencv"
        if backend == "opencv" and not hasattr(cv2, "FaceDetectorYN"):
            raise FaceDetectorUnavailable(f"OpenCV {cv2.__version__} has no FaceDetectorYN (needs >= 4.5.4)")
        try:
            det = YuNetRuntime(YUNET_PATH) if backend == "onnxruntime" else _OpenCVYuNet(YUNET_PATH)
        except Exception as exc:  # ONNX Runtime or OpenCV refusing the file: say which and why
            raise FaceDetectorUnavailable(f"could not load {YUNET_PATH.name}: {str(exc).strip()[:120]}") from None
        setattr(_local, key, det)
    return det


def find_faces(image: Image.Image, backend: str | None = None, method: str | None = None) -> FaceReport:
    """Detect faces with landmarks; coordinates are in the pixels of `image`, largest face first.

    `backend`: "auto" (ONNX Runtime when installed), "onnxruntime" or "opencv" (the same faces either
    way); by default the environment's REALITYCHECK_FACE_DETECTOR, else "auto".
    `method`: "full" (the default, DETECT_METHOD) detects on the whole image scaled to <= DETECT_MAX_SIDE;
    "refine" finds the same faces, landmarks within ~1 px, faster only when they fill little of a
    large photo, by detecting again around them (`_detect_refined`). scripts/face_speed.py compares them.
    """
    backend = backend or os.environ.get("REALITYCHECK_FACE_DETECTOR", "auto")
    method = method or DETECT_METHOD
    if method not in ("full", "refine"):
        raise ValueError(f"unknown face detection method {method!r}: full or refine")
    try:
        det = _detector(backend)
    except FaceDetectorUnavailable as exc:
        return FaceReport(count=0, available=False, error=str(exc))
    w, h = image.size
    scale = min(1.0, DETECT_MAX_SIDE / max(w, h))
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    if min(sw, sh) < 16:
        return FaceReport(count=0)
    found = None
    if method == "refine" and max(sw, sh) >= REFINE_MIN_SIDE:
        found = _detect_refined(det, image if image.mode == "RGB" else image.convert("RGB"), (sw, sh))
    if found is None:  # resized before converted, as always (a palette image resizes by nearest pixel)
        small = image if scale == 1.0 else image.resize((sw, sh), Image.BILINEAR)
        found = det.detect(np.asarray(small if small.mode == "RGB" else small.convert("RGB")))
    faces: list[Face] = []
    min_side = MIN_FACE_FRACTION * min(w, h)
    for row in (found if found is not None else []):
        if not np.all(np.isfinite(row[:15])):  # seen on tiny noise images: an overflowed box is no face
            continue
        x, y, bw, bh = (float(v) / scale for v in row[:4])
        if max(bw, bh) < min_side:
            continue
        lm = np.asarray(row[4:14], dtype=np.float64).reshape(5, 2) / scale
        box = (int(round(max(0.0, x))), int(round(max(0.0, y))), int(round(bw)), int(round(bh)))
        faces.append(Face(box=box, landmarks=lm, score=float(row[14])))
    faces.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
    faces = faces[:MAX_FACES]
    return FaceReport(count=len(faces), boxes=[f.box for f in faces], faces=faces)


def _detect_refined(det, rgb: Image.Image, size: tuple[int, int]) -> np.ndarray | None:
    """Detector rows at the full method's scale (`size`), from a quarter-area probe and one crop.

    Why: YuNet's cost grows faster than the pixel count, and a face may fill a fraction of a large
    photo. Landmarks move by several px when the detection scale changes, so the crop is detected at
    the full method's scale, on its 32 px grid, with max(REFINE_MARGIN, REFINE_MARGIN_FRACTION x the
    face's side) of context: its landmarks are then within ~1 px of the whole image's (median 0.15 px
    on the shared sources; docs/generalization.md). None means "detect on the whole image": no face
    in the probe, or a crop too large to pay.
    """
    (w, h), (sw, sh) = rgb.size, size
    k = max(1, -(-2 * max(w, h) // max(sw, sh)))  # integer box shrink to about half the detection scale
    probe = det.detect(np.asarray(rgb.reduce(k) if k > 1 else rgb), PROBE_THRESHOLD)
    probe = probe[np.all(np.isfinite(probe[:, :4]), axis=1)] if probe is not None else None
    if probe is None or not len(probe):
        return None  # a face the probe missed would be lost: the whole image decides
    cand = probe[:, :4].astype(np.float64) * k * [sw / w, sh / h, sw / w, sh / h]  # x, y, w, h at `size`
    m = np.maximum(REFINE_MARGIN, REFINE_MARGIN_FRACTION * cand[:, 2:].max(1))  # margin of each face
    x0 = max(0, int((cand[:, 0] - m).min() // 32) * 32)
    y0 = max(0, int((cand[:, 1] - m).min() // 32) * 32)
    x1 = min(sw, int(np.ceil((cand[:, 0] + cand[:, 2] + m).max() / 32)) * 32)
    y1 = min(sh, int(np.ceil((cand[:, 1] + cand[:, 3] + m).max() / 32)) * 32)
    if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) > REFINE_MAX_AREA * sw * sh:
        return None
    if (sw, sh) == (w, h):
        crop = rgb.crop((x0, y0, x1, y1))
    else:  # the pixels of the whole image resized to `size` (to +-2 levels), computed for the crop only
        crop = rgb.resize((x1 - x0, y1 - y0), Image.BILINEAR, box=(x0 * w / sw, y0 * h / sh, x1 * w / sw, y1 * h / sh))
    rows = det.detect(np.asarray(crop))
    if rows is None:
        return np.zeros((0, 15), np.float32)  # the probe's faces, seen at full scale, are not faces
    rows = rows.copy()
    rows[:, [0, 4, 6, 8, 10, 12]] += x0
    rows[:, [1, 5, 7, 9, 11, 13]] += y0
    # a face cut by the crop's edge is no face of the whole image: keep the probe's faces and any
    # face whose box keeps half the margin from every edge that is not the image's own
    half = REFINE_MARGIN / 2
    inside = ((rows[:, 0] >= x0 + half) | (x0 == 0)) & ((rows[:, 1] >= y0 + half) | (y0 == 0)) \
        & ((rows[:, 0] + rows[:, 2] <= x1 - half) | (x1 == sw)) & ((rows[:, 1] + rows[:, 3] <= y1 - half) | (y1 == sh))
    keep = [i for i, r in enumerate(rows) if inside[i] or _iou(r[:4], cand).max() > 0.3]
    return rows[keep]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x, y, w, h) box with each of `boxes`."""
    ix = np.clip(np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter + 1e-9)


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------

def aligned_quad(landmarks: np.ndarray, zoom: float = 1.0) -> np.ndarray:
    """The FFHQ crop square from five landmarks: corners (top-left, bottom-left, bottom-right, top-right).

    FFHQ: the square's half-side is max(2 x eye distance, 1.8 x eye-to-mouth), centred a little
    below the eyes and turned so the eyes are level. `zoom` < 1 tightens it around the face.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    e1, e2 = lm[0], lm[1]
    eye_left, eye_right = (e1, e2) if e1[0] <= e2[0] else (e2, e1)  # as seen in the image
    m1, m2 = lm[3], lm[4]
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (m1 + m2) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= max(np.hypot(*x), 1e-6)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) * zoom
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def align_face(image: Image.Image, landmarks: np.ndarray, size: int, zoom: float = 1.0) -> Image.Image:
    """The face warped to a `size` x `size` square in the fixed framing (reflection outside the photo).

    Large faces are first shrunk with area averaging so the warp never aliases; small ones are
    enlarged by the warp itself (bilinear).
    """
    import cv2

    quad = aligned_quad(landmarks, zoom)
    side = float(np.hypot(*(quad[3] - quad[0])))
    arr = np.asarray(image.convert("RGB"))
    shrink = side / size
    if shrink > 1.5:
        h, w = arr.shape[:2]
        f = 1.0 / shrink
        arr = cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        quad = quad * np.array([arr.shape[1] / w, arr.shape[0] / h])
    src = quad[:3].astype(np.float32)
    dst = np.array([[0, 0], [0, size], [size, size]], dtype=np.float32)
    m = cv2.getAffineTransform(src, dst)
    out = cv2.warpAffine(arr, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return Image.fromarray(out)


def landmark_position(landmarks: np.ndarray, size: int, zoom: float = 1.0) -> np.ndarray:
    """Where the five landmarks land in the aligned `size` square (used by tests and region words)."""
    import cv2

    quad = aligned_quad(landmarks, zoom)
    m = cv2.getAffineTransform(quad[:3].astype(np.float32), np.array([[0, 0], [0, size], [size, size]], np.float32))
    pts = np.asarray(landmarks, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def box_in_aligned_view(face: Face, size: int, zoom: float = 1.0) -> tuple[int, int, int, int]:
    """The face's detector box (x, y, w, h) mapped into its aligned `size` square (bounding box of the warp)."""
    import cv2

    quad = aligned_quad(face.landmarks, zoom)
    m = cv2.getAffineTransform(quad[:3].astype(np.float32), np.array([[0, 0], [0, size], [size, size]], np.float32))
    x, y, w, h = face.box
    corners = np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], dtype=np.float64) @ m[:, :2].T + m[:, 2]
    lo, hi = corners.min(0).clip(0, size), corners.max(0).clip(0, size)
    return int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])


def crop_to_face(image: Image.Image, box: tuple[int, int, int, int], margin: float = 0.35) -> Image.Image:
    """Square crop around a face box with context (hairline, chin, ears), clipped to the image."""
    x, y, w, h = box
    side = int(max(w, h) * (1 + 2 * margin))
    cx, cy = x + w / 2, y + h / 2
    left = int(max(0, cx - side / 2))
    top = int(max(0, cy - side / 2))
    right = int(min(image.size[0], left + side))
    bottom = int(min(image.size[1], top + side))
    return image.crop((left, top, right, bottom))


def draw_faces(image: Image.Image, boxes, fake) -> Image.Image:
    """The photo with each face's box and number drawn on it (red: judged fake, green: real).

    `fake`: one verdict per box, True for fake (the caller reads them with `model.decision.is_fake`:
    the decision rule lives above this layer).

    The label is the face's number only (its p_fake and size go in a table beside the picture), in
    type about 1/30 of the picture's longer side, so it stays legible when the picture is shown
    small and labels of neighbouring faces do not run into each other."""
    from PIL import ImageDraw, ImageFont

    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 250))
    px = label_px(out.size)
    try:
        font = ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    for i, (box, judged_fake) in enumerate(zip(boxes, fake)):
        x, y, w, h = box
        colour = (220, 40, 40) if judged_fake else (40, 170, 70)
        d.rectangle((x, y, x + w, y + h), outline=colour, width=width)
        label = str(i + 1)
        tw = d.textlength(label, font=font)
        pad = max(2, px // 6)
        top = y - px - 2 * pad if y - px - 2 * pad >= 0 else y  # above the box, inside it at the top edge
        d.rectangle((x, top, x + tw + 2 * pad, top + px + 2 * pad), fill=colour)
        d.text((x + pad, top + pad), label, fill=(255, 255, 255), font=font)
    return out


def label_px(size: tuple[int, int]) -> int:
    """Type size of the face numbers on a picture of `size`: legible when it is shown small."""
    return max(14, round(max(size) / 30))
