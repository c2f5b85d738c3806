// The store actor under CAF's deterministic test coordinator: group commit,
// answers in order, and what rooms do when the store fails. The backend is the
// memory backend wrapped in a decorator that counts appends and fails on demand.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "actors/room.hpp"
#include "actors/store/store.hpp"
#include "tests/support/caf_gtest.hpp"  // first: bridges caf/test/dsl.hpp to gtest
#include "tests/support/chat_fakes.hpp"

using namespace caf;
using namespace chat;
using namespace chat_test;

namespace {

stored_msg msg(const std::string& room, uint64_t seq, std::string text = "x") {
  stored_msg m;
  m.room = room;
  m.seq = seq;
  m.ts = 1000 + static_cast<int64_t>(seq);
  m.from = "alice";
  m.name = "Alice";
  m.text = std::move(text);
  return m;
}

append_batch batch(const std::string& room, uint64_t first, uint64_t last) {
  append_batch b;
  b.room = room;
  for (auto s = first; s <= last; ++s) b.msgs.push_back(msg(room, s));
  return b;
}

range_query all_of(const std::string& room) {
  range_query q;
  q.room = room;
  q.limit = 1000;
  q.newest = false;
  return q;
}

// Hands batches to the store, one request each, and records the answers in the
// order they arrive: (room#first seq, last seq or 0 for an error).
struct client_state {
  std::vector<std::pair<std::string, uint64_t>> answers;
  std::vector<error> errors;  // every error answer, in order
  static inline const char* name = "store_client";
};
behavior client_impl(stateful_actor<client_state>* self, store_actor store) {
  return {
      [=](std::vector<append_batch>& batches) {
        for (auto& b : batches) {
          auto tag = b.room + "#" + std::to_string(b.msgs.front().seq);
          self->request(store, infinite, append_atom_v, b)
              .then([=](append_batch& done) {
                      self->state.answers.emplace_back(tag, done.msgs.back().seq);
                    },
                    [=](error& e) {
                      self->state.answers.emplace_back(tag, 0);
                      self->state.errors.push_back(e);
                    });
        }
      },
  };
}

room_config test_room_config() {
  room_config c;
  c.idle_grace = std::chrono::hours(2);
  c.store_timeout = std::chrono::hours(1);
  return c;
}

struct StoreActorTest : ::testing::Test, test_coordinator_fixture<test_config> {
  std::shared_ptr<counting_backend> backend;
  store_actor store;
  actor dir;  // recorder standing in for the directory
  std::vector<actor> spawned;

  StoreActorTest() {
    backend = std::make_shared<counting_backend>(make_memory_backend(0));
    store = spawn_store(sys, backend, store_config{}, /*detached=*/false);
    dir = gateway();
    sched.run();
  }

  ~StoreActorTest() override {
    for (auto& a : spawned) anon_send_exit(a, exit_reason::kill);
    anon_send_exit(store, exit_reason::kill);
    sched.run();
  }

  actor gateway() {
    auto g = sys.spawn(recorder_impl, std::string("recorder"));
    spawned.push_back(g);
    sched.run();
    return g;
  }

  actor room(const std::string& name) {
    auto r = sys.spawn(room_impl, name, deps());
    spawned.push_back(r);
    sched.run();
    return r;
  }

  void create_rooms(std::initializer_list<const char*> names) {
    for (auto* n : names) {
      room_snapshot snap;
      std::string err;
      ASSERT_TRUE(backend->load_room(n, 10, 0, snap, err)) << err;
    }
  }

  room_deps deps() {
    room_deps d;
    d.store = store;
    d.directory = dir;
    d.cfg = test_room_config();
    return d;
  }

  static std::string name_of(const actor& r) { return state_of<room_state>(r).room; }

  void join(const actor& r, const actor& gw, uint64_t conn, const std::string& user) {
    self->send(r, make_join(name_of(r), conn_ref{as_gw(gw), conn}, member_info{user, user}));
  }
  void say(const actor& r, const actor& gw, uint64_t conn, const std::string& user,
           const std::string& text, const std::string& id = "", const std::string& key = "") {
    self->send(r, make_send(name_of(r), conn_ref{as_gw(gw), conn}, member_info{user, user}, id, text, key));
  }

  std::vector<std::string> stored_texts(const std::string& room) {
    std::vector<std::string> out;
    uint64_t expect_seq = 1;
    for (auto& m : backend->stored(room)) {
      EXPECT_EQ(m.seq, expect_seq++) << "stored seqs have a gap";
      out.push_back(m.text);
    }
    return out;
  }

  std::vector<std::string> delivered_texts(const actor& gw) {
    std::vector<std::string> out;
    for (auto& j : delivered(gw, "message")) out.push_back(j["text"].get<std::string>());
    return out;
  }
};

using answers = std::vector<std::pair<std::string, uint64_t>>;
using texts = std::vector<std::string>;

// --- group commit ------------------------------------------------------------------

TEST_F(StoreActorTest, AppendsQueuedBeforeTheFlushShareOneCommit) {
  auto ra = room("a");
  auto rb = room("b");
  auto rc = room("c");
  auto gw = gateway();
  join(ra, gw, 1, "alice");
  join(rb, gw, 2, "alice");
  join(rc, gw, 3, "alice");
  sched.run();
  ASSERT_EQ(backend->append_calls, 0u);

  // Three rooms hand their messages to the store before it runs: one commit.
  say(ra, gw, 1, "alice", "to a", "1");
  say(rb, gw, 2, "alice", "to b", "2");
  say(rc, gw, 3, "alice", "to c", "3");
  sched.run();
  ASSERT_EQ(backend->append_calls, 1u);
  ASSERT_EQ(backend->calls[0].size(), 3u);
  EXPECT_EQ(backend->calls[0][0].room, "a");
  EXPECT_EQ(backend->calls[0][1].room, "b");
  EXPECT_EQ(backend->calls[0][2].room, "c");
  // Each room got its answer: each sender its ack with seq 1.
  EXPECT_EQ(ack_seqs(gw, 1), iota_seqs(1, 1));
  EXPECT_EQ(ack_seqs(gw, 2), iota_seqs(1, 1));
  EXPECT_EQ(ack_seqs(gw, 3), iota_seqs(1, 1));
  EXPECT_EQ(stored_texts("a"), texts{"to a"});
  EXPECT_EQ(stored_texts("b"), texts{"to b"});
  EXPECT_EQ(stored_texts("c"), texts{"to c"});
}

TEST_F(StoreActorTest, EachAppendIsAnsweredInOrderAfterTheCommit) {
  create_rooms({"a", "b", "c"});
  auto client = sys.spawn(client_impl, store);
  spawned.push_back(client);
  sched.run();
  self->send(client, std::vector<append_batch>{batch("a", 1, 2), batch("b", 1, 1),
                                               batch("a", 3, 3), batch("c", 1, 4)});
  expect((std::vector<append_batch>), from(self).to(client));
  // Four appends wait in the store's mailbox; the flush queues behind them.
  for (int i = 0; i < 4; ++i) expect((append_atom, append_batch), from(client).to(store));
  EXPECT_EQ(backend->append_calls, 0u);
  EXPECT_TRUE(state_of<client_state>(client).answers.empty());
  expect((flush_now_atom), from(store).to(store));
  EXPECT_EQ(backend->append_calls, 1u);  // one transaction for all four
  ASSERT_EQ(backend->calls[0].size(), 4u);
  sched.run();
  // Answered in the order they were handed in, each with its batch's last seq.
  EXPECT_EQ(state_of<client_state>(client).answers,
            (answers{{"a#1", 2}, {"b#1", 1}, {"a#3", 3}, {"c#1", 4}}));
  EXPECT_EQ(backend->stored("a").size(), 3u);
  EXPECT_EQ(backend->stored("c").size(), 4u);

  // Later appends make a new commit.
  self->send(client, std::vector<append_batch>{batch("b", 2, 2)});
  sched.run();
  EXPECT_EQ(backend->append_calls, 2u);
  EXPECT_EQ(state_of<client_state>(client).answers.back(), std::make_pair(std::string("b#2"), uint64_t{2}));
}

TEST_F(StoreActorTest, ABadBatchFailsOnlyItsOwnRoom) {
  create_rooms({"a", "b", "c"});
  auto client = sys.spawn(client_impl, store);
  spawned.push_back(client);
  sched.run();
  // b's batch has a seq gap: the shared commit fails, then each batch is retried alone.
  self->send(client, std::vector<append_batch>{batch("a", 1, 1), batch("b", 5, 5),
                                               batch("c", 1, 1)});
  sched.run();
  EXPECT_EQ(state_of<client_state>(client).answers,
            (answers{{"a#1", 1}, {"b#5", 0}, {"c#1", 1}}));
  EXPECT_EQ(backend->append_calls, 4u);  // the shared one, then three alone
  EXPECT_EQ(backend->stored("a").size(), 1u);
  EXPECT_TRUE(backend->stored("b").empty());
  EXPECT_EQ(backend->stored("c").size(), 1u);
}

TEST_F(StoreActorTest, EmptyBatchIsRefused) {
  create_rooms({"a"});
  auto h = self->request(store, infinite, append_atom_v, batch("a", 1, 0));
  sched.run();
  bool refused = false;
  h.receive([&](append_batch&) { ADD_FAILURE() << "an empty batch was accepted"; },
            [&](error&) { refused = true; });
  EXPECT_TRUE(refused);
  EXPECT_EQ(backend->append_calls, 0u);
}

// --- parallel commits (a backend that takes concurrent calls) ---------------------------

struct ParallelStoreTest : StoreActorTest {
  store_actor pstore;
  ParallelStoreTest() {
    backend->parallel = 3;  // two committers, one connection for the store's reads
    pstore = spawn_store(sys, backend, store_config{}, /*detached=*/false);
    sched.run();
  }
  ~ParallelStoreTest() override {
    anon_send_exit(pstore, exit_reason::kill);
    sched.run();
  }
  // Hands `batches` to the store through `client` and runs the store until its
  // flush has handed them to a committer (which has not run yet).
  void hand_in(const actor& client, std::vector<append_batch> batches) {
    auto n = batches.size();
    self->send(client, std::move(batches));
    expect((std::vector<append_batch>), from(self).to(client));
    for (size_t i = 0; i < n; ++i) expect((append_atom, append_batch), from(client).to(pstore));
    expect((flush_now_atom), from(pstore).to(pstore));
  }
};

TEST_F(ParallelStoreTest, ARoomWaitsForItsCommitInFlightWhileOthersCommitBesideIt) {
  create_rooms({"a", "b", "c"});
  auto client = sys.spawn(client_impl, pstore);
  spawned.push_back(client);
  sched.run();
  hand_in(client, {batch("a", 1, 1), batch("b", 1, 1)});  // commit 1: a, b
  hand_in(client, {batch("a", 2, 2), batch("c", 1, 1)});  // commit 2: c only, a#2 waits
  EXPECT_EQ(backend->append_calls, 0u);
  sched.run();
  ASSERT_EQ(backend->calls.size(), 3u);
  auto rooms_of = [](const std::vector<append_batch>& bs) {
    std::vector<std::string> out;
    for (auto& b : bs) out.push_back(b.room + "#" + std::to_string(b.msgs.front().seq));
    std::sort(out.begin(), out.end());
    return out;
  };
  std::vector<std::vector<std::string>> seen;
  for (auto& c : backend->calls) seen.push_back(rooms_of(c));
  std::sort(seen.begin(), seen.begin() + 2);
  EXPECT_EQ(seen, (std::vector<std::vector<std::string>>{{"a#1", "b#1"}, {"c#1"}, {"a#2"}}));
  auto got = state_of<client_state>(client).answers;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (answers{{"a#1", 1}, {"a#2", 2}, {"b#1", 1}, {"c#1", 1}}));
  EXPECT_EQ(backend->stored("a").size(), 2u);
}

TEST_F(ParallelStoreTest, AReadWaitsOnlyForTheAppendsOfItsRoom) {
  create_rooms({"a", "b"});
  auto client = sys.spawn(client_impl, pstore);
  spawned.push_back(client);
  sched.run();
  hand_in(client, {batch("a", 1, 3)});  // with a committer, not committed yet
  auto loads_before = backend->load_calls;
  auto load_a = self->request(pstore, infinite, load_atom_v, std::string{"a"});
  auto load_b = self->request(pstore, infinite, load_atom_v, std::string{"b"});
  expect((load_atom, std::string), from(self).to(pstore).with(_, std::string{"a"}));
  expect((load_atom, std::string), from(self).to(pstore).with(_, std::string{"b"}));
  // b had nothing in flight: answered at once, before a's commit ran.
  EXPECT_EQ(backend->load_calls, loads_before + 1);
  EXPECT_EQ(backend->append_calls, 0u);
  sched.run();
  load_a.receive([&](room_snapshot& snap) { EXPECT_EQ(snap.last_seq, 3u); },
                 [&](error& e) { ADD_FAILURE() << sys.render(e); });
  load_b.receive([&](room_snapshot& snap) { EXPECT_EQ(snap.last_seq, 0u); },
                 [&](error& e) { ADD_FAILURE() << sys.render(e); });
  EXPECT_EQ(backend->load_calls, loads_before + 2);
  EXPECT_EQ(state_of<client_state>(client).answers, (answers{{"a#1", 3}}));
}

TEST_F(ParallelStoreTest, FailuresAndFencesAreAnsweredAsInline) {
  create_rooms({"a", "b"});
  room_snapshot t1, t2;
  std::string err;
  ASSERT_TRUE(backend->claim_room("a", "node-a", 10, 0, t1, err)) << err;
  ASSERT_TRUE(backend->claim_room("a", "node-b", 10, 0, t2, err)) << err;
  auto client = sys.spawn(client_impl, pstore);
  spawned.push_back(client);
  sched.run();
  auto stale = batch("a", 1, 1);
  stale.owner = t1.owner;
  stale.term = t1.term;
  self->send(client, std::vector<append_batch>{stale, batch("b", 4, 4), batch("b", 1, 1)});
  sched.run();
  auto& st = state_of<client_state>(client);
  EXPECT_EQ(st.answers, (answers{{"a#1", 0}, {"b#4", 0}, {"b#1", 1}}));
  ASSERT_EQ(st.errors.size(), 2u);
  EXPECT_EQ(st.errors[0], store_errc::fenced);
  EXPECT_EQ(st.errors[1], store_errc::failed);
}

// --- fencing ---------------------------------------------------------------------------

TEST_F(StoreActorTest, ClaimRaisesTheTermAndAnswersTheSnapshot) {
  create_rooms({"a"});
  std::string err;
  ASSERT_TRUE(backend->append({batch("a", 1, 2)}, err)) << err;
  auto h = self->request(store, infinite, claim_atom_v, std::string{"a"}, std::string{"node-a"});
  sched.run();
  h.receive(
      [&](room_snapshot& snap) {
        EXPECT_EQ(snap.term, 1u);
        EXPECT_EQ(snap.owner, "node-a");
        EXPECT_EQ(snap.last_seq, 2u);
        EXPECT_EQ(snap.recent.size(), 2u);
      },
      [&](error& e) { ADD_FAILURE() << sys.render(e); });
  EXPECT_EQ(backend->claim_calls, 1u);
  // A claim without a node name is refused as a failure, not a fence.
  auto bad = self->request(store, infinite, claim_atom_v, std::string{"a"}, std::string{});
  sched.run();
  bad.receive([&](room_snapshot&) { ADD_FAILURE() << "claimed without an owner"; },
              [&](error& e) { EXPECT_EQ(e, store_errc::failed) << sys.render(e); });
}

TEST_F(StoreActorTest, FencedBatchIsAnsweredFencedAndTheOthersOfItsCommitGoThrough) {
  create_rooms({"a", "b", "c"});
  room_snapshot t1, t2;
  std::string err;
  ASSERT_TRUE(backend->claim_room("a", "node-a", 10, 0, t1, err)) << err;
  ASSERT_TRUE(backend->claim_room("a", "node-b", 10, 0, t2, err)) << err;  // node-b took it over
  auto client = sys.spawn(client_impl, store);
  spawned.push_back(client);
  sched.run();
  auto stale = batch("a", 1, 1);
  stale.owner = t1.owner;
  stale.term = t1.term;
  self->send(client, std::vector<append_batch>{batch("b", 1, 2), stale, batch("c", 1, 1)});
  sched.run();
  EXPECT_EQ(backend->append_calls, 1u);  // one commit, not retried batch by batch
  EXPECT_EQ(state_of<client_state>(client).answers, (answers{{"b#1", 2}, {"a#1", 0}, {"c#1", 1}}));
  ASSERT_EQ(state_of<client_state>(client).errors.size(), 1u);
  auto& e = state_of<client_state>(client).errors[0];
  EXPECT_EQ(e, store_errc::fenced);
  EXPECT_FALSE(e == store_errc::failed);
  EXPECT_NE(sys.render(e).find("fenced"), std::string::npos) << sys.render(e);
  EXPECT_TRUE(backend->stored("a").empty());
  EXPECT_EQ(backend->stored("b").size(), 2u);
  EXPECT_EQ(backend->stored("c").size(), 1u);

  // The current owner's batch commits; a plain failure (a gap) is `failed`.
  auto current = batch("a", 1, 1);
  current.owner = t2.owner;
  current.term = t2.term;
  auto gap = batch("c", 5, 5);
  self->send(client, std::vector<append_batch>{current, gap});
  sched.run();
  auto& st = state_of<client_state>(client);
  ASSERT_EQ(st.answers.size(), 5u);
  EXPECT_EQ(st.answers[3], std::make_pair(std::string("a#1"), uint64_t{1}));
  EXPECT_EQ(st.answers[4], std::make_pair(std::string("c#5"), uint64_t{0}));
  ASSERT_EQ(st.errors.size(), 2u);
  EXPECT_EQ(st.errors[1], store_errc::failed) << sys.render(st.errors[1]);
  EXPECT_EQ(backend->stored("a").size(), 1u);
}

TEST_F(StoreActorTest, AppendsHandedInBeforeAClaimCommitUnderTheOldTerm) {
  create_rooms({"a"});
  room_snapshot t1;
  std::string err;
  ASSERT_TRUE(backend->claim_room("a", "node-a", 10, 0, t1, err)) << err;
  auto client = sys.spawn(client_impl, store);
  spawned.push_back(client);
  sched.run();
  auto b = batch("a", 1, 3);
  b.owner = t1.owner;
  b.term = t1.term;
  self->send(client, std::vector<append_batch>{b});
  expect((std::vector<append_batch>), from(self).to(client));
  // The append waits in the store's mailbox; the claim queues behind it,
  // ahead of the flush the append scheduled.
  auto claim =
      self->request(store, infinite, claim_atom_v, std::string{"a"}, std::string{"node-b"});
  sched.run();
  EXPECT_EQ(state_of<client_state>(client).answers, (answers{{"a#1", 3}}));
  claim.receive(
      [&](room_snapshot& snap) {
        EXPECT_EQ(snap.term, 2u);
        EXPECT_EQ(snap.last_seq, 3u);
      },
      [&](error& e) { ADD_FAILURE() << sys.render(e); });
}

// --- failures, as rooms see them ------------------------------------------------------

TEST_F(StoreActorTest, FailedAppendAnswersUnavailableAndKeepsSeqGapless) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  join(r, gw2, 2, "bob");
  say(r, gw1, 1, "alice", "m1", "1");
  sched.run();
  ASSERT_EQ(ack_seqs(gw1, 1), iota_seqs(1, 1));

  backend->fail_appends = 1;
  say(r, gw1, 1, "alice", "lost", "2");
  expect((send_req), from(self).to(r));
  expect((append_atom, append_batch), from(r).to(store));
  expect((flush_now_atom), from(store).to(store));
  expect((error), from(store).to(r));
  expect((error_msg), from(r).to(gw1));                    // unavailable
  expect((load_atom, std::string), from(r).to(store));   // the room re-reads its state
  expect((room_snapshot), from(store).to(r));
  sched.run();
  auto errs = conn_frames(gw1, "error", 1);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0]["code"], "unavailable");
  EXPECT_EQ(errs[0]["id"], 2);
  EXPECT_EQ(state_of<room_state>(r).last_seq, 1u);
  EXPECT_FALSE(state_of<room_state>(r).in_flight);

  // The next message gets the next seq: no gap, and members never saw the lost one.
  say(r, gw1, 1, "alice", "m2", "3");
  sched.run();
  auto acks = conn_frames(gw1, "ack", 1);
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[1]["id"], 3);
  EXPECT_EQ(acks[1]["seq"], 2);
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(1, 2));
  EXPECT_EQ(delivered_texts(gw2), (texts{"m1", "m2"}));
  EXPECT_EQ(stored_texts("general"), (texts{"m1", "m2"}));
}

TEST_F(StoreActorTest, SendsQueuedBehindAFailedBatchGetTheNextSeqs) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  join(r, gw2, 2, "bob");
  say(r, gw1, 1, "alice", "m1", "1");
  sched.run();

  // m2 goes to the store alone; m3 and m4 queue behind it, then go as one batch.
  // Both appends fail.
  backend->fail_appends = 2;
  say(r, gw1, 1, "alice", "lost2", "2");
  say(r, gw1, 1, "alice", "lost3", "3");
  say(r, gw1, 1, "alice", "lost4", "4");
  sched.run();
  auto errs = conn_frames(gw1, "error", 1);
  ASSERT_EQ(errs.size(), 3u);
  for (auto& e : errs) EXPECT_EQ(e["code"], "unavailable");
  ASSERT_GE(backend->calls.size(), 3u);
  // The second (failed) batch was sequenced from the last committed seq again.
  auto& second = backend->calls.back();
  ASSERT_EQ(second.size(), 1u);
  ASSERT_EQ(second[0].msgs.size(), 2u);
  EXPECT_EQ(second[0].msgs[0].seq, 2u);
  EXPECT_EQ(second[0].msgs[1].seq, 3u);

  // A send queued while the store is failing is stored once it works again.
  say(r, gw1, 1, "alice", "m2", "5");
  say(r, gw1, 1, "alice", "m3", "6");
  sched.run();
  EXPECT_EQ(ack_seqs(gw1, 1), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(1, 3));
  EXPECT_EQ(delivered_texts(gw2), (texts{"m1", "m2", "m3"}));
  EXPECT_EQ(stored_texts("general"), (texts{"m1", "m2", "m3"}));
}

TEST_F(StoreActorTest, StoreDownDuringResyncBlocksUntilItIsBack) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  join(r, gw2, 2, "bob");
  sched.run();

  backend->fail_appends = 1;
  backend->fail_loads = 1;  // the room's re-read fails too
  say(r, gw1, 1, "alice", "lost", "1");
  sched.run();
  EXPECT_EQ(conn_frames(gw1, "error", 1).size(), 1u);
  // Sends meanwhile wait: nothing sequenced, nothing acked.
  say(r, gw1, 1, "alice", "m1", "2");
  sched.run();
  EXPECT_TRUE(conn_frames(gw1, "ack").empty());
  EXPECT_EQ(state_of<room_state>(r).queued.size(), 1u);
  // The retry timer fires, the store answers, the queue drains.
  EXPECT_TRUE(sched.trigger_timeout());
  sched.run();
  EXPECT_EQ(ack_seqs(gw1, 1), iota_seqs(1, 1));
  EXPECT_EQ(delivered_texts(gw2), (texts{"m1"}));
  EXPECT_EQ(stored_texts("general"), (texts{"m1"}));
}

TEST_F(StoreActorTest, DuplicateWaitingOnAFailedSendIsAnsweredUnavailableToo) {
  auto r = room("general");
  auto gw = gateway();
  join(r, gw, 1, "alice");
  join(r, gw, 2, "alice");
  sched.run();

  backend->fail_appends = 1;
  say(r, gw, 1, "alice", "hello", "1", "k");
  expect((send_req), from(self).to(r));
  expect((append_atom, append_batch), from(r).to(store));
  say(r, gw, 2, "alice", "hello", "2", "k");  // waits for the first one's outcome
  sched.run();
  auto e1 = conn_frames(gw, "error", 1);
  auto e2 = conn_frames(gw, "error", 2);
  ASSERT_EQ(e1.size(), 1u);
  ASSERT_EQ(e2.size(), 1u);
  EXPECT_EQ(e1[0]["code"], "unavailable");
  EXPECT_EQ(e2[0]["code"], "unavailable");
  EXPECT_EQ(e2[0]["id"], 2);
  EXPECT_EQ(state_of<room_state>(r).idem.pending_count(), 0u);

  // Retrying the key now stores it (nothing was stored before).
  say(r, gw, 1, "alice", "hello", "3", "k");
  sched.run();
  auto acks = conn_frames(gw, "ack", 1);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0]["seq"], 1);
  EXPECT_EQ(stored_texts("general"), (texts{"hello"}));
}

TEST_F(StoreActorTest, CommitWhoseAnswerFailedIsPublishedAndStaysIdempotent) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  join(r, gw2, 2, "bob");
  sched.run();

  // The store commits but reports a failure (as when the answer is lost or late).
  backend->commit_then_fail = 1;
  say(r, gw1, 1, "alice", "hello", "1", "k1");
  sched.run();
  auto errs = conn_frames(gw1, "error", 1);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0]["code"], "unavailable");
  // The re-read finds it stored: members get it, exactly once.
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(1, 1));
  EXPECT_EQ(state_of<room_state>(r).last_seq, 1u);

  // The client retries with the same key: it is the stored message, not a new one.
  say(r, gw1, 1, "alice", "hello", "2", "k1");
  sched.run();
  auto acks = conn_frames(gw1, "ack", 1);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0]["id"], 2);
  EXPECT_EQ(acks[0]["seq"], 1);
  EXPECT_EQ(stored_texts("general"), (texts{"hello"}));
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(1, 1));

  // And the sequence goes on.
  say(r, gw1, 1, "alice", "next", "3");
  sched.run();
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(1, 2));
}

TEST_F(StoreActorTest, AppendThatTimesOutButIsCommittedLaterIsPublishedOnce) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  join(r, gw2, 2, "bob");
  sched.run();

  // The append reaches the store's mailbox, but the store is too slow: the
  // room's request times out first.
  say(r, gw1, 1, "alice", "slow", "1", "k1");
  expect((send_req), from(self).to(r));
  sched.clock().advance_time(test_room_config().store_timeout);
  expect((error), to(r));  // the timeout: the room re-reads its state from the store...
  sched.run();             // ...which has not even taken the append yet; it commits it later
  auto errs = conn_frames(gw1, "error", 1);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0]["code"], "unavailable");
  EXPECT_EQ(stored_texts("general"), (texts{"slow"}));
  // The room knows the late commit: members got it, the seq moved on.
  EXPECT_EQ(delivered_texts(gw2), (texts{"slow"}));
  EXPECT_EQ(state_of<room_state>(r).last_seq, 1u);

  // The next send is not refused, and the retry of the first is not stored twice.
  say(r, gw1, 1, "alice", "next", "2");
  say(r, gw1, 1, "alice", "slow", "3", "k1");
  sched.run();
  EXPECT_EQ(conn_frames(gw1, "error", 1).size(), 1u);
  std::map<int, uint64_t> seq_of;
  for (auto& a : conn_frames(gw1, "ack", 1)) seq_of[a["id"].get<int>()] = a["seq"].get<uint64_t>();
  EXPECT_EQ(seq_of, (std::map<int, uint64_t>{{2, 2}, {3, 1}}));
  EXPECT_EQ(stored_texts("general"), (texts{"slow", "next"}));
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(1, 2));
}

TEST_F(StoreActorTest, ReadsSeeAppendsHandedInBeforeThem) {
  create_rooms({"a"});
  auto client = sys.spawn(client_impl, store);
  spawned.push_back(client);
  sched.run();
  self->send(client, std::vector<append_batch>{batch("a", 1, 3)});
  expect((std::vector<append_batch>), from(self).to(client));
  // The append waits in the store's mailbox; the reads queue behind it, ahead
  // of the flush that the append will schedule.
  auto load = self->request(store, infinite, load_atom_v, std::string{"a"});
  auto range = self->request(store, infinite, range_atom_v, all_of("a"));
  sched.run();
  load.receive([&](room_snapshot& snap) { EXPECT_EQ(snap.last_seq, 3u); },
               [&](error& e) { ADD_FAILURE() << to_string(e); });
  range.receive([&](std::vector<stored_msg>& got, uint64_t first) {
                  EXPECT_EQ(got.size(), 3u);
                  EXPECT_EQ(first, 1u);
                },
                [&](error& e) { ADD_FAILURE() << to_string(e); });
  EXPECT_EQ(state_of<client_state>(client).answers, (answers{{"a#1", 3}}));
}

TEST_F(StoreActorTest, RoomWhoseLoadFailsAnswersUnavailableAndGoesAway) {
  backend->fail_loads = 1;
  auto r = sys.spawn(room_impl, std::string("general"),
                     deps());
  spawned.push_back(r);
  auto gw = gateway();
  self->send(gw, watch_atom_v, r);
  sched.run();
  EXPECT_FALSE(state_of<room_state>(r).loaded);
  // It asks the directory to forget it at once.
  ASSERT_EQ(rec(dir).idles.size(), 1u);
  EXPECT_EQ(rec(dir).idles[0].room, "general");
  EXPECT_EQ(rec(dir).idles[0].received, 0u);

  join(r, gw, 1, "alice");
  say(r, gw, 1, "alice", "hi", "2");
  self->send(r, make_leave("general", conn_ref{as_gw(gw), 1}, "3"));
  sched.run();
  auto errs = conn_frames(gw, "error", 1);
  ASSERT_EQ(errs.size(), 2u);
  EXPECT_EQ(errs[0]["code"], "unavailable");
  EXPECT_EQ(errs[1]["code"], "unavailable");
  EXPECT_EQ(conn_frames(gw, "left", 1).size(), 1u);
  EXPECT_TRUE(rec(gw).joins.empty());
  EXPECT_EQ(backend->append_calls, 0u);

  // Then it stops by itself, so that the next request starts a fresh one.
  sched.clock().advance_time(std::chrono::seconds(5));
  sched.run();
  EXPECT_EQ(rec(gw).downs.size(), 1u);
}

// --- search indexing (SQLite) ----------------------------------------------------

// The SQLite store under the test coordinator, on a real file.
struct SqliteStoreTest : ::testing::Test, test_coordinator_fixture<test_config> {
  std::string dir;
  std::shared_ptr<store_backend> backend;
  store_actor store;

  SqliteStoreTest() {
    char tmpl[] = "/tmp/chat-store-test-XXXXXX";
    dir = mkdtemp(tmpl) ? tmpl : "";
    std::string err;
    backend = std::shared_ptr<store_backend>(make_sqlite_backend(dir + "/chat.db", err));
    EXPECT_NE(backend, nullptr) << err;
    store = spawn_store(sys, backend, store_config{}, /*detached=*/false);
    sched.run();
  }
  ~SqliteStoreTest() override {
    anon_send_exit(store, exit_reason::kill);
    sched.run();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

// The commit that acks does not index for search: the answer leaves first,
// then a step the store sends itself indexes the backlog, and a search sees it.
TEST_F(SqliteStoreTest, TheAnswerLeavesBeforeTheSearchIndexStep) {
  ASSERT_NE(backend, nullptr);
  room_snapshot snap;
  std::string err;
  ASSERT_TRUE(backend->load_room("general", 10, 0, snap, err)) << err;
  auto client = sys.spawn(client_impl, store);
  sched.run();
  auto b = batch("general", 1, 3);
  b.msgs[1].text = "a needle in the haystack";
  self->send(client, std::vector<append_batch>{b});
  expect((std::vector<append_batch>), from(self).to(client));
  expect((append_atom, append_batch), from(client).to(store));
  expect((flush_now_atom), from(store).to(store));
  expect((append_batch), from(store).to(client));
  EXPECT_EQ(state_of<client_state>(client).answers, (answers{{"general#1", 3}}));
  EXPECT_TRUE(backend->search_backlog());  // acked, not yet indexed
  auto indexer = static_cast<store_actor::stateful_base<store_state>*>(
                     caf::actor_cast<caf::abstract_actor*>(store))
                     ->state.indexer;
  ASSERT_TRUE(indexer);
  expect((index_atom), from(_).to(indexer));  // the store pokes its indexer (anon)
  EXPECT_FALSE(backend->search_backlog());
  EXPECT_FALSE(sched.has_job());
  std::vector<stored_msg> found;
  auto h = self->request(store, infinite, search_atom_v, std::string{"general"},
                         std::string{"NEEDLE"}, uint64_t{0}, uint32_t{10});
  sched.run();
  h.receive([&](std::vector<stored_msg>& out) { found = std::move(out); },
            [&](error& e) { ADD_FAILURE() << sys.render(e); });
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].seq, 2u);
  anon_send_exit(client, exit_reason::kill);
}

}  // namespace
