"""Signal codes: the contract between probes (what they saw) and rules (what it means).

A probe attaches ``Problem(signal, text, params)`` to its observation. A rule lists the signals it
explains under ``match.signal``; ``reply`` problems are matched by text, codes, protocol and
provider like a pasted error. Every signal below must be explained by at least one rule in
rules/ (a test checks this), so no probe can produce a finding without advice.

Params every problem may quote in a rule's title or steps: ``service``, ``host``, ``port``,
``security``; the extra ones each signal carries are listed beside it.
"""

from __future__ import annotations

REPLY = "reply"  # a server reply that is not a plain success; text = the reply, verbatim
UNEXPLAINED = "unexplained"  # the catch-all a problem falls back to when no rule explains it
# Signals whose text is a server reply worth reading: a greeting that refuses us ("554 ... blocked
# using zen.spamhaus.org") or a refused STARTTLS. A text rule that recognises the words says more
# than the signal's generic rule.
READ_THE_REPLY = frozenset({"greeting.rejected", "starttls.refused"})

SIGNALS: dict[str, str] = {
    # dns
    "dns.nxdomain": "the domain does not exist (NXDOMAIN). params: domain",
    "dns.resolver_broken": "the resolver says a domain the provider database knows does not "
    "exist: DNS is broken, filtered or offline. params: domain, resolver",
    "dns.no_mx": "the domain exists but has no MX record. params: domain",
    "dns.no_servers": "discovery found no mail servers for the domain. params: domain",
    "dns.timeout": "the DNS server did not answer in time. params: name, resolver",
    "dns.error": "the DNS lookup failed otherwise (SERVFAIL, refused). params: name, resolver",
    "dns.host_unresolved": "a server name has no A/AAAA address. params: host",
    # reachability
    "connect.refused": "TCP connect refused (RST). params: address",
    "connect.timeout": "TCP connect got no answer within the timeout. params: address, timeout",
    "connect.unreachable": "no route to the host or network. params: address",
    "connect.ports_blocked": "every mail port tried on the host timed out while its port 443 "
    "answered: the network on the way drops mail ports. params: address, ports, https",
    "connect.host_down": "every mail port tried on the host timed out, and so did its port 443: "
    "the host is down or unreachable. params: address, ports, https",
    "connect.family_timeout": "an address of one family (IPv6 or IPv4) did not answer while one "
    "of the other family connected. params: family, failed_address, working_family, address, "
    "timeout",
    "connect.family_refused": "an address of one family refused while one of the other family "
    "connected. params: family, failed_address, working_family, address",
    # greeting / mode
    "greeting.silent": "connected, but the server said nothing in either mode. params: timeout",
    "greeting.closed": "the server closed the connection before greeting",
    "greeting.wrong_protocol": "the greeting is not this protocol's. params: expected, heard",
    "greeting.rejected": "the greeting is a refusal (SMTP 4xx/5xx, IMAP BYE, POP3 -ERR); text",
    "mode.ssl_expected_plain": (
        "we expected implicit TLS but the port greets in plaintext (a STARTTLS or plain port). "
        "params: expected, actual, suggested_port"
    ),
    "mode.plain_expected_ssl": (
        "we expected a plaintext greeting but the port speaks TLS at once (an implicit-TLS port). "
        "params: expected, actual, suggested_port"
    ),
    "starttls.not_offered": "the server does not offer STARTTLS/STLS on a STARTTLS port",
    "starttls.refused": "the server refused the STARTTLS/STLS command; text = its reply",
    # tls
    "tls.handshake_failed": "the TLS handshake failed for a reason other than the certificate",
    "tls.cert_expired": "the leaf or chain is expired by the local clock. params: not_after, days",
    "tls.cert_not_yet_valid": "a certificate is not yet valid. params: not_before",
    "tls.cert_untrusted": "the chain does not verify (self-signed, unknown CA, incomplete). "
    "params: verify_code, verify_message, issuer",
    "tls.hostname_mismatch": "the certificate does not name the host. params: names",
    "tls.expiring": "a certificate expires within --warn-days/--crit-days. params: days, not_after",
    "tls.old_protocol": "only TLS 1.0/1.1 is offered. params: version",
    "tls.interception": "the chain is issued by an interception product or the OS store only. "
    "params: product, issuer",
    "tls.clock_skew": "the certificate is invalid by the local clock but valid by the reference "
    "clock. params: offset_human, direction",
    # clock
    "clock.skew": "the local clock differs from the reference clock. params: offset_human, "
    "direction (behind|ahead), offset_seconds, source",
    # logins
    "auth.required": "the server demands SMTP AUTH before MAIL/RCPT; text = its reply",
    "auth.plaintext_refused": "the server refuses a login before TLS (LOGINDISABLED, 538, AUTH "
    "listed only after STARTTLS); text = its words (the capabilities or the refusal)",
    "auth.no_mechanism": "no AUTH mechanism we support is offered. params: offered",
    "auth.protocol_disabled": "the same credentials work on another protocol here. params: "
    "accepted_by; text = the refusal",
    "auth.login_form": "the login failed and the provider wants the other login form. "
    "params: expected_login, form",
    "auth.plain_connection": "credentials sent without TLS because /plain was asked for",
    "auth.oauth_not_offered": "an OAuth2 token was given but the server offers neither XOAUTH2 "
    "nor OAUTHBEARER. params: offered; text = its capabilities",
    "auth.oauth_protocol_disabled": "the same OAuth2 token works on another protocol here (the "
    "protocol is off, or the token lacks its scope). params: accepted_by, mechanism; text = the "
    "refused dialogue",
    # run
    "check.internal_error": "a bug in maildiag: the check raised. params: error",
    "check.not_built": "the check behind an option is not built yet. params: option",
}
