"""The build against hermetic's machinery and against its own trace, on real podman.

Each attack runs as a real build. Its negative control shows the attack succeeds (or
the probe finds what it looks for) once the defence is taken away: hermetic's
directory opened to the build's uid as it was before (``weakened``), or podman's own
seccomp profile in place of hermetic's (``unhardened``). Its positive control shows
the legitimate path still works.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import sandbox.build
import sandbox.plan
import sandbox.trace.profile
from rebuilder import render
from sandbox.build import BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.podman_backend import PodmanBackend
from sandbox.result import BuildResult, BuildStatus
from sandbox.spec import Spec
from sandbox.trace.fanotify import USER_LIMITS
from sandbox.trace.levels import TraceLevel
from sandbox.trace.limits import TraceLimits
from tests.conftest import write_spec
from tests.integration.conftest import Sandbox, log_of, trace_of
from tests.integration.test_isolation import Listener

TOKEN = "build-ended-5eedc0ffee5eedc0"  # the sentinel's name, made known to the tests
SIGSYS_STATUS = 128 + 31


@pytest.fixture
def known_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sandbox.build, "new_token", lambda: TOKEN)
    return TOKEN


@pytest.fixture
def weakened(monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative control: hermetic's directory and state open to the build's uid."""
    monkeypatch.setattr(sandbox.plan, "TOOLS_MODE", "0755")
    monkeypatch.setattr(sandbox.plan, "STATE_MODE", "0777")


@pytest.fixture
def unhardened(monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative control: podman's default seccomp profile, without hermetic's limits."""

    def keep(profile: dict[str, Any], **options: Any) -> None:
        return None

    monkeypatch.setattr(sandbox.trace.profile, "_harden", keep)


def lines(result: BuildResult) -> list[str]:
    return log_of(result).splitlines()


# --- hermetic's machinery -------------------------------------------------------------

TOOLS = """
/.hermetic/busybox true && echo ran:busybox
/.hermetic/busybox nc -w 1 192.0.2.10 80 </dev/null
echo '/.hermetic/busybox nc -w 1 192.0.2.11 80 </dev/null; echo ran:script' \
    > /.hermetic/state/x.sh && echo wrote:state
sh /.hermetic/state/x.sh
echo x > /.hermetic/out/status && echo wrote:out
ls /.hermetic > /dev/null && echo listed:hermetic
/usr/bin/true && echo ran:image-program
"""


def test_the_build_cannot_run_hermetics_busybox_or_a_script_in_its_state(
    sandbox_: Sandbox, minimal_image: str
) -> None:
    result = sandbox_.build(TOOLS)
    assert result.status is BuildStatus.BUILT, log_of(result)
    found = lines(result)
    for done in ("ran:busybox", "wrote:state", "ran:script", "wrote:out", "listed:hermetic"):
        assert done not in found, log_of(result)
    assert "Permission denied" in log_of(result)
    assert "ran:image-program" in found  # positive control: the build's own programs run
    trace = trace_of(result)
    attempts = {(a["call"], a["path"]) for a in trace["hermetic_path_attempts"]}
    assert ("exec", "/.hermetic/busybox") in attempts  # any exec attempt there is recorded
    assert ("open", "/.hermetic/state/x.sh") in attempts
    assert ("open", "/.hermetic/out/status") in attempts
    assert result.trace["hermetic_path_attempts"] == len(trace["hermetic_path_attempts"])
    assert result.trace["network_attempts"] == 0 and trace["complete"], trace["gaps"]


def test_without_the_closed_directory_the_same_attack_runs_and_is_still_counted(
    sandbox_: Sandbox, minimal_image: str, weakened: None
) -> None:
    result = sandbox_.build(TOOLS)
    found = lines(result)
    assert "ran:busybox" in found and "wrote:state" in found and "ran:script" in found
    # What hermetic's own busybox does for the build is the build's, whatever its path.
    assert result.trace["network_targets"] == ["connect 192.0.2.10:80", "connect 192.0.2.11:80"]
    assert result.trace["network_attempts"] == 2


RUNNER = r"""
runner=
for p in /proc/[0-9]*; do
    if tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q '/.hermetic/runner.sh'; then
        runner=${p#/proc/}
    fi
done
echo runner:$runner
kill -TERM $runner 2>/dev/null && echo signalled:runner
kill -0 1 2>/dev/null && echo signalled:init
./probe ptrace $runner
cat /proc/$runner/environ > /dev/null 2>&1 && echo read:runner-environ
ls /proc/$runner/fd > /dev/null 2>&1 && echo read:runner-fds
# The sentinel's name and two canaries, as patterns in a file: a pattern on grep's
# command line would be found in grep's own.
t=build-ended-5eedc0ff; printf '%s\n' "${t}ee5eedc0" > /tmp/token
c=canary-a1b2; printf '%s\n' "${c}c3" > /tmp/canary
CANARY_ENV=${c}e9 sh -c 'sleep 30; :' x canary-a1b2c3 &
own=$!
until tr '\0' ' ' < /proc/$own/cmdline | grep -q -F -f /tmp/canary; do sleep 0.05; done
printf '%s\n' "${c}e9" >> /tmp/canary
readable="/proc/[0-9]*/cmdline /proc/[0-9]*/environ"
grep -l -F -f /tmp/token $readable 2>/dev/null | sed 's/^/found-token:/'
grep -l -F -f /tmp/canary $readable 2>/dev/null | sed 's/^/found-canary:/'
kill -0 $own && echo signalled:own
./probe ptrace $own
kill -KILL $own
"""


def test_the_runner_cannot_be_signalled_traced_or_read(
    sandbox_: Sandbox, minimal_image: str, probe: Path, known_token: str
) -> None:
    result = sandbox_.build(RUNNER, programs={"probe": probe})
    assert result.status is BuildStatus.BUILT, log_of(result)
    found = lines(result)
    runner = next(line for line in found if line.startswith("runner:"))
    assert runner != "runner:", "the probe found the runner's process"
    for done in ("signalled:runner", "signalled:init", "read:runner-environ", "read:runner-fds"):
        assert done not in found, log_of(result)
    assert "ptrace Operation not permitted" in found
    assert not [line for line in found if line.startswith("found-token:")], log_of(result)
    # Controls: the probes do find a canary in an argument list and in an environment,
    # and do signal and trace a process of the build's own.
    canaries = [line for line in found if line.startswith("found-canary:")]
    assert any(c.endswith("/cmdline") for c in canaries), log_of(result)
    assert any(c.endswith("/environ") for c in canaries), log_of(result)
    assert "signalled:own" in found and "ptrace attached" in found
    assert trace_of(result)["complete"]  # the token reached the runner by the gate


NAMESPACES = """
unshare -U true 2>/dev/null && echo made:userns
unshare -m true 2>/dev/null && echo made:mountns
unshare -Urm true 2>/dev/null && echo made:user+mountns
unshare -n true 2>/dev/null && echo made:netns
./probe clone-parent
unshare true && echo unshare-nothing:ok
"""


@pytest.mark.parametrize("trace", [TraceLevel.STANDARD, TraceLevel.OFF])
def test_nested_namespaces_mounts_and_siblings_are_denied(
    sandbox_: Sandbox, minimal_image: str, probe: Path, trace: TraceLevel
) -> None:
    result = sandbox_.build(NAMESPACES, programs={"probe": probe}, trace=trace)
    assert result.status is BuildStatus.BUILT, log_of(result)
    found = lines(result)
    assert not [line for line in found if line.startswith("made:")], log_of(result)
    assert "clone-parent Operation not permitted" in found
    assert "unshare-nothing:ok" in found  # unshare(2) without a namespace still works


def test_under_podmans_own_profile_the_build_makes_namespaces(
    sandbox_: Sandbox, minimal_image: str, probe: Path, unhardened: None
) -> None:
    result = sandbox_.build(NAMESPACES, programs={"probe": probe})
    found = lines(result)
    assert "made:userns" in found and "made:user+mountns" in found, log_of(result)
    assert "clone-parent created" in found


I386 = """
./probe socketcall 127.0.0.1 9; echo socketcall:$?
./probe i386 127.0.0.1 9; echo i386:$?
"""


def test_i386_system_calls_get_through_without_hermetics_profile(
    sandbox_: Sandbox, minimal_image: str, probe: Path, unhardened: None
) -> None:
    # Negative controls first: podman's own profile lets int 0x80 through...
    allowed = sandbox_.build(I386, programs={"probe": probe}, name="podman")
    assert "socket 3" in lines(allowed) and "socketcall:0" in lines(allowed), log_of(allowed)
    # ...and on the host the same binary reaches a listener that way.
    listener = Listener()
    try:
        host = subprocess.run(
            [str(probe), "socketcall", "127.0.0.1", str(listener.port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    finally:
        listener.close()
    assert host.stdout.split("\n")[:2] == ["socket 3", "connect 0"]


def test_i386_system_calls_are_denied_in_every_build(
    sandbox_: Sandbox, minimal_image: str, probe: Path
) -> None:
    for trace in (TraceLevel.STANDARD, TraceLevel.OFF):
        result = sandbox_.build(I386, programs={"probe": probe}, trace=trace, name=trace.value)
        assert result.status is BuildStatus.BUILT, log_of(result)
        found = lines(result)
        # The kernel kills the process at its first i386 call (SIGSYS): nothing ran.
        assert f"socketcall:{SIGSYS_STATUS}" in found and f"i386:{SIGSYS_STATUS}" in found
        assert not [line for line in found if line.startswith("socket ")], log_of(result)


# --- the trace ------------------------------------------------------------------------

SENDMMSG = """
./probe sendmmsg 127.0.0.1 9 192.0.2.1 53
./probe sendmmsg 127.0.0.1 9 127.0.0.2 53
perl -MIO::Socket::INET -e '
    alarm 60;
    $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:4321", ReuseAddr => 1)
        or die "listen: $!";
    print "listening\\n"; $c = $s->accept; print "accepted\\n"' &
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    (: > /dev/tcp/127.0.0.1/4321) 2>/dev/null && break
    sleep 0.2
done
wait
"""


def test_every_sendmmsg_message_is_inspected_and_loopback_counts_apart(
    sandbox_: Sandbox, minimal_image: str, probe: Path
) -> None:
    result = sandbox_.build(SENDMMSG, programs={"probe": probe})
    assert result.status is BuildStatus.BUILT, log_of(result)
    assert "accepted" in lines(result), log_of(result)
    network = trace_of(result)["network"]
    sent = [(n["address"], n["port"], n["loopback"]) for n in network if n["call"] == "sendmmsg"]
    assert sent == [
        ("127.0.0.1", 9, True),
        ("192.0.2.1", 53, False),  # the second message of the first call
        ("127.0.0.1", 9, True),
        ("127.0.0.2", 53, True),  # classification: a second message that stays inside
    ]
    # The control, independent of the trace: the kernel refused exactly one packet for
    # want of a route (the second message of the first call). A supervisor that looked at
    # the first message only would be one short of it, and the trace would say so.
    assert trace_of(result)["kernel"] == {"no_route": 1, "unseen_network_attempts": 0}
    local = [n for n in network if n["address"] == "127.0.0.1" and n["port"] == 4321]
    assert {n["call"] for n in local} == {"bind", "connect"}
    assert "connected" in {n["outcome"] for n in local}
    summary = result.trace
    assert summary["network_attempts"] == 1
    assert summary["network_targets"] == ["sendmmsg 192.0.2.1:53"]
    assert summary["loopback_attempts"] == len(network) - 1 >= 5


SENTINEL = f"""
: > /.hermetic/state/{TOKEN} && echo made:sentinel
grep -c hello in.txt
"""


def test_the_build_cannot_end_its_trace_early(
    sandbox_: Sandbox, minimal_image: str, known_token: str
) -> None:
    result = sandbox_.build(SENTINEL, files={"in.txt": "hello\n"})
    assert result.status is BuildStatus.BUILT, log_of(result)
    assert "made:sentinel" not in lines(result)
    files = {f["path"]: f for f in trace_of(result)["files"]}
    # grep opens with O_NOCTTY: only fanotify sees this read, and it did.
    assert files["/build/in.txt"]["unattributed_reads"] == 1
    assert trace_of(result)["complete"]


def test_with_its_state_open_the_build_could_end_its_trace_early(
    sandbox_: Sandbox, minimal_image: str, known_token: str, weakened: None
) -> None:
    result = sandbox_.build(SENTINEL, files={"in.txt": "hello\n"})
    assert "made:sentinel" in lines(result)
    files = {f["path"]: f for f in trace_of(result)["files"]}
    assert "/build/in.txt" not in files  # the read after the early sentinel is lost


FLOOD = """
a=$(head -c 100000 /dev/zero | tr '\\0' x)
i=0
while [ $i -lt 300 ]; do /bin/true $a; i=$((i + 1)); done
"""


def test_an_exec_flood_stays_bounded_and_is_marked_as_a_gap(
    sandbox_: Sandbox, minimal_image: str
) -> None:
    capped = sandbox_.build(FLOOD, name="capped", limits=TraceLimits(max_event_bytes=8 * 1024**2))
    assert capped.status is BuildStatus.BUILT, log_of(capped)  # tracing never fails a build
    trace = trace_of(capped)
    trues = [e for e in trace["executions"] if e["path"] == "/bin/true"]
    assert 0 < len(trues) < 100 and len(trues[0]["argv"][1]) == 100000
    assert trace["tracer"]["dropped"] > 200
    assert not trace["complete"] and not capped.trace["complete"]
    assert any("the tracer kept" in gap for gap in capped.trace["gaps"]), capped.trace["gaps"]
    # Negative control: under the default caps every exec is kept, in more memory.
    whole = sandbox_.build(FLOOD, name="whole")
    everything = trace_of(whole)
    assert len([e for e in everything["executions"] if e["path"] == "/bin/true"]) == 300
    assert everything["complete"] and everything["tracer"]["dropped"] == 0
    used = everything["tracer"]["peak_memory_bytes"] - trace["tracer"]["peak_memory_bytes"]
    assert used > 15 * 1024**2, (everything["tracer"], trace["tracer"])


MANY_FILES = "i=0; while [ $i -lt 3000 ]; do : > f$i; i=$((i + 1)); done"


def test_trace_json_is_cut_at_its_cap_and_says_so(sandbox_: Sandbox, minimal_image: str) -> None:
    cap = 64 * 1024
    capped = sandbox_.build(MANY_FILES, name="capped", limits=TraceLimits(max_file_bytes=cap))
    assert capped.status is BuildStatus.BUILT, log_of(capped)
    path = Path(capped.out_dir) / "trace.json"
    assert path.stat().st_size <= cap
    trace = json.loads(path.read_text())
    assert not trace["complete"] and not capped.trace["complete"]
    assert any("trace.json was cut" in gap and "files" in gap for gap in trace["gaps"])
    assert trace["gaps"] == capped.trace["gaps"]
    assert 0 < len(trace["files"]) < 3000
    # Negative control: under the default cap the same build's trace is whole.
    whole = sandbox_.build(MANY_FILES, name="whole")
    assert trace_of(whole)["complete"] and len(trace_of(whole)["files"]) > 3000


# --- the review's attacks on the boundary (reviews/sandbox-1) -----------------------


@pytest.mark.parametrize(
    ("command", "script"),
    [
        ('["./sh", "-c", "echo I am: $(readlink /proc/$$/exe); nc -w 1 192.0.2.11 80"]', None),
        ('["./run"]', "#!/build/sh\necho interpreter: $(readlink /proc/$$/exe)\n"),
    ],
    ids=["link", "shebang"],
)
def test_the_builds_command_as_a_link_to_proc_self_exe_does_not_reach_hermetics_busybox(
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    backend: PodmanBackend,
    minimal_image: str,
    command: str,
    script: str | None,
) -> None:
    source = tmp_path / "src"
    spec = Spec.from_toml(
        write_spec(
            source,
            '[build]\nimage = "hermetic-minimal"\nsource_date_epoch = 1\n'
            f'command = {command}\noutputs = ["hermetic.toml"]\n[limits]\ntimeout = "10s"\n',
        )
    )
    (source / "sh").symlink_to("/proc/self/exe")
    if script is not None:
        (source / "run").write_text(script)
        (source / "run").chmod(0o755)
    request = BuildRequest(spec=spec, out_dir=tmp_path / "out")
    result = run_build(request, config=sandbox_config, backend=backend)
    # On main the first program was exec'd by the runner's busybox: ./sh (or the
    # script's interpreter) was busybox, "I am: /.hermetic/busybox", with nc and wget.
    # Now the image's nice execs it: ./sh is nice, which takes no -c (the build fails);
    # as an interpreter it is nice again, which runs the script again (until the
    # timeout: the build only spends its own time).
    assert "/.hermetic/busybox" not in log_of(result), log_of(result)
    assert "BusyBox" not in log_of(result)
    assert result.status is not BuildStatus.BUILT
    assert trace_of(result)["executions"][0]["path"] == "/usr/bin/nice"


FAMILIES = "\n".join(f"./probe family {n}" for n in (1, 2, 10, 16, 40, 38, 17))


@pytest.mark.parametrize("trace", [TraceLevel.STANDARD, TraceLevel.OFF])
def test_sockets_of_other_families_are_refused(
    sandbox_: Sandbox, minimal_image: str, probe: Path, trace: TraceLevel
) -> None:
    result = sandbox_.build(FAMILIES, programs={"probe": probe}, trace=trace)
    assert result.status is BuildStatus.BUILT, log_of(result)
    found = lines(result)
    for family in (1, 2, 10, 16):  # unix, inet, inet6, netlink: the positive control
        assert f"family {family} created" in found, log_of(result)
    for family in (40, 38, 17):  # vsock (a VM's host), alg, packet
        assert f"family {family} Address family not supported by protocol" in found


def test_under_podmans_own_profile_vsock_and_alg_sockets_are_made(
    sandbox_: Sandbox, minimal_image: str, probe: Path, unhardened: None
) -> None:
    result = sandbox_.build(FAMILIES, programs={"probe": probe})
    found = lines(result)
    # The negative control: what the kernel gives the probe on the host (AF_VSOCK on a
    # VM), podman's own profile gives a build.
    for family in (40, 38):
        host = subprocess.run(
            [str(probe), "family", str(family)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        if host.endswith("created"):
            assert host in found, log_of(result)
    assert "family 40 created" in found or "family 38 created" in found, "no family to show"


EXECS = """
cp /usr/bin/head evil
/proc/self/cwd/evil -c 1 /etc/hostname > /dev/null && echo ran:cwd-link
cp probe copy && ./probe fdexec copy
for f in /usr/bin/podman /usr/bin/mmdebstrap /usr/bin/nonexistent-xyz; do
    n=p$(echo $f | tr / _); ln -s $f $n; ./$n 2>/dev/null; echo "$f:$?"
done
ln -s /.hermetic/busybox bb; ./bb true 2>/dev/null; echo bb:$?
"""


def test_executions_are_observed_in_the_build_never_looked_up_on_the_host(
    sandbox_: Sandbox, minimal_image: str, probe: Path
) -> None:
    result = sandbox_.build(EXECS, programs={"probe": probe})
    assert result.status is BuildStatus.BUILT, log_of(result)
    found = lines(result)
    assert "ran:cwd-link" in found and "ran from an fd" in found
    trace = trace_of(result)
    ran = {e["path"] for e in trace["executions"]}
    # On main both were missing (a host-side stat found nothing): programs ran unseen.
    assert "/proc/self/cwd/evil" in ran
    assert "/build/copy (deleted)" in ran
    # Links to host programs: 127 in the build, so not executions. On main the trace
    # listed the ones that exist on the host, telling a node's client what is there.
    for program in ("podman", "mmdebstrap", "nonexistent-xyz"):
        assert f"/usr/bin/{program}:127" in found
        assert f"/build/p_usr_bin_{program}" not in ran
        assert f"/build/p_usr_bin_{program}" in {e["path"] for e in trace["failed_executions"]}
    # A link into /.hermetic fails (EACCES), and where it led is an attempt.
    assert "bb:126" in found
    attempts = {(a["call"], a["path"]) for a in trace["hermetic_path_attempts"]}
    assert ("exec", "/.hermetic/busybox") in attempts
    assert trace["complete"], trace["gaps"]


UNREADABLE = "echo x > f; mkdir d; echo y > d/g; chmod 000 f d/g d"


def test_files_the_build_made_unreadable_are_handed_back(
    sandbox_: Sandbox, minimal_image: str
) -> None:
    # On main the hand-back's copy failed ("Permission denied") and the build was an
    # infrastructure failure: a node retried it, burning the client's attempts.
    result = sandbox_.build(UNREADABLE, outputs=("done", "f", "d"))
    assert result.status is BuildStatus.BUILT, log_of(result)
    assert {o.path for o in result.outputs} == {"done", "f", "d/g"}


TOO_DEEP = """
d=$(printf 'd%.0s' $(seq 200))
for i in $(seq 25); do mkdir $d && cd $d; done
echo deep > f
"""


def test_a_tree_that_cannot_be_copied_back_is_the_builds_failure(
    sandbox_: Sandbox, minimal_image: str
) -> None:
    # Deeper than PATH_MAX: the runner's copy fails whatever it does. The build failed,
    # not hermetic (on main: a SandboxError, retried as infrastructure by a node).
    result = sandbox_.build(TOO_DEEP)
    assert result.status is BuildStatus.FAILED
    assert "could not be handed back" in result.reason, result.reason


INOTIFY = """
perl -e 'my ($n, @keep) = (0);
for (1 .. 200) { my $r = syscall(294, 0); last if $r < 0; push @keep, $r; $n++ }
print "inotify instances: $n\\n"'
"""


def test_a_build_cannot_use_up_the_users_inotify_instances(
    sandbox_: Sandbox, minimal_image: str
) -> None:
    # Counted per user across namespaces: on main a build took every instance the host
    # user had left (128 by default), and the user's own tools failed meanwhile.
    result = sandbox_.build(INOTIFY)
    assert result.status is BuildStatus.BUILT, log_of(result)
    line = next(x for x in lines(result) if x.startswith("inotify instances:"))
    count = int(line.split()[-1])
    assert 0 < count <= USER_LIMITS["max_inotify_instances"]


FORGED = 'mkdir -p out; echo hi > "out/x\nbuilt sha256:0000 (forged)"; printf ok > out/y'


def test_a_name_with_a_newline_cannot_forge_a_line_of_the_summary(
    sandbox_: Sandbox, minimal_image: str
) -> None:
    result = sandbox_.build(FORGED, outputs=("out",))
    assert result.status is BuildStatus.BUILT, log_of(result)
    names = {o.path for o in result.outputs}
    assert "out/x\nbuilt sha256:0000 (forged)" in names  # the control: the name is real
    summary = render.build_summary(result).splitlines()
    assert not [line for line in summary if line.startswith("built sha256:0000")]
    assert any(line.endswith("out/x\\x0abuilt sha256:0000 (forged)") for line in summary)


SET_MM = """
perl -e 'my ($size, $name) = (pack("L", 0), "renamed");
sub said { my $r = shift; $r < 0 ? "refused " . ($! + 0) : "allowed" }
print "set_mm: ", said(syscall(157, 35, 15, $size, 0, 0)), "\\n";
print "set_mm_high: ", said(syscall(157, 35 + (1 << 32), 15, $size, 0, 0)), "\\n";
print "set_name: ", said(syscall(157, 15, $name, 0, 0, 0)), "\\n"'
"""


@pytest.mark.parametrize("trace", [TraceLevel.STANDARD, TraceLevel.OFF])
def test_a_build_cannot_rewrite_what_proc_says_of_its_program(
    sandbox_: Sandbox, minimal_image: str, trace: TraceLevel
) -> None:
    # prctl(PR_SET_MM, PR_SET_MM_MAP) needs no privilege and rewrites where
    # /proc/PID/stat says the program's code, stack and arguments are: what tells the
    # supervisor whether an exec ran. Asked for its size (PR_SET_MM_MAP_SIZE), the kernel
    # answers outside the sandbox (with the option's upper bits set too: it reads an
    # int); the profile refuses both.
    result = sandbox_.build(SET_MM, trace=trace)
    assert result.status is BuildStatus.BUILT, log_of(result)
    said = dict(line.split(": ", 1) for line in lines(result) if line.startswith("set_"))
    assert said["set_mm"] == "refused 1" and said["set_mm_high"] == "refused 1", said
    assert said["set_name"] == "allowed", said  # the positive control: prctl works
