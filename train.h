/* train.h: pre-training (base_pt) and fine-tuning (base_ft) of the tiny LLaVA on a
 * synthetic world, resumable and bit-reproducible, plus the gates that check that the
 * base models know what the protocol will ask them to forget.
 *
 * The protocol driver calls train_run() in-process (and train_gates() on the results);
 * `pulse pretrain` and `pulse finetune` are thin wrappers around them.
 *
 *   TrainOpts o = train_opts_default(STAGE_PT);
 *   o.data_dir = "run/data"; o.out = "run/base_pt"; o.seed = 1;
 *   train_run(&o);                        // writes run/base_pt/ (HF layout)
 *
 * Every field of TrainOpts that is 0 (or NULL) takes the value of the recipe for
 * (world preset, stage) from the table in train.c; docs/training.md explains each row.
 */
#ifndef PULSE_TRAIN_H
#define PULSE_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "data.h"
#include "model.h"
#include "tokenizer.h"

/* Batches per length bucket: that many consecutive batches of the example stream are
 * sorted by length and taken in a shuffled order (less padding). */
#define TRAIN_BUCKET 16

/* A training recipe: one row of the table in train.c per (world preset, stage). */
typedef struct Recipe {
    const char *preset;         /* world preset name ("tiny", "small", "paper") */
    int stage;                  /* STAGE_PT or STAGE_FT */
    double epochs;              /* passes over the item stream (Item.repeat included) */
    int batch;                  /* sequences per optimizer step */
    float lr;                   /* peak learning rate */
    long warmup;                /* linear warm-up steps */
    LrKind schedule;            /* decay after warm-up */
    float weight_decay;         /* AdamW decoupled weight decay */
    float clip;                 /* global gradient-norm clip (<= 0: none) */
    TrainMode mode;             /* TRAIN_FULL or TRAIN_LORA (then merged before saving) */
    int lora_r;                 /* LoRA rank (TRAIN_LORA) */
    float lora_alpha;           /* LoRA alpha (TRAIN_LORA) */
    const char *lora_targets;   /* LoRA target spec (see LoraConfig.targets) */
    float replay;               /* fine-tuning: pre-training presentations mixed into each epoch,
                                   as a fraction of the fine-tuning presentations (0: none) */
    float vision_lr;            /* learning-rate scale of the vision tower and the projector
                                   (x lr; full training; docs/training.md: why small) */
    int mc_repeat;              /* letter multiple-choice items: presentations an epoch (x repeat) */
    long vision_warmup;         /* pre-training from scratch: steps of the vision warm-up that
                                   teaches the tower the scenes' figures first (0: none;
                                   docs/training.md, "The vision warm-up") */
    int general_repeat;         /* the general items genbench tests (scenes, general facts):
                                   presentations an epoch (fine-tuning: in the replay pool) */
    long mc_warmup;             /* pre-training from scratch: steps on the text-only questions
                                   and letter multiple choice (people, general facts) alone,
                                   after the vision warm-up (0: none; docs/training.md,
                                   "Letter multiple choice") */
    int mc_face_repeat;         /* a person's letter MC item with the face (format mc, image):
                                   presentations an epoch instead of mc_repeat (0: mc_repeat) */
    int mc_name_repeat;         /* a person's text-only letter MC item (by name): likewise
                                   (0: mc_repeat). The multiple-choice warm-up ignores both */
    long scene_warmup;          /* pre-training from scratch: steps on the scenes' captions,
                                   questions and letter multiple choice alone, after the
                                   multiple-choice warm-up (0: none; docs/training.md,
                                   "The scene warm-up") */
    long mixed_warmup;          /* pre-training from scratch: steps of the mixed warm-up, first
                                   after the vision warm-up: a batch of the scenes' captions,
                                   questions and letter multiple choice, then one of the
                                   multiple-choice warm-up's text items, in turn, at
                                   train_mixw_lr() (0: none; small: 8000; docs/training.md,
                                   "Where the decoder looks") */
    int vision_quadrant;        /* 1: the vision warm-up also names, from each scene token
                                   alone, the quadrant it is in (a linear head on every
                                   patch's projector output; docs/training.md, "The place by
                                   one attribute") */
    int vision_shape;           /* 1: and the shape of the figure in the quadrant it is in,
                                   likewise from each scene token alone (docs/training.md,
                                   "The shape in every token") */
    long warm_restart;          /* pre-training from scratch: after the main loop, steps of a
                                   second cosine cycle at TRAIN_RESTART_SCALE x lr (0: none;
                                   small: 3000; docs/training.md, "The warm restart") */
} Recipe;

/* The vision warm-up that pre-training from scratch runs first (Recipe.vision_warmup;
 * docs/training.md): `steps` steps, batches of 32 training scenes, in which only the vision
 * tower and the projector of m learn (AdamW, peak lr 1e-3, cosine), through linear heads
 * (dropped afterwards) that name each quadrant's figure and colour from that quadrant's
 * patch features and rebuild every patch's pixels (scenes and 32 other pre-training images
 * a step). `heads` adds per-token heads, each reading one scene patch's features alone:
 * TRAIN_VW_QUADRANT names the quadrant the patch is in (Recipe.vision_quadrant),
 * TRAIN_VW_SHAPE the shape of the figure in that quadrant, or none (Recipe.vision_shape).
 * Deterministic in (m, world, steps, seed, heads), whatever the thread count.
 * Returns the mean loss of the last min(100, steps) steps and the first step's in *first
 * (if not NULL); NAN, and m untouched, when the world has no scenes. Afterwards m's
 * optimizer state is reset and only the vision side is left trainable. */
enum { TRAIN_VW_QUADRANT = 1, TRAIN_VW_SHAPE = 2 };
double train_vision_warmup(Model *m, const World *w, long steps, uint64_t seed, int heads, double *first);

/* The learning rate of step `step` (from 0) of the multiple-choice warm-up
 * (Recipe.mc_warmup): a linear ramp over `warmup` steps (the recipe's) to TRAIN_MCW_LR, then
 * constant to the end (docs/training.md, "Letter multiple choice"). TRAIN_MCW_SCHEDULE names
 * that schedule in the training fingerprint and pulse run's stage hash. */
#define TRAIN_MCW_LR 1e-3f
#define TRAIN_MCW_SCHEDULE "ramp, then constant"
float train_mcw_lr(long step, long warmup);

/* The learning rate of step `step` of the mixed warm-up (Recipe.mixed_warmup): the
 * multiple-choice warm-up's ramp and constant, x TRAIN_MIXW_SCALE (2.5e-4 after the ramp).
 * At 1e-3 the decoder settles on the wrong quadrant of a scene for a third of the
 * questions; at 2.5e-4 it learns where to look (docs/training.md, "Where the decoder
 * looks"). TRAIN_MIXW_SCHEDULE names the phase in the training fingerprint and the stage hash. */
#define TRAIN_MIXW_SCALE 0.25f
#define TRAIN_MIXW_SCHEDULE "mixed warm-up: first, scenes and text in turn, 0.25 x the multiple-choice warm-up's rate"
float train_mixw_lr(long step, long warmup);

/* The warm restart (Recipe.warm_restart; small: 3,000 steps, `--warm-restart N`): after the
 * main loop, N more steps on the same items with the optimizer reset, their own data order
 * (stream seed: seed ^ TRAIN_RESTART_SALT) and a second cosine cycle, TRAIN_RESTART_WARMUP
 * warm-up steps to TRAIN_RESTART_SCALE x the peak rate (5e-4). Its bytes are those of
 * `pulse pretrain --base <the run without it> --seed <seed ^ TRAIN_RESTART_SALT> --steps N
 * --lr <lr x TRAIN_RESTART_SCALE> --warmup TRAIN_RESTART_WARMUP` (tests/test_train.c).
 * Without it more of the scenes' letter answers name another figure of the scene (docs/
 * training.md, "The warm restart"). TRAIN_RESTART_SCHEDULE names it in the fingerprint and
 * the stage hash. */
#define TRAIN_RESTART_SCALE 0.25f
#define TRAIN_RESTART_WARMUP 50
#define TRAIN_RESTART_SALT 0x7265737472ULL          /* "restr": seed ^ salt stays a JSON-exact seed */
#define TRAIN_RESTART_SCHEDULE "warm restart: optimizer reset, own order, cosine at 0.25 x lr, 50 warm-up steps"

/* The recipe for (preset, stage); unknown presets fall back to the "small" row. */
Recipe train_recipe(const char *preset, int stage);

/* The model pre-training from scratch starts from, with the world tokenizer's vocabulary:
 * config_default() (llava-1m, ../shared/bench/llava-1m.json) for small, paper and unknown
 * presets; for tiny, the test preset, a quarter of it (decoder 64 wide, 2 layers; vision
 * tower 32 wide, 1 layer; same images, patches and tokens), so that the whole protocol
 * runs in seconds (docs/training.md). */
LlavaConfig train_model_config(const char *preset, int vocab_size);

typedef struct TrainOpts {
    int stage;                  /* STAGE_PT (from random init or base) or STAGE_FT (from base) */
    const char *data_dir;       /* world directory (pulse data) */
    const World *world;         /* an already loaded world (optional; else loaded from data_dir) */
    const char *base;           /* base checkpoint dir; NULL: random init (pre-training only) */
    const char *out;            /* checkpoint dir to write (state in OUT.state while training) */
    const char *preset;         /* recipe name; NULL: the world's preset */
    uint64_t seed;              /* init, data order, rendering, augmentation */
    const int *exclude;         /* person indices (World.people) left out (oracles), or NULL */
    int n_exclude;
    /* Overrides of the recipe (0 / -1 = keep the recipe's value). */
    long steps;                 /* optimizer steps (0: from epochs) */
    double epochs;
    int batch;
    float lr;
    long warmup;                /* -1: recipe */
    int schedule;               /* -1: recipe, else an LrKind */
    int mode;                   /* -1: recipe, else TRAIN_FULL or TRAIN_LORA */
    int lora_r;
    float lora_alpha;
    double replay;              /* -1: recipe */
    double vision_lr;           /* -1: recipe */
    int mc_repeat;              /* 0: recipe */
    long vision_warmup;         /* -1: recipe */
    int general_repeat;         /* 0: recipe */
    long mc_warmup;             /* -1: recipe */
    int mc_face_repeat;         /* 0: recipe */
    int mc_name_repeat;         /* 0: recipe */
    long scene_warmup;          /* -1: recipe */
    long mixed_warmup;          /* -1: recipe */
    int vision_quadrant;        /* -1: recipe */
    int vision_shape;           /* -1: recipe */
    long warm_restart;          /* -1: recipe */
    /* Pre-training from scratch: a file holding the weights after the vision warm-up, read
     * instead of running it when it was written for the same initial weights, world, seed
     * and steps, written otherwise (NULL: none). The warm-up ignores the excluded people,
     * so `pulse run`'s oracle_pt reads what base_pt wrote: the same bytes, ~100 s less. */
    const char *vision_cache;
    /* Behaviour */
    double state_every;         /* seconds between saved training states (0: 30 s; < 0: never) */
    long stop_after;            /* test hook: save the state and return 3 after this many
                                   steps (0: off; env PULSE_TRAIN_STOP_AFTER sets it too) */
    long stop_warmup;           /* test hook: the same after this many steps of the warm-ups
                                   after the vision one (mixed, multiple-choice, scene: one
                                   count; 0: off); a stop on a warm-up's last step saves
                                   the state of the next part */
    int quiet;                  /* no progress bar or summary lines */
    /* Test hook: called with the items of every batch before its step (may be NULL); the
     * warm-ups' batches come first (multiple-choice, then scene), as steps -1, -2, ... */
    void (*on_batch)(void *ctx, long step, const Item *const *items, int n);
    void *ctx;
    /* Called after every step of the warm-ups and of the main loop (may be NULL): `pulse
     * run`'s pool sets the kernel threads there (no result depends on them). */
    void (*on_step)(void *step_ctx);
    void *step_ctx;
} TrainOpts;

/* The recipe of o's stage and preset (o->preset, else `preset`) with every override of o
 * applied; what the warm-ups become when o starts from a base is left to train_run (they
 * run only when pre-training from scratch). */
Recipe train_recipe_for(const TrainOpts *o, const char *preset);

/* Defaults for a stage: every override off, state every 30 s. */
TrainOpts train_opts_default(int stage);

/* Trains and writes the checkpoint o->out (config.json with a "pulse" provenance object,
 * model.safetensors, tokenizer.json, preprocessor_config.json; plus training.json with the
 * loss curve and timings, which are not part of the reproducible bytes). Resumes from
 * OUT.state when it matches the same arguments, and removes it when done. Returns 0, or 3
 * when stopped by stop_after (state saved). Bad input -> die_input (exit 2). */
int train_run(const TrainOpts *o);


/* ----------------------------------------------------------------------------
 * Gates: multiple-choice accuracy of the base models, both scorings. */
enum { SCORE_LETTER = 0, SCORE_LIKELIHOOD = 1 };

typedef struct GateRow {
    char what[64];              /* e.g. "base_ft fictitious image+text" */
    int scoring;                /* SCORE_LETTER or SCORE_LIKELIHOOD */
    double value;               /* accuracy in % */
    int n;                      /* items */
    double threshold;           /* % */
    int upper;                  /* 1: value must be <= threshold, 0: >= */
    int pass;
} GateRow;

typedef struct GateReport {
    int n;
    GateRow row[24];
    int all_pass;
    double seconds;             /* evaluation time */
} GateReport;

/* MC accuracy (%) of m on the world's evaluation items of src about people (NULL: all of
 * src) in that modality (MOD_IMAGE / MOD_TEXT / MOD_ANY); *n_items gets the count.
 * SCORE_LETTER: greedy generation, first non-space character upper-cased must be the
 * correct letter (MLLMU-Bench). SCORE_LIKELIHOOD: each option scored as the answer to the
 * question stem (mc_option_answer: a person's trained answer sentence with the option's
 * value, genbench's option text), mean log-prob per token; the best must be the correct one. */
double train_mc_accuracy(Model *m, const Tokenizer *tok, const World *w, EvalSource src,
                         const int *people, int n_people, int modality, int scoring, int *n_items);

/* The gates of issue 5 for whichever models are given (either may be NULL): base_pt on
 * the celebrities (>= 85), genbench (>= 85), the fictitious people (<= 35); base_ft on the
 * fictitious people (>= 85) and genbench (>= 85); each modality and both scorings. Prints
 * the table to f when f != NULL. Returns all_pass. */
int train_gates(Model *pt, Model *ft, const Tokenizer *tok, const World *w, GateReport *r, FILE *f);

/* `pulse pretrain --data DIR --out CKPT [...]` and `pulse finetune --data DIR --base CKPT
 * --out CKPT [...]`. */
int cmd_pretrain(int argc, char **argv);
int cmd_finetune(int argc, char **argv);

#endif
