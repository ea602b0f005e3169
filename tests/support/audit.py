"""
A log observer that cannot write (a full disk), and watching the audit
sink with it, for the tests of failing closed.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from securenet import audit


@implementer(ILogObserver)
class FullDisk:
    """A log observer that cannot write, like a file observer on a full disk, until C{fixed}."""

    def __init__(self) -> None:
        self.fixed = False

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.fixed:
            raise OSError(28, "No space left on device")


def failing_sink(testcase: SynchronousTestCase, *, fail_closed: bool = True) -> tuple[FullDisk, io.StringIO]:
    """Install a failing observer and watch the sink until the test ends; returns it and the stderr seen."""
    disk = FullDisk()
    stderr = io.StringIO()
    globalLogPublisher.addObserver(disk)
    testcase.addCleanup(globalLogPublisher.removeObserver, disk)
    testcase.addCleanup(audit.watch_sink(globalLogPublisher, fail_closed=fail_closed, stderr=stderr))
    return disk, stderr
