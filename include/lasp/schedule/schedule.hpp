#pragma once
// The schedules: how the exclusive scan of rank summaries (math.md section 3) is computed across
// the SP ranks. One file each; common.hpp describes what a schedule provides.
//   Chain (LASP), AllGather (LASP-2), Truncated<Fallback> (decay-aware single hop; Auto is
//   Truncated<AllGather>, the default), LogScan (log-depth), Hierarchical<Inner, Outer> (nodes:
//   a scan inside each node, one over the node totals, a fix-up), ChainOverlap / AllGatherOverlap.
#include "all_gather.hpp"
#include "chain.hpp"
#include "hierarchical.hpp"
#include "log_scan.hpp"
#include "overlap.hpp"
#include "truncated.hpp"
