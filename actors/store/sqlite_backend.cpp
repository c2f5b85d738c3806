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
#include <map>
#include <mutex>
#include <tuple>
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
    // The search index moves to a file of its own (search_file below),
    // rebuilt there in the background from the events.
    {8, "DROP TABLE search_index; DROP TABLE search_rows;"},
    // Server-wide bans (until: ms since the epoch, INT64_MAX = until lifted).
    // And the moderation log (GET /api/rooms/{room}/moderation) without a scan.
    {9,
     "CREATE TABLE user_bans(user_id TEXT PRIMARY KEY, until_ms INTEGER NOT NULL,"
     " reason TEXT NOT NULL DEFAULT '') WITHOUT ROWID;"
     "CREATE INDEX messages_moderation ON messages(room, seq) WHERE kind = 4;"},
};

constexpr int latest_schema = 9;

// The words of a query as an FTS5 expression: each one a quoted string (so
// that no word is read as an operator), all of them required.
std::string fts_query(const std::string& query) {
  std::string out;
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
  return out;
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

// --- the search index, in a file of its own ---------------------------------------
//
// Version 5 of the schema indexed each message in the commit that acked it:
// FTS5 costs ~35 us a message on these machines, which halved the store's
// throughput. Now the index lives in `<db>.search`, written by the store's
// indexer on a thread and a connection of its own (its own file, so its
// write lock never holds an acking commit), from the events the main file
// holds: a message is indexed with its current text, an edit re-indexes its
// target, a delete takes it out, a trim cuts the room's range. `indexed`
// says how far each room is indexed, in the same transactions as the index,
// so a crash (or a deleted .search file) leaves a backlog to index again,
// never a hole. A search indexes its own room's backlog first, so a backlog
// never hides a message, nor shows a deleted one.
//
// Rowid of a message in the index: the room's rowid in the main file in the
// high bits, the seq in the low 36 (a room past the 134 millionth created,
// or a seq past 68 billion, is not searchable).
constexpr int search_seq_bits = 36;
constexpr uint64_t search_seq_end = uint64_t{1} << search_seq_bits;
int64_t search_base(int64_t room_id) {
  if (room_id <= 0 || room_id >= (int64_t{1} << (62 - search_seq_bits))) return 0;
  return room_id << search_seq_bits;
}

class search_file {
 public:
  search_file() = default;
  search_file(const search_file&) = delete;
  search_file& operator=(const search_file&) = delete;
  ~search_file() {
    stmts_.clear();
    for (auto* s : {&lock_, &main_room_, &get_indexed_, &put_indexed_, &events_, &current_,
                    &add_, &edit_, &del_, &cut_, &find_, &begin_, &commit_, &behind_})
      s->reset();
    if (db_) sqlite3_close(db_);
  }

  // Opens (or creates) `<main_path>.search` and attaches the main file to
  // read its rooms and events; every room behind is noted.
  bool open(const std::string& main_path, std::string& err) {
    auto path = main_path + ".search";
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
      err = db_ ? db_error(db_, "cannot open '" + path + "'") : "cannot open '" + path + "'";
      return false;
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, default_busy_timeout_ms);
    // NORMAL: a commit lost to a power cut takes its `indexed` rows with it.
    // secure_delete: the index's copy of a deleted message is overwritten too.
    for (auto sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                     "PRAGMA secure_delete=ON",
                     "CREATE TABLE IF NOT EXISTS search_meta(key TEXT PRIMARY KEY, value TEXT)",
                     "CREATE VIRTUAL TABLE IF NOT EXISTS search_index USING fts5(body,"
                     " columnsize=0, tokenize = 'unicode61 remove_diacritics 2')",
                     "CREATE TABLE IF NOT EXISTS indexed(room TEXT PRIMARY KEY, epoch TEXT NOT NULL,"
                     " room_id INTEGER NOT NULL, seq INTEGER NOT NULL, first_seq INTEGER NOT NULL)"
                     " WITHOUT ROWID"})
      if (!exec(sql, err)) {
        err = "'" + path + "': " + err;
        return false;
      }
    {
      stmt attach;
      if (!attach.prepare(db_, "ATTACH DATABASE ?1 AS m", err)) return false;
      use u{attach};
      u.bind(1, main_path);
      if (u.step() != SQLITE_DONE) {
        err = db_error(db_, "attach '" + main_path + "' to its search index");
        return false;
      }
    }
    auto add = [&](std::unique_ptr<stmt>& s, const char* sql) {
      s = std::make_unique<stmt>();
      if (!s->prepare(db_, sql, err)) return false;
      stmts_.push_back(&s);
      return true;
    };
    bool ok =
        add(begin_, "BEGIN") && add(commit_, "COMMIT") &&
        // The first write of a transaction: takes this file's write lock (and
        // only this file's: BEGIN IMMEDIATE would lock the main file too).
        add(lock_, "INSERT OR REPLACE INTO search_meta(key, value) VALUES('writer', '')") &&
        add(main_room_,
            "SELECT rowid, epoch, last_seq, first_seq FROM m.rooms WHERE name=?1") &&
        add(get_indexed_, "SELECT epoch, room_id, seq, first_seq FROM indexed WHERE room=?1") &&
        add(put_indexed_,
            "INSERT OR REPLACE INTO indexed(room, epoch, room_id, seq, first_seq)"
            " VALUES(?1, ?2, ?3, ?4, ?5)") &&
        add(events_,
            "SELECT seq, kind, target, deleted, text FROM m.messages WHERE room=?1 AND seq>?2"
            " ORDER BY seq LIMIT ?3") &&
        add(current_,
            "SELECT text FROM m.messages WHERE room=?1 AND seq=?2 AND kind=0 AND deleted=0") &&
        add(add_, "INSERT INTO search_index(rowid, body) VALUES(?1, ?2)") &&
        add(edit_, "UPDATE search_index SET body=?2 WHERE rowid=?1") &&
        add(del_, "DELETE FROM search_index WHERE rowid=?1") &&
        add(cut_, "DELETE FROM search_index WHERE rowid>?1 AND rowid<?2") &&
        add(find_,
            "SELECT rowid FROM search_index WHERE search_index MATCH ?1 AND rowid>?2 AND rowid<?3"
            " ORDER BY rowid DESC LIMIT ?4") &&
        add(behind_,
            "SELECT r.name, r.last_seq - coalesce(i.seq, 0) FROM m.rooms r"
            " LEFT JOIN indexed i ON i.room = r.name"
            " WHERE i.room IS NULL OR i.seq < r.last_seq OR i.epoch != r.epoch"
            " OR i.room_id != r.rowid OR i.first_seq < r.first_seq");
    if (!ok) return false;
    use u{*behind_};
    int rc;
    while ((rc = u.step()) == SQLITE_ROW) note(u.text(0), static_cast<size_t>(std::max<int64_t>(u.i64(1), 1)));
    if (rc == SQLITE_DONE) return true;
    err = db_error(db_, "list the rooms to index");
    return false;
  }

  // A room got `n` events (any thread; never waits for a step).
  void note(const std::string& room, size_t n) {
    std::lock_guard<std::mutex> lock{notes_mtx_};
    auto& e = notes_[room];
    ++e.generation;
    backlog_ += n;
  }

  size_t backlog() const {
    std::lock_guard<std::mutex> lock{notes_mtx_};
    return notes_.empty() ? 0 : std::max<size_t>(backlog_, 1);
  }

  // One transaction: about `budget` events of the noted rooms (indexer thread).
  bool step(size_t budget, bool& more, std::string& err) {
    std::vector<std::pair<std::string, uint64_t>> rooms;  // with their generation
    {
      std::lock_guard<std::mutex> lock{notes_mtx_};
      for (auto& [room, e] : notes_) rooms.emplace_back(room, e.generation);
    }
    more = false;
    if (rooms.empty()) return true;
    std::lock_guard<std::mutex> lock{mtx_};
    if (!begin_write(err)) return false;
    // In rowid order, so that the index's rowids only grow within the
    // transaction (FTS5 flushes its pending terms when one does not).
    std::vector<std::tuple<int64_t, std::string, uint64_t>> order;
    for (auto& [room, gen] : rooms) {
      main_row r;
      if (!read_main(room, r, err)) return rollback(err);
      order.emplace_back(r.found ? r.id : 0, room, gen);
    }
    std::sort(order.begin(), order.end());
    size_t done = 0;
    std::vector<std::pair<std::string, uint64_t>> finished;
    for (auto& [id, room, gen] : order) {
      if (done >= budget) break;
      bool caught_up = false;
      if (!index_room(room, budget - done, done, caught_up, err)) return rollback(err);
      if (caught_up) finished.emplace_back(room, gen);
    }
    if (!done_write(err)) return false;
    std::lock_guard<std::mutex> nl{notes_mtx_};
    for (auto& [room, gen] : finished) {
      auto it = notes_.find(room);
      if (it != notes_.end() && it->second.generation == gen) notes_.erase(it);  // else noted again since
    }
    backlog_ = notes_.empty() ? 0 : backlog_ - std::min(backlog_, done);
    more = !notes_.empty();
    return true;
  }

  // Indexes the whole backlog of `room`, then finds the seqs of its messages
  // matching `expr` with seq < before (0: no bound), newest first.
  bool find(const std::string& room, const std::string& expr, uint64_t before, uint32_t limit,
            std::vector<uint64_t>& seqs, std::string& err) {
    seqs.clear();
    std::lock_guard<std::mutex> lock{mtx_};
    main_row r;
    if (!read_main(room, r, err)) return false;
    if (!r.found) return true;
    indexed_row i;
    if (!read_indexed(room, i, err)) return false;
    if (!i.found || i.seq < r.last_seq || i.epoch != r.epoch || i.room_id != r.id ||
        i.first_seq < r.first_seq) {
      if (!begin_write(err)) return false;
      bool caught_up = false;
      size_t done = 0;
      while (!caught_up)
        if (!index_room(room, 4096, done, caught_up, err)) return rollback(err);
      if (!done_write(err)) return false;
    }
    auto base = search_base(r.id);
    if (base == 0) return true;
    auto end = before == 0 || before > search_seq_end ? search_seq_end : before;
    use u{*find_};
    u.bind(1, expr);
    u.bind(2, base);
    u.bind(3, base + static_cast<int64_t>(end));
    u.bind(4, static_cast<int64_t>(limit));
    int rc;
    while ((rc = u.step()) == SQLITE_ROW) seqs.push_back(static_cast<uint64_t>(u.i64(0) - base));
    if (rc == SQLITE_DONE) return true;
    seqs.clear();
    err = db_error(db_, "search '" + room + "'");
    return false;
  }

 private:
  struct main_row {
    bool found = false;
    int64_t id = 0;
    std::string epoch;
    uint64_t last_seq = 0, first_seq = 1;
  };
  struct indexed_row {
    bool found = false;
    std::string epoch;
    int64_t room_id = 0;
    uint64_t seq = 0, first_seq = 1;
  };
  struct note_entry {
    uint64_t generation = 0;
  };

  bool exec(const char* sql, std::string& err) {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) == SQLITE_OK) return true;
    err = std::string{sql} + ": " + (msg ? msg : sqlite3_errmsg(db_));
    sqlite3_free(msg);
    return false;
  }
  bool begin_write(std::string& err) {
    {
      use u{*begin_};
      if (u.step() != SQLITE_DONE) {
        err = db_error(db_, "begin indexing");
        return false;
      }
    }
    use u{*lock_};
    if (u.step() == SQLITE_DONE) return true;
    err = db_error(db_, "lock the search index");
    return rollback(err);
  }
  bool done_write(std::string& err) {
    use u{*commit_};
    if (u.step() == SQLITE_DONE) return true;
    err = db_error(db_, "commit the search index");
    return rollback(err);
  }
  bool rollback(std::string&) {
    if (db_ && !sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return false;
  }
  bool read_main(const std::string& room, main_row& r, std::string& err) {
    use u{*main_room_};
    u.bind(1, room);
    int rc = u.step();
    if (rc == SQLITE_DONE) return true;
    if (rc != SQLITE_ROW) {
      err = db_error(db_, "read room '" + room + "' to index");
      return false;
    }
    r.found = true;
    r.id = u.i64(0);
    r.epoch = u.text(1);
    r.last_seq = static_cast<uint64_t>(u.i64(2));
    r.first_seq = static_cast<uint64_t>(u.i64(3));
    return true;
  }
  bool read_indexed(const std::string& room, indexed_row& i, std::string& err) {
    use u{*get_indexed_};
    u.bind(1, room);
    int rc = u.step();
    if (rc == SQLITE_DONE) return true;
    if (rc != SQLITE_ROW) {
      err = db_error(db_, "read how far '" + room + "' is indexed");
      return false;
    }
    i.found = true;
    i.epoch = u.text(0);
    i.room_id = u.i64(1);
    i.seq = static_cast<uint64_t>(u.i64(2));
    i.first_seq = static_cast<uint64_t>(u.i64(3));
    return true;
  }
  bool run_rowid(stmt& s, int64_t rowid, const std::string* text, std::string& err,
                 const char* what) {
    use u{s};
    u.bind(1, rowid);
    if (text) u.bind(2, *text);
    if (u.step() == SQLITE_DONE) return true;
    err = db_error(db_, what);
    return false;
  }

  // Inside a write transaction: the room's events after what is indexed, at
  // most `limit`; `caught_up` once the room is indexed to its last seq.
  bool index_room(const std::string& room, size_t limit, size_t& done, bool& caught_up,
                  std::string& err) {
    main_row r;
    if (!read_main(room, r, err)) return false;
    caught_up = true;
    if (!r.found) return true;  // gone (a replaced main file): nothing to index
    indexed_row i;
    if (!read_indexed(room, i, err)) return false;
    auto base = search_base(r.id);
    if (!i.found || i.epoch != r.epoch || i.room_id != r.id) {
      // New here, or another history under this name or rowid: start afresh.
      if (base != 0 && !cut(base, search_seq_end, err)) return false;
      i = indexed_row{true, r.epoch, r.id, 0, 1};
    }
    if (r.first_seq > i.first_seq) {  // retention trimmed a prefix
      if (base != 0 && !cut(base, std::min(r.first_seq, search_seq_end), err)) return false;
      i.first_seq = r.first_seq;
    }
    uint64_t upto = i.seq;
    size_t n = 0;
    if (i.seq < r.last_seq) {
      use u{*events_};
      u.bind(1, room);
      u.bind(2, clamp_i64(i.seq));
      u.bind(3, static_cast<int64_t>(limit));
      int rc;
      while ((rc = u.step()) == SQLITE_ROW) {
        ++n;
        upto = static_cast<uint64_t>(u.i64(0));
        auto kind = u.i64(1);
        auto target = static_cast<uint64_t>(u.i64(2));
        if (base == 0) continue;
        if (kind == static_cast<int64_t>(event_kind::message)) {
          if (u.i64(3) != 0 || upto >= search_seq_end) continue;  // deleted since
          auto text = u.text(4);
          if (!run_rowid(*add_, base + static_cast<int64_t>(upto), &text, err, "index a message"))
            return false;
        } else if ((kind == static_cast<int64_t>(event_kind::edited) ||
                    kind == static_cast<int64_t>(event_kind::deleted)) &&
                   target > 0 && target < search_seq_end) {
          auto rowid = base + static_cast<int64_t>(target);
          if (kind == static_cast<int64_t>(event_kind::deleted)) {
            if (!run_rowid(*del_, rowid, nullptr, err, "unindex a deleted message")) return false;
            continue;
          }
          // The target's text as it is now (a later edit's, if any: harmless).
          std::string text;
          bool live = false;
          {
            use c{*current_};
            c.bind(1, room);
            c.bind(2, clamp_i64(target));
            int crc = c.step();
            if (crc == SQLITE_ROW) {
              live = true;
              text = c.text(0);
            } else if (crc != SQLITE_DONE) {
              err = db_error(db_, "read an edited message");
              return false;
            }
          }
          if (live && !run_rowid(*edit_, rowid, &text, err, "re-index an edit")) return false;
        }
      }
      if (rc != SQLITE_DONE) {
        err = db_error(db_, "read the events of '" + room + "' to index");
        return false;
      }
      if (n < limit) upto = r.last_seq;  // read to the end (the rest was trimmed)
    }
    use u{*put_indexed_};
    u.bind(1, room);
    u.bind(2, r.epoch);
    u.bind(3, r.id);
    u.bind(4, clamp_i64(upto));
    u.bind(5, clamp_i64(i.first_seq));
    if (u.step() != SQLITE_DONE) {
      err = db_error(db_, "record how far '" + room + "' is indexed");
      return false;
    }
    done += std::max<size_t>(n, 1);
    caught_up = upto >= r.last_seq;
    return true;
  }

  // Removes the room's index rows with seq < end.
  bool cut(int64_t base, uint64_t end, std::string& err) {
    use u{*cut_};
    u.bind(1, base);
    u.bind(2, base + static_cast<int64_t>(end));
    if (u.step() == SQLITE_DONE) return true;
    err = db_error(db_, "unindex trimmed messages");
    return false;
  }

  sqlite3* db_ = nullptr;
  std::mutex mtx_;  // the connection: the indexer's steps and the store's searches
  std::vector<std::unique_ptr<stmt>*> stmts_;
  std::unique_ptr<stmt> lock_, main_room_, get_indexed_, put_indexed_, events_, current_, add_,
      edit_, del_, cut_, find_, begin_, commit_, behind_;
  mutable std::mutex notes_mtx_;
  std::map<std::string, note_entry> notes_;  // rooms with events not indexed yet
  size_t backlog_ = 0;                       // about how many events
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
    if (!prepare_all(err)) return false;
    if (in_memory) return true;
    search_ = std::make_unique<search_file>();
    return search_->open(path, err);
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
      use u{q.moderation_only ? (q.newest ? *range_mod_desc_ : *range_mod_asc_)
                              : (q.newest ? *range_desc_ : *range_asc_)};
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
      auto expr = fts_query(query);
      if (expr.empty() || limit == 0) return true;
      if (!search_) {
        err = "search needs a database file (this SQLite store is in memory)";
        return false;
      }
      std::vector<uint64_t> seqs;
      if (!search_->find(room, expr, before, limit, seqs, err)) return false;
      // Each message as it is now, from this file (reactions included).
      for (auto seq : seqs) {
        std::vector<stored_msg> got;
        use u{*get_event_};
        u.bind(1, room);
        u.bind(2, clamp_i64(seq));
        if (!read_msgs(u, room, got, err, "read a found message")) return false;
        if (!got.empty() && got[0].kind == event_kind::message && !got[0].deleted)
          out.push_back(std::move(got[0]));
      }
      return true;
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
      }
      if (search_) search_->note(b.room, b.msgs.size());  // indexed after the commit
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

  bool index_search(size_t budget, bool& more, std::string& err) override {
    more = false;
    try {
      return !search_ || search_->step(budget, more, err);
    } catch (const std::exception& e) {
      err = std::string{"sqlite search index: "} + e.what();
      return false;
    }
  }
  size_t search_backlog() const override { return search_ ? search_->backlog() : 0; }
  bool has_search_indexer() const override { return search_ != nullptr; }

  bool store_user_ban(const user_ban& ban, std::string& err) override {
    try {
      use u{ban.lift ? *del_user_ban_ : *set_user_ban_};
      u.bind(1, ban.user);
      if (!ban.lift) {
        u.bind(2, ban.until);
        u.bind(3, ban.reason);
      }
      if (u.step() == SQLITE_DONE) {
        write_error_.clear();
        return true;
      }
      return write_failed(db_error(db_, "store the server ban of '" + ban.user + "'"), err);
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

  bool user_bans(std::vector<user_ban>& out, std::string& err) override {
    out.clear();
    try {
      use u{*user_bans_};
      int rc;
      while ((rc = u.step()) == SQLITE_ROW) out.push_back({u.text(0), u.i64(1), u.text(2), false});
      if (rc == SQLITE_DONE) return true;
      err = db_error(db_, "read the server bans");
      return false;
    } catch (const std::exception& e) {
      err = std::string{"sqlite store: "} + e.what();
      return false;
    }
  }

 private:
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
    std::vector<std::string> trimmed;  // their index rows go too (search_file)
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
      trimmed.push_back(r.name);
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
    if (search_)
      for (auto& room : trimmed) search_->note(room, 1);
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
    // Forced, as idem: the partial index holds only the moderation events.
    auto mod = std::string{"SELECT "} + cols + " FROM messages INDEXED BY messages_moderation" +
               " WHERE room=?1 AND seq>?2 AND seq<?3 AND kind=4 ORDER BY seq";
    auto mod_desc = mod + " DESC LIMIT ?4";
    auto mod_asc = mod + " LIMIT ?4";
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
           add(range_mod_desc_, mod_desc.c_str()) && add(range_mod_asc_, mod_asc.c_str()) &&
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

           add(set_user_ban_,
               "INSERT INTO user_bans(user_id, until_ms, reason) VALUES(?1, ?2, ?3)"
               " ON CONFLICT(user_id) DO UPDATE SET until_ms=excluded.until_ms,"
               " reason=excluded.reason") &&
           add(del_user_ban_, "DELETE FROM user_bans WHERE user_id=?1") &&
           add(user_bans_, "SELECT user_id, until_ms, reason FROM user_bans ORDER BY user_id") &&
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
      range_desc_, range_asc_, range_mod_desc_, range_mod_asc_, insert_msg_, set_last_seq_, set_first_seq_, all_rooms_, first_young_,
      delete_before_, schema_version_, health_probe_, get_event_, apply_edit_, apply_delete_,
      drop_reactions_, add_reaction_, remove_reaction_, reactions_in_, trim_reactions_,
      set_member_, del_member_, members_of_, rooms_of_, unread_, set_settings_, restrictions_of_,
      set_restriction_, del_restriction_, set_user_ban_, del_user_ban_, user_bans_;
  // Null for an in-memory database. Destroyed first (declared last): it is
  // a connection of its own, and the indexer thread is gone by then.
  std::unique_ptr<search_file> search_;
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
