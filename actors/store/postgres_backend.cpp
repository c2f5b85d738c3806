// PostgreSQL store backend on libpq. The same tables, schema versions and
// guarantees as the SQLite backend (sqlite_backend.cpp), plus what several
// nodes sharing one database need: row locks (SELECT ... FOR UPDATE) so that
// the fencing check and the append it guards are one atomic step.
//
// Parameters and results travel in PostgreSQL's binary format: no escaping,
// bytea comes back as raw bytes, a group commit's messages go as arrays in
// ONE INSERT ... SELECT FROM unnest(...) however many rooms it holds.
//
// Message content columns (from_user, name, text, data, idem_key) are bytea:
// stored byte for byte like SQLite does, so a text holding U+0000 (valid JSON
// "\u0000") round-trips, which a PostgreSQL text column refuses.
#include <arpa/inet.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "actors/store/backend.hpp"
#include "messages/clock.hpp"

namespace chat {

namespace {

constexpr int64_t max_i64 = std::numeric_limits<int64_t>::max();

// Type OIDs of the parameters we send (pg_type.h is in the server headers).
constexpr Oid bytea_oid = 17, int8_oid = 20, text_oid = 25;
constexpr Oid text_array_oid = 1009, bytea_array_oid = 1001, int8_array_oid = 1016;

// Session settings of every connection. A node that stops (SIGSTOP, a long
// GC-like pause, a cut network) in the middle of a transaction holds row
// locks: the server ends such a session after 3 s, so that the node taking
// its rooms over waits at most that long. No statement of ours waits for a
// lock longer than 5 s (it fails, the room retries).
constexpr const char* session_setup =
    "SET idle_in_transaction_session_timeout = '3s'; SET lock_timeout = '5s'";

// How long a call waits for a free connection when all are leased.
constexpr auto lease_timeout = std::chrono::seconds(10);

// Serialises schema migrations of nodes that start at the same time.
constexpr int64_t migration_lock_key = 0x63686174646d6967;  // "chatdmig"

// Schema history, the same versions as the SQLite backend (a version number
// means the same tables in both). Append a step to change the schema; never
// edit a released one. Each runs in one transaction with the version bump.
struct migration {
  int version;
  const char* sql;
};

const migration migrations[] = {
    {1,
     "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
     "CREATE TABLE rooms(name TEXT PRIMARY KEY, epoch TEXT NOT NULL,"
     " last_seq BIGINT NOT NULL, first_seq BIGINT NOT NULL, created_ms BIGINT NOT NULL);"
     "CREATE TABLE messages(room TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL,"
     " from_user BYTEA NOT NULL, name BYTEA NOT NULL, text BYTEA NOT NULL,"
     " data BYTEA NOT NULL DEFAULT '', idem_key BYTEA NOT NULL DEFAULT '',"
     " PRIMARY KEY(room, seq));"
     // Partial: only the few messages with a key pay for this index.
     "CREATE INDEX messages_idem ON messages(room, ts) WHERE idem_key <> '';"},
    // Fencing: the node that sequences the room, and a term that only grows.
    {2,
     "ALTER TABLE rooms ADD COLUMN owner TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE rooms ADD COLUMN term BIGINT NOT NULL DEFAULT 0;"},
    // Protocol v2, as SQLite's version 3: every row an event (kind 0 =
    // message, as every row stored before), a message's current state in its
    // row, reactions in their own table. Existing rows keep their seq.
    {3,
     "ALTER TABLE messages ADD COLUMN kind BIGINT NOT NULL DEFAULT 0,"
     " ADD COLUMN target BIGINT NOT NULL DEFAULT 0,"
     " ADD COLUMN reply_to BIGINT NOT NULL DEFAULT 0,"
     " ADD COLUMN mentions BYTEA NOT NULL DEFAULT '',"
     " ADD COLUMN emoji BYTEA NOT NULL DEFAULT '',"
     " ADD COLUMN on_flag BIGINT NOT NULL DEFAULT 0,"
     " ADD COLUMN edited_ts BIGINT NOT NULL DEFAULT 0,"
     " ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0;"
     "CREATE INDEX messages_target ON messages(room, target) WHERE target <> 0;"
     "CREATE TABLE reactions(room TEXT NOT NULL, seq BIGINT NOT NULL, emoji BYTEA NOT NULL,"
     " user_id BYTEA NOT NULL, pos BIGINT NOT NULL, PRIMARY KEY(room, seq, emoji, user_id));"},
    // Memberships, as SQLite's version 4.
    {4,
     "CREATE TABLE members(room TEXT NOT NULL, user_id TEXT NOT NULL,"
     " role BIGINT NOT NULL DEFAULT 0, read_seq BIGINT NOT NULL DEFAULT 0,"
     " PRIMARY KEY(room, user_id));"
     "CREATE INDEX members_by_user ON members(user_id);"},
    // Search, as SQLite's version 5: each message's current text as a
    // tsvector of the 'simple' configuration (lower-cased words of any
    // script, no stemming), indexed; existing messages are indexed here.
    {5,
     "ALTER TABLE messages ADD COLUMN search_vec tsvector;"
     "UPDATE messages SET search_vec = to_tsvector('simple', convert_from(text, 'UTF8'))"
     " WHERE kind = 0 AND deleted = 0 AND position('\\x00'::bytea in text) = 0;"
     "CREATE INDEX messages_search ON messages USING GIN(search_vec);"},
    // Room settings, as SQLite's version 6.
    {6,
     "ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE rooms ADD COLUMN private BIGINT NOT NULL DEFAULT 0;"
     "ALTER TABLE rooms ADD COLUMN read_only BIGINT NOT NULL DEFAULT 0;"
     "ALTER TABLE rooms ADD COLUMN slow_mode BIGINT NOT NULL DEFAULT 0;"},
    // Bans and mutes, as SQLite's version 7.
    {7,
     "CREATE TABLE restrictions(room TEXT NOT NULL, user_id TEXT NOT NULL,"
     " ban_until BIGINT NOT NULL DEFAULT 0, mute_until BIGINT NOT NULL DEFAULT 0,"
     " PRIMARY KEY(room, user_id));"},
    // Server-wide bans, as SQLite's version 9. (SQLite's 8, search indexed
    // after the commit, has no counterpart: PostgreSQL's GIN index already
    // defers its work to a pending list.)
    {8,
     "CREATE TABLE user_bans(user_id TEXT PRIMARY KEY, until_ms BIGINT NOT NULL,"
     " reason TEXT NOT NULL DEFAULT '');"
     "CREATE INDEX messages_moderation ON messages(room, seq) WHERE kind = 4;"},
};

constexpr int latest_schema = 8;

// Text for a tsvector or tsquery: PostgreSQL text holds no NUL.
std::string searchable(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s)
    if (c != '\0') out.push_back(c);
  return out;
}


int64_t clamp_i64(uint64_t v) {
  return v > static_cast<uint64_t>(max_i64) ? max_i64 : static_cast<int64_t>(v);
}

// libpq's messages end with a newline and may hold several lines ("\n\t"
// before a hint): one line, single spaces.
std::string trimmed(const char* msg) {
  std::string s;
  for (const char* p = msg ? msg : ""; *p; ++p) {
    bool space = *p == '\n' || *p == '\t' || *p == ' ';
    if (!space)
      s += *p;
    else if (!s.empty() && s.back() != ' ')
      s += ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s.empty() ? "unknown error" : s;
}

// --- binary encoding ------------------------------------------------------------

void put_u32(std::string& out, uint32_t v) {
  v = htonl(v);
  out.append(reinterpret_cast<const char*>(&v), 4);
}

std::string encode_i64(int64_t v) {
  std::string out;
  auto u = static_cast<uint64_t>(v);
  put_u32(out, static_cast<uint32_t>(u >> 32));
  put_u32(out, static_cast<uint32_t>(u));
  return out;
}

// A one-dimensional array without NULLs, in the binary array format.
class array_builder {
 public:
  explicit array_builder(Oid element) : element_(element) {}
  void add(const std::string& v) {
    put_u32(body_, static_cast<uint32_t>(v.size()));
    body_ += v;
    ++n_;
  }
  void add(int64_t v) { add(encode_i64(v)); }
  size_t size() const { return n_; }
  std::string finish() const {
    std::string out;
    put_u32(out, 1);  // dimensions
    put_u32(out, 0);  // no NULLs
    put_u32(out, element_);
    put_u32(out, static_cast<uint32_t>(n_));
    put_u32(out, 1);  // lower bound
    return out + body_;
  }

 private:
  Oid element_;
  std::string body_;
  size_t n_ = 0;
};

// The parameters of one statement, all in binary format and owned here.
class params {
 public:
  params& text(std::string v) { return add(std::move(v)); }
  params& bytes(std::string v) { return add(std::move(v)); }
  params& i64(int64_t v) { return add(encode_i64(v)); }
  params& array(const array_builder& a) { return add(a.finish()); }

  int count() const { return static_cast<int>(vals_.size()); }
  const char* const* values() {
    ptrs_.clear();
    for (auto& v : vals_) ptrs_.push_back(v.data());
    return ptrs_.data();
  }
  const int* lengths() {
    lens_.clear();
    for (auto& v : vals_) lens_.push_back(static_cast<int>(v.size()));
    return lens_.data();
  }
  const int* formats() {
    fmts_.assign(vals_.size(), 1);
    return fmts_.data();
  }

 private:
  params& add(std::string v) {
    vals_.push_back(std::move(v));
    return *this;
  }
  std::vector<std::string> vals_;
  std::vector<const char*> ptrs_;
  std::vector<int> lens_, fmts_;
};

// A result, cleared on scope exit. Values are read in binary format.
class result {
 public:
  explicit result(PGresult* r = nullptr) : r_(r) {}
  result(const result&) = delete;
  result& operator=(const result&) = delete;
  result(result&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  result& operator=(result&& o) noexcept {
    std::swap(r_, o.r_);
    return *this;
  }
  ~result() { PQclear(r_); }

  PGresult* get() const { return r_; }
  ExecStatusType status() const { return r_ ? PQresultStatus(r_) : PGRES_FATAL_ERROR; }
  int rows() const { return PQntuples(r_); }
  uint64_t affected() const {
    const char* n = PQcmdTuples(r_);
    return n && *n ? std::stoull(n) : 0;
  }
  std::string sqlstate() const {
    const char* s = r_ ? PQresultErrorField(r_, PG_DIAG_SQLSTATE) : nullptr;
    return s ? s : "";
  }

  std::string str(int row, int col) const {
    return std::string(PQgetvalue(r_, row, col), static_cast<size_t>(PQgetlength(r_, row, col)));
  }
  int64_t i64(int row, int col) const {
    if (PQgetlength(r_, row, col) != 8)
      throw std::runtime_error("column " + std::to_string(col) + " is not a bigint");
    auto p = reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row, col));
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return static_cast<int64_t>(v);
  }
  bool boolean(int row, int col) const {
    if (PQgetlength(r_, row, col) != 1)
      throw std::runtime_error("column " + std::to_string(col) + " is not a boolean");
    return *PQgetvalue(r_, row, col) != 0;
  }
  bool null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }

 private:
  PGresult* r_;
};

// --- statements -----------------------------------------------------------------

struct statement {
  const char* name;
  const char* sql;
  std::vector<Oid> types;
};

constexpr const char* msg_cols =
    "seq, ts, from_user, name, text, data, idem_key, kind, target, reply_to, mentions, emoji,"
    " on_flag, edited_ts, deleted";

// The reactions of the messages a select picks (`rest` as in msg_select).
std::string reactions_of(const char* rest) {
  return std::string{"SELECT seq, emoji, user_id FROM reactions WHERE room = $1 AND seq IN"
                     " (SELECT seq FROM messages WHERE "} +
         rest + ") ORDER BY seq, pos";
}

std::string msg_select(const char* rest) {
  return std::string{"SELECT "} + msg_cols + " FROM messages WHERE " + rest;
}

const std::vector<statement>& statements() {
  static const std::string recent = msg_select("room = $1 ORDER BY seq DESC LIMIT $2");
  static const std::string idem =
      msg_select("room = $1 AND idem_key <> '' AND ts >= $2 ORDER BY seq");
  static const std::string asc =
      msg_select("room = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4");
  static const std::string desc =
      msg_select("room = $1 AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4");
  static const std::string recent_r = reactions_of("room = $1 ORDER BY seq DESC LIMIT $2");
  static const std::string asc_r =
      reactions_of("room = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4");
  static const std::string desc_r =
      reactions_of("room = $1 AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4");
  static const std::string one = msg_select("room = $1 AND seq = $2");
  static const std::string mod_asc =
      msg_select("room = $1 AND seq > $2 AND seq < $3 AND kind = 4 ORDER BY seq LIMIT $4");
  static const std::string mod_desc =
      msg_select("room = $1 AND seq > $2 AND seq < $3 AND kind = 4 ORDER BY seq DESC LIMIT $4");
  static const char* found =
      "room = $1 AND seq < $2 AND kind = 0 AND deleted = 0"
      " AND search_vec @@ plainto_tsquery('simple', $3) ORDER BY seq DESC LIMIT $4";
  static const std::string search = msg_select(found);
  static const std::string search_r = reactions_of(found);
  static const std::vector<statement> all = {
      {"chat_recent_reactions", recent_r.c_str(), {text_oid, int8_oid}},
      {"chat_search", search.c_str(), {text_oid, int8_oid, text_oid, int8_oid}},
      {"chat_search_reactions", search_r.c_str(), {text_oid, int8_oid, text_oid, int8_oid}},
      {"chat_range_asc_reactions", asc_r.c_str(), {text_oid, int8_oid, int8_oid, int8_oid}},
      {"chat_range_desc_reactions", desc_r.c_str(), {text_oid, int8_oid, int8_oid, int8_oid}},
      {"chat_event", one.c_str(), {text_oid, int8_oid}},
      {"chat_event_reactions",
       "SELECT seq, emoji, user_id FROM reactions WHERE room = $1 AND seq = $2 ORDER BY pos",
       {text_oid, int8_oid}},
      // A commit's changes, applied to their targets (see append_impl).
      {"chat_apply_edits",
       "UPDATE messages m SET text = v.text, data = v.data, edited_ts = v.ts,"
       " search_vec = to_tsvector('simple', v.q)"
       " FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::bytea[], $5::int8[], $6::text[])"
       " AS v(room, target, text, data, ts, q)"
       " WHERE m.room = v.room AND m.seq = v.target AND m.kind = 0 AND m.deleted = 0",
       {text_array_oid, int8_array_oid, bytea_array_oid, bytea_array_oid, int8_array_oid,
        text_array_oid}},
      {"chat_remove_reactions",
       "DELETE FROM reactions r USING unnest($1::text[], $2::int8[], $3::bytea[], $4::bytea[])"
       " AS v(room, seq, emoji, user_id) WHERE r.room = v.room AND r.seq = v.seq"
       " AND r.emoji = v.emoji AND r.user_id = v.user_id",
       {text_array_oid, int8_array_oid, bytea_array_oid, bytea_array_oid}},
      {"chat_add_reactions",
       "INSERT INTO reactions(room, seq, emoji, user_id, pos)"
       " SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::bytea[], $5::int8[])"
       " ON CONFLICT (room, seq, emoji, user_id) DO UPDATE SET pos = EXCLUDED.pos",
       {text_array_oid, int8_array_oid, bytea_array_oid, bytea_array_oid, int8_array_oid}},
      {"chat_apply_deletes",
       "UPDATE messages m SET text = '', data = '', deleted = 1, search_vec = NULL"
       " FROM unnest($1::text[], $2::int8[]) AS v(room, target)"
       " WHERE m.room = v.room AND (m.seq = v.target OR (m.target = v.target AND m.kind = 1))",
       {text_array_oid, int8_array_oid}},
      {"chat_drop_reactions",
       "DELETE FROM reactions r USING unnest($1::text[], $2::int8[]) AS v(room, target)"
       " WHERE r.room = v.room AND r.seq = v.target",
       {text_array_oid, int8_array_oid}},
      {"chat_trim_reactions", "DELETE FROM reactions WHERE room = $1 AND seq < $2",
       {text_oid, int8_oid}},
      {"chat_members_of", "SELECT user_id, role, read_seq FROM members WHERE room = $1",
       {text_oid}},
      {"chat_restrictions_of",
       "SELECT user_id, ban_until, mute_until FROM restrictions WHERE room = $1", {text_oid}},
      {"chat_set_restrictions",
       "INSERT INTO restrictions(room, user_id, ban_until, mute_until)"
       " SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])"
       " ON CONFLICT (room, user_id) DO UPDATE SET ban_until = EXCLUDED.ban_until,"
       " mute_until = EXCLUDED.mute_until",
       {text_array_oid, text_array_oid, int8_array_oid, int8_array_oid}},
      {"chat_del_restrictions",
       "DELETE FROM restrictions x USING unnest($1::text[], $2::text[]) AS v(room, user_id)"
       " WHERE x.room = v.room AND x.user_id = v.user_id",
       {text_array_oid, text_array_oid}},
      {"chat_set_members",
       "INSERT INTO members(room, user_id, role, read_seq)"
       " SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])"
       " ON CONFLICT (room, user_id) DO UPDATE SET role = EXCLUDED.role,"
       " read_seq = EXCLUDED.read_seq",
       {text_array_oid, text_array_oid, int8_array_oid, int8_array_oid}},
      {"chat_del_members",
       "DELETE FROM members m USING unnest($1::text[], $2::text[]) AS v(room, user_id)"
       " WHERE m.room = v.room AND m.user_id = v.user_id",
       {text_array_oid, text_array_oid}},
      {"chat_rooms_of",
       "SELECT m.room, m.role, m.read_seq, r.last_seq, r.topic, r.private FROM members m"
       " JOIN rooms r ON r.name = m.room WHERE m.user_id = $1 ORDER BY m.room",
       {text_oid}},
      {"chat_unread",
       "SELECT count(*)::int8 FROM (SELECT 1 FROM messages WHERE room = $1 AND seq > $2"
       " AND seq <= $3 AND kind = 0 AND deleted = 0 AND from_user <> $4 LIMIT $5) AS u",
       {text_oid, int8_oid, int8_oid, bytea_oid, int8_oid}},
      {"chat_get_room",
       "SELECT epoch, last_seq, first_seq, term, owner, topic, private, read_only, slow_mode"
       " FROM rooms WHERE name = $1",
       {text_oid}},
      {"chat_insert_room",
       "INSERT INTO rooms(name, epoch, last_seq, first_seq, created_ms) VALUES($1, $2, 0, 1, $3)"
       " ON CONFLICT (name) DO NOTHING",
       {text_oid, text_oid, int8_oid}},
      {"chat_claim",
       "UPDATE rooms SET term = term + 1, owner = $2 WHERE name = $1"
       " RETURNING epoch, last_seq, first_seq, term, owner, topic, private, read_only, slow_mode",
       {text_oid, text_oid}},
      {"chat_set_settings",
       "UPDATE rooms SET topic = v.topic, private = v.p, read_only = v.ro, slow_mode = v.sm"
       " FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[])"
       " AS v(name, topic, p, ro, sm) WHERE rooms.name = v.name",
       {text_array_oid, text_array_oid, int8_array_oid, int8_array_oid, int8_array_oid}},
      {"chat_recent", recent.c_str(), {text_oid, int8_oid}},
      {"chat_idem", idem.c_str(), {text_oid, int8_oid}},
      {"chat_range_asc", asc.c_str(), {text_oid, int8_oid, int8_oid, int8_oid}},
      {"chat_range_mod_asc", mod_asc.c_str(), {text_oid, int8_oid, int8_oid, int8_oid}},
      {"chat_range_mod_desc", mod_desc.c_str(), {text_oid, int8_oid, int8_oid, int8_oid}},
      {"chat_range_desc", desc.c_str(), {text_oid, int8_oid, int8_oid, int8_oid}},
      // Locks in name order, so two group commits that share rooms cannot deadlock.
      {"chat_lock_rooms",
       "SELECT name, last_seq, term, owner FROM rooms WHERE name = ANY($1) ORDER BY name"
       " FOR UPDATE",
       {text_array_oid}},
      {"chat_insert_msgs",
       "INSERT INTO messages(room, seq, ts, from_user, name, text, data, idem_key, kind, target,"
       " reply_to, mentions, emoji, on_flag, search_vec)"
       " SELECT r, s, t, f, n, x, d, i, k, g, p, mm, e, o,"
       " CASE WHEN k = 0 THEN to_tsvector('simple', q) END"
       " FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bytea[], $5::bytea[],"
       " $6::bytea[], $7::bytea[], $8::bytea[], $9::int8[], $10::int8[], $11::int8[],"
       " $12::bytea[], $13::bytea[], $14::int8[], $15::text[])"
       " AS v(r, s, t, f, n, x, d, i, k, g, p, mm, e, o, q)",
       {text_array_oid, int8_array_oid, int8_array_oid, bytea_array_oid, bytea_array_oid,
        bytea_array_oid, bytea_array_oid, bytea_array_oid, int8_array_oid, int8_array_oid,
        int8_array_oid, bytea_array_oid, bytea_array_oid, int8_array_oid, text_array_oid}},
      {"chat_set_last_seq",
       "UPDATE rooms SET last_seq = v.last FROM unnest($1::text[], $2::int8[]) AS v(name, last)"
       " WHERE rooms.name = v.name",
       {text_array_oid, int8_array_oid}},
      {"chat_first_seq", "SELECT first_seq FROM rooms WHERE name = $1", {text_oid}},
      {"chat_room_exists", "SELECT 1 FROM rooms WHERE name = $1", {text_oid}},
      {"chat_set_user_ban",
       "INSERT INTO user_bans(user_id, until_ms, reason) VALUES($1, $2, $3)"
       " ON CONFLICT (user_id) DO UPDATE SET until_ms = EXCLUDED.until_ms,"
       " reason = EXCLUDED.reason",
       {text_oid, int8_oid, text_oid}},
      {"chat_del_user_ban", "DELETE FROM user_bans WHERE user_id = $1", {text_oid}},
      {"chat_user_bans", "SELECT user_id, until_ms, reason FROM user_bans ORDER BY user_id", {}},
      {"chat_claims", "SELECT name, term, owner FROM rooms WHERE name = ANY($1)",
       {text_array_oid}},
      // Where each room's kept history starts after retention ($1 max messages,
      // $2 max age in ms, $3 the age cutoff); only rooms that lose something.
      // A prefix only: with an age limit it keeps everything from the first
      // message young enough, even if a clock step made a later one look older.
      {"chat_trim_points",
       "WITH c AS (SELECT name, first_seq, last_seq,"
       "  CASE WHEN $1 > 0 AND last_seq + 1 - first_seq > $1 THEN last_seq + 1 - $1"
       "   ELSE first_seq END AS k FROM rooms),"
       " t AS (SELECT c.name, c.first_seq, CASE WHEN $2 > 0 THEN COALESCE("
       "  (SELECT m.seq FROM messages m WHERE m.room = c.name AND m.seq >= c.k AND m.ts >= $3"
       "   ORDER BY m.seq LIMIT 1), c.last_seq + 1) ELSE c.k END AS keep_from FROM c)"
       " SELECT name, keep_from FROM t WHERE keep_from > first_seq ORDER BY name",
       {int8_oid, int8_oid, int8_oid}},
      {"chat_delete_before",
       "DELETE FROM messages WHERE room = $1 AND seq < $2",
       {text_oid, int8_oid}},
      {"chat_set_first_seq",
       "UPDATE rooms SET first_seq = $2 WHERE name = $1 AND first_seq < $2",
       {text_oid, int8_oid}},
      {"chat_health",
       "SELECT pg_is_in_recovery(), (SELECT value FROM meta WHERE key = 'schema_version')",
       {}},
      {"chat_health_probe",
       "INSERT INTO meta(key, value) VALUES('health_probe', $1)"
       " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
       {text_oid}},
  };
  return all;
}

// --- one connection -------------------------------------------------------------

class pg_conn {
 public:
  explicit pg_conn(PGconn* c) : c_(c) {
    // Notices (and the FATAL a server sends before it closes an idle
    // session) come here instead of libpq's default print to stderr.
    if (c_) PQsetNoticeReceiver(c_, &pg_conn::on_notice, this);
  }
  pg_conn(const pg_conn&) = delete;
  pg_conn& operator=(const pg_conn&) = delete;
  ~pg_conn() { PQfinish(c_); }

  PGconn* get() const { return c_; }
  bool ok() const { return PQstatus(c_) == CONNECTION_OK; }
  bool idle() const {
    return ok() && PQtransactionStatus(c_) == PQTRANS_IDLE &&
           PQpipelineStatus(c_) == PQ_PIPELINE_OFF;
  }

  // Reads, without blocking, what the server sent while the connection idled
  // in the pool: a server that restarted or ended the session left an error
  // and end-of-file there. Catching it here spares the next call a failure.
  bool alive() {
    if (PQconsumeInput(c_) == 0 || !ok()) return false;
    PQisBusy(c_);  // parses what was read: a FATAL reaches on_notice
    while (PGnotify* n = PQnotifies(c_)) PQfreemem(n);
    return ok() && !closing_;
  }
  std::string error() const { return trimmed(PQerrorMessage(c_)); }

  // A simple query (several statements allowed); false + `err` unless it succeeds.
  bool exec(const char* sql, std::string& err) {
    result r{PQexec(c_, sql)};
    if (r.status() == PGRES_COMMAND_OK || r.status() == PGRES_TUPLES_OK) return true;
    err = std::string{sql} + ": " + error_of(r);
    return false;
  }

  // A prepared statement of statements(); `expect` is the status of success.
  result run(const char* name, params& p, std::string& err,
             ExecStatusType expect = PGRES_TUPLES_OK) {
    result r{PQexecPrepared(c_, name, p.count(), p.values(), p.lengths(), p.formats(), 1)};
    if (r.status() != expect) {
      err = std::string{name} + ": " + error_of(r);
      return result{};
    }
    return r;
  }
  result run(const char* name, std::string& err, ExecStatusType expect = PGRES_TUPLES_OK) {
    params none;
    return run(name, none, err, expect);
  }
  result query(const char* sql, std::string& err) {
    result r{PQexecParams(c_, sql, 0, nullptr, nullptr, nullptr, nullptr, 1)};
    if (r.status() != PGRES_TUPLES_OK) {
      err = std::string{sql} + ": " + error_of(r);
      return result{};
    }
    return r;
  }

  bool prepare_all(std::string& err) {
    for (auto& s : statements()) {
      result r{PQprepare(c_, s.name, s.sql, static_cast<int>(s.types.size()),
                         s.types.empty() ? nullptr : s.types.data())};
      if (r.status() != PGRES_COMMAND_OK) {
        err = std::string{"prepare "} + s.name + ": " + error_of(r);
        return false;
      }
    }
    return true;
  }

  // One statement of a pipeline: a prepared one (with parameters), a plain
  // one without parameters (BEGIN, COMMIT), or a sync point (which ends an
  // implicit transaction; statements after it run even if one before failed).
  struct step {
    const char* name = nullptr;
    const char* sql = nullptr;
    params* p = nullptr;
    ExecStatusType expect = PGRES_TUPLES_OK;
    bool sync = false;
  };
  static step prepared(const char* name, params& p, ExecStatusType expect = PGRES_TUPLES_OK) {
    return step{name, nullptr, &p, expect, false};
  }
  static step plain(const char* sql) {
    return step{nullptr, sql, nullptr, PGRES_COMMAND_OK, false};
  }
  static step sync_point() { return step{nullptr, nullptr, nullptr, PGRES_PIPELINE_SYNC, true}; }

  // Sends every step at once and then reads every answer: the whole list
  // costs one round trip. out[i] is the answer to steps[i]. False + `err`
  // when the connection fails; a failed statement is the caller's to check
  // (`failed` names the first one, if any).
  bool pipeline(std::vector<step>& steps, std::vector<result>& out, std::string& failed,
                std::string& err) {
    out.clear();
    failed.clear();
    if (!steps.empty() && !steps.back().sync) steps.push_back(sync_point());
    if (PQenterPipelineMode(c_) != 1) {
      err = "pipeline mode: " + error();
      return false;
    }
    for (auto& s : steps) {
      int sent = 0;
      if (s.sync)
        sent = PQpipelineSync(c_);
      else if (s.name)
        sent = PQsendQueryPrepared(c_, s.name, s.p->count(), s.p->values(), s.p->lengths(),
                                   s.p->formats(), 1);
      else
        sent = PQsendQueryParams(c_, s.sql, 0, nullptr, nullptr, nullptr, nullptr, 1);
      if (sent != 1) {
        err = "send: " + error();
        return false;  // the connection is broken or stuck in pipeline mode: not reused
      }
    }
    for (auto& s : steps) {
      result r{PQgetResult(c_)};
      if (!r.get()) {
        err = "no answer from the server: " + error();
        return false;
      }
      // A statement's answer ends with a null result; a sync point's does not.
      if (!s.sync && PQgetResult(c_) != nullptr) {
        err = "more answers than statements";
        return false;
      }
      if (r.status() != s.expect && failed.empty() && r.status() != PGRES_PIPELINE_ABORTED)
        failed = std::string{s.name ? s.name : s.sql ? s.sql : "sync"} + ": " + error_of(r);
      out.push_back(std::move(r));
    }
    if (PQexitPipelineMode(c_) != 1) {
      err = "pipeline mode: " + error();
      return false;
    }
    return true;
  }

  void rollback() {
    if (ok() && PQpipelineStatus(c_) == PQ_PIPELINE_OFF && PQtransactionStatus(c_) != PQTRANS_IDLE)
      result{PQexec(c_, "ROLLBACK")};
  }

  // "COMMIT" on a failed transaction answers ROLLBACK: check the tag.
  bool commit(std::string& err) {
    result r{PQexec(c_, "COMMIT")};
    if (r.status() == PGRES_COMMAND_OK && std::strcmp(PQcmdStatus(r.get()), "COMMIT") == 0)
      return true;
    err = r.status() == PGRES_COMMAND_OK ? "commit: the transaction was rolled back"
                                         : "commit: " + error_of(r);
    return false;
  }

 private:
  std::string error_of(const result& r) const {
    const char* msg = r.get() ? PQresultErrorMessage(r.get()) : nullptr;
    std::string s = trimmed(msg && *msg ? msg : PQerrorMessage(c_));
    if (!ok()) s += " (connection lost)";
    return s;
  }

  static void on_notice(void* self, const PGresult* r) {
    const char* sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (std::strcmp(sev, "FATAL") == 0 || std::strcmp(sev, "PANIC") == 0))
      static_cast<pg_conn*>(self)->closing_ = true;  // the server ends this session
  }

  PGconn* c_;
  bool closing_ = false;
};

// Where a connection goes, without the password: for error messages.
std::string describe(PGconn* c) {
  auto val = [](const char* v) { return std::string{v && *v ? v : "?"}; };
  std::string host = val(PQhost(c));
  return "PostgreSQL " + (host.front() == '/' ? "socket dir " + host : "host " + host) + " port " +
         val(PQport(c)) + " database " + val(PQdb(c)) + " user " + val(PQuser(c));
}

// --- the pool -------------------------------------------------------------------

// Up to `max` connections, opened on demand. A call leases one for its
// duration; a connection comes back only if it is healthy and outside a
// transaction, otherwise it is closed (which rolls back) and the next lease
// opens a fresh one: that is how the backend reconnects after the database
// restarted or a network cut.
class pool {
 public:
  pool(std::string url, size_t max) : url_(std::move(url)), max_(std::max<size_t>(max, 1)) {}

  size_t size() const { return max_; }

  class lease {
   public:
    lease(pool* p, std::unique_ptr<pg_conn> c) : p_(p), c_(std::move(c)) {}
    lease(lease&&) = default;
    lease& operator=(lease&&) = delete;
    lease(const lease&) = delete;
    ~lease() {
      if (p_ && c_) p_->give_back(std::move(c_));
    }
    pg_conn* operator->() const { return c_.get(); }
    pg_conn& operator*() const { return *c_; }
    explicit operator bool() const { return c_ != nullptr; }

   private:
    pool* p_;
    std::unique_ptr<pg_conn> c_;
  };

  // A connection, or an empty lease and `err`.
  lease take(std::string& err) {
    std::unique_lock<std::mutex> lock{mu_};
    auto deadline = std::chrono::steady_clock::now() + lease_timeout;
    for (;;) {
      while (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        if (c->alive()) return lease{this, std::move(c)};
        --open_;  // closed by the server while idle: drop it, try the next or connect
      }
      if (open_ < max_) break;
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
          open_ >= max_) {
        err = "all " + std::to_string(max_) + " PostgreSQL connections stayed busy for " +
              std::to_string(lease_timeout.count()) + " s";
        return lease{this, nullptr};
      }
    }
    ++open_;
    lock.unlock();
    auto c = connect(url_, /*prepare=*/true, err);
    if (!c) {
      lock.lock();
      --open_;
      cv_.notify_one();
      return lease{this, nullptr};
    }
    return lease{this, std::move(c)};
  }

  // The first connection, handed in by open() after the migrations.
  void adopt(std::unique_ptr<pg_conn> c) {
    std::lock_guard<std::mutex> lock{mu_};
    ++open_;
    idle_.push_back(std::move(c));
  }

  static std::unique_ptr<pg_conn> connect(const std::string& url, bool prepare, std::string& err) {
    // Defaults first: whatever the URL says wins (expand_dbname).
    const char* keys[] = {"connect_timeout",
                          "application_name",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "dbname",
                          nullptr};
    const char* vals[] = {"5", "chatd", "10", "3", "3", url.c_str(), nullptr};
    auto c = std::make_unique<pg_conn>(PQconnectdbParams(keys, vals, 1));
    if (!c->get()) {
      err = "cannot connect to PostgreSQL: out of memory";
      return nullptr;
    }
    if (!c->ok()) {
      err = "cannot connect to " + describe(c->get()) + ": " + c->error();
      return nullptr;
    }
    if (PQserverVersion(c->get()) < 110000) {
      err = describe(c->get()) + " runs PostgreSQL " + std::to_string(PQserverVersion(c->get())) +
            "; 11 or newer is needed";
      return nullptr;
    }
    if (!c->exec(session_setup, err)) {
      err = describe(c->get()) + ": " + err;
      return nullptr;
    }
    if (prepare && !c->prepare_all(err)) {
      err = describe(c->get()) + ": " + err;
      return nullptr;
    }
    return c;
  }

 private:
  void give_back(std::unique_ptr<pg_conn> c) {
    bool keep = c->idle();
    if (!keep) c.reset();  // closes it: the server rolls back what was open
    std::lock_guard<std::mutex> lock{mu_};
    if (keep)
      idle_.push_back(std::move(c));
    else
      --open_;
    cv_.notify_one();
  }

  std::string url_;
  size_t max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pg_conn>> idle_;
  size_t open_ = 0;  // leased + idle
};

// --- the backend ----------------------------------------------------------------

struct room_row {
  std::string epoch;
  uint64_t last_seq = 0;
  uint64_t first_seq = 1;
  uint64_t term = 0;
  std::string owner;
  room_settings settings;
};

void read_row(const result& r, int row, room_row& out) {
  out.epoch = r.str(row, 0);
  out.last_seq = static_cast<uint64_t>(r.i64(row, 1));
  out.first_seq = static_cast<uint64_t>(r.i64(row, 2));
  out.term = static_cast<uint64_t>(r.i64(row, 3));
  out.owner = r.str(row, 4);
  out.settings.topic = r.str(row, 5);
  out.settings.private_room = r.i64(row, 6) != 0;
  out.settings.read_only = r.i64(row, 7) != 0;
  out.settings.slow_mode =
      static_cast<uint32_t>(std::clamp<int64_t>(r.i64(row, 8), 0, max_slow_mode));
}

// Columns: msg_cols.
void read_msgs(const result& r, const std::string& room, std::vector<stored_msg>& out) {
  out.reserve(out.size() + static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) {
    stored_msg m;
    m.room = room;
    m.seq = static_cast<uint64_t>(r.i64(i, 0));
    m.ts = r.i64(i, 1);
    m.from = r.str(i, 2);
    m.name = r.str(i, 3);
    m.text = r.str(i, 4);
    m.data = r.str(i, 5);
    m.idem_key = r.str(i, 6);
    auto kind = r.i64(i, 7);
    m.kind = kind >= 0 && kind <= 4 ? static_cast<event_kind>(kind) : event_kind::message;
    m.target = static_cast<uint64_t>(r.i64(i, 8));
    m.reply_to = static_cast<uint64_t>(r.i64(i, 9));
    m.mentions = split_lines(r.str(i, 10));
    m.emoji = r.str(i, 11);
    m.on = r.i64(i, 12) != 0;
    m.edited_ts = r.i64(i, 13);
    m.deleted = r.i64(i, 14) != 0;
    out.push_back(std::move(m));
  }
}

// Rows (user_id, role, read_seq).
void read_restrictions(const result& r, std::vector<restriction>& out) {
  for (int i = 0; i < r.rows(); ++i) out.push_back({r.str(i, 0), r.i64(i, 1), r.i64(i, 2)});
}

void read_members(const result& r, std::vector<membership>& out) {
  for (int i = 0; i < r.rows(); ++i) {
    auto role = r.i64(i, 1);
    out.push_back({r.str(i, 0),
                   role >= 0 && role <= 2 ? static_cast<member_role>(role) : member_role::member,
                   static_cast<uint64_t>(r.i64(i, 2))});
  }
}

// Rows (seq, emoji, user_id) ordered by seq and reaction order: into the
// reactions of the messages read.
void add_reactions(const result& r, std::vector<stored_msg>& msgs) {
  if (r.rows() == 0) return;
  std::unordered_map<uint64_t, stored_msg*> by_seq;
  for (auto& m : msgs) by_seq[m.seq] = &m;
  for (int i = 0; i < r.rows(); ++i) {
    auto it = by_seq.find(static_cast<uint64_t>(r.i64(i, 0)));
    if (it == by_seq.end() || it->second->kind != event_kind::message) continue;
    auto& rs = it->second->reactions;
    auto emoji = r.str(i, 1);
    auto set = std::find_if(rs.begin(), rs.end(),
                            [&](const reaction_set& x) { return x.emoji == emoji; });
    if (set == rs.end()) set = rs.insert(rs.end(), reaction_set{std::move(emoji), {}});
    set->users.push_back(r.str(i, 2));
  }
}

class postgres_backend final : public store_backend {
 public:
  postgres_backend(std::string url, size_t pool_size) : pool_(std::move(url), pool_size) {}

  bool open(const std::string& url, std::string& err) {
    auto c = pool::connect(url, /*prepare=*/false, err);
    if (!c) return false;
    if (!migrate(*c, err) || !c->prepare_all(err)) {
      err = describe(c->get()) + ": " + err;
      return false;
    }
    pool_.adopt(std::move(c));
    return true;
  }

  bool load_room(const std::string& room, uint32_t recent_limit, int64_t idem_since_ms,
                 room_snapshot& out, std::string& err) override {
    out = room_snapshot{};
    bool ok = guarded(kind::write, err, [&](pg_conn& c) {
      // One round trip: create the room if unknown (its own implicit
      // transaction), then read row and messages in ONE snapshot, since
      // another node may append meanwhile.
      params create, get, recent, idem;
      create.text(room).text(new_epoch()).i64(now_ms());
      get.text(room);
      recent.text(room).i64(recent_limit);
      idem.text(room).i64(idem_since_ms);
      std::vector<pg_conn::step> steps = {
          pg_conn::prepared("chat_insert_room", create, PGRES_COMMAND_OK),
          pg_conn::sync_point(),
          pg_conn::plain("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
          pg_conn::prepared("chat_get_room", get),
          pg_conn::prepared("chat_recent", recent),
          pg_conn::prepared("chat_idem", idem),
          pg_conn::prepared("chat_recent_reactions", recent),
          pg_conn::prepared("chat_members_of", get),
          pg_conn::prepared("chat_restrictions_of", get),
          pg_conn::plain("COMMIT")};
      std::vector<result> rs;
      std::string failed;
      if (!c.pipeline(steps, rs, failed, err)) return false;
      if (!failed.empty()) {
        err = "load room '" + room + "': " + failed;
        return false;
      }
      read_members(rs[7], out.members);
      read_restrictions(rs[8], out.restrictions);
      if (rs[3].rows() != 1) {
        err = "room '" + room + "' vanished after insert";
        return false;
      }
      room_row row;
      read_row(rs[3], 0, row);
      fill_snapshot(room, row, recent_limit > 0 ? &rs[4] : nullptr, rs[5], out);
      add_reactions(rs[6], out.recent);
      return true;
    });
    if (!ok) out = room_snapshot{};
    return ok;
  }

  bool claim_room(const std::string& room, const std::string& owner, uint32_t recent_limit,
                  int64_t idem_since_ms, room_snapshot& out, std::string& err) override {
    out = room_snapshot{};
    if (owner.empty()) {
      err = "claim of room '" + room + "' without an owner name";
      return false;
    }
    bool ok = guarded(kind::write, err, [&](pg_conn& c) {
      // One transaction, one round trip. The row lock taken by the UPDATE
      // waits for any append of the room in flight and holds off the next
      // ones until COMMIT; the reads after it start after it (READ
      // COMMITTED: a fresh snapshot per statement), so the snapshot holds
      // everything committed under the earlier terms.
      params create, bump, recent, idem, get;
      create.text(room).text(new_epoch()).i64(now_ms());
      bump.text(room).text(owner);
      get.text(room);
      recent.text(room).i64(recent_limit);
      idem.text(room).i64(idem_since_ms);
      std::vector<pg_conn::step> steps = {
          pg_conn::plain("BEGIN"),
          pg_conn::prepared("chat_insert_room", create, PGRES_COMMAND_OK),
          pg_conn::prepared("chat_claim", bump),
          pg_conn::prepared("chat_recent", recent),
          pg_conn::prepared("chat_idem", idem),
          pg_conn::prepared("chat_recent_reactions", recent),
          pg_conn::prepared("chat_members_of", get),
          pg_conn::prepared("chat_restrictions_of", get),
          pg_conn::plain("COMMIT")};
      std::vector<result> rs;
      std::string failed;
      if (!c.pipeline(steps, rs, failed, err)) return false;
      if (!failed.empty() || !committed(rs[8])) {
        err = "claim room '" + room + "': " + (failed.empty() ? "rolled back" : failed);
        return rollback(c);
      }
      if (rs[2].rows() != 1) {
        err = "room '" + room + "' vanished during its claim";
        return false;
      }
      room_row row;
      read_row(rs[2], 0, row);
      fill_snapshot(room, row, recent_limit > 0 ? &rs[3] : nullptr, rs[4], out);
      add_reactions(rs[5], out.recent);
      read_members(rs[6], out.members);
      read_restrictions(rs[7], out.restrictions);
      return true;
    });
    if (!ok) out = room_snapshot{};
    return ok;
  }

  bool append(const std::vector<append_batch>& batches, std::vector<append_result>& results,
              std::string& err) override {
    results.assign(batches.size(), append_result::committed);
    // Cheap checks first, without touching the database.
    std::vector<std::string> names;
    for (auto& b : batches) {
      for (size_t i = 0; i < b.msgs.size(); ++i) {
        auto& m = b.msgs[i];
        if (!m.room.empty() && m.room != b.room) {
          err = "message for room '" + m.room + "' in batch of room '" + b.room + "'";
          return false;
        }
        if (i > 0 && m.seq != b.msgs[i - 1].seq + 1) {
          err = "seqs not consecutive in batch of room '" + b.room +
                "': " + std::to_string(b.msgs[i - 1].seq) + " then " + std::to_string(m.seq);
          return false;
        }
        if (m.seq == 0 || m.seq > static_cast<uint64_t>(max_i64)) {
          err = "seq out of range in room '" + b.room + "': " + std::to_string(m.seq);
          return false;
        }
      }
      if (!b.empty()) names.push_back(b.room);
    }
    if (names.empty()) return true;
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return guarded(kind::write, err,
                   [&](pg_conn& c) { return append_impl(c, batches, names, results, err); });
  }

  bool range(const range_query& q, std::vector<stored_msg>& out, std::string& err) override {
    out.clear();
    if (q.limit == 0 || q.after >= static_cast<uint64_t>(max_i64)) return true;
    bool ok = guarded(kind::read, err, [&](pg_conn& c) {
      params p;
      p.text(q.room)
          .i64(static_cast<int64_t>(q.after))
          .i64(q.before == 0 ? max_i64 : clamp_i64(q.before))
          .i64(static_cast<int64_t>(q.limit));
      if (q.moderation_only) {  // no reactions on moderation events
        auto r = c.run(q.newest ? "chat_range_mod_desc" : "chat_range_mod_asc", p, err);
        if (!r.get()) return false;
        read_msgs(r, q.room, out);
        if (q.newest) std::reverse(out.begin(), out.end());
        return true;
      }
      // One snapshot for the messages and their reactions, one round trip.
      std::vector<pg_conn::step> steps = {
          pg_conn::plain("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
          pg_conn::prepared(q.newest ? "chat_range_desc" : "chat_range_asc", p),
          pg_conn::prepared(q.newest ? "chat_range_desc_reactions" : "chat_range_asc_reactions", p),
          pg_conn::plain("COMMIT")};
      std::vector<result> rs;
      std::string failed;
      if (!c.pipeline(steps, rs, failed, err)) return false;
      if (!failed.empty()) {
        err = "read range of '" + q.room + "': " + failed;
        return false;
      }
      read_msgs(rs[1], q.room, out);
      add_reactions(rs[2], out);
      if (q.newest) std::reverse(out.begin(), out.end());
      return true;
    });
    if (!ok) out.clear();
    return ok;
  }

  // A read: never creates the row (reads of unknown rooms write nothing).
  bool get_event(const std::string& room, uint64_t seq, stored_msg& out, bool& found,
                 std::string& err) override {
    found = false;
    if (seq == 0 || seq > static_cast<uint64_t>(max_i64)) return true;
    return guarded(kind::read, err, [&](pg_conn& c) {
      params p;
      p.text(room).i64(static_cast<int64_t>(seq));
      std::vector<pg_conn::step> steps = {
          pg_conn::plain("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
          pg_conn::prepared("chat_event", p), pg_conn::prepared("chat_event_reactions", p),
          pg_conn::plain("COMMIT")};
      std::vector<result> rs;
      std::string failed;
      if (!c.pipeline(steps, rs, failed, err)) return false;
      if (!failed.empty()) {
        err = "read event of '" + room + "': " + failed;
        return false;
      }
      std::vector<stored_msg> got;
      read_msgs(rs[1], room, got);
      add_reactions(rs[2], got);
      if (got.empty()) return true;
      out = std::move(got.front());
      found = true;
      return true;
    });
  }

  bool search(const std::string& room, const std::string& query, uint64_t before, uint32_t limit,
              std::vector<stored_msg>& out, std::string& err) override {
    out.clear();
    if (limit == 0) return true;
    bool ok = guarded(kind::read, err, [&](pg_conn& c) {
      params p;
      p.text(room)
          .i64(before == 0 ? max_i64 : clamp_i64(before))
          .text(searchable(query))
          .i64(static_cast<int64_t>(limit));
      std::vector<pg_conn::step> steps = {
          pg_conn::plain("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
          pg_conn::prepared("chat_search", p), pg_conn::prepared("chat_search_reactions", p),
          pg_conn::plain("COMMIT")};
      std::vector<result> rs;
      std::string failed;
      if (!c.pipeline(steps, rs, failed, err)) return false;
      if (!failed.empty()) {
        err = "search '" + room + "': " + failed;
        return false;
      }
      read_msgs(rs[1], room, out);
      add_reactions(rs[2], out);
      return true;
    });
    if (!ok) out.clear();
    return ok;
  }

  bool count_unread(const std::string& room, const std::string& user, uint64_t after,
                    uint64_t upto, uint64_t& out, std::string& err) override {
    out = 0;
    if (upto <= after) return true;
    return guarded(kind::read, err, [&](pg_conn& c) { return unread_on(c, room, user, after, upto, out, err); });
  }

  bool user_rooms(const std::string& user, std::vector<user_room>& out, std::string& err) override {
    out.clear();
    bool ok = guarded(kind::read, err, [&](pg_conn& c) {
      auto r = c.run("chat_rooms_of", params{}.text(user), err);
      if (!r.get()) return false;
      for (int i = 0; i < r.rows(); ++i) {
        user_room ur;
        ur.room = r.str(i, 0);
        auto role = r.i64(i, 1);
        ur.role = role >= 0 && role <= 2 ? static_cast<member_role>(role) : member_role::member;
        ur.read_seq = static_cast<uint64_t>(r.i64(i, 2));
        ur.last_seq = static_cast<uint64_t>(r.i64(i, 3));
        ur.topic = r.str(i, 4);
        ur.private_room = r.i64(i, 5) != 0;
        out.push_back(std::move(ur));
      }
      for (auto& ur : out)
        if (ur.last_seq > ur.read_seq &&
            !unread_on(c, ur.room, user, ur.read_seq, ur.last_seq, ur.unread, err))
          return false;
      return true;
    });
    if (!ok) out.clear();
    return ok;
  }

  bool room_exists(const std::string& room, bool& out, std::string& err) override {
    return guarded(kind::read, err, [&](pg_conn& c) {
      auto r = c.run("chat_room_exists", params{}.text(room), err);
      if (!r.get()) return false;
      out = r.rows() == 1;
      return true;
    });
  }

  bool store_user_ban(const user_ban& ban, std::string& err) override {
    return guarded(kind::write, err, [&](pg_conn& c) {
      params p;
      p.text(ban.user);
      if (!ban.lift) p.i64(ban.until).text(ban.reason);
      auto r = c.run(ban.lift ? "chat_del_user_ban" : "chat_set_user_ban", p, err,
                     PGRES_COMMAND_OK);
      return r.get() != nullptr;
    });
  }

  bool user_bans(std::vector<user_ban>& out, std::string& err) override {
    out.clear();
    return guarded(kind::read, err, [&](pg_conn& c) {
      auto r = c.run("chat_user_bans", err);
      if (!r.get()) return false;
      for (int i = 0; i < r.rows(); ++i) out.push_back({r.str(i, 0), r.i64(i, 1), r.str(i, 2), false});
      return true;
    });
  }

  bool lost_claims(const std::string& owner,
                   const std::vector<std::pair<std::string, uint64_t>>& claims,
                   std::vector<std::string>& lost, std::string& err) override {
    if (claims.empty()) return true;
    return guarded(kind::read, err, [&](pg_conn& c) {
      array_builder names{text_oid};
      for (auto& cl : claims) names.add(cl.first);
      params p;
      p.array(names);
      auto r = c.run("chat_claims", p, err);
      if (!r.get()) return false;
      std::unordered_map<std::string, std::pair<uint64_t, std::string>> now;
      for (int i = 0; i < r.rows(); ++i)
        now.emplace(r.str(i, 0), std::make_pair(static_cast<uint64_t>(r.i64(i, 1)), r.str(i, 2)));
      for (auto& [room, term] : claims) {
        auto it = now.find(room);
        if (it == now.end() || it->second.first != term || it->second.second != owner)
          lost.push_back(room);
      }
      return true;
    });
  }

  bool first_seq(const std::string& room, uint64_t& out, std::string& err) override {
    return guarded(kind::read, err, [&](pg_conn& c) {
      auto r = c.run("chat_first_seq", params{}.text(room), err);
      if (!r.get()) return false;
      out = r.rows() == 1 ? static_cast<uint64_t>(r.i64(0, 0)) : 1;
      return true;
    });
  }

  bool trim(const retention_policy& p, int64_t now, uint64_t& removed, std::string& err) override {
    removed = 0;
    if (p.max_messages == 0 && p.max_age_ms <= 0) return true;
    return guarded(kind::write, err, [&](pg_conn& c) {
      int64_t max_age = std::max<int64_t>(p.max_age_ms, 0);
      auto points = c.run(
          "chat_trim_points",
          params{}.i64(clamp_i64(p.max_messages)).i64(max_age).i64(max_age > 0 ? now - max_age : 0),
          err);
      if (!points.get()) return false;
      // One short transaction per room: a single row lock at a time, so
      // trimming never deadlocks with a group commit, nor holds it up long.
      for (int i = 0; i < points.rows(); ++i) {
        params p2;
        p2.text(points.str(i, 0)).i64(points.i64(i, 1));
        if (!c.exec("BEGIN", err)) return false;
        auto d = c.run("chat_delete_before", p2, err, PGRES_COMMAND_OK);
        if (!d.get()) return rollback(c);
        auto dr = c.run("chat_trim_reactions", p2, err, PGRES_COMMAND_OK);
        if (!dr.get()) return rollback(c);
        auto u = c.run("chat_set_first_seq", p2, err, PGRES_COMMAND_OK);
        if (!u.get() || !c.commit(err)) return rollback(c);
        removed += d.affected();
      }
      return true;
    });
  }

  bool healthy(std::string& err) override {
    std::string last_write;
    {
      std::lock_guard<std::mutex> lock{mu_};
      last_write = write_error_;
    }
    // A real round trip on a pooled connection (a dead one is replaced by a
    // fresh connect), and a write when the last write failed.
    bool ok = guarded(last_write.empty() ? kind::read : kind::write, err, [&](pg_conn& c) {
      auto r = c.run("chat_health", err);
      if (!r.get()) return false;
      if (r.boolean(0, 0)) {
        err = describe(c.get()) + " is a read-only standby (in recovery)";
        return false;
      }
      if (r.null(0, 1)) {
        err = "schema_version is gone from the meta table";
        return false;
      }
      if (last_write.empty()) return true;
      auto w = c.run("chat_health_probe", params{}.text(std::to_string(now_ms())), err,
                     PGRES_COMMAND_OK);
      if (!w.get()) err += "; last write error: " + last_write;
      return w.get() != nullptr;
    });
    if (ok) err = "ok";
    return ok;
  }

  size_t concurrency() const override { return pool_.size(); }

 private:
  enum class kind { read, write };

  // Leases a connection and runs `f` on it; turns exceptions (bad_alloc, an
  // unexpected column) into an error. The outcome of a write is remembered:
  // after a failed one, healthy() is "ok" only once a write works again.
  template <class F>
  bool guarded(kind k, std::string& err, F&& f) {
    bool ok = false;
    try {
      auto c = pool_.take(err);
      if (c) {
        ok = f(*c);
        if (!ok) c->rollback();
      }
    } catch (const std::exception& e) {
      err = std::string{"postgres store: "} + e.what();
      ok = false;
    }
    if (k == kind::write) {
      std::lock_guard<std::mutex> lock{mu_};
      if (!ok)
        write_error_ = err;
      else
        write_error_.clear();
    }
    return ok;
  }

  static bool unread_on(pg_conn& c, const std::string& room, const std::string& user,
                        uint64_t after, uint64_t upto, uint64_t& out, std::string& err) {
    auto r = c.run("chat_unread",
                   params{}.text(room).i64(clamp_i64(after)).i64(clamp_i64(upto)).bytes(user).i64(
                       static_cast<int64_t>(max_unread)),
                   err);
    if (!r.get()) return false;
    out = static_cast<uint64_t>(r.i64(0, 0));
    return true;
  }

  static bool rollback(pg_conn& c) {
    c.rollback();
    return false;
  }

  static void fill_snapshot(const std::string& room, const room_row& row, const result* recent,
                            const result& idem, room_snapshot& out) {
    out.epoch = row.epoch;
    out.last_seq = row.last_seq;
    out.first_seq = row.first_seq;
    out.term = row.term;
    out.owner = row.owner;
    out.settings = row.settings;
    if (recent) {
      read_msgs(*recent, room, out.recent);
      std::reverse(out.recent.begin(), out.recent.end());
    }
    read_msgs(idem, room, out.idem);
  }

  static bool committed(const result& r) {
    return r.status() == PGRES_COMMAND_OK && std::strcmp(PQcmdStatus(r.get()), "COMMIT") == 0;
  }

  // Two round trips: BEGIN + lock (the fencing and seq checks need the
  // rows), then insert + last seqs + COMMIT.
  static bool append_impl(pg_conn& c, const std::vector<append_batch>& batches,
                          const std::vector<std::string>& names,
                          std::vector<append_result>& results, std::string& err) {
    // Lock every room of the call: the terms and last seqs read here stay
    // true until COMMIT, whatever other nodes do.
    array_builder name_arr{text_oid};
    for (auto& n : names) name_arr.add(n);
    params lock;
    lock.array(name_arr);
    std::vector<pg_conn::step> first = {pg_conn::plain("BEGIN"),
                                        pg_conn::prepared("chat_lock_rooms", lock)};
    std::vector<result> rs;
    std::string failed;
    if (!c.pipeline(first, rs, failed, err)) return false;
    if (!failed.empty()) {
      err = failed;
      return rollback(c);
    }
    auto& locked = rs[1];
    struct locked_room {
      uint64_t last_seq;
      uint64_t term;
      std::string owner;
      bool moved = false;  // its last_seq changes in this commit
    };
    std::map<std::string, locked_room> rows;
    for (int i = 0; i < locked.rows(); ++i)
      rows.emplace(locked.str(i, 0),
                   locked_room{static_cast<uint64_t>(locked.i64(i, 1)),
                               static_cast<uint64_t>(locked.i64(i, 2)), locked.str(i, 3)});
    array_builder room{text_oid}, seq{int8_oid}, ts{int8_oid}, from{bytea_oid}, name{bytea_oid},
        text{bytea_oid}, data{bytea_oid}, idem{bytea_oid}, kinds{int8_oid}, target{int8_oid},
        reply_to{int8_oid}, mentions{bytea_oid}, emoji{bytea_oid}, on{int8_oid},
        search{text_oid};
    // The changes to apply to their targets. One statement may touch a row
    // only once: the last edit of a message wins, and a (message, emoji,
    // user) ends up as the last reaction event on it says.
    std::map<std::pair<std::string, uint64_t>, const stored_msg*> edits;
    std::map<std::tuple<std::string, uint64_t, std::string, std::string>, const stored_msg*> reacts;
    std::vector<std::pair<std::string, uint64_t>> deletes;
    // Memberships as the batches leave them, in order (null: ended).
    std::map<std::pair<std::string, std::string>, const membership*> members;
    std::map<std::string, const room_settings*> settings;  // the last of each room
    std::map<std::pair<std::string, std::string>, const restriction*> restrictions;
    for (size_t i = 0; i < batches.size(); ++i) {
      auto& b = batches[i];
      if (b.empty()) continue;
      auto it = rows.find(b.room);
      if (it == rows.end()) {
        err = "append to unknown room '" + b.room + "' (load_room first)";
        return rollback(c);
      }
      auto& row = it->second;
      if (b.term != 0 && (b.term != row.term || b.owner != row.owner)) {
        results[i] = append_result::fenced;
        continue;
      }
      for (auto& m : b.member_set) members[{b.room, m.user}] = &m;
      for (auto& u : b.member_del) members[{b.room, u}] = nullptr;
      if (b.set_settings) settings[b.room] = &b.settings;
      for (auto& x : b.restrict_set) restrictions[{b.room, x.user}] = &x;
      for (auto& u : b.restrict_del) restrictions[{b.room, u}] = nullptr;
      if (b.msgs.empty()) continue;
      // A room in two batches chains: the second continues the first.
      if (b.msgs.front().seq != row.last_seq + 1) {
        err = "seq gap in room '" + b.room + "': expected " + std::to_string(row.last_seq + 1) +
              ", got " + std::to_string(b.msgs.front().seq);
        return rollback(c);
      }
      for (auto& m : b.msgs) {
        room.add(b.room);
        seq.add(static_cast<int64_t>(m.seq));
        ts.add(m.ts);
        from.add(m.from);
        name.add(m.name);
        text.add(m.text);
        data.add(m.data);
        idem.add(m.idem_key);
        kinds.add(static_cast<int64_t>(m.kind));
        target.add(clamp_i64(m.target));
        reply_to.add(clamp_i64(m.reply_to));
        mentions.add(join_lines(m.mentions));
        emoji.add(m.emoji);
        on.add(static_cast<int64_t>(m.on ? 1 : 0));
        search.add(m.kind == event_kind::message ? searchable(m.text) : std::string{});
        if (m.kind == event_kind::edited) edits[{b.room, m.target}] = &m;
        if (m.kind == event_kind::reaction) reacts[{b.room, m.target, m.emoji, m.from}] = &m;
        if (m.kind == event_kind::deleted) deletes.emplace_back(b.room, m.target);
      }
      row.last_seq = b.msgs.back().seq;
      row.moved = true;
    }
    params insert, set_last, edit_p, add_p, remove_p, delete_p;
    std::vector<pg_conn::step> second;
    if (room.size() > 0) {
      insert.array(room).array(seq).array(ts).array(from).array(name).array(text).array(data).array(
          idem).array(kinds).array(target).array(reply_to).array(mentions).array(emoji).array(on)
          .array(search);
      second.push_back(pg_conn::prepared("chat_insert_msgs", insert, PGRES_COMMAND_OK));
      if (!edits.empty()) {
        array_builder r{text_oid}, t{int8_oid}, x{bytea_oid}, d{bytea_oid}, when{int8_oid},
            q{text_oid};
        for (auto& [key, m] : edits) {
          r.add(key.first);
          t.add(clamp_i64(key.second));
          x.add(m->text);
          d.add(m->data);
          when.add(m->ts);
          q.add(searchable(m->text));
        }
        edit_p.array(r).array(t).array(x).array(d).array(when).array(q);
        second.push_back(pg_conn::prepared("chat_apply_edits", edit_p, PGRES_COMMAND_OK));
      }
      if (!reacts.empty()) {
        array_builder ar{text_oid}, as{int8_oid}, ae{bytea_oid}, au{bytea_oid}, ap{int8_oid};
        array_builder rr{text_oid}, rs2{int8_oid}, re{bytea_oid}, ru{bytea_oid};
        for (auto& [key, m] : reacts) {
          auto& [r, t, e, u] = key;
          if (m->on) {
            ar.add(r);
            as.add(clamp_i64(t));
            ae.add(e);
            au.add(u);
            ap.add(static_cast<int64_t>(m->seq));  // a user's place: their last reaction's seq
          } else {
            rr.add(r);
            rs2.add(clamp_i64(t));
            re.add(e);
            ru.add(u);
          }
        }
        if (rr.size() > 0) {
          remove_p.array(rr).array(rs2).array(re).array(ru);
          second.push_back(pg_conn::prepared("chat_remove_reactions", remove_p, PGRES_COMMAND_OK));
        }
        if (ar.size() > 0) {
          add_p.array(ar).array(as).array(ae).array(au).array(ap);
          second.push_back(pg_conn::prepared("chat_add_reactions", add_p, PGRES_COMMAND_OK));
        }
      }
      if (!deletes.empty()) {
        array_builder r{text_oid}, t{int8_oid};
        for (auto& [n, tg] : deletes) {
          r.add(n);
          t.add(clamp_i64(tg));
        }
        delete_p.array(r).array(t);
        second.push_back(pg_conn::prepared("chat_apply_deletes", delete_p, PGRES_COMMAND_OK));
        second.push_back(pg_conn::prepared("chat_drop_reactions", delete_p, PGRES_COMMAND_OK));
      }
      array_builder set_name{text_oid}, set_seq{int8_oid};
      for (auto& [n, row] : rows)
        if (row.moved) {
          set_name.add(n);
          set_seq.add(static_cast<int64_t>(row.last_seq));
        }
      set_last.array(set_name).array(set_seq);
      second.push_back(pg_conn::prepared("chat_set_last_seq", set_last, PGRES_COMMAND_OK));
    }
    params set_m, del_m, set_s, set_r, del_r;
    if (!restrictions.empty()) {
      array_builder sr{text_oid}, su{text_oid}, sb{int8_oid}, sm{int8_oid}, dr{text_oid},
          du{text_oid};
      for (auto& [key, x] : restrictions) {
        if (x) {
          sr.add(key.first);
          su.add(key.second);
          sb.add(x->ban_until);
          sm.add(x->mute_until);
        } else {
          dr.add(key.first);
          du.add(key.second);
        }
      }
      if (sr.size() > 0) {
        set_r.array(sr).array(su).array(sb).array(sm);
        second.push_back(pg_conn::prepared("chat_set_restrictions", set_r, PGRES_COMMAND_OK));
      }
      if (dr.size() > 0) {
        del_r.array(dr).array(du);
        second.push_back(pg_conn::prepared("chat_del_restrictions", del_r, PGRES_COMMAND_OK));
      }
    }
    if (!settings.empty()) {
      array_builder n{text_oid}, t{text_oid}, p{int8_oid}, ro{int8_oid}, sm{int8_oid};
      for (auto& [room_name, x] : settings) {
        n.add(room_name);
        t.add(x->topic);
        p.add(static_cast<int64_t>(x->private_room));
        ro.add(static_cast<int64_t>(x->read_only));
        sm.add(static_cast<int64_t>(x->slow_mode));
      }
      set_s.array(n).array(t).array(p).array(ro).array(sm);
      second.push_back(pg_conn::prepared("chat_set_settings", set_s, PGRES_COMMAND_OK));
    }
    {
      array_builder sr{text_oid}, su{text_oid}, sro{int8_oid}, srs{int8_oid}, dr{text_oid},
          du{text_oid};
      for (auto& [key, m] : members) {
        if (m) {
          sr.add(key.first);
          su.add(key.second);
          sro.add(static_cast<int64_t>(m->role));
          srs.add(clamp_i64(m->read_seq));
        } else {
          dr.add(key.first);
          du.add(key.second);
        }
      }
      if (sr.size() > 0) {
        set_m.array(sr).array(su).array(sro).array(srs);
        second.push_back(pg_conn::prepared("chat_set_members", set_m, PGRES_COMMAND_OK));
      }
      if (dr.size() > 0) {
        del_m.array(dr).array(du);
        second.push_back(pg_conn::prepared("chat_del_members", del_m, PGRES_COMMAND_OK));
      }
    }
    second.push_back(pg_conn::plain("COMMIT"));
    if (!c.pipeline(second, rs, failed, err)) return false;
    if (!failed.empty() || !committed(rs[second.size() - 2])) {
      err = failed.empty() ? "commit: the transaction was rolled back" : failed;
      return rollback(c);
    }
    return true;
  }

  // 0 for a database without our tables; fails for one that is not a chat store.
  static bool read_schema_version(pg_conn& c, int64_t& version, std::string& err) {
    auto r = c.query(
        "SELECT to_regclass('meta') IS NOT NULL, to_regclass('rooms') IS NOT NULL,"
        " to_regclass('messages') IS NOT NULL",
        err);
    if (!r.get()) return false;
    if (!r.boolean(0, 0)) {
      if (r.boolean(0, 1) || r.boolean(0, 2)) {
        err = "database has a rooms or messages table but no meta table: not a chat store";
        return false;
      }
      version = 0;
      return true;
    }
    auto v = c.query("SELECT value FROM meta WHERE key = 'schema_version'", err);
    if (!v.get()) return false;
    if (v.rows() != 1) {
      err = "no schema_version in meta: not a chat store";
      return false;
    }
    auto text = v.str(0, 0);
    try {
      size_t pos = 0;
      version = std::stoll(text, &pos);
      if (pos == text.size() && version >= 1) return true;
    } catch (const std::exception&) {
    }
    err = "bad schema_version in meta: '" + text + "'";
    return false;
  }

  static bool migrate(pg_conn& c, std::string& err) {
    int64_t version = 0;
    if (!read_schema_version(c, version, err)) return false;
    if (version > latest_schema) {
      err = "schema_version " + std::to_string(version) + " is newer than this build supports (" +
            std::to_string(latest_schema) + "); refusing to open";
      return false;
    }
    if (version == latest_schema) return true;
    // Nodes that start together on a fresh database queue here. The lock is
    // the session's, taken before the transaction: a transaction begun while
    // waiting for a transaction-level lock could still see the catalog as it
    // was before the first node's migration committed.
    auto key = std::to_string(migration_lock_key);
    if (!c.exec(("SELECT pg_advisory_lock(" + key + ")").c_str(), err)) return false;
    bool ok = migrate_locked(c, version, err);
    std::string unlock_err;
    c.exec(("SELECT pg_advisory_unlock(" + key + ")").c_str(), unlock_err);
    return ok;
  }

  static bool migrate_locked(pg_conn& c, int64_t version, std::string& err) {
    // Re-read under the lock: another node may have migrated meanwhile.
    if (!read_schema_version(c, version, err)) return false;
    for (auto& m : migrations) {
      if (m.version <= version) continue;
      if (!c.exec("BEGIN", err)) return rollback(c);
      auto set = "INSERT INTO meta(key, value) VALUES('schema_version', '" +
                 std::to_string(m.version) +
                 "') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
      if (!c.exec(m.sql, err) || !c.exec(set.c_str(), err) || !c.commit(err)) {
        err = "migration to schema_version " + std::to_string(m.version) + " failed: " + err;
        return rollback(c);
      }
      version = m.version;
    }
    return true;
  }

  pool pool_;
  std::mutex mu_;
  std::string write_error_;  // last failed call, "" once one succeeds
};

}  // namespace

std::unique_ptr<store_backend> make_postgres_backend(const std::string& url, size_t pool_size,
                                                     std::string& err) {
  try {
    auto b = std::make_unique<postgres_backend>(url, pool_size);
    if (!b->open(url, err)) return nullptr;
    return b;
  } catch (const std::exception& e) {
    err = std::string{"cannot open the PostgreSQL store: "} + e.what();
    return nullptr;
  }
}

}  // namespace chat
