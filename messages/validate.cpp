#include "messages/validate.hpp"

namespace chat {

bool utf8_code_points(std::string_view s, size_t& count) {
  count = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
    } else {
      size_t len;
      uint32_t cp;
      if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
      } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
      } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
      } else {
        return false;
      }
      if (static_cast<size_t>(end - p) < len) return false;
      for (size_t i = 1; i < len; ++i) {
        if ((p[i] & 0xC0) != 0x80) return false;
        cp = (cp << 6) | (p[i] & 0x3F);
      }
      if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
          cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return false;
      p += len;
    }
    ++count;
  }
  return true;
}

bool valid_room_name(std::string_view room) {
  if (room.empty() || room.size() > 64 || is_dm_room(room)) return false;
  for (char c : room) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

std::string dm_room_name(std::string_view a, std::string_view b) {
  if (b < a) std::swap(a, b);
  std::string out;
  out.reserve(4 + a.size() + b.size());
  out.append("dm:").append(a).append(":").append(b);
  return out;
}

bool parse_dm_room(std::string_view room, std::string& a, std::string& b) {
  if (!is_dm_room(room)) return false;
  auto rest = room.substr(3);
  auto colon = rest.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= rest.size()) return false;
  if (rest.find(':', colon + 1) != std::string_view::npos) return false;
  a = std::string(rest.substr(0, colon));
  b = std::string(rest.substr(colon + 1));
  return a <= b;
}

size_t json_nesting_depth(std::string_view text) {
  size_t depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > max_depth) max_depth = depth;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return max_depth;
}

}  // namespace chat
