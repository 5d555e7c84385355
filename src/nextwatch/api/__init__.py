"""The HTTP API: an app factory, nothing created at import time. Only this package imports flask."""

from .app import create_app

__all__ = ["create_app"]
