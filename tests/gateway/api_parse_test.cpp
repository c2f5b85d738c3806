// The server API's pure parts: routes, auth header, bodies, queries.
#include <gtest/gtest.h>

#include "gateway/api.hpp"
#include "tests/support/print_errc.hpp"

namespace chat {
namespace {

route_result match(std::string_view method, std::string_view path, api_route& r) {
  std::string allow;
  return match_api_route(method, path, r, allow);
}

TEST(ApiParse, Routes) {
  api_route r;
  EXPECT_EQ(match("GET", "/api/rooms", r), route_result::ok);
  EXPECT_EQ(r.op, api_op::rooms);
  EXPECT_EQ(match("POST", "/api/rooms/general/messages", r), route_result::ok);
  EXPECT_EQ(r.op, api_op::publish);
  EXPECT_EQ(r.room, "general");
  EXPECT_EQ(match("GET", "/api/rooms/a%3Ab/presence", r), route_result::ok);
  EXPECT_EQ(r.op, api_op::presence);
  EXPECT_EQ(r.room, "a:b");
  EXPECT_EQ(match("GET", "/api/rooms/x/history", r), route_result::ok);
  EXPECT_EQ(r.op, api_op::history);
  EXPECT_EQ(match("POST", "/api/dm", r), route_result::ok);
  EXPECT_EQ(r.op, api_op::dm);
  EXPECT_EQ(match("POST", "/api/users/zo%C3%AB/disconnect", r), route_result::ok);
  EXPECT_EQ(r.op, api_op::disconnect);
  EXPECT_EQ(r.user, "zoë");

  std::string allow;
  EXPECT_EQ(match_api_route("GET", "/api/dm", r, allow), route_result::bad_method);
  EXPECT_EQ(allow, "POST");
  for (auto path : {"/api/", "/api/rooms/", "/api/rooms//history", "/api/rooms/x/y", "/api/users/x",
                    "/api/rooms/%zz/history", "/apix/rooms", "/api/rooms/x/history/"})
    EXPECT_EQ(match("GET", path, r), route_result::not_found) << path;
}

TEST(ApiParse, PercentDecode) {
  std::string out;
  EXPECT_TRUE(percent_decode("a%20b%3a", out));
  EXPECT_EQ(out, "a b:");
  EXPECT_FALSE(percent_decode("%", out));
  EXPECT_FALSE(percent_decode("%4", out));
  EXPECT_FALSE(percent_decode("%g0", out));
}

TEST(ApiParse, Bearer) {
  EXPECT_TRUE(bearer_matches("Bearer k-1", "k-1"));
  EXPECT_TRUE(bearer_matches("bearer  k-1 ", "k-1"));
  EXPECT_FALSE(bearer_matches("Bearer k-2", "k-1"));
  EXPECT_FALSE(bearer_matches("Bearer k-1x", "k-1"));
  EXPECT_FALSE(bearer_matches("Bearer k-", "k-1"));
  EXPECT_FALSE(bearer_matches("Basic k-1", "k-1"));
  EXPECT_FALSE(bearer_matches("", "k-1"));
  EXPECT_FALSE(bearer_matches("Bearer ", ""));
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abd", "abc"));
  EXPECT_FALSE(constant_time_equal("", "abc"));
}

TEST(ApiParse, Publish) {
  limits lim;
  api_call c;
  api_error e;
  ASSERT_TRUE(
      parse_publish(R"({"text":"hi","data":{"a":1},"idempotency_key":"k"})", "general", lim, c, e))
      << e.message;
  EXPECT_EQ(c.op, api_op::publish);
  EXPECT_EQ(c.send.room, "general");
  EXPECT_EQ(c.send.who.user, "system");
  EXPECT_EQ(c.send.text, "hi");
  EXPECT_EQ(c.send.data, R"({"a":1})");
  EXPECT_EQ(c.send.idem_key, "k");
  EXPECT_TRUE(c.send.trusted);
  ASSERT_TRUE(parse_publish(R"({"text":"hi","from":"bob","id":7})", "general", lim, c, e));
  EXPECT_EQ(c.send.who.user, "bob");
  EXPECT_EQ(c.send.who.name, "bob");
  EXPECT_EQ(c.send.req_id, "");

  EXPECT_FALSE(parse_publish(R"({"text":""})", "general", lim, c, e));
  EXPECT_EQ(e.status(), 400u);
  EXPECT_FALSE(parse_publish(R"({"text":"x"})", "dm:a:b", lim, c, e));
  EXPECT_EQ(e.status(), 400u);
  EXPECT_FALSE(parse_publish(json_quote(std::string(10, 'x')), "general", lim, c, e));
  EXPECT_EQ(e.status(), 400u);
  std::string big = "{\"text\":\"" + std::string(4097, 'x') + "\"}";
  EXPECT_FALSE(parse_publish(big, "general", lim, c, e));
  EXPECT_EQ(e.status(), 413u);
  EXPECT_EQ(e.code, errc::too_large);
}

TEST(ApiParse, DmAndDisconnect) {
  limits lim;
  api_call c;
  api_error e;
  ASSERT_TRUE(parse_dm(R"({"from":"bob","to":"alice","text":"psst"})", lim, c, e)) << e.message;
  EXPECT_EQ(c.room, "dm:alice:bob");
  EXPECT_EQ(c.send.dm_to, "alice");
  EXPECT_EQ(c.send.who.user, "bob");
  EXPECT_FALSE(parse_dm(R"({"from":"bob","to":"bob","text":"x"})", lim, c, e));
  EXPECT_FALSE(parse_dm(R"({"to":"bob","text":"x"})", lim, c, e));

  ASSERT_TRUE(parse_disconnect("", "alice", c, e));
  EXPECT_EQ(c.kick.code, 4003);
  EXPECT_EQ(c.kick.user, "alice");
  ASSERT_TRUE(parse_disconnect(R"({"code":1000,"reason":"bye"})", "alice", c, e));
  EXPECT_EQ(c.kick.code, 1000);
  EXPECT_EQ(c.kick.reason, "bye");
  EXPECT_FALSE(parse_disconnect(R"({"code":3999})", "alice", c, e));
  EXPECT_FALSE(parse_disconnect(R"({"code":4003})", "a:b", c, e));
}

TEST(ApiParse, HistoryQuery) {
  limits lim;
  api_call c;
  api_error e;
  ASSERT_TRUE(parse_history_query("before=10&limit=5&x=y", "general", lim, c, e));
  EXPECT_EQ(c.before, 10u);
  EXPECT_EQ(c.limit, 5u);
  ASSERT_TRUE(parse_history_query("", "dm:alice:bob", lim, c, e));
  EXPECT_EQ(c.before, 0u);
  EXPECT_EQ(c.limit, 50u);
  EXPECT_FALSE(parse_history_query("limit=0", "general", lim, c, e));
  EXPECT_FALSE(parse_history_query("limit=101", "general", lim, c, e));
  EXPECT_FALSE(parse_history_query("before=0", "general", lim, c, e));
  EXPECT_FALSE(parse_history_query("before=1x", "general", lim, c, e));
  EXPECT_FALSE(parse_history_query("", "bad room", lim, c, e));
}

}  // namespace
}  // namespace chat
