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
# passlib's own limit, on the normalized password's UTF-8 bytes; the password policy
# refuses longer new passwords (a 422) before anything is hashed.
MAX_PASSWORD_BYTES = 4096
# What an over-long password is checked as instead, for the time it takes; never a match.
_STAND_IN = "over-long password"


class PasswordHasher:
    """Hashes and verifies passwords in a worker thread; argon2 is CPU and memory bound.

    Every verification is exactly one argon2 verify, whatever the password and whether the
    account exists (an unknown email is checked against a dummy hash): the time of a
    failed login says nothing about the account."""

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
        """The hash of a new password, which the password policy has checked (its length
        included): an over-long one here is a bug, not a client error."""
        normal = normalize_password(password)
        if len(normal.encode()) > MAX_PASSWORD_BYTES:
            raise ValueError(f"password over {MAX_PASSWORD_BYTES} bytes: check the policy first")
        return await asyncio.to_thread(self._context.hash, normal)

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """(matches, new hash if the stored one uses outdated parameters)."""
        return await asyncio.to_thread(self._verify, password, password_hash)

    def _verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        normal = normalize_password(password)
        if len(normal.encode()) > MAX_PASSWORD_BYTES:
            # Longer than any password that can be set: no match, at the cost of a real
            # check against the same hash, so an over-long guess takes as long as any
            # other, at a known account or an unknown one.
            self._context.verify(_STAND_IN, password_hash)
            return False, None
        matches, new_hash = self._context.verify_and_update(normal, password_hash)
        return bool(matches), new_hash

    async def verify_dummy(self, password: str) -> None:
        """What `verify` costs, for an account that does not exist."""
        await self.verify(password, self._dummy_hash)


def normalize_password(password: str) -> str:
    """NFKC (NIST SP 800-63B): a precomposed and a combining accent are the same password."""
    return unicodedata.normalize("NFKC", password)
