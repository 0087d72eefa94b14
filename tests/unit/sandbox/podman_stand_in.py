"""A stand-in for ``podman system service`` in the unit tests of the reuse logic: it
listens on the unix socket it is given, answers every request like podman's ``/_ping``,
and exits after ``--time`` seconds without a request, as podman does.

Each start is appended to $STAND_IN_LOG; $STAND_IN_DELAY seconds pass before it listens
(a slow start widens the window in which two processes could both start one).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv[:2] != ["system", "service"]:
        return 125
    idle = int(next(a for a in argv if a.startswith("--time=")).split("=", 1)[1])
    path = Path(argv[-1].removeprefix("unix://"))
    with Path(os.environ["STAND_IN_LOG"]).open("a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("STAND_IN_DELAY", "0")))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    server.settimeout(idle)
    while True:
        try:
            connection, _ = server.accept()
        except TimeoutError:
            path.unlink(missing_ok=True)
            return 0
        # A client may hang up at once (a liveness probe only connects): as podman does,
        # the service goes on (a stand-in that died of EPIPE here made a test flaky).
        with connection, contextlib.suppress(OSError):
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
