/* tests/test_eval.c: the evaluation driver's glue.
 *
 * 1. The multiple-choice rule on odd outputs (" a", "(B)", "", "E", the "ASSISTANT:"
 *    marker, Unicode spaces) and the early stop: on random strings, the letter of the
 *    first decided prefix is always the letter of the whole string.
 * 2. End to end on the tiny world (generated into a temporary directory) with a small
 *    random model: results.json structure (every set x task x modality aggregate present
 *    with n > 0, values in range), predictions.jsonl lines (one per item, fields per task),
 *    the aggregates recomputed from the predictions, mc_likelihood's option scores against
 *    model_score of the option answer sentences, the oracle sections against itself
 *    (identical truth ratios: KS p = 1, PrivLeak = 0), celebrity groups, seeded few-shot,
 *    light mode and per-person accuracy.
 * Fixed seeds, small shapes, no timing assertions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../checkpoint.h"
#include "../common.h"
#include "../data.h"
#include "../eval.h"
#include "../io.h"
#include "../metrics.h"
#include "../model.h"
#include "../tokenizer.h"
#include "test.h"

/* ----------------------------------------------------------------------------
 * 1. The letter rule and the early stop */

static char letter_of(const char *generated) {
    char *r = eval_response(generated, 0);
    char l = mc_letter(r, "ABCD");
    free(r);
    return l;
}

static void test_letter_rule(void) {
    TEST(letter_of(" a") == 'A', "\" a\" -> A");
    TEST(letter_of("(B)") == 0, "\"(B)\" -> none");
    TEST(letter_of("") == 0, "\"\" -> none");
    TEST(letter_of("E") == 0, "\"E\" is not an option");
    TEST(letter_of("b. Paris") == 'B', "\"b. Paris\" -> B");
    TEST(letter_of("\n\tC") == 'C', "leading newline and tab are stripped");
    TEST(letter_of("\xC2\xA0" "D") == 'D', "a no-break space is Python whitespace");
    TEST(letter_of(" ASSISTANT: B") == 0, "the marker cuts the response to nothing");
    TEST(letter_of("A ASSISTANT: B") == 'A', "text before a second marker counts");

    TEST(!eval_mc_decided("", 0), "nothing yet");
    TEST(!eval_mc_decided("  \n", 3), "only spaces");
    TEST(eval_mc_decided(" a", 2), "' a' decided");
    TEST(eval_mc_decided("(", 1), "'(' decided");
    TEST(eval_mc_decided("E", 1), "'E' decided");
    TEST(!eval_mc_decided("A", 1), "'A' may start the marker");
    TEST(!eval_mc_decided(" ASSIST", 7), "marker prefix undecided");
    TEST(eval_mc_decided("AB", 2), "'AB' is not the marker");
    TEST(eval_mc_decided("ASSISTANT:", 10), "the full marker decides (no letter)");
    TEST(!eval_mc_decided("\xC2", 1), "incomplete UTF-8 character");
    TEST(!eval_mc_decided("\xC2\xA0", 2), "a no-break space is still whitespace");
    TEST(eval_mc_decided("\xC2\xA0" "B", 3), "letter after a no-break space");

    /* Property: stopping at the first decided prefix never changes the letter. */
    static const char *const pieces[] = {" ", "\n", "A", "S", "I", "T", "N", ":", "B", "b", "(", "x",
                                         "\xC2", "\xA0", "ASSISTANT:", "ASSIS", "c"};
    int np = (int)(sizeof pieces / sizeof pieces[0]), bad = 0;
    Rng r;
    rng_seed(&r, 7);
    for (int trial = 0; trial < 4000; trial++) {
        char s[128];
        size_t n = 0;
        int k = 1 + (int)rng_below(&r, 8);
        for (int i = 0; i < k; i++) {
            const char *p = pieces[rng_below(&r, (uint32_t)np)];
            size_t l = strlen(p);
            memcpy(s + n, p, l);
            n += l;
        }
        s[n] = 0;
        char full = letter_of(s);
        for (size_t m = 0; m <= n; m++) {
            if (!eval_mc_decided(s, m)) continue;
            char pre[128];
            memcpy(pre, s, m);
            pre[m] = 0;
            if (letter_of(pre) != full) bad++;
            break;
        }
    }
    TEST(bad == 0, "early stop changed the letter in %d of 4000 random strings", bad);
}

static void test_parsing(void) {
    unsigned s = eval_parse_sets("forget,holdout");
    TEST(s == (EVAL_SET_BIT(EVAL_SET_FORGET) | EVAL_SET_BIT(EVAL_SET_HOLDOUT)), "sets mask %x", s);
    TEST(eval_parse_sets("all") == EVAL_SETS_ALL, "all sets");
    TEST(eval_parse_tasks("light") == EVAL_TASKS_LIGHT, "light tasks");
    TEST(eval_parse_tasks("gen,prob") == (EVAL_GEN | EVAL_PROB), "gen,prob");
    TEST(strcmp(eval_set_name(EVAL_SET_CELEB_RETAIN), "celebrity_retain") == 0, "set name");
}

/* ----------------------------------------------------------------------------
 * 2. End to end */

static const char *const person_metrics[] = {
    "mc", "mc_likelihood", "cloze", "rouge1", "rouge2", "rougeL", "rougeL_recall", "bleu",
    "nll", "prob", "prob_options", "truth_ratio", "exact_memorization", "extraction_strength"};
static const char *const mods[] = {"image_text", "text_only", "all"};

static const Json *path3(const Json *j, const char *a, const char *b, const char *c) {
    j = j ? json_get(j, a) : NULL;
    j = j ? json_get(j, b) : NULL;
    return j ? json_get(j, c) : NULL;
}

static double agg_val(const Json *res, const char *set, const char *metric, const char *mod, long *n) {
    const Json *a = path3(json_get(res, "sets"), set, metric, mod);
    *n = a ? (long)json_get_number(a, "n", 0, "t") : 0;
    return a ? json_get_number(a, "value", NAN, "t") : NAN;
}

/* Every aggregate a full evaluation must have, with n > 0 and a value in range. */
static void check_structure(const Json *res, int with_groups) {
    TEST(strcmp(json_get_string(res, "format", "", "t"), "pulse-eval") == 0, "format");
    TEST(json_get(res, "model") && json_get(res, "world") && json_get(res, "settings"), "model/world/settings");
    const char *sets[] = {"forget", "test", "retain", "celebrity", "holdout", "celebrity_forget", "celebrity_retain"};
    int nsets = with_groups ? 7 : 5, missing = 0, range = 0;
    for (int s = 0; s < nsets; s++)
        for (int k = 0; k < (int)(sizeof person_metrics / sizeof *person_metrics); k++)
            for (int m = 0; m < 3; m++) {
                long n;
                double v = agg_val(res, sets[s], person_metrics[k], mods[m], &n);
                if (n <= 0 || !isfinite(v)) {
                    if (missing++ < 5) printf("  missing %s.%s.%s\n", sets[s], person_metrics[k], mods[m]);
                    continue;
                }
                int pct = k < 3;
                if (v < 0 || v > (pct ? 100.0 : k == 8 ? 1e9 : 1.0 + 1e-12)) range++;
            }
    TEST(missing == 0, "%d person aggregates missing or n == 0", missing);
    TEST(range == 0, "%d aggregates out of range", range);
    for (int k = 0; k < 2; k++)
        for (int m = 0; m < 3; m++) {
            long n;
            double v = agg_val(res, "genbench", person_metrics[k], mods[m], &n);
            TEST(n > 0 && v >= 0 && v <= 100, "genbench %s %s: n %ld value %g", person_metrics[k], mods[m], n, v);
        }
    long n;
    agg_val(res, "genbench", "cloze", "all", &n);
    TEST(n == 0, "genbench has no cloze items");
    static const char *const mia[] = {"loss", "min_k", "min_k_pp"};
    for (int q = 0; q < 3; q++)
        for (int m = 0; m < 3; m++) {
            const Json *a = path3(res, "mia", mia[q], mods[m]);
            double auc = a ? json_get_number(a, "auc", NAN, "t") : NAN;
            TEST(auc >= 0 && auc <= 1, "mia %s %s auc %g", mia[q], mods[m], auc);
        }
    const Json *pf = path3(res, "per_item", "forget", "keys");
    long nf;
    agg_val(res, "forget", "truth_ratio", "all", &nf);
    TEST(pf && (long)pf->len == nf, "per_item.forget.keys has one key per forget QA item");
    TEST(path3(res, "per_item", "holdout", "min_k_pp") != NULL, "per_item.holdout.min_k_pp");
}

typedef struct Sum { double s; long n; } Sum;

/* Recomputes mc, cloze, rougeL, nll and the truth ratio mean per set and modality from
 * predictions.jsonl and compares them with results.json. */
static void check_predictions(const char *dir, const Json *res, long items, int max_new) {
    char *p = xasprintf("%s/predictions.jsonl", dir);
    size_t len;
    char *text = read_file(p, &len);
    free(p);
    static const char *const sets[] = {"forget", "test", "retain", "celebrity", "genbench", "holdout",
                                       "celebrity_forget", "celebrity_retain"};
    static const char *const fields[] = {"mc", "cloze", "rougeL", "nll", "truth_ratio"};
    Sum acc[8][5][3];
    memset(acc, 0, sizeof acc);
    long lines = 0, bad = 0, bad_letter = 0, too_long = 0;
    char *line = text;
    while (*line) {
        char *nl = strchr(line, '\n');
        if (!nl) { bad++; break; }
        char err[128];
        Json *j = json_parse(line, (size_t)(nl - line), err, sizeof err);
        line = nl + 1;
        lines++;
        if (!j) { bad++; continue; }
        const char *task = json_get_string(j, "task", "", "t"), *mod = json_get_string(j, "modality", "", "t");
        const Json *jsets = json_get(j, "sets");
        if (!json_get(j, "set") || !jsets || !json_get(j, "prompt") || !json_get(j, "answer") ||
            !json_get(j, "person")) { bad++; json_free(j); continue; }
        int md = strcmp(mod, "image_text") == 0 ? 0 : strcmp(mod, "text_only") == 0 ? 1 : -1;
        if (md < 0) bad++;
        double v[5] = {NAN, NAN, NAN, NAN, NAN};
        if (strcmp(task, "mc") == 0) {
            const char *gen = json_get_string(j, "generated", NULL, "t");
            const Json *pred = json_get(j, "pred");
            if (!gen || !pred || !json_get(j, "mc_likelihood")) bad++;
            else {
                char l = letter_of(gen), want = pred->type == JSON_STRING ? pred->string[0] : 0;
                if (l != want) bad_letter++;
            }
            v[0] = json_get_number(j, "correct", NAN, "t") * 100;
        } else if (strcmp(task, "cloze") == 0) {
            v[1] = json_get_number(j, "correct", NAN, "t") * 100;
        } else if (strcmp(task, "gen") == 0) {
            v[2] = json_get_number(j, "rougeL", NAN, "t");
        } else if (strcmp(task, "qa") == 0) {
            v[3] = json_get_number(j, "nll", NAN, "t");
            v[4] = json_get_number(j, "truth_ratio", NAN, "t");
        } else bad++;
        if (json_get(j, "n_generated") && json_get_number(j, "n_generated", 0, "t") > max_new) too_long++;
        for (size_t s = 0; s < jsets->len && md >= 0; s++)
            for (int k = 0; k < 8; k++)
                if (strcmp(jsets->items[s]->string, sets[k]) == 0)
                    for (int f = 0; f < 5; f++)
                        if (!isnan(v[f])) {
                            acc[k][f][md].s += v[f]; acc[k][f][md].n++;
                            acc[k][f][2].s += v[f]; acc[k][f][2].n++;
                        }
        json_free(j);
    }
    free(text);
    TEST(lines == items, "predictions.jsonl has %ld lines for %ld items", lines, items);
    TEST(bad == 0, "%ld malformed prediction lines", bad);
    TEST(bad_letter == 0, "%ld MC lines whose pred is not the letter of their generated text", bad_letter);
    TEST(too_long == 0, "%ld generations longer than max_new", too_long);
    int mismatch = 0, compared = 0;
    for (int k = 0; k < 8; k++)
        for (int f = 0; f < 5; f++)
            for (int m = 0; m < 3; m++) {
                long n;
                double want = agg_val(res, sets[k], fields[f], mods[m], &n);
                if (f == 4) {                       /* truth ratio: compare the raw mean */
                    const Json *a = path3(json_get(res, "sets"), sets[k], "truth_ratio", mods[m]);
                    want = a ? json_get_number(a, "mean", NAN, "t") : NAN;
                }
                if (acc[k][f][m].n != n) { if (mismatch++ < 5) printf("  n %s.%s.%s: %ld vs %ld\n", sets[k], fields[f], mods[m], acc[k][f][m].n, n); continue; }
                if (n == 0) continue;
                double got = acc[k][f][m].s / acc[k][f][m].n;
                compared++;
                if (fabs(got - want) > 1e-9 * (1 + fabs(want))) {
                    if (mismatch++ < 5) printf("  %s.%s.%s: %.17g vs %.17g\n", sets[k], fields[f], mods[m], got, want);
                }
            }
    TEST(mismatch == 0, "%d aggregates differ from the predictions", mismatch);
    TEST(compared > 60, "only %d aggregates compared", compared);
}

/* Mean log-prob per token of answer as the reply to question (no EOS), by model_score. */
static double mean_logp(Model *m, const Tokenizer *tok, const World *w, const EvalItem *e, const char *answer) {
    int ids[512], start = 0;
    int n = tok_encode_chat(tok, e->question, e->image >= 0, answer, ids, 512, &start);
    CHECK(n > start + 1);
    float *pix = NULL;
    if (e->image >= 0) {
        pix = xmalloc(3 * DATA_IMAGE_SIZE * DATA_IMAGE_SIZE * sizeof *pix);
        world_image_pixels(w, e->image, NULL, pix);
    }
    ScoreItem it = {ids, n - 1, start, pix};        /* </s> dropped */
    ScoreResult r;
    model_score(m, &it, 1, 0, &r);
    double v = r.sum / r.n;
    score_result_free(&r);
    free(pix);
    return v;
}

/* mc_likelihood's option_ll in predictions.jsonl: a person item's options are scored as
 * their answer sentences (Option_Answers), genbench's as the bare option text. Checked
 * against model_score on the first `limit` person MC lines and every genbench line. */
static void check_option_ll(const char *dir, Model *m, const Tokenizer *tok, const World *w, int limit) {
    char *p = xasprintf("%s/predictions.jsonl", dir);
    size_t len;
    char *text = read_file(p, &len);
    free(p);
    int n_person = 0, n_gb = 0, unmatched = 0, mismatch = 0, differs = 0;
    for (char *line = text, *nl; *line && (nl = strchr(line, '\n')); line = nl + 1) {
        char err[128];
        Json *j = json_parse(line, (size_t)(nl - line), err, sizeof err);
        CHECK(j);
        const Json *ll = json_get(json_get(j, "mc_likelihood"), "option_ll");
        const Json *jp = json_get(j, "person");
        int pid = jp && jp->type == JSON_NUMBER ? (int)jp->number : -1;
        if (!ll || (pid >= 0 && n_person >= limit)) { json_free(j); continue; }
        const char *prompt = json_get_string(j, "prompt", "", "t");
        const EvalItem *e = NULL;
        for (int i = 0; i < w->n_eval && !e; i++) {
            const EvalItem *x = &w->eval[i];
            if (x->task == TASK_MC && strcmp(x->prompt, prompt) == 0 &&
                (pid < 0 ? x->person < 0 : x->person >= 0 && w->people[x->person].id == pid))
                e = x;
        }
        if (!e || (int)ll->len != e->n_options) { unmatched++; json_free(j); continue; }
        if (pid >= 0) n_person++; else n_gb++;
        for (int k = 0; k < e->n_options; k++) {
            double want = mean_logp(m, tok, w, e, pid >= 0 ? e->option_answers[k] : e->options[k]);
            double got = ll->items[k]->number;
            mismatch += !(fabs(got - want) <= 1e-4 * (1 + fabs(want)));
            if (pid >= 0) differs += fabs(mean_logp(m, tok, w, e, e->options[k]) - want) > 1e-3;
        }
        json_free(j);
    }
    free(text);
    TEST(n_person == limit && n_gb > 0 && unmatched == 0, "option_ll: %d person and %d genbench MC lines, %d unmatched",
         n_person, n_gb, unmatched);
    TEST(mismatch == 0, "%d option_ll values differ from the option answer scored by model_score", mismatch);
    TEST(differs > 0, "person options scored as the bare option text");
}

/* A small random LLaVA that reads the world's 32x32 images and 512-id tokenizer. */
static Model *small_model(void) {
    LlavaConfig c = config_default();
    c.hidden_size = 32; c.intermediate_size = 64; c.num_hidden_layers = 2;
    c.num_attention_heads = 2; c.num_key_value_heads = 2;
    c.v_hidden_size = 16; c.v_intermediate_size = 32; c.v_num_hidden_layers = 1; c.v_num_attention_heads = 2;
    c.initializer_range = 0.1;
    Model *m = model_new(&c);
    model_init(m, 5);
    return m;
}

static void test_end_to_end(void) {
    char tmp[] = "/tmp/pulse-test-eval-XXXXXX";
    CHECK(mkdtemp(tmp));
    char *wd = xasprintf("%s/world", tmp), *out1 = xasprintf("%s/e1", tmp), *out2 = xasprintf("%s/e2", tmp);
    data_generate(preset_find("tiny"), 3, "data", wd);
    World *w = world_load(wd);
    char *tp = xasprintf("%s/tokenizer.json", wd);
    Tokenizer *tok = tok_load(tp);
    free(tp);
    Model *m = small_model();

    /* full evaluation with the celebrity groups */
    int nc;
    int *celeb = world_people_of_kind(w, KIND_CELEBRITY, &nc);
    CHECK(nc >= 6);
    EvalOptions o = eval_options_default();
    o.max_new = 8;
    o.celeb_forget = celeb; o.n_celeb_forget = 3;
    o.celeb_retain = celeb + 3; o.n_celeb_retain = 3;
    o.out_dir = out1;
    o.quiet = 1;
    EvalStats st;
    Json *r1 = eval_run(m, tok, w, &o, &st);
    check_structure(r1, 1);
    long n;
    agg_val(r1, "celebrity", "mc", "all", &n);
    long nf, nr;
    agg_val(r1, "celebrity_forget", "mc", "all", &nf);
    agg_val(r1, "celebrity_retain", "mc", "all", &nr);
    TEST(nf > 0 && nf + nr == n, "celebrity = its two groups: %ld + %ld vs %ld", nf, nr, n);
    TEST(st.items > 0 && st.gen_tokens > 0 && st.score_sequences > 0, "stats filled");
    check_predictions(out1, r1, st.items, o.max_new);
    check_option_ll(out1, m, tok, w, 24);
    char *rp = xasprintf("%s/results.json", out1);
    Json *onfile = json_load(rp);
    char *a = json_dump(onfile, 0), *b = json_dump(r1, 0);
    TEST(strcmp(a, b) == 0, "results.json on file == the returned DOM");
    free(a); free(b);
    json_free(onfile);
    free(rp);
    rp = xasprintf("%s/timing.json", out1);
    TEST(file_exists(rp), "timing.json written");
    free(rp);

    /* the same model against itself as the oracle: identical truth ratios and AUCs */
    EvalOptions o2 = o;
    o2.out_dir = out2;
    o2.oracle = r1;
    o2.oracle_path = out1;
    Json *r2 = eval_run(m, tok, w, &o2, NULL);
    const Json *fq = path3(r2, "forget_quality", "forget", "all");
    TEST(fq && json_get_number(fq, "value", -1, "t") == 1.0, "forget quality vs itself = 1");
    TEST(fq && json_get_number(fq, "n", 0, "t") > 0, "forget quality n");
    TEST(path3(r2, "forget_quality", "test", "image_text") != NULL, "forget quality on the test set");
    int pl_ok = 1;
    static const char *const mia[] = {"loss", "min_k", "min_k_pp"};
    for (int q = 0; q < 3; q++)
        for (int md = 0; md < 3; md++) {
            const Json *p = path3(r2, "privleak", mia[q], mods[md]);
            if (!p || fabs(json_get_number(p, "value", NAN, "t")) > 1e-9) pl_ok = 0;
        }
    TEST(pl_ok, "privleak vs itself = 0 for every score and modality");
    a = json_dump(json_get(r1, "sets"), 0);
    b = json_dump(json_get(r2, "sets"), 0);
    TEST(strcmp(a, b) == 0, "same model, same options: identical aggregates");
    free(a); free(b);
    json_free(r2);

    /* light mode, seeded few-shot */
    EvalOptions o3 = eval_options_default();
    o3.max_new = 4;
    o3.tasks = EVAL_MC | EVAL_CLOZE;
    o3.sets = EVAL_SET_BIT(EVAL_SET_FORGET) | EVAL_SET_BIT(EVAL_SET_HOLDOUT);
    o3.few_shot = 2; o3.seed = 9; o3.quiet = 1;
    Json *r3 = eval_run(m, tok, w, &o3, NULL);
    long h0, h1, f0, f1;
    agg_val(r1, "holdout", "mc", "text_only", &h0);
    agg_val(r3, "holdout", "mc", "text_only", &h1);
    agg_val(r1, "forget", "cloze", "all", &f0);
    agg_val(r3, "forget", "cloze", "all", &f1);
    TEST(h1 == h0 - 2, "few-shot examples leave the holdout scores: %ld vs %ld", h1, h0);
    TEST(f1 == f0, "forget keeps every item under few-shot: %ld vs %ld", f1, f0);
    agg_val(r3, "forget", "rougeL", "all", &n);
    TEST(n == 0 && !json_get(r3, "mia"), "light mode computes no generation metrics or MIA");
    TEST(json_get_number(json_get(r3, "settings"), "few_shot", 0, "t") == 2, "few-shot recorded");
    json_free(r3);

    /* shared-prompt scoring == full-forward scoring (model_score), item by item */
    EvalOptions o4 = eval_options_default();
    o4.tasks = EVAL_MC_LIKELIHOOD | EVAL_PROB;
    o4.sets = EVAL_SET_BIT(EVAL_SET_FORGET) | EVAL_SET_BIT(EVAL_SET_HOLDOUT) | EVAL_SET_BIT(EVAL_SET_GENBENCH);
    o4.quiet = 1;
    Json *rs = eval_run(m, tok, w, &o4, NULL);
    o4.exact_scoring = 1;
    Json *rx = eval_run(m, tok, w, &o4, NULL);
    static const char *const arrays[] = {"truth_ratio", "loss", "min_k", "min_k_pp"};
    double worst = 0;
    long compared = 0;
    for (int s = 0; s < 2; s++)
        for (int q = 0; q < 4; q++) {
            const Json *x = path3(rs, "per_item", s ? "holdout" : "forget", arrays[q]);
            const Json *y = path3(rx, "per_item", s ? "holdout" : "forget", arrays[q]);
            if (!x || !y || x->len != y->len) { worst = INFINITY; continue; }
            for (size_t i = 0; i < x->len; i++, compared++) {
                double d = fabs(x->items[i]->number - y->items[i]->number) / (1 + fabs(y->items[i]->number));
                if (d > worst) worst = d;
            }
        }
    TEST(compared > 100 && worst < 1e-5, "shared vs exact scoring: %ld values, worst relative difference %g",
         compared, worst);
    long n1, n2;
    double v1 = agg_val(rs, "genbench", "mc_likelihood", "all", &n1), v2 = agg_val(rx, "genbench", "mc_likelihood", "all", &n2);
    TEST(n1 == n2 && n1 > 0 && fabs(v1 - v2) <= 100.0 * 2 / n1, "mc_likelihood shared %g vs exact %g", v1, v2);
    json_free(rs);
    json_free(rx);

    /* the command: checkpoint + (zero) LoRA adapter on disk, the oracle from the first run */
    char *ck = xasprintf("%s/ck", tmp), *ad = xasprintf("%s/ad", tmp), *out3 = xasprintf("%s/e3", tmp);
    Provenance prov = {"test", "tiny", 5, "0123456789abcdef", 0};
    Preproc pre = preproc_default(&m->cfg);
    ckpt_save(ck, m, tok, &pre, &prov);
    LoraConfig lc = {4, 8.0f, 0.0f, "llm", 1};
    lora_attach(m, &lc);                            /* B = 0: the same function as the base */
    adapter_save(ad, m, ck, &prov);
    lora_detach(m);
    char *argv[] = {"--data", wd, "--model", ck, "--adapter", ad, "--out", out3, "--sets", "forget,holdout",
                    "--tasks", "mc,prob", "--max-new", "4", "--oracle", out1, "--quiet"};
    fflush(stdout);
    int rc = cmd_eval((int)(sizeof argv / sizeof *argv), argv);
    TEST(rc == 0, "pulse eval exit status %d", rc);
    char *r3p = xasprintf("%s/results.json", out3);
    Json *r4 = eval_load_results(r3p);
    const Json *jm = json_get(r4, "model");
    TEST(strcmp(json_get_string(jm, "path", "", "t"), ck) == 0, "model path recorded");
    TEST(strcmp(json_get_string(json_get(jm, "provenance"), "stage", "", "t"), "test") == 0, "provenance from config.json");
    TEST(strcmp(json_get_string(jm, "adapter", "", "t"), ad) == 0 && json_get_bool(jm, "lora_attached", 0, "t"),
         "adapter recorded and attached");
    const Json *fq4 = path3(r4, "forget_quality", "forget", "all");
    TEST(fq4 && json_get_number(fq4, "value", 0, "t") > 0.99, "zero adapter vs its base as oracle: p %g",
         fq4 ? json_get_number(fq4, "value", 0, "t") : -1);
    agg_val(r4, "forget", "cloze", "all", &n);
    TEST(n == 0 && path3(r4, "sets", "forget", "mc") != NULL, "--tasks mc,prob: mc but no cloze");
    json_free(r4);
    free(r3p); free(ck); free(ad); free(out3);

    /* per-person accuracy: in range, deterministic */
    const Split *sp = world_split(w, "celebrity");
    double acc1[16], acc2[16];
    int k = sp->n < 16 ? sp->n : 16;
    eval_person_accuracy(m, tok, w, sp->people, k, EVAL_MC | EVAL_CLOZE, 4, acc1);
    eval_person_accuracy(m, tok, w, sp->people, k, EVAL_MC | EVAL_CLOZE, 4, acc2);
    int ok = 1;
    for (int i = 0; i < k; i++) ok &= acc1[i] >= 0 && acc1[i] <= 100 && acc1[i] == acc2[i];
    TEST(ok, "per-person accuracy in [0, 100] and deterministic");

    json_free(r1);
    free(celeb);
    model_free(m);
    tok_free(tok);
    world_free(w);
    remove_tree(tmp);
    free(wd); free(out1); free(out2);
}

int main(void) {
    test_letter_rule();
    test_parsing();
    test_end_to_end();
    return test_summary();
}
