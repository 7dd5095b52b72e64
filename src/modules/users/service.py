"""User persistence on advanced-alchemy's repository service, and the admin rules."""

from __future__ import annotations

import unicodedata
import uuid

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar.exceptions import ValidationException

from modules.users.models import ROLE_ADMIN, User


class UserNotFoundError(LookupError):
    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(f"no user with id {user_id}")


class SelfLockoutError(ValueError):
    """An admin tried to demote, deactivate or delete themselves."""


class InvalidEmailError(ValidationException, ValueError):
    """An email that an admin's user list could show as another one (invisible, bidi or
    control characters, look-alike letters of mixed scripts): a 422 naming the field.
    A ValueError too, so the command line reports it like its other input errors."""

    def __init__(self, problem: str, field: str = "email") -> None:
        super().__init__(
            detail=f"invalid request: {field}: {problem}",
            status_code=422,
            extra=[{"key": field, "message": problem, "source": "body"}],
        )
        self.problem = problem
        self.field = field


MAX_EMAIL_CHARS = 320
# Invisible but not of the categories below (Default_Ignorable_Code_Point letters and
# marks): Hangul fillers, the grapheme joiner, variation selectors.
_INVISIBLE = frozenset(
    [
        *(0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0),
        *range(0x180B, 0x1810),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    ]
)
# Control (Cc), format (Cf: zero-width, bidi controls, tags), surrogate, private-use,
# unassigned, and every separator (emails hold no spaces).
_REFUSED_CATEGORIES = frozenset(["Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"])
# Scripts that honest addresses mix (UTS #39's "highly restrictive" level): Latin with
# Japanese, Chinese or Korean writing. Any other mix in one label is refused.
_HONEST_MIXES = (
    frozenset(["LATIN", "HAN", "HIRAGANA", "KATAKANA"]),
    frozenset(["LATIN", "HAN", "BOPOMOFO"]),
    frozenset(["LATIN", "HAN", "HANGUL"]),
)


def normalize_email(email: str) -> str:
    """Emails are unique case-insensitively, and NFKC-normalized (full-width letters are
    ASCII ones): they are stored trimmed, normalized and lower-cased."""
    return unicodedata.normalize("NFKC", email).strip().lower()


def _script(letter: str) -> str:
    # The script is the first word of a letter's Unicode name ("LATIN SMALL LETTER A",
    # "CYRILLIC SMALL LETTER A", "CJK UNIFIED IDEOGRAPH-4E2D"): the stdlib has no script
    # property, and for telling look-alikes apart this is enough.
    name = unicodedata.name(letter, "UNKNOWN")
    return "HAN" if name.startswith("CJK") else name.split(" ", 1)[0]


def _mixed_scripts(label: str) -> list[str]:
    """The scripts of a label's letters when they mix in a way honest addresses do not
    (Latin with Cyrillic or Greek look-alikes); empty when the label is fine."""
    scripts = {_script(c) for c in label if unicodedata.category(c).startswith("L")}
    if len(scripts) <= 1 or any(scripts <= mix for mix in _HONEST_MIXES):
        return []
    return sorted(scripts)


def checked_email(email: str, *, refuse_mixed_scripts: bool, field: str = "email") -> str:
    """A new account's (or a changed) email, normalized; raises InvalidEmailError for
    one that could pass for another: invisible, bidirectional or control characters,
    and (with EMAIL_REFUSE_MIXED_SCRIPTS) letters of mixed scripts in one label."""
    normal = normalize_email(email)
    hidden = sorted(
        {
            f"U+{ord(c):04X}"
            for c in normal
            if ord(c) in _INVISIBLE or unicodedata.category(c) in _REFUSED_CATEGORIES
        }
    )
    if hidden:
        raise InvalidEmailError(
            "must not contain invisible, bidirectional, control or space characters "
            f"(found {', '.join(hidden[:5])})",
            field,
        )
    local, _, domain = normal.rpartition("@")
    labels = domain.split(".")
    if not local or "@" in local or len(labels) < 2 or not all(labels):
        raise InvalidEmailError("is not an email address after Unicode normalization", field)
    if len(normal) > MAX_EMAIL_CHARS:
        raise InvalidEmailError(f"must be at most {MAX_EMAIL_CHARS} characters long", field)
    if refuse_mixed_scripts:
        for label in (local, *labels):
            scripts = _mixed_scripts(label)
            if scripts:
                raise InvalidEmailError(
                    f"mixes letters of the {', '.join(scripts)} scripts in {label!r}, "
                    "as look-alike addresses do (EMAIL_REFUSE_MIXED_SCRIPTS)",
                    field,
                )
    return normal


class UserRepository(SQLAlchemyAsyncRepository[User]):
    model_type = User


class UserService(SQLAlchemyAsyncRepositoryService[User, UserRepository]):
    """CRUD on users plus the look-ups auth needs."""

    repository_type = UserRepository

    async def get_by_email(self, email: str) -> User | None:
        return await self.get_one_or_none(User.email == normalize_email(email))

    async def get_existing(self, user_id: uuid.UUID) -> User:
        user = await self.get_one_or_none(User.id == user_id)
        if user is None:
            raise UserNotFoundError(user_id)
        return user

    async def change_access(
        self, actor: User, user_id: uuid.UUID, *, role: str | None, is_active: bool | None
    ) -> User:
        """An admin changes a user's role or deactivates them (never themselves)."""
        user = await self.get_existing(user_id)
        if user.id == actor.id and (
            is_active is False or (role is not None and role != ROLE_ADMIN)
        ):
            raise SelfLockoutError("admins cannot demote or deactivate themselves")
        if role is not None:
            user.role = role
        if is_active is not None:
            user.is_active = is_active
        return await self.update(user)

    async def remove(self, actor: User, user_id: uuid.UUID) -> None:
        """Delete a user and everything they own (ON DELETE CASCADE)."""
        if user_id == actor.id:
            raise SelfLockoutError("admins cannot delete themselves")
        await self.get_existing(user_id)
        await self.delete(user_id)


provide_users_service = create_service_provider(UserService)
