"""The admin API's OpenAPI 3.1 document, served at `GET /admin/openapi.json`.

The document is the package data file static/openapi.json; it describes the routes of
`gateway.server.admin.control` (the control plane), `gateway.server.admin.labels` (labels)
and `gateway.server.admin.review` (the review workbench). Only `info.version` is filled in
at load, from the installed package; the file's own value stands when the package is not
installed. The prose contract is docs/admin.md, docs/labels.md and docs/review.md;
tests/server/admin/test_openapi.py checks that this document validates and names every route
and error status of the contract.
"""

from __future__ import annotations

import contextlib
import json
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from typing import Any, Final

DISTRIBUTION: Final = "speech-gateway"
STATIC_FILE: Final = "openapi.json"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin and labels API (a fresh dict on each call)."""
    # Through importlib.resources, so the file is found in an installed wheel as well.
    source = files("gateway.server.admin") / "static" / STATIC_FILE
    document: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    # A source tree that was never installed keeps the file's version.
    with contextlib.suppress(PackageNotFoundError):
        document["info"]["version"] = version(DISTRIBUTION)
    return document


def openapi_json() -> str:
    """The document as the JSON text `GET /admin/openapi.json` answers."""
    return json.dumps(openapi_document())
