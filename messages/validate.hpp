#pragma once
// Input rules of the protocol, as pure functions.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace chat {

// Walks UTF-8, calling on_cp for each code point; false on any ill-formed sequence
// (overlongs, surrogates, > U+10FFFF, truncation, stray continuation bytes).
template <typename F>
bool for_each_code_point(std::string_view s, F&& on_cp) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned char c = p[0];
    uint32_t cp;
    size_t len;
    // The bounds on the second byte are what rule out overlongs and surrogates.
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      cp = c;
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      cp = c & 0x1F;
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      cp = c & 0x0F;
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      cp = c & 0x07;
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) < len) return false;
    for (size_t i = 1; i < len; ++i) {
      unsigned char b = p[i];
      if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (!on_cp(cp)) return false;
    p += len;
  }
  return true;
}

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

// A reaction: 1..32 bytes of valid UTF-8 without whitespace or control characters.
bool valid_emoji(std::string_view emoji);

// Deepest nesting of arrays/objects in JSON text (strings skipped), to refuse
// documents that would recurse too deeply before parsing them.
size_t json_nesting_depth(std::string_view text);

}  // namespace chat
