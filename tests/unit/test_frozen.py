"""stp.frozen.fast_init: the same dataclass, built the same way, only faster."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from stp.frozen import fast_init


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str
    c: tuple[int, ...] = ()
    d: int | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Fast:
    a: int
    b: str
    c: tuple[int, ...] = ()
    d: int | None = None


def test_same_signature_and_values() -> None:
    assert list(inspect.signature(Fast).parameters) == list(inspect.signature(Plain).parameters)
    for args, kwargs in [((1, "x"), {}), ((1, "x", (2,)), {"d": 4}), ((), {"b": "y", "a": 3})]:
        fast, plain = Fast(*args, **kwargs), Plain(*args, **kwargs)   # type: ignore[arg-type]  # the table's rows fit the fields; mypy sees their union
        assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
        assert repr(fast).replace("Fast", "Plain") == repr(plain)


def test_still_frozen_hashable_comparable_and_replaceable() -> None:
    x = Fast(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        x.a = 2                                      # type: ignore[misc]  # assigning to a frozen field on purpose
    assert x == Fast(1, "x") and x != Fast(2, "x")
    assert hash(x) == hash(Fast(1, "x"))
    assert dataclasses.replace(x, b="y") == Fast(1, "y")
    with pytest.raises(TypeError):
        Fast(1)                                      # type: ignore[call-arg]  # a missing argument on purpose
    with pytest.raises(TypeError):
        Fast(1, "x", e=3)                            # type: ignore[call-arg]  # an unknown keyword on purpose


def test_unsupported_classes_are_refused() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (NoSlots, NotFrozen, Factory, PostInit):
        with pytest.raises(TypeError):
            fast_init(cls)
