#!/usr/bin/env python3
"""tests/fuzz_inputs.py: structured fuzzing of every input file pulse reads (`make fuzz`).

Each case copies one input of a finished `tiny` run, edits its JSON in one to three places
(a key deleted, a value of another type or out of range, an array cut or an entry doubled,
a string edited, a JSON-lines record dropped, doubled or cut short), and runs the command
that reads it, under the sanitizer build. Every case must end with exit 0 (the edit is
harmless), or exit 2 with exactly one "pulse: " error line on stderr and no output
directory left behind; anything else (a crash, a sanitizer report, exit 1, a hang, a second
error line) is a failure, and the edited copy is kept for a look. (A LeakSanitizer report
after the one error line is the refused command's buffers, which exit(2) does not free:
counted as refused.)

Modes (what is edited -> what reads it):
  world    a world's JSON files, re-sealed (fuzz_reseal) -> pulse eval
  pretrain its pre-training items (and people, world.json), re-sealed -> pulse pretrain
           (40 steps, no warm-ups)
  finetune its fine-tuning items (and people, world.json), re-sealed -> pulse finetune
           (30 steps from the run's base_pt)
  ckpt     a checkpoint's config.json, preprocessor_config.json, training.json,
           tokenizer.json -> pulse eval
  adapter  an adapter's adapter_config.json -> pulse eval --adapter
  oracle   an oracle's results.json -> pulse eval --oracle
  report   the JSON files of a run directory -> pulse report
  resume   the run's state, cell and model JSON files -> pulse run (the optimised binary)

Prints one line per failure, a summary per mode and "N passed, N failed"; exits 1 on a
failure. Python 3 standard library only.
"""
import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

JUNK = [0, -1, 1, 2, 7, 100000, 2**31, 2**31 - 1, -2**31, 2**53, 2**64, -2**63, 1e308, -1e308, 0.5, -0.5, 1e-300,
        "", "A", "E", "x" * 5000, "images/none.png", "../../etc/passwd", "\u00e9\u4e2d", "\n", "<image>", "%s%n",
        None, True, False, [], {}, [1], ["x"], {"a": 1}, [[]], "forget_10", "mc", "qa", "fictitious", "celebrity"]


def nodes(v, path=()):
    yield path, v
    if isinstance(v, dict):
        for k, x in v.items():
            yield from nodes(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from nodes(x, path + (i,))


def mutate(rng, obj):
    """One edit somewhere in obj; returns (obj, description)."""
    ns = list(nodes(obj))
    path, v = rng.choice(ns)
    if not path:
        return (rng.choice(JUNK), "the whole value replaced") if rng.random() < 0.1 else (obj, "unchanged")
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    r = rng.random()
    if r < 0.2 and isinstance(parent, dict):
        del parent[key]
        return obj, f"{path} deleted"
    if r < 0.3 and isinstance(parent, list):
        del parent[key]
        return obj, f"{path} deleted"
    if r < 0.4 and isinstance(parent, list):
        parent.insert(key, json.loads(json.dumps(v)))
        return obj, f"{path} doubled"
    if r < 0.5 and isinstance(v, str) and len(v) > 1:
        i = rng.randrange(len(v))
        parent[key] = v[:i] + rng.choice(["", "x", " ", '"', "\\", "\u0000", "A"]) + v[i + 1:]
        return obj, f"{path} edited"
    if r < 0.6 and isinstance(v, (int, float)) and not isinstance(v, bool):
        parent[key] = rng.choice([v + 1, v - 1, -v, v * 1000, 0])
        return obj, f"{path} = {parent[key]}"
    if r < 0.7 and isinstance(v, list) and v:
        parent[key] = v[:rng.randrange(len(v))]
        return obj, f"{path} cut"
    if r < 0.8:
        parent[key] = json.loads(json.dumps(rng.choice([x for _, x in ns])))
        return obj, f"{path} = another value of the file"
    parent[key] = rng.choice(JUNK)
    return obj, f"{path} = {str(parent[key])[:40]!r}"


def compact(o):
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False)


def edit_file(rng, path, rel, indent):
    text = open(path, encoding="utf-8").read()
    if rel.endswith(".jsonl"):
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            return f"{rel}: empty, unchanged"
        i = rng.randrange(len(lines))
        r = rng.random()
        if r < 0.05:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            d = f"lines {i + 1} and {j + 1} swapped"
        elif r < 0.1:
            lines.insert(i, lines[i])
            d = f"line {i + 1} doubled"
        elif r < 0.15:
            del lines[i]
            d = f"line {i + 1} dropped"
        elif r < 0.18:
            lines[i] = lines[i][:rng.randrange(len(lines[i]) + 1)]
            d = f"line {i + 1} cut short"
        else:
            o, d = mutate(rng, json.loads(lines[i]))
            lines[i] = compact(o)
            d = f"line {i + 1}: {d}"
        text = "\n".join(lines) + "\n"
    else:
        o, d = mutate(rng, json.loads(text))
        text = (json.dumps(o, indent=2, ensure_ascii=False) + "\n") if indent else compact(o)
    open(path, "w", encoding="utf-8").write(text)
    return f"{rel}: {d}"


def json_files(root, exclude=()):
    out = []
    for p in sorted(glob.glob(root + "/**/*.json*", recursive=True)):
        rel = os.path.relpath(p, root)
        if p.endswith((".json", ".jsonl")) and not any(rel.startswith(e) for e in exclude):
            out.append(rel)
    return out


class Mode:
    def __init__(self, name, src, files, cmd, reseal=False, indent=True, binary="san", out_is_dir=True):
        self.name, self.src, self.files, self.cmd = name, src, files, cmd
        self.reseal, self.indent, self.binary, self.out_is_dir = reseal, indent, binary, out_is_dir


def setup(a, work):
    """A finished tiny run and an adapter, made once with the optimised binary."""
    run = os.path.join(work, "run")
    if not os.path.exists(os.path.join(run, "report.md")):
        print(f"fuzz_inputs: making a tiny run in {run} (about a minute)", flush=True)
        subprocess.run([a.pulse, "run", "--preset", "tiny", "--seed", "1", "--out", run, "--quiet"], check=True)
    adapter = os.path.join(work, "unlearn")
    if not os.path.exists(os.path.join(adapter, "adapter", "adapter_config.json")):
        shutil.rmtree(adapter, ignore_errors=True)
        subprocess.run([a.pulse, "unlearn", "--data", run + "/data", "--model", run + "/base_ft", "--method", "npo",
                        "--setting", "finetuned", "--steps", "5", "--out", adapter, "--quiet"], check=True)
    return run, os.path.join(adapter, "adapter")


def modes(run, adapter):
    data, ft = run + "/data", run + "/base_ft"
    eval_ = ["eval", "--data", data, "--model", ft, "--quiet"]
    return {
        "world": Mode("world", data, json_files(data), lambda c, o: ["eval", "--data", c, "--model", ft, "--tasks",
                      "mc,mc_likelihood,cloze,prob", "--max-new", "4", "--out", o, "--quiet"], reseal=True, indent=False),
        "pretrain": Mode("pretrain", data, ["train_pt.jsonl", "train_pt.jsonl", "people.jsonl", "world.json"],
                         lambda c, o: ["pretrain", "--data", c, "--out", o, "--steps", "40", "--vision-warmup", "0",
                                       "--mixed-warmup", "0", "--mc-warmup", "0", "--scene-warmup", "0", "--no-gates",
                                       "--quiet"], reseal=True, indent=False),
        "finetune": Mode("finetune", data, ["train_ft.jsonl", "train_ft.jsonl", "people.jsonl", "world.json"],
                         lambda c, o: ["finetune", "--data", c, "--base", run + "/base_pt", "--out", o, "--steps", "30",
                                       "--no-gates", "--quiet"], reseal=True, indent=False),
        "ckpt": Mode("ckpt", ft, ["config.json", "preprocessor_config.json", "training.json", "tokenizer.json"],
                     lambda c, o: ["eval", "--data", data, "--model", c, "--sets", "genbench,forget", "--tasks",
                                   "mc,mc_likelihood,gen", "--max-new", "6", "--out", o, "--quiet"]),
        "adapter": Mode("adapter", adapter, ["adapter_config.json"],
                        lambda c, o: eval_ + ["--adapter", c, "--sets", "forget", "--tasks", "mc,gen", "--max-new", "4",
                                              "--out", o]),
        "oracle": Mode("oracle", run + "/cells/finetuned-oracle", ["results.json"],
                       lambda c, o: eval_ + ["--oracle", c, "--sets", "forget,holdout,retain", "--tasks", "prob",
                                             "--out", o]),
        "report": Mode("report", run, json_files(run, ("data/",)), lambda c, o: ["report", c, "--quiet"],
                       out_is_dir=False),
        "resume": Mode("resume", run, [f for f in json_files(run, ("data/",)) if "tokenizer" not in f],
                       lambda c, o: ["run", "--preset", "tiny", "--seed", "1", "--out", c, "--quiet"],
                       binary="pulse", out_is_dir=False),
    }


def copy_src(m, dst):
    if m.name in ("report", "resume"):
        # the run without its world and weights for report (it reads neither); whole for resume
        ignore = shutil.ignore_patterns("data", "*.safetensors") if m.name == "report" else None
        shutil.copytree(m.src, dst, ignore=ignore)
    else:
        shutil.copytree(m.src, dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pulse", default="./pulse", help="the optimised binary (makes the run; resume mode)")
    ap.add_argument("--san", default="build-fuzz/pulse-san", help="the sanitizer build of pulse")
    ap.add_argument("--reseal", default="build-fuzz/tests/fuzz_reseal")
    ap.add_argument("--iters", type=int, default=100, help="cases per mode")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", default="world,pretrain,finetune,ckpt,adapter,oracle,report,resume")
    ap.add_argument("--work", default=None, help="keeps the tiny run between invocations (default: a temporary dir)")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per case, accepted and refused too")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="pulse-fuzz-")
    os.makedirs(work, exist_ok=True)
    run, adapter = setup(a, work)
    all_modes = modes(run, adapter)
    passed = failed = 0
    for name in a.modes.split(","):
        if name not in all_modes:
            sys.exit(f"fuzz_inputs: unknown mode {name!r} (one of {', '.join(all_modes)})")
        m = all_modes[name]
        binary = a.pulse if m.binary == "pulse" else a.san
        rng = random.Random(f"{a.seed}-{name}")
        counts = {"accepted": 0, "refused": 0, "failed": 0}
        # per process, so that two runs may share --work (and its tiny run)
        case_dir, out = os.path.join(work, f"case-{os.getpid()}"), os.path.join(work, f"out-{os.getpid()}")
        for it in range(a.iters):
            shutil.rmtree(case_dir, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            copy_src(m, case_dir)
            what = [edit_file(rng, os.path.join(case_dir, f), f, m.indent)
                    for f in (rng.choice(m.files) for _ in range(rng.choice([1, 1, 1, 2, 3])))]
            if m.reseal:
                subprocess.run([a.reseal, case_dir], check=False, capture_output=True)
            cmd = [binary] + m.cmd(case_dir, out)
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300,
                                   env=dict(os.environ, OMP_NUM_THREADS="1"))
                rc, err = p.returncode, p.stderr
            except subprocess.TimeoutExpired:
                rc, err = "timeout", ""
            errs = [l for l in err.split("\n") if l.startswith("pulse: ")]
            other = [l for l in err.split("\n") if l.strip() and not l.startswith("pulse")]
            # A command refused with exit 2 still holds its buffers; at -O1 the optimiser may drop
            # the last pointer to one, and LeakSanitizer then reports it (and changes the exit
            # status): that is the refusal, not a leak of a running program.
            if len(errs) == 1 and "ERROR: LeakSanitizer" in err and "AddressSanitizer: " not in err.replace(
                    "SUMMARY: AddressSanitizer: ", "") and "runtime error" not in err:
                rc, other = 2, []
            if rc == 0 and not other:
                counts["accepted"] += 1
                if a.verbose:
                    print(f"accepted {name} {it}: {'; '.join(what)[:300]}", flush=True)
                continue
            left = m.out_is_dir and os.path.exists(out)
            if rc == 2 and len(errs) == 1 and not other and not left:
                counts["refused"] += 1
                if a.verbose:
                    print(f"refused {name} {it}: {'; '.join(what)[:200]} :: {errs[0][:200]}", flush=True)
                continue
            counts["failed"] += 1
            keep = os.path.join(work, f"failed-{name}-{it}")
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(case_dir, keep)
            why = "output left behind" if left else (err.strip().split("\n") or [""])[-1][:300]
            how = f"signal {-rc}" if isinstance(rc, int) and rc < 0 else f"exit {rc}"
            print(f"FAIL fuzz_inputs {name} case {it}: {how}: {'; '.join(what)[:300]} :: {why} (kept in {keep})",
                  flush=True)
        shutil.rmtree(case_dir, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        print(f"fuzz_inputs {name}: {a.iters} cases: {counts['accepted']} accepted, {counts['refused']} refused, "
              f"{counts['failed']} failed", flush=True)
        passed += counts["accepted"] + counts["refused"]
        failed += counts["failed"]
    print(f"{passed} passed, {failed} failed")
    if not a.work and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
