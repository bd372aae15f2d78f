/* tests/test_io.c: JSON, atomic writes, safetensors, PNG/PPM (see io.h).
 *
 * Readers refuse bad input by exiting (die_input), so every refusal runs in a child
 * process (fork + waitpid): the parent checks exit status 2 and that stderr is exactly
 * one line starting "pulse: PATH:". The same machinery fuzzes the readers with random
 * truncations and bit flips: any exit other than 0 (accepted) or 2 (refused) -- a crash,
 * an abort, a sanitizer report -- is a failure.
 *
 * `test_io --write-bad DIR` writes every malformed safetensors/image case into DIR, so
 * the end-to-end tests (tests/e2e_badinput.sh) hold `pulse inspect` to them too.
 */
#include <dirent.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "io.h"
#include "checkpoint.h"
#include "tests/test.h"

static char tmpdir[256];

static char *tpath(const char *name) { return xasprintf("%s/%s", tmpdir, name); }

static void write_raw(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}


/* ----------------------------------------------------------------------------
 * Child processes: run a reader, collect its exit status and stderr. */

typedef void (*Reader)(const char *path);

static void read_st(const char *path) { StFile f; st_read(path, &f); st_free(&f); }
static void read_image(const char *path) { Image im; image_read(path, &im); image_free(&im); }
static void read_json(const char *path) { json_free(json_load(path)); }

/* Returns the exit status, or 256 + signal number if the child was killed. */
static int run_child(Reader fn, const char *path, char *err, size_t errlen) {
    char *errfile = tpath("child.stderr");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(99);
        dup2(fd, 2);
        close(fd);
        fn(path);
        _exit(0);                 /* accepted: skip atexit work, the parent judges */
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    size_t n = 0;
    err[0] = 0;
    FILE *f = fopen(errfile, "rb");
    if (f) { n = fread(err, 1, errlen - 1, f); fclose(f); }
    err[n] = 0;
    free(errfile);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 256 + WTERMSIG(st);
}

/* stderr must be exactly one line "pulse: PATH: reason\n". */
static int one_line_naming(const char *err, const char *path) {
    char *prefix = xasprintf("pulse: %s: ", path);
    size_t n = strlen(err);
    int ok = strncmp(err, prefix, strlen(prefix)) == 0 && n > strlen(prefix) && err[n - 1] == '\n' &&
             strchr(err, '\n') == err + n - 1;
    free(prefix);
    return ok;
}

static void expect_refused(Reader fn, const char *path, const char *what) {
    char err[4096];
    int rc = run_child(fn, path, err, sizeof err);
    TEST(rc == 2, "%s: exit status %d, want 2 (stderr: %s)", what, rc, err);
    TEST(one_line_naming(err, path), "%s: stderr is not one line naming the file: '%s'", what, err);
    if (getenv("TEST_IO_VERBOSE")) printf("  %-40s %s", what, err);
}

/* ----------------------------------------------------------------------------
 * JSON */

static void test_json_numbers(void) {
    static const struct { double x; const char *s; } known[] = {
        {0, "0"}, {3, "3"}, {-7, "-7"}, {0.1, "0.1"}, {1e-5, "1e-05"}, {0.5, "0.5"}, {1.5e300, "1.5e+300"},
        {123456789012.0, "123456789012"}, {1e16, "10000000000000000"}, {1e17, "1e+17"}, {-0.0, "-0"},
        {1.0 / 3.0, "0.3333333333333333"}, {2.5e-8, "2.5e-08"}, {0.30000000000000004, "0.30000000000000004"},
    };
    char buf[40];
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        json_format_number(buf, sizeof buf, known[i].x);
        TEST(strcmp(buf, known[i].s) == 0, "format %.17g: got %s want %s", known[i].x, buf, known[i].s);
    }
    static const double edge[] = {DBL_MAX, -DBL_MAX, DBL_MIN, 4.9406564584124654e-324, DBL_EPSILON, 1e23, 9007199254740993.0, 0.1f, 1e-7f};
    int bad = 0;
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        json_format_number(buf, sizeof buf, edge[i]);
        if (memcmp(&(double){strtod(buf, NULL)}, &edge[i], 8) != 0) bad++;
    }
    /* random bit patterns: every finite double must print and parse back bit-exactly */
    Rng r;
    rng_seed(&r, 42);
    int tested = 0;
    while (tested < 20000) {
        uint64_t bits = rng_u64(&r);
        double x;
        memcpy(&x, &bits, 8);
        if (!isfinite(x)) continue;
        if (tested % 2) x = (double)(float)x;     /* float-valued doubles are common in practice */
        if (!isfinite(x)) continue;
        tested++;
        json_format_number(buf, sizeof buf, x);
        char err[200];
        Json *j = json_parse(buf, strlen(buf), err, sizeof err);
        if (!j || j->type != JSON_NUMBER || memcmp(&j->number, &x, 8) != 0) bad++;
        json_free(j);
    }
    TEST(bad == 0, "%d numbers did not round-trip", bad);
    json_format_number(buf, sizeof buf, NAN);
    TEST(strcmp(buf, "null") == 0, "NaN prints as null, got %s", buf);
}

static void test_json_strings(void) {
    const char *src = "\"a\\u00e9\\ud83d\\ude00\\n\\t\\\"\\\\\\/\\b\\f\\r\\u0000z\xc3\xa9\"";
    char err[200];
    Json *j = json_parse(src, strlen(src), err, sizeof err);
    TEST(j && j->type == JSON_STRING, "escapes parse: %s", err);
    if (!j) return;
    const char want[] = "a\xc3\xa9\xf0\x9f\x98\x80\n\t\"\\/\b\f\r\0z\xc3\xa9";
    TEST(j->len == sizeof want - 1 && memcmp(j->string, want, j->len) == 0, "decoded bytes (len %zu)", j->len);
    char *d = json_dump(j, 0);
    TEST(strcmp(d, "\"a\xc3\xa9\xf0\x9f\x98\x80\\n\\t\\\"\\\\/\\b\\f\\r\\u0000z\xc3\xa9\"") == 0, "escaped output: %s", d);
    Json *k = json_parse(d, strlen(d), err, sizeof err);
    TEST(k && k->len == j->len && memcmp(k->string, j->string, j->len) == 0, "string round-trip");
    json_free(j); json_free(k); free(d);
    /* control characters use \u00XX, invalid UTF-8 becomes U+FFFD on output */
    Json *s = json_new_stringn("\x01\x1f\xff" "a", 4);
    d = json_dump(s, 0);
    TEST(strcmp(d, "\"\\u0001\\u001f\xef\xbf\xbd" "a\"") == 0, "control/invalid output: %s", d);
    free(d); json_free(s);
}

static const char *nested_doc =
    "{\"name\": \"pulse\", \"n\": [1, 2.5, -3e-07, {\"deep\": [[], {}, [null, true, false]]}],"
    " \"empty\": \"\", \"obj\": {\"a\": {\"b\": {\"c\": \"\\u00e9\"}}}, \"big\": 123456789012345}";

static void test_json_nested(void) {
    char err[200];
    Json *j = json_parse(nested_doc, strlen(nested_doc), err, sizeof err);
    TEST(j != NULL, "nested parse: %s", err);
    if (!j) return;
    TEST(strcmp(json_get_string(j, "name", NULL, "t"), "pulse") == 0, "get_string");
    TEST(json_get_number(j, "big", 0, "t") == 123456789012345.0, "get_number");
    TEST(json_get_number(j, "absent", 7, "t") == 7, "default number");
    TEST(json_get_int(j, "big", 0, 0, 1L << 50, "t") == 123456789012345L, "get_int");
    const Json *n = json_get(j, "n");
    TEST(n && n->type == JSON_ARRAY && n->len == 4 && n->items[2]->number == -3e-7, "array items");
    for (int indent = 0; indent <= 4; indent += 2) {
        char *a = json_dump(j, indent);
        Json *k = json_parse(a, strlen(a), err, sizeof err);
        char *b = k ? json_dump(k, indent) : NULL;
        TEST(b && strcmp(a, b) == 0, "dump -> parse -> dump identical (indent %d)", indent);
        free(a); free(b); json_free(k);
    }
    char *c = json_dump(j, 0);
    TEST(strcmp(c, "{\"name\":\"pulse\",\"n\":[1,2.5,-3e-07,{\"deep\":[[],{},[null,true,false]]}],\"empty\":\"\","
                   "\"obj\":{\"a\":{\"b\":{\"c\":\"\xc3\xa9\"}}},\"big\":123456789012345}") == 0, "compact form: %s", c);
    free(c);
    Json *small = json_new_object();
    json_set(small, "a", json_new_number(1));
    json_set(small, "b", json_new_array());
    json_push(json_get(small, "b"), json_new_string("x"));
    json_set(small, "a", json_new_bool(1));          /* replaces */
    char *p = json_dump(small, 2);
    TEST(strcmp(p, "{\n  \"a\": true,\n  \"b\": [\n    \"x\"\n  ]\n}") == 0, "pretty form: %s", p);
    free(p); json_free(small); json_free(j);
}

static void test_json_errors(void) {
    static const char *bad[] = {
        "", " ", "{", "[", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "+1", "1e", "-", "--1", "\"\\x\"",
        "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\u12\"", "tru", "nul", "falsey", "{\"a\" 1}",
        "[1 2]", "\"abc", "\"a\x01\"", "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
        "\"\xe2\x82\"", "1e999", "-1e400", "{\"a\":1,\"a\":2}", "1 2", "NaN", "Infinity", "{1:2}", "[1]]",
        "{\"a\\u0000\":1}", "\xef\xbb\xbf{}", "/* c */ 1", "'a'",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[200] = "";
        Json *j = json_parse(bad[i], strlen(bad[i]), err, sizeof err);
        TEST(j == NULL && strncmp(err, "line ", 5) == 0, "bad JSON #%zu accepted or no reason: '%s'", i, err);
        json_free(j);
    }
    /* duplicate detection in a large object goes through the sort path */
    char big[4000];
    size_t k = 0;
    k += (size_t)snprintf(big + k, sizeof big - k, "{");
    for (int i = 0; i < 100; i++) k += (size_t)snprintf(big + k, sizeof big - k, "\"k%d\":%d,", i % 99, i);
    big[k - 1] = '}';
    char err[200];
    TEST(json_parse(big, k, err, sizeof err) == NULL && strstr(err, "duplicate"), "duplicate key in a large object: %s", err);
    /* nesting depth limit instead of a stack overflow */
    size_t depth = 100000;
    char *deep = xmalloc(depth);
    memset(deep, '[', depth);
    TEST(json_parse(deep, depth, err, sizeof err) == NULL && strstr(err, "deeper"), "deep nesting refused: %s", err);
    free(deep);
    /* the text need not be NUL-terminated: a number at the very end of the buffer */
    char num[3] = {'4', '2', '7'};
    Json *j = json_parse(num, 2, err, sizeof err);
    TEST(j && j->number == 42, "unterminated buffer");
    json_free(j);
    /* error position */
    json_parse("{\n  \"a\": x}", 11, err, sizeof err);
    TEST(strncmp(err, "line 2 col 8", 12) == 0, "line:col in the reason: %s", err);
}

static void test_json_fuzz(void) {
    /* random mutations: the parser must never crash, and what it accepts must re-dump */
    Rng r;
    rng_seed(&r, 7);
    size_t n = strlen(nested_doc);
    char *m = xmalloc(n + 1);
    int accepted = 0, bad = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(m, nested_doc, n);
        size_t len = n;
        int flips = 1 + (int)rng_below(&r, 3);
        for (int f = 0; f < flips; f++) m[rng_below(&r, (uint32_t)n)] ^= (char)(1 << rng_below(&r, 8));
        if (rng_below(&r, 2)) len = rng_below(&r, (uint32_t)n + 1);
        char err[200];
        Json *j = json_parse(m, len, err, sizeof err);
        if (j) {
            accepted++;
            char *d = json_dump(j, 0);
            Json *k = json_parse(d, strlen(d), err, sizeof err);
            if (!k) bad++;
            json_free(k); free(d);
        }
        json_free(j);
    }
    free(m);
    TEST(bad == 0, "%d accepted mutants did not re-parse after dump", bad);
    TEST(accepted > 0 && accepted < 3000, "fuzz mix (%d accepted)", accepted);
}

static void test_json_files(void) {
    char *p = tpath("doc.json");
    Json *j = json_parse(nested_doc, strlen(nested_doc), NULL, 0);
    json_save(p, j);
    size_t n;
    char *text = read_file(p, &n);
    TEST(n > 0 && text[n - 1] == '\n', "json_save ends with a newline");
    Json *k = json_load(p);
    char *a = json_dump(j, 0), *b = json_dump(k, 0);
    TEST(strcmp(a, b) == 0, "json_save -> json_load");
    char *tmp = xasprintf("%s.tmp", p);
    TEST(!file_exists(tmp), "no .tmp left behind");
    free(a); free(b); free(text); free(tmp); json_free(j); json_free(k);
    write_raw(p, "{\"a\": [1, 2,]}", 14);
    expect_refused(read_json, p, "bad JSON file");
    char *missing = tpath("missing.json");
    expect_refused(read_json, missing, "missing JSON file");
    free(missing);
    free(p);
}

/* ----------------------------------------------------------------------------
 * Files */

static void die_with_open_tmp(const char *path) {
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    fputs("half", f);
    fflush(f);
    die_input(path, "simulated failure while writing");
}

static void test_files(void) {
    char *d = tpath("a/b/c");
    make_dirs(d);
    TEST(dir_exists(d), "make_dirs nested");
    make_dirs(d);                    /* again: no error */
    char *f = xasprintf("%s/x.bin", d);
    unsigned char data[1000];
    for (int i = 0; i < 1000; i++) data[i] = (unsigned char)(i * 7);
    write_file_atomic(f, data, sizeof data);
    size_t n;
    char *back = read_file(f, &n);
    TEST(n == sizeof data && memcmp(back, data, n) == 0, "write_file_atomic -> read_file");
    TEST(back[n] == 0, "read_file NUL-terminates");
    TEST(file_exists(f) && !dir_exists(f), "file_exists / dir_exists");
    free(back);
    /* a write interrupted by die_input: the old file stays, the .tmp is removed */
    char err[4096];
    int rc = run_child(die_with_open_tmp, f, err, sizeof err);
    char *tmp = xasprintf("%s.tmp", f);
    back = read_file(f, &n);
    TEST(rc == 2 && !file_exists(tmp) && n == sizeof data, "interrupted atomic write leaves the old file and no .tmp");
    free(back); free(tmp);
    expect_refused(read_st, d, "a directory as a file");
    free(f); free(d);
}

/* ----------------------------------------------------------------------------
 * safetensors */

/* The reference crate's own serialization tests (safetensors/src/tensor.rs). */
static void test_st_reference_bytes(void) {
    static const unsigned char ser[] = {
        64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
        116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
        58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
        101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
        0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64};
    static const unsigned char aligned[] = {
        72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116,
        121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58,
        91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102,
        115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32,
        32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
        160, 64};
    static const unsigned char empty[] = {8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32};
    static const unsigned char empty_meta[] = {
        40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
        95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
        116, 34, 125, 125, 32, 32, 32, 32, 32};
    float v[6] = {0, 1, 2, 3, 4, 5};
    char *p = tpath("ref.safetensors");
    size_t n;
    char *got;

    StTensor t = {.name = "attn.0", .ndim = 3, .shape = {1, 2, 3}, .data = v};
    st_write(p, &t, 1, NULL);
    got = read_file(p, &n);
    TEST(n == sizeof ser && memcmp(got, ser, n) == 0, "byte-identical to the crate's test_serialization");
    free(got);

    t = (StTensor){.name = "attn0", .ndim = 4, .shape = {1, 1, 2, 3}, .data = v};
    st_write(p, &t, 1, NULL);
    got = read_file(p, &n);
    TEST(n == sizeof aligned && memcmp(got, aligned, n) == 0, "byte-identical to test_serialization_forced_alignement");
    free(got);
    StFile f;
    st_read(p, &f);
    TEST(f.n == 1 && strcmp(f.t[0].name, "attn0") == 0 && f.t[0].ndim == 4 && f.t[0].shape[3] == 3 &&
         memcmp(f.t[0].data, v, sizeof v) == 0 && strcmp(f.t[0].dtype, "F32") == 0, "reads the crate's bytes back");
    st_free(&f);

    st_write(p, NULL, 0, NULL);
    got = read_file(p, &n);
    TEST(n == sizeof empty && memcmp(got, empty, n) == 0, "byte-identical to test_empty");
    free(got);
    Json *meta = json_new_object();
    json_set(meta, "framework", json_new_string("pt"));
    st_write(p, NULL, 0, meta);
    got = read_file(p, &n);
    TEST(n == sizeof empty_meta && memcmp(got, empty_meta, n) == 0, "byte-identical to test_empty with metadata");
    free(got);
    st_read(p, &f);
    TEST(f.n == 0 && f.metadata && strcmp(json_get_string(f.metadata, "framework", "", p), "pt") == 0, "metadata read back");
    st_free(&f);
    json_free(meta);
    free(p);
}

static void test_st_roundtrip(void) {
    Rng r;
    rng_seed(&r, 3);
    float a[4 * 5], b[7], scalar = 2.5f, c[3 * 1 * 2 * 2];
    for (int i = 0; i < 20; i++) a[i] = rng_normal(&r);
    for (int i = 0; i < 7; i++) b[i] = (float)i - 3;
    for (int i = 0; i < 12; i++) c[i] = rng_normal(&r) * 1e-30f;
    StTensor t[5] = {
        {.name = "language_model.model.embed_tokens.weight", .ndim = 2, .shape = {4, 5}, .data = a},
        {.name = "b \"quoted\" \\ name", .ndim = 1, .shape = {7}, .data = b},
        {.name = "scalar", .ndim = 0, .data = &scalar},
        {.name = "empty", .ndim = 2, .shape = {0, 3}, .data = NULL},
        {.name = "c", .ndim = 4, .shape = {3, 1, 2, 2}, .data = c},
    };
    Json *meta = json_new_object();
    json_set(meta, "format", json_new_string("pt"));
    json_set(meta, "pulse.config", json_new_string("{\"dim\": 8}"));
    char *p1 = tpath("rt1.safetensors"), *p2 = tpath("rt2.safetensors");
    st_write(p1, t, 5, meta);
    StFile f;
    st_read(p1, &f);
    int ok = f.n == 5;
    for (int i = 0; ok && i < 5; i++) {
        ok = strcmp(f.t[i].name, t[i].name) == 0 && f.t[i].ndim == t[i].ndim;
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) { ok = ok && f.t[i].shape[d] == t[i].shape[d]; numel *= (size_t)t[i].shape[d]; }
        ok = ok && (numel == 0 || memcmp(f.t[i].data, t[i].data, numel * 4) == 0);
    }
    TEST(ok, "save -> load: names, shapes, bits, order");
    TEST(st_find(&f, "c") == &f.t[4] && st_find(&f, "nope") == NULL, "st_find");
    st_write(p2, f.t, f.n, f.metadata);
    size_t n1, n2;
    char *x1 = read_file(p1, &n1), *x2 = read_file(p2, &n2);
    TEST(n1 == n2 && memcmp(x1, x2, n1) == 0, "save -> load -> save byte-identical");
    uint64_t hlen = 0;
    memcpy(&hlen, x1, 8);
    TEST(hlen % 8 == 0, "header padded to a multiple of 8");
    free(x1); free(x2);
    st_free(&f);
    json_free(meta);
    free(p1); free(p2);
}

/* Writes a safetensors file from a header string and data bytes (hlen = strlen). */
static void write_st_raw(const char *path, const char *header, const void *data, size_t dn) {
    size_t hn = strlen(header);
    unsigned char *buf = xmalloc(8 + hn + dn);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(buf + 8, header, hn);
    if (dn) memcpy(buf + 8 + hn, data, dn);
    write_raw(path, buf, 8 + hn + dn);
    free(buf);
}

static void test_st_half(void) {
    /* F16: 1, -2, 0.5, 65504, smallest subnormal, -0; BF16: 1, -3, 2^-128 (subnormal) */
    const uint16_t h[6] = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000};
    const uint16_t bf[3] = {0x3F80, 0xC040, 0x0020};
    unsigned char data[18];
    memcpy(data, h, 12);
    memcpy(data + 12, bf, 6);
    char *p = tpath("half.safetensors");
    write_st_raw(p, "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                    "\"bf\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[12,18]}}", data, 18);
    StFile f;
    st_read(p, &f);
    const StTensor *th = st_find(&f, "h"), *tb = st_find(&f, "bf");
    TEST(th && tb && strcmp(th->dtype, "F16") == 0 && strcmp(tb->dtype, "BF16") == 0, "F16/BF16 found");
    if (th && tb) {
        TEST(th->data[0] == 1.0f && th->data[1] == -2.0f && th->data[2] == 0.5f && th->data[3] == 65504.0f &&
             th->data[4] == ldexpf(1.0f, -24) && th->data[5] == 0.0f && signbit(th->data[5]), "F16 -> F32 values");
        TEST(tb->data[0] == 1.0f && tb->data[1] == -3.0f && tb->data[2] == ldexpf(1.0f, -128), "BF16 -> F32 values");
    }
    /* every F16 bit pattern that is finite converts to the exact value */
    int bad = 0;
    uint16_t *all = xmalloc(65536 * 2);
    int nf = 0;
    for (int i = 0; i < 65536; i++) if (((i >> 10) & 0x1F) != 0x1F) all[nf++] = (uint16_t)i;
    char *hdr = xasprintf("{\"all\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", nf, nf * 2);
    write_st_raw(p, hdr, all, (size_t)nf * 2);
    free(hdr);
    st_free(&f);
    st_read(p, &f);
    for (int i = 0; i < nf; i++) {
        int e = (all[i] >> 10) & 0x1F, m = all[i] & 0x3FF;
        double want = (e ? ldexp(1024 + m, e - 25) : ldexp(m, -24)) * (all[i] & 0x8000 ? -1 : 1);
        if (f.t[0].data[i] != (float)want) bad++;
    }
    TEST(bad == 0, "all %d finite F16 values convert exactly (%d wrong)", nf, bad);
    st_free(&f);
    free(all);
    free(p);
}

/* Each malformed class, as a file: name, header (NULL = raw bytes), data. */
typedef struct BadSt {
    const char *name, *header;
    const char *data;
    size_t dn;
} BadSt;

static const float f_nan[2] = {1, NAN}, f_inf[2] = {-INFINITY, 0};
static const uint16_t h_inf[2] = {0x3C00, 0x7C00}, bf_nan[2] = {0x7FC0, 0};

static const BadSt bad_st[] = {
    {"st_header_not_json.safetensors", "{\"a\": oops}", "", 0},
    {"st_header_array.safetensors", "[1, 2]", "", 0},
    {"st_header_string.safetensors", "\"tensor\"", "", 0},
    {"st_header_bad_utf8.safetensors", "{\"\xff\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", "\0\0\0\0", 4},
    {"st_dtype_unknown.safetensors", "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", "\0\0\0\0\0\0\0\0", 8},
    {"st_dtype_int.safetensors", "{\"a\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "\0\0\0\0\0\0\0\0", 8},
    {"st_dtype_f64.safetensors", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", "\0\0\0\0\0\0\0\0", 8},
    {"st_dtype_missing.safetensors", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", "\0\0\0\0\0\0\0\0", 8},
    {"st_offsets_gap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", "\0\0\0\0\0\0\0\0\0\0\0\0", 12},
    {"st_offsets_not_from_0.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "\0\0\0\0\0\0\0\0", 8},
    {"st_offsets_overlap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", "\0\0\0\0\0\0\0\0\0\0\0\0", 12},
    {"st_offsets_same.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "\0\0\0\0", 4},
    {"st_offsets_reversed.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", "\0\0\0\0", 4},
    {"st_offsets_outside.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "\0\0\0\0\0\0\0\0", 8},
    {"st_offsets_huge.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", "\0\0\0\0", 4},
    {"st_offsets_fraction.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", "\0\0\0\0", 4},
    {"st_offsets_three.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", "\0\0\0\0", 4},
    {"st_trailing_bytes.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "\0\0\0\0\0", 5},
    {"st_size_mismatch.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "\0\0\0\0\0\0\0\0", 8},
    {"st_shape_overflow.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}", "", 0},
    {"st_shape_negative.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "\0\0\0\0", 4},
    {"st_shape_9d.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", "\0\0\0\0", 4},
    {"st_shape_string.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":\"[1]\",\"data_offsets\":[0,4]}}", "\0\0\0\0", 4},
    {"st_unexpected_key.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"strides\":[1]}}", "\0\0\0\0", 4},
    {"st_entry_not_object.safetensors", "{\"a\":[1]}", "", 0},
    {"st_duplicate_name.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "\0\0\0\0\0\0\0\0", 8},
    {"st_metadata_not_strings.safetensors", "{\"__metadata__\":{\"steps\":100},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "\0\0\0\0", 4},
    {"st_metadata_array.safetensors", "{\"__metadata__\":[\"x\"]}", "", 0},
    {"st_nan_f32.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", (const char *)f_nan, 8},
    {"st_inf_f32.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", (const char *)f_inf, 8},
    {"st_inf_f16.safetensors", "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", (const char *)h_inf, 4},
    {"st_nan_bf16.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", (const char *)bf_nan, 4},
};
#define N_BAD_ST (int)(sizeof bad_st / sizeof bad_st[0])

/* Files whose header length field itself is wrong, and truncations. */
static void write_bad_st_raw(const char *dir) {
    char *p;
    p = xasprintf("%s/st_empty.safetensors", dir); write_raw(p, "", 0); free(p);
    p = xasprintf("%s/st_5_bytes.safetensors", dir); write_raw(p, "\x10\0\0\0\0", 5); free(p);
    unsigned char b[40] = {0};
    b[0] = 0xE8; b[1] = 0x03;                       /* 1000 > file size */
    memcpy(b + 8, "{}", 2);
    p = xasprintf("%s/st_header_past_eof.safetensors", dir); write_raw(p, b, 40); free(p);
    memset(b, 0, 8); b[0] = 0x00; b[1] = 0xC2; b[2] = 0xEB; b[3] = 0x0B; /* 200,000,000 > 100 MB */
    p = xasprintf("%s/st_header_over_100mb.safetensors", dir); write_raw(p, b, 40); free(p);
    memset(b, 0xFF, 8);                              /* 2^64 - 1 */
    p = xasprintf("%s/st_header_u64max.safetensors", dir); write_raw(p, b, 40); free(p);
    memset(b, 0, 8); b[0] = 2; memcpy(b + 8, " {", 2);
    p = xasprintf("%s/st_header_space_first.safetensors", dir); write_raw(p, b, 10); free(p);
    /* a valid file cut in its data section, and cut in its header */
    float v[16] = {1, 2, 3};
    StTensor t = {.name = "w", .ndim = 2, .shape = {4, 4}, .data = v};
    p = xasprintf("%s/st_valid.safetensors", dir);
    st_write(p, &t, 1, NULL);
    size_t n;
    char *x = read_file(p, &n);
    remove(p); free(p);
    p = xasprintf("%s/st_truncated_data.safetensors", dir); write_raw(p, x, n - 10); free(p);
    p = xasprintf("%s/st_truncated_header.safetensors", dir); write_raw(p, x, 30); free(p);
    free(x);
}

static void write_bad_st(const char *dir) {
    for (int i = 0; i < N_BAD_ST; i++) {
        char *p = xasprintf("%s/%s", dir, bad_st[i].name);
        write_st_raw(p, bad_st[i].header, bad_st[i].data, bad_st[i].dn);
        free(p);
    }
    write_bad_st_raw(dir);
}

static void test_st_refusals(void) {
    write_bad_st(tmpdir);
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "st_", 3) != 0) continue;
        char *p = tpath(e->d_name);
        expect_refused(read_st, p, e->d_name);
        count++;
        free(p);
    }
    closedir(d);
    char *p = tpath("no_such_file.safetensors");
    expect_refused(read_st, p, "missing file");
    free(p);
    TEST(count == N_BAD_ST + 8, "all malformed safetensors classes ran (%d)", count);
}

/* ----------------------------------------------------------------------------
 * Images */

/* Pixel rules of the embedded fixtures (must match the generator). */
static int pix_a(int x, int y, int c) { return (x * 37 + y * 91 + c * 53 + (x * y) % 7) & 255; }
static int pix_b(int x, int y, int c) { return ((x / 4 + y / 3) % 3) * 60 + c * 10; }

/* Builds a PNG from raw (already filtered) scanlines with a stored-block zlib stream,
 * with any IHDR fields: for crafting malformed images with valid checksums. */
static unsigned char *make_png(uint32_t w, uint32_t h, int depth, int ctype, int interlace,
                               const unsigned char *raw, size_t rn, size_t *out_n) {
    size_t cap = 100 + rn + rn / 65535 * 5 + 5;
    unsigned char *p = xmalloc(cap), *q = p;
    memcpy(q, "\x89PNG\r\n\x1a\n", 8); q += 8;
    unsigned char ihdr[17] = {'I', 'H', 'D', 'R', (unsigned char)(w >> 24), (unsigned char)(w >> 16), (unsigned char)(w >> 8), (unsigned char)w,
                              (unsigned char)(h >> 24), (unsigned char)(h >> 16), (unsigned char)(h >> 8), (unsigned char)h,
                              (unsigned char)depth, (unsigned char)ctype, 0, 0, (unsigned char)interlace};
    #define PUT32(v) do { uint32_t v_ = (v); q[0] = (unsigned char)(v_ >> 24); q[1] = (unsigned char)(v_ >> 16); q[2] = (unsigned char)(v_ >> 8); q[3] = (unsigned char)v_; q += 4; } while (0)
    PUT32(13); memcpy(q, ihdr, 17); q += 17; PUT32(crc32_update(0, ihdr, 17));
    unsigned char *len_at = q;
    q += 4;
    unsigned char *start = q;
    memcpy(q, "IDAT\x78\x01", 6); q += 6;
    size_t pos = 0;
    do {
        size_t k = rn - pos < 65535 ? rn - pos : 65535;
        *q++ = (unsigned char)(pos + k == rn);
        *q++ = (unsigned char)k; *q++ = (unsigned char)(k >> 8); *q++ = (unsigned char)~k; *q++ = (unsigned char)(~k >> 8);
        memcpy(q, raw + pos, k); q += k; pos += k;
    } while (pos < rn);
    PUT32(adler32_update(1, raw, rn));
    uint32_t dlen = (uint32_t)(q - start - 4);
    unsigned char *save = q;
    q = len_at; PUT32(dlen); q = save;
    PUT32(crc32_update(0, start, (size_t)(save - start)));
    PUT32(0); memcpy(q, "IEND", 4); q += 4; PUT32(crc32_update(0, (const uint8_t *)"IEND", 4));
    *out_n = (size_t)(q - p);
    CHECK(*out_n <= cap);
    #undef PUT32
    return p;
}

/* tests/png_fixtures.inc: PNGs compressed by Python's zlib (fixed and dynamic Huffman
 * blocks, every row filter 0-4, IDAT split in two chunks), generated once so the tests
 * need no Python; pixels follow pix_a / pix_b in test_io.c. */
static const unsigned char png_fixed_rgb[358] = {
    137,80,78,71,13,10,26,10,0,0,0,13,73,72,68,82,0,0,0,13,
    0,0,0,11,8,2,0,0,0,43,208,144,54,0,0,0,144,73,68,65,
    84,120,1,99,96,48,205,82,141,234,247,170,223,146,191,228,230,148,147,255,
    118,190,83,190,39,236,193,108,145,171,17,59,201,183,105,123,209,242,59,211,
    207,48,238,249,168,198,24,61,225,168,26,6,144,151,151,71,19,97,138,142,
    142,142,137,137,137,141,141,141,139,139,139,136,136,136,140,140,140,138,138,194,
    20,100,222,118,49,251,144,147,147,179,179,179,141,141,141,139,139,139,173,237,
    94,199,131,142,118,251,236,208,4,89,128,90,53,53,53,149,148,148,192,100,
    132,102,2,136,29,13,229,34,4,25,142,255,49,252,168,22,45,226,89,103,
    158,179,48,113,218,114,108,201,14,0,0,0,145,73,68,65,84,233,150,157,
    239,150,223,17,60,245,223,228,139,102,156,184,79,163,85,254,146,148,153,231,
    218,247,124,100,84,10,239,209,214,214,86,193,0,104,130,32,127,132,134,134,
    134,133,133,133,135,135,35,251,3,77,144,121,214,150,243,64,135,59,29,114,
    130,56,28,8,92,92,142,64,124,115,8,73,16,228,15,117,117,245,88,117,
    16,80,80,80,80,87,143,4,49,162,21,98,212,161,0,34,200,208,119,248,
    199,182,215,10,192,56,248,111,146,169,30,51,209,163,118,83,193,210,91,19,
    143,253,6,70,204,67,49,111,38,243,28,173,248,41,222,13,91,1,16,214,
    144,180,249,121,243,147,0,0,0,0,73,69,78,68,174,66,96,130,
};
static const unsigned char png_dynamic_rgb[324] = {
    137,80,78,71,13,10,26,10,0,0,0,13,73,72,68,82,0,0,0,64,
    0,0,0,48,8,2,0,0,0,46,41,235,72,0,0,0,127,73,68,65,
    84,120,218,237,153,33,14,195,48,12,69,221,165,35,197,195,37,35,59,132,
    201,72,241,112,201,200,14,49,60,20,176,99,149,140,236,76,75,65,44,87,
    106,176,243,51,91,145,234,182,159,68,205,215,75,127,136,134,147,12,158,110,
    50,158,175,183,140,154,53,221,122,201,197,204,187,125,140,177,90,205,129,192,
    43,240,117,26,115,165,89,74,159,102,185,228,210,207,107,211,244,232,95,128,
    16,141,171,53,221,250,14,193,172,37,77,19,38,150,155,228,15,233,147,63,
    118,251,218,52,61,226,178,209,160,19,166,100,0,0,0,128,73,68,65,84,
    26,114,18,91,147,152,11,21,85,213,172,9,227,249,2,97,214,146,6,159,
    196,136,244,213,26,39,177,57,137,151,207,23,98,219,92,210,224,155,24,158,
    196,233,29,28,125,219,50,49,60,137,17,151,141,238,157,196,230,36,70,217,
    54,151,52,129,142,3,220,127,176,214,120,176,101,30,108,57,137,173,73,60,
    223,31,112,137,116,91,233,52,60,137,253,136,201,218,196,240,36,70,92,54,
    155,237,180,147,216,154,196,136,137,244,38,157,134,63,98,242,96,203,143,152,
    254,156,196,63,156,96,181,251,251,46,127,41,0,0,0,0,73,69,78,68,
    174,66,96,130,
};
static const unsigned char png_dynamic_rgba[471] = {
    137,80,78,71,13,10,26,10,0,0,0,13,73,72,68,82,0,0,0,20,
    0,0,0,12,8,6,0,0,0,98,12,157,251,0,0,0,201,73,68,65,
    84,120,1,5,193,169,161,221,48,20,5,192,57,73,144,177,176,42,185,36,
    68,88,69,164,8,99,35,3,151,101,240,254,190,239,205,100,134,165,93,44,
    237,202,210,174,45,237,166,198,188,173,49,239,106,204,251,26,243,97,221,142,
    199,117,59,158,214,237,120,94,183,227,197,210,94,45,237,205,210,222,45,237,
    163,198,252,172,49,191,106,204,239,26,243,39,150,118,65,16,164,170,130,32,
    72,85,5,65,144,125,223,131,32,72,85,5,65,144,95,0,0,0,0,0,
    0,0,0,0,0,191,235,239,248,215,123,79,239,61,189,247,84,85,122,239,
    233,189,167,247,158,125,223,115,158,103,206,243,204,121,158,169,170,244,222,211,
    123,79,239,61,85,149,222,123,122,239,233,189,231,15,0,0,0,0,0,0,
    0,0,0,128,26,243,82,99,94,213,152,215,53,230,205,186,29,183,235,118,
    220,173,199,208,110,33,0,0,0,201,73,68,65,84,219,113,191,110,199,131,
    165,61,90,218,147,165,61,91,218,75,141,249,90,99,190,213,152,239,53,230,
    199,186,29,159,235,118,124,173,219,241,189,110,199,79,214,237,184,32,8,178,
    239,123,16,4,169,170,32,8,82,85,65,16,100,223,247,32,8,242,11,0,
    0,0,0,0,0,0,0,0,224,119,253,29,255,16,4,57,207,51,8,130,
    244,222,131,32,72,239,61,8,130,156,231,25,4,65,254,236,251,14,0,170,
    10,0,84,21,0,216,247,29,0,84,21,0,96,105,23,75,187,178,180,107,
    75,187,169,49,111,107,204,187,26,243,190,198,124,88,183,227,113,221,142,167,
    117,59,158,215,237,120,177,180,87,75,123,179,180,119,75,251,168,49,63,107,
    204,175,26,243,187,198,252,137,165,93,16,4,169,170,32,8,82,85,65,16,
    100,223,247,32,8,82,85,65,16,228,63,170,170,139,199,225,166,114,92,0,
    0,0,0,73,69,78,68,174,66,96,130,
};

static void test_png_roundtrip(void) {
    Rng r;
    rng_seed(&r, 11);
    int sizes[3][2] = {{1, 1}, {7, 5}, {300, 250}};   /* the last needs several stored blocks */
    for (int s = 0; s < 3; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        uint8_t *rgb = xmalloc((size_t)w * h * 3);
        for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)rng_below(&r, 256);
        char *p = tpath("rt.png");
        png_write(p, w, h, rgb);
        Image im;
        image_read(p, &im);
        TEST(im.w == w && im.h == h && memcmp(im.rgb, rgb, (size_t)w * h * 3) == 0, "PNG round-trip %dx%d", w, h);
        image_free(&im);
        free(p); free(rgb);
    }
    /* known checksums: the CRC-32 and Adler-32 check values */
    TEST(crc32_update(0, (const uint8_t *)"123456789", 9) == 0xCBF43926u, "CRC-32 check value");
    TEST(crc32_update(crc32_update(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5) == 0xCBF43926u, "CRC-32 chaining");
    TEST(adler32_update(1, (const uint8_t *)"Wikipedia", 9) == 0x11E60398u, "Adler-32 check value");
}

static void test_png_compressed(void) {
    static const struct { const unsigned char *data; size_t n; int w, h, b; } fx[] = {
        {png_fixed_rgb, sizeof png_fixed_rgb, 13, 11, 0},
        {png_dynamic_rgb, sizeof png_dynamic_rgb, 64, 48, 1},
        {png_dynamic_rgba, sizeof png_dynamic_rgba, 20, 12, 1},
    };
    for (int i = 0; i < 3; i++) {
        char *p = tpath("fx.png");
        write_raw(p, fx[i].data, fx[i].n);
        Image im;
        image_read(p, &im);
        int bad = im.w != fx[i].w || im.h != fx[i].h;
        for (int y = 0; !bad && y < im.h; y++)
            for (int x = 0; x < im.w; x++)
                for (int c = 0; c < 3; c++)
                    if (im.rgb[(y * im.w + x) * 3 + c] != (fx[i].b ? pix_b(x, y, c) : pix_a(x, y, c))) bad++;
        TEST(!bad, "compressed PNG fixture %d (fixed/dynamic Huffman, filters 0-4) decodes exactly", i);
        image_free(&im);
        free(p);
    }
    /* image_normalize: CHW, rescale then mean/std */
    uint8_t px[6] = {0, 255, 51, 102, 0, 255};
    Image im = {2, 1, px};
    float out[6], mean[3] = {0.5f, 0, 0}, sd[3] = {0.5f, 1, 2};
    image_normalize(&im, mean, sd, out);
    const float want[6] = {-1, (102 / 255.0f - 0.5f) / 0.5f, 1, 0, 0.1f, 0.5f};
    int close = 1;
    for (int i = 0; i < 6; i++) close = close && fabsf(out[i] - want[i]) < 1e-6f;
    TEST(close, "image_normalize CHW");
}

static void test_ppm(void) {
    const char ppm[] = "P6\n# a comment\n2 1\n255\n\x01\x02\x03\xff\xfe\xfd";
    char *p = tpath("a.ppm");
    write_raw(p, ppm, sizeof ppm - 1);
    Image im;
    image_read(p, &im);
    TEST(im.w == 2 && im.h == 1 && memcmp(im.rgb, "\x01\x02\x03\xff\xfe\xfd", 6) == 0, "PPM P6 read");
    image_free(&im);
    free(p);
}

/* Writes the malformed images. */
static void write_bad_images(const char *dir) {
    char *p;
    #define BAD(name, data, n) do { p = xasprintf("%s/%s", dir, name); write_raw(p, data, n); free(p); } while (0)
    BAD("img_empty.png", "", 0);
    BAD("img_text.png", "hello, this is not an image\n", 28);
    BAD("img_jpeg.png", "\xff\xd8\xff\xe0\0\x10JFIF", 10);
    BAD("img_ppm_p3.ppm", "P3\n1 1\n255\n1 2 3\n", 17);
    BAD("img_ppm_maxval.ppm", "P6\n1 1\n65535\n\0\0\0\0\0\0", 19);
    BAD("img_ppm_truncated.ppm", "P6\n2 2\n255\n\1\2\3\4\5", 16);
    BAD("img_ppm_extra.ppm", "P6\n1 1\n255\n\1\2\3\4", 15);
    BAD("img_ppm_zero.ppm", "P6\n0 1\n255\n", 11);
    BAD("img_ppm_huge.ppm", "P6\n99999 99999\n255\n\1\2\3", 22);
    BAD("img_ppm_noheader.ppm", "P6", 2);
    /* PNGs with valid checksums but bad content */
    unsigned char raw[2 * (1 + 2 * 3)] = {0, 1, 2, 3, 4, 5, 6, 0, 7, 8, 9, 10, 11, 12};
    size_t n;
    unsigned char *png = make_png(2, 2, 8, 2, 0, raw, sizeof raw, &n);
    p = xasprintf("%s/img_valid_stored.png", dir); write_raw(p, png, n); free(p);
    for (size_t cut = 4; cut < n; cut = cut * 2 + 3) {
        char name[64];
        snprintf(name, sizeof name, "img_truncated_%zu.png", cut);
        BAD(name, png, cut);
    }
    BAD("img_truncated_last.png", png, n - 1);
    unsigned char *bad = xmalloc(n);
    memcpy(bad, png, n); bad[40] ^= 1;                         /* inside IDAT: CRC mismatch */
    BAD("img_bad_crc.png", bad, n);
    free(bad); free(png);
    png = make_png(2, 2, 16, 2, 0, raw, sizeof raw, &n); BAD("img_16bit.png", png, n); free(png);
    png = make_png(2, 2, 8, 3, 0, raw, sizeof raw, &n); BAD("img_palette.png", png, n); free(png);
    png = make_png(2, 2, 8, 0, 0, raw, sizeof raw, &n); BAD("img_gray.png", png, n); free(png);
    png = make_png(2, 2, 8, 2, 1, raw, sizeof raw, &n); BAD("img_interlaced.png", png, n); free(png);
    png = make_png(0, 2, 8, 2, 0, raw, sizeof raw, &n); BAD("img_zero_width.png", png, n); free(png);
    png = make_png(100000, 2, 8, 2, 0, raw, sizeof raw, &n); BAD("img_too_wide.png", png, n); free(png);
    png = make_png(3, 2, 8, 2, 0, raw, sizeof raw, &n); BAD("img_short_data.png", png, n); free(png);
    png = make_png(2, 1, 8, 2, 0, raw, sizeof raw, &n); BAD("img_long_data.png", png, n); free(png);
    png = make_png(8000, 8000, 8, 2, 0, raw, sizeof raw, &n); BAD("img_tiny_idat.png", png, n); free(png);
    raw[7] = 5;                                                /* filter type 5 does not exist */
    png = make_png(2, 2, 8, 2, 0, raw, sizeof raw, &n); BAD("img_bad_filter.png", png, n);
    /* bad Adler-32: change a byte of it and fix the chunk CRC */
    size_t idat_len = (size_t)png[33] << 24 | (size_t)png[34] << 16 | (size_t)png[35] << 8 | png[36];
    png[37 + 4 + idat_len - 1] ^= 0x55;
    uint32_t crc = crc32_update(0, png + 37, 4 + idat_len);
    unsigned char *c = png + 37 + 4 + idat_len;
    c[0] = (unsigned char)(crc >> 24); c[1] = (unsigned char)(crc >> 16); c[2] = (unsigned char)(crc >> 8); c[3] = (unsigned char)crc;
    BAD("img_bad_adler.png", png, n);
    /* no IDAT: IHDR directly followed by IEND */
    memmove(png + 33, png + 33 + 12 + idat_len, 12);
    BAD("img_no_idat.png", png, 33 + 12);
    /* first chunk is not IHDR */
    memcpy(png + 8, png + 33, 12);
    BAD("img_iend_first.png", png, 20);
    free(png);
    #undef BAD
}

static void test_image_refusals(void) {
    write_bad_images(tmpdir);
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "img_", 4) != 0) continue;
        char *p = tpath(e->d_name);
        if (strcmp(e->d_name, "img_valid_stored.png") == 0) {
            Image im;
            image_read(p, &im);
            TEST(im.w == 2 && im.h == 2 && im.rgb[0] == 1 && im.rgb[11] == 12, "make_png control case reads");
            image_free(&im);
        } else {
            expect_refused(read_image, p, e->d_name);
            count++;
        }
        free(p);
    }
    closedir(d);
    char *p = tpath("no_such_image.png");
    expect_refused(read_image, p, "missing image");
    free(p);
    TEST(count == 29, "all malformed image classes ran (%d)", count);
}

/* ----------------------------------------------------------------------------
 * Fuzz: random truncations and bit flips; the reader must accept (exit 0) or refuse
 * with one line (exit 2), never crash. */

static void fuzz_file(Reader fn, const unsigned char *orig, size_t n, int iters, uint64_t seed, const char *what) {
    /* PULSE_FUZZ=k runs k times more mutants (a deeper run than `make test` can afford) */
    if (getenv("PULSE_FUZZ")) iters *= atoi(getenv("PULSE_FUZZ")) > 0 ? atoi(getenv("PULSE_FUZZ")) : 1;
    Rng r;
    rng_seed(&r, seed);
    unsigned char *m = xmalloc(n);
    char *p = tpath("fuzz.bin");
    int crashes = 0, lines = 0, accepted = 0;
    char err[4096];
    for (int it = 0; it < iters; it++) {
        memcpy(m, orig, n);
        size_t len = n;
        int mode = (int)rng_below(&r, 3);
        if (mode != 1) {
            int flips = 1 + (int)rng_below(&r, 4);
            for (int f = 0; f < flips; f++) m[rng_below(&r, (uint32_t)n)] ^= (unsigned char)(1 << rng_below(&r, 8));
        }
        if (mode != 0) len = rng_below(&r, (uint32_t)n);
        write_raw(p, m, len);
        int rc = run_child(fn, p, err, sizeof err);
        if (rc == 0) accepted++;
        else if (rc != 2) { crashes++; if (crashes < 3) printf("fuzz %s #%d: status %d: %s\n", what, it, rc, err); }
        else if (!one_line_naming(err, p)) lines++;
    }
    TEST(crashes == 0, "fuzz %s: %d crashes in %d mutants", what, crashes, iters);
    TEST(lines == 0, "fuzz %s: %d refusals were not one line", what, lines);
    TEST(accepted < iters, "fuzz %s: some mutants refused (%d accepted)", what, accepted);
    free(p); free(m);
}

/* Text: a reserved buffer is a string at once, even in memory that held something else
 * (the decoder's rows keep text.p as the response when nothing is generated). */
static void test_text(void) {
    for (int round = 0; round < 8; round++) {
        char *junk = xmalloc(256);                    /* a Text's first block is 256 bytes */
        memset(junk, 'x', 256);
        free(junk);                                   /* the next block of this size is likely it */
        Text t = {0};
        text_reserve(&t, 63);
        TEST(t.p && t.p[0] == 0 && t.n == 0 && strcmp(text_str(&t), "") == 0, "reserved empty text is \"\" (round %d)", round);
        text_puts(&t, "ab");
        text_reserve(&t, 1000);                       /* grows: the content and its NUL move along */
        TEST(strcmp(t.p, "ab") == 0 && t.n == 2, "grown text keeps \"ab\"");
        text_printf(&t, "%d", 42);
        TEST(strcmp(text_str(&t), "ab42") == 0, "printf appends");
        text_free(&t);
    }
}

static void test_fuzz(void) {
    float v[24];
    for (int i = 0; i < 24; i++) v[i] = (float)i * 0.25f - 1;
    StTensor t[3] = {{.name = "a.weight", .ndim = 2, .shape = {3, 4}, .data = v},
                     {.name = "b", .ndim = 1, .shape = {8}, .data = v + 12},
                     {.name = "c", .ndim = 0, .data = v + 20}};
    Json *meta = json_new_object();
    json_set(meta, "k", json_new_string("v"));
    char *p = tpath("fz.safetensors");
    st_write(p, t, 3, meta);
    size_t n;
    char *x = read_file(p, &n);
    fuzz_file(read_st, (unsigned char *)x, n, 60, 1, "safetensors");
    free(x); free(p); json_free(meta);
    fuzz_file(read_image, png_dynamic_rgb, sizeof png_dynamic_rgb, 60, 2, "PNG (dynamic)");
    fuzz_file(read_image, png_fixed_rgb, sizeof png_fixed_rgb, 25, 3, "PNG (fixed)");
    const char ppm[] = "P6\n2 2\n255\n0123456789ab";
    fuzz_file(read_image, (const unsigned char *)ppm, sizeof ppm - 1, 15, 4, "PPM");
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-bad") == 0) {
        /* plus two valid files (good_*), so the end-to-end test also sees acceptance */
        make_dirs(argv[2]);
        write_bad_st(argv[2]);
        write_bad_images(argv[2]);
        float v[6] = {1, 2, 3, 4, 5, 6};
        StTensor t = {.name = "w", .ndim = 2, .shape = {2, 3}, .data = v};
        char *p = xasprintf("%s/good_model.safetensors", argv[2]);
        st_write(p, &t, 1, NULL);
        free(p);
        uint8_t rgb[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
        p = xasprintf("%s/good_image.png", argv[2]);
        png_write(p, 2, 2, rgb);
        free(p);
        return 0;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s/pulse_test_io_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(tmpdir));
    test_text();
    test_json_numbers();
    test_json_strings();
    test_json_nested();
    test_json_errors();
    test_json_fuzz();
    test_json_files();
    test_files();
    test_st_reference_bytes();
    test_st_roundtrip();
    test_st_half();
    test_st_refusals();
    test_png_roundtrip();
    test_png_compressed();
    test_ppm();
    test_image_refusals();
    test_fuzz();
    remove_tree(tmpdir);
    return test_summary();
}
