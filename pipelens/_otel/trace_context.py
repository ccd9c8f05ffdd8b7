"""W3C trace context: our ids as OTel ids, and ``traceparent``/``tracestate`` made and read.

The mapping, one rule each way, shared by propagation, the OTLP export and (on the server) the
OTLP ingest:

* **trace id ↔ run id** — a run id that is a lower-case UUID (what PipeLens makes) *is* its trace
  id: the UUID's 32 hex digits, and a trace id read back is written as a UUID again. Any other
  run id (one a user chose) hashes to its trace id (BLAKE2b, 16 bytes), and the run id itself
  travels in ``tracestate`` (and in the export's ``pipelens.run_id`` attribute).
* **span id ↔ step id** — a step id is 16 hex digits already: it is the span id unchanged.

``traceparent`` is ``00-{trace id}-{step id}-01`` (sampled: PipeLens records every step).
``tracestate`` carries our entry ``pipelens={run id};{step key}``, both percent-encoded (the key
is left out when the entry would pass the 256 characters W3C allows); it says the parent is a
PipeLens step, whose run the receiver continues. A ``traceparent`` without our entry comes from
another OTel program; see :mod:`pipelens._otel.remote` for what the receiver makes of each.

Other vendors' ``tracestate`` entries are passed on unchanged: the ones a continued run received
go out again with every request it makes, after ours (W3C puts the entry a hop updated first),
and so do those already on an outgoing request. We add or update only our own entry, and keep
the list within W3C's limits (32 entries, 512 characters: entries over 128 characters are left
out first, then the right-most). Malformed entries are not passed on.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import quote, unquote

from pipelens._core.context import current_step_var
from pipelens._core.step import Step

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Our key among the ``tracestate`` entries.
VENDOR = "pipelens"
_MAX_VALUE = 256
#: W3C's limits on a ``tracestate`` list: entries, characters, and the entries over which a
#: list too long loses first.
MAX_ENTRIES = 32
MAX_LENGTH = 512
_LONG_ENTRY = 128
# W3C's key (``vendor`` or ``tenant@vendor``) and value grammar.
_MEMBER = re.compile(
    r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)

#: What ``quote(..., safe="")`` leaves as it is: its always-safe characters.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# version-traceid-parentid-flags; a later version may append fields after another "-".
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@functools.lru_cache(maxsize=1024)  # asked for by each step of a run that OTel code sees
def trace_id_of(run_id: str) -> str:
    """The 32 hex digits of the OTel trace id of run ``run_id``."""
    if len(run_id) == 36 and _UUID.fullmatch(run_id):
        return run_id.replace("-", "")
    return hashlib.blake2b(run_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def run_id_of(trace_id: str) -> str:
    """The run id a trace id stands for, when nothing else says: the trace id as a UUID."""
    t = trace_id.lower()
    return f"{t[:8]}-{t[8:12]}-{t[12:16]}-{t[16:20]}-{t[20:32]}"


class Parent(NamedTuple):
    """The parent that incoming headers name.

    Attributes:
        trace_id: 32 hex digits; span_id: the parent span's (for ours: step's) 16 hex digits.
        run_id: the PipeLens run to continue, ``None`` for a parent that is not a PipeLens step.
        key: the parent step's key, when it was carried.
        others: other vendors' ``tracestate`` entries, in order.
    """

    trace_id: str
    span_id: str
    run_id: str | None
    key: str | None
    #: Other vendors' ``tracestate`` entries (``key=value`` texts), to pass on unchanged.
    others: tuple[str, ...] = ()


def format_traceparent(trace_id: str, span_id: str) -> str:
    """``00-{trace_id}-{span_id}-01``."""
    return f"00-{trace_id}-{span_id}-01"


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """``(trace id, span id)`` of a valid ``traceparent``, else ``None`` (W3C's rules: version
    ``ff`` and all-zero ids are invalid; a version 00 header has exactly four fields)."""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id


def _our_entry(tracestate: str) -> tuple[str, str | None] | None:
    """``(run id, key or None)`` from our ``tracestate`` entry, if there is one."""
    for member in tracestate.split(","):
        name, sep, value = member.strip().partition("=")
        if sep and name == VENDOR:
            run_id, _, key = value.partition(";")
            run = unquote(run_id, errors="strict") if run_id else ""
            if not run:
                return None
            return run, (unquote(key, errors="strict") or None) if key else None
    return None


def parent_from(traceparent: str | None, tracestate: str | None) -> Parent | None:
    """The parent that a ``traceparent`` (and ``tracestate``) name, ``None`` when invalid."""
    if not traceparent:
        return None
    ids = parse_traceparent(traceparent)
    if ids is None:
        return None
    run_id = key = None
    others: tuple[str, ...] = ()
    if tracestate:
        try:
            ours = _our_entry(tracestate)
        except UnicodeDecodeError:  # not what we write: read it as a foreign parent
            ours = None
        if ours is not None:
            run_id, key = ours
        others = foreign_entries(tracestate)
    return Parent(ids[0], ids[1], run_id, key, others)


def foreign_entries(tracestate: str | None) -> tuple[str, ...]:
    """The well-formed entries of a ``tracestate`` list other than ours, in order (a key's
    first entry only, at most :data:`MAX_ENTRIES`)."""
    if not tracestate:
        return ()
    found: list[str] = []
    seen = {VENDOR}
    for member in tracestate.split(","):
        member = member.strip(" \t")
        if not _MEMBER.fullmatch(member):
            continue
        name = member.partition("=")[0]
        if name not in seen:
            seen.add(name)
            found.append(member)
            if len(found) == MAX_ENTRIES:
                break
    return tuple(found)


def merge_tracestate(ours: str | None, others: Iterable[str]) -> str:
    """A ``tracestate`` value: ``ours`` first, then ``others`` (well-formed entries of other
    vendors), within W3C's limits: past :data:`MAX_ENTRIES` the right-most go; past
    :data:`MAX_LENGTH` characters entries longer than 128 go first, then the right-most."""
    members = [ours] if ours else []
    members += others
    del members[MAX_ENTRIES:]
    length = sum(map(len, members)) + len(members) - 1
    if length > MAX_LENGTH:
        first = 1 if ours else 0  # ours is never the one to go
        for i in range(len(members) - 1, first - 1, -1):
            if length <= MAX_LENGTH:
                break
            if len(members[i]) > _LONG_ENTRY:
                length -= len(members.pop(i)) + 1
        while length > MAX_LENGTH and len(members) > first:
            length -= len(members.pop()) + 1
    return ",".join(members)


def header_values(headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]]) -> Parent | None:
    """The parent named by a mapping of headers (any case), or by ASGI's ``(name, value)`` byte
    pairs."""
    traceparent = tracestate = None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        lower = (name.decode("latin-1") if isinstance(name, bytes) else str(name)).lower()
        if lower in (TRACEPARENT, TRACESTATE):
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if lower == TRACEPARENT:
                traceparent = text
            else:  # several tracestate headers are one list
                tracestate = text if tracestate is None else f"{tracestate},{text}"
    return parent_from(traceparent, tracestate)


def propagation_headers() -> dict[str, str]:
    """The W3C ``traceparent`` and ``tracestate`` headers naming the current step.

    Send them with a request or a queued message; the receiver's ``pipelens.continue_run(headers)``
    (or our FastAPI/Litestar/ASGI integration) continues this run, nesting under this step.
    Outside any step the dict is empty.
    """
    step = current_step_var.get()
    if step is None:
        return {}
    return step_headers(step, None)


def step_headers(step: Step, tracestate: str | None) -> dict[str, str]:
    """The ``traceparent`` and ``tracestate`` naming ``step``: our entry, then the other
    vendors' entries of ``tracestate`` (a request's own) and of those the run received."""
    run = step.run
    headers = {TRACEPARENT: format_traceparent(trace_id_of(run.id), step.id)}
    name, value = tracestate_entry(run.id, step.key)
    others = foreign_entries(tracestate)
    if run.remote_tracestate:
        taken = {member.partition("=")[0] for member in others}
        others += tuple(m for m in run.remote_tracestate if m.partition("=")[0] not in taken)
    merged = merge_tracestate(f"{name}={value}" if value else None, others)
    if merged:
        headers[TRACESTATE] = merged
    return headers


def _quoted(text: str) -> str:
    """``quote(text, safe="")``, and at once for the text it leaves as it is (a UUID, most keys)."""
    return text if _UNQUOTED.fullmatch(text) else quote(text, safe="")


def tracestate_entry(run_id: str, key: str) -> tuple[str, str]:
    """Our ``tracestate`` entry as ``(name, value)``: the run id and step key, percent-encoded;
    the key left out when the value would pass W3C's limit, the value empty when even the run
    id alone does."""
    return VENDOR, tracestate_value(_quoted(run_id), key)


def tracestate_value(run_part: str, key: str) -> str:
    """The value of our entry from its run part, the run id as :func:`tracestate_entry` encodes
    it (which a caller naming many steps of one run encodes once)."""
    value = f"{run_part};{_quoted(key)}"
    if len(value) > _MAX_VALUE:
        value = run_part if len(run_part) <= _MAX_VALUE else ""
    return value


def quoted_run_id(run_id: str) -> str:
    """The run part of our ``tracestate`` value."""
    return _quoted(run_id)
