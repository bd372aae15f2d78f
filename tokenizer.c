/* tokenizer.c: byte-level BPE (see tokenizer.h), written to match HF `tokenizers`.
 *
 * Design:
 * - Text -> added tokens split out first (leftmost, longest match, as HF's
 *   AddedVocabulary does), then GPT-2's pre-tokeniser regex
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   implemented by hand (char_class below gives \s, \p{L}, \p{N}: exact for ASCII and
 *   Latin-1, and for the common other blocks; see docs/files.md), then BPE inside each
 *   pre-token: repeatedly merge the adjacent pair with the lowest merge rank.
 * - Bytes that are not valid UTF-8 (HF cannot even receive them) count as letters, so
 *   that any byte string encodes and decodes back to itself.
 * - Training (as HF's BpeTrainer): count pre-token frequencies, count adjacent pairs
 *   weighted by frequency, and keep, for each pair, the words that contain it. Each merge
 *   rewrites only those words and updates the counts of their pairs; a lazy max-heap
 *   (stale entries re-pushed when popped) gives the most frequent pair, ties broken by
 *   the smaller (left id, right id). A merge whose text already exists reuses that id,
 *   as HF does, so the vocabulary never holds a string twice.
 */
#include "tokenizer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io.h"

static const char *const special_text[TOK_N_SPECIAL] = {"<pad>", "<s>", "</s>", "<image>"};

/* ----------------------------------------------------------------------------
 * GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 to
 * U+0100.. in byte order, so that every byte is a visible character in the JSON. */

typedef struct ByteMap {
    uint32_t cp[256];           /* byte -> code point */
    char utf8[256][3];          /* the same, UTF-8, NUL-terminated (1 or 2 bytes) */
    int16_t byte_of[324];       /* code point -> byte, -1 if not in the alphabet */
} ByteMap;

static ByteMap byte_map(void) {
    ByteMap m;
    int n = 0;
    for (int i = 0; i < 324; i++) m.byte_of[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        m.cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        m.byte_of[m.cp[b]] = (int16_t)b;
        if (m.cp[b] < 0x80) { m.utf8[b][0] = (char)m.cp[b]; m.utf8[b][1] = 0; }
        else { m.utf8[b][0] = (char)(0xC0 | (m.cp[b] >> 6)); m.utf8[b][1] = (char)(0x80 | (m.cp[b] & 0x3F)); m.utf8[b][2] = 0; }
    }
    CHECK(n == 68);
    return m;
}

/* ----------------------------------------------------------------------------
 * Character classes for the pre-tokeniser */

enum { CL_SPACE, CL_LETTER, CL_NUMBER, CL_OTHER };

/* \s (Unicode White_Space), \p{L}, \p{N}: exact for ASCII and Latin-1, block-level
 * approximations elsewhere (letters by default), enough for the synthetic world. */
static int char_class(uint32_t c) {
    if (c < 0x80) {
        if (c == ' ' || (c >= 9 && c <= 13)) return CL_SPACE;
        if ((c | 32) >= 'a' && (c | 32) <= 'z') return CL_LETTER;
        if (c >= '0' && c <= '9') return CL_NUMBER;
        return CL_OTHER;
    }
    if (c < 0x100) {
        if (c == 0x85 || c == 0xA0) return CL_SPACE;
        if (c == 0xAA || c == 0xB5 || c == 0xBA || (c >= 0xC0 && c != 0xD7 && c != 0xF7)) return CL_LETTER;
        if (c == 0xB2 || c == 0xB3 || c == 0xB9 || (c >= 0xBC && c <= 0xBE)) return CL_NUMBER;
        return CL_OTHER;
    }
    if (c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000)
        return CL_SPACE;
    if ((c >= 0x660 && c <= 0x669) || (c >= 0x6F0 && c <= 0x6F9) || (c >= 0x966 && c <= 0x96F) ||
        (c >= 0x2070 && c <= 0x2089) || (c >= 0x2150 && c <= 0x2189) || (c >= 0x2460 && c <= 0x249B) ||
        (c >= 0xFF10 && c <= 0xFF19))
        return CL_NUMBER;
    if ((c >= 0x300 && c <= 0x36F) || c == 0x37E || c == 0x387 || (c >= 0x482 && c <= 0x489) ||
        (c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) || (c >= 0xFE00 && c <= 0xFE6F) ||
        (c >= 0xFF00 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) ||
        (c >= 0xFF5B && c <= 0xFF65) || (c >= 0xE000 && c <= 0xF8FF) || (c >= 0x1F000 && c <= 0x1FAFF))
        return CL_OTHER;    /* marks, punctuation, symbols, private use, emoji */
    return CL_LETTER;
}

/* Class and byte length of the character at s[i]; invalid UTF-8: one byte, a letter. */
static int next_char(const char *s, size_t n, size_t i, size_t *clen) {
    uint32_t cp;
    int k = utf8_next(s + i, n - i, &cp);
    if (k == 0) { *clen = 1; return CL_LETTER; }
    *clen = (size_t)k;
    return char_class(cp);
}

/* End of the run of characters of class cl starting at i. */
static size_t run_end(const char *s, size_t n, size_t i, int cl) {
    size_t k;
    while (i < n && next_char(s, n, i, &k) == cl) i += k;
    return i;
}

int tok_pretokenize(const char *s, size_t n, size_t *ends) {
    int count = 0;
    size_t i = 0;
    while (i < n) {
        size_t k, j;
        /* 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in GPT-2) */
        if (s[i] == '\'' && i + 1 < n) {
            char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
            if (a == 's' || a == 't' || a == 'm' || a == 'd') { ends[count++] = i += 2; continue; }
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) { ends[count++] = i += 3; continue; }
        }
        int cl = next_char(s, n, i, &k);
        /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional single space first */
        if (s[i] == ' ' && i + 1 < n) {
            size_t k2;
            int cl2 = next_char(s, n, i + 1, &k2);
            if (cl2 != CL_SPACE) { ends[count++] = i = run_end(s, n, i + 1, cl2); continue; }
        }
        if (cl != CL_SPACE) { ends[count++] = i = run_end(s, n, i, cl); continue; }
        /* '\s+(?!\S)' takes the whitespace run but leaves its last character to prefix
         * the next word; '\s+' takes a lone whitespace character before a word */
        j = run_end(s, n, i, CL_SPACE);
        if (j < n) {
            size_t last = i, t = i;
            while (t < j) { last = t; next_char(s, n, t, &k); t += k; }
            if (last > i) j = last;
        }
        ends[count++] = i = j;
    }
    return count;
}

/* ----------------------------------------------------------------------------
 * Hash maps: pair (a, b) -> int, and byte string -> int; open addressing. */

typedef struct PairMap {
    uint64_t *key;              /* (a << 32) | b; UINT64_MAX = empty */
    int *val;
    size_t cap, n;
} PairMap;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return x;
}

static void pm_init(PairMap *m, size_t cap) {
    m->cap = 16;
    while (m->cap < 2 * cap) m->cap *= 2;
    m->n = 0;
    m->key = xmalloc(m->cap * sizeof *m->key);
    m->val = xmalloc(m->cap * sizeof *m->val);
    memset(m->key, 0xFF, m->cap * sizeof *m->key);
}
static void pm_free(PairMap *m) { free(m->key); free(m->val); }

static size_t pm_slot(const PairMap *m, uint64_t k) {
    size_t i = mix64(k) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX && m->key[i] != k) i = (i + 1) & (m->cap - 1);
    return i;
}

static int pm_get(const PairMap *m, int a, int b) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = pm_slot(m, k);
    return m->key[i] == k ? m->val[i] : -1;
}

static void pm_put(PairMap *m, int a, int b, int v) {
    if (2 * (m->n + 1) > m->cap) {
        /* grow to keep the load below 1/2 */
        PairMap g;
        pm_init(&g, m->cap);
        for (size_t i = 0; i < m->cap; i++)
            if (m->key[i] != UINT64_MAX) { size_t j = pm_slot(&g, m->key[i]); g.key[j] = m->key[i]; g.val[j] = m->val[i]; g.n++; }
        pm_free(m);
        *m = g;
    }
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = pm_slot(m, k);
    if (m->key[i] != k) { m->key[i] = k; m->n++; }
    m->val[i] = v;
}

typedef struct StrMap {
    const char **key;           /* borrowed: the owner keeps the bytes alive */
    size_t *klen;
    int *val;                   /* -1 = empty */
    size_t cap, n;
} StrMap;

static void sm_init(StrMap *m, size_t cap) {
    m->cap = 16;
    while (m->cap < 2 * cap) m->cap *= 2;
    m->n = 0;
    m->key = xcalloc(m->cap, sizeof *m->key);
    m->klen = xcalloc(m->cap, sizeof *m->klen);
    m->val = xmalloc(m->cap * sizeof *m->val);
    for (size_t i = 0; i < m->cap; i++) m->val[i] = -1;
}
static void sm_free(StrMap *m) { free(m->key); free(m->klen); free(m->val); }

static size_t sm_slot(const StrMap *m, const char *s, size_t len) {
    size_t i = hash64(s, len, HASH64_INIT) & (m->cap - 1);
    while (m->val[i] >= 0 && !(m->klen[i] == len && memcmp(m->key[i], s, len) == 0)) i = (i + 1) & (m->cap - 1);
    return i;
}

static int sm_get(const StrMap *m, const char *s, size_t len) { return m->val[sm_slot(m, s, len)]; }

static void sm_put(StrMap *m, const char *s, size_t len, int v) {
    CHECK(v >= 0);
    if (2 * (m->n + 1) > m->cap) {
        StrMap g;
        sm_init(&g, m->cap);
        for (size_t i = 0; i < m->cap; i++)
            if (m->val[i] >= 0) {
                size_t j = sm_slot(&g, m->key[i], m->klen[i]);
                g.key[j] = m->key[i]; g.klen[j] = m->klen[i]; g.val[j] = m->val[i]; g.n++;
            }
        sm_free(m);
        *m = g;
    }
    size_t i = sm_slot(m, s, len);
    if (m->val[i] < 0) m->n++;
    m->key[i] = s; m->klen[i] = len; m->val[i] = v;
}

/* ----------------------------------------------------------------------------
 * The tokenizer */

struct Tokenizer {
    int V;                      /* vocabulary size: ids 0..V-1 */
    char **str;                 /* [V] token text as in tokenizer.json */
    char **bytes;               /* [V] what the token decodes to */
    int *nbytes;                /* [V] */
    unsigned char *added;       /* [V] 1 for added (special) tokens */
    int byte_id[256];           /* byte value -> its token id */
    int n_merges;
    int *merge_out;             /* [n_merges] id made by the merge of that rank */
    PairMap rank;               /* (a, b) -> merge rank */
    StrMap by_str;              /* token text -> id */
    int n_added;
    int *added_ids;             /* added tokens, longest text first (for matching) */
};

static Tokenizer *tok_alloc(int V) {
    Tokenizer *t = xcalloc(1, sizeof *t);
    t->V = V;
    t->str = xcalloc((size_t)V, sizeof *t->str);
    t->bytes = xcalloc((size_t)V, sizeof *t->bytes);
    t->nbytes = xcalloc((size_t)V, sizeof *t->nbytes);
    t->added = xcalloc((size_t)V, 1);
    return t;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->V; i++) { free(t->str[i]); free(t->bytes[i]); }
    free(t->str); free(t->bytes); free(t->nbytes); free(t->added);
    free(t->merge_out); free(t->added_ids);
    pm_free(&t->rank);
    sm_free(&t->by_str);
    free(t);
}

int tok_vocab_size(const Tokenizer *t) { return t->V; }
int tok_n_merges(const Tokenizer *t) { return t->n_merges; }
int tok_id(const Tokenizer *t, const char *token) { return sm_get(&t->by_str, token, strlen(token)); }
const char *tok_token(const Tokenizer *t, int id) { return id >= 0 && id < t->V ? t->str[id] : NULL; }

/* Byte-level text of a byte string. */
static char *bytes_to_text(const ByteMap *bm, const char *b, int n) {
    char *s = xmalloc((size_t)n * 2 + 1), *p = s;
    for (int i = 0; i < n; i++) {
        const char *u = bm->utf8[(unsigned char)b[i]];
        while (*u) *p++ = *u++;
    }
    *p = 0;
    return s;
}

/* Builds the lookup structures once str/bytes/added and the merges are set. */
static void tok_index(Tokenizer *t) {
    sm_init(&t->by_str, (size_t)t->V);
    for (int i = 0; i < t->V; i++) sm_put(&t->by_str, t->str[i], strlen(t->str[i]), i);
    t->n_added = 0;
    t->added_ids = xmalloc(((size_t)t->V + 1) * sizeof *t->added_ids);
    /* added tokens longest first, so that matching at a position takes the longest */
    for (int i = 0; i < t->V; i++) {
        if (!t->added[i]) continue;
        int k = t->n_added++;
        while (k > 0 && t->nbytes[t->added_ids[k - 1]] < t->nbytes[i]) { t->added_ids[k] = t->added_ids[k - 1]; k--; }
        t->added_ids[k] = i;
    }
}

/* ----------------------------------------------------------------------------
 * Encoding */

/* BPE inside one pre-token: ids[0..n) start as byte tokens; returns the new length. */
static int bpe_word(const Tokenizer *t, int *ids, int n) {
    for (;;) {
        int best = -1;
        for (int i = 0; i + 1 < n; i++) {
            int r = pm_get(&t->rank, ids[i], ids[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) best = r;
        }
        if (best < 0) return n;
        /* merge every occurrence of that pair, left to right (they cannot overlap in a
         * way that changes the result: a pair of lower rank cannot appear) */
        int out = 0;
        for (int i = 0; i < n;) {
            if (i + 1 < n && pm_get(&t->rank, ids[i], ids[i + 1]) == best) { ids[out++] = t->merge_out[best]; i += 2; }
            else ids[out++] = ids[i++];
        }
        n = out;
    }
}

/* Encodes a segment without added tokens; returns the new count or -1 if over max. */
static int encode_plain(const Tokenizer *t, const char *s, size_t len, int *ids, int count, int max) {
    if (len == 0) return count;
    size_t *ends = xmalloc(len * sizeof *ends);
    int np = tok_pretokenize(s, len, ends);
    size_t start = 0;
    for (int p = 0; p < np && count >= 0; p++) {
        size_t plen = ends[p] - start;
        /* a pre-token never yields more ids than bytes: check room, then write in place */
        if ((size_t)(max - count) < plen) {
            int *tmp = xmalloc(plen * sizeof *tmp);
            for (size_t i = 0; i < plen; i++) tmp[i] = t->byte_id[(unsigned char)s[start + i]];
            int k = bpe_word(t, tmp, (int)plen);
            if (k > max - count) count = -1;
            else { memcpy(ids + count, tmp, (size_t)k * sizeof *tmp); count += k; }
            free(tmp);
        } else {
            for (size_t i = 0; i < plen; i++) ids[count + (int)i] = t->byte_id[(unsigned char)s[start + i]];
            count += bpe_word(t, ids + count, (int)plen);
        }
        start = ends[p];
    }
    free(ends);
    return count;
}

int tok_encode_n(const Tokenizer *t, const char *s, size_t len, int *ids, int max) {
    int count = 0;
    size_t seg = 0;
    /* added tokens are split out first, leftmost then longest, as HF does */
    for (size_t i = 0; i < len && count >= 0;) {
        int hit = -1;
        for (int k = 0; k < t->n_added && hit < 0; k++) {
            int id = t->added_ids[k];
            size_t n = (size_t)t->nbytes[id];
            if (n && n <= len - i && memcmp(s + i, t->bytes[id], n) == 0) hit = id;
        }
        if (hit < 0) { i++; continue; }
        count = encode_plain(t, s + seg, i - seg, ids, count, max);
        if (count < 0) break;
        if (count >= max) return -1;
        ids[count++] = hit;
        i += (size_t)t->nbytes[hit];
        seg = i;
    }
    if (count >= 0) count = encode_plain(t, s + seg, len - seg, ids, count, max);
    return count;
}

int tok_encode(const Tokenizer *t, const char *text, int *ids, int max) {
    return tok_encode_n(t, text, strlen(text), ids, max);
}

int tok_encode_chat(const Tokenizer *t, const char *question, int has_image, const char *answer,
                    int *ids, int max, int *answer_start) {
    if (max < 1) return -1;
    ids[0] = TOK_BOS;
    char *prompt = xasprintf("USER: %s%s ASSISTANT:", has_image ? "<image>\n" : "", question);
    int n = tok_encode(t, prompt, ids + 1, max - 1);
    free(prompt);
    if (n < 0) return -1;
    n += 1;
    if (answer_start) *answer_start = n;
    if (answer) {
        /* " answer" encoded on its own gives the same ids as the whole string would:
         * the prompt ends with ':' and the answer starts with ' ', a pre-token boundary */
        char *a = xasprintf(" %s", answer);
        int k = tok_encode(t, a, ids + n, max - n);
        free(a);
        if (k < 0 || n + k >= max) return -1;
        n += k;
        ids[n++] = TOK_EOS;
    }
    return n;
}

char *tok_decode_n(const Tokenizer *t, const int *ids, int n, int skip_special, size_t *len) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        CHECKF(ids[i] >= 0 && ids[i] < t->V, "tok_decode: id %d outside [0, %d)", ids[i], t->V);
        if (!(skip_special && t->added[ids[i]])) total += (size_t)t->nbytes[ids[i]];
    }
    char *s = xmalloc(total + 1), *p = s;
    for (int i = 0; i < n; i++) {
        if (skip_special && t->added[ids[i]]) continue;
        memcpy(p, t->bytes[ids[i]], (size_t)t->nbytes[ids[i]]);
        p += t->nbytes[ids[i]];
    }
    *p = 0;
    if (len) *len = total;
    return s;
}

char *tok_decode(const Tokenizer *t, const int *ids, int n, int skip_special) {
    return tok_decode_n(t, ids, n, skip_special, NULL);
}

/* ----------------------------------------------------------------------------
 * Training */

typedef struct Word {
    int *ids;
    int len;
    int64_t count;              /* how often this pre-token occurs in the corpus */
} Word;

typedef struct PairInfo {
    int a, b;
    int64_t count;              /* occurrences, weighted by word counts */
    int *where;                 /* words that contain(ed) the pair; may be stale */
    int nwhere, capwhere;
    int stamp;                  /* last merge that touched it (dedupe) */
} PairInfo;

typedef struct HeapItem { int64_t count; int a, b; } HeapItem;

/* a before b in the max-heap: more frequent first, then smaller (a, b) */
static int heap_before(const HeapItem *x, const HeapItem *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

typedef struct Heap { HeapItem *h; size_t n, cap; } Heap;

static void heap_push(Heap *hp, HeapItem it) {
    if (hp->n == hp->cap) { hp->cap = hp->cap ? 2 * hp->cap : 1024; hp->h = xrealloc(hp->h, hp->cap * sizeof *hp->h); }
    size_t i = hp->n++;
    while (i > 0 && heap_before(&it, &hp->h[(i - 1) / 2])) { hp->h[i] = hp->h[(i - 1) / 2]; i = (i - 1) / 2; }
    hp->h[i] = it;
}

static HeapItem heap_pop(Heap *hp) {
    HeapItem top = hp->h[0], last = hp->h[--hp->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= hp->n) break;
        if (c + 1 < hp->n && heap_before(&hp->h[c + 1], &hp->h[c])) c++;
        if (!heap_before(&hp->h[c], &last)) break;
        hp->h[i] = hp->h[c];
        i = c;
    }
    if (hp->n) hp->h[i] = last;
    return top;
}

typedef struct Trainer {
    Word *words;
    int nwords;
    PairInfo *pairs;
    int npairs, cappairs;
    PairMap pair_index;         /* (a, b) -> index in pairs */
    Heap heap;
} Trainer;

static int pair_get_or_add(Trainer *tr, int a, int b) {
    int i = pm_get(&tr->pair_index, a, b);
    if (i >= 0) return i;
    if (tr->npairs == tr->cappairs) {
        tr->cappairs = tr->cappairs ? 2 * tr->cappairs : 4096;
        tr->pairs = xrealloc(tr->pairs, (size_t)tr->cappairs * sizeof *tr->pairs);
    }
    i = tr->npairs++;
    tr->pairs[i] = (PairInfo){.a = a, .b = b};
    pm_put(&tr->pair_index, a, b, i);
    return i;
}

static void pair_add_word(PairInfo *p, int w) {
    if (p->nwhere && p->where[p->nwhere - 1] == w) return;   /* words are visited one at a time */
    if (p->nwhere == p->capwhere) { p->capwhere = p->capwhere ? 2 * p->capwhere : 4; p->where = xrealloc(p->where, (size_t)p->capwhere * sizeof *p->where); }
    p->where[p->nwhere++] = w;
}

/* Length of the added token starting at s[0..n), 0 if none (longest wins). */
static size_t special_at(const char *s, size_t n) {
    if (s[0] != '<') return 0;
    size_t best = 0;
    for (int q = 0; q < TOK_N_SPECIAL; q++) {
        size_t k = strlen(special_text[q]);
        if (k <= n && k > best && memcmp(s, special_text[q], k) == 0) best = k;
    }
    return best;
}

typedef struct WordCounter {
    StrMap seen;                /* word bytes -> index in words */
    char **keys;                /* word bytes, owned here while counting */
    int cap;
} WordCounter;

/* Counts the pre-tokens of s[0..len), which holds no added token. */
static void count_segment(Trainer *tr, WordCounter *wc, const char *s, size_t len, size_t *ends) {
    int np = tok_pretokenize(s, len, ends);
    size_t start = 0;
    for (int p = 0; p < np; p++) {
        size_t wl = ends[p] - start;
        int id = sm_get(&wc->seen, s + start, wl);
        if (id < 0) {
            if (tr->nwords == wc->cap) {
                wc->cap = wc->cap ? 2 * wc->cap : 4096;
                tr->words = xrealloc(tr->words, (size_t)wc->cap * sizeof *tr->words);
                wc->keys = xrealloc(wc->keys, (size_t)wc->cap * sizeof *wc->keys);
            }
            id = tr->nwords++;
            wc->keys[id] = xmalloc(wl);
            memcpy(wc->keys[id], s + start, wl);
            tr->words[id] = (Word){.ids = NULL, .len = (int)wl, .count = 0};
            sm_put(&wc->seen, wc->keys[id], wl, id);
        }
        tr->words[id].count++;
        start = ends[p];
    }
}

/* Splits the corpus into pre-tokens and counts them (added tokens are left out). */
static void count_words(Trainer *tr, const char *const *texts, int n) {
    WordCounter wc = {.keys = NULL, .cap = 0};
    sm_init(&wc.seen, 1 << 12);
    tr->words = NULL;
    tr->nwords = 0;
    for (int k = 0; k < n; k++) {
        const char *s = texts[k];
        size_t len = strlen(s), seg = 0, i = 0;
        size_t *ends = xmalloc((len + 1) * sizeof *ends);
        for (;;) {
            size_t sp = i < len ? special_at(s + i, len - i) : 0;
            if (i < len && !sp) { i++; continue; }
            count_segment(tr, &wc, s + seg, i - seg, ends);
            if (i >= len) break;
            i += sp;
            seg = i;
        }
        free(ends);
    }
    /* words as byte-token ids (id 4 + byte) */
    for (int w = 0; w < tr->nwords; w++) {
        Word *wd = &tr->words[w];
        wd->ids = xmalloc((size_t)wd->len * sizeof *wd->ids);
        for (int i = 0; i < wd->len; i++) wd->ids[i] = TOK_N_SPECIAL + (unsigned char)wc.keys[w][i];
        free(wc.keys[w]);
    }
    free(wc.keys);
    sm_free(&wc.seen);
}

Tokenizer *tok_train(const char *const *texts, int n, int vocab_size) {
    CHECK(vocab_size >= TOK_FIRST_MERGE && n >= 0);
    ByteMap bm = byte_map();
    Trainer tr = {0};
    count_words(&tr, texts, n);
    pm_init(&tr.pair_index, 1 << 14);

    /* token bytes by id, grown as merges are learned */
    int V = TOK_FIRST_MERGE, capv = vocab_size;
    char **tb = xcalloc((size_t)capv, sizeof *tb);
    int *tl = xcalloc((size_t)capv, sizeof *tl);
    for (int b = 0; b < 256; b++) { tb[4 + b] = xmalloc(1); tb[4 + b][0] = (char)b; tl[4 + b] = 1; }
    StrMap known;               /* token bytes -> id, to reuse an id for a repeated string */
    sm_init(&known, (size_t)vocab_size);
    for (int b = 0; b < 256; b++) sm_put(&known, tb[4 + b], 1, 4 + b);
    int capm = vocab_size, nm = 0;
    int *ma = xmalloc((size_t)capm * sizeof *ma), *mb = xmalloc((size_t)capm * sizeof *mb), *mo = xmalloc((size_t)capm * sizeof *mo);

    /* initial pair counts */
    for (int w = 0; w < tr.nwords; w++) {
        Word *wd = &tr.words[w];
        for (int i = 0; i + 1 < wd->len; i++) {
            int p = pair_get_or_add(&tr, wd->ids[i], wd->ids[i + 1]);
            tr.pairs[p].count += wd->count;
            pair_add_word(&tr.pairs[p], w);
        }
    }
    for (int p = 0; p < tr.npairs; p++) heap_push(&tr.heap, (HeapItem){tr.pairs[p].count, tr.pairs[p].a, tr.pairs[p].b});

    int *wstamp = xcalloc((size_t)tr.nwords + 1, sizeof *wstamp);
    int *touched = NULL, ntouched = 0, captouched = 0;
    int stamp = 0;
    while (V < vocab_size && tr.heap.n > 0) {
        /* the most frequent pair: stale heap entries are re-pushed with their count */
        HeapItem top = heap_pop(&tr.heap);
        int pi = pm_get(&tr.pair_index, top.a, top.b);
        int64_t cur = tr.pairs[pi].count;
        if (cur != top.count) {
            if (cur > 0) heap_push(&tr.heap, (HeapItem){cur, top.a, top.b});
            continue;
        }
        if (cur <= 0) break;
        int a = top.a, b = top.b;
        /* the new token, or the existing one with the same bytes */
        int len = tl[a] + tl[b];
        char *nb = xmalloc((size_t)len);
        memcpy(nb, tb[a], (size_t)tl[a]);
        memcpy(nb + tl[a], tb[b], (size_t)tl[b]);
        int c = sm_get(&known, nb, (size_t)len);
        if (c < 0) {
            c = V++;
            if (c >= capv) { capv *= 2; tb = xrealloc(tb, (size_t)capv * sizeof *tb); tl = xrealloc(tl, (size_t)capv * sizeof *tl); }
            tb[c] = nb;
            tl[c] = len;
            sm_put(&known, tb[c], (size_t)len, c);
        } else free(nb);
        if (nm == capm) {
            capm *= 2;
            ma = xrealloc(ma, (size_t)capm * sizeof *ma); mb = xrealloc(mb, (size_t)capm * sizeof *mb); mo = xrealloc(mo, (size_t)capm * sizeof *mo);
        }
        ma[nm] = a; mb[nm] = b; mo[nm] = c; nm++;

        /* rewrite the words holding (a, b): take their pairs out, merge, put them back */
        stamp++;
        ntouched = 0;
        int *where = tr.pairs[pi].where, nwhere = tr.pairs[pi].nwhere;
        tr.pairs[pi].where = NULL;
        tr.pairs[pi].nwhere = tr.pairs[pi].capwhere = 0;
        for (int k = 0; k < nwhere; k++) {
            int w = where[k];
            if (wstamp[w] == stamp) continue;
            wstamp[w] = stamp;
            Word *wd = &tr.words[w];
            int has = 0;
            for (int i = 0; i + 1 < wd->len && !has; i++) has = wd->ids[i] == a && wd->ids[i + 1] == b;
            if (!has) continue;             /* stale: an earlier merge changed this word */
            for (int i = 0; i + 1 < wd->len; i++) tr.pairs[pm_get(&tr.pair_index, wd->ids[i], wd->ids[i + 1])].count -= wd->count;
            int out = 0;
            for (int i = 0; i < wd->len;) {
                if (i + 1 < wd->len && wd->ids[i] == a && wd->ids[i + 1] == b) { wd->ids[out++] = c; i += 2; }
                else wd->ids[out++] = wd->ids[i++];
            }
            wd->len = out;
            for (int i = 0; i + 1 < wd->len; i++) {
                int x = wd->ids[i], y = wd->ids[i + 1];
                int p = pair_get_or_add(&tr, x, y);
                tr.pairs[p].count += wd->count;
                if (x == c || y == c) {
                    pair_add_word(&tr.pairs[p], w);
                    if (tr.pairs[p].stamp != stamp) {
                        tr.pairs[p].stamp = stamp;
                        if (ntouched == captouched) { captouched = captouched ? 2 * captouched : 256; touched = xrealloc(touched, (size_t)captouched * sizeof *touched); }
                        touched[ntouched++] = p;
                    }
                }
            }
        }
        free(where);
        /* pairs with the new token only grew during this merge: push their final counts */
        for (int k = 0; k < ntouched; k++) {
            PairInfo *p = &tr.pairs[touched[k]];
            if (p->count > 0) heap_push(&tr.heap, (HeapItem){p->count, p->a, p->b});
        }
    }
    free(touched);
    free(wstamp);

    /* the tokenizer: specials, bytes, merges */
    Tokenizer *t = tok_alloc(V);
    for (int i = 0; i < TOK_N_SPECIAL; i++) {
        t->str[i] = xstrdup(special_text[i]);
        t->bytes[i] = xstrdup(special_text[i]);
        t->nbytes[i] = (int)strlen(special_text[i]);
        t->added[i] = 1;
    }
    for (int i = TOK_N_SPECIAL; i < V; i++) {
        t->bytes[i] = tb[i];
        t->nbytes[i] = tl[i];
        t->str[i] = bytes_to_text(&bm, tb[i], tl[i]);
    }
    for (int b = 0; b < 256; b++) t->byte_id[b] = TOK_N_SPECIAL + b;
    t->n_merges = nm;
    t->merge_out = mo;
    pm_init(&t->rank, (size_t)nm);
    for (int r = 0; r < nm; r++) pm_put(&t->rank, ma[r], mb[r], r);
    tok_index(t);
    /* pre-tokenisation keeps '<', '/' and '>' apart from letters, so no merge can spell
     * an added token; a collision would make the vocabulary ambiguous */
    for (int i = 0; i < TOK_N_SPECIAL; i++) CHECK(tok_id(t, special_text[i]) == i);

    free(ma); free(mb);
    free(tb); free(tl);
    sm_free(&known);
    for (int w = 0; w < tr.nwords; w++) free(tr.words[w].ids);
    free(tr.words);
    for (int p = 0; p < tr.npairs; p++) free(tr.pairs[p].where);
    free(tr.pairs);
    pm_free(&tr.pair_index);
    free(tr.heap.h);
    return t;
}

/* ----------------------------------------------------------------------------
 * tokenizer.json */

static Json *byte_level_json(void) {
    Json *j = json_new_object();
    json_add(j, "type", json_new_string("ByteLevel"));
    json_add(j, "add_prefix_space", json_new_bool(0));
    json_add(j, "trim_offsets", json_new_bool(1));
    json_add(j, "use_regex", json_new_bool(1));
    return j;
}

void tok_save(const char *path, const Tokenizer *t) {
    Json *root = json_new_object();
    json_add(root, "version", json_new_string("1.0"));
    json_add(root, "truncation", json_new_null());
    json_add(root, "padding", json_new_null());
    Json *added = json_new_array();
    for (int i = 0; i < t->V; i++) {
        if (!t->added[i]) continue;
        Json *a = json_new_object();
        json_add(a, "id", json_new_number(i));
        json_add(a, "content", json_new_string(t->str[i]));
        json_add(a, "single_word", json_new_bool(0));
        json_add(a, "lstrip", json_new_bool(0));
        json_add(a, "rstrip", json_new_bool(0));
        json_add(a, "normalized", json_new_bool(0));
        json_add(a, "special", json_new_bool(1));
        json_push(added, a);
    }
    json_add(root, "added_tokens", added);
    json_add(root, "normalizer", json_new_null());
    json_add(root, "pre_tokenizer", byte_level_json());
    json_add(root, "post_processor", json_new_null());
    json_add(root, "decoder", byte_level_json());
    Json *model = json_new_object();
    json_add(model, "type", json_new_string("BPE"));
    json_add(model, "dropout", json_new_null());
    json_add(model, "unk_token", json_new_null());
    json_add(model, "continuing_subword_prefix", json_new_null());
    json_add(model, "end_of_word_suffix", json_new_null());
    json_add(model, "fuse_unk", json_new_bool(0));
    json_add(model, "byte_fallback", json_new_bool(0));
    json_add(model, "ignore_merges", json_new_bool(0));
    Json *vocab = json_new_object();
    for (int i = 0; i < t->V; i++) json_add(vocab, t->str[i], json_new_number(i));
    json_add(model, "vocab", vocab);
    /* merges by rank, "left right" (byte-level text never holds a space) */
    int *left = xmalloc(((size_t)t->n_merges + 1) * sizeof *left), *right = xmalloc(((size_t)t->n_merges + 1) * sizeof *right);
    for (size_t i = 0; i < t->rank.cap; i++) {
        if (t->rank.key[i] == UINT64_MAX) continue;
        int r = t->rank.val[i];
        left[r] = (int)(t->rank.key[i] >> 32);
        right[r] = (int)(t->rank.key[i] & 0xFFFFFFFFu);
    }
    Json *merges = json_new_array();
    for (int r = 0; r < t->n_merges; r++) {
        char *m = xasprintf("%s %s", t->str[left[r]], t->str[right[r]]);
        json_push(merges, json_new_string(m));
        free(m);
    }
    free(left); free(right);
    json_add(model, "merges", merges);
    json_add(root, "model", model);
    json_save(path, root);
    json_free(root);
}

/* Member of an object that must be null/absent or equal to a given boolean. */
static void expect_flag(const char *path, const Json *obj, const char *where, const char *key, int want, int required) {
    const Json *v = json_get(obj, key);
    if (!v) { if (required) die_input(path, "%s: missing \"%s\"", where, key); return; }
    if (v->type != JSON_BOOL || v->boolean != want)
        die_input(path, "%s: \"%s\" must be %s (pulse implements only that)", where, key, want ? "true" : "false");
}

static void expect_null_or_empty(const char *path, const Json *obj, const char *where, const char *key) {
    const Json *v = json_get(obj, key);
    if (v && v->type != JSON_NULL && !(v->type == JSON_STRING && v->len == 0))
        die_input(path, "%s: \"%s\" must be null (pulse does not implement it)", where, key);
}

static void expect_byte_level(const char *path, const Json *root, const char *key, int allow_null) {
    const Json *v = json_get(root, key);
    if (!v || v->type == JSON_NULL) {
        if (!allow_null) die_input(path, "\"%s\" must be a ByteLevel object", key);
        return;
    }
    if (v->type != JSON_OBJECT) die_input(path, "\"%s\" must be a ByteLevel object", key);
    const char *type = json_get_string(v, "type", "", path);
    if (strcmp(type, "ByteLevel") != 0) die_input(path, "\"%s\" is %s, not ByteLevel (pulse implements only ByteLevel)", key, *type ? type : "untyped");
    if (strcmp(key, "pre_tokenizer") == 0) {
        expect_flag(path, v, key, "add_prefix_space", 0, 1);
        expect_flag(path, v, key, "use_regex", 1, 0);
    }
}

Tokenizer *tok_load(const char *path) {
    Json *root = json_load(path);
    if (root->type != JSON_OBJECT) die_input(path, "not a tokenizer.json (not a JSON object)");
    const char *version = json_get_string(root, "version", "1.0", path);
    if (strcmp(version, "1.0") != 0) die_input(path, "tokenizer.json version \"%s\" (pulse reads 1.0)", version);
    const Json *norm = json_get(root, "normalizer");
    if (norm && norm->type != JSON_NULL) die_input(path, "\"normalizer\" must be null (pulse implements none)");
    expect_byte_level(path, root, "pre_tokenizer", 0);
    expect_byte_level(path, root, "decoder", 1);
    /* post_processor only matters when a library adds special tokens itself; pulse adds
     * <s> and </s> explicitly (tok_encode_chat), so any post_processor is accepted */
    const Json *model = json_get(root, "model");
    if (!model || model->type != JSON_OBJECT) die_input(path, "missing \"model\" object");
    const char *type = json_get_string(model, "type", "", path);
    if (strcmp(type, "BPE") != 0) die_input(path, "model type \"%s\" (pulse reads BPE)", type);
    const Json *dropout = json_get(model, "dropout");
    if (dropout && dropout->type != JSON_NULL && !(dropout->type == JSON_NUMBER && dropout->number == 0))
        die_input(path, "model: BPE dropout is not supported");
    expect_null_or_empty(path, model, "model", "unk_token");
    expect_null_or_empty(path, model, "model", "continuing_subword_prefix");
    expect_null_or_empty(path, model, "model", "end_of_word_suffix");
    expect_flag(path, model, "model", "byte_fallback", 0, 0);
    expect_flag(path, model, "model", "ignore_merges", 0, 0);
    const Json *vocab = json_get(model, "vocab"), *merges = json_get(model, "merges");
    if (!vocab || vocab->type != JSON_OBJECT) die_input(path, "model: missing \"vocab\" object");
    if (!merges || merges->type != JSON_ARRAY) die_input(path, "model: missing \"merges\" array");
    const Json *added = json_get(root, "added_tokens");
    if (added && added->type != JSON_ARRAY) die_input(path, "\"added_tokens\" must be an array");

    /* ids: the vocab and the added tokens together must number 0..V-1 exactly once */
    size_t nv = vocab->len, na = added ? added->len : 0;
    if (nv > 10000000) die_input(path, "vocab of %zu entries is absurd", nv);
    int V = (int)(nv + na);                  /* an upper bound until added tokens are matched */
    const char **text = xcalloc((size_t)V + 1, sizeof *text);
    unsigned char *is_added = xcalloc((size_t)V + 1, 1);
    int maxid = -1;
    for (size_t i = 0; i < nv; i++) {
        const Json *v = vocab->items[i];
        if (v->type != JSON_NUMBER || v->number != floor(v->number))
            die_input(path, "vocab: \"%s\" has a non-integer id", vocab->keys[i]);
        if (v->number < 0 || v->number >= (double)V) die_input(path, "vocab: id %.17g of \"%s\" is out of range", v->number, vocab->keys[i]);
        int id = (int)v->number;
        if (text[id]) die_input(path, "vocab: id %d is used twice (\"%s\" and \"%s\")", id, text[id], vocab->keys[i]);
        text[id] = vocab->keys[i];
        if (id > maxid) maxid = id;
    }
    for (size_t i = 0; i < na; i++) {
        const Json *a = added->items[i];
        if (a->type != JSON_OBJECT) die_input(path, "added_tokens[%zu] is not an object", i);
        const Json *idj = json_get(a, "id"), *content = json_get(a, "content");
        if (!idj || idj->type != JSON_NUMBER || idj->number != floor(idj->number) || idj->number < 0 || idj->number >= (double)V)
            die_input(path, "added_tokens[%zu]: missing or out-of-range \"id\"", i);
        if (!content || content->type != JSON_STRING || content->len == 0 || strlen(content->string) != content->len)
            die_input(path, "added_tokens[%zu]: missing or empty \"content\"", i);
        int id = (int)idj->number;
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        expect_flag(path, a, where, "single_word", 0, 0);
        expect_flag(path, a, where, "lstrip", 0, 0);
        expect_flag(path, a, where, "rstrip", 0, 0);
        if (is_added[id]) die_input(path, "added_tokens: id %d is listed twice", id);
        if (text[id] && strcmp(text[id], content->string) != 0)
            die_input(path, "added_tokens[%zu]: id %d is \"%s\" but the vocab says \"%s\"", i, id, content->string, text[id]);
        text[id] = content->string;
        is_added[id] = 1;
        if (id > maxid) maxid = id;
    }
    V = maxid + 1;
    for (int i = 0; i < V; i++)
        if (!text[i]) die_input(path, "ids are not contiguous: no token has id %d", i);
    for (int i = 0; i < TOK_N_SPECIAL; i++)
        if (V <= i || !is_added[i] || strcmp(text[i], special_text[i]) != 0)
            die_input(path, "missing special token %s with id %d (pulse's fixed ids: <pad> 0, <s> 1, </s> 2, <image> 3)", special_text[i], i);

    /* token bytes: byte-level text decoded through the inverse of bytes_to_unicode */
    ByteMap bm = byte_map();
    Tokenizer *t = tok_alloc(V);
    for (int i = 0; i < V; i++) {
        t->str[i] = xstrdup(text[i]);
        t->added[i] = is_added[i];
        size_t n = strlen(text[i]);
        t->bytes[i] = xmalloc(n + 1);
        if (is_added[i]) { memcpy(t->bytes[i], text[i], n + 1); t->nbytes[i] = (int)n; continue; }
        int k = 0;
        for (size_t p = 0; p < n;) {
            uint32_t cp;
            int len = utf8_next(text[i] + p, n - p, &cp);
            if (len == 0 || cp >= 324 || bm.byte_of[cp] < 0)
                die_input(path, "vocab: \"%s\" is not made of byte-level characters", text[i]);
            t->bytes[i][k++] = (char)bm.byte_of[cp];
            p += (size_t)len;
        }
        t->bytes[i][k] = 0;
        t->nbytes[i] = k;
    }
    tok_index(t);
    for (int b = 0; b < 256; b++) {
        t->byte_id[b] = tok_id(t, bm.utf8[b]);
        if (t->byte_id[b] < 0 || t->added[t->byte_id[b]]) die_input(path, "vocab: the byte token \"%s\" (byte %d) is missing", bm.utf8[b], b);
    }

    /* merges: "left right" or ["left", "right"]; both parts and their join must exist */
    t->n_merges = (int)merges->len;
    t->merge_out = xmalloc(((size_t)t->n_merges + 1) * sizeof *t->merge_out);
    pm_init(&t->rank, merges->len);
    for (size_t r = 0; r < merges->len; r++) {
        const Json *m = merges->items[r];
        char *l = NULL, *rt = NULL;
        if (m->type == JSON_STRING) {
            const char *sp = strchr(m->string, ' ');
            if (!sp || strchr(sp + 1, ' ') || strlen(m->string) != m->len) die_input(path, "merges[%zu] is not \"left right\"", r);
            l = xmalloc((size_t)(sp - m->string) + 1);
            memcpy(l, m->string, (size_t)(sp - m->string));
            l[sp - m->string] = 0;
            rt = xstrdup(sp + 1);
        } else if (m->type == JSON_ARRAY && m->len == 2 && m->items[0]->type == JSON_STRING && m->items[1]->type == JSON_STRING) {
            l = xstrdup(m->items[0]->string);
            rt = xstrdup(m->items[1]->string);
        } else die_input(path, "merges[%zu] is not \"left right\"", r);
        int a = tok_id(t, l), b = tok_id(t, rt);
        if (a < 0 || b < 0 || t->added[a] || t->added[b])
            die_input(path, "merges[%zu] \"%s %s\": unknown token \"%s\"", r, l, rt, a < 0 || t->added[a] ? l : rt);
        char *joined = xasprintf("%s%s", l, rt);
        int c = tok_id(t, joined);
        if (c < 0 || t->added[c]) die_input(path, "merges[%zu] \"%s %s\": the merged token \"%s\" is not in the vocab", r, l, rt, joined);
        if (pm_get(&t->rank, a, b) >= 0) die_input(path, "merges[%zu] \"%s %s\" is listed twice", r, l, rt);
        pm_put(&t->rank, a, b, (int)r);
        t->merge_out[r] = c;
        free(l); free(rt); free(joined);
    }
    free(text);
    free(is_added);
    json_free(root);
    return t;
}

/* ----------------------------------------------------------------------------
 * pulse tokenize */

int cmd_tokenize(int argc, char **argv) {
    Args a;
    args_init(&a, "tokenize", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse tokenize (--tokenizer FILE | --model CKPT_DIR) TEXT...\n\n"
               "Prints a JSON list with one list of token ids per TEXT. No special tokens are\n"
               "added; \"<image>\", \"<s>\", \"</s>\" and \"<pad>\" written in TEXT become their ids.\n"
               "CKPT_DIR/tokenizer.json is used with --model.\n");
        args_free(&a);
        return 0;
    }
    const char *file = args_str(&a, "tokenizer", NULL), *model = args_str(&a, "model", NULL);
    int n;
    char **texts = args_positional(&a, &n);
    args_done(&a);
    if (!file == !model) die_input(NULL, "tokenize: give exactly one of --tokenizer FILE and --model CKPT_DIR (see pulse tokenize --help)");
    if (n == 0) die_input(NULL, "tokenize: no TEXT given (see pulse tokenize --help)");
    char *path = file ? xstrdup(file) : xasprintf("%s/tokenizer.json", model);
    Tokenizer *t = tok_load(path);
    Json *out = json_new_array();
    for (int i = 0; i < n; i++) {
        size_t len = strlen(texts[i]);
        int *ids = xmalloc((len + 1) * sizeof *ids);
        int k = tok_encode(t, texts[i], ids, (int)len + 1);
        CHECK(k >= 0);
        Json *row = json_new_array();
        for (int j = 0; j < k; j++) json_push(row, json_new_number(ids[j]));
        json_push(out, row);
        free(ids);
    }
    char *s = json_dump(out, 0);
    printf("%s\n", s);
    free(s);
    json_free(out);
    tok_free(t);
    free(path);
    free(texts);
    args_free(&a);
    return 0;
}

/* ----------------------------------------------------------------------------
 * pulse inspect: what a file or directory is, checked by the strict readers. It lives
 * here, not in io.c, because it reads tokenizer.json as well as every io format: io
 * stays a leaf that links alone. */

static const char *ind = "";   /* "  " under a directory's heading line */

static const char *json_kind(JsonType t) {
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return names[t];
}

static void shape_text(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

/* The scalar members of a JSON object as "key=value ..." (nested objects skipped). */
static void print_scalars(const char *label, const Json *obj) {
    if (!obj || obj->type != JSON_OBJECT) return;
    printf("%s  %s:", ind, label);
    for (size_t i = 0; i < obj->len; i++) {
        const Json *v = obj->items[i];
        if (v->type == JSON_OBJECT) continue;
        char *s = json_dump(v, 0);
        if (v->type == JSON_ARRAY && strlen(s) > 60) { free(s); s = xasprintf("[%zu items]", v->len); }
        printf(" %s=%s", obj->keys[i], s);
        free(s);
    }
    printf("\n");
}

static void inspect_safetensors(const char *path, int list) {
    StFile f;
    st_read(path, &f);
    long long params = 0;
    int nf32 = 0, nf16 = 0, nbf16 = 0;
    for (int i = 0; i < f.n; i++) {
        long long numel = 1;
        for (int d = 0; d < f.t[i].ndim; d++) numel *= f.t[i].shape[d];
        params += numel;
        nf32 += strcmp(f.t[i].dtype, "F32") == 0;
        nf16 += strcmp(f.t[i].dtype, "F16") == 0;
        nbf16 += strcmp(f.t[i].dtype, "BF16") == 0;
    }
    printf("%s%s: safetensors, %d tensors, %lld parameters (F32 %d, F16 %d, BF16 %d), fnv1a64 %016llx\n",
           ind, path, f.n, params, nf32, nf16, nbf16, (unsigned long long)file_hash64(path));
    if (f.metadata) print_scalars("__metadata__", f.metadata);
    for (int i = 0; list && i < f.n; i++) {
        char sh[160];
        shape_text(sh, sizeof sh, f.t[i].shape, f.t[i].ndim);
        printf("%s    %s %s %s\n", ind, f.t[i].name, f.t[i].dtype, sh);
    }
    st_free(&f);
}

static void inspect_tokenizer(const char *path) {
    Tokenizer *t = tok_load(path);
    printf("%s%s: HF tokenizer.json, byte-level BPE, %d ids (%d merges), specials <pad>=%d <s>=%d </s>=%d <image>=%d, fnv1a64 %016llx\n",
           ind, path, tok_vocab_size(t), tok_n_merges(t), tok_id(t, "<pad>"), tok_id(t, "<s>"), tok_id(t, "</s>"),
           tok_id(t, "<image>"), (unsigned long long)file_hash64(path));
    tok_free(t);
}

static void inspect_json(const char *path) {
    Json *j = json_load(path);
    printf("%s%s: JSON %s", ind, path, json_kind(j->type));
    if (j->type == JSON_OBJECT) printf(" with %zu keys", j->len);
    if (j->type == JSON_ARRAY) printf(" of %zu items", j->len);
    printf(", fnv1a64 %016llx\n", (unsigned long long)file_hash64(path));
    if (j->type == JSON_OBJECT) {
        print_scalars("fields", j);
        /* the LLaVA config's sub-configs and pulse's provenance, when present */
        static const char *subs[] = {"text_config", "vision_config", "pulse"};
        for (int i = 0; i < 3; i++) print_scalars(subs[i], json_get(j, subs[i]));
    }
    json_free(j);
}

static void inspect_jsonl(const char *path) {
    size_t n;
    char *text = read_file(path, &n);
    size_t lines = 0, start = 0;
    Json *first = NULL;
    while (start < n) {
        char *nl = memchr(text + start, '\n', n - start);
        size_t end = nl ? (size_t)(nl - text) : n;
        lines++;
        char err[256];
        if (end == start) die_input(path, "line %zu is empty (JSON Lines has one value a line)", lines);
        Json *j = json_parse(text + start, end - start, err, sizeof err);
        if (!j) die_input(path, "line %zu: %s", lines, err);
        if (!first) first = j; else json_free(j);
        start = end + 1;
    }
    printf("%s%s: JSON Lines, %zu records, fnv1a64 %016llx\n", ind, path, lines, (unsigned long long)hash64(text, n, HASH64_INIT));
    if (first && first->type == JSON_OBJECT) {
        printf("%s  keys of the first record:", ind);
        for (size_t i = 0; i < first->len; i++) printf(" %s", first->keys[i]);
        printf("\n");
    }
    json_free(first);
    free(text);
}

static void inspect_image(const char *path) {
    Image im;
    image_read(path, &im);
    printf("%s%s: image %dx%d RGB, fnv1a64 %016llx\n", ind, path, im.w, im.h, (unsigned long long)file_hash64(path));
    image_free(&im);
}

/* Dispatch on the name first, then on the first bytes. */
static void inspect_file(const char *path, int list) {
    if (has_suffix(path, ".safetensors")) { inspect_safetensors(path, list); return; }
    if (has_suffix(path, "tokenizer.json")) { inspect_tokenizer(path); return; }
    if (has_suffix(path, ".jsonl")) { inspect_jsonl(path); return; }
    if (has_suffix(path, ".json")) { inspect_json(path); return; }
    if (has_suffix(path, ".png") || has_suffix(path, ".ppm")) { inspect_image(path); return; }
    size_t k;
    char *all = read_file(path, &k);
    unsigned char head[8] = {0};
    memcpy(head, all, k < 8 ? k : 8);
    free(all);
    if ((k >= 8 && memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0) || (k >= 2 && head[0] == 'P' && head[1] == '6')) inspect_image(path);
    else if (k >= 1 && (head[0] == '{' || head[0] == '[')) inspect_json(path);
    else if (k == 8 && head[7] == 0 && head[6] == 0 && head[5] == 0) inspect_safetensors(path, list);
    else die_input(path, "unknown kind of file (pulse inspects .safetensors, .json, .jsonl, .png, .ppm and checkpoint directories)");
}

static void inspect_dir(const char *dir, int list) {
    char *cfg = xasprintf("%s/config.json", dir), *model = xasprintf("%s/model.safetensors", dir);
    char *acfg = xasprintf("%s/adapter_config.json", dir), *amodel = xasprintf("%s/adapter_model.safetensors", dir);
    char *tok = xasprintf("%s/tokenizer.json", dir), *pre = xasprintf("%s/preprocessor_config.json", dir);
    if (file_exists(cfg) && file_exists(model)) {
        printf("%s: checkpoint (HF layout)\n", dir);
        ind = "  ";
        inspect_json(cfg);
        inspect_safetensors(model, list);
        if (file_exists(tok)) inspect_tokenizer(tok);
        else printf("  (no tokenizer.json)\n");
        if (file_exists(pre)) inspect_json(pre);
        else printf("  (no preprocessor_config.json)\n");
    } else if (file_exists(acfg) && file_exists(amodel)) {
        printf("%s: LoRA adapter (PEFT layout)\n", dir);
        ind = "  ";
        inspect_json(acfg);
        inspect_safetensors(amodel, list);
    } else {
        die_input(dir, "not a checkpoint (config.json + model.safetensors) nor an adapter (adapter_config.json + adapter_model.safetensors)");
    }
    ind = "";
    free(cfg); free(model); free(acfg); free(amodel); free(tok); free(pre);
}

int cmd_inspect(int argc, char **argv) {
    Args a;
    args_init(&a, "inspect", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse inspect [--tensors] PATH...\n\n"
               "Says what each PATH is and checks it with pulse's strict readers: a checkpoint\n"
               "directory (config.json + model.safetensors [+ tokenizer.json,\n"
               "preprocessor_config.json]), a LoRA adapter directory (adapter_config.json +\n"
               "adapter_model.safetensors), a .safetensors file, a tokenizer.json, a .jsonl\n"
               "dataset, a .json file, or a .png/.ppm image. Prints the config, tensor and\n"
               "parameter counts and an FNV-1a 64 checksum of each file's bytes.\n"
               "  --tensors   also list every tensor with its dtype and shape\n"
               "Bad input: one line \"pulse: PATH: reason\" and exit status 2.\n");
        args_free(&a);
        return 0;
    }
    int list = args_flag(&a, "tensors"), n;
    char **paths = args_positional(&a, &n);
    args_done(&a);
    if (n == 0) die_input(NULL, "inspect: no PATH given (see pulse inspect --help)");
    for (int i = 0; i < n; i++) {
        if (dir_exists(paths[i])) inspect_dir(paths[i], list);
        else {
            if (!file_exists(paths[i])) die_input(paths[i], "no such file or directory");
            inspect_file(paths[i], list);
        }
    }
    free(paths);
    args_free(&a);
    return 0;
}
