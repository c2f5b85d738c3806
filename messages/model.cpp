#include "messages/model.hpp"

#include <algorithm>

namespace chat {

bool apply_change(stored_msg& msg, const stored_msg& change) {
  switch (change.kind) {
    case event_kind::edited:
      if (msg.kind != event_kind::message || msg.deleted) return false;
      msg.text = change.text;
      msg.data = change.data;
      msg.edited_ts = change.ts;
      return true;
    case event_kind::deleted:
      // The message itself, or one of its edits: the text goes from both.
      if (msg.deleted) return false;
      msg.deleted = true;
      msg.text.clear();
      msg.data.clear();
      msg.reactions.clear();
      return true;
    case event_kind::reaction: {
      if (msg.kind != event_kind::message || msg.deleted) return false;
      auto set = std::find_if(msg.reactions.begin(), msg.reactions.end(),
                              [&](const reaction_set& r) { return r.emoji == change.emoji; });
      if (change.on) {
        if (set == msg.reactions.end()) {
          msg.reactions.push_back({change.emoji, {change.from}});
          return true;
        }
        if (std::find(set->users.begin(), set->users.end(), change.from) != set->users.end())
          return false;
        set->users.push_back(change.from);
        return true;
      }
      if (set == msg.reactions.end()) return false;
      auto u = std::find(set->users.begin(), set->users.end(), change.from);
      if (u == set->users.end()) return false;
      set->users.erase(u);
      if (set->users.empty()) msg.reactions.erase(set);
      return true;
    }
    case event_kind::message:
    case event_kind::moderation:
      return false;
  }
  return false;
}

std::string join_lines(const std::vector<std::string>& v) {
  std::string out;
  for (auto& x : v) {
    if (!out.empty()) out.push_back('\n');
    out += x;
  }
  return out;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    auto nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

bool has_reaction(const stored_msg& msg, const std::string& emoji, const std::string& user) {
  for (auto& r : msg.reactions)
    if (r.emoji == emoji)
      return std::find(r.users.begin(), r.users.end(), user) != r.users.end();
  return false;
}

}  // namespace chat
