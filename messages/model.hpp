#pragma once
// Plain data of the protocol, shared by the codec (no CAF) and the actor
// messages (messages/types.hpp adds their `inspect` functions).
#include <cstdint>
#include <string>
#include <vector>

#include "messages/errors.hpp"

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

// --- replies to one connection's request -----------------------------------------
// Rooms, the directory and registries answer with these structs; the gateway
// encodes them on its I/O thread (messages/codec.hpp `encode`), the server API
// reads them directly. `conn` routes a reply to its session on a gateway;
// `req_id` is the client's request id as JSON text ("" when it sent none).

struct ack_msg {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  uint64_t seq = 0;
  int64_t ts = 0;
};

struct error_msg {
  uint64_t conn = 0;
  std::string req_id;
  errc code = errc::internal;
  std::string message;
  std::string room;  // set when the error is about a room the client is in (room lost)
};

struct left_msg {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
};

struct history_page {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  std::vector<stored_msg> msgs;  // oldest first
  bool more = false;             // older messages exist before msgs.front()
  uint64_t first_seq = 1;
  bool exists = true;            // the room has (or had) messages or members
};

struct presence_list {
  uint64_t conn = 0;
  std::string req_id;
  std::string room;
  std::vector<member_info> members;
  bool exists = true;  // the room has (or had) messages or members
};

// What `joined` tells the client.
struct joined_info {
  std::string req_id;
  std::string room;
  uint64_t seq = 0;  // the room's last seq
  std::string epoch;
  uint64_t member_count = 0;
  std::vector<member_info> members;  // the first of them
  int8_t recovered = -1;            // -1: not a recovery join, 0: false, 1: true
  uint64_t first_seq = 1;
};

}  // namespace chat
