// Issue 11 against a real chatd: what an anonymous client must not be able to do
// (rows from typing or reads, unbudgeted frames, passing for another user).
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "gateway/auth.hpp"
#include "messages/clock.hpp"
#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {

const std::string kKey = "test-api-key-0123456789";

std::vector<std::string> sqlite_args(const temp_dir& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> a{"--allow-anonymous", "--db", dir.path() + "/chat.db",
                             "--log-level", "warn", "--api-key", kKey};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Rows of the `rooms` table in the SQLite file the node writes (read beside it: WAL).
long long room_rows(const temp_dir& dir) {
  sqlite3* db = nullptr;
  long long n = -1;
  if (sqlite3_open_v2((dir.path() + "/chat.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM rooms", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

// A stored send in room `room`: its ack means the store has done everything
// asked of it before (it answers in order), so the row count is settled.
void barrier(ws_client& c, const std::string& room, int id) {
  auto j = c.request({{"type", "join"}, {"room", room}}, id);
  ASSERT_TRUE(j && is_type(*j, "joined")) << (j ? j->dump() : "timeout");
  auto a = c.request({{"type", "send"}, {"room", room}, {"text", "sync"}}, id + 1, 20s);
  ASSERT_TRUE(a && is_type(*a, "ack")) << (a ? a->dump() : "timeout");
}

}  // namespace

// Case 1: `typing` to made-up dm names created a room actor and an fsync'd row
// each, and typing skipped every rate budget.
TEST(Abuse, TypingToDmNamesCreatesNothing) {
  temp_dir dir;
  chatd_process s{sqlite_args(dir, {"--rate", "1000", "--burst", "1000"})};
  ASSERT_TRUE(s.ok()) << s.log();
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_name(s.port(), "alice"), "welcome"));
  for (int i = 0; i < 3000; ++i)
    c.send({{"type", "typing"}, {"room", "dm:alice:u" + std::to_string(i)}});
  barrier(c, "sync", 1);
  EXPECT_EQ(room_rows(dir), 1);  // "sync" only
  // A dm join of a pair that never exchanged a dm does not create it either.
  auto j = c.request({{"type", "join"}, {"room", "dm:alice:zed"}}, 5);
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["code"], "not_found") << *j;
  barrier(c, "sync", 6);
  EXPECT_EQ(room_rows(dir), 1);
  // A real dm does create it, and then the join works.
  auto d = c.request({{"type", "dm"}, {"to", "zed"}, {"text", "hi"}}, 8);
  ASSERT_TRUE(d && is_type(*d, "ack")) << (d ? d->dump() : "timeout");
  EXPECT_EQ(room_rows(dir), 2);
  j = c.request({{"type", "join"}, {"room", "dm:alice:zed"}}, 9);
  ASSERT_TRUE(j && is_type(*j, "joined")) << (j ? j->dump() : "timeout");
}

TEST(Abuse, PingAndTypingHaveRateBudgets) {
  chatd_process s{{"--allow-anonymous", "--store", "memory", "--log-level", "warn", "--rate", "2",
                   "--burst", "5"}};
  ASSERT_TRUE(s.ok()) << s.log();
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_name(s.port(), "alice"), "welcome"));
  for (int i = 0; i < 100; ++i) c.send({{"type", "ping"}, {"id", 100 + i}});
  int pongs = 0, limited = 0;
  while (pongs + limited < 100) {
    auto r = c.recv_until([](const json& x) { return x.contains("id"); });
    ASSERT_TRUE(r);
    if (is_type(*r, "pong")) ++pongs;
    if ((*r).value("code", "") == "rate_limited") ++limited;
  }
  EXPECT_LE(pongs, 10);  // the burst, and what refilled meanwhile
  EXPECT_GE(limited, 90);
}

// Case 7: history/presence of a room that never existed answered 404 (API) and
// still inserted a `rooms` row.
TEST(Abuse, ReadsOfUnknownRoomsAnswerNotFoundAndWriteNothing) {
  temp_dir dir;
  chatd_process s{sqlite_args(dir)};
  ASSERT_TRUE(s.ok()) << s.log();
  ws_client c;
  ASSERT_TRUE(is_type(c.hello_name(s.port(), "alice"), "welcome"));
  auto h = c.request({{"type", "history"}, {"room", "ghost"}, {"limit", 50}}, 1);
  ASSERT_TRUE(h);
  EXPECT_EQ((*h)["code"], "not_found") << *h;
  auto p = c.request({{"type", "presence"}, {"room", "ghost2"}}, 2);
  ASSERT_TRUE(p);
  EXPECT_EQ((*p)["code"], "not_found") << *p;
  http_headers auth{{"Authorization", "Bearer " + kKey}};
  std::string body;
  EXPECT_EQ(http_request(s.port(), "GET", "/api/rooms/ghost3/history", auth, "", body), 404);
  EXPECT_EQ(http_request(s.port(), "GET", "/api/rooms/ghost4/presence", auth, "", body), 404);
  barrier(c, "sync", 3);
  EXPECT_EQ(room_rows(dir), 1);
  // A room that exists still reads.
  EXPECT_EQ(http_request(s.port(), "GET", "/api/rooms/sync/history", auth, "", body), 200);
  h = c.request({{"type", "history"}, {"room", "sync"}, {"limit", 50}}, 5);
  ASSERT_TRUE(h && is_type(*h, "history")) << (h ? h->dump() : "timeout");
}

// Case 5: with --jwt-secret and --allow-anonymous, `hello {"name":"alice"}` became
// the token user alice (her DMs, and 4009 for her real connections).
TEST(Abuse, AnonymousNeverPassesForATokenUser) {
  const std::string secret = "abuse-test-secret";
  chatd_process s{{"--allow-anonymous", "--jwt-secret", secret, "--store", "memory",
                   "--log-level", "warn", "--max-conns-per-user", "1"}};
  ASSERT_TRUE(s.ok()) << s.log();
  chat::auth_config cfg;
  cfg.hs256_secret = secret;
  chat::token_spec spec;
  spec.user = "alice";
  std::string err;
  auto token = chat::mint_token(cfg, spec, chat::now_ms() / 1000, err);
  ASSERT_FALSE(token.empty()) << err;
  ws_client real, fake;
  auto w = real.hello_token(s.port(), token);
  ASSERT_TRUE(is_type(w, "welcome")) << w;
  EXPECT_EQ(w["user"], "alice");
  auto d = real.request({{"type", "dm"}, {"to", "bob"}, {"text", "secret"}}, 2);
  ASSERT_TRUE(d && is_type(*d, "ack"));
  auto f = fake.hello_name(s.port(), "alice");
  ASSERT_TRUE(is_type(f, "welcome")) << f;
  EXPECT_EQ(f["user"], "~alice");
  EXPECT_EQ(f["name"], "alice");
  auto h = fake.request({{"type", "history"}, {"room", "dm:alice:bob"}, {"limit", 50}}, 3);
  ASSERT_TRUE(h);
  EXPECT_EQ((*h)["code"], "forbidden") << *h;
  // The real alice was not pushed out (one connection per user allowed).
  auto p = real.request({{"type", "ping"}}, 4);
  ASSERT_TRUE(p && is_type(*p, "pong"));
}

// Case 9: `system` (what server-API posts show) and look-alikes of other names.
TEST(Abuse, ReservedAndLookAlikeNamesRefused) {
  chatd_process s{{"--allow-anonymous", "--store", "memory", "--log-level", "warn"}};
  ASSERT_TRUE(s.ok()) << s.log();
  for (std::string bad : {"system", "System", "admin", "alice ", "\xD0\xB0lice",
                          "\xE2\x80\xAE" "ecila"}) {
    ws_client c;
    auto e = c.hello_name(s.port(), bad);
    EXPECT_EQ(e["code"], "unauthorized") << bad << " " << e;
    EXPECT_EQ(c.wait_close(), 4001) << bad;
  }
  ws_client ok;
  EXPECT_TRUE(is_type(ok.hello_name(s.port(), "alice"), "welcome"));
}

// Case 2: after 20 sends with 62 KiB of data, a history of 50 was queued whole
// (over --queue-limit) and closed the reader 4008: the room was unreadable.
TEST(Abuse, LargeHistoryIsPagedInsteadOfClosingTheReader) {
  chatd_process s{{"--allow-anonymous", "--store", "memory", "--log-level", "warn"}};
  ASSERT_TRUE(s.ok()) << s.log();
  ws_client w;
  ASSERT_TRUE(is_type(w.hello_name(s.port(), "writer"), "welcome"));
  ASSERT_TRUE(w.request({{"type", "join"}, {"room", "big"}}, 1));
  json data = {{"blob", std::string(62 * 1024, 'x')}};
  for (int i = 0; i < 20; ++i) {
    auto a = w.request({{"type", "send"}, {"room", "big"}, {"text", std::to_string(i)}, {"data", data}},
                       10 + i);
    ASSERT_TRUE(a && is_type(*a, "ack")) << (a ? a->dump() : "timeout");
  }
  ws_client r;
  ASSERT_TRUE(is_type(r.hello_name(s.port(), "reader"), "welcome"));
  std::vector<uint64_t> seqs;
  uint64_t before = 0;
  for (int page = 0; page < 20; ++page) {
    json q = {{"type", "history"}, {"room", "big"}, {"limit", 50}};
    if (before) q["before"] = before;
    auto h = r.request(q, 100 + page);
    ASSERT_TRUE(h && is_type(*h, "history")) << (h ? h->dump().substr(0, 200) : "timeout/closed");
    auto& msgs = (*h)["messages"];
    ASSERT_FALSE(msgs.empty());
    EXPECT_LT(msgs.size(), 20u);  // bounded in bytes, not only in count
    for (auto it = msgs.rbegin(); it != msgs.rend(); ++it) seqs.push_back((*it)["seq"]);
    before = msgs.front()["seq"];
    if (!(*h)["more"].get<bool>()) break;
  }
  ASSERT_EQ(seqs.size(), 20u);
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], 20 - i);
  EXPECT_FALSE(r.closed());
}
