// Tests of a room's recent window (actors/recent_window): bounded by count
// and by bytes, messages moved in (never copied), trimming to the store's
// first seq, coverage of a seq range, and ranges served without copies.
#include "actors/recent_window.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace chat {
namespace {

stored_msg msg(uint64_t seq, size_t data_bytes = 0) {
  stored_msg m;
  m.room = "general";
  m.seq = seq;
  m.ts = 1000 + static_cast<int64_t>(seq);
  m.from = "alice";
  m.name = "Alice";
  auto digits = std::to_string(seq);
  m.text = "message " + std::string(8 - digits.size(), '0') + digits;  // every cost the same
  if (data_bytes > 0) m.data = std::string(data_bytes, 'd');
  return m;
}

template <class Range>
std::vector<uint64_t> seqs(const Range& r) {
  std::vector<uint64_t> out;
  for (auto& m : r) out.push_back(m.seq);
  return out;
}

std::vector<uint64_t> iota(uint64_t from, uint64_t to) {  // [from, to]
  std::vector<uint64_t> out;
  for (uint64_t s = from; s <= to; ++s) out.push_back(s);
  return out;
}

recent_limits limits(size_t count, size_t bytes) {
  recent_limits l;
  l.max_count = count;
  l.max_bytes = bytes;
  return l;
}

void fill(recent_window& w, uint64_t from, uint64_t to, size_t data_bytes = 0) {
  for (uint64_t s = from; s <= to; ++s) w.push(msg(s, data_bytes));
}

TEST(RecentWindow, CostCountsTheVariableFieldsButNotTheRoom) {
  stored_msg m;
  m.room = std::string(1000, 'r');  // the same in every message of a room
  m.from = "ab";
  m.name = "cde";
  m.text = "fghi";
  m.data = "{\"j\":1}";
  m.idem_key = "key";
  EXPECT_EQ(recent_window::cost(m), 2u + 3 + 4 + 7 + 3);
}

TEST(RecentWindow, KeepsTheNewestByCount) {
  recent_window w(limits(5, 1 << 20));
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.oldest_seq(), 0u);
  fill(w, 1, 12);
  EXPECT_EQ(w.size(), 5u);
  EXPECT_EQ(seqs(w), iota(8, 12));
  EXPECT_EQ(w.oldest_seq(), 8u);
  EXPECT_EQ(w.newest_seq(), 12u);
  size_t bytes = 0;
  for (auto& m : w) bytes += recent_window::cost(m);
  EXPECT_EQ(w.bytes(), bytes);
}

TEST(RecentWindow, ThousandMessagesOf64KiBDoNotPinTheirSize) {
  // Issue 11, item 3: the count alone let 1,000 such messages pin 62 MiB.
  recent_window w;  // defaults
  fill(w, 1, 1000, 64 * 1024);
  EXPECT_LE(w.bytes(), recent_limits{}.max_bytes);
  const size_t each = recent_window::cost(msg(1000, 64 * 1024));
  EXPECT_EQ(w.size(), recent_limits{}.max_bytes / each);  // as many as fit, no fewer
  EXPECT_EQ(w.newest_seq(), 1000u);
  EXPECT_EQ(seqs(w), iota(1000 - w.size() + 1, 1000));  // the newest, contiguous
  // Short messages after them push the large ones out by count again.
  fill(w, 1001, 3000);
  EXPECT_EQ(w.size(), recent_limits{}.max_count);
  EXPECT_EQ(w.oldest_seq(), 2001u);
}

TEST(RecentWindow, AMessageAboveTheByteCapIsNotKept) {
  recent_window w(limits(10, 1000));
  fill(w, 1, 3);
  w.push(msg(4, 2000));
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.bytes(), 0u);
  EXPECT_FALSE(w.covers(4, 5));  // the store serves it
  w.push(msg(5));
  EXPECT_EQ(seqs(w), iota(5, 5));
}

TEST(RecentWindow, TakesMessagesByMoveWithoutCopyingTheirBodies) {
  recent_window w;
  auto m = msg(1, 10000);
  m.text = std::string(100, 't');  // long enough to live on the heap
  const char* data = m.data.data();
  const char* text_before = m.text.data();
  w.push(std::move(m));
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w.begin()->data.data(), data);  // the same buffer: moved, not copied
  EXPECT_EQ(w.begin()->text.data(), text_before);
  // A range hands out the window's own messages.
  auto r = w.range(1, 2);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(&*r.begin(), &*w.begin());
}

TEST(RecentWindow, TrimBelowDropsWhatTheStoreNoLongerHolds) {
  recent_window w(limits(100, 1 << 20));
  fill(w, 1, 10);
  auto before = w.bytes();
  w.trim_below(4);
  EXPECT_EQ(seqs(w), iota(4, 10));
  EXPECT_EQ(w.bytes(), before - 3 * recent_window::cost(msg(1)));
  w.trim_below(2);  // already above: nothing
  EXPECT_EQ(w.size(), 7u);
  w.trim_below(11);
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.bytes(), 0u);
}

TEST(RecentWindow, ClearEmptiesItAndItsByteCount) {
  recent_window w;
  fill(w, 1, 5);
  w.clear();
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.bytes(), 0u);
  fill(w, 7, 8);  // a snapshot may start anywhere
  EXPECT_EQ(seqs(w), iota(7, 8));
}

TEST(RecentWindow, CoversOnlyRangesItHoldsEntirely) {
  recent_window w(limits(5, 1 << 20));
  EXPECT_FALSE(w.covers(1, 2));
  EXPECT_TRUE(w.covers(3, 3));  // an empty range is always covered
  fill(w, 1, 12);               // holds 8..12
  EXPECT_TRUE(w.covers(8, 13));
  EXPECT_TRUE(w.covers(9, 11));
  EXPECT_TRUE(w.covers(12, 13));
  EXPECT_FALSE(w.covers(7, 13));   // 7 is gone
  EXPECT_FALSE(w.covers(8, 14));   // 13 is not there yet
  EXPECT_TRUE(w.covers(20, 10));   // hi <= lo: empty
  // The room's recovery question: since=7, last_seq=12.
  EXPECT_TRUE(w.covers(7 + 1, 12 + 1));
  EXPECT_FALSE(w.covers(6 + 1, 12 + 1));
}

TEST(RecentWindow, RangeIsHalfOpenAndClipped) {
  recent_window w(limits(5, 1 << 20));
  EXPECT_TRUE(w.range(1, 10).empty());
  fill(w, 1, 12);  // holds 8..12
  EXPECT_EQ(seqs(w.range(9, 11)), (std::vector<uint64_t>{9, 10}));
  EXPECT_EQ(seqs(w.range(10)), iota(10, 12));  // to the newest
  EXPECT_EQ(seqs(w.range(1, 10)), iota(8, 9));  // clipped to what is held
  EXPECT_EQ(seqs(w.range(8, 100)), iota(8, 12));
  EXPECT_TRUE(w.range(13).empty());
  EXPECT_TRUE(w.range(11, 11).empty());
  EXPECT_TRUE(w.range(11, 9).empty());
  EXPECT_EQ(w.range(8, 13).size(), 5u);
}

}  // namespace
}  // namespace chat
