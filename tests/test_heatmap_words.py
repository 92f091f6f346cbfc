"""Region words follow the heatmap and the detected face, not fixed cells of the crop."""

from __future__ import annotations

import numpy as np

from realitycheck.explain import Faithfulness
from realitycheck.heatmap_words import describe_evidence, faithfulness_words

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
