/* data.h: the synthetic world (people, faces, scenes, facts), its benchmark files, and the
 * API that training, evaluation and unlearning read it through.
 *
 * A world is a directory written by `pulse data` (data_generate) and read back, validated,
 * by world_load. Everything is deterministic from (preset, seed, raw material in data/).
 *
 * - People (Person): fictitious (learned in fine-tuning), celebrities (learned in
 *   pre-training), holdout (never trained). Each has a 32x32 face, a unique name and
 *   attribute values (occupation, birthplace, education, hobby, favourite colour, birth year;
 *   the first n_attrs are asked about).
 * - Anonymous faces: faces of nobody in the world, each with a description of what it looks
 *   like (pre-training, format face_desc), so that the vision tower learns facial features
 *   before it meets any person. They have images and training items, nothing else.
 * - In-context multiple choice (pre-training, format mc_context): a fact about an invented
 *   person (nobody in the world) stated in the stem, then the world's MC question about it,
 *   so that picking the letter of the stated value is learned as a generic skill.
 * - Training items (Item): one per (person or scene or fact or anonymous face, format,
 *   modality). An item holds
 *   one or more variants (question phrasings); item_render picks one and, for multiple
 *   choice, draws the options and the correct letter, fresh for every call with an Rng.
 * - Evaluation items (EvalItem): fixed prompts, options and answers, in MLLMU-Bench's four
 *   tasks (multiple choice, cloze, generation, plus the QA pairs with paraphrased and
 *   perturbed answers for probability metrics), from the profile files (forget, retain,
 *   celebrity and holdout sets select people from them), the test set (paraphrased
 *   questions, transformed images) and genbench (general capability).
 * - Splits: person lists by name ("forget_10", "retain_90", "seq_3", "celebrity",
 *   "holdout", ...).
 *
 * Indices: people, images and items are addressed by their index in the World arrays;
 * Person.id is the "ID" of the files (MLLMU-Bench style, 1-based).
 */
#ifndef PULSE_DATA_H
#define PULSE_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define DATA_IMAGE_SIZE 32          /* images are DATA_IMAGE_SIZE^2 RGB */
#define DATA_MAX_ATTRS 6            /* attributes a person has (the preset asks about n_attrs) */
#define DATA_MC_OPTIONS 4           /* A-D */
#define DATA_TEST_VARIANTS 3        /* test-set image transformations: mirror, zoom, tint */
#define DATA_FACE_PARAMS 15         /* identity parameters of a face (see data.c) */

/* The user-side instruction lines (MLLMU-Bench's, see docs/world.md). */
#define DATA_MC_INSTRUCTION "Just give ONE letter representing the answer directly."
#define DATA_CLOZE_INSTRUCTION "Please **ONLY** provide the correct answer that should replace the [Blank]."
#define DATA_GEN_INSTRUCTION_IMAGE "Answer the question based on your trained knowledge in one sentence accurately in ENGLISH."
#define DATA_GEN_INSTRUCTION_TEXT "Answer the question based on your trained knowledge in one sentence in ENGLISH."

typedef enum { KIND_FICTITIOUS, KIND_CELEBRITY, KIND_HOLDOUT, KIND_GENERAL, N_KINDS } Kind;

/* Training formats. Person formats: QA (free-form answer sentence), MC (letter), CLOZE,
 * GEN (generation instruction), BIO (biography, text), CAPTION (face -> name). General:
 * scene captions, scene VQA (short free-form answer), scene MC, facts (free form and MC),
 * FACE_DESC (the face of nobody in the world -> a description of its appearance), and
 * MC_CONTEXT (in-context MC: "Mara Lind is a pilot. What is the job of Mara Lind?" with
 * options -> the letter; the invented person is nobody in the world). */
typedef enum {
    FMT_QA, FMT_MC, FMT_CLOZE, FMT_GEN, FMT_BIO, FMT_CAPTION,
    FMT_SCENE_CAPTION, FMT_SCENE_VQA, FMT_SCENE_MC, FMT_FACT, FMT_FACT_MC, FMT_FACE_DESC,
    FMT_MC_CONTEXT, N_FORMATS
} Format;
#define FMT_BIT(f) (1u << (f))
#define FMT_ALL 0u                  /* in a format mask: every format */

enum { STAGE_PT = 1, STAGE_FT = 2 };                    /* bit mask */
enum { MOD_ANY = 0, MOD_IMAGE = 1, MOD_TEXT = 2 };      /* modality filters */

/* Evaluation tasks: MLLMU-Bench's three, plus QA = the metadata pairs with a paraphrased
 * answer and perturbed (wrong) answers (truth ratio, probability, membership inference). */
typedef enum { TASK_MC, TASK_CLOZE, TASK_GEN, TASK_QA, N_TASKS } Task;
#define TASK_BIT(t) (1u << (t))
#define TASK_ALL 0u

/* Where an evaluation item comes from: a person's profile (full.jsonl, celebrity.jsonl,
 * holdout.jsonl), the test set (test.jsonl: fictitious people, paraphrased questions,
 * transformed images), or genbench.jsonl. */
typedef enum { EVAL_PROFILE, EVAL_TEST, EVAL_GENBENCH } EvalSource;

/* World sizes. Every count is a field so that a preset is one row of a table. */
typedef struct Preset {
    const char *name;
    int n_fictitious;           /* MLLMU-Bench: 500 */
    int n_celebrity;            /* candidates; MLLMU-Bench: 153 */
    int celeb_keep;             /* kept by measured accuracy; PULSE: 45 */
    int celeb_forget;           /* of those, forgotten; PULSE: 20 (the rest retained: 25) */
    int n_holdout;              /* never trained (membership-inference baselines) */
    int n_forget[3];            /* forget_5, forget_10, forget_15 sizes (nested) */
    int n_seq;                  /* forget_10 cut into this many sequential groups */
    int n_attrs;                /* attributes asked about (first n of DATA_MAX_ATTRS) */
    int n_scenes_train;         /* genbench training scenes (pre-training pool) */
    int n_genbench_scene;       /* held-out genbench scene questions */
    int n_genbench_fact;        /* held-out genbench text-fact questions */
    int n_faces_desc;           /* anonymous faces with a description (pre-training pool) */
    int n_mc_context;           /* in-context MC items about invented people (pre-training pool) */
    int vocab_size;             /* BPE vocabulary of tokenizer.json */
    int scene_lookup;           /* 1: each training scene also asks a figure's place by its
                                   colour or its shape alone, where that one names it
                                   (docs/training.md, "The place by one attribute") */
} Preset;

/* The preset of that name, or NULL. */
const Preset *preset_find(const char *name);
/* The table, NULL-terminated by name (for --help). */
extern const Preset data_presets[];

typedef struct Attribute {
    const char *name;           /* "occupation", "birthplace", "education", "hobby", "colour", "year" */
    int n_values;
    const char **values;        /* the attribute's vocabulary (MC distractor pool) */
} Attribute;

typedef struct Person {
    int id;                     /* "ID" in the files, 1-based, unique */
    Kind kind;
    const char *name;           /* unique full name */
    int fame;                   /* celebrities: 1..3 = pre-training repeat; else 0 */
    int value[DATA_MAX_ATTRS];  /* index into attrs[a].values */
    const char *country;        /* country of the birthplace */
    const char *biography;
    int face[DATA_FACE_PARAMS]; /* identity parameters the face was drawn from */
    int image;                  /* training image (index into World.images) */
    int test_image[DATA_TEST_VARIANTS]; /* test-set transformed images */
} Person;

typedef struct WorldImage {
    const char *path;           /* relative to the world directory, e.g. "images/p0007.png" */
    uint8_t rgb[DATA_IMAGE_SIZE * DATA_IMAGE_SIZE * 3];
} WorldImage;

/* One phrasing of a training item. For MC formats: the correct option text and the pool
 * of wrong ones; `answer` then holds the correct text too (the rendered answer is the letter). */
typedef struct Variant {
    const char *question;       /* the stem: MC without options, cloze with "__" */
    const char *answer;
    const char *correct;        /* MC only, else NULL */
    const char **distractors;   /* MC only */
    int n_distractors;
    uint64_t avoid;             /* MC: hash of the evaluation's option order for this stem (0: none) */
} Variant;

typedef struct Item {
    int index;                  /* position in World.items */
    int stage;                  /* STAGE_PT or STAGE_FT */
    int person;                 /* index into World.people, -1 for general items */
    Kind kind;
    Format format;
    int attr;                   /* attribute index, -1 if none */
    int image;                  /* index into World.images, -1 for text-only */
    int repeat;                 /* suggested presentations per epoch (celebrity fame), >= 1 */
    int n_variants;
    Variant *variants;          /* [0] is the canonical phrasing */
} Item;

typedef struct EvalItem {
    EvalSource source;
    int person;                 /* index into World.people, -1 for genbench */
    int attr;                   /* attribute index, -1 for genbench */
    Task task;
    int image;                  /* index into World.images, -1 for text-only */
    const char *category;       /* genbench: "count", "shape", "colour", "position", "fact"; else NULL */
    const char *question;       /* as in the file: MC stem, cloze with "__", generation/QA question */
    const char *prompt;         /* the user turn, rendered (options, [Blank], instruction line) */
    const char *options[DATA_MC_OPTIONS]; /* MC only */
    int n_options;
    /* Person MC only (NULL for genbench): the trained answer sentence with each option's
     * value filled in ("Luke Pike is a teacher."); [correct] is the QA twin's answer.
     * Likelihood scoring scores these instead of the bare option text. */
    const char *option_answers[DATA_MC_OPTIONS];
    int correct;                /* MC: index of the correct option */
    const char *answer;         /* reference response: the letter (MC), the value (cloze), the sentence (gen, QA) */
    const char *truth;          /* the value itself ("doctor"); MC: options[correct] */
    const char *paraphrased_answer; /* QA only, else NULL */
    const char **perturbed;     /* QA only: wrong answers in the same wording */
    int n_perturbed;
} EvalItem;

typedef struct Split {
    const char *name;           /* "forget_5", "retain_95", "seq_1", "celebrity", "holdout", ... */
    int n;
    int *people;                /* person indices, in the file's order */
} Split;

typedef struct World {
    char *dir;
    Preset preset;              /* the sizes it was generated with (name points into World) */
    uint64_t seed;
    uint64_t fingerprint;       /* hash of manifest.tsv (every file) and world.json */
    int n_attrs;                /* attributes asked about */
    Attribute attrs[DATA_MAX_ATTRS];
    const char **countries;     /* country of each birthplace value */
    int n_people;
    Person *people;
    int n_images;
    WorldImage *images;
    int n_items;
    Item *items;
    int n_eval;
    EvalItem *eval;
    int n_splits;
    Split *splits;
    int n_idk;
    const char **idk;           /* "I don't know" answers */
    void *pool;                 /* owns every string above */
} World;

/* Scenes (genbench) put one figure in at most each quadrant, named in this order, and ask
 * about it with these phrasings (among the scene_vqa item's variants); the vision warm-up
 * (train.c) reads its labels by them. */
extern const char *const data_quadrant_names[4];
#define DATA_SCENE_Q_SHAPE "What shape is at the %s?"
#define DATA_SCENE_Q_COLOUR "What colour is the shape at the %s?"

/* ----------------------------------------------------------------------------
 * Generating and loading */

/* Writes the whole world for (preset, seed) into out_dir (via out_dir.tmp, then rename),
 * reading the raw material from raw_dir (NULL: data/ next to the pulse executable, else
 * ./data). Refuses an existing non-empty out_dir that is not a pulse world; replaces one
 * that is. Prints a two-line summary on stderr. */
void data_generate(const Preset *p, uint64_t seed, const char *raw_dir, const char *out_dir);
/* The raw material's directory: data/ next to the executable (the repository), else
 * ./data. malloc'ed. */
char *data_default_raw_dir(void);
/* `pulse data [--preset P] [--seed S] [--raw DIR] --out DIR`. */
int cmd_data(int argc, char **argv);

/* Reads and validates a world directory (every file against the manifest's hashes, every
 * record's fields); bad or missing file -> die_input, one line, exit 2. */
World *world_load(const char *dir);
void world_free(World *w);
/* Re-seals a world after a deliberate edit (tests, tests/fuzz_inputs.py): every manifest
 * entry's hash and size recomputed, then the fingerprint, as `pulse data` writes them. The
 * records themselves are checked only when world_load reads them. */
void world_reseal(const char *dir);

/* ----------------------------------------------------------------------------
 * Looking things up */

int world_person_index(const World *w, int id);                 /* -1 if no such ID */
const char *world_value(const World *w, const Person *p, int attr); /* the person's value text */
/* The split of that name (NULL if none); its people are person indices. */
const Split *world_split(const World *w, const char *name);
/* A comma list of person IDs (Person.id) and split names ("forget_10", "celebrity", ...)
 * as person indices: malloc'ed (free()), sorted, without duplicates, count in *n (may be
 * 0). A token that is neither -> die_input naming `what` (e.g. "unlearn: --forget"). */
int *world_parse_people(const World *w, const char *spec, const char *what, int *n);
/* Person indices of one kind, malloc'ed (free()), count in *n. */
int *world_people_of_kind(const World *w, Kind kind, int *n);
int world_image_find(const World *w, const char *path);         /* -1 if none */

const char *kind_name(Kind k);          /* "fictitious", "celebrity", "holdout", "general" */
const char *format_name(Format f);      /* "qa", "mc", ..., "face_desc", "mc_context" */
/* 1 for the multiple-choice formats (mc, scene_mc, fact_mc, mc_context): rendered with
 * options and the instruction line, answered by a letter. */
int format_is_mc(Format f);
/* 1 for the general-capability formats genbench tests (scene_caption, scene_vqa,
 * scene_mc, fact, fact_mc). */
int format_is_general(Format f);
const char *task_name(Task t);          /* "mc", "cloze", "gen", "qa" */

/* ----------------------------------------------------------------------------
 * Training items */

/* Which training items: stages (STAGE_PT | STAGE_FT), format mask (FMT_BIT(..) | ..., or
 * FMT_ALL), modality (MOD_ANY/MOD_IMAGE/MOD_TEXT), and a person filter: people == NULL
 * keeps everything; otherwise exclude == 0 keeps only items about these people (general
 * items dropped) and exclude == 1 keeps everything except items about them. */
typedef struct Select {
    int stages;
    unsigned formats;
    int modality;
    const int *people;
    int n_people;
    int exclude;
} Select;

/* The selected items in World order, as a malloc'ed array of pointers (free()), count in *n. */
const Item **world_select(const World *w, const Select *s, int *n);

/* Renders an item into the user's question text (instruction lines and, for MC, options
 * included; no chat template) and the expected answer (the letter for MC). With an rng the
 * variant, the options and the correct letter are drawn from it (a fresh arrangement on every
 * call, never the evaluation's); with rng == NULL the canonical variant and a fixed
 * arrangement are used. *has_image = item->image >= 0. Returns 0, or -1 if a buffer was too
 * small (the text is then truncated). */
int item_render(const Item *it, Rng *rng, char *question, size_t qn, char *answer, size_t an, int *has_image);

/* The chat form of one turn (LLaVA-1.5): "USER: <image>\n{question} ASSISTANT:" (no
 * "<image>\n" without an image), followed by " {answer}" when answer != NULL. Returns the
 * length like snprintf. */
int chat_render(char *buf, size_t n, const char *question, int has_image, const char *answer);

/* Pixels of an image for the vision tower: 3 x 32 x 32 floats, channels first, normalised
 * with CLIP's mean and std. With aug != NULL, the training augmentation is applied first
 * (random shift of up to 2 px with edge replication, brightness x[0.85, 1.15], Gaussian
 * noise of sd 0.03), drawn from aug; test-set transformations are never part of it. */
void world_image_pixels(const World *w, int image, Rng *aug, float *chw);
extern const float data_clip_mean[3], data_clip_std[3];

/* ----------------------------------------------------------------------------
 * Evaluation items */

/* Evaluation items of one source about the given people (people == NULL: all of that
 * source; ignored for genbench), tasks in task_mask (TASK_ALL: all), modality filter.
 * malloc'ed array of pointers (free()), count in *n. */
const EvalItem **world_eval_select(const World *w, EvalSource src, const int *people, int n_people,
                                   unsigned task_mask, int modality, int *n);

/* What likelihood scoring scores as option op's answer to an MC item's stem: the trained
 * answer sentence with that option's value (option_answers[op]) for person items, the
 * option text itself for genbench. */
const char *mc_option_answer(const EvalItem *e, int op);

#endif
