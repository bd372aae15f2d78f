/* tests/test_checkpoint.c: checkpoint and adapter directories.
 *
 * save -> load -> save is byte-identical (model and adapter), loads score identically,
 * provenance and preprocessing round-trip; every malformed checkpoint class (shape
 * mismatch, missing / unexpected tensor, NaN, impossible config, tokenizer disagreeing,
 * missing file, bad adapter, wrong image size) is refused with exit status 2, checked in a
 * forked child. Also `pulse init` / `pulse score` / `pulse generate` in-process. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../checkpoint.h"
#include "../common.h"
#include "../io.h"
#include "../model.h"
#include "../tokenizer.h"
#include "test.h"

static char root[64];

static LlavaConfig tiny(void) {
    LlavaConfig c = config_default();
    c.vocab_size = 300; c.hidden_size = 16; c.intermediate_size = 24;
    c.num_hidden_layers = 2; c.num_attention_heads = 4; c.num_key_value_heads = 2;
    c.v_hidden_size = 8; c.v_intermediate_size = 16; c.v_num_hidden_layers = 2;
    c.v_num_attention_heads = 2; c.image_size = 8; c.patch_size = 4;
    c.max_position_embeddings = 512;
    return c;
}

static const char *CORPUS =
    "USER: Who is the person in this image? ASSISTANT: The person is a teacher from Lisbon.\n"
    "USER: What is the hobby of this person? ASSISTANT: They enjoy painting and hiking and chess.\n"
    "The quick brown fox jumps over the lazy dog; a red circle left of a blue square.\n"
    "She was born in Berlin in 1978, studied medicine and works at a hospital in Toronto.\n";

static Tokenizer *tiny_tok(void) {
    const char *texts[1] = {CORPUS};
    Tokenizer *t = tok_train(texts, 1, 300);
    CHECK(tok_vocab_size(t) == 300);
    return t;
}

static char *path(const char *a, const char *b) { return b ? xasprintf("%s/%s/%s", root, a, b) : xasprintf("%s/%s", root, a); }

/* Byte-identical files? */
static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = read_file(a, &na), *y = read_file(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x); free(y);
    return same;
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *x = read_file(from, &n);
    write_file_atomic(to, x, n);
    free(x);
}

/* A copy of checkpoint dir src at dst (flat). */
static void copy_ckpt(const char *src, const char *dst) {
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"};
    remove_tree(dst);
    make_dirs(dst);
    for (int i = 0; i < 4; i++) {
        char *a = xasprintf("%s/%s", src, files[i]), *b = xasprintf("%s/%s", dst, files[i]);
        copy_file(a, b);
        free(a); free(b);
    }
}

/* Runs fn(arg) in a child (stderr silenced): its exit status, 100 if it crashed. */
static int child_status(void (*fn)(const char *), const char *arg) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(99);
        fn(arg);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static void do_load(const char *dir) { ckpt_free(ckpt_load(dir)); }

/* Rewrites model.safetensors of dir with tensor `victim` changed by mode:
 * 0 drop it, 1 wrong shape, 2 an extra tensor besides. */
static void tamper(const char *dir, const char *victim, int mode) {
    char *p = xasprintf("%s/model.safetensors", dir);
    StFile f;
    st_read(p, &f);
    StTensor *t = xcalloc((size_t)f.n + 1, sizeof *t);
    int n = 0;
    float extra[4] = {1, 2, 3, 4};
    for (int i = 0; i < f.n; i++) {
        if (strcmp(f.t[i].name, victim) == 0) {
            if (mode == 0) continue;
            if (mode == 1) { t[n] = f.t[i]; t[n].shape[0] = 1; n++; continue; }
        }
        t[n++] = f.t[i];
    }
    if (mode == 2) { t[n].name = "language_model.model.extra.weight"; t[n].ndim = 1; t[n].shape[0] = 4; t[n].data = extra; n++; }
    st_write(p, t, n, NULL);
    free(t);
    st_free(&f);
    free(p);
}

/* Puts a NaN into the first float of model.safetensors' data. */
static void poison(const char *dir) {
    char *p = xasprintf("%s/model.safetensors", dir);
    size_t n;
    unsigned char *b = (unsigned char *)read_file(p, &n);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)b[i] << (8 * i);
    uint32_t nan = 0x7fc00000u;
    memcpy(b + 8 + hl, &nan, 4);
    write_file_atomic(p, b, n);
    free(b); free(p);
}

/* Replaces the first occurrence of `from` by `to` in a text file. */
static void edit(const char *file, const char *from, const char *to) {
    char *s = read_file(file, NULL);
    char *at = strstr(s, from);
    CHECK(at);
    char *out = xasprintf("%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    write_file_atomic(file, out, strlen(out));
    free(s); free(out);
}

static float *g_pix;

static void score_all(Model *m, ScoreResult *r) {
    int ids1[12] = {1, 3, 40, 41, 42, 43, 50, 51, 52, 2};
    int ids2[8] = {1, 60, 61, 62, 70, 71, 2};
    ScoreItem it[2] = {{ids1, 10, 6, g_pix}, {ids2, 7, 4, NULL}};
    model_score(m, it, 2, 0, r);
}

static void test_roundtrip(Tokenizer *tok) {
    LlavaConfig c = tiny();
    Model *m = model_new(&c);
    model_init(m, 21);
    Preproc pre = preproc_default(&c);
    Provenance pv = {"pretrain", "small", 1234, "abcdef0123456789", 777};
    char *d1 = path("ck1", NULL), *d2 = path("ck2", NULL);
    ckpt_save(d1, m, tok, &pre, &pv);
    Checkpoint *ck = ckpt_load(d1);
    TEST(memcmp(ck->model->w, m->w, m->n_floats * sizeof(float)) == 0, "loaded weights are the saved ones");
    TEST(ck->stage && strcmp(ck->stage, "pretrain") == 0 && strcmp(ck->preset, "small") == 0 && ck->seed == 1234 &&
         ck->steps == 777 && strcmp(ck->data_fingerprint, "abcdef0123456789") == 0, "provenance round trip");
    TEST(memcmp(&ck->pre, &pre, sizeof pre) == 0, "preprocessor round trip");
    Provenance pv2 = {ck->stage, ck->preset, ck->seed, ck->data_fingerprint, ck->steps};
    ckpt_save(d2, ck->model, ck->tok, &ck->pre, &pv2);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"};
    for (int i = 0; i < 4; i++) {
        char *a = path("ck1", files[i]), *b = path("ck2", files[i]);
        TEST(same_file(a, b), "save -> load -> save: %s byte-identical", files[i]);
        free(a); free(b);
    }
    ScoreResult r1[2], r2[2];
    score_all(m, r1);
    score_all(ck->model, r2);
    int same = 1;
    for (int i = 0; i < 2; i++) {
        same &= r1[i].n == r2[i].n && memcmp(r1[i].logp, r2[i].logp, (size_t)r1[i].n * sizeof(float)) == 0;
        score_result_free(&r1[i]); score_result_free(&r2[i]);
    }
    TEST(same, "the loaded checkpoint scores identically");
    /* overwrite in place: the directory is replaced whole, no .tmp / .old left */
    ckpt_save(d1, m, tok, &pre, NULL);
    char *t1 = path("ck1.tmp", NULL), *t2 = path("ck1.old", NULL);
    TEST(dir_exists(d1) && !file_exists(t1) && !file_exists(t2), "overwrite leaves no temporaries");
    free(t1); free(t2);
    ckpt_free(ck);

    /* adapters */
    LoraConfig lc = {4, 8.0f, 0.05f, "llm,projector", 5};
    lora_attach(m, &lc);
    Rng r;
    rng_seed(&r, 3);
    for (size_t k = 0; k < m->lora.n_floats; k++) m->lora.w[k] += 0.1f * rng_normal(&r);
    char *a1 = path("ad1", NULL), *a2 = path("ad2", NULL);
    adapter_save(a1, m, d1, &pv);
    Model *m2 = model_new(&c);
    model_init(m2, 21);
    adapter_load(a1, m2);
    TEST(m2->lora.n == m->lora.n && m2->lora.r == 4 && m2->lora.alpha == 8.0f && fabsf(m2->lora.dropout - 0.05f) < 1e-7f,
         "adapter config round trip");
    TEST(memcmp(m2->lora.w, m->lora.w, m->lora.n_floats * sizeof(float)) == 0, "adapter weights round trip");
    adapter_save(a2, m2, d1, &pv);
    char *f1 = path("ad1", "adapter_model.safetensors"), *f2 = path("ad2", "adapter_model.safetensors");
    char *g1 = path("ad1", "adapter_config.json"), *g2 = path("ad2", "adapter_config.json");
    TEST(same_file(f1, f2) && same_file(g1, g2), "adapter save -> load -> save byte-identical");
    char *cfgtext = read_file(g1, NULL);
    TEST(strstr(cfgtext, "\"peft_type\": \"LORA\"") && strstr(cfgtext, "language_model.model.layers.1.mlp.down_proj") &&
         strstr(cfgtext, "\"task_type\": \"CAUSAL_LM\""), "adapter_config.json has PEFT's fields");
    free(cfgtext);
    StFile sf;
    st_read(f1, &sf);
    TEST(st_find(&sf, "base_model.model.multi_modal_projector.linear_1.lora_A.weight") &&
         st_find(&sf, "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_B.weight"), "PEFT tensor names");
    st_free(&sf);
    score_all(m, r1);
    score_all(m2, r2);
    same = 1;
    for (int i = 0; i < 2; i++) {
        same &= memcmp(r1[i].logp, r2[i].logp, (size_t)r1[i].n * sizeof(float)) == 0;
        score_result_free(&r1[i]); score_result_free(&r2[i]);
    }
    TEST(same, "a loaded adapter scores identically");
    free(f1); free(f2); free(g1); free(g2);
    free(a1); free(a2); free(d1); free(d2);
    model_free(m); model_free(m2);
}

static const char *g_dir;
static void do_adapter(const char *dir) {
    Checkpoint *ck = ckpt_load(g_dir);
    adapter_load(dir, ck->model);
    ckpt_free(ck);
}
static void do_image(const char *file) {
    LlavaConfig c = tiny();
    Preproc p = preproc_default(&c);
    free(preproc_load(&p, file));
}

static void test_malformed(void) {
    char *good = path("ck1", NULL), *bad = path("bad", NULL);
    TEST(child_status(do_load, good) == 0, "the good checkpoint loads in a child");
    struct { int mode; const char *victim; const char *what; } tam[] = {
        {0, "language_model.model.layers.1.mlp.up_proj.weight", "missing tensor"},
        {1, "vision_tower.vision_model.embeddings.position_embedding.weight", "shape mismatch"},
        {2, "", "unexpected tensor"},
    };
    for (int i = 0; i < 3; i++) {
        copy_ckpt(good, bad);
        tamper(bad, tam[i].victim, tam[i].mode);
        TEST(child_status(do_load, bad) == 2, "%s refused with exit 2", tam[i].what);
    }
    copy_ckpt(good, bad);
    poison(bad);
    TEST(child_status(do_load, bad) == 2, "NaN weight refused with exit 2");
    struct { const char *file, *from, *to, *what; } ed[] = {
        {"config.json", "\"num_attention_heads\": 4", "\"num_attention_heads\": 3", "heads not dividing the width"},
        {"config.json", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 0", "zero layers"},
        {"config.json", "\"vocab_size\": 300", "\"vocab_size\": 99999999", "absurd vocabulary"},
        {"config.json", "\"hidden_size\": 16", "\"hidden_size\": 32", "config wider than the weights"},
        {"config.json", "\"bos_token_id\": 1", "\"bos_token_id\": 5", "bos id disagreeing with the tokenizer"},
        {"config.json", "\"image_token_index\": 3", "\"image_token_index\": 7", "image id disagreeing with the tokenizer"},
        {"config.json", "{", "[", "config not an object"},
        {"preprocessor_config.json", "\"height\": 8", "\"height\": 9", "preprocessor size disagreeing"},
        {"preprocessor_config.json", "0.26862954", "0", "zero std"},
        {"tokenizer.json", "\"<image>\"", "\"<img>\"", "tokenizer without <image>"},
    };
    for (size_t i = 0; i < sizeof ed / sizeof ed[0]; i++) {
        copy_ckpt(good, bad);
        char *f = xasprintf("%s/%s", bad, ed[i].file);
        edit(f, ed[i].from, ed[i].to);
        TEST(child_status(do_load, bad) == 2, "%s refused with exit 2", ed[i].what);
        free(f);
    }
    copy_ckpt(good, bad);
    char *pp = xasprintf("%s/preprocessor_config.json", bad);
    remove(pp);
    TEST(child_status(do_load, bad) == 2, "missing preprocessor_config.json refused");
    free(pp);
    char *none = path("nothing-here", NULL);
    TEST(child_status(do_load, none) == 2, "missing directory refused");
    free(none);

    /* adapters */
    g_dir = good;
    char *ad = path("ad1", NULL), *adb = path("adbad", NULL);
    TEST(child_status(do_adapter, ad) == 0, "the good adapter loads in a child");
    const char *afiles[] = {"adapter_config.json", "adapter_model.safetensors"};
    struct { const char *file, *from, *to, *what; } aed[] = {
        {"adapter_config.json", "language_model.model.layers.1.mlp.down_proj", "language_model.model.layers.9.mlp.down_proj", "unknown target module"},
        {"adapter_config.json", "\"r\": 4", "\"r\": 5", "rank disagreeing with the tensors"},
        {"adapter_config.json", "\"LORA\"", "\"IA3\"", "not LoRA"},
        {"adapter_config.json", "\"use_rslora\": false", "\"use_rslora\": true", "rslora"},
        {"adapter_config.json", "\"layers_to_transform\": null", "\"layers_to_transform\": [0]", "only some layers"},
        {"adapter_config.json", "\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]", "whole modules saved"},
        {"adapter_config.json", "\"rank_pattern\": {}", "\"rank_pattern\": [\"x\"]", "a rank pattern that is not an object"},
    };
    for (size_t i = 0; i < sizeof aed / sizeof aed[0]; i++) {
        remove_tree(adb);
        make_dirs(adb);
        for (int k = 0; k < 2; k++) {
            char *a = xasprintf("%s/%s", ad, afiles[k]), *b = xasprintf("%s/%s", adb, afiles[k]);
            copy_file(a, b);
            free(a); free(b);
        }
        char *f = xasprintf("%s/%s", adb, aed[i].file);
        edit(f, aed[i].from, aed[i].to);
        TEST(child_status(do_adapter, adb) == 2, "adapter: %s refused with exit 2", aed[i].what);
        free(f);
    }
    /* an adapter file lacking one lora_B */
    {
        char *a = xasprintf("%s/adapter_model.safetensors", ad), *b = xasprintf("%s/adapter_model.safetensors", adb);
        char *ca = xasprintf("%s/adapter_config.json", ad), *cb = xasprintf("%s/adapter_config.json", adb);
        copy_file(ca, cb);
        StFile f;
        st_read(a, &f);
        st_write(b, f.t, f.n - 1, NULL);
        st_free(&f);
        TEST(child_status(do_adapter, adb) == 2, "adapter: missing lora_B refused with exit 2");
        free(a); free(b); free(ca); free(cb);
    }
    /* images of the wrong size */
    char *img = path("big.png", NULL);
    uint8_t rgb[10 * 10 * 3] = {0};
    png_write(img, 10, 10, rgb);
    TEST(child_status(do_image, img) == 2, "image of the wrong size refused with exit 2");
    free(img);
    free(ad); free(adb);
    free(good); free(bad);
}

/* PNG -> pixels follows (v/255 - mean) / std, channels first. */
static void test_preproc(void) {
    LlavaConfig c = tiny();
    Preproc p = preproc_default(&c);
    uint8_t rgb[8 * 8 * 3];
    for (int i = 0; i < 8 * 8 * 3; i++) rgb[i] = (uint8_t)(i * 7);
    char *f = path("face.png", NULL);
    png_write(f, 8, 8, rgb);
    float *px = preproc_load(&p, f);
    double maxd = 0;
    for (int ch = 0; ch < 3; ch++)
        for (int i = 0; i < 64; i++) {
            double want = (rgb[i * 3 + ch] / 255.0 - p.mean[ch]) / p.std[ch];
            maxd = fmax(maxd, fabs(want - px[ch * 64 + i]));
        }
    TEST(maxd < 1e-5, "CLIP normalisation, CHW (max diff %.3g)", maxd);
    g_pix = px;
    free(f);
}

/* Runs a command in a child with stdout to a file; returns the exit status. */
static int run_cmd(int (*cmd)(int, char **), char **argv, int argc, const char *out) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(out, "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(99);
        int rc = cmd(argc, argv);
        fflush(stdout);
        _exit(rc);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static void test_commands(void) {
    /* a config file for init: the tiny model */
    LlavaConfig c = tiny();
    Json *cj = config_to_json(&c);
    char *cfg = path("tiny.json", NULL), *ck = path("init", NULL), *out = path("out.txt", NULL);
    char *corp = path("corpus", NULL), *cf = path("corpus", "a.txt");
    make_dirs(corp);
    write_file_atomic(cf, CORPUS, strlen(CORPUS));
    json_save(cfg, cj);
    json_free(cj);
    char *a1[] = {"--config", cfg, "--out", ck, "--seed", "5", "--corpus", corp};
    TEST(run_cmd(cmd_init, a1, 8, out) == 0, "pulse init");
    Checkpoint *k = ckpt_load(ck);
    TEST(k->seed == 5 && strcmp(k->stage, "init") == 0, "init provenance");
    /* init is deterministic */
    char *ck2 = path("init2", NULL);
    char *a1b[] = {"--config", cfg, "--out", ck2, "--seed", "5", "--corpus", corp};
    run_cmd(cmd_init, a1b, 8, out);
    char *m1 = path("init", "model.safetensors"), *m2 = path("init2", "model.safetensors");
    char *t1 = path("init", "tokenizer.json"), *t2 = path("init2", "tokenizer.json");
    TEST(same_file(m1, m2) && same_file(t1, t2), "pulse init twice: identical files");
    free(m1); free(m2); free(t1); free(t2); free(ck2);
    /* init refuses a vocabulary the corpus cannot fill */
    Json *cj2 = config_to_json(&c);
    json_set(json_get(cj2, "text_config"), "vocab_size", json_new_number(5000));
    json_save(cfg, cj2);
    json_free(cj2);
    char *ck3 = path("init3", NULL);
    char *a1c[] = {"--config", cfg, "--out", ck3, "--corpus", corp};
    TEST(run_cmd(cmd_init, a1c, 6, out) == 2, "init with an unreachable vocab_size exits 2");
    /* a --corpus that is missing or holds no .txt file is refused, not replaced by the
     * built-in text; nothing is written */
    char *cfg_ok = path("tiny-ok.json", NULL), *nocorp = path("no-such-corpus", NULL), *empty = path("empty-corpus", NULL);
    Json *cj3 = config_to_json(&c);
    json_save(cfg_ok, cj3);
    json_free(cj3);
    make_dirs(empty);
    char *a1d[] = {"--config", cfg_ok, "--out", ck3, "--corpus", nocorp};
    TEST(run_cmd(cmd_init, a1d, 6, out) == 2 && !file_exists(ck3), "init with a missing --corpus exits 2, writes nothing");
    char *a1e[] = {"--config", cfg_ok, "--out", ck3, "--corpus", empty};
    TEST(run_cmd(cmd_init, a1e, 6, out) == 2 && !file_exists(ck3), "init with a --corpus without .txt exits 2, writes nothing");
    char *a1f[] = {"--config", cfg_ok, "--out", ck3, "--corpus", corp};
    TEST(run_cmd(cmd_init, a1f, 6, out) == 0 && file_exists(ck3), "init with the test corpus and this config");
    free(cfg_ok); free(nocorp); free(empty);
    free(ck3);

    /* score with an image: JSON fields against model_score */
    char *img = path("face.png", NULL);
    char *a2[] = {"--model", ck, "--image", img, "--prompt", "Who is this?", "--answer", "A teacher."};
    TEST(run_cmd(cmd_score, a2, 8, out) == 0, "pulse score");
    char *txt = read_file(out, NULL);
    Json *j = json_parse(txt, strlen(txt), NULL, 0);
    TEST(j && json_get(j, "input_ids") && json_get(j, "logprobs"), "score prints JSON");
    if (j && json_get(j, "input_ids")) {
        int ids[128], as, n = tok_encode_chat(k->tok, "Who is this?", 1, "A teacher.", ids, 128, &as);
        ScoreItem it = {ids, n, as, g_pix};
        ScoreResult r;
        model_score(k->model, &it, 1, 0, &r);
        const Json *in = json_get(j, "input_ids"), *lp = json_get(j, "logprobs");
        int Np = config_num_patches(&c);
        TEST((int)in->len == n + Np - 1, "input_ids: %zu, want %d (image expanded)", in->len, n + Np - 1);
        TEST((int)json_get_number(j, "answer_start", -1, "x") == as + Np - 1, "answer_start in merged positions");
        TEST((int)lp->len == n - as && fabs(json_get_number(j, "sum_logprob", 0, "x") - r.sum) < 1e-9, "logprobs incl. EOS and their sum");
        int n_img = 0;
        for (size_t i = 0; i < in->len; i++) n_img += (int)in->items[i]->number == c.image_token_index;
        TEST(n_img == Np, "one image token per patch in input_ids");
        score_result_free(&r);
    }
    json_free(j);
    free(txt);
    char *a3[] = {"--model", ck, "--prompt", "Who is this?", "--max-new", "5", "--json"};
    TEST(run_cmd(cmd_generate, a3, 7, out) == 0, "pulse generate");
    txt = read_file(out, NULL);
    j = json_parse(txt, strlen(txt), NULL, 0);
    TEST(j && json_get(j, "ids") && json_get(j, "ids")->len <= 5, "generate --json");
    json_free(j);
    free(txt);
    char *a4[] = {"--model", ck, "--prompt", "<image> sneaky", "--answer", "x"};
    TEST(run_cmd(cmd_score, a4, 6, out) == 2, "an <image> in the text without --image exits 2");
    ckpt_free(k);
    free(img); free(cfg); free(ck); free(out); free(corp); free(cf);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/pulse-test-ckpt-XXXXXX");
    CHECK(mkdtemp(root));
    Tokenizer *tok = tiny_tok();
    test_preproc();
    test_roundtrip(tok);
    test_malformed();
    test_commands();
    tok_free(tok);
    free(g_pix);
    remove_tree(root);
    return test_summary();
}
