// Three real chatd processes on 127.0.0.1 as one service: cross-node order,
// a node killed with SIGKILL, restarted on its store, and recovery.
#include <gtest/gtest.h>

#include <signal.h>

#include <boost/asio.hpp>
#include <fstream>
#include <thread>

#include "actors/cluster/routes.hpp"
#include "messages/validate.hpp"
#include "tests/integration/chatd_process.hpp"
#include "tests/integration/cluster_fixture.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {

const std::vector<std::string>& names = cluster_names();

}  // namespace

TEST(Cluster, PlacementIsDeterministicAndSpread) {
  std::vector<int> count(3);
  for (int i = 0; i < 3000; ++i) ++count[chat::rendezvous_home("room" + std::to_string(i), names)];
  for (int c : count) EXPECT_GT(c, 800);  // roughly a third each
  EXPECT_EQ(chat::rendezvous_home("general", names), chat::rendezvous_home("general", names));
  // Removing a node only moves the rooms that lived on it.
  std::vector<std::string> two{"n1", "n2"};
  for (int i = 0; i < 1000; ++i) {
    auto room = "r" + std::to_string(i);
    auto home = chat::rendezvous_home(room, names);
    if (home != 2) {
      EXPECT_EQ(chat::rendezvous_home(room, two), home);
    }
  }
}

TEST(Cluster, ThreeNodesOneServiceSurvivesANodeLoss) {
  cluster_fixture cl;
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(cl.nodes[i]->ok()) << cl.nodes[i]->log();
    ASSERT_TRUE(cl.ready(i)) << cl.nodes[i]->log();
  }
  auto lost_room = room_homed_on(2, "lost-");  // lives on n3
  auto safe_room = room_homed_on(0, "safe-");  // lives on n1
  std::vector<std::unique_ptr<ws_client>> cs;
  for (size_t i = 0; i < 3; ++i) {
    cs.push_back(std::make_unique<ws_client>());
    auto w = cs[i]->hello_name(cl.http[i], "u" + std::to_string(i));
    ASSERT_TRUE(is_type(w, "welcome")) << w;
    EXPECT_EQ(w["node"], names[i]);
  }
  std::string epoch;
  for (auto& c : cs) {
    auto j = c->request({{"type", "join"}, {"room", lost_room}}, 2);
    ASSERT_TRUE(j && is_type(*j, "joined")) << (j ? j->dump() : "timeout");
    epoch = (*j)["epoch"];
    ASSERT_TRUE(c->request({{"type", "join"}, {"room", safe_room}}, 3));
  }
  // Concurrent senders on two nodes: every receiver sees one gapless order.
  const int per_sender = 100;
  for (int k = 0; k < per_sender; ++k)
    for (size_t s = 0; s < 2; ++s)
      cs[s]->send({{"type", "send"}, {"room", safe_room}, {"text", std::to_string(k)}});
  for (auto& c : cs) {
    uint64_t last = 0;
    std::map<std::string, int> per_from;
    while (last < 2 * per_sender) {
      auto m = c->recv(10s);
      ASSERT_TRUE(m) << "after seq " << last;
      if (!is_type(*m, "message") || (*m)["room"] != safe_room) continue;
      ASSERT_EQ((*m)["seq"].get<uint64_t>(), last + 1);
      last = (*m)["seq"];
      ASSERT_EQ(std::stoi((*m)["text"].get<std::string>()), per_from[(*m)["from"]]++);
    }
  }
  auto ack = cs[0]->request({{"type", "send"}, {"room", lost_room}, {"text", "before"}}, 10);
  ASSERT_TRUE(ack && is_type(*ack, "ack"));
  uint64_t lost_seq = (*ack)["seq"];

  cl.nodes[2]->kill9();
  // Rooms homed on n3 are lost to their members elsewhere, and the member that
  // was connected through n3 leaves the others' rooms; the two events may come
  // in either order, so wait for both in one pass.
  for (size_t i = 0; i < 2; ++i) {
    bool lost = false, left = false;
    auto seen = cs[i]->recv_until(
        [&](const json& x) {
          if (x.value("code", "") == "unavailable" && x.value("room", "") == lost_room) lost = true;
          if (is_type(x, "member_left") && x["room"] == safe_room) {
            EXPECT_EQ(x["user"], "u2");
            left = true;
          }
          return lost && left;
        },
        10s);
    ASSERT_TRUE(seen) << "node " << i << ": lost room reported " << lost << ", member_left " << left;
  }
  // ...and joining a room whose home is down is `unavailable` until it returns.
  auto j = cs[0]->request({{"type", "join"}, {"room", lost_room}}, 11);
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["code"], "unavailable");
  // The safe room keeps working.
  ASSERT_TRUE(is_type(*cs[1]->request({{"type", "send"}, {"room", safe_room}, {"text", "x"}}, 12), "ack"));

  cl.start(2);
  ASSERT_TRUE(cl.nodes[2]->ok()) << cl.nodes[2]->log();
  ASSERT_TRUE(cl.ready(0) && cl.ready(2));
  // Recovery after the restart: nothing acked was lost, seq continues.
  cs[0]->send({{"type", "join"}, {"id", 13}, {"room", lost_room}, {"since", 0}, {"epoch", epoch}});
  uint64_t expect = 1;
  for (;;) {
    auto m = cs[0]->recv(10s);
    ASSERT_TRUE(m);
    if (is_type(*m, "message") && (*m)["room"] == lost_room) {
      ASSERT_EQ((*m)["seq"], expect++);
    }
    if (is_type(*m, "joined")) {
      EXPECT_EQ((*m)["recovered"], true);
      EXPECT_EQ((*m)["seq"], lost_seq);
      break;
    }
    ASSERT_FALSE(m->value("code", "") == "unavailable") << *m;
  }
  EXPECT_EQ(expect, lost_seq + 1);
  auto after = cs[0]->request({{"type", "send"}, {"room", lost_room}, {"text", "after"}}, 14);
  ASSERT_TRUE(after && is_type(*after, "ack"));
  EXPECT_EQ((*after)["seq"], lost_seq + 1);
}


// Item: every request is answered. A join to a node that is alive on TCP but
// answers nothing (SIGSTOP) gets `unavailable` within the 5 s bound (at once
// when the node is declared down, 2 s of silence), and so does the send held
// behind it; after SIGCONT the same join succeeds.
TEST(Cluster, JoinToAStoppedPeerIsAnsweredWithinTheBound) {
  cluster_fixture cl;
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cl.nodes[i]->ok() && cl.ready(i)) << cl.nodes[i]->log();
  auto room = room_homed_on(2, "stopped-");
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_name(cl.http[0], "alice"), "welcome"));
  ASSERT_EQ(::kill(cl.nodes[2]->pid(), SIGSTOP), 0);
  auto t0 = std::chrono::steady_clock::now();
  c.send({{"type", "join"}, {"id", 1}, {"room", room}});
  c.send({{"type", "send"}, {"id", 2}, {"room", room}, {"text", "held"}});
  bool join_failed = false, send_failed = false;
  auto got = c.recv_until(
      [&](const json& x) {
        if (x.value("code", "") == "unavailable" && x.value("id", 0) == 1) join_failed = true;
        if (x.value("code", "") == "unavailable" && x.value("id", 0) == 2) send_failed = true;
        return join_failed && send_failed;
      },
      8s);
  auto waited = std::chrono::steady_clock::now() - t0;
  ::kill(cl.nodes[2]->pid(), SIGCONT);
  ASSERT_TRUE(got) << "join answered " << join_failed << ", send answered " << send_failed;
  EXPECT_LE(waited, 6s);
  std::cout << "[ measure  ] join to a stopped peer answered after "
            << std::chrono::duration<double>(waited).count() << " s\n";
  ASSERT_TRUE(cl.ready(0)) << "n3 never came back after SIGCONT";
  auto j = c.request({{"type", "join"}, {"room", room}}, 3, 10s);
  ASSERT_TRUE(j);
  EXPECT_TRUE(is_type(*j, "joined")) << *j;
}

// Item: transparent re-join. Members on n1 and n2 of a room homed on n3 see
// no error and no gap when n3 is killed and restarted on its database within
// the re-join bound: their gateways join it again with `since`.
TEST(Cluster, RoomsRejoinTransparentlyWhenTheirHomeRestarts) {
  cluster_fixture cl;
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cl.nodes[i]->ok() && cl.ready(i)) << cl.nodes[i]->log();
  auto room = room_homed_on(2, "rejoin-");
  std::vector<std::unique_ptr<ws_client>> cs;
  for (size_t i = 0; i < 2; ++i) {
    cs.push_back(std::make_unique<ws_client>());
    ASSERT_TRUE(is_type(cs[i]->hello_name(cl.http[i], "m" + std::to_string(i)), "welcome"));
    auto j = cs[i]->request({{"type", "join"}, {"room", room}}, 1);
    ASSERT_TRUE(j && is_type(*j, "joined")) << (j ? j->dump() : "timeout");
  }
  for (int k = 1; k <= 3; ++k) {
    auto a = cs[0]->request({{"type", "send"}, {"room", room}, {"text", std::to_string(k)}}, 10 + k);
    ASSERT_TRUE(a && is_type(*a, "ack"));
  }
  for (auto& c : cs) {
    std::string err;
    ASSERT_TRUE(recv_no_error(*c, [](const json& x) { return x.value("seq", 0) == 3; }, 5s, err)) << err;
  }
  auto t0 = std::chrono::steady_clock::now();
  cl.nodes[2]->kill9();
  cl.start(2);
  ASSERT_TRUE(cl.nodes[2]->ok()) << cl.nodes[2]->log();
  // n2's member sends as soon as the room takes sends again (retrying a
  // refusal with the same idempotency key); it must become seq 4.
  std::optional<json> ack;
  while (std::chrono::steady_clock::now() - t0 < 10s) {
    ack = cs[1]->request(
        {{"type", "send"}, {"room", room}, {"text", "after"}, {"idem_key", "after-1"}}, 20, 6s);
    if (ack && is_type(*ack, "ack")) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(ack && is_type(*ack, "ack")) << (ack ? ack->dump() : "timeout");
  EXPECT_EQ((*ack)["seq"], 4);
  auto outage = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ measure  ] room accepted sends again " << outage << " s after kill -9 + restart\n";
  // n1's member: seq 4 next, no error, no joined frame it did not ask for.
  std::string err;
  auto m = recv_no_error(*cs[0], [](const json& x) { return is_type(x, "message") || is_type(x, "joined"); },
                         10s, err);
  ASSERT_TRUE(m) << err;
  EXPECT_TRUE(is_type(*m, "message")) << *m;
  EXPECT_EQ((*m)["seq"], 4);
}

// Item: soft state follows the nodes. A user homed on n3, connected to n1 and
// n2, gets direct messages on both connections while n3 is down (the registry
// moved) and after it is back (the gateways registered again).
TEST(Cluster, DirectMessagesReachEveryConnectionAcrossTheUsersHomeRestart) {
  cluster_fixture cl;
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cl.nodes[i]->ok() && cl.ready(i)) << cl.nodes[i]->log();
  auto x = first_name("x", [](const std::string& n) { return chat::rendezvous_home(n, names) == 2; });
  auto y = first_name("y", [&](const std::string& n) {
    return chat::rendezvous_home(chat::dm_room_name(x, n), names) == 0;
  });
  ws_client x1, x2, sender;
  ASSERT_TRUE(is_type(x1.hello_name(cl.http[0], x), "welcome"));
  ASSERT_TRUE(is_type(x2.hello_name(cl.http[1], x), "welcome"));
  ASSERT_TRUE(is_type(sender.hello_name(cl.http[0], y), "welcome"));
  auto dm_reaches_both = [&](const std::string& text, int id) {
    auto a = sender.request({{"type", "dm"}, {"to", x}, {"text", text}}, id, 5s);
    if (!a || !is_type(*a, "ack")) {
      ADD_FAILURE() << (a ? a->dump() : "no ack");
      return;
    }
    for (auto* c : {&x1, &x2}) {
      auto m = c->recv_until([&](const json& f) { return f.value("text", "") == text; }, 5s);
      EXPECT_TRUE(m) << text << " missed a connection of " << x;
    }
  };
  dm_reaches_both("before", 1);
  cl.nodes[2]->kill9();
  // n1 sees n3 down (its registry for x moves to a live node meanwhile).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  std::string body;
  while (std::chrono::steady_clock::now() < deadline && http_get(cl.http[0], "/readyz?full", body) == 200)
    std::this_thread::sleep_for(20ms);
  ASSERT_NE(http_get(cl.http[0], "/readyz?full", body), 200) << "n1 never saw n3 down";
  EXPECT_EQ(http_get(cl.http[0], "/readyz", body), 200) << "one node down must not unready the others: " << body;
  dm_reaches_both("while-down", 2);
  cl.start(2);
  ASSERT_TRUE(cl.nodes[2]->ok() && cl.ready(0) && cl.ready(1) && cl.ready(2));
  // The gateways re-register on peer_up; give the registration a bounded moment.
  auto d2 = std::chrono::steady_clock::now() + 5s;
  for (int id = 3;; ++id) {
    auto text = "after-" + std::to_string(id);
    auto a = sender.request({{"type", "dm"}, {"to", x}, {"text", text}}, id, 5s);
    ASSERT_TRUE(a && is_type(*a, "ack"));
    int got = 0;
    for (auto* c : {&x1, &x2})
      if (c->recv_until([&](const json& f) { return f.value("text", "") == text; }, 1s)) ++got;
    if (got == 2) break;
    ASSERT_LT(std::chrono::steady_clock::now(), d2) << "after the restart a connection never got DMs";
  }
}

// Item: cluster sanity. A node whose cluster file differs is refused by its
// peers (in /readyz and /metrics); a node whose remoting port is taken exits
// non-zero with the reason instead of hanging.
TEST(Cluster, MismatchedClusterFileIsRefusedAndFailedStartsExit) {
  cluster_fixture cl;
  auto other = cl.dir.path() + "/other.json";
  cl.write(other, /*differ=*/true);
  cl.start(0);
  cl.start(1);
  cl.start(2, other);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cl.nodes[i]->ok()) << cl.nodes[i]->log();
  std::string body;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  bool refused = false;
  while (!refused && std::chrono::steady_clock::now() < deadline) {
    http_get(cl.http[0], "/readyz", body);
    refused = body.find("\"refused\"") != std::string::npos;
    if (!refused) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(refused) << body;
  auto j = json::parse(body);
  EXPECT_EQ(j["status"], "ready") << "n1 and n2 are a majority";
  EXPECT_EQ(j["peers"][2]["up"], false);
  EXPECT_EQ(j["peers"][1]["up"], true);
  EXPECT_NE(http_get(cl.http[0], "/readyz?full", body), 200);
  http_get(cl.http[0], "/metrics", body);
  EXPECT_NE(body.find("chat_cluster_peer_refused{peer=\"n3\"} 1"), std::string::npos);
  EXPECT_NE(cl.nodes[0]->log().find("peer_refused"), std::string::npos);

  // A second n1 on the same remoting port: exits 1 at once, saying why.
  child_process dup({CHATD_PATH, "--listen", "127.0.0.1:0", "--cluster", cl.cfg, "--node", "n1",
                     "--allow-anonymous", "--store", "memory"});
  auto rc = dup.wait(10s);
  EXPECT_NE(rc, 0);
  EXPECT_NE(rc, -1) << "it hung";
  EXPECT_NE(dup.err().find("cannot publish"), std::string::npos) << dup.err();
}
