# hermetic runner: the first program of every build container, run by the mounted
# static busybox as the build user. It stages the source into the build directory,
# runs the build with exactly the planned environment, stops whatever the build left
# running, and hands the build directory back to the host.
#
# Usage: busybox sh runner.sh TOKEN COUNT NAME=VALUE... PROGRAM ARG...
# TOKEN is "-" for an untraced build. Otherwise the runner waits, once the source
# is staged, until the host opens $STATE/go (the tracers are then in place), and
# creates $STATE/TOKEN when the build has ended, before handing it back.
# The build runs as "busybox env -i NAME=VALUE... /abs/PROGRAM ARG...", so it gets
# exactly the planned environment (podman adds variables such as container=podman).
# PROGRAM is looked up here, in the planned PATH, and passed as an absolute path:
# given a bare name, busybox would run its own applet (its "sh", "tar") instead of
# the image's program.
# Exit status: the build's; 125 when the runner itself failed (no status file then).

BB=/.hermetic/busybox
OUT=/.hermetic/out
STATE=/.hermetic/state
set -f

token=$1
count=$2
shift 2
if [ "$#" -le "$count" ]; then
    echo "hermetic-runner: usage: runner.sh TOKEN COUNT NAME=VALUE... PROGRAM ARG..." >&2
    exit 125
fi

if ! "$BB" cp -a /.hermetic/src/. /build/; then
    echo "hermetic-runner: could not stage the source into /build" >&2
    exit 125
fi
cd /build || exit 125
umask 022
if [ "$token" != "-" ]; then
    "$BB" mkfifo "$STATE/go" && read -r _ < "$STATE/go"
fi

search=/usr/bin:/bin
i=0
for arg in "$@"; do
    [ "$i" -ge "$count" ] && break
    case $arg in PATH=*) search=${arg#PATH=} ;; esac
    i=$((i + 1))
done
eval "program=\${$((count + 1))}"
resolved=""
case $program in
    */*) resolved=$program ;;
    *)
        IFS=:
        for dir in $search; do
            if [ -f "${dir:-.}/$program" ] && [ -x "${dir:-.}/$program" ]; then
                resolved=${dir:-.}/$program
                break
            fi
        done
        unset IFS
        ;;
esac

# Replace PROGRAM by its resolved path, keeping every other argument as it is.
i=0
for arg in "$@"; do
    shift
    if [ "$i" -eq "$count" ]; then set -- "$@" "$resolved"; else set -- "$@" "$arg"; fi
    i=$((i + 1))
done

if [ -n "$resolved" ]; then
    "$BB" env -i "$@"
    status=$?
else
    echo "hermetic-runner: $program: not found in PATH=$search" >&2
    status=127
fi
# Pids are handed out in order in the container's own pid namespace, so the last one
# counts every process and thread started so far.
tasks=$("$BB" cat /proc/sys/kernel/ns_last_pid 2>/dev/null)

# Kill everything the build left behind (kill -1 spares pid 1 and this shell), so
# that nothing changes the build directory while it is handed back.
kill -KILL -1 2>/dev/null
if [ "$token" != "-" ]; then
    : > "$STATE/$token"
fi

"$BB" chmod -R u+rwX "$OUT" 2>/dev/null
"$BB" find "$OUT" -mindepth 1 -delete 2>/dev/null
if ! "$BB" mkdir "$OUT/build" || ! "$BB" cp -a /build/. "$OUT/build/"; then
    echo "hermetic-runner: could not hand the build directory back to the host" >&2
    exit 125
fi
echo "${tasks:-0}" > "$OUT/tasks"
echo "$status" > "$OUT/status"
exit "$status"
