#pragma once
// The newest messages of a room, kept in memory so that recovery and recent
// history need no store read. Bounded by count and by bytes (text, data,
// name, from and idempotency key of each message): 1,000 messages of 64 KiB
// must not pin 62 MiB. Messages come in moved and ascending by seq; when
// over either cap the oldest go first (a single message above max_bytes is
// not kept at all: the store serves it). Pure: no CAF.
//
// How the room uses it:
//   publish:          st.recent.push(std::move(msg));            // after encoding it
//   learn_first_seq:  st.recent.trim_below(st.first_seq);
//   apply_snapshot:   st.recent.clear(); for (auto& m : snap.recent) st.recent.push(std::move(m));
//   handle_join:      if (st.recent.covers(req.since + 1, st.last_seq + 1))
//                       for (auto& m : st.recent.range(req.since + 1)) frames.push_back(encode(m));
//                     uint64_t upto = st.recent.empty() ? st.last_seq + 1 : st.recent.oldest_seq();
//                     ...after the store read: for (auto& m : st.recent.range(upto)) ...
//   handle_history:   if (st.recent.covers(lo, before))
//                       for (auto& m : st.recent.range(lo, before)) out.push_back(m);
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>

#include "messages/model.hpp"

namespace chat {

struct recent_limits {
  size_t max_count = 1000;
  size_t max_bytes = 2 << 20;  // 2 MiB: ~10,000 short messages, 32 of 64 KiB
};

class recent_window {
 public:
  using container = std::deque<stored_msg>;
  using const_iterator = container::const_iterator;

  // A view of some of the window's messages; valid until the window changes.
  class range_view {
   public:
    range_view(const_iterator b, const_iterator e) : begin_(b), end_(e) {}
    const_iterator begin() const { return begin_; }
    const_iterator end() const { return end_; }
    size_t size() const { return static_cast<size_t>(end_ - begin_); }
    bool empty() const { return begin_ == end_; }

   private:
    const_iterator begin_, end_;
  };

  explicit recent_window(recent_limits limits = {});

  // What a message costs against max_bytes.
  static size_t cost(const stored_msg& m);

  // Appends m (its seq above every seq held), then drops the oldest while
  // over either cap.
  void push(stored_msg&& m);
  // The held event `seq`, or nullptr.
  const stored_msg* find(uint64_t seq) const;
  // A committed change event: applies it to its target if held (and, for a
  // delete, to the target's held edits), re-accounting bytes. True when the
  // target is held.
  bool apply(const stored_msg& change);
  // Drops every message with seq < first (the store's retention trimmed them).
  void trim_below(uint64_t first);
  void clear();

  // Whether every seq in [lo, hi) is held (an empty range always is). The
  // window's seqs are contiguous, as a room commits them.
  bool covers(uint64_t lo, uint64_t hi) const;
  // The held messages with seq in [lo, hi), oldest first, not copied.
  range_view range(uint64_t lo, uint64_t hi = std::numeric_limits<uint64_t>::max()) const;

  bool empty() const { return msgs_.empty(); }
  size_t size() const { return msgs_.size(); }
  size_t bytes() const { return bytes_; }
  uint64_t oldest_seq() const { return msgs_.empty() ? 0 : msgs_.front().seq; }  // 0: empty
  uint64_t newest_seq() const { return msgs_.empty() ? 0 : msgs_.back().seq; }
  const_iterator begin() const { return msgs_.begin(); }
  const_iterator end() const { return msgs_.end(); }
  const recent_limits& limits() const { return limits_; }

 private:
  void pop_oldest();
  const_iterator lower_bound(uint64_t seq) const;

  recent_limits limits_;
  container msgs_;
  size_t bytes_ = 0;
};

}  // namespace chat
