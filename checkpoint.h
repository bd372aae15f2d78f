/* checkpoint.h: model checkpoints and LoRA adapters as HF directories, image preprocessing,
 * and the commands that use a checkpoint directly (init, score, generate).
 *
 * A checkpoint is a directory:
 *   config.json               HF LLaVA config (+ a "pulse" object: provenance)
 *   model.safetensors         F32 tensors, HF names, in parameter-table order
 *   tokenizer.json            HF tokenizers byte-level BPE
 *   preprocessor_config.json  CLIPImageProcessor fields (size, rescale, mean/std)
 * An adapter is a directory:
 *   adapter_config.json       PEFT LoraConfig fields
 *   adapter_model.safetensors base_model.model.<module>.lora_A.weight / lora_B.weight
 *
 * Writers build DIR.tmp and rename it to DIR (an existing DIR is moved aside first and
 * removed after): a reader sees the old directory, the new one, or none, never half of
 * one. Readers validate everything (shapes against the config, missing and unexpected
 * tensors, tokenizer against config) and refuse bad input with die_input (exit 2).
 */
#ifndef PULSE_CHECKPOINT_H
#define PULSE_CHECKPOINT_H

#include <stdint.h>

#include "model.h"

typedef struct Tokenizer Tokenizer;
typedef struct Image Image;

/* Provenance, stored as config.json's "pulse" object. Strings may be NULL (omitted). */
typedef struct Provenance {
    const char *stage;          /* "init", "pretrain", "finetune", "unlearn", ... */
    const char *preset;         /* world preset, e.g. "small" */
    uint64_t seed;
    const char *data_fingerprint;   /* hex digest of the data the weights saw */
    long steps;                 /* optimizer steps taken */
} Provenance;

/* CLIPImageProcessor without resize or crop: images must already be image_size square. */
typedef struct Preproc {
    int image_size;
    int do_rescale, do_normalize;
    double rescale_factor;      /* 1/255 (applied as a float) */
    double mean[3], std[3];     /* CLIP's (OpenAI) values by default */
} Preproc;

typedef struct Checkpoint {
    char *dir;
    Model *model;
    Tokenizer *tok;
    Preproc pre;
    /* provenance as read (strings owned by the checkpoint) */
    char *stage, *preset, *data_fingerprint;
    uint64_t seed;
    long steps;
} Checkpoint;

/* CLIP's preprocessing for c's image size. */
Preproc preproc_default(const LlavaConfig *c);
/* Pixels of an image: checks its size (die_input(path, ...) if not image_size square),
 * rescales and normalises into out [3, S, S] (channels first). */
void preproc_image(const Preproc *p, const Image *img, float *out, const char *path);
/* Reads an image file (PNG / PPM) and returns malloc'ed pixels [3, S, S]. */
float *preproc_load(const Preproc *p, const char *path);

/* The tokenizer and the config must agree on the vocabulary size and the special ids;
 * else die_input(path, ...) naming the field that disagrees. */
void ckpt_check_tokenizer(const LlavaConfig *c, const Tokenizer *tok, const char *path);
/* Writes a whole checkpoint directory (see the top of this file). prov may be NULL. */
void ckpt_save(const char *dir, const Model *m, const Tokenizer *tok, const Preproc *pre, const Provenance *prov);
/* Reads and validates a checkpoint directory. */
Checkpoint *ckpt_load(const char *dir);
void ckpt_free(Checkpoint *ck);                      /* model, tokenizer and strings */
/* model.safetensors alone: write (atomic), and strict read into a model of the right config. */
void model_save_weights(const char *path, const Model *m);
void model_load_weights(Model *m, const char *path);

/* Writes m's LoRA adapters as a PEFT adapter directory (base = base_model_name_or_path). */
void adapter_save(const char *dir, const Model *m, const char *base, const Provenance *prov);
/* Reads a PEFT adapter directory and attaches it to m (which must have none). */
void adapter_load(const char *dir, Model *m);

/* Recursively removes a directory tree (our own outputs only); missing is fine. */
void remove_tree(const char *path);

/* pulse init --config CONFIG.json --out DIR [--seed S] */
int cmd_init(int argc, char **argv);
/* pulse score --model CKPT [--adapter DIR] [--image FILE] --prompt TEXT --answer TEXT */
int cmd_score(int argc, char **argv);
/* pulse generate --model CKPT [--adapter DIR] [--image FILE] --prompt TEXT [--max-new N] */
int cmd_generate(int argc, char **argv);

#endif
