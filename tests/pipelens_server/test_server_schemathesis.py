"""schemathesis (a third-party fuzzer) against the server's own ``/schema/openapi.json``: a
bounded, seeded run over a real server on a real PostgreSQL, with and without the token, that
fails on any 5xx, any status the document does not list, or any body that breaks its schema."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from _pg_testkit import live_server
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pipelens_server import Settings, create_app

TOKEN = "s3cret-token"
#: Cases per operation and mode (positive: valid by the schema; negative: not): with about a
#: dozen operations, two modes and two servers, a few thousand requests in all.
EXAMPLES = 45
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def server(request: pytest.FixtureRequest, module_database_url: str) -> Iterator[str]:
    """A real server on a free port (with the token or without) and a real database."""
    app = create_app(Settings(database_url=module_database_url, token=request.param))
    with live_server(app) as url:
        yield url


def _cases(url: str) -> list[tuple[str, Any]]:
    schema = schemathesis.openapi.from_url(f"{url}/schema/openapi.json")
    return [(op.label, op) for op in (r.ok() for r in schema.get_all_operations())]


def _fuzz(server: str, operation: Any, mode: GenerationMode) -> int:
    """Send the operation's cases in ``mode`` with each kind of token; the number sent."""
    sent = 0

    @given(
        case=operation.as_strategy(generation_mode=mode),
        authorization=st.sampled_from([None, f"Bearer {TOKEN}", "Bearer wrong"]),
    )
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case, authorization: str | None) -> None:
        nonlocal sent
        headers = {"Authorization": authorization} if authorization else {}
        response = case.call(base_url=server, headers=headers, timeout=30, allow_redirects=False)
        sent += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
    return sent


def _explain(exc: BaseException) -> str:
    """The failure with what hypothesis keeps inside it: a Flaky error's sub-exceptions carry
    the first run's failure, the one worth reading."""
    return "".join(traceback.format_exception(exc, chain=True))[-6000:]


@pytest.mark.timeout(600)  # about a minute each on a quiet machine; two cores are shared
def test_schemathesis_finds_no_5xx_and_no_schema_violation(server: str) -> None:
    """Every operation, valid and invalid inputs, with a right, a wrong and no token: no 5xx,
    every status documented, every body as documented."""
    operations = _cases(server)
    assert len(operations) >= 10
    sent = 0
    failures: list[str] = []
    for label, operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                sent += _fuzz(server, operation, mode)
            except Unsatisfiable:  # no parameters, no body: nothing can be made invalid
                continue
            except (Exception, BaseExceptionGroup) as exc:  # run all, then fail with the list
                failures.append(f"{label} [{mode.value}]: {_explain(exc)}")
    print(f"schemathesis: {len(operations)} operations, {sent} requests, {len(failures)} failures")
    assert failures == [], "\n\n".join(failures[:10])
