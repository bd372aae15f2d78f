/* model.h: the tiny LLaVA (CLIP ViT + 2-layer GELU projector + Llama decoder) with HF
 * transformers' math and tensor names, LoRA with PEFT semantics, AdamW, and inference
 * with a KV cache.
 *
 * - One parameter table (HF name, shape, offset into one float block) is the single
 *   source of truth: init, save, load, the optimizer and the tests walk it. Gradients
 *   and AdamW's m and v have exactly the parameters' layout, so the optimizer,
 *   zero-grad and clipping are flat loops over the trainable ranges.
 * - LoRA adapters live in a second flat block (A then B for each target module, in
 *   table order) with its own grad, m and v blocks.
 * - Training: model_forward() builds the whole forward on a Tape; tape_backward()
 *   then accumulates into the grads of the trainable parameters (model_set_train).
 * - Inference: model_prefill() runs prompts through the same forward with recording
 *   off and fills a KvCache; model_decode_step() appends one token per sequence with
 *   plain kernels. model_generate() and model_score() batch items on top of these.
 *
 * Sequences: a Batch holds B right-padded text sequences (token ids) with at most one
 * `<image>` id each; the model expands that id to N_p positions (one per patch) whose
 * input embeddings are the projected image features. Every per-position output is in
 * this merged ("expanded") layout, [B, T] with T = the longest merged sequence.
 */
#ifndef PULSE_MODEL_H
#define PULSE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "tensor.h"

typedef struct Json Json;

/* ----------------------------------------------------------------------------
 * Config: the fields of a HF LLaVA config.json that the math needs. */
typedef struct LlavaConfig {
    /* text_config (Llama) */
    int vocab_size;             /* V */
    int hidden_size;            /* D */
    int intermediate_size;      /* SwiGLU width */
    int num_hidden_layers;      /* decoder layers */
    int num_attention_heads;    /* H */
    int num_key_value_heads;    /* Hkv, divides H (grouped-query attention) */
    double rms_norm_eps;
    double rope_theta;
    int tie_word_embeddings;    /* lm_head shares embed_tokens */
    int max_position_embeddings;/* longest merged sequence (prompt + image + answer) */
    double initializer_range;   /* std of normal init for Llama and projector weights */
    /* vision_config (CLIP) */
    int v_hidden_size;          /* D_v */
    int v_intermediate_size;
    int v_num_hidden_layers;
    int v_num_attention_heads;
    int image_size;             /* square images, pixels */
    int patch_size;             /* P; N_p = (image_size / P)^2 */
    int num_channels;           /* 3 */
    int v_quick_gelu;           /* hidden_act: 1 "quick_gelu", 0 "gelu" */
    double layer_norm_eps;
    double v_initializer_range;  /* CLIP initializer_range (factor 1) */
    /* LLaVA */
    int image_token_index;
    int vision_feature_layer;   /* index into CLIP hidden_states: -1 last, -2 penultimate */
    int pad_token_id, bos_token_id, eos_token_id;
} LlavaConfig;

/* The defaults: ../shared/bench/llava-1m.json (V 512, D 128, 4 layers; ViT 64-dim,
 * 2 layers, 32x32 images, 8x8 patches) with special ids pad 0, bos 1, eos 2, image 3. */
LlavaConfig config_default(void);
/* Reads a HF LLaVA config.json DOM; every impossible value is an input error naming
 * path and field (exit 2). Absent fields keep config_default() values. */
LlavaConfig config_from_json(const Json *j, const char *path);
/* The HF LLaVA config.json DOM of c (model_type llava / llama / clip_vision_model). */
Json *config_to_json(const LlavaConfig *c);
/* Validates c; reasons go to die_input(path, ...). */
void config_validate(const LlavaConfig *c, const char *path);
/* N_p: image positions per image = (image_size / patch_size)^2. */
int config_num_patches(const LlavaConfig *c);
/* Number of CLIP encoder layers the features need (the rest are never run). */
int config_vision_layers_used(const LlavaConfig *c);

/* ----------------------------------------------------------------------------
 * Parameter table */
typedef enum { INIT_NORMAL, INIT_ONES, INIT_ZEROS } InitKind;

typedef struct ParamInfo {
    char name[112];             /* HF name, e.g. language_model.model.layers.0.self_attn.q_proj.weight */
    int ndim;
    int shape[4];               /* PyTorch shape; linear weights are [out, in] */
    size_t offset;              /* into the flat blocks, in floats */
    size_t n;                   /* number of floats */
    InitKind init;
    float std;                  /* INIT_NORMAL standard deviation */
    uint8_t decay;              /* AdamW weight decay applies (not to biases and norm weights) */
    uint8_t linear;             /* a Linear weight [out, in]: a possible LoRA target */
    uint8_t trainable;          /* set by model_set_train */
} ParamInfo;

typedef struct VisionLayer {    /* indices into the table */
    int k_w, k_b, v_w, v_b, q_w, q_b, o_w, o_b, ln1_w, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_w, ln2_b;
} VisionLayer;
typedef struct TextLayer {
    int q, k, v, o, gate, up, down, ln_in, ln_post;
} TextLayer;

/* ----------------------------------------------------------------------------
 * LoRA (PEFT semantics): for a target Linear W [out, in],
 *   y = W x (+ b) + (alpha / r) * B (A dropout(x)),  A [r, in], B [out, r].
 * A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform(a = sqrt 5)), B = 0. */
typedef struct LoraConfig {
    int r;
    float alpha;
    float dropout;              /* lora_dropout; applied only when ForwardOpts.rng is set */
    const char *targets;        /* comma list: groups "llm", "projector", "vision", or PEFT
                                   target names (full module name or its last components) */
    uint64_t seed;              /* A's init stream */
} LoraConfig;

typedef struct LoraModule {
    int param;                  /* index of the base weight in the table */
    int in, out;
    size_t a_off, b_off;        /* into the LoRA blocks: A [r, in], B [out, r] */
} LoraModule;

typedef struct Lora {
    int attached;
    int r;
    float alpha, dropout, scale;/* scale = alpha / r */
    int n;                      /* target modules, in table order */
    LoraModule *mod;
    int *by_param;              /* [n_params]: module index of a base weight, or -1 */
    size_t n_floats;
    float *w, *g, *m, *v;       /* flat blocks (g, m, v allocated when trained) */
    Tensor *tA, *tB;            /* [n] tensor headers over w (grads when trainable) */
    uint8_t *trainable;         /* [n] */
    char *targets;              /* the spec it was attached with */
} Lora;

/* ----------------------------------------------------------------------------
 * Model */
typedef enum { TRAIN_NONE, TRAIN_FULL, TRAIN_LORA } TrainMode;

typedef struct Model {
    LlavaConfig cfg;
    int n_patches;              /* N_p */
    int n_params;               /* table entries */
    ParamInfo *params;
    size_t n_floats;            /* size of each flat block */
    float *w;                   /* parameters */
    float *g;                   /* gradients (NULL until trained) */
    float *m, *v;               /* AdamW moments (NULL until the first step) */
    long opt_step;              /* AdamW steps taken (bias correction) */
    Tensor *t;                  /* [n_params] headers over w (grad = g + offset iff trainable) */
    TrainMode mode;
    /* table indices by role */
    int v_patch, v_class, v_pos, v_pre_w, v_pre_b, v_post_w, v_post_b;
    VisionLayer *vl;
    int p1_w, p1_b, p2_w, p2_b;
    int embed, norm, lm_head;   /* lm_head = embed when tied */
    TextLayer *tl;
    Lora lora;
    Tape *infer;                /* inference arena (recording off), created on first use */
    float *dpack;               /* the decoder's weights packed for model_decode_step
                                   (model_decode_pack), NULL when not packed */
    size_t *dpack_off;          /* [n_params]: offset in dpack, SIZE_MAX if not packed */
} Model;

/* A model with config c, parameters zero (call model_init or load weights). */
Model *model_new(const LlavaConfig *c);
/* Random init from seed (each tensor from its own stream derived from seed and its name):
 * Llama and projector Linear/Embedding ~ N(0, initializer_range); CLIP as HF's
 * CLIPPreTrainedModel (factor 1); norms 1; biases 0. */
void model_init(Model *m, uint64_t seed);
/* Frees the model, its adapters, grads, moments and inference arena. */
void model_free(Model *m);
/* A deep copy of the weights and LoRA adapters (no grads, no optimizer state,
 * TRAIN_NONE): the frozen reference for KL / NPO / RMU. */
Model *model_clone(const Model *m);
/* Copies src's weights (and adapter weights) into dst of the same shape. */
void model_copy_weights(Model *dst, const Model *src);
/* Packs the decoder's linear weights once for model_decode_step (~8% of an evaluation is
 * packing them again every step otherwise); same results. The packed copy is only valid
 * while the weights do not change: pack before a stretch of decoding with fixed weights
 * (eval_run does), unpack after. Packing again replaces the copy. */
void model_decode_pack(Model *m);
void model_decode_unpack(Model *m);
/* Index of a parameter by HF name, or -1. */
int model_find_param(const Model *m, const char *name);
/* Number of base parameters (floats) and of trainable ones under the current mode. */
size_t model_num_params(const Model *m);
size_t model_num_trainable(const Model *m);

/* ----------------------------------------------------------------------------
 * Batches: B right-padded sequences of text token ids with next-token targets. */
typedef struct Batch {
    int B, T;                   /* rows used, longest text length among them */
    int cap_B, cap_T;
    int pad_id;                 /* id in unused slots */
    int *ids;                   /* [cap_B * cap_T], row b at b * cap_T; pad id past len */
    int *len;                   /* [cap_B] text length */
    int *targets;               /* [cap_B * cap_T] id of the NEXT token to predict at text
                                   position t, or -1 (no loss). Text-aligned: the model maps
                                   them to the merged layout (the target of an `<image>` id
                                   goes to its last image position). */
    const float **pixels;       /* [cap_B] CHW pixels of the row's image, or NULL */
} Batch;

/* An empty batch with room for cap_B rows of cap_T text tokens. */
void batch_init(Batch *b, int cap_B, int cap_T, int pad_id);
void batch_free(Batch *b);
/* Removes every row (keeps the capacity). */
void batch_clear(Batch *b);
/* Appends a row: ids[0..n), the loss on every token from ids[answer_start] to the end
 * (answer + EOS; answer_start = 1 for a whole-sequence loss, n for none). Returns the
 * row index. pixels must be non-NULL iff ids hold the image token. */
int batch_add(Batch *b, const int *ids, int n, int answer_start, const float *pixels);

/* ----------------------------------------------------------------------------
 * Training forward (on the tape) */
typedef struct ForwardOpts {
    int logits;                 /* 0 none; 1 every position [B*T, V]; 2 labelled positions only
                                   [n_labels, V] (in (b, t) order) */
    int want_hidden;            /* return the output of decoder layer hidden_layer */
    int hidden_layer;           /* 0-based decoder layer (HF hidden_states[l + 1]) */
    int hidden_only;            /* stop after that layer: no logits, no loss */
    int no_grad;                /* record nothing (reference model, evaluation) */
    Rng *rng;                   /* LoRA dropout stream (training); NULL = no dropout */
    struct KvCache *kv;         /* internal: prefill fills this cache */
} ForwardOpts;

typedef struct ForwardOut {
    int B, T;                   /* T = merged length (image positions included) */
    Tensor *loss;               /* [1] HF token mean: -sum log p / number of labelled positions */
    Tensor *logp;               /* [B, T] log p(target) (0 where unlabelled) */
    Tensor *seq_logp;           /* [B] per-sequence sum of logp */
    Tensor *logits;             /* per ForwardOpts.logits, or NULL */
    Tensor *hidden;             /* [B*T, D] output of decoder layer hidden_layer, or NULL */
    int *n_labels;              /* [B] labelled positions per sequence */
    int n_labels_total;
    int *len;                   /* [B] merged length of each sequence */
    int *targets;               /* [B*T] merged targets (-1 none) */
    uint8_t *valid;             /* [B*T] 1 = real position, 0 = padding (KL / RMU masks) */
    uint8_t *labelled;          /* [B*T] 1 = has a target */
} ForwardOut;
/* Everything returned lives in tp's arena until tape_reset. */

/* Runs the model on batch bt, recording on tp (unless opts->no_grad). opts may be NULL. */
ForwardOut model_forward(Model *m, Tape *tp, const Batch *bt, const ForwardOpts *opts);
/* The image features the decoder would see for n images (CHW pixels, normalised): the
 * projector's output [n * n_patches, hidden_size], patches in row-major order, on the tape
 * (the vision warm-up of pre-training trains the tower through them). */
Tensor *model_image_features(Model *m, Tape *tp, const float *const *pix, int n);
/* Reference rows: a no-grad forward whose logits become log-softmax rows in place,
 * [B*T, V] in the same merged layout as model_forward on bt (arena memory). Writes the
 * per-sequence log-prob sums to seq_logp [B] when non-NULL. */
float *model_ref_logprobs(Model *ref, Tape *tp, const Batch *bt, float *seq_logp);

/* ----------------------------------------------------------------------------
 * Training: which parameters learn, and AdamW */

/* TRAIN_FULL: every base parameter except names starting with one of the comma-separated
 * frozen prefixes (e.g. "vision_tower."); TRAIN_LORA: only adapter parameters (adapters of
 * modules under a frozen prefix stay frozen); TRAIN_NONE: nothing. Allocates grads. */
void model_set_train(Model *m, TrainMode mode, const char *frozen_prefixes);
/* Narrows the current selection to tensors (or adapters of modules) whose names start
 * with one of the comma-separated prefixes, e.g. RMU's
 * "language_model.model.layers.5.,language_model.model.layers.6." */
void model_train_only(Model *m, const char *prefixes);
/* Zeroes the gradients of every trainable parameter. */
void model_zero_grad(Model *m);
/* Global L2 norm of the trainable gradients; scales them by max_norm / (norm + 1e-6) when
 * the norm exceeds max_norm (PyTorch clip_grad_norm_). max_norm <= 0: no clipping. */
double model_clip_grad(Model *m, double max_norm);

typedef struct AdamW {
    float beta1, beta2, eps;    /* PyTorch defaults 0.9, 0.999, 1e-8 */
    float weight_decay;         /* decoupled: p -= lr * wd * p (PyTorch default 0.01) */
    float vision_lr_scale;      /* the vision tower's and the projector's base weights get
                                   lr x this (1: one learning rate; LoRA blocks: always 1) */
} AdamW;
AdamW adamw_default(void);
/* The same update on a plain array of n parameters (decay applied to all of them), at
 * step t >= 1 of its own: for parameters outside the model's table (train.c's heads). */
void adamw_array(float *w, const float *g, float *mm, float *vv, size_t n, const AdamW *o, float lr, long t);
/* One AdamW step with learning rate lr on every trainable parameter (bias-corrected). */
void model_adamw_step(Model *m, const AdamW *opt, float lr);
/* Forgets the moments and the step count (a new optimizer). */
void model_reset_optimizer(Model *m);

typedef enum { LR_CONSTANT, LR_LINEAR, LR_COSINE } LrKind;
/* HF schedules: linear warm-up from 0 over `warmup` steps, then constant, linear decay to
 * 0 at `total`, or cosine decay to 0 at `total`. step counts from 0. */
float lr_schedule(LrKind kind, long step, long total, long warmup, float peak);
/* "constant" | "linear" | "cosine" -> LrKind; anything else -> die_input(NULL, ...). */
LrKind lr_kind_parse(const char *s);

/* ----------------------------------------------------------------------------
 * LoRA */

/* Table indices of the Linear weights that spec selects (see LoraConfig.targets), in
 * table order, into ids (room for n_params). Returns their number, or -1 when an item
 * matches nothing (that item is copied to bad[0..badn) when bad != NULL). */
int lora_select(const Model *m, const char *spec, int *ids, char *bad, size_t badn);
/* Attaches fresh adapters (A random, B zero) to the modules cfg->targets selects
 * (a target matching nothing -> die_input). */
void lora_attach(Model *m, const LoraConfig *cfg);
/* Attaches zero adapters to explicit modules (table indices), for loading. */
void lora_attach_modules(Model *m, int r, float alpha, float dropout, const int *ids, int n);
/* W += (alpha/r) B A for every adapter, then detaches them (PEFT merge_and_unload). */
void lora_merge(Model *m);
/* Drops the adapters without merging (back to the base model). */
void lora_detach(Model *m);
/* PEFT module name of adapter i: the base weight's name without ".weight". */
void lora_module_name(const Model *m, int i, char *buf, size_t n);

/* ----------------------------------------------------------------------------
 * Inference with a KV cache (no tape) */
typedef struct KvCache {
    int B, cap;                 /* sequences, positions per sequence */
    int L, Hkv, hd, kvd;        /* layers, kv heads, head_dim, Hkv * hd */
    float *k;                   /* [L][B][Hkv][hd][cap] keys after RoPE, transposed (a decode
                                   step's scores are then contiguous axpys over positions) */
    float *v;                   /* [L][B][Hkv][cap][hd] */
    int *len;                   /* [B] positions filled */
} KvCache;

/* A cache for B rows of cap merged positions each. */
void kv_init(KvCache *kv, const LlavaConfig *c, int B, int cap);
void kv_free(KvCache *kv);
/* Runs the prompts of bt (targets ignored) and fills kv rows 0..B-1; writes the logits of
 * each row's last prompt position to logits [B, V]. */
void model_prefill(Model *m, KvCache *kv, const Batch *bt, float *logits);
/* Appends tokens[i] to cache row rows[i] (i < n) at that row's next position and writes
 * the next-token logits to logits [n, V]. */
void model_decode_step(Model *m, KvCache *kv, const int *rows, const int *tokens, int n, float *logits);

typedef struct GenItem {
    const int *ids;             /* prompt token ids (with at most one image token) */
    int n;
    const float *pixels;        /* CHW pixels, or NULL */
} GenItem;
typedef struct GenResult {
    int *ids;                   /* generated ids, EOS excluded (malloc'ed) */
    int n;
    int eos;                    /* 1 if stopped by EOS, 0 if by max_new */
} GenResult;
/* Batched greedy decoding of n items, each until EOS or max_new new tokens. */
void model_generate(Model *m, const GenItem *items, int n, int max_new, GenResult *out);
void gen_result_free(GenResult *r);                 /* frees r->ids */

enum { SCORE_MOMENTS = 1, SCORE_ROWS = 2 };
typedef struct ScoreItem {
    const int *ids;             /* prompt + answer (+ EOS) token ids */
    int n;
    int answer_start;           /* index in ids of the first scored token */
    const float *pixels;        /* CHW pixels, or NULL */
} ScoreItem;
typedef struct ScoreResult {
    int n;                      /* scored tokens = n - answer_start */
    int start;                  /* merged position of the first scored token */
    float *logp;                /* [n] log p(token | everything before) */
    double sum;                 /* sum of logp */
    int *argmax;                /* [n] greedy prediction at each scored position */
    float *mu, *sigma;          /* [n] mean and std of log p under p (SCORE_MOMENTS, Min-K%++) */
    float *rows;                /* [n * V] full log-softmax rows (SCORE_ROWS) */
} ScoreResult;
/* Teacher-forced per-token log-probs of each item's answer, batched. flags: SCORE_*. */
void model_score(Model *m, const ScoreItem *items, int n, int flags, ScoreResult *out);
void score_result_free(ScoreResult *r);             /* frees the arrays of r */

/* `pulse bench train`: tokens/s of full and LoRA training steps. */
int cmd_bench_train(int argc, char **argv);

#endif
