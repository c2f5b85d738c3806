#include "messages/validate.hpp"

namespace chat {

bool utf8_code_points(std::string_view s, size_t& count) {
  count = 0;
  return for_each_code_point(s, [&count](uint32_t) {
    ++count;
    return true;
  });
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

bool valid_emoji(std::string_view emoji) {
  if (emoji.empty() || emoji.size() > 32) return false;
  return for_each_code_point(emoji, [](uint32_t cp) {
    bool control = cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
    bool space = cp == ' ' || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
                 cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
    return !control && !space;
  });
}

}  // namespace chat
