"""The address a phone reaches us by, and its QR code (terminal and SVG).

A phone on the same network cannot reach ``127.0.0.1``: the join URL names this
machine's LAN address, the one its default route leaves by (found by connecting a UDP
socket, which sends nothing), unless the server listens on one address only.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket

import segno

_PROBE = ("192.0.2.1", 9)
"""TEST-NET-1 (RFC 5737): never routed, only used to ask the kernel for a route."""
_ANY = ("0.0.0.0", "::", "")


def lan_address() -> str | None:
    """This machine's address on its default route, or None when it has none but loopback."""
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe,
    ):
        probe.connect(_PROBE)
        address = str(probe.getsockname()[0])
        if not ipaddress.ip_address(address).is_loopback and address != "0.0.0.0":
            return address
    return None


def public_host(bind_host: str) -> str:
    """The host a phone should use for a server listening on ``bind_host``."""
    if bind_host in _ANY:
        return lan_address() or "127.0.0.1"
    return bind_host


def join_url(bind_host: str, port: int, *, tls: bool, path: str = "/agent.html") -> str:
    host = public_host(bind_host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}{path}"


def terminal_qr(url: str) -> str:
    """``url`` as a QR code drawn with Unicode half blocks (two rows a line)."""
    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def svg_qr(url: str, scale: int = 6) -> str:
    """``url`` as a standalone SVG document."""
    out = io.BytesIO()
    segno.make(url, error="m").save(out, kind="svg", scale=scale, xmldecl=False, title=url)
    return out.getvalue().decode()
