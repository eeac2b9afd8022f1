"""IMAP response codes (RFC 5530, RFC 3501, RFC 4469) and POP3 extended codes (RFC 2449, RFC 3206)
as a generic layer: an unseen reply still gets a sensible category from its code, and a rule
that recognises the reply's words still wins. On main 4 of these 26 codes got any answer."""

from __future__ import annotations

import pytest

import maildiag
from maildiag import explaining
from maildiag.rulebase import RuleBase

# code -> category for a reply whose words say nothing ("xyzzy")
IMAP = {
    "UNAVAILABLE": "other",
    "AUTHENTICATIONFAILED": "auth_failed",
    "AUTHORIZATIONFAILED": "auth_failed",
    "EXPIRED": "auth_failed",
    "PRIVACYREQUIRED": "tls_required",
    "CONTACTADMIN": "account_blocked",
    "NOPERM": "other",
    "INUSE": "other",
    "EXPUNGEISSUED": "other",
    "CORRUPTION": "other",
    "SERVERBUG": "other",
    "CLIENTBUG": "other",
    "CANNOT": "other",
    "LIMIT": "rate_limited",
    "OVERQUOTA": "mailbox_full",
    "ALREADYEXISTS": "other",
    "NONEXISTENT": "other",
    "TRYCREATE": "other",
    "TOOBIG": "message_too_large",
    "THROTTLED": "rate_limited",
    "ALERT": "other",
}
POP3 = {
    "IN-USE": "other",
    "LOGIN-DELAY": "rate_limited",
    "SYS/TEMP": "other",
    "SYS/PERM": "other",
    "AUTH": "auth_failed",
}


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("MAILDIAG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.delenv("MAILDIAG_RULES", raising=False)
    explaining._RULES.clear()
    yield
    mp.undo()
    explaining._RULES.clear()


@pytest.mark.parametrize(("code", "category"), sorted(IMAP.items()))
def test_every_imap_code_has_a_meaning(code: str, category: str) -> None:
    for text in (f"a1 NO [{code}] xyzzy", f"The mail server responded: [{code}] xyzzy"):
        findings = maildiag.explain(text)
        assert findings and findings[0].category == category, (text, findings)


@pytest.mark.parametrize(("code", "category"), sorted(POP3.items()))
def test_every_pop3_code_has_a_meaning(code: str, category: str) -> None:
    for text in (f"-ERR [{code}] xyzzy", f"Mail server pop.example.com responded: [{code}] xyzzy"):
        findings = maildiag.explain(text)
        assert findings and findings[0].category == category, (text, findings)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("NO [UNAVAILABLE] Internal server error", "other"),
        ("-ERR [IN-USE] Mailbox is locked by another POP3 session.", "other"),  # not a lock-out
        ("p NO [NONEXISTENT] No such mailbox", "other"),  # a folder, not a recipient
        ("NO [TRYCREATE] Mailbox doesn't exist: Sent", "other"),
        ("d NO [EXPIRED] That password isn't valid any more", "auth_failed"),
    ],
)
def test_the_code_reads_what_the_words_alone_misread(text: str, category: str) -> None:
    assert maildiag.explain(text)[0].category == category


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        # a rule that recognises the words still wins over the code's generic meaning
        (
            "NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded "
            "(mail_max_userip_connections=10)",
            "delivery.rate-limited",
        ),
        (
            "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            "tls.plaintext-login-refused",
        ),
        ("a1 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)", "delivery.mailbox-full"),
    ],
)
def test_a_rule_for_the_words_wins(text: str, rule: str) -> None:
    assert maildiag.explain(text)[0].rule == rule


def test_the_codes_keep_to_their_protocol() -> None:
    rb = RuleBase.load()
    text = "a1 NO [UNAVAILABLE] xyzzy"
    assert [m.rule.id for m in rb.match(text)] == ["imap.code.unavailable"]
    assert not [m for m in rb.match(text, protocol="smtp") if m.rule.id.startswith("imap.")]
    assert [m.rule.id for m in rb.match("-ERR [IN-USE] x")] == ["pop3.code.in-use"]
    assert not [m for m in rb.match("-ERR [IN-USE] x", protocol="imap") if "pop3" in m.rule.id]
    # a bracketed word elsewhere is no code
    assert maildiag.explain("Build [LIMIT] reached in stage [AUTH]") == []
