"""Region words follow the heatmap and the detected face, not fixed cells of the crop."""

from __future__ import annotations

import numpy as np

from realitycheck.explain import Faithfulness
from realitycheck.explain.heatmap_words import describe_evidence, faithfulness_words

# A 200x200 crop taken at (100, 50) of the image; the face box (x, y, w, h) is in image pixels.
CROP = (100, 50, 300, 250)
FACE = (160, 80, 80, 90)  # in the crop: columns 60-140, rows 30-120


def _heat(rows: slice, cols: slice) -> np.ndarray:
    h = np.zeros((200, 200), np.float32)
    h[rows, cols] = 1.0
    return h + 0.01  # a faint floor everywhere, as real CAMs have


def test_evidence_below_the_face_is_called_outside_the_face_not_mouth_and_chin():
    words = describe_evidence(_heat(slice(150, 200), slice(80, 120)), CROP, [FACE], "fake")  # a necktie
    assert "outside the face" in words and "below the face" in words and "chin" not in words
    assert "AI-generated" in words


def test_evidence_on_the_upper_face_names_the_eyes():
    words = describe_evidence(_heat(slice(32, 58), slice(70, 130)), CROP, [FACE], "real")
    assert "on the face" in words and "eyes" in words and "looks real" in words


def test_evidence_on_the_lower_face_names_the_mouth():
    words = describe_evidence(_heat(slice(95, 118), slice(75, 125)), CROP, [FACE], "fake")
    assert "mouth and chin" in words


def test_evidence_above_the_face_is_hair_or_headwear():
    words = describe_evidence(_heat(slice(0, 25), slice(60, 140)), CROP, [FACE], "fake")
    assert "above the face" in words


def test_without_a_face_only_the_position_is_given():
    words = describe_evidence(_heat(slice(0, 40), slice(0, 40)), CROP, [], "fake")
    assert "No face was found" in words and "top left" in words


def test_empty_heatmap():
    assert "empty" in describe_evidence(np.zeros((10, 10)), (0, 0, 10, 10), [], "fake")


def test_faithfulness_in_plain_words():
    text = faithfulness_words(Faithfulness(0.12, 0.03, target_class="fake"))
    assert "lowers it by 12 in 100" in text and "lowers it by 3 in 100" in text
    assert "points at evidence the model uses" in text and "points " not in text.replace("points at", "")
    weak = faithfulness_words(Faithfulness(-0.02, 0.01, target_class="real"))
    assert "raises it by 2 in 100" in weak and "caution" in weak


# Five landmarks (right eye, left eye, nose tip, right and left mouth corner) of an upright face
# inside FACE, in image pixels: eyes at crop row 55, nose at 75, mouth at 98.
LANDMARKS = np.array([[180, 105], [220, 105], [200, 125], [185, 148], [215, 148]], dtype=float)


def _blob_at(x: float, y: float, sigma: float = 4.0) -> np.ndarray:
    """A smooth hot spot at image point (x, y), as a heatmap over CROP."""
    ys, xs = np.mgrid[0:200, 0:200]
    return np.exp(-((xs + 0.5 - (x - CROP[0])) ** 2 + (ys + 0.5 - (y - CROP[1])) ** 2) / (2 * sigma ** 2))


def _rotate(points: np.ndarray, degrees: float, centre=(200, 125)) -> np.ndarray:
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (points - centre) @ rot.T + centre


def test_landmarks_name_the_part_of_the_face_under_the_evidence():
    for point, part in ((LANDMARKS[3:].mean(0), "the mouth"), (LANDMARKS[2], "the nose"),
                        (LANDMARKS[0], "the eyes"), (LANDMARKS[:2].mean(0) - [0, 25], "the forehead"),
                        (LANDMARKS[3:].mean(0) + [0, 20], "the chin and jaw"), (LANDMARKS[0] + [-3, 22], "the cheeks")):
        words = describe_evidence(_blob_at(*point), CROP, [FACE], "fake", landmarks=LANDMARKS)
        assert f"around {part}" in words, (part, words)


def test_a_tilted_face_is_read_along_its_own_axes():
    """Rolled 60 degrees, the mouth lies where an upright face box's middle third would say 'nose and
    cheeks'; the landmarks still say mouth."""
    tilted = _rotate(LANDMARKS, 60)
    mouth = tilted[3:].mean(0)
    with_landmarks = describe_evidence(_blob_at(*mouth), CROP, [FACE], "fake", landmarks=tilted)
    assert "around the mouth" in with_landmarks
    assert "mouth" not in describe_evidence(_blob_at(*mouth), CROP, [FACE], "fake")  # the box thirds cannot know


def test_evidence_outside_the_face_is_still_outside_with_landmarks():
    words = describe_evidence(_heat(slice(150, 200), slice(80, 120)), CROP, [FACE], "fake", landmarks=LANDMARKS)
    assert "outside the face" in words and "mouth" not in words
