"""``@step`` and ``span()``: turn calls and blocks into steps of the current run.

One :mod:`wrapt` wrapper serves methods, classmethods, staticmethods and generators (sync
functions and coroutine functions outside a class body get a closure with the same metadata, the
hot path: see ``_plain_function`` and ``_plain_coroutine_function``); the kind of callable (sync,
coroutine, generator, async generator) is decided once, at decoration.
Generators are resumed with their step made current around every resume, and the context
variable is set and reset within one resume, so no token ever crosses a ``yield`` (that is what
raises ``ValueError: ... was created in a different Context`` in other tools).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any, TypeVar, overload

import msgspec
import wrapt

from pipelens._core import clock, containment
from pipelens._core.capture import capture, encode
from pipelens._core.context import current_step_var
from pipelens._core.errors import check_strings
from pipelens._core.settings import settings
from pipelens._core.step import (
    Step,
    StepScope,
    await_in_step,
    make_step,
    new_child,
    open_step,
    sanitize_name,
)

F = TypeVar("F", bound=Callable[..., Any])

_perf_ns = clock.perf_ns
_WALL_OFFSET_NS = clock.WALL_OFFSET_NS

_SELF_NAMES = frozenset({"self", "cls", "mcs", "metacls"})


class _Spec:
    """What a decorated function needs at call time, computed once at decoration."""

    __slots__ = (
        "bound_names",
        "bound_struct",
        "capture_args",
        "capture_result",
        "drop_first",
        "kind",
        "name",
        "names",
        "struct",
        "varargs",
    )

    def __init__(
        self, fn: Callable[..., Any], name: str, capture_args: bool, capture_result: bool, kind: str
    ) -> None:
        self.name = sanitize_name(name)
        self.capture_args = capture_args
        self.capture_result = capture_result
        self.kind = kind
        names: list[str] = []
        self.varargs = "args"
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        for p in params:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.append(p.name)
            elif p.kind is p.VAR_POSITIONAL:
                self.varargs = p.name
        # A function defined in a class body sees ``self``/``cls`` as its first parameter, but
        # wrapt passes that object as ``instance`` and leaves it out of ``args``.
        self.drop_first = bool(names) and names[0] in _SELF_NAMES
        if self.drop_first:
            names = names[1:]
        self.names = tuple(names)
        keyword_names = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        self.struct = _inputs_struct(self.names, keyword_names)
        # Called bound (``instance`` set), the first parameter took the instance whatever its
        # name (``def method(this, x)``); staticmethods are never called bound.
        self.bound_names, self.bound_struct = self.names, self.struct
        if names and not self.drop_first:
            self.bound_names = self.names[1:]
            self.bound_struct = _inputs_struct(self.bound_names, keyword_names)

    def inputs(self, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """JSON text of the bound arguments, or ``None`` when arguments are not captured."""
        if not settings.capture_args:
            return None
        if instance is None:
            if self.drop_first and args:
                args = args[1:]  # called as a plain function with the object first
            struct, names = self.struct, self.names
        else:
            struct, names = self.bound_struct, self.bound_names
        if struct is not None:
            try:
                value = struct(*args, **kwargs) if kwargs else struct(*args)
            except TypeError:
                pass  # extra positionals or **kwargs: bind by hand below
            else:
                try:  # capture(value)'s common case inlined: a call less on every step
                    data = encode(value)
                except Exception:
                    data = None
                if data is None or len(data) > settings.max_value_bytes:
                    return capture(value)
                return data.decode()
        by_name: dict[str, Any] = dict(zip(names, args, strict=False))
        if len(args) > len(names):
            by_name[self.varargs] = args[len(names) :]
        if kwargs:
            by_name.update(kwargs)
        return capture(by_name)


def _inputs_struct(
    names: Sequence[str], keyword_names: Sequence[str]
) -> type[msgspec.Struct] | None:
    """A Struct binding these parameters, or ``None`` when msgspec cannot take their names.

    Binding arguments through a msgspec Struct happens in C and encodes fast; fields left UNSET
    (defaults not passed) are omitted, as inspect's bind() would. Secret-looking parameter names
    are redacted on the way out (scrub_event), with the settings of then.
    """
    try:
        return msgspec.defstruct(
            "inputs",
            [(n, Any, msgspec.UNSET) for n in (*names, *keyword_names)],
            omit_defaults=True,
        )
    except Exception:  # a parameter name msgspec cannot take: use the dict path
        return None


def _sync_wrapper(spec: _Spec) -> Callable[..., Any]:
    """The wrapt wrapper of a sync callable in a class body (plain functions get the inlined
    closure of :func:`_plain_function`)."""
    capture_result = spec.capture_result
    set_, reset = current_step_var.set, current_step_var.reset

    def wrapper(wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any) -> Any:
        if not settings.enabled:
            return wrapped(*args, **kwargs)
        step = _open(spec, instance, args, kwargs)
        if step is None:
            return wrapped(*args, **kwargs)
        token = set_(step)
        try:
            result = wrapped(*args, **kwargs) if kwargs else wrapped(*args)
        except BaseException as exc:
            reset(token)
            step._fail(exc)
            raise
        reset(token)
        if result.__class__ is _Coroutine:
            # A coroutine behind a sync callable (``async def __call__``, a sync decorator
            # around a coroutine function): the step ends when it is awaited, not now.
            return await_in_step(step, result, capture_result)
        if step.run._quiet:  # Step._succeed's common case inlined, as in _plain_function
            step.result = result
            if capture_result and settings.capture_result:
                try:
                    data = encode(result)
                except Exception:
                    data = None
                if data is None or len(data) > settings.max_value_bytes:
                    step.result_json = capture(result)
                else:
                    step.result_json = data.decode()
            duration = _perf_ns() - step._t0
            step.duration_ns = duration
            step.end_ns = step.start_ns + duration
            step.status = "completed"
        else:
            step._succeed(result, capture_result)
        return result

    return wrapper


#: A result that is work still to do (one identity test: this is the hot path); futures and
#: tasks already run on their own and are returned as values.
_Coroutine = types.CoroutineType


def _open(
    spec: _Spec, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Step | None:
    """The step of a call (a run's root when none is current), or ``None`` after an internal
    error (contained: the call then runs without a step). ``_Spec.inputs`` and ``new_child``'s
    common cases are inlined, as in :func:`_plain_function`: two Python calls less."""
    try:
        inputs = None
        if spec.capture_args and settings.capture_args:
            struct = spec.struct
            if struct is not None and instance is None and not spec.drop_first:
                try:  # no empty keywords dict built for a call without keywords
                    bound = struct(*args, **kwargs) if kwargs else struct(*args)
                except TypeError:
                    inputs = spec.inputs(instance, args, kwargs)
                else:
                    try:  # capture(bound)'s common case inlined
                        data = encode(bound)
                    except Exception:
                        data = None
                    if data is None or len(data) > settings.max_value_bytes:
                        inputs = capture(bound)
                    else:
                        inputs = data.decode()
            else:
                inputs = spec.inputs(instance, args, kwargs)
        parent = current_step_var.get()
        if parent is None:
            return open_step(spec.name, inputs, kind=spec.kind)
        name = spec.name
        counters = parent._counters
        counter = None if counters is None else counters.get(name)
        siblings = parent._children
        if counter is None or siblings is None or parent._keys is not None:
            step = new_child(parent, name, inputs, spec.kind)
        else:  # new_child's common case: a name seen before under this parent
            run = parent.run
            t0 = _perf_ns()
            step = make_step(
                Step,
                name,
                None,
                parent,
                run,
                inputs,
                spec.kind,
                next(clock.step_ids),
                t0,
                t0 + _WALL_OFFSET_NS,
                next(counter),
            )
            siblings.append(step)
            run.step_count += 1
        if not parent.run._quiet:
            step._announce()
        return step
    except Exception as exc:
        containment.internal_error("step.open", exc)
        return None


def _async_wrapper(spec: _Spec) -> Callable[..., Any]:
    """The wrapt wrapper of a coroutine function in a class body (plain ones get
    :func:`_plain_coroutine_function`)."""
    capture_result = spec.capture_result
    set_, reset = current_step_var.set, current_step_var.reset

    async def call(wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any) -> Any:
        step = _open(spec, instance, args, kwargs)
        if step is None:
            return await wrapped(*args, **kwargs)
        # await_in_step's lines inlined: one coroutine (and its frame) less on every call.
        token = set_(step)
        try:
            result = await (wrapped(*args, **kwargs) if kwargs else wrapped(*args))
        except BaseException as exc:
            reset(token)
            step._fail(exc)
            raise
        reset(token)
        step._succeed(result, capture_result)
        return result

    def wrapper(wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any) -> Any:
        if not settings.enabled:
            return wrapped(*args, **kwargs)
        return call(wrapped, instance, args, kwargs)

    return wrapper


def _plain_coroutine_function(fn: F, spec: _Spec) -> F:
    """A coroutine function outside a class body as one ``async def`` closure (no wrapt proxy
    and no sync wrapper before the coroutine: as :func:`_plain_function`, a frame and wrapt's
    ``__self__`` lookup less per call); ``inspect.iscoroutinefunction`` is true of it."""
    capture_result = spec.capture_result
    set_, reset = current_step_var.set, current_step_var.reset

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        step = _open(spec, None, args, kwargs) if settings.enabled else None
        if step is None:
            return await fn(*args, **kwargs)
        token = set_(step)
        try:
            result = await (fn(*args, **kwargs) if kwargs else fn(*args))
        except BaseException as exc:
            reset(token)
            step._fail(exc)
            raise
        reset(token)
        if step.run._quiet:  # Step._succeed's common case inlined, as in _plain_function
            step.result = result
            if capture_result and settings.capture_result:
                try:
                    data = encode(result)
                except Exception:
                    data = None
                if data is None or len(data) > settings.max_value_bytes:
                    step.result_json = capture(result)
                else:
                    step.result_json = data.decode()
            duration = _perf_ns() - step._t0
            step.duration_ns = duration
            step.end_ns = step.start_ns + duration
            step.status = "completed"
        else:
            step._succeed(result, capture_result)
        return result

    decorated: F = call  # type: ignore[assignment]
    return decorated


class _GeneratorClosed(GeneratorExit):
    """Why a generator step was cancelled: its consumer stopped before the end."""


# Stored as the step's error type (module + qualname): a public spelling that moves of this
# module do not change (a test pins it).
_GeneratorClosed.__module__ = "pipelens"


_CLOSED_MESSAGE = "the consumer closed the generator before it was exhausted"


def _open_under(parent: Step | None, spec: _Spec, inputs: str | None) -> Step:
    """A generator's step, opened at its first resume under the step current at its creation:
    a child without ``open_step``'s checks for a run's root (a call less)."""
    if parent is None:
        return open_step(spec.name, inputs, kind=spec.kind)
    step = new_child(parent, spec.name, inputs, spec.kind)
    if not parent.run._quiet:
        step._announce()
    return step


def _traced_generator(
    spec: _Spec, parent: Step | None, inputs: str | None, gen: Generator[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    try:
        step = _open_under(parent, spec, inputs)
    except Exception as exc:
        containment.internal_error("step.open", exc)
        return (yield from gen)
    set_, reset = current_step_var.set, current_step_var.reset
    send, throw = gen.send, gen.throw
    send_value: Any = None
    thrown: BaseException | None = None
    while True:
        token = set_(step)
        try:
            if thrown is None:
                item = send(send_value)
            else:
                item, thrown = throw(thrown), None
        except StopIteration as stop:
            reset(token)
            step._succeed(stop.value, spec.capture_result)
            return stop.value
        except BaseException as exc:
            reset(token)
            step._fail(exc)
            raise
        reset(token)
        try:
            send_value = yield item
        except GeneratorExit:
            token = current_step_var.set(step)
            try:
                gen.close()
            finally:
                current_step_var.reset(token)
                step._fail(_GeneratorClosed(_CLOSED_MESSAGE))
            raise
        except BaseException as exc:
            thrown, send_value = exc, None


async def _traced_async_generator(
    spec: _Spec, parent: Step | None, inputs: str | None, agen: AsyncGenerator[Any, Any]
) -> AsyncGenerator[Any, Any]:
    try:
        step = _open_under(parent, spec, inputs)
    except Exception as exc:
        containment.internal_error("step.open", exc)
        async for item in agen:
            yield item
        return
    send_value: Any = None
    thrown: BaseException | None = None
    while True:
        token = current_step_var.set(step)
        try:
            if thrown is None:
                item = await agen.asend(send_value)
            else:
                item, thrown = await agen.athrow(thrown), None
        except StopAsyncIteration:
            current_step_var.reset(token)
            step._succeed(None, spec.capture_result)
            return
        except BaseException as exc:
            current_step_var.reset(token)
            step._fail(exc)
            raise
        current_step_var.reset(token)
        try:
            send_value = yield item
        except GeneratorExit:
            token = current_step_var.set(step)
            try:
                await agen.aclose()
            finally:
                current_step_var.reset(token)
                step._fail(_GeneratorClosed(_CLOSED_MESSAGE))
            raise
        except BaseException as exc:
            thrown, send_value = exc, None


def _generator_wrapper(spec: _Spec, is_async: bool) -> Callable[..., Any]:
    traced: Callable[..., Any] = _traced_async_generator if is_async else _traced_generator

    def wrapper(wrapped: Callable[..., Any], instance: object, args: Any, kwargs: Any) -> Any:
        gen = wrapped(*args, **kwargs) if kwargs else wrapped(*args)
        if not settings.enabled:
            return gen
        try:
            # The parent is the step current where the generator is *created*; its own step
            # opens at the first resume, so a generator never iterated leaves no open step.
            inputs = spec.inputs(instance, args, kwargs) if spec.capture_args else None
            return traced(spec, current_step_var.get(), inputs, gen)
        except Exception as exc:
            containment.internal_error("step.generator", exc)
            return gen

    return wrapper


def _unwrap_kind(fn: Any) -> Any:
    # classmethod/staticmethod objects hide the function whose kind we need.
    return getattr(fn, "__func__", fn)


def _decorate(fn: F, name: str | None, capture_args: bool, capture_result: bool, kind: str) -> F:
    target = _unwrap_kind(fn)
    if not callable(target):
        raise TypeError(f"@step can only decorate a callable, not {fn!r}")
    default_name = str(getattr(target, "__name__", "step"))
    spec = _Spec(target, name or default_name, capture_args, capture_result, kind)
    is_async_generator = inspect.isasyncgenfunction(target)
    if is_async_generator or inspect.isgeneratorfunction(target):
        wrapper = _generator_wrapper(spec, is_async=is_async_generator)
        if _is_module_or_local_function(fn):
            return _PlainGenerator(fn, wrapper)  # type: ignore[return-value]
    elif inspect.iscoroutinefunction(target):
        if _is_module_or_local_function(fn):
            return _plain_coroutine_function(fn, spec)
        wrapper = _async_wrapper(spec)
    elif _is_module_or_local_function(fn):
        return _plain_function(fn, spec)
    else:
        wrapper = _sync_wrapper(spec)
    decorated: F = _StepFunction(fn, wrapper)  # type: ignore[assignment]
    return decorated


def _by_name(module: str, qualname: str) -> Any:
    """What ``module.qualname`` names now: how a decorated callable is unpickled."""
    value: Any = importlib.import_module(module)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


class _BoundStep(wrapt.BoundFunctionWrapper[Any, Any]):
    """A ``@step`` method bound to its object (or class): pickles as ``getattr(owner, name)``."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        owner = getattr(self.__wrapped__, "__self__", None)
        if owner is None:  # a staticmethod, or a method looked up on its class
            return self._self_parent.__reduce_ex__(protocol)
        return getattr, (owner, self.__wrapped__.__name__)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self


class _ByName:
    """Pickles (and copies) a decorated callable by its function's qualified name, as the
    undecorated function does, so ``ProcessPoolExecutor`` and ``copy.copy`` work."""

    __slots__ = ()
    __wrapped__: Any

    def __reduce_ex__(self, protocol: Any) -> Any:
        target = _unwrap_kind(self.__wrapped__)
        return _by_name, (target.__module__, target.__qualname__)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self


class _StepFunction(_ByName, wrapt.FunctionWrapper[Any, Any]):
    """The wrapt proxy of a ``@step`` callable."""

    __bound_function_wrapper__ = _BoundStep


class _PlainGenerator(_ByName):
    """A ``@step`` generator function outside a class body: what ``_plain_function`` is for a
    sync function, without wrapt's proxy (its call costs 0.5 µs more than this one's).

    A closure would do, but ``inspect.isgeneratorfunction`` reads the code flags of a function,
    and frameworks ask it (pytest's fixtures, FastAPI's dependencies, ``contextlib``): this object
    is function-like to ``inspect`` instead, with the decorated function's ``__code__``,
    defaults and metadata, so it says "generator function" (or "async generator function") as
    the function itself does. It binds as a method as a function does, and pickles and copies
    by qualified name (``_ByName``) as ``_StepFunction`` does.
    """

    __qualname__: str  # the function's, set by update_wrapper (as __name__, __doc__, ...)

    def __init__(self, fn: Callable[..., Any], start: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fn)
        self.__code__ = fn.__code__
        self.__defaults__ = fn.__defaults__
        self.__kwdefaults__ = fn.__kwdefaults__
        self._fn = fn
        self._start = start

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._start(self._fn, None, args, kwargs)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return self if instance is None else types.MethodType(self, instance)

    def __repr__(self) -> str:
        return f"<pipelens step {self.__qualname__} at {id(self):#x}>"


def _is_module_or_local_function(fn: object) -> bool:
    """A plain function not defined in a class body (``f`` or ``outer.<locals>.f``)."""
    if not inspect.isfunction(fn):
        return False
    owner, _, _ = fn.__qualname__.rpartition(".")
    return owner in ("", "<locals>") or owner.endswith(".<locals>")


def _plain_function(fn: F, spec: _Spec) -> F:
    """The hot path: a sync function outside a class body as one closure, every call a step.

    wrapt's FunctionWrapper looks up ``__self__`` on every call of a plain function (a failed
    attribute lookup: ~0.45 µs, a sixth of a step's whole cost) and such a function needs none
    of its binding, so it gets a closure with the same metadata (``functools.wraps`` sets
    ``__wrapped__``, which ``inspect.signature`` follows). The closure does the whole step
    itself: ``_Spec.inputs``, ``new_child`` and ``Step._succeed``'s common cases are inlined
    (a Python call costs more than their lines; each has the general case to fall back on).
    """
    name, kind, capture_args, capture_result = (
        spec.name,
        spec.kind,
        spec.capture_args,
        spec.capture_result,
    )
    get, set_, reset = current_step_var.get, current_step_var.set, current_step_var.reset
    # The arguments bind straight to this Struct: the common case skips ``_Spec.inputs``'s
    # checks (a TypeError there takes the general path).
    struct = None if spec.drop_first else spec.struct

    # ``f(*args, **kwargs)`` builds a new dict for the keywords even when there are none:
    # the calls below skip it for a call without keywords (most are).
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not settings.enabled:
            return fn(*args, **kwargs)
        try:
            inputs = None
            if capture_args and settings.capture_args:
                if struct is not None:
                    try:
                        bound = struct(*args, **kwargs) if kwargs else struct(*args)
                    except TypeError:
                        inputs = spec.inputs(None, args, kwargs)
                    else:
                        # capture(bound)'s common case inlined (a call less on every step):
                        # anything but a small encodable value takes capture itself.
                        try:
                            data = encode(bound)
                        except Exception:
                            data = None
                        if data is None or len(data) > settings.max_value_bytes:
                            inputs = capture(bound)
                        else:
                            inputs = data.decode()
                else:
                    inputs = spec.inputs(None, args, kwargs)
            parent = get()
            if parent is None:
                step = open_step(name, inputs, kind=kind)
            else:
                counters = parent._counters
                counter = None if counters is None else counters.get(name)
                siblings = parent._children
                if counter is None or siblings is None or parent._keys is not None:
                    step = new_child(parent, name, inputs, kind)
                else:  # new_child's common case: a name seen before under this parent
                    run = parent.run
                    t0 = _perf_ns()
                    step = make_step(
                        Step,
                        name,
                        None,
                        parent,
                        run,
                        inputs,
                        kind,
                        next(clock.step_ids),
                        t0,
                        t0 + _WALL_OFFSET_NS,
                        next(counter),
                    )
                    siblings.append(step)
                    run.step_count += 1
                if parent.run._announces_children:
                    step._announce()
        except Exception as exc:
            containment.internal_error("step.open", exc)
            return fn(*args, **kwargs)
        token = set_(step)
        try:
            result = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:
            reset(token)
            step._fail(exc)
            raise
        reset(token)
        if result.__class__ is _Coroutine:
            # A coroutine behind a sync function (a sync decorator around a coroutine
            # function): the step ends when it is awaited, not now.
            return await_in_step(step, result, capture_result)
        if step.run._quiet:
            # The common in-process case (no transport, no listeners), inlined: the end is a
            # clock read and a few stores, the result's capture never raises.
            step.result = result
            if capture_result and settings.capture_result:
                try:  # capture(result) inlined as above
                    data = encode(result)
                except Exception:
                    data = None
                if data is None or len(data) > settings.max_value_bytes:
                    step.result_json = capture(result)
                else:
                    step.result_json = data.decode()
            duration = _perf_ns() - step._t0
            step.duration_ns = duration
            step.end_ns = step.start_ns + duration
            step.status = "completed"
        else:
            step._succeed(result, capture_result)
        return result

    decorated: F = call  # type: ignore[assignment]
    return decorated


@overload
def step(fn: F, /) -> F: ...
@overload
def step(
    name: str | None = None,
    /,
    *,
    capture_args: bool = True,
    capture_result: bool = True,
    kind: str = "step",
) -> Callable[[F], F]: ...
@overload
def step(
    *,
    name: str | None = None,
    capture_args: bool = True,
    capture_result: bool = True,
    kind: str = "step",
) -> Callable[[F], F]: ...
def step(
    fn_or_name: Any = None,
    /,
    *,
    name: str | None = None,
    capture_args: bool = True,
    capture_result: bool = True,
    kind: str = "step",
) -> Any:
    """Make every call of the decorated function a step of the current run.

    Use it bare (``@step``), with a name (``@step("rerank")``) or with options
    (``@step(name="rerank", capture_args=False)``). The outermost step called while no run is
    open starts a run named after it. Works on functions, coroutines, generators, async
    generators, methods, classmethods and staticmethods.

    Args:
        name: the step's name (default: the function's ``__name__``); a ``.`` becomes ``_``.
        capture_args: record the bound arguments as the step's inputs.
        capture_result: record the return value as the step's result.
        kind: a label for the dashboard (``llm`` marks LLM calls).
    """
    check_strings("@step", optional=True, name=name, kind=kind)
    if isinstance(fn_or_name, str) or fn_or_name is None:
        chosen = fn_or_name if fn_or_name is not None else name

        def decorator(fn: F) -> F:
            return _decorate(fn, chosen, capture_args, capture_result, kind)

        return decorator
    return _decorate(fn_or_name, name, capture_args, capture_result, kind)


class span(StepScope[Step | None]):  # noqa: N801 - used like a function: ``with pipelens.span("load"):``
    """A block as a step: ``with span("load") as s:`` or ``async with span("load"):``.

    The step ends when the block does: ``completed``, or ``failed``/``cancelled`` with the error
    when an exception leaves the block (the exception propagates unchanged). Use one ``span``
    object per block.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"span({name!r}): the name must be a string")
        self.name = sanitize_name(name)

    def _open(self) -> Step:
        return open_step(self.name)

    def __enter__(self) -> Step | None:
        return self._enter() if settings.enabled else None
