"""``nd-humaneval serve``: the annotation web server (standard library ``ThreadingHTTPServer``).

Routes (``NAME``: an annotator's name, the same one every visit):

* ``GET /``: start page (instructions, criteria, a name field); ``GET /start?name=NAME`` redirects to
* ``GET /a/NAME``: the annotation page;
* ``GET /api/a/NAME/state``: ``{total, done, resume, criteria}``; ``resume`` is the first item not
  fully judged, so a reloaded page (or a restarted server) continues there;
* ``GET /api/a/NAME/item/POS``: the query and the left/right responses of the annotator's item
  POS, with the answers already given;
* ``POST /api/a/NAME/judge`` ``{position, criterion, choice}``: store one judgment (its own
  transaction) and return ``{done}``.

Every request opens its own connection to the study (WAL mode lets annotators write while a
report reads), so several annotators can work at once and nothing is cached in memory that a
killed server could lose.
"""

import json
import re
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Sequence
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..io_utils import InputError
from . import page, store
from .study import display_query

ANNOTATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
MAX_BODY = 4096


def check_annotator(name: str) -> Optional[str]:
    """None when ``name`` is a valid human annotator name, else the reason."""
    if not ANNOTATOR.match(name or ""):
        return "a name is 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


class StudyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, study_path: str, annotators: Optional[Sequence[str]] = None):
        self.study_path = study_path
        self.allowed = set(annotators) if annotators else None
        with store.Study(study_path) as st:  # refuse a file that is not a study before listening
            self.n_items = st.n_items
            self.criteria = st.criteria
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    server: StudyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per judgment is too much noise; errors still show
        pass

    # replies ---------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, extra=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, text: str, status: int = 200) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8")

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._send(status, message.encode("utf-8"), "text/plain; charset=utf-8")

    def _annotator(self, raw: str) -> Optional[str]:
        name = unquote(raw)
        why = check_annotator(name)
        if why:
            self._error(400, f"annotator {name!r}: {why}")
            return None
        if self.server.allowed is not None and name not in self.server.allowed:
            self._error(403, f"annotator {name!r} is not on this study's list; ask the organiser for your name")
            return None
        return name

    # routes ----------------------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if not parts:
                return self._html(page.start_page(self.server.n_items, self.server.criteria))
            if parts == ["start"]:
                name = (parse_qs(url.query).get("name") or [""])[0].strip()
                why = check_annotator(name)
                if why:
                    return self._html(page.start_page(self.server.n_items, self.server.criteria, why), 400)
                return self._send(303, b"", "text/plain", {"Location": "/a/" + quote(name)})
            if parts == ["healthz"]:
                return self._json({"ok": True})
            if len(parts) == 2 and parts[0] == "a":
                name = self._annotator(parts[1])
                return name and self._html(page.annotate_page(name))
            if len(parts) >= 4 and parts[:2] == ["api", "a"]:
                name = self._annotator(parts[2])
                if not name:
                    return
                if parts[3:] == ["state"]:
                    return self._json(self._state(name))
                if len(parts) == 5 and parts[3] == "item" and parts[4].isdigit():
                    return self._item(name, int(parts[4]))
            self._error(404, f"no page {url.path}; start at /")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if not (len(parts) == 4 and parts[:2] == ["api", "a"] and parts[3] == "judge"):
            return self._error(404, "POST only to /api/a/NAME/judge")
        name = self._annotator(parts[2])
        if not name:
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            return self._error(400, "send a JSON body {position, criterion, choice}")
        try:
            body = json.loads(self.rfile.read(length))
            position, criterion, choice = int(body["position"]), str(body["criterion"]), str(body["choice"])
        except (ValueError, KeyError, TypeError):
            return self._error(400, "send a JSON body {position, criterion, choice}")
        if choice not in store.CHOICES:
            return self._error(400, f"choice {choice!r}: use left, tie or right")
        with store.Study(self.server.study_path) as st:
            if criterion not in st.criterion_names:
                return self._error(400, f"criterion {criterion!r} is not in this study")
            st.ensure_assignments(name)
            view = st.view(name, position)
            if view is None:
                return self._error(404, f"{name} has no item {position}")
            st.record(name, view.item.id, criterion, choice, view.a_on_left, "web")
            done = len(st.completed_positions(name))
        self._json({"ok": True, "done": done, "total": self.server.n_items})

    def _state(self, name: str):
        with store.Study(self.server.study_path) as st:
            st.ensure_assignments(name)
            return {"total": st.n_items, "done": len(st.completed_positions(name)),
                    "resume": st.resume_position(name),
                    "criteria": [{"name": c, "definition": d} for c, d in st.criteria]}

    def _item(self, name: str, position: int):
        with store.Study(self.server.study_path) as st:
            st.ensure_assignments(name)
            view = st.view(name, position)
            if view is None:
                return self._error(404, f"{name} has no item {position} (the study has {st.n_items})")
            return self._json({"position": position, "total": st.n_items,
                               "query": display_query(view.item.query), "left": view.left, "right": view.right,
                               "choices": st.choices_at(name, view.item.id),
                               "done": len(st.completed_positions(name))})


def serve(study_path: str, host: str = "127.0.0.1", port: int = 8765, annotators: Optional[Sequence[str]] = None,
          out=sys.stdout) -> None:
    """Serve until Ctrl-C or SIGTERM."""
    for name in annotators or ():
        why = check_annotator(name)
        if why:
            raise InputError(f"--annotators: {name!r}: {why}")
    try:
        httpd = StudyServer((host, port), study_path, annotators)
    except OSError as err:
        raise InputError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port "
                         f"(0: any free one) or stop the program using it") from None

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    bound_host, bound_port = httpd.server_address[:2]
    shown = bound_host if ":" not in bound_host else f"[{bound_host}]"
    print(f"nd-humaneval: serving {study_path} ({httpd.n_items} items; criteria "
          f"{', '.join(c for c, _ in httpd.criteria)}) at http://{shown}:{bound_port}/ ; Ctrl-C stops",
          file=out, flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("nd-humaneval: stopped; every judgment is saved", file=out, flush=True)
    finally:
        httpd.server_close()
