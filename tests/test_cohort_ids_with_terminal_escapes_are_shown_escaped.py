"""A slide id (or path) carrying terminal escape sequences is never printed raw.

``sfc cohort validate`` shows such ids and paths with their control characters
escaped (``'\\x1b[31mred'``), so a hostile manifest can neither recolour, retitle
nor rewrite the user's terminal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slideflow_core.cohort import Cohort, Problem, ProjectLayout, SlideRecord
from slideflow_core.cohort.ids import ID_HINT, UnsafeSlideIdError, printable
from slideflow_core.errors import SlideflowError, failure_text

SFC = Path(sys.executable).with_name("sfc")
RED = "\x1b[31mred"  # ESC [ 31 m: switch the terminal to red
TITLE = "\x1b]0;pwned\x07"  # OSC: set the window title, ended by BEL
CSI = "\x9b2J"  # the one-byte C1 form of ESC [ (clear screen on some terminals)
RAW_BYTES = (b"\x1b", b"\x07", "\x9b".encode(), "\u202e".encode())


def _sfc(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(SFC), *args], capture_output=True, timeout=120, check=False)


def _assert_escaped(done: subprocess.CompletedProcess[bytes]) -> str:
    for raw in RAW_BYTES:
        assert raw not in done.stdout and raw not in done.stderr, raw
    return (done.stdout + done.stderr).decode()


@pytest.fixture
def hostile_manifest(tmp_path: Path, slides_dir: Path) -> Path:
    unreadable = tmp_path / f"{RED}.svs"  # exists, so --deep opens it and fails
    shutil.copy(slides_dir / "unreadable.svs", unreadable)
    rows = [
        ("slide_id", "path"),
        (RED, str(unreadable)),
        ("gone", str(tmp_path / f"{TITLE}gone.svs")),
        (f"ok{CSI}", str(slides_dir / "small.svs")),
        ("rtl\u202efdp.svs", str(tmp_path / "\u202emissing.svs")),
    ]
    path = tmp_path / "manifest.csv"
    path.write_text("".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_validate_prints_ids_and_paths_escaped(hostile_manifest):
    done = _sfc("cohort", "validate", str(hostile_manifest))
    assert done.returncode == 1
    text = _assert_escaped(done)
    assert "line 2 (slide '\\x1b[31mred', column 'slide_id')" in text
    assert "control character '\\x1b'" in text
    assert "file not found: " in text and "\\x1b]0;pwned\\x07gone.svs" in text
    assert "slide 'ok\\x9b2J'" in text
    assert "\\u202emissing.svs" in text


def test_deep_validation_escapes_reader_errors_too(hostile_manifest):
    done = _sfc("cohort", "validate", str(hostile_manifest), "--deep")
    assert done.returncode == 1
    text = _assert_escaped(done)
    assert "line 2 (slide '\\x1b[31mred', column 'path'): unreadable" in text


def test_json_output_keeps_the_id_exact_and_escaped(hostile_manifest):
    done = _sfc("cohort", "validate", str(hostile_manifest), "--json")
    _assert_escaped(done)
    problems = json.loads(done.stdout)
    assert RED in {p["slide_id"] for p in problems}  # the data itself is not altered


def test_load_errors_escape_ids(tmp_path, slides_dir):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"slide_id,path,mpp\n{RED},{slides_dir / 'small.svs'},-1\n")
    done = _sfc("cohort", "validate", str(manifest))
    assert done.returncode == 1
    text = _assert_escaped(done)
    assert "line 2 (slide '\\x1b[31mred', column 'mpp')" in text


def test_problems_and_reports_escape_messages_in_code():
    problem = Problem(3, RED, "path", f"file not found: /x/{RED}.svs", hint=f"rename {TITLE}")
    assert str(problem) == (
        "line 3 (slide '\\x1b[31mred', column 'path'): file not found: /x/\\x1b[31mred.svs"
        " — rename \\x1b]0;pwned\\x07"
    )
    assert problem.message.endswith(f"{RED}.svs")  # the record keeps the exact text
    cohort = Cohort([SlideRecord(RED, f"/nope/{TITLE}.svs", RED)], source=f"/m/{CSI}.csv")
    text = str(cohort.validate())
    assert not any(raw.decode() in text for raw in RAW_BYTES)
    assert text.startswith("/m/\\x9b2J.csv: 2 problem(s)")


def test_printable_leaves_readable_text_alone():
    assert printable("TCGA-A1 Gewebe-µ ✓.svs") == "TCGA-A1 Gewebe-µ ✓.svs"
    assert printable("a\tb\nc\rd") == "a\\tb\\nc\\rd"


def test_refusing_an_id_names_it_escaped_with_a_hint_and_no_traceback():
    with pytest.raises(UnsafeSlideIdError) as info:
        ProjectLayout("/tmp/project").store(RED)
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, SlideflowError)
    assert error.message == "unsafe slide id '\\x1b[31mred': contains the control character '\\x1b'"
    assert error.hint == ID_HINT
    assert failure_text(error) == f"{error.message} hint: {ID_HINT}"  # what a runner records
