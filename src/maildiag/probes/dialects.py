"""The dialect of each service: how it greets, lists capabilities and upgrades to TLS."""

from __future__ import annotations

from maildiag.models import Service
from maildiag.probes.base import Dialect
from maildiag.probes.imap import Imap
from maildiag.probes.pop3 import Pop3
from maildiag.probes.smtp import Smtp


def make_dialect(service: Service) -> Dialect:
    if service is Service.SMTP:
        return Smtp()
    return Imap() if service is Service.IMAP else Pop3()
