// kernel::DocCursor (the chunk walk of packed documents the CUDA kernels will step) against brute
// force: every row of the range visited once, in order, in chunks of 1..C rows that stay inside
// one document, with the document index and the start / end flags right, chunks as long as the
// rules allow (forward: cut at the range start, document starts and every C rows after them;
// reverse: the mirror image), empty documents skipped, int32 and int64 offsets.
#include <doctest/doctest.h>
#include <cstdint>
#include <random>
#include <vector>
#include <lasp/kernel/doc_chunks.hpp>

namespace {

using lasp::index_t;
using lasp::kernel::DocChunk;
using lasp::kernel::DocCursor;
using lasp::kernel::DocOffsets;

template <int C, bool Reverse>
void check_walk(const DocOffsets& off, index_t g0, index_t begin, index_t end) {
  // Brute force: the document of every global position (the last i with off[i] <= t).
  const index_t total = off.at(off.docs);
  std::vector<index_t> doc_of(static_cast<std::size_t>(total));
  for (index_t d = 0; d < off.docs; ++d)
    for (index_t t = off.at(d); t < off.at(d + 1); ++t) doc_of[std::size_t(t)] = d;
  const index_t first_row = Reverse ? end - 1 : begin;
  DocCursor<C, Reverse> cur(off, g0, begin, end, off.doc_at(g0 + first_row));
  CHECK(cur.doc == doc_of[std::size_t(g0 + first_row)]);
  std::vector<DocChunk> chunks;
  while (cur.more()) {
    chunks.push_back(cur.next());
    REQUIRE(chunks.size() <= std::size_t(end - begin));  // every chunk has a row: no endless walk
  }
  index_t expect = Reverse ? end : begin;
  for (const DocChunk& c : chunks) {
    REQUIRE(c.len >= 1);
    REQUIRE(c.len <= C);
    if (Reverse) REQUIRE(c.n0 + c.len == expect);
    else REQUIRE(c.n0 == expect);
    expect = Reverse ? c.n0 : c.n0 + c.len;
    const index_t t0 = g0 + c.n0, t1 = t0 + c.len;  // global [t0, t1)
    for (index_t t = t0; t < t1; ++t) REQUIRE(doc_of[std::size_t(t)] == c.doc);
    CHECK(c.starts == (t0 == off.at(c.doc)));
    CHECK(c.ends == (t1 == off.at(c.doc + 1)));
    // As long as the rules allow.
    if (!Reverse) {
      if (!c.ends && c.n0 + c.len < end) CHECK(c.len == C);
    } else {
      if (!c.starts && c.n0 > begin) CHECK(c.len == C);
    }
  }
  CHECK(expect == (Reverse ? begin : end));
}

std::vector<index_t> random_lengths(std::mt19937& rng, index_t total) {
  const index_t menu[] = {0, 1, 2, 63, 64, 65, 127, 128, 129, 1000};
  std::vector<index_t> len;
  index_t used = 0;
  while (used < total) {
    index_t l = menu[rng() % 10];
    if (rng() % 4 == 0) l = index_t(rng() % 300);
    l = std::min(l, total - used);
    len.push_back(l);
    used += l;
  }
  if (rng() % 2) len.push_back(0);  // an empty document at the very end
  return len;
}

template <class I>
DocOffsets offsets_of(const std::vector<index_t>& len, std::vector<I>& store) {
  store.assign(1, I(0));
  for (index_t l : len) store.push_back(I(store.back() + I(l)));
  return DocOffsets{store.data(), int(sizeof(I) * 8), index_t(len.size())};
}

}  // namespace

TEST_CASE("DocCursor: chunks of packed documents, forward and reverse, against brute force") {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const index_t total = 1 + index_t(rng() % 3000);
    const std::vector<index_t> len = random_lengths(rng, total);
    std::vector<std::int32_t> o32;
    std::vector<std::int64_t> o64;
    const DocOffsets off = trial % 2 ? offsets_of(len, o32) : offsets_of(len, o64);
    // A rank holding global rows [g0, g0 + n), and a segment [begin, end) of it.
    const index_t g0 = index_t(rng() % std::uint64_t(total));
    const index_t n = 1 + index_t(rng() % std::uint64_t(total - g0));
    const index_t begin = index_t(rng() % std::uint64_t(n));
    const index_t end = begin + 1 + index_t(rng() % std::uint64_t(n - begin));
    CAPTURE(trial);
    CAPTURE(total);
    CAPTURE(g0);
    CAPTURE(begin);
    CAPTURE(end);
    check_walk<64, false>(off, g0, begin, end);
    check_walk<64, true>(off, g0, begin, end);
    check_walk<16, false>(off, g0, begin, end);
    check_walk<16, true>(off, g0, begin, end);
  }
}

TEST_CASE("DocCursor: one document is the plain chunk walk; documents on chunk boundaries") {
  std::vector<std::int32_t> o = {0, 1000};
  const DocOffsets one{o.data(), 32, 1};
  DocCursor<64, false> f(one, 0, 0, 1000, 0);
  int count = 0;
  while (f.more()) {
    const DocChunk c = f.next();
    CHECK(c.n0 == 64 * count);
    CHECK(c.len == (count < 15 ? 64 : 1000 - 15 * 64));
    CHECK(c.starts == (count == 0));
    CHECK(c.ends == (count == 15));
    ++count;
  }
  CHECK(count == 16);
  // Documents of exactly 64 and 128 rows with empty ones between: chunks are the documents' 64s.
  std::vector<std::int64_t> p = {0, 64, 64, 192, 192, 192, 256};
  const DocOffsets docs{p.data(), 64, 6};
  DocCursor<64, true> r(docs, 0, 0, 256, docs.doc_at(255));
  std::vector<index_t> seen_docs;
  while (r.more()) {
    const DocChunk c = r.next();
    CHECK(c.len == 64);
    seen_docs.push_back(c.doc);
  }
  CHECK(seen_docs == std::vector<index_t>{5, 2, 2, 0});
}
