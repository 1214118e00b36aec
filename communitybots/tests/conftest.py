"""Shared fixtures: the web platform's database and app fixtures (``web_support.py``)."""

from web_support import database_url, make_client

__all__ = ["database_url", "make_client"]
