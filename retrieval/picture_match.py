"""Whether two photos show the same picture, by their local features (OpenCV).

ORB keypoints of each photo are matched; a rotation, scale and shift is fitted to the matches
(RANSAC), and under it each photo's outline is laid on the other: the share of each that the
other covers is what tells a copy from another shot. Re-encodes, resizes, small crops and
small rotations keep nearly all of the picture (0.834 or more), while another framing of the
same scene covers little of it (0.379 at most), and two different pictures have no transform
that many keypoints agree on (10 at most, against 23 or more for copies): bench duplicates'
first set, on which the thresholds were read off. A perceptual hash, by contrast,
moves by up to 26 of its 64 bits under a 2° rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

SIDE = 320  # photos are compared with their shorter side at this many pixels
MAX_KEYPOINTS = 1000
MIN_KEYPOINTS = 50  # fewer: too flat a picture to tell by its features (same_picture says None)
MIN_INLIERS = 15  # matches that agree on one transform (copies 23+, different pictures ≤ 10)
MIN_SHARED = 0.75  # share of each photo the other must cover (copies 0.834+, other framings ≤ 0.379)
RANSAC_PIXELS = 4.0  # how far (pixels at SIDE) a match may land from where the transform puts it


@dataclass
class Features:
    size: tuple[int, int]  # (width, height) of the photo as compared
    points: np.ndarray  # [n, 2] float32 keypoint positions
    descriptors: np.ndarray | None  # [n, 32] uint8 ORB descriptors (None without keypoints)

    @property
    def textured(self) -> bool:
        return len(self.points) >= MIN_KEYPOINTS


def features(image: Image.Image) -> Features:
    """ORB keypoints of a photo, scaled so that its shorter side is SIDE pixels."""
    scale = SIDE / min(image.size)
    if abs(scale - 1) > 0.01:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    gray = np.asarray(image.convert("L"))
    keypoints, descriptors = cv2.ORB_create(MAX_KEYPOINTS, fastThreshold=10).detectAndCompute(gray, None)
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return Features((image.width, image.height), points, descriptors)


def _outline(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)


def shared_area(a: Features, b: Features) -> tuple[float, int]:
    """(share, agreeing matches): the smaller of the shares of a and of b that the other covers
    under the transform most matches agree on, and how many agree (0.0, 0 when none is found)."""
    if a.descriptors is None or b.descriptors is None:
        return 0.0, 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a.descriptors, b.descriptors)
    if len(matches) < 3:
        return 0.0, 0
    source = a.points[[m.queryIdx for m in matches]]
    target = b.points[[m.trainIdx for m in matches]]
    transform, inliers = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS
    )
    if transform is None:
        return 0.0, 0
    a_on_b = cv2.transform(_outline(a.size).reshape(-1, 1, 2), transform).reshape(-1, 2).astype(np.float32)
    covered, _ = cv2.intersectConvexConvex(a_on_b, _outline(b.size))
    area_a, area_b = abs(cv2.contourArea(a_on_b)), float(b.size[0] * b.size[1])
    if area_a <= 0:
        return 0.0, 0
    return min(covered / area_a, covered / area_b), int(inliers.sum())


def same_picture(a: Features, b: Features) -> bool | None:
    """True when b is a copy of a's picture (re-encoded, resized, slightly cropped or rotated),
    False when it is not, None when either is too flat to tell by its features."""
    if not (a.textured and b.textured):
        return None
    share, agreeing = shared_area(a, b)
    return agreeing >= MIN_INLIERS and share >= MIN_SHARED
