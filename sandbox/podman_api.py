"""podman-py, and only here: the API service, host facts, images, containers.

The service is shared: one ``podman system service`` per user, started on demand by
whichever hermetic command first finds none, detached, and ended by podman's own idle
timeout (``--time``). No command waits for it to exit; every command reuses it while its
socket answers. Every podman or HTTP error is translated into :class:`SandboxError` where
it enters.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import resource
import signal
import socket
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import podman
import podman.errors
import psutil
import requests

from sandbox.errors import Error, HostToolMissing, SandboxError
from sandbox.lifecycle import OWNER_LABEL, Owner, owner_in_name
from sandbox.plan import HostCapabilities
from sandbox.proc import run as run_program

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_START_TIMEOUT_S = 30.0
_PING_TIMEOUT_S = 3.0
_SLOW_PING_S = 30.0
_CONNECT_TIMEOUT_S = 10.0
_UNIX_PATH_MAX = 107
DEFAULT_IDLE_S = 300
DEFAULT_REQUEST_TIMEOUT_S = 600.0
_REAP_TIMEOUT_S = 60.0
# What a container runtime is called while it creates a container (comm names).
_RUNTIMES = frozenset({"runc", "crun", "runc:[0:PARENT]", "runc:[1:CHILD]", "runc:[2:INIT]"})
_CREATE_LOCK = threading.Lock()  # see PodmanSession.create


def default_socket_url() -> str:
    """Where podman's own service (podman.socket) listens for this user."""
    if os.geteuid() == 0:
        return "unix:///run/podman/podman.sock"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/podman-run-{os.geteuid()}"  # noqa: S108
    return f"unix://{runtime_dir}/podman/podman.sock"


def service_dir() -> Path:
    """This user's directory for hermetic's shared service: socket, pid, log and locks."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "hermetic"
    return Path(f"/tmp/hermetic-{os.geteuid()}")  # noqa: S108 - checked to be ours, 0700


def _own_private_dir(directory: Path, owner: int) -> Path:
    """Create ``directory`` (0700) or check that an existing one is ``owner``'s (this
    user's euid) and private.

    Raises:
        SandboxError: it belongs to another user, is a link, or others may write in it.
    """
    with suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    try:
        info = directory.lstat()
    except OSError as e:
        raise SandboxError(f"cannot use {directory} for the podman service: {e}") from e
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or info.st_mode & 0o077:
        raise SandboxError(
            f"{directory} is not a private directory of this user (owner uid {info.st_uid}, "
            f"mode {stat.filemode(info.st_mode)}); hermetic keeps its podman service there. "
            "Remove it, or set XDG_RUNTIME_DIR to a directory of your own, or point "
            "HERMETIC_PODMAN_URL at a running 'podman system service'"
        )
    return directory


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except (podman.errors.APIError, podman.errors.PodmanError) as e:
        raise SandboxError(f"podman could not {action}: {_explain(e)}") from e
    except requests.RequestException as e:
        raise SandboxError(f"podman API unreachable while trying to {action}: {e}") from e


# What a request meets when the service dies under it: podman-py turns every OSError of
# a request into "GET operation failed" (a refused or reset connection, a response cut
# off mid-body, a socket file that is gone).
_SERVICE_GONE = (
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
    FileNotFoundError,
)


def _explain(error: BaseException) -> str:
    """podman-py hides a dead socket behind 'POST operation failed': say what it was."""
    cause = error.__cause__
    if isinstance(cause, _SERVICE_GONE):
        return (
            f"{error} (the podman service stopped answering: {cause}); "
            "the next hermetic command starts a new one"
        )
    if isinstance(cause, OSError):  # what the request met, not only that it failed
        return f"{error} ({type(cause).__name__}: {cause})"
    return str(error)


def _call(action: str, function: Callable[[], _T]) -> _T:
    with _translated(action):
        return function()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock shared by every process of this user (flock on ``path``)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _socket_path(url: str) -> Path | None:
    return Path(url.removeprefix("unix://")) if url.startswith("unix://") else None


def _foreign_socket(url: str, owner: int) -> str | None:
    """Why a unix socket must not be trusted (None: it is ``owner``'s, this user's)."""
    path = _socket_path(url)
    if path is None:
        return None
    try:
        info = path.lstat()
    except OSError:
        return None  # absent: nothing answers there anyway
    if not stat.S_ISSOCK(info.st_mode):
        return f"{path} is not a socket"
    if info.st_uid != owner:
        return f"{path} belongs to uid {info.st_uid}, not to this user ({owner})"
    return None


def ping(url: str, timeout: float = _PING_TIMEOUT_S) -> bool:
    """Whether a podman API answers at ``url`` (a plain HTTP ``/_ping``; no client needed)."""
    path = _socket_path(url)
    if path is None:
        try:
            response = requests.get(f"{url.rstrip('/')}/_ping", timeout=timeout)
        except requests.RequestException:
            return False
        return response.status_code == 200
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(str(path))
            connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            answer = b""
            while chunk := connection.recv(4096):
                answer += chunk
    except OSError:
        return False
    return answer.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


def refuses(url: str) -> bool:
    """Whether nothing listens at ``url`` any more (a dead service), as opposed to a
    service that is merely slow to answer on a loaded host."""
    path = _socket_path(url)
    if path is None:
        try:
            requests.get(f"{url.rstrip('/')}/_ping", timeout=_PING_TIMEOUT_S)
        except requests.ConnectionError:
            return True
        except requests.RequestException:
            return False
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(_PING_TIMEOUT_S)
            connection.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    except OSError:
        return False  # slow (a full backlog), not gone
    return False


@dataclass(frozen=True, kw_only=True)
class SharedService:
    """hermetic's per-user podman service: where it listens and what it keeps."""

    directory: Path
    owner: int = field(default_factory=os.geteuid)  # the user whose files it trusts

    @property
    def socket(self) -> Path:
        return self.directory / "podman.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid_file(self) -> Path:
        return self.directory / "service.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "service.log"

    @property
    def create_lock(self) -> Path:
        return self.directory / "create.lock"

    def pid(self) -> int | None:
        """The service's pid, when the recorded one still runs as a podman service."""
        try:
            pid = int(self.pid_file.read_text().strip())
            process = psutil.Process(pid)
            command = process.cmdline()
            if process.uids().real != self.owner or self.url not in command:
                return None
        except (OSError, ValueError, psutil.Error):
            return None
        return pid

    def ensure(self, *, podman_bin: str, idle_s: int) -> bool:
        """Make the service answer at :attr:`url`, starting it when nothing answers there.

        Several processes may call this at once: the first takes the lock and starts the
        service, the others wait on the lock and find it answering.

        Returns:
            Whether this call started it.

        Raises:
            SandboxError: the directory is not ours, or the service did not come up.
            HostToolMissing: podman is not installed.
        """
        _own_private_dir(self.directory, self.owner)
        if ping(self.url):
            self._check_socket()
            return False
        if len(str(self.socket)) > _UNIX_PATH_MAX:
            raise SandboxError(
                f"{self.socket} is too long for a unix socket; set XDG_RUNTIME_DIR to a "
                "shorter directory"
            )
        with file_lock(self.directory / "service.lock"):
            if ping(self.url):  # another process started it while we waited
                self._check_socket()
                return False
            if not refuses(self.url) and ping(self.url, timeout=_SLOW_PING_S):
                self._check_socket()  # alive, only slow: never stop a service others use
                return False
            self._start(podman_bin=podman_bin, idle_s=idle_s)
        return True

    def _check_socket(self) -> None:
        problem = _foreign_socket(self.url, self.owner)
        if problem:
            raise SandboxError(f"refusing the podman socket: {problem}")

    def _start(self, *, podman_bin: str, idle_s: int) -> None:
        self.stop()  # a hung or half-dead service of ours holds nothing we need
        self.socket.unlink(missing_ok=True)  # stale: nothing answered on it
        argv = [podman_bin, "system", "service", f"--time={idle_s}", self.url]
        # Detached: a shell starts it in the background of a session of its own and exits
        # at once, so no terminal signal reaches it, nobody waits for it, and it never
        # becomes a zombie of a long-running node. Its errors go to service.log.
        script = 'command -v "$1" >/dev/null || exit 127; "$@" </dev/null >/dev/null & echo $!'
        with self.log_file.open("wb") as errors:
            launcher = subprocess.run(
                ["/bin/sh", "-c", script, "sh", *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
                # Not the starting command's directory: it may be removed while the
                # service lives on, and conmon then fails ("Failed to get working directory").
                cwd="/",
                timeout=_START_TIMEOUT_S,
                check=False,
            )
        if launcher.returncode == 127:
            raise HostToolMissing(tool=podman_bin, package="podman")
        started = launcher.stdout.decode().strip()
        if launcher.returncode != 0 or not started.isdigit():
            text = self.log_file.read_text("utf-8", "replace")
            raise SandboxError(f"'podman system service' could not be started:\n{text[-4000:]}")
        pid = int(started)
        self.pid_file.write_text(f"{pid}\n")
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if ping(self.url, timeout=1.0):
                self._check_socket()
                log.debug("started the shared podman service at %s (pid %d)", self.url, pid)
                return
            if not _running(pid):
                text = self.log_file.read_text("utf-8", "replace")
                raise SandboxError(f"'podman system service' exited at start:\n{text[-4000:]}")
            time.sleep(0.02)
        self.stop()
        raise SandboxError(f"'podman system service' did not answer within {_START_TIMEOUT_S}s")

    def stop(self) -> bool:
        """Stop the service if it runs (for tests and clean-up; commands never do).

        Returns:
            Whether a service was running.
        """
        pid = self.pid()
        if pid is None:
            return False
        # Rootless podman re-executes itself inside its user namespace: the service is a
        # process group (the session its launcher made), so signal all of it.
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return False
        members = _group_members(group)
        _signal_group(group, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=10)
        if alive:
            _signal_group(group, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=5)
        self.pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
        return True


def shared_service(owner: int | None = None) -> SharedService:
    """This user's shared service (whether or not it runs); ``owner`` is this user's
    euid (injected by tests)."""
    return SharedService(directory=service_dir(), owner=os.geteuid() if owner is None else owner)


class PodmanService:
    """A podman API connection for one command: the configured socket, the user's own
    podman socket, or hermetic's shared service (started when none answers).

    Leaving the context closes the connection only; a shared service goes on until it
    has been idle for ``idle_s`` seconds.
    """

    def __init__(
        self,
        *,
        url: str | None,
        podman_bin: str = "podman",
        idle_s: int = DEFAULT_IDLE_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        owner: int | None = None,
    ) -> None:
        self._explicit = url or os.environ.get("CONTAINER_HOST") or None
        self._owner = os.geteuid() if owner is None else owner  # whose sockets it trusts
        self._podman_bin = podman_bin
        self._idle_s = idle_s
        self._timeout_s = request_timeout_s
        self._session: PodmanSession | None = None
        self.started = False

    def __enter__(self) -> PodmanSession:
        shared = shared_service(self._owner)
        url, pid = self._locate(shared)
        self._session = PodmanSession(
            url,
            service_pid=pid,
            podman_bin=self._podman_bin,
            create_lock=_own_private_dir(shared.directory, self._owner) / "create.lock",
            request_timeout_s=self._timeout_s,
        )
        return self._session

    def _locate(self, shared: SharedService) -> tuple[str, int | None]:
        if self._explicit is not None:
            if not ping(self._explicit):
                raise SandboxError(
                    f"no podman API answers at {self._explicit} (HERMETIC_PODMAN_URL or "
                    "CONTAINER_HOST); start it with 'podman system service --time=0 <url>' "
                    "or unset the variable"
                )
            problem = _foreign_socket(self._explicit, self._owner)
            if problem:
                raise SandboxError(f"refusing the podman socket: {problem}")
            return self._explicit, None
        own = default_socket_url()
        if ping(own):
            problem = _foreign_socket(own, self._owner)
            if problem is None:
                return own, None
            log.warning("ignoring the podman socket %s: %s", own, problem)
        self.started = shared.ensure(podman_bin=self._podman_bin, idle_s=self._idle_s)
        return shared.url, shared.pid()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _group_members(group: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(group: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


class PodmanSession:
    """Operations hermetic needs from podman, over one API socket."""

    def __init__(
        self,
        url: str,
        *,
        service_pid: int | None = None,
        podman_bin: str = "podman",
        create_lock: Path | None = None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.podman_bin = podman_bin
        self._service_pid = service_pid
        self._create_lock = create_lock
        self._timeout_s = request_timeout_s
        self._client = podman.PodmanClient(base_url=url, timeout=request_timeout_s)
        self._facts: dict[str, Any] = {}
        # Images found present by this session: hermetic addresses images by digest and
        # removes none, so a yes holds for the command (a build's image is asked twice).
        self._present: set[str] = set()

    def sibling(self) -> PodmanSession:
        """Another connection to the same service (one per thread)."""
        other = PodmanSession(
            self.url,
            service_pid=self._service_pid,
            podman_bin=self.podman_bin,
            create_lock=self._create_lock,
            request_timeout_s=self._timeout_s,
        )
        other._facts = self._facts  # host facts hold for the service, not the connection
        return other

    def _nproc_hard(self) -> int:
        """The process limit containers inherit: podman lowers its own below the shell's."""
        hard = _hard_limit(resource.RLIMIT_NPROC)
        group = _process_group(self._service_pid) if self._service_pid else None
        if group is not None:
            for member in _group_members(group):
                try:
                    hard = min(hard, member.rlimit(psutil.RLIMIT_NPROC)[1])
                except psutil.Error:
                    continue
        return hard

    def host_capabilities(self) -> HostCapabilities:
        """What this podman can enforce: cgroup version, delegated controllers, rlimits.

        Asked once per service and command: the answer does not change between builds.
        """
        cached: HostCapabilities | None = self._facts.get("host")
        if cached is None:
            cached = self._host_capabilities()
            self._facts["host"] = cached
        return cached

    def _host_capabilities(self) -> HostCapabilities:
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
        if reference in self._present:
            return True
        found = bool(
            _call(f"look up image {reference}", lambda: self._client.images.exists(reference))
        )
        if found:
            self._present.add(reference)
        return found

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

        The container is labelled with this process as its owner, so that a later command
        removes it if this process dies. Creates are serialized across every process of
        the user: podman 4.3's service reads /etc/subuid through libsubid for every
        keep-id create, which is not thread-safe; two at once fail with "keep-id requires
        additional UIDs" or crash the service (SIGSEGV).
        """
        labels = {**request.get("labels", {}), OWNER_LABEL: Owner.current().stamp}
        body = json.dumps({**request, "labels": labels})

        def create() -> BuildContainer:
            response = self._client.api.post(
                "/containers/create", data=body, headers={"content-type": "application/json"}
            )
            response.raise_for_status()
            return BuildContainer(
                self._client.containers.get(response.json()["Id"]),
                podman_bin=self.podman_bin,
                url=self.url,
            )

        with _CREATE_LOCK, self._cross_process_lock():
            return _call(f"create container from image {request.get('image')}", create)

    def image_file(self, reference: str, path: str, *, max_bytes: int = 64 << 20) -> bytes:
        """The content of one regular file of an image, read without running anything.

        A container is created (never started, no network) and removed again; podman
        streams the file out of its storage as a tar.

        Raises:
            SandboxError: the image or the file is missing, not a file, or too large.
        """
        container = self.create(
            {
                "image": reference,
                "command": ["/nonexistent"],  # never started
                "netns": {"nsmode": "none"},
                "labels": {"dev.hermetic.peek": "1"},
            }
        )

        def read() -> bytes:
            response = self._client.api.get(
                f"/containers/{container.id}/archive", params={"path": path}, stream=True
            )
            response.raise_for_status()
            with tarfile.open(fileobj=response.raw, mode="r|") as tar:
                for member in tar:
                    if not member.isfile() or member.size > max_bytes:
                        break
                    stream = tar.extractfile(member)
                    if stream is not None:
                        return stream.read(max_bytes + 1)[:max_bytes]
            raise SandboxError(
                f"{path} in {reference} is not a regular file under {max_bytes} bytes"
            )

        try:
            return _call(f"read {path} from image {reference}", read)
        finally:
            container.remove()

    @contextmanager
    def _cross_process_lock(self) -> Iterator[None]:
        if self._create_lock is None:
            yield
            return
        with file_lock(self._create_lock):
            yield

    def orphans(self) -> list[tuple[str, str]]:
        """(id, name) of hermetic's containers whose owning process no longer runs."""

        def listed() -> list[dict[str, Any]]:
            response = self._client.api.get(
                "/containers/json",
                params={"all": True, "filters": json.dumps({"label": [OWNER_LABEL]})},
                timeout=_REAP_TIMEOUT_S,
            )
            response.raise_for_status()
            return list(response.json() or [])

        found = []
        for entry in _call("list build containers", listed):
            stamp = (entry.get("Labels") or {}).get(OWNER_LABEL, "")
            owner = Owner.parse(stamp)
            if owner is not None and not owner.alive():
                names = entry.get("Names") or [""]
                found.append((str(entry["Id"]), str(names[0])))
        return found

    def remove_container(self, container_id: str) -> None:
        """Kill and remove a container by id (through the CLI when the API is gone)."""

        def remove() -> None:
            response = self._client.api.delete(
                f"/containers/{container_id}",
                params={"force": True, "v": True, "timeout": 0},
                timeout=_REAP_TIMEOUT_S,
            )
            if response.status_code != 404:
                response.raise_for_status()

        try:
            _call(f"remove container {container_id[:12]}", remove)
        except SandboxError as e:
            log.debug("API removal failed (%s); trying the podman command", e)
            _remove_by_command(self.podman_bin, container_id)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]  # unannotated in podman-py


def kill_stuck_creations() -> list[str]:
    """Kill container runtimes left creating a container for a hermetic that died.

    A hermetic killed while its container starts (its seccomp listener gone mid-handshake)
    can leave ``runc create`` and ``runc init`` blocked for good, and podman's service
    holding that container's lock: neither the API nor ``podman rm`` could remove it then.
    Such a runtime is found by its conmon, whose log path is in a scratch directory that
    carries its owner's stamp; only runtimes of owners that no longer run are killed, and
    conmon then ends by itself.

    Returns:
        The ids of the containers whose creation was ended.
    """
    ended = []
    # By name first (one /proc read per process); a conmon's owner and command line after.
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] != "conmon" or process.uids().real != os.getuid():
                continue
            command = process.cmdline()
            owner = _conmon_owner(command)
            if owner is None or owner.alive():
                continue
            runtimes = [c for c in process.children(recursive=True) if c.name() in _RUNTIMES]
            for runtime in runtimes:
                runtime.kill()
        except psutil.Error:
            continue
        if runtimes:
            log.info("ended a container creation left by a hermetic that no longer runs")
            ended.append(command[command.index("-c") + 1] if "-c" in command else "?")
    return ended


def _conmon_owner(command: list[str]) -> Owner | None:
    """The owner stamped into the scratch directory of the log a conmon writes."""
    for flag, value in itertools.pairwise(command):
        if flag == "-l" and value.startswith("k8s-file:"):
            return owner_in_name(Path(value.removeprefix("k8s-file:")).parent.name, "build")
    return None


def _remove_by_command(podman_bin: str, container_id: str) -> None:
    """``podman rm -f``: works without the service (conmon keeps a container running
    after its service died)."""
    try:
        done = run_program(
            [podman_bin, "rm", "--force", "--time", "0", "--volumes", container_id],
            timeout=120,
            check=False,
        )
    except Error as e:  # timed out, or podman is gone: nothing more to try here
        log.warning("could not remove build container %s: %s", container_id, e)
        return
    if done.returncode not in (0, 1):  # 1: no such container
        log.warning(
            "could not remove build container %s: %s",
            container_id,
            done.stderr.decode("utf-8", "replace").strip(),
        )


def _hard_limit(which: int) -> int:
    hard = resource.getrlimit(which)[1]
    return hard if hard != resource.RLIM_INFINITY else 1 << 30


class BuildContainer:
    """A created container; remove it in ``finally``."""

    def __init__(self, container: Any, *, podman_bin: str = "podman", url: str = "") -> None:
        self._container = container
        self._podman_bin = podman_bin
        self._url = url
        self.id: str = container.id

    def start(self) -> None:
        _call("start the build container", self._container.start)

    def init_pid(self) -> int | None:
        """Host pid of the container's first process, while it runs."""

        def pid() -> int | None:
            try:
                self._container.reload()
            except podman.errors.APIError as e:
                # podman reads /proc/PID/cgroup of a running container: a process that
                # ends while it looks fails the inspection (500, "no such process")
                if "no such process" in str(e).lower():
                    return None
                raise
            value = self._container.attrs.get("State", {}).get("Pid", 0)
            return int(value) or None

        return _call("inspect the build container", pid)

    def init_process(self) -> tuple[int | None, int | None]:
        """The host pid of the container's first process, and a pidfd for it (None when
        it has already ended): the pidfd becomes readable when the process ends."""
        pid = self.init_pid()
        if pid is None:
            return None, None
        try:
            exited = os.pidfd_open(pid)
        except OSError:
            return pid, None  # gone already, or no pidfd here: podman's wait will do
        # The pid may have ended and been reused between the two calls: it is this
        # container's only if podman still names it now that the pidfd holds it.
        if self.init_pid() != pid:
            os.close(exited)
            return pid, None
        return pid, exited

    def wait(self, *, promptly: bool = False) -> int:
        """Block until the container exits; its exit status.

        No read timeout: a build may run for as long as its spec allows, and the caller
        enforces that. A service that dies closes the connection, which ends the wait.

        Args:
            promptly: the container's process is known to have ended; poll podman's state
                every 10 ms instead of its default 250 ms.
        """
        params: dict[str, Any] = {"condition": ["exited"]}
        if promptly:
            params["interval"] = "10ms"

        def wait() -> int:
            response = self._container.client.post(
                f"/containers/{self.id}/wait", params=params, timeout=(_CONNECT_TIMEOUT_S, None)
            )
            response.raise_for_status()
            return int(response.json())

        return _call("wait for the build container", wait)

    def service_gone(self) -> bool:
        """Whether the podman service has gone (a build holds no request open to notice)."""
        return bool(self._url) and refuses(self._url)

    def kill(self) -> None:
        """SIGKILL the container; its pid namespace takes every process with it."""
        try:
            self._container.kill(signal="SIGKILL")
        except (podman.errors.APIError, requests.RequestException) as e:
            log.debug("kill %s: %s", self.id, e)  # already gone is fine; remove() follows

    def remove(self) -> None:
        """Force-remove the container (it may still be running), even without the API."""
        try:
            self._container.remove(force=True, v=True)
        except podman.errors.NotFound:
            pass
        except (podman.errors.APIError, requests.RequestException) as e:
            log.debug("API removal of %s failed (%s); trying the podman command", self.id, e)
            _remove_by_command(self._podman_bin, self.id)
