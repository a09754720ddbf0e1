"""`ProgramCache`: compiled programs under typed keys, each compiled once."""

import dataclasses

import pytest

from jaxcot.programs import ProgramCache


@dataclasses.dataclass(frozen=True)
class Key:
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass
class Loose:
    shape: tuple[int, ...]


def test_each_key_is_built_once():
    cache: ProgramCache[str] = ProgramCache()
    built = []

    def build(name):
        built.append(name)
        return name

    assert cache.get_or_compile(Key((2, 8), "f32"), lambda: build("a")) == "a"
    assert cache.get_or_compile(Key((2, 8), "f32"), lambda: build("b")) == "a"  # equal fields: the same
    assert cache.get_or_compile(Key((2, 8), "bf16"), lambda: build("c")) == "c"  # any field differs: another
    assert built == ["a", "c"] and len(cache) == 2
    assert list(cache) == [Key((2, 8), "f32"), Key((2, 8), "bf16")] and cache.values() == ["a", "c"]
    assert Key((2, 8), "f32") in cache
    cache.clear()
    assert len(cache) == 0


def test_keys_are_frozen_dataclasses():
    cache = ProgramCache()
    for key in ((2, 8), Key, Loose((2,))):
        with pytest.raises(TypeError):
            cache.get_or_compile(key, lambda: "x")
    assert len(cache) == 0


def test_a_trainer_refuses_a_plain_dict_as_its_cache():
    with pytest.raises(TypeError, match="train: cache must be a jaxcot.programs.ProgramCache"):
        ProgramCache.given({}, "train")
    fresh = ProgramCache.given(None, "grpo")
    assert isinstance(fresh, ProgramCache) and ProgramCache.given(fresh, "grpo") is fresh
