// Tests of the JSON codec and input validation (messages/codec, messages/validate):
// every client frame valid and invalid, every encoder, and a deterministic fuzz run.
#include "messages/codec.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "messages/validate.hpp"
#include "tests/support/print_errc.hpp"

namespace chat {
namespace {

using json = nlohmann::json;

// UTF-8 spelled out in bytes so that the source encoding never matters.
const std::string kGrin = "\xF0\x9F\x98\x80";     // U+1F600, 4 bytes
const std::string kCombAcute = "\xCC\x81";        // U+0301 combining acute accent
const std::string kLineSep = "\xE2\x80\xA8";      // U+2028
const std::string kParaSep = "\xE2\x80\xA9";      // U+2029
const std::string kRlo = "\xE2\x80\xAE";          // U+202E right-to-left override
const std::string kHebrew = "\xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D";          // shalom
const std::string kArabic = "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7";  // marhaba
const std::string kCjk = "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E";        // nihongo

// A literal with embedded NULs, all of it.
template <size_t N>
std::string_view bytes(const char (&s)[N]) {
  return std::string_view(s, N - 1);
}

std::string repeat(std::string_view s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out.append(s);
  return out;
}

// Printable form of arbitrary bytes for failure messages.
std::string printable(std::string_view s, size_t max = 200) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out.append("\\x").push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  if (s.size() > max) out.append("...");
  return out;
}

bool valid_utf8(std::string_view s) {
  size_t n = 0;
  return utf8_code_points(s, n);
}

size_t code_points(std::string_view s) {
  size_t n = 0;
  EXPECT_TRUE(utf8_code_points(s, n)) << printable(s);
  return n;
}

client_req must_decode(std::string_view text, const limits& lim = limits{}) {
  client_req req;
  decode_error err;
  EXPECT_TRUE(decode_request(text, lim, req, err))
      << printable(text) << " -> " << to_string(err.code) << ": " << err.message;
  return req;
}

decode_error must_fail(std::string_view text, const limits& lim = limits{}) {
  client_req req;
  decode_error err;
  EXPECT_FALSE(decode_request(text, lim, req, err)) << printable(text);
  EXPECT_FALSE(err.message.empty()) << printable(text);
  return err;
}

void expect_bad_request(std::string_view text) {
  EXPECT_EQ(must_fail(text).code, errc::bad_request) << printable(text);
}

// A request built with nlohmann keeps UTF-8 raw (ensure_ascii is off by default).
std::string send_text(const std::string& text) {
  return json{{"type", "send"}, {"room", "general"}, {"text", text}}.dump();
}

std::string with_room(const char* type, const std::string& room) {
  return json{{"type", type}, {"room", room}}.dump();
}

// Encoder output: one line, no raw control bytes, parses as a JSON object.
json parse_frame(const std::string& frame) {
  for (char c : frame)
    EXPECT_GE(static_cast<unsigned char>(c), 0x20) << "raw control byte in " << printable(frame);
  json j = json::parse(frame, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << printable(frame);
  EXPECT_TRUE(j.is_object()) << printable(frame);
  return j;
}

std::set<std::string> keys_of(const json& j) {
  std::set<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
  return keys;
}

// --- decode_request: every client type ---------------------------------------------------

TEST(DecodeHello, WithToken) {
  auto r = must_decode(R"({"type":"hello","id":1,"token":"aaa.bbb.ccc"})");
  EXPECT_EQ(r.type, req_type::hello);
  EXPECT_EQ(r.id, "1");
  EXPECT_EQ(r.token, "aaa.bbb.ccc");
  EXPECT_EQ(r.name, "");
}

TEST(DecodeHello, WithName) {
  auto r = must_decode(R"({"type":"hello","id":1,"name":"alice"})");
  EXPECT_EQ(r.type, req_type::hello);
  EXPECT_EQ(r.name, "alice");
  EXPECT_EQ(r.token, "");
}

TEST(DecodeHello, NeitherTokenNorNameIsLeftToTheServer) {
  auto r = must_decode(R"({"type":"hello"})");
  EXPECT_EQ(r.type, req_type::hello);
  EXPECT_EQ(r.id, "");
}

TEST(DecodeHello, WrongTypes) {
  expect_bad_request(R"({"type":"hello","token":5})");
  expect_bad_request(R"({"type":"hello","token":["a"]})");
  expect_bad_request(R"({"type":"hello","token":{}})");
  expect_bad_request(R"({"type":"hello","name":5})");
  expect_bad_request(R"({"type":"hello","name":true})");
}

TEST(DecodeRefresh, TokenRequired) {
  auto r = must_decode(R"({"type":"refresh","id":2,"token":"new.jwt.sig"})");
  EXPECT_EQ(r.type, req_type::refresh);
  EXPECT_EQ(r.id, "2");
  EXPECT_EQ(r.token, "new.jwt.sig");
  expect_bad_request(R"({"type":"refresh","id":2})");
  expect_bad_request(R"({"type":"refresh","token":null})");
  expect_bad_request(R"({"type":"refresh","token":12})");
}

TEST(DecodeJoin, Plain) {
  auto r = must_decode(R"({"type":"join","id":3,"room":"general"})");
  EXPECT_EQ(r.type, req_type::join);
  EXPECT_EQ(r.id, "3");
  EXPECT_EQ(r.room, "general");
  EXPECT_FALSE(r.has_since);
  EXPECT_EQ(r.epoch, "");
}

TEST(DecodeJoin, WithSinceAndEpoch) {
  auto r = must_decode(R"({"type":"join","id":3,"room":"general","since":37,"epoch":"e-1"})");
  EXPECT_TRUE(r.has_since);
  EXPECT_EQ(r.since, 37u);
  EXPECT_EQ(r.epoch, "e-1");
  // since 0 (nothing seen yet) is a recovery too; null counts as absent.
  r = must_decode(R"({"type":"join","room":"general","since":0})");
  EXPECT_TRUE(r.has_since);
  EXPECT_EQ(r.since, 0u);
  r = must_decode(R"({"type":"join","room":"general","since":null})");
  EXPECT_FALSE(r.has_since);
  r = must_decode(R"({"type":"join","room":"general","since":18446744073709551615})");
  EXPECT_EQ(r.since, UINT64_MAX);
}

TEST(DecodeJoin, WrongTypes) {
  expect_bad_request(R"({"type":"join"})");
  expect_bad_request(R"({"type":"join","room":null})");
  expect_bad_request(R"({"type":"join","room":5})");
  expect_bad_request(R"({"type":"join","room":["general"]})");
  expect_bad_request(R"({"type":"join","room":"general","since":-1})");
  expect_bad_request(R"({"type":"join","room":"general","since":"37"})");
  expect_bad_request(R"({"type":"join","room":"general","since":37.5})");
  expect_bad_request(R"({"type":"join","room":"general","since":1.0})");
  expect_bad_request(R"({"type":"join","room":"general","since":true})");
  expect_bad_request(R"({"type":"join","room":"general","since":18446744073709551616})");
  expect_bad_request(R"({"type":"join","room":"general","since":1,"epoch":7})");
}

TEST(DecodeRoomOnly, LeavePresenceTyping) {
  struct {
    const char* type;
    req_type expected;
  } cases[] = {{"leave", req_type::leave},
               {"presence", req_type::presence},
               {"typing", req_type::typing}};
  for (const auto& c : cases) {
    auto r = must_decode(json{{"type", c.type}, {"id", 4}, {"room", "general"}}.dump());
    EXPECT_EQ(r.type, c.expected) << c.type;
    EXPECT_EQ(r.room, "general");
    EXPECT_EQ(r.id, "4");
    expect_bad_request(json{{"type", c.type}}.dump());
    expect_bad_request(json{{"type", c.type}, {"room", 1}}.dump());
    expect_bad_request(json{{"type", c.type}, {"room", ""}}.dump());
    expect_bad_request(json{{"type", c.type}, {"room", "has space"}}.dump());
  }
  // typing without an id is the documented form.
  EXPECT_EQ(must_decode(R"({"type":"typing","room":"general"})").id, "");
}

TEST(DecodeSend, AllFields) {
  auto r = must_decode(
      R"({"type":"send","id":5,"room":"general","text":"hi \ud83d\udc4b",)"
      R"("idempotency_key":"k1","data":{"b":[1,2],"a":{"x":null}}})");
  EXPECT_EQ(r.type, req_type::send);
  EXPECT_EQ(r.id, "5");
  EXPECT_EQ(r.room, "general");
  EXPECT_EQ(r.text, "hi \xF0\x9F\x91\x8B");
  EXPECT_EQ(r.idem_key, "k1");
  EXPECT_EQ(json::parse(r.data), json::parse(R"({"a":{"x":null},"b":[1,2]})"));
}

TEST(DecodeSend, OptionalFieldsAbsent) {
  auto r = must_decode(R"({"type":"send","room":"general","text":"x"})");
  EXPECT_EQ(r.data, "");
  EXPECT_EQ(r.idem_key, "");
  r = must_decode(R"({"type":"send","room":"general","text":"x","data":null,)"
                  R"("idempotency_key":null})");
  EXPECT_EQ(r.data, "");
  EXPECT_EQ(r.idem_key, "");
}

TEST(DecodeSend, WrongTypes) {
  expect_bad_request(R"({"type":"send","room":"general"})");
  expect_bad_request(R"({"type":"send","text":"x"})");
  expect_bad_request(R"({"type":"send","room":"general","text":5})");
  expect_bad_request(R"({"type":"send","room":"general","text":["x"]})");
  expect_bad_request(R"({"type":"send","room":"general","text":null})");
  expect_bad_request(R"({"type":"send","room":"general","text":"x","idempotency_key":1})");
  expect_bad_request(R"({"type":"send","room":"general","text":"x","data":[1]})");
  expect_bad_request(R"({"type":"send","room":"general","text":"x","data":"{}"})");
  expect_bad_request(R"({"type":"send","room":"general","text":"x","data":3})");
  expect_bad_request(R"({"type":"send","room":"general","text":"x","data":true})");
}

TEST(DecodeSend, EmptyTextRefused) {
  auto err = must_fail(R"({"type":"send","id":5,"room":"general","text":""})");
  EXPECT_EQ(err.code, errc::bad_request);
  EXPECT_EQ(err.id, "5");
}

TEST(DecodeSend, IdempotencyKeyLength) {
  auto key = std::string(128, 'k');
  auto msg = json{{"type", "send"}, {"room", "r"}, {"text", "x"}, {"idempotency_key", key}};
  EXPECT_EQ(must_decode(msg.dump()).idem_key, key);
  msg["idempotency_key"] = key + "k";
  EXPECT_EQ(must_fail(msg.dump()).code, errc::too_large);
}

TEST(DecodeHistory, DefaultsAndBounds) {
  auto r = must_decode(R"({"type":"history","id":6,"room":"general"})");
  EXPECT_EQ(r.type, req_type::history);
  EXPECT_EQ(r.before, 0u);
  EXPECT_EQ(r.limit, 50u);
  r = must_decode(R"({"type":"history","id":6,"room":"general","before":42,"limit":50})");
  EXPECT_EQ(r.before, 42u);
  EXPECT_EQ(r.limit, 50u);
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r","limit":1})").limit, 1u);
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r","limit":100})").limit, 100u);
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r","before":1})").before, 1u);
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r","limit":null})").limit, 50u);
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r","before":18446744073709551615})").before,
            UINT64_MAX);
}

TEST(DecodeHistory, OutOfRange) {
  expect_bad_request(R"({"type":"history","room":"r","limit":0})");
  expect_bad_request(R"({"type":"history","room":"r","limit":101})");
  expect_bad_request(R"({"type":"history","room":"r","limit":-1})");
  expect_bad_request(R"({"type":"history","room":"r","limit":4294967346})");  // 2^32 + 50
  expect_bad_request(R"({"type":"history","room":"r","limit":18446744073709551615})");
  expect_bad_request(R"({"type":"history","room":"r","limit":50.0})");
  expect_bad_request(R"({"type":"history","room":"r","limit":"50"})");
  expect_bad_request(R"({"type":"history","room":"r","before":0})");
  expect_bad_request(R"({"type":"history","room":"r","before":-1})");
  expect_bad_request(R"({"type":"history","room":"r","before":"42"})");
  expect_bad_request(R"({"type":"history","room":"r","before":4.2})");
  expect_bad_request(R"({"type":"history","limit":10})");
}

TEST(DecodeHistory, CustomMaximum) {
  limits lim;
  lim.max_history = 10;
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r","limit":10})", lim).limit, 10u);
  EXPECT_EQ(must_fail(R"({"type":"history","room":"r","limit":11})", lim).code, errc::bad_request);
  // The default of 50 never exceeds the configured maximum.
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r"})", lim).limit, 10u);
  lim.max_history = 500;
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r"})", lim).limit, 50u);
  EXPECT_EQ(must_decode(R"({"type":"history","room":"r","limit":500})", lim).limit, 500u);
}

TEST(DecodeDm, Fields) {
  auto r = must_decode(R"({"type":"dm","id":8,"to":"bob","text":"psst","idempotency_key":"d1",)"
                       R"("data":{"k":"v"}})");
  EXPECT_EQ(r.type, req_type::dm);
  EXPECT_EQ(r.id, "8");
  EXPECT_EQ(r.to, "bob");
  EXPECT_EQ(r.text, "psst");
  EXPECT_EQ(r.idem_key, "d1");
  EXPECT_EQ(r.data, R"({"k":"v"})");
  EXPECT_EQ(r.room, "");  // the server builds the dm room from the two users
}

TEST(DecodeDm, WrongFields) {
  expect_bad_request(R"({"type":"dm","text":"psst"})");
  expect_bad_request(R"({"type":"dm","to":"","text":"psst"})");
  expect_bad_request(R"({"type":"dm","to":7,"text":"psst"})");
  expect_bad_request(R"({"type":"dm","to":"bob"})");
  expect_bad_request(R"({"type":"dm","to":"bob","text":""})");
  expect_bad_request(R"({"type":"dm","to":"bob","text":"x","data":[]})");
  std::string to(256, 'u');
  EXPECT_EQ(must_decode(json{{"type", "dm"}, {"to", to}, {"text", "x"}}.dump()).to, to);
  expect_bad_request(json{{"type", "dm"}, {"to", to + "u"}, {"text", "x"}}.dump());
  auto big = json{{"type", "dm"}, {"to", "bob"}, {"text", repeat("x", 4097)}};
  EXPECT_EQ(must_fail(big.dump()).code, errc::too_large);
}

TEST(DecodeRooms, AndPing) {
  auto r = must_decode(R"({"type":"rooms","id":9})");
  EXPECT_EQ(r.type, req_type::rooms);
  EXPECT_EQ(r.id, "9");
  r = must_decode(R"({"type":"ping"})");
  EXPECT_EQ(r.type, req_type::ping);
  EXPECT_EQ(r.id, "");
  r = must_decode(R"({"type":"ping","id":"p-1"})");
  EXPECT_EQ(r.id, R"("p-1")");
}

// --- ids -------------------------------------------------------------------------------

TEST(DecodeId, IntegerAndStringEchoed) {
  EXPECT_EQ(must_decode(R"({"type":"ping","id":0})").id, "0");
  EXPECT_EQ(must_decode(R"({"type":"ping","id":-12})").id, "-12");
  EXPECT_EQ(must_decode(R"({"type":"ping","id":18446744073709551615})").id,
            "18446744073709551615");
  EXPECT_EQ(must_decode(R"({"type":"ping","id":-9223372036854775808})").id,
            "-9223372036854775808");
  EXPECT_EQ(must_decode(R"({"type":"ping","id":"abc"})").id, R"("abc")");
  EXPECT_EQ(must_decode(R"({"type":"ping","id":""})").id, R"("")");
  EXPECT_EQ(must_decode(R"({"id":7,"type":"ping"})").id, "7");  // order does not matter
  EXPECT_EQ(must_decode(R"({"type":"ping","id":null})").id, "");
}

TEST(DecodeId, SplicedIdParsesToTheSameValue) {
  // Escapes may be re-spelled but the value the client sees is the one it sent.
  const char* ids[] = {R"(42)", R"(-1)", R"("x")", R"("a\"b\\c")", R"("line\nbreak")",
                       R"("\u00e9\ud83d\ude00")", R"("\u0000")", R"("\/")"};
  for (const char* id : ids) {
    auto text = std::string(R"({"type":"ping","id":)") + id + "}";
    auto r = must_decode(text);
    auto pong = parse_frame(encode_pong(r.id));
    EXPECT_EQ(pong["id"], json::parse(id)) << id;
    auto err = parse_frame(encode_error(r.id, errc::bad_request, "m"));
    EXPECT_EQ(err["id"], json::parse(id)) << id;
  }
}

TEST(DecodeId, StringLengthCap) {
  auto ok = json{{"type", "ping"}, {"id", std::string(128, 'i')}};
  EXPECT_EQ(must_decode(ok.dump()).id, ok["id"].dump());
  auto too_long = json{{"type", "ping"}, {"id", std::string(129, 'i')}};
  expect_bad_request(too_long.dump());
}

TEST(DecodeId, WrongTypes) {
  expect_bad_request(R"({"type":"ping","id":1.5})");
  expect_bad_request(R"({"type":"ping","id":1.0})");
  expect_bad_request(R"({"type":"ping","id":1e3})");
  expect_bad_request(R"({"type":"ping","id":18446744073709551616})");
  expect_bad_request(R"({"type":"ping","id":{}})");
  expect_bad_request(R"({"type":"ping","id":{"n":1}})");
  expect_bad_request(R"({"type":"ping","id":[1]})");
  expect_bad_request(R"({"type":"ping","id":true})");
}

TEST(DecodeId, EchoedInErrorsItCaused) {
  EXPECT_EQ(must_fail(R"({"type":"join","id":7})").id, "7");
  EXPECT_EQ(must_fail(R"({"id":"x","type":"nope"})").id, R"("x")");
  EXPECT_EQ(must_fail(R"({"id":3})").id, "3");
  EXPECT_EQ(must_fail(R"({"type":"history","id":6,"room":"r","limit":0})").id, "6");
  // An unusable id cannot be echoed.
  EXPECT_EQ(must_fail(R"({"type":"ping","id":1.5})").id, "");
  EXPECT_EQ(must_fail(R"({"type":"ping","id":1,)").id, "");
}

// --- the object itself -----------------------------------------------------------------

TEST(DecodeRoot, MustBeAnObjectWithAKnownType) {
  expect_bad_request("[]");
  expect_bad_request(R"([{"type":"ping"}])");
  expect_bad_request("null");
  expect_bad_request("true");
  expect_bad_request("42");
  expect_bad_request(R"("ping")");
  expect_bad_request("{}");
  expect_bad_request(R"({"id":1})");
  expect_bad_request(R"({"type":null})");
  expect_bad_request(R"({"type":7})");
  expect_bad_request(R"({"type":["ping"]})");
  expect_bad_request(R"({"type":"nope"})");
  expect_bad_request(R"({"type":"PING"})");
  expect_bad_request(R"({"type":"ping "})");
  expect_bad_request(R"({"type":""})");
  expect_bad_request(R"({"type":"welcome"})");  // a server type is not a request
}

TEST(DecodeRoot, ErrorMessageStaysValidUtf8) {
  // The message quotes the unknown type, cut short: never in the middle of a character.
  for (size_t pad = 28; pad < 34; ++pad) {
    auto type = std::string(pad, 't') + kGrin + "\xC3\xA9" + kCjk;
    auto err = must_fail(json{{"type", type}}.dump());
    EXPECT_EQ(err.code, errc::bad_request);
    EXPECT_TRUE(valid_utf8(err.message)) << printable(err.message);
    auto j = parse_frame(encode_error(err.id, err.code, err.message));
    EXPECT_EQ(j["message"].get<std::string>(), err.message);  // nothing replaced on the way out
  }
}

TEST(DecodeRoot, UnknownFieldsIgnored) {
  auto r = must_decode(R"({"type":"join","room":"general","colour":"blue","x":[1,{"y":null}],)"
                       R"("since2":-5,"id2":1.5,"nested":{"deep":[[]]}})");
  EXPECT_EQ(r.type, req_type::join);
  EXPECT_EQ(r.room, "general");
  EXPECT_FALSE(r.has_since);
}

TEST(DecodeRoot, FieldsOfOtherTypesIgnored) {
  // A ping carrying a bad `text` is still a ping: only the type's own fields are checked.
  auto r = must_decode(R"({"type":"ping","text":5,"room":"no spaces allowed","limit":0})");
  EXPECT_EQ(r.type, req_type::ping);
  EXPECT_EQ(r.room, "");
}

TEST(DecodeRoot, MalformedJson) {
  const char* cases[] = {
      "",
      " ",
      "{",
      R"({"type":"ping")",
      R"({"type":"ping",})",
      R"({"type":'ping'})",
      R"({type:"ping"})",
      R"({"type":"ping"}x)",
      R"({"type":"ping"}{"type":"ping"})",
      R"({"type":"ping"} // comment)",
      R"({"type":"ping",/*c*/"id":1})",
      R"({"type":"ping","id":01})",
      R"({"type":"ping","id":NaN})",
      R"({"type":"ping","id":1e999})",
      R"({"type":"ping\x"})",
      R"({"type":"send","room":"r","text":"a)"
      "\n"
      R"(b"})",  // raw newline inside a string
  };
  for (const char* c : cases) expect_bad_request(c);
  // nlohmann stops at a raw NUL as if the input ended there: whatever follows must not be
  // silently dropped (a raw NUL is never valid JSON, inside a string or out).
  expect_bad_request(bytes("{\"type\":\"ping\"}\0"));
  expect_bad_request(bytes("{\"type\":\"ping\"}\0{\"type\":\"rooms\"}"));
  expect_bad_request(bytes("{\"type\":\"ping\"}\0\0\0garbage"));
  expect_bad_request(bytes("{\"type\":\"send\",\"room\":\"r\",\"text\":\"a\0b\"}"));
}

TEST(DecodeRoot, WhitespaceAroundTheObjectIsFine) {
  EXPECT_EQ(must_decode(" \t{\"type\":\"ping\"}\r").type, req_type::ping);
  EXPECT_EQ(must_decode("{ \"type\" : \"ping\" }").type, req_type::ping);
}

TEST(DecodeUtf8, InvalidInsideAStringRefused) {
  const char* bad[] = {
      "\xFF",                  // never valid
      "\xC3",                  // truncated two-byte sequence
      ("\xC3" "A"),            // bad continuation
      "\xC0\xAF",              // overlong '/'
      "\xE0\x80\xAF",          // overlong, three bytes
      "\xED\xA0\x80",          // raw surrogate U+D800 (CESU-8)
      "\xF4\x90\x80\x80",      // U+110000
      "\x80",                  // lone continuation byte
  };
  for (const char* b : bad) {
    auto text = std::string(R"({"type":"send","room":"r","text":"ok)") + b + R"("})";
    expect_bad_request(text);
    auto in_id = std::string(R"({"type":"ping","id":")") + b + R"("})";
    expect_bad_request(in_id);
    auto in_unknown = std::string(R"({"type":"ping","junk":")") + b + R"("})";
    expect_bad_request(in_unknown);
  }
  // Lone surrogates written as escapes are not valid either.
  expect_bad_request(R"({"type":"send","room":"r","text":"\ud800"})");
  expect_bad_request(R"({"type":"send","room":"r","text":"\udc00x"})");
  expect_bad_request(R"({"type":"send","room":"r","text":"\ud83d\u0041"})");
}

// --- text --------------------------------------------------------------------------------

TEST(DecodeText, LimitCountsCodePointsNotBytes) {
  auto max = repeat(kGrin, 4096);
  ASSERT_EQ(max.size(), 16384u);
  auto r = must_decode(send_text(max));
  EXPECT_EQ(r.text, max);
  auto err = must_fail(send_text(max + kGrin));
  EXPECT_EQ(err.code, errc::too_large);
  EXPECT_EQ(must_decode(send_text(std::string(4096, 'a'))).text.size(), 4096u);
  EXPECT_EQ(must_fail(send_text(std::string(4097, 'a'))).code, errc::too_large);
  // One grapheme of 4097 code points is still 4097 code points.
  EXPECT_EQ(must_fail(send_text("e" + repeat(kCombAcute, 4096))).code, errc::too_large);
}

TEST(DecodeText, LimitIsConfigurable) {
  limits lim;
  lim.max_text_chars = 3;
  EXPECT_EQ(must_decode(send_text(repeat(kGrin, 3)), lim).text, repeat(kGrin, 3));
  EXPECT_EQ(must_fail(send_text(repeat(kGrin, 4)), lim).code, errc::too_large);
}

TEST(DecodeText, PreservedByteForByte) {
  const std::string texts[] = {
      "e" + kCombAcute,                             // decomposed: not normalised to U+00E9
      "\xC3\xA9",                                   // precomposed stays precomposed
      kHebrew + " " + kArabic + kRlo + "abc",       // RTL and an override
      kCjk + kGrin + "\xE2\x80\x8D" + kGrin,        // CJK and a ZWJ sequence
      "\xEF\xBB\xBF" "bom inside",                  // U+FEFF is kept
      std::string("a\0b", 3),                       // NUL
      "tab\there\r\nline" + kLineSep + kParaSep,    // control and separators
      "quote\" backslash\\ slash/",
      "\x7F\xC2\x80\xC2\x9F",                       // DEL and C1 controls
      "\xF4\x8F\xBF\xBF",                           // U+10FFFF
  };
  for (const auto& t : texts) {
    auto r = must_decode(send_text(t));
    EXPECT_EQ(r.text, t) << printable(t);
    stored_msg m{"general", 1, 2, "alice", "Alice", r.text, "", ""};
    auto j = parse_frame(encode_message(m));
    EXPECT_EQ(j["text"].get<std::string>(), t) << printable(t);
  }
}

TEST(DecodeText, EscapesDecodeToUtf8) {
  auto r = must_decode(R"({"type":"send","room":"r","text":"a\u0000b\u00e9\ud83d\ude00\n"})");
  EXPECT_EQ(r.text, std::string("a\0b", 3) + "\xC3\xA9" + kGrin + "\n");
}

// --- data ----------------------------------------------------------------------------------

TEST(DecodeData, ObjectRoundTripsThroughEncodeMessage) {
  const char* data = R"({"z":1,"attachments":[{"url":"https://x/y?a=1&b=2","size":12.5}],)"
                     R"("fmt":{"bold":[0,4]},"s":"\u2028\n\u0000\"","e":{},"n":null,"t":true,)"
                     R"("big":18446744073709551615,"neg":-3,"f":1e-7})";
  auto text = std::string(R"({"type":"send","room":"r","text":"x","data":)") + data + "}";
  auto r = must_decode(text);
  stored_msg m{"r", 9, 1764090000123, "alice", "Alice", r.text, r.data, ""};
  auto j = parse_frame(encode_message(m));
  EXPECT_EQ(j["data"], json::parse(data));
  // And once more, as the server would after storing and loading it.
  EXPECT_EQ(json::parse(r.data), json::parse(data));
  EXPECT_EQ(r.data.find('\n'), std::string::npos);
}

TEST(DecodeData, EmptyObject) {
  auto r = must_decode(R"({"type":"send","room":"r","text":"x","data":{}})");
  EXPECT_EQ(r.data, "{}");
  auto j = parse_frame(encode_message(stored_msg{"r", 1, 1, "u", "U", "x", r.data, ""}));
  EXPECT_EQ(j["data"], json::object());
}

// --- nesting --------------------------------------------------------------------------------

TEST(DecodeNesting, DeepInputRefusedQuickly) {
  auto start = std::chrono::steady_clock::now();
  expect_bad_request(repeat("[", 10000) + repeat("]", 10000));
  expect_bad_request(repeat("[", 1000000));  // unbalanced as well
  auto deep_data = R"({"type":"send","room":"r","text":"x","data":)" + repeat(R"({"a":)", 10000) +
                   "1" + repeat("}", 10000) + "}";
  expect_bad_request(deep_data);
  auto deep_unknown = R"({"type":"ping","junk":)" + repeat("[", 100000) + repeat("]", 100000) + "}";
  expect_bad_request(deep_unknown);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(2));
}

TEST(DecodeNesting, LimitIncludesTheRootObject) {
  auto with_data_depth = [](size_t k) {  // data nested k levels: document depth k + 1
    return R"({"type":"send","room":"r","text":"x","data":)" + repeat(R"({"a":)", k) + "1" +
           repeat("}", k) + "}";
  };
  auto r = must_decode(with_data_depth(31));
  EXPECT_EQ(json_nesting_depth(r.data), 31u);
  expect_bad_request(with_data_depth(32));
}

TEST(DecodeNesting, BracketsInsideStringsDoNotCount) {
  auto r = must_decode(send_text(repeat("[", 4000) + repeat("{", 96)));
  EXPECT_EQ(r.text.size(), 4096u);
  r = must_decode(send_text(repeat("\"[", 2000)));  // escaped quotes do not end the string
  EXPECT_EQ(r.text.size(), 4000u);
}

// --- room names -------------------------------------------------------------------------

TEST(DecodeRoom, LengthAndCharacters) {
  EXPECT_EQ(must_decode(with_room("join", "a")).room, "a");
  EXPECT_EQ(must_decode(with_room("join", std::string(64, 'r'))).room, std::string(64, 'r'));
  expect_bad_request(with_room("join", std::string(65, 'r')));
  expect_bad_request(with_room("join", ""));
  // Every allowed character, in two names of at most 64.
  for (std::string name : {"ABCDEFGHIJKLMNOPQRSTUVWXYZ_-.:0123456789",
                           "abcdefghijklmnopqrstuvwxyz_-.:0123456789"})
    EXPECT_EQ(must_decode(with_room("join", name)).room, name);
  for (std::string name : {"team:eng", "a.b", "-", "_", ".", ":", "dm", "dmx:a:b", "v1.2-rc_3"})
    EXPECT_EQ(must_decode(with_room("join", name)).room, name);
}

TEST(DecodeRoom, RefusedCharacters) {
  const std::string refused[] = {"has space", "a/b",     "a\\b",   "caf\xC3\xA9", kCjk,
                                 "a#b",       "a@b",     "a+b",    "a,b",         "a\tb",
                                 "a\nb",      "a\"b",    "a*b",    "a%20b",       " a",
                                 "a ",        kGrin,     std::string("a\0b", 3)};
  for (const auto& name : refused) expect_bad_request(with_room("join", name));
}

TEST(DecodeRoom, DmNames) {
  // Well formed dm names pass the decoder; whether the user may use one is checked later.
  for (const char* type : {"join", "leave", "history", "presence", "typing"})
    EXPECT_EQ(must_decode(with_room(type, "dm:alice:bob")).room, "dm:alice:bob") << type;
  auto send = json{{"type", "send"}, {"room", "dm:alice:bob"}, {"text", "hi"}};
  EXPECT_EQ(must_decode(send.dump()).room, "dm:alice:bob");
  const char* refused[] = {"dm:bob:alice", "dm:a", "dm:a:b:c", "dm:", "dm::b", "dm:a:", "dm:::"};
  for (const char* name : refused) expect_bad_request(with_room("join", name));
}

// --- validate ---------------------------------------------------------------------------

std::string utf8_encode(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

TEST(Utf8CodePoints, ValidSequences) {
  EXPECT_EQ(code_points(""), 0u);
  EXPECT_EQ(code_points("abc"), 3u);
  EXPECT_EQ(code_points(std::string("\0", 1)), 1u);
  EXPECT_EQ(code_points("\xC3\xA9"), 1u);
  EXPECT_EQ(code_points(kCjk), 3u);
  EXPECT_EQ(code_points(kGrin + kGrin), 2u);
  EXPECT_EQ(code_points("e" + kCombAcute), 2u);
  // The edges of each length.
  for (uint32_t cp : {0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xD7FFu, 0xE000u, 0xFFFDu, 0xFFFFu, 0x10000u,
                      0x10FFFFu})
    EXPECT_EQ(code_points(utf8_encode(cp)), 1u) << std::hex << cp;
}

TEST(Utf8CodePoints, EveryScalarValueAndNoSurrogate) {
  size_t n = 0;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
    auto s = utf8_encode(cp);
    bool ok = utf8_code_points(s, n);
    if (ok != !surrogate || (ok && n != 1)) {
      ADD_FAILURE() << "U+" << std::hex << cp << " ok=" << ok;
      break;
    }
  }
}

TEST(Utf8CodePoints, InvalidSequences) {
  const std::string bad[] = {
      "\xC0\x80",          // overlong NUL
      "\xC1\xBF",          // overlong U+007F
      "\xE0\x80\x80",      // overlong, three bytes
      "\xE0\x9F\xBF",      // overlong U+07FF
      "\xF0\x80\x80\x80",  // overlong, four bytes
      "\xF0\x8F\xBF\xBF",  // overlong U+FFFF
      "\xED\xA0\x80",      // U+D800
      "\xED\xBF\xBF",      // U+DFFF
      "\xED\xA0\xBD\xED\xB8\x80",  // CESU-8 pair
      "\xF4\x90\x80\x80",  // U+110000
      "\xF7\xBF\xBF\xBF",  // U+1FFFFF
      "\xF8\x88\x80\x80\x80",      // five bytes
      "\xFC\x84\x80\x80\x80\x80",  // six bytes
      "\xFE",
      "\xFF",
      "\x80",              // lone continuation
      ("a\xBF" "b"),
      "\xC3",              // truncated
      "\xE2\x82",
      "\xF0\x9F\x98",
      "ok\xF0\x9F",
      ("\xC3" "A"),        // continuation missing
      "\xE2\x28\xA1",
      ("\xF0\x9F\x98" "A"),
  };
  for (const auto& b : bad) {
    size_t n = 99;
    EXPECT_FALSE(utf8_code_points(b, n)) << printable(b);
  }
}

TEST(Utf8CodePoints, AgreesWithNlohmannOnRandomBytes) {
  // nlohmann's strict dump refuses invalid UTF-8: an independent oracle.
  std::mt19937_64 rng(0xC0DEC);
  const unsigned char pool[] = {'a', 0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1,
                                0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
  for (int i = 0; i < 50000; ++i) {
    std::string s(rng() % 8, '\0');
    for (auto& c : s) c = static_cast<char>(pool[rng() % sizeof(pool)]);
    bool oracle = true;
    try {
      (void)json(s).dump();
    } catch (const json::type_error&) {
      oracle = false;
    }
    size_t n = 0;
    bool ok = utf8_code_points(s, n);
    ASSERT_EQ(ok, oracle) << printable(s);
    if (ok) {
      size_t leads = 0;
      for (char c : s) leads += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
      ASSERT_EQ(n, leads) << printable(s);
    }
  }
}

TEST(RoomName, Rules) {
  EXPECT_TRUE(valid_room_name("general"));
  EXPECT_TRUE(valid_room_name("a"));
  EXPECT_TRUE(valid_room_name(std::string(64, 'x')));
  EXPECT_FALSE(valid_room_name(std::string(65, 'x')));
  EXPECT_FALSE(valid_room_name(""));
  EXPECT_FALSE(valid_room_name("dm:alice:bob"));  // reserved: never a client-chosen name
  EXPECT_FALSE(valid_room_name("dm:"));
  EXPECT_TRUE(valid_room_name("dm"));
  EXPECT_FALSE(valid_room_name("caf\xC3\xA9"));
  EXPECT_FALSE(valid_room_name(std::string("a\0", 2)));
  for (int c = 0; c < 256; ++c) {
    char ch = static_cast<char>(c);
    bool allowed = std::isalnum(c) || ch == '_' || ch == '-' || ch == '.' || ch == ':';
    if (c >= 0x80) allowed = false;
    EXPECT_EQ(valid_room_name(std::string("r") + ch), allowed) << c;
  }
}

TEST(DmRoom, NameSortsTheUsers) {
  EXPECT_EQ(dm_room_name("alice", "bob"), "dm:alice:bob");
  EXPECT_EQ(dm_room_name("bob", "alice"), "dm:alice:bob");
  EXPECT_EQ(dm_room_name("al", "alice"), "dm:al:alice");
  EXPECT_EQ(dm_room_name("alice", "al"), "dm:al:alice");
  EXPECT_EQ(dm_room_name("bob", "Zed"), "dm:Zed:bob");  // bytewise: uppercase first
  EXPECT_EQ(dm_room_name("\xC3\xA9mile", "zoe"), "dm:zoe:\xC3\xA9mile");  // high bytes last
  EXPECT_EQ(dm_room_name("same", "same"), "dm:same:same");
}

TEST(DmRoom, ParseIsTheInverseOfName) {
  std::string a, b;
  EXPECT_TRUE(parse_dm_room("dm:alice:bob", a, b));
  EXPECT_EQ(a, "alice");
  EXPECT_EQ(b, "bob");
  const char* refused[] = {"dm:bob:alice", "dm:a", "dm:a:b:c", "dm:", "dm::b", "dm:a:", "general",
                           "DM:a:b", "xdm:a:b", ""};
  for (const char* r : refused) EXPECT_FALSE(parse_dm_room(r, a, b)) << r;
  // Names made by dm_room_name always parse back, whatever the users (no ':' in user ids).
  const char* users[] = {"alice", "bob", "Zed", "\xC3\xA9mile", "zoe", kCjk.c_str(), "a b", "0"};
  for (const char* x : users) {
    for (const char* y : users) {
      auto name = dm_room_name(x, y);
      ASSERT_TRUE(parse_dm_room(name, a, b)) << name;
      EXPECT_EQ(dm_room_name(a, b), name);
      EXPECT_TRUE((a == x && b == y) || (a == y && b == x));
      EXPECT_LE(a, b);
    }
  }
  EXPECT_TRUE(is_dm_room("dm:a:b"));
  EXPECT_TRUE(is_dm_room("dm:"));
  EXPECT_FALSE(is_dm_room("dm"));
  EXPECT_FALSE(is_dm_room("general"));
}

TEST(NestingDepth, CountsOnlyStructure) {
  EXPECT_EQ(json_nesting_depth(""), 0u);
  EXPECT_EQ(json_nesting_depth("42"), 0u);
  EXPECT_EQ(json_nesting_depth("{}"), 1u);
  EXPECT_EQ(json_nesting_depth("[[]]"), 2u);
  EXPECT_EQ(json_nesting_depth(R"({"a":[1,{"b":[]}],"c":{}})"), 4u);
  EXPECT_EQ(json_nesting_depth(R"([[],[],[]])"), 2u);
  EXPECT_EQ(json_nesting_depth(R"({"a":"[[[[{{{{"})"), 1u);
  EXPECT_EQ(json_nesting_depth(R"({"a":"\"[[[["})"), 1u);       // escaped quote stays inside
  EXPECT_EQ(json_nesting_depth(R"({"a":"\\","b":[[]]})"), 3u);  // escaped backslash ends
  EXPECT_EQ(json_nesting_depth(R"({"a\"[":"]\\\"{"})"), 1u);
  EXPECT_EQ(json_nesting_depth(R"(["\u005b["])"), 1u);          // an escaped '[' is text
  EXPECT_EQ(json_nesting_depth("]]]}[["), 2u);                   // closers never underflow
  EXPECT_EQ(json_nesting_depth(repeat("[", 100000)), 100000u);
}

// --- encoders --------------------------------------------------------------------------------

const std::string kNasty = std::string("a\nb\rc") + kLineSep + kParaSep + "\t\"\\" +
                           std::string("\0\x01\x1F\x7F", 4) + kGrin + "\xC3\xA9" + kRlo;

TEST(Encode, Welcome) {
  auto j = parse_frame(encode_welcome("1", "alice", "Alice", "s-1", "node-a", 25));
  EXPECT_EQ(keys_of(j),
            (std::set<std::string>{"type", "id", "user", "name", "session", "node", "heartbeat",
                                   "protocol"}));
  EXPECT_EQ(j["type"], "welcome");
  EXPECT_EQ(j["protocol"], 2);
  EXPECT_EQ(j["id"], 1);
  EXPECT_EQ(j["user"], "alice");
  EXPECT_EQ(j["name"], "Alice");
  EXPECT_EQ(j["session"], "s-1");
  EXPECT_EQ(j["node"], "node-a");
  EXPECT_EQ(j["heartbeat"], 25);
  j = parse_frame(encode_welcome("", kNasty, kNasty, "s", "n", 0));
  EXPECT_EQ(j.count("id"), 0u);
  EXPECT_EQ(j["user"].get<std::string>(), kNasty);
}

TEST(Encode, Error) {
  auto j = parse_frame(encode_error("5", errc::too_large, "text is " + kNasty));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "id", "code", "message"}));
  EXPECT_EQ(j["type"], "error");
  EXPECT_EQ(j["id"], 5);
  EXPECT_EQ(j["code"], "too_large");
  EXPECT_EQ(j["message"].get<std::string>(), "text is " + kNasty);
  j = parse_frame(encode_error("", errc::unauthorized, "no"));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "code", "message"}));
  j = parse_frame(encode_error(R"("abc")", errc::forbidden, ""));
  EXPECT_EQ(j["id"], "abc");
}

TEST(Encode, JoinedRecoveredStates) {
  std::vector<member_info> members{{"alice", "Alice"}, {"bob", kNasty}};
  const std::set<std::string> base{"type", "id",      "room",    "seq",
                                   "epoch", "member_count", "members", "first_seq"};
  auto j = parse_frame(encode_joined("3", "general", 41, "e1", 2, members, -1, 1));
  EXPECT_EQ(keys_of(j), base);
  EXPECT_EQ(j["type"], "joined");
  EXPECT_EQ(j["id"], 3);
  EXPECT_EQ(j["room"], "general");
  EXPECT_EQ(j["seq"], 41);
  EXPECT_EQ(j["epoch"], "e1");
  EXPECT_EQ(j["member_count"], 2);
  EXPECT_EQ(j["first_seq"], 1);
  ASSERT_EQ(j["members"].size(), 2u);
  EXPECT_EQ(j["members"][0], (json{{"user", "alice"}, {"name", "Alice"}}));
  EXPECT_EQ(j["members"][1]["name"].get<std::string>(), kNasty);
  auto with_recovered = base;
  with_recovered.insert("recovered");
  j = parse_frame(encode_joined("3", "general", 41, "e1", 2, members, 0, 1));
  EXPECT_EQ(keys_of(j), with_recovered);
  EXPECT_EQ(j["recovered"], false);
  j = parse_frame(encode_joined("3", "general", 41, "e1", 2, members, 1, 1));
  EXPECT_EQ(j["recovered"], true);
  // A new room: seq 0 and no members listed beyond the caller's choice.
  j = parse_frame(encode_joined("", "fresh", 0, "e", 0, {}, -1, 1));
  EXPECT_EQ(j.count("id"), 0u);
  EXPECT_EQ(j["seq"], 0);
  EXPECT_EQ(j["members"], json::array());
}

TEST(Encode, LeftAckPong) {
  auto j = parse_frame(encode_left("4", "general"));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "id", "room"}));
  EXPECT_EQ(j["type"], "left");
  EXPECT_EQ(j["room"], "general");
  j = parse_frame(encode_ack("5", "dm:alice:bob", 42, 1764090000123));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "id", "room", "seq", "ts"}));
  EXPECT_EQ(j["type"], "ack");
  EXPECT_EQ(j["room"], "dm:alice:bob");
  EXPECT_EQ(j["seq"], 42);
  EXPECT_EQ(j["ts"], 1764090000123);
  j = parse_frame(encode_ack("5", "r", UINT64_MAX, -1));
  EXPECT_EQ(j["seq"].get<uint64_t>(), UINT64_MAX);
  EXPECT_EQ(j["ts"], -1);
  EXPECT_EQ(parse_frame(encode_pong("")), (json{{"type", "pong"}}));
  EXPECT_EQ(parse_frame(encode_pong("9")), (json{{"type", "pong"}, {"id", 9}}));
}

TEST(Encode, Message) {
  stored_msg m{"general", 42, 1764090000123, "alice", "Alice", "hi " + kNasty,
               R"({"k":[1,"\n"]})", "key-not-sent"};
  auto out = encode_message(m);
  auto j = parse_frame(out);
  EXPECT_EQ(keys_of(j),
            (std::set<std::string>{"type", "room", "seq", "ts", "from", "name", "text", "data"}));
  EXPECT_EQ(j["type"], "message");
  EXPECT_EQ(j["room"], "general");
  EXPECT_EQ(j["seq"], 42);
  EXPECT_EQ(j["ts"], 1764090000123);
  EXPECT_EQ(j["from"], "alice");
  EXPECT_EQ(j["name"], "Alice");
  EXPECT_EQ(j["text"].get<std::string>(), "hi " + kNasty);
  EXPECT_EQ(j["data"], json::parse(m.data));
  EXPECT_EQ(out.find("key-not-sent"), std::string::npos);
  // UTF-8 goes out raw, not as \u escapes (byte for byte).
  EXPECT_NE(out.find(kGrin), std::string::npos);
  m.data.clear();
  j = parse_frame(encode_message(m));
  EXPECT_EQ(j.count("data"), 0u);
}

TEST(Encode, HistoryKeepsOrder) {
  std::vector<stored_msg> msgs;
  for (uint64_t s = 10; s < 15; ++s)
    msgs.push_back(stored_msg{"general", s, static_cast<int64_t>(1000 + s), "u", "U",
                              "m" + std::to_string(s) + "\n", s % 2 ? R"({"odd":true})" : "", ""});
  auto j = parse_frame(encode_history("6", "general", msgs, true, 3));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "id", "room", "messages", "more",
                                               "first_seq"}));
  EXPECT_EQ(j["type"], "history");
  EXPECT_EQ(j["id"], 6);
  EXPECT_EQ(j["more"], true);
  EXPECT_EQ(j["first_seq"], 3);
  ASSERT_EQ(j["messages"].size(), msgs.size());
  for (size_t i = 0; i < msgs.size(); ++i) {
    EXPECT_EQ(j["messages"][i]["seq"], msgs[i].seq);
    EXPECT_EQ(j["messages"][i]["text"], msgs[i].text);
    EXPECT_EQ(j["messages"][i]["type"], "message");
    EXPECT_EQ(j["messages"][i].count("data"), msgs[i].data.empty() ? 0u : 1u);
  }
  j = parse_frame(encode_history("", "general", {}, false, 1));
  EXPECT_EQ(j["messages"], json::array());
  EXPECT_EQ(j["more"], false);
  EXPECT_EQ(j.count("id"), 0u);
}

TEST(Encode, PresenceTypingRooms) {
  auto j = parse_frame(encode_presence("7", "general", {{"alice", "Alice"}, {"bob", "Bob"}}));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "id", "room", "members"}));
  EXPECT_EQ(j["type"], "presence");
  EXPECT_EQ(j["members"][1], (json{{"user", "bob"}, {"name", "Bob"}}));
  j = parse_frame(encode_typing("general", "alice", "Alice"));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "room", "user", "name"}));
  EXPECT_EQ(j["type"], "typing");
  EXPECT_EQ(j["user"], "alice");
  j = parse_frame(encode_rooms("9", {"general", "dm:alice:bob", kNasty}));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "id", "rooms"}));
  EXPECT_EQ(j["rooms"], (json{"general", "dm:alice:bob", kNasty}));
  EXPECT_EQ(parse_frame(encode_rooms("", {}))["rooms"], json::array());
}

TEST(Encode, MemberEventsAndPresenceDiff) {
  auto j = parse_frame(encode_member_event("member_joined", "general", {"alice", "Alice"}));
  EXPECT_EQ(j, (json{{"type", "member_joined"}, {"room", "general"}, {"user", "alice"},
                     {"name", "Alice"}}));
  j = parse_frame(encode_member_event("member_left", "general", {"bob", kNasty}));
  EXPECT_EQ(j["type"], "member_left");
  EXPECT_EQ(j["name"].get<std::string>(), kNasty);
  j = parse_frame(encode_presence_diff("big", {{"a", "A"}, {"b", "B"}}, {{"c", "C"}}));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "room", "joins", "leaves"}));
  EXPECT_EQ(j["type"], "presence_diff");
  EXPECT_EQ(j["joins"].size(), 2u);
  EXPECT_EQ(j["leaves"][0]["user"], "c");
  j = parse_frame(encode_presence_diff("big", {}, {}));
  EXPECT_EQ(j["joins"], json::array());
  EXPECT_EQ(j["leaves"], json::array());
  // At the limit: complete, no totals.
  j = parse_frame(encode_presence_diff("big", {{"a", "A"}, {"b", "B"}}, {{"c", "C"}}, 2, 10));
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"type", "room", "joins", "leaves"}));
  // Over it: the first `listed` of each, the totals and the member count.
  j = parse_frame(encode_presence_diff("big", {{"a", "A"}, {"b", "B"}, {"d", "D"}}, {{"c", "C"}}, 2, 10));
  EXPECT_EQ(j["joins"].size(), 2u);
  EXPECT_EQ(j["leaves"].size(), 1u);
  EXPECT_EQ(j["joins_count"], 3);
  EXPECT_EQ(j["leaves_count"], 1);
  EXPECT_EQ(j["member_count"], 10);
  EXPECT_EQ(j["truncated"], true);
}

TEST(Encode, ControlCharactersEscaped) {
  std::string all_controls;
  for (int c = 0; c < 0x20; ++c) all_controls.push_back(static_cast<char>(c));
  auto out = encode_message(stored_msg{"r", 1, 1, "u", "U", all_controls, "", ""});
  auto j = parse_frame(out);  // checks no raw byte < 0x20
  EXPECT_EQ(j["text"].get<std::string>(), all_controls);
  EXPECT_NE(out.find("\\n"), std::string::npos);
  EXPECT_NE(out.find("\\r"), std::string::npos);
  EXPECT_NE(out.find("\\u0000"), std::string::npos);
}

TEST(JsonQuote, KeepsUtf8AndNeverThrows) {
  EXPECT_EQ(json_quote("abc"), R"("abc")");
  EXPECT_EQ(json_quote("\xC3\xA9" + kGrin), "\"\xC3\xA9" + kGrin + "\"");
  EXPECT_EQ(json_quote("a\"b\\c\n"), R"("a\"b\\c\n")");
  EXPECT_EQ(json_quote(std::string("\0", 1)), R"("\u0000")");
  EXPECT_EQ(json_quote(kLineSep), "\"" + kLineSep + "\"");
  // Invalid UTF-8 cannot reach an encoder through the decoder; if it does, it is replaced.
  EXPECT_EQ(json::parse(json_quote("a\xFF" "b")).get<std::string>(), "a\xEF\xBF\xBD" "b");
}

TEST(SplitFrame, SplitsOnNewlineAndSkipsEmptyPieces) {
  auto split = [](std::string_view frame) {
    std::vector<std::string> pieces;
    split_frame(frame, [&](std::string_view p) { pieces.emplace_back(p); });
    return pieces;
  };
  using v = std::vector<std::string>;
  EXPECT_EQ(split(""), v{});
  EXPECT_EQ(split("\n"), v{});
  EXPECT_EQ(split("\n\n\n"), v{});
  EXPECT_EQ(split(" \r\n\t\n"), v{});
  EXPECT_EQ(split("a"), v{"a"});
  EXPECT_EQ(split("a\n"), v{"a"});
  EXPECT_EQ(split("\na"), v{"a"});
  EXPECT_EQ(split("a\nb"), (v{"a", "b"}));
  EXPECT_EQ(split("a\n\n\nb\n"), (v{"a", "b"}));
  EXPECT_EQ(split("a\r\nb\r\n"), (v{"a\r", "b\r"}));  // the JSON parser accepts the '\r'
  EXPECT_EQ(split(" a \n"), v{" a "});
  // Encoder output batched by the server splits back into the same objects.
  std::vector<std::string> frames{
      encode_message(stored_msg{"r", 1, 1, "u", "U", kNasty, R"({"x":"\n"})", ""}),
      encode_ack("1", "r", 1, 1), encode_pong(R"("p")"), encode_error("", errc::internal, kNasty)};
  std::string batch;
  for (const auto& f : frames) batch.append(f).push_back('\n');
  EXPECT_EQ(split(batch), frames);
}

TEST(SplitFrame, ClientBatchDecodes) {
  std::string batch = "{\"type\":\"ping\",\"id\":1}\r\n\n{\"type\":\"join\",\"room\":\"a\"}\n";
  std::vector<req_type> types;
  split_frame(batch, [&](std::string_view piece) { types.push_back(must_decode(piece).type); });
  EXPECT_EQ(types, (std::vector<req_type>{req_type::ping, req_type::join}));
}

// --- fuzz ----------------------------------------------------------------------------------

// Checks a successful decode against the protocol rules and through the matching encoder.
// Returns "" when everything holds, else what failed.
std::string check_decoded(const client_req& r, const limits& lim) {
  auto is_room = [](const std::string& room) {
    std::string a, b;
    return valid_room_name(room) || parse_dm_room(room, a, b);
  };
  auto frame_ok = [](const std::string& frame) {
    for (char c : frame)
      if (static_cast<unsigned char>(c) < 0x20) return false;
    auto j = json::parse(frame, nullptr, false);
    return !j.is_discarded() && j.is_object();
  };
  if (!r.id.empty()) {
    auto id = json::parse(r.id, nullptr, false);
    if (id.is_discarded() || !(id.is_number_integer() || id.is_string())) return "bad id";
    if (id.is_string() && id.get_ref<const std::string&>().size() > lim.max_id) return "long id";
  }
  for (const auto* s : {&r.token, &r.name, &r.room, &r.epoch, &r.text, &r.idem_key, &r.to})
    if (!valid_utf8(*s)) return "invalid UTF-8 in a field";
  const bool moderation = r.type == req_type::role || r.type == req_type::kick ||
                          r.type == req_type::ban || r.type == req_type::unban ||
                          r.type == req_type::mute || r.type == req_type::unmute;
  const bool has_room = r.type == req_type::join || r.type == req_type::leave ||
                        r.type == req_type::send || r.type == req_type::history ||
                        r.type == req_type::presence || r.type == req_type::typing ||
                        r.type == req_type::edit || r.type == req_type::del ||
                        r.type == req_type::react || r.type == req_type::read ||
                        r.type == req_type::part || r.type == req_type::search ||
                        r.type == req_type::room_set || r.type == req_type::room ||
                        r.type == req_type::invite || moderation;
  if (has_room != !r.room.empty()) return "room set for the wrong type";
  const bool has_target =
      r.type == req_type::edit || r.type == req_type::del || r.type == req_type::react;
  if (!has_target && r.type != req_type::read && r.seq != 0) return "seq set for the wrong type";
  if (has_target && r.seq == 0) return "no target seq";
  if ((r.type == req_type::react) != !r.emoji.empty()) return "emoji set for the wrong type";
  if (r.type == req_type::react && !valid_emoji(r.emoji)) return "bad emoji";
  if (r.mentions.size() > max_mentions) return "too many mentions";
  if (has_room && !is_room(r.room)) return "bad room " + r.room;
  const bool has_text =
      r.type == req_type::send || r.type == req_type::dm || r.type == req_type::edit;
  if ((r.type == req_type::invite || moderation) != !r.user.empty()) return "user set for the wrong type";
  if (!r.reason.empty() && r.type != req_type::kick && r.type != req_type::ban &&
      r.type != req_type::mute)
    return "reason set for the wrong type";
  if ((r.type == req_type::room_set) != (r.set != 0)) return "settings set for the wrong type";
  if (r.type == req_type::del || r.type == req_type::react || r.type == req_type::room_set ||
      moderation) {
    if (!r.text.empty() || !r.data.empty()) return "text set for the wrong type";
    if (r.idem_key.size() > lim.max_idem_key) return "long idempotency_key";
  } else if (has_text) {
    size_t n = 0;
    if (!utf8_code_points(r.text, n) || n == 0 || n > lim.max_text_chars) return "bad text";
    if (r.idem_key.size() > lim.max_idem_key) return "long idempotency_key";
    if (!r.data.empty()) {
      auto d = json::parse(r.data, nullptr, false);
      if (d.is_discarded() || !d.is_object()) return "data not an object";
    }
  } else if (!r.text.empty() || !r.data.empty() || !r.idem_key.empty()) {
    return "text set for the wrong type";
  }
  if (r.type == req_type::dm && (r.to.empty() || r.to.size() > 256)) return "bad to";
  if (r.type != req_type::dm && !r.to.empty()) return "to set for the wrong type";
  const bool paged = r.type == req_type::history || r.type == req_type::search;
  if (paged && (r.limit < 1 || r.limit > lim.max_history)) return "bad limit";
  if (!paged && (r.before != 0 || r.limit != 50)) return "stray history";
  if ((r.type == req_type::search) != !r.query.empty()) return "query set for the wrong type";
  if (r.type != req_type::join && (r.has_since || !r.epoch.empty())) return "stray since";
  // The matching encoders.
  std::vector<std::string> frames;
  stored_msg m{r.room, 1, 1764090000123, "alice", "Alice", r.text, r.data, r.idem_key};
  switch (r.type) {
    case req_type::hello:
      frames.push_back(encode_welcome(r.id, r.name, r.token, "s", "n", 25));
      break;
    case req_type::refresh:
      frames.push_back(encode_error(r.id, errc::token_expired, r.token));
      break;
    case req_type::join:
      frames.push_back(encode_joined(r.id, r.room, r.since, r.epoch, 1, {{"alice", "Alice"}},
                                     r.has_since ? 1 : -1, 1));
      break;
    case req_type::leave:
      frames.push_back(encode_left(r.id, r.room));
      break;
    case req_type::send:
      frames.push_back(encode_ack(r.id, r.room, 1, 1));
      frames.push_back(encode_message(m));
      break;
    case req_type::history:
      frames.push_back(encode_history(r.id, r.room, {m, m}, r.before > 1, r.limit));
      break;
    case req_type::presence:
      frames.push_back(encode_presence(r.id, r.room, {{"alice", "Alice"}}));
      break;
    case req_type::typing:
      frames.push_back(encode_typing(r.room, "alice", "Alice"));
      break;
    case req_type::dm:
      m.room = dm_room_name("alice", r.to);
      frames.push_back(encode_ack(r.id, m.room, 1, 1));
      frames.push_back(encode_message(m));
      frames.push_back(encode_member_event("member_joined", m.room, {r.to, r.to}));
      break;
    case req_type::rooms:
      frames.push_back(encode_rooms(r.id, {"general"}));
      break;
    case req_type::ping:
      frames.push_back(encode_pong(r.id));
      break;
    case req_type::edit:
      m.kind = event_kind::edited;
      m.target = r.seq;
      frames.push_back(encode_ack(r.id, r.room, 2, 1));
      frames.push_back(encode_message(m));
      break;
    case req_type::read:
    case req_type::part:
      frames.push_back(encode(read_msg{0, r.id, r.room, r.seq}));
      frames.push_back(encode(left_msg{0, r.id, r.room, true}));
      break;
    case req_type::my_rooms:
      frames.push_back(encode(my_rooms_msg{0, r.id, {{"r", member_role::owner, 3, 1, 2}}}));
      break;
    case req_type::search:
      frames.push_back(encode(history_page{0, r.id, r.room, {m}, true, 1, true, true}));
      break;
    case req_type::del:
    case req_type::react:
      m.kind = r.type == req_type::del ? event_kind::deleted : event_kind::reaction;
      m.target = r.seq;
      m.emoji = r.emoji;
      frames.push_back(encode_noop_ack(r.id, r.room));
      frames.push_back(encode_message(m));
      break;
    case req_type::room_set: {
      if (r.set == 0) return "room_set without a setting";
      m.kind = event_kind::moderation;
      m.text = "settings";
      m.data = encode_settings_detail(r.settings);
      frames.push_back(encode_ack(r.id, r.room, 2, 1));
      frames.push_back(encode_message(m));
      auto j = json::parse(frames.back());
      if ((r.set & settings_topic) && !r.settings.topic.empty() &&
          j["settings"]["topic"] != r.settings.topic)
        return "topic changed on the way out";
      break;
    }
    case req_type::room:
      frames.push_back(encode(room_info{0, r.id, r.room, {"a topic", true, false, 5}, 3, 2}));
      break;
    case req_type::invite:
      frames.push_back(encode(ack_msg{0, r.id, r.room, 0, 0}));
      frames.push_back(encode_invited(r.room, r.user));
      break;
    case req_type::role:
    case req_type::kick:
    case req_type::ban:
    case req_type::unban:
    case req_type::mute:
    case req_type::unmute: {
      m.kind = event_kind::moderation;
      m.text = to_string(r.type);
      m.data = encode_moderation_detail(r.user, r.seconds ? 1764090000123 : 0, r.reason,
                                        r.type == req_type::role ? to_string(r.role) : nullptr);
      frames.push_back(encode_ack(r.id, r.room, 2, 1));
      frames.push_back(encode_message(m));
      frames.push_back(encode_kicked(r.room, r.user, r.reason, r.type == req_type::ban, 5));
      auto j = json::parse(frames[1]);
      if (j["user"] != r.user || j["action"] != to_string(r.type)) return "moderation event lost its user";
      if (!r.reason.empty() && j["reason"] != r.reason) return "reason changed on the way out";
      break;
    }
  }
  for (const auto& f : frames)
    if (!frame_ok(f)) return "encoder output not one JSON object: " + f;
  if (has_text) {
    auto j = json::parse(frames[1]);
    if (j["text"].get_ref<const std::string&>() != r.text) return "text changed on the way out";
    if (!r.data.empty() && j["data"] != json::parse(r.data)) return "data changed on the way out";
  }
  return "";
}

std::string check_failed_cheap(const decode_error& err) {
  if (err.code != errc::bad_request && err.code != errc::too_large) return "unexpected code " + std::string(to_string(err.code));
  if (err.message.empty()) return "empty message";
  if (!valid_utf8(err.message)) return "message is not valid UTF-8";
  return "";
}

std::string check_failed(const decode_error& err) {
  auto cheap = check_failed_cheap(err);
  if (!cheap.empty()) return cheap;
  if (!err.id.empty()) {
    auto id = json::parse(err.id, nullptr, false);
    if (id.is_discarded() || !(id.is_number_integer() || id.is_string())) return "bad err.id";
  }
  auto out = encode_error(err.id, err.code, err.message);
  auto j = json::parse(out, nullptr, false);
  if (j.is_discarded() || out.find('\n') != std::string::npos) return "bad error frame";
  if (j["message"].get_ref<const std::string&>() != err.message) return "message altered";
  return "";
}

std::vector<std::string> fuzz_corpus() {
  return {
      R"({"type":"hello","id":1,"token":"eyJhbGciOiJIUzI1NiJ9.e30.c2ln"})",
      R"({"type":"hello","id":"h","name":"alice"})",
      R"({"type":"refresh","id":2,"token":"t.t.t"})",
      R"({"type":"join","id":3,"room":"general"})",
      R"({"type":"join","id":3,"room":"general","since":37,"epoch":"e1"})",
      R"({"type":"join","room":"dm:alice:bob","since":0})",
      R"({"type":"leave","id":4,"room":"general"})",
      R"({"type":"send","id":5,"room":"general","text":"hi \ud83d\udc4b","idempotency_key":"k1"})",
      "{\"type\":\"send\",\"id\":\"s\",\"room\":\"a.b-c_d:e\",\"text\":\"" + kGrin + kCjk + "e" +
          kCombAcute + "\\u0000\\n\",\"data\":{\"a\":[1,2.5,{\"b\":null}],\"c\":\"x\\\"y\"}}",
      R"({"type":"history","id":6,"room":"general","before":42,"limit":50})",
      R"({"type":"history","room":"general","limit":100})",
      R"({"type":"presence","id":7,"room":"general"})",
      R"({"type":"typing","room":"general"})",
      R"({"type":"dm","id":8,"to":"bob","text":"psst","data":{}})",
      R"({"type":"rooms","id":9})",
      R"({"type":"ping"})",
  };
}

std::vector<std::string> fuzz_tokens() {
  return {"\"", "[", "]", "{", "}", "\\", "\\u", "\\ud800", "\\udc00", "\\u0000", ",", ":",
          "\xC3", "\xA9", "\xED\xA0\x80", "\xC0\xAF", kGrin, "\xFF", "\x80", "0", "-1", "1.5",
          "1e999", "18446744073709551616", "null", "true", "\n", std::string(1, '\0'), " ",
          "\"room\":\"dm:a:b\"", "\"text\":\"\"", "\"data\":[]", "\"limit\":0", "\"id\":{}",
          "\"type\":\"send\"", "\"type\":\"dm\"", "\"type\":\"history\""};
}

TEST(CodecFuzz, DecodeNeverCrashesAndKeepsItsPromises) {
  std::mt19937_64 rng(20240607);
  const auto corpus = fuzz_corpus();
  const auto tokens = fuzz_tokens();
  limits small;  // tight limits reach the too_large paths more often
  small.max_text_chars = 8;
  small.max_idem_key = 4;
  small.max_id = 4;
  small.max_depth = 3;
  small.max_history = 10;
  size_t accepted = 0, thrown = 0, violations = 0;
  std::vector<std::string> examples;
  auto note = [&](const std::string& input, const std::string& what) {
    ++violations;
    if (examples.size() < 5) examples.push_back(what + " <- " + printable(input));
  };
  // Every corpus entry is itself valid.
  for (const auto& c : corpus) must_decode(c);
  const int iterations = 200000;
  auto start = std::chrono::steady_clock::now();
  auto cpu_start = std::clock();
  for (int i = 0; i < iterations; ++i) {
    std::string in;
    if (i % 10 == 0) {
      in.resize(rng() % 64);
      for (auto& c : in) c = static_cast<char>(rng());
    } else {
      in = corpus[rng() % corpus.size()];
      // Mostly one mutation, so that enough inputs stay valid to reach the success paths.
      for (int k = rng() % 2 ? 1 : 2 + static_cast<int>(rng() % 3); k > 0; --k) {
        size_t pos = in.empty() ? 0 : rng() % (in.size() + 1);
        switch (rng() % 7) {
          case 0:
            if (!in.empty()) in[rng() % in.size()] ^= static_cast<char>(1u << (rng() % 8));
            break;
          case 1:
            if (!in.empty()) in[rng() % in.size()] = static_cast<char>(rng());
            break;
          case 2:
            in.resize(pos);
            break;
          case 3:
          case 4:
            in.insert(pos, tokens[rng() % tokens.size()]);
            break;
          case 5:
            in.erase(pos, rng() % 8);
            break;
          case 6: {  // splice the tail of another request
            const auto& other = corpus[rng() % corpus.size()];
            in = in.substr(0, pos) + other.substr(rng() % other.size());
            break;
          }
        }
      }
    }
    const limits& lim = (i % 4 == 3) ? small : limits{};
    client_req req;
    decode_error err;
    bool ok = false;
    try {
      ok = decode_request(in, lim, req, err);
    } catch (...) {
      ++thrown;
      note(in, "threw");
      continue;
    }
    try {
      // The full error check parses a frame: every fourth failure is plenty.
      auto problem = ok ? check_decoded(req, lim) : (i % 4 ? check_failed_cheap(err)
                                                             : check_failed(err));
      if (!problem.empty()) note(in, problem);
    } catch (const std::exception& e) {
      note(in, std::string("checking threw ") + e.what());
    }
    accepted += ok;
  }
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto cpu_secs = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  EXPECT_EQ(thrown, 0u);
  EXPECT_EQ(violations, 0u) << [&] {
    std::string all;
    for (const auto& e : examples) all += "\n  " + e;
    return all;
  }();
  // The mutations must leave enough valid requests to test the success paths at all.
  EXPECT_GT(accepted, static_cast<size_t>(iterations / 20));
  RecordProperty("accepted", static_cast<int>(accepted));
  std::printf("[   INFO   ] %d inputs, %zu accepted, %.2f s (%.2f s CPU)\n", iterations, accepted,
              secs, cpu_secs);
}

}  // namespace
}  // namespace chat
