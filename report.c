/* report.c: the report of a protocol run (see report.h and docs/report.md).
 *
 * Design:
 * - The report is a pure function of the files in the run directory: run.json names the
 *   cells (the plan), each cell directory holds cell.json (the marker with status, steps,
 *   timings and hyper-parameters) and results.json (eval_run's aggregates). Nothing is
 *   recomputed from models, so `pulse report` takes milliseconds and can be rerun on a
 *   copied or half-finished run (missing cells show as missing).
 * - Every number of a cell is flattened into one row of fixed columns
 *   "<set>.<task>.<modality>" (plus three privacy/forget-quality columns), so the Markdown
 *   tables, the CSV, the JSON, the plots and the findings all read the same array.
 * - Outputs are built in memory (Text) and written atomically; numbers are printed with a
 *   fixed number of decimals, so the same inputs give the same bytes.
 * - The findings are small decision functions over plain structs (Effect, SeqOutcome), with
 *   the thresholds as named constants, so the tests can drive them with synthetic numbers.
 */
#include "report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io.h"

/* ============================================================================
 * Numbers */

void fmt_value(char *buf, size_t n, double x, int decimals) {
    if (isnan(x)) { snprintf(buf, n, "-"); return; }
    if (isinf(x)) { snprintf(buf, n, x > 0 ? "inf" : "-inf"); return; }
    snprintf(buf, n, "%.*f", decimals, x);
    /* "-0.0" and "0.0" are the same number: print it one way */
    int zero = 1;
    for (const char *c = buf; *c; c++) if (*c >= '1' && *c <= '9') zero = 0;
    if (zero && buf[0] == '-') memmove(buf, buf + 1, strlen(buf));
}

/* ============================================================================
 * CSV */

void csv_field(Text *t, const char *s) {
    size_t n = strlen(s);
    int quote = n > 0 && (s[0] == ' ' || s[n - 1] == ' ');
    for (const char *c = s; *c && !quote; c++)
        if (*c == ',' || *c == '"' || *c == '\n' || *c == '\r') quote = 1;
    if (!quote) { text_puts(t, s); return; }
    text_putn(t, "\"", 1);
    for (const char *c = s; *c; c++) {
        if (*c == '"') text_putn(t, "\"", 1);   /* "" inside a quoted field */
        text_putn(t, c, 1);
    }
    text_putn(t, "\"", 1);
}

/* ============================================================================
 * Markdown tables */

/* Cells are kept as strings until md_render, which needs every width first. */
void md_init(MdTable *m, int ncol, const char *align) {
    CHECK(ncol > 0 && ncol < (int)sizeof m->align && (int)strlen(align) == ncol);
    memset(m, 0, sizeof *m);
    m->ncol = ncol;
    memcpy(m->align, align, (size_t)ncol);
}

/* The slot of the next cell of the current row, growing the row array by doubling. */
static char **md_slot(MdTable *m) {
    if (m->nrow == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        m->cell = xrealloc(m->cell, (size_t)cap * (size_t)m->ncol * sizeof *m->cell);
        memset(m->cell + (size_t)m->cap * (size_t)m->ncol, 0, (size_t)(cap - m->cap) * (size_t)m->ncol * sizeof *m->cell);
        m->cap = cap;
    }
    CHECKF(m->cur < m->ncol, "md table: more than %d cells in a row", m->ncol);
    return &m->cell[(size_t)m->nrow * (size_t)m->ncol + (size_t)m->cur++];
}

void md_cell(MdTable *m, const char *s) {
    char **slot = md_slot(m);
    Text t = {0};
    for (const char *c = s; *c; c++) {
        if (*c == '|') text_puts(&t, "\\|");
        else if (*c == '\n' || *c == '\r') text_puts(&t, " ");
        else text_putn(&t, c, 1);
    }
    *slot = t.p ? t.p : xstrdup("");
}

/* Table cells are short: 512 bytes is plenty, longer text is cut. */
void md_cellf(MdTable *m, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    md_cell(m, buf);
}

void md_num(MdTable *m, double x, int decimals) {
    char buf[64];
    fmt_value(buf, sizeof buf, x, decimals);
    md_cell(m, buf);
}

/* Missing trailing cells become empty strings, so every row has ncol cells. */
void md_end_row(MdTable *m) {
    while (m->cur < m->ncol) md_cell(m, "");
    m->nrow++;
    m->cur = 0;
}

/* Display width of UTF-8 text: code points, not bytes (arrows and dashes are one). */
static int md_width(const char *s) {
    int w = 0;
    for (; *s; s++) if (((unsigned char)*s & 0xC0) != 0x80) w++;
    return w;
}

void md_render(const MdTable *m, Text *out) {
    if (m->nrow == 0) return;
    int w[32];
    for (int c = 0; c < m->ncol; c++) {
        w[c] = 3;               /* the separator needs at least "---" */
        for (int r = 0; r < m->nrow; r++) {
            const char *s = m->cell[(size_t)r * (size_t)m->ncol + (size_t)c];
            int k = md_width(s ? s : "");
            if (k > w[c]) w[c] = k;
        }
    }
    for (int r = 0; r < m->nrow; r++) {
        text_puts(out, "|");
        for (int c = 0; c < m->ncol; c++) {
            const char *s = m->cell[(size_t)r * (size_t)m->ncol + (size_t)c];
            if (!s) s = "";
            int pad = w[c] - md_width(s);
            text_puts(out, " ");
            if (m->align[c] == 'r') text_printf(out, "%*s%s", pad, "", s);
            else if (m->align[c] == 'c') text_printf(out, "%*s%s%*s", pad / 2, "", s, pad - pad / 2, "");
            else text_printf(out, "%s%*s", s, pad, "");
            text_puts(out, " |");
        }
        text_puts(out, "\n");
        if (r == 0) {           /* the separator: |:---|---:|:---:| */
            text_puts(out, "|");
            for (int c = 0; c < m->ncol; c++) {
                char a = m->align[c];
                text_puts(out, a == 'l' || a == 'c' ? ":" : "-");
                for (int k = 0; k < w[c]; k++) text_puts(out, "-");
                text_puts(out, a == 'r' || a == 'c' ? ":" : "-");
                text_puts(out, "|");
            }
            text_puts(out, "\n");
        }
    }
    text_puts(out, "\n");
}

/* Frees every allocated slot (rows beyond nrow are NULL). */
void md_free(MdTable *m) {
    for (size_t i = 0; i < (size_t)m->cap * (size_t)m->ncol; i++) free(m->cell[i]);
    free(m->cell);
    memset(m, 0, sizeof *m);
}

/* ============================================================================
 * SVG plots */

/* Tableau 10, in an order where neighbours differ in lightness too. */
static const char *const palette[8] = {
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

const char *plot_colour(int i) { return palette[((i % 8) + 8) % 8]; }

/* Labels come from method names and run.json: escape them, never trust them. */
void xml_escape(Text *t, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': text_puts(t, "&amp;"); break;
        case '<': text_puts(t, "&lt;"); break;
        case '>': text_puts(t, "&gt;"); break;
        case '"': text_puts(t, "&quot;"); break;
        case '\'': text_puts(t, "&apos;"); break;
        default: text_putn(t, s, 1);
        }
    }
}

/* A degenerate range (lo == hi, NaN) gets one tick at lo, so axes still draw. */
int nice_ticks(double lo, double hi, int target, double *ticks, int max) {
    if (!(hi > lo) || target < 2 || max < 1) {
        if (max >= 1 && isfinite(lo)) { ticks[0] = lo; return 1; }
        return 0;
    }
    double raw = (hi - lo) / (target - 1), mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    /* the 1, 2, 5 x 10^k nearest to the raw step (Heckbert's "nice numbers") */
    double step = (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;
    double first = ceil(lo / step - 1e-9) * step;
    int n = 0;
    for (double v = first; v <= hi + step * 1e-9 && n < max; v += step) {
        double r = round(v / step) * step;   /* no 0.30000000000000004 */
        ticks[n++] = fabs(r) < step * 1e-9 ? 0.0 : r;
    }
    return n;
}

/* Plot frame geometry, pixels. */
enum { PW = 720, PH = 420, PL = 64, PR = 190, PT = 44, PB = 56 };

typedef struct Frame {
    double x0, x1, y0, y1;      /* data ranges */
} Frame;

/* Data -> pixel coordinates; SVG y grows downwards, hence PH - PB - ... for y. */
static double fx(const Frame *f, double x) { return PL + (x - f->x0) / (f->x1 - f->x0) * (PW - PL - PR); }
static double fy(const Frame *f, double y) { return PH - PB - (y - f->y0) / (f->y1 - f->y0) * (PH - PT - PB); }

/* A tick label: integers without decimals, else the fewest decimals that show the step. */
static void tick_label(char *buf, size_t n, double v, double step) {
    int dec = 0;
    while (dec < 4 && fabs(step * pow(10, dec) - round(step * pow(10, dec))) > 1e-6) dec++;
    fmt_value(buf, n, v, dec);
}

/* XML prolog, the <svg> root with a viewBox (scales in a browser), white background, title. */
static void svg_begin(Text *o, const PlotSpec *sp) {
    text_printf(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
                   "viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
                PW, PH, PW, PH);
    text_printf(o, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", PW, PH);
    text_printf(o, "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">",
                (PL + PW - PR) / 2);
    xml_escape(o, sp->title ? sp->title : "");
    text_puts(o, "</text>\n");
}

/* Axes, grid, ticks and axis labels of frame f. */
static void svg_axes(Text *o, const PlotSpec *sp, const Frame *f) {
    double xt[32], yt[32];
    int nx, ny = nice_ticks(f->y0, f->y1, 6, yt, 32);
    /* steps are integers: a tick per step, or every k-th step past 10 steps */
    if (sp->x_integer) {
        nx = 0;
        int step = (int)ceil((f->x1 - f->x0) / 10.0);
        if (step < 1) step = 1;
        for (double v = ceil(f->x0); v <= f->x1 + 1e-9 && nx < 32; v += step) xt[nx++] = v;
    } else {
        nx = nice_ticks(f->x0, f->x1, 6, xt, 32);
    }
    double xs = nx > 1 ? xt[1] - xt[0] : 1, ys = ny > 1 ? yt[1] - yt[0] : 1;
    char lab[64];
    /* light grid first, so the data and the axes draw over it */
    text_puts(o, "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n");
    for (int i = 0; i < ny; i++)
        text_printf(o, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\"/>\n", PL, fy(f, yt[i]), PW - PR, fy(f, yt[i]));
    for (int i = 0; i < nx; i++)
        text_printf(o, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\"/>\n", fx(f, xt[i]), PT, fx(f, xt[i]), PH - PB);
    text_puts(o, "</g>\n");
    text_printf(o, "<g stroke=\"black\" stroke-width=\"1\">\n"
                   "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n",
                PL, PH - PB, PW - PR, PH - PB, PL, PT, PL, PH - PB);
    for (int i = 0; i < ny; i++)
        text_printf(o, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\"/>\n", PL - 5, fy(f, yt[i]), PL, fy(f, yt[i]));
    for (int i = 0; i < nx; i++)
        text_printf(o, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\"/>\n", fx(f, xt[i]), PH - PB, fx(f, xt[i]), PH - PB + 5);
    text_puts(o, "</g>\n");
    for (int i = 0; i < ny; i++) {
        tick_label(lab, sizeof lab, yt[i], ys);
        text_printf(o, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", PL - 8, fy(f, yt[i]) + 4, lab);
    }
    for (int i = 0; i < nx; i++) {
        tick_label(lab, sizeof lab, xt[i], xs);
        text_printf(o, "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", fx(f, xt[i]), PH - PB + 19, lab);
    }
    text_printf(o, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (PL + PW - PR) / 2, PH - 14);
    xml_escape(o, sp->xlabel ? sp->xlabel : "");
    text_puts(o, "</text>\n");
    text_printf(o, "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">",
                (PT + PH - PB) / 2, (PT + PH - PB) / 2);
    xml_escape(o, sp->ylabel ? sp->ylabel : "");
    text_puts(o, "</text>\n");
}

/* Data range [lo, hi] of the finite values, widened by 5% (a flat range by 1). */
static void widen(double *lo, double *hi) {
    if (!(*lo <= *hi)) { *lo = 0; *hi = 1; return; }
    double pad = (*hi - *lo) * 0.05;
    if (pad == 0) pad = 1;
    *lo -= pad; *hi += pad;
}

/* A plot without any finite point says so instead of showing empty axes. */
static void svg_no_data(Text *o, int any) {
    if (!any)
        text_printf(o, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#888888\">no data</text>\n",
                    (PL + PW - PR) / 2, (PT + PH - PB) / 2);
}

/* Ranges: the spec's when given (the sequential plots fix y to 0..100 so plots compare),
 * else from the finite data. */
void svg_line_plot(Text *out, const PlotSpec *sp, const PlotSeries *s, int n) {
    Frame f = {sp->xmin, sp->xmax, sp->ymin, sp->ymax};
    int any = 0;
    if (!(f.x0 < f.x1)) {
        f.x0 = INFINITY; f.x1 = -INFINITY;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < s[i].n; k++) { f.x0 = fmin(f.x0, s[i].x[k]); f.x1 = fmax(f.x1, s[i].x[k]); }
        if (!(f.x0 < f.x1)) { f.x0 = isfinite(f.x0) ? f.x0 - 1 : 0; f.x1 = f.x0 + 2; }
    }
    if (!(f.y0 < f.y1)) {
        f.y0 = 0; f.y1 = -INFINITY;
        for (int i = 0; i < n; i++) {
            for (int k = 0; k < s[i].n; k++) if (isfinite(s[i].y[k])) { f.y0 = fmin(f.y0, s[i].y[k]); f.y1 = fmax(f.y1, s[i].y[k]); }
            if (isfinite(s[i].ref)) { f.y0 = fmin(f.y0, s[i].ref); f.y1 = fmax(f.y1, s[i].ref); }
        }
        widen(&f.y0, &f.y1);
    }
    svg_begin(out, sp);
    svg_axes(out, sp, &f);
    for (int i = 0; i < n; i++) {
        const char *c = plot_colour(i);
        if (isfinite(s[i].ref)) {
            text_printf(out, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"1.5\" "
                             "stroke-dasharray=\"6,4\" opacity=\"0.8\"/>\n",
                        PL, fy(&f, s[i].ref), PW - PR, fy(&f, s[i].ref), c);
            any = 1;
        }
        /* one polyline per run of measured points */
        int open = 0;
        for (int k = 0; k <= s[i].n; k++) {
            int ok = k < s[i].n && isfinite(s[i].y[k]);
            if (ok && !open) { text_printf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c); open = 1; }
            else if (ok) text_puts(out, " ");
            if (ok) text_printf(out, "%.2f,%.2f", fx(&f, s[i].x[k]), fy(&f, s[i].y[k]));
            if (!ok && open) { text_puts(out, "\"/>\n"); open = 0; }
        }
        for (int k = 0; k < s[i].n; k++)
            if (isfinite(s[i].y[k])) {
                text_printf(out, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\"/>\n", fx(&f, s[i].x[k]), fy(&f, s[i].y[k]), c);
                any = 1;
            }
    }
    svg_no_data(out, any);
    /* legend, right of the plot: a line + marker per series, then the dashed-line note */
    int lx = PW - PR + 16, ly = PT + 8;
    for (int i = 0; i < n; i++, ly += 20) {
        text_printf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                    lx, ly, lx + 22, ly, plot_colour(i));
        text_printf(out, "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"%s\"/>\n", lx + 11, ly, plot_colour(i));
        text_printf(out, "<text x=\"%d\" y=\"%d\">", lx + 28, ly + 4);
        xml_escape(out, s[i].name ? s[i].name : "");
        text_puts(out, "</text>\n");
    }
    if (sp->ref_note) {
        text_printf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#555555\" stroke-width=\"1.5\" "
                         "stroke-dasharray=\"6,4\"/>\n", lx, ly, lx + 22, ly);
        text_printf(out, "<text x=\"%d\" y=\"%d\">", lx + 28, ly + 4);
        xml_escape(out, sp->ref_note);
        text_puts(out, "</text>\n");
    }
    text_puts(out, "</svg>\n");
}

/* Both axes start at 0 or below (widen), so "no forgetting" and "no loss" are visible. */
void svg_pair_plot(Text *out, const PlotSpec *sp, const char *const *names, int n,
                   const double *ax, const double *ay, const double *bx, const double *by,
                   const char *a_name, const char *b_name) {
    Frame f = {0, -INFINITY, 0, -INFINITY};
    int any = 0;
    for (int i = 0; i < 2 * n; i++) {
        double x = i < n ? ax[i] : bx[i - n], y = i < n ? ay[i] : by[i - n];
        if (!isfinite(x) || !isfinite(y)) continue;
        f.x0 = fmin(f.x0, x); f.x1 = fmax(f.x1, x);
        f.y0 = fmin(f.y0, y); f.y1 = fmax(f.y1, y);
    }
    widen(&f.x0, &f.x1);
    widen(&f.y0, &f.y1);
    if (sp->xmin < sp->xmax) { f.x0 = sp->xmin; f.x1 = sp->xmax; }
    if (sp->ymin < sp->ymax) { f.y0 = sp->ymin; f.y1 = sp->ymax; }
    svg_begin(out, sp);
    svg_axes(out, sp, &f);
    /* the y = x diagonal: one point of utility lost per point of forgetting */
    double d0 = fmax(f.x0, f.y0), d1 = fmin(f.x1, f.y1);
    if (d0 < d1)
        text_printf(out, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#bbbbbb\" stroke-width=\"1\" "
                         "stroke-dasharray=\"2,3\"/>\n", fx(&f, d0), fy(&f, d0), fx(&f, d1), fy(&f, d1));
    for (int i = 0; i < n; i++) {
        const char *c = plot_colour(i);
        int a = isfinite(ax[i]) && isfinite(ay[i]), b = isfinite(bx[i]) && isfinite(by[i]);
        if (a && b)
            text_printf(out, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"1\" opacity=\"0.6\"/>\n",
                        fx(&f, ax[i]), fy(&f, ay[i]), fx(&f, bx[i]), fy(&f, by[i]), c);
        if (a) text_printf(out, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"5\" fill=\"%s\"/>\n", fx(&f, ax[i]), fy(&f, ay[i]), c);
        if (b) text_printf(out, "<rect x=\"%.2f\" y=\"%.2f\" width=\"10\" height=\"10\" fill=\"%s\"/>\n",
                           fx(&f, bx[i]) - 5, fy(&f, by[i]) - 5, c);
        any |= a | b;
    }
    svg_no_data(out, any);
    int lx = PW - PR + 16, ly = PT + 8;
    for (int i = 0; i < n; i++, ly += 20) {
        text_printf(out, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", lx, ly - 6, plot_colour(i));
        text_printf(out, "<text x=\"%d\" y=\"%d\">", lx + 20, ly + 4);
        xml_escape(out, names[i] ? names[i] : "");
        text_puts(out, "</text>\n");
    }
    ly += 8;
    text_printf(out, "<circle cx=\"%d\" cy=\"%d\" r=\"5\" fill=\"#555555\"/>\n<text x=\"%d\" y=\"%d\">", lx + 6, ly, lx + 20, ly + 4);
    xml_escape(out, a_name);
    text_puts(out, "</text>\n");
    ly += 20;
    text_printf(out, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"#555555\"/>\n"
                     "<text x=\"%d\" y=\"%d\">", lx + 1, ly - 5, lx + 20, ly + 4);
    xml_escape(out, b_name);
    text_puts(out, "</text>\n");
    if (sp->ref_note) {
        ly += 20;
        text_printf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#bbbbbb\" stroke-dasharray=\"2,3\"/>\n"
                         "<text x=\"%d\" y=\"%d\">",
                    lx, ly, lx + 12, ly, lx + 20, ly + 4);
        xml_escape(out, sp->ref_note);
        text_puts(out, "</text>\n");
    }
    text_puts(out, "</svg>\n");
}

/* ============================================================================
 * Findings */

const char *verdict_name(Verdict v) {
    switch (v) {
    case VERDICT_REPRODUCED: return "reproduced";
    case VERDICT_NOT_REPRODUCED: return "not reproduced";
    case VERDICT_MIXED: return "mixed";
    default: return "inconclusive";
    }
}

/* A NaN effect: a cell or its "before" row is missing. */
static int effect_ok(const Effect *e) { return isfinite(e->forget_drop) && isfinite(e->utility_loss); }

/* +1: pretrained is harder for this (ft, pt) pair; -1: it is not; 0: cannot tell. The claim
 * is about methods that unlearn fine-tuned knowledge, so a method that does not forget in
 * finetuned says nothing either way. The cost of forgetting is utility lost per point of
 * forget drop. */
static int judge_harder(const Effect *ft, const Effect *pt, const char **why) {
    int f = ft->forget_drop >= FIND_MIN_FORGET, p = pt->forget_drop >= FIND_MIN_FORGET;
    if (!f) { *why = "does not forget fine-tuned knowledge, so the premise does not hold"; return 0; }
    if (!p) { *why = "forgets fine-tuned knowledge but not pre-trained knowledge"; return 1; }
    double cf = ft->utility_loss / ft->forget_drop, cp = pt->utility_loss / pt->forget_drop;
    if (cp > cf) { *why = "more utility lost per point forgotten in pretrained"; return 1; }
    *why = "no more utility lost per point forgotten in pretrained";
    return -1;
}

/* The cost as printed: a ratio, or n/a below the forgetting threshold (no division by ~0). */
static void effect_cost(char *buf, size_t n, const Effect *e) {
    if (e->forget_drop >= FIND_MIN_FORGET) snprintf(buf, n, "%.2f", e->utility_loss / e->forget_drop);
    else snprintf(buf, n, "n/a (no forgetting)");
}

Verdict finding_pretrained_harder(const char *const *methods, const Effect *ft, const Effect *pt, int n, Text *text) {
    int sup = 0, against = 0, m = 0;
    Effect aft = {0, 0}, apt = {0, 0};
    for (int i = 0; i < n; i++) {
        if (!effect_ok(&ft[i]) || !effect_ok(&pt[i])) {
            if (text) text_printf(text, "- `%s`: not measured in both settings\n", methods[i]);
            continue;
        }
        const char *why;
        int j = judge_harder(&ft[i], &pt[i], &why);
        sup += j > 0; against += j < 0; m++;
        aft.forget_drop += ft[i].forget_drop; aft.utility_loss += ft[i].utility_loss;
        apt.forget_drop += pt[i].forget_drop; apt.utility_loss += pt[i].utility_loss;
        if (text) {
            char cf[32], cp[32];
            effect_cost(cf, sizeof cf, &ft[i]);
            effect_cost(cp, sizeof cp, &pt[i]);
            text_printf(text, "- `%s`: finetuned forgets %.1f pts for %.1f pts of utility (cost %s); "
                              "pretrained forgets %.1f pts for %.1f pts (cost %s): %s (%s)\n",
                        methods[i], ft[i].forget_drop, ft[i].utility_loss, cf, pt[i].forget_drop,
                        pt[i].utility_loss, cp, why, j > 0 ? "supports" : j < 0 ? "contradicts" : "undetermined");
        }
    }
    if (m == 0 || sup + against == 0) {
        if (text) text_puts(text, "- no method gives a determinable comparison\n");
        return VERDICT_INCONCLUSIVE;
    }
    /* the average is a ratio of means, not a mean of ratios: a method with a tiny drop
     * cannot blow it up */
    aft.forget_drop /= m; aft.utility_loss /= m; apt.forget_drop /= m; apt.utility_loss /= m;
    const char *why;
    int avg = judge_harder(&aft, &apt, &why);
    if (text) {
        char cf[32], cp[32];
        effect_cost(cf, sizeof cf, &aft);
        effect_cost(cp, sizeof cp, &apt);
        text_printf(text, "- average over %d methods: finetuned cost %s, pretrained cost %s: %s; "
                          "%d method(s) support, %d contradict\n", m, cf, cp, why, sup, against);
    }
    if (against == 0 && avg > 0) return VERDICT_REPRODUCED;
    if (sup == 0 && avg <= 0) return VERDICT_NOT_REPRODUCED;
    return VERDICT_MIXED;
}

Verdict finding_sequential_collapse(const char *const *methods, const SeqOutcome *o, int n, Text *text) {
    int sup = 0, against = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(o[i].seq_utility) || !isfinite(o[i].batch_utility)) {
            if (text) text_printf(text, "- `%s`: sequential or batch result missing\n", methods[i]);
            continue;
        }
        double gap = o[i].batch_utility - o[i].seq_utility;
        int j = gap >= FIND_COLLAPSE_GAP ? 1 : -1;
        sup += j > 0; against += j < 0;
        if (text) {
            text_printf(text, "- `%s`: utility (mean of retain and genbench) %.1f after the sequential steps vs %.1f "
                              "after one operation (before: %.1f): gap %.1f pts, %s (%s)",
                        methods[i], o[i].seq_utility, o[i].batch_utility, o[i].before_utility, gap,
                        j > 0 ? "sequential is far lower" : "not far lower", j > 0 ? "supports" : "contradicts");
            if (isfinite(o[i].seq_forget) && isfinite(o[i].batch_forget))
                text_printf(text, "; forget accuracy %.1f sequential vs %.1f batch", o[i].seq_forget, o[i].batch_forget);
            text_puts(text, "\n");
        }
    }
    if (sup + against == 0) return VERDICT_INCONCLUSIVE;
    if (against == 0) return VERDICT_REPRODUCED;
    if (sup == 0) return VERDICT_NOT_REPRODUCED;
    return VERDICT_MIXED;
}

/* A deep copy of a JSON value (through its text form). */
static Json *json_clone(const Json *j) {
    char *s = json_dump(j, 0), err[160];
    Json *c = json_parse(s, strlen(s), err, sizeof err);
    CHECKF(c != NULL, "json_clone: %s", err);
    free(s);
    return c;
}

/* ============================================================================
 * A run directory, flattened into rows */

enum { S_FORGET, S_FORGET_CUR, S_TEST, S_RETAIN, S_CELEB, S_CELEB_F, S_CELEB_R, S_GENBENCH, N_RSETS };
enum { T_MC, T_MCL, T_CLOZE, T_ROUGEL, N_RTASKS };
enum { M_IT, M_TO, M_ALL, N_RMODS };
enum { X_MIA, X_FQ, X_PRIVLEAK, N_EXTRA };
#define N_COLS (N_RSETS * N_RTASKS * N_RMODS + N_EXTRA)

/* Column names; the results.json set read for each (forget_current comes from the
 * sequential step's current-group evaluation, whose own "forget" set it is). */
static const char *const set_col[N_RSETS] = {"forget", "forget_current", "test", "retain", "celebrity",
                                             "celebrity_forget", "celebrity_retain", "genbench"};
static const char *const task_col[N_RTASKS] = {"mc", "mc_likelihood", "cloze", "rougeL"};
static const char *const mod_col[N_RMODS] = {"image_text", "text_only", "all"};
static const char *const extra_col[N_EXTRA] = {"mia_auc", "forget_quality", "privleak"};
/* Where eval_run puts the extra numbers (first path found wins; docs/results.md). */
static const char *const extra_paths[N_EXTRA][3] = {
    {"mia.min_k.all.auc", "mia.loss.all.auc", NULL},               /* Min-K% (k 0.4), forget vs holdout */
    {"forget_quality.forget.all.value", NULL, NULL},                /* KS p-value vs the oracle */
    {"privleak.min_k.all.value", "privleak.loss.all.value", NULL},  /* MUSE PrivLeak, Min-K% AUC */
};

static int col(int s, int t, int m) { return (s * N_RTASKS + t) * N_RMODS + m; }

static void col_name(int c, char *buf, size_t n) {
    if (c >= N_RSETS * N_RTASKS * N_RMODS) { snprintf(buf, n, "%s", extra_col[c - N_RSETS * N_RTASKS * N_RMODS]); return; }
    int m = c % N_RMODS, t = (c / N_RMODS) % N_RTASKS, s = c / (N_RMODS * N_RTASKS);
    snprintf(buf, n, "%s.%s.%s", set_col[s], task_col[t], mod_col[m]);
}

typedef struct Row {
    const char *id, *setting, *method, *params, *kind, *dir;   /* from run.json (owned by it) */
    int step;                   /* sequential step (0 = before), -1 otherwise */
    char status[24];            /* ok | diverged | missing | ... */
    const char *message;        /* cell.json message, or "" */
    long steps;                 /* unlearning optimizer steps */
    double sec_unlearn, sec_eval;
    double v[N_COLS];
    Json *cell;                 /* cell.json, or NULL */
    Json *results;              /* results.json, or NULL */
    Json *current;              /* sequential: the current-group results.json, or NULL */
} Row;

typedef struct Run {
    const char *dir;
    Json *run, *gates, *celebs;
    int n;
    Row *rows;
} Run;

/* A JSON file if it exists and parses, else NULL (a report never dies on a cell that is
 * being written or was left broken: it shows as missing). */
static Json *try_load(const char *path) {
    if (!file_exists(path)) return NULL;
    size_t n;
    char *s = read_file(path, &n);
    char err[160];
    Json *j = json_parse(s, n, err, sizeof err);
    free(s);
    return j;
}

/* The number at a dotted path; an object with a "value" member counts as its value.
 * (mia.min_k.all.auc: the last component may also name a plain number member.) */
static double json_path_number(const Json *j, const char *path) {
    char key[64];
    const char *p = path;
    while (j && *p) {
        size_t k = strcspn(p, ".");
        if (k >= sizeof key) return NAN;
        memcpy(key, p, k);
        key[k] = 0;
        j = json_get(j, key);
        p += k + (p[k] == '.');
    }
    if (j && j->type == JSON_OBJECT) j = json_get(j, "value");
    return j && j->type == JSON_NUMBER ? j->number : NAN;
}

/* Fills the (set column sc) cells of row v from results set `set` of res. The "all"
 * modality, when eval did not write it, is the item-weighted mean of the other two. */
static void read_set(double *v, const Json *res, const char *set, int sc) {
    const Json *s = json_get(json_get(res, "sets"), set);
    if (!s) return;
    for (int t = 0; t < N_RTASKS; t++) {
        const Json *task = json_get(s, task_col[t]);
        double nn[N_RMODS];
        for (int m = 0; m < N_RMODS; m++) {
            const Json *e = json_get(task, mod_col[m]);
            double x = NAN;
            if (e && e->type == JSON_NUMBER) x = e->number;
            else if (e) { const Json *val = json_get(e, "value"); if (val && val->type == JSON_NUMBER) x = val->number; }
            const Json *cnt = e ? json_get(e, "n") : NULL;
            nn[m] = cnt && cnt->type == JSON_NUMBER ? cnt->number : NAN;
            if (isfinite(nn[m]) && nn[m] == 0) x = NAN;   /* no items: not measured */
            v[col(sc, t, m)] = x;
        }
        /* "all" = item-weighted mean when eval wrote only the two modalities */
    double a = v[col(sc, t, M_IT)], b = v[col(sc, t, M_TO)];
        if (isnan(v[col(sc, t, M_ALL)]) && isfinite(a) && isfinite(b)) {
            double na = isfinite(nn[M_IT]) ? nn[M_IT] : 1, nb = isfinite(nn[M_TO]) ? nn[M_TO] : 1;
            v[col(sc, t, M_ALL)] = (a * na + b * nb) / (na + nb);
        } else if (isnan(v[col(sc, t, M_ALL)])) {
            v[col(sc, t, M_ALL)] = isfinite(a) ? a : b;
        }
    }
}

/* One plan entry of run.json -> one row: meta fields, the marker (status, steps,
 * seconds), every column from results.json, and the current-group forget columns of a
 * sequential step. A missing or unparsable file leaves NaN and status "missing". */
static void row_load(Row *r, const char *run_dir, const Json *entry, const char *run_path) {
    r->id = json_get_string(entry, "id", "?", run_path);
    r->setting = json_get_string(entry, "setting", "", run_path);
    r->method = json_get_string(entry, "method", "", run_path);
    r->params = json_get_string(entry, "params", "llm", run_path);
    r->kind = json_get_string(entry, "kind", "", run_path);
    r->dir = json_get_string(entry, "dir", "", run_path);
    r->step = (int)json_get_int(entry, "step", -1, -1, 1000, run_path);
    for (int c = 0; c < N_COLS; c++) r->v[c] = NAN;
    r->steps = -1;
    r->sec_unlearn = r->sec_eval = NAN;
    r->message = "";
    snprintf(r->status, sizeof r->status, "missing");
    char *p = xasprintf("%s/%s/cell.json", run_dir, r->dir);
    r->cell = try_load(p);
    free(p);
    if (r->cell) {
        const Json *st = json_get(r->cell, "status");
        snprintf(r->status, sizeof r->status, "%s", st && st->type == JSON_STRING ? st->string : "ok");
        const Json *msg = json_get(r->cell, "message");
        if (msg && msg->type == JSON_STRING) r->message = msg->string;
        double st_n = json_path_number(r->cell, "steps");
        r->steps = isfinite(st_n) && st_n >= 0 ? (long)st_n : -1;
        r->sec_unlearn = json_path_number(r->cell, "seconds_unlearn");
        r->sec_eval = json_path_number(r->cell, "seconds_eval");
    }
    p = xasprintf("%s/%s/results.json", run_dir, r->dir);
    r->results = try_load(p);
    free(p);
    /* every set of results.json into its columns; forget_current comes from elsewhere */
    if (r->results) {
        for (int s = 0; s < N_RSETS; s++)
            if (s != S_FORGET_CUR) read_set(r->v, r->results, set_col[s], s);
        for (int x = 0; x < N_EXTRA; x++)
            for (int k = 0; extra_paths[x][k] && isnan(r->v[N_COLS - N_EXTRA + x]); k++)
                r->v[N_COLS - N_EXTRA + x] = json_path_number(r->results, extra_paths[x][k]);
    } else if (r->cell && strcmp(r->status, "ok") == 0) {
        snprintf(r->status, sizeof r->status, "missing");
    }
    const char *cur = json_get_string(entry, "current_dir", NULL, run_path);
    if (cur) {
        p = xasprintf("%s/%s/results.json", run_dir, cur);
        r->current = try_load(p);
        free(p);
        if (r->current) read_set(r->v, r->current, "forget", S_FORGET_CUR);
    }
}

/* Frees the rows' DOMs (some were moved into results.json by build_json: NULL then). */
static void run_free(Run *R) {
    for (int i = 0; i < R->n; i++) {
        json_free(R->rows[i].cell);
        json_free(R->rows[i].results);
        json_free(R->rows[i].current);
    }
    free(R->rows);
    json_free(R->gates);
    json_free(R->celebs);
    json_free(R->run);
}

/* run.json is required (it is what makes a directory a run); everything else is optional. */
static void run_load(Run *R, const char *dir) {
    memset(R, 0, sizeof *R);
    R->dir = dir;
    char *p = xasprintf("%s/run.json", dir);
    if (!file_exists(p)) die_input(dir, "not a pulse run directory (no run.json; see pulse run --help)");
    R->run = json_load(p);
    const Json *cells = json_get(R->run, "cells");
    if (!cells || cells->type != JSON_ARRAY) die_input(p, "\"cells\" must be an array");
    R->n = (int)cells->len;
    R->rows = xcalloc((size_t)R->n + 1, sizeof *R->rows);
    for (int i = 0; i < R->n; i++) {
        if (cells->items[i]->type != JSON_OBJECT) die_input(p, "cells[%d] must be an object", i);
        row_load(&R->rows[i], dir, cells->items[i], p);
    }
    free(p);
    p = xasprintf("%s/gates.json", dir);
    R->gates = try_load(p);
    free(p);
    p = xasprintf("%s/celebrities.json", dir);
    R->celebs = try_load(p);
    free(p);
}

/* The row of a cell id, or NULL. */
static const Row *find_row(const Run *R, const char *id) {
    for (int i = 0; i < R->n; i++) if (strcmp(R->rows[i].id, id) == 0) return &R->rows[i];
    return NULL;
}

/* The main unlearning cell of (setting, method, params): the forget-data ablation aside. */
static const Row *find_cell(const Run *R, const char *setting, const char *method, const char *params) {
    for (int i = 0; i < R->n; i++) {
        const Row *r = &R->rows[i];
        if (strcmp(r->kind, "unlearn") == 0 && strcmp(r->setting, setting) == 0 && strcmp(r->method, method) == 0 &&
            strcmp(r->params, params) == 0 && !strstr(r->id, "-alldata"))
            return r;
    }
    return NULL;
}

/* A row's value, NaN for a missing row: callers chain arithmetic without checks, and
 * NaN propagates to "-" in the tables. */
static double rv(const Row *r, int s, int t, int m) { return r ? r->v[col(s, t, m)] : NAN; }

/* The string list run.json holds under key (n in *n; pointers owned by run.json). */
static const char **run_list(const Run *R, const char *key, int *n) {
    const Json *a = json_get(R->run, key);
    *n = 0;
    if (!a || a->type != JSON_ARRAY) return xcalloc(1, sizeof(char *));
    const char **out = xcalloc(a->len + 1, sizeof *out);
    for (size_t i = 0; i < a->len; i++)
        if (a->items[i]->type == JSON_STRING) out[(*n)++] = a->items[i]->string;
    return out;
}

/* Whether the plan asked for a setting (its section appears even when cells are missing). */
static int run_has_setting(const Run *R, const char *s) {
    int n;
    const char **l = run_list(R, "settings", &n);
    int found = 0;
    for (int i = 0; i < n; i++) found |= strcmp(l[i], s) == 0;
    free(l);
    return found;
}

/* ============================================================================
 * Derived numbers */

/* Utility = mean of retain and genbench accuracy under task t (pooled modalities). */
static double utility(const Row *r, int t) {
    double a = rv(r, S_RETAIN, t, M_ALL), b = rv(r, S_GENBENCH, t, M_ALL);
    return (a + b) / 2;
}

static Effect effect_of(const Row *before, const Row *cell, int t) {
    Effect e = {NAN, NAN};
    if (!before || !cell) return e;
    e.forget_drop = rv(before, S_FORGET, t, M_ALL) - rv(cell, S_FORGET, t, M_ALL);
    e.utility_loss = utility(before, t) - utility(cell, t);
    return e;
}

/* The last sequential step row of a method that has results, or NULL. */
static const Row *seq_last(const Run *R, const char *method, int *step) {
    const Row *best = NULL;
    for (int i = 0; i < R->n; i++) {
        const Row *r = &R->rows[i];
        if (strcmp(r->kind, "step") == 0 && strcmp(r->method, method) == 0 && r->results && (!best || r->step > best->step))
            best = r;
    }
    if (step) *step = best ? best->step : 0;
    return best;
}

typedef struct Findings {
    Verdict f1[2], f2[2];       /* per MC scoring: [0] letter, [1] likelihood */
    Text text;                  /* the Markdown section */
    Json *json;
} Findings;

/* The MC scorings, as report labels. */
static const char *const scoring_label[2] = {"letter rule (MLLMU-Bench)", "option likelihood"};

/* Both findings under both MC scorings, the scoring disagreement and the modality gap:
 * the Markdown section in F->text and the same verdicts in F->json. */
static void findings_compute(const Run *R, Findings *F) {
    memset(F, 0, sizeof *F);
    F->json = json_new_object();
    int nm, ns;
    const char **methods = run_list(R, "methods", &nm);
    const char **seqm = run_list(R, "seq_methods", &ns);
    const Row *bft = find_row(R, "finetuned-before"), *bpt = find_row(R, "pretrained-before");
    Text *o = &F->text;
    Effect *ft = xcalloc((size_t)nm + 1, sizeof *ft), *pt = xcalloc((size_t)nm + 1, sizeof *pt);
    SeqOutcome *so = xcalloc((size_t)ns + 1, sizeof *so);
    const int task[2] = {T_MC, T_MCL};
    Text detail[2][2] = {{{0}}};
    /* k = 0: letter rule, k = 1: likelihood; each finding explains itself per scoring */
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < nm; i++) {
            ft[i] = effect_of(bft, find_cell(R, "finetuned", methods[i], "llm"), task[k]);
            pt[i] = effect_of(bpt, find_cell(R, "pretrained", methods[i], "llm"), task[k]);
        }
        F->f1[k] = finding_pretrained_harder(methods, ft, pt, nm, &detail[0][k]);
        for (int i = 0; i < ns; i++) {
            const Row *last = seq_last(R, seqm[i], NULL), *batch = find_cell(R, "finetuned", seqm[i], "llm");
            so[i].seq_utility = last ? utility(last, task[k]) : NAN;
            so[i].batch_utility = batch ? utility(batch, task[k]) : NAN;
            so[i].before_utility = bft ? utility(bft, task[k]) : NAN;
            so[i].seq_forget = rv(last, S_FORGET, task[k], M_ALL);
            so[i].batch_forget = rv(batch, S_FORGET, task[k], M_ALL);
        }
        F->f2[k] = finding_sequential_collapse(seqm, so, ns, &detail[1][k]);
    }
    /* the section: one bold verdict line per finding, then the per-method reasons */
    static const char *const claim[2] = {
        "Pre-trained knowledge is harder to unlearn: more utility (retain + genbench) is lost per point "
        "of forgetting in `pretrained` than in `finetuned`",
        "Sequential unlearning collapses where batch does not: after the last sequential step, retain "
        "and genbench are far below the one-operation batch with the same people"};
    static const char *const key[2] = {"pretrained_harder", "sequential_collapse"};
    for (int f = 0; f < 2; f++) {
        Verdict *v = f == 0 ? F->f1 : F->f2;
        text_printf(o, "**Finding %d. %s.** Letter rule: **%s**; likelihood scoring: **%s**.\n\n", f + 1, claim[f],
                    verdict_name(v[0]), verdict_name(v[1]));
        if (f == 1 && ns) {     /* the verdict depends on how long a step is: say which */
            const char *b = json_get_string(R->run, "seq_budget", "group", "run.json");
            double nseq = json_path_number(R->run, "sizes.n_seq");
            if (strcmp(b, "batch") == 0)
                text_printf(o, "Step length `batch`: each of the %.0f steps made as many optimizer steps as the batch "
                               "operation, so the chain made %.0f times as many in all (`--seq-budget group` gives "
                               "each step its own people's budget).\n\n", nseq, nseq);
            else
                text_printf(o, "Step length `group`: each of the %.0f steps made its own people's per-person budget, "
                               "so the chain made as many optimizer steps as the batch operation in all "
                               "(`--seq-budget batch` gives each step the batch operation's).\n\n", nseq);
        }
        for (int k = 0; k < 2; k++)
            text_printf(o, "With the %s:\n\n%s\n", scoring_label[k], text_str(&detail[f][k]));
        Json *j = json_new_object();
        json_add(j, "letter", json_new_string(verdict_name(v[0])));
        json_add(j, "likelihood", json_new_string(verdict_name(v[1])));
        json_add(j, "details_letter", json_new_string(text_str(&detail[f][0])));
        json_add(j, "details_likelihood", json_new_string(text_str(&detail[f][1])));
        if (f == 1) json_add(j, "seq_budget", json_new_string(json_get_string(R->run, "seq_budget", "group", "run.json")));
        json_add(F->json, key[f], j);
        text_free(&detail[f][0]);
        text_free(&detail[f][1]);
    }

    /* The two MC scorings: where do they disagree on how much was forgotten? */
    double sum = 0, worst = -1;
    int cnt = 0;
    const Row *wr = NULL;
    double wl = NAN, wk = NAN;
    for (int i = 0; i < R->n; i++) {
        const Row *r = &R->rows[i];
        if (strcmp(r->kind, "unlearn") != 0) continue;
        const Row *b = strcmp(r->setting, "pretrained") == 0 ? bpt : bft;
        double dl = rv(b, S_FORGET, T_MC, M_ALL) - rv(r, S_FORGET, T_MC, M_ALL);
        double dk = rv(b, S_FORGET, T_MCL, M_ALL) - rv(r, S_FORGET, T_MCL, M_ALL);
        if (!isfinite(dl) || !isfinite(dk)) continue;
        sum += fabs(dl - dk); cnt++;
        if (fabs(dl - dk) > worst) { worst = fabs(dl - dk); wr = r; wl = dl; wk = dk; }
    }
    text_puts(o, "**MC scorings.** ");
    if (cnt) {
        text_printf(o, "Over %d unlearning cells, the forget-accuracy drop measured by the letter rule and by option "
                       "likelihood differ by %.1f points on average; the largest disagreement is `%s` (letter %.1f, "
                       "likelihood %.1f points). A large gap means the method removed the answer format (the letter) "
                       "rather than the knowledge, or the reverse.\n\n", cnt, sum / cnt, wr->id, wl, wk);
    } else {
        text_puts(o, "no cell has both scorings.\n\n");
    }
    /* (the same numbers, machine-readable) */
    Json *mcj = json_new_object();
    json_add(mcj, "cells", json_new_number(cnt));
    json_add(mcj, "mean_abs_difference", json_new_number(cnt ? sum / cnt : NAN));
    json_add(mcj, "largest_cell", wr ? json_new_string(wr->id) : json_new_null());
    json_add(F->json, "mc_scorings", mcj);

    /* The modality gap of the params ablation: does updating the projector cut the image link? */
    int larger = 0, pairs = 0;
    Text g = {0};
    static const char *const sets2[2] = {"finetuned", "pretrained"};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < R->n; i++) {
            const Row *pj = &R->rows[i];
            if (strcmp(pj->kind, "unlearn") != 0 || strcmp(pj->setting, sets2[s]) != 0 ||
                strcmp(pj->params, "proj+llm") != 0)
                continue;
            const Row *ll = find_cell(R, sets2[s], pj->method, "llm");
            double gl = rv(ll, S_FORGET, T_MC, M_TO) - rv(ll, S_FORGET, T_MC, M_IT);
            double gp = rv(pj, S_FORGET, T_MC, M_TO) - rv(pj, S_FORGET, T_MC, M_IT);
            if (!isfinite(gl) || !isfinite(gp)) continue;
            pairs++; larger += gp > gl;
            text_printf(&g, "%s`%s` %s %.1f (proj+llm) vs %.1f (llm)", pairs > 1 ? "; " : "", pj->method, sets2[s], gp, gl);
        }
    text_puts(o, "**Modality gap** (text-only minus image+text forget accuracy, letter rule; the paper finds it larger "
                 "when the projector is updated): ");
    if (pairs) text_printf(o, "larger with projector+LLM in %d of %d cases: %s.\n\n", larger, pairs, text_str(&g));
    else text_puts(o, "no params-ablation pair was run.\n\n");
    Json *gj = json_new_object();
    json_add(gj, "pairs", json_new_number(pairs));
    json_add(gj, "larger_with_projector", json_new_number(larger));
    json_add(F->json, "modality_gap", gj);
    text_free(&g);
    free(ft); free(pt); free(so); free(methods); free(seqm);
}

/* ============================================================================
 * report.md */

/* Accuracies print with one decimal; NaN as "-". */
static void num_or_dash(MdTable *t, double x) { md_num(t, x, 1); }

/* "ok", or the status with unlearn_run's message (e.g. where a run diverged). */
static void status_cell(MdTable *t, const Row *r) {
    if (strcmp(r->status, "ok") == 0) md_cell(t, "ok");
    else if (r->message[0]) md_cellf(t, "%s: %s", r->status, r->message);
    else md_cell(t, r->status);
}

/* The first column of a setting table: method name, or what the reference row is. */
static const char *row_label(const Row *r) {
    if (strcmp(r->kind, "before") == 0) return "before unlearning";
    if (strcmp(r->kind, "oracle") == 0) return "oracle (retrained without forget)";
    return r->method;
}

/* The rows of a setting's tables: its before row, its oracle, then its main unlearning
 * cells (LoRA on the LLM, the QA-pair forget data) in plan order. Returns how many. */
static int setting_rows(const Run *R, const char *setting, const Row **list, int max) {
    static const char *const fixed[2] = {"before", "oracle"};
    int n = 0;
    for (int k = 0; k < 2; k++) {
        char id[96];
        snprintf(id, sizeof id, "%s-%s", setting, fixed[k]);
        const Row *r = find_row(R, id);
        if (r && n < max) list[n++] = r;
    }
    for (int i = 0; i < R->n && n < max; i++) {
        const Row *r = &R->rows[i];
        if (strcmp(r->kind, "unlearn") == 0 && strcmp(r->setting, setting) == 0 && strcmp(r->params, "llm") == 0 &&
            strstr(r->id, "-alldata") == NULL)
            list[n++] = r;
    }
    return n;
}

/* The accuracy table and the other-metrics table of one setting. */
static void md_setting(Text *o, const Run *R, const char *setting) {
    char id[96];
    snprintf(id, sizeof id, "%s-before", setting);
    const Row *before = find_row(R, id);
    const Row *list[64];
    int n = setting_rows(R, setting, list, 64);
    /* table 1: accuracies (the paper's layout) and the derived efficacy / retention */
    MdTable t;
    md_init(&t, 16, "lrrrrrrrrrrrrrrr");
    const char *head[16] = {"method", "forget MC i+t ↓", "forget MC t ↓", "forget lik i+t ↓", "forget lik t ↓",
                            "test MC i+t ↓", "test MC t ↓", "retain MC ↑", "retain lik ↑", "celebrity MC ↑",
                            "genbench MC ↑", "genbench lik ↑", "efficacy MC", "efficacy lik",
                            "retain kept % (lik)", "genbench kept % (lik)"};
    for (int c = 0; c < 16; c++) md_cell(&t, head[c]);
    md_end_row(&t);
    for (int i = 0; i < n; i++) {
        const Row *r = list[i];
        /* forget: both modalities under both scorings; test: letter rule; the utility sets pooled */
        md_cell(&t, row_label(r));
        num_or_dash(&t, rv(r, S_FORGET, T_MC, M_IT));
        num_or_dash(&t, rv(r, S_FORGET, T_MC, M_TO));
        num_or_dash(&t, rv(r, S_FORGET, T_MCL, M_IT));
        num_or_dash(&t, rv(r, S_FORGET, T_MCL, M_TO));
        num_or_dash(&t, rv(r, S_TEST, T_MC, M_IT));
        num_or_dash(&t, rv(r, S_TEST, T_MC, M_TO));
        num_or_dash(&t, rv(r, S_RETAIN, T_MC, M_ALL));
        num_or_dash(&t, rv(r, S_RETAIN, T_MCL, M_ALL));
        num_or_dash(&t, rv(r, S_CELEB, T_MC, M_ALL));
        num_or_dash(&t, rv(r, S_GENBENCH, T_MC, M_ALL));
        num_or_dash(&t, rv(r, S_GENBENCH, T_MCL, M_ALL));
        /* derived columns only for unlearned rows: relative to this setting's before row */
        int cell = strcmp(r->kind, "unlearn") == 0;
        num_or_dash(&t, cell ? rv(before, S_FORGET, T_MC, M_ALL) - rv(r, S_FORGET, T_MC, M_ALL) : NAN);
        num_or_dash(&t, cell ? rv(before, S_FORGET, T_MCL, M_ALL) - rv(r, S_FORGET, T_MCL, M_ALL) : NAN);
        /* retention by option likelihood: the letter rule can sit at chance (docs/training.md) */
        num_or_dash(&t, cell ? 100 * rv(r, S_RETAIN, T_MCL, M_ALL) / rv(before, S_RETAIN, T_MCL, M_ALL) : NAN);
        num_or_dash(&t, cell ? 100 * rv(r, S_GENBENCH, T_MCL, M_ALL) / rv(before, S_GENBENCH, T_MCL, M_ALL) : NAN);
        md_end_row(&t);
    }
    md_render(&t, o);
    md_free(&t);

    /* table 2: the other metrics, the oracle comparisons and the cost of each cell */
    md_init(&t, 12, "lrrrrrrrrrrl");
    const char *head2[12] = {"method", "cloze forget ↓", "cloze retain ↑", "ROUGE-L forget ↓", "ROUGE-L retain ↑",
                             "MIA AUC", "forget quality ↑", "PrivLeak →0", "steps", "unlearn s", "eval s", "status"};
    for (int c = 0; c < 12; c++) md_cell(&t, head2[c]);
    md_end_row(&t);
    for (int i = 0; i < n; i++) {
        const Row *r = list[i];
        md_cell(&t, row_label(r));
        /* cloze in %, ROUGE-L in [0, 1], AUC in [0, 1], FQ a p-value, PrivLeak in % */
        num_or_dash(&t, rv(r, S_FORGET, T_CLOZE, M_ALL));
        num_or_dash(&t, rv(r, S_RETAIN, T_CLOZE, M_ALL));
        md_num(&t, rv(r, S_FORGET, T_ROUGEL, M_ALL), 3);
        md_num(&t, rv(r, S_RETAIN, T_ROUGEL, M_ALL), 3);
        md_num(&t, r->v[N_COLS - N_EXTRA + X_MIA], 3);
        md_num(&t, r->v[N_COLS - N_EXTRA + X_FQ], 3);
        md_num(&t, r->v[N_COLS - N_EXTRA + X_PRIVLEAK], 1);
        if (r->steps >= 0) md_cellf(&t, "%ld", r->steps); else md_cell(&t, "-");
        md_num(&t, r->sec_unlearn, 1);
        md_num(&t, r->sec_eval, 1);
        status_cell(&t, r);
        md_end_row(&t);
    }
    md_render(&t, o);
    md_free(&t);
}

/* Per sequential method: step 0 (base_ft), each step, then the batch cell to compare with. */
static void md_sequential(Text *o, const Run *R) {
    int ns;
    const char **seqm = run_list(R, "seq_methods", &ns);
    MdTable t;
    md_init(&t, 11, "lrrrrrrrrrl");
    const char *head[11] = {"method", "step", "forget (so far) MC ↓", "forget (so far) lik ↓", "current group MC ↓",
                            "current group lik ↓", "retain MC ↑", "retain lik ↑", "genbench MC ↑", "genbench lik ↑",
                            "status"};
    for (int c = 0; c < 11; c++) md_cell(&t, head[c]);
    md_end_row(&t);
    const Row *b0 = find_row(R, "finetuned-before");
    for (int k = 0; k < ns; k++) {
        for (int i = -1; i < R->n; i++) {
            const Row *r = i < 0 ? b0 : &R->rows[i];     /* step 0: base_ft */
            if (!r || (i >= 0 && (strcmp(r->kind, "step") != 0 || strcmp(r->method, seqm[k]) != 0))) continue;
            md_cell(&t, seqm[k]);
            /* forget so far, this group, retain, genbench: each under both scorings */
            md_cellf(&t, "%d", i < 0 ? 0 : r->step);
            num_or_dash(&t, rv(r, S_FORGET, T_MC, M_ALL));
            num_or_dash(&t, rv(r, S_FORGET, T_MCL, M_ALL));
            num_or_dash(&t, rv(r, S_FORGET_CUR, T_MC, M_ALL));
            num_or_dash(&t, rv(r, S_FORGET_CUR, T_MCL, M_ALL));
            num_or_dash(&t, rv(r, S_RETAIN, T_MC, M_ALL));
            num_or_dash(&t, rv(r, S_RETAIN, T_MCL, M_ALL));
            num_or_dash(&t, rv(r, S_GENBENCH, T_MC, M_ALL));
            num_or_dash(&t, rv(r, S_GENBENCH, T_MCL, M_ALL));
            status_cell(&t, r);
            md_end_row(&t);
        }
        /* the batch row: the same people in one operation */
        const Row *b = find_cell(R, "finetuned", seqm[k], "llm");
        if (b) {
            md_cell(&t, seqm[k]);
            md_cell(&t, "batch");
            num_or_dash(&t, rv(b, S_FORGET, T_MC, M_ALL));
            num_or_dash(&t, rv(b, S_FORGET, T_MCL, M_ALL));
            md_cell(&t, "-");
            md_cell(&t, "-");
            num_or_dash(&t, rv(b, S_RETAIN, T_MC, M_ALL));
            num_or_dash(&t, rv(b, S_RETAIN, T_MCL, M_ALL));
            num_or_dash(&t, rv(b, S_GENBENCH, T_MC, M_ALL));
            num_or_dash(&t, rv(b, S_GENBENCH, T_MCL, M_ALL));
            status_cell(&t, b);
            md_end_row(&t);
        }
    }
    md_render(&t, o);
    md_free(&t);
    free(seqm);
}

/* Per setting: the before row, then llm and proj+llm for each ablation method. */
static void md_params(Text *o, const Run *R) {
    MdTable t;
    md_init(&t, 11, "llrrrrrrrrr");
    const char *head[11] = {"setting", "method / params", "forget MC i+t ↓", "forget MC t ↓", "gap MC (t − i+t)",
                            "forget lik i+t ↓", "forget lik t ↓", "gap lik", "retain MC ↑", "genbench MC ↑",
                            "celebrity MC ↑"};
    for (int c = 0; c < 11; c++) md_cell(&t, head[c]);
    md_end_row(&t);
    int np;
    const char **pm = run_list(R, "params_methods", &np);
    /* i = -1 is the before row of the setting, then each method under both params */
    static const char *const sets2[2] = {"finetuned", "pretrained"};
    static const char *const params[2] = {"llm", "proj+llm"};
    for (int s = 0; s < 2; s++) {
        char id[64];
        snprintf(id, sizeof id, "%s-before", sets2[s]);
        const Row *b = find_row(R, id);
        for (int i = -1; i < np; i++)
            for (int p = 0; p < (i < 0 ? 1 : 2); p++) {
                const Row *r = i < 0 ? b : find_cell(R, sets2[s], pm[i], params[p]);
                if (!r) continue;
                md_cell(&t, sets2[s]);
                if (i < 0) md_cell(&t, "before unlearning");
                else md_cellf(&t, "%s / %s", pm[i], params[p]);
                num_or_dash(&t, rv(r, S_FORGET, T_MC, M_IT));
                num_or_dash(&t, rv(r, S_FORGET, T_MC, M_TO));
                /* the modality gap: text-only minus image+text (positive: the image link is cut) */
                num_or_dash(&t, rv(r, S_FORGET, T_MC, M_TO) - rv(r, S_FORGET, T_MC, M_IT));
                num_or_dash(&t, rv(r, S_FORGET, T_MCL, M_IT));
                num_or_dash(&t, rv(r, S_FORGET, T_MCL, M_TO));
                num_or_dash(&t, rv(r, S_FORGET, T_MCL, M_TO) - rv(r, S_FORGET, T_MCL, M_IT));
                num_or_dash(&t, rv(r, S_RETAIN, T_MC, M_ALL));
                num_or_dash(&t, rv(r, S_GENBENCH, T_MC, M_ALL));
                num_or_dash(&t, rv(r, S_CELEB, T_MC, M_ALL));
                md_end_row(&t);
            }
    }
    md_render(&t, o);
    md_free(&t);
    free(pm);
}

/* genbench by skill (MMBench reports its abilities one by one): per row, each category's
 * accuracy by the letter rule and by option likelihood, from results.json's
 * genbench_categories. Rows: setting_rows of each setting, as in its own tables. */
enum { GB_MAX_CAT = 8 };

static double gb_value(const Row *r, const char *cat, const char *task) {
    const Json *c = r->results ? json_get(json_get(json_get(r->results, "genbench_categories"), cat), task) : NULL;
    const Json *n = c ? json_get(c, "n") : NULL;
    if (n && n->type == JSON_NUMBER && n->number == 0) return NAN;
    return c ? json_path_number(c, "value") : NAN;
}

static void md_genbench(Text *o, const Run *R, const char *const *settings, int n_settings) {
    const char *cat[GB_MAX_CAT];
    double n_items[GB_MAX_CAT];
    int nc = 0;
    for (int i = 0; i < R->n && nc == 0; i++) {         /* the categories, in eval's order */
        const Json *g = R->rows[i].results ? json_get(R->rows[i].results, "genbench_categories") : NULL;
        for (size_t k = 0; g && g->type == JSON_OBJECT && k < g->len && nc < GB_MAX_CAT; k++) {
            n_items[nc] = json_path_number(json_get(g->items[k], "mc"), "n");
            cat[nc++] = g->keys[k];
        }
    }
    const Row *list[128];
    const char *list_setting[128];
    int n_rows = 0;
    for (int s = 0; s < n_settings; s++) {
        int k = setting_rows(R, settings[s], list + n_rows, 128 - n_rows);
        for (int j = 0; j < k; j++) list_setting[n_rows + j] = settings[s];
        n_rows += k;
    }
    if (nc == 0 || n_rows == 0) { text_puts(o, "No genbench categories measured yet.\n\n"); return; }
    MdTable t;
    char align[GB_MAX_CAT + 3] = "ll";
    for (int c = 0; c < nc; c++) strcat(align, "r");
    md_init(&t, 2 + nc, align);
    md_cell(&t, "setting");
    md_cell(&t, "method");
    for (int c = 0; c < nc; c++)
        if (isfinite(n_items[c])) md_cellf(&t, "%s (%.0f) MC / lik ↑", cat[c], n_items[c]);
        else md_cellf(&t, "%s MC / lik ↑", cat[c]);
    md_end_row(&t);
    for (int i = 0; i < n_rows; i++) {
        md_cell(&t, list_setting[i]);
        md_cell(&t, row_label(list[i]));
        for (int c = 0; c < nc; c++) {
            char a[32], b[32];
            fmt_value(a, sizeof a, gb_value(list[i], cat[c], "mc"), 1);
            fmt_value(b, sizeof b, gb_value(list[i], cat[c], "mc_likelihood"), 1);
            md_cellf(&t, "%s / %s", a, b);
        }
        md_end_row(&t);
    }
    md_render(&t, o);
    md_free(&t);
}

/* Per method: unlearning with the QA pairs (default) vs with every pre-training item. */
static void md_forget_data(Text *o, const Run *R) {
    MdTable t;
    md_init(&t, 8, "llrrrrrr");
    const char *head[8] = {"method", "forget data", "forget MC i+t ↓", "forget MC t ↓", "forget lik i+t ↓",
                           "forget lik t ↓", "retain MC ↑", "genbench MC ↑"};
    for (int c = 0; c < 8; c++) md_cell(&t, head[c]);
    md_end_row(&t);
    for (int i = 0; i < R->n; i++) {
        const Row *r = &R->rows[i];
        if (strcmp(r->kind, "unlearn") != 0 || !strstr(r->id, "-alldata")) continue;
        /* k = 0: the default (QA pairs) cell, k = 1: this every-item ablation */
        for (int k = 0; k < 2; k++) {
            const Row *x = k == 0 ? find_cell(R, "pretrained", r->method, "llm") : r;
            if (!x) continue;
            md_cell(&t, r->method);
            md_cell(&t, k == 0 ? "QA pairs (default)" : "every pre-training item");
            num_or_dash(&t, rv(x, S_FORGET, T_MC, M_IT));
            num_or_dash(&t, rv(x, S_FORGET, T_MC, M_TO));
            num_or_dash(&t, rv(x, S_FORGET, T_MCL, M_IT));
            num_or_dash(&t, rv(x, S_FORGET, T_MCL, M_TO));
            num_or_dash(&t, rv(x, S_RETAIN, T_MC, M_ALL));
            num_or_dash(&t, rv(x, S_GENBENCH, T_MC, M_ALL));
            md_end_row(&t);
        }
    }
    md_render(&t, o);
    md_free(&t);
}

/* The gate table as train_gates measured it; a loud warning when any gate fails. */
static void md_gates(Text *o, const Run *R) {
    const Json *rows = json_get(R->gates, "rows");
    if (!rows || rows->type != JSON_ARRAY) { text_puts(o, "Gates not measured yet.\n\n"); return; }
    MdTable t;
    md_init(&t, 6, "llrrrl");
    const char *head[6] = {"what", "scoring", "accuracy %", "items", "gate", "pass"};
    for (int c = 0; c < 6; c++) md_cell(&t, head[c]);
    md_end_row(&t);
    for (size_t i = 0; i < rows->len; i++) {
        const Json *g = rows->items[i];
        md_cell(&t, json_get_string(g, "what", "?", "gates.json"));
        md_cell(&t, json_get_string(g, "scoring", "?", "gates.json"));
        md_num(&t, json_path_number(g, "value"), 1);
        md_num(&t, json_path_number(g, "n"), 0);
        md_cellf(&t, "%s %.0f", json_get_bool(g, "upper", 0, "gates.json") ? "<=" : ">=", json_path_number(g, "threshold"));
        md_cell(&t, json_get_bool(g, "pass", 0, "gates.json") ? "yes" : "**NO**");
        md_end_row(&t);
    }
    md_render(&t, o);
    md_free(&t);
    if (!json_get_bool(R->gates, "all_pass", 0, "gates.json"))
        text_puts(o, "**Warning: some gates fail: the base models do not know (or already know) what the protocol "
                     "asks them to forget, so the unlearning numbers below are hard to interpret.**\n\n");
}

/* Every candidate with its measured accuracy and where the selection put it. */
static void md_celebrities(Text *o, const Run *R) {
    const Json *c = json_get(R->celebs, "candidates");
    if (!c || c->type != JSON_ARRAY) { text_puts(o, "Celebrity selection not done yet.\n\n"); return; }
    text_printf(o, "%s\n\n", json_get_string(R->celebs, "rule", "", "celebrities.json"));
    MdTable t;
    md_init(&t, 5, "rrlrl");
    const char *head[5] = {"rank", "ID", "name", "accuracy %", "group"};
    for (int k = 0; k < 5; k++) md_cell(&t, head[k]);
    md_end_row(&t);
    for (size_t i = 0; i < c->len; i++) {
        const Json *p = c->items[i];
        md_num(&t, json_path_number(p, "rank"), 0);
        md_num(&t, json_path_number(p, "id"), 0);
        md_cell(&t, json_get_string(p, "name", "?", "celebrities.json"));
        md_num(&t, json_path_number(p, "accuracy"), 1);
        md_cell(&t, json_get_string(p, "group", "", "celebrities.json"));
        md_end_row(&t);
    }
    md_render(&t, o);
    md_free(&t);
}

/* Seconds recorded in RUN/state/<name>.json (NaN when absent). */
static double stage_seconds(const Run *R, const char *name) {
    char *p = xasprintf("%s/state/%s.json", R->dir, name);
    Json *j = try_load(p);
    free(p);
    double s = json_path_number(j, "seconds");
    json_free(j);
    return s;
}

/* Training and selection stages from state/<stage>.json, then the cells grouped by kind;
 * the same numbers go to results.json "timing". */
static void md_timing(Text *o, const Run *R, Json *tj) {
    MdTable t;
    md_init(&t, 4, "lrrl");
    const char *head[4] = {"stage", "seconds", "minutes", "what"};
    for (int c = 0; c < 4; c++) md_cell(&t, head[c]);
    md_end_row(&t);
    double total = 0;
    static const char *const stages[][2] = {
        {"data", "world generation"}, {"base_pt", "pre-training base_pt"}, {"base_ft", "fine-tuning base_ft"},
        {"oracle_ft", "fine-tuning the oracle without forget_10"},
        {"oracle_pt", "pre-training the oracle without the forget celebrities"},
        {"gates", "gate evaluation of both base models"}, {"celebrities", "per-celebrity accuracy of base_pt"}};
    /* stages absent from state/ (not run, or skipped by the settings) are left out */
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
        double s = stage_seconds(R, stages[i][0]);
        if (isnan(s)) continue;
        total += s;
        md_cell(&t, stages[i][0]); md_num(&t, s, 1); md_num(&t, s / 60, 2); md_cell(&t, stages[i][1]);
        md_end_row(&t);
        json_add(tj, stages[i][0], json_new_number(round(s * 1000) / 1000));
    }
    /* cells, grouped by what they are */
    static const char *const groups[][2] = {
        {"before+oracle", "evaluation of the base models and oracles"}, {"finetuned", "finetuned cells (unlearn + eval)"},
        {"pretrained", "pretrained cells"}, {"params", "projector+LLM ablation cells"},
        {"alldata", "forget-data ablation cells"}, {"sequential", "sequential steps (unlearn + 2 evals each)"}};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        double s = 0;
        int any = 0;
        for (int i = 0; i < R->n; i++) {
            const Row *r = &R->rows[i];
            /* which group this row's seconds count towards */
            const char *grp = strcmp(r->kind, "before") == 0 || strcmp(r->kind, "oracle") == 0 ? "before+oracle"
                            : strcmp(r->kind, "step") == 0 ? "sequential"
                            : strstr(r->id, "-alldata") ? "alldata"
                            : strcmp(r->params, "llm") != 0 ? "params" : r->setting;
            if (strcmp(grp, groups[g][0]) != 0) continue;
            if (isfinite(r->sec_unlearn)) { s += r->sec_unlearn; any = 1; }
            if (isfinite(r->sec_eval)) { s += r->sec_eval; any = 1; }
        }
        if (!any) continue;
        total += s;
        md_cell(&t, groups[g][0]); md_num(&t, s, 1); md_num(&t, s / 60, 2); md_cell(&t, groups[g][1]);
        md_end_row(&t);
        json_add(tj, groups[g][0], json_new_number(round(s * 1000) / 1000));
    }
    md_cell(&t, "**total**"); md_num(&t, total, 1); md_num(&t, total / 60, 2); md_cell(&t, "sum of the stages (as first computed)");
    md_end_row(&t);
    json_add(tj, "total", json_new_number(round(total * 1000) / 1000));
    md_render(&t, o);
    md_free(&t);
}

/* A hyper-parameter of a cell's recorded options, as text. */
static void hp_cell(MdTable *t, const Row *r, const char *key, int decimals) {
    const Json *opts = json_get(r->cell, "opts");
    const Json *v = json_get(opts, key);
    if (!v) md_cell(t, "-");
    else if (v->type == JSON_STRING) md_cell(t, v->string);
    else if (v->type == JSON_NUMBER && decimals < 0) md_cellf(t, "%g", v->number);
    else if (v->type == JSON_NUMBER) md_num(t, v->number, decimals);
    else md_cell(t, "?");
}

/* The options each main cell ran with (cell.json "opts"), with the steps actually taken. */
static void md_hparams(Text *o, const Run *R) {
    MdTable t;
    md_init(&t, 12, "llrrrrrrrrrl");
    const char *head[12] = {"setting", "method", "lr", "epochs", "steps", "batch", "alpha (retain)", "beta", "gamma",
                            "LoRA r", "LoRA alpha", "params"};
    for (int c = 0; c < 12; c++) md_cell(&t, head[c]);
    md_end_row(&t);
    for (int i = 0; i < R->n; i++) {
        const Row *r = &R->rows[i];
        if (strcmp(r->kind, "unlearn") != 0 || !r->cell || strcmp(r->params, "llm") != 0 || strstr(r->id, "-alldata")) continue;
        md_cell(&t, r->setting);
        md_cell(&t, r->method);
        hp_cell(&t, r, "lr", -1);
        double ep = json_path_number(r->cell, "epochs");        /* effective; opts.epochs 0 = auto */
        if (isfinite(ep)) md_num(&t, ep, 2); else hp_cell(&t, r, "epochs", -1);
        if (r->steps >= 0) md_cellf(&t, "%ld", r->steps); else md_cell(&t, "-");
        hp_cell(&t, r, "batch", -1);
        hp_cell(&t, r, "alpha", -1);
        hp_cell(&t, r, "beta", -1);
        hp_cell(&t, r, "gamma", -1);
        hp_cell(&t, r, "lora_r", -1);
        hp_cell(&t, r, "lora_alpha", -1);
        hp_cell(&t, r, "params", -1);
        md_end_row(&t);
    }
    md_render(&t, o);
    md_free(&t);
}

/* What produced this run and how to reproduce it (run.json, minus the plan). */
static void md_provenance(Text *o, const Run *R) {
    const Json *j = R->run;
    MdTable t;
    md_init(&t, 2, "ll");
    md_cell(&t, "field"); md_cell(&t, "value"); md_end_row(&t);
    /* scalars first, then the lists, the sizes and the command */
    static const char *const keys[] = {"preset", "seed", "world_fingerprint", "ref_policy", "seq_budget", "protocol_version",
                                       "compiler", "simd", "openmp"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const Json *v = json_get(j, keys[k]);
        if (!v) continue;
        char *s = v->type == JSON_STRING ? xstrdup(v->string) : json_dump(v, 0);
        md_cell(&t, keys[k]); md_cellf(&t, "`%s`", s); md_end_row(&t);
        free(s);
    }
    static const char *const lists[] = {"settings", "methods", "seq_methods", "params_methods"};
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
        int n;
        const char **l = run_list(R, lists[k], &n);
        Text s = {0};
        for (int i = 0; i < n; i++) text_printf(&s, "%s%s", i ? ", " : "", l[i]);
        md_cell(&t, lists[k]); md_cell(&t, text_str(&s)); md_end_row(&t);
        text_free(&s);
        free(l);
    }
    /* objects of numbers on one line each: "n_fictitious 100, n_celebrity 30, ..." (the
     * unlearning rates and the training recipes: not in runs from before they were recorded) */
    static const char *const objs[] = {"sizes", "unlearn_lr", "pretrain_recipe", "finetune_recipe"};
    for (size_t k = 0; k < sizeof objs / sizeof objs[0]; k++) {
        const Json *ob = json_get(j, objs[k]);
        if (!ob || ob->type != JSON_OBJECT) continue;
        Text s = {0};
        for (size_t i = 0; i < ob->len; i++) {
            char num[40];
            json_format_number(num, sizeof num, ob->items[i]->type == JSON_NUMBER ? ob->items[i]->number : NAN);
            text_printf(&s, "%s%s %s", i ? ", " : "", ob->keys[i], num);
        }
        md_cell(&t, objs[k]); md_cell(&t, text_str(&s)); md_end_row(&t);
        text_free(&s);
    }
    md_cell(&t, "reproduce");
    md_cellf(&t, "`%s`", json_get_string(j, "command", "", "run.json"));
    md_end_row(&t);
    md_render(&t, o);
    md_free(&t);
}

static const char *const how_to_read =
    "How to read this report. Every number is an accuracy in % (0-100) unless the column says otherwise; "
    "**↓ lower is better** (the forget and test sets: what should be forgotten), **↑ higher is better** "
    "(retain, celebrity and genbench: what must survive). *MC* is multiple choice scored by the generated "
    "letter (MLLMU-Bench's rule); *lik* scores each option by its likelihood as the answer (a person's "
    "answer sentence with the option's value; a small model can lose the letter format without losing the "
    "fact, or never learn it). *i+t* = questions with the face image, *t* = text-only questions. "
    "*efficacy* = forget accuracy before minus after (points; higher = more forgotten); *kept %* = utility "
    "after / before, by option likelihood. The *oracle* is a model retrained without the forget "
    "people: the target an ideal unlearning method would match; forget quality (KS-test p-value against it, "
    "higher is better) and PrivLeak (0 is ideal) compare to it. `-` = not measured. Definitions: "
    "docs/report.md, docs/protocol.md, docs/metrics.md.\n\n";

/* report.md: sections in reading order; a setting's section appears when it was planned
 * or when its before row exists. */
static void write_md(const Run *R, const Findings *F, Json *timing, Text *o) {
    /* title, the reading guide, then the sections */
    char *seed = json_get(R->run, "seed") ? json_dump(json_get(R->run, "seed"), 0) : xstrdup("?");
    text_printf(o, "# PULSE protocol report: `%s` preset, seed %s\n\n", json_get_string(R->run, "preset", "?", "run.json"), seed);
    free(seed);
    text_puts(o, how_to_read);
    text_puts(o, "## Provenance\n\n");
    md_provenance(o, R);
    text_puts(o, "## Findings\n\nComputed from the numbers below with the rules of docs/report.md; "
                 "nothing here is fixed in advance.\n\n");
    text_puts(o, text_str(&F->text));
    text_puts(o, "## Gates (base models, before any unlearning)\n\n");
    md_gates(o, R);
    text_puts(o, "## Celebrity selection (pretrained setting)\n\n");
    md_celebrities(o, R);
    if (run_has_setting(R, "finetuned") || find_row(R, "finetuned-before")) {
        text_puts(o, "## Fine-tuned knowledge (`finetuned`): forget the forget_10 fictitious people in one operation\n\n");
        md_setting(o, R, "finetuned");
    }
    if (run_has_setting(R, "pretrained") || find_row(R, "pretrained-before")) {
        text_puts(o, "## Pre-trained knowledge (`pretrained`): forget the selected celebrities in one operation\n\n");
        md_setting(o, R, "pretrained");
    }
    if (run_has_setting(R, "sequential")) {
        const char *seq_budget = json_get_string(R->run, "seq_budget", "group", "run.json");
        text_printf(o, "## Sequential unlearning (`sequential`): forget_10 in groups, one after another\n\n"
                       "Step 0 is base_ft; *forget (so far)* covers every group forgotten up to that step (at step 0: "
                       "all of forget_10), *current group* only the group of that step. The *batch* row is the same "
                       "people in one operation (the finetuned cell). Reference policy: `%s`. Step length: "
                       "`%s` (%s). "
                       "The plots below draw forget (so far), retain and genbench per step (letter rule), with "
                       "the batch value as a dashed line.\n\n",
                    json_get_string(R->run, "ref_policy", "previous", "run.json"), seq_budget,
                    strcmp(seq_budget, "batch") == 0
                        ? "each step makes as many optimizer steps as the batch operation, so the chain makes "
                          "n_seq times as many"
                        : "each step gets its own people's per-person budget, so the chain makes as many "
                          "optimizer steps as the batch operation");
        md_sequential(o, R);
        text_puts(o, "![forget](plots/sequential_forget.svg)\n![retain](plots/sequential_retain.svg)\n"
                     "![genbench](plots/sequential_genbench.svg)\n\n");
    }
    if (run_has_setting(R, "params")) {
        text_puts(o, "## Ablation: which parameters unlearning updates (`params`)\n\n"
                     "LoRA on the LLM only vs on the projector and the LLM. *gap* = text-only minus image+text forget "
                     "accuracy: a large positive gap means the image link was cut while the text knowledge stayed.\n\n");
        md_params(o, R);
    }
    if (run_has_setting(R, "forgetdata")) {
        text_puts(o, "## Ablation: forget data in the pretrained setting (`forgetdata`)\n\n"
                     "The default forgets the celebrities' QA pairs only (what a deletion request can name); this "
                     "ablation unlearns with every pre-training item about them.\n\n");
        md_forget_data(o, R);
    }
    {
        static const char *const gb_settings[2] = {"finetuned", "pretrained"};
        text_puts(o, "## General capability by skill (genbench)\n\n"
                     "genbench's categories one by one (the *genbench* columns above pool them): "
                     "each cell is the accuracy by the letter rule / by option likelihood, with the number of "
                     "questions in the header (in a column of n questions one answer is 100 / n points). The scene "
                     "questions ask for a figure's count, shape, colour or position (image+text), "
                     "*fact* the general facts (text-only).\n\n");
        md_genbench(o, R, gb_settings, 2);
    }
    text_puts(o, "## Fine-tuned vs pre-trained\n\n![utility lost vs forgetting](plots/ft_vs_pt.svg)\n\n"
                 "Each method is a circle (finetuned) and a square (pretrained): x = forget drop, y = utility lost "
                 "(mean of the retain and genbench drops), letter rule, in points. Above the dotted diagonal a method "
                 "loses more utility than it forgets.\n\n");
    text_puts(o, "## Hyper-parameters\n\n");
    md_hparams(o, R);
    text_puts(o, "## Time\n\nMeasured when each stage was computed (a resumed run keeps the first measurement). "
                 "A cell stage is the sum of its cells' times. Everything after base_pt runs in several processes at once, "
                 "one kernel thread each (`pulse run --procs`), so the total exceeds the wall time.\n\n");
    md_timing(o, R, timing);
    text_puts(o, "## Files\n\n`results.csv` (one row per cell and sequential step, every column), `results.json` "
                 "(everything, with each cell's full results), `cells/<id>/` (results.json, predictions.jsonl, "
                 "unlearn.json, cell.json), `plots/<name>.svg`.\n");
}

/* ============================================================================
 * results.csv and results.json */

/* results.csv: 10 meta columns, then N_COLS numbers in the shortest round-trip form
 * (json_format_number), empty when not measured. */
static void write_csv(const Run *R, Text *o) {
    static const char *const meta[] = {"id", "setting", "method", "params", "kind", "step", "status", "steps",
                                       "seconds_unlearn", "seconds_eval"};
    int nmeta = (int)(sizeof meta / sizeof meta[0]);
    for (int i = 0; i < nmeta; i++) { if (i) text_puts(o, ","); text_puts(o, meta[i]); }
    char buf[96];
    for (int c = 0; c < N_COLS; c++) { col_name(c, buf, sizeof buf); text_puts(o, ","); text_puts(o, buf); }
    text_puts(o, "\n");
    for (int i = 0; i < R->n; i++) {
        const Row *r = &R->rows[i];
        /* meta columns (text fields escaped), then the numbers */
        csv_field(o, r->id); text_puts(o, ",");
        csv_field(o, r->setting); text_puts(o, ",");
        csv_field(o, r->method); text_puts(o, ",");
        csv_field(o, r->params); text_puts(o, ",");
        csv_field(o, r->kind); text_puts(o, ",");
        if (r->step >= 0) text_printf(o, "%d", r->step);
        text_puts(o, ",");
        csv_field(o, r->status); text_puts(o, ",");
        if (r->steps >= 0) text_printf(o, "%ld", r->steps);
        text_puts(o, ",");
        if (isfinite(r->sec_unlearn)) text_printf(o, "%.3f", r->sec_unlearn);
        text_puts(o, ",");
        if (isfinite(r->sec_eval)) text_printf(o, "%.3f", r->sec_eval);
        for (int c = 0; c < N_COLS; c++) {
            text_puts(o, ",");
            if (isfinite(r->v[c])) { json_format_number(buf, sizeof buf, r->v[c]); text_puts(o, buf); }
        }
        text_puts(o, "\n");
    }
}

/* results.json: takes ownership of the rows' results DOMs and of the findings JSON. */
static Json *build_json(Run *R, Findings *F, Json *timing) {
    Json *j = json_new_object();
    json_add(j, "format", json_new_string("pulse-report/1"));
    Json *prov = json_new_object();
    for (size_t i = 0; i < R->run->len; i++)
        if (strcmp(R->run->keys[i], "cells") != 0) json_add(prov, R->run->keys[i], json_clone(R->run->items[i]));
    json_add(j, "provenance", prov);
    /* gates and celebrities move into the output (NULL in R afterwards) */
    json_add(j, "gates", R->gates ? R->gates : json_new_null());
    json_add(j, "celebrities", R->celebs ? R->celebs : json_new_null());
    R->gates = R->celebs = NULL;
    json_add(j, "timing", timing);
    json_add(j, "findings", F->json);
    F->json = NULL;
    Json *cols = json_new_array();
    char buf[96];
    for (int c = 0; c < N_COLS; c++) { col_name(c, buf, sizeof buf); json_push(cols, json_new_string(buf)); }
    json_add(j, "columns", cols);
    Json *rows = json_new_array();
    /* one object per row; its results DOM moves in (no copy of large per-item arrays) */
    for (int i = 0; i < R->n; i++) {
        Row *r = &R->rows[i];
        Json *o = json_new_object();
        json_add(o, "id", json_new_string(r->id));
        json_add(o, "setting", json_new_string(r->setting));
        json_add(o, "method", json_new_string(r->method));
        json_add(o, "params", json_new_string(r->params));
        json_add(o, "kind", json_new_string(r->kind));
        json_add(o, "step", r->step >= 0 ? json_new_number(r->step) : json_new_null());
        json_add(o, "status", json_new_string(r->status));
        json_add(o, "message", json_new_string(r->message));
        json_add(o, "steps", r->steps >= 0 ? json_new_number((double)r->steps) : json_new_null());
        json_add(o, "seconds_unlearn", json_new_number(r->sec_unlearn));
        json_add(o, "seconds_eval", json_new_number(r->sec_eval));
        Json *m = json_new_object();
        for (int c = 0; c < N_COLS; c++) { col_name(c, buf, sizeof buf); json_add(m, buf, json_new_number(r->v[c])); }
        json_add(o, "metrics", m);
        const Json *opts = json_get(r->cell, "opts");
        if (opts) json_add(o, "hyperparameters", json_clone(opts));
        json_add(o, "results", r->results ? r->results : json_new_null());
        r->results = NULL;
        if (r->current) { json_add(o, "results_current_group", r->current); r->current = NULL; }
        json_push(rows, o);
    }
    json_add(j, "rows", rows);
    return j;
}

/* ============================================================================
 * Plots */

/* One output file, atomically. */
static void write_text_file(const char *dir, const char *name, const Text *t, int quiet) {
    char *p = xasprintf("%s/%s", dir, name);
    write_file_atomic(p, text_str(t), t->n);
    if (!quiet) fprintf(stderr, "pulse report: wrote %s\n", p);
    free(p);
}

/* The three sequential plots (y fixed to 0..100, x = steps 0..n_seq) and ft_vs_pt. */
static void write_plots(const Run *R, int quiet) {
    char *pd = xasprintf("%s/plots", R->dir);
    make_dirs(pd);
    int ns;
    const char **seqm = run_list(R, "seq_methods", &ns);
    double ns_d = json_path_number(R->run, "sizes.n_seq");
    int S = isfinite(ns_d) && ns_d >= 1 && ns_d <= 1000 ? (int)ns_d : 5;
    const Row *bft = find_row(R, "finetuned-before");
    static const char *const what[3][3] = {
        {"sequential_forget.svg", "Sequential unlearning: forget accuracy (all groups so far)",
         "forget accuracy % (letter rule, lower = forgotten)"},
        {"sequential_retain.svg", "Sequential unlearning: retain accuracy", "retain accuracy % (letter rule)"},
        {"sequential_genbench.svg", "Sequential unlearning: general capability (genbench)", "genbench accuracy % (letter rule)"}};
    const int sets[3] = {S_FORGET, S_RETAIN, S_GENBENCH};
    /* one series per sequential method, points at steps 0..S, step 0 from base_ft */
    double *x = xcalloc((size_t)(S + 1) * (size_t)(ns + 1), sizeof *x), *y = xcalloc((size_t)(S + 1) * (size_t)(ns + 1), sizeof *y);
    PlotSeries *ser = xcalloc((size_t)ns + 1, sizeof *ser);
    for (int p = 0; p < 3; p++) {
        for (int k = 0; k < ns; k++) {
            double *xk = x + (size_t)k * (size_t)(S + 1), *yk = y + (size_t)k * (size_t)(S + 1);
            for (int s = 0; s <= S; s++) { xk[s] = s; yk[s] = NAN; }
            /* step 0 is base_ft; steps without results stay NaN (a gap in the line) */
            yk[0] = rv(bft, sets[p], T_MC, M_ALL);
            for (int i = 0; i < R->n; i++) {
                const Row *r = &R->rows[i];
                if (strcmp(r->kind, "step") == 0 && strcmp(r->method, seqm[k]) == 0 && r->step >= 1 && r->step <= S)
                    yk[r->step] = rv(r, sets[p], T_MC, M_ALL);
            }
            ser[k] = (PlotSeries){seqm[k], S + 1, xk, yk, rv(find_cell(R, "finetuned", seqm[k], "llm"), sets[p], T_MC, M_ALL)};
        }
        PlotSpec sp = {what[p][1], "unlearning step (0 = before)", what[p][2], 0, S, 0, 100, 1,
                       "batch (one operation)"};
        Text t = {0};
        svg_line_plot(&t, &sp, ser, ns);
        write_text_file(pd, what[p][0], &t, quiet);
        text_free(&t);
    }
    free(x); free(y); free(ser); free(seqm);

    /* ft_vs_pt: v holds [ft drop | ft loss | pt drop | pt loss], nm each */
    int nm;
    const char **methods = run_list(R, "methods", &nm);
    double *v = xcalloc((size_t)nm * 4 + 1, sizeof *v);
    const Row *bpt = find_row(R, "pretrained-before");
    for (int i = 0; i < nm; i++) {
        Effect a = effect_of(bft, find_cell(R, "finetuned", methods[i], "llm"), T_MC);
        Effect b = effect_of(bpt, find_cell(R, "pretrained", methods[i], "llm"), T_MC);
        v[i] = a.forget_drop; v[nm + i] = a.utility_loss; v[2 * nm + i] = b.forget_drop; v[3 * nm + i] = b.utility_loss;
    }
    /* axes from the data (0 included): drops and losses can be negative on small models */
    PlotSpec sp = {"Fine-tuned vs pre-trained knowledge: utility lost vs forgetting", "forget accuracy drop (points, letter rule)",
                   "utility lost (points: mean of retain and genbench drops)", 0, 0, 0, 0, 0, "utility lost = forget drop"};
    Text t = {0};
    svg_pair_plot(&t, &sp, methods, nm, v, v + nm, v + 2 * nm, v + 3 * nm, "finetuned", "pretrained");
    write_text_file(pd, "ft_vs_pt.svg", &t, quiet);
    text_free(&t);
    free(v); free(methods); free(pd);
}

/* ============================================================================
 * Entry points */

/* Order matters: findings and Markdown read the rows' DOMs, which build_json then moves
 * into results.json. */
void report_write(const char *run_dir, int quiet) {
    Run R;
    run_load(&R, run_dir);
    Findings F;
    findings_compute(&R, &F);
    Json *timing = json_new_object();
    Text md = {0}, csv = {0};
    write_md(&R, &F, timing, &md);
    write_csv(&R, &csv);
    write_plots(&R, quiet);
    write_text_file(run_dir, "report.md", &md, quiet);
    write_text_file(run_dir, "results.csv", &csv, quiet);
    Json *j = build_json(&R, &F, timing);
    char *p = xasprintf("%s/results.json", run_dir);
    json_save(p, j);
    if (!quiet) fprintf(stderr, "pulse report: wrote %s\n", p);
    free(p);
    json_free(j);
    text_free(&md); text_free(&csv); text_free(&F.text);
    run_free(&R);
}

int cmd_report(int argc, char **argv) {
    Args a;
    args_init(&a, "report", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse report RUN_DIR [--quiet]\n\n"
               "Writes RUN_DIR/report.md, results.csv, results.json and plots/<name>.svg from the files of a\n"
               "`pulse run` directory (run.json, cells/*/results.json, ...). Missing cells show as missing.\n"
               "See docs/report.md for how to read the report.\n");
        args_free(&a);
        return 0;
    }
    int quiet = args_flag(&a, "quiet"), n;
    char **pos = args_positional(&a, &n);
    args_done(&a);
    if (n != 1) die_input(NULL, "report: expected one RUN_DIR, got %d arguments (see pulse report --help)", n);
    if (!dir_exists(pos[0])) die_input(pos[0], "no such directory");
    report_write(pos[0], quiet);
    free(pos);
    args_free(&a);
    return 0;
}
