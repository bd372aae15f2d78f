#!/bin/sh
# Runs every unit-test binary given, then every end-to-end test tests/e2e_*.sh, and adds
# up their "N passed, N failed" lines. Exits non-zero if anything failed or crashed.
# Usage: tests/run.sh BUILD_DIR TEST_BINARY...
build=$1; shift
# Idle OpenMP threads sleep instead of spinning: a shared or loaded machine otherwise
# slows the tests down many times over (results do not depend on it).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
tp=0; tf=0
for t in "$@"; do
  out=$("$t" 2>&1); rc=$?
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
  if [ -z "$line" ]; then
    printf '%s\n' "$out" | tail -n 20
    echo "$(basename "$t"): no summary line (exit $rc)"; tf=$((tf + 1)); continue
  fi
  p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  [ "$f" -ne 0 ] && printf '%s\n' "$out" | grep -E 'FAIL' | head -n 20
  echo "$(basename "$t"): $line"
  tp=$((tp + p)); tf=$((tf + f))
done
if [ -z "$PULSE_CHECK" ]; then
  for s in tests/e2e_*.sh; do
    [ -f "$s" ] || continue
    out=$(sh "$s" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then
      printf '%s\n' "$out" | tail -n 20
      echo "$(basename "$s"): no summary line (exit $rc)"; tf=$((tf + 1)); continue
    fi
    p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    [ "$f" -ne 0 ] && printf '%s\n' "$out" | grep -E 'FAIL' | head -n 20
    echo "$(basename "$s"): $line"
    tp=$((tp + p)); tf=$((tf + f))
  done
fi
echo "$tp passed, $tf failed"
[ "$tf" -eq 0 ]
