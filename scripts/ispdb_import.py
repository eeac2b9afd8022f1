#!/usr/bin/env python3
"""Convert a snapshot of Thunderbird's ISPDB into maildiag's generated provider file.

    python scripts/ispdb_import.py SRC_DIR [--commit SHA] [--out rules/providers/ispdb]

SRC_DIR holds the ISPDB's provider files (``*.xml``, or extension-less files as in the
``ispdb/`` folder of https://github.com/thunderbird/autoconfig), directly or in ``xml/`` or
``ispdb/`` below it, and may hold the licence (``LICENSE``) and a README naming the commit.
The output directory gets:

- ``ispdb.json``: every provider (id = file name, display name, address domains, IMAP/POP3/SMTP
  servers in the file's order with their login form, https documentation links), one provider
  per line so that a newer snapshot shows as a readable diff; what could not be used is listed
  under ``skipped`` with the reason;
- ``LICENSE``: the MPL-2.0 text, copied from SRC_DIR;
- ``README.md``: where the data comes from (repository and commit) and how to regenerate it.

The output depends only on the input files and the options (sorted, no timestamps), so running
it again on the same snapshot changes nothing. Exit status 0 on success, 3 with one line on
stderr when the input is unusable.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from maildiag.address import AddressError, to_ascii_host  # noqa: E402
from maildiag.discovery.providers import valid_hostname  # noqa: E402

FORMAT = "maildiag.ispdb/1"
REPOSITORY = "https://github.com/thunderbird/autoconfig"
DEFAULT_OUT = ROOT / "rules" / "providers" / "ispdb"
MAX_FILE = 256 * 1024
_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_SERVICES = {
    ("incomingServer", "imap"): "imap",
    ("incomingServer", "pop3"): "pop3",
    ("outgoingServer", "smtp"): "smtp",
}
_SECURITY = {"SSL": "ssl", "STARTTLS": "starttls", "PLAIN": "plain"}
_LOGINS = {"%EMAILADDRESS%": "address", "%EMAILLOCALPART%": "localpart", "": "address"}
_TEMPLATE = re.compile(r"^(%EMAIL(ADDRESS|LOCALPART|DOMAIN)%|[A-Za-z0-9._@+-])+$")
_COMMIT = re.compile(r"\b[0-9a-f]{40}\b")


class ImportError_(Exception):  # noqa: N801 - not the builtin ImportError
    """The snapshot cannot be converted; str() is one line."""


def provider_files(src: Path) -> list[Path]:
    """The ISPDB files under ``src`` (itself, ``xml/`` or ``ispdb/``), sorted by name."""
    for folder in (src / "xml", src / "ispdb", src):
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".xml")
        if not files:  # upstream names its files after the domain, without an extension
            files = sorted(
                p
                for p in folder.iterdir()
                if p.is_file() and "." in p.name and not p.name.upper().startswith("README")
            )
        if files:
            return files
    raise ImportError_(f"{src}: no ISPDB provider files (*.xml) found")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(el: ET.Element, name: str) -> str:
    for child in el:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def convert_file(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """One provider file → (provider entry or None, reasons for what was skipped)."""
    name = path.name
    pid = name.removesuffix(".xml").lower()
    raw = path.read_bytes()
    if len(raw) > MAX_FILE:
        return None, [f"{name}: larger than {MAX_FILE // 1024} KiB"]
    if _FORBIDDEN.search(raw):
        return None, [f"{name}: DOCTYPE/ENTITY declarations are refused"]
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        return None, [f"{name}: not well-formed XML: {exc}"]
    provider = next((el for el in root if _local(el.tag) == "emailProvider"), None)
    if _local(root.tag) != "clientConfig" or provider is None:
        return None, [f"{name}: not a clientConfig with an emailProvider"]
    skipped: list[str] = []
    domains = _domains(provider, name, skipped)
    servers = _servers(provider, name, skipped)
    if not domains or not servers:
        skipped.append(f"{name}: no usable domain or IMAP/POP3/SMTP server; file left out")
        return None, skipped
    display = _child_text(provider, "displayName") or provider.get("id") or pid
    links = [
        el.get("url", "").strip()
        for el in provider
        if _local(el.tag) == "documentation" and el.get("url", "").strip().startswith("https://")
    ]
    entry = {
        "domain_entries": sum(_local(el.tag) == "domain" for el in provider),
        "id": pid,
        "file": name,
        "name": " ".join(display.split()),
        "domains": domains,
        "servers": servers,
        "links": list(dict.fromkeys(links)),
    }
    return entry, skipped


def _domains(provider: ET.Element, name: str, skipped: list[str]) -> list[str]:
    out: list[str] = []
    for el in provider:
        if _local(el.tag) != "domain":
            continue
        text = (el.text or "").strip().lower().rstrip(".")
        try:
            ascii_name = to_ascii_host(text)
        except AddressError:
            ascii_name = ""
        if not ascii_name or not valid_hostname(ascii_name):
            skipped.append(f"{name}: domain {text!r} is not a valid domain name")
            continue
        if ascii_name in out:
            skipped.append(f"{name}: domain {ascii_name} is listed twice")
            continue
        out.append(ascii_name)
    return out


def _servers(provider: ET.Element, name: str, skipped: list[str]) -> dict[str, list[list[Any]]]:
    servers: dict[str, list[list[Any]]] = {}
    for el in provider:
        service = _SERVICES.get((_local(el.tag), (el.get("type") or "").strip().lower()))
        if service is None:
            continue  # exchange, ews, owa, graph ...: not protocols maildiag checks
        host = _child_text(el, "hostname").lower().rstrip(".")
        port_text = _child_text(el, "port")
        security = _SECURITY.get(_child_text(el, "socketType").upper())
        username = _child_text(el, "username")
        where = f"{name}: {service} {host or '?'}:{port_text or '?'}"
        if not valid_hostname(host.replace("%emaildomain%", "example.com")):
            skipped.append(f"{where}: host is not a valid host name")
            continue
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            skipped.append(f"{where}: port is not a number from 1 to 65535")
            continue
        if security is None:
            skipped.append(f"{where}: socketType {_child_text(el, 'socketType')!r} is unknown")
            continue
        login = _LOGINS.get(username)
        if login is None:
            if not _TEMPLATE.match(username):
                skipped.append(f"{where}: username {username!r} is not a usable template")
                continue
            login = username
        spec = [host.replace("%emaildomain%", "%EMAILDOMAIN%"), int(port_text), security, login]
        if spec not in servers.setdefault(service, []):
            servers[service].append(spec)
    return {s: servers[s] for s in ("smtp", "imap", "pop3") if servers.get(s)}


def convert(files: Sequence[Path]) -> dict[str, Any]:
    providers: list[dict[str, Any]] = []
    skipped: list[str] = []
    owner: dict[str, str] = {}
    domain_entries = 0
    for path in files:
        entry, reasons = convert_file(path)
        skipped.extend(reasons)
        if entry is None:
            continue
        domain_entries += entry.pop("domain_entries")
        kept = []
        for domain in entry["domains"]:
            if domain in owner:
                skipped.append(f"{entry['file']}: domain {domain} already in {owner[domain]}")
                continue
            owner[domain] = entry["file"]
            kept.append(domain)
        entry["domains"] = kept
        providers.append(entry)
    return {
        "format": FORMAT,
        "counts": {
            "files": len(files),
            "providers": len(providers),
            "domains": len(owner),
            "domain_entries": domain_entries,
        },
        "skipped": skipped,
        "providers": providers,
    }


def render(doc: dict[str, Any], source: dict[str, str]) -> str:
    """The JSON text: the header fields, then one provider per line (readable diffs)."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    lines = [
        "{",
        f' "format":{dump(doc["format"])},',
        f' "source":{dump(source)},',
        f' "counts":{dump(doc["counts"])},',
        f' "skipped":{dump(doc["skipped"])},',
        ' "providers":[',
    ]
    items = [f"  {dump(p)}" for p in doc["providers"]]
    lines.append(",\n".join(items))
    lines.append(" ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


README = """\
# Thunderbird's ISPDB, converted for maildiag

`ispdb.json` is generated from Thunderbird's ISP database (the data behind Thunderbird's
account-setup wizard) by `scripts/ispdb_import.py`. Do not edit it by hand: run the script on a
newer snapshot instead. maildiag's hand-written entries (`rules/providers/*.yaml`) win for the
domains they list; `maildiag settings ADDRESS --json` shows where they differ from this data.

- Source: {repository}, folder `ispdb/`, commit `{commit}`
- Files: {files}; providers converted: {providers}; address domains: {domains}
  ({domain_entries} domain entries, a domain listed twice counted once)
- Licence: Mozilla Public License 2.0 (`LICENSE` beside this file). This data is derived from
  files covered by the MPL-2.0; their source is the repository and commit above.

Regenerate (from the repository's root):

    python scripts/ispdb_import.py PATH/TO/ispdb --commit COMMIT
"""


def find_commit(src: Path) -> str | None:
    for readme in (src / "README.md", src / "README"):
        if readme.is_file():
            found = _COMMIT.search(readme.read_text(encoding="utf-8", errors="replace"))
            if found:
                return found.group(0)
    return None


def find_licence(src: Path) -> Path:
    for candidate in (src / "LICENSE", src.parent / "LICENSE"):
        if candidate.is_file():
            return candidate
    raise ImportError_(f"{src}: no LICENSE file: the MPL-2.0 text must ship with the data")


def run(src: Path, out: Path, commit: str | None, repository: str = REPOSITORY) -> dict[str, Any]:
    if not src.is_dir():
        raise ImportError_(f"{src}: not a directory")
    commit = commit or find_commit(src)
    if not commit or not _COMMIT.fullmatch(commit):
        raise ImportError_(
            f"{src}: name the snapshot's commit with --commit SHA (40 hex digits); "
            "the README beside the files does not name one"
        )
    licence = find_licence(src)
    doc = convert(provider_files(src))
    source = {"repository": repository, "path": "ispdb/", "commit": commit, "licence": "MPL-2.0"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ispdb.json").write_text(render(doc, source), encoding="utf-8")
    shutil.copyfile(licence, out / "LICENSE")
    (out / "README.md").write_text(
        README.format(repository=repository, commit=commit, **doc["counts"]), encoding="utf-8"
    )
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder with the ISPDB provider files")
    parser.add_argument("--commit", help="the snapshot's commit in thunderbird/autoconfig")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    try:
        doc = run(args.src, args.out, args.commit)
    except (ImportError_, OSError) as exc:
        print(f"ispdb_import: {exc}", file=sys.stderr)
        return 3
    counts = doc["counts"]
    print(
        f"ispdb_import: {counts['providers']} providers, {counts['domains']} domains "
        f"from {counts['files']} files; {len(doc['skipped'])} items skipped -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
