"""Nuclei of one segmented window as level-0 polygons with per-cell measurements.

A window is an image read at the segmenter's µm/px whose pixel ``(u, v)`` covers the
level-0 square starting at ``origin + (u, v) * scale``; polygons follow the outer
boundary pixels' centres. Measurements (areas in µm², lengths in µm) are taken on the
pixel masks, like QuPath's and scikit-image's region properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import Polygon

from embedders.dense.base import TileSegmentation
from embedders.dense.deconvolution import stain_concentrations

#: Measurement columns of every cell table, in order (class probabilities follow).
MEASUREMENTS = (
    "x",
    "y",
    "area_um2",
    "perimeter_um",
    "eccentricity",
    "solidity",
    "mean_od_h",
    "mean_od_e",
)


def probability_column(class_name: str) -> str:
    """Name of the measurement column holding the probability of ``class_name``."""
    return f"prob_{class_name}"


@dataclass(frozen=True)
class WindowFrame:
    """Where a window lies on the slide and which part of it a tile owns.

    Attributes
    ----------
    origin
        Level-0 ``(x, y)`` of the window's top-left pixel corner.
    scale
        Level-0 pixels per window pixel.
    mpp
        µm per window pixel.
    core
        ``(x0, y0, x1, y1)`` window pixels owned by this tile (its core region).
    open_edges
        ``(left, top, right, bottom)``: True where the window edge lies inside the slide,
        so a nucleus touching it is cut and a neighbouring window sees it whole.
    """

    origin: tuple[float, float]
    scale: float
    mpp: float
    core: tuple[float, float, float, float]
    open_edges: tuple[bool, bool, bool, bool] = (True, True, True, True)


@dataclass(frozen=True, eq=False)
class Cells:
    """Nuclei with their outlines and measurements (columns aligned by row).

    Attributes
    ----------
    polygons
        Object array of shapely polygons, level-0 px.
    columns
        Measurement name → float64 values (see :data:`MEASUREMENTS`, then ``prob_<class>``).
    classes
        Class name per row, or None when the segmenter has no classes.
    in_core
        Whether the centroid lies in the core region of the tile that found the nucleus.
    """

    polygons: np.ndarray = field(repr=False)
    columns: dict[str, np.ndarray] = field(repr=False)
    classes: np.ndarray | None = field(repr=False)
    in_core: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.polygons)

    def take(self, rows: np.ndarray) -> Cells:
        """The rows selected by a boolean mask or index array."""
        return Cells(
            polygons=self.polygons[rows],
            columns={k: v[rows] for k, v in self.columns.items()},
            classes=None if self.classes is None else self.classes[rows],
            in_core=self.in_core[rows],
        )

    @staticmethod
    def concat(parts: list[Cells], names: tuple[str, ...], with_classes: bool) -> Cells:
        """Rows of several parts, in order (``names``: the measurement columns)."""
        if not parts:
            return Cells(
                polygons=np.empty(0, object),
                columns={k: np.empty(0) for k in names},
                classes=np.empty(0, object) if with_classes else None,
                in_core=np.empty(0, bool),
            )
        return Cells(
            polygons=np.concatenate([p.polygons for p in parts]),
            columns={k: np.concatenate([p.columns[k] for p in parts]) for k in names},
            classes=np.concatenate([p.classes for p in parts]) if with_classes else None,
            in_core=np.concatenate([p.in_core for p in parts]),
        )


def _outline(mask: np.ndarray, left: int, top: int) -> tuple[Polygon, float, float]:
    """Polygon (window px) of a single-instance crop, its perimeter and convex-hull area."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    perimeter = cv2.arcLength(contour, True)
    hull_area = cv2.contourArea(cv2.convexHull(contour))
    points = contour[:, 0, :].astype(np.float64) + np.array([left + 0.5, top + 0.5])
    if len(points) < 3:  # a line of pixels: outline its pixel box instead
        x0, y0 = points.min(axis=0) - 0.5
        x1, y1 = points.max(axis=0) + 0.5
        return shapely.box(x0, y0, x1, y1), perimeter, hull_area
    polygon = Polygon(points)
    if not polygon.is_valid:  # a boundary touching itself at a one-pixel neck
        parts = shapely.get_parts(shapely.make_valid(polygon))
        parts = [p for p in parts if isinstance(p, Polygon) and p.area > 0]
        polygon = max(parts, key=lambda p: p.area) if parts else polygon.convex_hull
    return polygon, perimeter, hull_area


def measure_window(segmentation: TileSegmentation, image: np.ndarray, frame: WindowFrame) -> Cells:
    """Polygons and measurements of the nuclei of one window that this tile may report.

    A nucleus touching an open window edge is left out unless its centroid lies in the
    core (then no neighbour owns it); everything else is kept with its ``in_core`` flag
    for :func:`embedders.dense.stitch.resolve_overlaps`.
    """
    labels = segmentation.labels
    n = segmentation.n
    names = MEASUREMENTS + tuple(probability_column(c) for c in segmentation.classes)
    with_classes = bool(segmentation.classes)
    if n == 0:
        return Cells.concat([], names, with_classes)
    h_od, e_od = stain_concentrations(image)
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    mean_h = np.bincount(flat, weights=h_od.ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    mean_e = np.bincount(flat, weights=e_od.ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    height, width = labels.shape
    cx0, cy0, cx1, cy1 = frame.core
    left_open, top_open, right_open, bottom_open = frame.open_edges
    rows: list[int] = []
    polygons, cxs, cys, perims, eccs, solids, cores = [], [], [], [], [], [], []
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None or area[index] == 0:
            continue
        ys, xs = box
        mask = (labels[box] == index + 1).astype(np.uint8)
        m = cv2.moments(mask, binaryImage=True)
        cx, cy = xs.start + m["m10"] / m["m00"] + 0.5, ys.start + m["m01"] / m["m00"] + 0.5
        core = cx0 <= cx < cx1 and cy0 <= cy < cy1
        cut = (
            (left_open and xs.start == 0)
            or (top_open and ys.start == 0)
            or (right_open and xs.stop == width)
            or (bottom_open and ys.stop == height)
        )
        if cut and not core:
            continue
        polygon, perimeter, hull_area = _outline(mask, xs.start, ys.start)
        a, b, c = m["mu20"] / m["m00"], m["mu11"] / m["m00"], m["mu02"] / m["m00"]
        spread = np.sqrt(((a - c) / 2) ** 2 + b**2)
        major, minor = (a + c) / 2 + spread, (a + c) / 2 - spread
        rows.append(index)
        polygons.append(polygon)
        cxs.append(cx)
        cys.append(cy)
        perims.append(perimeter)
        eccs.append(np.sqrt(max(0.0, 1 - minor / major)) if major > 0 else 0.0)
        polygon_area = polygon.area
        solids.append(min(1.0, polygon_area / hull_area) if hull_area > 0 else 1.0)
        cores.append(core)
    keep = np.asarray(rows, np.int64)
    scale, (ox, oy) = frame.scale, frame.origin
    level0 = shapely.transform(np.asarray(polygons, dtype=object), lambda xy: xy * scale + (ox, oy))
    columns = {
        "x": np.asarray(cxs) * scale + ox,
        "y": np.asarray(cys) * scale + oy,
        "area_um2": area[keep] * frame.mpp**2,
        "perimeter_um": np.asarray(perims) * frame.mpp,
        "eccentricity": np.asarray(eccs),
        "solidity": np.asarray(solids),
        "mean_od_h": mean_h[keep],
        "mean_od_e": mean_e[keep],
    }
    classes = None
    if with_classes:
        probabilities = np.asarray(segmentation.probabilities)[keep]
        for k, name in enumerate(segmentation.classes):
            columns[probability_column(name)] = probabilities[:, k].astype(np.float64)
        classes = np.asarray(segmentation.classes, dtype=object)[probabilities.argmax(axis=1)]
    return Cells(polygons=level0, columns=columns, classes=classes, in_core=np.asarray(cores, bool))
