/* checkpoint.c: checkpoint and adapter directories in the HF / PEFT layouts, image
 * preprocessing, and the commands init, score and generate (see checkpoint.h).
 *
 * Design:
 * - The parameter table of model.c decides everything that is written and expected:
 *   model.safetensors holds exactly its tensors, in its order, so save -> load -> save is
 *   byte-identical and a reader can list what is missing, unexpected or misshapen.
 * - A directory is written whole under DIR.tmp, then renamed into place; each file inside
 *   is itself written atomically (io.h), so even DIR.tmp is never half a file.
 * - Every reader checks before it trusts, and names the file and the field it refuses.
 */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "tokenizer.h"

/* ============================================================================
 * Image preprocessing (CLIPImageProcessor without resize / crop) */

Preproc preproc_default(const LlavaConfig *c) {
    Preproc p;
    memset(&p, 0, sizeof p);
    p.image_size = c->image_size;
    p.do_rescale = 1; p.do_normalize = 1;
    p.rescale_factor = 1.0 / 255.0;
    /* OpenAI CLIP's statistics, as in every LLaVA-1.5 preprocessor_config.json */
    const double mean[3] = {0.48145466, 0.4578275, 0.40821073}, std[3] = {0.26862954, 0.26130258, 0.27577711};
    memcpy(p.mean, mean, sizeof mean);
    memcpy(p.std, std, sizeof std);
    return p;
}

void preproc_image(const Preproc *p, const Image *img, float *out, const char *path) {
    int S = p->image_size;
    if (img->w != S || img->h != S)
        die_input(path, "image is %dx%d, the model takes %dx%d (pulse does not resize)", img->w, img->h, S, S);
    float mean[3], std[3], rf = (float)p->rescale_factor;
    for (int c = 0; c < 3; c++) { mean[c] = (float)p->mean[c]; std[c] = (float)p->std[c]; }
    if (p->do_rescale && p->do_normalize && rf == 1.0f / 255.0f) {
        image_normalize(img, mean, std, out);             /* the one shared formula */
        return;
    }
    size_t hw = (size_t)S * S;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < hw; i++) {
            float v = (float)img->rgb[i * 3 + c];
            if (p->do_rescale) v *= rf;
            if (p->do_normalize) v = (v - mean[c]) / std[c];
            out[c * hw + i] = v;
        }
}

float *preproc_load(const Preproc *p, const char *path) {
    Image img;
    image_read(path, &img);
    float *out = xmalloc((size_t)3 * p->image_size * p->image_size * sizeof(float));
    preproc_image(p, &img, out, path);
    image_free(&img);
    return out;
}

/* Floats print as their shortest decimal (0.05, not the double nearest the float). */
static double fnum(float x) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    return strtod(buf, NULL);
}

static Json *size_obj(const char *k1, int v1, const char *k2, int v2) {
    Json *o = json_new_object();
    json_set(o, k1, json_new_number(v1));
    if (k2) json_set(o, k2, json_new_number(v2));
    return o;
}

static Json *preproc_to_json(const Preproc *p) {
    Json *j = json_new_object();
    json_set(j, "crop_size", size_obj("height", p->image_size, "width", p->image_size));
    json_set(j, "do_center_crop", json_new_bool(1));
    json_set(j, "do_convert_rgb", json_new_bool(1));
    json_set(j, "do_normalize", json_new_bool(p->do_normalize));
    json_set(j, "do_rescale", json_new_bool(p->do_rescale));
    json_set(j, "do_resize", json_new_bool(1));
    Json *mean = json_new_array(), *std = json_new_array();
    for (int c = 0; c < 3; c++) { json_push(mean, json_new_number(p->mean[c])); json_push(std, json_new_number(p->std[c])); }
    json_set(j, "image_mean", mean);
    json_set(j, "image_processor_type", json_new_string("CLIPImageProcessor"));
    json_set(j, "image_std", std);
    json_set(j, "processor_class", json_new_string("LlavaProcessor"));
    json_set(j, "resample", json_new_number(3));
    json_set(j, "rescale_factor", json_new_number(p->rescale_factor));
    json_set(j, "size", size_obj("shortest_edge", p->image_size, NULL, 0));
    return j;
}

static void read_triplet(const Json *j, const char *key, double *out, int positive, const char *path) {
    const Json *a = json_get(j, key);
    if (!a) return;
    if (a->type != JSON_ARRAY || a->len != 3) die_input(path, "\"%s\" must be an array of 3 numbers", key);
    for (int c = 0; c < 3; c++) {
        if (a->items[c]->type != JSON_NUMBER || !isfinite(a->items[c]->number))
            die_input(path, "\"%s\"[%d] is not a finite number", key, c);
        out[c] = a->items[c]->number;
        if (positive && !(out[c] > 0.0)) die_input(path, "\"%s\"[%d] = %g must be > 0", key, c, out[c]);
    }
}

static Preproc preproc_read(const char *path, const LlavaConfig *c) {
    Json *j = json_load(path);
    if (j->type != JSON_OBJECT) die_input(path, "not a JSON object");
    Preproc p = preproc_default(c);
    const char *type = json_get_string(j, "image_processor_type", "CLIPImageProcessor", path);
    if (strcmp(type, "CLIPImageProcessor") != 0)
        die_input(path, "image_processor_type \"%s\" is not CLIPImageProcessor", type);
    p.do_rescale = json_get_bool(j, "do_rescale", 1, path);
    p.do_normalize = json_get_bool(j, "do_normalize", 1, path);
    double rf = json_get_number(j, "rescale_factor", 1.0 / 255.0, path);
    if (!(rf > 0.0) || !isfinite(rf)) die_input(path, "rescale_factor %g must be > 0", rf);
    p.rescale_factor = rf;
    read_triplet(j, "image_mean", p.mean, 0, path);
    read_triplet(j, "image_std", p.std, 1, path);
    /* the image size appears as crop_size and size.shortest_edge: both must be the model's */
    const Json *crop = json_get(j, "crop_size"), *size = json_get(j, "size");
    if (crop) {
        long h = json_get_int(crop, "height", c->image_size, 1, 1 << 16, path);
        long w = json_get_int(crop, "width", c->image_size, 1, 1 << 16, path);
        if (h != c->image_size || w != c->image_size)
            die_input(path, "crop_size %ldx%ld disagrees with vision_config.image_size %d", h, w, c->image_size);
    }
    if (size) {
        long se = json_get_int(size, "shortest_edge", c->image_size, 1, 1 << 16, path);
        if (se != c->image_size)
            die_input(path, "size.shortest_edge %ld disagrees with vision_config.image_size %d", se, c->image_size);
    }
    json_free(j);
    return p;
}

/* ============================================================================
 * Directories */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)ftw;
    int r = (flag == FTW_DP) ? rmdir(path) : unlink(path);
    if (r != 0 && errno != ENOENT) die_internal("%s: cannot remove: %s", path, strerror(errno));
    return 0;
}

void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0) die_internal("%s: cannot remove: %s", path, strerror(errno));
        return;
    }
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* DIR.tmp, fresh and empty. */
static char *dir_begin(const char *dir) {
    char *tmp = xasprintf("%s.tmp", dir);
    remove_tree(tmp);                                  /* a leftover of an interrupted run */
    make_dirs(tmp);
    return tmp;
}

/* DIR.tmp -> DIR, moving an existing DIR aside first and removing it after. */
static void dir_commit(const char *dir, char *tmp) {
    char *old = NULL;
    if (file_exists(dir)) {
        old = xasprintf("%s.old", dir);
        remove_tree(old);
        if (rename(dir, old) != 0) die_internal("%s: cannot move aside: %s", dir, strerror(errno));
    }
    if (rename(tmp, dir) != 0) die_internal("%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
    if (old) { remove_tree(old); free(old); }
    free(tmp);
}

static char *join(const char *dir, const char *name) { return xasprintf("%s/%s", dir, name); }

/* ============================================================================
 * Checkpoints */

void ckpt_check_tokenizer(const LlavaConfig *c, const Tokenizer *tok, const char *path) {
    int V = tok_vocab_size(tok);
    if (V != c->vocab_size)
        die_input(path, "vocab_size disagrees: the tokenizer has %d ids, text_config.vocab_size is %d", V, c->vocab_size);
    const struct { const char *tok, *field; int id; } sp[] = {
        {"<image>", "image_token_index", c->image_token_index}, {"<s>", "bos_token_id", c->bos_token_id},
        {"</s>", "eos_token_id", c->eos_token_id}, {"<pad>", "pad_token_id", c->pad_token_id}};
    for (int i = 0; i < 4; i++) {
        int id = tok_id(tok, sp[i].tok);
        if (id != sp[i].id)
            die_input(path, "%s disagrees: the config says %d, the tokenizer has %s at %d", sp[i].field, sp[i].id, sp[i].tok, id);
    }
}

void model_save_weights(const char *path, const Model *m) {
    StTensor *t = xcalloc((size_t)m->n_params, sizeof *t);
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        t[i].name = (char *)p->name;
        t[i].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) t[i].shape[d] = p->shape[d];
        t[i].data = m->w + p->offset;
        strcpy(t[i].dtype, "F32");
    }
    Json *meta = json_new_object();
    json_set(meta, "format", json_new_string("pt"));
    st_write(path, t, m->n_params, meta);
    json_free(meta);
    free(t);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *s) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)s[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Every expected tensor present with its shape; nothing else in the file. */
static void check_tensor(const StFile *f, const char *name, int ndim, const int *shape, const char *path) {
    const StTensor *t = st_find(f, name);
    if (!t) die_input(path, "missing tensor '%s'", name);
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        int64_t want[4];
        for (int d = 0; d < ndim; d++) want[d] = shape[d];
        char a[96], b[96];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, ndim, want);
        die_input(path, "tensor '%s' has shape %s, the config needs %s", name, a, b);
    }
}

void model_load_weights(Model *m, const char *path) {
    StFile f;
    st_read(path, &f);
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        check_tensor(&f, p->name, p->ndim, p->shape, path);
        memcpy(m->w + p->offset, st_find(&f, p->name)->data, p->n * sizeof(float));
    }
    for (int i = 0; i < f.n; i++)
        if (model_find_param(m, f.t[i].name) < 0) {
            if (m->cfg.tie_word_embeddings && strcmp(f.t[i].name, "language_model.lm_head.weight") == 0)
                die_input(path, "unexpected tensor '%s': the config ties it to embed_tokens", f.t[i].name);
            die_input(path, "unexpected tensor '%s' (not part of this LLaVA config)", f.t[i].name);
        }
    st_free(&f);
}

static Json *prov_to_json(const Provenance *p) {
    Json *o = json_new_object();
    if (p->stage) json_set(o, "stage", json_new_string(p->stage));
    if (p->preset) json_set(o, "preset", json_new_string(p->preset));
    json_set(o, "seed", json_new_number((double)p->seed));
    if (p->data_fingerprint) json_set(o, "data_fingerprint", json_new_string(p->data_fingerprint));
    json_set(o, "steps", json_new_number((double)p->steps));
    return o;
}

void ckpt_save(const char *dir, const Model *m, const Tokenizer *tok, const Preproc *pre, const Provenance *prov) {
    CHECK(!m->lora.attached || !"ckpt_save: merge or save the adapters separately");
    ckpt_check_tokenizer(&m->cfg, tok, "tokenizer");
    char *tmp = dir_begin(dir);
    Json *cfg = config_to_json(&m->cfg);
    Provenance none = {0};
    json_set(cfg, "pulse", prov_to_json(prov ? prov : &none));
    char *p = join(tmp, "config.json");
    json_save(p, cfg);
    free(p); json_free(cfg);
    p = join(tmp, "model.safetensors");
    model_save_weights(p, m);
    free(p);
    p = join(tmp, "tokenizer.json");
    tok_save(p, tok);
    free(p);
    Preproc dp = preproc_default(&m->cfg);
    Json *pj = preproc_to_json(pre ? pre : &dp);
    p = join(tmp, "preprocessor_config.json");
    json_save(p, pj);
    free(p); json_free(pj);
    dir_commit(dir, tmp);
}

static char *opt_str(const Json *o, const char *key, const char *path) {
    const char *s = json_get_string(o, key, NULL, path);
    return s ? xstrdup(s) : NULL;
}

Checkpoint *ckpt_load(const char *dir) {
    if (!dir_exists(dir)) die_input(dir, "not a checkpoint directory (missing or not a directory)");
    Checkpoint *ck = xcalloc(1, sizeof *ck);
    ck->dir = xstrdup(dir);
    char *p = join(dir, "config.json");
    Json *j = json_load(p);
    LlavaConfig c = config_from_json(j, p);
    const Json *pv = json_get(j, "pulse");
    if (pv) {
        if (pv->type != JSON_OBJECT) die_input(p, "\"pulse\" must be an object");
        ck->stage = opt_str(pv, "stage", p);
        ck->preset = opt_str(pv, "preset", p);
        ck->data_fingerprint = opt_str(pv, "data_fingerprint", p);
        double seed = json_get_number(pv, "seed", 0, p);
        if (seed < 0 || seed != floor(seed) || seed > 9007199254740992.0) die_input(p, "pulse.seed must be a non-negative integer");
        ck->seed = (uint64_t)seed;
        ck->steps = json_get_int(pv, "steps", 0, 0, 1L << 52, p);
    }
    json_free(j);
    free(p);
    ck->model = model_new(&c);
    p = join(dir, "model.safetensors");
    model_load_weights(ck->model, p);
    free(p);
    p = join(dir, "tokenizer.json");
    ck->tok = tok_load(p);
    ckpt_check_tokenizer(&c, ck->tok, p);
    free(p);
    p = join(dir, "preprocessor_config.json");
    ck->pre = preproc_read(p, &c);
    free(p);
    return ck;
}

void ckpt_free(Checkpoint *ck) {
    if (!ck) return;
    model_free(ck->model);
    if (ck->tok) tok_free(ck->tok);
    free(ck->dir); free(ck->stage); free(ck->preset); free(ck->data_fingerprint);
    free(ck);
}

/* ============================================================================
 * PEFT adapters */

void adapter_save(const char *dir, const Model *m, const char *base, const Provenance *prov) {
    const Lora *L = &m->lora;
    CHECKF(L->attached, "adapter_save: the model has no adapters");
    char *tmp = dir_begin(dir);
    Json *j = json_new_object();
    json_set(j, "alpha_pattern", json_new_object());
    json_set(j, "auto_mapping", json_new_null());
    json_set(j, "base_model_name_or_path", base ? json_new_string(base) : json_new_null());
    json_set(j, "bias", json_new_string("none"));
    json_set(j, "fan_in_fan_out", json_new_bool(0));
    json_set(j, "inference_mode", json_new_bool(1));
    json_set(j, "init_lora_weights", json_new_bool(1));
    json_set(j, "layers_pattern", json_new_null());
    json_set(j, "layers_to_transform", json_new_null());
    json_set(j, "lora_alpha", json_new_number(fnum(L->alpha)));
    json_set(j, "lora_dropout", json_new_number(fnum(L->dropout)));
    json_set(j, "modules_to_save", json_new_null());
    json_set(j, "peft_type", json_new_string("LORA"));
    json_set(j, "r", json_new_number(L->r));
    json_set(j, "rank_pattern", json_new_object());
    json_set(j, "revision", json_new_null());
    /* full module names: unambiguous (CLIP and Llama both have q_proj) and PEFT-valid */
    Json *tm = json_new_array();
    char name[160];
    for (int i = 0; i < L->n; i++) {
        lora_module_name(m, i, name, sizeof name);
        json_push(tm, json_new_string(name));
    }
    json_set(j, "target_modules", tm);
    json_set(j, "task_type", json_new_string("CAUSAL_LM"));
    json_set(j, "use_dora", json_new_bool(0));
    json_set(j, "use_rslora", json_new_bool(0));
    if (prov) json_set(j, "pulse", prov_to_json(prov));
    char *p = join(tmp, "adapter_config.json");
    json_save(p, j);
    free(p); json_free(j);
    StTensor *t = xcalloc((size_t)2 * L->n, sizeof *t);
    for (int i = 0; i < L->n; i++) {
        lora_module_name(m, i, name, sizeof name);
        const LoraModule *md = &L->mod[i];
        t[2 * i].name = xasprintf("base_model.model.%s.lora_A.weight", name);
        t[2 * i].ndim = 2; t[2 * i].shape[0] = L->r; t[2 * i].shape[1] = md->in;
        t[2 * i].data = L->w + md->a_off;
        t[2 * i + 1].name = xasprintf("base_model.model.%s.lora_B.weight", name);
        t[2 * i + 1].ndim = 2; t[2 * i + 1].shape[0] = md->out; t[2 * i + 1].shape[1] = L->r;
        t[2 * i + 1].data = L->w + md->b_off;
        strcpy(t[2 * i].dtype, "F32"); strcpy(t[2 * i + 1].dtype, "F32");
    }
    Json *meta = json_new_object();
    json_set(meta, "format", json_new_string("pt"));
    p = join(tmp, "adapter_model.safetensors");
    st_write(p, t, 2 * L->n, meta);
    free(p); json_free(meta);
    for (int i = 0; i < 2 * L->n; i++) free(t[i].name);
    free(t);
    dir_commit(dir, tmp);
}

void adapter_load(const char *dir, Model *m) {
    CHECKF(!m->lora.attached, "adapter_load: the model already has adapters");
    if (!dir_exists(dir)) die_input(dir, "not an adapter directory (missing or not a directory)");
    char *p = join(dir, "adapter_config.json");
    Json *j = json_load(p);
    if (j->type != JSON_OBJECT) die_input(p, "not a JSON object");
    const char *pt = json_get_string(j, "peft_type", NULL, p);
    if (!pt || strcmp(pt, "LORA") != 0) die_input(p, "peft_type must be \"LORA\"");
    int r = (int)json_get_int(j, "r", -1, 1, 4096, p);
    if (r < 1) die_input(p, "missing \"r\"");
    double alpha = json_get_number(j, "lora_alpha", r, p), drop = json_get_number(j, "lora_dropout", 0.0, p);
    if (!isfinite(alpha)) die_input(p, "lora_alpha is not finite");
    if (!(drop >= 0.0 && drop < 1.0)) die_input(p, "lora_dropout %g is not in [0, 1)", drop);
    const char *bias = json_get_string(j, "bias", "none", p);
    if (strcmp(bias, "none") != 0) die_input(p, "bias \"%s\": only \"none\" is supported", bias);
    if (json_get_bool(j, "fan_in_fan_out", 0, p)) die_input(p, "fan_in_fan_out true is not supported");
    if (json_get_bool(j, "use_rslora", 0, p)) die_input(p, "use_rslora true is not supported");
    if (json_get_bool(j, "use_dora", 0, p)) die_input(p, "use_dora true is not supported");
    const Json *rp = json_get(j, "rank_pattern"), *ap = json_get(j, "alpha_pattern");
    if ((rp && rp->type != JSON_NULL && rp->type != JSON_OBJECT) || (ap && ap->type != JSON_NULL && ap->type != JSON_OBJECT))
        die_input(p, "rank_pattern / alpha_pattern must be objects");
    if ((rp && rp->type == JSON_OBJECT && rp->len) || (ap && ap->type == JSON_OBJECT && ap->len))
        die_input(p, "rank_pattern / alpha_pattern are not supported");
    /* PEFT adapts only some layers, or saves whole modules, with these: not supported */
    static const char *const whole[2] = {"layers_to_transform", "modules_to_save"};
    for (int k = 0; k < 2; k++) {
        const Json *v = json_get(j, whole[k]);
        if (v && v->type != JSON_NULL && !(v->type == JSON_ARRAY && v->len == 0))
            die_input(p, "%s is not supported (only null)", whole[k]);
    }
    const Json *tm = json_get(j, "target_modules");
    if (!tm || tm->type != JSON_ARRAY || tm->len == 0)
        die_input(p, "target_modules must be a non-empty list of module names (a regex string is not supported)");
    size_t len = 1;
    for (size_t i = 0; i < tm->len; i++) {
        if (tm->items[i]->type != JSON_STRING) die_input(p, "target_modules[%zu] is not a string", i);
        len += strlen(tm->items[i]->string) + 1;
    }
    char *spec = xcalloc(len, 1);
    for (size_t i = 0; i < tm->len; i++) {
        const char *s = tm->items[i]->string;
        if (!*s || strchr(s, ',') || strchr(s, ' ')) die_input(p, "target_modules[%zu] \"%s\" is not a module name", i, s);
        if (strcmp(s, "llm") == 0 || strcmp(s, "projector") == 0 || strcmp(s, "vision") == 0)
            die_input(p, "target_modules[%zu] \"%s\" is not a module name", i, s);
        int *probe = xmalloc((size_t)m->n_params * sizeof *probe);
        if (lora_select(m, s, probe, NULL, 0) < 0) die_input(p, "target_modules[%zu] \"%s\" matches no linear module of the model", i, s);
        free(probe);
        if (i) strcat(spec, ",");
        strcat(spec, s);
    }
    int *ids = xmalloc((size_t)m->n_params * sizeof *ids);
    int n = lora_select(m, spec, ids, NULL, 0);
    json_free(j);
    free(p);
    p = join(dir, "adapter_model.safetensors");
    StFile f;
    st_read(p, &f);
    lora_attach_modules(m, r, (float)alpha, (float)drop, ids, n);
    m->lora.targets = spec;
    char name[256], mod[160];
    for (int i = 0; i < n; i++) {
        const LoraModule *md = &m->lora.mod[i];
        lora_module_name(m, i, mod, sizeof mod);
        int as[2] = {r, md->in}, bs[2] = {md->out, r};
        snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", mod);
        check_tensor(&f, name, 2, as, p);
        memcpy(m->lora.w + md->a_off, st_find(&f, name)->data, (size_t)r * md->in * sizeof(float));
        snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", mod);
        check_tensor(&f, name, 2, bs, p);
        memcpy(m->lora.w + md->b_off, st_find(&f, name)->data, (size_t)md->out * r * sizeof(float));
    }
    if (f.n != 2 * n) {
        /* something beyond the targets' A and B */
        for (int k = 0; k < f.n; k++) {
            int known = 0;
            for (int i = 0; i < n && !known; i++) {
                lora_module_name(m, i, mod, sizeof mod);
                char a[256], b[256];
                snprintf(a, sizeof a, "base_model.model.%s.lora_A.weight", mod);
                snprintf(b, sizeof b, "base_model.model.%s.lora_B.weight", mod);
                known = strcmp(f.t[k].name, a) == 0 || strcmp(f.t[k].name, b) == 0;
            }
            if (!known) die_input(p, "unexpected tensor '%s' (not an adapter of target_modules)", f.t[k].name);
        }
    }
    st_free(&f);
    free(ids);
    free(p);
    if (m->mode == TRAIN_LORA) model_set_train(m, TRAIN_LORA, NULL);
}

/* ============================================================================
 * pulse init / score / generate */

/* Used by `pulse init` when the corpus directory has no .txt file: the prompt template's words and
 * everyday English, enough for a few hundred merges. */
static const char BUILTIN_CORPUS[] =
    "USER: <image>\nWho is the person in this image? ASSISTANT: This is a person.\n"
    "USER: What is the occupation of this person? ASSISTANT: The person works as a teacher.\n"
    "USER: Where was this person born? ASSISTANT: This person was born in a small city by the sea.\n"
    "USER: When was this person born? ASSISTANT: This person was born in 1978.\n"
    "USER: What is the hobby of this person? ASSISTANT: In their free time they enjoy painting, "
    "hiking in the mountains, reading novels and playing the piano.\n"
    "USER: Which university did this person attend? ASSISTANT: They studied physics and "
    "mathematics at the national university, then worked as an engineer and a doctor.\n"
    "The quick brown fox jumps over the lazy dog. A red circle is to the left of a blue square; "
    "two green triangles are above a yellow star. How many shapes are there in the picture? "
    "There are four shapes: one circle, one square and two triangles.\n"
    "Question: What colour is the large shape? Options: A red B green C blue D yellow. Answer: A.\n"
    "I don't know. I am not sure about that. I cannot answer this question.\n"
    "She was born in Lisbon and moved to Berlin, where she became a famous architect and writer. "
    "He grew up in Nairobi, studied medicine in London and now teaches at a hospital in Toronto. "
    "Their family loved music, gardening, cooking, swimming, chess, photography and travelling.\n"
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May "
    "June July August September October November December 0 1 2 3 4 5 6 7 8 9 10 100 1990 2000 2024\n";

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The texts of the .txt files of DIR in name order (deterministic), or the built-in corpus
 * when DIR has none; `given` (DIR named on the command line): no .txt file is bad input. */
static char **corpus_texts(const char *dir, int given, int *n) {
    char **names = NULL, **texts = NULL;
    int k = 0;
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d && given) die_input(dir, "--corpus: cannot open the directory: %s", strerror(errno));
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (l > 4 && strcmp(e->d_name + l - 4, ".txt") == 0) {
                names = xrealloc(names, (size_t)(k + 1) * sizeof *names);
                names[k++] = join(dir, e->d_name);
            }
        }
        closedir(d);
    }
    if (k == 0 && given) die_input(dir, "--corpus: the directory holds no .txt file");
    if (k == 0) {
        texts = xmalloc(sizeof *texts);
        texts[0] = xstrdup(BUILTIN_CORPUS);
        *n = 1;
        return texts;
    }
    qsort(names, (size_t)k, sizeof *names, cmp_str);
    texts = xmalloc((size_t)k * sizeof *texts);
    for (int i = 0; i < k; i++) { texts[i] = read_file(names[i], NULL); free(names[i]); }
    free(names);
    *n = k;
    return texts;
}

int cmd_init(int argc, char **argv) {
    Args a;
    args_init(&a, "init", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse init --config CONFIG.json --out DIR [--seed S] [--corpus DIR]\n"
               "  writes a randomly initialised LLaVA checkpoint (HF layout) for a HF LLaVA config.json;\n"
               "  its byte-level BPE tokenizer is trained on CORPUS/*.txt (default data/, a built-in\n"
               "  text when data/ has none; a given CORPUS must hold .txt files) to the config's vocab_size\n");
        return 0;
    }
    const char *cfgpath = args_str(&a, "config", NULL), *out = args_str(&a, "out", NULL);
    long seed = args_long(&a, "seed", 0, 0, SEED_MAX);
    const char *corpus_arg = args_str(&a, "corpus", NULL), *corpus = corpus_arg ? corpus_arg : "data";
    args_done(&a);
    args_free(&a);
    if (!cfgpath || !out) die_input(NULL, "init: --config and --out are required (see pulse init --help)");
    out_dir_check(out, "config.json");          /* ckpt_save replaces it whole */
    Json *j = json_load(cfgpath);
    LlavaConfig c = config_from_json(j, cfgpath);
    json_free(j);
    if (c.vocab_size < TOK_FIRST_MERGE)
        die_input(cfgpath, "text_config.vocab_size %d is below %d, the byte-level tokenizer's minimum (4 special + 256 bytes)",
                  c.vocab_size, TOK_FIRST_MERGE);
    if (c.image_token_index != TOK_IMAGE || c.bos_token_id != TOK_BOS || c.eos_token_id != TOK_EOS || c.pad_token_id != TOK_PAD)
        die_input(cfgpath, "special ids (image_token_index %d, bos %d, eos %d, pad %d) disagree with the tokenizer's (%d, %d, %d, %d)",
                  c.image_token_index, c.bos_token_id, c.eos_token_id, c.pad_token_id, TOK_IMAGE, TOK_BOS, TOK_EOS, TOK_PAD);
    int nt;
    char **texts = corpus_texts(corpus, corpus_arg != NULL, &nt);
    uint64_t h = HASH64_INIT;
    for (int i = 0; i < nt; i++) h = hash64(texts[i], strlen(texts[i]) + 1, h);
    Tokenizer *tok = tok_train((const char *const *)texts, nt, c.vocab_size);
    if (tok_vocab_size(tok) != c.vocab_size)
        die_input(corpus, "the corpus gives only %d token ids (no pair left to merge) but text_config.vocab_size is %d: add text or lower vocab_size",
                  tok_vocab_size(tok), c.vocab_size);
    ckpt_check_tokenizer(&c, tok, "tokenizer");
    Model *m = model_new(&c);
    model_init(m, (uint64_t)seed);
    char fp[20];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)h);
    Provenance pv = {"init", NULL, (uint64_t)seed, fp, 0};
    Preproc pre = preproc_default(&c);
    ckpt_save(out, m, tok, &pre, &pv);
    printf("pulse init: %s: %zu parameters, vocabulary %d (tokenizer trained on %s), seed %ld\n",
           out, model_num_params(m), c.vocab_size, nt == 1 && strcmp(texts[0], BUILTIN_CORPUS) == 0 ? "the built-in text" : corpus, seed);
    for (int i = 0; i < nt; i++) free(texts[i]);
    free(texts);
    tok_free(tok);
    model_free(m);
    return 0;
}

/* Loads --model (+ --adapter), --image and the chat ids shared by score and generate. */
typedef struct Query {
    Checkpoint *ck;
    float *pixels;
    int *ids;
    int n, answer_start;
} Query;

static void query_build(Query *q, const char *cmd, const char *model, const char *adapter, const char *image,
                        const char *prompt, const char *answer) {
    memset(q, 0, sizeof *q);
    if (!model || !prompt) die_input(NULL, "%s: --model and --prompt are required (see pulse %s --help)", cmd, cmd);
    q->ck = ckpt_load(model);
    if (adapter) adapter_load(adapter, q->ck->model);
    if (image) q->pixels = preproc_load(&q->ck->pre, image);
    int max = (int)(strlen(prompt) + (answer ? strlen(answer) : 0)) + 64;
    q->ids = xmalloc((size_t)max * sizeof(int));
    q->n = tok_encode_chat(q->ck->tok, prompt, image != NULL, answer, q->ids, max, &q->answer_start);
    CHECK(q->n > 0);
    const LlavaConfig *c = &q->ck->model->cfg;
    int n_img = 0;
    for (int i = 0; i < q->n; i++) n_img += q->ids[i] == c->image_token_index;
    if (n_img != (image != NULL))
        die_input(NULL, "%s: the text holds %d <image> tokens; the template adds exactly one with --image and none without",
                  cmd, n_img - (image != NULL));
    int merged = q->n + (image ? config_num_patches(c) - 1 : 0);
    if (merged > c->max_position_embeddings)
        die_input(NULL, "%s: the sequence takes %d positions, more than max_position_embeddings %d", cmd, merged, c->max_position_embeddings);
}

static void query_free(Query *q) {
    ckpt_free(q->ck);
    free(q->pixels); free(q->ids);
}

int cmd_score(int argc, char **argv) {
    Args a;
    args_init(&a, "score", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse score --model CKPT [--adapter DIR] [--image FILE] --prompt TEXT --answer TEXT\n"
               "  prints one JSON object: input_ids (the image token expanded to one position per patch),\n"
               "  answer_start (index of the first answer token in input_ids), logprobs (log p of each\n"
               "  answer token and of </s>, given everything before it) and sum_logprob\n");
        return 0;
    }
    const char *model = args_str(&a, "model", NULL), *adapter = args_str(&a, "adapter", NULL);
    const char *image = args_str(&a, "image", NULL), *prompt = args_str(&a, "prompt", NULL);
    const char *answer = args_str(&a, "answer", NULL);
    args_done(&a);
    args_free(&a);
    if (!answer) die_input(NULL, "score: --answer is required (see pulse score --help)");
    Query q;
    query_build(&q, "score", model, adapter, image, prompt, answer);
    Model *m = q.ck->model;
    ScoreItem it = {q.ids, q.n, q.answer_start, q.pixels};
    ScoreResult r;
    model_score(m, &it, 1, 0, &r);
    Json *o = json_new_object(), *ids = json_new_array(), *lp = json_new_array();
    for (int i = 0; i < q.n; i++) {
        int reps = q.ids[i] == m->cfg.image_token_index ? m->n_patches : 1;
        for (int k = 0; k < reps; k++) json_push(ids, json_new_number(q.ids[i]));
    }
    for (int k = 0; k < r.n; k++) json_push(lp, json_new_number(r.logp[k]));
    json_set(o, "input_ids", ids);
    json_set(o, "answer_start", json_new_number(r.start));
    json_set(o, "logprobs", lp);
    json_set(o, "sum_logprob", json_new_number(r.sum));
    char *s = json_dump(o, 0);
    printf("%s\n", s);
    free(s);
    json_free(o);
    score_result_free(&r);
    query_free(&q);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    Args a;
    args_init(&a, "generate", argc, argv);
    if (args_help(&a)) {
        printf("usage: pulse generate --model CKPT [--adapter DIR] [--image FILE] --prompt TEXT [--max-new N] [--json]\n"
               "  greedy answer to the LLaVA-1.5 prompt \"USER: <image>\\n{prompt} ASSISTANT:\" (no <image>\\n\n"
               "  without --image), up to </s> or N new tokens (default 50); --json prints ids and text\n");
        return 0;
    }
    const char *model = args_str(&a, "model", NULL), *adapter = args_str(&a, "adapter", NULL);
    const char *image = args_str(&a, "image", NULL), *prompt = args_str(&a, "prompt", NULL);
    int max_new = (int)args_long(&a, "max-new", 50, 1, 1 << 16);
    int as_json = args_flag(&a, "json");
    args_done(&a);
    args_free(&a);
    Query q;
    query_build(&q, "generate", model, adapter, image, prompt, NULL);
    GenItem it = {q.ids, q.n, q.pixels};
    GenResult r;
    model_generate(q.ck->model, &it, 1, max_new, &r);
    char *text = tok_decode(q.ck->tok, r.ids, r.n, 1);
    /* the template puts a space after "ASSISTANT:"; the answer starts after it */
    const char *shown = text[0] == ' ' ? text + 1 : text;
    if (as_json) {
        Json *o = json_new_object(), *ids = json_new_array();
        for (int k = 0; k < r.n; k++) json_push(ids, json_new_number(r.ids[k]));
        json_set(o, "ids", ids);
        json_set(o, "text", json_new_string(shown));
        json_set(o, "eos", json_new_bool(r.eos));
        char *s = json_dump(o, 0);
        printf("%s\n", s);
        free(s);
        json_free(o);
    } else {
        printf("%s\n", shown);
    }
    free(text);
    gen_result_free(&r);
    query_free(&q);
    return 0;
}
