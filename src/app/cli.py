"""`llm-service serve | migrate | create-admin`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from pydantic import ValidationError

from app.compute_threads import configure_thread_waiting
from modules.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Settings are named after their environment variables, in upper case.
        errors = "; ".join(
            f"{'.'.join(map(str, e['loc'])).upper() or 'SETTINGS'}: {e['msg']}"
            for e in exc.errors()
        )
        sys.exit(f"llm-service: invalid configuration: {errors}")


def serve(args: argparse.Namespace) -> None:
    settings = _settings()
    # First: OpenMP reads how its threads wait when llama.cpp loads, with the imports below.
    configure_thread_waiting(settings.llm_threads_wait)

    from app import create_app
    from app.migrations import pending_migrations, upgrade_to_head
    from app.shutdown import run_server

    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    try:
        specs = settings.model_specs()
        settings.fallbacks([alias for alias, _ in specs])
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"llm-service: {exc}")
    if settings.llm_gpu_layers and not _gpu_offload_supported():
        sys.exit(
            f"llm-service: LLM_GPU_LAYERS={settings.llm_gpu_layers} asks for GPU offload, but "
            "this build of llama-cpp-python is CPU-only: rebuild it for your GPU (README: GPU) "
            "or set LLM_GPU_LAYERS=0"
        )
    from modules.llm.inference.descriptions import redact

    missing = [
        f"{alias}={redact(str(target))}"  # the file's name: a log shows no directories
        for alias, target in specs
        if not isinstance(target, str) and not target.is_file()
    ]
    if len(missing) == len(specs):
        sys.exit(f"llm-service: no model file found: {', '.join(missing)}")
    for entry in missing:  # the others serve; /llm/models shows this one as failed
        print(f"llm-service: warning: model file not found: {entry}", file=sys.stderr)
    if settings.uses_embedded_database:
        # The embedded default needs no operator: bring its schema up to date on start.
        upgrade_to_head(settings.effective_database_url)
    else:
        try:
            problem = pending_migrations(settings.effective_database_url)
        except Exception as exc:  # unreachable, wrong credentials: say so, no traceback
            sys.exit(f"llm-service: cannot reach the database: {type(exc).__name__}: {exc}")
        if problem:
            sys.exit(f"llm-service: {problem}")
    run_server(create_app(settings), settings)


def migrate(_: argparse.Namespace) -> None:
    from app.migrations import upgrade_to_head

    settings = _settings()
    upgrade_to_head(settings.effective_database_url)
    print(f"database at head: {_redact(settings.effective_database_url)}")


def create_admin(args: argparse.Namespace) -> None:
    settings = _settings()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            sys.exit("llm-service: passwords differ")
    try:
        message = asyncio.run(_create_admin(settings, args.email, password))
    except ValueError as exc:
        sys.exit(f"llm-service: {exc}")
    print(message)


@contextlib.asynccontextmanager
async def _database_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on the configured database for one command; the embedded default is
    brought up to date first, as `serve` would."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app.database import metadata  # noqa: F401  (registers every table)
    from app.migrations import upgrade_to_head

    if settings.uses_embedded_database:
        await asyncio.to_thread(upgrade_to_head, settings.effective_database_url)
    engine = create_async_engine(settings.effective_database_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            yield session
    finally:
        await engine.dispose()


async def _create_admin(settings: Settings, email: str, password: str) -> str:
    from modules.auth import PasswordHasher
    from modules.auth.policy import password_problems
    from modules.users import ROLE_ADMIN, UserService, checked_email
    from modules.users.models import User

    # Checked as registration checks it: no invisible, bidi or control characters, and no
    # mixed scripts where the setting refuses them.
    email = checked_email(email, refuse_mixed_scripts=settings.email_refuse_mixed_scripts)
    problems = password_problems(password, min_length=settings.password_min_length, email=email)
    if problems:
        raise ValueError("password " + "; ".join(problems))
    # Said out loud: run from another directory, the embedded default is another file.
    where = _redact(settings.effective_database_url)
    async with _database_session(settings) as session:
        users = UserService(session=session)
        password_hash = await PasswordHasher().hash(password)
        existing = await users.get_by_email(email)
        if existing is not None:
            existing.role, existing.is_active, existing.password_hash = (
                ROLE_ADMIN,
                True,
                password_hash,
            )
            await users.update(existing, auto_commit=True)
            return f"{email} is now an admin (password reset) in {where}"
        await users.create(
            User(email=email, password_hash=password_hash, role=ROLE_ADMIN, is_active=True),
            auto_commit=True,
        )
        return f"admin {email} created in {where}"


def create_api_key(args: argparse.Namespace) -> None:
    """An API key for an existing user, printed once: what a gateway uses to reach this
    service as its inference node."""
    settings = _settings()
    try:
        secret = asyncio.run(_create_api_key(settings, args.email, args.name))
    except LookupError as exc:
        sys.exit(f"llm-service: {exc.args[0]}")
    print(secret)


async def _create_api_key(settings: Settings, email: str, name: str) -> str:
    from modules.auth.api_keys import ApiKeyService
    from modules.users import UserService, normalize_email

    async with _database_session(settings) as session:
        user = await UserService(session=session).get_by_email(normalize_email(email))
        if user is None or not user.is_active:
            where = _redact(settings.effective_database_url)
            raise LookupError(f"no active user {email} in {where}")
        _, secret = await ApiKeyService(session=session).issue(user.id, name, None)
        await session.commit()
        return secret


def _gpu_offload_supported() -> bool:
    from modules.llm.inference.llamacpp import gpu_offload_supported

    return gpu_offload_supported()


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llm-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="serve the API (migrates the embedded DB)")
    serve_parser.add_argument("--host", help="bind address (default HOST or 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port (default PORT or 8000)")
    serve_parser.set_defaults(handler=serve)

    migrate_parser = commands.add_parser(
        "migrate", help="upgrade DATABASE_URL to the latest schema"
    )
    migrate_parser.set_defaults(handler=migrate)

    admin_parser = commands.add_parser("create-admin", help="create (or promote) an admin user")
    admin_parser.add_argument("--email", required=True)
    admin_parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    admin_parser.set_defaults(handler=create_admin)

    key_parser = commands.add_parser(
        "create-api-key", help="issue an API key for a user and print it (shown once)"
    )
    key_parser.add_argument("--email", required=True)
    key_parser.add_argument("--name", default="gateway", help="what the key is for")
    key_parser.set_defaults(handler=create_api_key)

    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
