"""W3C trace context: the current step as ``traceparent``/``tracestate``, carried out by the
patched HTTP clients and taken in by ``continue_run`` and the web integrations."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import requests
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar, get
from litestar.testing import TestClient as LitestarClient

import pipelens
import pipelens.fastapi
import pipelens.litestar
from pipelens._otel.trace_context import (
    parent_from,
    parse_traceparent,
    run_id_of,
    trace_id_of,
    tracestate_entry,
)
from pipelens.testing import CapturedEvents

UUID_RUN = "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
FOREIGN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_uuid_run_id_is_its_trace_id_and_back() -> None:
    """A PipeLens run id (a UUID) is the trace id's 32 hex digits; the trace id reads back."""
    trace_id = trace_id_of(UUID_RUN)
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert run_id_of(trace_id) == UUID_RUN


def test_any_other_run_id_hashes_to_a_stable_trace_id() -> None:
    """A chosen run id gets the same 32-hex trace id every time, and different ids differ."""
    assert trace_id_of("nightly-2026-12-01") == trace_id_of("nightly-2026-12-01")
    assert trace_id_of("nightly-2026-12-01") != trace_id_of("nightly-2026-12-02")
    assert len(trace_id_of("x")) == 32
    assert trace_id_of(UUID_RUN.upper()) != UUID_RUN.replace("-", "")  # not ours: hashed


@given(st.text(max_size=10), st.text(max_size=10))  # within the 256-character limit
def test_our_tracestate_entry_is_the_percent_encoded_run_id_and_key(run_id: str, key: str) -> None:
    """Whatever the characters (the unencoded ones pass as they are, at once), the entry is
    ``quote(run id);quote(key)``."""
    assert tracestate_entry(run_id, key) == (
        "pipelens",
        f"{quote(run_id, safe='')};{quote(key, safe='')}",
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # three fields
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # 00 has four fields
    ],
)
def test_an_invalid_traceparent_names_no_parent(value: str) -> None:
    """W3C's rules: each of these is refused."""
    assert parse_traceparent(value) is None


def test_a_later_version_may_carry_more_fields() -> None:
    """A version above 00 is read by its first four fields."""
    assert parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more") == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    )


def test_the_headers_name_the_current_step_and_its_run() -> None:
    """``traceparent`` has the run's trace id and the step's id; ``tracestate`` our entry with
    the run id and the step key; outside a step there are none."""
    assert pipelens.propagation_headers() == {}
    seen = {}

    @pipelens.step("child step")
    def child() -> None:
        seen.update(pipelens.propagation_headers())
        step = pipelens.current_step()
        assert step is not None
        seen["id"], seen["run"] = step.id, step.run.id

    with pipelens.Pipeline("a,b=c", run_id="run/1 é").run():
        child()
    assert seen["traceparent"] == f"00-{trace_id_of('run/1 é')}-{seen['id']}-01"
    assert seen["tracestate"] == "pipelens=run%2F1%20%C3%A9;a%2Cb%3Dc.child%20step"
    parent = parent_from(seen["traceparent"], seen["tracestate"])
    assert parent is not None
    assert (parent.run_id, parent.key, parent.span_id) == (
        "run/1 é",
        "a,b=c.child step",
        seen["id"],
    )


def test_continue_run_nests_under_the_sender_step_in_the_sender_run(
    events: CapturedEvents,
) -> None:
    """The block is a step of the sender's run under the sender's step; it sends no run start
    or end of its own, and its children nest under it."""

    @pipelens.step
    def work() -> str:
        return "done"

    @pipelens.step
    def send() -> dict[str, str]:
        return pipelens.propagation_headers()

    headers = send()
    (sender,) = events.steps()
    with pipelens.continue_run(headers, "handle") as step:
        assert step is not None
        work()
    pipelens.flush()
    handle = events.step(f"send.handle___{step.id}")
    assert (handle.run_id, handle.parent_id) == (sender.run_id, sender.step_id)
    assert events.step(f"send.handle___{step.id}.work").parent_id == handle.step_id
    assert [r.run_id for r in events.runs()] == [sender.run_id]
    assert [r.run_id for r in events.runs_started()] == [sender.run_id]


def test_continue_run_follows_a_foreign_trace_as_a_run_of_its_own(
    events: CapturedEvents,
) -> None:
    """A traceparent without our tracestate entry: a run here whose id is the trace id as a
    UUID and whose root's parent is the foreign span."""
    with pipelens.continue_run({"TraceParent": FOREIGN}, "consume"):
        pass
    (run,) = events.runs()
    assert run.run_id == "0af76519-16cd-43dd-8448-eb211c80319c"
    (root,) = events.steps()
    assert (root.parent_id, root.name, run.pipeline) == ("b7ad6b7169203331", "consume", "consume")


def test_continue_run_without_valid_headers_is_a_plain_span(events: CapturedEvents) -> None:
    """No traceparent: a step under the current one (or a new run), as ``span`` would be."""

    @pipelens.step
    def outer() -> None:
        with pipelens.continue_run({"traceparent": "garbage"}, "inner"):
            pass

    outer()
    assert events.step("outer.inner").parent_id == events.step("outer").step_id


def test_an_exception_passes_through_continue_run_and_fails_its_step(
    events: CapturedEvents,
) -> None:
    """The user's exception is the one raised; the continued step records it."""
    with pytest.raises(KeyError, match="gone"), pipelens.continue_run({}, "job"):
        raise KeyError("gone")
    assert events.step("job").status == "failed"


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the request's headers as JSON."""

    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("library", ["httpx", "requests"])
def test_a_patched_client_sends_the_current_step_and_nothing_outside(
    library: str, echo_url: str
) -> None:
    """Inside a step the request carries the step's headers; outside, and after unpatch, none;
    a traceparent the caller set is left as it is."""

    def call(**headers: str) -> dict[str, str]:
        if library == "httpx":
            return dict(httpx.get(echo_url, headers=headers).json())
        return dict(requests.get(echo_url, headers=headers, timeout=10).json())

    @pipelens.step
    def inside(**headers: str) -> tuple[dict[str, str], dict[str, str]]:
        return call(**headers), pipelens.propagation_headers()

    assert pipelens.auto_patch(library) == [library]
    try:
        got, expected = inside()
        assert {k: got[k] for k in expected} == expected
        assert "traceparent" not in call()
        mine = inside(traceparent=FOREIGN)[0]
        assert (mine["traceparent"], "tracestate" in mine) == (FOREIGN, False)
    finally:
        pipelens.unpatch(library)
    assert "traceparent" not in inside()[0]


async def test_the_async_httpx_client_sends_the_current_step(echo_url: str) -> None:
    """``httpx.AsyncClient`` carries the step too."""

    @pipelens.step
    async def inside() -> tuple[dict[str, str], dict[str, str]]:
        async with httpx.AsyncClient() as client:
            response = await client.get(echo_url)
        return dict(response.json()), pipelens.propagation_headers()

    pipelens.auto_patch(httpx)
    try:
        got, expected = await inside()
    finally:
        pipelens.unpatch(httpx)
    assert got["traceparent"] == expected["traceparent"]


def test_auto_patch_with_no_argument_leaves_the_http_clients_alone(echo_url: str) -> None:
    """``auto_patch()`` is the LLM libraries: no header goes out on a plain httpx call."""
    pipelens.auto_patch()
    try:

        @pipelens.step
        def inside() -> dict[str, str]:
            return dict(httpx.get(echo_url).json())

        assert "traceparent" not in inside()
    finally:
        pipelens.unpatch()


def _sender_headers() -> tuple[dict[str, str], str, str]:
    out: list[tuple[dict[str, str], str, str]] = []

    @pipelens.step
    def sender() -> None:
        step = pipelens.current_step()
        assert step is not None
        out.append((pipelens.propagation_headers(), step.run.id, step.id))

    sender()
    return out[0]


def test_the_fastapi_dependency_continues_the_caller_run(events: CapturedEvents) -> None:
    """A request with a PipeLens traceparent is a part of the caller's run, under its step."""

    @pipelens.step
    def work() -> int:
        return 1

    app = FastAPI()

    @app.get("/work", dependencies=[Depends(pipelens.fastapi.run())])
    def handler() -> int:
        return work()

    headers, run_id, step_id = _sender_headers()
    with TestClient(app) as client:
        assert client.get("/work", headers=headers).json() == 1
        client.get("/work")  # no headers: a run of its own
    request = next(s for s in events.steps(run_id) if s.name == "GET /work")
    assert request.parent_id == step_id
    assert events.step(f"{request.key}.work").run_id == run_id
    assert sorted(r.pipeline for r in events.runs()) == ["GET /work", "sender"]


def test_the_litestar_plugin_continues_the_caller_run_and_follows_a_foreign_trace(
    events: CapturedEvents,
) -> None:
    """A PipeLens traceparent continues the caller's run; a foreign one makes a run whose id
    is the trace's."""

    @get("/ping", sync_to_thread=False)
    def ping() -> str:
        return "pong"

    app = Litestar([ping], plugins=[pipelens.litestar.PipelensPlugin()])
    headers, run_id, step_id = _sender_headers()
    with LitestarClient(app) as client:
        assert client.get("/ping", headers=headers).text == "pong"
        assert client.get("/ping", headers={"traceparent": FOREIGN}).text == "pong"
    continued = next(s for s in events.steps(run_id) if s.name == "GET /ping")
    assert continued.parent_id == step_id
    foreign = events.steps("0af76519-16cd-43dd-8448-eb211c80319c")
    assert [(s.name, s.parent_id) for s in foreign] == [("GET /ping", "b7ad6b7169203331")]
    assert sorted(r.run_id for r in events.runs()) == sorted(
        [run_id, "0af76519-16cd-43dd-8448-eb211c80319c"]
    )


VENDORS = "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"


def test_other_vendors_entries_received_go_out_again_after_ours(echo_url: str) -> None:
    """A run continued from headers with other vendors' ``tracestate`` entries sends them on
    unchanged, after our entry (updated to the new step), through ``propagation_headers`` and
    a patched client; a malformed entry and a stale ``pipelens`` entry are not passed on."""
    tracestate = f"pipelens=old-run;old.key,{VENDORS},bad entry,=x"
    pipelens.auto_patch(httpx)
    try:
        with pipelens.continue_run({"traceparent": FOREIGN, "tracestate": tracestate}, "job"):
            step = pipelens.current_step()
            assert step is not None
            headers = pipelens.propagation_headers()
            sent = httpx.get(echo_url).json()
    finally:
        pipelens.unpatch(httpx)
    ours = f"pipelens=old-run;{quote(step.key, safe='')}"
    assert step.run.id == "old-run"
    assert headers["tracestate"] == f"{ours},congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    assert sent["tracestate"] == headers["tracestate"]
    assert sent["traceparent"] == headers["traceparent"]


@pytest.mark.parametrize("library", ["httpx", "requests"])
def test_a_request_tracestate_keeps_its_entries_and_gets_ours(library: str, echo_url: str) -> None:
    """A ``tracestate`` the caller put on a request (without a ``traceparent``) keeps its
    other vendors' entries, in order, after ours; an old ``pipelens`` entry in it is
    replaced."""

    @pipelens.step
    def inside() -> tuple[dict[str, str], dict[str, str]]:
        state = {"tracestate": f"{VENDORS},pipelens=stale"}
        if library == "httpx":
            got = dict(httpx.get(echo_url, headers=state).json())
        else:
            got = dict(requests.get(echo_url, headers=state, timeout=10).json())
        return got, pipelens.propagation_headers()

    pipelens.auto_patch(library)
    try:
        got, expected = inside()
    finally:
        pipelens.unpatch(library)
    assert got["traceparent"] == expected["traceparent"]
    assert got["tracestate"] == f"{expected['tracestate']},congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def test_the_asgi_integration_passes_other_vendors_entries_on(
    echo_url: str, events: CapturedEvents
) -> None:
    """A request continued by the Litestar plugin (the ASGI core) with other vendors' entries
    sends them on with its own outgoing calls."""

    @get("/relay", sync_to_thread=False)
    def relay() -> dict[str, str]:
        return dict(httpx.get(echo_url).json())

    app = Litestar([relay], plugins=[pipelens.litestar.PipelensPlugin()])
    pipelens.auto_patch(httpx)
    try:
        with LitestarClient(app, base_url="http://127.0.0.1") as client:
            sent = client.get(
                "/relay", headers={"traceparent": FOREIGN, "tracestate": VENDORS}
            ).json()
    finally:
        pipelens.unpatch(httpx)
    entries = sent["tracestate"].split(",")
    assert entries[0].startswith("pipelens=0af76519-16cd-43dd-8448-eb211c80319c;")
    assert entries[1:] == ["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]


def test_tracestate_stays_within_32_entries_and_512_characters() -> None:
    """Past 32 entries the right-most go; past 512 characters entries over 128 characters
    go first, then the right-most; ours is always first and always kept."""
    many = ",".join(f"v{i}=x" for i in range(40))
    with pipelens.continue_run({"traceparent": FOREIGN, "tracestate": many}, "job"):
        entries = pipelens.propagation_headers()["tracestate"].split(",")
    assert len(entries) == 32
    assert entries[0].startswith("pipelens=")
    assert entries[1:] == [f"v{i}=x" for i in range(31)]
    long = "big=" + "y" * 200
    wide = ",".join([long] + [f"w{i}=" + "z" * 40 for i in range(12)])
    with pipelens.continue_run({"traceparent": FOREIGN, "tracestate": wide}, "job"):
        value = pipelens.propagation_headers()["tracestate"]
    entries = value.split(",")
    assert len(value) <= 512
    assert entries[0].startswith("pipelens=")
    assert long not in entries  # the long one went first
    kept = [e.partition("=")[0] for e in entries[1:]]
    assert kept == [f"w{i}" for i in range(len(kept))]  # then from the right
    assert len(value) + len(f",w{len(kept)}=" + "z" * 40) > 512  # and no more than needed


@pytest.mark.parametrize("headers", ["traceparent: 00-abc", b"raw", 42])
def test_continue_run_given_no_headers_is_a_type_error_naming_them(headers: object) -> None:
    """A text is not headers: it was read as pairs of characters (a contained internal error,
    the block untraced); now the caller's mistake is a TypeError that names ``headers``."""
    with pytest.raises(TypeError, match="headers must be a mapping"):
        pipelens.continue_run(headers, "handle")  # type: ignore[arg-type]
