/* unlearn.c: the unlearning methods (GA, GD, GA+KLR, NPO, NPO+RT, SimNPO, IdkPO, RMU)
 * and one unlearning operation, unlearn_run(), which the protocol driver calls per cell.
 *
 * Design
 * - Losses follow open-unlearning (OU) by default, term by term (methods-metrics.md §1-§2):
 *   NLL = HF token mean over the labelled tokens of a batch (model_forward's loss);
 *   sequence log-probs = sums over answer tokens + EOS (ForwardOut.seq_logp). Every place
 *   where the frameworks disagree is a switch (UlVariant, UlKlMask), recorded in the result.
 *   docs/methods.md states each loss exactly as coded here.
 * - Loss terms are small compositions of tape ops (op_logsigmoid, op_kl_ref, op_sqdiff_rows,
 *   ...), so their gradients come from the ops' tested backwards; unlearn_loss() assembles a
 *   method from them for one prepared step. Tests check the terms on hand-computable inputs
 *   and the assembled loss with a directional finite difference through a tiny model.
 * - Data: an epoch is one pass over the forget items in a seeded random order; each forget
 *   item is paired with a retain item drawn uniformly at random (OU's ForgetRetainDataset).
 *   An item is rendered (phrasing, MC options and letter, image augmentation, IDK answer)
 *   from an Rng derived from (seed, epoch, item), so a run is reproducible and independent
 *   of batch boundaries. The frozen reference is evaluated per batch with a no-grad forward,
 *   as OU does every step; with fixed renderings (one per operation) the reference's
 *   sequence log-probs are cached per item instead.
 * - Parameters: LoRA (PEFT semantics) on the LLM's linears by default; projector + LLM and
 *   vision + projector + LLM for the ablation; lora_r = 0 trains those weights fully.
 * - Safety: a step whose loss or gradient norm is not finite is never applied. The
 *   operation stops, records status "diverged" and the step, and rolls the model back to
 *   its state before the call (adapters detached, or the weights restored), so a broken
 *   model is never returned or written.
 */
#include "unlearn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "io.h"

#define UL_MAX_IDS 1024         /* token ids of one rendered example (prompt + answer) */
#define UL_TEXT 4096            /* bytes of a rendered question / answer */
#define UL_PROBE_BATCH 32       /* sequences per no-grad forward in probes */
#define UL_PROBE_ITEMS 256      /* items per side the probe looks at (evenly spaced) */

/* ============================================================================
 * Names and defaults */

static const char *const method_names[UL_N_METHODS] = {
    "ga", "gd", "ga_klr", "npo", "npo_rt", "simnpo", "idkpo", "rmu"};

const char *unlearn_method_name(UlMethod m) {
    CHECK(m >= 0 && m < UL_N_METHODS);
    return method_names[m];
}

int unlearn_method_parse(const char *s) {
    static const struct { const char *alias; UlMethod m; } aliases[] = {
        {"graddiff", UL_GD}, {"grad_diff", UL_GD}, {"klr", UL_KLR}, {"ga+klr", UL_KLR},
        {"kl", UL_KLR}, {"npo+rt", UL_NPO_RT}, {"npo_gdr", UL_NPO_RT}, {"idk_dpo", UL_IDKPO},
        {"idkdpo", UL_IDKPO}, {"dpo", UL_IDKPO}};
    for (int i = 0; i < UL_N_METHODS; i++)
        if (strcmp(s, method_names[i]) == 0) return i;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(s, aliases[i].alias) == 0) return aliases[i].m;
    return -1;
}

const char *unlearn_setting_name(UlSetting s) { return s == UL_PRETRAINED ? "pretrained" : "finetuned"; }

const char *unlearn_params_name(UlParams p) {
    return p == UL_PARAMS_ALL ? "all" : p == UL_PARAMS_PROJ_LLM ? "proj+llm" : "llm";
}

const char *unlearn_params_targets(UlParams p) {
    return p == UL_PARAMS_ALL ? "vision,projector,llm" : p == UL_PARAMS_PROJ_LLM ? "projector,llm" : "llm";
}

/* Frozen prefixes for full-parameter training (lora_r = 0) of a params choice. */
static const char *params_frozen(UlParams p) {
    return p == UL_PARAMS_ALL ? NULL : p == UL_PARAMS_PROJ_LLM ? "vision_tower." : "vision_tower.,multi_modal_projector.";
}

static int needs_ref(UlMethod m) {
    return m == UL_KLR || m == UL_NPO || m == UL_NPO_RT || m == UL_IDKPO || m == UL_RMU;
}
static int has_retain_term(UlMethod m) { return m != UL_GA && m != UL_NPO; }
/* NPO-style methods compare sequence log-probs with the reference's (cacheable per item). */
static int uses_seq_ref(UlMethod m) { return m == UL_NPO || m == UL_NPO_RT || m == UL_IDKPO; }

/* The defaults table (docs/methods.md): sources OU = open-unlearning configs, MLLMU =
 * MLLMU-Bench README commands, "cal" = calibrated for this scale (see docs). */
typedef struct MethodDefaults {
    float lr;                   /* cal (docs §6) */
    float beta, alpha, gamma, delta;
} MethodDefaults;

static const MethodDefaults method_defaults[UL_N_METHODS] = {
    /*               lr       beta  alpha gamma  delta */
    [UL_GA]     = {4e-3f,   0.0f, 0.0f, 1.0f,  0.0f},   /* OU: gamma 1 */
    [UL_GD]     = {6e-3f,   0.0f, 1.0f, 1.0f,  0.0f},   /* OU GradDiff: gamma 1, alpha 1 */
    [UL_KLR]    = {4.5e-3f, 0.0f, 1.0f, 1.0f,  0.0f},   /* OU GradDiff (KL): gamma 1, alpha 1 */
    [UL_NPO]    = {4e-3f,   0.1f, 0.0f, 1.0f,  0.0f},   /* OU NPO: beta 0.1; alpha 0 = pure NPO */
    [UL_NPO_RT] = {4.5e-3f, 0.1f, 1.0f, 1.0f,  0.0f},   /* OU NPO: beta 0.1, gamma 1, alpha 1 */
    [UL_SIMNPO] = {1.5e-2f, 4.5f, 1.0f, 1.0f,  0.0f},   /* OU SimNPO: beta 4.5, delta 0, alpha 1; gamma cal (OU 0.125) */
    [UL_IDKPO]  = {5e-3f,   0.1f, 1.0f, 1.0f,  0.0f},   /* OU DPO (idk): beta 0.1, gamma 1, alpha 1 */
    [UL_RMU]    = {1e-2f,   0.0f, 1.0f, 1.0f,  0.0f},   /* OU RMU: gamma 1, alpha 1 */
};

UnlearnOpts unlearn_opts_default(UlMethod method, UlSetting setting) {
    CHECK(method >= 0 && method < UL_N_METHODS);
    const MethodDefaults *d = &method_defaults[method];
    UnlearnOpts o;
    memset(&o, 0, sizeof o);
    o.method = method;
    o.setting = setting;
    o.forget_data = UL_FD_DEFAULT;
    o.params = UL_PARAMS_LLM;
    o.lora_r = 16;              /* MLLMU-Bench: r 16, alpha 16 */
    o.lora_alpha = 16.0f;
    o.lora_dropout = 0.0f;      /* MLLMU 0.05; 0 keeps NPO's log-ratio exactly 0 at step 0 */
    o.lr = d->lr;
    o.epochs = 0.0;             /* cal: auto, UL_EXPOSURE presentations per forget person */
    o.steps = 0;
    o.batch = 8;
    o.schedule = LR_LINEAR;     /* MLLMU: linear decay, no warm-up */
    o.warmup = 0;
    o.weight_decay = 0.01f;     /* OU / torch AdamW */
    o.clip = 1.0f;              /* HF Trainer max_grad_norm */
    o.beta = d->beta; o.alpha = d->alpha; o.gamma = d->gamma; o.delta = d->delta;
    o.rmu_layer = 1;            /* cal: OU layer 7 of 32; here the 2nd of 4 */
    o.rmu_scale = 2.0f;         /* cal: s = rmu_scale * mean |h| at that layer */
    o.variant = UL_VARIANT_OU;
    o.kl_mask = UL_KL_ANSWER;   /* cal: OU averages over every position (docs §6) */
    o.fixed_render = 0;
    o.augment = 1;
    o.seed = 1;
    o.merge = 1;
    o.ref_policy = "previous";
    o.probe = 0;                /* the driver evaluates anyway; `pulse unlearn` turns it on */
    o.quiet = 1;
    return o;
}

/* ============================================================================
 * Loss terms */

/* A constant [n] tensor in the arena. */
static Tensor *const_vec(Tape *tp, const float *x, int n) {
    int s[1] = {n};
    return tensor_const(tp, 1, s, x);
}

static float *arena_floats(Tape *tp, size_t n) { return arena_alloc(&tp->arena, (n ? n : 1) * sizeof(float)); }

Tensor *ul_term_npo(Tape *tp, Tensor *seq_logp, const float *ref, float beta) {
    int B = (int)seq_logp->n;
    CHECK(B > 0 && beta > 0.0f);
    float *neg = arena_floats(tp, (size_t)B);
    for (int i = 0; i < B; i++) neg[i] = -ref[i];
    /* d = log p(y|x) - log p_ref(y|x); L = -(2/b) mean log sigmoid(-b d) */
    Tensor *d = op_add(tp, seq_logp, const_vec(tp, neg, B));
    Tensor *ls = op_logsigmoid(tp, op_scale(tp, d, -beta));
    return op_scale(tp, op_mean(tp, ls), -2.0f / beta);
}

Tensor *ul_term_simnpo(Tape *tp, Tensor *seq_logp, const int *n_labels, float beta, float delta) {
    int B = (int)seq_logp->n, nv = 0;
    CHECK(B > 0 && beta > 0.0f);
    float *inv = arena_floats(tp, (size_t)B), *off = arena_floats(tp, (size_t)B), *wt = arena_floats(tp, (size_t)B);
    for (int i = 0; i < B; i++) nv += n_labels[i] > 0;
    for (int i = 0; i < B; i++) {
        /* x_i = beta * (avgNLL_i - delta), avgNLL_i = -s_i / T_i  (OU simnpo.py) */
        inv[i] = n_labels[i] > 0 ? -beta / (float)n_labels[i] : 0.0f;
        off[i] = -beta * delta;
        wt[i] = n_labels[i] > 0 ? 1.0f / (float)nv : 0.0f;
    }
    Tensor *x = op_add(tp, op_mul(tp, seq_logp, const_vec(tp, inv, B)), const_vec(tp, off, B));
    Tensor *ls = op_mul(tp, op_logsigmoid(tp, x), const_vec(tp, wt, B));
    return op_scale(tp, op_sum(tp, ls), -2.0f / beta);
}

Tensor *ul_term_dpo(Tape *tp, Tensor *win, const float *win_ref, Tensor *lose, const float *lose_ref, float beta) {
    int B = (int)win->n;
    CHECK(B > 0 && (int)lose->n == B && beta > 0.0f);
    float *c = arena_floats(tp, (size_t)B);
    for (int i = 0; i < B; i++) c[i] = lose_ref[i] - win_ref[i];
    /* d = (w - w_ref) - (l - l_ref) = w - l + (l_ref - w_ref) */
    Tensor *d = op_add(tp, op_add(tp, win, op_scale(tp, lose, -1.0f)), const_vec(tp, c, B));
    Tensor *ls = op_logsigmoid(tp, op_scale(tp, d, beta));
    return op_scale(tp, op_mean(tp, ls), -2.0f / beta);
}

Tensor *ul_term_kl(Tape *tp, Tensor *logits, const float *ref_rows, const uint8_t *mask, float denom) {
    CHECK(denom > 0.0f);
    Tensor *kl = op_kl_ref(tp, logits, ref_rows, mask);          /* [N] per-row KL */
    return op_scale(tp, op_sum(tp, kl), 1.0f / denom);
}

void ul_rmu_mask(const ForwardOut *f, uint8_t *out) {
    for (int b = 0; b < f->B; b++)
        for (int t = 0; t < f->T; t++) {
            size_t i = (size_t)b * f->T + t;
            out[i] = t > 0 && f->labelled[i - 1];
        }
}

Tensor *ul_term_rmu(Tape *tp, Tensor *hidden, const float *target, int target_rows,
                    const uint8_t *mask, int B, int T) {
    int N = B * T, D = tensor_cols(hidden);
    CHECKF((int)tensor_rows(hidden) == N, "ul_term_rmu: hidden has %zu rows, expected %d", tensor_rows(hidden), N);
    int s2[2] = {N, D};
    Tensor *tg;
    if (target_rows) tg = tensor_const(tp, 2, s2, target);
    else {
        /* the control vector, repeated for every position */
        tg = tensor_new(tp, 2, s2, 0);
        for (int i = 0; i < N; i++) memcpy(tg->data + (size_t)i * D, target, (size_t)D * sizeof(float));
    }
    /* weight of position t of row b: mask / (|M_b| * number of rows with |M_b| > 0) */
    float *wt = arena_floats(tp, (size_t)N);
    int rows = 0;
    for (int b = 0; b < B; b++) {
        int m = 0;
        for (int t = 0; t < T; t++) m += mask[b * T + t] != 0;
        rows += m > 0;
    }
    for (int b = 0; b < B; b++) {
        int m = 0;
        for (int t = 0; t < T; t++) m += mask[b * T + t] != 0;
        for (int t = 0; t < T; t++)
            wt[b * T + t] = mask[b * T + t] && m ? 1.0f / ((float)m * (float)rows) : 0.0f;
    }
    Tensor *sq = op_sqdiff_rows(tp, hidden, tg);                 /* [N] (1/D) |h - c|^2 */
    return op_sum(tp, op_mul(tp, sq, const_vec(tp, wt, N)));
}

/* ============================================================================
 * The method loss of one step */

/* Reference sequence log-probs of a batch (no-grad forward of ref). */
static float *ref_seq(Model *ref, Tape *tp, const Batch *b) {
    CHECKF(ref, "unlearn: this method needs a reference model");
    ForwardOpts fo = {0};
    fo.no_grad = 1;
    ForwardOut f = model_forward(ref, tp, b, &fo);
    float *s = arena_floats(tp, (size_t)b->B);
    memcpy(s, f.seq_logp->data, (size_t)b->B * sizeof(float));
    return s;
}

/* Batch-mean token NLL (MLLMU's NPO log-ratio) from per-row sums and label counts. */
static float batch_mean_nll(const float *seq, const int *n_labels, int B) {
    double s = 0.0;
    long n = 0;
    for (int i = 0; i < B; i++) { s += seq[i]; n += n_labels[i]; }
    return n ? (float)(-s / (double)n) : 0.0f;
}

/* Forget term of opts->method on b (unweighted). */
static Tensor *forget_term(Model *m, Model *ref, Tape *tp, const UnlearnOpts *o, const float *control,
                           const UlBatch *b, UlTerms *t) {
    ForwardOpts fo = {0};
    fo.rng = b->rng;
    switch (o->method) {
    case UL_GA: case UL_GD: case UL_KLR: {
        ForwardOut f = model_forward(m, tp, &b->forget, &fo);
        return op_scale(tp, f.loss, -1.0f);                         /* -NLL_f */
    }
    case UL_NPO: case UL_NPO_RT: {
        ForwardOut f = model_forward(m, tp, &b->forget, &fo);
        t->ref_forget = b->ref_forget ? (float *)b->ref_forget : ref_seq(ref, tp, &b->forget);
        if (o->variant == UL_VARIANT_MLLMU) {
            /* -(2/b) log sigmoid(b (NLL_cur - NLL_ref)), batch-mean token NLLs */
            float nll_ref = batch_mean_nll(t->ref_forget, f.n_labels, f.B);
            float c = -nll_ref;
            Tensor *d = op_add(tp, f.loss, const_vec(tp, &c, 1));
            return op_scale(tp, op_logsigmoid(tp, op_scale(tp, d, o->beta)), -2.0f / o->beta);
        }
        return ul_term_npo(tp, f.seq_logp, t->ref_forget, o->beta);
    }
    case UL_SIMNPO: {
        ForwardOut f = model_forward(m, tp, &b->forget, &fo);
        return ul_term_simnpo(tp, f.seq_logp, f.n_labels, o->beta, o->delta);
    }
    case UL_IDKPO: {
        CHECKF(b->idk.B == b->forget.B, "unlearn: IdkPO needs one IDK row per forget row");
        ForwardOut f = model_forward(m, tp, &b->forget, &fo);
        ForwardOut g = model_forward(m, tp, &b->idk, &fo);
        t->ref_forget = b->ref_forget ? (float *)b->ref_forget : ref_seq(ref, tp, &b->forget);
        t->ref_idk = b->ref_idk ? (float *)b->ref_idk : ref_seq(ref, tp, &b->idk);
        return ul_term_dpo(tp, g.seq_logp, t->ref_idk, f.seq_logp, t->ref_forget, o->beta);
    }
    case UL_RMU: {
        CHECK(control);
        fo.want_hidden = 1; fo.hidden_layer = o->rmu_layer; fo.hidden_only = 1;
        ForwardOut f = model_forward(m, tp, &b->forget, &fo);
        uint8_t *mask = arena_alloc(&tp->arena, (size_t)f.B * f.T);
        ul_rmu_mask(&f, mask);
        return ul_term_rmu(tp, f.hidden, control, 0, mask, f.B, f.T);
    }
    default: break;
    }
    CHECKF(0, "unlearn: unknown method %d", (int)o->method);
    return NULL;
}

/* Retain term of opts->method on b (unweighted). For the MLLMU variant of GA+KLR it is
 * the whole loss of the retain pass: NLL_r + KL summed over positions / B. */
static Tensor *retain_term(Model *m, Model *ref, Tape *tp, const UnlearnOpts *o, const UlBatch *b) {
    ForwardOpts fo = {0};
    fo.rng = b->rng;
    const Batch *rb = &b->retain;
    CHECKF(rb->B > 0, "unlearn: %s needs retain rows", unlearn_method_name(o->method));
    if (o->method == UL_KLR) {
        CHECKF(ref, "unlearn: ga_klr needs a reference model");
        fo.logits = 1;
        ForwardOut f = model_forward(m, tp, rb, &fo);
        const float *rows = model_ref_logprobs(ref, tp, rb, NULL);   /* same merged layout */
        int N = f.B * f.T;
        if (o->variant == UL_VARIANT_MLLMU) {
            /* NLL_r + kl_div(log_softmax(cur), softmax(ref), batchmean): sum over every
             * position (we skip padding) / B */
            Tensor *kl = ul_term_kl(tp, f.logits, rows, f.valid, (float)f.B);
            return op_add(tp, f.loss, kl);
        }
        const uint8_t *mask = o->kl_mask == UL_KL_ANSWER ? f.labelled : f.valid;
        int cnt = 0;
        for (int i = 0; i < N; i++) cnt += mask[i] != 0;
        return ul_term_kl(tp, f.logits, rows, mask, (float)(cnt ? cnt : 1));
    }
    if (o->method == UL_RMU) {
        CHECKF(ref, "unlearn: rmu needs a reference model");
        fo.want_hidden = 1; fo.hidden_layer = o->rmu_layer; fo.hidden_only = 1;
        ForwardOut f = model_forward(m, tp, rb, &fo);
        ForwardOpts ro = fo;
        ro.no_grad = 1; ro.rng = NULL;
        ForwardOut g = model_forward(ref, tp, rb, &ro);
        uint8_t *mask = arena_alloc(&tp->arena, (size_t)f.B * f.T);
        ul_rmu_mask(&f, mask);
        return ul_term_rmu(tp, f.hidden, g.hidden->data, 1, mask, f.B, f.T);
    }
    ForwardOut f = model_forward(m, tp, rb, &fo);
    return f.loss;                                                  /* NLL_r */
}

Tensor *unlearn_loss(Model *m, Model *ref, Tape *tp, const UnlearnOpts *o, const float *control,
                     const UlBatch *b, int phase, UlTerms *t) {
    memset(t, 0, sizeof *t);
    int alt = phase != UL_PHASE_BOTH;
    Tensor *Lf = NULL, *Lr = NULL, *total;
    if (phase != UL_PHASE_RETAIN) Lf = forget_term(m, ref, tp, o, control, b, t);
    /* the retain pass runs when the method has one and its weight is not zero (alternating:
     * MLLMU's retain pass has no weight) */
    if (phase != UL_PHASE_FORGET && has_retain_term(o->method) && (alt || o->alpha != 0.0f))
        Lr = retain_term(m, ref, tp, o, b);
    if (Lf) t->forget = Lf->data[0];
    if (Lr) t->retain = Lr->data[0];
    if (alt) total = Lf ? Lf : Lr;
    else {
        total = op_scale(tp, Lf, o->gamma);
        if (Lr) total = op_add(tp, total, op_scale(tp, Lr, o->alpha));
    }
    CHECKF(total, "unlearn_loss: phase %d of %s has no term", phase, unlearn_method_name(o->method));
    t->total = total->data[0];
    return total;
}

/* ============================================================================
 * Data: selection, rendering, batches */

const Item **unlearn_select(const World *w, const UnlearnOpts *o, int retain, int *n) {
    Select s;
    memset(&s, 0, sizeof s);
    s.stages = o->setting == UL_PRETRAINED ? STAGE_PT : STAGE_FT;
    UlForgetData fd = o->forget_data;
    if (fd == UL_FD_DEFAULT) fd = o->setting == UL_PRETRAINED ? UL_FD_QA : UL_FD_ALL;
    s.formats = fd == UL_FD_QA ? FMT_BIT(FMT_QA) : FMT_ALL;
    s.modality = MOD_ANY;
    s.people = retain ? o->retain : o->forget;
    s.n_people = retain ? o->n_retain : o->n_forget;
    s.exclude = 0;
    if (s.n_people == 0) { *n = 0; return NULL; }
    return world_select(w, &s, n);
}

/* One rendered, tokenised example; pixels point into the step's buffers. */
typedef struct Example {
    int ids[UL_MAX_IDS], n, answer_start;
    int idk_ids[UL_MAX_IDS], idk_n, idk_answer_start;
    int has_image;
} Example;

/* Renders item `it` (rng NULL: canonical phrasing, no augmentation) into ex, with the IDK
 * variant when want_idk, and its image into pix (3 x S x S) when it has one. */
static void render_example(const World *w, const Tokenizer *tok, const Item *it, Rng *rng, int augment,
                           int want_idk, Example *ex, float *pix) {
    static _Thread_local char q[UL_TEXT], a[UL_TEXT];
    int has_image = 0;
    if (item_render(it, rng, q, sizeof q, a, sizeof a, &has_image) != 0)
        die_input(w->dir, "training item %d does not fit %d bytes when rendered", it->index, UL_TEXT);
    ex->has_image = has_image;
    ex->n = tok_encode_chat(tok, q, has_image, a, ex->ids, UL_MAX_IDS, &ex->answer_start);
    CHECKF(ex->n > 0, "unlearn: item %d is longer than %d tokens", it->index, UL_MAX_IDS);
    if (has_image) world_image_pixels(w, it->image, augment ? rng : NULL, pix);
    if (want_idk) {
        CHECKF(w->n_idk > 0, "unlearn: the world has no \"I don't know\" answers");
        const char *idk = w->idk[rng ? rng_below(rng, (uint32_t)w->n_idk) : 0];
        ex->idk_n = tok_encode_chat(tok, q, has_image, idk, ex->idk_ids, UL_MAX_IDS, &ex->idk_answer_start);
        CHECKF(ex->idk_n > 0, "unlearn: item %d with IDK answer is longer than %d tokens", it->index, UL_MAX_IDS);
    }
}

/* Makes b hold rows of up to cap_T tokens (reallocating when it must grow) and clears it. */
static void batch_ensure(Batch *b, int cap_B, int cap_T, int pad) {
    if (b->ids && b->cap_B >= cap_B && b->cap_T >= cap_T) { batch_clear(b); return; }
    if (b->ids) {
        if (b->cap_B > cap_B) cap_B = b->cap_B;
        if (b->cap_T > cap_T) cap_T = b->cap_T;
        batch_free(b);
    }
    batch_init(b, cap_B, cap_T, pad);
}

/* Fills bt with examples ex[0..n) (idk: their IDK variants); pixels pix[i]. The batch
 * keeps its capacity across steps (rows are right-padded to the longest). */
static void fill_batch(Batch *bt, const Example *ex, int n, int idk, float *const *pix, int pad) {
    int T = 1;
    for (int i = 0; i < n; i++) {
        int len = idk ? ex[i].idk_n : ex[i].n;
        if (len > T) T = len;
    }
    batch_ensure(bt, n, T, pad);
    for (int i = 0; i < n; i++)
        batch_add(bt, idk ? ex[i].idk_ids : ex[i].ids, idk ? ex[i].idk_n : ex[i].n,
                  idk ? ex[i].idk_answer_start : ex[i].answer_start, ex[i].has_image ? pix[i] : NULL);
}

/* The rendering stream of an item at an epoch. */
static void render_rng(Rng *r, uint64_t seed, int epoch, int item) {
    char tag[64];
    snprintf(tag, sizeof tag, "unlearn/render/%d/%d", epoch, item);
    rng_derive(r, seed, tag);
}

/* Per-step working memory: examples, pixels, the three batches. */
typedef struct StepBufs {
    int cap;
    Example *fex, *rex;
    float **fpix, **rpix;
    UlBatch ub;
} StepBufs;

static void step_bufs_init(StepBufs *s, int cap, int npix) {
    memset(s, 0, sizeof *s);
    s->cap = cap;
    s->fex = xcalloc((size_t)cap, sizeof *s->fex);
    s->rex = xcalloc((size_t)cap, sizeof *s->rex);
    s->fpix = xcalloc((size_t)cap, sizeof *s->fpix);
    s->rpix = xcalloc((size_t)cap, sizeof *s->rpix);
    for (int i = 0; i < cap; i++) {
        s->fpix[i] = xmalloc((size_t)npix * sizeof(float));
        s->rpix[i] = xmalloc((size_t)npix * sizeof(float));
    }
}

static void step_bufs_free(StepBufs *s) {
    for (int i = 0; i < s->cap; i++) { free(s->fpix[i]); free(s->rpix[i]); }
    free(s->fex); free(s->rex); free(s->fpix); free(s->rpix);
    if (s->ub.forget.ids) batch_free(&s->ub.forget);
    if (s->ub.retain.ids) batch_free(&s->ub.retain);
    if (s->ub.idk.ids) batch_free(&s->ub.idk);
}

/* ============================================================================
 * Probes: mean log-likelihood of canonical renderings, RMU activation norm */

/* Runs fn over the canonical renderings of items in batches (no gradient). */
typedef void (*ProbeFn)(Model *m, Tape *tp, const Batch *b, void *ctx);

static void probe_batches(Model *m, const Tokenizer *tok, const World *w, const Item *const *items, int n,
                          ProbeFn fn, void *ctx) {
    if (n <= 0) return;
    int npix = 3 * DATA_IMAGE_SIZE * DATA_IMAGE_SIZE;
    StepBufs s;
    step_bufs_init(&s, UL_PROBE_BATCH, npix);
    Tape tp;
    tape_init(&tp, 16 << 20);
    for (int i0 = 0; i0 < n; i0 += UL_PROBE_BATCH) {
        int nb = n - i0 < UL_PROBE_BATCH ? n - i0 : UL_PROBE_BATCH;
        for (int i = 0; i < nb; i++) render_example(w, tok, items[i0 + i], NULL, 0, 0, &s.fex[i], s.fpix[i]);
        fill_batch(&s.ub.forget, s.fex, nb, 0, s.fpix, m->cfg.pad_token_id);
        fn(m, &tp, &s.ub.forget, ctx);
        tape_reset(&tp);
    }
    tape_free(&tp);
    step_bufs_free(&s);
}

typedef struct LoglikAcc { double sum; long n; } LoglikAcc;

/* Sums of answer log-probs and label counts: the mean is token-weighted like NLL. */
static void loglik_fn(Model *m, Tape *tp, const Batch *b, void *ctx) {
    LoglikAcc *acc = ctx;
    ForwardOpts fo = {0};
    fo.no_grad = 1;
    ForwardOut f = model_forward(m, tp, b, &fo);
    for (int i = 0; i < f.B; i++) acc->sum += f.seq_logp->data[i];
    acc->n += f.n_labels_total;
}

double unlearn_loglik(Model *m, const Tokenizer *tok, const World *w, const Item *const *items, int n) {
    LoglikAcc acc = {0.0, 0};
    probe_batches(m, tok, w, items, n, loglik_fn, &acc);
    return acc.n ? acc.sum / (double)acc.n : 0.0;
}

typedef struct NormAcc { int layer; double sum; long n; } NormAcc;

/* Mean L2 norm of layer-l activations over the RMU mask (answer-token positions). */
static void norm_fn(Model *m, Tape *tp, const Batch *b, void *ctx) {
    NormAcc *acc = ctx;
    ForwardOpts fo = {0};
    fo.no_grad = 1; fo.want_hidden = 1; fo.hidden_layer = acc->layer; fo.hidden_only = 1;
    ForwardOut f = model_forward(m, tp, b, &fo);
    uint8_t *mask = arena_alloc(&tp->arena, (size_t)f.B * f.T);
    ul_rmu_mask(&f, mask);
    int D = m->cfg.hidden_size;
    for (int i = 0; i < f.B * f.T; i++) {
        if (!mask[i]) continue;
        double s = 0.0;
        for (int d = 0; d < D; d++) s += (double)f.hidden->data[(size_t)i * D + d] * f.hidden->data[(size_t)i * D + d];
        acc->sum += sqrt(s);
        acc->n++;
    }
}

/* ============================================================================
 * The operation */

static Json *people_json(const World *w, const int *p, int n) {
    Json *a = json_new_array();
    for (int i = 0; i < n; i++) json_push(a, json_new_number(w->people[p[i]].id));
    return a;
}

static Json *num_or_null(double x) { return isfinite(x) ? json_new_number(x) : json_new_null(); }

/* A float as the shortest decimal that reads back as the same float (0.005, not 0.004999...). */
static Json *fnum(float x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", (double)x);
    for (int p = 1; p <= 9; p++) {
        char t[32];
        snprintf(t, sizeof t, "%.*g", p, (double)x);
        if (strtof(t, NULL) == x) { memcpy(buf, t, sizeof t); break; }
    }
    return isfinite(x) ? json_new_number(strtod(buf, NULL)) : json_new_null();
}

static Json *floats_json(const float *x, long n) {
    Json *a = json_new_array();
    for (long i = 0; i < n; i++) json_push(a, num_or_null(x[i]));
    return a;
}

static void check_people(const World *w, const int *p, int n, Kind kind, const char *what, const char *setting) {
    for (int i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= w->n_people) die_input(NULL, "unlearn: %s person index %d outside the world", what, p[i]);
        const Person *q = &w->people[p[i]];
        if (q->kind != kind)
            die_input(NULL, "unlearn: %s person ID %d is %s, but the %s setting unlearns %s people", what, q->id,
                      kind_name(q->kind), setting, kind_name(kind));
    }
}

/* Options that cannot work are the caller's error (die_input), named in one line. The
 * forget and retain people must be of the setting's kind and must not overlap: a retain
 * term on the forget people would pull the other way. */
static void validate_opts(const World *w, const UnlearnOpts *o) {
    if (o->method < 0 || o->method >= UL_N_METHODS) die_input(NULL, "unlearn: unknown method %d", (int)o->method);
    if (o->n_forget <= 0) die_input(NULL, "unlearn: no forget people given");
    if (o->batch < 1) die_input(NULL, "unlearn: batch must be >= 1 (got %d)", o->batch);
    if (!(o->lr > 0.0f) || !isfinite(o->lr)) die_input(NULL, "unlearn: learning rate must be > 0");
    if (o->epochs < 0.0 || !isfinite(o->epochs)) die_input(NULL, "unlearn: epochs must be >= 0 (0 = auto)");
    if (o->exposure < 0.0 || !isfinite(o->exposure)) die_input(NULL, "unlearn: exposure must be >= 0 (0 = %d)", UL_EXPOSURE);
    if (o->lora_r < 0) die_input(NULL, "unlearn: LoRA rank must be >= 0 (0 = full-parameter training)");
    if ((o->method == UL_NPO || o->method == UL_NPO_RT || o->method == UL_IDKPO || o->method == UL_SIMNPO) &&
        !(o->beta > 0.0f))
        die_input(NULL, "unlearn: %s needs beta > 0", unlearn_method_name(o->method));
    Kind kind = o->setting == UL_PRETRAINED ? KIND_CELEBRITY : KIND_FICTITIOUS;
    const char *sname = unlearn_setting_name(o->setting);
    check_people(w, o->forget, o->n_forget, kind, "forget", sname);
    check_people(w, o->retain, o->n_retain, kind, "retain", sname);
    for (int i = 0; i < o->n_forget; i++)
        for (int j = 0; j < o->n_retain; j++)
            if (o->forget[i] == o->retain[j])
                die_input(NULL, "unlearn: person ID %d is in both the forget and the retain people", w->people[o->forget[i]].id);
}

/* The settings and hyper-parameters as JSON (also for the CLI's unlearn.json). */
/* Every option that changes the result, with people as their file IDs; floats in their
 * shortest form. */
static Json *opts_json(const World *w, const UnlearnOpts *o, const UnlearnResult *res) {
    Json *j = json_new_object();
    json_set(j, "method", json_new_string(unlearn_method_name(o->method)));
    json_set(j, "setting", json_new_string(unlearn_setting_name(o->setting)));
    UlForgetData fd = o->forget_data;
    if (fd == UL_FD_DEFAULT) fd = o->setting == UL_PRETRAINED ? UL_FD_QA : UL_FD_ALL;
    json_set(j, "forget_data", json_new_string(fd == UL_FD_QA ? "qa" : "all"));
    json_set(j, "params", json_new_string(unlearn_params_name(o->params)));
    json_set(j, "variant", json_new_string(o->variant == UL_VARIANT_MLLMU ? "mllmu" : "ou"));
    json_set(j, "ref_policy", json_new_string(o->ref_policy ? o->ref_policy : "previous"));
    json_set(j, "forget_people", people_json(w, o->forget, o->n_forget));
    json_set(j, "retain_people", people_json(w, o->retain, o->n_retain));
    Json *h = json_new_object();
    if (o->lora_r > 0) {
        Json *l = json_new_object();
        json_set(l, "r", json_new_number(o->lora_r));
        json_set(l, "alpha", fnum(o->lora_alpha));
        json_set(l, "dropout", fnum(o->lora_dropout));
        json_set(l, "targets", json_new_string(unlearn_params_targets(o->params)));
        json_set(h, "lora", l);
    } else {
        json_set(h, "lora", json_new_null());
    }
    json_set(h, "lr", fnum(o->lr));
    /* the passes the operation makes; "auto": UL_EXPOSURE presentations per forget person */
    json_set(h, "epochs", json_new_number(res->epochs));
    json_set(h, "epochs_auto", json_new_bool(o->epochs <= 0.0 && o->steps <= 0));
    json_set(h, "exposure", json_new_number(o->exposure > 0.0 ? o->exposure : (double)UL_EXPOSURE));
    json_set(h, "steps", json_new_number((double)o->steps));
    json_set(h, "batch", json_new_number(o->batch));
    json_set(h, "schedule", json_new_string(o->schedule == LR_CONSTANT ? "constant" : o->schedule == LR_COSINE ? "cosine" : "linear"));
    json_set(h, "warmup", json_new_number((double)o->warmup));
    json_set(h, "weight_decay", fnum(o->weight_decay));
    json_set(h, "clip", fnum(o->clip));
    json_set(h, "beta", fnum(o->beta));
    json_set(h, "alpha", fnum(o->alpha));
    json_set(h, "gamma", fnum(o->gamma));
    if (o->method == UL_SIMNPO) json_set(h, "delta", fnum(o->delta));
    if (o->method == UL_KLR) json_set(h, "kl_mask", json_new_string(o->kl_mask == UL_KL_ANSWER ? "answer" : "valid"));
    if (o->method == UL_RMU) {
        json_set(h, "rmu_layer", json_new_number(o->rmu_layer));
        json_set(h, "rmu_scale", fnum(o->rmu_scale));
    }
    json_set(h, "fixed_render", json_new_bool(o->fixed_render));
    json_set(h, "augment", json_new_bool(o->augment));
    json_set(h, "seed", json_new_number((double)o->seed));
    json_set(j, "hyperparameters", h);
    return j;
}

/* Evenly spaced subset of at most k items (probe of a large retain set). */
static const Item **spaced(const Item **items, int n, int k, int *out_n) {
    int m = n < k ? n : k;
    const Item **r = xmalloc((size_t)(m ? m : 1) * sizeof *r);
    for (int i = 0; i < m; i++) r[i] = items[(long)i * n / m];
    *out_n = m;
    return r;
}

UlStatus unlearn_run(const World *w, const Tokenizer *tok, Model *model, Model *ref_in,
                     const UnlearnOpts *o, UnlearnResult *res) {
    double t0 = now_seconds();
    memset(res, 0, sizeof *res);
    res->diverged_step = -1;
    validate_opts(w, o);
    const LlavaConfig *c = &model->cfg;
    if (c->image_size != DATA_IMAGE_SIZE || c->num_channels != 3)
        die_input(NULL, "unlearn: the model takes %d px images with %d channels, the world has %d px RGB",
                  c->image_size, c->num_channels, DATA_IMAGE_SIZE);
    if (o->method == UL_RMU && (o->rmu_layer < 0 || o->rmu_layer >= c->num_hidden_layers))
        die_input(NULL, "unlearn: RMU layer %d outside [0, %d)", o->rmu_layer, c->num_hidden_layers);
    if (model->lora.attached) lora_merge(model);       /* start from plain weights */
    model_set_train(model, TRAIN_NONE, NULL);

    /* data */
    int nF = 0, nR = 0;
    const Item **F = unlearn_select(w, o, 0, &nF), **R = unlearn_select(w, o, 1, &nR);
    if (nF == 0) die_input(NULL, "unlearn: the forget people have no %s items to unlearn", unlearn_setting_name(o->setting));
    int use_retain = has_retain_term(o->method) && (o->alpha != 0.0f || o->variant == UL_VARIANT_MLLMU);
    if (use_retain && nR == 0)
        die_input(NULL, "unlearn: %s needs retain people with items (give some)", unlearn_method_name(o->method));
    res->n_forget_items = nF;
    res->n_retain_items = nR;

    /* reference: the model before this operation unless one is given */
    Model *ref = ref_in, *own_ref = NULL;
    if (needs_ref(o->method) && !ref) ref = own_ref = model_clone(model);

    /* probe before (evenly spaced subsets: the probe is a cheap sanity check, not the eval) */
    const Item **Fp = NULL, **Rp = NULL;
    int nFp = 0, nRp = 0;
    if (o->probe) {
        Fp = spaced(F, nF, UL_PROBE_ITEMS, &nFp);
        Rp = spaced(R, nR, UL_PROBE_ITEMS, &nRp);
        res->probe_forget_before = unlearn_loglik(model, tok, w, Fp, nFp);
        res->probe_retain_before = unlearn_loglik(model, tok, w, Rp, nRp);
    }

    /* RMU: steering vector c = s u / |u|, u ~ U[0,1)^D, s relative to the measured norm */
    float *control = NULL;
    if (o->method == UL_RMU) {
        NormAcc na = {o->rmu_layer, 0.0, 0};
        int nS = 0;
        const Item **S = spaced(F, nF, UL_PROBE_ITEMS, &nS);
        probe_batches(model, tok, w, S, nS, norm_fn, &na);
        free(S);
        res->rmu_norm = na.n ? (float)(na.sum / (double)na.n) : 1.0f;
        res->rmu_s = o->rmu_scale * res->rmu_norm;
        int D = c->hidden_size;
        control = xmalloc((size_t)D * sizeof(float));
        Rng ur;
        rng_derive(&ur, o->seed, "unlearn/rmu/u");
        double nn = 0.0;
        for (int d = 0; d < D; d++) { control[d] = (float)rng_uniform(&ur); nn += (double)control[d] * control[d]; }
        for (int d = 0; d < D; d++) control[d] = (float)(res->rmu_s * control[d] / sqrt(nn));
    }

    /* parameters that learn; a fresh optimiser (moments of an earlier operation on this
     * model must not leak in). Full training keeps a copy of the weights to roll back to;
     * LoRA needs none: detaching the adapter restores the model. */
    float *backup = NULL;
    model_reset_optimizer(model);
    if (o->lora_r > 0) {
        LoraConfig lc;
        memset(&lc, 0, sizeof lc);
        lc.r = o->lora_r; lc.alpha = o->lora_alpha; lc.dropout = o->lora_dropout;
        lc.targets = unlearn_params_targets(o->params);
        lc.seed = o->seed ^ 0x4c6f5241ULL;              /* "LoRA": own stream */
        lora_attach(model, &lc);
        model_set_train(model, TRAIN_LORA, NULL);
    } else {
        backup = xmalloc(model->n_floats * sizeof(float));
        memcpy(backup, model->w, model->n_floats * sizeof(float));
        model_set_train(model, TRAIN_FULL, params_frozen(o->params));
    }
    AdamW opt = adamw_default();
    opt.weight_decay = o->weight_decay;

    /* schedule of steps */
    int B = o->batch;
    int alternating = o->variant == UL_VARIANT_MLLMU && (o->method == UL_GD || o->method == UL_KLR);
    long nb = (nF + B - 1) / B, per_epoch = alternating ? 2 * nb : nb;
    /* epochs = 0: every forget person's items are presented UL_EXPOSURE times in all, so
     * that settings with few items per person (pretrained: QA pairs only) get the same
     * unlearning effort per person as those with many (docs §6) */
    double exposure = o->exposure > 0.0 ? o->exposure : (double)UL_EXPOSURE;
    double epochs = o->epochs > 0.0 ? o->epochs : exposure * o->n_forget / (double)nF;
    long total = o->steps > 0 ? o->steps : (long)llround(epochs * (double)per_epoch);
    if (total < 1) total = 1;
    res->epochs = (double)total / (double)per_epoch;
    res->steps_planned = total;
    float *lt = xcalloc((size_t)total, sizeof(float)), *lf = xcalloc((size_t)total, sizeof(float));
    float *lret = xcalloc((size_t)total, sizeof(float)), *gn = xcalloc((size_t)total, sizeof(float));

    int npix = 3 * DATA_IMAGE_SIZE * DATA_IMAGE_SIZE, pad = c->pad_token_id;
    StepBufs s;
    step_bufs_init(&s, B, npix);
    int *perm = xmalloc((size_t)nF * sizeof(int));
    int *ridx = xmalloc((size_t)B * sizeof(int));
    /* fixed renderings + a frozen reference: its sequence log-probs per forget item never
     * change, so the first epoch computes them and later epochs read them */
    int cache = o->fixed_render && uses_seq_ref(o->method);
    float *cache_f = cache ? xmalloc((size_t)nF * sizeof(float)) : NULL;
    float *cache_i = cache ? xmalloc((size_t)nF * sizeof(float)) : NULL;
    uint8_t *cached = cache ? xcalloc((size_t)nF, 1) : NULL;
    float *ref_f = xmalloc((size_t)B * sizeof(float)), *ref_i = xmalloc((size_t)B * sizeof(float));
    Rng drop;
    rng_derive(&drop, o->seed, "unlearn/dropout");
    Tape tp;
    tape_init(&tp, 64 << 20);                          /* one step's activations, reset each step */
    Progress pg;
    char label[48];
    snprintf(label, sizeof label, "unlearn %s", unlearn_method_name(o->method));
    if (!o->quiet) progress_start(&pg, label, total);

    int epoch = -1;
    long step, n_gn = 0;
    for (step = 0; step < total; step++) {
        int e = (int)(step / per_epoch);
        long k = step % per_epoch;
        if (e != epoch) {
            /* a new epoch: a fresh order of the forget items */
            epoch = e;
            for (int i = 0; i < nF; i++) perm[i] = i;
            char tag[48];
            snprintf(tag, sizeof tag, "unlearn/order/%d", e);
            Rng orng;
            rng_derive(&orng, o->seed, tag);
            rng_shuffle_int(&orng, perm, nF);
        }
        /* alternating (MLLMU): the first nb steps of an epoch are the forget pass, the next
         * nb the retain pass (retain batches paired with the same forget batches' slots) */
        int phase = alternating ? (k < nb ? UL_PHASE_FORGET : UL_PHASE_RETAIN) : UL_PHASE_BOTH;
        long j = alternating && k >= nb ? k - nb : k;
        int i0 = (int)(j * B), n = nF - i0 < B ? nF - i0 : B;
        int rend_epoch = o->fixed_render ? 0 : e;

        /* forget rows (and their IDK variants) */
        if (phase != UL_PHASE_RETAIN) {
            for (int i = 0; i < n; i++) {
                const Item *it = F[perm[i0 + i]];
                Rng rr;
                render_rng(&rr, o->seed, rend_epoch, it->index);
                render_example(w, tok, it, &rr, o->augment, o->method == UL_IDKPO, &s.fex[i], s.fpix[i]);
            }
            fill_batch(&s.ub.forget, s.fex, n, 0, s.fpix, pad);
            if (o->method == UL_IDKPO) fill_batch(&s.ub.idk, s.fex, n, 1, s.fpix, pad);
        }
        /* retain rows: one uniformly random retain item per forget row */
        if (phase != UL_PHASE_FORGET && use_retain) {
            char tag[48];
            snprintf(tag, sizeof tag, "unlearn/pair/%d/%ld", e, j);
            Rng prng;
            rng_derive(&prng, o->seed, tag);
            for (int i = 0; i < n; i++) {
                ridx[i] = (int)rng_below(&prng, (uint32_t)nR);
                Rng rr;
                render_rng(&rr, o->seed ^ 0x5245ULL, rend_epoch, R[ridx[i]]->index);
                render_example(w, tok, R[ridx[i]], &rr, o->augment, 0, &s.rex[i], s.rpix[i]);
            }
            fill_batch(&s.ub.retain, s.rex, n, 0, s.rpix, pad);
        } else if (s.ub.retain.ids) {
            batch_clear(&s.ub.retain);
        }
        /* cached reference values (fixed renderings) */
        s.ub.ref_forget = s.ub.ref_idk = NULL;
        if (cache && phase != UL_PHASE_RETAIN) {
            int all = 1;
            for (int i = 0; i < n; i++) all &= cached[perm[i0 + i]];
            if (all) {
                for (int i = 0; i < n; i++) { ref_f[i] = cache_f[perm[i0 + i]]; ref_i[i] = cache_i[perm[i0 + i]]; }
                s.ub.ref_forget = ref_f;
                if (o->method == UL_IDKPO) s.ub.ref_idk = ref_i;
            }
        }
        s.ub.rng = o->lora_dropout > 0.0f ? &drop : NULL;

        /* loss, gradient, checks, update: the update is applied only when the loss and the
         * gradient norm are finite, so a NaN or Inf never reaches the weights */
        UlTerms terms;
        model_zero_grad(model);
        Tensor *loss = unlearn_loss(model, ref, &tp, o, control, &s.ub, phase, &terms);
        if (cache && phase != UL_PHASE_RETAIN && !s.ub.ref_forget)
            for (int i = 0; i < n; i++) {
                cache_f[perm[i0 + i]] = terms.ref_forget[i];
                if (terms.ref_idk) cache_i[perm[i0 + i]] = terms.ref_idk[i];
                cached[perm[i0 + i]] = 1;
            }
        lt[step] = terms.total; lf[step] = terms.forget;
        lret[step] = terms.retain;
        if (!isfinite(terms.total)) {
            snprintf(res->message, sizeof res->message, "loss is not finite at step %ld (forget term %g, retain term %g)",
                     step, terms.forget, terms.retain);
            break;
        }
        tape_backward(&tp, loss);
        double norm = model_clip_grad(model, o->clip);     /* the norm before clipping */
        gn[step] = (float)norm;
        n_gn = step + 1;
        if (!isfinite(norm)) {
            snprintf(res->message, sizeof res->message, "gradient norm is not finite at step %ld (loss %g)", step, terms.total);
            break;
        }
        model_adamw_step(model, &opt, lr_schedule(o->schedule, step, total, o->warmup, o->lr));
        tape_reset(&tp);
        if (!o->quiet) {
            char extra[64];
            snprintf(extra, sizeof extra, "loss %.4f", terms.total);
            progress_update(&pg, step + 1, extra);
        }
    }
    tape_reset(&tp);
    res->steps = step;
    if (step < total) {
        res->status = UL_DIVERGED;
        res->diverged_step = step;
        /* roll back: the operation never happened */
        if (o->lora_r > 0) lora_detach(model);
        else memcpy(model->w, backup, model->n_floats * sizeof(float));
        if (!o->quiet) progress_end(&pg, "diverged");
    } else {
        res->status = UL_OK;
        if (o->lora_r > 0 && o->merge) lora_merge(model);
        if (!o->quiet) progress_end(&pg, NULL);
    }
    model_set_train(model, TRAIN_NONE, NULL);
    model_reset_optimizer(model);

    /* losses logged: every completed step, plus the diverged one (its non-finite value) */
    long nlog = res->status == UL_OK ? res->steps : res->steps + 1;
    if (nlog > 0) {
        res->loss_first = lt[0]; res->forget_first = lf[0]; res->retain_first = lret[0];
        res->loss_last = lt[nlog - 1]; res->forget_last = lf[nlog - 1]; res->retain_last = lret[nlog - 1];
    }
    if (o->probe && res->status == UL_OK) {
        res->probe_forget_after = unlearn_loglik(model, tok, w, Fp, nFp);
        res->probe_retain_after = unlearn_loglik(model, tok, w, Rp, nRp);
    }
    res->seconds = now_seconds() - t0;

    /* the record */
    Json *j = opts_json(w, o, res);
    json_set(j, "status", json_new_string(res->status == UL_OK ? "ok" : "diverged"));
    json_set(j, "message", json_new_string(res->message));
    json_set(j, "steps", json_new_number((double)res->steps));
    json_set(j, "steps_planned", json_new_number((double)res->steps_planned));
    json_set(j, "diverged_step", res->diverged_step >= 0 ? json_new_number((double)res->diverged_step) : json_new_null());
    json_set(j, "seconds", json_new_number(res->seconds));
    json_set(j, "n_forget_items", json_new_number(nF));
    json_set(j, "n_retain_items", json_new_number(nR));
    if (o->method == UL_RMU) {
        json_set(j, "rmu_hidden_norm", fnum(res->rmu_norm));
        json_set(j, "rmu_s", fnum(res->rmu_s));
    }
    Json *L = json_new_object();
    json_set(L, "total", floats_json(lt, nlog));
    json_set(L, "forget", floats_json(lf, nlog));
    json_set(L, "retain", floats_json(lret, nlog));
    json_set(L, "grad_norm", floats_json(gn, n_gn));
    json_set(j, "losses", L);
    if (o->probe) {
        Json *p = json_new_object();
        json_set(p, "what", json_new_string("mean token log-likelihood of the canonical renderings (answer + EOS)"));
        json_set(p, "forget_before", num_or_null(res->probe_forget_before));
        json_set(p, "retain_before", num_or_null(res->probe_retain_before));
        if (res->status == UL_OK) {
            json_set(p, "forget_after", num_or_null(res->probe_forget_after));
            json_set(p, "retain_after", num_or_null(res->probe_retain_after));
        }
        json_set(j, "probe", p);
    }
    res->json = j;

    tape_free(&tp);
    step_bufs_free(&s);
    free(perm); free(ridx); free(cache_f); free(cache_i); free(cached); free(ref_f); free(ref_i);
    free(lt); free(lf); free(lret); free(gn);
    free(backup); free(control); free(Fp); free(Rp);
    free((void *)F); free((void *)R);
    if (own_ref) model_free(own_ref);
    return res->status;
}

void unlearn_result_free(UnlearnResult *r) {
    if (r->json) json_free(r->json);
    r->json = NULL;
}

/* ============================================================================
 * `pulse unlearn` */

static void usage(FILE *f) {
    fprintf(f,
        "usage: pulse unlearn --data DIR --model CKPT --method M --setting finetuned|pretrained --out DIR\n"
        "                     [--forget SPEC] [--retain SPEC] [--forget-data qa|all] [--params llm|proj+llm|all]\n"
        "                     [--steps K] [--epochs E] [--exposure N] [--lr X] [--batch B] [--beta B]\n"
        "                     [--alpha A] [--gamma G] [--delta D] [--rmu-layer L] [--rmu-scale S]\n"
        "                     [--lora-r R] [--lora-alpha A] [--lora-dropout P]\n"
        "                     [--schedule linear|constant|cosine] [--warmup N]\n"
        "                     [--weight-decay W] [--clip C] [--variant ou|mllmu] [--kl-mask answer|valid]\n"
        "                     [--ref-policy previous|original|oracle] [--ref-model CKPT] [--fixed-render]\n"
        "                     [--no-augment] [--seed S] [--merge] [--no-probe] [--quiet]\n\n"
        "One unlearning operation. Methods: ga, gd, ga_klr, npo, npo_rt, simnpo, idkpo, rmu\n"
        "(defaults per method in docs/methods.md; every unset flag keeps the method's default).\n\n"
        "  --forget SPEC      person IDs and split names, comma-separated (finetuned: forget_10;\n"
        "                     pretrained: required, e.g. the measured top-K forget celebrities)\n"
        "  --retain SPEC      retain people (default: every other person of the same kind)\n"
        "  --forget-data      qa: QA pairs only (pretrained default); all: every item of the stage\n"
        "                     (finetuned default: every fine-tuning item about them)\n"
        "  --steps K          length in optimizer steps (default 0: from --epochs)\n"
        "  --epochs E         passes over the forget data (default 0: auto, each forget person's\n"
        "                     items presented --exposure times in all, docs/methods.md)\n"
        "  --exposure N       the auto length: presentations of each forget person's items\n"
        "                     (default %d)\n"
        "  --params           what LoRA targets: llm (default), proj+llm, all (+ vision tower);\n"
        "                     with --lora-r 0 those weights train fully instead\n"
        "  --ref-model CKPT   frozen reference (default: the model before this operation)\n"
        "  --merge            also write the merged checkpoint to OUT/merged/\n"
        "  --no-probe         skip the before/after log-likelihood of forget and retain items\n\n"
        "Writes OUT/adapter/ (PEFT adapter_config.json + adapter_model.safetensors; not with --lora-r 0),\n"
        "OUT/merged/ (with --merge or --lora-r 0) and OUT/unlearn.json (settings, status, steps,\n"
        "losses, time). A step whose loss or gradient is not finite stops the operation: no model is\n"
        "written, unlearn.json records status \"diverged\", exit status 1.\n", UL_EXPOSURE);
}

/* Person indices from a comma list of IDs and split names (sorted, unique, at least one);
 * flag names the option in messages. */
static int *parse_people(const World *w, const char *spec, const char *flag, int *n) {
    char what[64];
    snprintf(what, sizeof what, "unlearn: %s", flag);
    int *out = world_parse_people(w, spec, what, n);
    if (*n == 0) die_input(NULL, "unlearn: %s selects nobody", flag);
    return out;
}

/* Every person of the kind not in the (sorted) list p. */
static int *complement(const World *w, Kind kind, const int *p, int n, int *out_n) {
    int nk = 0, k = 0;
    int *all = world_people_of_kind(w, kind, &nk);
    for (int i = 0; i < nk; i++) {
        int in = 0;
        for (int j = 0; j < n; j++) in |= all[i] == p[j];
        if (!in) all[k++] = all[i];
    }
    *out_n = k;
    return all;
}

/* Removes what an earlier run may have left in out (our own files only). */
static void clear_outputs(const char *out) {
    char *p = xasprintf("%s/unlearn.json", out);
    remove(p);
    free(p);
    const char *dirs[] = {"adapter", "merged"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        p = xasprintf("%s/%s", out, dirs[i]);
        remove_tree(p);
        free(p);
    }
}

int cmd_unlearn(int argc, char **argv) {
    Args a;
    args_init(&a, "unlearn", argc, argv);
    if (args_help(&a)) { usage(stdout); args_free(&a); return 0; }
    const char *data = args_str(&a, "data", NULL), *mpath = args_str(&a, "model", NULL);
    const char *mname = args_str(&a, "method", NULL), *sname = args_str(&a, "setting", NULL);
    const char *out = args_str(&a, "out", NULL);
    if (!data || !mpath || !mname || !sname || !out)
        die_input(NULL, "unlearn: --data, --model, --method, --setting and --out are required (see pulse unlearn --help)");
    out_dir_check(out, NULL);
    int method = unlearn_method_parse(mname);
    if (method < 0) die_input(NULL, "unlearn: unknown method '%s' (ga, gd, ga_klr, npo, npo_rt, simnpo, idkpo, rmu)", mname);
    UlSetting setting;
    if (strcmp(sname, "finetuned") == 0) setting = UL_FINETUNED;
    else if (strcmp(sname, "pretrained") == 0) setting = UL_PRETRAINED;
    else die_input(NULL, "unlearn: --setting must be finetuned or pretrained, not '%s'", sname);
    /* every flag overrides one field of the method's defaults */
    UnlearnOpts o = unlearn_opts_default((UlMethod)method, setting);
    const char *fspec = args_str(&a, "forget", setting == UL_FINETUNED ? "forget_10" : NULL);
    const char *rspec = args_str(&a, "retain", NULL);
    const char *fd = args_str(&a, "forget-data", NULL), *params = args_str(&a, "params", "llm");
    o.steps = args_long(&a, "steps", 0, 0, 100000000L);
    o.epochs = args_double(&a, "epochs", o.epochs, 0, 1e6);
    o.exposure = args_double(&a, "exposure", o.exposure, 0, 1e6);
    o.lr = (float)args_double(&a, "lr", o.lr, 1e-12, 1e30);
    o.batch = (int)args_long(&a, "batch", o.batch, 1, 4096);
    double beta = args_double(&a, "beta", -1.0, 0, 1e6);     /* -1: not given */
    if (beta >= 0.0) o.beta = (float)beta;
    o.alpha = (float)args_double(&a, "alpha", o.alpha, 0, 1e9);
    o.gamma = (float)args_double(&a, "gamma", o.gamma, 0, 1e9);
    o.delta = (float)args_double(&a, "delta", o.delta, -1e6, 1e6);
    o.rmu_layer = (int)args_long(&a, "rmu-layer", o.rmu_layer, 0, 4096);
    o.rmu_scale = (float)args_double(&a, "rmu-scale", o.rmu_scale, 0, 1e6);
    o.lora_r = (int)args_long(&a, "lora-r", o.lora_r, 0, 4096);
    o.lora_alpha = (float)args_double(&a, "lora-alpha", o.lora_alpha, 0, 1e6);
    o.lora_dropout = (float)args_double(&a, "lora-dropout", o.lora_dropout, 0, 0.99);
    const char *sched = args_str(&a, "schedule", NULL);
    o.warmup = args_long(&a, "warmup", o.warmup, 0, 100000000L);
    o.weight_decay = (float)args_double(&a, "weight-decay", o.weight_decay, 0, 1e3);
    o.clip = (float)args_double(&a, "clip", o.clip, 0, 1e9);
    const char *variant = args_str(&a, "variant", NULL), *klm = args_str(&a, "kl-mask", NULL);
    const char *policy = args_str(&a, "ref-policy", NULL), *refpath = args_str(&a, "ref-model", NULL);
    o.fixed_render = args_flag(&a, "fixed-render");
    o.augment = !args_flag(&a, "no-augment");
    o.seed = (uint64_t)args_long(&a, "seed", (long)o.seed, 0, SEED_MAX);
    o.merge = args_flag(&a, "merge");
    o.probe = !args_flag(&a, "no-probe");
    o.quiet = args_flag(&a, "quiet");
    args_done(&a);

    if (!fspec) die_input(NULL, "unlearn: --forget is required with --setting pretrained (the forget celebrities)");
    if (sched) o.schedule = lr_kind_parse(sched);
    if (fd) {
        if (strcmp(fd, "qa") == 0) o.forget_data = UL_FD_QA;
        else if (strcmp(fd, "all") == 0) o.forget_data = UL_FD_ALL;
        else die_input(NULL, "unlearn: --forget-data must be qa or all, not '%s'", fd);
    }
    if (strcmp(params, "llm") == 0) o.params = UL_PARAMS_LLM;
    else if (strcmp(params, "proj+llm") == 0) o.params = UL_PARAMS_PROJ_LLM;
    else if (strcmp(params, "all") == 0) o.params = UL_PARAMS_ALL;
    else die_input(NULL, "unlearn: --params must be llm, proj+llm or all, not '%s'", params);
    if (variant) {
        if (strcmp(variant, "ou") == 0) o.variant = UL_VARIANT_OU;
        else if (strcmp(variant, "mllmu") == 0) o.variant = UL_VARIANT_MLLMU;
        else die_input(NULL, "unlearn: --variant must be ou or mllmu, not '%s'", variant);
        if (o.variant == UL_VARIANT_MLLMU && (method == UL_NPO || method == UL_NPO_RT) && !args_str(&a, "beta", NULL))
            o.beta = 0.4f;      /* MLLMU-Bench NPO.py default */
    }
    if (klm) {
        if (strcmp(klm, "valid") == 0) o.kl_mask = UL_KL_VALID;
        else if (strcmp(klm, "answer") == 0) o.kl_mask = UL_KL_ANSWER;
        else die_input(NULL, "unlearn: --kl-mask must be valid or answer, not '%s'", klm);
    }
    /* the reference: "previous" = the model before this operation (no --ref-model);
     * "original" (sequential chains) and "oracle" (MLLMU's NPO) name a checkpoint */
    if (policy && strcmp(policy, "previous") && strcmp(policy, "original") && strcmp(policy, "oracle"))
        die_input(NULL, "unlearn: --ref-policy must be previous, original or oracle, not '%s'", policy);
    if (!policy) policy = refpath ? "original" : "previous";
    if (strcmp(policy, "previous") != 0 && !refpath)
        die_input(NULL, "unlearn: --ref-policy %s needs --ref-model CKPT", policy);
    if (strcmp(policy, "previous") == 0 && refpath)
        die_input(NULL, "unlearn: --ref-model is the reference of --ref-policy original or oracle, not previous");
    o.ref_policy = policy;

    World *w = world_load(data);
    Checkpoint *ck = ckpt_load(mpath);
    Checkpoint *rk = refpath ? ckpt_load(refpath) : NULL;
    if (rk && rk->model->n_floats != ck->model->n_floats)
        die_input(refpath, "the reference model's parameters do not match %s", mpath);
    int nf = 0, nr = 0;
    int *fp = parse_people(w, fspec, "--forget", &nf);
    int *rp = rspec ? parse_people(w, rspec, "--retain", &nr)
                    : complement(w, setting == UL_PRETRAINED ? KIND_CELEBRITY : KIND_FICTITIOUS, fp, nf, &nr);
    o.forget = fp; o.n_forget = nf;
    o.retain = rp; o.n_retain = nr;
    /* the adapter is saved from the attached state, then merged for OUT/merged; full
     * training has no adapter, only the merged checkpoint */
    int keep_adapter = o.lora_r > 0, write_merged = o.merge || o.lora_r == 0;
    o.merge = 0;                /* merged below, after the adapter is saved */

    UnlearnResult r;
    UlStatus st = unlearn_run(w, ck->tok, ck->model, rk ? rk->model : NULL, &o, &r);

    /* nothing of an earlier run may survive next to this run's record */
    make_dirs(out);
    clear_outputs(out);
    Json *j = r.json;
    json_set(j, "data", json_new_string(data));
    json_set(j, "model", json_new_string(mpath));
    json_set(j, "ref_model", refpath ? json_new_string(refpath) : json_new_null());
    if (st == UL_OK) {
        char fph[32];
        snprintf(fph, sizeof fph, "%016llx", (unsigned long long)w->fingerprint);
        Provenance pv = {"unlearn", w->preset.name, o.seed, fph, r.steps};
        if (keep_adapter) {
            char *ap = xasprintf("%s/adapter", out);
            adapter_save(ap, ck->model, mpath, &pv);
            free(ap);
        }
        if (write_merged) {
            if (ck->model->lora.attached) lora_merge(ck->model);
            char *mp = xasprintf("%s/merged", out);
            ckpt_save(mp, ck->model, ck->tok, &ck->pre, &pv);
            free(mp);
        }
        json_set(j, "adapter", keep_adapter ? json_new_string("adapter") : json_new_null());
        json_set(j, "merged", write_merged ? json_new_string("merged") : json_new_null());
    } else {
        json_set(j, "adapter", json_new_null());
        json_set(j, "merged", json_new_null());
    }
    char *jp = xasprintf("%s/unlearn.json", out);
    json_save(jp, j);                       /* last: its presence marks a finished operation */
    free(jp);
    if (!o.quiet || st != UL_OK) {
        if (st == UL_OK)
            fprintf(stderr, "unlearn %s: %ld steps in %.1f s, loss %.4f -> %.4f", unlearn_method_name(o.method),
                    r.steps, r.seconds, r.loss_first, r.loss_last);
        if (st == UL_OK && o.probe)
            fprintf(stderr, "; forget log-lik %.3f -> %.3f, retain %.3f -> %.3f\n", r.probe_forget_before,
                    r.probe_forget_after, r.probe_retain_before, r.probe_retain_after);
        else if (st == UL_OK)
            fprintf(stderr, "\n");
    }
    unlearn_result_free(&r);
    free(fp); free(rp);
    if (rk) ckpt_free(rk);
    ckpt_free(ck);
    world_free(w);
    args_free(&a);
    if (st != UL_OK) {
        fprintf(stderr, "pulse: unlearn diverged: %s; no model written, status recorded in %s/unlearn.json\n",
                r.message, out);
        return 1;
    }
    return 0;
}
