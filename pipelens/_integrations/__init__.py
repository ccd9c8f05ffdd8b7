"""The integrations room: the ASGI core behind ``pipelens.fastapi`` and ``pipelens.litestar``,
and the structlog processor. No framework is imported here. Only re-exports.
"""

from pipelens._integrations.asgi import PipelensMiddleware
from pipelens._integrations.structlog import StructlogProcessor, structlog_processor

__all__ = ["PipelensMiddleware", "StructlogProcessor", "structlog_processor"]
