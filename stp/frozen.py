"""A faster ``__init__`` for frozen, slotted dataclasses built on the hot path.

``@dataclass(frozen=True)`` generates an ``__init__`` that sets every field
with ``object.__setattr__(self, name, value)`` (the class's own ``__setattr__``
refuses).  That looks the name up on the type for every field, every time:
a four-field value costs about 1.1 us to build on this machine class, and the
post-trade pipeline builds a dozen per fill.  ``fast_init`` replaces it with
one that calls each slot's descriptor directly (about 40% less), with the
same signature (names, order, plain defaults).  Everything else the
dataclass generated (eq, hash, repr, order, frozenness, ``replace``) is
untouched.  Pure.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["fast_init"]

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give a ``@dataclass(frozen=True, slots=True)`` class the faster ``__init__``.

    Apply it above the ``@dataclass`` decorator.  Raises TypeError for a class
    it does not support (not frozen and slotted, ``__post_init__``, InitVar,
    ``init=False`` or keyword-only fields, default factories).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__")
    names: list[str] = []
    namespace: dict[str, Any] = {}
    signature: list[str] = []
    for f in dataclasses.fields(cls):          # type: ignore[arg-type]  # cls is a dataclass: checked above
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain positional fields are supported")
        names.append(f.name)
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            signature.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            signature.append(f"{f.name}=_default_{f.name}")
    if len(set(cls.__dict__["__slots__"]) & set(names)) != len(names):
        raise TypeError(f"{cls.__name__}: every field must be a slot")
    body = "".join(f"    _set_{name}(self, {name})\n" for name in names) or "    pass\n"
    source = f"def __init__(self, {', '.join(signature)}):\n{body}"
    exec(source, namespace)                    # generated from the field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init                        # type: ignore[method-assign]  # replacing __init__ is the point
    return cls
