/* common.h: what every module of pulse shares.
 *
 * - CHECK(cond): an always-on assertion for broken invariants (a bug): prints
 *   file:line and aborts. Never used for bad input.
 * - die_input(path, fmt, ...): bad input is the user's, not a bug: one line
 *   "pulse: PATH: reason" on stderr (control bytes escaped) and exit status 2.
 * - xmalloc/xcalloc/xrealloc/xstrdup: allocation that cannot return NULL.
 * - Text: a growable byte string, always NUL-terminated; every output (JSON,
 *   safetensors headers, PNGs, the report) is built in one and written in one piece.
 * - Rng: a small deterministic generator (splitmix64 seeding + xoshiro256**),
 *   so that the same seed gives the same bytes on every machine.
 * - now_seconds(): a monotonic clock for timings and benches.
 * - Arg: a tiny flag parser shared by every command.
 */
#ifndef PULSE_COMMON_H
#define PULSE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CHECK(cond) do { if (!(cond)) check_failed(__FILE__, __LINE__, #cond); } while (0)
#define CHECKF(cond, ...) do { if (!(cond)) check_failedf(__FILE__, __LINE__, __VA_ARGS__); } while (0)

/* Prints "pulse: internal error at FILE:LINE: EXPR" and aborts. */
_Noreturn void check_failed(const char *file, int line, const char *expr);
/* Same with a printf-style message. */
_Noreturn void check_failedf(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prints "pulse: PATH: reason" (or "pulse: reason" when path is NULL), removes any
 * registered temporary files, and exits with status 2. */
_Noreturn void die_input(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* From now on die_input exits 2 without its line: `pulse run`'s pool copies, whose
 * driver redoes every unit a copy leaves and so meets the same input and says it once. */
void die_input_silent(void);
/* Like die_input but for failures that are not the user's input (I/O errors, a
 * diverged run): exit status 1. */
_Noreturn void die_internal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Temporary files to delete if the program dies before renaming them (atomic writes). */
void tmpfile_register(const char *path);
void tmpfile_unregister(const char *path);

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* malloc'ed printf. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ----------------------------------------------------------------------------
 * A growable byte string. Start from (Text){0}; p stays NUL-terminated after every append,
 * so text users read it as a C string (binary users go by n). Doubling: appends are
 * amortised O(1). */
typedef struct Text {
    char *p;                    /* the bytes (NULL until something is written) */
    size_t n, cap;              /* length, allocated bytes */
} Text;
void text_reserve(Text *t, size_t extra);        /* room for `extra` more bytes and the NUL;
                                                    t->p is then a string, "" if empty */
void text_putn(Text *t, const void *s, size_t n);
void text_putc(Text *t, char c);
void text_puts(Text *t, const char *s);
void text_printf(Text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void text_free(Text *t);
const char *text_str(const Text *t);             /* the text ("" when empty); owned by t */

/* ----------------------------------------------------------------------------
 * Deterministic random numbers */
typedef struct Rng {
    uint64_t s[4];          /* xoshiro256** state */
} Rng;

void rng_seed(Rng *r, uint64_t seed);            /* splitmix64 expansion of seed */
uint64_t rng_u64(Rng *r);
uint32_t rng_below(Rng *r, uint32_t n);          /* uniform in [0, n), n > 0, unbiased */
double rng_uniform(Rng *r);                      /* uniform in [0, 1), 53 bits */
float rng_normal(Rng *r);                        /* standard normal (Box-Muller, double inside) */
void rng_shuffle_int(Rng *r, int *a, int n);     /* Fisher-Yates */
/* A new independent stream derived from (seed, tag): same inputs, same stream. */
void rng_derive(Rng *r, uint64_t seed, const char *tag);
/* 64-bit FNV-1a, for fingerprints and derived seeds. */
uint64_t hash64(const void *data, size_t n, uint64_t h);
#define HASH64_INIT 0xcbf29ce484222325ULL

double now_seconds(void);

/* ----------------------------------------------------------------------------
 * Command-line flags: "--name value" and "--flag". Unknown flags, missing values and
 * malformed numbers are usage errors (exit 2) that name the flag. */
typedef struct Args {
    int argc;
    char **argv;
    const char *cmd;        /* command name for messages, e.g. "eval" */
    unsigned char *used;    /* argv[i] consumed? */
} Args;

void args_init(Args *a, const char *cmd, int argc, char **argv); /* argv[0] = first arg after the command */
const char *args_str(Args *a, const char *name, const char *def); /* --name VALUE */
/* The largest seed a JSON number (config.json, world.json) holds exactly: 2^53 - 1. */
#define SEED_MAX 9007199254740991L
long args_long(Args *a, const char *name, long def, long lo, long hi);
double args_double(Args *a, const char *name, double def, double lo, double hi);
int args_flag(Args *a, const char *name);       /* --name present? */
int args_help(Args *a);                          /* --help or -h present? */
/* Remaining positional arguments (not starting with "--"), in order; count in *n. */
char **args_positional(Args *a, int *n);
/* Fails with a usage error if any argument was not consumed. Call after all lookups. */
void args_done(Args *a);
void args_free(Args *a);

/* Progress: a bar on stderr when it is a terminal, plain lines (at most every 5 s) otherwise. */
typedef struct Progress {
    const char *label;
    long total, done;
    double t0, last;
    int tty;
} Progress;
void progress_start(Progress *p, const char *label, long total);
void progress_update(Progress *p, long done, const char *extra); /* extra: e.g. "loss 1.234" or NULL */
void progress_end(Progress *p, const char *extra);

#endif
