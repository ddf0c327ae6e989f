# iteris -- plain make, C11, nothing but libc, libm and POSIX threads.
#
#   make              ./iteris (the command line) and libiteris.a
#   make test         build and run every test; the last line is "N passed, N failed"
#   make asan         the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan         the same tests under ThreadSanitizer
#   make valgrind     the same tests under valgrind (memcheck)
#   make fuzz         a libFuzzer target (clang): build/fuzz/fuzz_iteris [corpus dir]
#   make bench        the benchmarks (`iteris bench`), and side by side with OpenBLAS if installed
#   make cross-test   the tests built for aarch64 (NEON) and run under qemu-user
#   make NOSIMD=1     a build without any SIMD code
#
# CC, OPT and BUILD may be overridden: `make CC=clang`, `make OPT=-O0`.

CC     ?= cc
OPT    ?= -O2 -g
BUILD  ?= build/release
WARN    = -Wall -Wextra -Wpedantic -Wshadow -Werror
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L -ffp-contract=off $(WARN) $(OPT) -pthread -MMD -MP $(if $(NOSIMD),-DIT_NOSIMD) $(CFLAGS)
LDLIBS_ALL = -pthread -lm $(LDLIBS)

LIB_SRC  = util.c json.c regex.c unicode.c tokenizer.c tokenizer_model.c safetensors.c model.c model_llama.c model_t5.c model_clip.c model_unet.c model_sd.c data.c image.c lora.c lora_files.c iteris.c merge.c output.c demo.c thread.c linalg.c linalg_avx2.c linalg_avx512.c linalg_neon.c bench.c bench_unet.c
# The fuzz builds compile everything but the command line in one go, without SIMD (the kernel files
# would need their own flags).
FUZZ_SRC = $(filter-out bench.c bench_unet.c,$(LIB_SRC))

# Per-ISA kernel files get their own flags (and compile to nothing on other machines).
ARCH ?= $(shell uname -m)
ifeq ($(ARCH),x86_64)
ifeq ($(NOSIMD),)
FLAGS_linalg_avx2   = -mavx2 -mfma
FLAGS_linalg_avx512 = -mavx512f -mfma
endif
endif
TEST_SRC = $(wildcard test/*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ = $(TEST_SRC:%.c=$(BUILD)/%.o)

.PHONY: all test test-build asan tsan valgrind cross-test fuzz fuzz-replay bench clean

all: iteris libiteris.a

iteris: $(BUILD)/iteris
	cp $< $@

libiteris.a: $(BUILD)/libiteris.a
	cp $< $@

$(BUILD)/libiteris.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/iteris: $(BUILD)/main.o $(BUILD)/cli_bench.o $(BUILD)/cli_tokenize.o $(BUILD)/libiteris.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/run_tests: $(TEST_OBJ) $(BUILD)/libiteris.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(FLAGS_$(notdir $*)) -I. -c -o $@ $<

# The tests run from the repository root (they read data/) and call the command line through
# ITERIS_BIN.
test-build: $(BUILD)/run_tests $(BUILD)/iteris

test: test-build
	ITERIS_BIN=$(BUILD)/iteris $(BUILD)/run_tests

asan:
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

tsan:
	$(MAKE) BUILD=build/tsan OPT="-O1 -g -fsanitize=thread" test

valgrind:
	$(MAKE) BUILD=build/valgrind OPT="-O1 -g" test-build
	ITERIS_TEST_SKIP_SLOW=1 ITERIS_BIN="valgrind -q --error-exitcode=99 --leak-check=full build/valgrind/iteris" \
	    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	    build/valgrind/run_tests

# The whole suite for 64-bit Arm (the NEON kernels) under user-mode emulation: needs Debian's
# gcc-aarch64-linux-gnu and qemu-user.
CROSS ?= aarch64-linux-gnu-
QEMU  ?= qemu-aarch64 -L /usr/aarch64-linux-gnu
# Under qemu the whole merges and demos (ITERIS_TEST_SKIP_SLOW) are left to the native runs: they
# took most of CI's time there, and the kernels and forward passes they use are tested anyway.
cross-test:
	$(MAKE) CC=$(CROSS)gcc ARCH=aarch64 BUILD=build/aarch64 test-build
	ITERIS_TEST_SKIP_SLOW=1 ITERIS_BIN="$(QEMU) build/aarch64/iteris" $(QEMU) build/aarch64/run_tests

FUZZ_CC ?= clang
fuzz:
	@mkdir -p build/fuzz
	$(FUZZ_CC) -std=c11 -D_POSIX_C_SOURCE=200809L -DIT_NOSIMD -DIT_FUZZ_LIBFUZZER -g -O1 -I. \
	    -Itest -fsanitize=fuzzer,address,undefined -o build/fuzz/fuzz_iteris test/fuzz.c $(FUZZ_SRC) -pthread -lm
	@echo "run: build/fuzz/fuzz_iteris -max_total_time=60 test/corpus"

# The same harness with a plain main that replays files or folders: no libFuzzer needed.
fuzz-replay:
	@mkdir -p build/fuzz
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -DIT_NOSIMD -DIT_FUZZ_MAIN -g -O1 -I. -Itest \
	    -o build/fuzz/fuzz_replay test/fuzz.c $(FUZZ_SRC) -pthread -lm

# The benchmarks, and where OpenBLAS is installed (Debian: libopenblas-dev), a side-by-side run
# against it in one process (build/bench_openblas; the iteris binary never links OpenBLAS).
OPENBLAS_INC ?= $(firstword $(wildcard /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/aarch64-linux-gnu/openblas-pthread /usr/include/openblas))
bench: iteris $(BUILD)/libiteris.a
	./iteris bench
	@if [ -n "$(OPENBLAS_INC)" ]; then \
	    $(CC) $(CFLAGS_ALL) -DIT_BENCH_OPENBLAS -I. -I$(OPENBLAS_INC) -o build/bench_openblas test/bench_openblas.c \
	        $(BUILD)/libiteris.a -lopenblas $(LDLIBS_ALL) && build/bench_openblas; \
	else echo "(OpenBLAS not installed: no side-by-side comparison; apt-get install libopenblas-dev)"; fi

clean:
	rm -rf build iteris libiteris.a

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/main.d
