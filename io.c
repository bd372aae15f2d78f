/* io.c: the files pulse reads and writes (see io.h).
 *
 * Design:
 * - Every reader is strict and total: it checks each length against what is left
 *   before it reads, and it refuses anything it does not understand with one line,
 *   die_input(path, reason), exit status 2. No reader trusts a size field before
 *   comparing it with the file size, so a hostile file cannot make us allocate more
 *   than a small multiple of its own size.
 * - JSON: a recursive-descent parser into a small DOM (depth limited, so no stack
 *   overflow on "[[[[..."). Strings are validated UTF-8; \uXXXX escapes are decoded,
 *   surrogate pairs combined and lone surrogates refused; duplicate keys are refused.
 *   Numbers are printed with the shortest of %.15g/%.16g/%.17g that parses back to the
 *   same double, and integers below 1e17 are printed as integers.
 * - Atomic writes: NAME.tmp, fflush, fsync, rename, then fsync of the directory. The
 *   temporary is registered with tmpfile_register so that die_input removes it.
 * - safetensors: the reference crate's rules (tensor.rs: MAX_HEADER_SIZE, validate())
 *   plus ours: supported dtypes F32/F16/BF16 only, finite values only, no unknown
 *   fields. The writer reproduces the crate's byte layout for F32 tensors: compact
 *   JSON, keys dtype/shape/data_offsets, "__metadata__" first, spaces to a multiple of 8.
 * - Images: a PNG writer with stored deflate blocks and a PNG reader with a real
 *   inflate (stored, fixed and dynamic Huffman blocks), plus binary PPM.
 */
#include "io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common.h"

/* ----------------------------------------------------------------------------
 * UTF-8 */

int utf8_next(const char *str, size_t n, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)str;
    if (n == 0) return 0;
    uint32_t c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    uint32_t min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; c &= 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; c &= 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; c &= 0x07; min = 0x10000; }
    else return 0;              /* continuation byte, C0/C1 (overlong) or F5..FF */
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

static void utf8_put(Text *b, uint32_t c) {
    char t[4];
    if (c < 0x80) { t[0] = (char)c; text_putn(b, t, 1); }
    else if (c < 0x800) { t[0] = (char)(0xC0 | (c >> 6)); t[1] = (char)(0x80 | (c & 0x3F)); text_putn(b, t, 2); }
    else if (c < 0x10000) {
        t[0] = (char)(0xE0 | (c >> 12)); t[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        t[2] = (char)(0x80 | (c & 0x3F)); text_putn(b, t, 3);
    } else {
        t[0] = (char)(0xF0 | (c >> 18)); t[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((c >> 6) & 0x3F)); t[3] = (char)(0x80 | (c & 0x3F)); text_putn(b, t, 4);
    }
}

/* ----------------------------------------------------------------------------
 * JSON DOM */

#define JSON_MAX_DEPTH 512

static Json *json_node(JsonType type) {
    Json *j = xcalloc(1, sizeof *j);
    j->type = type;
    return j;
}

Json *json_new_null(void) { return json_node(JSON_NULL); }
Json *json_new_bool(int b) { Json *j = json_node(JSON_BOOL); j->boolean = b != 0; return j; }
Json *json_new_number(double x) { Json *j = json_node(JSON_NUMBER); j->number = x; return j; }
Json *json_new_array(void) { return json_node(JSON_ARRAY); }
Json *json_new_object(void) { return json_node(JSON_OBJECT); }

Json *json_new_stringn(const char *s, size_t len) {
    Json *j = json_node(JSON_STRING);
    j->string = xmalloc(len + 1);
    memcpy(j->string, s, len);
    j->string[len] = 0;
    j->len = len;
    return j;
}
Json *json_new_string(const char *s) { return json_new_stringn(s, strlen(s)); }

static void json_grow(Json *j) {
    if (j->len < j->cap) return;
    j->cap = j->cap ? 2 * j->cap : 4;
    j->items = xrealloc(j->items, j->cap * sizeof *j->items);
    if (j->type == JSON_OBJECT) j->keys = xrealloc(j->keys, j->cap * sizeof *j->keys);
}

void json_push(Json *arr, Json *item) {
    CHECK(arr && arr->type == JSON_ARRAY && item);
    json_grow(arr);
    arr->items[arr->len++] = item;
}

/* Appends without looking for an existing key (the parser checks duplicates at once). */
static void json_append(Json *obj, char *key, Json *value) {
    json_grow(obj);
    obj->keys[obj->len] = key;
    obj->items[obj->len++] = value;
}

void json_set(Json *obj, const char *key, Json *value) {
    CHECK(obj && obj->type == JSON_OBJECT && key && value);
    for (size_t i = 0; i < obj->len; i++)
        if (strcmp(obj->keys[i], key) == 0) { json_free(obj->items[i]); obj->items[i] = value; return; }
    json_append(obj, xstrdup(key), value);
}

void json_add(Json *obj, const char *key, Json *value) {
    CHECK(obj && obj->type == JSON_OBJECT && key && value);
    json_append(obj, xstrdup(key), value);
}

Json *json_get(const Json *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (strcmp(obj->keys[i], key) == 0) return obj->items[i];
    return NULL;
}

void json_free(Json *j) {
    if (!j) return;
    if (j->type == JSON_ARRAY || j->type == JSON_OBJECT) {
        for (size_t i = 0; i < j->len; i++) {
            json_free(j->items[i]);
            if (j->keys) free(j->keys[i]);
        }
        free(j->items);
        free(j->keys);
    }
    free(j->string);
    free(j);
}

static const char *json_type_name(JsonType t) {
    static const char *names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return names[t];
}

double json_get_number(const Json *obj, const char *key, double def, const char *path) {
    const Json *v = json_get(obj, key);
    if (!v) return def;
    if (v->type != JSON_NUMBER) die_input(path, "\"%s\" must be a number, not %s", key, json_type_name(v->type));
    return v->number;
}

long json_get_int(const Json *obj, const char *key, long def, long lo, long hi, const char *path) {
    const Json *v = json_get(obj, key);
    if (!v) return def;
    if (v->type != JSON_NUMBER || v->number != floor(v->number))
        die_input(path, "\"%s\" must be an integer", key);
    /* compare before converting: (long) of an out-of-range double is undefined */
    if (!(v->number >= (double)lo && v->number <= (double)hi && fabs(v->number) < 9e18))
        die_input(path, "\"%s\" = %.17g is outside [%ld, %ld]", key, v->number, lo, hi);
    return (long)v->number;
}

const char *json_get_string(const Json *obj, const char *key, const char *def, const char *path) {
    const Json *v = json_get(obj, key);
    if (!v) return def;
    if (v->type != JSON_STRING) die_input(path, "\"%s\" must be a string, not %s", key, json_type_name(v->type));
    return v->string;
}

int json_get_bool(const Json *obj, const char *key, int def, const char *path) {
    const Json *v = json_get(obj, key);
    if (!v) return def;
    if (v->type != JSON_BOOL) die_input(path, "\"%s\" must be true or false, not %s", key, json_type_name(v->type));
    return v->boolean;
}

/* ----------------------------------------------------------------------------
 * JSON parser */

typedef struct JsonParser {
    const char *s;
    size_t n, i;                /* text and read position */
    char *err;
    size_t errlen;
    int failed;
} JsonParser;

__attribute__((format(printf, 2, 3)))
static void jp_fail(JsonParser *p, const char *fmt, ...) {
    if (p->failed) return;      /* keep the first, innermost reason */
    p->failed = 1;
    size_t line = 1, col = 1;
    for (size_t k = 0; k < p->i && k < p->n; k++) {
        if (p->s[k] == '\n') { line++; col = 1; } else col++;
    }
    char msg[200];
    va_list ap;
    va_start(ap, fmt); vsnprintf(msg, sizeof msg, fmt, ap); va_end(ap);
    if (p->err && p->errlen) snprintf(p->err, p->errlen, "line %zu col %zu: %s", line, col, msg);
}

static void jp_ws(JsonParser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads 4 hex digits at s[i..i+4); -1 if they are not there. */
static long jp_hex4(JsonParser *p, size_t i) {
    if (i + 4 > p->n) return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[i + k]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Parses a string literal at p->i (which is '"'); returns the malloc'ed bytes. */
static char *jp_string(JsonParser *p, size_t *len) {
    Text b = {0};
    text_reserve(&b, 16);
    p->i++;
    for (;;) {
        if (p->i >= p->n) { jp_fail(p, "unterminated string"); break; }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') { p->i++; *len = b.n; b.p[b.n] = 0; return b.p; }
        if (c < 0x20) { jp_fail(p, "control character 0x%02x in a string (must be escaped)", c); break; }
        if (c == '\\') {
            if (p->i + 1 >= p->n) { jp_fail(p, "unterminated escape"); break; }
            char e = p->s[p->i + 1];
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *hit = e ? strchr(from, e) : NULL;
            if (hit) { text_putc(&b, to[hit - from]); p->i += 2; continue; }
            if (e != 'u') { jp_fail(p, "invalid escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?'); break; }
            long u = jp_hex4(p, p->i + 2);
            if (u < 0) { jp_fail(p, "\\u needs 4 hex digits"); break; }
            p->i += 6;
            uint32_t cp = (uint32_t)u;
            if (cp >= 0xDC00 && cp <= 0xDFFF) { jp_fail(p, "lone low surrogate \\u%04lx", u); break; }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* a high surrogate must be followed by \uDC00..\uDFFF */
                long lo = (p->i + 1 < p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') ? jp_hex4(p, p->i + 2) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) { jp_fail(p, "lone high surrogate \\u%04lx", u); break; }
                p->i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
            }
            utf8_put(&b, cp);
            continue;
        }
        uint32_t cp;
        int k = utf8_next(p->s + p->i, p->n - p->i, &cp);
        if (k == 0) { jp_fail(p, "invalid UTF-8 in a string"); break; }
        text_putn(&b, p->s + p->i, (size_t)k);
        p->i += (size_t)k;
    }
    free(b.p);
    return NULL;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static Json *jp_number(JsonParser *p) {
    size_t start = p->i;
    const char *s = p->s;
    size_t n = p->n, i = p->i;
    /* the JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') i++;
    else if (i < n && is_digit(s[i])) while (i < n && is_digit(s[i])) i++;
    else { p->i = i; jp_fail(p, "invalid number"); return NULL; }
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !is_digit(s[i])) { p->i = i; jp_fail(p, "invalid number: digits must follow '.'"); return NULL; }
        while (i < n && is_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !is_digit(s[i])) { p->i = i; jp_fail(p, "invalid number: digits must follow the exponent"); return NULL; }
        while (i < n && is_digit(s[i])) i++;
    }
    /* strtod needs a NUL-terminated copy: the text need not be terminated */
    size_t len = i - start;
    char small[64], *tmp = len < sizeof small ? small : xmalloc(len + 1);
    memcpy(tmp, s + start, len);
    tmp[len] = 0;
    double x = strtod(tmp, NULL);
    if (tmp != small) free(tmp);
    if (!isfinite(x)) { jp_fail(p, "number out of range"); return NULL; }
    p->i = i;
    return json_new_number(x);
}

static Json *jp_value(JsonParser *p, int depth);

static int key_cmp(const void *a, const void *b) {
    return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

static Json *jp_object(JsonParser *p, int depth) {
    Json *obj = json_new_object();
    p->i++;
    jp_ws(p);
    if (p->i < p->n && p->s[p->i] == '}') { p->i++; return obj; }
    for (;;) {
        jp_ws(p);
        if (p->i >= p->n || p->s[p->i] != '"') { jp_fail(p, "expected a string key"); goto fail; }
        size_t klen;
        char *key = jp_string(p, &klen);
        if (!key) goto fail;
        if (strlen(key) != klen) { free(key); jp_fail(p, "\\u0000 in an object key"); goto fail; }
        jp_ws(p);
        if (p->i >= p->n || p->s[p->i] != ':') { free(key); jp_fail(p, "expected ':' after a key"); goto fail; }
        p->i++;
        Json *v = jp_value(p, depth + 1);
        if (!v) { free(key); goto fail; }
        json_append(obj, key, v);
        jp_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == '}') { p->i++; break; }
        jp_fail(p, "expected ',' or '}' in an object");
        goto fail;
    }
    if (obj->len > 1) {
        /* duplicate keys: sort pointers to the keys, compare neighbours (n log n) */
        char **idx[64], ***sorted = obj->len <= 64 ? idx : xmalloc(obj->len * sizeof *sorted);
        for (size_t k = 0; k < obj->len; k++) sorted[k] = &obj->keys[k];
        qsort(sorted, obj->len, sizeof *sorted, key_cmp);
        const char *dup = NULL;
        for (size_t k = 1; k < obj->len && !dup; k++)
            if (strcmp(*sorted[k - 1], *sorted[k]) == 0) dup = *sorted[k];
        if (dup) jp_fail(p, "duplicate key \"%.80s\"", dup);
        if (sorted != idx) free(sorted);
        if (dup) goto fail;
    }
    return obj;
fail:
    json_free(obj);
    return NULL;
}

static Json *jp_array(JsonParser *p, int depth) {
    Json *arr = json_new_array();
    p->i++;
    jp_ws(p);
    if (p->i < p->n && p->s[p->i] == ']') { p->i++; return arr; }
    for (;;) {
        Json *v = jp_value(p, depth + 1);
        if (!v) { json_free(arr); return NULL; }
        json_push(arr, v);
        jp_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == ']') { p->i++; return arr; }
        jp_fail(p, "expected ',' or ']' in an array");
        json_free(arr);
        return NULL;
    }
}

static int jp_literal(JsonParser *p, const char *word) {
    size_t k = strlen(word);
    if (p->n - p->i >= k && memcmp(p->s + p->i, word, k) == 0) { p->i += k; return 1; }
    jp_fail(p, "invalid literal (expected %s)", word);
    return 0;
}

static Json *jp_value(JsonParser *p, int depth) {
    jp_ws(p);
    if (p->i >= p->n) { jp_fail(p, "unexpected end of input"); return NULL; }
    if (depth > JSON_MAX_DEPTH) { jp_fail(p, "nested deeper than %d levels", JSON_MAX_DEPTH); return NULL; }
    char c = p->s[p->i];
    switch (c) {
    case '{': return jp_object(p, depth);
    case '[': return jp_array(p, depth);
    case '"': {
        size_t len;
        char *s = jp_string(p, &len);
        if (!s) return NULL;
        Json *j = json_node(JSON_STRING);
        j->string = s;
        j->len = len;
        return j;
    }
    case 't': return jp_literal(p, "true") ? json_new_bool(1) : NULL;
    case 'f': return jp_literal(p, "false") ? json_new_bool(0) : NULL;
    case 'n': return jp_literal(p, "null") ? json_new_null() : NULL;
    default:
        if (c == '-' || is_digit(c)) return jp_number(p);
        if (c >= 0x20 && c < 0x7f) jp_fail(p, "unexpected character '%c'", c);
        else jp_fail(p, "unexpected byte 0x%02x", (unsigned char)c);
        return NULL;
    }
}

Json *json_parse(const char *text, size_t n, char *err, size_t errlen) {
    JsonParser p = {text, n, 0, err, errlen, 0};
    if (err && errlen) err[0] = 0;
    Json *j = jp_value(&p, 0);
    if (!j) return NULL;
    jp_ws(&p);
    if (p.i != p.n) {
        jp_fail(&p, "unexpected text after the JSON value");
        json_free(j);
        return NULL;
    }
    return j;
}

Json *json_load(const char *path) {
    size_t n;
    char *text = read_file(path, &n);
    char err[256];
    Json *j = json_parse(text, n, err, sizeof err);
    free(text);
    if (!j) die_input(path, "not valid JSON: %s", err);
    return j;
}

/* ----------------------------------------------------------------------------
 * JSON writer */

void json_format_number(char *buf, size_t n, double x) {
    CHECK(n >= 32);
    /* JSON has no NaN or Infinity: write null, as JavaScript's JSON.stringify does */
    if (!isfinite(x)) { snprintf(buf, n, "null"); return; }
    if (x == floor(x) && fabs(x) < 1e17) { snprintf(buf, n, "%.0f", x); return; }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, x);
        if (prec == 17 || strtod(buf, NULL) == x) return;
    }
}

/* Escapes s[0..len) as a JSON string literal. Invalid UTF-8 bytes (which JSON cannot
 * hold) become U+FFFD, as Python's errors="replace" does. */
static void json_escape(Text *b, const char *s, size_t len) {
    text_putc(b, '"');
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') { text_puts(b, "\\\""); i++; }
        else if (c == '\\') { text_puts(b, "\\\\"); i++; }
        else if (c < 0x20) {
            char t[8];
            switch (c) {
            case '\b': text_puts(b, "\\b"); break;
            case '\f': text_puts(b, "\\f"); break;
            case '\n': text_puts(b, "\\n"); break;
            case '\r': text_puts(b, "\\r"); break;
            case '\t': text_puts(b, "\\t"); break;
            default: snprintf(t, sizeof t, "\\u%04x", c); text_puts(b, t);
            }
            i++;
        } else if (c < 0x80) { text_putc(b, (char)c); i++; }
        else {
            uint32_t cp;
            int k = utf8_next(s + i, len - i, &cp);
            if (k == 0) { text_puts(b, "\xEF\xBF\xBD"); i++; }
            else { text_putn(b, s + i, (size_t)k); i += (size_t)k; }
        }
    }
    text_putc(b, '"');
}

static void json_indent(Text *b, int indent, int level) {
    text_putc(b, '\n');
    for (int i = 0; i < indent * level; i++) text_putc(b, ' ');
}

static void json_dump_into(Text *b, const Json *j, int indent, int level) {
    char num[40];
    switch (j->type) {
    case JSON_NULL: text_puts(b, "null"); break;
    case JSON_BOOL: text_puts(b, j->boolean ? "true" : "false"); break;
    case JSON_NUMBER: json_format_number(num, sizeof num, j->number); text_puts(b, num); break;
    case JSON_STRING: json_escape(b, j->string, j->len); break;
    case JSON_ARRAY:
    case JSON_OBJECT: {
        int obj = j->type == JSON_OBJECT;
        text_putc(b, obj ? '{' : '[');
        /* pretty output as Python's json.dumps(indent=k) and serde_json's pretty printer */
        for (size_t i = 0; i < j->len; i++) {
            if (i) text_putc(b, ',');
            if (indent) json_indent(b, indent, level + 1);
            if (obj) {
                json_escape(b, j->keys[i], strlen(j->keys[i]));
                text_puts(b, indent ? ": " : ":");
            }
            json_dump_into(b, j->items[i], indent, level + 1);
        }
        if (indent && j->len) json_indent(b, indent, level);
        text_putc(b, obj ? '}' : ']');
        break;
    }
    }
}

char *json_dump(const Json *j, int indent) {
    CHECK(j && indent >= 0);
    Text b = {0};
    text_reserve(&b, 64);
    json_dump_into(&b, j, indent, 0);
    return b.p;
}

void json_write_string(FILE *f, const char *s) {
    Text b = {0};
    json_escape(&b, s, strlen(s));
    fwrite(b.p, 1, b.n, f);
    free(b.p);
}

/* ----------------------------------------------------------------------------
 * Files */

FILE *atomic_open(AtomicFile *af, const char *path) {
    af->path = xstrdup(path);
    af->tmp = xasprintf("%s.tmp", path);
    af->f = fopen(af->tmp, "wb");
    if (!af->f) die_internal("%s: cannot create: %s", af->tmp, strerror(errno));
    tmpfile_register(af->tmp);
    return af->f;
}

/* fsync of the directory makes the rename itself durable (POSIX leaves it to us). */
static void fsync_parent_dir(const char *path) {
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash) { free(dir); dir = xstrdup("."); }
    else if (slash == dir) slash[1] = 0;
    else *slash = 0;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) { fsync(fd); close(fd); }   /* best effort: some filesystems refuse */
    free(dir);
}

void atomic_commit(AtomicFile *af) {
    CHECK(af->f);
    int bad = fflush(af->f) != 0 || ferror(af->f) || fsync(fileno(af->f)) != 0;
    int saved = errno;
    if (fclose(af->f) != 0 && !bad) { bad = 1; saved = errno; }
    af->f = NULL;
    if (bad) die_internal("%s: write failed: %s", af->tmp, strerror(saved));
    if (rename(af->tmp, af->path) != 0) die_internal("%s: cannot rename to %s: %s", af->tmp, af->path, strerror(errno));
    tmpfile_unregister(af->tmp);
    fsync_parent_dir(af->path);
    free(af->tmp); free(af->path);
    af->tmp = af->path = NULL;
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    if (af->tmp) { remove(af->tmp); tmpfile_unregister(af->tmp); }
    free(af->tmp); free(af->path);
    af->tmp = af->path = NULL;
}

void write_file_atomic(const char *path, const void *data, size_t n) {
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    if (n && fwrite(data, 1, n, f) != n) die_internal("%s: write failed: %s", af.tmp, strerror(errno));
    atomic_commit(&af);
}

void json_save(const char *path, const Json *j) {
    char *s = json_dump(j, 2);
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n'; s[n + 1] = 0;
    write_file_atomic(path, s, n + 1);
    free(s);
}

/* Opens a regular file for reading, or dies naming it. */
static FILE *open_regular(const char *path, uint64_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) die_input(path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) die_input(path, "cannot stat: %s", strerror(errno));
    if (S_ISDIR(st.st_mode)) die_input(path, "is a directory, not a file");
    if (size) *size = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    return f;
}

char *read_file(const char *path, size_t *n) {
    FILE *f = open_regular(path, NULL);
    size_t cap = 1 << 16, len = 0;
    char *p = xmalloc(cap);
    /* read to EOF rather than trusting st_size: pipes and growing files work too */
    for (;;) {
        if (len + 1 >= cap) { cap *= 2; p = xrealloc(p, cap); }
        size_t k = fread(p + len, 1, cap - len - 1, f);
        len += k;
        if (k == 0) break;
    }
    if (ferror(f)) die_input(path, "cannot read: %s", strerror(errno));
    fclose(f);
    p[len] = 0;
    if (n) *n = len;
    return p;
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Walks the prefixes of `path` that end before a '/', then the whole path. Without
 * `probe`, creates each one that is missing (make_dirs: a failure is not the user's, exit
 * 1). With it, `path` is the --out `probe` names and must be possible to create: the
 * first missing prefix is created and removed again (one another process created
 * meanwhile is left alone), a failure is bad input (exit 2). */
static void walk_dirs(const char *path, const char *probe) {
    char *p = xstrdup(path);
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char saved = p[i];
        p[i] = 0;
        struct stat st;
        if (stat(p, &st) == 0) {
            if (S_ISDIR(st.st_mode)) { p[i] = saved; continue; }
            if (probe) die_input(probe, "cannot be created: %s is not a directory", p);
            die_internal("%s: exists and is not a directory", p);
        }
        int made = mkdir(p, 0777) == 0;
        if (!made && errno != EEXIST) {
            if (probe) die_input(probe, "cannot be created: %s: %s", p, strerror(errno));
            die_internal("%s: cannot create directory: %s", p, strerror(errno));
        }
        if (probe) {
            if (made) rmdir(p);
            break;
        }
        if (!dir_exists(p)) die_internal("%s: exists and is not a directory", p);
        p[i] = saved;
    }
    free(p);
}

void make_dirs(const char *path) { walk_dirs(path, NULL); }

int dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) { empty = 0; break; }
    closedir(d);
    return empty;
}

void out_dir_check(const char *out, const char *own) {
    struct stat st;
    if (stat(out, &st) != 0) { walk_dirs(out, out); return; }   /* a bad --out: refused before any work */
    if (!S_ISDIR(st.st_mode)) die_input(out, "exists and is not a directory");
    if (!own || dir_is_empty(out)) return;
    char *p = xasprintf("%s/%s", out, own);
    int ours = file_exists(p);
    free(p);
    if (!ours) die_input(out, "exists, is not empty and has no %s, so it is not pulse's: refusing to overwrite it", own);
}

uint64_t file_hash64(const char *path) {
    FILE *f = open_regular(path, NULL);
    uint64_t h = HASH64_INIT;
    unsigned char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) h = hash64(buf, k, h);
    if (ferror(f)) die_input(path, "cannot read: %s", strerror(errno));
    fclose(f);
    return h;
}

/* ----------------------------------------------------------------------------
 * safetensors */

#define ST_MAX_HEADER 100000000ULL     /* the reference crate's MAX_HEADER_SIZE */
#define MAX_EXACT_INT 9007199254740992.0 /* 2^53: larger JSON integers are not exact */

typedef struct StDtype { const char *name; int size; } StDtype;
/* every dtype the reference crate knows, so that offsets validate as it would */
static const StDtype st_dtypes[] = {
    {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2},
    {"U16", 2}, {"F16", 2}, {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},
    {"F64", 8}, {"I64", 8}, {"U64", 8},
};

static int host_little_endian(void) {
    uint32_t x = 1;
    unsigned char c;
    memcpy(&c, &x, 1);
    return c == 1;
}

/* One header entry while validating. */
typedef struct StEntry {
    const char *name;
    const StDtype *dtype;
    int ndim;
    int64_t shape[8];
    uint64_t begin, end;
} StEntry;

static int entry_cmp(const void *a, const void *b) {
    const StEntry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A non-negative integer below 2^53, or -1. */
static double st_uint(const Json *v) {
    if (!v || v->type != JSON_NUMBER || v->number < 0 || v->number != floor(v->number) || v->number > MAX_EXACT_INT) return -1;
    return v->number;
}

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static void st_parse_entry(const char *path, const char *name, const Json *v, StEntry *e) {
    e->name = name;
    if (v->type != JSON_OBJECT) die_input(path, "tensor '%s': header entry is not an object", name);
    for (size_t k = 0; k < v->len; k++)
        if (strcmp(v->keys[k], "dtype") && strcmp(v->keys[k], "shape") && strcmp(v->keys[k], "data_offsets"))
            die_input(path, "tensor '%s': unexpected key \"%s\"", name, v->keys[k]);
    const Json *dt = json_get(v, "dtype"), *sh = json_get(v, "shape"), *off = json_get(v, "data_offsets");
    if (!dt || dt->type != JSON_STRING) die_input(path, "tensor '%s': missing or non-string \"dtype\"", name);
    e->dtype = NULL;
    for (size_t k = 0; k < sizeof st_dtypes / sizeof st_dtypes[0]; k++)
        if (strcmp(dt->string, st_dtypes[k].name) == 0) e->dtype = &st_dtypes[k];
    if (!e->dtype) die_input(path, "tensor '%s': unknown dtype \"%.20s\"", name, dt->string);
    if (!sh || sh->type != JSON_ARRAY) die_input(path, "tensor '%s': missing or non-array \"shape\"", name);
    if (sh->len > 8) die_input(path, "tensor '%s': %zu dimensions (pulse reads at most 8)", name, sh->len);
    e->ndim = (int)sh->len;
    for (int d = 0; d < e->ndim; d++) {
        double x = st_uint(sh->items[d]);
        if (x < 0) die_input(path, "tensor '%s': shape must hold non-negative integers", name);
        e->shape[d] = (int64_t)x;
    }
    if (!off || off->type != JSON_ARRAY || off->len != 2) die_input(path, "tensor '%s': \"data_offsets\" must be [begin, end]", name);
    double b = st_uint(off->items[0]), en = st_uint(off->items[1]);
    if (b < 0 || en < 0) die_input(path, "tensor '%s': \"data_offsets\" must hold non-negative integers", name);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0x1F) bits = sign | 0x7F800000u | (mant << 13);          /* Inf / NaN */
    else if (exp) bits = sign | ((exp + 112) << 23) | (mant << 13);      /* normal: rebias 15 -> 127 */
    else if (!mant) bits = sign;                                         /* zero */
    else {
        /* subnormal: shift the mantissa up until its leading 1 is the implicit bit */
        int e = -1;
        do { mant <<= 1; e++; } while (!(mant & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3FF) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void st_read(const char *path, StFile *out) {
    memset(out, 0, sizeof *out);
    CHECK(host_little_endian());
    uint64_t fsize;
    FILE *f = open_regular(path, &fsize);
    if (fsize < 8) die_input(path, "truncated: %llu bytes, too short for a safetensors header", (unsigned long long)fsize);
    unsigned char lenb[8];
    if (fread(lenb, 1, 8, f) != 8) die_input(path, "truncated while reading the header length");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lenb[i];
    if (hlen > ST_MAX_HEADER) die_input(path, "header length %llu exceeds the 100 MB limit (not a safetensors file?)", (unsigned long long)hlen);
    if (hlen > fsize - 8) die_input(path, "header length %llu runs past the end of the file (%llu bytes): truncated or not safetensors", (unsigned long long)hlen, (unsigned long long)fsize);
    char *htext = xmalloc(hlen + 1);
    if (fread(htext, 1, hlen, f) != hlen) die_input(path, "truncated while reading the header");
    htext[hlen] = 0;
    if (hlen == 0 || htext[0] != '{') die_input(path, "header does not start with '{'");
    char err[256];
    Json *h = json_parse(htext, hlen, err, sizeof err);
    free(htext);
    if (!h) die_input(path, "header is not valid JSON: %s", err);
    if (h->type != JSON_OBJECT) die_input(path, "header is not a JSON object");

    StEntry *es = xcalloc(h->len + 1, sizeof *es);
    int ne = 0;
    for (size_t k = 0; k < h->len; k++) {
        if (strcmp(h->keys[k], "__metadata__") == 0) {
            Json *m = h->items[k];
            if (m->type == JSON_NULL) continue;              /* serde's Option: null is absent */
            if (m->type != JSON_OBJECT) die_input(path, "__metadata__ must be an object of strings");
            for (size_t i = 0; i < m->len; i++)
                if (m->items[i]->type != JSON_STRING) die_input(path, "__metadata__: \"%s\" must be a string", m->keys[i]);
            out->metadata = m;
            h->items[k] = json_new_null();                    /* detach: st_free owns it now */
            continue;
        }
        st_parse_entry(path, h->keys[k], h->items[k], &es[ne++]);
    }

    /* validate() of the reference: sorted by offsets, contiguous from 0, sizes exact */
    qsort(es, (size_t)ne, sizeof *es, entry_cmp);
    uint64_t data_size = fsize - 8 - hlen, pos = 0;
    char sh[160];
    for (int i = 0; i < ne; i++) {
        StEntry *e = &es[i];
        if (e->end < e->begin) die_input(path, "tensor '%s': data_offsets [%llu, %llu] end before they begin", e->name, (unsigned long long)e->begin, (unsigned long long)e->end);
        if (e->begin > pos) die_input(path, "tensor '%s': data_offsets [%llu, %llu] leave a gap after byte %llu", e->name, (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)pos);
        if (e->begin < pos) die_input(path, "tensor '%s': data_offsets [%llu, %llu] overlap the previous tensor (which ends at %llu)", e->name, (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)pos);
        pos = e->end;
        uint64_t numel = 1;
        shape_str(sh, sizeof sh, e->shape, e->ndim);
        for (int d = 0; d < e->ndim; d++) {
            uint64_t s = (uint64_t)e->shape[d];
            if (s && numel > UINT64_MAX / s) die_input(path, "tensor '%s': shape %s overflows", e->name, sh);
            numel *= s;
        }
        if (numel > UINT64_MAX / (uint64_t)e->dtype->size) die_input(path, "tensor '%s': shape %s overflows", e->name, sh);
        uint64_t nbytes = numel * (uint64_t)e->dtype->size;
        if (e->end - e->begin != nbytes)
            die_input(path, "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu",
                      e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)(e->end - e->begin), sh, e->dtype->name, (unsigned long long)nbytes);
    }
    if (pos > data_size)
        die_input(path, "tensor data ends at byte %llu but the file holds %llu data bytes: truncated", (unsigned long long)pos, (unsigned long long)data_size);
    if (pos < data_size)
        die_input(path, "%llu extra bytes after the last tensor: the header does not cover the whole file", (unsigned long long)(data_size - pos));
    for (int i = 0; i < ne; i++) {
        const char *d = es[i].dtype->name;
        if (strcmp(d, "F32") && strcmp(d, "F16") && strcmp(d, "BF16"))
            die_input(path, "tensor '%s': dtype %s is not supported (pulse reads F32, F16 and BF16)", es[i].name, d);
    }

    /* the data, in file order; each tensor converted to F32 and checked finite */
    out->n = ne;
    out->t = xcalloc((size_t)ne + 1, sizeof *out->t);
    for (int i = 0; i < ne; i++) {
        StEntry *e = &es[i];
        StTensor *t = &out->t[i];
        t->name = xstrdup(e->name);
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        snprintf(t->dtype, sizeof t->dtype, "%s", e->dtype->name);
        size_t size = (size_t)e->dtype->size, numel = (size_t)((e->end - e->begin) / size);
        t->data = xmalloc(numel * sizeof(float));
        if (size == 4) {
            if (fread(t->data, 4, numel, f) != numel) die_input(path, "truncated while reading tensor '%s'", e->name);
        } else {
            uint16_t *raw = xmalloc(numel * 2 + 1);
            if (fread(raw, 2, numel, f) != numel) die_input(path, "truncated while reading tensor '%s'", e->name);
            int bf = strcmp(e->dtype->name, "BF16") == 0;
            for (size_t k = 0; k < numel; k++) {
                if (bf) { uint32_t bits = (uint32_t)raw[k] << 16; memcpy(&t->data[k], &bits, 4); }
                else t->data[k] = f16_to_f32(raw[k]);
            }
            free(raw);
        }
        for (size_t k = 0; k < numel; k++)
            if (!isfinite(t->data[k]))
                die_input(path, "tensor '%s' holds %s at element %zu", e->name, isnan(t->data[k]) ? "NaN" : "Inf", k);
    }
    fclose(f);
    free(es);
    json_free(h);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

void st_free(StFile *f) {
    for (int i = 0; i < f->n; i++) { free(f->t[i].name); free(f->t[i].data); }
    free(f->t);
    json_free(f->metadata);
    memset(f, 0, sizeof *f);
}

void st_write(const char *path, const StTensor *t, int n, const Json *metadata) {
    CHECK(host_little_endian());
    CHECK(n >= 0);
    Text h = {0};
    text_putc(&h, '{');
    if (metadata) {
        CHECK(metadata->type == JSON_OBJECT);
        for (size_t i = 0; i < metadata->len; i++) CHECK(metadata->items[i]->type == JSON_STRING);
        text_puts(&h, "\"__metadata__\":");
        char *m = json_dump(metadata, 0);
        text_puts(&h, m);
        free(m);
    }
    uint64_t off = 0;
    char tmp[64];
    for (int i = 0; i < n; i++) {
        CHECK(t[i].name && strcmp(t[i].name, "__metadata__") != 0);
        CHECK(t[i].ndim >= 0 && t[i].ndim <= 8);
        for (int k = 0; k < i; k++) CHECKF(strcmp(t[k].name, t[i].name) != 0, "st_write: duplicate tensor '%s'", t[i].name);
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) { CHECK(t[i].shape[d] >= 0); numel *= (uint64_t)t[i].shape[d]; }
        CHECK(numel == 0 || t[i].data);
        for (uint64_t k = 0; k < numel; k++)
            if (!isfinite(t[i].data[k])) die_internal("%s: refusing to write tensor '%s': it holds %s at element %llu", path, t[i].name, isnan(t[i].data[k]) ? "NaN" : "Inf", (unsigned long long)k);
        if (i || metadata) text_putc(&h, ',');
        json_escape(&h, t[i].name, strlen(t[i].name));
        text_puts(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            snprintf(tmp, sizeof tmp, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
            text_puts(&h, tmp);
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + 4 * numel));
        text_puts(&h, tmp);
        off += 4 * numel;
    }
    text_putc(&h, '}');
    while (h.n % 8) text_putc(&h, ' ');   /* the reference pads so the data is 8-aligned */

    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    int ok = fwrite(lenb, 1, 8, f) == 8 && fwrite(h.p, 1, h.n, f) == h.n;
    for (int i = 0; i < n && ok; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        ok = fwrite(t[i].data ? (const void *)t[i].data : "", 4, numel, f) == numel;
    }
    if (!ok) die_internal("%s: write failed: %s", af.tmp, strerror(errno));
    atomic_commit(&af);
    free(h.p);
}

/* ----------------------------------------------------------------------------
 * Checksums (PNG chunk CRC, zlib Adler-32) */

uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    /* a 16-entry table (reflected polynomial 0xEDB88320), two lookups a byte: const,
     * so it is thread-safe with no initialisation step */
    static const uint32_t t[16] = {
        0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4, 0x4DB26158, 0x5005713C,
        0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C, 0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C,
    };
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        crc = t[crc & 15] ^ (crc >> 4);
        crc = t[crc & 15] ^ (crc >> 4);
    }
    return ~crc;
}

uint32_t adler32_update(uint32_t adler, const uint8_t *p, size_t n) {
    uint32_t a = adler & 0xFFFF, b = adler >> 16;
    while (n) {
        /* 5552 bytes is the most that cannot overflow 32 bits before the modulo */
        size_t k = n < 5552 ? n : 5552;
        n -= k;
        while (k--) { a += *p++; b += a; }
        a %= 65521; b %= 65521;
    }
    return (b << 16) | a;
}

/* ----------------------------------------------------------------------------
 * PNG writer */

#define IMAGE_MAX_SIDE 16384    /* both ways: we never write what we would refuse to read */

static void put_be32(Text *b, uint32_t x) {
    unsigned char t[4] = {(unsigned char)(x >> 24), (unsigned char)(x >> 16), (unsigned char)(x >> 8), (unsigned char)x};
    text_putn(b, t, 4);
}

static void png_chunk(Text *b, const char *type, const unsigned char *data, size_t n) {
    CHECK(n <= 0x7FFFFFFF);
    put_be32(b, (uint32_t)n);
    size_t start = b->n;
    text_putn(b, type, 4);
    if (n) text_putn(b, data, n);
    put_be32(b, crc32_update(0, (const uint8_t *)b->p + start, n + 4));
}

void png_write(const char *path, int w, int h, const uint8_t *rgb) {
    CHECK(w > 0 && h > 0 && w <= IMAGE_MAX_SIDE && h <= IMAGE_MAX_SIDE && rgb);
    size_t row = 1 + (size_t)w * 3, raw_n = row * (size_t)h;
    /* the raw scanlines: filter type 0 (None) then the pixels */
    unsigned char *raw = xmalloc(raw_n);
    for (int y = 0; y < h; y++) {
        raw[y * row] = 0;
        memcpy(raw + y * row + 1, rgb + (size_t)y * w * 3, (size_t)w * 3);
    }
    /* zlib stream: header 78 01, stored deflate blocks of at most 65535 bytes, Adler-32 */
    Text z = {0};
    text_putn(&z, "\x78\x01", 2);
    size_t pos = 0;
    do {
        size_t k = raw_n - pos < 65535 ? raw_n - pos : 65535;
        unsigned char hdr[5] = {(unsigned char)(pos + k == raw_n), (unsigned char)k, (unsigned char)(k >> 8),
                                (unsigned char)~k, (unsigned char)(~k >> 8)};
        text_putn(&z, hdr, 5);
        text_putn(&z, raw + pos, k);
        pos += k;
    } while (pos < raw_n);
    put_be32(&z, adler32_update(1, raw, raw_n));
    free(raw);

    Text png = {0};
    text_putn(&png, "\x89PNG\r\n\x1a\n", 8);
    unsigned char ihdr[13] = {(unsigned char)(w >> 24), (unsigned char)(w >> 16), (unsigned char)(w >> 8), (unsigned char)w,
                              (unsigned char)(h >> 24), (unsigned char)(h >> 16), (unsigned char)(h >> 8), (unsigned char)h,
                              8, 2, 0, 0, 0};   /* 8 bits, colour type 2 (RGB), deflate, filter 0, no interlace */
    png_chunk(&png, "IHDR", ihdr, 13);
    png_chunk(&png, "IDAT", (unsigned char *)z.p, z.n);
    png_chunk(&png, "IEND", NULL, 0);
    write_file_atomic(path, png.p, png.n);
    free(z.p);
    free(png.p);
}

/* ----------------------------------------------------------------------------
 * Inflate (RFC 1951): canonical Huffman codes decoded bit by bit, as in zlib's puff.c.
 * Images are small; clarity and bounds checks matter more than speed here. */

typedef struct Inflate {
    const char *path;           /* for error messages */
    const uint8_t *in;
    size_t in_n, in_pos;
    uint32_t bitbuf;
    int bitcnt;
    uint8_t *out;
    size_t out_n, out_pos;      /* capacity (exact expected size) and fill */
} Inflate;

typedef struct Huffman {
    short count[16];            /* number of codes of each length */
    short symbol[288];          /* symbols ordered by code */
} Huffman;

static uint32_t inf_bits(Inflate *s, int need) {
    while (s->bitcnt < need) {
        if (s->in_pos >= s->in_n) die_input(s->path, "truncated image data (compressed stream ends early)");
        s->bitbuf |= (uint32_t)s->in[s->in_pos++] << s->bitcnt;
        s->bitcnt += 8;
    }
    uint32_t v = s->bitbuf & ((1u << need) - 1);
    s->bitbuf >>= need;
    s->bitcnt -= need;
    return v;
}

/* Builds a decoding table from code lengths; returns 0 if complete, > 0 if
 * incomplete, < 0 if over-subscribed. */
static int huff_build(Huffman *h, const short *len, int n) {
    memset(h->count, 0, sizeof h->count);
    for (int i = 0; i < n; i++) h->count[len[i]]++;
    if (h->count[0] == n) return 0;     /* no codes: complete, decodes nothing */
    int left = 1;
    for (int l = 1; l < 16; l++) {
        left <<= 1;
        left -= h->count[l];
        if (left < 0) return left;
    }
    short offs[16];
    offs[1] = 0;
    for (int l = 1; l < 15; l++) offs[l + 1] = (short)(offs[l] + h->count[l]);
    for (int i = 0; i < n; i++)
        if (len[i]) h->symbol[offs[len[i]]++] = (short)i;
    return left;
}

static int huff_decode(Inflate *s, const Huffman *h) {
    int code = 0, first = 0, index = 0;
    for (int l = 1; l < 16; l++) {
        code |= (int)inf_bits(s, 1);
        int count = h->count[l];
        if (code - count < first) return h->symbol[index + (code - first)];
        index += count;
        first += count;
        first <<= 1;
        code <<= 1;
    }
    die_input(s->path, "corrupt image data (invalid Huffman code)");
}

static const short len_base[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const short len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const short dist_base[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const short dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void inf_put(Inflate *s, uint8_t c) {
    if (s->out_pos >= s->out_n) die_input(s->path, "more image data than the header's size needs");
    s->out[s->out_pos++] = c;
}

static void inf_codes(Inflate *s, const Huffman *lit, const Huffman *dist) {
    for (;;) {
        int sym = huff_decode(s, lit);
        if (sym < 256) { inf_put(s, (uint8_t)sym); continue; }
        if (sym == 256) return;
        sym -= 257;
        if (sym >= 29) die_input(s->path, "corrupt image data (invalid length code)");
        size_t len = (size_t)len_base[sym] + inf_bits(s, len_extra[sym]);
        int ds = huff_decode(s, dist);
        if (ds >= 30) die_input(s->path, "corrupt image data (invalid distance code)");
        size_t d = (size_t)dist_base[ds] + inf_bits(s, dist_extra[ds]);
        if (d > s->out_pos) die_input(s->path, "corrupt image data (distance too far back)");
        for (size_t k = 0; k < len; k++) inf_put(s, s->out[s->out_pos - d]);
    }
}

static void inf_stored(Inflate *s) {
    s->bitbuf = 0;              /* a stored block starts at the next byte boundary */
    s->bitcnt = 0;
    if (s->in_n - s->in_pos < 4) die_input(s->path, "truncated image data (stored block header)");
    const uint8_t *p = s->in + s->in_pos;
    unsigned len = p[0] | (unsigned)p[1] << 8, nlen = p[2] | (unsigned)p[3] << 8;
    if (len != (~nlen & 0xFFFF)) die_input(s->path, "corrupt image data (stored block length check)");
    s->in_pos += 4;
    if (s->in_n - s->in_pos < len) die_input(s->path, "truncated image data (stored block)");
    if (s->out_n - s->out_pos < len) die_input(s->path, "more image data than the header's size needs");
    memcpy(s->out + s->out_pos, s->in + s->in_pos, len);
    s->in_pos += len;
    s->out_pos += len;
}

static void inf_fixed(Inflate *s) {
    /* built per block (cheap) rather than cached, so concurrent readers share nothing */
    Huffman lit, dist;
    short l[288];
    int i = 0;
    for (; i < 144; i++) l[i] = 8;
    for (; i < 256; i++) l[i] = 9;
    for (; i < 280; i++) l[i] = 7;
    for (; i < 288; i++) l[i] = 8;
    huff_build(&lit, l, 288);
    for (i = 0; i < 30; i++) l[i] = 5;
    huff_build(&dist, l, 30);
    inf_codes(s, &lit, &dist);
}

static void inf_dynamic(Inflate *s) {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    int nlen = (int)inf_bits(s, 5) + 257, ndist = (int)inf_bits(s, 5) + 1, ncode = (int)inf_bits(s, 4) + 4;
    if (nlen > 286 || ndist > 30) die_input(s->path, "corrupt image data (bad code counts)");
    short lengths[320] = {0};
    for (int i = 0; i < ncode; i++) lengths[order[i]] = (short)inf_bits(s, 3);
    Huffman lencode, lit, dist;
    if (huff_build(&lencode, lengths, 19) != 0) die_input(s->path, "corrupt image data (incomplete code-length code)");
    for (int i = 0; i < nlen + ndist;) {
        int sym = huff_decode(s, &lencode);
        if (sym < 16) { lengths[i++] = (short)sym; continue; }
        short v = 0;
        int rep;
        if (sym == 16) {
            if (i == 0) die_input(s->path, "corrupt image data (repeat with no previous length)");
            v = lengths[i - 1];
            rep = 3 + (int)inf_bits(s, 2);
        } else if (sym == 17) rep = 3 + (int)inf_bits(s, 3);
        else rep = 11 + (int)inf_bits(s, 7);
        if (i + rep > nlen + ndist) die_input(s->path, "corrupt image data (too many code lengths)");
        while (rep--) lengths[i++] = v;
    }
    if (lengths[256] == 0) die_input(s->path, "corrupt image data (no end-of-block code)");
    /* incomplete codes are allowed only when a single code is used (RFC 1951, puff) */
    int err = huff_build(&lit, lengths, nlen);
    if (err < 0 || (err > 0 && nlen - lit.count[0] != 1)) die_input(s->path, "corrupt image data (bad literal/length code)");
    err = huff_build(&dist, lengths + nlen, ndist);
    if (err < 0 || (err > 0 && ndist - dist.count[0] != 1)) die_input(s->path, "corrupt image data (bad distance code)");
    inf_codes(s, &lit, &dist);
}

/* Inflates a zlib stream into out[0..out_n), which it must fill exactly. */
static void zlib_inflate(const char *path, const uint8_t *in, size_t in_n, uint8_t *out, size_t out_n) {
    if (in_n < 6) die_input(path, "truncated image data (zlib stream too short)");
    if ((in[0] & 0x0F) != 8 || (in[0] >> 4) > 7 || ((unsigned)in[0] << 8 | in[1]) % 31 != 0)
        die_input(path, "corrupt image data (bad zlib header)");
    if (in[1] & 0x20) die_input(path, "corrupt image data (zlib preset dictionary)");
    Inflate s = {path, in, in_n, 2, 0, 0, out, out_n, 0};
    int last;
    do {
        last = (int)inf_bits(&s, 1);
        int type = (int)inf_bits(&s, 2);
        if (type == 0) inf_stored(&s);
        else if (type == 1) inf_fixed(&s);
        else if (type == 2) inf_dynamic(&s);
        else die_input(path, "corrupt image data (invalid block type 3)");
    } while (!last);
    if (s.out_pos != out_n) die_input(path, "image data too short: %zu of %zu bytes", s.out_pos, out_n);
    if (s.in_n - s.in_pos < 4) die_input(path, "truncated image data (no Adler-32)");
    const uint8_t *a = in + s.in_pos;
    uint32_t want = (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
    if (adler32_update(1, out, out_n) != want) die_input(path, "corrupt image data (Adler-32 mismatch)");
}

/* ----------------------------------------------------------------------------
 * PNG and PPM readers */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

static void png_read(const char *path, const uint8_t *d, size_t n, Image *img) {
    size_t pos = 8;
    int w = 0, h = 0, bpp = 0, seen_ihdr = 0, seen_iend = 0;
    Text idat = {0};
    while (!seen_iend) {
        if (n - pos < 12) die_input(path, "truncated PNG (chunk header at byte %zu)", pos);
        uint32_t len = be32(d + pos);
        const uint8_t *type = d + pos + 4;
        if (len > 0x7FFFFFFF || len > n - pos - 12) die_input(path, "truncated PNG (chunk at byte %zu claims %u bytes)", pos, len);
        for (int k = 0; k < 4; k++)
            if (!((type[k] >= 'A' && type[k] <= 'Z') || (type[k] >= 'a' && type[k] <= 'z'))) die_input(path, "corrupt PNG (bad chunk type at byte %zu)", pos);
        const uint8_t *data = d + pos + 8;
        if (crc32_update(0, type, 4 + (size_t)len) != be32(data + len))
            die_input(path, "corrupt PNG (CRC mismatch in %.4s chunk)", (const char *)type);
        if (!seen_ihdr && memcmp(type, "IHDR", 4) != 0) die_input(path, "corrupt PNG (first chunk is not IHDR)");
        if (memcmp(type, "IHDR", 4) == 0) {
            if (seen_ihdr || len != 13) die_input(path, "corrupt PNG (bad IHDR)");
            seen_ihdr = 1;
            uint32_t uw = be32(data), uh = be32(data + 4);
            if (uw == 0 || uh == 0) die_input(path, "PNG has zero width or height");
            if (uw > IMAGE_MAX_SIDE || uh > IMAGE_MAX_SIDE) die_input(path, "PNG is %ux%u, larger than %d pixels a side", uw, uh, IMAGE_MAX_SIDE);
            w = (int)uw; h = (int)uh;
            if (data[8] != 8) die_input(path, "PNG bit depth %d is not supported (only 8)", data[8]);
            if (data[9] == 2) bpp = 3;
            else if (data[9] == 6) bpp = 4;
            else die_input(path, "PNG colour type %d is not supported (only RGB and RGBA)", data[9]);
            if (data[10] != 0 || data[11] != 0) die_input(path, "corrupt PNG (unknown compression or filter method)");
            if (data[12] != 0) die_input(path, "interlaced PNG is not supported");
        } else if (memcmp(type, "IDAT", 4) == 0) {
            text_putn(&idat, data, len);
        } else if (memcmp(type, "IEND", 4) == 0) {
            seen_iend = 1;
        } else if (type[0] >= 'A' && type[0] <= 'Z' && memcmp(type, "PLTE", 4) != 0) {
            /* an unknown critical chunk: the spec says a decoder must refuse */
            die_input(path, "PNG has an unsupported critical chunk %.4s", (const char *)type);
        }
        pos += 12 + (size_t)len;
    }
    if (idat.n == 0) die_input(path, "PNG has no image data (no IDAT chunk)");
    size_t stride = (size_t)w * (size_t)bpp, raw_n = (stride + 1) * (size_t)h;
    /* deflate cannot expand more than ~1032:1: refuse a tiny IDAT before allocating */
    if (raw_n / 1032 > idat.n + 64) die_input(path, "truncated PNG (too little image data for %dx%d)", w, h);
    uint8_t *raw = xmalloc(raw_n);
    zlib_inflate(path, (const uint8_t *)idat.p, idat.n, raw, raw_n);
    free(idat.p);

    /* undo the per-row filters in place; "prior" is the already-decoded row above */
    for (int y = 0; y < h; y++) {
        uint8_t *row = raw + (size_t)y * (stride + 1), *cur = row + 1;
        const uint8_t *prior = y ? raw + (size_t)(y - 1) * (stride + 1) + 1 : NULL;
        int ft = row[0];
        if (ft > 4) die_input(path, "corrupt PNG (filter type %d in row %d)", ft, y);
        for (size_t x = 0; x < stride; x++) {
            int a = x >= (size_t)bpp ? cur[x - bpp] : 0, b = prior ? prior[x] : 0;
            int c = prior && x >= (size_t)bpp ? prior[x - bpp] : 0, v = cur[x];
            switch (ft) {
            case 1: v += a; break;
            case 2: v += b; break;
            case 3: v += (a + b) / 2; break;
            case 4: v += paeth(a, b, c); break;
            default: break;
            }
            cur[x] = (uint8_t)v;
        }
    }
    img->w = w; img->h = h;
    img->rgb = xmalloc((size_t)w * h * 3);
    /* RGBA: the alpha channel is dropped (our images are opaque) */
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(img->rgb + ((size_t)y * w + x) * 3, raw + (size_t)y * (stride + 1) + 1 + (size_t)x * bpp, 3);
    free(raw);
}

/* Reads one PPM header field (a decimal number), skipping whitespace and comments. */
static long ppm_field(const char *path, const uint8_t *d, size_t n, size_t *pos) {
    for (;;) {
        while (*pos < n && (d[*pos] == ' ' || d[*pos] == '\t' || d[*pos] == '\n' || d[*pos] == '\r' || d[*pos] == '\v' || d[*pos] == '\f')) (*pos)++;
        if (*pos < n && d[*pos] == '#') { while (*pos < n && d[*pos] != '\n') (*pos)++; continue; }
        break;
    }
    long v = 0;
    int digits = 0;
    while (*pos < n && d[*pos] >= '0' && d[*pos] <= '9') {
        if (v > 100000) die_input(path, "PPM header number too large");
        v = v * 10 + (d[*pos] - '0');
        (*pos)++; digits++;
    }
    if (!digits) die_input(path, "corrupt PPM header");
    return v;
}

static void ppm_read(const char *path, const uint8_t *d, size_t n, Image *img) {
    size_t pos = 2;
    long w = ppm_field(path, d, n, &pos), h = ppm_field(path, d, n, &pos), maxval = ppm_field(path, d, n, &pos);
    if (w <= 0 || h <= 0 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE) die_input(path, "PPM size %ldx%ld is not supported", w, h);
    if (maxval != 255) die_input(path, "PPM maxval %ld is not supported (only 255)", maxval);
    if (pos >= n || !(d[pos] == ' ' || d[pos] == '\t' || d[pos] == '\n' || d[pos] == '\r'))
        die_input(path, "corrupt PPM header (no whitespace before the pixels)");
    pos++;
    size_t need = (size_t)w * (size_t)h * 3;
    if (n - pos < need) die_input(path, "truncated PPM: %zu of %zu pixel bytes", n - pos, need);
    if (n - pos > need) die_input(path, "PPM has %zu extra bytes after the pixels", n - pos - need);
    img->w = (int)w; img->h = (int)h;
    img->rgb = xmalloc(need);
    memcpy(img->rgb, d + pos, need);
}

void image_read(const char *path, Image *img) {
    memset(img, 0, sizeof *img);
    size_t n;
    uint8_t *d = (uint8_t *)read_file(path, &n);
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) png_read(path, d, n, img);
    else if (n >= 2 && d[0] == 'P' && d[1] == '6') ppm_read(path, d, n, img);
    else if (n == 0) die_input(path, "empty file, not an image");
    else if (n < 8 && memcmp(d, "\x89PNG\r\n\x1a\n", n) == 0) die_input(path, "truncated PNG (%zu bytes)", n);
    else die_input(path, "not a PNG or binary PPM (P6) image");
    free(d);
}

void image_free(Image *img) {
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

void image_normalize(const Image *img, const float mean[3], const float std[3], float *out) {
    size_t hw = (size_t)img->w * img->h;
    for (int c = 0; c < 3; c++) {
        CHECK(std[c] > 0);
        for (size_t i = 0; i < hw; i++)
            out[c * hw + i] = ((float)img->rgb[i * 3 + c] * (1.0f / 255.0f) - mean[c]) / std[c];
    }
}
