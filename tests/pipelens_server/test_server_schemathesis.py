"""schemathesis (a third-party fuzzer) against the server's own ``/schema/openapi.json``: a
bounded, seeded run over two real servers on a real PostgreSQL, one open and one with the token,
that fails on any 5xx, any status the document does not list, or any body that breaks its schema.

Every case goes to both servers: the document is the same (the token is declared whatever the
settings), so one generation serves both, and generating the cases is most of the time."""

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


@pytest.fixture(scope="module")
def servers(module_database_url: str) -> Iterator[dict[str, str]]:
    """Two real servers on free ports and one real database: open, and with the token."""
    open_app = create_app(Settings(database_url=module_database_url))
    token_app = create_app(Settings(database_url=module_database_url, token=TOKEN))
    with live_server(open_app) as open_url, live_server(token_app) as token_url:
        yield {"open": open_url, "token": token_url}


def _cases(url: str) -> list[tuple[str, Any]]:
    schema = schemathesis.openapi.from_url(f"{url}/schema/openapi.json")
    return [(op.label, op) for op in (r.ok() for r in schema.get_all_operations())]


def _fuzz(servers: dict[str, str], operation: Any, mode: GenerationMode) -> int:
    """Send the operation's cases in ``mode`` with each kind of token to every server; the
    number of requests sent."""
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
        for name, url in servers.items():
            response = case.call(base_url=url, headers=headers, timeout=30, allow_redirects=False)
            sent += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:
                exc.add_note(f"on the {name} server ({url})")
                raise

    run()
    return sent


def _explain(exc: BaseException) -> str:
    """The failure with what hypothesis keeps inside it: a Flaky error's sub-exceptions carry
    the first run's failure, the one worth reading."""
    return "".join(traceback.format_exception(exc, chain=True))[-6000:]


@pytest.mark.timeout(900)  # 6.6 min at load ~7 (the two old runs: 7.5 min beside it)
def test_schemathesis_finds_no_5xx_and_no_schema_violation(servers: dict[str, str]) -> None:
    """Every operation, valid and invalid inputs, with a right, a wrong and no token, on an open
    server and on one with the token: no 5xx, every status documented, every body as
    documented."""
    operations = _cases(servers["token"])
    assert len(operations) >= 10
    sent = 0
    failures: list[str] = []
    for label, operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                sent += _fuzz(servers, operation, mode)
            except Unsatisfiable:  # no parameters, no body: nothing can be made invalid
                continue
            except (Exception, BaseExceptionGroup) as exc:  # run all, then fail with the list
                failures.append(f"{label} [{mode.value}]: {_explain(exc)}")
    print(f"schemathesis: {len(operations)} operations, {sent} requests, {len(failures)} failures")
    assert failures == [], "\n\n".join(failures[:10])
