"""The error the translator raises for what the gateway cannot express."""

from __future__ import annotations


class TranslationError(Exception):
    """An API the gateway cannot serve as it is configured. Permanent: the same input fails again.

    The message names the API and the problem, so it can go to the control plane as is.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
