// libFuzzer entry point for the client frame decoder (links chat_protocol only).
// Two builds of it (tests/CMakeLists.txt):
//  - chat_fuzz_decode: clang, -fsanitize=fuzzer,address,undefined, configured with
//    -DCHAT_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++; deploy/fuzz.sh runs it on the corpus;
//  - chat_fuzz_decode_replay, in every build: tests/fuzz/replay_main.cpp feeds it each
//    seed of tests/fuzz/decode/ (ctest: fuzz_decode_replay).
// Any broken promise aborts, so that the fuzzer keeps the input that caused it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "messages/codec.hpp"
#include "messages/validate.hpp"

namespace {

using json = nlohmann::json;

void require(bool ok) {
  if (!ok) std::abort();
}

bool valid_utf8(std::string_view s) {
  size_t n = 0;
  return chat::utf8_code_points(s, n);
}

// What an encoder must produce: one line holding one JSON object.
bool one_object(const std::string& frame) {
  for (char c : frame)
    if (static_cast<unsigned char>(c) < 0x20) return false;
  auto j = json::parse(frame, nullptr, false);
  return !j.is_discarded() && j.is_object();
}

bool valid_room(const std::string& room) {
  std::string a, b;
  return chat::valid_room_name(room) || chat::parse_dm_room(room, a, b);
}

void check_one(std::string_view text, const chat::limits& lim) {
  chat::client_req r;
  chat::decode_error err;
  if (!chat::decode_request(text, lim, r, err)) {
    require(err.code == chat::errc::bad_request || err.code == chat::errc::too_large);
    require(!err.message.empty() && valid_utf8(err.message));
    require(one_object(chat::encode_error(err.id, err.code, err.message)));
    return;
  }
  require(one_object(chat::encode_pong(r.id)));  // the id splices into any reply
  chat::stored_msg m;
  m.room = r.room;
  m.seq = m.ts = 1;
  m.from = "alice";
  m.name = "Alice";
  m.text = r.text;
  m.data = r.data;
  m.idem_key = r.idem_key;
  m.reply_to = r.reply_to;
  m.mentions = r.mentions;
  switch (r.type) {
    case chat::req_type::join:
    case chat::req_type::leave:
    case chat::req_type::presence:
    case chat::req_type::typing:
      require(valid_room(r.room));
      require(one_object(chat::encode_joined(r.id, r.room, r.since, r.epoch, 1,
                                             {{r.name, r.name}}, r.has_since ? 1 : -1, 1)));
      break;
    case chat::req_type::history:
      require(valid_room(r.room));
      require(r.limit >= 1 && r.limit <= lim.max_history);
      require(one_object(chat::encode_history(r.id, r.room, {m}, true, 1)));
      break;
    case chat::req_type::send:
    case chat::req_type::dm: {
      if (r.type == chat::req_type::send) require(valid_room(r.room));
      if (r.type == chat::req_type::dm) m.room = chat::dm_room_name("alice", r.to);
      size_t n = 0;
      require(chat::utf8_code_points(r.text, n) && n >= 1 && n <= lim.max_text_chars);
      require(r.idem_key.size() <= lim.max_idem_key);
      auto out = chat::encode_message(m);
      require(one_object(out));
      auto j = json::parse(out);
      require(j["text"].get_ref<const std::string&>() == r.text);
      if (!r.data.empty()) require(j["data"].is_object() && j["data"] == json::parse(r.data));
      break;
    }
    case chat::req_type::hello:
    case chat::req_type::refresh:
      require(one_object(chat::encode_welcome(r.id, r.token, r.name, "s", "n", 25)));
      break;
    case chat::req_type::edit:
    case chat::req_type::del:
    case chat::req_type::react: {
      require(valid_room(r.room) && r.seq >= 1);
      m.kind = r.type == chat::req_type::edit  ? chat::event_kind::edited
               : r.type == chat::req_type::del ? chat::event_kind::deleted
                                               : chat::event_kind::reaction;
      m.target = r.seq;
      m.emoji = r.emoji;
      m.on = r.on;
      if (r.type == chat::req_type::react) require(chat::valid_emoji(r.emoji));
      require(one_object(chat::encode_message(m)));
      break;
    }
    case chat::req_type::read:
    case chat::req_type::part:
      require(valid_room(r.room));
      require(one_object(chat::encode(chat::read_msg{0, r.id, r.room, r.seq})));
      require(one_object(chat::encode(chat::left_msg{0, r.id, r.room, true})));
      break;
    case chat::req_type::search: {
      require(valid_room(r.room));
      require(!r.query.empty() && r.query.size() <= chat::max_query_bytes);
      require(r.limit >= 1 && r.limit <= lim.max_history);
      chat::history_page page{0, r.id, r.room, {m}, true, 1, true, true};
      require(one_object(chat::encode(page)));
      break;
    }
    case chat::req_type::room_set: {
      require(valid_room(r.room) && r.set != 0);
      m.kind = chat::event_kind::moderation;
      m.text = "settings";
      m.data = chat::encode_settings_detail(r.settings);
      auto out = chat::encode_message(m);
      require(one_object(out));
      if (r.set & chat::settings_topic) {
        auto j = json::parse(out);
        require(r.settings.topic.empty() || j["settings"]["topic"] == r.settings.topic);
      }
      break;
    }
    case chat::req_type::room:
      require(valid_room(r.room));
      break;
    case chat::req_type::role:
    case chat::req_type::kick:
    case chat::req_type::ban:
    case chat::req_type::unban:
    case chat::req_type::mute:
    case chat::req_type::unmute: {
      require(valid_room(r.room) && !r.user.empty());
      m.kind = chat::event_kind::moderation;
      m.text = chat::to_string(r.type);
      m.data = chat::encode_moderation_detail(r.user, 0, r.reason, nullptr);
      auto out = chat::encode_message(m);
      require(one_object(out));
      require(json::parse(out)["user"] == r.user);
      require(one_object(chat::encode_kicked(r.room, r.user, r.reason, true, 1)));
      break;
    }
    case chat::req_type::invite:
      require(valid_room(r.room) && !r.user.empty());
      require(one_object(chat::encode_invited(r.room, r.user)));
      break;
    case chat::req_type::rooms:
    case chat::req_type::ping:
    case chat::req_type::my_rooms:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  chat::limits lim;
  check_one(text, lim);
  // As the server reads a frame: split on '\n', one request per piece.
  chat::split_frame(text, [&](std::string_view piece) { check_one(piece, lim); });
  return 0;
}
