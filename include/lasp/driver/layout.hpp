#pragma once
// The one workspace layout, shared by the host and CUDA backends: the driver's regions, then the
// backend's (Backend::carve), carved once per call from the reserve and the scratch.
//
//   reserve: header (named 32-bit slots) | P (state entering this rank) | [A | L] (this rank's
//            summary) | P2 | [A | L]2 (the second segment of a zigzag rank) | backend reserve
//            (e.g. per-segment states under caching::Cache)
//   scratch: tmp | gathered (R summaries, gathering schedules) | [A | M] | G | [A | M]2 | G2 | X |
//            dc (2 B*H) | dc_gathered (R B*H) | words ((1 + R) status words: the agreement of
//            every call on backends whose verdict lives in device memory) | backend scratch
// P2, [A | L]2, [A | M]2, G2 and X (packed.hpp) are empty unless the backend runs packed /
// zigzag calls (kPackedSequences).
// All regions are 256-byte aligned (workspace.hpp's Carver).
#include <cstddef>
#include <cstdint>
#include "../args.hpp"
#include "../schedule/common.hpp"
#include "../status.hpp"
#include "../workspace.hpp"
#include "validate.hpp"
#include "packed.hpp"

LASP_NAMESPACE_BEGIN
namespace driver {

/// Named 32-bit slots of the reserve's header (256 bytes).
enum HeaderSlot : int {
  kForwardTag = 0,    // host backend: forward completed on this reserve
  kShapeTag = 1,      // host backend: hash of that forward's shape
  kDeviceStatus = 2,  // deferred verdict (backends whose verdict lives in device memory, see
                      // cuda::deferred_status): bits 0-7 this rank's device-side checks (bit 0:
                      // invalid gate value, bit 1: backward on a reserve that holds no forward of
                      // these tensors, bit 2: bad device offsets or state slots of packed documents), bits 8-15 the Status code a rank of the group refused the
                      // call with (the agreement, driver.hpp). Kernels that write outputs skip
                      // their work while it is non-zero.
  kDeviceTag = 3,     // CUDA backend: fingerprint of the forward that filled the reserve
};
/// Encoding of the kDeviceStatus slot.
inline constexpr unsigned kVerdictShift = 8;
inline constexpr unsigned kDeviceCheckMask = 0xffu;
inline constexpr unsigned kBadDocBit = 4u;  // bit 2: packed documents, device offsets or state slots (kernel::DocCheck)
inline Status decode_verdict(std::uint32_t v) {
  const std::uint32_t code = (v >> kVerdictShift) & 0xffu;
  if (code) return Status(int(code));
  if (v & 1u) return Status::kInvalidDecay;  // the root cause when both are set (no forward completed)
  if (v & kBadDocBit) return Status::kInvalidOffsets;
  return (v & kDeviceCheckMask) ? Status::kNotForwarded : Status::kSuccess;
}
inline constexpr std::size_t kHeaderSlots = kRegionAlign / sizeof(std::uint32_t);

template <class Regions>
struct Layout {
  // Reserve: kept from forward to backward.
  std::uint32_t* header = nullptr;
  float* P = nullptr;   // (B,H,D,E)
  float* AL = nullptr;  // [A (B*H) | L (B*H*D*E)]
  float* P2 = nullptr;  // zigzag: the state entering this rank's back segment
  float* AL2 = nullptr; // zigzag: the back segment's summary
  // Scratch: reused by every call.
  float* tmp = nullptr;          // one summary: outgoing state / reverse-scan temporaries
  float* gathered = nullptr;     // R summaries (gathering schedules), else empty
  float* M = nullptr;            // [A | M] backward summary
  float* G = nullptr;            // (B,H,D,E) gradient of the state leaving this rank
  float* M2 = nullptr;           // zigzag: the back segment's [A | M]
  float* G2 = nullptr;           // zigzag: gradient of the state leaving the back segment
  float* X = nullptr;            // zigzag: the state (gradient) between the two passes of the scan
  float* dc = nullptr;           // (B*H) gates: this rank's dLoss/dc total; then (B*H) later ranks' suffix
  float* dc_gathered = nullptr;  // R x (B*H) gates' totals of every rank
  float* words = nullptr;        // (1 + R) x kStatusFloats: this rank's status word, then every rank's
  float* geo = nullptr;          // device backends with packed calls: (1 + R) geometry records (packed.hpp)
  Regions backend{};
  WorkspaceSizes sizes{};
  index_t bh = 0, de = 0;
  const float* A() const { return AL; }
  const float* L() const { return AL + bh; }
};

/// Carves the layout of `s` from the two bases (null bases: sizes only).
template <class Policy, class Backend, class T>
Layout<typename Backend::Regions> carve(const Shape& s, void* reserve, void* scratch) {
  Layout<typename Backend::Regions> l;
  l.bh = s.B * s.H;
  l.de = s.D * s.E;
  const std::size_t state = std::size_t(l.bh * l.de), summary = std::size_t(l.bh * (1 + l.de));
  const std::size_t R = std::size_t(s.R);
  Carver rc(reserve), sc(scratch);
  l.header = rc.take<std::uint32_t>(kHeaderSlots);
  l.P = rc.take<float>(state);
  l.AL = rc.take<float>(summary);
  const bool two = supports_packed<Backend>::value;
  l.P2 = rc.take<float>(two ? state : 0);
  l.AL2 = rc.take<float>(two ? summary : 0);
  l.tmp = sc.take<float>(summary);
  l.gathered = sc.take<float>(Policy::Schedule::kGathers ? summary * R : 0);
  l.M = sc.take<float>(summary);
  l.G = sc.take<float>(state);
  l.M2 = sc.take<float>(two ? summary : 0);
  l.G2 = sc.take<float>(two ? state : 0);
  l.X = sc.take<float>(two ? state : 0);
  l.dc = sc.take<float>(2 * std::size_t(l.bh));
  l.dc_gathered = sc.take<float>(std::size_t(l.bh) * R);
  l.words = sc.take<float>(schedule::kStatusFloats * (1 + R));
  l.geo = sc.take<float>(two && !Backend::kSyncVerdict ? kGeometryFloats * (1 + R) : 0);
  // Backends without empty shards refuse N = 0 (driver.hpp) and never see it: their regions
  // (the CUDA backend's segment split divides by the chunks of N) are sized as for N = 1.
  Shape bs = s;
  if (!supports_empty<Backend>::value && bs.N < 1) bs.N = 1;
  l.backend = Backend::template carve<Policy, T>(bs, rc, sc);
  l.sizes = {rc.bytes(), sc.bytes()};
  return l;
}

template <class Policy, class Backend, class T>
WorkspaceSizes sizes(const Shape& s) {
  return carve<Policy, Backend, T>(s, nullptr, nullptr).sizes;
}

/// The layout in a caller's workspace: the scratch follows the reserve unless given apart.
template <class Policy, class Backend, class T>
Layout<typename Backend::Regions> bind(const Shape& s, const Workspace& ws) {
  if (ws.scratch) return carve<Policy, Backend, T>(s, ws.ptr, ws.scratch);
  const WorkspaceSizes z = sizes<Policy, Backend, T>(s);
  return carve<Policy, Backend, T>(s, ws.ptr, static_cast<char*>(ws.ptr) + align_up(z.reserve));
}

/// kWorkspaceTooSmall, or kOverlap for a separate scratch that overlaps the reserve.
template <class Policy, class Backend, class T>
Status check_workspace(const Shape& s, const Workspace& ws) {
  const WorkspaceSizes z = sizes<Policy, Backend, T>(s);
  if (!ws.scratch) return ws.bytes < z.single() ? Status::kWorkspaceTooSmall : Status::kSuccess;
  if (ws.bytes < z.reserve || ws.scratch_bytes < z.scratch) return Status::kWorkspaceTooSmall;
  if (overlaps(workspace_extent(ws), scratch_extent(ws))) return Status::kOverlap;
  return Status::kSuccess;
}

}  // namespace driver
LASP_NAMESPACE_END
