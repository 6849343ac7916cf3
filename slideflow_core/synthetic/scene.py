"""Scene layout: tissue sections, pen strokes, out-of-focus patches and nuclei.

Everything here is vector geometry and point lists in level-0 pixels; :mod:`render` turns it
into pixels tile by tile. All randomness comes from one generator seeded by the spec, drawn
in a fixed order, so a spec always yields the same scene.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon, box

from slideflow_core.synthetic.spec import SyntheticSlideSpec
from slideflow_core.synthetic.textures import periodic_field
from slideflow_core.synthetic.truth import SyntheticTruth, as_multipolygon

# Ink transmittance per RGB channel (multiplied onto what lies under the stroke).
PEN_INKS: dict[str, tuple[float, float, float]] = {
    "green": (0.32, 0.68, 0.42),
    "blue": (0.28, 0.36, 0.80),
    "black": (0.20, 0.20, 0.24),
}
_BOUNDARY_VERTICES = 360
# Largest radial bulge of a blob relative to its base ellipse.
_MAX_BULGE = 1.3
# Cap on the share of a grid cell a tissue section's base ellipse may span.
_MAX_CELL_SPAN = 0.72
# Nuclei are sampled in batches so that memory stays bounded for huge slides.
_NUCLEI_BATCH = 2_000_000
# Nucleus density varies smoothly over this distance; the grid holding it is this coarse.
_DENSITY_SCALE_UM = 120.0
_DENSITY_CELL_UM = 20.0


@dataclass(frozen=True, eq=False)
class PenStroke:
    """One marker stroke: its outline and the ink's RGB transmittance."""

    outline: MultiPolygon
    transmittance: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Scene:
    """The ground truth plus what only the renderer needs."""

    truth: SyntheticTruth
    pen_strokes: tuple[PenStroke, ...]
    # Whole out-of-focus patches (the truth keeps only their tissue part).
    blur_patches: MultiPolygon


def build_scene(spec: SyntheticSlideSpec) -> Scene:
    """Lay out a synthetic slide: geometry first, then nuclei inside the tissue."""
    rng = np.random.default_rng(spec.seed)
    frame = box(0, 0, spec.width_px, spec.height_px)
    tissue = as_multipolygon(_tissue_sections(spec, rng).intersection(frame))
    strokes = tuple(_pen_stroke(spec, rng, frame) for _ in range(spec.n_pen_marks))
    patches = _blur_patches(spec, rng, tissue, frame)
    tumour = _tumour_foci(spec, rng, tissue)
    nuclei = _nuclei(spec, rng, tissue, tumour)
    truth = SyntheticTruth(
        width_px=spec.width_px,
        height_px=spec.height_px,
        mpp=spec.mpp,
        tissue=tissue,
        pen_marks=as_multipolygon(shapely.union_all([s.outline for s in strokes])),
        blur_regions=as_multipolygon(patches.intersection(tissue)),
        nuclei=nuclei["xy"],
        nuclei_radius_px=nuclei["radius_px"],
        nuclei_axis_ratio=nuclei["axis_ratio"],
        nuclei_angle_rad=nuclei["angle_rad"],
        spec=spec,
        tumour=tumour,
    )
    return Scene(truth, strokes, patches)


def smooth_blob(
    rng: np.random.Generator,
    centre: tuple[float, float],
    semi_axes: tuple[float, float],
    *,
    roughness: float = 0.22,
) -> Polygon:
    """A smooth irregular closed shape: an ellipse with random low-order radial harmonics.

    The radius never exceeds ``_MAX_BULGE`` times the ellipse's, so callers can bound the extent.
    """
    theta = np.linspace(0.0, 2.0 * math.pi, _BOUNDARY_VERTICES, endpoint=False)
    bulge = np.zeros_like(theta)
    for k in range(2, 8):  # low orders give lobes; order 1 would only shift the shape
        bulge += rng.uniform(0, roughness / k**0.8) * np.cos(
            k * theta + rng.uniform(0, 2 * math.pi)
        )
    for k in range(8, 40):  # a faint ragged edge, as cut tissue has
        bulge += rng.uniform(0, 0.004) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    bulge *= min(1.0, (_MAX_BULGE - 1.0) / max(bulge.max(), 1e-9))
    bulge = np.maximum(bulge, -0.5)
    x = centre[0] + semi_axes[0] * (1 + bulge) * np.cos(theta)
    y = centre[1] + semi_axes[1] * (1 + bulge) * np.sin(theta)
    # A positive radial function is star-shaped about the centre, so the ring never crosses.
    return Polygon(np.column_stack([x, y]))


def _tissue_sections(spec: SyntheticSlideSpec, rng: np.random.Generator) -> MultiPolygon:
    """One blob per grid cell for ``n_tissue_regions`` random cells; some get holes."""
    n = spec.n_tissue_regions
    if n == 0:
        return MultiPolygon()
    width, height = spec.width_px, spec.height_px
    cols = max(1, math.ceil(math.sqrt(n * width / height)))
    rows = math.ceil(n / cols)
    cell_w, cell_h = width / cols, height / rows
    # Scale the base ellipse so that the sections cover about tissue_fraction of the slide.
    span = math.sqrt(spec.tissue_fraction * width * height / (n * math.pi * cell_w * cell_h / 4))
    sections = []
    for cell in rng.permutation(rows * cols)[:n]:
        row, col = divmod(int(cell), cols)
        share = min(span, _MAX_CELL_SPAN) * rng.uniform(0.85, 1.0)
        semi = (share * cell_w / 2, share * cell_h / 2)
        # Jitter the centre within the room the blob's largest extent leaves in its cell.
        room_x = max(0.0, cell_w / 2 - semi[0] * _MAX_BULGE)
        room_y = max(0.0, cell_h / 2 - semi[1] * _MAX_BULGE)
        centre = (
            (col + 0.5) * cell_w + rng.uniform(-room_x, room_x),
            (row + 0.5) * cell_h + rng.uniform(-room_y, room_y),
        )
        section = smooth_blob(rng, centre, semi)
        if rng.random() < spec.hole_probability:
            section = _punch_holes(rng, section, min(semi), int(rng.integers(1, 3)))
        sections.append(section)
    return as_multipolygon(shapely.union_all(sections))


def _punch_holes(
    rng: np.random.Generator, section: Polygon, size_px: float, n_holes: int
) -> Polygon:
    """Cut ``n_holes`` small blobs that lie well inside ``section``."""
    for _ in range(n_holes):
        radius = rng.uniform(0.08, 0.18) * size_px
        inner = section.buffer(-2.0 * radius)
        if inner.is_empty:
            continue
        centre = _random_point_in(rng, inner)
        hole = smooth_blob(rng, centre, (radius, radius * rng.uniform(0.6, 1.0)), roughness=0.3)
        section = section.difference(hole)
    return section


def _random_point_in(rng: np.random.Generator, area: shapely.Geometry) -> tuple[float, float]:
    """A uniform random point inside ``area`` (rejection sampling in its bounds)."""
    x0, y0, x1, y1 = area.bounds
    while True:
        x, y = rng.uniform(x0, x1, 64), rng.uniform(y0, y1, 64)
        inside = np.flatnonzero(shapely.contains_xy(area, x, y))
        if inside.size:
            return float(x[inside[0]]), float(y[inside[0]])


def _pen_stroke(spec: SyntheticSlideSpec, rng: np.random.Generator, frame: Polygon) -> PenStroke:
    """A gently wavy marker line crossing part of the slide."""
    width, height = spec.width_px, spec.height_px
    length = rng.uniform(0.3, 0.7) * min(width, height)
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    angle = rng.uniform(0, 2 * math.pi)
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-along[1], along[0]])
    t = np.linspace(0.0, 1.0, 96)[:, None]
    wave = rng.uniform(0.02, 0.1) * length * np.sin(2 * math.pi * rng.uniform(0.3, 1.5) * t)
    line = LineString(start + t * length * along + wave * across)
    outline = as_multipolygon(line.buffer(spec.pen_stroke_px / 2).intersection(frame))
    ink = PEN_INKS[str(rng.choice(list(PEN_INKS)))]
    return PenStroke(outline, ink)


def _blobs_in_tissue(
    rng: np.random.Generator,
    tissue: MultiPolygon,
    count: int,
    radius_px: Callable[[Polygon], float],
) -> shapely.Geometry:
    """Union of ``count`` blobs, each centred on a random point of a section chosen by area.

    ``radius_px(section)`` draws the blob's radius; it is called before the centre is drawn.
    """
    sections = list(tissue.geoms)
    weights = np.array([s.area for s in sections])
    blobs = []
    for _ in range(count):
        section = sections[int(rng.choice(len(sections), p=weights / weights.sum()))]
        radius = radius_px(section)
        centre = _random_point_in(rng, section)
        blobs.append(smooth_blob(rng, centre, (radius, radius * rng.uniform(0.6, 1.0))))
    return shapely.union_all(blobs)


def _blur_patches(
    spec: SyntheticSlideSpec, rng: np.random.Generator, tissue: MultiPolygon, frame: Polygon
) -> MultiPolygon:
    """Out-of-focus blobs, each centred on a random point of a random tissue section."""
    if tissue.is_empty or spec.n_blur_regions == 0:
        return MultiPolygon()
    patches = _blobs_in_tissue(
        rng,
        tissue,
        spec.n_blur_regions,
        lambda section: rng.uniform(0.15, 0.3) * math.sqrt(section.area / math.pi),
    )
    return as_multipolygon(patches.intersection(frame))


def _tumour_foci(
    spec: SyntheticSlideSpec, rng: np.random.Generator, tissue: MultiPolygon
) -> MultiPolygon:
    """Tumour blobs centred on random tissue points (area-weighted), clipped to the tissue.

    Draws nothing from ``rng`` when there are no foci, so tumour-free specs keep their slides.
    """
    if tissue.is_empty or spec.n_tumour_regions == 0:
        return MultiPolygon()
    foci = _blobs_in_tissue(
        rng,
        tissue,
        spec.n_tumour_regions,
        lambda _: rng.uniform(*spec.tumour_radius_um) / spec.mpp,
    )
    return as_multipolygon(foci.intersection(tissue))


def _nuclei(
    spec: SyntheticSlideSpec,
    rng: np.random.Generator,
    tissue: MultiPolygon,
    tumour: MultiPolygon,
) -> dict[str, np.ndarray]:
    """Nuclei in the tissue, ordered by level-0 tile (row-major).

    The count is Poisson with mean ``area x nuclei_per_mm2``; positions follow a smoothly
    varying density (cellular and sparse areas), which gives the slide large-scale variety.
    Tumour foci get their own, denser population of larger, more elongated nuclei.
    """
    normal = tissue if tumour.is_empty else as_multipolygon(tissue.difference(tumour))
    count = _poisson_count(rng, normal, spec.mpp, spec.nuclei_per_mm2)
    density = _DensityField(rng, spec)
    populations = [
        _population(
            rng, normal, density, count, spec.mpp, spec.nucleus_diameter_um, max_axis_ratio=1.7
        )
    ]
    if not tumour.is_empty:
        count = _poisson_count(rng, tumour, spec.mpp, spec.tumour_nuclei_per_mm2)
        populations.append(
            _population(
                rng,
                tumour,
                density,
                count,
                spec.mpp,
                spec.tumour_nucleus_diameter_um,
                max_axis_ratio=2.2,
            )
        )
    nuclei = {k: np.concatenate([p[k] for p in populations]) for k in populations[0]}
    xy = nuclei["xy"]
    tiles_across = math.ceil(spec.width_px / spec.tile_px)
    tile_index = (xy[:, 1] // spec.tile_px) * tiles_across + xy[:, 0] // spec.tile_px
    order = np.argsort(tile_index, kind="stable")
    return {k: v[order] for k, v in nuclei.items()}


def _poisson_count(rng: np.random.Generator, area: MultiPolygon, mpp: float, per_mm2: float) -> int:
    area_mm2 = area.area * mpp**2 / 1e6
    return int(rng.poisson(area_mm2 * per_mm2)) if area_mm2 > 0 else 0


def _population(
    rng: np.random.Generator,
    area: MultiPolygon,
    density: _DensityField,
    count: int,
    mpp: float,
    diameter_um: tuple[float, float],
    *,
    max_axis_ratio: float,
) -> dict[str, np.ndarray]:
    """Positions and shapes of ``count`` nuclei in ``area``."""
    xy = _points_in(rng, area, count, density)
    low, high = diameter_um
    return {
        "xy": xy,
        "radius_px": rng.uniform(low, high, count) / 2 / mpp,
        "axis_ratio": rng.uniform(1.0, max_axis_ratio, count),
        "angle_rad": rng.uniform(0.0, math.pi, count),
    }


class _DensityField:
    """Relative nucleus density (0.2 to 1), smooth over ``_DENSITY_SCALE_UM``, on a coarse grid."""

    def __init__(self, rng: np.random.Generator, spec: SyntheticSlideSpec) -> None:
        self.cell_px = _DENSITY_CELL_UM / spec.mpp
        cells = max(
            math.ceil(spec.width_px / self.cell_px), math.ceil(spec.height_px / self.cell_px), 2
        )
        field = periodic_field(rng, cells, _DENSITY_SCALE_UM / _DENSITY_CELL_UM)
        self.grid = np.clip(0.6 + 0.35 * field, 0.2, 1.0)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        last = self.grid.shape[0] - 1
        col = np.clip((x / self.cell_px).astype(np.int64), 0, last)
        row = np.clip((y / self.cell_px).astype(np.int64), 0, last)
        return self.grid[row, col]


def _points_in(
    rng: np.random.Generator, area: MultiPolygon, count: int, density: _DensityField
) -> np.ndarray:
    """``count`` random points in ``area`` with probability proportional to ``density``.

    Rejection sampling (uniform in the bounds, kept if inside and with probability equal to
    the density, at most 1) in bounded batches.
    """
    if count == 0:
        return np.empty((0, 2))
    x0, y0, x1, y1 = area.bounds
    acceptance = area.area / ((x1 - x0) * (y1 - y0)) * float(density.grid.mean())
    shapely.prepare(area)
    chunks: list[np.ndarray] = []
    found = 0
    while found < count:
        batch = min(_NUCLEI_BATCH, int((count - found) / acceptance * 1.2) + 64)
        x, y = rng.uniform(x0, x1, batch), rng.uniform(y0, y1, batch)
        keep = rng.random(batch) < density(x, y)
        keep[keep] = shapely.contains_xy(area, x[keep], y[keep])
        chunk = np.column_stack([x[keep], y[keep]])[: count - found]
        chunks.append(chunk)
        found += len(chunk)
    return np.concatenate(chunks)
