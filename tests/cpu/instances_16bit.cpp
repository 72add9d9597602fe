// Explicit instantiations of the bf16 / fp16 runs (see support.hpp).
#define LASP_TEST_EXTERN
#include "support.hpp"

namespace lasp_test {
LASP_TEST_RUN_INSTANCES_16(LASP_TEST_RUN_INSTANCE)
}  // namespace lasp_test
