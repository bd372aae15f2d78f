/* tests/test_model.c: the tiny LLaVA against its contracts.
 *
 * Gradient checks (whole model along a random direction, two extra forwards; per-tensor
 * spot checks) for full and LoRA training, with and without an image; KV-cache decoding
 * == full forward; LoRA B = 0 == base, merged == unmerged; padding invariance; score and
 * generate agree with the forward; AdamW and schedules against hand computations; an
 * overfitting run; config validation (exit 2 via fork). Small shapes, fixed seeds. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common.h"
#include "../io.h"
#include "../model.h"
#include "../tensor.h"
#include "test.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* A tiny config: GQA (4 heads, 2 kv heads), 4 patches, penultimate vision features. */
static LlavaConfig tiny(void) {
    LlavaConfig c = config_default();
    c.vocab_size = 40; c.hidden_size = 16; c.intermediate_size = 24;
    c.num_hidden_layers = 2; c.num_attention_heads = 4; c.num_key_value_heads = 2;
    c.v_hidden_size = 8; c.v_intermediate_size = 16; c.v_num_hidden_layers = 2;
    c.v_num_attention_heads = 2; c.image_size = 8; c.patch_size = 4;
    c.vision_feature_layer = -2; c.max_position_embeddings = 256;
    c.initializer_range = 0.2; c.v_initializer_range = 0.2;
    return c;
}

static float *rand_pixels(const LlavaConfig *c, uint64_t seed) {
    size_t n = (size_t)3 * c->image_size * c->image_size;
    float *p = xmalloc(n * sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = rng_normal(&r);
    return p;
}

/* A random sequence: <s>, [<image>], tokens in [4, V). */
static int rand_seq(int *ids, int n, int with_image, const LlavaConfig *c, Rng *r) {
    ids[0] = c->bos_token_id;
    int k = 1;
    if (with_image) ids[k++] = c->image_token_index;
    for (; k < n; k++) ids[k] = 4 + (int)rng_below(r, (uint32_t)(c->vocab_size - 4));
    return n;
}

/* Batch of 3: image row (len 7), text row (len 5), image row (len 9); answers from 3, 2, 4. */
static float *g_pix[3];
static void make_batch(Batch *bt, const LlavaConfig *c, int images) {
    Rng r;
    rng_seed(&r, 11);
    batch_init(bt, 3, 12, c->pad_token_id);
    int lens[3] = {7, 5, 9}, starts[3] = {3, 2, 4}, img[3] = {images, 0, images};
    for (int i = 0; i < 3; i++) {
        int ids[16];
        rand_seq(ids, lens[i], img[i], c, &r);
        if (!g_pix[i]) g_pix[i] = rand_pixels(c, 100 + (uint64_t)i);
        batch_add(bt, ids, lens[i], starts[i], img[i] ? g_pix[i] : NULL);
    }
}

static double fwd_loss(Model *m, Tape *tp, const Batch *bt) {
    tape_reset(tp);
    ForwardOpts o = {0};
    o.no_grad = 1;
    ForwardOut f = model_forward(m, tp, bt, &o);
    double l = f.loss->data[0];
    tape_reset(tp);
    return l;
}

/* All trainable (value, grad) float ranges: base then LoRA. */
typedef struct Span { float *w, *g; size_t n; } Span;
static int spans(Model *m, Span *s) {
    int k = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].trainable) s[k++] = (Span){m->w + m->params[i].offset, m->g + m->params[i].offset, m->params[i].n};
    for (int i = 0; m->lora.attached && i < m->lora.n; i++)
        if (m->lora.trainable[i]) {
            size_t n = (size_t)m->lora.r * (m->lora.mod[i].in + m->lora.mod[i].out);
            s[k++] = (Span){m->lora.w + m->lora.mod[i].a_off, m->lora.g + m->lora.mod[i].a_off, n};
        }
    return k;
}

/* Whole-model check: g . d against (L(w + eps d) - L(w - eps d)) / 2 eps, d random. */
static void gradcheck(TrainMode mode, int images, int tied, const char *what) {
    LlavaConfig c = tiny();
    c.tie_word_embeddings = tied;
    Model *m = model_new(&c);
    model_init(m, 7);
    if (mode == TRAIN_LORA) {
        LoraConfig lc = {4, 8.0f, 0.0f, "llm,projector,vision", 3};
        lora_attach(m, &lc);
        Rng r;                                   /* B != 0 so that A gets a gradient */
        rng_seed(&r, 5);
        for (int i = 0; i < m->lora.n; i++) {
            float *Bm = m->lora.w + m->lora.mod[i].b_off;
            for (int k = 0; k < m->lora.mod[i].out * m->lora.r; k++) Bm[k] = 0.1f * rng_normal(&r);
        }
    }
    model_set_train(m, mode, NULL);
    Batch bt;
    make_batch(&bt, &c, images);
    Tape tp;
    tape_init(&tp, 1 << 20);
    ForwardOut f = model_forward(m, &tp, &bt, NULL);
    tape_backward(&tp, f.loss);
    tape_reset(&tp);
    Span *s = xmalloc((size_t)(m->n_params + m->lora.n) * sizeof *s);
    int ns = spans(m, s);
    size_t total = 0;
    for (int i = 0; i < ns; i++) total += s[i].n;
    float *d = xmalloc(total * sizeof(float)), *w0 = xmalloc(total * sizeof(float));
    Rng r;
    rng_seed(&r, 9);
    double gd = 0.0, eps = 1e-3;
    size_t k = 0;
    for (int i = 0; i < ns; i++)
        for (size_t j = 0; j < s[i].n; j++, k++) {
            d[k] = rng_normal(&r);
            w0[k] = s[i].w[j];
            gd += (double)s[i].g[j] * d[k];
        }
    double lp = 0, lm = 0;
    for (int sign = 1; sign >= -1; sign -= 2) {
        k = 0;
        for (int i = 0; i < ns; i++)
            for (size_t j = 0; j < s[i].n; j++, k++) s[i].w[j] = w0[k] + (float)(sign * eps) * d[k];
        double l = fwd_loss(m, &tp, &bt);
        if (sign == 1) lp = l; else lm = l;
    }
    k = 0;
    for (int i = 0; i < ns; i++)
        for (size_t j = 0; j < s[i].n; j++, k++) s[i].w[j] = w0[k];
    double fd = (lp - lm) / (2 * eps);
    double rel = fabs(fd - gd) / fmax(1e-3, fabs(gd));
    TEST(rel < 2e-2, "gradcheck %s: g.d %.6g vs finite difference %.6g (rel %.3g, %zu params)", what, gd, fd, rel, total);

    /* per-tensor spot checks: 2 elements of each trainable tensor */
    int bad = 0, checked = 0;
    for (int i = 0; i < ns; i++) {
        for (int t = 0; t < 2; t++) {
            size_t j = rng_below(&r, (uint32_t)s[i].n);
            float w = s[i].w[j], h = 1e-2f;
            s[i].w[j] = w + h; double a = fwd_loss(m, &tp, &bt);
            s[i].w[j] = w - h; double b = fwd_loss(m, &tp, &bt);
            s[i].w[j] = w;
            double fdj = (a - b) / (2 * h), g = s[i].g[j];
            checked++;
            if (fabs(fdj - g) > 2e-4 + 3e-2 * fabs(g)) {
                if (bad < 5) printf("  spot %s span %d elem %zu: grad %.6g fd %.6g\n", what, i, j, g, fdj);
                bad++;
            }
        }
    }
    TEST(bad == 0, "gradcheck %s: %d of %d spot checks off", what, bad, checked);
    free(d); free(w0); free(s);
    tape_free(&tp);
    batch_free(&bt);
    model_free(m);
}

/* Only trainable tensors get gradients, and frozen ones stay NULL. */
static void test_trainable(void) {
    LlavaConfig c = tiny();
    Model *m = model_new(&c);
    model_init(m, 1);
    model_set_train(m, TRAIN_FULL, "vision_tower.");
    int vis_tr = 0, other_tr = 1;
    for (int i = 0; i < m->n_params; i++) {
        int vis = strncmp(m->params[i].name, "vision_tower.", 13) == 0;
        if (vis && m->params[i].trainable) vis_tr++;
        if (!vis && !m->params[i].trainable) other_tr = 0;
    }
    TEST(vis_tr == 0 && other_tr, "freeze vision_tower.: %d vision tensors trainable", vis_tr);
    Batch bt;
    make_batch(&bt, &c, 1);
    Tape tp;
    tape_init(&tp, 1 << 20);
    ForwardOut f = model_forward(m, &tp, &bt, NULL);
    tape_backward(&tp, f.loss);
    double pg = 0;
    const ParamInfo *p1 = &m->params[m->p1_w];
    for (size_t k = 0; k < p1->n; k++) pg += fabs(m->g[p1->offset + k]);
    TEST(pg > 0, "projector gets a gradient through frozen vision features");
    tape_reset(&tp);

    LoraConfig lc = {2, 4.0f, 0.0f, "q_proj,v_proj", 1};
    lora_attach(m, &lc);
    /* q_proj matches the Llama and the CLIP attention (PEFT's suffix rule) */
    TEST(m->lora.n == 2 * c.num_hidden_layers + 2 * c.v_num_hidden_layers, "q_proj,v_proj: %d modules", m->lora.n);
    model_set_train(m, TRAIN_LORA, "vision_tower.");
    size_t want = 0;
    for (int i = 0; i < m->lora.n; i++)
        if (strncmp(m->params[m->lora.mod[i].param].name, "language_model.", 15) == 0)
            want += (size_t)2 * (m->lora.mod[i].in + m->lora.mod[i].out);
    TEST(model_num_trainable(m) == want, "LoRA trainable %zu, want %zu", model_num_trainable(m), want);
    int base_grad = 0;
    for (int i = 0; i < m->n_params; i++) base_grad += m->t[i].grad != NULL;
    TEST(base_grad == 0, "LoRA mode: %d base tensors still have grads", base_grad);
    lora_detach(m);
    model_set_train(m, TRAIN_FULL, NULL);
    model_train_only(m, "language_model.model.layers.1.,multi_modal_projector.");
    size_t only = 0;
    for (int i = 0; i < m->n_params; i++)
        if (strncmp(m->params[i].name, "language_model.model.layers.1.", 30) == 0 ||
            strncmp(m->params[i].name, "multi_modal_projector.", 22) == 0) only += m->params[i].n;
    TEST(model_num_trainable(m) == only, "model_train_only: %zu trainable, want %zu", model_num_trainable(m), only);
    int ids[256];
    TEST(lora_select(m, "llm", ids, NULL, 0) == 7 * c.num_hidden_layers, "llm group: 7 linears per layer");
    TEST(lora_select(m, "projector", ids, NULL, 0) == 2, "projector group");
    char bad[64] = "";
    TEST(lora_select(m, "llm,nonsense", ids, bad, sizeof bad) == -1 && strcmp(bad, "nonsense") == 0, "unknown target reported");
    TEST(lora_select(m, "proj", ids, NULL, 0) == -1, "suffix matching is by whole components");
    TEST(lora_select(m, "language_model.model.layers.1.mlp.down_proj", ids, NULL, 0) == 1 &&
         ids[0] == m->tl[1].down, "full module name");
    tape_free(&tp);
    batch_free(&bt);
    model_free(m);
}

/* The table: unique names, contiguous offsets, the HF names, llava-1m's size. */
static void test_table(void) {
    LlavaConfig c = config_default();
    Model *m = model_new(&c);
    size_t off = 0;
    int dup = 0;
    for (int i = 0; i < m->n_params; i++) {
        TEST(m->params[i].offset == off, "param %s offset", m->params[i].name);
        off += m->params[i].n;
        for (int j = 0; j < i; j++) dup += strcmp(m->params[i].name, m->params[j].name) == 0;
    }
    TEST(dup == 0 && off == m->n_floats, "table: %d duplicate names, %zu floats", dup, off);
    const char *names[] = {"vision_tower.vision_model.embeddings.patch_embedding.weight",
                           "vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias",
                           "vision_tower.vision_model.post_layernorm.weight",
                           "multi_modal_projector.linear_1.weight",
                           "language_model.model.layers.3.self_attn.o_proj.weight",
                           "language_model.model.norm.weight", "language_model.lm_head.weight"};
    for (int i = 0; i < 7; i++) TEST(model_find_param(m, names[i]) >= 0, "table lacks %s", names[i]);
    int pi = model_find_param(m, names[0]);
    TEST(m->params[pi].ndim == 4 && m->params[pi].shape[1] == 3 && m->params[pi].shape[2] == 8, "patch conv shape");
    printf("llava-1m: %zu parameters in %d tensors\n", model_num_params(m), m->n_params);
    TEST(model_num_params(m) > 1000000 && model_num_params(m) < 1100000, "llava-1m has %zu params", model_num_params(m));
    /* same seed, same bytes; another seed, other bytes */
    Model *m2 = model_new(&c);
    model_init(m, 42); model_init(m2, 42);
    TEST(memcmp(m->w, m2->w, m->n_floats * sizeof(float)) == 0, "init is deterministic");
    model_init(m2, 43);
    TEST(memcmp(m->w, m2->w, m->n_floats * sizeof(float)) != 0, "init depends on the seed");
    model_free(m); model_free(m2);
}

/* KV-cache decode == full forward over a 40-token decode, two rows, with LoRA or not. */
static void test_kv(int with_lora) {
    LlavaConfig c = tiny();
    Model *m = model_new(&c);
    model_init(m, 3);
    if (with_lora) {
        LoraConfig lc = {2, 4.0f, 0.0f, "llm,projector", 2};
        lora_attach(m, &lc);
        Rng r; rng_seed(&r, 4);
        for (size_t k = 0; k < m->lora.n_floats; k++) m->lora.w[k] += 0.05f * rng_normal(&r);
    }
    int V = c.vocab_size, steps = 40;
    Rng r; rng_seed(&r, 8);
    int p0[6], p1[9];
    rand_seq(p0, 6, 1, &c, &r);
    rand_seq(p1, 9, 0, &c, &r);
    float *pix = rand_pixels(&c, 77);
    Batch bt;
    batch_init(&bt, 2, 9, c.pad_token_id);
    batch_add(&bt, p0, 6, 6, pix);
    batch_add(&bt, p1, 9, 9, NULL);
    KvCache kv;
    kv_init(&kv, &c, 2, 64);
    float *lg = xmalloc((size_t)2 * V * sizeof(float));
    float *hist = xmalloc((size_t)2 * (steps + 1) * V * sizeof(float));
    int seqs[2][64], lens[2] = {6, 9};
    memcpy(seqs[0], p0, sizeof p0); memcpy(seqs[1], p1, sizeof p1);
    model_prefill(m, &kv, &bt, lg);
    memcpy(hist, lg, (size_t)2 * V * sizeof(float));
    int rows[2] = {0, 1};
    for (int s = 0; s < steps; s++) {
        int tok[2];
        for (int b = 0; b < 2; b++) {
            tok[b] = 4 + (int)rng_below(&r, (uint32_t)(V - 4));   /* teacher-forced random tokens */
            seqs[b][lens[b]++] = tok[b];
        }
        model_decode_step(m, &kv, rows, tok, 2, lg);
        memcpy(hist + (size_t)(s + 1) * 2 * V, lg, (size_t)2 * V * sizeof(float));
    }
    /* full forward over the whole sequences */
    Batch full;
    batch_init(&full, 2, 64, c.pad_token_id);
    batch_add(&full, seqs[0], lens[0], lens[0], pix);
    batch_add(&full, seqs[1], lens[1], lens[1], NULL);
    Tape tp;
    tape_init(&tp, 1 << 20);
    ForwardOpts o = {0};
    o.logits = 1; o.no_grad = 1;
    ForwardOut f = model_forward(m, &tp, &full, &o);
    double maxd = 0.0;
    int Np = m->n_patches;
    for (int b = 0; b < 2; b++) {
        int first = (b == 0 ? 6 + Np - 1 : 9) - 1;   /* merged position of the last prompt token */
        for (int s = 0; s <= steps; s++) {
            const float *a = hist + ((size_t)s * 2 + b) * V, *z = f.logits->data + ((size_t)b * f.T + first + s) * V;
            for (int v = 0; v < V; v++) maxd = fmax(maxd, fabs((double)a[v] - z[v]));
        }
    }
    TEST(maxd <= 1e-4, "KV cache%s: max |logit diff| %.3g over %d steps", with_lora ? " (LoRA)" : "", maxd, steps);
    printf("kv cache%s: max |cached - full| = %.3g\n", with_lora ? " + LoRA" : "", maxd);
    tape_free(&tp);
    batch_free(&bt); batch_free(&full);
    kv_free(&kv);
    free(lg); free(hist); free(pix);
    model_free(m);
}

static float *full_logits(Model *m, Tape *tp, const Batch *bt, size_t *n) {
    tape_reset(tp);
    ForwardOpts o = {0};
    o.logits = 1; o.no_grad = 1;
    ForwardOut f = model_forward(m, tp, bt, &o);
    *n = f.logits->n;
    float *z = xmalloc(*n * sizeof(float));
    memcpy(z, f.logits->data, *n * sizeof(float));
    return z;
}

static void test_lora_identity_merge(void) {
    LlavaConfig c = tiny();
    Model *m = model_new(&c);
    model_init(m, 5);
    Batch bt;
    make_batch(&bt, &c, 1);
    Tape tp;
    tape_init(&tp, 1 << 20);
    size_t n0, n1, n2;
    float *base = full_logits(m, &tp, &bt, &n0);
    LoraConfig lc = {4, 16.0f, 0.0f, "llm,projector,vision", 9};
    lora_attach(m, &lc);
    float *zero = full_logits(m, &tp, &bt, &n1);
    int same = n0 == n1 && memcmp(base, zero, n0 * sizeof(float)) == 0;
    TEST(same, "LoRA with B = 0 is exactly the base model");
    Rng r; rng_seed(&r, 6);
    for (int i = 0; i < m->lora.n; i++) {
        float *Bm = m->lora.w + m->lora.mod[i].b_off;
        for (int k = 0; k < m->lora.mod[i].out * m->lora.r; k++) Bm[k] = 0.05f * rng_normal(&r);
    }
    float *unmerged = full_logits(m, &tp, &bt, &n1);
    double moved = 0;
    for (size_t k = 0; k < n0; k++) moved = fmax(moved, fabs(unmerged[k] - base[k]));
    TEST(moved > 1e-3, "LoRA with B != 0 changes the logits (%.3g)", moved);
    lora_merge(m);
    TEST(!m->lora.attached, "merge detaches the adapters");
    float *merged = full_logits(m, &tp, &bt, &n2);
    double d = 0;
    for (size_t k = 0; k < n0; k++) d = fmax(d, fabs(unmerged[k] - merged[k]));
    TEST(d <= 1e-5, "merged == unmerged: max diff %.3g", d);
    free(base); free(zero); free(unmerged); free(merged);
    tape_free(&tp);
    batch_free(&bt);
    model_free(m);
}

/* Per-sequence log-probs of a padded batch == each sequence alone; loss = token mean. */
static void test_padding(void) {
    LlavaConfig c = tiny();
    Model *m = model_new(&c);
    model_init(m, 2);
    Batch bt;
    make_batch(&bt, &c, 1);
    Tape tp;
    tape_init(&tp, 1 << 20);
    ForwardOut f = model_forward(m, &tp, &bt, NULL);
    float seq[3], loss = f.loss->data[0];
    int cnt = 0, nl[3];
    double sum = 0;
    for (int b = 0; b < 3; b++) { seq[b] = f.seq_logp->data[b]; sum += seq[b]; nl[b] = f.n_labels[b]; cnt += nl[b]; }
    TEST(cnt == 12, "labels: %d", cnt);   /* (7-3) + (5-2) + (9-4) */
    TEST(fabs(loss + sum / cnt) < 1e-5, "loss %.6g is the token mean %.6g", loss, -sum / cnt);
    tape_reset(&tp);
    double maxd = 0;
    for (int b = 0; b < 3; b++) {
        Batch one;
        batch_init(&one, 1, 12, c.pad_token_id);
        const int *row = bt.ids + (size_t)b * bt.cap_T;
        int st = 0;
        while (bt.targets[(size_t)b * bt.cap_T + st] < 0) st++;
        batch_add(&one, row, bt.len[b], st + 1, bt.pixels[b]);
        ForwardOut g = model_forward(m, &tp, &one, NULL);
        maxd = fmax(maxd, fabs(g.seq_logp->data[0] - seq[b]));
        TEST(g.n_labels[0] == nl[b], "row %d label count", b);
        tape_reset(&tp);
        batch_free(&one);
    }
    TEST(maxd < 1e-5, "padded batch vs alone: max |seq logp diff| %.3g", maxd);
    /* full logits path gives the same log-probs as the labelled-rows path */
    ForwardOpts o = {0};
    o.logits = 1;
    ForwardOut h = model_forward(m, &tp, &bt, &o);
    double d2 = 0;
    for (int b = 0; b < 3; b++) d2 = fmax(d2, fabs(h.seq_logp->data[b] - seq[b]));
    TEST(d2 < 1e-5, "full-logits path == labelled-rows path (%.3g)", d2);
    /* hidden states: hidden_only stops early with the same values */
    tape_reset(&tp);
    o.logits = 0; o.want_hidden = 1; o.hidden_layer = 0;
    ForwardOut h1 = model_forward(m, &tp, &bt, &o);
    float *hv = xmalloc(h1.hidden->n * sizeof(float));
    memcpy(hv, h1.hidden->data, h1.hidden->n * sizeof(float));
    size_t hn = h1.hidden->n;
    o.hidden_only = 1;
    ForwardOut h2 = model_forward(m, &tp, &bt, &o);
    TEST(h2.loss == NULL && h2.hidden->n == hn && memcmp(hv, h2.hidden->data, hn * sizeof(float)) == 0,
         "hidden_only returns layer 0's output");
    free(hv);
    tape_free(&tp);
    batch_free(&bt);
    model_free(m);
}

/* score == forward; greedy generation == argmax of its own scores; ref rows. */
static void test_score_generate(void) {
    LlavaConfig c = tiny();
    Model *m = model_new(&c);
    model_init(m, 4);
    Batch bt;
    make_batch(&bt, &c, 1);
    Tape tp;
    tape_init(&tp, 1 << 20);
    ForwardOut f = model_forward(m, &tp, &bt, NULL);
    ScoreItem it[3];
    for (int b = 0; b < 3; b++) {
        int st = 0;
        while (bt.targets[(size_t)b * bt.cap_T + st] < 0) st++;
        it[b] = (ScoreItem){bt.ids + (size_t)b * bt.cap_T, bt.len[b], st + 1, bt.pixels[b]};
    }
    ScoreResult sr[3];
    model_score(m, it, 3, SCORE_MOMENTS | SCORE_ROWS, sr);
    double d = 0;
    int ok_start = 1;
    for (int b = 0; b < 3; b++) {
        d = fmax(d, fabs(sr[b].sum - f.seq_logp->data[b]));
        /* the first scored token's merged position holds the first label in ForwardOut */
        int first = -1;
        for (int t = 0; t < f.T; t++) if (f.labelled[b * f.T + t]) { first = t; break; }
        ok_start &= sr[b].start == first + 1;
        ok_start &= sr[b].mu[0] <= 0 && sr[b].sigma[0] >= 0;
        double ps = 0;
        for (int v = 0; v < c.vocab_size; v++) ps += exp(sr[b].rows[v]);
        ok_start &= fabs(ps - 1) < 1e-5;
    }
    TEST(d < 1e-4, "model_score sums == forward seq_logp (%.3g)", d);
    TEST(ok_start, "score start positions, moments and rows");
    float seqref[3];
    tape_reset(&tp);
    float *rows = model_ref_logprobs(m, &tp, &bt, seqref);
    double d3 = 0;
    for (int b = 0; b < 3; b++) d3 = fmax(d3, fabs(seqref[b] - sr[b].sum));
    TEST(rows && d3 < 1e-4, "model_ref_logprobs seq sums (%.3g)", d3);
    for (int b = 0; b < 3; b++) score_result_free(&sr[b]);

    /* generate from 3 prompts (two with images), then score what was generated */
    GenItem gi[3];
    for (int b = 0; b < 3; b++) gi[b] = (GenItem){it[b].ids, it[b].n, it[b].pixels};
    GenResult gr[3];
    model_generate(m, gi, 3, 12, gr);
    int agree = 1;
    for (int b = 0; b < 3; b++) {
        int ids[64], n = it[b].n;
        memcpy(ids, it[b].ids, (size_t)n * sizeof(int));
        for (int k = 0; k < gr[b].n; k++) ids[n + k] = gr[b].ids[k];
        if (gr[b].eos) ids[n + gr[b].n] = c.eos_token_id;
        int tot = n + gr[b].n + gr[b].eos;
        if (tot == n) continue;
        ScoreItem s1 = {ids, tot, n, it[b].pixels};
        ScoreResult r1;
        model_score(m, &s1, 1, 0, &r1);
        for (int k = 0; k < r1.n; k++) agree &= r1.argmax[k] == ids[n + k];
        score_result_free(&r1);
        TEST(gr[b].eos || gr[b].n == 12, "generation stops at EOS or max_new");
    }
    TEST(agree, "greedy generation == argmax of the teacher-forced forward");
    for (int b = 0; b < 3; b++) gen_result_free(&gr[b]);
    tape_free(&tp);
    batch_free(&bt);
    model_free(m);
}

static void test_optimizer(void) {
    LlavaConfig c = tiny();
    Model *m = model_new(&c);
    model_init(m, 1);
    model_set_train(m, TRAIN_FULL, NULL);
    AdamW o = adamw_default();
    o.weight_decay = 0.1f;
    int wq = m->tl[0].q, nb = m->tl[0].ln_in;
    size_t iw = m->params[wq].offset, ib = m->params[nb].offset;
    float w0 = m->w[iw], b0 = m->w[ib];
    m->g[iw] = 0.5f; m->g[ib] = -0.25f;
    model_adamw_step(m, &o, 1e-2f);
    /* step 1: m = 0.1 g, v = 0.001 g^2, mhat = g, vhat = g^2 -> update lr * g / (|g| + eps) */
    float want_w = w0 * (1 - 1e-2f * 0.1f) - 1e-2f * 0.5f / (0.5f + 1e-8f);
    float want_b = b0 + 1e-2f * 0.25f / (0.25f + 1e-8f);      /* norm weight: no decay */
    TEST(fabsf(m->w[iw] - want_w) < 1e-6f, "AdamW decayed weight %.8g want %.8g", m->w[iw], want_w);
    TEST(fabsf(m->w[ib] - want_b) < 1e-6f, "AdamW norm weight %.8g want %.8g", m->w[ib], want_b);
    model_zero_grad(m);
    m->g[iw] = 3.0f; m->g[ib] = 4.0f;
    double norm = model_clip_grad(m, 1.0);
    TEST(fabs(norm - 5.0) < 1e-6 && fabsf(m->g[iw] - 0.6f) < 1e-5f, "clip: norm %.6g, g %.6g", norm, m->g[iw]);
    TEST(lr_schedule(LR_LINEAR, 0, 100, 10, 1.0f) == 0.0f && fabsf(lr_schedule(LR_LINEAR, 5, 100, 10, 1.0f) - 0.5f) < 1e-6f,
         "warm-up from 0");
    TEST(fabsf(lr_schedule(LR_LINEAR, 55, 100, 10, 1.0f) - 0.5f) < 1e-6f && lr_schedule(LR_LINEAR, 100, 100, 10, 1.0f) == 0.0f,
         "linear decay");
    TEST(fabsf(lr_schedule(LR_COSINE, 55, 100, 10, 2.0f) - 1.0f) < 1e-6f && fabsf(lr_schedule(LR_COSINE, 10, 100, 10, 2.0f) - 2.0f) < 1e-6f,
         "cosine decay");
    TEST(lr_schedule(LR_CONSTANT, 50, 100, 10, 3.0f) == 3.0f, "constant");
    model_free(m);

    /* vision_lr_scale: the vision tower's and the projector's weights step at lr x scale,
     * the decoder's at lr (scale 0 freezes the vision side) */
    m = model_new(&c);
    model_init(m, 1);
    model_set_train(m, TRAIN_FULL, NULL);
    o = adamw_default();
    o.weight_decay = 0.0f;
    o.vision_lr_scale = 0.25f;
    size_t iv = m->params[m->v_patch].offset, ip = m->params[m->p1_w].offset;
    iw = m->params[m->tl[0].q].offset;
    float v0 = m->w[iv], p0 = m->w[ip];
    w0 = m->w[iw];
    m->g[iv] = 1.0f; m->g[ip] = -1.0f; m->g[iw] = 1.0f;
    model_adamw_step(m, &o, 1e-2f);
    TEST(fabsf(m->w[iv] - (v0 - 0.25f * 1e-2f)) < 1e-6f && fabsf(m->w[ip] - (p0 + 0.25f * 1e-2f)) < 1e-6f,
         "vision_lr_scale: vision %.8g projector %.8g", m->w[iv] - v0, m->w[ip] - p0);
    TEST(fabsf(m->w[iw] - (w0 - 1e-2f)) < 1e-6f, "vision_lr_scale leaves the decoder at lr: %.8g", m->w[iw] - w0);
    model_free(m);
}

/* A tiny model memorises 8 (image, question) -> answer pairs. */
static void test_overfit(void) {
    LlavaConfig c = tiny();
    c.hidden_size = 32; c.intermediate_size = 64; c.num_attention_heads = 4; c.num_key_value_heads = 4;
    c.initializer_range = 0.02; c.v_initializer_range = 0.02; c.vision_feature_layer = -1;
    Model *m = model_new(&c);
    model_init(m, 12);
    model_set_train(m, TRAIN_FULL, NULL);
    Batch bt;
    batch_init(&bt, 8, 10, c.pad_token_id);
    float *pix[8];
    Rng r; rng_seed(&r, 13);
    for (int i = 0; i < 8; i++) {
        pix[i] = rand_pixels(&c, 200 + (uint64_t)i);
        /* <s> <image> q q q | a1 a2 </s> : answer depends on the image only */
        int ids[8] = {c.bos_token_id, c.image_token_index, 10, 11, 12,
                      14 + (int)rng_below(&r, 20), 14 + (int)rng_below(&r, 20), c.eos_token_id};
        batch_add(&bt, ids, 8, 5, pix[i]);
    }
    AdamW o = adamw_default();
    o.weight_decay = 0.0f;
    Tape tp;
    tape_init(&tp, 1 << 20);
    float loss = 0;
    int steps = 0;
    double t0 = now_seconds();
    for (steps = 0; steps < 600; steps++) {
        model_zero_grad(m);
        ForwardOut f = model_forward(m, &tp, &bt, NULL);
        loss = f.loss->data[0];
        tape_backward(&tp, f.loss);
        tape_reset(&tp);
        if (loss < 0.05f) break;
        model_clip_grad(m, 1.0);
        model_adamw_step(m, &o, lr_schedule(LR_CONSTANT, steps, 600, 20, 3e-3f));
    }
    printf("overfit: loss %.4f after %d steps (%.2fs)\n", loss, steps, now_seconds() - t0);
    TEST(loss < 0.05f, "overfitting 8 image+question pairs: loss %.4f after %d steps", loss, steps);
    for (int i = 0; i < 8; i++) free(pix[i]);
    tape_free(&tp);
    batch_free(&bt);
    model_free(m);
}

/* A few full + LoRA training steps and a generation: the bytes of the result. */
static uint64_t train_digest(void) {
    LlavaConfig c = tiny();
    c.hidden_size = 64; c.intermediate_size = 96; c.v_hidden_size = 32;
    c.vocab_size = 2100;                     /* big enough for the parallel paths (AdamW, clipping) */
    Model *m = model_new(&c);
    model_init(m, 31);
    model_set_train(m, TRAIN_FULL, NULL);
    Batch bt;
    make_batch(&bt, &c, 1);
    Tape tp;
    tape_init(&tp, 1 << 20);
    AdamW o = adamw_default();
    for (int s = 0; s < 6; s++) {
        if (s == 3) {
            LoraConfig lc = {4, 8.0f, 0.0f, "llm,projector", 1};
            lora_attach(m, &lc);
            model_set_train(m, TRAIN_LORA, NULL);
        }
        model_zero_grad(m);
        ForwardOut f = model_forward(m, &tp, &bt, NULL);
        tape_backward(&tp, f.loss);
        tape_reset(&tp);
        model_clip_grad(m, 0.5);
        model_adamw_step(m, &o, 1e-2f);
    }
    uint64_t h = hash64(m->w, m->n_floats * sizeof(float), HASH64_INIT);
    h = hash64(m->lora.w, m->lora.n_floats * sizeof(float), h);
    GenItem gi[3];
    for (int b = 0; b < 3; b++) gi[b] = (GenItem){bt.ids + (size_t)b * bt.cap_T, bt.len[b], bt.pixels[b]};
    GenResult gr[3];
    model_generate(m, gi, 3, 20, gr);
    for (int b = 0; b < 3; b++) { h = hash64(gr[b].ids, (size_t)gr[b].n * sizeof(int), h); gen_result_free(&gr[b]); }
    tape_free(&tp);
    batch_free(&bt);
    model_free(m);
    return h;
}

static void test_threads(void) {
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    uint64_t one = train_digest();
    omp_set_num_threads(nt > 1 ? nt : 2);
    uint64_t many = train_digest();
    omp_set_num_threads(nt);
    TEST(one == many, "training + generation bit-identical with 1 and %d threads", nt > 1 ? nt : 2);
#else
    TEST(train_digest() == train_digest(), "training + generation deterministic");
#endif
}

/* config_from_json on text must exit 2 (bad) or 0 (good). */
static int config_exit(const char *text) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(99);
        char err[256];
        Json *j = json_parse(text, strlen(text), err, sizeof err);
        if (!j) _exit(98);
        LlavaConfig c = config_from_json(j, "config.json");
        (void)c;
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static void test_config(void) {
    LlavaConfig c = config_default();
    Json *j = config_to_json(&c);
    LlavaConfig c2 = config_from_json(j, "x");
    TEST(memcmp(&c, &c2, sizeof c) == 0, "config_to_json -> config_from_json round trip");
    char *s = json_dump(j, 0);
    TEST(config_exit(s) == 0, "default config accepted");
    free(s);
    json_free(j);
    char *bench = read_file("/work/shared/bench/llava-1m.json", NULL);
    if (bench) {
        Json *b = json_parse(bench, strlen(bench), NULL, 0);
        LlavaConfig c3 = config_from_json(b, "llava-1m.json");
        c3.max_position_embeddings = c.max_position_embeddings;
        TEST(memcmp(&c, &c3, sizeof c) == 0, "defaults == llava-1m.json");
        json_free(b);
        free(bench);
    }
    const char *bad[] = {
        "{\"text_config\":{\"hidden_size\":130,\"num_attention_heads\":4}}",
        "{\"text_config\":{\"num_hidden_layers\":0}}",
        "{\"text_config\":{\"vocab_size\":100000000}}",
        "{\"text_config\":{\"num_key_value_heads\":3}}",
        "{\"vision_config\":{\"image_size\":30,\"patch_size\":8}}",
        "{\"vision_config\":{\"hidden_size\":66,\"num_attention_heads\":4}}",
        "{\"vision_feature_layer\":-4}",
        "{\"vision_feature_layer\":3}",
        "{\"image_token_index\":512}",
        "{\"model_type\":\"gpt2\"}",
        "{\"text_config\":{\"hidden_act\":\"gelu\"}}",
        "{\"text_config\":{\"rms_norm_eps\":-1}}",
        "{\"text_config\":{\"hidden_size\":12.5}}",
        "{\"text_config\":{\"rope_scaling\":{\"type\":\"linear\"}}}",
        "{\"vision_feature_select_strategy\":\"full\"}",
        "{\"text_config\":{\"num_hidden_layers\":\"4\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        TEST(config_exit(bad[i]) == 2, "bad config refused with exit 2: %s", bad[i]);
    TEST(config_exit("{\"vision_feature_layer\":-3}") == 0, "vision_feature_layer -3 (embeddings) allowed");
}

int main(void) {
    test_table();
    test_config();
    test_trainable();
    gradcheck(TRAIN_FULL, 1, 0, "full+image");
    gradcheck(TRAIN_FULL, 0, 0, "full text-only");
    gradcheck(TRAIN_FULL, 1, 1, "full+image, tied embeddings");
    gradcheck(TRAIN_LORA, 1, 0, "lora+image");
    gradcheck(TRAIN_LORA, 0, 0, "lora text-only");
    test_kv(0);
    test_kv(1);
    test_lora_identity_merge();
    test_padding();
    test_score_generate();
    test_optimizer();
    test_overfit();
    test_threads();
    for (int i = 0; i < 3; i++) free(g_pix[i]);
    return test_summary();
}
