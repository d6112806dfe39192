"""``POST /admin/load`` and ``POST /admin/unload``: an operator loads or unloads a model.

Both take ``{"model": "<name>"}`` (any other field is a 400 naming it) and answer with
the model's lifecycle (state, last used, memory) in the process that answered, and under
``processes`` its lifecycle in every server process: with ``server.processes > 1`` the
action is carried out in each of them (:mod:`appliance.http.admin_relay`). Loading waits
until a worker is up (at most the model's ``startup_timeout_s``); unloading lets the
requests in flight finish first. They need ``server.admin_key`` (``Authorization: Bearer
<admin_key>``) and are refused while the config sets none: they change what the
appliance serves.
"""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.clip import clip
from appliance.errors import InvalidRequestError
from appliance.http import admin_relay
from appliance.http.body import read_json
from appliance.http.scope import Access
from appliance.serving.cluster import Cluster


class _AdminModelAction:
    """Shared parsing and checks; subclasses say which action."""

    access = Access.ADMIN
    action = ""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body = await read_json(req)
        for name in body:
            if name != "model":
                raise InvalidRequestError(
                    f"Unrecognized request argument supplied: '{clip(name)}'. "
                    f"/admin/{self.action} takes only 'model'.",
                    param=clip(name),
                    code="unsupported_parameter",
                )
        lifecycle = admin_relay.lifecycle_of(cluster, body.get("model"))
        processes = await admin_relay.everywhere(lifecycle, self.action)
        resp.data = orjson.dumps(
            {"model": lifecycle.name, **lifecycle.describe(), "processes": processes}
        )
        resp.content_type = falcon.MEDIA_JSON


class LoadResource(_AdminModelAction):
    """Load a local model now, in every process, and wait until it serves."""

    action = "load"


class UnloadResource(_AdminModelAction):
    """Unload a local model, in every process, once its requests have finished."""

    action = "unload"
