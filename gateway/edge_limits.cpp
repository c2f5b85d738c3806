#include "gateway/edge_limits.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cctype>

namespace chat {

namespace ip = boost::asio::ip;

namespace {

using bytes16 = std::array<unsigned char, 16>;

// IPv4 as IPv4-mapped IPv6, so both families compare as one.
bytes16 to_bytes16(const ip::address& a) {
  if (a.is_v4()) return ip::make_address_v6(ip::v4_mapped, a.to_v4()).to_bytes();
  return a.to_v6().to_bytes();
}

bool is_v4_mapped(const bytes16& b) {
  for (int i = 0; i < 10; ++i)
    if (b[i] != 0) return false;
  return b[10] == 0xff && b[11] == 0xff;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// One X-Forwarded-For entry: an address, optionally with a port
// ("1.2.3.4:80", "[2001:db8::1]:443"), which some proxies add.
std::optional<ip::address> parse_forwarded(std::string_view s) {
  s = trim(s);
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    s = s.substr(1, close - 1);
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    s = s.substr(0, s.find(':'));
  }
  boost::system::error_code ec;
  auto a = ip::make_address(std::string(s), ec);
  if (ec) return std::nullopt;
  return a;
}

// "host[:port]" or "[v6]:port" into lower-case host and port ("" if none).
bool split_authority(std::string_view auth, std::string& host, std::string& port) {
  if (auth.empty()) return false;
  if (auth.front() == '[') {
    auto close = auth.find(']');
    if (close == std::string_view::npos) return false;
    host = lower(auth.substr(0, close + 1));
    auto rest = auth.substr(close + 1);
    if (rest.empty()) {
      port.clear();
      return true;
    }
    if (rest.front() != ':') return false;
    port = std::string(rest.substr(1));
  } else {
    auto colon = auth.rfind(':');
    host = lower(auth.substr(0, colon));
    port = colon == std::string_view::npos ? "" : std::string(auth.substr(colon + 1));
  }
  if (host.empty()) return false;
  if (port != "*")
    for (char c : port)
      if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

const char* default_port(const std::string& scheme) {
  if (scheme == "http" || scheme == "ws") return "80";
  if (scheme == "https" || scheme == "wss") return "443";
  return "";
}

// "scheme://authority" (a trailing '/' tolerated) into its parts.
bool split_origin(std::string_view s, std::string& scheme, std::string& host, std::string& port) {
  auto sep = s.find("://");
  if (sep == 0 || sep == std::string_view::npos) return false;
  scheme = lower(s.substr(0, sep));
  auto auth = s.substr(sep + 3);
  if (!auth.empty() && auth.back() == '/') auth.remove_suffix(1);
  if (auth.find('/') != std::string_view::npos) return false;
  if (!split_authority(auth, host, port)) return false;
  if (port == default_port(scheme)) port.clear();
  return true;
}

}  // namespace

// --- addresses --------------------------------------------------------------------------

address_key address_key::of(const ip::address& a) {
  auto b = to_bytes16(a);
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 8; ++i) hi = (hi << 8) | b[i];
  for (int i = 8; i < 16; ++i) lo = (lo << 8) | b[i];
  if (!is_v4_mapped(b)) lo = 0;  // IPv6: the /64
  return {hi, lo};
}

std::string address_key::to_string() const {
  bytes16 b{};
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(hi >> (56 - 8 * i));
  for (int i = 0; i < 8; ++i) b[8 + i] = static_cast<unsigned char>(lo >> (56 - 8 * i));
  ip::address_v6 v6(b);
  if (is_v4_mapped(b)) return ip::make_address_v4(ip::v4_mapped, v6).to_string();
  return v6.to_string() + "/64";
}

std::string cidr_list::parse(const std::vector<std::string>& entries) {
  nets_.clear();
  for (auto& raw : entries) {
    auto e = trim(raw);
    if (e.empty()) continue;
    auto slash = e.find('/');
    boost::system::error_code ec;
    auto a = ip::make_address(std::string(e.substr(0, slash)), ec);
    if (ec) return "not an address: " + std::string(e);
    net n;
    n.bytes = to_bytes16(a);
    unsigned max = a.is_v4() ? 32 : 128;
    unsigned prefix = max;
    if (slash != std::string_view::npos) {
      auto len = e.substr(slash + 1);
      if (len.empty() || len.size() > 3 ||
          !std::all_of(len.begin(), len.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return "bad prefix length in " + std::string(e);
      prefix = static_cast<unsigned>(std::stoul(std::string(len)));
      if (prefix > max) return "prefix longer than the address in " + std::string(e);
    }
    n.prefix = a.is_v4() ? prefix + 96 : prefix;
    nets_.push_back(n);
  }
  return {};
}

bool cidr_list::contains(const ip::address& a) const {
  auto b = to_bytes16(a);
  for (auto& n : nets_) {
    unsigned full = n.prefix / 8, rest = n.prefix % 8;
    if (!std::equal(b.begin(), b.begin() + full, n.bytes.begin())) continue;
    if (rest) {
      auto mask = static_cast<unsigned char>(0xff << (8 - rest));
      if ((b[full] & mask) != (n.bytes[full] & mask)) continue;
    }
    return true;
  }
  return false;
}

ip::address client_address(const ip::address& peer, std::string_view xff, const cidr_list& trusted) {
  if (xff.empty() || !trusted.contains(peer)) return peer;
  std::vector<std::string_view> hops;
  while (!xff.empty()) {
    auto comma = xff.find(',');
    auto entry = trim(xff.substr(0, comma));
    if (!entry.empty()) hops.push_back(entry);
    xff = comma == std::string_view::npos ? std::string_view{} : xff.substr(comma + 1);
  }
  auto current = peer;
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    auto a = parse_forwarded(*it);
    if (!a) return current;
    current = *a;
    if (!trusted.contains(current)) return current;
  }
  return current;
}

// --- per-address limits -----------------------------------------------------------------

bool address_limiter::full(const token_state& t, clock::time_point now) const {
  if (lim_.handshake_rate <= 0 || t.last == clock::time_point{}) return true;
  double dt = std::chrono::duration<double>(now - t.last).count();
  return t.tokens + dt * lim_.handshake_rate >= lim_.handshake_burst;
}

bool address_limiter::idle(const entry& e, clock::time_point now) const {
  return !e.connections && !e.prehello && full(e.websocket, now) && full(e.tls, now);
}

bool address_limiter::acquire(const address_key& k, kind what) {
  uint32_t limit = what == kind::connection ? lim_.max_connections : lim_.max_prehello;
  auto& s = stripe_for(k);
  std::lock_guard<std::mutex> lock(s.mtx);
  auto& e = s.map[k];
  auto& n = what == kind::connection ? e.connections : e.prehello;
  if (limit && n >= limit) return false;
  ++n;
  return true;
}

void address_limiter::release(const address_key& k, kind what) {
  auto& s = stripe_for(k);
  std::lock_guard<std::mutex> lock(s.mtx);
  auto it = s.map.find(k);
  if (it == s.map.end()) return;
  auto& n = what == kind::connection ? it->second.connections : it->second.prehello;
  if (n) --n;
  if (idle(it->second, clock::now())) s.map.erase(it);
}

bool address_limiter::take_handshake(const address_key& k, clock::time_point now, bucket b) {
  if (lim_.handshake_rate <= 0) return true;
  auto& s = stripe_for(k);
  std::lock_guard<std::mutex> lock(s.mtx);
  auto& e = s.map[k];
  auto& t = b == bucket::tls ? e.tls : e.websocket;
  if (t.last == clock::time_point{}) {
    t.tokens = lim_.handshake_burst;
  } else {
    double dt = std::chrono::duration<double>(now - t.last).count();
    t.tokens = std::min(lim_.handshake_burst, t.tokens + std::max(0.0, dt) * lim_.handshake_rate);
  }
  t.last = now;
  if (t.tokens < 1.0) return false;
  t.tokens -= 1.0;
  return true;
}

void address_limiter::sweep(clock::time_point now) {
  for (auto& s : stripes_) {
    std::lock_guard<std::mutex> lock(s.mtx);
    for (auto it = s.map.begin(); it != s.map.end();)
      it = idle(it->second, now) ? s.map.erase(it) : std::next(it);
  }
}

size_t address_limiter::tracked() const {
  size_t n = 0;
  for (auto& s : stripes_) {
    std::lock_guard<std::mutex> lock(s.mtx);
    n += s.map.size();
  }
  return n;
}

// --- origins ----------------------------------------------------------------------------

std::string origin_policy::parse(const std::vector<std::string>& patterns) {
  patterns_.clear();
  any_ = false;
  for (auto& raw : patterns) {
    auto p = trim(raw);
    if (p.empty()) continue;
    if (p == "*") {
      any_ = true;
      continue;
    }
    pattern pat;
    if (!split_origin(p, pat.scheme, pat.host, pat.port))
      return "bad origin pattern " + std::string(p) + " (use e.g. https://chat.example.com)";
    if (pat.host.rfind("*.", 0) == 0) {
      pat.any_subdomain = true;
      pat.host = pat.host.substr(2);
    }
    if (pat.host.empty() || pat.host.find('*') != std::string::npos)
      return "bad origin pattern " + std::string(p) + " ('*' only as the first label)";
    patterns_.push_back(std::move(pat));
  }
  return {};
}

bool origin_policy::allows(const std::optional<std::string_view>& origin,
                           std::string_view host) const {
  if (!origin) return true;
  if (any_) return true;
  std::string scheme, o_host, o_port;
  if (!split_origin(*origin, scheme, o_host, o_port) || o_port == "*" ||
      o_host.find('*') != std::string::npos)
    return false;  // "null" (a sandboxed page or a file) and anything malformed
  if (patterns_.empty()) {
    std::string h_host, h_port;
    if (!split_authority(trim(host), h_host, h_port) || h_port == "*") return false;
    if (h_port == default_port(scheme)) h_port.clear();
    return h_host == o_host && h_port == o_port;
  }
  for (auto& p : patterns_) {
    if (p.scheme != scheme) continue;
    if (p.port != "*" && p.port != o_port) continue;
    if (p.any_subdomain) {
      if (o_host.size() > p.host.size() + 1 &&
          o_host.compare(o_host.size() - p.host.size(), p.host.size(), p.host) == 0 &&
          o_host[o_host.size() - p.host.size() - 1] == '.')
        return true;
    } else if (o_host == p.host) {
      return true;
    }
  }
  return false;
}

// --- metrics ----------------------------------------------------------------------------

edge_metrics& global_edge_metrics() {
  static edge_metrics m;
  return m;
}

std::string edge_metrics::render_prometheus(size_t tracked_addresses) const {
  auto v = [](const std::atomic<uint64_t>& a) { return std::to_string(a.load(std::memory_order_relaxed)); };
  static const char* reasons[refusal_count] = {"connections", "handshake_rate", "tls_handshake_rate",
                                               "pre_hello", "origin"};
  std::string out =
      "# HELP chat_edge_refused_total Connections and WebSocket upgrades refused by a per-address "
      "limit or the Origin check.\n# TYPE chat_edge_refused_total counter\n";
  for (size_t i = 0; i < refusal_count; ++i)
    out += std::string("chat_edge_refused_total{reason=\"") + reasons[i] + "\"} " + v(refused[i]) + "\n";
  out += "# HELP chat_http_rejected_total HTTP requests answered with an error status, then closed.\n"
         "# TYPE chat_http_rejected_total counter\n";
  out += "chat_http_rejected_total{status=\"400\"} " + v(http_400) + "\n";
  out += "chat_http_rejected_total{status=\"413\"} " + v(http_413) + "\n";
  out += "chat_http_rejected_total{status=\"414\"} " + v(http_414) + "\n";
  out += "chat_http_rejected_total{status=\"431\"} " + v(http_431) + "\n";
  out += "chat_http_rejected_total{status=\"501\"} " + v(http_501) + "\n";
  out += "# HELP chat_http_header_timeouts_total Connections closed for not sending a request "
         "header in time.\n# TYPE chat_http_header_timeouts_total counter\n"
         "chat_http_header_timeouts_total " + v(header_timeouts) + "\n";
  out += "# HELP chat_tls_handshake_failures_total TLS handshakes that failed or timed out.\n"
         "# TYPE chat_tls_handshake_failures_total counter\n"
         "chat_tls_handshake_failures_total " + v(tls_handshake_failures) + "\n";
  out += "# HELP chat_tls_reloads_total Certificate reloads (SIGHUP), by result.\n"
         "# TYPE chat_tls_reloads_total counter\n"
         "chat_tls_reloads_total{result=\"ok\"} " + v(tls_reloads) + "\n"
         "chat_tls_reloads_total{result=\"failed\"} " + v(tls_reload_failures) + "\n";
  out += "# HELP chat_edge_tracked_addresses Source addresses the per-address limits track now.\n"
         "# TYPE chat_edge_tracked_addresses gauge\n"
         "chat_edge_tracked_addresses " + std::to_string(tracked_addresses) + "\n";
  return out;
}

// --- file descriptors -------------------------------------------------------------------

size_t max_connections_from_fd_limit(uint64_t& nofile) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
    nofile = 0;
    return 100000;
  }
  nofile = rl.rlim_cur;
  uint64_t reserve = std::clamp<uint64_t>(nofile / 20, 64, 4096);
  return nofile > reserve ? static_cast<size_t>(nofile - reserve) : 1;
}

}  // namespace chat
