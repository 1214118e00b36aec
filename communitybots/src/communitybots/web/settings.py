"""Settings of one running platform (what ``communitybots serve`` passes in)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from communitybots.store import DEFAULT_DATABASE_URL

#: the conditions drawn by the block randomization (compared on the dashboard)
CONDITIONS: tuple[str, ...] = ("multi", "single")
#: Wizard-of-Oz: the multi-agent page, answered by a signed-in researcher (link only)
WIZARD = "wizard"
#: the conditions a link may force (``/?condition=wizard``)
LINK_CONDITIONS: tuple[str, ...] = (*CONDITIONS, WIZARD)


@dataclass(frozen=True)
class Settings:
    """Settings of the web platform.

    Attributes:
        database_url (str): SQLAlchemy URL; ``DATABASE_URL`` or a SQLite file
            ``communitybots.sqlite3`` in the working directory by default.
        max_message_chars (int): longest participant message accepted (default 2000).
        rate_limit_messages (int): messages one participant may send per window
            (default 20).
        rate_limit_window_s (float): the rate-limit window in seconds (default 60).
        secure_cookies (bool): mark cookies ``Secure`` even on requests that arrived as
            plain HTTP (a TLS proxy that sends no ``X-Forwarded-Proto``); requests seen
            as HTTPS always get ``Secure`` cookies and HSTS (default False).
        admin_session_hours (float): lifetime of a researcher login (default 12).
        max_body_bytes (int): largest request body read; a longer one is refused with
            413 while it is being read (default 256 KiB).
        consents_per_address (int): consents one client address may make per
            ``consent_window_s`` (default 20; 0: no limit).
        consent_window_s (float): the window of ``consents_per_address`` (default 3600).
        max_participants (int | None): the study's quota; consent is refused once this
            many participants (not excluded) took part (default None: no quota).
        session_idle_minutes (float): a participant session with no message for this
            long ends: its cookie opens nothing more (default 120).
        migrate (bool): run Alembic migrations at start-up (default True).
        relevance (str | None): relevance backend of the NLU ("tfidf" | "embeddings" |
            "auto"); None keeps the survey's ``nlu.relevance`` (default None).
        wizard_fallback_s (float | None): in the wizard condition, a participant message
            that no operator answered for this many seconds, while no operator holds the
            conversation, is answered by the CTM (default None: wait for an operator).
    """

    database_url: str = DEFAULT_DATABASE_URL
    max_message_chars: int = 2000
    rate_limit_messages: int = 20
    rate_limit_window_s: float = 60.0
    secure_cookies: bool = False
    admin_session_hours: float = 12.0
    max_body_bytes: int = 256 * 1024
    consents_per_address: int = 20
    consent_window_s: float = 3600.0
    max_participants: int | None = None
    session_idle_minutes: float = 120.0
    migrate: bool = True
    relevance: str | None = None
    wizard_fallback_s: float | None = None

    def __post_init__(self) -> None:
        if self.wizard_fallback_s is not None and self.wizard_fallback_s <= 0:
            raise ValueError(f"wizard_fallback_s must be > 0 seconds (or None to wait for "
                             f"an operator), got {self.wizard_fallback_s}")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
        return cls(**{"database_url": url, **overrides})  # type: ignore[arg-type]
