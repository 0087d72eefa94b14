"""podman-py, and only here: the API socket's lifetime, host facts, images, containers.

Every podman or HTTP error is translated into :class:`SandboxError` where it enters.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import podman
import podman.errors
import psutil
import requests

from sandbox.errors import HostToolMissing, SandboxError
from sandbox.plan import HostCapabilities

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_START_TIMEOUT_S = 30.0
_CREATE_LOCK = threading.Lock()  # see PodmanSession.create


def default_socket_url() -> str:
    """Where podman's own service listens for this user."""
    if os.geteuid() == 0:
        return "unix:///run/podman/podman.sock"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/podman-run-{os.geteuid()}"  # noqa: S108
    return f"unix://{runtime_dir}/podman/podman.sock"


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except (podman.errors.APIError, podman.errors.PodmanError) as e:
        raise SandboxError(f"podman could not {action}: {e}") from e
    except requests.RequestException as e:
        raise SandboxError(f"podman API unreachable while trying to {action}: {e}") from e


def _call(action: str, function: Callable[[], _T]) -> _T:
    with _translated(action):
        return function()


class PodmanService:
    """A podman API connection: the configured or user's socket, else a private one.

    A private service is started only when no socket answers, and stopped (with its
    socket directory removed) when the context ends.
    """

    def __init__(self, *, url: str | None, podman_bin: str = "podman") -> None:
        self._url = url or os.environ.get("CONTAINER_HOST") or default_socket_url()
        self._explicit = url is not None
        self._podman_bin = podman_bin
        self._process: subprocess.Popen[bytes] | None = None
        self._temp: Path | None = None
        self._session: PodmanSession | None = None
        self.started = False

    def __enter__(self) -> PodmanSession:
        if _ping(self._url):
            self._session = PodmanSession(self._url)
        elif self._explicit:
            raise SandboxError(
                f"no podman API answers at {self._url} (HERMETIC_PODMAN_URL); start it with "
                "'podman system service --time=0 <url>' or unset the variable"
            )
        else:
            url = self._start()
            assert self._process is not None
            self._session = PodmanSession(url, service_pid=self._process.pid)
        return self._session

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self.stop()

    def _start(self) -> str:
        self._temp = Path(tempfile.mkdtemp(prefix="hermetic-podman-"))
        url = f"unix://{self._temp}/podman.sock"
        errors = (self._temp / "service.log").open("wb")
        try:
            self._process = subprocess.Popen(
                [self._podman_bin, "system", "service", "--time=0", url],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,  # Ctrl-C reaches hermetic, which stops it in order
            )
        except FileNotFoundError as e:
            raise HostToolMissing(tool=self._podman_bin, package="podman") from e
        finally:
            errors.close()
        self.started = True
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                text = (self._temp / "service.log").read_text("utf-8", "replace")
                self.stop()
                raise SandboxError(f"'podman system service' exited at start:\n{text[-4000:]}")
            if _ping(url):
                log.debug("started podman service at %s", url)
                return url
            time.sleep(0.05)
        self.stop()
        raise SandboxError(f"'podman system service' did not answer within {_START_TIMEOUT_S}s")

    def stop(self) -> None:
        """Stop the private service, if this object started one."""
        if self._process is not None:
            # Rootless podman re-executes itself inside its user namespace, so the
            # service is a process group (started in its own session): stop all of it.
            group = self._process.pid
            members = _group_members(group)
            _signal_group(group, signal.SIGTERM)
            _, alive = psutil.wait_procs(members, timeout=10)
            if alive:
                _signal_group(group, signal.SIGKILL)
                psutil.wait_procs(alive, timeout=5)
            self._process.wait()
            self._process = None
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None


def _group_members(group: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _signal_group(group: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(group, signum)


def _ping(url: str) -> bool:
    if url.startswith("unix://") and not Path(url.removeprefix("unix://")).exists():
        return False
    try:
        with podman.PodmanClient(base_url=url, timeout=5) as client:
            return bool(client.ping())
    except (podman.errors.APIError, podman.errors.PodmanError, requests.RequestException, OSError):
        return False


class PodmanSession:
    """Operations hermetic needs from podman, over one API socket."""

    def __init__(self, url: str, *, service_pid: int | None = None) -> None:
        self.url = url
        self._service_pid = service_pid
        self._client = podman.PodmanClient(base_url=url, timeout=600)

    def sibling(self) -> PodmanSession:
        """Another connection to the same service (one per thread)."""
        return PodmanSession(self.url, service_pid=self._service_pid)

    def _nproc_hard(self) -> int:
        """The process limit containers inherit: podman lowers its own below the shell's."""
        hard = _hard_limit(resource.RLIMIT_NPROC)
        if self._service_pid is not None:
            for member in _group_members(self._service_pid):
                try:
                    hard = min(hard, member.rlimit(psutil.RLIMIT_NPROC)[1])
                except psutil.Error:
                    continue
        return hard

    def host_capabilities(self) -> HostCapabilities:
        """What this podman can enforce: cgroup version, delegated controllers, rlimits."""
        if os.geteuid() != 0 and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
            # Rootless on cgroup v1 (or hybrid, which podman treats as v1): the kernel
            # delegates no controller to an unprivileged user, so there is nothing to ask.
            # 'podman info' would say the same but costs a quarter of a second.
            return HostCapabilities(
                rootless=True,
                cgroup_version=1,
                cgroup_controllers=frozenset(),
                nofile_hard=_hard_limit(resource.RLIMIT_NOFILE),
                nproc_hard=self._nproc_hard(),
            )
        info: dict[str, Any] = _call("read host information", self._client.info)
        host = info.get("host", {})
        version = str(host.get("cgroupVersion", "v1")).lstrip("v")
        return HostCapabilities(
            rootless=bool(host.get("security", {}).get("rootless", os.geteuid() != 0)),
            cgroup_version=int(version) if version.isdigit() else 1,
            cgroup_controllers=frozenset(host.get("cgroupControllers") or ()),
            nofile_hard=_hard_limit(resource.RLIMIT_NOFILE),
            nproc_hard=self._nproc_hard(),
        )

    def image_exists(self, reference: str) -> bool:
        return bool(
            _call(f"look up image {reference}", lambda: self._client.images.exists(reference))
        )

    def image_id(self, reference: str) -> str:
        """The image id (config digest) of a present image."""
        image = _call(f"inspect image {reference}", lambda: self._client.images.get(reference))
        return str(image.id)

    def load_archive(self, archive: Path) -> list[str]:
        """Load an ``oci-archive`` tarball, streaming it; returns the names podman gave it."""

        def load() -> list[str]:
            with archive.open("rb") as stream:
                response = self._client.api.post(
                    "/images/load", data=stream, headers={"Content-type": "application/x-tar"}
                )
            response.raise_for_status()
            return list(response.json().get("Names", []))

        return _call(f"load image archive {archive}", load)

    def pull(self, reference: str, *, tls_verify: bool, auth_header: str | None) -> str:
        """Pull ``repository@sha256:…`` (podman checks the manifest against the digest);
        returns the image id. ``auth_header`` is an X-Registry-Auth value, or None."""

        def pull() -> str:
            response = self._client.api.post(
                "/images/pull",
                params={"reference": reference, "tlsVerify": tls_verify, "quiet": True},
                headers={"X-Registry-Auth": auth_header} if auth_header else None,
            )
            # libpod streams JSON objects and reports a failed pull in one of them
            # (with HTTP 200 once the stream began)
            found, errors = "", []
            for line in response.text.splitlines():
                with suppress(ValueError):
                    report = json.loads(line)
                    errors.append(str(report.get("error") or ""))
                    found = str(report.get("id") or found)
            errors = [error for error in errors if error]
            if errors or response.status_code >= 400 or not found:
                detail = "; ".join(errors) or response.text[-2000:]
                raise SandboxError(f"podman could not pull {reference}: {detail}")
            return found

        return _call(f"pull {reference}", pull)

    def create(self, request: dict[str, Any]) -> BuildContainer:
        """Create (not start) a container from a libpod create request.

        Creates are serialized: podman 4.3's service reads /etc/subuid through
        libsubid for every keep-id create, which is not thread-safe; two at once
        fail with "keep-id requires additional UIDs" or crash the service (SIGSEGV).
        """

        def create() -> BuildContainer:
            response = self._client.api.post(
                "/containers/create",
                data=json.dumps(request),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            return BuildContainer(self._client.containers.get(response.json()["Id"]))

        with _CREATE_LOCK:
            return _call(f"create container from image {request.get('image')}", create)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]  # unannotated in podman-py


def _hard_limit(which: int) -> int:
    hard = resource.getrlimit(which)[1]
    return hard if hard != resource.RLIM_INFINITY else 1 << 30


class BuildContainer:
    """A created container; remove it in ``finally``."""

    def __init__(self, container: Any) -> None:
        self._container = container
        self.id: str = container.id

    def start(self) -> None:
        _call("start the build container", self._container.start)

    def init_pid(self) -> int | None:
        """Host pid of the container's first process, while it runs."""

        def pid() -> int | None:
            self._container.reload()
            value = self._container.attrs.get("State", {}).get("Pid", 0)
            return int(value) or None

        return _call("inspect the build container", pid)

    def wait(self) -> int:
        """Block until the container exits; its exit status."""
        return int(
            _call("wait for the build container", lambda: self._container.wait(condition="exited"))
        )

    def kill(self) -> None:
        """SIGKILL the container; its pid namespace takes every process with it."""
        try:
            self._container.kill(signal="SIGKILL")
        except (podman.errors.APIError, requests.RequestException) as e:
            log.debug("kill %s: %s", self.id, e)  # already gone is fine

    def remove(self) -> None:
        """Force-remove the container (it may still be running)."""
        try:
            self._container.remove(force=True, v=True)
        except podman.errors.NotFound:
            pass
        except (podman.errors.APIError, requests.RequestException) as e:
            log.warning("could not remove build container %s: %s", self.id, e)
