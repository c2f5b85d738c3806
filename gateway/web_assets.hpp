#pragma once
// The web client, embedded at build time from web/ (see gateway/embed_web.cmake).
#include <string_view>

namespace chat {

struct web_asset {
  std::string_view path;
  std::string_view content_type;
  std::string_view body;
};

// nullptr when `path` names no asset ("/" is index.html).
const web_asset* find_web_asset(std::string_view path);

}  // namespace chat
