/* protocol.h: `pulse run`, the whole PULSE protocol in one resumable command.
 *
 *   pulse run [--preset tiny|small|paper] [--seed S] [--out RUN_DIR] [--methods LIST]
 *             [--settings LIST] [--seq-methods LIST] [--params-methods LIST]
 *             [--ref-policy previous|original] [--jobs N] [--raw DIR] [--quiet]
 *
 * Stages, each skipped when its output exists and carries the hash of its inputs:
 *   0 world          RUN/data/                       data_generate
 *   1 base models    RUN/base_pt/, RUN/base_ft/      train_run, then train_gates -> RUN/gates.json
 *   2 celebrities    RUN/celebrities.json            per-person accuracy of base_pt, top-K, split
 *   3 oracles        RUN/oracle_ft/, RUN/oracle_pt/  retrained without the forget people
 *   4 cells          RUN/cells/<id>/                 unlearn_run + eval_run per (setting, method)
 *   5 report         RUN/report.md, results.csv, results.json, plots/   (report.h)
 * docs/protocol.md describes every stage, its files and the resumption rules.
 */
#ifndef PULSE_PROTOCOL_H
#define PULSE_PROTOCOL_H

/* Bumped when the meaning of a stage changes: every stage hash includes it, so a run
 * directory made by an older protocol is recomputed rather than trusted. */
#define PROTOCOL_VERSION 1

/* `pulse run`: returns 0 on success, 3 when a training test hook stopped it early
 * (PULSE_TRAIN_STOP_AFTER); bad flags or input -> exit 2. */
int cmd_run(int argc, char **argv);

#endif
