/* tests/test_unlearn.c: the unlearning methods.
 *
 * 1. Each loss term on hand-computable inputs (value and gradient): NPO, SimNPO, DPO,
 *    KL, RMU, the RMU mask.
 * 2. Each method's loss at the first step through a tiny model, where the current model
 *    equals the reference: NPO = (2/b) log 2, IdkPO = (2/b) log 2 + a NLL_r, KL = 0, ...
 * 3. A directional gradient check of every method's loss through a tiny model with LoRA
 *    (random direction, two extra forwards), with and without images.
 * 4. unlearn_run on a generated tiny world: GA lowers the forget log-likelihood; a
 *    non-finite step is caught, reported and rolled back; `pulse unlearn` writes a
 *    PEFT adapter and a merged checkpoint that agree, and writes no model on divergence.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "checkpoint.h"
#include "common.h"
#include "data.h"
#include "io.h"
#include "model.h"
#include "tensor.h"
#include "test.h"
#include "tokenizer.h"
#include "unlearn.h"

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
static double logsig(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* A [n] tensor with a gradient, over static memory. */
static Tensor *var_vec(Tape *tp, const float *x, int n) {
    int s[1] = {n};
    Tensor *t = tensor_new(tp, 1, s, 1);
    memcpy(t->data, x, (size_t)n * sizeof(float));
    return t;
}

/* ----------------------------------------------------------------------------
 * 1. Loss terms by hand */

static void test_terms(void) {
    Tape tp;
    tape_init(&tp, 1 << 20);
    /* NPO at the first step: log-ratio 0 -> (2/b) log 2, whatever b */
    {
        float s[3] = {-3.0f, -7.5f, -1.25f};
        Tensor *x = var_vec(&tp, s, 3);
        Tensor *L = ul_term_npo(&tp, x, s, 0.1f);
        TEST(fabs(L->data[0] - 20.0 * log(2.0)) < 1e-4, "NPO at start %g, expected %g", L->data[0], 20.0 * log(2.0));
        tape_reset(&tp);
    }
    /* NPO value and gradient: dL/ds_i = (2/B) sigmoid(b d_i) */
    {
        float s[2] = {-2.0f, -9.0f}, ref[2] = {-3.0f, -7.0f}, beta = 0.5f;
        Tensor *x = var_vec(&tp, s, 2);
        Tensor *L = ul_term_npo(&tp, x, ref, beta);
        double want = 0.0;
        for (int i = 0; i < 2; i++) want += -(2.0 / beta) * logsig(-beta * (s[i] - ref[i])) / 2.0;
        TEST(fabs(L->data[0] - want) < 1e-5, "NPO %g, expected %g", L->data[0], want);
        tape_backward(&tp, L);
        for (int i = 0; i < 2; i++) {
            double g = sigm(beta * (s[i] - ref[i]));
            TEST(fabs(x->grad[i] - g) < 1e-5, "NPO grad[%d] %g, expected %g", i, x->grad[i], g);
        }
        tape_reset(&tp);
    }
    /* SimNPO: x_i = b (-s_i/T_i - d); L = -(2/b) mean log sigmoid(x_i); a row with T = 0 skipped */
    {
        float s[3] = {-2.0f, -6.0f, 0.0f}, beta = 4.5f, delta = 0.5f;
        int T[3] = {2, 3, 0};
        Tensor *x = var_vec(&tp, s, 3);
        Tensor *L = ul_term_simnpo(&tp, x, T, beta, delta);
        double x0 = beta * (1.0 - delta), x1 = beta * (2.0 - delta);
        double want = -(2.0 / beta) * (logsig(x0) + logsig(x1)) / 2.0;
        TEST(fabs(L->data[0] - want) < 1e-5, "SimNPO %g, expected %g", L->data[0], want);
        tape_backward(&tp, L);
        /* dL/ds_i = -(2/b)(1/2) sigmoid(-x_i) * (-b/T_i) = sigmoid(-x_i) / T_i */
        TEST(fabs(x->grad[0] - sigm(-x0) / 2.0) < 1e-5, "SimNPO grad[0] %g", x->grad[0]);
        TEST(fabs(x->grad[1] - sigm(-x1) / 3.0) < 1e-5, "SimNPO grad[1] %g", x->grad[1]);
        TEST(x->grad[2] == 0.0f, "SimNPO: a row without labels has gradient %g", x->grad[2]);
        tape_reset(&tp);
    }
    /* DPO (IdkPO): at the first step (2/b) log 2; by hand elsewhere */
    {
        float w[2] = {-4.0f, -5.0f}, l[2] = {-1.0f, -2.0f};
        Tensor *tw = var_vec(&tp, w, 2), *tl = var_vec(&tp, l, 2);
        Tensor *L = ul_term_dpo(&tp, tw, w, tl, l, 0.1f);
        TEST(fabs(L->data[0] - 20.0 * log(2.0)) < 1e-4, "DPO at start %g", L->data[0]);
        tape_reset(&tp);
        float wr[2] = {-5.0f, -4.0f}, lr[2] = {-1.5f, -1.0f}, beta = 0.3f;
        tw = var_vec(&tp, w, 2); tl = var_vec(&tp, l, 2);
        L = ul_term_dpo(&tp, tw, wr, tl, lr, beta);
        double want = 0.0, gw[2];
        for (int i = 0; i < 2; i++) {
            double d = (w[i] - wr[i]) - (l[i] - lr[i]);
            want += -(2.0 / beta) * logsig(beta * d) / 2.0;
            gw[i] = -sigm(-beta * d);            /* dL/dw_i = -(1/B)(2/b) b sigmoid(-b d) */
        }
        TEST(fabs(L->data[0] - want) < 1e-5, "DPO %g, expected %g", L->data[0], want);
        tape_backward(&tp, L);
        for (int i = 0; i < 2; i++) {
            TEST(fabs(tw->grad[i] - gw[i]) < 1e-5, "DPO dwin[%d] %g, expected %g", i, tw->grad[i], gw[i]);
            TEST(fabs(tl->grad[i] + gw[i]) < 1e-5, "DPO dlose[%d] %g, expected %g", i, tl->grad[i], -gw[i]);
        }
        tape_reset(&tp);
    }
    /* KL(p_ref || p) over masked rows / denom */
    {
        enum { N = 3, V = 4 };
        float z[N * V] = {0.1f, 1.0f, -0.5f, 2.0f, 0.0f, 0.0f, 0.0f, 0.0f, 3.0f, -1.0f, 0.5f, 0.2f};
        float zr[N * V] = {0.3f, 0.7f, -0.2f, 1.5f, 1.0f, 0.0f, -1.0f, 0.5f, 2.0f, 0.0f, 0.0f, 0.0f};
        float rows[N * V];
        uint8_t mask[N] = {1, 0, 1};
        double want = 0.0;
        for (int r = 0; r < N; r++) {
            double mz = 0, mr = 0;
            for (int v = 0; v < V; v++) { mz += exp(z[r * V + v]); mr += exp(zr[r * V + v]); }
            for (int v = 0; v < V; v++) rows[r * V + v] = (float)(zr[r * V + v] - log(mr));
            if (!mask[r]) continue;
            for (int v = 0; v < V; v++) {
                double lp = z[r * V + v] - log(mz), lq = zr[r * V + v] - log(mr);
                want += exp(lq) * (lq - lp);
            }
        }
        want /= 2.0;
        int sh[2] = {N, V};
        Tensor *t = tensor_new(&tp, 2, sh, 1);
        memcpy(t->data, z, sizeof z);
        Tensor *L = ul_term_kl(&tp, t, rows, mask, 2.0f);
        TEST(fabs(L->data[0] - want) < 1e-5, "KL %g, expected %g", L->data[0], want);
        /* KL of a distribution with itself is 0 */
        Tensor *t2 = tensor_new(&tp, 2, sh, 1);
        memcpy(t2->data, zr, sizeof zr);
        Tensor *L0 = ul_term_kl(&tp, t2, rows, NULL, 3.0f);
        TEST(fabs(L0->data[0]) < 1e-6, "KL(p || p) = %g", L0->data[0]);
        tape_reset(&tp);
    }
    /* RMU masked MSE: mean over rows with a mask of (1/|M_b|) sum_t (1/D)|h_t - c|^2 */
    {
        enum { B = 3, T = 3, D = 4 };
        float h[B * T * D], c[D] = {0.5f, -1.0f, 2.0f, 0.0f};
        Rng r;
        rng_seed(&r, 7);
        for (int i = 0; i < B * T * D; i++) h[i] = rng_normal(&r);
        uint8_t mask[B * T] = {0, 1, 1, 0, 0, 0, 1, 0, 0};   /* row 1 empty: skipped */
        double want = 0.0;
        for (int b = 0; b < B; b++) {
            int m = 0;
            double s = 0.0;
            for (int t = 0; t < T; t++) {
                if (!mask[b * T + t]) continue;
                m++;
                for (int d = 0; d < D; d++) { double e = h[(b * T + t) * D + d] - c[d]; s += e * e / D; }
            }
            if (m) want += s / m / 2.0;
        }
        int sh[2] = {B * T, D};
        Tensor *x = tensor_new(&tp, 2, sh, 1);
        memcpy(x->data, h, sizeof h);
        Tensor *L = ul_term_rmu(&tp, x, c, 0, mask, B, T);
        TEST(fabs(L->data[0] - want) < 1e-5, "RMU %g, expected %g", L->data[0], want);
        tape_backward(&tp, L);
        /* d/dh of row 0 position 1: 2 (h - c) / (D |M_0| 2) */
        double g = 2.0 * (h[1 * D + 0] - c[0]) / (D * 2.0 * 2.0);
        TEST(fabs(x->grad[1 * D + 0] - g) < 1e-6, "RMU grad %g, expected %g", x->grad[1 * D], g);
        TEST(x->grad[0] == 0.0f, "RMU: unmasked position has gradient %g", x->grad[0]);
        tape_reset(&tp);
    }
    /* The RMU mask is the label mask shifted by one (OU masks answer tokens, we label the
     * positions predicting them) */
    {
        uint8_t lab[8] = {0, 1, 1, 0, 0, 0, 1, 0}, out[8];
        ForwardOut f;
        memset(&f, 0, sizeof f);
        f.B = 2; f.T = 4; f.labelled = lab;
        ul_rmu_mask(&f, out);
        uint8_t want[8] = {0, 0, 1, 1, 0, 0, 0, 1};
        TEST(memcmp(out, want, 8) == 0, "RMU mask %d%d%d%d %d%d%d%d", out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]);
    }
    tape_free(&tp);
}

/* ----------------------------------------------------------------------------
 * A tiny model and random batches */

static LlavaConfig tiny_cfg(void) {
    LlavaConfig c = config_default();
    c.vocab_size = 64; c.hidden_size = 32; c.intermediate_size = 48;
    c.num_hidden_layers = 2; c.num_attention_heads = 2; c.num_key_value_heads = 1;
    c.v_hidden_size = 16; c.v_intermediate_size = 32; c.v_num_hidden_layers = 2; c.v_num_attention_heads = 2;
    c.max_position_embeddings = 128;
    return c;
}

static float pix_store[8][3 * 32 * 32];

/* B rows: <s> prompt (<image>) ... answer </s>; row b has an image iff images && b % 2 == 0. */
static void random_batch(Batch *bt, Rng *r, int B, int V, int images, int answer_len_fixed) {
    batch_init(bt, B, 32, 0);
    for (int b = 0; b < B; b++) {
        int ids[32], n = 0, p = 3 + (int)rng_below(r, 5);
        int a = answer_len_fixed ? answer_len_fixed : 2 + (int)rng_below(r, 4);
        int img = images && b % 2 == 0;
        ids[n++] = 1;
        if (img) ids[n++] = 3;
        for (int i = 0; i < p; i++) ids[n++] = 4 + (int)rng_below(r, (uint32_t)(V - 4));
        int start = n;
        for (int i = 0; i < a; i++) ids[n++] = 4 + (int)rng_below(r, (uint32_t)(V - 4));
        ids[n++] = 2;
        if (img) for (int i = 0; i < 3 * 32 * 32; i++) pix_store[b][i] = rng_normal(r);
        batch_add(bt, ids, n, start, img ? pix_store[b] : NULL);
    }
}

static Model *tiny_model(uint64_t seed) {
    LlavaConfig c = tiny_cfg();
    Model *m = model_new(&c);
    model_init(m, seed);
    return m;
}

/* Forward-only value of the method loss (no gradient kept). */
static double loss_value(Model *m, Model *ref, Tape *tp, const UnlearnOpts *o, const float *ctrl,
                         const UlBatch *ub, int phase) {
    UlTerms t;
    Tensor *L = unlearn_loss(m, ref, tp, o, ctrl, ub, phase, &t);
    double v = L->data[0];
    tape_reset(tp);
    return v;
}

/* ----------------------------------------------------------------------------
 * 2. First-step values through the model */

static void test_first_step(void) {
    Model *m = tiny_model(11), *ref = model_clone(m);
    Rng r;
    rng_seed(&r, 3);
    UlBatch ub;
    memset(&ub, 0, sizeof ub);
    random_batch(&ub.forget, &r, 4, 64, 1, 0);
    random_batch(&ub.retain, &r, 4, 64, 1, 0);
    random_batch(&ub.idk, &r, 4, 64, 1, 0);
    Tape tp;
    tape_init(&tp, 8 << 20);
    ForwardOut ff = model_forward(m, &tp, &ub.forget, NULL);
    double nll_f = ff.loss->data[0];
    float seq[4];
    int nl[4];
    for (int i = 0; i < 4; i++) { seq[i] = ff.seq_logp->data[i]; nl[i] = ff.n_labels[i]; }
    ForwardOut fr = model_forward(m, &tp, &ub.retain, NULL);
    double nll_r = fr.loss->data[0];
    tape_reset(&tp);
    float ctrl[32];
    for (int i = 0; i < 32; i++) ctrl[i] = 0.3f;

    UnlearnOpts o = unlearn_opts_default(UL_GA, UL_FINETUNED);
    TEST(fabs(loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH) + nll_f) < 1e-5, "GA = -NLL_f");
    o = unlearn_opts_default(UL_GD, UL_FINETUNED);
    TEST(fabs(loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH) - (-nll_f + nll_r)) < 1e-5, "GD = -NLL_f + NLL_r");
    TEST(fabs(loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_FORGET) + nll_f) < 1e-5, "GD forget pass = -NLL_f");
    TEST(fabs(loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_RETAIN) - nll_r) < 1e-5, "GD retain pass = NLL_r");
    o = unlearn_opts_default(UL_KLR, UL_FINETUNED);
    TEST(fabs(loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH) + nll_f) < 1e-5, "GA+KLR at start = -NLL_f (KL 0)");
    o.kl_mask = UL_KL_VALID;
    TEST(fabs(loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH) + nll_f) < 1e-5, "GA+KLR (valid mask) at start");
    o.variant = UL_VARIANT_MLLMU;
    TEST(fabs(loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_RETAIN) - nll_r) < 1e-4, "MLLMU KL_Min retain pass at start = NLL_r");
    o = unlearn_opts_default(UL_NPO, UL_FINETUNED);
    double v = loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH);
    TEST(fabs(v - 20.0 * log(2.0)) < 1e-4, "NPO at start %g = (2/b) log 2", v);
    o.variant = UL_VARIANT_MLLMU; o.beta = 0.4f;
    v = loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH);
    TEST(fabs(v - 5.0 * log(2.0)) < 1e-4, "NPO (MLLMU, ref = model) at start %g = (2/b) log 2", v);
    o = unlearn_opts_default(UL_NPO_RT, UL_FINETUNED);
    v = loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH);
    TEST(fabs(v - (20.0 * log(2.0) + nll_r)) < 1e-4, "NPO+RT at start %g", v);
    o = unlearn_opts_default(UL_IDKPO, UL_FINETUNED);
    v = loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH);
    TEST(fabs(v - (20.0 * log(2.0) + nll_r)) < 1e-4, "IdkPO at start %g = (2/b) log 2 + NLL_r", v);
    o = unlearn_opts_default(UL_SIMNPO, UL_FINETUNED);
    double want = 0.0;
    for (int i = 0; i < 4; i++) want += -(2.0 / 4.5) * logsig(4.5 * (-seq[i] / nl[i])) / 4.0;
    v = loss_value(m, ref, &tp, &o, NULL, &ub, UL_PHASE_BOTH);
    TEST(fabs(v - (o.gamma * want + nll_r)) < 1e-4, "SimNPO %g, expected %g", v, o.gamma * want + nll_r);
    o = unlearn_opts_default(UL_RMU, UL_FINETUNED);
    UlTerms t;
    unlearn_loss(m, ref, &tp, &o, ctrl, &ub, UL_PHASE_BOTH, &t);
    TEST(fabs(t.retain) < 1e-7 && t.forget > 0.0f, "RMU at start: retain %g (0), forget %g", t.retain, t.forget);
    tape_reset(&tp);

    tape_free(&tp);
    batch_free(&ub.forget); batch_free(&ub.retain); batch_free(&ub.idk);
    model_free(m); model_free(ref);
}

/* ----------------------------------------------------------------------------
 * 3. Directional gradient check of every method through the model (LoRA) */

static void grad_check(UlMethod method, UlVariant variant, int phase, int images) {
    Model *m = tiny_model(21), *ref = model_clone(m);
    LoraConfig lc = {4, 8.0f, 0.0f, "llm,projector", 5};
    lora_attach(m, &lc);
    Rng r;
    rng_seed(&r, 100 + method);
    /* B != 0 so that the adapters act, and the model differs from the reference */
    for (size_t i = 0; i < m->lora.n_floats; i++) m->lora.w[i] += 0.05f * rng_normal(&r);
    model_set_train(m, TRAIN_LORA, NULL);
    UlBatch ub;
    memset(&ub, 0, sizeof ub);
    random_batch(&ub.forget, &r, 3, 64, images, 0);
    random_batch(&ub.retain, &r, 3, 64, images, 0);
    random_batch(&ub.idk, &r, 3, 64, images, 0);
    float ctrl[32];
    for (int i = 0; i < 32; i++) ctrl[i] = (float)rng_uniform(&r);
    UnlearnOpts o = unlearn_opts_default(method, UL_FINETUNED);
    o.variant = variant;
    o.beta = method == UL_SIMNPO ? 2.0f : 0.5f;  /* curvature large enough to matter */
    o.alpha = 0.7f; o.gamma = 1.3f;
    Tape tp;
    tape_init(&tp, 8 << 20);
    model_zero_grad(m);
    UlTerms t;
    Tensor *L = unlearn_loss(m, ref, &tp, &o, ctrl, &ub, phase, &t);
    tape_backward(&tp, L);
    tape_reset(&tp);
    size_t n = m->lora.n_floats;
    float *dir = malloc(n * sizeof(float)), *w0 = malloc(n * sizeof(float));
    memcpy(w0, m->lora.w, n * sizeof(float));
    double gd = 0.0;
    for (size_t i = 0; i < n; i++) { dir[i] = rng_normal(&r); gd += (double)m->lora.g[i] * dir[i]; }
    double eps = 1e-3;
    for (size_t i = 0; i < n; i++) m->lora.w[i] = w0[i] + (float)eps * dir[i];
    double lp = loss_value(m, ref, &tp, &o, ctrl, &ub, phase);
    for (size_t i = 0; i < n; i++) m->lora.w[i] = w0[i] - (float)eps * dir[i];
    double lm = loss_value(m, ref, &tp, &o, ctrl, &ub, phase);
    memcpy(m->lora.w, w0, n * sizeof(float));
    double fd = (lp - lm) / (2.0 * eps);
    double rel = fabs(fd - gd) / fmax(1e-3, fmax(fabs(fd), fabs(gd)));
    TEST(rel < 1e-2 && fabs(gd) > 1e-4, "grad check %s%s phase %d images %d: directional %g vs finite difference %g (rel %.2g)",
         unlearn_method_name(method), variant == UL_VARIANT_MLLMU ? " (mllmu)" : "", phase, images, gd, fd, rel);
    free(dir); free(w0);
    tape_free(&tp);
    batch_free(&ub.forget); batch_free(&ub.retain); batch_free(&ub.idk);
    model_free(m); model_free(ref);
}

static void test_grad_checks(void) {
    for (int meth = 0; meth < UL_N_METHODS; meth++) grad_check((UlMethod)meth, UL_VARIANT_OU, UL_PHASE_BOTH, 1);
    grad_check(UL_NPO, UL_VARIANT_OU, UL_PHASE_BOTH, 0);
    grad_check(UL_NPO, UL_VARIANT_MLLMU, UL_PHASE_BOTH, 1);
    grad_check(UL_KLR, UL_VARIANT_MLLMU, UL_PHASE_RETAIN, 1);
    grad_check(UL_RMU, UL_VARIANT_OU, UL_PHASE_BOTH, 0);
}

/* ----------------------------------------------------------------------------
 * 4. unlearn_run and `pulse unlearn` on a generated tiny world */

static int file_exists_(const char *p) { struct stat st; return stat(p, &st) == 0; }

static void test_run(void) {
    /* tmpfs when there is one: the atomic writes fsync */
    char dir[64];
    snprintf(dir, sizeof dir, "%s/pulse_test_unlearn_XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir)) { TEST(0, "mkdtemp %s", dir); return; }
    char *wdir = xasprintf("%s/world", dir);
    double tg = now_seconds();
    data_generate(preset_find("tiny"), 1, "data", wdir);
    World *w = world_load(wdir);
    if (getenv("PULSE_TEST_TIMES")) fprintf(stderr, "times: world %.2f s\n", now_seconds() - tg);
    char *tp_ = xasprintf("%s/tokenizer.json", wdir);
    Tokenizer *tok = tok_load(tp_);
    /* a small random model over the world's vocabulary (speed under the sanitizers) */
    LlavaConfig c = config_default();
    c.vocab_size = tok_vocab_size(tok);
    c.hidden_size = 64; c.num_attention_heads = 2; c.num_key_value_heads = 2;
    c.num_hidden_layers = 2; c.intermediate_size = 128;
    c.v_hidden_size = 32; c.v_intermediate_size = 64; c.v_num_hidden_layers = 1; c.v_num_attention_heads = 2;
    Model *m = model_new(&c);
    model_init(m, 3);

    const Split *fs = world_split(w, "forget_10");
    int nr = 0;
    int *fict = world_people_of_kind(w, KIND_FICTITIOUS, &nr);
    int k = 0;
    for (int i = 0; i < nr; i++) {
        int in = 0;
        for (int j = 0; j < fs->n; j++) in |= fict[i] == fs->people[j];
        if (!in) fict[k++] = fict[i];
    }
    nr = k;

    /* GA lowers the forget log-likelihood */
    UnlearnOpts o = unlearn_opts_default(UL_GA, UL_FINETUNED);
    o.forget = fs->people; o.n_forget = 1;      /* small: the sanitizer build runs this too */
    o.retain = fict; o.n_retain = 1;            /* the probe reads the retain items too */
    o.steps = 6; o.batch = 4; o.probe = 1;
    UnlearnResult r;
    UlStatus st = unlearn_run(w, tok, m, NULL, &o, &r);
    TEST(st == UL_OK && r.steps == 6, "GA run: status %d, %ld steps", st, r.steps);
    TEST(r.probe_forget_after < r.probe_forget_before - 0.05,
         "GA lowers the forget log-likelihood: %.4f -> %.4f", r.probe_forget_before, r.probe_forget_after);
    TEST(!m->lora.attached && m->mode == TRAIN_NONE, "GA run: adapters merged, model in TRAIN_NONE");
    TEST(r.json && json_get(r.json, "losses") && r.n_forget_items > 0, "GA run: a JSON record");
    unlearn_result_free(&r);

    /* every method runs two steps from the same model without trouble */
    for (int meth = 0; meth < UL_N_METHODS; meth++) {
        Model *m2 = model_clone(m);
        UnlearnOpts o2 = unlearn_opts_default((UlMethod)meth, UL_FINETUNED);
        o2.forget = fs->people; o2.n_forget = 1;
        o2.retain = fict; o2.n_retain = nr;
        o2.steps = 2; o2.batch = 4; o2.probe = 0; o2.fixed_render = meth % 2;
        st = unlearn_run(w, tok, m2, NULL, &o2, &r);
        TEST(st == UL_OK && r.steps == 2 && isfinite(r.loss_last), "%s runs: status %d loss %g",
             unlearn_method_name((UlMethod)meth), st, r.loss_last);
        unlearn_result_free(&r);
        model_free(m2);
    }

    /* a non-finite step is caught, recorded and rolled back */
    float *w0 = malloc(m->n_floats * sizeof(float));
    memcpy(w0, m->w, m->n_floats * sizeof(float));
    o.lr = 1e30f; o.steps = 4; o.probe = 0;
    st = unlearn_run(w, tok, m, NULL, &o, &r);
    TEST(st == UL_DIVERGED && r.diverged_step >= 0 && r.diverged_step < 4 && r.message[0],
         "divergence caught: status %d at step %ld: %s", st, r.diverged_step, r.message);
    TEST(memcmp(w0, m->w, m->n_floats * sizeof(float)) == 0 && !m->lora.attached,
         "divergence: the model is restored to its state before the operation");
    Json *js = json_get(r.json, "status");
    TEST(js && js->type == JSON_STRING && strcmp(js->string, "diverged") == 0, "divergence recorded in the JSON");
    unlearn_result_free(&r);
    /* full-parameter training rolls back too */
    o.lora_r = 0;
    st = unlearn_run(w, tok, m, NULL, &o, &r);
    TEST(st == UL_DIVERGED && memcmp(w0, m->w, m->n_floats * sizeof(float)) == 0,
         "divergence (full parameters): status %d, weights restored", st);
    unlearn_result_free(&r);
    free(w0);

    /* `pulse unlearn`: adapter + merged checkpoint that agree; nothing written on divergence */
    char *ck = xasprintf("%s/base", dir), *out = xasprintf("%s/cell", dir), *bad = xasprintf("%s/bad", dir);
    Preproc pre = preproc_default(&c);
    ckpt_save(ck, m, tok, &pre, NULL);
    char *argv1[] = {"--data", wdir, "--model", ck, "--method", "npo", "--setting", "finetuned",
                     "--forget", "forget_10", "--steps", "3", "--batch", "4", "--merge", "--no-probe", "--quiet", "--out", out};
    int rc = cmd_unlearn((int)(sizeof argv1 / sizeof argv1[0]), argv1);
    char *p1 = xasprintf("%s/adapter/adapter_model.safetensors", out), *p2 = xasprintf("%s/merged", out);
    char *p3 = xasprintf("%s/unlearn.json", out);
    TEST(rc == 0 && file_exists_(p1) && file_exists_(p2) && file_exists_(p3), "pulse unlearn: rc %d, adapter, merged, unlearn.json", rc);
    if (rc == 0 && file_exists_(p1) && file_exists_(p2)) {
        Checkpoint *base = ckpt_load(ck), *merged = ckpt_load(p2);
        char *ad = xasprintf("%s/adapter", out);
        adapter_load(ad, base->model);
        lora_merge(base->model);
        double md = 0.0;
        for (size_t i = 0; i < base->model->n_floats; i++) md = fmax(md, fabs(base->model->w[i] - merged->model->w[i]));
        TEST(md < 1e-5, "base + saved adapter, merged == saved merged checkpoint (max diff %g)", md);
        free(ad);
        ckpt_free(base); ckpt_free(merged);
    }
    char *argv2[] = {"--data", wdir, "--model", ck, "--method", "ga", "--setting", "finetuned",
                     "--lr", "1e30", "--steps", "4", "--batch", "4", "--merge", "--no-probe", "--quiet", "--out", bad};
    rc = cmd_unlearn((int)(sizeof argv2 / sizeof argv2[0]), argv2);
    char *q1 = xasprintf("%s/adapter", bad), *q2 = xasprintf("%s/merged", bad), *q3 = xasprintf("%s/unlearn.json", bad);
    TEST(rc == 1 && !file_exists_(q1) && !file_exists_(q2) && file_exists_(q3),
         "pulse unlearn diverging: rc %d, no adapter, no merged model, unlearn.json", rc);
    if (file_exists_(q3)) {
        Json *j = json_load(q3);
        Json *s = json_get(j, "status");
        TEST(s && s->type == JSON_STRING && strcmp(s->string, "diverged") == 0, "unlearn.json says diverged");
        json_free(j);
    }
    free(p1); free(p2); free(p3); free(q1); free(q2); free(q3);
    remove_tree(dir);
    free(ck); free(out); free(bad);
    free(fict);
    model_free(m);
    tok_free(tok);
    world_free(w);
    free(tp_); free(wdir);
}

int main(void) {
#ifdef _OPENMP
    /* the models here are tiny: threads only add barrier waits (badly so on a loaded machine) */
    omp_set_num_threads(1);
#endif
    double t0 = now_seconds();
    test_terms();
    test_first_step();
    double t1 = now_seconds();
    test_grad_checks();
    double t2 = now_seconds();
    test_run();
    if (getenv("PULSE_TEST_TIMES"))
        fprintf(stderr, "times: terms+first %.2f s, grad checks %.2f s, runs %.2f s\n", t1 - t0, t2 - t1, now_seconds() - t2);
    return test_summary();
}
