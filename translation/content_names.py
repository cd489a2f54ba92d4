"""Content-addressed names of the ConfigMaps and Secrets the translator emits.

APK's operator redeploys an API only when the ``metadata.generation`` of the API or of an object
it references moves, and ConfigMaps and Secrets have no generation: a new definition, a rotated
endpoint password or a new certificate under the same name is never noticed by the gateway. So
their names end in a digest of their content, as kustomize's generators do: a new content is a
new name, the spec that references it (``API.spec.definitionFileRef``, ``Backend.spec.tls`` and
``.security``, the mTLS ``configMapRefs``) changes with it, and its generation moves. The same
content gives the same name; the agent prunes the objects a new revision no longer has.

- ConfigMaps: sha256 of the canonical JSON of kind, readable name, ``data`` and ``binaryData``
  (sorted keys), 10 hex digits. Their content (definitions, public certificates) is not secret.
- Secrets: HMAC-SHA256 with ``TranslationOptions.secret_name_key`` over the same canonical form of
  kind, readable name, ``type`` and ``data``. A bare hash would let anyone who can read the name
  (in a Backend, or by listing Secrets' metadata) test password guesses offline; without the key
  the digest says nothing. The readable name is part of the input, so two APIs with the same
  password get unrelated digests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from models.naming import content_addressed_name

SECRET_NAME_KEY_INFO = b"gateway-agent secret names"
MIN_SECRET_NAME_KEY_BYTES = 16


def secret_name_key(sealing_key: str) -> bytes:
    """The key of Secret name digests, derived from the agent's sealing key (``GATEWAY_AGENT_SEALING_KEY``).

    HKDF-like (HMAC-SHA256 of a fixed label keyed by the sealing key), so the name key reveals
    nothing of the sealing key and every worker sharing the sealing key names Secrets alike.
    """
    if not sealing_key:
        raise ValueError("the sealing key is empty; Secret names need a key shared by every worker")
    return hmac.new(sealing_key.encode("utf-8"), SECRET_NAME_KEY_INFO, hashlib.sha256).digest()


def config_map_name(
    name: str, data: Mapping[str, str] | None = None, binary_data: Mapping[str, str] | None = None
) -> str:
    """``<name>-<sha256 of the content, 10 hex>`` for a ConfigMap holding ``data`` and ``binary_data``."""
    content = {"kind": "ConfigMap", "name": name, "data": dict(data or {}), "binaryData": dict(binary_data or {})}
    return content_addressed_name(name, hashlib.sha256(_canonical(content)).hexdigest())


def secret_name(name: str, key: bytes, data: Mapping[str, str], secret_type: str = "Opaque") -> str:
    """``<name>-<HMAC-SHA256(key, content), 10 hex>`` for a Secret holding ``data`` (base64 values)."""
    if len(key) < MIN_SECRET_NAME_KEY_BYTES:
        raise ValueError(
            "TranslationOptions.secret_name_key is empty or shorter than "
            f"{MIN_SECRET_NAME_KEY_BYTES} bytes; it is needed to name Secret {name!r} "
            "(derive it with translation.secret_name_key(sealing_key))"
        )
    content = {"kind": "Secret", "name": name, "type": secret_type, "data": dict(data)}
    return content_addressed_name(name, hmac.new(key, _canonical(content), hashlib.sha256).hexdigest())


def _canonical(content: Any) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
