// Tests of a room's idempotency cache (actors/idem_cache): the key, the window
// and its expiry order, the caps (count and bytes, never a pending key), and
// the waiters of a send still being stored.
#include "actors/idem_cache.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace chat {
namespace {

struct waiter {
  int conn;
  std::string req_id;
};

std::vector<std::string> ids(const std::vector<waiter>& ws) {
  std::vector<std::string> out;
  for (auto& w : ws) out.push_back(w.req_id);
  return out;
}

idem_limits window(int64_t ms) {
  idem_limits l;
  l.window_ms = ms;
  return l;
}

TEST(IdemKey, IsPerUserAndEmptyWithoutAClientKey) {
  EXPECT_EQ(idem_key("alice", ""), "");
  EXPECT_EQ(idem_key("alice", "k1"), "alice\x1f" "k1");
  EXPECT_NE(idem_key("alice", "k1"), idem_key("bob", "k1"));
  // The separator keeps the two parts apart: "ab"+"c" is not "a"+"bc".
  EXPECT_NE(idem_key("ab", "c"), idem_key("a", "bc"));
}

TEST(IdemCache, FindsAKeyWithinTheWindowOnly) {
  idem_cache<waiter> c(window(1000));
  EXPECT_FALSE(c.find("k", 0));
  c.remember("k", 7, 5000);
  auto hit = c.find("k", 5000);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->seq, 7u);
  EXPECT_EQ(hit->ts, 5000);
  EXPECT_TRUE(c.find("k", 6000));   // exactly the window: still the first ack
  EXPECT_FALSE(c.find("k", 6001));  // past it: a new message
  EXPECT_FALSE(c.find("other", 5000));
}

TEST(IdemCache, ExpiresTheOldestFirstOnRemember) {
  idem_cache<waiter> c(window(1000));
  c.remember("k1", 1, 0);
  c.remember("k2", 2, 100);
  c.remember("edge", 9, 150);
  c.remember("k3", 3, 200);
  EXPECT_EQ(c.size(), 4u);
  // Cutoff 1150 - 1000 = 150: k1 and k2 are older; a key exactly at the
  // cutoff is within the window (as find says), k3 is newer.
  c.remember("k4", 4, 1150);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_FALSE(c.find("k1", 1150));
  EXPECT_FALSE(c.find("k2", 1150));
  EXPECT_TRUE(c.find("edge", 1150));
  EXPECT_TRUE(c.find("k3", 1150));
  EXPECT_TRUE(c.find("k4", 1150));
  EXPECT_EQ(c.evicted(), 0u);  // the window, not a cap
}

TEST(IdemCache, ExpiresByTsEvenWhenRememberedOutOfOrder) {
  idem_cache<waiter> c(window(1000));
  c.remember("late", 2, 500);
  c.remember("early", 1, 100);  // e.g. a snapshot's keys in another order
  c.expire(1150);               // cutoff 150
  EXPECT_EQ(c.size(), 1u);
  EXPECT_TRUE(c.find("late", 1150));
  c.expire(1501);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(IdemCache, ARememberedAgainKeyMovesToItsNewTs) {
  idem_cache<waiter> c(window(1000));
  c.remember("k1", 1, 0);
  c.remember("k2", 2, 100);
  c.remember("k1", 1, 500);  // the same key again (a resync re-reads it)
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.bytes(), 2 * (2 + idem_committed::entry_overhead));
  c.remember("k3", 3, 1200);  // cutoff 200: k2 goes, k1 is now at 500
  EXPECT_FALSE(c.find("k2", 1200));
  ASSERT_TRUE(c.find("k1", 1200));
  EXPECT_EQ(c.find("k1", 1200)->ts, 500);
  EXPECT_EQ(c.size(), 2u);
}

TEST(IdemCache, CountCapDropsTheOldestCommittedKeys) {
  idem_limits l;
  l.max_keys = 3;
  idem_cache<waiter> c(l);
  for (int i = 1; i <= 5; ++i) c.remember("k" + std::to_string(i), i, i);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.evicted(), 2u);
  EXPECT_FALSE(c.find("k1", 5));
  EXPECT_FALSE(c.find("k2", 5));
  for (int i = 3; i <= 5; ++i) EXPECT_TRUE(c.find("k" + std::to_string(i), 5)) << i;
}

TEST(IdemCache, ByteCapCountsKeyBytesAndDropsTheOldest) {
  // Client keys are up to 128 bytes; with a user id the key is a little longer.
  const std::string user = "alice";
  auto key = [&](int i) { return idem_key(user, std::string(127, 'a') + std::to_string(i % 10)); };
  const size_t per_key = key(0).size() + idem_committed::entry_overhead;
  idem_limits l;
  l.max_bytes = 4 * per_key + per_key / 2;  // room for four
  idem_cache<waiter> c(l);
  for (int i = 0; i < 4; ++i) c.remember(key(i), i + 1, i);
  EXPECT_EQ(c.size(), 4u);
  EXPECT_EQ(c.bytes(), 4 * per_key);
  c.remember(key(4), 5, 4);
  EXPECT_EQ(c.size(), 4u);
  EXPECT_LE(c.bytes(), l.max_bytes);
  EXPECT_FALSE(c.find(key(0), 4));  // the oldest went
  EXPECT_TRUE(c.find(key(1), 4));
  EXPECT_TRUE(c.find(key(4), 4));
  EXPECT_EQ(c.evicted(), 1u);

  // Short keys cost less: more of them fit under the same cap.
  idem_cache<waiter> s(l);
  for (int i = 0; i < 100; ++i) s.remember(idem_key(user, std::to_string(i)), i + 1, i);
  EXPECT_GT(s.size(), 4u);
  EXPECT_LE(s.bytes(), l.max_bytes);
}

TEST(IdemCache, StaysWithinItsCapsUnderAFloodOfKeys) {
  idem_cache<waiter> c;  // defaults
  const idem_limits l;
  for (int i = 0; i < 50000; ++i)
    c.remember(idem_key("u" + std::to_string(i % 97), std::string(100, 'x') + std::to_string(i)),
               static_cast<uint64_t>(i + 1), 1000 + i / 100);  // all within the window
  EXPECT_LE(c.size(), l.max_keys);
  EXPECT_LE(c.bytes(), l.max_bytes);
  EXPECT_GT(c.evicted(), 0u);
  // The newest is always kept.
  EXPECT_TRUE(c.find(idem_key("u" + std::to_string(49999 % 97), std::string(100, 'x') + "49999"),
                     1500));
}

TEST(IdemCache, DuplicatesWaitForTheFirstSendsAck) {
  idem_cache<waiter> c;
  EXPECT_FALSE(c.pending("k"));
  EXPECT_FALSE(c.wait("k", waiter{1, "0"}));  // nothing to wait for: the room stores it
  c.begin("k");
  EXPECT_TRUE(c.pending("k"));
  EXPECT_FALSE(c.find("k", 0));  // not committed yet
  EXPECT_TRUE(c.wait("k", waiter{2, "a"}));
  EXPECT_TRUE(c.wait("k", waiter{3, "b"}));
  EXPECT_EQ(c.waiter_count(), 2u);
  auto acks = c.resolve("k", 9, 100);
  EXPECT_EQ(ids(acks), (std::vector<std::string>{"a", "b"}));  // in arrival order
  EXPECT_EQ(acks[1].conn, 3);
  EXPECT_FALSE(c.pending("k"));
  EXPECT_EQ(c.pending_count(), 0u);
  ASSERT_TRUE(c.find("k", 100));
  EXPECT_EQ(c.find("k", 100)->seq, 9u);
  // A later duplicate finds the committed key, not a pending one.
  EXPECT_FALSE(c.wait("k", waiter{4, "c"}));
}

TEST(IdemCache, AFailedSendHandsBackItsWaitersAndForgetsTheKey) {
  idem_cache<waiter> c;
  c.begin("k");
  c.wait("k", waiter{2, "a"});
  auto errs = c.fail("k");
  EXPECT_EQ(ids(errs), (std::vector<std::string>{"a"}));
  EXPECT_FALSE(c.pending("k"));
  EXPECT_FALSE(c.find("k", 0));
  EXPECT_EQ(c.size(), 0u);
  // The client's retry starts afresh.
  c.begin("k");
  EXPECT_TRUE(c.wait("k", waiter{3, "b"}));
  EXPECT_TRUE(c.fail("other").empty());  // not pending: nothing to answer
}

TEST(IdemCache, AKeyWithoutWaitersResolvesToNone) {
  idem_cache<waiter> c;
  c.begin("k");
  EXPECT_TRUE(c.resolve("k", 1, 10).empty());
  EXPECT_TRUE(c.resolve("never-begun", 2, 10).empty());  // a send whose key nobody waits on
  EXPECT_TRUE(c.find("never-begun", 10));
}

TEST(IdemCache, AKeyStoredDuringAResyncResolvesItsQueuedRetry) {
  // The retry queued while a failed append was re-read; the re-read found the
  // first send stored after all: the room acks the retry and its duplicates.
  idem_cache<waiter> c;
  c.begin("k");
  c.wait("k", waiter{2, "dup"});
  c.remember("k", 5, 100);  // resync
  auto hit = c.find("k", 100);
  ASSERT_TRUE(hit);
  auto acks = c.resolve("k", hit->seq, hit->ts);
  EXPECT_EQ(ids(acks), (std::vector<std::string>{"dup"}));
  EXPECT_EQ(c.size(), 1u);  // remembered once, not twice
  EXPECT_EQ(c.bytes(), 1 + idem_committed::entry_overhead);
  EXPECT_FALSE(c.pending("k"));
}

TEST(IdemCache, APendingKeyIsNeverEvicted) {
  idem_limits l;
  l.max_keys = 2;
  idem_cache<waiter> c(l);
  c.begin("pending");
  c.wait("pending", waiter{1, "w"});
  for (int i = 0; i < 100; ++i) c.remember("k" + std::to_string(i), i + 1, i * 100);
  EXPECT_EQ(c.size(), 2u);  // caps and window apply to committed keys
  EXPECT_TRUE(c.pending("pending"));
  EXPECT_EQ(ids(c.resolve("pending", 500, 10000)), (std::vector<std::string>{"w"}));
  EXPECT_TRUE(c.find("pending", 10000));
}

TEST(IdemCache, WaitersMayBeMoveOnly) {
  idem_cache<std::unique_ptr<int>> c;
  c.begin("k");
  auto w = std::make_unique<int>(42);
  EXPECT_TRUE(c.wait("k", std::move(w)));
  auto keep = std::make_unique<int>(7);
  EXPECT_FALSE(c.wait("other", std::move(keep)));
  ASSERT_TRUE(keep);  // not taken when nothing was pending
  auto got = c.resolve("k", 1, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(*got[0], 42);
}

}  // namespace
}  // namespace chat
