"""The guard: wraps socket connect/sendto and getaddrinfo to record non-loopback destinations.

Tests never touch an address outside 127.0.0.0/8 or ::1. Nothing is blocked here (a blocked call
would change what the code under test does); every attempt is appended to a log file that the
test session reads at its end, failing the run when the file is not empty.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import traceback

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_local_host(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    name = host.strip("[]").split("%")[0].lower()
    if name in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False  # a name: resolving it means asking a DNS server
    return ip.is_loopback or ip.is_unspecified


def install(log_path: str) -> None:
    def record(what: str, target: object) -> None:
        stack = "".join(traceback.format_stack(limit=8)[:-2])
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"pid {os.getpid()}: {what} {target!r}\n{stack}\n")

    def guarded(method_name: str) -> None:
        original = getattr(socket.socket, method_name)

        def wrapper(self: socket.socket, *args: object, **kw: object) -> object:
            address = args[-1] if method_name == "sendto" else args[0]
            if (
                self.family in (socket.AF_INET, socket.AF_INET6)
                and isinstance(address, tuple)
                and not _is_local_host(address[0])
            ):
                record(method_name, address)
            return original(self, *args, **kw)

        setattr(socket.socket, method_name, wrapper)

    for name in ("connect", "connect_ex", "sendto"):
        guarded(name)
    original_gai = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kw: object) -> object:
        if not _is_local_host(host):
            record("getaddrinfo", host)
        return original_gai(host, *args, **kw)  # type: ignore[arg-type]

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
