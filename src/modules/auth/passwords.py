"""Password hashing with argon2id through passlib, off the event loop, on NFKC-normalized
passwords."""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
import warnings

with warnings.catch_warnings():
    # passlib 1.7.4 imports the stdlib `crypt` module, deprecated since Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.context import CryptContext

# OWASP's minimum for argon2id: m=19 MiB, t=2, p=1.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_ROUNDS = 2
ARGON2_PARALLELISM = 1
# passlib's own limit; the password policy keeps new passwords far below it.
MAX_PASSWORD_BYTES = 4096


class PasswordHasher:
    """Hashes and verifies passwords in a worker thread; argon2 is CPU and memory bound."""

    def __init__(
        self,
        memory_kib: int = ARGON2_MEMORY_KIB,
        rounds: int = ARGON2_ROUNDS,
        parallelism: int = ARGON2_PARALLELISM,
    ) -> None:
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__memory_cost=memory_kib,
            argon2__rounds=rounds,
            argon2__parallelism=parallelism,
        )
        with warnings.catch_warnings():
            # passlib reads argon2.__version__ when it loads the backend, on first use.
            warnings.simplefilter("ignore", DeprecationWarning)
            # A login for an unknown email verifies against this, so it costs what a real one does.
            self._dummy_hash = self._context.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._context.hash, normalize_password(password))

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """(matches, new hash if the stored one is outdated: older parameters, or made from
        the password as typed, before passwords were normalized)."""
        return await asyncio.to_thread(self._verify, password, password_hash)

    def _verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        normal = normalize_password(password)
        if len(normal.encode()) > MAX_PASSWORD_BYTES:
            return False, None  # longer than any password that could have been set
        matches, new_hash = self._context.verify_and_update(normal, password_hash)
        if not matches and normal != password and self._context.verify(password, password_hash):
            return True, self._context.hash(normal)
        return bool(matches), new_hash

    async def verify_dummy(self, password: str) -> None:
        await asyncio.to_thread(
            self._context.verify, normalize_password(password), self._dummy_hash
        )


def normalize_password(password: str) -> str:
    """NFKC (NIST SP 800-63B): a precomposed and a combining accent are the same password."""
    return unicodedata.normalize("NFKC", password)
