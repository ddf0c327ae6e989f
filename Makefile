# iteris -- plain make, C11, nothing but libc, libm and POSIX threads.
#
#   make              ./iteris (the command line) and libiteris.a
#   make test         build and run every test; the last line is "N passed, N failed"
#   make asan         the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make valgrind     the same tests under valgrind (memcheck)
#   make fuzz         a libFuzzer target (clang): build/fuzz/fuzz_iteris [corpus dir]
#   make bench        the benchmarks (`iteris bench`)
#   make NOSIMD=1     a build without any SIMD code
#
# CC, OPT and BUILD may be overridden: `make CC=clang`, `make OPT=-O0`.

CC     ?= cc
OPT    ?= -O2 -g
BUILD  ?= build/release
WARN    = -Wall -Wextra -Wpedantic -Wshadow -Werror
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) $(OPT) -pthread -MMD -MP $(if $(NOSIMD),-DIT_NOSIMD) $(CFLAGS)
LDLIBS_ALL = -pthread -lm $(LDLIBS)

LIB_SRC  = util.c json.c safetensors.c model.c lora.c
TEST_SRC = $(wildcard test/*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ = $(TEST_SRC:%.c=$(BUILD)/%.o)

.PHONY: all test test-build asan valgrind fuzz fuzz-replay bench clean

all: iteris libiteris.a

iteris: $(BUILD)/iteris
	cp $< $@

libiteris.a: $(BUILD)/libiteris.a
	cp $< $@

$(BUILD)/libiteris.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/iteris: $(BUILD)/main.o $(BUILD)/libiteris.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/run_tests: $(TEST_OBJ) $(BUILD)/libiteris.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -I. -c -o $@ $<

# The tests run from the repository root (they read data/) and call the command line through
# ITERIS_BIN.
test-build: $(BUILD)/run_tests $(BUILD)/iteris

test: test-build
	ITERIS_BIN=$(BUILD)/iteris $(BUILD)/run_tests

asan:
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

valgrind:
	$(MAKE) BUILD=build/valgrind OPT="-O1 -g" test-build
	ITERIS_BIN="valgrind -q --error-exitcode=99 --leak-check=full build/valgrind/iteris" \
	    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	    build/valgrind/run_tests

FUZZ_CC ?= clang
fuzz:
	@mkdir -p build/fuzz
	$(FUZZ_CC) -std=c11 -D_POSIX_C_SOURCE=200809L -DIT_FUZZ_LIBFUZZER -g -O1 -I. \
	    -Itest -fsanitize=fuzzer,address,undefined -o build/fuzz/fuzz_iteris test/fuzz.c $(LIB_SRC) -pthread -lm
	@echo "run: build/fuzz/fuzz_iteris -max_total_time=60 test/corpus"

# The same harness with a plain main that replays files or folders: no libFuzzer needed.
fuzz-replay:
	@mkdir -p build/fuzz
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -DIT_FUZZ_MAIN -g -O1 -I. -Itest \
	    -o build/fuzz/fuzz_replay test/fuzz.c $(LIB_SRC) -pthread -lm

bench: iteris
	./iteris bench

clean:
	rm -rf build iteris libiteris.a

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/main.d
