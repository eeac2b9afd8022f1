"""A real DNS server on loopback for tests, built on dnspython's message API.

    with DnsServer({"example.test": {"MX": ["10 mx.example.test."]},
                    "mx.example.test": {"A": ["127.0.0.1"]}}) as server:
        dns = Dns(server.address, timeout=2)      # "127.0.0.1:<port>"

Zone data: ``{name: {rdtype: [rdata text, ...]}}``. A name in the zone without the asked type
answers NOERROR with no records (NODATA); a name not in the zone answers NXDOMAIN; names listed in
``servfail`` answer SERVFAIL; with ``silent=True`` every query is read and dropped (a resolver
that never answers). UDP and TCP listen on the same port (dnspython retries truncated answers
over TCP). ``queries`` records (name, rdtype) of each question, for asserting what was asked.

``SilentResolver`` is the bare UDP variant: a socket that reads and drops.

Pytest fixtures (import them into a test module: ``from dnsserver import dns_zone``):
``dns_zone(zone)`` starts a server and stops it at the end of the test.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

Zone = Mapping[str, Mapping[str, Sequence[str]]]


class DnsServer:
    def __init__(
        self,
        zone: Zone,
        *,
        servfail: Sequence[str] = (),
        silent: bool = False,
        ttl: int = 60,
    ) -> None:
        self.zone = {
            _norm(n): {t.upper(): list(v) for t, v in types.items()} for n, types in zone.items()
        }
        self.servfail = {_norm(n) for n in servfail}
        self.silent = silent
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._udp: socketserver.UDPServer | None = None
        self._tcp: socketserver.TCPServer | None = None
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException | None] = []  # handler errors (see _record_error)
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- answering ---------------------------------------------------------------------

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - garbage in: no answer, like a real server
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = _norm(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, rdtype))
        if self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.zone:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            rdatas = self.zone[name].get(rdtype, [])
            if rdatas:
                response.answer.append(
                    dns.rrset.from_text(question.name, self.ttl, dns.rdataclass.IN, rdtype, *rdatas)
                )
        return response.to_wire()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> DnsServer:
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply is not None:
                    if len(reply) > 512:  # classic UDP limit: truncate, the client retries on TCP
                        msg = dns.message.from_wire(reply)
                        msg.answer.clear()
                        msg.flags |= dns.flags.TC
                        reply = msg.to_wire()
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                with contextlib.suppress(OSError):
                    while True:
                        head = _recv_exact(self.request, 2)
                        if head is None:
                            return
                        (length,) = struct.unpack("!H", head)
                        body = _recv_exact(self.request, length)
                        if body is None:
                            return
                        reply = server.answer(body)
                        if reply is None:
                            continue
                        self.request.sendall(struct.pack("!H", len(reply)) + reply)

        for _ in range(20):  # find a port free for both UDP and TCP
            udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            port = udp.server_address[1]
            try:
                tcp = socketserver.ThreadingTCPServer(
                    ("127.0.0.1", port), Tcp, bind_and_activate=False
                )
                tcp.allow_reuse_address = True
                tcp.server_bind()
                tcp.server_activate()
            except OSError:
                udp.server_close()
                continue
            break
        else:  # pragma: no cover
            raise RuntimeError("no free port for the test DNS server")
        udp.daemon_threads = tcp.daemon_threads = True
        # A client that gave up (a test's tiny timeout) makes a late reply fail: keep the error
        # for a test to look at instead of printing a traceback into the test output.
        for srv in (udp, tcp):
            srv.handle_error = self._record_error  # type: ignore[method-assign]
        self._udp, self._tcp, self.port = udp, tcp, port
        for srv in (udp, tcp):
            thread = threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _record_error(self, request: object, client_address: object) -> None:
        import sys

        self.errors.append(sys.exc_info()[1])

    def stop(self) -> None:
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentResolver:
    """A UDP socket on 127.0.0.1 that reads every query and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recvfrom(4096)
                self.received += 1
            except OSError:
                continue

    def __enter__(self) -> SilentResolver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _norm(name: str) -> str:
    return dns.name.from_text(name).to_text(omit_final_dot=True).lower()


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


@pytest.fixture
def dns_zone() -> Iterator[Callable[..., DnsServer]]:
    """Factory fixture: ``server = dns_zone({...}, servfail=[...])``; stopped after the test."""
    started: list[DnsServer] = []

    def make(zone: Zone, **kwargs: object) -> DnsServer:
        server = DnsServer(zone, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
