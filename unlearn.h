/* unlearn.h: the unlearning methods of the PULSE protocol (GA, GD, GA+KLR, NPO, NPO+RT,
 * SimNPO, IdkPO, RMU), applied by LoRA (or full-parameter training) to a tiny LLaVA.
 *
 * One call of unlearn_run() is one unlearning operation: the model is modified in place
 * (adapters attached, trained, then merged or kept attached). The protocol driver calls it
 * once per cell, and once per group in the sequential setting, passing the previous step's
 * model and the reference it wants (NULL = the model before this operation; or the original
 * model; or a retain-only oracle for MLLMU-Bench's NPO).
 *
 *   UnlearnOpts o = unlearn_opts_default(UL_NPO, UL_FINETUNED);
 *   o.forget = idx; o.n_forget = n;          // person indices (World.people)
 *   o.retain = ridx; o.n_retain = rn;
 *   UnlearnResult r;
 *   unlearn_run(world, tok, model, NULL, &o, &r);
 *   if (r.status == UL_DIVERGED) ...         // model is as it was before the call
 *   unlearn_result_free(&r);
 *
 * Every loss, default and calibration is documented, with its source, in docs/methods.md.
 * Lower-level pieces (the loss terms on the tape, the method loss of prepared batches) are
 * public so that tests can check them on hand-computable inputs.
 */
#ifndef PULSE_UNLEARN_H
#define PULSE_UNLEARN_H

#include <stdint.h>

#include "data.h"
#include "model.h"
#include "tensor.h"
#include "tokenizer.h"

typedef struct Json Json;

typedef enum {
    UL_GA,          /* gradient ascent: -NLL_f */
    UL_GD,          /* gradient difference: -g NLL_f + a NLL_r */
    UL_KLR,         /* GA + KL(p_ref || p) on retain */
    UL_NPO,         /* negative preference optimisation (no retain term) */
    UL_NPO_RT,      /* NPO + a NLL_r */
    UL_SIMNPO,      /* reference-free NPO on length-normalised NLL, + a NLL_r */
    UL_IDKPO,       /* DPO towards "I don't know" answers, + a NLL_r */
    UL_RMU,         /* representation misdirection at one decoder layer */
    UL_N_METHODS
} UlMethod;

typedef enum { UL_FINETUNED, UL_PRETRAINED } UlSetting;

/* What is forgotten. DEFAULT: finetuned -> every fine-tuning item about the forget people
 * (all formats); pretrained -> their QA pairs only (FMT_QA, with and without image).
 * QA: QA pairs of the setting's stage. ALL: every item of the setting's stage about them
 * (pretrained: biographies, captions, ... as well: the --forget-data all ablation).
 * Retain items are selected the same way for the retain people. */
typedef enum { UL_FD_DEFAULT, UL_FD_QA, UL_FD_ALL } UlForgetData;

/* Which parameters learn: LoRA targets (or, with lora_r = 0, which weights train fully). */
typedef enum { UL_PARAMS_LLM, UL_PARAMS_PROJ_LLM, UL_PARAMS_ALL } UlParams;

/* Where the frameworks disagree (methods-metrics.md §5). OU = open-unlearning (default);
 * MLLMU = MLLMU-Bench's code: GD and GA+KLR alternate a forget pass of ascent steps and a
 * retain pass of descent steps (KLR's retain loss NLL_r + KL summed over positions / B);
 * NPO uses the batch-mean token NLL as the log-ratio (with an oracle reference if given). */
typedef enum { UL_VARIANT_OU, UL_VARIANT_MLLMU } UlVariant;

/* Positions the KL term averages over: every real (non-padding) position of the retain
 * sequence (prompt, image and answer; OU minus its padding), or only the answer positions. */
typedef enum { UL_KL_VALID, UL_KL_ANSWER } UlKlMask;

typedef enum { UL_OK = 0, UL_DIVERGED = 1 } UlStatus;

#define UL_EXPOSURE 80          /* default budget: presentations of each forget person's items */

typedef struct UnlearnOpts {
    UlMethod method;
    UlSetting setting;
    const int *forget;          /* person indices (World.people) to forget */
    int n_forget;
    const int *retain;          /* person indices for the retain term (same kind) */
    int n_retain;
    UlForgetData forget_data;
    UlParams params;
    /* LoRA (PEFT semantics); lora_r = 0: full-parameter training of the chosen params */
    int lora_r;
    float lora_alpha;
    float lora_dropout;
    /* optimisation */
    float lr;                   /* peak learning rate */
    double epochs;              /* passes over the forget items (steps = 0); 0 = auto: each
                                   forget person's items presented `exposure` times in all */
    double exposure;            /* the auto length's presentations per forget person
                                   (0: UL_EXPOSURE) */
    long steps;                 /* optimizer steps; > 0 overrides epochs */
    int batch;                  /* forget sequences per step (retain: as many, paired) */
    LrKind schedule;            /* decay after warm-up */
    long warmup;                /* linear warm-up steps */
    float weight_decay;         /* AdamW, decoupled */
    float clip;                 /* global gradient-norm clip (<= 0: none) */
    /* loss weights: total = gamma * forget term + alpha * retain term */
    float beta;                 /* NPO / IdkPO / SimNPO temperature */
    float alpha;                /* retain weight */
    float gamma;                /* forget weight */
    float delta;                /* SimNPO margin (code form: sigma(beta avgNLL - beta delta)) */
    int rmu_layer;              /* 0-based decoder layer whose output RMU steers */
    float rmu_scale;            /* steering norm s relative to the measured mean hidden norm */
    UlVariant variant;
    UlKlMask kl_mask;
    /* data */
    int fixed_render;           /* 1: render each item once per operation (ref log-probs cached);
                                   0: re-render per epoch (fresh MC options), ref per batch */
    int augment;                /* training image augmentation on forget/retain images */
    uint64_t seed;              /* order, pairing, rendering, LoRA init, RMU direction */
    /* output */
    int merge;                  /* 1: merge adapters into the weights; 0: keep them attached */
    const char *ref_policy;     /* recorded only: "previous", "original", "oracle" */
    int probe;                  /* measure forget/retain mean log-likelihood before/after
                                   (<= 256 items each; default 0, `pulse unlearn` sets 1) */
    int quiet;                  /* no progress bar */
} UnlearnOpts;

typedef struct UnlearnResult {
    UlStatus status;
    char message[256];          /* "" or what went wrong (diverged: step, which value) */
    long steps;                 /* optimizer steps completed */
    long steps_planned;
    double epochs;              /* passes over the forget items that steps_planned makes */
    long diverged_step;         /* 0-based step whose loss/gradient was not finite, or -1 */
    double seconds;             /* wall time of the operation (probes included) */
    int n_forget_items, n_retain_items;
    float loss_first, loss_last;        /* total loss of the first / last step */
    float forget_first, forget_last;    /* forget term (before gamma) */
    float retain_first, retain_last;    /* retain term (before alpha), 0 if none */
    float rmu_norm, rmu_s;              /* RMU: measured mean hidden norm, steering norm */
    /* probe (opts.probe): mean token log-likelihood of the canonical renderings */
    double probe_forget_before, probe_forget_after;
    double probe_retain_before, probe_retain_after;
    Json *json;                 /* settings, hyper-parameters, status, per-step losses, probe */
} UnlearnResult;

/* Names: "ga", "gd", "ga_klr", "npo", "npo_rt", "simnpo", "idkpo", "rmu". */
const char *unlearn_method_name(UlMethod m);
/* Parses a method name (also "klr", "graddiff", "npo+rt", "idk_dpo"), or -1. */
int unlearn_method_parse(const char *s);
const char *unlearn_setting_name(UlSetting s);     /* "finetuned", "pretrained" */
const char *unlearn_params_name(UlParams p);       /* "llm", "proj+llm", "all" */
/* The LoRA target spec of a params choice ("llm", "projector,llm", "vision,projector,llm"). */
const char *unlearn_params_targets(UlParams p);

/* The documented defaults of a method (docs/methods.md table); no people selected. */
UnlearnOpts unlearn_opts_default(UlMethod method, UlSetting setting);

/* One unlearning operation on `model` (in place). ref: the frozen reference model for
 * GA+KLR, NPO, NPO+RT, IdkPO and RMU; NULL = a copy of `model` taken at the start (the
 * model before this operation). Adapters already attached to `model` are merged first.
 * On success the model holds the unlearned weights (adapters merged, or attached when
 * opts->merge == 0) in TRAIN_NONE mode. A step whose loss or gradient norm is not finite
 * stops the operation: status UL_DIVERGED, the step and a message are recorded, and the
 * model is restored to its state before the call (nothing broken is ever kept).
 * Returns the status. Bad options (unknown people, no forget items) -> die_input. */
UlStatus unlearn_run(const World *w, const Tokenizer *tok, Model *model, Model *ref,
                     const UnlearnOpts *opts, UnlearnResult *res);
void unlearn_result_free(UnlearnResult *r);

/* The forget (retain = 0) or retain (retain = 1) training items of opts, as world_select
 * returns them (malloc'ed, free()), count in *n. */
const Item **unlearn_select(const World *w, const UnlearnOpts *opts, int retain, int *n);

/* Mean token log-likelihood (answer tokens + EOS, HF token mean) of the canonical
 * renderings of items[0..n) under m (no gradient), batched. */
double unlearn_loglik(Model *m, const Tokenizer *tok, const World *w, const Item *const *items, int n);

/* ----------------------------------------------------------------------------
 * Lower level: loss terms (each builds on the tape and returns a [1] tensor) */

/* NPO: -(2/beta) mean_i log sigmoid(-beta (s_i - ref_i)), s = seq_logp [B] (sums of log p
 * over answer tokens + EOS), ref [B] the reference's sums. */
Tensor *ul_term_npo(Tape *tp, Tensor *seq_logp, const float *ref, float beta);
/* SimNPO: -(2/beta) mean_i log sigmoid(beta (-s_i / T_i - delta)), T_i = n_labels[i]
 * (rows with T_i = 0 are skipped). */
Tensor *ul_term_simnpo(Tape *tp, Tensor *seq_logp, const int *n_labels, float beta, float delta);
/* DPO: -(2/beta) mean_i log sigmoid(beta ((w_i - wref_i) - (l_i - lref_i))), win = the
 * preferred answer (IDK), lose = the forget answer; all sequence sums [B]. */
Tensor *ul_term_dpo(Tape *tp, Tensor *win, const float *win_ref, Tensor *lose, const float *lose_ref, float beta);
/* KL(p_ref || p) summed over the rows of logits [N, V] where mask (NULL: all), divided by
 * `denom` (OU: the number of counted rows; MLLMU: the batch size B). */
Tensor *ul_term_kl(Tape *tp, Tensor *logits, const float *ref_rows, const uint8_t *mask, float denom);
/* RMU masked MSE (OU): mean over sequences b with a non-empty mask of
 * (1/|M_b|) sum_{t in M_b} (1/D) |h_t - target_t|^2. hidden [B*T, D]; target [B*T, D]
 * (or [D], repeated for every row when target_rows == 0); mask [B*T]. */
Tensor *ul_term_rmu(Tape *tp, Tensor *hidden, const float *target, int target_rows,
                    const uint8_t *mask, int B, int T);
/* The OU RMU mask: positions holding an answer token (labels != -100 before the shift),
 * i.e. labelled[t - 1] of the same sequence. out [B*T]. */
void ul_rmu_mask(const ForwardOut *f, uint8_t *out);

/* ----------------------------------------------------------------------------
 * Lower level: the method loss of one prepared step */

enum { UL_PHASE_BOTH = 0, UL_PHASE_FORGET = 1, UL_PHASE_RETAIN = 2 };

typedef struct UlBatch {
    Batch forget;               /* forget examples (B rows) */
    Batch retain;               /* paired retain examples (B rows), unused by GA/NPO */
    Batch idk;                  /* IdkPO: the forget questions with IDK answers */
    const float *ref_forget;    /* [B] reference seq log-probs of forget rows, or NULL: computed */
    const float *ref_idk;       /* [B] same for idk rows */
    Rng *rng;                   /* LoRA dropout stream of the current model, or NULL */
} UlBatch;

typedef struct UlTerms {
    float total, forget, retain;/* values of the loss and of its two terms */
    float *ref_forget, *ref_idk;/* the reference values used (arena, [B]) */
} UlTerms;

/* Builds the loss of opts->method on b on tp (phase: both terms, or only the forget or
 * retain pass of the alternating variant) and returns it ([1]); terms filled. control:
 * the RMU target [D] (c = s u/|u|), else NULL. ref: the frozen reference (may be NULL
 * for GA, GD, SimNPO). Call tape_backward on the result to get the gradients. */
Tensor *unlearn_loss(Model *m, Model *ref, Tape *tp, const UnlearnOpts *opts, const float *control,
                     const UlBatch *b, int phase, UlTerms *terms);

/* `pulse unlearn --data DIR --model CKPT --method M --setting S ... --out DIR`. */
int cmd_unlearn(int argc, char **argv);

#endif
