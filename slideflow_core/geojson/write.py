"""Stream GeoJSON to disk: a FeatureCollection or newline-delimited features, plain or gzipped.

QuPath imports the FeatureCollection (``.geojson``, ``.geojson.gz``), not the
newline-delimited form (``.ndjson`` and its aliases), which is for streaming
tools such as GDAL/OGR (GeoJSONSeq) or ``jq``.

Features arrive in batches of encoded text (see :mod:`slideflow_core.geojson.objects`)
and go straight to the file, so memory stays flat however many features a
slide has. A background thread does the writing (and the gzip compression,
which releases the GIL) while the caller encodes the next batch; at most one
batch waits in between. The file is written under ``<name>.partial`` and
renamed into place when the writer closes cleanly: a crashed export never
leaves a truncated file that QuPath would half-import.
"""

from __future__ import annotations

import gzip
import os
import queue
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from slideflow_core.geojson.objects import feature_text

NDJSON_SUFFIXES = (".ndjson", ".geojsonl", ".geojsonseq", ".jsonl")
_HEAD = '{"type":"FeatureCollection","features":[\n'
_TAIL = "\n]}\n"


def is_ndjson(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s suffix asks for newline-delimited features (``.ndjson``, …, ``.gz``)."""
    name = Path(path).name.lower()
    name = name[: -len(".gz")] if name.endswith(".gz") else name
    return name.endswith(NDJSON_SUFFIXES)


class _Sink:
    """Writes byte chunks to a file from a background thread (bounded queue)."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="geojson-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._target.write(chunk)
                except BaseException as exc:  # handed to the caller on the next write
                    self._error = exc

    def write(self, chunk: bytes) -> None:
        self._raise()
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._target.close()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


class GeoJSONWriter:
    """Write features to a ``.geojson`` / ``.geojson.gz`` (or newline-delimited) file.

    Parameters
    ----------
    path
        Output file; a ``.gz`` suffix compresses with gzip (QuPath reads both).
    ndjson
        One feature per line instead of a FeatureCollection; by default chosen
        from the suffix (``.ndjson``, ``.geojsonl``, ``.geojsonseq``, ``.jsonl``).
    compresslevel
        gzip level (1 fastest … 9 smallest) for ``.gz`` outputs.

    Examples
    --------
    >>> with GeoJSONWriter("tiles.geojson.gz") as out:  # doctest: +SKIP
    ...     out.write_encoded(tile_features(coords, 256, ids=IdSource("s1/tiles")))
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ndjson: bool | None = None,
        compresslevel: int = 6,
    ) -> None:
        if not 1 <= compresslevel <= 9:
            raise ValueError(f"compresslevel must be 1-9, got {compresslevel}")
        self.path = Path(path)
        self.ndjson = is_ndjson(self.path) if ndjson is None else ndjson
        self.count = 0
        self._compresslevel = compresslevel
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._sink: _Sink | None = None

    def __enter__(self) -> GeoJSONWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._partial, "wb")
        target: IO[bytes] = self._file
        if self.path.name.lower().endswith(".gz"):
            target = gzip.GzipFile(
                filename=self.path.name[:-3],
                mode="wb",
                fileobj=self._file,
                compresslevel=self._compresslevel,
            )
        self._sink = _Sink(target)
        if not self.ndjson:
            self._sink.write(_HEAD.encode("utf-8"))
        return self

    def write_encoded(self, features: Iterable[str]) -> int:
        """Append already-encoded features (one JSON object each); returns how many."""
        if self._sink is None:
            raise RuntimeError("GeoJSONWriter is not open; use it as a context manager")
        batch = list(features)
        if not batch:
            return 0
        sep = "\n" if self.ndjson else ",\n"
        lead = "" if self.count == 0 or self.ndjson else ",\n"
        text = lead + sep.join(batch) + ("\n" if self.ndjson else "")
        self._sink.write(text.encode("utf-8"))
        self.count += len(batch)
        return len(batch)

    def write(self, feature: Mapping[str, Any]) -> None:
        """Append one feature given as a mapping (non-finite measurements are dropped)."""
        self.write_encoded([feature_text(feature, self.count)])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sink, self._sink = self._sink, None
        if sink is None:
            return
        done = False
        try:
            if exc_type is None and not self.ndjson:
                sink.write(_TAIL.encode("utf-8"))
            sink.close()  # writes the gzip trailer; the file below it stays open
            done = exc_type is None
        finally:
            self._file.close()
            if done:
                os.replace(self._partial, self.path)
            else:
                self._partial.unlink(missing_ok=True)
