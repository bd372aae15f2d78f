/* train.c: pre-training and fine-tuning of the tiny LLaVA on a synthetic world.
 *
 * Design
 * - One loop for both stages. Pre-training (base_pt) reads the world's STAGE_PT items
 *   (scenes, anonymous face descriptions, general facts, the celebrities in every format;
 *   tiny also in-context multiple choice), fine-tuning (base_ft) the STAGE_FT items (the
 *   fictitious people's QA, multiple choice, cloze...), both minus the excluded people.
 *   Hyperparameters come from one recipe table per (world preset, stage); every TrainOpts
 *   field that is set overrides its recipe value.
 * - The data stream is a pure function of (seed, example number k): the items are expanded
 *   by Item.repeat into "presentations", epoch e = k / N is a shuffle of them drawn from
 *   stream (seed, "order", e), and example k is rendered (phrasing, MC options and correct
 *   letter) and augmented (image shift, brightness, noise) from its own streams (seed,
 *   "render", k) and (seed, "aug", k). So a step's batch depends on nothing but the step
 *   number: resuming needs only weights, AdamW moments and the step, and the bytes of the
 *   final checkpoint are the same whether a run was interrupted or not, and (the kernels
 *   sum in a fixed order) whatever the number of threads.
 * - A step: fill the Batch (answer + EOS labelled, DESIGN 5), model_forward on the tape,
 *   tape_backward, clip to 1.0, AdamW with the warm-up + cosine learning rate, tape_reset.
 *   Buffers (token ids, pixels, the batch, the tape's arena) are allocated once.
 * - Resumable: every state_every seconds the training state (weights, AdamW m and v, LoRA
 *   blocks, step, the recent losses) goes atomically to OUT.state, one binary file tagged
 *   with a fingerprint of everything that determines the run. A restart with the same
 *   arguments continues from it; a mismatching state is ignored. Removed when done.
 *   Pre-training's warm-ups save it too (which part, its step, its loss tail), so a run
 *   killed in one resumes inside it.
 * - Output: a checkpoint directory in the HF layout, written as OUT.tmp and renamed:
 *   config.json with a "pulse" provenance object (stage, preset, seed, data fingerprint,
 *   recipe, steps, tokens, final loss), model.safetensors, tokenizer.json,
 *   preprocessor_config.json. Wall time and the loss curve go to training.json beside
 *   them: they differ between identical runs, so they are kept out of config.json.
 * - Fine-tuning with LoRA attaches adapters, trains them, merges them (PEFT
 *   merge_and_unload) and saves a plain checkpoint, so base_ft never carries adapters.
 * - Gates: a minimal multiple-choice check (letter rule by greedy generation, option
 *   likelihood by teacher forcing) over the world's profile and genbench items, so that
 *   a run says at once whether the base models know what unlearning will target.
 */
#include "train.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "io.h"

#define MAX_TEXT 4096               /* rendered question / answer bytes */
#define MAX_IDS 512                 /* tokens of one rendered training item */
#define LOSS_RING 32                /* final loss = mean of the last LOSS_RING steps */
#define CURVE_MAX 200               /* loss-curve points kept for training.json */
#define PIX (3 * DATA_IMAGE_SIZE * DATA_IMAGE_SIZE)
#define STATE_MAGIC "PULSEST1"
#define VISION_CACHE_TAG "pulse vision warm-up 1"   /* bump when the warm-up changes */
#define VISION_QUADRANT_TAG "vision quadrant"         /* hashed when Recipe.vision_quadrant is on */
#define VISION_SHAPE_TAG "vision shape"               /* hashed when Recipe.vision_shape is on */

/* ============================================================================
 * Recipes. Reasoning and measurements in docs/training.md. Learning rate ~1e-3 with a
 * warm-up and cosine decay, clipping at 1.0: what made 1M-parameter models learn in
 * ../shared/research/feasibility.md. Epochs count presentations (Item.repeat included). */
static const Recipe recipes[] = {
    /* preset  stage     epochs batch  lr      warmup sched      wd    clip  mode        r   alpha targets replay vision_lr mc_repeat vision_warmup general_repeat mc_warmup mc_face mc_name scene_warmup mixed_warmup vision_quadrant vision_shape warm_restart */
    {"tiny",  STAGE_PT,   2,    16,   2e-3f,   20,  LR_COSINE, 0.0f, 1.0f, TRAIN_FULL, 16, 16.0f, "llm", 0.0f, 0.015f, 1,    0, 1,    0, 0, 0, 0, 0, 0, 0, 0},
    {"tiny",  STAGE_FT,   4,    16,   2e-3f,   10,  LR_COSINE, 0.0f, 1.0f, TRAIN_FULL, 16, 16.0f, "llm", 0.0f, 0.015f, 1,    0, 1,    0, 0, 0, 0, 0, 0, 0, 0},
    {"small", STAGE_PT,  10,    16,   2e-3f,  100,  LR_COSINE, 0.0f, 1.0f, TRAIN_FULL, 16, 16.0f, "llm", 0.0f, 0.1f,   3, 2000, 4, 4000, 5, 2,    0, 8000, 1, 1, 3000},
    {"small", STAGE_FT,  15,    16,   2e-3f,  100,  LR_COSINE, 0.0f, 1.0f, TRAIN_FULL, 16, 16.0f, "llm", 0.5f, 0.015f, 3,    0, 6,    0, 5, 2, 0, 0, 0, 0, 0},
    {"paper", STAGE_PT,  10,    32,   2e-3f,  200,  LR_COSINE, 0.0f, 1.0f, TRAIN_FULL, 16, 16.0f, "llm", 0.0f, 0.015f, 1, 2000, 1,    0, 0, 0, 0, 0, 0, 0, 0},
    {"paper", STAGE_FT,  15,    32,   2e-3f,  200,  LR_COSINE, 0.0f, 1.0f, TRAIN_FULL, 16, 16.0f, "llm", 0.5f, 0.015f, 1,    0, 1,    0, 0, 0, 0, 0, 0, 0, 0},
};

Recipe train_recipe(const char *preset, int stage) {
    int n = (int)(sizeof recipes / sizeof recipes[0]);
    for (int i = 0; i < n; i++)
        if (recipes[i].stage == stage && preset && strcmp(recipes[i].preset, preset) == 0) return recipes[i];
    for (int i = 0; i < n; i++)
        if (recipes[i].stage == stage && strcmp(recipes[i].preset, "small") == 0) return recipes[i];
    CHECK(0);
}

LlavaConfig train_model_config(const char *preset, int vocab_size) {
    LlavaConfig c = config_default();
    c.vocab_size = vocab_size;
    if (preset && strcmp(preset, "tiny") == 0) {
        c.hidden_size = 64; c.intermediate_size = 176; c.num_hidden_layers = 2;
        c.num_attention_heads = 4; c.num_key_value_heads = 4;
        c.v_hidden_size = 32; c.v_intermediate_size = 128; c.v_num_hidden_layers = 1;
        c.v_num_attention_heads = 2;
    } else if (preset && strcmp(preset, "small") == 0) {
        /* eight heads of 16: with four of 32 the decoder did not learn to find a figure by
         * its colour or shape (docs/training.md, "The place by one attribute") */
        c.num_attention_heads = c.num_key_value_heads = 8;
    }
    return c;
}

TrainOpts train_opts_default(int stage) {
    TrainOpts o;
    memset(&o, 0, sizeof o);
    o.stage = stage;
    o.seed = 1;
    o.warmup = -1;
    o.schedule = -1;
    o.mode = -1;
    o.replay = -1;
    o.vision_lr = -1;
    o.vision_warmup = -1;
    o.mc_warmup = -1;
    o.scene_warmup = -1;
    o.mixed_warmup = -1;
    o.vision_quadrant = -1;
    o.vision_shape = -1;
    o.warm_restart = -1;
    return o;
}

static const char *stage_name(int stage) { return stage == STAGE_PT ? "pretrain" : "finetune"; }
static const char *sched_name(LrKind k) { return k == LR_CONSTANT ? "constant" : k == LR_LINEAR ? "linear" : "cosine"; }

/* ============================================================================
 * Deterministic streams: one Rng per (seed, tag, number). */

static void stream_rng(Rng *r, uint64_t seed, const char *tag, uint64_t k) {
    uint64_t h = hash64(&seed, sizeof seed, HASH64_INIT);
    h = hash64(tag, strlen(tag), h);
    h = hash64(&k, sizeof k, h);
    rng_seed(r, h);
}

/* ============================================================================
 * Checkpoint files (HF layout). */

/* Writes the checkpoint with checkpoint.c, then adds the training record to its "pulse"
 * object (Provenance holds only the common fields). An interruption between the two
 * leaves OUT.state in place, so a rerun rewrites both. */
static void save_checkpoint(const char *out, const Model *m, const Tokenizer *tok, const Provenance *pv,
                            Json *extra) {
    ckpt_save(out, m, tok, NULL, pv);
    char *p = xasprintf("%s/config.json", out);
    Json *cfg = json_load(p);
    Json *pj = json_get(cfg, "pulse");
    CHECK(pj && pj->type == JSON_OBJECT);
    for (size_t i = 0; i < extra->len; i++) {
        json_set(pj, extra->keys[i], extra->items[i]);
        extra->items[i] = NULL;
    }
    json_save(p, cfg);
    json_free(cfg);
    json_free(extra);           /* keys only: the values moved */
    free(p);
}

/* The model of a checkpoint directory (validated by ckpt_load), detached from it. */
static Model *load_checkpoint(const char *dir) {
    Checkpoint *ck = ckpt_load(dir);
    Model *m = ck->model;
    ck->model = NULL;
    ckpt_free(ck);
    return m;
}

/* ============================================================================
 * The item stream */

typedef struct Stream {
    const World *w;
    const Item **items;         /* selected items of the stage, World order */
    int n_items;
    const Item **pres;          /* [n_own] presentations of the stage's items (repeats expanded) */
    int n_own;
    const Item **rep;           /* [n_rep] pre-training presentations (fine-tuning replay) */
    const Item **rep_tmp;       /* [n_rep] scratch for the epoch's replay draw */
    int n_rep;
    int n_replay;               /* replayed presentations an epoch (<= n_rep) */
    int n_pres;                 /* presentations an epoch: n_own + n_replay */
    const Item **order;         /* [n_pres] the current epoch's order */
    long epoch;                 /* epoch that order holds, -1 none */
    uint64_t seed;
} Stream;

/* Presentations of an item an epoch: its repeat (celebrity fame), times the recipe's
 * mc_repeat for the letter multiple-choice formats (the letter skill is learned per fact
 * and late; a person's question with the face or by name mc_face_repeat / mc_name_repeat
 * times instead when set: the letter with the face is the last to come) and
 * general_repeat for the general formats genbench tests (scenes and facts: the figures are
 * learned late, and fine-tuning's replay must keep both). */
static int item_presentations(const Item *it, const Recipe *rc) {
    int r = it->repeat > 0 ? it->repeat : 1;
    if (format_is_mc(it->format)) {
        int k = it->format != FMT_MC ? 0 : it->image >= 0 ? rc->mc_face_repeat : rc->mc_name_repeat;
        if (k <= 0) k = rc->mc_repeat;
        if (k > 1) r *= k;
    }
    if (format_is_general(it->format) && rc->general_repeat > 1) r *= rc->general_repeat;
    return r;
}

/* Items of `stages` in `formats` (FMT_ALL: every one) and `modality` without the excluded
 * people, expanded by item_presentations (World order); *n gets the count. The selection
 * is returned in *sel (free it). */
static const Item **presentations(const World *w, int stages, unsigned formats, int modality, const int *exclude,
                                  int n_exclude, const Recipe *rc, const Item ***sel, int *n_sel, int *n) {
    Select q = {stages, formats, modality, n_exclude ? exclude : NULL, n_exclude, 1};
    *sel = world_select(w, &q, n_sel);
    int total = 0;
    for (int i = 0; i < *n_sel; i++) total += item_presentations((*sel)[i], rc);
    const Item **p = xmalloc((size_t)(total ? total : 1) * sizeof *p);
    int k = 0;
    for (int i = 0; i < *n_sel; i++)
        for (int r = item_presentations((*sel)[i], rc); r > 0; r--) p[k++] = (*sel)[i];
    *n = total;
    return p;
}

/* The stage's presentations, plus for fine-tuning with replay > 0 a pool of pre-training
 * presentations of which replay x (fine-tuning presentations) are mixed into every epoch
 * (a fresh draw each epoch), so that base_ft keeps what base_pt knew. */
static void stream_init(Stream *s, const World *w, int stage, unsigned formats, int modality, const int *exclude,
                        int n_exclude, uint64_t seed, const Recipe *rc) {
    double replay = rc->replay;
    memset(s, 0, sizeof *s);
    s->w = w;
    s->seed = seed;
    s->pres = presentations(w, stage, formats, modality, exclude, n_exclude, rc, &s->items, &s->n_items, &s->n_own);
    if (s->n_own == 0) die_input(w->dir, "no %s items to train on", stage_name(stage));
    if (stage == STAGE_FT && replay > 0) {
        const Item **sel;
        int n_sel;
        s->rep = presentations(w, STAGE_PT, FMT_ALL, MOD_ANY, exclude, n_exclude, rc, &sel, &n_sel, &s->n_rep);
        free((void *)sel);
        s->n_replay = (int)lround(replay * s->n_own);
        if (s->n_replay > s->n_rep) s->n_replay = s->n_rep;
        s->rep_tmp = xmalloc((size_t)(s->n_rep ? s->n_rep : 1) * sizeof *s->rep_tmp);
    }
    s->n_pres = s->n_own + s->n_replay;
    s->order = xmalloc((size_t)s->n_pres * sizeof *s->order);
    s->epoch = -1;
}

static void stream_free(Stream *s) {
    free((void *)s->items);
    free((void *)s->pres);
    free((void *)s->rep);
    free((void *)s->rep_tmp);
    free((void *)s->order);
}

/* The item of example k (global example number). The epoch's order is recomputed only
 * when k enters another epoch; it depends on (seed, epoch) alone, so a resumed run that
 * starts in the middle of an epoch sees the same order. */
static const Item *stream_item(Stream *s, long k) {
    long e = k / s->n_pres;
    if (e != s->epoch) {
        memcpy(s->order, s->pres, (size_t)s->n_own * sizeof *s->order);
        Rng r;
        if (s->n_replay) {
            /* the first n_replay of a shuffle of the whole pre-training pool */
            memcpy(s->rep_tmp, s->rep, (size_t)s->n_rep * sizeof *s->rep_tmp);
            stream_rng(&r, s->seed, "replay", (uint64_t)e);
            for (int i = 0; i < s->n_replay; i++) {
                int j = i + (int)rng_below(&r, (uint32_t)(s->n_rep - i));
                const Item *t = s->rep_tmp[i]; s->rep_tmp[i] = s->rep_tmp[j]; s->rep_tmp[j] = t;
                s->order[s->n_own + i] = s->rep_tmp[i];
            }
        }
        /* Fisher-Yates over the epoch (rng_shuffle_int works on ints only) */
        stream_rng(&r, s->seed, "order", (uint64_t)e);
        for (int i = s->n_pres - 1; i > 0; i--) {
            int j = (int)rng_below(&r, (uint32_t)(i + 1));
            const Item *t = s->order[i]; s->order[i] = s->order[j]; s->order[j] = t;
        }
        s->epoch = e;
    }
    return s->order[k % s->n_pres];
}

/* Length bucketing: TRAIN_BUCKET consecutive batches of the example stream form a
 * "bucket"; its examples are rendered at once, sorted by length and cut into batches,
 * which are then taken in a shuffled order. Rows of a batch then have similar lengths, so
 * little of the [B, T] work is padding; the order within and across epochs stays random. */
typedef struct Example {
    long k;                     /* global example number (augmentation stream) */
    const Item *item;
    int n, start, has_image;    /* token count, first answer token, image? */
    int merged;                 /* positions after image expansion (sort key) */
    int *ids;                   /* into Feed.ids */
} Example;

/* Per-step buffers, allocated once. */
typedef struct Feed {
    int B, nb;                  /* batch size, batches per bucket */
    long bucket;                /* bucket held, -1 none */
    Example *ex;                /* [nb * B] sorted by (merged, k) */
    int *batch_order;           /* [nb] shuffled order of the bucket's batches */
    int *ids;                   /* [nb * B * MAX_IDS] */
    Batch bt;
    float *pixels;              /* [B][PIX] */
    char q[MAX_TEXT], a[MAX_TEXT];
    const Item **items;         /* [B] items of the current step (on_batch hook) */
    long padded;                /* B * T summed over steps (padding efficiency) */
} Feed;

static void feed_init(Feed *f, int B) {
    memset(f, 0, sizeof *f);
    f->B = B;
    f->nb = TRAIN_BUCKET;
    f->bucket = -1;
    f->ex = xmalloc((size_t)f->nb * B * sizeof *f->ex);
    f->batch_order = xmalloc((size_t)f->nb * sizeof *f->batch_order);
    f->ids = xmalloc((size_t)f->nb * B * MAX_IDS * sizeof *f->ids);
    batch_init(&f->bt, B, MAX_IDS, TOK_PAD);
    f->pixels = xmalloc((size_t)B * PIX * sizeof *f->pixels);
    f->items = xmalloc((size_t)B * sizeof *f->items);
}

static void feed_free(Feed *f) {
    free(f->ex); free(f->batch_order); free(f->ids); free(f->pixels); free(f->items);
    batch_free(&f->bt);
}

static int cmp_example(const void *pa, const void *pb) {
    const Example *a = pa, *b = pb;
    if (a->merged != b->merged) return a->merged < b->merged ? -1 : 1;
    return (a->k > b->k) - (a->k < b->k);
}

/* Renders and tokenises every example of bucket j, sorts them, shuffles the batches. */
static void feed_bucket(Feed *f, Stream *s, const Tokenizer *tok, int n_patches, long j) {
    int n = f->nb * f->B;
    for (int i = 0; i < n; i++) {
        Example *e = &f->ex[i];
        e->k = j * n + i;
        e->item = stream_item(s, e->k);
        e->ids = f->ids + (size_t)i * MAX_IDS;
        Rng rr;
        stream_rng(&rr, s->seed, "render", (uint64_t)e->k);
        if (item_render(e->item, &rr, f->q, sizeof f->q, f->a, sizeof f->a, &e->has_image) != 0)
            die_internal("item %d renders longer than %d bytes", e->item->index, MAX_TEXT);
        e->n = tok_encode_chat(tok, f->q, e->has_image, f->a, e->ids, MAX_IDS, &e->start);
        if (e->n < 0) die_internal("item %d is longer than %d tokens", e->item->index, MAX_IDS);
        e->merged = e->n + (e->has_image ? n_patches - 1 : 0);
    }
    qsort(f->ex, (size_t)n, sizeof *f->ex, cmp_example);
    for (int i = 0; i < f->nb; i++) f->batch_order[i] = i;
    Rng r;
    stream_rng(&r, s->seed, "bucket", (uint64_t)j);
    rng_shuffle_int(&r, f->batch_order, f->nb);
    f->bucket = j;
}

/* Fills the batch of `step`. Returns the tokens (merged positions) of its rows. */
static long feed_step(Feed *f, Stream *s, const Tokenizer *tok, int n_patches, long step) {
    long j = step / f->nb;
    if (j != f->bucket) feed_bucket(f, s, tok, n_patches, j);
    const Example *ex = f->ex + (size_t)f->batch_order[step % f->nb] * f->B;
    batch_clear(&f->bt);
    long tokens = 0;
    int T = 0;
    for (int b = 0; b < f->B; b++) {
        const Example *e = &ex[b];
        f->items[b] = e->item;
        const float *px = NULL;
        if (e->has_image) {
            Rng ra;
            stream_rng(&ra, s->seed, "aug", (uint64_t)e->k);
            float *dst = f->pixels + (size_t)b * PIX;
            world_image_pixels(s->w, e->item->image, &ra, dst);
            px = dst;
        }
        batch_add(&f->bt, e->ids, e->n, e->start, px);
        tokens += e->merged;
        if (e->merged > T) T = e->merged;
    }
    f->padded += (long)T * f->B;
    return tokens;
}

/* ============================================================================
 * Training state (OUT.state): one binary file, written atomically. */

/* Where a run from scratch is: its warm-ups in this order, then the main loop. */
enum { PH_VISION, PH_MIXED, PH_MCW, PH_SCENE, PH_MAIN };

typedef struct State {
    int phase;                  /* PH_*: the part in progress (PH_MAIN: the main loop) */
    long phase_step;            /* steps done in that warm-up */
    double phase_tail;          /* its loss summed over its last LOSS_RING steps so far, and how many */
    int phase_ntail;
    double warm_secs[PH_MAIN];  /* each warm-up's time, all sessions (NAN: it did not run) */
    long step;                  /* steps done */
    long tokens;                /* tokens trained so far */
    double seconds;             /* training time so far (all sessions) */
    float ring[LOSS_RING];      /* losses of the last steps, ring by step % LOSS_RING */
    int n_curve;
    float curve[CURVE_MAX][2];  /* (step, mean loss since the previous point) */
} State;

typedef struct Buf { char *p; size_t n, cap; } Buf;
static void buf_put(Buf *b, const void *x, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}
/* A float block, or zeros when it does not exist yet (AdamW moments before step 1). */
static void buf_floats(Buf *b, const float *x, size_t n) {
    if (x) { buf_put(b, x, n * sizeof(float)); return; }
    float z[256] = {0};
    for (size_t i = 0; i < n; i += 256) buf_put(b, z, (n - i < 256 ? n - i : 256) * sizeof(float));
}

/* Layout (native byte order: a state is resumed on the machine that wrote it):
 * magic[8], fingerprint u64, State, opt_step, n_floats u64, lora floats u64, then w, m, v
 * and, with adapters, the LoRA w, m, v. */
static void state_save(const char *path, uint64_t fp, const Model *m, const State *st) {
    Buf b = {0};
    buf_put(&b, STATE_MAGIC, 8);
    buf_put(&b, &fp, sizeof fp);
    buf_put(&b, st, sizeof *st);
    buf_put(&b, &m->opt_step, sizeof m->opt_step);
    uint64_t nf = m->n_floats, nl = m->lora.attached ? m->lora.n_floats : 0;
    buf_put(&b, &nf, sizeof nf);
    buf_put(&b, &nl, sizeof nl);
    buf_floats(&b, m->w, nf);
    buf_floats(&b, m->m, nf);
    buf_floats(&b, m->v, nf);
    if (nl) {
        buf_floats(&b, m->lora.w, nl);
        buf_floats(&b, m->lora.m, nl);
        buf_floats(&b, m->lora.v, nl);
    }
    write_file_atomic(path, b.p, b.n);
    free(b.p);
}

/* Restores a state written for fingerprint fp into m and st; returns 0 if the file is
 * absent or belongs to another run (then nothing is changed). */
static int state_load(const char *path, uint64_t fp, Model *m, State *st) {
    if (!file_exists(path)) return 0;
    /* Any mismatch (magic, fingerprint, sizes) means "not ours": start afresh. */
    size_t n;
    char *p = read_file(path, &n);
    uint64_t nf = m->n_floats, nl = m->lora.attached ? m->lora.n_floats : 0, fnf, fnl, ffp;
    size_t head = 8 + sizeof ffp + sizeof *st + sizeof m->opt_step + 2 * sizeof(uint64_t);
    size_t need = head + 3 * (nf + nl) * sizeof(float);
    if (n < head || memcmp(p, STATE_MAGIC, 8) != 0) { free(p); return 0; }
    size_t o = 8;
    memcpy(&ffp, p + o, sizeof ffp); o += sizeof ffp;
    if (ffp != fp) { free(p); return 0; }
    State s;
    long opt_step;
    memcpy(&s, p + o, sizeof s); o += sizeof s;
    memcpy(&opt_step, p + o, sizeof opt_step); o += sizeof opt_step;
    memcpy(&fnf, p + o, sizeof fnf); o += sizeof fnf;
    memcpy(&fnl, p + o, sizeof fnl); o += sizeof fnl;
    if (fnf != nf || fnl != nl || n != need) { free(p); return 0; }
    if (s.phase < PH_VISION || s.phase > PH_MAIN || s.phase_step < 0 || s.step < 0) { free(p); return 0; }
    *st = s;
    /* Restore the optimizer exactly: step count (bias correction), m and v. */
    m->opt_step = opt_step;
    size_t bytes = nf * sizeof(float);
    if (!m->m) { m->m = xmalloc(bytes); m->v = xmalloc(bytes); }
    memcpy(m->w, p + o, bytes); o += bytes;
    memcpy(m->m, p + o, bytes); o += bytes;
    memcpy(m->v, p + o, bytes); o += bytes;
    if (nl) {
        bytes = nl * sizeof(float);
        if (!m->lora.m) { m->lora.m = xmalloc(bytes); m->lora.v = xmalloc(bytes); }
        memcpy(m->lora.w, p + o, bytes); o += bytes;
        memcpy(m->lora.m, p + o, bytes); o += bytes;
        memcpy(m->lora.v, p + o, bytes); o += bytes;
    }
    CHECK(o == n);
    free(p);
    return 1;
}

/* ============================================================================
 * train_run */

/* The effective settings of a run (recipe + overrides). */
typedef struct Plan {
    Recipe r;
    long steps;
    const char *preset;
} Plan;

Recipe train_recipe_for(const TrainOpts *o, const char *preset) {
    Recipe r = train_recipe(o->preset ? o->preset : preset, o->stage);
    if (o->epochs > 0) r.epochs = o->epochs;
    if (o->batch > 0) r.batch = o->batch;
    if (o->lr > 0) r.lr = o->lr;
    if (o->warmup >= 0) r.warmup = o->warmup;
    if (o->schedule >= 0) r.schedule = (LrKind)o->schedule;
    if (o->mode >= 0) r.mode = (TrainMode)o->mode;
    if (o->lora_r > 0) r.lora_r = o->lora_r;
    if (o->lora_alpha > 0) r.lora_alpha = o->lora_alpha;
    if (o->replay >= 0) r.replay = o->replay;
    if (o->vision_lr >= 0) r.vision_lr = (float)o->vision_lr;
    if (o->mc_repeat > 0) {     /* every MC item K times, unless face / name are given too */
        r.mc_repeat = o->mc_repeat;
        r.mc_face_repeat = r.mc_name_repeat = 0;
    }
    if (o->general_repeat > 0) r.general_repeat = o->general_repeat;
    if (o->vision_warmup >= 0) r.vision_warmup = o->vision_warmup;
    if (o->mc_warmup >= 0) r.mc_warmup = o->mc_warmup;
    if (o->scene_warmup >= 0) r.scene_warmup = o->scene_warmup;
    if (o->mixed_warmup >= 0) r.mixed_warmup = o->mixed_warmup;
    if (o->vision_quadrant >= 0) r.vision_quadrant = o->vision_quadrant;
    if (o->vision_shape >= 0) r.vision_shape = o->vision_shape;
    if (o->warm_restart >= 0) r.warm_restart = o->warm_restart;
    if (o->mc_face_repeat > 0) r.mc_face_repeat = o->mc_face_repeat;
    if (o->mc_name_repeat > 0) r.mc_name_repeat = o->mc_name_repeat;
    return r;
}

/* Recipe of the preset, then every TrainOpts override; steps from epochs unless given. */
static Plan make_plan(const TrainOpts *o, const World *w, long n_pres) {
    Plan p;
    p.preset = o->preset ? o->preset : w->preset.name;
    p.r = train_recipe_for(o, w->preset.name);
    if (o->base || p.r.mode != TRAIN_FULL) p.r.vision_warmup = 0;   /* a random tower, trained in full */
    if (!p.r.vision_warmup) p.r.vision_quadrant = p.r.vision_shape = 0;
    if (o->base || o->stage != STAGE_PT) p.r.mc_warmup = p.r.scene_warmup = p.r.mixed_warmup = p.r.warm_restart = 0;   /* from scratch only */
    p.steps = o->steps > 0 ? o->steps : (long)ceil(p.r.epochs * (double)n_pres / p.r.batch);
    if (p.steps < 1) p.steps = 1;
    return p;
}

/* Everything that determines the bytes of the result, hashed: a saved state is only
 * trusted by a run with the same fingerprint. */
static uint64_t run_fingerprint(const TrainOpts *o, const World *w, const Plan *p, uint64_t base_hash) {
    uint64_t h = HASH64_INIT;
    h = hash64(&o->stage, sizeof o->stage, h);
    h = hash64(&o->seed, sizeof o->seed, h);
    h = hash64(&w->fingerprint, sizeof w->fingerprint, h);
    h = hash64(&base_hash, sizeof base_hash, h);
    h = hash64(&p->steps, sizeof p->steps, h);
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%g %d %g %ld %d %g %g %d %d %g %s %g %g %d %ld %d", p->r.epochs, p->r.batch,
                     (double)p->r.lr, p->r.warmup, (int)p->r.schedule, (double)p->r.weight_decay,
                     (double)p->r.clip, (int)p->r.mode, p->r.lora_r, (double)p->r.lora_alpha, p->r.lora_targets,
                     (double)p->r.replay, (double)p->r.vision_lr, p->r.mc_repeat, p->r.vision_warmup, p->r.general_repeat);
    h = hash64(buf, (size_t)n, h);
    if (p->r.mc_warmup) {       /* only when on (older states stay valid) */
        h = hash64(&p->r.mc_warmup, sizeof p->r.mc_warmup, h);
        h = hash64(TRAIN_MCW_SCHEDULE, sizeof TRAIN_MCW_SCHEDULE, h);
    }
    if (p->r.scene_warmup) {    /* likewise */
        h = hash64("scene warm-up", sizeof "scene warm-up" - 1, h);
        h = hash64(&p->r.scene_warmup, sizeof p->r.scene_warmup, h);
    }
    if (p->r.mixed_warmup) {    /* likewise */
        h = hash64(TRAIN_MIXW_SCHEDULE, sizeof TRAIN_MIXW_SCHEDULE - 1, h);
        h = hash64(&p->r.mixed_warmup, sizeof p->r.mixed_warmup, h);
    }
    if (p->r.mc_face_repeat || p->r.mc_name_repeat) {    /* likewise */
        h = hash64(&p->r.mc_face_repeat, sizeof p->r.mc_face_repeat, h);
        h = hash64(&p->r.mc_name_repeat, sizeof p->r.mc_name_repeat, h);
    }
    if (p->r.vision_quadrant) h = hash64(VISION_QUADRANT_TAG, sizeof VISION_QUADRANT_TAG - 1, h);   /* likewise */
    if (p->r.vision_shape) h = hash64(VISION_SHAPE_TAG, sizeof VISION_SHAPE_TAG - 1, h);               /* likewise */
    if (p->r.warm_restart) {    /* likewise */
        h = hash64(TRAIN_RESTART_SCHEDULE, sizeof TRAIN_RESTART_SCHEDULE - 1, h);
        h = hash64(&p->r.warm_restart, sizeof p->r.warm_restart, h);
    }
    for (int i = 0; i < o->n_exclude; i++) h = hash64(&o->exclude[i], sizeof o->exclude[i], h);
    return h;
}

/* The training record beyond checkpoint.h's Provenance fields. */
static Json *provenance_extra(const TrainOpts *o, const World *w, const Plan *p, const State *st,
                        double final_loss, uint64_t base_hash) {
    Json *j = json_new_object();
    char hex[32];
    json_set(j, "data_preset", json_new_string(w->preset.name));
    if (o->base) {
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)base_hash);
        json_set(j, "base_weights_hash", json_new_string(hex));
    }
    json_set(j, "epochs", json_new_number(p->r.epochs));
    json_set(j, "batch_size", json_new_number(p->r.batch));
    json_set(j, "learning_rate", json_new_number(p->r.lr));
    json_set(j, "warmup_steps", json_new_number((double)p->r.warmup));
    json_set(j, "lr_scheduler", json_new_string(sched_name(p->r.schedule)));
    json_set(j, "weight_decay", json_new_number(p->r.weight_decay));
    json_set(j, "max_grad_norm", json_new_number(p->r.clip));
    json_set(j, "vision_lr_scale", json_new_number(p->r.vision_lr));
    json_set(j, "mc_repeat", json_new_number(p->r.mc_repeat));
    json_set(j, "mc_face_repeat", json_new_number(p->r.mc_face_repeat ? p->r.mc_face_repeat : p->r.mc_repeat));
    json_set(j, "mc_name_repeat", json_new_number(p->r.mc_name_repeat ? p->r.mc_name_repeat : p->r.mc_repeat));
    json_set(j, "general_repeat", json_new_number(p->r.general_repeat));
    if (o->stage == STAGE_PT && !o->base) {
        json_set(j, "vision_warmup_steps", json_new_number((double)p->r.vision_warmup));
        if (p->r.vision_quadrant) json_set(j, "vision_warmup_quadrant", json_new_bool(1));
        if (p->r.vision_shape) json_set(j, "vision_warmup_shape", json_new_bool(1));
        json_set(j, "mc_warmup_steps", json_new_number((double)p->r.mc_warmup));
        json_set(j, "scene_warmup_steps", json_new_number((double)p->r.scene_warmup));
        json_set(j, "mixed_warmup_steps", json_new_number((double)p->r.mixed_warmup));
        if (p->r.mixed_warmup) json_set(j, "mixed_warmup_lr", json_new_number((double)train_mixw_lr(p->r.warmup, p->r.warmup)));
        if (p->r.warm_restart) {
            json_set(j, "warm_restart_steps", json_new_number((double)p->r.warm_restart));
            json_set(j, "warm_restart_lr", json_new_number((double)(p->r.lr * TRAIN_RESTART_SCALE)));
        }
    }
    json_set(j, "finetuning", json_new_string(p->r.mode == TRAIN_LORA ? "lora_merged" : "full"));
    if (p->r.mode == TRAIN_LORA) {
        json_set(j, "lora_r", json_new_number(p->r.lora_r));
        json_set(j, "lora_alpha", json_new_number(p->r.lora_alpha));
        json_set(j, "lora_targets", json_new_string(p->r.lora_targets));
    }
    if (o->stage == STAGE_FT) json_set(j, "pretraining_replay", json_new_number(p->r.replay));
    Json *ex = json_new_array();
    for (int i = 0; i < o->n_exclude; i++) json_push(ex, json_new_number(w->people[o->exclude[i]].id));
    json_set(j, "excluded_people", ex);
    json_set(j, "tokens", json_new_number((double)st->tokens));
    json_set(j, "final_loss", json_new_number(final_loss));
    return j;
}

/* OUT/training.json: what changes from run to run (time, threads) and the loss curve. */
static void write_training_log(const char *out, const Plan *p, const State *st, double final_loss,
                               long resumed_at) {
    static const char *const key[PH_MAIN] = {"vision_warmup_seconds", "mixed_warmup_seconds", "mc_warmup_seconds",
                                             "scene_warmup_seconds"};
    Json *j = json_new_object();
    json_set(j, "steps", json_new_number((double)(p->steps + p->r.warm_restart)));
    if (p->r.warm_restart) json_set(j, "warm_restart_steps", json_new_number((double)p->r.warm_restart));
    json_set(j, "tokens", json_new_number((double)st->tokens));
    json_set(j, "seconds", json_new_number(round(st->seconds * 1000.0) / 1000.0));
    /* the warm-ups', before the main loop's `seconds`, over every session (absent when one
     * did not run: none in the recipe, or the vision warm-up read from a cache) */
    for (int k = 0; k < PH_MAIN; k++)
        if (!isnan(st->warm_secs[k])) json_set(j, key[k], json_new_number(round(st->warm_secs[k] * 1000.0) / 1000.0));
    json_set(j, "tokens_per_second", json_new_number(round(st->tokens / (st->seconds > 0 ? st->seconds : 1))));
    json_set(j, "threads", json_new_number(kern_threads()));
    json_set(j, "simd", json_new_string(kern_simd_name()));
    json_set(j, "resumed_at_step", json_new_number((double)resumed_at));
    json_set(j, "final_loss", json_new_number(final_loss));
    Json *c = json_new_array();
    for (int i = 0; i < st->n_curve; i++) {
        Json *pt = json_new_array();
        json_push(pt, json_new_number(st->curve[i][0]));
        json_push(pt, json_new_number(st->curve[i][1]));
        json_push(c, pt);
    }
    json_set(j, "loss_curve", c);
    char *path = xasprintf("%s/training.json", out);
    json_save(path, j);
    free(path);
    json_free(j);
}

/* Setup (world, tokenizer, model, stream, plan, resume), the step loop, then the
 * checkpoint, or the state when the test hook stops the run. */
/* ============================================================================
 * The vision warm-up. LLaVA starts from a CLIP tower trained on 400M image-text pairs; a
 * pulse model starts from random weights, and through the decoder at a rate where it does
 * not collapse the tower never learns the outline of a figure (docs/training.md). So
 * pre-training from scratch first trains the tower and the projector alone, for
 * Recipe.vision_warmup steps, to name each quadrant's figure and colour of the training
 * scenes: the (g/2)^2 projector outputs of a quadrant, concatenated, go through a linear
 * head per label kind, whose classes are (quadrant, value) pairs, so the features keep
 * where a figure is as well as what it is; and a linear decoder rebuilds every patch's
 * pixels from its projector output, for those scenes and as many other pre-training images
 * (faces: without it the tower forgets what they need). The heads are dropped afterwards;
 * the decoder is untouched. The labels are the scene_vqa items' own answers to
 * DATA_SCENE_Q_SHAPE and DATA_SCENE_Q_COLOUR (class 0: no figure in that quadrant). Two
 * more heads read each scene patch alone, the quadrant it is in (Recipe.vision_quadrant)
 * and the shape of the figure in that quadrant (Recipe.vision_shape): without them a
 * token holds its figure's colour but not its place or its shape, which only the
 * quadrant's four tokens together hold (docs/training.md, "The shape in every token"). On in
 * the small and paper recipes (paper's genbench scenes 64 -> 86.5%; small's 55 -> 62.5%:
 * its mix gives the scenes fewer presentations; docs/training.md), off in tiny (tests);
 * --vision-warmup N sets it. */

enum { VW_BATCH = 32, VW_MAX_CLASS = 64, VW_KINDS = 2 };
#define VW_LR 1e-3f                 /* the warm-up's peak learning rate (measured: docs/training.md) */

typedef struct SceneLabels {
    int n;                      /* scenes */
    int *image;                 /* [n] World image index */
    int *label;                 /* [n][VW_KINDS][4] class per quadrant */
    int n_class[VW_KINDS];      /* values seen + 1 ("nothing there") */
} SceneLabels;

/* The class of answer `a` among the values of kind k seen so far (added if new). */
static int scene_class(const World *w, const char **names, int *n, const char *a) {
    for (int c = 1; c < *n; c++)
        if (strcmp(names[c], a) == 0) return c;
    if (*n == VW_MAX_CLASS) die_input(w->dir, "vision warm-up: more than %d distinct scene answers", VW_MAX_CLASS - 1);
    names[*n] = a;
    return (*n)++;
}

static void scene_labels(const World *w, SceneLabels *sl) {
    static const char *const fmt[VW_KINDS] = {DATA_SCENE_Q_SHAPE, DATA_SCENE_Q_COLOUR};
    const char *names[VW_KINDS][VW_MAX_CLASS];
    memset(sl, 0, sizeof *sl);
    sl->image = xmalloc((size_t)(w->n_items ? w->n_items : 1) * sizeof(int));
    sl->label = xmalloc((size_t)(w->n_items ? w->n_items : 1) * VW_KINDS * 4 * sizeof(int));
    for (int k = 0; k < VW_KINDS; k++) sl->n_class[k] = 1;
    char q[128];
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        if (it->stage != STAGE_PT || it->format != FMT_SCENE_VQA || it->image < 0) continue;
        int *lab = sl->label + (size_t)sl->n * VW_KINDS * 4;
        for (int k = 0; k < VW_KINDS; k++)
            for (int quad = 0; quad < 4; quad++) {
                snprintf(q, sizeof q, fmt[k], data_quadrant_names[quad]);
                lab[k * 4 + quad] = 0;
                for (int v = 0; v < it->n_variants; v++)
                    if (strcmp(it->variants[v].question, q) == 0)
                        lab[k * 4 + quad] = scene_class(w, names[k], &sl->n_class[k], it->variants[v].answer);
            }
        /* every scene has a figure: an item that names none asks other questions of a
         * scene listed already (Preset.scene_lookup's) */
        int any = 0;
        for (int k = 0; k < VW_KINDS * 4; k++) any |= lab[k] != 0;
        if (any) sl->image[sl->n++] = it->image;
    }
}

/* The quadrant (0 top left .. 3 bottom right) of patch `pt` in a g x g grid. */
static int patch_quadrant(int pt, int g) { return ((pt / g) / (g / 2)) * 2 + (pt % g) / (g / 2); }

double train_vision_warmup(Model *m, const World *w, long steps, uint64_t seed, int heads, double *first) {
    int quadrant = (heads & TRAIN_VW_QUADRANT) != 0, shape = (heads & TRAIN_VW_SHAPE) != 0;
    const float lr = VW_LR;
    SceneLabels sl;
    scene_labels(w, &sl);
    int g = m->cfg.image_size / m->cfg.patch_size, h = g / 2, per = h * h, D = m->cfg.hidden_size;
    if (first) *first = NAN;
    if (sl.n == 0 || steps <= 0 || g % 2 != 0) {
        free(sl.image); free(sl.label);
        return NAN;
    }
    /* every pre-training image (faces, anonymous faces, scenes), for the reconstruction */
    int n_pool = 0, P = m->cfg.patch_size, S = m->cfg.image_size, cpp = 3 * P * P, Np = g * g;
    int *pool = xmalloc((size_t)(w->n_images ? w->n_images : 1) * sizeof(int));
    unsigned char *in_pool = xcalloc((size_t)(w->n_images ? w->n_images : 1), 1);
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        if (it->stage == STAGE_PT && it->image >= 0 && !in_pool[it->image]) { in_pool[it->image] = 1; pool[n_pool++] = it->image; }
    }
    free(in_pool);
    /* heads: [4 n_class[k], per D] each, one block of floats for weights, grads, moments */
    size_t off[VW_KINDS + 2] = {0};
    for (int k = 0; k < VW_KINDS; k++) off[k + 1] = off[k] + (size_t)4 * sl.n_class[k] * per * D;
    off[VW_KINDS + 1] = off[VW_KINDS] + (size_t)cpp * D;         /* the reconstruction head [cpp, D] */
    size_t off_s = off[VW_KINDS + 1] + (quadrant ? (size_t)4 * D : 0);  /* the quadrant head [4, D] */
    size_t nh = off_s + (shape ? (size_t)sl.n_class[0] * D : 0);         /* the shape head [n_class, D] */
    float *hw = xmalloc(nh * sizeof(float)), *hg = xcalloc(nh, sizeof(float));
    float *m1 = xcalloc(nh, sizeof(float)), *m2 = xcalloc(nh, sizeof(float));
    Rng r;
    stream_rng(&r, seed, "vision-head", 0);
    for (size_t k = 0; k < nh; k++) hw[k] = 0.02f * (float)rng_normal(&r);
    Tensor head[VW_KINDS + 1];
    {
        int hs[2] = {cpp, D};
        head[VW_KINDS] = tensor_wrap(hw + off[VW_KINDS], hg + off[VW_KINDS], 2, hs);
    }
    for (int k = 0; k < VW_KINDS; k++) {
        int hs[2] = {4 * sl.n_class[k], per * D};
        head[k] = tensor_wrap(hw + off[k], hg + off[k], 2, hs);
    }
    /* the quadrant of every scene patch: rows [0, B Np) of the features, each its own class */
    Tensor qhead = {0};
    int *qtgt = NULL;
    if (quadrant) {
        int hs[2] = {4, D};
        qhead = tensor_wrap(hw + off[VW_KINDS + 1], hg + off[VW_KINDS + 1], 2, hs);
        qtgt = xmalloc((size_t)VW_BATCH * Np * sizeof(int));
        for (int i = 0; i < VW_BATCH * Np; i++) qtgt[i] = patch_quadrant(i % Np, g);
    }
    /* the shape of the figure in every scene patch's quadrant (class 0: none), each patch
     * its own row, filled per batch */
    Tensor shead = {0};
    int *stgt = NULL;
    if (shape) {
        int hs[2] = {sl.n_class[0], D};
        shead = tensor_wrap(hw + off_s, hg + off_s, 2, hs);
        stgt = xmalloc((size_t)VW_BATCH * Np * sizeof(int));
    }
    model_set_train(m, TRAIN_FULL, NULL);
    model_train_only(m, "vision_tower.,multi_modal_projector.");
    AdamW opt = adamw_default();
    opt.weight_decay = 0.0f;
    opt.vision_lr_scale = 1.0f;
    Tape tp;
    tape_init(&tp, (size_t)16 << 20);
    float *pix = xmalloc((size_t)2 * VW_BATCH * PIX * sizeof(float));
    float *target = xmalloc((size_t)2 * VW_BATCH * Np * cpp * sizeof(float));
    const float *pp[2 * VW_BATCH];
    int idx[VW_BATCH * 4 * 64], tgt[VW_KINDS][VW_BATCH * 4];
    CHECK(per <= 64);
    long warm = steps / 20 + 1;
    double tail = 0.0;
    int n_tail = 0;
    for (long st = 0; st < steps; st++) {
        Rng pick;
        stream_rng(&pick, seed, "vision-warmup", (uint64_t)st);
        for (int b = 0; b < VW_BATCH; b++) {
            int sc = (int)rng_below(&pick, (uint32_t)sl.n);
            Rng aug;
            stream_rng(&aug, seed, "vision-aug", (uint64_t)st * VW_BATCH + (uint64_t)b);
            world_image_pixels(w, sl.image[sc], &aug, pix + (size_t)b * PIX);
            pp[b] = pix + (size_t)b * PIX;
            if (shape)
                for (int pt = 0; pt < Np; pt++)
                    stgt[b * Np + pt] = sl.label[(size_t)sc * VW_KINDS * 4 + patch_quadrant(pt, g)];
            for (int quad = 0; quad < 4; quad++) {
                int row = b * 4 + quad, y0 = (quad / 2) * h, x0 = (quad % 2) * h, j = 0;
                for (int k = 0; k < VW_KINDS; k++)
                    tgt[k][row] = quad * sl.n_class[k] + sl.label[((size_t)sc * VW_KINDS + k) * 4 + quad];
                for (int dy = 0; dy < h; dy++)
                    for (int dx = 0; dx < h; dx++) idx[row * per + j++] = b * g * g + (y0 + dy) * g + x0 + dx;
            }
        }
        for (int b = VW_BATCH; b < 2 * VW_BATCH; b++) {               /* any pre-training image */
            Rng aug;
            stream_rng(&aug, seed, "vision-aug-any", (uint64_t)st * VW_BATCH + (uint64_t)(b - VW_BATCH));
            world_image_pixels(w, pool[rng_below(&pick, (uint32_t)n_pool)], &aug, pix + (size_t)b * PIX);
            pp[b] = pix + (size_t)b * PIX;
        }
        /* reconstruction targets: each patch's pixels in the patch embedding's (c, i, j) order */
        for (int b = 0; b < 2 * VW_BATCH; b++)
            for (int pt = 0; pt < Np; pt++)
                for (int ch = 0; ch < 3; ch++)
                    for (int i = 0; i < P; i++)
                        memcpy(target + ((size_t)(b * Np + pt) * cpp + (size_t)(ch * P + i) * P),
                               pix + (size_t)b * PIX + ((size_t)ch * S + (pt / g) * P + i) * S + (pt % g) * P,
                               (size_t)P * sizeof(float));
        model_zero_grad(m);
        memset(hg, 0, nh * sizeof(float));
        Tensor *fall = model_image_features(m, &tp, pp, 2 * VW_BATCH);   /* [2B * g * g, D] */
        int ts[2] = {2 * VW_BATCH * Np, cpp};
        Tensor *diff = op_add(&tp, op_linear(&tp, fall, &head[VW_KINDS], NULL),
                              op_scale(&tp, tensor_const(&tp, 2, ts, target), -1.0f));
        Tensor *rec = op_scale(&tp, op_sum(&tp, op_mul(&tp, diff, diff)), 1.0f / ((float)ts[0] * cpp));
        int qs[2] = {VW_BATCH * 4, per * D};                             /* scenes: rows [0, B g g) */
        Tensor *x = op_reshape(&tp, op_gather_rows(&tp, fall, idx, VW_BATCH * 4 * per), 2, qs);
        Tensor *sum = NULL;
        for (int k = 0; k < VW_KINDS; k++) {
            Tensor *lp = op_sum(&tp, op_token_logprob(&tp, op_linear(&tp, x, &head[k], NULL), tgt[k]));
            sum = sum ? op_add(&tp, sum, lp) : lp;
        }
        Tensor *loss = op_add(&tp, op_scale(&tp, sum, -1.0f / (VW_BATCH * 4)), rec);
        for (int k = 0; k < 2; k++) {        /* the per-token heads: quadrant, shape */
            if (!(k ? shape : quadrant)) continue;
            Tensor *xs = op_slice_rows(&tp, fall, 0, VW_BATCH * Np);
            Tensor *lq = op_sum(&tp, op_token_logprob(&tp, op_linear(&tp, xs, k ? &shead : &qhead, NULL), k ? stgt : qtgt));
            loss = op_add(&tp, loss, op_scale(&tp, lq, -1.0f / (VW_BATCH * Np)));
        }
        if (st == 0 && first) *first = loss->data[0];
        if (st >= steps - 100) { tail += loss->data[0]; n_tail++; }
        tape_backward(&tp, loss);
        model_clip_grad(m, 1.0);
        float lr_t = lr_schedule(LR_COSINE, st, steps, warm, lr);
        model_adamw_step(m, &opt, lr_t);
        adamw_array(hw, hg, m1, m2, nh, &opt, lr_t, st + 1);      /* the heads: no decay either */
        tape_reset(&tp);
    }
    model_reset_optimizer(m);
    tape_free(&tp);
    free(pix); free(target); free(pool); free(hw); free(hg); free(m1); free(m2); free(qtgt); free(stgt);
    free(sl.image); free(sl.label);
    return tail / n_tail;
}

/* One optimizer step on the batch: forward on the tape, backward into the grads, clip,
 * AdamW, drop the activations. Returns the loss; a non-finite one stops the run. */
static float train_step(Model *m, Tape *tp, const Batch *bt, const AdamW *opt, float clip, float lr,
                        const char *what, long step) {
    ForwardOpts fo;
    memset(&fo, 0, sizeof fo);
    model_zero_grad(m);
    ForwardOut out = model_forward(m, tp, bt, &fo);
    float loss = out.loss->data[0];
    if (!isfinite(loss)) die_internal("%s: the loss is %g at step %ld (diverged)", what, loss, step);
    tape_backward(tp, out.loss);
    model_clip_grad(m, clip);
    model_adamw_step(m, opt, lr);
    tape_reset(tp);
    return loss;
}

/* ============================================================================
 * The multiple-choice warm-up. Answering a multiple-choice question by its letter is a
 * skill of its own (find the option that is the answer, give the letter before it): in
 * the pre-training mix a 1M-parameter model never acquires it (letter accuracy at chance
 * while option likelihood is ~100%), but trained on the people's text-only questions and
 * their letter multiple choice alone it does, abruptly, after 2,500-3,000 steps at lr 1e-3
 * (docs/training.md, "Letter multiple choice"; when, depends on the seed). So pre-training
 * from scratch runs Recipe.mc_warmup such steps after the vision warm-up (and the mixed
 * warm-up, when on): the stage's text-only questions and letter multiple choice, about
 * people (the excluded people left out) and general facts, presented as in the main
 * loop, with the recipe's batch and clipping, at the learning rate of train_mcw_lr()
 * (constant after the recipe's ramp: a cosine decay lowers the rate just when the skill
 * appears, and on seed 2 it formed late or not at all); then the optimizer is reset and
 * the main loop starts. Its streams are
 * the main loop's under another seed, so its order, renderings and options are its own. */
float train_mcw_lr(long step, long warmup) { return lr_schedule(LR_CONSTANT, step, 0, warmup, TRAIN_MCW_LR); }

#define MCW_FORMATS (FMT_BIT(FMT_QA) | FMT_BIT(FMT_MC) | FMT_BIT(FMT_FACT) | FMT_BIT(FMT_FACT_MC))

/* The scene warm-up (Recipe.scene_warmup): after the multiple-choice warm-up, steps on
 * the scene captions, questions and letter multiple choice (image items) alone, with the
 * same rates, clipping and batches, its own stream seed; then the optimizer is reset.
 * Meant for the scenes, whose figures the decoder reads half the time in the pre-training
 * mix however often they come; measured on `small` (docs/training.md, "The scene
 * warm-up"), it moves the scenes only within a draw's noise, and what it buys is a firmer
 * letter skill (genbench's facts pass by letter at seeds 1-3). */
#define SCW_FORMATS (FMT_BIT(FMT_SCENE_CAPTION) | FMT_BIT(FMT_SCENE_VQA) | FMT_BIT(FMT_SCENE_MC))

/* The mixed warm-up (Recipe.mixed_warmup; small: 8,000 steps, `--mixed-warmup N`): first
 * after the vision warm-up, before the multiple-choice warm-up, steps that take in turn a
 * batch of the scene warm-up's items (even steps) and a batch of the multiple-choice
 * warm-up's text items (odd steps; a second stream), at train_mixw_lr(), a quarter of the
 * multiple-choice warm-up's rate; then the optimizer is reset. At 1e-3 the decoder learns
 * to read a scene's figures but for a third of the questions attends to the wrong
 * quadrant; at 2.5e-4, from a fresh decoder, it learns where to look, and the main loop
 * learns it back after the multiple-choice warm-up erased it (docs/training.md, "Where
 * the decoder looks"). */
float train_mixw_lr(long step, long warmup) { return train_mcw_lr(step, warmup) * TRAIN_MIXW_SCALE; }

/* A warm-up phase before the main loop: `steps` steps on the stage's items of `formats`
 * in `modality`, at lr(step, recipe's warm-up); with `mix` (text formats), every odd step
 * a batch of those instead, from a second stream. Its batches reach the on_batch hook as
 * steps -1 - (step0 + step). Returns its wall time in seconds. */
typedef struct Phase {
    const char *label;          /* progress bar: "pretrain: multiple-choice warm-up" */
    unsigned formats;
    int modality;
    uint64_t salt;              /* its stream seed: o->seed ^ salt (the second's: ^ 1) */
    long steps, step0;
    float (*lr)(long step, long warmup);
    unsigned mix;               /* 0: none */
} Phase;

/* Where a warm-up saves its state (every `every` seconds, > 0) and how many more steps
 * the test hook lets it take in this session (*budget; -1: no limit; it reaches 0 at the
 * stop). */
typedef struct PhaseSave {
    const char *path;
    uint64_t fp;
    double every;
    long *budget;
} PhaseSave;

/* Runs warm-up ph from st->phase_step (a resumed state) to its end, saving the state on
 * the way. Returns 1 when the test hook stopped it (state saved), 0 when it finished. */
static int train_phase(Model *m, const World *w, const Tokenizer *tok, const TrainOpts *o, const Recipe *r,
                       const Phase *ph, State *st, const PhaseSave *sv) {
    double t0 = now_seconds(), t_saved = t0, sec0 = isnan(st->warm_secs[st->phase]) ? 0.0 : st->warm_secs[st->phase];
    Stream s;
    Recipe wr = *r;             /* every MC item mc_repeat times, as measured */
    wr.mc_face_repeat = wr.mc_name_repeat = 0;
    stream_init(&s, w, STAGE_PT, ph->formats, ph->modality, o->exclude, o->n_exclude, o->seed ^ ph->salt, &wr);
    Feed f;
    feed_init(&f, r->batch);
    Stream s2;
    Feed f2;
    if (ph->mix) {
        stream_init(&s2, w, STAGE_PT, ph->mix, MOD_TEXT, o->exclude, o->n_exclude, o->seed ^ ph->salt ^ 1, &wr);
        feed_init(&f2, r->batch);
    }
    Tape tp;
    tape_init(&tp, (size_t)64 << 20);
    model_set_train(m, TRAIN_FULL, NULL);
    AdamW opt = adamw_default();
    opt.weight_decay = r->weight_decay;
    opt.vision_lr_scale = r->vision_lr;
    Progress pr;
    if (!o->quiet) progress_start(&pr, ph->label, ph->steps);
    int stopped = 0;
    for (long step = st->phase_step; step < ph->steps; step++) {
        int second = ph->mix && (step & 1);
        Feed *fs = second ? &f2 : &f;
        feed_step(fs, second ? &s2 : &s, tok, m->n_patches, ph->mix ? step / 2 : step);
        if (o->on_batch) o->on_batch(o->ctx, -1 - (ph->step0 + step), fs->items, r->batch);
        float loss = train_step(m, &tp, &fs->bt, &opt, r->clip, ph->lr(step, r->warmup), ph->label, step);
        if (o->on_step) o->on_step(o->step_ctx);
        if (step >= ph->steps - LOSS_RING) { st->phase_tail += loss; st->phase_ntail++; }
        st->phase_step = step + 1;
        double now = now_seconds();
        st->warm_secs[st->phase] = sec0 + (now - t0);
        if (!o->quiet) {
            char extra[32];
            snprintf(extra, sizeof extra, "loss %.3f", loss);
            progress_update(&pr, step + 1, extra);
        }
        /* as the main loop: every `every` seconds and at a test-hook stop, never after the
         * last step (the caller saves the state of the next part) */
        int stop = *sv->budget > 0 && --*sv->budget == 0 && step + 1 < ph->steps;
        if (step + 1 < ph->steps && (stop || (sv->every > 0 && now - t_saved >= sv->every))) {
            state_save(sv->path, sv->fp, m, st);
            t_saved = now;
        }
        if (stop) { stopped = 1; break; }
    }
    double final = st->phase_ntail ? st->phase_tail / st->phase_ntail : NAN;
    if (!o->quiet) {
        char extra[32];
        snprintf(extra, sizeof extra, stopped ? "stopped" : "final loss %.3f", final);
        progress_end(&pr, extra);
    }
    if (!stopped) model_reset_optimizer(m);
    model_set_train(m, r->mode, NULL);
    if (ph->mix) {
        feed_free(&f2);
        stream_free(&s2);
    }
    tape_free(&tp);
    feed_free(&f);
    stream_free(&s);
    return stopped;
}

int train_run(const TrainOpts *o) {
    CHECK(o->stage == STAGE_PT || o->stage == STAGE_FT);
    if (!o->out) die_input(NULL, "%s: --out is required", stage_name(o->stage));
    if (o->stage == STAGE_FT && !o->base) die_input(NULL, "finetune: --base is required");
    World *own = NULL;
    const World *w = o->world;
    if (!w) {
        if (!o->data_dir) die_input(NULL, "%s: --data is required", stage_name(o->stage));
        w = own = world_load(o->data_dir);
    }
    char *tok_path = xasprintf("%s/tokenizer.json", w->dir);
    Tokenizer *tok = tok_load(tok_path);

    /* The model: the base checkpoint, or a fresh init of the preset's model
     * (train_model_config) with the world tokenizer's vocabulary. */
    Model *m;
    uint64_t base_hash = 0;
    if (o->base) {
        m = load_checkpoint(o->base);
        char *p = xasprintf("%s/model.safetensors", o->base);
        base_hash = file_hash64(p);
        free(p);
        if (m->cfg.vocab_size != tok_vocab_size(tok))
            die_input(o->base, "vocab_size %d, but the world's tokenizer has %d tokens", m->cfg.vocab_size,
                      tok_vocab_size(tok));
    } else {
        LlavaConfig c = train_model_config(o->preset ? o->preset : w->preset.name, tok_vocab_size(tok));
        m = model_new(&c);
        model_init(m, o->seed);
    }

    Stream s;
    Plan p = make_plan(o, w, 0);
    stream_init(&s, w, o->stage, FMT_ALL, MOD_ANY, o->exclude, o->n_exclude, o->seed, &p.r);
    p = make_plan(o, w, s.n_pres);
    const Recipe *r = &p.r;
    if (r->mode == TRAIN_LORA) {
        LoraConfig lc = {r->lora_r, r->lora_alpha, 0.0f, r->lora_targets, o->seed};
        lora_attach(m, &lc);
    }
    /* Full: every parameter learns (vision tower and projector included: new faces must be
     * told apart). LoRA: only the adapters. */
    model_set_train(m, r->mode, NULL);
    AdamW opt = adamw_default();
    opt.weight_decay = r->weight_decay;
    opt.vision_lr_scale = r->vision_lr;

    /* Resume? */
    uint64_t fp = run_fingerprint(o, w, &p, base_hash);
    char *state_path = xasprintf("%s.state", o->out);
    State st;
    memset(&st, 0, sizeof st);
    int resumed = state_load(state_path, fp, m, &st);
    long resumed_at = resumed ? st.step : 0;
    if (!resumed)
        for (int k = 0; k < PH_MAIN; k++) st.warm_secs[k] = NAN;
    double every = o->state_every == 0 ? 30.0 : o->state_every;
    /* The warm-ups (pre-training from scratch; none in the recipe: straight to the main
     * loop). Each saves the state as the main loop does, and the state of the next part
     * when it ends: a run killed in one resumes there, with the same bytes. */
    if (st.phase == PH_VISION && r->vision_warmup > 0) {
        /* the warm-up's result depends on the initial weights, the world (every pre-training
         * image, whoever is excluded), the seed and the steps: nothing else */
        uint64_t vfp = hash64(VISION_CACHE_TAG, sizeof VISION_CACHE_TAG - 1, HASH64_INIT);
        vfp = hash64(m->w, m->n_floats * sizeof(float), vfp);
        vfp = hash64(&w->fingerprint, sizeof w->fingerprint, vfp);
        vfp = hash64(&o->seed, sizeof o->seed, vfp);
        vfp = hash64(&r->vision_warmup, sizeof r->vision_warmup, vfp);
        if (r->vision_quadrant) vfp = hash64(VISION_QUADRANT_TAG, sizeof VISION_QUADRANT_TAG - 1, vfp);
        if (r->vision_shape) vfp = hash64(VISION_SHAPE_TAG, sizeof VISION_SHAPE_TAG - 1, vfp);
        State vs;
        memset(&vs, 0, sizeof vs);
        if (o->vision_cache && state_load(o->vision_cache, vfp, m, &vs)) {
            model_reset_optimizer(m);           /* as the warm-up leaves it */
            model_set_train(m, r->mode, NULL);
            if (!o->quiet)
                fprintf(stderr, "%s: vision warm-up: %ld steps, read from %s\n", stage_name(o->stage),
                        r->vision_warmup, o->vision_cache);
        } else {
            double tw = now_seconds();
            double wl = train_vision_warmup(m, w, r->vision_warmup, o->seed,
                                           (r->vision_quadrant ? TRAIN_VW_QUADRANT : 0) | (r->vision_shape ? TRAIN_VW_SHAPE : 0), NULL);
            model_set_train(m, r->mode, NULL);
            if (!isnan(wl)) st.warm_secs[PH_VISION] = now_seconds() - tw;
            if (!o->quiet && !isnan(wl))
                fprintf(stderr, "%s: vision warm-up: %ld steps in %.1f s, final loss %.3f\n", stage_name(o->stage),
                        r->vision_warmup, st.warm_secs[PH_VISION], wl);
            if (o->vision_cache && !isnan(wl)) state_save(o->vision_cache, vfp, m, &vs);
        }
        st.phase = PH_MIXED;
        if (every > 0) state_save(state_path, fp, m, &st);
    }
    long budget = o->stop_warmup > 0 ? o->stop_warmup : -1;
    PhaseSave sv = {state_path, fp, every, &budget};
    /* the mixed warm-up uses the scene warm-up's salt (the runs of docs/training.md were
     * made with it); each one's batches are recorded after the earlier ones' (step0) */
    const Phase phases[PH_MAIN] = {
        [PH_MIXED] = {"pretrain: mixed warm-up", SCW_FORMATS, MOD_IMAGE, 0x73637761726dULL /* "scwarm" */,
                      r->mixed_warmup, 0, train_mixw_lr, MCW_FORMATS},
        [PH_MCW] = {"pretrain: multiple-choice warm-up", MCW_FORMATS, MOD_TEXT, 0x6d6377726d7570ULL /* "mcwrmup" */,
                    r->mc_warmup, r->mixed_warmup, train_mcw_lr, 0},
        [PH_SCENE] = {"pretrain: scene warm-up", SCW_FORMATS, MOD_IMAGE, 0x73637761726dULL /* "scwarm" */,
                      r->scene_warmup, r->mixed_warmup + r->mc_warmup, train_mcw_lr, 0},
    };
    int stopped = 0;
    if (st.phase < PH_MIXED) st.phase = PH_MIXED;
    for (; st.phase < PH_MAIN && !stopped; ) {
        const Phase *ph = &phases[st.phase];
        if (ph->steps > 0) {
            if (resumed && st.phase_step > 0 && !o->quiet)
                fprintf(stderr, "%s: resuming at step %ld of %ld\n", ph->label, st.phase_step, ph->steps);
            stopped = train_phase(m, w, tok, o, r, ph, &st, &sv);
            if (stopped) break;
        }
        st.phase++;
        st.phase_step = 0;
        st.phase_tail = 0.0;
        st.phase_ntail = 0;
        stopped = budget == 0;                  /* the test hook's last step ended this warm-up */
        if (ph->steps > 0 && (every > 0 || stopped)) state_save(state_path, fp, m, &st);
    }
    long stop_after = o->stop_after;
    const char *env = getenv("PULSE_TRAIN_STOP_AFTER");
    if (env && *env) stop_after = atol(env);

    /* Buffers: batch, pixels, tape. */
    Feed f;
    feed_init(&f, r->batch);
    /* The warm restart (Recipe.warm_restart): after the main loop's p.steps, its own stream
     * (another seed) and feed, as a run of its own from the main loop's weights would have. */
    long total = p.steps + r->warm_restart;
    Stream rs;
    Feed rf;
    memset(&rf, 0, sizeof rf);
    if (r->warm_restart) {
        stream_init(&rs, w, o->stage, FMT_ALL, MOD_ANY, o->exclude, o->n_exclude, o->seed ^ TRAIN_RESTART_SALT, r);
        feed_init(&rf, r->batch);
    }
    Tape tp;
    tape_init(&tp, (size_t)64 << 20);

    int quiet = o->quiet || stopped;            /* stopped in a warm-up: no main loop */
    if (!quiet) {
        fprintf(stderr, "%s: %d items (%d presentations an epoch), %ld steps of %d, lr %g %s, warm-up %ld, %s, "
                "%zu trainable parameters%s\n",
                stage_name(o->stage), s.n_items, s.n_pres, p.steps, r->batch, (double)r->lr,
                sched_name(r->schedule), r->warmup, r->mode == TRAIN_LORA ? "LoRA" : "full",
                model_num_trainable(m), resumed ? " (resumed)" : "");
        if (r->warm_restart)
            fprintf(stderr, "%s: then a warm restart: %ld steps, lr %g %s, warm-up %d, the optimizer reset\n",
                    stage_name(o->stage), r->warm_restart, (double)(r->lr * TRAIN_RESTART_SCALE),
                    sched_name(r->schedule), TRAIN_RESTART_WARMUP);
        if (resumed && st.step > 0)
            fprintf(stderr, "%s: resuming at step %ld of %ld\n", stage_name(o->stage), st.step, total);
    }
    Progress pr;
    if (!quiet) progress_start(&pr, stage_name(o->stage), total);
    double t0 = now_seconds(), t_saved = t0, sec0 = st.seconds;
    double curve_sum = 0.0;
    int curve_n = 0;
    long curve_every = total / CURVE_MAX + 1;
    long session_tokens = 0;    /* tokens of this session (padding share) */
    for (long step = st.step; !stopped && step < total; step++) {
        long k = step - p.steps;                /* >= 0: step k of the warm restart */
        if (k == 0) {
            model_reset_optimizer(m);
            model_set_train(m, r->mode, NULL);
        }
        Feed *fd = k < 0 ? &f : &rf;
        long tokens = feed_step(fd, k < 0 ? &s : &rs, tok, m->n_patches, k < 0 ? step : k);
        if (o->on_batch) o->on_batch(o->ctx, step, fd->items, r->batch);
        float lr = k < 0 ? lr_schedule(r->schedule, step, p.steps, r->warmup, r->lr)
                         : lr_schedule(r->schedule, k, r->warm_restart, TRAIN_RESTART_WARMUP, r->lr * TRAIN_RESTART_SCALE);
        float loss = train_step(m, &tp, &fd->bt, &opt, r->clip, lr, stage_name(o->stage), step);
        if (o->on_step) o->on_step(o->step_ctx);

        st.step = step + 1;
        st.tokens += tokens;
        session_tokens += tokens;
        st.ring[step % LOSS_RING] = loss;
        curve_sum += loss;
        curve_n++;
        /* The curve is kept in the state, so points are on fixed steps. */
        if (st.step % curve_every == 0 || st.step == total) {
            if (st.n_curve < CURVE_MAX) {
                st.curve[st.n_curve][0] = (float)st.step;
                st.curve[st.n_curve][1] = (float)(curve_sum / curve_n);
                st.n_curve++;
            }
            curve_sum = 0.0;
            curve_n = 0;
        }
        double now = now_seconds();
        st.seconds = sec0 + (now - t0);
        if (!quiet) {
            char extra[64];
            snprintf(extra, sizeof extra, "loss %.3f lr %.2e", loss, lr);
            progress_update(&pr, st.step, extra);
        }
        /* Save the state every `every` seconds and at a test-hook stop; never after the
         * last step (the checkpoint follows at once). */
        int stop = stop_after > 0 && st.step >= stop_after && st.step < total;
        if (st.step < total && (stop || (every > 0 && now - t_saved >= every))) {
            state_save(state_path, fp, m, &st);
            t_saved = now;
        }
        if (stop) { stopped = 1; break; }
    }
    /* Final loss: mean over the last LOSS_RING steps (or all when fewer). The ring lives
     * in the state, so a resumed run reports the same value. */
    int nr = total < LOSS_RING ? (int)total : LOSS_RING;
    double final_loss = 0.0;
    for (int i = 0; i < nr; i++) final_loss += st.ring[i];
    final_loss /= nr;
    if (!quiet) {
        char extra[64];
        snprintf(extra, sizeof extra, "loss %.3f", final_loss);
        progress_end(&pr, extra);
    }
    int rc = 0;
    if (stopped) {
        if (!o->quiet && st.phase < PH_MAIN)
            fprintf(stderr, "%s: stopped at step %ld of the %s, state in %s\n", stage_name(o->stage), st.phase_step,
                    phases[st.phase].label + strlen("pretrain: "), state_path);
        else if (!o->quiet)
            fprintf(stderr, "%s: stopped after step %ld, state in %s\n", stage_name(o->stage), st.step, state_path);
        rc = 3;
    } else {
        /* LoRA: merge (PEFT merge_and_unload), so that base_ft is a plain checkpoint. */
        if (r->mode == TRAIN_LORA) lora_merge(m);
        model_set_train(m, TRAIN_NONE, NULL);
        char fph[32];
        snprintf(fph, sizeof fph, "%016llx", (unsigned long long)w->fingerprint);
        Provenance pv = {stage_name(o->stage), p.preset, o->seed, fph, total};
        save_checkpoint(o->out, m, tok, &pv, provenance_extra(o, w, &p, &st, final_loss, base_hash));
        write_training_log(o->out, &p, &st, final_loss, resumed_at);
        if (file_exists(state_path)) unlink(state_path);
        if (!o->quiet)
            fprintf(stderr, "%s: %ld steps, %ld tokens in %.1f s (%.0f tokens/s, %d threads, %.0f%% of positions "
                    "padding), final loss %.4f -> %s\n",
                    stage_name(o->stage), total, st.tokens, st.seconds, st.tokens / (st.seconds > 0 ? st.seconds : 1),
                    kern_threads(), f.padded + rf.padded ? 100.0 * (1.0 - (double)session_tokens / (f.padded + rf.padded)) : 0.0,
                    final_loss, o->out);
    }
    tape_free(&tp);
    feed_free(&f);
    if (r->warm_restart) {
        feed_free(&rf);
        stream_free(&rs);
    }
    free(state_path);
    stream_free(&s);
    model_free(m);
    tok_free(tok);
    free(tok_path);
    if (own) world_free(own);
    return rc;
}

/* ============================================================================
 * Gates: multiple-choice accuracy, two scorings */

/* Items evaluated together: one model_generate / model_score call each, so the KV cache
 * and the score buffers stay small (EVAL_CHUNK x 4 sequences at most). */
#define EVAL_CHUNK 64

double train_mc_accuracy(Model *m, const Tokenizer *tok, const World *w, EvalSource src,
                         const int *people, int n_people, int modality, int scoring, int *n_items) {
    /* Chunks of EVAL_CHUNK items: letter = one prompt each (generate), likelihood = one
     * sequence per option (score); the pixels of a chunk are shared by its options. */
    int n = 0;
    const EvalItem **ev = world_eval_select(w, src, people, n_people, TASK_BIT(TASK_MC), modality, &n);
    *n_items = n;
    if (n == 0) { free((void *)ev); return 0.0; }
    int per = scoring == SCORE_LETTER ? 1 : DATA_MC_OPTIONS;    /* sequences per item */
    int cap = EVAL_CHUNK * per;
    int *ids = xmalloc((size_t)cap * MAX_IDS * sizeof *ids);
    float *pix = xmalloc((size_t)EVAL_CHUNK * PIX * sizeof *pix);
    GenItem *gi = xcalloc((size_t)cap, sizeof *gi);
    GenResult *gr = xcalloc((size_t)cap, sizeof *gr);
    ScoreItem *si = xcalloc((size_t)cap, sizeof *si);
    ScoreResult *sr = xcalloc((size_t)cap, sizeof *sr);
    int correct = 0;
    for (int c0 = 0; c0 < n; c0 += EVAL_CHUNK) {
        int cn = n - c0 < EVAL_CHUNK ? n - c0 : EVAL_CHUNK, ns = 0;
        for (int i = 0; i < cn; i++) {
            const EvalItem *e = ev[c0 + i];
            int has_image = e->image >= 0;
            const float *px = NULL;
            if (has_image) {
                world_image_pixels(w, e->image, NULL, pix + (size_t)i * PIX);
                px = pix + (size_t)i * PIX;
            }
            if (scoring == SCORE_LETTER) {
                int *d = ids + (size_t)ns * MAX_IDS;
                int k = tok_encode_chat(tok, e->prompt, has_image, NULL, d, MAX_IDS, NULL);
                CHECK(k > 0);
                gi[ns++] = (GenItem){d, k, px};
            } else {
                /* a person's option inside its trained answer sentence ("Luke Pike is a
                 * teacher."), genbench's option text bare: mc_option_answer */
                for (int op = 0; op < e->n_options; op++) {
                    int *d = ids + (size_t)ns * MAX_IDS, start = 0;
                    int k = tok_encode_chat(tok, e->question, has_image, mc_option_answer(e, op), d, MAX_IDS, &start);
                    CHECK(k > 0);
                    si[ns++] = (ScoreItem){d, k, start, px};
                }
            }
        }
        if (scoring == SCORE_LETTER) {
            /* Two tokens are enough: the answer's first token may be a bare space. */
            model_generate(m, gi, ns, 2, gr);
            for (int i = 0; i < cn; i++) {
                char *txt = tok_decode(tok, gr[i].ids, gr[i].n, 1);
                const char *t = txt;
                while (*t && isspace((unsigned char)*t)) t++;
                if (toupper((unsigned char)*t) == 'A' + ev[c0 + i]->correct) correct++;
                free(txt);
                gen_result_free(&gr[i]);
            }
        } else {
            model_score(m, si, ns, 0, sr);
            int j = 0;
            for (int i = 0; i < cn; i++) {
                const EvalItem *e = ev[c0 + i];
                int best = -1;
                double best_v = -INFINITY;
                for (int op = 0; op < e->n_options; op++, j++) {
                    /* Mean log-prob of the continuation's tokens; the closing EOS is not
                     * part of it (lm-eval-harness scores the continuation only). An item's
                     * sentences share the name and the ending, predicted with log p near 0
                     * once learned, so the tokens that differ (article, value) decide. */
                    int k = sr[j].n - 1;
                    double v = 0.0;
                    for (int t = 0; t < k; t++) v += sr[j].logp[t];
                    v = k > 0 ? v / k : -INFINITY;
                    if (v > best_v) { best_v = v; best = op; }
                    score_result_free(&sr[j]);
                }
                if (best == e->correct) correct++;
            }
        }
    }
    free(ids); free(pix); free(gi); free(gr); free(si); free(sr);
    free((void *)ev);
    return 100.0 * correct / n;
}

/* Four rows for a (model, set): image+text and text-only, letter and likelihood. */
static void gate_add(GateReport *r, Model *m, const Tokenizer *tok, const World *w, const char *model_name,
                     const char *set, EvalSource src, const int *people, int np, double threshold, int upper) {
    static const struct { int mod; const char *name; } mods[] = {{MOD_IMAGE, "image+text"}, {MOD_TEXT, "text-only"}};
    for (int mi = 0; mi < 2; mi++)
        for (int sc = 0; sc < 2; sc++) {
            CHECK(r->n < (int)(sizeof r->row / sizeof r->row[0]));
            GateRow *g = &r->row[r->n];
            int n = 0;
            double v = train_mc_accuracy(m, tok, w, src, people, np, mods[mi].mod, sc, &n);
            if (n == 0) continue;
            snprintf(g->what, sizeof g->what, "%s %s %s", model_name, set, mods[mi].name);
            g->scoring = sc;
            g->value = v;
            g->n = n;
            g->threshold = threshold;
            g->upper = upper;
            g->pass = upper ? v <= threshold : v >= threshold;
            r->n++;
        }
}

int train_gates(Model *pt, Model *ft, const Tokenizer *tok, const World *w, GateReport *r, FILE *f) {
    /* All fictitious people and all celebrity candidates: the protocol picks its forget
     * and retain sets among them, so every one must be known. */
    double t0 = now_seconds();
    memset(r, 0, sizeof *r);
    int nf = 0, nc = 0;
    int *fict = world_people_of_kind(w, KIND_FICTITIOUS, &nf);
    int *celeb = world_people_of_kind(w, KIND_CELEBRITY, &nc);
    if (pt) {
        gate_add(r, pt, tok, w, "base_pt", "celebrities", EVAL_PROFILE, celeb, nc, 85.0, 0);
        gate_add(r, pt, tok, w, "base_pt", "genbench", EVAL_GENBENCH, NULL, 0, 85.0, 0);
        gate_add(r, pt, tok, w, "base_pt", "fictitious", EVAL_PROFILE, fict, nf, 35.0, 1);
    }
    if (ft) {
        gate_add(r, ft, tok, w, "base_ft", "fictitious", EVAL_PROFILE, fict, nf, 85.0, 0);
        gate_add(r, ft, tok, w, "base_ft", "genbench", EVAL_GENBENCH, NULL, 0, 85.0, 0);
    }
    free(fict);
    free(celeb);
    r->all_pass = 1;
    for (int i = 0; i < r->n; i++) r->all_pass &= r->row[i].pass;
    r->seconds = now_seconds() - t0;
    if (f) {
        fprintf(f, "gates (multiple choice, %s world):\n", w->preset.name);
        fprintf(f, "  %-36s %-10s %7s %5s %9s  %s\n", "model / set / modality", "scoring", "acc %", "n", "threshold", "result");
        for (int i = 0; i < r->n; i++) {
            const GateRow *g = &r->row[i];
            fprintf(f, "  %-36s %-10s %7.1f %5d %3s %5.1f  %s\n", g->what,
                    g->scoring == SCORE_LETTER ? "letter" : "likelihood", g->value, g->n, g->upper ? "<=" : ">=",
                    g->threshold, g->pass ? "PASS" : "FAIL");
        }
        fprintf(f, "gates: %s (%.1f s)\n", r->all_pass ? "all PASS" : "some FAIL", r->seconds);
    }
    return r->all_pass;
}

/* ============================================================================
 * Command line */

static void usage(FILE *f, int stage) {
    if (stage == STAGE_PT)
        fprintf(f, "usage: pulse pretrain --data DIR --out CKPT [options]\n"
                   "  Pre-trains base_pt from a random init (or --base CKPT) on the world's pre-training\n"
                   "  items: scenes, anonymous face descriptions, general facts and the celebrities, in\n"
                   "  every format.\n");
    else
        fprintf(f, "usage: pulse finetune --data DIR --base CKPT --out CKPT [options]\n"
                   "  Fine-tunes base_ft from base_pt on the fictitious people's items.\n");
    fprintf(f, "options (defaults: the recipe of the world's preset, see docs/training.md):\n"
               "  --data DIR            world directory (pulse data)\n"
               "  --base CKPT           starting checkpoint%s\n"
               "  --out CKPT            checkpoint directory to write (state in CKPT.state meanwhile)\n"
               "  --preset P            recipe to use (tiny, small, paper; default: the world's)\n"
               "  --seed S              init, data order, rendering, augmentation (default 1)\n"
               "  --exclude-people L    comma list of person IDs and split names (forget_10, ...):\n"
               "                        train without them (the oracles)\n"
               "  --steps N             optimizer steps (default: epochs x presentations / batch)\n"
               "  --epochs E  --batch B  --lr LR  --warmup N  --schedule constant|linear|cosine\n"
               "  --mode full|lora  --lora-r R  --lora-alpha A   (LoRA is merged before saving)\n"
               "  --replay F            fine-tuning: mix F x (fine-tuning presentations) of pre-training\n"
               "                        presentations into every epoch, drawn afresh (keeps base_pt's knowledge)\n"
               "  --vision-lr S         learning-rate scale of the vision tower and the projector (x lr)\n"
               "  --mc-repeat K         letter multiple-choice items are presented K times an epoch (all\n"
               "                        of them: the recipe's face / name repeats no longer apply)\n"
               "  --mc-face-repeat K    a person's letter MC item with the face: K times instead\n"
               "  --mc-name-repeat K    a person's text-only letter MC item: K times instead\n"
               "  --general-repeat K    general items (scenes, general facts) are presented K times an\n"
               "                        epoch (fine-tuning: K times as likely in the replayed pre-training)\n"
               "  --vision-warmup N     pre-training from scratch: N steps teaching the vision tower the\n"
               "                        scenes' figures before the main loop (0: none)\n"
               "  --vision-quadrant 0|1 the vision warm-up also names each scene patch's quadrant from\n"
               "                        that patch alone (small: 1)\n"
               "  --vision-shape 0|1    and the shape of the figure in that patch's quadrant, likewise\n"
               "                        (small: 1)\n"
               "  --mixed-warmup N      pre-training from scratch: N steps first after the vision warm-up,\n"
               "                        a batch of the scenes' captions, questions and letter multiple\n"
               "                        choice, then one of the text items --mc-warmup trains, in turn,\n"
               "                        at a quarter of its rate (0: none)\n"
               "  --mc-warmup N         pre-training from scratch: N steps on the text-only questions and\n"
               "                        letter multiple choice (people, general facts) alone, after the\n"
               "                        vision (and mixed) warm-up (0: none)\n"
               "  --scene-warmup N      pre-training from scratch: N steps on the scenes' captions,\n"
               "                        questions and letter multiple choice alone, after the\n"
               "                        multiple-choice warm-up (0: none)\n"
               "  --warm-restart N      pre-training from scratch: after the main loop, N more steps with\n"
               "                        the optimizer reset, their own data order and a second cosine\n"
               "                        cycle at a quarter of the peak rate (0: none; small: 3000)\n"
               "  --state-every SEC     seconds between saved training states (default 30, 0: never)\n"
               "  --no-gates            do not evaluate the gates after training\n"
               "  --quiet               no progress lines (the gates are still printed)\n"
               "Restarting the same command after an interruption resumes from CKPT.state.\n",
            stage == STAGE_PT ? " (default: random init)" : " (required)");
}

/* Shared by pretrain and finetune: flags -> TrainOpts, train_run, then the gates of the
 * model just written (base_pt rows after pretrain, base_ft rows after finetune). */
static int cmd_train(int stage, int argc, char **argv) {
    Args a;
    args_init(&a, stage_name(stage), argc, argv);
    if (args_help(&a)) { usage(stdout, stage); args_free(&a); return 0; }
    TrainOpts o = train_opts_default(stage);
    /* 0 (and -1) mean "the recipe's value" inside TrainOpts, so a flag cannot be 0 where
     * 0 is not a value of its own: --lr 0 would otherwise train at the recipe's rate */
    o.data_dir = args_str(&a, "data", NULL);
    o.base = args_str(&a, "base", NULL);
    o.out = args_str(&a, "out", NULL);
    o.preset = args_str(&a, "preset", NULL);
    o.seed = (uint64_t)args_long(&a, "seed", 1, 0, SEED_MAX);
    const char *ex = args_str(&a, "exclude-people", NULL);
    o.steps = args_long(&a, "steps", 0, 1, 100000000L);
    o.epochs = args_double(&a, "epochs", 0, 1e-3, 1e6);
    o.batch = (int)args_long(&a, "batch", 0, 1, 4096);
    o.lr = (float)args_double(&a, "lr", 0, 1e-12, 1);
    o.warmup = args_long(&a, "warmup", -1, 0, 100000000L);
    const char *sched = args_str(&a, "schedule", NULL);
    const char *mode = args_str(&a, "mode", NULL);
    o.lora_r = (int)args_long(&a, "lora-r", 0, 1, 4096);
    o.lora_alpha = (float)args_double(&a, "lora-alpha", 0, 1e-6, 1e6);
    o.replay = args_double(&a, "replay", -1, 0, 100);
    o.vision_lr = args_double(&a, "vision-lr", -1, 0, 100);
    o.mc_repeat = (int)args_long(&a, "mc-repeat", 0, 1, 100);
    o.mc_face_repeat = (int)args_long(&a, "mc-face-repeat", 0, 1, 100);
    o.mc_name_repeat = (int)args_long(&a, "mc-name-repeat", 0, 1, 100);
    o.general_repeat = (int)args_long(&a, "general-repeat", 0, 1, 100);
    o.vision_warmup = args_long(&a, "vision-warmup", -1, 0, 100000000L);
    o.mc_warmup = args_long(&a, "mc-warmup", -1, 0, 100000000L);
    o.scene_warmup = args_long(&a, "scene-warmup", -1, 0, 100000000L);
    o.mixed_warmup = args_long(&a, "mixed-warmup", -1, 0, 100000000L);
    o.vision_quadrant = (int)args_long(&a, "vision-quadrant", -1, 0, 1);
    o.vision_shape = (int)args_long(&a, "vision-shape", -1, 0, 1);
    o.warm_restart = args_long(&a, "warm-restart", -1, 0, 100000000L);
    double every = args_double(&a, "state-every", 30, 0, 1e9);
    o.state_every = every == 0 ? -1 : every;
    int no_gates = args_flag(&a, "no-gates");
    o.quiet = args_flag(&a, "quiet");
    args_done(&a);
    const char *st = stage_name(stage);
    if (!o.data_dir) die_input(NULL, "%s: --data is required (see pulse %s --help)", st, st);
    if (!o.out) die_input(NULL, "%s: --out is required (see pulse %s --help)", st, st);
    if (stage == STAGE_FT && !o.base) die_input(NULL, "finetune: --base is required (see pulse finetune --help)");
    out_dir_check(o.out, "config.json");        /* the checkpoint replaces it whole */
    if (sched) o.schedule = (int)lr_kind_parse(sched);
    if (mode) {
        if (strcmp(mode, "full") == 0) o.mode = TRAIN_FULL;
        else if (strcmp(mode, "lora") == 0) o.mode = TRAIN_LORA;
        else die_input(NULL, "%s: --mode must be full or lora, not '%s'", stage_name(stage), mode);
    }
    World *w = world_load(o.data_dir);
    o.world = w;
    int *people = NULL;
    if (ex) {
        people = world_parse_people(w, ex, "--exclude-people", &o.n_exclude);
        o.exclude = people;
    }
    int rc = train_run(&o);
    if (rc == 0 && !no_gates) {
        Model *m = load_checkpoint(o.out);
        char *tp = xasprintf("%s/tokenizer.json", o.out);
        Tokenizer *tok = tok_load(tp);
        GateReport gr;
        train_gates(stage == STAGE_PT ? m : NULL, stage == STAGE_FT ? m : NULL, tok, w, &gr, stdout);
        tok_free(tok);
        free(tp);
        model_free(m);
    }
    free(people);
    world_free(w);
    args_free(&a);
    return rc;
}

int cmd_pretrain(int argc, char **argv) { return cmd_train(STAGE_PT, argc, argv); }
int cmd_finetune(int argc, char **argv) { return cmd_train(STAGE_FT, argc, argv); }
