"""Addresses: IDN (UTS 46) normalisation, punycode for the wire, one clear line when malformed."""

from __future__ import annotations

import unicodedata

import pytest

from maildiag.address import AddressError, parse_address, to_ascii_host, to_unicode_host


def test_plain_address() -> None:
    a = parse_address("  Alice@Example.TEST ")
    assert (a.original, a.local, a.domain, a.ascii_domain) == (
        "Alice@Example.TEST",
        "Alice",
        "example.test",
        "example.test",
    )
    assert a.ascii == "Alice@example.test"
    assert str(a) == "Alice@Example.TEST"


def test_unicode_domain_goes_to_the_wire_as_punycode_and_is_shown_as_typed() -> None:
    a = parse_address("алиса@Пример.РФ")
    assert a.ascii_domain == "xn--e1afmkfd.xn--p1ai"
    assert a.domain == "пример.рф"
    assert a.local == "алиса"
    assert a.original == "алиса@Пример.РФ"
    assert a.ascii == "алиса@xn--e1afmkfd.xn--p1ai"


def test_a_label_domain_gets_its_unicode_form() -> None:
    a = parse_address("bob@XN--E1AFMKFD.xn--p1ai")
    assert (a.domain, a.ascii_domain) == ("пример.рф", "xn--e1afmkfd.xn--p1ai")


@pytest.mark.parametrize("dot", ["\u3002", "\uff0e", "\uff61"])
def test_ideographic_and_fullwidth_dots_are_label_separators(dot: str) -> None:
    a = parse_address(f"u@пример{dot}рф")
    assert a.ascii_domain == "xn--e1afmkfd.xn--p1ai"


def test_fullwidth_letters_are_mapped() -> None:
    assert parse_address("u@ＥＸＡＭＰＬＥ.com").ascii_domain == "example.com"


def test_german_sharp_s_is_kept_nontransitional() -> None:
    # UTS 46 non-transitional (IDNA 2008): ß stays ß rather than becoming "ss"
    assert parse_address("u@straße.de").ascii_domain == "xn--strae-oqa.de"


def test_local_part_is_nfc_normalised_but_not_case_folded() -> None:
    decomposed = unicodedata.normalize("NFD", "Zoë")
    a = parse_address(f"{decomposed}@example.test")
    assert a.local == "Zoë" and len(a.local) == 3
    assert a.local != a.local.lower()


@pytest.mark.parametrize(
    "text",
    [
        "Alice Smith <alice@example.test>",
        "<alice@example.test>",
        "mailto:alice@example.test",
        "MAILTO:alice@example.test?subject=x",
    ],
)
def test_pasted_forms(text: str) -> None:
    a = parse_address(text)
    assert (a.local, a.domain) == ("alice", "example.test")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("notanaddress", "not a mail address"),
        ("a@b@c.test", "not a mail address"),
        ("@example.test", "nothing before the @"),
        ("a@", "no domain"),
        ("a@localhost", "has no dot"),
        ("a b@example.test", "not valid"),
        (".a@example.test", "not valid"),
        ("a..b@example.test", "not valid"),
        ("a@[192.0.2.1]", "address literals"),
        ("a@-bad.test", "start or end with '-'"),
        ("a@exa mple.test", "invalid characters"),
        ("a@при мер.рф", "not a valid domain name"),
        ("a@ex!ample.test", "invalid characters"),
        ("a@xn--zz.test", "not a valid domain name"),
        ("a@" + "x" * 64 + ".test", "too long label"),
        ("x" * 65 + "@example.test", "longer than 64 octets"),
        ("a\n@example.test", "control characters"),
        ("a@example.test\x00", "control characters"),
        ("a@" + "b" * 2000 + ".test", "longer than 1024"),
    ],
)
def test_malformed_addresses_get_one_clear_line(text: str, words: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    message = str(info.value)
    assert words in message
    assert "\n" not in message and len(message) < 300


def test_hosts() -> None:
    assert to_ascii_host("IMAP.Example.TEST.") == "imap.example.test"
    assert to_ascii_host("почта.пример.рф") == "xn--80a1acny.xn--e1afmkfd.xn--p1ai"
    assert to_unicode_host("xn--80a1acny.xn--e1afmkfd.xn--p1ai") == "почта.пример.рф"
    assert to_ascii_host("127.0.0.1") == "127.0.0.1"
    with pytest.raises(AddressError):
        to_ascii_host("bad host.рф")
