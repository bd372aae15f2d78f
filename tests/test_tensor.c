/* tests/test_tensor.c: the engine's contracts.
 *
 * - Gradient check of every op: loss = sum(out * R) with a fixed random R; analytic grads
 *   from tape_backward against central differences (h = 1e-2 on N(0,1) inputs, the loss
 *   summed in double). An element passes when |fd - an| <= 2e-2 |fd| + 2e-3 max(1, max|fd|).
 *   Plus the same check on a whole decoder block (sampled elements).
 * - Forward values of the subtle ops against a double-precision reference written here
 *   (attention with masks and Tq < Tk, RoPE, norms, token log-prob, KL, activations).
 * - SIMD == reference kernels: |simd - ref| <= 2e-5 (1 + sum_k |a_k b_k|) per element
 *   (the paths differ only by summation order and FMA); kern_exp within 4e-7 of expf;
 *   a whole forward + backward on both paths (kern_set_reference): loss within 1e-5
 *   relative, grads within 1e-4 of the largest grad.
 * - 1 thread == 2 threads, bit for bit (kernels and a whole forward + backward).
 * - Arena reuse over many steps: capacity and high-water mark stop growing after step 1.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "tensor.h"
#include "tests/test.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static Rng rng;

static void fill_normal(float *x, size_t n, float sd) {
    for (size_t i = 0; i < n; i++) x[i] = sd * rng_normal(&rng);
}

/* A persistent input tensor over malloc'ed data (and grad when needs_grad). */
static Tensor make_input(int ndim, const int *shape, int needs_grad) {
    Tensor t = tensor_wrap(NULL, NULL, ndim, shape);
    t.data = xmalloc(t.n * sizeof(float) + 4);
    fill_normal(t.data, t.n, 1.0f);
    if (needs_grad) t.grad = xcalloc(t.n + 1, sizeof(float));
    return t;
}

static void free_input(Tensor *t) { free(t->data); free(t->grad); }

/* ----------------------------------------------------------------------------
 * Finite-difference gradient check */

typedef Tensor *(*BuildFn)(Tape *tp, Tensor *in, const void *ctx);

static double weighted_sum(const Tensor *out, const float *R) {
    double s = 0;
    for (size_t i = 0; i < out->n; i++) s += (double)out->data[i] * R[i];
    return s;
}

/* Checks d(sum(out * R))/d(in[i]) for every input with a grad; max_elems > 0 samples that
 * many elements per input (big inputs), 0 checks all. */
static void gradcheck(const char *name, BuildFn build, const void *ctx, Tensor *in, int nin,
                      int max_elems) {
    Tape tp;
    tape_init(&tp, 1 << 16);               /* small chunks: exercises chunk chaining too */
    Tensor *out = build(&tp, in, ctx);
    float *R = xmalloc(out->n * sizeof(float));
    fill_normal(R, out->n, 1.0f);
    Tensor *Rt = tensor_const(&tp, out->ndim, out->shape, R);
    Tensor *loss = op_sum(&tp, op_mul(&tp, out, Rt));
    for (int i = 0; i < nin; i++) if (in[i].grad) memset(in[i].grad, 0, in[i].n * sizeof(float));
    tape_backward(&tp, loss);
    int checked = 0, bad = 0;
    double worst = 0;
    const float h = 1e-2f;
    for (int i = 0; i < nin; i++) {
        if (!in[i].grad) continue;
        size_t n = in[i].n, cnt = (max_elems > 0 && (size_t)max_elems < n) ? (size_t)max_elems : n;
        double *fd = xmalloc(cnt * sizeof(double));
        size_t *idx = xmalloc(cnt * sizeof(size_t));
        double fmax = 0;
        for (size_t e = 0; e < cnt; e++) {
            idx[e] = cnt == n ? e : rng_below(&rng, (uint32_t)n);
            float *p = &in[i].data[idx[e]], v = *p;
            tp.recording = 0;
            *p = v + h; tape_reset(&tp); double lp = weighted_sum(build(&tp, in, ctx), R);
            *p = v - h; tape_reset(&tp); double lm = weighted_sum(build(&tp, in, ctx), R);
            *p = v;
            fd[e] = (lp - lm) / (2.0 * h);
            if (fabs(fd[e]) > fmax) fmax = fabs(fd[e]);
        }
        double atol = 2e-3 * (fmax > 1 ? fmax : 1);
        for (size_t e = 0; e < cnt; e++) {
            double an = in[i].grad[idx[e]], d = fabs(fd[e] - an);
            double r = d / (2e-2 * fabs(fd[e]) + atol);
            if (r > worst) worst = r;
            if (r > 1 && bad++ < 3)
                printf("  %s: input %d elem %zu: analytic %.6g, finite difference %.6g\n",
                       name, i, idx[e], an, fd[e]);
            checked++;
        }
        free(fd); free(idx);
    }
    TEST(bad == 0 && checked > 0, "gradcheck %s: %d of %d elements off (worst %.2f of tolerance)",
         name, bad, checked, worst);
    free(R);
    tape_free(&tp);
}

/* ----------------------------------------------------------------------------
 * One builder per op (ctx carries the op's constant arguments) */

static Tensor *b_linear(Tape *tp, Tensor *in, const void *ctx) {
    return op_linear(tp, &in[0], &in[1], ctx ? NULL : &in[2]);
}
static Tensor *b_add(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_add(tp, &in[0], &in[1]); }
static Tensor *b_mul(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_mul(tp, &in[0], &in[1]); }
static Tensor *b_add_bcast(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_add_bcast(tp, &in[0], &in[1]); }
static Tensor *b_scale(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_scale(tp, &in[0], -1.7f); }
static Tensor *b_embedding(Tape *tp, Tensor *in, const void *ctx) {
    static const int shape[3] = {2, 3, 5};
    return op_embedding(tp, &in[0], ctx, 6, 3, shape);
}
static Tensor *b_concat(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_concat_rows(tp, &in[0], &in[1]); }
static Tensor *b_gather(Tape *tp, Tensor *in, const void *ctx) { return op_gather_rows(tp, &in[0], ctx, 7); }
static Tensor *b_slice(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_slice_rows(tp, &in[0], 2, 3); }
static Tensor *b_layernorm(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_layernorm(tp, &in[0], &in[1], &in[2], 1e-5f); }
static Tensor *b_rmsnorm(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_rmsnorm(tp, &in[0], &in[1], 1e-6f); }
static Tensor *b_gelu(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_gelu(tp, &in[0]); }
static Tensor *b_quick_gelu(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_quick_gelu(tp, &in[0]); }
static Tensor *b_silu(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_silu(tp, &in[0]); }
static Tensor *b_swiglu(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_swiglu(tp, &in[0], &in[1]); }
static Tensor *b_logsigmoid(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_logsigmoid(tp, &in[0]); }
static Tensor *b_rope(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_rope(tp, &in[0], 100.0f, 3); }
static Tensor *b_sum(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_sum(tp, &in[0]); }
static Tensor *b_mean(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_mean(tp, &in[0]); }
static Tensor *b_sum_rows(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_sum_rows(tp, &in[0]); }
static Tensor *b_sqdiff_rows(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_sqdiff_rows(tp, &in[0], &in[1]); }
static Tensor *b_mse(Tape *tp, Tensor *in, const void *ctx) { (void)ctx; return op_mse(tp, &in[0], &in[1]); }

typedef struct AttnCtx {
    int causal;
    const uint8_t *key_valid;
    float scale;
} AttnCtx;

static Tensor *b_attention(Tape *tp, Tensor *in, const void *ctx) {
    const AttnCtx *c = ctx;
    return op_attention(tp, &in[0], &in[1], &in[2], c->causal, c->key_valid, c->scale);
}

static Tensor *b_token_logprob(Tape *tp, Tensor *in, const void *ctx) { return op_token_logprob(tp, &in[0], ctx); }

typedef struct KlCtx {
    const float *ref;
    const uint8_t *mask;
} KlCtx;

static Tensor *b_kl(Tape *tp, Tensor *in, const void *ctx) {
    const KlCtx *c = ctx;
    return op_kl_ref(tp, &in[0], c->ref, c->mask);
}

/* Runs gradcheck on freshly made inputs; shapes as (ndim, d0, d1, d2, d3) rows, grad flags. */
typedef struct Spec {
    int ndim;
    int shape[4];
    int grad;
} Spec;

static void check_op(const char *name, BuildFn build, const void *ctx, const Spec *spec, int nin) {
    Tensor in[4];
    for (int i = 0; i < nin; i++) in[i] = make_input(spec[i].ndim, spec[i].shape, spec[i].grad);
    gradcheck(name, build, ctx, in, nin, 0);
    for (int i = 0; i < nin; i++) free_input(&in[i]);
}

static void test_gradients(void) {
    check_op("linear", b_linear, NULL, (Spec[]){{3, {2, 3, 5}, 1}, {2, {4, 5}, 1}, {1, {4}, 1}}, 3);
    check_op("linear no bias", b_linear, "", (Spec[]){{2, {3, 7}, 1}, {2, {6, 7}, 1}}, 2);
    check_op("linear const x", b_linear, NULL, (Spec[]){{2, {3, 4}, 0}, {2, {2, 4}, 1}, {1, {2}, 0}}, 3);
    check_op("add", b_add, NULL, (Spec[]){{2, {3, 4}, 1}, {2, {3, 4}, 1}}, 2);
    check_op("mul", b_mul, NULL, (Spec[]){{2, {3, 4}, 1}, {1, {12}, 1}}, 2);
    check_op("add_bcast", b_add_bcast, NULL, (Spec[]){{3, {3, 4, 6}, 1}, {1, {6}, 1}}, 2);
    check_op("add_bcast 2d", b_add_bcast, NULL, (Spec[]){{3, {3, 4, 6}, 1}, {2, {4, 6}, 1}}, 2);
    check_op("scale", b_scale, NULL, (Spec[]){{2, {2, 5}, 1}}, 1);
    static const int ids[6] = {3, 0, 3, 6, 1, 3};
    check_op("embedding", b_embedding, ids, (Spec[]){{2, {7, 5}, 1}}, 1);
    check_op("concat_rows", b_concat, NULL, (Spec[]){{3, {2, 2, 4}, 1}, {2, {3, 4}, 1}}, 2);
    static const int gidx[7] = {4, 0, 4, 2, 4, 1, 0};
    check_op("gather_rows", b_gather, gidx, (Spec[]){{2, {5, 3}, 1}}, 1);
    check_op("slice_rows", b_slice, NULL, (Spec[]){{3, {2, 3, 4}, 1}}, 1);
    check_op("layernorm", b_layernorm, NULL, (Spec[]){{3, {2, 3, 8}, 1}, {1, {8}, 1}, {1, {8}, 1}}, 3);
    check_op("rmsnorm", b_rmsnorm, NULL, (Spec[]){{2, {4, 8}, 1}, {1, {8}, 1}}, 2);
    check_op("gelu", b_gelu, NULL, (Spec[]){{2, {4, 6}, 1}}, 1);
    check_op("quick_gelu", b_quick_gelu, NULL, (Spec[]){{2, {4, 6}, 1}}, 1);
    check_op("silu", b_silu, NULL, (Spec[]){{2, {4, 6}, 1}}, 1);
    check_op("swiglu", b_swiglu, NULL, (Spec[]){{2, {4, 6}, 1}, {2, {4, 6}, 1}}, 2);
    check_op("logsigmoid", b_logsigmoid, NULL, (Spec[]){{2, {4, 6}, 1}}, 1);
    check_op("rope pos0=3", b_rope, NULL, (Spec[]){{4, {2, 3, 2, 8}, 1}}, 1);
    check_op("sum", b_sum, NULL, (Spec[]){{2, {3, 5}, 1}}, 1);
    check_op("mean", b_mean, NULL, (Spec[]){{2, {3, 5}, 1}}, 1);
    check_op("sum_rows", b_sum_rows, NULL, (Spec[]){{3, {2, 3, 5}, 1}}, 1);
    check_op("sqdiff_rows", b_sqdiff_rows, NULL, (Spec[]){{2, {3, 5}, 1}, {2, {3, 5}, 1}}, 2);
    check_op("sqdiff_rows const b", b_sqdiff_rows, NULL, (Spec[]){{2, {3, 5}, 1}, {2, {3, 5}, 0}}, 2);
    check_op("mse", b_mse, NULL, (Spec[]){{2, {3, 5}, 1}, {2, {3, 5}, 1}}, 2);

    /* attention: B=2, T=5, H=4, Hkv=2 (GQA), hd=4; batch 1 has its last two keys padded */
    static const uint8_t kv[10] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    static const uint8_t kv0[10] = {0, 1, 1, 1, 1, 1, 1, 1, 0, 1}; /* causal: query 0 of batch 0 sees nothing */
    Spec as[3] = {{4, {2, 5, 4, 4}, 1}, {4, {2, 5, 2, 4}, 1}, {4, {2, 5, 2, 4}, 1}};
    AttnCtx c1 = {1, kv, 0.5f}, c2 = {0, kv, 0.5f}, c3 = {1, kv0, 0.7f}, c4 = {0, NULL, 0.5f};
    check_op("attention causal+pad gqa", b_attention, &c1, as, 3);
    check_op("attention bidir+pad gqa", b_attention, &c2, as, 3);
    check_op("attention causal empty row", b_attention, &c3, as, 3);
    Spec as2[3] = {{4, {1, 4, 3, 6}, 1}, {4, {1, 4, 3, 6}, 1}, {4, {1, 4, 3, 6}, 1}};
    check_op("attention bidir mha", b_attention, &c4, as2, 3);
    Spec as3[3] = {{4, {2, 5, 4, 4}, 1}, {4, {2, 5, 2, 4}, 0}, {4, {2, 5, 2, 4}, 1}};
    check_op("attention const k", b_attention, &c1, as3, 3);
    /* KV-cache shape: 2 queries at positions 3, 4 over 5 keys */
    Spec as4[3] = {{4, {2, 2, 4, 4}, 1}, {4, {2, 5, 2, 4}, 1}, {4, {2, 5, 2, 4}, 1}};
    check_op("attention Tq < Tk causal+pad", b_attention, &c1, as4, 3);
    /* long enough rows for the vector paths (Tk = 37 keys, hd = 20) */
    Spec as5[3] = {{4, {1, 37, 2, 20}, 1}, {4, {1, 37, 1, 20}, 1}, {4, {1, 37, 1, 20}, 1}};
    AttnCtx c5 = {1, NULL, 0.3f};
    check_op("attention long rows", b_attention, &c5, as5, 3);

    static const int tg[6] = {2, -1, 0, 6, -1, 3};
    check_op("token_logprob", b_token_logprob, tg, (Spec[]){{2, {6, 7}, 1}}, 1);

    /* KL: reference log-softmax with one token then set impossible (-inf; so the row sums to
     * less than 1, which the backward handles exactly), one row masked */
    float ref[4 * 6];
    for (int r = 0; r < 4; r++) {
        double z[6], mx = -1e30, s = 0;
        for (int v = 0; v < 6; v++) { z[v] = rng_normal(&rng); if (z[v] > mx) mx = z[v]; }
        for (int v = 0; v < 6; v++) s += exp(z[v] - mx);
        for (int v = 0; v < 6; v++) ref[r * 6 + v] = (float)(z[v] - mx - log(s));
        ref[r * 6 + (r % 6)] = -INFINITY;
    }
    static const uint8_t km[4] = {1, 0, 1, 1};
    KlCtx kc = {ref, km}, kc2 = {ref, NULL};
    check_op("kl_ref masked", b_kl, &kc, (Spec[]){{2, {4, 6}, 1}}, 1);
    check_op("kl_ref", b_kl, &kc2, (Spec[]){{2, {4, 6}, 1}}, 1);
}

/* ----------------------------------------------------------------------------
 * Forward values against double references */

static double max_abs_diff(const float *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= m)) m = d;           /* NaN propagates as a failure */
    }
    return m;
}

static void test_forward_values(void) {
    Tape tp;
    tape_init(&tp, 1 << 20);
    tp.recording = 0;

    /* attention vs the textbook formula, GQA, causal, padding, an empty query */
    int B = 2, T = 6, H = 4, Hkv = 2, hd = 8;
    int qs[4] = {B, T, H, hd}, ks[4] = {B, T, Hkv, hd};
    Tensor q = make_input(4, qs, 0), k = make_input(4, ks, 0), v = make_input(4, ks, 0);
    uint8_t kv[12] = {0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    for (int causal = 0; causal < 2; causal++) {
        Tensor *o = op_attention(&tp, &q, &k, &v, causal, kv, 0.35f);
        double *ref = xcalloc(o->n, sizeof(double));
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < T; i++) {
                    int g = h / (H / Hkv);
                    double s[6], mx = -INFINITY, sum = 0;
                    for (int j = 0; j < T; j++) {
                        s[j] = -INFINITY;
                        if ((causal && j > i) || !kv[b * T + j]) continue;
                        double d = 0;
                        for (int e = 0; e < hd; e++)
                            d += (double)q.data[((b * T + i) * H + h) * hd + e] * k.data[((b * T + j) * Hkv + g) * hd + e];
                        s[j] = 0.35 * d;
                        if (s[j] > mx) mx = s[j];
                    }
                    if (mx == -INFINITY) continue;    /* all masked: zeros */
                    for (int j = 0; j < T; j++) sum += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
                    for (int j = 0; j < T; j++) {
                        if (s[j] == -INFINITY) continue;
                        double p = exp(s[j] - mx) / sum;
                        for (int e = 0; e < hd; e++)
                            ref[((b * T + i) * H + h) * hd + e] += p * v.data[((b * T + j) * Hkv + g) * hd + e];
                    }
                }
        double err = max_abs_diff(o->data, ref, o->n);
        TEST(err < 1e-5, "attention forward (causal=%d): max error %.3g", causal, err);
        /* KV cache: the last 2 query rows alone against all keys give the same rows */
        int q2s[4] = {B, 2, H, hd};
        Tensor *q2 = tensor_new(&tp, 4, q2s, 0);
        for (int b = 0; b < B; b++)
            memcpy(q2->data + (size_t)b * 2 * H * hd, q.data + ((size_t)b * T + T - 2) * H * hd, 2 * (size_t)H * hd * 4);
        Tensor *o2 = op_attention(&tp, q2, &k, &v, causal, kv, 0.35f);
        double e2 = 0;
        for (int b = 0; b < B; b++)
            for (int e = 0; e < 2 * H * hd; e++)
                e2 = fmax(e2, fabs(o2->data[(size_t)b * 2 * H * hd + e] - ref[((size_t)b * T + T - 2) * H * hd + e]));
        TEST(e2 < 1e-5, "attention with Tq < Tk (KV cache) (causal=%d): max error %.3g", causal, e2);
        free(ref);
    }
    free_input(&q); free_input(&k); free_input(&v);

    /* RoPE: HF rotate_half at position pos0 + t */
    {
        int s4[4] = {1, 3, 2, 8};
        Tensor x = make_input(4, s4, 0);
        Tensor *o = op_rope(&tp, &x, 10000.0f, 5);
        double ref[48];
        for (int t = 0; t < 3; t++)
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < 8; i++) {
                    int ii = i % 4;
                    double ang = (5 + t) * pow(10000.0, -2.0 * ii / 8);
                    const float *xr = x.data + (t * 2 + h) * 8;
                    double rot = i < 4 ? -xr[i + 4] : xr[i - 4];
                    ref[(t * 2 + h) * 8 + i] = xr[i] * cos(ang) + rot * sin(ang);
                }
        double err = max_abs_diff(o->data, ref, 48);
        TEST(err < 1e-5, "rope forward: max error %.3g", err);
        free_input(&x);
    }

    /* norms */
    {
        int s2[2] = {3, 16}, s1[1] = {16};
        Tensor x = make_input(2, s2, 0), w = make_input(1, s1, 0), b = make_input(1, s1, 0);
        Tensor *ln = op_layernorm(&tp, &x, &w, &b, 1e-5f), *rn = op_rmsnorm(&tp, &x, &w, 1e-6f);
        double rl[48], rr[48];
        for (int r = 0; r < 3; r++) {
            double m = 0, var = 0, ms = 0;
            for (int i = 0; i < 16; i++) m += x.data[r * 16 + i] / 16.0;
            for (int i = 0; i < 16; i++) {
                double d = x.data[r * 16 + i] - m;
                var += d * d / 16.0;
                ms += (double)x.data[r * 16 + i] * x.data[r * 16 + i] / 16.0;
            }
            for (int i = 0; i < 16; i++) {
                rl[r * 16 + i] = (x.data[r * 16 + i] - m) / sqrt(var + 1e-5) * w.data[i] + b.data[i];
                rr[r * 16 + i] = x.data[r * 16 + i] / sqrt(ms + 1e-6) * w.data[i];
            }
        }
        TEST(max_abs_diff(ln->data, rl, 48) < 1e-5, "layernorm forward");
        TEST(max_abs_diff(rn->data, rr, 48) < 1e-5, "rmsnorm forward");
        free_input(&x); free_input(&w); free_input(&b);
    }

    /* token log-prob and KL against double log-softmax; large logits must not overflow */
    {
        int s2[2] = {3, 50};
        Tensor x = make_input(2, s2, 0);
        for (int i = 0; i < 50; i++) x.data[i] *= 40.0f;
        int tg[3] = {7, -1, 49};
        float ref[150];
        fill_normal(ref, 150, 1.0f);
        double lp[150];
        for (int r = 0; r < 3; r++) {
            double mx = -1e300, s = 0, mr = -1e300, sr = 0;
            for (int v2 = 0; v2 < 50; v2++) { mx = fmax(mx, x.data[r * 50 + v2]); mr = fmax(mr, ref[r * 50 + v2]); }
            for (int v2 = 0; v2 < 50; v2++) { s += exp(x.data[r * 50 + v2] - mx); sr += exp(ref[r * 50 + v2] - mr); }
            for (int v2 = 0; v2 < 50; v2++) {
                lp[r * 50 + v2] = x.data[r * 50 + v2] - mx - log(s);
                ref[r * 50 + v2] = (float)(ref[r * 50 + v2] - mr - log(sr));
            }
        }
        Tensor *o = op_token_logprob(&tp, &x, tg);
        double want[3] = {lp[7], 0, lp[2 * 50 + 49]};
        TEST(max_abs_diff(o->data, want, 3) < 1e-4, "token_logprob forward");
        uint8_t mask[3] = {1, 1, 0};
        Tensor *kl = op_kl_ref(&tp, &x, ref, mask);
        double kref[3] = {0, 0, 0};
        for (int r = 0; r < 2; r++)
            for (int v2 = 0; v2 < 50; v2++) kref[r] += exp(ref[r * 50 + v2]) * (ref[r * 50 + v2] - lp[r * 50 + v2]);
        double err = 0;
        for (int r = 0; r < 3; r++) err = fmax(err, fabs(kl->data[r] - kref[r]) / (1 + fabs(kref[r])));
        TEST(err < 1e-4, "kl_ref forward: rel error %.3g", err);
        free_input(&x);
    }

    /* logsigmoid, GELU, quick_gelu, SiLU at a few points, extreme ones included */
    {
        float xs[6] = {-100.0f, -3.0f, -0.5f, 0.0f, 2.0f, 100.0f};
        int s1[1] = {6};
        Tensor x = tensor_wrap(xs, NULL, 1, s1);
        Tensor *ls = op_logsigmoid(&tp, &x), *ge = op_gelu(&tp, &x), *qg = op_quick_gelu(&tp, &x), *si = op_silu(&tp, &x);
        double rl[6], rg[6], rq[6], rs[6];
        for (int i = 0; i < 6; i++) {
            double t = xs[i];
            rl[i] = t < 0 ? t - log1p(exp(t)) : -log1p(exp(-t));
            rg[i] = 0.5 * t * (1 + erf(t / sqrt(2.0)));
            rq[i] = t / (1 + exp(-1.702 * t));
            rs[i] = t / (1 + exp(-t));
        }
        TEST(max_abs_diff(ls->data, rl, 6) < 1e-5, "logsigmoid forward");
        TEST(max_abs_diff(ge->data, rg, 6) < 1e-5, "gelu forward");
        TEST(max_abs_diff(qg->data, rq, 6) < 1e-5, "quick_gelu forward");
        TEST(max_abs_diff(si->data, rs, 6) < 1e-5, "silu forward");
    }

    /* semantics: no grads when not recording, or when no input has one; reshape is a view */
    {
        int s2[2] = {2, 3}, s1[1] = {6};
        Tensor a = make_input(2, s2, 1), c = make_input(2, s2, 0);
        Tensor *o = op_add(&tp, &a, &c);
        TEST(o->grad == NULL && tp.n_nodes == 0, "no grad and no node when not recording");
        tp.recording = 1;
        o = op_mul(&tp, &c, &c);
        TEST(o->grad == NULL && tp.n_nodes == 0, "no grad when no input has one");
        o = op_mul(&tp, &a, &c);
        Tensor *r = op_reshape(&tp, o, 1, s1);
        TEST(o->grad && tp.n_nodes == 1 && r->data == o->data && r->grad == o->grad && r->ndim == 1,
             "grad when an input has one; reshape is a view");
        free_input(&a); free_input(&c);
    }
    tape_free(&tp);
}

/* ----------------------------------------------------------------------------
 * A small decoder block: embedding -> rmsnorm -> q, k, v -> rope -> attention -> o ->
 * residual -> swiglu MLP -> lm head -> token log-prob -> mean. Used for the whole-graph
 * gradient check, arena reuse and thread determinism. */

typedef struct Mini {
    int B, T, D, H, Hkv, F, V;
    Tensor p[9];            /* emb, norm, wq, wk, wv, wo, wgate, wup, wdown */
    int *ids, *targets;
    uint8_t *valid;
} Mini;

static void mini_init(Mini *m, int B, int T, int D, int H, int Hkv, int F, int V) {
    *m = (Mini){B, T, D, H, Hkv, F, V, {{0}}, NULL, NULL, NULL};
    int hd = D / H;
    int sh[9][2] = {{V, D}, {D, 0}, {D, D}, {Hkv * hd, D}, {Hkv * hd, D}, {D, D}, {F, D}, {F, D}, {D, F}};
    for (int i = 0; i < 9; i++) {
        m->p[i] = make_input(i == 1 ? 1 : 2, sh[i], 1);
        float sd = i == 0 ? 1.0f : (float)(1.0 / sqrt((double)sh[i][1 + 0 * 0]));
        if (i == 1) { for (size_t j = 0; j < m->p[i].n; j++) m->p[i].data[j] = 1.0f + 0.1f * m->p[i].data[j]; }
        else if (i > 1) for (size_t j = 0; j < m->p[i].n; j++) m->p[i].data[j] *= sd;
    }
    m->ids = xmalloc((size_t)B * T * sizeof(int));
    m->targets = xmalloc((size_t)B * T * sizeof(int));
    m->valid = xmalloc((size_t)B * T);
    for (int i = 0; i < B * T; i++) {
        m->ids[i] = (int)rng_below(&rng, (uint32_t)V);
        m->targets[i] = i % 5 == 4 ? -1 : (int)rng_below(&rng, (uint32_t)V);
        m->valid[i] = (i % T) < T - 1 - (i / T);   /* right padding, more in later rows */
    }
}

static void mini_free(Mini *m) {
    for (int i = 0; i < 9; i++) free_input(&m->p[i]);
    free(m->ids); free(m->targets); free(m->valid);
}

static Tensor *mini_forward(Tape *tp, Tensor *p, const void *ctx) {
    const Mini *m = ctx;
    int B = m->B, T = m->T, D = m->D, H = m->H, Hkv = m->Hkv, hd = D / H;
    int s3[3] = {B, T, D}, sq[4] = {B, T, H, hd}, sk[4] = {B, T, Hkv, hd};
    Tensor *x = op_embedding(tp, &p[0], m->ids, B * T, 3, s3);
    Tensor *h = op_rmsnorm(tp, x, &p[1], 1e-6f);
    Tensor *q = op_rope(tp, op_reshape(tp, op_linear(tp, h, &p[2], NULL), 4, sq), 10000.0f, 0);
    Tensor *k = op_rope(tp, op_reshape(tp, op_linear(tp, h, &p[3], NULL), 4, sk), 10000.0f, 0);
    Tensor *v = op_reshape(tp, op_linear(tp, h, &p[4], NULL), 4, sk);
    Tensor *a = op_attention(tp, q, k, v, 1, m->valid, 1.0f / sqrtf((float)hd));
    x = op_add(tp, x, op_linear(tp, op_reshape(tp, a, 3, s3), &p[5], NULL));
    h = op_rmsnorm(tp, x, &p[1], 1e-6f);
    Tensor *f = op_swiglu(tp, op_linear(tp, h, &p[6], NULL), op_linear(tp, h, &p[7], NULL));
    x = op_add(tp, x, op_linear(tp, f, &p[8], NULL));
    Tensor *logits = op_linear(tp, x, &p[0], NULL);     /* tied lm head */
    return op_mean(tp, op_token_logprob(tp, logits, m->targets));
}

/* One training-like step; returns the loss. */
static float mini_step(Tape *tp, Mini *m) {
    for (int i = 0; i < 9; i++) memset(m->p[i].grad, 0, m->p[i].n * sizeof(float));
    Tensor *loss = mini_forward(tp, m->p, m);
    tape_backward(tp, loss);
    float l = loss->data[0];
    tape_reset(tp);
    return l;
}

static void test_composite(void) {
    Mini m;
    mini_init(&m, 2, 5, 8, 2, 1, 12, 11);
    gradcheck("composite decoder block", mini_forward, &m, m.p, 9, 12);
    mini_free(&m);
}

static void test_arena_reuse(void) {
    Mini m;
    mini_init(&m, 2, 8, 16, 4, 2, 24, 30);
    Tape tp;
    tape_init(&tp, 1 << 14);        /* small chunks: several per step */
    float l0 = mini_step(&tp, &m);
    size_t cap = arena_capacity(&tp.arena), hw = tp.arena.high_water;
    int same = 1;
    for (int s = 0; s < 50; s++) same &= mini_step(&tp, &m) == l0;
    TEST(arena_capacity(&tp.arena) == cap && tp.arena.high_water == hw,
         "arena grew over 50 steps: capacity %zu -> %zu", cap, arena_capacity(&tp.arena));
    TEST(same, "same step, same loss");
    TEST(tp.arena.used == 0 && tp.n_nodes == 0, "tape_reset empties the tape");
    /* an allocation bigger than a chunk gets its own chunk */
    void *big = arena_alloc(&tp.arena, 1 << 16);
    TEST(((uintptr_t)big & 63) == 0, "arena alignment");
    tape_free(&tp);
    mini_free(&m);
}

/* ----------------------------------------------------------------------------
 * SIMD vs reference, and thread determinism */

static void test_kernels_vs_ref(void) {
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {37, 45, 300}, {64, 64, 64}, {33, 70, 129},
                                    {13, 100, 600}, {200, 17, 40}, {20, 530, 33}};
    int ns = (int)(sizeof shapes / sizeof shapes[0]);
    for (int s = 0; s < ns; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *x = xmalloc((size_t)M * K * 4), *W = xmalloc((size_t)N * K * 4), *b = xmalloc((size_t)N * 4);
        float *dy = xmalloc((size_t)M * N * 4);
        float *o1 = xmalloc((size_t)M * N * 4), *o2 = xmalloc((size_t)M * N * 4);
        float *dx1 = xmalloc((size_t)M * K * 4), *dx2 = xmalloc((size_t)M * K * 4);
        float *dw1 = xmalloc((size_t)N * K * 4), *dw2 = xmalloc((size_t)N * K * 4);
        fill_normal(x, (size_t)M * K, 1); fill_normal(W, (size_t)N * K, 1); fill_normal(b, N, 1);
        fill_normal(dy, (size_t)M * N, 1);
        fill_normal(dx1, (size_t)M * K, 1); memcpy(dx2, dx1, (size_t)M * K * 4);
        fill_normal(dw1, (size_t)N * K, 1); memcpy(dw2, dw1, (size_t)N * K * 4);
        kern_matmul_nt(o1, x, W, b, M, N, K);
        kern_matmul_nt_ref(o2, x, W, b, M, N, K);
        kern_matmul_nn_acc(dx1, dy, W, M, N, K);
        kern_matmul_nn_acc_ref(dx2, dy, W, M, N, K);
        kern_matmul_tn_acc(dw1, dy, x, M, N, K);
        kern_matmul_tn_acc_ref(dw2, dy, x, M, N, K);
        /* tolerance relative to the absolute sum of the products (+1 for the added term) */
        int bad = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double as = 1 + fabsf(b[j]);
                for (int k = 0; k < K; k++) as += fabsf(x[(size_t)i * K + k] * W[(size_t)j * K + k]);
                bad += !(fabsf(o1[(size_t)i * N + j] - o2[(size_t)i * N + j]) <= 2e-5 * as);
            }
        for (int i = 0; i < M; i++)
            for (int k = 0; k < K; k++) {
                double as = 1 + fabsf(dx2[(size_t)i * K + k]);
                for (int j = 0; j < N; j++) as += fabsf(dy[(size_t)i * N + j] * W[(size_t)j * K + k]);
                bad += !(fabsf(dx1[(size_t)i * K + k] - dx2[(size_t)i * K + k]) <= 2e-5 * as);
            }
        for (int j = 0; j < N; j++)
            for (int k = 0; k < K; k++) {
                double as = 1 + fabsf(dw2[(size_t)j * K + k]);
                for (int i = 0; i < M; i++) as += fabsf(dy[(size_t)i * N + j] * x[(size_t)i * K + k]);
                bad += !(fabsf(dw1[(size_t)j * K + k] - dw2[(size_t)j * K + k]) <= 2e-5 * as);
            }
        TEST(bad == 0, "%s matmuls vs reference at M=%d N=%d K=%d: %d elements off", kern_simd_name(), M, N, K, bad);
        free(x); free(W); free(b); free(dy); free(o1); free(o2); free(dx1); free(dx2); free(dw1); free(dw2);
    }
    /* dot and axpy, lengths around the vector widths */
    int bad = 0;
    for (int n = 0; n < 80; n++) {
        float a[80], c[80], y1[80], y2[80];
        fill_normal(a, n, 1); fill_normal(c, n, 1); fill_normal(y1, n, 1);
        memcpy(y2, y1, sizeof y1);
        double as = 1;
        for (int i = 0; i < n; i++) as += fabsf(a[i] * c[i]);
        bad += !(fabsf(kern_dot(a, c, n) - kern_dot_ref(a, c, n)) <= 2e-6 * as);
        kern_axpy(y1, 0.37f, a, n);
        kern_axpy_ref(y2, 0.37f, a, n);
        for (int i = 0; i < n; i++) bad += !(fabsf(y1[i] - y2[i]) <= 1e-6f * (1 + fabsf(y2[i])));
    }
    TEST(bad == 0, "dot/axpy vs reference: %d off", bad);
    /* exp over its whole range: within 4 ulp-ish (4e-7 relative) of expf, 0 at -inf */
    float xs[1000], e1[1000];
    for (int i = 0; i < 1000; i++) xs[i] = -87.0f + 175.0f * (float)i / 999.0f;
    xs[0] = -INFINITY; xs[1] = -200.0f;
    kern_exp(e1, xs, 1000);
    bad = !(e1[0] == 0.0f && e1[1] == 0.0f);
    for (int i = 2; i < 1000; i++) bad += !(fabsf(e1[i] - expf(xs[i])) <= 4e-7f * expf(xs[i]));
    TEST(bad == 0, "kern_exp vs expf: %d off", bad);
}

/* A whole forward + backward on the SIMD path against the reference path. */
static void test_graph_vs_ref(void) {
    Mini m;
    mini_init(&m, 2, 24, 32, 4, 2, 40, 70);
    size_t total = 0;
    for (int i = 0; i < 9; i++) total += m.p[i].n;
    float loss[2], *grads[2];
    Tape tp;
    tape_init(&tp, 1 << 20);
    for (int r = 0; r < 2; r++) {
        kern_set_reference(r);
        loss[r] = mini_step(&tp, &m);
        grads[r] = xmalloc(total * 4);
        size_t off = 0;
        for (int i = 0; i < 9; i++) { memcpy(grads[r] + off, m.p[i].grad, m.p[i].n * 4); off += m.p[i].n; }
    }
    kern_set_reference(0);
    double gmax = 0, err = 0;
    for (size_t i = 0; i < total; i++) gmax = fmax(gmax, fabs(grads[1][i]));
    for (size_t i = 0; i < total; i++) err = fmax(err, fabs(grads[0][i] - grads[1][i]));
    TEST(fabsf(loss[0] - loss[1]) <= 1e-5f * fabsf(loss[1]) && err <= 1e-4 * gmax,
         "%s forward + backward vs reference: loss %.9g vs %.9g, grad error %.3g of max %.3g",
         kern_simd_name(), loss[0], loss[1], err, gmax);
    free(grads[0]); free(grads[1]);
    tape_free(&tp);
    mini_free(&m);
}

static void test_threads(void) {
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    /* kernels at a size that goes parallel */
    int M = 300, N = 200, K = 150;
    float *x = xmalloc((size_t)M * K * 4), *W = xmalloc((size_t)N * K * 4), *dy = xmalloc((size_t)M * N * 4);
    float *o[2], *dx[2], *dw[2];
    fill_normal(x, (size_t)M * K, 1); fill_normal(W, (size_t)N * K, 1); fill_normal(dy, (size_t)M * N, 1);
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        o[t] = xmalloc((size_t)M * N * 4);
        dx[t] = xcalloc((size_t)M * K, 4);
        dw[t] = xcalloc((size_t)N * K, 4);
        kern_matmul_nt(o[t], x, W, NULL, M, N, K);
        kern_matmul_nn_acc(dx[t], dy, W, M, N, K);
        kern_matmul_tn_acc(dw[t], dy, x, M, N, K);
    }
    TEST(memcmp(o[0], o[1], (size_t)M * N * 4) == 0 && memcmp(dx[0], dx[1], (size_t)M * K * 4) == 0 &&
         memcmp(dw[0], dw[1], (size_t)N * K * 4) == 0, "matmuls: 1 thread == 2 threads bit for bit");
    for (int t = 0; t < 2; t++) { free(o[t]); free(dx[t]); free(dw[t]); }
    free(x); free(W); free(dy);

    /* a whole forward + backward big enough for every parallel region to fork */
    Mini m;
    mini_init(&m, 4, 128, 160, 4, 2, 192, 400);    /* every op above its fork threshold */
    float loss[2], *grads[2];
    size_t total = 0;
    for (int i = 0; i < 9; i++) total += m.p[i].n;
    Tape tp;
    tape_init(&tp, 1 << 20);
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        loss[t] = mini_step(&tp, &m);
        grads[t] = xmalloc(total * 4);
        size_t off = 0;
        for (int i = 0; i < 9; i++) { memcpy(grads[t] + off, m.p[i].grad, m.p[i].n * 4); off += m.p[i].n; }
    }
    TEST(memcmp(&loss[0], &loss[1], 4) == 0 && memcmp(grads[0], grads[1], total * 4) == 0,
         "forward + backward: 1 thread == 2 threads bit for bit");
    free(grads[0]); free(grads[1]);
    tape_free(&tp);
    mini_free(&m);
    omp_set_num_threads(saved);
#else
    TEST(1, "no OpenMP: single thread");
#endif
}

/* kern_matmul_nt_packed (W packed once) == kern_matmul_nt, bit for bit: decode-sized and
 * prefill-sized rows, a narrow N (the plain call's transposed path), bias or none, odd
 * sizes (padding), K over one K block, 1 and 2 threads. */
static void test_packed_matmul(void) {
    static const int cfg[][3] = {{1, 128, 128}, {7, 352, 128}, {64, 512, 128}, {300, 200, 300}, {70, 12, 40}, {5, 33, 17}};
    int same = 1, nthr = 1;
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    nthr = 2;
#endif
    for (int c = 0; c < 6; c++) {
        int M = cfg[c][0], N = cfg[c][1], K = cfg[c][2];
        float *x = xmalloc((size_t)M * K * 4), *W = xmalloc((size_t)N * K * 4), *b = xmalloc((size_t)N * 4);
        float *o1 = xmalloc((size_t)M * N * 4), *o2 = xmalloc((size_t)M * N * 4);
        float *Wp = xmalloc((kern_packed_floats(N, K) + 1) * 4);
        fill_normal(x, (size_t)M * K, 1); fill_normal(W, (size_t)N * K, 1); fill_normal(b, (size_t)N, 1);
        kern_pack_nt(Wp, W, N, K);
        for (int t = 0; t < nthr; t++) {
#ifdef _OPENMP
            omp_set_num_threads(t + 1);
#endif
            for (int wb = 0; wb < 2; wb++) {
                kern_matmul_nt(o1, x, W, wb ? b : NULL, M, N, K);
                kern_matmul_nt_packed(o2, x, W, Wp, wb ? b : NULL, M, N, K);
                same &= memcmp(o1, o2, (size_t)M * N * 4) == 0;
            }
        }
        free(x); free(W); free(b); free(o1); free(o2); free(Wp);
    }
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
    TEST(same, "matmul with W packed once == kern_matmul_nt, bit for bit");
}

/* op_lora == op_add_scaled(y, op_linear(op_linear(x, A), B), s), bit for bit: the output
 * and every gradient (y, x, A, B), for ranks below, at and above one vector, and rows
 * enough to split between threads (every thread count the build has). */
static void test_lora_fused(void) {
    static const int cfg[][4] = {{7, 12, 10, 3}, {300, 128, 128, 16}, {130, 64, 352, 8}, {65, 40, 24, 33}};
    int nthr = 1;
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    nthr = 2;
#endif
    Tape tp;
    tape_init(&tp, 1 << 20);
    for (int c = 0; c < 4; c++) {
        int M = cfg[c][0], K = cfg[c][1], N = cfg[c][2], r = cfg[c][3];
        Tensor y = make_input(2, (int[]){M, N}, 1), x = make_input(2, (int[]){M, K}, 1);
        Tensor A = make_input(2, (int[]){r, K}, 1), B = make_input(2, (int[]){N, r}, 1);
        float *R = xmalloc((size_t)M * N * sizeof *R);
        fill_normal(R, (size_t)M * N, 1.0f);
        Tensor *ps[4] = {&y, &x, &A, &B};
        float *out[2], *g[2][4];
        int same = 1;
        for (int t = 0; t < nthr; t++) {
#ifdef _OPENMP
            omp_set_num_threads(t + 1);
#endif
            for (int way = 0; way < 2; way++) {
                for (int i = 0; i < 4; i++) memset(ps[i]->grad, 0, ps[i]->n * sizeof(float));
                Tensor *o = way ? op_lora(&tp, &y, &x, &A, &B, 0.375f)
                                : op_add_scaled(&tp, &y, op_linear(&tp, op_linear(&tp, &x, &A, NULL), &B, NULL), 0.375f);
                out[way] = xmalloc(o->n * sizeof(float));
                memcpy(out[way], o->data, o->n * sizeof(float));
                Tensor *l = op_sum(&tp, op_mul(&tp, o, tensor_const(&tp, 2, (int[]){M, N}, R)));
                tape_backward(&tp, l);
                for (int i = 0; i < 4; i++) {
                    g[way][i] = xmalloc(ps[i]->n * sizeof(float));
                    memcpy(g[way][i], ps[i]->grad, ps[i]->n * sizeof(float));
                }
                tape_reset(&tp);
            }
            same &= memcmp(out[0], out[1], (size_t)M * N * sizeof(float)) == 0;
            for (int i = 0; i < 4; i++) same &= memcmp(g[0][i], g[1][i], ps[i]->n * sizeof(float)) == 0;
            for (int w = 0; w < 2; w++) {
                free(out[w]);
                for (int i = 0; i < 4; i++) free(g[w][i]);
            }
        }
        TEST(same, "lora %dx%d -> %d, r = %d: fused == three ops, values and grads bit for bit", M, K, N, r);
        free(R);
        for (int i = 0; i < 4; i++) free_input(ps[i]);
    }
    tape_free(&tp);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
}

int main(int argc, char **argv) {
#ifdef _OPENMP
    /* libgomp reads OMP_WAIT_POLICY once, when it loads. With its default (spin first), a
     * busy shared machine makes every fork/join wait a whole scheduler round, and this test
     * gets 100x slower. Unless the caller chose a policy, run again with passive waits
     * (results do not depend on it). */
    if (argc >= 1 && !getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);      /* on failure, just go on */
    }
#else
    (void)argc; (void)argv;
#endif
    rng_seed(&rng, 20240611);
    test_gradients();
    test_forward_values();
    test_composite();
    test_arena_reuse();
    test_kernels_vs_ref();
    test_graph_vs_ref();
    test_threads();
    test_lora_fused();
    test_packed_matmul();
    return test_summary();
}
