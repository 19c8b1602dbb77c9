"""API key tokens: generate, hash, parse and compare (pure).

A token looks like `gf_Ab3dE5gH_<43 random characters>`. The part up to the second
underscore is the visible prefix, stored in clear to find the key and to name it in
`keys list`; the whole token is stored only as its SHA-256. The secret part carries 256
bits of entropy, so a plain hash (no salt, no slow KDF) cannot be brute-forced, and
lookups stay fast enough for every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
PREFIX_LEN = 8


def generate() -> tuple[str, str]:
    """A new (token, visible prefix)."""
    ident = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LEN))
    prefix = f"gf_{ident}"
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def prefix_of(token: str) -> str | None:
    """The visible prefix of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "gf" or len(parts[1]) != PREFIX_LEN or not parts[2]:
        return None
    return f"gf_{parts[1]}"


def matches(token: str, secret_hash: str) -> bool:
    """Constant-time comparison of a presented token with a stored hash."""
    return hmac.compare_digest(hash_token(token), secret_hash)
