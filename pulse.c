/* pulse.c: main and the command dispatcher.
 *
 * Every command is a function `int cmd_NAME(int argc, char **argv)` that lives in the
 * module it belongs to and receives the arguments after its name. Exit status:
 * 0 success, 1 internal failure, 2 bad input or usage (see common.h).
 */
#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "common.h"
#include "data.h"
#include "eval.h"
#include "io.h"
#include "model.h"
#include "protocol.h"
#include "report.h"
#include "tensor.h"
#include "tokenizer.h"
#include "train.h"
#include "unlearn.h"

typedef struct Command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} Command;

static int cmd_bench(int argc, char **argv);

/* COMMANDS: one row per command; modules add their row here. */
static const Command commands[] = {
    {"bench", cmd_bench, "bench [kernels|train|eval]   throughput figures"},
    {"data", cmd_data, "data [--preset P] [--seed S] [--raw DIR] --out DIR   write the synthetic world"},
    {"init", cmd_init, "init --config CONFIG.json --out CKPT [--seed S]   a random checkpoint"},
    {"score", cmd_score, "score --model CKPT [--adapter DIR] [--image FILE] --prompt TEXT --answer TEXT   per-token log-probs as JSON"},
    {"generate", cmd_generate, "generate --model CKPT [--adapter DIR] [--image FILE] --prompt TEXT [--max-new N]   greedy answer"},
    {"pretrain", cmd_pretrain, "pretrain --data DIR --out CKPT [--preset P] [--seed S]   train base_pt"},
    {"finetune", cmd_finetune, "finetune --data DIR --base CKPT --out CKPT   train base_ft from base_pt"},
    {"tokenize", cmd_tokenize, "tokenize (--tokenizer FILE | --model CKPT) TEXT...   token ids as JSON"},
    {"unlearn", cmd_unlearn, "unlearn --data DIR --model CKPT --method M --setting finetuned|pretrained --out DIR [...]   one unlearning operation"},
    {"eval", cmd_eval, "eval --data DIR --model CKPT [--adapter DIR] [--sets ...] --out DIR   every metric, results.json"},
    {"run", cmd_run, "run [--preset tiny|small|paper] [--seed S] [--out RUN_DIR] [--methods L] [--settings L]   the whole PULSE protocol, resumable"},
    {"report", cmd_report, "report RUN_DIR   report.md, results.csv, results.json, plots/ of a run"},
    {"inspect", cmd_inspect, "inspect [--tensors] FILE_OR_DIR...   what a checkpoint/adapter/tokenizer/dataset/image is"},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

typedef struct Bench {
    const char *name;
    int (*fn)(int argc, char **argv);
} Bench;

/* BENCHES: one row per bench. */
static const Bench benches[] = {
    {"kernels", cmd_bench_kernels},
    {"train", cmd_bench_train},
    {"eval", cmd_bench_eval},
};

static int cmd_bench(int argc, char **argv) {
    int nb = (int)(sizeof benches / sizeof benches[0]);
    if (argc < 1) {
        char names[128] = "";
        for (int i = 0; i < nb; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", benches[i].name);
        die_input(NULL, "bench: no WHAT given (%s; see pulse bench --help)", names);
    }
    if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        printf("usage: pulse bench WHAT [options]   WHAT is one of:");
        for (int i = 0; i < nb; i++) printf(" %s", benches[i].name);
        printf("\n");
        return 0;
    }
    for (int i = 0; i < nb; i++)
        if (strcmp(argv[0], benches[i].name) == 0) return benches[i].fn(argc - 1, argv + 1);
    die_input(NULL, "bench: unknown bench '%s' (see pulse bench --help)", argv[0]);
}

static void usage(FILE *f) {
    fprintf(f, "pulse: the PULSE unlearning protocol on a tiny LLaVA, in C\n\nusage: pulse COMMAND [options]   (pulse COMMAND --help for each)\n\n");
    for (int i = 0; i < n_commands; i++) fprintf(f, "  %s\n", commands[i].help);
    fprintf(f, "\nexit status: 0 success, 1 internal failure, 2 bad input or usage\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < n_commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 2, argv + 2);
    die_input(NULL, "unknown command '%s' (see pulse --help)", argv[1]);
}
