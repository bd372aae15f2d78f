/* protocol.c: `pulse run`, the PULSE protocol driver (see protocol.h, docs/protocol.md).
 *
 * Design:
 * - One process runs everything in-process: the world and the tokenizer are loaded once,
 *   both base models stay in memory, and each cell copies the base weights into one
 *   scratch model (model_copy_weights) instead of reloading a checkpoint.
 * - Resumable by content, not by timestamps: every stage has a hash of everything that
 *   decides its output (protocol version, preset, seed, raw material, the training recipe,
 *   the unlearning options, the evaluation options, the people, and the hashes of the
 *   stages it reads). The stage's marker (RUN/state/<stage>.json, RUN/gates.json,
 *   RUN/celebrities.json, RUN/cells/<id>/cell.json) is written last and holds that hash,
 *   so a stage is done iff its marker parses and its hash matches; a changed setting
 *   changes the hash and redoes the stage and everything downstream.
 * - Every file is written atomically (io.h); training resumes inside a stage too
 *   (train_run's own OUT.state). The sequential chain keeps the weights of its last
 *   finished step, so a killed chain continues from there.
 * - Cells never share mutable state: each starts from a fresh copy of its base model, so
 *   the order of cells and a resume do not change any number.
 * - Timings are measured when a stage is computed and stored in its marker; the report
 *   reads them from there, so a rerun that skips everything writes the same bytes.
 * - Everything after pre-training runs in a pool of --procs processes, one kernel thread
 *   each (a small model keeps a core busier with one thread than two threads keep two:
 *   10.8k vs 16-19k tokens/s for 1 vs 2 threads, and decode steps scale worse). The
 *   driver pre-trains base_pt with every thread, ranks the celebrities, then starts
 *   procs - 1 copies of itself (`--cell-part K/N`, internal). The units (base_ft, the
 *   two oracles, the reference evaluations, the gates, every cell, each sequential chain)
 *   are taken by whichever process claims them first once their inputs are done, so
 *   oracle_pt (first: the longest unit), base_ft and oracle_ft train at the same time and
 *   the cells start as soon as their base model and oracle are there; a training takes
 *   the threads of processes that have nothing left to compute. Units are independent and thread-count
 *   invariant, so no number depends on the number of processes or on who computed what;
 *   the driver's final serial pass finds every unit done (and computes any a failed copy
 *   left).
 */
#include "protocol.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "checkpoint.h"
#include "common.h"
#include "data.h"
#include "eval.h"
#include "io.h"
#include "model.h"
#include "report.h"
#include "tokenizer.h"
#include "train.h"
#include "unlearn.h"

/* ============================================================================
 * Hashes of stage inputs: FNV-1a over tagged fields (strings NUL-terminated, numbers by
 * their bytes), so that "ab"+"c" and "a"+"bc" differ. */

static uint64_t h_str(uint64_t h, const char *s) {
    if (!s) s = "(null)";
    return hash64(s, strlen(s) + 1, h);
}
static uint64_t h_int(uint64_t h, long long v) { return hash64(&v, sizeof v, h); }
static uint64_t h_dbl(uint64_t h, double v) { return hash64(&v, sizeof v, h); }
static uint64_t h_ints(uint64_t h, const int *a, int n) {
    h = h_int(h, n);
    return n > 0 ? hash64(a, (size_t)n * sizeof *a, h) : h;
}
static void hex16(char buf[17], uint64_t h) { snprintf(buf, 17, "%016llx", (unsigned long long)h); }

/* ============================================================================
 * Comma lists */

typedef struct List {
    int n, cap;
    char **item;                /* canonical names, malloc'ed */
} List;

/* Lists are short (methods, settings): linear search is fine. */
static int list_has(const List *l, const char *s) {
    for (int i = 0; i < l->n; i++) if (strcmp(l->item[i], s) == 0) return 1;
    return 0;
}

/* Appends a copy of s unless it is there already (a list is a set in insertion order). */
static void list_add(List *l, const char *s) {
    if (list_has(l, s)) return;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->item = xrealloc(l->item, (size_t)l->cap * sizeof *l->item);
    }
    l->item[l->n++] = xstrdup(s);
}

static void list_free(List *l) {
    for (int i = 0; i < l->n; i++) free(l->item[i]);
    free(l->item);
    memset(l, 0, sizeof *l);
}

/* Method names, canonicalised through unlearn_method_parse ("klr" -> "ga_klr"). */
static void parse_methods(List *l, const char *spec, const char *flag) {
    char *s = xstrdup(spec), *save = NULL;
    for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "all") == 0) {
            for (int m = 0; m < UL_N_METHODS; m++) list_add(l, unlearn_method_name((UlMethod)m));
            continue;
        }
        int m = unlearn_method_parse(t);
        if (m < 0) die_input(NULL, "run: --%s: unknown method '%s' (ga, gd, ga_klr, npo, npo_rt, simnpo, idkpo, rmu, all)", flag, t);
        list_add(l, unlearn_method_name((UlMethod)m));
    }
    free(s);
    if (l->n == 0) die_input(NULL, "run: --%s: empty list", flag);
}

/* The settings in execution order; "all" selects every one. */
static const char *const all_settings[] = {"finetuned", "pretrained", "sequential", "params", "forgetdata"};

static void parse_settings(List *l, const char *spec) {
    char *s = xstrdup(spec), *save = NULL;
    for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int ok = 0;
        for (int i = 0; i < 5; i++)
            if (strcmp(t, "all") == 0 || strcmp(t, all_settings[i]) == 0) { list_add(l, all_settings[i]); ok = 1; }
        if (!ok)
            die_input(NULL, "run: --settings: unknown setting '%s' (finetuned, pretrained, sequential, params, "
                      "forgetdata, all)", t);
    }
    free(s);
    if (l->n == 0) die_input(NULL, "run: --settings: empty list");
}

/* ============================================================================
 * The run context */

typedef struct Ctx {
    const char *out;            /* RUN_DIR */
    const Preset *preset;
    uint64_t seed;
    const char *raw;            /* raw material directory (data/) */
    int quiet;
    List methods, settings, seq_methods, params_methods;
    const char *ref_policy;     /* sequential reference: "previous" | "original" */
    const char *seq_budget;     /* a sequential step's length: "group" | "batch" */
    float lr_set[UL_N_METHODS]; /* --unlearn-lr METHOD=RATE (0: not set) */
    double lr_scale;            /* --unlearn-lr xF: every other method's default times F */
    char *lr_spec;              /* --unlearn-lr as parsed, for the reproduce command (NULL: none) */
    TrainOpts pt_over;          /* pre-training overrides of the recipe (base_pt, oracle_pt):
                                   vision_lr, vision/mc/scene/mixed warm-up, vision_quadrant,
                                   vision_shape, warm_restart;
                                   -1 = the recipe's; general_repeat, epochs (0: the recipe's) */
    int ft_general_repeat;      /* fine-tuning's general_repeat (base_ft, oracle_ft); 0: the recipe's */
    double ft_epochs;           /* fine-tuning's epochs (base_ft, oracle_ft); 0: the recipe's */
    World *w;
    Tokenizer *tok;
    Checkpoint *pt, *ft;        /* the base models, loaded once */
    Model *work;                /* scratch model every cell starts from */
    uint64_t h_data, h_pt, h_ft, h_celebs, h_oft, h_opt;
    /* people, as World.people indices */
    int *forget10, n_forget10, *retain90, n_retain90, *celebs, n_celebs;
    int *cforget, n_cforget, *cretain, n_cretain;
    Json *oracle_ft, *oracle_pt; /* oracle results (forget quality, PrivLeak) */
    uint64_t h_oft_eval, h_opt_eval;
    Json *plan;                 /* run.json "cells" */
    List seen;                  /* cell ids handled by this invocation (a cell shared by two
                                   settings runs and counts once) */
    int cell_i, cell_n;         /* progress */
    int stopped;                /* the training test hook stopped a stage (exit 3) */
    /* the pool (--procs): every stage after pre-training, shared by processes */
    int member, nmembers;       /* 0 = the driver; K = the copy started as --cell-part K/N;
                                   N, the pool's processes (the driver's too while it runs) */
    int idle;                   /* this process's idle mark is set (see pool_idle) */
    int grow_threads;           /* kernel threads of the training in progress (pool_grow) */
    double grow_checked;        /* when pool_grow last counted the idle marks */
    pid_t driver;               /* a copy's parent: it stops when the driver is gone */
    int pool;                   /* 1 while this process walks the pool */
    int pool_left, pool_avail, pool_ran;   /* the current pass: not done / unclaimed / taken */
    List pool_done;             /* units seen done (they stay done) */
    double t_start;
} Ctx;

/* --unlearn-lr: "METHOD=RATE" items and at most one "xF" (scale of the other methods'
 * defaults), comma-separated; stored with the rates as parsed, in a canonical form. */
static void parse_unlearn_lr(Ctx *c, const char *spec) {
    char *s = xstrdup(spec), *save = NULL;
    Text norm = {0};
    int n_scale = 0;
    c->lr_scale = 1.0;
    for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '='), *num = t[0] == 'x' && !eq ? t + 1 : eq ? eq + 1 : NULL, *end = NULL;
        if (!num) die_input(NULL, "run: --unlearn-lr: '%s' is neither METHOD=RATE nor xFACTOR", t);
        double v = strtod(num, &end);
        if (*num == '\0' || *end != '\0' || !isfinite(v) || !((float)v > 0.0f) || v > 1.0e3)
            die_input(NULL, "run: --unlearn-lr: '%s': the rate or factor must be a number > 0 (at most 1000)", t);
        if (!eq) {
            if (n_scale++) die_input(NULL, "run: --unlearn-lr: more than one xFACTOR");
            c->lr_scale = v;
            text_printf(&norm, "%sx%g", norm.n ? "," : "", v);
            continue;
        }
        *eq = '\0';
        int m = unlearn_method_parse(t);
        if (m < 0) die_input(NULL, "run: --unlearn-lr: unknown method '%s' (ga, gd, ga_klr, npo, npo_rt, simnpo, idkpo, rmu)", t);
        if (c->lr_set[m] > 0.0f) die_input(NULL, "run: --unlearn-lr: %s given twice", unlearn_method_name((UlMethod)m));
        c->lr_set[m] = (float)v;
        text_printf(&norm, "%s%s=%g", norm.n ? "," : "", unlearn_method_name((UlMethod)m), v);
    }
    free(s);
    if (!norm.n) die_input(NULL, "run: --unlearn-lr: empty list");
    c->lr_spec = xstrdup(text_str(&norm));
    text_free(&norm);
}

/* The learning rate a method's unlearning operations use in this run. */
static float run_lr(const Ctx *c, UlMethod m) {
    if (c->lr_set[m] > 0.0f) return c->lr_set[m];
    float d = unlearn_opts_default(m, UL_FINETUNED).lr;
    return c->lr_scale == 1.0 ? d : (float)(d * c->lr_scale);
}

/* ============================================================================
 * The pool: with --procs N > 1, the driver trains base_pt and ranks the celebrities,
 * then starts N - 1 copies of itself; every process walks the same list of units
 * (oracle_pt, base_ft, oracle_ft, the gates, every cell, each sequential chain as one unit) in
 * the same order, again and again, and computes a unit when its inputs are done and it
 * wins the unit's claim: a file RUN/state/claims/<unit> created with O_EXCL, holding the
 * claimant's pid. A process with nothing ready waits 0.1 s and walks again; it leaves
 * when every unit not done is claimed. The driver then walks the list once more
 * without the pool (the serial path), finding everything done: it prints the progress
 * lines, computes whatever a failed copy left, and writes the report. */

static char *claim_path(const Ctx *c, const char *unit) { return xasprintf("%s/state/claims/%s", c->out, unit); }

/* Creates `path` with `flags` (O_EXCL for a claim) holding this process's pid: 1 if
 * written whole, 0 if created but not written, -1 if not created. */
static int pid_file(const char *path, int flags) {
    int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);
    if (fd < 0) return -1;
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    int ok = write(fd, pid, (size_t)n) == n;
    close(fd);
    return ok;
}

/* A process of the pool with nothing to compute marks itself idle (RUN/state/claims/
 * idle@K, holding its pid like a claim, so that a failed copy's mark goes with its
 * claims) and unmarks itself when it claims a unit; a training in the pool then takes
 * the idle processes' threads (pool_grow). */
static void pool_idle(Ctx *c, int idle) {
    if (c->idle == idle || c->nmembers < 2) return;
    char *unit = xasprintf("idle@%d", c->member), *p = claim_path(c, unit);
    if (idle) pid_file(p, O_TRUNC);     /* an unreadable mark counts all the same */
    else unlink(p);
    c->idle = idle;
    free(unit); free(p);
}

/* The idle marks in RUN/state/claims/. */
static int pool_idle_count(const Ctx *c) {
    char *dir = xasprintf("%s/state/claims", c->out);
    DIR *d = opendir(dir);
    struct dirent *e;
    int idle = 0;
    while (d && (e = readdir(d)))
        if (strncmp(e->d_name, "idle@", 5) == 0) idle++;
    if (d) closedir(d);
    free(dir);
    return idle;
}

/* TrainOpts.on_step of a training in the pool: once a second, counts the idle marks and
 * runs the kernels on N / (N - idle) threads of the pool's N (one each to start with).
 * Results do not depend on the thread count, so only the time changes: oracle_pt, the
 * longest unit, finishes on two threads once the other process has run out of work. */
static void pool_grow(void *ctx) {
    Ctx *c = ctx;
    double now = now_seconds();
    if (now - c->grow_checked < 1.0) return;
    /* test hook: the first check waits up to PULSE_POOL_GROW_WAIT seconds for an idle mark */
    const char *wait = c->grow_checked == 0.0 ? getenv("PULSE_POOL_GROW_WAIT") : NULL;
    for (double t = wait ? atof(wait) : 0.0; t > 0.0 && !pool_idle_count(c); t -= 0.01)
        nanosleep(&(struct timespec){0, 10000000L}, NULL);
    c->grow_checked = now;
    int idle = pool_idle_count(c);
    int busy = c->nmembers - idle, want = busy < 1 ? c->nmembers : c->nmembers / busy;
    if (want < 1) want = 1;
    if (want != c->grow_threads) {
#ifdef _OPENMP
        omp_set_num_threads(want);
#endif
        c->grow_threads = want;
    }
}

/* 1 outside the pool; in it, whether the unit has been seen done (a unit's inputs). */
static int unit_done(const Ctx *c, const char *unit) { return !c->pool || list_has(&c->pool_done, unit); }

/* In the pool, a unit that was seen done is not looked at again. */
static int pool_skip(const Ctx *c, const char *unit) { return c->pool && list_has(&c->pool_done, unit); }

/* In the pool: notes a unit done (the driver says so once), and says whether this
 * process computes it now: its inputs are ready and the claim is ours. A unit not done
 * counts in pool_left, and in pool_avail while nobody has claimed it. */
static int pool_take(Ctx *c, const char *unit, int ready, int done) {
    if (done) {
        if (!list_has(&c->pool_done, unit)) {
            list_add(&c->pool_done, unit);
            if (!c->quiet && c->member == 0)
                fprintf(stderr, "pulse run: %6.0f s  %s: done\n", now_seconds() - c->t_start, unit);
        }
        return 0;
    }
    c->pool_left++;
    char *p = claim_path(c, unit);
    int take = 0;
    if (access(p, F_OK) != 0) {
        c->pool_avail++;
        int made = ready ? pid_file(p, O_EXCL) : -1;
        if (made >= 0) {
            take = made == 1;
            if (!take) unlink(p);
            else pool_idle(c, 0);
        }
        /* test hook: copy K dies holding its first claim (its units must go elsewhere) */
        const char *crash = getenv("PULSE_POOL_CRASH");
        if (take && c->member > 0 && crash && atoi(crash) == c->member) {
            fprintf(stderr, "pulse run: process %d: stopped by PULSE_POOL_CRASH holding %s\n", c->member, unit);
            exit(1);
        }
    }
    free(p);
    c->pool_ran += take;
    return take;
}

/* Removes the claims of process `pid` (0: every claim, and the directory). */
static void claims_release(const Ctx *c, pid_t pid) {
    char *dir = xasprintf("%s/state/claims", c->out);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = xasprintf("%s/%s", dir, e->d_name);
        FILE *f = pid ? fopen(p, "r") : NULL;
        long who = 0;
        if (f) {
            if (fscanf(f, "%ld", &who) != 1) who = 0;
            fclose(f);
        }
        if (!pid || who == (long)pid) unlink(p);
        free(p);
    }
    if (d) closedir(d);
    if (!pid) rmdir(dir);
    free(dir);
}

/* One progress line on stderr, "pulse run: ..." (nothing with --quiet). */
static void say(const Ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const Ctx *c, const char *fmt, ...) {
    if (c->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "pulse run: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* RUN_DIR/rel, malloc'ed. */
static char *run_path(const Ctx *c, const char *rel) { return xasprintf("%s/%s", c->out, rel); }

/* A marker file: its JSON if it parses and carries hash h, else NULL. */
static Json *marker_load(const char *path, uint64_t h) {
    if (!file_exists(path)) return NULL;
    size_t n;
    char *s = read_file(path, &n), err[160], want[17];
    Json *j = json_parse(s, n, err, sizeof err);
    free(s);
    hex16(want, h);
    const Json *got = json_get(j, "hash");
    if (!got || got->type != JSON_STRING || strcmp(got->string, want) != 0) { json_free(j); return NULL; }
    return j;
}

/* Whether a marker is current (its content is not needed). */
static int marker_ok(const char *path, uint64_t h) {
    Json *j = marker_load(path, h);
    json_free(j);
    return j != NULL;
}

/* Writes marker j (taking it) with hash h. */
static void marker_save(const char *path, Json *j, uint64_t h) {
    char hx[17];
    hex16(hx, h);
    json_set(j, "hash", json_new_string(hx));
    json_save(path, j);
    json_free(j);
}

/* Seconds rounded to milliseconds (markers are read by people too). */
static Json *secs(double s) { return json_new_number(round(s * 1000) / 1000); }

/* A float option as the short decimal it was written as (2e-05, not 1.9999999e-05). */
static Json *fnum(float x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", (double)x);
    return json_new_number(strtod(buf, NULL));
}

/* Person IDs (the files' "ID") of a list of person indices. */
static Json *people_ids(const World *w, const int *p, int n) {
    Json *a = json_new_array();
    for (int i = 0; i < n; i++) json_push(a, json_new_number(w->people[p[i]].id));
    return a;
}

/* A split's people as a malloc'ed copy. */
static int *split_people(const World *w, const char *name, int *n) {
    const Split *s = world_split(w, name);
    if (!s) die_input(w->dir, "the world has no split '%s'", name);
    int *p = xmalloc(((size_t)s->n + 1) * sizeof *p);
    memcpy(p, s->people, (size_t)s->n * sizeof *p);
    *n = s->n;
    return p;
}

/* ============================================================================
 * Stage 0: the world */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Hash of every regular file in the raw-material directory, in name order. */
static uint64_t raw_hash(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) die_input(dir, "cannot open the raw-material directory (the repository's data/; see --raw)");
    char *names[512];
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = xasprintf("%s/%s", dir, e->d_name);
        if (!dir_exists(p) && n < 512) names[n++] = xstrdup(e->d_name);
        free(p);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    uint64_t h = HASH64_INIT;
    for (int i = 0; i < n; i++) {
        char *p = xasprintf("%s/%s", dir, names[i]);
        h = h_str(h, names[i]);
        h = h_int(h, (long long)file_hash64(p));
        free(p);
        free(names[i]);
    }
    return h;
}

/* Stage 0: the world is generated unless its marker is current; it is loaded either way,
 * with its tokenizer, once for the whole run. The hash covers the preset's every size, the
 * seed and the raw material's bytes. */
static void stage_data(Ctx *c) {
    const Preset *p = c->preset;
    uint64_t h = h_int(HASH64_INIT, PROTOCOL_VERSION);
    h = h_str(h, "data");
    h = h_str(h, p->name);
    h = h_int(h, p->n_fictitious); h = h_int(h, p->n_celebrity); h = h_int(h, p->celeb_keep);
    h = h_int(h, p->celeb_forget); h = h_int(h, p->n_holdout); h = h_ints(h, p->n_forget, 3);
    h = h_int(h, p->n_seq); h = h_int(h, p->n_attrs); h = h_int(h, p->n_scenes_train);
    h = h_int(h, p->n_faces_desc); h = h_int(h, p->n_mc_context);
    h = h_int(h, p->n_genbench_scene); h = h_int(h, p->n_genbench_fact); h = h_int(h, p->vocab_size);
    if (p->scene_lookup) h = h_int(h_str(h, "scene lookup"), p->scene_lookup);     /* only when on */
    h = h_int(h, (long long)c->seed);
    h = h_int(h, (long long)raw_hash(c->raw));
    c->h_data = h;
    char *marker = run_path(c, "state/data.json"), *dir = run_path(c, "data");
    if (marker_ok(marker, h) && dir_exists(dir)) {
        say(c, "world: done (%s)", dir);
    } else {
        say(c, "world: generating the %s world (seed %llu) into %s", p->name, (unsigned long long)c->seed, dir);
        double t0 = now_seconds();
        data_generate(p, c->seed, c->raw, dir);
        Json *j = json_new_object();
        json_add(j, "stage", json_new_string("data"));
        json_add(j, "seconds", secs(now_seconds() - t0));
        marker_save(marker, j, h);
        say(c, "world: %.1f s", now_seconds() - t0);
    }
    c->w = world_load(dir);
    char *tp = xasprintf("%s/tokenizer.json", dir);
    c->tok = tok_load(tp);
    free(tp);
    free(marker);
    free(dir);
}

/* ============================================================================
 * Stages 1 and 3: training (base models and oracles) */

/* A training stage's options before its paths: the run's pre-training overrides when it
 * pre-trains from scratch (base_pt, oracle_pt), its fine-tuning one when it fine-tunes. */
static TrainOpts stage_opts(const Ctx *c, int stage, const char *base) {
    TrainOpts o = train_opts_default(stage);
    if (stage == STAGE_PT && !base) {
        o.vision_lr = c->pt_over.vision_lr;
        o.vision_warmup = c->pt_over.vision_warmup;
        o.mc_warmup = c->pt_over.mc_warmup;
        o.scene_warmup = c->pt_over.scene_warmup;
        o.mixed_warmup = c->pt_over.mixed_warmup;
        o.general_repeat = c->pt_over.general_repeat;
        o.vision_quadrant = c->pt_over.vision_quadrant;
        o.vision_shape = c->pt_over.vision_shape;
        o.warm_restart = c->pt_over.warm_restart;
        o.epochs = c->pt_over.epochs;
    } else if (stage == STAGE_FT) {
        o.general_repeat = c->ft_general_repeat;
        o.epochs = c->ft_epochs;
    }
    return o;
}

/* Trains RUN/<name> unless its marker is current (in the pool: if this process claims
 * it); returns the stage hash. The training test hook stopping it sets c->stopped (the
 * caller then stops the run, exit 3). */
static uint64_t stage_train(Ctx *c, const char *name, int stage, const char *base, uint64_t h_base,
                            const int *exclude, int n_exclude) {
    /* every recipe field that changes the weights, plus the base and the excluded people */
    TrainOpts ro = stage_opts(c, stage, base);
    Recipe r = train_recipe_for(&ro, c->preset->name);
    uint64_t h = h_int(h_base, PROTOCOL_VERSION);
    h = h_str(h, name); h = h_int(h, stage); h = h_str(h, base);
    h = h_dbl(h, r.epochs); h = h_int(h, r.batch); h = h_dbl(h, r.lr); h = h_int(h, r.warmup);
    h = h_int(h, r.schedule); h = h_dbl(h, r.weight_decay); h = h_dbl(h, r.clip); h = h_int(h, r.mode);
    h = h_int(h, r.lora_r); h = h_dbl(h, r.lora_alpha); h = h_str(h, r.lora_targets); h = h_dbl(h, r.replay);
    h = h_dbl(h, r.vision_lr); h = h_int(h, r.mc_repeat); h = h_int(h, base ? 0 : r.vision_warmup);
    h = h_int(h, r.general_repeat);
    long mcw = base || stage != STAGE_PT ? 0 : r.mc_warmup;
    if (mcw) {                      /* only when on: stages of recipes without it keep their hash */
        h = h_int(h, mcw);
        h = h_str(h, TRAIN_MCW_SCHEDULE);
    }
    long scw = base || stage != STAGE_PT ? 0 : r.scene_warmup;
    if (scw) h = h_int(h_str(h, "scene warm-up"), scw);                                                 /* likewise */
    long mixw = base || stage != STAGE_PT ? 0 : r.mixed_warmup;
    if (mixw) h = h_int(h_str(h, TRAIN_MIXW_SCHEDULE), mixw);                                           /* likewise */
    if (r.mc_face_repeat || r.mc_name_repeat) h = h_int(h_int(h, r.mc_face_repeat), r.mc_name_repeat);  /* likewise */
    if (!base && r.vision_warmup && r.vision_quadrant) h = h_str(h, "vision quadrant");                  /* likewise */
    if (!base && r.vision_warmup && r.vision_shape) h = h_str(h, "vision shape");                        /* likewise */
    long wr = base || stage != STAGE_PT ? 0 : r.warm_restart;
    if (wr) h = h_int(h_str(h, TRAIN_RESTART_SCHEDULE), wr);                                            /* likewise */
    if (!base) {
        /* from scratch: the preset's model */
        LlavaConfig mc = train_model_config(c->preset->name, c->preset->vocab_size);
        int sz[] = {mc.hidden_size, mc.intermediate_size, mc.num_hidden_layers, mc.num_attention_heads,
                    mc.num_key_value_heads, mc.v_hidden_size, mc.v_intermediate_size, mc.v_num_hidden_layers,
                    mc.v_num_attention_heads, mc.image_size, mc.patch_size};
        h = h_ints(h, sz, (int)(sizeof sz / sizeof sz[0]));
    }
    h = h_int(h, (long long)c->seed);
    h = h_ints(h, exclude, n_exclude);
    if (pool_skip(c, name)) return h;
    char *rel = xasprintf("state/%s.json", name), *marker = run_path(c, rel), *dir = run_path(c, name);
    char *cfg = xasprintf("%s/config.json", dir);
    int done = marker_ok(marker, h) && file_exists(cfg);
    /* a copy starts after pre-training: it never trains base_pt */
    if (c->member && !c->pool && !done) die_internal("%s: not trained when a --cell-part copy started", name);
    if (!c->pool && done) say(c, "%s: done (%s)", name, dir);
    if (c->pool ? pool_take(c, name, 1, done) : !done) {
        say(c, "%s: training (%s%s)", name, stage == STAGE_PT ? "pre-training" : "fine-tuning",
            n_exclude ? ", without the forget people" : "");
        TrainOpts o = stage_opts(c, stage, base);
        char *data = run_path(c, "data"), *base_dir = base ? run_path(c, base) : NULL;
        o.data_dir = data; o.world = c->w; o.base = base_dir; o.out = dir; o.seed = c->seed;
        o.exclude = exclude; o.n_exclude = n_exclude; o.quiet = c->quiet;
        /* base_pt and oracle_pt run the same vision warm-up: the second reads the first's */
        char *vcache = stage == STAGE_PT && !base ? run_path(c, "state/vision_warmup.state") : NULL;
        o.vision_cache = vcache;
        if (c->pool) {          /* on one thread, more when others are idle */
            o.on_step = pool_grow;
            o.step_ctx = c;
            c->grow_threads = 1;
            c->grow_checked = 0.0;
        }
        double t0 = now_seconds();
        int rc = train_run(&o);
#ifdef _OPENMP
        if (c->pool) omp_set_num_threads(1);
#endif
        free(data); free(base_dir); free(vcache);
        if (rc == 3) { say(c, "%s: stopped by PULSE_TRAIN_STOP_AFTER (state saved)", name); c->stopped = 1; goto out; }
        if (rc != 0) die_internal("%s: training failed (status %d)", name, rc);
        double s = now_seconds() - t0;
        Json *j = json_new_object();
        json_add(j, "stage", json_new_string(name));
        json_add(j, "seconds", secs(s));
        json_add(j, "excluded_people", people_ids(c->w, exclude, n_exclude));
        marker_save(marker, j, h);
        say(c, "%s: %.1f s", name, s);
    }
out:
    free(rel); free(marker); free(dir); free(cfg);
    return h;
}

/* A checkpoint of the run directory (ckpt_load validates it; a broken one is exit 2). */
static Checkpoint *load_ckpt(const Ctx *c, const char *name) {
    char *dir = run_path(c, name);
    Checkpoint *ck = ckpt_load(dir);
    free(dir);
    return ck;
}

/* ============================================================================
 * Stage 2b: the gates */

/* Stage 2b: train_gates on both base models, recorded in gates.json (the table) and
 * state/gates.json (its time). The hash is the two models' hashes: retraining redoes it. */
static void stage_gates(Ctx *c) {
    if (pool_skip(c, "gates")) return;
    uint64_t h = h_str(h_int(c->h_ft, (long long)c->h_pt), "gates");
    char *path = run_path(c, "gates.json");
    Json *j = marker_load(path, h);
    if (c->pool && !pool_take(c, "gates", c->ft != NULL, j != NULL)) {
        /* done, waiting for base_ft, or another process's */
    } else if (j) {
        /* the table again, as train_gates prints it */
        const Json *rows = json_get(j, "rows");
        for (size_t i = 0; !c->quiet && rows && rows->type == JSON_ARRAY && i < rows->len; i++) {
            const Json *r = rows->items[i];
            fprintf(stderr, "  %-36s %-10s %7.1f %5.0f %3s %5.1f  %s\n", json_get_string(r, "what", "?", path),
                    json_get_string(r, "scoring", "?", path), json_get_number(r, "value", NAN, path),
                    json_get_number(r, "n", NAN, path), json_get_bool(r, "upper", 0, path) ? "<=" : ">=",
                    json_get_number(r, "threshold", NAN, path), json_get_bool(r, "pass", 0, path) ? "PASS" : "FAIL");
        }
        say(c, "gates: %s (from gates.json)", json_get_bool(j, "all_pass", 0, path) ? "all PASS" : "some FAIL");
    } else {
        GateReport g;
        train_gates(c->pt->model, c->ft->model, c->tok, c->w, &g, c->quiet || c->pool ? NULL : stderr);
        j = json_new_object();
        Json *rows = json_new_array();
        for (int i = 0; i < g.n; i++) {
            const GateRow *r = &g.row[i];
            Json *o = json_new_object();
            json_add(o, "what", json_new_string(r->what));
            json_add(o, "scoring", json_new_string(r->scoring == SCORE_LETTER ? "letter" : "likelihood"));
            json_add(o, "value", json_new_number(r->value));
            json_add(o, "n", json_new_number(r->n));
            json_add(o, "threshold", json_new_number(r->threshold));
            json_add(o, "upper", json_new_bool(r->upper));
            json_add(o, "pass", json_new_bool(r->pass));
            json_push(rows, o);
        }
        json_add(j, "rows", rows);
        json_add(j, "all_pass", json_new_bool(g.all_pass));
        marker_save(path, j, h);
        /* its time lives with the other stage timings */
        Json *t = json_new_object();
        json_add(t, "stage", json_new_string("gates"));
        json_add(t, "seconds", secs(g.seconds));
        char *tp = run_path(c, "state/gates.json");
        marker_save(tp, t, h);
        free(tp);
        if (!g.all_pass) say(c, "gates: WARNING: some gates fail; the protocol runs on, the report flags it");
        j = NULL;
    }
    json_free(j);
    free(path);
}

/* ============================================================================
 * Stage 2: which celebrities base_pt knows (PULSE: 153 -> the best 45 -> 20 + 25) */

typedef struct Ranked { int person; double acc; } Ranked;

/* Descending accuracy, then ascending world index: a total order, so the ranking is
 * the same on every machine. */
static int cmp_ranked(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->acc != y->acc) return x->acc > y->acc ? -1 : 1;
    return x->person - y->person;       /* ties: world order, so the ranking is total */
}

static const char *const celeb_rule =
    "Every celebrity candidate is scored by base_pt on its profile questions (multiple choice, letter rule and "
    "option likelihood pooled, image+text and text-only pooled). The top K by accuracy are kept (ties: world "
    "order). Kept rank r (0-based) goes to the forget group iff floor((r+1) F / K) > floor(r F / K), which "
    "spreads the F forget celebrities evenly over the ranking, so both groups are known equally well.";

/* Stage 2: rank the celebrity candidates by base_pt's measured accuracy, keep the top K,
 * split them (celeb_rule), write celebrities.json; the groups are read back from the file
 * either way, so a resumed run uses exactly the recorded selection. */
static void stage_celebrities(Ctx *c) {
    const Preset *p = c->preset;
    int nc;
    int *cand = split_people(c->w, "celebrity", &nc);
    int K = p->celeb_keep < nc ? p->celeb_keep : nc, F = p->celeb_forget < K ? p->celeb_forget : K;
    uint64_t h = h_str(c->h_pt, "celebrities");
    h = h_int(h, K); h = h_int(h, F); h = h_ints(h, cand, nc);
    c->h_celebs = h;
    char *path = run_path(c, "celebrities.json");
    Json *j = marker_load(path, h);
    if (!j && c->member) die_internal("celebrities: not ranked when a --cell-part copy started");
    if (!j) {
        say(c, "celebrities: measuring base_pt on %d candidates", nc);
        double t0 = now_seconds();
        double *acc = xcalloc((size_t)nc + 1, sizeof *acc);
        eval_person_accuracy(c->pt->model, c->tok, c->w, cand, nc, EVAL_MC | EVAL_MC_LIKELIHOOD, 8, acc);
        Ranked *rk = xcalloc((size_t)nc + 1, sizeof *rk);
        for (int i = 0; i < nc; i++) rk[i] = (Ranked){cand[i], acc[i]};
        qsort(rk, (size_t)nc, sizeof *rk, cmp_ranked);
        j = json_new_object();
        json_add(j, "rule", json_new_string(celeb_rule));
        json_add(j, "keep", json_new_number(K));
        json_add(j, "forget_count", json_new_number(F));
        Json *all = json_new_array(), *fa = json_new_array(), *ra = json_new_array();
        /* rank r < K is kept; the Bresenham test spreads the F forget ranks evenly */
        for (int r = 0; r < nc; r++) {
            const Person *pp = &c->w->people[rk[r].person];
            const char *group = "not kept";
            if (r < K) {
                int f = (long)(r + 1) * F / K > (long)r * F / K;
                group = f ? "forget" : "retain";
                json_push(f ? fa : ra, json_new_number(pp->id));
            }
            Json *o = json_new_object();
            json_add(o, "rank", json_new_number(r + 1));
            json_add(o, "id", json_new_number(pp->id));
            json_add(o, "name", json_new_string(pp->name));
            json_add(o, "accuracy", json_new_number(round(rk[r].acc * 1000) / 1000));
            json_add(o, "group", json_new_string(group));
            json_push(all, o);
        }
        json_add(j, "candidates", all);
        json_add(j, "forget", fa);
        json_add(j, "retain", ra);
        double s = now_seconds() - t0;
        Json *copy = json_new_object();     /* the timing, with the other stages */
        json_add(copy, "stage", json_new_string("celebrities"));
        json_add(copy, "seconds", secs(s));
        char *tp = run_path(c, "state/celebrities.json");
        marker_save(tp, copy, h);
        free(tp);
        char hx[17];
        hex16(hx, h);
        json_set(j, "hash", json_new_string(hx));
        json_save(path, j);
        free(acc); free(rk);
        say(c, "celebrities: kept %d of %d, %d to forget (%.1f s)", K, nc, F, s);
    }
    /* the two groups, back to person indices */
    const Json *groups[2] = {json_get(j, "forget"), json_get(j, "retain")};
    int *out[2], nout[2];
    for (int g = 0; g < 2; g++) {
        if (!groups[g] || groups[g]->type != JSON_ARRAY) die_input(path, "\"forget\"/\"retain\" must be arrays");
        out[g] = xmalloc((groups[g]->len + 1) * sizeof(int));
        nout[g] = 0;
        for (size_t i = 0; i < groups[g]->len; i++) {
            const Json *v = groups[g]->items[i];
            /* compare before converting: (int) of an out-of-range double is undefined */
            int ok = v->type == JSON_NUMBER && v->number >= 1 && v->number <= INT_MAX && v->number == floor(v->number);
            int idx = ok ? world_person_index(c->w, (int)v->number) : -1;
            if (idx < 0) die_input(path, "unknown person ID in the celebrity groups");
            if (c->w->people[idx].kind != KIND_CELEBRITY) die_input(path, "person %d in the celebrity groups is not a celebrity", c->w->people[idx].id);
            for (int q = 0; q <= g; q++)          /* either group, earlier in the file */
                for (int k = 0; k < nout[q]; k++)
                    if (out[q][k] == idx) die_input(path, "person %d is in the celebrity groups twice", c->w->people[idx].id);
            out[g][nout[g]++] = idx;
        }
    }
    c->cforget = out[0]; c->n_cforget = nout[0];
    c->cretain = out[1]; c->n_cretain = nout[1];
    c->celebs = cand; c->n_celebs = nc;
    json_free(j);
    free(path);
}

/* ============================================================================
 * Evaluation specs and cells */

typedef struct EvalSpec {
    unsigned sets, tasks;
    const int *forget; int n_forget;
    const int *retain; int n_retain;
    const Json *oracle;         /* NULL: no forget quality / PrivLeak */
    uint64_t h_oracle;
    const char *oracle_path;
} EvalSpec;

/* The evaluation of a setting's cells (full) or of ablation / sequential cells (light). */
static EvalSpec spec_for(const Ctx *c, const char *setting, int light) {
    EvalSpec e;
    memset(&e, 0, sizeof e);
    int pt = strcmp(setting, "pretrained") == 0;
    e.forget = pt ? c->cforget : c->forget10; e.n_forget = pt ? c->n_cforget : c->n_forget10;
    e.retain = pt ? c->cretain : c->retain90; e.n_retain = pt ? c->n_cretain : c->n_retain90;
    e.sets = EVAL_SETS_ALL;
    if (pt) e.sets &= ~EVAL_SET_BIT(EVAL_SET_TEST);     /* the test set holds fictitious people only */
    e.tasks = EVAL_TASKS_ALL;
    if (light) {
        e.sets = EVAL_SET_BIT(EVAL_SET_FORGET) | EVAL_SET_BIT(EVAL_SET_RETAIN) | EVAL_SET_BIT(EVAL_SET_GENBENCH) |
                 EVAL_SET_BIT(EVAL_SET_CELEBRITY);
        e.tasks = EVAL_TASKS_LIGHT;
    } else {
        e.oracle = pt ? c->oracle_pt : c->oracle_ft;
        e.h_oracle = pt ? c->h_opt_eval : c->h_oft_eval;
        e.oracle_path = pt ? "oracle_pt" : "oracle_ft";
    }
    return e;
}

/* Everything of an evaluation that changes its numbers; batch size and threads do not. */
static uint64_t spec_hash(uint64_t h, const EvalSpec *e, const Ctx *c) {
    h = h_str(h, "eval");
    h = h_int(h, e->sets); h = h_int(h, e->tasks);
    h = h_ints(h, e->forget, e->n_forget); h = h_ints(h, e->retain, e->n_retain);
    h = h_ints(h, c->celebs, c->n_celebs); h = h_ints(h, c->cforget, c->n_cforget); h = h_ints(h, c->cretain, c->n_cretain);
    h = h_int(h, (long long)(e->oracle ? e->h_oracle : 0));
    h = h_int(h, (long long)c->seed);
    return h;
}

/* eval_run on m with the spec's people and the run's celebrity groups; writes
 * dir/results.json, predictions.jsonl and timing.json; returns the results and the time. */
static Json *run_eval(Ctx *c, Model *m, const EvalSpec *e, const char *dir, const char *model_rel, double *seconds) {
    EvalOptions o = eval_options_default();
    o.sets = e->sets; o.tasks = e->tasks;
    o.forget = e->forget; o.n_forget = e->n_forget;
    o.retain = e->retain; o.n_retain = e->n_retain;
    o.celebrity = c->celebs; o.n_celebrity = c->n_celebs;
    o.celeb_forget = c->cforget; o.n_celeb_forget = c->n_cforget;
    o.celeb_retain = c->cretain; o.n_celeb_retain = c->n_cretain;
    o.seed = c->seed;
    o.oracle = e->oracle;
    char *op = e->oracle_path ? run_path(c, e->oracle_path) : NULL, *mp = run_path(c, model_rel);
    o.oracle_path = op;
    o.model_path = mp;
    o.out_dir = dir;
    o.quiet = 1;
    double t0 = now_seconds();
    make_dirs(dir);
    Json *res = eval_run(m, c->tok, c->w, &o, NULL);
    *seconds = now_seconds() - t0;
    free(op); free(mp);
    return res;
}

/* 1 if RUN/<rel>/cell.json is current for hash h and its results.json parses (a cell
 * that diverged has no results and is done too). */
static int cell_done(const Ctx *c, const char *rel, uint64_t h) {
    char *mp = xasprintf("%s/%s/cell.json", c->out, rel);
    Json *m = marker_load(mp, h);
    free(mp);
    if (!m) return 0;
    int ok = 1;
    if (strcmp(json_get_string(m, "status", "ok", NULL), "ok") == 0) {
        char *rp = xasprintf("%s/%s/results.json", c->out, rel);
        ok = 0;
        if (file_exists(rp)) {
            size_t n;
            char *s = read_file(rp, &n), err[160];
            Json *r = json_parse(s, n, err, sizeof err);
            ok = r != NULL;
            json_free(r);
            free(s);
        }
        free(rp);
    }
    json_free(m);
    return ok;
}

/* The results of a finished cell (cell_done checked that they parse). */
static Json *load_results(const Ctx *c, const char *rel) {
    char *p = xasprintf("%s/%s/results.json", c->out, rel);
    Json *j = json_load(p);
    free(p);
    return j;
}

/* Accuracy at sets.<set>.<task>.all (NaN if absent), for progress lines. */
static double acc_of(const Json *res, const char *set, const char *task) {
    const Json *v = json_get(json_get(json_get(json_get(res, "sets"), set), task), "all");
    if (v && v->type == JSON_OBJECT) v = json_get(v, "value");
    return v && v->type == JSON_NUMBER ? v->number : NAN;
}

/* "[ k/N] id  what  forget .. retain .. genbench .." (multiple choice by option
 * likelihood, pooled modalities: the letter rule is near chance on these small models). */
static void progress_line(Ctx *c, const char *id, const char *what, const Json *res) {
    if (c->pool) return;            /* the pool says "done" once per unit */
    c->cell_i++;
    if (c->quiet) return;
    fprintf(stderr, "pulse run: [%2d/%d] %-28s %s", c->cell_i, c->cell_n, id, what);
    if (res)
        fprintf(stderr, "  forget %.1f retain %.1f genbench %.1f (mc likelihood)", acc_of(res, "forget", "mc_likelihood"),
                acc_of(res, "retain", "mc_likelihood"), acc_of(res, "genbench", "mc_likelihood"));
    fprintf(stderr, "\n");
}

/* The cell marker's common fields. */
static Json *cell_json(const char *id, const char *kind, const char *setting, const char *method, const char *params, int step) {
    Json *j = json_new_object();
    json_add(j, "id", json_new_string(id));
    json_add(j, "kind", json_new_string(kind));
    json_add(j, "setting", json_new_string(setting));
    json_add(j, "method", json_new_string(method));
    json_add(j, "params", json_new_string(params));
    json_add(j, "step", step >= 0 ? json_new_number(step) : json_new_null());
    return j;
}

/* A "before" or "oracle" cell: evaluates a checkpoint as it is. m may be NULL: then the
 * checkpoint RUN/<model_rel> is loaded only if the cell must be computed. Returns the
 * results (owned by the caller); in the pool, only if this process computed them. ready:
 * the model and the oracle results the spec needs are there (always, outside the pool). */
static Json *cell_plain(Ctx *c, const char *id, const char *kind, const char *setting, Model *m, const char *model_rel,
                        uint64_t h_model, const EvalSpec *e, uint64_t *h_out, int ready) {
    if (pool_skip(c, id)) return NULL;
    if (c->pool && !ready) { pool_take(c, id, 0, 0); return NULL; }
    CHECK(ready);
    char *rel = xasprintf("cells/%s", id), *dir = run_path(c, rel);
    uint64_t h = spec_hash(h_str(h_model, kind), e, c);
    if (h_out) *h_out = h;
    Json *res = NULL;
    int done = cell_done(c, rel, h);
    if (c->pool && !pool_take(c, id, 1, done)) {
        /* done, or another process's */
    } else if (done) {
        res = load_results(c, rel);
        progress_line(c, id, "done", res);
    } else {
        Checkpoint *ck = m ? NULL : load_ckpt(c, model_rel);
        double se;
        res = run_eval(c, m ? m : ck->model, e, dir, model_rel, &se);
        if (ck) ckpt_free(ck);
        Json *j = cell_json(id, kind, setting, kind, "llm", -1);
        json_add(j, "status", json_new_string("ok"));
        json_add(j, "model", json_new_string(model_rel));
        json_add(j, "seconds_eval", secs(se));
        char *mp = xasprintf("%s/cell.json", dir);
        marker_save(mp, j, h);
        free(mp);
        char what[64];
        snprintf(what, sizeof what, "eval %.1f s", se);
        progress_line(c, id, what, res);
    }
    free(rel); free(dir);
    return res;
}

/* The unlearning options of a cell as JSON (cell.json "opts"), and their hash. */
static Json *opts_json(const UnlearnOpts *o) {
    Json *j = json_new_object();
    json_add(j, "method", json_new_string(unlearn_method_name(o->method)));
    json_add(j, "setting", json_new_string(unlearn_setting_name(o->setting)));
    json_add(j, "forget_data", json_new_string(o->forget_data == UL_FD_ALL ? "all" : o->forget_data == UL_FD_QA ? "qa" : "default"));
    json_add(j, "params", json_new_string(unlearn_params_name(o->params)));
    json_add(j, "lora_r", json_new_number(o->lora_r));
    json_add(j, "lora_alpha", fnum(o->lora_alpha));
    json_add(j, "lora_dropout", fnum(o->lora_dropout));
    json_add(j, "lr", fnum(o->lr));
    json_add(j, "epochs", json_new_number(o->epochs));
    json_add(j, "steps_requested", json_new_number((double)o->steps));
    json_add(j, "batch", json_new_number(o->batch));
    json_add(j, "schedule", json_new_string(o->schedule == LR_CONSTANT ? "constant" : o->schedule == LR_LINEAR ? "linear" : "cosine"));
    json_add(j, "warmup", json_new_number((double)o->warmup));
    json_add(j, "weight_decay", fnum(o->weight_decay));
    json_add(j, "clip", fnum(o->clip));
    json_add(j, "beta", fnum(o->beta));
    json_add(j, "alpha", fnum(o->alpha));
    json_add(j, "gamma", fnum(o->gamma));
    json_add(j, "delta", fnum(o->delta));
    json_add(j, "rmu_layer", json_new_number(o->rmu_layer));
    json_add(j, "rmu_scale", fnum(o->rmu_scale));
    json_add(j, "variant", json_new_string(o->variant == UL_VARIANT_MLLMU ? "mllmu" : "ou"));
    json_add(j, "kl_mask", json_new_string(o->kl_mask == UL_KL_ANSWER ? "answer" : "valid"));
    json_add(j, "fixed_render", json_new_bool(o->fixed_render));
    json_add(j, "augment", json_new_bool(o->augment));
    json_add(j, "seed", json_new_number((double)o->seed));
    json_add(j, "ref_policy", json_new_string(o->ref_policy ? o->ref_policy : "previous"));
    if (o->exposure > 0.0) json_add(j, "exposure", json_new_number(o->exposure));  /* only when set: older cells keep their hash */
    return j;
}

static uint64_t opts_hash(uint64_t h, const UnlearnOpts *o) {
    /* the JSON form holds every option that changes the result, people aside */
    Json *j = opts_json(o);
    char *s = json_dump(j, 0);
    h = h_str(h, s);
    free(s);
    json_free(j);
    h = h_ints(h, o->forget, o->n_forget);
    return h_ints(h, o->retain, o->n_retain);
}

/* A method's documented defaults for a setting, with the setting's people, the run's seed,
 * and adapters merged after the operation (the next step or cell starts from weights). */
static UnlearnOpts cell_opts(const Ctx *c, const char *method, UlSetting setting, UlParams params) {
    UlMethod m = (UlMethod)unlearn_method_parse(method);
    UnlearnOpts o = unlearn_opts_default(m, setting);
    o.lr = run_lr(c, m);
    o.params = params;
    o.seed = c->seed;
    o.quiet = 1;
    o.merge = 1;
    if (setting == UL_PRETRAINED) {
        o.forget = c->cforget; o.n_forget = c->n_cforget; o.retain = c->cretain; o.n_retain = c->n_cretain;
    } else {
        o.forget = c->forget10; o.n_forget = c->n_forget10; o.retain = c->retain90; o.n_retain = c->n_retain90;
    }
    return o;
}

/* Writes unlearn.json and the marker of a finished unlearning cell. */
static void cell_finish(const Ctx *c, const char *dir, Json *j, const UnlearnResult *r, double su, double se, uint64_t h) {
    json_add(j, "status", json_new_string(r->status == UL_OK ? "ok" : "diverged"));
    json_add(j, "message", json_new_string(r->message));
    json_add(j, "steps", json_new_number((double)r->steps));
    json_add(j, "steps_planned", json_new_number((double)r->steps_planned));
    json_add(j, "epochs", json_new_number(round(r->epochs * 1000) / 1000));   /* effective (opts: 0 = auto) */
    json_add(j, "seconds_unlearn", secs(su));
    json_add(j, "seconds_eval", secs(se));
    make_dirs(dir);
    if (r->json) {
        char *up = xasprintf("%s/unlearn.json", dir);
        json_save(up, r->json);
        free(up);
    }
    char *mp = xasprintf("%s/cell.json", dir);
    marker_save(mp, j, h);
    free(mp);
    (void)c;
}

/* One unlearning operation from `base` (hash h_base) and its evaluation. */
static void cell_unlearn(Ctx *c, const char *id, const char *setting, Model *base, const char *base_rel, uint64_t h_base,
                         UnlearnOpts *uo, const EvalSpec *e) {
    if (list_has(&c->seen, id) || pool_skip(c, id)) return;
    list_add(&c->seen, id);
    /* ready: the base model, and the oracle's results if the evaluation compares with them */
    int ready = base && (!e->oracle_path || e->oracle);
    if (c->pool && !ready) { pool_take(c, id, 0, 0); return; }
    CHECK(ready);
    char *rel = xasprintf("cells/%s", id), *dir = run_path(c, rel);
    uint64_t h = spec_hash(opts_hash(h_str(h_base, "unlearn"), uo), e, c);
    int done = cell_done(c, rel, h);
    if (c->pool && !pool_take(c, id, 1, done)) {
        free(rel); free(dir);
        return;
    }
    if (done) {
        Json *res = NULL;
        char *rp = xasprintf("%s/results.json", dir);
        if (file_exists(rp)) res = json_load(rp);
        free(rp);
        progress_line(c, id, "done", res);
        json_free(res);
        free(rel); free(dir);
        return;
    }
    /* a fresh copy of the base model: cells never see each other's changes */
    model_copy_weights(c->work, base);
    UnlearnResult r;
    double t0 = now_seconds();
    unlearn_run(c->w, c->tok, c->work, NULL, uo, &r);
    double su = now_seconds() - t0, se = 0;
    Json *res = NULL;
    /* a diverged operation left the model as it was: evaluating it would report the
     * base model under the method's name, so it is recorded without results */
    if (r.status == UL_OK) res = run_eval(c, c->work, e, dir, base_rel, &se);
    Json *j = cell_json(id, "unlearn", setting, unlearn_method_name(uo->method), unlearn_params_name(uo->params), -1);
    json_add(j, "opts", opts_json(uo));
    json_add(j, "forget_people", people_ids(c->w, uo->forget, uo->n_forget));
    json_add(j, "model", json_new_string(base_rel));
    cell_finish(c, dir, j, &r, su, se, h);
    char what[400];
    if (r.status == UL_OK) snprintf(what, sizeof what, "unlearn %5.1f s (%ld steps)  eval %5.1f s", su, r.steps, se);
    else snprintf(what, sizeof what, "DIVERGED after %.1f s: %s", su, r.message);
    progress_line(c, id, what, res);
    json_free(res);
    unlearn_result_free(&r);
    free(rel); free(dir);
}

/* ============================================================================
 * The sequential setting: forget_10's groups one after another */

typedef struct SeqStep {
    int *group, n_group;        /* this step's people */
    int *cum, n_cum;            /* every group so far */
    uint64_t h_model;           /* hash of the model after this step */
    uint64_t h_cell;            /* hash of the step's cell (model + evaluations) */
} SeqStep;

/* Step options: the finetuned defaults with this group as the forget set, retain_90 kept.
 * The step's length (--seq-budget): "group", the per-person budget of its own people (the
 * chain makes as many steps as the batch operation in all); "batch", the whole batch
 * operation's (each of its people presented forget_10 / group times as often). */
static void seq_opts(const Ctx *c, const char *method, const SeqStep *s, UnlearnOpts *o) {
    *o = cell_opts(c, method, UL_FINETUNED, UL_PARAMS_LLM);
    o->forget = s->group; o->n_forget = s->n_group;
    o->ref_policy = c->ref_policy;
    if (strcmp(c->seq_budget, "batch") == 0) o->exposure = (double)UL_EXPOSURE * c->n_forget10 / s->n_group;
}

/* The two light evaluations of a step (every group so far with retain and genbench; this
 * group alone) and the step cell's hash. */
static uint64_t seq_specs(const Ctx *c, const SeqStep *s, EvalSpec *cum, EvalSpec *cur) {
    *cum = spec_for(c, "finetuned", 1);
    *cur = spec_for(c, "finetuned", 1);
    cum->sets &= ~EVAL_SET_BIT(EVAL_SET_CELEBRITY);
    cum->forget = s->cum; cum->n_forget = s->n_cum;
    cur->sets = EVAL_SET_BIT(EVAL_SET_FORGET);
    cur->forget = s->group; cur->n_forget = s->n_group;
    return spec_hash(spec_hash(s->h_model, cum, c), cur, c);
}

/* One method's chain of n_seq steps. Step k's model hash chains every earlier step's
 * options, so changing step 1 redoes the whole chain; a finished step is skipped; the
 * scratch model is brought to step k-1 from memory, the saved weights, or by replaying.
 * In the pool the chain is one unit. */
static void run_sequential(Ctx *c, const char *method) {
    char unit[96];
    snprintf(unit, sizeof unit, "sequential-%s", method);
    if (pool_skip(c, unit)) return;
    if (c->pool && !c->ft) { pool_take(c, unit, 0, 0); return; }
    int S = c->preset->n_seq;
    SeqStep *st = xcalloc((size_t)S + 1, sizeof *st);
    int *cum = xmalloc(((size_t)c->n_forget10 + 1) * sizeof *cum), ncum = 0;
    uint64_t h = h_str(h_str(c->h_ft, "sequential"), c->ref_policy);
    for (int k = 1; k <= S; k++) {
        char name[32];
        snprintf(name, sizeof name, "seq_%d", k);
        SeqStep *s = &st[k];
        s->group = split_people(c->w, name, &s->n_group);
        for (int i = 0; i < s->n_group; i++) cum[ncum++] = s->group[i];
        s->cum = xmalloc(((size_t)ncum + 1) * sizeof *s->cum);
        memcpy(s->cum, cum, (size_t)ncum * sizeof *cum);
        s->n_cum = ncum;
        /* the model after step k: everything up to k, chained */
        UnlearnOpts o;
        seq_opts(c, method, s, &o);
        h = opts_hash(h_int(h, k), &o);
        s->h_model = h;
    }
    char *base = xasprintf("cells/%s", unit), *bdir = run_path(c, base);
    char *wpath = xasprintf("%s/model.safetensors", bdir), *wmark = xasprintf("%s/model.json", bdir);
    int at = -1;                /* the step c->work holds, -1: unknown */
    int todo = S;               /* steps this process walks (0: the chain is not ours) */
    if (c->pool) {
        /* the chain is one unit: done when every step is */
        int done = 1;
        for (int k = 1; k <= S && done; k++) {
            EvalSpec cumspec, curspec;
            char rel[160];
            snprintf(rel, sizeof rel, "%s/step%d", base, k);
            done = cell_done(c, rel, seq_specs(c, &st[k], &cumspec, &curspec));
        }
        if (!pool_take(c, unit, 1, done)) todo = 0;
    }
    Model *ref = todo && strcmp(c->ref_policy, "original") == 0 ? c->ft->model : NULL;
    for (int k = 1; k <= todo; k++) {
        SeqStep *s = &st[k];
        char id[96], rel[160], crel[176];
        snprintf(id, sizeof id, "sequential-%s-step%d", method, k);
        snprintf(rel, sizeof rel, "%s/step%d", base, k);
        snprintf(crel, sizeof crel, "%s/current", rel);
        EvalSpec cumspec, curspec;
        uint64_t hc = seq_specs(c, s, &cumspec, &curspec);
        if (cell_done(c, rel, hc)) {
            char *rp = xasprintf("%s/%s/results.json", c->out, rel);
            Json *res = json_load(rp);
            free(rp);
            progress_line(c, id, "done", res);
            json_free(res);
            continue;
        }
        /* bring c->work to the model after step k-1 */
        if (at != k - 1) {
            Json *wm = k > 1 ? marker_load(wmark, st[k - 1].h_model) : NULL;
            if (k == 1) {
                model_copy_weights(c->work, c->ft->model);
            } else if (wm && file_exists(wpath)) {
                model_load_weights(c->work, wpath);
                say(c, "%s: resuming after step %d (saved weights)", base, k - 1);
            } else {
                say(c, "%s: replaying steps 1-%d (no saved weights)", base, k - 1);
                model_copy_weights(c->work, c->ft->model);
                for (int j = 1; j < k; j++) {
                    UnlearnOpts o;
                    seq_opts(c, method, &st[j], &o);
                    UnlearnResult r;
                    unlearn_run(c->w, c->tok, c->work, ref, &o, &r);
                    unlearn_result_free(&r);
                }
            }
            json_free(wm);
        }
        UnlearnOpts o;
        seq_opts(c, method, s, &o);
        UnlearnResult r;
        double t0 = now_seconds();
        unlearn_run(c->w, c->tok, c->work, ref, &o, &r);
        double su = now_seconds() - t0, se = 0, se2 = 0;
        at = k;
        char *dir = run_path(c, rel), *cdir = run_path(c, crel);
        Json *res = NULL;
        if (r.status == UL_OK) {
            res = run_eval(c, c->work, &cumspec, dir, "base_ft", &se);
            Json *res2 = run_eval(c, c->work, &curspec, cdir, "base_ft", &se2);
            json_free(res2);
        }
        /* the weights after this step, for a resume of the chain (before the step's marker) */
        make_dirs(bdir);
        model_save_weights(wpath, c->work);
        Json *wm = json_new_object();
        json_add(wm, "step", json_new_number(k));
        marker_save(wmark, wm, s->h_model);
        Json *j = cell_json(id, "step", "sequential", method, "llm", k);
        json_add(j, "opts", opts_json(&o));
        json_add(j, "forget_people", people_ids(c->w, s->group, s->n_group));
        json_add(j, "forgotten_so_far", people_ids(c->w, s->cum, s->n_cum));
        json_add(j, "model", json_new_string("base_ft"));
        cell_finish(c, dir, j, &r, su, se + se2, hc);
        char what[400];
        if (r.status == UL_OK) snprintf(what, sizeof what, "unlearn %5.1f s (%ld steps)  eval %5.1f s", su, r.steps, se + se2);
        else snprintf(what, sizeof what, "DIVERGED after %.1f s: %s", su, r.message);
        progress_line(c, id, what, res);
        json_free(res);
        unlearn_result_free(&r);
        free(dir); free(cdir);
    }
    for (int k = 1; k <= S; k++) { free(st[k].group); free(st[k].cum); }
    free(st); free(cum); free(base); free(bdir); free(wpath); free(wmark);
}

/* ============================================================================
 * The plan (run.json) */

/* One run.json plan entry; ids are unique (the params ablation's llm cells are the main ones). */
static void plan_add(Ctx *c, const char *id, const char *kind, const char *setting, const char *method, const char *params,
                     int step, const char *dir, const char *current) {
    for (size_t i = 0; i < c->plan->len; i++)
        if (strcmp(json_get_string(c->plan->items[i], "id", "", NULL), id) == 0) return;
    Json *o = json_new_object();
    json_add(o, "id", json_new_string(id));
    json_add(o, "kind", json_new_string(kind));
    json_add(o, "setting", json_new_string(setting));
    json_add(o, "method", json_new_string(method));
    json_add(o, "params", json_new_string(params));
    json_add(o, "step", json_new_number(step));
    json_add(o, "dir", json_new_string(dir));
    if (current) json_add(o, "current_dir", json_new_string(current));
    json_push(c->plan, o);
}

/* Which settings are asked for, and which base-model evaluations and oracles they need. */
static int want(const Ctx *c, const char *s) { return list_has(&c->settings, s); }
static int need_ft(const Ctx *c) { return want(c, "finetuned") || want(c, "sequential") || want(c, "params"); }
static int need_pt(const Ctx *c) { return want(c, "pretrained") || want(c, "params") || want(c, "forgetdata"); }

/* The plan in execution order: reference rows, main cells, sequential steps, ablations. */
static void build_plan(Ctx *c) {
    c->plan = json_new_array();
    char id[96], dir[160], cur[200];
    if (need_ft(c)) {
        plan_add(c, "finetuned-oracle", "oracle", "finetuned", "oracle", "llm", -1, "cells/finetuned-oracle", NULL);
        plan_add(c, "finetuned-before", "before", "finetuned", "before", "llm", -1, "cells/finetuned-before", NULL);
    }
    if (need_pt(c)) {
        plan_add(c, "pretrained-oracle", "oracle", "pretrained", "oracle", "llm", -1, "cells/pretrained-oracle", NULL);
        plan_add(c, "pretrained-before", "before", "pretrained", "before", "llm", -1, "cells/pretrained-before", NULL);
    }
    static const char *const sets2[2] = {"finetuned", "pretrained"};
    for (int s = 0; s < 2; s++)
        if (want(c, sets2[s]))
            for (int i = 0; i < c->methods.n; i++) {
                snprintf(id, sizeof id, "%s-%s", sets2[s], c->methods.item[i]);
                snprintf(dir, sizeof dir, "cells/%s", id);
                plan_add(c, id, "unlearn", sets2[s], c->methods.item[i], "llm", -1, dir, NULL);
            }
    if (want(c, "sequential"))
        for (int i = 0; i < c->seq_methods.n; i++)
            for (int k = 1; k <= c->preset->n_seq; k++) {
                snprintf(id, sizeof id, "sequential-%s-step%d", c->seq_methods.item[i], k);
                snprintf(dir, sizeof dir, "cells/sequential-%s/step%d", c->seq_methods.item[i], k);
                snprintf(cur, sizeof cur, "%s/current", dir);
                plan_add(c, id, "step", "sequential", c->seq_methods.item[i], "llm", k, dir, cur);
            }
    if (want(c, "params"))
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < c->params_methods.n; i++)
                for (int p = 0; p < 2; p++) {
                    snprintf(id, sizeof id, "%s-%s%s", sets2[s], c->params_methods.item[i], p ? "-projllm" : "");
                    snprintf(dir, sizeof dir, "cells/%s", id);
                    plan_add(c, id, "unlearn", sets2[s], c->params_methods.item[i], p ? "proj+llm" : "llm", -1, dir, NULL);
                }
    if (want(c, "forgetdata"))
        for (int i = 0; i < c->params_methods.n; i++)
            for (int p = 0; p < 2; p++) {
                snprintf(id, sizeof id, "pretrained-%s%s", c->params_methods.item[i], p ? "-alldata" : "");
                snprintf(dir, sizeof dir, "cells/%s", id);
                plan_add(c, id, "unlearn", "pretrained", c->params_methods.item[i], "llm", -1, dir, NULL);
            }
    c->cell_n = (int)c->plan->len;
}

/* A List as a JSON array of strings. */
static Json *list_json(const List *l) {
    Json *a = json_new_array();
    for (int i = 0; i < l->n; i++) json_push(a, json_new_string(l->item[i]));
    return a;
}

/* run.json: provenance and the plan; deterministic, so rewriting it on a resume changes
 * no byte. The reproducing command spells every option out. */
static void write_run_json(Ctx *c) {
    Json *j = json_new_object();
    char fp[17];
    hex16(fp, c->w->fingerprint);
    json_add(j, "format", json_new_string("pulse-run/1"));
    json_add(j, "preset", json_new_string(c->preset->name));
    json_add(j, "seed", json_new_number((double)c->seed));
    json_add(j, "world_fingerprint", json_new_string(fp));
    json_add(j, "protocol_version", json_new_number(PROTOCOL_VERSION));
#if defined(__clang__)
    json_add(j, "compiler", json_new_string("clang " __clang_version__));
#elif defined(__GNUC__)
    json_add(j, "compiler", json_new_string("gcc " __VERSION__));
#endif
#ifdef PULSE_NO_SIMD
    json_add(j, "simd", json_new_bool(0));
#else
    json_add(j, "simd", json_new_bool(1));
#endif
#ifdef _OPENMP
    json_add(j, "openmp", json_new_bool(1));
#else
    json_add(j, "openmp", json_new_bool(0));
#endif
    json_add(j, "settings", list_json(&c->settings));
    json_add(j, "methods", list_json(&c->methods));
    json_add(j, "seq_methods", list_json(&c->seq_methods));
    json_add(j, "params_methods", list_json(&c->params_methods));
    json_add(j, "ref_policy", json_new_string(c->ref_policy));
    json_add(j, "seq_budget", json_new_string(c->seq_budget));
    Json *lr = json_new_object();       /* every method's rate in this run, defaults included */
    for (int m = 0; m < UL_N_METHODS; m++) json_add(lr, unlearn_method_name((UlMethod)m), fnum(run_lr(c, (UlMethod)m)));
    json_add(j, "unlearn_lr", lr);
    TrainOpts pto = stage_opts(c, STAGE_PT, NULL);  /* the pre-training recipe's fields the run can set */
    Recipe pr = train_recipe_for(&pto, c->preset->name);
    Json *ptj = json_new_object();
    json_add(ptj, "vision_lr", fnum(pr.vision_lr));
    json_add(ptj, "vision_warmup", json_new_number((double)pr.vision_warmup));
    json_add(ptj, "mc_warmup", json_new_number((double)pr.mc_warmup));
    json_add(ptj, "scene_warmup", json_new_number((double)pr.scene_warmup));
    json_add(ptj, "mixed_warmup", json_new_number((double)pr.mixed_warmup));
    json_add(ptj, "general_repeat", json_new_number((double)pr.general_repeat));
    json_add(ptj, "vision_quadrant", json_new_number((double)pr.vision_quadrant));
    json_add(ptj, "vision_shape", json_new_number((double)pr.vision_shape));
    json_add(ptj, "warm_restart", json_new_number((double)pr.warm_restart));
    json_add(ptj, "epochs", json_new_number(pr.epochs));
    json_add(j, "pretrain_recipe", ptj);
    TrainOpts fto = stage_opts(c, STAGE_FT, "base_pt");
    Json *ftj = json_new_object();
    Recipe fr = train_recipe_for(&fto, c->preset->name);
    json_add(ftj, "general_repeat", json_new_number((double)fr.general_repeat));
    json_add(ftj, "epochs", json_new_number(fr.epochs));
    json_add(j, "finetune_recipe", ftj);
    Json *sz = json_new_object();
    const Preset *p = c->preset;
    json_add(sz, "n_fictitious", json_new_number(p->n_fictitious));
    json_add(sz, "n_celebrity", json_new_number(p->n_celebrity));
    json_add(sz, "celeb_keep", json_new_number(p->celeb_keep));
    json_add(sz, "celeb_forget", json_new_number(p->celeb_forget));
    json_add(sz, "n_holdout", json_new_number(p->n_holdout));
    json_add(sz, "forget_10", json_new_number(c->n_forget10));
    json_add(sz, "retain_90", json_new_number(c->n_retain90));
    json_add(sz, "n_seq", json_new_number(p->n_seq));
    json_add(j, "sizes", sz);
    /* the command that reproduces this run */
    Text cmd = {0};
    text_printf(&cmd, "pulse run --preset %s --seed %llu --out %s", p->name, (unsigned long long)c->seed, c->out);
    const List *ls[4] = {&c->settings, &c->methods, &c->seq_methods, &c->params_methods};
    const char *fl[4] = {"settings", "methods", "seq-methods", "params-methods"};
    for (int k = 0; k < 4; k++) {
        text_printf(&cmd, " --%s ", fl[k]);
        for (int i = 0; i < ls[k]->n; i++) text_printf(&cmd, "%s%s", i ? "," : "", ls[k]->item[i]);
    }
    text_printf(&cmd, " --ref-policy %s", c->ref_policy);
    if (strcmp(c->seq_budget, "group") != 0) text_printf(&cmd, " --seq-budget %s", c->seq_budget);
    if (c->lr_spec) text_printf(&cmd, " --unlearn-lr %s", c->lr_spec);
    const TrainOpts *po = &c->pt_over;
    if (po->vision_lr >= 0) text_printf(&cmd, " --vision-lr %g", po->vision_lr);
    const long pw[4] = {po->vision_warmup, po->mc_warmup, po->scene_warmup, po->mixed_warmup};
    const char *pwn[4] = {"vision-warmup", "mc-warmup", "scene-warmup", "mixed-warmup"};
    for (int k = 0; k < 4; k++)
        if (pw[k] >= 0) text_printf(&cmd, " --%s %ld", pwn[k], pw[k]);
    if (po->general_repeat > 0) text_printf(&cmd, " --general-repeat %d", po->general_repeat);
    if (po->vision_quadrant >= 0) text_printf(&cmd, " --vision-quadrant %d", po->vision_quadrant);
    if (po->vision_shape >= 0) text_printf(&cmd, " --vision-shape %d", po->vision_shape);
    if (po->warm_restart >= 0) text_printf(&cmd, " --warm-restart %ld", po->warm_restart);
    if (po->epochs > 0) text_printf(&cmd, " --pt-epochs %g", po->epochs);
    if (c->ft_general_repeat > 0) text_printf(&cmd, " --ft-general-repeat %d", c->ft_general_repeat);
    if (c->ft_epochs > 0) text_printf(&cmd, " --ft-epochs %g", c->ft_epochs);
    json_add(j, "command", json_new_string(text_str(&cmd)));
    text_free(&cmd);
    json_add(j, "cells", c->plan);
    char *path = run_path(c, "run.json");
    json_save(path, j);
    free(path);
    c->plan = NULL;             /* owned by j now */
    json_free(j);
}

/* ============================================================================
 * pulse run */

/* `pulse run --help`. */
static void usage(FILE *f) {
    fprintf(f,
        "usage: pulse run [--preset tiny|small|paper] [--seed S] [--out RUN_DIR] [options]\n\n"
        "Runs the whole PULSE protocol and writes RUN_DIR/report.md (default: --preset small\n"
        "--out runs/<preset>). Resumable: rerunning the same command skips every stage whose\n"
        "output exists with the same inputs; a changed option redoes what it affects.\n\n"
        "options:\n"
        "  --preset P            world and recipe size: tiny (tests), small (default), paper\n"
        "  --seed S              world, training, unlearning and evaluation seed (default 1)\n"
        "  --out DIR             run directory (default runs/<preset>)\n"
        "  --methods LIST        unlearning methods (default all: ga,gd,ga_klr,npo,npo_rt,simnpo,idkpo,rmu)\n"
        "  --settings LIST       finetuned,pretrained,sequential,params (default), forgetdata, all\n"
        "  --seq-methods LIST    methods of the sequential setting (default ga,ga_klr,npo: the paper's)\n"
        "  --params-methods LIST methods of the params and forgetdata ablations (default ga,ga_klr,npo)\n"
        "  --ref-policy P        sequential reference model: previous (the model before each step,\n"
        "                        default) or original (base_ft)\n"
        "  --seq-budget B        a sequential step's length: group (default: its own people's\n"
        "                        per-person budget; the chain makes as many steps as the batch\n"
        "                        operation) or batch (each step as many as the batch operation)\n"
        "  --unlearn-lr SPEC     unlearning learning rates instead of the methods' defaults\n"
        "                        (docs/methods.md), in every setting: METHOD=RATE items and at\n"
        "                        most one xF, every other method's default times F; e.g.\n"
        "                        ga=3e-3,npo=3e-3 or x1.5 or rmu=1e-2,x1.5\n"
        "  --vision-lr X, --vision-warmup N, --mc-warmup N, --scene-warmup N, --mixed-warmup N,\n"
        "  --vision-quadrant 0|1, --vision-shape 0|1, --warm-restart N,\n"
        "  --general-repeat K, --pt-epochs E\n"
        "                        pre-training recipe overrides (base_pt and oracle_pt), as\n"
        "                        pulse pretrain's flags (--pt-epochs: its --epochs, the main\n"
        "                        loop's length; docs/training.md)\n"
        "  --ft-general-repeat K, --ft-epochs E\n"
        "                        the fine-tuning recipe's general_repeat and epochs (base_ft and\n"
        "                        oracle_ft), as pulse finetune's --general-repeat and --epochs;\n"
        "                        e.g. the general items once in both: --general-repeat 1\n"
        "                        --ft-general-repeat 1\n"
        "  --jobs N              threads for the kernels (default 0: OpenMP's own; results do not\n"
        "                        depend on it)\n"
        "  --procs N             processes for everything after pre-training, one kernel thread\n"
        "                        each (default: the CPUs, at most 8; results do not depend on it)\n"
        "  --raw DIR             raw material of the world (default: data/ next to the binary, else ./data)\n"
        "  --quiet               no progress lines\n"
        "Stages and files: docs/protocol.md; how to read the report: docs/report.md.\n");
}

/* Processes for the cells by default: the online CPUs, at most 8. */
static int default_procs(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

/* Starts np - 1 copies of this command (`pulse run ARGS --cell-part K/np --jobs 1
 * --quiet`, K = 1..np-1), each a fresh process (exec, so that OpenMP starts clean). The
 * copies find pre-training and the celebrities done and join the pool. Returns their
 * pids (0 where the start failed: the others then do its share). */
static pid_t *spawn_parts(const Ctx *c, int argc, char **argv, int np) {
    pid_t *kids = xcalloc((size_t)np, sizeof *kids);
    char **av = xcalloc((size_t)argc + 10, sizeof *av);
    char part[32];
    int n = 0;
    av[n++] = "pulse";
    av[n++] = "run";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--quiet") == 0) continue;
        if (strcmp(argv[i], "--jobs") == 0 || strcmp(argv[i], "--procs") == 0) { i++; continue; }
        av[n++] = argv[i];
    }
    av[n++] = "--jobs"; av[n++] = "1"; av[n++] = "--quiet"; av[n++] = "--cell-part"; av[n++] = part;
    av[n] = NULL;
    fflush(NULL);
    for (int k = 1; k < np; k++) {
        snprintf(part, sizeof part, "%d/%d", k, np);
        pid_t pid = fork();
        if (pid == 0) {
            execv("/proc/self/exe", av);
            _exit(127);
        }
        kids[k] = pid > 0 ? pid : 0;
        if (pid < 0) say(c, "pool: could not start process %d (%s); the others do its share", k, strerror(errno));
    }
    free(av);
    return kids;
}

/* Reaps the copies that have finished (block: waits for all of them) and returns how
 * many still run. A copy that failed gives its claims back, so that its unfinished units
 * go to the others (or to the driver's serial pass). */
static int reap_parts(const Ctx *c, pid_t *kids, int np, int block) {
    int running = 0;
    for (int k = 1; k < np; k++) {
        if (kids[k] <= 0) continue;
        int st = 0;
        pid_t r;
        while ((r = waitpid(kids[k], &st, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {}
        if (r == 0) { running++; continue; }
        if (r < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            say(c, "pool: process %d/%d stopped (%s %d); its unfinished units run elsewhere", k, np,
                r >= 0 && WIFEXITED(st) ? "exit status" : "signal", r >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            claims_release(c, kids[k]);
        }
        kids[k] = 0;
    }
    return running;
}

/* The oracle and before-unlearning evaluations of the chosen settings, each setting's
 * oracle first: its results feed forget quality and PrivLeak of every later cell. */
static void reference_cells(Ctx *c) {
    for (int s = 0; s < 2; s++) {
        if (s ? !need_pt(c) : !need_ft(c)) continue;
        const char *setting = s ? "pretrained" : "finetuned", *oname = s ? "oracle_pt" : "oracle_ft";
        char oid[48], bid[48], orel[64];
        snprintf(oid, sizeof oid, "%s-oracle", setting);
        snprintf(bid, sizeof bid, "%s-before", setting);
        snprintf(orel, sizeof orel, "cells/%s", oid);
        Json **oracle = s ? &c->oracle_pt : &c->oracle_ft;
        EvalSpec e = spec_for(c, setting, 0);
        e.oracle = NULL;                /* the oracle is evaluated without an oracle */
        Json *r = cell_plain(c, oid, "oracle", setting, NULL, oname, s ? c->h_opt : c->h_oft, &e,
                             s ? &c->h_opt_eval : &c->h_oft_eval, unit_done(c, oname));
        if (r && !*oracle) *oracle = r;
        else json_free(r);
        if (!*oracle && c->pool && list_has(&c->pool_done, oid)) *oracle = load_results(c, orel);
        /* the before row is compared with the oracle */
        Model *m = s ? c->pt->model : c->ft ? c->ft->model : NULL;
        e = spec_for(c, setting, 0);
        json_free(cell_plain(c, bid, "before", setting, m, s ? "base_pt" : "base_ft", s ? c->h_pt : c->h_ft, &e, NULL,
                             m && *oracle));
    }
}

/* The unlearning cells of the chosen settings, in a fixed order: the main cells, the
 * sequential chains, the ablations (in the pool the chains come first: they are the
 * longest units, so the processes finish together). */
static void run_cells(Ctx *c) {
    static const char *const sets2[2] = {"finetuned", "pretrained"};
    Model *ft = c->ft ? c->ft->model : NULL;   /* in the pool, NULL until base_ft is trained */
    if (c->pool && want(c, "sequential"))
        for (int i = 0; i < c->seq_methods.n; i++) run_sequential(c, c->seq_methods.item[i]);
    for (int s = 0; s < 2; s++) {
        if (!want(c, sets2[s])) continue;
        UlSetting us = s ? UL_PRETRAINED : UL_FINETUNED;
        for (int i = 0; i < c->methods.n; i++) {
            char id[96];
            snprintf(id, sizeof id, "%s-%s", sets2[s], c->methods.item[i]);
            UnlearnOpts o = cell_opts(c, c->methods.item[i], us, UL_PARAMS_LLM);
            EvalSpec e = spec_for(c, sets2[s], 0);
            cell_unlearn(c, id, sets2[s], s ? c->pt->model : ft, s ? "base_pt" : "base_ft", s ? c->h_pt : c->h_ft, &o, &e);
        }
    }
    /* the sequential chains, then the ablations (their llm cells are the main cells) */
    if (!c->pool && want(c, "sequential"))
        for (int i = 0; i < c->seq_methods.n; i++) run_sequential(c, c->seq_methods.item[i]);
    if (want(c, "params"))
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < c->params_methods.n; i++)
                for (int p = 0; p < 2; p++) {
                    char id[96];
                    snprintf(id, sizeof id, "%s-%s%s", sets2[s], c->params_methods.item[i], p ? "-projllm" : "");
                    /* p = 0: the main cell (already done if its setting ran), p = 1: projector + LLM */
                    UnlearnOpts o = cell_opts(c, c->params_methods.item[i], s ? UL_PRETRAINED : UL_FINETUNED,
                                              p ? UL_PARAMS_PROJ_LLM : UL_PARAMS_LLM);
                    /* the LLM-only cell is the setting's main cell (full evaluation) */
                    EvalSpec e = spec_for(c, sets2[s], p);
                    cell_unlearn(c, id, sets2[s], s ? c->pt->model : ft, s ? "base_pt" : "base_ft",
                                 s ? c->h_pt : c->h_ft, &o, &e);
                }
    if (want(c, "forgetdata"))
        for (int i = 0; i < c->params_methods.n; i++)
            for (int p = 0; p < 2; p++) {
                char id[96];
                snprintf(id, sizeof id, "pretrained-%s%s", c->params_methods.item[i], p ? "-alldata" : "");
                UnlearnOpts o = cell_opts(c, c->params_methods.item[i], UL_PRETRAINED, UL_PARAMS_LLM);
                /* p = 1: every pre-training item about the forget celebrities, not only QA */
                if (p) o.forget_data = UL_FD_ALL;
                EvalSpec e = spec_for(c, "pretrained", p);
                cell_unlearn(c, id, "pretrained", c->pt->model, "base_pt", c->h_pt, &o, &e);
            }
}

/* One walk of the pool over every unit after pre-training, in priority order: the
 * trainings, the reference evaluations and the gates, then the cells. */
static void pool_pass(Ctx *c) {
    c->pool_left = c->pool_avail = c->pool_ran = 0;
    list_free(&c->seen);
    /* oracle_pt first: pre-training from scratch is the longest unit by far (1,446 s of a
     * 2,822 s run when it came third, the other process idle for its last 1,091 s) */
    if (need_pt(c))
        c->h_opt = stage_train(c, "oracle_pt", STAGE_PT, NULL, c->h_celebs, c->cforget, c->n_cforget);
    if (!c->stopped) c->h_ft = stage_train(c, "base_ft", STAGE_FT, "base_pt", c->h_pt, NULL, 0);
    if (need_ft(c) && !c->stopped)
        c->h_oft = stage_train(c, "oracle_ft", STAGE_FT, "base_pt", c->h_pt, c->forget10, c->n_forget10);
    if (c->stopped) return;
    if (!c->ft && list_has(&c->pool_done, "base_ft")) c->ft = load_ckpt(c, "base_ft");
    reference_cells(c);
    stage_gates(c);
    run_cells(c);
}

/* Walks the pool until every unit not done is claimed (kids: NULL in a copy). */
static void pool_run(Ctx *c, pid_t *kids, int np) {
    c->pool = 1;
    for (;;) {
        pool_pass(c);
        if (!c->pool_ran) pool_idle(c, 1);
        if (c->stopped || !c->pool_avail) break;
        if (c->member && getppid() != c->driver) break;            /* the driver is gone */
        /* the driver alone and nothing ready: the serial pass computes the rest */
        if (!c->member && !reap_parts(c, kids, np, 0) && !c->pool_ran) break;
        if (!c->pool_ran) nanosleep(&(struct timespec){0, 100000000L}, NULL);
    }
    pool_idle(c, 1);            /* leaving: nothing more to compute */
    c->pool = 0;
    list_free(&c->seen);
}

int cmd_run(int argc, char **argv) {
    Args a;
    args_init(&a, "run", argc, argv);
    if (args_help(&a)) { usage(stdout); args_free(&a); return 0; }
    Ctx c;
    memset(&c, 0, sizeof c);
    c.t_start = now_seconds();
    const char *preset = args_str(&a, "preset", "small");
    c.seed = (uint64_t)args_long(&a, "seed", 1, 0, SEED_MAX);
    const char *out = args_str(&a, "out", NULL);
    const char *methods = args_str(&a, "methods", "all");
    const char *settings = args_str(&a, "settings", "finetuned,pretrained,sequential,params");
    const char *seqm = args_str(&a, "seq-methods", "ga,ga_klr,npo");
    const char *pm = args_str(&a, "params-methods", "ga,ga_klr,npo");
    c.ref_policy = args_str(&a, "ref-policy", "previous");
    c.seq_budget = args_str(&a, "seq-budget", "group");
    const char *ulr = args_str(&a, "unlearn-lr", NULL);
    c.pt_over = train_opts_default(STAGE_PT);
    c.pt_over.vision_lr = args_double(&a, "vision-lr", -1, 0, 100);
    c.pt_over.vision_warmup = args_long(&a, "vision-warmup", -1, 0, 100000000L);
    c.pt_over.mc_warmup = args_long(&a, "mc-warmup", -1, 0, 100000000L);
    c.pt_over.scene_warmup = args_long(&a, "scene-warmup", -1, 0, 100000000L);
    c.pt_over.mixed_warmup = args_long(&a, "mixed-warmup", -1, 0, 100000000L);
    c.pt_over.general_repeat = (int)args_long(&a, "general-repeat", 0, 1, 100);
    c.pt_over.vision_quadrant = (int)args_long(&a, "vision-quadrant", -1, 0, 1);
    c.pt_over.vision_shape = (int)args_long(&a, "vision-shape", -1, 0, 1);
    c.pt_over.warm_restart = args_long(&a, "warm-restart", -1, 0, 100000000L);
    c.pt_over.epochs = args_double(&a, "pt-epochs", 0, 0.1, 1000);
    c.ft_general_repeat = (int)args_long(&a, "ft-general-repeat", 0, 1, 100);
    c.ft_epochs = args_double(&a, "ft-epochs", 0, 0.1, 1000);
    long jobs = args_long(&a, "jobs", 0, 0, 4096);
    long procs = args_long(&a, "procs", 0, 0, 64);
    const char *part = args_str(&a, "cell-part", NULL);     /* internal: see spawn_parts */
    const char *raw = args_str(&a, "raw", NULL);
    c.quiet = args_flag(&a, "quiet");
    args_done(&a);
    c.preset = preset_find(preset);
    if (!c.preset) die_input(NULL, "run: --preset: unknown preset '%s' (tiny, small, paper)", preset);
    if (part) {
        char tail = 0;
        if (sscanf(part, "%d/%d%c", &c.member, &c.nmembers, &tail) != 2 || c.nmembers < 2 || c.member < 1 ||
            c.member >= c.nmembers)
            die_input(NULL, "run: --cell-part must be K/N with 1 <= K < N (internal option)");
        die_input_silent();     /* bad input met here is met again, and said, by the driver */
    }
    if (strcmp(c.ref_policy, "previous") != 0 && strcmp(c.ref_policy, "original") != 0)
        die_input(NULL, "run: --ref-policy must be previous or original, not '%s'", c.ref_policy);
    if (strcmp(c.seq_budget, "group") != 0 && strcmp(c.seq_budget, "batch") != 0)
        die_input(NULL, "run: --seq-budget must be group or batch, not '%s'", c.seq_budget);
    parse_methods(&c.methods, methods, "methods");
    parse_settings(&c.settings, settings);
    parse_methods(&c.seq_methods, seqm, "seq-methods");
    parse_methods(&c.params_methods, pm, "params-methods");
    c.lr_scale = 1.0;
    if (ulr) parse_unlearn_lr(&c, ulr);
    char *out_default = xasprintf("runs/%s", c.preset->name), *raw_default = raw ? NULL : data_default_raw_dir();
    c.raw = raw ? raw : raw_default;
    c.out = out ? out : out_default;
#ifdef _OPENMP
    if (jobs > 0) omp_set_num_threads((int)jobs);
#else
    (void)jobs;
#endif
    out_dir_check(c.out, "state/");              /* a run's stages replace their directories */
    /* a run directory this command makes is removed again if it stops before the world
     * exists (bad raw material): no empty run is left behind */
    int fresh = !dir_exists(c.out);
    make_dirs(c.out);
    char *sd = run_path(&c, "state");
    make_dirs(sd);
    if (fresh) { tmpfile_register(sd); tmpfile_register(c.out); }
    say(&c, "%s preset, seed %llu, into %s", c.preset->name, (unsigned long long)c.seed, c.out);

    /* options are all validated above: nothing is written before a usage error */
    /* 0: the world */
    stage_data(&c);
    if (fresh) { tmpfile_unregister(sd); tmpfile_unregister(c.out); }
    free(sd);
    /* finetuned: forget_10 / retain_90 (MLLMU-Bench's 10% split) */
    c.forget10 = split_people(c.w, "forget_10", &c.n_forget10);
    c.retain90 = split_people(c.w, "retain_90", &c.n_retain90);

    /* 1: pre-training, then the celebrities base_pt knows (the oracle_pt excludes the
     * forget group) */
    int rc = 0;
    c.h_pt = stage_train(&c, "base_pt", STAGE_PT, NULL, c.h_data, NULL, 0);
    if (c.stopped) { rc = 3; goto done; }
    c.pt = load_ckpt(&c, "base_pt");            /* both base models stay in memory */
    stage_celebrities(&c);
    /* the scratch model every cell copies its base into (same shapes for both bases) */
    c.work = model_clone(c.pt->model);

    /* 2: everything after pre-training in the pool of --procs processes */
    if (c.member) {
        c.driver = getppid();
        pool_run(&c, NULL, 0);                  /* a --cell-part copy: its units, then it is done */
        if (c.stopped) rc = 3;
        goto done;
    }
    int np = procs > 0 ? (int)procs : default_procs();
    if (np > 1) {
        c.nmembers = np;                        /* the pool's size (pool_idle, pool_grow) */
        claims_release(&c, 0);                  /* a killed run's claims and idle marks */
        char *cd = run_path(&c, "state/claims");
        make_dirs(cd);
        free(cd);
        pid_t *kids = spawn_parts(&c, argc, argv, np);
        say(&c, "pool: %d processes, one kernel thread each: fine-tuning, oracles, evaluations, cells", np);
#ifdef _OPENMP
        int threads = omp_get_max_threads();
        omp_set_num_threads(1);
#endif
        pool_run(&c, kids, np);
        reap_parts(&c, kids, np, 1);
        free(kids);
        claims_release(&c, 0);
#ifdef _OPENMP
        omp_set_num_threads(threads);
#endif
        if (c.stopped) { rc = 3; goto done; }
    }

    /* 3: the serial pass: with --procs 1 it computes everything; after the pool it finds
     * every stage done, prints the progress lines and computes what a failed copy left */
    c.h_ft = stage_train(&c, "base_ft", STAGE_FT, "base_pt", c.h_pt, NULL, 0);
    if (c.stopped) { rc = 3; goto done; }
    if (!c.ft) c.ft = load_ckpt(&c, "base_ft");
    stage_gates(&c);
    /* the oracles */
    if (need_ft(&c)) c.h_oft = stage_train(&c, "oracle_ft", STAGE_FT, "base_pt", c.h_pt, c.forget10, c.n_forget10);
    if (need_pt(&c) && !c.stopped) c.h_opt = stage_train(&c, "oracle_pt", STAGE_PT, NULL, c.h_celebs, c.cforget, c.n_cforget);
    if (c.stopped) { rc = 3; goto done; }
    /* the plan is written before the cells, so `pulse report` works on a run in progress */
    build_plan(&c);
    write_run_json(&c);
    reference_cells(&c);
    run_cells(&c);

    /* 5: the report */
    report_write(c.out, c.quiet);
    say(&c, "done in %.1f s: %s/report.md", now_seconds() - c.t_start, c.out);

done:
    if (c.work) model_free(c.work);
    if (c.pt) ckpt_free(c.pt);
    if (c.ft) ckpt_free(c.ft);
    json_free(c.oracle_ft);
    json_free(c.oracle_pt);
    json_free(c.plan);
    if (c.tok) tok_free(c.tok);
    if (c.w) world_free(c.w);
    free(c.forget10); free(c.retain90); free(c.celebs); free(c.cforget); free(c.cretain); free(c.lr_spec);
    list_free(&c.methods); list_free(&c.settings); list_free(&c.seq_methods); list_free(&c.params_methods);
    list_free(&c.seen);
    list_free(&c.pool_done);
    free(out_default); free(raw_default);
    args_free(&a);
    return rc;
}
