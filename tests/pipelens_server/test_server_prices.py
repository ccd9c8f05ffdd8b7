"""The operator's prices (``pipelens serve --prices FILE``, ``PIPELENS_PRICES``) win over
genai-prices and prices.json at read time, on the /llm page, the run page and the API; a bad
file stops the start with its name and fault."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _dashboard_kit import ingest, table_rows
from _pg_testkit import LOCAL, MSGPACK, live_server, msgpack_body
from litestar import Litestar
from litestar.testing import TestClient
from test_server_llm_cost import calls_run, llm_tables, run_id_of
from test_server_llm_pages import HTMX

from pipelens.events import StepFinished
from pipelens_server import Settings, create_app
from pipelens_server.cli import main

Client = TestClient[Litestar]
#: gpt-4o-mini at ten times genai-prices' (0.15 and 0.6 USD per million tokens): 1M input and
#: 100k output tokens cost $1.50 + $0.60.
MINE = {"gpt-4o-mini": {"input": 1.5, "output": 6.0}}


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    path = tmp_path / "my-prices.json"
    path.write_text(json.dumps(MINE))
    return path


@pytest.fixture
def priced_client(database_url: str, prices_file: Path) -> Iterator[Client]:
    """A test client of an app reading costs with the operator's prices."""
    settings = Settings(database_url=database_url, prices_file=prices_file)
    with TestClient(create_app(settings), base_url=LOCAL) as test_client:
        yield test_client


def test_the_operators_prices_win_on_the_llm_page_run_page_and_api(
    priced_client: Client,
) -> None:
    """A model in the file is priced by it everywhere a cost is shown; the others as before."""
    events = calls_run("rag", [("gpt-4o-mini", 1_000_000), ("gpt-4o", 1_000_000)])
    ingest(priced_client, events)
    _, models = llm_tables(priced_client)
    assert models["gpt-4o-mini"][-1] == "$2.10"
    assert models["gpt-4o"][-1] == "$3.50"  # genai-prices: 2.5 and 10 per million
    usage = priced_client.get("/api/v1/llm/usage").json()
    assert {u["model"]: u["cost_usd"] for u in usage["usage"]} == {
        "gpt-4o-mini": pytest.approx(2.1),
        "gpt-4o": pytest.approx(3.5),
    }
    assert usage["prices_source"].startswith("your prices file my-prices.json, then genai-prices")
    assert "your prices file my-prices.json" in priced_client.get("/llm").text

    run_id = run_id_of(events)
    run = priced_client.get(f"/api/v1/runs/{run_id}").json()["run"]
    assert run["llm"]["cost_usd"] == pytest.approx(5.6)
    rows = {row[0]: row for row in table_rows(priced_client.get("/pipelines/rag/runs").text)}
    assert rows[run_id][6] == "$5.60"
    header = priced_client.get(f"/runs/{run_id}").text.split('<span class="run-llm">')[1]
    assert "$5.60" in header.split("</span>")[0]
    mini = next(
        e for e in events if isinstance(e, StepFinished) and e.llm and "gpt-4o-mini" in e.llm
    )
    panel = priced_client.get(
        f"/runs/{run_id}", params={"step": mini.key}, headers=HTMX | {"HX-Target": "step_panel"}
    ).text
    assert "$2.100000" in panel


def test_two_apps_in_one_process_each_price_with_their_own_prices(
    priced_client: Client, client: Client
) -> None:
    """The operator's prices belong to the app made with them: an app made later without a file
    prices with genai-prices, and the first app still with its file, request after request
    (one table per process made the later app's the prices of both)."""
    ingest(client, calls_run("rag", [("gpt-4o-mini", 1_000_000)]))
    for _ in range(2):
        assert llm_tables(client)[1]["gpt-4o-mini"][-1] == "$0.21"
        assert llm_tables(priced_client)[1]["gpt-4o-mini"][-1] == "$2.10"
    plain = client.get("/api/v1/llm/usage").json()
    priced = priced_client.get("/api/v1/llm/usage").json()
    assert [u["cost_usd"] for u in plain["usage"]] == [pytest.approx(0.21)]
    assert [u["cost_usd"] for u in priced["usage"]] == [pytest.approx(2.1)]
    assert not plain["prices_source"].startswith("your")
    assert priced["prices_source"].startswith("your prices file my-prices.json")


def test_a_real_server_reads_the_file_named_by_the_environment(
    database_url: str, prices_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PIPELENS_PRICES`` names the file as ``--prices`` does; a real uvicorn serves the costs."""
    monkeypatch.setenv("PIPELENS_PRICES", str(prices_file))
    settings = Settings.from_env(database_url=database_url)
    assert settings.prices_file == prices_file
    with live_server(create_app(settings)) as url:
        events = calls_run("rag", [("gpt-4o-mini", 1_000_000)])
        posted = httpx.post(f"{url}/api/v1/events", content=msgpack_body(events), headers=MSGPACK)
        assert posted.status_code == 202
        usage = httpx.get(f"{url}/api/v1/llm/usage").json()["usage"]
    assert [u["cost_usd"] for u in usage] == [pytest.approx(2.1)]


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        (None, r"cannot read the file"),
        ("{not json", r"not JSON"),
        ('{"gpt-4o": {"input": -1}}', r"model 'gpt-4o': Expected `float` >= 0.0 - at `\$.input`"),
        ('{"gpt-4o": {"inptu": 1}}', r"model 'gpt-4o': Object contains unknown field `inptu`"),
        ("[1, 2]", r"expected a JSON object of models"),
    ],
)
def test_serve_refuses_a_bad_prices_file_naming_it_and_the_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, fault: str
) -> None:
    """A prices file that cannot be read, is not JSON, or holds a bad price stops the start with
    exit 2, naming the file and the model and field at fault."""
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_text(content)
    assert main(["--prices", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"pipelens serve: prices file {str(path)!r}: " in err
    assert re.search(fault, err), err
