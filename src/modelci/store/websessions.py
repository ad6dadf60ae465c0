"""Dashboard sessions kept on the server (why: ``web.sessions``).

A row per signed-in browser, keyed by the SHA-256 of the cookie's random id;
a GitHub session holds the person's user token sealed by ``web.sessions``
(this module never sees it in clear). Signing out deletes the row; expired
rows are deleted whenever a session is made. Keyword-only queries taking a
``Session``, as in ``records``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, LargeBinary, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelci.store.records import Base, UTCDateTime

__all__ = [
    "WebSession",
    "create_web_session",
    "delete_web_session",
    "delete_web_sessions_of",
    "get_web_session",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WebSession(Base):
    """``kind`` is ``github`` (``login`` a GitHub login) or ``token`` (``token:<name>``)."""

    __tablename__ = "web_sessions"
    __table_args__ = (
        Index("ix_web_sessions_expires_at", "expires_at"),
        Index("ix_web_sessions_login", "login"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    login: Mapped[str] = mapped_column(String(300))
    user_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


def create_web_session(
    session: Session,
    *,
    row_id: str,
    kind: str,
    login: str,
    expires_at: dt.datetime,
    user_token: bytes | None = None,
) -> WebSession:
    session.execute(delete(WebSession).where(WebSession.expires_at <= _now()))
    row = WebSession(
        id=row_id, kind=kind, login=login, user_token=user_token, expires_at=expires_at
    )
    session.add(row)
    session.flush()
    return row


def get_web_session(session: Session, *, row_id: str) -> WebSession | None:
    """The session, unless it was deleted or has expired."""
    return session.scalar(
        select(WebSession).where(WebSession.id == row_id, WebSession.expires_at > _now())
    )


def delete_web_session(session: Session, *, row_id: str) -> bool:
    result = session.execute(delete(WebSession).where(WebSession.id == row_id))
    return bool(getattr(result, "rowcount", 0))


def delete_web_sessions_of(session: Session, *, login: str) -> int:
    """Sign ``login`` out everywhere (e.g. GitHub refused their token)."""
    result = session.execute(delete(WebSession).where(WebSession.login == login))
    return int(getattr(result, "rowcount", 0) or 0)
