"""One host normalisation: every spelling of a host compares equal, malformed hosts equal nothing."""

from __future__ import annotations

import pytest

from fedibridge.hosts import authority_of, domain_matches, host_of, normalise_host, origin_of, same_origin


@pytest.mark.parametrize("spelling", ["evil.example", "EVIL.example", "evil.example.", " Evil.Example. "])
def test_case_and_trailing_dot(spelling: str) -> None:
    assert normalise_host(spelling) == "evil.example"


def test_idna_and_punycode_are_one_host() -> None:
    assert normalise_host("bücher.example") == "xn--bcher-kva.example"
    assert normalise_host("XN--BCHER-KVA.example.") == "xn--bcher-kva.example"
    assert host_of("https://BÜCHER.example./users/a") == "xn--bcher-kva.example"


def test_ip_literals_are_canonical() -> None:
    assert normalise_host("[::1]") == "::1"
    assert normalise_host("127.0.0.1") == "127.0.0.1"
    assert host_of("http://[0:0::1]:8080/x") == "::1"


@pytest.mark.parametrize("bad", ["", ".", "a..b", "a b", "a/b", "x" * 64 + ".example", "user@host"])
def test_malformed_hosts_are_empty(bad: str) -> None:
    assert normalise_host(bad) == ""


def test_authority_makes_default_port_explicit() -> None:
    assert authority_of("https://a.example/x") == authority_of("https://A.example.:443/y") == "a.example:443"
    assert authority_of("http://a.example:8080/") == "a.example:8080"
    assert authority_of("ftp://a.example/") == ""
    assert authority_of("https://a.example:99999/") == ""


def test_origin_includes_the_scheme() -> None:
    assert origin_of("https://a.example/x") == "https://a.example:443"
    assert not same_origin("http://a.example:443/x", "https://a.example/x")
    assert same_origin("https://bücher.example/a", "https://xn--bcher-kva.example:443/b")
    assert not same_origin("", "")


def test_domain_matches_subdomains_however_spelled() -> None:
    assert domain_matches("Social.Evil.Example.", "evil.example")
    assert domain_matches("evil.example", "EVIL.EXAMPLE.")
    assert domain_matches("www.bücher.example", "xn--bcher-kva.example")
    assert not domain_matches("notevil.example", "evil.example")
    assert not domain_matches("evil.example", "")


def test_netloc_of_keeps_only_a_non_default_port() -> None:
    from fedibridge.hosts import netloc_of

    assert netloc_of("https://Mastodon.Example.:443/inbox") == "mastodon.example"
    assert netloc_of("http://mastodon.example:8080/inbox") == "mastodon.example:8080"
    assert netloc_of("https://bücher.example/x") == "xn--bcher-kva.example"
    assert netloc_of("http://[::1]:8080/") == "[::1]:8080"
    assert netloc_of("not a url") == ""


def test_parent_domains() -> None:
    from fedibridge.hosts import parent_domains

    assert parent_domains("A.B.Example.") == ("a.b.example", "b.example", "example")
    assert parent_domains("10.0.0.1") == ("10.0.0.1",)
    assert parent_domains("") == ()
