"""Helpers for CLI commands that use the credential store synchronously."""

from __future__ import annotations

from typing import TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

T = TypeVar("T")


def result(d: defer.Deferred[T]) -> T:
    """
    The result of a Deferred that a synchronous store has already fired,
    raising its failure (the CLI runs no reactor).
    """
    results: list[T] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    if not results:
        raise RuntimeError("the credential store did not answer synchronously")
    return results[0]
