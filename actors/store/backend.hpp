#pragma once
// Storage behind the store actor: plain synchronous classes, no actors, no
// threads, so they test against a real SQLite file (or a real PostgreSQL)
// without a scheduler. The store actor (store.hpp) owns one backend and
// batches calls into it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "messages/types.hpp"

namespace chat {

// What became of one batch of an append call.
enum class append_result : uint8_t {
  committed,  // stored
  fenced,     // refused: the room was claimed since (term moved on); nothing stored
};

struct retention_policy {
  uint64_t max_messages = 0;  // per room, 0 = unlimited
  int64_t max_age_ms = 0;     // 0 = unlimited
};

class store_backend {
 public:
  virtual ~store_backend() = default;

  // The room's epoch, last seq, oldest stored seq, its newest `recent_limit`
  // messages (oldest first), every message with an idempotency key whose
  // ts >= idem_since_ms, and its current term and owner. Creates the room
  // (fresh random epoch, seq 0, term 0) if unknown.
  // Returns false and sets `err` on failure.
  virtual bool load_room(const std::string& room, uint32_t recent_limit, int64_t idem_since_ms,
                         room_snapshot& out, std::string& err) = 0;

  // Fencing: in ONE transaction, creates the room if unknown, raises its term
  // by one, makes `owner` its owner and reads its snapshot (as load_room), so
  // that `out.term` is the new term and `out` holds everything committed under
  // earlier terms. Appends fenced with an older term fail from then on.
  virtual bool claim_room(const std::string& room, const std::string& owner, uint32_t recent_limit,
                          int64_t idem_since_ms, room_snapshot& out, std::string& err) = 0;

  // Stores the batches in ONE transaction (group commit) and advances each
  // room's last seq. A batch with term != 0 whose term (or owner) is no longer
  // the room's is refused alone (results[i] = fenced, none of it stored) while
  // the others commit; a room in several batches chains them. Any other
  // problem (seq gap, unknown room, database error) refuses the whole call:
  // false + `err`, nothing stored. `results` gets one entry per batch.
  virtual bool append(const std::vector<append_batch>& batches, std::vector<append_result>& results,
                      std::string& err) = 0;

  // For unfenced callers (single node, tests, benchmarks): true only if every
  // batch committed. All or nothing unless a batch is fenced.
  bool append(const std::vector<append_batch>& batches, std::string& err) {
    std::vector<append_result> results;
    if (!append(batches, results, err)) return false;
    for (size_t i = 0; i < results.size(); ++i)
      if (results[i] == append_result::fenced) {
        err = "append to room '" + batches[i].room + "' fenced: term " +
              std::to_string(batches[i].term) + " is no longer current";
        return false;
      }
    return true;
  }

  // Events (protocol v2): a batch holds any event kinds. Storing a change
  // event also applies it, in the same transaction, to the stored state of
  // its target message, exactly as apply_change (messages/model.hpp) does:
  //   edited:   the target's text and data become the edit's, edited_ts its ts;
  //   deleted:  the target's text and data are erased (not hidden: gone from
  //             the file), its reactions dropped, and every `edited` event of
  //             it loses its text and data too (deleted = true);
  //   reaction: `from` is added to (on) or removed from the target's set for
  //             `emoji`; an emoji with no user left disappears.
  // The room checks the rules (author, not deleted, noop) before it assigns
  // a seq; the store applies what it is given to a target of kind message.
  // Every read (load_room's recent and idem, range, get_event) returns rows
  // with their kind, target, reply_to, mentions, emoji, on, and a message's
  // current state (edited_ts, deleted, reactions with every user, in the
  // order each emoji first appeared and each user reacted).

  // The event `seq` of `room` with its current state; found = false when the
  // room has no such seq (never stored, or trimmed).
  virtual bool get_event(const std::string& room, uint64_t seq, stored_msg& out, bool& found,
                         std::string& err) = 0;

  // Memberships (protocol v2): load_room and claim_room return every
  // membership of the room; append applies each batch's member_set (upsert)
  // and member_del in the same transaction (a batch may hold only those).

  // Every room `user` is a member of, by name, with its last seq and the
  // user's unread count (as count_unread from read_seq to last_seq).
  virtual bool user_rooms(const std::string& user, std::vector<user_room>& out,
                          std::string& err) = 0;

  // `message` events of others than `user` with after < seq <= upto that
  // are not deleted, at most max_unread.
  virtual bool count_unread(const std::string& room, const std::string& user, uint64_t after,
                            uint64_t upto, uint64_t& out, std::string& err) = 0;

  // Search (protocol v2): the messages of `room` with seq < before (0: no
  // bound) whose current text holds every word of `query`, case-insensitive,
  // newest first, at most `limit`. Deleted messages and text an edit
  // replaced never match. SQLite: FTS5, unicode61 with remove_diacritics 2
  // (indexed after the commit: see index_search);
  // PostgreSQL: a tsvector of the 'simple' configuration; memory: words
  // compared after lower-casing ASCII.
  virtual bool search(const std::string& room, const std::string& query, uint64_t before,
                      uint32_t limit, std::vector<stored_msg>& out, std::string& err) = 0;

  // Messages of `q.room` with q.after < seq < q.before (before 0 = no bound),
  // at most q.limit, oldest first; q.newest picks the newest ones in the range.
  virtual bool range(const range_query& q, std::vector<stored_msg>& out, std::string& err) = 0;

  // Whether the room has a row (a first stored event or a join made it). Reads
  // of an unknown room ask this instead of load_room, which would create it.
  // Cheap: one primary-key lookup. Every backend (SQLite, memory, and the
  // PostgreSQL one on its own branch) must answer the same for the same history.
  virtual bool room_exists(const std::string& room, bool& out, std::string& err) = 0;

  // Of the rooms `owner` claimed (room, term), those whose stored claim is no
  // longer (owner, term): another node claimed them since. One cheap read for
  // all of them (a node checks its rooms every second).
  virtual bool lost_claims(const std::string& owner,
                           const std::vector<std::pair<std::string, uint64_t>>& claims,
                           std::vector<std::string>& lost, std::string& err) = 0;

  // Oldest stored seq of a room (last_seq + 1 when it holds none).
  virtual bool first_seq(const std::string& room, uint64_t& out, std::string& err) = 0;

  // Applies the retention policy to every room; returns how many messages were removed.
  virtual bool trim(const retention_policy& p, int64_t now_ms, uint64_t& removed,
                    std::string& err) = 0;

  // Server-wide bans: stores `ban` (replacing the user's) or, ban.lift,
  // deletes the user's; user_bans lists what is stored (expired ones too:
  // the caller drops them).
  virtual bool store_user_ban(const user_ban& ban, std::string& err) = 0;
  virtual bool user_bans(std::vector<user_ban>& out, std::string& err) = 0;

  // True when the store can take writes ("ok"), else a reason in `err`.
  virtual bool healthy(std::string& err) = 0;

  // How many calls may run at once from different threads (1: one at a time).
  virtual size_t concurrency() const { return 1; }

  // Search indexing off the acking commit (SQLite): appends leave new
  // events unindexed; the store's indexer actor calls index_search on its own
  // thread until no room has a backlog. `search` indexes its room's backlog
  // first, so a backlog never hides a message (nor shows a deleted one).
  // Indexes up to about `budget` messages; `more` says whether a backlog is left.
  virtual bool index_search(size_t budget, bool& more, std::string& err) {
    (void)budget;
    (void)err;
    more = false;
    return true;
  }
  // About how many messages wait to be indexed (cheap: no database access).
  virtual size_t search_backlog() const { return 0; }
  // Whether index_search should run (on a thread of its own: it uses a
  // connection of its own, and may run beside every other call).
  virtual bool has_search_indexer() const { return false; }
};

// In-memory history, lost on restart: every start makes fresh epochs.
// `max_per_room` bounds memory (0 = unlimited).
std::unique_ptr<store_backend> make_memory_backend(uint64_t max_per_room);

// SQLite file in WAL mode; creates the directory if missing; migrates the
// schema. Returns nullptr and sets `err` when the file cannot be opened or used.
std::unique_ptr<store_backend> make_sqlite_backend(const std::string& path, std::string& err);

// PostgreSQL through libpq. `url` is a libpq connection string, URI
// (postgresql://user@host:5432/db?sslmode=require) or key=value form.
// Connects, migrates the schema (or refuses one newer than this build) and
// keeps up to `pool_size` connections (opened on demand); every call leases one
// for its duration, so the backend may be used from several threads at once.
// Returns nullptr and sets `err` when the database is unreachable or unusable.
std::unique_ptr<store_backend> make_postgres_backend(const std::string& url, size_t pool_size,
                                                     std::string& err);

// A random epoch string (16 hex characters).
std::string new_epoch();

}  // namespace chat
