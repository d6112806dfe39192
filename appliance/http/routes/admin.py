"""``POST /admin/load`` and ``POST /admin/unload``: an operator loads or unloads a model.

Both take ``{"model": "<name>"}`` and answer with the model's lifecycle (state, last
used, memory). Loading waits until a worker is up (at most the model's
``startup_timeout_s``); unloading lets the requests in flight finish first. They need
``server.admin_key`` (``Authorization: Bearer <admin_key>``) and are refused while the
config sets none: they change what the appliance serves.
"""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.clip import clip
from appliance.errors import InvalidRequestError
from appliance.http.body import read_json
from appliance.http.scope import Access
from appliance.local.lifecycle import ModelLifecycle
from appliance.serving.cluster import Cluster


class _AdminModelAction:
    """Shared parsing and checks; subclasses say what to do to the model."""

    access = Access.ADMIN

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        server = cluster.config.server
        body = await read_json(req, server.max_body_bytes, server.body_timeout_s)
        lifecycle = _lifecycle(cluster, body.get("model"))
        await self.act(lifecycle)
        resp.data = orjson.dumps({"model": lifecycle.name, **lifecycle.describe()})
        resp.content_type = falcon.MEDIA_JSON

    async def act(self, lifecycle: ModelLifecycle) -> None:
        raise NotImplementedError


class LoadResource(_AdminModelAction):
    """Load a local model now and wait until it serves."""

    async def act(self, lifecycle: ModelLifecycle) -> None:
        await lifecycle.load(lifecycle.config.startup_timeout_s)


class UnloadResource(_AdminModelAction):
    """Unload a local model once its requests have finished."""

    async def act(self, lifecycle: ModelLifecycle) -> None:
        await lifecycle.unload("admin")


def _lifecycle(cluster: Cluster, name: object) -> ModelLifecycle:
    if not isinstance(name, str) or not name:
        raise InvalidRequestError('Give the model to act on: {"model": "<name>"}.', param="model")
    group = cluster.registry.groups.get(name)
    if group is None:
        cluster.registry.resolve(name)  # an alias resolves; an unknown name raises 404
        raise InvalidRequestError(
            f"`{clip(name)}` is an alias; name one of its models.", param="model"
        )
    if group.lifecycle is None:
        raise InvalidRequestError(
            f"The model `{name}` is not a local model: it has nothing to load or unload.",
            param="model",
            code="model_not_local",
        )
    return group.lifecycle
