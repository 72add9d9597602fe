// Explicit instantiations of the fp32 runs and of the reference checks (see support.hpp).
#define LASP_TEST_EXTERN
#include "support.hpp"

namespace lasp_test {
LASP_TEST_RUN_INSTANCES_F32(LASP_TEST_RUN_INSTANCE)
LASP_TEST_REF_INSTANCES(LASP_TEST_REF_INSTANCE)
}  // namespace lasp_test
