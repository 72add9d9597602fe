// Policies (describe, workspace sizes), the communicator concept, and the 16-bit element types.
#include "support.hpp"

#include <set>

using namespace lasp_test;
using namespace lasp;

TEST_CASE("describe<Policy>() names the decay, schedule, caching and tile") {
  const std::string a = describe<Policy<decay::Gate, schedule::Chain, caching::Recompute, tile::Tile<16>>>();
  CHECK(a.find("decay=gate") != std::string::npos);
  CHECK(a.find("schedule=chain") != std::string::npos);
  CHECK(a.find("caching=recompute") != std::string::npos);
  CHECK(a.find("tile=C16_W4_Sauto") != std::string::npos);
  const std::string b = describe<Policy<decay::PerHead, schedule::AllGather, caching::Cache, tile::Tile<64, 8, 2>>>();
  CHECK(b.find("decay=per-head") != std::string::npos);
  CHECK(b.find("schedule=all-gather") != std::string::npos);
  CHECK(b.find("caching=cache") != std::string::npos);
  CHECK(b.find("tile=C64_W8_S2") != std::string::npos);
  const std::string c = describe<Policy<decay::None>>();
  CHECK(c.find("decay=none") != std::string::npos);
  CHECK(c.find("schedule=truncated") != std::string::npos);  // the default, schedule::Auto
  CHECK(c.find("tile=auto") != std::string::npos);
  CHECK(std::set<std::string>{a, b, c}.size() == 3);
}

// Chain keeps one state in flight whatever R is; only the gates' per-(b,h) dc totals (R*B*H
// floats, all-gathered by both schedules) grow with R. AllGather needs R summaries.
TEST_CASE("workspace_size grows with R by whole states for AllGather, not for Chain") {
  comm::HostSingle single;
  using PC = Policy<decay::Gate, schedule::Chain>;
  using PA = Policy<decay::Gate, schedule::AllGather>;
  Shape s{2, 100, 4, 32, 16, 1};
  const std::size_t chain1 = workspace_size<PC, float>(s, single);
  const std::size_t ag1 = workspace_size<PA, float>(s, single);
  const std::size_t summary = std::size_t(s.B * s.H * (1 + s.D * s.E)) * sizeof(float);  // A and L
  std::size_t prev = ag1;
  for (int R = 2; R <= 8; ++R) {
    CAPTURE(R);
    s.R = R;
    const std::size_t dc_bytes = std::size_t(R * s.B * s.H) * sizeof(float);
    CHECK(workspace_size<PC, float>(s, single) <= chain1 + dc_bytes + 256);
    CHECK(workspace_size<PC, float>(s, single) < chain1 + summary);
    const std::size_t ag = workspace_size<PA, float>(s, single);
    CHECK(ag > prev);
    // Room for R gathered summaries: one more per extra rank (regions are 256-byte aligned).
    CHECK(ag - ag1 + 2 * 256 >= std::size_t(R - 1) * summary);
    prev = ag;
  }
}

TEST_CASE("workspace_size on the host: independent of N and of the element type, grows with B*H*D*E") {
  comm::HostSingle single;
  using P = Policy<decay::PerHead, schedule::Chain>;
  const Shape s{1, 64, 2, 16, 16, 1};
  const std::size_t w = workspace_size<P, float>(s, single);
  Shape longer = s;
  longer.N = 4096;
  CHECK(workspace_size<P, float>(longer, single) == w);
  CHECK(workspace_size<P, bf16>(s, single) == w);
  // It holds at least the incoming state P and the summary (A, L), fp32.
  CHECK(w >= std::size_t(s.B * s.H * (2 * s.D * s.E + 1)) * sizeof(float));
  Shape wider = s;
  wider.D = 32;
  CHECK(workspace_size<P, float>(wider, single) > w);
  Shape more = s;
  more.B = 3;
  CHECK(workspace_size<P, float>(more, single) > w);
  // Cache and Recompute cost the same on the host (it recomputes either way).
  CHECK(workspace_size<Policy<decay::PerHead, schedule::Chain, caching::Cache>, float>(s, single) == w);
}

namespace {
struct NotAComm {
  int rank() const { return 0; }
};
}  // namespace

TEST_CASE("the communicator concept accepts the host communicators and rejects others") {
  static_assert(is_communicator_v<comm::HostSingle>);
  static_assert(is_communicator_v<comm::HostGroup::Comm>);
  static_assert(!is_communicator_v<NotAComm>);
  static_assert(!is_communicator_v<int>);
  static_assert(std::is_same_v<backend::for_comm<comm::HostSingle>, backend::host::Backend>);
  CHECK(is_communicator_v<comm::HostGroup::Comm>);
  CHECK_FALSE(is_communicator_v<NotAComm>);
}

TEST_CASE("bf16 and fp16 conversions: exact round trips and round-to-nearest-even") {
  // Every finite 16-bit pattern survives to_float -> from_float unchanged.
  int bad_bf16 = 0, bad_fp16 = 0;
  for (std::uint32_t bits = 0; bits < 0x10000u; ++bits) {
    const float fb = to_float(bf16{std::uint16_t(bits)});
    if (std::isfinite(fb) && from_float<bf16>(fb).bits != bits) ++bad_bf16;
    const float fh = to_float(fp16{std::uint16_t(bits)});
    if (std::isfinite(fh) && from_float<fp16>(fh).bits != bits) ++bad_fp16;
  }
  CHECK(bad_bf16 == 0);
  CHECK(bad_fp16 == 0);
  CHECK(to_float(fp16{0x3c00}) == 1.f);
  CHECK(to_float(fp16{0x7bff}) == 65504.f);
  CHECK(to_float(fp16{0x0001}) == std::ldexp(1.f, -24));  // smallest subnormal
  CHECK(to_float(bf16{0x3f80}) == 1.f);
  // Ties go to even; anything above a tie rounds up.
  CHECK(from_float<bf16>(1.f + std::ldexp(1.f, -8)).bits == 0x3f80);                          // tie -> even (down)
  CHECK(from_float<bf16>(1.f + 3 * std::ldexp(1.f, -8)).bits == 0x3f82);                      // tie -> even (up)
  CHECK(from_float<bf16>(1.f + std::ldexp(1.f, -8) + std::ldexp(1.f, -20)).bits == 0x3f81);  // above the tie
  CHECK(from_float<fp16>(1.f + std::ldexp(1.f, -11)).bits == 0x3c00);
  CHECK(from_float<fp16>(1.f + 3 * std::ldexp(1.f, -11)).bits == 0x3c02);
  CHECK(from_float<fp16>(70000.f).bits == 0x7c00);  // overflow -> inf
  CHECK(std::isnan(to_float(from_float<bf16>(std::nanf("")))));
  CHECK(std::isnan(to_float(from_float<fp16>(std::nanf("")))));
  // Relative rounding error within the unit roundoff the tolerances are built on.
  Rng rng(5);
  double worst_b = 0, worst_h = 0;
  for (int i = 0; i < 10000; ++i) {
    const float x = rng.normal(10.f);
    worst_b = std::max(worst_b, std::fabs(double(to_float(from_float<bf16>(x))) - x) / std::fabs(x));
    worst_h = std::max(worst_h, std::fabs(double(to_float(from_float<fp16>(x))) - x) / std::fabs(x));
  }
  CHECK(worst_b <= unit_roundoff<bf16>());
  CHECK(worst_h <= unit_roundoff<fp16>());
  CHECK(worst_b > 0.5 * unit_roundoff<bf16>());
}
