// Acked means stored: SIGKILL mid-stream, restart on the same SQLite file.
#include <gtest/gtest.h>

#include <map>

#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {


std::vector<std::string> args(const temp_dir& dir) {
  return {"--allow-anonymous", "--db", dir.path() + "/data/chat.db", "--log-level", "warn",
          "--rate", "100000", "--burst", "100000"};
}

// Every message of a room, oldest first, paging back with `before`.
std::vector<json> full_history(ws_client& c, const std::string& room) {
  std::vector<json> out;
  uint64_t before = 0;
  for (int page = 0; page < 1000; ++page) {
    json req{{"type", "history"}, {"room", room}, {"limit", 100}};
    if (before) req["before"] = before;
    auto h = c.request(req, 900000 + page);
    if (!h || !is_type(*h, "history")) break;
    auto& msgs = (*h)["messages"];
    out.insert(out.begin(), msgs.begin(), msgs.end());
    if (!(*h)["more"].get<bool>() || msgs.empty()) break;
    before = msgs[0]["seq"];
  }
  return out;
}

std::string text_of_ack(const json& ack) {
  return "m" + std::to_string(ack["id"].get<int>() - 1000);
}

}  // namespace

TEST(Durability, AckedMessagesSurviveKill9) {
  temp_dir dir;
  std::map<uint64_t, std::string> acked;  // seq -> text
  std::string epoch;
  {
    chatd_process s{args(dir)};
    ASSERT_TRUE(s.ok()) << s.log();
    ws_client c;
    ASSERT_TRUE(is_type(c.hello_name(s.port(), "writer"), "welcome"));
    auto j = c.request({{"type", "join"}, {"room", "dur"}}, 1);
    ASSERT_TRUE(j);
    epoch = (*j)["epoch"];
    ASSERT_TRUE(c.request({{"type", "send"}, {"room", "dur"}, {"text", "keyed"},
                           {"idempotency_key", "k-1"}}, 2));
    acked[1] = "keyed";
    // 500 sends in flight; kill the server once 250 acks came back.
    for (int i = 0; i < 500; ++i)
      c.send({{"type", "send"}, {"id", 1000 + i}, {"room", "dur"}, {"text", "m" + std::to_string(i)}});
    while (acked.size() < 251) {
      auto r = c.recv(10s);
      ASSERT_TRUE(r) << "server stopped answering";
      if (is_type(*r, "ack")) acked[(*r)["seq"]] = text_of_ack(*r);
    }
    s.kill9();
    // Acks already on the wire count too: each was sent after its commit.
    while (auto r = c.recv(2s))
      if (is_type(*r, "ack")) acked[(*r)["seq"]] = text_of_ack(*r);
  }
  chatd_process s{args(dir)};
  ASSERT_TRUE(s.ok()) << s.log();
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_name(s.port(), "reader"), "welcome"));
  auto j = c.request({{"type", "join"}, {"room", "dur"}}, 1);
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["epoch"], epoch) << "history was not lost: the epoch must not change";
  uint64_t last = (*j)["seq"];
  EXPECT_GE(last, acked.rbegin()->first);
  auto all = full_history(c, "dur");
  ASSERT_EQ(all.size(), last);
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i]["seq"], i + 1) << "gap or duplicate";
  for (auto& [seq, text] : acked) EXPECT_EQ(all[seq - 1]["text"], text) << "seq " << seq;
  // Recovery after the restart returns exactly the missed ones.
  ws_client r;
  ASSERT_TRUE(is_type(r.hello_name(s.port(), "late"), "welcome"));
  r.send({{"type", "join"}, {"id", 5}, {"room", "dur"}, {"since", 100}, {"epoch", epoch}});
  uint64_t expect = 101;
  for (;;) {
    auto m = r.recv();
    ASSERT_TRUE(m);
    if (is_type(*m, "message")) {
      ASSERT_EQ((*m)["seq"], expect++);
    }
    if (is_type(*m, "joined")) {
      EXPECT_EQ((*m)["recovered"], true);
      break;
    }
  }
  EXPECT_EQ(expect, last + 1);
  // The writer's idempotency key still holds, and seq continues without a gap.
  ws_client w;
  ASSERT_TRUE(is_type(w.hello_name(s.port(), "writer"), "welcome"));
  ASSERT_TRUE(w.request({{"type", "join"}, {"room", "dur"}}, 1));
  auto again = w.request({{"type", "send"}, {"room", "dur"}, {"text", "keyed"},
                          {"idempotency_key", "k-1"}}, 6);
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)["seq"], 1);
  auto next = c.request({{"type", "send"}, {"room", "dur"}, {"text", "after"}}, 7);
  ASSERT_TRUE(next);
  EXPECT_EQ((*next)["seq"], last + 1);
}

TEST(Durability, DirectMessagesAndGracefulRestart) {
  temp_dir dir;
  {
    chatd_process s{args(dir)};
    ASSERT_TRUE(s.ok());
    ws_client a;
    ASSERT_TRUE(is_type(a.hello_name(s.port(), "alice"), "welcome"));
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(a.request({{"type", "dm"}, {"to", "bob"}, {"text", "dm" + std::to_string(i)}}, i));
    EXPECT_EQ(s.terminate(), 0);
  }
  chatd_process s{args(dir)};
  ASSERT_TRUE(s.ok());
  ws_client b;
  ASSERT_TRUE(is_type(b.hello_name(s.port(), "bob"), "welcome"));
  auto h = b.request({{"type", "history"}, {"room", "dm:alice:bob"}}, 1);
  ASSERT_TRUE(h);
  ASSERT_EQ((*h)["messages"].size(), 3u);
  EXPECT_EQ((*h)["messages"][2]["text"], "dm2");
}

TEST(Durability, MemoryStoreRestartChangesEpoch) {
  std::string e1;
  {
    chatd_process s{{"--allow-anonymous", "--store", "memory", "--log-level", "warn"}};
    ws_client c;
    ASSERT_TRUE(is_type(c.hello_name(s.port(), "a"), "welcome"));
    e1 = (*c.request({{"type", "join"}, {"room", "x"}}, 1))["epoch"];
  }
  chatd_process s{{"--allow-anonymous", "--store", "memory", "--log-level", "warn"}};
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_name(s.port(), "a"), "welcome"));
  auto j = c.request({{"type", "join"}, {"room", "x"}, {"since", 3}, {"epoch", e1}}, 1);
  ASSERT_TRUE(j);
  EXPECT_NE((*j)["epoch"], e1);
  EXPECT_EQ((*j)["recovered"], false);
}

TEST(Durability, UnusableDatabaseFailsAtStartWithAClearError) {
  temp_dir dir;
  auto path = dir.path() + "/garbage.db";
  FILE* f = fopen(path.c_str(), "w");
  fputs("this is not a database, not even close; it is just text.....................", f);
  fclose(f);
  chatd_process s{{"--allow-anonymous", "--db", path}};
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.log().find("cannot open the database"), std::string::npos) << s.log();
}
