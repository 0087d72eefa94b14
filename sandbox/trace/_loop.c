/* The supervisor's native loop (docs/adr/0016-native-supervisor-loop.md).
 *
 * It receives every notification and handles the calls a build makes by the thousand
 * (exec, exit, the path-taking calls, listings) itself, while the caller waits. It keeps
 * no state of its own: it works on the Recorder's containers (sandbox/trace/
 * supervisor.py), so that the events are the ones the Python handlers would make. Every
 * other call, a full or ended record, and any read that is not the plain case (a short
 * read, a string longer than its first chunk, an unreadable address) go to the Python
 * code, which is the reference: Recorder.step for a whole notification, Recorder.handle
 * for a handler. Nothing is recorded before every read of a call has succeeded, so the
 * Python handler starts from where it would have.
 *
 * Memory of the build is only ever read into this file's fixed buffers, with lengths
 * bounded by those buffers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_MAX (1 << 16)       /* supervisor.py _READ_MAX */
#define PATH_BYTES 4096          /* syscalls.PATH_MAX, and os.readlink's buffer */
#define ARGV_MAX_BYTES (1 << 20) /* syscalls.ARGV_MAX_BYTES */
#define ARG_MAX_STRING (128 * 1024) /* syscalls.ARG_MAX_STRING */
#define EVENT_OVERHEAD 128       /* supervisor.py _EVENT_OVERHEAD */
#define HEAD 512                 /* what the first read of a path or an argv takes */
#define AT_CWD ((uint64_t)(uint32_t)-100)
#define REMOVEDIR 0x200
#define NR_LIMIT 1024

#ifndef HERMETIC_LOOP_SOURCE_SHA256
#define HERMETIC_LOOP_SOURCE_SHA256 ""
#endif

enum call {
    C_NONE, C_EXECVE, C_EXIT, C_OPEN, C_OPENAT, C_UNLINK, C_UNLINKAT, C_RMDIR,
    C_MKDIR, C_MKDIRAT, C_CHMOD, C_FCHMODAT, C_GETDENTS,
};
static const struct { const char *name; enum call call; } CALLS[] = {
    {"execve", C_EXECVE}, {"exit_group", C_EXIT}, {"open", C_OPEN},
    {"openat", C_OPENAT}, {"unlink", C_UNLINK}, {"unlinkat", C_UNLINKAT},
    {"rmdir", C_RMDIR}, {"mkdir", C_MKDIR}, {"mkdirat", C_MKDIRAT},
    {"chmod", C_CHMOD}, {"fchmodat", C_FCHMODAT}, {"fchmodat2", C_FCHMODAT},
    {"getdents64", C_GETDENTS},
};

/* A handler's outcome: done, the Python handler's turn, or a Python error to raise. */
enum outcome { DONE = 0, PYTHON = 1, RAISED = -1 };

/* Interned names, made once. */
static PyObject *s_exec, *s_exit, *s_open, *s_unlink, *s_rmdir, *s_mkdir, *s_chmod,
    *s_listdir, *s_pid, *s_unknown, *s_ran, *s_failed;
static PyObject *a_kept_bytes, *a_notifications, *a_execs, *a_ended, *a_sweep_at,
    *a_step, *a_handle, *a_unknown, *a_sweep, *a_resolved, *a_run_later, *a_max_events,
    *a_max_bytes, *a_depth, *one_;

typedef struct {
    PyObject *recorder, *events, *known, *pending, *pending_in, *group, *members,
        *interned, *listings, *later, *sentinel;
    long long max_events, max_bytes;
    Py_ssize_t depth;
    int notify_fd;
    uint64_t nid;
    unsigned char calls[NR_LIMIT];
} Loop;

/* The build's memory is read into these only (one notification at a time). */
static uint64_t argv_pointers[ARGV_MAX_BYTES / 8 + READ_MAX / 8];
static char arg_text[ARG_MAX_STRING];
static char argv_block[READ_MAX];
static char path_text[PATH_BYTES];
static char dir_text[PATH_BYTES];
/* Up to 65,536 supplementary groups make a status of at most about 721 KB. */
static char status_text[1 << 20];

/* --- the Recorder's counters ---------------------------------------------------------- */

static int get_count(PyObject *recorder, PyObject *name, long long *value) {
    PyObject *found = PyObject_GetAttr(recorder, name);
    if (found == NULL) return -1;
    *value = PyLong_AsLongLong(found);
    Py_DECREF(found);
    return *value == -1 && PyErr_Occurred() ? -1 : 0;
}

static int add_count(PyObject *recorder, PyObject *name, long long delta) {
    long long value;
    if (get_count(recorder, name, &value) < 0) return -1;
    PyObject *updated = PyLong_FromLongLong(value + delta);
    if (updated == NULL) return -1;
    int result = PyObject_SetAttr(recorder, name, updated);
    Py_DECREF(updated);
    return result;
}

static PyObject *call_method(Loop *l, PyObject *name, const char *format, ...) {
    va_list va;
    va_start(va, format);
    PyObject *args = Py_VaBuildValue(format, va);
    va_end(va);
    if (args == NULL) return NULL;
    PyObject *method = PyObject_GetAttr(l->recorder, name);
    PyObject *result = method ? PyObject_Call(method, args, NULL) : NULL;
    Py_XDECREF(method);
    Py_DECREF(args);
    return result;
}

/* Recorder._kept: counted in the byte budget, one copy of each kept. Steals ``text``. */
static PyObject *kept(Loop *l, PyObject *text) {
    if (text == NULL) return NULL;
    if (add_count(l->recorder, a_kept_bytes, PyBytes_GET_SIZE(text) + EVENT_OVERHEAD) < 0) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *copy = PyDict_SetDefault(l->interned, text, text);
    Py_XINCREF(copy);
    Py_DECREF(text);
    return copy;
}

static int append(Loop *l, PyObject *event) {
    if (event == NULL) return -1;
    int result = PyList_Append(l->events, event);
    Py_DECREF(event);
    return result;
}

/* --- reading the traced process --------------------------------------------------------- */

static ssize_t read_memory(pid_t pid, uint64_t address, char *into, size_t size) {
    if (address + size < address) {
        errno = EFAULT;
        return -1;
    }
    struct iovec local = {into, size}, remote = {(void *)(uintptr_t)address, size};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

/* Recorder._string: at most ``limit`` bytes of a NUL-terminated string, into ``into``
 * (which holds ``limit``), in chunks that grow fourfold. -1: unreadable. */
static ssize_t read_string(pid_t pid, uint64_t address, size_t limit, char *into) {
    size_t total = 0, size = HEAD;
    while (total < limit) {
        size_t want = size < limit - total ? size : limit - total;
        ssize_t count = read_memory(pid, address + total, into + total, want);
        if (count < 0) return -1;
        if (count == 0) break;
        char *end = memchr(into + total, 0, (size_t)count);
        if (end != NULL) return end - into;
        total += (size_t)count;
        size = size * 4 < READ_MAX ? size * 4 : READ_MAX;
    }
    return (ssize_t)total;
}

static ssize_t read_path(pid_t pid, uint64_t address) {
    return read_string(pid, address, PATH_BYTES, path_text);
}

/* Recorder._dir: the directory a dirfd (as the kernel's int) or the cwd stands for. */
static ssize_t read_dir(pid_t pid, uint64_t dirfd) {
    char link[64];
    int32_t fd = (int32_t)(uint32_t)dirfd;
    if (fd == -100)
        snprintf(link, sizeof link, "/proc/%u/cwd", (unsigned)pid);
    else
        snprintf(link, sizeof link, "/proc/%u/fd/%d", (unsigned)pid, fd);
    return readlink(link, dir_text, PATH_BYTES);
}

static int needs_normpath(const char *text, size_t length) {
    return memmem(text, length, "/.", 2) != NULL || memmem(text, length, "//", 2) != NULL ||
           (length > 0 && text[length - 1] == '/');
}

/* posixpath.normpath of bytes: "." and empty parts dropped, ".." taken back where it can
 * be, two leading slashes kept (and one of three or more). */
static PyObject *normpath(const char *path, size_t length) {
    if (length == 0) return PyBytes_FromStringAndSize(".", 1);
    size_t initial = path[0] == '/' ? 1 : 0;
    if (initial && length >= 2 && path[1] == '/' && (length == 2 || path[2] != '/')) initial = 2;
    /* The kept parts, as offsets into ``path``: at most one per two bytes, plus one. */
    size_t *starts = PyMem_Malloc((length / 2 + 2) * 2 * sizeof(size_t));
    if (starts == NULL) return PyErr_NoMemory();
    size_t *lengths = starts + length / 2 + 2, parts = 0;
    for (size_t at = 0; at <= length;) {
        const char *slash = memchr(path + at, '/', length - at);
        size_t end = slash ? (size_t)(slash - path) : length, size = end - at;
        int dots = size == 2 && path[at] == '.' && path[at + 1] == '.';
        if (size == 0 || (size == 1 && path[at] == '.')) {
            /* dropped */
        } else if (!dots || (!initial && parts == 0) ||
                   (parts && lengths[parts - 1] == 2 && path[starts[parts - 1]] == '.' &&
                    path[starts[parts - 1] + 1] == '.')) {
            starts[parts] = at;
            lengths[parts++] = size;
        } else if (parts) {
            parts--;
        }
        at = end + 1;
    }
    size_t total = initial;
    for (size_t i = 0; i < parts; i++) total += lengths[i] + (i ? 1 : 0);
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(total ? total : 1));
    if (result != NULL) {
        char *out = PyBytes_AS_STRING(result);
        memset(out, '/', initial);
        out += initial;
        for (size_t i = 0; i < parts; i++) {
            if (i) *out++ = '/';
            memcpy(out, path + starts[i], lengths[i]);
            out += lengths[i];
        }
        if (!total) PyBytes_AS_STRING(result)[0] = '.';
    }
    PyMem_Free(starts);
    return result;
}

/* supervisor._absolute: ``directory/path`` (``path`` alone without a directory),
 * normalized where it needs it, with one slash at its start. */
static PyObject *absolute(const char *path, size_t length, const char *directory,
                          size_t dir_length) {
    PyObject *joined = PyBytes_FromStringAndSize(NULL, dir_length + (dir_length ? 1 : 0) + length);
    if (joined == NULL) return NULL;
    char *out = PyBytes_AS_STRING(joined);
    if (dir_length) {
        memcpy(out, directory, dir_length);
        out[dir_length] = '/';
        out += dir_length + 1;
    }
    memcpy(out, path, length);
    if (!needs_normpath(PyBytes_AS_STRING(joined), (size_t)PyBytes_GET_SIZE(joined)))
        return joined;
    PyObject *normal = normpath(PyBytes_AS_STRING(joined), (size_t)PyBytes_GET_SIZE(joined));
    Py_DECREF(joined);
    if (normal == NULL || PyBytes_GET_SIZE(normal) < 2 || memcmp(PyBytes_AS_STRING(normal), "//", 2))
        return normal;
    /* One slash at the start: Linux gives two no meaning of their own. */
    PyObject *single = PyBytes_FromStringAndSize(PyBytes_AS_STRING(normal) + 1,
                                                 PyBytes_GET_SIZE(normal) - 1);
    Py_DECREF(normal);
    return single;
}

/* Recorder._path, kept. NULL without an error set: the Python handler's turn. */
static PyObject *path_at(Loop *l, pid_t pid, uint64_t dirfd, uint64_t address) {
    ssize_t length = read_path(pid, address);
    if (length < 0) return NULL;
    if (length > 0 && path_text[0] == '/')
        return kept(l, absolute(path_text, (size_t)length, NULL, 0));
    ssize_t dir_length = read_dir(pid, dirfd);
    if (dir_length < 0) return NULL;
    return kept(l, absolute(path_text, (size_t)length, dir_text, (size_t)dir_length));
}

/* Recorder._image: code, stack and argument places of the program (or None). */
static PyObject *image(int fd) {
    char text[4096];
    ssize_t count = fd < 0 ? -1 : pread(fd, text, sizeof text, 0);
    if (count <= 0) Py_RETURN_NONE;
    const char *at = memrchr(text, ')', (size_t)count);
    at = at ? at + 1 : text;
    const char *end = text + count, *start[49];
    size_t length[49];
    int fields = 0;
    while (at < end && fields < 49) {
        while (at < end && strchr(" \t\n\r\v\f", *at) && *at) at++;
        if (at == end) break;
        start[fields] = at;
        while (at < end && !(strchr(" \t\n\r\v\f", *at) && *at)) at++;
        length[fields] = (size_t)(at - start[fields]);
        fields++;
    }
    if (fields < 49 || (length[25] == 1 && start[25][0] == '0')) Py_RETURN_NONE;
    static const int kept_fields[] = {23, 24, 25, 45, 46, 47, 48};
    char joined[4096];
    size_t size = 0;
    for (size_t i = 0; i < sizeof kept_fields / sizeof *kept_fields; i++) {
        int field = kept_fields[i];
        if (i) joined[size++] = ' ';
        memcpy(joined + size, start[field], length[field]);
        size += length[field];
    }
    return PyBytes_FromStringAndSize(joined, (Py_ssize_t)size);
}

/* The Recorder's entries, checked before they are read: an exec event (a list of 7 or
 * more), a pending exec (a tuple of 4), a listing (a tuple of 2 whose event has 4). */
static int malformed(const char *what) {
    PyErr_Format(PyExc_TypeError, "the native loop does not know this %s", what);
    return 1;
}

static int bad_event(PyObject *event, Py_ssize_t items) {
    return (!PyList_CheckExact(event) || PyList_GET_SIZE(event) < items) && malformed("event");
}

static int bad_tuple(PyObject *tuple, Py_ssize_t items) {
    return (!PyTuple_CheckExact(tuple) || PyTuple_GET_SIZE(tuple) != items) && malformed("entry");
}

/* --- processes ----------------------------------------------------------------------------- */

/* Where the value of line ``name`` starts in a status text, once the line is whole. */
static const char *status_field(const char *status, size_t length, const char *name) {
    const char *at = memmem(status, length, name, strlen(name));
    if (at == NULL) return NULL;
    at += strlen(name);
    return memchr(at, '\n', length - (size_t)(at - status)) ? at : NULL;
}

/* supervisor._placement: /proc/PID/status read until its Tgid, PPid and NSpid lines are
 * whole (many supplementary groups put NSpid pages in). NULL: gone, or not there. */
static const char *read_status(const char *path, const char **tgid, const char **ppid) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t length = 0;
    const char *ids = NULL;
    while (length < sizeof status_text - 1) {
        size_t want = length ? sizeof status_text - 1 - length : 4096;
        ssize_t count = read(fd, status_text + length, want);
        if (count <= 0) break;
        length += (size_t)count;
        status_text[length] = 0;
        *tgid = status_field(status_text, length, "\nTgid:");
        *ppid = status_field(status_text, length, "\nPPid:");
        ids = status_field(status_text, length, "\nNSpid:");
        if (*tgid && *ppid && ids) break;
        ids = NULL;
    }
    close(fd);
    return ids;
}

/* Recorder.know: the container pid, parent and thread group of ``pid`` and of its unknown
 * ancestors. */
static int know(Loop *l, long pid) {
    for (;;) {
        PyObject *key = PyLong_FromLong(pid);
        if (key == NULL) return -1;
        int has = PySet_Contains(l->known, key);
        if (has != 0 || PySet_Add(l->known, key) < 0) {
            Py_DECREF(key);
            return has > 0 ? 0 : -1;
        }
        char path[64];
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
        const char *tgid_text, *ppid_text, *ids = read_status(path, &tgid_text, &ppid_text);
        if (ids == NULL) {
            Py_DECREF(key);
            return 0;
        }
        long long tgid = strtoll(tgid_text, NULL, 10), ppid = strtoll(ppid_text, NULL, 10);
        /* The pid at the container's depth (NSpid lists it from /proc's namespace down). */
        Py_ssize_t index = 0;
        long long in_container = -1;
        for (const char *at = ids; *at && *at != '\n';) {
            while (*at == ' ' || *at == '\t') at++;
            if (!*at || *at == '\n') break;
            char *next;
            long long id = strtoll(at, &next, 10);
            if (index == l->depth) in_container = id;
            index++;
            at = next > at ? next : at + 1;
        }
        if (index <= l->depth) {  /* a host process (conmon): above the container */
            Py_DECREF(key);
            return 0;
        }
        PyObject *group = PyLong_FromLongLong(tgid);
        PyObject *members = group ? PyDict_GetItemWithError(l->members, group) : NULL;
        int failed = group == NULL || PyErr_Occurred() || PyDict_SetItem(l->group, key, group) < 0;
        if (!failed && members == NULL) {
            members = PySet_New(NULL);
            failed = members == NULL || PyDict_SetItem(l->members, group, members) < 0;
            Py_XDECREF(members);
        }
        failed = failed || PySet_Add(members, key) < 0 ||
                 append(l, Py_BuildValue("[OlLLL]", s_pid, pid, in_container, ppid, tgid)) < 0;
        Py_XDECREF(group);
        Py_DECREF(key);
        if (failed) return -1;
        pid = (long)ppid;
    }
}

/* Recorder._unknown, in Python: rare (another thread's exec, an exec never settled). */
static int unknown_if_pending(Loop *l, PyObject *pid) {
    int pending = PyDict_Contains(l->pending, pid);
    if (pending <= 0) return pending;
    PyObject *done = call_method(l, a_unknown, "(O)", pid);
    Py_XDECREF(done);
    return done ? 0 : -1;
}

/* Recorder.settle: did the exec that ``pid`` made replace its program? */
static int settle(Loop *l, PyObject *pid) {
    PyObject *entry = PyDict_GetItemWithError(l->pending, pid);
    if (entry == NULL) return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(entry);
    int result = -1;
    if (bad_tuple(entry, 4) || bad_event(PyTuple_GET_ITEM(entry, 0), 7)) goto done;
    if (PyDict_DelItem(l->pending, pid) < 0) goto done;
    PyObject *event = PyTuple_GET_ITEM(entry, 0), *before = PyTuple_GET_ITEM(entry, 1);
    PyObject *stat_fd = PyTuple_GET_ITEM(entry, 2), *group = PyTuple_GET_ITEM(entry, 3);
    PyObject *holder = PyDict_GetItemWithError(l->pending_in, group);
    if (holder == NULL && PyErr_Occurred()) goto done;
    if (holder != NULL) {
        int same = PyObject_RichCompareBool(holder, pid, Py_EQ);
        if (same < 0 || (same && PyDict_DelItem(l->pending_in, group) < 0)) goto done;
    }
    int fd = stat_fd == Py_None ? -1 : (int)PyLong_AsLong(stat_fd);
    if (fd == -1 && PyErr_Occurred()) goto done;
    PyObject *after = image(fd);
    if (fd >= 0) close(fd);
    if (after == NULL) goto done;
    PyObject *outcome = s_failed;
    if (before == Py_None || after == Py_None)
        outcome = s_unknown;
    else {
        int same = PyObject_RichCompareBool(after, before, Py_EQ);
        if (same < 0) {
            Py_DECREF(after);
            goto done;
        }
        if (!same) outcome = s_ran;
    }
    Py_DECREF(after);
    Py_INCREF(outcome);
    if (PyList_SetItem(event, 4, outcome) < 0) goto done;
    if (outcome == s_failed) {
        PyObject *where = call_method(l, a_resolved, "(OO)", pid, PyList_GET_ITEM(event, 2));
        if (where == NULL || PyList_Append(event, where) < 0) {
            Py_XDECREF(where);
            goto done;
        }
        Py_DECREF(where);
    }
    result = 0;
done:
    Py_DECREF(entry);
    return result;
}

/* Recorder.forget: a thread group ended; its host pids may be given to new processes. */
static int forget(Loop *l, PyObject *pid) {
    PyObject *group = PyDict_GetItemWithError(l->group, pid);
    if (group == NULL && PyErr_Occurred()) return -1;
    group = group ? group : pid;
    Py_INCREF(group);
    PyObject *members = PyDict_GetItemWithError(l->members, group);
    int result = -1;
    if (members != NULL) {
        Py_INCREF(members);
        if (PyDict_DelItem(l->members, group) < 0) goto done;
    } else if (PyErr_Occurred() || (members = PySet_New(NULL)) == NULL)
        goto done;
    if (PySet_Add(members, pid) < 0) goto done;
    PyObject *iterator = PyObject_GetIter(members), *member;
    if (iterator == NULL) goto done;
    while ((member = PyIter_Next(iterator)) != NULL) {
        int failed = PySet_Discard(l->known, member) < 0;
        if (!failed && PyDict_DelItem(l->group, member) < 0) {
            failed = !PyErr_ExceptionMatches(PyExc_KeyError);
            if (!failed) PyErr_Clear();
        }
        failed = failed || unknown_if_pending(l, member) < 0;
        Py_DECREF(member);
        if (failed) break;
    }
    Py_DECREF(iterator);
    result = PyErr_Occurred() ? -1 : 0;
done:
    Py_XDECREF(members);
    Py_DECREF(group);
    return result;
}

/* --- handlers ------------------------------------------------------------------------------- */

/* Recorder._stat_of_caller: /proc/PID/stat, opened while the notification is valid. */
static int stat_of_caller(Loop *l, pid_t pid, int *stat_fd) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/stat", (unsigned)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == EMFILE) {  /* out of fds: those of ended processes go first */
        PyObject *done = call_method(l, a_sweep, "()");
        if (done == NULL) return -1;
        Py_DECREF(done);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd >= 0 && ioctl(l->notify_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &l->nid) < 0) {
        close(fd);
        fd = -1;
    }
    *stat_fd = fd;
    return 0;
}

/* Recorder._strings: an exec's argv as a list of bytes, and whether it was cut at
 * ARGV_MAX_BYTES. ``first`` holds the pointer array's first 512 bytes, if they were read
 * already. NULL without an error set: something was unreadable (the Python handler
 * records it). */
static PyObject *read_argv(pid_t pid, uint64_t address, const char *first, int *cut) {
    size_t count = 0, block_size = HEAD;
    *cut = 0;
    /* No argv at all: recorded as the build passed it, empty (Linux 5.18+ runs the
     * program with [""]). */
    if (address == 0) return PyList_New(0);
    for (int blocks = 0;; blocks++) {
        if (8 * count >= ARGV_MAX_BYTES) {
            *cut = 1;
            break;
        }
        char *into = (char *)(argv_pointers + count);
        ssize_t got = HEAD;
        if (blocks == 0 && first != NULL)
            memcpy(into, first, HEAD);
        else if ((got = read_memory(pid, address + 8 * count, into, block_size)) < 0)
            return NULL;
        size_t read = (size_t)got / 8, zero = 0;
        while (zero < read && argv_pointers[count + zero]) zero++;
        count += zero;
        if (zero < read || (size_t)got < block_size) break;
        block_size = block_size * 4 < READ_MAX ? block_size * 4 : READ_MAX;
    }
    PyObject *argv = PyList_New(0);
    if (argv == NULL || count == 0) return argv;
    /* Programs usually keep their argument strings side by side: read them at once. */
    uint64_t base = argv_pointers[0], high = argv_pointers[0];
    for (size_t i = 1; i < count; i++) {
        base = argv_pointers[i] < base ? argv_pointers[i] : base;
        high = argv_pointers[i] > high ? argv_pointers[i] : high;
    }
    uint64_t span = high - base >= READ_MAX - 256 ? READ_MAX : high - base + 256;
    ssize_t block = read_memory(pid, base, argv_block, span);
    long long budget = ARGV_MAX_BYTES - 8 * (long long)count;
    int unreadable = block < 0;
    for (size_t i = 0; !unreadable && i < count; i++) {
        if (budget <= 0) {
            *cut = 1;
            break;
        }
        uint64_t start = argv_pointers[i] - base;
        const char *nul = start < (uint64_t)block
                              ? memchr(argv_block + start, 0, (size_t)block - start)
                              : NULL;
        PyObject *text;
        if (nul != NULL) {
            text = PyBytes_FromStringAndSize(argv_block + start, nul - argv_block - (ssize_t)start);
        } else {
            size_t limit = budget < ARG_MAX_STRING ? (size_t)budget : ARG_MAX_STRING;
            ssize_t length = read_string(pid, argv_pointers[i], limit, arg_text);
            unreadable = length < 0;
            text = unreadable ? NULL : PyBytes_FromStringAndSize(arg_text, length);
        }
        if (!unreadable && (text == NULL || PyList_Append(argv, text) < 0)) {
            Py_XDECREF(text);
            Py_DECREF(argv);
            return NULL;
        }
        if (text != NULL) budget -= PyBytes_GET_SIZE(text) + 1;
        Py_XDECREF(text);
    }
    if (!unreadable) return argv;
    Py_DECREF(argv);
    return NULL;
}

/* Recorder._exec. Anything unreadable: the Python handler reads it its own way. */
static enum outcome exec_(Loop *l, pid_t pid, PyObject *pidobj, const uint64_t *a,
                          PyObject **pending_event, int *stat_fd) {
    char head[2 * HEAD];
    struct iovec local[2] = {{head, HEAD}, {head + HEAD, HEAD}};
    struct iovec remote[2] = {{(void *)(uintptr_t)a[0], HEAD}, {(void *)(uintptr_t)a[1], HEAD}};
    /* A short read stops at the first unreadable byte: then the pointers are read again,
     * on their own (and the path, unless it ends in what was read). */
    ssize_t count = process_vm_readv(pid, local, 2, remote, 2, 0);
    if (count < 0) return PYTHON;
    const char *text = head, *end = memchr(head, 0, count < HEAD ? (size_t)count : HEAD);
    ssize_t path_length = end ? end - head : read_path(pid, a[0]);
    if (path_length < 0) return PYTHON;
    if (end == NULL) text = path_text;
    ssize_t dir_length = 0;
    if (path_length == 0 || text[0] != '/') {
        dir_length = read_dir(pid, AT_CWD);
        if (dir_length < 0) return PYTHON;
    }
    int cut;
    PyObject *argv = read_argv(pid, a[1], count == 2 * HEAD ? head + HEAD : NULL, &cut);
    if (argv == NULL) return PyErr_Occurred() ? RAISED : PYTHON;

    /* Read: from here on, record. */
    PyObject *group = PyDict_GetItemWithError(l->group, pidobj);
    if (group == NULL && PyErr_Occurred()) {
        Py_DECREF(argv);
        return RAISED;
    }
    group = group ? group : pidobj;
    Py_INCREF(group);
    PyObject *other = PyDict_GetItemWithError(l->pending_in, group);
    PyObject *path = NULL, *event = NULL, *entry = NULL;
    enum outcome result = RAISED;
    if ((other == NULL && PyErr_Occurred()) || (other && unknown_if_pending(l, other) < 0) ||
        unknown_if_pending(l, pidobj) < 0)
        goto done;
    path = absolute(text, (size_t)path_length, dir_text, (size_t)dir_length);
    if (path == NULL) goto done;
    Py_ssize_t taken = PyList_GET_SIZE(argv);
    long long strings = 0;
    for (Py_ssize_t i = 0; i < taken; i++) strings += PyBytes_GET_SIZE(PyList_GET_ITEM(argv, i));
    if (add_count(l->recorder, a_kept_bytes,
                  PyBytes_GET_SIZE(path) + strings + 8 * (long long)taken + EVENT_OVERHEAD) < 0)
        goto done;
    event = Py_BuildValue("[OIOOO[]O]", s_exec, (unsigned)pid, path, argv, Py_None,
                          cut ? Py_True : Py_False);
    if (event == NULL || PyList_Append(l->events, event) < 0) goto done;
    if (add_count(l->recorder, a_execs, 1) < 0) goto done;
    long long sweep_at;
    if (get_count(l->recorder, a_sweep_at, &sweep_at) < 0) goto done;
    if (PyDict_GET_SIZE(l->pending) >= sweep_at) {
        PyObject *done = call_method(l, a_sweep, "()");
        if (done == NULL) goto done;
        Py_DECREF(done);
    }
    if (stat_of_caller(l, pid, stat_fd) < 0) goto done;
    PyObject *before = image(*stat_fd);
    if (before == NULL) goto done;
    entry = *stat_fd >= 0 ? Py_BuildValue("(ONiO)", event, before, *stat_fd, group)
                          : Py_BuildValue("(ONOO)", event, before, Py_None, group);
    if (entry == NULL || PyDict_SetItem(l->pending, pidobj, entry) < 0 ||
        PyDict_SetItem(l->pending_in, group, pidobj) < 0)
        goto done;
    *pending_event = event;
    event = NULL;
    result = DONE;
done:
    if (result != DONE && *stat_fd >= 0 && entry == NULL) close(*stat_fd);
    if (result != DONE) *stat_fd = -1;
    Py_XDECREF(entry);
    Py_XDECREF(event);
    Py_XDECREF(argv);
    Py_XDECREF(path);
    Py_DECREF(group);
    return result;
}

/* Recorder._outputs_of, after the answer: the program's stdout and stderr, kept only if
 * its own stat fd still reads (its pid was not another's by then). */
static int outputs(Loop *l, pid_t pid, PyObject *event, int stat_fd) {
    PyObject *targets[2];
    int found = 0;
    for (int fd = 1; fd <= 2; fd++) {
        char link[64];
        snprintf(link, sizeof link, "/proc/%u/fd/%d", (unsigned)pid, fd);
        ssize_t length = readlink(link, dir_text, PATH_BYTES);
        if (length >= 0) {
            targets[found] = PyBytes_FromStringAndSize(dir_text, length);
            if (targets[found] == NULL) goto failed;
            found++;
        }
    }
    char byte;
    if (pread(stat_fd, &byte, 1, 0) < 0) goto ended;
    if (bad_event(event, 7) || (!PyList_CheckExact(PyList_GET_ITEM(event, 5)) && malformed("event")))
        goto failed;
    PyObject *list = PyList_GET_ITEM(event, 5);
    for (int i = 0; i < found; i++) {
        PyObject *target = kept(l, targets[i]);
        targets[i] = NULL;
        if (target == NULL || PyList_Append(list, target) < 0) {
            Py_XDECREF(target);
            for (int j = i + 1; j < found; j++) Py_DECREF(targets[j]);
            return -1;
        }
        Py_DECREF(target);
    }
    return 0;
ended:
    for (int i = 0; i < found; i++) Py_DECREF(targets[i]);
    return 0;
failed:
    for (int i = 0; i < found; i++) Py_DECREF(targets[i]);
    return -1;
}

/* Recorder.getdents: repeated listings of one directory by one program are one event. */
static enum outcome listing(Loop *l, pid_t pid, PyObject *pidobj, uint64_t fd) {
    ssize_t length = read_dir(pid, fd);
    if (length < 0) return PYTHON;
    long long execs;
    if (get_count(l->recorder, a_execs, &execs) < 0) return RAISED;
    PyObject *directory = PyBytes_FromStringAndSize(dir_text, length);
    PyObject *key = directory ? PyTuple_Pack(2, pidobj, directory) : NULL;
    enum outcome result = RAISED;
    if (key == NULL) goto done;
    PyObject *found = PyDict_GetItemWithError(l->listings, key);
    if (found == NULL && PyErr_Occurred()) goto done;
    if (found != NULL) {
        if (bad_tuple(found, 2) || bad_event(PyTuple_GET_ITEM(found, 1), 4)) goto done;
        /* Exact ints: nothing below may run Python code that could free ``found``. */
        if ((!PyLong_CheckExact(PyTuple_GET_ITEM(found, 0)) ||
             !PyLong_CheckExact(PyList_GET_ITEM(PyTuple_GET_ITEM(found, 1), 3))) &&
            malformed("listing"))
            goto done;
        long long when = PyLong_AsLongLong(PyTuple_GET_ITEM(found, 0));
        if (when == -1 && PyErr_Occurred()) goto done;
        if (when == execs) {  /* the same program listing the same directory again */
            PyObject *event = PyTuple_GET_ITEM(found, 1);
            PyObject *more = PyNumber_Add(PyList_GET_ITEM(event, 3), one_);
            if (more == NULL || PyList_SetItem(event, 3, more) < 0) goto done;
            result = DONE;
            goto done;
        }
    }
    Py_INCREF(directory);
    PyObject *event = Py_BuildValue("[OINi]", s_listdir, (unsigned)pid, kept(l, directory), 1);
    if (event == NULL) goto done;
    PyObject *value = Py_BuildValue("(LO)", execs, event);
    if (value == NULL || PyDict_SetItem(l->listings, key, value) < 0) {
        Py_XDECREF(value);
        Py_DECREF(event);
        goto done;
    }
    Py_DECREF(value);
    result = append(l, event) < 0 ? RAISED : DONE;
done:
    Py_XDECREF(key);
    Py_XDECREF(directory);
    return result;
}

/* A call that records one path: ["kind", pid, path] (and open's flags; openat's may be
 * the runner's end-of-build sentinel). */
#define SENTINEL 2
static enum outcome path_event(Loop *l, pid_t pid, PyObject *kind, uint64_t dirfd,
                               uint64_t address, int with_flags, uint64_t flags) {
    PyObject *path = path_at(l, pid, dirfd, address);
    if (path == NULL) return PyErr_Occurred() ? RAISED : PYTHON;
    if (with_flags == SENTINEL && l->sentinel != Py_None) {
        int same = PyObject_RichCompareBool(path, l->sentinel, Py_EQ);
        if (same < 0 || (same && PyObject_SetAttr(l->recorder, a_ended, Py_True) < 0)) {
            Py_DECREF(path);
            return RAISED;
        }
    }
    PyObject *event = with_flags ? Py_BuildValue("[OINK]", kind, (unsigned)pid, path,
                                                 (unsigned long long)flags)
                                 : Py_BuildValue("[OIN]", kind, (unsigned)pid, path);
    return append(l, event) < 0 ? RAISED : DONE;
}

static enum outcome handle(Loop *l, enum call call, pid_t pid, PyObject *pidobj,
                           const uint64_t *a, PyObject **pending_event, int *stat_fd) {
    switch (call) {
    case C_EXECVE: return exec_(l, pid, pidobj, a, pending_event, stat_fd);
    case C_EXIT:
        return append(l, Py_BuildValue("[OIi]", s_exit, (unsigned)pid, (int)(a[0] & 0xFF))) < 0
                   ? RAISED : DONE;
    case C_OPEN: return path_event(l, pid, s_open, AT_CWD, a[0], 1, a[1]);
    case C_OPENAT: return path_event(l, pid, s_open, a[0], a[1], SENTINEL, a[2]);
    case C_UNLINK: return path_event(l, pid, s_unlink, AT_CWD, a[0], 0, 0);
    case C_RMDIR: return path_event(l, pid, s_rmdir, AT_CWD, a[0], 0, 0);
    case C_UNLINKAT:
        return path_event(l, pid, a[2] & REMOVEDIR ? s_rmdir : s_unlink, a[0], a[1], 0, 0);
    case C_MKDIR: return path_event(l, pid, s_mkdir, AT_CWD, a[0], 0, 0);
    case C_MKDIRAT: return path_event(l, pid, s_mkdir, a[0], a[1], 0, 0);
    case C_CHMOD: return path_event(l, pid, s_chmod, AT_CWD, a[0], 0, 0);
    case C_FCHMODAT: return path_event(l, pid, s_chmod, a[0], a[1], 0, 0);
    case C_GETDENTS: return listing(l, pid, pidobj, a[0]);
    default: return PYTHON;
    }
}

/* --- the loop ------------------------------------------------------------------------------- */

static int send_answer(int notify_fd, uint64_t nid, long long value, int error, uint32_t flags) {
    struct seccomp_notif_resp response = {.id = nid, .val = value, .error = error, .flags = flags};
    if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_SEND, &response) == 0 || errno == ENOENT) return 0;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* The Python handler's answer: None continues, (value, -errno) answers, DEFERRED (0, 1)
 * is a thread's to send. */
static int send_reply(int notify_fd, uint64_t nid, PyObject *reply) {
    if (reply == Py_None) return send_answer(notify_fd, nid, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
    long long value;
    int error;
    if (!PyArg_ParseTuple(reply, "Li", &value, &error)) return -1;
    if (value == 0 && error == 1) return 0;
    return send_answer(notify_fd, nid, value, error, 0);
}

static PyObject *arguments(const struct seccomp_notif *request) {
    const uint64_t *a = (const uint64_t *)request->data.args;
    return Py_BuildValue("(KKKKKK)", a[0], a[1], a[2], a[3], a[4], a[5]);
}

static int full(Loop *l) {
    long long kept_bytes;
    if (get_count(l->recorder, a_kept_bytes, &kept_bytes) < 0) return -1;
    return PyList_GET_SIZE(l->events) >= l->max_events || kept_bytes >= l->max_bytes;
}

/* One notification of a call handled here. */
static int native(Loop *l, enum call call, const struct seccomp_notif *request) {
    pid_t pid = (pid_t)request->pid;
    const uint64_t *a = (const uint64_t *)request->data.args;
    PyObject *pidobj = PyLong_FromUnsignedLong(request->pid), *pending_event = NULL;
    int stat_fd = -1, result = -1;
    if (pidobj == NULL || add_count(l->recorder, a_notifications, 1) < 0) goto done;
    int known = PySet_Contains(l->known, pidobj);
    if (known < 0) goto done;
    if (!known) {
        /* A process whose first traced call is its exit ran no program and has no children
         * left to place: its exit status alone is not worth a /proc read. */
        if (call == C_EXIT ? PySet_Add(l->known, pidobj) < 0 : know(l, request->pid) < 0)
            goto done;
    }
    if (PyDict_GET_SIZE(l->pending) && settle(l, pidobj) < 0) goto done;
    l->nid = request->id;
    enum outcome outcome = handle(l, call, pid, pidobj, a, &pending_event, &stat_fd);
    if (outcome == RAISED) goto done;
    if (outcome == PYTHON) {
        PyObject *args = arguments(request);
        PyObject *reply = args ? call_method(l, a_handle, "(KIiN)", (unsigned long long)request->id,
                                             request->pid, request->data.nr, args)
                               : NULL;
        int sent = reply ? send_reply(l->notify_fd, request->id, reply) : -1;
        Py_XDECREF(reply);
        if (sent < 0) goto done;
    } else if (send_answer(l->notify_fd, request->id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE) < 0)
        goto done;
    if (call == C_EXIT && forget(l, pidobj) < 0) goto done;
    if (pending_event != NULL && stat_fd >= 0 && outputs(l, pid, pending_event, stat_fd) < 0) goto done;
    if (PyList_GET_SIZE(l->later)) {
        PyObject *done = call_method(l, a_run_later, "()");
        if (done == NULL) goto done;
        Py_DECREF(done);
    }
    result = 0;
done:
    Py_XDECREF(pending_event);
    Py_XDECREF(pidobj);
    return result;
}

static int one(Loop *l, const struct seccomp_notif *request) {
    int nr = request->data.nr;
    enum call call = nr >= 0 && nr < NR_LIMIT ? (enum call)l->calls[nr] : C_NONE;
    if (call != C_NONE) {
        int ended = -1, is_full = -1;
        PyObject *flag = PyObject_GetAttr(l->recorder, a_ended);
        if (flag != NULL) {
            ended = PyObject_IsTrue(flag);
            Py_DECREF(flag);
        }
        if (ended < 0 || (!ended && (is_full = full(l)) < 0)) return -1;
        if (!ended && !is_full) return native(l, call, request);
    }
    PyObject *args = arguments(request);
    if (args == NULL) return -1;
    PyObject *done = call_method(l, a_step, "(KIiN)", (unsigned long long)request->id,
                                 request->pid, nr, args);
    Py_XDECREF(done);
    return done ? 0 : -1;
}

static void release(Loop *l) {
    PyObject **owned[] = {&l->events, &l->known, &l->pending, &l->pending_in, &l->group,
                          &l->members, &l->interned, &l->listings, &l->later, &l->sentinel};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++) Py_CLEAR(*owned[i]);
}

static int take(Loop *l) {
    static const char *names[] = {"events", "_known", "_pending", "_pending_in", "_group",
                                  "_members", "_interned", "_listings", "later", "sentinel"};
    PyObject **into[] = {&l->events, &l->known, &l->pending, &l->pending_in, &l->group,
                         &l->members, &l->interned, &l->listings, &l->later, &l->sentinel};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if ((*into[i] = PyObject_GetAttrString(l->recorder, names[i])) == NULL) return -1;
    if (!PyList_CheckExact(l->events) || !PySet_CheckExact(l->known) ||
        !PyDict_CheckExact(l->pending) || !PyDict_CheckExact(l->pending_in) ||
        !PyDict_CheckExact(l->group) || !PyDict_CheckExact(l->members) ||
        !PyDict_CheckExact(l->interned) || !PyDict_CheckExact(l->listings) ||
        !PyList_CheckExact(l->later)) {
        PyErr_SetString(PyExc_TypeError, "not a Recorder");
        return -1;
    }
    long long depth;
    if (get_count(l->recorder, a_max_events, &l->max_events) < 0 ||
        get_count(l->recorder, a_max_bytes, &l->max_bytes) < 0 ||
        get_count(l->recorder, a_depth, &depth) < 0)
        return -1;
    l->depth = (Py_ssize_t)depth;
    return 0;
}

static PyObject *serve(PyObject *module, PyObject *args) {
    (void)module;
    Loop l = {0};
    PyObject *calls;
    if (!PyArg_ParseTuple(args, "iOO!:serve", &l.notify_fd, &l.recorder, &PyDict_Type, &calls))
        return NULL;
    PyObject *key, *value;
    Py_ssize_t position = 0;
    while (PyDict_Next(calls, &position, &key, &value)) {
        long nr = PyLong_AsLong(key);
        const char *name = PyUnicode_AsUTF8(value);
        if ((nr == -1 && PyErr_Occurred()) || name == NULL) return NULL;
        enum call call = C_NONE;
        for (size_t i = 0; i < sizeof CALLS / sizeof *CALLS; i++)
            if (!strcmp(CALLS[i].name, name)) call = CALLS[i].call;
        if (call == C_NONE || nr < 0 || nr >= NR_LIMIT) {
            PyErr_Format(PyExc_ValueError, "no native handler for %s (%ld)", name, nr);
            return NULL;
        }
        l.calls[nr] = (unsigned char)call;
    }
    if (take(&l) < 0) {
        release(&l);
        return NULL;
    }
    struct seccomp_notif request;
    for (;;) {
        /* A signal taken while a notification was handled (SIGTERM: write and leave). */
        if (PyErr_CheckSignals() < 0) break;
        memset(&request, 0, sizeof request);
        int received;
        Py_BEGIN_ALLOW_THREADS
        received = ioctl(l.notify_fd, SECCOMP_IOCTL_NOTIF_RECV, &request);
        Py_END_ALLOW_THREADS
        if (received < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0) break;
                continue;
            }
            if (errno == ENOENT) {
                /* A caller gave up (a signal), or no process is left (POLLHUP). */
                struct pollfd ready = {.fd = l.notify_fd, .events = POLLIN};
                if (poll(&ready, 1, 0) > 0 && ready.revents & POLLHUP && !(ready.revents & POLLIN)) {
                    release(&l);
                    Py_RETURN_NONE;
                }
                continue;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            break;
        }
        if (one(&l, &request) < 0) break;
    }
    release(&l);
    return NULL;
}

static PyObject *normpath_(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "normpath takes bytes");
        return NULL;
    }
    return normpath(PyBytes_AS_STRING(arg), (size_t)PyBytes_GET_SIZE(arg));
}

static PyObject *line_value(const char *start) {
    return PyBytes_FromStringAndSize(start, (const char *)rawmemchr(start, '\n') - start);
}

static PyObject *placement_of(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "placement_of takes bytes");
        return NULL;
    }
    const char *tgid, *ppid, *ids = read_status(PyBytes_AS_STRING(arg), &tgid, &ppid);
    if (ids == NULL) Py_RETURN_NONE;
    return Py_BuildValue("(NNN)", line_value(tgid), line_value(ppid), line_value(ids));
}

static PyMethodDef METHODS[] = {
    {"placement_of", placement_of, METH_O,
     "placement_of(path): the Tgid, PPid and NSpid values of a status file, as know() reads "
     "them, or None."},
    {"normpath", normpath_, METH_O, "normpath(path): posixpath.normpath of bytes, in C."},
    {"serve", serve, METH_VARARGS,
     "serve(notify_fd, recorder, calls): answer notifications until no process is left, "
     "handling the calls in ``calls`` (number -> name) here and every other in "
     "recorder.step."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, .m_name = "_loop", .m_size = -1, .m_methods = METHODS,
};

PyMODINIT_FUNC PyInit__loop(void) {
    struct { PyObject **into; const char *text; } names[] = {
        {&s_exec, "exec"}, {&s_exit, "exit"}, {&s_open, "open"}, {&s_unlink, "unlink"},
        {&s_rmdir, "rmdir"}, {&s_mkdir, "mkdir"}, {&s_chmod, "chmod"}, {&s_listdir, "listdir"},
        {&s_pid, "pid"}, {&s_unknown, "unknown"}, {&s_ran, "ran"}, {&s_failed, "failed"},
        {&a_kept_bytes, "kept_bytes"}, {&a_notifications, "notifications"},
        {&a_execs, "_execs"}, {&a_ended, "ended"}, {&a_sweep_at, "_sweep_at"},
        {&a_step, "step"}, {&a_handle, "handle"}, {&a_unknown, "_unknown"},
        {&a_sweep, "_sweep"}, {&a_resolved, "resolved"}, {&a_run_later, "run_later"},
        {&a_max_events, "max_events"}, {&a_max_bytes, "max_bytes"}, {&a_depth, "depth"},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if ((*names[i].into = PyUnicode_InternFromString(names[i].text)) == NULL) return NULL;
    if ((one_ = PyLong_FromLong(1)) == NULL) return NULL;
    PyObject *module = PyModule_Create(&MODULE);
    if (module != NULL &&
        PyModule_AddStringConstant(module, "SOURCE_SHA256", HERMETIC_LOOP_SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
