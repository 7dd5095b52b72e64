"""Registration, login, rotating refresh tokens with reuse detection, logout."""

from __future__ import annotations

import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from modules.auth.guards import login_family
from modules.auth.models import ApiKey, RefreshToken
from modules.auth.passwords import PasswordHasher
from modules.auth.policy import password_problems
from modules.auth.tokens import InvalidTokenError, IssuedToken, TokenCodec
from modules.ratelimit import RateLimiter
from modules.users.models import ROLE_ADMIN, ROLE_USER, User
from modules.users.schemas import UserSelfUpdate
from modules.users.service import UserService, checked_email, normalize_email


class AuthError(Exception):
    """A failed authentication step; `status_code` says how the API reports it."""

    def __init__(self, detail: str, status_code: int = 401) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


class PasswordPolicyError(ValueError):
    def __init__(self, problems: list[str], field: str = "password") -> None:
        super().__init__(f"{field} " + "; ".join(problems))
        self.problems = problems
        self.field = field


class EmailTakenError(ValueError):
    pass


class RegistrationClosedError(PermissionError):
    """Self-service registration is off (ALLOW_REGISTRATION=false)."""


class ApiKeyNotAllowedError(PermissionError):
    """An API key tried what needs a password-confirmed login."""


class WrongPasswordError(ValueError):
    """The current password, asked for to confirm a change, is wrong."""


INVALID_CREDENTIALS = "invalid email or password"
T = TypeVar("T")


async def active_user_of_login(
    session: AsyncSession, user_id: uuid.UUID, family_id: uuid.UUID
) -> User | None:
    """The user of an access token, if active and if the token's login (refresh-token
    family) has not been revoked. One query: it runs on every request."""
    revoked = exists().where(
        RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_not(None)
    )
    user: User | None = await session.scalar(
        select(User).where(User.id == user_id, User.is_active.is_(True), ~revoked)
    )
    return user


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


class AuthService:
    """Holds the auth logic; one instance per request, on that request's DB session."""

    def __init__(
        self,
        session: AsyncSession,
        users: UserService,
        hasher: PasswordHasher,
        codec: TokenCodec,
        *,
        password_min_length: int,
        allow_registration: bool = True,
        bootstrap_admin_email: str = "",
        refuse_mixed_scripts: bool = True,
        limiter: RateLimiter | None = None,
        client_ip: str = "unknown",
        client_is_local: bool = False,
    ) -> None:
        self.session = session
        self.users = users
        self.hasher = hasher
        self.codec = codec
        self.password_min_length = password_min_length
        self.allow_registration = allow_registration
        self.bootstrap_admin_email = normalize_email(bootstrap_admin_email)
        self.refuse_mixed_scripts = refuse_mixed_scripts
        self.limiter = limiter
        self.client_ip = client_ip
        # From the server's own machine, not through a proxy (modules.auth.gate).
        self.client_is_local = client_is_local

    def check_password_policy(
        self, password: str, email: str = "", field: str = "password"
    ) -> None:
        problems = password_problems(password, min_length=self.password_min_length, email=email)
        if problems:
            raise PasswordPolicyError(problems, field)

    async def sign_up(self, email: str, password: str) -> User:
        """Self-service registration, with the `user` role, where the server allows it
        (the route counts it against the address first). The BOOTSTRAP_ADMIN_EMAIL account,
        while no admin exists, registers as the first admin (registration closed or not),
        but only from the server's own machine: nobody else can claim it by registering
        first, and until an admin exists nobody else may register that email at all."""
        bootstrap = (
            bool(self.bootstrap_admin_email)
            and normalize_email(email) == self.bootstrap_admin_email
            and not await self.users.exists(User.role == ROLE_ADMIN)
        )
        if bootstrap and not self.client_is_local:
            raise RegistrationClosedError(
                "this email is kept for the first admin, who registers from the server's "
                "own machine (a loopback address, not through a proxy) or is made with "
                "`llm-service create-admin`"
            )
        if not self.allow_registration and not bootstrap:
            raise RegistrationClosedError("registration is disabled on this server")
        return await self.register(email, password, role=ROLE_ADMIN if bootstrap else ROLE_USER)

    async def register(self, email: str, password: str, role: str = ROLE_USER) -> User:
        """A new account. Its email is NFKC-normalized and refused when it could pass for
        another (invisible or bidi characters, mixed scripts); its password is checked
        against the policy, length included, before it is hashed."""
        email = checked_email(email, refuse_mixed_scripts=self.refuse_mixed_scripts)
        self.check_password_policy(password, email)
        if await self.users.get_by_email(email) is not None:
            raise EmailTakenError(f"an account with email {email} already exists")
        password_hash = await self.hasher.hash(password)
        return await self.users.create(
            User(email=email, password_hash=password_hash, role=role, is_active=True)
        )

    async def authenticate(self, email: str, password: str) -> User:
        """The user with these credentials. An unknown email gets the same answer after the
        same work (one argon2 verify) as a wrong password, whatever the password."""
        user = await self.users.get_by_email(email)
        if user is None:
            await self.hasher.verify_dummy(password)
            raise AuthError(INVALID_CREDENTIALS)
        matches, new_hash = await self.hasher.verify(password, user.password_hash)
        if not matches:
            raise AuthError(INVALID_CREDENTIALS)
        if not user.is_active:
            # Only said to someone who knows the password, so it leaks nothing.
            raise AuthError("this account is deactivated", status_code=403)
        if new_hash is not None:
            user.password_hash = new_hash
            await self.users.update(user)
        return user

    async def login(self, email: str, password: str) -> TokenPair:
        """A login; its route counted the attempt against the address already."""
        user = await self._throttled(email, self.authenticate(email, password), by_address=False)
        return await self._issue_pair(user, family_id=uuid.uuid4())

    async def start_session(self, email: str, password: str) -> tuple[User, IssuedToken, uuid.UUID]:
        """A browser login: its own family, like `login`, and one access token that lives
        as long as a refresh token would (it sits in an HttpOnly cookie, and the family's
        revocation ends it like any other login). Its route counted the attempt against
        the address already."""
        user = await self._throttled(email, self.authenticate(email, password), by_address=False)
        family_id = uuid.uuid4()
        self._record_family(user, family_id)
        access = self.codec.issue_access(user.id, user.role, family_id, self.codec.refresh_ttl)
        return user, access, family_id

    async def _throttled(self, email: str, check: Coroutine[Any, Any, T], *, by_address: bool) -> T:
        """A password check, counted per account and client address: wrong guesses lock
        out that address for that account, never the account's owner elsewhere. With
        `by_address`, the attempt also counts against the address's login limit; the
        login routes count that before they read the body (modules.auth.gate)."""
        email = normalize_email(email)
        if self.limiter is None:
            return await check
        try:
            if by_address:
                await self.limiter.count_login_attempt(self.client_ip)
            await self.limiter.check_account(self.client_ip, email)
        except BaseException:
            check.close()
            raise
        try:
            return await check
        except (AuthError, WrongPasswordError):
            await self.limiter.record_login_failure(self.client_ip, email)
            raise

    async def refresh(self, refresh_token: str) -> TokenPair:
        try:
            claims = self.codec.decode(refresh_token, "refresh")
        except InvalidTokenError as exc:
            raise AuthError("invalid refresh token") from exc
        now = datetime.now(UTC)
        # Atomic: of two concurrent uses of one token, exactly one wins.
        result = await self.session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == claims["jti"],
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(used_at=now)
            .returning(RefreshToken.user_id, RefreshToken.family_id)
        )
        row = result.one_or_none()
        if row is None:
            # Used before, revoked, or never issued: treat as theft and end the whole family.
            await self.revoke_family(claims["fam"])
            # Committed here: the error answer rolls the request's transaction back, and
            # the revocation must stand.
            await self.session.commit()
            raise AuthError("refresh token was already used or revoked; this login was ended")
        user = await self.users.get_one_or_none(User.id == row.user_id)
        if user is None or not user.is_active:
            await self.session.rollback()
            raise AuthError("invalid refresh token")
        return await self._issue_pair(user, family_id=row.family_id)

    async def revoke_family(self, family_id: uuid.UUID) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )

    async def logout(self, family_id: uuid.UUID) -> None:
        await self.revoke_family(family_id)

    async def _confirm(self, user: User, password: str) -> None:
        matches, _ = await self.hasher.verify(password, user.password_hash)
        if not matches:
            raise WrongPasswordError("current_password is wrong")

    async def end_logins(self, user_id: uuid.UUID, keep: uuid.UUID | None = None) -> None:
        """Revoke every login (refresh-token family) of the user but `keep`: their refresh
        and access tokens stop working at once."""
        statement = update(RefreshToken).where(
            RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
        )
        if keep is not None:
            statement = statement.where(RefreshToken.family_id != keep)
        await self.session.execute(statement.values(revoked_at=datetime.now(UTC)))

    async def end_all_sessions(self, user_id: uuid.UUID, keep: uuid.UUID | None = None) -> None:
        """Every login (but `keep`) and every API key of the user, for good: reactivating
        the user does not bring them back."""
        await self.end_logins(user_id, keep)
        await self.session.execute(
            update(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )

    async def update_credentials(
        self, user: User, change: UserSelfUpdate, credential: object
    ) -> User:
        """Change one's email or password; the current password confirms either. Every
        other login and every API key of the user end: whoever knew the old credentials
        is out."""
        login = login_family(credential)
        if login is None:
            raise ApiKeyNotAllowedError(
                "an API key cannot change the email or password; log in with your password"
            )
        email, new_password = change.email, change.new_password
        await self._throttled(
            user.email, self._confirm(user, change.current_password), by_address=True
        )
        if email is not None:
            email = checked_email(email, refuse_mixed_scripts=self.refuse_mixed_scripts)
            other = await self.users.get_by_email(email)
            if other is not None and other.id != user.id:
                raise EmailTakenError(f"email {email} is already in use")
            user.email = email
        if new_password is not None:
            self.check_password_policy(new_password, user.email, field="new_password")
            user.password_hash = await self.hasher.hash(new_password)
        user = await self.users.update(user)
        # This login, which the current password just confirmed, goes on.
        await self.end_all_sessions(user.id, keep=login)
        return user

    def _record_family(self, user: User, family_id: uuid.UUID) -> IssuedToken:
        """The login's refresh token, stored: revoking its family ends the login."""
        refresh = self.codec.issue_refresh(user.id, family_id)
        self.session.add(
            RefreshToken(
                id=refresh.jti,
                user_id=user.id,
                family_id=family_id,
                expires_at=refresh.expires_at,
            )
        )
        return refresh

    async def _issue_pair(self, user: User, family_id: uuid.UUID) -> TokenPair:
        refresh = self._record_family(user, family_id)
        access = self.codec.issue_access(user.id, user.role, family_id)
        return TokenPair(
            access_token=access.token,
            refresh_token=refresh.token,
            expires_in=int(self.codec.access_ttl.total_seconds()),
            refresh_expires_in=int(self.codec.refresh_ttl.total_seconds()),
        )
