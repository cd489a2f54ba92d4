"""Search attributes and memo, from inside a workflow: only the registered attributes, only what
changed (each upsert is a command in the history), nothing at all in histories recorded before
the ``visibility`` patch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

with workflow.unsafe.imports_passed_through():
    from models.visibility import SEARCH_ATTRIBUTES, VISIBILITY_PATCH

Value = str | Sequence[str] | None


def _empty(value: Value) -> bool:
    return value is None or value == "" or (not isinstance(value, str) and not list(value))


def _norm(value: Value) -> Value:
    if _empty(value):
        return None
    return value if isinstance(value, str) else list(value)


class Visibility:
    """What one workflow run has told visibility; ``publish`` upserts the differences."""

    def __init__(self, registered: Iterable[str]) -> None:
        self.registered = sorted(set(registered) & {k.name for k in SEARCH_ATTRIBUTES})
        # What the run started with (set by its starter, or carried over continue-as-new).
        current = workflow.info().typed_search_attributes
        self._attributes: dict[str, Value] = {
            k.name: _norm(current.get(k)) for k in SEARCH_ATTRIBUTES if k.name in self.registered
        }
        self._memo: dict[str, str] = {k: v for k, v in workflow.memo().items() if isinstance(v, str)}

    @staticmethod
    def for_this_run(registered: Sequence[str]) -> Visibility | None:
        """A long-lived workflow's: ``None`` in histories from before the patch (evaluated at the
        start of a run, before any other command, so a run is either all old or all new)."""
        if not workflow.patched(VISIBILITY_PATCH):
            return None
        return Visibility(registered)

    @staticmethod
    def of_child(registered: Sequence[str]) -> Visibility | None:
        """A deployment's: what its parent handed it (nothing, in histories from before the patch)."""
        if not registered or not workflow.patched(VISIBILITY_PATCH):
            return None
        return Visibility(registered)

    def start_attributes(self, values: Mapping[SearchAttributeKey[Any], Value]) -> TypedSearchAttributes:
        """Typed search attributes for a child's start: the registered, non-empty ones."""
        return TypedSearchAttributes(
            [
                SearchAttributePair(key, _norm(value))  # type: ignore[arg-type]
                for key, value in values.items()
                if key.name in self.registered and not _empty(value)
            ]
        )

    def publish(self, values: Mapping[SearchAttributeKey[Any], Value], memo: Mapping[str, str] | None = None) -> None:
        updates = []
        for key, value in values.items():
            if key.name not in self.registered:
                continue
            value = _norm(value)
            if self._attributes.get(key.name) == value:
                continue
            self._attributes[key.name] = value
            updates.append(key.value_unset() if value is None else key.value_set(value))  # type: ignore[arg-type]
        if updates:
            workflow.upsert_search_attributes(updates)
        changed = {k: v for k, v in (memo or {}).items() if self._memo.get(k) != v}
        if changed:
            self._memo.update(changed)
            workflow.upsert_memo(changed)
