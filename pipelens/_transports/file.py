"""The file transport: batches appended to a JSON-lines or msgpack file, and read back.

JSON lines hold one :class:`~pipelens.events.Batch` per line; msgpack files hold frames of a
4-byte big-endian length followed by the batch. Every batch is one ``O_APPEND`` write, so the
processes of a program (forked workers included) can share one file without tearing batches.
:func:`read_event_file` is what the server's import uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

import msgspec

from pipelens._core.capture import scrub_event
from pipelens._core.errors import ConfigurationError, TransportError
from pipelens._transports.base import BatchingTransport, check_options
from pipelens.events import Batch, Event, decode_json, decode_msgpack, encode_json, encode_msgpack

FileFormat = Literal["jsonl", "msgpack"]
_FORMATS = ("jsonl", "msgpack")
_MSGPACK_SUFFIXES = (".msgpack", ".mpk")


class FileTransport(BatchingTransport):
    """Appends batches to a file: JSON lines (one :class:`~pipelens.events.Batch` per line) or
    msgpack frames (each a 4-byte big-endian length, then the batch). The format follows the
    suffix (``.msgpack``/``.mpk``: msgpack, anything else: JSON lines) unless ``format`` is given.
    Read it back with :func:`read_event_file`; the server's import takes the same files.

    Raises:
        ConfigurationError: an option is invalid (the message names it).
        TransportError: the file cannot be created or written (the message names the path).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: FileFormat | None = None,
        max_queue: int = 100_000,
        max_batch: int = 1000,
        interval: float = 0.5,
    ) -> None:
        check_options("FileTransport", max_queue, max_batch, interval)
        if format is not None and format not in _FORMATS:
            raise ConfigurationError(
                f"FileTransport(format={format!r}): expected 'jsonl' or 'msgpack'"
            )
        try:
            self.path = Path(path)
        except TypeError:
            raise ConfigurationError(
                f"FileTransport(path={path!r}): expected a file path (str or os.PathLike)"
            ) from None
        if format is None:
            format = "msgpack" if self.path.suffix.lower() in _MSGPACK_SUFFIXES else "jsonl"
        self.format: FileFormat = format
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(self._open())
        except OSError as exc:
            raise TransportError(
                f"FileTransport: cannot write to {str(self.path)!r}: {exc.strerror or exc}"
            ) from None
        super().__init__(max_queue=max_queue, max_batch=max_batch, interval=interval)

    def __repr__(self) -> str:
        return f"<FileTransport {str(self.path)!r} {self.format}>"

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, batch: Batch) -> None:
        if self.format == "jsonl":
            data = encode_json(batch) + b"\n"
        else:
            body = encode_msgpack(batch)
            data = len(body).to_bytes(4, "big") + body
        # Opened per batch so that a file moved or deleted (log rotation) is recreated, and
        # written with one O_APPEND write so that processes sharing the file keep batches whole.
        fd = self._open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def write_now(self, event: Event) -> bool:
        """Append one event straight to the file, on the caller's thread: an ``O_APPEND`` write
        of its own, so it cannot tear the batch thread's (the order of events may differ;
        readers and the server's merge do not depend on it)."""
        self.write(Batch(events=[scrub_event(event)]))
        with self._lock:
            self.sent += 1
        return True


def read_event_file(
    path: str | os.PathLike[str], *, format: FileFormat | None = None
) -> Iterator[Batch]:
    """The batches of a :class:`FileTransport` file, in order (the format is sniffed if not given).

    Raises:
        OSError: the file cannot be opened (raised by this call, not by the first ``next()``).
        msgspec.ValidationError / msgspec.DecodeError: a batch is malformed; the message names
            the file, the line or byte offset and the field's path. Earlier batches were yielded.
    """
    if format is not None and format not in _FORMATS:
        raise ConfigurationError(
            f"read_event_file(format={format!r}): expected 'jsonl' or 'msgpack'"
        )
    file = Path(path).open("rb")  # noqa: SIM115 - the generator below closes it
    if format is None:
        head = file.peek(1)[:1]
        format = "jsonl" if head in (b"", b"{") or head.isspace() else "msgpack"
    return _read_jsonl(file, str(path)) if format == "jsonl" else _read_msgpack(file, str(path))


def _read_jsonl(file: IO[bytes], name: str) -> Iterator[Batch]:
    with file:
        for number, line in enumerate(file, 1):
            if line.strip():
                try:
                    yield decode_json(line)
                except msgspec.DecodeError as exc:
                    raise type(exc)(f"{name}, line {number}: {exc}") from None


def _read_msgpack(file: IO[bytes], name: str) -> Iterator[Batch]:
    with file:
        offset = 0
        while header := file.read(4):
            size = int.from_bytes(header, "big")
            frame = file.read(size)
            if len(header) != 4 or len(frame) != size:
                raise msgspec.DecodeError(f"{name}, byte {offset}: truncated msgpack frame")
            try:
                yield decode_msgpack(frame)
            except msgspec.DecodeError as exc:
                raise type(exc)(f"{name}, byte {offset}: {exc}") from None
            offset += 4 + size
