#include "actors/ban_list.hpp"

#include <algorithm>

namespace chat {

void ban_list::apply(const user_ban& ban) {
  std::lock_guard<std::mutex> lock{mtx_};
  if (ban.lift)
    bans_.erase(ban.user);
  else
    bans_[ban.user] = ban;
}

std::optional<user_ban> ban_list::active(const std::string& user, int64_t now) const {
  std::lock_guard<std::mutex> lock{mtx_};
  auto it = bans_.find(user);
  if (it == bans_.end() || !it->second.active(now)) return std::nullopt;
  return it->second;
}

std::vector<user_ban> ban_list::all(int64_t now) const {
  std::vector<user_ban> out;
  {
    std::lock_guard<std::mutex> lock{mtx_};
    for (auto& [user, b] : bans_)
      if (b.active(now)) out.push_back(b);
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.user < b.user; });
  return out;
}

size_t ban_list::size() const {
  std::lock_guard<std::mutex> lock{mtx_};
  return bans_.size();
}

}  // namespace chat
