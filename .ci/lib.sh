# Shared by the set-up scripts: where things are, and how to run as the build user.
# shellcheck shell=bash
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_USER=${HERMETIC_USER:-hermetic}
APT_PACKAGES=(
    podman runc uidmap catatonit conmon  # rootless containers
    mmdebstrap busybox-static            # images; the in-container runner
    strace diffoscope libfaketime git ca-certificates curl
    redis-server                         # the Celery scale-out tests
    docker-registry                      # the registry tests (started by the tests, on loopback)
    python3 python3-venv
    gcc libc6-dev python3-dev            # the supervisor's native loop (sandbox/trace/_loop.c)
)

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
    BUILD_USER=$(id -un)  # a developer's own account is the build user
fi

# The shared GNU hello fixture, when the checkout sits beside it.
if [ -z "${HERMETIC_HELLO_TARBALL:-}" ] && [ -f "$REPO/../shared/fixtures/hello-2.10.tar.gz" ]; then
    HERMETIC_HELLO_TARBALL=$(cd "$REPO/../shared/fixtures" && pwd)/hello-2.10.tar.gz
    export HERMETIC_HELLO_TARBALL
fi

log() { printf 'hermetic-setup: %s\n' "$*" >&2; }

# Fails when the build user still runs anything the tests started (processes, build
# containers, hermetic's podman service). Podman's own rootless pause process (catatonit
# -P, which holds the user namespace for every podman command) and zombies are not ours.
check_leftovers() {
    local left="" containers="" attempt
    for attempt in $(seq 1 20); do  # processes being stopped may need a moment to exit
        if [ "$(id -u)" -eq 0 ]; then
            left=$(ps -u "$BUILD_USER" -o pid=,stat=,args= \
                | awk '$2 !~ /^Z/ && !($3 == "catatonit" && $4 == "-P")')
        else  # a developer's own account runs other things: look for ours only
            left=$(ps -u "$BUILD_USER" -o pid=,stat=,args= \
                | awk '$2 !~ /^Z/ && /hermetic|redis-server|system service/ && !/awk/')
        fi
        containers=$(as_user podman ps -a --filter label=dev.hermetic.build --format '{{.Names}}')
        if [ -z "$left$containers" ]; then return 0; fi
        sleep 0.5
    done
    log "the tests left these behind (attempt $attempt):"
    [ -n "$left" ] && printf '  process %s\n' "$left" >&2
    [ -n "$containers" ] && printf '  container %s\n' "$containers" >&2
    return 1
}

user_home() { getent passwd "$BUILD_USER" | cut -d: -f6; }

# Run a command as the unprivileged build user with a clean environment.
as_user() {
    local home
    home=$(user_home)
    local env=(HOME="$home" USER="$BUILD_USER" LOGNAME="$BUILD_USER" LANG=C.UTF-8
               PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin")
    for name in HERMETIC_HELLO_TARBALL HERMETIC_PODMAN_URL http_proxy https_proxy no_proxy; do
        if [ -n "${!name:-}" ]; then env+=("$name=${!name}"); fi
    done
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$WORK" && runuser -u "$BUILD_USER" -- env -i "${env[@]}" "$@")
    else
        (cd "$WORK" && env -i "${env[@]}" "$@")
    fi
}
