"""How a command's outcome reaches the user: text for people, or one JSON document.

Every command builds a :class:`Report` (its JSON document, and a formatter for the text)
and hands it to the :class:`Output` the user chose with ``--json``; errors go through the
same object, so under ``--json`` an error is a JSON document on stdout too.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

ERROR_SCHEMA = "https://hermetic.dev/schemas/error/v1"


@dataclass(frozen=True)
class Report:
    """A command's result: the document ``--json`` prints, and the text people read
    (made only when it is shown)."""

    document: Any
    text: Callable[[], str]


@dataclass(frozen=True, kw_only=True)
class Failure:
    """An error as the user sees it: its text (what, where, what to do), its kind, and
    each problem when there are several (a spec or a policy with many mistakes)."""

    message: str
    kind: str
    problems: Sequence[str] = field(default_factory=tuple)
    exit_code: int = 2


class Output(ABC):
    """Where results and errors go; one implementation per output format."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    @abstractmethod
    def result(self, report: Report) -> None:
        """Print a command's result on stdout."""

    def error(self, failure: Failure) -> None:
        """Report an error: always one line (or a list) on stderr, for people."""
        print(f"hermetic: error: {failure.message}", file=self.stderr)

    def note(self, text: str) -> None:
        """A message beside the result (progress, where results went): stderr."""
        print(text, file=self.stderr)

    @staticmethod
    def chosen(json_output: bool) -> Output:
        return JsonOutput() if json_output else HumanOutput()


class HumanOutput(Output):
    """Text for a terminal or a log."""

    def result(self, report: Report) -> None:
        print(report.text(), file=self.stdout)


class JsonOutput(Output):
    """One JSON document on stdout and nothing else there (``--json``)."""

    def result(self, report: Report) -> None:
        print(json.dumps(report.document, indent=2), file=self.stdout)

    def error(self, failure: Failure) -> None:
        super().error(failure)
        document: dict[str, Any] = {
            "_schema": ERROR_SCHEMA,
            "exit_code": failure.exit_code,
            "type": failure.kind,
            "error": failure.message,
        }
        if failure.problems:
            document["problems"] = list(failure.problems)
        print(json.dumps(document, indent=2), file=self.stdout)
