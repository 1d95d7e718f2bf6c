"""Where the ROI of a whole image is: a box ``x0,y0,x1,y1`` from the command line or the bounding
box of a hint mask, checked against the image (one-line errors naming the input), and in the
``(y0, x0, y1, x1)`` order of the whole-image graph (``serving_boxes``,
:func:`kerasseg.models.whole_image.boxes_function`)."""

from __future__ import annotations

import numbers

import numpy as np

from kerasseg.errors import KerassegError


def parse_roi(text: str) -> tuple[int, int, int, int]:
    """Parse ``"x0,y0,x1,y1"`` into ints; KerassegError if malformed."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise KerassegError(f"--roi must be four integers x0,y0,x1,y1, got {text!r}")
    return box


def as_boxes(roi) -> list[tuple[int, int, int, int]] | None:
    """``roi`` as a list of ``(x0, y0, x1, y1)`` boxes: None stays None; a ``"x0,y0,x1,y1"`` string or
    one box of four numbers gives one box; a list of strings / boxes (``--roi`` repeated) gives several.
    KerassegError for anything else (the boxes are checked against each image later)."""
    if roi is None:
        return None
    if isinstance(roi, str):
        return [parse_roi(roi)]
    def number(v):
        return isinstance(v, (numbers.Real, np.number)) and not isinstance(v, (bool, np.bool_))

    items = list(roi)
    if len(items) == 4 and all(number(v) for v in items):
        return [tuple(int(v) for v in items)]
    boxes = []
    for item in items:
        if isinstance(item, str):
            boxes.append(parse_roi(item))
            continue
        values = list(item) if isinstance(item, (list, tuple)) else list(np.asarray(item).reshape(-1))
        if len(values) != 4 or not all(number(v) for v in values):
            raise KerassegError(f"--roi must be boxes of four integers x0,y0,x1,y1, got {item!r}")
        boxes.append(tuple(int(v) for v in values))
    if not boxes:
        raise KerassegError("--roi holds no box")
    return boxes


def check_box(box, shape, path=None, min_side: int = 1) -> tuple[int, int, int, int]:
    """Validate box (x0, y0, x1, y1; x1/y1 exclusive) against an image of ``shape`` (H, W); both
    sides must be at least ``min_side`` pixels."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = shape
    if x1 <= x0 or y1 <= y0:
        raise KerassegError(f"ROI {x0},{y0},{x1},{y1} is empty (need x0 < x1 and y0 < y1)", path)
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise KerassegError(f"ROI {x0},{y0},{x1},{y1} is outside the image ({w} x {h} pixels, x = column)", path)
    if x1 - x0 < min_side or y1 - y0 < min_side:
        raise KerassegError(f"ROI {x0},{y0},{x1},{y1} is {x1 - x0} x {y1 - y0} pixels; ROIs must be at least "
                            f"{min_side} x {min_side} pixels", path)
    return x0, y0, x1, y1


def serving_boxes(boxes) -> np.ndarray:
    """Boxes ``(x0, y0, x1, y1)`` (the order of ``--roi``) -> int32 ``(N, 4)`` ``(y0, x0, y1, x1)``,
    the order of ``serving_boxes`` (:func:`kerasseg.models.whole_image.boxes_function`)."""
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return b[:, [1, 0, 3, 2]].astype(np.int32)


def box_from_hint(hint: np.ndarray, shape, path=None) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1; exclusive ends) of the non-zero pixels of a hint mask."""
    if hint.shape != tuple(shape):
        raise KerassegError(f"hint mask shape {hint.shape} differs from the image shape {tuple(shape)}", path)
    rows = np.flatnonzero(np.any(hint != 0, axis=1))
    cols = np.flatnonzero(np.any(hint != 0, axis=0))
    if rows.size == 0:
        raise KerassegError("hint mask is empty (no non-zero pixel), so it gives no ROI", path)
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
