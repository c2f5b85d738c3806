// In-memory store backend: history lives as long as the process, so every
// room gets a fresh random epoch the first time it is loaded after a start.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/store/backend.hpp"
#include "messages/random.hpp"
#include "messages/validate.hpp"

namespace chat {

// Straight from the OS entropy source (messages/random.hpp): no generator state
// that a fork or a same-instant start could share.
std::string new_epoch() { return random_hex(16); }

namespace {

struct mem_room {
  std::string epoch;
  uint64_t last_seq = 0;
  uint64_t term = 0;
  std::string owner;
  std::deque<stored_msg> msgs;  // seqs first_seq()..last_seq, gapless
  std::map<std::string, membership> members;
  room_settings settings;
  std::map<std::string, restriction> restrictions;

  uint64_t first_seq() const { return last_seq + 1 - msgs.size(); }
};

class memory_backend final : public store_backend {
 public:
  explicit memory_backend(uint64_t max_per_room) : max_per_room_(max_per_room) {}

  bool load_room(const std::string& room, uint32_t recent_limit, int64_t idem_since_ms,
                 room_snapshot& out, std::string& err) override {
    try {
      snapshot(get_or_create(room), recent_limit, idem_since_ms, out);
      return true;
    } catch (const std::exception& e) {
      err = std::string{"memory store: "} + e.what();
      return false;
    }
  }

  bool claim_room(const std::string& room, const std::string& owner, uint32_t recent_limit,
                  int64_t idem_since_ms, room_snapshot& out, std::string& err) override {
    if (owner.empty()) {
      err = "claim of room '" + room + "' without an owner name";
      return false;
    }
    try {
      auto& r = get_or_create(room);
      room_snapshot snap;
      snapshot(r, recent_limit, idem_since_ms, snap);
      snap.term = r.term + 1;
      snap.owner = owner;
      std::string new_owner = owner;  // copied before: a bad_alloc leaves the room unclaimed
      r.term = snap.term;
      r.owner = std::move(new_owner);
      out = std::move(snap);
      return true;
    } catch (const std::exception& e) {
      err = std::string{"memory store: "} + e.what();
      return false;
    }
  }

  bool append(const std::vector<append_batch>& batches, std::vector<append_result>& results,
              std::string& err) override {
    try {
      results.assign(batches.size(), append_result::committed);
      // Validate everything first so that a refused call changes nothing.
      // A room may appear in several batches: track its tentative last seq.
      std::unordered_map<std::string, uint64_t> next;
      for (size_t i = 0; i < batches.size(); ++i) {
        auto& b = batches[i];
        if (b.empty()) continue;
        auto r = rooms_.find(b.room);
        if (r == rooms_.end()) {
          err = "append to unknown room '" + b.room + "' (load_room first)";
          return false;
        }
        if (b.term != 0 && (b.term != r->second.term || b.owner != r->second.owner)) {
          results[i] = append_result::fenced;  // skipped: no seq check, nothing stored
          continue;
        }
        auto it = next.find(b.room);
        if (it == next.end()) it = next.emplace(b.room, r->second.last_seq + 1).first;
        for (auto& m : b.msgs) {
          if (!m.room.empty() && m.room != b.room) {
            err = "message for room '" + m.room + "' in batch of room '" + b.room + "'";
            return false;
          }
          if (m.seq != it->second) {
            err = "seq gap in room '" + b.room + "': expected " + std::to_string(it->second) +
                  ", got " + std::to_string(m.seq);
            return false;
          }
          ++it->second;
        }
      }
      // Copy before mutating so that bad_alloc cannot leave a half-stored call.
      std::vector<std::pair<mem_room*, std::vector<stored_msg>>> staged;
      staged.reserve(batches.size());
      for (size_t i = 0; i < batches.size(); ++i) {
        auto& b = batches[i];
        if (b.empty() || results[i] == append_result::fenced) continue;
        auto& room = rooms_[b.room];
        for (auto& m : b.member_set) room.members[m.user] = m;
        for (auto& u : b.member_del) room.members.erase(u);
        if (b.set_settings) room.settings = b.settings;
        for (auto& x : b.restrict_set) room.restrictions[x.user] = x;
        for (auto& u : b.restrict_del) room.restrictions.erase(u);
        if (b.msgs.empty()) continue;
        staged.emplace_back(&room, b.msgs);
        for (auto& m : staged.back().second) m.room = b.room;
      }
      for (auto& [r, msgs] : staged) {
        for (auto& m : msgs) {
          r->msgs.push_back(std::move(m));
          r->last_seq = r->msgs.back().seq;  // first_seq() counts on it
          apply_to_target(*r, r->msgs.back());
        }
        r->last_seq = r->msgs.back().seq;
        if (max_per_room_ > 0)
          while (r->msgs.size() > max_per_room_) r->msgs.pop_front();
      }
      return true;
    } catch (const std::exception& e) {
      err = std::string{"memory store: "} + e.what();
      return false;
    }
  }

  bool range(const range_query& q, std::vector<stored_msg>& out, std::string& err) override {
    out.clear();
    try {
      auto it = rooms_.find(q.room);
      if (it == rooms_.end() || q.limit == 0) return true;
      auto& r = it->second;
      if (r.msgs.empty() || q.after >= r.last_seq) return true;
      uint64_t lo = std::max(q.after + 1, r.first_seq());
      uint64_t hi = r.last_seq;
      if (q.before != 0) {
        if (q.before <= lo) return true;
        hi = std::min(hi, q.before - 1);
      }
      if (lo > hi) return true;
      if (q.moderation_only) {
        auto at = [&](uint64_t seq) -> const stored_msg& { return r.msgs[seq - r.first_seq()]; };
        for (uint64_t i = 0; i <= hi - lo && out.size() < q.limit; ++i) {
          auto& m = at(q.newest ? hi - i : lo + i);
          if (m.kind == event_kind::moderation) out.push_back(m);
        }
        if (q.newest) std::reverse(out.begin(), out.end());
        return true;
      }
      uint64_t take = std::min<uint64_t>(hi - lo + 1, q.limit);
      uint64_t start = q.newest ? hi - take + 1 : lo;
      auto first = r.msgs.begin() + static_cast<std::ptrdiff_t>(start - r.first_seq());
      out.assign(first, first + static_cast<std::ptrdiff_t>(take));
      return true;
    } catch (const std::exception& e) {
      out.clear();
      err = std::string{"memory store: "} + e.what();
      return false;
    }
  }

  bool get_event(const std::string& room, uint64_t seq, stored_msg& out, bool& found,
                 std::string& err) override {
    found = false;
    try {
      auto it = rooms_.find(room);
      if (it == rooms_.end()) return true;
      auto& r = it->second;
      if (seq < r.first_seq() || seq > r.last_seq) return true;
      out = r.msgs[seq - r.first_seq()];
      found = true;
      return true;
    } catch (const std::exception& e) {
      err = std::string{"memory store: "} + e.what();
      return false;
    }
  }

  bool count_unread(const std::string& room, const std::string& user, uint64_t after,
                    uint64_t upto, uint64_t& out, std::string&) override {
    out = 0;
    auto it = rooms_.find(room);
    if (it == rooms_.end()) return true;
    for (auto& m : it->second.msgs)
      if (m.seq > after && m.seq <= upto && m.kind == event_kind::message && !m.deleted &&
          m.from != user && ++out >= max_unread)
        break;
    return true;
  }

  bool user_rooms(const std::string& user, std::vector<user_room>& out, std::string& err) override {
    out.clear();
    for (auto& [name, r] : rooms_) {
      auto m = r.members.find(user);
      if (m == r.members.end()) continue;
      user_room ur{name, m->second.role, r.last_seq, m->second.read_seq, 0, r.settings.topic,
                   r.settings.private_room};
      if (!count_unread(name, user, ur.read_seq, ur.last_seq, ur.unread, err)) return false;
      out.push_back(std::move(ur));
    }
    return true;
  }

  bool search(const std::string& room, const std::string& query, uint64_t before, uint32_t limit,
              std::vector<stored_msg>& out, std::string&) override {
    out.clear();
    auto it = rooms_.find(room);
    auto want = words_of(query);
    if (it == rooms_.end() || want.empty()) return true;
    auto& msgs = it->second.msgs;
    for (auto m = msgs.rbegin(); m != msgs.rend() && out.size() < limit; ++m) {
      if (m->kind != event_kind::message || m->deleted || (before != 0 && m->seq >= before)) continue;
      auto have = words_of(m->text);
      bool all = true;
      for (auto& w : want) all = all && std::find(have.begin(), have.end(), w) != have.end();
      if (all) out.push_back(*m);
    }
    return true;
  }

  bool room_exists(const std::string& room, bool& out, std::string&) override {
    out = rooms_.count(room) > 0;
    return true;
  }

  bool lost_claims(const std::string& owner,
                   const std::vector<std::pair<std::string, uint64_t>>& claims,
                   std::vector<std::string>& lost, std::string&) override {
    for (auto& [room, term] : claims) {
      auto it = rooms_.find(room);
      if (it == rooms_.end() || it->second.term != term || it->second.owner != owner)
        lost.push_back(room);
    }
    return true;
  }

  bool first_seq(const std::string& room, uint64_t& out, std::string&) override {
    auto it = rooms_.find(room);
    out = it == rooms_.end() ? 1 : it->second.first_seq();
    return true;
  }

  bool trim(const retention_policy& p, int64_t now_ms, uint64_t& removed, std::string&) override {
    removed = 0;
    for (auto& [name, r] : rooms_) {
      // Only ever drop a prefix, so that first_seq..last_seq stays gapless.
      while (p.max_messages > 0 && r.msgs.size() > p.max_messages) {
        r.msgs.pop_front();
        ++removed;
      }
      if (p.max_age_ms > 0) {
        int64_t cutoff = now_ms - p.max_age_ms;
        while (!r.msgs.empty() && r.msgs.front().ts < cutoff) {
          r.msgs.pop_front();
          ++removed;
        }
      }
    }
    return true;
  }

  bool healthy(std::string& err) override {
    err = "ok";
    return true;
  }

  bool store_user_ban(const user_ban& ban, std::string&) override {
    if (ban.lift)
      user_bans_.erase(ban.user);
    else
      user_bans_[ban.user] = user_ban{ban.user, ban.until, ban.reason, false};
    return true;
  }

  bool user_bans(std::vector<user_ban>& out, std::string&) override {
    out.clear();
    for (auto& [user, b] : user_bans_) out.push_back(b);
    return true;
  }

 private:
  static void snapshot(const mem_room& r, uint32_t recent_limit, int64_t idem_since_ms,
                       room_snapshot& out) {
    out = room_snapshot{};
    out.epoch = r.epoch;
    out.last_seq = r.last_seq;
    out.first_seq = r.first_seq();
    out.term = r.term;
    out.owner = r.owner;
    auto n = std::min<size_t>(recent_limit, r.msgs.size());
    out.recent.assign(r.msgs.end() - static_cast<std::ptrdiff_t>(n), r.msgs.end());
    for (auto& m : r.msgs)
      if (!m.idem_key.empty() && m.ts >= idem_since_ms) out.idem.push_back(m);
    for (auto& [user, m] : r.members) out.members.push_back(m);
    out.settings = r.settings;
    for (auto& [user, x] : r.restrictions) out.restrictions.push_back(x);
  }

  // The lower case of the letters the memory store folds: ASCII, Latin-1,
  // Latin Extended-A, Greek and Cyrillic capitals (enough for tests and a
  // single dev node; SQLite and PostgreSQL fold every script).
  static uint32_t fold(uint32_t cp) {
    if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
    if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) return cp + 32;
    if (cp >= 0x100 && cp <= 0x17F && cp % 2 == 0) return cp + 1;
    if (cp >= 0x391 && cp <= 0x3AB && cp != 0x3A2) return cp + 32;
    if (cp >= 0x410 && cp <= 0x42F) return cp + 32;
    if (cp >= 0x400 && cp <= 0x40F) return cp + 80;
    return cp;
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // Words for the memory store's naive search: runs of letters and digits
  // (any code point above ASCII counts as one), folded as above.
  static std::vector<std::string> words_of(const std::string& text) {
    std::vector<std::string> out;
    std::string w;
    for_each_code_point(text, [&](uint32_t cp) {
      if (cp >= 0x80 || std::isalnum(static_cast<int>(cp))) {
        put_utf8(w, fold(cp));
      } else if (!w.empty()) {
        out.push_back(std::move(w));
        w.clear();
      }
      return true;
    });
    if (!w.empty()) out.push_back(std::move(w));
    return out;
  }

  // A change event just stored: its target's current state follows it.
  static void apply_to_target(mem_room& r, const stored_msg& change) {
    if (change.kind == event_kind::message || change.kind == event_kind::moderation) return;
    if (change.target < r.first_seq() || change.target >= change.seq) return;  // trimmed
    apply_change(r.msgs[change.target - r.first_seq()], change);
    if (change.kind == event_kind::deleted)
      for (auto& m : r.msgs)
        if (m.kind == event_kind::edited && m.target == change.target) apply_change(m, change);
  }

  mem_room& get_or_create(const std::string& room) {
    auto it = rooms_.find(room);
    if (it != rooms_.end()) return it->second;
    mem_room r;
    r.epoch = new_epoch();
    return rooms_.emplace(room, std::move(r)).first->second;
  }

  uint64_t max_per_room_;
  std::map<std::string, mem_room> rooms_;
  std::map<std::string, user_ban> user_bans_;
};

}  // namespace

std::unique_ptr<store_backend> make_memory_backend(uint64_t max_per_room) {
  return std::make_unique<memory_backend>(max_per_room);
}

}  // namespace chat
