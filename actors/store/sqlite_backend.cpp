// SQLite store backend: one connection, WAL journal, prepared statements
// reused on the hot path. Used from one actor at a time, never concurrently.
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "actors/store/backend.hpp"
#include "messages/clock.hpp"

namespace chat {

namespace {

constexpr int64_t max_i64 = std::numeric_limits<int64_t>::max();

// How long a statement waits for a lock held by another connection.
constexpr int default_busy_timeout_ms = 5000;

// Schema history. Append a step to change the schema; never edit a released one.
// Each step runs in its own transaction together with the schema_version bump.
struct migration {
  int version;
  const char* sql;
};

const migration migrations[] = {
    {1,
     "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
     "CREATE TABLE rooms(name TEXT PRIMARY KEY, epoch TEXT NOT NULL,"
     " last_seq INTEGER NOT NULL, first_seq INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
     "CREATE TABLE messages(room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
     " from_user TEXT NOT NULL, name TEXT NOT NULL, text TEXT NOT NULL,"
     " data TEXT NOT NULL DEFAULT '', idem_key TEXT NOT NULL DEFAULT '',"
     " PRIMARY KEY(room, seq)) WITHOUT ROWID;"
     // Partial: only the few messages with a key pay for this index.
     "CREATE INDEX messages_idem ON messages(room, ts) WHERE idem_key != '';"},
    // Fencing: the node that sequences the room, and a term that only grows.
    {2,
     "ALTER TABLE rooms ADD COLUMN owner TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE rooms ADD COLUMN term INTEGER NOT NULL DEFAULT 0;"},
    // Protocol v2: every row is an event (kind 0 = message, as every row
    // stored before); a message's current state (edits, deletion) lives in
    // its row, its reactions in their own table. Existing rows keep their seq.
    {3,
     "ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE messages ADD COLUMN target INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE messages ADD COLUMN reply_to INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE messages ADD COLUMN mentions TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE messages ADD COLUMN emoji TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE messages ADD COLUMN on_flag INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE messages ADD COLUMN edited_ts INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;"
     // A delete scrubs the message's edits too: find them without a scan.
     "CREATE INDEX messages_target ON messages(room, target) WHERE target != 0;"
     // pos: the seq of the reaction event, so users (and emoji, by their
     // first user) come back in the order they reacted.
     "CREATE TABLE reactions(room TEXT NOT NULL, seq INTEGER NOT NULL, emoji TEXT NOT NULL,"
     " user_id TEXT NOT NULL, pos INTEGER NOT NULL, PRIMARY KEY(room, seq, emoji, user_id))"
     " WITHOUT ROWID;"},
    // Memberships: role and read position, per room; by user for my_rooms.
    {4,
     "CREATE TABLE members(room TEXT NOT NULL, user_id TEXT NOT NULL,"
     " role INTEGER NOT NULL DEFAULT 0, read_seq INTEGER NOT NULL DEFAULT 0,"
     " PRIMARY KEY(room, user_id)) WITHOUT ROWID;"
     "CREATE INDEX members_by_user ON members(user_id);"},
    // Search: an FTS5 index of every message's current text. search_rows
    // maps (room, seq) to the index's rowid; `room_key` (the room name in hex:
    // one token) lets a query stay inside its room. Existing messages are
    // indexed here.
    {5,
     "CREATE TABLE search_rows(id INTEGER PRIMARY KEY, room TEXT NOT NULL, seq INTEGER NOT NULL,"
     " UNIQUE(room, seq));"
     "CREATE VIRTUAL TABLE search_index USING fts5(body, room_key,"
     " tokenize = 'unicode61 remove_diacritics 2');"
     "INSERT INTO search_rows(room, seq) SELECT room, seq FROM messages"
     " WHERE kind = 0 AND deleted = 0;"
     "INSERT INTO search_index(rowid, body, room_key) SELECT r.id, m.text, 'r' || hex(r.room)"
     " FROM search_rows r JOIN messages m ON m.room = r.room AND m.seq = r.seq;"},
    // Room settings (room_set): written with the moderation event that changes them.
    {6,
     "ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';"
     "ALTER TABLE rooms ADD COLUMN private INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE rooms ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE rooms ADD COLUMN slow_mode INTEGER NOT NULL DEFAULT 0;"},
    // Bans and mutes (ms since the epoch, 0 = none), written with their moderation event.
    {7,
     "CREATE TABLE restrictions(room TEXT NOT NULL, user_id TEXT NOT NULL,"
     " ban_until INTEGER NOT NULL DEFAULT 0, mute_until INTEGER NOT NULL DEFAULT 0,"
     " PRIMARY KEY(room, user_id)) WITHOUT ROWID;"},
};

constexpr int latest_schema = 7;

// A room name as one FTS5 token: 'r' and its bytes in upper-case hex, as
// SQLite's hex() writes them (the migration indexes with hex()).
std::string room_key(const std::string& room) {
  static const char* digits = "0123456789ABCDEF";
  std::string out = "r";
  for (unsigned char c : room) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

// The words of a query as an FTS5 expression: each one a quoted string (so
// that no word is read as an operator), all of them required.
std::string fts_query(const std::string& room, const std::string& query) {
  std::string out = "room_key : " + room_key(room) + " AND body : (";
  size_t words = 0;
  size_t i = 0;
  while (i < query.size()) {
    while (i < query.size() && std::isspace(static_cast<unsigned char>(query[i]))) ++i;
    size_t start = i;
    while (i < query.size() && !std::isspace(static_cast<unsigned char>(query[i]))) ++i;
    if (i == start) break;
    std::string w;
    for (size_t k = start; k < i; ++k) {
      if (query[k] == '"') w.push_back('"');
      w.push_back(query[k]);
    }
    out += (words++ ? " \"" : "\"") + w + "\"";
  }
  return words ? out + ")" : std::string{};
}


int64_t clamp_i64(uint64_t v) {
  return v > static_cast<uint64_t>(max_i64) ? max_i64 : static_cast<int64_t>(v);
}

std::string db_error(sqlite3* db, const std::string& what) {
  return what + ": " + sqlite3_errmsg(db) + " (sqlite code " +
         std::to_string(sqlite3_extended_errcode(db)) + ")";
}

// A prepared statement owned for the lifetime of the connection.
class stmt {
 public:
  stmt() = default;
  stmt(const stmt&) = delete;
  stmt& operator=(const stmt&) = delete;
  ~stmt() { sqlite3_finalize(s_); }

  bool prepare(sqlite3* db, const char* sql, std::string& err) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) == SQLITE_OK)
      return true;
    err = db_error(db, std::string{"prepare '"} + sql + "'");
    return false;
  }
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

// One use of a cached statement: resets it on scope exit, so that no read
// transaction stays open and bound strings are never referenced afterwards.
class use {
 public:
  explicit use(stmt& s) : s_(s.get()) {}
  use(const use&) = delete;
  use& operator=(const use&) = delete;
  ~use() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

  // Bound text is not copied (SQLITE_STATIC): it must outlive this `use`.
  bool bind(int i, const std::string& v) {
    return sqlite3_bind_text64(s_, i, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8) == SQLITE_OK;
  }
  bool bind(int i, std::string&&) = delete;  // a temporary would dangle
  bool bind(int i, int64_t v) { return sqlite3_bind_int64(s_, i, v) == SQLITE_OK; }

  int step() { return sqlite3_step(s_); }

  int64_t i64(int col) { return sqlite3_column_int64(s_, col); }
  std::string text(int col) {
    // column_text before column_bytes: the documented safe order.
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    auto n = sqlite3_column_bytes(s_, col);
    return p ? std::string(p, static_cast<size_t>(n)) : std::string{};
  }

 private:
  sqlite3_stmt* s_;
};

struct room_row {
  std::string epoch;
  uint64_t last_seq = 0;
  uint64_t first_seq = 1;
  uint64_t term = 0;
  std::string owner;
  room_settings settings;
};

class sqlite_backend final : public store_backend {
 public:
  ~sqlite_backend() override {
    // Statements must be finalized before the connection goes away.
    for (auto* s : stmts_) s->reset();
    sqlite3_close_v2(db_);
  }

  bool open(const std::string& path, std::string& err) {
    namespace fs = std::filesystem;
    bool in_memory = path.empty() || path == ":memory:";
    if (!in_memory) {
      std::error_code ec;
      auto parent = fs::path{path}.parent_path();
      if (!parent.empty() && !fs::exists(parent, ec)) {
        fs::create_directories(parent, ec);
        if (ec) {
          err = "cannot create directory '" + parent.string() + "': " + ec.message();
          return false;
        }
      }
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
      err = db_ ? db_error(db_, "cannot open '" + path + "'")
                : "cannot open '" + path + "': out of memory";
      return false;
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, default_busy_timeout_ms);
    // SQLite opens lazily: the first read is what finds a garbage file.
    if (!exec("SELECT count(*) FROM sqlite_master", err)) {
      err = "'" + path + "' is not a usable SQLite database: " + err;
      return false;
    }
    if (!in_memory) {
      std::string mode;
      if (!query_text("PRAGMA journal_mode=WAL", mode, err)) {
        err = "'" + path + "': " + err;
        return false;
      }
      if (mode != "wal") {
        err = "'" + path + "': cannot switch to WAL journal (got '" + mode + "')";
        return false;
      }
    }
    // FULL: every commit fsyncs the WAL, so an acked message also survives a
    // power loss, not only kill -9 (which NORMAL would already survive).
    // Measured (bench/store_bench, ext4 on a shared virtio disk, noisy, best
    // of 3 runs): 1 room, batch 1: FULL 8.5k commits/s, p50 0.10 ms, vs NORMAL
    // 47k; 1 room, batch 100: FULL 355k msgs/s vs NORMAL 520k; 100 rooms,
    // batch 200: FULL 74k msgs/s vs NORMAL 74k. Group commit amortises the
    // fsync, so FULL stays.
    // journal_size_limit: keep the WAL file from staying huge after a burst.
    // secure_delete: a deleted message's text is overwritten in the file, not
    // only unlinked (protocol v2: "removed from the store, not only hidden").
    if (!exec("PRAGMA synchronous=FULL", err) || !exec("PRAGMA journal_size_limit=67108864", err) ||
        !exec("PRAGMA secure_delete=ON", err))
      return false;
    if (!migrate(err)) {
      err = "'" + path + "': " + err;
      return false;
    }
    return prepare_all(err);
  }

  bool load_room(const std::string& room, uint32_t recent_limit, int64_t idem_since_ms,
                 room_snapshot& out, std::string& err) override {
    try {
      out = room_snapshot{};
      room_row row;
      if (!get_or_create_room(room, row, err)) return false;
      return read_snapshot(room, row, recent_limit, idem_since_ms, out, err);
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool claim_room(const std::string& room, const std::string& owner, uint32_t recent_limit,
                  int64_t idem_since_ms, room_snapshot& out, std::string& err) override {
    try {
      out = room_snapshot{};
      if (owner.empty()) {
        err = "claim of room '" + room + "' without an owner name";
        return false;
      }
      // BEGIN IMMEDIATE takes the write lock: no append of another connection
      // runs between the term bump and the reads.
      if (!step_done(*begin_, "begin", err)) return write_failed(err, err);
      room_row row;
      if (!get_or_create_room(room, row, err)) return abort_write(err);
      {
        use u{*claim_};
        u.bind(1, room);
        u.bind(2, owner);
        if (u.step() != SQLITE_DONE) return abort_write(db_error(db_, "claim room"), err);
      }
      bool found = false;
      if (!get_room(room, row, found, err)) return abort_write(err);
      if (!found || !read_snapshot(room, row, recent_limit, idem_since_ms, out, err)) {
        if (!found) err = "room '" + room + "' vanished during its claim";
        return abort_write(err);
      }
      if (!step_done(*commit_, "commit", err)) return abort_write(err);
      write_error_.clear();
      return true;
    } catch (const std::exception& e) {
      rollback();
      out = room_snapshot{};
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool append(const std::vector<append_batch>& batches, std::vector<append_result>& results,
              std::string& err) override {
    try {
      results.assign(batches.size(), append_result::committed);
      return append_impl(batches, results, err);
    } catch (const std::exception& e) {
      rollback();
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool range(const range_query& q, std::vector<stored_msg>& out, std::string& err) override {
    out.clear();
    try {
      if (q.limit == 0 || q.after >= static_cast<uint64_t>(max_i64)) return true;
      use u{q.newest ? *range_desc_ : *range_asc_};
      u.bind(1, q.room);
      u.bind(2, static_cast<int64_t>(q.after));
      u.bind(3, q.before == 0 ? max_i64 : clamp_i64(q.before));
      u.bind(4, static_cast<int64_t>(q.limit));
      if (!read_msgs(u, q.room, out, err, "read range")) return false;
      if (q.newest) std::reverse(out.begin(), out.end());
      return true;
    } catch (const std::exception& e) {
      out.clear();
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool get_event(const std::string& room, uint64_t seq, stored_msg& out, bool& found,
                 std::string& err) override {
    found = false;
    try {
      if (seq == 0 || seq > static_cast<uint64_t>(max_i64)) return true;
      std::vector<stored_msg> got;
      {
        use u{*get_event_};
        u.bind(1, room);
        u.bind(2, static_cast<int64_t>(seq));
        if (!read_msgs(u, room, got, err, "read event")) return false;
      }
      if (got.empty()) return true;
      out = std::move(got.front());
      found = true;
      return true;
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool count_unread(const std::string& room, const std::string& user, uint64_t after,
                    uint64_t upto, uint64_t& out, std::string& err) override {
    out = 0;
    try {
      if (upto <= after) return true;
      use u{*unread_};
      u.bind(1, room);
      u.bind(2, clamp_i64(after));
      u.bind(3, clamp_i64(upto));
      u.bind(4, user);
      u.bind(5, static_cast<int64_t>(max_unread));
      if (u.step() != SQLITE_ROW) {
        err = db_error(db_, "count unread");
        return false;
      }
      out = static_cast<uint64_t>(u.i64(0));
      return true;
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool search(const std::string& room, const std::string& query, uint64_t before, uint32_t limit,
              std::vector<stored_msg>& out, std::string& err) override {
    out.clear();
    try {
      auto expr = fts_query(room, query);
      if (expr.empty() || limit == 0) return true;
      use u{*search_};
      u.bind(1, expr);
      u.bind(2, room);
      u.bind(3, before == 0 ? max_i64 : clamp_i64(before));
      u.bind(4, static_cast<int64_t>(limit));
      return read_msgs(u, room, out, err, "search");
    } catch (const std::exception& e) {
      out.clear();
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool user_rooms(const std::string& user, std::vector<user_room>& out, std::string& err) override {
    out.clear();
    try {
      {
        use u{*rooms_of_};
        u.bind(1, user);
        int rc;
        while ((rc = u.step()) == SQLITE_ROW) {
          user_room r;
          r.room = u.text(0);
          auto role = u.i64(1);
          r.role = role >= 0 && role <= 2 ? static_cast<member_role>(role) : member_role::member;
          r.read_seq = static_cast<uint64_t>(u.i64(2));
          r.last_seq = static_cast<uint64_t>(u.i64(3));
          r.topic = u.text(4);
          r.private_room = u.i64(5) != 0;
          out.push_back(std::move(r));
        }
        if (rc != SQLITE_DONE) {
          err = db_error(db_, "list the rooms of a user");
          return false;
        }
      }
      for (auto& r : out)
        if (!count_unread(r.room, user, r.read_seq, r.last_seq, r.unread, err)) return false;
      return true;
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool room_exists(const std::string& room, bool& out, std::string& err) override {
    try {
      room_row row;
      return get_room(room, row, out, err);
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool lost_claims(const std::string& owner,
                   const std::vector<std::pair<std::string, uint64_t>>& claims,
                   std::vector<std::string>& lost, std::string& err) override {
    try {
      for (auto& [room, term] : claims) {
        room_row row;
        bool found = false;
        if (!get_room(room, row, found, err)) return false;
        if (!found || row.term != term || row.owner != owner) lost.push_back(room);
      }
      return true;
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool first_seq(const std::string& room, uint64_t& out, std::string& err) override {
    try {
      room_row row;
      bool found = false;
      if (!get_room(room, row, found, err)) return false;
      out = found ? row.first_seq : 1;
      return true;
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool trim(const retention_policy& p, int64_t now, uint64_t& removed, std::string& err) override {
    removed = 0;
    try {
      if (p.max_messages == 0 && p.max_age_ms <= 0) return true;
      uint64_t n = 0;
      if (!trim_impl(p, now, n, err)) return false;
      removed = n;
      return true;
    } catch (const std::exception& e) {
      rollback();
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool healthy(std::string& err) override {
    try {
      {
        use u{*schema_version_};
        if (u.step() != SQLITE_ROW) {
          err = db_error(db_, "read schema version");
          return false;
        }
      }
      if (write_error_.empty()) {
        err = "ok";
        return true;
      }
      // The last write failed (disk full, read-only, locked): only a write
      // that works again makes the store healthy. Costs one commit, and only
      // while unhealthy, so an idle store recovers without traffic.
      auto stamp = std::to_string(now_ms());
      use u{*health_probe_};
      u.bind(1, stamp);
      if (u.step() != SQLITE_DONE) {
        err = db_error(db_, "write probe") + "; last write error: " + write_error_;
        return false;
      }
      write_error_.clear();
      err = "ok";
      return true;
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  // Runs any SQL on this connection (tests and benchmarks tune pragmas).
  bool exec(const std::string& sql, std::string& err) {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg) == SQLITE_OK) return true;
    err = sql + ": " + (msg ? msg : sqlite3_errmsg(db_)) + " (sqlite code " +
          std::to_string(sqlite3_extended_errcode(db_)) + ")";
    sqlite3_free(msg);
    return false;
  }

 private:
  bool append_impl(const std::vector<append_batch>& batches, std::vector<append_result>& results,
                   std::string& err) {
    // Cheap checks first, without touching the file.
    bool any = false;
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
      any = any || !b.empty();
    }
    if (!any) return true;
    if (!step_done(*begin_, "begin", err)) return write_failed(err, err);
    for (size_t i = 0; i < batches.size(); ++i) {
      auto& b = batches[i];
      if (b.empty()) continue;
      room_row row;
      bool found = false;
      if (!get_room(b.room, row, found, err)) return abort_write(err);
      if (!found) {
        rollback();
        err = "append to unknown room '" + b.room + "' (load_room first)";
        return false;
      }
      // The write lock (BEGIN IMMEDIATE) is held: the term read here is the
      // one this commit is checked against.
      if (b.term != 0 && (b.term != row.term || b.owner != row.owner)) {
        results[i] = append_result::fenced;
        continue;
      }
      if (!write_members(b, err) || !write_restrictions(b, err)) return abort_write(err);
      if (b.set_settings) {
        use u{*set_settings_};
        u.bind(1, b.room);
        u.bind(2, b.settings.topic);
        u.bind(3, static_cast<int64_t>(b.settings.private_room));
        u.bind(4, static_cast<int64_t>(b.settings.read_only));
        u.bind(5, static_cast<int64_t>(b.settings.slow_mode));
        if (u.step() != SQLITE_DONE)
          return abort_write(db_error(db_, "store the settings of '" + b.room + "'"), err);
      }
      if (b.msgs.empty()) continue;
      // Read inside the transaction, so a room in two batches chains correctly.
      if (b.msgs.front().seq != row.last_seq + 1) {
        rollback();
        err = "seq gap in room '" + b.room + "': expected " + std::to_string(row.last_seq + 1) +
              ", got " + std::to_string(b.msgs.front().seq);
        return false;
      }
      for (auto& m : b.msgs) {
        {
          auto mentions = join_lines(m.mentions);
          use u{*insert_msg_};
          u.bind(1, b.room);
          u.bind(2, static_cast<int64_t>(m.seq));
          u.bind(3, m.ts);
          u.bind(4, m.from);
          u.bind(5, m.name);
          u.bind(6, m.text);
          u.bind(7, m.data);
          u.bind(8, m.idem_key);
          u.bind(9, static_cast<int64_t>(m.kind));
          u.bind(10, clamp_i64(m.target));
          u.bind(11, clamp_i64(m.reply_to));
          u.bind(12, mentions);
          u.bind(13, m.emoji);
          u.bind(14, static_cast<int64_t>(m.on ? 1 : 0));
          if (u.step() != SQLITE_DONE)
            return abort_write(db_error(db_, "insert message into '" + b.room + "'"), err);
        }
        if (!apply_to_target(b.room, m, err)) return abort_write(err);
        if (!index_event(b.room, m, err)) return abort_write(err);
      }
      use u{*set_last_seq_};
      u.bind(1, b.room);
      u.bind(2, static_cast<int64_t>(b.msgs.back().seq));
      if (u.step() != SQLITE_DONE) return abort_write(db_error(db_, "update last_seq"), err);
    }
    if (!step_done(*commit_, "commit", err)) return abort_write(err);
    write_error_.clear();
    return true;
  }

  bool write_members(const append_batch& b, std::string& err) {
    for (auto& m : b.member_set) {
      use u{*set_member_};
      u.bind(1, b.room);
      u.bind(2, m.user);
      u.bind(3, static_cast<int64_t>(m.role));
      u.bind(4, clamp_i64(m.read_seq));
      if (u.step() != SQLITE_DONE) {
        err = db_error(db_, "store membership in '" + b.room + "'");
        return false;
      }
    }
    for (auto& user : b.member_del) {
      use u{*del_member_};
      u.bind(1, b.room);
      u.bind(2, user);
      if (u.step() != SQLITE_DONE) {
        err = db_error(db_, "end membership in '" + b.room + "'");
        return false;
      }
    }
    return true;
  }

  bool read_restrictions(const std::string& room, std::vector<restriction>& out,
                         std::string& err) {
    use u{*restrictions_of_};
    u.bind(1, room);
    int rc;
    while ((rc = u.step()) == SQLITE_ROW) out.push_back({u.text(0), u.i64(1), u.i64(2)});
    if (rc == SQLITE_DONE) return true;
    err = db_error(db_, "read bans and mutes of '" + room + "'");
    return false;
  }

  bool write_restrictions(const append_batch& b, std::string& err) {
    for (auto& x : b.restrict_set) {
      use u{*set_restriction_};
      u.bind(1, b.room);
      u.bind(2, x.user);
      u.bind(3, x.ban_until);
      u.bind(4, x.mute_until);
      if (u.step() != SQLITE_DONE) {
        err = db_error(db_, "store a ban or mute in '" + b.room + "'");
        return false;
      }
    }
    for (auto& user : b.restrict_del) {
      use u{*del_restriction_};
      u.bind(1, b.room);
      u.bind(2, user);
      if (u.step() != SQLITE_DONE) {
        err = db_error(db_, "lift a ban or mute in '" + b.room + "'");
        return false;
      }
    }
    return true;
  }

  bool read_members(const std::string& room, std::vector<membership>& out, std::string& err) {
    use u{*members_of_};
    u.bind(1, room);
    int rc;
    while ((rc = u.step()) == SQLITE_ROW) {
      auto role = u.i64(1);
      out.push_back({u.text(0), role >= 0 && role <= 2 ? static_cast<member_role>(role) : member_role::member,
                     static_cast<uint64_t>(u.i64(2))});
    }
    if (rc == SQLITE_DONE) return true;
    err = db_error(db_, "read members of '" + room + "'");
    return false;
  }

  // The search index follows each message's current text: a message is
  // indexed, an edit re-indexes its target, a delete takes it out.
  bool index_event(const std::string& room, const stored_msg& m, std::string& err) {
    auto fail = [&](const char* what) {
      err = db_error(db_, std::string{what} + " in '" + room + "'");
      return false;
    };
    if (m.kind == event_kind::message) {
      {
        use u{*search_row_add_};
        u.bind(1, room);
        u.bind(2, clamp_i64(m.seq));
        if (u.step() != SQLITE_DONE) return fail("index a message");
      }
      auto key = room_key(room);
      use u{*search_add_};
      u.bind(1, static_cast<int64_t>(sqlite3_last_insert_rowid(db_)));
      u.bind(2, m.text);
      u.bind(3, key);
      return u.step() == SQLITE_DONE || fail("index a message");
    }
    if (m.kind == event_kind::edited) {
      use u{*search_edit_};
      u.bind(1, room);
      u.bind(2, clamp_i64(m.target));
      u.bind(3, m.text);
      return u.step() == SQLITE_DONE || fail("re-index an edit");
    }
    if (m.kind == event_kind::deleted) {
      {
        use u{*search_del_};
        u.bind(1, room);
        u.bind(2, clamp_i64(m.target));
        if (u.step() != SQLITE_DONE) return fail("unindex a deleted message");
      }
      use u{*search_row_del_};
      u.bind(1, room);
      u.bind(2, clamp_i64(m.target));
      return u.step() == SQLITE_DONE || fail("unindex a deleted message");
    }
    return true;
  }

  // A change event just inserted: its target's stored state follows it (as
  // apply_change does in memory), in the same transaction.
  bool apply_to_target(const std::string& room, const stored_msg& m, std::string& err) {
    auto target = clamp_i64(m.target);
    int rc = SQLITE_DONE;
    switch (m.kind) {
      case event_kind::edited: {
        use u{*apply_edit_};
        u.bind(1, room);
        u.bind(2, target);
        u.bind(3, m.text);
        u.bind(4, m.data);
        u.bind(5, m.ts);
        rc = u.step();
        break;
      }
      case event_kind::deleted: {
        {
          use u{*apply_delete_};
          u.bind(1, room);
          u.bind(2, target);
          rc = u.step();
        }
        if (rc == SQLITE_DONE) {
          use u{*drop_reactions_};
          u.bind(1, room);
          u.bind(2, target);
          rc = u.step();
        }
        break;
      }
      case event_kind::reaction: {
        use u{m.on ? *add_reaction_ : *remove_reaction_};
        u.bind(1, room);
        u.bind(2, target);
        u.bind(3, m.emoji);
        u.bind(4, m.from);
        if (m.on) u.bind(5, static_cast<int64_t>(m.seq));
        rc = u.step();
        break;
      }
      case event_kind::message:
      case event_kind::moderation:
        break;
    }
    if (rc == SQLITE_DONE) return true;
    err = db_error(db_, "apply event " + std::to_string(m.seq) + " to its target in '" + room + "'");
    return false;
  }

  // Fills in the reactions of the messages read (seqs ascending or not).
  bool read_reactions(const std::string& room, std::vector<stored_msg>& msgs, std::string& err) {
    uint64_t lo = UINT64_MAX, hi = 0;
    for (auto& m : msgs)
      if (m.kind == event_kind::message && !m.deleted) {
        lo = std::min(lo, m.seq);
        hi = std::max(hi, m.seq);
      }
    if (hi == 0) return true;
    std::unordered_map<uint64_t, stored_msg*> by_seq;
    for (auto& m : msgs) by_seq[m.seq] = &m;
    use u{*reactions_in_};
    u.bind(1, room);
    u.bind(2, clamp_i64(lo));
    u.bind(3, clamp_i64(hi));
    int rc;
    while ((rc = u.step()) == SQLITE_ROW) {
      auto it = by_seq.find(static_cast<uint64_t>(u.i64(0)));
      if (it == by_seq.end()) continue;
      auto& rs = it->second->reactions;
      auto emoji = u.text(1);
      auto set = std::find_if(rs.begin(), rs.end(),
                              [&](const reaction_set& r) { return r.emoji == emoji; });
      if (set == rs.end()) set = rs.insert(rs.end(), reaction_set{std::move(emoji), {}});
      set->users.push_back(u.text(2));
    }
    if (rc == SQLITE_DONE) return true;
    err = db_error(db_, "read reactions");
    return false;
  }

  bool trim_impl(const retention_policy& p, int64_t now, uint64_t& removed, std::string& err) {
    if (!step_done(*begin_, "begin", err)) return write_failed(err, err);
    struct todo {
      std::string name;
      uint64_t last_seq;
      uint64_t first_seq;
    };
    std::vector<todo> all;
    {
      use u{*all_rooms_};
      int rc;
      while ((rc = u.step()) == SQLITE_ROW)
        all.push_back(
            {u.text(0), static_cast<uint64_t>(u.i64(1)), static_cast<uint64_t>(u.i64(2))});
      if (rc != SQLITE_DONE) return abort_write(db_error(db_, "list rooms"), err);
    }
    for (auto& r : all) {
      // Only ever cut a prefix, so first_seq..last_seq stays gapless and
      // last_seq is untouched: the next message is still last_seq + 1.
      uint64_t keep_from = r.first_seq;
      if (p.max_messages > 0 && r.last_seq + 1 - r.first_seq > p.max_messages)
        keep_from = r.last_seq + 1 - p.max_messages;
      if (p.max_age_ms > 0) {
        // The oldest message young enough to keep; everything before it goes,
        // even if a clock step made an earlier seq look younger.
        use u{*first_young_};
        u.bind(1, r.name);
        u.bind(2, static_cast<int64_t>(keep_from));
        u.bind(3, now - p.max_age_ms);
        int rc = u.step();
        if (rc == SQLITE_ROW)
          keep_from = static_cast<uint64_t>(u.i64(0));
        else if (rc == SQLITE_DONE)
          keep_from = r.last_seq + 1;
        else
          return abort_write(db_error(db_, "find trim point"), err);
      }
      if (keep_from <= r.first_seq) continue;
      {
        use u{*delete_before_};
        u.bind(1, r.name);
        u.bind(2, static_cast<int64_t>(keep_from));
        if (u.step() != SQLITE_DONE) return abort_write(db_error(db_, "delete messages"), err);
        removed += static_cast<uint64_t>(sqlite3_changes(db_));
      }
      for (auto* st : {&search_trim_, &search_row_trim_}) {
        use u{**st};
        u.bind(1, r.name);
        u.bind(2, static_cast<int64_t>(keep_from));
        if (u.step() != SQLITE_DONE) return abort_write(db_error(db_, "unindex trimmed messages"), err);
      }
      {
        use u{*trim_reactions_};
        u.bind(1, r.name);
        u.bind(2, static_cast<int64_t>(keep_from));
        if (u.step() != SQLITE_DONE) return abort_write(db_error(db_, "delete reactions"), err);
      }
      use u{*set_first_seq_};
      u.bind(1, r.name);
      u.bind(2, static_cast<int64_t>(keep_from));
      if (u.step() != SQLITE_DONE) return abort_write(db_error(db_, "update first_seq"), err);
    }
    if (!step_done(*commit_, "commit", err)) return abort_write(err);
    write_error_.clear();
    return true;
  }

  bool get_room(const std::string& room, room_row& row, bool& found, std::string& err) {
    use u{*get_room_};
    u.bind(1, room);
    int rc = u.step();
    if (rc == SQLITE_DONE) {
      found = false;
      return true;
    }
    if (rc != SQLITE_ROW) {
      err = db_error(db_, "read room '" + room + "'");
      return false;
    }
    found = true;
    row.epoch = u.text(0);
    row.last_seq = static_cast<uint64_t>(u.i64(1));
    row.first_seq = static_cast<uint64_t>(u.i64(2));
    row.term = static_cast<uint64_t>(u.i64(3));
    row.owner = u.text(4);
    row.settings.topic = u.text(5);
    row.settings.private_room = u.i64(6) != 0;
    row.settings.read_only = u.i64(7) != 0;
    row.settings.slow_mode = static_cast<uint32_t>(std::clamp<int64_t>(u.i64(8), 0, max_slow_mode));
    return true;
  }

  // Creates the room (OR IGNORE: another connection may have created it
  // meanwhile) and reads its row.
  bool get_or_create_room(const std::string& room, room_row& row, std::string& err) {
    bool found = false;
    if (!get_room(room, row, found, err)) return false;
    if (found) return true;
    auto epoch = new_epoch();
    auto created = now_ms();
    {
      use u{*insert_room_};
      u.bind(1, room);
      u.bind(2, epoch);
      u.bind(3, created);
      if (u.step() != SQLITE_DONE) return write_failed(db_error(db_, "create room"), err);
    }
    if (!get_room(room, row, found, err)) return false;
    if (!found) {
      err = "room '" + room + "' vanished after insert";
      return false;
    }
    return true;
  }

  bool read_snapshot(const std::string& room, const room_row& row, uint32_t recent_limit,
                     int64_t idem_since_ms, room_snapshot& out, std::string& err) {
    if (!read_members(room, out.members, err) || !read_restrictions(room, out.restrictions, err))
      return false;
    out.epoch = row.epoch;
    out.last_seq = row.last_seq;
    out.first_seq = row.first_seq;
    out.term = row.term;
    out.owner = row.owner;
    out.settings = row.settings;
    if (recent_limit > 0) {
      use u{*recent_};
      u.bind(1, room);
      u.bind(2, static_cast<int64_t>(recent_limit));
      if (!read_msgs(u, room, out.recent, err, "read recent")) return false;
      std::reverse(out.recent.begin(), out.recent.end());
    }
    use u{*idem_};
    u.bind(1, room);
    u.bind(2, idem_since_ms);
    return read_msgs(u, room, out.idem, err, "read idempotency keys", /*reactions=*/false);
  }

  // Columns: see prepare_all's `cols`. Then, unless `reactions` is false
  // (the idempotency window only needs keys), the reactions of what was read.
  bool read_msgs(use& u, const std::string& room, std::vector<stored_msg>& out, std::string& err,
                 const char* what, bool reactions = true) {
    int rc;
    while ((rc = u.step()) == SQLITE_ROW) {
      stored_msg m;
      m.room = room;
      m.seq = static_cast<uint64_t>(u.i64(0));
      m.ts = u.i64(1);
      m.from = u.text(2);
      m.name = u.text(3);
      m.text = u.text(4);
      m.data = u.text(5);
      m.idem_key = u.text(6);
      auto kind = u.i64(7);
      m.kind = kind >= 0 && kind <= 4 ? static_cast<event_kind>(kind) : event_kind::message;
      m.target = static_cast<uint64_t>(u.i64(8));
      m.reply_to = static_cast<uint64_t>(u.i64(9));
      m.mentions = split_lines(u.text(10));
      m.emoji = u.text(11);
      m.on = u.i64(12) != 0;
      m.edited_ts = u.i64(13);
      m.deleted = u.i64(14) != 0;
      out.push_back(std::move(m));
    }
    if (rc != SQLITE_DONE) {
      out.clear();
      err = db_error(db_, what);
      return false;
    }
    return !reactions || read_reactions(room, out, err);
  }

  bool step_done(stmt& s, const char* what, std::string& err) {
    use u{s};
    if (u.step() == SQLITE_DONE) return true;
    err = db_error(db_, what);
    return false;
  }

  void rollback() {
    // An I/O error or SQLITE_FULL may already have rolled the transaction back.
    if (db_ && !sqlite3_get_autocommit(db_))
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  // A storage failure: undo everything, remember it for healthy().
  bool abort_write(const std::string& why, std::string& err) {
    rollback();
    return write_failed(why, err);
  }
  bool abort_write(std::string& err) { return abort_write(std::string{err}, err); }

  bool write_failed(const std::string& why, std::string& err) {
    write_error_ = why;
    if (&err != &why) err = why;
    return false;
  }

  bool query_text(const char* sql, std::string& out, std::string& err) {
    stmt s;
    if (!s.prepare(db_, sql, err)) return false;
    use u{s};
    int rc = u.step();
    if (rc == SQLITE_ROW) {
      out = u.text(0);
      return true;
    }
    err = rc == SQLITE_DONE ? std::string{sql} + ": no result" : db_error(db_, sql);
    return false;
  }

  bool query_int(const char* sql, int64_t& out, std::string& err) {
    std::string s;
    if (!query_text(sql, s, err)) return false;
    return parse_int(s, out, err);
  }

  static bool parse_int(const std::string& s, int64_t& out, std::string& err) {
    try {
      size_t pos = 0;
      out = std::stoll(s, &pos);
      if (pos == s.size()) return true;
    } catch (const std::exception&) {
    }
    err = "not an integer: '" + s + "'";
    return false;
  }

  // 0 for an empty file; fails for a database that is not a chat store.
  bool read_schema_version(int64_t& version, std::string& err) {
    int64_t has_meta = 0;
    if (!query_int("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='meta'",
                   has_meta, err))
      return false;
    if (has_meta == 0) {
      int64_t objects = 0;
      if (!query_int("SELECT count(*) FROM sqlite_master", objects, err)) return false;
      if (objects > 0) {
        err = "database has tables but no meta table: not a chat store";
        return false;
      }
      version = 0;
      return true;
    }
    std::string text;
    if (!query_text("SELECT value FROM meta WHERE key='schema_version'", text, err)) {
      err = "no schema_version in meta: " + err;
      return false;
    }
    if (!parse_int(text, version, err) || version < 1) {
      err = "bad schema_version in meta: '" + text + "'";
      return false;
    }
    return true;
  }

  bool migrate(std::string& err) {
    int64_t version = 0;
    if (!read_schema_version(version, err)) return false;
    if (version > latest_schema) {
      err = "schema_version " + std::to_string(version) + " is newer than this build supports (" +
            std::to_string(latest_schema) + "); refusing to open";
      return false;
    }
    for (auto& m : migrations) {
      if (m.version <= version) continue;
      if (!exec("BEGIN IMMEDIATE", err)) return false;
      // Re-read under the write lock: another process may have migrated.
      int64_t now_version = 0;
      if (!read_schema_version(now_version, err)) return abort_migration(err);
      if (now_version >= m.version) {
        if (!exec("COMMIT", err)) return abort_migration(err);
        version = now_version;
        continue;
      }
      std::string set = "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', '" +
                        std::to_string(m.version) + "')";
      if (!exec(m.sql, err) || !exec(set, err) || !exec("COMMIT", err)) {
        err = "migration to schema_version " + std::to_string(m.version) + " failed: " + err;
        return abort_migration(err);
      }
      version = m.version;
    }
    return true;
  }

  bool abort_migration(std::string&) {
    rollback();
    return false;
  }

  bool prepare_all(std::string& err) {
    auto add = [&](std::unique_ptr<stmt>& s, const char* sql) {
      s = std::make_unique<stmt>();
      if (!s->prepare(db_, sql, err)) return false;
      stmts_.push_back(&s);
      return true;
    };
    constexpr const char* cols =
        "seq, ts, from_user, name, text, data, idem_key, kind, target, reply_to, mentions, emoji,"
        " on_flag, edited_ts, deleted";
    auto sel = [&](const char* rest) {
      return std::string{"SELECT "} + cols + " FROM messages WHERE " + rest;
    };
    auto recent = sel("room=?1 ORDER BY seq DESC LIMIT ?2");
    // Forced: without ANALYZE statistics the planner walks the whole room by
    // primary key (to skip the sort), reading every message of a long history.
    auto idem = std::string{"SELECT "} + cols +
                " FROM messages INDEXED BY messages_idem"
                " WHERE room=?1 AND idem_key != '' AND ts >= ?2 ORDER BY seq";
    auto desc = sel("room=?1 AND seq>?2 AND seq<?3 ORDER BY seq DESC LIMIT ?4");
    auto asc = sel("room=?1 AND seq>?2 AND seq<?3 ORDER BY seq LIMIT ?4");
    auto one = sel("room=?1 AND seq=?2");
    std::string mcols;
    for (auto c : {"seq", "ts", "from_user", "name", "text", "data", "idem_key", "kind", "target",
                   "reply_to", "mentions", "emoji", "on_flag", "edited_ts", "deleted"})
      mcols += std::string{mcols.empty() ? "" : ", "} + "m." + c;
    auto search = "SELECT " + mcols +
                  " FROM search_index s JOIN search_rows r ON r.id = s.rowid"
                  " JOIN messages m ON m.room = r.room AND m.seq = r.seq"
                  " WHERE search_index MATCH ?1 AND r.room = ?2 AND r.seq < ?3 AND m.deleted = 0"
                  " ORDER BY r.seq DESC LIMIT ?4";
    return add(begin_, "BEGIN IMMEDIATE") && add(commit_, "COMMIT") &&
           add(get_room_,
               "SELECT epoch, last_seq, first_seq, term, owner, topic, private, read_only, slow_mode"
               " FROM rooms WHERE name=?1") &&
           add(restrictions_of_,
               "SELECT user_id, ban_until, mute_until FROM restrictions WHERE room=?1") &&
           add(set_restriction_,
               "INSERT INTO restrictions(room, user_id, ban_until, mute_until) VALUES(?1, ?2, ?3, ?4)"
               " ON CONFLICT(room, user_id) DO UPDATE SET ban_until=excluded.ban_until,"
               " mute_until=excluded.mute_until") &&
           add(del_restriction_, "DELETE FROM restrictions WHERE room=?1 AND user_id=?2") &&
           add(set_settings_,
               "UPDATE rooms SET topic=?2, private=?3, read_only=?4, slow_mode=?5 WHERE name=?1") &&
           add(claim_, "UPDATE rooms SET term=term+1, owner=?2 WHERE name=?1") &&
           add(insert_room_,
               "INSERT OR IGNORE INTO rooms(name, epoch, last_seq, first_seq, created_ms)"
               " VALUES(?1, ?2, 0, 1, ?3)") &&
           add(recent_, recent.c_str()) && add(idem_, idem.c_str()) &&
           add(range_desc_, desc.c_str()) && add(range_asc_, asc.c_str()) &&
           add(insert_msg_,
               "INSERT INTO messages(room, seq, ts, from_user, name, text, data, idem_key, kind,"
               " target, reply_to, mentions, emoji, on_flag)"
               " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)") &&
           add(get_event_, one.c_str()) &&
           add(apply_edit_,
               "UPDATE messages SET text=?3, data=?4, edited_ts=?5"
               " WHERE room=?1 AND seq=?2 AND kind=0 AND deleted=0") &&
           add(apply_delete_,
               "UPDATE messages SET text='', data='', deleted=1"
               " WHERE room=?1 AND (seq=?2 OR (target=?2 AND kind=1))") &&
           add(drop_reactions_, "DELETE FROM reactions WHERE room=?1 AND seq=?2") &&
           add(add_reaction_,
               "INSERT OR IGNORE INTO reactions(room, seq, emoji, user_id, pos)"
               " VALUES(?1, ?2, ?3, ?4, ?5)") &&
           add(remove_reaction_,
               "DELETE FROM reactions WHERE room=?1 AND seq=?2 AND emoji=?3 AND user_id=?4") &&
           add(reactions_in_,
               "SELECT seq, emoji, user_id FROM reactions WHERE room=?1 AND seq>=?2 AND seq<=?3"
               " ORDER BY seq, pos") &&
           add(trim_reactions_, "DELETE FROM reactions WHERE room=?1 AND seq<?2") &&
           add(search_row_add_, "INSERT INTO search_rows(room, seq) VALUES(?1, ?2)") &&
           add(search_add_, "INSERT INTO search_index(rowid, body, room_key) VALUES(?1, ?2, ?3)") &&
           add(search_edit_,
               "UPDATE search_index SET body=?3 WHERE rowid="
               " (SELECT id FROM search_rows WHERE room=?1 AND seq=?2)") &&
           add(search_del_,
               "DELETE FROM search_index WHERE rowid="
               " (SELECT id FROM search_rows WHERE room=?1 AND seq=?2)") &&
           add(search_row_del_, "DELETE FROM search_rows WHERE room=?1 AND seq=?2") &&
           add(search_trim_,
               "DELETE FROM search_index WHERE rowid IN"
               " (SELECT id FROM search_rows WHERE room=?1 AND seq<?2)") &&
           add(search_row_trim_, "DELETE FROM search_rows WHERE room=?1 AND seq<?2") &&
           add(search_, search.c_str()) &&
           add(set_member_,
               "INSERT INTO members(room, user_id, role, read_seq) VALUES(?1, ?2, ?3, ?4)"
               " ON CONFLICT(room, user_id) DO UPDATE SET role=excluded.role,"
               " read_seq=excluded.read_seq") &&
           add(del_member_, "DELETE FROM members WHERE room=?1 AND user_id=?2") &&
           add(members_of_, "SELECT user_id, role, read_seq FROM members WHERE room=?1") &&
           add(rooms_of_,
               "SELECT m.room, m.role, m.read_seq, r.last_seq, r.topic, r.private FROM members m"
               " JOIN rooms r ON r.name = m.room WHERE m.user_id=?1 ORDER BY m.room") &&
           add(unread_,
               "SELECT count(*) FROM (SELECT 1 FROM messages WHERE room=?1 AND seq>?2 AND seq<=?3"
               " AND kind=0 AND deleted=0 AND from_user!=?4 LIMIT ?5)") &&
           add(set_last_seq_, "UPDATE rooms SET last_seq=?2 WHERE name=?1") &&
           add(set_first_seq_, "UPDATE rooms SET first_seq=?2 WHERE name=?1") &&
           add(all_rooms_, "SELECT name, last_seq, first_seq FROM rooms") &&
           add(first_young_,
               "SELECT seq FROM messages WHERE room=?1 AND seq>=?2 AND ts>=?3 ORDER BY seq"
               " LIMIT 1") &&
           add(delete_before_, "DELETE FROM messages WHERE room=?1 AND seq<?2") &&
           add(schema_version_, "SELECT value FROM meta WHERE key='schema_version'") &&
           add(health_probe_, "INSERT OR REPLACE INTO meta(key, value) VALUES('health_probe', ?1)");
  }

  sqlite3* db_ = nullptr;
  std::string write_error_;  // last failed write, "" once a write succeeds
  std::vector<std::unique_ptr<stmt>*> stmts_;
  std::unique_ptr<stmt> begin_, commit_, get_room_, claim_, insert_room_, recent_, idem_,
      range_desc_, range_asc_, insert_msg_, set_last_seq_, set_first_seq_, all_rooms_, first_young_,
      delete_before_, schema_version_, health_probe_, get_event_, apply_edit_, apply_delete_,
      drop_reactions_, add_reaction_, remove_reaction_, reactions_in_, trim_reactions_,
      set_member_, del_member_, members_of_, rooms_of_, unread_, search_row_add_, search_add_,
      search_edit_, search_del_, search_row_del_, search_trim_, search_row_trim_, search_,
      set_settings_, restrictions_of_, set_restriction_, del_restriction_;
};

}  // namespace

std::unique_ptr<store_backend> make_sqlite_backend(const std::string& path, std::string& err) {
  try {
    auto b = std::make_unique<sqlite_backend>();
    if (!b->open(path, err)) return nullptr;
    return b;
  } catch (const std::exception& e) {
    err = "cannot open '" + path + "': " + e.what();
    return nullptr;
  }
}

namespace detail {

// Not in the header on purpose: lets tests and the benchmark run SQL (pragmas
// such as busy_timeout, max_page_count, query_only, synchronous) on the
// backend's own connection. Declare it where needed. False for other backends.
bool sqlite_exec(store_backend& b, const std::string& sql, std::string& err) {
  auto* s = dynamic_cast<sqlite_backend*>(&b);
  if (!s) {
    err = "not a sqlite backend";
    return false;
  }
  return s->exec(sql, err);
}

}  // namespace detail

}  // namespace chat
