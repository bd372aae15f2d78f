/* tests/test_report.c: the report's building blocks (report.h) on synthetic numbers.
 *
 * - Text, number formatting and CSV escaping (RFC 4180) on the awkward cases.
 * - Markdown tables: padding, alignment colons, escaped pipes, short rows.
 * - SVG: nice ticks; the line and pair plots are well-formed XML (a small tag-balance
 *   checker), escape their labels, break lines at NaN and draw the dashed references.
 * - Findings: each verdict (reproduced, not reproduced, mixed, inconclusive) of both
 *   findings from hand-made numbers, including the no-forgetting special cases.
 * - report_write on a synthetic run directory: the sections of report.md, the CSV header
 *   and row count, the JSON keys, the plots, and byte-identical output on a second call.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "io.h"
#include "report.h"
#include "tests/test.h"

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* needle occurs in the line that starts at `line` (its newline included) */
static int in_line(const char *line, const char *needle) {
    const char *hit = line ? strstr(line, needle) : NULL, *end = line ? strchr(line, '\n') : NULL;
    return hit && (!end || hit <= end);
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* Minimal XML well-formedness: one root, every start tag closed in order, attribute
 * values quoted, no raw '<' or '&' in text. Returns 1 when well-formed. */
static int xml_ok(const char *s) {
    char stack[64][32];
    int depth = 0, roots = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '&') {
            if (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) && strncmp(p, "&quot;", 6) &&
                strncmp(p, "&apos;", 6))
                return 0;
            continue;
        }
        if (*p != '<') continue;
        if (p[1] == '?') { p = strstr(p, "?>"); if (!p) return 0; p++; continue; }
        const char *e = p + 1;
        int quote = 0;
        while (*e && (quote || *e != '>')) { if (*e == '"') quote = !quote; if (*e == '<' && !quote) return 0; e++; }
        if (!*e) return 0;
        if (p[1] == '/') {
            char name[32];
            int k = 0;
            for (const char *q = p + 2; q < e && k < 31 && *q != ' '; q++) name[k++] = *q;
            name[k] = 0;
            if (depth == 0 || strcmp(stack[depth - 1], name) != 0) return 0;
            depth--;
        } else if (e[-1] != '/') {
            if (depth == 0) roots++;
            if (depth == 64) return 0;
            int k = 0;
            for (const char *q = p + 1; q < e && k < 31 && *q != ' '; q++) stack[depth][k++] = *q;
            stack[depth][k] = 0;
            depth++;
        } else if (depth == 0) {
            roots++;
        }
        p = e;
    }
    return depth == 0 && roots == 1;
}

static void test_text_csv(void) {
    Text t = {0};
    TEST(strcmp(text_str(&t), "") == 0, "empty text is \"\"");
    text_printf(&t, "%d-%s", 42, "x");
    text_puts(&t, "!");
    TEST(strcmp(t.p, "42-x!") == 0 && t.n == 5, "text_printf + puts: '%s'", t.p);
    for (int i = 0; i < 1000; i++) text_puts(&t, "abcdefghij");
    TEST(t.n == 10005 && strlen(t.p) == 10005, "text grows: %zu", t.n);
    text_free(&t);

    char b[64];
    fmt_value(b, sizeof b, NAN, 1); TEST(strcmp(b, "-") == 0, "NaN -> '-': %s", b);
    fmt_value(b, sizeof b, -0.0, 1); TEST(strcmp(b, "0.0") == 0, "-0 -> 0.0: %s", b);
    fmt_value(b, sizeof b, -0.04, 1); TEST(strcmp(b, "0.0") == 0, "-0.04 -> 0.0: %s", b);
    fmt_value(b, sizeof b, -1.25, 1); TEST(strcmp(b, "-1.2") == 0 || strcmp(b, "-1.3") == 0, "-1.25: %s", b);
    fmt_value(b, sizeof b, 12.345, 2); TEST(strcmp(b, "12.35") == 0 || strcmp(b, "12.34") == 0, "12.345: %s", b);
    fmt_value(b, sizeof b, 100, 0); TEST(strcmp(b, "100") == 0, "100: %s", b);

    static const char *const in[] = {"plain", "a,b", "say \"hi\"", "two\nlines", " lead", "trail ", "", "cr\rx", "ok-ok"};
    static const char *const want[] = {"plain", "\"a,b\"", "\"say \"\"hi\"\"\"", "\"two\nlines\"", "\" lead\"",
                                       "\"trail \"", "", "\"cr\rx\"", "ok-ok"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        Text c = {0};
        csv_field(&c, in[i]);
        TEST(strcmp(text_str(&c), want[i]) == 0, "csv_field(%s) = %s, want %s", in[i], text_str(&c), want[i]);
        text_free(&c);
    }
}

static void test_md(void) {
    MdTable m;
    md_init(&m, 3, "lrc");
    md_cell(&m, "method"); md_cell(&m, "acc ↓"); md_cell(&m, "x"); md_end_row(&m);
    md_cell(&m, "ga"); md_num(&m, 12.345, 1); md_cell(&m, "a|b"); md_end_row(&m);
    md_cellf(&m, "%s-%d", "npo", 2); md_num(&m, NAN, 1); md_end_row(&m);   /* short row */
    Text t = {0};
    md_render(&m, &t);
    const char *s = text_str(&t);
    TEST(count_of(s, "\n") == 5, "header + separator + 2 rows + blank line: %d newlines\n%s", count_of(s, "\n"), s);
    TEST(contains(s, "| method | acc ↓ |  x   |\n"), "header padded (UTF-8 arrow is one column):\n%s", s);
    TEST(contains(s, "|:-------|------:|:----:|\n"), "separator with alignment colons:\n%s", s);
    TEST(contains(s, "| ga     |  12.3 | a\\|b |\n"), "right-aligned number, escaped pipe:\n%s", s);
    TEST(contains(s, "| npo-2  |     - |      |\n"), "NaN is '-', missing cell empty:\n%s", s);
    text_free(&t);
    md_free(&m);
}

static void test_ticks(void) {
    double tk[32];
    int n = nice_ticks(0, 100, 6, tk, 32);
    TEST(n == 6 && tk[0] == 0 && tk[5] == 100 && tk[1] == 20, "0..100: %d ticks, %g..%g step %g", n, tk[0], tk[n - 1], tk[1] - tk[0]);
    n = nice_ticks(0, 1, 5, tk, 32);
    TEST(n == 6 && tk[1] == 0.2 && tk[5] == 1, "0..1 target 5: %d ticks (%g)", n, n > 1 ? tk[1] : -1);
    n = nice_ticks(-3.2, 7.9, 6, tk, 32);
    TEST(n >= 4 && tk[0] >= -3.2 && tk[n - 1] <= 7.9 && fabs(tk[1] - tk[0] - 2) < 1e-12, "-3.2..7.9: %d ticks step %g", n, tk[1] - tk[0]);
    n = nice_ticks(0.1, 0.7, 7, tk, 32);
    int clean = 1;
    for (int i = 0; i < n; i++) clean &= fabs(tk[i] * 10 - round(tk[i] * 10)) < 1e-12;
    TEST(n == 7 && clean, "0.1..0.7 ticks on tenths: %d", n);
    n = nice_ticks(5, 5, 6, tk, 32);
    TEST(n == 1 && tk[0] == 5, "flat range: one tick");
}

static void test_svg(void) {
    double x[6] = {0, 1, 2, 3, 4, 5}, y1[6] = {90, 70, 50, NAN, 20, 10}, y2[6] = {90, 85, 80, 78, 75, 72};
    PlotSeries s[2] = {{"ga <&> \"x\"", 6, x, y1, 30.0}, {"npo", 6, x, y2, NAN}};
    PlotSpec sp = {"Title & more", "step", "accuracy %", 0, 5, 0, 100, 1, "dashed: batch"};
    Text t = {0};
    svg_line_plot(&t, &sp, s, 2);
    const char *v = text_str(&t);
    TEST(strncmp(v, "<?xml", 5) == 0 && contains(v, "<svg xmlns=\"http://www.w3.org/2000/svg\""), "SVG header");
    TEST(xml_ok(v), "line plot is well-formed XML");
    TEST(contains(v, "ga &lt;&amp;&gt; &quot;x&quot;") && contains(v, "Title &amp; more"), "labels escaped");
    TEST(count_of(v, "<polyline") == 3, "NaN breaks the first line: %d polylines", count_of(v, "<polyline"));
    TEST(count_of(v, "stroke-dasharray") == 2, "one dashed reference + legend: %d", count_of(v, "stroke-dasharray"));
    TEST(count_of(v, "<circle") == 11 + 2, "markers for 11 finite points + 2 legend: %d", count_of(v, "<circle"));
    TEST(contains(v, ">100</text>") && contains(v, ">5</text>"), "tick labels 100 and 5");
    Text t2 = {0};
    svg_line_plot(&t2, &sp, s, 2);
    TEST(strcmp(text_str(&t2), v) == 0, "deterministic bytes");
    text_free(&t2);
    text_free(&t);

    /* no data at all: still a valid plot */
    PlotSpec e = {"empty", "x", "y", 0, 0, 0, 0, 1, NULL};
    svg_line_plot(&t, &e, NULL, 0);
    TEST(xml_ok(text_str(&t)) && contains(text_str(&t), "no data"), "empty plot is valid and says so");
    text_free(&t);

    const char *names[3] = {"ga", "npo", "rmu"};
    double ax[3] = {40, 30, NAN}, ay[3] = {10, 5, NAN}, bx[3] = {20, 35, 10}, by[3] = {30, 60, NAN};
    PlotSpec ps = {"ft vs pt", "forget drop", "utility lost", 0, 0, 0, 0, 0, "y = x"};
    svg_pair_plot(&t, &ps, names, 3, ax, ay, bx, by, "finetuned", "pretrained");
    v = text_str(&t);
    TEST(xml_ok(v), "pair plot is well-formed XML");
    TEST(count_of(v, "<circle") == 2 + 1, "2 finetuned circles + legend: %d", count_of(v, "<circle"));
    TEST(count_of(v, "<rect") == 1 + 2 + 3 + 1, "background + 2 pretrained squares + 3 legend + legend: %d", count_of(v, "<rect"));
    TEST(contains(v, ">pretrained</text>") && contains(v, ">rmu</text>"), "legend names");
    text_free(&t);
    TEST(strcmp(plot_colour(0), plot_colour(8)) == 0 && strcmp(plot_colour(0), plot_colour(1)) != 0, "palette cycles");
}

static void test_finding1(void) {
    const char *m[3] = {"ga", "ga_klr", "npo"};
    Text t = {0};
    /* pretrained costs more utility per point forgotten for every method */
    Effect ft[3] = {{50, 10}, {40, 4}, {60, 6}}, pt[3] = {{50, 40}, {30, 20}, {55, 30}};
    Verdict v = finding_pretrained_harder(m, ft, pt, 3, &t);
    TEST(v == VERDICT_REPRODUCED, "all harder -> reproduced, got %s\n%s", verdict_name(v), text_str(&t));
    TEST(contains(text_str(&t), "`ga`") && contains(text_str(&t), "average over 3 methods"), "explains per method and average");
    text_free(&t);
    /* pretrained forgets nothing where finetuned forgets: also "harder" */
    Effect pt2[3] = {{1, 0}, {2, 1}, {0, 0}};
    v = finding_pretrained_harder(m, ft, pt2, 3, &t);
    TEST(v == VERDICT_REPRODUCED, "no pretrained forgetting -> reproduced, got %s", verdict_name(v));
    TEST(contains(text_str(&t), "n/a (no forgetting)"), "cost n/a when nothing is forgotten");
    text_free(&t);
    /* the reverse: pretrained is cheaper everywhere */
    Effect pt3[3] = {{50, 2}, {40, 1}, {60, 1}};
    v = finding_pretrained_harder(m, ft, pt3, 3, NULL);
    TEST(v == VERDICT_NOT_REPRODUCED, "cheaper -> not reproduced, got %s", verdict_name(v));
    /* one method each way */
    Effect pt4[3] = {{50, 40}, {40, 1}, {60, 1}};
    v = finding_pretrained_harder(m, ft, pt4, 3, NULL);
    TEST(v == VERDICT_MIXED, "split -> mixed, got %s", verdict_name(v));
    /* a method that does not forget in finetuned is undetermined (the premise fails), and
     * does not count; the average is over every measured method */
    Effect ft5[3] = {{1, 0}, {40, 4}, {60, 6}}, pt5[3] = {{30, 1}, {30, 20}, {55, 30}};
    v = finding_pretrained_harder(m, ft5, pt5, 3, &t);
    TEST(v == VERDICT_REPRODUCED, "undetermined + two harder -> reproduced, got %s", verdict_name(v));
    TEST(contains(text_str(&t), "premise does not hold (undetermined)"), "undetermined method explained:\n%s", text_str(&t));
    text_free(&t);
    /* the average can contradict even when no method does: a cheap pretrained method with
     * large drops outweighs */
    Effect ft6[2] = {{10, 1}, {10, 1}}, pt6[2] = {{1, 0}, {90, 1}};
    v = finding_pretrained_harder(m, ft6, pt6, 2, NULL);
    TEST(v == VERDICT_MIXED, "one supports, one contradicts -> mixed, got %s", verdict_name(v));
    /* nothing forgotten anywhere, or nothing measured */
    Effect z[3] = {{0, 0}, {1, 1}, {2, 0}};
    v = finding_pretrained_harder(m, z, z, 3, NULL);
    TEST(v == VERDICT_INCONCLUSIVE, "no forgetting -> inconclusive, got %s", verdict_name(v));
    v = finding_pretrained_harder(m, z, pt, 3, NULL);
    TEST(v == VERDICT_INCONCLUSIVE, "forgetting only in pretrained -> inconclusive, got %s", verdict_name(v));
    Effect nan3[3] = {{NAN, NAN}, {NAN, 1}, {2, NAN}};
    v = finding_pretrained_harder(m, nan3, ft, 3, &t);
    TEST(v == VERDICT_INCONCLUSIVE && contains(text_str(&t), "not measured"), "not measured -> inconclusive");
    text_free(&t);
    v = finding_pretrained_harder(m, ft, pt, 0, NULL);
    TEST(v == VERDICT_INCONCLUSIVE, "no methods -> inconclusive");
}

static void test_finding2(void) {
    const char *m[3] = {"ga", "ga_klr", "npo"};
    Text t = {0};
    SeqOutcome c[3] = {{10, 80, 90, 5, 20}, {20, 85, 90, 10, 25}, {5, 70, 90, 0, 30}};
    Verdict v = finding_sequential_collapse(m, c, 3, &t);
    TEST(v == VERDICT_REPRODUCED, "all collapse -> reproduced, got %s", verdict_name(v));
    TEST(contains(text_str(&t), "gap 70.0 pts") && contains(text_str(&t), "forget accuracy 5.0 sequential vs 20.0 batch"),
         "numbers in the explanation:\n%s", text_str(&t));
    text_free(&t);
    SeqOutcome d[3] = {{78, 80, 90, 5, 20}, {85, 85, 90, 10, 25}, {75, 70, 90, 0, 30}};
    v = finding_sequential_collapse(m, d, 3, NULL);
    TEST(v == VERDICT_NOT_REPRODUCED, "no gap -> not reproduced, got %s", verdict_name(v));
    SeqOutcome e[3] = {{10, 80, 90, 5, 20}, {85, 85, 90, 10, 25}, {NAN, 70, 90, 0, 30}};
    v = finding_sequential_collapse(m, e, 3, &t);
    TEST(v == VERDICT_MIXED, "one of two -> mixed, got %s", verdict_name(v));
    TEST(contains(text_str(&t), "missing"), "missing method noted");
    text_free(&t);
    /* the threshold itself: a gap of exactly FIND_COLLAPSE_GAP counts */
    SeqOutcome f[1] = {{70, 70 + FIND_COLLAPSE_GAP, 90, 0, 0}};
    TEST(finding_sequential_collapse(m, f, 1, NULL) == VERDICT_REPRODUCED, "gap == threshold supports");
    SeqOutcome g[1] = {{NAN, NAN, 90, 0, 0}};
    TEST(finding_sequential_collapse(m, g, 1, NULL) == VERDICT_INCONCLUSIVE, "nothing measured -> inconclusive");
    TEST(strcmp(verdict_name(VERDICT_NOT_REPRODUCED), "not reproduced") == 0, "verdict names");
}

/* ----------------------------------------------------------------------------
 * A synthetic run directory */

static char tmpdir[256];

static void put(const char *rel, const char *text) {
    char *p = xasprintf("%s/%s", tmpdir, rel);
    char *d = xstrdup(p);
    *strrchr(d, '/') = 0;
    make_dirs(d);
    write_file_atomic(p, text, strlen(text));
    free(d);
    free(p);
}

/* results.json with forget/retain/genbench MC accuracies (letter = likelihood here). */
static void put_results(const char *dir, double forget, double retain, double genbench) {
    char rel[256], buf[2048];
    snprintf(rel, sizeof rel, "%s/results.json", dir);
    snprintf(buf, sizeof buf,
             "{\"format\": \"pulse-results\", \"sets\": {"
             "\"forget\": {\"mc\": {\"image_text\": {\"value\": %g, \"n\": 10}, \"text_only\": {\"value\": %g, \"n\": 10}},"
             "             \"mc_likelihood\": {\"all\": {\"value\": %g, \"n\": 20}}},"
             "\"retain\": {\"mc\": {\"all\": {\"value\": %g, \"n\": 50}}, \"mc_likelihood\": {\"all\": {\"value\": %g, \"n\": 50}}},"
             "\"genbench\": {\"mc\": {\"all\": {\"value\": %g, \"n\": 30}}, \"mc_likelihood\": {\"all\": {\"value\": %g, \"n\": 30}}}},"
             "\"genbench_categories\": {\"count\": {\"mc\": {\"value\": %g, \"n\": 20}, \"mc_likelihood\": {\"value\": %g, \"n\": 20}},"
             "  \"position\": {\"mc\": {\"value\": 45, \"n\": 20}, \"mc_likelihood\": {\"value\": 0, \"n\": 0}}},"
             "\"mia\": {\"min_k\": {\"all\": {\"auc\": 0.75}}}, \"privleak\": {\"min_k\": {\"all\": {\"value\": -12.5}}}}",
             forget - 5, forget + 5, forget, retain, retain, genbench, genbench, genbench, genbench + 2.5);
    put(rel, buf);
    snprintf(rel, sizeof rel, "%s/cell.json", dir);
    put(rel, "{\"status\": \"ok\", \"steps\": 12, \"seconds_unlearn\": 1.5, \"seconds_eval\": 2.25, "
             "\"opts\": {\"lr\": 2e-05, \"epochs\": 5, \"batch\": 8}}");
}

static void test_run_dir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pulse_test_report_%d", (int)getpid());
    make_dirs(tmpdir);
    put("run.json",
        "{\"preset\": \"tiny\", \"seed\": 1, \"world_fingerprint\": \"00ff\", \"settings\": [\"finetuned\", \"pretrained\", "
        "\"sequential\", \"params\"], \"methods\": [\"ga\", \"npo\"], \"seq_methods\": [\"ga\", \"npo\"], "
        "\"params_methods\": [\"ga\"], \"ref_policy\": \"previous\", \"sizes\": {\"n_seq\": 2}, "
        "\"command\": \"pulse run --preset tiny\", \"cells\": ["
        "{\"id\": \"finetuned-before\", \"kind\": \"before\", \"setting\": \"finetuned\", \"method\": \"before\", \"params\": \"llm\", \"step\": -1, \"dir\": \"cells/fb\"},"
        "{\"id\": \"pretrained-before\", \"kind\": \"before\", \"setting\": \"pretrained\", \"method\": \"before\", \"params\": \"llm\", \"step\": -1, \"dir\": \"cells/pb\"},"
        "{\"id\": \"finetuned-ga\", \"kind\": \"unlearn\", \"setting\": \"finetuned\", \"method\": \"ga\", \"params\": \"llm\", \"step\": -1, \"dir\": \"cells/fga\"},"
        "{\"id\": \"finetuned-npo\", \"kind\": \"unlearn\", \"setting\": \"finetuned\", \"method\": \"npo\", \"params\": \"llm\", \"step\": -1, \"dir\": \"cells/fnpo\"},"
        "{\"id\": \"pretrained-ga\", \"kind\": \"unlearn\", \"setting\": \"pretrained\", \"method\": \"ga\", \"params\": \"llm\", \"step\": -1, \"dir\": \"cells/pga\"},"
        "{\"id\": \"pretrained-npo\", \"kind\": \"unlearn\", \"setting\": \"pretrained\", \"method\": \"npo\", \"params\": \"llm\", \"step\": -1, \"dir\": \"cells/pnpo\"},"
        "{\"id\": \"sequential-ga-step1\", \"kind\": \"step\", \"setting\": \"sequential\", \"method\": \"ga\", \"params\": \"llm\", \"step\": 1, \"dir\": \"cells/sga1\", \"current_dir\": \"cells/sga1/current\"},"
        "{\"id\": \"sequential-ga-step2\", \"kind\": \"step\", \"setting\": \"sequential\", \"method\": \"ga\", \"params\": \"llm\", \"step\": 2, \"dir\": \"cells/sga2\", \"current_dir\": \"cells/sga2/current\"},"
        "{\"id\": \"sequential-npo-step1\", \"kind\": \"step\", \"setting\": \"sequential\", \"method\": \"npo\", \"params\": \"llm\", \"step\": 1, \"dir\": \"cells/snpo1\"},"
        "{\"id\": \"sequential-npo-step2\", \"kind\": \"step\", \"setting\": \"sequential\", \"method\": \"npo\", \"params\": \"llm\", \"step\": 2, \"dir\": \"cells/snpo2\"},"
        "{\"id\": \"finetuned-ga-projllm\", \"kind\": \"unlearn\", \"setting\": \"finetuned\", \"method\": \"ga\", \"params\": \"proj+llm\", \"step\": -1, \"dir\": \"cells/fgap\"},"
        "{\"id\": \"pretrained-ga-projllm\", \"kind\": \"unlearn\", \"setting\": \"pretrained\", \"method\": \"ga\", \"params\": \"proj+llm\", \"step\": -1, \"dir\": \"cells/missing\"}"
        "]}");
    put_results("cells/fb", 95, 95, 95);
    put_results("cells/pb", 95, 95, 95);
    put_results("cells/fga", 25, 85, 90);     /* forgets 70 for 7.5 of utility */
    put_results("cells/fnpo", 35, 88, 92);
    put_results("cells/pga", 45, 40, 30);     /* forgets 50 for 60 of utility: harder */
    put_results("cells/pnpo", 55, 50, 40);
    put_results("cells/sga1", 60, 70, 60);
    put_results("cells/sga2", 20, 10, 5);     /* collapse vs batch 87.5 */
    put_results("cells/sga1/current", 30, 0, 0);
    put_results("cells/snpo1", 60, 80, 80);
    put_results("cells/snpo2", 30, 20, 15);
    put_results("cells/fgap", 15, 80, 88);
    put("gates.json", "{\"rows\": [{\"what\": \"base_ft fictitious image+text\", \"scoring\": \"letter\", \"value\": 97.5, "
                      "\"n\": 40, \"threshold\": 85, \"upper\": false, \"pass\": true}], \"all_pass\": true}");
    put("celebrities.json", "{\"rule\": \"top K\", \"candidates\": [{\"rank\": 1, \"id\": 12, \"name\": \"Ann Bee\", "
                            "\"accuracy\": 100, \"group\": \"forget\"}]}");
    put("state/base_pt.json", "{\"seconds\": 20.5}");

    report_write(tmpdir, 1);
    char *p = xasprintf("%s/report.md", tmpdir);
    size_t n;
    char *md = read_file(p, &n);
    free(p);
    static const char *const sections[] = {"# PULSE protocol report", "## Provenance", "## Findings", "## Gates",
                                           "## Celebrity selection", "## Fine-tuned knowledge", "## Pre-trained knowledge",
                                           "## Sequential unlearning", "## Ablation: which parameters", "## Hyper-parameters",
                                           "## Time", "lower is better"};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        TEST(contains(md, sections[i]), "report.md has '%s'", sections[i]);
    TEST(contains(md, "**Finding 1. Pre-trained knowledge is harder") && contains(md, "Letter rule: **reproduced**"),
         "finding 1 reproduced on these numbers");
    TEST(contains(md, "**Finding 2. Sequential unlearning collapses"), "finding 2 stated");
    TEST(contains(md, "| before unlearning"), "before row");
    TEST(contains(md, "| ga / proj+llm"), "params ablation row");
    /* genbench by skill: before, then the llm cells of each setting; "-" where n is 0 */
    const char *gb0 = strstr(md, "## General capability by skill");
    char *gb = gb0 ? xstrdup(gb0) : NULL;
    if (gb && strstr(gb + 1, "\n## ")) *strstr(gb + 1, "\n## ") = 0;    /* the section alone */
    TEST(gb && contains(gb, "count (20) MC / lik") && contains(gb, "position (20) MC / lik"), "genbench section and header");
    const char *fga = gb ? strstr(gb, "| finetuned  | ga ") : NULL, *pb = gb ? strstr(gb, "| pretrained | before ") : NULL;
    TEST(in_line(fga, " 90.0 / 92.5 |") && in_line(fga, " 45.0 / - |\n"), "finetuned ga's categories (no items: '-')");
    TEST(in_line(pb, " 95.0 / 97.5 |"), "pretrained before row");
    TEST(gb && count_of(gb, "| ga ") == 2 && count_of(gb, "| npo ") == 2 && count_of(gb, "| before unlearning ") == 2 &&
         !contains(gb, "proj+llm") && !contains(gb, "sequential"), "the llm cells of both settings, no other rows");
    free(gb);
    TEST(contains(md, "| base_pt "), "timing table reads state/*.json");

    p = xasprintf("%s/results.csv", tmpdir);
    char *csv = read_file(p, &n);
    free(p);
    TEST(strncmp(csv, "id,setting,method,params,kind,step,status,steps,seconds_unlearn,seconds_eval,forget.mc.image_text,", 98) == 0,
         "CSV header starts with the meta columns");
    TEST(count_of(csv, "\n") == 13, "CSV: header + 12 rows, got %d lines", count_of(csv, "\n"));
    TEST(contains(csv, "\nfinetuned-ga,finetuned,ga,llm,unlearn,,ok,12,1.500,2.250,20,30,25,"),
         "CSV row of finetuned-ga (it 20, to 30, all = weighted mean 25)");
    TEST(contains(csv, "\npretrained-ga-projllm,pretrained,ga,proj+llm,unlearn,,missing,"), "a cell without files is missing");
    TEST(contains(csv, ",0.75,,-12.5\n"), "MIA AUC, (no) forget quality, PrivLeak columns");
    char *first = strchr(csv, '\n');
    int ncol = 1;
    for (const char *c = csv; c < first; c++) ncol += *c == ',';
    TEST(ncol == 10 + 8 * 4 * 3 + 3, "CSV has %d columns", ncol);

    p = xasprintf("%s/results.json", tmpdir);
    Json *j = json_load(p);
    free(p);
    static const char *const keys[] = {"format", "provenance", "gates", "celebrities", "timing", "findings", "columns", "rows"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) TEST(json_get(j, keys[i]) != NULL, "results.json has '%s'", keys[i]);
    const Json *rows = json_get(j, "rows");
    TEST(rows && rows->len == 12, "12 rows");
    const Json *f1 = json_get(json_get(j, "findings"), "pretrained_harder");
    TEST(f1 && strcmp(json_get_string(f1, "letter", "", "x"), "reproduced") == 0, "findings.pretrained_harder.letter");
    const Json *f2 = json_get(json_get(j, "findings"), "sequential_collapse");
    TEST(f2 && strcmp(json_get_string(f2, "letter", "", "x"), "reproduced") == 0, "findings.sequential_collapse.letter");
    const Json *r0 = rows && rows->len ? rows->items[6] : NULL;
    TEST(r0 && json_get(r0, "results_current_group") != NULL, "a sequential row carries its current-group results");
    json_free(j);

    static const char *const plots[] = {"sequential_forget.svg", "sequential_retain.svg", "sequential_genbench.svg", "ft_vs_pt.svg"};
    for (size_t i = 0; i < 4; i++) {
        p = xasprintf("%s/plots/%s", tmpdir, plots[i]);
        char *svg = file_exists(p) ? read_file(p, &n) : xstrdup("");
        TEST(xml_ok(svg) && contains(svg, "</svg>"), "%s is well-formed", plots[i]);
        if (i == 0) TEST(count_of(svg, "<polyline") == 2, "two sequential methods drawn: %d", count_of(svg, "<polyline"));
        free(svg);
        free(p);
    }

    /* the same inputs give the same bytes */
    report_write(tmpdir, 1);
    p = xasprintf("%s/report.md", tmpdir);
    char *md2 = read_file(p, &n);
    free(p);
    p = xasprintf("%s/results.csv", tmpdir);
    char *csv2 = read_file(p, &n);
    free(p);
    TEST(strcmp(md, md2) == 0 && strcmp(csv, csv2) == 0, "second report is byte-identical");
    free(md); free(md2); free(csv); free(csv2);
    /* PULSE_KEEP_TEST=1 keeps the synthetic run to look at */
    char *cmd = getenv("PULSE_KEEP_TEST") ? xstrdup("true") : xasprintf("rm -rf '%s'", tmpdir);
    TEST(system(cmd) == 0, "cleanup");
    free(cmd);
}

int main(void) {
    test_text_csv();
    test_md();
    test_ticks();
    test_svg();
    test_finding1();
    test_finding2();
    test_run_dir();
    return test_summary();
}
