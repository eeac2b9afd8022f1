"""Run ``maildiag`` in this process with a wall-time ledger of where every thread's time goes.

    python bench/trace_check.py timeline OUT.json -- check ADDRESS ...
    python bench/trace_check.py cprofile OUT.pstats -- check ADDRESS ...
    python bench/trace_check.py rss OUT.json -- check ADDRESS ...

``timeline`` wraps a fixed list of library functions (imports, TCP connect, TLS handshake, reads,
CA loading, x509 parsing, DNS, sleeps, thread start and waits, and maildiag's rule base, provider
database, discovery, diagnosis and rendering) as their modules load, and books each thread's wall
time to the innermost one running: exclusive times that add up to the thread's life, plus each
category's inclusive time. It writes JSON for bench/profile_check.py. The wrappers cost about a
microsecond a call. ``cprofile`` runs a cProfile in every thread and writes the merged stats.
``rss`` imports what the check path imports, one group at a time, reading VmRSS after each, then
runs the check and reads the peak (VmHWM): the memory each group adds, in the order given.

This file imports nothing before maildiag but ``sys``, ``time`` and ``_thread``, so the import
ledger is maildiag's own; bench/profile_check.py drives it and prints the tables.
"""

from __future__ import annotations

import sys
import time

WALL_START = time.time()
PERF_START = time.perf_counter()

import _thread  # noqa: E402

# category -> [(module, "Class.attr" or "attr")]; applied when the module finishes loading
HOOKS: dict[str, list[tuple[str, str]]] = {
    "tcp connect": [("socket", "socket.connect"), ("socket", "create_connection")],
    "tls handshake": [("ssl", "SSLSocket.do_handshake")],
    # SSLContext.load_verify_locations: booked by file, see CA_FILE_CATEGORIES
    "CA load: the system trust store (ssl.create_default_context)": [
        ("ssl", "SSLContext.load_default_certs"),
    ],
    "read (waiting for the server)": [
        ("socket", "socket.recv"),
        ("socket", "socket.recv_into"),
        ("ssl", "SSLSocket.recv"),
        ("ssl", "SSLSocket.recv_into"),
        ("ssl", "SSLSocket.read"),
    ],
    "send": [("socket", "socket.sendall"), ("ssl", "SSLSocket.sendall")],
    "x509 parsing (cryptography)": [
        ("cryptography.x509", "load_der_x509_certificate"),
        ("cryptography.x509", "load_pem_x509_certificate"),
        ("cryptography.x509", "load_pem_x509_certificates"),
    ],
    "dns": [
        ("dns.resolver", "Resolver.__init__"),
        ("dns.resolver", "Resolver.resolve"),
        ("dns.query", "udp"),
        ("dns.query", "tcp"),
        ("socket", "getaddrinfo"),
    ],
    "sleep": [("time", "sleep")],
    "select": [("select", "select")],
    "thread start": [("threading", "Thread.start")],
    "wait: join / queue / event": [
        ("threading", "Thread.join"),
        ("threading", "Event.wait"),
        ("threading", "Condition.wait"),
        ("queue", "Queue.get"),
    ],
    "yaml parse": [("yaml", "load"), ("yaml", "safe_load"), ("yaml", "load_all")],
    "dataclass creation": [("dataclasses", "_process_class")],
    "enum class creation": [("enum", "EnumType.__new__")],
    "regex compile": [("re", "_compile")],
    "maildiag: rule base load": [("maildiag.rulebase", "RuleBase.load")],
    "maildiag: provider database load": [("maildiag.discovery.providers", "load_providers")],
    "maildiag: certifi's hashed directory found (or built)": [
        ("maildiag.castore", "hashed_bundle"),
    ],
    "maildiag: discovery": [("maildiag.discovery", "discover")],
    "maildiag: diagnosis": [("maildiag.diagnose", "diagnose")],
    "maildiag: report rendering": [("maildiag.commands.check", "emit")],
}
IMPORT = "import"
MAIN = "other Python work (argument parsing, config, probes, models)"
# booked whole: the wait inside Thread.start for the new thread to run is the start's cost; a
# regex compiled inside an enum or dataclass is that class's cost
OPAQUE = {"thread start", "regex compile"}
CERTIFI = "CA load: certifi's bundle"
# maildiag.castore: the bundle as a hashed directory (CAs read on demand, inside the handshake),
# and the few CAs it leaves out, loaded at once
CERTIFI_DIR = "CA load: certifi's hashed directory (CAs read during the handshake)"
CERTIFI_EAGER = "CA load: certifi's CAs left out of the hashed directory"
CA_OTHER = "CA load: another file (--ca-file)"


class Ledger:
    """Per-thread stacks of open categories; exclusive and inclusive seconds per category."""

    def __init__(self) -> None:
        self.threads: dict[int, dict[str, object]] = {}

    def thread(self) -> dict[str, object]:
        ident = _thread.get_ident()
        t = self.threads.get(ident)
        if t is None:
            t = {"name": "?", "stack": [], "excl": {}, "incl": {}, "calls": {}}
            self.threads[ident] = t
        return t

    def enter(self, cat: str) -> bool:
        """Open ``cat``; False (nothing opened) inside an opaque category."""
        t = self.thread()
        stack: list[list[object]] = t["stack"]  # type: ignore[assignment]
        if stack and stack[-1][0] in OPAQUE:
            return False
        stack.append([cat, time.perf_counter(), 0.0])
        return True

    def leave(self) -> None:
        now = time.perf_counter()
        t = self.thread()
        stack: list[list[object]] = t["stack"]  # type: ignore[assignment]
        cat, start, child = stack.pop()
        dur = now - start  # type: ignore[operator]
        excl: dict[str, float] = t["excl"]  # type: ignore[assignment]
        incl: dict[str, float] = t["incl"]  # type: ignore[assignment]
        calls: dict[str, int] = t["calls"]  # type: ignore[assignment]
        excl[cat] = excl.get(cat, 0.0) + dur - child  # type: ignore[operator,index]
        calls[cat] = calls.get(cat, 0) + 1  # type: ignore[index,call-overload]
        if all(frame[0] != cat for frame in stack):  # outermost of its kind: inclusive
            incl[cat] = incl.get(cat, 0.0) + dur  # type: ignore[call-overload,index]
        if stack:
            stack[-1][2] += dur  # type: ignore[operator]


LEDGER = Ledger()


def _caller_module() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in ("re", "__main__"):
        frame = frame.f_back  # type: ignore[assignment]
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"


# inclusive seconds of some categories, by the module that asked: whose classes, whose regexes
DETAIL_KEYS = {
    "dataclass creation": lambda args: getattr(args[0], "__module__", "?"),
    "enum class creation": lambda args: (
        args[3].get("__module__", "?") if len(args) > 3 and hasattr(args[3], "get") else "?"
    ),
    "regex compile": lambda args: _caller_module(),
}
DETAIL: dict[str, dict[str, list[float]]] = {}  # cat -> module -> [seconds, calls]


def timed(cat: str, fn):  # type: ignore[no-untyped-def]
    key = DETAIL_KEYS.get(cat)

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not LEDGER.enter(cat):
            return fn(*args, **kwargs)
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            LEDGER.leave()
            if key is not None:
                slot = DETAIL.setdefault(cat, {}).setdefault(key(args), [0.0, 0])
                slot[0] += time.perf_counter() - started
                slot[1] += 1

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(fn, "__name__", "wrapped")
    return wrapper


def _patch_load_verify_locations(ssl: object) -> None:
    """Book each CA file to its source: certifi's bundle, or anything else (--ca-file)."""
    ctx = ssl.SSLContext  # type: ignore[attr-defined]
    load = ctx.load_verify_locations

    def traced(self, cafile=None, capath=None, cadata=None):  # type: ignore[no-untyped-def]
        if capath is not None:
            cat = CERTIFI_DIR
        elif cadata is not None:
            cat = CERTIFI_EAGER
        else:
            cat = CERTIFI if "certifi" in str(cafile) else CA_OTHER
        opened = LEDGER.enter(cat)
        try:
            return load(self, cafile, capath, cadata)
        finally:
            if opened:
                LEDGER.leave()

    ctx.load_verify_locations = traced
    APPLIED.append("ssl.SSLContext.load_verify_locations")


def patch(module: object, path: str, cat: str) -> bool:
    owner = module
    *outer, name = path.split(".")
    for part in outer:
        owner = getattr(owner, part, None)  # type: ignore[assignment]
        if owner is None:
            return False
    if isinstance(owner, type):
        raw = next((k.__dict__[name] for k in owner.__mro__ if name in k.__dict__), None)
        if raw is None:
            return False
        if isinstance(raw, classmethod):
            setattr(owner, name, classmethod(timed(cat, raw.__func__)))
        elif isinstance(raw, staticmethod):
            setattr(owner, name, staticmethod(timed(cat, raw.__func__)))
        else:
            setattr(owner, name, timed(cat, getattr(owner, name)))
        return True
    fn = getattr(owner, name, None)
    if fn is None:
        return False
    setattr(owner, name, timed(cat, fn))
    return True


PENDING: dict[str, list[tuple[str, str]]] = {}
APPLIED: list[str] = []
THREAD_LIFE: dict[int, tuple[str, float, float]] = {}


def _apply(name: str) -> None:
    module = sys.modules.get(name)
    for path, cat in PENDING.pop(name, []):
        if module is not None and patch(module, path, cat):
            APPLIED.append(f"{name}.{path}")
    if name == "threading":
        _wrap_thread_run(module)
    if name == "ssl":
        _patch_load_verify_locations(module)


def _wrap_thread_run(threading: object) -> None:
    thread_cls = threading.Thread  # type: ignore[attr-defined]
    run = thread_cls.run

    def traced_run(self):  # type: ignore[no-untyped-def]
        t = LEDGER.thread()
        t["name"] = self.name
        start = time.perf_counter()
        try:
            run(self)
        finally:
            THREAD_LIFE[_thread.get_ident()] = (self.name, start, time.perf_counter())

    thread_cls.run = traced_run


def install_timeline() -> None:
    import importlib._bootstrap as bootstrap

    for cat, hooks in HOOKS.items():
        for module, path in hooks:
            PENDING.setdefault(module, []).append((path, cat))
    PENDING.setdefault("ssl", [])  # for _patch_load_verify_locations
    find_and_load = bootstrap._find_and_load

    def traced_find_and_load(name, import_):  # type: ignore[no-untyped-def]
        opened = LEDGER.enter(IMPORT)
        try:
            return find_and_load(name, import_)
        finally:
            if opened:
                LEDGER.leave()
            if name in PENDING:
                _apply(name)

    bootstrap._find_and_load = traced_find_and_load
    for name in list(PENDING):
        if name in sys.modules:  # loaded at start-up (time; maybe socket, threading)
            _apply(name)


def run_main(argv: list[str]) -> int:
    import io

    from maildiag.__main__ import main

    out = io.StringIO()
    saved = sys.stdout
    sys.stdout = out  # the report is not the subject here; print() to a StringIO is cheap
    try:
        return main(argv)
    finally:
        sys.stdout = saved


def timeline(out_path: str, argv: list[str]) -> None:
    install_timeline()
    LEDGER.thread()["name"] = "MainThread"
    main_start = time.perf_counter()
    LEDGER.enter(MAIN)
    code = run_main(argv)
    LEDGER.leave()
    main_end = time.perf_counter()
    wall_main_end = time.time()
    import json

    threads = []
    for ident, t in LEDGER.threads.items():
        name, start, end = THREAD_LIFE.get(ident, (t["name"], main_start, main_end))
        threads.append(
            {
                "name": t["name"] if ident not in THREAD_LIFE else name,
                "life": end - start,
                "start": start - main_start,
                "excl": t["excl"],
                "incl": t["incl"],
                "calls": t["calls"],
            }
        )
    data = {
        "exit_code": code,
        "wall_start": WALL_START,
        "harness_s": main_start - PERF_START,
        "main_s": main_end - main_start,
        "wall_main_end": wall_main_end,
        "threads": threads,
        "detail": DETAIL,
        "patched": APPLIED,
        "not_patched": sorted(f"{m}.{p}" for m, ps in PENDING.items() for p, _ in ps),
    }
    with open(out_path, "w") as f:
        json.dump(data, f)
        f.write("\n")
    data_written = time.time()
    with open(out_path, "a") as f:
        f.write(json.dumps({"wall_written": data_written}) + "\n")


def cprofile(out_path: str, argv: list[str]) -> None:
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    run = threading.Thread.run

    def profiled_run(self):  # type: ignore[no-untyped-def]
        p = cProfile.Profile()
        profiles.append(p)
        p.enable()
        try:
            run(self)
        finally:
            p.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile()
    main_profile.enable()
    try:
        run_main(argv)
    finally:
        main_profile.disable()
    stats = pstats.Stats(main_profile)
    for p in profiles:
        stats.add(p)
    stats.dump_stats(out_path)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _tls_context_with_certifi() -> None:
    import ssl

    import certifi

    KEEP.append(ssl.create_default_context(cafile=certifi.where()))


def _tls_context_system_store() -> None:
    import ssl

    KEEP.append(ssl.create_default_context())


def _the_rest() -> None:
    """Every module a real run imported (names from ``python -X importtime``, in a file named by
    $TRACE_MODULES_FILE), so what the run itself adds afterwards is data, not code."""
    import importlib
    import os

    path = os.environ.get("TRACE_MODULES_FILE")
    if not path:
        raise RuntimeError("TRACE_MODULES_FILE not set")
    with open(path) as f:
        for name in f.read().split():
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - a platform-only module: not ours to judge
                continue


def _rule_base() -> None:
    from maildiag.rulebase import RuleBase

    KEEP.append(RuleBase.load())


def _provider_db() -> None:
    from maildiag.discovery.providers import load_providers

    KEEP.append(load_providers())


KEEP: list[object] = []  # what a step built stays alive, as it does in a run
RSS_STEPS: list[tuple[str, str | None]] = [
    ("socket, ssl, threading, queue, json (stdlib)", "socket ssl threading queue json"),
    ("one TLS context holding certifi's CA bundle", None),
    ("one TLS context holding the system trust store (ssl.create_default_context)", None),
    ("yaml (LibYAML)", "yaml"),
    ("dns.resolver (dnspython)", "dns.resolver"),
    ("cryptography.x509", "cryptography.x509"),
    (
        "maildiag's check path (cli, options, commands.check, pipeline, probes, discovery, report)",
        "maildiag.cli maildiag.options maildiag.commands.check maildiag.pipeline "
        "maildiag.probes.session maildiag.probes.auth maildiag.probes.clock maildiag.discovery "
        "maildiag.report.nagios",
    ),
    ("every other module a check imports", None),
    ("the rule base, loaded (marshal cache)", None),
    ("the provider database, loaded (marshal cache)", None),
]
RSS_BUILDERS = {
    "one TLS context holding certifi's CA bundle": _tls_context_with_certifi,
    "one TLS context holding the system trust store (ssl.create_default_context)": (
        _tls_context_system_store
    ),
    "every other module a check imports": _the_rest,
    "the rule base, loaded (marshal cache)": _rule_base,
    "the provider database, loaded (marshal cache)": _provider_db,
}


def rss(out_path: str, argv: list[str]) -> None:
    import importlib
    import json

    steps = [{"step": "interpreter and site", "rss_kb": _status_kb("VmRSS")}]
    for name, modules in RSS_STEPS:
        error = None
        try:
            if modules is not None:
                for module in modules.split():
                    importlib.import_module(module)
            else:
                RSS_BUILDERS[name]()
        except Exception as exc:  # noqa: BLE001 - an API moved: say so, measure the rest
            error = f"{type(exc).__name__}: {exc}"
        steps.append({"step": name, "rss_kb": _status_kb("VmRSS"), "error": error})
    code = run_main(argv)
    steps.append({"step": "the whole-mailbox check, run", "rss_kb": _status_kb("VmRSS")})
    data = {"exit_code": code, "steps": steps, "peak_kb": _status_kb("VmHWM")}
    with open(out_path, "w") as f:
        json.dump(data, f)


def alone(out_path: str, modules: list[str]) -> None:
    """RSS added by importing ``modules`` into a bare interpreter (one group per process)."""
    import importlib
    import json

    before = _status_kb("VmRSS")
    for module in modules:
        importlib.import_module(module)
    with open(out_path, "w") as f:
        json.dump({"before_kb": before, "after_kb": _status_kb("VmRSS")}, f)


MODES = {"timeline": timeline, "cprofile": cprofile, "rss": rss, "alone": alone}

if __name__ == "__main__":
    mode, out_path, sep, *rest = sys.argv[1:]
    if sep != "--" or mode not in MODES:
        sys.exit(f"usage: trace_check.py {'|'.join(MODES)} OUT -- MAILDIAG ARGS | MODULES")
    MODES[mode](out_path, rest)
    if mode == "timeline":
        # end as the console entry does (maildiag.__main__.run): flush, no finalization
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
