"""The import page: seed exports and FileTransport files, one result per file, on a real
PostgreSQL."""

from __future__ import annotations

import hashlib
import html
import json
import time
from pathlib import Path
from typing import Any

from _dashboard_kit import form_token, recent_run, table_rows
from _pg_testkit import LOCAL, read_rows, run_events
from litestar import Litestar
from litestar.testing import TestClient

from pipelens._transports import FileFormat, FileTransport
from pipelens.events import Batch
from pipelens_server import Settings, create_app

Client = TestClient[Litestar]
#: An hour ago in epoch milliseconds: within every retention, so no result warns of a purge.
MS = time.time_ns() // 1_000_000 - 3_600_000
NS = 1_000_000
Upload = tuple[str, bytes, str]


def _step(key: str, start: int, end: int | None, **extra: Any) -> dict[str, Any]:
    time = {"startTs": start} if end is None else {"startTs": start, "endTs": end}
    return {"name": key.rsplit(".", 1)[-1], "key": key, "time": time, "records": {}, **extra}


def _seed_steps() -> list[dict[str, Any]]:
    return [
        _step("demo", MS, MS + 30, result="done"),
        _step("demo.child", MS + 5, MS + 20, records={"n": 2}),
    ]


def _pipeline_meta(run_id: str, **extra: Any) -> dict[str, Any]:
    steps = _seed_steps()
    return {**steps[0], "logVersion": 1, "runId": run_id, "steps": steps, **extra}


def _json_file(name: str, value: Any) -> Upload:
    return (name, json.dumps(value).encode(), "application/json")


def _upload(client: Client, *files: Upload, **form: str) -> list[list[str]]:
    """POST ``files`` to /import; the result table's rows: file, format, runs, steps, result."""
    data = {**form, "csrf_token": form_token(client, "/import")}
    response = client.post("/import", files=[("files", f) for f in files], data=data)
    assert response.status_code == 200, response.text
    return table_rows(response.text)


def _transport_file(tmp_path: Path, name: str, format: FileFormat, *batches: Batch) -> Upload:
    """A file written by the client's own FileTransport, one ``write`` per batch."""
    path = tmp_path / name
    transport = FileTransport(path, format=format)
    for batch in batches:
        transport.write(batch)
    transport.close()
    return (name, path.read_bytes(), "application/octet-stream")


def test_import_form_names_the_formats(client: Client) -> None:
    """The form accepts several files and says which formats it reads."""
    page = client.get("/import").text
    assert 'type="file" multiple' in page
    assert "logVersion: 1" in page
    assert "FileTransport" in page


def test_a_seed_pipeline_meta_file_is_stored_like_the_seed_ingest(
    client: Client, database_url: str
) -> None:
    """A PipelineMeta export becomes a finished run with its steps, times in nanoseconds."""
    rows = _upload(client, _json_file("run.json", _pipeline_meta("seed-1")))
    assert rows == [["run.json", "seed PipelineMeta", "1", "2", "imported: seed-1"]]
    stored = read_rows(database_url, "seed-1")
    run = stored["runs"][0]
    assert (run["pipeline"], run["status"], run["start_ns"], run["end_ns"]) == (
        "demo",
        "completed",
        MS * NS,
        (MS + 30) * NS,
    )
    assert [(s["key"], s["status"], s["parent_id"]) for s in stored["steps"]] == [
        ("demo", "completed", None),
        ("demo.child", "completed", "demo"),
    ]


def test_a_bare_step_array_takes_the_run_id_and_pipeline_from_the_form(
    client: Client, database_url: str
) -> None:
    """The form's run id and pipeline name the run of a bare StepMeta array."""
    rows = _upload(client, _json_file("steps.json", _seed_steps()), run_id="r-9", pipeline="etl")
    assert rows == [["steps.json", "seed step array", "1", "2", "imported: r-9"]]
    run = read_rows(database_url, "r-9")["runs"][0]
    assert (run["pipeline"], run["status"], run["step_count"]) == ("etl", "completed", 2)


def test_a_bare_step_array_without_form_fields_derives_its_run(
    client: Client, database_url: str
) -> None:
    """Without form fields the run id comes from the file's hash and the pipeline from the root
    step, so importing the same file twice updates one run."""
    upload = _json_file("steps.json", _seed_steps())
    _upload(client, upload)
    _upload(client, upload)
    run_id = f"import-{hashlib.sha256(upload[1]).hexdigest()[:16]}"
    stored = read_rows(database_url)
    assert [(r["run_id"], r["pipeline"]) for r in stored["runs"]] == [(run_id, "demo")]
    assert len(stored["steps"]) == 2


def test_file_transport_json_lines_and_msgpack_files_are_imported(
    client: Client, database_url: str, tmp_path: Path
) -> None:
    """Both FileTransport formats import, several files in one upload, each with its result."""
    jsonl = _transport_file(tmp_path, "a.jsonl", "jsonl", Batch(events=recent_run("j1")))
    events = recent_run("m1", fail=True)
    packed = _transport_file(
        tmp_path, "b.msgpack", "msgpack", Batch(events=events[:3]), Batch(events=events[3:])
    )
    rows = _upload(client, jsonl, packed)
    assert rows == [
        ["a.jsonl", "event batches (JSON lines)", "1", "3", "imported: j1"],
        ["b.msgpack", "event batches (msgpack)", "1", "3", "imported: m1"],
    ]
    stored = read_rows(database_url)
    assert [(r["run_id"], r["status"]) for r in stored["runs"]] == [
        ("j1", "completed"),
        ("m1", "failed"),
    ]


def test_a_file_of_many_runs_links_the_first_five(client: Client, tmp_path: Path) -> None:
    """The result links five runs of a file and counts the rest."""
    batches = [Batch(events=recent_run(f"r{i}")) for i in range(7)]
    rows = _upload(client, _transport_file(tmp_path, "many.jsonl", "jsonl", *batches))
    assert rows[0][2:] == ["7", "21", "imported: r0, r1, r2, r3, r4 and 2 more"]


def test_runs_older_than_the_retention_are_flagged(client: Client, tmp_path: Path) -> None:
    """A file of 2023 runs imports, and its result warns that the next purge deletes them."""
    old = [Batch(events=run_events("old-1")), Batch(events=run_events("old-2"))]
    rows = _upload(client, _transport_file(tmp_path, "old.jsonl", "jsonl", *old))
    assert rows[0][4] == (
        "imported: old-1, old-2 2 of them are older than the retention and will be deleted by "
        "the next purge (within 10 minutes): keep them longer in Settings."
    )


def test_a_bad_file_writes_nothing_and_names_itself_and_the_field(
    client: Client, database_url: str, tmp_path: Path
) -> None:
    """A file whose second line is bad stores none of its runs; the other files still import."""
    good = _json_file("good.json", _pipeline_meta("ok-1"))
    lines = [Batch(events=run_events("lost")), Batch(events=run_events("bad"))]
    text = _transport_file(tmp_path, "bad.jsonl", "jsonl", *lines)[1].decode().splitlines()
    broken = json.loads(text[1])
    broken["events"][0]["start_ns"] = "yesterday"
    bad = ("bad.jsonl", f"{text[0]}\n{json.dumps(broken)}\n".encode(), "application/json")
    rows = _upload(client, bad, good)
    assert rows[1] == ["good.json", "seed PipelineMeta", "1", "2", "imported: ok-1"]
    assert rows[0][:4] == ["bad.jsonl", "—", "0", "0"]
    assert rows[0][4].startswith("bad.jsonl: line 2: invalid batch:")
    assert "$.events[0].start_ns" in rows[0][4]
    assert [r["run_id"] for r in read_rows(database_url)["runs"]] == ["ok-1"]


def test_a_seed_file_with_another_log_version_is_refused_at_its_path(client: Client) -> None:
    """logVersion 2 is an error naming the file and ``$.logVersion``."""
    rows = _upload(client, _json_file("v2.json", _pipeline_meta("x", logVersion=2)))
    assert rows[0][4] == (
        "v2.json: unsupported logVersion 2: the seed's exports have logVersion 1 "
        "- at `$.logVersion`"
    )


def test_a_bad_step_in_an_array_is_named_by_its_index(client: Client, database_url: str) -> None:
    """A step without a key is refused at ``$[1].key`` and nothing of the file is written."""
    steps = [_step("demo", MS, MS + 1), {"name": "x", "time": {"startTs": MS}, "records": {}}]
    rows = _upload(client, _json_file("steps.json", steps), run_id="r")
    assert rows[0][4] == "steps.json: invalid body: a non-empty string is required - at `$[1].key`"
    assert read_rows(database_url)["runs"] == []


def test_a_truncated_msgpack_file_is_refused_at_its_byte(client: Client, tmp_path: Path) -> None:
    """A msgpack file cut short names the byte where its last frame starts."""
    name, data, kind = _transport_file(
        tmp_path, "cut.msgpack", "msgpack", Batch(events=run_events("a")), Batch(events=[])
    )
    first = 4 + int.from_bytes(data[:4], "big")
    rows = _upload(client, (name, data[: first + 3], kind))
    assert rows[0][4] == (
        f"cut.msgpack: byte {first}: truncated msgpack frame (expected 0 bytes): "
        "not a FileTransport file, or one cut short"
    )


def test_an_empty_or_broken_json_file_gets_a_clear_error(client: Client) -> None:
    """An empty file and a broken JSON object each say what is wrong with them."""
    rows = _upload(client, ("empty.json", b"  \n", "application/json"), ("x.json", b"{", "a/b"))
    assert rows[0][4] == "empty.json: the file is empty"
    assert rows[1][4].startswith("x.json: invalid JSON:")


def test_an_upload_without_files_asks_for_one(client: Client) -> None:
    """Submitting the form with no file says to choose one."""
    response = client.post(
        "/import", data={"run_id": "", "csrf_token": form_token(client, "/import")}
    )
    assert response.status_code == 200
    assert "Choose at least one file to import." in response.text


def test_an_upload_over_the_body_limit_is_refused_whole(database_url: str) -> None:
    """Files larger together than ``max_body_bytes`` get a 413 page and write nothing."""
    settings = Settings(database_url=database_url, max_body_bytes=2000)
    upload = _json_file("big.json", _pipeline_meta("big", result="x" * 3000))
    with TestClient(create_app(settings), base_url=LOCAL) as small:
        response = small.post("/import", files=[("files", upload)])
    assert response.status_code == 413
    assert "larger than the server's limit of 2000 bytes" in html.unescape(response.text)
    assert read_rows(database_url)["runs"] == []
