"""``poet-run --preview``: every stream's annotated frames live in a browser, for boxes that have no display.

Served by the standard library's threading HTTP server: a Jetson or camera gateway needs no extra package,
and three fixed paths need no web framework. The frames travel as MJPEG (``multipart/x-mixed-replace``, one
JPEG a part), which an ``<img>`` plays in every browser without a line of script; the page's only script
polls each stream's latest JSON record (its frame rate in a header beside it) for the caption. No front-end
build step.

The preview never holds the pipeline: a stream's frame is drawn and kept only while someone watches it, at
most ``fps`` times a second; each viewer's thread encodes and sends it on its own (one JPEG per frame,
shared by that stream's viewers), so a slow viewer skips frames and a stalled one is dropped after
``SEND_TIMEOUT`` seconds. At most ``MAX_VIEWERS`` video connections are served at once; more get a 503.
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from poet.errors import OutputError
from poet.processing import Pose
from poet.runtime.sources import Frame

logger = logging.getLogger("poet")

DEFAULT_PREVIEW_FPS = 15.0
MAX_VIEWERS = 16
SEND_TIMEOUT = 10.0  # seconds a viewer may take to accept one frame before it is dropped
JPEG_QUALITY = 80
_BOUNDARY = "poet-frame"


def parse_address(text: str) -> tuple[str, int]:
    """``PORT`` (on 127.0.0.1 only) or ``HOST:PORT``; a ValueError saying what was expected otherwise."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected PORT or HOST:PORT with a port from 1 to 65535, got {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _StreamView:
    """One stream's latest frame record and, while watched, its latest drawn frame and that frame's JPEG."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.viewers = 0
        self.changed = threading.Condition()
        self.sequence = 0  # of the latest canvas
        self.canvas: np.ndarray | None = None
        self.published = 0.0
        self.latest: tuple[Frame, Sequence[Pose]] | None = None
        self.fps = 0.0  # the stream's own end-to-end frame rate, as poet-run draws it
        self._encode = threading.Lock()
        self._jpeg: tuple[int, bytes] = (-1, b"")

    def jpeg(self, sequence: int, canvas: np.ndarray) -> bytes:
        """The JPEG of canvas ``sequence``, encoded once for all viewers of this stream."""
        with self._encode:
            if self._jpeg[0] != sequence:
                ok, data = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise OSError(f"cannot encode a frame of {self.name} as JPEG")
                self._jpeg = (sequence, data.tobytes())
            return self._jpeg[1]


class Preview:
    """The preview server of one ``poet-run``: bound at once (a port in use fails before any work), serving
    from :meth:`start` to :meth:`close`. The pipeline calls :meth:`show` with every frame's poses and
    :meth:`wants_frame` / :meth:`publish` for the drawn frame."""

    def __init__(
        self,
        names: Sequence[str],
        address: tuple[str, int],
        fps: float = DEFAULT_PREVIEW_FPS,
        max_viewers: int = MAX_VIEWERS,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"the preview's frame rate must be above 0, got {fps:g}")
        self.views = {name: _StreamView(name) for name in names}
        self.interval = 1.0 / fps
        self.max_viewers = max_viewers
        self.closing = threading.Event()
        self._viewers = threading.BoundedSemaphore(max_viewers)
        host, port = address
        try:
            self._server = _Server((host, port), _Handler, self)
        except OSError as error:
            raise OutputError(f"--preview: cannot serve on {host}:{port}: {error.strerror or error}") from None
        bound = self._server.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        if not is_loopback(self.host):
            logger.warning("the preview at %s has no authentication: anyone who reaches it sees the cameras", self.url)
        self._thread = threading.Thread(target=self._server.serve_forever, name="poet-preview", daemon=True)
        self._thread.start()
        logger.info("preview of %d stream%s at %s", len(self.views), "" if len(self.views) == 1 else "s", self.url)

    def close(self) -> None:
        """Stop serving: viewers are told the stream ended, the port is released."""
        self.closing.set()
        for view in self.views.values():
            with view.changed:
                view.changed.notify_all()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def show(self, name: str, frame: Frame, poses: Sequence[Pose], fps: float) -> None:
        """Keep a stream's latest poses for its JSON record (made into JSON only when someone asks) and its
        frame rate (sent beside the record, as the ``X-Stream-FPS`` header)."""
        view = self.views[name]
        view.latest, view.fps = (frame, poses), fps

    def wants_frame(self, name: str, now: float) -> bool:
        """Whether a drawn frame of ``name`` is wanted now: someone watches, and ``1 / fps`` has passed."""
        view = self.views[name]
        return view.viewers > 0 and now - view.published >= self.interval

    def publish(self, name: str, canvas: np.ndarray, now: float) -> None:
        """Hand a drawn frame to the stream's viewers; never waits for them."""
        view = self.views[name]
        with view.changed:
            view.canvas, view.published = canvas, now
            view.sequence += 1
            view.changed.notify_all()

    def page(self) -> bytes:
        cards = "\n".join(
            f'<figure><img src="/streams/{html.escape(name)}.mjpg" alt="{html.escape(name)}">'
            f'<figcaption data-stream="{html.escape(name)}"><b>{html.escape(name)}</b> '
            '<span class="fps">-</span> FPS, <span class="people">-</span> people</figcaption></figure>'
            for name in self.views
        )
        return _PAGE.replace("{cards}", cards).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a second poet-run on the same port must fail, not share it
    request_queue_size = 128  # a crowd connecting at once is answered (served or refused), not left in SYN retries

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], preview: Preview) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.preview = preview
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    """``/``, ``/streams/NAME.mjpg`` and ``/streams/NAME.json``; nothing else, so nothing from the disk."""

    server: _Server
    server_version = "poet-run-preview"
    sys_version = ""
    timeout = SEND_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("preview: " + format, *args)

    def do_GET(self) -> None:
        preview = self.server.preview
        path = unquote(urlsplit(self.path).path)
        if path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", preview.page())
            return
        name, _, kind = path.removeprefix("/streams/").rpartition(".")
        view = preview.views.get(name) if path.startswith("/streams/") else None
        if view is not None and kind == "json":
            latest = view.latest
            record = None if latest is None else latest[0].record(latest[1])
            self._send(
                HTTPStatus.OK, "application/json", json.dumps(record).encode(), {"X-Stream-FPS": f"{view.fps:.1f}"}
            )
        elif view is not None and kind == "mjpg":
            self._stream(preview, view)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: HTTPStatus, kind: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, preview: Preview, view: _StreamView) -> None:
        """MJPEG until the run ends or the viewer leaves; each part is the newest frame, none is queued."""
        if not preview._viewers.acquire(blocking=False):
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Retry-After", "5")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(f"the preview serves {preview.max_viewers} viewers at most; try again later\n".encode())
            return
        with view.changed:
            view.viewers += 1
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            while not preview.closing.is_set():
                with view.changed:
                    if view.sequence == sent:
                        view.changed.wait(timeout=1.0)
                    sequence, canvas = view.sequence, view.canvas
                if canvas is None or sequence == sent:
                    continue
                jpeg = view.jpeg(sequence, canvas)
                head = f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
                self.wfile.flush()
                sent = sequence
        except OSError:  # the viewer left, reset the connection or stalled past SEND_TIMEOUT
            pass
        finally:
            with view.changed:
                view.viewers -= 1
            preview._viewers.release()
            self.close_connection = True


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>poet-run preview</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { margin: 0; padding: 12px; background: #202124; color: #e8eaed; font: 14px system-ui, sans-serif; }
main { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; background: #000; }
img { display: block; max-width: min(96vw, 960px); max-height: 80vh; }
figcaption { padding: 4px 8px; }
</style></head>
<body><main>
{cards}
</main>
<script>
async function poll() {
  for (const caption of document.querySelectorAll("figcaption")) {
    try {
      const response = await fetch(`/streams/${encodeURIComponent(caption.dataset.stream)}.json`, {cache: "no-store"});
      const record = await response.json();
      if (!record) continue;
      caption.querySelector(".fps").textContent = response.headers.get("X-Stream-FPS");
      caption.querySelector(".people").textContent = record.poses.length;
    } catch (error) { caption.querySelector(".fps").textContent = "ended"; }
  }
}
setInterval(poll, 1000);
poll();
</script></body></html>
"""
