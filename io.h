/* io.h: the files pulse reads and writes, with strict readers.
 *
 * - JSON: a small DOM reader and writer of our own (UTF-8, escapes, numbers that
 *   round-trip exactly: doubles printed with %.17g only when shorter forms fail).
 * - Atomic writes: every file is written to NAME.tmp, flushed, fsync'ed, renamed.
 * - safetensors: 8-byte LE header length, JSON header, data; F32 written, F32/F16/BF16
 *   read (converted to F32). Every rule of the reference reader is enforced.
 * - Images: PNG writer (stored deflate blocks, CRC-32, Adler-32) and a reader for
 *   what we write plus binary PPM (P6).
 *
 * Every reader refuses bad input with die_input(path, reason): one line, exit 2.
 */
#ifndef PULSE_IO_H
#define PULSE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ----------------------------------------------------------------------------
 * JSON */
typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct Json Json;
struct Json {
    JsonType type;
    int boolean;            /* JSON_BOOL */
    double number;          /* JSON_NUMBER */
    char *string;           /* JSON_STRING (UTF-8, NUL-terminated; may hold \0 via len) */
    size_t len;             /* string length in bytes / number of items */
    Json **items;           /* JSON_ARRAY items, JSON_OBJECT values */
    char **keys;            /* JSON_OBJECT keys (insertion order kept) */
    size_t cap;
};

/* Parses text[0..n). On error returns NULL and writes a reason (with line:col) to err. */
Json *json_parse(const char *text, size_t n, char *err, size_t errlen);
/* Reads and parses a file; bad file -> die_input(path, reason). */
Json *json_load(const char *path);
void json_free(Json *j);

Json *json_new_null(void);
Json *json_new_bool(int b);
Json *json_new_number(double x);
Json *json_new_string(const char *s);
Json *json_new_stringn(const char *s, size_t len);       /* may hold \0 bytes */
Json *json_new_array(void);
Json *json_new_object(void);
void json_push(Json *arr, Json *item);                    /* takes ownership */
void json_set(Json *obj, const char *key, Json *value);   /* replaces an existing key */
void json_add(Json *obj, const char *key, Json *value);   /* appends; key must be new (O(1)) */
Json *json_get(const Json *obj, const char *key);         /* NULL if absent or not object */
/* Typed getters with a default when absent; a present value of the wrong type is an
 * input error naming path and key. */
double json_get_number(const Json *obj, const char *key, double def, const char *path);
const char *json_get_string(const Json *obj, const char *key, const char *def, const char *path);
int json_get_bool(const Json *obj, const char *key, int def, const char *path);
/* An integral number in [lo, hi]; anything else present is an input error. */
long json_get_int(const Json *obj, const char *key, long def, long lo, long hi, const char *path);

/* Serialises (compact when indent == 0, else pretty with that many spaces). malloc'ed. */
char *json_dump(const Json *j, int indent);
/* Writes one JSON string literal (quotes and escapes) to f. */
void json_write_string(FILE *f, const char *s);
/* Shortest decimal that parses back to the same double ("1e-05", "0.1", "3"); buf needs
 * n >= 32. Non-finite values are written as null (JSON has no NaN/Infinity). */
void json_format_number(char *buf, size_t n, double x);
/* Decodes one UTF-8 sequence at s[0..n): returns its length (1-4) and the code point,
 * or 0 if it is invalid (overlong, surrogate, > U+10FFFF, truncated). */
int utf8_next(const char *s, size_t n, uint32_t *cp);

/* ----------------------------------------------------------------------------
 * Atomic writes: the file appears complete under its final name or not at all. */
typedef struct AtomicFile {
    FILE *f;
    char *path;             /* final name */
    char *tmp;              /* path + ".tmp" (registered for removal on exit 2) */
} AtomicFile;

FILE *atomic_open(AtomicFile *af, const char *path);      /* dies (exit 1) on failure */
void atomic_commit(AtomicFile *af);                       /* flush, fsync, rename */
void atomic_abort(AtomicFile *af);                        /* remove the temporary */
/* Writes a whole buffer / a JSON value (pretty, trailing newline) atomically. */
void write_file_atomic(const char *path, const void *data, size_t n);
void json_save(const char *path, const Json *j);
/* Reads a whole file (NUL-terminated); missing or unreadable -> die_input. */
char *read_file(const char *path, size_t *n);
int file_exists(const char *path);                        /* any existing path */
int dir_exists(const char *path);                         /* an existing directory */
/* mkdir -p; dies on failure. */
void make_dirs(const char *path);
int dir_is_empty(const char *dir);                        /* an existing directory with no entries */
/* An output directory named on the command line, checked before any work (exit 2 if not
 * usable): a directory, or missing and possible to create (tried, and undone); when
 * `own` is given (what this kind of output always holds: a command that replaces the
 * directory whole), a directory that is not empty must hold it. */
void out_dir_check(const char *out, const char *own);

/* ----------------------------------------------------------------------------
 * safetensors */
typedef struct StTensor {
    char *name;
    int ndim;
    int64_t shape[8];
    float *data;            /* converted to F32, malloc'ed (reader) or borrowed (writer) */
    char dtype[8];          /* "F32", "F16", "BF16" as found in the file */
} StTensor;

typedef struct StFile {
    StTensor *t;
    int n;
    Json *metadata;         /* the "__metadata__" object or NULL */
} StFile;

/* Strict reader: header bounds, JSON, dtypes, offsets contiguous from 0 with no gaps or
 * overlaps and ending at the end of file, sizes = numel * dtype size, finite values.
 * Bad file -> die_input(path, reason). */
void st_read(const char *path, StFile *out);
const StTensor *st_find(const StFile *f, const char *name);
void st_free(StFile *f);
/* Writes F32 tensors in the given order (data offsets in that order), header padded
 * with spaces to a multiple of 8; metadata (string->string object) may be NULL. Atomic. */
void st_write(const char *path, const StTensor *t, int n, const Json *metadata);

/* ----------------------------------------------------------------------------
 * Images: 8-bit RGB, row-major, 3 bytes a pixel. */
typedef struct Image {
    int w, h;
    uint8_t *rgb;           /* w*h*3 bytes, malloc'ed */
} Image;

void png_write(const char *path, int w, int h, const uint8_t *rgb); /* atomic */
/* Reads PNG (8-bit RGB or RGBA, any zlib stream we can inflate: stored blocks
 * and fixed/dynamic Huffman) or binary PPM (P6, maxval 255). Bad file -> die_input. */
void image_read(const char *path, Image *img);
void image_free(Image *img);
/* zlib semantics: start with crc = 0; the result of one call feeds the next. */
uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n);
uint32_t adler32_update(uint32_t adler, const uint8_t *p, size_t n); /* start with 1 */
/* Pixel preprocessing (HF CLIPImageProcessor without resize/crop): out[c][y][x] =
 * (rgb/255 - mean[c]) / std[c], channels first; out holds 3*h*w floats. */
void image_normalize(const Image *img, const float mean[3], const float std[3], float *out);
/* FNV-1a 64 of a whole file (for inspect and provenance); missing -> die_input. */
uint64_t file_hash64(const char *path);

#endif
