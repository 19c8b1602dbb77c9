"""API key tokens: shape, visible prefix, hash and comparison."""

from __future__ import annotations

import re

import pytest

from glowing_fiesta.auth.keys import generate, hash_token, matches, prefix_of

TOKEN_RE = re.compile(r"gf_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}")


def test_a_token_has_the_documented_shape_and_its_prefix() -> None:
    token, prefix = generate()
    assert TOKEN_RE.fullmatch(token), token
    assert token.startswith(prefix + "_")
    assert len(prefix) == len("gf_") + 8
    assert prefix_of(token) == prefix


def test_tokens_and_prefixes_are_unique() -> None:
    made = [generate() for _ in range(2000)]
    assert len({token for token, _ in made}) == len(made)
    assert len({prefix for _, prefix in made}) == len(made)


def test_tokens_are_safe_to_paste_into_a_header_or_shell() -> None:
    for _ in range(200):
        token, _ = generate()
        assert token.isascii()
        assert token.isprintable()
        assert not any(c in token for c in " \t'\"$`\\;&|")


def test_the_prefix_survives_underscores_in_the_secret() -> None:
    assert prefix_of("gf_Ab3dE5gH_x_y_-z") == "gf_Ab3dE5gH"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("gf", id="scheme-only"),
        pytest.param("gf_", id="scheme-and-underscore"),
        pytest.param("gf_Ab3dE5gH", id="prefix-only"),
        pytest.param("gf_Ab3dE5gH_", id="empty-secret"),
        pytest.param("gf_Ab3dE5g_secret", id="7-char-ident"),
        pytest.param("gf_Ab3dE5gHi_secret", id="9-char-ident"),
        pytest.param("gf__secret", id="empty-ident"),
        pytest.param("GF_Ab3dE5gH_secret", id="upper-case-scheme"),
        pytest.param("xx_Ab3dE5gH_secret", id="other-scheme"),
        pytest.param("Bearer gf_Ab3dE5gH_secret", id="with-scheme-word"),
        pytest.param("gf-Ab3dE5gH-secret", id="dashes"),
        pytest.param("Ab3dE5gH", id="bare-ident"),
    ],
)
def test_malformed_tokens_have_no_prefix(token: str) -> None:
    assert prefix_of(token) is None


def test_the_hash_is_sha256_hex_stable_and_not_the_token() -> None:
    token, prefix = generate()
    digest = hash_token(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_token(token)
    assert token not in digest
    assert prefix not in digest


def test_different_tokens_hash_differently() -> None:
    a, _ = generate()
    b, _ = generate()
    assert hash_token(a) != hash_token(b)


def test_matches_only_the_token_that_was_hashed() -> None:
    token, prefix = generate()
    stored = hash_token(token)
    assert matches(token, stored)
    other, _ = generate()
    for wrong in (other, token[:-1], token + "x", token.upper(), prefix, "", f" {token}"):
        assert not matches(wrong, stored), wrong
    # Same visible prefix, different secret: the prefix alone proves nothing.
    assert not matches(f"{prefix}_{other.split('_', 2)[2]}", stored)


@pytest.mark.parametrize("stored", ["", "0" * 64, "not-a-hash"])
def test_matches_is_false_for_a_stored_hash_of_something_else(stored: str) -> None:
    token, _ = generate()
    assert not matches(token, stored)


def test_hashing_odd_text_does_not_fail() -> None:
    # Header values reach us as str; none of them may crash the comparison.
    for text in ("é", "\x00", "\ud800", "🚀" * 100):
        assert not matches(text, hash_token("gf_Ab3dE5gH_secret"))
        assert matches(text, hash_token(text))
