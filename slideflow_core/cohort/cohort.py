"""The :class:`Cohort`: the slides of a study, from a manifest or a folder."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from slideflow_core.cohort.folder import scan_folder
from slideflow_core.cohort.ids import SLIDE_EXTENSIONS
from slideflow_core.cohort.manifest import LoadedManifest, read_manifest
from slideflow_core.cohort.records import Problem, SlideRecord, ValidationReport
from slideflow_core.cohort.validation import validate_records
from slideflow_core.cohort.writer import records_to_frame, write_records
from slideflow_core.slides import Slide, open_slide


class Cohort:
    """An ordered, read-only set of slides with their patients, mpp and labels.

    Loading fails on a bad row only for an invalid ``mpp`` (listing every one):
    for anything else call :meth:`validate` to get every problem at once (and
    :meth:`ValidationReport.raise_for_problems` to stop).

    Parameters
    ----------
    records
        The slides, in manifest order.
    label_columns
        Label column names in order; defaults to the labels' keys in first-seen
        order.
    source
        Manifest path or folder the records came from, for messages.
    problems
        Problems found while reading the source; :meth:`validate` reports them.

    Examples
    --------
    >>> cohort = Cohort.from_manifest("manifest.csv")  # doctest: +SKIP
    >>> cohort.validate(deep=True).raise_for_problems()  # doctest: +SKIP
    >>> with cohort.open_slide(cohort.slide_ids[0]) as slide:  # doctest: +SKIP
    ...     print(slide.mpp)
    """

    def __init__(
        self,
        records: Iterable[SlideRecord],
        *,
        label_columns: Sequence[str] | None = None,
        source: str | None = None,
        problems: Iterable[Problem] = (),
    ) -> None:
        self._records = tuple(records)
        if label_columns is None:
            label_columns = list(dict.fromkeys(k for r in self._records for k in r.labels))
        self._label_columns = tuple(label_columns)
        self._source = source
        self._load_problems = tuple(problems)
        self._by_id: dict[str, list[SlideRecord]] = {}
        for record in self._records:
            self._by_id.setdefault(record.slide_id, []).append(record)

    @classmethod
    def _from_loaded(cls, loaded: LoadedManifest) -> Cohort:
        return cls(
            loaded.records,
            label_columns=loaded.label_columns,
            source=loaded.source,
            problems=loaded.problems,
        )

    @classmethod
    def from_manifest(
        cls,
        source: str | os.PathLike[str] | pd.DataFrame,
        *,
        root: str | os.PathLike[str] | None = None,
    ) -> Cohort:
        """Load a manifest: CSV/TSV, Parquet or a DataFrame.

        Parameters
        ----------
        source
            ``.csv``/``.txt``, ``.tsv``/``.tab``, ``.parquet``/``.pq`` file, or a
            DataFrame. Columns ``slide_id`` and ``path`` are required,
            ``patient_id`` (defaults to the slide id) and ``mpp`` (level-0 µm
            per pixel overriding the file) optional; all others are labels.
        root
            Folder relative paths are resolved against (default: the
            manifest's folder, or the working directory for a DataFrame).
            URIs such as ``s3://...`` are kept as written.

        Raises
        ------
        FileNotFoundError
            If the manifest does not exist.
        ManifestError
            If required columns are missing (naming them and the columns
            found), column names are duplicated or empty, the file cannot be
            parsed, or ``mpp`` values are invalid (``0``, ``-0.5``, ``abc``,
            ``inf``, ``nan``: every one listed with its line; an empty cell
            means no override). Other bad values in rows are left to
            :meth:`validate`.
        """
        return cls._from_loaded(read_manifest(source, root=root))

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        *,
        extensions: Sequence[str] = SLIDE_EXTENSIONS,
        recursive: bool = False,
        labels: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Cohort:
        """Every slide file in ``folder``, with ids from the file names.

        The id is the file name without its slide extension (``x.ome.tif`` ->
        ``x``) and the patient id is the slide id unless ``labels`` gives one.
        A DICOM slide stored as several files appears once per file; write a
        manifest naming one file per slide for those.

        Parameters
        ----------
        folder
            Folder to scan.
        extensions
            Extensions that mark slide files (default: :data:`SLIDE_EXTENSIONS`).
        recursive
            Also scan subfolders.
        labels
            ``slide_id -> {column: value}``; ``patient_id`` and ``mpp`` keys fill
            those fields, other keys become label columns.

        Raises
        ------
        FileNotFoundError
            If the folder does not exist.
        ManifestError
            If it holds no slide file, or ``labels`` give invalid ``mpp`` values.
        """
        return cls._from_loaded(
            scan_folder(folder, extensions=extensions, recursive=recursive, labels=labels)
        )

    # -- access --------------------------------------------------------------------
    @property
    def records(self) -> tuple[SlideRecord, ...]:
        """All slides, in manifest order."""
        return self._records

    @property
    def source(self) -> str | None:
        """Manifest file or folder the cohort was read from, if any."""
        return self._source

    @property
    def slide_ids(self) -> tuple[str, ...]:
        """Slide ids in manifest order."""
        return tuple(r.slide_id for r in self._records)

    @property
    def patient_ids(self) -> tuple[str, ...]:
        """Distinct patient ids in order of first appearance."""
        return tuple(dict.fromkeys(r.patient_id for r in self._records))

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Names of the label columns, in manifest order."""
        return self._label_columns

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[SlideRecord]:
        return iter(self._records)

    def __contains__(self, slide_id: object) -> bool:
        return slide_id in self._by_id

    def __getitem__(self, slide_id: str) -> SlideRecord:
        """The record of ``slide_id``.

        Raises
        ------
        KeyError
            If no slide, or more than one, has this id.
        """
        matches = self._by_id.get(slide_id)
        if not matches:
            raise KeyError(f"no slide {slide_id!r} in this cohort of {len(self)} slides")
        if len(matches) > 1:
            where = ", ".join(r.where() if r.line is not None else r.path for r in matches)
            raise KeyError(f"slide id {slide_id!r} is ambiguous: it is on {where}")
        return matches[0]

    def __repr__(self) -> str:
        source = f", source={self._source!r}" if self._source else ""
        return (
            f"Cohort({len(self)} slides, {len(self.patient_ids)} patients, "
            f"labels={list(self._label_columns)}{source})"
        )

    # -- derived cohorts and output ------------------------------------------------
    def subset(self, slide_ids: Iterable[str]) -> Cohort:
        """The cohort restricted to ``slide_ids``, in this cohort's order.

        Raises
        ------
        KeyError
            Naming every id that is not in the cohort.
        """
        wanted = {slide_ids} if isinstance(slide_ids, str) else set(slide_ids)
        unknown = sorted(wanted - self._by_id.keys())
        if unknown:
            shown = ", ".join(map(repr, unknown[:10]))
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise KeyError(f"{len(unknown)} slide id(s) not in the cohort: {shown}{more}")
        records = [r for r in self._records if r.slide_id in wanted]
        lines = {r.line for r in records if r.line is not None}
        problems = [p for p in self._load_problems if p.slide_id in wanted or p.line in lines]
        return Cohort(
            records, label_columns=self._label_columns, source=self._source, problems=problems
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per slide: ``slide_id``, ``path``, ``patient_id``, ``mpp``, then labels.

        Integer labels use pandas' nullable ``Int64`` so unlabelled slides stay
        missing rather than turning the column into floats.
        """
        return records_to_frame(self._records, self._label_columns)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the resolved cohort (absolute paths) as CSV/TSV or Parquet by suffix.

        Parquet keeps label types exactly. CSV stores text: on reading back, a
        label that looks like a number (``007``) becomes one, and ``True`` is text.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        return write_records(self._records, self._label_columns, path)

    def open_slide(self, slide_id: str, **kwargs: Any) -> Slide:
        """Open a slide of the cohort, applying the manifest's ``mpp`` override.

        Keyword arguments go to :func:`slideflow_core.slides.open_slide`; an
        explicit ``mpp`` wins over the manifest's.
        """
        record = self[slide_id]
        if record.mpp is not None:
            kwargs.setdefault("mpp", record.mpp)
        kwargs.setdefault("slide_id", record.slide_id)
        return open_slide(record.path, **kwargs)

    def validate(
        self, *, check_files: bool = True, deep: bool = False, workers: int = 8
    ) -> ValidationReport:
        """Check every row and return all problems at once.

        Always checked: empty, unsafe and duplicate slide ids, empty paths,
        ragged rows and label columns mixing types (invalid ``mpp`` values
        already stopped loading). Ids and paths in messages are shown with
        control characters escaped.

        Parameters
        ----------
        check_files
            Check that local files exist and are readable (URIs are skipped).
        deep
            Also open every slide: report unreadable files, and slides with no
            calibration in the file and no ``mpp`` in the manifest.
        workers
            Threads used to open slides when ``deep``.

        Returns
        -------
        ValidationReport
            Its ``ok`` is true when nothing is wrong; ``str()`` is a readable
            summary and :meth:`~ValidationReport.raise_for_problems` raises
            :class:`~slideflow_core.errors.ManifestError` listing every problem.
        """
        return validate_records(
            self._records,
            label_columns=self._label_columns,
            load_problems=self._load_problems,
            source=self._source,
            check_files=check_files,
            deep=deep,
            workers=workers,
        )
