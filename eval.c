/* eval.c: the evaluation driver of pulse: greedy decoding and teacher-forced scoring of
 * the world's benchmark items, every metric per item, aggregates per set, task and
 * modality, results.json / predictions.jsonl / timing.json, and `pulse eval`.
 *
 * Design
 * - The metric formulas live in metrics.c (pure functions, each matching its reference
 *   implementation); this file decides what to run through the model, runs it as fast
 *   as it can, and routes the numbers into the right aggregates.
 * - Items, not sets, are the unit of work. Every set (forget, test, retain, celebrity
 *   and its two groups, genbench, holdout) selects EvalItems; an item selected by several
 *   sets (the celebrity groups, or overlapping people lists) is evaluated once and counted
 *   in each set (Rec.sets is a bit mask). Prompts never depend on the set, so this is exact.
 * - Two kinds of model work, each batched over all items of every set at once:
 *   1. Greedy decoding (mc, cloze, gen): prompts sorted by merged length (image positions
 *      included) so that a batch pads little, prefilled together into a KV cache, then
 *      one token per live row per step; a row leaves the batch when it is finished.
 *      Finished means EOS, max_new tokens, the "ASSISTANT:" marker (MLLMU-Bench cuts the
 *      response there, so later tokens cannot matter) or, for multiple choice, a decided
 *      letter: MLLMU-Bench keeps only the first character of the stripped response, so
 *      decoding stops at the first complete non-space character. That is the same
 *      prediction as decoding 50 tokens (byte-level decoding is prefix-stable), at ~1/20
 *      of the cost. eval_mc_decided() states the rule exactly.
 *   2. Teacher-forced scoring (mc_likelihood options, QA answers). An MC item's four
 *      options and its QA twin's six answers follow the same prompt (question + image),
 *      so each distinct prompt is prefilled once, its KV-cache row copied to one row per
 *      continuation, and the continuations teacher-forced with decode steps: ~3x fewer
 *      positions than scoring every sequence whole. --exact-scoring runs model_score on
 *      every sequence instead (same numbers to ~1e-6; tested). Per position: log p of the
 *      target, argmax (memorisation) and, for answers, the moments Min-K%++ needs.
 * - Per-item values go into Rec.v[metric] (NAN = not computed); aggregation is a pass over
 *   the records per (set, metric, modality). The per-item truth ratios and membership
 *   scores of the forget, test and holdout sets are kept in results.json ("per_item",
 *   keyed "ID/attribute/modality"), so a later evaluation can use these results as its
 *   oracle: forget quality (KS test) and PrivLeak match the items by key.
 * - Few-shot (option, seeded): K text-only examples of the task, drawn with the seed
 *   from the holdout people (never trained, so the examples teach the answer format and
 *   leak no evaluated fact), prepended to the user turn of every mc and cloze prompt; the
 *   example items are left out of the holdout set's scores. MLLMU-Bench draws unseeded
 *   examples from the evaluated people instead (docs/results.md).
 * - results.json is deterministic for a given model, world and options (no timings:
 *   those go to timing.json), and written atomically.
 */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "metrics.h"

#define RESULTS_FORMAT "pulse-eval"
#define RESULTS_VERSION 1
#define MARKER "ASSISTANT:"         /* MLLMU-Bench's response marker */
#define SCORE_CHUNK_JOBS 128        /* teacher-forced sequences per model_score call */

static const char *const set_names[EVAL_N_SETS] = {
    "forget", "test", "retain", "celebrity", "celebrity_forget", "celebrity_retain", "genbench", "holdout"};
enum { MOD_IMG, MOD_TXT, MOD_ALL, N_MODS };
static const char *const mod_names[N_MODS] = {"image_text", "text_only", "all"};

const char *eval_set_name(EvalSet s) { CHECK(s >= 0 && s < EVAL_N_SETS); return set_names[s]; }

/* Per-item metrics. Accuracies are stored as 0/1 and reported in %. */
enum {
    M_MC, M_MCLL, M_CLOZE, M_ROUGE1, M_ROUGE2, M_ROUGEL, M_ROUGEL_RECALL, M_BLEU,
    M_NLL, M_PROB, M_PROB_OPTIONS, M_TRUTH_RATIO, M_EM, M_ES, M_MINK, M_MINKPP, N_METRICS
};
typedef struct MetricInfo {
    const char *name;           /* key in results.json */
    int percent;                /* accuracy: x 100 */
    int per_set;                /* aggregated under sets.<set> (MIA scores are not) */
} MetricInfo;
static const MetricInfo minfo[N_METRICS] = {
    {"mc", 1, 1}, {"mc_likelihood", 1, 1}, {"cloze", 1, 1}, {"rouge1", 0, 1}, {"rouge2", 0, 1},
    {"rougeL", 0, 1}, {"rougeL_recall", 0, 1}, {"bleu", 0, 1}, {"nll", 0, 1}, {"prob", 0, 1},
    {"prob_options", 0, 1}, {"truth_ratio", 0, 1}, {"exact_memorization", 0, 1},
    {"extraction_strength", 0, 1}, {"min_k", 0, 0}, {"min_k_pp", 0, 0}};

/* The membership-inference scores (higher = less likely a member), as metric ids. */
enum { N_MIA = 3 };
static const int mia_metric[N_MIA] = {M_NLL, M_MINK, M_MINKPP};
static const char *const mia_names[N_MIA] = {"loss", "min_k", "min_k_pp"};

static const char *const task_flag_names[5] = {"mc", "mc_likelihood", "cloze", "gen", "prob"};

/* ----------------------------------------------------------------------------
 * Options and parsing */

EvalOptions eval_options_default(void) {
    EvalOptions o;
    memset(&o, 0, sizeof o);
    o.sets = EVAL_SETS_ALL;
    o.tasks = EVAL_TASKS_ALL;
    o.max_new = 50;
    o.mink_k = 0.4;
    o.batch = 64;
    o.predictions = 1;
    return o;
}

/* Splits a comma list in place-free fashion: calls fn(item, len, ctx) per non-empty item. */
static void for_each_item(const char *list, void (*fn)(const char *, size_t, void *), void *ctx) {
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n) fn(p, n, ctx);
        p += n + (e ? 1 : 0);
    }
}

static int name_is(const char *s, size_t n, const char *name) { return strlen(name) == n && memcmp(s, name, n) == 0; }

static void parse_set(const char *s, size_t n, void *ctx) {
    unsigned *m = ctx;
    if (name_is(s, n, "all")) { *m |= EVAL_SETS_ALL; return; }
    for (int i = 0; i < EVAL_N_SETS; i++)
        if (name_is(s, n, set_names[i])) { *m |= EVAL_SET_BIT(i); return; }
    die_input(NULL, "eval: unknown set '%.*s' (forget, test, retain, celebrity, celebrity_forget, "
              "celebrity_retain, genbench, holdout, all)", (int)n, s);
}

unsigned eval_parse_sets(const char *list) {
    unsigned m = 0;
    for_each_item(list, parse_set, &m);
    if (!m) die_input(NULL, "eval: --sets '%s' names no set", list);
    return m;
}

static void parse_task(const char *s, size_t n, void *ctx) {
    unsigned *m = ctx;
    if (name_is(s, n, "all")) { *m |= EVAL_TASKS_ALL; return; }
    if (name_is(s, n, "light")) { *m |= EVAL_TASKS_LIGHT; return; }
    for (int i = 0; i < 5; i++)
        if (name_is(s, n, task_flag_names[i])) { *m |= 1u << i; return; }
    die_input(NULL, "eval: unknown task '%.*s' (mc, mc_likelihood, cloze, gen, prob, all, light)", (int)n, s);
}

unsigned eval_parse_tasks(const char *list) {
    unsigned m = 0;
    for_each_item(list, parse_task, &m);
    if (!m) die_input(NULL, "eval: --tasks '%s' names no task", list);
    return m;
}

Json *eval_load_results(const char *path) {
    struct stat st;
    char *p = stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? xasprintf("%s/results.json", path) : xstrdup(path);
    Json *j = json_load(p);
    const Json *f = json_get(j, "format");
    if (!f || f->type != JSON_STRING || strcmp(f->string, RESULTS_FORMAT) != 0)
        die_input(p, "not the results.json of pulse eval (format is not \"%s\")", RESULTS_FORMAT);
    free(p);
    return j;
}

/* ----------------------------------------------------------------------------
 * The MLLMU-Bench response and the multiple-choice early stop */

char *eval_response(const char *generated, int cloze) {
    char *full = xasprintf(MARKER "%s", generated);
    char *r = mllmu_response(full, cloze);
    free(full);
    return r;
}

/* Bytes of the UTF-8 sequence a lead byte starts (1 for ASCII and for invalid bytes, which
 * decode to one replacement character). */
static int utf8_seq_len(unsigned char c) {
    if (c < 0xC2) return 1;
    if (c < 0xE0) return 2;
    if (c < 0xF0) return 3;
    if (c < 0xF5) return 4;
    return 1;
}

int eval_mc_decided(const char *text, size_t n) {
    size_t i = 0;
    for (;;) {
        if (i >= n) return 0;                       /* only whitespace so far */
        if (i + (size_t)utf8_seq_len((unsigned char)text[i]) > n) return 0;  /* incomplete char */
        char tmp[8] = {0};                          /* py_space_len wants a terminated string */
        memcpy(tmp, text + i, n - i < 4 ? n - i : 4);
        int k = py_space_len(tmp);
        if (k == 0) break;
        i += (size_t)k;
    }
    /* The first non-space character is complete. A prefix of "ASSISTANT:" may still turn
     * into the marker, which would cut the response to nothing. */
    size_t r = n - i, m = strlen(MARKER);
    if (r < m && memcmp(text + i, MARKER, r) == 0) return 0;
    return 1;
}

/* ----------------------------------------------------------------------------
 * Evaluation context */

enum { SLOT_ANSWER = 0, SLOT_PARA = 1, SLOT_PERT = 2 };     /* QA scoring slots */

typedef struct Rec {
    const EvalItem *e;
    unsigned sets;              /* EVAL_SET_BIT mask of the sets it counts in */
    char *prompt;               /* the user turn given to the model (few-shot block included) */
    /* greedy decoding */
    int gen_done;
    int n_gen, eos;             /* generated tokens (EOS excluded), stopped by EOS */
    char *generated;            /* decoded generation, special tokens skipped */
    char *response;             /* MLLMU-Bench response */
    char pred;                  /* MC letter, 0 = none */
    /* teacher forcing */
    double opt_ll[DATA_MC_OPTIONS]; /* mean log-prob per option */
    int ll_pred;                /* option chosen by likelihood */
    double *slot_nll;           /* QA: mean NLL of answer, paraphrase, perturbed answers */
    double v[N_METRICS];        /* per-item values; NAN = not computed */
} Rec;

typedef struct Ctx {
    Model *m;
    const Tokenizer *tok;
    const World *w;
    unsigned tasks;
    int max_new, batch;
    double mink_k;
    int quiet;
    int exact;                  /* score with model_score (full forward) instead of shared prompts */
    Rec *rec;
    int n_rec, cap_rec;
    int *rec_of;                /* [w->n_eval] record index or -1 */
    uint8_t *excluded;          /* [w->n_eval] few-shot examples: never scored */
    char *fewshot[N_TASKS];     /* in-context block per task (NULL: none) */
    float **pix;                /* [w->n_images] lazily computed pixels */
    char **tokbytes;            /* [V] decoded bytes of each id (special ids: "") */
    size_t *toklen;
    EvalStats st;
    Progress pr;
    long work_done, work_total;
} Ctx;

static void ctx_init(Ctx *c, Model *m, const Tokenizer *tok, const World *w, unsigned tasks, int max_new,
                     int batch, double mink_k, int quiet) {
    memset(c, 0, sizeof *c);
    c->m = m; c->tok = tok; c->w = w; c->tasks = tasks;
    c->max_new = max_new; c->batch = batch > 0 ? batch : 64; c->mink_k = mink_k; c->quiet = quiet;
    c->rec_of = xmalloc((size_t)(w->n_eval ? w->n_eval : 1) * sizeof *c->rec_of);
    for (int i = 0; i < w->n_eval; i++) c->rec_of[i] = -1;
    c->excluded = xcalloc((size_t)(w->n_eval ? w->n_eval : 1), 1);
    c->pix = xcalloc((size_t)(w->n_images ? w->n_images : 1), sizeof *c->pix);
    int V = m->cfg.vocab_size;
    CHECKF(tok_vocab_size(tok) <= V, "tokenizer has %d ids, the model %d", tok_vocab_size(tok), V);
    c->tokbytes = xcalloc((size_t)V, sizeof *c->tokbytes);
    c->toklen = xcalloc((size_t)V, sizeof *c->toklen);
    for (int t = 0; t < V; t++) {
        if (t < tok_vocab_size(tok)) c->tokbytes[t] = tok_decode_n(tok, &t, 1, 1, &c->toklen[t]);
        else c->tokbytes[t] = xstrdup("");          /* ids past the tokenizer decode to nothing */
    }
}

static void ctx_free(Ctx *c) {
    for (int i = 0; i < c->n_rec; i++) {
        Rec *r = &c->rec[i];
        free(r->prompt); free(r->generated); free(r->response); free(r->slot_nll);
    }
    free(c->rec); free(c->rec_of); free(c->excluded);
    for (int t = 0; t < N_TASKS; t++) free(c->fewshot[t]);
    for (int i = 0; i < c->w->n_images; i++) free(c->pix[i]);
    free(c->pix);
    for (int t = 0; t < c->m->cfg.vocab_size; t++) free(c->tokbytes[t]);
    free(c->tokbytes); free(c->toklen);
    memset(c, 0, sizeof *c);
}

static const float *ctx_pixels(Ctx *c, int image) {
    if (image < 0) return NULL;
    CHECK(image < c->w->n_images);
    if (!c->pix[image]) {
        c->pix[image] = xmalloc(3 * DATA_IMAGE_SIZE * DATA_IMAGE_SIZE * sizeof(float));
        world_image_pixels(c->w, image, NULL, c->pix[image]);
    }
    return c->pix[image];
}

/* Which tasks of the world an EVAL_* mask needs. */
static unsigned world_tasks(unsigned tasks) {
    unsigned t = 0;
    if (tasks & (EVAL_MC | EVAL_MC_LIKELIHOOD)) t |= TASK_BIT(TASK_MC);
    if (tasks & EVAL_CLOZE) t |= TASK_BIT(TASK_CLOZE);
    if (tasks & EVAL_GEN) t |= TASK_BIT(TASK_GEN);
    if (tasks & EVAL_PROB) t |= TASK_BIT(TASK_QA);
    return t;
}

/* Adds the items of one source about people to set s (deduplicated by item). */
static void ctx_add(Ctx *c, EvalSet s, EvalSource src, const int *people, int n_people) {
    unsigned wt = world_tasks(c->tasks);
    if (!wt) return;
    if (src != EVAL_GENBENCH && n_people == 0) return;   /* an empty list selects nobody */
    int n;
    const EvalItem **items = world_eval_select(c->w, src, people, n_people, wt, MOD_ANY, &n);
    for (int i = 0; i < n; i++) {
        int idx = (int)(items[i] - c->w->eval);
        CHECK(idx >= 0 && idx < c->w->n_eval);
        if (c->excluded[idx]) continue;
        if (c->rec_of[idx] < 0) {
            if (c->n_rec == c->cap_rec) {
                c->cap_rec = c->cap_rec ? 2 * c->cap_rec : 1024;
                c->rec = xrealloc(c->rec, (size_t)c->cap_rec * sizeof *c->rec);
            }
            Rec *r = &c->rec[c->n_rec];
            memset(r, 0, sizeof *r);
            r->e = items[i];
            for (int k = 0; k < N_METRICS; k++) r->v[k] = NAN;
            const char *fs = c->fewshot[items[i]->task];
            r->prompt = fs ? xasprintf("%s%s", fs, items[i]->prompt) : xstrdup(items[i]->prompt);
            c->rec_of[idx] = c->n_rec++;
        }
        c->rec[c->rec_of[idx]].sets |= EVAL_SET_BIT(s);
    }
    free(items);
}

/* The prompt text with its trailing instruction line removed (few-shot examples). */
static char *strip_instruction(const char *prompt) {
    const char *nl = strrchr(prompt, '\n');
    size_t n = nl ? (size_t)(nl - prompt) : strlen(prompt);
    char *s = xmalloc(n + 1);
    memcpy(s, prompt, n); s[n] = 0;
    return s;
}

/* K text-only examples of each generated-answer task (mc, cloze) drawn with the seed from
 * the holdout people's items; the examples are excluded from scoring. */
static void ctx_fewshot(Ctx *c, int k, uint64_t seed, const int *holdout, int n_holdout) {
    static const Task fs_tasks[2] = {TASK_MC, TASK_CLOZE};
    for (int t = 0; t < 2; t++) {
        int n;
        const EvalItem **pool = world_eval_select(c->w, EVAL_PROFILE, holdout, n_holdout,
                                                  TASK_BIT(fs_tasks[t]), MOD_TEXT, &n);
        if (n_holdout == 0) n = 0;
        if (n < k)
            die_input(NULL, "eval: --few-shot %d needs %d text-only %s items of holdout people, the world has %d",
                      k, k, task_name(fs_tasks[t]), n);
        int *ord = xmalloc((size_t)(n ? n : 1) * sizeof *ord);
        for (int i = 0; i < n; i++) ord[i] = i;
        Rng r;
        char tag[64];
        snprintf(tag, sizeof tag, "few-shot/%s", task_name(fs_tasks[t]));
        rng_derive(&r, seed, tag);
        rng_shuffle_int(&r, ord, n);
        Text block = {0};
        text_reserve(&block, 255);
        for (int i = 0; i < k; i++) {
            const EvalItem *e = pool[ord[i]];
            c->excluded[e - c->w->eval] = 1;
            char *q = strip_instruction(e->prompt);
            text_printf(&block, "%s\nAnswer: %s\n\n", q, e->answer);
            free(q);
        }
        c->fewshot[fs_tasks[t]] = block.p;
        free(ord); free(pool);
    }
}

/* Token ids of the chat form of (question, answer); *n ids, *start = first answer id. */
static int *encode_chat(const Tokenizer *tok, const char *q, int has_image, const char *a, int *n, int *start) {
    int max = (int)(strlen(q) + (a ? strlen(a) : 0)) + 64;
    int *ids = xmalloc((size_t)max * sizeof *ids);
    int k = tok_encode_chat(tok, q, has_image, a, ids, max, start);
    CHECKF(k > 0, "tok_encode_chat: %d ids do not fit in %d", k, max);
    *n = k;
    return ids;
}

static int merged_len(const Ctx *c, int n, int has_image) { return n + (has_image ? c->m->n_patches - 1 : 0); }

static void work_tick(Ctx *c, long k) {
    c->work_done += k;
    if (!c->quiet) progress_update(&c->pr, c->work_done, NULL);
}

/* ----------------------------------------------------------------------------
 * Greedy decoding with early stops */

typedef struct GenJob {
    int rec;
    int *ids, n, merged;
    const float *pix;
    int mc;                     /* multiple choice: stop once the letter is decided */
} GenJob;

typedef struct GenRow {         /* one row of a decoding batch */
    int *out, n;                /* generated ids (EOS excluded) */
    Text text;                  /* their bytes so far, special ids skipped */
    int eos;                    /* stopped by EOS */
} GenRow;

/* Orders jobs by merged length, then by record (a total order: deterministic batches). */
static int cmp_genjob(const void *a, const void *b) {
    const GenJob *x = a, *y = b;
    if (x->merged != y->merged) return (x->merged > y->merged) - (x->merged < y->merged);
    return (x->rec > y->rec) - (x->rec < y->rec);
}

/* Takes token t for row r; returns 1 if the row goes on decoding. */
static int gen_take(Ctx *c, const GenJob *j, GenRow *r, int t) {
    if (t == c->m->cfg.eos_token_id) { r->eos = 1; return 0; }
    r->out[r->n++] = t;
    c->st.gen_tokens++;
    text_putn(&r->text, c->tokbytes[t], c->toklen[t]);
    if (r->n >= c->max_new) return 0;
    if (j->mc) return !eval_mc_decided(r->text.p, r->text.n);
    /* the response ends at the next marker: nothing after it can matter */
    return memmem(r->text.p, r->text.n, MARKER, strlen(MARKER)) == NULL;
}

static void decode_batch(Ctx *c, GenJob *jobs, int nb) {
    const LlavaConfig *cfg = &c->m->cfg;
    int V = cfg->vocab_size, maxT = 1, maxM = 1;
    for (int i = 0; i < nb; i++) {
        if (jobs[i].n > maxT) maxT = jobs[i].n;
        if (jobs[i].merged > maxM) maxM = jobs[i].merged;
    }
    Batch bt;
    batch_init(&bt, nb, maxT, cfg->pad_token_id);
    for (int i = 0; i < nb; i++) batch_add(&bt, jobs[i].ids, jobs[i].n, jobs[i].n, jobs[i].pix);
    KvCache kv;
    kv_init(&kv, cfg, nb, maxM + c->max_new);
    float *logits = xmalloc((size_t)nb * V * sizeof *logits);
    int *rows = xmalloc((size_t)nb * sizeof *rows), *tok = xmalloc((size_t)nb * sizeof *tok);
    GenRow *g = xcalloc((size_t)nb, sizeof *g);
    model_prefill(c->m, &kv, &bt, logits);
    int active = 0;
    for (int i = 0; i < nb; i++) {
        g[i].out = xmalloc((size_t)(c->max_new > 0 ? c->max_new : 1) * sizeof(int));
        text_reserve(&g[i].text, 63);                /* "" when nothing is generated */
        if (c->max_new <= 0) continue;
        int t = argmax_row(logits + (size_t)i * V, V);
        if (gen_take(c, &jobs[i], &g[i], t)) { rows[active] = i; tok[active++] = t; }
    }
    /* one token per live row per step; finished rows leave the batch */
    while (active > 0) {
        model_decode_step(c->m, &kv, rows, tok, active, logits);
        int k = 0;
        for (int a = 0; a < active; a++) {
            int i = rows[a], t = argmax_row(logits + (size_t)a * V, V);
            if (gen_take(c, &jobs[i], &g[i], t)) { rows[k] = i; tok[k++] = t; }
        }
        active = k;
    }
    for (int i = 0; i < nb; i++) {
        Rec *r = &c->rec[jobs[i].rec];
        r->gen_done = 1;
        r->n_gen = g[i].n;
        r->eos = g[i].eos;
        r->generated = g[i].text.p;                 /* == tok_decode(out, n, skip_special) */
        free(g[i].out);
    }
    free(g); free(logits); free(rows); free(tok);
    kv_free(&kv);
    batch_free(&bt);
}

static void run_generation(Ctx *c, GenJob *jobs, int n) {
    if (n == 0) return;
    double t0 = now_seconds();
    qsort(jobs, (size_t)n, sizeof *jobs, cmp_genjob);
    for (int i0 = 0; i0 < n; i0 += c->batch) {
        int nb = n - i0 < c->batch ? n - i0 : c->batch;
        decode_batch(c, jobs + i0, nb);
        work_tick(c, nb);
    }
    c->st.gen_sequences += n;
    for (int i = 0; i < n; i++) c->st.score_tokens += jobs[i].merged;
    c->st.gen_seconds += now_seconds() - t0;
}

/* ----------------------------------------------------------------------------
 * Teacher-forced scoring
 *
 * Two paths compute the same numbers. The exact path runs every sequence through
 * model_score (the full forward). The shared path (default) uses that many sequences
 * share their prompt: an MC item's four options and its QA twin's six answers all follow
 * the same question and image. Each distinct prompt is prefilled once into a KV cache,
 * its cache row is copied to one row per continuation, and the continuations are
 * teacher-forced one token per step with model_decode_step (KV-cache decoding equals the
 * full forward to ~1e-6, a model contract). This runs ~3x fewer positions. */

enum { JOB_OPTION, JOB_QA };

typedef struct ScoreJob {
    int rec, kind, slot;        /* JOB_OPTION: slot = option; JOB_QA: SLOT_* */
    int *ids, n, start, merged; /* prompt ids[0..start), scored ids[start..n) */
    int image;                  /* world image index or -1 (prompt identity) */
    const float *pix;
} ScoreJob;

/* Per-position outputs of one scored continuation (answer slot only keeps them all). */
typedef struct TokenStats {
    double *lp, *mu, *sigma;    /* log p(target), Min-K%++ moments (sigma clamped as OU) */
    int *am;                    /* argmax prediction */
} TokenStats;

static int want_moments(const ScoreJob *j) { return j->kind == JOB_QA && j->slot == SLOT_ANSWER; }

/* The answer's memorisation and membership scores, over the answer tokens without the
 * final EOS prediction (open-unlearning's tokenwise_logprobs: labelled positions minus the
 * last one). T = scored tokens including EOS. */
static void answer_scores(Ctx *c, Rec *r, const ScoreJob *j, const TokenStats *ts, int T) {
    int Tm = T - 1;
    CHECKF(Tm >= 1, "QA answer of %d tokens", T);
    const int *target = j->ids + j->start;
    r->v[M_EM] = exact_memorization(ts->am, target, Tm);
    r->v[M_ES] = extraction_strength(ts->am, target, Tm);
    r->v[M_MINK] = mia_min_k(ts->lp, Tm, c->mink_k);
    r->v[M_MINKPP] = mia_min_k_pp(ts->lp, ts->mu, ts->sigma, Tm, c->mink_k);
}

/* Routes one finished continuation into its record. */
static void job_done(Ctx *c, const ScoreJob *j, double sum, int T, const TokenStats *ts) {
    Rec *r = &c->rec[j->rec];
    CHECK(T > 0);
    double mean = sum / T;                      /* mean log-prob per token */
    if (j->kind == JOB_OPTION) r->opt_ll[j->slot] = mean;
    else {
        r->slot_nll[j->slot] = -mean;
        if (j->slot == SLOT_ANSWER) answer_scores(c, r, j, ts, T);
    }
}

static int cmp_scorejob(const void *a, const void *b) {
    const ScoreJob *x = a, *y = b;
    if (x->merged != y->merged) return (x->merged > y->merged) - (x->merged < y->merged);
    if (x->rec != y->rec) return (x->rec > y->rec) - (x->rec < y->rec);
    if (x->kind != y->kind) return x->kind - y->kind;
    return x->slot - y->slot;
}

/* Exact path: model_score on every sequence, sorted by length, moments only where needed. */
static void score_exact(Ctx *c, ScoreJob *jobs, int n) {
    qsort(jobs, (size_t)n, sizeof *jobs, cmp_scorejob);
    ScoreItem *items = xmalloc((size_t)SCORE_CHUNK_JOBS * sizeof *items);
    ScoreResult *res = xmalloc((size_t)SCORE_CHUNK_JOBS * sizeof *res);
    int *idx = xmalloc((size_t)SCORE_CHUNK_JOBS * sizeof *idx);
    for (int pass = 0; pass < 2; pass++) {          /* pass 0: with moments */
        int i = 0;
        while (i < n) {
            int nb = 0;
            for (; i < n && nb < SCORE_CHUNK_JOBS; i++) {
                if (want_moments(&jobs[i]) != (pass == 0)) continue;
                const ScoreJob *j = &jobs[i];
                items[nb] = (ScoreItem){j->ids, j->n, j->start, j->pix};
                idx[nb++] = i;
                c->st.score_tokens += j->merged;
            }
            if (nb == 0) break;
            model_score(c->m, items, nb, pass == 0 ? SCORE_MOMENTS : 0, res);
            for (int b = 0; b < nb; b++) {
                const ScoreJob *j = &jobs[idx[b]];
                TokenStats ts = {0};
                int T = res[b].n;
                if (pass == 0) {
                    ts.lp = xmalloc((size_t)T * sizeof(double)); ts.mu = xmalloc((size_t)T * sizeof(double));
                    ts.sigma = xmalloc((size_t)T * sizeof(double));
                    ts.am = res[b].argmax;
                    for (int t = 0; t < T; t++) {
                        double sd = res[b].sigma[t];
                        ts.lp[t] = res[b].logp[t];
                        ts.mu[t] = res[b].mu[t];
                        ts.sigma[t] = sd * sd < 1e-6 ? 1e-3 : sd;   /* OU: sigma^2 >= 1e-6 */
                    }
                }
                job_done(c, j, res[b].sum, T, &ts);
                free(ts.lp); free(ts.mu); free(ts.sigma);
                score_result_free(&res[b]);
            }
            work_tick(c, nb);
        }
    }
    free(items); free(res); free(idx);
}

/* Orders jobs by prompt identity (image, prompt ids), so equal prompts are adjacent. */
static int cmp_prompt_key(const ScoreJob *x, const ScoreJob *y) {
    if (x->image != y->image) return (x->image > y->image) - (x->image < y->image);
    if (x->start != y->start) return (x->start > y->start) - (x->start < y->start);
    return memcmp(x->ids, y->ids, (size_t)x->start * sizeof *x->ids);
}

static int cmp_prompt(const void *a, const void *b) {
    const ScoreJob *x = a, *y = b;
    int d = cmp_prompt_key(x, y);
    if (d) return d;
    if (x->rec != y->rec) return (x->rec > y->rec) - (x->rec < y->rec);
    if (x->kind != y->kind) return x->kind - y->kind;
    return x->slot - y->slot;
}

typedef struct PromptGroup {
    int first, n;               /* jobs[first .. first+n) share the prompt */
    int merged;                 /* merged prompt length */
} PromptGroup;

static int cmp_group(const void *a, const void *b) {
    const PromptGroup *x = a, *y = b;
    if (x->merged != y->merged) return (x->merged > y->merged) - (x->merged < y->merged);
    return (x->first > y->first) - (x->first < y->first);
}

#define SHARED_ROWS 128         /* continuations teacher-forced together */
#define SHARED_PROMPTS 64       /* prompts prefilled together */

/* Copies cache row src to row dst in every layer (and its length). Relies only on the
 * [L][B][...] order of model.h's KvCache: each (layer, row) owns kvd * cap consecutive
 * floats of k and of v, whatever their order inside. */
static void kv_copy_row(KvCache *kv, int dst, int src) {
    if (dst == src) return;
    size_t blk = (size_t)kv->kvd * kv->cap;
    for (int l = 0; l < kv->L; l++) {
        memcpy(kv->k + ((size_t)l * kv->B + dst) * blk, kv->k + ((size_t)l * kv->B + src) * blk, blk * sizeof(float));
        memcpy(kv->v + ((size_t)l * kv->B + dst) * blk, kv->v + ((size_t)l * kv->B + src) * blk, blk * sizeof(float));
    }
    kv->len[dst] = kv->len[src];
}

/* Scores the continuations of groups g[0..ng): one prefill per prompt, copied cache rows. */
static void score_groups(Ctx *c, const ScoreJob *jobs, const PromptGroup *g, int ng) {
    const LlavaConfig *cfg = &c->m->cfg;
    int V = cfg->vocab_size, R = 0, maxP = 1, maxPM = 1, maxC = 1;
    for (int k = 0; k < ng; k++) {
        R += g[k].n;
        const ScoreJob *j0 = &jobs[g[k].first];
        if (j0->start > maxP) maxP = j0->start;
        if (g[k].merged > maxPM) maxPM = g[k].merged;
        for (int i = 0; i < g[k].n; i++) {
            int T = jobs[g[k].first + i].n - jobs[g[k].first + i].start;
            if (T > maxC) maxC = T;
        }
    }
    /* 1. prefill the distinct prompts */
    Batch bt;
    batch_init(&bt, ng, maxP, cfg->pad_token_id);
    for (int k = 0; k < ng; k++) {
        const ScoreJob *j0 = &jobs[g[k].first];
        batch_add(&bt, j0->ids, j0->start, j0->start, j0->pix);
        c->st.score_tokens += g[k].merged;
    }
    /* Rows 0..ng-1 get the prompts; then each group's row is copied to its continuation
     * rows off..off+n-1. Going backwards, a source row g is never overwritten before it
     * is read: later groups only write rows >= their offset > g. */
    KvCache kr;
    kv_init(&kr, cfg, R, maxPM + maxC);
    float *logits0 = xmalloc((size_t)ng * V * sizeof(float)), *logits = xmalloc((size_t)R * V * sizeof(float));
    model_prefill(c->m, &kr, &bt, logits0);
    const ScoreJob **rj = xmalloc((size_t)R * sizeof *rj);
    int *rg = xmalloc((size_t)R * sizeof *rg), *off = xmalloc((size_t)ng * sizeof *off);
    for (int k = 0, r = 0; k < ng; k++) {
        off[k] = r;
        for (int i = 0; i < g[k].n; i++, r++) { rj[r] = &jobs[g[k].first + i]; rg[r] = k; }
    }
    for (int k = ng - 1; k >= 0; k--)
        for (int i = g[k].n - 1; i >= 0; i--) kv_copy_row(&kr, off[k] + i, k);
    free(off);
    /* 2. teacher-force: position t's logits come from the prompt (t = 0) or from feeding
     *    token t-1 */
    double *sum = xcalloc((size_t)R, sizeof *sum);
    TokenStats *ts = xcalloc((size_t)R, sizeof *ts);
    for (int r = 0; r < R; r++)
        if (want_moments(rj[r])) {
            int T = rj[r]->n - rj[r]->start;
            ts[r].lp = xmalloc((size_t)T * sizeof(double)); ts[r].mu = xmalloc((size_t)T * sizeof(double));
            ts[r].sigma = xmalloc((size_t)T * sizeof(double)); ts[r].am = xmalloc((size_t)T * sizeof(int));
        }
    int *rows = xmalloc((size_t)R * sizeof *rows), *tok = xmalloc((size_t)R * sizeof *tok);
    for (int t = 0; t < maxC; t++) {
        int na = 0;
        for (int r = 0; r < R; r++)
            if (rj[r]->n - rj[r]->start > t) { rows[na] = r; tok[na++] = t ? rj[r]->ids[rj[r]->start + t - 1] : 0; }
        if (t > 0) {
            model_decode_step(c->m, &kr, rows, tok, na, logits);
            c->st.score_tokens += na;
        }
        for (int a = 0; a < na; a++) {
            int r = rows[a], y = rj[r]->ids[rj[r]->start + t];
            const float *z = t ? logits + (size_t)a * V : logits0 + (size_t)rg[r] * V;
            double lp = logprob_at(z, V, y);
            sum[r] += lp;
            if (ts[r].lp) {
                ts[r].lp[t] = lp;
                ts[r].am[t] = argmax_row(z, V);
                minkpp_moments(z, V, &ts[r].mu[t], &ts[r].sigma[t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        job_done(c, rj[r], sum[r], rj[r]->n - rj[r]->start, &ts[r]);
        free(ts[r].lp); free(ts[r].mu); free(ts[r].sigma); free(ts[r].am);
    }
    free(ts); free(sum); free(rows); free(tok); free(rj); free(rg); free(logits0); free(logits);
    kv_free(&kr);
    batch_free(&bt);
}

/* Shared path: group the jobs by prompt, then batch groups of similar prompt length. */
static void score_shared(Ctx *c, ScoreJob *jobs, int n) {
    qsort(jobs, (size_t)n, sizeof *jobs, cmp_prompt);
    PromptGroup *g = xmalloc((size_t)n * sizeof *g);
    int ng = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || cmp_prompt_key(&jobs[i - 1], &jobs[i]) != 0) {
            int img = jobs[i].image >= 0;
            g[ng++] = (PromptGroup){i, 0, merged_len(c, jobs[i].start, img)};
        }
        g[ng - 1].n++;
    }
    qsort(g, (size_t)ng, sizeof *g, cmp_group);
    int k = 0;
    while (k < ng) {
        int k1 = k, rows = 0;
        while (k1 < ng && k1 - k < SHARED_PROMPTS && (rows == 0 || rows + g[k1].n <= SHARED_ROWS)) rows += g[k1++].n;
        score_groups(c, jobs, g + k, k1 - k);
        work_tick(c, rows);
        k = k1;
    }
    free(g);
}

static void run_scoring(Ctx *c, ScoreJob *jobs, int n) {
    if (n == 0) return;
    double t0 = now_seconds();
    if (c->exact) score_exact(c, jobs, n);
    else score_shared(c, jobs, n);
    c->st.score_sequences += n;
    c->st.score_seconds += now_seconds() - t0;
}

/* ----------------------------------------------------------------------------
 * Running everything, then the per-item metrics */

/* Builds every decoding and scoring job of the records, runs them, and turns the raw
 * outputs into per-item metrics (Rec.v). */
static void ctx_run(Ctx *c) {
    int ng = 0, ns = 0, cap_s = 0;
    GenJob *gj = xmalloc((size_t)(c->n_rec + 1) * sizeof *gj);
    ScoreJob *sj = NULL;
    for (int i = 0; i < c->n_rec; i++) {
        Rec *r = &c->rec[i];
        const EvalItem *e = r->e;
        int img = e->image >= 0;
        const float *pix = ctx_pixels(c, e->image);
        /* greedy decoding of the rendered prompt: mc (letter), cloze, gen */
        int gen = (e->task == TASK_MC && (c->tasks & EVAL_MC)) || (e->task == TASK_CLOZE && (c->tasks & EVAL_CLOZE)) ||
                  (e->task == TASK_GEN && (c->tasks & EVAL_GEN));
        if (gen) {
            GenJob *j = &gj[ng++];
            j->rec = i; j->pix = pix; j->mc = e->task == TASK_MC;
            j->ids = encode_chat(c->tok, r->prompt, img, NULL, &j->n, NULL);
            j->merged = merged_len(c, j->n, img);
        }
        /* teacher-forced continuations of the bare question: 4 options or 2 + m answers */
        int n_cont = 0;
        if (e->task == TASK_MC && (c->tasks & EVAL_MC_LIKELIHOOD)) n_cont = e->n_options;
        if (e->task == TASK_QA && (c->tasks & EVAL_PROB)) {
            CHECKF(e->paraphrased_answer && e->n_perturbed >= 1, "QA item without paraphrase or perturbed answers");
            n_cont = SLOT_PERT + e->n_perturbed;
            r->slot_nll = xmalloc((size_t)n_cont * sizeof *r->slot_nll);
        }
        for (int s = 0; s < n_cont; s++) {
            if (ns == cap_s) { cap_s = cap_s ? 2 * cap_s : 1024; sj = xrealloc(sj, (size_t)cap_s * sizeof *sj); }
            ScoreJob *j = &sj[ns++];
            j->rec = i; j->slot = s; j->pix = pix; j->image = e->image;
            if (e->task == TASK_MC) {
                /* each option as the answer to the stem, without EOS (lm-eval style): a
                 * person's option inside the trained answer sentence, genbench's bare */
                j->kind = JOB_OPTION;
                j->ids = encode_chat(c->tok, e->question, img, mc_option_answer(e, s), &j->n, &j->start);
                j->n--;                                  /* drop </s> */
            } else {
                /* answer + </s>: the EOS is part of the scored answer (OU label construction) */
                const char *ans = s == SLOT_ANSWER ? e->answer : s == SLOT_PARA ? e->paraphrased_answer
                                                                               : e->perturbed[s - SLOT_PERT];
                j->kind = JOB_QA;
                j->ids = encode_chat(c->tok, e->question, img, ans, &j->n, &j->start);
            }
            CHECK(j->n > j->start && j->start >= 1);
            j->merged = merged_len(c, j->n, img);
        }
    }
    c->work_total = ng + ns;
    c->work_done = 0;
    if (!c->quiet) progress_start(&c->pr, "eval", c->work_total);
    run_generation(c, gj, ng);
    run_scoring(c, sj, ns);
    if (!c->quiet) {
        char extra[96];
        snprintf(extra, sizeof extra, "(%ld generated tokens)", c->st.gen_tokens);
        progress_end(&c->pr, extra);
    }
    for (int i = 0; i < ng; i++) free(gj[i].ids);
    for (int i = 0; i < ns; i++) free(sj[i].ids);
    free(gj); free(sj);

    /* per-item metrics from the raw outputs (formulas: metrics.c, docs/metrics.md) */
    static const char letters[] = "ABCDEFGH";
    for (int i = 0; i < c->n_rec; i++) {
        Rec *r = &c->rec[i];
        const EvalItem *e = r->e;
        if (r->gen_done) r->response = eval_response(r->generated, e->task == TASK_CLOZE);
        if (e->task == TASK_MC) {
            char opts[DATA_MC_OPTIONS + 1];
            memcpy(opts, letters, (size_t)e->n_options);
            opts[e->n_options] = 0;
            if (r->gen_done) {
                r->pred = mc_letter(r->response, opts);
                r->v[M_MC] = r->pred != 0 && r->pred == letters[e->correct];
            }
            if (c->tasks & EVAL_MC_LIKELIHOOD) {
                r->ll_pred = mc_likelihood(r->opt_ll, e->n_options);
                r->v[M_MCLL] = r->ll_pred == e->correct;
            }
        } else if (e->task == TASK_CLOZE && r->gen_done) {
            r->v[M_CLOZE] = cloze_correct(r->response, e->answer);
        } else if (e->task == TASK_GEN && r->gen_done) {
            RougeScores rs = rouge_score(e->answer, r->response, 1);
            r->v[M_ROUGE1] = rs.rouge1.fmeasure;
            r->v[M_ROUGE2] = rs.rouge2.fmeasure;
            r->v[M_ROUGEL] = rs.rougeL.fmeasure;
            r->v[M_ROUGEL_RECALL] = rs.rougeL.recall;
            r->v[M_BLEU] = bleu_sentence(e->answer, r->response);
        } else if (e->task == TASK_QA && r->slot_nll) {
            /* slot_nll holds mean NLLs per token: P = exp(-mean NLL) is TOFU's
             * length-normalised probability */
            int m = e->n_perturbed;
            double nll = r->slot_nll[SLOT_ANSWER], p = exp(-nll);
            double *pert = r->slot_nll + SLOT_PERT, *pp = xmalloc((size_t)m * sizeof *pp);
            for (int k = 0; k < m; k++) pp[k] = exp(-pert[k]);
            r->v[M_NLL] = nll;                       /* also the LOSS membership score */
            r->v[M_PROB] = p;
            r->v[M_PROB_OPTIONS] = prob_with_options(p, pp, m);
            r->v[M_TRUTH_RATIO] = truth_ratio(r->slot_nll[SLOT_PARA], pert, m);
            free(pp);
        }
    }
    c->st.items += c->n_rec;
}

/* ----------------------------------------------------------------------------
 * Aggregation */

static int rec_mod(const Rec *r) { return r->e->image >= 0 ? MOD_IMG : MOD_TXT; }
static int in_mod(const Rec *r, int md) { return md == MOD_ALL || rec_mod(r) == md; }

/* Sets meant to be forgotten take open-unlearning's forget aggregator of the truth ratio
 * (mean min(R, 1/R): 1 = no preference for the true answer); the others take the retain
 * aggregator (mean max(0, 1 - R): 1 = the true answer always preferred). */
static int forget_like(int s) { return s == EVAL_SET_FORGET || s == EVAL_SET_TEST || s == EVAL_SET_CELEB_FORGET; }

/* Values of metric k over the records of set s in modality md; malloc'ed, count in *n. */
static double *collect(const Ctx *c, int s, int k, int md, int *n) {
    double *v = xmalloc((size_t)(c->n_rec ? c->n_rec : 1) * sizeof *v);
    int m = 0;
    for (int i = 0; i < c->n_rec; i++) {
        const Rec *r = &c->rec[i];
        if (!(r->sets & EVAL_SET_BIT(s)) || !in_mod(r, md) || isnan(r->v[k])) continue;
        v[m++] = r->v[k];
    }
    *n = m;
    return v;
}

static void jset_num(Json *o, const char *key, double x) {
    json_set(o, key, isfinite(x) ? json_new_number(x) : json_new_null());
}

static Json *jchild(Json *o, const char *key) {
    Json *c = json_get(o, key);
    if (!c) { c = json_new_object(); json_set(o, key, c); }
    return c;
}

/* sets.<set>.<metric>.<modality> = {"value", "n"} for every aggregate with n > 0. */
static Json *aggregate_sets(const Ctx *c, unsigned sets) {
    Json *js = json_new_object();
    for (int s = 0; s < EVAL_N_SETS; s++) {
        if (!(sets & EVAL_SET_BIT(s))) continue;
        Json *jset = json_new_object();
        json_set(js, set_names[s], jset);
        for (int k = 0; k < N_METRICS; k++) {
            if (!minfo[k].per_set) continue;
            for (int md = 0; md < N_MODS; md++) {
                int n;
                double *v = collect(c, s, k, md, &n);
                if (n > 0) {
                    Json *a = json_new_object();
                    if (k == M_TRUTH_RATIO) {
                        int fl = forget_like(s);
                        jset_num(a, "value", fl ? tr_closer_to_1_better(v, n) : tr_true_better(v, n));
                        json_set(a, "n", json_new_number(n));
                        json_set(a, "aggregator", json_new_string(fl ? "closer_to_1_better" : "true_better"));
                        jset_num(a, "mean", mean_of(v, n));
                    } else {
                        jset_num(a, "value", mean_of(v, n) * (minfo[k].percent ? 100.0 : 1.0));
                        json_set(a, "n", json_new_number(n));
                    }
                    json_set(jchild(jset, minfo[k].name), mod_names[md], a);
                }
                free(v);
            }
        }
    }
    return js;
}

/* genbench_categories.<category>.<mc|mc_likelihood> = {"value", "n"}: general capability
 * per question kind (count, shape, colour, position: image; fact: text), in order of first
 * appearance. NULL when genbench was not evaluated. */
static Json *aggregate_categories(const Ctx *c) {
    Json *j = NULL;
    static const int ks[2] = {M_MC, M_MCLL};
    for (int i = 0; i < c->n_rec; i++) {
        const char *cat = c->rec[i].e->category;
        if (!cat || !(c->rec[i].sets & EVAL_SET_BIT(EVAL_SET_GENBENCH))) continue;
        if (j && json_get(j, cat)) continue;
        Json *o = json_new_object();
        for (int q = 0; q < 2; q++) {
            MetricAgg a = {0};
            for (int r = i; r < c->n_rec; r++) {
                const Rec *rr = &c->rec[r];
                if (rr->e->category && strcmp(rr->e->category, cat) == 0 && !isnan(rr->v[ks[q]]) &&
                    (rr->sets & EVAL_SET_BIT(EVAL_SET_GENBENCH)))
                    agg_add(&a, rr->v[ks[q]]);
            }
            if (a.n == 0) continue;
            Json *v = json_new_object();
            jset_num(v, "value", agg_mean(&a) * 100.0);
            json_set(v, "n", json_new_number((double)a.n));
            json_set(o, minfo[ks[q]].name, v);
        }
        if (!j) j = json_new_object();
        json_set(j, cat, o);
    }
    return j;
}

/* Membership inference, forget (members) vs holdout (non-members): ROC AUC per score and
 * modality, open-unlearning orientation (1 = the forget set is far more likely). */
static Json *aggregate_mia(const Ctx *c) {
    Json *j = NULL;
    for (int q = 0; q < N_MIA; q++)
        for (int md = 0; md < N_MODS; md++) {
            int nf, nh;
            double *f = collect(c, EVAL_SET_FORGET, mia_metric[q], md, &nf);
            double *h = collect(c, EVAL_SET_HOLDOUT, mia_metric[q], md, &nh);
            if (nf > 0 && nh > 0) {
                if (!j) {
                    j = json_new_object();
                    jset_num(j, "k", c->mink_k);
                    json_set(j, "members", json_new_string("forget"));
                    json_set(j, "nonmembers", json_new_string("holdout"));
                }
                Json *a = json_new_object();
                jset_num(a, "auc", mia_auc(f, nf, h, nh));
                json_set(a, "n_forget", json_new_number(nf));
                json_set(a, "n_holdout", json_new_number(nh));
                json_set(jchild(j, mia_names[q]), mod_names[md], a);
            }
            free(f); free(h);
        }
    return j;
}

/* The key of a person item across evaluations: "ID/attribute/modality". */
static char *rec_key(const Ctx *c, const Rec *r) {
    const EvalItem *e = r->e;
    CHECK(e->person >= 0 && e->attr >= 0);
    return xasprintf("%d/%s/%s", c->w->people[e->person].id, c->w->attrs[e->attr].name, mod_names[rec_mod(r)]);
}

/* per_item.<set> = {"keys": [...], "truth_ratio": [...], "loss": [...], "min_k": [...],
 * "min_k_pp": [...]} for the sets an oracle comparison needs. */
static Json *per_item(const Ctx *c, unsigned sets) {
    static const int keep[3] = {EVAL_SET_FORGET, EVAL_SET_TEST, EVAL_SET_HOLDOUT};
    Json *j = NULL;
    for (int t = 0; t < 3; t++) {
        int s = keep[t];
        if (!(sets & EVAL_SET_BIT(s))) continue;
        Json *keys = json_new_array(), *tr = json_new_array(), *mia[N_MIA];
        for (int q = 0; q < N_MIA; q++) mia[q] = json_new_array();
        int n = 0;
        for (int i = 0; i < c->n_rec; i++) {
            const Rec *r = &c->rec[i];
            if (!(r->sets & EVAL_SET_BIT(s)) || isnan(r->v[M_TRUTH_RATIO])) continue;
            char *k = rec_key(c, r);
            json_push(keys, json_new_string(k));
            free(k);
            json_push(tr, isfinite(r->v[M_TRUTH_RATIO]) ? json_new_number(r->v[M_TRUTH_RATIO]) : json_new_null());
            for (int q = 0; q < N_MIA; q++) {
                double x = r->v[mia_metric[q]];
                json_push(mia[q], isfinite(x) ? json_new_number(x) : json_new_null());
            }
            n++;
        }
        if (n == 0) {
            json_free(keys); json_free(tr);
            for (int q = 0; q < N_MIA; q++) json_free(mia[q]);
            continue;
        }
        if (!j) j = json_new_object();
        Json *o = json_new_object();
        json_set(o, "keys", keys);
        json_set(o, "truth_ratio", tr);
        for (int q = 0; q < N_MIA; q++) json_set(o, mia_names[q], mia[q]);
        json_set(j, set_names[s], o);
    }
    return j;
}

/* One set of an oracle's per_item block, validated. */
typedef struct OracleSet {
    int n;
    const char **keys;
    double *val[1 + N_MIA];     /* truth_ratio, loss, min_k, min_k_pp */
} OracleSet;

static int oracle_set(const Json *oracle, const char *set, const char *path, OracleSet *os) {
    memset(os, 0, sizeof *os);
    const Json *pi = json_get(oracle, "per_item"), *s = pi ? json_get(pi, set) : NULL;
    if (!s) return 0;
    const Json *keys = json_get(s, "keys");
    if (!keys || keys->type != JSON_ARRAY) die_input(path, "per_item.%s.keys is not an array", set);
    os->n = (int)keys->len;
    os->keys = xmalloc((size_t)(os->n ? os->n : 1) * sizeof *os->keys);
    for (int i = 0; i < os->n; i++) {
        if (keys->items[i]->type != JSON_STRING) die_input(path, "per_item.%s.keys[%d] is not a string", set, i);
        os->keys[i] = keys->items[i]->string;
    }
    static const char *const names[1 + N_MIA] = {"truth_ratio", "loss", "min_k", "min_k_pp"};
    for (int q = 0; q < 1 + N_MIA; q++) {
        const Json *a = json_get(s, names[q]);
        if (!a || a->type != JSON_ARRAY || (int)a->len != os->n)
            die_input(path, "per_item.%s.%s is not an array of %d values", set, names[q], os->n);
        os->val[q] = xmalloc((size_t)(os->n ? os->n : 1) * sizeof(double));
        for (int i = 0; i < os->n; i++) {
            const Json *x = a->items[i];
            if (x->type == JSON_NULL) os->val[q][i] = NAN;
            else if (x->type == JSON_NUMBER) os->val[q][i] = x->number;
            else die_input(path, "per_item.%s.%s[%d] is not a number", set, names[q], i);
        }
    }
    return 1;
}

static void oracle_set_free(OracleSet *os) {
    free(os->keys);
    for (int q = 0; q < 1 + N_MIA; q++) free(os->val[q]);
    memset(os, 0, sizeof *os);
}

/* Pairs the records of set s with the oracle's items of the same key: mine[i] and
 * theirs[i] are the values of metric slot q (0 truth ratio, 1.. MIA) of matched item i in
 * modality md. Returns the count. */
static int match_oracle(const Ctx *c, int s, const OracleSet *os, int q, int md, double *mine, double *theirs) {
    int n = 0;
    int k = q == 0 ? M_TRUTH_RATIO : mia_metric[q - 1];
    for (int i = 0; i < c->n_rec; i++) {
        const Rec *r = &c->rec[i];
        if (!(r->sets & EVAL_SET_BIT(s)) || !in_mod(r, md) || isnan(r->v[k])) continue;
        char *key = rec_key(c, r);
        for (int j = 0; j < os->n; j++)
            if (strcmp(os->keys[j], key) == 0) {
                if (!isnan(os->val[q][j])) { mine[n] = r->v[k]; theirs[n] = os->val[q][j]; n++; }
                break;
            }
        free(key);
    }
    return n;
}

/* forget_quality (KS p-value of truth ratios, model vs oracle, on matched items) and
 * privleak (MIA AUC relative to the oracle's on the same items). */
static void aggregate_oracle(const Ctx *c, const Json *oracle, const char *opath, unsigned sets, Json *res) {
    const char *path = opath ? opath : "oracle";
    double *a = xmalloc((size_t)(c->n_rec + 1) * sizeof *a), *b = xmalloc((size_t)(c->n_rec + 1) * sizeof *b);
    Json *fq = NULL;
    static const int fq_sets[2] = {EVAL_SET_FORGET, EVAL_SET_TEST};
    for (int t = 0; t < 2; t++) {
        int s = fq_sets[t];
        OracleSet os;
        if (!(sets & EVAL_SET_BIT(s)) || !oracle_set(oracle, set_names[s], path, &os)) continue;
        for (int md = 0; md < N_MODS; md++) {
            /* TOFU forget quality: KS between the two truth-ratio samples of the same items */
            int n = match_oracle(c, s, &os, 0, md, a, b);
            if (n == 0) continue;
            KsResult ks = ks_2samp(a, n, b, n);
            if (!fq) {
                fq = json_new_object();
                json_set(fq, "oracle", opath ? json_new_string(opath) : json_new_null());
                json_set(fq, "ks", json_new_string("scipy ks_2samp, two-sided, method auto"));
            }
            Json *o = json_new_object();
            jset_num(o, "value", ks.pvalue);
            jset_num(o, "statistic", ks.statistic);
            json_set(o, "n", json_new_number(n));
            json_set(o, "method", json_new_string(ks.method == KS_EXACT ? "exact" : "asymp"));
            json_set(jchild(fq, set_names[s]), mod_names[md], o);
        }
        oracle_set_free(&os);
    }
    if (fq) json_set(res, "forget_quality", fq);

    /* PrivLeak: both AUCs on the same (matched) forget and holdout items, per score */
    OracleSet of, oh;
    Json *pl = NULL;
    if ((sets & EVAL_SET_BIT(EVAL_SET_FORGET)) && (sets & EVAL_SET_BIT(EVAL_SET_HOLDOUT)) &&
        oracle_set(oracle, "forget", path, &of)) {
        if (oracle_set(oracle, "holdout", path, &oh)) {
            double *a2 = xmalloc((size_t)(c->n_rec + 1) * sizeof *a2), *b2 = xmalloc((size_t)(c->n_rec + 1) * sizeof *b2);
            for (int q = 0; q < N_MIA; q++)
                for (int md = 0; md < N_MODS; md++) {
                    int nf = match_oracle(c, EVAL_SET_FORGET, &of, q + 1, md, a, b);
                    int nh = match_oracle(c, EVAL_SET_HOLDOUT, &oh, q + 1, md, a2, b2);
                    if (nf == 0 || nh == 0) continue;
                    double auc = mia_auc(a, nf, a2, nh), auc_o = mia_auc(b, nf, b2, nh);
                    if (!pl) {
                        pl = json_new_object();
                        json_set(pl, "oracle", opath ? json_new_string(opath) : json_new_null());
                        json_set(pl, "headline", json_new_string("min_k"));
                    }
                    Json *o = json_new_object();
                    jset_num(o, "value", privleak(auc, auc_o));
                    jset_num(o, "auc", auc);
                    jset_num(o, "oracle_auc", auc_o);
                    json_set(o, "n_forget", json_new_number(nf));
                    json_set(o, "n_holdout", json_new_number(nh));
                    json_set(jchild(pl, mia_names[q]), mod_names[md], o);
                }
            free(a2); free(b2);
            oracle_set_free(&oh);
        }
        oracle_set_free(&of);
    }
    if (pl) json_set(res, "privleak", pl);
    if (!fq)                                        /* worth a line even when quiet */
        fprintf(stderr, "pulse: eval: %s: no forget-set item matches the oracle's per_item: no forget quality\n", path);
    free(a); free(b);
}

/* ----------------------------------------------------------------------------
 * Output: predictions.jsonl, the summary table, provenance */

static Json *json_clone(const Json *j) {
    char *s = json_dump(j, 0), err[128];
    Json *c = json_parse(s, strlen(s), err, sizeof err);
    CHECKF(c, "json_clone: %s", err);
    free(s);
    return c;
}

static Json *people_ids(const World *w, const int *p, int n) {
    Json *a = json_new_array();
    for (int i = 0; i < n; i++) json_push(a, json_new_number(w->people[p[i]].id));
    return a;
}

static const char *const qa_fields[N_METRICS] = {
    [M_NLL] = "nll", [M_PROB] = "prob", [M_PROB_OPTIONS] = "prob_options", [M_TRUTH_RATIO] = "truth_ratio",
    [M_EM] = "exact_memorization", [M_ES] = "extraction_strength", [M_MINK] = "min_k", [M_MINKPP] = "min_k_pp"};

static Json *prediction_line(const Ctx *c, const Rec *r) {
    const EvalItem *e = r->e;
    const World *w = c->w;
    Json *j = json_new_object(), *sets = json_new_array();
    for (int s = 0; s < EVAL_N_SETS; s++)
        if (r->sets & EVAL_SET_BIT(s)) {
            if (!json_get(j, "set")) json_set(j, "set", json_new_string(set_names[s]));
            json_push(sets, json_new_string(set_names[s]));
        }
    json_set(j, "sets", sets);
    json_set(j, "person", e->person >= 0 ? json_new_number(w->people[e->person].id) : json_new_null());
    if (e->person >= 0) json_set(j, "name", json_new_string(w->people[e->person].name));
    json_set(j, "attr", e->attr >= 0 ? json_new_string(w->attrs[e->attr].name) : json_new_null());
    if (e->category) json_set(j, "category", json_new_string(e->category));
    json_set(j, "task", json_new_string(task_name(e->task)));
    json_set(j, "modality", json_new_string(mod_names[rec_mod(r)]));
    json_set(j, "image", e->image >= 0 ? json_new_string(w->images[e->image].path) : json_new_null());
    json_set(j, "prompt", json_new_string(e->task == TASK_QA ? e->question : r->prompt));
    if (r->gen_done) {
        json_set(j, "generated", json_new_string(r->generated));
        json_set(j, "n_generated", json_new_number(r->n_gen));
        json_set(j, "eos", json_new_bool(r->eos));
        json_set(j, "response", json_new_string(r->response));
    }
    json_set(j, "answer", json_new_string(e->answer));
    if (e->truth) json_set(j, "truth", json_new_string(e->truth));
    if (e->task == TASK_MC) {
        if (r->gen_done) {
            char p[2] = {r->pred, 0};
            json_set(j, "pred", r->pred ? json_new_string(p) : json_new_null());
            json_set(j, "correct", json_new_number(r->v[M_MC]));
        }
        if (!isnan(r->v[M_MCLL])) {
            Json *l = json_new_object(), *ll = json_new_array();
            for (int o = 0; o < e->n_options; o++) json_push(ll, json_new_number(r->opt_ll[o]));
            char p[2] = {(char)('A' + r->ll_pred), 0};
            json_set(l, "option_ll", ll);
            json_set(l, "pred", json_new_string(p));
            json_set(l, "correct", json_new_number(r->v[M_MCLL]));
            json_set(j, "mc_likelihood", l);
        }
    } else if (e->task == TASK_CLOZE && r->gen_done) {
        json_set(j, "correct", json_new_number(r->v[M_CLOZE]));
    } else if (e->task == TASK_GEN && r->gen_done) {
        for (int k = M_ROUGE1; k <= M_BLEU; k++) jset_num(j, minfo[k].name, r->v[k]);
    } else if (e->task == TASK_QA && !isnan(r->v[M_NLL])) {
        for (int k = 0; k < N_METRICS; k++)
            if (qa_fields[k]) jset_num(j, qa_fields[k], r->v[k]);
        jset_num(j, "loss", r->v[M_NLL]);
    }
    return j;
}

static void write_predictions(const Ctx *c, const char *path) {
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    for (int i = 0; i < c->n_rec; i++) {
        Json *j = prediction_line(c, &c->rec[i]);
        char *s = json_dump(j, 0);
        fputs(s, f);
        fputc('\n', f);
        free(s);
        json_free(j);
    }
    atomic_commit(&af);
}

/* "value" of sets.<set>.<metric>.<modality>, or NAN. */
static double res_value(const Json *sets, const char *set, const char *metric, const char *mod) {
    const Json *a = json_get(sets, set);
    a = a ? json_get(a, metric) : NULL;
    a = a ? json_get(a, mod) : NULL;
    const Json *v = a ? json_get(a, "value") : NULL;
    return v && v->type == JSON_NUMBER ? v->number : NAN;
}

static void cell(FILE *f, double x, int width, int prec) {
    if (isnan(x)) fprintf(f, "%*s", width, "-");
    else fprintf(f, "%*.*f", width, prec, x);
}

/* The summary table: one row per set, image+text / text-only pairs. */
static void print_table(FILE *f, const Json *res, unsigned sets) {
    const Json *js = json_get(res, "sets");
    static const struct { const char *metric, *head; int prec; } cols[] = {
        {"mc", "mc", 1}, {"mc_likelihood", "mc_ll", 1}, {"cloze", "cloze", 1}, {"rougeL", "rougeL", 3},
        {"bleu", "bleu", 3}};
    int nc = (int)(sizeof cols / sizeof cols[0]);
    fprintf(f, "%-17s", "set (img | txt)");
    for (int k = 0; k < nc; k++) fprintf(f, " %15s", cols[k].head);
    fprintf(f, " %7s %7s\n", "prob", "TR");
    for (int s = 0; s < EVAL_N_SETS; s++) {
        if (!(sets & EVAL_SET_BIT(s))) continue;
        fprintf(f, "%-17s", set_names[s]);
        for (int k = 0; k < nc; k++) {
            fputc(' ', f);
            cell(f, res_value(js, set_names[s], cols[k].metric, "image_text"), 7, cols[k].prec);
            fputc('|', f);
            cell(f, res_value(js, set_names[s], cols[k].metric, "text_only"), 7, cols[k].prec);
        }
        fputc(' ', f);
        cell(f, res_value(js, set_names[s], "prob", "all"), 7, 3);
        fputc(' ', f);
        cell(f, res_value(js, set_names[s], "truth_ratio", "all"), 7, 3);
        fputc('\n', f);
    }
    fprintf(f, "(accuracies in %%; TR: truth ratio, closer_to_1_better on forget/test/celebrity_forget, "
               "true_better elsewhere)\n");
    const Json *mia = json_get(res, "mia");
    if (mia) {
        fprintf(f, "MIA AUC forget vs holdout (all):");
        for (int q = 0; q < N_MIA; q++) {
            const Json *a = json_get(mia, mia_names[q]);
            a = a ? json_get(a, "all") : NULL;
            const Json *v = a ? json_get(a, "auc") : NULL;
            if (v && v->type == JSON_NUMBER) fprintf(f, " %s %.3f", mia_names[q], v->number);
        }
        fputc('\n', f);
    }
    const Json *fq = json_get(res, "forget_quality");
    const Json *fqa = fq ? json_get(fq, "forget") : NULL;
    fqa = fqa ? json_get(fqa, "all") : NULL;
    if (fqa) fprintf(f, "forget quality (KS p, forget, all): %.4g\n", json_get_number(fqa, "value", NAN, "results"));
    const Json *pl = json_get(res, "privleak");
    const Json *pla = pl ? json_get(pl, "min_k") : NULL;
    pla = pla ? json_get(pla, "all") : NULL;
    if (pla) fprintf(f, "privleak (min_k, all): %.2f\n", json_get_number(pla, "value", NAN, "results"));
}

/* The "pulse" provenance object of DIR/FILE, cloned, or null. */
static Json *provenance_of(const char *dir, const char *file) {
    if (!dir) return json_new_null();
    char *p = xasprintf("%s/%s", dir, file);
    Json *out = json_new_null();
    if (file_exists(p)) {
        Json *j = json_load(p);
        const Json *pu = json_get(j, "pulse");
        if (pu) { json_free(out); out = json_clone(pu); }
        json_free(j);
    }
    free(p);
    return out;
}

/* ----------------------------------------------------------------------------
 * The driver entry points */

typedef struct SetPeople {
    const int *p[EVAL_N_SETS];
    int n[EVAL_N_SETS];
    int *owned[4];
} SetPeople;

static void check_people(const World *w, const int *p, int n, const char *what) {
    for (int i = 0; i < n; i++)
        if (p[i] < 0 || p[i] >= w->n_people) die_input(NULL, "eval: %s: person index %d outside the world", what, p[i]);
}

/* Resolves the people of every set from the options and the world's splits. */
static void resolve_people(const World *w, const EvalOptions *o, SetPeople *sp) {
    memset(sp, 0, sizeof *sp);
    int n;
    if (o->forget) { sp->p[EVAL_SET_FORGET] = o->forget; sp->n[EVAL_SET_FORGET] = o->n_forget; }
    else {
        const Split *s = world_split(w, "forget_10");
        if (!s) die_input(w->dir, "the world has no split forget_10 (give the forget people)");
        sp->p[EVAL_SET_FORGET] = s->people; sp->n[EVAL_SET_FORGET] = s->n;
    }
    sp->p[EVAL_SET_TEST] = sp->p[EVAL_SET_FORGET]; sp->n[EVAL_SET_TEST] = sp->n[EVAL_SET_FORGET];
    if (o->retain) { sp->p[EVAL_SET_RETAIN] = o->retain; sp->n[EVAL_SET_RETAIN] = o->n_retain; }
    else {                                          /* the fictitious people not forgotten */
        int *fict = world_people_of_kind(w, KIND_FICTITIOUS, &n), k = 0;
        for (int i = 0; i < n; i++) {
            int in = 0;
            for (int j = 0; j < sp->n[EVAL_SET_FORGET] && !in; j++) in = sp->p[EVAL_SET_FORGET][j] == fict[i];
            if (!in) fict[k++] = fict[i];
        }
        sp->owned[0] = fict;
        sp->p[EVAL_SET_RETAIN] = fict; sp->n[EVAL_SET_RETAIN] = k;
    }
    sp->p[EVAL_SET_CELEB_FORGET] = o->celeb_forget; sp->n[EVAL_SET_CELEB_FORGET] = o->celeb_forget ? o->n_celeb_forget : 0;
    sp->p[EVAL_SET_CELEB_RETAIN] = o->celeb_retain; sp->n[EVAL_SET_CELEB_RETAIN] = o->celeb_retain ? o->n_celeb_retain : 0;
    if (o->celebrity) { sp->p[EVAL_SET_CELEBRITY] = o->celebrity; sp->n[EVAL_SET_CELEBRITY] = o->n_celebrity; }
    else if (o->celeb_forget || o->celeb_retain) {
        int nf = sp->n[EVAL_SET_CELEB_FORGET], nr = sp->n[EVAL_SET_CELEB_RETAIN];
        int *u = xmalloc((size_t)(nf + nr + 1) * sizeof *u);
        if (nf) memcpy(u, o->celeb_forget, (size_t)nf * sizeof *u);
        if (nr) memcpy(u + nf, o->celeb_retain, (size_t)nr * sizeof *u);
        sp->owned[1] = u;
        sp->p[EVAL_SET_CELEBRITY] = u; sp->n[EVAL_SET_CELEBRITY] = nf + nr;
    } else {
        const Split *s = world_split(w, "celebrity");
        if (s) { sp->p[EVAL_SET_CELEBRITY] = s->people; sp->n[EVAL_SET_CELEBRITY] = s->n; }
    }
    if (o->holdout) { sp->p[EVAL_SET_HOLDOUT] = o->holdout; sp->n[EVAL_SET_HOLDOUT] = o->n_holdout; }
    else {
        const Split *s = world_split(w, "holdout");
        if (s) { sp->p[EVAL_SET_HOLDOUT] = s->people; sp->n[EVAL_SET_HOLDOUT] = s->n; }
    }
    for (int s = 0; s < EVAL_N_SETS; s++) check_people(w, sp->p[s], sp->n[s], set_names[s]);
}

static void free_people(SetPeople *sp) { for (int i = 0; i < 4; i++) free(sp->owned[i]); }

/* The sets actually evaluated: the requested ones, with the celebrity groups following
 * "celebrity" when their people are given. */
static unsigned effective_sets(const EvalOptions *o) {
    unsigned s = o->sets;
    if (s & EVAL_SET_BIT(EVAL_SET_CELEBRITY)) {
        if (o->celeb_forget) s |= EVAL_SET_BIT(EVAL_SET_CELEB_FORGET);
        if (o->celeb_retain) s |= EVAL_SET_BIT(EVAL_SET_CELEB_RETAIN);
    }
    return s;
}

static Json *settings_json(const World *w, const EvalOptions *o, unsigned sets, const SetPeople *sp) {
    Json *j = json_new_object(), *a = json_new_array();
    for (int s = 0; s < EVAL_N_SETS; s++) if (sets & EVAL_SET_BIT(s)) json_push(a, json_new_string(set_names[s]));
    json_set(j, "sets", a);
    a = json_new_array();
    for (int t = 0; t < 5; t++) if (o->tasks & (1u << t)) json_push(a, json_new_string(task_flag_names[t]));
    json_set(j, "tasks", a);
    json_set(j, "decoding", json_new_string("greedy, batched, KV cache; LLaVA-1.5 prompt template"));
    json_set(j, "max_new_tokens", json_new_number(o->max_new));
    json_set(j, "few_shot", json_new_number(o->few_shot));
    json_set(j, "few_shot_seed", json_new_number((double)o->seed));
    json_set(j, "few_shot_pool", json_new_string(o->few_shot ? "text-only items of the holdout people" : "none"));
    jset_num(j, "mink_k", o->mink_k);
    json_set(j, "scoring", json_new_string(o->exact_scoring ? "model_score (full forward per sequence)"
                                                            : "shared prompts: one prefill, KV-cache continuations"));
    json_set(j, "mc_rule", json_new_string("MLLMU-Bench: first character of the stripped response, upper-cased, "
                                           "must be an option letter; decoding stops once it is decided"));
    json_set(j, "mc_likelihood_rule", json_new_string("best mean log-prob per token of each option as the answer to the "
                                                      "question stem: person questions score the trained answer sentence "
                                                      "with the option's value filled in, genbench the option text "
                                                      "(no EOS, zero-shot)"));
    json_set(j, "rouge", json_new_string("rouge_score 0.1.2, use_stemmer=True; F-measure, rougeL_recall = TOFU"));
    json_set(j, "bleu", json_new_string("NLTK sentence_bleu, SmoothingFunction().method1"));
    json_set(j, "truth_ratio", json_new_string("open-unlearning: exp(-mean perturbed NLL) / exp(-paraphrased NLL)"));
    Json *pe = json_new_object();
    for (int s = 0; s < EVAL_N_SETS; s++)
        if ((sets & EVAL_SET_BIT(s)) && s != EVAL_SET_TEST && s != EVAL_SET_GENBENCH)
            json_set(pe, set_names[s], people_ids(w, sp->p[s], sp->n[s]));
    json_set(j, "people", pe);
    json_set(j, "oracle", o->oracle_path ? json_new_string(o->oracle_path) : json_new_null());
    return j;
}

Json *eval_run(Model *m, const Tokenizer *tok, const World *w, const EvalOptions *o, EvalStats *st) {
    double t0 = now_seconds();
    /* 1. options -> people per set -> deduplicated records -> model work */
    if (o->max_new < 1) die_input(NULL, "eval: max_new must be >= 1 (it is %d)", o->max_new);
    if (o->few_shot < 0) die_input(NULL, "eval: few_shot must be >= 0");
    if (!(o->mink_k > 0 && o->mink_k <= 1)) die_input(NULL, "eval: Min-K%% k must be in (0, 1]");
    unsigned sets = effective_sets(o);
    SetPeople sp;
    resolve_people(w, o, &sp);

    Ctx c;
    ctx_init(&c, m, tok, w, o->tasks, o->max_new, o->batch, o->mink_k, o->quiet);
    c.exact = o->exact_scoring;
    if (o->few_shot > 0) ctx_fewshot(&c, o->few_shot, o->seed, sp.p[EVAL_SET_HOLDOUT], sp.n[EVAL_SET_HOLDOUT]);
    for (int s = 0; s < EVAL_N_SETS; s++) {
        if (!(sets & EVAL_SET_BIT(s))) continue;
        EvalSource src = s == EVAL_SET_TEST ? EVAL_TEST : s == EVAL_SET_GENBENCH ? EVAL_GENBENCH : EVAL_PROFILE;
        ctx_add(&c, (EvalSet)s, src, sp.p[s], sp.n[s]);
    }
    model_decode_pack(m);       /* the weights stay fixed for the whole evaluation */
    ctx_run(&c);
    model_decode_unpack(m);

    /* 2. results.json: provenance, settings, aggregates, oracle comparisons, per-item */
    Json *res = json_new_object();
    json_set(res, "format", json_new_string(RESULTS_FORMAT));
    json_set(res, "version", json_new_number(RESULTS_VERSION));
    Json *jm = json_new_object();
    json_set(jm, "path", o->model_path ? json_new_string(o->model_path) : json_new_null());
    json_set(jm, "provenance", provenance_of(o->model_path, "config.json"));
    json_set(jm, "adapter", o->adapter_path ? json_new_string(o->adapter_path) : json_new_null());
    if (o->adapter_path) json_set(jm, "adapter_provenance", provenance_of(o->adapter_path, "adapter_config.json"));
    json_set(jm, "lora_attached", json_new_bool(m->lora.attached));
    json_set(res, "model", jm);
    Json *jw = json_new_object();
    char fp[32];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)w->fingerprint);
    json_set(jw, "dir", json_new_string(w->dir ? w->dir : ""));
    json_set(jw, "preset", json_new_string(w->preset.name ? w->preset.name : ""));
    json_set(jw, "seed", json_new_number((double)w->seed));
    json_set(jw, "fingerprint", json_new_string(fp));
    json_set(res, "world", jw);
    json_set(res, "settings", settings_json(w, o, sets, &sp));
    json_set(res, "sets", aggregate_sets(&c, sets));
    Json *cats = aggregate_categories(&c);
    if (cats) json_set(res, "genbench_categories", cats);
    Json *mia = aggregate_mia(&c);
    if (mia) json_set(res, "mia", mia);
    if (o->oracle) aggregate_oracle(&c, o->oracle, o->oracle_path, sets, res);
    Json *pi = per_item(&c, sets);
    if (pi) json_set(res, "per_item", pi);

    /* 3. files; results.json last, so a reader that finds it finds the others too */
    c.st.seconds = now_seconds() - t0;
    if (o->out_dir) {
        make_dirs(o->out_dir);
        char *p = xasprintf("%s/predictions.jsonl", o->out_dir);
        if (o->predictions) write_predictions(&c, p);
        else unlink(p);                             /* never leave another run's predictions */
        free(p);
        Json *t = json_new_object();
        json_set(t, "items", json_new_number(c.st.items));
        json_set(t, "gen_sequences", json_new_number(c.st.gen_sequences));
        json_set(t, "gen_tokens", json_new_number(c.st.gen_tokens));
        json_set(t, "score_sequences", json_new_number(c.st.score_sequences));
        json_set(t, "score_tokens", json_new_number(c.st.score_tokens));
        jset_num(t, "gen_seconds", c.st.gen_seconds);
        jset_num(t, "score_seconds", c.st.score_seconds);
        jset_num(t, "seconds", c.st.seconds);
        jset_num(t, "items_per_second", c.st.items / (c.st.seconds > 0 ? c.st.seconds : 1e-9));
        jset_num(t, "gen_tokens_per_second", c.st.gen_tokens / (c.st.gen_seconds > 0 ? c.st.gen_seconds : 1e-9));
        json_set(t, "threads", json_new_number(kern_threads()));
        json_set(t, "simd", json_new_string(kern_simd_name()));
        p = xasprintf("%s/timing.json", o->out_dir);
        json_save(p, t);
        free(p);
        json_free(t);
        p = xasprintf("%s/results.json", o->out_dir);
        json_save(p, res);
        free(p);
    }
    if (o->table) print_table(o->table, res, sets);
    if (st) *st = c.st;
    ctx_free(&c);
    free_people(&sp);
    return res;
}

void eval_person_accuracy(Model *m, const Tokenizer *tok, const World *w, const int *people, int n,
                          unsigned tasks, int max_new, double *acc) {
    tasks &= EVAL_TASKS_LIGHT;
    if (!tasks) die_input(NULL, "eval: per-person accuracy needs mc, mc_likelihood or cloze");
    check_people(w, people, n, "per-person accuracy");
    Ctx c;
    ctx_init(&c, m, tok, w, tasks, max_new > 0 ? max_new : 50, 64, 0.4, 1);
    ctx_add(&c, EVAL_SET_FORGET, EVAL_PROFILE, people, n);
    model_decode_pack(m);       /* the weights stay fixed for the whole evaluation */
    ctx_run(&c);
    model_decode_unpack(m);
    static const int ks[3] = {M_MC, M_MCLL, M_CLOZE};
    for (int i = 0; i < n; i++) {
        long hit = 0, tot = 0;
        for (int r = 0; r < c.n_rec; r++) {
            if (c.rec[r].e->person != people[i]) continue;
            for (int k = 0; k < 3; k++)
                if (!isnan(c.rec[r].v[ks[k]])) { tot++; hit += c.rec[r].v[ks[k]] > 0.5; }
        }
        acc[i] = percent(hit, tot);
    }
    ctx_free(&c);
}

/* ----------------------------------------------------------------------------
 * Commands */

static void eval_usage(void) {
    printf("usage: pulse eval --data DIR --model CKPT [--adapter DIR] --out DIR [options]\n\n"
           "Evaluates a checkpoint on the world's benchmark; writes OUT/results.json, predictions.jsonl\n"
           "and timing.json, and prints a summary table (docs/results.md).\n\n"
           "  --sets LIST          forget,test,retain,celebrity,genbench,holdout (default: all)\n"
           "  --tasks LIST         mc,mc_likelihood,cloze,gen,prob | all | light (default: all)\n"
           "  --forget SPEC        forget people: split names and/or IDs, comma-separated (forget_10)\n"
           "  --retain SPEC        retain people (default: the fictitious people not forgotten)\n"
           "  --celebrity SPEC     celebrity set (default: celeb-forget + celeb-retain, else split celebrity)\n"
           "  --celeb-forget SPEC  celebrity group reported as celebrity_forget\n"
           "  --celeb-retain SPEC  celebrity group reported as celebrity_retain\n"
           "  --holdout SPEC       never-trained people (default: split holdout)\n"
           "  --oracle PATH        oracle results (dir or results.json): forget quality, privleak\n"
           "  --max-new N          max new tokens of free generation (50)\n"
           "  --few-shot K         K seeded in-context examples for mc and cloze (0)\n"
           "  --seed S             few-shot seed (0)\n"
           "  --mink-k K           k of Min-K%% and Min-K%%++ (0.4)\n"
           "  --batch B            sequences decoded together (64)\n"
           "  --exact-scoring      teacher-force with full forwards (model_score), not shared prompts\n"
           "  --no-predictions     skip predictions.jsonl\n"
           "  --quiet              no progress lines\n");
}

int cmd_eval(int argc, char **argv) {
    Args a;
    args_init(&a, "eval", argc, argv);
    if (args_help(&a)) { eval_usage(); args_free(&a); return 0; }
    const char *data = args_str(&a, "data", NULL), *model = args_str(&a, "model", NULL);
    const char *adapter = args_str(&a, "adapter", NULL), *out = args_str(&a, "out", NULL);
    if (!data || !model || !out) die_input(NULL, "eval: --data, --model and --out are required (see pulse eval --help)");
    out_dir_check(out, NULL);
    EvalOptions o = eval_options_default();
    const char *sets = args_str(&a, "sets", NULL), *tasks = args_str(&a, "tasks", NULL);
    if (sets) o.sets = eval_parse_sets(sets);
    if (tasks) o.tasks = eval_parse_tasks(tasks);
    o.max_new = (int)args_long(&a, "max-new", 50, 1, 4096);
    o.few_shot = (int)args_long(&a, "few-shot", 0, 0, 64);
    o.seed = (uint64_t)args_long(&a, "seed", 0, 0, 0x7fffffffffffffffL);
    o.mink_k = args_double(&a, "mink-k", 0.4, 1e-9, 1.0);
    o.batch = (int)args_long(&a, "batch", 64, 1, 4096);
    o.predictions = !args_flag(&a, "no-predictions");
    o.exact_scoring = args_flag(&a, "exact-scoring");
    o.quiet = args_flag(&a, "quiet");
    const char *oracle = args_str(&a, "oracle", NULL);
    const char *forget = args_str(&a, "forget", NULL), *retain = args_str(&a, "retain", NULL);
    const char *celeb = args_str(&a, "celebrity", NULL), *cf = args_str(&a, "celeb-forget", NULL);
    const char *cr = args_str(&a, "celeb-retain", NULL), *hold = args_str(&a, "holdout", NULL);
    args_done(&a);

    /* the world first: people specs name its splits and IDs */
    World *w = world_load(data);
    int *pf = forget ? world_parse_people(w, forget, "eval: --forget", &o.n_forget) : NULL;
    int *pr = retain ? world_parse_people(w, retain, "eval: --retain", &o.n_retain) : NULL;
    int *pc = celeb ? world_parse_people(w, celeb, "eval: --celebrity", &o.n_celebrity) : NULL;
    int *pcf = cf ? world_parse_people(w, cf, "eval: --celeb-forget", &o.n_celeb_forget) : NULL;
    int *pcr = cr ? world_parse_people(w, cr, "eval: --celeb-retain", &o.n_celeb_retain) : NULL;
    int *ph = hold ? world_parse_people(w, hold, "eval: --holdout", &o.n_holdout) : NULL;
    o.forget = pf; o.retain = pr; o.celebrity = pc; o.celeb_forget = pcf; o.celeb_retain = pcr; o.holdout = ph;
    /* the adapter stays attached (PEFT semantics: W x + scale B A x in every matmul) */
    Checkpoint *ck = ckpt_load(model);
    if (adapter) adapter_load(adapter, ck->model);
    Json *oj = oracle ? eval_load_results(oracle) : NULL;
    o.oracle = oj; o.oracle_path = oracle;
    o.out_dir = out; o.model_path = model; o.adapter_path = adapter;
    o.table = stdout;
    EvalStats st;
    Json *res = eval_run(ck->model, ck->tok, w, &o, &st);
    printf("%ld items in %.1f s (%.0f items/s); %ld generated tokens (%.0f tokens/s); %ld scored sequences\n",
           st.items, st.seconds, st.items / (st.seconds > 0 ? st.seconds : 1e-9), st.gen_tokens,
           st.gen_tokens / (st.gen_seconds > 0 ? st.gen_seconds : 1e-9), st.score_sequences);
    printf("wrote %s/results.json\n", out);
    json_free(res);
    if (oj) json_free(oj);
    ckpt_free(ck);
    world_free(w);
    free(pf); free(pr); free(pc); free(pcf); free(pcr); free(ph);
    args_free(&a);
    return 0;
}

int cmd_bench_eval(int argc, char **argv) {
    Args a;
    args_init(&a, "bench eval", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse bench eval [--preset small] [--data DIR] [--model CKPT] [--sets LIST] [--tasks LIST]\n"
               "                        [--max-new N] [--batch B] [--exact-scoring] [--raw DIR]\n"
               "A full evaluation (every set, every task unless narrowed) of CKPT, or of a random model\n"
               "(config_default with the world tokenizer's vocabulary) when no model is given, on DIR or\n"
               "on a world generated into a temporary directory; prints items/s and generated tokens/s.\n"
               "A random model never emits EOS, so its free generation always runs to max-new tokens:\n"
               "an upper bound on decoding time. --raw: the raw material of the generated world, as in\n"
               "pulse data (default: data/ beside the binary, else ./data).\n");
        args_free(&a);
        return 0;
    }
    const char *preset = args_str(&a, "preset", "small"), *data = args_str(&a, "data", NULL);
    const char *model = args_str(&a, "model", NULL), *sets = args_str(&a, "sets", NULL);
    const char *tasks = args_str(&a, "tasks", NULL), *raw = args_str(&a, "raw", NULL);
    EvalOptions o = eval_options_default();
    o.max_new = (int)args_long(&a, "max-new", 50, 1, 4096);
    o.batch = (int)args_long(&a, "batch", 64, 1, 4096);
    o.exact_scoring = args_flag(&a, "exact-scoring");
    if (sets) o.sets = eval_parse_sets(sets);
    if (tasks) o.tasks = eval_parse_tasks(tasks);
    args_done(&a);
    /* the model first: a bad one stops the bench before a world is generated */
    Checkpoint *ck = model ? ckpt_load(model) : NULL;
    /* a fresh world in a temporary directory unless one is given (the directory is
     * removed if the generation stops on bad raw material) */
    char tmp[64] = {0};
    if (!data) {
        const Preset *p = preset_find(preset);
        if (!p) die_input(NULL, "bench eval: unknown preset '%s'", preset);
        snprintf(tmp, sizeof tmp, "/tmp/pulse-bench-eval-XXXXXX");
        if (!mkdtemp(tmp)) die_internal("bench eval: cannot create a temporary directory");
        tmpfile_register(tmp);
        char *wd = xasprintf("%s/world", tmp);
        double t0 = now_seconds();
        data_generate(p, 1, raw, wd);
        fprintf(stderr, "bench eval: generated the %s world in %.1f s\n", preset, now_seconds() - t0);
        data = wd;
    }
    World *w = world_load(data);
    Model *m;
    Tokenizer *tok;
    if (ck) { m = ck->model; tok = ck->tok; }
    else {
        char *tp = xasprintf("%s/tokenizer.json", data);
        tok = tok_load(tp);
        free(tp);
        LlavaConfig cfg = config_default();
        cfg.vocab_size = tok_vocab_size(tok);   /* as pre-training builds it (small: 1,536) */
        m = model_new(&cfg);
        model_init(m, 1);
    }
    o.quiet = 1;
    EvalStats st;
    Json *res = eval_run(m, tok, w, &o, &st);
    json_free(res);
    printf("eval bench (%s, %d threads, %s model, %s world):\n", kern_simd_name(), kern_threads(),
           model ? model : "random", w->preset.name ? w->preset.name : "?");
    printf("  %ld items in %.2f s: %.0f items/s\n", st.items, st.seconds, st.items / st.seconds);
    printf("  decoding (prefill included): %ld prompts, %ld generated tokens in %.2f s: %.0f tokens/s\n", st.gen_sequences,
           st.gen_tokens, st.gen_seconds, st.gen_tokens / (st.gen_seconds > 0 ? st.gen_seconds : 1e-9));
    printf("  scoring: %ld sequences in %.2f s: %.0f sequences/s\n", st.score_sequences, st.score_seconds,
           st.score_sequences / (st.score_seconds > 0 ? st.score_seconds : 1e-9));
    printf("  positions run (prompts + scored sequences): %ld, %.0f positions/s\n", st.score_tokens,
           st.score_tokens / st.seconds);
    if (ck) ckpt_free(ck);
    else { model_free(m); tok_free(tok); }
    if (tmp[0]) {
        remove_tree(tmp);
        tmpfile_unregister(tmp);
        free((char *)data);
    }
    world_free(w);
    args_free(&a);
    return 0;
}
