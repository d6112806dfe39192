/*
 * The front of dist/appliance: a self-extracting launcher.
 *
 * dist/appliance is this program followed by a payload (the PyInstaller one-folder build
 * of the appliance, file by file, zlib-compressed where that pays) and a trailer that
 * names the payload's content hash. On start the launcher looks for that hash in its
 * cache folder; if the build is there it execs it at once (a warm start costs a stat),
 * otherwise it unpacks it into a temporary folder beside it and renames that into place
 * (a cold start), so concurrent first starts never see half a tree. Different builds have
 * different hashes and never overwrite each other.
 *
 * Cache folder, first that applies: $APPLIANCE_CACHE_DIR; $XDG_CACHE_HOME/appliance;
 * $HOME/.cache/appliance; the passwd entry's home + /.cache/appliance (so `env -i` works);
 * /tmp/appliance-<uid> (made 0700, and used only if this user owns it).
 *
 * Needs only the kernel and glibc: zlib is linked in statically (packaging/build-binary.sh).
 * Format written by packaging/binary/pack.py; keep the two in step.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MAGIC "APPLPAK1"
#define TRAILER_SIZE 64 /* magic[8] payload_offset[8] payload_size[8] key[40] */
#define KEY_SIZE 40
#define ENTRY_HEAD 24 /* type[1] compressed[1] path_len[2] mode[4] size[8] stored[8] */
#define PROGRAM "appliance"
#define DONE_MARK ".complete"

enum { ENTRY_DIR = 0, ENTRY_FILE = 1, ENTRY_LINK = 2 };

static const char *self_name = "appliance";

static void die(const char *what, const char *detail) {
    fprintf(stderr, "%s: %s%s%s%s%s\n", self_name, what, detail ? " " : "", detail ? detail : "",
            errno ? ": " : "", errno ? strerror(errno) : "");
    exit(127);
}

/* snprintf that refuses to truncate a path. */
static void join(char *out, size_t size, const char *a, const char *b, const char *c) {
    int n = snprintf(out, size, "%s%s%s", a, b, c);
    if (n < 0 || (size_t)n >= size) {
        errno = 0;
        die("path too long:", a);
    }
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* mkdir -p; 0 on success. */
static int make_dirs(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST) return -1;
    return is_dir(buf) ? 0 : -1;
}

/* A folder this user may keep the cache in: it exists (or is made) and is writable. */
static int usable(const char *dir) {
    return make_dirs(dir, 0700) == 0 && access(dir, W_OK | X_OK) == 0;
}

static void cache_root(char *out, size_t size) {
    const char *env;
    if ((env = getenv("APPLIANCE_CACHE_DIR")) && *env) {
        join(out, size, env, "", "");
        if (!usable(out)) die("cannot use APPLIANCE_CACHE_DIR", out);
        return;
    }
    if ((env = getenv("XDG_CACHE_HOME")) && env[0] == '/') {
        join(out, size, env, "/appliance", "");
        if (usable(out)) return;
    }
    if ((env = getenv("HOME")) && env[0] == '/') {
        join(out, size, env, "/.cache/appliance", "");
        if (usable(out)) return;
    }
    struct passwd *pw = getpwuid(getuid());
    if (pw && pw->pw_dir && pw->pw_dir[0] == '/') {
        join(out, size, pw->pw_dir, "/.cache/appliance", "");
        if (usable(out)) return;
    }
    /* Shared /tmp: only a folder this user made and nobody else can write. */
    snprintf(out, size, "/tmp/appliance-%u", (unsigned)getuid());
    struct stat st;
    if (mkdir(out, 0700) != 0 && errno != EEXIST) die("cannot make a cache folder", out);
    if (lstat(out, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
        (st.st_mode & 022)) {
        errno = 0;
        die("refusing a cache folder not owned by this user (set APPLIANCE_CACHE_DIR):", out);
    }
}

static void write_all(int fd, const unsigned char *data, size_t len, const char *path) {
    while (len) {
        ssize_t n = write(fd, data, len > (1u << 30) ? (1u << 30) : len);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("cannot write", path);
        }
        data += n;
        len -= (size_t)n;
    }
}

static void inflate_to(int fd, const unsigned char *src, uint64_t stored, uint64_t size,
                       const char *path) {
    static unsigned char chunk[1 << 20];
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) die("zlib init failed for", path);
    z.next_in = (unsigned char *)src;
    z.avail_in = (uInt)stored; /* entries are packed in pieces under 4 GiB */
    uint64_t written = 0;
    int rc;
    do {
        z.next_out = chunk;
        z.avail_out = sizeof chunk;
        rc = inflate(&z, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) {
            errno = 0;
            die("corrupt payload at", path);
        }
        size_t got = sizeof chunk - z.avail_out;
        write_all(fd, chunk, got, path);
        written += got;
    } while (rc != Z_STREAM_END);
    inflateEnd(&z);
    if (written != size) {
        errno = 0;
        die("payload size mismatch at", path);
    }
}

static void unpack(const unsigned char *p, const unsigned char *end, const char *root) {
    char path[PATH_MAX];
    while (p < end) {
        if (end - p < ENTRY_HEAD) break;
        int type = p[0], compressed = p[1];
        unsigned path_len = p[2] | (p[3] << 8);
        mode_t mode = (mode_t)(p[4] | (p[5] << 8) | (p[6] << 16) | ((uint32_t)p[7] << 24));
        uint64_t size = le64(p + 8), stored = le64(p + 16);
        p += ENTRY_HEAD;
        if ((uint64_t)(end - p) < path_len + stored) break;
        if (snprintf(path, sizeof path, "%s/%.*s", root, (int)path_len, (const char *)p) >=
            (int)sizeof path)
            die("path too long under", root);
        p += path_len;
        if (type == ENTRY_DIR) {
            if (mkdir(path, mode & 07777) != 0 && errno != EEXIST) die("cannot make", path);
        } else if (type == ENTRY_LINK) {
            char target[PATH_MAX];
            if (stored >= sizeof target) die("link too long:", path);
            memcpy(target, p, stored);
            target[stored] = '\0';
            if (symlink(target, path) != 0) die("cannot link", path);
        } else if (type == ENTRY_FILE) {
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 07777);
            if (fd < 0) die("cannot create", path);
            if (compressed)
                inflate_to(fd, p, stored, size, path);
            else
                write_all(fd, p, stored, path);
            if (close(fd) != 0) die("cannot write", path);
        } else {
            errno = 0;
            die("unknown payload entry at", path);
        }
        p += stored;
    }
    if (p != end) {
        errno = 0;
        die("truncated payload; unpacking into", root);
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(int argc, char **argv) {
    (void)argc;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
    } else if (argv[0] && strchr(argv[0], '/') && realpath(argv[0], exe)) {
        /* /proc not mounted: trust argv[0] when it names a path */
    } else {
        die("cannot find its own file (is /proc mounted?)", NULL);
    }
    const char *slash = strrchr(exe, '/');
    self_name = slash ? slash + 1 : exe;

    int fd = open(exe, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) die("cannot read", exe);
    if (st.st_size < TRAILER_SIZE) {
        errno = 0;
        die("no payload in", exe);
    }
    unsigned char *file = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (file == MAP_FAILED) die("cannot map", exe);
    const unsigned char *trailer = file + st.st_size - TRAILER_SIZE;
    if (memcmp(trailer, MAGIC, 8) != 0) {
        errno = 0;
        die("no payload in (was it built by packaging/build-binary.sh?)", exe);
    }
    uint64_t offset = le64(trailer + 8), size = le64(trailer + 16);
    if (offset + size + TRAILER_SIZE != (uint64_t)st.st_size) {
        errno = 0;
        die("damaged payload in", exe);
    }
    char key[KEY_SIZE + 1];
    memcpy(key, trailer + 24, KEY_SIZE);
    key[KEY_SIZE] = '\0';

    char root[PATH_MAX], target[PATH_MAX], program[PATH_MAX], done[PATH_MAX];
    cache_root(root, sizeof root);
    join(target, sizeof target, root, "/", key);
    join(program, sizeof program, target, "/", PROGRAM);
    join(done, sizeof done, target, "/", DONE_MARK);

    if (access(done, F_OK) != 0) {
        char tmp[PATH_MAX];
        char dotted[KEY_SIZE + 16];
        snprintf(dotted, sizeof dotted, "/.%s.XXXXXX", key);
        join(tmp, sizeof tmp, root, dotted, "");
        if (!mkdtemp(tmp)) die("cannot make a folder in", root);
        if (chmod(tmp, 0755) != 0) die("cannot chmod", tmp);
        unpack(file + offset, file + offset + size, tmp);
        char mark[PATH_MAX];
        join(mark, sizeof mark, tmp, "/", DONE_MARK);
        int m = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (m < 0 || close(m) != 0) die("cannot write", mark);
        if (rename(tmp, target) != 0) {
            /* Another start won the race (or a stale, unfinished tree is in the way). */
            if (access(done, F_OK) != 0) die("cannot move the unpacked build to", target);
            nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
    }
    munmap(file, (size_t)st.st_size);
    close(fd);
    argv[0] = program;
    execv(program, argv);
    die("cannot run", program);
    return 127;
}
