"""A stand-in for the EHR's page in browser tests: a tiny HTTP server on another origin that opens a form session
(POST /app/dev-session) either top-level or inside an 800 px iframe, the way an EHR embeds the app; or (``/embed``)
shows any page of the app in that iframe, such as a SMART launch.

Browsers let a public or unknown origin reach loopback addresses only with a permission prompt (Local Network
Access), so the stand-in is a real server on 127.0.0.1, addressed as ``localhost``: a different *site* from the
form's ``127.0.0.1``, so the iframe is a genuine cross-site embed with a partitioned cookie.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FRAME_WIDTH = 800


def _launch_form(params: dict[str, str], target: str) -> str:
    fields = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
        if k in ("patient", "measure", "encounter")
    )
    action = html.escape(params["app"] + "/app/dev-session")
    return f'<form id="launch" method="post" action="{action}" target="{target}">{fields}</form>'


def _page(path: str, params: dict[str, str]) -> str | None:
    submit = "<script>document.getElementById('launch').submit();</script>"
    if path == "/launch":  # top-level: the form replaces this page
        return f"<!doctype html><title>EHR</title>{_launch_form(params, '_self')}{submit}"
    if path == "/frame":  # embedded: an EHR chart with the app in an iframe
        return (
            "<!doctype html><html lang='en'><title>EHR chart</title>"
            "<style>body{margin:0;font-family:sans-serif;background:#dfe6ee}"
            "header{padding:8px 16px;background:#27405e;color:#fff}"
            f"iframe{{display:block;margin:16px;width:{FRAME_WIDTH}px;height:1100px;border:1px solid #8a99ab;"
            "background:#fff}</style>"
            "<header>Sandbox EHR &middot; client chart &middot; session rating</header>"
            f"<iframe name='app' title='Rating form'></iframe>{_launch_form(params, 'app')}{submit}</html>"
        )
    if path == "/embed" and params.get("path", "").startswith("/app/"):  # an app page (a launch) in the iframe
        source = html.escape(params["app"] + params["path"])
        return (
            "<!doctype html><html lang='en'><title>EHR chart</title>"
            f"<style>body{{margin:0;background:#dfe6ee}}iframe{{display:block;margin:16px;width:{FRAME_WIDTH}px;"
            "height:1100px;border:1px solid #8a99ab;background:#fff}</style>"
            f"<iframe name='app' title='FIT app' src='{source}'></iframe></html>"
        )
    return None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = _page(url.path, params) if "app" in params else None
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@contextmanager
def ehr_page_server() -> Iterator[int]:
    """Yields the port; the pages are at http://localhost:PORT/launch and /frame (?app=&patient=&measure=)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
