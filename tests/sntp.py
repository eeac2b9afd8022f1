"""A loopback SNTP peer (RFC 4330) for the clock tests: a UDP server on 127.0.0.1 port 0.

It answers each request with its own clock shifted by ``shift`` seconds, so "the reference clock
is 3 days ahead" is one argument. The other arguments make it misbehave the ways a real network
can: never answer (UDP 123 filtered), answer as a client, a kiss-o'-death (stratum 0), an
unsynchronised server (stratum 16), a zero transmit timestamp, or a reply that does not echo our
transmit timestamp (a stale or spoofed packet).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

NTP_EPOCH = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_bytes(unix: float) -> bytes:
    seconds = int(unix) + NTP_EPOCH
    fraction = int((unix - int(unix)) * 2**32)
    return struct.pack("!II", seconds & 0xFFFFFFFF, fraction & 0xFFFFFFFF)


class SntpPeer:
    def __init__(
        self,
        *,
        shift: float = 0.0,
        silent: bool = False,
        mode: int = 4,
        stratum: int = 2,
        leap: int = 0,
        echo: bool = True,
        zero_transmit: bool = False,
        kiss: bytes = b"RATE",
        delay: float = 0.0,
    ) -> None:
        self.shift = shift
        self.silent = silent
        self.mode = mode
        self.stratum = stratum
        self.leap = leap
        self.echo = echo
        self.zero_transmit = zero_transmit
        self.kiss = kiss
        self.delay = delay
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            received = time.time() + self.shift
            self.requests.append(data)
            if self.silent or len(data) < 48:
                continue
            if self.delay:
                time.sleep(self.delay)
            originate = data[40:48] if self.echo else ntp_bytes(received - 1000)
            ref_id = self.kiss if self.stratum == 0 else b"LOCL"
            transmit = b"\0" * 8 if self.zero_transmit else ntp_bytes(time.time() + self.shift)
            first = (self.leap << 6) | (4 << 3) | self.mode
            reply = (
                struct.pack("!BBbbII", first, self.stratum, 4, -20, 0, 0)
                + ref_id
                + ntp_bytes(received - 5)
                + originate
                + ntp_bytes(received)
                + transmit
            )
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SntpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
