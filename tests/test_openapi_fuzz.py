"""Property-based run of bcpay's own API against its published OpenAPI document.

A real sandbox (bcpay and the fakes on loopback) answers schemathesis-generated
requests: no answer may be a 5xx, every status code must be documented and
every JSON body must match its schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bcpay.sandbox.runner import Sandbox, SandboxOptions, SandboxThread
from bcpay.server.openapi import document

pytestmark = pytest.mark.slow

OPERATIONS = [result.ok() for result in schemathesis.openapi.from_dict(document()).get_all_operations()]
# Negative cases need something to break: a parameter or a body.
CASES = [
    pytest.param(op, mode, id=f"{op.label} {mode.value}")
    for op in OPERATIONS
    for mode in schemathesis.GenerationMode
    if mode is schemathesis.GenerationMode.POSITIVE or "{" in op.path or op.method.upper() == "POST"
]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    app = {"client_id": "fuzz-client-id", "client_secret": "fuzz-client-secret-0123456789abcdef0123"}
    with SandboxThread(SandboxOptions(port_base=0, settings={"app": app})) as sb:
        yield sb


def test_the_served_document_is_the_published_one(sandbox: Sandbox) -> None:
    import httpx

    assert httpx.get(sandbox.urls.bcpay + "/openapi.json").json() == document()


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_no_5xx_and_every_answer_matches_the_document(operation: Any, mode: Any, sandbox: Sandbox) -> None:
    """Valid and invalid inputs alike: documented answers only, never a server error."""

    # A well-formed but invented install code is still refused (400): only
    # BigCommerce can mint a valid one, so "valid input accepted" cannot hold there.
    excluded = [positive_data_acceptance] if operation.path == "/bc/auth" else []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(base_url=sandbox.urls.bcpay, excluded_checks=excluded)

    run()
