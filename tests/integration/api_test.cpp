// The server API (/api/*) against a real chatd: every endpoint, its errors, and
// its effect on WebSocket clients.
#include <gtest/gtest.h>

#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {

const std::string kKey = "test-api-key-0123456789";

struct Api : ::testing::Test {
  chatd_process server{{"--allow-anonymous", "--store", "memory", "--log-level", "warn", "--rate",
                        "1000", "--burst", "1000", "--api-key", kKey}};
  void SetUp() override { ASSERT_TRUE(server.ok()) << server.log(); }

  // An API call with the right key; `out` is the parsed body (null if not JSON).
  int call(const std::string& method, const std::string& target, const std::string& body, json& out,
           const std::string& auth = "Bearer " + kKey,
           std::map<std::string, std::string>* headers = nullptr) {
    http_headers h;
    if (!auth.empty()) h.emplace_back("Authorization", auth);
    if (!body.empty()) h.emplace_back("Content-Type", "application/json");
    std::string res;
    int status = http_request(server.port(), method, target, h, body, res, headers);
    out = json::parse(res, nullptr, false);
    return status;
  }
  json get(const std::string& target, int expect_status = 200) {
    json out;
    EXPECT_EQ(call("GET", target, "", out), expect_status) << target << " " << out;
    return out;
  }
  json post(const std::string& target, const json& body, int expect_status = 200) {
    json out;
    EXPECT_EQ(call("POST", target, body.dump(), out), expect_status) << target << " " << out;
    return out;
  }
  void hello(ws_client& c, const std::string& name) {
    auto w = c.hello_name(server.port(), name);
    ASSERT_TRUE(is_type(w, "welcome")) << w;
  }
  void join(ws_client& c, const std::string& room) {
    auto j = c.request({{"type", "join"}, {"room", room}}, 3);
    ASSERT_TRUE(j && is_type(*j, "joined")) << (j ? *j : json());
  }
  std::optional<json> next_message(ws_client& c) {
    return c.recv_until([](const json& x) { return is_type(x, "message"); });
  }
};

void expect_error(const json& body, const char* code) {
  EXPECT_EQ(body.value("error", ""), code) << body;
  EXPECT_TRUE(body.value("message", "").size() > 0) << body;
}

}  // namespace

TEST(ApiDisabled, EveryRequestIs404WithoutAKey) {
  chatd_process server{{"--allow-anonymous", "--store", "memory", "--log-level", "warn"}};
  ASSERT_TRUE(server.ok()) << server.log();
  std::string body;
  int status =
      http_request(server.port(), "GET", "/api/rooms", {{"Authorization", "Bearer x"}}, "", body);
  EXPECT_EQ(status, 404);
  auto j = json::parse(body, nullptr, false);
  EXPECT_EQ(j,
            json::parse(R"({"error":"not_found","message":"server API disabled: set --api-key"})"));
  status = http_request(server.port(), "POST", "/api/rooms/general/messages", {}, R"({"text":"x"})",
                        body);
  EXPECT_EQ(status, 404);
}

TEST_F(Api, NeedsTheKey) {
  json out;
  std::map<std::string, std::string> headers;
  EXPECT_EQ(call("GET", "/api/rooms", "", out, "", &headers), 401);
  expect_error(out, "unauthorized");
  EXPECT_EQ(headers["WWW-Authenticate"], "Bearer");
  EXPECT_EQ(call("GET", "/api/rooms", "", out, "Bearer wrong-key"), 401);
  EXPECT_EQ(call("GET", "/api/rooms", "", out, "Bearer " + kKey + "x"), 401);
  EXPECT_EQ(call("GET", "/api/rooms", "", out, "Basic " + kKey), 401);
  EXPECT_EQ(call("POST", "/api/rooms/general/messages", R"({"text":"x"})", out, "Bearer nope"),
            401);
  EXPECT_EQ(call("GET", "/api/rooms", "", out, "bearer " + kKey), 200) << out;
  EXPECT_EQ(call("GET", "/api/rooms", "", out), 200);
  EXPECT_EQ(out, json::parse(R"({"rooms":[]})"));
}

TEST_F(Api, UnknownEndpointsAndMethods) {
  json out;
  EXPECT_EQ(call("GET", "/api/nothing", "", out), 404);
  expect_error(out, "not_found");
  EXPECT_EQ(call("GET", "/api/rooms/general", "", out), 404);
  EXPECT_EQ(call("GET", "/api/rooms//history", "", out), 404);
  std::map<std::string, std::string> headers;
  EXPECT_EQ(call("GET", "/api/rooms/general/messages", "", out, "Bearer " + kKey, &headers), 405);
  EXPECT_EQ(headers["Allow"], "POST");
  EXPECT_EQ(call("PUT", "/api/rooms", "{}", out, "Bearer " + kKey, &headers), 405);
  EXPECT_EQ(headers["Allow"], "GET, POST");
  EXPECT_EQ(call("DELETE", "/api/dm", "", out), 405);
}

TEST_F(Api, PublishAsTheSystemReachesMembers) {
  ws_client alice;
  hello(alice, "alice");
  join(alice, "general");
  auto ack = post("/api/rooms/general/messages", {{"text", "maintenance at 5 🛠"}});
  EXPECT_EQ(ack["room"], "general");
  EXPECT_EQ(ack["seq"], 1);
  ASSERT_TRUE(ack["ts"].is_number_integer());
  EXPECT_EQ(ack.size(), 3u) << ack;
  auto m = next_message(alice);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["from"], "system");
  EXPECT_EQ((*m)["name"], "system");
  EXPECT_EQ((*m)["text"], "maintenance at 5 🛠");
  EXPECT_EQ((*m)["seq"], 1);
  EXPECT_EQ((*m)["ts"], ack["ts"]);
  EXPECT_FALSE(m->contains("data"));
  // A display name of its own; a room nobody joined is created on first publish.
  ack = post("/api/rooms/announcements/messages", {{"text", "hi"}, {"name", "Ops bot"}});
  EXPECT_EQ(ack["room"], "announcements");
  EXPECT_EQ(ack["seq"], 1);
  auto h = get("/api/rooms/announcements/history");
  ASSERT_EQ(h["messages"].size(), 1u) << h;
  EXPECT_EQ(h["messages"][0]["name"], "Ops bot");
  EXPECT_EQ(h["messages"][0]["from"], "system");
}

TEST_F(Api, PublishAsAUserWithDataAndIdempotency) {
  ws_client alice;
  hello(alice, "alice");
  join(alice, "general");
  json body{{"text", "from the backend"},
            {"from", "bob"},
            {"name", "Bob"},
            {"data", {{"kind", "card"}, {"n", 1}}},
            {"idempotency_key", "order-42"}};
  auto first = post("/api/rooms/general/messages", body);
  EXPECT_EQ(first["seq"], 1);
  auto again = post("/api/rooms/general/messages", body);
  EXPECT_EQ(again, first);  // same seq and ts: stored once
  auto m = next_message(alice);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["from"], "bob");
  EXPECT_EQ((*m)["name"], "Bob");
  EXPECT_EQ((*m)["data"], json::parse(R"({"kind":"card","n":1})"));
  post("/api/rooms/general/messages", {{"text", "next"}, {"from", "bob"}});
  m = next_message(alice);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["seq"], 2);       // the repeat delivered nothing
  EXPECT_EQ((*m)["name"], "bob");  // the name defaults to the user id
}

TEST_F(Api, PublishIsValidatedLikeTheProtocol) {
  json out;
  auto bad = [&](const std::string& target, const std::string& body, int status, const char* code) {
    EXPECT_EQ(call("POST", target, body, out), status) << target << " " << body << " " << out;
    expect_error(out, code);
  };
  const std::string t = "/api/rooms/general/messages";
  bad(t, "not json", 400, "bad_request");
  bad(t, "[1,2]", 400, "bad_request");
  bad(t, "", 400, "bad_request");
  bad(t, "{}", 400, "bad_request");
  bad(t, R"({"text":""})", 400, "bad_request");
  bad(t, R"({"text":5})", 400, "bad_request");
  bad(t, R"({"text":"x","data":"str"})", 400, "bad_request");
  bad(t, R"({"text":"x","from":"a:b"})", 400, "bad_request");
  bad(t, R"({"text":"x","from":7})", 400, "bad_request");
  bad(t, R"({"text":"x","name":""})", 400, "bad_request");
  bad(t, json{{"text", std::string(4097, 'a')}}.dump(), 413, "too_large");
  bad(t, json{{"text", "x"}, {"idempotency_key", std::string(129, 'k')}}.dump(), 413, "too_large");
  std::string deep = R"({"text":"x","data":)" + std::string(40, '[') + std::string(40, ']') + "}";
  bad(t, deep, 400, "bad_request");
  bad("/api/rooms/bad%20room/messages", R"({"text":"x"})", 400, "bad_request");
  bad("/api/rooms/" + std::string(65, 'r') + "/messages", R"({"text":"x"})", 400, "bad_request");
  bad("/api/rooms/dm:alice:bob/messages", R"({"text":"x"})", 400, "bad_request");
  // 4096 code points of a 4-byte character are fine.
  std::string emoji;
  for (int i = 0; i < 4096; ++i) emoji += "😀";
  EXPECT_EQ(call("POST", t, json{{"text", emoji}}.dump(), out), 200) << out;
  EXPECT_EQ(out["seq"], 1);
}

TEST_F(Api, DirectMessageReachesBothUsers) {
  ws_client alice, bob;
  hello(alice, "alice");
  hello(bob, "bob");
  auto ack = post("/api/dm", {{"from", "bob"}, {"to", "alice"}, {"text", "psst"}});
  EXPECT_EQ(ack["room"], "dm:alice:bob");
  EXPECT_EQ(ack["seq"], 1);
  for (auto* c : {&alice, &bob}) {
    auto m = next_message(*c);
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)["room"], "dm:alice:bob");
    EXPECT_EQ((*m)["from"], "bob");
    EXPECT_EQ((*m)["text"], "psst");
  }
  // Stored like any dm: the history is there for the API too.
  auto h = get("/api/rooms/dm:alice:bob/history");
  ASSERT_EQ(h["messages"].size(), 1u) << h;
  // An offline recipient is fine: it is stored.
  ack = post("/api/dm", {{"from", "alice"}, {"to", "carol"}, {"text", "later"}});
  EXPECT_EQ(ack["room"], "dm:alice:carol");
  json out;
  EXPECT_EQ(call("POST", "/api/dm", R"({"from":"alice","to":"alice","text":"x"})", out), 400);
  EXPECT_EQ(call("POST", "/api/dm", R"({"to":"alice","text":"x"})", out), 400);
  EXPECT_EQ(call("POST", "/api/dm", R"({"from":"alice","text":"x"})", out), 400);
  EXPECT_EQ(call("POST", "/api/dm", R"({"from":"alice","to":"b:c","text":"x"})", out), 400);
  EXPECT_EQ(call("POST", "/api/dm", R"({"from":"alice","to":"bob","text":""})", out), 400);
}

TEST_F(Api, DisconnectClosesEveryConnectionOfTheUser) {
  ws_client a1, a2, bob;
  hello(a1, "alice");
  hello(a2, "alice");
  hello(bob, "bob");
  auto r = post("/api/users/alice/disconnect", {{"code", 4005}, {"reason", "moved to v2"}});
  EXPECT_EQ(r, json::parse(R"({"user":"alice","closed":2})"));
  for (auto* c : {&a1, &a2}) {
    EXPECT_EQ(c->wait_close(), 4005);
    EXPECT_EQ(c->close_reason(), "moved to v2");
  }
  auto pong = bob.request({{"type", "ping"}}, 9);  // others stay
  ASSERT_TRUE(pong && is_type(*pong, "pong"));
  // Defaults: 4003 with an empty body.
  json out;
  EXPECT_EQ(call("POST", "/api/users/bob/disconnect", "", out), 200) << out;
  EXPECT_EQ(out["closed"], 1);
  EXPECT_EQ(bob.wait_close(), 4003);
  // Gone now: nothing to close.
  EXPECT_EQ(call("POST", "/api/users/bob/disconnect", "{}", out), 404);
  expect_error(out, "not_found");
  EXPECT_EQ(call("POST", "/api/users/alice/disconnect", R"({"code":1001})", out), 400);
  EXPECT_EQ(call("POST", "/api/users/alice/disconnect", R"({"code":5000})", out), 400);
  EXPECT_EQ(call("POST", "/api/users/alice/disconnect", R"({"code":"4003"})", out), 400);
  EXPECT_EQ(call("POST", "/api/users/a%3Ab/disconnect", "{}", out), 400);
  EXPECT_EQ(call("POST", "/api/users/alice/disconnect",
                 json{{"reason", std::string(121, 'r')}}.dump(), out),
            400);
}

TEST_F(Api, DisconnectFindsPercentEncodedUnicodeUsers) {
  ws_client z;
  hello(z, "zoë");
  json out;
  EXPECT_EQ(call("POST", "/api/users/zo%C3%AB/disconnect", "{}", out), 200) << out;
  EXPECT_EQ(out["user"], "zoë");
  EXPECT_EQ(z.wait_close(), 4003);
}

TEST_F(Api, PresenceHistoryAndRooms) {
  ws_client alice, bob;
  hello(alice, "alice");
  hello(bob, "bob");
  join(alice, "lobby");
  join(bob, "lobby");
  auto p = get("/api/rooms/lobby/presence");
  EXPECT_EQ(p, json::parse(R"({"room":"lobby","members":[{"user":"alice","name":"alice"},
                                                          {"user":"bob","name":"bob"}]})"));
  // An active room without messages has an empty history (not a 404).
  auto h = get("/api/rooms/lobby/history");
  EXPECT_EQ(h["messages"], json::array());
  EXPECT_EQ(h["more"], false);
  for (int i = 1; i <= 3; ++i)
    post("/api/rooms/lobby/messages", {{"text", "m" + std::to_string(i)}});
  h = get("/api/rooms/lobby/history?limit=2");
  EXPECT_EQ(h["room"], "lobby");
  EXPECT_FALSE(h.contains("type"));
  ASSERT_EQ(h["messages"].size(), 2u) << h;
  EXPECT_EQ(h["messages"][0]["seq"], 2);
  EXPECT_EQ(h["messages"][1]["seq"], 3);
  EXPECT_EQ(h["messages"][1]["type"], "message");
  EXPECT_EQ(h["more"], true);
  EXPECT_EQ(h["first_seq"], 1);
  h = get("/api/rooms/lobby/history?before=2&limit=50");
  ASSERT_EQ(h["messages"].size(), 1u) << h;
  EXPECT_EQ(h["messages"][0]["text"], "m1");
  EXPECT_EQ(h["more"], false);
  h = get("/api/rooms/lobby/history?before=&limit=");  // empty values: the defaults
  EXPECT_EQ(h["messages"].size(), 3u);
  get("/api/rooms/lobby/history?limit=0", 400);
  get("/api/rooms/lobby/history?limit=101", 400);
  get("/api/rooms/lobby/history?limit=abc", 400);
  get("/api/rooms/lobby/history?before=0", 400);
  get("/api/rooms/lobby/history?before=-1", 400);
  get("/api/rooms/bad%20name/presence", 400);

  auto rooms = get("/api/rooms");
  EXPECT_EQ(rooms, json::parse(R"({"rooms":["lobby"]})"));

  // Rooms that never existed.
  expect_error(get("/api/rooms/nowhere/presence", 404), "not_found");
  expect_error(get("/api/rooms/nowhere/history", 404), "not_found");
  expect_error(get("/api/rooms/nowhere/history?before=5", 404), "not_found");
  // A room with history but nobody in it: empty presence, full history.
  post("/api/rooms/archive/messages", {{"text", "old news"}});
  EXPECT_EQ(get("/api/rooms/archive/presence"), json::parse(R"({"room":"archive","members":[]})"));
  EXPECT_EQ(get("/api/rooms/archive/history?before=1")["messages"], json::array());
}

// --- protocol v2: rooms with owners and settings, memberships, edits, deletes, search ---

TEST_F(Api, RoomsWithOwnersSettingsMembersEditsDeletesAndSearch) {
  json out;
  auto call_json = [&](const std::string& method, const std::string& target, const json& body) {
    auto status = call(method, target, body.is_null() ? "" : body.dump(), out);
    return std::make_pair(status, out);
  };
  EXPECT_EQ(call_json("POST", "/api/rooms", {{"room", "news"}}).first, 400);  // no owner
  auto [st, made] = call_json("POST", "/api/rooms",
                              {{"room", "news"}, {"owner", "alice"}, {"topic", "News"}, {"read_only", true}});
  ASSERT_EQ(st, 200) << made;
  EXPECT_EQ(made, json::parse(R"({"room":"news","topic":"News","private":false,"read_only":true,)"
                              R"("slow_mode":0,"last_seq":1,"member_count":1})"));
  EXPECT_EQ(get("/api/rooms/news"), made);
  get("/api/rooms/no-such-room", 404);
  ws_client a, b;
  hello(a, "alice");
  hello(b, "bob");
  auto ja = a.request({{"type", "join"}, {"room", "news"}}, 3);
  ASSERT_TRUE(ja);
  EXPECT_EQ((*ja)["role"], "owner") << *ja;
  join(b, "news");
  auto refused = b.request({{"type", "send"}, {"room", "news"}, {"text", "hi"}}, 4);
  ASSERT_TRUE(refused);
  EXPECT_EQ((*refused)["code"], "forbidden");
  // A moderator may send in a read-only room.
  auto [ps, promoted] = call_json("PUT", "/api/rooms/news/members/bob", {{"role", "moderator"}});
  EXPECT_EQ(ps, 200) << promoted;
  EXPECT_EQ(promoted, json::parse(R"({"room":"news","user":"bob","role":"moderator"})"));
  auto ok = b.request({{"type", "send"}, {"room", "news"}, {"text", "hi"}}, 5);
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["seq"], 2) << *ok;
  EXPECT_EQ(call_json("PUT", "/api/rooms/news/members/carol", {{"role", "boss"}}).first, 400);
  auto members = get("/api/rooms/news/members");
  EXPECT_EQ(members, json::parse(R"({"room":"news","members":[{"user":"alice","role":"owner","read_seq":0},)"
                                 R"({"user":"bob","role":"moderator","read_seq":1}]})"));
  // Edit and delete as the system (any message) or as a user (their own).
  auto posted = post("/api/rooms/news/messages", {{"text", "hello world"}});
  uint64_t seq = posted["seq"];
  auto [es, edited] = call_json("PATCH", "/api/rooms/news/messages/" + std::to_string(seq),
                                {{"text", "hello there"}});
  EXPECT_EQ(es, 200) << edited;
  EXPECT_EQ(edited["seq"], seq + 1);
  auto live = b.recv_until([](const json& x) { return is_type(x, "message_edited"); });
  ASSERT_TRUE(live);
  EXPECT_EQ((*live)["text"], "hello there");
  EXPECT_EQ(call_json("PATCH", "/api/rooms/news/messages/" + std::to_string(seq),
                      {{"text", "bob's now"}, {"from", "bob"}}).first, 403);
  EXPECT_EQ(call_json("PATCH", "/api/rooms/news/messages/999", {{"text", "x"}}).first, 404);
  auto found = get("/api/rooms/news/search?q=there");
  ASSERT_EQ(found["messages"].size(), 1u) << found;
  EXPECT_EQ(found["messages"][0]["seq"], seq);
  EXPECT_EQ(get("/api/rooms/news/search?q=world")["messages"].size(), 0u);
  get("/api/rooms/news/search", 400);
  auto [ds, deleted] = call_json("DELETE", "/api/rooms/news/messages/" + std::to_string(seq), json());
  EXPECT_EQ(ds, 200) << deleted;
  EXPECT_EQ(get("/api/rooms/news/search?q=there")["messages"].size(), 0u);
  // Settings change as a moderation event; a membership ends.
  auto [us, updated] = call_json("PATCH", "/api/rooms/news", {{"read_only", false}, {"topic", "Old news"}});
  EXPECT_EQ(us, 200) << updated;
  EXPECT_EQ(updated["read_only"], false);
  EXPECT_EQ(updated["topic"], "Old news");
  auto mod = b.recv_until([](const json& x) { return is_type(x, "moderation"); });
  ASSERT_TRUE(mod);
  EXPECT_EQ((*mod)["by"], "system");
  auto [xs, parted] = call_json("DELETE", "/api/rooms/news/members/bob", json());
  EXPECT_EQ(xs, 200) << parted;
  auto gone = b.recv_until([](const json& x) { return is_type(x, "parted"); });
  ASSERT_TRUE(gone);
  EXPECT_EQ((*gone)["room"], "news");
  EXPECT_EQ(get("/api/rooms/news")["member_count"], 1);
}

// The audit view: a room's moderation events only, newest page first, paged
// with before/limit like history; 404 for a room that never existed.
TEST_F(Api, ModerationLogListsOnlyModerationEventsPaged) {
  ws_client a, b;
  hello(a, "alice");
  hello(b, "bob");
  auto ja = a.request({{"type", "join"}, {"room", "mods"}}, 3);
  ASSERT_TRUE(ja && (*ja)["role"] == "owner") << (ja ? *ja : json());
  join(b, "mods");
  int id = 10;
  auto ask = [&](ws_client& c, json req) {
    auto r = c.request(std::move(req), id++);
    return r ? *r : json();
  };
  EXPECT_EQ(ask(a, {{"type", "send"}, {"room", "mods"}, {"text", "one"}})["seq"], 1);
  EXPECT_EQ(ask(a, {{"type", "room_set"}, {"room", "mods"}, {"topic", "rules"}})["seq"], 2);
  EXPECT_EQ(ask(b, {{"type", "send"}, {"room", "mods"}, {"text", "two"}})["seq"], 3);
  EXPECT_EQ(ask(a, {{"type", "mute"}, {"room", "mods"}, {"user", "bob"}, {"seconds", 60}})["seq"], 4);
  EXPECT_EQ(ask(a, {{"type", "send"}, {"room", "mods"}, {"text", "three"}})["seq"], 5);
  auto log = get("/api/rooms/mods/moderation");
  ASSERT_EQ(log["messages"].size(), 2u) << log;
  EXPECT_EQ(log["messages"][0]["seq"], 2);
  EXPECT_EQ(log["messages"][0]["action"], "settings");
  EXPECT_EQ(log["messages"][1]["seq"], 4);
  EXPECT_EQ(log["messages"][1]["action"], "mute");
  EXPECT_EQ(log["messages"][1]["user"], "bob");
  EXPECT_EQ(log["messages"][1]["by"], "alice");
  EXPECT_EQ(log["more"], false);
  auto page = get("/api/rooms/mods/moderation?limit=1");
  ASSERT_EQ(page["messages"].size(), 1u) << page;
  EXPECT_EQ(page["messages"][0]["seq"], 4);
  EXPECT_EQ(page["more"], true);
  page = get("/api/rooms/mods/moderation?before=4");
  ASSERT_EQ(page["messages"].size(), 1u) << page;
  EXPECT_EQ(page["messages"][0]["seq"], 2);
  EXPECT_EQ(page["more"], false);
  get("/api/rooms/never-was/moderation", 404);
  get("/api/rooms/mods/moderation?limit=0", 400);
  json out;
  EXPECT_EQ(call("POST", "/api/rooms/mods/moderation", "{}", out), 405);
  // Counted in /metrics by action.
  std::string metrics;
  ASSERT_EQ(http_get(server.port(), "/metrics", metrics), 200);
  EXPECT_NE(metrics.find("chat_moderation_actions_total{action=\"mute\"} 1"), std::string::npos)
      << metrics.substr(0, 200);
  EXPECT_NE(metrics.find("chat_moderation_actions_total{action=\"settings\"} 1"), std::string::npos);
}
