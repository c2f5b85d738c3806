// The protocol table, row by row, against a real chatd on 127.0.0.1.
#include <gtest/gtest.h>

#include <set>

#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {


struct Basic : ::testing::Test {
  chatd_process server{{"--allow-anonymous", "--store", "memory", "--log-level", "warn",
                        "--rate", "1000", "--burst", "1000"}};
  void SetUp() override { ASSERT_TRUE(server.ok()) << server.log(); }
  void hello(ws_client& c, const std::string& name) {
    auto w = c.hello_name(server.port(), name);
    ASSERT_TRUE(is_type(w, "welcome")) << w;
  }
  json join(ws_client& c, const std::string& room, int id = 3) {
    auto j = c.request({{"type", "join"}, {"room", room}}, id);
    return j ? *j : json();
  }
};

}  // namespace

TEST_F(Basic, HelloWelcome) {
  ws_client c;
  auto w = c.hello_name(server.port(), "alice");
  ASSERT_EQ(w["type"], "welcome") << w;
  EXPECT_EQ(w["id"], 1);
  EXPECT_EQ(w["user"], "alice");
  EXPECT_EQ(w["name"], "alice");
  EXPECT_TRUE(w["session"].is_string());
  EXPECT_TRUE(w["node"].is_string());
  EXPECT_EQ(w["heartbeat"], 25);
}

TEST_F(Basic, StringIdsAreEchoed) {
  ws_client c;
  hello(c, "alice");
  c.send({{"type", "ping"}, {"id", "abc-1"}});
  auto p = c.recv();
  ASSERT_TRUE(p);
  EXPECT_EQ((*p)["type"], "pong");
  EXPECT_EQ((*p)["id"], "abc-1");
}

TEST_F(Basic, JoinSendReceiveLeave) {
  ws_client a, b;
  hello(a, "alice");
  hello(b, "bob");
  auto j = join(a, "general");
  EXPECT_EQ(j["type"], "joined");
  EXPECT_EQ(j["id"], 3);
  EXPECT_EQ(j["seq"], 0);
  EXPECT_TRUE(j["epoch"].is_string());
  EXPECT_EQ(j["member_count"], 1);
  EXPECT_EQ(j["members"], json::parse(R"([{"user":"alice","name":"alice"}])"));
  auto jb = join(b, "general");
  EXPECT_EQ(jb["member_count"], 2);
  auto mj = a.recv_until([](const json& x) { return is_type(x, "member_joined"); });
  ASSERT_TRUE(mj);
  EXPECT_EQ((*mj)["user"], "bob");
  EXPECT_EQ((*mj)["room"], "general");
  auto ack = a.request({{"type", "send"}, {"room", "general"}, {"text", "hi 👋"},
                        {"data", {{"k", "v"}}}}, 5);
  ASSERT_TRUE(ack);
  EXPECT_EQ((*ack)["type"], "ack");
  EXPECT_EQ((*ack)["room"], "general");
  EXPECT_EQ((*ack)["seq"], 1);
  EXPECT_TRUE((*ack)["ts"].is_number_integer());
  for (auto* c : {&a, &b}) {  // the sender receives its own message too
    auto m = c->recv_until([](const json& x) { return is_type(x, "message"); });
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)["text"], "hi 👋");
    EXPECT_EQ((*m)["from"], "alice");
    EXPECT_EQ((*m)["name"], "alice");
    EXPECT_EQ((*m)["seq"], 1);
    EXPECT_EQ((*m)["ts"], (*ack)["ts"]);
    EXPECT_EQ((*m)["data"], json({{"k", "v"}}));
  }
  auto left = b.request({{"type", "leave"}, {"room", "general"}}, 4);
  ASSERT_TRUE(left);
  EXPECT_EQ(*left, json::parse(R"({"type":"left","id":4,"room":"general"})"));
  auto ml = a.recv_until([](const json& x) { return is_type(x, "member_left"); });
  ASSERT_TRUE(ml);
  EXPECT_EQ((*ml)["user"], "bob");
  auto r = b.request({{"type", "send"}, {"room", "general"}, {"text", "x"}}, 6);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "not_member");
}

TEST_F(Basic, HistoryPagesOldestFirst) {
  ws_client a;
  hello(a, "alice");
  join(a, "hist");
  for (int i = 1; i <= 7; ++i)
    ASSERT_TRUE(a.request({{"type", "send"}, {"room", "hist"}, {"text", std::to_string(i)}}, 100 + i));
  auto h = a.request({{"type", "history"}, {"room", "hist"}, {"limit", 3}}, 6);
  ASSERT_TRUE(h);
  ASSERT_EQ((*h)["messages"].size(), 3u);
  EXPECT_EQ((*h)["messages"][0]["seq"], 5);
  EXPECT_EQ((*h)["messages"][2]["seq"], 7);
  EXPECT_EQ((*h)["more"], true);
  auto h2 = a.request({{"type", "history"}, {"room", "hist"}, {"before", 5}, {"limit", 50}}, 7);
  ASSERT_TRUE(h2);
  ASSERT_EQ((*h2)["messages"].size(), 4u);
  EXPECT_EQ((*h2)["messages"][0]["seq"], 1);
  EXPECT_EQ((*h2)["messages"][0]["text"], "1");
  EXPECT_EQ((*h2)["more"], false);
  auto bad = a.request({{"type", "history"}, {"room", "hist"}, {"limit", 101}}, 8);
  ASSERT_TRUE(bad);
  EXPECT_EQ((*bad)["code"], "bad_request");
}

TEST_F(Basic, PresenceTypingRooms) {
  ws_client a, a2, b;
  hello(a, "alice");
  hello(a2, "alice");  // a second connection of the same user
  hello(b, "bob");
  join(a, "team");
  join(b, "team");
  auto j2 = join(a2, "team");
  EXPECT_EQ(j2["member_count"], 2);  // users, not connections
  auto p = b.request({{"type", "presence"}, {"room", "team"}}, 7);
  ASSERT_TRUE(p);
  std::set<std::string> users;
  for (auto& m : (*p)["members"]) users.insert(m["user"]);
  EXPECT_EQ(users, (std::set<std::string>{"alice", "bob"}));
  a.send({{"type", "typing"}, {"room", "team"}});
  auto t = b.recv_until([](const json& x) { return is_type(x, "typing"); });
  ASSERT_TRUE(t);
  EXPECT_EQ((*t)["user"], "alice");
  EXPECT_EQ((*t)["room"], "team");
  auto rooms = a.request({{"type", "rooms"}}, 9);
  ASSERT_TRUE(rooms);
  EXPECT_EQ((*rooms)["rooms"], json::array({"team"}));
  // alice's first connection leaving is not alice leaving.
  a.request({{"type", "leave"}, {"room", "team"}}, 10);
  a2.close();
  auto ml = b.recv_until([](const json& x) { return is_type(x, "member_left"); });
  ASSERT_TRUE(ml);
  EXPECT_EQ((*ml)["user"], "alice");
  // typing never reached the typist's own other connection... and bob saw one member_joined for alice
}

TEST_F(Basic, DirectMessagesReachEveryConnectionOfBoth) {
  ws_client a1, a2, b;
  hello(a1, "alice");
  hello(a2, "alice");
  hello(b, "bob");
  auto ack = b.request({{"type", "dm"}, {"to", "alice"}, {"text", "psst"}}, 8);
  ASSERT_TRUE(ack);
  EXPECT_EQ((*ack)["type"], "ack");
  EXPECT_EQ((*ack)["room"], "dm:alice:bob");
  EXPECT_EQ((*ack)["seq"], 1);
  for (auto* c : {&a1, &a2, &b}) {
    auto m = c->recv_until([](const json& x) { return is_type(x, "message"); });
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)["room"], "dm:alice:bob");
    EXPECT_EQ((*m)["text"], "psst");
    EXPECT_EQ((*m)["from"], "bob");
  }
  auto h = a1.request({{"type", "history"}, {"room", "dm:alice:bob"}}, 9);
  ASSERT_TRUE(h);
  ASSERT_EQ((*h)["messages"].size(), 1u);
  ws_client c;
  hello(c, "carol");
  auto denied = c.request({{"type", "history"}, {"room", "dm:alice:bob"}}, 10);
  ASSERT_TRUE(denied);
  EXPECT_EQ((*denied)["code"], "forbidden");
  auto self_dm = c.request({{"type", "dm"}, {"to", "carol"}, {"text", "me"}}, 11);
  EXPECT_EQ((*self_dm)["code"], "bad_request");
}

TEST_F(Basic, RecoveryWithSinceAndEpoch) {
  ws_client a, b;
  hello(a, "alice");
  hello(b, "bob");
  auto j = join(b, "rec");
  std::string epoch = j["epoch"];
  join(a, "rec");
  ASSERT_TRUE(a.request({{"type", "send"}, {"room", "rec"}, {"text", "1"}}, 20));
  b.request({{"type", "leave"}, {"room", "rec"}}, 4);
  for (int i = 2; i <= 4; ++i)
    ASSERT_TRUE(a.request({{"type", "send"}, {"room", "rec"}, {"text", std::to_string(i)}}, 20 + i));
  b.send({{"type", "join"}, {"id", 5}, {"room", "rec"}, {"since", 1}, {"epoch", epoch}});
  std::vector<int> seqs;
  for (;;) {
    auto m = b.recv();
    ASSERT_TRUE(m);
    if (is_type(*m, "message")) seqs.push_back((*m)["seq"]);
    if (is_type(*m, "joined")) {
      EXPECT_EQ((*m)["recovered"], true);
      EXPECT_EQ((*m)["seq"], 4);
      break;
    }
  }
  EXPECT_EQ(seqs, (std::vector<int>{2, 3, 4}));
  b.request({{"type", "leave"}, {"room", "rec"}}, 6);
  auto r = b.request({{"type", "join"}, {"room", "rec"}, {"since", 1}, {"epoch", "other"}}, 7);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["recovered"], false);
}

TEST_F(Basic, IdempotencyKeyStoresOnce) {
  ws_client a;
  hello(a, "alice");
  join(a, "idem");
  auto a1 = a.request({{"type", "send"}, {"room", "idem"}, {"text", "x"}, {"idempotency_key", "k1"}}, 1);
  auto a2 = a.request({{"type", "send"}, {"room", "idem"}, {"text", "x"}, {"idempotency_key", "k1"}}, 2);
  ASSERT_TRUE(a1 && a2);
  EXPECT_EQ((*a1)["seq"], (*a2)["seq"]);
  EXPECT_EQ((*a1)["ts"], (*a2)["ts"]);
  auto h = a.request({{"type", "history"}, {"room", "idem"}}, 3);
  EXPECT_EQ((*h)["messages"].size(), 1u);
}

TEST_F(Basic, ErrorsKeepTheConnectionOpen) {
  ws_client a;
  hello(a, "alice");
  a.send_text("{not json");
  auto e = a.recv();
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["code"], "bad_request");
  a.send({{"type", "frobnicate"}, {"id", 2}});
  e = a.recv();
  EXPECT_EQ((*e)["code"], "bad_request");
  EXPECT_EQ((*e)["id"], 2);
  e = a.request({{"type", "join"}, {"room", "bad room!"}}, 3);
  EXPECT_EQ((*e)["code"], "bad_request");
  e = a.request({{"type", "join"}, {"room", "dm:bob:carol"}}, 4);
  EXPECT_EQ((*e)["code"], "forbidden");
  join(a, "lim");
  std::string long_text;
  for (int i = 0; i < 4097; ++i) long_text += "😀";
  e = a.request({{"type", "send"}, {"room", "lim"}, {"text", long_text}}, 5);
  EXPECT_EQ((*e)["code"], "too_large");
  long_text.resize(long_text.size() - 4);  // exactly 4096 code points
  e = a.request({{"type", "send"}, {"room", "lim"}, {"text", long_text}}, 6);
  EXPECT_EQ((*e)["type"], "ack");
  e = a.request({{"type", "ping"}}, 7);
  EXPECT_EQ((*e)["type"], "pong");
}

TEST_F(Basic, ManyFramesInOneClientFrame) {
  ws_client a;
  hello(a, "alice");
  a.send_text(R"({"type":"ping","id":1})" "\n" R"({"type":"ping","id":2})");
  auto p1 = a.recv(), p2 = a.recv();
  ASSERT_TRUE(p1 && p2);
  EXPECT_EQ((*p1)["id"], 1);
  EXPECT_EQ((*p2)["id"], 2);
}

TEST_F(Basic, HttpEndpoints) {
  std::string body;
  EXPECT_EQ(http_get(server.port(), "/healthz", body), 200);
  EXPECT_EQ(http_get(server.port(), "/readyz", body), 200);
  EXPECT_NE(body.find("ready"), std::string::npos);
  EXPECT_EQ(http_get(server.port(), "/metrics", body), 200);
  EXPECT_NE(body.find("chat_connections "), std::string::npos);
  EXPECT_NE(body.find("chat_room_rtt_seconds_bucket"), std::string::npos);
  EXPECT_EQ(http_get(server.port(), "/", body), 200);
  EXPECT_NE(body.find("<html"), std::string::npos);
  EXPECT_EQ(http_get(server.port(), "/nope", body), 404);
}
