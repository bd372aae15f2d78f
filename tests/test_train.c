/* tests/test_train.c: the training loop on the `tiny` world (generated into a temporary
 * directory from data/): the loss goes down, two runs give the same bytes (also with 1 vs
 * 2 threads), an interrupted and resumed run gives the same bytes as an uninterrupted one,
 * excluded people never reach a batch (and every other item does, each epoch), LoRA
 * fine-tuning saves a plain merged checkpoint, the gates evaluate, the vision warm-up
 * trains only the vision side, deterministically (its quadrant head too, whose first loss
 * is ln 4; the place-by-one-attribute items change nothing in it), and the
 * multiple-choice warm-up trains on what it must.
 * Short runs (batch 8, a few dozen steps) keep it to seconds; fewer under sanitizers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../checkpoint.h"
#include "../common.h"
#include "../data.h"
#include "../io.h"
#include "../train.h"
#include "test.h"

static char tmpdir[256];
static char *tpath(const char *name) { return xasprintf("%s/%s", tmpdir, name); }

/* Byte equality of one file in two checkpoint directories. */
static int same_file(const char *a, const char *b, const char *name) {
    char *pa = xasprintf("%s/%s", a, name), *pb = xasprintf("%s/%s", b, name);
    size_t na, nb;
    char *x = read_file(pa, &na), *y = read_file(pb, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x); free(y); free(pa); free(pb);
    return same;
}

static int same_ckpt(const char *a, const char *b) {
    return same_file(a, b, "model.safetensors") && same_file(a, b, "config.json");
}

static TrainOpts small_opts(const World *w, int stage, const char *out, long steps) {
    TrainOpts o = train_opts_default(stage);
    o.world = w;
    o.out = out;
    o.seed = 7;
    o.steps = steps;
    o.batch = 8;
    o.warmup = 2;
    o.quiet = 1;
    o.state_every = -1;
    return o;
}

/* on_batch hook: fails on any excluded person; marks the items seen. */
typedef struct Seen {
    const int *excluded;
    int n_excluded;
    unsigned char *item_seen;   /* [World.n_items] */
    int bad;
} Seen;

static void check_batch(void *ctx, long step, const Item *const *items, int n) {
    (void)step;
    Seen *s = ctx;
    for (int i = 0; i < n; i++) {
        s->item_seen[items[i]->index] = 1;
        for (int k = 0; k < s->n_excluded; k++)
            if (items[i]->person == s->excluded[k]) s->bad++;
    }
}

/* on_batch hook: items whose format `is` picks, against the others. */
typedef struct FormatCount {
    int (*is)(Format f);
    long hit, other;
} FormatCount;
static void count_formats(void *ctx, long step, const Item *const *items, int n) {
    (void)step;
    FormatCount *c = ctx;
    for (int i = 0; i < n; i++) {
        if (c->is(items[i]->format)) c->hit++;
        else c->other++;
    }
}
static int is_person_mc(Format f) { return f == FMT_MC; }

/* on_batch hook: a person's MC items with the face, by name, and the rest. */
typedef struct FaceNameCount { long face, name, other; } FaceNameCount;
static void count_face_name(void *ctx, long step, const Item *const *items, int n) {
    (void)step;
    FaceNameCount *c = ctx;
    for (int i = 0; i < n; i++) {
        if (items[i]->format != FMT_MC) c->other++;
        else if (items[i]->image >= 0) c->face++;
        else c->name++;
    }
}

/* on_batch hook for the warm-ups: their batches (negative steps) must come first: the
 * mixed warm-up's (steps -1 .. -mix_steps), taking in turn scene items with their image and
 * the multiple-choice warm-up's text items; then the multiple-choice warm-up's (mc_steps):
 * text-only QA / letter MC items, about people not excluded or general facts; then the
 * scene warm-up's: scene items with their image. */
typedef struct WarmupSeen {
    const int *excluded;
    int n_excluded;
    long mix_steps, mc_steps;
    long mix_scene, mix_text, warm, scene, main, qa, mc, bad;
} WarmupSeen;
static int warmup_text_ok(const WarmupSeen *s, const Item *it) {
    int ok = it->image < 0 && (it->person >= 0 ? it->format == FMT_QA || it->format == FMT_MC
                                                : it->format == FMT_FACT || it->format == FMT_FACT_MC);
    for (int k = 0; k < s->n_excluded; k++) ok &= it->person != s->excluded[k];
    return ok;
}
static int warmup_scene_ok(const Item *it) {
    return it->image >= 0 && it->person < 0 &&
           (it->format == FMT_SCENE_CAPTION || it->format == FMT_SCENE_VQA || it->format == FMT_SCENE_MC);
}
static void check_warmup_batch(void *ctx, long step, const Item *const *items, int n) {
    WarmupSeen *s = ctx;
    long k = -1 - step;         /* the step within the warm-ups */
    for (int i = 0; i < n; i++) {
        const Item *it = items[i];
        if (step >= 0) { s->main++; continue; }
        if (s->main) s->bad++;
        if (k < s->mix_steps) {
            if (s->warm || s->scene) s->bad++;
            if (k % 2) { s->mix_text++; s->bad += !warmup_text_ok(s, it); }
            else { s->mix_scene++; s->bad += !warmup_scene_ok(it); }
        } else if (k < s->mix_steps + s->mc_steps) {
            s->warm++;
            if (s->scene) s->bad++;
            if (!warmup_text_ok(s, it)) s->bad++;
            else if (it->format == FMT_QA || it->format == FMT_FACT) s->qa++;
            else s->mc++;
        } else {
            s->scene++;
            s->bad += !warmup_scene_ok(it);
        }
    }
}

static double json_num(const char *dir, const char *file, const char *key) {
    char *p = xasprintf("%s/%s", dir, file);
    Json *j = json_load(p);
    double v = json_get_number(j, key, -1, p);
    json_free(j);
    free(p);
    return v;
}

int main(void) {
    int sanitized = getenv("PULSE_CHECK") != NULL;     /* make check: -O0 + ASan, keep it short */
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pulse_test_train_XXXXXX");
    CHECK(mkdtemp(tmpdir));
    char *wdir = tpath("world");
    data_generate(preset_find("tiny"), 3, "data", wdir);
    World *w = world_load(wdir);

    /* 1. A short pre-training lowers the loss. */
    long n_loss = sanitized ? 16 : 60;
    char *a = tpath("pt_a");
    TrainOpts o = small_opts(w, STAGE_PT, a, n_loss);
    o.lr = 3e-3f;
    TEST(train_run(&o) == 0, "pretrain runs");
    {
        char *p = xasprintf("%s/training.json", a);
        Json *j = json_load(p);
        Json *c = json_get(j, "loss_curve");
        TEST(c && c->len >= 2, "loss curve recorded");
        if (c && c->len >= 2) {
            double first = c->items[0]->items[1]->number;
            double last = json_get_number(j, "final_loss", 0, p);
            TEST(last < first - 0.5, "loss goes down: %.3f -> %.3f", first, last);
        }
        json_free(j);
        free(p);
    }
    Checkpoint *ck = ckpt_load(a);
    TEST(ck->stage && strcmp(ck->stage, "pretrain") == 0, "provenance stage");
    TEST(ck->steps == n_loss, "provenance steps %ld", ck->steps);
    TEST(ck->seed == 7, "provenance seed");
    {
        /* the tiny world's model is the preset's own, smaller than llava-1m */
        LlavaConfig t = train_model_config("tiny", 512), d = config_default(), s = train_model_config("small", 512);
        const LlavaConfig *g = &ck->model->cfg;
        TEST(g->hidden_size == t.hidden_size && g->num_hidden_layers == t.num_hidden_layers &&
             g->v_hidden_size == t.v_hidden_size && g->v_num_hidden_layers == t.v_num_hidden_layers &&
             g->vocab_size == tok_vocab_size(ck->tok),
             "tiny pre-training starts from the tiny model (hidden %d, %d layers)", g->hidden_size, g->num_hidden_layers);
        TEST(t.hidden_size < d.hidden_size && s.hidden_size == d.hidden_size && s.intermediate_size == d.intermediate_size &&
             s.num_hidden_layers == d.num_hidden_layers && s.v_hidden_size == d.v_hidden_size &&
             s.v_num_hidden_layers == d.v_num_hidden_layers,
             "tiny's model is smaller than llava-1m; small's is llava-1m");
    }
    ckpt_free(ck);
    TEST(json_num(a, "training.json", "tokens") > 0, "tokens counted");

    /* 2. Determinism: same arguments, same bytes; 1 vs 2 threads. */
    long n_det = sanitized ? 6 : 12;
    char *d1 = tpath("det1"), *d2 = tpath("det2"), *d3 = tpath("det3");
    o = small_opts(w, STAGE_PT, d1, n_det);
    TEST(train_run(&o) == 0, "run 1");
    o.out = d2;
    TEST(train_run(&o) == 0, "run 2");
    TEST(same_ckpt(d1, d2), "two runs give identical checkpoint bytes");
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(threads > 1 ? 1 : 2);
    o.out = d3;
    TEST(train_run(&o) == 0, "run 3 (other thread count)");
    omp_set_num_threads(threads);
    TEST(same_ckpt(d1, d3), "1 vs 2 threads give identical checkpoint bytes");
#endif

    /* 3. Resume: stop after a few steps (state saved), rerun, same bytes as run 1. */
    char *r = tpath("resumed");
    o = small_opts(w, STAGE_PT, r, n_det);
    o.stop_after = n_det / 2;
    TEST(train_run(&o) == 3, "stopped run returns 3");
    char *state = xasprintf("%s.state", r);
    TEST(file_exists(state), "state saved at the stop");
    TEST(!dir_exists(r), "no checkpoint written by a stopped run");
    o.stop_after = 0;
    TEST(train_run(&o) == 0, "resumed run completes");
    TEST(json_num(r, "training.json", "resumed_at_step") == n_det / 2, "resumed at the saved step");
    TEST(same_ckpt(d1, r), "resumed run gives identical checkpoint bytes");
    TEST(!file_exists(state), "state removed when done");

    /* A state of another run (other seed) is not trusted. */
    o.stop_after = n_det / 2;
    TEST(train_run(&o) == 3, "stopped again");
    o.stop_after = 0;
    o.seed = 8;
    TEST(train_run(&o) == 0, "other seed runs");
    TEST(json_num(r, "training.json", "resumed_at_step") == 0, "another run's state is ignored");
    TEST(!same_ckpt(d1, r), "another seed gives other bytes");
    TEST(!file_exists(state), "stale state removed");

    /* 3b. The warm restart (Recipe.warm_restart): after the main loop, steps that give the
     * bytes of a run of their own from the main loop's result, with the seed, rate and
     * warm-up of train.h; a run stopped inside it resumes with the same bytes. */
    {
        long n_wr = sanitized ? 4 : 8;
        char *wr = tpath("restart"), *wc = tpath("restart_cont"), *ws = tpath("restart_stop");
        o = small_opts(w, STAGE_PT, wr, n_det);
        o.warm_restart = n_wr;
        TEST(train_run(&o) == 0, "pre-training with a warm restart runs");
        TEST(json_num(wr, "training.json", "steps") == n_det + n_wr &&
             json_num(wr, "training.json", "warm_restart_steps") == n_wr, "training.json: %ld + %ld steps", n_det, n_wr);
        TEST(!same_ckpt(d1, wr), "the warm restart changes the weights");
        TrainOpts oc = small_opts(w, STAGE_PT, wc, n_wr);
        oc.base = d1;                               /* run 1: the same main loop without it */
        oc.seed = o.seed ^ TRAIN_RESTART_SALT;
        oc.lr = train_recipe("tiny", STAGE_PT).lr * TRAIN_RESTART_SCALE;
        oc.warmup = TRAIN_RESTART_WARMUP;
        TEST(train_run(&oc) == 0 && same_file(wr, wc, "model.safetensors"),
             "its bytes are those of a run of its own from the main loop's result (seed ^ salt, lr x %g, warm-up %d)",
             (double)TRAIN_RESTART_SCALE, TRAIN_RESTART_WARMUP);
        oc.out = ws;
        oc.warm_restart = n_wr;                     /* from a base checkpoint: none */
        TEST(train_run(&oc) == 0 && same_ckpt(wc, ws), "a run from a base checkpoint has no warm restart");
        remove_tree(ws);
        char *sst = xasprintf("%s.state", ws);
        o.out = ws;
        const long at[2] = {n_det, n_det + n_wr / 2};   /* the main loop's last step, inside the restart */
        for (int k = 0; k < 2; k++) {
            o.stop_after = at[k];
            TEST(train_run(&o) == 3 && file_exists(sst), "stopped after step %ld (state saved)", at[k]);
            o.stop_after = 0;
            TEST(train_run(&o) == 0 && same_ckpt(wr, ws), "resumed at step %ld: the same bytes", at[k]);
            remove_tree(ws);
        }
        free(sst); free(wr); free(wc); free(ws);
    }

    /* 4. Fine-tuning without the forget people: they never appear; every other
     * fine-tuning item appears within one epoch. LoRA, merged on save. */
    const Split *fs = world_split(w, "forget_10");
    TEST(fs && fs->n > 0, "forget_10 split");
    int n_sel = 0;
    Select sel = {STAGE_FT, FMT_ALL, MOD_ANY, fs->people, fs->n, 1};
    const Item **items = world_select(w, &sel, &n_sel);
    long n_pres = 0;
    for (int i = 0; i < n_sel; i++) n_pres += items[i]->repeat;
    Seen seen = {fs->people, fs->n, xcalloc((size_t)w->n_items, 1), 0};
    char *ft = tpath("ft_lora");
    /* whole length buckets, so that the first epoch is covered entirely */
    long per_bucket = 8L * TRAIN_BUCKET;
    o = small_opts(w, STAGE_FT, ft, sanitized ? 4 : (n_pres + per_bucket - 1) / per_bucket * TRAIN_BUCKET);
    o.base = d1;
    o.exclude = fs->people;
    o.n_exclude = fs->n;
    o.mode = TRAIN_LORA;
    o.on_batch = check_batch;
    o.ctx = &seen;
    TEST(train_run(&o) == 0, "LoRA fine-tuning runs");
    TEST(seen.bad == 0, "excluded people never in a batch (%d hits)", seen.bad);
    if (!sanitized) {
        int missing = 0;
        for (int i = 0; i < n_sel; i++) missing += !seen.item_seen[items[i]->index];
        TEST(missing == 0, "every selected item seen in one epoch (%d missing)", missing);
    }
    int stray = 0;
    for (int i = 0; i < w->n_items; i++) stray += seen.item_seen[i] && w->items[i].stage != STAGE_FT;
    TEST(stray == 0, "only fine-tuning items in fine-tuning batches");
    ck = ckpt_load(ft);
    TEST(!ck->model->lora.attached, "base_ft is a plain checkpoint (LoRA merged)");
    TEST(ck->stage && strcmp(ck->stage, "finetune") == 0, "finetune provenance");
    ckpt_free(ck);
    free((void *)items);

    /* Replay: pre-training items mixed into fine-tuning, the exclusion still holds. */
    memset(seen.item_seen, 0, (size_t)w->n_items);
    seen.bad = 0;
    char *ftr = tpath("ft_replay");
    o = small_opts(w, STAGE_FT, ftr, sanitized ? 2 : 16);
    o.base = d1;
    o.exclude = fs->people;
    o.n_exclude = fs->n;
    o.replay = 0.5;
    o.on_batch = check_batch;
    o.ctx = &seen;
    TEST(train_run(&o) == 0, "fine-tuning with replay runs");
    int n_pt = 0, n_ft = 0;
    for (int i = 0; i < w->n_items; i++) {
        n_pt += seen.item_seen[i] && w->items[i].stage == STAGE_PT;
        n_ft += seen.item_seen[i] && w->items[i].stage == STAGE_FT;
    }
    TEST(n_pt > 0 && n_ft > 0, "replay mixes pre-training (%d) and fine-tuning (%d) items", n_pt, n_ft);
    TEST(seen.bad == 0, "excluded people never in a replay batch (%d hits)", seen.bad);
    free(ftr);

    /* mc_repeat: letter multiple-choice items are presented that many times an epoch.
     * Over one epoch of fine-tuning with mc_repeat 3 their share of the batches is
     * 3 n_mc / (n + 2 n_mc) instead of n_mc / n. */
    if (!sanitized) {
        FormatCount mc = {is_person_mc, 0, 0};
        int n_fti = 0, n_mc = 0;
        for (int i = 0; i < w->n_items; i++)
            if (w->items[i].stage == STAGE_FT) { n_fti++; n_mc += w->items[i].format == FMT_MC; }
        long epoch_steps = (n_fti + 2L * n_mc) / 8;
        char *ftm = tpath("ft_mc");
        o = small_opts(w, STAGE_FT, ftm, epoch_steps);
        o.base = d1;
        o.mc_repeat = 3;
        o.on_batch = count_formats;
        o.ctx = &mc;
        TEST(train_run(&o) == 0, "fine-tuning with mc_repeat runs");
        double want = 3.0 * n_mc / (n_fti + 2.0 * n_mc), got = (double)mc.hit / (double)(mc.hit + mc.other);
        TEST(fabs(got - want) < 0.05, "mc_repeat 3: MC share %.3f, want %.3f (1 without: %.3f)", got, want,
             (double)n_mc / n_fti);
        free(ftm);

        /* mc_face_repeat / mc_name_repeat override mc_repeat for a person's MC item with the
         * face / by name: with mc_repeat 2, face 4 and name 1, f face and t name items among
         * n, one epoch is n + 3 f presentations, the face items 4 f of them, the name items t. */
        {
            int n_face = 0, n_name = 0;
            for (int i = 0; i < w->n_items; i++)
                if (w->items[i].stage == STAGE_FT && w->items[i].format == FMT_MC) {
                    n_face += w->items[i].image >= 0;
                    n_name += w->items[i].image < 0;
                }
            FaceNameCount fn = {0, 0, 0};
            char *ftf = tpath("ft_face");
            o = small_opts(w, STAGE_FT, ftf, (n_fti + 3L * n_face) / 8);
            o.base = d1;
            o.mc_repeat = 2;
            o.mc_face_repeat = 4;
            o.mc_name_repeat = 1;
            o.on_batch = count_face_name;
            o.ctx = &fn;
            TEST(n_face > 0 && n_name > 0 && train_run(&o) == 0, "fine-tuning with mc_face_repeat / mc_name_repeat runs");
            double tot = (double)(fn.face + fn.name + fn.other), den = n_fti + 3.0 * n_face;
            TEST(fabs(fn.face / tot - 4.0 * n_face / den) < 0.04 && fabs(fn.name / tot - n_name / den) < 0.04,
                 "face MC share %.3f (want %.3f), name MC share %.3f (want %.3f)", fn.face / tot, 4.0 * n_face / den,
                 fn.name / tot, n_name / den);
            char *cp = xasprintf("%s/config.json", ftf);
            Json *cj = json_load(cp);
            Json *pv = json_get(cj, "pulse");
            Json *fr = json_get(pv, "mc_face_repeat"), *nr = json_get(pv, "mc_name_repeat");
            TEST(fr && fr->number == 4 && nr && nr->number == 1, "config.json records the face / name repeats");
            json_free(cj);
            free(cp);
            free(ftf);
        }

        /* The `small` recipe's face / name repeats (5 / 2) are recorded as run; --mc-repeat
         * alone shows every MC item K times (the recipe's face / name no longer apply). One
         * step from scratch on the tiny world, without the warm-ups. */
        for (int k = 0; k <= 2; k += 2) {
            char *sp = tpath(k ? "small_mc2" : "small_mc");
            o = small_opts(w, STAGE_PT, sp, 1);
            o.preset = "small";
            o.vision_warmup = 0;
            o.mc_warmup = 0;
            o.scene_warmup = 0;
            o.mixed_warmup = 0;
            o.warm_restart = 0;
            o.mc_repeat = k;
            TEST(train_run(&o) == 0, "one step with the small recipe, mc_repeat %d", k);
            char *cp = xasprintf("%s/config.json", sp);
            Json *cj = json_load(cp);
            Json *pv = json_get(cj, "pulse");
            Json *fr = json_get(pv, "mc_face_repeat"), *nr = json_get(pv, "mc_name_repeat");
            int want_f = k ? k : 5, want_n = k ? k : 2;
            TEST(fr && nr && fr->number == want_f && nr->number == want_n,
                 "mc_repeat %d: face / name repeats %g / %g, want %d / %d", k, fr ? fr->number : -1,
                 nr ? nr->number : -1, want_f, want_n);
            json_free(cj);
            free(cp);
            free(sp);
        }

        /* general_repeat: likewise for the scenes and general facts of pre-training,
         * g of its P presentations: 3 g / (P + 2 g) of one epoch's batches. */
        FormatCount gc = {format_is_general, 0, 0};
        long n_ptp = 0, n_gen = 0;
        for (int i = 0; i < w->n_items; i++)
            if (w->items[i].stage == STAGE_PT) {
                n_ptp += w->items[i].repeat;
                n_gen += format_is_general(w->items[i].format) ? w->items[i].repeat : 0;
            }
        char *ptg = tpath("pt_general");
        o = small_opts(w, STAGE_PT, ptg, (n_ptp + 2 * n_gen) / 8);
        o.general_repeat = 3;
        o.on_batch = count_formats;
        o.ctx = &gc;
        TEST(n_gen > 0 && train_run(&o) == 0, "pre-training with general_repeat runs (%ld general presentations)", n_gen);
        want = 3.0 * n_gen / (n_ptp + 2.0 * n_gen), got = (double)gc.hit / (double)(gc.hit + gc.other);
        TEST(fabs(got - want) < 0.05, "general_repeat 3: general share %.3f, want %.3f (1 without: %.3f)", got, want,
             (double)n_gen / n_ptp);
        free(ptg);
    }

    /* 5. People lists: IDs and split names. */
    char spec[64];
    snprintf(spec, sizeof spec, "%d,forget_10,%d", w->people[fs->people[0]].id, w->people[0].id);
    int np = 0;
    int *pl = world_parse_people(w, spec, "--exclude-people", &np);
    TEST(np >= fs->n && np <= fs->n + 1, "parsed people list (%d)", np);
    for (int i = 1; i < np; i++) TEST(pl[i - 1] < pl[i], "sorted and unique");
    free(pl);

    /* 6. The gates evaluate (values are meaningless after a few steps). Under the
     * sanitizers only one person's items, both scorings. */
    Checkpoint *pt = ckpt_load(d1), *fc = ckpt_load(ft);
    if (sanitized) {
        int one = fs->people[0], ni = 0;
        for (int sc = 0; sc < 2; sc++) {
            double acc = train_mc_accuracy(fc->model, fc->tok, w, EVAL_PROFILE, &one, 1, MOD_ANY, sc, &ni);
            TEST(ni > 0 && acc >= 0 && acc <= 100, "accuracy %.1f over %d items", acc, ni);
        }
    } else {
        GateReport gr;
        train_gates(pt->model, fc->model, pt->tok, w, &gr, NULL);
        TEST(gr.n >= 8, "gate rows (%d)", gr.n);
        int sane = 1;
        for (int i = 0; i < gr.n; i++) sane &= gr.row[i].n > 0 && gr.row[i].value >= 0 && gr.row[i].value <= 100;
        TEST(sane, "gate values are percentages over items");
    }
    ckpt_free(pt);
    ckpt_free(fc);

    /* 7. The vision warm-up: only the vision tower and the projector change, its loss falls,
     * and 1 and 2 threads give the same weights. */
    {
        long n_vw = sanitized ? 6 : 60;
        LlavaConfig vc = train_model_config("tiny", 512);
        Model *m0 = model_new(&vc), *m1 = model_new(&vc);
        model_init(m0, 5);
        model_init(m1, 5);
        double first = 0, last = train_vision_warmup(m1, w, n_vw, 5, 0, &first);
        TEST(isfinite(first) && isfinite(last) && last < first - (sanitized ? 0.0 : 0.5),
             "warm-up loss falls: %.3f -> %.3f", first, last);
        int dec_same = 1, vis_changed = 0, n_vis = 0;
        for (int i = 0; i < m0->n_params; i++) {
            const ParamInfo *pi = &m0->params[i];
            int same = memcmp(m0->w + pi->offset, m1->w + pi->offset, pi->n * sizeof(float)) == 0;
            int vision = strncmp(pi->name, "vision_tower.", 13) == 0 || strncmp(pi->name, "multi_modal_projector.", 22) == 0;
            if (!vision) dec_same &= same;
            /* post_layernorm is not on the feature path (vision_feature_layer -1 takes the
             * last layer's output before it) */
            else if (!strstr(pi->name, "post_layernorm")) { n_vis++; vis_changed += !same; }
        }
        TEST(dec_same, "the decoder is untouched");
        TEST(vis_changed == n_vis, "every vision tower / projector tensor on the path learns (%d of %d)", vis_changed, n_vis);
        TEST(m1->opt_step == 0, "optimizer state reset after the warm-up");
        /* The quadrant head (Recipe.vision_quadrant): the other heads start the same, so its
         * term is the first step's difference, ln 4 from a small random head over four
         * quadrants; the loss still falls and the tower learns something else. */
        Model *mq = model_new(&vc);
        model_init(mq, 5);
        double fq = 0, lq = train_vision_warmup(mq, w, n_vw, 5, TRAIN_VW_QUADRANT, &fq);
        TEST(fabs(fq - first - log(4.0)) < 0.02, "quadrant term at the first step %.4f (ln 4 = %.4f)", fq - first, log(4.0));
        TEST(isfinite(lq) && lq < fq - (sanitized ? 0.0 : 0.5), "warm-up loss with the quadrant head falls: %.3f -> %.3f", fq, lq);
        TEST(memcmp(m1->w, mq->w, m1->n_floats * sizeof(float)) != 0, "the quadrant head changes the tower");
        /* The shape head (Recipe.vision_shape) likewise: its term at the first step is
         * ln K, K the shapes the training scenes' questions name plus "none". */
        const char *shapes[64];
        int n_shapes = 0;
        char q[128];
        for (int i = 0; i < w->n_items; i++) {
            const Item *it = &w->items[i];
            if (it->stage != STAGE_PT || it->format != FMT_SCENE_VQA) continue;
            for (int v = 0; v < it->n_variants; v++)
                for (int quad = 0; quad < 4; quad++) {
                    snprintf(q, sizeof q, DATA_SCENE_Q_SHAPE, data_quadrant_names[quad]);
                    if (strcmp(it->variants[v].question, q) != 0) continue;
                    int known = 0;
                    for (int k = 0; k < n_shapes; k++) known |= strcmp(shapes[k], it->variants[v].answer) == 0;
                    if (!known && n_shapes < 64) shapes[n_shapes++] = it->variants[v].answer;
                }
        }
        Model *ms = model_new(&vc);
        model_init(ms, 5);
        double fsh = 0, lsh = train_vision_warmup(ms, w, n_vw, 5, TRAIN_VW_QUADRANT | TRAIN_VW_SHAPE, &fsh);
        TEST(n_shapes >= 3 && fabs(fsh - fq - log(n_shapes + 1.0)) < 0.02, "shape term at the first step %.4f (ln %d = %.4f)",
             fsh - fq, n_shapes + 1, log(n_shapes + 1.0));
        TEST(isfinite(lsh) && lsh < fsh - (sanitized ? 0.0 : 0.5), "warm-up loss with the shape head falls: %.3f -> %.3f", fsh, lsh);
        TEST(memcmp(mq->w, ms->w, mq->n_floats * sizeof(float)) != 0, "the shape head changes the tower");
        /* A world with the place by one attribute (Preset.scene_lookup) has the same scenes,
         * labels and images: the warm-up gives the same bytes. */
        {
            Preset lp = *preset_find("tiny");
            lp.scene_lookup = 1;
            char *ldir = tpath("world_lookup");
            data_generate(&lp, 3, "data", ldir);
            World *wl = world_load(ldir);
            Model *ml = model_new(&vc);
            model_init(ml, 5);
            train_vision_warmup(ml, wl, n_vw, 5, 0, NULL);
            TEST(wl->n_items > w->n_items, "the lookup world has more items (%d, %d)", wl->n_items, w->n_items);
            TEST(memcmp(m1->w, ml->w, m1->n_floats * sizeof(float)) == 0, "warm-up: the same weights with the lookup items");
            model_free(ml);
            world_free(wl);
            free(ldir);
        }
#ifdef _OPENMP
        int nth = omp_get_max_threads();
        omp_set_num_threads(nth == 1 ? 2 : 1);
        Model *m2 = model_new(&vc), *mq2 = model_new(&vc), *ms2 = model_new(&vc);
        model_init(m2, 5);
        model_init(mq2, 5);
        model_init(ms2, 5);
        train_vision_warmup(m2, w, n_vw, 5, 0, NULL);
        train_vision_warmup(mq2, w, n_vw, 5, TRAIN_VW_QUADRANT, NULL);
        train_vision_warmup(ms2, w, n_vw, 5, TRAIN_VW_QUADRANT | TRAIN_VW_SHAPE, NULL);
        omp_set_num_threads(nth);
        TEST(memcmp(m1->w, m2->w, m1->n_floats * sizeof(float)) == 0, "warm-up: the same weights on 1 and 2 threads");
        TEST(memcmp(mq->w, mq2->w, mq->n_floats * sizeof(float)) == 0, "quadrant warm-up: the same weights on 1 and 2 threads");
        TEST(memcmp(ms->w, ms2->w, ms->n_floats * sizeof(float)) == 0, "shape warm-up: the same weights on 1 and 2 threads");
        model_free(m2);
        model_free(mq2);
        model_free(ms2);
#endif
        model_free(m0);
        model_free(m1);
        model_free(mq);
        model_free(ms);
    }

    /* 8. The mixed warm-up, the multiple-choice warm-up, the scene warm-up: the first's
     * batches take in turn scene items with their image and the second's items, which are
     * text-only questions and letter multiple choice (people, never an excluded one, and
     * general facts); the third's are scene items with their image; all are recorded; 1
     * and 2 threads give the same bytes. */
    {
        long n_mcw = sanitized ? 4 : 40, n_scw = sanitized ? 3 : 20, n_mix = sanitized ? 5 : 21;
        char *mw = tpath("mcw"), *mw2 = tpath("mcw2");
        const Split *cs = world_split(w, "celebrity");     /* half the celebrities left out */
        const int *ex = cs->people;
        int n_ex = cs->n / 2;
        WarmupSeen ws = {0};
        ws.excluded = ex;
        ws.n_excluded = n_ex;
        ws.mix_steps = n_mix;
        ws.mc_steps = n_mcw;
        TrainOpts om = small_opts(w, STAGE_PT, mw, 3);
        om.mc_warmup = n_mcw;
        om.scene_warmup = n_scw;
        om.mixed_warmup = n_mix;
        om.exclude = ex;
        om.n_exclude = n_ex;
        om.on_batch = check_warmup_batch;
        om.ctx = &ws;
        TEST(train_run(&om) == 0, "pretrain with the multiple-choice warm-up runs");
        TEST(ws.mix_scene == (n_mix + 1) / 2 * 8 && ws.mix_text == n_mix / 2 * 8 && ws.warm == n_mcw * 8 &&
             ws.scene == n_scw * 8 && ws.main == 3 * 8,
             "warm-up batches first (scenes and text in turn, multiple choice, scenes), then the main loop's "
             "(%ld + %ld, %ld, %ld, %ld)", ws.mix_scene, ws.mix_text, ws.warm, ws.scene, ws.main);
        TEST(ws.bad == 0 && ws.mc > 0 && ws.qa > 0,
             "warm-up batches: scene items with their image, text-only QA (%ld) and letter MC (%ld), no one "
             "excluded (%ld other)", ws.qa, ws.mc, ws.bad);
        TEST(json_num(mw, "training.json", "mc_warmup_seconds") >= 0 &&
             json_num(mw, "training.json", "scene_warmup_seconds") >= 0 &&
             json_num(mw, "training.json", "mixed_warmup_seconds") >= 0, "training.json records the warm-ups' times");
        {
            char *cp = xasprintf("%s/config.json", mw);
            Json *cj = json_load(cp);
            Json *pv = json_get(json_get(cj, "pulse"), "mc_warmup_steps");
            Json *ps = json_get(json_get(cj, "pulse"), "scene_warmup_steps");
            Json *pm = json_get(json_get(cj, "pulse"), "mixed_warmup_steps");
            Json *plr = json_get(json_get(cj, "pulse"), "mixed_warmup_lr");
            TEST(pv && pv->number == n_mcw && ps && ps->number == n_scw && pm && pm->number == n_mix,
                 "config.json's provenance records the warm-ups' steps");
            TEST(plr && plr->number == (double)(TRAIN_MCW_LR * TRAIN_MIXW_SCALE), "and the mixed warm-up's rate (%g)",
                 plr ? plr->number : -1.0);
            json_free(cj);
            free(cp);
        }
#ifdef _OPENMP
        int nth = omp_get_max_threads();
        omp_set_num_threads(nth == 1 ? 2 : 1);
        om.out = mw2;
        om.on_batch = NULL;
        TEST(train_run(&om) == 0, "again on another thread count");
        omp_set_num_threads(nth);
        TEST(same_ckpt(mw, mw2), "warm-up + training: the same bytes on 1 and 2 threads");
#endif
        /* killed in a warm-up (the test hook: after k of its steps, mixed + MC + scene
         * counted together), it resumes there with the same bytes: inside the mixed one,
         * on its last step (the state of the next), inside the multiple-choice one */
        {
            const long at[3] = {2, n_mix, n_mix + n_mcw / 2};
            char *ws3 = tpath("mcw3"), *st3 = xasprintf("%s.state", ws3);
            om.on_batch = NULL;
            om.out = ws3;
            for (int k = 0; k < 3; k++) {
                om.stop_warmup = at[k];
                int rc = train_run(&om);
                TEST(rc == 3 && file_exists(st3) && !dir_exists(ws3), "stopped after warm-up step %ld (state saved)", at[k]);
                om.stop_warmup = 0;
                TEST(train_run(&om) == 0 && same_ckpt(mw, ws3), "resumed from warm-up step %ld: the same bytes", at[k]);
                TEST(json_num(ws3, "training.json", "mixed_warmup_seconds") >= 0 &&
                     json_num(ws3, "training.json", "mc_warmup_seconds") >= 0, "and the warm-ups' times recorded");
                TEST(!file_exists(st3), "state removed when done");
                remove_tree(ws3);
            }
            free(ws3); free(st3);
        }
        free(mw); free(mw2);

        /* its learning rate: the recipe's ramp, then constant to the end (no decay) */
        TEST(train_mcw_lr(0, 100) == 0.0f && fabsf(train_mcw_lr(50, 100) - 0.5f * TRAIN_MCW_LR) < 1e-9f,
             "warm-up lr ramps linearly (%g at step 50 of 100)", (double)train_mcw_lr(50, 100));
        TEST(train_mcw_lr(100, 100) == TRAIN_MCW_LR && train_mcw_lr(3999, 100) == TRAIN_MCW_LR &&
             train_mcw_lr(1000000, 100) == TRAIN_MCW_LR, "warm-up lr constant after the ramp, to the last step");
        /* the mixed warm-up's: the same, a quarter of it */
        TEST(train_mixw_lr(0, 100) == 0.0f && train_mixw_lr(50, 100) == 0.25f * train_mcw_lr(50, 100) &&
             train_mixw_lr(100, 100) == 2.5e-4f && train_mixw_lr(1000000, 100) == 2.5e-4f,
             "mixed warm-up lr: ramp, then constant at %g", (double)train_mixw_lr(100, 100));
    }

    /* 9. The vision warm-up's cache (pulse run: base_pt writes it, oracle_pt reads it): a
     * run that reads it, with other people excluded, gives the bytes of the run that
     * computes the warm-up itself; a cache written for another seed is not read. */
    {
        long n_vw = sanitized ? 3 : 20;
        char *cache = tpath("vision.cache"), *va = tpath("vca"), *vb = tpath("vcb"), *vc = tpath("vcc");
        const Split *cs = world_split(w, "celebrity");
        TrainOpts ov = small_opts(w, STAGE_PT, va, 2);
        ov.vision_warmup = n_vw;
        ov.vision_cache = cache;
        TEST(train_run(&ov) == 0 && file_exists(cache), "pretrain with a vision warm-up writes the cache");
        size_t n0;
        char *c0 = read_file(cache, &n0);
        ov.out = vb;                                    /* reads it, without half the celebrities */
        ov.exclude = cs->people;
        ov.n_exclude = cs->n / 2;
        TEST(train_run(&ov) == 0, "pretrain reading the cache runs");
        ov.out = vc;                                    /* the same, computing the warm-up */
        ov.vision_cache = NULL;
        TEST(train_run(&ov) == 0, "pretrain without the cache runs");
        TEST(same_ckpt(vb, vc), "read from the cache or computed: the same bytes");
        TEST(json_num(vb, "training.json", "vision_warmup_seconds") < 0 &&
             json_num(vc, "training.json", "vision_warmup_seconds") >= 0,
             "the warm-up's time is recorded only where it ran");
        /* another seed: the cache is not read, but replaced */
        ov.seed = 8;
        ov.out = vb;
        ov.vision_cache = cache;
        remove_tree(vb);
        TEST(train_run(&ov) == 0, "another seed with the cache runs");
        ov.out = vc;
        ov.vision_cache = NULL;
        remove_tree(vc);
        TEST(train_run(&ov) == 0 && same_ckpt(vb, vc), "another seed does not read the first seed's cache");
        size_t n1;
        char *c1 = read_file(cache, &n1);
        TEST(n0 == n1 && memcmp(c0, c1, n0) != 0, "and rewrites it for its own");
        free(c0); free(c1);
        free(cache); free(va); free(vb); free(vc);
    }

    free(seen.item_seen);
    world_free(w);
    remove_tree(tmpdir);
    free(wdir); free(a); free(d1); free(d2); free(d3); free(r); free(state); free(ft);
    return test_summary();
}
