#include "actors/recent_window.hpp"

#include <algorithm>
#include <cassert>

namespace chat {

recent_window::recent_window(recent_limits limits) : limits_(limits) {}

size_t recent_window::cost(const stored_msg& m) {
  size_t n = m.text.size() + m.data.size() + m.name.size() + m.from.size() + m.idem_key.size() +
             m.emoji.size();
  for (auto& u : m.mentions) n += u.size() + 8;
  for (auto& r : m.reactions) {
    n += r.emoji.size() + 16;
    for (auto& u : r.users) n += u.size() + 8;
  }
  return n;
}

const stored_msg* recent_window::find(uint64_t seq) const {
  auto it = lower_bound(seq);
  return it != msgs_.end() && it->seq == seq ? &*it : nullptr;
}

bool recent_window::apply(const stored_msg& change) {
  auto it = msgs_.begin() + (lower_bound(change.target) - msgs_.cbegin());
  if (it == msgs_.end() || it->seq != change.target) return false;
  auto change_one = [&](stored_msg& m) {
    bytes_ -= cost(m);
    apply_change(m, change);
    bytes_ += cost(m);
  };
  change_one(*it);
  if (change.kind == event_kind::deleted)
    for (auto e = it; e != msgs_.end(); ++e)
      if (e->kind == event_kind::edited && e->target == change.target) change_one(*e);
  // Reactions can grow a message past the caps: the oldest go, as on push.
  while (msgs_.size() > 1 && bytes_ > limits_.max_bytes) pop_oldest();
  return true;
}

void recent_window::push(stored_msg&& m) {
  assert(msgs_.empty() || m.seq > msgs_.back().seq);
  bytes_ += cost(m);
  msgs_.push_back(std::move(m));
  while (!msgs_.empty() && (msgs_.size() > limits_.max_count || bytes_ > limits_.max_bytes))
    pop_oldest();
}

void recent_window::trim_below(uint64_t first) {
  while (!msgs_.empty() && msgs_.front().seq < first) pop_oldest();
}

void recent_window::clear() {
  msgs_.clear();
  bytes_ = 0;
}

bool recent_window::covers(uint64_t lo, uint64_t hi) const {
  if (hi <= lo) return true;
  return !msgs_.empty() && msgs_.front().seq <= lo && msgs_.back().seq >= hi - 1;
}

recent_window::range_view recent_window::range(uint64_t lo, uint64_t hi) const {
  if (hi <= lo) return {msgs_.end(), msgs_.end()};
  return {lower_bound(lo), lower_bound(hi)};
}

void recent_window::pop_oldest() {
  bytes_ -= cost(msgs_.front());
  msgs_.pop_front();
}

recent_window::const_iterator recent_window::lower_bound(uint64_t seq) const {
  return std::lower_bound(msgs_.begin(), msgs_.end(), seq,
                          [](const stored_msg& m, uint64_t s) { return m.seq < s; });
}

}  // namespace chat
