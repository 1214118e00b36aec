"""Exports for researchers: participants, messages, events and answers, as CSV or JSONL.

Rows name participants by their public id (never the internal key or the session
token) and carry the condition and the survey version (label and content hash), so each
file can be analysed on its own. In the wizard condition a bot message written by a
researcher names them (``operator``) and carries the CTM's suggestion for the
participant's last message beside it (``suggestion``: its replies and decisions). Files stream
from the database in chunks, whatever the size of the study.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, select

from communitybots.store import QUALITY_PARTS, Answer, EventRow, Message, Participant

from ..deps import CurrentAdmin

router = APIRouter(prefix="/admin/export", tags=["export"])

_P = [Participant.public_id.label("participant"), Participant.condition,
      Participant.survey_version, Participant.survey_hash]
_PC = ["participant", "condition", "survey_version", "survey_hash"]

TABLES: dict[str, tuple[list[str], Select[Any]]] = {
    "participants": (
        _PC + ["assignment", "status", "consented_at",
         "chat_finished_at", "completed_at", "completion_code", "active_s", "origin_group",
         "excluded_at", "exclusion_reason", "panel_id", "panel_data", "chat_started_at",
         "purged_at"],
        select(*_P, Participant.assignment, Participant.status, Participant.consented_at,
               Participant.chat_finished_at, Participant.completed_at,
               Participant.completion_code, Participant.active_s, Participant.origin_group,
               Participant.excluded_at, Participant.exclusion_reason, Participant.panel_id,
               Participant.panel_data, Participant.chat_started_at, Participant.purged_at)
        .order_by(Participant.id),
    ),
    "messages": (
        ["participant", "condition", "survey_version", "survey_hash", "seq", "turn", "role",
         "agent_id", "agent_name",
         "topic_id", "kind", "text", "intent", "confidence"]
        + [f"q_{p}" for p in QUALITY_PARTS] + ["created_at", "operator", "suggestion", "words"],
        select(Participant.public_id.label("participant"), Participant.condition,
               Message.survey_version, Message.survey_hash, Message.seq, Message.turn, Message.role, Message.agent_id,
               Message.agent_name, Message.topic_id, Message.kind, Message.text,
               Message.intent, Message.confidence,
               *[getattr(Message, f"q_{p}") for p in QUALITY_PARTS], Message.created_at,
               Message.operator_name.label("operator"), Message.suggestion, Message.words)
        .join(Participant, Participant.id == Message.participant_id)
        .order_by(Message.participant_id, Message.seq),
    ),
    "events": (
        _PC + ["seq", "turn", "kind", "reason", "agent_id", "topic_id",
         "data", "created_at"],
        select(*_P, EventRow.seq, EventRow.turn, EventRow.kind, EventRow.reason,
               EventRow.agent_id, EventRow.topic_id, EventRow.data, EventRow.created_at)
        .join(Participant, Participant.id == EventRow.participant_id)
        .order_by(EventRow.participant_id, EventRow.seq),
    ),
    "answers": (
        _PC + ["phase", "item_id", "value", "created_at"],
        select(*_P, Answer.phase, Answer.item_id, Answer.value, Answer.created_at)
        .join(Participant, Participant.id == Answer.participant_id)
        .order_by(Answer.participant_id, Answer.phase.desc(), Answer.item_id),
    ),
}
FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat() + "Z"
    return value


def _rows(request: Request, query: Select[Any]) -> Iterator[dict[str, Any]]:
    with request.app.state.sessions() as db:
        result = db.execute(query.execution_options(yield_per=500))
        for row in result.mappings():
            yield {k: _plain(v) for k, v in row.items()}


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe (OWASP
    CSV injection); the JSONL export keeps every text verbatim."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv(columns: list[str], rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for i, row in enumerate(rows, 1):
        for key in ("data", "suggestion", "panel_data"):  # JSON columns: one cell of JSON text
            if isinstance(row.get(key), dict):
                row[key] = json.dumps(row[key], ensure_ascii=False, sort_keys=True)
        writer.writerow({k: _cell(v) for k, v in row.items()})
        if i % 500 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _jsonl(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


@router.get("/{table}.{fmt}")
def export(table: str, fmt: str, request: Request,
           _admin: CurrentAdmin) -> StreamingResponse:
    if table not in TABLES or fmt not in FORMATS:
        raise HTTPException(404, f"export {table}.{fmt} does not exist; tables: "
                            f"{', '.join(TABLES)}; formats: {', '.join(FORMATS)}")
    columns, query = TABLES[table]
    rows = _rows(request, query)
    body = _csv(columns, rows) if fmt == "csv" else _jsonl(rows)
    return StreamingResponse(body, media_type=FORMATS[fmt], headers={
        "Content-Disposition": f'attachment; filename="{table}.{fmt}"',
        "Cache-Control": "no-store"})
