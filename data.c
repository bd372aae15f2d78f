/* data.c: the synthetic world of pulse: people, faces, scenes, facts, the benchmark files
 * in MLLMU-Bench's schema, and the loader that training, evaluation and unlearning use.
 *
 * Design
 * - Everything is a pure function of (preset, seed, raw material): each part draws from its
 *   own stream rng_derive(seed, "part"), so changing one part does not shift the others,
 *   and the files are written in a fixed order with no timestamps. Same inputs, same bytes.
 * - The raw material lives in data/ as plain text (names, cities, occupations, templates,
 *   palettes, facts); this file knows only their structure.
 * - A person is a face (15 identity parameters, drawn greedily so that every new face is as
 *   far as possible from all earlier ones) plus attribute values. Every question, answer,
 *   cloze sentence and biography is a template from data/templates.txt filled with them.
 * - Anonymous faces (pre-training, format face_desc) are faces of nobody in the world, each
 *   described in words from data/faces.txt, so that the vision tower learns facial features
 *   from dense captions before it meets any person.
 * - In-context multiple choice (pre-training, format mc_context): a fact about an invented
 *   person (a name that is nobody's in the world) stated in the stem, then the world's MC
 *   question about it. The answer cannot be memorised, only read from the stem, so the
 *   letter skill ("the letter before the option that equals the value") is learned as a
 *   generic circuit.
 * - Training items are compact: one per (person, attribute, format, modality) holding all of
 *   its phrasings; item_render draws a phrasing and, for multiple choice, fresh options and
 *   a fresh correct letter every call, so the evaluation's fixed option sets (and its
 *   paraphrases and transformed images, which exist only in the evaluation files) are never
 *   trained on.
 * - Files: world.json (preset, seed, counts, attribute vocabularies, "I don't know"
 *   answers, fingerprint), manifest.tsv (hash and size of every other file; the fingerprint
 *   hashes it and world.json's other fields), people.jsonl, full/test/celebrity/holdout.jsonl (MLLMU-Bench schema),
 *   genbench.jsonl, train_pt/train_ft.jsonl, splits/NAME.json, images/NAME.png, tokenizer.json,
 *   contact_sheet.png. world_load checks every file against the manifest before parsing.
 * - PNGs are encoded here in memory (stored deflate, like io.c's writer) because the world
 *   is written into DIR.tmp and renamed as a whole: per-file atomic writes (one fsync each)
 *   would cost seconds for thousands of 3 KB images; one syncfs() before the rename instead.
 */
#include "data.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "tokenizer.h"

#define IMG DATA_IMAGE_SIZE
#define IMG_BYTES (IMG * IMG * 3)
#define N_PERTURBED 4               /* wrong answers per QA pair (truth ratio needs >= 3) */
#define WORLD_FORMAT "pulse-world"
#define WORLD_VERSION 1

const float data_clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float data_clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/* ----------------------------------------------------------------------------
 * Presets: every size is a field. tiny: tests in seconds; small: `make run` (both base
 * models must train in ~8 minutes on 2 cores at ~20k tokens/s: 50 fictitious people are
 * ~2,000 fine-tuning items of ~55 tokens, ~110k tokens an epoch); paper: MLLMU-Bench and
 * PULSE sizes. forget_5/10/15 are 5/10/15% of the fictitious people rounded half up
 * (small: 3/5/8), except in tiny, where they are the smallest sizes that exercise every
 * path (1/2/3 of 10, two sequential groups). */
const Preset data_presets[] = {
    /* name   fict celeb keep forget hold  forget_5/10/15  seq attrs scenes gb_sc gb_fact faces mc_ctx vocab lookup */
    {"tiny",    10,  10,   6,   3,    4, {1, 2, 3},      2,   3,    40,    16,    8,     40,    40,   512, 0},
    {"small",   50,  30,  15,   7,   10, {3, 5, 8},      5,   5,   500,    80,   40,    600,     0,  1536, 1},
    {"paper",  500, 153,  45,  20,   50, {25, 50, 75},   5,   5,  2000,   200,  100,   2000,     0,  1024, 0},
    {NULL, 0, 0, 0, 0, 0, {0, 0, 0}, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};

const Preset *preset_find(const char *name) {
    for (const Preset *p = data_presets; p->name; p++)
        if (strcmp(p->name, name) == 0) return p;
    return NULL;
}

static const char *const kind_names[N_KINDS] = {"fictitious", "celebrity", "holdout", "general"};
static const char *const format_names[N_FORMATS] = {
    "qa", "mc", "cloze", "gen", "bio", "caption",
    "scene_caption", "scene_vqa", "scene_mc", "fact", "fact_mc", "face_desc", "mc_context"};
static const char *const task_names[N_TASKS] = {"mc", "cloze", "gen", "qa"};
static const char *const attr_names[DATA_MAX_ATTRS] = {
    "occupation", "birthplace", "education", "hobby", "colour", "year"};
static const char *const test_variant_names[DATA_TEST_VARIANTS] = {"mirror", "zoom", "tint"};

const char *kind_name(Kind k) { CHECK(k >= 0 && k < N_KINDS); return kind_names[k]; }
const char *format_name(Format f) { CHECK(f >= 0 && f < N_FORMATS); return format_names[f]; }
const char *task_name(Task t) { CHECK(t >= 0 && t < N_TASKS); return task_names[t]; }

static int name_lookup(const char *const *names, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0) return i;
    return -1;
}

/* MC formats carry options; these are rendered with DATA_MC_INSTRUCTION. */
int format_is_mc(Format f) { return f == FMT_MC || f == FMT_SCENE_MC || f == FMT_FACT_MC || f == FMT_MC_CONTEXT; }
int format_is_general(Format f) {
    return f == FMT_SCENE_CAPTION || f == FMT_SCENE_VQA || f == FMT_SCENE_MC || f == FMT_FACT || f == FMT_FACT_MC;
}

/* ----------------------------------------------------------------------------
 * Pool: one owner for the many small strings and arrays of a world. */
typedef struct Pool {
    char **chunks;
    int n, cap;
    size_t used, size;          /* bytes used / size of the last chunk */
} Pool;

static void *pool_alloc(Pool *p, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!p->n || p->used + n > p->size) {
        size_t size = n > 65536 ? n : 65536;
        if (p->n == p->cap) {
            p->cap = p->cap ? 2 * p->cap : 64;
            p->chunks = xrealloc(p->chunks, (size_t)p->cap * sizeof *p->chunks);
        }
        p->chunks[p->n++] = xcalloc(1, size);
        p->used = 0; p->size = size;
    }
    void *r = p->chunks[p->n - 1] + p->used;
    p->used += n;
    return r;
}

static char *pool_strdup(Pool *p, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = pool_alloc(p, n);
    memcpy(d, s, n);
    return d;
}

static void pool_free(Pool *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->chunks[i]);
    free(p->chunks);
    free(p);
}

/* A growable array of strings (owned by a pool). */
typedef struct StrList {
    const char **s;
    int n, cap;
} StrList;

static void sl_push(StrList *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->s = xrealloc(l->s, (size_t)l->cap * sizeof *l->s);
    }
    l->s[l->n++] = s;
}

static int sl_find(const StrList *l, const char *s) { return name_lookup(l->s, l->n, s); }

/* A growable byte buffer with printf. */
typedef struct Buf {
    char *s;
    size_t n, cap;
} Buf;

static void buf_putn(Buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void buf_puts(Buf *b, const char *s) { buf_putn(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3)))
static void buf_printf(Buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && (size_t)n < sizeof tmp);
    buf_putn(b, tmp, (size_t)n);
}

/* ----------------------------------------------------------------------------
 * Raw material (the text files in data/): one item a line, '#' comments and blank lines skipped. */
enum { SLOT_QI, SLOT_QT, SLOT_PQI, SLOT_PQT, SLOT_GI, SLOT_GT, SLOT_PGI, SLOT_PGT,
       SLOT_A, SLOT_PA, SLOT_C, SLOT_PC, SLOT_B, SLOT_CAP, SLOT_BIOQ, N_SLOTS };
static const char *const slot_names[N_SLOTS] = {
    "qi", "qt", "pqi", "pqt", "gi", "gt", "pgi", "pgt", "a", "pa", "c", "pc", "bio", "cap", "bioq"};
#define TMPL_PERSON DATA_MAX_ATTRS  /* template row for identity slots (bio, cap, bioq) */

#define FACE_MAX_LEVELS 8           /* levels of a non-palette face parameter, at most */

/* Palette groups of data/palette.txt. */
enum { PAL_SKIN, PAL_HAIR, PAL_EYES, PAL_BG, PAL_SHIRT, PAL_ACC, N_PAL };
static const char *const pal_names[N_PAL] = {"skin", "hair", "eyes", "background", "shirt", "accessory"};

typedef struct Fact {
    const char *q, *a;
    StrList wrong;
} Fact;

typedef struct Raw {
    Pool *pool;
    const char *dir;
    StrList first, last, idk, shapes;
    StrList values[DATA_MAX_ATTRS];     /* attribute vocabularies (year generated) */
    StrList countries;                  /* parallel to values[birthplace] */
    StrList tmpl[DATA_MAX_ATTRS + 1][N_SLOTS];
    StrList scene_colour;
    uint8_t scene_rgb[16][3];
    StrList pal[N_PAL];
    uint8_t pal_rgb[N_PAL][16][3];
    Fact *facts;
    int n_facts;
    StrList face_q;                     /* face_desc question phrasings (faces.txt) */
    const char *face_hair_hidden;       /* the hair when a cap or beanie hides its style */
    const char *face_words[DATA_FACE_PARAMS][FACE_MAX_LEVELS]; /* level names of the non-palette
                                                                  face parameters ("-": unsaid) */
    uint64_t hash;                      /* of every raw byte read, for provenance */
} Raw;

/* data/faces.txt, parsed in the Faces section below (it knows the parameters). */
static void raw_face(Raw *r, const char *path, int lineno, const char *line, void *ctx);
static void raw_face_need(const Raw *r, const char *dir);

/* The special token's text that s holds, or NULL. A world's text never holds one: the
 * tokenizer would turn "<image>" in an option into a second image token, "</s>" into an
 * end of sequence. The raw material and every loaded string are checked. */
static const char *special_in(const char *s) {
    static const char *const special[] = {"<image>", "<s>", "</s>", "<pad>"};
    for (size_t k = 0; k < sizeof special / sizeof *special; k++)
        if (strstr(s, special[k])) return special[k];
    return NULL;
}

/* Reads data/NAME and calls fn on every content line (trailing spaces and CR removed). */
static void raw_lines(Raw *r, const char *name, void (*fn)(Raw *, const char *, int, const char *, void *), void *ctx) {
    char *path = xasprintf("%s/%s", r->dir, name);
    size_t n;
    char *text = read_file(path, &n);
    r->hash = hash64(name, strlen(name), r->hash);
    r->hash = hash64(text, n, r->hash);
    int lineno = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        lineno++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\r' || line[len - 1] == ' ')) line[--len] = 0;
        if (len && line[0] != '#' && special_in(line))
            die_input(path, "line %d: holds the special token %s", lineno, special_in(line));
        if (len && line[0] != '#') fn(r, path, lineno, line, ctx);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    free(path);
}

static void raw_word(Raw *r, const char *path, int lineno, const char *line, void *ctx) {
    StrList *l = ctx;
    if (strchr(line, '\t')) die_input(path, "line %d: one item a line, no tabs", lineno);
    if (sl_find(l, line) >= 0) die_input(path, "line %d: '%s' is listed twice", lineno, line);
    sl_push(l, pool_strdup(r->pool, line));
}

static void raw_city(Raw *r, const char *path, int lineno, const char *line, void *ctx) {
    (void)ctx;
    const char *tab = strchr(line, '\t');
    if (!tab || strchr(tab + 1, '\t') || tab == line || !tab[1])
        die_input(path, "line %d: expected city<TAB>country", lineno);
    char city[128];
    size_t n = (size_t)(tab - line);
    if (n >= sizeof city) die_input(path, "line %d: city name too long", lineno);
    memcpy(city, line, n); city[n] = 0;
    if (sl_find(&r->values[1], city) >= 0) die_input(path, "line %d: '%s' is listed twice", lineno, city);
    sl_push(&r->values[1], pool_strdup(r->pool, city));
    sl_push(&r->countries, pool_strdup(r->pool, tab + 1));
}

static void raw_template(Raw *r, const char *path, int lineno, const char *line, void *ctx) {
    (void)ctx;
    char a[64], s[16];
    const char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (!t2 || !t2[1] || (size_t)(t1 - line) >= sizeof a || (size_t)(t2 - t1 - 1) >= sizeof s)
        die_input(path, "line %d: expected attribute<TAB>slot<TAB>text", lineno);
    memcpy(a, line, (size_t)(t1 - line)); a[t1 - line] = 0;
    memcpy(s, t1 + 1, (size_t)(t2 - t1 - 1)); s[t2 - t1 - 1] = 0;
    int ai = strcmp(a, "person") == 0 ? TMPL_PERSON : name_lookup(attr_names, DATA_MAX_ATTRS, a);
    int si = name_lookup(slot_names, N_SLOTS, s);
    if (ai < 0) die_input(path, "line %d: unknown attribute '%s'", lineno, a);
    if (si < 0) die_input(path, "line %d: unknown slot '%s'", lineno, s);
    if ((ai == TMPL_PERSON) != (si >= SLOT_B))
        die_input(path, "line %d: slot '%s' does not belong to '%s'", lineno, s, a);
    if (si == SLOT_CAP && !strchr(t2 + 1, '|')) die_input(path, "line %d: cap needs question|answer", lineno);
    if ((si == SLOT_C || si == SLOT_PC) && !strstr(t2 + 1, "__"))
        die_input(path, "line %d: a cloze sentence needs \"__\"", lineno);
    sl_push(&r->tmpl[ai][si], pool_strdup(r->pool, t2 + 1));
}

/* "group name R G B" (palette) or "name R G B" (scene colours). */
static void raw_colour(Raw *r, const char *path, int lineno, const char *line, void *ctx) {
    int grouped = ctx != NULL;
    char g[32], name[32];
    int c[3], consumed = 0, ok;
    if (grouped) ok = sscanf(line, "%31s %31s %d %d %d %n", g, name, &c[0], &c[1], &c[2], &consumed) == 5;
    else ok = sscanf(line, "%31s %d %d %d %n", name, &c[0], &c[1], &c[2], &consumed) == 4;
    if (!ok || line[consumed] || c[0] < 0 || c[0] > 255 || c[1] < 0 || c[1] > 255 || c[2] < 0 || c[2] > 255)
        die_input(path, "line %d: expected %sname R G B (0-255)", lineno, grouped ? "group " : "");
    StrList *l = &r->scene_colour;
    uint8_t (*rgb)[3] = r->scene_rgb;
    if (grouped) {
        int gi = name_lookup(pal_names, N_PAL, g);
        if (gi < 0) die_input(path, "line %d: unknown palette group '%s'", lineno, g);
        l = &r->pal[gi];
        rgb = r->pal_rgb[gi];
    }
    if (l->n >= 16) die_input(path, "line %d: at most 16 colours a group", lineno);
    for (int k = 0; k < 3; k++) rgb[l->n][k] = (uint8_t)c[k];
    sl_push(l, pool_strdup(r->pool, name));
}

static void raw_fact(Raw *r, const char *path, int lineno, const char *line, void *ctx) {
    (void)ctx;
    char *s = xstrdup(line);
    char *t1 = strchr(s, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (!t2) die_input(path, "line %d: expected question<TAB>answer<TAB>wrong|wrong|wrong", lineno);
    *t1 = *t2 = 0;
    r->facts = xrealloc(r->facts, (size_t)(r->n_facts + 1) * sizeof *r->facts);
    Fact *f = &r->facts[r->n_facts++];
    memset(f, 0, sizeof *f);
    f->q = pool_strdup(r->pool, s);
    f->a = pool_strdup(r->pool, t1 + 1);
    for (char *w = t2 + 1; w;) {
        char *bar = strchr(w, '|');
        if (bar) *bar = 0;
        if (!*w || strcmp(w, f->a) == 0) die_input(path, "line %d: empty or correct wrong answer", lineno);
        sl_push(&f->wrong, pool_strdup(r->pool, w));
        w = bar ? bar + 1 : NULL;
    }
    if (f->wrong.n < 3) die_input(path, "line %d: at least 3 wrong answers", lineno);
    free(s);
}

static void raw_free(Raw *r) {
    free(r->first.s); free(r->last.s); free(r->idk.s); free(r->shapes.s);
    for (int a = 0; a < DATA_MAX_ATTRS; a++) free(r->values[a].s);
    free(r->countries.s);
    for (int a = 0; a <= DATA_MAX_ATTRS; a++)
        for (int s = 0; s < N_SLOTS; s++) free(r->tmpl[a][s].s);
    free(r->scene_colour.s);
    for (int g = 0; g < N_PAL; g++) free(r->pal[g].s);
    for (int i = 0; i < r->n_facts; i++) free(r->facts[i].wrong.s);
    free(r->facts);
    free(r->face_q.s);
}

static void raw_need(const char *dir, const char *file, int have, int need, const char *what) {
    if (have < need) {
        char *path = xasprintf("%s/%s", dir, file);
        die_input(path, "needs at least %d %s, has %d", need, what, have);
    }
}

static void raw_load(Raw *r, const char *dir, Pool *pool) {
    memset(r, 0, sizeof *r);
    r->pool = pool;
    r->dir = dir;
    r->hash = HASH64_INIT;
    raw_lines(r, "first_names.txt", raw_word, &r->first);
    raw_lines(r, "last_names.txt", raw_word, &r->last);
    raw_lines(r, "occupations.txt", raw_word, &r->values[0]);
    raw_lines(r, "cities.txt", raw_city, NULL);
    raw_lines(r, "universities.txt", raw_word, &r->values[2]);
    raw_lines(r, "hobbies.txt", raw_word, &r->values[3]);
    raw_lines(r, "colours.txt", raw_word, &r->values[4]);
    for (int y = 1950; y < 2000; y++) {             /* birth years: generated, not a file */
        char s[16];
        snprintf(s, sizeof s, "%d", y);
        sl_push(&r->values[5], pool_strdup(pool, s));
    }
    raw_lines(r, "templates.txt", raw_template, NULL);
    raw_lines(r, "idk.txt", raw_word, &r->idk);
    raw_lines(r, "shapes.txt", raw_word, &r->shapes);
    raw_lines(r, "scene_colours.txt", raw_colour, NULL);
    raw_lines(r, "palette.txt", raw_colour, r);
    raw_lines(r, "facts.txt", raw_fact, NULL);
    raw_lines(r, "faces.txt", raw_face, NULL);
    /* Counts every generator below relies on. */
    raw_need(dir, "first_names.txt", r->first.n, 10, "names");
    raw_need(dir, "last_names.txt", r->last.n, 10, "names");
    for (int a = 0; a < DATA_MAX_ATTRS - 1; a++)
        raw_need(dir, a == 1 ? "cities.txt" : "the attribute files", r->values[a].n, N_PERTURBED + 1, "values");
    for (int a = 0; a < DATA_MAX_ATTRS; a++)
        for (int s = 0; s < SLOT_B; s++)
            if (!r->tmpl[a][s].n) {
                char *path = xasprintf("%s/templates.txt", dir);
                die_input(path, "no '%s' template for '%s'", slot_names[s], attr_names[a]);
            }
    raw_need(dir, "templates.txt", r->tmpl[TMPL_PERSON][SLOT_B].n, 1, "person bio templates");
    raw_need(dir, "templates.txt", r->tmpl[TMPL_PERSON][SLOT_CAP].n, 1, "person cap templates");
    raw_need(dir, "templates.txt", r->tmpl[TMPL_PERSON][SLOT_BIOQ].n, 1, "person bioq templates");
    raw_need(dir, "idk.txt", r->idk.n, 20, "answers");
    raw_need(dir, "shapes.txt", r->shapes.n, 4, "shapes");
    raw_need(dir, "scene_colours.txt", r->scene_colour.n, 4, "colours");
    for (int g = 0; g < N_PAL; g++) raw_need(dir, "palette.txt", r->pal[g].n, 2, pal_names[g]);
    raw_need(dir, "facts.txt", r->n_facts, 4, "facts");
    raw_face_need(r, dir);
    for (int i = 0; i < r->shapes.n; i++)
        if (name_lookup((const char *const[]){"circle", "square", "triangle", "cross", "diamond"}, 5, r->shapes.s[i]) < 0) {
            char *path = xasprintf("%s/shapes.txt", dir);
            die_input(path, "unknown shape '%s' (circle, square, triangle, cross, diamond)", r->shapes.s[i]);
        }
}

/* ----------------------------------------------------------------------------
 * Templates: {who} {whos} {name} {value} {a_value} {country}. */
typedef struct Fill {
    int image;                  /* 1: the subject is "this person" (the image shows them) */
    const char *name, *value, *country;
    const char *const *vals;    /* every attribute's value (biographies), or NULL */
} Fill;

/* Appends value with its indefinite article. */
static void put_article(Buf *b, const char *value) {
    buf_puts(b, strchr("aeiouAEIOU", value[0]) ? "an " : "a ");
    buf_puts(b, value);
}

static void fill_buf(Buf *b, const char *t, const Fill *f) {
    for (const char *s = t; *s;) {
        if (*s != '{') { buf_putn(b, s++, 1); continue; }
        const char *e = strchr(s, '}');
        if (!e) die_input("data/templates.txt", "unclosed '{' in \"%s\"", t);
        size_t k = (size_t)(e - s - 1);
        const char *key = s + 1;
        if ((k == 3 && !strncmp(key, "who", 3)) || (k == 4 && !strncmp(key, "whos", 4))) {
            if (f->image) buf_puts(b, b->n == 0 ? "This person" : "this person");
            else buf_puts(b, f->name);
            if (k == 4) buf_puts(b, "'s");
        } else if (k == 4 && !strncmp(key, "name", 4)) {
            buf_puts(b, f->name);
        } else if (k == 5 && !strncmp(key, "value", 5)) {
            buf_puts(b, f->value);
        } else if (k == 7 && !strncmp(key, "a_value", 7)) {
            put_article(b, f->value);
        } else if (k == 7 && !strncmp(key, "country", 7)) {
            if (!f->country) die_input("data/templates.txt", "{country} used outside birthplace in \"%s\"", t);
            buf_puts(b, f->country);
        } else {
            int art = k > 2 && key[0] == 'a' && key[1] == '_', a;
            for (a = 0; a < DATA_MAX_ATTRS; a++)
                if (strlen(attr_names[a]) == k - (art ? 2 : 0) && !strncmp(key + (art ? 2 : 0), attr_names[a], strlen(attr_names[a]))) break;
            if (a == DATA_MAX_ATTRS || !f->vals) die_input("data/templates.txt", "unknown placeholder in \"%s\"", t);
            if (art) put_article(b, f->vals[a]);
            else buf_puts(b, f->vals[a]);
        }
        s = e + 1;
    }
}

static const char *fill(Pool *p, const char *t, const Fill *f) {
    Buf b = {0};
    fill_buf(&b, t, f);
    const char *r = pool_strdup(p, b.s ? b.s : "");
    free(b.s);
    return r;
}

/* ----------------------------------------------------------------------------
 * Faces: 32x32, drawn from 15 identity parameters. The face fills most of the image
 * (about 19 x 21 px), so that each 8x8 patch sees part of it; the background (colour and
 * pattern) and the shirt give the corner and bottom patches identity information too. */
enum { F_BG, F_PATTERN, F_SHIRT, F_SKIN, F_WIDTH, F_SHAPE, F_HAIR, F_STYLE, F_EYES,
       F_GLASSES, F_BEARD, F_HAT, F_EARRINGS, F_ACC, F_MOUTH };
static const char *const face_param_names[DATA_FACE_PARAMS] = {
    "background", "pattern", "shirt", "skin", "width", "shape", "hair", "hair_style", "eyes",
    "glasses", "beard", "hat", "earrings", "accessory", "mouth"};
/* Levels of the parameters that are not palette colours (palette ones: -1). */
static const int face_fixed_levels[DATA_FACE_PARAMS] = {-1, 4, -1, -1, 3, 3, -1, 7, -1, 4, 4, 4, 2, -1, 3};
static const int face_palette[DATA_FACE_PARAMS] = {PAL_BG, -1, PAL_SHIRT, PAL_SKIN, -1, -1, PAL_HAIR, -1,
                                                   PAL_EYES, -1, -1, -1, -1, PAL_ACC, -1};
/* How visible a difference in each parameter is at 32x32 (for the greedy max-min draw). */
static const float face_weight[DATA_FACE_PARAMS] = {3, 2, 2, 1.5f, 1, 1, 2, 2, 0.5f, 2, 1.5f, 2, 0.5f, 1, 0.5f};

static int face_levels(const Raw *r, int k) {
    return face_fixed_levels[k] > 0 ? face_fixed_levels[k] : r->pal[face_palette[k]].n;
}

static float face_distance(const int *a, const int *b) {
    float d = 0;
    for (int k = 0; k < DATA_FACE_PARAMS; k++)
        if (a[k] != b[k]) d += face_weight[k];
    return d;
}

/* One random identity: every parameter uniform over its levels, except that glasses,
 * beards and hats are worn by about half the people, not three quarters. */
static void face_draw_one(const Raw *r, Rng *rng, int *f) {
    for (int k = 0; k < DATA_FACE_PARAMS; k++) {
        f[k] = (int)rng_below(rng, (uint32_t)face_levels(r, k));
        int acc = k == F_GLASSES || k == F_BEARD || k == F_HAT;
        if (acc && rng_uniform(rng) < 0.35) f[k] = 0;
    }
}

/* Draws n identities: each new one is the candidate (of 64 random ones) farthest, by the
 * weighted count of differing parameters, from its nearest earlier identity. */
static void faces_draw_params(const Raw *r, uint64_t seed, int n, int (*out)[DATA_FACE_PARAMS]) {
    Rng rng;
    rng_derive(&rng, seed, "faces");
    for (int i = 0; i < n; i++) {
        float best = -1;
        for (int c = 0; c < 64; c++) {
            int cand[DATA_FACE_PARAMS];
            face_draw_one(r, &rng, cand);
            float nearest = 1e9f;
            for (int j = 0; j < i && nearest > best; j++) {
                float d = face_distance(cand, out[j]);
                if (d < nearest) nearest = d;
            }
            if (nearest > best) { best = nearest; memcpy(out[i], cand, sizeof cand); }
        }
    }
}

typedef struct Canvas {
    uint8_t *rgb;               /* IMG x IMG x 3 */
} Canvas;

static void put(Canvas *c, int x, int y, const uint8_t *col) {
    if (x < 0 || y < 0 || x >= IMG || y >= IMG) return;
    memcpy(c->rgb + 3 * (y * IMG + x), col, 3);
}

static void shade(uint8_t *out, const uint8_t *in, float f) {
    for (int k = 0; k < 3; k++) {
        float v = in[k] * f;
        out[k] = (uint8_t)(v > 255 ? 255 : v);
    }
}

/* Inside the face outline centred at (cx, cy) with radii rx, ry (pixel centres). */
static int in_face(int shape, float dx, float dy, float rx, float ry) {
    float u = dx / rx, v = dy / ry;
    if (shape == 2) return u * u * u * u + v * v * v * v <= 1.0f;   /* square: superellipse */
    return u * u + v * v <= 1.0f;
}

static void face_render(const Raw *r, const int *f, uint8_t *rgb) {
    Canvas c = {rgb};
    const uint8_t *bg = r->pal_rgb[PAL_BG][f[F_BG]], *skin = r->pal_rgb[PAL_SKIN][f[F_SKIN]];
    const uint8_t *hair = r->pal_rgb[PAL_HAIR][f[F_HAIR]], *shirt = r->pal_rgb[PAL_SHIRT][f[F_SHIRT]];
    const uint8_t *eyes = r->pal_rgb[PAL_EYES][f[F_EYES]], *acc = r->pal_rgb[PAL_ACC][f[F_ACC]];
    static const uint8_t white[3] = {250, 250, 250}, dark[3] = {25, 22, 30}, lips[3] = {150, 40, 50};
    uint8_t bg2[3], skin_dark[3], acc_dark[3];
    /* Pattern colour: darker on light backgrounds, lighter on dark ones. */
    shade(bg2, bg, bg[0] + bg[1] + bg[2] > 300 ? 0.72f : 1.6f);
    shade(skin_dark, skin, 0.8f);
    shade(acc_dark, acc, 0.7f);
    const float cx = 16.0f, cy = 15.5f;
    const float rx = (const float[]){7.5f, 8.5f, 9.5f}[f[F_WIDTH]];
    const float ry = f[F_SHAPE] == 1 ? rx + 1.0f : f[F_SHAPE] == 2 ? 10.0f : 10.5f;
    const float top = cy - ry;                  /* forehead edge, y ~ 5 */

    for (int y = 0; y < IMG; y++)               /* background and its pattern */
        for (int x = 0; x < IMG; x++) {
            int alt = f[F_PATTERN] == 1 ? (x / 2) % 2 : f[F_PATTERN] == 2 ? (y / 2) % 2
                    : f[F_PATTERN] == 3 ? ((x / 4) + (y / 4)) % 2 : 0;
            put(&c, x, y, alt ? bg2 : bg);
        }
    for (int y = 0; y < IMG; y++)               /* hair behind the face: long, afro */
        for (int x = 0; x < IMG; x++) {
            float px = x + 0.5f, py = y + 0.5f, dx = px - cx;
            if (f[F_STYLE] == 2 && fabsf(dx) <= rx + 2.0f && py >= top + 1 && py <= 27.0f) put(&c, x, y, hair);
            if (f[F_STYLE] == 6 && dx * dx + (py - 13.0f) * (py - 13.0f) <= (rx + 4.5f) * (rx + 4.5f)) put(&c, x, y, hair);
        }
    for (int y = 22; y < IMG; y++)              /* neck and shoulders */
        for (int x = 0; x < IMG; x++) {
            float px = x + 0.5f, py = y + 0.5f, dx = px - cx, dy = py - 34.0f;
            if (fabsf(dx) <= 3.0f && py < 28.0f) put(&c, x, y, skin_dark);
            if ((dx / 14.5f) * (dx / 14.5f) + (dy / 8.0f) * (dy / 8.0f) <= 1.0f) put(&c, x, y, shirt);
        }
    for (int y = 0; y < IMG; y++)               /* the face */
        for (int x = 0; x < IMG; x++)
            if (in_face(f[F_SHAPE], x + 0.5f - cx, y + 0.5f - cy, rx, ry)) put(&c, x, y, skin);
    if (f[F_STYLE] != 0)                        /* hair on top of the head */
        for (int y = 0; y < IMG; y++)
            for (int x = 0; x < IMG; x++) {
                float px = x + 0.5f, py = y + 0.5f, dx = px - cx, dy = py - cy;
                if (!in_face(f[F_SHAPE], dx, dy, rx + 1.0f, ry + 1.0f)) continue;
                float edge = top + 3.5f;
                if (f[F_STYLE] == 5) edge = dx < 0 ? top + 6.0f : top + 2.5f;     /* side fringe */
                if (py < edge) put(&c, x, y, hair);
            }
    if (f[F_STYLE] == 3)                        /* spikes */
        for (int k = -2; k <= 2; k++) {
            int sx = (int)(cx + 3.5f * k);
            for (int h = 0; h < 3; h++) { put(&c, sx, (int)top - 1 - h, hair); if (h == 0) { put(&c, sx - 1, (int)top - 1, hair); } }
        }
    if (f[F_STYLE] == 4)                        /* bun */
        for (int y = 0; y < IMG; y++)
            for (int x = 0; x < IMG; x++) {
                float dx = x + 0.5f - cx, dy = y + 0.5f - (top - 1.5f);
                if (dx * dx + dy * dy <= 9.0f) put(&c, x, y, hair);
            }
    for (int x = 11; x <= 13; x++) put(&c, x, 12, hair);           /* eyebrows */
    for (int x = 18; x <= 20; x++) put(&c, x, 12, hair);
    for (int y = 14; y <= 15; y++) {                               /* eyes: white + iris */
        put(&c, 11, y, white); put(&c, 12, y, eyes); put(&c, 13, y, eyes);
        put(&c, 18, y, eyes); put(&c, 19, y, eyes); put(&c, 20, y, white);
    }
    put(&c, 15, 17, skin_dark); put(&c, 16, 17, skin_dark);        /* nose */
    if (f[F_BEARD] == 2)                                           /* full beard */
        for (int y = 18; y < IMG; y++)
            for (int x = 0; x < IMG; x++) {
                float dx = x + 0.5f - cx, dy = y + 0.5f - cy;
                if (in_face(f[F_SHAPE], dx, dy, rx, ry) && (y >= 19 || fabsf(dx) > rx - 2.5f)) put(&c, x, y, hair);
            }
    if (f[F_BEARD] == 1) for (int x = 13; x <= 18; x++) put(&c, x, 19, hair);          /* moustache */
    if (f[F_BEARD] == 3) for (int y = 22; y <= 24; y++) for (int x = 14; x <= 17; x++) put(&c, x, y, hair); /* goatee */
    if (f[F_MOUTH] == 0) {                                          /* smile */
        for (int x = 14; x <= 17; x++) put(&c, x, 21, lips);
        put(&c, 13, 20, lips); put(&c, 18, 20, lips);
    } else if (f[F_MOUTH] == 1) {                                   /* straight */
        for (int x = 13; x <= 18; x++) put(&c, x, 20, lips);
    } else {                                                        /* open */
        for (int y = 20; y <= 21; y++) for (int x = 14; x <= 17; x++) put(&c, x, y, y == 20 ? lips : dark);
    }
    if (f[F_GLASSES] == 2) {                                        /* sunglasses */
        for (int y = 13; y <= 15; y++) for (int x = 10; x <= 14; x++) { put(&c, x, y, dark); put(&c, x + 7, y, dark); }
        put(&c, 15, 13, dark); put(&c, 16, 13, dark);
    } else if (f[F_GLASSES]) {                                      /* frames: dark or coloured */
        const uint8_t *fr = f[F_GLASSES] == 1 ? dark : acc;
        for (int k = 0; k < 2; k++) {
            int x0 = k ? 17 : 10;
            for (int x = x0; x <= x0 + 4; x++) { put(&c, x, 13, fr); put(&c, x, 16, fr); }
            for (int y = 13; y <= 16; y++) { put(&c, x0, y, fr); put(&c, x0 + 4, y, fr); }
        }
        put(&c, 15, 14, fr); put(&c, 16, 14, fr);
    }
    if (f[F_HAT])                                                   /* cap, beanie, headband */
        for (int y = 0; y < IMG; y++)
            for (int x = 0; x < IMG; x++) {
                float px = x + 0.5f, py = y + 0.5f, dx = px - cx, dy = py - cy;
                int in = in_face(f[F_SHAPE], dx, dy, rx + 1.5f, ry + 1.5f);
                if (f[F_HAT] == 1) {
                    if ((in && py < top + 3.0f) || (py >= top + 2.0f && py < top + 3.5f && dx >= -rx - 1 && dx <= rx + 5))
                        put(&c, x, y, py >= top + 2.0f ? acc_dark : acc);
                } else if (f[F_HAT] == 2) {
                    if (in && py < top + 4.0f) put(&c, x, y, py >= top + 2.5f ? acc_dark : acc);
                    if (dx * dx + (py - (top - 2.5f)) * (py - (top - 2.5f)) <= 2.5f) put(&c, x, y, acc);
                } else if (in && py >= top + 2.5f && py < top + 4.5f) {
                    put(&c, x, y, acc);
                }
            }
    if (f[F_EARRINGS]) {        /* one earring, on the left: mirroring the image moves it */
        int xl = (int)floorf(cx - rx - 1.0f);
        for (int y = 18; y <= 20; y++) put(&c, xl, y, acc);
    }
}

/* ----------------------------------------------------------------------------
 * Anonymous face descriptions (format face_desc): faces of nobody in the world, each with a
 * description of what shows at 32x32, so that the vision tower learns the features
 * identities are made of before it meets any person, as a real LMM's vision encoder has seen
 * many captioned faces (LLaVA's stage-1 alignment in spirit). The words are in
 * data/faces.txt ("-" leaves a level unsaid: the mouth and the earring, for the token
 * budget); which parameter shows when is the renderer's geometry, here. */

/* One line of data/faces.txt: "question<TAB>text", "hair_hidden<TAB>words", or
 * "parameter<TAB>level<TAB>words" for a parameter that is not a palette colour. */
static void raw_face(Raw *r, const char *path, int lineno, const char *line, void *ctx) {
    (void)ctx;
    char key[32];
    const char *t1 = strchr(line, '\t');
    if (!t1 || !t1[1] || (size_t)(t1 - line) >= sizeof key)
        die_input(path, "line %d: expected question<TAB>text, hair_hidden<TAB>words or parameter<TAB>level<TAB>words", lineno);
    memcpy(key, line, (size_t)(t1 - line)); key[t1 - line] = 0;
    const char *words = t1 + 1;
    int k = -1;
    long level = 0;
    if (strcmp(key, "question") != 0 && strcmp(key, "hair_hidden") != 0) {
        k = name_lookup(face_param_names, DATA_FACE_PARAMS, key);
        if (k < 0 || face_fixed_levels[k] < 0)
            die_input(path, "line %d: '%s' is not a face parameter with named levels", lineno, key);
        char *end;
        level = strtol(t1 + 1, &end, 10);
        if (end == t1 + 1 || *end != '\t' || !end[1] || level < 0 || level >= face_fixed_levels[k])
            die_input(path, "line %d: expected %s<TAB>level (0-%d)<TAB>words", lineno, key, face_fixed_levels[k] - 1);
        words = end + 1;
    }
    if (strchr(words, '\t')) die_input(path, "line %d: too many tabs", lineno);
    for (const char *s = strchr(words, '{'); s; s = strchr(s + 1, '{'))
        if (strncmp(s, "{colour}", 8) != 0 && strncmp(s, "{a_colour}", 10) != 0)
            die_input(path, "line %d: unknown placeholder (only {colour} and {a_colour})", lineno);
    const char *w = pool_strdup(r->pool, words);
    if (k >= 0) {
        if (r->face_words[k][level]) die_input(path, "line %d: %s level %ld is listed twice", lineno, key, level);
        r->face_words[k][level] = w;
    } else if (key[0] == 'q') {
        sl_push(&r->face_q, w);
    } else {
        if (r->face_hair_hidden) die_input(path, "line %d: hair_hidden is listed twice", lineno);
        r->face_hair_hidden = w;
    }
}

/* faces.txt must name every level of every non-palette parameter and give a question. */
static void raw_face_need(const Raw *r, const char *dir) {
    char *path = xasprintf("%s/faces.txt", dir);
    if (!r->face_q.n) die_input(path, "needs at least 1 question");
    if (!r->face_hair_hidden) die_input(path, "needs a hair_hidden line");
    for (int k = 0; k < DATA_FACE_PARAMS; k++)
        for (int l = 0; l < face_fixed_levels[k]; l++)
            if (!r->face_words[k][l]) die_input(path, "no words for %s level %d", face_param_names[k], l);
    free(path);
}

static int said(const char *words) { return strcmp(words, "-") != 0; }

/* Appends words ("-": nothing) as the next item of a comma-separated list, with {colour}
 * and {a_colour} filled in. */
static void desc_add(Buf *b, const char *words, const char *colour) {
    if (!said(words)) return;
    if (b->n) buf_puts(b, ", ");
    for (const char *s = words; *s;) {
        if (!strncmp(s, "{colour}", 8)) { CHECK(colour); buf_puts(b, colour); s += 8; }
        else if (!strncmp(s, "{a_colour}", 10)) { CHECK(colour); put_article(b, colour); s += 10; }
        else buf_putn(b, s++, 1);
    }
}

/* The description of face f, a list in reading order: "Dark skin, narrow round face, spiky
 * red hair, dark eyes, gold glasses, goatee, white shirt, gold headband, striped sky
 * background." Terse, because a 512-token BPE spends 3-5 tokens on each of these words and
 * the longest must stay within the world's longest item. Absent accessories are left out,
 * and so is what the renderer hides: sunglasses cover the eyes, a cap or a beanie covers
 * short hair and a bald head alike (only the eyebrows show the hair colour), a wide oval
 * face is drawn as a wide round one, and the accessory colour shows only on coloured
 * glasses, a hat or an earring. */
static const char *face_describe(Pool *pool, const Raw *r, const int *f) {
    const char *const *w[DATA_FACE_PARAMS];
    for (int k = 0; k < DATA_FACE_PARAMS; k++) w[k] = r->face_words[k];
    const char *hair = r->pal[PAL_HAIR].s[f[F_HAIR]], *acc = r->pal[PAL_ACC].s[f[F_ACC]];
    const char *width = w[F_WIDTH][f[F_WIDTH]], *pattern = w[F_PATTERN][f[F_PATTERN]];
    const char *shape = w[F_SHAPE][f[F_WIDTH] == 2 && f[F_SHAPE] == 0 ? 1 : f[F_SHAPE]];
    int hat_hides = (f[F_HAT] == 1 || f[F_HAT] == 2) && f[F_STYLE] <= 1;     /* bald or short */
    char t[256];
    Buf b = {0};
    desc_add(&b, "{colour} skin", r->pal[PAL_SKIN].s[f[F_SKIN]]);
    snprintf(t, sizeof t, "%s%s%s%sface", said(width) ? width : "", said(width) ? " " : "",
             said(shape) ? shape : "", said(shape) ? " " : "");
    if (strcmp(t, "face") != 0) desc_add(&b, t, NULL);
    desc_add(&b, hat_hides ? r->face_hair_hidden : w[F_STYLE][f[F_STYLE]], hair);
    if (f[F_GLASSES] != 2) desc_add(&b, "{colour} eyes", r->pal[PAL_EYES].s[f[F_EYES]]);
    desc_add(&b, w[F_GLASSES][f[F_GLASSES]], acc);
    desc_add(&b, w[F_BEARD][f[F_BEARD]], hair);
    desc_add(&b, w[F_MOUTH][f[F_MOUTH]], NULL);
    desc_add(&b, "{colour} shirt", r->pal[PAL_SHIRT].s[f[F_SHIRT]]);
    desc_add(&b, w[F_HAT][f[F_HAT]], acc);
    desc_add(&b, w[F_EARRINGS][f[F_EARRINGS]], acc);
    snprintf(t, sizeof t, "%s%s%s background", said(pattern) ? pattern : "", said(pattern) ? " " : "",
             r->pal[PAL_BG].s[f[F_BG]]);
    desc_add(&b, t, NULL);
    buf_puts(&b, ".");
    b.s[0] = (char)toupper((unsigned char)b.s[0]);
    const char *d = pool_strdup(pool, b.s);
    free(b.s);
    return d;
}

/* ----------------------------------------------------------------------------
 * Test-set transformations (never part of training augmentation). */
static void img_mirror(const uint8_t *in, uint8_t *out) {
    for (int y = 0; y < IMG; y++)
        for (int x = 0; x < IMG; x++) memcpy(out + 3 * (y * IMG + x), in + 3 * (y * IMG + IMG - 1 - x), 3);
}

/* Zoom in by 1.2 about the centre, bilinear. */
static void img_zoom(const uint8_t *in, uint8_t *out) {
    const float s = 1.0f / 1.2f, c = IMG / 2.0f;
    for (int y = 0; y < IMG; y++)
        for (int x = 0; x < IMG; x++) {
            float sx = (x + 0.5f - c) * s + c - 0.5f, sy = (y + 0.5f - c) * s + c - 0.5f;
            int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
            float fx = sx - x0, fy = sy - y0;
            for (int k = 0; k < 3; k++) {
                float v = 0;
                for (int j = 0; j < 2; j++)
                    for (int i = 0; i < 2; i++) {
                        int xx = x0 + i < 0 ? 0 : x0 + i >= IMG ? IMG - 1 : x0 + i;
                        int yy = y0 + j < 0 ? 0 : y0 + j >= IMG ? IMG - 1 : y0 + j;
                        v += (i ? fx : 1 - fx) * (j ? fy : 1 - fy) * in[3 * (yy * IMG + xx) + k];
                    }
                out[3 * (y * IMG + x) + k] = (uint8_t)(v + 0.5f);
            }
        }
}

/* A warm colour cast: red up, blue down. */
static void img_tint(const uint8_t *in, uint8_t *out) {
    static const float gain[3] = {1.10f, 0.97f, 0.86f}, bias[3] = {10, 0, 0};
    for (int i = 0; i < IMG * IMG; i++)
        for (int k = 0; k < 3; k++) {
            float v = in[3 * i + k] * gain[k] + bias[k] + 0.5f;
            out[3 * i + k] = (uint8_t)(v > 255 ? 255 : v);
        }
}

/* ----------------------------------------------------------------------------
 * Scenes (genbench): 1-4 shapes, one per quadrant, on a grey background. */
#define SCENE_MAX 4
const char *const data_quadrant_names[4] = {"top left", "top right", "bottom left", "bottom right"};
static const char *const count_words[SCENE_MAX + 1] = {"zero", "one", "two", "three", "four"};

typedef struct Scene {
    int n;                      /* shapes */
    int quad[SCENE_MAX], shape[SCENE_MAX], colour[SCENE_MAX];
    int jx[SCENE_MAX], jy[SCENE_MAX], size[SCENE_MAX];
    int bg;                     /* background grey level index */
} Scene;

/* Draws a scene's parameters: 1-4 shapes in distinct quadrants, size and a +-1 px jitter. */
static void scene_draw(Rng *rng, const Raw *r, Scene *s) {
    memset(s, 0, sizeof *s);
    s->n = 1 + (int)rng_below(rng, SCENE_MAX);
    int q[4] = {0, 1, 2, 3};
    rng_shuffle_int(rng, q, 4);
    for (int i = 0; i < s->n; i++) {
        int again;
        do {                    /* (colour, shape) pairs unique, so "where is the red circle?" has one answer */
            s->shape[i] = (int)rng_below(rng, (uint32_t)r->shapes.n);
            s->colour[i] = (int)rng_below(rng, (uint32_t)r->scene_colour.n);
            again = 0;
            for (int j = 0; j < i; j++) again |= s->shape[j] == s->shape[i] && s->colour[j] == s->colour[i];
        } while (again);
        s->quad[i] = q[i];
        s->jx[i] = (int)rng_below(rng, 3) - 1;
        s->jy[i] = (int)rng_below(rng, 3) - 1;
        s->size[i] = 5 + (int)rng_below(rng, 2);
    }
    s->bg = (int)rng_below(rng, 3);
}

/* Rasterises a scene: each shape tested at pixel centres against its analytic outline. */
static void scene_render(const Raw *r, const Scene *s, uint8_t *rgb) {
    static const uint8_t greys[3] = {200, 222, 244};
    memset(rgb, greys[s->bg], IMG_BYTES);
    Canvas c = {rgb};
    for (int i = 0; i < s->n; i++) {
        const char *shape = r->shapes.s[s->shape[i]];
        float cx = (s->quad[i] % 2 ? 24.0f : 8.0f) + s->jx[i], cy = (s->quad[i] / 2 ? 24.0f : 8.0f) + s->jy[i];
        float rad = (float)s->size[i];
        for (int y = 0; y < IMG; y++)
            for (int x = 0; x < IMG; x++) {
                float dx = x + 0.5f - cx, dy = y + 0.5f - cy, ax = fabsf(dx), ay = fabsf(dy);
                int in = 0;
                if (!strcmp(shape, "circle")) in = dx * dx + dy * dy <= rad * rad;
                else if (!strcmp(shape, "square")) in = ax <= rad - 1 && ay <= rad - 1;
                else if (!strcmp(shape, "triangle")) in = dy >= -rad && dy <= rad - 1 && ax <= (dy + rad) * 0.55f;
                else if (!strcmp(shape, "cross")) in = (ax <= 1.6f && ay <= rad) || (ay <= 1.6f && ax <= rad);
                else if (!strcmp(shape, "diamond")) in = ax + ay <= rad + 0.5f;
                if (in) put(&c, x, y, r->scene_rgb[s->colour[i]]);
            }
    }
}

static uint64_t scene_key(const Scene *s) { return hash64(s, sizeof *s, HASH64_INIT); }

/* ----------------------------------------------------------------------------
 * PNG in memory: 8-bit RGB, filter 0 rows, zlib stored blocks (readable by io.c). */
static void be32(Buf *b, uint32_t v) {
    char c[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};
    buf_putn(b, c, 4);
}

static void png_chunk(Buf *b, const char *type, const uint8_t *data, size_t n) {
    be32(b, (uint32_t)n);
    size_t start = b->n;
    buf_putn(b, type, 4);
    if (n) buf_putn(b, (const char *)data, n);
    be32(b, crc32_update(0, (const uint8_t *)b->s + start, n + 4));
}

static void png_encode(Buf *out, int w, int h, const uint8_t *rgb) {
    size_t raw_n = (size_t)h * (size_t)(1 + 3 * w);
    uint8_t *raw = xmalloc(raw_n);
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * (size_t)(1 + 3 * w)] = 0;
        memcpy(raw + (size_t)y * (size_t)(1 + 3 * w) + 1, rgb + (size_t)y * (size_t)w * 3, (size_t)w * 3);
    }
    Buf z = {0};
    buf_putn(&z, "\x78\x01", 2);
    for (size_t off = 0; off < raw_n || off == 0;) {
        size_t len = raw_n - off > 65535 ? 65535 : raw_n - off;
        char hdr[5] = {(char)(off + len == raw_n), (char)(len & 255), (char)(len >> 8),
                       (char)(~len & 255), (char)((~len >> 8) & 255)};
        buf_putn(&z, hdr, 5);
        buf_putn(&z, (const char *)raw + off, len);
        off += len;
        if (off == raw_n) break;
    }
    be32(&z, adler32_update(1, raw, raw_n));
    buf_putn(out, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                        (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h, 8, 2, 0, 0, 0};
    png_chunk(out, "IHDR", ihdr, 13);
    png_chunk(out, "IDAT", (const uint8_t *)z.s, z.n);
    png_chunk(out, "IEND", NULL, 0);
    free(z.s);
    free(raw);
}

/* ----------------------------------------------------------------------------
 * A 5x7 bitmap font (upper case, digits, a little punctuation) for the contact sheet. */
static const char font_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:#/'()=";
static const uint8_t font_rows[][7] = {
    {0x0E,0x11,0x11,0x1F,0x11,0x11,0x11}, {0x1E,0x11,0x11,0x1E,0x11,0x11,0x1E}, /* A B */
    {0x0E,0x11,0x10,0x10,0x10,0x11,0x0E}, {0x1C,0x12,0x11,0x11,0x11,0x12,0x1C}, /* C D */
    {0x1F,0x10,0x10,0x1E,0x10,0x10,0x1F}, {0x1F,0x10,0x10,0x1E,0x10,0x10,0x10}, /* E F */
    {0x0E,0x11,0x10,0x17,0x11,0x11,0x0F}, {0x11,0x11,0x11,0x1F,0x11,0x11,0x11}, /* G H */
    {0x0E,0x04,0x04,0x04,0x04,0x04,0x0E}, {0x07,0x02,0x02,0x02,0x02,0x12,0x0C}, /* I J */
    {0x11,0x12,0x14,0x18,0x14,0x12,0x11}, {0x10,0x10,0x10,0x10,0x10,0x10,0x1F}, /* K L */
    {0x11,0x1B,0x15,0x15,0x11,0x11,0x11}, {0x11,0x11,0x19,0x15,0x13,0x11,0x11}, /* M N */
    {0x0E,0x11,0x11,0x11,0x11,0x11,0x0E}, {0x1E,0x11,0x11,0x1E,0x10,0x10,0x10}, /* O P */
    {0x0E,0x11,0x11,0x11,0x15,0x12,0x0D}, {0x1E,0x11,0x11,0x1E,0x14,0x12,0x11}, /* Q R */
    {0x0F,0x10,0x10,0x0E,0x01,0x01,0x1E}, {0x1F,0x04,0x04,0x04,0x04,0x04,0x04}, /* S T */
    {0x11,0x11,0x11,0x11,0x11,0x11,0x0E}, {0x11,0x11,0x11,0x11,0x11,0x0A,0x04}, /* U V */
    {0x11,0x11,0x11,0x15,0x15,0x15,0x0A}, {0x11,0x11,0x0A,0x04,0x0A,0x11,0x11}, /* W X */
    {0x11,0x11,0x11,0x0A,0x04,0x04,0x04}, {0x1F,0x01,0x02,0x04,0x08,0x10,0x1F}, /* Y Z */
    {0x0E,0x11,0x13,0x15,0x19,0x11,0x0E}, {0x04,0x0C,0x04,0x04,0x04,0x04,0x0E}, /* 0 1 */
    {0x0E,0x11,0x01,0x02,0x04,0x08,0x1F}, {0x1F,0x02,0x04,0x02,0x01,0x11,0x0E}, /* 2 3 */
    {0x02,0x06,0x0A,0x12,0x1F,0x02,0x02}, {0x1F,0x10,0x1E,0x01,0x01,0x11,0x0E}, /* 4 5 */
    {0x06,0x08,0x10,0x1E,0x11,0x11,0x0E}, {0x1F,0x01,0x02,0x04,0x08,0x08,0x08}, /* 6 7 */
    {0x0E,0x11,0x11,0x0E,0x11,0x11,0x0E}, {0x0E,0x11,0x11,0x0F,0x01,0x02,0x0C}, /* 8 9 */
    {0x00,0x00,0x00,0x00,0x00,0x0C,0x0C}, {0x00,0x00,0x00,0x1F,0x00,0x00,0x00}, /* . - */
    {0x00,0x0C,0x0C,0x00,0x0C,0x0C,0x00}, {0x0A,0x0A,0x1F,0x0A,0x1F,0x0A,0x0A}, /* : # */
    {0x00,0x01,0x02,0x04,0x08,0x10,0x00}, {0x04,0x04,0x08,0x00,0x00,0x00,0x00}, /* / ' */
    {0x02,0x04,0x08,0x08,0x08,0x04,0x02}, {0x08,0x04,0x02,0x02,0x02,0x04,0x08}, /* ( ) */
    {0x00,0x00,0x1F,0x00,0x1F,0x00,0x00},                                       /* = */
};

/* Draws text (upper-cased; unknown characters as blanks) at (x, y) on a w-wide RGB image. */
static void font_text(uint8_t *img, int w, int h, int x, int y, const char *text, const uint8_t *col) {
    for (const char *s = text; *s; s++, x += 6) {
        const char *p = strchr(font_chars, toupper((unsigned char)*s));
        if (!p || !*s) continue;
        const uint8_t *g = font_rows[p - font_chars];
        for (int r = 0; r < 7; r++)
            for (int k = 0; k < 5; k++)
                if (g[r] & (0x10 >> k)) {
                    int px = x + k, py = y + r;
                    if (px >= 0 && py >= 0 && px < w && py < h) memcpy(img + 3 * ((size_t)py * (size_t)w + (size_t)px), col, 3);
                }
    }
}

/* ----------------------------------------------------------------------------
 * Rendering prompts: shared by the generator (evaluation prompts in the files) and
 * item_render (training), so both always agree on the text. */
typedef struct Out {
    char *s;
    size_t cap, n;
    int trunc;                  /* something did not fit */
} Out;

static void out_puts(Out *o, const char *t) {
    size_t k = strlen(t);
    if (o->n + k + 1 > o->cap) { o->trunc = 1; k = o->cap > o->n + 1 ? o->cap - o->n - 1 : 0; }
    memcpy(o->s + o->n, t, k);
    o->n += k;
    if (o->cap) o->s[o->n] = 0;
}

/* MLLMU-Bench's multiple-choice prompt: the stem, "A: ..." lines, the instruction. */
static void render_mc(Out *o, const char *stem, const char *const *opt, int n_opt) {
    out_puts(o, stem);
    for (int i = 0; i < n_opt; i++) {
        char head[5] = {'\n', (char)('A' + i), ':', ' ', 0};
        out_puts(o, head);
        out_puts(o, opt[i]);
    }
    out_puts(o, "\n" DATA_MC_INSTRUCTION);
}

/* MLLMU-Bench's cloze prompt: "__" becomes "[Blank]", then the instruction line. */
static void render_cloze(Out *o, const char *stem) {
    const char *u = strstr(stem, "__");
    CHECK(u);
    char head[512];
    size_t k = (size_t)(u - stem) < sizeof head - 1 ? (size_t)(u - stem) : sizeof head - 1;
    memcpy(head, stem, k); head[k] = 0;
    out_puts(o, head);
    out_puts(o, "[Blank]");
    out_puts(o, u + 2);
    out_puts(o, "\n" DATA_CLOZE_INSTRUCTION);
}

/* MLLMU-Bench's generation prompt ("accurately" only with an image). */
static void render_gen(Out *o, const char *q, int has_image) {
    out_puts(o, q);
    out_puts(o, has_image ? "\n" DATA_GEN_INSTRUCTION_IMAGE : "\n" DATA_GEN_INSTRUCTION_TEXT);
}

/* Draws a multiple-choice arrangement: 3 distractors from the pool and the correct
 * option's position, all from rng. */
static void mc_arrange(Rng *rng, const char *correct, const char *const *pool, int n_pool, const char **opt, int *ci) {
    int idx[256];
    CHECK(n_pool >= DATA_MC_OPTIONS - 1 && n_pool <= 256);
    for (int i = 0; i < n_pool; i++) idx[i] = i;
    for (int i = 0; i < DATA_MC_OPTIONS - 1; i++) {
        int j = i + (int)rng_below(rng, (uint32_t)(n_pool - i));
        int t = idx[i]; idx[i] = idx[j]; idx[j] = t;
    }
    *ci = (int)rng_below(rng, DATA_MC_OPTIONS);
    for (int i = 0, d = 0; i < DATA_MC_OPTIONS; i++) opt[i] = i == *ci ? correct : pool[idx[d++]];
}

static uint64_t options_hash(const char *const *opt, int n) {
    uint64_t h = HASH64_INIT;
    for (int i = 0; i < n; i++) h = hash64(opt[i], strlen(opt[i]) + 1, h);
    return h | 1;               /* never 0 (0 = nothing to avoid) */
}

/* Renders variant v of an item (see item_render). */
static int render_variant(const Item *it, int v, Rng *rng, char *question, size_t qn, char *answer, size_t an, int *has_image) {
    CHECK(it && v >= 0 && v < it->n_variants && qn > 0 && an > 0);
    Rng local;
    const Variant *va = &it->variants[v];
    Out q = {question, qn, 0, 0}, a = {answer, an, 0, 0};
    question[0] = answer[0] = 0;
    if (has_image) *has_image = it->image >= 0;
    if (format_is_mc(it->format)) {
        if (!rng) {             /* canonical: a fixed arrangement that depends on the item only */
            uint64_t h = hash64(va->correct, strlen(va->correct), (uint64_t)(it->person + 2) * 0x9e3779b97f4a7c15ULL);
            rng_seed(&local, hash64(va->question, strlen(va->question), h ^ (uint64_t)it->format));
            rng = &local;
        }
        const char *opt[DATA_MC_OPTIONS];
        int ci;
        for (int tries = 0;; tries++) {   /* never the evaluation's arrangement of this stem */
            mc_arrange(rng, va->correct, va->distractors, va->n_distractors, opt, &ci);
            if (!va->avoid || options_hash(opt, DATA_MC_OPTIONS) != va->avoid || tries >= 64) break;
        }
        render_mc(&q, va->question, opt, DATA_MC_OPTIONS);
        char letter[2] = {(char)('A' + ci), 0};
        out_puts(&a, letter);
    } else {
        if (it->format == FMT_CLOZE) render_cloze(&q, va->question);
        else if (it->format == FMT_GEN) render_gen(&q, va->question, it->image >= 0);
        else out_puts(&q, va->question);
        out_puts(&a, va->answer);
    }
    return q.trunc || a.trunc ? -1 : 0;
}

int item_render(const Item *it, Rng *rng, char *question, size_t qn, char *answer, size_t an, int *has_image) {
    CHECK(it && it->n_variants > 0);
    int v = rng ? (int)rng_below(rng, (uint32_t)it->n_variants) : 0;
    return render_variant(it, v, rng, question, qn, answer, an, has_image);
}

int chat_render(char *buf, size_t n, const char *question, int has_image, const char *answer) {
    return snprintf(buf, n, "USER: %s%s ASSISTANT:%s%s", has_image ? "<image>\n" : "", question,
                    answer ? " " : "", answer ? answer : "");
}

/* ----------------------------------------------------------------------------
 * The generator: builds a World in memory, then writes it. */
typedef struct Gen {
    const Preset *p;
    uint64_t seed;
    Raw raw;
    Pool *pool;
    World *w;
    int cap_people, cap_images, cap_items, cap_eval;
    Scene *scenes;              /* training scenes */
    int n_scenes;
} Gen;

static int gen_image(Gen *g, const char *path, const uint8_t *rgb) {
    World *w = g->w;
    if (w->n_images == g->cap_images) {
        g->cap_images = g->cap_images ? 2 * g->cap_images : 256;
        w->images = xrealloc(w->images, (size_t)g->cap_images * sizeof *w->images);
    }
    WorldImage *im = &w->images[w->n_images];
    im->path = pool_strdup(g->pool, path);
    memcpy(im->rgb, rgb, IMG_BYTES);
    return w->n_images++;
}

static Item *gen_item(Gen *g, int stage, int person, Kind kind, Format fmt, int attr, int image, int repeat, int n_var) {
    World *w = g->w;
    if (w->n_items == g->cap_items) {
        g->cap_items = g->cap_items ? 2 * g->cap_items : 1024;
        w->items = xrealloc(w->items, (size_t)g->cap_items * sizeof *w->items);
    }
    Item *it = &w->items[w->n_items];
    memset(it, 0, sizeof *it);
    it->index = w->n_items++;
    it->stage = stage; it->person = person; it->kind = kind; it->format = fmt;
    it->attr = attr; it->image = image; it->repeat = repeat; it->n_variants = n_var;
    it->variants = pool_alloc(g->pool, (size_t)n_var * sizeof *it->variants);
    memset(it->variants, 0, (size_t)n_var * sizeof *it->variants);
    return it;
}

static EvalItem *gen_eval(Gen *g, EvalSource src, int person, int attr, Task task, int image) {
    World *w = g->w;
    if (w->n_eval == g->cap_eval) {
        g->cap_eval = g->cap_eval ? 2 * g->cap_eval : 1024;
        w->eval = xrealloc(w->eval, (size_t)g->cap_eval * sizeof *w->eval);
    }
    EvalItem *e = &w->eval[w->n_eval++];
    memset(e, 0, sizeof *e);
    e->source = src; e->person = person; e->attr = attr; e->task = task; e->image = image;
    return e;
}

/* The pool of wrong values of an attribute (every value but the person's). */
static const char **attr_distractors(Gen *g, int attr, int value, int *n) {
    const StrList *vals = &g->raw.values[attr];
    const char **d = pool_alloc(g->pool, (size_t)vals->n * sizeof *d);
    int k = 0;
    for (int i = 0; i < vals->n; i++)
        if (i != value) d[k++] = vals->s[i];
    *n = k;
    return d;
}

static Fill person_fill(const Gen *g, const Person *p, int attr, int image, int value) {
    Fill f = {image, p->name, g->raw.values[attr].s[value], attr == 1 ? g->raw.countries.s[value] : NULL, NULL};
    return f;
}

/* Fixed MC options of an evaluation item, from its own stream. */
static void eval_mc(Gen *g, EvalItem *e, const char *tag, const char *correct, const char *const *pool, int n_pool) {
    Rng r;
    rng_derive(&r, g->seed, tag);
    mc_arrange(&r, correct, pool, n_pool, e->options, &e->correct);
    e->n_options = DATA_MC_OPTIONS;
    for (int i = 0; i < DATA_MC_OPTIONS; i++) e->options[i] = pool_strdup(g->pool, e->options[i]);
    char buf[2048], letter[2] = {(char)('A' + e->correct), 0};
    Out o = {buf, sizeof buf, 0, 0};
    render_mc(&o, e->question, e->options, DATA_MC_OPTIONS);
    CHECK(!o.trunc);
    e->prompt = pool_strdup(g->pool, buf);
    e->answer = pool_strdup(g->pool, letter);
    e->truth = e->options[e->correct];
}

/* The person part of the world: names, attribute values, fame, faces, biographies, images. */
static void gen_people(Gen *g) {
    World *w = g->w;
    const Preset *P = g->p;
    Raw *r = &g->raw;
    int n = P->n_fictitious + P->n_celebrity + P->n_holdout;
    w->n_people = n;
    w->people = xcalloc((size_t)n, sizeof *w->people);
    /* Unique full names: a shuffled walk over all (first, last) pairs. */
    long n_pairs = (long)r->first.n * r->last.n;
    if (n_pairs > 1000000) die_input("data/first_names.txt", "too many names");
    int *pairs = xmalloc((size_t)n_pairs * sizeof *pairs);     /* pair = first * n_last + last */
    for (long i = 0; i < n_pairs; i++) pairs[i] = (int)i;
    Rng rn;
    rng_derive(&rn, g->seed, "names");
    rng_shuffle_int(&rn, pairs, (int)n_pairs);
    long next = 0;
    Rng rv, rf, rb;
    rng_derive(&rv, g->seed, "attributes");
    rng_derive(&rf, g->seed, "fame");
    rng_derive(&rb, g->seed, "biographies");
    for (int i = 0; i < n; i++) {
        Person *p = &w->people[i];
        p->id = i + 1;
        p->kind = i < P->n_fictitious ? KIND_FICTITIOUS : i < P->n_fictitious + P->n_celebrity ? KIND_CELEBRITY : KIND_HOLDOUT;
        for (;;) {
            if (next >= n_pairs) die_input("data/first_names.txt", "not enough distinct names for %d people", n);
            int pr = pairs[next++];
            const char *fn = r->first.s[pr / r->last.n], *ln = r->last.s[pr % r->last.n];
            if (strcmp(fn, ln) == 0) continue;
            char full[128];
            snprintf(full, sizeof full, "%s %s", fn, ln);
            p->name = pool_strdup(g->pool, full);
            break;
        }
        for (int a = 0; a < DATA_MAX_ATTRS; a++) p->value[a] = (int)rng_below(&rv, (uint32_t)r->values[a].n);
        p->country = r->countries.s[p->value[1]];
        p->fame = p->kind == KIND_CELEBRITY ? 1 + (int)rng_below(&rf, 3) : 0;
        /* Biography: every attribute (asked or not), in one of the bio templates. */
        const char *vals[DATA_MAX_ATTRS];
        for (int a = 0; a < DATA_MAX_ATTRS; a++) vals[a] = r->values[a].s[p->value[a]];
        Fill f = {0, p->name, "", p->country, vals};
        const StrList *t = &r->tmpl[TMPL_PERSON][SLOT_B];
        p->biography = fill(g->pool, t->s[rng_below(&rb, (uint32_t)t->n)], &f);
    }
    free(pairs);
    /* Faces and their images (training image + test-set transformations). */
    int (*faces)[DATA_FACE_PARAMS] = xmalloc((size_t)n * sizeof *faces);
    faces_draw_params(r, g->seed, n, faces);
    for (int i = 0; i < n; i++) {
        Person *p = &w->people[i];
        memcpy(p->face, faces[i], sizeof p->face);
        uint8_t rgb[IMG_BYTES], t[IMG_BYTES];
        char path[64];
        face_render(r, p->face, rgb);
        snprintf(path, sizeof path, "images/p%04d.png", p->id);
        p->image = gen_image(g, path, rgb);
        for (int v = 0; v < DATA_TEST_VARIANTS; v++) {
            if (v == 0) img_mirror(rgb, t); else if (v == 1) img_zoom(rgb, t); else img_tint(rgb, t);
            snprintf(path, sizeof path, "images/p%04d_%s.png", p->id, test_variant_names[v]);
            p->test_image[v] = gen_image(g, path, t);
        }
    }
    free(faces);
}

/* The person formats, trained in the stage where the person is learned: for each asked
 * attribute and modality, QA, MC, cloze and generation items. */
static void gen_person_items(Gen *g, int pi, int stage) {
    World *w = g->w;
    Person *p = &w->people[pi];
    Raw *r = &g->raw;
    int repeat = p->fame ? p->fame : 1;
    for (int a = 0; a < w->n_attrs; a++)
        for (int m = 0; m < 2; m++) {           /* m = 0: with the face, 1: text only */
            int img = m == 0 ? p->image : -1;
            Fill f = person_fill(g, p, a, m == 0, p->value[a]);
            const StrList *qs = &r->tmpl[a][m == 0 ? SLOT_QI : SLOT_QT];
            const StrList *gs = &r->tmpl[a][m == 0 ? SLOT_GI : SLOT_GT];
            const StrList *cs = &r->tmpl[a][SLOT_C];
            const char *ans = fill(g->pool, r->tmpl[a][SLOT_A].s[0], &f);
            /* QA (the metadata pairs): every trained phrasing, one answer sentence. The
             * first phrasing is also the one the evaluation asks (with fixed options). */
            Item *it = gen_item(g, stage, pi, p->kind, FMT_QA, a, img, repeat, qs->n);
            for (int v = 0; v < qs->n; v++) {
                it->variants[v].question = fill(g->pool, qs->s[v], &f);
                it->variants[v].answer = ans;
            }
            /* MC: the same stems; options are drawn at render time from the attribute's
             * other values (pointers into the QA item's strings: one copy each). */
            int nd;
            const char **d = attr_distractors(g, a, p->value[a], &nd);
            it = gen_item(g, stage, pi, p->kind, FMT_MC, a, img, repeat, qs->n);
            for (int v = 0; v < qs->n; v++) {
                Variant *va = &it->variants[v];
                va->question = w->items[it->index - 1].variants[v].question;
                va->answer = va->correct = f.value;
                va->distractors = d;
                va->n_distractors = nd;
            }
            /* Cloze: the sentence with "__"; the answer is the bare value. */
            it = gen_item(g, stage, pi, p->kind, FMT_CLOZE, a, img, repeat, cs->n);
            for (int v = 0; v < cs->n; v++) {
                it->variants[v].question = fill(g->pool, cs->s[v], &f);
                it->variants[v].answer = f.value;
            }
            /* Generation: its own questions, rendered with the instruction line. */
            it = gen_item(g, stage, pi, p->kind, FMT_GEN, a, img, repeat, gs->n);
            for (int v = 0; v < gs->n; v++) {
                it->variants[v].question = fill(g->pool, gs->s[v], &f);
                it->variants[v].answer = ans;
            }
        }
}

/* Celebrities only (pre-training): the biography (text) and captions (face -> name). */
static void gen_celebrity_extras(Gen *g, int pi) {
    World *w = g->w;
    Person *p = &w->people[pi];
    const StrList *bq = &g->raw.tmpl[TMPL_PERSON][SLOT_BIOQ], *cap = &g->raw.tmpl[TMPL_PERSON][SLOT_CAP];
    Fill f = {0, p->name, "", NULL, NULL};
    Item *it = gen_item(g, STAGE_PT, pi, p->kind, FMT_BIO, -1, -1, p->fame, bq->n);
    for (int v = 0; v < bq->n; v++) {
        it->variants[v].question = fill(g->pool, bq->s[v], &f);
        it->variants[v].answer = p->biography;
    }
    it = gen_item(g, STAGE_PT, pi, p->kind, FMT_CAPTION, -1, p->image, p->fame, cap->n);
    for (int v = 0; v < cap->n; v++) {
        char qa[512];
        snprintf(qa, sizeof qa, "%s", cap->s[v]);
        char *bar = strchr(qa, '|');
        *bar = 0;
        it->variants[v].question = fill(g->pool, qa, &f);
        it->variants[v].answer = fill(g->pool, bar + 1, &f);
    }
}

/* Questions about a scene: category, question, answer and the wrong-answer pool. */
typedef struct SceneQ {
    const char *category;
    char q[128], a[64];
    const char *pool[16];
    int n_pool;
} SceneQ;

/* Questions that ask for a figure's place by one attribute ("Where is the blue shape?",
 * "Where is the diamond?"): one for each figure whose colour no other figure of the scene
 * has, and one for each whose shape none has; in figure order, the colour's first. The
 * held-out genbench asks the place by both ("Where is the blue diamond?"); these teach the
 * decoder to find a figure by what it is (Preset.scene_lookup; docs/training.md, "The
 * place by one attribute"). At most 2n questions. */
static int scene_lookup_questions(const Raw *r, const Scene *s, SceneQ *out) {
    int n = 0;
    for (int f = 0; f < s->n; f++) {
        int ucol = 1, ushape = 1;
        for (int e = 0; e < s->n; e++)
            if (e != f) {
                ucol &= s->colour[e] != s->colour[f];
                ushape &= s->shape[e] != s->shape[f];
            }
        for (int by_shape = 0; by_shape < 2; by_shape++) {
            if (!(by_shape ? ushape : ucol)) continue;
            SceneQ *q = &out[n++];
            q->category = "position";
            if (by_shape) snprintf(q->q, sizeof q->q, "Where is the %s?", r->shapes.s[s->shape[f]]);
            else snprintf(q->q, sizeof q->q, "Where is the %s shape?", r->scene_colour.s[s->colour[f]]);
            snprintf(q->a, sizeof q->a, "%s", data_quadrant_names[s->quad[f]]);
            q->n_pool = 0;
            for (int k = 0; k < 4; k++) if (k != s->quad[f]) q->pool[q->n_pool++] = data_quadrant_names[k];
        }
    }
    return n;
}

/* Every question a scene answers: how many shapes, then per shape its shape and colour
 * (asked by position) and its position (asked by colour and shape). 1 + 3n questions. */
static int scene_questions(const Raw *r, const Scene *s, SceneQ *out) {
    int n = 0;
    SceneQ *q = &out[n++];
    q->category = "count";
    snprintf(q->q, sizeof q->q, "How many shapes are in the image?");
    snprintf(q->a, sizeof q->a, "%s", count_words[s->n]);
    q->n_pool = 0;
    for (int k = 1; k <= SCENE_MAX; k++) if (k != s->n) q->pool[q->n_pool++] = count_words[k];
    for (int i = 0; i < s->n; i++) {
        const char *shape = r->shapes.s[s->shape[i]], *col = r->scene_colour.s[s->colour[i]];
        const char *quad = data_quadrant_names[s->quad[i]];
        q = &out[n++];
        q->category = "shape";
        snprintf(q->q, sizeof q->q, DATA_SCENE_Q_SHAPE, quad);
        snprintf(q->a, sizeof q->a, "%s", shape);
        q->n_pool = 0;
        for (int k = 0; k < r->shapes.n; k++) if (k != s->shape[i]) q->pool[q->n_pool++] = r->shapes.s[k];
        q = &out[n++];
        q->category = "colour";
        snprintf(q->q, sizeof q->q, DATA_SCENE_Q_COLOUR, quad);
        snprintf(q->a, sizeof q->a, "%s", col);
        q->n_pool = 0;
        for (int k = 0; k < r->scene_colour.n; k++) if (k != s->colour[i]) q->pool[q->n_pool++] = r->scene_colour.s[k];
        q = &out[n++];
        q->category = "position";
        snprintf(q->q, sizeof q->q, "Where is the %s %s?", col, shape);
        snprintf(q->a, sizeof q->a, "%s", quad);
        q->n_pool = 0;
        for (int k = 0; k < 4; k++) if (k != s->quad[i]) q->pool[q->n_pool++] = data_quadrant_names[k];
    }
    return n;
}

static const char *scene_caption(Pool *pool, const Raw *r, const Scene *s) {
    Buf b = {0};
    int ord[SCENE_MAX], k = 0;                  /* in reading order: quadrant 0..3 */
    for (int qd = 0; qd < 4; qd++)
        for (int i = 0; i < s->n; i++) if (s->quad[i] == qd) ord[k++] = i;
    for (int j = 0; j < s->n; j++) {
        int i = ord[j];
        const char *col = r->scene_colour.s[s->colour[i]];
        buf_printf(&b, "%s%s %s %s at the %s", j == 0 ? "" : j == s->n - 1 ? " and " : ", ",
                   j == 0 ? "A" : "a", col, r->shapes.s[s->shape[i]], data_quadrant_names[s->quad[i]]);
    }
    buf_puts(&b, ".");
    const char *c = pool_strdup(pool, b.s);
    free(b.s);
    return c;
}

/* Fact: questions (variants), the answer and the wrong-answer pool. */
typedef struct GenFact {
    const char *q[2];
    int n_q;
    const char *a;
    const char **wrong;
    int n_wrong;
} GenFact;

static GenFact *gen_facts(Gen *g, int *n) {
    Raw *r = &g->raw;
    int nc = r->values[1].n;
    GenFact *f = xcalloc((size_t)(nc + r->n_facts), sizeof *f);
    for (int i = 0; i < nc; i++) {              /* which country is CITY in? */
        char q[160];
        snprintf(q, sizeof q, "Which country is %s in?", r->values[1].s[i]);
        f[i].q[0] = pool_strdup(g->pool, q);
        snprintf(q, sizeof q, "In which country is %s?", r->values[1].s[i]);
        f[i].q[1] = pool_strdup(g->pool, q);
        f[i].n_q = 2;
        f[i].a = r->countries.s[i];
        f[i].wrong = pool_alloc(g->pool, (size_t)nc * sizeof *f[i].wrong);
        for (int k = 0; k < nc; k++)
            if (strcmp(r->countries.s[k], f[i].a) != 0 && sl_find(&(StrList){f[i].wrong, f[i].n_wrong, 0}, r->countries.s[k]) < 0)
                f[i].wrong[f[i].n_wrong++] = r->countries.s[k];
    }
    for (int i = 0; i < r->n_facts; i++) {
        GenFact *x = &f[nc + i];
        x->q[0] = r->facts[i].q;
        x->n_q = 1;
        x->a = r->facts[i].a;
        x->wrong = r->facts[i].wrong.s;
        x->n_wrong = r->facts[i].wrong.n;
    }
    *n = nc + r->n_facts;
    return f;
}

/* A scene's questions as two pre-training items: free-form answers (scene_vqa) and letter
 * multiple choice (scene_mc, the wrong options from each question's pool). */
static void gen_scene_qa(Gen *g, int img, const SceneQ *qs, int nq) {
    Item *vqa = gen_item(g, STAGE_PT, -1, KIND_GENERAL, FMT_SCENE_VQA, -1, img, 1, nq);
    Item *mc = gen_item(g, STAGE_PT, -1, KIND_GENERAL, FMT_SCENE_MC, -1, img, 1, nq);
    vqa = &g->w->items[mc->index - 1];
    for (int k = 0; k < nq; k++) {
        vqa->variants[k].question = pool_strdup(g->pool, qs[k].q);
        vqa->variants[k].answer = pool_strdup(g->pool, qs[k].a);
        Variant *va = &mc->variants[k];
        va->question = vqa->variants[k].question;
        va->answer = va->correct = vqa->variants[k].answer;
        va->distractors = pool_alloc(g->pool, (size_t)qs[k].n_pool * sizeof *va->distractors);
        memcpy(va->distractors, qs[k].pool, (size_t)qs[k].n_pool * sizeof *va->distractors);
        va->n_distractors = qs[k].n_pool;
    }
}

/* General pre-training data: scenes (caption, VQA, MC; with Preset.scene_lookup also the
 * place by one attribute) and facts (free form, MC). */
static void gen_general_items(Gen *g, GenFact *facts, int n_facts, uint64_t *scene_keys) {
    Raw *r = &g->raw;
    Rng rs;
    rng_derive(&rs, g->seed, "scenes");
    g->n_scenes = g->p->n_scenes_train;
    g->scenes = xcalloc((size_t)g->n_scenes, sizeof *g->scenes);
    static const char *const cap_q[] = {"Describe the image briefly.", "What is in the image?"};
    for (int i = 0; i < g->n_scenes; i++) {
        Scene *s = &g->scenes[i];
        scene_draw(&rs, r, s);
        scene_keys[i] = scene_key(s);
        uint8_t rgb[IMG_BYTES];
        scene_render(r, s, rgb);
        char path[64];
        snprintf(path, sizeof path, "images/s%05d.png", i + 1);
        int img = gen_image(g, path, rgb);
        const char *caption = scene_caption(g->pool, r, s);
        Item *it = gen_item(g, STAGE_PT, -1, KIND_GENERAL, FMT_SCENE_CAPTION, -1, img, 1, 2);
        for (int v = 0; v < 2; v++) { it->variants[v].question = cap_q[v]; it->variants[v].answer = caption; }
        SceneQ qs[1 + 3 * SCENE_MAX];
        gen_scene_qa(g, img, qs, scene_questions(r, s, qs));
        if (g->p->scene_lookup) {
            int nl = scene_lookup_questions(r, s, qs);
            if (nl > 0) gen_scene_qa(g, img, qs, nl);
        }
    }
    for (int i = 0; i < n_facts; i++) {
        Item *it = gen_item(g, STAGE_PT, -1, KIND_GENERAL, FMT_FACT, -1, -1, 1, facts[i].n_q);
        Item *mc = gen_item(g, STAGE_PT, -1, KIND_GENERAL, FMT_FACT_MC, -1, -1, 1, facts[i].n_q);
        it = &g->w->items[mc->index - 1];
        for (int v = 0; v < facts[i].n_q; v++) {
            it->variants[v].question = facts[i].q[v];
            it->variants[v].answer = facts[i].a;
            Variant *va = &mc->variants[v];
            va->question = facts[i].q[v];
            va->answer = va->correct = facts[i].a;
            va->distractors = facts[i].wrong;
            va->n_distractors = facts[i].n_wrong;
        }
    }
}

/* Anonymous faces (pre-training): n_faces_desc faces of nobody in the world, from their own
 * stream, each drawn like a person's face candidate (without the max-min spreading, which
 * only serves to tell a few hundred people apart) and redrawn while it has a person's
 * parameters or image. images/aNNNN.png, and one face_desc item each: the questions of
 * data/faces.txt, answered by the description. No test variants, no evaluation items. */
static void gen_face_desc(Gen *g) {
    World *w = g->w;
    const Raw *r = &g->raw;
    Rng rng;
    rng_derive(&rng, g->seed, "anonymous-faces");
    for (int i = 0; i < g->p->n_faces_desc; i++) {
        int f[DATA_FACE_PARAMS];
        uint8_t rgb[IMG_BYTES];
        for (int taken = 1; taken;) {
            face_draw_one(r, &rng, f);
            face_render(r, f, rgb);
            taken = 0;
            for (int j = 0; j < w->n_people && !taken; j++)
                taken = !memcmp(f, w->people[j].face, sizeof f) || !memcmp(rgb, w->images[w->people[j].image].rgb, IMG_BYTES);
        }
        char path[64];
        snprintf(path, sizeof path, "images/a%04d.png", i + 1);
        int img = gen_image(g, path, rgb);
        const char *desc = face_describe(g->pool, r, f);
        Item *it = gen_item(g, STAGE_PT, -1, KIND_GENERAL, FMT_FACE_DESC, -1, img, 1, r->face_q.n);
        for (int v = 0; v < r->face_q.n; v++) {
            it->variants[v].question = r->face_q.s[v];
            it->variants[v].answer = desc;
        }
    }
}

/* In-context multiple choice (pre-training): n_mc_context items, each about an invented
 * person: a full name from the name lists that is nobody's in the world (and not "X X"),
 * and a random value of a random asked attribute, all from their own stream. The stem is
 * the answer sentence stated as a fact (template a, text form, filled as the person items
 * are: articles, countries), a space, then a text-only MC question about it (every qt
 * phrasing is a variant): "Mara Lind is a pilot. What is the job of Mara Lind?". Options
 * are the attribute's values, drawn at render time like FMT_MC's, and the answer is the
 * letter. Nothing about these people is anywhere else, so only reading the stem answers. */
static void gen_mc_context(Gen *g) {
    World *w = g->w;
    const Raw *r = &g->raw;
    Rng rng;
    rng_derive(&rng, g->seed, "mc-context");
    for (int i = 0; i < g->p->n_mc_context; i++) {
        char name[128];
        for (long tries = 0, taken = 1; taken; tries++) {
            if (tries == 1000000) die_input("data/first_names.txt", "no name left for the in-context MC items");
            const char *fn = r->first.s[rng_below(&rng, (uint32_t)r->first.n)];
            const char *ln = r->last.s[rng_below(&rng, (uint32_t)r->last.n)];
            snprintf(name, sizeof name, "%s %s", fn, ln);
            taken = strcmp(fn, ln) == 0;
            for (int j = 0; j < w->n_people && !taken; j++) taken = strcmp(name, w->people[j].name) == 0;
        }
        int a = (int)rng_below(&rng, (uint32_t)w->n_attrs);
        int value = (int)rng_below(&rng, (uint32_t)r->values[a].n);
        Person who = {.name = name};
        Fill f = person_fill(g, &who, a, 0, value);
        const StrList *qs = &r->tmpl[a][SLOT_QT];
        int nd;
        const char **d = attr_distractors(g, a, value, &nd);
        Item *it = gen_item(g, STAGE_PT, -1, KIND_GENERAL, FMT_MC_CONTEXT, a, -1, 1, qs->n);
        for (int v = 0; v < qs->n; v++) {
            Buf b = {0};
            fill_buf(&b, r->tmpl[a][SLOT_A].s[0], &f);
            buf_puts(&b, " ");
            fill_buf(&b, qs->s[v], &f);
            Variant *va = &it->variants[v];
            va->question = pool_strdup(g->pool, b.s);
            va->answer = va->correct = f.value;
            va->distractors = d;
            va->n_distractors = nd;
            free(b.s);
        }
    }
}

/* Evaluation items of one person: MC, cloze, generation and QA, with the face and text
 * only. src == EVAL_TEST: paraphrased questions and transformed images. */
static void gen_person_eval(Gen *g, int pi, EvalSource src) {
    World *w = g->w;
    Person *p = &w->people[pi];
    Raw *r = &g->raw;
    int test = src == EVAL_TEST;       /* paraphrase slots and transformed images */
    Rng rp;                             /* draws the perturbed (wrong) answers */
    char tag[96];
    snprintf(tag, sizeof tag, "perturbed/%d/%d", src, p->id);
    rng_derive(&rp, g->seed, tag);
    for (int a = 0; a < w->n_attrs; a++)
        for (int m = 0; m < 2; m++) {
            int img = m == 1 ? -1 : test ? p->test_image[a % DATA_TEST_VARIANTS] : p->image;
            Fill f = person_fill(g, p, a, m == 0, p->value[a]);
            int sq = test ? (m == 0 ? SLOT_PQI : SLOT_PQT) : (m == 0 ? SLOT_QI : SLOT_QT);
            int sg = test ? (m == 0 ? SLOT_PGI : SLOT_PGT) : (m == 0 ? SLOT_GI : SLOT_GT);
            const char *q = fill(g->pool, r->tmpl[a][sq].s[0], &f);
            const char *ans = fill(g->pool, r->tmpl[a][SLOT_A].s[0], &f);
            int nd;
            const char **d = attr_distractors(g, a, p->value[a], &nd);
            /* multiple choice */
            EvalItem *e = gen_eval(g, src, pi, a, TASK_MC, img);
            e->question = q;
            snprintf(tag, sizeof tag, "eval-mc/%d/%d/%d/%d", src, p->id, a, m);
            eval_mc(g, e, tag, f.value, d, nd);
            /* each option as the trained answer sentence, filled as the perturbed answers
             * below are (articles, the country of a birthplace); the truth gives `ans` */
            for (int k = 0; k < e->n_options; k++) {
                int v = k == e->correct ? p->value[a] : sl_find(&r->values[a], e->options[k]);
                CHECK(v >= 0);
                Fill fo = person_fill(g, p, a, m == 0, v);
                e->option_answers[k] = fill(g->pool, r->tmpl[a][SLOT_A].s[0], &fo);
            }
            CHECK(strcmp(e->option_answers[e->correct], ans) == 0);
            /* cloze */
            e = gen_eval(g, src, pi, a, TASK_CLOZE, img);
            e->question = fill(g->pool, r->tmpl[a][test ? SLOT_PC : SLOT_C].s[0], &f);
            char buf[1024];
            Out o = {buf, sizeof buf, 0, 0};
            render_cloze(&o, e->question);
            e->prompt = pool_strdup(g->pool, buf);
            e->answer = e->truth = f.value;
            /* generation */
            e = gen_eval(g, src, pi, a, TASK_GEN, img);
            e->question = fill(g->pool, r->tmpl[a][sg].s[0], &f);
            o = (Out){buf, sizeof buf, 0, 0};
            render_gen(&o, e->question, img >= 0);
            e->prompt = pool_strdup(g->pool, buf);
            e->answer = ans;
            e->truth = f.value;
            /* QA pair with a paraphrased answer (never trained) and N_PERTURBED wrong ones:
             * the answer template filled with distinct other values of the attribute. */
            e = gen_eval(g, src, pi, a, TASK_QA, img);
            e->question = e->prompt = q;
            e->answer = ans;
            e->truth = f.value;
            e->paraphrased_answer = fill(g->pool, r->tmpl[a][SLOT_PA].s[0], &f);
            e->n_perturbed = N_PERTURBED;
            e->perturbed = pool_alloc(g->pool, N_PERTURBED * sizeof *e->perturbed);
            int idx[256];
            for (int k = 0; k < nd; k++) idx[k] = k;
            for (int k = 0; k < N_PERTURBED; k++) {
                int j = k + (int)rng_below(&rp, (uint32_t)(nd - k));
                int t = idx[k]; idx[k] = idx[j]; idx[j] = t;
                int wrong = sl_find(&r->values[a], d[idx[k]]);
                Fill fw = person_fill(g, p, a, m == 0, wrong);
                e->perturbed[k] = fill(g->pool, r->tmpl[a][SLOT_A].s[0], &fw);
            }
        }
}

/* genbench: held-out scenes (never the same as a training scene) and fact questions. */
static void gen_genbench(Gen *g, GenFact *facts, int n_facts, const uint64_t *train_keys) {
    Raw *r = &g->raw;
    Rng rs, rq;
    rng_derive(&rs, g->seed, "genbench-scenes");
    rng_derive(&rq, g->seed, "genbench-questions");
    for (int i = 0; i < g->p->n_genbench_scene; i++) {
        Scene s;
        for (;;) {
            scene_draw(&rs, r, &s);
            uint64_t k = scene_key(&s);
            int seen = 0;
            for (int j = 0; j < g->n_scenes && !seen; j++) seen = train_keys[j] == k;
            if (!seen) break;
        }
        uint8_t rgb[IMG_BYTES];
        scene_render(r, &s, rgb);
        char path[64], tag[64];
        snprintf(path, sizeof path, "images/g%04d.png", i + 1);
        int img = gen_image(g, path, rgb);
        SceneQ qs[1 + 3 * SCENE_MAX];
        int nq = scene_questions(r, &s, qs);
        /* Categories in turn: count, shape, colour, position (of a random shape). */
        int cat = i % 4, k = cat == 0 ? 0 : 1 + 3 * (int)rng_below(&rq, (uint32_t)s.n) + (cat - 1);
        CHECK(k < nq);
        EvalItem *e = gen_eval(g, EVAL_GENBENCH, -1, -1, TASK_MC, img);
        e->category = qs[k].category;
        e->question = pool_strdup(g->pool, qs[k].q);
        snprintf(tag, sizeof tag, "genbench-mc/scene/%d", i);
        eval_mc(g, e, tag, pool_strdup(g->pool, qs[k].a), qs[k].pool, qs[k].n_pool);
    }
    int *ord = xmalloc((size_t)n_facts * sizeof *ord);
    for (int i = 0; i < n_facts; i++) ord[i] = i;
    rng_shuffle_int(&rq, ord, n_facts);
    for (int i = 0; i < g->p->n_genbench_fact; i++) {
        GenFact *f = &facts[ord[i % n_facts]];
        char tag[64];
        EvalItem *e = gen_eval(g, EVAL_GENBENCH, -1, -1, TASK_MC, -1);
        e->category = "fact";
        e->question = f->q[(i / n_facts) % f->n_q];
        snprintf(tag, sizeof tag, "genbench-mc/fact/%d", i);
        eval_mc(g, e, tag, f->a, f->wrong, f->n_wrong);
    }
    free(ord);
}

static void gen_split(Gen *g, const char *name, const int *people, int n) {
    World *w = g->w;
    w->splits = xrealloc(w->splits, (size_t)(w->n_splits + 1) * sizeof *w->splits);
    Split *s = &w->splits[w->n_splits++];
    s->name = pool_strdup(g->pool, name);
    s->n = n;
    s->people = pool_alloc(g->pool, (size_t)(n ? n : 1) * sizeof *s->people);
    memcpy(s->people, people, (size_t)n * sizeof *people);
}

static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* Splits: nested forget sets (a prefix of one shuffle), their complements, the sequential
 * groups (forget_10 in ID order, cut in n_seq), the celebrity candidates and the holdout. */
static void gen_splits(Gen *g) {
    const Preset *P = g->p;
    int nf = P->n_fictitious;
    int *sh = xmalloc((size_t)(nf + P->n_celebrity + P->n_holdout + 1) * sizeof *sh);
    int *tmp = xmalloc((size_t)(nf + P->n_celebrity + P->n_holdout + 1) * sizeof *tmp);
    for (int i = 0; i < nf; i++) sh[i] = i;
    Rng r;
    rng_derive(&r, g->seed, "splits");
    rng_shuffle_int(&r, sh, nf);
    static const int pct[3] = {5, 10, 15};
    for (int k = 0; k < 3; k++) {
        char name[32];
        int n = P->n_forget[k];
        memcpy(tmp, sh, (size_t)n * sizeof *tmp);
        qsort(tmp, (size_t)n, sizeof *tmp, cmp_int);
        snprintf(name, sizeof name, "forget_%d", pct[k]);
        gen_split(g, name, tmp, n);
        if (k == 1) {                           /* sequential groups */
            int per = n / P->n_seq;
            for (int s = 0; s < P->n_seq; s++) {
                snprintf(name, sizeof name, "seq_%d", s + 1);
                gen_split(g, name, tmp + s * per, per);
            }
        }
        int m = 0;
        for (int i = 0; i < nf; i++) {
            int in = 0;
            for (int j = 0; j < n && !in; j++) in = sh[j] == i;
            if (!in) tmp[m++] = i;
        }
        snprintf(name, sizeof name, "retain_%d", 100 - pct[k]);
        gen_split(g, name, tmp, m);
    }
    for (int i = 0; i < nf; i++) tmp[i] = i;
    gen_split(g, "fictitious", tmp, nf);
    for (int i = 0; i < P->n_celebrity; i++) tmp[i] = nf + i;
    gen_split(g, "celebrity", tmp, P->n_celebrity);
    for (int i = 0; i < P->n_holdout; i++) tmp[i] = nf + P->n_celebrity + i;
    gen_split(g, "holdout", tmp, P->n_holdout);
    free(sh);
    free(tmp);
}

/* ----------------------------------------------------------------------------
 * Writing the world: every file goes into DIR.tmp and is recorded in the manifest. */
typedef struct ManEntry {
    char *path;                 /* relative */
    uint64_t hash;
    size_t size;
} ManEntry;

typedef struct Writer {
    char *root;                 /* DIR.tmp */
    ManEntry *files;
    int n, cap;
} Writer;

static void wr_file(Writer *wr, const char *rel, const void *data, size_t n) {
    char *path = xasprintf("%s/%s", wr->root, rel);
    FILE *f = fopen(path, "wb");
    if (!f) die_internal("%s: cannot create: %s", path, strerror(errno));
    if ((n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) die_internal("%s: write failed: %s", path, strerror(errno));
    free(path);
    if (wr->n == wr->cap) {
        wr->cap = wr->cap ? 2 * wr->cap : 1024;
        wr->files = xrealloc(wr->files, (size_t)wr->cap * sizeof *wr->files);
    }
    wr->files[wr->n++] = (ManEntry){xstrdup(rel), hash64(data, n, HASH64_INIT), n};
}

/* Records a file someone else wrote (tokenizer.json). */
static void wr_adopt(Writer *wr, const char *rel) {
    char *path = xasprintf("%s/%s", wr->root, rel);
    size_t n;
    char *data = read_file(path, &n);
    if (wr->n == wr->cap) {
        wr->cap = wr->cap ? 2 * wr->cap : 1024;
        wr->files = xrealloc(wr->files, (size_t)wr->cap * sizeof *wr->files);
    }
    wr->files[wr->n++] = (ManEntry){xstrdup(rel), hash64(data, n, HASH64_INIT), n};
    free(data);
    free(path);
}

static void wr_png(Writer *wr, const char *rel, int w, int h, const uint8_t *rgb) {
    Buf b = {0};
    png_encode(&b, w, h, rgb);
    wr_file(wr, rel, b.s, b.n);
    free(b.s);
}

static Json *jstr(const char *s) { return s ? json_new_string(s) : json_new_null(); }
static Json *jnum(double x) { return json_new_number(x); }

static void jsonl_line(Buf *b, Json *j) {
    char *s = json_dump(j, 0);
    buf_puts(b, s);
    buf_puts(b, "\n");
    free(s);
    json_free(j);
}

static const char *image_path(const World *w, int image) { return image >= 0 ? w->images[image].path : NULL; }

static Json *person_attributes_json(const World *w, const Person *p) {
    Json *o = json_new_object();
    for (int a = 0; a < DATA_MAX_ATTRS; a++) json_set(o, w->attrs[a].name, json_new_string(w->attrs[a].values[p->value[a]]));
    return o;
}

static void write_people(Writer *wr, const World *w) {
    Buf b = {0};
    for (int i = 0; i < w->n_people; i++) {
        const Person *p = &w->people[i];
        Json *j = json_new_object(), *imgs = json_new_array(), *face = json_new_object();
        json_set(j, "ID", jnum(p->id));
        json_set(j, "name", json_new_string(p->name));
        json_set(j, "kind", json_new_string(kind_name(p->kind)));
        json_set(j, "fame", jnum(p->fame));
        json_set(j, "attributes", person_attributes_json(w, p));
        json_set(j, "country", json_new_string(p->country));
        json_set(j, "biography", json_new_string(p->biography));
        json_set(j, "image", json_new_string(image_path(w, p->image)));
        for (int v = 0; v < DATA_TEST_VARIANTS; v++) json_push(imgs, json_new_string(image_path(w, p->test_image[v])));
        json_set(j, "images", imgs);
        for (int k = 0; k < DATA_FACE_PARAMS; k++) json_set(face, face_param_names[k], jnum(p->face[k]));
        json_set(j, "face", face);
        jsonl_line(&b, j);
    }
    wr_file(wr, "people.jsonl", b.s, b.n);
    free(b.s);
}

static Json *strings_json(const char *const *s, int n) {
    Json *a = json_new_array();
    for (int i = 0; i < n; i++) json_push(a, json_new_string(s[i]));
    return a;
}

static int same_pool(const Variant *a, const Variant *b) {
    if (a->n_distractors != b->n_distractors || strcmp(a->correct, b->correct) != 0) return 0;
    for (int i = 0; i < a->n_distractors; i++)
        if (strcmp(a->distractors[i], b->distractors[i]) != 0) return 0;
    return 1;
}

/* train_pt.jsonl / train_ft.jsonl: one item a line; "alternatives" hold the other
 * phrasings, inheriting answer / correct / distractors from the item unless given. */
static void write_train(Writer *wr, const World *w, int stage, const char *rel) {
    Buf b = {0};
    int k = 0;
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        if (it->stage != stage) continue;
        /* Variant 0 at the top level, the others as "alternatives" that only repeat
         * what differs (most share the answer and the distractor pool). */
        const Variant *v0 = &it->variants[0];
        int mc = format_is_mc(it->format);
        Json *j = json_new_object();
        json_set(j, "id", jnum(k++));
        json_set(j, "person", it->person >= 0 ? jnum(w->people[it->person].id) : json_new_null());
        json_set(j, "kind", json_new_string(kind_name(it->kind)));
        json_set(j, "format", json_new_string(format_name(it->format)));
        json_set(j, "attribute", jstr(it->attr >= 0 ? w->attrs[it->attr].name : NULL));
        json_set(j, "image", jstr(image_path(w, it->image)));
        json_set(j, "repeat", jnum(it->repeat));
        json_set(j, "question", json_new_string(v0->question));
        json_set(j, "answer", json_new_string(v0->answer));
        if (mc) {
            json_set(j, "correct", json_new_string(v0->correct));
            json_set(j, "distractors", strings_json(v0->distractors, v0->n_distractors));
        }
        if (it->n_variants > 1) {
            Json *alts = json_new_array();
            for (int v = 1; v < it->n_variants; v++) {
                const Variant *va = &it->variants[v];
                Json *a = json_new_object();
                json_set(a, "question", json_new_string(va->question));
                if (strcmp(va->answer, v0->answer) != 0) json_set(a, "answer", json_new_string(va->answer));
                if (mc && !same_pool(va, v0)) {
                    json_set(a, "correct", json_new_string(va->correct));
                    json_set(a, "distractors", strings_json(va->distractors, va->n_distractors));
                }
                json_push(alts, a);
            }
            json_set(j, "alternatives", alts);
        }
        jsonl_line(&b, j);
    }
    wr_file(wr, rel, b.s, b.n);
    free(b.s);
}

/* {"A": texts[0], ...}: an MC item's options, or their answer sentences. */
static Json *options_json(const EvalItem *e, const char *const *texts) {
    Json *o = json_new_object();
    for (int i = 0; i < e->n_options; i++) {
        char key[2] = {(char)('A' + i), 0};
        json_set(o, key, json_new_string(texts[i]));
    }
    return o;
}

/* A person's evaluation items in MLLMU-Bench's schema (full, test, celebrity, holdout),
 * plus "Attribute" on every question, "Image" on test-set image questions, each MC
 * option's answer sentence ("Option_Answers", for likelihood scoring), and the
 * paraphrased / perturbed answers on the metadata QA pairs. */
static void write_profiles(Writer *wr, const World *w, Kind kind, EvalSource src, const char *rel) {
    Buf b = {0};
    for (int i = 0; i < w->n_people; i++) {
        const Person *p = &w->people[i];
        if (p->kind != kind) continue;
        Json *j = json_new_object(), *imgs = json_new_array(), *cls = json_new_object();
        Json *cls_i = json_new_array(), *cls_t = json_new_array(), *gen = json_new_array();
        Json *mask = json_new_array(), *meta = json_new_array();
        json_set(j, "ID", jnum(p->id));
        json_set(j, "name", json_new_string(p->name));
        json_set(j, "kind", json_new_string(kind_name(p->kind)));
        json_set(j, "image", json_new_string(image_path(w, p->image)));
        for (int v = 0; v < DATA_TEST_VARIANTS; v++) json_push(imgs, json_new_string(image_path(w, p->test_image[v])));
        json_set(j, "images", imgs);
        json_set(j, "biography", json_new_string(p->biography));
        /* Each evaluation item goes to its MLLMU-Bench list: MC by modality, generation,
         * cloze (Mask_Task), QA pairs (metadata). */
        for (int k = 0; k < w->n_eval; k++) {
            const EvalItem *e = &w->eval[k];
            if (e->person != i || e->source != src) continue;
            Json *q = json_new_object();
            const char *type = e->image >= 0 ? "Image_Textual" : "Pure_Text";
            json_set(q, "Question", json_new_string(e->question));
            if (e->task == TASK_MC) {
                char letter[2] = {(char)('A' + e->correct), 0};
                json_set(q, "Options", options_json(e, e->options));
                json_set(q, "Option_Answers", options_json(e, e->option_answers));
                json_set(q, "Correct_Answer", json_new_string(letter));
            } else if (e->task == TASK_QA) {
                json_set(q, "Answer", json_new_string(e->answer));
            } else {
                json_set(q, "Ground_Truth", json_new_string(e->answer));
            }
            if (e->task != TASK_MC) json_set(q, "Type", json_new_string(type));
            json_set(q, "Attribute", json_new_string(w->attrs[e->attr].name));
            if (src == EVAL_TEST && e->image >= 0) json_set(q, "Image", json_new_string(image_path(w, e->image)));
            if (e->task == TASK_QA) {
                json_set(q, "Paraphrased_Answer", json_new_string(e->paraphrased_answer));
                json_set(q, "Perturbed_Answers", strings_json(e->perturbed, e->n_perturbed));
            }
            Json *dst = e->task == TASK_MC ? (e->image >= 0 ? cls_i : cls_t) : e->task == TASK_GEN ? gen
                      : e->task == TASK_CLOZE ? mask : meta;
            json_push(dst, q);
        }
        json_set(cls, "Image_Textual_Questions", cls_i);
        json_set(cls, "Pure_Text_Questions", cls_t);
        json_set(j, "Classification_Task", cls);
        json_set(j, "Generation_Task", gen);
        json_set(j, "Mask_Task", mask);
        json_set(j, "metadata", meta);
        jsonl_line(&b, j);
    }
    wr_file(wr, rel, b.s, b.n);
    free(b.s);
}

static void write_genbench(Writer *wr, const World *w) {
    Buf b = {0};
    int id = 0;
    for (int k = 0; k < w->n_eval; k++) {
        const EvalItem *e = &w->eval[k];
        if (e->source != EVAL_GENBENCH) continue;
        char letter[2] = {(char)('A' + e->correct), 0};
        Json *j = json_new_object();
        json_set(j, "ID", jnum(++id));
        json_set(j, "category", json_new_string(e->category));
        json_set(j, "image", jstr(image_path(w, e->image)));
        json_set(j, "Question", json_new_string(e->question));
        json_set(j, "Options", options_json(e, e->options));
        json_set(j, "Correct_Answer", json_new_string(letter));
        jsonl_line(&b, j);
    }
    wr_file(wr, "genbench.jsonl", b.s, b.n);
    free(b.s);
}

static void write_splits(Writer *wr, const World *w) {
    for (int s = 0; s < w->n_splits; s++) {
        const Split *sp = &w->splits[s];
        Json *a = json_new_array();
        for (int i = 0; i < sp->n; i++) json_push(a, jnum(w->people[sp->people[i]].id));
        char *txt = json_dump(a, 0), rel[96];
        snprintf(rel, sizeof rel, "splits/%s.json", sp->name);
        Buf b = {0};
        buf_puts(&b, txt);
        buf_puts(&b, "\n");
        wr_file(wr, rel, b.s, b.n);
        free(b.s); free(txt);
        json_free(a);
    }
}

/* contact_sheet.png: every face (2x, or 1x beyond 200 people) with its ID, kind and name. */
static void write_contact_sheet(Writer *wr, const World *w, uint64_t seed) {
    int scale = w->n_people > 200 ? 1 : 2, face = IMG * scale;
    int cw = 70, ch = face + 30, cols = w->n_people < 12 ? w->n_people : w->n_people <= 200 ? 14 : 30;
    int rows = (w->n_people + cols - 1) / cols, head = 30;
    int W = cols * cw + 8, H = head + rows * ch + 4;
    uint8_t *img = xmalloc((size_t)W * (size_t)H * 3);
    memset(img, 255, (size_t)W * (size_t)H * 3);
    static const uint8_t black[3] = {0, 0, 0};
    static const uint8_t kind_col[3][3] = {{20, 60, 200}, {200, 120, 0}, {120, 120, 120}};
    char title[128];
    snprintf(title, sizeof title, "PULSE WORLD %s SEED %llu: %d PEOPLE", w->preset.name, (unsigned long long)seed, w->n_people);
    font_text(img, W, H, 6, 4, title, black);
    font_text(img, W, H, 6, 16, "FICTITIOUS", kind_col[0]);
    font_text(img, W, H, 6 + 66, 16, "CELEBRITY", kind_col[1]);
    font_text(img, W, H, 6 + 126, 16, "HOLDOUT", kind_col[2]);
    for (int i = 0; i < w->n_people; i++) {
        const Person *p = &w->people[i];
        int x0 = 4 + (i % cols) * cw, y0 = head + (i / cols) * ch;
        const uint8_t *src = w->images[p->image].rgb;
        int fx = x0 + (cw - face) / 2;
        for (int y = 0; y < face; y++)
            for (int x = 0; x < face; x++)
                memcpy(img + 3 * ((size_t)(y0 + y) * (size_t)W + (size_t)(fx + x)), src + 3 * ((y / scale) * IMG + x / scale), 3);
        char line[96], first[64];
        snprintf(first, sizeof first, "%s", p->name);
        char *sp = strchr(first, ' ');
        if (sp) *sp = 0;
        snprintf(line, sizeof line, "%d %s", p->id, first);
        font_text(img, W, H, x0 + 2, y0 + face + 3, line, kind_col[p->kind]);
        font_text(img, W, H, x0 + 2, y0 + face + 12, sp ? sp + 1 : "", kind_col[p->kind]);
    }
    wr_png(wr, "contact_sheet.png", W, H, img);
    free(img);
}

/* Every text the model will see, in chat form, for training the tokenizer. */
static char **world_corpus(const World *w, int *n) {
    int cap = 1024, k = 0;
    char **t = xmalloc((size_t)cap * sizeof *t);
    char q[4096], a[1024], chat[8192];
#define PUSH(s) do { if (k == cap) { cap *= 2; t = xrealloc(t, (size_t)cap * sizeof *t); } t[k++] = xstrdup(s); } while (0)
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        for (int v = 0; v < it->n_variants; v++) {
            int hi;
            CHECK(render_variant(it, v, NULL, q, sizeof q, a, sizeof a, &hi) == 0);
            chat_render(chat, sizeof chat, q, hi, a);
            PUSH(chat);
        }
    }
    for (int i = 0; i < w->n_eval; i++) {
        const EvalItem *e = &w->eval[i];
        chat_render(chat, sizeof chat, e->prompt, e->image >= 0, e->answer);
        PUSH(chat);
        for (int o = 0; o < e->n_options; o++) PUSH(e->options[o]);
        /* option_answers are left out: they are the QA answer sentence with other values,
         * like the perturbed answers, and leaving them out kept tokenizer.json (and every
         * model trained on it) unchanged when they were added */
        if (e->paraphrased_answer) PUSH(e->paraphrased_answer);
        for (int p = 0; p < e->n_perturbed; p++) PUSH(e->perturbed[p]);
    }
    for (int i = 0; i < w->n_people; i++) PUSH(w->people[i].biography);
    for (int i = 0; i < w->n_idk; i++) PUSH(w->idk[i]);
#undef PUSH
    *n = k;
    return t;
}

/* Token lengths (prompt + answer in chat form, <s> and </s> included, the image as its one
 * <image> token) of every training variant, per format, and of every evaluation item, per
 * task: max and mean, for world.json and the command's summary. */
typedef struct TokStat {
    int max;
    long n;
    double sum;
} TokStat;

typedef struct TokStats {
    TokStat train[N_FORMATS], eval[N_TASKS], all_train, all_eval;
} TokStats;

static void tokstat_add(TokStat *s, int n) {
    if (n > s->max) s->max = n;
    s->n++;
    s->sum += n;
}

static TokStats token_stats(const World *w, const Tokenizer *tok) {
    TokStats s;
    memset(&s, 0, sizeof s);
    static int ids[4096];
    char q[4096], a[1024];
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        for (int v = 0; v < it->n_variants; v++) {
            int hi;
            render_variant(it, v, NULL, q, sizeof q, a, sizeof a, &hi);
            int n = tok_encode_chat(tok, q, hi, a, ids, 4096, NULL);
            CHECK(n > 0);
            tokstat_add(&s.train[it->format], n);
            tokstat_add(&s.all_train, n);
        }
    }
    for (int i = 0; i < w->n_eval; i++) {
        const EvalItem *e = &w->eval[i];
        int n = tok_encode_chat(tok, e->prompt, e->image >= 0, e->answer, ids, 4096, NULL);
        CHECK(n > 0);
        tokstat_add(&s.eval[e->task], n);
        tokstat_add(&s.all_eval, n);
    }
    return s;
}

static double tokstat_mean(const TokStat *s) { return s->n ? round(s->sum / (double)s->n * 10) / 10 : 0; }

static Json *tokstat_json(const TokStat *s) {
    Json *o = json_new_object();
    json_set(o, "max", jnum(s->max));
    json_set(o, "mean", jnum(tokstat_mean(s)));
    return o;
}

static int cmp_manifest(const void *a, const void *b) {
    return strcmp(((const ManEntry *)a)->path, ((const ManEntry *)b)->path);
}

static Json *preset_json(const Preset *p) {
    Json *o = json_new_object(), *f = json_new_array();
    json_set(o, "name", json_new_string(p->name));
    json_set(o, "n_fictitious", jnum(p->n_fictitious));
    json_set(o, "n_celebrity", jnum(p->n_celebrity));
    json_set(o, "celeb_keep", jnum(p->celeb_keep));
    json_set(o, "celeb_forget", jnum(p->celeb_forget));
    json_set(o, "n_holdout", jnum(p->n_holdout));
    for (int k = 0; k < 3; k++) json_push(f, jnum(p->n_forget[k]));
    json_set(o, "n_forget", f);
    json_set(o, "n_seq", jnum(p->n_seq));
    json_set(o, "n_attrs", jnum(p->n_attrs));
    json_set(o, "n_scenes_train", jnum(p->n_scenes_train));
    json_set(o, "n_genbench_scene", jnum(p->n_genbench_scene));
    json_set(o, "n_genbench_fact", jnum(p->n_genbench_fact));
    json_set(o, "n_faces_desc", jnum(p->n_faces_desc));
    json_set(o, "n_mc_context", jnum(p->n_mc_context));
    json_set(o, "vocab_size", jnum(p->vocab_size));
    if (p->scene_lookup) json_set(o, "scene_lookup", jnum(p->scene_lookup));   /* only when on: worlds without keep their bytes */
    return o;
}

/* ----------------------------------------------------------------------------
 * The output directory: DIR.tmp, then a rename; an existing DIR is replaced only if it
 * is a pulse world (or empty). */
#define TMP_MARKER ".pulse-data-tmp"

static int is_world_dir(const char *dir) {
    char *path = xasprintf("%s/world.json", dir);
    FILE *f = fopen(path, "rb");
    free(path);
    if (!f) return 0;
    Buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.n < (64u << 20)) buf_putn(&b, chunk, n);
    fclose(f);
    char err[128];
    Json *j = b.s ? json_parse(b.s, b.n, err, sizeof err) : NULL;
    Json *fmt = j ? json_get(j, "format") : NULL;
    int ours = fmt && fmt->type == JSON_STRING && strcmp(fmt->string, WORLD_FORMAT) == 0;
    json_free(j);
    free(b.s);
    return ours;
}

/* rm -r of a directory that we made (a world or our temporary). */
static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) { if (remove(path) != 0 && errno != ENOENT) die_internal("%s: cannot remove: %s", path, strerror(errno)); return; }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *sub = xasprintf("%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(sub);
        else if (remove(sub) != 0) die_internal("%s: cannot remove: %s", sub, strerror(errno));
        free(sub);
    }
    closedir(d);
    if (rmdir(path) != 0) die_internal("%s: cannot remove: %s", path, strerror(errno));
}

static void mkdir_or_die(const char *path) {
    if (mkdir(path, 0777) != 0) die_internal("%s: cannot create directory: %s", path, strerror(errno));
}

static void prepare_out(const char *out, const char *tmp) {
    struct stat st;
    if (stat(out, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) die_input(out, "exists and is not a directory");
        if (!dir_is_empty(out) && !is_world_dir(out))
            die_input(out, "exists, is not empty and is not a pulse world (no world.json): refusing to overwrite");
    }
    if (stat(tmp, &st) == 0) {
        char *marker = xasprintf("%s/" TMP_MARKER, tmp);
        int ours = S_ISDIR(st.st_mode) && (file_exists(marker) || dir_is_empty(tmp));
        free(marker);
        if (!ours) die_input(tmp, "exists and was not left by pulse data: remove it first");
        remove_tree(tmp);
    }
}

/* Moves tmp into place; the old world, if any, goes only after the new one is there. */
static void commit_out(const char *out, const char *tmp) {
    char *marker = xasprintf("%s/" TMP_MARKER, tmp);
    remove(marker);
    free(marker);
    int fd = open(tmp, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) { syncfs(fd); close(fd); }       /* one flush for all files instead of one each */
    struct stat st;
    char *old = NULL;
    if (stat(out, &st) == 0) {
        old = xasprintf("%s.old", out);
        if (stat(old, &st) == 0) remove_tree(old);
        if (rename(out, old) != 0) die_internal("%s: cannot move aside: %s", out, strerror(errno));
    }
    if (rename(tmp, out) != 0) die_internal("%s: cannot rename to %s: %s", tmp, out, strerror(errno));
    if (old) { remove_tree(old); free(old); }
}

/* ----------------------------------------------------------------------------
 * data_generate */

static void world_attrs_from_raw(World *w, const Raw *r) {
    for (int a = 0; a < DATA_MAX_ATTRS; a++) {
        w->attrs[a].name = attr_names[a];
        w->attrs[a].n_values = r->values[a].n;
        w->attrs[a].values = r->values[a].s;
    }
    w->countries = r->countries.s;
    w->idk = r->idk.s;
    w->n_idk = r->idk.n;
}

static void check_preset(const Preset *p) {
    const char *bad = NULL;
    if (p->n_fictitious < 1 || p->n_celebrity < 1 || p->n_holdout < 0) bad = "people counts must be positive";
    else if (p->celeb_keep > p->n_celebrity || p->celeb_forget > p->celeb_keep) bad = "celebrity keep/forget exceed the candidates";
    else if (p->n_forget[0] < 1 || p->n_forget[0] > p->n_forget[1] || p->n_forget[1] > p->n_forget[2] || p->n_forget[2] >= p->n_fictitious)
        bad = "forget sizes must be nested (5 <= 10 <= 15) and leave a retain set";
    else if (p->n_seq < 1 || p->n_forget[1] % p->n_seq) bad = "forget_10 must split into n_seq equal groups";
    else if (p->n_attrs < 1 || p->n_attrs > DATA_MAX_ATTRS) bad = "n_attrs out of range";
    else if (p->n_scenes_train < 1 || p->n_genbench_scene < 0 || p->n_genbench_fact < 0) bad = "genbench sizes";
    else if (p->n_faces_desc < 0 || p->n_faces_desc > 9999) bad = "n_faces_desc must be in [0, 9999]";
    else if (p->n_mc_context < 0 || p->n_mc_context > 1000000) bad = "n_mc_context must be in [0, 1000000]";
    else if (p->scene_lookup != 0 && p->scene_lookup != 1) bad = "scene_lookup must be 0 or 1";
    else if (p->vocab_size < TOK_FIRST_MERGE) bad = "vocab_size below 260";
    if (bad) die_input(NULL, "preset %s: %s", p->name, bad);
}

/* Builds the world in memory (g->w). */
static void gen_world(Gen *g) {
    World *w = g->w;
    const Preset *P = g->p;
    world_attrs_from_raw(w, &g->raw);
    w->n_attrs = P->n_attrs;
    w->preset = *P;
    w->seed = g->seed;
    gen_people(g);
    /* Items in file order: pre-training (celebrities, then scenes, facts, anonymous faces
     * and in-context MC), then fine-tuning. */
    for (int i = 0; i < w->n_people; i++)
        if (w->people[i].kind == KIND_CELEBRITY) {
            gen_person_items(g, i, STAGE_PT);
            gen_celebrity_extras(g, i);
        }
    int n_facts;
    GenFact *facts = gen_facts(g, &n_facts);
    uint64_t *scene_keys = xcalloc((size_t)P->n_scenes_train, sizeof *scene_keys);
    gen_general_items(g, facts, n_facts, scene_keys);
    gen_face_desc(g);
    gen_mc_context(g);
    for (int i = 0; i < w->n_people; i++)
        if (w->people[i].kind == KIND_FICTITIOUS) gen_person_items(g, i, STAGE_FT);
    /* Evaluation: profiles of everyone, the test set of the fictitious people, genbench. */
    for (int i = 0; i < w->n_people; i++) gen_person_eval(g, i, EVAL_PROFILE);
    for (int i = 0; i < w->n_people; i++)
        if (w->people[i].kind == KIND_FICTITIOUS) gen_person_eval(g, i, EVAL_TEST);
    gen_genbench(g, facts, n_facts, scene_keys);
    gen_splits(g);
    free(scene_keys);
    free(facts);
}

/* The fingerprint: the manifest's bytes, then every key of world.json but "fingerprint"
 * with its value in compact form, so that it covers world.json's content too. */
static uint64_t world_fingerprint(const char *manifest, size_t n, const Json *wj) {
    uint64_t h = hash64(manifest, n, HASH64_INIT);
    for (size_t i = 0; i < wj->len; i++) {
        if (strcmp(wj->keys[i], "fingerprint") == 0) continue;
        char *v = json_dump(wj->items[i], 0);
        h = hash64(wj->keys[i], strlen(wj->keys[i]) + 1, h);
        h = hash64(v, strlen(v) + 1, h);
        free(v);
    }
    return h;
}

void world_reseal(const char *dir) {
    char *mpath = xasprintf("%s/manifest.tsv", dir), *wpath = xasprintf("%s/world.json", dir);
    size_t n;
    char *man = read_file(mpath, &n);
    Buf out = {0};
    for (char *line = man; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        const char *rel = strrchr(line, '\t');
        if (line[0] == '#' || !rel) buf_printf(&out, "%s\n", line);
        else {
            char *path = xasprintf("%s/%s", dir, rel + 1);
            size_t fn;
            char *data = read_file(path, &fn);
            buf_printf(&out, "%016llx\t%zu\t%s\n", (unsigned long long)hash64(data, fn, HASH64_INIT), fn, rel + 1);
            free(data); free(path);
        }
        line = nl ? nl + 1 : NULL;
    }
    write_file_atomic(mpath, out.s, out.n);
    Json *j = json_load(wpath);
    if (j->type != JSON_OBJECT) die_input(wpath, "expected a JSON object");
    char hex[20];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)world_fingerprint(out.s, out.n, j));
    json_set(j, "fingerprint", json_new_string(hex));
    char *txt = json_dump(j, 2), *full = xasprintf("%s\n", txt);
    write_file_atomic(wpath, full, strlen(full));
    free(full); free(txt); json_free(j); free(out.s); free(man); free(mpath); free(wpath);
}

static int count_items(const World *w, int stage) {
    int n = 0;
    for (int i = 0; i < w->n_items; i++) n += w->items[i].stage == stage;
    return n;
}

static int count_eval(const World *w, EvalSource src) {
    int n = 0;
    for (int i = 0; i < w->n_eval; i++) n += w->eval[i].source == src;
    return n;
}

static void world_free_generated(World *w);

void data_generate(const Preset *P, uint64_t seed, const char *raw, const char *out_dir) {
    check_preset(P);
    char *raw_dir = raw ? xstrdup(raw) : data_default_raw_dir();
    char *tmp = xasprintf("%s.tmp", out_dir);
    prepare_out(out_dir, tmp);
    Gen g = {0};
    g.p = P;
    g.seed = seed;
    g.pool = xcalloc(1, sizeof *g.pool);
    raw_load(&g.raw, raw_dir, g.pool);
    World *w = xcalloc(1, sizeof *w);
    g.w = w;
    gen_world(&g);

    mkdir_or_die(tmp);
    Writer wr = {tmp, NULL, 0, 0};
    char *marker = xasprintf("%s/" TMP_MARKER, tmp);
    FILE *mf = fopen(marker, "wb");
    if (!mf) die_internal("%s: cannot create: %s", marker, strerror(errno));
    fclose(mf);
    free(marker);
    char *sub = xasprintf("%s/images", tmp); mkdir_or_die(sub); free(sub);
    sub = xasprintf("%s/splits", tmp); mkdir_or_die(sub); free(sub);
    for (int i = 0; i < w->n_images; i++) wr_png(&wr, w->images[i].path, IMG, IMG, w->images[i].rgb);
    write_people(&wr, w);
    write_profiles(&wr, w, KIND_FICTITIOUS, EVAL_PROFILE, "full.jsonl");
    write_profiles(&wr, w, KIND_FICTITIOUS, EVAL_TEST, "test.jsonl");
    write_profiles(&wr, w, KIND_CELEBRITY, EVAL_PROFILE, "celebrity.jsonl");
    write_profiles(&wr, w, KIND_HOLDOUT, EVAL_PROFILE, "holdout.jsonl");
    write_genbench(&wr, w);
    write_train(&wr, w, STAGE_PT, "train_pt.jsonl");
    write_train(&wr, w, STAGE_FT, "train_ft.jsonl");
    write_splits(&wr, w);
    write_contact_sheet(&wr, w, seed);

    /* The tokenizer, trained on every text of the world in its chat form. */
    int n_texts;
    char **texts = world_corpus(w, &n_texts);
    Tokenizer *tok = tok_train((const char *const *)texts, n_texts, P->vocab_size);
    for (int i = 0; i < n_texts; i++) free(texts[i]);
    free(texts);
    char *tok_path = xasprintf("%s/tokenizer.json", tmp);
    tok_save(tok_path, tok);
    free(tok_path);
    wr_adopt(&wr, "tokenizer.json");
    TokStats ts = token_stats(w, tok);
    tok_free(tok);

    /* manifest.tsv: the hash and size of every file, sorted; its hash is the fingerprint. */
    qsort(wr.files, (size_t)wr.n, sizeof *wr.files, cmp_manifest);
    Buf man = {0};
    buf_puts(&man, "# pulse world manifest: fnv1a64<TAB>bytes<TAB>path\n");
    for (int i = 0; i < wr.n; i++)
        buf_printf(&man, "%016llx\t%zu\t%s\n", (unsigned long long)wr.files[i].hash, wr.files[i].size, wr.files[i].path);
    wr_file(&wr, "manifest.tsv", man.s, man.n);

    Json *j = json_new_object(), *counts = json_new_object(), *attrs = json_new_array(), *splits = json_new_array();
    Json *toks = json_new_object();
    char hex[32];
    json_set(j, "format", json_new_string(WORLD_FORMAT));
    json_set(j, "version", jnum(WORLD_VERSION));
    json_set(j, "preset", preset_json(P));
    json_set(j, "seed", jnum((double)seed));
    json_set(counts, "fictitious", jnum(P->n_fictitious));
    json_set(counts, "celebrity", jnum(P->n_celebrity));
    json_set(counts, "holdout", jnum(P->n_holdout));
    json_set(counts, "anonymous_faces", jnum(P->n_faces_desc));
    json_set(counts, "mc_context", jnum(P->n_mc_context));
    json_set(counts, "images", jnum(w->n_images));
    json_set(counts, "train_pt", jnum(count_items(w, STAGE_PT)));
    json_set(counts, "train_ft", jnum(count_items(w, STAGE_FT)));
    json_set(counts, "eval_profile", jnum(count_eval(w, EVAL_PROFILE)));
    json_set(counts, "eval_test", jnum(count_eval(w, EVAL_TEST)));
    json_set(counts, "genbench", jnum(count_eval(w, EVAL_GENBENCH)));
    json_set(j, "counts", counts);
    for (int a = 0; a < DATA_MAX_ATTRS; a++) {
        Json *o = json_new_object();
        json_set(o, "name", json_new_string(w->attrs[a].name));
        json_set(o, "asked", json_new_bool(a < w->n_attrs));
        json_set(o, "values", strings_json(w->attrs[a].values, w->attrs[a].n_values));
        json_push(attrs, o);
    }
    json_set(j, "attributes", attrs);
    json_set(j, "countries", strings_json(w->countries, w->attrs[1].n_values));
    json_set(j, "idk", strings_json(w->idk, w->n_idk));
    for (int s = 0; s < w->n_splits; s++) json_push(splits, json_new_string(w->splits[s].name));
    json_set(j, "splits", splits);
    Json *tt = json_new_object(), *te = json_new_object();
    json_set(toks, "note", json_new_string("tokens of prompt + answer in chat form with <s> and </s>, "
                                           "the image counted as its one <image> token"));
    json_set(toks, "train", tokstat_json(&ts.all_train));
    json_set(toks, "eval", tokstat_json(&ts.all_eval));
    for (int f = 0; f < N_FORMATS; f++) if (ts.train[f].n) json_set(tt, format_names[f], tokstat_json(&ts.train[f]));
    for (int t = 0; t < N_TASKS; t++) if (ts.eval[t].n) json_set(te, task_names[t], tokstat_json(&ts.eval[t]));
    json_set(toks, "train_by_format", tt);
    json_set(toks, "eval_by_task", te);
    json_set(j, "tokens", toks);
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)g.raw.hash);
    json_set(j, "raw_hash", json_new_string(hex));
    uint64_t fingerprint = world_fingerprint(man.s, man.n, j);
    free(man.s);
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)fingerprint);
    json_set(j, "fingerprint", json_new_string(hex));
    char *txt = json_dump(j, 2);
    Buf wb = {0};
    buf_puts(&wb, txt);
    buf_puts(&wb, "\n");
    char *wpath = xasprintf("%s/world.json", tmp);
    FILE *f = fopen(wpath, "wb");
    if (!f || fwrite(wb.s, 1, wb.n, f) != wb.n || fclose(f) != 0) die_internal("%s: write failed", wpath);
    free(wpath); free(wb.s); free(txt);
    json_free(j);
    commit_out(out_dir, tmp);

    fprintf(stderr, "pulse data: %s (preset %s, seed %llu): %d fictitious, %d celebrities, %d holdout, "
            "%d anonymous faces, %d in-context MC, %d images, %d+%d training items, %d evaluation items, fingerprint %016llx\n"
            "pulse data: tokens (chat form): training max %d mean %.1f, evaluation max %d mean %.1f\n",
            out_dir, P->name, (unsigned long long)seed, P->n_fictitious, P->n_celebrity, P->n_holdout,
            P->n_faces_desc, P->n_mc_context, w->n_images, count_items(w, STAGE_PT), count_items(w, STAGE_FT), w->n_eval,
            (unsigned long long)fingerprint, ts.all_train.max, tokstat_mean(&ts.all_train), ts.all_eval.max,
            tokstat_mean(&ts.all_eval));
    for (int i = 0; i < wr.n; i++) free(wr.files[i].path);
    free(wr.files);
    raw_free(&g.raw);
    free(g.scenes);
    world_free_generated(w);
    pool_free(g.pool);
    free(tmp);
    free(raw_dir);
}

static void world_free_generated(World *w) {
    free(w->people); free(w->images); free(w->items); free(w->eval); free(w->splits);
    free(w);
}

/* ----------------------------------------------------------------------------
 * world_load: every file is checked against the manifest, then every record's fields. */
typedef struct Ctx {
    const char *path;           /* file being parsed (for messages) */
    int line;
} Ctx;

_Noreturn __attribute__((format(printf, 2, 3)))
static void bad(const Ctx *c, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->line > 0) die_input(c->path, "line %d: %s", c->line, msg);
    die_input(c->path, "%s", msg);
}

static const Json *req(const Ctx *c, const Json *o, const char *key, JsonType type) {
    static const char *const tn[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    const Json *v = json_get(o, key);
    if (!v || v->type != type) bad(c, "\"%s\" %s (expected %s)", key, v ? "has the wrong type" : "is missing", tn[type]);
    return v;
}

static void no_special(const Ctx *c, const char *s, const char *key) {
    const char *t = special_in(s);
    if (t) bad(c, "\"%s\" holds the special token %s", key, t);
}

static const char *req_str(const Ctx *c, Pool *pool, const Json *o, const char *key) {
    const Json *v = req(c, o, key, JSON_STRING);
    if (strlen(v->string) != v->len) bad(c, "\"%s\" holds a NUL byte", key);
    no_special(c, v->string, key);
    return pool_strdup(pool, v->string);
}

static long req_int(const Ctx *c, const Json *o, const char *key, long lo, long hi) {
    const Json *v = req(c, o, key, JSON_NUMBER);
    if (v->number != floor(v->number) || v->number < (double)lo || v->number > (double)hi)
        bad(c, "\"%s\" must be an integer in [%ld, %ld]", key, lo, hi);
    return (long)v->number;
}

/* NULL if the key holds null; else a required string. */
static const char *opt_str(const Ctx *c, Pool *pool, const Json *o, const char *key) {
    const Json *v = json_get(o, key);
    if (v && v->type == JSON_NULL) return NULL;
    return req_str(c, pool, o, key);
}

static const char **req_strings(const Ctx *c, Pool *pool, const Json *o, const char *key, int min, int *n) {
    const Json *a = req(c, o, key, JSON_ARRAY);
    if ((int)a->len < min) bad(c, "\"%s\" needs at least %d entries", key, min);
    const char **s = pool_alloc(pool, (a->len + 1) * sizeof *s);
    for (size_t i = 0; i < a->len; i++) {
        if (a->items[i]->type != JSON_STRING) bad(c, "\"%s\"[%zu] is not a string", key, i);
        if (strlen(a->items[i]->string) != a->items[i]->len) bad(c, "\"%s\"[%zu] holds a NUL byte", key, i);
        no_special(c, a->items[i]->string, key);
        s[i] = pool_strdup(pool, a->items[i]->string);
    }
    *n = (int)a->len;
    return s;
}

typedef struct Loader {
    World *w;
    Pool *pool;
    const char *dir;
    char **names;               /* manifest paths */
    char **data;                /* their contents (JSON files kept, others freed) */
    size_t *size;
    int n_files;
    int *id_index;              /* person ID -> index, -1 */
    int max_id;
} Loader;

static char *ld_path(const Loader *L, const char *rel) { return xasprintf("%s/%s", L->dir, rel); }

static const char *ld_text(const Loader *L, const char *rel, size_t *n) {
    for (int i = 0; i < L->n_files; i++)
        if (strcmp(L->names[i], rel) == 0) { *n = L->size[i]; return L->data[i]; }
    char *p = ld_path(L, rel);
    die_input(p, "missing from the world's manifest.tsv");
}

/* Calls fn on every line of a JSON Lines file, parsed. */
static void ld_jsonl(Loader *L, const char *rel, void (*fn)(Loader *, const Ctx *, const Json *, void *), void *arg) {
    size_t n;
    const char *text = ld_text(L, rel, &n);
    char *path = ld_path(L, rel);
    Ctx c = {path, 0};
    for (size_t off = 0; off < n;) {
        const char *nl = memchr(text + off, '\n', n - off);
        size_t len = nl ? (size_t)(nl - (text + off)) : n - off;
        c.line++;
        char err[256];
        Json *j = json_parse(text + off, len, err, sizeof err);
        if (!j) bad(&c, "%s", err);
        if (j->type != JSON_OBJECT) bad(&c, "expected a JSON object");
        fn(L, &c, j, arg);
        json_free(j);
        off += len + 1;
    }
    free(path);
}

static int ld_image(const Loader *L, const Ctx *c, const char *path) {
    int i = world_image_find(L->w, path);
    if (i < 0) bad(c, "image \"%s\" is not in the manifest", path);
    return i;
}

static int ld_person(const Loader *L, const Ctx *c, long id) {
    if (id < 1 || id > L->max_id || L->id_index[id] < 0) bad(c, "no person with ID %ld", id);
    return L->id_index[id];
}

static int ld_attr(const Loader *L, const Ctx *c, const char *name, int asked_only) {
    int a = name_lookup(attr_names, DATA_MAX_ATTRS, name);
    if (a < 0 || (asked_only && a >= L->w->n_attrs)) bad(c, "unknown attribute \"%s\"", name);
    return a;
}

/* One line of people.jsonl: a Person; names and IDs unique, values in the vocabularies. */
static void ld_person_line(Loader *L, const Ctx *c, const Json *j, void *arg) {
    (void)arg;
    World *w = L->w;
    if (w->n_people >= L->max_id) bad(c, "more people than world.json counts");
    Person *p = &w->people[w->n_people];
    p->id = (int)req_int(c, j, "ID", 1, L->max_id);
    if (L->id_index[p->id] >= 0) bad(c, "duplicate ID %d", p->id);
    L->id_index[p->id] = w->n_people;
    p->name = req_str(c, L->pool, j, "name");
    for (int i = 0; i < w->n_people; i++)
        if (strcmp(w->people[i].name, p->name) == 0) bad(c, "duplicate name \"%s\"", p->name);
    const char *kind = req_str(c, L->pool, j, "kind");
    p->kind = (Kind)name_lookup(kind_names, KIND_GENERAL, kind);
    if ((int)p->kind < 0) bad(c, "unknown kind \"%s\"", kind);
    p->fame = (int)req_int(c, j, "fame", 0, 3);
    const Json *attrs = req(c, j, "attributes", JSON_OBJECT);
    for (int a = 0; a < DATA_MAX_ATTRS; a++) {
        const char *v = req_str(c, L->pool, attrs, attr_names[a]);
        p->value[a] = name_lookup(w->attrs[a].values, w->attrs[a].n_values, v);
        if (p->value[a] < 0) bad(c, "\"%s\" is not a value of %s", v, attr_names[a]);
    }
    p->country = req_str(c, L->pool, j, "country");
    if (strcmp(p->country, w->countries[p->value[1]]) != 0) bad(c, "country does not match the birthplace");
    p->biography = req_str(c, L->pool, j, "biography");
    p->image = ld_image(L, c, req_str(c, L->pool, j, "image"));
    int n;
    const char **imgs = req_strings(c, L->pool, j, "images", DATA_TEST_VARIANTS, &n);
    for (int v = 0; v < DATA_TEST_VARIANTS; v++) p->test_image[v] = ld_image(L, c, imgs[v]);
    const Json *face = req(c, j, "face", JSON_OBJECT);
    for (int k = 0; k < DATA_FACE_PARAMS; k++) p->face[k] = (int)req_int(c, face, face_param_names[k], 0, 63);
    w->n_people++;
}

/* Variant fields of a training line or of one of its alternatives (inheriting from v0). */
static void ld_variant(Loader *L, const Ctx *c, const Json *o, Variant *va, const Variant *v0, Format fmt) {
    va->question = req_str(c, L->pool, o, "question");
    va->answer = v0 && !json_get(o, "answer") ? v0->answer : req_str(c, L->pool, o, "answer");
    if (format_is_mc(fmt)) {
        if (v0 && !json_get(o, "correct")) {
            va->correct = v0->correct; va->distractors = v0->distractors; va->n_distractors = v0->n_distractors;
        } else {
            va->correct = req_str(c, L->pool, o, "correct");
            va->distractors = req_strings(c, L->pool, o, "distractors", DATA_MC_OPTIONS - 1, &va->n_distractors);
            if (va->n_distractors > 256) bad(c, "more than 256 distractors");
            for (int i = 0; i < va->n_distractors; i++) {
                if (strcmp(va->distractors[i], va->correct) == 0) bad(c, "a distractor equals the correct answer");
                for (int k = 0; k < i; k++)     /* else two options could be the same */
                    if (strcmp(va->distractors[i], va->distractors[k]) == 0) bad(c, "the distractor \"%s\" is listed twice", va->distractors[i]);
            }
        }
    }
    if (fmt == FMT_CLOZE && !strstr(va->question, "__")) bad(c, "a cloze question needs \"__\"");
    if (fmt == FMT_MC_CONTEXT && !strstr(va->question, va->correct)) bad(c, "an mc_context question must state its correct answer");
}

/* One line of train_pt.jsonl / train_ft.jsonl: an Item; the person's kind must match. */
static void ld_train_line(Loader *L, const Ctx *c, const Json *j, void *arg) {
    World *w = L->w;
    int stage = *(int *)arg;
    Item *it = &w->items[w->n_items];
    memset(it, 0, sizeof *it);
    it->index = w->n_items;
    it->stage = stage;
    const Json *pj = req(c, j, "person", json_get(j, "person") && json_get(j, "person")->type == JSON_NULL ? JSON_NULL : JSON_NUMBER);
    it->person = pj->type == JSON_NULL ? -1 : ld_person(L, c, req_int(c, j, "person", 1, L->max_id));
    const char *kind = req_str(c, L->pool, j, "kind"), *fmt = req_str(c, L->pool, j, "format");
    it->kind = (Kind)name_lookup(kind_names, N_KINDS, kind);
    it->format = (Format)name_lookup(format_names, N_FORMATS, fmt);
    if ((int)it->kind < 0) bad(c, "unknown kind \"%s\"", kind);
    if ((int)it->format < 0) bad(c, "unknown format \"%s\"", fmt);
    if ((it->person >= 0) != (it->kind != KIND_GENERAL) || (it->person >= 0 && w->people[it->person].kind != it->kind))
        bad(c, "kind \"%s\" does not match the person", kind);
    const char *attr = opt_str(c, L->pool, j, "attribute"), *img = opt_str(c, L->pool, j, "image");
    it->attr = attr ? ld_attr(L, c, attr, 1) : -1;
    it->image = img ? ld_image(L, c, img) : -1;
    it->repeat = (int)req_int(c, j, "repeat", 1, 1000);
    if (it->format == FMT_FACE_DESC && (it->image < 0 || it->person >= 0 || it->attr >= 0))
        bad(c, "a face_desc item needs an image and no person or attribute");
    if (it->format == FMT_MC_CONTEXT && (it->image >= 0 || it->person >= 0 || it->attr < 0))
        bad(c, "an mc_context item needs an attribute and no person or image");
    const Json *alts = json_get(j, "alternatives");
    if (alts && alts->type != JSON_ARRAY) bad(c, "\"alternatives\" must be an array");
    it->n_variants = 1 + (alts ? (int)alts->len : 0);
    it->variants = pool_alloc(L->pool, (size_t)it->n_variants * sizeof *it->variants);
    memset(it->variants, 0, (size_t)it->n_variants * sizeof *it->variants);
    ld_variant(L, c, j, &it->variants[0], NULL, it->format);
    for (int v = 1; v < it->n_variants; v++) {
        if (alts->items[v - 1]->type != JSON_OBJECT) bad(c, "alternatives[%d] is not an object", v - 1);
        ld_variant(L, c, alts->items[v - 1], &it->variants[v], &it->variants[0], it->format);
    }
    if (it->format == FMT_MC && it->person >= 0 && it->attr >= 0) {   /* a person's MC: their value */
        const char *value = w->attrs[it->attr].values[w->people[it->person].value[it->attr]];
        for (int v = 0; v < it->n_variants; v++)
            if (strcmp(it->variants[v].correct, value) != 0)
                bad(c, "the correct answer \"%s\" is not the person's %s", it->variants[v].correct, w->attrs[it->attr].name);
    }
    w->n_items++;
}

static EvalItem *ld_eval_new(Loader *L, EvalSource src, int person, int attr, Task task, int image) {
    World *w = L->w;
    EvalItem *e = &w->eval[w->n_eval++];
    memset(e, 0, sizeof *e);
    e->source = src; e->person = person; e->attr = attr; e->task = task; e->image = image;
    return e;
}

/* Options {A..D} and Correct_Answer of an MC question; renders the prompt. */
static void ld_mc(Loader *L, const Ctx *c, const Json *q, EvalItem *e) {
    const Json *opts = req(c, q, "Options", JSON_OBJECT);
    if (opts->len != DATA_MC_OPTIONS) bad(c, "\"Options\" must have A-D");
    for (int i = 0; i < DATA_MC_OPTIONS; i++) {
        char key[2] = {(char)('A' + i), 0};
        e->options[i] = req_str(c, L->pool, opts, key);
        for (int k = 0; k < i; k++)
            if (!strcmp(e->options[k], e->options[i])) bad(c, "\"Options\" %c and %c are the same", 'A' + k, 'A' + i);
    }
    e->n_options = DATA_MC_OPTIONS;
    const char *ca = req_str(c, L->pool, q, "Correct_Answer");
    if (strlen(ca) != 1 || ca[0] < 'A' || ca[0] >= 'A' + DATA_MC_OPTIONS) bad(c, "\"Correct_Answer\" must be one letter A-D");
    e->correct = ca[0] - 'A';
    e->answer = ca;
    e->truth = e->options[e->correct];
    char buf[4096];
    Out o = {buf, sizeof buf, 0, 0};
    render_mc(&o, e->question, e->options, DATA_MC_OPTIONS);
    if (o.trunc) bad(c, "question too long");
    e->prompt = pool_strdup(L->pool, buf);
}

/* Option_Answers {A..D} of a person's MC question: the same keys as Options, each a
 * non-empty sentence. */
static void ld_option_answers(Loader *L, const Ctx *c, const Json *q, EvalItem *e) {
    const Json *oa = req(c, q, "Option_Answers", JSON_OBJECT);
    if ((int)oa->len != e->n_options) bad(c, "\"Option_Answers\" must have the keys of \"Options\" (A-D)");
    for (int i = 0; i < e->n_options; i++) {
        char key[2] = {(char)('A' + i), 0};
        const Json *v = json_get(oa, key);
        if (!v) bad(c, "\"Option_Answers\" must have the keys of \"Options\" (A-D)");
        if (v->type != JSON_STRING || v->len == 0 || strlen(v->string) != v->len)
            bad(c, "\"Option_Answers\".%s must be a non-empty string", key);
        no_special(c, v->string, "Option_Answers");
        e->option_answers[i] = pool_strdup(L->pool, v->string);
    }
}

typedef struct ProfileArg {
    Kind kind;
    EvalSource src;
    unsigned char *seen;        /* per person: already in this file */
} ProfileArg;

/* One person of full/test/celebrity/holdout.jsonl: its evaluation items, prompts rendered
 * here (the files hold MLLMU-Bench's raw questions). */
static void ld_profile_line(Loader *L, const Ctx *c, const Json *j, void *arg) {
    const ProfileArg *pa = arg;
    World *w = L->w;
    int pi = ld_person(L, c, req_int(c, j, "ID", 1, L->max_id));
    Person *p = &w->people[pi];
    if (p->kind != pa->kind) bad(c, "person %d is not %s", p->id, kind_name(pa->kind));
    if (pa->seen[pi]++) bad(c, "person %d has a second line", p->id);
    if (strcmp(req_str(c, L->pool, j, "name"), p->name) != 0) bad(c, "name does not match people.jsonl");
    unsigned char asked[N_TASKS][2][DATA_MAX_ATTRS] = {{{0}}};   /* one question per task, modality, attribute */
    const Json *cls = req(c, j, "Classification_Task", JSON_OBJECT);
    static const char *const lists[2] = {"Image_Textual_Questions", "Pure_Text_Questions"};
    for (int m = 0; m < 2; m++) {
        const Json *l = req(c, cls, lists[m], JSON_ARRAY);
        for (size_t i = 0; i < l->len; i++) {
            const Json *q = l->items[i];
            if (q->type != JSON_OBJECT) bad(c, "%s[%zu] is not an object", lists[m], i);
            int a = ld_attr(L, c, req_str(c, L->pool, q, "Attribute"), 1);
            int img = m == 1 ? -1 : pa->src == EVAL_TEST ? ld_image(L, c, req_str(c, L->pool, q, "Image")) : p->image;
            if (asked[TASK_MC][m][a]++) bad(c, "%s: a second question about %s", lists[m], w->attrs[a].name);
            EvalItem *e = ld_eval_new(L, pa->src, pi, a, TASK_MC, img);
            e->question = req_str(c, L->pool, q, "Question");
            ld_mc(L, c, q, e);
            if (strcmp(e->truth, w->attrs[a].values[p->value[a]]) != 0)
                bad(c, "%s: the correct option \"%s\" is not the person's %s", lists[m], e->truth, w->attrs[a].name);
            ld_option_answers(L, c, q, e);
        }
    }
    static const char *const tasks[3] = {"Generation_Task", "Mask_Task", "metadata"};
    static const Task task_of[3] = {TASK_GEN, TASK_CLOZE, TASK_QA};
    for (int t = 0; t < 3; t++) {
        const Json *l = req(c, j, tasks[t], JSON_ARRAY);
        for (size_t i = 0; i < l->len; i++) {
            const Json *q = l->items[i];
            if (q->type != JSON_OBJECT) bad(c, "%s[%zu] is not an object", tasks[t], i);
            int a = ld_attr(L, c, req_str(c, L->pool, q, "Attribute"), 1);
            const char *type = req_str(c, L->pool, q, "Type");
            int m = strcmp(type, "Image_Textual") == 0 ? 0 : strcmp(type, "Pure_Text") == 0 ? 1 : -1;
            if (m < 0) bad(c, "\"Type\" must be Image_Textual or Pure_Text");
            int img = m == 1 ? -1 : pa->src == EVAL_TEST ? ld_image(L, c, req_str(c, L->pool, q, "Image")) : p->image;
            if (asked[task_of[t]][m][a]++) bad(c, "%s: a second %s question about %s", tasks[t], type, w->attrs[a].name);
            EvalItem *e = ld_eval_new(L, pa->src, pi, a, task_of[t], img);
            e->question = req_str(c, L->pool, q, "Question");
            e->truth = w->attrs[a].values[p->value[a]];
            char buf[4096];
            Out o = {buf, sizeof buf, 0, 0};
            if (task_of[t] == TASK_GEN) {
                e->answer = req_str(c, L->pool, q, "Ground_Truth");
                render_gen(&o, e->question, img >= 0);
                e->prompt = pool_strdup(L->pool, buf);
            } else if (task_of[t] == TASK_CLOZE) {
                if (!strstr(e->question, "__")) bad(c, "a Mask_Task question needs \"__\"");
                e->answer = e->truth = req_str(c, L->pool, q, "Ground_Truth");
                render_cloze(&o, e->question);
                e->prompt = pool_strdup(L->pool, buf);
            } else {
                e->answer = req_str(c, L->pool, q, "Answer");
                e->prompt = e->question;
                e->paraphrased_answer = req_str(c, L->pool, q, "Paraphrased_Answer");
                e->perturbed = req_strings(c, L->pool, q, "Perturbed_Answers", 3, &e->n_perturbed);
            }
            if (o.trunc) bad(c, "question too long");
        }
    }
}

static void ld_genbench_line(Loader *L, const Ctx *c, const Json *j, void *arg) {
    (void)arg;
    const char *img = opt_str(c, L->pool, j, "image");
    EvalItem *e = ld_eval_new(L, EVAL_GENBENCH, -1, -1, TASK_MC, img ? ld_image(L, c, img) : -1);
    e->category = req_str(c, L->pool, j, "category");
    e->question = req_str(c, L->pool, j, "Question");
    ld_mc(L, c, j, e);
}

/* Lines in a JSON Lines file (for sizing arrays before parsing). */
static int ld_count_lines(const Loader *L, const char *rel) {
    size_t n;
    const char *t = ld_text(L, rel, &n);
    int k = 0;
    for (size_t i = 0; i < n; i++) k += t[i] == '\n';
    return k + (n && t[n - 1] != '\n');
}

/* Training MC variants whose stem an evaluation item asks: remember the evaluation's
 * option order so that item_render never draws it. */
typedef struct StemKey {
    uint64_t key;
    int item, variant;
} StemKey;

static int cmp_stemkey(const void *a, const void *b) {
    uint64_t x = ((const StemKey *)a)->key, y = ((const StemKey *)b)->key;
    return (x > y) - (x < y);
}

static uint64_t stem_key(const char *q, int person, int image) {
    int pi[2] = {person, image};
    return hash64(q, strlen(q), hash64(pi, sizeof pi, HASH64_INIT));
}

static void link_avoid(World *w) {
    int n = 0;
    for (int i = 0; i < w->n_items; i++)
        if (format_is_mc(w->items[i].format)) n += w->items[i].n_variants;
    StemKey *k = xmalloc((size_t)(n ? n : 1) * sizeof *k);
    n = 0;
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        if (!format_is_mc(it->format)) continue;
        for (int v = 0; v < it->n_variants; v++)
            k[n++] = (StemKey){stem_key(it->variants[v].question, it->person, it->image), i, v};
    }
    qsort(k, (size_t)n, sizeof *k, cmp_stemkey);
    for (int e = 0; e < w->n_eval; e++) {
        const EvalItem *ev = &w->eval[e];
        if (ev->task != TASK_MC) continue;
        uint64_t key = stem_key(ev->question, ev->person, ev->image);
        int lo = 0, hi = n;
        while (lo < hi) { int mid = (lo + hi) / 2; if (k[mid].key < key) lo = mid + 1; else hi = mid; }
        for (; lo < n && k[lo].key == key; lo++) {
            Variant *va = &w->items[k[lo].item].variants[k[lo].variant];
            if (strcmp(va->question, ev->question) == 0 && strcmp(va->correct, ev->truth) == 0)
                va->avoid = options_hash(ev->options, ev->n_options);
        }
    }
    free(k);
}

/* The manifest: "hash<TAB>size<TAB>path" lines; every file is read and checked. */
static void ld_manifest(Loader *L, const Json *wj, const char *wpath) {
    char *mpath = ld_path(L, "manifest.tsv");
    size_t n;
    char *text = read_file(mpath, &n);
    if (world_fingerprint(text, n, wj) != L->w->fingerprint)
        die_input(wpath, "does not match its fingerprint (world.json or manifest.tsv changed or corrupt)");
    Ctx c = {mpath, 0};
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        c.line++;
        if (line[0] != '#') {
            unsigned long long h;
            size_t size;
            int used = 0;
            if (sscanf(line, "%16llx\t%zu\t%n", &h, &size, &used) != 2 || !used || !line[used])
                bad(&c, "expected hash<TAB>bytes<TAB>path");
            const char *rel = line + used;
            if (rel[0] == '/' || strstr(rel, "..")) bad(&c, "path \"%s\" leaves the world directory", rel);
            char *path = ld_path(L, rel);
            size_t got;
            char *data = read_file(path, &got);
            if (got != size || hash64(data, got, HASH64_INIT) != h)
                die_input(path, "does not match manifest.tsv (changed or corrupt)");
            free(path);
            L->names = xrealloc(L->names, (size_t)(L->n_files + 1) * sizeof *L->names);
            L->data = xrealloc(L->data, (size_t)(L->n_files + 1) * sizeof *L->data);
            L->size = xrealloc(L->size, (size_t)(L->n_files + 1) * sizeof *L->size);
            int keep = strlen(rel) > 5 && (!strcmp(rel + strlen(rel) - 5, ".json") || !strcmp(rel + strlen(rel) - 6, ".jsonl"));
            if (!keep) { free(data); data = NULL; }
            L->names[L->n_files] = xstrdup(rel);
            L->data[L->n_files] = data;
            L->size[L->n_files++] = got;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    free(mpath);
}

static char *split_path(const Loader *L, const char *name) { return xasprintf("%s/splits/%s.json", L->dir, name); }

/* The splits' structure (docs/world.md, "Splits"), so that a hand-edited world cannot
 * count a person twice or forget someone it also retains: no ID twice in a split; each
 * split of one kind (celebrity, holdout, else fictitious), and the splits named after a
 * kind holding every person of it; forget_5 within forget_10 within forget_15; each retain
 * split the fictitious people not in its forget split; the sequential groups, when
 * written, forget_10 cut into disjoint parts. */
static void ld_check_splits(Loader *L) {
    World *w = L->w;
    int *in = xcalloc((size_t)w->n_people, sizeof *in);
    int n_fict = 0;
    for (int i = 0; i < w->n_people; i++) n_fict += w->people[i].kind == KIND_FICTITIOUS;
    for (int s = 0; s < w->n_splits; s++) {
        const Split *sp = &w->splits[s];
        char *path = split_path(L, sp->name);
        Ctx c = {path, 0};
        Kind want = !strcmp(sp->name, "celebrity") ? KIND_CELEBRITY : !strcmp(sp->name, "holdout") ? KIND_HOLDOUT : KIND_FICTITIOUS;
        memset(in, 0, (size_t)w->n_people * sizeof *in);
        for (int i = 0; i < sp->n; i++) {
            const Person *p = &w->people[sp->people[i]];
            if (in[sp->people[i]]++) bad(&c, "person %d is listed twice", p->id);
            if (p->kind != want) bad(&c, "person %d is of kind %s, not %s", p->id, kind_name(p->kind), kind_name(want));
        }
        if (!strcmp(sp->name, kind_name(want)))         /* fictitious, celebrity, holdout: everyone */
            for (int i = 0; i < w->n_people; i++)
                if (w->people[i].kind == want && !in[i]) bad(&c, "person %d (%s) is missing", w->people[i].id, kind_name(want));
        free(path);
    }
    static const char *const forget[3] = {"forget_5", "forget_10", "forget_15"}, *const retain[3] = {"retain_95", "retain_90", "retain_85"};
    for (int k = 0; k < 3; k++) {
        const Split *f = world_split(w, forget[k]), *r = world_split(w, retain[k]);
        memset(in, 0, (size_t)w->n_people * sizeof *in);
        for (int i = 0; i < f->n; i++) in[f->people[i]] = 1;
        char *path = split_path(L, retain[k]);
        Ctx c = {path, 0};
        for (int i = 0; i < r->n; i++)
            if (in[r->people[i]]) bad(&c, "person %d is also in %s", w->people[r->people[i]].id, forget[k]);
        if (f->n + r->n != n_fict) bad(&c, "%s and %s hold %d of the %d fictitious people", forget[k], retain[k], f->n + r->n, n_fict);
        free(path);
        if (k == 0) continue;
        const Split *inner = world_split(w, forget[k - 1]);
        path = split_path(L, inner->name);
        c.path = path;
        for (int i = 0; i < inner->n; i++)
            if (!in[inner->people[i]]) bad(&c, "person %d is not in %s", w->people[inner->people[i]].id, forget[k]);
        free(path);
    }
    const Split *f10 = world_split(w, "forget_10");
    memset(in, 0, (size_t)w->n_people * sizeof *in);
    for (int i = 0; i < f10->n; i++) in[f10->people[i]] = 1;
    int n_seq = 0, covered = 0;
    const char *last = NULL;
    for (int s = 0; s < w->n_splits; s++) {
        const Split *q = &w->splits[s];
        if (strncmp(q->name, "seq_", 4) != 0) continue;
        char *path = split_path(L, q->name);
        Ctx c = {path, 0};
        for (int i = 0; i < q->n; i++) {
            int pi = q->people[i];
            if (in[pi] == 0) bad(&c, "person %d is not in forget_10", w->people[pi].id);
            if (in[pi] == 2) bad(&c, "person %d is in another sequential group too", w->people[pi].id);
            in[pi] = 2;
            covered++;
        }
        free(path);
        n_seq++;
        last = q->name;
    }
    if (n_seq > 0 && covered != f10->n) {
        char *path = split_path(L, last);
        Ctx c = {path, 0};
        bad(&c, "the %d sequential groups hold %d of forget_10's %d people", n_seq, covered, f10->n);
    }
    free(in);
}

World *world_load(const char *dir) {
    Loader L = {0};
    World *w = xcalloc(1, sizeof *w);
    Pool *pool = xcalloc(1, sizeof *pool);
    w->pool = pool;
    L.w = w; L.pool = pool; L.dir = dir;
    w->dir = xstrdup(dir);
    char *wpath = ld_path(&L, "world.json");
    if (!file_exists(wpath)) die_input(dir, "not a pulse world (no world.json; run pulse data)");
    Json *wj = json_load(wpath);
    Ctx c = {wpath, 0};
    if (wj->type != JSON_OBJECT) bad(&c, "expected a JSON object");
    const char *fmt = req_str(&c, pool, wj, "format");
    if (strcmp(fmt, WORLD_FORMAT) != 0) bad(&c, "\"format\" is \"%s\", not \"%s\"", fmt, WORLD_FORMAT);
    if (req_int(&c, wj, "version", 0, 1000) != WORLD_VERSION) bad(&c, "unsupported version");
    /* Preset, seed, fingerprint. */
    const Json *pj = req(&c, wj, "preset", JSON_OBJECT);
    Preset *P = &w->preset;
    P->name = req_str(&c, pool, pj, "name");
    P->n_fictitious = (int)req_int(&c, pj, "n_fictitious", 1, 1000000);
    P->n_celebrity = (int)req_int(&c, pj, "n_celebrity", 1, 1000000);
    P->celeb_keep = (int)req_int(&c, pj, "celeb_keep", 0, P->n_celebrity);
    P->celeb_forget = (int)req_int(&c, pj, "celeb_forget", 0, P->celeb_keep);
    P->n_holdout = (int)req_int(&c, pj, "n_holdout", 0, 1000000);
    const Json *nf = req(&c, pj, "n_forget", JSON_ARRAY);
    if (nf->len != 3) bad(&c, "\"n_forget\" needs 3 sizes");
    for (int k = 0; k < 3; k++) {
        double v = nf->items[k]->type == JSON_NUMBER ? nf->items[k]->number : -1;
        if (!(v >= 0 && v <= 1000000 && v == floor(v))) bad(&c, "\"n_forget\" must hold integers in [0, 1000000]");
        P->n_forget[k] = (int)v;
    }
    P->n_seq = (int)req_int(&c, pj, "n_seq", 1, 1000);
    P->n_attrs = (int)req_int(&c, pj, "n_attrs", 1, DATA_MAX_ATTRS);
    P->n_scenes_train = (int)req_int(&c, pj, "n_scenes_train", 0, 10000000);
    P->n_genbench_scene = (int)req_int(&c, pj, "n_genbench_scene", 0, 10000000);
    P->n_genbench_fact = (int)req_int(&c, pj, "n_genbench_fact", 0, 10000000);
    /* absent in worlds written before the face_desc format: they have none */
    P->n_faces_desc = json_get(pj, "n_faces_desc") ? (int)req_int(&c, pj, "n_faces_desc", 0, 9999) : 0;
    /* likewise before the mc_context format */
    P->n_mc_context = json_get(pj, "n_mc_context") ? (int)req_int(&c, pj, "n_mc_context", 0, 1000000) : 0;
    P->vocab_size = (int)req_int(&c, pj, "vocab_size", TOK_FIRST_MERGE, 1000000);
    /* written only when on */
    P->scene_lookup = json_get(pj, "scene_lookup") ? (int)req_int(&c, pj, "scene_lookup", 0, 1) : 0;
    w->n_attrs = P->n_attrs;
    w->seed = (uint64_t)req_int(&c, wj, "seed", 0, SEED_MAX);
    const char *fp = req_str(&c, pool, wj, "fingerprint");
    char *end;
    w->fingerprint = strtoull(fp, &end, 16);
    if (strlen(fp) != 16 || *end) bad(&c, "\"fingerprint\" must be 16 hex digits");
    /* Attribute vocabularies, countries, IDK answers. */
    const Json *attrs = req(&c, wj, "attributes", JSON_ARRAY);
    if (attrs->len != DATA_MAX_ATTRS) bad(&c, "\"attributes\" must list %d attributes", DATA_MAX_ATTRS);
    for (int a = 0; a < DATA_MAX_ATTRS; a++) {
        const Json *o = attrs->items[a];
        if (o->type != JSON_OBJECT) bad(&c, "attributes[%d] is not an object", a);
        if (strcmp(req_str(&c, pool, o, "name"), attr_names[a]) != 0) bad(&c, "attributes[%d] must be \"%s\"", a, attr_names[a]);
        w->attrs[a].name = attr_names[a];
        w->attrs[a].values = req_strings(&c, pool, o, "values", N_PERTURBED + 1, &w->attrs[a].n_values);
        for (int i = 0; i < w->attrs[a].n_values; i++)
            for (int k = 0; k < i; k++)
                if (!strcmp(w->attrs[a].values[i], w->attrs[a].values[k]))
                    bad(&c, "attribute %s lists the value \"%s\" twice", attr_names[a], w->attrs[a].values[i]);
    }
    int nc;
    w->countries = req_strings(&c, pool, wj, "countries", 1, &nc);
    if (nc != w->attrs[1].n_values) bad(&c, "\"countries\" must match the birthplaces");
    w->idk = req_strings(&c, pool, wj, "idk", 1, &w->n_idk);
    int n_split_names;
    const char **split_names = req_strings(&c, pool, wj, "splits", 1, &n_split_names);
    const Json *counts = req(&c, wj, "counts", JSON_OBJECT);

    /* Integrity first: world.json + manifest against the fingerprint, every file against
     * the manifest. The records are validated after that, as they are parsed. */
    ld_manifest(&L, wj, wpath);
    /* Images: every manifest entry under images/, in manifest (= path) order. */
    for (int i = 0; i < L.n_files; i++)
        if (!strncmp(L.names[i], "images/", 7)) w->n_images++;
    w->images = xcalloc((size_t)(w->n_images ? w->n_images : 1), sizeof *w->images);
    w->n_images = 0;
    for (int i = 0; i < L.n_files; i++) {
        if (strncmp(L.names[i], "images/", 7) != 0) continue;
        char *path = ld_path(&L, L.names[i]);
        Image im;
        image_read(path, &im);
        if (im.w != IMG || im.h != IMG) die_input(path, "is %dx%d, expected %dx%d", im.w, im.h, IMG, IMG);
        WorldImage *wi = &w->images[w->n_images++];
        wi->path = pool_strdup(pool, L.names[i]);
        memcpy(wi->rgb, im.rgb, IMG_BYTES);
        image_free(&im);
        free(path);
    }
    /* People. */
    L.max_id = P->n_fictitious + P->n_celebrity + P->n_holdout;
    L.id_index = xmalloc((size_t)(L.max_id + 1) * sizeof *L.id_index);
    for (int i = 0; i <= L.max_id; i++) L.id_index[i] = -1;
    w->people = xcalloc((size_t)L.max_id, sizeof *w->people);
    ld_jsonl(&L, "people.jsonl", ld_person_line, NULL);
    char *ppath = ld_path(&L, "people.jsonl");
    if (w->n_people != L.max_id) die_input(ppath, "has %d people, world.json says %d", w->n_people, L.max_id);
    int nk[N_KINDS] = {0};
    for (int i = 0; i < w->n_people; i++) nk[w->people[i].kind]++;
    if (nk[KIND_FICTITIOUS] != P->n_fictitious || nk[KIND_CELEBRITY] != P->n_celebrity || nk[KIND_HOLDOUT] != P->n_holdout)
        die_input(ppath, "kinds do not match the counts in world.json");
    free(ppath);
    /* Splits. */
    w->splits = xcalloc((size_t)n_split_names, sizeof *w->splits);
    for (int s = 0; s < n_split_names; s++) {
        char rel[128];
        snprintf(rel, sizeof rel, "splits/%s.json", split_names[s]);
        size_t n;
        const char *text = ld_text(&L, rel, &n);
        char *path = ld_path(&L, rel), err[256];
        Ctx sc = {path, 0};
        Json *a = json_parse(text, n, err, sizeof err);
        if (!a) bad(&sc, "%s", err);
        if (a->type != JSON_ARRAY) bad(&sc, "expected an array of person IDs");
        Split *sp = &w->splits[w->n_splits++];
        sp->name = split_names[s];
        sp->n = (int)a->len;
        sp->people = pool_alloc(pool, (a->len + 1) * sizeof *sp->people);
        for (size_t i = 0; i < a->len; i++) {
            const Json *v = a->items[i];
            /* compare before converting: (long) of an out-of-range double is undefined */
            if (v->type != JSON_NUMBER || v->number != floor(v->number)) bad(&sc, "expected integer IDs");
            if (!(v->number >= 1 && v->number <= (double)L.max_id)) bad(&sc, "no person with ID %.17g", v->number);
            sp->people[i] = ld_person(&L, &sc, (long)v->number);
        }
        json_free(a);
        free(path);
    }
    static const char *const required[] = {"forget_5", "forget_10", "forget_15", "retain_95", "retain_90", "retain_85", "celebrity", "holdout"};
    for (size_t k = 0; k < sizeof required / sizeof *required; k++)
        if (!world_split(w, required[k])) bad(&c, "split \"%s\" is missing", required[k]);
    ld_check_splits(&L);
    /* Training items: pre-training, then fine-tuning. */
    int n_items = ld_count_lines(&L, "train_pt.jsonl") + ld_count_lines(&L, "train_ft.jsonl");
    w->items = xcalloc((size_t)(n_items ? n_items : 1), sizeof *w->items);
    int stage = STAGE_PT;
    ld_jsonl(&L, "train_pt.jsonl", ld_train_line, &stage);
    stage = STAGE_FT;
    ld_jsonl(&L, "train_ft.jsonl", ld_train_line, &stage);
    /* Evaluation items: each has exactly one "Question" key in the files, which bounds
     * their number (an escaped \"Question\" inside a string does not match). */
    long n_eval = ld_count_lines(&L, "genbench.jsonl");
    static const char *const profile_files[4] = {"full.jsonl", "test.jsonl", "celebrity.jsonl", "holdout.jsonl"};
    for (int f = 0; f < 4; f++) {
        size_t n;
        const char *t = ld_text(&L, profile_files[f], &n);
        for (const char *s = t; (s = memmem(s, n - (size_t)(s - t), "\"Question\"", 10)); s += 10) n_eval++;
    }
    w->eval = xcalloc((size_t)(n_eval ? n_eval : 1), sizeof *w->eval);
    (void)counts;
    /* in this order (the evaluation items' order): full, celebrity, holdout, test */
    static const int load_order[4] = {0, 2, 3, 1};
    static const Kind profile_kinds[4] = {KIND_FICTITIOUS, KIND_FICTITIOUS, KIND_CELEBRITY, KIND_HOLDOUT};
    unsigned char *seen = xmalloc((size_t)w->n_people + 1);
    for (int k = 0; k < 4; k++) {
        int f = load_order[k];
        ProfileArg pa = {profile_kinds[f], f == 1 ? EVAL_TEST : EVAL_PROFILE, seen};
        memset(seen, 0, (size_t)w->n_people + 1);
        ld_jsonl(&L, profile_files[f], ld_profile_line, &pa);
        for (int i = 0; i < w->n_people; i++)
            if (w->people[i].kind == pa.kind && !seen[i]) {
                char *path = ld_path(&L, profile_files[f]);
                Ctx pc = {path, 0};
                bad(&pc, "person %d (%s) has no line", w->people[i].id, kind_name(pa.kind));
            }
    }
    free(seen);
    ld_jsonl(&L, "genbench.jsonl", ld_genbench_line, NULL);
    link_avoid(w);

    json_free(wj);
    free(wpath);
    for (int i = 0; i < L.n_files; i++) { free(L.names[i]); free(L.data[i]); }
    free(L.names); free(L.data); free(L.size); free(L.id_index);
    return w;
}

void world_free(World *w) {
    if (!w) return;
    free(w->dir); free(w->people); free(w->images); free(w->items); free(w->eval); free(w->splits);
    pool_free(w->pool);
    free(w);
}

/* ----------------------------------------------------------------------------
 * Lookups and selections */

int world_person_index(const World *w, int id) {
    if (id >= 1 && id <= w->n_people && w->people[id - 1].id == id) return id - 1;   /* the usual layout */
    for (int i = 0; i < w->n_people; i++)
        if (w->people[i].id == id) return i;
    return -1;
}

const char *world_value(const World *w, const Person *p, int attr) {
    CHECK(attr >= 0 && attr < DATA_MAX_ATTRS);
    return w->attrs[attr].values[p->value[attr]];
}

const Split *world_split(const World *w, const char *name) {
    for (int s = 0; s < w->n_splits; s++)
        if (strcmp(w->splits[s].name, name) == 0) return &w->splits[s];
    return NULL;
}

int *world_parse_people(const World *w, const char *spec, const char *what, int *n) {
    int cap = 16, k = 0, named = 0;
    int *out = xmalloc((size_t)cap * sizeof *out);
    char *copy = xstrdup(spec), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        size_t len = strlen(t);
        while (len && t[len - 1] == ' ') t[--len] = 0;
        if (!*t) continue;
        named++;
        char *end;
        long id = strtol(t, &end, 10);
        const Split *sp = NULL;
        int one = -1;
        if (*end == '\0') {
            one = id >= 0 && id <= 0x7fffffff ? world_person_index(w, (int)id) : -1;
            if (one < 0) die_input(NULL, "%s: no person with ID %s in %s", what, t, w->dir);
        } else if (!(sp = world_split(w, t))) {
            die_input(NULL, "%s: '%s' is neither a person ID nor a split of %s", what, t, w->dir);
        }
        for (int i = 0; i < (sp ? sp->n : 1); i++) {
            if (k == cap) out = xrealloc(out, (size_t)(cap *= 2) * sizeof *out);
            out[k++] = sp ? sp->people[i] : one;
        }
    }
    free(copy);
    if (!named) die_input(NULL, "%s: '%s' names nobody", what, spec);
    qsort(out, (size_t)k, sizeof *out, cmp_int);
    int u = 0;
    for (int i = 0; i < k; i++)
        if (u == 0 || out[u - 1] != out[i]) out[u++] = out[i];
    *n = u;
    return out;
}

int *world_people_of_kind(const World *w, Kind kind, int *n) {
    int *r = xmalloc((size_t)(w->n_people ? w->n_people : 1) * sizeof *r);
    *n = 0;
    for (int i = 0; i < w->n_people; i++)
        if (w->people[i].kind == kind) r[(*n)++] = i;
    return r;
}

int world_image_find(const World *w, const char *path) {
    int lo = 0, hi = w->n_images;               /* sorted by path when loaded */
    while (lo < hi) {
        int mid = (lo + hi) / 2, c = strcmp(w->images[mid].path, path);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    for (int i = 0; i < w->n_images; i++)       /* a generated world is not sorted */
        if (strcmp(w->images[i].path, path) == 0) return i;
    return -1;
}

/* A membership table of person indices (people == NULL: NULL). */
static unsigned char *people_mask(const World *w, const int *people, int n) {
    if (!people) return NULL;
    unsigned char *m = xcalloc((size_t)w->n_people + 1, 1);
    for (int i = 0; i < n; i++) {
        CHECK(people[i] >= 0 && people[i] < w->n_people);
        m[people[i]] = 1;
    }
    return m;
}

const Item **world_select(const World *w, const Select *s, int *n) {
    const Item **r = xmalloc((size_t)(w->n_items ? w->n_items : 1) * sizeof *r);
    unsigned char *m = people_mask(w, s->people, s->n_people);
    *n = 0;
    for (int i = 0; i < w->n_items; i++) {         /* every filter must pass */
        const Item *it = &w->items[i];
        if (!(it->stage & s->stages)) continue;
        if (s->formats && !(s->formats & FMT_BIT(it->format))) continue;
        if (s->modality == MOD_IMAGE && it->image < 0) continue;
        if (s->modality == MOD_TEXT && it->image >= 0) continue;
        if (m) {
            int in = it->person >= 0 && m[it->person];
            if (s->exclude ? in : !in) continue;
        }
        r[(*n)++] = it;
    }
    free(m);
    return r;
}

const EvalItem **world_eval_select(const World *w, EvalSource src, const int *people, int n_people,
                                   unsigned task_mask, int modality, int *n) {
    const EvalItem **r = xmalloc((size_t)(w->n_eval ? w->n_eval : 1) * sizeof *r);
    unsigned char *m = src == EVAL_GENBENCH ? NULL : people_mask(w, people, n_people);
    *n = 0;
    for (int i = 0; i < w->n_eval; i++) {
        const EvalItem *e = &w->eval[i];
        if (e->source != src) continue;
        if (task_mask && !(task_mask & TASK_BIT(e->task))) continue;
        if (modality == MOD_IMAGE && e->image < 0) continue;
        if (modality == MOD_TEXT && e->image >= 0) continue;
        if (m && !(e->person >= 0 && m[e->person])) continue;
        r[(*n)++] = e;
    }
    free(m);
    return r;
}

const char *mc_option_answer(const EvalItem *e, int op) {
    CHECK(e->task == TASK_MC && op >= 0 && op < e->n_options);
    return e->option_answers[op] ? e->option_answers[op] : e->options[op];
}

void world_image_pixels(const World *w, int image, Rng *aug, float *chw) {
    CHECK(image >= 0 && image < w->n_images);
    const uint8_t *rgb = w->images[image].rgb;
    int dx = 0, dy = 0;
    float gain = 1.0f;
    if (aug) {                  /* fixed draw order: shift, brightness, then the noise */
        dx = (int)rng_below(aug, 5) - 2;
        dy = (int)rng_below(aug, 5) - 2;
        gain = 0.85f + 0.3f * (float)rng_uniform(aug);
    }
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < IMG; y++)
            for (int x = 0; x < IMG; x++) {
                int sx = x - dx, sy = y - dy;           /* edge replication */
                sx = sx < 0 ? 0 : sx >= IMG ? IMG - 1 : sx;
                sy = sy < 0 ? 0 : sy >= IMG ? IMG - 1 : sy;
                float v = rgb[3 * (sy * IMG + sx) + c] / 255.0f;
                if (aug) {
                    v = v * gain + 0.03f * rng_normal(aug);
                    v = v < 0 ? 0 : v > 1 ? 1 : v;
                }
                chw[(c * IMG + y) * IMG + x] = (v - data_clip_mean[c]) / data_clip_std[c];
            }
}

/* ----------------------------------------------------------------------------
 * pulse data */

char *data_default_raw_dir(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            char *d = xasprintf("%s/data/templates.txt", exe);
            int ok = file_exists(d);
            free(d);
            if (ok) return xasprintf("%s/data", exe);
        }
    }
    return xstrdup("data");
}

int cmd_data(int argc, char **argv) {
    Args a;
    args_init(&a, "data", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse data [--preset P] [--seed S] [--raw DIR] --out DIR\n\n"
               "Writes the synthetic world (people, faces, benchmark files, training items, genbench,\n"
               "splits, tokenizer.json, contact_sheet.png) into DIR, deterministically from (P, S).\n"
               "  --preset P   world size (default small):");
        for (const Preset *p = data_presets; p->name; p++)
            printf(" %s (%d fictitious, %d celebrities, %d holdout, %d anonymous faces, %d in-context MC)%s", p->name,
                   p->n_fictitious, p->n_celebrity, p->n_holdout, p->n_faces_desc, p->n_mc_context, p[1].name ? "," : "");
        printf("\n  --seed S     seed (default 1)\n"
               "  --raw DIR    raw material (default: data/ next to the pulse binary, else ./data)\n"
               "  --out DIR    output directory (replaced if it is a pulse world; refused if it is anything else)\n");
        args_free(&a);
        return 0;
    }
    const char *preset = args_str(&a, "preset", "small");
    long seed = args_long(&a, "seed", 1, 0, SEED_MAX);
    const char *raw = args_str(&a, "raw", NULL);
    const char *out = args_str(&a, "out", NULL);
    args_done(&a);
    if (!out) die_input(NULL, "data: --out DIR is required (see pulse data --help)");
    const Preset *p = preset_find(preset);
    if (!p) die_input(NULL, "data: unknown preset '%s' (tiny, small, paper)", preset);
    out_dir_check(out, NULL);                   /* data_generate refuses a directory not a world */
    data_generate(p, (uint64_t)seed, raw, out);
    args_free(&a);
    return 0;
}
