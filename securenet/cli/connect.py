"""C{securenet connect}: placeholder, filled in by the TLS work."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pass
