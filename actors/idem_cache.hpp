#pragma once
// Idempotency keys of one room: which (user, client key) already has a stored
// message (seq, ts), and which is still being stored with duplicates waiting
// for the same ack. Pure: no CAF, no clock (time is passed in, in ms).
//
// How the room uses it (Waiter = what it needs to reply, e.g. {conn_ref, req_id}):
//   handle_send:   auto key = idem_key(req.who.user, req.idem_key);
//                  if (!key.empty()) {
//                    if (auto hit = st.idem.find(key, now_ms())) { ack(req, *hit); return; }
//                    if (st.idem.wait(key, {req.conn, req.req_id})) return;  // first still storing
//                    st.idem.begin(key);
//                  }
//   on_committed:  for (auto& w : st.idem.resolve(key, m.seq, m.ts)) ack(w, m.seq, m.ts);
//   on_failed:     for (auto& w : st.idem.fail(key)) error(w, "unavailable");
//   dispatch:      if (auto hit = st.idem.find(key, now_ms())) {   // stored during a resync
//                    ack(p.req, *hit);
//                    for (auto& w : st.idem.resolve(key, hit->seq, hit->ts)) ack(w, *hit);
//                    continue;
//                  }
//   resync, apply_snapshot: st.idem.remember(idem_key(m.from, m.idem_key), m.seq, m.ts);
//
// Bounds: committed keys expire `window_ms` after their ts (oldest first, checked
// on every remember and by expire(now)); beyond that at most `max_keys` of them
// and `max_bytes` (key bytes + entry_overhead each) are kept, the oldest
// committed going first. A pending key is never evicted: pending keys are as
// many as the room's sends in its queue and in flight, bounded there.
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace chat {

// The one place a room's idempotency key is built: "" when the client gave none
// (a send without a key is always a new message). Keys of different users
// never collide: the separator cannot occur in a user id.
std::string idem_key(const std::string& user, const std::string& client_key);

struct idem_limits {
  int64_t window_ms = 10 * 60 * 1000;
  size_t max_keys = 10000;
  size_t max_bytes = 1 << 20;  // 1 MiB: ~5,000 keys of the longest kind
};

struct idem_hit {
  uint64_t seq = 0;
  int64_t ts = 0;
};

// The committed keys alone, in ts order (the non-template half of idem_cache).
class idem_committed {
 public:
  // Rough heap cost of one entry besides its key (map node, list node, hash).
  static constexpr size_t entry_overhead = 96;

  explicit idem_committed(idem_limits limits = {});

  // Remembers (or moves) key at (seq, ts), then drops what is past the window
  // measured from ts, then the oldest while over max_keys or max_bytes.
  void remember(const std::string& key, uint64_t seq, int64_t ts);
  // The key's first ack, if it is still within the window at `now_ms`.
  std::optional<idem_hit> find(const std::string& key, int64_t now_ms) const;
  // Drops the keys whose ts is older than now_ms - window_ms.
  void expire(int64_t now_ms);

  size_t size() const { return by_key_.size(); }
  size_t bytes() const { return bytes_; }
  const idem_limits& limits() const { return limits_; }
  uint64_t evicted() const { return evicted_; }  // dropped by a cap, not by the window

 private:
  struct order_node {
    int64_t ts;
    const std::string* key;  // the map's key: node-stable across rehashing
  };
  struct entry {
    idem_hit hit;
    std::list<order_node>::iterator pos;
  };
  void drop_oldest();

  idem_limits limits_;
  std::unordered_map<std::string, entry> by_key_;
  std::list<order_node> order_;  // ascending ts; equal ts in insertion order
  size_t bytes_ = 0;
  uint64_t evicted_ = 0;
};

template <class Waiter>
class idem_cache {
 public:
  explicit idem_cache(idem_limits limits = {}) : committed_(limits) {}

  std::optional<idem_hit> find(const std::string& key, int64_t now_ms) const {
    return committed_.find(key, now_ms);
  }
  void remember(const std::string& key, uint64_t seq, int64_t ts) {
    committed_.remember(key, seq, ts);
  }
  void expire(int64_t now_ms) { committed_.expire(now_ms); }

  bool pending(const std::string& key) const { return pending_.count(key) > 0; }
  // The key's first send goes to the store: duplicates from now on wait.
  void begin(const std::string& key) { pending_.try_emplace(key); }
  // A duplicate of a send still being stored: queues w and returns true;
  // false (w untouched) when the key is not pending.
  bool wait(const std::string& key, Waiter&& w) {
    auto it = pending_.find(key);
    if (it == pending_.end()) return false;
    it->second.push_back(std::move(w));
    return true;
  }
  bool wait(const std::string& key, const Waiter& w) { return wait(key, Waiter{w}); }

  // The send with this key is stored at (seq, ts): remembers it and hands back
  // the duplicates to ack with the same seq and ts. The key is no longer pending.
  std::vector<Waiter> resolve(const std::string& key, uint64_t seq, int64_t ts) {
    committed_.remember(key, seq, ts);
    return take(key);
  }
  // The send with this key was not stored: hands back its duplicates to
  // answer with an error; a retry starts afresh.
  std::vector<Waiter> fail(const std::string& key) { return take(key); }

  size_t size() const { return committed_.size(); }
  size_t bytes() const { return committed_.bytes(); }
  uint64_t evicted() const { return committed_.evicted(); }
  size_t pending_count() const { return pending_.size(); }
  size_t waiter_count() const {
    size_t n = 0;
    for (auto& [key, ws] : pending_) n += ws.size();
    return n;
  }

 private:
  std::vector<Waiter> take(const std::string& key) {
    auto it = pending_.find(key);
    if (it == pending_.end()) return {};
    auto out = std::move(it->second);
    pending_.erase(it);
    return out;
  }

  idem_committed committed_;
  std::unordered_map<std::string, std::vector<Waiter>> pending_;
};

}  // namespace chat
