"""Dense maps of an image of any size from a model that sees fixed square windows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: ``uint8 (N, S, S, 3)`` windows → ``{name: float32 (N, C, S, S)}`` maps.
Predict = Callable[[np.ndarray], dict[str, np.ndarray]]


def window_maps(
    image: np.ndarray, predict: Predict, *, side: int, margin: int, batch: int = 8
) -> dict[str, np.ndarray]:
    """Maps ``(C, H, W)`` of an ``(H, W, 3)`` image from overlapping ``side``-px windows.

    The image is padded with white to at least ``side`` on each side. Each window
    contributes only its centre (all but ``margin`` px at inner edges), so seams where
    the model lacked context do not show.
    """
    step = side - 2 * margin
    if step < 1:
        raise ValueError(f"window of {side} px leaves nothing inside margins of {margin} px")
    height, width = image.shape[:2]
    padded_h, padded_w = max(height, side), max(width, side)
    canvas = np.full((padded_h, padded_w, 3), 255, np.uint8)
    canvas[:height, :width] = image
    ys = sorted({*range(0, padded_h - side, step), padded_h - side})
    xs = sorted({*range(0, padded_w - side, step), padded_w - side})
    out: dict[str, np.ndarray] = {}
    corners = [(y, x) for y in ys for x in xs]
    for start in range(0, len(corners), batch):
        chosen = corners[start : start + batch]
        maps = predict(np.stack([canvas[y : y + side, x : x + side] for y, x in chosen]))
        for name, values in maps.items():
            target = out.setdefault(
                name, np.zeros((values.shape[1], padded_h, padded_w), np.float32)
            )
            for i, (y, x) in enumerate(chosen):
                # Keep the window's centre, and its outer part only at the canvas edges.
                top = 0 if y == 0 else margin
                left = 0 if x == 0 else margin
                bottom = side if y + side >= padded_h else side - margin
                right = side if x + side >= padded_w else side - margin
                target[:, y + top : y + bottom, x + left : x + right] = values[
                    i, :, top:bottom, left:right
                ]
    return {name: values[:, :height, :width] for name, values in out.items()}
