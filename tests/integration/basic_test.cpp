// The protocol table, row by row, against a real chatd on 127.0.0.1.
#include <gtest/gtest.h>

#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {

struct Basic : ::testing::Test {
  chatd_process server{{"--allow-anonymous", "--store", "memory", "--log-level", "warn"}};
  void SetUp() override { ASSERT_TRUE(server.ok()) << server.log(); }
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

TEST_F(Basic, JoinSendReceive) {
  ws_client a, b;
  ASSERT_EQ(a.hello_name(server.port(), "alice")["type"], "welcome");
  ASSERT_EQ(b.hello_name(server.port(), "bob")["type"], "welcome");
  auto j = a.request({{"type", "join"}, {"room", "general"}}, 3);
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["type"], "joined");
  EXPECT_EQ((*j)["seq"], 0);
  EXPECT_EQ((*j)["member_count"], 1);
  auto jb = b.request({{"type", "join"}, {"room", "general"}}, 3);
  ASSERT_TRUE(jb);
  EXPECT_EQ((*jb)["member_count"], 2);
  auto mj = a.recv_until([](const json& x) { return x["type"] == "member_joined"; });
  ASSERT_TRUE(mj);
  EXPECT_EQ((*mj)["user"], "bob");
  auto ack = a.request({{"type", "send"}, {"room", "general"}, {"text", "hi 👋"}}, 5);
  ASSERT_TRUE(ack);
  EXPECT_EQ((*ack)["type"], "ack");
  EXPECT_EQ((*ack)["seq"], 1);
  auto m = b.recv_until([](const json& x) { return x["type"] == "message"; });
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["text"], "hi 👋");
  EXPECT_EQ((*m)["from"], "alice");
  EXPECT_EQ((*m)["seq"], 1);
}
