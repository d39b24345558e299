"""The codec: ``encode(message) -> bytes`` and ``decode(bytes) -> message``, nothing else.

Every payload is a CBOR map ``{"kind": ..., "v": ..., <fields>}``. ``decode`` never lets
a foreign exception out: whatever is wrong with the bytes — truncated or malformed
CBOR, an unknown ``kind``, a newer schema version, a missing or mistyped field, a shape
that does not match its bytes, an oversized payload, deep nesting — it raises
:class:`splitmq.errors.DecodeError`, whose message names the problem and whose
``field`` attribute names the offending field.

The schema of each message is read once from its dataclass's type hints and compiled
into a pair of converters per field.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from splitmq.errors import DecodeError, EncodeError
from splitmq.wire.cbor import dumps, dumps_parts, loads
from splitmq.wire.limits import DEFAULT_LIMITS, Limits
from splitmq.wire.messages import MESSAGE_TYPES, Message
from splitmq.wire.tensors import Tensor, tensor_from_wire, tensor_to_wire

M = TypeVar("M", bound=Message)
T = TypeVar("T")

ToWire = Callable[[Any], Any]
FromWire = Callable[[Any, Limits, str], Any]

_BY_KIND: dict[str, type[Message]] = {cls.KIND: cls for cls in MESSAGE_TYPES}


def encode(message: Message) -> bytes:
    """The CBOR bytes of ``message``."""
    return _encoded(message, dumps)


def encode_parts(message: Message) -> list[bytes | bytearray | memoryview]:
    """:func:`encode` as parts in order, not joined: the tensors' buffers are referenced,
    not copied, for a transport to write out as they are (``Transport.publish`` takes
    such a list). The tensors must not change until the message is sent."""
    return _encoded(message, dumps_parts)


def _encoded(message: Message, dump: Callable[[object], T]) -> T:
    schema = _schema(type(message))
    try:
        return dump(schema.to_wire(message))
    except (TypeError, ValueError, AttributeError) as error:
        raise EncodeError(f"cannot encode {type(message).__name__}: {error}") from error


@typing.overload
def decode(
    data: bytes | bytearray | memoryview,
    *,
    expect: None = None,
    limits: Limits = ...,
    topic: str | None = None,
) -> Message: ...


@typing.overload
def decode(
    data: bytes | bytearray | memoryview,
    *,
    expect: type[M] | tuple[type[M], ...],
    limits: Limits = ...,
    topic: str | None = None,
) -> M: ...


def decode(
    data: bytes | bytearray | memoryview,
    *,
    expect: type[Message] | tuple[type[Message], ...] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    topic: str | None = None,
) -> Message:
    """Decode one message; raise :class:`DecodeError` for anything that is not one.

    Args:
        data: the payload.
        expect: the message type(s) the caller accepts; any other kind is an error.
        limits: size and shape limits (see :class:`Limits`).
        topic: the topic the payload came from, quoted in errors.
    """
    try:
        return _decode(data, expect, limits)
    except DecodeError as error:
        if topic is not None and error.topic is None:
            raise error.with_topic(topic) from None
        raise


def decode_fields(
    data: bytes | bytearray | memoryview,
    cls: type[Message],
    names: tuple[str, ...],
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """What can be read of the fields ``names`` of a ``cls`` message from bytes that may
    not be a valid one (to answer a malformed request): each field through the codec's
    own converter; a field that is absent or does not convert is left out, and so is
    everything when the bytes are not a CBOR map. The kind is not checked."""
    try:
        raw = loads(data, max_depth=limits.max_depth)
    except DecodeError:
        return {}
    if not isinstance(raw, dict):
        return {}
    fields = {f.name: f for f in _schema(cls).fields}
    found: dict[str, Any] = {}
    for name in names:
        value = raw.get(name, _ABSENT)
        if value is _ABSENT:
            continue
        try:
            found[name] = fields[name].from_wire(value, limits, name)
        except DecodeError:
            continue
    return found


def kinds() -> dict[str, type[Message]]:
    """Every message kind the codec knows, by its ``kind`` string."""
    return dict(_BY_KIND)


def _decode(
    data: bytes | bytearray | memoryview,
    expect: type[Message] | tuple[type[Message], ...] | None,
    limits: Limits,
) -> Message:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"payload must be bytes, not {type(data).__name__}")
    size = memoryview(data).nbytes
    if size > limits.max_message_bytes:
        raise DecodeError(
            f"payload of {size} bytes is above the limit of {limits.max_message_bytes} bytes"
        )
    raw = loads(data, max_depth=limits.max_depth)
    if not isinstance(raw, dict):
        raise DecodeError(f"a message must be a CBOR map, not {_wire_type(raw)}")
    kind = raw.get("kind")
    if not isinstance(kind, str):
        raise DecodeError("a message needs a text 'kind'", field="kind")
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise DecodeError(f"unknown message kind {kind!r}", field="kind")
    if expect is not None:
        allowed = expect if isinstance(expect, tuple) else (expect,)
        if cls not in allowed:
            names = ", ".join(repr(c.KIND) for c in allowed)
            raise DecodeError(f"expected a message of kind {names}, got {kind!r}", field="kind")
    version = raw.get("v")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DecodeError("a message needs a positive integer schema version 'v'", field="v")
    if version > cls.VERSION:
        raise DecodeError(
            f"{kind!r} schema version {version} is newer than this splitmq reads "
            f"(up to {cls.VERSION}): upgrade splitmq on this device",
            field="v",
        )
    return typing.cast(Message, _schema(cls).from_wire(raw, limits, ""))


# --- schema compilation -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    to_wire: ToWire
    from_wire: FromWire
    required: bool
    optional_default: bool  # default is None: omitted on the wire when None
    as_is: frozenset[type[Any]] = frozenset()
    """Wire types ``from_wire`` returns unchanged (a scalar field's own type, and
    ``NoneType`` when it is optional): such a value is taken without calling it."""


@dataclasses.dataclass(frozen=True)
class _Schema:
    cls: type[Any]
    fields: tuple[_Field, ...]
    is_message: bool
    plain: bool
    """No ``__post_init__``, no slots and no default factories: an instance can be made by filling
    its ``__dict__`` (what the dataclass's ``__init__`` does, without a frozen class's
    ``object.__setattr__`` per field; an absent field reads its class-level default)."""

    def to_wire(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.is_message:
            out["kind"] = self.cls.KIND
            out["v"] = self.cls.VERSION
        for f in self.fields:
            value = getattr(obj, f.name)
            if value is None and f.optional_default:
                continue
            out[f.name] = f.to_wire(value)
        return out

    def filled(self, values: dict[str, Any]) -> Any:
        """An instance of a :attr:`plain` class with ``values`` as its fields, as they are."""
        made = object.__new__(self.cls)
        made.__dict__.update(values)
        return made

    def from_wire(self, raw: Any, limits: Limits, path: str) -> Any:
        if not isinstance(raw, dict):
            raise DecodeError(f"expected a map, got {_wire_type(raw)}", field=path or None)
        kwargs: dict[str, Any] = {}
        get = raw.get
        for f in self.fields:
            value = get(f.name, _ABSENT)
            if type(value) in f.as_is:  # a scalar of its own type: nothing to convert
                kwargs[f.name] = value
            elif value is not _ABSENT:
                kwargs[f.name] = f.from_wire(value, limits, f"{path}.{f.name}" if path else f.name)
            elif f.required:
                where = f"{path}.{f.name}" if path else f.name
                raise DecodeError(f"missing required field {f.name!r}", field=where)
        if self.plain:
            return self.filled(kwargs)
        try:
            return self.cls(**kwargs)
        except (ValueError, TypeError) as error:
            raise DecodeError(str(error), field=path or None) from None


_ABSENT = object()
_SCHEMAS: dict[type[Any], _Schema] = {}
_AS_IS: dict[FromWire, frozenset[type[Any]]] = {}
"""The wire types each scalar converter returns unchanged (see :attr:`_Field.as_is`)."""


def _schema(cls: type[Any]) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls)
        fields = []
        for f in dataclasses.fields(cls):
            to_wire, from_wire = _converters(hints[f.name])
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            fields.append(
                _Field(
                    name=f.name,
                    to_wire=to_wire,
                    from_wire=from_wire,
                    required=not has_default,
                    optional_default=has_default and f.default is None,
                    as_is=_AS_IS.get(from_wire, frozenset()),
                )
            )
        plain = (
            not hasattr(cls, "__post_init__")
            and "__slots__" not in vars(cls)
            and all(f.default_factory is dataclasses.MISSING for f in dataclasses.fields(cls))
        )
        schema = _Schema(
            cls=cls, fields=tuple(fields), is_message=issubclass(cls, Message), plain=plain
        )
        _SCHEMAS[cls] = schema
    return schema


def _identity(value: Any) -> Any:
    return value


def _converters(hint: Any) -> tuple[ToWire, FromWire]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {hint}")
        return _optional(*_converters(inner[0]))
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, not {hint}")
        return _sequence(*_converters(args[0]), tensors=args[0] is Tensor)
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"only dict[str, X] is supported, not {hint}")
        return _mapping(*_converters(args[1]))
    if hint is Tensor:
        return tensor_to_wire, tensor_from_wire
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enumeration(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        schema = _schema(hint)
        return schema.to_wire, schema.from_wire
    if hint in (str, bytes, bool, int, float):
        return _identity, _scalar(hint)
    raise TypeError(f"no wire converter for {hint}")


def _scalar(kind: type[Any]) -> FromWire:
    def wrong(value: Any, path: str) -> DecodeError:
        return DecodeError(f"expected {kind.__name__}, got {_wire_type(value)}", field=path)

    def check_float(value: Any, _limits: Limits, path: str) -> Any:
        if type(value) is float:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise wrong(value, path)

    def check_int(value: Any, _limits: Limits, path: str) -> Any:
        if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise wrong(value, path)

    def check_bytes(value: Any, _limits: Limits, path: str) -> Any:
        if isinstance(value, bytes):
            return value
        if isinstance(value, memoryview):
            return value.tobytes()
        raise wrong(value, path)

    def check(value: Any, _limits: Limits, path: str) -> Any:
        if isinstance(value, kind):
            return value
        raise wrong(value, path)

    checks: dict[type[Any], FromWire] = {float: check_float, int: check_int, bytes: check_bytes}
    converter = checks.get(kind, check)
    _AS_IS[converter] = frozenset({kind})
    return converter


def _optional(to_wire: ToWire, from_wire: FromWire) -> tuple[ToWire, FromWire]:
    def out(value: Any) -> Any:
        return None if value is None else to_wire(value)

    def back(value: Any, limits: Limits, path: str) -> Any:
        return None if value is None else from_wire(value, limits, path)

    if from_wire in _AS_IS:
        _AS_IS[back] = _AS_IS[from_wire] | {type(None)}
    return out, back


def _sequence(to_wire: ToWire, from_wire: FromWire, *, tensors: bool) -> tuple[ToWire, FromWire]:
    def out(value: Any) -> Any:
        return [to_wire(item) for item in value]

    def back(value: Any, limits: Limits, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise DecodeError(f"expected an array, got {_wire_type(value)}", field=path)
        limit = limits.max_tensors if tensors else limits.max_items
        if len(value) > limit:
            raise DecodeError(f"{len(value)} entries, above the limit of {limit}", field=path)
        return tuple(from_wire(item, limits, f"{path}[{i}]") for i, item in enumerate(value))

    return out, back


def _mapping(to_wire: ToWire, from_wire: FromWire) -> tuple[ToWire, FromWire]:
    def out(value: Any) -> Any:
        return {key: to_wire(item) for key, item in value.items()}

    def back(value: Any, limits: Limits, path: str) -> Any:
        if not isinstance(value, dict):
            raise DecodeError(f"expected a map, got {_wire_type(value)}", field=path)
        if len(value) > limits.max_items:
            raise DecodeError(
                f"{len(value)} entries, above the limit of {limits.max_items}", field=path
            )
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError(f"map keys must be text, got {_wire_type(key)}", field=path)
            result[key] = from_wire(item, limits, f"{path}[{key!r}]")
        return result

    return out, back


def _enumeration(cls: type[enum.Enum]) -> tuple[ToWire, FromWire]:
    def out(value: Any) -> Any:
        return cls(value).value

    def back(value: Any, _limits: Limits, path: str) -> Any:
        try:
            return cls(value)
        except (ValueError, TypeError):
            allowed = ", ".join(repr(m.value) for m in cls)
            raise DecodeError(f"{value!r} is not one of {allowed}", field=path) from None

    return out, back


def _wire_type(value: Any) -> str:
    names = {
        dict: "a map",
        list: "an array",
        tuple: "an array",
        str: "text",
        bytes: "a byte string",
        memoryview: "a byte string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
