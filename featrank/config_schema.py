"""The schema of config.py's tables other than CONFIG's keys (which user_config.validate_config
checks one by one): what QUICK, MODES and ENABLED_LAYERS must hold, declared once, and checked
when the file is read (`check_tables`). Each error names the table and key as written in
config.py (`QUICK['layers']['resnet50'][0]`), the bad value and the fix.

A schema node is one of: `Int(min)`, `Bool()`, `Str()`, `Maybe(node)` (None allowed),
`List(item)` (a list or tuple, its items unique), `Record(fields)` (a dict with exactly these
keys), `Mapping(key, value)` (a dict whose keys and values follow `key` and `value`).
`variants()` walks a schema and yields the bad values a property test tries."""
from __future__ import annotations

from dataclasses import dataclass

from featrank.backbones import BACKBONES
from featrank.errors import ConfigError


@dataclass(frozen=True)
class Int:
    min: int = 0
    what = "an integer"

    def check(self, v, at: str) -> None:
        if not isinstance(v, int) or isinstance(v, bool):
            _bad(at, v, f"must be {self.what}")
        if v < self.min:
            _bad(at, v, f"must be an integer >= {self.min}")


@dataclass(frozen=True)
class Bool:
    what = "True or False"

    def check(self, v, at: str) -> None:
        if not isinstance(v, bool):
            _bad(at, v, "must be True or False")


@dataclass(frozen=True)
class Str:
    what = "a string"

    def check(self, v, at: str) -> None:
        if not isinstance(v, str) or not v:
            _bad(at, v, "must be a non-empty string")


@dataclass(frozen=True)
class Maybe:
    node: object

    @property
    def what(self) -> str:
        return f"{self.node.what} or None"

    def check(self, v, at: str) -> None:
        if v is not None:
            self.node.check(v, at)


@dataclass(frozen=True)
class List:
    item: object
    what = "a list"

    def check(self, v, at: str) -> None:
        if not isinstance(v, (list, tuple)):
            _bad(at, v, f"must be a list of {self.item.what}s")
        if not v:
            _bad(at, v, "must not be empty")
        for i, x in enumerate(v):
            self.item.check(x, f"{at}[{i}]")
        dup = next((x for i, x in enumerate(v) if x in v[:i]), None)
        if dup is not None:
            _bad(at, v, f"names {dup!r} twice; keep one")


@dataclass(frozen=True)
class Record:
    fields: dict
    what = "a dict"

    def check(self, v, at: str) -> None:
        if not isinstance(v, dict):
            _bad(at, v, f"must be a dict with the keys {', '.join(map(repr, self.fields))}")
        missing = [k for k in self.fields if k not in v]
        if missing:
            raise ConfigError(f"config.py: {at} has no key {missing[0]!r}; restore it (keys: "
                              f"{', '.join(map(repr, self.fields))}) from the config.py beside main.py")
        unknown = [k for k in v if k not in self.fields]
        if unknown:
            raise ConfigError(f"config.py: {at} has an unknown key {unknown[0]!r}; valid keys: "
                              f"{', '.join(map(repr, self.fields))}")
        for k, node in self.fields.items():
            node.check(v[k], f"{at}[{k!r}]")


@dataclass(frozen=True)
class Mapping:
    key: object
    value: object
    shown: str = ""                  # what the dict holds, in words
    what = "a dict"

    def check(self, v, at: str) -> None:
        if not isinstance(v, dict):
            _bad(at, v, f"must be a dict {self.shown or f'of {self.key.what} -> {self.value.what}'}")
        for k, x in v.items():
            self.key.check(k, f"a key of {at}")
            self.value.check(x, f"{at}[{k!r}]")


def _bad(at: str, v, why: str):
    raise ConfigError(f"config.py: {at} = {v!r} {why} (edit config.py)")


MODE = Record({"n_images_inference": Int(1), "n_images_evaluation": Int(1)})
SCHEMA = {
    "MODES": Record({"quick": MODE, "medium": MODE, "full": MODE}),
    "QUICK": Record({"backbone": Maybe(Str()),
                     "layers": Mapping(Str(), List(Int(0)), "{backbone name: [layer indices]}"),
                     "transform": Str(), "metric": Str()}),
    "ENABLED_LAYERS": Mapping(Str(), Mapping(Int(0), Bool(), "{layer index: True or False}"),
                              "{backbone name: {layer index: True or False}}"),
}


def _layers_exist(table: str, backbone: str, indices, at: str) -> None:
    """Backbone names of the registry, and indices of its layer table."""
    if backbone not in BACKBONES:
        raise ConfigError(f"config.py: {table} names the backbone {backbone!r}, which is not "
                          f"registered; remove it or use one of {', '.join(BACKBONES)}")
    n = len(BACKBONES[backbone].layers)
    bad = next((i for i in indices if i >= n), None)
    if bad is not None:
        raise ConfigError(f"config.py: {at} names layer {bad}, but {backbone} has layers 0..{n - 1} "
                          f"(python main.py --list-layers {backbone})")


def check_tables(tables: dict) -> None:
    """ConfigError naming the first value of CONFIG (its type), MODES, QUICK or ENABLED_LAYERS
    that breaks the schema or names a backbone or layer the registry does not have."""
    if not isinstance(tables["CONFIG"], dict):
        _bad("CONFIG", tables["CONFIG"], "must be a dict of settings")
    for name, node in SCHEMA.items():
        node.check(tables[name], name)
    for b, layers in tables["QUICK"]["layers"].items():
        _layers_exist("QUICK['layers']", b, layers, f"QUICK['layers'][{b!r}]")
    for b, flags in tables["ENABLED_LAYERS"].items():
        _layers_exist("ENABLED_LAYERS", b, list(flags), f"ENABLED_LAYERS[{b!r}]")


def variants(node, at: str, value):
    """(path as config.py writes it, kind, the table with the value there broken) for every node
    of a schema over the shipped `value`: each key removed, each container replaced by a
    number, each leaf given a value of another type (a Mapping through its first entry). The
    property test runs each."""
    bad_leaf = {Int: "7", Bool: 1, Str: 5}
    if isinstance(node, Record):
        yield at, "container", 5
        for k, child in node.fields.items():
            yield f"{at}[{k!r}]", "absent", {x: y for x, y in value.items() if x != k}
            for path, kind, broken in variants(child, f"{at}[{k!r}]", value[k]):
                yield path, kind, {**value, k: broken}
    elif isinstance(node, Mapping):
        yield at, "container", [5]
        k = next(iter(value))
        for path, kind, broken in variants(node.value, f"{at}[{k!r}]", value[k]):
            yield path, kind, {**value, k: broken}
    elif isinstance(node, List):
        yield at, "container", 5
        yield f"{at}[0]", "type", [bad_leaf[type(node.item)]] + list(value)[1:]
        yield at, "duplicate", list(value) + [value[0]]
    elif isinstance(node, Maybe):
        yield at, "type", bad_leaf[type(node.node)] if not isinstance(node.node, Str) else 5
    else:
        yield at, "type", bad_leaf[type(node)]
