"""Commands of the web platform, mounted on the ``communitybots`` CLI:
``communitybots serve SURVEY.yaml`` and ``communitybots admin create USERNAME``.

Heavy imports (FastAPI, SQLAlchemy, uvicorn) happen inside the commands so that the
other subcommands start fast.
"""

from __future__ import annotations

import json
import os
import sys
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
    secure_cookies: Annotated[bool, typer.Option(help="mark cookies Secure (behind HTTPS)")] = False,
    workers: Annotated[int, typer.Option(
        help="server processes; they share nothing but the database")] = 1,
) -> None:
    """Run the platform: participants at /, researchers at /admin (offline, no CDN)."""
    import uvicorn

    from communitybots.spec import SpecError, load_survey
    from communitybots.store import make_engine, migrate

    try:
        load_survey(survey)
    except SpecError as err:
        typer.echo(f"error: {survey}: {err}", err=True)
        raise typer.Exit(1) from None
    engine = make_engine(database_url)
    migrate(engine)  # once, before any worker starts
    engine.dispose()
    os.environ[_SERVE_ENV] = json.dumps({
        "survey": str(survey.resolve()), "database_url": database_url, "relevance": relevance,
        "max_message_chars": max_message_chars, "rate_limit_messages": rate_limit,
        "secure_cookies": secure_cookies})
    typer.echo(f"CommunityBots: participants http://{host}:{port}/ · researchers "
               f"http://{host}:{port}/admin · database {_redact(database_url)}")
    # keep idle connections longer than a participant takes to type (uvicorn's 5 s default
    # closes them while the browser may be reusing them)
    uvicorn.run("communitybots.web.commands:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="info", access_log=False, timeout_keep_alive=75)


_SERVE_ENV = "COMMUNITYBOTS_SERVE"


def app_from_env() -> Any:
    """The app of ``serve`` (built in each worker process from the parent's options)."""
    from .app import create_app
    from .settings import Settings

    options = json.loads(os.environ[_SERVE_ENV])
    survey = options.pop("survey")
    return create_app(survey, Settings(migrate=False, **options))


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@admin_app.command("create")
def admin_create(
    username: Annotated[str, typer.Argument(help="login name")],
    database_url: DatabaseOption = DEFAULT_DATABASE_URL,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="read the password from the first line of stdin")] = False,
) -> None:
    """Create a researcher account (the password is hashed with argon2id)."""
    from communitybots.store import make_engine, migrate, session_factory

    from .accounts import AccountError, create_admin

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with session_factory(engine)() as db:
            create_admin(db, username, password)
    except AccountError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"created researcher account {username!r} in {_redact(database_url)}")


__all__ = ["admin_app", "serve"]
