"""The runs page's custom time range and its searches (step name, record value), in the page and
in ``GET /api/v1/runs``, on a real PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import pytest
from _dashboard_kit import MS, at, ingest, recent_run, table_rows
from _pg_testkit import run_events
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from psycopg import sql

from pipelens.events import Event, StepFinished
from pipelens_server._db._migrate import migrations
from pipelens_server._read import _pictures, _runs, _search
from pipelens_server._read._search import RunSearch, search_conditions

Client = TestClient[Litestar]
HTMX = {"HX-Request": "true", "HX-Target": "runs_table"}
RUNS = "/pipelines/rag/runs"


def _ns(text: str) -> int:
    """Nanoseconds of a UTC time written ``2026-01-10T10:30``."""
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000


def _run_at(run_id: str, utc: str) -> list[Event]:
    """A finished run of ``rag`` that started at ``utc``."""
    return at(run_events(run_id, "rag"), _ns(utc), scale=MS)


def _run_with(
    run_id: str, *, ago_s: float, step_name: str = "retrieve", records: str = '{"n_docs":2}'
) -> list[Event]:
    """A recent run whose middle step is called ``step_name`` and records ``records``."""
    events = []
    for event in recent_run(run_id, ago_s=ago_s):
        if getattr(event, "name", None) == "retrieve":
            event = msgspec.structs.replace(event, name=step_name)
            if isinstance(event, StepFinished):
                event = msgspec.structs.replace(event, records=records)
        events.append(event)
    return events


def _ids(client: Client, **params: str) -> list[str]:
    return [row[0] for row in table_rows(client.get(RUNS, params=params).text)]


def _api_ids(client: Client, **params: Any) -> list[str]:
    response = client.get("/api/v1/runs", params=params)
    assert response.status_code == 200, response.text
    return [run["run_id"] for run in response.json()["runs"]]


def test_custom_range_is_read_in_the_browsers_zone(client: Client) -> None:
    """from/to are times in the tz cookie's zone: 11:00-12:00 in Paris is 10:00-11:00 UTC."""
    for run_id, utc in (("r0930", "2026-01-10T09:30"), ("r1030", "2026-01-10T10:30")):
        ingest(client, _run_at(run_id, utc))
    ingest(client, _run_at("r1130", "2026-01-10T11:30"))
    window = {"range": "custom", "from": "2026-01-10T11:00", "to": "2026-01-10T12:00"}
    assert _ids(client, **window) == ["r1130"]  # no cookie: UTC
    client.cookies.set("tz", "Europe/Paris")
    html = client.get(RUNS, params=window).text
    assert [row[0] for row in table_rows(html)] == ["r1030"]
    assert 'value="2026-01-10T11:00"' in html
    assert 'value="2026-01-10T12:00"' in html
    assert "(Europe/Paris)" in html


def test_custom_range_with_an_open_side_and_an_offset(client: Client) -> None:
    """An empty from or to leaves that side open; a time with an offset keeps its offset."""
    for run_id, utc in (("a", "2026-01-10T09:30"), ("b", "2026-01-10T10:30")):
        ingest(client, _run_at(run_id, utc))
    ingest(client, _run_at("c", "2026-01-10T11:30"))
    assert _ids(client, range="custom", **{"from": "2026-01-10T10:00"}) == ["c", "b"]
    assert _ids(client, range="custom", to="2026-01-10T11:00") == ["b", "a"]
    assert _ids(
        client, range="custom", **{"from": "2026-01-10T11:00+01:00", "to": "2026-01-10T11:00"}
    ) == ["b"]


def test_bad_or_inverted_custom_range_says_what_is_wrong(client: Client) -> None:
    """A page with a bad from or an inverted range is a 400 naming it; htmx gets it in the table."""
    bad = client.get(RUNS, params={"range": "custom", "from": "yesterday"})
    assert bad.status_code == 400
    assert "from=&#39;yesterday&#39; is not a date and time: use YYYY-MM-DDTHH:MM" in bad.text
    assert 'id="range"' in bad.text  # the form is there to fix it
    window = {"range": "custom", "from": "2026-01-10T12:00", "to": "2026-01-10T11:00"}
    inverted = client.get(RUNS, params=window)
    assert inverted.status_code == 400
    assert "is not before to=&#39;2026-01-10T11:00&#39;" in inverted.text
    fragment = client.get(RUNS, params=window, headers=HTMX)
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="runs_table"')
    assert "is not before" in fragment.text
    too_far = client.get(RUNS, params={"range": "custom", "to": "9999-01-01T00:00"})
    assert too_far.status_code == 400
    assert "out of range" in too_far.text


def test_links_and_the_poll_keep_every_filter(client: Client) -> None:
    """The polled URL and the page links carry the custom range and the searches; a preset
    range drops from/to."""
    events = [e for i in range(55) for e in _run_with(f"r{i:02d}", ago_s=100 - i, step_name="x")]
    ingest(client, events)
    params = {
        "range": "custom",
        "from": "2000-01-01T00:00",
        "to": "2200-01-01T00:00",
        "step": "x",
        "record_key": "n_docs",
        "record_value": "2",
        "status": "completed",
    }
    html = client.get(RUNS, params=params, headers=HTMX).text
    poll = re.search(r'id="runs_table" hx-get="([^"]+)"', html)
    assert poll is not None
    older = re.search(r'href="([^"]+after=[^"]+)"', html)
    assert older is not None
    expected = (
        "range=custom&amp;from=2000-01-01T00%3A00&amp;to=2200-01-01T00%3A00"
        "&amp;status=completed&amp;step=x&amp;record_key=n_docs&amp;record_value=2"
    )
    assert poll.group(1) == f"{RUNS}?{expected}"
    assert older.group(1).startswith(f"{RUNS}?{expected}&amp;after=")
    preset = client.get(RUNS, params={**params, "range": "1h"}, headers=HTMX).text
    assert "from=" not in preset
    assert "range=1h&amp;status=completed&amp;step=x" in preset


def test_step_name_search_finds_runs_having_a_step_of_that_name(client: Client) -> None:
    """Only runs with a step of exactly that name are listed."""
    ingest(client, _run_with("with", ago_s=30, step_name="embed"))
    ingest(client, _run_with("without", ago_s=20, step_name="retrieve"))
    ingest(client, _run_with("longer", ago_s=10, step_name="embed_all"))
    assert _ids(client, step="embed") == ["with"]
    assert _ids(client, step="rerank") == ["longer", "without", "with"]  # every run has one
    html = client.get(RUNS, params={"step": "nothing"}).text
    assert "No  runs of rag matching this search in this time range." in html


def test_record_value_search_under_any_key_or_one_key(client: Client) -> None:
    """A value matches as text (2 finds the number 2 and the string "2"), under any top-level
    key, or under the key given; a key alone finds the runs that recorded it."""
    ingest(client, _run_with("num", ago_s=40, records='{"n_docs": 2}'))
    ingest(client, _run_with("text", ago_s=30, records='{"label": "2"}'))
    ingest(client, _run_with("other", ago_s=20, records='{"n_docs": 3, "label": "x"}'))
    ingest(client, _run_with("none", ago_s=10, records="null"))
    assert _ids(client, record_value="2") == ["text", "num"]
    assert _ids(client, record_key="n_docs", record_value="2") == ["num"]
    assert _ids(client, record_key="label", record_value="2") == ["text"]
    assert _ids(client, record_key="n_docs") == ["other", "num"]
    assert _ids(client, record_value="n_docs") == []  # a key is not a value


def test_record_value_search_is_literal(client: Client) -> None:
    """Quotes, backslashes and JSON path syntax in a value are matched as plain text."""
    ingest(client, _run_with("quote", ago_s=30, records='{"q": "say \\"hi\\" \\\\ $.*"}'))
    ingest(client, _run_with("plain", ago_s=20, records='{"q": "hi"}'))
    assert _ids(client, record_value='say "hi" \\ $.*') == ["quote"]
    assert _ids(client, record_key="q", record_value='say "hi" \\ $.*') == ["quote"]
    assert _ids(client, record_value='") || true || ("') == []
    assert _ids(client, record_value="1e999") == []  # a number jsonb cannot hold: no error


def test_searches_combine_with_status_run_id_and_pages(client: Client) -> None:
    """Step name, record value, status and run id filter together, and paging visits every
    matching run once."""
    events: list[Event] = []
    for i in range(60):
        name = "embed" if i % 2 else "retrieve"
        events += _run_with(f"job{i:02d}", ago_s=200 - i, step_name=name, records=f'{{"i":{i}}}')
    ingest(client, events)
    ingest(client, _run_with("bad", ago_s=5, step_name="embed"))
    expected = [f"job{i:02d}" for i in reversed(range(60)) if i % 2]
    assert expected == _ids(client, step="embed", q="job")
    assert _ids(client, step="embed", record_key="i", record_value="31") == ["job31"]
    assert _ids(client, step="embed", record_key="i", record_value="30") == []
    assert _ids(client, step="embed", q="job", status="failed") == []
    seen = _api_ids(client, step="embed", q="job", limit=7)
    page = client.get("/api/v1/runs", params={"step": "embed", "q": "job", "limit": 7}).json()
    while page["next"]:
        page = client.get(
            "/api/v1/runs", params={"step": "embed", "q": "job", "limit": 7, "after": page["next"]}
        ).json()
        seen += [run["run_id"] for run in page["runs"]]
    assert expected == seen


def test_api_takes_the_same_filters(client: Client) -> None:
    """GET /api/v1/runs filters by from/to (UTC unless an offset is given), step and record."""
    ingest(client, _run_at("early", "2026-01-10T09:30"))
    ingest(client, _run_at("late", "2026-01-10T10:30"))
    ingest(client, _run_with("now", ago_s=5, step_name="embed", records='{"doc": "d7"}'))
    assert _api_ids(client, **{"from": "2026-01-10T10:00", "to": "2026-01-10T11:00"}) == ["late"]
    assert _api_ids(client, to="2026-01-10T10:31:00+01:00") == ["early"]
    assert _api_ids(client, to="2026-01-10T11:00Z", pipeline="rag") == ["late", "early"]
    assert _api_ids(client, step="embed") == ["now"]
    assert _api_ids(client, record_value="d7", range="1h") == ["now"]
    assert _api_ids(client, record_key="doc", record_value="d7") == ["now"]
    assert _api_ids(client, record_key="n_docs", record_value="d7") == []


def test_api_refuses_a_bad_or_inverted_range(client: Client) -> None:
    """A from or to that is not a time, or a from not before the to, is a 400 naming it."""
    bad = client.get("/api/v1/runs", params={"to": "soon"})
    assert bad.status_code == 400
    assert "to='soon' is not a date and time" in bad.text
    inverted = client.get("/api/v1/runs", params={"from": "2026-01-02", "to": "2026-01-01"})
    assert inverted.status_code == 400
    assert "from='2026-01-02' is not before to='2026-01-01'" in inverted.text


def test_step_name_search_can_use_the_0007_index(database_url: str) -> None:
    """Made to start from the steps (no sequential scan, no per-run loop), a step-name search
    reads 0007's btree. Record searches have no index on purpose: a GIN index on records doubled
    PostgreSQL's insert cost per step; they are bounded by the page's range and page size."""
    searches = {"steps_name_run_idx": RunSearch(step_name="embed")}
    for index, search in searches.items():
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        search_conditions(search, conditions, params)
        query = sql.SQL("EXPLAIN SELECT run_id FROM runs WHERE {}").format(*conditions)
        with psycopg.connect(database_url) as conn:
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_nestloop = off")
            plan = "\n".join(row[0] for row in conn.execute(query, params))
        assert index.strip() in plan, plan


def test_search_finds_substrings_of_step_names_errors_and_record_values(client: Client) -> None:
    """``q`` matches part of a step's name, of its error message or of a string record value at
    any depth, in any case (``ali`` finds ``Alice``), besides a run id's start; never a record
    key alone; ``%`` and ``_`` are literal. The page and ``GET /api/v1/runs?q=`` agree."""
    ingest(client, _run_with("by-name", ago_s=50, step_name="fetch_ALICE_docs"))
    ingest(client, _run_with("by-value", ago_s=40, records='{"who": {"user": "Malice"}}'))
    ingest(client, _run_with("by-key", ago_s=30, records='{"alice": 1}'))
    ingest(client, recent_run("by-error", fail=True, ago_s=20))  # "bad doc"
    ingest(client, _run_with("plain", ago_s=10, records='{"n": "100%"}'))
    assert _ids(client, q="ali") == ["by-value", "by-name"]
    assert _api_ids(client, q="ALI") == ["by-value", "by-name"]
    assert _ids(client, q="BAD D") == ["by-error"]
    assert _api_ids(client, q="by-") == ["by-error", "by-key", "by-value", "by-name"]
    assert _ids(client, q="0%") == ["plain"]
    assert _ids(client, q="e_a") == []  # "_" is no wildcard: "fetch_ALICE" has "h_A"
    assert _ids(client, q="h_a") == ["by-name"]


def test_search_finds_values_holding_quotes_and_backslashes(client: Client) -> None:
    """``q`` finds a record value holding ``"`` or ``\\`` (escaped in the records' JSON text),
    with trigrams (three characters or more) and without."""
    ingest(client, _run_with("quote", ago_s=30, records='{"q": "say a\\"b"}'))
    ingest(client, _run_with("slash", ago_s=20, records='{"p": ["C:\\\\tmp"]}'))
    ingest(client, _run_with("plain", ago_s=10, records='{"q": "ab", "p": "c:/tmp"}'))
    assert _ids(client, q='a"b') == ["quote"]
    assert _ids(client, q='"b') == ["quote"]
    assert _api_ids(client, q="c:\\tm") == ["slash"]
    assert _api_ids(client, q="\\") == ["slash"]


def test_search_past_the_indexed_size_still_finds_the_value(client: Client) -> None:
    """A step whose records hold more than 0015's 4,096 characters has no trigrams indexed; a
    search still finds a value at its end, and only there."""
    big = json.dumps({"text": "x" * 5000 + " needle-at-the-end"})
    ingest(client, _run_with("big", ago_s=20, records=big))
    ingest(client, _run_with("small", ago_s=10, records='{"text": "haystack"}'))
    assert _ids(client, q="NEEDLE-AT") == ["big"]
    assert _ids(client, q="haysta") == ["small"]


def test_common_text_is_read_run_by_run_with_the_same_answer(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``COMMON_STEPS`` steps found by trigrams, the runs are read newest first instead:
    the same runs, in the same order, page after page."""
    events: list[Event] = []
    for i in range(6):
        records = f'{{"note": "shared note {i}"}}' if i % 3 else '{"note": "other"}'
        events += _run_with(f"job{i}", ago_s=100 - i, records=records)
    ingest(client, events)
    expected = ["job5", "job4", "job2", "job1"]
    assert _api_ids(client, q="ED NOTE") == expected
    monkeypatch.setattr(_search, "COMMON_STEPS", 2)
    assert _api_ids(client, q="ED NOTE") == expected
    first = client.get("/api/v1/runs", params={"q": "ed note", "limit": 3}).json()
    after = {"q": "ed note", "limit": 3, "after": first["next"]}
    rest = client.get("/api/v1/runs", params=after).json()
    assert expected == [run["run_id"] for run in first["runs"] + rest["runs"]]


def test_a_rare_texts_runs_are_looked_up_first_and_listed_as_run_by_run(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text no step name holds, in few steps and run ids, is looked up first and the list
    reads its runs by id (the runs of a rare text are otherwise tested one by one, newest first,
    across the whole range); the answer, in the API's list and the runs page, is the one the
    run-by-run condition gives. A text a step name holds takes that condition."""
    ingest(client, _run_with("needle-run", ago_s=50))
    ingest(client, _run_with("hay", ago_s=40, records='{"note": "a Needle here"}'))
    ingest(client, _run_with("other", ago_s=30, records='{"note": "nothing"}'))
    ingest(client, _run_with("named", ago_s=20, step_name="needle_finder"))
    answered: dict[str, list[str] | None] = {}
    looked_up = _search.rare_text_runs

    async def spy(pool: Any, search: RunSearch | None) -> list[str] | None:
        found = await looked_up(pool, search)
        answered[search.text if search else ""] = found
        return found

    texts = {"EEDLE H": ["hay"], "needle-": ["needle-run"], "othing": ["other"], "zzz": []}
    with monkeypatch.context() as patched:
        patched.setattr(_runs, "rare_text_runs", spy)
        patched.setattr(_pictures, "rare_text_runs", spy)
        found = {q: _api_ids(client, q=q) for q in [*texts, "NEEDLE"]}
        pages = {q: _ids(client, q=q) for q in [*texts, "NEEDLE"]}
    assert answered == {
        "EEDLE H": ["hay"],
        "needle-": ["needle-run"],
        "othing": ["other"],
        "zzz": [],
        "NEEDLE": None,
    }
    assert found == {**texts, "NEEDLE": ["named", "hay"]}  # a run id by its case-sensitive start

    async def common(pool: Any, search: RunSearch | None) -> None:
        return None

    monkeypatch.setattr(_runs, "rare_text_runs", common)
    monkeypatch.setattr(_pictures, "rare_text_runs", common)
    assert {q: _api_ids(client, q=q) for q in found} == found
    assert {q: _ids(client, q=q) for q in pages} == pages


def test_rare_text_search_reads_the_0015_index(database_url: str) -> None:
    """A text of three characters or more is looked up first (``rare_text_runs``): its error
    messages and record values from migration 0015's GIN index (steps_search_grams_idx)."""
    pattern, found = _search._found_params("needle")
    params = [pattern, "needle", *found, "needle%"]
    query = sql.SQL("EXPLAIN ") + _search._RARE
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")  # the test's tables are all but empty
        plan = "\n".join(row[0] for row in conn.execute(query, params))
    assert "Bitmap Index Scan on steps_search_grams_idx" in plan, plan


@pytest.mark.parametrize("q", ["grpc-instrument", "INTERNAL", "ab"])
def test_text_search_passes_over_otels_bookkeeping(client: Client, q: str) -> None:
    """``otel.span_kind`` and ``otel.scope``, which every OTLP span's records hold, are not text
    the search (``q``) finds, by its trigrams (migration 0017) or read run by run (a text under
    three characters); the span's own attributes are, and ``record_key`` still finds the key."""
    bookkeeping = '{"otel.span_kind": "internal", "otel.scope": "grpc-instrumentation-ab"}'
    ingest(client, _run_with("span", ago_s=20, records=bookkeeping))
    ingest(client, _run_with("note", ago_s=10, records=f'{{"note": "{q} in a note"}}'))
    assert _api_ids(client, q=q) == ["note"]
    assert _api_ids(client, record_key="otel.scope") == ["span"]


def _loop_grams() -> str:
    """Migration 0015's own ``pipelens_grams`` (a plpgsql statement per character), read from
    its file and made a temporary ``loop_grams``: what 0019's must equal."""
    (sql_0015,) = [m.sql for m in migrations() if m.version == 15]
    head = "CREATE FUNCTION pipelens_grams(value text)"
    start = sql_0015.index(head)
    end = sql_0015.index("$$;", start) + 3  # the body opens with "AS $$" and closes with "$$;"
    return sql_0015[start:end].replace(head, "CREATE FUNCTION pg_temp.loop_grams(value text)")


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
    | st.sampled_from(["", "ab", "abc", "abcd", "a\x01bcd\x01", "Ünï\nCÖDÉ", "x.y*z?[q]\\1&"])
)
def test_the_trigrams_are_those_of_0015s_loop(
    grams_conn: psycopg.Connection[Any], text: str
) -> None:
    """0019 makes a text's trigrams by cutting it into pieces, not a character at a time: for
    any text (any script, newlines, regex characters, 0019's own mark U+0001, under three
    characters) the set is 0015's, so the index built on 0015's stays right."""
    found = grams_conn.execute(
        "SELECT pipelens_grams(%s), pg_temp.loop_grams(%s)", [text, text]
    ).fetchone()
    assert found is not None
    new, old = found
    assert set(new) == set(old)
    assert "" not in new  # '' marks a step too big to index: every search reads it


@pytest.fixture(scope="module")
def grams_conn(module_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        conn.execute(_loop_grams())
        yield conn
