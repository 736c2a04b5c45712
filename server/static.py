"""The mounted directories (`[http.mounts]`: URL prefix -> directory), as xo-server serves
xo-web, and `GET /rest/v0/gui-routes` which tells where the UI is.

Files are served with aiohttp's FileResponse (ETag, Last-Modified, conditional and range
requests, sendfile), an explicit content type for web files, and a cache policy: hashed asset
names (`index-3fa2b1c9.js`, `main.3f2a1b4c.css`) may be cached for a year, everything else
(index.html first) is revalidated on each use (`no-cache`; a 304 costs a stat).

Nothing outside a mounted directory is ever served: a path with a `..` or `.` segment (also
percent-encoded), a dot file, a NUL or a backslash is 404 before any file system access, and
the path is resolved (symlinks followed) and must still lie inside the mounted directory, and
so must a precompressed `.gz`/`.br` sibling FileResponse would send instead. A directory is
served as its index.html; without its trailing slash it is first redirected (301) to it, as
serve-static does. Unknown paths, other methods than GET/HEAD and no mount: 404.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from pathlib import Path

from aiohttp import web

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}
# A content hash in the name: 8+ characters with a digit, after a dot or a dash.
_HASHED_NAME = re.compile(r"[.-](?=[A-Za-z0-9_]*[0-9])[A-Za-z0-9_]{8,}\.[A-Za-z0-9]+$")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_COMPRESSED_SIBLINGS = (".br", ".gz")  # what FileResponse may send instead of the file


def content_type(path: Path) -> str:
    known = _TYPES.get(path.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def cache_control(path: Path) -> str:
    return IMMUTABLE if _HASHED_NAME.search(path.name) else REVALIDATE


class StaticFiles:
    def __init__(self, mounts: dict[str, Path]) -> None:
        # Longest prefix first, so that "/v5" wins over "/" for "/v5/index.html".
        self._mounts = sorted(
            ((prefix, root.resolve()) for prefix, root in mounts.items()),
            key=lambda m: len(m[0]),
            reverse=True,
        )
        self._gui_routes = self._find_gui_routes()

    def _find_gui_routes(self) -> dict[str, str]:
        """xo-server's answer: where xo-web (a mount of an `xo-web/dist`, else the first one
        with an index.html) is mounted."""
        with_index = [(p, r) for p, r in self._mounts if (r / "index.html").is_file()]
        xo_web = [(p, r) for p, r in with_index if "xo-web/dist" in r.as_posix()] or with_index
        return {"xo5": xo_web[0][0]} if xo_web else {}

    def gui_routes(self) -> dict[str, str]:
        return dict(self._gui_routes)

    async def handle_gui_routes(self, request: web.Request) -> web.Response:
        return web.json_response(self.gui_routes())

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPNotFound()
        path = request.path
        for prefix, root in self._mounts:
            if prefix == "/":
                rest = path[1:]
            elif path == prefix:
                raise web.HTTPMovedPermanently(_with_query(prefix + "/", request))
            elif path.startswith(prefix + "/"):
                rest = path[len(prefix) + 1 :]
            else:
                continue
            parts = [p for p in rest.split("/") if p]
            if any(_forbidden(p) for p in parts):
                raise web.HTTPNotFound()
            found = await asyncio.to_thread(_locate, root, parts, rest == "" or rest.endswith("/"))
            if found is _ADD_SLASH:
                # One leading slash: a path of "//host" must not become an off-site redirect.
                raise web.HTTPMovedPermanently(_with_query("/" + path.lstrip("/") + "/", request))
            if not isinstance(found, Path):
                raise web.HTTPNotFound()
            return web.FileResponse(
                found,
                headers={
                    "Content-Type": content_type(found),
                    "Cache-Control": cache_control(found),
                    "X-Content-Type-Options": "nosniff",
                },
            )
        raise web.HTTPNotFound()


def _forbidden(segment: str) -> bool:
    return segment.startswith(".") or "\x00" in segment or "\\" in segment


def _with_query(location: str, request: web.Request) -> str:
    return f"{location}?{request.query_string}" if request.query_string else location


_ADD_SLASH = "add a slash"


def _locate(root: Path, parts: list[str], trailing_slash: bool) -> Path | str | None:
    """The file to serve, _ADD_SLASH for a directory asked without its slash, or None."""
    try:
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root):
            return None
        if target.is_dir():
            if not trailing_slash:
                return _ADD_SLASH
            target = (target / "index.html").resolve()
            if not target.is_relative_to(root):
                return None
        if not target.is_file():
            return None
        for ext in _COMPRESSED_SIBLINGS:
            sibling = target.with_name(target.name + ext)
            if sibling.is_symlink() and not sibling.resolve().is_relative_to(root):
                return None
    except (OSError, ValueError):  # a name too long, a loop of symlinks...
        return None
    return target
