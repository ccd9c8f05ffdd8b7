"""Scores and feedback: ``pipelens.score`` on the current run, another run or a step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _ingest_server import IngestServer

import pipelens
from pipelens.events import (
    MAX_COMMENT_BYTES,
    TRUNCATED_MARK,
    Batch,
    ScoreAdded,
    StepFinished,
    decode_json,
    encode_json,
)
from pipelens.testing import CapturedEvents


@pipelens.step
def answer() -> str:
    pipelens.score("relevance", 0.9)
    pipelens.score("passed", True, comment="all checks green")
    pipelens.score("tone", "friendly", step_key="answer")
    return pipelens.score("n", 3, score_id="mine")


def test_scores_of_the_current_run_carry_each_kind_of_value(events: CapturedEvents) -> None:
    """Numbers (as floats), booleans and categories are sent with the current run's id."""
    given_id = answer()
    (run,) = events.runs()
    scores = events.scores(run.run_id)
    assert [(s.name, s.value, s.comment, s.step_key) for s in scores] == [
        ("relevance", 0.9, None, None),
        ("passed", True, "all checks green", None),
        ("tone", "friendly", None, "answer"),
        ("n", 3.0, None, None),
    ]
    assert given_id == "mine" == scores[-1].score_id
    assert len({s.score_id for s in scores}) == 4
    assert {s.source for s in scores} == {"code"}


def test_outside_a_run_without_run_id_is_a_clear_error() -> None:
    """No run to score: the error says to call it inside a step or pass run_id."""
    with pytest.raises(pipelens.PipelensError, match=r"outside any run.*run_id="):
        pipelens.score("relevance", 1)


def test_outside_a_run_a_run_id_scores_that_run(events: CapturedEvents) -> None:
    """Feedback given later, by run id, goes through the configured transport."""
    pipelens.score("thumbs", False, comment="wrong answer", run_id="run-7")
    (score,) = events.scores()
    assert (score.run_id, score.name, score.value) == ("run-7", "thumbs", False)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, TypeError),
        ("", TypeError),
        ([1], TypeError),
        (float("nan"), ValueError),
        (1e200, ValueError),  # the server refuses past ±1e15: its batch would be refused
        pytest.param(10**5000, ValueError, id="an int past a float's range"),
    ],
)
def test_a_bad_value_is_refused_naming_it(value: object, error: type[Exception]) -> None:
    """Only finite numbers within the wire's ±1e15, booleans and non-empty strings are scores."""
    with pytest.raises(error, match="value must be"):
        pipelens.score("x", value, run_id="r")  # type: ignore[arg-type]


def test_a_bad_name_is_refused_naming_it() -> None:
    """The name must be a non-empty string."""
    with pytest.raises(TypeError, match="name must be"):
        pipelens.score("", 1.0, run_id="r")


def test_comments_are_capped_and_redacted(events: CapturedEvents) -> None:
    """A long comment is cut with the mark; a secret in it or in a category is redacted."""

    @pipelens.step
    def scored() -> None:
        pipelens.score("c", 1, comment="x" * 10 * MAX_COMMENT_BYTES)
        pipelens.score(
            "leak",
            "sk-abcdefghijklmnopqrstuvwxyz0123456789",
            comment="key sk-abcdefghijklmnopqrstuvwxyz0123456789",
        )

    scored()
    long, leak = events.scores()
    assert long.comment is not None
    assert long.comment.endswith(TRUNCATED_MARK)
    assert len(long.comment.encode()) <= MAX_COMMENT_BYTES
    assert leak.value == "[REDACTED]"
    assert leak.comment == "key [REDACTED]"


def test_a_score_round_trips_the_wire() -> None:
    """``ScoreAdded`` encodes and decodes with its value's type kept."""
    for value in (True, 0.25, "good"):
        event = ScoreAdded(run_id="r", score_id="s", name="n", value=value, at_ns=1)
        (back,) = decode_json(encode_json(Batch(events=[event]))).events
        assert back == event
        assert type(back.value) is type(value)  # type: ignore[union-attr]


@pytest.fixture
def server() -> Iterator[IngestServer]:
    with IngestServer() as running:
        yield running


def test_http_transport_sends_scores_in_requests_of_their_own(
    server: IngestServer, tmp_path: Path
) -> None:
    """A server older than scores refuses a batch holding one: steps never share it."""
    pipelens.configure(transport=pipelens.HttpTransport(server.url, spool_dir=tmp_path))

    @pipelens.step
    def scored() -> None:
        pipelens.score("relevance", 0.5)

    scored()
    assert pipelens.flush(10)
    kinds = [{type(e) for e in batch.events} for batch in server.batches]
    assert {ScoreAdded} in kinds
    assert all(ScoreAdded not in k or k == {ScoreAdded} for k in kinds)
    assert any(StepFinished in k for k in kinds)
