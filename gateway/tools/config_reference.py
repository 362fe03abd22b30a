"""The configuration reference (docs/configuration.md), generated from the settings model.

`sections()` walks `gateway.config.settings.Settings` and every model nested in it (tables, arrays
of tables, tables of tables) into one `Section` per TOML table, each field with its dotted
name, environment variable, type, default, constraints and description; `render()` turns
them into Markdown. `python -m gateway.tools.config_reference [--output FILE]` prints or writes
it, and `tests/tools/test_config_reference.py` keeps the committed file equal to its output, so
the reference cannot drift from the code. Its counterpart is `gateway.config.settings`, which
loads what this describes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config.settings import CONFIG_ENV, Settings

ENV_PREFIX = "SPEECH_GATEWAY_"
REGENERATE = ".venv/bin/python -m gateway.tools.config_reference --output docs/configuration.md"


@dataclass(frozen=True, slots=True)
class FieldDoc:
    name: str  # dotted TOML name: `gateway.breaker.on_open`, `gateway.experiments[].id`
    env: str | None  # the variable that sets this field, if one does
    env_json: bool  # the variable's value is JSON (a list or a table)
    env_within: str | None  # inside a list: the variable of the whole list (JSON)
    type: str
    default: str
    constraints: tuple[str, ...]
    description: str
    secret_file: str | None  # for a secret: its `*_file` field, if the model has one
    secret: bool
    section_link: str | None  # a nested table's own section, as a Markdown link


@dataclass(frozen=True, slots=True)
class Section:
    path: str  # `gateway.experiments[].variants[]`
    header: str  # the TOML table header: `[[gateway.experiments.variants]]`
    level: int  # Markdown heading level
    intro: str
    fields: tuple[FieldDoc, ...]


def sections(model: type[BaseModel] = Settings) -> list[Section]:
    """Every table of the settings, depth first in field order."""
    return list(
        _walk(model, path="", header="top level", level=2, env="", env_within=None, about="")
    )


def missing_descriptions(model: type[BaseModel] = Settings) -> list[str]:
    """Dotted names of the fields that have no `description`, the top-level tables first."""
    top = [name for name, info in model.model_fields.items() if not info.description]
    return top + [f.name for s in sections(model) for f in s.fields if not f.description]


def _walk(
    model: type[BaseModel],
    path: str,
    header: str,
    level: int,
    env: str | None,
    env_within: str | None,
    about: str,
) -> Iterator[Section]:
    """The section of `model` (at the root: only if it has fields of its own), then those
    of the tables nested in it. `env` is the variable of `model` itself, "" at the root;
    `about` the description of the field that holds it, the intro when it has no docstring."""
    section = _section(model, path, header, level, env, env_within, about)
    if path or section.fields:
        yield section
    for name, info in model.model_fields.items():
        nested = _nested(info)
        if nested is not None:
            kind, sub = nested
            sub_path, sub_env, sub_within = _child(path, name, kind, env, env_within)
            sub_header = _header(kind, _toml_path(_dotted(path, name)))
            yield from _walk(
                sub,
                sub_path,
                sub_header,
                3 if path else 2,
                sub_env,
                sub_within,
                info.description or "",
            )


def _dotted(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _env_name(env: str | None, name: str) -> str | None:
    """The variable of field `name` of a table whose variable is `env` ("" at the root)."""
    if env is None:
        return None
    return f"{env}__{name.upper()}" if env else f"{ENV_PREFIX}{name.upper()}"


def _child(
    path: str, name: str, kind: str, env: str | None, env_within: str | None
) -> tuple[str, str | None, str | None]:
    """The dotted path, variable and enclosing list's variable of a nested table."""
    dotted, own_env = _dotted(path, name), _env_name(env, name)
    match kind:
        case "table":
            return dotted, own_env, env_within
        case "tables":  # a table of tables: each entry is addressed by its key
            entry_env = f"{own_env}__<NAME>" if own_env is not None else None
            return f"{dotted}.<name>", entry_env, env_within
        case _:  # an array of tables: only the whole list, as JSON
            return f"{dotted}[]", None, env_within or own_env


def _header(kind: str, toml: str) -> str:
    match kind:
        case "table":
            return f"[{toml}]"
        case "tables":
            return f"[{toml}.<name>]"
        case _:
            return f"[[{toml}]]"


def _toml_path(path: str) -> str:
    """`gateway.experiments[].variants[]` -> `gateway.experiments.variants` (TOML headers)."""
    return path.replace("[]", "")


def _section(
    model: type[BaseModel],
    path: str,
    header: str,
    level: int,
    env: str | None,
    env_within: str | None,
    about: str,
) -> Section:
    fields: list[FieldDoc] = []
    for name, info in model.model_fields.items():
        nested = _nested(info)
        link = None
        if nested is not None:
            if not path:  # the root's tables are the top-level sections themselves
                continue
            link = _link(_header(nested[0], _toml_path(_dotted(path, name))))
        secret = _is_secret(info.annotation)
        file_field = f"{name}_file"
        fields.append(
            FieldDoc(
                name=_dotted(path, name),
                env=_env_name(env, name),
                env_json=nested is not None or _is_json(info.annotation),
                env_within=env_within,
                type=_type_name(info.annotation, nested is not None),
                default=_default(info),
                constraints=tuple(_constraints(info)),
                description=" ".join((info.description or "").split()),
                secret=secret,
                secret_file=file_field if secret and file_field in model.model_fields else None,
                section_link=link,
            )
        )
    intro = inspect.cleandoc(model.__doc__) if path and model.__doc__ else about
    return Section(path, header, level, intro, tuple(fields))


# -- types ------------------------------------------------------------------------------------


def _strip_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _nested(info: FieldInfo) -> tuple[str, type[BaseModel]] | None:
    """("table" | "tables" | "array", model) for a field holding settings models."""
    annotation = _strip_none(info.annotation)
    if _is_model(annotation):
        return "table", annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args and _is_model(args[0]):
        return "array", args[0]
    if origin is dict and len(args) == 2 and _is_model(args[1]):
        return "tables", args[1]
    return None


def _is_secret(annotation: Any) -> bool:
    annotation = _strip_none(annotation)
    return annotation is SecretStr or any(_is_secret(arg) for arg in get_args(annotation))


def _is_json(annotation: Any) -> bool:
    return get_origin(_strip_none(annotation)) in (list, dict)


_SCALARS: dict[Any, tuple[str, str]] = {
    bool: ("boolean", "booleans"),
    int: ("integer", "integers"),
    float: ("number", "numbers"),
    str: ("string", "strings"),
    Path: ("path", "paths"),
    SecretStr: ("string", "strings"),
}


def _type_name(annotation: Any, nested: bool, plural: bool = False) -> str:
    annotation = _strip_none(annotation)
    if nested:
        origin = get_origin(annotation)
        if origin is list:
            return "array of tables"
        if origin is dict:
            return "table of tables"
        return "table"
    if annotation in _SCALARS:
        return _SCALARS[annotation][plural]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        kinds = {type(arg) for arg in args}
        base = next(iter(kinds)) if len(kinds) == 1 else str
        return _SCALARS.get(base, ("string", "strings"))[plural]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "strings" if plural else "string"
    if origin is list and args:
        return "list of " + _type_name(args[0], False, plural=True)
    if origin is dict and len(args) == 2:
        return "table: name = " + _type_name(args[1], False)
    return getattr(annotation, "__name__", str(annotation))


def _choices(annotation: Any) -> tuple[Any, ...]:
    annotation = _strip_none(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return tuple(member.value for member in annotation)
    return ()


def _constraints(info: FieldInfo) -> Iterator[str]:
    annotation = _strip_none(info.annotation)
    choices = _choices(annotation)
    if choices:
        yield "one of " + ", ".join(f"`{_toml(choice)}`" for choice in choices)
    elif get_origin(annotation) is list and get_args(annotation):
        element = get_args(annotation)[0]
        if _choices(element):
            yield "each one of " + ", ".join(f"`{_toml(c)}`" for c in _choices(element))
    for item in info.metadata:
        match item:
            case annotated_types.Ge(ge=bound):
                yield f"≥ {_toml(bound)}"
            case annotated_types.Gt(gt=bound):
                yield f"> {_toml(bound)}"
            case annotated_types.Le(le=bound):
                yield f"≤ {_toml(bound)}"
            case annotated_types.Lt(lt=bound):
                yield f"< {_toml(bound)}"
            case annotated_types.MinLen(min_length=bound):
                yield f"at least {bound} long"
            case annotated_types.MaxLen(max_length=bound):
                yield f"at most {bound} long"
            case _ if isinstance(getattr(item, "pattern", None), str):
                yield f"matches `{item.pattern}`"


# -- values -----------------------------------------------------------------------------------


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "its defaults"
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    """A value as it is written in TOML."""
    match value:
        case bool():
            return "true" if value else "false"
        case int():
            return f"{value:_}" if abs(value) >= 10_000 else str(value)
        case float() if value.is_integer() and abs(value) >= 10_000:
            return f"{int(value):_}"
        case float():
            return repr(value)
        case Enum():
            return _toml(value.value)
        case Path():
            return json.dumps(str(value))
        case str():
            return json.dumps(value, ensure_ascii=False)
        case list() | tuple():
            return "[" + ", ".join(_toml(item) for item in value) + "]"
        case dict():
            items = ", ".join(f"{key} = {_toml(item)}" for key, item in value.items())
            return "{" + (f" {items} " if items else "") + "}"
    return str(value)


# -- Markdown ---------------------------------------------------------------------------------

_HEADER = f"""\
# Configuration reference

<!-- Generated by `python -m gateway.tools.config_reference` from the settings model
(gateway/config/settings.py, gateway/config/gateway.py): do not edit by hand. Regenerate with
`{REGENERATE}`; tests/tools/test_config_reference.py fails while this file is stale. -->

This page is generated from the settings model, so it lists every setting there is. Change
a setting's description in the code, then regenerate the page:

```sh
{REGENERATE}
```

## How settings are read

From the highest precedence to the lowest:

1. command-line options (e.g. `speech-gateway serve --port 8081`);
2. environment variables: `{ENV_PREFIX}` + the dotted name in upper case with `__` between
   the parts, e.g. `{ENV_PREFIX}GATEWAY__BREAKER__OPEN_S=5` sets `gateway.breaker.open_s`;
3. the TOML file: `--config FILE` (before or after the sub-command: `speech-gateway
   --config FILE serve` and `speech-gateway serve --config FILE` are the same), else
   `${CONFIG_ENV}`, else `config/gateway.toml` in the working directory when it exists
   (the commented example that runs as is); with none of these, only the defaults;
4. the defaults below.

**Relative paths** (every setting of type path, e.g. `emulator.custom`,
`outcomes.path`, `*_file`) are resolved by where they are written: in the TOML file,
relative to the **folder of that file**, so a file means the same whichever directory a
command starts in; in an environment variable, a command-line option (e.g. `emulate
--custom banking=corpus.txt`) or a default below (e.g. `var/outcomes.jsonl`), relative to
the **working directory**. A path of a configuration file itself (`--config`,
`${CONFIG_ENV}`) is relative to the working directory too. Settings derived from another
path (`outcomes.labels_path` and `gateway.control.state_path` when unset) follow it.

Tables from different sources are merged, so one variable can change one field of a table
the file sets. A **list** (an array, or an array of tables such as `gateway.experiments`)
is replaced as a whole: its variable holds the whole list as JSON, e.g.
`{ENV_PREFIX}GATEWAY__CLIENTS='[{{"name": "app", "key_sha256": "…"}}]'`, and the fields
inside it have no variable of their own. An entry of a table of tables (e.g.
`gateway.backends.<name>`) is addressed by its key in upper case; environment names are not
case-sensitive and arrive in lower case, so this reaches only entries whose name is lower
case.

**Secrets** (marked below) are refused in the TOML file: they come from their environment
variable or from a file named by the matching `*_file` setting. Unknown settings are
refused, and `speech-gateway config validate [FILE]` checks a file and names the offending
field, e.g. `gateway.experiments[0].variants[1].weight`. In the names below `[]` stands for
any element of a list (error messages give its index) and `<name>` for any key of a table;
"required" means required whenever its table is there.
"""


def _other_variables() -> str:
    # Imported here: the replay module loads the Speech SDK.
    from gateway.constants import ADMIN_TOKEN_ENV
    from gateway.tools.admin_cli import GATEWAY_URL_ENV
    from gateway.tools.cli_options import CLIENT_KEY_ENV

    rows = [
        (CONFIG_ENV, "every command that reads settings", "the TOML file (`--config` wins)"),
        (GATEWAY_URL_ENV, "`admin`", "the gateway's root URL (`--gateway` wins)"),
        (ADMIN_TOKEN_ENV, "`admin`, `replay`", "an admin token (`--admin-token` wins)"),
        (CLIENT_KEY_ENV, "`replay`", "the client key of the replayed sessions (`--key` wins)"),
    ]
    lines = [
        "## Other environment variables",
        "",
        "The commands read these besides the settings:",
        "",
        "| variable | read by | meaning |",
        "|---|---|---|",
        *(f"| `{name}` | {who} | {meaning} |" for name, who, meaning in rows),
    ]
    return "\n".join(lines) + "\n"


def anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def _link(header: str) -> str:
    return f"[`{header}`](#{anchor(header)})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _env_cell(field: FieldDoc) -> str:
    if field.env is not None:
        return f"`{field.env}`" + (" (JSON)" if field.env_json else "")
    if field.env_within is not None:
        return f"only within `{field.env_within}` (JSON)"
    return "—"


def _description_cell(field: FieldDoc) -> str:
    parts = [field.description]
    if field.section_link:
        parts.append(f"See {field.section_link}.")
    if field.secret:
        where = f" or `{field.secret_file}`" if field.secret_file else ""
        parts.insert(0, f"**Secret**: from the environment{where} only, never the TOML file.")
    return " ".join(part for part in parts if part)


def _render_section(section: Section) -> str:
    lines = ["#" * section.level + " " + f"`{section.header}`", ""]
    if section.intro:
        lines += [section.intro, ""]
    lines += [
        "| setting | environment variable | type | default | constraints | description |",
        "|---|---|---|---|---|---|",
    ]
    for field in section.fields:
        cells = (
            f"`{field.name}`",
            _env_cell(field),
            field.type,
            field.default,
            ", ".join(field.constraints),
            _description_cell(field),
        )
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def render(model: type[BaseModel] = Settings) -> str:
    """The whole reference as Markdown."""
    found = sections(model)
    anchors = [anchor(f"`{section.header}`") for section in found]
    duplicates = {a for a in anchors if anchors.count(a) > 1}
    if duplicates:
        raise ValueError(f"sections with the same anchor: {sorted(duplicates)}")
    contents = ["## Sections", ""]
    contents += [
        "  " * (section.level - 2) + f"* [`{section.header}`](#{a})"
        for section, a in zip(found, anchors, strict=True)
    ]
    parts = [_HEADER, "\n".join(contents) + "\n"]
    parts += [_render_section(section) for section in found]
    parts.append(_other_variables())
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.tools.config_reference",
        description="Print the configuration reference (Markdown) generated from the settings.",
    )
    parser.add_argument("--output", type=Path, help="write it to this file instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    missing = missing_descriptions()
    if missing:
        print(f"warning: no description: {', '.join(missing)}", file=sys.stderr)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
