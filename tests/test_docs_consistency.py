"""The docs state what the code does: metric names, labels and vocabularies, breaker names,
phase ids. Each test reads a statement out of the Markdown and compares it with the code's
own constants or functions, so a page and the code cannot drift apart unnoticed.

(The admin API's and CLI's examples are replayed against a running gateway in
tests/functional/test_docs_admin_examples.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from docs_markdown import backticked, doc, fenced_blocks, section, tables
from prometheus_client import Counter, Gauge, Histogram

from gateway.constants import NO_EXPERIMENT
from gateway.control.assignment import phase_id
from gateway.control.breaker import BreakerState
from gateway.control.guardrails import GuardrailName
from gateway.control.model import Backend, Variant
from gateway.control.state import Action
from gateway.errors import Limit
from gateway.outcomes.record import Kind, Protocol, Role
from gateway.protocol.usp import RecognitionStatus
from gateway.server.admin.openapi import openapi_document
from gateway.server.metrics import GatewayMetrics
from gateway.server.relay.backend_gate import breaker_name
from gateway.session.capture import CaptureReason, DropReason
from gateway.stores.keys import RedisKeys
from gateway.stores.redis_sink import RedisSink

AZURE = Backend("azure", "wss://westus.stt.speech.microsoft.com")
BASE = Variant("base", AZURE, None, 90.0)
CUSTOM = Variant("custom", AZURE, "5f0c2d3e-banking", 10.0)
_TYPES = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}


# -- breaker names ---------------------------------------------------------------------------


def render_breaker_template(template: str, experiment: str | None, variant: Variant) -> str:
    """A doc's `<backend>/<...>` name, filled in for `variant` of `experiment`."""
    values = {"backend": variant.backend.name, "variant": variant.name}
    values["experiment"] = experiment or NO_EXPERIMENT
    values["endpoint id"] = variant.endpoint_id or ""

    def fill(match: re.Match[str]) -> str:
        placeholder: str = match.group(1)
        if placeholder not in values:
            raise AssertionError(f"unknown placeholder <{placeholder}> in {template!r}")
        return values[placeholder]

    return re.sub(r"<([^>]+)>", fill, template)


# A breaker name as the docs write it: `<backend>` and more segments, placeholders or words.
BREAKER_TEMPLATE = r"<backend>(?:/(?:<[^>]+>|[A-Za-z0-9._-]+))+"


@pytest.mark.parametrize("page", ["observability.md", "admin.md"])
def test_the_breaker_names_the_docs_give_are_the_codes(page: str) -> None:
    """A custom endpoint's breaker (and its metric label) is `<backend>/<experiment>/<variant>`;
    the default variant's, `<backend>/_default/<variant>`."""
    templates = re.findall(BREAKER_TEMPLATE, doc(page))
    assert templates, f"{page} no longer names the breaker of a custom endpoint"
    for template in templates:
        experiment = None if f"/{NO_EXPERIMENT}/" in template else "banking"
        expected = breaker_name(experiment, CUSTOM)
        assert render_breaker_template(template, experiment, CUSTOM) == expected, template
    assert breaker_name("banking", BASE) == "azure"
    assert CUSTOM.endpoint_id is not None
    assert CUSTOM.endpoint_id not in breaker_name("banking", CUSTOM)


def test_same_named_custom_variants_have_a_breaker_each_as_admin_md_says() -> None:
    """Named by experiment and variant: two experiments' `custom` on one backend fail
    independently."""
    assert re.search(
        r"Variants\s+of the same name with custom endpoints on the same backend, in different\s+"
        r"experiments, have\s+a breaker each",
        doc("admin.md"),
    )
    other = Variant("custom", AZURE, "0123abcd-checkout", 50.0)
    assert breaker_name("checkout", other) != breaker_name("banking", CUSTOM)
    assert "0123abcd-checkout" not in breaker_name("checkout", other)


# -- metrics ---------------------------------------------------------------------------------


def exposed_families(journal_dir: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every series family a gateway can expose: name (as scraped) -> (type, label names).

    The collectors' label names are only reachable through `_labelnames`. The outcome
    store's families, read at scrape time, come from a real Redis sink (the sink with the
    most of them), never connected here."""

    async def not_connected() -> Any:
        raise AssertionError("the sink is not started in this test")

    metrics = GatewayMetrics()
    families: dict[str, tuple[str, tuple[str, ...]]] = {}
    for value in vars(metrics).values():
        kind = next((t for cls, t in _TYPES.items() if isinstance(value, cls)), None)
        if kind is not None:
            name = value._name + ("_total" if kind == "counter" else "")
            families[name] = (kind, tuple(value._labelnames))
    sink = RedisSink(not_connected, RedisKeys("docs"), journal_dir)
    metrics.watch_sink(sink)
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        families.setdefault(name, (family.type, ()))
    return families


def documented_series() -> dict[str, tuple[str, tuple[str, ...]]]:
    """observability.md's series tables: name -> (type, label names)."""
    found = {}
    for table in tables(doc("observability.md")):
        for row in table:
            if "series" not in row:
                continue
            (name,) = backticked(row["series"])
            labels = [label.strip() for label in row.get("labels", "").split(",")]
            found[name] = (row["type"], tuple(label for label in labels if label))
    return found


def test_the_metric_tables_list_every_series_with_its_type_and_labels(tmp_path: Path) -> None:
    assert documented_series() == exposed_families(tmp_path)


def labels_table() -> dict[str, str]:
    """observability.md's Labels table: label -> what its values are."""
    (table,) = [t for t in tables(doc("observability.md")) if "label" in t[0]]
    return {backticked(row["label"])[0]: row["values"] for row in table}


def test_every_label_of_a_series_is_described(tmp_path: Path) -> None:
    used = {label for _kind, labels in exposed_families(tmp_path).values() for label in labels}
    assert used == set(labels_table())


@pytest.mark.parametrize(
    ("label", "values"),
    [
        ("protocol", {p.value for p in Protocol}),
        ("role", {r.value for r in Role}),
        ("kind", {k.value for k in Kind}),
        ("status", {s.value for s in RecognitionStatus} | {"Unknown", "_other"}),
        ("state", set(get_args(BreakerState))),
        ("action", set(get_args(Action))),
        ("guardrail", set(get_args(GuardrailName))),
        ("limit", {limit.value for limit in Limit}),
        ("reason", {reason.value for reason in CaptureReason}),
        ("cause", {cause.value for cause in DropReason}),
    ],
)
def test_a_labels_listed_values_are_the_codes_vocabulary(label: str, values: set[str]) -> None:
    assert set(backticked(labels_table()[label])) == values


# -- phase ids -------------------------------------------------------------------------------


def variants_of(entries: list[list[Any]]) -> list[Variant]:
    """Variants from the JSON a phase id is computed from: [name, weight, backend, endpoint]."""
    return [
        Variant(name, Backend(backend, "ws://b"), endpoint, weight)
        for name, weight, backend, endpoint in entries
    ]


def test_the_phase_recipes_in_assignment_md_give_the_ids_it_states() -> None:
    text = section(doc("assignment.md"), "Phases")
    examples = re.findall(
        r"`(\[\[.*?\]\]|\{\"variants\".*?\})`.*?This\s+example\s+gives\s+`(p-[0-9a-f]+)`",
        text,
        re.DOTALL,
    )
    assert len(examples) == 2, "the configured phase and a changed phase"
    for content, stated in examples:
        data = json.loads(content)
        if isinstance(data, list):
            assert phase_id(variants_of(data)) == stated
        else:
            assert phase_id(variants_of(data["variants"]), epoch=data["epoch"]) == stated


def admin_example(opening: str) -> dict[str, Any]:
    """The ```json example of admin.md that starts with `opening`."""
    (block,) = [b for b in fenced_blocks(doc("admin.md"), "json") if b.startswith(opening)]
    parsed: dict[str, Any] = json.loads(block)
    return parsed


def test_the_phase_ids_of_admin_mds_examples_follow_the_recipe() -> None:
    """The view's configured phase is computed from its variants and weights; the audit
    entry's new phase from the effective weights, the version and its id's first 8 digits."""
    view = admin_example('{\n  "id": "banking"')
    entry = admin_example('{"id": ')

    def variants(weights: dict[str, float]) -> list[Variant]:
        return [
            Variant(
                v["name"], Backend(v["backend"], "ws://b"), v["endpoint_id"], weights[v["name"]]
            )
            for v in view["variants"]
        ]

    (configured,) = [p for p in view["phases"] if p["started_at"] is None]
    assert configured["phase"] == phase_id(variants(configured["weights"]))
    after = entry["after"]
    assert after["status"] == "running"  # so its weights are the effective ones
    epoch = f"{after['version']}-{entry['id'][:8]}"
    assert after["phase"] == phase_id(variants(after["weights"]), epoch=epoch)


@pytest.mark.parametrize("page", ["admin.md", "assignment.md", "outcomes.md", "analysis.md"])
def test_every_phase_id_in_the_docs_has_the_stated_format(page: str) -> None:
    text = doc(page)
    digits = {int(n) for n in re.findall(r"`\"?p-\"?` followed by (\d+) hex digits", text)}
    if page in ("admin.md", "assignment.md"):
        assert digits == {len(phase_id([BASE, CUSTOM])) - len("p-")}
    for token in re.findall(r"\bp-[0-9a-f]{4,}\w*", text):
        assert re.fullmatch(r"p-[0-9a-f]{10}", token), token


# -- admin API statuses ----------------------------------------------------------------------

_ROUTE = re.compile(r"(GET|PUT|POST|DELETE) (\S+)")


def route_statuses() -> list[tuple[list[tuple[str, str]], str]]:
    """admin.md's route sections that list statuses: the routes each heading names (with
    `…` for `/admin/experiments/{experiment}`), and its "Statuses:" text."""
    found = []
    for part in section(doc("admin.md"), "Routes").split("\n### ")[1:]:
        heading, _, body = part.partition("\n")
        statuses = re.search(r"^Statuses: (.*?)\.(?:\n|$)", body, re.MULTILINE | re.DOTALL)
        if statuses is None:  # the OpenAPI document itself: it only ever answers 200
            continue
        routes = []
        for span in backticked(heading):
            route = _ROUTE.fullmatch(span)
            assert route is not None, span
            path = route.group(2).replace("…", "/admin/experiments/{experiment}")
            routes.append((route.group(1).lower(), path.partition("?")[0]))
        found.append((routes, statuses.group(1)))
    return found


def codes(text: str) -> set[str]:
    return set(re.findall(r"\b\d{3}\b", text))


def test_each_admin_route_lists_the_statuses_of_the_openapi_contract() -> None:
    paths = openapi_document()["paths"]
    sections = route_statuses()
    assert len(sections) == 8
    for routes, statuses in sections:
        # "POST 200, …; DELETE 200, …" lists each method's own; otherwise one list serves
        # every route of the section (a single experiment's GET adds 404 to the list's).
        by_method = dict(re.findall(r"(POST|DELETE|GET|PUT) ([^;]+)", statuses))
        if by_method:
            for method, path in routes:
                contract = set(paths[path][method]["responses"])
                assert codes(by_method[method.upper()]) == contract, (method, path)
        else:
            union = set().union(*(paths[p][m]["responses"] for m, p in routes))
            assert codes(statuses) == union, routes


# -- the layout ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_layout_names_every_package_folder() -> None:
    layout = section((ROOT / "README.md").read_text(encoding="utf-8"), "Layout")
    named = set(re.findall(r"`(gateway/[a-z_/]+/)`", layout))
    folders = {
        f"{path.relative_to(ROOT).as_posix()}/"
        for path in (ROOT / "gateway").iterdir()
        if path.is_dir() and (path / "__init__.py").is_file()
    }
    assert folders <= named, f"README's layout table misses {sorted(folders - named)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_source_path_a_page_names_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    paths = set(re.findall(r"(?<![\w/.])((?:gateway|tests|bench|scripts)/[\w/]+\.py)", text))
    modules = set(re.findall(r"`(?:python -m )?(gateway(?:\.\w+)+)`", text))
    missing = [p for p in sorted(paths) if not (ROOT / p).is_file()]
    missing += [
        m
        for m in sorted(modules)
        if not any(
            (ROOT / candidate).exists()
            for candidate in (
                m.replace(".", "/") + ".py",
                m.replace(".", "/"),
                m.rpartition(".")[0].replace(".", "/") + ".py",  # a module's attribute
            )
        )
        and _names_a_package_part(m)
        and not _is_setting(m)
    ]
    assert not missing, f"{page.name} names what does not exist: {missing}"


def _names_a_package_part(name: str) -> bool:
    """`gateway.<part>...` where `<part>` is a module or package of gateway/ (a name such
    as `gateway.max_rest_body_bytes` is an old setting's, not code's)."""
    first = name.split(".")[1]
    return (ROOT / "gateway" / f"{first}.py").is_file() or (ROOT / "gateway" / first).is_dir()


def _is_setting(name: str) -> bool:
    """`gateway.limits.idle_timeout_s` and the like: a setting (or section) of the generated
    configuration reference, which is written from the settings model itself."""
    return f"`{name}`" in doc("configuration.md") or f"`{name}." in doc("configuration.md")
