"""Who and why of a run: ``pipelens.tag``, ``pipelens.set_run`` and the ``Pipeline`` arguments."""

from __future__ import annotations

import logging

import pytest

import pipelens
import pipelens.events
from pipelens._core import containment
from pipelens.events import MAX_TAG_BYTES, MAX_TAGS, TRUNCATED_MARK
from pipelens.testing import CapturedEvents


@pipelens.step
def answer() -> None:
    pipelens.tag("nightly", "v2")
    pipelens.set_run(user_id="u-1", session_id="s-1", metadata={"plan": "pro", "n": 3})
    pipelens.tag("v2", "late")


def test_set_mid_run_arrives_with_the_run_finish(events: CapturedEvents) -> None:
    """Tags, user, session and metadata set inside the run are on its ``RunFinished``."""
    answer()
    (finished,) = events.runs()
    assert finished.tags == ["nightly", "v2", "late"]
    assert (finished.user_id, finished.session_id) == ("u-1", "s-1")
    assert finished.attributes == {"plan": "pro", "n": "3"}


def test_pipeline_arguments_are_sent_with_the_run_start(events: CapturedEvents) -> None:
    """``Pipeline(...)`` and ``Pipeline.run(...)`` arguments merge, and the start carries them."""
    pipeline = pipelens.Pipeline("p", tags=["a"], user_id="u-1", metadata={"env": "prod"})
    with pipeline.run(tags=["b"], session_id="s-9", metadata={"env": "dev", "k": "v"}):
        pipelens.tag("c")
    (started,) = events.runs_started()
    assert (started.tags, started.user_id, started.session_id) == (["a", "b"], "u-1", "s-9")
    assert started.attributes == {"env": "dev", "k": "v"}
    assert events.runs()[0].tags == ["a", "b", "c"]


def test_a_run_without_who_sends_the_old_events(events: CapturedEvents) -> None:
    """Nothing set: the run events encode without the new fields (older servers see no change)."""

    @pipelens.step
    def plain() -> None:
        pass

    plain()
    encoded = pipelens.events.encode_json(pipelens.events.Batch(events=[events.runs()[0]]))
    assert b"tags" not in encoded
    assert b"user_id" not in encoded


def test_secret_metadata_is_redacted(events: CapturedEvents) -> None:
    """A secret-looking metadata key hides its value, like a record's."""

    @pipelens.step
    def secretive() -> None:
        pipelens.set_run(metadata={"api_key": "hunter2", "plan": "pro"})

    secretive()
    assert events.runs()[0].attributes == {"api_key": "[REDACTED]", "plan": "pro"}


def test_long_and_many_tags_are_capped(
    events: CapturedEvents, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long tag is cut with the mark; tags past the limit are left out with one warning."""
    monkeypatch.setattr(containment, "_once", containment.WarnOnce())

    @pipelens.step
    def many() -> None:
        pipelens.tag("x" * 10_000)
        pipelens.tag(*(f"t{i}" for i in range(MAX_TAGS + 5)))

    with caplog.at_level(logging.WARNING, logger="pipelens"):
        many()
    tags = events.runs()[0].tags
    assert len(tags) == MAX_TAGS
    assert tags[0].endswith(TRUNCATED_MARK)
    assert len(tags[0].encode()) <= MAX_TAG_BYTES
    assert any("at most" in r.getMessage() for r in caplog.records)


def test_outside_a_run_warns_once_and_does_nothing(
    events: CapturedEvents, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like ``pipelens.record``: outside a run the call is ignored, with one warning."""
    monkeypatch.setattr(containment, "_once", containment.WarnOnce())
    with caplog.at_level(logging.WARNING, logger="pipelens"):
        pipelens.tag("a")
        pipelens.tag("b")
        pipelens.set_run(user_id="u")
    messages = [r.getMessage() for r in caplog.records if r.name == "pipelens"]
    assert len(messages) == 2
    assert "pipelens.tag(...) was called outside any run" in messages[0]
    assert events.events == []


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: pipelens.tag(3), "tags"),  # type: ignore[arg-type]
        (lambda: pipelens.tag(""), "tags"),
        (lambda: pipelens.set_run(user_id=5), "user_id"),  # type: ignore[arg-type]
        (lambda: pipelens.set_run(session_id=""), "session_id"),
        (lambda: pipelens.set_run(metadata=["a"]), "metadata"),  # type: ignore[arg-type]
        (lambda: pipelens.set_run(metadata={1: "a"}), "metadata"),  # type: ignore[dict-item]
        (lambda: pipelens.Pipeline("p", tags="nightly"), "tags"),
        (lambda: pipelens.Pipeline("p").run(user_id=1), "user_id"),  # type: ignore[arg-type]
    ],
)
def test_wrong_types_raise_naming_the_argument(call: object, named: str) -> None:
    """A wrong argument is the caller's bug: ``TypeError`` naming it, even outside a run."""
    with pytest.raises(TypeError, match=named):
        call()  # type: ignore[operator]
