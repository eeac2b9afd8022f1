"""Any console, any redirect: output never fails on the encoding it is written in.

Each command runs in a fresh interpreter with PYTHONIOENCODING set to what a Russian Windows
redirect (cp1251), an old Windows console (cp866) or a bare terminal (ASCII) uses. What the
encoding carries stays as it is (Russian in cp1251 and cp866); a symbol it lacks gets its plain
equivalent (→ ->, ✔ ✖ as words, « " in cp866), Russian on ASCII its transliteration; JSON stays
valid JSON (\\u escapes), JUnit valid XML and HTML a valid page (character references).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from peers import free_port

POP3_OFF = "-ERR Login failure or POP3 disabled, try later."  # its Russian steps carry → and «»


def run(encoding: str, *args: str) -> tuple[int, bytes, bytes]:
    env = {**os.environ, "PYTHONIOENCODING": encoding, "COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-m", "maildiag", *args], capture_output=True, env=env, timeout=60
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("encoding", ["cp1251", "cp866", "ascii"])
def test_explain_in_russian_on_any_console(encoding: str) -> None:
    code, out, err = run(encoding, "explain", "--lang", "ru", POP3_OFF)
    assert (code, err) == (0, b"")
    text = out.decode(encoding)  # every byte is the console's own
    assert "→" not in text and "->" in text
    if encoding == "ascii":
        assert "Otkroyte Yandeks Pochtu -> Nastroyki" in text  # a transliteration, readable
    else:
        assert "Откройте Яндекс Почту -> Настройки" in text  # what it carries stays
        assert ("«" in text) == (encoding == "cp1251")  # cp866 has no guillemets


@pytest.mark.parametrize("encoding", ["cp1251", "cp866", "ascii"])
def test_check_in_every_format_on_any_console(encoding: str) -> None:
    port = free_port()
    base = ["check", "alice@example.test", "--smtp", f"127.0.0.1:{port}/ssl", "--no-clock"]
    lang = "en" if encoding == "ascii" else "ru"

    code, out, err = run(encoding, *base, "--lang", lang)
    assert (code, err) == (2, b"")
    text = out.decode(encoding)
    fail, skip = ("FAIL", "SKIP") if lang == "en" else ("ОШИБКА", "ПРОПУСК")
    assert text.startswith(f"{fail} ") and f"\n  {skip} " in text  # words, not ✖ –
    if lang == "ru":
        assert "Что не так и что делать" in text

    code, out, err = run(encoding, *base, "--lang", "ru", "--json")
    assert (code, err) == (2, b"")
    report = json.loads(out.decode(encoding))
    assert report["findings"][0]["title"].startswith("Подключение")  # \u escapes, intact

    for fmt in ("junit", "html"):
        code, out, err = run(encoding, *base, "--lang", "ru", "--format", fmt)
        assert (code, err) == (2, b""), fmt
        assert out.isascii()  # character references for what the encoding lacks
        if fmt == "junit":
            root = ET.fromstring(out)
            assert "Подключение" in (root.find(".//failure").get("message") or "")  # type: ignore[union-attr]
        else:
            assert b"&#1055;&#1086;&#1076;" in out  # "Под..." as references


def test_an_unencodable_error_line_is_plain_too() -> None:
    code, _, err = run("ascii", "check", "alice@example.test", "--timeout", "пять")
    assert code == 3 and err.isascii() and b"Traceback" not in err
    assert err == b"maildiag: --timeout pyat: must be a number of seconds, not 'pyat'\n"
