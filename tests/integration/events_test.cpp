// Protocol v2 events (edit, delete, react, reply_to, mentions) against a real
// chatd on its default store, a SQLite file: every row of the tables in
// PROTOCOL-v2.md, history with the current state, recovery in seq order, a
// restart keeping tombstones and reactions.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "tests/integration/chatd_process.hpp"
#include "tests/integration/cluster_fixture.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {

std::vector<std::string> args(const temp_dir& dir, std::vector<std::string> more = {}) {
  std::vector<std::string> a = {"--allow-anonymous", "--db", dir.path() + "/chat.db",
                                "--log-level",       "warn", "--rate",
                                "100000",            "--burst", "100000"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

struct Events : ::testing::Test {
  temp_dir dir;
  std::optional<chatd_process> server;
  int next_id = 100;

  void start(std::vector<std::string> more = {}) {
    server.emplace(args(dir, more));
    ASSERT_TRUE(server->ok()) << server->log();
  }
  void SetUp() override { start(); }

  void hello(ws_client& c, const std::string& name) {
    auto w = c.hello_name(server->port(), name);
    ASSERT_TRUE(is_type(w, "welcome")) << w;
  }
  json join(ws_client& c, const std::string& room, json extra = json::object()) {
    json req{{"type", "join"}, {"room", room}};
    req.update(extra);
    auto j = c.request(req, next_id++);
    return j ? *j : json();
  }
  json ask(ws_client& c, json req) {
    auto r = c.request(std::move(req), next_id++);
    return r ? *r : json();
  }
  json send(ws_client& c, const std::string& room, const std::string& text,
            json extra = json::object()) {
    json req{{"type", "send"}, {"room", room}, {"text", text}};
    req.update(extra);
    return ask(c, req);
  }
  // The next event of `type` in `room` on c.
  json event(ws_client& c, const std::string& type) {
    auto e = c.recv_until([&](const json& x) { return is_type(x, type.c_str()); });
    return e ? *e : json();
  }
  json history(ws_client& c, const std::string& room) {
    return ask(c, {{"type", "history"}, {"room", room}, {"limit", 100}});
  }
};

std::string code_of(const json& j) { return is_type(j, "error") ? j.value("code", "") : ""; }

}  // namespace

TEST_F(Events, WelcomeSaysProtocol2) {
  ws_client a;
  auto w = a.hello_name(server->port(), "alice");
  EXPECT_EQ(w["protocol"], 2) << w;
}

TEST_F(Events, EditDeleteReactFollowTheRules) {
  ws_client a, b;
  hello(a, "alice");
  hello(b, "bob");
  join(a, "r");
  join(b, "r");
  auto m = send(a, "r", "helo wrold", {{"data", {{"v", 1}}}});
  ASSERT_EQ(m["seq"], 1) << m;

  // edit: the author only, a new seq, both members see it.
  EXPECT_EQ(code_of(ask(b, {{"type", "edit"}, {"room", "r"}, {"seq", 1}, {"text", "mine"}})),
            "forbidden");
  auto e = ask(a, {{"type", "edit"}, {"room", "r"}, {"seq", 1}, {"text", "hello world"}});
  ASSERT_TRUE(is_type(e, "ack")) << e;
  EXPECT_EQ(e["seq"], 2);
  for (auto* c : {&a, &b}) {
    auto ev = event(*c, "message_edited");
    EXPECT_EQ(ev["seq"], 2) << ev;
    EXPECT_EQ(ev["target"], 1);
    EXPECT_EQ(ev["from"], "alice");
    EXPECT_EQ(ev["text"], "hello world");
    EXPECT_FALSE(ev.contains("data"));  // the edit replaced the data with none
  }
  EXPECT_EQ(code_of(ask(a, {{"type", "edit"}, {"room", "r"}, {"seq", 9}, {"text", "x"}})),
            "not_found");
  EXPECT_EQ(code_of(ask(a, {{"type", "edit"}, {"room", "r"}, {"seq", 2}, {"text", "x"}})),
            "not_found");  // seq 2 is an edit, not a message

  // react: a new seq; the same again is a noop; removing it another seq.
  auto r1 = ask(b, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "👍"}, {"on", true}});
  ASSERT_TRUE(is_type(r1, "ack")) << r1;
  EXPECT_EQ(r1["seq"], 3);
  auto ev = event(a, "reaction");
  EXPECT_EQ(ev["user"], "bob");
  EXPECT_EQ(ev["emoji"], "👍");
  EXPECT_EQ(ev["on"], true);
  EXPECT_EQ(ev["target"], 1);
  auto again = ask(b, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "👍"}, {"on", true}});
  EXPECT_EQ(again, json::parse(R"({"type":"ack","id":)" + std::to_string(next_id - 1) +
                               R"(,"room":"r","noop":true})"));
  auto off_none = ask(a, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "🎉"}, {"on", false}});
  EXPECT_EQ(off_none["noop"], true) << off_none;
  ASSERT_TRUE(is_type(ask(a, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "🎉"}}), "ack"));
  EXPECT_EQ(code_of(ask(a, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "two words"}})),
            "bad_request");
  EXPECT_EQ(code_of(ask(a, {{"type", "react"}, {"room", "r"}, {"seq", 3}, {"emoji", "👍"}})),
            "not_found");  // a reaction event is not a message

  // history: the message as it is now.
  auto h = history(b, "r");
  ASSERT_TRUE(is_type(h, "history")) << h;
  ASSERT_EQ(h["messages"].size(), 4u);
  json cur = h["messages"][0];
  EXPECT_EQ(cur["text"], "hello world");
  EXPECT_TRUE(cur["edited_ts"].is_number_integer());
  EXPECT_EQ(cur["reactions"], json::parse(R"([{"emoji":"👍","count":1,"users":["bob"]},
                                               {"emoji":"🎉","count":1,"users":["alice"]}])"));
  EXPECT_EQ(h["messages"][1]["type"], "message_edited");
  EXPECT_EQ(h["messages"][2]["type"], "reaction");

  // delete: the author (not bob); afterwards nothing more on it.
  EXPECT_EQ(code_of(ask(b, {{"type", "delete"}, {"room", "r"}, {"seq", 1}})), "forbidden");
  auto d = ask(a, {{"type", "delete"}, {"room", "r"}, {"seq", 1}});
  ASSERT_TRUE(is_type(d, "ack")) << d;
  EXPECT_EQ(d["seq"], 5);
  auto dv = event(b, "message_deleted");
  EXPECT_EQ(dv["target"], 1);
  EXPECT_EQ(dv["by"], "alice");
  EXPECT_EQ(code_of(ask(a, {{"type", "delete"}, {"room", "r"}, {"seq", 1}})), "not_found");
  EXPECT_EQ(code_of(ask(a, {{"type", "edit"}, {"room", "r"}, {"seq", 1}, {"text", "x"}})),
            "not_found");
  EXPECT_EQ(code_of(ask(b, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "👀"}})),
            "not_found");
  h = history(b, "r");
  cur = h["messages"][0];
  EXPECT_EQ(cur["deleted"], true) << cur;
  EXPECT_FALSE(cur.contains("text"));
  EXPECT_FALSE(cur.contains("data"));
  EXPECT_FALSE(cur.contains("reactions"));
  EXPECT_EQ(h["messages"][1]["text"], "");  // the edit lost its text with the message
  // Not joined: not_member, as for send.
  ws_client c;
  hello(c, "carol");
  EXPECT_EQ(code_of(ask(c, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "👍"}})),
            "not_member");
}

TEST_F(Events, AtMostTwentyDistinctEmojiPerMessage) {
  ws_client a;
  hello(a, "alice");
  join(a, "r");
  ASSERT_EQ(send(a, "r", "pick")["seq"], 1);
  for (int i = 0; i < 20; ++i) {
    auto r = ask(a, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "e" + std::to_string(i)}});
    ASSERT_TRUE(is_type(r, "ack")) << r;
  }
  EXPECT_EQ(code_of(ask(a, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "e20"}})),
            "bad_request");
  // A known emoji still counts another user.
  ws_client b;
  hello(b, "bob");
  join(b, "r");
  EXPECT_TRUE(is_type(ask(b, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "e3"}}), "ack"));
}

TEST_F(Events, RepliesAndMentions) {
  ws_client a, b, carol;
  hello(a, "alice");
  hello(b, "bob");
  hello(carol, "carol");  // connected, in no room
  join(a, "r");
  join(b, "r");
  ASSERT_EQ(send(a, "r", "question?")["seq"], 1);
  ASSERT_TRUE(is_type(ask(a, {{"type", "react"}, {"room", "r"}, {"seq", 1}, {"emoji", "❓"}}), "ack"));
  EXPECT_EQ(code_of(send(b, "r", "x", {{"reply_to", 99}})), "not_found");
  EXPECT_EQ(code_of(send(b, "r", "x", {{"reply_to", 2}})), "not_found");  // a reaction
  json many = json::array();
  for (int i = 0; i < 51; ++i) many.push_back("u" + std::to_string(i));
  EXPECT_EQ(code_of(send(b, "r", "x", {{"mentions", many}})), "bad_request");
  auto ack = send(b, "r", "answer, @carol", {{"reply_to", 1}, {"mentions", {"carol", "alice", "bob"}}});
  ASSERT_TRUE(is_type(ack, "ack")) << ack;
  auto m = event(a, "message");
  while (m.value("seq", 0) != ack["seq"] && !m.is_null()) m = event(a, "message");
  EXPECT_EQ(m["reply_to"], 1);
  EXPECT_EQ(m["mentions"], json::parse(R"(["carol","alice","bob"])"));
  auto n = event(carol, "mention");
  EXPECT_EQ(n, json::parse(R"({"type":"mention","room":"r","seq":)" + ack["seq"].dump() +
                           R"(,"from":"bob"})"));
  EXPECT_TRUE(event(a, "mention").is_object());
  // The author is not told of mentioning themself.
  EXPECT_FALSE(b.recv_until([](const json& x) { return is_type(x, "mention"); },
                            std::chrono::milliseconds(300)));
}

TEST_F(Events, ChangesToMessagesOlderThanTheWindowReadTheStore) {
  server.reset();
  start({"--history-window", "2"});
  ws_client a;
  hello(a, "alice");
  join(a, "old");
  for (int i = 1; i <= 6; ++i) ASSERT_EQ(send(a, "old", "m" + std::to_string(i))["seq"], i);
  // seq 1 left the window long ago: its author and state come from the store.
  EXPECT_TRUE(is_type(ask(a, {{"type", "edit"}, {"room", "old"}, {"seq", 1}, {"text", "m1!"}}), "ack"));
  EXPECT_TRUE(is_type(ask(a, {{"type", "react"}, {"room", "old"}, {"seq", 2}, {"emoji", "👍"}}), "ack"));
  EXPECT_EQ(ask(a, {{"type", "react"}, {"room", "old"}, {"seq", 2}, {"emoji", "👍"}})["noop"], true);
  EXPECT_TRUE(is_type(ask(a, {{"type", "delete"}, {"room", "old"}, {"seq", 3}}), "ack"));
  EXPECT_EQ(code_of(ask(a, {{"type", "delete"}, {"room", "old"}, {"seq", 3}})), "not_found");
  // Pipelined: a reply to an old message, then a plain send: sequenced in order.
  a.send({{"type", "send"}, {"id", 1}, {"room", "old"}, {"text", "re"}, {"reply_to", 4}});
  a.send({{"type", "send"}, {"id", 2}, {"room", "old"}, {"text", "after"}});
  auto r1 = a.reply(1), r2 = a.reply(2);
  ASSERT_TRUE(r1 && r2);
  EXPECT_LT((*r1)["seq"].get<uint64_t>(), (*r2)["seq"].get<uint64_t>());
  auto h = history(a, "old");
  EXPECT_EQ(h["messages"][0]["text"], "m1!");
  EXPECT_EQ(h["messages"][1]["reactions"][0]["count"], 1);
  EXPECT_EQ(h["messages"][2]["deleted"], true);
}

TEST_F(Events, RestartKeepsStateAndRecoveryReplaysEventsInOrder) {
  std::string epoch;
  {
    ws_client a, b;
    hello(a, "alice");
    hello(b, "bob");
    epoch = join(a, "keep")["epoch"];
    join(b, "keep");
    ASSERT_EQ(send(a, "keep", "one")["seq"], 1);
    ASSERT_EQ(send(a, "keep", "two")["seq"], 2);
    ASSERT_EQ(ask(a, {{"type", "edit"}, {"room", "keep"}, {"seq", 1}, {"text", "one'"}})["seq"], 3);
    ASSERT_EQ(ask(b, {{"type", "react"}, {"room", "keep"}, {"seq", 1}, {"emoji", "🔥"}})["seq"], 4);
    ASSERT_EQ(ask(a, {{"type", "delete"}, {"room", "keep"}, {"seq", 2}})["seq"], 5);
  }
  ASSERT_EQ(server->terminate(), 0);
  server.reset();
  start();
  ws_client c;
  hello(c, "carol");
  // Recovery from seq 0: every event, in seq order, as stored (the message
  // with its current state, then the changes that lead there).
  // The replayed events come before `joined`.
  c.send({{"type", "join"}, {"id", 7}, {"room", "keep"}, {"since", 0}, {"epoch", epoch}});
  std::vector<json> got;
  for (int i = 0; i < 20; ++i) {
    auto e = c.recv();
    ASSERT_TRUE(e) << "after " << got.size() << " events";
    if (is_type(*e, "joined")) {
      EXPECT_EQ((*e)["recovered"], true) << *e;
      break;
    }
    got.push_back(*e);
  }
  std::vector<std::string> types;
  for (auto& e : got) types.push_back(e["type"]);
  EXPECT_EQ(types, (std::vector<std::string>{"message", "message", "message_edited", "reaction",
                                             "message_deleted"}));
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i]["seq"], i + 1);
  EXPECT_FALSE(got[1].contains("text"));  // deleted: the text is gone for good
  auto h = history(c, "keep");
  ASSERT_EQ(h["messages"].size(), 5u) << h;
  EXPECT_EQ(h["messages"][0]["text"], "one'");
  EXPECT_EQ(h["messages"][0]["reactions"][0]["users"], json::parse(R"(["bob"])"));
  EXPECT_EQ(h["messages"][1]["deleted"], true);
  // And a change after the restart continues the seq.
  ASSERT_TRUE(is_type(ask(c, {{"type", "react"}, {"room", "keep"}, {"seq", 1}, {"emoji", "🔥"}}), "ack"));
  EXPECT_EQ(history(c, "keep")["messages"][0]["reactions"][0]["count"], 2);
}

TEST_F(Events, DeletedTextIsGoneFromTheFile) {
  ws_client a;
  hello(a, "alice");
  join(a, "r");
  ASSERT_EQ(send(a, "r", "zq-very-secret-token-zq")["seq"], 1);
  ASSERT_TRUE(is_type(ask(a, {{"type", "delete"}, {"room", "r"}, {"seq", 1}}), "ack"));
  ASSERT_EQ(server->terminate(), 0);  // checkpoints the WAL into the file
  server.reset();
  std::string all;
  for (auto name : {"/chat.db", "/chat.db-wal"}) {
    FILE* f = std::fopen((dir.path() + name).c_str(), "rb");
    if (!f) continue;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) all.append(buf, n);
    std::fclose(f);
  }
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.find("zq-very-secret-token-zq"), std::string::npos);
}

// The same events when the room lives on a third node: every field crosses
// CAF remoting, mentions reach a user whose connections are on another node.
TEST(EventsCluster, ChangesAndMentionsAcrossThreeNodes) {
  cluster_fixture cl;
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(cl.nodes[i]->ok()) << cl.nodes[i]->log();
    ASSERT_TRUE(cl.ready(i)) << cl.nodes[i]->log();
  }
  auto room = room_homed_on(2, "ev-");
  ws_client a, b, carol;
  ASSERT_TRUE(is_type(a.hello_name(cl.http[0], "alice"), "welcome"));
  ASSERT_TRUE(is_type(b.hello_name(cl.http[1], "bob"), "welcome"));
  ASSERT_TRUE(is_type(carol.hello_name(cl.http[0], "carol"), "welcome"));
  int id = 10;
  auto ask = [&](ws_client& c, json req) {
    auto r = c.request(std::move(req), id++);
    return r ? *r : json();
  };
  ASSERT_TRUE(is_type(ask(a, {{"type", "join"}, {"room", room}}), "joined"));
  ASSERT_TRUE(is_type(ask(b, {{"type", "join"}, {"room", room}}), "joined"));
  auto m = ask(a, {{"type", "send"}, {"room", room}, {"text", "hi @carol"}, {"mentions", {"carol"}}});
  ASSERT_EQ(m["seq"], 1) << m;
  auto n = carol.recv_until([](const json& x) { return is_type(x, "mention"); });
  ASSERT_TRUE(n);
  EXPECT_EQ((*n)["room"], room);
  EXPECT_EQ((*n)["from"], "alice");
  EXPECT_EQ(ask(b, {{"type", "edit"}, {"room", room}, {"seq", 1}, {"text", "x"}})["code"], "forbidden");
  a.send({{"type", "edit"}, {"id", 1}, {"room", room}, {"seq", 1}, {"text", "hi all"}});
  // bob (on n2) sees the edit live, before anything else he asks.
  auto edited = b.recv_until([](const json& x) { return is_type(x, "message_edited"); });
  ASSERT_TRUE(edited);
  EXPECT_EQ((*edited)["text"], "hi all");
  EXPECT_EQ((*edited)["seq"], 2);
  auto ea = a.reply(1);
  ASSERT_TRUE(ea);
  EXPECT_EQ((*ea)["seq"], 2);
  EXPECT_EQ(ask(b, {{"type", "react"}, {"room", room}, {"seq", 1}, {"emoji", "🙌"}})["seq"], 3);
  EXPECT_EQ(ask(b, {{"type", "react"}, {"room", room}, {"seq", 1}, {"emoji", "🙌"}})["noop"], true);
  auto reply = ask(b, {{"type", "send"}, {"room", room}, {"text", "yo"}, {"reply_to", 1}});
  EXPECT_EQ(reply["seq"], 4);
  // bob may not delete alice's message; alice owns the room and may delete his.
  EXPECT_EQ(ask(b, {{"type", "delete"}, {"room", room}, {"seq", 1}})["code"], "forbidden");
  auto del = ask(a, {{"type", "delete"}, {"room", room}, {"seq", 4}});
  EXPECT_EQ(del["seq"], 5) << del;
  auto h = ask(a, {{"type", "history"}, {"room", room}});
  ASSERT_EQ(h["messages"].size(), 5u) << h;
  EXPECT_EQ(h["messages"][0]["text"], "hi all");
  EXPECT_EQ(h["messages"][0]["reactions"][0]["users"], json::parse(R"(["bob"])"));
  EXPECT_EQ(h["messages"][3]["deleted"], true);
  EXPECT_EQ(h["messages"][3]["reply_to"], 1);
  // Memberships live with each room's home; my_rooms asks every node.
  auto local = room_homed_on(0, "ev-local-");
  ASSERT_TRUE(is_type(ask(b, {{"type", "join"}, {"room", local}}), "joined"));
  EXPECT_EQ(ask(b, {{"type", "read"}, {"room", room}, {"seq", 4}})["seq"], 4);
  auto mr = ask(b, {{"type", "my_rooms"}});
  ASSERT_TRUE(is_type(mr, "my_rooms")) << mr;
  ASSERT_EQ(mr["rooms"].size(), 2u) << mr;
  std::map<std::string, json> by_room;
  for (auto& r : mr["rooms"]) by_room[r["room"]] = r;
  EXPECT_EQ(by_room[room]["read_seq"], 4);
  EXPECT_EQ(by_room[room]["last_seq"], 5);
  EXPECT_EQ(by_room[room]["unread"], 0);  // seq 5 is a delete, not a message
  EXPECT_EQ(by_room[local]["role"], "owner");
  EXPECT_EQ(ask(a, {{"type", "my_rooms"}})["rooms"][0]["role"], "owner");
}

// --- memberships, read positions, unread counts, my_rooms, part ----------------------

TEST_F(Events, MembershipsRolesReadPositionsAndUnread) {
  ws_client a, b, b2, c;
  hello(a, "alice");
  hello(b, "bob");
  hello(b2, "bob");
  hello(c, "carol");
  auto ja = join(a, "m1");
  EXPECT_EQ(ja["role"], "owner") << ja;  // the join that created the room
  EXPECT_EQ(ja["read_seq"], 0);
  EXPECT_EQ(ja["unread"], 0);
  auto jb = join(b, "m1");
  EXPECT_EQ(jb["role"], "member") << jb;
  for (int i = 1; i <= 3; ++i) ASSERT_EQ(send(a, "m1", "m" + std::to_string(i))["seq"], i);
  // bob's other connection never joined: my_rooms lists the membership anyway.
  auto mr = ask(b2, {{"type", "my_rooms"}});
  ASSERT_TRUE(is_type(mr, "my_rooms")) << mr;
  EXPECT_EQ(mr["rooms"], json::parse(R"([{"room":"m1","role":"member","last_seq":3,"read_seq":0,
                                          "unread":3,"private":false}])"));
  // read: forward only, never past the room's seq; the other connections hear it.
  auto r = ask(b, {{"type", "read"}, {"room", "m1"}, {"seq", 2}});
  EXPECT_EQ(r, json::parse(R"({"type":"read","id":)" + std::to_string(next_id - 1) +
                           R"(,"room":"m1","seq":2})"));
  auto ev = b2.recv_until([](const json& x) { return is_type(x, "read"); });
  ASSERT_TRUE(ev);
  EXPECT_EQ(*ev, json::parse(R"({"type":"read","room":"m1","seq":2})"));
  EXPECT_EQ(ask(b, {{"type", "read"}, {"room", "m1"}, {"seq", 1}})["seq"], 2);
  EXPECT_EQ(ask(b, {{"type", "read"}, {"room", "m1"}, {"seq", 99}})["seq"], 3);
  EXPECT_FALSE(b.recv_until([](const json& x) { return is_type(x, "read") && !x.contains("id"); },
                            std::chrono::milliseconds(200)));  // not told of its own
  EXPECT_EQ(code_of(ask(c, {{"type", "read"}, {"room", "m1"}, {"seq", 1}})), "not_member");
  EXPECT_EQ(code_of(ask(c, {{"type", "read"}, {"room", "nowhere"}, {"seq", 1}})), "not_found");
  // Own messages and deleted ones are not unread.
  ASSERT_EQ(send(b, "m1", "mine")["seq"], 4);
  ASSERT_EQ(send(a, "m1", "new")["seq"], 5);
  ASSERT_EQ(send(a, "m1", "oops")["seq"], 6);
  ASSERT_TRUE(is_type(ask(a, {{"type", "delete"}, {"room", "m1"}, {"seq", 6}}), "ack"));
  mr = ask(b2, {{"type", "my_rooms"}});
  EXPECT_EQ(mr["rooms"][0]["unread"], 1) << mr;
  EXPECT_EQ(mr["rooms"][0]["read_seq"], 3);
  EXPECT_EQ(mr["rooms"][0]["last_seq"], 7);
  auto j2 = join(b2, "m1");
  EXPECT_EQ(j2["read_seq"], 3) << j2;
  EXPECT_EQ(j2["unread"], 1);
  EXPECT_EQ(j2["role"], "member");
  EXPECT_EQ(ask(a, {{"type", "my_rooms"}})["rooms"][0]["role"], "owner");
  EXPECT_EQ(ask(c, {{"type", "my_rooms"}})["rooms"], json::array());
}

TEST_F(Events, PartEndsTheMembershipOnEveryConnection) {
  ws_client a, b, b2;
  hello(a, "alice");
  hello(b, "bob");
  hello(b2, "bob");
  join(a, "p");
  join(b, "p");
  join(b2, "p");
  ASSERT_EQ(send(a, "p", "one")["seq"], 1);
  auto pr = ask(b, {{"type", "part"}, {"room", "p"}});
  EXPECT_EQ(pr, json::parse(R"({"type":"parted","id":)" + std::to_string(next_id - 1) +
                            R"(,"room":"p"})"));
  auto mj = a.recv_until([](const json& x) { return is_type(x, "member_left"); });
  ASSERT_TRUE(mj);  // both connections went: bob left the room's presence
  EXPECT_EQ((*mj)["user"], "bob");
  auto told = b2.recv_until([](const json& x) { return is_type(x, "parted"); });
  ASSERT_TRUE(told);
  EXPECT_EQ(*told, json::parse(R"({"type":"parted","room":"p"})"));
  EXPECT_EQ(code_of(send(b2, "p", "still here?")), "not_member");
  EXPECT_EQ(ask(b, {{"type", "my_rooms"}})["rooms"], json::array());
  // bob receives nothing more of the room.
  ASSERT_EQ(send(a, "p", "two")["seq"], 2);
  EXPECT_FALSE(b2.recv_until([](const json& x) { return is_type(x, "message"); },
                             std::chrono::milliseconds(200)));
  // A public room may be joined again: a member from now on.
  auto j = join(b, "p");
  EXPECT_EQ(j["role"], "member");
  EXPECT_EQ(j["read_seq"], 2);
  // `joined` of a first join comes once its membership is stored: my_rooms,
  // read from the store, lists the room at once.
  EXPECT_EQ(ask(b, {{"type", "my_rooms"}})["rooms"].size(), 1u);
}

TEST_F(Events, MembershipsAndReadPositionsSurviveARestart) {
  {
    ws_client a, b;
    hello(a, "alice");
    hello(b, "bob");
    join(a, "keep2");
    join(b, "keep2");
    for (int i = 1; i <= 4; ++i) ASSERT_EQ(send(a, "keep2", "m")["seq"], i);
    ASSERT_EQ(ask(b, {{"type", "read"}, {"room", "keep2"}, {"seq", 3}})["seq"], 3);
  }
  ASSERT_EQ(server->terminate(), 0);
  server.reset();
  start({"--history-window", "2"});  // the unread count then comes from the store
  ws_client a, b;
  hello(a, "alice");
  hello(b, "bob");
  auto mr = ask(b, {{"type", "my_rooms"}});
  EXPECT_EQ(mr["rooms"], json::parse(R"([{"room":"keep2","role":"member","last_seq":4,"read_seq":3,
                                          "unread":1,"private":false}])")) << mr;
  EXPECT_EQ(join(a, "keep2")["role"], "owner");
  for (int i = 5; i <= 9; ++i) ASSERT_EQ(send(a, "keep2", "m")["seq"], i);
  auto j = join(b, "keep2");
  EXPECT_EQ(j["read_seq"], 3) << j;
  EXPECT_EQ(j["unread"], 6);  // seqs 4-9, most of them older than the window of 2
}

TEST_F(Events, SearchFindsEveryWordNewestFirstAndNeverDeletedText) {
  ws_client a, b;
  hello(a, "alice");
  hello(b, "bob");
  join(a, "s");
  ASSERT_EQ(send(a, "s", "Deploy failed on staging")["seq"], 1);
  ASSERT_EQ(send(a, "s", "deploy worked")["seq"], 2);
  ASSERT_EQ(send(a, "s", "DEPLOY FAILED again, see ünïcödé")["seq"], 3);
  ASSERT_EQ(send(a, "s", "Ошибка деплоя")["seq"], 4);
  ASSERT_EQ(send(a, "s", "deploy failed: password hunter2")["seq"], 5);
  ASSERT_TRUE(is_type(ask(a, {{"type", "delete"}, {"room", "s"}, {"seq", 5}}), "ack"));
  ASSERT_TRUE(is_type(ask(a, {{"type", "edit"}, {"room", "s"}, {"seq", 2}, {"text", "rollout worked"}}), "ack"));
  auto seqs = [](const json& r) {
    std::vector<uint64_t> out;
    for (auto& m : r["messages"]) out.push_back(m["seq"]);
    return out;
  };
  // A public room: bob searches without joining.
  auto r = ask(b, {{"type", "search"}, {"room", "s"}, {"query", "deploy failed"}, {"limit", 20}});
  ASSERT_TRUE(is_type(r, "search")) << r;
  EXPECT_EQ(r["room"], "s");
  EXPECT_EQ(seqs(r), (std::vector<uint64_t>{3, 1}));
  EXPECT_EQ(r["more"], false);
  EXPECT_EQ(seqs(ask(b, {{"type", "search"}, {"room", "s"}, {"query", "ошибка"}})),
            (std::vector<uint64_t>{4}));
  EXPECT_EQ(seqs(ask(b, {{"type", "search"}, {"room", "s"}, {"query", "unicode"}})),
            (std::vector<uint64_t>{3}));  // diacritics removed
  EXPECT_TRUE(ask(b, {{"type", "search"}, {"room", "s"}, {"query", "hunter2"}})["messages"].empty());
  EXPECT_TRUE(ask(b, {{"type", "search"}, {"room", "s"}, {"query", "deploy worked"}})["messages"].empty());
  EXPECT_EQ(seqs(ask(b, {{"type", "search"}, {"room", "s"}, {"query", "rollout"}})),
            (std::vector<uint64_t>{2}));
  // Paged: newest first, `more`, then `before`.
  auto p1 = ask(b, {{"type", "search"}, {"room", "s"}, {"query", "deploy"}, {"limit", 1}});
  EXPECT_EQ(seqs(p1), (std::vector<uint64_t>{3}));
  EXPECT_EQ(p1["more"], true);
  auto p2 = ask(b, {{"type", "search"}, {"room", "s"}, {"query", "deploy"}, {"before", 3}});
  EXPECT_EQ(seqs(p2), (std::vector<uint64_t>{1}));
  EXPECT_EQ(code_of(ask(b, {{"type", "search"}, {"room", "s"}, {"query", "  "}})), "bad_request");
  EXPECT_EQ(code_of(ask(b, {{"type", "search"}, {"room", "nowhere"}, {"query", "x"}})), "not_found");
  EXPECT_EQ(code_of(ask(b, {{"type", "search"}, {"room", "s"}, {"query", std::string(600, 'x')}})),
            "too_large");
  // Messages stored before a restart are found after it.
  ASSERT_EQ(server->terminate(), 0);
  server.reset();
  start();
  ws_client c;
  hello(c, "carol");
  EXPECT_EQ(seqs(ask(c, {{"type", "search"}, {"room", "s"}, {"query", "staging"}})),
            (std::vector<uint64_t>{1}));
}

// --- room settings, private rooms, invites ---------------------------------------------

TEST_F(Events, RoomSettingsPrivateRoomsAndInvites) {
  ws_client a, b, c;
  hello(a, "alice");
  hello(b, "bob");
  hello(c, "carol");
  ASSERT_EQ(join(a, "club")["role"], "owner");
  auto jb = join(b, "club");
  ASSERT_EQ(jb["role"], "member") << jb;
  EXPECT_EQ(jb["settings"], json::parse(R"({"private":false,"read_only":false,"slow_mode":0})"));
  EXPECT_EQ(code_of(ask(b, {{"type", "room_set"}, {"room", "club"}, {"topic", "mine"}})), "forbidden");
  EXPECT_EQ(code_of(ask(a, {{"type", "room_set"}, {"room", "club"}})), "bad_request");
  auto set = ask(a, {{"type", "room_set"}, {"room", "club"}, {"topic", "Weekly sync ✓"}, {"read_only", true}});
  ASSERT_EQ(set["type"], "ack") << set;
  EXPECT_EQ(set["seq"], 1);
  auto ev = event(b, "moderation");
  EXPECT_EQ(ev["seq"], 1);
  EXPECT_EQ(ev["action"], "settings");
  EXPECT_EQ(ev["by"], "alice");
  EXPECT_EQ(ev["settings"], json::parse(R"({"topic":"Weekly sync ✓","private":false,"read_only":true,"slow_mode":0})"));
  // Read-only: members react and read, only the owner (and moderators) send.
  EXPECT_EQ(code_of(send(b, "club", "me too")), "forbidden");
  EXPECT_EQ(send(a, "club", "agenda")["seq"], 2);
  EXPECT_EQ(ask(b, {{"type", "react"}, {"room", "club"}, {"seq", 2}, {"emoji", "👍"}})["seq"], 3);
  auto info = ask(b, {{"type", "room"}, {"room", "club"}});
  EXPECT_EQ(info, json::parse(R"({"type":"room","id":)" + info["id"].dump() +
                              R"(,"room":"club","topic":"Weekly sync ✓","private":false,)"
                              R"("read_only":true,"slow_mode":0,"last_seq":3,"member_count":2})"));
  ASSERT_EQ(ask(a, {{"type", "room_set"}, {"room", "club"}, {"private", true}, {"read_only", false},
                    {"slow_mode", 3600}})["seq"], 4);
  // A private room is a room that does not exist to outsiders, but for join.
  auto refused = join(c, "club");
  EXPECT_EQ(code_of(refused), "forbidden") << refused;
  auto missing = ask(c, {{"type", "history"}, {"room", "no-such-room-here"}});
  ASSERT_EQ(code_of(missing), "not_found") << missing;
  for (auto type : {"history", "search", "presence", "room"}) {
    json req{{"type", type}, {"room", "club"}};
    if (std::string(type) == "search") req["query"] = "agenda";
    auto r = ask(c, req);
    EXPECT_EQ(code_of(r), "not_found") << type << " " << r;
    EXPECT_EQ(r["message"], missing["message"]) << type;
  }
  // Only the owner and moderators invite; the invitee hears of it.
  EXPECT_EQ(code_of(ask(b, {{"type", "invite"}, {"room", "club"}, {"user", "carol"}})), "forbidden");
  auto inv = ask(a, {{"type", "invite"}, {"room", "club"}, {"user", "carol"}});
  EXPECT_EQ(inv["type"], "ack") << inv;
  EXPECT_FALSE(inv.contains("seq")) << inv;
  auto told = event(c, "invited");
  EXPECT_EQ(told, json::parse(R"({"type":"invited","room":"club","by":"alice"})"));
  auto jc = join(c, "club");
  ASSERT_TRUE(is_type(jc, "joined")) << jc;
  EXPECT_EQ(jc["settings"]["private"], true);
  EXPECT_EQ(jc["settings"]["slow_mode"], 3600);
  // Slow mode: one message per hour for a member, none for the owner.
  EXPECT_TRUE(send(c, "club", "hello all").contains("seq"));
  auto slow = send(c, "club", "and again");
  EXPECT_EQ(code_of(slow), "rate_limited") << slow;
  EXPECT_GT(slow.value("retry_ms", 0), 3500000) << slow;
  EXPECT_TRUE(send(a, "club", "owner 1").contains("seq"));
  EXPECT_TRUE(send(a, "club", "owner 2").contains("seq"));
  auto mine = ask(c, {{"type", "my_rooms"}});
  ASSERT_EQ(mine["rooms"].size(), 1u) << mine;
  EXPECT_EQ(mine["rooms"][0]["topic"], "Weekly sync ✓");
  EXPECT_EQ(mine["rooms"][0]["private"], true);
  // A restart keeps every setting and membership.
  a.close();
  b.close();
  c.close();
  server.reset();
  start();
  ws_client a2, d;
  hello(a2, "alice");
  hello(d, "dave");
  auto after = ask(a2, {{"type", "room"}, {"room", "club"}});
  EXPECT_EQ(after["topic"], "Weekly sync ✓") << after;
  EXPECT_EQ(after["private"], true);
  EXPECT_EQ(after["member_count"], 3);
  EXPECT_EQ(code_of(join(d, "club")), "forbidden");
  auto h = history(a2, "club");
  ASSERT_GE(h["messages"].size(), 4u) << h;
  EXPECT_EQ(h["messages"][0]["type"], "moderation");
}

// --- moderation -------------------------------------------------------------------------

TEST_F(Events, KickBanMuteAndRolesHoldAcrossARestart) {
  ws_client a, b, c;
  hello(a, "alice");
  hello(b, "bob");
  hello(c, "carol");
  ASSERT_EQ(join(a, "mod")["role"], "owner");
  join(b, "mod");
  join(c, "mod");
  EXPECT_EQ(code_of(ask(b, {{"type", "kick"}, {"room", "mod"}, {"user", "carol"}})), "forbidden");
  auto promoted = ask(a, {{"type", "role"}, {"room", "mod"}, {"user", "bob"}, {"role", "moderator"}});
  EXPECT_EQ(promoted["seq"], 1) << promoted;
  EXPECT_EQ(code_of(ask(b, {{"type", "ban"}, {"room", "mod"}, {"user", "alice"}})), "forbidden");
  auto ban = ask(b, {{"type", "ban"}, {"room", "mod"}, {"user", "carol"}, {"reason", "spam ✗"}});
  EXPECT_EQ(ban["seq"], 2) << ban;
  auto kicked = event(c, "kicked");
  EXPECT_EQ(kicked, json::parse(R"({"type":"kicked","room":"mod","by":"bob","reason":"spam ✗","ban":true})"));
  auto ev = event(a, "moderation");
  ev = ev["action"] == "role" ? event(a, "moderation") : ev;
  EXPECT_EQ(ev["action"], "ban");
  EXPECT_EQ(ev["user"], "carol");
  // The banned connection stays open but hears nothing more of the room.
  EXPECT_TRUE(send(a, "mod", "after the ban").contains("seq"));
  EXPECT_EQ(code_of(ask(c, {{"type", "history"}, {"room", "mod"}})), "forbidden");
  EXPECT_EQ(code_of(join(c, "mod")), "forbidden");
  auto mute = ask(a, {{"type", "mute"}, {"room", "mod"}, {"user", "bob"}, {"seconds", 600}});
  EXPECT_EQ(mute["seq"], 4) << mute;
  EXPECT_EQ(code_of(send(b, "mod", "shh")), "forbidden");
  // Stored: a restart keeps the ban and the mute.
  a.close();
  b.close();
  c.close();
  server.reset();
  start();
  ws_client a2, b2, c2;
  hello(a2, "alice");
  hello(b2, "bob");
  hello(c2, "carol");
  EXPECT_EQ(code_of(join(c2, "mod")), "forbidden");
  ASSERT_TRUE(is_type(join(b2, "mod"), "joined"));
  EXPECT_EQ(code_of(send(b2, "mod", "still muted?")), "forbidden");
  join(a2, "mod");
  EXPECT_TRUE(ask(a2, {{"type", "unban"}, {"room", "mod"}, {"user", "carol"}}).contains("seq"));
  EXPECT_TRUE(ask(a2, {{"type", "unmute"}, {"room", "mod"}, {"user", "bob"}}).contains("seq"));
  EXPECT_TRUE(is_type(join(c2, "mod"), "joined"));
  EXPECT_TRUE(send(b2, "mod", "thanks").contains("seq"));
  auto h = history(a2, "mod");
  std::vector<std::string> actions;
  for (auto& m : h["messages"])
    if (m["type"] == "moderation") actions.push_back(m["action"]);
  EXPECT_EQ(actions, (std::vector<std::string>{"role", "ban", "mute", "unban", "unmute"}));
}

// Settings, a private room, an invite and a ban when the room lives on a third
// node: the checks run at the room's home, the notices reach users on others.
TEST(EventsCluster, PrivateRoomInviteAndBanAcrossThreeNodes) {
  cluster_fixture cl;
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(cl.nodes[i]->ok()) << cl.nodes[i]->log();
    ASSERT_TRUE(cl.ready(i)) << cl.nodes[i]->log();
  }
  auto room = room_homed_on(2, "priv-");
  ws_client a, b;
  ASSERT_TRUE(is_type(a.hello_name(cl.http[0], "alice"), "welcome"));
  ASSERT_TRUE(is_type(b.hello_name(cl.http[1], "bob"), "welcome"));
  int id = 10;
  auto ask = [&](ws_client& c, json req) {
    auto r = c.request(std::move(req), id++);
    return r ? *r : json();
  };
  ASSERT_EQ(ask(a, {{"type", "join"}, {"room", room}})["role"], "owner");
  auto set = ask(a, {{"type", "room_set"}, {"room", room}, {"private", true}, {"topic", "inner circle"}});
  ASSERT_EQ(set["seq"], 1) << set;
  EXPECT_EQ(ask(b, {{"type", "join"}, {"room", room}})["code"], "forbidden");
  EXPECT_EQ(ask(b, {{"type", "room"}, {"room", room}})["code"], "not_found");
  EXPECT_EQ(ask(a, {{"type", "invite"}, {"room", room}, {"user", "bob"}})["type"], "ack");
  auto invited = b.recv_until([](const json& x) { return is_type(x, "invited"); });
  ASSERT_TRUE(invited);
  EXPECT_EQ((*invited)["by"], "alice");
  auto jb = ask(b, {{"type", "join"}, {"room", room}});
  ASSERT_TRUE(is_type(jb, "joined")) << jb;
  EXPECT_EQ(jb["settings"]["topic"], "inner circle");
  auto mine = ask(b, {{"type", "my_rooms"}});
  ASSERT_EQ(mine["rooms"].size(), 1u) << mine;
  EXPECT_EQ(mine["rooms"][0]["private"], true);
  EXPECT_EQ(ask(a, {{"type", "ban"}, {"room", room}, {"user", "bob"}, {"seconds", 60}})["seq"], 2);
  auto kicked = b.recv_until([](const json& x) { return is_type(x, "kicked"); });
  ASSERT_TRUE(kicked);
  EXPECT_EQ((*kicked)["ban"], true);
  EXPECT_EQ(ask(b, {{"type", "join"}, {"room", room}})["code"], "forbidden");
  // bob's node no longer delivers the room to him.
  EXPECT_TRUE(ask(a, {{"type", "send"}, {"room", room}, {"text", "bob is gone"}}).contains("seq"));
  EXPECT_EQ(ask(b, {{"type", "rooms"}})["rooms"], json::array());
}

namespace {

const std::string kBanKey = "ban-test-api-key-0123456789";

// An API call with the key on `port`; the parsed body goes to `out`.
int api(uint16_t port, const std::string& method, const std::string& target, const json& body,
        json& out) {
  http_headers h{{"Authorization", "Bearer " + kBanKey}};
  if (!body.is_null()) h.emplace_back("Content-Type", "application/json");
  std::string res;
  int status = http_request(port, method, target, h, body.is_null() ? "" : body.dump(), res);
  out = json::parse(res, nullptr, false);
  return status;
}

// Until GET /api/users/{user}/ban on `port` says `banned` (bounded: ~5 s).
bool ban_known(uint16_t port, const std::string& user, bool banned) {
  for (int i = 0; i < 100; ++i) {
    json out;
    if (api(port, "GET", "/api/users/" + user + "/ban", nullptr, out) == 200 &&
        out.value("banned", !banned) == banned)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling another process
  }
  return false;
}

}  // namespace

// Server-wide bans (PROTOCOL-v2 "Moderation"): every connection of the user
// closes with 4003, hello is refused (unauthorized, 4003) whatever the token
// or name, a restart keeps the ban, DELETE lifts it.
TEST_F(Events, ServerWideBanClosesWith4003RefusesHelloAndHoldsAcrossARestart) {
  server.reset();
  start({"--api-key", kBanKey});
  ws_client a1, a2, b;
  hello(a1, "alice");
  hello(a2, "alice");
  hello(b, "bob");
  join(b, "r");
  json out;
  EXPECT_EQ(api(server->port(), "GET", "/api/users/alice/ban", nullptr, out), 200);
  EXPECT_EQ(out, json::parse(R"({"user":"alice","banned":false})"));
  ASSERT_EQ(api(server->port(), "POST", "/api/users/alice/ban", {{"reason", "spam links"}}, out), 200)
      << out;
  EXPECT_EQ(out, json::parse(R"({"user":"alice","banned":true,"until":null,"reason":"spam links"})"));
  for (auto* c : {&a1, &a2}) {
    EXPECT_EQ(c->wait_close(), 4003);
    EXPECT_EQ(c->close_reason(), "banned from the server");
  }
  EXPECT_TRUE(send(b, "r", "bob stays").contains("seq"));  // others are not touched
  ws_client again;
  auto w = again.hello_name(server->port(), "alice");
  EXPECT_EQ(code_of(w), "unauthorized") << w;
  EXPECT_NE(w.value("message", "").find("spam links"), std::string::npos) << w;
  EXPECT_EQ(again.wait_close(), 4003);

  // Bad requests.
  EXPECT_EQ(api(server->port(), "POST", "/api/users/bob/ban", {{"seconds", 0}}, out), 400);
  EXPECT_EQ(api(server->port(), "POST", "/api/users/bob/ban", {{"seconds", "60"}}, out), 400);
  EXPECT_EQ(api(server->port(), "POST", "/api/users/bob/ban", {{"reason", "two\nlines"}}, out), 400);
  EXPECT_EQ(api(server->port(), "POST", "/api/users/a%3Ab/ban", nullptr, out), 400);
  EXPECT_EQ(api(server->port(), "PUT", "/api/users/bob/ban", nullptr, out), 405);

  // A ban for a time says until when.
  ASSERT_EQ(api(server->port(), "POST", "/api/users/carol/ban", {{"seconds", 3600}}, out), 200);
  ASSERT_TRUE(out["until"].is_number_integer()) << out;
  EXPECT_GT(out["until"].get<int64_t>(), 0);

  // Stored: a restart keeps both.
  b.close();
  server.reset();
  start({"--api-key", kBanKey});
  ws_client a3, c3;
  EXPECT_EQ(code_of(a3.hello_name(server->port(), "alice")), "unauthorized");
  EXPECT_EQ(a3.wait_close(), 4003);
  EXPECT_EQ(code_of(c3.hello_name(server->port(), "carol")), "unauthorized");
  EXPECT_EQ(api(server->port(), "GET", "/api/users/carol/ban", nullptr, out), 200);
  EXPECT_EQ(out["banned"], true) << out;

  // Lifted.
  ASSERT_EQ(api(server->port(), "DELETE", "/api/users/alice/ban", nullptr, out), 200);
  EXPECT_EQ(out, json::parse(R"({"user":"alice","banned":false})"));
  ws_client a4;
  hello(a4, "alice");
  server.reset();
  start({"--api-key", kBanKey});
  ws_client a5;
  hello(a5, "alice");  // the lift is stored too
}

// A ban made through one node closes the user's connections on the others
// and refuses their hello there; a lift made through another node lets them in.
TEST(EventsCluster, ServerWideBanHoldsOnEveryNode) {
  cluster_fixture cl;
  auto store = cl.store_args;
  cl.store_args = [store](size_t i) {
    auto a = store(i);
    a.push_back("--api-key");
    a.push_back(kBanKey);
    return a;
  };
  for (size_t i = 0; i < 3; ++i) cl.start(i);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(cl.nodes[i]->ok()) << cl.nodes[i]->log();
    ASSERT_TRUE(cl.ready(i)) << cl.nodes[i]->log();
  }
  ws_client a2, a3;
  ASSERT_TRUE(is_type(a2.hello_name(cl.http[1], "mallory"), "welcome"));
  ASSERT_TRUE(is_type(a3.hello_name(cl.http[2], "mallory"), "welcome"));
  json out;
  ASSERT_EQ(api(cl.http[0], "POST", "/api/users/mallory/ban", {{"reason", "abuse"}}, out), 200)
      << out;
  EXPECT_EQ(a2.wait_close(), 4003);
  EXPECT_EQ(a3.wait_close(), 4003);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(ban_known(cl.http[i], "mallory", true)) << "node " << i;
    ws_client again;
    auto w = again.hello_name(cl.http[i], "mallory");
    EXPECT_EQ(code_of(w), "unauthorized") << "node " << i << ": " << w;
    EXPECT_EQ(again.wait_close(), 4003);
  }
  ASSERT_EQ(api(cl.http[2], "DELETE", "/api/users/mallory/ban", nullptr, out), 200) << out;
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(ban_known(cl.http[i], "mallory", false)) << "node " << i;
    ws_client back;
    EXPECT_TRUE(is_type(back.hello_name(cl.http[i], "mallory"), "welcome")) << "node " << i;
  }
}
