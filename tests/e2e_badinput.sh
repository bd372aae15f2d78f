#!/bin/sh
# tests/e2e_badinput.sh: the command line on every malformed-file class.
# The unit-test binaries write the classes (`test_io --write-bad DIR`,
# `test_tokenizer --write-bad DIR`); here `pulse inspect` (safetensors, images, a
# checkpoint directory) and `pulse tokenize` (tokenizer.json) must refuse each with
# exit status 2 and exactly one line "pulse: PATH: reason" on stderr, and accept the
# good_* files. Run from the repository root after `make test` built the binaries.
B=${BUILD:-build}
pass=0; fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pulse_e2e_bad.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# refused PATH CMD...: exit 2, one stderr line starting "pulse: PATH: "
refused() {
  path=$1; shift
  err=$("$@" 2>&1 >/dev/null); rc=$?
  n=$(printf '%s\n' "$err" | wc -l)
  case "$err" in "pulse: $path: "?*) pre=1 ;; *) pre=0 ;; esac
  if [ "$rc" -eq 2 ] && [ "$n" -eq 1 ] && [ "$pre" -eq 1 ]; then ok; else bad "$*: exit $rc: $err"; fi
}
accepted() {
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -eq 0 ]; then ok; else bad "$*: exit $rc: $out"; fi
}

if [ ! -x ./pulse ] || [ ! -x "$B/tests/test_io" ] || [ ! -x "$B/tests/test_tokenizer" ]; then
  echo "FAIL: ./pulse or $B/tests/test_io, test_tokenizer not built (run make test)"
  echo "0 passed, 1 failed"; exit 1
fi
"$B/tests/test_io" --write-bad "$tmp" && "$B/tests/test_tokenizer" --write-bad "$tmp" || bad "writing the fixtures"

for f in "$tmp"/st_* "$tmp"/img_*; do
  [ "$(basename "$f")" = img_valid_stored.png ] && continue
  refused "$f" ./pulse inspect "$f"
done
for f in "$tmp"/tok_*; do refused "$f" ./pulse tokenize --tokenizer "$f" "some text"; done
refused "$tmp/missing.safetensors" ./pulse inspect "$tmp/missing.safetensors"

accepted ./pulse inspect "$tmp/good_model.safetensors" "$tmp/good_image.png" "$tmp/img_valid_stored.png" "$tmp/good_tokenizer.json"
out=$(./pulse tokenize --tokenizer "$tmp/good_tokenizer.json" "the quick <image>" "" 2>&1)
case "$out" in "[["*",3],[]]") ok ;; *) bad "tokenize output: $out" ;; esac

# a checkpoint directory whose model.safetensors is malformed: refused, naming that file
mkdir -p "$tmp/ckpt"
echo '{"model_type": "llava"}' > "$tmp/ckpt/config.json"
cp "$tmp/st_offsets_gap.safetensors" "$tmp/ckpt/model.safetensors"
refused "$tmp/ckpt/model.safetensors" ./pulse inspect "$tmp/ckpt"
cp "$tmp/good_model.safetensors" "$tmp/ckpt/model.safetensors"
cp "$tmp/tok_merge_unknown_token.json" "$tmp/ckpt/tokenizer.json"
refused "$tmp/ckpt/tokenizer.json" ./pulse tokenize --model "$tmp/ckpt" "x"
refused "$tmp/ckpt/tokenizer.json" ./pulse inspect "$tmp/ckpt"
cp "$tmp/good_tokenizer.json" "$tmp/ckpt/tokenizer.json"
accepted ./pulse inspect "$tmp/ckpt"
accepted ./pulse tokenize --model "$tmp/ckpt" "x"
mkdir -p "$tmp/empty"
refused "$tmp/empty" ./pulse inspect "$tmp/empty"

# usage errors: exit 2, one line
for args in "tokenize" "tokenize --tokenizer" "tokenize --tokenizer a --model b x" "inspect" "inspect --bogus x"; do
  err=$(./pulse $args 2>&1 >/dev/null); rc=$?
  n=$(printf '%s\n' "$err" | wc -l)
  if [ "$rc" -eq 2 ] && [ "$n" -eq 1 ]; then ok; else bad "pulse $args: exit $rc: $err"; fi
done
accepted ./pulse tokenize --help
accepted ./pulse inspect --help

# a path holding a newline and a tab is still one line, its control bytes escaped
nl_path="$tmp/two
lines	here.safetensors"
err=$(./pulse inspect "$nl_path" 2>&1 >/dev/null); rc=$?
n=$(printf '%s\n' "$err" | wc -l)
case "$err" in "pulse: $tmp/two\nlines\there.safetensors: "?*) pre=1 ;; *) pre=0 ;; esac
if [ "$rc" -eq 2 ] && [ "$n" -eq 1 ] && [ "$pre" -eq 1 ]; then ok; else bad "a path with a newline: exit $rc, $n lines: $err"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
