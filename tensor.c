/* tensor.c: the engine under pulse: an arena, a tape autograd, the ops with their
 * hand-written backwards, and the SIMD + OpenMP kernels (see tensor.h for the contract).
 *
 * Design
 * - Memory. Activations, their gradients, saved values and node metadata of one step come
 *   from one Arena (bump allocation in chunks that survive arena_reset), so after the first
 *   step a training loop never calls malloc. Parameters live outside (tensor_wrap).
 * - Autograd. Each op_X computes its forward at once and, iff its output has a gradient
 *   (tape recording and some input has one), appends a Node {backward fn, out, inputs, saved
 *   values}. tape_backward seeds d(loss) = 1 and calls the nodes' backwards in reverse.
 *   Every backward ACCUMULATES (+=) into the grads of the inputs that have one, so a tensor
 *   used twice gets both contributions, and parameter grads sum over micro-batches.
 *   Ops are coarse where fusion saves memory or time: attention keeps only the log-sum-exp
 *   of each query row and recomputes the probabilities in backward; the vocabulary-wide
 *   log-softmax ops keep only the per-row log-sum-exp as well.
 * - Kernels. Each hot kernel has a plain-C reference (kern_*_ref, always compiled) and a
 *   SIMD path chosen at compile time (AVX-512, AVX2+FMA, NEON; PULSE_NO_SIMD: reference only),
 *   written once over a small vector-macro layer. The three matmuls are one packed GEMM
 *   (register-blocked MR x 2-vector microkernel, B packed in NR-column panels per K block,
 *   A packed per task); attention on the SIMD path is GEMM calls per head plus vector exp.
 * - Layout of this file: arena, tensor, tape; kernels (reference, SIMD layer, GEMM, row
 *   helpers, public entry points); the ops, each forward next to its backward; the bench.
 * - Determinism. OpenMP only ever splits OUTPUT rows (or independent output tiles) between
 *   threads, and every output element is reduced by one thread in an order fixed by the
 *   shapes alone. Hence bit-identical results for any OMP_NUM_THREADS. Reductions across
 *   rows (bias and norm-weight gradients, embedding scatter) run serially in row order.
 */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#ifdef _OPENMP
#include <omp.h>
/* OMP(parallel for ...) expands to the pragma only in OpenMP builds (no unknown-pragma
 * warnings with OMP=0). */
#define OMP_STR_(...) #__VA_ARGS__
#define OMP(...) _Pragma(OMP_STR_(omp __VA_ARGS__))
#else
#define OMP(...)
#endif

/* Work (in multiply-adds) under which a kernel stays on one thread: below this the
 * fork/join costs more than it saves (GEMM and attention use 16x this: ~10 us of work). */
#define PAR_MIN_WORK 32768
/* Elements under which an elementwise or row op stays on one thread. A fork/join on
 * threads that are still spinning from the previous region costs ~1-2 us, about what one
 * thread needs for 8K adds; below that a second thread does not pay. */
#define PAR_MIN_ELEMS 8192
/* The same for the norms (a row's statistics cost several adds per element). */
#define PAR_MIN_ROW_ELEMS 4096
/* Rows whose per-row double sums (RMSNorm statistics) run side by side: each row's sum is
 * still one chain over its elements in order (the same bits), but NORM_RB independent
 * chains hide the latency of a dependent double add. */
#define NORM_RB 8

/* ----------------------------------------------------------------------------
 * Arena */

struct ArenaChunk {
    ArenaChunk *next;
    size_t size;            /* usable bytes in data */
    size_t used;            /* bytes handed out since the last reset */
    unsigned char *data;    /* 64-byte aligned */
    void *raw;              /* what malloc returned */
};

void arena_init(Arena *a, size_t chunk_bytes) {
    memset(a, 0, sizeof *a);
    a->chunk_bytes = chunk_bytes ? chunk_bytes : ((size_t)64 << 20);
}

static ArenaChunk *chunk_new(size_t size) {
    ArenaChunk *c = xcalloc(1, sizeof *c);
    c->raw = xmalloc(size + 64);
    c->data = (unsigned char *)(((uintptr_t)c->raw + 63) & ~(uintptr_t)63);
    c->size = size;
    return c;
}

void *arena_alloc(Arena *a, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    /* Try the current chunk, then the kept ones after it (same sequence of requests
     * after a reset -> same chunks), and only then append a new one. */
    ArenaChunk *c = a->cur;
    while (c && c->size - c->used < bytes) c = c->next;
    if (!c) {
        ArenaChunk *n = chunk_new(bytes > a->chunk_bytes ? bytes : a->chunk_bytes);
        if (!a->head) a->head = n;
        else {
            ArenaChunk *last = a->head;
            while (last->next) last = last->next;
            last->next = n;
        }
        c = n;
    }
    a->cur = c;
    void *p = c->data + c->used;
    c->used += bytes;
    a->used += bytes;
    if (a->used > a->high_water) a->high_water = a->used;
    return p;
}

void *arena_calloc(Arena *a, size_t bytes) {
    void *p = arena_alloc(a, bytes);
    memset(p, 0, bytes);
    return p;
}

void arena_reset(Arena *a) {
    for (ArenaChunk *c = a->head; c; c = c->next) c->used = 0;
    a->cur = a->head;
    a->used = 0;
}

size_t arena_capacity(const Arena *a) {
    size_t s = 0;
    for (ArenaChunk *c = a->head; c; c = c->next) s += c->size;
    return s;
}

void arena_free(Arena *a) {
    ArenaChunk *c = a->head;
    while (c) {
        ArenaChunk *n = c->next;
        free(c->raw);
        free(c);
        c = n;
    }
    memset(a, 0, sizeof *a);
}

/* ----------------------------------------------------------------------------
 * Tensor */

static size_t shape_numel(int ndim, const int *shape) {
    CHECKF(ndim >= 1 && ndim <= 4, "tensor: ndim %d not in 1..4", ndim);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        CHECKF(shape[i] >= 0, "tensor: negative dim %d", shape[i]);
        n *= (size_t)shape[i];
    }
    return n;
}

Tensor tensor_wrap(float *data, float *grad, int ndim, const int *shape) {
    Tensor t;
    memset(&t, 0, sizeof t);
    t.n = shape_numel(ndim, shape);
    t.data = data;
    t.grad = grad;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

size_t tensor_rows(const Tensor *t) {
    size_t r = 1;
    for (int i = 0; i < t->ndim - 1; i++) r *= (size_t)t->shape[i];
    return r;
}

int tensor_cols(const Tensor *t) { return t->shape[t->ndim - 1]; }

/* ----------------------------------------------------------------------------
 * Tape */

typedef void (*BackwardFn)(Node *nd);

struct Node {
    BackwardFn backward;
    Tensor *out;
    Tensor *in[3];          /* inputs (NULL when unused) */
    float *saved;           /* per-op saved values in the arena (mean/rstd, lse, ...) */
    const void *aux;        /* per-op constants (ids, targets, masks), copied to the arena */
    const void *aux2;
    int i[4];               /* per-op integer arguments (shapes) */
    float f[2];             /* per-op float arguments (scale, eps) */
    int prof;               /* profile bucket (tape_profile on), else -1 */
};

/* Per-op timing buckets (tape_profile). A bucket is an op kind ("linear", "attention", ...;
 * linears with a dimension <= 32, the LoRA factors, get their own) or a mark name. */
enum { PROF_MAX = 48 };
typedef struct TapeProfile {
    char name[PROF_MAX][24];
    double fwd[PROF_MAX], bwd[PROF_MAX];    /* seconds, summed */
    int n;
    double mark;                            /* start of the current interval */
} TapeProfile;

static int prof_bucket(TapeProfile *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->name[i], name) == 0) return i;
    CHECKF(p->n < PROF_MAX, "tape_profile: more than %d buckets", PROF_MAX);
    snprintf(p->name[p->n], sizeof p->name[p->n], "%s", name);
    p->fwd[p->n] = p->bwd[p->n] = 0.0;
    return p->n++;
}

void tape_profile(Tape *tp, int on) {
    free(tp->prof);
    tp->prof = on ? xcalloc(1, sizeof *tp->prof) : NULL;
    if (on) tp->prof->mark = now_seconds();
}

void tape_profile_mark(Tape *tp, const char *name) {
    if (!tp->prof) return;
    double t = now_seconds();
    tp->prof->fwd[prof_bucket(tp->prof, name)] += t - tp->prof->mark;
    tp->prof->mark = t;
}

void tape_profile_print(const Tape *tp, int steps) {
    const TapeProfile *p = tp->prof;
    if (!p || steps <= 0) return;
    int order[PROF_MAX];
    double total = 0.0;
    for (int i = 0; i < p->n; i++) { order[i] = i; total += p->fwd[i] + p->bwd[i]; }
    for (int i = 1; i < p->n; i++)          /* insertion sort, largest first */
        for (int j = i; j > 0 && p->fwd[order[j]] + p->bwd[order[j]] > p->fwd[order[j - 1]] + p->bwd[order[j - 1]]; j--) {
            int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
        }
    printf("  %-16s %9s %9s %9s %6s\n", "op (ms/step)", "forward", "backward", "total", "share");
    for (int k = 0; k < p->n; k++) {
        int i = order[k];
        double f = 1e3 * p->fwd[i] / steps, b = 1e3 * p->bwd[i] / steps;
        printf("  %-16s %9.2f %9.2f %9.2f %5.1f%%\n", p->name[i], f, b, f + b,
               total > 0 ? 100.0 * (p->fwd[i] + p->bwd[i]) / total : 0.0);
    }
    printf("  %-16s %9s %9s %9.2f\n", "all", "", "", 1e3 * total / steps);
}

void tape_init(Tape *tp, size_t arena_chunk_bytes) {
    memset(tp, 0, sizeof *tp);
    arena_init(&tp->arena, arena_chunk_bytes);
    tp->recording = 1;
}

void tape_backward(Tape *tp, Tensor *loss) {
    CHECKF(loss->n == 1 && loss->grad, "tape_backward: loss must be a scalar with a grad");
    loss->grad[0] += 1.0f;
    if (tp->prof) tape_profile_mark(tp, "(glue)");
    for (int i = tp->n_nodes - 1; i >= 0; i--) {
        tp->nodes[i].backward(&tp->nodes[i]);
        if (tp->prof && tp->nodes[i].prof >= 0) {
            double t = now_seconds();
            tp->prof->bwd[tp->nodes[i].prof] += t - tp->prof->mark;
            tp->prof->mark = t;
        }
    }
}

void tape_reset(Tape *tp) {
    tp->n_nodes = 0;
    tp->rope_cs = NULL;
    arena_reset(&tp->arena);
}

void tape_free(Tape *tp) {
    free(tp->nodes);
    free(tp->prof);
    arena_free(&tp->arena);
    memset(tp, 0, sizeof *tp);
}

/* p[0..n) = 0, in chunks split between threads when n is large (activation grads). */
static void zero_floats(float *p, size_t n) {
    enum { ZCHUNK = 16384 };
    long nc = (long)((n + ZCHUNK - 1) / ZCHUNK);
    OMP(parallel for schedule(static) if (nc > 1))
    for (long c = 0; c < nc; c++) {
        size_t k0 = (size_t)c * ZCHUNK;
        memset(p + k0, 0, (n - k0 < ZCHUNK ? n - k0 : ZCHUNK) * sizeof(float));
    }
}

Tensor *tensor_new(Tape *tp, int ndim, const int *shape, int want_grad) {
    Tensor *t = arena_alloc(&tp->arena, sizeof *t);
    *t = tensor_wrap(NULL, NULL, ndim, shape);
    t->data = arena_alloc(&tp->arena, t->n * sizeof(float));
    if (want_grad && tp->recording) {
        t->grad = arena_alloc(&tp->arena, t->n * sizeof(float));
        zero_floats(t->grad, t->n);
    }
    return t;
}

Tensor *tensor_const(Tape *tp, int ndim, const int *shape, const float *data) {
    Tensor *t = tensor_new(tp, ndim, shape, 0);
    memcpy(t->data, data, t->n * sizeof(float));
    return t;
}

Tensor *op_reshape(Tape *tp, Tensor *x, int ndim, const int *shape) {
    Tensor *t = arena_alloc(&tp->arena, sizeof *t);
    *t = tensor_wrap(x->data, x->grad, ndim, shape);
    CHECKF(t->n == x->n, "op_reshape: %zu elements into %zu", x->n, t->n);
    return t;
}

/* Does an op with these inputs produce an output with a gradient? */
static int wants_grad(const Tape *tp, const Tensor *a, const Tensor *b, const Tensor *c) {
    return tp->recording && ((a && a->grad) || (b && b->grad) || (c && c->grad));
}

static void linear_backward(Node *nd);

/* Appends a node when out has a gradient (otherwise nothing to propagate). name: the
 * backward's name, for the profile (the macro below passes it). */
static Node *record_(Tape *tp, BackwardFn fn, const char *name, Tensor *out, Tensor *a, Tensor *b, Tensor *c) {
    int bucket = -1;
    if (tp->prof) {
        /* "linear_backward" -> "linear"; LoRA factors (a dim <= 32) apart from full linears */
        char nm[24];
        const char *end = strstr(name, "_backward");
        snprintf(nm, sizeof nm, "%.*s", end ? (int)(end - name) : (int)strlen(name), name);
        if (fn == linear_backward && (b->shape[0] <= 32 || b->shape[1] <= 32)) strcat(nm, " r");
        tape_profile_mark(tp, nm);
        bucket = prof_bucket(tp->prof, nm);
    }
    if (!out->grad) return NULL;
    if (tp->n_nodes == tp->cap_nodes) {
        /* grows to the step's high-water mark during the first step, then never again */
        tp->cap_nodes = tp->cap_nodes ? 2 * tp->cap_nodes : 256;
        tp->nodes = xrealloc(tp->nodes, (size_t)tp->cap_nodes * sizeof *tp->nodes);
    }
    Node *nd = &tp->nodes[tp->n_nodes++];
    memset(nd, 0, sizeof *nd);
    nd->backward = fn;
    nd->out = out;
    nd->in[0] = a; nd->in[1] = b; nd->in[2] = c;
    nd->prof = bucket;
    return nd;
}
#define record(tp, fn, ...) record_(tp, fn, #fn, __VA_ARGS__)

/* Output with the shape of x but last dim replaced by cols (cols < 0: same as x). */
static Tensor *new_like(Tape *tp, const Tensor *x, int cols, int grad) {
    int shape[4] = {0, 0, 0, 0};
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    if (cols >= 0) shape[x->ndim - 1] = cols;
    return tensor_new(tp, x->ndim, shape, grad);
}

static void *arena_copy(Tape *tp, const void *src, size_t bytes) {
    void *p = arena_alloc(&tp->arena, bytes);
    memcpy(p, src, bytes);
    return p;
}

/* ----------------------------------------------------------------------------
 * Reference kernels (plain C; always compiled, the SIMD paths are tested against them) */

void kern_matmul_nt_ref(float *out, const float *x, const float *W, const float *b, int M, int N, int K) {
    OMP(parallel for if ((size_t)M * N * K > PAR_MIN_WORK))
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            const float *xi = x + (size_t)i * K, *wj = W + (size_t)j * K;
            float s = 0.0f;
            for (int k = 0; k < K; k++) s += xi[k] * wj[k];
            out[(size_t)i * N + j] = b ? s + b[j] : s;
        }
}

void kern_matmul_nn_acc_ref(float *dx, const float *dy, const float *W, int M, int N, int K) {
    OMP(parallel for if ((size_t)M * N * K > PAR_MIN_WORK))
    for (int i = 0; i < M; i++) {
        float *di = dx + (size_t)i * K;
        /* dx[i, :] += sum_j dy[i, j] W[j, :], j in order */
        for (int j = 0; j < N; j++) {
            float a = dy[(size_t)i * N + j];
            const float *wj = W + (size_t)j * K;
            for (int k = 0; k < K; k++) di[k] += a * wj[k];
        }
    }
}

void kern_matmul_tn_acc_ref(float *dW, const float *dy, const float *x, int M, int N, int K) {
    OMP(parallel for if ((size_t)M * N * K > PAR_MIN_WORK))
    for (int j = 0; j < N; j++) {
        float *wj = dW + (size_t)j * K;
        /* dW[j, :] += sum_i dy[i, j] x[i, :], i in order */
        for (int i = 0; i < M; i++) {
            float a = dy[(size_t)i * N + j];
            const float *xi = x + (size_t)i * K;
            for (int k = 0; k < K; k++) wj[k] += a * xi[k];
        }
    }
}

float kern_dot_ref(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void kern_axpy_ref(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* ----------------------------------------------------------------------------
 * SIMD layer: one vector type and a few macros/inlines per ISA (load, store, set1, fma,
 * add, sum, max, exp), so the kernels below are written once. vfma(a, b, c) = a*b + c with
 * one rounding. */

#if !defined(PULSE_NO_SIMD) && defined(__AVX512F__)
#include <immintrin.h>
#define SIMD_NAME "avx512"
#define VL 16                       /* floats per vector */
#define MR 8                        /* GEMM microkernel rows (MR x 2 vectors of accumulators) */
typedef __m512 vf;
#define vload(p) _mm512_loadu_ps(p)
#define vstore(p, v) _mm512_storeu_ps(p, v)
#define vset1(x) _mm512_set1_ps(x)
#define vzero() _mm512_setzero_ps()
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vadd(a, b) _mm512_add_ps(a, b)
#define vsub(a, b) _mm512_sub_ps(a, b)
#define vmul(a, b) _mm512_mul_ps(a, b)
static inline float vsum(vf v) { return _mm512_reduce_add_ps(v); }
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline float vhmax(vf v) { return _mm512_reduce_max_ps(v); }
/* exp(x), Cephes expf range reduction + degree-6 polynomial (measured <= 1.3 ulp on
 * [-87, 88.3]); exactly 0 below -87.3 (so exp(-inf) = 0, as masks need). */
static inline vf vexp(vf x) {
    __mmask16 under = _mm512_cmp_ps_mask(x, vset1(-87.3f), _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, vset1(-87.3f)), vset1(88.3f));
    vf n = _mm512_roundscale_ps(_mm512_mul_ps(x, vset1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
    vf r = _mm512_fnmadd_ps(n, vset1(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, vset1(-2.12194440e-4f), r);
    vf p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    vf y = vfma(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, vset1(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mov_ps((__mmask16)~under, _mm512_mul_ps(y, _mm512_castsi512_ps(e)));
}
#elif !defined(PULSE_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SIMD_NAME "avx2"
#define VL 8
#define MR 6
typedef __m256 vf;
#define vload(p) _mm256_loadu_ps(p)
#define vstore(p, v) _mm256_storeu_ps(p, v)
#define vset1(x) _mm256_set1_ps(x)
#define vzero() _mm256_setzero_ps()
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vadd(a, b) _mm256_add_ps(a, b)
#define vsub(a, b) _mm256_sub_ps(a, b)
#define vmul(a, b) _mm256_mul_ps(a, b)
static inline float vsum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline float vhmax(vf v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
static inline vf vexp(vf x) {     /* as the AVX-512 version */
    vf under = _mm256_cmp_ps(x, vset1(-87.3f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, vset1(-87.3f)), vset1(88.3f));
    vf n = _mm256_round_ps(_mm256_mul_ps(x, vset1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = _mm256_fnmadd_ps(n, vset1(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, vset1(-2.12194440e-4f), r);
    vf p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    vf y = vfma(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, vset1(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}
#elif !defined(PULSE_NO_SIMD) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define SIMD_NAME "neon"
#define VL 4
#define MR 8
typedef float32x4_t vf;
#define vload(p) vld1q_f32(p)
#define vstore(p, v) vst1q_f32(p, v)
#define vset1(x) vdupq_n_f32(x)
#define vzero() vdupq_n_f32(0.0f)
#define vfma(a, b, c) vfmaq_f32(c, a, b)
#define vadd(a, b) vaddq_f32(a, b)
#define vsub(a, b) vsubq_f32(a, b)
#define vmul(a, b) vmulq_f32(a, b)
static inline float vsum(vf v) { return vaddvq_f32(v); }
static inline vf vmax(vf a, vf b) { return vmaxq_f32(a, b); }
static inline float vhmax(vf v) { return vmaxvq_f32(v); }
static inline vf vexp(vf x) {     /* as the AVX-512 version */
    uint32x4_t under = vcltq_f32(x, vset1(-87.3f));
    x = vminq_f32(vmaxq_f32(x, vset1(-87.3f)), vset1(88.3f));
    vf n = vrndnq_f32(vmulq_f32(x, vset1(1.44269504088896341f)));
    vf r = vfmsq_f32(x, n, vset1(0.693359375f));
    r = vfmsq_f32(r, n, vset1(-2.12194440e-4f));
    vf p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    vf y = vfma(p, vmulq_f32(r, r), vaddq_f32(r, vset1(1.0f)));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    y = vmulq_f32(y, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), under));
}
#else
#define SIMD_NAME "reference"
#endif

#ifdef VL
#define NR (2 * VL)                 /* GEMM microkernel columns */
#define KC 256                      /* K block: a kc x NR panel of B stays in L1 */
#define MC (8 * MR)                 /* rows of A packed at once (in L2) */
#define NC (8 * NR)                 /* columns per task */

/* ----------------------------------------------------------------------------
 * GEMM: C[m, n] += A[m, k] B[k, n] with A(i, p) = A[i*rsa + p*csa] and
 * B(p, j) = B[p*rsb + j*csb], so the three matmuls are one routine:
 *   nt:  out[M,N] = x[M,K] W[N,K]^T     A = x  (rsa K, csa 1), B = W^T (rsb 1, csb K)
 *   nn:  dx[M,K] += dy[M,N] W[N,K]      A = dy (rsa N, csa 1), B = W   (rsb K, csb 1)
 *   tn:  dW[N,K] += dy[M,N]^T x[M,K]    A = dy^T (rsa 1, csa N), B = x (rsb K, csb 1)
 * B is packed once per call into NR-column panels per K block; each task (MC rows x NC
 * columns of C) packs its rows of A into MR-row panels and runs the MR x NR microkernel.
 * Determinism: every C element is one chain of FMAs over k in order within a K block, the
 * K blocks are added in order, and the K blocking depends on k only. Which thread runs a
 * task changes nothing, so any schedule and any thread count give the same bits. */

/* C[MR, NR] (row stride ldc) = init + Ap[kc][MR] . Bp[kc][NR], where init is C itself
 * (init == NULL) or the row vector init[NR] (bias or zeros) for every row. */
static inline void micro_kernel(int kc, const float *restrict Ap, const float *restrict Bp,
                                float *restrict C, size_t ldc, const float *init) {
    vf c0[MR], c1[MR];
    if (init) {
        vf i0 = vload(init), i1 = vload(init + VL);
        for (int r = 0; r < MR; r++) { c0[r] = i0; c1[r] = i1; }
    } else {
        for (int r = 0; r < MR; r++) { c0[r] = vload(C + r * ldc); c1[r] = vload(C + r * ldc + VL); }
    }
    for (int p = 0; p < kc; p++) {
        vf b0 = vload(Bp), b1 = vload(Bp + VL);
        for (int r = 0; r < MR; r++) {
            vf a = vset1(Ap[r]);
            c0[r] = vfma(a, b0, c0[r]);
            c1[r] = vfma(a, b1, c1[r]);
        }
        Ap += MR; Bp += NR;
    }
    for (int r = 0; r < MR; r++) { vstore(C + r * ldc, c0[r]); vstore(C + r * ldc + VL, c1[r]); }
}

/* Scratch that survives calls, so a training loop does not malloc: the packed B of the
 * calling thread (grown to the largest call), and each thread's packed A block. */
static _Thread_local float *bpack;
static _Thread_local size_t bpack_cap;
static _Thread_local _Alignas(64) float apack[MC * KC];

/* K blocks of near-equal size, at most KC each: a function of k alone. */
static int k_blocks(int k) { return (k + KC - 1) / KC; }
static int k_block_start(int k, int nb, int b) { return (int)((long)k * b / nb); }

/* Packs B(k0..k0+kc, j0..j0+nc) into one panel [kc][NR], zero-padded to NR columns. */
static void pack_b(float *d, const float *B, size_t rsb, size_t csb, int k0, int kc, int j0, int nc) {
    if (csb == 1) {
        for (int p = 0; p < kc; p++) {
            const float *s = B + (size_t)(k0 + p) * rsb + j0;
            for (int c = 0; c < nc; c++) d[p * NR + c] = s[c];
            for (int c = nc; c < NR; c++) d[p * NR + c] = 0.0f;
        }
    } else {                        /* B^T stored row-major (W in nt): read along k */
        for (int c = 0; c < NR; c++) {
            if (c >= nc) { for (int p = 0; p < kc; p++) d[p * NR + c] = 0.0f; continue; }
            const float *s = B + (size_t)(j0 + c) * csb + (size_t)k0 * rsb;
            for (int p = 0; p < kc; p++) d[p * NR + c] = s[(size_t)p * rsb];
        }
    }
}

/* Packs A(i0..i0+mc, k0..k0+kc) into panels [mc/MR][kc][MR], zero-padded rows. */
static void pack_a(float *dst, const float *A, size_t rsa, size_t csa, int i0, int mc, int k0, int kc) {
    for (int r0 = 0; r0 < mc; r0 += MR) {
        int mr = mc - r0 < MR ? mc - r0 : MR;
        float *d = dst + (size_t)r0 * kc;
        if (csa == 1) {
            for (int r = 0; r < MR; r++) {
                if (r >= mr) { for (int p = 0; p < kc; p++) d[p * MR + r] = 0.0f; continue; }
                const float *s = A + (size_t)(i0 + r0 + r) * rsa + k0;
                for (int p = 0; p < kc; p++) d[p * MR + r] = s[p];
            }
        } else {                    /* A^T stored row-major: read along rows */
            for (int p = 0; p < kc; p++) {
                const float *s = A + (size_t)(k0 + p) * csa + (size_t)(i0 + r0) * rsa;
                for (int r = 0; r < mr; r++) d[p * MR + r] = s[(size_t)r * rsa];
                for (int r = mr; r < MR; r++) d[p * MR + r] = 0.0f;
            }
        }
    }
}

/* One task: C rows [i0, i0+mc), columns [j0, j0+nc) (mc <= MC, a multiple of MR; nc a
 * multiple of NR). init: padded bias/zeros [npad] for an overwriting call (used by the
 * first K block), NULL to accumulate into C. */
static void gemm_task(float *C, size_t ldc, const float *A, size_t rsa, size_t csa,
                      const float *Bp, const float *init, int m, int n, int k, int i0, int j0,
                      int mc, int nc) {
    if (m - i0 < mc) mc = m - i0;
    if (n - j0 < nc) nc = n - j0;
    int nb = k_blocks(k), npad = (n + NR - 1) / NR * NR;
    _Alignas(64) float tile[MR * NR];
    for (int b = 0; b < nb; b++) {
        int k0 = k_block_start(k, nb, b), kc = k_block_start(k, nb, b + 1) - k0;
        pack_a(apack, A, rsa, csa, i0, mc, k0, kc);
        const float *Bblk = Bp + (size_t)k0 * npad;
        for (int jj = 0; jj < nc; jj += NR) {
            const float *bpanel = Bblk + (size_t)((j0 + jj) / NR) * kc * NR;
            const float *in = b == 0 && init ? init + j0 + jj : NULL;
            int ncols = nc - jj < NR ? nc - jj : NR;
            for (int ii = 0; ii < mc; ii += MR) {
                int nrows = mc - ii < MR ? mc - ii : MR;
                float *c = C + (size_t)(i0 + ii) * ldc + j0 + jj;
                if (nrows == MR && ncols == NR) {
                    micro_kernel(kc, apack + (size_t)ii * kc, bpanel, c, ldc, in);
                } else {            /* edge: the same arithmetic through a full tile */
                    if (!in)
                        for (int r = 0; r < nrows; r++) memcpy(tile + r * NR, c + r * ldc, (size_t)ncols * sizeof(float));
                    micro_kernel(kc, apack + (size_t)ii * kc, bpanel, tile, NR, in);
                    for (int r = 0; r < nrows; r++) memcpy(c + r * ldc, tile + r * NR, (size_t)ncols * sizeof(float));
                }
            }
        }
    }
}

static void gemm(float *C, size_t ldc, const float *A, size_t rsa, size_t csa, const float *B,
                 size_t rsb, size_t csb, int m, int n, int k, int overwrite, const float *bias,
                 int allow_par);

/* A narrow C (n <= NR/2 columns, as LoRA's rank-r products x A^T, dz += dy B, dB += dy^T z)
 * would spend most of the microkernel's FMAs on zero padding. So compute the transpose,
 * C^T (+)= B^T A^T, into a scratch copy of C^T (holding the bias or zeros, or C itself to
 * accumulate), and copy it back. Every element is still one FMA chain over k from the same
 * start in the same K blocks: the same bits as the direct call. */
static _Thread_local float *ctpack;
static _Thread_local size_t ctpack_cap;

static void gemm_narrow(float *C, size_t ldc, const float *A, size_t rsa, size_t csa, const float *B,
                        size_t rsb, size_t csb, int m, int n, int k, int overwrite, const float *bias,
                        int allow_par) {
    size_t need = (size_t)m * n;
    if (need > ctpack_cap) {
        free(ctpack);
        ctpack = xmalloc(need * sizeof(float));
        ctpack_cap = need;
    }
    float *Ct = ctpack;             /* [n, m] */
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++)
            Ct[(size_t)j * m + i] = overwrite ? (bias ? bias[j] : 0.0f) : C[(size_t)i * ldc + j];
    /* A' = B^T (A'(j, p) = B(p, j)), B' = A^T (B'(p, i) = A(i, p)) */
    gemm(Ct, (size_t)m, B, csb, rsb, A, csa, rsa, n, m, k, 0, NULL, allow_par);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) C[(size_t)i * ldc + j] = Ct[(size_t)j * m + i];
}

/* C = bias + A B (overwrite) or C += A B; C rows ldc apart. allow_par = 0 when called
 * from inside a parallel task (attention): then it runs on the calling thread. */
/* B (k x n, strides rsb, csb) packed as gemm packs it: for each K block, its NR-column
 * panels [kc][NR], zero-padded; k * npad floats. */
static void pack_b_all(float *Bp, const float *B, size_t rsb, size_t csb, int n, int k) {
    int npad = (n + NR - 1) / NR * NR, nb = k_blocks(k), np = npad / NR;
    for (int b = 0; b < nb; b++) {
        int k0 = k_block_start(k, nb, b), kc = k_block_start(k, nb, b + 1) - k0;
        for (int jp = 0; jp < np; jp++)
            pack_b(Bp + (size_t)k0 * npad + (size_t)jp * kc * NR, B, rsb, csb, k0, kc, jp * NR,
                   n - jp * NR < NR ? n - jp * NR : NR);
    }
}

static void gemm_with(float *C, size_t ldc, const float *A, size_t rsa, size_t csa, const float *B,
                      size_t rsb, size_t csb, int m, int n, int k, int overwrite, const float *bias,
                      int allow_par, const float *prepacked);

static void gemm(float *C, size_t ldc, const float *A, size_t rsa, size_t csa, const float *B,
                 size_t rsb, size_t csb, int m, int n, int k, int overwrite, const float *bias,
                 int allow_par) {
    gemm_with(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k, overwrite, bias, allow_par, NULL);
}

/* gemm, with B already packed (pack_b_all) when prepacked is not NULL. */
static void gemm_with(float *C, size_t ldc, const float *A, size_t rsa, size_t csa, const float *B,
                      size_t rsb, size_t csb, int m, int n, int k, int overwrite, const float *bias,
                      int allow_par, const float *prepacked) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {                   /* empty sum */
        if (overwrite)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) C[(size_t)i * ldc + j] = bias ? bias[j] : 0.0f;
        return;
    }
    if (n <= NR / 2 && m >= 2 * NR) {
        gemm_narrow(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k, overwrite, bias, allow_par);
        return;
    }
    int npad = (n + NR - 1) / NR * NR, nb = k_blocks(k), np = npad / NR;
    size_t need = (prepacked ? 0 : (size_t)k * npad) + npad;  /* packed B, then the padded init row */
    if (need > bpack_cap) {
        free(bpack);
        bpack = xmalloc(need * sizeof(float));
        bpack_cap = need;
    }
    float *Bp = prepacked ? (float *)prepacked : bpack, *init = NULL;
    if (overwrite) {
        init = bpack + (prepacked ? 0 : (size_t)k * npad);
        for (int j = 0; j < npad; j++) init[j] = bias && j < n ? bias[j] : 0.0f;
    }
    /* Task size: MC x NC, halved (in whole microtiles) until there are a few tasks per
     * thread. Only the split changes, not any element's arithmetic: still deterministic. */
    int mc = MC, nc = NC, nth = allow_par ? kern_threads() : 1;
    int par = (double)m * n * k > 16.0 * PAR_MIN_WORK && nth > 1;
    while (par && ((m + mc - 1) / mc) * ((n + nc - 1) / nc) < 4 * nth) {
        if (mc > MR && (mc / MR >= nc / NR || nc == NR)) mc = (mc / MR + 1) / 2 * MR;
        else if (nc > NR) nc = (nc / NR + 1) / 2 * NR;
        else break;
    }
    int tm = (m + mc - 1) / mc, tn = (n + nc - 1) / nc;
    par = par && tm * tn > 1;
    if (!par) {
        if (!prepacked) pack_b_all(Bp, B, rsb, csb, n, k);
        for (int t = 0; t < tm * tn; t++)
            gemm_task(C, ldc, A, rsa, csa, Bp, init, m, n, k, (t / tn) * mc, (t % tn) * nc, mc, nc);
        return;
    }
    OMP(parallel)
    {
        /* pack B, one (K block, panel) per iteration; the loop's barrier publishes it */
        OMP(for schedule(static))
        for (int t = 0; t < (prepacked ? 0 : nb * np); t++) {
            int b = t / np, jp = t % np;
            int k0 = k_block_start(k, nb, b), kc = k_block_start(k, nb, b + 1) - k0;
            pack_b(Bp + (size_t)k0 * npad + (size_t)jp * kc * NR, B, rsb, csb, k0, kc, jp * NR,
                   n - jp * NR < NR ? n - jp * NR : NR);
        }
        OMP(for schedule(dynamic, 1))
        for (int t = 0; t < tm * tn; t++)
            gemm_task(C, ldc, A, rsa, csa, Bp, init, m, n, k, (t / tn) * mc, (t % tn) * nc, mc, nc);
    }
}

/* ----------------------------------------------------------------------------
 * gemm_small: the per-head products of attention. Its operands are a few KB (in L1), so
 * gemm's packing would cost as much as the FMAs: here A(i, p) is broadcast straight from
 * memory and B is read in place when its rows are contiguous and n is a multiple of NR
 * (V and K rows with hd = 32 or 64), else packed once (K^T, V^T). Every C element is the
 * same single FMA chain over k as in gemm (gemm's K blocks store and reload C exactly, so
 * they do not change the chain): the same bits.
 * Causal attention also skips work on terms known to be exactly zero (P = 0 above the
 * diagonal; the accumulators are never -0, so adding +-0 changes no bit). off = Tk - Tq:
 *   SKIP_KEND:  rows are queries, k runs over keys: row block i0 stops at k = off + i0 + MR;
 *   SKIP_COLS:  rows are queries, columns are keys: column panels from off + i0 + MR on
 *               are set to 0 instead of computed (scores there are masked);
 *   SKIP_KSTART: rows are keys, k runs over queries: row block j0 starts at k = j0 - off. */
enum { SKIP_NONE, SKIP_KEND, SKIP_COLS, SKIP_KSTART };

/* C[MR, NR] (row stride ldc) = (overwrite ? 0 : C) + sum_{p in [p0, p1)} A(r, p) B[p][0..NR) */
static inline void micro_kernel_direct(int p0, int p1, const float *restrict A, size_t rsa, size_t csa,
                                       const float *restrict B, size_t ldb, float *restrict C,
                                       size_t ldc, int overwrite) {
    vf c0[MR], c1[MR];
    for (int r = 0; r < MR; r++) {
        c0[r] = overwrite ? vzero() : vload(C + r * ldc);
        c1[r] = overwrite ? vzero() : vload(C + r * ldc + VL);
    }
    for (int p = p0; p < p1; p++) {
        vf b0 = vload(B + (size_t)p * ldb), b1 = vload(B + (size_t)p * ldb + VL);
        const float *ap = A + (size_t)p * csa;
        for (int r = 0; r < MR; r++) {
            vf a = vset1(ap[r * rsa]);
            c0[r] = vfma(a, b0, c0[r]);
            c1[r] = vfma(a, b1, c1[r]);
        }
    }
    for (int r = 0; r < MR; r++) { vstore(C + r * ldc, c0[r]); vstore(C + r * ldc + VL, c1[r]); }
}

static void gemm_small(float *C, size_t ldc, const float *A, size_t rsa, size_t csa, const float *B,
                       size_t rsb, size_t csb, int m, int n, int k, int overwrite, int skip, int off) {
    int npad = (n + NR - 1) / NR * NR;
    const float *Bd = B;
    size_t ldb = rsb;
    if (csb != 1 || n % NR) {       /* pack B row-major [k][npad], zero-padded */
        size_t need = (size_t)k * npad;
        if (need > bpack_cap) {
            free(bpack);
            bpack = xmalloc(need * sizeof(float));
            bpack_cap = need;
        }
        for (int j = 0; j < npad; j++)      /* along B's columns: K and V rows are contiguous */
            for (int p = 0; p < k; p++)
                bpack[(size_t)p * npad + j] = j < n ? B[(size_t)p * rsb + (size_t)j * csb] : 0.0f;
        Bd = bpack;
        ldb = (size_t)npad;
    }
    _Alignas(64) float tile[MR * NR];
    for (int i0 = 0; i0 < m; i0 += MR) {
        int nrows = m - i0 < MR ? m - i0 : MR;
        int p0 = 0, p1 = k, ncols_needed = n;
        if (skip == SKIP_KEND) p1 = off + i0 + MR < k ? off + i0 + MR : k;
        if (skip == SKIP_KSTART) p0 = i0 - off > 0 ? (i0 - off < k ? i0 - off : k) : 0;
        if (skip == SKIP_COLS) ncols_needed = off + i0 + MR < n ? off + i0 + MR : n;
        const float *Ab = A + (size_t)i0 * rsa;
        size_t ra = rsa, ca = csa;
        if (nrows < MR) {           /* edge rows: copy A's rows (zero-padded) so no read runs past m */
            size_t need = (size_t)MR * k;
            if (need > ctpack_cap) {
                free(ctpack);
                ctpack = xmalloc(need * sizeof(float));
                ctpack_cap = need;
            }
            float *arow = ctpack;
            for (int r = 0; r < MR; r++)
                for (int p = 0; p < k; p++) arow[(size_t)r * k + p] = r < nrows ? Ab[(size_t)r * rsa + (size_t)p * csa] : 0.0f;
            Ab = arow; ra = (size_t)k; ca = 1;
        }
        for (int j0 = 0; j0 < n; j0 += NR) {
            int ncols = n - j0 < NR ? n - j0 : NR;
            float *c = C + (size_t)i0 * ldc + j0;
            if (j0 >= ncols_needed) {   /* SKIP_COLS: masked scores */
                for (int r = 0; r < nrows; r++) memset(c + r * ldc, 0, (size_t)ncols * sizeof(float));
                continue;
            }
            if (nrows == MR && ncols == NR) {
                micro_kernel_direct(p0, p1, Ab, ra, ca, Bd + j0, ldb, c, ldc, overwrite);
            } else {                /* edge: the same arithmetic through a full tile */
                if (!overwrite)
                    for (int r = 0; r < nrows; r++) memcpy(tile + r * NR, c + r * ldc, (size_t)ncols * sizeof(float));
                micro_kernel_direct(p0, p1, Ab, ra, ca, Bd + j0, ldb, tile, NR, overwrite);
                for (int r = 0; r < nrows; r++) memcpy(c + r * ldc, tile + r * NR, (size_t)ncols * sizeof(float));
            }
        }
    }
}

/* gemm_thin: C[m, VL] (row stride ldc) = (overwrite ? 0 : C) + A[m, k] B[k, VL], B rows ldb
 * apart (a packed narrow operand, zero columns past the real ones): LoRA's rank-r products
 * z = x A^T and dz = ds B with r <= VL, where gemm_small's NR = 2 VL columns would spend
 * three quarters of its FMAs on padding at r = VL/2. 2 MR rows x 1 vector per block. Each
 * element is the same single FMA chain over k as in gemm and gemm_small: the same bits. */
#define MT (2 * MR)

static inline __attribute__((always_inline)) void thin_rows(int rows, int k, const float *restrict A, size_t rsa,
                                                            size_t csa, const float *restrict B, size_t ldb,
                                                            float *restrict C, size_t ldc, int overwrite) {
    vf c[MT];
    for (int r = 0; r < rows; r++) c[r] = overwrite ? vzero() : vload(C + r * ldc);
    for (int p = 0; p < k; p++) {
        vf b = vload(B + (size_t)p * ldb);
        const float *ap = A + (size_t)p * csa;
        for (int r = 0; r < rows; r++) c[r] = vfma(vset1(ap[r * rsa]), b, c[r]);
    }
    for (int r = 0; r < rows; r++) vstore(C + r * ldc, c[r]);
}

static void gemm_thin(float *C, size_t ldc, const float *A, size_t rsa, size_t csa, const float *B, size_t ldb,
                      int m, int k, int overwrite) {
    int i0 = 0;
    for (; i0 + MT <= m; i0 += MT)
        thin_rows(MT, k, A + (size_t)i0 * rsa, rsa, csa, B, ldb, C + (size_t)i0 * ldc, ldc, overwrite);
    for (; i0 < m; i0++)
        thin_rows(1, k, A + (size_t)i0 * rsa, rsa, csa, B, ldb, C + (size_t)i0 * ldc, ldc, overwrite);
}
#endif /* VL */

/* ----------------------------------------------------------------------------
 * Row helpers for the softmax-like ops (vocabulary rows, attention rows): the SIMD path
 * and the reference in one place. Sums run in a fixed order (VL lanes, then the lanes
 * added in order, then the tail). */

static int use_ref;                 /* kern_set_reference: route everything to the reference */

void kern_set_reference(int on) { use_ref = on; }

/* max_i x[i] (exact: same result on every path) */
static float row_max(const float *x, int n) {
    float m = -INFINITY;
    int i = 0;
#ifdef VL
    if (!use_ref && n >= VL) {
        vf vm = vload(x);
        for (i = VL; i + VL <= n; i += VL) vm = vmax(vm, vload(x + i));
        m = vhmax(vm);
    }
#endif
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* out[i] = exp(x[i] - shift) (out may be x); returns sum_i out[i]. */
static float row_exp(float *out, const float *x, float shift, int n) {
    float s = 0.0f;
    int i = 0;
#ifdef VL
    if (!use_ref) {
        vf vs = vzero(), sh = vset1(shift);
        for (; i + VL <= n; i += VL) {
            vf e = vexp(vsub(vload(x + i), sh));
            vstore(out + i, e);
            vs = vadd(vs, e);
        }
        s = vsum(vs);
    }
#endif
    for (; i < n; i++) { out[i] = expf(x[i] - shift); s += out[i]; }
    return s;
}

/* sum_i exp(x[i] - shift), nothing stored */
static float row_sum_exp(const float *x, float shift, int n) {
    float s = 0.0f;
    int i = 0;
#ifdef VL
    if (!use_ref) {
        vf vs = vzero(), sh = vset1(shift);
        for (; i + VL <= n; i += VL) vs = vadd(vs, vexp(vsub(vload(x + i), sh)));
        s = vsum(vs);
    }
#endif
    for (; i < n; i++) s += expf(x[i] - shift);
    return s;
}

/* y[i] += a exp(x[i] - shift) */
static void row_add_exp(float *y, float a, const float *x, float shift, int n) {
    int i = 0;
#ifdef VL
    if (!use_ref) {
        vf va = vset1(a), sh = vset1(shift);
        for (; i + VL <= n; i += VL) vstore(y + i, vfma(va, vexp(vsub(vload(x + i), sh)), vload(y + i)));
    }
#endif
    for (; i < n; i++) y[i] += a * expf(x[i] - shift);
}

/* out[i] = exp(-x[i]) (the SIMD exp where there are kernels, libm for the tail) */
static void row_exp_neg(float *out, const float *x, size_t n) {
    size_t i = 0;
#ifdef VL
    if (!use_ref) {
        vf z = vzero();
        for (; i + VL <= n; i += VL) vstore(out + i, vexp(vsub(z, vload(x + i))));
    }
#endif
    for (; i < n; i++) out[i] = expf(-x[i]);
}

/* log sum_v exp(x_v), max-shifted. */
static float row_logsumexp(const float *x, int V) {
    float mx = row_max(x, V);
    return mx + logf(row_sum_exp(x, mx, V));
}

void kern_exp(float *out, const float *x, int n) { row_exp(out, x, 0.0f, n); }

/* ----------------------------------------------------------------------------
 * Public kernels: the SIMD path when compiled in, else the reference */

#ifdef VL
void kern_matmul_nt(float *out, const float *x, const float *W, const float *b, int M, int N, int K) {
    if (use_ref) { kern_matmul_nt_ref(out, x, W, b, M, N, K); return; }
    gemm(out, (size_t)N, x, (size_t)K, 1, W, 1, (size_t)K, M, N, K, 1, b, 1);
}

/* gemm packs W (nt: rsb 1, csb K) unless it takes the narrow path or the sum is empty. */
static int nt_packs(int M, int N, int K) { return M > 0 && N > 0 && K > 0 && !(N <= NR / 2 && M >= 2 * NR); }

size_t kern_packed_floats(int N, int K) { return (size_t)K * ((N + NR - 1) / NR * NR); }

void kern_pack_nt(float *Wp, const float *W, int N, int K) {
    if (N > 0 && K > 0) pack_b_all(Wp, W, 1, (size_t)K, N, K);
}

void kern_matmul_nt_packed(float *out, const float *x, const float *W, const float *Wp, const float *b, int M, int N,
                           int K) {
    if (use_ref || !nt_packs(M, N, K)) { kern_matmul_nt(out, x, W, b, M, N, K); return; }
    gemm_with(out, (size_t)N, x, (size_t)K, 1, W, 1, (size_t)K, M, N, K, 1, b, 1, Wp);
}

void kern_matmul_nn_acc(float *dx, const float *dy, const float *W, int M, int N, int K) {
    if (use_ref) { kern_matmul_nn_acc_ref(dx, dy, W, M, N, K); return; }
    gemm(dx, (size_t)K, dy, (size_t)N, 1, W, (size_t)K, 1, M, K, N, 0, NULL, 1);
}

void kern_matmul_tn_acc(float *dW, const float *dy, const float *x, int M, int N, int K) {
    if (use_ref) { kern_matmul_tn_acc_ref(dW, dy, x, M, N, K); return; }
    gemm(dW, (size_t)K, dy, 1, (size_t)N, x, (size_t)K, 1, N, K, M, 0, NULL, 1);
}

float kern_dot(const float *a, const float *b, int n) {
    if (use_ref) return kern_dot_ref(a, b, n);
    vf s0 = vzero(), s1 = vzero();
    int i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        s0 = vfma(vload(a + i), vload(b + i), s0);
        s1 = vfma(vload(a + i + VL), vload(b + i + VL), s1);
    }
    for (; i + VL <= n; i += VL) s0 = vfma(vload(a + i), vload(b + i), s0);
    float s = vsum(s0) + vsum(s1);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void kern_axpy(float *y, float a, const float *x, int n) {
    if (use_ref) { kern_axpy_ref(y, a, x, n); return; }
    vf va = vset1(a);
    int i = 0;
    for (; i + VL <= n; i += VL) vstore(y + i, vfma(va, vload(x + i), vload(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}
#else
void kern_matmul_nt(float *out, const float *x, const float *W, const float *b, int M, int N, int K) {
    kern_matmul_nt_ref(out, x, W, b, M, N, K);
}

/* The reference path multiplies by W itself: nothing to pack. */
size_t kern_packed_floats(int N, int K) { (void)N; (void)K; return 0; }

void kern_pack_nt(float *Wp, const float *W, int N, int K) { (void)Wp; (void)W; (void)N; (void)K; }

void kern_matmul_nt_packed(float *out, const float *x, const float *W, const float *Wp, const float *b, int M, int N,
                           int K) {
    (void)Wp;
    kern_matmul_nt_ref(out, x, W, b, M, N, K);
}

void kern_matmul_nn_acc(float *dx, const float *dy, const float *W, int M, int N, int K) {
    kern_matmul_nn_acc_ref(dx, dy, W, M, N, K);
}

void kern_matmul_tn_acc(float *dW, const float *dy, const float *x, int M, int N, int K) {
    kern_matmul_tn_acc_ref(dW, dy, x, M, N, K);
}

float kern_dot(const float *a, const float *b, int n) { return kern_dot_ref(a, b, n); }

void kern_axpy(float *y, float a, const float *x, int n) { kern_axpy_ref(y, a, x, n); }
#endif

const char *kern_simd_name(void) { return SIMD_NAME; }

int kern_threads(void) {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();  /* no nested teams */
#else
    return 1;
#endif
}

/* ----------------------------------------------------------------------------
 * Column reductions: g[j] += sum_i d[i, j] over rows in order (bias, norm weight gradients).
 * Threads split the columns, one chunk of whole 16-float runs each (so a thread still runs
 * several columns' chains side by side), and each g[j] is one chain over i in order: any
 * thread count gives the same bits as the serial loop. */

static int col_chunk(int N) {
    int nth = kern_threads(), c = (N + nth - 1) / nth;
    return (c + 15) / 16 * 16;
}

static void col_sums_acc(float *g, const float *d, int M, int N) {
    int cw = col_chunk(N), nc = (N + cw - 1) / cw;
    OMP(parallel for schedule(static) if ((size_t)M * N > PAR_MIN_ELEMS && nc > 1))
    for (int c = 0; c < nc; c++) {
        int j0 = c * cw, j1 = j0 + cw < N ? j0 + cw : N;
        for (int i = 0; i < M; i++)
            for (int j = j0; j < j1; j++) g[j] += d[(size_t)i * N + j];
    }
}

/* ----------------------------------------------------------------------------
 * Linear: out[M,N] = x[M,K] W[N,K]^T + b[N] */

static void linear_backward(Node *nd) {
    Tensor *x = nd->in[0], *W = nd->in[1], *b = nd->in[2];
    int M = nd->i[0], N = nd->i[1], K = nd->i[2];
    const float *dout = nd->out->grad;
    /* out = x W^T + b  ->  dx += dout W;  dW += dout^T x;  db += sum over rows of dout */
#ifdef _OPENMP
    if (x->grad && W->grad && kern_threads() == 2 && (double)M * N * K > 16.0 * PAR_MIN_WORK) {
        /* Two threads: one matmul each (the same FLOPs), each on one thread with no task
         * split, instead of a fork/join and a split per matmul: at the model's sizes (a few
         * tenths of a ms per matmul) that is the better use of two cores. Each output is
         * still computed by one thread in the same order: the same bits. */
        OMP(parallel sections num_threads(2))
        {
            OMP(section)
            kern_matmul_nn_acc(x->grad, dout, W->data, M, N, K);
            OMP(section)
            kern_matmul_tn_acc(W->grad, dout, x->data, M, N, K);
        }
    } else
#endif
    {
        if (x->grad) kern_matmul_nn_acc(x->grad, dout, W->data, M, N, K);
        if (W->grad) kern_matmul_tn_acc(W->grad, dout, x->data, M, N, K);
    }
    if (b && b->grad) col_sums_acc(b->grad, dout, M, N);
}

Tensor *op_linear(Tape *tp, Tensor *x, Tensor *W, Tensor *b) {
    CHECKF(W->ndim == 2, "op_linear: W must be [N, K], has %d dims", W->ndim);
    int N = W->shape[0], K = W->shape[1];
    CHECKF(tensor_cols(x) == K, "op_linear: x has %d columns, W [%d, %d]", tensor_cols(x), N, K);
    CHECKF(!b || (int)b->n == N, "op_linear: bias has %zu elements, want %d", b ? b->n : 0, N);
    int M = (int)tensor_rows(x);
    Tensor *out = new_like(tp, x, N, wants_grad(tp, x, W, b));
    kern_matmul_nt(out->data, x->data, W->data, b ? b->data : NULL, M, N, K);
    Node *nd = record(tp, linear_backward, out, x, W, b);
    if (nd) { nd->i[0] = M; nd->i[1] = N; nd->i[2] = K; }
    return out;
}

/* ----------------------------------------------------------------------------
 * Elementwise add, mul, broadcast add, scale */

static void add_backward(Node *nd) {
    const float *d = nd->out->grad;
    float *ga = nd->in[0]->grad, *gb = nd->in[1]->grad;
    size_t n = nd->out->n;
    /* out = a + b. One region; both loops split [0, n) the same way (static, same bounds),
     * so op_add(x, x) still adds to each element twice on one thread, a's term first. */
    OMP(parallel if (n > PAR_MIN_ELEMS))
    {
        if (ga) {
            OMP(for schedule(static) nowait)
            for (size_t i = 0; i < n; i++) ga[i] += d[i];
        }
        if (gb) {
            OMP(for schedule(static) nowait)
            for (size_t i = 0; i < n; i++) gb[i] += d[i];
        }
    }
}

Tensor *op_add(Tape *tp, Tensor *a, Tensor *b) {
    CHECKF(a->n == b->n, "op_add: %zu vs %zu elements", a->n, b->n);
    Tensor *out = new_like(tp, a, -1, wants_grad(tp, a, b, NULL));
    OMP(parallel for if (a->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < a->n; i++) out->data[i] = a->data[i] + b->data[i];
    record(tp, add_backward, out, a, b, NULL);
    return out;
}

static void mul_backward(Node *nd) {
    Tensor *a = nd->in[0], *b = nd->in[1];
    const float *d = nd->out->grad;
    /* out = a * b  ->  da += d b,  db += d a */
    size_t n = nd->out->n;
    OMP(parallel if (n > PAR_MIN_ELEMS))
    {
        if (a->grad) {
            OMP(for schedule(static) nowait)
            for (size_t i = 0; i < n; i++) a->grad[i] += d[i] * b->data[i];
        }
        /* the same split: with a == b, a's term is added first on the same thread */
        if (b->grad) {
            OMP(for schedule(static) nowait)
            for (size_t i = 0; i < n; i++) b->grad[i] += d[i] * a->data[i];
        }
    }
}

Tensor *op_mul(Tape *tp, Tensor *a, Tensor *b) {
    CHECKF(a->n == b->n, "op_mul: %zu vs %zu elements", a->n, b->n);
    Tensor *out = new_like(tp, a, -1, wants_grad(tp, a, b, NULL));
    OMP(parallel for if (a->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < a->n; i++) out->data[i] = a->data[i] * b->data[i];
    record(tp, mul_backward, out, a, b, NULL);
    return out;
}

static void add_bcast_backward(Node *nd) {
    Tensor *a = nd->in[0], *b = nd->in[1];
    const float *d = nd->out->grad;
    size_t R = b->n, nb = a->n / R;
    /* out[blk*R + r] = a[blk*R + r] + b[r]  ->  db[r] += sum over blocks, in order */
    if (a->grad) {
        OMP(parallel for if (a->n > PAR_MIN_ELEMS))
        for (size_t i = 0; i < a->n; i++) a->grad[i] += d[i];
    }
    if (b->grad) col_sums_acc(b->grad, d, (int)nb, (int)R);
}

Tensor *op_add_bcast(Tape *tp, Tensor *a, Tensor *b) {
    CHECKF(b->n > 0 && a->n % b->n == 0, "op_add_bcast: %zu elements do not tile %zu", b->n, a->n);
    Tensor *out = new_like(tp, a, -1, wants_grad(tp, a, b, NULL));
    size_t R = b->n, nb = a->n / R;
    OMP(parallel for if (a->n > PAR_MIN_ELEMS))
    for (size_t blk = 0; blk < nb; blk++)
        for (size_t r = 0; r < R; r++) out->data[blk * R + r] = a->data[blk * R + r] + b->data[r];
    record(tp, add_bcast_backward, out, a, b, NULL);
    return out;
}

static void scale_backward(Node *nd) {
    Tensor *x = nd->in[0];
    float s = nd->f[0];
    /* out = s x */
    OMP(parallel for if (x->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < x->n; i++) x->grad[i] += s * nd->out->grad[i];
}

Tensor *op_scale(Tape *tp, Tensor *x, float s) {
    Tensor *out = new_like(tp, x, -1, wants_grad(tp, x, NULL, NULL));
    OMP(parallel for if (x->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < x->n; i++) out->data[i] = s * x->data[i];
    Node *nd = record(tp, scale_backward, out, x, NULL, NULL);
    if (nd) nd->f[0] = s;
    return out;
}

static void add_scaled_backward(Node *nd) {
    Tensor *a = nd->in[0], *b = nd->in[1];
    const float *d = nd->out->grad;
    float s = nd->f[0];
    size_t n = nd->out->n;
    /* out = a + s b  ->  da += d,  db += s d */
    OMP(parallel if (n > PAR_MIN_ELEMS))
    {
        if (a->grad) {
            OMP(for schedule(static) nowait)
            for (size_t i = 0; i < n; i++) a->grad[i] += d[i];
        }
        if (b->grad) {              /* same split as a's loop (a == b safe) */
            OMP(for schedule(static) nowait)
            for (size_t i = 0; i < n; i++) b->grad[i] += s * d[i];
        }
    }
}

Tensor *op_add_scaled(Tape *tp, Tensor *a, Tensor *b, float s) {
    CHECKF(a->n == b->n, "op_add_scaled: %zu vs %zu elements", a->n, b->n);
    Tensor *out = new_like(tp, a, -1, wants_grad(tp, a, b, NULL));
    /* (s * b) rounded, then added: the roundings of op_add(a, op_scale(b, s)) */
    OMP(parallel for if (a->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < a->n; i++) out->data[i] = a->data[i] + s * b->data[i];
    Node *nd = record(tp, add_scaled_backward, out, a, b, NULL);
    if (nd) nd->f[0] = s;
    return out;
}

/* ----------------------------------------------------------------------------
 * LoRA branch: out = y + s (x A^T) B^T, x [M, K], A [r, K], B [N, r], y [M, N].
 * The same arithmetic as op_add_scaled(y, op_linear(op_linear(x, A), B), s), one node:
 * z = x A^T and t = z B^T are each one FMA chain per element as in gemm, t is rounded, then
 * out = y + (s t) rounded; backward dy += d, ds = 0 + s d (the zeroed grad of t plus s d),
 * dz = 0 + ds B, dB += ds^T z, dx += dz A, dA += dz^T x, in that order (the order the
 * three nodes ran in). The SIMD path runs the rank-r products through gemm_small on row
 * blocks (or column blocks for the weight gradients) split between threads, with the
 * narrow operands packed once and zero-padded to rpad columns: no transposed copies of the
 * wide operands, and no [M, N] intermediate besides ds. */

typedef struct LoraShape {
    int M, K, N, r, rpad;       /* rpad: VL if r <= VL (gemm_thin), else r rounded up to NR */
    float s;
    int simd;                   /* path chosen at forward time */
    float *z;                   /* [M, rpad] (SIMD, zero columns past r) or [M, r] */
    float *dz;                  /* same layout as z */
    float *ds;                  /* [M, N] */
    float *tmp;                 /* reference path: t [M, N]; SIMD: B packed [N, rpad] */
    Tensor *B;
} LoraShape;

/* Rows per task of the row-split products (a multiple of every MR). */
#define LORA_ROWS 32

static void lora_backward(Node *nd) {
    Tensor *y = nd->in[0], *x = nd->in[1], *A = nd->in[2];
    const LoraShape *L = nd->aux;
    Tensor *B = L->B;
    int M = L->M, K = L->K, N = L->N, r = L->r;
    const float *d = nd->out->grad;
    float s = L->s, *ds = L->ds, *dz = L->dz;
    int need_dz = x->grad || A->grad, need_ds = need_dz || B->grad;
    size_t n = (size_t)M * N;
    /* out = y + s t  ->  dy += d;  dt = 0 + s d (t's grad buffer was zero) */
    OMP(parallel if (n > PAR_MIN_ELEMS))
    {
        if (y->grad) {
            OMP(for schedule(static) nowait)
            for (size_t i = 0; i < n; i++) y->grad[i] += d[i];
        }
        if (need_ds) {
            OMP(for schedule(static) nowait)
            for (size_t i = 0; i < n; i++) ds[i] = 0.0f + s * d[i];
        }
    }
    if (!need_ds) return;
#ifdef VL
    if (L->simd) {
        int rp = L->rpad, nrb = (M + LORA_ROWS - 1) / LORA_ROWS;
        int par = (double)M * r * (K + N) > 4.0 * PAR_MIN_WORK;
        (void)par;                                      /* only read by the OMP clauses */
        const float *Bp = L->tmp;                       /* B [N, rpad], zero-padded */
        /* t = z B^T  ->  dz = 0 + ds B  (rows split);  dB += ds^T z  (columns of dB^T split) */
        if (need_dz) {
            OMP(parallel for schedule(static) if (par))
            for (int bi = 0; bi < nrb; bi++) {
                int i0 = bi * LORA_ROWS, mb = M - i0 < LORA_ROWS ? M - i0 : LORA_ROWS;
                if (rp == VL) gemm_thin(dz + (size_t)i0 * rp, (size_t)rp, ds + (size_t)i0 * N, (size_t)N, 1, Bp, (size_t)rp, mb, N, 1);
                else gemm_small(dz + (size_t)i0 * rp, (size_t)rp, ds + (size_t)i0 * N, (size_t)N, 1, Bp, (size_t)rp, 1,
                                mb, rp, N, 1, SKIP_NONE, 0);
            }
        }
        int ncb = (N + NR - 1) / NR, kcb = (K + NR - 1) / NR;
        if (B->grad) {
            /* dB^T [r, N] += z^T ds, in a scratch copy of dB^T (ds's space is free after this) */
            float *dBt = L->tmp + (size_t)N * rp;
            for (int o = 0; o < N; o++)
                for (int j = 0; j < r; j++) dBt[(size_t)j * N + o] = B->grad[(size_t)o * r + j];
            OMP(parallel for schedule(static) if (par && ncb > 1))
            for (int cb = 0; cb < ncb; cb++) {
                int c0 = cb * NR, nc = N - c0 < NR ? N - c0 : NR;
                gemm_small(dBt + c0, (size_t)N, L->z, 1, (size_t)rp, ds + c0, (size_t)N, 1, r, nc, M, 0, SKIP_NONE, 0);
            }
            for (int o = 0; o < N; o++)
                for (int j = 0; j < r; j++) B->grad[(size_t)o * r + j] = dBt[(size_t)j * N + o];
        }
        /* z = x A^T  ->  dx += dz A (rows split);  dA += dz^T x (columns split) */
        if (x->grad) {
            OMP(parallel for schedule(static) if (par))
            for (int bi = 0; bi < nrb; bi++) {
                int i0 = bi * LORA_ROWS, mb = M - i0 < LORA_ROWS ? M - i0 : LORA_ROWS;
                gemm_small(x->grad + (size_t)i0 * K, (size_t)K, dz + (size_t)i0 * rp, (size_t)rp, 1, A->data,
                           (size_t)K, 1, mb, K, r, 0, SKIP_NONE, 0);
            }
        }
        if (A->grad) {
            OMP(parallel for schedule(static) if (par && kcb > 1))
            for (int cb = 0; cb < kcb; cb++) {
                int c0 = cb * NR, nc = K - c0 < NR ? K - c0 : NR;
                gemm_small(A->grad + c0, (size_t)K, dz, 1, (size_t)rp, x->data + c0, (size_t)K, 1, r, nc, M, 0,
                           SKIP_NONE, 0);
            }
        }
        return;
    }
#endif
    /* reference: the three nodes' backwards, in their order */
    if (need_dz) {
        memset(dz, 0, (size_t)M * r * sizeof(float));
        kern_matmul_nn_acc(dz, ds, B->data, M, N, r);
    }
    if (B->grad) kern_matmul_tn_acc(B->grad, ds, L->z, M, N, r);
    if (x->grad) kern_matmul_nn_acc(x->grad, dz, A->data, M, r, K);
    if (A->grad) kern_matmul_tn_acc(A->grad, dz, x->data, M, r, K);
}

Tensor *op_lora(Tape *tp, Tensor *y, Tensor *x, Tensor *A, Tensor *B, float s) {
    CHECKF(A->ndim == 2 && B->ndim == 2 && B->shape[1] == A->shape[0], "op_lora: A [r, K] and B [N, r] expected");
    int r = A->shape[0], K = A->shape[1], N = B->shape[0], M = (int)tensor_rows(x);
    CHECKF(tensor_cols(x) == K && tensor_cols(y) == N && tensor_rows(y) == (size_t)M,
           "op_lora: x [%d, %d], y [%zu, %d] vs A [%d, %d], B [%d, %d]", M, tensor_cols(x), tensor_rows(y),
           tensor_cols(y), r, K, N, r);
    int grad = wants_grad(tp, y, x, A) || wants_grad(tp, B, NULL, NULL);
    Tensor *out = new_like(tp, y, -1, grad);
    LoraShape L = {M, K, N, r, r, s, 0, NULL, NULL, NULL, NULL, B};
#ifdef VL
    L.simd = !use_ref;
    if (L.simd) L.rpad = r <= VL ? VL : (r + NR - 1) / NR * NR;
#endif
    int rp = L.rpad;
    L.z = arena_alloc(&tp->arena, (size_t)M * rp * sizeof(float));
    if (grad) {
        L.dz = arena_alloc(&tp->arena, (size_t)M * rp * sizeof(float));
        L.ds = arena_alloc(&tp->arena, (size_t)M * N * sizeof(float));
    }
    size_t n = (size_t)M * N;
#ifdef VL
    if (L.simd) {
        /* A^T [K, rpad] and B^T [r, N] packed for the forward, B [N, rpad] for dz = ds B;
         * then room for dB^T [r, N] */
        float *At = arena_alloc(&tp->arena, (size_t)K * rp * sizeof(float));
        float *Bt = arena_alloc(&tp->arena, (size_t)r * N * sizeof(float));
        L.tmp = arena_alloc(&tp->arena, ((size_t)N * rp + (size_t)r * N) * sizeof(float));
        for (int k = 0; k < K; k++)
            for (int j = 0; j < rp; j++) At[(size_t)k * rp + j] = j < r ? A->data[(size_t)j * K + k] : 0.0f;
        for (int j = 0; j < r; j++)
            for (int o = 0; o < N; o++) Bt[(size_t)j * N + o] = B->data[(size_t)o * r + j];
        for (int o = 0; o < N; o++)
            for (int j = 0; j < rp; j++) L.tmp[(size_t)o * rp + j] = j < r ? B->data[(size_t)o * r + j] : 0.0f;
        int nrb = (M + LORA_ROWS - 1) / LORA_ROWS;
        /* per row block: z = x A^T (padded columns come out +0), t = z B^T into out, then
         * out = y + s t: rows are independent, so any split gives the same bits */
        OMP(parallel for schedule(static) if ((double)M * r * (K + N) > 4.0 * PAR_MIN_WORK))
        for (int bi = 0; bi < nrb; bi++) {
            int i0 = bi * LORA_ROWS, mb = M - i0 < LORA_ROWS ? M - i0 : LORA_ROWS;
            float *zb = L.z + (size_t)i0 * rp, *ob = out->data + (size_t)i0 * N;
            const float *yb = y->data + (size_t)i0 * N;
            if (rp == VL) gemm_thin(zb, (size_t)rp, x->data + (size_t)i0 * K, (size_t)K, 1, At, (size_t)rp, mb, K, 1);
            else gemm_small(zb, (size_t)rp, x->data + (size_t)i0 * K, (size_t)K, 1, At, (size_t)rp, 1, mb, rp, K, 1,
                            SKIP_NONE, 0);
            gemm_small(ob, (size_t)N, zb, (size_t)rp, 1, Bt, (size_t)N, 1, mb, N, r, 1, SKIP_NONE, 0);
            for (size_t i = 0; i < (size_t)mb * N; i++) ob[i] = yb[i] + s * ob[i];
        }
    } else
#endif
    {
        /* reference: op_linear(x, A), op_linear(z, B), op_add_scaled */
        L.tmp = arena_alloc(&tp->arena, n * sizeof(float));
        kern_matmul_nt(L.z, x->data, A->data, NULL, M, r, K);
        kern_matmul_nt(L.tmp, L.z, B->data, NULL, M, N, r);
        for (size_t i = 0; i < n; i++) out->data[i] = y->data[i] + s * L.tmp[i];
    }
    Node *nd = record(tp, lora_backward, out, y, x, A);
    if (nd) nd->aux = arena_copy(tp, &L, sizeof L);
    return out;
}

/* ----------------------------------------------------------------------------
 * Embedding, row concat, row gather */

/* An embedding lookup is a row gather of W, viewed in the caller's shape. */
Tensor *op_embedding(Tape *tp, Tensor *W, const int *ids, int n, int out_ndim, const int *out_shape) {
    CHECKF(W->ndim == 2, "op_embedding: W must be [V, D]");
    Tensor *out = op_gather_rows(tp, W, ids, n);
    if (out_ndim == 0) return out;
    CHECKF(out_shape[out_ndim - 1] == W->shape[1], "op_embedding: out_shape must end in %d", W->shape[1]);
    return op_reshape(tp, out, out_ndim, out_shape);
}

static void concat_rows_backward(Node *nd) {
    Tensor *a = nd->in[0], *b = nd->in[1];
    const float *d = nd->out->grad;
    /* out = [a; b] */
    if (a->grad) for (size_t i = 0; i < a->n; i++) a->grad[i] += d[i];
    if (b->grad) for (size_t i = 0; i < b->n; i++) b->grad[i] += d[a->n + i];
}

Tensor *op_concat_rows(Tape *tp, Tensor *a, Tensor *b) {
    int D = tensor_cols(a);
    CHECKF(tensor_cols(b) == D, "op_concat_rows: %d vs %d columns", D, tensor_cols(b));
    int shape[2] = {(int)(tensor_rows(a) + tensor_rows(b)), D};
    Tensor *out = tensor_new(tp, 2, shape, wants_grad(tp, a, b, NULL));
    memcpy(out->data, a->data, a->n * sizeof(float));
    memcpy(out->data + a->n, b->data, b->n * sizeof(float));
    record(tp, concat_rows_backward, out, a, b, NULL);
    return out;
}

static void gather_rows_backward(Node *nd) {
    Tensor *src = nd->in[0];
    const int *idx = nd->aux;
    int m = nd->i[0], D = nd->i[1];
    /* out[i] = src[idx[i]]  ->  dsrc[idx[i]] += dout[i], serially (indices repeat) */
    for (int i = 0; i < m; i++)
        kern_axpy(src->grad + (size_t)idx[i] * D, 1.0f, nd->out->grad + (size_t)i * D, D);
}

Tensor *op_gather_rows(Tape *tp, Tensor *src, const int *idx, int m) {
    int D = tensor_cols(src), N = (int)tensor_rows(src);
    int shape[2] = {m, D};
    Tensor *out = tensor_new(tp, 2, shape, wants_grad(tp, src, NULL, NULL));
    for (int i = 0; i < m; i++) {
        CHECKF(idx[i] >= 0 && idx[i] < N, "op_gather_rows: index %d not in [0, %d)", idx[i], N);
        memcpy(out->data + (size_t)i * D, src->data + (size_t)idx[i] * D, (size_t)D * sizeof(float));
    }
    Node *nd = record(tp, gather_rows_backward, out, src, NULL, NULL);
    if (nd) {
        nd->aux = arena_copy(tp, idx, (size_t)m * sizeof(int));
        nd->i[0] = m; nd->i[1] = D;
    }
    return out;
}

static void slice_rows_backward(Node *nd) {
    Tensor *x = nd->in[0];
    size_t off = (size_t)nd->i[0] * tensor_cols(x);
    /* out = x[start : start + count] */
    for (size_t i = 0; i < nd->out->n; i++) x->grad[off + i] += nd->out->grad[i];
}

Tensor *op_slice_rows(Tape *tp, Tensor *x, int start, int count) {
    int D = tensor_cols(x), N = (int)tensor_rows(x);
    CHECKF(start >= 0 && count >= 0 && start + count <= N, "op_slice_rows: rows [%d, %d) of %d", start, start + count, N);
    int shape[2] = {count, D};
    Tensor *out = tensor_new(tp, 2, shape, wants_grad(tp, x, NULL, NULL));
    memcpy(out->data, x->data + (size_t)start * D, out->n * sizeof(float));
    Node *nd = record(tp, slice_rows_backward, out, x, NULL, NULL);
    if (nd) nd->i[0] = start;
    return out;
}

/* ----------------------------------------------------------------------------
 * LayerNorm and RMSNorm over the last dim (statistics in double; saved per row) */

static void layernorm_backward(Node *nd) {
    Tensor *x = nd->in[0], *w = nd->in[1], *b = nd->in[2];
    int R = nd->i[0], D = nd->i[1];
    const float *mean = nd->saved, *rstd = nd->saved + R, *dout = nd->out->grad;
    /* out = (x - mean) * rstd * w + b;  xhat = (x - mean) * rstd, dxhat = dout * w
     * dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (rows in parallel) */
    if (x->grad) {
        OMP(parallel for if ((size_t)R * D > PAR_MIN_ROW_ELEMS))
        for (int r = 0; r < R; r++) {
            const float *xr = x->data + (size_t)r * D, *dr = dout + (size_t)r * D;
            double m1 = 0, m2 = 0;
            for (int i = 0; i < D; i++) {
                float xhat = (xr[i] - mean[r]) * rstd[r], dxhat = dr[i] * w->data[i];
                m1 += dxhat;
                m2 += (double)dxhat * xhat;
            }
            m1 /= D; m2 /= D;
            float *gx = x->grad + (size_t)r * D;
            for (int i = 0; i < D; i++) {
                float xhat = (xr[i] - mean[r]) * rstd[r];
                gx[i] += rstd[r] * (float)(dr[i] * w->data[i] - m1 - xhat * m2);
            }
        }
    }
    /* dw += sum_r dout * xhat, db += sum_r dout: rows in order; threads split the columns */
    int cw = col_chunk(D), nc = (D + cw - 1) / cw;
    if (w->grad || (b && b->grad)) {
        OMP(parallel for schedule(static) if ((size_t)R * D > PAR_MIN_ROW_ELEMS && nc > 1))
        for (int c = 0; c < nc; c++) {
            int i0 = c * cw, i1 = i0 + cw < D ? i0 + cw : D;
            for (int r = 0; r < R; r++) {
                const float *xr = x->data + (size_t)r * D, *dr = dout + (size_t)r * D;
                if (w->grad) for (int i = i0; i < i1; i++) w->grad[i] += dr[i] * ((xr[i] - mean[r]) * rstd[r]);
                if (b && b->grad) for (int i = i0; i < i1; i++) b->grad[i] += dr[i];
            }
        }
    }
}

Tensor *op_layernorm(Tape *tp, Tensor *x, Tensor *w, Tensor *b, float eps) {
    int D = tensor_cols(x), R = (int)tensor_rows(x);
    CHECKF((int)w->n == D && (int)b->n == D, "op_layernorm: w, b must have %d elements", D);
    Tensor *out = new_like(tp, x, -1, wants_grad(tp, x, w, b));
    float *saved = arena_alloc(&tp->arena, 2 * (size_t)R * sizeof(float));
    OMP(parallel for if ((size_t)R * D > PAR_MIN_ROW_ELEMS))
    for (int r = 0; r < R; r++) {
        const float *xr = x->data + (size_t)r * D;
        float *yr = out->data + (size_t)r * D;
        double s = 0, s2 = 0;
        for (int i = 0; i < D; i++) s += xr[i];
        double m = s / D;
        for (int i = 0; i < D; i++) s2 += (xr[i] - m) * (xr[i] - m);
        float mean = (float)m, rstd = (float)(1.0 / sqrt(s2 / D + eps));
        for (int i = 0; i < D; i++) yr[i] = (xr[i] - mean) * rstd * w->data[i] + b->data[i];
        saved[r] = mean;
        saved[R + r] = rstd;
    }
    Node *nd = record(tp, layernorm_backward, out, x, w, b);
    if (nd) { nd->saved = saved; nd->i[0] = R; nd->i[1] = D; }
    return out;
}

static void rmsnorm_backward(Node *nd) {
    Tensor *x = nd->in[0], *w = nd->in[1];
    int R = nd->i[0], D = nd->i[1];
    const float *rstd = nd->saved, *dout = nd->out->grad;
    /* out = x * rstd * w;  xhat = x * rstd, dxhat = dout * w
     * dx = rstd * (dxhat - xhat * mean(dxhat * xhat))   (rows in parallel) */
    if (x->grad) {
        OMP(parallel for if ((size_t)R * D > PAR_MIN_ROW_ELEMS))
        for (int r = 0; r < R; r++) {
            const float *xr = x->data + (size_t)r * D, *dr = dout + (size_t)r * D;
            double m2 = 0;
            for (int i = 0; i < D; i++) m2 += (double)(dr[i] * w->data[i]) * (xr[i] * rstd[r]);
            m2 /= D;
            float *gx = x->grad + (size_t)r * D;
            for (int i = 0; i < D; i++)
                gx[i] += rstd[r] * (float)(dr[i] * w->data[i] - xr[i] * rstd[r] * m2);
        }
    }
    /* dw += sum_r dout * xhat: rows in order; threads split the columns */
    int cw = col_chunk(D), nc = (D + cw - 1) / cw;
    if (w->grad) {
        OMP(parallel for schedule(static) if ((size_t)R * D > PAR_MIN_ROW_ELEMS && nc > 1))
        for (int c = 0; c < nc; c++) {
            int i0 = c * cw, i1 = i0 + cw < D ? i0 + cw : D;
            for (int r = 0; r < R; r++) {
                const float *xr = x->data + (size_t)r * D, *dr = dout + (size_t)r * D;
                for (int i = i0; i < i1; i++) w->grad[i] += dr[i] * (xr[i] * rstd[r]);
            }
        }
    }
}

Tensor *op_rmsnorm(Tape *tp, Tensor *x, Tensor *w, float eps) {
    int D = tensor_cols(x), R = (int)tensor_rows(x);
    CHECKF((int)w->n == D, "op_rmsnorm: w must have %d elements", D);
    Tensor *out = new_like(tp, x, -1, wants_grad(tp, x, w, NULL));
    float *rstd = arena_alloc(&tp->arena, (size_t)R * sizeof(float));
    OMP(parallel for schedule(static) if ((size_t)R * D > PAR_MIN_ROW_ELEMS))
    for (int r0 = 0; r0 < R; r0 += NORM_RB) {
        int nr = R - r0 < NORM_RB ? R - r0 : NORM_RB;
        const float *xb = x->data + (size_t)r0 * D;
        double s2[NORM_RB] = {0};
        if (nr == NORM_RB)                  /* NORM_RB chains side by side, each over i in order */
            for (int i = 0; i < D; i++)
                for (int k = 0; k < NORM_RB; k++) s2[k] += (double)xb[(size_t)k * D + i] * xb[(size_t)k * D + i];
        else
            for (int k = 0; k < nr; k++)
                for (int i = 0; i < D; i++) s2[k] += (double)xb[(size_t)k * D + i] * xb[(size_t)k * D + i];
        for (int k = 0; k < nr; k++) {
            int r = r0 + k;
            const float *xr = xb + (size_t)k * D;
            float *yr = out->data + (size_t)r * D;
            rstd[r] = (float)(1.0 / sqrt(s2[k] / D + eps));
            /* HF order: (x * rstd) then * w */
            for (int i = 0; i < D; i++) yr[i] = w->data[i] * (xr[i] * rstd[r]);
        }
    }
    Node *nd = record(tp, rmsnorm_backward, out, x, w, NULL);
    if (nd) { nd->saved = rstd; nd->i[0] = R; nd->i[1] = D; }
    return out;
}

/* ----------------------------------------------------------------------------
 * Activations: GELU (erf), quick_gelu, SiLU, SwiGLU, log-sigmoid */

static inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

static void gelu_backward(Node *nd) {
    const float *x = nd->in[0]->data, *d = nd->out->grad;
    float *g = nd->in[0]->grad;
    /* out = 0.5 x (1 + erf(x/sqrt2))  ->  d/dx = 0.5 (1 + erf(x/sqrt2)) + x phi(x) */
    OMP(parallel for if (nd->out->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < nd->out->n; i++) {
        float cdf = 0.5f * (1.0f + erff(x[i] * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x[i] * x[i]);
        g[i] += d[i] * (cdf + x[i] * pdf);
    }
}

Tensor *op_gelu(Tape *tp, Tensor *x) {
    Tensor *out = new_like(tp, x, -1, wants_grad(tp, x, NULL, NULL));
    OMP(parallel for if (x->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < x->n; i++)
        out->data[i] = 0.5f * x->data[i] * (1.0f + erff(x->data[i] * 0.70710678118654752f));
    record(tp, gelu_backward, out, x, NULL, NULL);
    return out;
}

static void quick_gelu_backward(Node *nd) {
    const float *x = nd->in[0]->data, *d = nd->out->grad;
    float *g = nd->in[0]->grad;
    /* out = x s,  s = sigmoid(1.702 x)  ->  d/dx = s + 1.702 x s (1 - s) */
    OMP(parallel for if (nd->out->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < nd->out->n; i++) {
        float s = sigmoidf_(1.702f * x[i]);
        g[i] += d[i] * (s + 1.702f * x[i] * s * (1.0f - s));
    }
}

Tensor *op_quick_gelu(Tape *tp, Tensor *x) {
    Tensor *out = new_like(tp, x, -1, wants_grad(tp, x, NULL, NULL));
    OMP(parallel for if (x->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < x->n; i++) out->data[i] = x->data[i] * sigmoidf_(1.702f * x->data[i]);
    record(tp, quick_gelu_backward, out, x, NULL, NULL);
    return out;
}

static void silu_backward(Node *nd) {
    const float *x = nd->in[0]->data, *d = nd->out->grad;
    float *g = nd->in[0]->grad;
    /* out = x s,  s = sigmoid(x)  ->  d/dx = s (1 + x (1 - s)) */
    OMP(parallel for if (nd->out->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < nd->out->n; i++) {
        float s = sigmoidf_(x[i]);
        g[i] += d[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

Tensor *op_silu(Tape *tp, Tensor *x) {
    Tensor *out = new_like(tp, x, -1, wants_grad(tp, x, NULL, NULL));
    OMP(parallel for if (x->n > PAR_MIN_ELEMS))
    for (size_t i = 0; i < x->n; i++) out->data[i] = x->data[i] * sigmoidf_(x->data[i]);
    record(tp, silu_backward, out, x, NULL, NULL);
    return out;
}

static void swiglu_backward(Node *nd) {
    Tensor *gt = nd->in[0], *up = nd->in[1];
    const float *d = nd->out->grad, *sg = nd->saved;
    size_t n = nd->out->n;
    /* out = silu(gate) * up  ->  dgate += d up silu'(gate),  dup += d silu(gate);
     * s = sigmoid(gate) saved by the forward: no exp here, and branch-free loops vectorise */
    if (gt->grad) {
        float *g = gt->grad;
        const float *x = gt->data, *u = up->data;
        OMP(parallel for simd if (n > PAR_MIN_ELEMS))
        for (size_t i = 0; i < n; i++) g[i] += d[i] * u[i] * sg[i] * (1.0f + x[i] * (1.0f - sg[i]));
    }
    if (up->grad) {
        float *g = up->grad;
        const float *x = gt->data;
        OMP(parallel for simd if (n > PAR_MIN_ELEMS))
        for (size_t i = 0; i < n; i++) g[i] += d[i] * x[i] * sg[i];
    }
}

Tensor *op_swiglu(Tape *tp, Tensor *gate, Tensor *up) {
    CHECKF(gate->n == up->n, "op_swiglu: %zu vs %zu elements", gate->n, up->n);
    Tensor *out = new_like(tp, gate, -1, wants_grad(tp, gate, up, NULL));
    size_t n = gate->n;
    /* sigmoid(gate), saved for the backward (in the arena, which a forward-only tape resets) */
    float *sg = arena_alloc(&tp->arena, n * sizeof(float));
    const float *x = gate->data, *u = up->data;
    float *y = out->data;
    /* exp(-x) first (the vector exp: libm's expf per element was most of this op), then the
     * arithmetic in a loop that vectorises. Chunks of 4096 are multiples of every VL, so an
     * element takes the same path (vector or tail) whatever the thread count. */
    OMP(parallel for if (n > PAR_MIN_ELEMS))
    for (size_t c = 0; c < n; c += 4096) {
        size_t e = n - c < 4096 ? n : c + 4096;
        row_exp_neg(sg + c, x + c, e - c);
        for (size_t i = c; i < e; i++) {
            sg[i] = 1.0f / (1.0f + sg[i]);
            y[i] = x[i] * sg[i] * u[i];
        }
    }
    Node *nd = record(tp, swiglu_backward, out, gate, up, NULL);
    if (nd) nd->saved = sg;
    return out;
}

static void logsigmoid_backward(Node *nd) {
    const float *x = nd->in[0]->data, *d = nd->out->grad;
    float *g = nd->in[0]->grad;
    /* out = log sigmoid(x)  ->  d/dx = 1 - sigmoid(x) = sigmoid(-x) */
    for (size_t i = 0; i < nd->out->n; i++) g[i] += d[i] * sigmoidf_(-x[i]);
}

Tensor *op_logsigmoid(Tape *tp, Tensor *x) {
    Tensor *out = new_like(tp, x, -1, wants_grad(tp, x, NULL, NULL));
    /* log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)): no overflow for any x */
    for (size_t i = 0; i < x->n; i++) {
        float v = x->data[i];
        out->data[i] = fminf(v, 0.0f) - log1pf(expf(-fabsf(v)));
    }
    record(tp, logsigmoid_backward, out, x, NULL, NULL);
    return out;
}

/* ----------------------------------------------------------------------------
 * RoPE (HF rotate_half): x [B, T, H, hd], angle(t, i) = (pos0 + t) * inv_freq[i] */

/* cos/sin table [T, hd/2], shared by forward and backward. */
static const float *rope_table(Tape *tp, int T, int hd, float theta, int pos0) {
    if (tp->rope_cs && tp->rope_T == T && tp->rope_hd == hd && tp->rope_theta == theta && tp->rope_pos0 == pos0)
        return tp->rope_cs;     /* the same table: q and k of every layer (2 x 1024 libm calls each) */
    int h2 = hd / 2;
    float *cs = arena_alloc(&tp->arena, 2 * (size_t)T * h2 * sizeof(float));
    for (int i = 0; i < h2; i++) {
        /* HF: inv_freq = 1 / theta^(arange(0, hd, 2) / hd) in float32; freqs = t * inv_freq */
        float inv_freq = (float)(1.0 / pow((double)theta, (double)(2 * i) / hd));
        for (int t = 0; t < T; t++) {
            float ang = (float)(pos0 + t) * inv_freq;
            cs[(size_t)t * h2 + i] = (float)cos((double)ang);
            cs[(size_t)T * h2 + (size_t)t * h2 + i] = (float)sin((double)ang);
        }
    }
    tp->rope_cs = cs; tp->rope_T = T; tp->rope_hd = hd; tp->rope_theta = theta; tp->rope_pos0 = pos0;
    return cs;
}

/* out1 = x1 c - x2 s; out2 = x2 c + x1 s (dir = +1); the transpose rotation for dir = -1. */
static void rope_apply(float *out, const float *x, const float *cs, int B, int T, int H, int hd,
                       float dir, int accumulate) {
    int h2 = hd / 2;
    const float *sn = cs + (size_t)T * h2;
    /* (b, t) rows in parallel: each element is written by one thread */
    OMP(parallel for if ((size_t)B * T * H * hd > PAR_MIN_ELEMS))
    for (int bt = 0; bt < B * T; bt++) {
        int t = bt % T;
        const float *c = cs + (size_t)t * h2, *s = sn + (size_t)t * h2;
        for (int h = 0; h < H; h++) {
            size_t o = ((size_t)bt * H + h) * hd;
            for (int i = 0; i < h2; i++) {
                float x1 = x[o + i], x2 = x[o + h2 + i], si = dir * s[i];
                float y1 = x1 * c[i] - x2 * si, y2 = x2 * c[i] + x1 * si;
                if (accumulate) { out[o + i] += y1; out[o + h2 + i] += y2; }
                else { out[o + i] = y1; out[o + h2 + i] = y2; }
            }
        }
    }
}

static void rope_backward(Node *nd) {
    Tensor *x = nd->in[0];
    /* out = R(angle) x, a rotation per pair (i, i + hd/2)  ->  dx += R(-angle) dout */
    rope_apply(x->grad, nd->out->grad, nd->saved, x->shape[0], x->shape[1], x->shape[2],
               x->shape[3], -1.0f, 1);
}

Tensor *op_rope(Tape *tp, Tensor *x, float theta, int pos0) {
    CHECKF(x->ndim == 4 && x->shape[3] % 2 == 0, "op_rope: x must be [B, T, H, hd] with hd even");
    int B = x->shape[0], T = x->shape[1], H = x->shape[2], hd = x->shape[3];
    Tensor *out = new_like(tp, x, -1, wants_grad(tp, x, NULL, NULL));
    const float *cs = rope_table(tp, T, hd, theta, pos0);
    rope_apply(out->data, x->data, cs, B, T, H, hd, 1.0f, 0);
    Node *nd = record(tp, rope_backward, out, x, NULL, NULL);
    if (nd) nd->saved = (float *)cs;     /* read-only: shared with the other layers' nodes */
    return out;
}

/* ----------------------------------------------------------------------------
 * Fused attention: out = softmax(q k^T * scale + mask) v, per (batch, head).
 * q [B, Tq, H, hd], k and v [B, Tk, Hkv, hd], Tk >= Tq: query i sits at position
 * Tk - Tq + i (Tq == Tk in training; Tq < Tk for a KV cache). Only the log-sum-exp of each
 * query row is saved [B, H, Tq]; the backward recomputes the probabilities (as flash
 * attention does). Two paths with the same math:
 * - SIMD: per head, S = Q K^T and O = P V and the backward products are GEMM calls
 *   (serial inside one task, tasks in parallel); [Tq, Tk] matrices in per-thread scratch.
 * - reference: per query row, dot products and axpys. */

typedef struct AttnShape {
    int B, Tq, Tk, H, Hkv, hd;
    int causal;
    const uint8_t *key_valid;   /* [B*Tk] or NULL */
    float scale;
    int nth;                    /* threads the scratch was sized for */
    float *scratch;             /* nth blocks of `per` floats */
    size_t per;
    int simd;                   /* path chosen at forward time (the scratch fits it) */
} AttnShape;

static float *attn_thread_scratch(const AttnShape *a) {
#ifdef _OPENMP
    return a->scratch + (size_t)omp_get_thread_num() * a->per;
#else
    return a->scratch;
#endif
}

/* Masks and scales one row of raw scores q.k_j in place (masked -> -inf); returns its max. */
static float attn_mask_row(const AttnShape *a, float *s, int b, int i) {
    int Tk = a->Tk, nj = a->causal ? Tk - a->Tq + i + 1 : Tk;
    const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
    /* branch-free loops (they vectorise); entries past nj are never read (gemm_small may
     * have left them unset) */
    if (kv) for (int j = 0; j < nj; j++) s[j] = kv[j] ? a->scale * s[j] : -INFINITY;
    else for (int j = 0; j < nj; j++) s[j] = a->scale * s[j];
    for (int j = nj; j < Tk; j++) s[j] = -INFINITY;
    return row_max(s, Tk);
}

/* Reference: raw scores of query row qi against every key of head kbase. */
static void attn_scores_ref(const AttnShape *a, const float *qi, const float *kbase, float *s) {
    size_t ks = (size_t)a->Hkv * a->hd;
    for (int j = 0; j < a->Tk; j++) s[j] = kern_dot(qi, kbase + (size_t)j * ks, a->hd);
}

/* Forward of one (b, h): O rows and lse[Tq]. */
static void attn_forward_head(const AttnShape *a, const float *q, const float *k, const float *v,
                              float *out, float *lse, int b, int h) {
    int Tq = a->Tq, Tk = a->Tk, hd = a->hd, g = h / (a->H / a->Hkv);
    size_t qs = (size_t)a->H * hd, ks = (size_t)a->Hkv * hd;
    const float *Q = q + ((size_t)b * Tq * a->H + h) * hd, *K = k + ((size_t)b * Tk * a->Hkv + g) * hd;
    const float *Vh = v + ((size_t)b * Tk * a->Hkv + g) * hd;
    float *O = out + ((size_t)b * Tq * a->H + h) * hd, *S = attn_thread_scratch(a);
#ifdef VL
    if (a->simd) {
        int off = Tk - Tq, cz = a->causal ? SKIP_COLS : SKIP_NONE, ce = a->causal ? SKIP_KEND : SKIP_NONE;
        gemm_small(S, (size_t)Tk, Q, qs, 1, K, 1, ks, Tq, Tk, hd, 1, cz, off);     /* S = Q K^T */
        for (int i = 0; i < Tq; i++) {
            float *s = S + (size_t)i * Tk, mx = attn_mask_row(a, s, b, i);
            if (mx == -INFINITY) { lse[i] = -INFINITY; memset(s, 0, (size_t)Tk * sizeof(float)); continue; }
            float sum = row_exp(s, s, mx, Tk), inv = 1.0f / sum;           /* masked: exp(-inf) = 0 */
            for (int j = 0; j < Tk; j++) s[j] *= inv;
            lse[i] = mx + logf(sum);
        }
        gemm_small(O, qs, S, (size_t)Tk, 1, Vh, ks, 1, Tq, hd, Tk, 1, ce, off);    /* O = P V */
        return;
    }
#endif
    for (int i = 0; i < Tq; i++) {
        float *o = O + (size_t)i * qs, *s = S;
        memset(o, 0, (size_t)hd * sizeof(float));
        attn_scores_ref(a, Q + (size_t)i * qs, K, s);
        float mx = attn_mask_row(a, s, b, i);
        if (mx == -INFINITY) { lse[i] = -INFINITY; continue; }            /* no key: zeros */
        float sum = 0.0f;
        for (int j = 0; j < Tk; j++) {
            if (s[j] == -INFINITY) continue;
            float pj = expf(s[j] - mx);
            sum += pj;
            kern_axpy(o, pj, Vh + (size_t)j * ks, hd);
        }
        float inv = 1.0f / sum;
        for (int d = 0; d < hd; d++) o[d] *= inv;
        lse[i] = mx + logf(sum);
    }
}

/* Backward of one (b, h), accumulating into dq (of head h) and dk, dv (of its kv head g). */
static void attn_backward_head(const AttnShape *a, const Tensor *q, const Tensor *k, const Tensor *v,
                               const float *dout, const float *lse, int b, int h) {
    int Tq = a->Tq, Tk = a->Tk, hd = a->hd, g = h / (a->H / a->Hkv);
    size_t qs = (size_t)a->H * hd, ks = (size_t)a->Hkv * hd;
    size_t qo = ((size_t)b * Tq * a->H + h) * hd, ko = ((size_t)b * Tk * a->Hkv + g) * hd;
    const float *Q = q->data + qo, *K = k->data + ko, *Vh = v->data + ko, *dO = dout + qo;
    float *P = attn_thread_scratch(a), *dP = P + (a->simd ? (size_t)Tq * Tk : (size_t)Tk);
#ifdef VL
    if (a->simd) {
        int off = Tk - Tq, cz = a->causal ? SKIP_COLS : SKIP_NONE, ce = a->causal ? SKIP_KEND : SKIP_NONE;
        int cs = a->causal ? SKIP_KSTART : SKIP_NONE;
        gemm_small(P, (size_t)Tk, Q, qs, 1, K, 1, ks, Tq, Tk, hd, 1, cz, off);     /* S = Q K^T */
        for (int i = 0; i < Tq; i++) {
            float *p = P + (size_t)i * Tk;
            if (lse[i] == -INFINITY) { memset(p, 0, (size_t)Tk * sizeof(float)); continue; }
            attn_mask_row(a, p, b, i);
            row_exp(p, p, lse[i], Tk);                                      /* P = exp(S - lse) */
        }
        /* dP = dO V^T (0 where P is masked: the products below then add +-0) */
        gemm_small(dP, (size_t)Tk, dO, qs, 1, Vh, 1, ks, Tq, Tk, hd, 1, cz, off);
        for (int i = 0; i < Tq; i++) {
            /* dS = P (dP - sum_j P dP) * scale, in place of dP */
            float *p = P + (size_t)i * Tk, *dp = dP + (size_t)i * Tk;
            float dsum = kern_dot(p, dp, Tk);
            for (int j = 0; j < Tk; j++) dp[j] = p[j] * (dp[j] - dsum) * a->scale;
        }
        /* S = scale Q K^T -> dQ += dS K, dK += dS^T Q;  O = P V -> dV += P^T dO */
        if (q->grad) gemm_small(q->grad + qo, qs, dP, (size_t)Tk, 1, K, ks, 1, Tq, hd, Tk, 0, ce, off);
        if (k->grad) gemm_small(k->grad + ko, ks, dP, 1, (size_t)Tk, Q, qs, 1, Tk, hd, Tq, 0, cs, off);
        if (v->grad) gemm_small(v->grad + ko, ks, P, 1, (size_t)Tk, dO, qs, 1, Tk, hd, Tq, 0, cs, off);
        return;
    }
#endif
    for (int i = 0; i < Tq; i++) {
        if (lse[i] == -INFINITY) continue;          /* all keys masked: output was 0 */
        const float *qi = Q + (size_t)i * qs, *di = dO + (size_t)i * qs;
        attn_scores_ref(a, qi, K, P);
        attn_mask_row(a, P, b, i);
        /* p_j = exp(s_j - lse); dp_j = dout_i . v_j; ds_j = p_j (dp_j - sum_j p_j dp_j) */
        float dsum = 0.0f;
        for (int j = 0; j < Tk; j++) {
            P[j] = expf(P[j] - lse[i]);             /* masked: exp(-inf) = 0 */
            dP[j] = P[j] == 0.0f ? 0.0f : kern_dot(di, Vh + (size_t)j * ks, hd);
            dsum += P[j] * dP[j];
        }
        for (int j = 0; j < Tk; j++) {
            if (P[j] == 0.0f) continue;
            float ds = P[j] * (dP[j] - dsum) * a->scale;
            /* s_j = scale q_i.k_j -> dq_i += ds k_j, dk_j += ds q_i; out_i = sum p_j v_j -> dv_j += p_j dout_i */
            if (q->grad) kern_axpy(q->grad + qo + (size_t)i * qs, ds, K + (size_t)j * ks, hd);
            if (k->grad) kern_axpy(k->grad + ko + (size_t)j * ks, ds, qi, hd);
            if (v->grad) kern_axpy(v->grad + ko + (size_t)j * ks, P[j], di, hd);
        }
    }
}

static void attention_backward(Node *nd) {
    Tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2];
    const AttnShape *a = nd->aux;
    int B = a->B, H = a->H, Hkv = a->Hkv, rep = H / Hkv;
    /* One task per (b, kv head): it owns dk, dv of that head and dq of its query heads, and
     * adds the query heads in order -> independent of the thread count. */
    OMP(parallel for schedule(dynamic, 1) num_threads(a->nth) if ((double)H * a->Tq * a->Tk * a->hd * B > 16.0 * PAR_MIN_WORK))
    for (int bg = 0; bg < B * Hkv; bg++) {
        int b = bg / Hkv, g = bg % Hkv;
        for (int h = g * rep; h < (g + 1) * rep; h++)
            attn_backward_head(a, q, k, v, nd->out->grad, nd->saved + ((size_t)b * H + h) * a->Tq, b, h);
    }
}

Tensor *op_attention(Tape *tp, Tensor *q, Tensor *k, Tensor *v, int causal,
                     const uint8_t *key_valid, float scale) {
    CHECKF(q->ndim == 4 && k->ndim == 4 && v->ndim == 4, "op_attention: q, k, v must be [B, T, H, hd]");
    AttnShape as = {q->shape[0], q->shape[1], k->shape[1], q->shape[2], k->shape[2], q->shape[3],
                    causal, NULL, scale, kern_threads(), NULL, 0, 0};
    int B = as.B, Tq = as.Tq, Tk = as.Tk, H = as.H, Hkv = as.Hkv, hd = as.hd;
    for (int d = 0; d < 4; d++)
        CHECKF(k->shape[d] == v->shape[d], "op_attention: k and v shapes differ at dim %d", d);
    CHECKF(k->shape[0] == B && Tk >= Tq && k->shape[3] == hd && Hkv > 0 && H % Hkv == 0,
           "op_attention: q [%d,%d,%d,%d] vs k [%d,%d,%d,%d]", B, Tq, H, hd,
           k->shape[0], k->shape[1], k->shape[2], k->shape[3]);
    CHECKF(scale > 0.0f, "op_attention: scale %g must be positive", (double)scale);
    Tensor *out = new_like(tp, q, -1, wants_grad(tp, q, k, v));
    float *lse = arena_alloc(&tp->arena, (size_t)B * H * Tq * sizeof(float));   /* saved [B, H, Tq] */
#ifdef VL
    as.simd = !use_ref;
#endif
    as.per = as.simd ? 2 * (size_t)Tq * Tk : 2 * (size_t)Tk;
    as.scratch = arena_alloc(&tp->arena, (size_t)as.nth * as.per * sizeof(float));
    if (key_valid) as.key_valid = arena_copy(tp, key_valid, (size_t)B * Tk);
    /* one task per (b, h): each output row is written by one thread */
    OMP(parallel for schedule(dynamic, 1) num_threads(as.nth) if ((double)H * Tq * Tk * hd * B > 16.0 * PAR_MIN_WORK))
    for (int bh = 0; bh < B * H; bh++)
        attn_forward_head(&as, q->data, k->data, v->data, out->data, lse + (size_t)bh * Tq, bh / H, bh % H);
    Node *nd = record(tp, attention_backward, out, q, k, v);
    if (nd) {
        nd->saved = lse;
        nd->aux = arena_copy(tp, &as, sizeof as);
    }
    return out;
}

/* ----------------------------------------------------------------------------
 * Vocabulary-wide log-softmax ops: token log-prob and KL to a reference.
 * Both save only the per-row log-sum-exp and recompute softmax in backward. */


static void token_logprob_backward(Node *nd) {
    Tensor *x = nd->in[0];
    const int *tg = nd->aux;
    const float *lse = nd->saved, *d = nd->out->grad;
    int N = nd->i[0], V = nd->i[1];
    /* out = x[t] - lse(x)  ->  dx_v += d (onehot_v - softmax_v) */
    OMP(parallel for if ((size_t)N * V > PAR_MIN_ELEMS))
    for (int r = 0; r < N; r++) {
        if (tg[r] < 0) continue;
        const float *xr = x->data + (size_t)r * V;
        float *gr = x->grad + (size_t)r * V;
        row_add_exp(gr, -d[r], xr, lse[r], V);
        gr[tg[r]] += d[r];
    }
}

Tensor *op_token_logprob(Tape *tp, Tensor *logits, const int *targets) {
    int V = tensor_cols(logits), N = (int)tensor_rows(logits);
    int shape[1] = {N};
    Tensor *out = tensor_new(tp, 1, shape, wants_grad(tp, logits, NULL, NULL));
    float *lse = arena_alloc(&tp->arena, (size_t)N * sizeof(float));
    for (int r = 0; r < N; r++)
        CHECKF(targets[r] >= -1 && targets[r] < V, "op_token_logprob: target %d not in [-1, %d)", targets[r], V);
    OMP(parallel for if ((size_t)N * V > PAR_MIN_ELEMS))
    for (int r = 0; r < N; r++) {
        if (targets[r] < 0) { out->data[r] = 0.0f; lse[r] = 0.0f; continue; }
        const float *xr = logits->data + (size_t)r * V;
        lse[r] = row_logsumexp(xr, V);
        out->data[r] = xr[targets[r]] - lse[r];
    }
    Node *nd = record(tp, token_logprob_backward, out, logits, NULL, NULL);
    if (nd) {
        nd->saved = lse;
        nd->aux = arena_copy(tp, targets, (size_t)N * sizeof(int));
        nd->i[0] = N; nd->i[1] = V;
    }
    return out;
}

static void kl_ref_backward(Node *nd) {
    Tensor *x = nd->in[0];
    const uint8_t *mask = nd->aux;
    const float *ref = nd->aux2, *lse = nd->saved, *S = nd->saved + nd->i[0], *d = nd->out->grad;
    int N = nd->i[0], V = nd->i[1];
    /* out = sum_v pref_v (ref_v - x_v + lse)  ->  dx_v += d (S p_v - pref_v), S = sum_v pref_v
     * (S = 1 for a true log-softmax; kept exact so a truncated reference is still right) */
    OMP(parallel for if ((size_t)N * V > PAR_MIN_ELEMS))
    for (int r = 0; r < N; r++) {
        if (mask && !mask[r]) continue;
        const float *xr = x->data + (size_t)r * V, *rr = ref + (size_t)r * V;
        float *gr = x->grad + (size_t)r * V;
        row_add_exp(gr, d[r] * S[r], xr, lse[r], V);
        row_add_exp(gr, -d[r], rr, 0.0f, V);
    }
}

Tensor *op_kl_ref(Tape *tp, Tensor *logits, const float *ref_logprob, const uint8_t *mask) {
    int V = tensor_cols(logits), N = (int)tensor_rows(logits);
    int shape[1] = {N};
    Tensor *out = tensor_new(tp, 1, shape, wants_grad(tp, logits, NULL, NULL));
    /* saved: lse [N], S [N]; then a scratch row [V] per thread for p_ref */
    int nth = kern_threads();
    float *lse = arena_alloc(&tp->arena, (2 * (size_t)N + (size_t)nth * V) * sizeof(float));
    float *S = lse + N, *scratch = S + N;
    OMP(parallel for num_threads(nth) if ((size_t)N * V > PAR_MIN_ELEMS))
    for (int r = 0; r < N; r++) {
        lse[r] = 0.0f; S[r] = 0.0f;
        if (mask && !mask[r]) { out->data[r] = 0.0f; continue; }
#ifdef _OPENMP
        float *pr = scratch + (size_t)omp_get_thread_num() * V;
#else
        float *pr = scratch;
#endif
        const float *xr = logits->data + (size_t)r * V, *rr = ref_logprob + (size_t)r * V;
        lse[r] = row_logsumexp(xr, V);
        S[r] = row_exp(pr, rr, 0.0f, V);            /* p_ref, 0 where ref = -inf */
        /* KL = sum_v p_ref (ref - logp), logp = x - lse (per term: no cancellation of
         * large sums when p is close to p_ref) */
        float kl = 0.0f;
        for (int v = 0; v < V; v++)
            if (pr[v] != 0.0f) kl += pr[v] * (rr[v] - (xr[v] - lse[r]));  /* skips 0 * -inf */
        out->data[r] = kl;
    }
    Node *nd = record(tp, kl_ref_backward, out, logits, NULL, NULL);
    if (nd) {
        nd->saved = lse;
        nd->aux = mask ? arena_copy(tp, mask, (size_t)N) : NULL;
        nd->aux2 = ref_logprob;     /* caller keeps it alive until backward (tensor.h) */
        nd->i[0] = N; nd->i[1] = V;
    }
    return out;
}

/* ----------------------------------------------------------------------------
 * Reductions: sum, mean, per-row sum, per-row mean squared difference, MSE
 * (accumulated in double, in index order) */

static void sum_backward(Node *nd) {
    Tensor *x = nd->in[0];
    float g = nd->out->grad[0] * nd->f[0];
    /* out = f * sum_i x_i  (f = 1 for sum, 1/n for mean) */
    for (size_t i = 0; i < x->n; i++) x->grad[i] += g;
}

static Tensor *sum_scaled(Tape *tp, Tensor *x, float f) {
    int shape[1] = {1};
    Tensor *out = tensor_new(tp, 1, shape, wants_grad(tp, x, NULL, NULL));
    double s = 0;
    for (size_t i = 0; i < x->n; i++) s += x->data[i];
    out->data[0] = (float)(s * f);
    Node *nd = record(tp, sum_backward, out, x, NULL, NULL);
    if (nd) nd->f[0] = f;
    return out;
}

Tensor *op_sum(Tape *tp, Tensor *x) { return sum_scaled(tp, x, 1.0f); }

Tensor *op_mean(Tape *tp, Tensor *x) {
    CHECKF(x->n > 0, "op_mean: empty tensor");
    return sum_scaled(tp, x, (float)(1.0 / (double)x->n));
}

static void sum_rows_backward(Node *nd) {
    Tensor *x = nd->in[0];
    int C = tensor_cols(x);
    /* out[r] = sum_c x[r, c] */
    for (size_t r = 0; r < nd->out->n; r++)
        for (int c = 0; c < C; c++) x->grad[r * C + c] += nd->out->grad[r];
}

Tensor *op_sum_rows(Tape *tp, Tensor *x) {
    int C = tensor_cols(x);
    int shape[4] = {1, 0, 0, 0}, nd_out = x->ndim > 1 ? x->ndim - 1 : 1;
    for (int i = 0; i < x->ndim - 1; i++) shape[i] = x->shape[i];
    Tensor *out = tensor_new(tp, nd_out, shape, wants_grad(tp, x, NULL, NULL));
    for (size_t r = 0; r < out->n; r++) {
        double s = 0;
        for (int c = 0; c < C; c++) s += x->data[r * C + c];
        out->data[r] = (float)s;
    }
    record(tp, sum_rows_backward, out, x, NULL, NULL);
    return out;
}

static void sqdiff_rows_backward(Node *nd) {
    Tensor *a = nd->in[0], *b = nd->in[1];
    int D = tensor_cols(a);
    /* out[r] = mean_d (a - b)^2  ->  da += d 2 (a - b) / D,  db -= the same */
    for (size_t r = 0; r < nd->out->n; r++) {
        float g = nd->out->grad[r] * 2.0f / (float)D;
        for (int c = 0; c < D; c++) {
            size_t i = r * D + c;
            float t = g * (a->data[i] - b->data[i]);
            if (a->grad) a->grad[i] += t;
            if (b->grad) b->grad[i] -= t;
        }
    }
}

Tensor *op_sqdiff_rows(Tape *tp, Tensor *a, Tensor *b) {
    CHECKF(a->n == b->n && tensor_cols(a) == tensor_cols(b), "op_sqdiff_rows: shapes differ");
    int D = tensor_cols(a);
    int shape[4] = {1, 0, 0, 0}, nd_out = a->ndim > 1 ? a->ndim - 1 : 1;
    for (int i = 0; i < a->ndim - 1; i++) shape[i] = a->shape[i];
    Tensor *out = tensor_new(tp, nd_out, shape, wants_grad(tp, a, b, NULL));
    for (size_t r = 0; r < out->n; r++) {
        double s = 0;
        for (int c = 0; c < D; c++) {
            double t = (double)a->data[r * D + c] - b->data[r * D + c];
            s += t * t;
        }
        out->data[r] = (float)(s / D);
    }
    record(tp, sqdiff_rows_backward, out, a, b, NULL);
    return out;
}

static void mse_backward(Node *nd) {
    Tensor *a = nd->in[0], *b = nd->in[1];
    float g = nd->out->grad[0] * 2.0f / (float)a->n;
    /* out = mean (a - b)^2 */
    for (size_t i = 0; i < a->n; i++) {
        float t = g * (a->data[i] - b->data[i]);
        if (a->grad) a->grad[i] += t;
        if (b->grad) b->grad[i] -= t;
    }
}

Tensor *op_mse(Tape *tp, Tensor *a, Tensor *b) {
    CHECKF(a->n == b->n && a->n > 0, "op_mse: %zu vs %zu elements", a->n, b->n);
    int shape[1] = {1};
    Tensor *out = tensor_new(tp, 1, shape, wants_grad(tp, a, b, NULL));
    double s = 0;
    for (size_t i = 0; i < a->n; i++) {
        double t = (double)a->data[i] - b->data[i];
        s += t * t;
    }
    out->data[0] = (float)(s / (double)a->n);
    record(tp, mse_backward, out, a, b, NULL);
    return out;
}

/* ----------------------------------------------------------------------------
 * pulse bench kernels */

static void bench_call(int op, int M, int N, int K, float *x, float *W, float *y, float *dx, float *dW) {
    if (op == 0) kern_matmul_nt(y, x, W, NULL, M, N, K);
    else if (op == 1) kern_matmul_nn_acc(dx, y, W, M, N, K);
    else kern_matmul_tn_acc(dW, y, x, M, N, K);
}

/* GFLOP/s of one matmul (op 0 nt, 1 nn, 2 tn): the best of up to 5 windows of >= 30 ms
 * (at least 2 windows, about 0.3 s in all). Best, not mean: on a shared machine the mean
 * measures the neighbours. */
static double bench_one(int op, int M, int N, int K, float *x, float *W, float *y, float *dx, float *dW) {
    double best = 0, start = now_seconds();
    for (int w = 0; w < 5; w++) {
        int reps = 0;
        double t0 = now_seconds(), t;
        do {
            bench_call(op, M, N, K, x, W, y, dx, dW);
            reps++;
            t = now_seconds() - t0;
        } while (t < 0.03);
        double g = 2.0 * M * N * K * reps / t * 1e-9;
        if (g > best) best = g;
        if (w >= 1 && now_seconds() - start > 0.3) break;
    }
    return best;
}

int cmd_bench_kernels(int argc, char **argv) {
    Args a;
    args_init(&a, "bench kernels", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse bench kernels [--quick]\n"
               "GFLOP/s of the three matmuls (forward out = x W^T; backward dx += dy W and\n"
               "dW += dy^T x) at the model's shapes, on 1 and 2 threads. --quick: three shapes.\n");
        args_free(&a);
        return 0;
    }
    int quick = args_flag(&a, "quick");
    args_done(&a);
    args_free(&a);
    static const int full[][3] = {
        {512, 64, 64}, {512, 64, 128}, {512, 64, 352}, {512, 64, 512},
        {512, 128, 64}, {512, 128, 128}, {512, 128, 352}, {512, 128, 512},
        {512, 352, 64}, {512, 352, 128}, {512, 352, 352}, {512, 352, 512},
        {512, 512, 64}, {512, 512, 128}, {512, 512, 352}, {512, 512, 512},
        {2048, 64, 64}, {2048, 128, 128}, {2048, 128, 352}, {2048, 352, 128},
        {2048, 352, 352}, {2048, 512, 128}, {2048, 512, 512}, {2048, 2048, 2048}};
    static const int small[][3] = {{512, 352, 128}, {2048, 512, 512}, {2048, 2048, 2048}};
    const int (*shapes)[3] = quick ? small : full;
    int ns = quick ? (int)(sizeof small / sizeof small[0]) : (int)(sizeof full / sizeof full[0]);
    size_t mx = (size_t)2048 * 2048;
    float *x = xmalloc(mx * 4), *W = xmalloc(mx * 4), *y = xmalloc(mx * 4), *dx = xmalloc(mx * 4), *dW = xmalloc(mx * 4);
    Rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < mx; i++) {
        x[i] = rng_normal(&r); W[i] = rng_normal(&r); y[i] = rng_normal(&r);
        dx[i] = 0.0f; dW[i] = 0.0f;
    }
    int max_threads = kern_threads();
    printf("pulse bench kernels: SIMD %s, OpenMP threads available %d\n", kern_simd_name(), max_threads);
    printf("GFLOP/s (2MNK / time); nt: out[M,N] = x[M,K] W[N,K]^T, nn: dx[M,K] += dy[M,N] W[N,K],\n"
           "tn: dW[N,K] += dy[M,N]^T x[M,K]\n");
    printf("    M     N     K |  nt 1t  nn 1t  tn 1t |  nt 2t  nn 2t  tn 2t\n");
    for (int s = 0; s < ns; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        double g[2][3];
        for (int th = 0; th < 2; th++) {
#ifdef _OPENMP
            omp_set_num_threads(th + 1);
#endif
            bench_call(0, M, N, K, x, W, y, dx, dW);    /* warm-up: packs, wakes the threads */
            for (int op = 0; op < 3; op++) g[th][op] = bench_one(op, M, N, K, x, W, y, dx, dW);
        }
        printf("%5d %5d %5d | %6.1f %6.1f %6.1f | %6.1f %6.1f %6.1f\n", M, N, K,
               g[0][0], g[0][1], g[0][2], g[1][0], g[1][1], g[1][2]);
        fflush(stdout);
    }
#ifdef _OPENMP
    omp_set_num_threads(max_threads);
#else
    printf("(built without OpenMP: the 2-thread columns ran on 1 thread)\n");
#endif
    free(x); free(W); free(y); free(dx); free(dW);
    return 0;
}
