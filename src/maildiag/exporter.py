"""``maildiag exporter``: the checks of a targets file served to Prometheus, one per scrape.

Prometheus schedules the probes (as with blackbox_exporter), the exporter holds no state
between them::

    GET /probe?target=NAME                 the check of the target named NAME in the file (its
                                           ``name``, else its address), with its options
    GET /probe?target=HOST[:PORT]&module=M a server probe (no mailbox) with module M's options,
                                           only when the file's ``exporter:`` allows ad-hoc
    GET /metrics                           the exporter's own metrics

A probe answers 200 with the families of ``--format prometheus`` (``maildiag.report.prometheus``)
and ``maildiag_probe_success`` (1 when the check ran and no check failed: warnings count as
success, they have their own series), ``maildiag_probe_duration_seconds`` and
``maildiag_probe_timeout_seconds``. When a probe cannot run, the answer is an HTTP status and
one line of text: 400 for a bad request (a missing or repeated ``target``, an unknown parameter,
an unknown module, a bad ``HOST[:PORT]`` or scrape-timeout header), 403 for an ad-hoc probe when
they are off, 404 for an unknown target or path, 405 for a method other than GET, 503 when
``max_probes`` probes run already (Prometheus counts it as a failed scrape: ``up == 0``), 500 for
a bug in us. Nothing is ever a traceback.

Time: a probe gets the scrape's timeout (Prometheus sends ``X-Prometheus-Scrape-Timeout-Seconds``)
less ``timeout_offset``, at most ``probe_timeout``. The check's own deadline is a tenth (at most
half a second) earlier, so that what did not finish by then is reported as such (``pipeline``);
each network step gets a third of it at most (discovery may take two steps, the checks at least
one more). A probe still running at its limit is answered as failed; it finishes in the
background, and holds its slot until it does.

Shared by every probe: the rule base, the provider database and the TLS contexts (loaded once,
read-only), the cap on probes at once (``max_probes``) and on connections to one host and service
(``per_host``, ``scheduler.HostLimiter``). Passwords come only from the exporter's environment,
through the ``password_env`` a target names; the exporter reads them at start (a missing one
stops it with one line, exit 3). Ad-hoc probes never carry a password (a scrape names their
host). Nothing is logged per request; an internal error is one line with every password of the
file masked in every form ``maildiag.redact`` knows.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from maildiag.config import RunConfig
from maildiag.errors import UsageError
from maildiag.models import Report, Status
from maildiag.net import TlsContexts
from maildiag.options import check_config, is_server
from maildiag.report.prometheus import Family, families, registry

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from maildiag.discovery.providerdb import ProviderDb
    from maildiag.rulebase import RuleBase
    from maildiag.scheduler import HostLimiter

    CheckFn = Callable[..., Report]

SCRAPE_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
PROBE_FAMILIES = {
    "maildiag_probe_success": "1 when the check ran and no check failed (warnings allowed), "
    "else 0.",
    "maildiag_probe_duration_seconds": "Time the probe took, as the exporter measured it.",
    "maildiag_probe_timeout_seconds": "Time the probe was given: the scrape's timeout less the "
    "offset, at most probe_timeout.",
}
_PARAMS = ("target", "module")
# a network step gets at most this share of a probe's time: discovery may take two steps'
# worth (its budget), the checks at least one more (pipeline.check_mailbox)
_STEP_SHARE = 3
# of a probe's time, what is kept for the report after the check's own deadline: the pipeline
# reports what did not finish by then, the diagnosis and the exposition take milliseconds
_RESERVE = 0.5


@dataclass(frozen=True, slots=True)
class Settings:
    """The exporter's own options (``EXPORTER`` in ``maildiag.options``), parsed."""

    allow_adhoc: bool = False
    max_probes: int = 64
    per_host: int = 2
    probe_timeout: float = 30.0
    timeout_offset: float = 0.5


class Refused(Exception):
    """A probe that cannot run: the HTTP status, one line of reason, and the ``reason`` label
    of ``maildiag_exporter_refused_total``."""

    def __init__(self, status: HTTPStatus, text: str, reason: str) -> None:
        super().__init__(text)
        self.status, self.text, self.reason = status, text, reason


class Exporter:
    """The WSGI application: ``exporter.app``. Thread-safe; one per process."""

    def __init__(
        self,
        targets: Mapping[str, RunConfig],
        *,
        modules: Mapping[str, Mapping[str, Any]],
        settings: Settings,
        rules: RuleBase,
        providers: ProviderDb,
        limiter: HostLimiter,
        scrub: Callable[[str], str] = lambda text: text,
        check: CheckFn | None = None,
        now: Callable[[], float] = time.time,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.process_collector import ProcessCollector

        self.targets = targets
        self.modules = modules
        self.settings = settings
        self.rules = rules
        self.providers = providers
        self.limiter = limiter
        self.tls = TlsContexts()  # certifi and each CA file loaded once, not once a probe
        self.scrub = scrub
        self.now = now
        self.log = log or _stderr_line
        if check is None:
            from maildiag.pipeline import check_mailbox

            check = check_mailbox
        self.check = check
        self._slots = threading.BoundedSemaphore(settings.max_probes)

        self.registry = reg = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=reg)  # memory, open files, CPU (where /proc has them)
        self.probes = Counter(
            "maildiag_exporter_probes",
            "Probes answered, by kind (target or adhoc) and result (success or failure).",
            ("kind", "result"),
            registry=reg,
        )
        self.durations = Histogram(
            "maildiag_exporter_probe_duration_seconds",
            "Time probes took, by kind.",
            ("kind",),
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
            registry=reg,
        )
        self.in_flight = Gauge(
            "maildiag_exporter_probes_in_flight",
            "Probes running now (one past its limit runs on until it ends).",
            registry=reg,
        )
        self.refused = Counter(
            "maildiag_exporter_refused",
            "Requests answered without a probe, by reason.",
            ("reason",),
            registry=reg,
        )
        self.errors = Counter(
            "maildiag_exporter_probe_errors",
            "Probes that did not finish: past their limit (deadline) or a bug (internal).",
            ("reason",),
            registry=reg,
        )
        Gauge(
            "maildiag_exporter_max_probes", "Probes allowed at once (max_probes).", registry=reg
        ).set(settings.max_probes)
        Gauge("maildiag_exporter_targets", "Targets in the exporter's file.", registry=reg).set(
            len(targets)
        )
        for reason in ("bad_request", "unknown_target", "adhoc_off", "overload", "not_found"):
            self.refused.labels(reason)  # present at 0 from the start: rate() sees the first
        for reason in ("deadline", "internal"):
            self.errors.labels(reason)

    # -- HTTP -------------------------------------------------------------------------------

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        from prometheus_client import make_wsgi_app

        path = environ.get("PATH_INFO") or "/"
        try:
            if environ.get("REQUEST_METHOD") != "GET":
                raise Refused(HTTPStatus.METHOD_NOT_ALLOWED, "only GET is served", "bad_request")
            if path == "/probe":
                found = self.probe(
                    environ.get("QUERY_STRING", ""), environ.get(SCRAPE_TIMEOUT_HEADER)
                )
                return make_wsgi_app(registry(found))(environ, start_response)  # type: ignore[no-any-return]
            if path == "/metrics":
                return make_wsgi_app(self.registry)(environ, start_response)  # type: ignore[no-any-return]
            if path == "/":
                return _text(
                    start_response, HTTPStatus.OK, "maildiag exporter: /probe?target=NAME /metrics"
                )
            raise Refused(HTTPStatus.NOT_FOUND, f"no such path {_show(path)}", "not_found")
        except Refused as refused:
            self.refused.labels(refused.reason).inc()
            return _text(start_response, refused.status, refused.text)
        except Exception as exc:  # noqa: BLE001 - a bug in us: one line, never a traceback
            self.errors.labels("internal").inc()
            line = self.scrub(f"internal error: {type(exc).__name__}: {exc}")
            self.log(line)
            return _text(start_response, HTTPStatus.INTERNAL_SERVER_ERROR, line)

    # -- a probe ----------------------------------------------------------------------------

    def probe(self, query: str, scrape_timeout: str | None) -> list[Family]:
        """The families answering ``/probe?{query}``; ``Refused`` when it cannot run."""
        started = time.monotonic()
        target, module = _params(query)
        if module is None:
            kind = "target"
            config = self.targets.get(target)
            if config is None:
                hint = " (a server probe needs &module=NAME)" if self.settings.allow_adhoc else ""
                raise Refused(
                    HTTPStatus.NOT_FOUND, f"unknown target {_show(target)}{hint}", "unknown_target"
                )
        else:
            kind = "adhoc"
            config = self.adhoc(target, module)
        limit = self.limit(scrape_timeout)
        if not self._slots.acquire(blocking=False):
            raise Refused(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"{self.settings.max_probes} probes are running already (max_probes)",
                "overload",
            )
        run = limit - min(_RESERVE, limit * 0.1)  # the check's own deadline, then the answer
        config = dataclasses.replace(
            config, timeout=min(config.timeout, run / _STEP_SHARE), run_limit=run
        )
        report = self._run(config, limit)
        if report is not None and kind == "target":  # its series carry the target's name
            report = dataclasses.replace(report, name=target)
        elapsed = time.monotonic() - started
        success = report is not None and report.status is not Status.FAIL
        self.probes.labels(kind, "success" if success else "failure").inc()
        self.durations.labels(kind).observe(elapsed)
        values = {
            "maildiag_probe_success": 1.0 if success else 0.0,
            "maildiag_probe_duration_seconds": elapsed,
            "maildiag_probe_timeout_seconds": limit,
        }
        probe = [Family(name, text, {(): values[name]}) for name, text in PROBE_FAMILIES.items()]
        return probe + (families(report, now=self.now) if report is not None else [])

    def _run(self, config: RunConfig, limit: float) -> Report | None:
        """The check in a thread of its own, waited for until ``limit``; None when it did not
        end by then (it ends in the background and frees its slot then)."""
        box: dict[str, Any] = {}
        done = threading.Event()
        self.in_flight.inc()

        def work() -> None:
            try:
                box["report"] = self.check(
                    config,
                    rules=self.rules,
                    limiter=self.limiter,
                    providers=self.providers,
                    tls=self.tls,
                )
            except BaseException as exc:  # noqa: BLE001 - answered below, the thread ends quietly
                box["error"] = exc
            finally:
                self.in_flight.dec()
                self._slots.release()
                done.set()

        threading.Thread(target=work, name="maildiag-probe", daemon=True).start()
        if not done.wait(limit):
            self.errors.labels("deadline").inc()
            return None
        if "error" in box:
            raise box["error"]
        report: Report = box["report"]
        return report

    def limit(self, scrape_timeout: str | None) -> float:
        """Seconds this probe may take: the scrape's timeout less the offset, capped."""
        cap = self.settings.probe_timeout
        if scrape_timeout is None:
            return cap
        try:
            seconds = float(scrape_timeout)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise Refused(
                HTTPStatus.BAD_REQUEST,
                f"X-Prometheus-Scrape-Timeout-Seconds {_show(scrape_timeout)} is not a number of "
                "seconds",
                "bad_request",
            )
        left = seconds - self.settings.timeout_offset
        if left <= 0:
            raise Refused(
                HTTPStatus.BAD_REQUEST,
                f"the scrape timeout ({seconds:g} s) leaves no time after timeout_offset "
                f"({self.settings.timeout_offset:g} s)",
                "bad_request",
            )
        return min(cap, left)

    def adhoc(self, target: str, module: str) -> RunConfig:
        """The configuration of a server probe of ``target`` (``HOST[:PORT]``) with ``module``."""
        if not self.settings.allow_adhoc:
            raise Refused(
                HTTPStatus.FORBIDDEN,
                "ad-hoc probes are off (allow_adhoc in the file's exporter section)",
                "adhoc_off",
            )
        values = self.modules.get(module)
        if values is None:
            known = ", ".join(sorted(self.modules)) or "none"
            raise Refused(
                HTTPStatus.BAD_REQUEST,
                f"unknown module {_show(module)} (modules: {known})",
                "bad_request",
            )
        try:
            return server_config(target, values)
        except (UsageError, ValueError) as exc:
            raise Refused(
                HTTPStatus.BAD_REQUEST, f"target {_show(target)}: {exc}", "bad_request"
            ) from exc


def server_config(target: str, values: Mapping[str, Any]) -> RunConfig:
    """A server probe: ``target`` checked without a mailbox exactly as ``maildiag check
    HOST[:PORT][/MODE]`` checks it (``options.server_targets``), with the module's options and
    no password. ``UsageError`` says what is wrong."""
    if not is_server(target):
        raise UsageError("a server probe names a server HOST[:PORT][/MODE], not an address")
    return check_config({**values, "address": target}, password=None)


def _params(query: str) -> tuple[str, str | None]:
    try:
        params = parse_qs(query, keep_blank_values=True, max_num_fields=len(_PARAMS) + 1)
    except ValueError as exc:
        raise Refused(HTTPStatus.BAD_REQUEST, "too many parameters", "bad_request") from exc
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise Refused(
            HTTPStatus.BAD_REQUEST,
            f"unknown parameter {_show(unknown[0])} (use target= and module=)",
            "bad_request",
        )
    for name, given in params.items():
        if len(given) > 1:
            raise Refused(HTTPStatus.BAD_REQUEST, f"'{name}' given twice", "bad_request")
    target = params.get("target", [""])[0].strip()
    if not target:
        raise Refused(HTTPStatus.BAD_REQUEST, "no target: /probe?target=NAME", "bad_request")
    module = params.get("module", [None])[0]
    return target, module.strip() if module is not None else None


def _text(start_response: StartResponse, status: HTTPStatus, line: str) -> list[bytes]:
    body = (" ".join(line.split()) + "\n").encode("utf-8")
    start_response(
        f"{status.value} {status.phrase}",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _show(text: str, limit: int = 80) -> str:
    """A value from the request, quoted for one line: escaped, and cut when long."""
    from maildiag.terminal import printable

    shown = printable(text if len(text) <= limit else text[: limit - 3] + "...")
    return f"'{shown}'"


# -- the HTTP server --------------------------------------------------------------------------


class _Handler(WSGIRequestHandler):
    """wsgiref's request handler, silent (no access log: a query names targets, and a log line
    per scrape is noise at a thousand targets) and with a socket timeout, so a client that
    connects and says nothing holds a thread for ``timeout`` seconds at most."""

    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


class _Server(ThreadingMixIn, WSGIServer):
    """One daemon thread per request (a probe blocks on the network), as prometheus_client's
    own ``ThreadingWSGIServer``; errors outside the application are one line, not a traceback."""

    daemon_threads = True
    # socketserver listens with a backlog of 5: Prometheus opening more connections at once than
    # that would have its SYNs dropped, and each retried a second later
    request_queue_size = 1024
    log: Callable[[str], None] = staticmethod(lambda line: _stderr_line(line))

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            self.log(f"request from {client_address[0]}: {type(exc).__name__}: {exc}")


def make_server(exporter: Exporter, host: str, port: int) -> WSGIServer:
    """A threaded HTTP server of ``exporter.app`` bound to ``host:port`` (IPv4 or IPv6; port 0:
    a free one, see ``server_address``); ``OSError`` when it cannot bind. Start it with
    ``serve_forever()``, stop it with ``shutdown()`` and ``server_close()``."""
    import socket

    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family = infos[0][0]
    server_class = type("ExporterServer", (_Server,), {"address_family": family})
    server: WSGIServer = server_class((infos[0][4][0], port), _Handler)
    server.set_app(exporter.app)
    return server


def _stderr_line(line: str) -> None:
    try:
        sys.stderr.write(f"maildiag: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
