"""The search attributes of ``models.visibility`` in a namespace: registered at worker start;
the intake starts each workflow with those that are there (and the list of them in its input)."""

from __future__ import annotations

import logging
import time

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError

from models.visibility import SEARCH_ATTRIBUTES, create_command, type_name

log = logging.getLogger(__name__)

# How long an incomplete answer is trusted before the namespace is asked again.
RECHECK_SECONDS = 30.0


async def _listed(client: Client, namespace: str) -> dict[str, int]:
    """Name → indexed value type of every custom search attribute of the namespace."""
    response = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    return dict(response.custom_attributes)


def _ours(listed: dict[str, int]) -> frozenset[str]:
    """Those of ours the namespace has, with the type we set (a same-named one of another type is not ours)."""
    return frozenset(k.name for k in SEARCH_ATTRIBUTES if listed.get(k.name) == int(k.indexed_value_type))


async def ensure_search_attributes(client: Client, namespace: str) -> frozenset[str]:
    """Register the missing search attributes; return the ones the namespace has afterwards.

    Where the worker may not (Temporal Cloud, where the operator API refuses, or a namespace
    without the rights), logs an ERROR naming the commands to run; the workflows then set only
    what is registered (nothing, at worst) and work as before.
    """
    try:
        listed = await _listed(client, namespace)
    except RPCError as exc:
        _cannot(namespace, f"listing them failed: {exc.status.name if exc.status else ''} {exc.message}")
        return frozenset()
    have = _ours(listed)
    missing = {k.name: k for k in SEARCH_ATTRIBUTES if k.name not in have}
    clash = [name for name in missing if name in listed]
    if clash:
        log.error(
            "search attributes %s exist in namespace %s with another type; the workflows do not set them",
            ", ".join(clash),
            namespace,
        )
        for name in clash:
            del missing[name]
    if not missing:
        return have
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={name: int(key.indexed_value_type) for name, key in missing.items()},
            )
        )
    except RPCError as exc:
        _cannot(namespace, f"{exc.status.name if exc.status else 'error'}: {exc.message}", missing=list(missing))
        return have
    log.info("registered search attributes %s in namespace %s", ", ".join(missing), namespace)
    try:
        return _ours(await _listed(client, namespace))
    except RPCError:
        return have | frozenset(missing)


def _cannot(namespace: str, why: str, missing: list[str] | None = None) -> None:
    keys = [k for k in SEARCH_ATTRIBUTES if missing is None or k.name in missing]
    cloud = " ".join(f"--search-attribute {k.name}={type_name(k)}" for k in keys)
    log.error(
        "could not register the search attributes %s in Temporal namespace %s (%s). Deployments work, but "
        "they cannot be searched by API, organization, gateway label or state until an operator runs:\n  %s\n"
        "(on Temporal Cloud: tcld namespace search-attributes add --namespace %s %s), then restarts the worker",
        ", ".join(k.name for k in keys),
        namespace,
        why,
        "\n  ".join(create_command(namespace, k) for k in keys),
        namespace,
        cloud,
    )


class RegisteredAttributes:
    """Which search attributes the namespace has, asked once and again only while incomplete."""

    def __init__(self, client: Client, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._names: frozenset[str] | None = None
        self._asked = 0.0

    async def names(self) -> frozenset[str]:
        complete = self._names is not None and len(self._names) == len(SEARCH_ATTRIBUTES)
        if complete or (self._names is not None and time.monotonic() - self._asked < RECHECK_SECONDS):
            assert self._names is not None
            return self._names
        self._asked = time.monotonic()
        try:
            self._names = _ours(await _listed(self._client, self._namespace))
        except RPCError as exc:
            log.warning("could not list the search attributes of namespace %s: %s", self._namespace, exc.message)
            self._names = frozenset()
        return self._names

    def forget(self) -> None:
        """An attribute was refused: ask again next time."""
        self._names = None
