#pragma once
// Input rules of the protocol, as pure functions.
#include <cstddef>
#include <string>
#include <string_view>

namespace chat {

// Counts the code points of valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
// Returns false for invalid UTF-8.
bool utf8_code_points(std::string_view s, size_t& count);

// A client-chosen room name: 1..64 of A-Z a-z 0-9 _ - . : and not starting with "dm:".
bool valid_room_name(std::string_view room);

// "dm:<a>:<b>" with the two user ids sorted.
std::string dm_room_name(std::string_view a, std::string_view b);

// Splits a dm room name into its two users; false if `room` is not one.
bool parse_dm_room(std::string_view room, std::string& a, std::string& b);

inline bool is_dm_room(std::string_view room) { return room.substr(0, 3) == "dm:"; }

// Deepest nesting of arrays/objects in JSON text (strings skipped), to refuse
// documents that would recurse too deeply before parsing them.
size_t json_nesting_depth(std::string_view text);

}  // namespace chat
