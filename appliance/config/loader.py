"""Turn cluster.yaml into a validated :class:`ApplianceConfig`.

The YAML is composed node by node so that every value keeps its line; ``${VAR}`` and
``${VAR:-default}`` are replaced from the environment; overrides (environment variables,
command-line flags) are laid on top; then pydantic validates. Every problem is reported
with its YAML path and line, all of them at once, as one :class:`ConfigError`: once the
file parses as YAML, missing variables, duplicate keys, wrong types, unknown keys and
names that do not resolve (routes or keys naming unknown models) come out of one run.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from appliance.config.backends import ModelConfig
from appliance.config.model import LocatedValueError
from appliance.config.schema import ApplianceConfig, LocatedProblems, reference_problems
from appliance.errors import ConfigError

Loc = tuple[str | int, ...]

Check = Callable[[ApplianceConfig], list[LocatedValueError]]
"""A check of a valid config that needs more than its text (a model file's size, say).

Config validation reads nothing but the YAML; a caller that serves the config passes the
checks that look further (:data:`appliance.local.CONFIG_CHECKS`), and their problems are
reported with their lines, beside the schema's own.
"""

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(
    path: str | Path,
    *,
    environ: Mapping[str, str],
    overrides: Mapping[Loc, tuple[str, Any]] | None = None,
    checks: Sequence[Check] = (),
) -> ApplianceConfig:
    """Read, interpolate, override and validate the config file at ``path``.

    Args:
        path: The YAML file.
        environ: Where ``${VAR}`` values come from.
        overrides: ``{("server", "port"): ("APPLIANCE_PORT", "9000"), ...}``: each value
            replaces the YAML's, and errors in it name its origin.
        checks: Checks run on the validated config (see :data:`Check`).

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or invalid.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the config file: {exc}"], str(path)) from exc
    return parse_config(text, source=str(path), environ=environ, overrides=overrides, checks=checks)


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    environ: Mapping[str, str],
    overrides: Mapping[Loc, tuple[str, Any]] | None = None,
    checks: Sequence[Check] = (),
) -> ApplianceConfig:
    """Validate config text; see :func:`load_config`."""
    builder = _Builder(environ)
    data = builder.build(text, source)
    if not isinstance(data, dict):
        raise ConfigError(
            builder.problems or ["the file must be a mapping with a `models:` section"], source
        )
    for loc, (origin, value) in (overrides or {}).items():
        _set_path(data, loc, value)
        builder.lines[loc] = origin
        builder.unset = [u for u in builder.unset if u[: len(loc)] != loc]
    problems = list(builder.problems)
    try:
        config = ApplianceConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A value holding a missing ${VAR} was reported as such: not again as invalid.
        errors = [e for e in errors if not _under_unset(_data_loc(e["loc"], data), builder)]
        problems += _describe(errors, data, builder.lines)
        if not any(e["loc"] == () for e in errors):
            # The cross-reference checks run only on a valid file: run them on the data.
            problems += _references(data, builder.lines)
    else:
        for check in checks:
            problems += [
                f"{format_path(p.loc)} ({_where(p.loc, builder.lines)}): {p}" for p in check(config)
            ]
        if not problems:
            return config
    raise ConfigError(problems, source)


def format_path(loc: Loc) -> str:
    """``("models", 0, "options")`` -> ``models[0].options``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Builder:
    """Compose YAML into plain data, remembering each value's line."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.lines: dict[Loc, int | str] = {}
        self.problems: list[str] = []
        self.unset: list[Loc] = []  # where a missing ${VAR} was (the text is kept there)

    def build(self, text: str, source: str) -> Any:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                self.problems.append("the file is empty")
                return None
            return self._value(loader, node, ())
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            self.problems.append(f"YAML syntax error at {where}{exc.problem}")
            return None
        except yaml.YAMLError as exc:
            self.problems.append(f"YAML error: {exc}")
            return None
        finally:
            loader.dispose()

    def _value(self, loader: yaml.SafeLoader, node: yaml.Node, loc: Loc) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int):
                    self.problems.append(
                        f"{format_path(loc)} (line {key_node.start_mark.line + 1}): "
                        f"keys must be strings, not {key!r}"
                    )
                    continue
                child = (*loc, key)
                if key in out:
                    self.problems.append(
                        f"{format_path(child)} (line {key_node.start_mark.line + 1}): duplicate key"
                    )
                self.lines[child] = key_node.start_mark.line + 1
                out[key] = self._value(loader, value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(loader, item, (*loc, i)) for i, item in enumerate(node.value)]
        value = loader.construct_object(node, deep=True)
        if isinstance(value, str):
            return self._interpolate(value, loc, node.start_mark.line + 1)
        return value

    def _interpolate(self, value: str, loc: Loc, line: int) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.problems.append(
                f"{format_path(loc)} (line {line}): environment variable {name} is not set"
            )
            self.unset.append(loc)
            return match.group(0)

        return _VAR.sub(substitute, value) if "$" in value else value


def _set_path(data: dict[Any, Any], loc: Loc, value: Any) -> None:
    node = data
    for part in loc[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[loc[-1]] = value


def _under_unset(loc: Loc, builder: _Builder) -> bool:
    return any(loc[: len(unset)] == unset for unset in builder.unset)


def _describe(errors: list[Any], data: Any, lines: Mapping[Loc, int | str]) -> list[str]:
    problems = []
    for err in errors:
        loc = _data_loc(tuple(err["loc"]), data)
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, LocatedProblems):
            for each in located.problems:
                at = loc + each.loc
                problems.append(f"{format_path(at)} ({_where(at, lines)}): {each}")
            continue
        if isinstance(located, LocatedValueError):
            loc = loc + located.loc
            message = str(located)
        elif err["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{format_path(loc)} ({_where(loc, lines)}): {message}")
    return problems


def _references(data: dict[Any, Any], lines: Mapping[Loc, int | str]) -> list[str]:
    """The schema's cross-reference checks on raw data, skipping entries they cannot read."""
    models = [_model_name_type(m) for m in _list(data.get("models"))]
    routes = [_route(r) for r in _list(data.get("routes"))]
    auth = data.get("auth")
    keys = _list(auth.get("api_keys")) if isinstance(auth, dict) else []
    key_models = [_strings(k.get("models")) if isinstance(k, dict) else None for k in keys]
    return [
        f"{format_path(p.loc)} ({_where(p.loc, lines)}): {p}"
        for p in reference_problems(models, routes, key_models)
    ]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _model_name_type(entry: Any) -> tuple[str, str] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return None
    given = entry.get("type")
    if isinstance(given, str):
        return entry["name"], given
    default = _DEFAULT_TYPES.get(entry.get("backend"), "llm")
    return entry["name"], default


def _route(entry: Any) -> tuple[str, list[str]] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("alias"), str):
        return None
    targets = _strings(entry.get("targets"))
    return None if targets is None else (entry["alias"], targets)


def _default_types() -> dict[Any, str]:
    """Each backend's default model ``type`` (``onnx`` models are embeddings)."""
    union = typing.get_args(ModelConfig)[0]
    out: dict[Any, str] = {}
    for cls in typing.get_args(union):
        backend = typing.get_args(cls.model_fields["backend"].annotation)[0]
        out[backend] = cls.model_fields["type"].default
    return out


_DEFAULT_TYPES = _default_types()


def _data_loc(loc: Loc, data: Any) -> Loc:
    """Drop the discriminator tags pydantic puts into union locations."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and part == node.get("backend"):
            continue
        out.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(out)


def _where(loc: Loc, lines: Mapping[Loc, int | str]) -> str:
    for end in range(len(loc), -1, -1):
        found = lines.get(loc[:end])
        if isinstance(found, str):
            return f"from {found}"
        if found is not None:
            return f"line {found}"
    return "line ?"
