"""Who and why of a run (tags, user, session, metadata): stored from the run events and filtered
by ``GET /api/v1/runs``, on a real PostgreSQL."""

from __future__ import annotations

from typing import Any

from _dashboard_kit import ingest, recent_run, table_rows, with_who
from _pg_testkit import msgpack_body, read_rows
from litestar import Litestar
from litestar.testing import TestClient

import pipelens
from pipelens.events import MAX_TAGS, RunFinished

Client = TestClient[Litestar]
MSGPACK = {"Content-Type": "application/msgpack"}
RUNS = "/pipelines/rag/runs"


def _api_ids(client: Client, **params: Any) -> list[str]:
    response = client.get("/api/v1/runs", params=params)
    assert response.status_code == 200, response.text
    return sorted(run["run_id"] for run in response.json()["runs"])


def _three_runs(client: Client) -> None:
    ingest(
        client,
        with_who(
            recent_run("a", ago_s=30),
            tags=["nightly", "v2"],
            user_id="u-1",
            session_id="s-1",
            attributes={"plan": "pro", "n": "3"},
        ),
    )
    ingest(
        client,
        with_who(recent_run("b", ago_s=20), tags=["v2"], user_id="u-2", session_id="s-1"),
    )
    ingest(client, recent_run("c", ago_s=10))


def test_runs_filter_by_tag_user_session_and_metadata(client: Client) -> None:
    """Each filter keeps the runs it names, alone and combined."""
    _three_runs(client)
    assert _api_ids(client) == ["a", "b", "c"]
    assert _api_ids(client, tag="nightly") == ["a"]
    assert _api_ids(client, tag="v2") == ["a", "b"]
    assert _api_ids(client, user_id="u-2") == ["b"]
    assert _api_ids(client, session_id="s-1") == ["a", "b"]
    assert _api_ids(client, metadata="plan=pro") == ["a"]
    assert _api_ids(client, metadata="plan=free") == []
    assert _api_ids(client, metadata="n") == ["a"]  # a key alone: runs that have it
    assert _api_ids(client, tag="v2", user_id="u-2", session_id="s-1") == ["b"]
    assert _api_ids(client, tag="nope") == []


def test_tags_set_mid_run_arrive_with_the_finish_in_any_order(
    client: Client, database_url: str
) -> None:
    """Only the finish knows the tags (set mid-run): stored whichever event arrives first."""
    events = with_who(recent_run("late"), started=False, tags=["late"], user_id="u")
    finish_first = [e for e in events if isinstance(e, RunFinished)]
    ingest(client, finish_first)
    ingest(client, [e for e in events if not isinstance(e, RunFinished)])
    (row,) = read_rows(database_url, "late")["runs"]
    assert (row["tags"], row["user_id"], row["status"]) == (["late"], "u", "completed")
    assert _api_ids(client, tag="late") == ["late"]


def test_the_real_client_sends_what_the_server_filters_on(client: Client) -> None:
    """``pipelens.tag``/``set_run`` in a real run reach the filters through the ingest API."""
    memory = pipelens.MemoryTransport()

    @pipelens.step
    def chat() -> None:
        pipelens.tag("from-client")
        pipelens.set_run(user_id="u-9", session_id="conv", metadata={"turn": 2})

    pipelens.configure(transport=memory)
    chat()
    ingest(client, memory.events)
    (run,) = client.get("/api/v1/runs", params={"metadata": "turn=2"}).json()["runs"]
    assert client.get("/api/v1/runs", params={"tag": "from-client"}).json()["runs"][0]["tags"] == [
        "from-client"
    ]
    assert (run["user_id"], run["session_id"]) == ("u-9", "conv")


def test_secret_metadata_is_redacted_by_the_server_too(client: Client, database_url: str) -> None:
    """A client that sends a secret-looking metadata key unredacted gets it redacted on ingest."""
    ingest(client, with_who(recent_run("s"), attributes={"api_key": "sk-live", "plan": "pro"}))
    (row,) = read_rows(database_url, "s")["runs"]
    assert row["attributes"] == {"api_key": "[REDACTED]", "plan": "pro"}


def test_bad_filters_and_events_are_a_400_naming_the_field(client: Client) -> None:
    """An empty metadata key, a NUL, too many tags or an over-long tag: 400s, never a 5xx."""
    bad = client.get("/api/v1/runs", params={"metadata": "=pro"})
    assert bad.status_code == 400
    assert "metadata" in bad.text
    nul = client.get("/api/v1/runs", params={"tag": "a\x00b"})
    assert nul.status_code == 400
    assert "tag" in nul.text
    assert _api_ids(client, user_id="x" * 60_000) == []
    many = with_who(recent_run("m"), tags=[f"t{i}" for i in range(MAX_TAGS + 1)])
    response = client.post("/api/v1/events", content=msgpack_body(many), headers=MSGPACK)
    assert response.status_code == 400
    assert "tags" in response.text
    long = with_who(recent_run("l"), user_id="u" * 10_000)
    response = client.post("/api/v1/events", content=msgpack_body(long), headers=MSGPACK)
    assert response.status_code == 400
    assert "user_id" in response.text


def test_runs_page_filters_by_tag_user_session_and_metadata(client: Client) -> None:
    """The runs page takes the API's filters, keeps them in its form, and names a bad one."""
    _three_runs(client)

    def ids(**params: str) -> list[str]:
        return sorted(row[0] for row in table_rows(client.get(RUNS, params=params).text))

    assert ids(tag="v2") == ["a", "b"]
    assert ids(user_id="u-2") == ["b"]
    assert ids(session_id="s-1") == ["a", "b"]
    assert ids(metadata="plan=pro") == ["a"]
    assert 'value="plan=pro"' in client.get(RUNS, params={"metadata": "plan=pro"}).text
    bad = client.get(RUNS, params={"metadata": "=x"})
    assert bad.status_code == 400
    assert "metadata=" in bad.text


def test_run_header_shows_who_and_links_the_session(client: Client) -> None:
    """The run page's header shows tags, user, session (a link) and metadata."""
    _three_runs(client)
    html = client.get("/runs/a").text
    for text in ('class="tag"', ">nightly<", ">u-1<", 'href="/sessions/s-1"', "plan=pro"):
        assert text in html


def test_session_page_lists_its_runs_oldest_first(client: Client) -> None:
    """``/sessions/{id}`` lists the session's runs in time order, and only those."""
    _three_runs(client)
    assert [row[:2] for row in table_rows(client.get("/sessions/s-1").text)] == [
        ["a", "rag"],
        ["b", "rag"],
    ]
    empty = client.get("/sessions/nobody")
    assert empty.status_code == 200
    assert "No run of session nobody" in empty.text
