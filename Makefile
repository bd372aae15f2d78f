# pulse: a pure-C reference implementation of the PULSE unlearning protocol.
#
#   make            build ./pulse (optimised, OpenMP and SIMD when available)
#   make test       build and run every unit test and end-to-end test; ends with "N passed, N failed"
#   make check      the same unit tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make run        the whole PULSE protocol on the default (small) world into runs/small/
#   make bench      kernel, training and evaluation throughput (never part of the tests)
#   make fuzz       edited copies of every input file class against a sanitizer build
#                   (tests/fuzz_inputs.py; FUZZ_ITERS cases per class; not part of the tests)
#   make bench-torch  the same training step in PyTorch (tests/torch_bench.py; needs Debian's
#                   python3-torch, skipped without it), to compare with `pulse bench train`
#   make clean      remove build products
#
# Knobs: SIMD=0 (plain-C reference kernels only), OMP=0 (no OpenMP), NATIVE=0 (portable
# build, no -march=native), DEBUG=1 (-O0 -g).  CC=clang works too.

CC      ?= cc
SIMD    ?= 1
OMP     ?= 1
NATIVE  ?= 1
DEBUG   ?= 0

WARN    := -Wall -Wextra -Wshadow
CFLAGS  := -std=c11 -D_GNU_SOURCE $(WARN) -MMD -MP
LDLIBS  := -lm

# -O3, never -Ofast: fast-math breaks NaN checks and bit-reproducibility.
OPT     ?= -O3
ifeq ($(DEBUG),1)
  OPT    = -O0
endif
CFLAGS += $(OPT) -g
# -ffp-contract=off: the compiler may not fuse a*b+c on its own, so the reference path
# rounds the same way at every optimisation level; SIMD kernels use FMA explicitly.
CFLAGS += -ffp-contract=off -fno-math-errno
ifeq ($(NATIVE),1)
  CFLAGS += $(shell $(CC) -march=native -E -x c /dev/null >/dev/null 2>&1 && echo -march=native)
endif
ifeq ($(SIMD),0)
  CFLAGS += -DPULSE_NO_SIMD
endif
ifeq ($(OMP),1)
  OMPFLAG := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)
  CFLAGS  += $(OMPFLAG)
  LDFLAGS += $(OMPFLAG)
endif

BUILD   ?= build
SRCS    := $(filter-out pulse.c,$(wildcard *.c))
OBJS    := $(SRCS:%.c=$(BUILD)/%.o)
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))

.PHONY: all test check run bench bench-torch fuzz fuzz-bins clean unit

all: pulse

pulse: $(BUILD)/pulse.o $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c | $(BUILD)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%: tests/%.c $(OBJS) | $(BUILD)/tests
	$(CC) $(CFLAGS) -I. $(LDFLAGS) -o $@ $< $(OBJS) $(LDLIBS)

$(BUILD) $(BUILD)/tests:
	mkdir -p $@

# Unit tests (each prints "N passed, N failed") then the end-to-end shell tests;
# tests/run.sh adds the counts and prints the total line.
test: pulse $(TESTS)
	@sh tests/run.sh $(BUILD) $(TESTS)

# The unit tests under ASan + UBSan (own build directory, no OpenMP: ASan and libgomp
# disagree about thread stacks; determinism across threads is tested by `make test`).
# -O0: commands that exit 2 on bad input still hold their buffers in live stack frames,
# so LeakSanitizer does not count them (at -O1 the optimiser drops those pointers).
check:
	$(MAKE) --no-print-directory BUILD=build-check OMP=0 DEBUG=1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" unit-check

unit-check: CFLAGS += $(EXTRA_CFLAGS)
unit-check: LDFLAGS += $(EXTRA_CFLAGS)
unit-check: $(TESTS)
	@PULSE_CHECK=1 sh tests/run.sh $(BUILD) $(TESTS)

run: pulse
	./pulse run --preset small --out runs/small

# Structured fuzzing (tests/fuzz_inputs.py): every case must exit 0, or 2 with one
# "pulse: " line, under ASan + UBSan (-O1: at -O0 the cases take several times as long).
FUZZ_ITERS ?= 100
FUZZ_SAN   := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer
fuzz: pulse
	$(MAKE) --no-print-directory BUILD=build-fuzz OMP=0 OPT=-O1 EXTRA_CFLAGS="$(FUZZ_SAN)" fuzz-bins
	python3 tests/fuzz_inputs.py --pulse ./pulse --san build-fuzz/pulse-san \
	  --reseal build-fuzz/tests/fuzz_reseal --iters $(FUZZ_ITERS)

fuzz-bins: CFLAGS += $(EXTRA_CFLAGS)
fuzz-bins: LDFLAGS += $(EXTRA_CFLAGS)
fuzz-bins: $(BUILD)/pulse-san $(BUILD)/tests/fuzz_reseal

$(BUILD)/pulse-san: $(BUILD)/pulse.o $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench: pulse
	./pulse bench kernels
	./pulse bench train
	./pulse bench eval

# Debian's python3-torch installs into the system python, not into a pyenv one
PYTHON_TORCH ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
bench-torch: pulse
	OMP_NUM_THREADS=1 ./pulse bench train
	OMP_NUM_THREADS=2 ./pulse bench train
	$(PYTHON_TORCH) tests/torch_bench.py --threads 1,2

clean:
	rm -rf build build-check build-fuzz pulse

-include $(OBJS:.o=.d) $(BUILD)/pulse.d $(TESTS:=.d)
