# hermetic runner: the first program of every build container (after podman's init),
# run by the mounted static busybox as the container's root with only the capabilities
# CHOWN, KILL, SETGID and SETUID. It stages the source into the build directory, runs
# the build as the build user with exactly the planned environment, stops whatever the
# build left running, and hands the build directory back to the host.
#
# Usage: busybox sh runner.sh BUILD_DIR HOME UID GID TRACED CPUS N NAME=VALUE... M WRAPPER...
#        PROGRAM ARG...
# The build runs as "busybox env -i NAME=VALUE... busybox nsenter -S UID -G GID WRAPPER...
# /abs/PROGRAM ARG...": nsenter drops every supplementary group, becomes UID:GID (which
# empties the capability sets; no_new_privileges keeps them empty across exec) and
# execs a program of the image, the trampoline ("/usr/bin/nice -n 0", or in an image
# without coreutils "/bin/busybox sh -c 'exec "$0" "$@"'": the image's own), which execs the
# WRAPPERs and finally the program, which so gets exactly the planned environment.
# Hermetic's busybox never execs the build's program itself: a program that is a link
# to /proc/self/exe (or whose interpreter, by #! or by its ELF header, is one) would
# otherwise run hermetic's busybox (nc, wget...) as the build.
# Everything of hermetic's is under /.hermetic, a directory only root may enter: the
# build cannot run busybox, read the source archive or the gate, or write the hand-back
# or state directories. Staging and hand-back run as UID too, from a working directory
# root opened for them, so that everything handed back is the host user's.
# CPUS ("-": every CPU) is applied with taskset before the build starts. WRAPPER words
# (absolute paths in the image) set the personality a check varies.
# PROGRAM is looked up here, in the planned PATH, and passed as an absolute path:
# given a bare name, busybox would run its own applet (its "sh", "tar") instead of
# the image's program.
# TRACED is "traced" or "-". When traced, the runner waits, once the source is staged,
# until the host writes the name of the end-of-build sentinel into the gate (the
# tracers are then in place), and creates $STATE/NAME when the build has ended, before
# handing it back. The name never appears in an argument list or environment.
# Exit status: the build's; 125 when the runner itself failed (no status file then).

BB=/.hermetic/busybox
OUT=/.hermetic/out
STATE=/.hermetic/state
GATE=/.hermetic/gate
set -f

if [ "$#" -lt 9 ]; then
    echo "hermetic-runner: usage: runner.sh BUILD_DIR HOME UID GID TRACED CPUS N NAME=VALUE... M WRAPPER... PROGRAM ARG..." >&2
    exit 125
fi
build=$1
home=$2
uid=$3
gid=$4
traced=$5
cpus=$6
shift 6

# The environment, up to its count; PATH and SOURCE_DATE_EPOCH are needed here too.
count=$1
shift
search=/usr/bin:/bin
epoch=0
i=0
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

# Staging, as the build user: the host made a tar in the order the build should list
# its files (the same on every machine), and mtimes are SOURCE_DATE_EPOCH, directories
# included. It uses a fixed umask; the build gets the planned one (podman set it for us).
# The applets (sh, tar, find, touch) run through /proc/self/exe, which needs no path
# the build user could not reach.
planned=$(umask)
umask 022
if ! "$BB" chown "$uid:$gid" "$build" "$home" \
    || ! "$BB" nsenter -S "$uid" -G "$gid" sh -c \
        'tar -x -f - -C "$1" && find "$1" -type d -exec touch -c -d "@$2" {} +' \
        hermetic-stage "$build" "$epoch" < /.hermetic/src.tar; then
    echo "hermetic-runner: could not stage the source into $build as $uid:$gid" \
        "(the busybox needs its chown, nsenter, sh, tar, find and touch applets)" >&2
    exit 125
fi
cd "$build" || exit 125
token=-
if [ "$traced" = traced ]; then
    read -r token < "$GATE" || token=-
    case $token in
        "" | *[!a-z0-9-]*) token=- ;;
    esac
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
case $resolved in
    /.hermetic/* | /proc/*)
        # The build's first program is where the trace starts counting: hermetic's
        # own tools are never it.
        echo "hermetic-runner: $program: hermetic's own tools are not the build's" >&2
        exit 125
        ;;
esac

# The image's busybox may lack "nice" (Debian's busybox-static has none); its shell is
# in every busybox, and runs as the build user: "exec" replaces it by the program.
if [ -f /usr/bin/nice ] && [ -x /usr/bin/nice ]; then
    trampoline=nice
elif [ -f /bin/busybox ] && [ -x /bin/busybox ]; then
    trampoline=busybox
else
    trampoline=
fi

# Replace the wrapper count by the change of user and the trampoline, and PROGRAM by
# its resolved path.
i=0
for arg in "$@"; do
    shift
    i=$((i + 1))
    if [ "$i" -eq "$((count + 1))" ]; then
        set -- "$@" "$BB" nsenter -S "$uid" -G "$gid" --
        if [ "$trampoline" = nice ]; then
            set -- "$@" /usr/bin/nice -n 0
        else
            # shellcheck disable=SC2016 # $0 and $@ are the trampoline shell's own
            set -- "$@" /bin/busybox sh -c 'exec "$0" "$@"'
        fi
        continue
    fi
    if [ "$i" -eq "$first" ]; then set -- "$@" "$resolved"; else set -- "$@" "$arg"; fi
done

umask "$planned"
if [ -z "$resolved" ]; then
    echo "hermetic-runner: $program: not found in PATH=$search" >&2
    status=127
elif [ -z "$trampoline" ]; then
    echo "hermetic-runner: the image has neither /usr/bin/nice (coreutils) nor /bin/busybox:" \
        "hermetic starts the build through one of them, so that the build cannot run" \
        "hermetic's own tools" >&2
    status=127
elif [ "$cpus" != "-" ]; then
    "$BB" taskset -c "$cpus" "$BB" env -i "$@"
    status=$?
else
    "$BB" env -i "$@"
    status=$?
fi
# Pids are handed out in order in the container's own pid namespace, so the last one
# counts every process and thread started so far.
tasks=$("$BB" cat /proc/sys/kernel/ns_last_pid 2>/dev/null)

# Kill everything the build left behind (kill -1 spares podman's init and this shell),
# and wait until it is gone, so that nothing changes the build directory while it is
# handed back. Orphans are reaped by podman's init.
kill -KILL -1 2>/dev/null
i=0
while kill -0 -1 2>/dev/null; do
    if [ "$i" -ge 3000 ]; then
        # Something of the build outlived 30 s of SIGKILL: it could still change the
        # build dir, or make calls the trace would take for hermetic's. No hand-back.
        echo "hermetic-runner: processes of the build survived SIGKILL; nothing handed back" >&2
        exit 125
    fi
    "$BB" usleep 10000
    kill -KILL -1 2>/dev/null
    i=$((i + 1))
done
if [ "$token" != "-" ]; then
    # A regular builtin: a failed redirection must not end the runner (":" would).
    true > "$STATE/$token"
fi

# The hand-back, as the build user again (nothing of the build runs any more): from
# the hand-back directory, opened here, since the build user cannot reach it by path.
# What the build left unreadable to its own user (chmod 000) is made readable first:
# the build's files must not make the copy fail. When the copy fails all the same
# (a tree deeper than PATH_MAX, say), the build failed, not hermetic: the reason goes
# to "handback-failed" beside the status, and an empty build dir is handed back. Only
# a full disk on the host side is hermetic's failure (exit 125).
umask 022
cd "$OUT" || exit 125
"$BB" nsenter -S "$uid" -G "$gid" sh -c '
    find "$1" -type d ! -perm -u=rx -exec chmod u+rx {} \; 2>/dev/null
    find "$1" -type f ! -perm -u=r -exec chmod u+r {} + 2>/dev/null
    # The errors are kept in memory: the hand-back disk may be the one that is full.
    errors=$( { mkdir build && cp -a "$1/." build/ || echo "(status $?)" >&2; } 2>&1 >/dev/null |
        head -c 2000 )
    if [ -n "$errors" ]; then
        case $errors in
            *"No space left"* | *"Disk quota exceeded"*)
                echo "$errors" >&2
                exit 1
                ;;
        esac
        rm -rf build && mkdir build && echo "$errors" > handback-failed
    fi
    echo "$2" > tasks && echo "$3" > status' \
    hermetic-handback "$build" "${tasks:-0}" "$status"
copied=$?
if [ "$copied" -ne 0 ]; then
    echo "hermetic-runner: could not hand the build directory back to the host" >&2
    exit 125
fi
exit "$status"
