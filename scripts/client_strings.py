"""Extract the error strings of mail programs and libraries into tests/data/client_strings.yaml.

    python scripts/client_strings.py \\
        --thunderbird COMM_CENTRAL --thunderbird-l10n THUNDERBIRD_L10N \\
        --nss GECKO_DEV --nss-l10n FIREFOX_L10N --k9 THUNDERBIRD_ANDROID \\
        --evolution EVOLUTION_DATA_SERVER --roundcube ROUNDCUBEMAIL --neomutt NEOMUTT \\
        --python PYTHON_LIB_DIR --nodemailer NODEMAILER --mailkit MAILKIT \\
        --jakarta-mail ANGUS_MAIL --go-imap GO_IMAP --go-smtp GO_SRC_DIR --openssl

Every option names a source tree: a bare git directory (as ``fetch`` leaves it) or a checkout;
any left out keeps its strings from the existing corpus. ``--openssl`` reads the certificate
verification texts from the libcrypto this Python is linked with.

The corpus keeps what people decided by hand, so a re-run on newer snapshots changes texts but
not labels: ``failure`` (does the string report a failure?), ``category`` (the maildiag category
the string means, or ``none`` for a failure that names no cause: "Unknown error") and ``params``
(the values filled into its placeholders, when the defaults would be unrealistic) are kept per
program + key; a Russian string takes its labels from the English one of the same key. New
strings come out unlabelled (``failure: null``), and the test suite refuses unlabelled strings.
Entries with ``manual: true`` (error codes documented on web pages, not in a source tree) are
kept as they are.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "client_strings.yaml"

HEADER = """\
# Error strings of mail programs and mail libraries, in English and Russian, with the maildiag
# category each one means, chosen by hand from what the string says (none: a failure that names no
# cause). Written by scripts/client_strings.py from the upstream localisation and source files
# (see `sources`); labels and `params` (placeholder values) are kept by program + key across
# re-runs. Entries with `manual: true` come from vendors' documentation pages (their URL is the
# source). tests/test_client_strings.py requires every failure to be classified correctly.
"""

# A string worth a look: it talks about a failure or about what the server or the account wants.
INTERESTING = re.compile(
    r"(?i)(fail|error|unable|could ?n[o']t|can ?n[o']t|refus|denied|reject|invalid|expired|"
    r"not (?:yet )?valid|trust|timed? ?out|disconnect|too many|exceed|quota|full\b|blocked|"
    r"disabled|not support|not allowed|require|certificate|password|authenticat|log ?in|"
    r"credential|dropped|lost|closed|unknown host|resolve|STARTTLS|TLS|SSL|secure|relay|"
    r"recipient|sender|size|spam|limit|suspend|locked|unavailable|storage|not taken|aborted|"
    r"not accepted|did not succeed)"
)


# --------------------------------------------------------------------------- source trees


class Tree:
    """Files of a bare git directory (its HEAD) or of a checkout directory."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.bare = (self.path / "objects").is_dir() and (self.path / "HEAD").is_file()

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.path), *args],
            check=True,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
        ).stdout

    @property
    def revision(self) -> str:
        if self.bare:
            return self._git("rev-parse", "HEAD").strip()
        if (self.path / ".git").exists():
            return (
                subprocess.run(
                    ["git", "-C", str(self.path), "rev-parse", "HEAD"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                or "checkout"
            )
        return "directory"

    def read(self, rel: str) -> str | None:
        if self.bare:
            try:
                return self._git("show", f"HEAD:{rel}")
            except subprocess.CalledProcessError:
                return None
        f = self.path / rel
        return f.read_text(encoding="utf-8", errors="replace") if f.is_file() else None

    def files(self, prefix: str) -> list[str]:
        if self.bare:
            out = self._git("ls-tree", "-r", "--name-only", "HEAD", "--", prefix)
            return out.split()
        base = self.path / prefix
        if base.is_file():
            return [prefix]
        return sorted(str(p.relative_to(self.path)) for p in base.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- file formats


def read_properties(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith(("#", "!")):
            continue
        while line.endswith("\\"):
            line = line[:-1] + next(lines, "").lstrip()
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().replace("\\n", "\n")
    return out


def read_ftl(text: str) -> dict[str, str]:
    """Fluent messages and their attributes (``key.attr``); multi-line values joined."""
    out: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z][\w-]*)\s*=\s*(.*)$", line)
        if m:
            key = m.group(1)
            if m.group(2):
                out[key] = m.group(2)
            continue
        m = re.match(r"\s+\.([\w-]+)\s*=\s*(.*)$", line)
        if m and key:
            out[f"{key}.{m.group(1)}"] = m.group(2)
            continue
        if key and line.startswith(" ") and key in out:
            out[key] += " " + line.strip()
    return out


def read_android(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return out
    for el in root.iter("string"):
        name = el.get("name")
        if not name or el.get("translatable") == "false":
            continue
        value = "".join(el.itertext()).strip().strip('"')
        value = value.replace("\\'", "'").replace('\\"', '"').replace("\\n", "\n")
        out[name] = value
    return out


@dataclass
class PoEntry:
    msgid: str
    msgstr: str
    refs: list[str]


def read_po(text: str) -> list[PoEntry]:
    entries = []
    for block in text.split("\n\n"):
        if "#~" in block or "#, fuzzy" in block:
            continue
        refs = [
            r.rsplit(":", 1)[0]
            for line in block.splitlines()
            if line.startswith("#:")
            for r in line[2:].split()
        ]
        mid = re.search(r'^msgid ((?:".*"\n?)+)', block, re.M)
        mstr = re.search(r'^msgstr ((?:".*"\n?)+)', block, re.M)
        if not mid or not mstr:
            continue

        def join(s: str) -> str:
            parts = re.findall(r'"(.*)"', s)
            return "".join(parts).replace('\\"', '"').replace("\\n", "\n").replace("\\t", " ")

        entries.append(PoEntry(join(mid.group(1)), join(mstr.group(1)), refs))
    return entries


def read_roundcube(text: str) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"\$messages\['(\w+)'\]\s*=\s*(['\"])(.*?)(?<!\\)\2;", text):
        out[m.group(1)] = m.group(3).replace("\\'", "'").replace('\\"', '"')
    return out


# --------------------------------------------------------------------------- placeholders

PLACEHOLDER = re.compile(
    r"%(?:\d\$)?[sSd@]|%\d+\$[sSd@]|%z?u|%l[ud]|\{\s*\$[\w-]+\s*\}|\{\d+\}|\$[a-z]+\b|%\(\w+\)s"
)
SAMPLE = {
    "en": {
        "host": "mail.example.com",
        "address": "ivan@example.com",
        "number": "3",
        "file": "report.pdf",
        "size": "25 MB",
        "folder": "Sent",
    },
    "ru": {
        "host": "mail.example.ru",
        "address": "ivan@example.ru",
        "number": "3",
        "file": "report.pdf",
        "size": "25 МБ",
        "folder": "Отправленные",
    },
}
# The word before a placeholder says what it stands for.
_HINTS = [
    (
        "address",
        re.compile(
            r"(?i)(account|user|login|address|sender|recipient|password for|"
            r"учётн|учетн|пользовател|адрес|отправител|получател)\W{0,3}\S{0,20}\W{0,3}$"
        ),
    ),
    ("file", re.compile(r"(?i)(file|attaching|файл\w*)\W{0,3}$")),
    ("size", re.compile(r"(?i)(size|размер\w*)\W{0,12}$|of size\W{0,3}$")),
    ("folder", re.compile(r"(?i)(folder|папк\w*)\W{0,3}$")),
]


def fill(text: str, lang: str, params: list[str] | None) -> str:
    """The text with each placeholder replaced: by ``params`` in order when given, else by a
    sample host, address or number chosen from the words before it."""
    values = list(params or [])
    sample = SAMPLE[lang]

    def repl(m: re.Match[str]) -> str:
        if values:
            return values.pop(0)
        token = m.group()
        if token.endswith("d") or token in ("%u", "%lu", "%ld"):
            return sample["number"]
        if "not-before" in token or "not-after" in token:
            return "2026-01-31"
        if "hostname" in token:
            return sample["host"]
        before = text[max(0, m.start() - 40) : m.start()]
        for kind, hint in _HINTS:
            if hint.search(before):
                return sample[kind]
        return sample["host"]

    return PLACEHOLDER.sub(repl, text)


# --------------------------------------------------------------------------- extractors


@dataclass
class Raw:
    program: str
    language: str
    source: str
    key: str
    text: str  # with placeholders


Extractor = Callable[[Tree, Tree | None], Iterator[Raw]]

TB_FILES = [
    ("chrome/messenger/imapMsgs.properties", "properties"),
    ("chrome/messenger/localMsgs.properties", "properties"),
    ("chrome/messenger/messengercompose/composeMsgs.properties", "properties"),
    ("messenger/certError.ftl", "ftl"),
]


def _pairs(
    en: dict[str, str], ru: dict[str, str], keep: Callable[[str, str], bool]
) -> Iterator[tuple[str, str, str | None]]:
    for key, value in en.items():
        if value and keep(key, value):
            yield key, value, ru.get(key)


def thunderbird(en_tree: Tree, ru_tree: Tree | None) -> Iterator[Raw]:
    for rel, kind in TB_FILES:
        reader = read_properties if kind == "properties" else read_ftl
        en_path = f"mail/locales/en-US/{rel}"
        ru_path = f"ru/mail/{rel}"
        en = reader(en_tree.read(en_path) or "")
        ru = reader((ru_tree.read(ru_path) if ru_tree else None) or "")

        def keep(key: str, value: str) -> bool:
            if "Status" in key or "AccessKey" in key or key.startswith("imapAcl"):
                return False
            return bool(INTERESTING.search(value)) or "Error" in key or "error" in key

        for key, en_text, ru_text in _pairs(en, ru, keep):
            yield Raw("thunderbird", "en", en_path, key, en_text)
            if ru_text:
                yield Raw("thunderbird", "ru", ru_path, key, ru_text)


NSS_KEYS = re.compile(r"^(SSL_ERROR_|SEC_ERROR_|MOZILLA_PKIX_ERROR_)")


def nss(en_tree: Tree, ru_tree: Tree | None) -> Iterator[Raw]:
    en_path = "security/manager/locales/en-US/chrome/pipnss/nsserrors.properties"
    ru_path = "ru/security/manager/chrome/pipnss/nsserrors.properties"
    en = read_properties(en_tree.read(en_path) or "")
    ru = read_properties((ru_tree.read(ru_path) if ru_tree else None) or "")
    wanted = re.compile(
        r"CERT|ISSUER|CYPHER|VERSION|HANDSHAKE_FAILURE|RECORD_TOO_LONG|UNRECOGNIZED_NAME|SIGNATURE"
    )
    for key, en_text, ru_text in _pairs(
        en, ru, lambda k, v: bool(NSS_KEYS.match(k) and wanted.search(k))
    ):
        yield Raw("thunderbird-nss", "en", en_path, key, en_text)
        if ru_text:
            yield Raw("thunderbird-nss", "ru", ru_path, key, ru_text)


K9_FILES = [
    "feature/account/server/validation/src/main/res/values/strings.xml",
    "feature/account/server/certificate/src/main/res/values/strings.xml",
    "feature/account/setup/src/main/res/values/strings.xml",
    "feature/notification/api/src/commonMain/composeResources/values/strings.xml",
    "legacy/ui/legacy/src/main/res/values/strings.xml",
]
K9_KEYS = re.compile(r"(?i)(error|fail|certificate|authentication|network)")


def k9(tree: Tree, _unused: Tree | None) -> Iterator[Raw]:
    for en_path in K9_FILES:
        ru_path = en_path.replace("/values/", "/values-ru/")
        en = read_android(tree.read(en_path) or "")
        ru = read_android(tree.read(ru_path) or "")

        def keep(key: str, value: str) -> bool:
            if any(
                w in key for w in ("crypto", "export", "import", "changelog", "camera", "notify")
            ):
                return False
            return bool(K9_KEYS.search(key)) and bool(INTERESTING.search(value))

        for key, en_text, ru_text in _pairs(en, ru, keep):
            yield Raw("k9", "en", en_path, key, en_text)
            if ru_text:
                yield Raw("k9", "ru", ru_path, key, ru_text)


def _po_program(
    program: str, po_path: str, ref_prefixes: tuple[str, ...]
) -> Callable[[Tree, Tree | None], Iterator[Raw]]:
    def extract(tree: Tree, _unused: Tree | None) -> Iterator[Raw]:
        for e in read_po(tree.read(po_path) or ""):
            if not e.msgid or not any(r.startswith(ref_prefixes) for r in e.refs):
                continue
            if not INTERESTING.search(e.msgid) or len(e.msgid) < 12:
                continue
            key = e.msgid[:80]
            yield Raw(program, "en", po_path + " (msgid)", key, e.msgid)
            if e.msgstr:
                yield Raw(program, "ru", po_path, key, e.msgstr)

    return extract


evolution = _po_program(
    "evolution",
    "po/ru.po",
    (
        "src/camel/providers/smtp/",
        "src/camel/providers/imapx/",
        "src/camel/providers/pop3/",
        "src/camel/camel-network-service",
        "src/camel/camel-sasl",
        "src/camel/camel-tcp-stream",
    ),
)
neomutt = _po_program(
    "neomutt", "po/ru.po", ("conn/", "imap/auth", "imap/imap.c", "pop/", "send/smtp.c")
)


def roundcube(tree: Tree, _unused: Tree | None) -> Iterator[Raw]:
    en_path = "program/localization/en_US/messages.inc"
    ru_path = "program/localization/ru_RU/messages.inc"
    en = read_roundcube(tree.read(en_path) or "")
    ru = read_roundcube(tree.read(ru_path) or "")
    wanted = re.compile(r"(?i)(error|fail|invalid|locked|quota|timed|denied|smtp|imap|conn)")

    def keep(key: str, value: str) -> bool:
        return bool(wanted.search(key)) and bool(INTERESTING.search(value))

    for key, en_text, ru_text in _pairs(en, ru, keep):
        yield Raw("roundcube", "en", en_path, key, en_text)
        if ru_text:
            yield Raw("roundcube", "ru", ru_path, key, ru_text)


def _code_program(
    program: str, files: list[str], literal: re.Pattern[str]
) -> Callable[[Tree, Tree | None], Iterator[Raw]]:
    """String literals of exception messages in a library's source files."""

    def extract(tree: Tree, _unused: Tree | None) -> Iterator[Raw]:
        seen = set()
        for prefix in files:
            for rel in tree.files(prefix):
                text = tree.read(rel) or ""
                for m in literal.finditer(text):
                    msg = m.group("msg").replace("\\'", "'").replace('\\"', '"').strip()
                    if len(msg) < 12 or msg in seen or not INTERESTING.search(msg):
                        continue
                    seen.add(msg)
                    yield Raw(program, "en", rel, msg[:80], msg)

    return extract


python_stdlib = _code_program(
    "python",
    ["smtplib.py", "imaplib.py", "poplib.py", "ssl.py"],
    re.compile(
        r"(?:raise \w+|Error|Exception)\(\s*(?:\d+,\s*)?[rbf]?(['\"])(?P<msg>[^'\"\n]{8,200})\1"
    ),
)
nodemailer = _code_program(
    "nodemailer",
    ["lib/smtp-connection/index.js", "lib/smtp-transport/index.js", "lib/smtp-pool/index.js"],
    re.compile(r"(?:_formatError\(|new Error\()\s*(['\"`])(?P<msg>[^'\"`\n]{8,200})\1"),
)
mailkit = _code_program(
    "mailkit",
    [
        "MailKit/Net/Smtp/",
        "MailKit/Net/Pop3/",
        "MailKit/Net/Imap/ImapEngine.cs",
        "MailKit/Security/",
    ],
    re.compile(r"Exception \(\s*\"(?P<msg>[^\"\n]{8,200})\""),
)
jakarta_mail = _code_program(
    "jakarta-mail",
    [
        "providers/smtp/src/main/java/org/eclipse/angus/mail/smtp/SMTPTransport.java",
        "providers/imap/src/main/java/org/eclipse/angus/mail/imap/IMAPStore.java",
        "providers/pop3/src/main/java/org/eclipse/angus/mail/pop3/POP3Store.java",
        "core/src/main/java/org/eclipse/angus/mail/util/SocketFetcher.java",
    ],
    re.compile(r"Exception\(\s*\"(?P<msg>[^\"\n]{8,200})\""),
)
go_imap = _code_program(
    "go-imap",
    ["imapclient/", "response.go", "internal/imapwire/"],
    re.compile(r"(?:errors\.New|fmt\.Errorf)\(\"(?P<msg>[^\"\n]{8,200})\""),
)
go_smtp = _code_program(
    "go-net-smtp",
    ["net/smtp/", "crypto/x509/verify.go"],
    re.compile(r"(?:errors\.New|fmt\.Errorf|return \")\(?\"?(?P<msg>[a-z][^\"\n]{8,200})\""),
)


# X509_V_ERR_* codes a mail client meets (the rest are about CRLs, policies, Suite B ...):
# unable to get issuer certificate, signature failure, not yet valid, expired, self-signed,
# self-signed in chain, unable to get local issuer, unable to verify the first certificate,
# revoked, not trusted, hostname mismatch, key too weak, CA digest too weak.
OPENSSL_CODES = (2, 7, 9, 10, 18, 19, 20, 21, 23, 27, 62, 66, 68)


def openssl_verify_strings() -> Iterator[Raw]:
    """X509_verify_cert_error_string() of every verification error code, as Python's ssl,
    Node, PHP and Ruby print it after 'certificate verify failed:'."""
    name = ctypes.util.find_library("crypto")
    if not name:
        return
    lib = ctypes.CDLL(name)
    lib.X509_verify_cert_error_string.restype = ctypes.c_char_p
    lib.X509_verify_cert_error_string.argtypes = [ctypes.c_long]
    lib.OpenSSL_version.restype = ctypes.c_char_p
    version = lib.OpenSSL_version(0).decode()
    for code in OPENSSL_CODES:
        text = lib.X509_verify_cert_error_string(code).decode()
        if text.startswith("Unknown certificate verification error") or text == "unknown":
            continue
        yield Raw(
            "openssl",
            "en",
            f"{version} X509_verify_cert_error_string",
            f"X509_V_ERR {code}",
            f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {text} (_ssl.c:1006)",
        )


# --------------------------------------------------------------------------- corpus


def _identity(e: dict[str, object]) -> tuple[str, str, str]:
    return (str(e["program"]), str(e["language"]), str(e["key"]))


def merge(
    raws: list[Raw], old: list[dict[str, object]], programs: set[str]
) -> list[dict[str, object]]:
    """New entries for ``raws``; labels and params from ``old``; entries of programs not re-read
    (and manual ones) kept as they were."""
    by_id = {_identity(e): e for e in old}
    by_key_en = {(str(e["program"]), str(e["key"])): e for e in old if e["language"] == "en"}
    out: list[dict[str, object]] = []
    seen: set[tuple[str, str, str]] = set()
    for r in raws:
        ident = (r.program, r.language, r.key)
        if ident in seen:
            continue
        seen.add(ident)
        prev = by_id.get(ident) or {}
        labels = prev or by_key_en.get((r.program, r.key)) or {}
        params = prev.get("params")
        entry: dict[str, object] = {
            "program": r.program,
            "language": r.language,
            "source": r.source,
            "key": r.key,
            "text": fill(r.text, r.language, params if isinstance(params, list) else None),
            "failure": labels.get("failure"),
            "category": labels.get("category"),
        }
        if params:
            entry["params"] = params
        out.append(entry)
    for e in old:
        if e.get("manual") or (e["program"] not in programs and _identity(e) not in seen):
            out.append(e)
    return out


PROGRAMS: dict[str, tuple[tuple[str, ...], Extractor]] = {
    "thunderbird": (("thunderbird", "thunderbird_l10n"), thunderbird),
    "thunderbird-nss": (("nss", "nss_l10n"), nss),
    "k9": (("k9",), k9),
    "evolution": (("evolution",), evolution),
    "roundcube": (("roundcube",), roundcube),
    "neomutt": (("neomutt",), neomutt),
    "python": (("python",), python_stdlib),
    "nodemailer": (("nodemailer",), nodemailer),
    "mailkit": (("mailkit",), mailkit),
    "jakarta-mail": (("jakarta_mail",), jakarta_mail),
    "go-imap": (("go_imap",), go_imap),
    "go-net-smtp": (("go_smtp",), go_smtp),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for opts, _ in PROGRAMS.values():
        for opt in opts:
            parser.add_argument("--" + opt.replace("_", "-"), metavar="DIR")
    parser.add_argument("--openssl", action="store_true", help="OpenSSL's verification texts")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    out_path = Path(args.out)
    old_doc = yaml.safe_load(out_path.read_text(encoding="utf-8")) if out_path.exists() else {}
    old_doc = old_doc or {}
    old: list[dict[str, object]] = old_doc.get("strings", [])
    sources: dict[str, str] = dict(old_doc.get("sources", {}))
    raws: list[Raw] = []
    done: set[str] = set()
    for program, (opts, extract) in PROGRAMS.items():
        main_dir = getattr(args, opts[0])
        if not main_dir:
            continue
        tree = Tree(main_dir)
        second = Tree(getattr(args, opts[1])) if len(opts) > 1 and getattr(args, opts[1]) else None
        found = list(extract(tree, second))
        raws.extend(found)
        done.add(program)
        rev = tree.revision + (f" + {second.revision}" if second else "")
        name = os.path.basename(os.path.dirname(main_dir.rstrip("/"))) if tree.bare else main_dir
        sources[program] = f"{name} {rev}"
        print(f"{program}: {len(found)} strings", file=sys.stderr)
    if args.openssl:
        found = list(openssl_verify_strings())
        raws.extend(found)
        done.add("openssl")
        sources["openssl"] = found[0].source.split(" X509")[0] if found else "libcrypto"
        print(f"openssl: {len(found)} strings", file=sys.stderr)

    entries = merge(raws, old, done)
    unlabelled = sum(1 for e in entries if e.get("failure") is None)
    doc = {"sources": dict(sorted(sources.items())), "strings": entries}
    body = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)
    out_path.write_text(HEADER + body, encoding="utf-8")
    print(f"{out_path}: {len(entries)} strings, {unlabelled} unlabelled", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
