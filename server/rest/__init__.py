"""A small REST API under /rest/v0, shaped like xo-server's (xo-server-api.md 4.5, 10.13).

    GET  /rest/v0                                   the collections, as hrefs
    GET  /rest/v0/{vms,hosts,pools}                 hrefs; ?fields= ?filter= ?limit= ?ndjson=
    GET  /rest/v0/{vms,hosts,pools}/<id>            the object
    POST /rest/v0/vms/<id>/actions/migrate          202 + Location: /rest/v0/tasks/<id>; ?sync=true
    GET  /rest/v0/tasks                             migrations as XO tasks; ?ndjson=true&watch=true
    GET  /rest/v0/tasks/<id>                        one task; ?wait=true: once no longer pending
    POST /rest/v0/tasks/<id>/actions/abort          migration.cancel

Authentication and errors: server/rest/http.py; tasks: server/rest/tasks.py; objects and the
migrate action: server/rest/objects.py.
"""

from __future__ import annotations

from aiohttp import web

from server.errors import XoError
from server.rest import objects, tasks
from server.rest.context import REST, RestContext
from server.rest.http import BASE, RestError, endpoint
from server.state import ServerState
from server.storage.records import User

__all__ = ["REST", "RestContext", "register"]


def register(app: web.Application, state: ServerState) -> None:
    """Add the /rest/v0 routes to `app`; their long requests end at the app's shutdown."""
    ctx = RestContext(state)
    app[REST] = ctx
    app.on_shutdown.append(ctx.on_shutdown)
    collections = "{collection:vms|hosts|pools}"
    router = app.router
    router.add_get(BASE, objects.root)
    router.add_get(f"{BASE}/", objects.root)
    router.add_get(f"{BASE}/tasks", tasks.list_tasks)
    router.add_get(f"{BASE}/tasks/{{id}}", tasks.get_task)
    router.add_post(f"{BASE}/tasks/{{id}}/actions/abort", tasks.abort_task)
    router.add_get(f"{BASE}/{collections}", objects.list_objects)
    router.add_get(f"{BASE}/{collections}/{{id}}", objects.get_object)
    router.add_post(f"{BASE}/vms/{{id}}/actions/migrate", objects.migrate_vm)
    router.add_route("*", f"{BASE}/{{tail:.*}}", _not_found)


@endpoint
async def _not_found(request: web.Request, _ctx: RestContext, _user: User) -> web.Response:
    raise RestError(
        404, XoError(1, f"no such route {request.method} {request.path}", {"path": request.path})
    )
