"""Configs are dataclasses loaded from YAML with `key.sub=value` command-line overrides.

    cfg = load_config(RunConfig, "configs/demo.yaml", ["student.max_steps=100", "name=trial"])

Values are parsed as YAML scalars and checked against the field's type; each config checks its
own ranges and cross-field rules in `__post_init__` (with `check` / `check_range` here). Every
error is a `ConfigError` naming the key's dotted path and where the value came from (the YAML
file or the command line).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from typing import Any, Callable, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config value. `key`: its dotted path ('student.optim.lr'; '' for the whole config)."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)


def _join(where: str, key: str) -> str:
    return ".".join(p for p in (where, key) if p)


def check(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless `ok`."""
    if not ok:
        raise ConfigError(key, message)


def check_range(obj, name: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False, optional: bool = False) -> None:
    """`obj.name` must lie in the range [lo, hi] (open at either end with `lo_open` / `hi_open`);
    None passes when `optional`."""
    v = getattr(obj, name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(name, f"must be a finite number, got {v!r}")
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if below or above:
        left = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        right = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        raise ConfigError(name, f"must be {' and '.join(s for s in (left, right) if s)}, got {v!r}")


def check_counts(obj, *names: str) -> None:
    """Each of `obj`'s fields `names` must be a count of at least 1."""
    for name in names:
        check_range(obj, name, 1)


def check_choice(obj, name: str, choices) -> None:
    """`obj.name` must be one of `choices`."""
    v = getattr(obj, name)
    if v not in choices:
        raise ConfigError(name, f"must be one of {list(choices)}, got {v!r}")


@dataclasses.dataclass
class MeshConfig:
    """(data, fsdp, tensor) device mesh over the first `devices` devices (0: all of them);
    data = -1 takes the remaining devices. The train and GRPO steps' `mesh`, the score stage's
    (`jaxcot.sharding.make_mesh` builds it)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    devices: int = 0

    def __post_init__(self):
        check(self.data == -1 or self.data >= 1, "data", f"must be -1 (the remaining devices) or >= 1, got {self.data}")
        check_range(self, "fsdp", 1)
        check_range(self, "tensor", 1)
        check_range(self, "devices", 0)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Help as written (descriptions keep their lines), each flag's default shown where it says
    something: not for flags without a value, defaults of None, or help that states its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or action.nargs == 0 or "default" in text:
            return text
        return super()._get_help_string(action)


def print_config(cfg) -> None:
    """Every key of a config with its value, as YAML (what `--print-config` shows)."""
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")


_TAKES_VALUE = object()


@dataclasses.dataclass(frozen=True)
class Flag:
    """A shorthand flag for one config key: `Flag("--batch-size", "batch_size", int)` makes
    `--batch-size 8` mean the override `batch_size=8`. `many`: repeatable, the key gets the list of
    the values given; `switch`: a flag without a value that sets the key to `switch`."""

    name: str
    key: str
    type: Callable | None = None
    help: str = ""
    choices: tuple | None = None
    many: bool = False
    switch: Any = _TAKES_VALUE

    @property
    def dest(self) -> str:
        return "flag_" + self.name.lstrip("-").replace("-", "_")


def add_command(subparsers, name: str, *, description: str, config: str, example: str,
                flags: Sequence[Flag] = (), config_required: bool = False,
                config_help: str | None = None) -> argparse.ArgumentParser:
    """A subcommand driven by one config dataclass (named `config` in the help): `--config FILE`,
    `KEY=VALUE` overrides, `--print-config`, and `flags`, shorthands for single keys. Every command
    parses its config this way (`command_config`). The caller adds its own flags (inputs and
    outputs, not settings) and `set_defaults(func=...)` to the returned parser."""
    p = subparsers.add_parser(name, formatter_class=HelpFormatter, description=description)
    p.add_argument("--config", required=config_required, metavar="FILE",
                   help=config_help or f"a YAML file of {config} fields; flags and KEY=VALUE overrides go on top")
    p.add_argument("--print-config", action="store_true", help="print every config key with its value and exit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"{config} fields, e.g. {example}")
    for f in flags:
        if f.switch is not _TAKES_VALUE:
            p.add_argument(f.name, dest=f.dest, action="store_const", const=f.switch, help=f"{f.help} ({f.key})")
        else:
            p.add_argument(f.name, dest=f.dest, type=f.type, choices=f.choices, action="append" if f.many else None,
                           metavar=None if f.choices else f.key.rsplit(".", 1)[-1].upper(),
                           help=f"{f.help} ({f.key}{'; repeatable' if f.many else ''})")
    p.set_defaults(config_flags=tuple(flags))
    return p


def command_config(cls: type[T], args: argparse.Namespace, extra: Sequence[str] = ()) -> T | None:
    """The config of an `add_command` subcommand: `--config` with its flags, then its `KEY=VALUE`
    overrides, then `extra` ones; None when `--print-config` asked for it (then printed)."""
    if args.set:
        print("jaxcot: --set is deprecated and will go: write KEY=VALUE after the command", file=sys.stderr)
    values = {f.key: getattr(args, f.dest) for f in args.config_flags if getattr(args, f.dest) is not None}
    cfg = load_config(cls, args.config, [*args.set, *args.overrides, *extra], values)
    if args.print_config:
        print_config(cfg)
        return None
    return cfg


def did_you_mean(word: str, known) -> str:
    """' (did you mean 'x'?)' for the closest of `known`, else the list of them."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"known: {sorted(known)}"


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or value is None and (origin in (typing.Union, types.UnionType) and type(None) in args):
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error says more than "fits none of"
            return _coerce(options[0], value, where)
        for arg in options:
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                if e.key != where:  # an error inside a nested config: report it as it is
                    raise
        raise ConfigError(where, f"{value!r} fits none of {tp}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and (isinstance(value, (int, float)) and not isinstance(value, bool) or isinstance(value, str)):
        return _finite(value, where)
    if tp is int and isinstance(value, bool):
        raise ConfigError(where, f"expected an integer, got {value!r}")
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(where, f"expected {tp.__name__}, got {value!r}")
    return value


def _finite(value, where: str) -> float:
    """`value` as a float; NaN and the infinities are refused (no knob means them: a range check
    `not lo <= x <= hi` would let NaN through)."""
    try:  # YAML 1.1 reads '1e-4' (no dot) as a string
        x = float(value)
    except ValueError:
        raise ConfigError(where, f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ConfigError(where, f"must be a finite number, got {value!r}")
    return x


def _section_holding(cls, hints: dict, key: str) -> str | None:
    """The field of `cls` whose dataclass (a section) has a field `key`, if one does: where a
    setting given at the wrong level lives (e.g. `beta` -> `ads`)."""
    for f in dataclasses.fields(cls):
        section = hints.get(f.name)
        if isinstance(section, type) and dataclasses.is_dataclass(section) and \
                key in {g.name for g in dataclasses.fields(section)}:
            return f.name
    return None


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a nested dict. Unknown keys, wrong types and values its
    `__post_init__` rejects raise `ConfigError` with the key's path under `where`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        home = _section_holding(cls, hints, unknown[0])
        hint = (f"it belongs to the '{home}' section: {home}.{unknown[0]}" if home
                else did_you_mean(unknown[0], names))
        raise ConfigError(_join(where, unknown[0]), f"unknown key for {cls.__name__}; {hint}")
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(_join(where, e.key), e.message) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(where, str(e)) from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def deep_merge(base: dict, over: dict) -> dict:
    """`base` with `over` laid on top; nested mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives a key twice (plain YAML keeps the last,
    silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base loader reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first given on line {first})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def yaml_load(stream) -> Any:
    """`yaml.safe_load`, except that a key given twice in one mapping is a `yaml.YAMLError`."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """['a.b=3', 'c=[1, 2]'] -> [('a.b', 3), ('c', [1, 2])] (values parsed as YAML)."""
    out = []
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError("", f"override {item!r} is not key=value")
        try:
            value = yaml_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(key.strip(), f"cannot parse the value {raw!r} ({e.problem})") from None
        out.append((key.strip(), value))
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """['a.b=3', 'c=[1, 2]'] applied onto a nested dict (values parsed as YAML)."""
    return set_keys(data, parse_overrides(overrides))


def set_keys(data: dict, pairs) -> dict:
    """[('a.b', 3), ('c', [1, 2])] set onto a copy of a nested dict, sections made as needed."""
    data = dict(data)
    for key, value in pairs:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict) and node.get(part) is not None:
                raise ConfigError(key, f"{part} is not a section (it is {node[part]!r})")
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data


def read_yaml(path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> dict:
    """The mapping at the top of a YAML file; errors name the file (and line, for bad YAML).

    A file may start from another: `extends: other.yaml` (a path relative to this file) gives the
    other file's mapping with this one laid on top (`deep_merge`: sections merge key by key, lists
    and values replace)."""
    path = os.fspath(path)
    if os.path.abspath(path) in _seen:
        raise ConfigError("extends", f"{path}: extends itself ({' -> '.join(_seen + (os.path.abspath(path),))})")
    if not os.path.isfile(path):
        raise ConfigError("", f"{path}: no such config file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml_load(f) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"{path}{at}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: the top level must be a mapping of keys")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError("extends", f"{path}: extends names one config file, got {base!r}")
    parent = os.path.join(os.path.dirname(path), base)
    return deep_merge(read_yaml(parent, _seen + (os.path.abspath(path),)), data)


def load_config(cls: type[T], path: str | os.PathLike | None, overrides: Sequence[str] = (),
                values: Mapping[str, Any] | None = None) -> T:
    """Load YAML at `path` (or start empty) into dataclass `cls`, with `values` ({dotted key:
    value}, a command's flags) and then `overrides` ('key=value' strings) set on top. An error
    names the key and says whether its value came from the command line or the file."""
    data = read_yaml(path) if path is not None else {}
    pairs = [*(values or {}).items(), *parse_overrides(list(overrides))]
    given = [k for k, _ in pairs]
    data = set_keys(data, pairs)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        from_cli = any(e.key == k or e.key.startswith(k + ".") or e.key.startswith(k + "[") or
                       k.startswith(e.key + ".") for k in given) if e.key else False
        origin = "on the command line" if from_cli else (f"in {os.fspath(path)}" if path is not None else "")
        raise ConfigError(e.key, f"{e.message} ({origin})" if origin else e.message) from None


def dump_config(cfg, path: str | os.PathLike) -> None:
    from jaxcot.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
