# iteris -- plain make, C11, nothing but libc, libm and POSIX threads.
#
#   make              ./iteris (the command line) and libiteris.a
#   make test         build and run every test; the last line is "N passed, N failed"
#   make asan         the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan         the same tests under ThreadSanitizer
#   make valgrind     the same tests under valgrind (memcheck)
#   make fuzz         libFuzzer targets (clang): build/fuzz/fuzz_<reader> [corpus dir], one per reader
#   make bench        the benchmarks (`iteris bench`), and side by side with OpenBLAS if installed
#   make cross-test   the tests built for aarch64 (NEON) and run under qemu-user; CROSS_ARCH=s390x,
#                     riscv64 or i686 for another; make cross-test-all for all four
#   make NOSIMD=1     a build without any SIMD code
#
# CC, OPT and BUILD may be overridden: `make CC=clang`, `make OPT=-O0`.

CC     ?= cc
OPT    ?= -O2 -g
BUILD  ?= build/release
WARN    = -Wall -Wextra -Wpedantic -Wshadow -Werror
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L -ffp-contract=off $(WARN) $(OPT) -pthread -MMD -MP $(if $(NOSIMD),-DIT_NOSIMD) $(FLAGS_ARCH) $(CFLAGS)
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
# FLAGS_ARCH: flags for the whole build on some machines, so that float and double arithmetic is
# IEEE single and double precision (FLT_EVAL_METHOD 0) as the tests expect everywhere:
#   i686   SSE2 for floating point (-mfpmath=sse): x87 computes in 80-bit extended precision
#   s390x  gcc in strict C11 mode evaluates float expressions, constants included, in double
#          (FLT_EVAL_METHOD 1, glibc's float_t); -fexcess-precision=fast, gcc's default in its GNU
#          modes, keeps them float (gcc only: clang refuses the flag)
ifneq ($(filter i386 i486 i586 i686,$(ARCH)),)
FLAGS_ARCH = -msse2 -mfpmath=sse
endif
ifeq ($(ARCH),s390x)
ifeq ($(findstring clang,$(CC)),)
FLAGS_ARCH = -fexcess-precision=fast
endif
endif
TEST_SRC = $(filter-out test/faults.c,$(wildcard test/*.c))
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ = $(TEST_SRC:%.c=$(BUILD)/%.o)

.PHONY: all test test-build asan tsan valgrind cross-test cross-test-all fuzz fuzz-replay faults bench clean

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

# The whole suite for another architecture under user-mode emulation (Debian's cross gcc and
# qemu-user): `make cross-test CROSS_ARCH=s390x`; `make cross-test-all` runs every one in turn.
#   aarch64  64-bit Arm, the NEON kernels       gcc-aarch64-linux-gnu libc6-dev-arm64-cross
#   s390x    64-bit big-endian                  gcc-s390x-linux-gnu libc6-dev-s390x-cross
#   riscv64  64-bit RISC-V, no SIMD kernels     gcc-riscv64-linux-gnu libc6-dev-riscv64-cross
#   i686     32-bit x86                         gcc-i686-linux-gnu libc6-dev-i386-cross
# CROSS_ARCH: the architecture (the default, aarch64, is what `make cross-test` always meant).
# CROSS: the cross compiler's prefix. QEMU: the emulator and its sysroot for that architecture.
# The build goes to build/<CROSS_ARCH>.
CROSS_ARCHS = aarch64 s390x riscv64 i686
CROSS_ARCH ?= aarch64
CROSS      ?= $(CROSS_ARCH)-linux-gnu-
QEMU_aarch64 = qemu-aarch64
QEMU_s390x   = qemu-s390x
QEMU_riscv64 = qemu-riscv64
QEMU_i686    = qemu-i386
QEMU       ?= $(QEMU_$(CROSS_ARCH)) -L /usr/$(CROSS_ARCH)-linux-gnu
# ARCH=$(CROSS_ARCH) gives i686 and s390x their FLAGS_ARCH above (SSE2 floating point on i686).
# The AVX2/AVX-512 kernels are x86_64 only (their files and the CPUID dispatch are
# #if __x86_64__, and only ARCH=x86_64 gets their flags): i686 runs the portable kernels.
# Under qemu the whole merges and demos (ITERIS_TEST_SKIP_SLOW) are left to the native runs: they
# took most of CI's time there, and the kernels and forward passes they use are tested anyway.
cross-test:
	$(MAKE) CC=$(CROSS)gcc ARCH=$(CROSS_ARCH) BUILD=build/$(CROSS_ARCH) test-build
	ITERIS_TEST_SKIP_SLOW=1 ITERIS_BIN="$(QEMU) build/$(CROSS_ARCH)/iteris" $(QEMU) build/$(CROSS_ARCH)/run_tests

# Every architecture above in turn (stops at the first that fails).
cross-test-all:
	set -e; for a in $(CROSS_ARCHS); do $(MAKE) cross-test CROSS_ARCH=$$a; done

FUZZ_CC ?= clang
FUZZ_TARGETS = safetensors json adapter_config tokenizer samples image
FUZZ_FLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -DIT_NOSIMD -g -O1 -I. -Itest
FUZZ_OBJ = $(FUZZ_SRC:%.c=build/fuzz/obj/%.o)
build/fuzz/obj/%.o: %.c $(wildcard *.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<
fuzz: $(FUZZ_OBJ)
	for t in $(FUZZ_TARGETS); do \
	    $(FUZZ_CC) $(FUZZ_FLAGS) -DIT_FUZZ_LIBFUZZER -DIT_FUZZ_ONLY='"'$$t'"' -fsanitize=fuzzer,address,undefined \
	        -o build/fuzz/fuzz_$$t test/fuzz.c $(FUZZ_OBJ) -pthread -lm || exit 1; done
	@echo "run: build/fuzz/fuzz_<target> -max_total_time=600 /tmp/fz-<target> test/corpus/<target>   (targets: $(FUZZ_TARGETS))"

# Allocation failures at every allocation site (test/faults.c): the library and the command line
# built with -DIT_FAULTS and ASan + UBSan, commands run in-process, each allocation site failed in
# turn (ITERIS_FAULTS_ALL=1: every allocation). The CLI's main is renamed so that the driver can call it;
# every file sees internal.h's allocation macros (-include), the command line's too.
FAULT_FLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -DIT_FAULTS -DIT_NOSIMD -g -O1 \
              -fsanitize=address,undefined -fno-sanitize-recover=undefined -I. -Itest -include internal.h
FAULT_OBJ = $(patsubst %.c,build/faults/obj/%.o,$(LIB_SRC) cli_bench.c cli_tokenize.c)
build/faults/obj/%.o: %.c $(wildcard *.h)
	@mkdir -p $(dir $@)
	$(CC) $(FAULT_FLAGS) -c -o $@ $<
build/faults/main.o: main.c $(wildcard *.h)
	@mkdir -p build/faults
	$(CC) $(FAULT_FLAGS) -Dmain=iteris_main -c -o $@ main.c
build/faults/fault_tests: test/faults.c build/faults/main.o $(FAULT_OBJ)
	$(CC) $(FAULT_FLAGS) -o $@ test/faults.c build/faults/main.o $(FAULT_OBJ) -pthread -lm
faults: build/faults/fault_tests
	build/faults/fault_tests

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
