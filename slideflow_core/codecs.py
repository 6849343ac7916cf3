"""JPEG tiles in Zarr v3: a codec for RGB chunks, complete streams from TIFF tiles, reduced decodes.

:class:`JpegCodec` is a Zarr v3 array-to-bytes codec named ``"slideflow_core.jpeg"``:
every chunk is one complete baseline JPEG stream of an ``(…, H, W, 3)`` uint8
chunk whose leading sizes are 1 (one tile per chunk). It is registered with Zarr
when :mod:`slideflow_core` is imported and through the ``zarr.codecs`` entry
point, so ``zarr.open_group`` (and xarray, napari, Dask) read such arrays in any
process where the package is installed.

Chunks are decoded with libjpeg-turbo (:func:`imagecodecs.jpeg8_decode`) letting
the stream say its colour space, so a tile copied unchanged from a slide and a
tile encoded here decode alike. That is why :func:`complete_jpeg` makes a TIFF
tile self-describing: it splices in the tables TIFF keeps once per page
(``JPEGTables``) and, for Aperio's RGB-without-transform tiles, adds an Adobe
APP14 marker saying so (libjpeg would otherwise read the components as YCbCr).

:func:`decode_reduced` decodes at ½, ¼ or ⅛ scale with libjpeg-turbo's DCT
scaling (through simplejpeg), which skips most of the inverse DCT and the resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

CODEC_NAME = "slideflow_core.jpeg"
#: Scales libjpeg decodes at without a full inverse DCT.
REDUCED_SCALES = (1, 2, 4, 8)

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
# APP14 "Adobe", version 100, flags 0/0, transform 0: the 3 components are RGB as stored.
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Zarr v3 codec storing each ``(1, …, H, W, 3)`` uint8 chunk as one JPEG stream.

    Parameters
    ----------
    quality
        libjpeg quality (1-100) used when this codec encodes; chunks copied in
        already encoded (pass-through tiles) keep their own tables.
    """

    is_fixed_size = False

    quality: int

    def __init__(self, *, quality: int = 90) -> None:
        if not (isinstance(quality, int) and 1 <= quality <= 100):
            raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
        object.__setattr__(self, "quality", quality)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        """Rebuild from array metadata."""
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        """The codec as array metadata."""
        return {"name": CODEC_NAME, "configuration": {"quality": self.quality}}

    def validate(self, *, shape: Any, dtype: Any, chunk_grid: Any) -> None:
        """Refuse arrays whose chunks are not single 8-bit RGB images."""
        if np.dtype(dtype.to_native_dtype()) != np.uint8:
            raise ValueError(f"{CODEC_NAME} stores uint8 pixels, not {dtype}")

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        image = decode_jpeg(chunk_bytes.to_bytes())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image.reshape(chunk_spec.shape))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = encode_jpeg(chunk_array.as_numpy_array(), quality=self.quality)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        """Unknown before encoding (JPEG is variable-size)."""
        raise NotImplementedError


def decode_jpeg(data: bytes) -> np.ndarray:
    """A complete JPEG stream (a chunk of :class:`JpegCodec`) as ``(H, W, 3)`` uint8 RGB.

    libjpeg-turbo reads the colour space from the stream (JFIF YCbCr, or RGB
    marked by an Adobe APP14 segment).
    """
    import imagecodecs

    return imagecodecs.jpeg8_decode(data)


def encode_jpeg(image: np.ndarray, *, quality: int) -> bytes:
    """One RGB image (leading sizes of 1 allowed) as a baseline JFIF JPEG stream.

    Chroma is kept at full resolution (4:4:4): on H&E, 4:2:0 subsampling costs
    about 10 dB of PSNR (30 instead of 41 dB at quality 90) for a third less size.
    """
    import imagecodecs

    pixels = np.asarray(image, np.uint8)
    pixels = pixels.reshape(pixels.shape[-3:])
    if pixels.shape[-1] != 3:
        raise ValueError(f"JPEG chunks must be (…, H, W, 3), got {image.shape}")
    return bytes(imagecodecs.jpeg8_encode(pixels, level=quality, subsampling="444"))


def complete_jpeg(data: bytes, tables: bytes | None, *, rgb: bool) -> bytes:
    """A self-contained JPEG stream from a TIFF tile's (possibly abbreviated) stream.

    Parameters
    ----------
    data
        The tile's bytes as stored (``SOI … EOI``).
    tables
        The page's ``JPEGTables`` (``SOI``, quantisation and Huffman tables, ``EOI``),
        or None when every tile carries its own.
    rgb
        The components are RGB with no colour transform (Aperio, photometric RGB
        without JFIF); an Adobe marker is added so any decoder keeps them as RGB.
    """
    if data[:2] != _SOI:
        raise ValueError("not a JPEG stream (no SOI marker)")
    head = _ADOBE_RGB if rgb and b"Adobe" not in data[:64] else b""
    shared = tables[2:-2] if tables and tables[-2:] == _EOI else b""
    return b"".join((_SOI, head, shared, memoryview(data)[2:]))  # one copy of the tile


def decode_reduced(data: bytes, scale: int) -> np.ndarray:
    """Decode a complete JPEG stream to RGB at ``1/scale`` size with DCT scaling.

    Decoded by libjpeg-turbo through :mod:`simplejpeg`, which also releases the
    GIL; its scaled decode is the same as OpenCV's ``IMREAD_REDUCED_COLOR_*``,
    pixel for pixel, and 15-20 % faster.

    Parameters
    ----------
    data
        A complete JPEG stream (see :func:`complete_jpeg`).
    scale
        1, 2, 4 or 8; the image is ``ceil(side / scale)`` pixels a side.

    Raises
    ------
    ValueError
        If ``scale`` is not one of these, or the stream is damaged.
    """
    import simplejpeg

    if scale not in REDUCED_SCALES:
        raise ValueError(f"scale must be one of {REDUCED_SCALES}, got {scale}")
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        # The largest reduction that keeps these sides is exactly 1/scale.
        return simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            min_height=-(-height // scale),
            min_width=-(-width // scale),
            min_factor=scale,
        )
    except ValueError as exc:
        raise ValueError(f"JPEG stream could not be decoded ({exc})") from exc


def register_codecs() -> None:
    """Make :class:`JpegCodec` known to Zarr in this process (idempotent)."""
    import warnings

    from zarr.registry import register_codec

    register_codec(CODEC_NAME, JpegCodec)
    # The Rust pipeline hands arrays with this codec back to zarr-python's, which reads them.
    warnings.filterwarnings(
        "ignore", message=f"Array is unsupported by ZarrsCodecPipeline: codec {CODEC_NAME}"
    )
