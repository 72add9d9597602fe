#pragma once
// Chain / AllGather with backward's reverse scan on the communicator's side stream (comm::Nccl
// has one), overlapping the rank-local dq kernel. Measured on 4 x H100 (bench/RESULTS.md): the
// NCCL kernels then take SMs from the dq grid, which is sized to fill the GPU exactly, and the
// tail wave costs more than the hops it hides; so it is not the default. They scan the same way;
// only where the driver runs the backward scan differs.
#include "all_gather.hpp"
#include "chain.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

struct ChainOverlap : Chain {
  static constexpr const char* kName = "chain+overlap";
  static constexpr bool kOverlapBackward = true;
};
struct AllGatherOverlap : AllGather {
  static constexpr const char* kName = "all-gather+overlap";
  static constexpr bool kOverlapBackward = true;
};

}  // namespace schedule
LASP_NAMESPACE_END
