/* report.h: the report of a protocol run (`pulse report RUN_DIR`, also run at the end of
 * `pulse run`): report.md, results.csv, results.json and the SVG plots, built only from
 * the files in the run directory, so a report can be rebuilt, diffed or moved anywhere.
 *
 * Inputs (written by protocol.c; docs/report.md describes each field):
 *   RUN/run.json                 provenance and the plan: settings, methods and one entry
 *                                per cell {id, setting, method, params, step, kind, dir,
 *                                current_dir}
 *   RUN/<cell dir>/cell.json     the cell's marker: status, message, steps, seconds,
 *                                hyper-parameters
 *   RUN/<cell dir>/results.json  eval_run's results: sets.<set>.<task>.<modality>.value
 *   RUN/gates.json, RUN/celebrities.json, RUN/state/<stage>.json (timings)
 * Outputs: RUN/report.md, RUN/results.csv, RUN/results.json, RUN/plots/<name>.svg, each written
 * atomically. The same inputs give the same bytes.
 *
 * The building blocks (text buffer, CSV escaping, Markdown tables, SVG plots, the two
 * findings) are public so that tests/test_report.c checks them on synthetic numbers.
 */
#ifndef PULSE_REPORT_H
#define PULSE_REPORT_H

#include <stddef.h>

#include "common.h"

/* Text (the growable buffer every output is built in) is common.h's. */

/* A number with `decimals` digits after the point, or "-" when x is NaN (not measured).
 * Negative zero prints as "0.0" so that equal reports stay byte-identical. */
void fmt_value(char *buf, size_t n, double x, int decimals);

/* ----------------------------------------------------------------------------
 * CSV (RFC 4180) */

/* Appends one field: as is when it needs no quoting, else in double quotes with inner
 * quotes doubled (fields holding a comma, a quote, CR, LF or leading/trailing space). */
void csv_field(Text *t, const char *s);

/* ----------------------------------------------------------------------------
 * Markdown tables with padded columns (readable as plain text too). Row 0 is the header. */
typedef struct MdTable {
    int ncol;                   /* columns */
    int nrow, cap;              /* rows so far (header included), allocated rows */
    char **cell;                /* [cap * ncol] malloc'ed cell texts, NULL = empty */
    int cur;                    /* next column of the row being filled */
    char align[32];             /* 'l', 'r' or 'c' per column */
} MdTable;

/* A table of ncol columns (<= 31); align holds one of l/r/c per column ("lrr"). */
void md_init(MdTable *m, int ncol, const char *align);
/* The next cell of the current row ('|' is escaped, newlines become spaces). */
void md_cell(MdTable *m, const char *s);
void md_cellf(MdTable *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A number cell (fmt_value). */
void md_num(MdTable *m, double x, int decimals);
/* Ends the current row (missing cells stay empty). */
void md_end_row(MdTable *m);
/* Appends the table: header, separator with alignment colons, rows; a blank line after. */
void md_render(const MdTable *m, Text *out);
void md_free(MdTable *m);

/* ----------------------------------------------------------------------------
 * SVG plots: hand-written SVG 1.1 (axes, ticks, grid, labels, legend), deterministic. */
typedef struct PlotSeries {
    const char *name;           /* legend label */
    int n;                      /* points */
    const double *x, *y;        /* NaN y = not measured (the line breaks there) */
    double ref;                 /* a dashed horizontal line in the series' colour, NaN: none */
} PlotSeries;

typedef struct PlotSpec {
    const char *title, *xlabel, *ylabel;
    double xmin, xmax;          /* x range (xmin >= xmax: from the data) */
    double ymin, ymax;          /* y range (ymin >= ymax: from the data, 0 included) */
    int x_integer;              /* ticks at integers only (steps) */
    const char *ref_note;       /* legend line explaining the dashed lines, or NULL */
} PlotSpec;

/* Colour of series i (a fixed 8-colour palette, repeating). */
const char *plot_colour(int i);
/* "Nice" tick positions (1, 2, 5 x 10^k steps) covering [lo, hi]; about `target` of
 * them, at most max written to ticks. Returns the count. */
int nice_ticks(double lo, double hi, int target, double *ticks, int max);
/* Appends s with the five XML special characters escaped. */
void xml_escape(Text *t, const char *s);
/* A line chart: one polyline with markers per series, dashed references, legend. */
void svg_line_plot(Text *out, const PlotSpec *spec, const PlotSeries *s, int n);
/* A paired scatter: for each of n names, a circle at (ax, ay) (group a_name) and a square
 * at (bx, by) (group b_name) in the name's colour, joined by a thin line; NaN points are
 * left out. */
void svg_pair_plot(Text *out, const PlotSpec *spec, const char *const *names, int n,
                   const double *ax, const double *ay, const double *bx, const double *by,
                   const char *a_name, const char *b_name);

/* ----------------------------------------------------------------------------
 * Findings: the paper's two claims, decided from the numbers (docs/report.md). */
typedef enum { VERDICT_REPRODUCED, VERDICT_NOT_REPRODUCED, VERDICT_MIXED, VERDICT_INCONCLUSIVE } Verdict;

/* "reproduced", "not reproduced", "mixed", "inconclusive". */
const char *verdict_name(Verdict v);

#define FIND_MIN_FORGET 5.0     /* accuracy points of forget drop that count as forgetting */
#define FIND_COLLAPSE_GAP 10.0  /* points by which sequential utility must trail the batch */

/* One method in one setting, in accuracy points (before minus after). */
typedef struct Effect {
    double forget_drop;         /* forget accuracy drop: > 0 = forgotten */
    double utility_loss;        /* mean of the retain and genbench drops: > 0 = utility lost */
} Effect;

/* Finding 1, "pre-trained knowledge is harder": per method, more utility lost per point
 * of forgetting in pretrained than in finetuned (or no forgetting at all in pretrained
 * where finetuned forgets); and the same on the average over methods. NaN effects are
 * skipped. Appends a Markdown explanation with the numbers to text (may be NULL). */
Verdict finding_pretrained_harder(const char *const *methods, const Effect *ft, const Effect *pt, int n,
                                  Text *text);

/* One method after the last sequential step vs the same people in one operation. */
typedef struct SeqOutcome {
    double seq_utility;         /* mean of retain and genbench accuracy after the last step */
    double batch_utility;       /* the same after the one-operation cell */
    double before_utility;      /* the same before unlearning */
    double seq_forget;          /* forget accuracy (all forgotten people) after the last step */
    double batch_forget;        /* forget accuracy after the one-operation cell */
} SeqOutcome;

/* Finding 2, "sequential collapses where batch does not": per method, utility after the
 * last sequential step at least FIND_COLLAPSE_GAP points below the batch's. Appends a
 * Markdown explanation to text (may be NULL). */
Verdict finding_sequential_collapse(const char *const *methods, const SeqOutcome *o, int n, Text *text);

/* ----------------------------------------------------------------------------
 * The report of a run directory */

/* Reads RUN_DIR (run.json and everything it names) and writes report.md, results.csv,
 * results.json and plots/<name>.svg into it. Missing cells are reported as missing; a
 * directory without run.json is an input error. Prints one line per file when !quiet. */
void report_write(const char *run_dir, int quiet);

/* `pulse report RUN_DIR`. */
int cmd_report(int argc, char **argv);

#endif
