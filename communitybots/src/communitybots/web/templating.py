"""Jinja2 templates of the platform (autoescaping on: every value is HTML-escaped)."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
