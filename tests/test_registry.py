"""The one registry helper behind layouts, extractors, text encoders and label sets."""

import pytest

from openscene_ray.kernel.registry import Registry


def test_register_get_names_and_aliases():
    reg = Registry("widget")
    reg.register("a", 1, aliases=("alpha",))

    @reg.register("b")
    def make_b():
        return 2

    assert reg.get("a") == reg.get("alpha") == 1
    assert reg.get("b") is make_b
    assert reg.names() == ["a", "alpha", "b"]
    assert sorted(map(str, reg.values())) == sorted(["1", str(make_b)])
    reg.register("a", 1)  # the same object again: a module imported twice
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", 3)
    with pytest.raises(KeyError, match="unknown widget 'c'; known: a, alpha, b"):
        reg.get("c")


def test_lazy_modules_register_on_first_use():
    import openscene_ray.kernel.text as text

    reg = text.TEXT_ENCODERS
    assert "open_clip" in reg.names()  # known before its module is imported
    factory = reg.get("open_clip")  # imports openscene_ray.kernel.clip, which registers it
    assert factory.__name__ == "OpenClipTextEncoder"


def test_plugins_only_where_allowed():
    plugins = Registry("extractor", plugins=True)
    assert plugins.get("json:dumps").__name__ == "dumps"
    with pytest.raises(KeyError, match="cannot load plugin extractor 'json:nope'"):
        plugins.get("json:nope")
    with pytest.raises(KeyError, match="unknown layout 'json:dumps'"):
        Registry("layout").get("json:dumps")
