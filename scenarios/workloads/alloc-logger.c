/*
 * alloc-logger: an LD_PRELOAD allocation logger for scenarios/workloads/capture.ts.
 *
 * It interposes malloc, calloc, realloc, free, posix_memalign, memalign and aligned_alloc,
 * forwards each call to glibc's own implementation (__libc_malloc and friends, so no dlsym
 * and no recursion through the dynamic loader) and appends one line per call to the file
 * named by NL_ALLOC_LOG:
 *
 *     <epoch seconds>.<microseconds> <tid> malloc <size> <ret>
 *     ... calloc <n> <size> <ret> | realloc <old> <size> <ret> | free <ptr>
 *     ... memalign <align> <size> <ret>
 *
 * Why so careful: the logger runs inside malloc, so it must not allocate. Lines are
 * formatted by hand into a stack buffer and written with one write(2) on an O_APPEND
 * descriptor (atomic for a short line, so threads and forked children interleave whole
 * lines). Allocations smaller than NL_ALLOC_MIN bytes are not logged, and neither is the
 * free of a pointer the logger never logged (a fixed-size open-addressing set remembers
 * the logged ones), which keeps the log of a busy program to what a registration cache
 * would ever see.
 *
 * Build: cc -shared -fPIC -O2 -o alloc-logger.so alloc-logger.c   (capture.ts does this)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static int log_fd = -2;
static size_t min_size = 0;
static __thread int inside = 0;

#define SET_SLOTS (1u << 20)
static uintptr_t logged[SET_SLOTS];
static volatile int set_lock = 0;
#define TOMBSTONE ((uintptr_t)1)

static unsigned slot_of(uintptr_t p) { return (unsigned)((p >> 4) * 2654435761u) & (SET_SLOTS - 1); }

static void set_add(uintptr_t p) {
  while (__sync_lock_test_and_set(&set_lock, 1)) {}
  unsigned i = slot_of(p);
  for (unsigned n = 0; n < SET_SLOTS; n++, i = (i + 1) & (SET_SLOTS - 1)) {
    if (logged[i] == 0 || logged[i] == TOMBSTONE || logged[i] == p) { logged[i] = p; break; }
  }
  __sync_lock_release(&set_lock);
}

/* Remove p; whether it was there. */
static int set_take(uintptr_t p) {
  int found = 0;
  while (__sync_lock_test_and_set(&set_lock, 1)) {}
  unsigned i = slot_of(p);
  for (unsigned n = 0; n < SET_SLOTS; n++, i = (i + 1) & (SET_SLOTS - 1)) {
    if (logged[i] == 0) break;
    if (logged[i] == p) { logged[i] = TOMBSTONE; found = 1; break; }
  }
  __sync_lock_release(&set_lock);
  return found;
}

static int open_log(void) {
  if (log_fd != -2) return log_fd;
  const char *path = getenv("NL_ALLOC_LOG");
  const char *min = getenv("NL_ALLOC_MIN");
  if (min) {
    size_t v = 0;
    for (const char *c = min; *c >= '0' && *c <= '9'; c++) v = v * 10 + (size_t)(*c - '0');
    min_size = v;
  }
  log_fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
  return log_fd;
}

static char *put_dec(char *o, uint64_t v) {
  char tmp[24];
  int n = 0;
  do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  while (n) *o++ = tmp[--n];
  return o;
}

static char *put_hex(char *o, uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  char tmp[20];
  int n = 0;
  do { tmp[n++] = digits[v & 15]; v >>= 4; } while (v);
  *o++ = '0';
  *o++ = 'x';
  while (n) *o++ = tmp[--n];
  return o;
}

static char *put_str(char *o, const char *s) {
  while (*s) *o++ = *s++;
  return o;
}

/* One line: time, tid, op, then up to three numbers (hex when the bit in `hexmask` is set). */
static void emit(const char *op, int count, uint64_t a, uint64_t b, uint64_t c, unsigned hexmask) {
  int saved = errno;
  if (open_log() < 0) { errno = saved; return; }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  char line[160];
  char *o = line;
  o = put_dec(o, (uint64_t)ts.tv_sec);
  *o++ = '.';
  uint64_t us = (uint64_t)ts.tv_nsec / 1000;
  for (uint64_t d = 100000; d; d /= 10) *o++ = (char)('0' + (us / d) % 10);
  *o++ = ' ';
  o = put_dec(o, (uint64_t)syscall(SYS_gettid));
  *o++ = ' ';
  o = put_str(o, op);
  uint64_t v[3] = {a, b, c};
  for (int i = 0; i < count; i++) {
    *o++ = ' ';
    o = (hexmask >> i) & 1 ? put_hex(o, v[i]) : put_dec(o, v[i]);
  }
  *o++ = '\n';
  ssize_t w = write(log_fd, line, (size_t)(o - line));
  (void)w;
  errno = saved;
}

static int want(size_t size) {
  open_log();
  return !inside && log_fd >= 0 && size >= min_size;
}

void *malloc(size_t size) {
  void *p = __libc_malloc(size);
  if (p && want(size)) {
    inside = 1;
    set_add((uintptr_t)p);
    emit("malloc", 2, size, (uintptr_t)p, 0, 2);
    inside = 0;
  }
  return p;
}

void *calloc(size_t n, size_t size) {
  void *p = __libc_calloc(n, size);
  if (p && want(n * size)) {
    inside = 1;
    set_add((uintptr_t)p);
    emit("calloc", 3, n, size, (uintptr_t)p, 4);
    inside = 0;
  }
  return p;
}

void *realloc(void *old, size_t size) {
  void *p = __libc_realloc(old, size);
  if (inside || log_fd == -1) return p;
  int had = old && set_take((uintptr_t)old);
  if (had || (p && want(size))) {
    inside = 1;
    if (p && size >= min_size) set_add((uintptr_t)p);
    emit("realloc", 3, (uintptr_t)old, size, (uintptr_t)p, 5);
    inside = 0;
  }
  return p;
}

void free(void *p) {
  if (p && !inside && log_fd >= 0 && set_take((uintptr_t)p)) {
    inside = 1;
    emit("free", 1, (uintptr_t)p, 0, 0, 1);
    inside = 0;
  }
  __libc_free(p);
}

static void *aligned(const char *op, size_t align, size_t size) {
  void *p = __libc_memalign(align, size);
  if (p && want(size)) {
    inside = 1;
    set_add((uintptr_t)p);
    emit(op, 3, align, size, (uintptr_t)p, 4);
    inside = 0;
  }
  return p;
}

int posix_memalign(void **out, size_t align, size_t size) {
  if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
  void *p = aligned("memalign", align, size);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

void *memalign(size_t align, size_t size) { return aligned("memalign", align, size); }
void *aligned_alloc(size_t align, size_t size) { return aligned("memalign", align, size); }
