#include "actors/idem_cache.hpp"

#include <iterator>

namespace chat {

std::string idem_key(const std::string& user, const std::string& client_key) {
  if (client_key.empty()) return {};
  std::string key;
  key.reserve(user.size() + 1 + client_key.size());
  key += user;
  key += '\x1f';  // user ids are refused with control characters (auth.hpp)
  key += client_key;
  return key;
}

idem_committed::idem_committed(idem_limits limits) : limits_(limits) {}

void idem_committed::remember(const std::string& key, uint64_t seq, int64_t ts) {
  auto [it, fresh] = by_key_.try_emplace(key);
  if (fresh)
    bytes_ += key.size() + entry_overhead;
  else
    order_.erase(it->second.pos);  // a key remembered again moves to its new ts
  it->second.hit = {seq, ts};
  // A room's ts never goes backwards, so the place is almost always the end:
  // walk back past newer entries only (O(1) in that case).
  auto pos = order_.end();
  while (pos != order_.begin() && std::prev(pos)->ts > ts) --pos;
  it->second.pos = order_.insert(pos, order_node{ts, &it->first});
  expire(ts);
  while (!order_.empty() &&
         (by_key_.size() > limits_.max_keys || bytes_ > limits_.max_bytes)) {
    drop_oldest();
    ++evicted_;
  }
}

std::optional<idem_hit> idem_committed::find(const std::string& key, int64_t now_ms) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end() || now_ms - it->second.hit.ts > limits_.window_ms) return std::nullopt;
  return it->second.hit;
}

void idem_committed::expire(int64_t now_ms) {
  int64_t cutoff = now_ms - limits_.window_ms;
  while (!order_.empty() && order_.front().ts < cutoff) drop_oldest();
}

void idem_committed::drop_oldest() {
  auto it = by_key_.find(*order_.front().key);
  bytes_ -= it->first.size() + entry_overhead;
  order_.pop_front();
  by_key_.erase(it);
}

}  // namespace chat
