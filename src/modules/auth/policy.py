"""The password policy; a violation is a 422 with every rule that failed."""

from __future__ import annotations

import unicodedata

from modules.auth.passwords import MAX_PASSWORD_BYTES, normalize_password

# passlib refuses passwords over 4096 bytes; far below that, anything longer is a mistake.
MAX_PASSWORD_CHARS = 1024


def password_problems(password: str, *, min_length: int, email: str = "") -> list[str]:
    problems: list[str] = []
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters long")
    if len(password) > MAX_PASSWORD_CHARS:
        problems.append(f"must be at most {MAX_PASSWORD_CHARS} characters long")
    elif len(normalize_password(password).encode()) > MAX_PASSWORD_BYTES:
        # NFKC can make one character eighteen (U+FDFA): checked before anything is hashed.
        problems.append(
            f"must be at most {MAX_PASSWORD_BYTES} bytes long once Unicode-normalized (NFKC)"
        )
    if not any(c.isalpha() for c in password):
        problems.append("must contain a letter")
    if not any(c.isdigit() for c in password) and not any(
        not c.isalnum() and not c.isspace() for c in password
    ):
        problems.append("must contain a digit or a symbol")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in password):
        problems.append("must not contain control characters")
    if email and password.strip().lower() == email.strip().lower():
        problems.append("must not be the email address")
    return problems
