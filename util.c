/* util.c -- errors, checked sizes, whole-file reads and atomic writes shared by the library. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ============================================================================================ */
/* Errors                                                                                        */
/* ============================================================================================ */

const char *it_strerror(int code)
{
    switch (code) {
    case IT_OK: return "success";
    case IT_ENOMEM: return "out of memory";
    case IT_EIO: return "input/output error";
    case IT_EFORMAT: return "malformed input";
    case IT_EINVAL: return "invalid argument";
    case IT_ENOTFOUND: return "not found";
    case IT_EUNSUPPORTED: return "unsupported";
    case IT_ENOTSPD: return "matrix not positive definite";
    default: return "unknown error";
    }
}

static int is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

/* The escape of a control character c into esc[5]; its length. */
static size_t control_escape(unsigned char c, char *esc)
{
    return (size_t)(c == '\n' ? snprintf(esc, 5, "\\n") : c == '\r' ? snprintf(esc, 5, "\\r")
                   : c == '\t' ? snprintf(esc, 5, "\\t") : snprintf(esc, 5, "\\x%02x", c));
}

void it__escape_controls(char *s, size_t size)
{
    if (!size) return;
    size_t n = strlen(s), out = 0, keep = 0;
    char esc[5];
    for (; keep < n; keep++) { /* the characters that fit once escaped */
        size_t k = is_control((unsigned char)s[keep]) ? control_escape((unsigned char)s[keep], esc) : 1;
        if (out + k > size - 1) break;
        out += k;
    }
    /* from the end, so that every character is read before its place is written: the escaped
     * form of s[0..i] is never shorter than i + 1 */
    s[out] = 0;
    for (size_t i = keep, w = out; i-- > 0;) {
        unsigned char c = (unsigned char)s[i];
        if (!is_control(c)) {
            s[--w] = (char)c;
            continue;
        }
        size_t k = control_escape(c, esc);
        w -= k;
        memcpy(s + w, esc, k);
    }
}

int it__fail(it_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        it__escape_controls(err->msg, sizeof err->msg); /* quoted input stays on one line */
    }
    return code;
}

void it__err_prefix(it_err *err, const char *prefix)
{
    if (!err) return;
    size_t p = strlen(prefix), m = strnlen(err->msg, IT_ERR_MAX - 1);
    if (p > IT_ERR_MAX - 3) p = IT_ERR_MAX - 3;
    if (m > IT_ERR_MAX - 3 - p) m = IT_ERR_MAX - 3 - p; /* keep the prefix, cut the tail */
    memmove(err->msg + p + 2, err->msg, m);
    memcpy(err->msg, prefix, p);
    err->msg[p] = ':';
    err->msg[p + 1] = ' ';
    err->msg[p + 2 + m] = 0;
    it__escape_controls(err->msg, sizeof err->msg);
}

void it__err_append(it_err *err, const char *sep, const char *text)
{
    if (!err) return;
    size_t len = strnlen(err->msg, IT_ERR_MAX - 1);
    for (const char *parts[2] = {sep, text}, **p = parts; p < parts + 2; p++)
        for (const char *c = *p; *c && len < IT_ERR_MAX - 1; c++) err->msg[len++] = *c;
    err->msg[len] = 0;
    it__escape_controls(err->msg, sizeof err->msg);
}

/* ============================================================================================ */
/* Checked sizes and allocation                                                                  */
/* ============================================================================================ */

int it__mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int it__add_size(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

int it__mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

void *(it__malloc_n)(size_t n, size_t size)
{
    size_t bytes;
    if (it__mul_size(n, size, &bytes)) return NULL;
    return malloc(bytes ? bytes : 1);
}

void *(it__calloc)(size_t n, size_t size)
{
    return calloc(n ? n : 1, size ? size : 1);
}

char *(it__strndup)(const char *s, size_t len)
{
    if (len == SIZE_MAX) return NULL;
    char *d = malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

char *(it__strdup)(const char *s)
{
    return it__strndup(s, strlen(s));
}

/* ============================================================================================ */
/* Files                                                                                         */
/* ============================================================================================ */

int it__open_regular(const char *path, int *fdp, size_t *size, it_err *err)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it has no effect on regular files */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return it__fail(err, errno == ENOENT ? IT_ENOTFOUND : IT_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = IT_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) rc = it__fail(err, IT_EIO, "%s: not a regular file", path);
    else if ((uintmax_t)st.st_size > SIZE_MAX) rc = it__fail(err, IT_EIO, "%s: too large for this machine's address space", path);
    if (rc != IT_OK) {
        close(fd);
        return rc;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl != -1) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *fdp = fd;
    *size = (size_t)st.st_size;
    return IT_OK;
}

int it__read_file(const char *path, size_t max, char **data, size_t *len, it_err *err)
{
    *data = NULL;
    *len = 0;
    size_t cap;
    int fd, rc = it__open_regular(path, &fd, &cap, err);
    if (rc != IT_OK) return rc;
    if (cap > max) {
        close(fd);
        return it__fail(err, IT_EFORMAT, "%s: file of %zu bytes is larger than the %zu-byte limit", path, cap, max);
    }
    size_t n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return it__fail(err, IT_ENOMEM, "%s: out of memory reading %zu bytes", path, cap);
    }
    int rerr = 0;
    while (n < cap) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) rerr = errno;
        if (got <= 0) break; /* an error, or a file that shrank while we read it */
        n += (size_t)got;
    }
    close(fd);
    if (rerr) {
        free(buf);
        return it__fail(err, IT_EIO, "%s: read failed: %s", path, strerror(rerr));
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return IT_OK;
}

char *(it__path_join)(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + (size_t)slash + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + (size_t)slash, name, b + 1);
    return p;
}

int it__is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int it__exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- atomic output: write "<path>.tmp.XXXXXX", fsync, rename; output sets ---- */

/* What a signal handler removes: every temporary file that exists now (being written, or finished
 * and waiting for its set), and the folders made inside the open set. Slots are set after the name
 * is allocated and cleared before it is freed; it_out_remove_partial only reads them. Worker threads
 * block signals (thread.c), so a handler runs on a thread that writes outputs, between its steps. */
#define SIG_SLOTS 1024
#define SIG_DIRS 64
static char *volatile sig_tmp[SIG_SLOTS];
static char *volatile sig_dir[SIG_DIRS];

/* The open output set: finished files waiting to be renamed, in the order they were finished. */
typedef struct pending {
    char *tmp, *path;
    int slot;
} pending;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int depth, failed;
    pending *v;
    size_t n, cap, ndirs;
} set;

static int slot_take(char *tmp)
{
    int slot = -1;
    pthread_mutex_lock(&out_lock);
    for (int i = 0; i < SIG_SLOTS && slot < 0; i++)
        if (!sig_tmp[i]) sig_tmp[i] = tmp, slot = i;
    pthread_mutex_unlock(&out_lock);
    return slot; /* -1: more files at once than slots; written as usual, only not removed on a signal */
}

static void slot_drop(int slot)
{
    if (slot >= 0) sig_tmp[slot] = NULL;
}

/* Removes a temporary file and frees its name (the slot first, so a handler never sees it freed). */
static void tmp_remove(char *tmp, int slot)
{
    slot_drop(slot);
    if (tmp) unlink(tmp);
    free(tmp);
}

int it__out_open(it__out *o, const char *path, it_err *err)
{
    memset(o, 0, sizeof *o);
    o->slot = -1;
    size_t n = strlen(path);
    char *tmp = malloc(n + sizeof ".tmp.XXXXXX");
    o->path = it__strdup(path);
    if (!o->path || !tmp) {
        free(tmp);
        it__out_abort(o);
        return it__fail(err, IT_ENOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        it__out_abort(o);
        return it__fail(err, IT_EIO, "%s: cannot create a temporary file beside it: %s", path, strerror(e));
    }
    o->tmp = tmp; /* from here on, it__out_abort removes it */
    o->slot = slot_take(tmp);
    fchmod(fd, 0644); /* mkstemp creates 0600; outputs are ordinary files */
    o->f = fdopen(fd, "wb");
    if (!o->f) {
        close(fd);
        it__out_abort(o);
        return it__fail(err, IT_EIO, "%s: cannot open the temporary file", path);
    }
    return IT_OK;
}

int it__out_write(it__out *o, const void *data, size_t len, it_err *err)
{
    if (o->failed) return IT_EIO;
    if (len && fwrite(data, 1, len, o->f) != len) {
        o->failed = 1;
        return it__fail(err, IT_EIO, "%s: write failed: %s", o->path, strerror(errno));
    }
    return IT_OK;
}

int it__out_commit(it__out *o, it_err *err)
{
    int rc = IT_OK;
    if (o->failed) rc = it__fail(err, IT_EIO, "%s: an earlier write failed", o->path);
    if (rc == IT_OK && (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0))
        rc = it__fail(err, IT_EIO, "%s: write failed: %s", o->path, strerror(errno));
    if (fclose(o->f) != 0 && rc == IT_OK) rc = it__fail(err, IT_EIO, "%s: write failed: %s", o->path, strerror(errno));
    o->f = NULL;
    if (rc != IT_OK) {
        it__out_abort(o);
        return rc;
    }
    pthread_mutex_lock(&out_lock);
    if (set.depth > 0) { /* the set renames it at its end */
        if (set.n == set.cap) {
            size_t cap = set.cap ? 2 * set.cap : 16;
            pending *v = realloc(set.v, cap * sizeof *v);
            if (v) set.v = v, set.cap = cap;
        }
        if (set.n < set.cap) {
            set.v[set.n++] = (pending){o->tmp, o->path, o->slot};
            o->tmp = o->path = NULL, o->slot = -1;
        } else {
            rc = it__fail(err, IT_ENOMEM, "%s: out of memory", o->path);
        }
        pthread_mutex_unlock(&out_lock);
        it__out_abort(o);
        return rc;
    }
    pthread_mutex_unlock(&out_lock);
    if (rename(o->tmp, o->path) != 0)
        rc = it__fail(err, IT_EIO, "%s: cannot rename the finished file into place: %s", o->path, strerror(errno));
    if (rc == IT_OK) {
        slot_drop(o->slot);
        free(o->tmp);
        o->tmp = NULL;
    }
    it__out_abort(o);
    return rc;
}

void it__out_abort(it__out *o)
{
    if (o->f) fclose(o->f);
    tmp_remove(o->tmp, o->slot);
    free(o->path);
    memset(o, 0, sizeof *o);
    o->slot = -1;
}

int it__out_dir_made(const char *dir, it_err *err)
{
    int rc = IT_OK;
    pthread_mutex_lock(&out_lock);
    if (set.depth > 0) {
        char *copy = set.ndirs < SIG_DIRS ? it__strdup(dir) : NULL;
        if (copy) sig_dir[set.ndirs++] = copy;
        else rc = it__fail(err, IT_ENOMEM, "%s: out of memory", dir); /* or too many folders in one set */
    }
    pthread_mutex_unlock(&out_lock);
    if (rc != IT_OK) rmdir(dir); /* not to be left behind when the set fails */
    return rc;
}

int it_out_check_dir(const char *dir, it_err *err)
{
    if (it__is_dir(dir)) {
        if (access(dir, W_OK | X_OK) != 0)
            return it__fail(err, IT_EIO, "%s: cannot write in this folder: %s", dir, strerror(errno));
        return IT_OK;
    }
    if (it__exists(dir)) return it__fail(err, IT_EIO, "%s: exists and is not a folder", dir);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--; /* "out/" is "out" */
    while (n > 0 && dir[n - 1] != '/') n--;
    char *parent = n == 0 ? it__strdup(".") : it__strndup(dir, n);
    if (!parent) return it__fail(err, IT_ENOMEM, "%s: out of memory", dir);
    int rc = IT_OK;
    if (!it__is_dir(parent))
        rc = it__fail(err, IT_EIO, "%s: cannot create the folder: %s is not a folder", dir, parent);
    else if (access(parent, W_OK | X_OK) != 0)
        rc = it__fail(err, IT_EIO, "%s: cannot create the folder: %s", dir, strerror(errno));
    free(parent);
    return rc;
}

void it_out_begin(void)
{
    pthread_mutex_lock(&out_lock);
    if (set.depth++ == 0) set.failed = 0;
    pthread_mutex_unlock(&out_lock);
}

/* Blocks (block = 1) or restores the signals that end a process, so that the renames that finish a
 * set are not cut in two. */
static void hold_signals(int block, sigset_t *old)
{
    if (block) {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, old);
    } else {
        pthread_sigmask(SIG_SETMASK, old, NULL);
    }
}

int it_out_end(int commit, it_err *err)
{
    int rc = IT_OK;
    pthread_mutex_lock(&out_lock);
    if (set.depth == 0) {
        pthread_mutex_unlock(&out_lock);
        return it__fail(err, IT_EINVAL, "it_out_end: no output set is open");
    }
    if (!commit) set.failed = 1;
    if (--set.depth > 0) {
        pthread_mutex_unlock(&out_lock);
        return IT_OK;
    }
    if (set.failed && commit) rc = it__fail(err, IT_EIO, "an output of this set failed earlier; nothing was written");
    for (size_t i = 0; rc == IT_OK && !set.failed && i < set.n; i++) /* what would stop a rename part way */
        if (it__is_dir(set.v[i].path))
            rc = it__fail(err, IT_EIO, "%s: a folder stands where the file goes; nothing was written", set.v[i].path);
    if (rc != IT_OK) set.failed = 1;
    sigset_t old;
    hold_signals(1, &old);
    for (size_t i = 0; i < set.n; i++) {
        pending *p = &set.v[i];
        if (!set.failed && rc == IT_OK && rename(p->tmp, p->path) != 0) /* only a vanished folder is left */
            rc = it__fail(err, IT_EIO, "%s: cannot rename the finished file into place: %s", p->path, strerror(errno));
        else if (!set.failed && rc == IT_OK)
            slot_drop(p->slot);
        tmp_remove(p->tmp, p->slot); /* a no-op once renamed, but for the name's memory */
        free(p->path);
    }
    hold_signals(0, &old);
    for (size_t i = set.ndirs; i-- > 0;) { /* removed only when empty: a folder made for this set */
        char *d = sig_dir[i];
        sig_dir[i] = NULL;
        if (set.failed || rc != IT_OK) rmdir(d);
        free(d);
    }
    free(set.v);
    set.v = NULL;
    set.n = set.cap = set.ndirs = 0;
    set.failed = 0;
    pthread_mutex_unlock(&out_lock);
    return rc;
}

void it_out_remove_partial(void)
{
    for (int i = 0; i < SIG_SLOTS; i++) {
        char *p = sig_tmp[i];
        if (p) unlink(p);
    }
    for (int i = SIG_DIRS; i-- > 0;) {
        char *d = sig_dir[i];
        if (d) rmdir(d);
    }
}

static void on_signal(int sig)
{
    int e = errno;
    it_out_remove_partial();
    errno = e;
    raise(sig); /* SA_RESETHAND: the default action (the end of the process) once this returns */
}

void it_out_cleanup_on_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction sa, old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue; /* nohup: keep */
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sa.sa_flags = (int)SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

uint64_t it__splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}
