"""Ground truth of a synthetic slide: what was drawn where, in level-0 pixels."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from slideflow_core.synthetic.spec import SyntheticSlideSpec

_FORMAT = "slideflow-core synthetic truth v1"
_EMPTY_WKT = "MULTIPOLYGON EMPTY"


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """Geometry and nuclei of a synthetic slide, in level-0 pixel coordinates.

    Pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``, so its centre is ``(i + 0.5, j + 0.5)``.

    Attributes
    ----------
    width_px, height_px
        Level-0 size.
    mpp
        Level-0 µm per pixel.
    tissue
        Tissue sections (may have holes).
    pen_marks
        Marker-pen strokes, drawn translucently over tissue and glass.
    blur_regions
        Tissue rendered out of focus.
    nuclei
        ``(N, 2)`` float centroids ``(x, y)``, all inside ``tissue``.
    nuclei_radius_px
        ``(N,)`` equivalent radii (the ellipse has the area of this circle).
    nuclei_axis_ratio
        ``(N,)`` major/minor axis ratio of each elliptical nucleus.
    nuclei_angle_rad
        ``(N,)`` orientation of each major axis, counter-clockwise from +x in image axes.
    spec
        The spec the slide was generated from.
    tumour
        Tumour foci (inside ``tissue``; empty when the spec has none).
    """

    width_px: int
    height_px: int
    mpp: float
    tissue: MultiPolygon
    pen_marks: MultiPolygon
    blur_regions: MultiPolygon
    nuclei: np.ndarray = field(repr=False)
    nuclei_radius_px: np.ndarray = field(repr=False)
    nuclei_axis_ratio: np.ndarray = field(repr=False)
    nuclei_angle_rad: np.ndarray = field(repr=False)
    spec: SyntheticSlideSpec = field(repr=False)
    tumour: MultiPolygon = field(default_factory=MultiPolygon)

    @property
    def n_nuclei(self) -> int:
        """Number of nuclei."""
        return int(self.nuclei.shape[0])

    def tissue_mask(self, shape_or_downsample: tuple[int, int] | float) -> np.ndarray:
        """Rasterise :attr:`tissue`; see :func:`rasterize` for the argument."""
        return rasterize(self.tissue, (self.width_px, self.height_px), shape_or_downsample)

    def pen_mask(self, shape_or_downsample: tuple[int, int] | float) -> np.ndarray:
        """Rasterise :attr:`pen_marks`; see :func:`rasterize` for the argument."""
        return rasterize(self.pen_marks, (self.width_px, self.height_px), shape_or_downsample)

    def blur_mask(self, shape_or_downsample: tuple[int, int] | float) -> np.ndarray:
        """Rasterise :attr:`blur_regions`; see :func:`rasterize` for the argument."""
        return rasterize(self.blur_regions, (self.width_px, self.height_px), shape_or_downsample)

    def tumour_mask(self, shape_or_downsample: tuple[int, int] | float) -> np.ndarray:
        """Rasterise :attr:`tumour`; see :func:`rasterize` for the argument."""
        return rasterize(self.tumour, (self.width_px, self.height_px), shape_or_downsample)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the truth as JSON (WKT geometries) plus a ``.npz`` of nuclei beside it.

        Parameters
        ----------
        path
            JSON file to write; the nuclei go to ``<stem>.nuclei.npz`` in the same folder.

        Returns
        -------
        Path
            The JSON file.
        """
        path = Path(path)
        nuclei_path = path.with_name(f"{path.stem}.nuclei.npz")
        np.savez_compressed(
            nuclei_path,
            nuclei=self.nuclei,
            radius_px=self.nuclei_radius_px,
            axis_ratio=self.nuclei_axis_ratio,
            angle_rad=self.nuclei_angle_rad,
        )
        record = {
            "format": _FORMAT,
            "width_px": self.width_px,
            "height_px": self.height_px,
            "mpp": self.mpp,
            # Full precision so that geometries round-trip exactly.
            "tissue_wkt": shapely.to_wkt(self.tissue, rounding_precision=-1),
            "pen_marks_wkt": shapely.to_wkt(self.pen_marks, rounding_precision=-1),
            "blur_regions_wkt": shapely.to_wkt(self.blur_regions, rounding_precision=-1),
            "tumour_wkt": shapely.to_wkt(self.tumour, rounding_precision=-1),
            "nuclei_file": nuclei_path.name,
            "n_nuclei": self.n_nuclei,
            "spec": self.spec.to_dict(),
        }
        path.write_text(json.dumps(record, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SyntheticTruth:
        """Read a truth written by :meth:`save`.

        Raises
        ------
        ValueError
            If the JSON is not a synthetic-truth file.
        """
        path = Path(path)
        record = json.loads(path.read_text())
        if record.get("format") != _FORMAT:
            raise ValueError(
                f"{path} is not a synthetic truth file (format {record.get('format')!r})"
            )
        with np.load(path.with_name(record["nuclei_file"])) as arrays:
            nuclei = {name: arrays[name] for name in arrays.files}
        return cls(
            width_px=record["width_px"],
            height_px=record["height_px"],
            mpp=record["mpp"],
            tissue=as_multipolygon(shapely.from_wkt(record["tissue_wkt"])),
            pen_marks=as_multipolygon(shapely.from_wkt(record["pen_marks_wkt"])),
            blur_regions=as_multipolygon(shapely.from_wkt(record["blur_regions_wkt"])),
            nuclei=nuclei["nuclei"],
            nuclei_radius_px=nuclei["radius_px"],
            nuclei_axis_ratio=nuclei["axis_ratio"],
            nuclei_angle_rad=nuclei["angle_rad"],
            spec=SyntheticSlideSpec.from_dict(record["spec"]),
            # Truth files written before tumour foci existed have none.
            tumour=as_multipolygon(shapely.from_wkt(record.get("tumour_wkt", _EMPTY_WKT))),
        )


def as_multipolygon(geometry: shapely.Geometry) -> MultiPolygon:
    """The polygonal parts of ``geometry`` as a (possibly empty) MultiPolygon."""
    if isinstance(geometry, MultiPolygon):
        return geometry
    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry]) if not geometry.is_empty else MultiPolygon()
    parts = [g for g in getattr(geometry, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    polygons = [p for g in parts for p in (g.geoms if isinstance(g, MultiPolygon) else [g])]
    return MultiPolygon([p for p in polygons if not p.is_empty])


def rasterize(
    geometry: MultiPolygon,
    size_px: tuple[int, int],
    shape_or_downsample: tuple[int, int] | float,
) -> np.ndarray:
    """Boolean mask of ``geometry`` (level-0 px) on a coarser pixel grid.

    Parameters
    ----------
    geometry
        Polygons in level-0 pixel coordinates.
    size_px
        Level-0 ``(width, height)``.
    shape_or_downsample
        Either an output ``(height, width)`` (NumPy order, e.g. a level's array shape),
        or a downsample factor giving ``(height_px // d, width_px // d)`` like a pyramid level.
        The output needs one byte per pixel, so keep it coarse for huge slides.

    Returns
    -------
    np.ndarray
        ``bool`` array; a pixel is set when its centre lies inside the geometry.
    """
    width, height = size_px
    if isinstance(shape_or_downsample, tuple):
        out_h, out_w = (int(v) for v in shape_or_downsample)
    else:
        if not shape_or_downsample > 0:
            raise ValueError(f"downsample must be positive, got {shape_or_downsample!r}")
        out_h = max(1, int(height // shape_or_downsample))
        out_w = max(1, int(width // shape_or_downsample))
    return fill_polygons(geometry, (out_h, out_w), scale=(out_w / width, out_h / height))


def fill_polygons(
    geometry: MultiPolygon,
    shape: tuple[int, int],
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    origin: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Scanline-fill ``geometry`` into a ``shape`` (height, width) bool grid.

    Canvas pixel ``(i, j)`` has its centre at level-0 ``origin + ((i, j) + 0.5) / scale``; it
    is set when that centre is inside (even-odd rule over all rings, so holes come out). PIL's
    polygon fill is not used because it rounds vertices and includes edge pixels, which
    dilates coarse masks by up to a pixel.
    """
    height, width = shape
    rings = shapely.get_rings(shapely.get_parts(geometry))
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    xy = (xy - origin) * scale
    same_ring = ring[1:] == ring[:-1]
    (x0, y0), (x1, y1) = xy[:-1][same_ring].T, xy[1:][same_ring].T
    # Rows whose centre line y = j + 0.5 an edge crosses, half-open so a vertex counts once.
    first = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, height).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, height).astype(np.int64)
    counts = stop - first
    edge = np.repeat(np.arange(counts.size), counts)
    rows = first[edge] + np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts)
    t = (rows + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
    xs = x0[edge] + t * (x1[edge] - x0[edge])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # Consecutive crossings on a row bound an inside span; centres i + 0.5 in [x_in, x_out).
    span = np.clip(np.ceil(xs - 0.5), 0, width).astype(np.int64)
    # Spans are sorted and disjoint, so their flat bounds form a run-length encoding of the
    # mask, which np.repeat expands far faster than a cumulative sum over every pixel.
    bounds = rows * width + span
    runs = np.diff(bounds, prepend=0, append=height * width)
    inside = np.zeros(runs.size, dtype=bool)
    inside[1::2] = True
    return np.repeat(inside, runs).reshape(height, width)
