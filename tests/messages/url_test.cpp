// ws:// and wss:// URLs as chat-cli and chat-bench take them (messages/url.hpp).
#include "messages/url.hpp"

#include <gtest/gtest.h>

#include <set>

#include "messages/random.hpp"

namespace chat {
namespace {

ws_url must_parse(const std::string& text) {
  ws_url u;
  std::string err;
  EXPECT_TRUE(parse_ws_url(text, u, err)) << text << ": " << err;
  return u;
}

std::string must_fail(const std::string& text) {
  ws_url u;
  std::string err;
  EXPECT_FALSE(parse_ws_url(text, u, err)) << text;
  EXPECT_FALSE(err.empty()) << text;
  return err;
}

TEST(WsUrl, SchemeHostPortPath) {
  auto u = must_parse("ws://127.0.0.1:8080/ws");
  EXPECT_EQ(u.scheme, "ws");
  EXPECT_FALSE(u.secure());
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 8080);
  EXPECT_EQ(u.path, "/ws");
  EXPECT_EQ(u.authority(), "127.0.0.1:8080");

  u = must_parse("wss://chat.example.org/chat/ws?room=general");
  EXPECT_EQ(u.scheme, "wss");
  EXPECT_TRUE(u.secure());
  EXPECT_EQ(u.host, "chat.example.org");
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(u.path, "/chat/ws?room=general");
}

TEST(WsUrl, DefaultsForWhatIsLeftOut) {
  auto u = must_parse("ws://localhost");
  EXPECT_EQ(u.port, 80);
  EXPECT_EQ(u.path, "/ws");
  EXPECT_EQ(must_parse("ws://h:9000").path, "/ws");
  EXPECT_EQ(must_parse("ws://h:").port, 80);  // an empty port is the default (RFC 3986)
  EXPECT_EQ(must_parse("ws://h/").path, "/");
  EXPECT_EQ(must_parse("ws://h?token=x").path, "/ws?token=x");
  EXPECT_EQ(must_parse("ws://h/a#frag").path, "/a");
  EXPECT_EQ(must_parse("ws://h#frag").path, "/ws");
  EXPECT_EQ(must_parse("WSS://H:1/x").scheme, "wss");  // the scheme is case-insensitive
  EXPECT_EQ(must_parse("WSS://H:1/x").host, "H");
}

TEST(WsUrl, Ipv6LiteralsKeepTheirColonsOutOfThePort) {
  auto u = must_parse("ws://[::1]:8081/ws");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 8081);
  EXPECT_EQ(u.authority(), "[::1]:8081");
  u = must_parse("wss://[2001:db8::7]/x");
  EXPECT_EQ(u.host, "2001:db8::7");
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(must_parse("ws://[fe80::1]:").port, 80);
}

TEST(WsUrl, PortBounds) {
  EXPECT_EQ(must_parse("ws://h:1").port, 1);
  EXPECT_EQ(must_parse("ws://h:65535").port, 65535);
  for (auto bad : {"ws://h:0", "ws://h:65536", "ws://h:99999999999999999999", "ws://h:-1",
                   "ws://h:8o", "ws://h: 80", "ws://[::1]x", "ws://[::1]:x"})
    EXPECT_NE(must_fail(bad).find("port"), std::string::npos) << bad;
}

TEST(WsUrl, RefusesWhatItCannotConnectTo) {
  for (auto bad : {"", "127.0.0.1:8080", "http://h/ws", "https://h/ws", "ws:/h", "ws//h",
                   "wss:h", "ftp://h"})
    EXPECT_NE(must_fail(bad).find("ws://"), std::string::npos) << bad;
  for (auto bad : {"ws://", "ws:///ws", "ws://:80/ws", "wss://[]:1/x", "ws://?x"})
    EXPECT_NE(must_fail(bad).find("no host"), std::string::npos) << bad;
  EXPECT_NE(must_fail("ws://[::1/ws").find("IPv6"), std::string::npos);
  EXPECT_NE(must_fail("ws://user:pw@h/ws").find("user info"), std::string::npos);
}

TEST(WsUrl, AFailedParseLeavesNoHalfResult) {
  ws_url u;
  std::string err;
  ASSERT_TRUE(parse_ws_url("wss://a:5/p", u, err));
  EXPECT_FALSE(parse_ws_url("ws://:1", u, err));
  ASSERT_TRUE(parse_ws_url("ws://b", u, err));
  EXPECT_EQ(u.port, 80);  // not the 5 of the first parse
  EXPECT_EQ(u.path, "/ws");
}

TEST(RandomHex, LengthAlphabetAndUniqueness) {
  for (size_t n : {0u, 1u, 7u, 8u, 9u, 12u, 16u, 33u}) {
    auto s = random_hex(n);
    EXPECT_EQ(s.size(), n);
    EXPECT_EQ(s.find_first_not_of("0123456789abcdef"), std::string::npos) << s;
  }
  std::set<std::string> seen;
  std::set<char> digits;
  for (int i = 0; i < 10000; ++i) {
    auto s = random_hex(12);
    seen.insert(s);
    digits.insert(s.begin(), s.end());
  }
  EXPECT_EQ(seen.size(), 10000u);
  EXPECT_EQ(digits.size(), 16u);  // every digit turns up, not only the low bits of each draw
}

}  // namespace
}  // namespace chat
