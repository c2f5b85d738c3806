#include "actors/cluster/routes.hpp"

namespace chat {

uint64_t rendezvous_weight(std::string_view node, std::string_view key) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(node);
  h ^= 0xff;  // separator: ("ab","c") and ("a","bc") differ
  h *= 1099511628211ull;
  mix(key);
  // splitmix64 finaliser: FNV alone is weak in the high bits.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

size_t rendezvous_home(std::string_view key, const std::vector<std::string>& nodes) {
  size_t best = 0;
  uint64_t best_w = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    auto w = rendezvous_weight(nodes[i], key);
    if (i == 0 || w > best_w) {
      best = i;
      best_w = w;
    }
  }
  return best;
}

size_t rendezvous_home(std::string_view key, const std::vector<std::string>& nodes,
                       const std::vector<bool>& up) {
  size_t best = nodes.size();
  uint64_t best_w = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (i >= up.size() || !up[i]) continue;
    auto w = rendezvous_weight(nodes[i], key);
    if (best == nodes.size() || w > best_w) {
      best = i;
      best_w = w;
    }
  }
  return best;
}

cluster_routes::cluster_routes(std::vector<std::string> nodes, size_t self, bool live_rooms)
    : names_(std::move(nodes)), self_(self), live_rooms_(live_rooms), directories_(names_.size()), users_(names_.size()),
      refused_(names_.size()) {}

void cluster_routes::set_refused(size_t index, std::string why) {
  std::lock_guard<std::mutex> guard{mtx_};
  refused_.at(index) = std::move(why);
}

std::string cluster_routes::refused(size_t index) const {
  std::lock_guard<std::mutex> guard{mtx_};
  return refused_.at(index);
}

void cluster_routes::set_node(size_t index, caf::actor directory, caf::actor users) {
  std::vector<std::function<void()>> notify;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    directories_.at(index) = std::move(directory);
    users_.at(index) = std::move(users);
    ++version_;
    notify = listeners_;
  }
  for (auto& f : notify) f();
}

void cluster_routes::on_change(std::function<void()> f) {
  std::lock_guard<std::mutex> guard{mtx_};
  listeners_.push_back(std::move(f));
}

std::vector<bool> cluster_routes::up_locked() const {
  std::vector<bool> up(names_.size());
  for (size_t i = 0; i < names_.size(); ++i) up[i] = directories_[i] != nullptr;
  return up;
}

size_t cluster_routes::home_of(std::string_view key) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = rendezvous_home(key, names_, up_locked());
  return i < names_.size() ? i : rendezvous_home(key, names_);
}

caf::actor cluster_routes::directory_for(std::string_view room) const {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!live_rooms_) return directories_[rendezvous_home(room, names_)];
  auto i = rendezvous_home(room, names_, up_locked());
  return i < names_.size() ? directories_[i] : caf::actor{};
}

caf::actor cluster_routes::users_for(std::string_view user) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = rendezvous_home(user, names_, up_locked());
  return i < names_.size() ? users_[i] : caf::actor{};
}

size_t cluster_routes::up_count() const {
  std::lock_guard<std::mutex> guard{mtx_};
  size_t n = 0;
  for (auto& d : directories_)
    if (d) ++n;
  return n;
}

std::vector<peer_status> cluster_routes::status() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<peer_status> out;
  for (size_t i = 0; i < names_.size(); ++i)
    out.push_back({names_[i], i == self_, directories_[i] != nullptr, refused_[i]});
  return out;
}

bool cluster_routes::all_up() const {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& d : directories_)
    if (!d) return false;
  return true;
}

std::vector<caf::actor> cluster_routes::directories() const {
  std::lock_guard<std::mutex> lock{mtx_};
  std::vector<caf::actor> out;
  for (auto& d : directories_)
    if (d) out.push_back(d);
  return out;
}

std::vector<caf::actor> cluster_routes::registries() const {
  std::lock_guard<std::mutex> lock{mtx_};
  std::vector<caf::actor> out;
  for (auto& u : users_)
    if (u) out.push_back(u);
  return out;
}

}  // namespace chat
