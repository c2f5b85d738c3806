#pragma once
// Plain data of the protocol, shared by the codec (no CAF) and the actor
// messages (messages/types.hpp adds their `inspect` functions).
#include <cstdint>
#include <string>

namespace chat {

struct member_info {
  std::string user;
  std::string name;
};
inline bool operator==(const member_info& a, const member_info& b) {
  return a.user == b.user && a.name == b.name;
}

// A message as stored: `data` is JSON text ("" when absent).
struct stored_msg {
  std::string room;
  uint64_t seq = 0;
  int64_t ts = 0;  // milliseconds since the epoch
  std::string from;
  std::string name;
  std::string text;
  std::string data;
  std::string idem_key;
};
inline bool operator==(const stored_msg& a, const stored_msg& b) {
  return a.room == b.room && a.seq == b.seq && a.ts == b.ts && a.from == b.from &&
         a.name == b.name && a.text == b.text && a.data == b.data && a.idem_key == b.idem_key;
}

}  // namespace chat
