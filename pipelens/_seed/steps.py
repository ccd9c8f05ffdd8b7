"""The seed's ``@with_step``: each call of the function is a child step (``await st.step(name,
fn)`` is the core's ``run_child``: it is how any step runs a child).

It makes the new step the current step too, so ``@pipelens.step`` functions and
``pipelens.record`` called inside land on it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

import wrapt

from pipelens._core import containment
from pipelens._core.decorator import _async_wrapper, _Spec, _sync_wrapper
from pipelens._core.step import Step, await_in_step, call_in_step, check_name, open_step

F = TypeVar("F", bound=Callable[..., Any])


def _step_parameter(fn: Callable[..., Any], spec: _Spec) -> tuple[str | None, bool]:
    """The name of ``fn``'s last positional parameter when it takes the step (``st: Step``), and
    whether it is annotated ``Step``."""
    if not spec.names:
        return None, False
    last = spec.names[-1]
    try:
        annotation = inspect.signature(fn).parameters[last].annotation
    except (TypeError, ValueError, KeyError):
        return None, False
    if isinstance(annotation, str):  # ``from __future__ import annotations``
        named_step = "Step" in re.split(r"[^\w]+", annotation)
    else:
        named_step = annotation is Step
    return (last if named_step or last in ("st", "step") else None), named_step


def with_step(name: str) -> Callable[[F], F]:
    """The seed's decorator: each call of the function is a step named ``name``.

    Called with a :class:`Step` as its last positional argument (the seed's form), the new step
    is that step's child and takes its place in the call, so the function records on its own
    step. Called without one, the step nests under the current step, like ``@step(name)``; if the
    function declares a trailing step parameter (``st: Step``) that was left out, it receives the
    new step there. Sync functions stay sync (the seed made every one a coroutine function).
    """
    if callable(name) and not isinstance(name, str):
        raise TypeError("with_step needs a step name: write @with_step('name'), not @with_step")
    step_name = check_name(name, f"with_step({name!r})")

    def decorator(fn: F) -> F:
        target = getattr(fn, "__func__", fn)  # classmethod/staticmethod objects
        if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
            raise TypeError(
                f"with_step({name!r}) cannot decorate the generator function "
                f"{getattr(target, '__qualname__', target)!r}; use @pipelens.step"
            )
        spec = _Spec(target, step_name, True, True, "step")
        is_async = inspect.iscoroutinefunction(target)
        nested = _async_wrapper(spec) if is_async else _sync_wrapper(spec)
        step_param, annotated = _step_parameter(target, spec)

        def open_child(
            instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[Step | None, tuple[Any, ...], dict[str, Any]]:
            """The new step and the call's arguments with it in place; ``None``: a plain call."""
            keyword: str | None = None  # where the new step goes: last positional, or this keyword
            if args and isinstance(args[-1], Step):  # the seed's form
                parent: Step | None = args[-1]
                args = args[:-1]
            elif step_param is not None and isinstance(kwargs.get(step_param), Step):
                kwargs = dict(kwargs)
                parent, keyword = kwargs.pop(step_param), step_param
            elif (
                step_param is not None
                and step_param not in kwargs
                and len(args) == len(spec.names) - 1 + (spec.drop_first and instance is None)
            ):
                parent = None  # the step parameter was left out: pass the new step in
            elif annotated and len(args) == len(spec.names) + (
                spec.drop_first and instance is None
            ):
                # The parameter annotated ``Step`` got something else: the seed's TypeError,
                # before the function runs with it.
                raise TypeError(
                    f"with_step({name!r}): the last argument of "
                    f"{getattr(target, '__qualname__', target)!r} must be a `Step`, "
                    f"not {type(args[-1]).__name__}"
                )
            else:
                return None, args, kwargs
            try:
                child = open_step(step_name, spec.inputs(instance, args, kwargs), parent=parent)
            except Exception as exc:
                containment.internal_error("with_step open", exc)
                raise _OpenFailedError from None
            if keyword is None:
                return child, (*args, child), kwargs
            return child, args, {**kwargs, keyword: child}

        def wrapper(
            wrapped: Any, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            try:
                child, call_args, call_kwargs = open_child(instance, args, kwargs)
            except _OpenFailedError:
                return wrapped(*args, **kwargs)
            if child is None:
                return nested(wrapped, instance, args, kwargs)
            if is_async:
                return await_in_step(child, wrapped(*call_args, **call_kwargs))
            return call_in_step(child, wrapped, call_args, call_kwargs)

        decorated: F = wrapt.FunctionWrapper(fn, wrapper)  # type: ignore[assignment]
        return decorated

    return decorator


class _OpenFailedError(Exception):
    """The step could not be opened (an internal error, already logged): call the function."""
