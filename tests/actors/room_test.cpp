// The room actor (and the directory's idle-room cleanup) under CAF's
// deterministic test coordinator: no threads, no sleeps. Gateways, the user
// registry and (for rooms spawned alone) the directory are recorder actors
// that keep every message they receive; the store is the real store actor on
// a memory backend wrapped in a counting decorator.
#include "tests/support/caf_gtest.hpp"  // first: bridges caf/test/dsl.hpp to gtest

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "actors/directory.hpp"
#include "actors/room.hpp"
#include "actors/store/store.hpp"
#include "messages/codec.hpp"
#include "tests/support/chat_fakes.hpp"

using namespace caf;
using namespace chat;
using namespace chat_test;

namespace {

std::string display(const std::string& user) {
  std::string s = user;
  if (!s.empty()) s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

room_config test_room_config() {
  room_config c;
  // Far apart from each other, so that trigger_timeout()/advance_time() pick
  // exactly the timer a test means.
  c.idle_grace = std::chrono::hours(2);
  c.store_timeout = std::chrono::hours(1);
  c.presence_batch_interval = std::chrono::seconds(1);
  return c;
}

struct RoomTest : ::testing::Test, test_coordinator_fixture<test_config> {
  std::shared_ptr<counting_backend> backend;
  store_actor store;
  actor dir;  // a recorder standing in for the directory (rooms spawned alone)
  actor reg;  // a recorder standing in for the user registry
  std::vector<actor> spawned;
  std::vector<actor> directories;

  RoomTest() {
    use_backend(0);
    dir = gateway();
    reg = gateway();
  }

  ~RoomTest() override {
    // Stop everything, so that the fixture's final run() (which fires every
    // pending timer) does not loop on idle checks of rooms nobody stops.
    for (auto& d : directories) anon_send(d, close_atom_v);
    sched.run();
    for (auto& a : spawned) anon_send_exit(a, exit_reason::kill);
    anon_send_exit(store, exit_reason::kill);
    sched.run();
  }

  void use_backend(uint64_t max_per_room) {
    if (store) anon_send_exit(store, exit_reason::kill);
    backend = std::make_shared<counting_backend>(make_memory_backend(max_per_room));
    store = spawn_store(sys, backend, store_config{}, /*detached=*/false);
    sched.run();
  }

  actor gateway() {
    auto g = sys.spawn(recorder_impl, std::string("recorder"));
    spawned.push_back(g);
    sched.run();
    return g;
  }

  actor room(const std::string& name, room_config cfg = test_room_config()) {
    auto r = sys.spawn(room_impl, name, deps(dir, cfg));
    spawned.push_back(r);
    sched.run();  // the room loads its snapshot from the store
    EXPECT_TRUE(state_of<room_state>(r).loaded);
    return r;
  }

  actor directory(room_config cfg) {
    auto d = sys.spawn(directory_impl, deps(nullptr, cfg));
    directories.push_back(d);
    spawned.push_back(d);
    sched.run();
    return d;
  }

  room_deps deps(const actor& directory, const room_config& cfg) {
    room_deps d;
    d.store = store;
    d.directory = directory;
    d.registry = reg;
    d.cfg = cfg;
    return d;
  }

  static std::string name_of(const actor& r) { return state_of<room_state>(r).room; }

  // Requests as a gateway sends them (they arrive from `self`, not the directory).
  void join(const actor& r, const actor& gw, uint64_t conn, const std::string& user,
            const std::string& id = "") {
    self->send(r, make_join(name_of(r), conn_ref{as_gw(gw), conn}, member_info{user, display(user)}, id));
  }
  void join_since(const actor& r, const actor& gw, uint64_t conn, const std::string& user,
                  uint64_t since, const std::string& epoch, const std::string& id = "") {
    self->send(r, make_join(name_of(r), conn_ref{as_gw(gw), conn}, member_info{user, display(user)}, id,
                            true, since, epoch));
  }
  void leave(const actor& r, const actor& gw, uint64_t conn, const std::string& id = "") {
    self->send(r, make_leave(name_of(r), conn_ref{as_gw(gw), conn}, id));
  }
  void say(const actor& r, const actor& gw, uint64_t conn, const std::string& user,
           const std::string& text, const std::string& id = "", const std::string& key = "") {
    self->send(r, make_send(name_of(r), conn_ref{as_gw(gw), conn}, member_info{user, display(user)}, id,
                            text, key));
  }
  void history(const actor& r, const actor& gw, uint64_t conn, uint64_t before, uint32_t limit,
               const std::string& id = "") {
    self->send(r, make_history(name_of(r), conn_ref{as_gw(gw), conn}, id, before, limit));
  }

  // The frames of the last joined_msg a gateway got, parsed.
  // Fires the room's pending presence tick and runs what follows from it.
  void fire_presence_tick(const actor& r) {
    EXPECT_TRUE(sched.trigger_timeout());
    expect((presence_tick_atom), from(r).to(r));
    sched.run();
  }
  std::vector<json> last_join_frames(const actor& gw) {
    std::vector<json> out;
    auto& joins = rec(gw).joins;
    EXPECT_FALSE(joins.empty());
    if (joins.empty()) return out;
    for (auto& f : frames_of(joins.back())) out.push_back(parse(f));
    return out;
  }

  // Broadcast events of a type with the user each one skips.
  std::vector<std::pair<std::string, std::string>> events(const actor& gw,
                                                          const std::string& type) {
    std::vector<std::pair<std::string, std::string>> out;  // (user, skip_user)
    for (auto& d : rec(gw).delivers) {
      auto j = parse(d.frame);
      if (j["type"] == type) out.emplace_back(j["user"].get<std::string>(), d.skip_user);
    }
    return out;
  }
};

using ev = std::vector<std::pair<std::string, std::string>>;

json members_json(std::initializer_list<const char*> users) {
  json arr = json::array();
  for (auto* u : users) arr.push_back({{"user", u}, {"name", display(u)}});
  return arr;
}

// --- join ------------------------------------------------------------------------

TEST_F(RoomTest, JoinRepliesWithJoinedFrame) {
  auto r = room("general");
  auto gw = gateway();
  join(r, gw, 1, "alice", "7");
  sched.run();

  ASSERT_EQ(rec(gw).joins.size(), 1u);
  const auto& jm = rec(gw).joins[0];
  EXPECT_EQ(jm.conn, 1u);
  EXPECT_EQ(jm.room, "general");
  EXPECT_EQ(jm.room_actor, r);
  EXPECT_TRUE(jm.member);
  EXPECT_EQ(jm.info.seq, 0u);
  ASSERT_EQ(frames_of(jm).size(), 1u);  // no recovery: the joined frame only
  auto j = parse(frames_of(jm)[0]);
  EXPECT_EQ(j["type"], "joined");
  EXPECT_EQ(j["id"], 7);
  EXPECT_EQ(j["room"], "general");
  EXPECT_EQ(j["seq"], 0);
  auto epoch = state_of<room_state>(r).epoch;
  EXPECT_EQ(epoch.size(), 16u);
  EXPECT_EQ(j["epoch"], epoch);
  EXPECT_EQ(j["member_count"], 1);
  EXPECT_EQ(j["members"], members_json({"alice"}));
  EXPECT_FALSE(j.contains("recovered"));

  for (int i = 1; i <= 3; ++i) say(r, gw, 1, "alice", "m" + std::to_string(i));
  sched.run();

  // A second user on another gateway, with a string id: seq is the last stored seq.
  auto gw2 = gateway();
  join(r, gw2, 5, "bob", "\"j2\"");
  sched.run();
  ASSERT_EQ(rec(gw2).joins.size(), 1u);
  EXPECT_EQ(rec(gw2).joins[0].conn, 5u);
  EXPECT_EQ(rec(gw2).joins[0].info.seq, 3u);
  auto frames = last_join_frames(gw2);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0]["type"], "joined");
  EXPECT_EQ(frames[0]["id"], "j2");
  EXPECT_EQ(frames[0]["seq"], 3);
  EXPECT_EQ(frames[0]["epoch"], epoch);
  EXPECT_EQ(frames[0]["member_count"], 2);
  EXPECT_EQ(frames[0]["members"], members_json({"alice", "bob"}));
}

TEST_F(RoomTest, JoinedListsAtMostTheConfiguredMembers) {
  auto cfg = test_room_config();
  cfg.joined_members_listed = 2;
  auto r = room("general", cfg);
  auto gw = gateway();
  join(r, gw, 1, "alice");
  join(r, gw, 2, "bob");
  join(r, gw, 3, "carol");
  sched.run();
  auto frames = last_join_frames(gw);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0]["member_count"], 3);          // everyone is counted
  EXPECT_EQ(frames[0]["members"].size(), 2u);       // only two are listed
}

// --- ordering and durability ------------------------------------------------------

TEST_F(RoomTest, SendsAreStoredDeliveredAndAckedInSeqOrder) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  join(r, gw2, 2, "bob");
  sched.run();

  const uint64_t n = 30;
  // All queued before the room runs once: the room pipelines them into batches.
  for (uint64_t i = 1; i <= n; ++i) {
    bool by_bob = i % 3 == 0;
    say(r, by_bob ? gw2 : gw1, by_bob ? 2 : 1, by_bob ? "bob" : "alice",
        "msg " + std::to_string(i), std::to_string(i));
  }
  sched.run();

  // Every member sees every message once, in seq order, with no gap.
  EXPECT_EQ(delivered_seqs(gw1), iota_seqs(1, n));
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(1, n));
  auto msgs = delivered(gw2, "message");
  ASSERT_EQ(msgs.size(), n);
  for (uint64_t i = 1; i <= n; ++i) {
    EXPECT_EQ(msgs[i - 1]["text"], "msg " + std::to_string(i));
    EXPECT_EQ(msgs[i - 1]["from"], i % 3 == 0 ? "bob" : "alice");
    EXPECT_EQ(msgs[i - 1]["room"], "general");
    if (i > 1) {
      EXPECT_GE(msgs[i - 1]["ts"].get<int64_t>(), msgs[i - 2]["ts"].get<int64_t>());
    }
  }

  // Each sender gets one ack per message, with that message's seq, in order.
  std::vector<uint64_t> alice_seqs, bob_seqs;
  for (uint64_t i = 1; i <= n; ++i) (i % 3 == 0 ? bob_seqs : alice_seqs).push_back(i);
  EXPECT_EQ(ack_seqs(gw1, 1), alice_seqs);
  EXPECT_EQ(ack_seqs(gw2, 2), bob_seqs);
  for (auto* gw : {&gw1, &gw2})
    for (auto& a : conn_frames(*gw, "ack")) {
      EXPECT_EQ(a["id"], a["seq"]);  // request i was the room's i-th message
      EXPECT_EQ(a["room"], "general");
    }
  EXPECT_TRUE(conn_frames(gw1, "error").empty());

  // The store holds exactly 1..n, and the room pipelined them (fewer commits than messages).
  auto stored = backend->stored("general");
  ASSERT_EQ(stored.size(), n);
  for (uint64_t i = 1; i <= n; ++i) EXPECT_EQ(stored[i - 1].seq, i);
  EXPECT_LT(backend->append_calls, n);
  EXPECT_EQ(state_of<room_state>(r).last_seq, n);
}

TEST_F(RoomTest, AckAndBroadcastOnlyAfterTheStoreCommit) {
  auto r = room("general");
  auto gw = gateway();
  join(r, gw, 1, "alice");
  sched.run();
  rec(gw) = recorder_state{};

  say(r, gw, 1, "alice", "hello", "5");
  expect((send_req), from(self).to(r));
  // The room has asked the store to append: nothing is stored, nothing acked yet.
  EXPECT_EQ(backend->append_calls, 0u);
  disallow((ack_msg), from(r).to(gw));
  disallow((deliver), from(r).to(gw));
  expect((append_atom, append_batch), from(r).to(store));
  EXPECT_EQ(backend->append_calls, 0u);
  EXPECT_TRUE(rec(gw).log.empty());
  expect((flush_now_atom), from(store).to(store));  // the group commit
  EXPECT_EQ(backend->append_calls, 1u);
  EXPECT_EQ(backend->stored("general").size(), 1u);
  EXPECT_TRUE(rec(gw).log.empty());
  expect((append_batch), from(store).to(r));
  // Only now: the ack, then the broadcast.
  expect((ack_msg), from(r).to(gw));
  expect((deliver), from(r).to(gw));
  ASSERT_EQ(rec(gw).to_conns.size(), 1u);
  auto ack = parse(rec(gw).to_conns[0].frame);
  EXPECT_EQ(ack["type"], "ack");
  EXPECT_EQ(ack["id"], 5);
  EXPECT_EQ(ack["seq"], 1);
  EXPECT_EQ(ack["ts"], backend->stored("general")[0].ts);
  EXPECT_EQ(delivered_seqs(gw), iota_seqs(1, 1));
}

// --- membership -------------------------------------------------------------------

TEST_F(RoomTest, SendFromNonMemberIsRefused) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  sched.run();

  say(r, gw1, 2, "carol", "hi", "11");  // never joined
  say(r, gw2, 1, "alice", "hi", "12");  // same conn id, other gateway: another connection
  sched.run();
  auto e1 = conn_frames(gw1, "error", 2);
  ASSERT_EQ(e1.size(), 1u);
  EXPECT_EQ(e1[0]["code"], "not_member");
  EXPECT_EQ(e1[0]["id"], 11);
  auto e2 = conn_frames(gw2, "error", 1);
  ASSERT_EQ(e2.size(), 1u);
  EXPECT_EQ(e2[0]["code"], "not_member");
  EXPECT_EQ(e2[0]["id"], 12);
  EXPECT_TRUE(delivered(gw1, "message").empty());
  EXPECT_EQ(backend->append_calls, 0u);

  // Leaving answers `left`; afterwards the connection is no member either.
  leave(r, gw1, 1, "13");
  sched.run();
  auto left = conn_frames(gw1, "left", 1);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0]["id"], 13);
  EXPECT_EQ(left[0]["room"], "general");
  say(r, gw1, 1, "alice", "bye", "14");
  sched.run();
  auto e3 = conn_frames(gw1, "error", 1);
  ASSERT_EQ(e3.size(), 1u);
  EXPECT_EQ(e3[0]["code"], "not_member");
  EXPECT_EQ(e3[0]["id"], 14);
  EXPECT_TRUE(backend->stored("general").empty());
  EXPECT_EQ(state_of<room_state>(r).last_seq, 0u);
}

TEST_F(RoomTest, TrustedSendNeedsNoMembership) {
  auto r = room("general");
  auto gw = gateway();
  auto api = gateway();  // the server API answers through a connection of its own
  join(r, gw, 1, "alice");
  sched.run();
  auto req = make_send("general", conn_ref{as_gw(api), 77}, member_info{"system", "System"}, "1",
                       "maintenance at noon");
  req.trusted = true;
  self->send(r, req);
  sched.run();
  EXPECT_EQ(ack_seqs(api, 77), iota_seqs(1, 1));
  auto msgs = delivered(gw, "message");
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["from"], "system");
  EXPECT_TRUE(rec(api).delivers.empty());  // not made a member by sending
}

// --- presence -----------------------------------------------------------------------

TEST_F(RoomTest, PresenceEventsFollowUsersNotConnections) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  auto gw3 = gateway();

  join(r, gw1, 1, "alice");
  sched.run();
  // The event is for everyone but alice herself (her gateway skips her).
  EXPECT_EQ(events(gw1, "member_joined"), (ev{{"alice", "alice"}}));

  join(r, gw2, 2, "bob");
  sched.run();
  EXPECT_EQ(events(gw1, "member_joined"), (ev{{"alice", "alice"}, {"bob", "bob"}}));
  EXPECT_EQ(events(gw2, "member_joined"), (ev{{"bob", "bob"}}));

  // Alice's second connection: no event for anyone; presence counts users.
  join(r, gw2, 3, "alice");
  sched.run();
  EXPECT_EQ(events(gw1, "member_joined").size(), 2u);
  EXPECT_EQ(events(gw2, "member_joined").size(), 1u);
  auto frames = last_join_frames(gw2);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0]["member_count"], 2);
  EXPECT_EQ(frames[0]["members"], members_json({"alice", "bob"}));

  self->send(r, make_presence("general", conn_ref{as_gw(gw2), 2}, "21"));
  sched.run();
  auto pres = conn_frames(gw2, "presence", 2);
  ASSERT_EQ(pres.size(), 1u);
  EXPECT_EQ(pres[0]["id"], 21);
  EXPECT_EQ(pres[0]["members"], members_json({"alice", "bob"}));

  // Alice's first connection leaves: she is still there through the other one.
  leave(r, gw1, 1);
  sched.run();
  EXPECT_TRUE(events(gw1, "member_left").empty());
  EXPECT_TRUE(events(gw2, "member_left").empty());

  // Her last connection leaves: member_left, to the gateway that still has members.
  auto gw1_delivers = rec(gw1).delivers.size();
  leave(r, gw2, 3);
  sched.run();
  EXPECT_EQ(events(gw2, "member_left"), (ev{{"alice", "alice"}}));
  EXPECT_EQ(rec(gw1).delivers.size(), gw1_delivers);  // gw1 has no member any more

  // A gateway dies: its connections leave (down_msg), with member_left.
  join(r, gw3, 4, "carol");
  sched.run();
  EXPECT_EQ(events(gw2, "member_joined").back(), std::make_pair(std::string("carol"), std::string("carol")));
  anon_send_exit(gw3, exit_reason::kill);
  sched.run();
  EXPECT_EQ(events(gw2, "member_left"), (ev{{"alice", "alice"}, {"carol", "carol"}}));
  auto& st = state_of<room_state>(r);
  EXPECT_EQ(st.members.users.count("carol"), 0u);
  EXPECT_EQ(st.members.conn_count, 1u);
  EXPECT_EQ(st.members.by_gateway.size(), 1u);
  EXPECT_EQ(st.members.by_gateway.count(as_gw(gw3)), 0u);
}

TEST_F(RoomTest, GatewayDeathDropsEveryConnectionOfThatGateway) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  join(r, gw2, 2, "bob");
  join(r, gw2, 3, "bob");
  join(r, gw2, 4, "carol");
  sched.run();
  anon_send_exit(gw2, exit_reason::kill);
  sched.run();
  auto& st = state_of<room_state>(r);
  EXPECT_EQ(st.members.conn_count, 1u);
  EXPECT_EQ(st.members.users.size(), 1u);
  auto left = events(gw1, "member_left");
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (ev{{"bob", "bob"}, {"carol", "carol"}}));  // one per user, not per connection
  // Messages still flow to the survivors.
  say(r, gw1, 1, "alice", "still here");
  sched.run();
  EXPECT_EQ(delivered_seqs(gw1), iota_seqs(1, 1));
}

TEST_F(RoomTest, PresenceStormInASmallRoomIsBatched) {
  auto cfg = test_room_config();
  cfg.presence_budget = 10;  // changes x members: 1x1, 2x2, 3x3 fit; 4x4 does not
  auto r = room("general", cfg);
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "a");
  sched.run();
  // The first three changes: events as usual; the fourth and fifth go into a diff.
  for (int i = 2; i <= 5; ++i) join(r, gw2, static_cast<uint64_t>(i), "u" + std::to_string(i));
  sched.run();
  EXPECT_EQ(events(gw1, "member_joined"), (ev{{"a", "a"}, {"u2", "u2"}, {"u3", "u3"}}));
  EXPECT_TRUE(delivered(gw1, "presence_diff").empty());
  // While the diff is pending, even a change below the rate waits in it, so a
  // user's leave cannot overtake their earlier join.
  sched.clock().current_time += std::chrono::seconds(2);
  leave(r, gw2, 5);
  sched.run();
  EXPECT_TRUE(events(gw1, "member_left").empty());
  fire_presence_tick(r);
  auto diffs = delivered(gw1, "presence_diff");
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_EQ(diffs[0]["joins"], members_json({"u4"}));  // u5 joined and left: cancelled
  EXPECT_EQ(diffs[0]["leaves"], json::array());
  // Once the storm is over, events are immediate again.
  leave(r, gw2, 4);
  sched.run();
  EXPECT_EQ(events(gw1, "member_left"), (ev{{"u4", "u4"}}));
}

TEST_F(RoomTest, BigRoomPresenceIsBatched) {
  auto cfg = test_room_config();
  cfg.presence_batch_threshold = 2;
  auto r = room("general", cfg);
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "a");
  join(r, gw1, 2, "b");
  sched.run();
  // At or below the threshold: immediate events.
  EXPECT_EQ(events(gw1, "member_joined"), (ev{{"a", "a"}, {"b", "b"}}));

  join(r, gw1, 3, "c");
  join(r, gw2, 4, "d");
  sched.run();
  // Above it: nothing yet...
  EXPECT_EQ(events(gw1, "member_joined").size(), 2u);
  EXPECT_TRUE(events(gw2, "member_joined").empty());
  EXPECT_TRUE(delivered(gw1, "presence_diff").empty());
  // ...then one presence_diff per interval, to every gateway.
  fire_presence_tick(r);
  for (auto* gw : {&gw1, &gw2}) {
    auto diffs = delivered(*gw, "presence_diff");
    ASSERT_EQ(diffs.size(), 1u);
    EXPECT_EQ(diffs[0]["room"], "general");
    EXPECT_EQ(diffs[0]["joins"], members_json({"c", "d"}));
    EXPECT_EQ(diffs[0]["leaves"], json::array());
  }

  // A leave and a join in one interval.
  leave(r, gw2, 4);
  join(r, gw1, 5, "e");
  sched.run();
  EXPECT_TRUE(events(gw1, "member_left").empty());
  fire_presence_tick(r);
  auto diffs = delivered(gw1, "presence_diff");
  ASSERT_EQ(diffs.size(), 2u);
  EXPECT_EQ(diffs[1]["joins"], members_json({"e"}));
  EXPECT_EQ(diffs[1]["leaves"], members_json({"d"}));

  // Leaving and coming back within one interval cancels out: no diff at all.
  leave(r, gw1, 3);
  join(r, gw1, 6, "c");
  sched.run();
  fire_presence_tick(r);
  EXPECT_EQ(delivered(gw1, "presence_diff").size(), 2u);
  EXPECT_FALSE(state_of<room_state>(r).presence.tick_pending());

  // Back at the threshold (a, b remain after c and e leave), events are immediate again.
  leave(r, gw1, 6);
  leave(r, gw1, 5);
  sched.run();
  EXPECT_TRUE(sched.trigger_timeout());
  sched.run();
  join(r, gw2, 7, "f");  // 3 users again: batched
  sched.run();           // (a first join completes once its membership is stored)
  leave(r, gw2, 7);      // cancels
  leave(r, gw1, 2);      // b: not above the threshold, but a diff is pending
  sched.run();
  EXPECT_TRUE(events(gw1, "member_left").empty());  // waits in the diff, in order
  EXPECT_TRUE(sched.trigger_timeout());
  sched.run();
  auto last = delivered(gw1, "presence_diff").back();
  EXPECT_EQ(last["joins"], json::array());
  EXPECT_EQ(last["leaves"], members_json({"b"}));
  // Nothing pending and at the threshold: immediate again.
  join(r, gw2, 8, "g");
  sched.run();
  EXPECT_EQ(events(gw1, "member_joined").back(), (std::pair<std::string, std::string>{"g", "g"}));
}

// --- idempotency ----------------------------------------------------------------------

TEST_F(RoomTest, IdempotentSendReturnsTheFirstAck) {
  auto r = room("general");
  auto gw = gateway();
  join(r, gw, 1, "alice");
  join(r, gw, 2, "bob");
  sched.run();

  say(r, gw, 1, "alice", "hello", "1", "k1");
  sched.run();
  say(r, gw, 1, "alice", "hello (retry)", "2", "k1");  // same user, same key: nothing new
  sched.run();
  say(r, gw, 2, "bob", "hi", "3", "k1");  // another user with the same key: a new message
  say(r, gw, 1, "alice", "other", "4", "k2");
  say(r, gw, 1, "alice", "no key", "5");
  say(r, gw, 1, "alice", "no key", "6");  // no key: always a new message
  sched.run();

  auto acks = conn_frames(gw, "ack");
  ASSERT_EQ(acks.size(), 6u);
  std::map<int, json> by_id;
  for (auto& a : acks) by_id[a["id"].get<int>()] = a;
  EXPECT_EQ(by_id[1]["seq"], 1);
  EXPECT_EQ(by_id[2]["seq"], 1);
  EXPECT_EQ(by_id[2]["ts"], by_id[1]["ts"]);
  EXPECT_EQ(by_id[3]["seq"], 2);
  EXPECT_EQ(by_id[4]["seq"], 3);
  EXPECT_EQ(by_id[5]["seq"], 4);
  EXPECT_EQ(by_id[6]["seq"], 5);
  auto stored = backend->stored("general");
  ASSERT_EQ(stored.size(), 5u);
  EXPECT_EQ(stored[0].text, "hello");
  EXPECT_EQ(stored[0].idem_key, "k1");
  EXPECT_EQ(stored[1].from, "bob");
  EXPECT_EQ(delivered_seqs(gw), iota_seqs(1, 5));
}

TEST_F(RoomTest, DuplicateWhileTheFirstIsInFlightGetsTheSameAck) {
  auto r = room("general");
  auto gw = gateway();
  join(r, gw, 1, "alice");
  join(r, gw, 2, "alice");  // her second connection retries
  sched.run();

  say(r, gw, 1, "alice", "hello", "1", "k");
  expect((send_req), from(self).to(r));
  expect((append_atom, append_batch), from(r).to(store));  // in the store, not committed
  say(r, gw, 2, "alice", "hello", "2", "k");
  expect((send_req), from(self).to(r));
  EXPECT_TRUE(conn_frames(gw, "ack").empty());  // the duplicate waits for the commit
  sched.run();

  auto a1 = conn_frames(gw, "ack", 1);
  auto a2 = conn_frames(gw, "ack", 2);
  ASSERT_EQ(a1.size(), 1u);
  ASSERT_EQ(a2.size(), 1u);
  EXPECT_EQ(a1[0]["id"], 1);
  EXPECT_EQ(a2[0]["id"], 2);
  EXPECT_EQ(a1[0]["seq"], 1);
  EXPECT_EQ(a2[0]["seq"], 1);
  EXPECT_EQ(a1[0]["ts"], a2[0]["ts"]);
  EXPECT_EQ(backend->stored("general").size(), 1u);
  EXPECT_EQ(backend->append_calls, 1u);
  EXPECT_EQ(delivered_seqs(gw), iota_seqs(1, 1));

  // A duplicate still queued behind another append (not yet handed to the store) too.
  say(r, gw, 1, "alice", "x", "3");       // in flight
  say(r, gw, 1, "alice", "y", "4", "k2");  // queued
  say(r, gw, 2, "alice", "y", "5", "k2");  // duplicate of a queued one
  sched.run();
  auto acks = conn_frames(gw, "ack");
  ASSERT_EQ(acks.size(), 5u);
  std::map<int, uint64_t> seq_of;
  for (auto& a : acks) seq_of[a["id"].get<int>()] = a["seq"].get<uint64_t>();
  EXPECT_EQ(seq_of[3], 2u);
  EXPECT_EQ(seq_of[4], 3u);
  EXPECT_EQ(seq_of[5], 3u);
  EXPECT_EQ(backend->stored("general").size(), 3u);
  EXPECT_EQ(state_of<room_state>(r).idem.pending_count(), 0u);
}

TEST_F(RoomTest, IdempotencyKeysSurviveARoomRestart) {
  auto r1 = room("general");
  auto gw = gateway();
  join(r1, gw, 1, "alice");
  say(r1, gw, 1, "alice", "hello", "1", "k1");
  sched.run();
  ASSERT_EQ(ack_seqs(gw), iota_seqs(1, 1));
  anon_send_exit(r1, exit_reason::kill);
  sched.run();

  auto r2 = room("general");  // loads the keys from the store's snapshot
  join(r2, gw, 1, "alice");
  say(r2, gw, 1, "alice", "hello", "2", "k1");
  sched.run();
  auto acks = conn_frames(gw, "ack");
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[1]["id"], 2);
  EXPECT_EQ(acks[1]["seq"], 1);
  EXPECT_EQ(acks[1]["ts"], acks[0]["ts"]);
  EXPECT_EQ(backend->stored("general").size(), 1u);
}

// --- fencing (a store shared by several nodes) -----------------------------------------

struct FencingTest : RoomTest {
  // A room as node `node` runs it: it claims itself when it starts.
  actor claimed_room(const std::string& name, const std::string& node) {
    auto d = deps(dir, test_room_config());
    d.claim_as = node;
    auto r = sys.spawn(room_impl, name, d);
    spawned.push_back(r);
    sched.run();
    EXPECT_TRUE(state_of<room_state>(r).loaded);
    return r;
  }
  // Another node claims the room in the store, as its room would on start.
  uint64_t claim_elsewhere(const std::string& room, const std::string& node) {
    uint64_t term = 0;
    auto h = self->request(store, infinite, claim_atom_v, room, node);
    sched.run();  // the store answers now; the reply waits in self's mailbox
    h.receive([&](room_snapshot& snap) { term = snap.term; },
              [&](error& e) { ADD_FAILURE() << sys.render(e); });
    return term;
  }
};

TEST_F(FencingTest, RoomClaimsItselfAndFencesItsAppends) {
  auto r = claimed_room("general", "n1");
  EXPECT_EQ(state_of<room_state>(r).term, 1u);
  auto gw = gateway();
  join(r, gw, 1, "alice");
  say(r, gw, 1, "alice", "one", "1");
  sched.run();
  EXPECT_EQ(ack_seqs(gw), iota_seqs(1, 1));
  // A restart of the room (idle, or the node came back) claims again: the term only grows.
  anon_send_exit(r, exit_reason::kill);
  sched.run();
  auto again = claimed_room("general", "n1");
  EXPECT_EQ(state_of<room_state>(again).term, 2u);
  EXPECT_EQ(state_of<room_state>(again).last_seq, 1u);
}

TEST_F(FencingTest, ARoomWhoseClaimWasTakenStoresNothingAndStepsDown) {
  auto old_home = claimed_room("general", "n1");
  auto gw = gateway();
  join(old_home, gw, 1, "alice");
  say(old_home, gw, 1, "alice", "before", "1", "k-before");
  sched.run();
  ASSERT_EQ(ack_seqs(gw), iota_seqs(1, 1));

  // n1 is paused; the cluster declares it down and n2 claims the room.
  EXPECT_EQ(claim_elsewhere("general", "n2"), 2u);
  sched.run();
  auto new_home = claimed_room("general", "n2");  // term 3: n2's room claims on start
  EXPECT_EQ(state_of<room_state>(new_home).last_seq, 1u);
  auto gw2 = gateway();
  join(new_home, gw2, 7, "bob");
  say(new_home, gw2, 7, "bob", "on n2", "1");
  sched.run();
  ASSERT_EQ(ack_seqs(gw2, 7), iota_seqs(2, 2));

  // n1 resumes with sends queued: the store refuses its term, nothing is
  // stored, every sender hears `unavailable` and the room stops.
  self->monitor(old_home);
  say(old_home, gw, 1, "alice", "late 1", "2", "k-late");
  say(old_home, gw, 1, "alice", "late 2", "3");
  sched.run();
  auto errors = conn_frames(gw, "error");
  ASSERT_EQ(errors.size(), 2u);
  for (auto& e : errors) EXPECT_EQ(e["code"], "unavailable") << e;
  EXPECT_EQ(ack_seqs(gw), iota_seqs(1, 1)) << "no ack for a fenced send";
  auto stored = backend->stored("general");
  ASSERT_EQ(stored.size(), 2u) << "one seq, one message: no fork";
  EXPECT_EQ(stored[0].text, "before");
  EXPECT_EQ(stored[1].text, "on n2");
  EXPECT_FALSE(state_of<room_state>(new_home).members.users.empty());
  // The old room is gone (its members' gateways join again where it lives now).
  bool down = false;
  self->receive([&](down_msg& dm) { down = dm.source == old_home.address(); },
                after(std::chrono::seconds(0)) >> [] {});
  EXPECT_TRUE(down) << "the fenced room must stop";

  // The retry of the refused keyed send, on the new home, is stored once.
  join(new_home, gw, 1, "alice");
  say(new_home, gw, 1, "alice", "late 1", "4", "k-late");
  say(new_home, gw, 1, "alice", "late 1", "5", "k-late");
  say(new_home, gw, 1, "alice", "before", "6", "k-before");  // still the first ack
  sched.run();
  std::map<int, uint64_t> seq_by_id;
  for (auto& a : conn_frames(gw, "ack")) seq_by_id[a["id"].get<int>()] = a["seq"];
  EXPECT_EQ(seq_by_id, (std::map<int, uint64_t>{{1, 1}, {4, 3}, {5, 3}, {6, 1}}));
  EXPECT_EQ(backend->stored("general").size(), 3u);
}

// --- recovery -------------------------------------------------------------------------

struct RecoveryTest : RoomTest {
  actor r, gw1, gw2;
  std::string epoch;
  RecoveryTest() {
    auto cfg = test_room_config();
    cfg.window = 5;          // the room keeps 8..12 in memory
    cfg.max_recovery = 10;
    r = room("general", cfg);
    gw1 = gateway();
    gw2 = gateway();
    join(r, gw1, 1, "alice");
    for (int i = 1; i <= 12; ++i) say(r, gw1, 1, "alice", "m" + std::to_string(i));
    sched.run();
    epoch = state_of<room_state>(r).epoch;
    EXPECT_EQ(state_of<room_state>(r).recent.size(), 5u);
    EXPECT_EQ(state_of<room_state>(r).recent.oldest_seq(), 8u);
  }

  // The recovered message seqs and the final joined frame of the last join.
  std::pair<std::vector<uint64_t>, json> outcome() {
    auto frames = last_join_frames(gw2);
    std::vector<uint64_t> seqs;
    json joined;
    for (size_t i = 0; i < frames.size(); ++i) {
      if (i + 1 < frames.size()) {
        EXPECT_EQ(frames[i]["type"], "message");
        EXPECT_EQ(frames[i]["text"], "m" + std::to_string(frames[i]["seq"].get<uint64_t>()));
        seqs.push_back(frames[i]["seq"].get<uint64_t>());
      } else {
        joined = frames[i];
      }
    }
    EXPECT_EQ(joined["type"], "joined");
    EXPECT_EQ(joined["seq"], 12);
    return {seqs, joined};
  }
};

TEST_F(RecoveryTest, SinceInsideTheWindowReplaysFromMemory) {
  join_since(r, gw2, 2, "bob", 9, epoch, "1");
  expect((join_req), from(self).to(r));
  disallow((range_atom, range_query), from(r).to(store));  // no store round trip
  sched.run();
  auto [seqs, joined] = outcome();
  EXPECT_EQ(seqs, iota_seqs(10, 12));
  EXPECT_EQ(joined["recovered"], true);
  EXPECT_EQ(joined["id"], 1);
  EXPECT_EQ(rec(gw2).joins.back().info.seq, 12u);

  // Nothing missed: just joined, recovered.
  join_since(r, gw2, 3, "bob", 12, epoch);
  sched.run();
  auto [seqs2, joined2] = outcome();
  EXPECT_TRUE(seqs2.empty());
  EXPECT_EQ(joined2["recovered"], true);

  // And bob, now a member, gets what comes next right after.
  say(r, gw1, 1, "alice", "m13");
  sched.run();
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(13, 13));
}

TEST_F(RecoveryTest, WrongEpochIsNotRecovered) {
  join_since(r, gw2, 2, "bob", 9, "0123456789abcdef");
  sched.run();
  auto [seqs, joined] = outcome();
  EXPECT_TRUE(seqs.empty());
  EXPECT_EQ(joined["recovered"], false);
  EXPECT_EQ(joined["epoch"], epoch);  // the client learns the new epoch
  EXPECT_TRUE(state_of<room_state>(r).members.users.count("bob"));  // joined all the same
}

TEST_F(RecoveryTest, SinceBeyondTheWindowIsFetchedFromTheStore) {
  join_since(r, gw2, 2, "bob", 4, epoch);
  expect((join_req), from(self).to(r));
  expect((append_atom, append_batch), from(r).to(store));  // bob's new membership
  sched.run();  // stored, then the room reads 5..8 from the store (the window holds 9..12)
  auto [seqs, joined] = outcome();
  EXPECT_EQ(seqs, iota_seqs(5, 12));
  EXPECT_EQ(joined["recovered"], true);

  // Exactly max_recovery (10) missed messages is still recovered.
  join_since(r, gw2, 3, "bob", 2, epoch);
  sched.run();
  auto [seqs2, joined2] = outcome();
  EXPECT_EQ(seqs2, iota_seqs(3, 12));
  EXPECT_EQ(joined2["recovered"], true);
}

TEST_F(RecoveryTest, SinceOlderThanMaxRecoveryIsNotRecovered) {
  join_since(r, gw2, 2, "bob", 1, epoch);  // 11 missed > max_recovery 10
  expect((join_req), from(self).to(r));
  disallow((range_atom, range_query), from(r).to(store));  // no store read
  sched.run();
  auto [seqs, joined] = outcome();
  EXPECT_TRUE(seqs.empty());
  EXPECT_EQ(joined["recovered"], false);
}

TEST_F(RecoveryTest, LeaveWhileTheStoreReadIsPendingCancelsTheJoin) {
  join_since(r, gw2, 2, "bob", 4, epoch);
  expect((join_req), from(self).to(r));  // the room asks the store for 5..7
  leave(r, gw2, 2, "9");
  expect((leave_req), from(self).to(r));
  sched.run();
  EXPECT_TRUE(rec(gw2).joins.empty());  // no joined for a connection that left
  auto left = conn_frames(gw2, "left", 2);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0]["id"], 9);
  auto& st = state_of<room_state>(r);
  EXPECT_TRUE(st.pending_joins.empty());
  EXPECT_EQ(st.members.users.count("bob"), 0u);
  say(r, gw1, 1, "alice", "m13");
  sched.run();
  EXPECT_TRUE(rec(gw2).delivers.empty());
}

TEST_F(RecoveryTest, MessagesCommittedDuringTheStoreReadAreNotLost) {
  join_since(r, gw2, 2, "bob", 4, epoch);
  expect((join_req), from(self).to(r));
  // While the room waits for the store, alice sends: stored after the read.
  say(r, gw1, 1, "alice", "m13");
  sched.run();
  auto [seqs, joined] = outcome();
  // The joined frame says 12 or 13; either way bob sees 5..13 exactly once, in order.
  std::vector<uint64_t> all = seqs;
  for (auto s : delivered_seqs(gw2)) all.push_back(s);
  EXPECT_EQ(all, iota_seqs(5, 13));
}

TEST_F(RoomTest, RecoveryAfterARestartOnATrimmedStore) {
  use_backend(5);  // the store keeps only the newest 5 messages of a room
  auto cfg = test_room_config();
  auto r1 = room("general", cfg);
  auto gw = gateway();
  join(r1, gw, 1, "alice");
  for (int i = 1; i <= 12; ++i) say(r1, gw, 1, "alice", "m" + std::to_string(i));
  sched.run();
  auto epoch = state_of<room_state>(r1).epoch;
  anon_send_exit(r1, exit_reason::kill);
  sched.run();

  auto r2 = room("general", cfg);
  EXPECT_EQ(state_of<room_state>(r2).epoch, epoch);
  EXPECT_EQ(state_of<room_state>(r2).first_seq, 8u);
  EXPECT_EQ(state_of<room_state>(r2).last_seq, 12u);
  auto gw2 = gateway();
  join_since(r2, gw2, 2, "bob", 3, epoch);  // 4..7 are gone
  sched.run();
  auto f = last_join_frames(gw2);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0]["recovered"], false);
  EXPECT_EQ(f[0]["first_seq"], 8);

  join_since(r2, gw2, 3, "bob", 7, epoch);  // 8..12 are all there
  sched.run();
  f = last_join_frames(gw2);
  ASSERT_EQ(f.size(), 6u);
  for (uint64_t i = 0; i < 5; ++i) EXPECT_EQ(f[i]["seq"], 8 + i);
  EXPECT_EQ(f[5]["recovered"], true);

  // The next message continues the sequence.
  say(r2, gw2, 2, "bob", "m13");
  sched.run();
  EXPECT_EQ(delivered_seqs(gw2), iota_seqs(13, 13));
}

TEST_F(RoomTest, StoreReadsTellTheRoomWhatRetentionTrimmed) {
  use_backend(5);  // the store keeps only the newest 5 messages: 8..12 below
  auto cfg = test_room_config();
  cfg.window = 3;
  auto r = room("general", cfg);
  auto gw = gateway();
  join(r, gw, 1, "alice");
  for (int i = 1; i <= 12; ++i) say(r, gw, 1, "alice", "m" + std::to_string(i));
  sched.run();
  EXPECT_EQ(state_of<room_state>(r).first_seq, 1u);  // the room has not been told yet
  history(r, gw, 1, 0, 5, "7");
  expect((history_req), from(self).to(r));
  expect((range_atom, range_query), from(r).to(store));
  sched.run();
  auto h = conn_frames(gw, "history");
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0]["messages"].size(), 5u);
  EXPECT_EQ(h[0]["messages"][0]["seq"], 8);
  EXPECT_EQ(h[0]["more"], false);  // 8 is the oldest left
  EXPECT_EQ(h[0]["first_seq"], 8);
  EXPECT_EQ(state_of<room_state>(r).first_seq, 8u);
  // Recovery from before the trim point is now refused at once.
  auto gw2 = gateway();
  join_since(r, gw2, 2, "bob", 5, state_of<room_state>(r).epoch);
  expect((join_req), from(self).to(r));
  disallow((range_atom, range_query), from(r).to(store));
  sched.run();
  auto f = last_join_frames(gw2);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0]["recovered"], false);
  EXPECT_EQ(f[0]["first_seq"], 8);
}

// --- history --------------------------------------------------------------------------

TEST_F(RoomTest, HistoryFromTheWindowAndFromTheStore) {
  auto cfg = test_room_config();
  cfg.window = 5;
  auto r = room("general", cfg);
  auto gw = gateway();
  join(r, gw, 1, "alice");
  sched.run();
  history(r, gw, 1, 0, 50, "0");  // empty room
  sched.run();
  {
    auto h = conn_frames(gw, "history");
    ASSERT_EQ(h.size(), 1u);
    EXPECT_EQ(h[0]["id"], 0);
    EXPECT_EQ(h[0]["messages"], json::array());
    EXPECT_EQ(h[0]["more"], false);
  }
  for (int i = 1; i <= 3; ++i) say(r, gw, 1, "alice", "m" + std::to_string(i));
  sched.run();
  {
    // The window still holds everything: all of it, and nothing more.
    history(r, gw, 1, 0, 50, "\"all\"");
    history(r, gw, 1, 0, 2, "\"two\"");
    sched.run();
    auto h = conn_frames(gw, "history");
    ASSERT_EQ(h.size(), 3u);
    EXPECT_EQ(h[1]["id"], "all");
    EXPECT_EQ(h[1]["messages"].size(), 3u);
    EXPECT_EQ(h[1]["messages"][0]["seq"], 1);
    EXPECT_EQ(h[1]["more"], false);
    EXPECT_EQ(h[2]["messages"].size(), 2u);
    EXPECT_EQ(h[2]["messages"][0]["seq"], 2);
    EXPECT_EQ(h[2]["more"], true);
  }
  for (int i = 4; i <= 12; ++i) say(r, gw, 1, "alice", "m" + std::to_string(i));
  sched.run();
  rec(gw) = recorder_state{};

  auto seqs_of = [](const json& h) {
    std::vector<uint64_t> out;
    for (auto& m : h["messages"]) {
      EXPECT_EQ(m["type"], "message");
      EXPECT_EQ(m["text"], "m" + std::to_string(m["seq"].get<uint64_t>()));
      out.push_back(m["seq"].get<uint64_t>());
    }
    return out;
  };
  auto last_history = [&] {
    auto h = conn_frames(gw, "history");
    EXPECT_FALSE(h.empty());
    return h.empty() ? json{} : h.back();
  };

  // Newest 3: inside the window, answered without the store.
  history(r, gw, 1, 0, 3, "1");
  expect((history_req), from(self).to(r));
  disallow((range_atom, range_query), from(r).to(store));
  expect((history_page), from(r).to(gw));
  auto h = last_history();
  EXPECT_EQ(h["id"], 1);
  EXPECT_EQ(h["room"], "general");
  EXPECT_EQ(seqs_of(h), iota_seqs(10, 12));
  EXPECT_EQ(h["more"], true);
  EXPECT_EQ(h["first_seq"], 1);

  // The whole window.
  history(r, gw, 1, 0, 5, "2");
  sched.run();
  EXPECT_EQ(seqs_of(last_history()), iota_seqs(8, 12));

  // One more than the window: from the store.
  history(r, gw, 1, 0, 6, "3");
  expect((history_req), from(self).to(r));
  expect((range_atom, range_query), from(r).to(store));
  sched.run();
  h = last_history();
  EXPECT_EQ(h["id"], 3);
  EXPECT_EQ(seqs_of(h), iota_seqs(7, 12));
  EXPECT_EQ(h["more"], true);

  // Paging back with `before` (exclusive).
  history(r, gw, 1, 5, 3, "4");
  sched.run();
  h = last_history();
  EXPECT_EQ(seqs_of(h), iota_seqs(2, 4));
  EXPECT_EQ(h["more"], true);
  history(r, gw, 1, 3, 50, "5");
  sched.run();
  h = last_history();
  EXPECT_EQ(seqs_of(h), iota_seqs(1, 2));
  EXPECT_EQ(h["more"], false);
  history(r, gw, 1, 1, 50, "6");
  sched.run();
  h = last_history();
  EXPECT_TRUE(seqs_of(h).empty());
  EXPECT_EQ(h["more"], false);
  // `before` past the end means "newest".
  history(r, gw, 1, 1000, 2, "7");
  sched.run();
  EXPECT_EQ(seqs_of(last_history()), iota_seqs(11, 12));
  EXPECT_TRUE(conn_frames(gw, "error").empty());
}

// --- direct messages --------------------------------------------------------------------

TEST_F(RoomTest, DmRoomsServeOnlyTheirTwoParticipants) {
  auto r = room("dm:alice:bob");
  EXPECT_TRUE(state_of<room_state>(r).dm);
  auto gw = gateway();

  // A third user can neither join nor send.
  join(r, gw, 3, "carol", "1");
  say(r, gw, 3, "carol", "hi", "2");
  sched.run();
  EXPECT_TRUE(rec(gw).joins.empty());
  auto errs = conn_frames(gw, "error", 3);
  ASSERT_EQ(errs.size(), 2u);
  EXPECT_EQ(errs[0]["code"], "forbidden");
  EXPECT_EQ(errs[0]["id"], 1);
  EXPECT_EQ(errs[1]["code"], "forbidden");
  EXPECT_EQ(errs[1]["id"], 2);
  EXPECT_TRUE(backend->stored("dm:alice:bob").empty());

  // A participant sends without joining: ack, and one user_deliver to the registry
  // for both users' connections; nothing goes to gateways as a room broadcast.
  self->send(r, make_send("dm:alice:bob", conn_ref{as_gw(gw), 1}, member_info{"alice", "Alice"}, "3",
                          "psst", "", "bob"));
  sched.run();
  auto acks = conn_frames(gw, "ack", 1);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0]["room"], "dm:alice:bob");
  EXPECT_EQ(acks[0]["seq"], 1);
  ASSERT_EQ(rec(reg).user_delivers.size(), 1u);
  auto& ud = rec(reg).user_delivers[0];
  EXPECT_EQ(ud.users, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(ud.room, "dm:alice:bob");
  EXPECT_EQ(ud.seq, 1u);
  auto m = parse(ud.frame);
  EXPECT_EQ(m["type"], "message");
  EXPECT_EQ(m["text"], "psst");
  EXPECT_EQ(m["from"], "alice");
  EXPECT_TRUE(rec(gw).delivers.empty());

  // Joining (for history/recovery) is allowed but does not make a member.
  join(r, gw, 2, "bob", "4");
  sched.run();
  ASSERT_EQ(rec(gw).joins.size(), 1u);
  EXPECT_FALSE(rec(gw).joins[0].member);
  auto j = last_join_frames(gw);
  EXPECT_EQ(j.back()["seq"], 1);
  EXPECT_TRUE(state_of<room_state>(r).members.by_gateway.empty());
  EXPECT_TRUE(events(gw, "member_joined").empty());

  self->send(r, make_send("dm:alice:bob", conn_ref{as_gw(gw), 2}, member_info{"bob", "Bob"}, "5",
                          "hey", "", "alice"));
  sched.run();
  ASSERT_EQ(rec(reg).user_delivers.size(), 2u);
  EXPECT_EQ(rec(reg).user_delivers[1].seq, 2u);
  EXPECT_TRUE(rec(gw).delivers.empty());

  // Typing goes to the other participant only, through the registry.
  self->send(r, make_typing("dm:alice:bob", conn_ref{as_gw(gw), 1}, "alice", "Alice"));
  self->send(r, make_typing("dm:alice:bob", conn_ref{as_gw(gw), 3}, "carol", "Carol"));
  sched.run();
  ASSERT_EQ(rec(reg).user_delivers.size(), 3u);
  EXPECT_EQ(rec(reg).user_delivers[2].users, (std::vector<std::string>{"bob"}));
  EXPECT_EQ(rec(reg).user_delivers[2].seq, 0u);
  auto typing = parse(rec(reg).user_delivers[2].frame);
  EXPECT_EQ(typing["type"], "typing");
  EXPECT_EQ(typing["user"], "alice");
  EXPECT_EQ(typing["name"], "Alice");
  EXPECT_EQ(backend->stored("dm:alice:bob").size(), 2u);
}

// --- typing -------------------------------------------------------------------------

TEST_F(RoomTest, TypingIsBroadcastToEveryoneButTheTypist) {
  auto r = room("general");
  auto gw1 = gateway();
  auto gw2 = gateway();
  join(r, gw1, 1, "alice");
  join(r, gw2, 2, "bob");
  sched.run();
  rec(gw1) = recorder_state{};
  rec(gw2) = recorder_state{};

  self->send(r, make_typing("general", conn_ref{as_gw(gw1), 1}, "alice", "Alice"));
  sched.run();
  for (auto* gw : {&gw1, &gw2}) {
    ASSERT_EQ(rec(*gw).delivers.size(), 1u);
    auto& d = rec(*gw).delivers[0];
    EXPECT_EQ(d.skip_user, "alice");
    EXPECT_EQ(d.seq, 0u);  // not a stored message
    auto t = parse(d.frame);
    EXPECT_EQ(t["type"], "typing");
    EXPECT_EQ(t["room"], "general");
    EXPECT_EQ(t["user"], "alice");
    EXPECT_EQ(t["name"], "Alice");
  }
  // From a connection that is not a member: dropped silently.
  self->send(r, make_typing("general", conn_ref{as_gw(gw2), 9}, "carol", "Carol"));
  self->send(r, make_typing("general", conn_ref{as_gw(gw2), 9}, "bob", "Bob"));  // bob's name, wrong conn
  sched.run();
  EXPECT_EQ(rec(gw1).delivers.size(), 1u);
  EXPECT_EQ(rec(gw2).delivers.size(), 1u);
  EXPECT_TRUE(rec(gw2).to_conns.empty());
  EXPECT_EQ(backend->append_calls, 0u);
}

// --- idle rooms and the directory ------------------------------------------------------

struct DirectoryTest : RoomTest {
  room_config cfg = [] {
    auto c = test_room_config();
    c.idle_grace = std::chrono::seconds(30);
    return c;
  }();
  actor d = directory(cfg);
  actor gw = gateway();

  join_req dir_join(uint64_t conn, const std::string& user, const std::string& id = "") {
    return make_join("lobby", conn_ref{as_gw(gw), conn}, member_info{user, display(user)}, id);
  }
  leave_req dir_leave(uint64_t conn) { return make_leave("lobby", conn_ref{as_gw(gw), conn}); }
  directory_state& dst() { return state_of<directory_state>(d); }
};

TEST_F(DirectoryTest, IdleRoomIsStopped) {
  self->send(d, dir_join(1, "alice"));
  sched.run();
  ASSERT_EQ(rec(gw).joins.size(), 1u);
  auto r = rec(gw).joins[0].room_actor;
  ASSERT_TRUE(r);
  EXPECT_EQ(dst().rooms.at("lobby").room, r);
  self->send(gw, watch_atom_v, r);
  self->send(r, make_send("lobby", conn_ref{as_gw(gw), 1}, member_info{"alice", "Alice"}, "", "hi"));
  self->send(d, dir_leave(1));
  sched.run();

  // Half the grace: still there.
  sched.clock().advance_time(cfg.idle_grace / 2);
  sched.run();
  EXPECT_TRUE(rec(gw).downs.empty());
  EXPECT_EQ(dst().rooms.count("lobby"), 1u);

  // The full grace: room_idle -> stop_room -> gone.
  sched.clock().advance_time(cfg.idle_grace / 2);
  sched.run();
  ASSERT_EQ(rec(gw).downs.size(), 1u);
  EXPECT_EQ(rec(gw).downs[0].source, r.address());
  EXPECT_EQ(dst().rooms.count("lobby"), 0u);
  EXPECT_TRUE(dst().by_addr.empty());

  // A later join starts a new room actor that continues from the store.
  self->send(d, dir_join(2, "bob"));
  sched.run();
  ASSERT_EQ(rec(gw).joins.size(), 2u);
  EXPECT_NE(rec(gw).joins[1].room_actor, r);
  EXPECT_EQ(rec(gw).joins[1].info.seq, 1u);
}

TEST_F(DirectoryTest, JoinForwardedAfterTheIdleCheckKeepsTheRoomAlive) {
  self->send(d, dir_join(1, "alice"));
  sched.run();  // joined (a leave before it would cancel the join)
  self->send(d, dir_leave(1));
  sched.run();
  ASSERT_EQ(rec(gw).joins.size(), 1u);
  auto r = rec(gw).joins[0].room_actor;
  self->send(gw, watch_atom_v, r);
  sched.run();

  // The grace is over: the idle check is in the room's mailbox...
  sched.clock().advance_time(cfg.idle_grace);
  // ...and a join reaches the directory, which forwards it, before the room's
  // room_idle reaches the directory.
  self->send(d, dir_join(2, "bob", "3"));
  expect((join_req), from(self).to(d));
  EXPECT_EQ(dst().rooms.at("lobby").sent, 3u);
  while (allow((idle_chk_atom, uint64_t), from(r).to(r))) {
  }
  EXPECT_EQ(state_of<room_state>(r).received, 2u);  // the forwarded join is still queued
  expect((room_idle), from(r).to(d));
  // The directory saw that it forwarded more than the room had received: no stop.
  disallow((stop_room_atom), from(d).to(r));
  expect((join_req), from(d).to(r));
  sched.run();
  EXPECT_TRUE(rec(gw).downs.empty());
  ASSERT_EQ(dst().rooms.count("lobby"), 1u);
  EXPECT_EQ(dst().rooms.at("lobby").room, r);
  ASSERT_EQ(rec(gw).joins.size(), 2u);
  EXPECT_EQ(rec(gw).joins[1].room_actor, r);
  EXPECT_EQ(state_of<room_state>(r).members.conn_count, 1u);

  // While bob is in, idle checks do nothing.
  sched.clock().advance_time(cfg.idle_grace * 3);
  sched.run();
  EXPECT_TRUE(rec(gw).downs.empty());

  // Once he leaves, the room goes after its grace.
  self->send(d, dir_leave(2));
  sched.run();
  sched.clock().advance_time(cfg.idle_grace);
  sched.run();
  EXPECT_EQ(rec(gw).downs.size(), 1u);
  EXPECT_EQ(dst().rooms.count("lobby"), 0u);
}

TEST_F(DirectoryTest, RoomThatNobodyJoinedIsStoppedToo) {
  // A history (or presence) request of a stored room spawns it but joins nobody.
  room_snapshot snap;
  std::string err;
  ASSERT_TRUE(backend->load_room("lobby", 10, 0, snap, err)) << err;  // the row exists
  self->send(d, make_history("lobby", conn_ref{as_gw(gw), 1}, "1", 0, 50));
  sched.run();
  ASSERT_EQ(conn_frames(gw, "history").size(), 1u);
  ASSERT_EQ(dst().rooms.count("lobby"), 1u);
  auto r = dst().rooms.at("lobby").room;
  self->send(gw, watch_atom_v, r);
  sched.run();
  sched.clock().advance_time(cfg.idle_grace);
  sched.run();
  EXPECT_EQ(rec(gw).downs.size(), 1u);
  EXPECT_EQ(dst().rooms.count("lobby"), 0u);
}

TEST_F(DirectoryTest, RoomEmptiedWhileAFailedAppendWasInFlightIsStoppedToo) {
  self->send(d, dir_join(1, "alice"));
  sched.run();
  ASSERT_EQ(rec(gw).joins.size(), 1u);
  auto r = rec(gw).joins[0].room_actor;
  self->send(gw, watch_atom_v, r);
  sched.run();
  sched.clock().advance_time(cfg.idle_grace);  // any check from before: alice is in
  sched.run();
  ASSERT_TRUE(rec(gw).downs.empty());

  // Alice sends and leaves while the append is in flight; the append fails.
  backend->fail_appends = 1;
  self->send(r, make_send("lobby", conn_ref{as_gw(gw), 1}, member_info{"alice", "Alice"}, "5", "hi"));
  expect((send_req), from(self).to(r));
  self->send(d, dir_leave(1));
  expect((leave_req), from(self).to(d));
  expect((leave_req), from(d).to(r));  // the room is empty, the append still in flight
  EXPECT_TRUE(state_of<room_state>(r).in_flight);
  sched.run();
  ASSERT_EQ(conn_frames(gw, "error", 1).size(), 1u);
  EXPECT_EQ(state_of<room_state>(r).members.conn_count, 0u);
  EXPECT_FALSE(state_of<room_state>(r).in_flight);

  sched.clock().advance_time(cfg.idle_grace);
  sched.run();
  EXPECT_EQ(rec(gw).downs.size(), 1u);
  EXPECT_EQ(dst().rooms.count("lobby"), 0u);
}

TEST_F(DirectoryTest, RoomWhoseStoreLoadFailedIsReplacedByAFreshOne) {
  backend->fail_loads = 1;
  self->send(d, dir_join(1, "alice", "1"));
  sched.run();
  auto errs = conn_frames(gw, "error", 1);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0]["code"], "unavailable");
  EXPECT_EQ(errs[0]["id"], 1);
  ASSERT_EQ(dst().rooms.count("lobby"), 1u);
  auto failed = dst().rooms.at("lobby").room;
  self->send(gw, watch_atom_v, failed);
  sched.run();
  // It stops after a few seconds; the directory forgets it.
  sched.clock().advance_time(std::chrono::seconds(5));
  sched.run();
  ASSERT_EQ(rec(gw).downs.size(), 1u);
  EXPECT_EQ(dst().rooms.count("lobby"), 0u);
  // The next join gets a fresh room that loads fine.
  self->send(d, dir_join(1, "alice", "2"));
  sched.run();
  ASSERT_EQ(rec(gw).joins.size(), 1u);
  EXPECT_NE(rec(gw).joins[0].room_actor, failed);
  EXPECT_EQ(last_join_frames(gw).back()["id"], 2);
}

TEST_F(DirectoryTest, LeaveForAnUnknownRoomIsAnsweredWithoutCreatingIt) {
  self->send(d, make_leave("nowhere", conn_ref{as_gw(gw), 1}, "8"));
  sched.run();
  auto left = conn_frames(gw, "left", 1);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0]["id"], 8);
  EXPECT_EQ(left[0]["room"], "nowhere");
  EXPECT_TRUE(dst().rooms.empty());
}

}  // namespace

// Issue 11: reads and typing never create a room; the directory asks the store.
TEST_F(DirectoryTest, ReadsAndTypingOfAnUnknownRoomSpawnNothing) {
  self->send(d, make_history("ghost", conn_ref{as_gw(gw), 1}, "1", 0, 50));
  self->send(d, make_presence("ghost", conn_ref{as_gw(gw), 1}, "2"));
  self->send(d, make_typing("ghost", conn_ref{as_gw(gw), 1}, "alice", "Alice"));
  self->send(d, make_join("dm:alice:bob", conn_ref{as_gw(gw), 1}, member_info{"alice", "Alice"}, "3"));
  sched.run();
  EXPECT_TRUE(dst().rooms.empty());
  EXPECT_EQ(backend->load_calls, 0u);  // load_room would have created the row
  ASSERT_EQ(rec(gw).errors.size(), 3u);
  for (auto& e : rec(gw).errors) EXPECT_EQ(e.code, errc::not_found);
  EXPECT_TRUE(rec(gw).histories.empty());
  EXPECT_TRUE(rec(gw).joins.empty());
}

TEST_F(DirectoryTest, ReadOfAStoredRoomThatIsNotLiveSpawnsIt) {
  self->send(d, dir_join(1, "alice"));
  sched.run();
  auto r = rec(gw).joins.at(0).room_actor;
  self->send(r, make_send("lobby", conn_ref{as_gw(gw), 1}, member_info{"alice", "Alice"}, "", "hi"));
  self->send(d, dir_leave(1));
  sched.run();
  sched.clock().advance_time(cfg.idle_grace);
  sched.run();
  ASSERT_EQ(dst().rooms.count("lobby"), 0u);
  self->send(d, make_history("lobby", conn_ref{as_gw(gw), 2}, "9", 0, 50));
  sched.run();
  ASSERT_EQ(rec(gw).histories.size(), 1u);
  EXPECT_EQ(rec(gw).histories[0].msgs.size(), 1u);
  EXPECT_EQ(rec(gw).histories[0].req_id, "9");
}

// A directory on a shared store checks its rooms' claims once a second: a
// room whose claim another node took while nobody sent into it (so no append
// of its own was refused) steps down, and its members' gateways see it go.
TEST_F(FencingTest, TheDirectoryStopsARoomWhoseClaimWasTakenWithoutAnAppend) {
  auto cfg = test_room_config();
  auto dd = deps(nullptr, cfg);
  dd.claim_as = "n1";
  auto d = sys.spawn(directory_impl, dd);
  directories.push_back(d);
  spawned.push_back(d);
  sched.run();
  auto gw = gateway();
  self->send(d, make_join("quiet", conn_ref{as_gw(gw), 1}, member_info{"alice", "Alice"}, ""));
  sched.run();
  ASSERT_EQ(rec(gw).joins.size(), 1u);
  auto r = rec(gw).joins[0].room_actor;
  EXPECT_EQ(state_of<directory_state>(d).rooms.at("quiet").term, 1u);
  self->send(gw, watch_atom_v, r);
  sched.run();

  // A check while the claim holds changes nothing.
  sched.clock().advance_time(std::chrono::seconds(1));
  sched.run();
  EXPECT_TRUE(rec(gw).downs.empty());

  EXPECT_EQ(claim_elsewhere("quiet", "n2"), 2u);
  sched.clock().advance_time(std::chrono::seconds(1));
  sched.run();
  ASSERT_EQ(rec(gw).downs.size(), 1u) << "the room must stop within one check";
  EXPECT_EQ(rec(gw).downs[0].source, r.address());
  EXPECT_EQ(state_of<directory_state>(d).rooms.count("quiet"), 0u);
}

// --- protocol v2: changes to messages ----------------------------------------------

namespace {

send_req change_req(const std::string& room, conn_ref c, const std::string& user, event_kind kind,
                    uint64_t target, const std::string& id) {
  auto r = make_send(room, std::move(c), member_info{user, display(user)}, id, "");
  r.kind = kind;
  r.target = target;
  if (kind == event_kind::edited) r.text = "edited by " + user;
  return r;
}

}  // namespace

struct RoomEventsTest : RoomTest {
  actor r, gw;
  void SetUp() override {
    r = room("general");
    gw = gateway();
    join(r, gw, 1, "alice");
    join(r, gw, 2, "bob");
    sched.run();
  }
  conn_ref conn(uint64_t id) { return conn_ref{as_gw(gw), id}; }
  void change(uint64_t c, const std::string& user, event_kind kind, uint64_t target,
              const std::string& id, bool admin = false) {
    auto req = change_req("general", conn(c), user, kind, target, id);
    req.admin = admin;
    self->send(r, std::move(req));
  }
  void react(uint64_t c, const std::string& user, uint64_t target, const std::string& emoji,
             bool on, const std::string& id) {
    auto req = change_req("general", conn(c), user, event_kind::reaction, target, id);
    req.emoji = emoji;
    req.on = on;
    self->send(r, std::move(req));
  }
  // The reply to request `id` as the client sees it.
  json reply(const std::string& id) {
    for (auto& f : rec(gw).to_conns) {
      auto j = parse(f.frame);
      if (j.contains("id") && j["id"].dump() == id) return j;
    }
    return json();
  }
};

TEST_F(RoomEventsTest, ChangesInOneBatchAreCheckedInSeqOrder) {
  say(r, gw, 1, "alice", "m1", "1");
  sched.run();
  // m2's append is in flight while the rest queue: they go as one batch,
  // checked one after the other against the state the ones before leave.
  say(r, gw, 1, "alice", "m2", "2");
  change(1, "alice", event_kind::deleted, 1, "3");
  change(1, "alice", event_kind::deleted, 1, "4");
  change(1, "alice", event_kind::edited, 1, "5");
  react(2, "bob", 1, "👍", true, "6");
  react(2, "bob", 2, "👍", true, "7");
  react(2, "bob", 2, "👍", true, "8");
  auto calls = backend->append_calls;
  sched.run();
  EXPECT_EQ(backend->append_calls, calls + 2);  // m2, then everything else at once
  EXPECT_EQ(reply("3")["seq"], 3);
  EXPECT_EQ(reply("4")["code"], "not_found");
  EXPECT_EQ(reply("5")["code"], "not_found");
  EXPECT_EQ(reply("6")["code"], "not_found");  // deleted before it
  EXPECT_EQ(reply("7")["seq"], 4);
  EXPECT_EQ(reply("8")["noop"], true);
  EXPECT_FALSE(reply("8").contains("seq"));
  EXPECT_EQ(state_of<room_state>(r).last_seq, 4u);
  // Every member saw the two events, in order, after the messages.
  std::vector<uint64_t> seqs;
  for (auto& d : rec(gw).delivers)
    if (d.seq > 0) seqs.push_back(d.seq);
  EXPECT_EQ(seqs, iota_seqs(1, 4));
  auto del = delivered(gw, "message_deleted");
  ASSERT_EQ(del.size(), 1u);
  EXPECT_EQ(del[0]["by"], "alice");
  // The window holds the current state: history from memory shows it.
  history(r, gw, 1, 0, 10, "9");
  sched.run();
  auto h = reply("9");
  ASSERT_EQ(h["messages"].size(), 4u) << h;
  EXPECT_EQ(h["messages"][0]["deleted"], true);
  EXPECT_EQ(h["messages"][1]["reactions"][0]["users"], json::parse(R"(["bob"])"));
}

TEST_F(RoomEventsTest, OnlyTheAuthorEditsAndDeletesUnlessAdmin) {
  say(r, gw, 1, "alice", "mine", "1");
  sched.run();
  change(2, "bob", event_kind::edited, 1, "2");
  change(2, "bob", event_kind::deleted, 1, "3");
  sched.run();
  EXPECT_EQ(reply("2")["code"], "forbidden");
  EXPECT_EQ(reply("3")["code"], "forbidden");
  change(2, "bob", event_kind::deleted, 1, "4", /*admin=*/true);
  sched.run();
  EXPECT_EQ(reply("4")["seq"], 2);
  // A connection that did not join cannot change anything.
  change(9, "mallory", event_kind::deleted, 1, "5", true);
  sched.run();
  EXPECT_EQ(reply("5")["code"], "not_member");
}

TEST_F(RoomEventsTest, ATargetOlderThanTheWindowIsReadFromTheStoreInOrder) {
  auto cfg = test_room_config();
  cfg.window = 2;
  auto small = room("small", cfg);
  join(small, gw, 1, "alice");
  sched.run();
  for (int i = 1; i <= 5; ++i)
    self->send(small, make_send("small", conn(1), member_info{"alice", "Alice"}, "", "m"));
  sched.run();
  ASSERT_EQ(state_of<room_state>(small).recent.oldest_seq(), 4u);
  // The edit waits for the store; the send behind it waits behind it.
  self->send(small, change_req("small", conn(1), "alice", event_kind::edited, 1, "10"));
  self->send(small, make_send("small", conn(1), member_info{"alice", "Alice"}, "11", "after"));
  self->send(small, change_req("small", conn(1), "alice", event_kind::edited, 2, "12"));
  sched.run();
  EXPECT_EQ(reply("10")["seq"], 6);
  EXPECT_EQ(reply("11")["seq"], 7);
  EXPECT_EQ(reply("12")["seq"], 8);
  // What was read is kept current: a second edit of seq 1 needs no read and
  // sees the first (a delete now, then not found).
  self->send(small, change_req("small", conn(1), "alice", event_kind::deleted, 1, "13"));
  self->send(small, change_req("small", conn(1), "alice", event_kind::edited, 1, "14"));
  sched.run();
  EXPECT_EQ(reply("13")["seq"], 9);
  EXPECT_EQ(reply("14")["code"], "not_found");
  stored_msg m;
  bool found = false;
  std::string err;
  ASSERT_TRUE(backend->get_event("small", 2, m, found, err)) << err;
  EXPECT_EQ(m.text, "edited by alice");
  EXPECT_FALSE(state_of<room_state>(small).looking_up);
  EXPECT_TRUE(state_of<room_state>(small).held.empty());
}

TEST_F(RoomEventsTest, TheCreatorOwnsAndReadPositionsOnlyMoveForward) {
  // alice's join created the room (SetUp): owner; bob: member.
  auto& st = state_of<room_state>(r);
  EXPECT_EQ(st.memberships.at("alice").role, member_role::owner);
  EXPECT_EQ(st.memberships.at("bob").role, member_role::member);
  for (int i = 1; i <= 3; ++i) say(r, gw, 1, "alice", "m");
  sched.run();
  auto read = [&](uint64_t seq, const std::string& id) {
    self->send(r, read_req{"general", conn(2), "bob", id, seq});
    sched.run();
    return reply(id);
  };
  EXPECT_EQ(read(2, "1")["seq"], 2);
  EXPECT_EQ(read(1, "2")["seq"], 2);   // never back
  EXPECT_EQ(read(50, "3")["seq"], 3);  // never past the room's seq
  // The moves reached the store (member-only batches), the user's other
  // connections through their registry, not the reader's own.
  room_snapshot snap;
  std::string err;
  ASSERT_TRUE(backend->load_room("general", 0, 0, snap, err)) << err;
  bool found = false;
  for (auto& m : snap.members)
    if (m.user == "bob") {
      found = true;
      EXPECT_EQ(m.read_seq, 3u);
    }
  EXPECT_TRUE(found);
  ASSERT_FALSE(rec(reg).user_delivers.empty());
  EXPECT_EQ(rec(reg).user_delivers.back().skip.id, 2u);
  EXPECT_EQ(parse(rec(reg).user_delivers.back().frame),
            json::parse(R"({"type":"read","room":"general","seq":3})"));
  // A join now reports the position and what is unread after it (alice's
  // messages only: bob's own do not count).
  say(r, gw, 2, "bob", "mine");
  say(r, gw, 1, "alice", "new");
  sched.run();
  join(r, gw, 7, "bob", "8");
  sched.run();
  auto j = last_join_frames(gw).back();
  EXPECT_EQ(j["read_seq"], 3);
  EXPECT_EQ(j["unread"], 1);
  EXPECT_EQ(j["role"], "member");
  // Part: the membership ends and every connection of bob stops receiving.
  self->send(r, part_req{"general", conn(2), "bob", "9"});
  sched.run();
  EXPECT_EQ(reply("9")["type"], "parted");
  EXPECT_EQ(st.memberships.count("bob"), 0u);
  EXPECT_EQ(st.members.users.count("bob"), 0u);
  self->send(r, read_req{"general", conn(7), "bob", "10", 5});
  sched.run();
  EXPECT_EQ(reply("10")["code"], "not_member");
}

// --- protocol v2: settings, private rooms, invites -----------------------------------

namespace {

send_req settings_req(const std::string& room, conn_ref c, const std::string& user,
                      const std::string& id, room_settings s, uint8_t set) {
  auto r = make_send(room, std::move(c), member_info{user, display(user)}, id, "");
  r.kind = event_kind::moderation;
  r.text = "settings";
  r.settings = std::move(s);
  r.set = set;
  return r;
}

}  // namespace

struct RoomSettingsTest : RoomEventsTest {
  // carol joins as a third member; bob becomes a moderator through the server API.
  void SetUp() override {
    RoomEventsTest::SetUp();
    join(r, gw, 3, "carol");
    self->send(r, invite_req{"general", {}, {}, {}, "bob", false, member_role::moderator});
    sched.run();
  }
  void set(uint64_t c, const std::string& user, const std::string& id, room_settings s,
           uint8_t bits) {
    self->send(r, settings_req("general", conn(c), user, id, std::move(s), bits));
  }
};

TEST_F(RoomSettingsTest, TheOwnerSetsEverythingModeratorsTopicAndSlowModeMembersNothing) {
  auto& st = state_of<room_state>(r);
  ASSERT_EQ(st.memberships.at("bob").role, member_role::moderator);
  set(3, "carol", "1", {"mine now", false, false, 0}, settings_topic);
  set(2, "bob", "2", {"", false, true, 0}, settings_read_only);
  set(2, "bob", "3", {"release day", false, false, 30}, settings_topic | settings_slow_mode);
  set(1, "alice", "4", {"", true, false, 0}, settings_private);
  sched.run();
  EXPECT_EQ(reply("1")["code"], "forbidden");
  EXPECT_EQ(reply("2")["code"], "forbidden");
  EXPECT_EQ(reply("3")["seq"], 1);
  EXPECT_EQ(reply("4")["seq"], 2);
  EXPECT_EQ(st.settings, (room_settings{"release day", true, false, 30}));
  // Each change is a moderation event with the settings after it, in seq order.
  auto ev = delivered(gw, "moderation");
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0], json::parse(R"({"type":"moderation","room":"general","seq":1,"ts":)" +
                               ev[0]["ts"].dump() +
                               R"(,"action":"settings","by":"bob","settings":{"topic":"release day",)"
                               R"("private":false,"read_only":false,"slow_mode":30}})"));
  EXPECT_EQ(ev[1]["settings"]["private"], true);
  EXPECT_EQ(ev[1]["by"], "alice");
  // Stored with the event: a fresh room actor (a restart) has them.
  room_snapshot snap;
  std::string err;
  ASSERT_TRUE(backend->load_room("general", 0, 0, snap, err)) << err;
  EXPECT_EQ(snap.settings, st.settings);
  self->send(r, room_req{"general", conn(3), "carol", "5"});
  sched.run();
  EXPECT_EQ(reply("5"), json::parse(R"({"type":"room","id":5,"room":"general","topic":"release day",)"
                                    R"("private":true,"read_only":false,"slow_mode":30,"last_seq":2,)"
                                    R"("member_count":3})"));
  // History keeps the audit trail.
  history(r, gw, 1, 0, 10, "6");
  sched.run();
  EXPECT_EQ(reply("6")["messages"][0]["action"], "settings");
}

TEST_F(RoomSettingsTest, ReadOnlyAndSlowModeBindMembersInSeqOrder) {
  say(r, gw, 3, "carol", "before", "1");
  sched.run();
  // In one batch: read-only, then carol's send (refused), her reaction (allowed),
  // and the moderator's send (allowed).
  say(r, gw, 1, "alice", "in flight", "2");
  set(1, "alice", "3", {"", false, true, 0}, settings_read_only);
  say(r, gw, 3, "carol", "too late", "4");
  react(3, "carol", 1, "👍", true, "5");
  say(r, gw, 2, "bob", "mods may", "6");
  sched.run();
  EXPECT_EQ(reply("3")["seq"], 3);
  EXPECT_EQ(reply("4")["code"], "forbidden");
  EXPECT_EQ(reply("5")["seq"], 4);
  EXPECT_EQ(reply("6")["seq"], 5);
  // Slow mode: a member may send once per 60 s, counted from their last
  // message while it is on (carol's "before" does not count: once; erin,
  // new, once); bob is exempt.
  set(1, "alice", "7", {"", false, false, 60}, settings_read_only | settings_slow_mode);
  join(r, gw, 5, "erin");
  sched.run();
  say(r, gw, 3, "carol", "again", "12");
  say(r, gw, 5, "erin", "one", "8");
  sched.run();
  EXPECT_TRUE(reply("12").contains("seq")) << reply("12");
  say(r, gw, 3, "carol", "and again", "13");
  sched.run();
  EXPECT_EQ(reply("13")["code"], "rate_limited");
  say(r, gw, 5, "erin", "two", "9");
  say(r, gw, 2, "bob", "b1", "10");
  say(r, gw, 2, "bob", "b2", "11");
  sched.run();
  EXPECT_TRUE(reply("8").contains("seq"));
  auto refused = reply("9");
  EXPECT_EQ(refused["code"], "rate_limited");
  ASSERT_TRUE(refused.contains("retry_ms")) << refused;
  EXPECT_GT(refused["retry_ms"].get<int64_t>(), 0);
  EXPECT_LE(refused["retry_ms"].get<int64_t>(), 60000);
  EXPECT_TRUE(reply("10").contains("seq"));
  EXPECT_TRUE(reply("11").contains("seq"));
}

TEST_F(RoomSettingsTest, APrivateRoomLooksAbsentToOutsidersUntilInvited) {
  set(1, "alice", "1", {"", true, false, 0}, settings_private);
  sched.run();
  auto outsider = conn_ref{as_gw(gw), 9};
  self->send(r, make_join("general", outsider, member_info{"dave", "Dave"}, "2"));
  self->send(r, room_req{"general", outsider, "dave", "4"});
  auto h = make_history("general", outsider, "5", 0, 10);
  h.user = "dave";
  self->send(r, h);
  self->send(r, presence_req{"general", outsider, "6", "dave"});
  self->send(r, search_req{"general", outsider, "7", "x", 0, 10, "dave"});
  self->send(r, invite_req{"general", outsider, "dave", "8", "eve"});
  sched.run();
  EXPECT_EQ(reply("2")["code"], "forbidden");
  EXPECT_EQ(reply("2")["room"], "general");  // the connection stops waiting for it
  for (auto id : {"4", "5", "6", "7", "8"}) {
    EXPECT_EQ(reply(id)["code"], "not_found") << id;
    EXPECT_EQ(reply(id)["message"], "no such room") << id;
  }
  // A member may not invite; the owner may: an ack without seq, and dave hears of it.
  self->send(r, invite_req{"general", conn(3), "carol", "9", "dave"});
  self->send(r, invite_req{"general", conn(1), "alice", "10", "dave"});
  sched.run();
  EXPECT_EQ(reply("9")["code"], "forbidden");
  EXPECT_EQ(reply("10"), json::parse(R"({"type":"ack","id":10,"room":"general"})"));
  ASSERT_FALSE(rec(reg).user_delivers.empty());
  auto& told = rec(reg).user_delivers.back();
  EXPECT_EQ(told.users, std::vector<std::string>{"dave"});
  EXPECT_EQ(parse(told.frame), json::parse(R"({"type":"invited","room":"general","by":"alice"})"));
  self->send(r, make_join("general", outsider, member_info{"dave", "Dave"}, "11"));
  sched.run();
  auto j = last_join_frames(gw).back();
  EXPECT_EQ(j["id"], 11);
  EXPECT_EQ(j["role"], "member");
  EXPECT_EQ(j["settings"]["private"], true);
  // Mentions reach members only.
  auto m = make_send("general", conn(1), member_info{"alice", "Alice"}, "12", "hi @dave @zed");
  m.mentions = {"dave", "zed"};
  auto before = rec(reg).user_delivers.size();
  self->send(r, std::move(m));
  sched.run();
  ASSERT_EQ(rec(reg).user_delivers.size(), before + 1);
  EXPECT_EQ(rec(reg).user_delivers.back().users, std::vector<std::string>{"dave"});
}

// --- protocol v2: moderation (role, kick, ban, mute and their lifting) ----------------

struct RoomModerationTest : RoomSettingsTest {
  void act(uint64_t c, const std::string& by, const std::string& action, const std::string& user,
           const std::string& id, uint64_t seconds = 0, const std::string& reason = "",
           member_role role = member_role::member) {
    auto req = make_send("general", conn(c), member_info{by, display(by)}, id, "");
    req.kind = event_kind::moderation;
    req.text = action;
    req.user = user;
    req.seconds = seconds;
    req.reason = reason;
    req.role = role;
    self->send(r, std::move(req));
  }
  std::vector<json> told(const std::string& user) {
    std::vector<json> out;
    for (auto& d : rec(reg).user_delivers)
      if (d.users == std::vector<std::string>{user}) out.push_back(parse(d.frame));
    return out;
  }
};

TEST_F(RoomModerationTest, WhoMayActOnWhomAndKicks) {
  auto& st = state_of<room_state>(r);
  act(3, "carol", "kick", "bob", "1");                      // a member
  act(2, "bob", "kick", "alice", "2");                      // a moderator on the owner
  act(2, "bob", "role", "carol", "3", 0, "", member_role::moderator);  // only the owner gives roles
  act(2, "bob", "kick", "bob", "4");                        // not on yourself
  act(2, "bob", "kick", "carol", "5", 0, "spam");
  sched.run();
  EXPECT_EQ(reply("1")["code"], "forbidden");
  EXPECT_EQ(reply("2")["code"], "forbidden");
  EXPECT_EQ(reply("3")["code"], "forbidden");
  EXPECT_EQ(reply("4")["code"], "bad_request");
  EXPECT_EQ(reply("5")["seq"], 1);
  auto ev = delivered(gw, "moderation");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0]["action"], "kick");
  EXPECT_EQ(ev[0]["by"], "bob");
  EXPECT_EQ(ev[0]["user"], "carol");
  EXPECT_EQ(ev[0]["reason"], "spam");
  // carol is out: her membership, her connection, and she was told.
  EXPECT_EQ(st.memberships.count("carol"), 0u);
  EXPECT_EQ(st.members.users.count("carol"), 0u);
  ASSERT_EQ(told("carol").size(), 1u);
  EXPECT_EQ(told("carol")[0], json::parse(R"({"type":"kicked","room":"general","by":"bob","reason":"spam"})"));
  // A kick is no ban: she may join the public room again.
  join(r, gw, 3, "carol", "6");
  sched.run();
  EXPECT_EQ(last_join_frames(gw).back()["id"], 6);
  // The owner hands ownership on and stays a moderator.
  act(1, "alice", "role", "carol", "7", 0, "", member_role::owner);
  sched.run();
  EXPECT_EQ(reply("7")["seq"], 2);
  EXPECT_EQ(st.memberships.at("carol").role, member_role::owner);
  EXPECT_EQ(st.memberships.at("alice").role, member_role::moderator);
  EXPECT_EQ(delivered(gw, "moderation").back()["role"], "owner");
  // What changes nothing stores nothing.
  act(3, "carol", "kick", "nobody", "8");
  act(3, "carol", "unban", "bob", "9");
  act(3, "carol", "unmute", "bob", "10");
  sched.run();
  for (auto id : {"8", "9", "10"}) EXPECT_EQ(reply(id)["noop"], true) << id;
  EXPECT_EQ(st.last_seq, 2u);
}

TEST_F(RoomModerationTest, BansAndMutesHoldEverywhereAndAreStored) {
  act(1, "alice", "ban", "carol", "1", 3600, "rude");
  sched.run();
  auto ban = reply("1");
  ASSERT_EQ(ban["seq"], 1) << ban;
  auto ev = delivered(gw, "moderation").back();
  EXPECT_GT(ev["until"].get<int64_t>(), now_ms() + 3500 * 1000);
  auto kicked = told("carol").back();
  EXPECT_EQ(kicked["ban"], true);
  EXPECT_EQ(kicked["until"], ev["until"]);
  // Refused at join and at every read while it holds.
  join(r, gw, 3, "carol", "2");
  auto h = make_history("general", conn(3), "3", 0, 10);
  h.user = "carol";
  self->send(r, h);
  self->send(r, search_req{"general", conn(3), "4", "x", 0, 10, "carol"});
  sched.run();
  EXPECT_EQ(reply("2")["code"], "forbidden");
  EXPECT_EQ(reply("3")["code"], "forbidden");
  EXPECT_EQ(reply("4")["code"], "forbidden");
  // Stored with the event: a restarted room still refuses her.
  room_snapshot snap;
  std::string err;
  ASSERT_TRUE(backend->load_room("general", 0, 0, snap, err)) << err;
  ASSERT_EQ(snap.restrictions.size(), 1u);
  EXPECT_EQ(snap.restrictions[0].user, "carol");
  EXPECT_EQ(snap.restrictions[0].ban_until, ev["until"].get<int64_t>());
  act(1, "alice", "unban", "carol", "5");
  sched.run();
  EXPECT_EQ(reply("5")["seq"], 2);
  EXPECT_TRUE(state_of<room_state>(r).restrictions.empty());
  ASSERT_TRUE(backend->load_room("general", 0, 0, snap, err)) << err;
  EXPECT_TRUE(snap.restrictions.empty());
  join(r, gw, 3, "carol", "6");
  sched.run();
  EXPECT_EQ(last_join_frames(gw).back()["id"], 6);
  // A mute (until lifted): she reads, but cannot send, react or type.
  say(r, gw, 1, "alice", "hello", "7");
  act(2, "bob", "mute", "carol", "8");
  sched.run();
  say(r, gw, 3, "carol", "let me", "9");
  react(3, "carol", 3, "👍", true, "10");
  self->send(r, typing_req{"general", conn(3), "carol", "Carol"});
  sched.run();
  EXPECT_EQ(reply("9")["code"], "forbidden");
  EXPECT_EQ(reply("10")["code"], "forbidden");
  for (auto& d : rec(gw).delivers) EXPECT_NE(parse(d.frame)["type"], "typing");
  EXPECT_FALSE(delivered(gw, "moderation").back().contains("until"));  // until lifted
  act(2, "bob", "unmute", "carol", "11");
  say(r, gw, 3, "carol", "thanks", "12");
  sched.run();
  EXPECT_TRUE(reply("12").contains("seq"));
}

TEST_F(RoomModerationTest, NobodyActsOnAServerAdmin) {
  auto j = make_join("general", conn(4), member_info{"root", "Root"}, "1");
  j.admin = true;
  self->send(r, j);
  sched.run();
  act(1, "alice", "ban", "root", "2");
  sched.run();
  EXPECT_EQ(reply("2")["code"], "forbidden");
}
