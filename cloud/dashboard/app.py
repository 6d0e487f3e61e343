"""The dashboard's FastAPI app: the page, its script, /api/snapshot, the /events stream and /health; GET only.

Every route reads files (``cloud.dashboard.snapshot``); none writes, and none talks to the broker.
The page is static: its script fills it from the JSON with ``textContent`` only, and the
Content-Security-Policy header allows scripts from this server alone, so a device id such as
``<img src=x onerror=alert(1)>`` shows as text and never runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from cloud.dashboard.snapshot import Snapshotter

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
KEEPALIVE_S = 15.0  # an SSE comment this often, so a closed tab is noticed and its stream ends
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
SECURITY_HEADERS = {
    # Scripts, styles and connections from this server only: no CDN, no inline script, no injected handler.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def as_json(data: dict[str, Any]) -> str:
    """A snapshot as one line of JSON (JSON escapes newlines, so it fits one SSE ``data:`` line)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def create_app(stream_folder: Path | None, fl_folders: list[Path], *, interval_s: float = 1.0,
               host: str = "127.0.0.1", stopping: threading.Event | None = None) -> FastAPI:
    """The dashboard app over a streaming scenario folder and federated run folders.

    ``stopping``, once set, ends every open /events stream, so a server can shut down while
    browsers are connected. Bound to a loopback address, the app answers only requests whose
    Host header is a loopback name (a web page elsewhere cannot read it through DNS rebinding).
    """
    snapshots = Snapshotter(stream_folder, fl_folders)
    stopping = stopping or threading.Event()
    app = FastAPI(title="Edge and cloud ML kit dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS if is_loopback(host) else ["*"])

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        """Add the security headers to every response."""
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def envelope() -> dict[str, Any]:
        """The snapshot and when it was served (server clock, epoch seconds)."""
        return {**snapshots.get(), "now": round(time.time(), 3)}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The page."""
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        """No icon (an empty answer, so the browser's console stays clean)."""
        return Response(status_code=204)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        """The page's script and style sheet (only those two names)."""
        if name not in STATIC_FILES:
            return JSONResponse({"error": f"no static file {name!r}"}, status_code=404)
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and what the dashboard reads."""
        return {"status": "ok", "stream_folder": None if stream_folder is None else str(stream_folder),
                "fl_folders": [str(p) for p in fl_folders]}

    @app.get("/api/snapshot")
    async def api_snapshot() -> JSONResponse:
        """The current snapshot as JSON (the same object /events pushes)."""
        return JSONResponse(await asyncio.to_thread(envelope))

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: the snapshot on connect, then again whenever it changes (checked every interval)."""

        async def stream() -> AsyncIterator[str]:
            """Yield snapshot events until the browser leaves or the server stops."""
            last, quiet_since = None, time.monotonic()
            while not stopping.is_set() and not await request.is_disconnected():
                data = await asyncio.to_thread(snapshots.get)
                body = as_json(data)
                if body != last:  # pushed only when something changed ("now" alone is no change)
                    last, quiet_since = body, time.monotonic()
                    yield f"data: {as_json({**data, 'now': round(time.time(), 3)})}\n\n"
                elif time.monotonic() - quiet_since > KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keepalive\n\n"
                await asyncio.sleep(interval_s)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})

    return app
