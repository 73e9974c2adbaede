"""Remembered domain trees: a pure builder called again with the same arguments.

The builders are pure (the same inputs give byte-identical XML), so a domain rendered
before is copied instead of rebuilt: a copy of the finished tree costs a fraction of its
~160 elements made one by one and every input checked again. The key is the pickled
arguments, the whole state of every object reached (instance, disks, NICs, hvparams,
startup options) with its types (``True``, ``1`` and ``1.0`` differ) and its sharing:
pickling is the cheapest complete snapshot there is (made in C). Arguments that do not
pickle are never remembered, nor are errors. A tree is remembered from its second render
on, so a process that renders once (noded's child per RPC) pays only for the key.
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Callable
from typing import Any, TypeVar

from lxml import etree

MAX_TREES = 64  # distinct renders remembered per builder, the oldest forgotten first

Builder = TypeVar("Builder", bound=Callable[..., etree._Element])
# Pickled as pickle has them (their values); classes by name.
_AS_PICKLED = (type, str, int, float, complex, bytes, bytearray, list, tuple, dict, set,
               frozenset)


@functools.lru_cache(maxsize=256)
def _slot_names(kind: type) -> tuple[str, ...]:
    names: list[str] = []
    for klass in kind.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend((slots,) if isinstance(slots, str) else slots)
    return tuple(name for name in names if name not in ("__dict__", "__weakref__"))


def _state(obj: Any) -> dict[str, Any]:
    """Every stored field of ``obj``: its set ``__slots__`` and its ``__dict__``."""
    state = {name: getattr(obj, name) for name in _slot_names(type(obj))
             if hasattr(obj, name)}
    state.update(getattr(obj, "__dict__", {}))
    return state


def _object(kind: type, state: dict[str, Any]) -> None:
    """Stands in a key for an object of ``kind`` with ``state`` (never unpickled)."""
    raise TypeError("memo keys are not unpickled")


@functools.cache
def _key_pickler() -> type:
    """The pickler of memo keys, made on first use: processes which never render
    (noded's listing calls) do not import pickle."""
    import pickle

    class KeyPickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, _AS_PICKLED) or callable(obj) or not (
                    hasattr(obj, "__dict__") or _slot_names(type(obj))):
                return NotImplemented  # C objects too: their own reduce has their state
            return _object, (type(obj), _state(obj))
    return KeyPickler


def key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
    """The memo key of a call, or None when its arguments do not pickle. Objects are
    pickled by their stored fields whatever their own ``__getstate__`` keeps (Ganeti's
    drops fields that are None, which a builder's getattr default tells from missing)."""
    buffer = io.BytesIO()
    try:
        _key_pickler()(buffer, -1).dump((args, sorted(kwargs.items())))
    except Exception:  # noqa: BLE001 - whatever pickling raises: not remembered
        return None
    return buffer.getvalue()


def remembered(build: Builder) -> Builder:
    """``build`` with its trees remembered by their arguments. Each call returns a tree
    of its own (a copy), so callers may change it."""
    trees: dict[bytes, etree._Element | None] = {}

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> etree._Element:
        key = key_of(args, kwargs)
        tree = trees.get(key) if key is not None else None
        if tree is not None:
            return copy.deepcopy(tree)
        root = build(*args, **kwargs)
        if key is not None:
            if key not in trees and len(trees) >= MAX_TREES:
                trees.pop(next(iter(trees), key), None)  # another thread may have too
            # The first render of a key only marks it; the second keeps a copy.
            trees[key] = copy.deepcopy(root) if key in trees else None
        return root

    wrapper.forget = trees.clear  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
