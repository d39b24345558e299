"""CBOR framing: cbor2's C encoder with tensor buffers spliced in, and a hardened
wrapper around cbor2's decoder.

Encoding: cbor2's C encoder writes the whole message except the tensors' bytes, which it
copies slowly (about 2 ms per MB here, a hundred times a plain ``memcpy``). A tensor's
buffer therefore travels as a :class:`Buffer`: cbor2 writes a 16-byte marker in its
place, and :func:`dumps_parts` cuts the marker out and puts the byte string's head and
the buffer itself in its place. The bytes are plain RFC 8949 CBOR, the same as if cbor2
had written the buffer; a message costs no copy of its tensors until the socket's.

Decoding has two paths that accept exactly the same language and read it the same way
(definite lengths, text map keys, no duplicate keys, no trailing bytes, a depth limit,
no semantic tags but the ones the schema checks; map keys are text or byte strings;
simple values splitmq never writes come back as cbor2's objects, which the schema
refuses wherever a field holds one):

- small messages (telemetry, commands, plans) go through cbor2's C decoder, with
  cbor2's built-in semantic tags refused before they run (shared references can build
  cycles, MIME and regex tags run parsers);
- large ones (activations) go through :class:`_Reader`, a small reader that returns
  byte strings as memoryviews of the payload, so a tensor is decoded without a copy.
  cbor2 copies every byte string twice, which costs more than the whole small-item
  walk once a message is past :data:`ZERO_COPY_THRESHOLD` bytes.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from typing import Any

import cbor2

from splitmq.errors import DecodeError, EncodeError

Tag = cbor2.CBORTag
"""A CBOR tag (``tag`` number applied to ``value``); the decoders return this type too."""

_PACK_B = struct.Struct(">B").pack
_PACK_BB = struct.Struct(">BB").pack
_PACK_BH = struct.Struct(">BH").pack
_PACK_BI = struct.Struct(">BI").pack
_PACK_BQ = struct.Struct(">BQ").pack


def _head(major: int, length: int) -> bytes:
    """The initial byte(s) of an item of major type ``major`` with argument ``length``."""
    mt = major << 5
    if length < 24:
        return _PACK_B(mt | length)
    if length < 0x100:
        return _PACK_BB(mt | 24, length)
    if length < 0x10000:
        return _PACK_BH(mt | 25, length)
    if length < 0x100000000:
        return _PACK_BI(mt | 26, length)
    return _PACK_BQ(mt | 27, length)


class Buffer:
    """A byte string to encode without copying it: a tensor's buffer.

    ``view`` is flattened to bytes; it must not change until the message is sent.
    """

    __slots__ = ("view",)

    def __init__(self, data: bytes | bytearray | memoryview):
        view = memoryview(data)
        self.view = view if view.format == "B" and view.ndim == 1 else view.cast("B")


_MARKER_PREFIX = os.urandom(12)
"""A marker is this and a 4-byte index: 16 bytes no message carries by chance."""

_MARKER_HEAD = _head(2, 16)

LARGE_PART = 16 * 1024
"""Buffers from this size on stay parts of their own in :func:`dumps_parts`."""


def dumps(value: object) -> bytes:
    """Encode ``value`` (None, bool, int, float, str, bytes, bytearray, :class:`Buffer`,
    list, tuple, dict with text keys, :data:`Tag`); raise :class:`EncodeError` otherwise."""
    return b"".join(dumps_parts(value))


def dumps_parts(value: object) -> list[bytes | bytearray | memoryview]:
    """:func:`dumps` as parts to write out in order, not joined: each large
    :class:`Buffer` referenced as it is, the rest joined around them.

    Joining would copy every tensor once more; ``socket.sendmsg`` writes the parts as
    they are. There are few parts: about two per large buffer.
    """
    buffers: list[memoryview] = []

    def marker(encoder: cbor2.CBOREncoder, item: object) -> None:
        if not isinstance(item, Buffer):
            raise EncodeError(f"cannot encode a value of type {type(item).__name__} as CBOR")
        encoder.encode(_MARKER_PREFIX + len(buffers).to_bytes(4, "big"))
        buffers.append(item.view)

    try:
        envelope = cbor2.dumps(value, default=marker)
    except EncodeError:
        raise
    except (cbor2.CBOREncodeError, TypeError, ValueError, OverflowError) as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, EncodeError):
            raise cause from None
        raise EncodeError(f"cannot encode as CBOR: {error}") from None
    return _spliced(envelope, buffers)


def _spliced(envelope: bytes, buffers: list[memoryview]) -> list[bytes | bytearray | memoryview]:
    """``envelope`` with marker ``i`` replaced by ``buffers[i]`` as a byte string."""
    if not buffers:
        return [envelope]
    parts: list[bytes | bytearray | memoryview] = []
    small = bytearray()
    start = 0
    for index, view in enumerate(buffers):
        mark = _MARKER_HEAD + _MARKER_PREFIX + index.to_bytes(4, "big")
        at = envelope.find(mark, start)
        if at < 0 or envelope.find(mark, at + 1) >= 0:  # cannot happen but by a 2**-96 chance
            raise EncodeError("a buffer's marker is missing or repeated in the message")
        small += envelope[start:at]
        small += _head(2, view.nbytes)
        if view.nbytes >= LARGE_PART:
            parts.append(small)
            parts.append(view)
            small = bytearray()
        else:
            small += view
        start = at + len(mark)
    small += envelope[start:]
    parts.append(small)
    return parts


# Tags cbor2 would interpret on its own. We carry none of them; every one is refused
# before cbor2 runs its decoder (28/29 build shared, possibly cyclic structures; 35
# compiles a regex; 36 parses MIME; the rest make objects the schema never expects).
_BUILTIN_TAGS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100)
_BUILTIN_TAGS += (256, 258, 260, 261, 1004, 55799)


def _refuse(tag: int) -> Callable[[Any], Any]:
    def refuse(_decoder: Any) -> Any:
        raise DecodeError(f"CBOR tag {tag} is not part of the splitmq wire format")

    return refuse


_REFUSED = {tag: _refuse(tag) for tag in _BUILTIN_TAGS}


ZERO_COPY_THRESHOLD = 256 * 1024


def loads(data: bytes | bytearray | memoryview, *, max_depth: int) -> Any:
    """Decode exactly one CBOR item from ``data``; raise :class:`DecodeError` otherwise.

    Tags come back as :data:`Tag`; the schema layer checks them. Byte strings are
    ``bytes`` below :data:`ZERO_COPY_THRESHOLD` and memoryviews of ``data`` above it.
    """
    view = memoryview(data)
    if view.nbytes >= ZERO_COPY_THRESHOLD:
        return loads_zero_copy(view, max_depth=max_depth)
    return loads_cbor2(view, max_depth=max_depth)


def loads_cbor2(data: bytes | bytearray | memoryview, *, max_depth: int) -> Any:
    """:func:`loads` through cbor2's C decoder."""
    buffer = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            buffer,
            semantic_decoders=_REFUSED,
            max_depth=max_depth,
            allow_duplicate_keys=False,
            allow_indefinite=False,
            strict_hashable_types=True,
            str_errors="strict",
        )
        value = decoder.decode()
    except DecodeError:
        raise
    except cbor2.CBORDecodeEOF as error:
        raise DecodeError(f"truncated CBOR: {error}") from None
    except cbor2.CBORDecodeError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, DecodeError):
            raise cause from None
        raise DecodeError(f"malformed CBOR: {error}") from None
    except (RecursionError, MemoryError, OverflowError, ValueError, TypeError) as error:
        raise DecodeError(f"malformed CBOR: {type(error).__name__}: {error}") from None
    trailing = memoryview(data).nbytes - buffer.tell()
    if trailing:
        raise DecodeError(f"{trailing} trailing bytes after the CBOR message")
    return value


def loads_zero_copy(data: bytes | bytearray | memoryview, *, max_depth: int) -> Any:
    """:func:`loads` through :class:`_Reader`: byte strings are views of ``data``."""
    reader = _Reader(memoryview(data).cast("B"), max_depth)
    try:
        value = reader.item(0)
    except RecursionError:
        raise DecodeError(f"nesting deeper than {max_depth} levels") from None
    trailing = reader.end - reader.pos
    if trailing:
        raise DecodeError(f"{trailing} trailing bytes after the CBOR message")
    return value


_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_F16 = struct.Struct(">e").unpack_from
_F32 = struct.Struct(">f").unpack_from
_F64 = struct.Struct(">d").unpack_from
_FLOATS = {25: (_F16, 2), 26: (_F32, 4), 27: (_F64, 8)}  # additional info -> half/single/double


class _Reader:
    """A strict, zero-copy reader of the CBOR subset the wire format uses."""

    __slots__ = ("buf", "end", "max_depth", "pos")

    def __init__(self, buf: memoryview, max_depth: int):
        self.buf = buf
        self.pos = 0
        self.end = buf.nbytes
        self.max_depth = max_depth

    def _need(self, count: int) -> None:
        if self.pos + count > self.end:
            raise DecodeError(
                f"truncated CBOR: {count} bytes needed at offset {self.pos}, "
                f"{self.end - self.pos} left"
            )

    def _argument(self, info: int) -> int:
        pos = self.pos
        if info < 24:
            return info
        if info == 24:
            self._need(1)
            self.pos = pos + 1
            return int(self.buf[pos])
        if info == 25:
            self._need(2)
            self.pos = pos + 2
            return int(_U16(self.buf, pos)[0])
        if info == 26:
            self._need(4)
            self.pos = pos + 4
            return int(_U32(self.buf, pos)[0])
        if info == 27:
            self._need(8)
            self.pos = pos + 8
            return int(_U64(self.buf, pos)[0])
        if info == 31:
            raise DecodeError(
                f"malformed CBOR: indefinite-length item at offset {pos - 1} "
                "(the wire format uses definite lengths only)"
            )
        raise DecodeError(f"malformed CBOR: reserved additional information {info}")

    def _nest(self, depth: int) -> None:
        if depth >= self.max_depth:
            raise DecodeError(f"nesting deeper than {self.max_depth} levels")

    def item(self, depth: int) -> Any:
        if self.pos >= self.end:
            raise DecodeError(f"truncated CBOR: an item expected at offset {self.pos}")
        initial = self.buf[self.pos]
        self.pos += 1
        major = initial >> 5
        info = initial & 31
        if major == 3:
            length = self._argument(info)
            self._need(length)
            start = self.pos
            self.pos += length
            try:
                return str(self.buf[start : self.pos], "utf-8")
            except UnicodeDecodeError:
                raise DecodeError(f"malformed CBOR: invalid UTF-8 at offset {start}") from None
        if major == 0:
            return self._argument(info)
        if major == 2:
            length = self._argument(info)
            self._need(length)
            start = self.pos
            self.pos += length
            return self.buf[start : self.pos]
        if major == 5:
            self._nest(depth)
            count = self._argument(info)
            if count * 2 > self.end - self.pos:
                raise DecodeError(f"truncated CBOR: a map of {count} entries cannot fit")
            out: dict[str | bytes, Any] = {}
            for _ in range(count):
                key = self.item(depth + 1)
                if isinstance(key, memoryview):
                    key = bytes(key)
                elif not isinstance(key, str):
                    raise DecodeError(
                        f"map keys must be text or byte strings, got {type(key).__name__}"
                    )
                if key in out:
                    raise DecodeError(f"malformed CBOR: duplicate map key {key!r}")
                out[key] = self.item(depth + 1)
            return out
        if major == 4:
            self._nest(depth)
            count = self._argument(info)
            if count > self.end - self.pos:
                raise DecodeError(f"truncated CBOR: an array of {count} items cannot fit")
            return [self.item(depth + 1) for _ in range(count)]
        if major == 1:
            return -1 - self._argument(info)
        if major == 6:
            self._nest(depth)
            number = self._argument(info)
            if number in _REFUSED:
                raise DecodeError(f"CBOR tag {number} is not part of the splitmq wire format")
            return Tag(number, self.item(depth + 1))
        return self._simple(info)

    def _simple(self, info: int) -> Any:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 31:
            raise DecodeError("malformed CBOR: a break byte outside an indefinite-length item")
        if 28 <= info <= 30:
            raise DecodeError(f"malformed CBOR: reserved additional information {info}")
        float_format = _FLOATS.get(info)
        if float_format is None:
            return self._unassigned(info)
        unpack, size = float_format
        self._need(size)
        value = unpack(self.buf, self.pos)[0]
        self.pos += size
        return value

    def _unassigned(self, info: int) -> Any:
        """A simple value splitmq never writes, as cbor2's decoder returns it (so both
        paths read the same message the same way; the schema refuses it wherever a
        field holds it): ``undefined``, or a :class:`cbor2.CBORSimpleValue`."""
        if info == 23:
            return cbor2.undefined
        if info == 24:
            self._need(1)
            value = self.buf[self.pos]
            self.pos += 1
            if value < 32:  # RFC 8949 3.3: these have a one-byte form only
                raise DecodeError(f"malformed CBOR: simple value {value} in two bytes")
            return cbor2.CBORSimpleValue(value)
        return cbor2.CBORSimpleValue(info)
