// The user registry under CAF's deterministic test coordinator: gateways are
// recorder actors that keep every close_conn / conns_deliver they receive.
#include "tests/support/caf_gtest.hpp"  // first: bridges caf/test/dsl.hpp to gtest

#include <algorithm>
#include <string>
#include <vector>

#include "actors/user_registry.hpp"
#include "messages/clock.hpp"
#include "tests/support/chat_fakes.hpp"

using namespace caf;
using namespace chat;
using namespace chat_test;

namespace {

struct UserRegistryTest : ::testing::Test, test_coordinator_fixture<test_config> {
  std::shared_ptr<store_backend> backend{make_memory_backend(0)};
  std::shared_ptr<ban_list> bans = std::make_shared<ban_list>();
  store_actor store;
  actor reg;
  std::vector<actor> spawned;

  UserRegistryTest() {
    store = spawn_store(sys, backend, store_config{}, /*detached=*/false);
    sched.run();
    reg = spawn_registry(3);
  }

  ~UserRegistryTest() override {
    for (auto& a : spawned) anon_send_exit(a, exit_reason::kill);
    anon_send_exit(store, exit_reason::kill);
    sched.run();
  }

  actor spawn_registry(size_t cap) {
    auto r = sys.spawn(user_registry_impl, cap, registry_deps{bans, store});
    spawned.push_back(r);
    sched.run();
    return r;
  }

  actor gateway() {
    auto g = sys.spawn(recorder_impl, std::string("recorder"));
    spawned.push_back(g);
    sched.run();
    return g;
  }

  void online(const std::string& user, const actor& gw, uint64_t conn, int64_t since = 0) {
    user_online on;
    on.user = user;
    on.conn = conn_ref{as_gw(gw), conn};
    on.since_ms = since;
    self->send(reg, on);
  }
  void offline(const std::string& user, const actor& gw, uint64_t conn) {
    user_offline off;
    off.user = user;
    off.conn = conn_ref{as_gw(gw), conn};
    self->send(reg, off);
  }

  // How many connections the registry holds for a user (asked through the actor).
  uint64_t conns_of(const std::string& user) {
    uint64_t n = 999;
    auto h = self->request(reg, infinite, get_atom_v, user);
    sched.run();
    h.receive([&](uint64_t x) { n = x; }, [&](error& e) { ADD_FAILURE() << to_string(e); });
    return n;
  }

  std::vector<uint64_t> conn_ids(const std::string& user) {
    std::vector<uint64_t> out;
    auto& users = state_of<user_registry_state>(reg).users;
    auto it = users.find(user);
    if (it != users.end())
      for (auto& e : it->second) out.push_back(e.conn.id);
    return out;
  }

  user_registry_state& st() { return state_of<user_registry_state>(reg); }
};

TEST_F(UserRegistryTest, PerUserCapClosesTheOldestConnection) {
  auto gw1 = gateway();
  auto gw2 = gateway();
  online("alice", gw1, 1);
  online("alice", gw1, 2);
  online("alice", gw2, 3);
  online("bob", gw1, 10);
  sched.run();
  EXPECT_TRUE(rec(gw1).closes.empty());  // three is the cap, not above it
  EXPECT_EQ(conns_of("alice"), 3u);

  online("alice", gw2, 4);  // the fourth: the oldest (1 on gw1) goes
  sched.run();
  ASSERT_EQ(rec(gw1).closes.size(), 1u);
  EXPECT_EQ(rec(gw1).closes[0].conn, 1u);
  EXPECT_EQ(rec(gw1).closes[0].code, 4009);
  EXPECT_FALSE(rec(gw1).closes[0].reason.empty());
  EXPECT_TRUE(rec(gw2).closes.empty());
  EXPECT_EQ(conn_ids("alice"), (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(conns_of("bob"), 1u);  // other users are not affected

  online("alice", gw2, 5);  // next oldest: 2 on gw1
  sched.run();
  ASSERT_EQ(rec(gw1).closes.size(), 2u);
  EXPECT_EQ(rec(gw1).closes[1].conn, 2u);
  EXPECT_EQ(rec(gw1).closes[1].code, 4009);
  EXPECT_EQ(conn_ids("alice"), (std::vector<uint64_t>{3, 4, 5}));
  // gw1 still has bob, gw2 has three of alice's: both still watched.
  EXPECT_EQ(st().gateways.at(as_gw(gw1)), 1u);
  EXPECT_EQ(st().gateways.at(as_gw(gw2)), 3u);
}

TEST_F(UserRegistryTest, CapOfOneReplacesThePreviousConnection) {
  reg = spawn_registry(1);
  auto gw = gateway();
  online("alice", gw, 1);
  online("alice", gw, 2);
  sched.run();
  ASSERT_EQ(rec(gw).closes.size(), 1u);
  EXPECT_EQ(rec(gw).closes[0].conn, 1u);
  EXPECT_EQ(rec(gw).closes[0].code, 4009);
  EXPECT_EQ(conn_ids("alice"), (std::vector<uint64_t>{2}));
}

TEST_F(UserRegistryTest, UserDeliverSendsOneMessagePerGateway) {
  auto gw1 = gateway();
  auto gw2 = gateway();
  auto gw3 = gateway();
  online("alice", gw1, 1);
  online("alice", gw1, 2);
  online("alice", gw2, 3);
  online("bob", gw1, 4);
  online("carol", gw3, 5);
  sched.run();

  self->send(reg, make_user_deliver({"alice", "bob"}, "dm:alice:bob", 7, "{\"type\":\"message\"}"));
  sched.run();
  ASSERT_EQ(rec(gw1).conns_delivers.size(), 1u);  // one message for three connections
  auto& d1 = rec(gw1).conns_delivers[0];
  auto ids = d1.conns;
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 4}));
  EXPECT_EQ(d1.room, "dm:alice:bob");
  EXPECT_EQ(d1.seq, 7u);
  EXPECT_EQ(d1.frame, "{\"type\":\"message\"}");
  ASSERT_EQ(rec(gw2).conns_delivers.size(), 1u);
  EXPECT_EQ(rec(gw2).conns_delivers[0].conns, (std::vector<uint64_t>{3}));
  EXPECT_TRUE(rec(gw3).conns_delivers.empty());  // carol is not addressed

  // An offline user is skipped; nobody online: nothing is sent.
  self->send(reg, make_user_deliver({"dave"}, "dm:alice:dave", 1, "x"));
  sched.run();
  EXPECT_EQ(rec(gw1).conns_delivers.size(), 1u);
  EXPECT_EQ(rec(gw2).conns_delivers.size(), 1u);
  EXPECT_TRUE(rec(gw3).conns_delivers.empty());

  // After going offline a connection gets nothing more.
  offline("alice", gw2, 3);
  self->send(reg, make_user_deliver({"alice"}, "dm:alice:bob", 8, "y"));
  sched.run();
  EXPECT_EQ(rec(gw2).conns_delivers.size(), 1u);
  ASSERT_EQ(rec(gw1).conns_delivers.size(), 2u);
  EXPECT_EQ(rec(gw1).conns_delivers[1].conns, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(st().gateways.count(as_gw(gw2)), 0u);  // no connection there any more
}

// A server-wide ban closes every connection of the user with 4003, is stored,
// refuses the user's next registration, and comes back in a new registry from
// the store (a restart); a lifted one lets them in again. An expired ban (its
// time passed) counts for nothing.
TEST_F(UserRegistryTest, ServerWideBanClosesConnectionsIsStoredAndLifts) {
  auto gw1 = gateway();
  auto gw2 = gateway();
  online("alice", gw1, 1);
  online("alice", gw2, 2);
  online("bob", gw1, 3);
  sched.run();
  bool stored = false;
  auto h = self->request(reg, infinite, user_ban{"alice", user_ban::forever, "spam", false});
  sched.run();
  h.receive([&](bool ok) { stored = ok; }, [&](error& e) { ADD_FAILURE() << to_string(e); });
  EXPECT_TRUE(stored);
  ASSERT_EQ(rec(gw1).closes.size(), 1u);
  EXPECT_EQ(rec(gw1).closes[0].code, 4003);
  EXPECT_EQ(rec(gw1).closes[0].reason, banned_reason);
  ASSERT_EQ(rec(gw2).closes.size(), 1u);
  EXPECT_EQ(conns_of("alice"), 0u);
  EXPECT_EQ(conns_of("bob"), 1u);
  ASSERT_TRUE(bans->active("alice", now_ms()));
  EXPECT_EQ(bans->active("alice", now_ms())->reason, "spam");
  std::vector<user_ban> in_store;
  std::string err;
  ASSERT_TRUE(backend->user_bans(in_store, err)) << err;
  EXPECT_EQ(in_store, (std::vector<user_ban>{{"alice", user_ban::forever, "spam", false}}));

  // A connection that registers anyway (said hello elsewhere) is closed.
  online("alice", gw2, 4);
  sched.run();
  ASSERT_EQ(rec(gw2).closes.size(), 2u);
  EXPECT_EQ(rec(gw2).closes[1].conn, 4u);
  EXPECT_EQ(rec(gw2).closes[1].code, 4003);
  EXPECT_EQ(conns_of("alice"), 0u);

  // A restart: a new registry with an empty list reads the store.
  bans = std::make_shared<ban_list>();
  reg = spawn_registry(3);
  EXPECT_TRUE(bans->active("alice", now_ms()));

  // Lifted: stored as gone, and alice may connect again.
  self->send(reg, user_ban{"alice", 0, "", true});
  sched.run();
  EXPECT_FALSE(bans->active("alice", now_ms()));
  ASSERT_TRUE(backend->user_bans(in_store, err)) << err;
  EXPECT_TRUE(in_store.empty());
  online("alice", gw1, 5);
  sched.run();
  EXPECT_EQ(conns_of("alice"), 1u);
  EXPECT_EQ(rec(gw1).closes.size(), 1u);

  // A ban whose time has passed is none; one still running is.
  bans->apply(user_ban{"carol", 1000, "", false});
  EXPECT_FALSE(bans->active("carol", 1000));
  EXPECT_TRUE(bans->active("carol", 999));
  EXPECT_TRUE(bans->all(1000).empty());
  EXPECT_EQ(bans->all(999).size(), 1u);
}

TEST_F(UserRegistryTest, KickUserClosesEveryConnection) {
  auto gw1 = gateway();
  auto gw2 = gateway();
  online("alice", gw1, 1);
  online("alice", gw2, 2);
  online("bob", gw1, 3);
  sched.run();

  uint64_t closed = 999;
  auto h = self->request(reg, infinite, make_kick("alice", 4003, "banned"));
  sched.run();
  h.receive([&](uint64_t n) { closed = n; }, [&](error& e) { ADD_FAILURE() << to_string(e); });
  EXPECT_EQ(closed, 2u);
  ASSERT_EQ(rec(gw1).closes.size(), 1u);
  EXPECT_EQ(rec(gw1).closes[0].conn, 1u);
  EXPECT_EQ(rec(gw1).closes[0].code, 4003);
  EXPECT_EQ(rec(gw1).closes[0].reason, "banned");
  ASSERT_EQ(rec(gw2).closes.size(), 1u);
  EXPECT_EQ(rec(gw2).closes[0].conn, 2u);
  EXPECT_EQ(rec(gw2).closes[0].code, 4003);
  EXPECT_EQ(conns_of("alice"), 0u);
  EXPECT_EQ(conns_of("bob"), 1u);
  EXPECT_EQ(st().gateways.count(as_gw(gw2)), 0u);

  // Kicked connections get no more direct messages.
  self->send(reg, make_user_deliver({"alice"}, "dm:alice:bob", 1, "x"));
  sched.run();
  EXPECT_TRUE(rec(gw1).conns_delivers.empty());
  EXPECT_TRUE(rec(gw2).conns_delivers.empty());

  // Kicking someone who is not online closes nothing.
  auto h2 = self->request(reg, infinite, make_kick("nobody", 4003, ""));
  sched.run();
  h2.receive([&](uint64_t n) { closed = n; }, [&](error& e) { ADD_FAILURE() << to_string(e); });
  EXPECT_EQ(closed, 0u);
}

TEST_F(UserRegistryTest, GatewayDeathDropsItsConnections) {
  auto gw1 = gateway();
  auto gw2 = gateway();
  online("alice", gw1, 1);
  online("alice", gw2, 2);
  online("bob", gw2, 3);
  sched.run();

  anon_send_exit(gw2, exit_reason::kill);
  sched.run();
  EXPECT_EQ(conn_ids("alice"), (std::vector<uint64_t>{1}));
  EXPECT_EQ(conns_of("bob"), 0u);
  EXPECT_EQ(st().users.count("bob"), 0u);
  EXPECT_EQ(st().gateways.count(as_gw(gw2)), 0u);
  EXPECT_EQ(st().gateways.count(as_gw(gw1)), 1u);

  // The cap counts only live connections now: two more fit before an eviction.
  online("alice", gw1, 4);
  online("alice", gw1, 5);
  sched.run();
  EXPECT_TRUE(rec(gw1).closes.empty());
  online("alice", gw1, 6);
  sched.run();
  ASSERT_EQ(rec(gw1).closes.size(), 1u);
  EXPECT_EQ(rec(gw1).closes[0].conn, 1u);

  self->send(reg, make_user_deliver({"alice", "bob"}, "dm:alice:bob", 2, "z"));
  sched.run();
  ASSERT_EQ(rec(gw1).conns_delivers.size(), 1u);
  EXPECT_EQ(rec(gw1).conns_delivers[0].conns, (std::vector<uint64_t>{4, 5, 6}));
}

TEST_F(UserRegistryTest, OfflineOfTheLastConnectionForgetsTheGateway) {
  auto gw = gateway();
  online("alice", gw, 1);
  online("bob", gw, 2);
  sched.run();
  EXPECT_EQ(st().gateways.at(as_gw(gw)), 2u);
  offline("alice", gw, 1);
  offline("alice", gw, 1);  // twice: harmless
  offline("bob", gw, 99);   // unknown connection: harmless
  sched.run();
  EXPECT_EQ(st().gateways.at(as_gw(gw)), 1u);
  offline("bob", gw, 2);
  sched.run();
  EXPECT_TRUE(st().users.empty());
  EXPECT_TRUE(st().gateways.empty());
  // No longer watched: its death changes nothing and is not reported.
  anon_send_exit(gw, exit_reason::kill);
  sched.run();
  EXPECT_TRUE(st().users.empty());
}

}  // namespace
