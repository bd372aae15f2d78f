/* tests/test_tokenizer.c: byte-level BPE (see tokenizer.h).
 *
 * Expected pre-token splits were checked against GPT-2's regex run by Python's `re`
 * (ASCII classes), and the encodings of a trained tokenizer against an independent
 * Python implementation of rank-ordered BPE reading the saved tokenizer.json (see
 * docs/files.md); here they are fixed as hand-checked cases. Malformed tokenizer.json
 * files are refused in child processes (exit status 2, one line naming the file).
 * `test_tokenizer --write-bad DIR` writes those files for the end-to-end tests.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "io.h"
#include "tokenizer.h"
#include "checkpoint.h"
#include "tests/test.h"

static char tmpdir[256];

static char *tpath(const char *name) { return xasprintf("%s/%s", tmpdir, name); }

/* A small deterministic corpus: pseudo-words with a Zipf-like frequency. */
static char **make_corpus(int nlines, uint64_t seed) {
    static const char *syl[] = {"ka", "lo", "mi", "ra", "ten", "sor", "vel", "qui", "an", "dro", "pe", "ly", "shi", "gor", "ul", "be"};
    Rng r;
    rng_seed(&r, seed);
    char **lines = xmalloc((size_t)nlines * sizeof *lines);
    for (int i = 0; i < nlines; i++) {
        char buf[512];
        size_t k = 0;
        int nw = 4 + (int)rng_below(&r, 10);
        for (int w = 0; w < nw; w++) {
            if (w) buf[k++] = ' ';
            /* a word id skewed to small values; its syllables are its base-16 digits */
            uint32_t id = rng_below(&r, 1 + rng_below(&r, 5000));
            do {
                const char *y = syl[id % 16];
                memcpy(buf + k, y, strlen(y));
                k += strlen(y);
                id /= 16;
            } while (id);
        }
        static const char *tails[] = {".", "?", "!", ", 1923.", " (2001).\n", "'s job.", " <image>"};
        const char *t = tails[rng_below(&r, 7)];
        memcpy(buf + k, t, strlen(t) + 1);
        lines[i] = xstrdup(buf);
    }
    return lines;
}

static void free_corpus(char **lines, int n) {
    for (int i = 0; i < n; i++) free(lines[i]);
    free(lines);
}

/* ----------------------------------------------------------------------------
 * Pre-tokenisation */

static void test_pretokenize(void) {
    static const struct { const char *text; const char *pieces[8]; } cases[] = {
        {"I'm", {"I", "'m"}},
        {"  spaces", {" ", " spaces"}},
        {"x2y", {"x", "2", "y"}},
        {"Hello, world!!", {"Hello", ",", " world", "!!"}},
        {"a\n\nb", {"a", "\n", "\n", "b"}},
        {"end   ", {"end", "   "}},
        {"don't", {"don", "'t"}},
        {"'S", {"'", "S"}},
        {"3.14", {"3", ".", "14"}},
        {" \n x", {" \n", " x"}},
        {"a \tb", {"a", " ", "\t", "b"}},
        {"it's  ok\n", {"it", "'s", " ", " ok", "\n"}},
        {"we'll've 'rex", {"we", "'ll", "'ve", " '", "rex"}},
        {"  !!x", {" ", " !!", "x"}},
        {"__x", {"__", "x"}},
        {"h\xc3\xa9llo w\xc3\xb6rld", {"h\xc3\xa9llo", " w\xc3\xb6rld"}},
        {"a\xe2\x80\x94" "b", {"a", "\xe2\x80\x94", "b"}},
        {"x\xc2\xb2", {"x", "\xc2\xb2"}},
        {"\xff\xfe" "ab c", {"\xff\xfe" "ab", " c"}},
        {"", {NULL}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *s = cases[c].text;
        size_t len = strlen(s), ends[64], start = 0;
        int n = tok_pretokenize(s, len, ends), ok = 1, k = 0;
        for (; k < n && ok; k++) {
            const char *want = cases[c].pieces[k];
            ok = want && strlen(want) == ends[k] - start && memcmp(want, s + start, ends[k] - start) == 0;
            start = ends[k];
        }
        ok = ok && k < 8 && cases[c].pieces[k] == NULL;
        TEST(ok, "pre-tokens of case %zu (\"%s\")", c, s);
    }
}

/* ----------------------------------------------------------------------------
 * Training */

static void test_train_small(void) {
    /* "ab ab ab abc": words ab x1, " ab" x2, " abc" x1. Pairs (a,b)=4, (' ',a)=3,
     * (b,c)=1: merge 1 = a b; then (' ', ab)=3: merge 2 = Ġ ab; then Ġab c. */
    const char *texts[] = {"ab ab ab abc"};
    Tokenizer *t = tok_train(texts, 1, 263);
    TEST(tok_vocab_size(t) == 263 && tok_n_merges(t) == 3, "3 merges (V %d)", tok_vocab_size(t));
    TEST(strcmp(tok_token(t, 260), "ab") == 0 && strcmp(tok_token(t, 261), "\xc4\xa0" "ab") == 0 &&
         strcmp(tok_token(t, 262), "\xc4\xa0" "abc") == 0, "merged tokens ab, Gab, Gabc");
    int ids[16];
    int n = tok_encode(t, "ab abc abd", ids, 16);
    TEST(n == 4 && ids[0] == 260 && ids[1] == 262 && ids[2] == 261 && ids[3] == 4 + 'd', "encode with the merges");
    TEST(tok_id(t, "<image>") == TOK_IMAGE && tok_id(t, "<s>") == TOK_BOS && tok_id(t, "</s>") == TOK_EOS &&
         tok_id(t, "<pad>") == TOK_PAD && tok_id(t, "a") == 4 + 'a' && tok_id(t, "\xc4\xa0") == 4 + ' ' &&
         tok_id(t, "nope") == -1, "tok_id");
    TEST(tok_token(t, 263) == NULL && tok_token(t, -1) == NULL, "tok_token out of range");
    tok_free(t);

    /* ties: "xy yx" has three pairs of count 1; the smallest ids win: (' '=36, y=125)
     * first, then (x=124, y=125) before (Gy=260, x=124) */
    const char *t2[] = {"xy yx"};
    t = tok_train(t2, 1, 300);
    TEST(tok_n_merges(t) == 3 && strcmp(tok_token(t, 260), "\xc4\xa0y") == 0 && strcmp(tok_token(t, 261), "xy") == 0 &&
         strcmp(tok_token(t, 262), "\xc4\xa0yx") == 0, "deterministic tie-break by smallest ids");
    TEST(tok_vocab_size(t) == 263, "stops when no pair is left (V %d)", tok_vocab_size(t));
    tok_free(t);

    /* added tokens in the corpus are not learned from: "<image>" never merges */
    const char *t3[] = {"<image><image><image> <s>"};
    t = tok_train(t3, 1, 300);
    TEST(tok_n_merges(t) == 0, "added tokens are left out of training (%d merges)", tok_n_merges(t));
    tok_free(t);
}

static char *file_text(const char *path) { return read_file(path, NULL); }

static void test_train_deterministic(void) {
    int n = 3000;
    char **lines = make_corpus(n, 1);
    Tokenizer *a = tok_train((const char *const *)lines, n, 700);
    Tokenizer *b = tok_train((const char *const *)lines, n, 700);
    /* the same texts in reverse order: counts and ties do not depend on order */
    char **rev = xmalloc((size_t)n * sizeof *rev);
    for (int i = 0; i < n; i++) rev[i] = lines[n - 1 - i];
    Tokenizer *c = tok_train((const char *const *)rev, n, 700);
    char *pa = tpath("a.json"), *pb = tpath("b.json"), *pc = tpath("c.json");
    tok_save(pa, a); tok_save(pb, b); tok_save(pc, c);
    char *xa = file_text(pa), *xb = file_text(pb), *xc = file_text(pc);
    TEST(strcmp(xa, xb) == 0, "training twice gives the same tokenizer.json");
    TEST(strcmp(xa, xc) == 0, "training on reordered texts gives the same tokenizer.json");
    TEST(tok_vocab_size(a) == 700, "vocab size reached (%d)", tok_vocab_size(a));
    free(xa); free(xb); free(xc); free(pa); free(pb); free(pc); free(rev);
    tok_free(a); tok_free(b); tok_free(c);
    free_corpus(lines, n);
}

/* ----------------------------------------------------------------------------
 * Encode / decode */

static Tokenizer *corpus_tokenizer(int V) {
    int n = 2000;
    char **lines = make_corpus(n, 2);
    Tokenizer *t = tok_train((const char *const *)lines, n, V);
    free_corpus(lines, n);
    return t;
}

static void test_roundtrip(Tokenizer *t) {
    Rng r;
    rng_seed(&r, 9);
    int bad = 0, max_ratio_bad = 0;
    static const char pool[] = "ab <>/imgesS' \n\t.0123\xc3\xa9\xe2\x80\x94\xff\x80\x00";
    for (int it = 0; it < 3000; it++) {
        char buf[96];
        size_t len = rng_below(&r, 96);
        for (size_t i = 0; i < len; i++) {
            /* half uniform random bytes (mostly invalid UTF-8), half from a tricky pool */
            buf[i] = rng_below(&r, 2) ? (char)rng_below(&r, 256) : pool[rng_below(&r, sizeof pool - 1)];
            if (rng_below(&r, 40) == 0 && i + 7 <= len) { memcpy(buf + i, "<image>", 7); i += 6; }
        }
        int ids[128];
        int n = tok_encode_n(t, buf, len, ids, 128);
        if (n < 0 || (size_t)n > len) { max_ratio_bad++; continue; }
        size_t dl;
        char *d = tok_decode_n(t, ids, n, 0, &dl);
        if (dl != len || memcmp(d, buf, len) != 0) bad++;
        free(d);
    }
    TEST(bad == 0, "random bytes (incl. invalid UTF-8, NUL) round-trip: %d failures", bad);
    TEST(max_ratio_bad == 0, "never more ids than bytes (%d)", max_ratio_bad);
    /* text */
    const char *text = "USER: <image>\nWhat is Kalo Vel's job? ASSISTANT: She was born in 1923 \xe2\x80\x94 in S\xc3\xa3o Paulo.</s>";
    int ids[256];
    int n = tok_encode(t, text, ids, 256);
    char *d = tok_decode(t, ids, n, 0);
    TEST(n > 0 && strcmp(d, text) == 0, "text round-trip");
    free(d);
    d = tok_decode(t, ids, n, 1);
    TEST(strcmp(d, "USER: \nWhat is Kalo Vel's job? ASSISTANT: She was born in 1923 \xe2\x80\x94 in S\xc3\xa3o Paulo.") == 0, "skip_special drops added tokens");
    free(d);
    int n_image = 0;
    for (int i = 0; i < n; i++) n_image += ids[i] == TOK_IMAGE;
    TEST(n_image == 1 && ids[n - 1] == TOK_EOS, "<image> and </s> recognised in text");
    n = tok_encode(t, "<imag <image <IMAGE>", ids, 256);
    for (int i = 0; i < n; i++) TEST(ids[i] >= TOK_N_SPECIAL, "near-misses of <image> are plain text");
    /* too small a buffer: -1, and nothing written past max */
    ids[3] = -77;
    TEST(tok_encode(t, "a b c d e f", ids, 3) == -1 && ids[3] == -77, "max too small -> -1");
    TEST(tok_encode(t, "", ids, 0) == 0, "empty text, max 0");
}

static void test_chat(Tokenizer *t) {
    int ids[256], start;
    int n = tok_encode_chat(t, "Who is this?", 1, "Kalo Vel", ids, 256, &start);
    TEST(n > 0 && ids[0] == TOK_BOS && ids[n - 1] == TOK_EOS, "chat: <s> ... </s>");
    int img = 0;
    for (int i = 0; i < n; i++) img += ids[i] == TOK_IMAGE;
    TEST(img == 1, "chat with image has one <image>");
    char *ans = tok_decode(t, ids + start, n - start - 1, 0);
    TEST(strcmp(ans, " Kalo Vel") == 0, "answer_start points at \" Kalo Vel\" (got \"%s\")", ans);
    free(ans);
    /* the same ids as encoding the whole template at once */
    int whole[256];
    int m = tok_encode(t, "USER: <image>\nWho is this? ASSISTANT: Kalo Vel", whole, 256);
    TEST(m == n - 2 && memcmp(whole, ids + 1, (size_t)m * sizeof *whole) == 0, "chat = encode(whole template)");
    char *prompt = tok_decode(t, ids, start, 0);
    TEST(strcmp(prompt, "<s>USER: <image>\nWho is this? ASSISTANT:") == 0, "prompt text: %s", prompt);
    free(prompt);
    n = tok_encode_chat(t, "Where was Kalo Vel born?", 0, NULL, ids, 256, &start);
    prompt = tok_decode(t, ids, n, 0);
    TEST(start == n && strcmp(prompt, "<s>USER: Where was Kalo Vel born? ASSISTANT:") == 0, "text-only prompt, no answer");
    free(prompt);
    int need = tok_encode_chat(t, "Q", 1, "A", ids, 256, NULL);
    TEST(tok_encode_chat(t, "Q", 1, "A", ids, need, NULL) == need, "exact max fits");
    TEST(tok_encode_chat(t, "Q", 1, "A", ids, need - 1, NULL) == -1, "max one short -> -1");
    TEST(tok_encode_chat(t, "Q", 1, "A", ids, 0, NULL) == -1, "max 0 -> -1");
}

/* ----------------------------------------------------------------------------
 * tokenizer.json */

static void test_save_load(Tokenizer *t) {
    char *p1 = tpath("tok1.json"), *p2 = tpath("tok2.json");
    tok_save(p1, t);
    Tokenizer *u = tok_load(p1);
    tok_save(p2, u);
    char *x1 = file_text(p1), *x2 = file_text(p2);
    TEST(strcmp(x1, x2) == 0, "save -> load -> save byte-identical");
    TEST(tok_vocab_size(u) == tok_vocab_size(t) && tok_n_merges(u) == tok_n_merges(t), "sizes survive");
    /* the loaded tokenizer encodes exactly like the trained one */
    int n = 500, bad = 0;
    char **lines = make_corpus(n, 77);
    for (int i = 0; i < n; i++) {
        int a[600], b[600];
        int na = tok_encode(t, lines[i], a, 600), nb = tok_encode(u, lines[i], b, 600);
        if (na != nb || memcmp(a, b, (size_t)na * sizeof *a) != 0) bad++;
    }
    TEST(bad == 0, "loaded tokenizer encodes identically (%d differ)", bad);
    free_corpus(lines, n);
    /* the merges are also accepted in the newer ["left", "right"] form */
    Json *j = json_load(p1);
    Json *merges = json_get(json_get(j, "model"), "merges");
    for (size_t i = 0; i < merges->len; i++) {
        char *s = merges->items[i]->string, *sp = strchr(s, ' ');
        Json *pair = json_new_array();
        json_push(pair, json_new_stringn(s, (size_t)(sp - s)));
        json_push(pair, json_new_string(sp + 1));
        json_free(merges->items[i]);
        merges->items[i] = pair;
    }
    json_save(p2, j);
    json_free(j);
    Tokenizer *v = tok_load(p2);
    int a[64], b[64];
    int na = tok_encode(t, "kalo velsor anquily", a, 64), nb = tok_encode(v, "kalo velsor anquily", b, 64);
    TEST(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0, "merges as arrays load the same");
    tok_free(v);
    tok_free(u);
    free(x1); free(x2); free(p1); free(p2);
}

/* Malformed tokenizer.json files: each a mutation of a valid one. */
typedef void (*Mutate)(Json *root);

static Json *model_of(Json *root) { return json_get(root, "model"); }
static Json *vocab_of(Json *root) { return json_get(model_of(root), "vocab"); }
static Json *merges_of(Json *root) { return json_get(model_of(root), "merges"); }

static void m_merge_unknown(Json *r) { json_push(merges_of(r), json_new_string("zzzq \xc4\xa0wxyz")); }
static void m_merge_not_in_vocab(Json *r) { json_push(merges_of(r), json_new_string("\xc4\xa0 \xc4\xa0")); }
static void m_merge_malformed(Json *r) { json_push(merges_of(r), json_new_string("abc")); }
static void m_merge_number(Json *r) { json_push(merges_of(r), json_new_number(5)); }
static void m_merge_duplicate(Json *r) { json_push(merges_of(r), json_new_string(merges_of(r)->items[0]->string)); }
static void m_vocab_out_of_range(Json *r) { json_set(vocab_of(r), "zz", json_new_number(100000)); }
static void m_vocab_negative(Json *r) { json_set(vocab_of(r), "zz", json_new_number(-1)); }
static void m_vocab_fraction(Json *r) { json_set(vocab_of(r), "zz", json_new_number(5.5)); }
static void m_vocab_duplicate_id(Json *r) { json_set(vocab_of(r), "zz", json_new_number(7)); }
static void m_vocab_string_id(Json *r) { json_set(vocab_of(r), "zz", json_new_string("7")); }
static void m_vocab_not_byte_level(Json *r) {
    Json *v = vocab_of(r);
    json_set(v, "a b", json_new_number((double)v->len));   /* ' ' is not in the alphabet */
}
static void m_vocab_missing_byte(Json *r) {
    Json *v = vocab_of(r);
    free(v->keys[4 + 'q']);
    v->keys[4 + 'q'] = xstrdup("qq");      /* id kept, byte token "q" gone */
}
static void m_vocab_gap(Json *r) { json_set(vocab_of(r), "zz", json_new_number((double)vocab_of(r)->len + 5)); }
static void m_missing_image(Json *r) {
    Json *added = json_get(r, "added_tokens"), *v = vocab_of(r);
    json_free(added->items[3]);
    added->len = 3;
    free(v->keys[3]);
    v->keys[3] = xstrdup("image");
}
static void m_special_wrong_id(Json *r) {
    Json *added = json_get(r, "added_tokens");
    json_set(added->items[1], "content", json_new_string("</s>"));
    json_set(added->items[2], "content", json_new_string("<s>"));
}
static void m_added_lstrip(Json *r) { json_set(json_get(r, "added_tokens")->items[3], "lstrip", json_new_bool(1)); }
static void m_added_not_object(Json *r) { json_push(json_get(r, "added_tokens"), json_new_string("<x>")); }
static void m_no_model(Json *r) { json_set(r, "model", json_new_null()); }
static void m_wordpiece(Json *r) { json_set(model_of(r), "type", json_new_string("WordPiece")); }
static void m_no_vocab(Json *r) { json_set(model_of(r), "vocab", json_new_array()); }
static void m_no_merges(Json *r) { json_set(model_of(r), "merges", json_new_object()); }
static void m_normalizer(Json *r) { Json *n = json_new_object(); json_set(n, "type", json_new_string("NFC")); json_set(r, "normalizer", n); }
static void m_prefix_space(Json *r) { json_set(json_get(r, "pre_tokenizer"), "add_prefix_space", json_new_bool(1)); }
static void m_whitespace_pre(Json *r) { json_set(json_get(r, "pre_tokenizer"), "type", json_new_string("Whitespace")); }
static void m_no_pre(Json *r) { json_set(r, "pre_tokenizer", json_new_null()); }
static void m_byte_fallback(Json *r) { json_set(model_of(r), "byte_fallback", json_new_bool(1)); }
static void m_dropout(Json *r) { json_set(model_of(r), "dropout", json_new_number(0.1)); }
static void m_unk(Json *r) { json_set(model_of(r), "unk_token", json_new_string("<unk>")); }
static void m_version(Json *r) { json_set(r, "version", json_new_string("2.0")); }

static const struct { const char *name; Mutate fn; } mutations[] = {
    {"tok_merge_unknown_token.json", m_merge_unknown}, {"tok_merge_not_in_vocab.json", m_merge_not_in_vocab},
    {"tok_merge_malformed.json", m_merge_malformed}, {"tok_merge_number.json", m_merge_number},
    {"tok_merge_duplicate.json", m_merge_duplicate}, {"tok_vocab_id_out_of_range.json", m_vocab_out_of_range},
    {"tok_vocab_id_negative.json", m_vocab_negative}, {"tok_vocab_id_fraction.json", m_vocab_fraction},
    {"tok_vocab_duplicate_id.json", m_vocab_duplicate_id}, {"tok_vocab_string_id.json", m_vocab_string_id},
    {"tok_vocab_not_byte_level.json", m_vocab_not_byte_level}, {"tok_vocab_missing_byte.json", m_vocab_missing_byte},
    {"tok_vocab_id_gap.json", m_vocab_gap}, {"tok_missing_image_token.json", m_missing_image},
    {"tok_special_wrong_id.json", m_special_wrong_id}, {"tok_added_lstrip.json", m_added_lstrip},
    {"tok_added_not_object.json", m_added_not_object}, {"tok_no_model.json", m_no_model},
    {"tok_wordpiece.json", m_wordpiece}, {"tok_vocab_not_object.json", m_no_vocab},
    {"tok_merges_not_array.json", m_no_merges}, {"tok_normalizer.json", m_normalizer},
    {"tok_add_prefix_space.json", m_prefix_space}, {"tok_whitespace_pretokenizer.json", m_whitespace_pre},
    {"tok_no_pretokenizer.json", m_no_pre}, {"tok_byte_fallback.json", m_byte_fallback},
    {"tok_dropout.json", m_dropout}, {"tok_unk_token.json", m_unk}, {"tok_version.json", m_version},
};
#define N_MUT (int)(sizeof mutations / sizeof mutations[0])

static void write_bad_tokenizers(const char *dir) {
    const char *texts[] = {"the quick brown fox jumps over the lazy dog, the end. quick quick"};
    Tokenizer *t = tok_train(texts, 1, 290);
    char *valid = xasprintf("%s/tok_valid.json", dir);
    tok_save(valid, t);
    tok_free(t);
    for (int i = 0; i < N_MUT; i++) {
        Json *root = json_load(valid);
        mutations[i].fn(root);
        char *p = xasprintf("%s/%s", dir, mutations[i].name);
        json_save(p, root);
        json_free(root);
        free(p);
    }
    char *p = xasprintf("%s/tok_not_json.json", dir);
    write_file_atomic(p, "{\"version\": \"1.0\",", 18);
    free(p);
    p = xasprintf("%s/tok_array.json", dir);
    write_file_atomic(p, "[1, 2, 3]\n", 10);
    free(p);
    char *good = xasprintf("%s/good_tokenizer.json", dir);
    rename(valid, good);        /* kept: the end-to-end test checks it is accepted */
    free(good);
    free(valid);
}

static void load_tok(const char *path) { tok_free(tok_load(path)); }

static int run_child(void (*fn)(const char *), const char *path, char *err, size_t errlen) {
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
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    size_t n = 0;
    FILE *f = fopen(errfile, "rb");
    if (f) { n = fread(err, 1, errlen - 1, f); fclose(f); }
    err[n] = 0;
    free(errfile);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 256 + WTERMSIG(st);
}

static int one_line_naming(const char *err, const char *path) {
    char *prefix = xasprintf("pulse: %s: ", path);
    size_t n = strlen(err);
    int ok = strncmp(err, prefix, strlen(prefix)) == 0 && n > strlen(prefix) && err[n - 1] == '\n' && strchr(err, '\n') == err + n - 1;
    free(prefix);
    return ok;
}

static void test_refusals(void) {
    write_bad_tokenizers(tmpdir);
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "tok_", 4) != 0) continue;   /* good_tokenizer.json is not one */
        char *p = tpath(e->d_name), err[2048];
        int rc = run_child(load_tok, p, err, sizeof err);
        TEST(rc == 2, "%s: exit status %d, want 2 (%s)", e->d_name, rc, err);
        TEST(one_line_naming(err, p), "%s: not one line naming the file: %s", e->d_name, err);
        if (getenv("TEST_TOK_VERBOSE")) printf("  %-36s %s", e->d_name, err);
        count++;
        free(p);
    }
    closedir(d);
    TEST(count == N_MUT + 2, "every malformed tokenizer class ran (%d)", count);
    char *p = tpath("missing_tokenizer.json"), err[2048];
    TEST(run_child(load_tok, p, err, sizeof err) == 2 && one_line_naming(err, p), "missing tokenizer.json refused");
    free(p);
}

/* Random bit flips and truncations of a small tokenizer.json: accept or refuse, never crash. */
static void test_fuzz_load(void) {
    const char *texts[] = {"ab ab abc <image> cab"};
    Tokenizer *t = tok_train(texts, 1, 266);
    char *p = tpath("fz_valid.json"), *q = tpath("fz.json");
    tok_save(p, t);
    tok_free(t);
    size_t n;
    char *orig = read_file(p, &n), *m = xmalloc(n);
    Rng r;
    rng_seed(&r, 5);
    int crashes = 0, iters = 60;
    if (getenv("PULSE_FUZZ")) iters *= atoi(getenv("PULSE_FUZZ")) > 0 ? atoi(getenv("PULSE_FUZZ")) : 1;
    for (int it = 0; it < iters; it++) {
        memcpy(m, orig, n);
        size_t len = n;
        int flips = 1 + (int)rng_below(&r, 3);
        for (int f = 0; f < flips; f++) m[rng_below(&r, (uint32_t)n)] ^= (char)(1 << rng_below(&r, 8));
        if (rng_below(&r, 4) == 0) len = rng_below(&r, (uint32_t)n);
        FILE *f = fopen(q, "wb");
        CHECK(f && fwrite(m, 1, len, f) == len && fclose(f) == 0);
        char err[2048];
        int rc = run_child(load_tok, q, err, sizeof err);
        if (rc != 0 && rc != 2) { crashes++; printf("fuzz tokenizer.json #%d: status %d: %s\n", it, rc, err); }
    }
    TEST(crashes == 0, "tokenizer.json fuzz: %d crashes", crashes);
    free(orig); free(m); free(p); free(q);
}

static void test_speed_corpus(void) {
    /* ~300 KB in one text: the incremental trainer must handle it quickly (no timing
     * assertion here; 2 MB trains in about 0.05 s at -O2) */
    int n = 5000;
    char **lines = make_corpus(n, 3);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += strlen(lines[i]) + 1;
    char *big = xmalloc(total + 1), *p = big;
    for (int i = 0; i < n; i++) { size_t k = strlen(lines[i]); memcpy(p, lines[i], k); p += k; *p++ = '\n'; }
    *p = 0;
    const char *texts[1] = {big};
    Tokenizer *t = tok_train(texts, 1, 1024);
    TEST(tok_vocab_size(t) == 1024, "trained on %zu bytes to V=1024", total);
    int *ids = xmalloc((total + 1) * sizeof *ids);
    int k = tok_encode(t, big, ids, (int)total + 1);
    char *d = tok_decode(t, ids, k, 0);
    TEST(k > 0 && strcmp(d, big) == 0, "the whole corpus round-trips (%d ids)", k);
    free(d); free(ids); free(big);
    tok_free(t);
    free_corpus(lines, n);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-bad") == 0) {
        make_dirs(argv[2]);
        write_bad_tokenizers(argv[2]);
        return 0;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s/pulse_test_tok_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(tmpdir));
    test_pretokenize();
    test_train_small();
    test_train_deterministic();
    Tokenizer *t = corpus_tokenizer(600);
    test_roundtrip(t);
    test_chat(t);
    test_save_load(t);
    tok_free(t);
    test_refusals();
    test_fuzz_load();
    test_speed_corpus();
    remove_tree(tmpdir);
    return test_summary();
}
