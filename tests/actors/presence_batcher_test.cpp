// Tests of the presence batcher (actors/presence_batcher): when a change goes
// out at once and when it joins the pending presence_diff (big room, storm,
// pending diff), cancel-out, the order of the diff, and that a reconnect storm
// of 20,000 changes keeps the structures linear. Time is a plain time_point.
#include "actors/presence_batcher.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace chat {
namespace {

using namespace std::chrono_literals;
using act = presence_action;
using tp = presence_batcher::time_point;

member_info m(const std::string& u) { return {u, "N" + u}; }

std::vector<std::string> users(const std::vector<member_info>& ms) {
  std::vector<std::string> out;
  for (auto& x : ms) out.push_back(x.user);
  return out;
}
using names = std::vector<std::string>;

// A room as the batcher sees it: a user count that follows the changes.
struct room_sim {
  presence_batcher b;
  size_t members = 0;
  tp now = tp{} + 1h;

  explicit room_sim(presence_limits l) : b(l) {}
  act join(const std::string& u) { return b.change(true, m(u), ++members, now); }
  act leave(const std::string& u) { return b.change(false, m(u), --members, now); }
};

presence_limits limits(size_t threshold, size_t budget) {
  presence_limits l;
  l.batch_threshold = threshold;
  l.budget = budget;
  return l;
}

TEST(PresenceBatcher, ASmallQuietRoomSendsEveryChangeAtOnce) {
  room_sim r(limits(1000, 500));
  EXPECT_EQ(r.join("a"), act::send_now);
  r.now += 1s;
  EXPECT_EQ(r.join("b"), act::send_now);
  r.now += 1s;
  EXPECT_EQ(r.leave("a"), act::send_now);
  EXPECT_FALSE(r.b.tick_pending());
  EXPECT_EQ(r.b.indexed(), 0u);
  EXPECT_TRUE(r.b.take().empty());
}

TEST(PresenceBatcher, AStormInASmallRoomIsBatchedAndPendingChangesWait) {
  // As the room test: budget 10, changes x members 1x1, 2x2, 3x3 fit, 4x4 not.
  room_sim r(limits(1000, 10));
  EXPECT_EQ(r.join("a"), act::send_now);
  EXPECT_EQ(r.join("u2"), act::send_now);
  EXPECT_EQ(r.join("u3"), act::send_now);
  EXPECT_EQ(r.join("u4"), act::schedule_tick);
  EXPECT_EQ(r.join("u5"), act::batched);
  EXPECT_TRUE(r.b.tick_pending());
  // A new rate window, and 1 change x 4 members fits the budget: still into
  // the diff, so that u5's leave does not overtake u5's join.
  r.now += 2s;
  EXPECT_EQ(r.leave("u5"), act::batched);
  auto d = r.b.take();
  EXPECT_EQ(users(d.joins), names{"u4"});  // u5 joined and left: cancelled
  EXPECT_TRUE(d.leaves.empty());
  EXPECT_EQ(d.joins[0].name, "Nu4");
  EXPECT_FALSE(r.b.tick_pending());
  // The storm is over: immediate again (2 changes x 3 members = 6 <= 10).
  EXPECT_EQ(r.leave("u4"), act::send_now);
}

TEST(PresenceBatcher, TheRateWindowRestartsAfterItsLength) {
  room_sim r(limits(1000, 10));
  for (auto u : {"a", "b", "c"}) EXPECT_EQ(r.join(u), act::send_now);
  r.now += 999ms;  // same window: 4 x 4 > 10
  EXPECT_EQ(r.join("d"), act::schedule_tick);
  r.b.take();
  r.now = tp{} + 1h + 1s;  // exactly the window's length after its start: a new window
  EXPECT_EQ(r.join("e"), act::send_now);       // 1 x 5
  EXPECT_EQ(r.join("f"), act::schedule_tick);  // 2 x 6
}

TEST(PresenceBatcher, ABigRoomBatchesEveryChange) {
  // As the room test: threshold 2.
  room_sim r(limits(2, 500));
  EXPECT_EQ(r.join("a"), act::send_now);
  EXPECT_EQ(r.join("b"), act::send_now);  // at the threshold: immediate
  EXPECT_EQ(r.join("c"), act::schedule_tick);
  EXPECT_EQ(r.join("d"), act::batched);
  auto d = r.b.take();
  EXPECT_EQ(users(d.joins), (names{"c", "d"}));
  EXPECT_TRUE(d.leaves.empty());

  // A leave counts the user who leaves: 3 users after, 4 with d, above 2.
  EXPECT_EQ(r.leave("d"), act::schedule_tick);
  EXPECT_EQ(r.join("e"), act::batched);
  d = r.b.take();
  EXPECT_EQ(users(d.joins), names{"e"});
  EXPECT_EQ(users(d.leaves), names{"d"});

  // Leaving and coming back within one interval cancels out: an empty diff.
  EXPECT_EQ(r.leave("c"), act::schedule_tick);
  EXPECT_EQ(r.join("c"), act::batched);
  EXPECT_TRUE(r.b.take().empty());
  EXPECT_FALSE(r.b.tick_pending());

  // c and e leave: 3 and then 2 users counting the one leaving: both batched.
  EXPECT_EQ(r.leave("c"), act::schedule_tick);
  EXPECT_EQ(r.leave("e"), act::batched);
  d = r.b.take();
  EXPECT_EQ(users(d.leaves), (names{"c", "e"}));
  // f makes 3 (batched), leaves (cancels); b's leave is not above the
  // threshold, but a diff is pending: it waits in it, in order.
  EXPECT_EQ(r.join("f"), act::schedule_tick);
  EXPECT_EQ(r.leave("f"), act::batched);
  EXPECT_EQ(r.leave("b"), act::batched);
  d = r.b.take();
  EXPECT_TRUE(d.joins.empty());
  EXPECT_EQ(users(d.leaves), names{"b"});
  // Nothing pending and at the threshold: immediate again.
  EXPECT_EQ(r.join("g"), act::send_now);
}

TEST(PresenceBatcher, TheThresholdCountsTheUserWhoLeaves) {
  // One above the threshold is big whichever way the change goes: the join
  // that makes 3 users and the leave from 3 users are both batched.
  room_sim r(limits(2, 500));
  r.join("a");
  r.join("b");
  EXPECT_EQ(r.join("c"), act::schedule_tick);
  r.b.take();
  EXPECT_EQ(r.leave("c"), act::schedule_tick);
  EXPECT_EQ(users(r.b.take().leaves), names{"c"});
  EXPECT_EQ(r.leave("b"), act::send_now);  // from 2 users: not big
}

TEST(PresenceBatcher, NoChangeOvertakesAnotherAndTheDiffKeepsArrivalOrder) {
  room_sim r(limits(0, 500));  // every change batched
  EXPECT_EQ(r.join("u1"), act::schedule_tick);
  r.join("u2");
  r.join("u3");
  r.leave("u2");  // cancels u2's join; u1 and u3 keep their places
  r.join("u2");   // a new join: now last
  r.b.change(false, m("x"), r.members, r.now);  // someone who was there before
  r.b.change(false, m("y"), r.members, r.now);
  r.b.change(true, m("x"), r.members, r.now);  // x back: cancels x's leave
  EXPECT_EQ(r.b.pending_joins(), 3u);
  EXPECT_EQ(r.b.pending_leaves(), 1u);
  EXPECT_EQ(r.b.indexed(), 4u);
  auto d = r.b.take();
  EXPECT_EQ(users(d.joins), (names{"u1", "u3", "u2"}));
  EXPECT_EQ(users(d.leaves), names{"y"});
  // take() leaves nothing behind.
  EXPECT_EQ(r.b.indexed(), 0u);
  EXPECT_EQ(r.b.pending_joins() + r.b.pending_leaves(), 0u);
  EXPECT_TRUE(r.b.take().empty());
}

TEST(PresenceBatcher, LeaveJoinLeaveOfOneUserIsOneLeave) {
  room_sim r(limits(0, 500));
  r.members = 5;
  r.leave("u");
  r.join("u");
  r.leave("u");
  auto d = r.b.take();
  EXPECT_TRUE(d.joins.empty());
  EXPECT_EQ(users(d.leaves), names{"u"});
}

TEST(PresenceBatcher, AReconnectStormOf20000ChangesStaysLinear) {
  // 10,000 users drop and come back: 20,000 changes in one interval. With
  // vectors and find_if this was 10^8 comparisons; here each change touches
  // one map entry, and nothing grows past one entry per user.
  const int n = 10000;
  presence_batcher b(limits(1000, 500));
  tp now = tp{} + 1h;
  size_t members = n;
  size_t ticks = 0, batched = 0, max_indexed = 0;
  auto count = [&](act a) {
    if (a == act::schedule_tick) ++ticks;
    if (a == act::batched) ++batched;
    max_indexed = std::max(max_indexed, b.indexed());
    ASSERT_EQ(b.indexed(), b.pending_joins() + b.pending_leaves());
  };
  for (int i = 0; i < n; ++i) count(b.change(false, m("u" + std::to_string(i)), --members, now));
  EXPECT_EQ(b.pending_leaves(), static_cast<size_t>(n));
  for (int i = n - 1; i >= 0; --i)  // back in another order
    count(b.change(true, m("u" + std::to_string(i)), ++members, now));
  EXPECT_EQ(ticks, 1u);  // one diff for the whole storm
  EXPECT_EQ(batched, 2u * n - 1);
  EXPECT_EQ(max_indexed, static_cast<size_t>(n));
  EXPECT_EQ(b.indexed(), 0u);  // everyone is back: it all cancelled
  EXPECT_TRUE(b.take().empty());

  // 20,000 newcomers in one interval: one diff naming them in arrival order.
  ticks = batched = 0;
  for (int i = 0; i < 2 * n; ++i) count(b.change(true, m("n" + std::to_string(i)), ++members, now));
  EXPECT_EQ(ticks, 1u);
  EXPECT_EQ(batched, 2u * n - 1);
  EXPECT_EQ(b.indexed(), 2u * n);
  auto d = b.take();
  ASSERT_EQ(d.joins.size(), 2u * n);
  for (int i = 0; i < 2 * n; ++i) ASSERT_EQ(d.joins[i].user, "n" + std::to_string(i));
  EXPECT_TRUE(d.leaves.empty());
}

}  // namespace
}  // namespace chat
