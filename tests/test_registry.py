"""Registries: names, metadata as data, availability with a reason, clear misses."""

from __future__ import annotations

import pytest

from slideflow_core.errors import RegistryError
from slideflow_core.registry import Registry
from slideflow_core.slides import list_readers


def make() -> Registry:
    registry: Registry = Registry("widget")
    registry.register("alpha", size=1)(object)
    registry.register("beta", check=lambda: "needs the 'beta' extra")(dict)
    return registry


def test_lookup_and_listing_carry_metadata_and_availability():
    registry = make()
    assert registry.get("alpha") is object
    rows = {r["name"]: r for r in registry.list_entries()}
    assert rows["alpha"] == {"name": "alpha", "available": True, "reason": None, "size": 1}
    assert rows["beta"]["available"] is False
    assert "beta" in registry and len(registry) == 2


def test_unknown_name_suggests_close_names():
    with pytest.raises(RegistryError) as info:
        make().get("alpah")
    assert "unknown widget 'alpah'" in str(info.value)
    assert "alpha" in info.value.hint


def test_unavailable_entry_says_why():
    with pytest.raises(RegistryError, match="needs the 'beta' extra"):
        make().get("beta")


def test_duplicate_registration_is_refused():
    registry = make()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("alpha")(int)


def test_slide_readers_are_registered_in_auto_order():
    assert [r["name"] for r in list_readers()] == ["openslide", "tiffslide"]
    assert all(r["available"] for r in list_readers())
