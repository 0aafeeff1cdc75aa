// The entry point of each fuzz executable. SwiftPM links an executable target `X` with
// `main` defined as `X_main`, so each target's `X_main` hands over to libFuzzer's driver
// (instead of libFuzzer's own `main`), which then calls the target's LLVMFuzzerTestOneInput.
#include "FuzzMain.h"

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ENTRY(target) \
    int target##_main(int argc, char **argv) { return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput); }

FUZZ_ENTRY(FuzzReceiver)
FUZZ_ENTRY(FuzzConnection)
FUZZ_ENTRY(FuzzHandshake)
FUZZ_ENTRY(FuzzExtensionOffers)
FUZZ_ENTRY(FuzzInflate)
