"""Seal Kubernetes Secret data while resources pass through workflow history.

Workflow histories are readable in the Temporal UI; endpoint credentials must never
sit there in plain text. With the payload codec (``agent/codec.py``, ``GATEWAY_AGENT_CODEC_KEYS``)
all of history is encrypted, and activities no longer seal anything (``seal_new=False``); without
it they seal every Secret's ``data`` with a Fernet key that all workers share
(``GATEWAY_AGENT_SEALING_KEY``). Either way they unseal what was sealed (``sealedData``: histories
written before the codec was turned on) just before writing to the cluster.

The sealing key stays the source of the Secret names' key (``translation.secret_name_key``) with
or without the codec: codec keys rotate, Secret names must not (a new name is a new Secret).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from temporalio.exceptions import ApplicationError

log = logging.getLogger(__name__)

SEALED_FIELD = "sealedData"


class Sealer:
    def __init__(self, key: str, *, seal_new: bool = True) -> None:
        # False with the codec on: new resources pass through as they are (the codec encrypts them).
        self.seal_new = seal_new
        if not key:
            # One process can still work with a key of its own; several workers cannot.
            log.warning("GATEWAY_AGENT_SEALING_KEY is not set; using a key of this process only")
            key = Fernet.generate_key().decode()
        # The key in effect (the environment's, or this process's own); other keys derive from it.
        self.key = key
        try:
            self._fernet = Fernet(key.encode())
        except ValueError as exc:
            raise ValueError("GATEWAY_AGENT_SEALING_KEY must be a Fernet key (urlsafe base64 of 32 bytes)") from exc

    def seal(self, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.seal_new:
            return list(resources)
        out = []
        for resource in resources:
            if resource.get("kind") == "Secret" and ("data" in resource or "stringData" in resource):
                resource = dict(resource)
                payload = {"data": resource.pop("data", None), "stringData": resource.pop("stringData", None)}
                resource[SEALED_FIELD] = self._fernet.encrypt(json.dumps(payload, sort_keys=True).encode()).decode()
            out.append(resource)
        return out

    def unseal(self, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for resource in resources:
            if SEALED_FIELD in resource:
                resource = dict(resource)
                token = resource.pop(SEALED_FIELD)
                try:
                    payload = json.loads(self._fernet.decrypt(token.encode()))
                except InvalidToken as exc:
                    raise ApplicationError(
                        f"Secret {resource['metadata']['name']} was sealed with another key; "
                        "every worker must share GATEWAY_AGENT_SEALING_KEY (a retry fetches it again)",
                        type="SealingKeyMismatch",
                        non_retryable=True,
                    ) from exc
                for field in ("data", "stringData"):
                    if payload.get(field) is not None:
                        resource[field] = payload[field]
            out.append(resource)
        return out
