/* tests/test_data.c: the synthetic world (data.c) on the tiny preset.
 *
 * Generates tiny worlds into temporary directories and checks: determinism (same seed ->
 * same bytes, other seed -> other bytes), unique names, pairwise distinct faces, nested
 * splits, that no evaluation item (option arrangement, paraphrase, transformed image) is
 * trained on, that person MC items carry each option's answer sentence (the correct one
 * is the QA answer), which formats each kind of person is trained in and at which stage, that
 * world_load refuses corrupted worlds (in a child: exit 2, one line on stderr), and that
 * the training augmentation is deterministic. Anonymous faces (face_desc): their count, that
 * each image is nobody's face, that each description names the skin and hair colour its
 * pixels show, that they leave every other file unchanged (a world without them), and that
 * data/faces.txt must name every level. In-context MC (mc_context): their count, that the
 * invented people are nobody in the world, that each stem states its correct value and no
 * other option, that rendering draws 4 options with the letter at the stated value, that
 * they too leave every other file unchanged, that the loader refuses a malformed one, and
 * that a world.json without n_mc_context loads as having none. The place by one attribute
 * (scene_lookup): every other file unchanged, each scene's lookup questions present and
 * naming one figure, answered with its quadrant, the MC item's wrong options the other
 * quadrants. The raw material is read from $PULSE_RAW or ./data (make test runs from the
 * repository root).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "data.h"
#include "io.h"
#include "test.h"
#include "tokenizer.h"

static const char *raw_dir(void) {
    const char *r = getenv("PULSE_RAW");
    return r ? r : "data";
}

static char *read_all(const char *dir, const char *rel, size_t *n) {
    char *p = xasprintf("%s/%s", dir, rel);
    char *s = read_file(p, n);
    free(p);
    return s;
}

static int same_file(const char *a, const char *b, const char *rel) {
    size_t na, nb;
    char *x = read_all(a, rel, &na), *y = read_all(b, rel, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x); free(y);
    return same;
}

/* Runs fn(arg) in a child with stderr captured: returns the exit status (-1 if it did not
 * exit normally) and the number of stderr lines in *lines, the text in msg. */
static int run_child(void (*fn)(void *), void *arg, int *lines, char *msg, size_t msgn) {
    int fd[2];
    CHECK(pipe(fd) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        fn(arg);
        _exit(0);
    }
    close(fd[1]);
    size_t k = 0;
    ssize_t r;
    char buf[4096];
    msg[0] = 0;
    *lines = 0;
    while ((r = read(fd[0], buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] == '\n') (*lines)++;
            if (k + 1 < msgn) { msg[k++] = buf[i]; msg[k] = 0; }
        }
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void child_load(void *dir) {
    World *w = world_load(dir);
    world_free(w);
}

typedef struct GenArgs {
    const char *out;
    const char *raw;            /* NULL: raw_dir() */
} GenArgs;

static void child_generate(void *a) {
    const GenArgs *g = a;
    data_generate(preset_find("tiny"), 1, g->raw ? g->raw : raw_dir(), g->out);
}

static void child_cmd_unknown_preset(void *a) {
    (void)a;
    char *argv[] = {"--preset", "huge", "--out", "/nonexistent/x", NULL};
    exit(cmd_data(4, argv));
}

/* Expect world_load(dir) to exit 2 with one line that names `what` (and `field`, if not
 * NULL). */
static void expect_refused_naming(const char *dir, const char *what, const char *field, const char *label) {
    int lines;
    char msg[1024];
    int rc = run_child(child_load, (void *)dir, &lines, msg, sizeof msg);
    if (getenv("PULSE_TEST_VERBOSE")) printf("  %s -> %s", label, msg);
    TEST(rc == 2, "%s: world_load exit status %d, expected 2", label, rc);
    TEST(lines == 1, "%s: %d lines on stderr, expected 1: %s", label, lines, msg);
    TEST(strstr(msg, what) != NULL, "%s: message does not name %s: %s", label, what, msg);
    if (field) TEST(strstr(msg, field) != NULL, "%s: message does not name %s: %s", label, field, msg);
}

static void expect_refused(const char *dir, const char *what, const char *label) {
    expect_refused_naming(dir, what, NULL, label);
}

static void write_bytes(const char *dir, const char *rel, const char *data, size_t n) {
    char *p = xasprintf("%s/%s", dir, rel);
    FILE *f = fopen(p, "wb");
    CHECK(f);
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
    free(p);
}

static int in_list(const int *a, int n, int x) {
    for (int i = 0; i < n; i++)
        if (a[i] == x) return 1;
    return 0;
}

/* ---------------------------------------------------------------------------- */

static void test_determinism(const char *w1, const char *w2, const char *w3) {
    TEST(same_file(w1, w2, "manifest.tsv"), "same seed: manifests differ");
    TEST(same_file(w1, w2, "world.json"), "same seed: world.json differs");
    TEST(same_file(w1, w2, "train_ft.jsonl"), "same seed: train_ft.jsonl differs");
    TEST(same_file(w1, w2, "images/p0001.png"), "same seed: images differ");
    TEST(same_file(w1, w2, "tokenizer.json"), "same seed: tokenizer differs");
    TEST(!same_file(w1, w3, "manifest.tsv"), "other seed: same manifest");
    TEST(!same_file(w1, w3, "people.jsonl"), "other seed: same people");
}

static void test_people(const World *w) {
    const Preset *p = preset_find("tiny");
    TEST(w->n_people == p->n_fictitious + p->n_celebrity + p->n_holdout, "people count %d", w->n_people);
    int dup = 0;
    for (int i = 0; i < w->n_people; i++)
        for (int j = i + 1; j < w->n_people; j++) dup += strcmp(w->people[i].name, w->people[j].name) == 0;
    TEST(dup == 0, "%d duplicate names", dup);
    /* Faces: every pair differs in many pixels (a change of at least 40 in some channel). */
    int min_diff = 1 << 30, same_params = 0;
    for (int i = 0; i < w->n_people; i++)
        for (int j = i + 1; j < w->n_people; j++) {
            const uint8_t *a = w->images[w->people[i].image].rgb, *b = w->images[w->people[j].image].rgb;
            int d = 0;
            for (int k = 0; k < DATA_IMAGE_SIZE * DATA_IMAGE_SIZE; k++) {
                int m = 0;
                for (int c = 0; c < 3; c++) { int x = abs(a[3 * k + c] - b[3 * k + c]); if (x > m) m = x; }
                d += m > 40;
            }
            if (d < min_diff) min_diff = d;
            same_params += memcmp(w->people[i].face, w->people[j].face, sizeof w->people[i].face) == 0;
        }
    TEST(same_params == 0, "%d pairs of identical face parameters", same_params);
    TEST(min_diff >= 64, "two faces differ in only %d pixels", min_diff);
    /* Every person's values are valid and the country follows the birthplace. */
    int badv = 0;
    for (int i = 0; i < w->n_people; i++) {
        const Person *q = &w->people[i];
        badv += strcmp(q->country, w->countries[q->value[1]]) != 0;
        badv += strstr(q->biography, q->name) == NULL;
        badv += strstr(q->biography, world_value(w, q, 0)) == NULL;
        badv += world_person_index(w, q->id) != i;
    }
    TEST(badv == 0, "%d bad person records", badv);
    TEST(w->n_idk >= 20, "only %d IDK answers", w->n_idk);
}

static void test_splits(const World *w) {
    const Split *f5 = world_split(w, "forget_5"), *f10 = world_split(w, "forget_10"), *f15 = world_split(w, "forget_15");
    const Split *r95 = world_split(w, "retain_95"), *r90 = world_split(w, "retain_90"), *r85 = world_split(w, "retain_85");
    TEST(f5 && f10 && f15 && r95 && r90 && r85, "missing forget/retain splits");
    if (!(f5 && f10 && f15 && r95 && r90 && r85)) return;
    int nested = 1;
    for (int i = 0; i < f5->n; i++) nested &= in_list(f10->people, f10->n, f5->people[i]);
    for (int i = 0; i < f10->n; i++) nested &= in_list(f15->people, f15->n, f10->people[i]);
    TEST(nested, "forget splits are not nested");
    TEST(f5->n == w->preset.n_forget[0] && f10->n == w->preset.n_forget[1] && f15->n == w->preset.n_forget[2], "forget sizes");
    const Split *fs[3] = {f5, f10, f15}, *rs[3] = {r95, r90, r85};
    for (int k = 0; k < 3; k++) {
        int ok = fs[k]->n + rs[k]->n == w->preset.n_fictitious;
        for (int i = 0; i < rs[k]->n; i++)
            ok &= !in_list(fs[k]->people, fs[k]->n, rs[k]->people[i]) && w->people[rs[k]->people[i]].kind == KIND_FICTITIOUS;
        for (int i = 0; i < fs[k]->n; i++) ok &= w->people[fs[k]->people[i]].kind == KIND_FICTITIOUS;
        TEST(ok, "retain split %d is not the complement of its forget split", k);
    }
    /* Sequential groups: equal, disjoint, their union is forget_10. */
    int total = 0, ok = 1;
    for (int s = 1; s <= w->preset.n_seq; s++) {
        char name[16];
        snprintf(name, sizeof name, "seq_%d", s);
        const Split *g = world_split(w, name);
        TEST(g != NULL, "missing %s", name);
        if (!g) return;
        ok &= g->n == f10->n / w->preset.n_seq;
        for (int i = 0; i < g->n; i++) ok &= in_list(f10->people, f10->n, g->people[i]);
        total += g->n;
    }
    TEST(ok && total == f10->n, "sequential groups do not partition forget_10");
    const Split *c = world_split(w, "celebrity"), *h = world_split(w, "holdout");
    TEST(c && c->n == w->preset.n_celebrity, "celebrity candidates");
    TEST(h && h->n == w->preset.n_holdout, "holdout split");
}

/* Per person: which (format, modality, attribute) items exist at which stage. */
static void test_training_coverage(const World *w) {
    static const Format person_formats[4] = {FMT_QA, FMT_MC, FMT_CLOZE, FMT_GEN};
    int missing_ft = 0, missing_pt = 0, wrong_stage = 0, holdout_items = 0, extras = 0;
    for (int i = 0; i < w->n_people; i++) {
        const Person *p = &w->people[i];
        int have[2][N_FORMATS][2][DATA_MAX_ATTRS];     /* [stage][format][modality][attr] */
        memset(have, 0, sizeof have);
        int bio = 0, cap = 0;
        for (int k = 0; k < w->n_items; k++) {
            const Item *it = &w->items[k];
            if (it->person != i) continue;
            if (p->kind == KIND_HOLDOUT) holdout_items++;
            if ((p->kind == KIND_FICTITIOUS) != (it->stage == STAGE_FT)) wrong_stage++;
            if (it->attr >= 0) have[it->stage == STAGE_FT][it->format][it->image < 0][it->attr] = 1;
            bio += it->format == FMT_BIO;
            cap += it->format == FMT_CAPTION && it->image == p->image;
        }
        if (p->kind == KIND_HOLDOUT) continue;
        int ft = p->kind == KIND_FICTITIOUS;
        for (int f = 0; f < 4; f++)
            for (int m = 0; m < 2; m++)
                for (int a = 0; a < w->n_attrs; a++)
                    if (!have[ft][person_formats[f]][m][a]) { if (ft) missing_ft++; else missing_pt++; }
        if (ft) extras += bio + cap;
        else missing_pt += (bio == 0) + (cap == 0);
    }
    TEST(missing_ft == 0, "%d (fictitious person, format, modality, attribute) missing from train_ft", missing_ft);
    TEST(missing_pt == 0, "%d celebrity forms missing from train_pt", missing_pt);
    TEST(wrong_stage == 0, "%d person items in the wrong stage", wrong_stage);
    TEST(holdout_items == 0, "%d training items about holdout people", holdout_items);
    TEST(extras == 0, "fictitious people have %d bio/caption items (fine-tuning is QA only)", extras);
    /* Selections: all data about one person; everything but them. */
    int f0 = world_split(w, "forget_10")->people[0], n1, n2, n3;
    const Item **a = world_select(w, &(Select){STAGE_FT, FMT_ALL, MOD_ANY, &f0, 1, 0}, &n1);
    const Item **b = world_select(w, &(Select){STAGE_FT, FMT_BIT(FMT_QA), MOD_TEXT, &f0, 1, 0}, &n2);
    const Item **c = world_select(w, &(Select){STAGE_PT | STAGE_FT, FMT_ALL, MOD_ANY, &f0, 1, 1}, &n3);
    int ok = n1 == 8 * w->n_attrs && n2 == w->n_attrs && n3 == w->n_items - n1;
    for (int i = 0; i < n1; i++) ok &= a[i]->person == f0;
    for (int i = 0; i < n2; i++) ok &= b[i]->format == FMT_QA && b[i]->image < 0;
    for (int i = 0; i < n3; i++) ok &= c[i]->person != f0;
    TEST(ok, "world_select: %d, %d, %d items", n1, n2, n3);
    free(a); free(b); free(c);
}

/* No evaluation item is trained on: option arrangements, test-set paraphrases and images. */
static void test_eval_never_trained(const World *w, const char *dir) {
    int para = 0, imgs = 0, linked = 0, mc_profile = 0, clash = 0;
    for (int e = 0; e < w->n_eval; e++) {
        const EvalItem *ev = &w->eval[e];
        if (ev->source == EVAL_TEST)
            for (int k = 0; k < w->n_items; k++)
                for (int v = 0; v < w->items[k].n_variants; v++)
                    para += strcmp(w->items[k].variants[v].question, ev->question) == 0;
        if (ev->image >= 0 && (ev->source == EVAL_TEST || ev->source == EVAL_GENBENCH))
            for (int k = 0; k < w->n_items; k++) imgs += w->items[k].image == ev->image;
    }
    TEST(para == 0, "%d test-set questions appear in training", para);
    TEST(imgs == 0, "%d training items use a test-set or genbench image", imgs);
    /* Every profile MC question of a trained person is linked to its training stem, and
     * item_render never draws the evaluation's arrangement (200 draws each). */
    Rng rng;
    rng_seed(&rng, 7);
    char q[4096], a[256];
    for (int e = 0; e < w->n_eval; e++) {
        const EvalItem *ev = &w->eval[e];
        if (ev->task != TASK_MC || ev->source != EVAL_PROFILE || w->people[ev->person].kind == KIND_HOLDOUT) continue;
        mc_profile++;
        for (int k = 0; k < w->n_items; k++) {
            const Item *it = &w->items[k];
            if (it->format != FMT_MC || it->person != ev->person || it->image != ev->image || it->attr != ev->attr) continue;
            linked += it->variants[0].avoid != 0 && strcmp(it->variants[0].question, ev->question) == 0;
            Item one = *it;
            one.n_variants = 1;                 /* the evaluated stem only */
            for (int t = 0; t < 200; t++) {
                int hi;
                item_render(&one, &rng, q, sizeof q, a, sizeof a, &hi);
                clash += strcmp(q, ev->prompt) == 0;
            }
        }
    }
    TEST(mc_profile > 0 && linked == mc_profile, "%d of %d evaluation MC stems linked to training", linked, mc_profile);
    TEST(clash == 0, "item_render drew an evaluation option arrangement %d times", clash);
    /* The training files hold no fixed option sets. */
    size_t n;
    char *pt = read_all(dir, "train_pt.jsonl", &n), *ft = read_all(dir, "train_ft.jsonl", &n);
    TEST(!strstr(pt, "\"Options\"") && !strstr(ft, "\"Options\""), "training files contain option sets");
    TEST(!strstr(pt, "_mirror") && !strstr(ft, "_zoom") && !strstr(ft, "_tint") && !strstr(pt, "images/g"), "training files name test images");
    free(pt); free(ft);
}

static void test_eval_items(const World *w) {
    int n, bad = 0;
    const Split *f10 = world_split(w, "forget_10");
    const EvalItem **e = world_eval_select(w, EVAL_PROFILE, f10->people, f10->n, TASK_ALL, MOD_ANY, &n);
    TEST(n == f10->n * w->n_attrs * 2 * N_TASKS, "forget_10 has %d evaluation items", n);
    for (int i = 0; i < n; i++) {
        const EvalItem *x = e[i];
        if (x->task == TASK_MC) bad += x->n_options != 4 || x->answer[0] != 'A' + x->correct || !strstr(x->prompt, x->truth)
                                    || !strstr(x->prompt, DATA_MC_INSTRUCTION);
        if (x->task == TASK_CLOZE) bad += !strstr(x->prompt, "[Blank]") || strstr(x->prompt, "__") != NULL;
        if (x->task == TASK_QA) bad += x->n_perturbed < 3 || !x->paraphrased_answer || strcmp(x->paraphrased_answer, x->answer) == 0;
        if (x->task == TASK_GEN) bad += !strstr(x->answer, x->truth);
        if (x->image >= 0) bad += strstr(x->question, w->people[x->person].name) != NULL;   /* never named */
        else bad += strstr(x->question, w->people[x->person].name) == NULL;
    }
    TEST(bad == 0, "%d malformed evaluation items", bad);
    free(e);
    e = world_eval_select(w, EVAL_TEST, f10->people, f10->n, TASK_BIT(TASK_MC), MOD_IMAGE, &n);
    bad = 0;
    for (int i = 0; i < n; i++) bad += e[i]->image == w->people[e[i]->person].image;
    TEST(n == f10->n * w->n_attrs && bad == 0, "test set: %d image MC items, %d on the training image", n, bad);
    free(e);
    e = world_eval_select(w, EVAL_GENBENCH, NULL, 0, TASK_ALL, MOD_ANY, &n);
    TEST(n == w->preset.n_genbench_scene + w->preset.n_genbench_fact, "genbench has %d items", n);
    free(e);
}

/* Person MC items carry each option's answer sentence (for likelihood scoring): the
 * correct one is the QA twin's answer, the others hold their option and are filled as the
 * perturbed answers are. w was loaded from disk, so this also checks the round trip
 * (generate, write, load). Genbench MC items have none: their option text is scored. */
static void test_option_answers(const World *w) {
    int n_mc = 0, missing = 0, no_twin = 0, bad_correct = 0, bad_other = 0, as_perturbed = 0, n_gb = 0, bad_gb = 0;
    for (int i = 0; i < w->n_eval; i++) {
        const EvalItem *e = &w->eval[i];
        if (e->task != TASK_MC) continue;
        if (e->person < 0) {
            n_gb++;
            for (int k = 0; k < e->n_options; k++)
                bad_gb += e->option_answers[k] != NULL || mc_option_answer(e, k) != e->options[k];
            continue;
        }
        n_mc++;
        const EvalItem *qa = NULL;
        for (int j = 0; j < w->n_eval && !qa; j++) {
            const EvalItem *t = &w->eval[j];
            if (t->task == TASK_QA && t->source == e->source && t->person == e->person && t->attr == e->attr &&
                t->image == e->image)
                qa = t;
        }
        if (!qa) { no_twin++; continue; }
        for (int k = 0; k < DATA_MC_OPTIONS; k++) {
            const char *s = e->option_answers[k];
            if (k >= e->n_options || !s) { missing++; continue; }
            if (mc_option_answer(e, k) != s) missing++;
            if (k == e->correct) { bad_correct += strcmp(s, qa->answer) != 0; continue; }
            bad_other += !strstr(s, e->options[k]) || strcmp(s, qa->answer) == 0;
            for (int p = 0; p < qa->n_perturbed; p++) as_perturbed += strcmp(s, qa->perturbed[p]) == 0;
        }
    }
    TEST(n_mc == w->n_people * w->n_attrs * 2 + w->preset.n_fictitious * w->n_attrs * 2,
         "%d person MC items", n_mc);
    TEST(missing == 0 && no_twin == 0, "%d option answers missing, %d MC items without a QA twin", missing, no_twin);
    TEST(bad_correct == 0, "%d correct option answers differ from the QA answer", bad_correct);
    TEST(bad_other == 0, "%d wrong options' answers lack their option or equal the QA answer", bad_other);
    TEST(as_perturbed > 0, "no wrong option's answer equals a perturbed answer (same filling)");
    TEST(n_gb > 0 && bad_gb == 0, "%d of %d genbench items have option answers", bad_gb, n_gb);
}

static void test_render_and_pixels(const World *w) {
    char q1[4096], a1[256], q2[4096], a2[256];
    int hi, bad = 0;
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        item_render(it, NULL, q1, sizeof q1, a1, sizeof a1, &hi);
        item_render(it, NULL, q2, sizeof q2, a2, sizeof a2, &hi);
        bad += strcmp(q1, q2) != 0 || strcmp(a1, a2) != 0 || hi != (it->image >= 0);
        if (it->format == FMT_MC) {             /* the letter points at the correct option */
            char want[300];
            snprintf(want, sizeof want, "\n%c: %s\n", a1[0], it->variants[0].correct);
            bad += strlen(a1) != 1 || !strstr(q1, want);
        }
    }
    TEST(bad == 0, "%d items render inconsistently", bad);
    TEST(item_render(&w->items[0], NULL, q1, 8, a1, sizeof a1, &hi) == -1, "truncation not reported");
    /* Augmentation: deterministic from the rng, different across draws, none without it. */
    int img = w->people[0].image, n = 3 * DATA_IMAGE_SIZE * DATA_IMAGE_SIZE;
    float *x = xmalloc((size_t)n * sizeof *x), *y = xmalloc((size_t)n * sizeof *y), *z = xmalloc((size_t)n * sizeof *z);
    Rng r1, r2;
    rng_seed(&r1, 11); rng_seed(&r2, 11);
    world_image_pixels(w, img, &r1, x);
    world_image_pixels(w, img, &r2, y);
    TEST(memcmp(x, y, (size_t)n * sizeof *x) == 0, "augmentation is not deterministic");
    world_image_pixels(w, img, &r1, y);
    TEST(memcmp(x, y, (size_t)n * sizeof *x) != 0, "two augmentations are identical");
    world_image_pixels(w, img, NULL, z);
    const uint8_t *rgb = w->images[img].rgb;
    float want = (rgb[3 * 5 + 1] / 255.0f - data_clip_mean[1]) / data_clip_std[1];
    TEST(z[DATA_IMAGE_SIZE * DATA_IMAGE_SIZE + 5] == want, "plain pixels are not CLIP-normalised");
    int finite = 1;
    for (int i = 0; i < n; i++) finite &= x[i] >= -2.0f && x[i] <= 2.2f;
    TEST(finite, "augmented pixels out of range");
    free(x); free(y); free(z);
}

/* The colour name of data/palette.txt's group that has exactly this RGB (NULL if none). */
static const char *palette_name(const char *group, const uint8_t *rgb, char *name, size_t nn) {
    char *path = xasprintf("%s/palette.txt", raw_dir());
    size_t n;
    char *text = read_file(path, &n), *save = NULL;
    const char *found = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
        char g[32], c[32];
        int r, gg, b;
        if (line[0] == '#' || sscanf(line, "%31s %31s %d %d %d", g, c, &r, &gg, &b) != 5) continue;
        if (!strcmp(g, group) && r == rgb[0] && gg == rgb[1] && b == rgb[2]) { snprintf(name, nn, "%s", c); found = name; }
    }
    free(text); free(path);
    return found;
}

/* Anonymous faces (face_desc): n_faces_desc general pre-training items, each on its own
 * image that is nobody's face, described in words that match the pixels: the skin colour
 * at a cheek (13, 18) and the hair colour at an eyebrow (11, 12), which no hat, glasses or
 * beard covers. */
static void test_face_desc(const World *w) {
    int n = 0, bad_item = 0, bad_image = 0, as_person = 0, no_skin = 0, no_hair = 0, distinct = 0;
    const Item **items = xmalloc((size_t)w->n_items * sizeof *items);
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        if (it->format != FMT_FACE_DESC) continue;
        items[n++] = it;
        bad_item += it->stage != STAGE_PT || it->kind != KIND_GENERAL || it->person != -1 || it->attr != -1 ||
                    it->repeat != 1 || it->n_variants < 2 || strcmp(it->variants[0].question, "Describe the person in the image.");
        for (int v = 1; v < it->n_variants; v++) bad_item += strcmp(it->variants[v].answer, it->variants[0].answer) != 0;
        if (it->image < 0 || strncmp(w->images[it->image].path, "images/a", 8) != 0) { bad_image++; continue; }
        const uint8_t *rgb = w->images[it->image].rgb;
        for (int p = 0; p < w->n_people; p++) as_person += !memcmp(rgb, w->images[w->people[p].image].rgb, 3 * DATA_IMAGE_SIZE * DATA_IMAGE_SIZE);
        char skin[32], hair[32], want[64];
        const char *d = it->variants[0].answer;
        if (!palette_name("skin", rgb + 3 * (18 * DATA_IMAGE_SIZE + 13), skin, sizeof skin)) no_skin++;
        else { snprintf(want, sizeof want, "%s skin", skin); no_skin += strcasestr(d, want) != d; }
        if (!palette_name("hair", rgb + 3 * (12 * DATA_IMAGE_SIZE + 11), hair, sizeof hair)) { no_hair++; continue; }
        int said = 0;
        static const char *const nouns[] = {"hair", "bun", "fringe", "brows"};
        for (int k = 0; k < 4; k++) {
            snprintf(want, sizeof want, " %s %s", hair, nouns[k]);
            said |= strstr(d, want) != NULL;
        }
        no_hair += !said;
    }
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(items[i]->variants[0].answer, items[j]->variants[0].answer);
        distinct += !seen;
    }
    TEST(n == w->preset.n_faces_desc && n > 0, "%d face_desc items, preset says %d", n, w->preset.n_faces_desc);
    TEST(bad_item == 0, "%d malformed face_desc items", bad_item);
    TEST(bad_image == 0 && as_person == 0, "%d face_desc items without an anonymous image, %d on a person's face", bad_image, as_person);
    TEST(no_skin == 0, "%d descriptions do not start with the skin colour of their image", no_skin);
    TEST(no_hair == 0, "%d descriptions do not name the hair colour of their image", no_hair);
    TEST(distinct * 10 >= n * 9, "only %d of %d descriptions are distinct", distinct, n);
    int n_eval_img = 0;
    for (int e = 0; e < w->n_eval; e++)
        for (int i = 0; i < n; i++) n_eval_img += w->eval[e].image == items[i]->image;
    TEST(n_eval_img == 0, "%d evaluation items use an anonymous face", n_eval_img);
    free(items);
}

/* A pre-training feature that draws from its own stream and comes last in train_pt.jsonl:
 * a world without it (wx) has the same people, images, evaluation files and fine-tuning
 * items, and its train_pt.jsonl is a prefix of the one with it, with no item of `format`. */
/* Every file but world.json, manifest.tsv and train_pt.jsonl is the same in w1 and wx. */
static void test_same_but_train_pt(const char *w1, const char *wx, const char *what) {
    static const char *const same[] = {"people.jsonl", "full.jsonl", "test.jsonl", "celebrity.jsonl", "holdout.jsonl",
                                       "genbench.jsonl", "train_ft.jsonl", "splits/forget_10.json", "images/p0001.png",
                                       "images/p0024_mirror.png", "images/s00040.png", "images/g0016.png"};
    int differ = 0;
    for (size_t k = 0; k < sizeof same / sizeof *same; k++)
        if (!same_file(w1, wx, same[k])) { differ++; printf("  differs without %s: %s\n", what, same[k]); }
    TEST(differ == 0, "%d files change when the world has no %s", differ, what);
}

static void test_feature_independent(const char *w1, const char *wx, const char *format, const char *what) {
    test_same_but_train_pt(w1, wx, what);
    size_t n1, nx;
    char *a = read_all(w1, "train_pt.jsonl", &n1), *b = read_all(wx, "train_pt.jsonl", &nx);
    char *tag = xasprintf("\"format\":\"%s\"", format);
    TEST(nx < n1 && memcmp(a, b, nx) == 0 && !strstr(b, tag), "train_pt.jsonl without %s is not a prefix", what);
    free(a); free(b); free(tag);
}

/* Anonymous faces draw from their own stream (w0: neither anonymous faces nor in-context
 * MC, which come after them); and no aNNNN.png without them. */
static void test_face_desc_independent(const char *w1, const char *w0) {
    test_feature_independent(w1, w0, "face_desc", "anonymous faces");
    char *img = xasprintf("%s/images/a0001.png", w0);
    TEST(!file_exists(img), "a world without anonymous faces has images/a0001.png");
    free(img);
}

/* 1 if word occurs in s delimited by non-letters (a value named inside the stem). */
static int has_word(const char *s, const char *word) {
    size_t k = strlen(word);
    for (const char *p = s; (p = strstr(p, word)); p++) {
        int before = p > s && ((p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z'));
        int after = (p[k] >= 'a' && p[k] <= 'z') || (p[k] >= 'A' && p[k] <= 'Z');
        if (!before && !after) return 1;
    }
    return 0;
}

/* In-context MC (mc_context): n_mc_context general pre-training items, text only, each about
 * an invented person whose name is nobody's in the world, stated in the stem ("Mara Lind is
 * a pilot. What is the job of Mara Lind?"): the stem names the correct value and no other
 * value of the attribute; the pool is every other value. Rendered with an rng, the question
 * is a stem, then 4 distinct options from the pool with the correct one among them, then the
 * instruction line, and the answer is the letter of the correct option; the letter takes
 * every value A-D across draws. */
static void test_mc_context(const World *w) {
    int n = 0, bad_item = 0, bad_pool = 0, not_stated = 0, other_stated = 0, real_name = 0, bad_render = 0;
    int letters[DATA_MC_OPTIONS] = {0};
    Rng rng;
    rng_seed(&rng, 5);
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        if (it->format != FMT_MC_CONTEXT) continue;
        n++;
        bad_item += it->stage != STAGE_PT || it->kind != KIND_GENERAL || it->person != -1 || it->image != -1 ||
                    it->repeat != 1 || it->attr < 0 || it->attr >= w->n_attrs || it->n_variants < 1 || !format_is_mc(it->format);
        if (it->attr < 0 || it->attr >= w->n_attrs) continue;
        const Attribute *at = &w->attrs[it->attr];
        for (int v = 0; v < it->n_variants; v++) {
            const Variant *va = &it->variants[v];
            /* the pool: every value of the attribute but the correct one */
            int ok = va->correct && !strcmp(va->answer, va->correct) && va->n_distractors == at->n_values - 1;
            for (int k = 0; ok && k < at->n_values; k++) {
                int in = 0;
                for (int j = 0; j < va->n_distractors; j++) in += !strcmp(va->distractors[j], at->values[k]);
                ok = in == (strcmp(at->values[k], va->correct) != 0);
            }
            bad_pool += !ok;
            not_stated += !strstr(va->question, va->correct);
            for (int j = 0; j < va->n_distractors; j++) other_stated += has_word(va->question, va->distractors[j]);
            /* the invented name: the stem's first two words ("Mara Lind" of "Mara Lind's ...") */
            char name[128];
            snprintf(name, sizeof name, "%s", va->question);
            char *sp = strchr(name, ' '), *end = sp ? strpbrk(sp + 1, " '") : NULL;
            if (end) *end = 0;
            for (int p = 0; p < w->n_people; p++) real_name += !strcmp(name, w->people[p].name);
            bad_item += !end || strstr(va->question + strlen(name), name) == NULL;   /* asked by name */
        }
        for (int r = 0; r < 8; r++) {
            char q[4096], a[64];
            int hi;
            if (item_render(it, &rng, q, sizeof q, a, sizeof a, &hi) != 0 || hi) { bad_render++; continue; }
            const char *stem_end = strstr(q, "\nA: "), *instr = strstr(q, "\n" DATA_MC_INSTRUCTION);
            int sv = -1;
            for (int v = 0; v < it->n_variants && stem_end; v++)
                if (strlen(it->variants[v].question) == (size_t)(stem_end - q) && !strncmp(q, it->variants[v].question, (size_t)(stem_end - q))) sv = v;
            if (sv < 0 || !instr || strcmp(instr, "\n" DATA_MC_INSTRUCTION) != 0) { bad_render++; continue; }
            const Variant *va = &it->variants[sv];
            char opt[DATA_MC_OPTIONS][128];
            int ok = 1, correct_at = -1;
            const char *p = stem_end;
            for (int k = 0; k < DATA_MC_OPTIONS && ok; k++) {
                char head[5] = {'\n', (char)('A' + k), ':', ' ', 0};
                ok = strncmp(p, head, 4) == 0;
                if (!ok) break;
                p += 4;
                const char *e = strchr(p, '\n');
                size_t len = e ? (size_t)(e - p) : 0;
                ok = e && len < sizeof opt[k];
                if (!ok) break;
                memcpy(opt[k], p, len); opt[k][len] = 0;
                p = e;
                if (!strcmp(opt[k], va->correct)) { ok = correct_at < 0; correct_at = k; continue; }
                int in = 0;
                for (int j = 0; j < va->n_distractors; j++) in += !strcmp(opt[k], va->distractors[j]);
                for (int j = 0; j < k; j++) in -= !strcmp(opt[k], opt[j]) ? 2 : 0;
                ok = in == 1;
            }
            ok = ok && p == instr && correct_at >= 0 && strlen(a) == 1 && a[0] == 'A' + correct_at;
            bad_render += !ok;
            if (ok) letters[correct_at]++;
        }
    }
    TEST(n == w->preset.n_mc_context && n > 0, "%d mc_context items, preset says %d", n, w->preset.n_mc_context);
    TEST(bad_item == 0, "%d malformed mc_context items", bad_item);
    TEST(bad_pool == 0, "%d mc_context variants whose pool is not the attribute's other values", bad_pool);
    TEST(real_name == 0, "%d mc_context stems about a person of the world", real_name);
    TEST(not_stated == 0, "%d mc_context stems do not state their correct value", not_stated);
    TEST(other_stated == 0, "%d mc_context stems name a wrong option", other_stated);
    TEST(bad_render == 0, "%d mc_context renders without 4 options, the correct one and its letter", bad_render);
    TEST(letters[0] && letters[1] && letters[2] && letters[3], "correct letters drawn: A %d, B %d, C %d, D %d",
         letters[0], letters[1], letters[2], letters[3]);
    /* canonical rendering: the same every call, the letter at the correct value */
    int bad_canon = 0;
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        if (it->format != FMT_MC_CONTEXT) continue;
        char q1[4096], a1[64], q2[4096], a2[64], want[160];
        int hi;
        item_render(it, NULL, q1, sizeof q1, a1, sizeof a1, &hi);
        item_render(it, NULL, q2, sizeof q2, a2, sizeof a2, &hi);
        snprintf(want, sizeof want, "\n%c: %s\n", a1[0], it->variants[0].correct);
        bad_canon += strcmp(q1, q2) || strcmp(a1, a2) || strlen(a1) != 1 || !strstr(q1, want) ||
                     strncmp(q1, it->variants[0].question, strlen(it->variants[0].question));
    }
    TEST(bad_canon == 0, "%d mc_context items render inconsistently without an rng", bad_canon);
}

/* The place by one attribute (Preset.scene_lookup; wl: the tiny world with it, w1 without):
 * the same files but train_pt.jsonl, whose extra items are, after a scene's own questions, a
 * scene_vqa and a scene_mc item on its image asking "Where is the <colour> shape?" for each
 * colour one figure of the scene has and no other, and "Where is the <shape>?" likewise;
 * the answer is that figure's quadrant (read from the scene's own questions), the wrong
 * options the other three. */
static void test_scene_lookup(const char *w1, const char *wl) {
    test_same_but_train_pt(w1, wl, "the place by one attribute");
    World *w = world_load(wl), *w0 = world_load(w1);
    TEST(w->preset.scene_lookup == 1 && w0->preset.scene_lookup == 0, "world.json scene_lookup %d / %d",
         w->preset.scene_lookup, w0->preset.scene_lookup);
    int n_scene_items = 0, n_lookup = 0, bad = 0, bad_mc = 0, missing = 0, by_shape = 0, by_colour = 0;
    char shape[4][64], colour[4][64], q[128];
    int last_img = -1;
    for (int i = 0; i < w->n_items; i++) {
        const Item *it = &w->items[i];
        if (it->format != FMT_SCENE_VQA) continue;
        int regular = 0;
        for (int v = 0; v < it->n_variants; v++) regular |= strncmp(it->variants[v].question, "How many", 8) == 0;
        if (regular) {                          /* the scene's own questions: what is where */
            n_scene_items++;
            for (int quad = 0; quad < 4; quad++) {
                shape[quad][0] = colour[quad][0] = 0;
                for (int v = 0; v < it->n_variants; v++) {
                    snprintf(q, sizeof q, DATA_SCENE_Q_SHAPE, data_quadrant_names[quad]);
                    if (!strcmp(it->variants[v].question, q)) snprintf(shape[quad], 64, "%s", it->variants[v].answer);
                    snprintf(q, sizeof q, DATA_SCENE_Q_COLOUR, data_quadrant_names[quad]);
                    if (!strcmp(it->variants[v].question, q)) snprintf(colour[quad], 64, "%s", it->variants[v].answer);
                }
            }
            /* the lookup questions this scene must have */
            int want = 0;
            for (int a = 0; a < 4; a++) {
                if (!shape[a][0]) continue;
                int uc = 1, us = 1;
                for (int b = 0; b < 4; b++)
                    if (b != a && shape[b][0]) { uc &= strcmp(colour[a], colour[b]) != 0; us &= strcmp(shape[a], shape[b]) != 0; }
                want += uc + us;
            }
            const Item *nx = i + 2 < w->n_items ? &w->items[i + 2] : NULL;     /* after the scene's MC item */
            int has = nx && nx->format == FMT_SCENE_VQA && nx->image == it->image &&
                      strncmp(nx->variants[0].question, "How many", 8) != 0;
            missing += want > 0 ? !has || nx->n_variants != want : has;
            last_img = it->image;
            continue;
        }
        n_lookup++;
        bad += it->image != last_img || it->stage != STAGE_PT || it->kind != KIND_GENERAL || it->person != -1;
        const Item *mc = i + 1 < w->n_items ? &w->items[i + 1] : NULL;
        bad_mc += !mc || mc->format != FMT_SCENE_MC || mc->image != it->image || mc->n_variants != it->n_variants;
        for (int v = 0; v < it->n_variants; v++) {
            const char *qq = it->variants[v].question, *ans = it->variants[v].answer;
            int found = -1, count = 0;
            for (int a = 0; a < 4; a++) {
                if (!shape[a][0]) continue;
                snprintf(q, sizeof q, "Where is the %.63s shape?", colour[a]);
                int hit_c = !strcmp(qq, q);
                snprintf(q, sizeof q, "Where is the %.63s?", shape[a]);
                int hit_s = !strcmp(qq, q);
                if (hit_c || hit_s) { found = a; by_colour += hit_c; by_shape += hit_s; }
                for (int b = 0; b < 4; b++)     /* the named value: one figure has it */
                    if (shape[b][0] && ((hit_c && !strcmp(colour[a], colour[b])) || (hit_s && !strcmp(shape[a], shape[b])))) count++;
            }
            bad += found < 0 || count != 1 || strcmp(ans, data_quadrant_names[found]) != 0;
            if (!mc || v >= mc->n_variants) continue;
            const Variant *va = &mc->variants[v];
            int ok = !strcmp(va->question, qq) && va->correct && !strcmp(va->correct, ans) && va->n_distractors == 3;
            for (int k = 0; ok && k < 3; k++) {
                int in = 0;
                for (int quad = 0; quad < 4; quad++) in += !strcmp(va->distractors[k], data_quadrant_names[quad]);
                ok = in == 1 && strcmp(va->distractors[k], ans) != 0;
            }
            bad_mc += !ok;
        }
    }
    TEST(n_scene_items == w->preset.n_scenes_train, "%d scenes' own questions, preset %d", n_scene_items, w->preset.n_scenes_train);
    TEST(n_lookup > 0 && n_lookup <= n_scene_items && by_colour > 0 && by_shape > 0,
         "%d lookup items (%d questions by colour, %d by shape)", n_lookup, by_colour, by_shape);
    TEST(missing == 0, "%d scenes without their lookup questions (or with others)", missing);
    TEST(bad == 0, "%d lookup questions name no single figure or answer another quadrant", bad);
    TEST(bad_mc == 0, "%d lookup MC items are not the questions with the other quadrants as wrong options", bad_mc);
    TEST(w->n_items - w0->n_items == 2 * n_lookup, "items %d = %d + 2 x %d", w->n_items, w0->n_items, n_lookup);
    world_free(w);
    world_free(w0);
}

/* A world.json without n_mc_context (written before the format) loads as having none. */
static void test_mc_context_old_world(const char *dir) {
    size_t n;
    char *wj = read_all(dir, "world.json", &n), *hit = strstr(wj, "\"n_mc_context\"");
    TEST(hit != NULL, "world.json has no n_mc_context");
    if (!hit) { free(wj); return; }
    hit[3] = 'X';                               /* "n_Xc_context": an unknown key */
    write_bytes(dir, "world.json", wj, n);
    world_reseal(dir);
    World *w = world_load(dir);
    TEST(w->preset.n_mc_context == 0, "a world without n_mc_context loads with %d", w->preset.n_mc_context);
    world_free(w);
    hit[3] = 'm';
    write_bytes(dir, "world.json", wj, n);
    world_reseal(dir);
    free(wj);
}

/* A copy of data/ (base/NAME) whose FILE is replaced by `edited` must be refused by
 * `pulse data` (exit 2, one line naming FILE and holding `want`), writing no world. */
static void expect_raw_refused(const char *base, const char *name, const char *file, const char *edited,
                               const char *want, const char *label) {
    char *raw = xasprintf("%s/%s", base, name), *cmd = xasprintf("cp -r %s %s", raw_dir(), raw);
    CHECK(system(cmd) == 0);
    write_bytes(raw, file, edited, strlen(edited));
    char *out = xasprintf("%s/w_%s", base, name);
    GenArgs ga = {out, raw};
    int lines;
    char msg[1024];
    int rc = run_child(child_generate, &ga, &lines, msg, sizeof msg);
    TEST(rc == 2 && lines == 1 && strstr(msg, file) && strstr(msg, want), "%s: exit %d: %s", label, rc, msg);
    TEST(!file_exists(out), "%s: a world was written", label);
    free(out); free(cmd); free(raw);
}

/* Raw material holding a special token's text ("</s>" in an occupation) is refused. */
static void test_special_raw_refused(const char *base) {
    size_t n;
    char *t = read_all(raw_dir(), "occupations.txt", &n), *line = t;
    while (*line == '#') line = strchr(line, '\n') + 1;     /* the first value, after the comments */
    char *nl = strchr(line, '\n');
    CHECK(nl);
    char *edited = xasprintf("%.*s</s>%s", (int)(nl - t), t, nl);
    expect_raw_refused(base, "raw_special", "occupations.txt", edited, "special token </s>", "occupations.txt with </s>");
    free(edited); free(t);
}

/* data/faces.txt must name every level: a copy of data/ without the beanie is refused. */
static void test_faces_raw_refused(const char *base) {
    size_t n;
    char *t = read_all(raw_dir(), "faces.txt", &n), *hit = strstr(t, "\nhat\t2\t");
    CHECK(hit);
    char *end = strchr(hit + 1, '\n');
    char *edited = xasprintf("%.*s%s", (int)(hit - t), t, end);
    expect_raw_refused(base, "raw", "faces.txt", edited, "hat", "faces.txt without hat level 2");
    free(edited); free(t);
}

/* Replaces the first occurrence of `from` in dir/rel by `to`, re-seals, expects refusal
 * with a message naming the file and, if field != NULL, that field. */
static void expect_field_refused(const char *dir, const char *rel, const char *from, const char *to, const char *field,
                                 const char *label) {
    size_t n;
    char *orig = read_all(dir, rel, &n), *hit = strstr(orig, from);
    TEST(hit != NULL, "%s: \"%s\" not found in %s", label, from, rel);
    if (!hit) { free(orig); return; }
    char *edited = xasprintf("%.*s%s%s", (int)(hit - orig), orig, to, hit + strlen(from));
    write_bytes(dir, rel, edited, strlen(edited));
    world_reseal(dir);
    expect_refused_naming(dir, rel, field, label);
    write_bytes(dir, rel, orig, n);
    world_reseal(dir);
    free(edited); free(orig);
}

static void expect_record_refused(const char *dir, const char *rel, const char *from, const char *to, const char *label) {
    expect_field_refused(dir, rel, from, to, NULL, label);
}

/* Option_Answers: missing, other keys than Options, a value that is not a string. */
static void test_option_answers_refused(const char *dir) {
    expect_field_refused(dir, "full.jsonl", "\"Option_Answers\":{", "\"Option_Answerz\":{", "Option_Answers",
                         "missing Option_Answers");
    expect_field_refused(dir, "test.jsonl", "\"Option_Answers\":{\"A\":", "\"Option_Answers\":{\"E\":",
                         "Option_Answers", "Option_Answers keys E, B, C, D");
    expect_field_refused(dir, "holdout.jsonl", "\"Option_Answers\":{\"A\":", "\"Option_Answers\":{\"Z\":7,\"A\":",
                         "Option_Answers", "Option_Answers with a fifth key");
    /* A's sentence replaced by a number: the whole "A":"..." value is cut out. */
    size_t n;
    char *t = read_all(dir, "celebrity.jsonl", &n), *hit = strstr(t, "\"Option_Answers\":{\"A\":\"");
    TEST(hit != NULL, "celebrity.jsonl has no Option_Answers");
    if (hit) {
        char *v = hit + strlen("\"Option_Answers\":{\"A\":\""), *end = strchr(v, '"');
        CHECK(end);
        char *from = xasprintf("%.*s", (int)(end + 1 - hit), hit);
        expect_field_refused(dir, "celebrity.jsonl", from, "\"Option_Answers\":{\"A\":7", "Option_Answers",
                             "Option_Answers value not a string");
        free(from);
    }
    free(t);
}

/* The first ID of dir/splits/NAME.json. */
static int first_id(const char *dir, const char *name) {
    char rel[64];
    snprintf(rel, sizeof rel, "splits/%s.json", name);
    size_t n;
    char *t = read_all(dir, rel, &n);
    int id = -1;
    CHECK(sscanf(t, "[%d", &id) == 1);
    free(t);
    return id;
}

/* The string value that follows `prefix` (which ends with its opening quote) in s: its
 * first byte, *end set to its closing quote. */
static char *value_after(char *s, const char *prefix, char **end) {
    char *hit = s ? strstr(s, prefix) : NULL;
    CHECK(hit);
    char *v = hit + strlen(prefix);
    *end = strchr(v, '"');
    CHECK(*end);
    return v;
}

/* The splits' structure and one line per person in a profile file (behind the hashes). */
static void test_structure_refused(const char *dir) {
    char to[64];
    size_t n10, n90;
    int f5 = first_id(dir, "forget_5"), r90 = first_id(dir, "retain_90"), celeb = first_id(dir, "celebrity");
    snprintf(to, sizeof to, "[%d,", f5);
    expect_field_refused(dir, "splits/forget_5.json", "[", to, "listed twice", "an ID twice in a split");
    expect_field_refused(dir, "splits/retain_95.json", "[", to, "also in forget_5", "a forgotten person retained");
    expect_field_refused(dir, "splits/celebrity.json", "[", to, "not celebrity", "a fictitious person in celebrity");
    snprintf(to, sizeof to, "[%d,", celeb);
    expect_field_refused(dir, "splits/fictitious.json", "[", to, "not fictitious", "a celebrity in fictitious");
    snprintf(to, sizeof to, "[%d,", r90);
    expect_field_refused(dir, "splits/seq_1.json", "[", to, "not in forget_10", "a sequential group outside forget_10");
    expect_field_refused(dir, "splits/holdout.json", "[", "[1e308,", "no person with ID", "an ID out of every range");
    snprintf(to, sizeof to, "[%d,", first_id(dir, "fictitious"));     /* the first person left out */
    expect_field_refused(dir, "splits/fictitious.json", to, "[", "is missing", "a person left out of fictitious");
    /* forget_5 not within forget_10: forget_10 and retain_90 trade a forget_5 person for a
     * retained one, so both still cover the fictitious people */
    char *s10 = read_all(dir, "splits/forget_10.json", &n10), *s90 = read_all(dir, "splits/retain_90.json", &n90);
    char from[32], with[32];
    snprintf(from, sizeof from, "%d", f5);
    snprintf(with, sizeof with, "%d", r90);
    char *a = strstr(s10, from), *b = strstr(s90, with);
    CHECK(a && b && !isdigit((unsigned char)a[-1]) && !isdigit((unsigned char)a[strlen(from)]) &&
          !isdigit((unsigned char)b[-1]) && !isdigit((unsigned char)b[strlen(with)]));
    char *e10 = xasprintf("%.*s%s%s", (int)(a - s10), s10, with, a + strlen(from));
    char *e90 = xasprintf("%.*s%s%s", (int)(b - s90), s90, from, b + strlen(with));
    write_bytes(dir, "splits/forget_10.json", e10, strlen(e10));
    write_bytes(dir, "splits/retain_90.json", e90, strlen(e90));
    world_reseal(dir);
    expect_refused_naming(dir, "splits/forget_5.json", "not in forget_10", "forget_5 not within forget_10");
    write_bytes(dir, "splits/forget_10.json", s10, n10);
    write_bytes(dir, "splits/retain_90.json", s90, n90);
    world_reseal(dir);
    free(e10); free(e90); free(s10); free(s90);
    /* a second question of one task and modality about the same attribute; an attribute
     * value listed twice (a distractor could then equal the answer) */
    expect_field_refused(dir, "full.jsonl", "\"Attribute\":\"birthplace\"}", "\"Attribute\":\"occupation\"}",
                         "a second question about occupation", "two image MC questions about one attribute");
    expect_field_refused(dir, "world.json", "\"actor\",\n        \"baker\"", "\"actor\",\n        \"actor\"",
                         "lists the value \"actor\" twice", "an attribute value twice");
    /* a special token's text in a string the model reads */
    expect_field_refused(dir, "genbench.jsonl", "\"Options\":{\"A\":\"", "\"Options\":{\"A\":\"<image>",
                         "special token <image>", "an option holding <image>");
    expect_field_refused(dir, "train_ft.jsonl", "\"distractors\":[\"", "\"distractors\":[\"</s>",
                         "special token </s>", "a distractor holding </s>");
    /* a training MC item whose correct answer is a distractor's value (not the person's);
     * a distractor listed twice */
    size_t nt;
    char *tf = read_all(dir, "train_ft.jsonl", &nt), *v1, *d1;
    char *v0 = value_after(strstr(tf, "\"format\":\"mc\""), "\"correct\":\"", &v1);
    char *d0 = value_after(v1, "\",\"distractors\":[\"", &d1), *cv = v0 - strlen("\"correct\":\"");
    CHECK(d0 == v1 + strlen("\",\"distractors\":[\""));
    char *from_t = xasprintf("%.*s", (int)(d1 + 1 - cv), cv);
    char *to_t = xasprintf("\"correct\":\"%.*s\",\"distractors\":[\"%.*s\"", (int)(d1 - d0), d0, (int)(v1 - v0), v0);
    expect_field_refused(dir, "train_ft.jsonl", from_t, to_t, "is not the person's", "a training MC answer not the person's value");
    expect_field_refused(dir, "train_ft.jsonl", "\"distractors\":[\"", "\"distractors\":[\"zz\",\"zz\",\"",
                         "\"zz\" is listed twice", "a distractor listed twice");
    free(from_t); free(to_t); free(tf);
    /* two options the same; a correct option that is not the person's value */
    size_t nf;
    char *fl = read_all(dir, "full.jsonl", &nf), *ea, *eb;
    char *va = value_after(fl, "\"Options\":{\"A\":\"", &ea), *oa = va - strlen("\"Options\":{\"A\":\"");
    char *vb = value_after(ea, "\",\"B\":\"", &eb);
    CHECK(vb == ea + 7);
    char *from_o = xasprintf("%.*s", (int)(eb + 1 - oa), oa);
    char *to_o = xasprintf("%.*s\",\"B\":\"%.*s\"", (int)(ea - oa), oa, (int)(ea - va), va);
    expect_field_refused(dir, "full.jsonl", from_o, to_o, "are the same", "two options the same");
    char *ca = strstr(oa, "\"Correct_Answer\":\"");
    CHECK(ca);
    char letter = ca[strlen("\"Correct_Answer\":\"")];
    char from_c[32], to_c[32];
    snprintf(from_c, sizeof from_c, "\"Correct_Answer\":\"%c\"", letter);
    snprintf(to_c, sizeof to_c, "\"Correct_Answer\":\"%c\"", letter == 'A' ? 'B' : 'A');
    expect_field_refused(dir, "full.jsonl", from_c, to_c, "is not the person's", "a correct option not the person's value");
    free(from_o); free(to_o); free(fl);
    /* a person's profile line twice */
    size_t n;
    char *full = read_all(dir, "full.jsonl", &n), *nl = strchr(full, '\n');
    CHECK(nl);
    char *line = xasprintf("%.*s", (int)(nl + 1 - full), full), *twice = xasprintf("%s%s", line, line);
    expect_field_refused(dir, "full.jsonl", line, twice, "second line", "a profile line twice");
    expect_field_refused(dir, "full.jsonl", line, "", "has no line", "a person without a profile line");
    free(twice); free(line); free(full);
}

static void test_refusals(const char *base, const char *w1) {
    /* A corrupted copy of each kind of file. */
    char *dir = xasprintf("%s/bad", base);
    char *cmd = xasprintf("cp -r %s %s", w1, dir);
    CHECK(system(cmd) == 0);
    size_t n;
    char *people = read_all(dir, "people.jsonl", &n);
    people[n / 2] ^= 0x01;
    write_bytes(dir, "people.jsonl", people, n);
    expect_refused(dir, "people.jsonl", "flipped byte");
    people[n / 2] ^= 0x01;
    write_bytes(dir, "people.jsonl", people, n);
    free(people);
    write_bytes(dir, "world.json", "{\"format\": ", 11);
    expect_refused(dir, "world.json", "truncated world.json");
    char *src = xasprintf("%s/world.json", w1);
    size_t wn;
    char *wj = read_file(src, &wn);
    char *edit = strstr(wj, "I don't know.");            /* valid JSON, edited content */
    CHECK(edit);
    edit[2] = 'x';
    write_bytes(dir, "world.json", wj, wn);
    expect_refused(dir, "world.json", "edited world.json");
    edit[2] = 'd';
    write_bytes(dir, "world.json", wj, wn);
    free(wj); free(src);
    /* Record-level checks (behind the hashes): each refused with the file and line. */
    world_reseal(dir);
    TEST(same_file(w1, dir, "world.json") && same_file(w1, dir, "manifest.tsv"),
         "re-sealing an unchanged world changed world.json or manifest.tsv");
    int lines;
    char msg[1024];
    int rc = run_child(child_load, dir, &lines, msg, sizeof msg);
    TEST(rc == 0, "a re-sealed unchanged world is refused (exit %d): %s", rc, msg);
    expect_record_refused(dir, "people.jsonl", "\"occupation\":\"", "\"occupation\":\"x", "unknown value");
    expect_record_refused(dir, "train_ft.jsonl", "\"format\":\"mc\"", "\"format\":\"mcq\"", "unknown format");
    expect_record_refused(dir, "train_pt.jsonl", "\"distractors\":[", "\"distractors\":[\"x\"],\"y\":[", "few distractors");
    expect_record_refused(dir, "full.jsonl", "\"Correct_Answer\":\"", "\"Correct_Answer\":\"E\",\"z\":\"", "bad letter");
    expect_record_refused(dir, "test.jsonl", "\"Image\":\"images/", "\"Image\":\"images/nope", "unknown image");
    expect_record_refused(dir, "splits/forget_5.json", "[", "[999,", "unknown ID");
    expect_record_refused(dir, "celebrity.jsonl", "\"Mask_Task\":[", "\"Mask_Task\":7,\"w\":[", "wrong type");
    test_option_answers_refused(dir);
    test_structure_refused(dir);
    /* mc_context: without an attribute; a stem that does not state the correct value. */
    expect_record_refused(dir, "train_pt.jsonl", "\"format\":\"mc_context\",\"attribute\":\"",
                          "\"format\":\"mc_context\",\"attribute\":null,\"x\":\"", "mc_context without attribute");
    char *pt = read_all(dir, "train_pt.jsonl", &n), *mc = strstr(pt, "\"format\":\"mc_context\"");
    char *qs = mc ? strstr(mc, "\"question\":\"") : NULL, *qe = qs ? strchr(qs + 12, '"') : NULL;
    TEST(qe != NULL, "train_pt.jsonl has no mc_context question");
    if (qe) {
        char *from = xasprintf("%.*s", (int)(qe + 1 - qs), qs);
        expect_record_refused(dir, "train_pt.jsonl", from, "\"question\":\"What is it?\"", "mc_context stem without its value");
        free(from);
    }
    free(pt);
    test_mc_context_old_world(dir);
    char *gb = xasprintf("%s/genbench.jsonl", dir);
    CHECK(remove(gb) == 0);
    free(gb);
    expect_refused(dir, "genbench.jsonl", "missing file");
    expect_refused(base, "world", "not a world");
    /* pulse data refuses to overwrite a directory that is not a world. */
    char *other = xasprintf("%s/other", base);
    CHECK(mkdir(other, 0777) == 0);
    write_bytes(other, "precious.txt", "keep me\n", 8);
    GenArgs ga = {other, NULL};
    rc = run_child(child_generate, &ga, &lines, msg, sizeof msg);
    TEST(rc == 2 && lines == 1 && strstr(msg, "refusing"), "overwrote a non-world directory (exit %d): %s", rc, msg);
    char *kept = xasprintf("%s/precious.txt", other);
    TEST(file_exists(kept), "the non-world directory was touched");
    rc = run_child(child_cmd_unknown_preset, NULL, &lines, msg, sizeof msg);
    TEST(rc == 2 && lines == 1, "unknown preset: exit %d: %s", rc, msg);
    free(kept); free(other); free(cmd); free(dir);
}

/* The small world's vocabulary holds every value a multiple-choice question asks about a
 * person (and every birthplace's country) as one token: the letter skill needs it
 * (docs/training.md, "Letter multiple choice"); at 1,024 tokens 42 of these 122 (values of
 * the asked attributes, then each birthplace's country) were 2-7 tokens: " actor",
 * " Berlin", " Germany". */
static void test_small_values_one_token(const char *base) {
    char *dir = xasprintf("%s/small", base);
    const Preset *small = preset_find("small");
    CHECK(small);
    data_generate(small, 1, raw_dir(), dir);
    World *w = world_load(dir);
    char *tp = xasprintf("%s/tokenizer.json", dir);
    Tokenizer *tok = tok_load(tp);
    int n = 0, multi = 0, ids[16], birth = -1;
    char text[128], first[128] = "";
    for (int a = 0; a < DATA_MAX_ATTRS; a++)
        if (w->attrs[a].name && !strcmp(w->attrs[a].name, "birthplace")) birth = a;
    TEST(birth >= 0 && birth < w->n_attrs, "birthplace is not an asked attribute (%d)", birth);
    for (int a = 0; a <= w->n_attrs && birth >= 0; a++) {
        const Attribute *at = &w->attrs[a < w->n_attrs ? a : birth];
        for (int v = 0; v < at->n_values; v++) {
            const char *val = a < w->n_attrs ? at->values[v] : w->countries[v];
            snprintf(text, sizeof text, " %s", val);
            int k = tok_encode(tok, text, ids, 16);
            n++;
            if (k != 1 && multi++ == 0) snprintf(first, sizeof first, "\"%s\" is %d tokens", val, k);
        }
    }
    TEST(n > 100 && multi == 0, "%d of %d attribute values and countries are several tokens (%s)", multi, n, first);
    tok_free(tok);
    world_free(w);
    free(tp); free(dir);
}

int main(void) {
    char base[] = "/tmp/pulse-test-data-XXXXXX";
    CHECK(mkdtemp(base));
    char *w1 = xasprintf("%s/w1", base), *w2 = xasprintf("%s/w2", base), *w3 = xasprintf("%s/w3", base);
    char *w0 = xasprintf("%s/w0", base), *wm = xasprintf("%s/wm", base);
    const Preset *tiny = preset_find("tiny");
    CHECK(tiny);
    /* stderr summaries of data_generate are expected; keep the test output to the results. */
    fflush(stderr);
    data_generate(tiny, 1, raw_dir(), w1);
    data_generate(tiny, 1, raw_dir(), w2);
    data_generate(tiny, 2, raw_dir(), w3);
    data_generate(tiny, 1, raw_dir(), w2);      /* replacing an existing world */
    Preset no_faces = *tiny, no_mc = *tiny, lookup = *tiny;
    no_faces.n_faces_desc = no_faces.n_mc_context = 0;
    data_generate(&no_faces, 1, raw_dir(), w0);
    no_mc.n_mc_context = 0;
    data_generate(&no_mc, 1, raw_dir(), wm);
    lookup.scene_lookup = 1;
    char *wl = xasprintf("%s/wl", base);
    data_generate(&lookup, 1, raw_dir(), wl);
    test_determinism(w1, w2, w3);
    test_face_desc_independent(w1, w0);
    test_feature_independent(w1, wm, "mc_context", "in-context MC");
    test_scene_lookup(w1, wl);
    free(wl);

    World *w = world_load(w1);
    TEST(w->seed == 1 && !strcmp(w->preset.name, "tiny") && w->n_attrs == tiny->n_attrs, "world.json fields");
    test_people(w);
    test_splits(w);
    test_training_coverage(w);
    test_eval_never_trained(w, w1);
    test_eval_items(w);
    test_option_answers(w);
    test_render_and_pixels(w);
    test_face_desc(w);
    test_mc_context(w);
    world_free(w);
    test_refusals(base, w1);
    test_faces_raw_refused(base);
    test_special_raw_refused(base);
    test_small_values_one_token(base);

    char *cmd = xasprintf("rm -rf %s", base);
    CHECK(system(cmd) == 0);
    free(cmd); free(w1); free(w2); free(w3); free(w0); free(wm);
    return test_summary();
}
