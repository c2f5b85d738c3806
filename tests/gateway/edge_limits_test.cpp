// The edge's decisions without sockets: address keys, proxies, per-address
// limits (also across threads), origin patterns, the fd-limit default.
#include "gateway/edge_limits.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <thread>

using namespace chat;
namespace ip = boost::asio::ip;

namespace {

ip::address addr(const char* s) { return ip::make_address(s); }
address_key key(const char* s) { return address_key::of(addr(s)); }

}  // namespace

TEST(AddressKey, Ipv4WholeIpv6ByTheSlash64) {
  EXPECT_EQ(key("10.0.0.1"), key("10.0.0.1"));
  EXPECT_FALSE(key("10.0.0.1") == key("10.0.0.2"));
  EXPECT_EQ(key("10.0.0.1"), key("::ffff:10.0.0.1"));  // dual-stack sockets
  EXPECT_EQ(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:9"));
  EXPECT_FALSE(key("2001:db8:1:2::1") == key("2001:db8:1:3::1"));
  EXPECT_FALSE(key("::1") == key("0.0.0.1"));
  EXPECT_EQ(key("10.0.0.1").to_string(), "10.0.0.1");
  EXPECT_EQ(key("2001:db8:1:2::77").to_string(), "2001:db8:1:2::/64");
}

TEST(CidrList, ParsesAndMatches) {
  cidr_list l;
  ASSERT_EQ(l.parse({"10.0.0.0/8", " 192.168.1.7 ", "2001:db8::/32", "172.16.0.0/12"}), "");
  EXPECT_TRUE(l.contains(addr("10.255.1.2")));
  EXPECT_FALSE(l.contains(addr("11.0.0.1")));
  EXPECT_TRUE(l.contains(addr("192.168.1.7")));
  EXPECT_FALSE(l.contains(addr("192.168.1.8")));
  EXPECT_TRUE(l.contains(addr("172.31.255.255")));
  EXPECT_FALSE(l.contains(addr("172.32.0.0")));
  EXPECT_TRUE(l.contains(addr("2001:db8:ffff::1")));
  EXPECT_FALSE(l.contains(addr("2001:db9::1")));
  EXPECT_TRUE(l.contains(addr("::ffff:10.1.1.1")));
  EXPECT_NE(l.parse({"10.0.0.0/33"}), "");
  EXPECT_NE(l.parse({"nonsense"}), "");
  EXPECT_NE(l.parse({"10.0.0.0/"}), "");
  EXPECT_NE(l.parse({"10.0.0.0/x"}), "");
  ASSERT_EQ(l.parse({"0.0.0.0/0"}), "");
  EXPECT_TRUE(l.contains(addr("8.8.8.8")));
  EXPECT_FALSE(l.contains(addr("2001:db8::1")));  // an IPv4 net holds no IPv6 address
}

TEST(ClientAddress, XffOnlyFromTrustedProxiesRightMostUntrusted) {
  cidr_list trusted;
  ASSERT_EQ(trusted.parse({"10.0.0.0/8"}), "");
  // Not from a proxy: the header is the client's to forge, and is ignored.
  EXPECT_EQ(client_address(addr("203.0.113.5"), "1.2.3.4", trusted), addr("203.0.113.5"));
  // From a proxy: the hop it saw.
  EXPECT_EQ(client_address(addr("10.0.0.1"), "198.51.100.7", trusted), addr("198.51.100.7"));
  // A client that sends its own X-Forwarded-For gets its real address appended: the
  // right-most untrusted entry is what our proxy saw, the left ones are the client's words.
  EXPECT_EQ(client_address(addr("10.0.0.1"), "6.6.6.6, 198.51.100.7", trusted),
            addr("198.51.100.7"));
  // Through two of our proxies.
  EXPECT_EQ(client_address(addr("10.0.0.1"), "198.51.100.7, 10.9.9.9", trusted),
            addr("198.51.100.7"));
  // Every hop ours: the left-most.
  EXPECT_EQ(client_address(addr("10.0.0.1"), "10.1.1.1, 10.2.2.2", trusted), addr("10.1.1.1"));
  // Nonsense from a proxy: the last trusted hop, not a guess.
  EXPECT_EQ(client_address(addr("10.0.0.1"), "unknown", trusted), addr("10.0.0.1"));
  EXPECT_EQ(client_address(addr("10.0.0.1"), "198.51.100.7, junk, 10.2.2.2", trusted),
            addr("10.2.2.2"));
  // Ports and brackets some proxies add.
  EXPECT_EQ(client_address(addr("10.0.0.1"), "198.51.100.7:4711", trusted), addr("198.51.100.7"));
  EXPECT_EQ(client_address(addr("10.0.0.1"), "[2001:db8::5]:443", trusted), addr("2001:db8::5"));
  EXPECT_EQ(client_address(addr("10.0.0.1"), "2001:db8::5", trusted), addr("2001:db8::5"));
  EXPECT_EQ(client_address(addr("10.0.0.1"), "", trusted), addr("10.0.0.1"));
}

TEST(AddressLimiter, ConnectionsAndPrehelloPerAddress) {
  address_limits lim;
  lim.max_connections = 2;
  lim.max_prehello = 1;
  address_limiter l{lim};
  auto a = key("10.0.0.1"), b = key("10.0.0.2");
  EXPECT_TRUE(l.acquire(a, address_limiter::kind::connection));
  EXPECT_TRUE(l.acquire(a, address_limiter::kind::connection));
  EXPECT_FALSE(l.acquire(a, address_limiter::kind::connection));
  EXPECT_TRUE(l.acquire(b, address_limiter::kind::connection));  // another address is untouched
  EXPECT_TRUE(l.acquire(a, address_limiter::kind::prehello));
  EXPECT_FALSE(l.acquire(a, address_limiter::kind::prehello));
  l.release(a, address_limiter::kind::prehello);
  EXPECT_TRUE(l.acquire(a, address_limiter::kind::prehello));
  {
    address_lease lease;
    l.release(a, address_limiter::kind::connection);
    ASSERT_TRUE(l.acquire(a, address_limiter::kind::connection));
    lease = address_lease(&l, a, address_limiter::kind::connection);
    EXPECT_FALSE(l.acquire(a, address_limiter::kind::connection));
    address_lease moved = std::move(lease);
    EXPECT_FALSE(lease);
    EXPECT_TRUE(moved);
  }  // released once, by `moved`
  EXPECT_TRUE(l.acquire(a, address_limiter::kind::connection));
  EXPECT_FALSE(l.acquire(a, address_limiter::kind::connection));
}

TEST(AddressLimiter, HandshakeBucketAndItsMemory) {
  address_limits lim;
  lim.handshake_rate = 2;
  lim.handshake_burst = 3;
  address_limiter l{lim};
  auto a = key("10.0.0.1");
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(l.take_handshake(a, t0));
  EXPECT_FALSE(l.take_handshake(a, t0));
  EXPECT_TRUE(l.take_handshake(key("10.0.0.2"), t0));
  EXPECT_FALSE(l.take_handshake(a, t0 + std::chrono::milliseconds(400)));
  EXPECT_TRUE(l.take_handshake(a, t0 + std::chrono::milliseconds(900)));  // one token back
  // Nothing open, bucket not full: the address is remembered (else closing
  // every connection would reset its bucket); 10.0.0.2's bucket is full again.
  l.sweep(t0 + std::chrono::milliseconds(900));
  EXPECT_EQ(l.tracked(), 1u);
  EXPECT_FALSE(l.take_handshake(a, t0 + std::chrono::milliseconds(950)));
  // ...until the bucket is full again.
  l.sweep(t0 + std::chrono::seconds(10));
  EXPECT_EQ(l.tracked(), 0u);
  // TLS handshakes have a bucket of their own.
  auto b = key("10.0.0.9");
  auto bucket = address_limiter::bucket::tls;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(l.take_handshake(b, t0, bucket));
  EXPECT_FALSE(l.take_handshake(b, t0, bucket));
  EXPECT_TRUE(l.take_handshake(b, t0));  // the WebSocket bucket is untouched
  l.sweep(t0 + std::chrono::milliseconds(600));  // WebSocket bucket full again, TLS not
  EXPECT_EQ(l.tracked(), 1u);
}

TEST(AddressLimiter, ZeroMeansNoLimit) {
  address_limits lim;
  lim.max_connections = 0;
  lim.max_prehello = 0;
  lim.handshake_rate = 0;
  address_limiter l{lim};
  auto a = key("10.0.0.1");
  auto now = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(l.acquire(a, address_limiter::kind::connection));
    ASSERT_TRUE(l.acquire(a, address_limiter::kind::prehello));
    ASSERT_TRUE(l.take_handshake(a, now));
  }
}

TEST(AddressLimiter, ThreadsShareItConsistently) {
  address_limits lim;
  lim.max_connections = 50;
  address_limiter l{lim};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        auto k = key(("10.0." + std::to_string(t) + "." + std::to_string(i % 7)).c_str());
        auto shared = key("192.0.2.1");
        if (l.acquire(k, address_limiter::kind::connection))
          l.release(k, address_limiter::kind::connection);
        if (l.acquire(shared, address_limiter::kind::connection))
          l.release(shared, address_limiter::kind::connection);
        else
          refused.fetch_add(1);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(refused.load(), 0);  // at most 4 held at once, far below 50
  EXPECT_EQ(l.tracked(), 0u);    // every entry went with its last release
  // The shared address is at zero again: 50 fit, the 51st does not.
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(l.acquire(key("192.0.2.1"), address_limiter::kind::connection));
  EXPECT_FALSE(l.acquire(key("192.0.2.1"), address_limiter::kind::connection));
}

TEST(OriginPolicy, DefaultIsSameOriginAndNonBrowsersPass) {
  origin_policy p;
  ASSERT_EQ(p.parse({}), "");
  EXPECT_TRUE(p.allows(std::nullopt, "chat.example.com"));
  EXPECT_TRUE(p.allows("https://chat.example.com", "chat.example.com"));
  EXPECT_TRUE(p.allows("https://chat.example.com", "chat.example.com:443"));
  EXPECT_TRUE(p.allows("http://127.0.0.1:8080", "127.0.0.1:8080"));
  EXPECT_TRUE(p.allows("HTTP://Chat.Example.COM", "chat.example.com"));
  EXPECT_FALSE(p.allows("http://127.0.0.1:8081", "127.0.0.1:8080"));
  EXPECT_FALSE(p.allows("https://evil.example", "chat.example.com"));
  EXPECT_FALSE(p.allows("null", "chat.example.com"));
  EXPECT_FALSE(p.allows("", "chat.example.com"));
  EXPECT_TRUE(p.allows("http://[::1]:8080", "[::1]:8080"));
}

TEST(OriginPolicy, Patterns) {
  origin_policy p;
  ASSERT_EQ(p.parse({"https://chat.example.com", "https://*.example.org", "http://127.0.0.1:*",
                     "http://localhost:3000"}),
            "");
  EXPECT_TRUE(p.allows("https://chat.example.com", "anything"));
  EXPECT_TRUE(p.allows("https://chat.example.com:443", "anything"));
  EXPECT_FALSE(p.allows("https://chat.example.com:8443", "anything"));
  EXPECT_FALSE(p.allows("http://chat.example.com", "anything"));  // scheme matters
  EXPECT_FALSE(p.allows("https://evilchat.example.com", "anything"));
  EXPECT_TRUE(p.allows("https://a.example.org", "x"));
  EXPECT_TRUE(p.allows("https://a.b.example.org", "x"));
  EXPECT_FALSE(p.allows("https://example.org", "x"));  // *. wants a subdomain
  EXPECT_FALSE(p.allows("https://badexample.org", "x"));
  EXPECT_TRUE(p.allows("http://127.0.0.1:5173", "x"));
  EXPECT_TRUE(p.allows("http://127.0.0.1", "x"));
  EXPECT_TRUE(p.allows("http://localhost:3000", "x"));
  EXPECT_FALSE(p.allows("http://localhost:3001", "x"));
  // With patterns the Host header no longer decides.
  EXPECT_FALSE(p.allows("http://other.example:80", "other.example"));
  EXPECT_TRUE(p.allows(std::nullopt, "x"));

  origin_policy any;
  ASSERT_EQ(any.parse({"*"}), "");
  EXPECT_TRUE(any.allows("https://whatever.example", "x"));

  origin_policy bad;
  EXPECT_NE(bad.parse({"chat.example.com"}), "");
  EXPECT_NE(bad.parse({"https://chat.*.com"}), "");
  EXPECT_NE(bad.parse({"https://chat.example.com/path"}), "");
  EXPECT_NE(bad.parse({"https://chat.example.com:80x"}), "");
}

TEST(MaxConnections, DefaultFollowsTheFdLimit) {
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 2000) GTEST_SKIP() << "hard limit too low";
  rlimit low = saved;
  uint64_t nofile = 0;
  low.rlim_cur = 1000;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  EXPECT_EQ(max_connections_from_fd_limit(nofile), 1000u - 64u);  // the reserve's floor
  EXPECT_EQ(nofile, 1000u);
  low.rlim_cur = 1800;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  EXPECT_EQ(max_connections_from_fd_limit(nofile), 1800u - 90u);  // 5 %
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_cur != RLIM_INFINITY && saved.rlim_cur >= 65536) {
    EXPECT_EQ(max_connections_from_fd_limit(nofile), saved.rlim_cur - 4096);  // the cap
  }
}
