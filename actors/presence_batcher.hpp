#pragma once
// Decides, for each presence change of a room, whether it goes out at once
// (member_joined / member_left) or into the pending presence_diff, and keeps
// that diff. Pure: no CAF; time is passed in.
//
// A change is batched when the room is big (its users, counting one who
// leaves, above batch_threshold), when deliveries in the current rate window
// (changes x members) exceed budget (a reconnect storm would send members^2
// events), or while a diff is pending: then every change joins it, so that no
// user's later event overtakes an earlier one waiting in the diff. A join and
// a leave of the same user in one diff cancel out. O(1) per change.
//
// How the room uses it:
//   presence_event(joined, who):
//     switch (st.presence.change(joined, who, st.users.size(), self->clock().now())) {
//       case presence_action::send_now:
//         broadcast(encode_member_event(joined ? "member_joined" : "member_left", ...), who.user);
//         break;
//       case presence_action::schedule_tick:
//         self->delayed_send(self, cfg.presence_batch_interval, presence_tick_atom_v);
//         break;
//       case presence_action::batched: break;
//     }
//   on presence_tick_atom:
//     auto diff = st.presence.take();  // ends the pending state
//     if (!diff.empty()) broadcast(encode_presence_diff(room, diff.joins, diff.leaves, ...));
#include <chrono>
#include <cstddef>
#include <list>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "messages/model.hpp"

namespace chat {

struct presence_limits {
  size_t batch_threshold = 1000;  // users above which every change is batched
  size_t budget = 500;            // changes x members per rate window before batching
  std::chrono::steady_clock::duration rate_window = std::chrono::seconds(1);
};

enum class presence_action {
  send_now,       // broadcast this change now: nothing is pending
  schedule_tick,  // it started a diff: schedule the tick that take()s it
  batched,        // it joined the pending diff; its tick is already scheduled
};

struct presence_diff_lists {
  std::vector<member_info> joins;  // in the order the changes came
  std::vector<member_info> leaves;
  bool empty() const { return joins.empty() && leaves.empty(); }
};

class presence_batcher {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  explicit presence_batcher(presence_limits limits = {});

  // `members`: the room's users after this change (without a user who left).
  presence_action change(bool joined, const member_info& who, size_t members, time_point now);

  // On the tick: the diff (possibly empty, when everything cancelled out);
  // nothing is pending afterwards.
  presence_diff_lists take();

  bool tick_pending() const { return tick_pending_; }
  size_t pending_joins() const { return joins_.size(); }
  size_t pending_leaves() const { return leaves_.size(); }
  size_t indexed() const { return index_.size(); }  // always joins + leaves
  const presence_limits& limits() const { return limits_; }

 private:
  struct slot {
    bool joined;
    std::list<member_info>::iterator pos;
  };
  void add(bool joined, const member_info& who);

  presence_limits limits_;
  bool tick_pending_ = false;
  time_point window_start_{};
  size_t window_events_ = 0;
  std::list<member_info> joins_, leaves_;
  // By user, pointing into joins_ or leaves_; the view is that node's `user`.
  std::unordered_map<std::string_view, slot> index_;
};

}  // namespace chat
