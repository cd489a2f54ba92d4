"""Checks of an API's definition before the gateway gets it.

The gateway reads the definition from a ConfigMap: a GraphQL API's schema is what its router
parses to route queries, so a schema that does not parse, or that lacks a field an operation of
the API names, would fail at the gateway with nothing said to the control plane. A REST API's
OpenAPI or Swagger document is served and validated against; one that is not an OpenAPI or
Swagger document at all is a broken export. Both fail the deployment here, with the problem named.

The checks are of shape, not style: anything a real export holds passes (unknown fields, vendor
extensions, any paths), and YAML is read without aliases (an alias bomb expands to gigabytes).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import yaml
from graphql import GraphQLError, GraphQLObjectType, build_schema

from models.artifact import Operation
from translation.artifacts import _NoAliasLoader  # YAML without aliases, as the artifact reader reads it
from translation.errors import TranslationError

# The verbs of a GraphQL API's operations and the root type each belongs to.
GRAPHQL_ROOTS = {"QUERY": "query", "MUTATION": "mutation", "SUBSCRIPTION": "subscription"}


def check_definition(
    api_type: str, definition: str, file_name: str, operations: Sequence[Operation], label: str
) -> list[str]:
    """Raise ``TranslationError`` naming ``file_name`` and the problem when ``definition`` cannot
    be the definition of an API of ``api_type`` (``REST`` or ``GraphQL``); return warnings for
    what the gateway serves but not as the API means it (operations the schema has no field for:
    no query ever reaches them)."""
    where = f"{label}: {file_name}"
    digest = hashlib.sha256(definition.encode("utf-8", "surrogatepass")).digest()
    targets = tuple((o.verb, o.target) for o in operations) if api_type == "GraphQL" else ()
    key = (api_type, digest, targets, where)
    with _PASSED_LOCK:
        warnings = _PASSED.get(key)
        if warnings is not None:
            _PASSED.move_to_end(key)
            return list(warnings)
    if api_type == "GraphQL":
        warnings = tuple(_check_graphql(definition, operations, where))
    else:
        _check_openapi(definition, where)
        warnings = ()
    with _PASSED_LOCK:
        _PASSED[key] = warnings
        if len(_PASSED) > MEMO_SIZE:
            _PASSED.popitem(last=False)
    return list(warnings)


# A full sync translates every API again, a redeploy or a rollback translates a revision seen
# before: a definition that passed is not parsed again. Keyed by digest, so the memo holds no
# definition; a refusal raises and is not remembered. Activities translate on threads: a lock.
MEMO_SIZE = 1024
_PASSED: OrderedDict[tuple[str, bytes, tuple[tuple[str, str], ...], str], tuple[str, ...]] = OrderedDict()
_PASSED_LOCK = threading.Lock()


def _check_graphql(sdl: str, operations: Sequence[Operation], where: str) -> list[str]:
    try:
        schema = build_schema(sdl)
    except GraphQLError as exc:
        position = ""
        if exc.locations:
            position = f" at line {exc.locations[0].line}, column {exc.locations[0].column}"
        raise TranslationError(f"{where} is not a valid GraphQL schema{position}: {exc.message}") from None
    except RecursionError:
        raise TranslationError(f"{where} is a GraphQL schema nested too deeply to read") from None
    except TypeError as exc:  # graphql-core's word for a schema that parses but does not hold together
        problems = "; ".join(dict.fromkeys(line for line in str(exc).splitlines() if line.strip()))
        raise TranslationError(f"{where} is not a valid GraphQL schema: {problems}") from None
    missing = []
    for operation in operations:
        root_name = GRAPHQL_ROOTS.get(operation.verb.strip().upper())
        if root_name is None:
            continue  # the translator names verbs it does not know
        root: GraphQLObjectType | None = getattr(schema, f"{root_name}_type")
        if root is None or operation.target.strip() not in root.fields:
            type_name = root.name if root is not None else f"no {root_name} type"
            missing.append(f"{operation.verb} {operation.target} ({type_name})")
    if not missing:
        return []
    return [
        f"{where} has no field for the operation(s) {', '.join(missing[:10])}"
        + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        + ": the schema and the API's operations disagree, and no query reaches these operations"
    ]


def _check_openapi(text: str, where: str) -> None:
    document = _load(text, where)
    if not isinstance(document, dict):
        raise TranslationError(f"{where} is not an OpenAPI or Swagger document: it holds a {type(document).__name__}")
    version = document.get("openapi", document.get("swagger"))
    if version is None:
        raise TranslationError(f"{where} is not an OpenAPI or Swagger document: it has neither 'openapi' nor 'swagger'")
    if not str(version).startswith(("2.", "3.")):
        raise TranslationError(f"{where} declares OpenAPI/Swagger version {version!r}; 2.0 and 3.x are understood")
    paths = document.get("paths")
    if isinstance(paths, _Shape):
        paths = {} if paths.kind == "mapping" else []
    if paths is not None and not isinstance(paths, dict):
        raise TranslationError(
            f"{where}: 'paths' must be a mapping of paths to operations, not a {type(paths).__name__}"
        )


# libyaml where PyYAML has it: the pure-Python loader took 60 ms for a 20-operation OpenAPI
# document, 50 times what the rest of the translation takes (bench/README.md, issue 11).
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)
MAX_YAML_DEPTH = 500
_COLLECTION_STARTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)


def _load_yaml(text: str) -> Any:
    """The document's top level, YAML without aliases, in one pass over libyaml's events: no
    alias anywhere, nesting at most ``MAX_YAML_DEPTH``, one document; only the top-level mapping's
    scalar values are built (resolved as a safe loader would), a nested value stands as a
    ``_Shape`` of its kind. Nothing is composed: the check reads nothing deeper, and composing the
    whole document cost twice the pass (bench/README.md)."""
    if _FAST_LOADER is None:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader without aliases
    resolver = yaml.resolver.Resolver()
    constructor = yaml.constructor.SafeConstructor()

    def scalar(event: yaml.ScalarEvent) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        return constructor.construct_object(yaml.ScalarNode(tag, event.value, style=event.style))

    root: Any = None
    documents = depth = 0
    key: Any = _NO_KEY  # the top-level key whose value comes next
    for event in yaml.parse(text, Loader=_FAST_LOADER):
        kind = type(event)
        if kind is yaml.ScalarEvent:
            if depth == 0:
                root = scalar(event)
            elif depth == 1 and isinstance(root, dict):
                if key is _NO_KEY:
                    key = scalar(event)
                else:
                    if key is not _COMPLEX_KEY:
                        root[key] = scalar(event)
                    key = _NO_KEY
        elif kind in _COLLECTION_STARTS:
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise RecursionError
            if depth == 1:
                root = {} if kind is yaml.MappingStartEvent else []
            elif depth == 2 and isinstance(root, dict):
                if key is _NO_KEY:
                    key = _COMPLEX_KEY  # a collection as a key: nothing the check looks for
                else:
                    if key is not _COMPLEX_KEY:
                        root[key] = _Shape("mapping" if kind is yaml.MappingStartEvent else "sequence")
                    key = _SKIP_VALUE
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            depth -= 1
            if depth == 1 and key is _SKIP_VALUE:
                key = _NO_KEY
        elif kind is yaml.AliasEvent:
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", event.start_mark)
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise yaml.composer.ComposerError(
                    "expected a single document in the stream", None, "but found another document", event.start_mark
                )
    return root


_NO_KEY, _COMPLEX_KEY, _SKIP_VALUE = object(), object(), object()


class _Shape:
    """A nested value the check does not read, standing for its kind (``mapping`` or ``sequence``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


def _load(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise TranslationError(f"{where} is JSON nested too deeply to read") from None
    except ValueError:
        pass  # not JSON: YAML then (a JSON document is YAML too, but JSON's errors are clearer)
    try:
        return _load_yaml(text)
    except RecursionError:
        raise TranslationError(f"{where} is YAML nested too deeply to read") from None
    except yaml.YAMLError as exc:
        raise TranslationError(f"{where} is neither JSON nor YAML: {exc}") from None
