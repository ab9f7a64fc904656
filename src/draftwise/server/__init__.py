"""OpenAI-compatible HTTP server (FastAPI + uvicorn) around one Engine."""

from draftwise.server.app import create_app, serve

__all__ = ["create_app", "serve"]
