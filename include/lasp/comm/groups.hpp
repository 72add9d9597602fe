#pragma once
// Rank arithmetic of sequence parallel (SP) x data parallel (DP) groups (math.md section 5).
// Plain C++17: no CUDA, no NCCL. The NCCL split that uses it is comm::split_sp_dp (nccl.cuh).
//
// World W = DP x SP. SP groups are contiguous world ranks (keep one inside a node, on NVLink);
// DP groups are strided. W = 8, SP = 4:
//   SP groups (color = w / SP): (0,1,2,3) (4,5,6,7)          sp_rank = w % SP
//   DP groups (color = w % SP): (0,4) (1,5) (2,6) (3,7)      dp_rank = w / SP
// The LASP chain runs inside an SP group: its neighbours are SP ranks sp_rank -/+ 1 of the same
// group (never world rank -/+ 1 across a group boundary). Parameters are replicated across the
// SP ranks, so gradient reductions of parameters span all W ranks, not only the DP group.
//
//   lasp::comm::GroupRanks g;
//   if (lasp::comm::GroupRanks::make(world_rank, world_size, sp, &g) != lasp::Status::kSuccess) ...
//   // g.sp_color / g.sp_rank -> key of the SP split; g.dp_color / g.dp_rank -> the DP split;
//   // g.prev_world() / g.next_world(): world ranks of the chain neighbours (-1 at the ends).
//
// Nodes. With world ranks placed on hosts in blocks of `ranks_per_node` (ranks [k rpn, (k+1) rpn)
// share host k, the usual launcher placement), sp_node_size(sp, rpn) is what an SP group's
// communicator should report as node_size() (schedule::Hierarchical): sp itself when a group fits
// in one node (rpn % sp == 0), rpn when groups are whole nodes (sp % rpn == 0), else 0 (groups
// straddle node boundaries unevenly: unknown). GroupRanks::make(w, W, sp, rpn, &g) fills
// g.ranks_per_node, g.sp_node_size, g.sp_nodes and g.spans_nodes().
//   lasp::comm::Nccl comm(sp_comm, g.sp_node_size);   // nccl.cuh
#include "../config.hpp"
#include "../status.hpp"

LASP_NAMESPACE_BEGIN
namespace comm {

/// kSuccess when `world_size` ranks split into SP groups of `sp` ranks: world_size >= 1, sp >= 1
/// and world_size % sp == 0; kInvalidShape otherwise.
[[nodiscard]] constexpr Status check_groups(int world_size, int sp) noexcept {
  if (world_size < 1 || sp < 1 || world_size % sp != 0) return Status::kInvalidShape;
  return Status::kSuccess;
}
/// check_groups plus 0 <= world_rank < world_size (kInvalidRank otherwise).
[[nodiscard]] constexpr Status check_groups(int world_rank, int world_size, int sp) noexcept {
  const Status s = check_groups(world_size, sp);
  if (s != Status::kSuccess) return s;
  return world_rank < 0 || world_rank >= world_size ? Status::kInvalidRank : Status::kSuccess;
}

/// Which SP group a world rank belongs to (the color of the SP split).
constexpr int sp_color(int world_rank, int sp) noexcept { return world_rank / sp; }
/// Position of a world rank inside its SP group (the key of the SP split): its segment index.
constexpr int sp_rank(int world_rank, int sp) noexcept { return world_rank % sp; }
/// Which DP group a world rank belongs to (the color of the DP split).
constexpr int dp_color(int world_rank, int sp) noexcept { return world_rank % sp; }
/// Position of a world rank inside its DP group (the key of the DP split).
constexpr int dp_rank(int world_rank, int sp) noexcept { return world_rank / sp; }
/// Number of SP groups = size of each DP group.
constexpr int dp_size(int world_size, int sp) noexcept { return world_size / sp; }
/// World rank of SP rank `sp_rank_` in SP group `sp_color_`.
constexpr int world_rank_of(int sp_color_, int sp_rank_, int sp) noexcept { return sp_color_ * sp + sp_rank_; }

/// Chain neighbours inside an SP group of `sp` ranks (LASP ring without wrap-around):
/// the SP rank that sends to `sp_rank_` in forward (-1 for the first rank) ...
constexpr int chain_prev(int sp_rank_, int sp) noexcept { return sp_rank_ > 0 && sp_rank_ < sp ? sp_rank_ - 1 : -1; }
/// ... and the SP rank it sends to (-1 for the last rank).
constexpr int chain_next(int sp_rank_, int sp) noexcept { return sp_rank_ >= 0 && sp_rank_ < sp - 1 ? sp_rank_ + 1 : -1; }

/// node_size() of an SP group of `sp` contiguous world ranks when world ranks sit on nodes of
/// `ranks_per_node` contiguous ranks: sp if every group lies inside one node (ranks_per_node %
/// sp == 0), ranks_per_node if every group is a whole number of nodes (sp % ranks_per_node == 0;
/// the groups then start on node boundaries), else 0 (unknown: groups straddle nodes unevenly, or
/// an argument < 1).
constexpr int sp_node_size(int sp, int ranks_per_node) noexcept {
  if (sp < 1 || ranks_per_node < 1) return 0;
  if (ranks_per_node % sp == 0) return sp;
  if (sp % ranks_per_node == 0) return ranks_per_node;
  return 0;
}
/// Number of nodes the SP group `sp_color_` (ranks [sp_color_ sp, (sp_color_+1) sp)) touches.
constexpr int sp_nodes(int sp_color_, int sp, int ranks_per_node) noexcept {
  if (sp < 1 || ranks_per_node < 1) return 0;
  const int first = sp_color_ * sp, last = first + sp - 1;
  return last / ranks_per_node - first / ranks_per_node + 1;
}

/// Everything about one world rank's place in the SP x DP grid.
struct GroupRanks {
  int world_rank = 0, world_size = 1;
  int sp_size = 1, dp_size = 1;
  int sp_color = 0, sp_rank = 0;  // SP group index, position in it
  int dp_color = 0, dp_rank = 0;  // DP group index, position in it
  /// Nodes (the 5-argument make; 0 when not given): ranks per node, the node_size() this rank's
  /// SP communicator should report (sp_node_size: 0 = unknown), and how many nodes the group spans.
  int ranks_per_node = 0, sp_node_size = 0, sp_nodes = 1;

  /// Fills `out` for `world_rank` of `world_size` with SP groups of `sp`; kInvalidShape when
  /// world_size % sp != 0 (or a size < 1), kInvalidRank when world_rank is out of range. `out`
  /// is untouched on failure.
  [[nodiscard]] static constexpr Status make(int world_rank, int world_size, int sp, GroupRanks* out) noexcept {
    const Status s = check_groups(world_rank, world_size, sp);
    if (s != Status::kSuccess) return s;
    if (!out) return Status::kNullPointer;
    GroupRanks g;
    g.world_rank = world_rank;
    g.world_size = world_size;
    g.sp_size = sp;
    g.dp_size = comm::dp_size(world_size, sp);
    g.sp_color = comm::sp_color(world_rank, sp);
    g.sp_rank = comm::sp_rank(world_rank, sp);
    g.dp_color = comm::dp_color(world_rank, sp);
    g.dp_rank = comm::dp_rank(world_rank, sp);
    *out = g;
    return Status::kSuccess;
  }

  /// make() plus the nodes: world ranks sit on nodes of `ranks_per_node` contiguous ranks
  /// (kInvalidShape when ranks_per_node < 1; a world that is not a whole number of nodes is
  /// accepted: the last node is partial).
  [[nodiscard]] static constexpr Status make(int world_rank, int world_size, int sp, int ranks_per_node,
                                             GroupRanks* out) noexcept {
    if (ranks_per_node < 1) return Status::kInvalidShape;
    if (!out) return Status::kNullPointer;
    GroupRanks g;
    const Status s = make(world_rank, world_size, sp, &g);
    if (s != Status::kSuccess) return s;
    g.ranks_per_node = ranks_per_node;
    g.sp_node_size = comm::sp_node_size(sp, ranks_per_node);
    g.sp_nodes = comm::sp_nodes(g.sp_color, sp, ranks_per_node);
    *out = g;
    return Status::kSuccess;
  }
  /// Does this rank's SP group span more than one node? (Then schedule::Hierarchical pays off.)
  constexpr bool spans_nodes() const noexcept { return sp_nodes > 1; }

  /// SP ranks of the chain neighbours (-1 at the ends of the group).
  constexpr int prev() const noexcept { return chain_prev(sp_rank, sp_size); }
  constexpr int next() const noexcept { return chain_next(sp_rank, sp_size); }
  /// World ranks of the chain neighbours (-1 at the ends of the group).
  constexpr int prev_world() const noexcept { return prev() < 0 ? -1 : world_rank_of(sp_color, prev(), sp_size); }
  constexpr int next_world() const noexcept { return next() < 0 ? -1 : world_rank_of(sp_color, next(), sp_size); }
  /// World rank of member i of this rank's SP group / DP group.
  constexpr int sp_member(int i) const noexcept { return world_rank_of(sp_color, i, sp_size); }
  constexpr int dp_member(int i) const noexcept { return world_rank_of(i, dp_color, sp_size); }
};

}  // namespace comm
LASP_NAMESPACE_END
