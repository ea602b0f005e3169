"""
securenet's log level (securenet.logs): debug events are dropped before any
observer sees them unless the level is lowered; warnings always pass;
`twistd securenet --log-level` and the config key set it.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from securenet import _logs as logs
from securenet import audit
from securenet.tap import Options
from tests.support.audit import FullDisk, failing_sink


class LevelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.addCleanup(logs.set_level, logs.level())
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.log = logs.SecurenetLogger(namespace="securenet.test")

    def emitted(self) -> list[LogLevel]:
        levels = [e["log_level"] for e in self.events if e.get("log_namespace") == "securenet.test"]
        self.events.clear()
        return levels

    def emitAll(self) -> None:
        self.log.debug("d")
        self.log.info("i")
        self.log.warn("w")
        self.log.error("e")
        self.log.critical("c")

    def test_defaultIsInfo(self) -> None:
        """By default debug events never reach an observer; info and above do."""
        logs.set_level(logs.DEFAULT_LEVEL)
        self.assertEqual(logs.level(), "info")
        self.emitAll()
        self.assertEqual(self.emitted(), [LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical])
        self.assertFalse(logs.enabled(LogLevel.debug))
        self.assertTrue(logs.enabled(LogLevel.info))

    def test_debugAndWarn(self) -> None:
        """debug lets everything through; warn keeps only warnings and worse (refusals are never hidden)."""
        logs.set_level("debug")
        self.emitAll()
        self.assertEqual(len(self.emitted()), 5)
        logs.set_level("warn")
        self.emitAll()
        self.assertEqual(self.emitted(), [LogLevel.warn, LogLevel.error, LogLevel.critical])
        self.assertEqual(logs.level(), "warn")

    def test_failureAlwaysEmitted(self) -> None:
        """log.failure (critical) passes at any level."""
        logs.set_level("warn")
        try:
            raise ZeroDivisionError
        except ZeroDivisionError:
            self.log.failure("boom")
        self.assertEqual(self.emitted(), [LogLevel.critical])
        self.flushLoggedErrors(ZeroDivisionError)

    def test_unknownLevelRefused(self) -> None:
        """Only debug, info and warn: the level is unchanged after a refusal."""
        logs.set_level("info")
        for name in ("error", "trace", "INFO", ""):
            with self.assertRaises(ValueError) as caught:
                logs.set_level(name)
            self.assertIn("debug, info, warn", str(caught.exception))
        self.assertEqual(logs.level(), "info")


class TapOptionTests(SynchronousTestCase):
    def test_logLevelOption(self) -> None:
        """--log-level is checked when parsed; default info."""
        options = Options()
        options.parseOptions(["--listen", "securenet:0"])
        self.assertEqual(options["log-level"], "info")
        options = Options()
        options.parseOptions(["--listen", "securenet:0", "--log-level", "debug"])
        self.assertEqual(options["log-level"], "debug")
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--listen", "securenet:0", "--log-level", "chatty"])
        self.assertEqual(str(caught.exception), "--log-level chatty: must be one of debug, info, warn")

    def test_logLevelConfig(self) -> None:
        """log_level in --config, overridden by the command line."""
        config = self.mktemp()
        with open(config, "w") as f:
            f.write('listen = ["securenet:0"]\nlog_level = "warn"\n')
        options = Options()
        options.parseOptions(["--config", config])
        self.assertEqual(options["log-level"], "warn")
        options = Options()
        options.parseOptions(["--config", config, "--log-level", "debug"])
        self.assertEqual(options["log-level"], "debug")


class LiteralTests(SynchronousTestCase):
    def test_formatsToItself(self) -> None:
        """A literal log_format formats to exactly its text, whatever braces the values put in it."""
        from twisted.logger import formatEvent

        for text in ["plain", "{peer}", "{0}", "{{x}}", "a}b{c", "{log_format!r:>10}", "{} {", ""]:
            event = {"log_format": logs.literal(text), "peer": "should not appear"}
            self.assertEqual(formatEvent(event), text)


class SinkTests(SynchronousTestCase):
    """The audit trail fails closed: while it cannot be written, recording() is false; one line says so."""

    def emit(self) -> None:
        audit.auth_decision("denied", "PLAIN", None, fields={"peer": "127.0.0.1:1"}, attempted="alice", reason="x")

    def test_failsClosedAndRecovers(self) -> None:
        disk, stderr = failing_sink(self)
        self.assertTrue(audit.recording())
        self.emit()
        self.assertFalse(audit.recording())
        self.assertEqual(audit.sink_problem(), "OSError: [Errno 28] No space left on device")
        self.assertEqual(
            stderr.getvalue(),
            "securenet: the audit log cannot be written (OSError: [Errno 28] No space left on device): "
            "refusing new authentications until it can\n",
        )
        self.emit()  # still failing: nothing more said
        self.assertFalse(audit.recording())
        self.assertEqual(stderr.getvalue().count("\n"), 1)
        disk.fixed = True
        self.emit()
        self.assertTrue(audit.recording())
        self.assertIsNone(audit.sink_problem())
        self.assertTrue(stderr.getvalue().endswith("securenet: the audit log is written again: accepting authentications\n"))
        self.flushLoggedErrors(OSError)

    def test_continueSetting(self) -> None:
        """--audit-failure continue: said once on stderr, authentications go on."""
        _, stderr = failing_sink(self, fail_closed=False)
        self.emit()
        self.assertTrue(audit.recording())
        self.assertIn("authentications go on unrecorded", stderr.getvalue())
        self.flushLoggedErrors(OSError)

    def test_droppedEventsProveNothing(self) -> None:
        """An event below the level is never written, so it cannot end a failure."""
        disk, _ = failing_sink(self)
        self.emit()
        disk.fixed = True
        audit.auth_decision("ok", "PLAIN", "alice", fields={"peer": "p"}, level="debug")
        self.assertFalse(audit.recording())
        self.flushLoggedErrors(OSError)

    def test_unwatchedIsAlwaysRecording(self) -> None:
        disk = FullDisk()
        globalLogPublisher.addObserver(disk)
        self.addCleanup(globalLogPublisher.removeObserver, disk)
        self.emit()
        self.assertTrue(audit.recording())
        self.flushLoggedErrors(OSError)

    def test_optionDefaultsToRefuse(self) -> None:
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["audit-failure"], "refuse")
        options = Options()
        options.parseOptions(["--audit-failure", "continue"])
        self.assertEqual(options["audit-failure"], "continue")
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--audit-failure", "ignore"])
        self.assertEqual(str(e.exception), "--audit-failure ignore: must be one of refuse, continue")
