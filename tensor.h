/* tensor.h: float32 tensors, an arena for per-step activations, a tape for
 * reverse-mode autograd, every differentiable op with a hand-written backward,
 * and the SIMD + OpenMP kernels underneath.
 *
 * Model of use (as in kann and llm.c):
 *   Tape tp; tape_init(&tp, 64 << 20);
 *   for each step:
 *       Tensor *h = op_linear(&tp, x, W, b);      // forward runs now, a node is recorded
 *       ...
 *       Tensor *loss = op_mean(&tp, per_token);   // a scalar
 *       tape_backward(&tp, loss);                 // walks the nodes in reverse, ACCUMULATES
 *                                                 // into every ->grad (params included)
 *       tape_reset(&tp);                          // activations freed at once, no malloc
 *
 * Tensors:
 * - contiguous, row-major, up to 4 dims. shape[ndim-1] is the fastest-moving index.
 * - A tensor needs a gradient iff t->grad != NULL. Parameters are made with
 *   tensor_wrap(data, grad, ...) over memory the model owns. Op outputs get a zeroed
 *   grad buffer from the arena iff some input has a grad and the tape is recording.
 * - Constant inputs (pixels, masks, reference log-probs) are tensors with grad == NULL.
 * - "Leading dims" of x in op_linear etc. are flattened: x of shape [.., K] is [M, K].
 *
 * Determinism: every kernel sums each output element in a fixed order that does not
 * depend on the number of threads, so results are bit-identical for any
 * OMP_NUM_THREADS. SIMD paths differ from the plain-C reference only by rounding
 * (tolerance stated in tests/test_tensor.c). Build with SIMD=0 for the reference only.
 */
#ifndef PULSE_TENSOR_H
#define PULSE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

/* ----------------------------------------------------------------------------
 * Arena: bump allocation in chunks that are kept across resets, so that after the
 * first step a training loop never calls malloc. Allocations are 64-byte aligned. */
typedef struct ArenaChunk ArenaChunk;
typedef struct Arena {
    ArenaChunk *head;       /* first chunk (chunks form a list) */
    ArenaChunk *cur;        /* chunk being filled */
    size_t chunk_bytes;     /* default size of a new chunk */
    size_t used;            /* bytes handed out since the last reset */
    size_t high_water;      /* max of used over the arena's life */
} Arena;

void arena_init(Arena *a, size_t chunk_bytes);
void *arena_alloc(Arena *a, size_t bytes);          /* uninitialised, 64-byte aligned */
void *arena_calloc(Arena *a, size_t bytes);         /* zeroed */
void arena_reset(Arena *a);                         /* forget all allocations, keep chunks */
size_t arena_capacity(const Arena *a);              /* total bytes in chunks (growth check) */
void arena_free(Arena *a);

/* ----------------------------------------------------------------------------
 * Tensor */
typedef struct Tensor {
    float *data;            /* n floats, row-major */
    float *grad;            /* n floats, or NULL when no gradient is needed */
    int ndim;               /* 1..4 */
    int shape[4];           /* shape[0..ndim-1] */
    size_t n;               /* number of elements */
} Tensor;

/* A tensor header over memory owned elsewhere (parameters, inputs). grad may be NULL. */
Tensor tensor_wrap(float *data, float *grad, int ndim, const int *shape);
/* Shape helpers: tensor_rows = product of all dims but the last; tensor_cols = last dim. */
size_t tensor_rows(const Tensor *t);
int tensor_cols(const Tensor *t);

/* ----------------------------------------------------------------------------
 * Tape */
typedef struct Node Node;
typedef struct Tape {
    Arena arena;            /* activations, their grads, saved values, op metadata */
    Node *nodes;            /* recorded ops in execution order */
    int n_nodes, cap_nodes;
    int recording;          /* 0: ops compute forward only, record nothing, outputs
                               have no grad (inference through the same ops) */
    struct TapeProfile *prof;   /* per-op timing (tape_profile), NULL when off */
    /* op_rope's cos/sin table of the last (T, hd, theta, pos0), in the arena: the layers of
     * one forward share it (NULL after tape_reset) */
    const float *rope_cs;
    int rope_T, rope_hd, rope_pos0;
    float rope_theta;
} Tape;

void tape_init(Tape *tp, size_t arena_chunk_bytes);
/* Seeds d(loss) = 1 (loss must have one element and a grad) and runs every
 * recorded backward in reverse order. Gradients accumulate (+=): zero parameter
 * grads yourself before a step. */
void tape_backward(Tape *tp, Tensor *loss);
void tape_reset(Tape *tp);                          /* drop nodes and arena contents */
void tape_free(Tape *tp);
/* Per-op timing, for `pulse bench train --profile`: on != 0 starts (or restarts) charging
 * the wall time between two recorded ops to the later op's forward (so model glue counts
 * with the op it feeds) and timing each backward. Costs two clock reads per op. */
void tape_profile(Tape *tp, int on);
/* Charges the time since the last op (or mark) to a named bucket outside the tape (optimizer,
 * zero-grad, ...), and starts a new interval. No-op when profiling is off. */
void tape_profile_mark(Tape *tp, const char *name);
/* Prints the buckets, largest first, in ms per step over `steps` steps. */
void tape_profile_print(const Tape *tp, int steps);

/* A new arena tensor (uninitialised data; grad zeroed iff want_grad && recording). */
Tensor *tensor_new(Tape *tp, int ndim, const int *shape, int want_grad);
/* A new constant arena tensor holding a copy of data (no grad). */
Tensor *tensor_const(Tape *tp, int ndim, const int *shape, const float *data);
/* A view with another shape over the same data and grad (same n; no node). */
Tensor *op_reshape(Tape *tp, Tensor *x, int ndim, const int *shape);

/* ----------------------------------------------------------------------------
 * Differentiable ops. Each returns a new arena tensor. Shapes in comments. */

/* y = x W^T (+ b).  x [.., K], W [N, K] (PyTorch layout), b [N] or NULL -> y [.., N] */
Tensor *op_linear(Tape *tp, Tensor *x, Tensor *W, Tensor *b);
/* Elementwise; a and b have the same n. */
Tensor *op_add(Tape *tp, Tensor *a, Tensor *b);
Tensor *op_mul(Tape *tp, Tensor *a, Tensor *b);
/* y = a + b broadcast: b.n divides a.n, b repeats over a's leading elements
 * (b [R] added to every length-R block of a: biases, position embeddings). */
Tensor *op_add_bcast(Tape *tp, Tensor *a, Tensor *b);
Tensor *op_scale(Tape *tp, Tensor *x, float s);
/* y = a + s b (same n): op_add(a, op_scale(b, s)) in one pass, with the same roundings
 * (LoRA's y + (alpha/r) z). */
Tensor *op_add_scaled(Tape *tp, Tensor *a, Tensor *b, float s);
/* A LoRA branch added to a linear's output: y + s (x A^T) B^T, x [.., K], A [r, K], B [N, r],
 * y [.., N] (same rows as x). The same values and gradients, bit for bit, as
 * op_add_scaled(y, op_linear(op_linear(x, A, NULL), B, NULL), s), in one node whose rank-r
 * products split between threads. */
Tensor *op_lora(Tape *tp, Tensor *y, Tensor *x, Tensor *A, Tensor *B, float s);
/* rows of W [V, D] picked by ids[0..n) -> [n, D] (output shape set to out_ndim/out_shape
 * whose product of leading dims is n and whose last dim is D, e.g. {B, T, D}; pass
 * out_ndim = 0 for [n, D]). ids in [0, V). */
Tensor *op_embedding(Tape *tp, Tensor *W, const int *ids, int n, int out_ndim, const int *out_shape);
/* [Na, D] ++ [Nb, D] -> [Na+Nb, D] (both viewed as rows of their last dim, same D). */
Tensor *op_concat_rows(Tape *tp, Tensor *a, Tensor *b);
/* out row i = src row idx[i]; src [N, D] -> [m, D]; an index may repeat (backward adds). */
Tensor *op_gather_rows(Tape *tp, Tensor *src, const int *idx, int m);
/* rows [start, start+count) of x viewed as [N, D] -> [count, D] (a copy). */
Tensor *op_slice_rows(Tape *tp, Tensor *x, int start, int count);
/* LayerNorm over the last dim with weight and bias [D]. */
Tensor *op_layernorm(Tape *tp, Tensor *x, Tensor *w, Tensor *b, float eps);
/* RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * w  (HF Llama). */
Tensor *op_rmsnorm(Tape *tp, Tensor *x, Tensor *w, float eps);
Tensor *op_gelu(Tape *tp, Tensor *x);             /* 0.5 x (1 + erf(x / sqrt 2)) */
Tensor *op_quick_gelu(Tape *tp, Tensor *x);       /* x sigmoid(1.702 x) */
Tensor *op_silu(Tape *tp, Tensor *x);             /* x sigmoid(x) */
Tensor *op_swiglu(Tape *tp, Tensor *gate, Tensor *up); /* silu(gate) * up */
/* RoPE, HF rotate_half: x [B, T, H, hd]; position of (b, t) = pos0 + t;
 * inv_freq[i] = theta^(-2i/hd), i < hd/2; x1 = x[..., :hd/2], x2 = x[..., hd/2:];
 * out = x*cos + rotate_half(x)*sin with rotate_half(x) = [-x2, x1]. */
Tensor *op_rope(Tape *tp, Tensor *x, float theta, int pos0);
/* Fused multi-head attention, softmax(q k^T * scale + mask) v.
 * q [B, T, H, hd], k and v [B, T, Hkv, hd] with H % Hkv == 0 (query head h uses kv head
 * h / (H/Hkv)). causal: key j > query i is masked. key_valid [B*T] (1 = real token,
 * 0 = padding) or NULL: padded keys are masked. A query whose keys are all masked
 * outputs zeros. scale > 0. -> [B, T, H, hd]
 * KV cache: k and v may have more positions than q (Tk >= Tq, key_valid [B*Tk]); query i
 * then sits at position Tk - Tq + i, and causal masks keys j > Tk - Tq + i. */
Tensor *op_attention(Tape *tp, Tensor *q, Tensor *k, Tensor *v, int causal,
                     const uint8_t *key_valid, float scale);
/* Fused log-softmax + pick: logits [N, V], targets[N] with -1 = ignore ->
 * [N] holding log p(target) (0 where ignored). Backward: g * (onehot - softmax). */
Tensor *op_token_logprob(Tape *tp, Tensor *logits, const int *targets);
/* KL(p_ref || p) per row: logits [N, V], ref_logprob [N, V] (log-softmax of the reference,
 * a constant), mask[N] (1 = count, 0 = skip) or NULL -> [N]. Skipped rows are 0.
 * ref_logprob is not copied: keep it alive until tape_backward (-INFINITY entries are fine). */
Tensor *op_kl_ref(Tape *tp, Tensor *logits, const float *ref_logprob, const uint8_t *mask);
Tensor *op_logsigmoid(Tape *tp, Tensor *x);       /* log sigmoid(x), stable */
Tensor *op_sum(Tape *tp, Tensor *x);              /* -> [1] */
Tensor *op_mean(Tape *tp, Tensor *x);             /* -> [1] */
/* Sum over the last dim: [.., C] -> [..] (per-sequence sums of per-token values). */
Tensor *op_sum_rows(Tape *tp, Tensor *x);
/* Per-row mean squared difference: a, b [.., D] (b may be a constant) -> [..]. */
Tensor *op_sqdiff_rows(Tape *tp, Tensor *a, Tensor *b);
/* Scalar mean squared error over all elements -> [1]. */
Tensor *op_mse(Tape *tp, Tensor *a, Tensor *b);

/* ----------------------------------------------------------------------------
 * Kernels (no tape), used by the ops and by inference. Row-major; "+=" means the
 * kernel accumulates into out. Each parallelises over output rows with OpenMP and
 * sums in a fixed order. */

/* out[M,N] = x[M,K] W[N,K]^T (+ b[N] if b) : forward of a linear layer. */
void kern_matmul_nt(float *out, const float *x, const float *W, const float *b, int M, int N, int K);
/* dx[M,K] += dy[M,N] W[N,K] : backward to the input. */
void kern_matmul_nn_acc(float *dx, const float *dy, const float *W, int M, int N, int K);
/* dW[N,K] += dy[M,N]^T x[M,K] : backward to the weight (summed over M in order). */
void kern_matmul_tn_acc(float *dW, const float *dy, const float *x, int M, int N, int K);
/* kern_matmul_nt with W packed once into the kernel's panel layout, for many products with
 * the same weight (decoding: a few rows at a time). kern_packed_floats(N, K) floats hold
 * the packed form; kern_pack_nt fills them. kern_matmul_nt_packed gives the same bits as
 * kern_matmul_nt(out, x, W, b, M, N, K) (it uses W where the plain call would not pack:
 * the reference path, and the narrow shapes; without SIMD kernels nothing is packed and
 * kern_packed_floats is 0). */
size_t kern_packed_floats(int N, int K);
void kern_pack_nt(float *Wp, const float *W, int N, int K);
void kern_matmul_nt_packed(float *out, const float *x, const float *W, const float *Wp, const float *b, int M, int N,
                           int K);
/* out[i] = sum_j a[i] * b[j] dot products etc. are internal; these are the public ones. */
float kern_dot(const float *a, const float *b, int n);
void kern_axpy(float *y, float a, const float *x, int n);  /* y += a x */

/* The plain-C reference kernels, same contracts as above (always compiled: the tests
 * compare the SIMD path against them). */
void kern_matmul_nt_ref(float *out, const float *x, const float *W, const float *b, int M, int N, int K);
void kern_matmul_nn_acc_ref(float *dx, const float *dy, const float *W, int M, int N, int K);
void kern_matmul_tn_acc_ref(float *dW, const float *dy, const float *x, int M, int N, int K);
float kern_dot_ref(const float *a, const float *b, int n);
void kern_axpy_ref(float *y, float a, const float *x, int n);
/* out[i] = exp(x[i]) (SIMD polynomial, <= 1.3 ulp; exactly 0 below -87.3: exp(-inf) = 0). */
void kern_exp(float *out, const float *x, int n);
/* Tests only: on != 0 routes every kernel and op (attention, softmax rows included) to the
 * plain-C reference path, to compare a whole forward + backward against the SIMD one. */
void kern_set_reference(int on);

/* Name of the SIMD path compiled in: "avx512", "avx2", "neon" or "reference". */
const char *kern_simd_name(void);
/* Number of OpenMP threads that kernels will use (1 without OpenMP). */
int kern_threads(void);

/* `pulse bench kernels`: GFLOP/s of the three matmuls at the model's shapes. */
int cmd_bench_kernels(int argc, char **argv);

#endif
