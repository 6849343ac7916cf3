"""Slide ids become file names, so ids that could escape or break a folder are refused."""

from __future__ import annotations

import pytest

from slideflow_core.cohort import MAX_ID_BYTES, safe_slide_id


@pytest.mark.parametrize(
    "value",
    [
        "TCGA-A1-A0SB-01Z-00-DX1",
        "slide_001",
        "a.b.c",
        "patient 7 slide 2",
        "é-ü-日本",
        "x" * MAX_ID_BYTES,
        "CONSOLE",  # only the exact device names are reserved
    ],
)
def test_ordinary_ids_are_returned_unchanged(value: str) -> None:
    assert safe_slide_id(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is empty"),
        (".", "'.' or '..'"),
        ("..", "'.' or '..'"),
        ("../../etc", "path separator"),
        ("a/../../b", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("/etc/passwd", "path separator"),
        ("x\x00y", "control character"),
        ("x\ny", "control character"),
        ("x\ty", "control character"),
        ("x\x7fy", "control character"),
        (".hidden", "starts with '.'"),
        ("-rf", "starts with '-'"),
        (" lead", "whitespace"),
        ("trail ", "whitespace"),
        ("trail.", "ends with '.'"),
        ("x" * (MAX_ID_BYTES + 1), "bytes long"),
        ("é" * (MAX_ID_BYTES // 2 + 1), "bytes long"),  # two bytes each in UTF-8
        ("CON", "reserved device name"),
        ("nul", "reserved device name"),
        ("COM1", "reserved device name"),
        ("lpt9.svs", "reserved device name"),
        ("a:b", "not allowed in Windows"),
        ("what?", "not allowed in Windows"),
        ("x\ud800", "not valid Unicode"),
    ],
)
def test_hostile_ids_are_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match="unsafe slide id") as caught:
        safe_slide_id(value)
    assert reason in str(caught.value)


def test_non_strings_are_refused() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        safe_slide_id(3)  # type: ignore[arg-type]
