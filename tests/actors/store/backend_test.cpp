// Behaviour of the store backends, run against each of them: the memory one,
// SQLite on a real file in a fresh temporary directory, and PostgreSQL on a
// private server of this test binary (tests/support/pg_instance.hpp), a fresh
// database per test. No mocks.
#include "actors/store/backend.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "messages/types.hpp"
#include "tests/support/pg_instance.hpp"

namespace chat::detail {
// Defined in sqlite_backend.cpp, deliberately not in the header.
bool sqlite_exec(store_backend& b, const std::string& sql, std::string& err);
}  // namespace chat::detail

namespace {

using namespace chat;
namespace fs = std::filesystem;

std::string make_temp_dir() {
  char tmpl[] = "/tmp/store_test.XXXXXX";
  const char* dir = mkdtemp(tmpl);
  return dir ? dir : "";
}

stored_msg msg(uint64_t seq, int64_t ts, std::string text = "hello", std::string idem = "",
               std::string data = "") {
  stored_msg m;
  m.seq = seq;
  m.ts = ts;
  m.from = "alice";
  m.name = "Alice";
  m.text = std::move(text);
  m.data = std::move(data);
  m.idem_key = std::move(idem);
  return m;
}

// Messages first..last of `room`, ts = seq * 1000.
append_batch batch(const std::string& room, uint64_t first, uint64_t last) {
  append_batch b;
  b.room = room;
  for (auto s = first; s <= last; ++s) b.msgs.push_back(msg(s, static_cast<int64_t>(s) * 1000));
  return b;
}

std::vector<uint64_t> seqs_of(const std::vector<stored_msg>& ms) {
  std::vector<uint64_t> out;
  for (auto& m : ms) out.push_back(m.seq);
  return out;
}

std::vector<uint64_t> span(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (auto s = first; s <= last; ++s) out.push_back(s);
  return out;
}

bool is_epoch(const std::string& e) {
  return e.size() == 16 && std::all_of(e.begin(), e.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// --- the backends ------------------------------------------------------------------
// `place` makes the storage of one test (in the fresh directory `dir`);
// `open` opens a backend on it (again after a reopen); `drop` removes it.

struct memory_kind {
  static constexpr const char* name = "memory";
  static constexpr bool persistent = false;
  static std::string place(const std::string& dir, std::string&) { return dir; }
  static std::unique_ptr<store_backend> open(const std::string&, std::string&) {
    return make_memory_backend(0);
  }
  static void drop(const std::string&) {}
};

struct sqlite_kind {
  static constexpr const char* name = "sqlite";
  static constexpr bool persistent = true;
  static std::string place(const std::string& dir, std::string&) { return dir + "/chat.db"; }
  static std::unique_ptr<store_backend> open(const std::string& path, std::string& err) {
    return make_sqlite_backend(path, err);
  }
  static void drop(const std::string&) {}
};

struct postgres_kind {
  static constexpr const char* name = "postgres";
  static constexpr bool persistent = true;
  static std::string place(const std::string&, std::string& err) {
    return chat_test::pg_instance::shared().fresh_database(err);
  }
  static std::unique_ptr<store_backend> open(const std::string& url, std::string& err) {
    return make_postgres_backend(url, 2, err);
  }
  static void drop(const std::string& url) {
    std::string err;
    if (!url.empty() && chat_test::pg_instance::shared().running()) {
      EXPECT_TRUE(chat_test::pg_instance::shared().drop_database(url, err)) << err;
    }
  }
};

template <class Kind>
class store_backend_test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir();
    ASSERT_FALSE(dir_.empty());
    std::string err;
    place_ = Kind::place(dir_, err);
    ASSERT_FALSE(place_.empty()) << err;
    reopen();
  }

  void TearDown() override {
    b_.reset();
    other_.reset();
    Kind::drop(place_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void reopen() {
    b_.reset();  // close before opening the same file again
    std::string err;
    b_ = Kind::open(place_, err);
    ASSERT_NE(b_, nullptr) << err;
  }

  // Another backend on the same storage: another node (persistent kinds), or
  // the same one for memory (its storage lives in the object).
  store_backend& other() {
    if (!Kind::persistent) return *b_;
    if (!other_) {
      std::string err;
      other_ = Kind::open(place_, err);
      EXPECT_NE(other_, nullptr) << err;
    }
    return *other_;
  }

  room_snapshot load(const std::string& room, uint32_t recent = 50, int64_t idem_since = 0) {
    room_snapshot s;
    std::string err;
    EXPECT_TRUE(b_->load_room(room, recent, idem_since, s, err)) << err;
    return s;
  }

  room_snapshot claim(const std::string& room, const std::string& owner,
                      store_backend* on = nullptr, uint32_t recent = 50) {
    room_snapshot s;
    std::string err;
    EXPECT_TRUE((on ? on : b_.get())->claim_room(room, owner, recent, 0, s, err)) << err;
    return s;
  }

  // Appends and returns each batch's result (expecting the call to succeed).
  std::vector<append_result> append_fenced(const std::vector<append_batch>& bs,
                                           store_backend* on = nullptr) {
    std::vector<append_result> results;
    std::string err;
    EXPECT_TRUE((on ? on : b_.get())->append(bs, results, err)) << err;
    EXPECT_EQ(results.size(), bs.size());
    return results;
  }

  void append_ok(const std::vector<append_batch>& bs) {
    std::string err;
    EXPECT_TRUE(b_->append(bs, err)) << err;
  }

  // Expects a refusal and returns its reason.
  std::string append_fails(const std::vector<append_batch>& bs) {
    std::string err;
    EXPECT_FALSE(b_->append(bs, err));
    EXPECT_FALSE(err.empty());
    return err;
  }

  std::vector<stored_msg> range(const std::string& room, uint64_t after, uint64_t before,
                                uint32_t limit, bool newest) {
    range_query q;
    q.room = room;
    q.after = after;
    q.before = before;
    q.limit = limit;
    q.newest = newest;
    std::vector<stored_msg> out;
    std::string err;
    EXPECT_TRUE(b_->range(q, out, err)) << err;
    return out;
  }

  uint64_t first_seq(const std::string& room) {
    uint64_t out = 0;
    std::string err;
    EXPECT_TRUE(b_->first_seq(room, out, err)) << err;
    return out;
  }

  uint64_t trim(uint64_t max_messages, int64_t max_age_ms, int64_t now_ms) {
    retention_policy p;
    p.max_messages = max_messages;
    p.max_age_ms = max_age_ms;
    uint64_t removed = 0;
    std::string err;
    EXPECT_TRUE(b_->trim(p, now_ms, removed, err)) << err;
    return removed;
  }

  std::string dir_;
  std::string place_;
  std::unique_ptr<store_backend> b_;
  std::unique_ptr<store_backend> other_;
};

struct kind_names {
  template <class T>
  static std::string GetName(int) {
    return T::name;
  }
};

using kinds = ::testing::Types<memory_kind, sqlite_kind, postgres_kind>;
TYPED_TEST_SUITE(store_backend_test, kinds, kind_names);

TYPED_TEST(store_backend_test, new_room_starts_empty_with_a_random_epoch) {
  auto s = this->load("general");
  EXPECT_TRUE(is_epoch(s.epoch)) << s.epoch;
  EXPECT_EQ(s.last_seq, 0u);
  EXPECT_EQ(s.first_seq, 1u);
  EXPECT_TRUE(s.recent.empty());
  EXPECT_TRUE(s.idem.empty());
  // Loading again keeps the epoch; another room gets its own.
  EXPECT_EQ(this->load("general").epoch, s.epoch);
  EXPECT_NE(this->load("random").epoch, s.epoch);
  EXPECT_EQ(this->first_seq("general"), 1u);
  EXPECT_EQ(this->first_seq("never-loaded"), 1u);
  std::string err;
  EXPECT_TRUE(this->b_->healthy(err)) << err;
}

TYPED_TEST(store_backend_test, text_and_data_come_back_byte_for_byte) {
  this->load("general");
  std::vector<std::string> texts = {
      "hi 👋",
      "👨‍👩‍👧‍👦 family (ZWJ sequence) 🏳️‍🌈",
      "日本語のテキスト、中文，한국어",
      "עברית וערבית: العربية",
      "e\xcc\x81 (combining acute, not normalised) vs \xc3\xa9",
      "quote \" backslash \\ tab \t slash / brace {}",
      std::string("embedded\0nul", 12),
      "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP: 𐍈 🀄",
  };
  std::string long_text;
  for (int i = 0; i < 4096; ++i) long_text += "😀";  // 4096 code points, 16 KiB
  texts.push_back(long_text);
  const std::string data =
      R"({"a":[1,2.5,{"b":"ü\u00e9\n"}],"url":"https://x/y?z=1&w=2","n":null})";

  append_batch b;
  b.room = "general";
  for (size_t i = 0; i < texts.size(); ++i) {
    auto m = msg(i + 1, 1764090000123 + static_cast<int64_t>(i), texts[i], i % 2 ? "k" : "",
                 i % 3 ? data : "");
    m.from = "ユーザー";
    m.name = "Ålice 🦊";
    b.msgs.push_back(m);
  }
  this->append_ok({b});

  auto expected = b.msgs;
  for (auto& m : expected) m.room = "general";
  EXPECT_EQ(this->range("general", 0, 0, 100, true), expected);
  EXPECT_EQ(this->load("general").recent, expected);
  for (auto& m : this->range("general", 0, 0, 100, false)) {
    EXPECT_EQ(m.text.size(), texts[m.seq - 1].size());
    EXPECT_EQ(m.text, texts[m.seq - 1]);
  }
}

// --- protocol v2 events -------------------------------------------------------------

stored_msg change(uint64_t seq, event_kind kind, uint64_t target, std::string from = "alice") {
  auto m = msg(seq, static_cast<int64_t>(seq) * 1000, "");
  m.kind = kind;
  m.target = target;
  m.from = std::move(from);
  return m;
}

stored_msg reaction(uint64_t seq, uint64_t target, std::string user, std::string emoji, bool on) {
  auto m = change(seq, event_kind::reaction, target, std::move(user));
  m.emoji = std::move(emoji);
  m.on = on;
  return m;
}

TYPED_TEST(store_backend_test, events_keep_their_fields_and_targets_their_current_state) {
  this->load("general");
  append_batch b;
  b.room = "general";
  auto m1 = msg(1, 1000, "first");
  auto m2 = msg(2, 2000, "second", "", R"({"k":1})");
  m2.reply_to = 1;
  m2.mentions = {"bob", "carol ü"};
  b.msgs = {m1, m2};
  auto e3 = change(3, event_kind::edited, 2);
  e3.text = "second, fixed";
  e3.data = R"({"k":2})";
  b.msgs.push_back(e3);
  b.msgs.push_back(reaction(4, 1, "bob", "👍", true));
  b.msgs.push_back(reaction(5, 1, "carol", "👍", true));
  b.msgs.push_back(reaction(6, 1, "alice", "🎉", true));
  this->append_ok({b});
  // Another commit: a reaction removed, one added again later (goes last).
  append_batch c;
  c.room = "general";
  c.msgs = {reaction(7, 1, "bob", "👍", false), reaction(8, 1, "bob", "👍", true),
            reaction(9, 1, "alice", "🎉", false)};
  this->append_ok({c});

  auto all = this->range("general", 0, 0, 100, false);
  ASSERT_EQ(seqs_of(all), span(1, 9));
  // The message rows carry their current state.
  EXPECT_EQ(all[0].kind, event_kind::message);
  ASSERT_EQ(all[0].reactions.size(), 1u);
  EXPECT_EQ(all[0].reactions[0].emoji, "👍");
  EXPECT_EQ(all[0].reactions[0].users, (std::vector<std::string>{"carol", "bob"}));
  EXPECT_EQ(all[1].text, "second, fixed");
  EXPECT_EQ(all[1].data, R"({"k":2})");
  EXPECT_EQ(all[1].edited_ts, 3000);
  EXPECT_EQ(all[1].reply_to, 1u);
  EXPECT_EQ(all[1].mentions, (std::vector<std::string>{"bob", "carol ü"}));
  EXPECT_FALSE(all[1].deleted);
  // The change events come back as stored.
  EXPECT_EQ(all[2].kind, event_kind::edited);
  EXPECT_EQ(all[2].target, 2u);
  EXPECT_EQ(all[2].text, "second, fixed");
  EXPECT_EQ(all[3].kind, event_kind::reaction);
  EXPECT_EQ(all[3].emoji, "👍");
  EXPECT_TRUE(all[3].on);
  EXPECT_EQ(all[3].from, "bob");
  EXPECT_FALSE(all[6].on);
  // get_event, the snapshot and range agree.
  stored_msg one;
  bool found = false;
  std::string err;
  ASSERT_TRUE(this->b_->get_event("general", 1, one, found, err)) << err;
  ASSERT_TRUE(found);
  EXPECT_EQ(one, all[0]);
  ASSERT_TRUE(this->b_->get_event("general", 10, one, found, err)) << err;
  EXPECT_FALSE(found);
  ASSERT_TRUE(this->b_->get_event("nowhere", 1, one, found, err)) << err;
  EXPECT_FALSE(found);
  EXPECT_EQ(this->load("general").recent, all);
  // What the store holds is what apply_change makes of the events in order.
  std::vector<stored_msg> replay;
  for (auto m : b.msgs) replay.push_back(m);
  for (auto m : c.msgs) replay.push_back(m);
  for (auto& m : replay) m.room = "general";
  for (size_t i = 0; i < replay.size(); ++i)
    if (replay[i].kind != event_kind::message) apply_change(replay[replay[i].target - 1], replay[i]);
  EXPECT_EQ(all, replay);
}

TYPED_TEST(store_backend_test, a_delete_erases_the_text_of_the_message_and_its_edits) {
  this->load("general");
  append_batch b;
  b.room = "general";
  b.msgs.push_back(msg(1, 1000, "secret password", "", R"({"x":"secret"})"));
  auto e = change(2, event_kind::edited, 1);
  e.text = "secret again";
  b.msgs.push_back(e);
  b.msgs.push_back(reaction(3, 1, "bob", "👀", true));
  b.msgs.push_back(msg(4, 4000, "unrelated"));
  this->append_ok({b});
  append_batch d;
  d.room = "general";
  d.msgs.push_back(change(5, event_kind::deleted, 1, "mod"));
  this->append_ok({d});
  auto all = this->range("general", 0, 0, 100, false);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_TRUE(all[0].deleted);
  EXPECT_EQ(all[0].text, "");
  EXPECT_EQ(all[0].data, "");
  EXPECT_TRUE(all[0].reactions.empty());
  EXPECT_TRUE(all[1].deleted);  // the edit lost its text too
  EXPECT_EQ(all[1].text, "");
  EXPECT_EQ(all[3].text, "unrelated");
  EXPECT_FALSE(all[3].deleted);
  EXPECT_EQ(all[4].kind, event_kind::deleted);
  EXPECT_EQ(all[4].from, "mod");
  EXPECT_EQ(all[4].target, 1u);
  if (TypeParam::persistent) {
    this->reopen();
    auto again = this->range("general", 0, 0, 100, false);
    EXPECT_EQ(again, all);
  }
}

TYPED_TEST(store_backend_test, trim_drops_the_reactions_of_trimmed_messages) {
  this->load("general");
  append_batch b;
  b.room = "general";
  b.msgs = {msg(1, 1000), reaction(2, 1, "bob", "👍", true), msg(3, 3000),
            reaction(4, 3, "bob", "👍", true)};
  this->append_ok({b});
  EXPECT_EQ(this->trim(2, 0, 10000), 2u);
  auto left = this->range("general", 0, 0, 100, false);
  ASSERT_EQ(seqs_of(left), span(3, 4));
  ASSERT_EQ(left[0].reactions.size(), 1u);
  stored_msg one;
  bool found = true;
  std::string err;
  ASSERT_TRUE(this->b_->get_event("general", 1, one, found, err)) << err;
  EXPECT_FALSE(found);
}

TYPED_TEST(store_backend_test, memberships_read_positions_and_unread_counts) {
  this->load("general");
  this->load("other");
  append_batch b;
  b.room = "general";
  b.member_set = {{"alice", member_role::owner, 0}, {"bob", member_role::member, 0}};
  b.msgs = {msg(1, 1000), msg(2, 2000), msg(3, 3000), msg(4, 4000)};
  b.msgs[1].from = "bob";
  b.msgs.push_back(change(5, event_kind::deleted, 4));  // deleted: not unread
  this->append_ok({b});
  // A batch of memberships only (no events): read positions move.
  append_batch r;
  r.room = "general";
  r.member_set = {{"bob", member_role::member, 1}};
  this->append_ok({r});
  append_batch o;
  o.room = "other";
  o.member_set = {{"bob", member_role::moderator, 0}};
  this->append_ok({o});
  EXPECT_EQ(this->load("general").last_seq, 5u);  // member-only batches take no seq

  std::vector<user_room> rooms;
  std::string err;
  ASSERT_TRUE(this->b_->user_rooms("bob", rooms, err)) << err;
  ASSERT_EQ(rooms.size(), 2u);
  EXPECT_EQ(rooms[0].room, "general");
  EXPECT_EQ(rooms[0].role, member_role::member);
  EXPECT_EQ(rooms[0].read_seq, 1u);
  EXPECT_EQ(rooms[0].last_seq, 5u);
  EXPECT_EQ(rooms[0].unread, 1u);  // seq 3 (alice); 2 is his own, 4 deleted, 5 not a message
  EXPECT_EQ(rooms[1].room, "other");
  EXPECT_EQ(rooms[1].role, member_role::moderator);
  EXPECT_EQ(rooms[1].unread, 0u);
  uint64_t n = 0;
  ASSERT_TRUE(this->b_->count_unread("general", "carol", 0, 5, n, err)) << err;
  EXPECT_EQ(n, 3u);
  ASSERT_TRUE(this->b_->count_unread("general", "carol", 1, 2, n, err)) << err;
  EXPECT_EQ(n, 1u);

  append_batch part;
  part.room = "general";
  part.member_del = {"bob"};
  this->append_ok({part});
  ASSERT_TRUE(this->b_->user_rooms("bob", rooms, err)) << err;
  ASSERT_EQ(rooms.size(), 1u);
  EXPECT_EQ(rooms[0].room, "other");
  if (TypeParam::persistent) this->reopen();
  auto snap = this->load("general");
  ASSERT_EQ(snap.members.size(), TypeParam::persistent ? 1u : 1u);
  EXPECT_EQ(snap.members[0], (membership{"alice", member_role::owner, 0}));
}

TYPED_TEST(store_backend_test, search_finds_every_word_in_the_current_text_newest_first) {
  this->load("general");
  this->load("other");
  append_batch b;
  b.room = "general";
  b.msgs = {msg(1, 1000, "Deploy failed on staging"), msg(2, 2000, "the deploy worked"),
            msg(3, 3000, "deploy FAILED again"), msg(4, 4000, "Привет мир, деплой"),
            msg(5, 5000, "old words here")};
  auto e = change(6, event_kind::edited, 5);
  e.text = "new words here";
  b.msgs.push_back(e);
  b.msgs.push_back(msg(7, 7000, "failed deploy, secret"));
  b.msgs.push_back(change(8, event_kind::deleted, 7));
  this->append_ok({b});
  append_batch o;
  o.room = "other";
  o.msgs = {msg(1, 1000, "deploy failed elsewhere")};
  this->append_ok({o});
  auto find = [&](const std::string& q, uint64_t before = 0, uint32_t limit = 10) {
    std::vector<stored_msg> out;
    std::string err;
    EXPECT_TRUE(this->b_->search("general", q, before, limit, out, err)) << err;
    return seqs_of(out);
  };
  EXPECT_EQ(find("deploy failed"), (std::vector<uint64_t>{3, 1}));  // all words, newest first
  EXPECT_EQ(find("DEPLOY"), (std::vector<uint64_t>{3, 2, 1}));
  EXPECT_EQ(find("deploy", 3), (std::vector<uint64_t>{2, 1}));     // paged with before
  EXPECT_EQ(find("deploy", 0, 1), (std::vector<uint64_t>{3}));
  EXPECT_EQ(find("привет"), (std::vector<uint64_t>{4}));           // any script, any case
  EXPECT_EQ(find("new words"), (std::vector<uint64_t>{5}));        // the edited text
  EXPECT_TRUE(find("old").empty());                                // not what it replaced
  EXPECT_TRUE(find("secret").empty());                             // deleted
  EXPECT_TRUE(find("elsewhere").empty());                          // another room's
  EXPECT_TRUE(find("   ").empty());
  EXPECT_TRUE(find("\"deploy\" OR x*").empty());  // operators are words ("or" is in no message)
  EXPECT_EQ(find("\"deploy\" failed"), (std::vector<uint64_t>{3, 1}));  // quotes are no syntax
  std::vector<stored_msg> out;
  std::string err;
  ASSERT_TRUE(this->b_->search("general", "new", 0, 10, out, err)) << err;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].text, "new words here");
  EXPECT_EQ(out[0].edited_ts, 6000);
  // Trimmed messages leave the index.
  this->trim(4, 0, 100000);
  EXPECT_TRUE(find("deploy").empty());
}

// The moderation log: range with moderation_only reads only those events.
TYPED_TEST(store_backend_test, range_of_moderation_events_only) {
  this->load("general");
  append_batch b;
  b.room = "general";
  for (uint64_t s = 1; s <= 12; ++s) {
    if (s % 4 == 0) {
      auto m = change(s, event_kind::moderation, 0);
      m.text = "kick";
      b.msgs.push_back(m);
    } else {
      b.msgs.push_back(msg(s, static_cast<int64_t>(s) * 1000));
    }
  }
  this->append_ok({b});
  range_query q{"general", 0, 0, 2, true, true};
  std::vector<stored_msg> out;
  std::string err;
  ASSERT_TRUE(this->b_->range(q, out, err)) << err;
  EXPECT_EQ(seqs_of(out), (std::vector<uint64_t>{8, 12}));  // the newest two, oldest first
  q.before = 8;
  ASSERT_TRUE(this->b_->range(q, out, err)) << err;
  EXPECT_EQ(seqs_of(out), (std::vector<uint64_t>{4}));
  q = range_query{"general", 4, 0, 10, false, true};
  ASSERT_TRUE(this->b_->range(q, out, err)) << err;
  EXPECT_EQ(seqs_of(out), (std::vector<uint64_t>{8, 12}));
}

// Server-wide bans: stored, replaced, lifted; a restart keeps them.
TYPED_TEST(store_backend_test, user_bans_are_stored_replaced_and_lifted) {
  std::string err;
  std::vector<user_ban> all;
  ASSERT_TRUE(this->b_->user_bans(all, err)) << err;
  EXPECT_TRUE(all.empty());
  ASSERT_TRUE(this->b_->store_user_ban({"mallory", user_ban::forever, "spam", false}, err)) << err;
  ASSERT_TRUE(this->b_->store_user_ban({"zoë", 5000, "", false}, err)) << err;
  ASSERT_TRUE(this->b_->store_user_ban({"mallory", 9000, "spam again", false}, err)) << err;
  if (TypeParam::persistent) this->reopen();
  ASSERT_TRUE(this->b_->user_bans(all, err)) << err;
  EXPECT_EQ(all, (std::vector<user_ban>{{"mallory", 9000, "spam again", false}, {"zoë", 5000, "", false}}));
  ASSERT_TRUE(this->b_->store_user_ban({"mallory", 0, "", true}, err)) << err;
  ASSERT_TRUE(this->b_->store_user_ban({"nobody", 0, "", true}, err)) << err;  // lifting none: fine
  if (TypeParam::persistent) this->reopen();
  ASSERT_TRUE(this->b_->user_bans(all, err)) << err;
  EXPECT_EQ(all, (std::vector<user_ban>{{"zoë", 5000, "", false}}));
}

TYPED_TEST(store_backend_test, message_room_field_is_the_batch_room) {
  this->load("general");
  auto b = batch("general", 1, 2);
  b.msgs[0].room = "general";  // set or empty: both fine
  this->append_ok({b});
  for (auto& m : this->range("general", 0, 0, 10, true)) EXPECT_EQ(m.room, "general");
  auto bad = batch("general", 3, 3);
  bad.msgs[0].room = "other";
  this->append_fails({bad});
  EXPECT_EQ(this->load("general").last_seq, 2u);
}

TYPED_TEST(store_backend_test, range_pages_backwards_and_forwards) {
  this->load("general");
  this->append_ok({batch("general", 1, 250)});

  // History paging: newest first page, then each page before the previous.
  EXPECT_EQ(seqs_of(this->range("general", 0, 0, 50, true)), span(201, 250));
  EXPECT_EQ(seqs_of(this->range("general", 0, 201, 50, true)), span(151, 200));
  EXPECT_EQ(seqs_of(this->range("general", 0, 31, 50, true)), span(1, 30));
  EXPECT_TRUE(this->range("general", 0, 1, 50, true).empty());
  // Recovery: the oldest after a seq, forwards.
  EXPECT_EQ(seqs_of(this->range("general", 0, 0, 10, false)), span(1, 10));
  EXPECT_EQ(seqs_of(this->range("general", 37, 0, 5, false)), span(38, 42));
  EXPECT_EQ(seqs_of(this->range("general", 240, 0, 100, false)), span(241, 250));
  EXPECT_EQ(seqs_of(this->range("general", 240, 0, 100, true)), span(241, 250));
  // Both bounds exclusive.
  EXPECT_EQ(seqs_of(this->range("general", 10, 20, 100, false)), span(11, 19));
  EXPECT_EQ(seqs_of(this->range("general", 10, 20, 3, true)), span(17, 19));
  EXPECT_EQ(seqs_of(this->range("general", 10, 20, 3, false)), span(11, 13));
  EXPECT_TRUE(this->range("general", 10, 11, 100, false).empty());
  EXPECT_TRUE(this->range("general", 20, 10, 100, false).empty());
  // Out of range, zero limit, huge bounds, unknown room: empty, not an error.
  EXPECT_TRUE(this->range("general", 250, 0, 100, true).empty());
  EXPECT_TRUE(this->range("general", UINT64_MAX, 0, 100, true).empty());
  EXPECT_EQ(seqs_of(this->range("general", 245, UINT64_MAX, 100, true)), span(246, 250));
  EXPECT_TRUE(this->range("general", 0, 0, 0, true).empty());
  EXPECT_TRUE(this->range("nowhere", 0, 0, 50, true).empty());
}

TYPED_TEST(store_backend_test, load_room_returns_recent_and_idempotency_window) {
  this->load("general");
  append_batch b;
  b.room = "general";
  for (uint64_t s = 1; s <= 20; ++s)
    b.msgs.push_back(
        msg(s, static_cast<int64_t>(s) * 1000, "m", s % 4 == 0 ? "k" + std::to_string(s) : ""));
  this->append_ok({b});

  auto s = this->load("general", 5, 10000);
  EXPECT_EQ(s.last_seq, 20u);
  EXPECT_EQ(s.first_seq, 1u);
  EXPECT_EQ(seqs_of(s.recent), span(16, 20));
  EXPECT_EQ(seqs_of(s.idem), (std::vector<uint64_t>{12, 16, 20}));  // ts >= 10000, keyed
  EXPECT_EQ(s.idem[0].idem_key, "k12");
  EXPECT_EQ(seqs_of(this->load("general", 0, 0).idem), (std::vector<uint64_t>{4, 8, 12, 16, 20}));
  EXPECT_TRUE(this->load("general", 0, 0).recent.empty());
  EXPECT_EQ(this->load("general", 1000, 0).recent.size(), 20u);
}

TYPED_TEST(store_backend_test, gaps_and_non_consecutive_batches_are_refused) {
  this->load("general");
  this->append_fails({batch("general", 2, 3)});  // must start at last_seq + 1 = 1
  append_batch holes = batch("general", 1, 1);
  holes.msgs.push_back(msg(3, 3000));
  this->append_fails({holes});
  append_batch backwards = batch("general", 1, 2);
  std::swap(backwards.msgs[0], backwards.msgs[1]);
  this->append_fails({backwards});
  EXPECT_EQ(this->load("general").last_seq, 0u);

  this->append_ok({batch("general", 1, 2)});
  this->append_fails({batch("general", 2, 2)});  // duplicate
  this->append_fails({batch("general", 4, 4)});  // gap
  this->append_fails({batch("nowhere", 1, 1)});  // never loaded
  this->append_ok({batch("general", 3, 3)});
  EXPECT_EQ(this->load("general").last_seq, 3u);
  EXPECT_EQ(seqs_of(this->range("general", 0, 0, 50, true)), span(1, 3));
  // Nothing to store is fine.
  this->append_ok({});
  append_batch empty;
  empty.room = "general";
  this->append_ok({empty});
}

TYPED_TEST(store_backend_test, group_append_is_all_or_nothing_across_rooms) {
  for (auto r : {"a", "b", "c"}) this->load(r);
  // Several rooms in one call, one room twice (its second batch continues the first).
  this->append_ok({batch("a", 1, 3), batch("b", 1, 1), batch("a", 4, 5), batch("c", 1, 2)});
  EXPECT_EQ(this->load("a").last_seq, 5u);
  EXPECT_EQ(this->load("b").last_seq, 1u);
  EXPECT_EQ(this->load("c").last_seq, 2u);
  EXPECT_EQ(seqs_of(this->range("a", 0, 0, 50, true)), span(1, 5));

  // One bad batch refuses the whole call: nothing of the good ones is stored.
  this->append_fails({batch("a", 6, 7), batch("b", 2, 2), batch("c", 9, 9)});
  this->append_fails({batch("a", 6, 7), batch("a", 6, 6)});
  EXPECT_EQ(this->load("a").last_seq, 5u);
  EXPECT_EQ(this->load("b").last_seq, 1u);
  EXPECT_EQ(this->load("c").last_seq, 2u);
  EXPECT_EQ(seqs_of(this->range("a", 0, 0, 50, true)), span(1, 5));
  EXPECT_EQ(seqs_of(this->range("b", 0, 0, 50, true)), span(1, 1));
}

TYPED_TEST(store_backend_test, trim_by_count_keeps_seq_gapless) {
  this->load("general");
  this->load("small");
  this->load("empty");
  this->append_ok({batch("general", 1, 10), batch("small", 1, 2)});
  EXPECT_EQ(this->trim(3, 0, 0), 7u);
  EXPECT_EQ(this->first_seq("general"), 8u);
  EXPECT_EQ(this->first_seq("small"), 1u);
  EXPECT_EQ(this->first_seq("empty"), 1u);
  EXPECT_EQ(seqs_of(this->range("general", 0, 0, 50, true)), span(8, 10));
  EXPECT_EQ(seqs_of(this->range("general", 0, 0, 50, false)), span(8, 10));
  auto s = this->load("general");
  EXPECT_EQ(s.last_seq, 10u);
  EXPECT_EQ(s.first_seq, 8u);
  EXPECT_EQ(seqs_of(s.recent), span(8, 10));
  // The next message is still last_seq + 1, and a second trim cuts only the excess.
  this->append_fails({batch("general", 1, 1)});
  this->append_ok({batch("general", 11, 11)});
  EXPECT_EQ(this->trim(3, 0, 0), 1u);
  EXPECT_EQ(this->first_seq("general"), 9u);
  EXPECT_EQ(this->trim(3, 0, 0), 0u);
  EXPECT_EQ(this->trim(0, 0, 0), 0u);  // no policy: nothing
}

TYPED_TEST(store_backend_test, trim_by_age) {
  this->load("general");
  this->load("other");
  this->append_ok({batch("general", 1, 10), batch("other", 1, 2)});  // ts = seq * 1000
  // Cutoff 10000 - 4500 = 5500: seqs 1..5 are older.
  EXPECT_EQ(this->trim(0, 4500, 10000), 5u + 2u);
  EXPECT_EQ(this->first_seq("general"), 6u);
  EXPECT_EQ(seqs_of(this->range("general", 0, 0, 50, false)), span(6, 10));
  // "other" is emptied: first_seq is last_seq + 1 and seq carries on.
  EXPECT_EQ(this->first_seq("other"), 3u);
  auto o = this->load("other");
  EXPECT_EQ(o.last_seq, 2u);
  EXPECT_EQ(o.first_seq, 3u);
  EXPECT_TRUE(o.recent.empty());
  this->append_ok({batch("other", 3, 3)});
  EXPECT_EQ(this->first_seq("other"), 3u);
  EXPECT_EQ(seqs_of(this->range("other", 0, 0, 50, true)), span(3, 3));

  // Count and age together: whichever cuts more wins.
  EXPECT_EQ(this->trim(2, 1000000, 10000), 3u);
  EXPECT_EQ(this->first_seq("general"), 9u);
  // Everything aged out.
  EXPECT_EQ(this->trim(0, 1, 1000000), 3u);
  EXPECT_EQ(this->first_seq("general"), 11u);
  EXPECT_EQ(this->load("general").last_seq, 10u);
}

TYPED_TEST(store_backend_test, trim_by_age_only_cuts_a_prefix) {
  // A clock step back: seq 3 looks older than seq 2. Trimming must not punch
  // a hole in the middle, so it stops at the first message young enough.
  this->load("general");
  append_batch b;
  b.room = "general";
  b.msgs = {msg(1, 100), msg(2, 9000), msg(3, 100), msg(4, 9000)};
  this->append_ok({b});
  EXPECT_EQ(this->trim(0, 5000, 10000), 1u);
  EXPECT_EQ(this->first_seq("general"), 2u);
  EXPECT_EQ(seqs_of(this->range("general", 0, 0, 50, false)), span(2, 4));
}

TYPED_TEST(store_backend_test, reopen_keeps_or_resets_history) {
  this->load("general");
  append_batch b;
  b.room = "general";
  for (uint64_t s = 1; s <= 30; ++s)
    b.msgs.push_back(msg(s, static_cast<int64_t>(s) * 1000, "t" + std::to_string(s),
                         s % 10 == 0 ? "key" + std::to_string(s) : ""));
  this->append_ok({b});
  EXPECT_EQ(this->trim(25, 0, 0), 5u);
  auto before = this->load("general", 10, 15000);

  this->reopen();
  auto after = this->load("general", 10, 15000);
  if (TypeParam::persistent) {
    EXPECT_EQ(after.epoch, before.epoch);
    EXPECT_EQ(after.last_seq, 30u);
    EXPECT_EQ(after.first_seq, 6u);
    EXPECT_EQ(after.recent, before.recent);
    EXPECT_EQ(seqs_of(after.recent), span(21, 30));
    EXPECT_EQ(after.idem, before.idem);
    EXPECT_EQ(seqs_of(after.idem), (std::vector<uint64_t>{20, 30}));
    this->append_ok({batch("general", 31, 31)});
  } else {
    // History is gone, so the epoch must change for recovering clients.
    EXPECT_NE(after.epoch, before.epoch);
    EXPECT_TRUE(is_epoch(after.epoch));
    EXPECT_EQ(after.last_seq, 0u);
    EXPECT_EQ(after.first_seq, 1u);
    EXPECT_TRUE(after.recent.empty());
    EXPECT_TRUE(after.idem.empty());
  }
}

// --- fencing -------------------------------------------------------------------------

// A batch of `room` fenced with a node's claim.
append_batch fenced(const std::string& room, uint64_t first, uint64_t last,
                    const room_snapshot& claim) {
  auto b = batch(room, first, last);
  b.owner = claim.owner;
  b.term = claim.term;
  return b;
}

using results = std::vector<append_result>;
constexpr auto committed = append_result::committed;
constexpr auto refused = append_result::fenced;

// Settings ride with the moderation event that changes them, fenced the same
// way; my_rooms shows the topic and whether the room is private.
TYPED_TEST(store_backend_test, settings_are_stored_with_their_event_and_fenced_with_it) {
  EXPECT_EQ(this->load("general").settings, room_settings{});
  auto claim = this->claim("general", "n1");
  append_batch b = fenced("general", 1, 1, claim);
  b.msgs[0].kind = event_kind::moderation;
  b.msgs[0].text = "settings";
  b.msgs[0].data = R"({"settings":{"topic":"ünïcode ✓","private":true}})";
  b.member_set = {{"alice", member_role::owner, 0}};
  b.set_settings = true;
  b.settings = {"ünïcode ✓", true, false, 30};
  this->append_ok({b});
  // A node that lost the room cannot change them.
  auto stale = b;
  stale.msgs[0].seq = 2;
  stale.settings = {"hijacked", false, false, 0};
  this->claim("general", "n2");
  std::vector<append_result> res;
  std::string err;
  ASSERT_TRUE(this->b_->append({stale}, res, err)) << err;
  EXPECT_EQ(res, std::vector<append_result>{append_result::fenced});
  if (TypeParam::persistent) this->reopen();
  auto snap = this->load("general");
  EXPECT_EQ(snap.settings, (room_settings{"ünïcode ✓", true, false, 30}));
  ASSERT_EQ(snap.recent.size(), 1u);
  EXPECT_EQ(snap.recent[0].kind, event_kind::moderation);
  EXPECT_EQ(snap.recent[0].data, b.msgs[0].data);
  std::vector<user_room> rooms;
  ASSERT_TRUE(this->b_->user_rooms("alice", rooms, err)) << err;
  ASSERT_EQ(rooms.size(), 1u);
  EXPECT_EQ(rooms[0].topic, "ünïcode ✓");
  EXPECT_TRUE(rooms[0].private_room);
  // A moderation event is not a message: never unread, never found.
  EXPECT_EQ(rooms[0].unread, 0u);
  std::vector<stored_msg> found;
  ASSERT_TRUE(this->b_->search("general", "settings", 0, 10, found, err)) << err;
  EXPECT_TRUE(found.empty());
}

// Bans and mutes: upserted and lifted with their batch (alone too), fenced
// with it, read back by every load.
TYPED_TEST(store_backend_test, bans_and_mutes_are_stored_lifted_and_fenced) {
  auto claim = this->claim("general", "n1");
  append_batch b = fenced("general", 1, 1, claim);
  b.msgs[0].kind = event_kind::moderation;
  b.msgs[0].text = "ban";
  b.restrict_set = {{"carol", restriction::forever, 0}, {"dave", 0, 1764090000123}};
  this->append_ok({b});
  append_batch lift;
  lift.room = "general";
  lift.owner = claim.owner;
  lift.term = claim.term;
  lift.restrict_del = {"dave"};
  lift.restrict_set = {{"erin", 5, 6}};
  this->append_ok({lift});
  auto stale = lift;
  stale.restrict_del = {"carol"};
  stale.restrict_set.clear();
  this->claim("general", "n2");
  std::vector<append_result> res;
  std::string err;
  ASSERT_TRUE(this->b_->append({stale}, res, err)) << err;
  EXPECT_EQ(res, std::vector<append_result>{append_result::fenced});
  if (TypeParam::persistent) this->reopen();
  auto snap = this->load("general");
  auto by_user = snap.restrictions;
  std::sort(by_user.begin(), by_user.end(),
            [](const restriction& x, const restriction& y) { return x.user < y.user; });
  EXPECT_EQ(by_user, (std::vector<restriction>{{"carol", restriction::forever, 0}, {"erin", 5, 6}}));
}

TYPED_TEST(store_backend_test, claim_raises_the_term_and_sets_the_owner) {
  auto s = this->load("general");
  EXPECT_EQ(s.term, 0u);
  EXPECT_EQ(s.owner, "");
  auto c1 = this->claim("general", "node-a");
  EXPECT_EQ(c1.term, 1u);
  EXPECT_EQ(c1.owner, "node-a");
  EXPECT_EQ(c1.epoch, s.epoch);  // a claim is not a new history
  auto c2 = this->claim("general", "node-b");
  EXPECT_EQ(c2.term, 2u);
  EXPECT_EQ(c2.owner, "node-b");
  // The same node claiming again still gets a new term: its older room actor is fenced too.
  auto c3 = this->claim("general", "node-b");
  EXPECT_EQ(c3.term, 3u);
  auto now = this->load("general");
  EXPECT_EQ(now.term, 3u);
  EXPECT_EQ(now.owner, "node-b");
  EXPECT_EQ(now.epoch, s.epoch);
  // Claiming an unknown room creates it; rooms have terms of their own.
  auto fresh = this->claim("fresh", "node-a");
  EXPECT_TRUE(is_epoch(fresh.epoch)) << fresh.epoch;
  EXPECT_EQ(fresh.term, 1u);
  EXPECT_EQ(fresh.last_seq, 0u);
  EXPECT_EQ(fresh.first_seq, 1u);
  // A claim needs a node name.
  room_snapshot out;
  std::string err;
  EXPECT_FALSE(this->b_->claim_room("general", "", 10, 0, out, err));
  EXPECT_NE(err.find("owner"), std::string::npos) << err;
  EXPECT_EQ(this->load("general").term, 3u);
}

TYPED_TEST(store_backend_test, claim_returns_what_earlier_terms_committed) {
  auto c1 = this->claim("general", "node-a");
  append_batch b = fenced("general", 1, 5, c1);
  b.msgs[1].idem_key = "k2";
  b.msgs[4].idem_key = "k5";
  EXPECT_EQ(this->append_fenced({b}), (results{committed}));
  auto c2 = this->claim("general", "node-b", &this->other(), 3);
  EXPECT_EQ(c2.term, 2u);
  EXPECT_EQ(c2.last_seq, 5u);
  EXPECT_EQ(c2.first_seq, 1u);
  EXPECT_EQ(seqs_of(c2.recent), span(3, 5));
  EXPECT_EQ(seqs_of(c2.idem), (std::vector<uint64_t>{2, 5}));  // a retry gets its first ack
  EXPECT_EQ(c2.idem[0].idem_key, "k2");
}

TYPED_TEST(store_backend_test, stale_term_is_fenced_and_other_rooms_still_commit) {
  auto a1 = this->claim("a", "node-a");
  auto b1 = this->claim("b", "node-a");
  EXPECT_EQ(this->append_fenced({fenced("a", 1, 2, a1), fenced("b", 1, 1, b1)}),
            (results{committed, committed}));
  // node-b takes room a over; node-a does not know yet.
  auto a2 = this->claim("a", "node-b", &this->other());
  EXPECT_EQ(a2.last_seq, 2u);
  // node-a's next group commit holds both rooms: a is refused, b commits.
  EXPECT_EQ(this->append_fenced({fenced("a", 3, 4, a1), fenced("b", 2, 3, b1)}),
            (results{refused, committed}));
  EXPECT_EQ(this->load("a").last_seq, 2u);
  EXPECT_EQ(seqs_of(this->range("a", 0, 0, 50, false)), span(1, 2));
  EXPECT_EQ(this->load("b").last_seq, 3u);
  EXPECT_EQ(seqs_of(this->range("b", 0, 0, 50, false)), span(1, 3));
  // The new owner continues from the stored last seq.
  EXPECT_EQ(this->append_fenced({fenced("a", 3, 3, a2)}, &this->other()), (results{committed}));
  // A fenced batch is not checked for gaps (the room moved on without it),
  // and the wrong owner with the right term is refused as well.
  auto wrong_owner = fenced("a", 4, 4, a2);
  wrong_owner.owner = "node-c";
  EXPECT_EQ(this->append_fenced({fenced("a", 1, 1, a1), wrong_owner, fenced("b", 4, 4, b1)}),
            (results{refused, refused, committed}));
  EXPECT_EQ(seqs_of(this->range("a", 0, 0, 50, false)), span(1, 3));
  EXPECT_EQ(seqs_of(this->range("b", 0, 0, 50, false)), span(1, 4));
  // Only fenced batches: nothing stored, not a failure.
  EXPECT_EQ(this->append_fenced({fenced("a", 4, 4, a1)}), (results{refused}));
  // The all-or-nothing form reports a fenced batch as a failure.
  std::string err;
  EXPECT_FALSE(this->b_->append({fenced("a", 4, 4, a1)}, err));
  EXPECT_NE(err.find("fenced"), std::string::npos) << err;
  EXPECT_EQ(this->load("a").last_seq, 3u);
}

TYPED_TEST(store_backend_test, old_and_new_term_of_one_room_in_one_commit) {
  // A room actor that lost the room and the one that claimed it after it, on
  // the same node, both hand a batch to the same group commit.
  auto t1 = this->claim("general", "node-a");
  auto t2 = this->claim("general", "node-a");
  EXPECT_EQ(this->append_fenced({fenced("general", 1, 1, t1), fenced("general", 1, 2, t2)}),
            (results{refused, committed}));
  EXPECT_EQ(seqs_of(this->range("general", 0, 0, 50, false)), span(1, 2));
  EXPECT_EQ(this->load("general").last_seq, 2u);
}

TYPED_TEST(store_backend_test, fencing_does_not_excuse_a_gap_in_a_current_batch) {
  auto a = this->claim("a", "node-a");
  auto b = this->claim("b", "node-a");
  auto b2 = this->claim("b", "node-b");
  // b is fenced, but a's batch has a gap: the whole call is refused.
  std::vector<append_result> res;
  std::string err;
  EXPECT_FALSE(this->b_->append({fenced("b", 1, 1, b), fenced("a", 2, 2, a)}, res, err));
  EXPECT_NE(err.find("gap"), std::string::npos) << err;
  EXPECT_EQ(this->load("a").last_seq, 0u);
  EXPECT_EQ(this->load("b").last_seq, 0u);
  EXPECT_EQ(b2.term, 2u);
}

TYPED_TEST(store_backend_test, term_zero_is_unfenced) {
  // Single-node callers never claim and send term 0: never refused, even on a
  // room that was claimed (term 0 means "do not check", it is not a term).
  this->load("general");
  this->append_ok({batch("general", 1, 1)});
  this->claim("general", "node-a");
  EXPECT_EQ(this->append_fenced({batch("general", 2, 2)}), (results{committed}));
  EXPECT_EQ(this->load("general").last_seq, 2u);
}

TYPED_TEST(store_backend_test, no_seq_is_committed_twice_across_a_takeover) {
  // node-a sequences 1..3, node-b claims, node-a (paused meanwhile) tries to
  // go on at 4 while node-b commits 4..5: every seq once, node-b's messages.
  auto a = this->claim("general", "node-a");
  for (uint64_t s = 1; s <= 3; ++s)
    EXPECT_EQ(this->append_fenced({fenced("general", s, s, a)}), (results{committed}));
  auto b = this->claim("general", "node-b", &this->other());
  auto from_b = fenced("general", 4, 5, b);
  for (auto& m : from_b.msgs) m.text = "from b";
  EXPECT_EQ(this->append_fenced({from_b}, &this->other()), (results{committed}));
  auto from_a = fenced("general", 4, 4, a);
  from_a.msgs[0].text = "from a";
  EXPECT_EQ(this->append_fenced({from_a}), (results{refused}));
  // node-a cannot take it back by racing for seq 6 either.
  EXPECT_EQ(this->append_fenced({fenced("general", 6, 6, a)}), (results{refused}));
  auto all = this->range("general", 0, 0, 100, false);
  EXPECT_EQ(seqs_of(all), span(1, 5));
  EXPECT_EQ(all[3].text, "from b");
  EXPECT_EQ(all[4].text, "from b");
}

TYPED_TEST(store_backend_test, terms_survive_a_reopen) {
  this->claim("general", "node-a");
  auto c = this->claim("general", "node-b");
  this->reopen();
  auto s = this->load("general");
  if (TypeParam::persistent) {
    EXPECT_EQ(s.term, c.term);
    EXPECT_EQ(s.owner, "node-b");
    EXPECT_EQ(this->claim("general", "node-a").term, c.term + 1);
  } else {
    EXPECT_EQ(s.term, 0u);  // a new history: nobody owns it yet
  }
}

// One read answers which of a node's claims were taken since: a room claimed
// by another node, a term that moved (the same node claimed again), a room
// that is not stored at all; the claims that still hold are not listed.
TYPED_TEST(store_backend_test, lost_claims_lists_exactly_the_claims_taken_since) {
  auto a = this->claim("kept", "node-a");
  auto b = this->claim("taken", "node-a");
  this->claim("taken", "node-b");
  auto c = this->claim("again", "node-a");
  this->claim("again", "node-a");
  std::vector<std::string> lost;
  std::string err;
  ASSERT_TRUE(this->b_->lost_claims(
      "node-a", {{"kept", a.term}, {"taken", b.term}, {"again", c.term}, {"nowhere", 1}}, lost, err))
      << err;
  std::sort(lost.begin(), lost.end());
  EXPECT_EQ(lost, (std::vector<std::string>{"again", "nowhere", "taken"}));
  lost.clear();
  ASSERT_TRUE(this->b_->lost_claims("node-a", {}, lost, err)) << err;
  EXPECT_TRUE(lost.empty());
}

// Stores that several nodes share at the same time: PostgreSQL only (memory is
// one process; on SQLite, whose busy handler sleeps, a writer in a tight loop
// starves another connection's claim, and nodes never share a SQLite file).
template <class Kind>
class shared_store_test : public store_backend_test<Kind> {};
TYPED_TEST_SUITE(shared_store_test, ::testing::Types<postgres_kind>, kind_names);

// Two nodes on one database, for real at the same time: node-a appends as fast
// as it can while node-b claims the room. Every append node-a saw committed is
// in history at its seq, none that started after the claim returned commits,
// and node-b continues right after the last one: no seq twice, no gap.
TYPED_TEST(shared_store_test, concurrent_takeover_commits_every_seq_once) {
  auto a = this->claim("general", "node-a");
  this->load("side");
  store_backend& node_b = this->other();
  std::atomic<bool> claimed{false};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> acked;  // seqs node-a saw committed (guarded by mu)
  std::atomic<uint64_t> refusals{0};
  std::string failure;
  std::thread writer{[&] {
    uint64_t next = 1;
    for (uint64_t i = 1; i <= 100000 && refusals < 5; ++i) {
      auto b = fenced("general", next, next, a);
      b.msgs[0].text = "a" + std::to_string(next);
      bool after_claim = claimed.load();
      std::vector<append_result> res;
      std::string err;
      // Each commit also carries an unfenced batch of another room.
      bool ok = this->b_->append({b, batch("side", i, i)}, res, err);
      std::lock_guard<std::mutex> lock{mu};
      if (!ok || res.size() != 2 || res[1] != append_result::committed) {
        failure = "append failed: " + err;
        break;
      }
      if (res[0] == append_result::committed) {
        if (after_claim) {
          failure = "seq " + std::to_string(next) + " committed by an append begun after the claim";
          break;
        }
        acked.push_back(next++);
      } else {
        ++refusals;
      }
      cv.notify_all();
    }
    cv.notify_all();
  }};
  {
    // Claim once node-a is well under way (bounded: the writer may fail).
    std::unique_lock<std::mutex> lock{mu};
    cv.wait_for(lock, std::chrono::seconds(30),
                [&] { return acked.size() >= 20 || !failure.empty(); });
  }
  room_snapshot b;
  std::string claim_err;
  bool claim_ok = node_b.claim_room("general", "node-b", 50, 0, b, claim_err);
  claimed = claim_ok;
  if (!claim_ok) refusals = 5;  // stops the writer
  writer.join();
  ASSERT_TRUE(claim_ok) << claim_err;
  ASSERT_TRUE(failure.empty()) << failure;
  EXPECT_EQ(refusals.load(), 5u);
  ASSERT_GE(acked.size(), 20u);
  EXPECT_EQ(b.term, a.term + 1);
  EXPECT_EQ(b.last_seq, acked.back());
  EXPECT_EQ(acked, span(1, acked.back()));
  EXPECT_EQ(this->append_fenced({fenced("general", b.last_seq + 1, b.last_seq + 2, b)}, &node_b),
            (results{committed}));
  auto all = this->range("general", 0, 0, 100000, false);
  EXPECT_EQ(seqs_of(all), span(1, b.last_seq + 2));
  for (auto s : acked) EXPECT_EQ(all[s - 1].text, "a" + std::to_string(s));
}

// --- memory only --------------------------------------------------------------------

TEST(memory_backend, caps_each_room_and_advances_first_seq) {
  auto b = make_memory_backend(3);
  room_snapshot s;
  std::string err;
  ASSERT_TRUE(b->load_room("general", 50, 0, s, err)) << err;
  ASSERT_TRUE(b->load_room("other", 50, 0, s, err)) << err;
  ASSERT_TRUE(b->append({batch("general", 1, 5), batch("other", 1, 2)}, err)) << err;
  ASSERT_TRUE(b->load_room("general", 50, 0, s, err)) << err;
  EXPECT_EQ(s.last_seq, 5u);
  EXPECT_EQ(s.first_seq, 3u);
  EXPECT_EQ(seqs_of(s.recent), span(3, 5));
  ASSERT_TRUE(b->append({batch("general", 6, 6)}, err)) << err;
  uint64_t first = 0;
  ASSERT_TRUE(b->first_seq("general", first, err));
  EXPECT_EQ(first, 4u);
  ASSERT_TRUE(b->first_seq("other", first, err));
  EXPECT_EQ(first, 1u);
}

TEST(epoch, is_sixteen_hex_and_unique) {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    auto e = new_epoch();
    ASSERT_TRUE(is_epoch(e)) << e;
    seen.insert(e);
  }
  EXPECT_EQ(seen.size(), 10000u);
}

TEST(epoch, differs_in_a_forked_process) {
  // A child shares the parent's memory image: no generator state may leak across.
  new_epoch();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto e = new_epoch();
    ssize_t n = write(fds[1], e.data(), e.size());
    _exit(n == 16 ? 0 : 1);
  }
  close(fds[1]);
  auto mine = new_epoch();
  char buf[16];
  ASSERT_EQ(read(fds[0], buf, sizeof buf), 16);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_NE(std::string(buf, 16), mine);
}

// --- SQLite only ----------------------------------------------------------------------

class sqlite_backend_test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir();
    ASSERT_FALSE(dir_.empty());
    path_ = dir_ + "/chat.db";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A second, independent connection to the same file.
  // Runs one statement; `out` gets column `col` of its first row.
  static bool raw_exec(const std::string& path, const std::string& sql, std::string* out = nullptr,
                       int col = 0) {
    sqlite3* db = nullptr;
    bool ok = sqlite3_open(path.c_str(), &db) == SQLITE_OK;
    sqlite3_stmt* s = nullptr;
    ok = ok && sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK;
    int rc = ok ? sqlite3_step(s) : SQLITE_ERROR;
    ok = ok && (rc == SQLITE_ROW || rc == SQLITE_DONE);
    if (ok && out && rc == SQLITE_ROW) {
      auto p = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
      *out = p ? p : "";
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return ok;
  }

  std::unique_ptr<store_backend> open_ok() {
    std::string err;
    auto b = make_sqlite_backend(path_, err);
    EXPECT_NE(b, nullptr) << err;
    return b;
  }

  std::string open_fails() {
    std::string err;
    auto b = make_sqlite_backend(path_, err);
    EXPECT_EQ(b, nullptr);
    EXPECT_FALSE(err.empty());
    return err;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(sqlite_backend_test, migrates_an_empty_file_to_the_current_schema) {
  { std::ofstream{path_}; }  // zero bytes: what SQLite sees as a new database
  ASSERT_EQ(fs::file_size(path_), 0u);
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  std::string v;
  ASSERT_TRUE(raw_exec(path_, "SELECT value FROM meta WHERE key='schema_version'", &v));
  EXPECT_EQ(v, "9");
  ASSERT_TRUE(raw_exec(path_, "PRAGMA journal_mode", &v));
  EXPECT_EQ(v, "wal");
  for (auto name : {"meta", "rooms", "messages", "messages_idem", "messages_target", "reactions",
                    "members", "members_by_user"}) {
    ASSERT_TRUE(raw_exec(
        path_, std::string{"SELECT count(*) FROM sqlite_master WHERE name='"} + name + "'", &v));
    EXPECT_EQ(v, "1") << name;
  }
  // The idempotency lookup uses its partial index.
  ASSERT_TRUE(raw_exec(path_,
                       "EXPLAIN QUERY PLAN SELECT seq FROM messages INDEXED BY messages_idem"
                       " WHERE room='x' AND "
                       "idem_key != '' AND ts >= 5 ORDER BY seq",
                       &v, 3));
  EXPECT_NE(v.find("messages_idem"), std::string::npos) << v;
  // Opening an up-to-date file again is a no-op.
  b.reset();
  b = open_ok();
  ASSERT_TRUE(raw_exec(path_, "SELECT value FROM meta WHERE key='schema_version'", &v));
  EXPECT_EQ(v, "9");
}

TEST_F(sqlite_backend_test, migrates_a_version_1_file_and_keeps_its_rooms) {
  // Schema version 1 as released (rooms without owner and term), one room with history.
  for (auto sql : {"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)",
                   "CREATE TABLE rooms(name TEXT PRIMARY KEY, epoch TEXT NOT NULL,"
                   " last_seq INTEGER NOT NULL, first_seq INTEGER NOT NULL,"
                   " created_ms INTEGER NOT NULL)",
                   "CREATE TABLE messages(room TEXT NOT NULL, seq INTEGER NOT NULL,"
                   " ts INTEGER NOT NULL, from_user TEXT NOT NULL, name TEXT NOT NULL,"
                   " text TEXT NOT NULL, data TEXT NOT NULL DEFAULT '',"
                   " idem_key TEXT NOT NULL DEFAULT '', PRIMARY KEY(room, seq)) WITHOUT ROWID",
                   "CREATE INDEX messages_idem ON messages(room, ts) WHERE idem_key != ''",
                   "INSERT INTO meta VALUES('schema_version', '1')",
                   "INSERT INTO rooms VALUES('general', '0123456789abcdef', 1, 1, 5)",
                   "INSERT INTO messages(room, seq, ts, from_user, name, text)"
                   " VALUES('general', 1, 1000, 'alice', 'Alice', 'old')"})
    ASSERT_TRUE(raw_exec(path_, sql)) << sql;
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  std::string v;
  ASSERT_TRUE(raw_exec(path_, "SELECT value FROM meta WHERE key='schema_version'", &v));
  EXPECT_EQ(v, "9");
  room_snapshot s;
  std::string err;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  EXPECT_EQ(s.epoch, "0123456789abcdef");
  EXPECT_EQ(s.last_seq, 1u);
  EXPECT_EQ(s.term, 0u);
  EXPECT_EQ(s.owner, "");
  ASSERT_EQ(s.recent.size(), 1u);
  EXPECT_EQ(s.recent[0].text, "old");
  // The old message is searchable: the search file notes the room at open.
  EXPECT_TRUE(b->search_backlog());
  std::vector<stored_msg> found;
  ASSERT_TRUE(b->search("general", "OLD", 0, 10, found, err)) << err;
  EXPECT_EQ(seqs_of(found), (std::vector<uint64_t>{1}));
  ASSERT_TRUE(raw_exec(path_ + ".search",
                       "SELECT count(*) FROM search_index WHERE search_index MATCH 'old'", &v));
  EXPECT_EQ(v, "1");
  ASSERT_TRUE(b->claim_room("general", "node-a", 10, 0, s, err)) << err;
  EXPECT_EQ(s.term, 1u);
  EXPECT_TRUE(b->append({batch("general", 2, 2)}, err)) << err;
}

// Search indexing is off the acking commit, in a file of its own
// (<db>.search): an append leaves a backlog, index_search steps (the store's
// indexer thread) drain it, a backlog left by a stop is found again at open,
// edits and deletes reach the index with the events after them, and a search
// indexes its room first. A deleted .search file is rebuilt.
TEST_F(sqlite_backend_test, search_indexes_after_the_commit_and_keeps_a_backlog_across_a_restart) {
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->has_search_indexer());
  room_snapshot snap;
  std::string err, v;
  ASSERT_TRUE(b->load_room("general", 10, 0, snap, err)) << err;
  append_batch first;
  first.room = "general";
  first.msgs = {msg(1, 1000, "alpha one"), msg(2, 2000, "beta two"), msg(3, 3000, "alpha three")};
  ASSERT_TRUE(b->append({first}, err)) << err;
  EXPECT_TRUE(b->search_backlog());
  auto search_path = path_ + ".search";
  auto indexed = [&](const std::string& match) {
    std::string n;
    EXPECT_TRUE(raw_exec(search_path,
                         "SELECT count(*) FROM search_index WHERE search_index MATCH '" + match + "'",
                         &n));
    return n;
  };
  EXPECT_EQ(indexed("alpha"), "0");  // not in the acking commit
  b.reset();
  b = open_ok();
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->search_backlog());  // found again at open
  bool more = false;
  ASSERT_TRUE(b->index_search(2, more, err)) << err;
  EXPECT_TRUE(more);  // a budget of 2 leaves the third
  EXPECT_EQ(indexed("alpha"), "1");
  ASSERT_TRUE(b->index_search(256, more, err)) << err;
  EXPECT_FALSE(more);
  EXPECT_FALSE(b->search_backlog());
  EXPECT_EQ(indexed("alpha"), "2");
  ASSERT_TRUE(raw_exec(search_path, "SELECT seq FROM indexed WHERE room='general'", &v));
  EXPECT_EQ(v, "3");
  // An edit and a delete of indexed messages: the next step applies them.
  append_batch changes;
  changes.room = "general";
  auto e = change(4, event_kind::edited, 1);
  e.text = "gamma one";
  changes.msgs = {e, change(5, event_kind::deleted, 3)};
  ASSERT_TRUE(b->append({changes}, err)) << err;
  ASSERT_TRUE(b->index_search(256, more, err)) << err;
  EXPECT_EQ(indexed("alpha"), "0");
  EXPECT_EQ(indexed("gamma"), "1");
  // A message edited and another deleted before any step: indexed as they are then.
  append_batch late;
  late.room = "general";
  auto e2 = change(7, event_kind::edited, 6);
  e2.text = "epsilon";
  late.msgs = {msg(6, 6000, "delta"), e2, msg(8, 8000, "secret"), change(9, event_kind::deleted, 8)};
  ASSERT_TRUE(b->append({late}, err)) << err;
  ASSERT_TRUE(b->index_search(256, more, err)) << err;
  EXPECT_FALSE(more);
  EXPECT_EQ(indexed("delta"), "0");
  EXPECT_EQ(indexed("epsilon"), "1");
  EXPECT_EQ(indexed("secret"), "0");
  // A search does not wait for a step.
  append_batch last;
  last.room = "general";
  last.msgs = {msg(10, 10000, "zeta")};
  ASSERT_TRUE(b->append({last}, err)) << err;
  EXPECT_TRUE(b->search_backlog());
  std::vector<stored_msg> found;
  ASSERT_TRUE(b->search("general", "zeta", 0, 10, found, err)) << err;
  EXPECT_EQ(seqs_of(found), (std::vector<uint64_t>{10}));
  ASSERT_TRUE(b->search("general", "gamma", 0, 10, found, err)) << err;
  EXPECT_EQ(seqs_of(found), (std::vector<uint64_t>{1}));
  // The .search file deleted: rebuilt from the events.
  b.reset();
  for (auto suffix : {"", "-wal", "-shm"}) fs::remove(search_path + suffix);
  b = open_ok();
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->search_backlog());
  ASSERT_TRUE(b->search("general", "beta", 0, 10, found, err)) << err;
  EXPECT_EQ(seqs_of(found), (std::vector<uint64_t>{2}));
  ASSERT_TRUE(b->search("general", "secret", 0, 10, found, err)) << err;
  EXPECT_TRUE(found.empty());
  ASSERT_TRUE(b->search("general", "epsilon", 0, 10, found, err)) << err;
  EXPECT_EQ(seqs_of(found), (std::vector<uint64_t>{6}));
}

TEST_F(sqlite_backend_test, creates_missing_parent_directories) {
  path_ = dir_ + "/a/b/c/chat.db";
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(fs::exists(path_));
  room_snapshot s;
  std::string err;
  EXPECT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
}

TEST_F(sqlite_backend_test, garbage_file_fails_to_open_and_is_left_alone) {
  std::string garbage;
  for (int i = 0; i < 300; ++i)
    garbage += "this is not a database, just text " + std::to_string(i) + "\n";
  { std::ofstream{path_, std::ios::binary} << garbage; }
  auto err = open_fails();
  EXPECT_NE(err.find("not a database"), std::string::npos) << err;
  EXPECT_NE(err.find(path_), std::string::npos) << err;
  std::ifstream in{path_, std::ios::binary};
  std::string after{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  EXPECT_EQ(after, garbage);
}

TEST_F(sqlite_backend_test, directory_in_place_of_the_file_fails_cleanly) {
  fs::create_directories(path_);
  auto err = open_fails();
  EXPECT_NE(err.find(path_), std::string::npos) << err;
}

TEST_F(sqlite_backend_test, newer_schema_version_fails_to_open) {
  { open_ok(); }
  ASSERT_TRUE(raw_exec(path_, "UPDATE meta SET value='999' WHERE key='schema_version'"));
  auto err = open_fails();
  EXPECT_NE(err.find("newer"), std::string::npos) << err;
  EXPECT_NE(err.find("999"), std::string::npos) << err;
}

TEST_F(sqlite_backend_test, foreign_database_fails_to_open) {
  ASSERT_TRUE(raw_exec(path_, "CREATE TABLE users(id INTEGER PRIMARY KEY)"));
  auto err = open_fails();
  EXPECT_NE(err.find("not a chat store"), std::string::npos) << err;
}

TEST_F(sqlite_backend_test, acked_append_survives_kill_9) {
  {
    auto b = open_ok();
    ASSERT_NE(b, nullptr);
  }
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: append, then die without closing (no destructor, no checkpoint).
    std::string err;
    auto b = make_sqlite_backend(path_, err);
    room_snapshot s;
    if (!b || !b->load_room("general", 0, 0, s, err)) _exit(2);
    if (!b->append({batch("general", 1, 3)}, err)) _exit(3);
    kill(getpid(), SIGKILL);
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  room_snapshot s;
  std::string err;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  EXPECT_EQ(s.last_seq, 3u);
  EXPECT_EQ(seqs_of(s.recent), span(1, 3));
}

TEST_F(sqlite_backend_test, append_fails_cleanly_while_another_connection_holds_the_lock) {
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  std::string err;
  room_snapshot s;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  ASSERT_TRUE(b->append({batch("general", 1, 2)}, err)) << err;
  ASSERT_TRUE(detail::sqlite_exec(*b, "PRAGMA busy_timeout=50", err)) << err;

  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE; UPDATE rooms SET created_ms=1", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  EXPECT_FALSE(b->append({batch("general", 3, 4)}, err));
  EXPECT_NE(err.find("locked"), std::string::npos) << err;
  EXPECT_FALSE(b->healthy(err));
  EXPECT_NE(err.find("locked"), std::string::npos) << err;
  // Reads still work in WAL mode while someone else writes.
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  EXPECT_EQ(s.last_seq, 2u);
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);

  EXPECT_TRUE(b->healthy(err)) << err;
  EXPECT_EQ(err, "ok");
  EXPECT_TRUE(b->append({batch("general", 3, 4)}, err)) << err;
}

TEST_F(sqlite_backend_test, read_only_connection_refuses_writes_without_crashing) {
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  std::string err;
  room_snapshot s;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  ASSERT_TRUE(detail::sqlite_exec(*b, "PRAGMA query_only=1", err)) << err;
  EXPECT_FALSE(b->append({batch("general", 1, 1)}, err));
  EXPECT_NE(err.find("readonly"), std::string::npos) << err;
  EXPECT_FALSE(b->load_room("new-room", 10, 0, s, err));  // creating a room is a write
  uint64_t removed = 0;
  EXPECT_FALSE(b->trim(retention_policy{1, 0}, 0, removed, err));
  EXPECT_FALSE(b->healthy(err));
  // Reading still works.
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  EXPECT_EQ(s.last_seq, 0u);
  ASSERT_TRUE(detail::sqlite_exec(*b, "PRAGMA query_only=0", err)) << err;
  EXPECT_TRUE(b->healthy(err)) << err;
  EXPECT_TRUE(b->append({batch("general", 1, 1)}, err)) << err;
}

TEST_F(sqlite_backend_test, full_disk_fails_append_and_stores_nothing_of_it) {
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  std::string err;
  room_snapshot s;
  ASSERT_TRUE(b->load_room("a", 10, 0, s, err)) << err;
  ASSERT_TRUE(b->load_room("b", 10, 0, s, err)) << err;
  // max_page_count makes the file "full" the way a full disk would (SQLITE_FULL).
  std::string pages;
  ASSERT_TRUE(raw_exec(path_, "PRAGMA page_count", &pages));
  ASSERT_TRUE(detail::sqlite_exec(
      *b, "PRAGMA max_page_count=" + std::to_string(std::stoi(pages) + 40), err))
      << err;
  const std::string big(2000, 'x');
  uint64_t next = 1;
  bool failed = false;
  for (int i = 0; i < 1000 && !failed; ++i) {
    append_batch ba, bb;
    ba.room = "a";
    bb.room = "b";
    for (int k = 0; k < 10; ++k) {
      ba.msgs.push_back(msg(next + static_cast<uint64_t>(k), 1, big));
      bb.msgs.push_back(msg(next + static_cast<uint64_t>(k), 1, big));
    }
    if (b->append({ba, bb}, err))
      next += 10;
    else
      failed = true;
  }
  ASSERT_TRUE(failed);
  EXPECT_NE(err.find("full"), std::string::npos) << err;
  ASSERT_GT(next, 1u);
  for (auto room : {"a", "b"}) {
    ASSERT_TRUE(b->load_room(room, 1000, 0, s, err)) << err;
    EXPECT_EQ(s.last_seq, next - 1) << room;
    EXPECT_EQ(seqs_of(s.recent), span(1, next - 1)) << room;
  }
  // Space again: the same batch goes through.
  ASSERT_TRUE(detail::sqlite_exec(*b, "PRAGMA max_page_count=1073741823", err)) << err;
  EXPECT_TRUE(b->healthy(err)) << err;
  EXPECT_TRUE(b->append({batch("a", next, next + 9), batch("b", next, next + 9)}, err)) << err;
}

TEST_F(sqlite_backend_test, two_backends_on_one_file_see_each_others_rooms) {
  auto b1 = open_ok();
  auto b2 = open_ok();
  ASSERT_TRUE(b1 && b2);
  std::string err;
  room_snapshot s1, s2;
  ASSERT_TRUE(b1->load_room("general", 10, 0, s1, err)) << err;
  ASSERT_TRUE(b2->load_room("general", 10, 0, s2, err)) << err;
  EXPECT_EQ(s1.epoch, s2.epoch);
  ASSERT_TRUE(b1->append({batch("general", 1, 2)}, err)) << err;
  // The second one's view of last_seq is read inside its own transaction: no duplicate.
  EXPECT_FALSE(b2->append({batch("general", 1, 1)}, err));
  EXPECT_TRUE(b2->append({batch("general", 3, 3)}, err)) << err;
}

// --- PostgreSQL only --------------------------------------------------------------------

class postgres_backend : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    url_ = chat_test::pg_instance::shared().fresh_database(err);
    ASSERT_FALSE(url_.empty()) << err;
  }
  void TearDown() override {
    std::string err;
    auto& pg = chat_test::pg_instance::shared();
    if (!pg.running()) {  // a test that stopped it failed midway
      ASSERT_TRUE(pg.start(err)) << err;
    }
    EXPECT_TRUE(pg.drop_database(url_, err)) << err;
  }

  std::unique_ptr<store_backend> open_ok(size_t pool = 2) {
    std::string err;
    auto b = make_postgres_backend(url_, pool, err);
    EXPECT_NE(b, nullptr) << err;
    return b;
  }

  std::string open_fails(const std::string& url) {
    std::string err;
    auto b = make_postgres_backend(url, 2, err);
    EXPECT_EQ(b, nullptr);
    EXPECT_FALSE(err.empty());
    return err;
  }

  // The first column of the first row of `sql`, run on a connection of our own.
  std::string sql(const std::string& query) {
    std::string err, value;
    EXPECT_TRUE(chat_test::pg_exec(url_, query, err, &value)) << err;
    return value;
  }

  std::string url_;
};

TEST_F(postgres_backend, migrates_an_empty_database_to_the_current_schema) {
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(sql("SELECT value FROM meta WHERE key = 'schema_version'"), "8");
  for (auto name : {"meta", "rooms", "messages", "messages_idem", "messages_target", "reactions",
                    "members", "members_by_user"})
    EXPECT_EQ(sql(std::string{"SELECT to_regclass('"} + name + "') IS NOT NULL"), "t") << name;
  EXPECT_EQ(sql("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM"
                " information_schema.columns WHERE table_name = 'rooms'"),
            "name,epoch,last_seq,first_seq,created_ms,owner,term,topic,private,read_only,slow_mode");
  // The idempotency lookup can use its partial index (without the ORDER BY:
  // on an empty table the planner may prefer the primary key for the order).
  auto plan =
      sql("SET enable_seqscan = off; EXPLAIN (FORMAT JSON) SELECT seq FROM messages"
          " WHERE room = 'x' AND idem_key <> '' AND ts >= 5");
  EXPECT_NE(plan.find("messages_idem"), std::string::npos) << plan;
  // A database made by the current version opens as it is.
  b.reset();
  b = open_ok();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(sql("SELECT value FROM meta WHERE key = 'schema_version'"), "8");
  std::string err;
  EXPECT_TRUE(b->healthy(err)) << err;
  EXPECT_EQ(err, "ok");
}

// Three nodes of a cluster started at once on a fresh database: one migrates,
// the others wait for it and open the schema it made (found by running
// deploy/local-cluster.sh with STORE=postgres: two of three nodes failed).
TEST_F(postgres_backend, nodes_starting_together_on_a_fresh_database_all_open) {
  constexpr int nodes = 4;
  std::vector<std::string> errs(nodes);
  std::vector<std::unique_ptr<store_backend>> opened(nodes);
  std::vector<std::thread> threads;
  for (int i = 0; i < nodes; ++i)
    threads.emplace_back([&, i] { opened[i] = make_postgres_backend(url_, 1, errs[i]); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < nodes; ++i) EXPECT_NE(opened[i], nullptr) << "node " << i << ": " << errs[i];
  EXPECT_EQ(sql("SELECT value FROM meta WHERE key = 'schema_version'"), "8");
}

TEST_F(postgres_backend, migrates_a_version_1_database_and_keeps_its_rooms) {
  // Schema version 1 as it was (rooms without owner and term), one room with history.
  sql("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE rooms(name TEXT PRIMARY KEY, epoch TEXT NOT NULL, last_seq BIGINT NOT NULL,"
      " first_seq BIGINT NOT NULL, created_ms BIGINT NOT NULL);"
      "CREATE TABLE messages(room TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL,"
      " from_user BYTEA NOT NULL, name BYTEA NOT NULL, text BYTEA NOT NULL,"
      " data BYTEA NOT NULL DEFAULT '', idem_key BYTEA NOT NULL DEFAULT '',"
      " PRIMARY KEY(room, seq));"
      "CREATE INDEX messages_idem ON messages(room, ts) WHERE idem_key <> '';"
      "INSERT INTO meta VALUES('schema_version', '1');"
      "INSERT INTO rooms VALUES('general', '0123456789abcdef', 1, 1, 5);"
      "INSERT INTO messages(room, seq, ts, from_user, name, text) VALUES"
      " ('general', 1, 1000, 'alice', 'Alice', 'old')");
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(sql("SELECT value FROM meta WHERE key = 'schema_version'"), "8");
  room_snapshot s;
  std::string err;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  EXPECT_EQ(s.epoch, "0123456789abcdef");
  EXPECT_EQ(s.last_seq, 1u);
  EXPECT_EQ(s.term, 0u);
  EXPECT_EQ(s.owner, "");
  ASSERT_EQ(s.recent.size(), 1u);
  EXPECT_EQ(s.recent[0].text, "old");
  EXPECT_TRUE(b->append({batch("general", 2, 2)}, err)) << err;
}

TEST_F(postgres_backend, newer_schema_version_is_refused) {
  { open_ok(); }
  sql("UPDATE meta SET value = '999' WHERE key = 'schema_version'");
  auto err = open_fails(url_);
  EXPECT_NE(err.find("newer"), std::string::npos) << err;
  EXPECT_NE(err.find("999"), std::string::npos) << err;
  EXPECT_EQ(sql("SELECT value FROM meta WHERE key = 'schema_version'"), "999");  // left alone
}

TEST_F(postgres_backend, foreign_tables_are_refused_but_unrelated_ones_are_fine) {
  sql("CREATE TABLE invoices(id INT PRIMARY KEY)");  // another application's table
  { EXPECT_NE(open_ok(), nullptr); }
  std::string err;
  auto other = chat_test::pg_instance::shared().fresh_database(err);
  ASSERT_FALSE(other.empty()) << err;
  ASSERT_TRUE(chat_test::pg_exec(other, "CREATE TABLE rooms(id INT)", err)) << err;
  err = open_fails(other);
  EXPECT_NE(err.find("not a chat store"), std::string::npos) << err;
  ASSERT_TRUE(chat_test::pg_instance::shared().drop_database(other, err)) << err;
}

TEST_F(postgres_backend, unreachable_database_fails_with_a_clear_error) {
  // No server behind this socket directory.
  auto err = open_fails("host=/nonexistent/chat-socket-dir port=5432 dbname=chat user=chat");
  EXPECT_NE(err.find("cannot connect"), std::string::npos) << err;
  EXPECT_NE(err.find("/nonexistent/chat-socket-dir"), std::string::npos) << err;
  // Nothing listening on a loopback port; the password never shows in the error.
  err = open_fails("postgresql://chat:s3cret-pw@127.0.0.1:1/chat?connect_timeout=2");
  EXPECT_NE(err.find("cannot connect"), std::string::npos) << err;
  EXPECT_NE(err.find("127.0.0.1"), std::string::npos) << err;
  EXPECT_NE(err.find("refused"), std::string::npos) << err;
  EXPECT_EQ(err.find("s3cret-pw"), std::string::npos) << err;
  // A server that is up, but no such database.
  auto at = url_.rfind("dbname=");
  err = open_fails(url_.substr(0, at) + "dbname=no_such_db");
  EXPECT_NE(err.find("no_such_db"), std::string::npos) << err;
  // Not a connection string at all.
  err = open_fails("postgresql://[::1");
  EXPECT_NE(err.find("cannot connect"), std::string::npos) << err;
}

TEST_F(postgres_backend, server_restart_fails_calls_meanwhile_then_reconnects) {
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  std::string err;
  room_snapshot s;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  ASSERT_TRUE(b->append({batch("general", 1, 2)}, err)) << err;
  auto& pg = chat_test::pg_instance::shared();
  ASSERT_TRUE(pg.stop(err)) << err;
  // Down: every call fails with a reason, none hangs, nothing crashes.
  EXPECT_FALSE(b->append({batch("general", 3, 3)}, err));
  EXPECT_FALSE(err.empty());
  EXPECT_FALSE(b->healthy(err));
  EXPECT_NE(err.find("cannot connect"), std::string::npos) << err;
  EXPECT_FALSE(b->load_room("general", 10, 0, s, err));
  std::vector<stored_msg> got;
  range_query q;
  q.room = "general";
  EXPECT_FALSE(b->range(q, got, err));
  ASSERT_TRUE(pg.start(err)) << err;
  // Back: the pool replaces its dead connections by itself.
  EXPECT_TRUE(b->healthy(err)) << err;
  EXPECT_EQ(err, "ok");
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  EXPECT_EQ(s.last_seq, 2u);  // the append while down stored nothing
  EXPECT_TRUE(b->append({batch("general", 3, 3)}, err)) << err;
}

TEST_F(postgres_backend, a_connection_closed_by_the_server_is_replaced_unnoticed) {
  auto b = open_ok(1);
  ASSERT_NE(b, nullptr);
  std::string err;
  room_snapshot s;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  // An operator (or a failover) ends our session while it idles in the pool.
  auto db = url_.substr(url_.rfind("dbname=") + 7);
  EXPECT_EQ(sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '" +
                db + "' AND application_name = 'chatd'"),
            "1");
  // Once the server has closed it (bounded wait for that event)...
  for (int polls = 0;
       polls < 1000 && sql("SELECT count(*) FROM pg_stat_activity WHERE datname = '" + db +
                           "' AND application_name = 'chatd'") != "0";
       ++polls) {
  }
  // ...the next call finds it dead before using it and opens a new one.
  EXPECT_TRUE(b->append({batch("general", 1, 1)}, err)) << err;
  EXPECT_TRUE(b->healthy(err)) << err;
}

TEST_F(postgres_backend, a_statement_failing_inside_a_commit_stores_nothing_of_it) {
  auto b = open_ok(1);
  ASSERT_NE(b, nullptr);
  std::string err;
  room_snapshot s;
  ASSERT_TRUE(b->load_room("a", 10, 0, s, err)) << err;
  ASSERT_TRUE(b->load_room("b", 10, 0, s, err)) << err;
  ASSERT_TRUE(b->append({batch("a", 1, 2)}, err)) << err;
  auto session =
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND"
      " application_name = 'chatd'";
  auto pid = sql(session);
  // The server refuses the insert of room b's message (as a full disk would).
  sql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
      " $$BEGIN IF NEW.room = 'b' THEN RAISE EXCEPTION 'simulated failure'; END IF;"
      " RETURN NEW; END$$;"
      "CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse()");
  EXPECT_FALSE(b->append({batch("a", 3, 3), batch("b", 1, 1)}, err));
  EXPECT_NE(err.find("simulated failure"), std::string::npos) << err;
  ASSERT_TRUE(b->load_room("a", 10, 0, s, err)) << err;
  EXPECT_EQ(s.last_seq, 2u);  // a's batch of the failed commit is not stored either
  EXPECT_EQ(seqs_of(s.recent), span(1, 2));
  // A write failed: healthy() writes to find out; that write works, so "ok".
  EXPECT_TRUE(b->healthy(err)) << err;
  sql("DROP TRIGGER refuse ON messages");
  EXPECT_TRUE(b->append({batch("a", 3, 3), batch("b", 1, 1)}, err)) << err;
  EXPECT_EQ(sql(session),
            pid);  // the same connection throughout: a failed statement is no reason to drop it
}

TEST_F(postgres_backend, a_paused_transaction_cannot_hold_a_room_for_long) {
  // A node stopped (SIGSTOP) inside a transaction holds the room row's lock:
  // the server ends that session, so the node taking over is not blocked.
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  std::string err;
  room_snapshot s;
  ASSERT_TRUE(b->claim_room("general", "node-a", 10, 0, s, err)) << err;
  PGconn* paused = PQconnectdb(url_.c_str());
  ASSERT_EQ(PQstatus(paused), CONNECTION_OK) << PQerrorMessage(paused);
  PQclear(PQexec(paused, "SET idle_in_transaction_session_timeout = '3s'"));
  PGresult* r = PQexec(paused, "BEGIN; SELECT * FROM rooms WHERE name = 'general' FOR UPDATE");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(paused);
  PQclear(r);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(b->claim_room("general", "node-b", 10, 0, s, err)) << err;
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(s.term, 2u);
  EXPECT_LT(waited, std::chrono::seconds(6));
  PQfinish(paused);
}

TEST_F(postgres_backend, bytes_are_stored_as_they_are) {
  auto b = open_ok();
  ASSERT_NE(b, nullptr);
  std::string err;
  room_snapshot s;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  append_batch ba = batch("general", 1, 1);
  ba.msgs[0].text = std::string("nul\0inside", 10);
  ba.msgs[0].from = std::string("u\0x", 3);
  ba.msgs[0].idem_key = std::string("k\0", 2);
  ASSERT_TRUE(b->append({ba}, err)) << err;
  ASSERT_TRUE(b->load_room("general", 10, 0, s, err)) << err;
  ASSERT_EQ(s.recent.size(), 1u);
  EXPECT_EQ(s.recent[0].text, ba.msgs[0].text);
  EXPECT_EQ(s.recent[0].from, ba.msgs[0].from);
  ASSERT_EQ(s.idem.size(), 1u);
  EXPECT_EQ(s.idem[0].idem_key, ba.msgs[0].idem_key);
  EXPECT_EQ(sql("SELECT length(text) FROM messages"), "10");
}

TEST_F(postgres_backend, one_backend_serves_several_threads_through_its_pool) {
  auto b = open_ok(3);
  ASSERT_NE(b, nullptr);
  constexpr int threads = 6, appends = 50;
  for (int t = 0; t < threads; ++t) {
    room_snapshot s;
    std::string err;
    ASSERT_TRUE(b->load_room("r" + std::to_string(t), 0, 0, s, err)) << err;
  }
  std::vector<std::string> failures(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      auto room = "r" + std::to_string(t);
      for (uint64_t s = 1; s <= appends && failures[t].empty(); ++s) {
        std::string err;
        if (!b->append({batch(room, s, s)}, err)) failures[t] = err;
        std::vector<stored_msg> got;
        range_query q;
        q.room = room;
        if (!b->range(q, got, err) || got.size() != std::min<uint64_t>(s, q.limit))
          failures[t] = "range: " + err;
      }
    });
  for (auto& t : ts) t.join();
  for (auto& f : failures) EXPECT_TRUE(f.empty()) << f;
  EXPECT_EQ(sql("SELECT count(*) FROM messages"), std::to_string(threads * appends));
  // Never more sessions than the pool allows.
  auto db = url_.substr(url_.rfind("dbname=") + 7);
  EXPECT_LE(std::stoi(sql("SELECT count(*) FROM pg_stat_activity WHERE datname = '" + db +
                          "' AND application_name = 'chatd'")),
            3);
}

}  // namespace
