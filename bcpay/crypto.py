"""Encryption at rest for access tokens and merchant secrets.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under ``app.secret_key``.
Key rotation: :func:`reencrypt` opens a value under any known key and seals it
under the new one, so ``bcpay rotate-key`` can walk every stored secret.
"""

from __future__ import annotations

from collections import OrderedDict

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bcpay.errors import ConfigError

OPENED_KEPT = 1024  # opened secrets kept in memory (a few per store)
SANDBOX_KEY = "c2FuZGJveC1rZXktbm90LWZvci1wcm9kdWN0aW9uISE="  # only with app.sandbox = true


def generate_key() -> str:
    """A new random key for ``app.secret_key``."""
    return Fernet.generate_key().decode("ascii")


def check_key(key: str, path: str) -> None:
    """Raise ConfigError naming ``path`` unless ``key`` is a valid Fernet key."""
    try:
        Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ConfigError(
            f"{path}: not a valid key (32 url-safe base64 bytes; make one with `bcpay keygen`)"
        ) from None


class Vault:
    """Seals and opens secrets with the current key (and reads older ones)."""

    def __init__(self, key: str, *old_keys: str) -> None:
        self._fernet = MultiFernet([Fernet(k.encode("ascii")) for k in (key, *old_keys)])
        # Opened values by sealed value: every notification and job opens its store's secrets, and
        # a Fernet decryption (HMAC check, AES) cost more than the rest of a job's bookkeeping.
        # A sealed value never changes meaning; rotation seals anew, so old entries just age out.
        self._opened: OrderedDict[str, str] = OrderedDict()

    def __repr__(self) -> str:
        return "Vault(keys=<hidden>)"

    def seal(self, plaintext: str) -> str:
        """Encrypt ``plaintext``; the result is safe to store."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        """Decrypt a value sealed by :meth:`seal` under any known key."""
        opened = self._opened.get(token)
        if opened is not None:
            self._opened.move_to_end(token)
            return opened
        try:
            opened = self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise ConfigError(
                "a stored secret cannot be decrypted with app.secret_key (wrong key?)"
            ) from None
        self._opened[token] = opened
        if len(self._opened) > OPENED_KEPT:
            self._opened.popitem(last=False)
        return opened

    def reencrypt(self, token: str) -> str:
        """The same secret sealed under the current key."""
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")
