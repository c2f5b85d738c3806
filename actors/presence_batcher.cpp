#include "actors/presence_batcher.hpp"

#include <iterator>

namespace chat {

presence_batcher::presence_batcher(presence_limits limits) : limits_(limits) {}

presence_action presence_batcher::change(bool joined, const member_info& who, size_t members,
                                         time_point now) {
  if (now - window_start_ >= limits_.rate_window) {
    window_start_ = now;
    window_events_ = 0;
  }
  ++window_events_;
  bool big = members + (joined ? 0 : 1) > limits_.batch_threshold;
  bool storm = window_events_ * members > limits_.budget;
  if (!big && !storm && !tick_pending_) return presence_action::send_now;
  add(joined, who);
  if (tick_pending_) return presence_action::batched;
  tick_pending_ = true;
  return presence_action::schedule_tick;
}

void presence_batcher::add(bool joined, const member_info& who) {
  auto it = index_.find(who.user);
  if (it != index_.end()) {
    if (it->second.joined != joined) {
      // The opposite change is waiting: the two cancel out.
      auto& list = it->second.joined ? joins_ : leaves_;
      auto pos = it->second.pos;
      index_.erase(it);  // before the node its key views
      list.erase(pos);
    } else {
      // The same change twice (the room never does this): one entry per
      // user, keeping its place, with the newer name.
      it->second.pos->name = who.name;
    }
    return;
  }
  auto& list = joined ? joins_ : leaves_;
  list.push_back(who);
  auto pos = std::prev(list.end());
  index_.emplace(std::string_view{pos->user}, slot{joined, pos});
}

presence_diff_lists presence_batcher::take() {
  presence_diff_lists out;
  out.joins.reserve(joins_.size());
  out.leaves.reserve(leaves_.size());
  index_.clear();  // before the nodes its keys view
  for (auto& m : joins_) out.joins.push_back(std::move(m));
  for (auto& m : leaves_) out.leaves.push_back(std::move(m));
  joins_.clear();
  leaves_.clear();
  tick_pending_ = false;
  return out;
}

}  // namespace chat
