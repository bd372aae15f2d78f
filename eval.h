/* eval.h: evaluation of a model on the world's benchmark: greedy decoding and
 * teacher-forced scoring, every metric of MLLMU-Bench, PULSE and the LLM unlearning
 * benchmarks, per item and in aggregate, and `pulse eval`.
 *
 * The protocol driver evaluates ~40 models in one process: it loads the world once and
 * calls eval_run() on each loaded model (adapter attached or merged), with the people
 * of every set given as person indices:
 *
 *   EvalOptions o = eval_options_default();
 *   o.forget = ids; o.n_forget = n;             // the test set is their test items
 *   o.retain = rids; o.n_retain = rn;
 *   o.out_dir = "run/cells/finetuned-ga";       // results.json + predictions.jsonl
 *   o.oracle = oracle_results;                  // a previous eval_run's Json (FQ, PrivLeak)
 *   Json *res = eval_run(model, tok, world, &o, NULL);
 *   ... json_get(json_get(json_get(json_get(res, "sets"), "forget"), "mc"), "image_text")
 *   json_free(res);
 *
 * Sets (results key in quotes): "forget" (profile items of the forget people), "test"
 * (their test-set items: paraphrased questions, transformed images), "retain",
 * "celebrity", "celebrity_forget" / "celebrity_retain" (the two celebrity groups, when
 * given), "genbench" (general capability) and "holdout" (never-trained people: the
 * membership-inference baseline). Every aggregate is reported for image+text
 * ("image_text"), text-only ("text_only") and both ("all") questions.
 * docs/results.md documents results.json and predictions.jsonl field by field.
 */
#ifndef PULSE_EVAL_H
#define PULSE_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "data.h"
#include "io.h"
#include "model.h"
#include "tokenizer.h"

typedef enum {
    EVAL_SET_FORGET, EVAL_SET_TEST, EVAL_SET_RETAIN, EVAL_SET_CELEBRITY,
    EVAL_SET_CELEB_FORGET, EVAL_SET_CELEB_RETAIN, EVAL_SET_GENBENCH, EVAL_SET_HOLDOUT,
    EVAL_N_SETS
} EvalSet;
#define EVAL_SET_BIT(s) (1u << (s))
/* The six sets of `--sets` by default (the celebrity groups follow "celebrity"). */
#define EVAL_SETS_ALL (EVAL_SET_BIT(EVAL_SET_FORGET) | EVAL_SET_BIT(EVAL_SET_TEST) | \
    EVAL_SET_BIT(EVAL_SET_RETAIN) | EVAL_SET_BIT(EVAL_SET_CELEBRITY) | \
    EVAL_SET_BIT(EVAL_SET_GENBENCH) | EVAL_SET_BIT(EVAL_SET_HOLDOUT))

/* What to compute (bit mask). */
enum {
    EVAL_MC = 1,                /* "mc": generated letter, MLLMU-Bench rule */
    EVAL_MC_LIKELIHOOD = 2,     /* "mc_likelihood": best mean log-prob option answer (mc_option_answer) */
    EVAL_CLOZE = 4,             /* "cloze": ground truth substring of the answer */
    EVAL_GEN = 8,               /* "gen": ROUGE-1/2/L, ROUGE-L recall, BLEU of generated answers */
    EVAL_PROB = 16,             /* "prob": QA-pair probabilities, truth ratio, memorisation, MIA */
    EVAL_TASKS_ALL = 31,
    /* the light mode (per-step sequential evaluation): no free generation, no QA scoring */
    EVAL_TASKS_LIGHT = EVAL_MC | EVAL_MC_LIKELIHOOD | EVAL_CLOZE
};

typedef struct EvalOptions {
    unsigned sets;              /* EVAL_SET_BIT mask (default EVAL_SETS_ALL) */
    unsigned tasks;             /* EVAL_* task mask (default EVAL_TASKS_ALL) */
    /* People as indices into World.people. NULL lists take the defaults: forget = split
     * "forget_10"; retain = the fictitious people not in forget; celebrity = celeb_forget
     * + celeb_retain if given, else split "celebrity"; holdout = split "holdout". */
    const int *forget; int n_forget;
    const int *retain; int n_retain;
    const int *celebrity; int n_celebrity;
    const int *celeb_forget; int n_celeb_forget;   /* optional groups inside "celebrity" */
    const int *celeb_retain; int n_celeb_retain;
    const int *holdout; int n_holdout;
    int max_new;                /* max new tokens of free generation (50, MLLMU-Bench) */
    int few_shot;               /* K in-context examples for mc and cloze (0: zero-shot) */
    uint64_t seed;              /* draws the few-shot examples */
    double mink_k;              /* k of Min-K% and Min-K%++ (0.4) */
    int batch;                  /* sequences decoded together (64) */
    int exact_scoring;          /* teacher-force every sequence with model_score (the full
                                   forward) instead of prefilling each shared prompt once and
                                   continuing from its KV cache (same numbers to ~1e-6, ~3x slower) */
    const Json *oracle;         /* results of the oracle (retrained without the forget people):
                                   forget quality and PrivLeak; NULL: not computed */
    const char *oracle_path;    /* recorded in the results */
    const char *out_dir;        /* results.json (+ predictions.jsonl, timing.json); NULL: no files */
    int predictions;            /* write predictions.jsonl (default 1) */
    const char *model_path;     /* recorded; its config.json "pulse" object is the provenance */
    const char *adapter_path;   /* recorded (with its adapter_config.json "pulse" object) */
    int quiet;                  /* no progress lines on stderr */
    FILE *table;                /* summary table destination (NULL: none) */
} EvalOptions;

/* Throughput of one evaluation (also written to timing.json, never to results.json so
 * that results stay bit-identical across runs). */
typedef struct EvalStats {
    long items;                 /* evaluation items scored */
    long gen_sequences;         /* prompts decoded */
    long gen_tokens;            /* tokens generated */
    long score_sequences;       /* teacher-forced sequences (options, QA answers) */
    long score_tokens;          /* positions run in teacher-forced and prefill passes */
    double gen_seconds, score_seconds, seconds;
} EvalStats;

/* Defaults: every set and task, 50 new tokens, zero-shot, k = 0.4, batch 64, predictions on. */
EvalOptions eval_options_default(void);

/* Evaluates m (with whatever adapter is attached) on the world and returns the results
 * DOM (see docs/results.md; caller json_free()s it). Writes results.json (atomic),
 * predictions.jsonl and timing.json into o->out_dir when set, and the summary table to
 * o->table when set. Fills *st when st != NULL. Bad options -> die_input. */
Json *eval_run(Model *m, const Tokenizer *tok, const World *w, const EvalOptions *o, EvalStats *st);

/* Per-person accuracy (%) on the profile items of people[0..n), pooling both modalities
 * and the tasks in `tasks` (EVAL_MC, EVAL_MC_LIKELIHOOD, EVAL_CLOZE; others ignored) into
 * acc[i]: how the protocol picks the celebrities the base model knows best. */
void eval_person_accuracy(Model *m, const Tokenizer *tok, const World *w, const int *people, int n,
                          unsigned tasks, int max_new, double *acc);

/* Comma list of set names -> EVAL_SET_BIT mask ("all" = EVAL_SETS_ALL); bad -> die_input. */
unsigned eval_parse_sets(const char *list);
/* Comma list of mc, mc_likelihood, cloze, gen, prob, "all", "light" -> mask; bad -> die_input. */
unsigned eval_parse_tasks(const char *list);
/* Loads results to use as an oracle: RESULTS_DIR/results.json or the file itself. */
Json *eval_load_results(const char *path);
/* The name of a set as in results.json ("forget", ..., "holdout"). */
const char *eval_set_name(EvalSet s);

/* Multiple-choice early stop: 1 when the MLLMU-Bench answer of a generation that has
 * produced text[0..n) so far is decided, i.e. the first non-space character of the
 * response is complete (and does not start the "ASSISTANT:" marker that would cut the
 * response): more tokens cannot change the predicted letter. */
int eval_mc_decided(const char *text, size_t n);
/* The MLLMU-Bench response of a generation (the text after the prompt's "ASSISTANT:"):
 * mllmu_response("ASSISTANT:" + generated, cloze). malloc'ed. */
char *eval_response(const char *generated, int cloze);

/* `pulse eval --data DIR --model CKPT [--adapter DIR] [...] --out DIR`. */
int cmd_eval(int argc, char **argv);
/* `pulse bench eval [--preset P] [--data DIR] [--model CKPT] [...]`: items/s and tokens/s. */
int cmd_bench_eval(int argc, char **argv);

#endif
