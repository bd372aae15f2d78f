/* metrics.h: the evaluation metrics of pulse, as pure functions.
 *
 * Every function here reproduces one reference implementation exactly (the source is
 * named on each group and in docs/metrics.md): no model, no I/O, no global state, double
 * precision inside. Text inputs are UTF-8 byte strings; probability inputs are per-token
 * log-probabilities (natural log) that the caller computed in double.
 *
 * Conventions
 * - "T" is a number of scored tokens, "V" a vocabulary size.
 * - Functions that allocate return memory the caller frees with free() (or *_free).
 * - Undefined inputs (T == 0 for a mean, empty KS samples) are bugs of the caller and
 *   fail a CHECK, except where the reference implementation defines a value (documented
 *   on the function).
 */
#ifndef PULSE_METRICS_H
#define PULSE_METRICS_H

#include <stddef.h>

/* ----------------------------------------------------------------------------
 * Text normalisation: NLTK PorterStemmer (mode NLTK_EXTENSIONS, NLTK 3.8/3.9) and the
 * Python string helpers the benchmarks rely on. */

/* Stem of a lower-case ASCII word exactly as nltk.stem.porter.PorterStemmer().stem(word);
 * returns a malloc'ed string. */
char *porter_stem(const char *word);
/* Python str.lower() of UTF-8 text (ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic,
 * U+0130 and U+212A; other code points unchanged); returns a malloc'ed string. */
char *py_lower(const char *text);
/* Byte length of the Python whitespace character (str.isspace()) that starts s, 0 if none. */
int py_space_len(const char *s);
/* Python str.strip() with no arguments (Unicode whitespace); returns a malloc'ed string. */
char *py_strip(const char *text);

/* ----------------------------------------------------------------------------
 * ROUGE: google-research rouge_score 0.1.2, RougeScorer(types, use_stemmer).score(target,
 * prediction). */

typedef struct RougeScore {
    double precision;       /* overlap / |prediction units| */
    double recall;          /* overlap / |target units| */
    double fmeasure;        /* 2PR/(P+R), 0 when P+R == 0 */
} RougeScore;

typedef struct RougeScores {
    RougeScore rouge1, rouge2, rougeL;
} RougeScores;

typedef struct RougeTokens {
    char **tok;             /* tok[i] points into buf */
    int n;                  /* number of tokens */
    char *buf;              /* storage for all tokens */
} RougeTokens;

/* rouge_score tokenize(): lower-case, non-[a-z0-9] runs -> space, split, Porter-stem tokens
 * longer than 3 characters when use_stemmer, keep tokens matching ^[a-z0-9]+$. */
RougeTokens rouge_tokenize(const char *text, int use_stemmer);
/* Frees the storage of a RougeTokens. */
void rouge_tokens_free(RougeTokens *t);
/* ROUGE-N (clipped n-gram overlap) of prediction against target; n >= 1. */
RougeScore rouge_n(const char *target, const char *prediction, int n, int use_stemmer);
/* ROUGE-L (longest common subsequence of tokens; not rougeLsum). */
RougeScore rouge_l(const char *target, const char *prediction, int use_stemmer);
/* rouge1, rouge2 and rougeL at once (tokenises each text once). */
RougeScores rouge_score(const char *target, const char *prediction, int use_stemmer);

/* ----------------------------------------------------------------------------
 * BLEU: NLTK 3.9 sentence_bleu([reference.split()], hypothesis.split(),
 * weights=(0.25,)*4, smoothing_function=SmoothingFunction().method1) as in MLLMU-Bench. */

/* Sentence BLEU-4 with method1 smoothing (epsilon 0.1 on zero numerators); 0 when the
 * hypothesis shares no unigram with the reference (in particular when it is empty). */
double bleu_sentence(const char *reference, const char *hypothesis);

/* ----------------------------------------------------------------------------
 * MLLMU-Bench multiple choice and cloze (franciscoliu/MLLMU-Bench eval.py). */

/* eval.py's answer extraction from the decoded text WITH the prompt:
 * text.split("ASSISTANT:")[1].strip() if the marker occurs, else text.strip(); with
 * answer_marker != 0 (cloze and generation tasks) "Answer:" is the second marker tried.
 * Returns a malloc'ed string. */
char *mllmu_response(const char *text, int answer_marker);
/* The same answer from the generated continuation alone (the LLaVA prompts end with their
 * only "ASSISTANT:"): generated up to its first "ASSISTANT:", stripped. Malloc'ed. */
char *mllmu_answer(const char *generated);
/* Predicted option letter: the first character of py_strip(answer), upper-cased, if it is
 * one of the characters of options (e.g. "ABCD"); 0 ("none", always wrong) otherwise. */
char mc_letter(const char *answer, const char *options);
/* 1 if mc_letter(answer, options) is the correct letter, else 0. */
int mc_correct(const char *answer, const char *options, char correct);
/* Index of the largest per-option mean log-likelihood (first on ties); n > 0. */
int mc_likelihood(const double *option_ll, int n);
/* 1 if py_lower(ground_truth) is a substring of py_lower(answer) (cloze rule), else 0. */
int cloze_correct(const char *answer, const char *ground_truth);

/* ----------------------------------------------------------------------------
 * Probability metrics (open-unlearning src/evals/metrics/{utils,memorization}.py). */

/* Sequence NLL: -sum of the T token log-probs. */
double nll_sum(const double *logp, int T);
/* Mean NLL (OU "avg_loss", the LOSS MIA score); T > 0. */
double nll_mean(const double *logp, int T);
/* Length-normalised probability exp(-nll_sum / T); T > 0. */
double prob_normalised(double nll_sum_value, int T);
/* OU probability_w_options: p_correct / (p_correct + sum_j p_wrong[j] + 1e-10). */
double prob_with_options(double p_correct, const double *p_wrong, int m);
/* OU truth ratio R = exp(-mean_j nll_pert[j]) / (exp(-nll_para) + 1e-10), from the
 * paraphrased answer's mean NLL and m >= 1 perturbed answers' mean NLLs. */
double truth_ratio(double nll_para, const double *nll_pert, int m);
/* OU aggregator for forget sets: mean_i min(R_i, 1/(R_i + 1e-10)); n > 0. */
double tr_closer_to_1_better(const double *R, int n);
/* OU aggregator for retain/real sets: mean_i max(0, 1 - R_i); n > 0. */
double tr_true_better(const double *R, int n);
/* Index of the first maximum of a row of V logits (torch.argmax tie rule). */
int argmax_row(const float *row, int V);
/* Log-softmax of row at index target, in double (max-subtracted log-sum-exp). */
double logprob_at(const float *row, int V, int target);
/* Exact memorisation: fraction of the T positions with pred[t] == target[t]; T > 0. */
double exact_memorization(const int *pred, const int *target, int T);
/* OU extraction strength 1 - k/T, k the smallest start of a fully matching suffix (a total
 * mismatch gives k = T-1, so ES = 1/T); 0 when T == 0. */
double extraction_strength(const int *pred, const int *target, int T);

/* ----------------------------------------------------------------------------
 * Membership inference (OU src/evals/metrics/mia/). Scores are signed so that a higher
 * score means "less likely a member". */

/* Min-K% score: minus the mean of the lowest max(1, (int)(T*k)) token log-probs; 0 when T == 0. */
double mia_min_k(const double *logp, int T, double k);
/* (mu, sigma) of one position for Min-K%++: mu = sum p log p, sigma^2 = sum p (log p)^2 - mu^2
 * clamped to >= 1e-6, from a row of V logits, in double. */
void minkpp_moments(const float *row, int V, double *mu, double *sigma);
/* Min-K%++ score: s_t = (logp[t] - mu[t]) / sigma[t]; minus the mean of the lowest
 * max(1, (int)(T*k)) of the s_t; 0 when T == 0. */
double mia_min_k_pp(const double *logp, const double *mu, const double *sigma, int T, double k);
/* ROC AUC of scores where pos should score higher than neg: P(pos > neg) + P(pos == neg)/2
 * (Mann-Whitney U / (n_neg n_pos), equal to sklearn roc_auc_score); both counts > 0. */
double roc_auc(const double *neg, int n_neg, const double *pos, int n_pos);
/* OU mia_auc: roc_auc_score with labels forget = 0, holdout = 1, i.e.
 * roc_auc(forget, holdout); 1 when the forget set is far more likely (memorised). */
double mia_auc(const double *forget, int n_forget, const double *holdout, int n_holdout);
/* OU privleak: ((1 - auc_unlearn) - (1 - auc_retain)) / (1 - auc_retain + 1e-10) * 100. */
double privleak(double auc_unlearn, double auc_retain);

/* ----------------------------------------------------------------------------
 * Forget quality: scipy.stats.ks_2samp(x, y, alternative='two-sided', method='auto'). */

enum { KS_EXACT = 0, KS_ASYMP = 1 };

typedef struct KsResult {
    double statistic;       /* D (in exact mode rounded to h/lcm(n1,n2), as scipy returns) */
    double pvalue;          /* two-sided p-value, clipped to [0, 1] */
    int method;             /* KS_EXACT, or KS_ASYMP (n > 10000 or the exact path failed) */
} KsResult;

/* Two-sample two-sided Kolmogorov-Smirnov test; inputs are not modified; n1, n2 > 0. */
KsResult ks_2samp(const double *x, int n1, const double *y, int n2);
/* scipy.stats.kstwo.sf(d, n): survival function of the exact one-sample two-sided
 * Kolmogorov statistic D_n (Simard & L'Ecuyer selection of algorithms). */
double kstwo_sf(double d, int n);
/* scipy.special.smirnov(n, d): survival function of the one-sided statistic D_n^+. */
double smirnov_sf(int n, double d);

/* ----------------------------------------------------------------------------
 * Aggregation. */

typedef struct MetricAgg {
    double sum;             /* sum of the values added */
    long n;                 /* number of values added */
} MetricAgg;

/* Adds one value to an accumulator (start from (MetricAgg){0}). */
void agg_add(MetricAgg *a, double v);
/* Mean of the values added; NAN when none were. */
double agg_mean(const MetricAgg *a);
/* Arithmetic mean of n > 0 values. */
double mean_of(const double *v, int n);
/* 100 * correct / total, 0 when total == 0 (MLLMU-Bench accuracy convention). */
double percent(long correct, long total);
/* scipy.stats.hmean of n > 0 non-negative values: 0 if any value is 0 (TOFU model utility). */
double harmonic_mean(const double *v, int n);

#endif
