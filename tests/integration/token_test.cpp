// `chatd token` mints what a chatd with the same secret accepts; JWT sessions.
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {


std::string run_token(const std::string& args) {
  std::string cmd = std::string(CHATD_PATH) + " token --jwt-secret s3cret " + args + " 2>&1";
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

struct Jwt : ::testing::Test {
  chatd_process server{{"--jwt-secret", "s3cret", "--store", "memory", "--log-level", "warn"}};
  void SetUp() override { ASSERT_TRUE(server.ok()) << server.log(); }
};

}  // namespace

TEST_F(Jwt, MintedTokenIsAccepted) {
  auto token = run_token("--user alice --name Alice --ttl 1h --roles admin --rooms 'team-*'");
  ASSERT_EQ(std::count(token.begin(), token.end(), '.'), 2) << token;
  ws_client c;
  auto w = c.hello_token(server.port(), token);
  ASSERT_TRUE(is_type(w, "welcome")) << w;
  EXPECT_EQ(w["user"], "alice");
  EXPECT_EQ(w["name"], "Alice");
}

TEST_F(Jwt, RoomPatternsLimitJoins) {
  auto token = run_token("--user bob --ttl 1h --rooms 'team-*'");
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_token(server.port(), token), "welcome"));
  EXPECT_EQ((*c.request({{"type", "join"}, {"room", "team-a"}}, 2))["type"], "joined");
  EXPECT_EQ((*c.request({{"type", "join"}, {"room", "general"}}, 3))["code"], "forbidden");
}

TEST_F(Jwt, BadTokensAreRefusedWith4001) {
  for (std::string bad : {std::string("garbage"), run_token("--user x --ttl 1h") + "x",
                          std::string("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")}) {
    ws_client c;
    auto e = c.hello_token(server.port(), bad);
    EXPECT_EQ(e["code"], "unauthorized") << bad << " -> " << e;
    EXPECT_EQ(c.wait_close(), 4001);
  }
}

TEST_F(Jwt, ExpiryClosesWith4002AndRefreshExtends) {
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_token(server.port(), run_token("--user carol --ttl 2s")), "welcome"));
  // A refresh for another user is refused; one for the same user moves the expiry.
  auto other = c.request({{"type", "refresh"}, {"token", run_token("--user mallory --ttl 1h")}}, 2);
  EXPECT_EQ((*other)["code"], "forbidden");
  auto ok = c.request({{"type", "refresh"}, {"token", run_token("--user carol --ttl 3s")}}, 3);
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["type"], "refreshed");
  auto e = c.recv_until([](const json& x) { return x.value("code", "") == "token_expired"; }, 6s);
  ASSERT_TRUE(e);
  EXPECT_EQ(c.wait_close(), 4002);
}
