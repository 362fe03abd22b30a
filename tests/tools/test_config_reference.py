"""The configuration reference: docs/configuration.md stays what the settings model generates."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, SecretStr

from gateway.config.settings import load_settings
from gateway.tools.config_reference import (
    REGENERATE,
    anchor,
    missing_descriptions,
    render,
    sections,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_is_generated_output() -> None:
    """docs/configuration.md equals the generator's output, so every setting it lists is true."""
    expected = render()
    actual = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    if actual != expected:
        diff = difflib.unified_diff(
            actual.splitlines(), expected.splitlines(), "docs/configuration.md", "generated", n=1
        )
        shown = "\n".join(list(diff)[:60])
        pytest.fail(f"docs/configuration.md is stale; regenerate it with\n  {REGENERATE}\n{shown}")


def test_every_setting_has_a_description() -> None:
    """Every settings field, nested ones included, has a description for the reference."""
    missing = missing_descriptions()
    assert not missing, (
        f"{len(missing)} setting(s) without a description; add Field(..., description=...) "
        f"to: {', '.join(missing)}"
    )


class _Leaf(BaseModel):
    """A nested table."""

    token: SecretStr | None = Field(None, description="a secret")
    token_file: Path | None = Field(None, description="its file")
    size: int = Field(10_000, ge=1, lt=100_000, description="a bounded number")


def test_walker_names_variables_by_how_a_field_can_be_reached() -> None:
    """Tables get one variable per field, table entries one per key, list elements none."""

    class Holder(BaseModel):
        one: _Leaf = Field(_Leaf(), description="a table")
        many: dict[str, _Leaf] = Field(default_factory=dict, description="a table of tables")
        items: list[_Leaf] = Field(default_factory=list, description="an array of tables")

    class Root(BaseModel):
        app: Holder = Field(Holder(), description="the section")

    found = {section.header: section for section in sections(Root)}
    assert list(found) == ["[app]", "[app.one]", "[app.many.<name>]", "[[app.items]]"]
    app = {field.name: field for field in found["[app]"].fields}
    assert app["app.many"].env == "SPEECH_GATEWAY_APP__MANY"
    assert app["app.many"].env_json
    assert app["app.one"].section_link == "[`[app.one]`](#appone)"
    one = {field.name: field for field in found["[app.one]"].fields}
    assert one["app.one.token"].env == "SPEECH_GATEWAY_APP__ONE__TOKEN"
    assert one["app.one.token"].secret
    assert one["app.one.token"].secret_file == "token_file"
    assert one["app.one.size"].constraints == ("≥ 1", "< 100_000")
    assert one["app.one.size"].default == "`10_000`"
    many = {field.name: field for field in found["[app.many.<name>]"].fields}
    assert many["app.many.<name>.size"].env == "SPEECH_GATEWAY_APP__MANY__<NAME>__SIZE"
    items = {field.name: field for field in found["[[app.items]]"].fields}
    assert items["app.items[].size"].env is None
    assert items["app.items[].size"].env_within == "SPEECH_GATEWAY_APP__ITEMS"
    assert found["[app.one]"].intro == "A nested table."  # the docstring first
    assert found["[app]"].intro == "the section"  # else the description of its field


def test_missing_descriptions_names_the_dotted_fields() -> None:
    """A field without a description is reported by its dotted name, nested ones included."""

    class Bare(BaseModel):
        documented: int = Field(1, description="yes")
        undocumented: int = 2

    class Root(BaseModel):
        section: Bare = Field(Bare(), description="a section")
        lists: list[Bare] = Field(default_factory=list)

    assert missing_descriptions(Root) == ["lists", "section.undocumented", "lists[].undocumented"]


def test_anchor_follows_github_headings() -> None:
    """Section links use GitHub's heading anchors: punctuation dropped, underscores kept."""
    assert anchor("`[[gateway.experiments.variants]]`") == "gatewayexperimentsvariants"
    assert anchor("`[gateway.backends.<name>]`") == "gatewaybackendsname"
    assert anchor("`[gateway.default_variant]`") == "gatewaydefault_variant"


def test_documented_variables_reach_their_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference's variable forms work: a table's field, a table entry's field, a list."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway.breaker]\nconsecutive_failures = 7\n[gateway.backends.local]\nurl = "ws://h"\n'
        '[[gateway.clients]]\nname = "file"\nkey_sha256 = "' + "1" * 64 + '"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("SPEECH_GATEWAY_GATEWAY__BREAKER__OPEN_S", "5")
    monkeypatch.setenv("SPEECH_GATEWAY_GATEWAY__BACKENDS__LOCAL__KEY", "backend-key")
    clients = [{"name": "env", "key_sha256": "2" * 64}]
    monkeypatch.setenv("SPEECH_GATEWAY_GATEWAY__CLIENTS", json.dumps(clients))
    gateway = load_settings(config).gateway
    assert (gateway.breaker.consecutive_failures, gateway.breaker.open_s) == (7, 5.0)
    backend = gateway.backends["local"]
    assert backend.url == "ws://h"
    assert backend.key is not None
    assert backend.key.get_secret_value() == "backend-key"
    assert [client.name for client in gateway.clients] == ["env"]
