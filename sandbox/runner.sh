# hermetic runner: the first program of every build container, run by the mounted
# static busybox as the build user. It stages the source into the build directory,
# runs the build with exactly the planned environment, stops whatever the build left
# running, and hands the build directory back to the host.
#
# Usage: busybox sh runner.sh BUILD_DIR TOKEN N NAME=VALUE... M WRAPPER... PROGRAM ARG...
# The build runs as "busybox env -i NAME=VALUE... WRAPPER... /abs/PROGRAM ARG...", so it
# gets exactly the planned environment (podman adds variables such as container=podman).
# WRAPPER words (absolute paths) set the CPU set or personality a check varies.
# PROGRAM is looked up here, in the planned PATH, and passed as an absolute path:
# given a bare name, busybox would run its own applet (its "sh", "tar") instead of
# the image's program.
# TOKEN is "-" for an untraced build. Otherwise the runner waits, once the source
# is staged, until the host opens $STATE/go (the tracers are then in place), and
# creates $STATE/TOKEN when the build has ended, before handing it back.
# Exit status: the build's; 125 when the runner itself failed (no status file then).

BB=/.hermetic/busybox
OUT=/.hermetic/out
STATE=/.hermetic/state
set -f

if [ "$#" -lt 4 ]; then
    echo "hermetic-runner: usage: runner.sh BUILD_DIR TOKEN N NAME=VALUE... M WRAPPER... PROGRAM ARG..." >&2
    exit 125
fi
build=$1
token=$2
shift 2

# The environment, up to its count; PATH and SOURCE_DATE_EPOCH are needed here too.
count=$1
shift
search=/usr/bin:/bin
epoch=0
i=0
envs=""
for arg in "$@"; do
    [ "$i" -ge "$count" ] && break
    case $arg in
        PATH=*) search=${arg#PATH=} ;;
        SOURCE_DATE_EPOCH=*) epoch=${arg#SOURCE_DATE_EPOCH=} ;;
    esac
    i=$((i + 1))
done
eval "wrappers=\${$((count + 1))}"
first=$((count + wrappers + 2))
if [ "$#" -lt "$first" ]; then
    echo "hermetic-runner: no program to run" >&2
    exit 125
fi

# Staging: the host made a tar in the order the build should list its files (the
# same on every machine), and mtimes are SOURCE_DATE_EPOCH, directories included.
# It uses a fixed umask; the build gets the planned one (podman set it for us).
planned=$(umask)
umask 022
if ! "$BB" tar -x -f /.hermetic/src.tar -C "$build" \
    || ! "$BB" find "$build" -type d -exec "$BB" touch -c -d "@$epoch" {} +; then
    echo "hermetic-runner: could not stage the source into $build" >&2
    exit 125
fi
cd "$build" || exit 125
if [ "$token" != "-" ]; then
    "$BB" mkfifo "$STATE/go" && read -r _ < "$STATE/go"
fi

eval "program=\${$first}"
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

# Drop the wrapper count, and replace PROGRAM by its resolved path.
i=0
for arg in "$@"; do
    shift
    i=$((i + 1))
    if [ "$i" -eq "$((count + 1))" ]; then continue; fi
    if [ "$i" -eq "$first" ]; then set -- "$@" "$resolved"; else set -- "$@" "$arg"; fi
done

umask "$planned"
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
if ! "$BB" mkdir "$OUT/build" || ! "$BB" cp -a "$build/." "$OUT/build/"; then
    echo "hermetic-runner: could not hand the build directory back to the host" >&2
    exit 125
fi
echo "${tasks:-0}" > "$OUT/tasks"
echo "$status" > "$OUT/status"
exit "$status"
