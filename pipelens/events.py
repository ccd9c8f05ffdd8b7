"""The wire contract: versioned events a client sends and the server decodes.

A batch is ``Batch(v=1, events=[...])`` encoded as msgpack (``application/msgpack``) or JSON.
Each event is tagged by its ``type`` field. Times are integers in nanoseconds since the Unix epoch
and durations are nanoseconds. Captured values (``inputs``, ``result``, ``records``) travel as JSON
*text* so that the server can store them in ``jsonb`` without decoding them.

Convergence rules the server follows (so that events may arrive in any order, or twice):

* a step is identified by ``(run_id, key)``; ``step_id`` is unique too;
* ``StepFinished`` carries everything ``StepStarted`` does except ``inputs``: a lost or late start
  never reopens a finished step, and a finish alone is a complete row;
* ``RunFinished`` likewise carries the run's ``pipeline`` and ``start_ns``;
* a run the server hears nothing of (no event, no heartbeat) for its ``--abandon-after`` timeout
  turns ``abandoned``: that status ranks above ``running`` and below the final ones, so a late
  finish still wins and a late start never reopens the run.

Liveness: a client sends ``Batch(events=[], heartbeats=[RunHeartbeat(...), ...])`` for its open
runs every few seconds. ``heartbeats`` is an optional field (left out of the encoding when
unset), added within version 1: servers older than it ignore it as an unknown field, and clients
older than it never send it (their runs are kept alive by their events alone).

Scores: ``ScoreAdded`` (``pipelens.score``), an event type added within version 1. A server older
than it refuses a batch holding one (an unknown ``type``), so ``HttpTransport`` sends scores in
requests of their own: such a server loses the scores, never the steps beside them. A score is
identified by ``(run_id, score_id)``: a resent one changes nothing, and it may arrive before its
run.

Decoding ignores unknown fields, so adding an optional field is backwards compatible; a new
event type is sent apart (as scores are); anything else bumps :data:`VERSION`. Times,
durations and counts must be ``>= 0``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal, TypeAlias

import msgspec

#: The version of the batch format this module describes.
VERSION = 1

Status: TypeAlias = Literal["running", "completed", "failed", "cancelled"]
FinalStatus: TypeAlias = Literal["completed", "failed", "cancelled"]
#: Times, durations and counts: a negative one is a bug on the sending side, refused at decode.
NonNegative: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]

#: The longest texts the server stores, in UTF-8 bytes: PostgreSQL's btree index entries are
#: limited in bytes (~2.7 KB), and the widest index holds a pipeline, a key and a run id together.
#: The client cuts longer ones with :data:`TRUNCATED_MARK` before sending; the server refuses them
#: (400 naming the field).
MAX_RUN_ID_BYTES = 512
MAX_PIPELINE_BYTES = 512
#: The longest step key (the dotted path).
MAX_KEY_BYTES = 1536
#: The longest step id, parent id, step name and kind.
MAX_NAME_BYTES = 1024
#: Who and why of a run (``pipelens.tag``/``pipelens.set_run``): at most this many tags and
#: metadata entries, each tag and metadata key this long; a user or session id is as long as a
#: run id, a metadata value as a step name.
MAX_TAGS = 64
MAX_TAG_BYTES = 256
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
#: Scores (``pipelens.score``): a name and a categorical value as long as a tag, a comment as
#: long as four metadata values (not indexed); the score id (the giver's) as long as a step id.
MAX_SCORE_NAME_BYTES = 256
MAX_SCORE_VALUE_BYTES = 256
#: The largest magnitude of a numeric score (sums and means of many stay far inside a float).
MAX_SCORE_NUMBER = 1e15
MAX_COMMENT_BYTES = 4096
MAX_SCORE_ID_BYTES = 1024
#: What ends a string the client cut to a limit (keys also get a digest, to stay unique).
TRUNCATED_MARK = "…[truncated]"


def cut(text: str, limit: int, *, unique: bool = False) -> str:
    """``text`` (free of lone surrogates) cut to ``limit`` UTF-8 bytes, ending in
    :data:`TRUNCATED_MARK`; with ``unique`` the first 6 bytes of the SHA-256 of the whole text go
    before the mark (hex, after a ``~``), so two long keys stay apart.

    The server caps the name paths it makes (migration 0016) by this rule too, in Python and in
    SQL alike: SHA-256 because PostgreSQL has it built in.
    """
    data = text.encode()
    if len(data) <= limit:
        return text
    tail = TRUNCATED_MARK
    if unique:
        tail = f"~{hashlib.sha256(data).hexdigest()[:12]}{tail}"
    # A character cut in the middle is left out whole.
    return data[: limit - len(tail.encode())].decode(errors="ignore") + tail


class ErrorInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What went wrong in a step: the exception's type and message, and its traceback."""

    type: str
    message: str
    traceback: str | None = None


class _Event(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, tag_field="type"):
    run_id: str


class _Who(_Event, kw_only=True, frozen=True):
    """Who and why (optional, added within version 1): ``attributes`` is the run's metadata.

    ``RunStarted`` carries what was known when the run began and ``RunFinished`` all of it (set
    mid-run too); the server merges them (tags and attributes united, an id kept once given).
    """

    attributes: dict[str, str] = {}
    tags: list[str] = []
    user_id: str | None = None
    session_id: str | None = None


class RunStarted(_Who, kw_only=True, frozen=True, tag="run.started"):
    """A run began: its pipeline name and wall-clock start."""

    pipeline: str
    start_ns: NonNegative


class RunFinished(_Who, kw_only=True, frozen=True, tag="run.finished"):
    """A run ended (its root step ended). ``dropped_events`` counts events lost on the way."""

    pipeline: str
    start_ns: NonNegative
    end_ns: NonNegative
    duration_ns: NonNegative
    status: FinalStatus
    error: ErrorInfo | None = None
    step_count: NonNegative = 0
    dropped_events: NonNegative = 0
    #: JSON text: LLM usage of the whole run by model, ``{model: {calls, calls_without_usage,
    #: input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
    #: cost_usd}}``; tokens and cost ``null`` (unknown) when no call of the model reported usage.
    llm_usage: str | None = None


class StepStarted(_Event, kw_only=True, frozen=True, tag="step.started"):
    """A step began. ``inputs`` is JSON text of its bound arguments, when captured."""

    step_id: str
    parent_id: str | None = None
    key: str
    name: str
    kind: str = "step"
    start_ns: NonNegative
    inputs: str | None = None


class StepFinished(_Event, kw_only=True, frozen=True, tag="step.finished"):
    """A step ended: status, timing, result, records (a JSON object text) and error."""

    step_id: str
    parent_id: str | None = None
    key: str
    name: str
    kind: str = "step"
    start_ns: NonNegative
    end_ns: NonNegative
    duration_ns: NonNegative
    status: FinalStatus
    error: ErrorInfo | None = None
    result: str | None = None
    records: str | None = None
    inputs: str | None = None
    #: JSON text of the LLM call a ``kind="llm"`` step made (see ``pipelens.llm_call``):
    #: provider, operation, model, request parameters, messages, output, usage, latency, ...
    llm: str | None = None


#: A score's value: a number, a boolean (pass/fail, thumbs up/down) or a category (a ``str``).
ScoreValue: TypeAlias = bool | float | str
#: Where a score came from: the program (``pipelens.score``), the API, the run page's form.
ScoreSource: TypeAlias = Literal["code", "api", "ui"]


class ScoreAdded(_Event, kw_only=True, frozen=True, tag="score.added"):
    """A score (or a person's feedback) given to a run, or to one of its steps (``step_key``).

    ``score_id`` is the giver's: the same id twice is one score. A float must be finite.
    """

    score_id: str
    name: str
    value: ScoreValue
    comment: str | None = None
    step_key: str | None = None
    source: ScoreSource = "code"
    at_ns: NonNegative


Event: TypeAlias = RunStarted | RunFinished | StepStarted | StepFinished | ScoreAdded


class RunHeartbeat(msgspec.Struct, kw_only=True, frozen=True):
    """The run ``run_id`` is still open in a live client (``at_ns``: when the client said so)."""

    run_id: str
    at_ns: NonNegative


class Batch(msgspec.Struct, kw_only=True, frozen=True):
    """What one request (or one line of a file transport) carries.

    ``heartbeats`` stays unset (and out of the encoding) in a batch of events; the server reads
    a missing one as none.
    """

    v: int = VERSION
    events: list[Event]
    heartbeats: list[RunHeartbeat] | msgspec.UnsetType = msgspec.UNSET


def encode_msgpack(batch: Batch) -> bytes:
    """The msgpack body of ``batch``."""
    return _msgpack_encoder.encode(batch)


def encode_json(batch: Batch) -> bytes:
    """The JSON body of ``batch``."""
    return _json_encoder.encode(batch)


def decode_msgpack(data: bytes) -> Batch:
    """Decode and validate a msgpack batch; errors name the path (``$.events[3].start_ns``)."""
    return _msgpack_decoder.decode(data)


def decode_json(data: bytes | str) -> Batch:
    """Decode and validate a JSON batch; errors name the path (``$.events[3].start_ns``)."""
    return _json_decoder.decode(data)


_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder(Batch)
_json_decoder = msgspec.json.Decoder(Batch)
