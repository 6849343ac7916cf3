"""A stage package's public name is never also one of its submodules.

Importing ``package.name`` makes Python set the package attribute ``name`` to the
submodule, so ``mil.search(...)`` became a module (not callable) after ``from
mil.search import SearchResult``. Checked for every package exposing names lazily,
and for the case that broke, in a fresh interpreter.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

LAZY_PACKAGES = ["mil", "embedders", "embedders.dense"]


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_no_public_name_is_a_submodule(name):
    package = importlib.import_module(name)
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    shadowed = sorted(submodules & set(package.__all__))
    assert not shadowed, f"{name}: public names that are also submodules: {shadowed}"


def test_search_stays_a_function_after_its_module_is_imported():
    code = (
        "import mil\n"
        "from mil.tuning import SearchResult\n"
        "assert callable(mil.search), type(mil.search)\n"
        "assert mil.SearchResult is SearchResult\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
