#pragma once
// What the network edge decides before a request reaches chat: which source
// address a connection counts against (IPv4 /32, IPv6 /64, X-Forwarded-For from
// trusted proxies only), the per-address limits on open connections, WebSocket
// handshakes per second and connections that have not said hello, Origin
// checks, and the counters /metrics shows for all of it. No sockets here: the
// listener and the sessions call it, the unit tests call it directly.
#include <array>
#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace chat {

// A source address as the limits see it: IPv4 (and IPv4-mapped IPv6) whole,
// IPv6 cut to its /64 (one customer's allocation).
struct address_key {
  uint64_t hi = 0;
  uint64_t lo = 0;
  bool operator==(const address_key& o) const { return hi == o.hi && lo == o.lo; }
  static address_key of(const boost::asio::ip::address& a);
  std::string to_string() const;  // "10.0.0.1" or "2001:db8:1:2::/64"
};

struct address_key_hash {
  size_t operator()(const address_key& k) const {
    return static_cast<size_t>(k.hi * 0x9e3779b97f4a7c15ULL ^ (k.lo + 0x632be59bd9b4e019ULL));
  }
};

// A list of networks (`10.0.0.0/8`, `2001:db8::/32`, a bare address = one host).
class cidr_list {
 public:
  // Returns "" or what is wrong with the first bad entry.
  std::string parse(const std::vector<std::string>& entries);
  bool contains(const boost::asio::ip::address& a) const;
  bool empty() const { return nets_.empty(); }

 private:
  struct net {
    std::array<unsigned char, 16> bytes{};  // IPv4 as IPv4-mapped IPv6
    unsigned prefix = 128;
  };
  std::vector<net> nets_;
};

// The client behind a connection from `peer`. Only when `peer` is a trusted
// proxy is X-Forwarded-For used (`xff`: its header lines joined by ','): the
// right-most address that is not itself a trusted proxy is the client; if every
// entry is trusted the left-most is; an entry that is not an address ends the
// walk at the last trusted hop (a proxy wrote nonsense: count it, not a guess).
boost::asio::ip::address client_address(const boost::asio::ip::address& peer,
                                        std::string_view xff, const cidr_list& trusted);

struct address_limits {
  uint32_t max_connections = 200;  // open TCP connections (0: no limit)
  uint32_t max_prehello = 20;      // WebSockets that have not said hello (0: no limit)
  double handshake_rate = 20;      // WebSocket handshakes a second (0: no limit)
  double handshake_burst = 40;
};

// Counts per source address, shared by every I/O thread: a few striped
// mutexes, each guarding a hash map of the addresses that hash to it. An entry
// lives while it holds a connection or its handshake bucket is not yet full
// again, so the table is bounded by the open connections plus the addresses
// seen in the last burst/rate seconds (`sweep` drops the refilled ones).
class address_limiter {
 public:
  using clock = std::chrono::steady_clock;
  enum class kind : uint8_t { connection, prehello };
  // WebSocket upgrades and TLS handshakes (the expensive part of a TLS
  // connection) each have a bucket of --handshake-rate/--handshake-burst.
  enum class bucket : uint8_t { websocket, tls };

  explicit address_limiter(address_limits lim) : lim_(lim) {}
  address_limiter(const address_limiter&) = delete;
  address_limiter& operator=(const address_limiter&) = delete;

  // True (and counted) when `k` is below its limit of this kind.
  bool acquire(const address_key& k, kind what);
  void release(const address_key& k, kind what);
  // Takes one handshake token; false when the address's bucket is empty.
  bool take_handshake(const address_key& k, clock::time_point now, bucket b = bucket::websocket);
  // Forgets addresses with nothing open and a full bucket.
  void sweep(clock::time_point now);
  size_t tracked() const;
  const address_limits& limits() const { return lim_; }

 private:
  struct token_state {
    double tokens = 0;
    clock::time_point last{};  // epoch: never used, full
  };
  struct entry {
    uint32_t connections = 0;
    uint32_t prehello = 0;
    token_state websocket, tls;
  };
  struct stripe {
    mutable std::mutex mtx;
    std::unordered_map<address_key, entry, address_key_hash> map;
  };
  stripe& stripe_for(const address_key& k) { return stripes_[address_key_hash{}(k) % stripes_.size()]; }
  bool idle(const entry& e, clock::time_point now) const;
  bool full(const token_state& t, clock::time_point now) const;

  address_limits lim_;
  std::array<stripe, 16> stripes_;
};

// One counted unit (a connection, or a connection before hello) against an
// address; released when destroyed or reset. Move-only.
class address_lease {
 public:
  address_lease() = default;
  address_lease(address_limiter* l, address_key k, address_limiter::kind what)
      : lim_(l), key_(k), what_(what) {}
  address_lease(address_lease&& o) noexcept { *this = std::move(o); }
  address_lease& operator=(address_lease&& o) noexcept {
    if (this != &o) {
      reset();
      lim_ = o.lim_;
      key_ = o.key_;
      what_ = o.what_;
      o.lim_ = nullptr;
    }
    return *this;
  }
  address_lease(const address_lease&) = delete;
  address_lease& operator=(const address_lease&) = delete;
  ~address_lease() { reset(); }
  void reset() {
    if (lim_) lim_->release(key_, what_);
    lim_ = nullptr;
  }
  explicit operator bool() const { return lim_ != nullptr; }

 private:
  address_limiter* lim_ = nullptr;
  address_key key_{};
  address_limiter::kind what_ = address_limiter::kind::connection;
};

// --allowed-origins: patterns `scheme://host[:port]` where host may start with
// `*.` (any subdomain, not the bare domain) and port may be `*` (any port); no
// port means the scheme's default. Without patterns: same-origin only (the
// Origin's host and port equal the Host header). A request without Origin (not
// a browser) is always allowed: Origin protects browsers' users, it does not
// authenticate. The pattern `*` allows every origin.
class origin_policy {
 public:
  // Returns "" or what is wrong with the first bad pattern.
  std::string parse(const std::vector<std::string>& patterns);
  // `origin`: the Origin header (absent: nullopt); `host`: the Host header.
  bool allows(const std::optional<std::string_view>& origin, std::string_view host) const;

 private:
  struct pattern {
    std::string scheme;
    std::string host;       // lower case, without the "*." of a wildcard
    bool any_subdomain = false;
    std::string port;       // "" = the scheme's default, "*" = any
  };
  std::vector<pattern> patterns_;
  bool any_ = false;  // the pattern "*": every origin
};

// The edge's policy for one node: built once at start from the config, then
// only read (the limiter locks inside).
struct edge_guard {
  explicit edge_guard(address_limits lim) : limiter(lim) {}
  address_limiter limiter;
  cidr_list trusted_proxies;
  origin_policy origins;
};

// Counters of what the edge refused, for /metrics.
struct edge_metrics {
  enum refusal : size_t {
    connections,
    handshake_rate,
    tls_handshake_rate,
    prehello,
    origin,
    refusal_count
  };
  std::array<std::atomic<uint64_t>, refusal_count> refused{};
  // HTTP requests answered with an error status and closed, by status.
  std::atomic<uint64_t> http_400{0}, http_413{0}, http_414{0}, http_431{0}, http_501{0};
  std::atomic<uint64_t> header_timeouts{0};
  std::atomic<uint64_t> tls_handshake_failures{0};
  std::atomic<uint64_t> tls_reloads{0}, tls_reload_failures{0};

  void refuse(refusal r) { refused[r].fetch_add(1, std::memory_order_relaxed); }
  std::string render_prometheus(size_t tracked_addresses) const;
};

edge_metrics& global_edge_metrics();

// --max-connections when not given: the soft RLIMIT_NOFILE less a reserve for
// the store, logs, peers and connections still in their HTTP phase
// (5 %: max(64, limit/20), at most 4096). `nofile` is set to the limit read.
size_t max_connections_from_fd_limit(uint64_t& nofile);

}  // namespace chat
