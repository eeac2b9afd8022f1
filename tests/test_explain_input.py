"""explain's input as people paste it: encodings, piped stdin, ``--file -``, empty input, the
answer's language, and bounded memory on endless or one-line files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from conftest import as_command

from maildiag import explaining
from maildiag.explaining import run_explain, text_lang
from maildiag.lang import default_lang, locale_lang
from maildiag.textinput import LineReader, decode, detect_encoding, read_argument

ROOT = Path(__file__).resolve().parents[1]
RU_LOGIN = "Ошибка входа: неверный пароль. 535 5.7.8 Error: authentication failed"
RU_LOG = (
    "Mar  3 10:00:01 mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from unknown[192.0.2.10]: "
    "554 5.7.1 <x@example.net>: Relay access denied; from=<Пётр@example.org> to=<x@example.net>\n"
    "Mar  3 10:00:02 mx postfix/smtpd[101]: warning: unknown[192.0.2.77]: SASL LOGIN "
    "authentication failed: ошибка аутентификации\n"
)


@pytest.fixture(scope="module")
def rule_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _env(rule_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(rule_cache))
    monkeypatch.delenv("MAILDIAG_RULES", raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    for var in ("LC_ALL", "LC_MESSAGES", "LANGUAGE"):
        monkeypatch.delenv(var, raising=False)
    explaining._RULES.clear()


class _Stdin(io.TextIOWrapper):
    """A stdin that is a pipe (not a terminal), with bytes behind it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")

    def isatty(self) -> bool:
        return False


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    rc = as_command(run_explain, *args)
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("codec", "shown"),
    [
        ("cp1251", "cp1251"),
        ("koi8_r", "koi8-r"),
        ("cp866", "cp866"),
        ("utf-16", "utf-16-le"),  # with its BOM
        ("utf-16-le", "utf-16-le"),  # without one
        ("utf-16-be", "utf-16-be"),
        ("utf-8-sig", "utf-8"),
    ],
)
def test_encodings_are_detected_and_said(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    codec: str,
    shown: str,
) -> None:
    assert decode(RU_LOGIN.encode(codec)) == (RU_LOGIN, shown, False)
    monkeypatch.setattr(sys, "stdin", _Stdin(RU_LOGIN.encode(codec)))
    rc, out, _ = run(capsys, "-", None, True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and doc["input"] == RU_LOGIN and doc["encoding"] == shown
    assert doc["findings"][0]["category"] == "auth_failed"
    monkeypatch.setattr(sys, "stdin", _Stdin(RU_LOGIN.encode(codec)))
    rc, out, _ = run(capsys, "-", None, False, "en", ())
    said = f"it was read as {shown})" in out.splitlines()[0]
    assert rc == 0 and said == (shown != "utf-8"), out


def test_log_file_in_cp1251(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(RU_LOG.encode("cp1251"))
    rc, out, _ = run(capsys, None, str(log), True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and doc["encoding"] == "cp1251" and doc["errors"] == 2
    assert {g["category"] for g in doc["groups"]} == {"relay_denied", "auth_failed"}
    rc, out, _ = run(capsys, None, str(log), False, "en", ())
    assert "(the input was not UTF-8; it was read as cp1251)" in out


def test_an_argument_that_is_not_utf8() -> None:
    # the OS hands undecodable argv bytes over as surrogate escapes
    arg = os.fsdecode(RU_LOGIN.encode("cp1251"))
    assert arg != RU_LOGIN
    assert read_argument(arg) == (RU_LOGIN, "cp1251", False)
    assert read_argument(RU_LOGIN) == (RU_LOGIN, "utf-8", False)


def test_utf8_and_nul_runs_are_not_utf16() -> None:
    assert detect_encoding(b"\x00" * 4096) == "utf-8"  # /dev/zero
    assert detect_encoding(b"535 ok") == "utf-8"


# --------------------------------------------------------------------------- stdin and empty input


@pytest.mark.parametrize("args", [(None,), ("-",)])
def test_piped_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: tuple[str | None]
) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin(b"452 4.5.3 Error: too many recipients"))
    rc, out, _ = run(capsys, args[0], None, True, "en", ())
    assert rc == 0 and json.loads(out)["findings"][0]["category"] == "rate_limited"


def test_file_dash_reads_stdin_as_a_log(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin(RU_LOG.encode("koi8_r")))
    rc, out, _ = run(capsys, None, "-", True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and doc["input"] == "-" and doc["lines"] == 2 and doc["encoding"] == "koi8-r"


@pytest.mark.parametrize(
    ("text", "file", "stdin"),
    [
        ("", None, None),
        ("  \n\t ", None, None),
        ("-", None, b""),
        (None, None, b"\n\n"),
        (None, "-", b""),
        (None, "EMPTY", None),
    ],
)
def test_empty_input_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str | None,
    file: str | None,
    stdin: bytes | None,
) -> None:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", _Stdin(stdin))
    if file == "EMPTY":
        file = str(tmp_path / "empty.log")
        Path(file).write_bytes(b"")
    rc, out, err = run(capsys, text, file, False, "en", ())
    assert rc == 3 and out == "" and err.count("\n") == 1
    assert err.startswith("maildiag: nothing to explain")


def test_no_input_on_a_terminal_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Tty(_Stdin):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty(b"535 never read"))
    rc, out, err = run(capsys, None, None, False, "en", ())
    assert rc == 3 and out == "" and "nothing to explain" in err


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "maildiag").exists(), reason="no maildiag")
def test_the_command_reads_a_pipe_without_dash(tmp_path: Path) -> None:
    exe = str(ROOT / ".venv" / "bin" / "maildiag")
    env = {**os.environ, "MAILDIAG_CACHE_DIR": str(tmp_path / "c"), "LANG": "C.UTF-8"}
    p = subprocess.run(
        [exe, "explain", "--json"],
        input=RU_LOGIN.encode("cp1251"),
        capture_output=True,
        env=env,
        timeout=60,
    )
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["encoding"] == "cp1251" and doc["input"] == RU_LOGIN
    p = subprocess.run(
        [exe, "explain"], input=b"", capture_output=True, env=env, timeout=60, text=False
    )
    assert p.returncode == 3 and p.stdout == b"" and b"Traceback" not in p.stderr
    # UTF-8 input never loads the detector
    code = (
        "import sys, io\n"
        "from maildiag.__main__ import main\n"
        "sys.stdin = io.TextIOWrapper(io.BytesIO('535 5.7.8 пароль'.encode()))\n"
        "sys.stdin.isatty = lambda: False\n"
        "rc = main(['explain', '--json'])\n"
        "sys.stderr.write(repr((rc, 'charset_normalizer' in sys.modules)))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.stderr == repr((0, False)), p.stderr


# --------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("env", "chosen"),
    [
        ({}, None),
        ({"LANG": "C"}, None),
        ({"LANG": "C.UTF-8"}, None),
        ({"LC_ALL": "POSIX"}, None),
        ({"LC_ALL": "C", "LANG": "ru_RU.UTF-8"}, None),  # LC_ALL wins: the C locale
        ({"LANG": "C.UTF-8", "LANGUAGE": "ru"}, None),  # gettext ignores LANGUAGE under C
        ({"LANG": "ru_RU.UTF-8"}, "ru"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "de_DE.UTF-8"}, "en"),
        ({"LC_MESSAGES": "ru_RU"}, "ru"),
        ({"LANG": "en_GB.UTF-8", "LANGUAGE": "ru:en"}, "en"),
        ({"LANGUAGE": "ru"}, "ru"),
    ],
)
def test_when_the_locale_chose_a_language(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], chosen: str | None
) -> None:
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert locale_lang() == chosen
    assert default_lang() == (chosen or "en")  # what the other commands use


def test_text_language() -> None:
    assert text_lang(RU_LOGIN) == "ru"
    assert text_lang("Не удалось подключиться к серверу smtp.yandex.ru") == "ru"
    assert text_lang("535 5.7.8 Error: authentication failed for Пётр") == "en"
    assert text_lang("") == "en"


def test_a_russian_text_gets_a_russian_answer(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, _ = run(capsys, RU_LOGIN, None, False, None, ())  # LANG=C.UTF-8: no choice
    assert rc == 0 and "Что сделать" in out
    rc, out, _ = run(capsys, "535 5.7.8 Error: authentication failed", None, False, None, ())
    assert rc == 0 and "What to do" in out
    monkeypatch.setenv("LANG", "en_US.UTF-8")  # the locale chose English
    rc, out, _ = run(capsys, RU_LOGIN, None, False, None, ())
    assert rc == 0 and "What to do" in out
    monkeypatch.delenv("LANG")
    rc, out, _ = run(capsys, RU_LOGIN, None, False, "en", ())  # --lang wins
    assert rc == 0 and "What to do" in out


# --------------------------------------------------------------------------- bounded memory


class _Zeros(io.RawIOBase):
    """An endless stream of NUL bytes, like /dev/zero."""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        b[:] = bytes(len(b))
        return len(b)


def test_an_endless_stream_ends_at_the_budget() -> None:
    reader = LineReader(io.BufferedReader(_Zeros()), max_line=4096, budget=8 << 20, chunk=1 << 20)
    lines = list(reader)
    assert len(lines) == 1 and len(lines[0]) == 4096
    assert reader.budget_reached and reader.bytes_read == 8 << 20 and reader.lines_cut == 1


def test_a_file_that_ends_at_the_budget_is_not_cut() -> None:
    reader = LineReader(io.BytesIO(b"x\n" * 50), max_line=10, budget=100, chunk=7)
    assert list(reader) == ["x"] * 50 and not reader.budget_reached


def test_a_long_line_is_cut_while_it_is_read() -> None:
    data = b"550 5.1.1 user unknown " + b"y" * (24 << 20) + b"\nsecond\n"
    tracemalloc.start()
    reader = LineReader(io.BytesIO(data), max_line=4096)
    lines = list(reader)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [len(x) for x in lines] == [4096, 6] and reader.lines_cut == 1
    assert peak < 8 << 20, peak  # a few chunks, never the 24 MB line


def test_long_lines_in_utf16_are_cut_too() -> None:
    data = ("ab" * 5000 + "\nnext\n").encode("utf-16")
    reader = LineReader(io.BytesIO(data), max_line=100, chunk=333)
    assert [len(x) for x in reader] == [100, 4] and reader.lines_cut == 1


def test_cut_lines_are_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "one-line.log"
    log.write_bytes(b"NOQUEUE: reject: 554 5.7.1 Relay access denied " + b"z" * (3 << 20))
    rc, out, _ = run(capsys, None, str(log), True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and doc["long_lines_cut"] == 1 and not doc["truncated"]
    assert doc["bytes_read"] == log.stat().st_size
    assert doc["groups"][0]["category"] == "relay_denied"
    rc, out, _ = run(capsys, None, str(log), False, "en", ())
    assert "(lines longer than 4096 characters, cut to that length: 1)" in out


def test_a_long_argument_is_cut_and_said(capsys: pytest.CaptureFixture[str]) -> None:
    text = "535 5.7.8 authentication failed " + "w" * (2 << 20)
    rc, out, _ = run(capsys, text, None, True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and doc["truncated"] and len(doc["input"]) == explaining.MAX_INPUT
