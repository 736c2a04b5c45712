"""Method dispatch (xapi.md 1.4): names, session check, parameter counts, typed arguments,
Async.* tasks, explicit handlers from the registry and generic per-class accessors.

Order of checks, as XAPI does them: unknown names with params are session-checked before
MESSAGE_METHOD_UNKNOWN; a supporter host answers HOST_IS_SLAVE; then the session, the
parameter count, the argument types, and finally the handler.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from xen.sim import (  # noqa: F401 - they register their messages
    certs,
    clock,
    events,
    hosts,
    migration,
    plugins,
    secureboot,
    sessions,
    tasks,
)
from xen.sim.build import vm_allowed_operations
from xen.sim.db import MessageSpec, Schema, XapiFailure, type_kind
from xen.sim.registry import CallContext, Message, messages
from xen.sim.tasks import invoke
from xen.sim.unmarshal import ArgTypeError, convert, convert_args

if TYPE_CHECKING:
    from xen.sim.pool import SimPool


NO_ASYNC_CLASSES = frozenset({"session", "task", "event"})
GENERIC_NAMES = ("get_all", "get_all_records", "get_record", "get_by_uuid", "get_by_name_label")

Handler = Callable[..., Any]


def _no_session_spec(canonical: str) -> bool:
    return canonical.startswith("session.") and "login" in canonical


class MethodTable:
    """Every callable wire name, resolved once per schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.names: dict[str, str] = {}  # wire spelling -> canonical "Class.msg"
        for cls_name, cls in schema.classes.items():
            for msg in cls.messages:
                self._add(cls_name, msg)
        for name in messages():
            cls_name, _, msg = name.partition(".")
            self._add(cls_name, msg)

    def _add(self, cls_name: str, msg: str) -> None:
        canonical = f"{cls_name}.{msg}"
        self.names[canonical] = canonical
        self.names.setdefault(f"{cls_name}_{msg}", canonical)  # event_from, VM_get_all ...

    def resolve(self, name: str) -> str | None:
        return self.names.get(name)

    def spec(self, canonical: str) -> MessageSpec | None:
        cls_name, _, msg = canonical.partition(".")
        cls = self.schema.classes.get(cls_name)
        return cls.messages.get(msg) if cls is not None else None

    def list_methods(self) -> list[str]:
        return sorted({*self.names.values(), "system.listMethods", "system.isAlive"})


class Dispatcher:
    def __init__(self, pool: SimPool, table: MethodTable) -> None:
        self.pool = pool
        self.table = table
        self.schema = table.schema

    async def call(self, host_ref: str, wire: str, params: list[Any]) -> Any:
        pool = self.pool
        is_async = wire.startswith("Async.")
        name = wire[len("Async.") :] if is_async else wire
        canonical = self.table.resolve(name)
        pool.count(("Async." + canonical if is_async else canonical) if canonical else wire)
        if canonical is None:
            if params:
                self._check_host(host_ref)
                pool.sessions.check(params[0])
            raise XapiFailure("MESSAGE_METHOD_UNKNOWN", wire)
        spec = self.table.spec(canonical)
        explicit = messages().get(canonical)
        takes_session = spec.takes_session if spec is not None else not _no_session_spec(canonical)
        self._check_host(host_ref)
        session = ""
        args = list(params)
        if takes_session:
            if not args:
                raise XapiFailure("SESSION_INVALID", "")
            session = pool.sessions.check(args.pop(0))
        types = list(spec.args) if spec is not None else []
        lo, hi = self._arity(explicit, spec, len(types), len(args))
        if not lo <= len(args) <= hi:
            raise XapiFailure("MESSAGE_PARAMETER_COUNT_MISMATCH", canonical, lo, len(args))
        args = convert_args(self.schema, canonical, [(t, n) for t, n in types], args)
        handler = self._handler(canonical, spec, explicit)
        async_capable = self._async_capable(canonical, spec, explicit)
        if is_async:
            if not async_capable:
                raise XapiFailure("Fault", f"No async mode for this operation (rpc: {wire})")
            return pool.tasks.spawn(wire, canonical, session, handler, args)
        if async_capable:
            # XAPI runs a synchronous call of such a message under a short-lived DB task.
            return await pool.tasks.run_sync(canonical, session, handler, args)
        ctx = CallContext(pool, session, canonical)
        return await invoke(handler, ctx, args)

    def _check_host(self, host_ref: str) -> None:
        pool = self.pool
        if host_ref != pool.master_ref:
            raise XapiFailure("HOST_IS_SLAVE", pool.host_address(pool.master_ref))

    @staticmethod
    def _arity(
        explicit: Message | None, spec: MessageSpec | None, declared: int, received: int
    ) -> tuple[int, int]:
        lo = declared
        hi = declared if spec is not None else received
        if explicit is not None:
            if explicit.min_args is not None:
                lo = explicit.min_args
            if explicit.max_args is not None:
                hi = explicit.max_args
            elif spec is None:
                hi = max(received, lo)
        return lo, hi

    @staticmethod
    def _async_capable(canonical: str, spec: MessageSpec | None, explicit: Message | None) -> bool:
        cls_name, _, msg = canonical.partition(".")
        if cls_name in NO_ASYNC_CLASSES:
            return False
        if explicit is not None:
            return explicit.asynchronous
        return spec is not None and not spec.implicit and msg not in GENERIC_NAMES

    def _handler(
        self, canonical: str, spec: MessageSpec | None, explicit: Message | None
    ) -> Handler:
        if explicit is not None:
            return explicit.handler
        cls_name, _, msg = canonical.partition(".")
        generic = generic_handler(self.schema, cls_name, msg)
        if generic is not None:
            return generic
        return partial(_not_implemented, canonical)


def _not_implemented(canonical: str, ctx: CallContext, *args: Any) -> None:
    del ctx, args
    raise XapiFailure("NOT_IMPLEMENTED", canonical)


# -- generic per-class messages -----------------------------------------------------------------


def generic_handler(schema: Schema, cls: str, msg: str) -> Handler | None:
    spec = schema.classes.get(cls)
    if spec is None:
        return None
    fields = spec.fields
    if msg == "get_all":
        return lambda ctx: ctx.db.all_refs(cls)
    if msg == "get_all_records":
        # Live records: they are encoded before anything else runs on the loop.
        return lambda ctx: dict(ctx.db.table(cls))
    if msg == "get_all_records_where":
        return lambda ctx, expr: dict(ctx.db.table(cls))
    if msg == "get_record":
        return lambda ctx, ref: ctx.db.get(cls, ref)
    if msg == "get_by_uuid":
        return lambda ctx, uuid: ctx.db.by_uuid(cls, uuid)
    if msg == "get_by_name_label" and "name_label" in fields:
        return lambda ctx, label: ctx.db.find(cls, name_label=label)
    if msg == "create" and spec.messages.get("create") and spec.messages["create"].implicit:
        return partial(_create, schema, cls)
    if msg == "destroy" and spec.messages.get("destroy") and spec.messages["destroy"].implicit:
        return lambda ctx, ref: (ctx.db.get(cls, ref), ctx.db.delete(cls, ref))[-1]
    for prefix in ("get_", "set_", "add_to_", "remove_from_", "add_", "remove_"):
        if msg.startswith(prefix) and msg[len(prefix) :] in fields:
            field = fields[msg[len(prefix) :]]
            return partial(_ACCESSORS[prefix], cls, field.name, field.kind)
    return None


def _get(cls: str, name: str, kind: str, ctx: CallContext, ref: str) -> Any:
    del kind
    return ctx.db.get(cls, ref)[name]


def _after_write(ctx: CallContext, cls: str, ref: str, name: str) -> None:
    # Derived fields XAPI recomputes on such writes.
    if cls == "VM" and name == "blocked_operations":
        ctx.db.update("VM", ref, allowed_operations=vm_allowed_operations(ctx.db.get("VM", ref)))


def _set(cls: str, name: str, kind: str, ctx: CallContext, ref: str, value: Any) -> None:
    del kind
    ctx.db.get(cls, ref)
    ctx.db.update(cls, ref, **{name: value})
    _after_write(ctx, cls, ref, name)


def _add_to(
    cls: str, name: str, kind: str, ctx: CallContext, ref: str, key: Any, value: Any
) -> None:
    rec = ctx.db.get(cls, ref)
    if kind != "map":
        raise XapiFailure("NOT_IMPLEMENTED", f"{cls}.add_to_{name}")
    if key in rec[name]:
        raise XapiFailure("MAP_DUPLICATE_KEY", cls, name, ref, key)
    ctx.db.map_set(cls, ref, name, key, value)
    _after_write(ctx, cls, ref, name)


def _remove_from(cls: str, name: str, kind: str, ctx: CallContext, ref: str, key: Any) -> None:
    ctx.db.get(cls, ref)
    if kind == "map":
        ctx.db.map_remove(cls, ref, name, key)
    else:
        ctx.db.set_remove(cls, ref, name, key)
    _after_write(ctx, cls, ref, name)


def _add(cls: str, name: str, kind: str, ctx: CallContext, ref: str, value: Any) -> None:
    del kind
    ctx.db.get(cls, ref)
    ctx.db.set_add(cls, ref, name, value)
    _after_write(ctx, cls, ref, name)


def _remove(cls: str, name: str, kind: str, ctx: CallContext, ref: str, value: Any) -> None:
    del kind
    ctx.db.get(cls, ref)
    ctx.db.set_remove(cls, ref, name, value)
    _after_write(ctx, cls, ref, name)


_ACCESSORS: dict[str, Callable[..., Any]] = {
    "get_": _get,
    "set_": _set,
    "add_to_": _add_to,
    "remove_from_": _remove_from,
    "add_": _add,
    "remove_": _remove,
}


def _create(schema: Schema, cls: str, ctx: CallContext, record: dict[str, Any]) -> str:
    fields = schema.cls(cls).fields
    values: dict[str, Any] = {}
    for key, raw in record.items():
        field = fields.get(key)
        if field is None or key == "uuid":
            continue
        try:
            values[key] = convert(schema, field.type, raw)
        except ArgTypeError:
            raise XapiFailure("FIELD_TYPE_ERROR", key) from None
        if type_kind(field.type) == "ref" and field.ref_class and values[key] != "OpaqueRef:NULL":
            ctx.db.get(field.ref_class, values[key])  # HANDLE_INVALID for dangling refs
    return ctx.db.create(cls, **values)
