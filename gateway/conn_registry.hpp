#pragma once
// The sessions of one I/O thread, by connection id and by room (local members,
// for fan-out). Touched only on that thread.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace chat {

class websocket_session;

class conn_registry {
 public:
  void add(uint64_t id, websocket_session* s) { conns_[id] = s; }
  void remove(uint64_t id) { conns_.erase(id); }
  websocket_session* find(uint64_t id) const {
    auto it = conns_.find(id);
    return it == conns_.end() ? nullptr : it->second;
  }
  const std::unordered_map<uint64_t, websocket_session*>& all() const { return conns_; }

  // Returns the member's index in the room's vector (for O(1) removal).
  size_t subscribe(const std::string& room, websocket_session* s) {
    auto& v = rooms_[room];
    v.push_back(s);
    return v.size() - 1;
  }
  // Swap-removes; the session moved into `index` learns its new index.
  template <class UpdateIndex>
  void unsubscribe(const std::string& room, size_t index, UpdateIndex&& update) {
    auto it = rooms_.find(room);
    if (it == rooms_.end() || index >= it->second.size()) return;
    auto& v = it->second;
    if (index != v.size() - 1) {
      v[index] = v.back();
      update(v[index], index);
    }
    v.pop_back();
    if (v.empty()) rooms_.erase(it);
  }
  const std::vector<websocket_session*>* members(const std::string& room) const {
    auto it = rooms_.find(room);
    return it == rooms_.end() ? nullptr : &it->second;
  }

 private:
  std::unordered_map<uint64_t, websocket_session*> conns_;
  std::unordered_map<std::string, std::vector<websocket_session*>> rooms_;
};

}  // namespace chat
