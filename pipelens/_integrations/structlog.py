"""A structlog processor: log lines emitted inside a step carry its run and step ids.

::

    import pipelens, structlog

    structlog.configure(processors=[
        pipelens.structlog_processor,            # before the renderer
        structlog.processors.JSONRenderer(),
    ])

Inside a step every event gains ``run_id``, ``step_id`` and ``step_key``; outside any step it is
left as it is. ``pipelens.StructlogProcessor(keep_as_records=True)`` also keeps each line (its
level and fields) in the step's ``logs`` record, up to ``max_records`` lines per step.

structlog calls processors with ``(logger, method_name, event_dict)``; nothing here imports it.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from pipelens._core import containment
from pipelens._core.context import current_step_var
from pipelens._core.errors import ConfigurationError
from pipelens._core.step import Step

__all__ = ["StructlogProcessor", "structlog_processor"]

_IDS = ("run_id", "step_id", "step_key")


class StructlogProcessor:
    """Adds ``run_id``, ``step_id`` and ``step_key`` to events logged inside a step.

    Ids the event already has (bound by the caller) are left alone.

    Args:
        keep_as_records: also keep each line logged inside a step in that step's records.
        max_records: the most lines kept per step; later ones are counted in ``logs_dropped``.
        record_key: the record holding the kept lines (a list of dicts).
    """

    __slots__ = ("keep_as_records", "max_records", "record_key")

    def __init__(
        self, *, keep_as_records: bool = False, max_records: int = 100, record_key: str = "logs"
    ) -> None:
        if not isinstance(max_records, int) or isinstance(max_records, bool) or max_records < 1:
            raise ConfigurationError(
                f"max_records must be a positive int (lines kept per step), got {max_records!r}"
            )
        if not isinstance(record_key, str) or not record_key:
            raise ConfigurationError(f"record_key must be a non-empty string, got {record_key!r}")
        self.keep_as_records = keep_as_records
        self.max_records = max_records
        self.record_key = record_key

    def __repr__(self) -> str:
        return (
            f"StructlogProcessor(keep_as_records={self.keep_as_records!r}, "
            f"max_records={self.max_records!r}, record_key={self.record_key!r})"
        )

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        step = current_step_var.get()
        if step is None:
            return event_dict
        try:
            if self.keep_as_records:
                # Kept before the ids are added: the step holds them already.
                self._keep(step, method_name, event_dict)
            event_dict.setdefault("run_id", step.run.id)
            event_dict.setdefault("step_id", step.id)
            event_dict.setdefault("step_key", step.key)
        except Exception as exc:
            containment.internal_error("structlog_processor", exc)
        return event_dict

    def _keep(self, step: Step, method_name: str, event_dict: MutableMapping[str, Any]) -> None:
        records = step.records
        lines = records.get(self.record_key)
        if not isinstance(lines, list):
            lines = []
        if len(lines) >= self.max_records:
            dropped_key = f"{self.record_key}_dropped"
            step.record(dropped_key, int(records.get(dropped_key, 0)) + 1)
            return
        line = {"level": method_name}
        line.update((k, v) for k, v in event_dict.items() if k not in _IDS)
        lines.append(line)
        # Recorded again each time: a record's JSON is taken when it is recorded.
        step.record(self.record_key, lines)


#: The processor with its defaults: ids only, no records.
structlog_processor = StructlogProcessor()
