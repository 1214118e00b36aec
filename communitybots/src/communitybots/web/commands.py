"""Commands of the web platform, mounted on the ``communitybots`` CLI:
``communitybots serve SURVEY.yaml``, ``communitybots admin create USERNAME`` and
``communitybots purge SURVEY.yaml``.

Heavy imports (FastAPI, SQLAlchemy, uvicorn) happen inside the commands so that the
other subcommands start fast.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from communitybots.store import DEFAULT_DATABASE_URL

admin_app = typer.Typer(help="Researcher accounts of the web platform.", no_args_is_help=True)

DatabaseOption = Annotated[str, typer.Option(
    "--database-url", envvar="DATABASE_URL",
    help="SQLAlchemy URL: sqlite:///file.sqlite3 (default) or postgresql+psycopg://user:pw@host/db")]


def serve(
    survey: Annotated[Path, typer.Argument(help="survey YAML file")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    database_url: DatabaseOption = DEFAULT_DATABASE_URL,
    relevance: Annotated[str | None, typer.Option(
        help="NLU relevance backend: tfidf | embeddings | auto (default: the survey's)")] = None,
    max_message_chars: Annotated[int, typer.Option(help="longest message accepted")] = 2000,
    rate_limit: Annotated[int, typer.Option(help="messages per participant per minute")] = 20,
    secure_cookies: Annotated[bool, typer.Option(
        help="mark cookies Secure even on requests seen as plain HTTP (HTTPS requests "
             "always get Secure cookies and HSTS)")] = False,
    forwarded_allow_ips: Annotated[str, typer.Option(
        help="proxies whose X-Forwarded-For/-Proto are trusted (comma-separated addresses, "
             "'*' for any); '' trusts none")] = "127.0.0.1",
    consents_per_address: Annotated[int, typer.Option(
        help="new participants one client address may start per hour (0: no limit)")] = 20,
    max_participants: Annotated[int | None, typer.Option(
        help="the study's quota: consent closes after this many participants")] = None,
    session_idle_minutes: Annotated[float, typer.Option(
        help="a participant session with no message for this long ends")] = 120.0,
    wizard_fallback_s: Annotated[float | None, typer.Option(
        help="wizard condition: the CTM answers a message no researcher answered for "
             "this many seconds (default: wait for a researcher)")] = None,
    max_body_kib: Annotated[int, typer.Option(
        help="largest request body accepted, in KiB (refused while reading)")] = 256,
    workers: Annotated[int | None, typer.Option(
        help="server processes; they share nothing but the database "
             "(default: one per CPU core this process may use)")] = None,
) -> None:
    """Run the platform: participants at /, researchers at /admin (offline, no CDN)."""
    import uvicorn

    from communitybots.spec import SpecError, load_survey
    from communitybots.store import make_engine, migrate

    try:
        spec = load_survey(survey)
    except SpecError as err:
        typer.echo(f"error: {survey}: {err}", err=True)
        raise typer.Exit(1) from None
    if wizard_fallback_s is not None and wizard_fallback_s <= 0:
        typer.echo(f"error: --wizard-fallback-s must be > 0 seconds (leave it out to wait "
                   f"for a researcher), got {wizard_fallback_s:g}", err=True)
        raise typer.Exit(2)
    workers = workers or default_workers()
    engine = make_engine(database_url)
    migrate(engine)  # once, before any worker starts
    if spec.retention_days is not None:  # and the purge of the retention period
        from communitybots import records
        from communitybots.store import session_factory

        with session_factory(engine)() as db:
            purged = records.purge(db, spec.retention_days)
        typer.echo(f"retention: purged the raw text of {purged} participant"
                   f"{'s' if purged != 1 else ''} inactive for more than "
                   f"{spec.retention_days} days")
    engine.dispose()
    os.environ[_SERVE_ENV] = json.dumps({
        "survey": str(survey.resolve()), "database_url": database_url, "relevance": relevance,
        "max_message_chars": max_message_chars, "rate_limit_messages": rate_limit,
        "secure_cookies": secure_cookies, "consents_per_address": consents_per_address,
        "max_participants": max_participants, "session_idle_minutes": session_idle_minutes,
        "wizard_fallback_s": wizard_fallback_s,
        "max_body_bytes": max_body_kib * 1024})
    typer.echo(f"CommunityBots: participants http://{host}:{port}/ · researchers "
               f"http://{host}:{port}/admin · database {_redact(database_url)} · "
               f"{workers} worker process{'es' if workers != 1 else ''}")
    # keep idle connections longer than a participant takes to type (uvicorn's 5 s default
    # closes them while the browser may be reusing them)
    # behind a proxy, the client's address and scheme come from X-Forwarded-For/-Proto,
    # trusted only from --forwarded-allow-ips: the per-address limits and HTTPS detection
    # depend on them
    uvicorn.run("communitybots.web.commands:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="info", access_log=False, timeout_keep_alive=75,
                proxy_headers=bool(forwarded_allow_ips),
                forwarded_allow_ips=forwarded_allow_ips or None)


_SERVE_ENV = "COMMUNITYBOTS_SERVE"


def default_workers() -> int:
    """Server processes of ``serve`` by default: the CPU cores this process may run on
    (its affinity, e.g. a container's CPU set), at least one. Safe because the workers
    share nothing but the database: sessions, CTM state, rate limits and the login and
    consent throttles are all rows, and the only in-memory caches (the CTM engines per
    survey version, the NLU models) are built from immutable inputs."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def app_from_env() -> Any:
    """The app of ``serve`` (built in each worker process from the parent's options)."""
    from .app import create_app
    from .settings import Settings

    options = json.loads(os.environ[_SERVE_ENV])
    survey = options.pop("survey")
    app = create_app(survey, Settings(migrate=False, **options))
    # the worker's long-lived objects (the NLU models, SQLAlchemy's tables and caches, the
    # survey: about 230,000) leave the cyclic garbage collector's view: a full collection
    # walked them all, 0.3 s on the 2-core build machine during which the worker answered
    # nothing; what requests allocate is collected as before
    gc.collect()
    gc.freeze()
    return app


def _redact(url: str) -> str:
    """The URL without its password; a SQLite file with its absolute path (a relative
    one lies in the working directory, so two commands run from two folders would use
    two databases)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername.startswith("sqlite") and parsed.database and parsed.database != ":memory:":
        shown += f" ({Path(parsed.database).resolve()})"
    return shown


def purge(
    survey: Annotated[Path, typer.Argument(help="survey YAML file (its retention_days)")],
    days: Annotated[int | None, typer.Option(
        help="purge raw text of participants inactive for more than this many days "
             "(default: the survey's retention_days)")] = None,
    database_url: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Blank the raw text (messages, free-text answers) of participants past the
    retention period; measures stay; each purge is in the audit log."""
    from communitybots import records
    from communitybots.spec import SpecError, load_survey
    from communitybots.store import make_engine, migrate, session_factory

    try:
        spec = load_survey(survey)
    except SpecError as err:
        typer.echo(f"error: {survey}: {err}", err=True)
        raise typer.Exit(2) from None
    days = days if days is not None else spec.retention_days
    if days is None or days < 1:
        typer.echo("error: no retention period: set retention_days in the survey file or "
                   "pass --days N (N >= 1)", err=True)
        raise typer.Exit(2)
    engine = make_engine(database_url)
    migrate(engine)
    try:
        with session_factory(engine)() as db:
            n = records.purge(db, days)
    finally:
        engine.dispose()
    typer.echo(f"purged the raw text of {n} participant{'s' if n != 1 else ''} inactive for "
               f"more than {days} days in {_redact(database_url)}")


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@contextmanager
def _accounts(database_url: str) -> Iterator[tuple[Any, Any]]:
    """(database session, engine) on a migrated database; AccountError -> one line, exit 1."""
    from communitybots.store import make_engine, migrate, session_factory

    from .accounts import AccountError

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with session_factory(engine)() as db:
            yield db, engine
    except AccountError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


@admin_app.command("create")
def admin_create(
    username: Annotated[str, typer.Argument(help="login name")],
    database_url: DatabaseOption = DEFAULT_DATABASE_URL,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="read the password from the first line of stdin")] = False,
) -> None:
    """Create a researcher account (the password is hashed with argon2id; common and
    easily guessed passwords are refused)."""
    from .accounts import create_admin

    password = _password(password_stdin)
    with _accounts(database_url) as (db, _engine):
        create_admin(db, username, password)
    typer.echo(f"created researcher account {username!r} in {_redact(database_url)}")


@admin_app.command("list")
def admin_list(database_url: DatabaseOption = DEFAULT_DATABASE_URL) -> None:
    """List the researcher accounts: name, state, last login, open sessions."""
    from sqlalchemy import func, select

    from communitybots.store import Admin, AdminSession, utcnow

    with _accounts(database_url) as (db, _engine):
        open_ = dict(db.execute(select(AdminSession.admin_id, func.count(AdminSession.id))
                                .where(AdminSession.expires_at > utcnow())
                                .group_by(AdminSession.admin_id)).all())
        admins = db.scalars(select(Admin).order_by(Admin.username)).all()
        if not admins:
            typer.echo("no researcher accounts")
        for a in admins:
            state = "disabled" if a.disabled_at else "enabled"
            last = a.last_login_at.strftime("%Y-%m-%d %H:%M") if a.last_login_at else "never"
            typer.echo(f"{a.username}\t{state}\tlast login {last}\t"
                       f"{open_.get(a.id, 0)} open session(s)")


@admin_app.command("disable")
def admin_disable(username: Annotated[str, typer.Argument(help="login name")],
                  database_url: DatabaseOption = DEFAULT_DATABASE_URL) -> None:
    """Disable an account: its sessions end and it cannot log in until enabled."""
    from .accounts import get_admin, set_disabled

    with _accounts(database_url) as (db, _engine):
        set_disabled(db, get_admin(db, username), True)
    typer.echo(f"disabled {username!r}; its sessions have ended")


@admin_app.command("enable")
def admin_enable(username: Annotated[str, typer.Argument(help="login name")],
                 database_url: DatabaseOption = DEFAULT_DATABASE_URL) -> None:
    """Enable a disabled account again."""
    from .accounts import get_admin, set_disabled

    with _accounts(database_url) as (db, _engine):
        set_disabled(db, get_admin(db, username), False)
    typer.echo(f"enabled {username!r}")


@admin_app.command("delete")
def admin_delete(username: Annotated[str, typer.Argument(help="login name")],
                 database_url: DatabaseOption = DEFAULT_DATABASE_URL,
                 yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False) -> None:
    """Delete an account with its sessions (participants' data is not touched)."""
    from .accounts import delete_admin, get_admin

    with _accounts(database_url) as (db, _engine):
        admin = get_admin(db, username)
        if not yes and not typer.confirm(f"Delete researcher account {username!r}?"):
            raise typer.Exit(1)
        delete_admin(db, admin)
    typer.echo(f"deleted researcher account {username!r}")


@admin_app.command("reset-password")
def admin_reset_password(
    username: Annotated[str, typer.Argument(help="login name")],
    database_url: DatabaseOption = DEFAULT_DATABASE_URL,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="read the password from the first line of stdin")] = False,
) -> None:
    """Set a new password: every session and remembered browser of the account ends and
    its failed-login counter is cleared."""
    from .accounts import get_admin, set_password

    password = _password(password_stdin)
    with _accounts(database_url) as (db, engine):
        set_password(db, engine, get_admin(db, username), password)
    typer.echo(f"new password set for {username!r}; its sessions have ended")


@admin_app.command("revoke-sessions")
def admin_revoke_sessions(username: Annotated[str, typer.Argument(help="login name")],
                          database_url: DatabaseOption = DEFAULT_DATABASE_URL) -> None:
    """End every login session of an account (it logs in again with its password)."""
    from .accounts import get_admin, revoke_sessions

    with _accounts(database_url) as (db, _engine):
        ended = revoke_sessions(db, get_admin(db, username))
    typer.echo(f"ended {ended} session(s) of {username!r}")


@admin_app.command("unlock")
def admin_unlock(username: Annotated[str, typer.Argument(help="login name")],
                 database_url: DatabaseOption = DEFAULT_DATABASE_URL) -> None:
    """Clear the failed-login counter of an account (after guessing from elsewhere
    locked it, for a login from a new browser)."""
    from .accounts import get_admin, unlock

    with _accounts(database_url) as (db, engine):
        unlock(engine, get_admin(db, username).username)
    typer.echo(f"cleared the failed logins of {username!r}")


__all__ = ["admin_app", "serve"]
