/* common.c: checks, exits, allocation, the deterministic RNG, clock, flag parsing and
 * progress reporting shared by every module (see common.h). */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ----------------------------------------------------------------------------
 * Failures */

#define MAX_TMPFILES 64
static char *tmpfiles[MAX_TMPFILES];

void tmpfile_register(const char *path) {
    for (int i = 0; i < MAX_TMPFILES; i++)
        if (!tmpfiles[i]) { tmpfiles[i] = xstrdup(path); return; }
}

void tmpfile_unregister(const char *path) {
    for (int i = 0; i < MAX_TMPFILES; i++)
        if (tmpfiles[i] && strcmp(tmpfiles[i], path) == 0) { free(tmpfiles[i]); tmpfiles[i] = NULL; }
}

static void remove_tmpfiles(void) {
    for (int i = 0; i < MAX_TMPFILES; i++)
        if (tmpfiles[i]) { remove(tmpfiles[i]); free(tmpfiles[i]); tmpfiles[i] = NULL; }
}

_Noreturn void check_failed(const char *file, int line, const char *expr) {
    fflush(stdout);
    fprintf(stderr, "pulse: internal error at %s:%d: CHECK(%s) failed\n", file, line, expr);
    remove_tmpfiles();
    abort();
}

_Noreturn void check_failedf(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "pulse: internal error at %s:%d: ", file, line);
    va_start(ap, fmt); vfprintf(stderr, fmt, ap); va_end(ap);
    fputc('\n', stderr);
    remove_tmpfiles();
    abort();
}

static int input_silent;

void die_input_silent(void) { input_silent = 1; }

/* Writes s with its control bytes escaped (\n, \r, \t, \xHH), so that a path or a value
 * quoted from the input cannot break the one line of an error. */
static void put_escaped(const char *s) {
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\n') fputs("\\n", stderr);
        else if (ch == '\r') fputs("\\r", stderr);
        else if (ch == '\t') fputs("\\t", stderr);
        else if (ch < 0x20 || ch == 0x7f) fprintf(stderr, "\\x%02x", ch);
        else fputc(ch, stderr);
    }
}

/* "pulse: [PATH: ]message\n", the message formatted into a bounded buffer (no allocation
 * on the way out; a longer one is cut and ends in "..."). */
static void put_error(const char *path, const char *fmt, va_list ap) {
    char msg[4096];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n >= (int)sizeof msg) memcpy(msg + sizeof msg - 4, "...", 4);
    fflush(stdout);
    fputs("pulse: ", stderr);
    if (path) {
        put_escaped(path);
        fputs(": ", stderr);
    }
    put_escaped(msg);
    fputc('\n', stderr);
}

_Noreturn void die_input(const char *path, const char *fmt, ...) {
    if (!input_silent) {
        va_list ap;
        va_start(ap, fmt); put_error(path, fmt, ap); va_end(ap);
    }
    remove_tmpfiles();
    exit(2);
}

_Noreturn void die_internal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt); put_error(NULL, fmt, ap); va_end(ap);
    remove_tmpfiles();
    exit(1);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die_internal("out of memory (%zu bytes)", n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) die_internal("out of memory (%zu x %zu bytes)", count, size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die_internal("out of memory (%zu bytes)", n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *xasprintf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    CHECK(n >= 0);
    char *s = xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

/* ----------------------------------------------------------------------------
 * Text */

void text_reserve(Text *t, size_t extra) {
    if (t->n + extra + 1 <= t->cap) return;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->n + extra + 1) cap *= 2;
    t->p = xrealloc(t->p, cap);
    t->cap = cap;
    t->p[t->n] = 0;             /* a fresh buffer is a string at once ("" when empty) */
}

void text_putn(Text *t, const void *s, size_t n) {
    text_reserve(t, n);
    if (n) memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = 0;
}

void text_putc(Text *t, char c) { text_putn(t, &c, 1); }

void text_puts(Text *t, const char *s) { text_putn(t, s, strlen(s)); }

/* Two passes of vsnprintf: measure, then write in place (no fixed-size buffer). */
void text_printf(Text *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    CHECK(k >= 0);
    text_reserve(t, (size_t)k);
    va_start(ap, fmt);
    vsnprintf(t->p + t->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    t->n += (size_t)k;
}

void text_free(Text *t) { free(t->p); t->p = NULL; t->n = t->cap = 0; }

const char *text_str(const Text *t) { return t->p ? t->p : ""; }

/* ----------------------------------------------------------------------------
 * RNG: xoshiro256** seeded by splitmix64 (public-domain algorithms by Vigna). */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t rng_below(Rng *r, uint32_t n) {
    CHECK(n > 0);
    /* rejection sampling: unbiased */
    uint64_t limit = (UINT64_MAX / n) * n;
    uint64_t x;
    do x = rng_u64(r); while (x >= limit);
    return (uint32_t)(x % n);
}

double rng_uniform(Rng *r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

float rng_normal(Rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void rng_shuffle_int(Rng *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint32_t)i + 1);
        int t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

uint64_t hash64(const void *data, size_t n, uint64_t h) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}

void rng_derive(Rng *r, uint64_t seed, const char *tag) {
    uint64_t h = hash64(&seed, sizeof seed, HASH64_INIT);
    h = hash64(tag, strlen(tag), h);
    rng_seed(r, h);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ----------------------------------------------------------------------------
 * Flags */

void args_init(Args *a, const char *cmd, int argc, char **argv) {
    a->argc = argc; a->argv = argv; a->cmd = cmd;
    a->used = xcalloc((size_t)argc + 1, 1);
}

static int args_find(Args *a, const char *name) {
    for (int i = 0; i < a->argc; i++) {
        if (a->used[i]) continue;
        const char *s = a->argv[i];
        if (s[0] == '-' && s[1] == '-' && strcmp(s + 2, name) == 0) return i;
    }
    return -1;
}

const char *args_str(Args *a, const char *name, const char *def) {
    int i = args_find(a, name);
    if (i < 0) return def;
    if (i + 1 >= a->argc) die_input(NULL, "%s: --%s needs a value (see pulse %s --help)", a->cmd, name, a->cmd);
    /* an empty value is never meant (an empty --out would put a run's files at the
     * root: "" + "/data") */
    if (a->argv[i + 1][0] == '\0') die_input(NULL, "%s: --%s: empty value", a->cmd, name);
    a->used[i] = a->used[i + 1] = 1;
    return a->argv[i + 1];
}

long args_long(Args *a, const char *name, long def, long lo, long hi) {
    const char *s = args_str(a, name, NULL);
    if (!s) return def;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0') die_input(NULL, "%s: --%s: '%s' is not an integer", a->cmd, name, s);
    if (errno == ERANGE || v < lo || v > hi) die_input(NULL, "%s: --%s: %s is outside [%ld, %ld]", a->cmd, name, s, lo, hi);
    return v;
}

double args_double(Args *a, const char *name, double def, double lo, double hi) {
    const char *s = args_str(a, name, NULL);
    if (!s) return def;
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !isfinite(v)) die_input(NULL, "%s: --%s: '%s' is not a number", a->cmd, name, s);
    if (v < lo || v > hi) die_input(NULL, "%s: --%s: %g is outside [%g, %g]", a->cmd, name, v, lo, hi);
    return v;
}

int args_flag(Args *a, const char *name) {
    int i = args_find(a, name);
    if (i < 0) return 0;
    a->used[i] = 1;
    return 1;
}

int args_help(Args *a) {
    for (int i = 0; i < a->argc; i++)
        if (strcmp(a->argv[i], "--help") == 0 || strcmp(a->argv[i], "-h") == 0) return 1;
    return 0;
}

char **args_positional(Args *a, int *n) {
    char **out = xcalloc((size_t)a->argc + 1, sizeof *out);
    int k = 0;
    for (int i = 0; i < a->argc; i++) {
        if (a->used[i]) continue;
        if (a->argv[i][0] == '-' && a->argv[i][1] == '-') continue;
        a->used[i] = 1;
        out[k++] = a->argv[i];
    }
    *n = k;
    return out;
}

/* A flag left over after parsing is either unknown or a repeat of one already read. */
void args_done(Args *a) {
    for (int i = 0; i < a->argc; i++) {
        if (a->used[i]) continue;
        const char *s = a->argv[i];
        for (int j = 0; j < i && s[0] == '-' && s[1] == '-'; j++)
            if (a->used[j] && strcmp(a->argv[j], s) == 0)
                die_input(NULL, "%s: %s given more than once (see pulse %s --help)", a->cmd, s, a->cmd);
        die_input(NULL, "%s: unexpected argument '%s' (see pulse %s --help)", a->cmd, s, a->cmd);
    }
}

void args_free(Args *a) { free(a->used); a->used = NULL; }

/* ----------------------------------------------------------------------------
 * Progress */

void progress_start(Progress *p, const char *label, long total) {
    p->label = label; p->total = total; p->done = 0;
    p->t0 = p->last = now_seconds();
    p->tty = isatty(2);
}

void progress_update(Progress *p, long done, const char *extra) {
    double t = now_seconds();
    p->done = done;
    if (p->tty) {
        if (t - p->last < 0.1 && done < p->total) return;
        int width = 30, fill = p->total > 0 ? (int)(width * done / p->total) : 0;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r%s [%s] %ld/%ld %.0fs %s\033[K", p->label, bar, done, p->total, t - p->t0, extra ? extra : "");
    } else {
        if (t - p->last < 5.0) return;
        fprintf(stderr, "%s: %ld/%ld %.0fs %s\n", p->label, done, p->total, t - p->t0, extra ? extra : "");
    }
    p->last = t;
}

void progress_end(Progress *p, const char *extra) {
    double t = now_seconds();
    if (p->tty) fprintf(stderr, "\r\033[K");
    fprintf(stderr, "%s: %ld/%ld done in %.1fs %s\n", p->label, p->done, p->total, t - p->t0, extra ? extra : "");
}
