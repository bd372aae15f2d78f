/* model.c: the tiny LLaVA of pulse, with HF transformers' math and names.
 *
 *   pixels [n_img, 3, S, S]
 *     -> patchify [n_img * N_p, 3 P P] -> patch_embedding (a linear, no bias)     CLIP
 *     -> [class, patches] + position_embedding -> pre_layrnorm
 *     -> encoder layers 0 .. used-1: x += out_proj(attn(ln1 x)); x += fc2(act(fc1(ln2 x)))
 *     -> drop CLS -> linear_1 -> GELU(erf) -> linear_2                           projector
 *   ids [B, T_text] with one <image> each at most
 *     -> merged rows [B, T, D]: embed_tokens(id), or the N_p image features for <image>
 *     -> Llama layers: x += o(attn(rope(q), rope(k), v)(rmsnorm x)); x += down(silu(gate) * up)
 *     -> norm -> lm_head -> log p(target)                                        decoder
 *
 * Design:
 * - The parameter table (build_table) lists every tensor in PyTorch state_dict order with
 *   its HF name, shape, offset, init and whether it decays; everything else walks it.
 * - Training runs on the tensor.h tape; the lm_head and log-softmax run only on labelled
 *   rows unless full logits are asked for (KL), the expensive part of a small model.
 * - Prefill reuses the same forward (recording off) and copies rotated keys and values into
 *   a KvCache; decoding one token per sequence uses plain kernels (decode_layer) that repeat
 *   the forward's arithmetic in the same order, so cached and full logits agree to ~1e-6.
 * - LoRA adds (alpha/r) B(A x) beside a target linear; its parameters live in their own flat
 *   blocks so that "only the adapter trains" is a flat loop too.
 */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io.h"

#ifdef _OPENMP
#define OMP_STR_(...) #__VA_ARGS__
#define OMP(...) _Pragma(OMP_STR_(omp __VA_ARGS__))
#else
#define OMP(...)
#endif

/* ============================================================================
 * Config */

LlavaConfig config_default(void) {
    LlavaConfig c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 512; c.hidden_size = 128; c.intermediate_size = 352;
    c.num_hidden_layers = 4; c.num_attention_heads = 4; c.num_key_value_heads = 4;
    c.rms_norm_eps = 1e-5; c.rope_theta = 10000.0; c.tie_word_embeddings = 0;
    c.max_position_embeddings = 2048; c.initializer_range = 0.02;
    c.v_hidden_size = 64; c.v_intermediate_size = 256; c.v_num_hidden_layers = 2;
    c.v_num_attention_heads = 4; c.image_size = 32; c.patch_size = 8; c.num_channels = 3;
    c.v_quick_gelu = 1; c.layer_norm_eps = 1e-5; c.v_initializer_range = 0.02;
    c.image_token_index = 3; c.vision_feature_layer = -1;
    c.pad_token_id = 0; c.bos_token_id = 1; c.eos_token_id = 2;
    return c;
}

int config_num_patches(const LlavaConfig *c) {
    int g = c->image_size / c->patch_size;
    return g * g;
}

int config_vision_layers_used(const LlavaConfig *c) {
    /* hidden_states[0] = embeddings after pre_layrnorm, [i] = output of layer i-1 */
    int L = c->v_num_hidden_layers, k = c->vision_feature_layer;
    return k >= 0 ? k : L + 1 + k;
}

/* A config field outside its range is bad input: one line naming the field. */
static void need_int(const char *path, const char *name, int v, int lo, int hi) {
    if (v < lo || v > hi) die_input(path, "%s %d is not in [%d, %d]", name, v, lo, hi);
}

/* The same for a real; open_lo: lo itself is out (NaN always is). */
static void need_real(const char *path, const char *name, double v, int open_lo, double lo, double hi) {
    if (!(open_lo ? v > lo : v >= lo) || !(v <= hi))
        die_input(path, "%s %g is not in %c%g, %g]", name, v, open_lo ? '(' : '[', lo, hi);
}

void config_validate(const LlavaConfig *c, const char *path) {
    /* sizes: each positive and small enough that products cannot overflow an int */
    need_int(path, "text_config.vocab_size", c->vocab_size, 5, 1 << 20);
    need_int(path, "text_config.hidden_size", c->hidden_size, 2, 16384);
    need_int(path, "text_config.intermediate_size", c->intermediate_size, 1, 65536);
    need_int(path, "text_config.num_hidden_layers", c->num_hidden_layers, 1, 256);
    if (c->num_attention_heads < 1 || c->hidden_size % c->num_attention_heads != 0)
        die_input(path, "text_config.num_attention_heads %d does not divide hidden_size %d",
                  c->num_attention_heads, c->hidden_size);
    if ((c->hidden_size / c->num_attention_heads) % 2 != 0)
        die_input(path, "text_config: head_dim %d must be even for RoPE", c->hidden_size / c->num_attention_heads);
    if (c->num_key_value_heads < 1 || c->num_attention_heads % c->num_key_value_heads != 0)
        die_input(path, "text_config.num_key_value_heads %d does not divide num_attention_heads %d",
                  c->num_key_value_heads, c->num_attention_heads);
    need_real(path, "text_config.rms_norm_eps", c->rms_norm_eps, 1, 0.0, 1.0);
    need_real(path, "text_config.rope_theta", c->rope_theta, 1, 1.0, 1e12);
    need_real(path, "text_config.initializer_range", c->initializer_range, 0, 0.0, 10.0);
    need_int(path, "vision_config.hidden_size", c->v_hidden_size, 1, 16384);
    need_int(path, "vision_config.intermediate_size", c->v_intermediate_size, 1, 65536);
    need_int(path, "vision_config.num_hidden_layers", c->v_num_hidden_layers, 1, 256);
    if (c->v_num_attention_heads < 1 || c->v_hidden_size % c->v_num_attention_heads != 0)
        die_input(path, "vision_config.num_attention_heads %d does not divide hidden_size %d",
                  c->v_num_attention_heads, c->v_hidden_size);
    if (c->patch_size < 1 || c->image_size < 1 || c->image_size > 4096)
        die_input(path, "vision_config: image_size %d / patch_size %d impossible", c->image_size, c->patch_size);
    if (c->image_size % c->patch_size != 0)
        die_input(path, "vision_config.image_size %d is not a multiple of patch_size %d", c->image_size, c->patch_size);
    if (c->num_channels != 3)
        die_input(path, "vision_config.num_channels %d: only RGB (3) images are supported", c->num_channels);
    need_real(path, "vision_config.layer_norm_eps", c->layer_norm_eps, 1, 0.0, 1.0);
    need_real(path, "vision_config.initializer_range", c->v_initializer_range, 0, 0.0, 10.0);
    int L = c->v_num_hidden_layers;
    if (c->vision_feature_layer < -(L + 1) || c->vision_feature_layer > L)
        die_input(path, "vision_feature_layer %d is outside [%d, %d] for %d vision layers",
                  c->vision_feature_layer, -(L + 1), L, L);
    int np = config_num_patches(c);
    if (c->max_position_embeddings < np + 2 || c->max_position_embeddings > (1 << 20))
        die_input(path, "text_config.max_position_embeddings %d is not in [%d, %d] (an image takes %d positions)",
                  c->max_position_embeddings, np + 2, 1 << 20, np);
    const struct { const char *name; int v; } ids[] = {
        {"image_token_index", c->image_token_index}, {"pad_token_id", c->pad_token_id},
        {"bos_token_id", c->bos_token_id}, {"eos_token_id", c->eos_token_id}};
    for (int i = 0; i < 4; i++)
        if (ids[i].v < 0 || ids[i].v >= c->vocab_size)
            die_input(path, "%s %d is outside the vocabulary [0, %d)", ids[i].name, ids[i].v, c->vocab_size);
    if (c->image_token_index == c->bos_token_id || c->image_token_index == c->eos_token_id ||
        c->image_token_index == c->pad_token_id)
        die_input(path, "image_token_index %d collides with pad/bos/eos", c->image_token_index);
    /* total size: the flat blocks are indexed with size_t but shapes with int */
    double nparam = (double)c->vocab_size * c->hidden_size * 2 +
                    (double)c->num_hidden_layers * (4.0 * c->hidden_size * c->hidden_size + 3.0 * c->hidden_size * c->intermediate_size) +
                    (double)c->v_num_hidden_layers * (4.0 * c->v_hidden_size * c->v_hidden_size + 2.0 * c->v_hidden_size * c->v_intermediate_size);
    if (nparam > 1.0e9) die_input(path, "config has %.3g parameters: absurd for pulse (limit 1e9)", nparam);
}

/* An integer field of a sub-object: present and wrong is an input error naming it. */
static int jint(const Json *o, const char *key, int def, long lo, long hi, const char *path) {
    return o ? (int)json_get_int(o, key, def, lo, hi, path) : def;
}
static double jnum(const Json *o, const char *key, double def, const char *path) {
    if (!o) return def;
    double x = json_get_number(o, key, def, path);
    if (!isfinite(x)) die_input(path, "%s is not finite", key);
    return x;
}
static const char *jstr(const Json *o, const char *key, const char *def, const char *path) {
    return o ? json_get_string(o, key, def, path) : def;
}

LlavaConfig config_from_json(const Json *j, const char *path) {
    LlavaConfig c = config_default();
    if (!j || j->type != JSON_OBJECT) die_input(path, "config is not a JSON object");
    const char *mt = json_get_string(j, "model_type", "llava", path);
    if (strcmp(mt, "llava") != 0) die_input(path, "model_type \"%s\" is not \"llava\"", mt);
    const Json *t = json_get(j, "text_config"), *v = json_get(j, "vision_config");
    if (json_get(j, "text_config") && t->type != JSON_OBJECT) die_input(path, "text_config is not an object");
    if (json_get(j, "vision_config") && v->type != JSON_OBJECT) die_input(path, "vision_config is not an object");
    const char *tmt = jstr(t, "model_type", "llama", path), *vmt = jstr(v, "model_type", "clip_vision_model", path);
    if (strcmp(tmt, "llama") != 0) die_input(path, "text_config.model_type \"%s\" is not \"llama\"", tmt);
    if (strcmp(vmt, "clip_vision_model") != 0)
        die_input(path, "vision_config.model_type \"%s\" is not \"clip_vision_model\"", vmt);
    const long BIG = 1L << 30;
    c.vocab_size = jint(t, "vocab_size", c.vocab_size, -BIG, BIG, path);
    c.hidden_size = jint(t, "hidden_size", c.hidden_size, -BIG, BIG, path);
    c.intermediate_size = jint(t, "intermediate_size", c.intermediate_size, -BIG, BIG, path);
    c.num_hidden_layers = jint(t, "num_hidden_layers", c.num_hidden_layers, -BIG, BIG, path);
    c.num_attention_heads = jint(t, "num_attention_heads", c.num_attention_heads, -BIG, BIG, path);
    /* HF Llama: num_key_value_heads defaults to num_attention_heads */
    c.num_key_value_heads = jint(t, "num_key_value_heads", c.num_attention_heads, -BIG, BIG, path);
    c.rms_norm_eps = jnum(t, "rms_norm_eps", c.rms_norm_eps, path);
    c.rope_theta = jnum(t, "rope_theta", c.rope_theta, path);
    c.tie_word_embeddings = t ? json_get_bool(t, "tie_word_embeddings", c.tie_word_embeddings, path) : c.tie_word_embeddings;
    c.max_position_embeddings = jint(t, "max_position_embeddings", c.max_position_embeddings, -BIG, BIG, path);
    c.initializer_range = jnum(t, "initializer_range", c.initializer_range, path);
    c.pad_token_id = jint(t, "pad_token_id", c.pad_token_id, -BIG, BIG, path);
    c.bos_token_id = jint(t, "bos_token_id", c.bos_token_id, -BIG, BIG, path);
    c.eos_token_id = jint(t, "eos_token_id", c.eos_token_id, -BIG, BIG, path);
    const char *act = jstr(t, "hidden_act", "silu", path);
    if (strcmp(act, "silu") != 0) die_input(path, "text_config.hidden_act \"%s\": only \"silu\" is supported", act);
    if (t && json_get_bool(t, "attention_bias", 0, path)) die_input(path, "text_config.attention_bias true is not supported");
    if (t && json_get_bool(t, "mlp_bias", 0, path)) die_input(path, "text_config.mlp_bias true is not supported");
    const Json *rs = t ? json_get(t, "rope_scaling") : NULL;
    if (rs && rs->type != JSON_NULL) die_input(path, "text_config.rope_scaling is not supported (must be null)");
    if (t && json_get(t, "head_dim") && json_get(t, "head_dim")->type != JSON_NULL) {
        int hd = jint(t, "head_dim", 0, -BIG, BIG, path);
        if (c.num_attention_heads <= 0 || hd * c.num_attention_heads != c.hidden_size)
            die_input(path, "text_config.head_dim %d != hidden_size / num_attention_heads", hd);
    }
    c.v_hidden_size = jint(v, "hidden_size", c.v_hidden_size, -BIG, BIG, path);
    c.v_intermediate_size = jint(v, "intermediate_size", c.v_intermediate_size, -BIG, BIG, path);
    c.v_num_hidden_layers = jint(v, "num_hidden_layers", c.v_num_hidden_layers, -BIG, BIG, path);
    c.v_num_attention_heads = jint(v, "num_attention_heads", c.v_num_attention_heads, -BIG, BIG, path);
    c.image_size = jint(v, "image_size", c.image_size, -BIG, BIG, path);
    c.patch_size = jint(v, "patch_size", c.patch_size, -BIG, BIG, path);
    c.num_channels = jint(v, "num_channels", c.num_channels, -BIG, BIG, path);
    c.layer_norm_eps = jnum(v, "layer_norm_eps", c.layer_norm_eps, path);
    c.v_initializer_range = jnum(v, "initializer_range", c.v_initializer_range, path);
    const char *vact = jstr(v, "hidden_act", "quick_gelu", path);
    if (strcmp(vact, "quick_gelu") == 0) c.v_quick_gelu = 1;
    else if (strcmp(vact, "gelu") == 0) c.v_quick_gelu = 0;
    else die_input(path, "vision_config.hidden_act \"%s\": only \"quick_gelu\" and \"gelu\" are supported", vact);
    c.image_token_index = jint(j, "image_token_index", c.image_token_index, -BIG, BIG, path);
    c.vision_feature_layer = jint(j, "vision_feature_layer", c.vision_feature_layer, -BIG, BIG, path);
    c.pad_token_id = jint(j, "pad_token_id", c.pad_token_id, -BIG, BIG, path);
    const char *pact = json_get_string(j, "projector_hidden_act", "gelu", path);
    if (strcmp(pact, "gelu") != 0) die_input(path, "projector_hidden_act \"%s\": only \"gelu\" is supported", pact);
    const char *strat = json_get_string(j, "vision_feature_select_strategy", "default", path);
    if (strcmp(strat, "default") != 0)
        die_input(path, "vision_feature_select_strategy \"%s\": only \"default\" (CLS dropped) is supported", strat);
    if (!json_get_bool(j, "multimodal_projector_bias", 1, path))
        die_input(path, "multimodal_projector_bias false is not supported");
    config_validate(&c, path);
    return c;
}

static void set_num(Json *o, const char *k, double x) { json_set(o, k, json_new_number(x)); }
static void set_str(Json *o, const char *k, const char *s) { json_set(o, k, json_new_string(s)); }

Json *config_to_json(const LlavaConfig *c) {
    Json *j = json_new_object();
    Json *arch = json_new_array();
    json_push(arch, json_new_string("LlavaForConditionalGeneration"));
    json_set(j, "architectures", arch);
    set_str(j, "model_type", "llava");
    set_num(j, "image_token_index", c->image_token_index);
    set_num(j, "vision_feature_layer", c->vision_feature_layer);
    set_str(j, "vision_feature_select_strategy", "default");
    set_str(j, "projector_hidden_act", "gelu");
    json_set(j, "multimodal_projector_bias", json_new_bool(1));
    set_num(j, "pad_token_id", c->pad_token_id);
    json_set(j, "tie_word_embeddings", json_new_bool(c->tie_word_embeddings));
    set_str(j, "torch_dtype", "float32");
    Json *t = json_new_object();
    set_str(t, "model_type", "llama");
    set_num(t, "vocab_size", c->vocab_size);
    set_num(t, "hidden_size", c->hidden_size);
    set_num(t, "intermediate_size", c->intermediate_size);
    set_num(t, "num_hidden_layers", c->num_hidden_layers);
    set_num(t, "num_attention_heads", c->num_attention_heads);
    set_num(t, "num_key_value_heads", c->num_key_value_heads);
    set_str(t, "hidden_act", "silu");
    set_num(t, "rms_norm_eps", c->rms_norm_eps);
    set_num(t, "rope_theta", c->rope_theta);
    json_set(t, "rope_scaling", json_new_null());
    json_set(t, "attention_bias", json_new_bool(0));
    json_set(t, "mlp_bias", json_new_bool(0));
    json_set(t, "tie_word_embeddings", json_new_bool(c->tie_word_embeddings));
    set_num(t, "max_position_embeddings", c->max_position_embeddings);
    set_num(t, "initializer_range", c->initializer_range);
    set_num(t, "pad_token_id", c->pad_token_id);
    set_num(t, "bos_token_id", c->bos_token_id);
    set_num(t, "eos_token_id", c->eos_token_id);
    json_set(j, "text_config", t);
    Json *v = json_new_object();
    set_str(v, "model_type", "clip_vision_model");
    set_num(v, "hidden_size", c->v_hidden_size);
    set_num(v, "intermediate_size", c->v_intermediate_size);
    set_num(v, "num_hidden_layers", c->v_num_hidden_layers);
    set_num(v, "num_attention_heads", c->v_num_attention_heads);
    set_num(v, "image_size", c->image_size);
    set_num(v, "patch_size", c->patch_size);
    set_num(v, "num_channels", c->num_channels);
    set_str(v, "hidden_act", c->v_quick_gelu ? "quick_gelu" : "gelu");
    set_num(v, "layer_norm_eps", c->layer_norm_eps);
    set_num(v, "initializer_range", c->v_initializer_range);
    json_set(j, "vision_config", v);
    return j;
}

/* ============================================================================
 * The parameter table */

static int add_param(Model *m, int *cap, const char *name, int ndim, int s0, int s1, int s2, int s3,
                     InitKind init, float std, int decay, int linear) {
    if (m->n_params == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        m->params = xrealloc(m->params, (size_t)*cap * sizeof *m->params);
    }
    ParamInfo *p = &m->params[m->n_params];
    memset(p, 0, sizeof *p);
    CHECK(strlen(name) < sizeof p->name);
    strcpy(p->name, name);
    p->ndim = ndim;
    int s[4] = {s0, s1, s2, s3};
    p->n = 1;
    for (int i = 0; i < ndim; i++) { p->shape[i] = s[i]; p->n *= (size_t)s[i]; }
    p->offset = m->n_floats;
    m->n_floats += p->n;
    p->init = init; p->std = std; p->decay = (uint8_t)decay; p->linear = (uint8_t)linear;
    return m->n_params++;
}

/* Linear weight [out, in] + optional bias [out], named PREFIX.weight / PREFIX.bias. */
static int add_linear(Model *m, int *cap, const char *prefix, int out, int in, float std, int *bias) {
    char buf[144];
    snprintf(buf, sizeof buf, "%s.weight", prefix);
    int w = add_param(m, cap, buf, 2, out, in, 0, 0, INIT_NORMAL, std, 1, 1);
    if (bias) {
        snprintf(buf, sizeof buf, "%s.bias", prefix);
        *bias = add_param(m, cap, buf, 1, out, 0, 0, 0, INIT_ZEROS, 0.0f, 0, 0);
    }
    return w;
}

static void add_norm(Model *m, int *cap, const char *prefix, int D, int *w, int *b) {
    char buf[144];
    snprintf(buf, sizeof buf, "%s.weight", prefix);
    *w = add_param(m, cap, buf, 1, D, 0, 0, 0, INIT_ONES, 0.0f, 0, 0);
    if (b) {
        snprintf(buf, sizeof buf, "%s.bias", prefix);
        *b = add_param(m, cap, buf, 1, D, 0, 0, 0, INIT_ZEROS, 0.0f, 0, 0);
    }
}

/* Every tensor of the checkpoint, in PyTorch state_dict order (module definition order).
 * Init stds: HF CLIPPreTrainedModel._init_weights (factor 1) for the vision tower;
 * initializer_range for Llama and the projector (LlamaPreTrainedModel, LlavaPreTrainedModel). */
static void build_table(Model *m) {
    const LlavaConfig *c = &m->cfg;
    int cap = 0;
    char pre[128];
    int Dv = c->v_hidden_size, Lv = c->v_num_hidden_layers, P = c->patch_size, Np = m->n_patches;
    float ir = (float)c->initializer_range, irv = (float)c->v_initializer_range;
    float v_attn_std = 1.0f / sqrtf((float)Dv) / sqrtf(2.0f * Lv), v_out_std = 1.0f / sqrtf((float)Dv);
    float v_fc1_std = 1.0f / sqrtf(2.0f * Dv), v_fc2_std = v_attn_std;
    const char *V = "vision_tower.vision_model";
    snprintf(pre, sizeof pre, "%s.embeddings.class_embedding", V);
    m->v_class = add_param(m, &cap, pre, 1, Dv, 0, 0, 0, INIT_NORMAL, 1.0f / sqrtf((float)Dv), 1, 0);
    snprintf(pre, sizeof pre, "%s.embeddings.patch_embedding.weight", V);
    m->v_patch = add_param(m, &cap, pre, 4, Dv, c->num_channels, P, P, INIT_NORMAL, irv, 1, 0);
    snprintf(pre, sizeof pre, "%s.embeddings.position_embedding.weight", V);
    m->v_pos = add_param(m, &cap, pre, 2, Np + 1, Dv, 0, 0, INIT_NORMAL, irv, 1, 0);
    snprintf(pre, sizeof pre, "%s.pre_layrnorm", V);
    add_norm(m, &cap, pre, Dv, &m->v_pre_w, &m->v_pre_b);
    m->vl = xcalloc((size_t)Lv, sizeof *m->vl);
    for (int l = 0; l < Lv; l++) {
        VisionLayer *L = &m->vl[l];
        char base[96];
        snprintf(base, sizeof base, "%s.encoder.layers.%d", V, l);
        snprintf(pre, sizeof pre, "%s.self_attn.k_proj", base); L->k_w = add_linear(m, &cap, pre, Dv, Dv, v_attn_std, &L->k_b);
        snprintf(pre, sizeof pre, "%s.self_attn.v_proj", base); L->v_w = add_linear(m, &cap, pre, Dv, Dv, v_attn_std, &L->v_b);
        snprintf(pre, sizeof pre, "%s.self_attn.q_proj", base); L->q_w = add_linear(m, &cap, pre, Dv, Dv, v_attn_std, &L->q_b);
        snprintf(pre, sizeof pre, "%s.self_attn.out_proj", base); L->o_w = add_linear(m, &cap, pre, Dv, Dv, v_out_std, &L->o_b);
        snprintf(pre, sizeof pre, "%s.layer_norm1", base); add_norm(m, &cap, pre, Dv, &L->ln1_w, &L->ln1_b);
        snprintf(pre, sizeof pre, "%s.mlp.fc1", base); L->fc1_w = add_linear(m, &cap, pre, c->v_intermediate_size, Dv, v_fc1_std, &L->fc1_b);
        snprintf(pre, sizeof pre, "%s.mlp.fc2", base); L->fc2_w = add_linear(m, &cap, pre, Dv, c->v_intermediate_size, v_fc2_std, &L->fc2_b);
        snprintf(pre, sizeof pre, "%s.layer_norm2", base); add_norm(m, &cap, pre, Dv, &L->ln2_w, &L->ln2_b);
    }
    snprintf(pre, sizeof pre, "%s.post_layernorm", V);
    add_norm(m, &cap, pre, Dv, &m->v_post_w, &m->v_post_b);

    int D = c->hidden_size, hd = D / c->num_attention_heads, Dkv = hd * c->num_key_value_heads;
    m->p1_w = add_linear(m, &cap, "multi_modal_projector.linear_1", D, Dv, ir, &m->p1_b);
    m->p2_w = add_linear(m, &cap, "multi_modal_projector.linear_2", D, D, ir, &m->p2_b);

    m->embed = add_param(m, &cap, "language_model.model.embed_tokens.weight", 2, c->vocab_size, D, 0, 0,
                         INIT_NORMAL, ir, 1, 0);
    m->tl = xcalloc((size_t)c->num_hidden_layers, sizeof *m->tl);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        TextLayer *L = &m->tl[l];
        char base[96];
        snprintf(base, sizeof base, "language_model.model.layers.%d", l);
        /* q, k, v adjacent (and gate, up): the forward may treat them as one matrix */
        snprintf(pre, sizeof pre, "%s.self_attn.q_proj", base); L->q = add_linear(m, &cap, pre, D, D, ir, NULL);
        snprintf(pre, sizeof pre, "%s.self_attn.k_proj", base); L->k = add_linear(m, &cap, pre, Dkv, D, ir, NULL);
        snprintf(pre, sizeof pre, "%s.self_attn.v_proj", base); L->v = add_linear(m, &cap, pre, Dkv, D, ir, NULL);
        snprintf(pre, sizeof pre, "%s.self_attn.o_proj", base); L->o = add_linear(m, &cap, pre, D, D, ir, NULL);
        snprintf(pre, sizeof pre, "%s.mlp.gate_proj", base); L->gate = add_linear(m, &cap, pre, c->intermediate_size, D, ir, NULL);
        snprintf(pre, sizeof pre, "%s.mlp.up_proj", base); L->up = add_linear(m, &cap, pre, c->intermediate_size, D, ir, NULL);
        snprintf(pre, sizeof pre, "%s.mlp.down_proj", base); L->down = add_linear(m, &cap, pre, D, c->intermediate_size, ir, NULL);
        snprintf(pre, sizeof pre, "%s.input_layernorm", base); add_norm(m, &cap, pre, D, &L->ln_in, NULL);
        snprintf(pre, sizeof pre, "%s.post_attention_layernorm", base); add_norm(m, &cap, pre, D, &L->ln_post, NULL);
    }
    add_norm(m, &cap, "language_model.model.norm", D, &m->norm, NULL);
    if (c->tie_word_embeddings) m->lm_head = m->embed;
    else m->lm_head = add_linear(m, &cap, "language_model.lm_head", c->vocab_size, D, ir, NULL);
}

Model *model_new(const LlavaConfig *c) {
    config_validate(c, "config");
    Model *m = xcalloc(1, sizeof *m);
    m->cfg = *c;
    m->n_patches = config_num_patches(c);
    build_table(m);
    m->w = xcalloc(m->n_floats, sizeof(float));
    m->t = xcalloc((size_t)m->n_params, sizeof *m->t);
    for (int i = 0; i < m->n_params; i++)
        m->t[i] = tensor_wrap(m->w + m->params[i].offset, NULL, m->params[i].ndim, m->params[i].shape);
    m->mode = TRAIN_NONE;
    return m;
}

void model_init(Model *m, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        float *w = m->w + p->offset;
        if (p->init == INIT_ONES) { for (size_t k = 0; k < p->n; k++) w[k] = 1.0f; continue; }
        if (p->init == INIT_ZEROS || p->std == 0.0f) { memset(w, 0, p->n * sizeof(float)); continue; }
        Rng r;
        rng_derive(&r, seed, p->name);           /* one stream per tensor: adding one changes no other */
        for (size_t k = 0; k < p->n; k++) w[k] = p->std * rng_normal(&r);
    }
    /* nn.Embedding(padding_idx = pad_token_id): HF zeroes the pad row */
    memset(m->w + m->params[m->embed].offset + (size_t)m->cfg.pad_token_id * m->cfg.hidden_size, 0,
           (size_t)m->cfg.hidden_size * sizeof(float));
}

static void lora_free_blocks(Lora *L) {
    free(L->mod); free(L->by_param); free(L->w); free(L->g); free(L->m); free(L->v);
    free(L->tA); free(L->tB); free(L->trainable); free(L->targets);
    memset(L, 0, sizeof *L);
}

void model_free(Model *m) {
    if (!m) return;
    lora_free_blocks(&m->lora);
    if (m->infer) { tape_free(m->infer); free(m->infer); }
    model_decode_unpack(m);
    free(m->params); free(m->w); free(m->g); free(m->m); free(m->v);
    free(m->t); free(m->vl); free(m->tl);
    free(m);
}

int model_find_param(const Model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

size_t model_num_params(const Model *m) { return m->n_floats; }

size_t model_num_trainable(const Model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_params; i++) if (m->params[i].trainable) n += m->params[i].n;
    for (int i = 0; i < m->lora.n; i++)
        if (m->lora.trainable[i]) n += (size_t)m->lora.r * (m->lora.mod[i].in + m->lora.mod[i].out);
    return n;
}

Model *model_clone(const Model *src) {
    Model *m = model_new(&src->cfg);
    memcpy(m->w, src->w, m->n_floats * sizeof(float));
    if (src->lora.attached) {
        int *ids = xmalloc((size_t)src->lora.n * sizeof *ids);
        for (int i = 0; i < src->lora.n; i++) ids[i] = src->lora.mod[i].param;
        lora_attach_modules(m, src->lora.r, src->lora.alpha, src->lora.dropout, ids, src->lora.n);
        free(ids);
        memcpy(m->lora.w, src->lora.w, m->lora.n_floats * sizeof(float));
        free(m->lora.targets);
        m->lora.targets = src->lora.targets ? xstrdup(src->lora.targets) : NULL;
    }
    return m;
}

void model_copy_weights(Model *dst, const Model *src) {
    CHECK(dst->n_floats == src->n_floats && dst->lora.n_floats == src->lora.n_floats);
    memcpy(dst->w, src->w, dst->n_floats * sizeof(float));
    if (src->lora.attached) memcpy(dst->lora.w, src->lora.w, dst->lora.n_floats * sizeof(float));
}

/* ============================================================================
 * Batches */

void batch_init(Batch *b, int cap_B, int cap_T, int pad_id) {
    CHECK(cap_B > 0 && cap_T > 0);
    memset(b, 0, sizeof *b);
    b->cap_B = cap_B; b->cap_T = cap_T; b->pad_id = pad_id;
    b->ids = xmalloc((size_t)cap_B * cap_T * sizeof *b->ids);
    b->targets = xmalloc((size_t)cap_B * cap_T * sizeof *b->targets);
    b->len = xcalloc((size_t)cap_B, sizeof *b->len);
    b->pixels = xcalloc((size_t)cap_B, sizeof *b->pixels);
    for (size_t i = 0; i < (size_t)cap_B * cap_T; i++) { b->ids[i] = pad_id; b->targets[i] = -1; }
}

void batch_free(Batch *b) {
    free(b->ids); free(b->targets); free(b->len); free(b->pixels);
    memset(b, 0, sizeof *b);
}

void batch_clear(Batch *b) {
    int pad = b->pad_id;
    for (int r = 0; r < b->B; r++) {
        for (int t = 0; t < b->cap_T; t++) { b->ids[(size_t)r * b->cap_T + t] = pad; b->targets[(size_t)r * b->cap_T + t] = -1; }
        b->len[r] = 0; b->pixels[r] = NULL;
    }
    b->B = b->T = 0;
}

int batch_add(Batch *b, const int *ids, int n, int answer_start, const float *pixels) {
    CHECKF(b->B < b->cap_B, "batch_add: batch full (%d rows)", b->cap_B);
    CHECKF(n >= 1 && n <= b->cap_T, "batch_add: %d tokens do not fit %d", n, b->cap_T);
    int r = b->B++;
    int *row = b->ids + (size_t)r * b->cap_T, *tg = b->targets + (size_t)r * b->cap_T;
    memcpy(row, ids, (size_t)n * sizeof *ids);
    if (answer_start < 1) answer_start = 1;       /* token 0 has no position predicting it */
    for (int t = 0; t < n; t++) tg[t] = (t + 1 < n && t + 1 >= answer_start) ? ids[t + 1] : -1;
    b->len[r] = n;
    b->pixels[r] = pixels;
    if (n > b->T) b->T = n;
    return r;
}

/* ============================================================================
 * Training forward on the tape */

/* The merged layout of a batch (host arrays in the arena). */
typedef struct Layout {
    int B, T, N;                /* N = B*T merged positions */
    int *len;                   /* [B] merged lengths */
    int *src;                   /* [N] row of the input table [text rows; pad row; image rows] */
    int *tgt;                   /* [N] merged targets */
    uint8_t *valid, *lab;       /* [N] */
    int n_text;                 /* text rows (the pad row is n_text) */
    int *text_ids;              /* [n_text + 1] */
    int n_img;
    const float **img;          /* [n_img] pixels in image-row order */
    int n_lab;
    int *lab_idx;               /* [n_lab] labelled positions in (b, t) order */
    int *lab_tgt;               /* [n_lab] their targets */
    int *lab_rank;              /* [N] rank among labelled positions, or n_lab */
} Layout;

static void *aalloc(Tape *tp, size_t n) { return arena_alloc(&tp->arena, n ? n : 1); }

static Layout make_layout(const Model *m, Tape *tp, const Batch *bt) {
    const LlavaConfig *c = &m->cfg;
    int Np = m->n_patches, img_id = c->image_token_index;
    Layout L;
    memset(&L, 0, sizeof L);
    CHECKF(bt->B > 0, "model_forward: empty batch");
    L.B = bt->B;
    L.len = aalloc(tp, (size_t)L.B * sizeof(int));
    /* pass 1: merged lengths, row counts */
    for (int b = 0; b < L.B; b++) {
        const int *row = bt->ids + (size_t)b * bt->cap_T;
        int n_im = 0;
        for (int t = 0; t < bt->len[b]; t++) {
            CHECKF(row[t] >= 0 && row[t] < c->vocab_size, "batch row %d: id %d outside the vocabulary", b, row[t]);
            if (row[t] == img_id) n_im++;
            else L.n_text++;
        }
        CHECKF(n_im <= 1, "batch row %d has %d image tokens (at most one)", b, n_im);
        CHECKF((n_im == 1) == (bt->pixels[b] != NULL), "batch row %d: image token and pixels disagree", b);
        L.n_img += n_im;
        L.len[b] = bt->len[b] + (n_im ? Np - 1 : 0);
        if (L.len[b] > L.T) L.T = L.len[b];
    }
    if (L.T == 0) L.T = 1;
    L.N = L.B * L.T;
    L.src = aalloc(tp, (size_t)L.N * sizeof(int));
    L.tgt = aalloc(tp, (size_t)L.N * sizeof(int));
    L.valid = aalloc(tp, (size_t)L.N);
    L.lab = aalloc(tp, (size_t)L.N);
    L.text_ids = aalloc(tp, (size_t)(L.n_text + 1) * sizeof(int));
    L.img = aalloc(tp, (size_t)(L.n_img ? L.n_img : 1) * sizeof *L.img);
    L.lab_rank = aalloc(tp, (size_t)L.N * sizeof(int));
    /* pass 2: fill */
    int nt = 0, ni = 0;
    for (int b = 0; b < L.B; b++) {
        const int *row = bt->ids + (size_t)b * bt->cap_T, *tg = bt->targets + (size_t)b * bt->cap_T;
        int pos = b * L.T;
        for (int t = 0; t < bt->len[b]; t++) {
            int target = tg[t];
            CHECKF(target >= -1 && target < c->vocab_size, "batch row %d: target %d outside the vocabulary", b, target);
            if (target == img_id) target = -1;         /* HF: image positions carry no label */
            if (row[t] == img_id) {
                int base = L.n_text + 1 + ni * Np;     /* image rows come after the pad row */
                L.img[ni++] = bt->pixels[b];
                for (int j = 0; j < Np; j++, pos++) {
                    L.src[pos] = base + j;
                    L.tgt[pos] = j == Np - 1 ? target : -1;
                }
            } else {
                L.text_ids[nt] = row[t];
                L.src[pos] = nt++;
                L.tgt[pos++] = target;
            }
        }
        for (; pos < (b + 1) * L.T; pos++) { L.src[pos] = L.n_text; L.tgt[pos] = -1; }
    }
    L.text_ids[L.n_text] = c->pad_token_id;
    for (int i = 0; i < L.N; i++) {
        int b = i / L.T, t = i % L.T;
        L.valid[i] = t < L.len[b];
        L.lab[i] = L.tgt[i] >= 0;
        L.n_lab += L.lab[i];
    }
    L.lab_idx = aalloc(tp, (size_t)(L.n_lab ? L.n_lab : 1) * sizeof(int));
    L.lab_tgt = aalloc(tp, (size_t)(L.n_lab ? L.n_lab : 1) * sizeof(int));
    int k = 0;
    for (int i = 0; i < L.N; i++) {
        if (L.lab[i]) { L.lab_idx[k] = i; L.lab_tgt[k] = L.tgt[i]; L.lab_rank[i] = k++; }
        else L.lab_rank[i] = L.n_lab;
    }
    return L;
}

/* A linear layer with its LoRA branch when the weight has an adapter:
 * y = x W^T (+ b) + scale * (dropout(x) A^T) B^T */
static Tensor *lin(Model *m, Tape *tp, Tensor *x, int wi, int bi, Rng *rng) {
    Tensor *y = op_linear(tp, x, &m->t[wi], bi >= 0 ? &m->t[bi] : NULL);
    int a = m->lora.attached ? m->lora.by_param[wi] : -1;
    if (a < 0) return y;
    Tensor *xd = x;
    if (rng && m->lora.dropout > 0.0f && tp->recording) {
        /* inverted dropout as nn.Dropout: keep with prob 1-p, scale by 1/(1-p) */
        Tensor *mask = tensor_new(tp, x->ndim, x->shape, 0);
        float keep = 1.0f - m->lora.dropout, inv = 1.0f / keep;
        for (size_t i = 0; i < mask->n; i++) mask->data[i] = rng_uniform(rng) < keep ? inv : 0.0f;
        xd = op_mul(tp, x, mask);
    }
    /* y + scale (xd A^T) B^T in one op (the roundings of two op_linear and op_add_scaled) */
    return op_lora(tp, y, xd, &m->lora.tA[a], &m->lora.tB[a], m->lora.scale);
}

/* CLIP vision tower + projector: pixels of n images -> [n * N_p, D] image features. */
static Tensor *image_features(Model *m, Tape *tp, const float *const *pix, int n, Rng *rng) {
    const LlavaConfig *c = &m->cfg;
    int Np = m->n_patches, P = c->patch_size, S = c->image_size, g = S / P, C = c->num_channels;
    int Dv = c->v_hidden_size, Hv = c->v_num_attention_heads, hdv = Dv / Hv, cpp = C * P * P;
    int T1 = Np + 1;
    /* patchify: patch (py, px) -> vector in conv weight order (c, i, j) */
    int ps[2] = {n * Np, cpp};
    Tensor *xp = tensor_new(tp, 2, ps, 0);                 /* [n*Np, C*P*P] */
    for (int im = 0; im < n; im++)
        for (int py = 0; py < g; py++)
            for (int px = 0; px < g; px++) {
                float *dst = xp->data + ((size_t)im * Np + py * g + px) * cpp;
                for (int ch = 0; ch < C; ch++)
                    for (int i = 0; i < P; i++)
                        memcpy(dst + (ch * P + i) * P, pix[im] + ((size_t)ch * S + py * P + i) * S + px * P,
                               (size_t)P * sizeof(float));
            }
    int ws[2] = {Dv, cpp}, cs[2] = {1, Dv};
    Tensor *Wp = op_reshape(tp, &m->t[m->v_patch], 2, ws);  /* conv weight as [Dv, C*P*P] */
    Tensor *pe = op_linear(tp, xp, Wp, NULL);               /* [n*Np, Dv] */
    Tensor *cat = op_concat_rows(tp, pe, op_reshape(tp, &m->t[m->v_class], 2, cs)); /* [n*Np + 1, Dv] */
    int *idx = aalloc(tp, (size_t)n * T1 * sizeof(int));
    for (int im = 0; im < n; im++) {
        idx[im * T1] = n * Np;                              /* the class row */
        for (int j = 0; j < Np; j++) idx[im * T1 + 1 + j] = im * Np + j;
    }
    Tensor *x = op_gather_rows(tp, cat, idx, n * T1);      /* [n*(Np+1), Dv] */
    x = op_add_bcast(tp, x, &m->t[m->v_pos]);               /* + position_embedding [Np+1, Dv] */
    x = op_layernorm(tp, x, &m->t[m->v_pre_w], &m->t[m->v_pre_b], (float)c->layer_norm_eps);
    int used = config_vision_layers_used(c);
    int qs[4] = {n, T1, Hv, hdv}, fs[2] = {n * T1, Dv};
    for (int l = 0; l < used; l++) {
        const VisionLayer *L = &m->vl[l];
        Tensor *h = op_layernorm(tp, x, &m->t[L->ln1_w], &m->t[L->ln1_b], (float)c->layer_norm_eps);
        Tensor *q = op_reshape(tp, lin(m, tp, h, L->q_w, L->q_b, rng), 4, qs);
        Tensor *k = op_reshape(tp, lin(m, tp, h, L->k_w, L->k_b, rng), 4, qs);
        Tensor *v = op_reshape(tp, lin(m, tp, h, L->v_w, L->v_b, rng), 4, qs);
        Tensor *a = op_attention(tp, q, k, v, 0, NULL, 1.0f / sqrtf((float)hdv)); /* bidirectional */
        x = op_add(tp, x, lin(m, tp, op_reshape(tp, a, 2, fs), L->o_w, L->o_b, rng));
        h = op_layernorm(tp, x, &m->t[L->ln2_w], &m->t[L->ln2_b], (float)c->layer_norm_eps);
        h = lin(m, tp, h, L->fc1_w, L->fc1_b, rng);
        h = c->v_quick_gelu ? op_quick_gelu(tp, h) : op_gelu(tp, h);
        x = op_add(tp, x, lin(m, tp, h, L->fc2_w, L->fc2_b, rng));
    }
    /* "default" feature strategy: drop CLS */
    int *pidx = aalloc(tp, (size_t)n * Np * sizeof(int));
    for (int im = 0; im < n; im++)
        for (int j = 0; j < Np; j++) pidx[im * Np + j] = im * T1 + 1 + j;
    Tensor *f = op_gather_rows(tp, x, pidx, n * Np);        /* [n*Np, Dv] */
    f = lin(m, tp, f, m->p1_w, m->p1_b, rng);               /* [n*Np, D] */
    f = op_gelu(tp, f);
    return lin(m, tp, f, m->p2_w, m->p2_b, rng);
}

/* Where key d / value row j of kv head g, row b, layer l live (see KvCache). */
static inline size_t kv_head(const KvCache *kv, int l, int b, int g) {
    return (((size_t)l * kv->B + b) * kv->Hkv + g) * (size_t)kv->hd * kv->cap;
}

/* Copies rotated keys / values [B, T, Hkv, hd] of layer l into the cache (keys transposed). */
static void kv_store(KvCache *kv, int l, const Layout *L, const Tensor *k, const Tensor *v) {
    CHECKF(L->B <= kv->B && L->T <= kv->cap, "KV cache too small (%d x %d for %d x %d)", kv->B, kv->cap, L->B, L->T);
    int hd = kv->hd, Hkv = kv->Hkv;
    for (int b = 0; b < L->B; b++) {
        for (int g = 0; g < Hkv; g++) {
            float *kt = kv->k + kv_head(kv, l, b, g), *vv = kv->v + kv_head(kv, l, b, g);
            for (int t = 0; t < L->len[b]; t++) {
                const float *ks = k->data + (((size_t)b * L->T + t) * Hkv + g) * hd;
                const float *vs = v->data + (((size_t)b * L->T + t) * Hkv + g) * hd;
                for (int d = 0; d < hd; d++) kt[(size_t)d * kv->cap + t] = ks[d];
                memcpy(vv + (size_t)t * hd, vs, (size_t)hd * sizeof(float));
            }
        }
        kv->len[b] = L->len[b];
    }
}

ForwardOut model_forward(Model *m, Tape *tp, const Batch *bt, const ForwardOpts *opts) {
    static const ForwardOpts none = {0};
    if (!opts) opts = &none;
    const LlavaConfig *c = &m->cfg;
    int saved_rec = tp->recording;
    if (opts->no_grad) tp->recording = 0;
    Rng *rng = opts->rng;
    Layout L = make_layout(m, tp, bt);
    int B = L.B, T = L.T, N = L.N, D = c->hidden_size;
    int H = c->num_attention_heads, Hkv = c->num_key_value_heads, hd = D / H;
    ForwardOut out;
    memset(&out, 0, sizeof out);
    out.B = B; out.T = T;
    out.len = L.len; out.targets = L.tgt; out.valid = L.valid; out.labelled = L.lab;
    out.n_labels = aalloc(tp, (size_t)B * sizeof(int));
    for (int b = 0; b < B; b++) {
        out.n_labels[b] = 0;
        for (int t = 0; t < T; t++) out.n_labels[b] += L.lab[b * T + t];
    }
    out.n_labels_total = L.n_lab;

    /* input embeddings in the merged layout: [N, D] */
    Tensor *x;
    if (L.n_img == 0) {
        int *ids = aalloc(tp, (size_t)N * sizeof(int));
        for (int i = 0; i < N; i++) ids[i] = L.text_ids[L.src[i]];
        x = op_embedding(tp, &m->t[m->embed], ids, N, 0, NULL);
    } else {
        Tensor *emb = op_embedding(tp, &m->t[m->embed], L.text_ids, L.n_text + 1, 0, NULL);
        Tensor *feat = image_features(m, tp, L.img, L.n_img, rng);
        x = op_gather_rows(tp, op_concat_rows(tp, emb, feat), L.src, N);
    }

    int qs[4] = {B, T, H, hd}, ks[4] = {B, T, Hkv, hd}, fs[2] = {N, D};
    float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const TextLayer *Ly = &m->tl[l];
        Tensor *h = op_rmsnorm(tp, x, &m->t[Ly->ln_in], (float)c->rms_norm_eps);
        Tensor *q = op_rope(tp, op_reshape(tp, lin(m, tp, h, Ly->q, -1, rng), 4, qs), (float)c->rope_theta, 0);
        Tensor *k = op_rope(tp, op_reshape(tp, lin(m, tp, h, Ly->k, -1, rng), 4, ks), (float)c->rope_theta, 0);
        Tensor *v = op_reshape(tp, lin(m, tp, h, Ly->v, -1, rng), 4, ks);
        if (opts->kv) kv_store(opts->kv, l, &L, k, v);
        Tensor *a = op_attention(tp, q, k, v, 1, L.valid, scale);          /* [B, T, H, hd] */
        x = op_add(tp, x, lin(m, tp, op_reshape(tp, a, 2, fs), Ly->o, -1, rng));
        h = op_rmsnorm(tp, x, &m->t[Ly->ln_post], (float)c->rms_norm_eps);
        Tensor *s = op_swiglu(tp, lin(m, tp, h, Ly->gate, -1, rng), lin(m, tp, h, Ly->up, -1, rng));
        x = op_add(tp, x, lin(m, tp, s, Ly->down, -1, rng));              /* [N, D] */
        if (opts->want_hidden && l == opts->hidden_layer) {
            out.hidden = x;
            if (opts->hidden_only) { tp->recording = saved_rec; return out; }
        }
    }
    CHECKF(!opts->want_hidden || out.hidden, "hidden_layer %d outside [0, %d)", opts->hidden_layer, c->num_hidden_layers);

    /* head: full logits when asked (KL), else only at labelled positions */
    int ls[2] = {B, T};
    Tensor *logp;
    if (opts->logits == 1 || L.n_lab == 0) {
        Tensor *logits = lin(m, tp, op_rmsnorm(tp, x, &m->t[m->norm], (float)c->rms_norm_eps), m->lm_head, -1, rng);
        if (opts->logits == 1) out.logits = logits;                      /* [N, V] */
        logp = op_token_logprob(tp, logits, L.tgt);                      /* [N] */
        out.loss = op_scale(tp, op_sum(tp, logp), L.n_lab ? -1.0f / (float)L.n_lab : 0.0f);
        logp = op_reshape(tp, logp, 2, ls);
    } else {
        Tensor *xl = op_gather_rows(tp, x, L.lab_idx, L.n_lab);          /* [n_lab, D] */
        Tensor *logits = lin(m, tp, op_rmsnorm(tp, xl, &m->t[m->norm], (float)c->rms_norm_eps), m->lm_head, -1, rng);
        if (opts->logits == 2) out.logits = logits;                      /* [n_lab, V] */
        Tensor *lp = op_token_logprob(tp, logits, L.lab_tgt);            /* [n_lab] */
        out.loss = op_scale(tp, op_sum(tp, lp), -1.0f / (float)L.n_lab);
        /* scatter back to [B, T]: rows of [lp; 0] picked by rank */
        int s1[2] = {L.n_lab, 1}, s0[2] = {1, 1};
        float zero = 0.0f;
        Tensor *col = op_concat_rows(tp, op_reshape(tp, lp, 2, s1), tensor_const(tp, 2, s0, &zero));
        logp = op_reshape(tp, op_gather_rows(tp, col, L.lab_rank, N), 2, ls);
    }
    out.logp = logp;                                                    /* [B, T] */
    out.seq_logp = op_sum_rows(tp, logp);                               /* [B] */
    tp->recording = saved_rec;
    return out;
}

float *model_ref_logprobs(Model *ref, Tape *tp, const Batch *bt, float *seq_logp) {
    ForwardOpts o = {0};
    o.logits = 1; o.no_grad = 1;
    ForwardOut f = model_forward(ref, tp, bt, &o);
    int V = ref->cfg.vocab_size;
    float *rows = f.logits->data;
    for (int r = 0; r < f.B * f.T; r++) {
        float *z = rows + (size_t)r * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++) if (z[v] > mx) mx = z[v];
        double s = 0.0;
        for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
        float lse = mx + (float)log(s);
        for (int v = 0; v < V; v++) z[v] -= lse;
    }
    if (seq_logp) for (int b = 0; b < f.B; b++) seq_logp[b] = f.seq_logp->data[b];
    return rows;
}

/* ============================================================================
 * LoRA */

/* PEFT module name: the weight's name without ".weight". */
static void module_of(const ParamInfo *p, char *buf, size_t n) {
    size_t k = strlen(p->name);
    CHECK(k > 7 && strcmp(p->name + k - 7, ".weight") == 0);
    snprintf(buf, n, "%.*s", (int)(k - 7), p->name);
}

void lora_module_name(const Model *m, int i, char *buf, size_t n) {
    CHECK(i >= 0 && i < m->lora.n);
    module_of(&m->params[m->lora.mod[i].param], buf, n);
}

int lora_select(const Model *m, const char *spec, int *ids, char *bad, size_t badn) {
    uint8_t *pick = xcalloc((size_t)m->n_params, 1);
    char *s = xstrdup(spec ? spec : "llm"), *save = NULL;
    for (char *it = strtok_r(s, ", ", &save); it; it = strtok_r(NULL, ", ", &save)) {
        int hits = 0;
        for (int i = 0; i < m->n_params; i++) {
            const ParamInfo *p = &m->params[i];
            if (!p->linear) continue;
            char mod[128];
            module_of(p, mod, sizeof mod);
            int hit;
            if (strcmp(it, "llm") == 0)
                hit = strncmp(mod, "language_model.model.layers.", 28) == 0;
            else if (strcmp(it, "projector") == 0)
                hit = strncmp(mod, "multi_modal_projector.", 22) == 0;
            else if (strcmp(it, "vision") == 0)
                hit = strncmp(mod, "vision_tower.", 13) == 0;
            else {
                /* PEFT's rule for a list entry: the whole name, or its last components */
                size_t lm = strlen(mod), li = strlen(it);
                hit = strcmp(mod, it) == 0 || (lm > li && mod[lm - li - 1] == '.' && strcmp(mod + lm - li, it) == 0);
            }
            if (hit) { pick[i] = 1; hits++; }
        }
        if (!hits) {
            if (bad && badn) snprintf(bad, badn, "%s", it);
            free(s); free(pick);
            return -1;
        }
    }
    int n = 0;
    for (int i = 0; i < m->n_params; i++) if (pick[i]) ids[n++] = i;
    free(s); free(pick);
    return n;
}

void lora_attach_modules(Model *m, int r, float alpha, float dropout, const int *ids, int n) {
    CHECKF(!m->lora.attached, "lora_attach: adapters already attached (merge or detach first)");
    CHECK(r >= 1 && n >= 1);
    Lora *L = &m->lora;
    L->attached = 1; L->r = r; L->alpha = alpha; L->dropout = dropout;
    L->scale = alpha / (float)r;                          /* PEFT scaling (use_rslora false) */
    L->n = n;
    L->mod = xcalloc((size_t)n, sizeof *L->mod);
    L->by_param = xmalloc((size_t)m->n_params * sizeof *L->by_param);
    for (int i = 0; i < m->n_params; i++) L->by_param[i] = -1;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const ParamInfo *p = &m->params[ids[i]];
        CHECKF(p->linear && L->by_param[ids[i]] < 0, "lora: %s is not a free linear weight", p->name);
        LoraModule *md = &L->mod[i];
        md->param = ids[i]; md->out = p->shape[0]; md->in = p->shape[1];
        md->a_off = off; off += (size_t)r * md->in;
        md->b_off = off; off += (size_t)md->out * r;
        L->by_param[ids[i]] = i;
    }
    L->n_floats = off;
    L->w = xcalloc(off, sizeof(float));
    L->tA = xcalloc((size_t)n, sizeof *L->tA);
    L->tB = xcalloc((size_t)n, sizeof *L->tB);
    L->trainable = xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        LoraModule *md = &L->mod[i];
        int as[2] = {r, md->in}, bs[2] = {md->out, r};
        L->tA[i] = tensor_wrap(L->w + md->a_off, NULL, 2, as);
        L->tB[i] = tensor_wrap(L->w + md->b_off, NULL, 2, bs);
    }
}

void lora_attach(Model *m, const LoraConfig *cfg) {
    int *ids = xmalloc((size_t)m->n_params * sizeof *ids);
    char bad[128];
    int n = lora_select(m, cfg->targets, ids, bad, sizeof bad);
    if (n < 0) die_input(NULL, "LoRA target '%s' matches no linear module", bad);
    lora_attach_modules(m, cfg->r, cfg->alpha, cfg->dropout, ids, n);
    free(ids);
    m->lora.targets = xstrdup(cfg->targets ? cfg->targets : "llm");
    /* PEFT: A ~ kaiming_uniform(a = sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)); B = 0 */
    for (int i = 0; i < m->lora.n; i++) {
        LoraModule *md = &m->lora.mod[i];
        char name[160];
        snprintf(name, sizeof name, "%s.lora_A", m->params[md->param].name);
        Rng r;
        rng_derive(&r, cfg->seed, name);
        float bound = 1.0f / sqrtf((float)md->in);
        float *A = m->lora.w + md->a_off;
        for (size_t k = 0; k < (size_t)m->lora.r * md->in; k++) A[k] = bound * (float)(2.0 * rng_uniform(&r) - 1.0);
    }
    if (m->mode == TRAIN_LORA) model_set_train(m, TRAIN_LORA, NULL);
}

void lora_merge(Model *m) {
    Lora *L = &m->lora;
    if (!L->attached) return;
    int r = L->r;
    for (int i = 0; i < L->n; i++) {
        const LoraModule *md = &L->mod[i];
        float *W = m->w + m->params[md->param].offset;
        const float *A = L->w + md->a_off, *Bm = L->w + md->b_off;
        /* W[o, j] += scale * sum_k B[o, k] A[k, j]  (PEFT: W + (B @ A) * scaling) */
        for (int o = 0; o < md->out; o++)
            for (int j = 0; j < md->in; j++) {
                float s = 0.0f;
                for (int k = 0; k < r; k++) s += Bm[(size_t)o * r + k] * A[(size_t)k * md->in + j];
                W[(size_t)o * md->in + j] += s * L->scale;
            }
    }
    lora_detach(m);
}

void lora_detach(Model *m) {
    TrainMode mode = m->mode;
    lora_free_blocks(&m->lora);
    if (mode == TRAIN_LORA) m->mode = TRAIN_NONE;
}

/* ============================================================================
 * Trainable parameters, gradients, AdamW, schedules */

static int has_prefix(const char *name, const char *prefixes) {
    if (!prefixes || !*prefixes) return 0;
    const char *p = prefixes;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && *p == ' ') { p++; n--; }
        if (n && strncmp(name, p, n) == 0) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

void model_set_train(Model *m, TrainMode mode, const char *frozen) {
    m->mode = mode;
    if (mode == TRAIN_FULL && !m->g) m->g = xcalloc(m->n_floats, sizeof(float));
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->params[i];
        p->trainable = mode == TRAIN_FULL && !has_prefix(p->name, frozen);
        m->t[i].grad = p->trainable ? m->g + p->offset : NULL;
    }
    Lora *L = &m->lora;
    if (L->attached) {
        if (mode == TRAIN_LORA && !L->g) L->g = xcalloc(L->n_floats, sizeof(float));
        for (int i = 0; i < L->n; i++) {
            L->trainable[i] = mode == TRAIN_LORA && !has_prefix(m->params[L->mod[i].param].name, frozen);
            L->tA[i].grad = L->trainable[i] ? L->g + L->mod[i].a_off : NULL;
            L->tB[i].grad = L->trainable[i] ? L->g + L->mod[i].b_off : NULL;
        }
    } else {
        CHECKF(mode != TRAIN_LORA, "model_set_train: TRAIN_LORA without adapters (lora_attach first)");
    }
    model_zero_grad(m);
}

void model_train_only(Model *m, const char *prefixes) {
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->params[i];
        if (p->trainable && !has_prefix(p->name, prefixes)) { p->trainable = 0; m->t[i].grad = NULL; }
    }
    Lora *L = &m->lora;
    for (int i = 0; L->attached && i < L->n; i++)
        if (L->trainable[i] && !has_prefix(m->params[L->mod[i].param].name, prefixes)) {
            L->trainable[i] = 0;
            L->tA[i].grad = L->tB[i].grad = NULL;
        }
}

/* The trainable float ranges (value, grad, moments), in table order, then the adapters. */
/* A trainable block: base weights (one parameter) or a LoRA A+B pair. vision: part of the
 * vision tower or the projector (their own learning-rate scale). */
typedef struct Range { float *w, *g, **m, **v; size_t off, n; int decay, vision; } Range;
static int is_vision_side(const char *name) {
    return strncmp(name, "vision_tower.", 13) == 0 || strncmp(name, "multi_modal_projector.", 22) == 0;
}
static int trainable_ranges(Model *m, Range *out) {
    int k = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].trainable)
            out[k++] = (Range){m->w, m->g, &m->m, &m->v, m->params[i].offset, m->params[i].n, m->params[i].decay,
                               is_vision_side(m->params[i].name)};
    Lora *L = &m->lora;
    for (int i = 0; L->attached && i < L->n; i++)
        if (L->trainable[i]) {
            /* A then B are adjacent: one range */
            size_t n = (size_t)L->r * (L->mod[i].in + L->mod[i].out);
            out[k++] = (Range){L->w, L->g, &L->m, &L->v, L->mod[i].a_off, n, 1, 0};
        }
    return k;
}

static Range *ranges_alloc(const Model *m) {
    return xmalloc((size_t)(m->n_params + m->lora.n + 1) * sizeof(Range));
}

/* The ranges cut into chunks of at most OPT_CHUNK floats, so that elementwise passes over
 * all trainable floats (zero-grad, clipping, AdamW) split evenly between threads in one
 * parallel loop: chunk c is range ci[c], floats [k0[c], k0[c] + kn[c]). Elementwise: any
 * split gives the same bytes. Returns the number of chunks; *total = floats in all. */
enum { OPT_CHUNK = 8192 };
typedef struct Chunks { int *ci; size_t *k0, *kn; } Chunks;
static long chunks_make(const Range *R, int n, Chunks *c, size_t *total) {
    long nc = 0;
    *total = 0;
    for (int i = 0; i < n; i++) { nc += (long)((R[i].n + OPT_CHUNK - 1) / OPT_CHUNK); *total += R[i].n; }
    c->ci = xmalloc((size_t)(nc ? nc : 1) * sizeof(int));
    c->k0 = xmalloc((size_t)(nc ? nc : 1) * sizeof(size_t));
    c->kn = xmalloc((size_t)(nc ? nc : 1) * sizeof(size_t));
    long k = 0;
    for (int i = 0; i < n; i++)
        for (size_t o = 0; o < R[i].n; o += OPT_CHUNK, k++) {
            c->ci[k] = i;
            c->k0[k] = o;
            c->kn[k] = R[i].n - o < OPT_CHUNK ? R[i].n - o : OPT_CHUNK;
        }
    return nc;
}
static void chunks_free(Chunks *c) { free(c->ci); free(c->k0); free(c->kn); }
/* Floats under which an optimizer pass stays on one thread. */
#define OPT_PAR_MIN 32768

void model_zero_grad(Model *m) {
    Range *R = ranges_alloc(m);
    int n = trainable_ranges(m, R);
    Chunks c;
    size_t total;
    long nc = chunks_make(R, n, &c, &total);
    OMP(parallel for schedule(static) if (total > OPT_PAR_MIN))
    for (long k = 0; k < nc; k++) memset(R[c.ci[k]].g + R[c.ci[k]].off + c.k0[k], 0, c.kn[k] * sizeof(float));
    chunks_free(&c);
    free(R);
}

double model_clip_grad(Model *m, double max_norm) {
    Range *R = ranges_alloc(m);
    int n = trainable_ranges(m, R);
    /* one partial sum per tensor (any thread), added in table order: deterministic.
     * The tensors, largest first, go CLIP_G at a time with their sums side by side over the
     * common length (each still one chain over its elements in order: the same bits), so
     * the latency of the dependent double adds overlaps. */
    enum { CLIP_G = 8 };
    double *part = xmalloc((size_t)(n ? n : 1) * sizeof(double)), ss = 0.0;
    int *ord = xmalloc((size_t)(n ? n : 1) * sizeof(int));
    for (int i = 0; i < n; i++) {
        int j = i;
        for (; j > 0 && R[ord[j - 1]].n < R[i].n; j--) ord[j] = ord[j - 1];
        ord[j] = i;
    }
    int ng = (n + CLIP_G - 1) / CLIP_G;
    OMP(parallel for schedule(dynamic) if (m->n_floats > 262144))
    for (int gi = 0; gi < ng; gi++) {
        int t0 = gi * CLIP_G, nt = n - t0 < CLIP_G ? n - t0 : CLIP_G;
        const float *g[CLIP_G];
        double s[CLIP_G];
        size_t common = R[ord[t0 + nt - 1]].n;  /* the smallest of the group */
        for (int t = 0; t < nt; t++) { g[t] = R[ord[t0 + t]].g + R[ord[t0 + t]].off; s[t] = 0.0; }
        if (nt < CLIP_G) common = 0;
        for (size_t k = 0; k < common; k++)
            for (int t = 0; t < CLIP_G; t++) s[t] += (double)g[t][k] * g[t][k];
        for (int t = 0; t < nt; t++) {
            for (size_t k = common; k < R[ord[t0 + t]].n; k++) s[t] += (double)g[t][k] * g[t][k];
            part[ord[t0 + t]] = s[t];
        }
    }
    free(ord);
    for (int i = 0; i < n; i++) ss += part[i];
    free(part);
    double norm = sqrt(ss);
    if (max_norm > 0.0 && norm > max_norm) {
        float f = (float)(max_norm / (norm + 1e-6));
        Chunks c;
        size_t total;
        long nc = chunks_make(R, n, &c, &total);
        OMP(parallel for schedule(static) if (total > OPT_PAR_MIN))
        for (long k = 0; k < nc; k++) {
            float *g = R[c.ci[k]].g + R[c.ci[k]].off + c.k0[k];
            for (size_t j = 0; j < c.kn[k]; j++) g[j] *= f;
        }
        chunks_free(&c);
    }
    free(R);
    return norm;
}

AdamW adamw_default(void) {
    AdamW o = {0.9f, 0.999f, 1e-8f, 0.01f, 1.0f};
    return o;
}

void model_reset_optimizer(Model *m) {
    free(m->m); free(m->v); m->m = m->v = NULL;
    free(m->lora.m); free(m->lora.v); m->lora.m = m->lora.v = NULL;
    m->opt_step = 0;
}

/* PyTorch AdamW on n elements: p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps). */
static void adamw_span(float *restrict w, const float *restrict g, float *restrict mm, float *restrict vv,
                       size_t n, float decay, float b1, float b2, float step_size, float bc2_sqrt, float eps) {
    for (size_t k = 0; k < n; k++) {
        w[k] *= decay;
        mm[k] = b1 * mm[k] + (1.0f - b1) * g[k];
        vv[k] = b2 * vv[k] + (1.0f - b2) * g[k] * g[k];
        w[k] -= step_size * mm[k] / (sqrtf(vv[k]) / bc2_sqrt + eps);
    }
}

void adamw_array(float *w, const float *g, float *mm, float *vv, size_t n, const AdamW *o, float lr, long t) {
    double bc1 = 1.0 - pow(o->beta1, (double)t), bc2 = 1.0 - pow(o->beta2, (double)t);
    adamw_span(w, g, mm, vv, n, 1.0f - lr * o->weight_decay, o->beta1, o->beta2, (float)(lr / bc1),
               (float)sqrt(bc2), o->eps);
}

void model_adamw_step(Model *m, const AdamW *o, float lr) {
    Range *R = ranges_alloc(m);
    int n = trainable_ranges(m, R);
    m->opt_step++;
    double bc1 = 1.0 - pow(o->beta1, (double)m->opt_step), bc2 = 1.0 - pow(o->beta2, (double)m->opt_step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    for (int i = 0; i < n; i++) {
        Range *r = &R[i];
        size_t total = r->w == m->w ? m->n_floats : m->lora.n_floats;
        if (!*r->m) { *r->m = xcalloc(total, sizeof(float)); *r->v = xcalloc(total, sizeof(float)); }
    }
    /* all ranges' chunks in one loop: elementwise, any split gives the same bytes */
    Chunks c;
    size_t total;
    long nc = chunks_make(R, n, &c, &total);
    OMP(parallel for schedule(static) if (total > OPT_PAR_MIN))
    for (long k = 0; k < nc; k++) {
        const Range *r = &R[c.ci[k]];
        size_t o0 = r->off + c.k0[k];
        float rlr = r->vision ? lr * o->vision_lr_scale : lr;
        float decay = r->decay ? 1.0f - rlr * o->weight_decay : 1.0f;
        float ss = r->vision ? step_size * o->vision_lr_scale : step_size;
        adamw_span(r->w + o0, r->g + o0, *r->m + o0, *r->v + o0, c.kn[k], decay, o->beta1, o->beta2, ss,
                   bc2_sqrt, o->eps);
    }
    chunks_free(&c);
    free(R);
}

float lr_schedule(LrKind kind, long step, long total, long warmup, float peak) {
    if (step < warmup) return peak * (float)step / (float)(warmup > 1 ? warmup : 1);
    if (kind == LR_CONSTANT) return peak;
    double span = (double)(total - warmup > 1 ? total - warmup : 1);
    double progress = (double)(step - warmup) / span;
    if (kind == LR_LINEAR) return (float)(peak * fmax(0.0, 1.0 - progress));
    return (float)(peak * fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress))));
}

LrKind lr_kind_parse(const char *s) {
    if (strcmp(s, "constant") == 0) return LR_CONSTANT;
    if (strcmp(s, "linear") == 0) return LR_LINEAR;
    if (strcmp(s, "cosine") == 0) return LR_COSINE;
    die_input(NULL, "unknown learning-rate schedule '%s' (constant, linear, cosine)", s);
}

/* ============================================================================
 * Inference: KV cache, prefill, one-token decode, generate, score */

void kv_init(KvCache *kv, const LlavaConfig *c, int B, int cap) {
    memset(kv, 0, sizeof *kv);
    kv->B = B; kv->cap = cap; kv->L = c->num_hidden_layers;
    kv->Hkv = c->num_key_value_heads;
    kv->hd = c->hidden_size / c->num_attention_heads;
    kv->kvd = kv->Hkv * kv->hd;
    size_t n = (size_t)kv->L * B * cap * kv->kvd;
    kv->k = xmalloc(n * sizeof(float));
    kv->v = xmalloc(n * sizeof(float));
    kv->len = xcalloc((size_t)B, sizeof(int));
}

void kv_free(KvCache *kv) {
    free(kv->k); free(kv->v); free(kv->len);
    memset(kv, 0, sizeof *kv);
}

static Tape *infer_tape(Model *m) {
    if (!m->infer) {
        m->infer = xmalloc(sizeof *m->infer);
        tape_init(m->infer, 16 << 20);
        m->infer->recording = 0;
    }
    tape_reset(m->infer);
    return m->infer;
}

void model_prefill(Model *m, KvCache *kv, const Batch *bt, float *logits) {
    Tape *tp = infer_tape(m);
    /* a dummy target on each row's last text position makes the head compute exactly the
     * rows we need (the last merged position of each prompt) */
    Batch b2 = *bt;
    int *tg = xmalloc((size_t)bt->cap_B * bt->cap_T * sizeof *tg);
    for (int r = 0; r < bt->B; r++)
        for (int t = 0; t < bt->cap_T; t++) tg[(size_t)r * bt->cap_T + t] = t == bt->len[r] - 1 ? 0 : -1;
    b2.targets = tg;
    ForwardOpts o = {0};
    o.logits = 2; o.no_grad = 1; o.kv = kv;
    ForwardOut f = model_forward(m, tp, &b2, &o);
    CHECK(f.n_labels_total == bt->B);
    memcpy(logits, f.logits->data, (size_t)bt->B * m->cfg.vocab_size * sizeof(float));
    free(tg);
    tape_reset(tp);
}

/* Scratch of one decode step: n rows. */
typedef struct DecodeBuf {
    float *x, *h, *q, *k, *v, *att, *o, *g, *u, *lz, *lo;
} DecodeBuf;

/* out [n, N] = x W^T (+ b) (+ scale B(A x)): the same arithmetic as lin() on the tape. */
void model_decode_unpack(Model *m) {
    free(m->dpack); free(m->dpack_off);
    m->dpack = NULL; m->dpack_off = NULL;
}

void model_decode_pack(Model *m) {
    model_decode_unpack(m);
    m->dpack_off = xmalloc((size_t)m->n_params * sizeof *m->dpack_off);
    for (int i = 0; i < m->n_params; i++) m->dpack_off[i] = SIZE_MAX;
    /* the linears lin_infer multiplies by: every layer's q k v o gate up down, lm_head */
    int n = 0, *ids = xmalloc(((size_t)7 * m->cfg.num_hidden_layers + 1) * sizeof *ids);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        const TextLayer *Ly = &m->tl[l];
        int li[7] = {Ly->q, Ly->k, Ly->v, Ly->o, Ly->gate, Ly->up, Ly->down};
        for (int j = 0; j < 7; j++) ids[n++] = li[j];
    }
    ids[n++] = m->lm_head;
    size_t total = 0;
    for (int j = 0; j < n; j++) {
        const ParamInfo *p = &m->params[ids[j]];
        if (m->dpack_off[ids[j]] != SIZE_MAX) continue;
        m->dpack_off[ids[j]] = total;
        total += kern_packed_floats(p->shape[0], p->shape[1]);
    }
    m->dpack = xmalloc((total + 1) * sizeof *m->dpack);
    for (int j = 0; j < n; j++) {
        const ParamInfo *p = &m->params[ids[j]];
        kern_pack_nt(m->dpack + m->dpack_off[ids[j]], m->w + p->offset, p->shape[0], p->shape[1]);
    }
    free(ids);
}

static void lin_infer(const Model *m, float *out, const float *x, int n, int wi, int bi, DecodeBuf *s) {
    const ParamInfo *p = &m->params[wi];
    int N = p->shape[0], K = p->shape[1];
    const float *W = m->w + p->offset, *b = bi >= 0 ? m->w + m->params[bi].offset : NULL;
    if (m->dpack && m->dpack_off[wi] != SIZE_MAX) kern_matmul_nt_packed(out, x, W, m->dpack + m->dpack_off[wi], b, n, N, K);
    else kern_matmul_nt(out, x, W, b, n, N, K);
    int a = m->lora.attached ? m->lora.by_param[wi] : -1;
    if (a < 0) return;
    const LoraModule *md = &m->lora.mod[a];
    int r = m->lora.r;
    kern_matmul_nt(s->lz, x, m->lora.w + md->a_off, NULL, n, r, K);        /* [n, r] */
    kern_matmul_nt(s->lo, s->lz, m->lora.w + md->b_off, NULL, n, N, r);    /* [n, N] */
    for (size_t i = 0; i < (size_t)n * N; i++) out[i] = out[i] + m->lora.scale * s->lo[i];
}

/* y = w * (x * rstd), rstd from a double sum of squares: as op_rmsnorm. */
static void rmsnorm_rows(float *y, const float *x, const float *w, int n, int D, float eps) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * D;
        double s2 = 0;
        for (int i = 0; i < D; i++) s2 += (double)xr[i] * xr[i];
        float rstd = (float)(1.0 / sqrt(s2 / D + eps));
        for (int i = 0; i < D; i++) y[(size_t)r * D + i] = w[i] * (xr[i] * rstd);
    }
}

/* RoPE's cos and sin of one position, cs[0..h2) and cs[h2..hd): as op_rope (float
 * inv_freq and angle). */
static void rope_table(float *cs, int hd, int pos, float theta) {
    int h2 = hd / 2;
    for (int i = 0; i < h2; i++) {
        float inv_freq = (float)(1.0 / pow((double)theta, (double)(2 * i) / hd));
        float ang = (float)pos * inv_freq;
        cs[i] = (float)cos((double)ang);
        cs[h2 + i] = (float)sin((double)ang);
    }
}

/* RoPE of one position (its rope_table) on H heads of hd. */
static void rope_vec(float *x, int H, int hd, const float *cs) {
    int h2 = hd / 2;
    for (int i = 0; i < h2; i++) {
        float c = cs[i], s = cs[h2 + i];
        for (int h = 0; h < H; h++) {
            float *v = x + (size_t)h * hd;
            float x1 = v[i], x2 = v[h2 + i];
            v[i] = x1 * c - x2 * s;
            v[h2 + i] = x2 * c + x1 * s;
        }
    }
}

static float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }


void model_decode_step(Model *m, KvCache *kv, const int *rows, const int *tokens, int n, float *logits) {
    const LlavaConfig *c = &m->cfg;
    int D = c->hidden_size, I = c->intermediate_size, H = c->num_attention_heads;
    int Hkv = c->num_key_value_heads, hd = D / H, kvd = kv->kvd, rep = H / Hkv, V = c->vocab_size;
    int rmax = m->lora.attached ? m->lora.r : 1;
    int wide = I > V ? I : V;
    if (wide < D) wide = D;
    DecodeBuf s;
    float *buf = xmalloc(((size_t)n * (5 * D + 2 * kvd + 2 * I + rmax + wide)) * sizeof(float));
    float *p = buf;
    s.x = p; p += (size_t)n * D; s.h = p; p += (size_t)n * D; s.q = p; p += (size_t)n * D;
    s.att = p; p += (size_t)n * D; s.o = p; p += (size_t)n * D;
    s.k = p; p += (size_t)n * kvd; s.v = p; p += (size_t)n * kvd;
    s.g = p; p += (size_t)n * I; s.u = p; p += (size_t)n * I;
    s.lz = p; p += (size_t)n * rmax; s.lo = p;
    float *scores = xmalloc((size_t)n * H * kv->cap * sizeof(float));   /* [n*H, cap] */
    for (int i = 0; i < n; i++) {
        CHECKF(rows[i] >= 0 && rows[i] < kv->B && kv->len[rows[i]] < kv->cap, "decode: cache row %d full", rows[i]);
        CHECKF(tokens[i] >= 0 && tokens[i] < V, "decode: token %d outside the vocabulary", tokens[i]);
        memcpy(s.x + (size_t)i * D, m->w + m->params[m->embed].offset + (size_t)tokens[i] * D, (size_t)D * sizeof(float));
    }
    float scale = 1.0f / sqrtf((float)hd);
    /* every layer rotates row i's query and key by the same position */
    float *rope = xmalloc((size_t)n * hd * sizeof *rope);
    for (int i = 0; i < n; i++) rope_table(rope + (size_t)i * hd, hd, kv->len[rows[i]], (float)c->rope_theta);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const TextLayer *Ly = &m->tl[l];
        rmsnorm_rows(s.h, s.x, m->w + m->params[Ly->ln_in].offset, n, D, (float)c->rms_norm_eps);
        lin_infer(m, s.q, s.h, n, Ly->q, -1, &s);
        lin_infer(m, s.k, s.h, n, Ly->k, -1, &s);
        lin_infer(m, s.v, s.h, n, Ly->v, -1, &s);
        for (int i = 0; i < n; i++) {
            int pos = kv->len[rows[i]];
            rope_vec(s.q + (size_t)i * D, H, hd, rope + (size_t)i * hd);
            rope_vec(s.k + (size_t)i * kvd, Hkv, hd, rope + (size_t)i * hd);
            for (int g = 0; g < Hkv; g++) {
                float *kt = kv->k + kv_head(kv, l, rows[i], g), *vv = kv->v + kv_head(kv, l, rows[i], g);
                for (int d = 0; d < hd; d++) kt[(size_t)d * kv->cap + pos] = s.k[(size_t)i * kvd + g * hd + d];
                memcpy(vv + (size_t)pos * hd, s.v + (size_t)i * kvd + g * hd, (size_t)hd * sizeof(float));
            }
        }
        /* attention of each new query over its row's cache 0..pos, as op_attention */
        OMP(parallel for schedule(static) if ((size_t)n * H * kv->cap * hd > 65536))
        for (int ih = 0; ih < n * H; ih++) {
            float *sc = scores + (size_t)ih * kv->cap;
            int i = ih / H, h = ih % H, g = h / rep, T = kv->len[rows[i]] + 1;
            const float *qi = s.q + (size_t)i * D + (size_t)h * hd;
            const float *kt = kv->k + kv_head(kv, l, rows[i], g), *vb = kv->v + kv_head(kv, l, rows[i], g);
            float *restrict o = s.att + (size_t)i * D + (size_t)h * hd;
            float *restrict scr = sc;
            /* s_j = scale * sum_d q_d k_jd, each sum in d order; vectorised over j (keys
             * are stored transposed) */
            for (int j = 0; j < T; j++) scr[j] = 0.0f;
            for (int d = 0; d < hd; d++) {
                const float *restrict kd = kt + (size_t)d * kv->cap;
                float qd = qi[d];
                for (int j = 0; j < T; j++) scr[j] += qd * kd[j];
            }
            float mx = -INFINITY;
            for (int j = 0; j < T; j++) {
                scr[j] *= scale;
                if (scr[j] > mx) mx = scr[j];
            }
            memset(o, 0, (size_t)hd * sizeof(float));
            float sum = 0.0f;
            for (int j = 0; j < T; j++) {
                float pj = expf(scr[j] - mx);
                const float *restrict vj = vb + (size_t)j * hd;
                sum += pj;
                for (int d = 0; d < hd; d++) o[d] += pj * vj[d];
            }
            float inv = 1.0f / sum;
            for (int d = 0; d < hd; d++) o[d] *= inv;
        }
        lin_infer(m, s.o, s.att, n, Ly->o, -1, &s);
        for (size_t k = 0; k < (size_t)n * D; k++) s.x[k] = s.x[k] + s.o[k];
        rmsnorm_rows(s.h, s.x, m->w + m->params[Ly->ln_post].offset, n, D, (float)c->rms_norm_eps);
        lin_infer(m, s.g, s.h, n, Ly->gate, -1, &s);
        lin_infer(m, s.u, s.h, n, Ly->up, -1, &s);
        for (size_t k = 0; k < (size_t)n * I; k++) {
            float x = s.g[k];
            s.g[k] = x * sigmoid_(x) * s.u[k];                /* as op_swiglu */
        }
        lin_infer(m, s.o, s.g, n, Ly->down, -1, &s);
        for (size_t k = 0; k < (size_t)n * D; k++) s.x[k] = s.x[k] + s.o[k];
    }
    rmsnorm_rows(s.h, s.x, m->w + m->params[m->norm].offset, n, D, (float)c->rms_norm_eps);
    lin_infer(m, logits, s.h, n, m->lm_head, -1, &s);
    for (int i = 0; i < n; i++) kv->len[rows[i]]++;
    free(buf); free(scores); free(rope);
}

static int argmax_row(const float *z, int V) {
    int best = 0;
    for (int v = 1; v < V; v++) if (z[v] > z[best]) best = v;
    return best;
}

/* Merged length of a prompt (the image token expands to N_p positions). */
static int merged_len(const Model *m, const int *ids, int n) {
    int L = n;
    for (int t = 0; t < n; t++) if (ids[t] == m->cfg.image_token_index) L += m->n_patches - 1;
    return L;
}

#define GEN_CHUNK 32

void model_generate(Model *m, const GenItem *items, int n, int max_new, GenResult *out) {
    const LlavaConfig *c = &m->cfg;
    int V = c->vocab_size;
    for (int i0 = 0; i0 < n; i0 += GEN_CHUNK) {
        int nb = n - i0 < GEN_CHUNK ? n - i0 : GEN_CHUNK;
        int maxT = 1, maxM = 1;
        for (int i = 0; i < nb; i++) {
            if (items[i0 + i].n > maxT) maxT = items[i0 + i].n;
            int ml = merged_len(m, items[i0 + i].ids, items[i0 + i].n);
            if (ml > maxM) maxM = ml;
        }
        Batch bt;
        batch_init(&bt, nb, maxT, c->pad_token_id);
        for (int i = 0; i < nb; i++)
            batch_add(&bt, items[i0 + i].ids, items[i0 + i].n, items[i0 + i].n, items[i0 + i].pixels);
        KvCache kv;
        kv_init(&kv, c, nb, maxM + (max_new > 0 ? max_new : 0));
        float *logits = xmalloc((size_t)nb * V * sizeof(float));
        int *rows = xmalloc((size_t)nb * sizeof(int)), *tok = xmalloc((size_t)nb * sizeof(int));
        model_prefill(m, &kv, &bt, logits);
        int active = 0;
        for (int i = 0; i < nb; i++) {
            GenResult *r = &out[i0 + i];
            r->ids = xmalloc((size_t)(max_new > 0 ? max_new : 1) * sizeof(int));
            r->n = 0; r->eos = 0;
            if (max_new <= 0) continue;
            int t = argmax_row(logits + (size_t)i * V, V);
            if (t == c->eos_token_id) { r->eos = 1; continue; }
            r->ids[r->n++] = t;
            if (r->n < max_new) { rows[active] = i; tok[active++] = t; }
        }
        /* one token per live sequence per step; finished ones drop out of the batch */
        while (active > 0) {
            model_decode_step(m, &kv, rows, tok, active, logits);
            int k = 0;
            for (int a = 0; a < active; a++) {
                GenResult *r = &out[i0 + rows[a]];
                int t = argmax_row(logits + (size_t)a * V, V);
                if (t == c->eos_token_id) { r->eos = 1; continue; }
                r->ids[r->n++] = t;
                if (r->n < max_new) { rows[k] = rows[a]; tok[k++] = t; }
            }
            active = k;
        }
        free(logits); free(rows); free(tok);
        kv_free(&kv);
        batch_free(&bt);
    }
}

void gen_result_free(GenResult *r) { free(r->ids); r->ids = NULL; r->n = 0; }

#define SCORE_CHUNK 16

void model_score(Model *m, const ScoreItem *items, int n, int flags, ScoreResult *out) {
    const LlavaConfig *c = &m->cfg;
    int V = c->vocab_size;
    double *lp = xmalloc((size_t)V * sizeof(double));
    for (int i0 = 0; i0 < n; i0 += SCORE_CHUNK) {
        int nb = n - i0 < SCORE_CHUNK ? n - i0 : SCORE_CHUNK;
        int maxT = 1;
        for (int i = 0; i < nb; i++) if (items[i0 + i].n > maxT) maxT = items[i0 + i].n;
        Batch bt;
        batch_init(&bt, nb, maxT, c->pad_token_id);
        for (int i = 0; i < nb; i++) {
            const ScoreItem *it = &items[i0 + i];
            CHECKF(it->answer_start >= 1 && it->answer_start <= it->n, "model_score: answer_start %d of %d tokens",
                   it->answer_start, it->n);
            for (int t = it->answer_start; t < it->n; t++)
                CHECKF(it->ids[t] != c->image_token_index, "model_score: the image token cannot be scored");
            batch_add(&bt, it->ids, it->n, it->answer_start, it->pixels);
        }
        Tape *tp = infer_tape(m);
        ForwardOpts o = {0};
        o.logits = 2; o.no_grad = 1;
        ForwardOut f = model_forward(m, tp, &bt, &o);
        int row = 0;                                      /* labelled rows come in (b, t) order */
        for (int i = 0; i < nb; i++) {
            const ScoreItem *it = &items[i0 + i];
            ScoreResult *r = &out[i0 + i];
            memset(r, 0, sizeof *r);
            r->n = it->n - it->answer_start;
            r->start = it->answer_start + (merged_len(m, it->ids, it->answer_start) - it->answer_start);
            r->logp = xmalloc((size_t)(r->n ? r->n : 1) * sizeof(float));
            r->argmax = xmalloc((size_t)(r->n ? r->n : 1) * sizeof(int));
            if (flags & SCORE_MOMENTS) {
                r->mu = xmalloc((size_t)(r->n ? r->n : 1) * sizeof(float));
                r->sigma = xmalloc((size_t)(r->n ? r->n : 1) * sizeof(float));
            }
            if (flags & SCORE_ROWS) r->rows = xmalloc((size_t)(r->n ? r->n : 1) * V * sizeof(float));
            CHECK(f.n_labels[i] == r->n);
            for (int k = 0; k < r->n; k++, row++) {
                const float *z = f.logits->data + (size_t)row * V;
                int tgt = it->ids[it->answer_start + k];
                /* log-softmax in double */
                double mx = z[0];
                for (int v = 1; v < V; v++) if (z[v] > mx) mx = z[v];
                double se = 0.0;
                for (int v = 0; v < V; v++) se += exp((double)z[v] - mx);
                double lse = mx + log(se);
                for (int v = 0; v < V; v++) lp[v] = (double)z[v] - lse;
                r->logp[k] = (float)lp[tgt];
                r->sum += lp[tgt];
                r->argmax[k] = argmax_row(z, V);
                if (flags & SCORE_MOMENTS) {
                    /* Min-K%++: mu = E_p[log p], sigma^2 = E_p[(log p)^2] - mu^2 */
                    double mu = 0.0, m2 = 0.0;
                    for (int v = 0; v < V; v++) { double pv = exp(lp[v]); mu += pv * lp[v]; m2 += pv * lp[v] * lp[v]; }
                    double var = m2 - mu * mu;
                    r->mu[k] = (float)mu;
                    r->sigma[k] = (float)sqrt(var > 0.0 ? var : 0.0);
                }
                if (flags & SCORE_ROWS)
                    for (int v = 0; v < V; v++) r->rows[(size_t)k * V + v] = (float)lp[v];
            }
        }
        tape_reset(tp);
        batch_free(&bt);
    }
    free(lp);
}

void score_result_free(ScoreResult *r) {
    free(r->logp); free(r->argmax); free(r->mu); free(r->sigma); free(r->rows);
    memset(r, 0, sizeof *r);
}

Tensor *model_image_features(Model *m, Tape *tp, const float *const *pix, int n) {
    return image_features(m, tp, pix, n, NULL);
}

/* ============================================================================
 * pulse bench train */

/* Matmul FLOPs of one forward over a batch of B rows of T merged positions, n_img images. */
static double forward_flops(const LlavaConfig *c, int B, int T, int n_img) {
    double M = (double)B * T, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    double Dkv = D / c->num_attention_heads * c->num_key_value_heads;
    double f = c->num_hidden_layers * (2 * M * D * (2 * D + 2 * Dkv + 3 * I) + 2 * (double)B * T * T * D);
    f += 2 * M * D * V;
    int Np = config_num_patches(c);
    double Dv = c->v_hidden_size, Iv = c->v_intermediate_size, Mv = (double)n_img * (Np + 1);
    double cpp = 3.0 * c->patch_size * c->patch_size;
    f += 2 * (double)n_img * Np * cpp * Dv + config_vision_layers_used(c) * (2 * Mv * (4 * Dv * Dv + 2 * Dv * Iv) + 4 * (double)n_img * (Np + 1) * (Np + 1) * Dv);
    f += 2 * (double)n_img * Np * (Dv * D + D * D);
    return f;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs training steps for at least `secs` seconds (and at least 5) after two warm-up steps;
 * returns the median step's wall seconds, the fastest step's in *best, and the process CPU
 * seconds per step in *cpu (all threads: on a shared machine the single-thread CPU time is
 * the uncontended cost). The median, not the mean: on a machine shared with other jobs a
 * few steps that lose the CPU would otherwise decide the figure. */
static double time_steps(Model *m, Tape *tp, const Batch *bt, double secs, double *best, double *cpu) {
    AdamW o = adamw_default();
    int steps = 0, cap = 256;
    double *dt = xmalloc((size_t)cap * sizeof *dt);
    double t0 = 0, c0 = 0, ts = 0;
    for (int i = 0;; i++) {
        if (i == 2) {                                    /* two warm-up steps grow the arena */
            t0 = now_seconds(); c0 = cpu_seconds();
            if (tp->prof) tape_profile(tp, 1);           /* restart the profile's counts */
        }
        if (i >= 2) ts = now_seconds();
        model_zero_grad(m);
        tape_profile_mark(tp, "zero_grad");
        ForwardOut f = model_forward(m, tp, bt, NULL);
        tape_backward(tp, f.loss);
        tape_reset(tp);
        tape_profile_mark(tp, "(glue)");
        model_clip_grad(m, 1.0);
        tape_profile_mark(tp, "clip_grad");
        model_adamw_step(m, &o, 1e-4f);
        tape_profile_mark(tp, "adamw");
        if (i >= 2) {
            double t = now_seconds();
            if (steps == cap) dt = xrealloc(dt, (size_t)(cap *= 2) * sizeof *dt);
            dt[steps++] = t - ts;
            if (t - t0 >= secs && steps >= 5) {
                *cpu = (cpu_seconds() - c0) / steps;
                tape_profile_print(tp, steps);
                qsort(dt, (size_t)steps, sizeof *dt, cmp_double);
                double med = dt[steps / 2];
                *best = dt[0];
                free(dt);
                return med;
            }
        }
    }
}

int cmd_bench_train(int argc, char **argv) {
    Args a;
    args_init(&a, "bench train", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse bench train [--config FILE] [--batch B] [--seq T] [--text-only] [--seconds S] [--profile]\n"
               "  tokens/s of full training steps (forward, backward, clipping, AdamW) and of LoRA steps\n"
               "  (r 8, alpha 16, Llama linears); a row is <s> <image> + random tokens, T merged positions\n"
               "  (default config ../shared/bench/llava-1m.json, batch 8, seq 64)\n"
               "  --profile: also where a step's time goes, per op kind (forward / backward, ms/step)\n");
        return 0;
    }
    const char *cfgpath = args_str(&a, "config", NULL);
    int B = (int)args_long(&a, "batch", 8, 1, 4096);
    int T = (int)args_long(&a, "seq", 64, 2, 1 << 16);
    int text_only = args_flag(&a, "text-only");
    double secs = args_double(&a, "seconds", 3.0, 0.01, 3600);
    int profile = args_flag(&a, "profile");
    args_done(&a);
    args_free(&a);
    LlavaConfig c = config_default();
    if (cfgpath) {
        Json *j = json_load(cfgpath);
        c = config_from_json(j, cfgpath);
        json_free(j);
    }
    int Np = config_num_patches(&c), img = !text_only && T >= Np + 2;
    int n_text = img ? T - Np + 1 : T;                  /* text ids per row (the image id counts once) */
    Model *m = model_new(&c);
    model_init(m, 1);
    Rng r;
    rng_seed(&r, 2);
    Batch bt;
    batch_init(&bt, B, n_text, c.pad_token_id);
    float *pix = xmalloc((size_t)3 * c.image_size * c.image_size * sizeof(float));
    for (int i = 0; i < 3 * c.image_size * c.image_size; i++) pix[i] = rng_normal(&r);
    int *ids = xmalloc((size_t)n_text * sizeof(int));
    for (int b = 0; b < B; b++) {
        ids[0] = c.bos_token_id;
        int k = 1;
        if (img) ids[k++] = c.image_token_index;
        for (; k < n_text; k++) ids[k] = 4 + (int)rng_below(&r, (uint32_t)(c.vocab_size - 4));
        batch_add(&bt, ids, n_text, 1, img ? pix : NULL);   /* loss on every token */
    }
    Tape tp;
    tape_init(&tp, 64 << 20);
    if (profile) tape_profile(&tp, 1);
    double fw = forward_flops(&c, B, T, img ? B : 0);
    /* the kernel's own speed at the decoder's main shape, for the share of the machine */
    int M = B * T, D = c.hidden_size;
    float *x = xcalloc((size_t)M * D, sizeof(float)), *W = xcalloc((size_t)D * D, sizeof(float));
    float *y = xmalloc((size_t)M * D * sizeof(float));
    int reps = 0;
    double t0 = now_seconds();
    while (now_seconds() - t0 < 0.3 || reps < 3) { kern_matmul_nt(y, x, W, NULL, M, D, D); reps++; }
    double kern_gflops = 2.0 * M * D * D * reps / (now_seconds() - t0) * 1e-9;
    free(x); free(W); free(y);
    printf("bench train: %zu params, batch %d x %d merged positions (%s), %d threads, simd %s\n",
           model_num_params(m), B, T, img ? "image + text" : "text only", kern_threads(), kern_simd_name());
    printf("  kern_matmul_nt %dx%dx%d: %.1f GFLOP/s\n", M, D, D, kern_gflops);

    model_set_train(m, TRAIN_FULL, NULL);
    double cpu, best, s = time_steps(m, &tp, &bt, secs, &best, &cpu);
    double gf = 3.0 * fw / s * 1e-9;                  /* backward ~ 2x forward */
    printf("full: %.0f tokens/s (median step %.1f ms, best %.1f ms; ~%.1f GFLOP/s, %.0f%% of the kernel; "
           "%.0f tokens per CPU-second)\n", B * T / s, 1e3 * s, 1e3 * best, gf, 100.0 * gf / kern_gflops, B * T / cpu);
    LoraConfig lc = {8, 16.0f, 0.0f, "llm", 1};
    lora_attach(m, &lc);
    model_set_train(m, TRAIN_LORA, NULL);
    s = time_steps(m, &tp, &bt, secs, &best, &cpu);
    gf = 2.0 * fw / s * 1e-9;                          /* frozen weights: no weight gradients */
    printf("lora: %.0f tokens/s (median step %.1f ms, best %.1f ms; ~%.1f GFLOP/s, %.0f%% of the kernel; "
           "%.0f tokens per CPU-second)\n", B * T / s, 1e3 * s, 1e3 * best, gf, 100.0 * gf / kern_gflops, B * T / cpu);
    free(ids); free(pix);
    tape_free(&tp);
    batch_free(&bt);
    model_free(m);
    return 0;
}
