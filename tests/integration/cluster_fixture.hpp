#pragma once
// Three real chatd processes on 127.0.0.1 as one cluster: the cluster file,
// the ports, starting and polling the nodes. Each node's store comes from
// `store_args` (its own SQLite file by default; a shared PostgreSQL database
// in postgres_test.cpp).
#include <boost/asio.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "actors/cluster/routes.hpp"
#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

namespace chat_test {

inline uint16_t free_port() {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::acceptor a(ioc, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

inline const std::vector<std::string>& cluster_names() {
  static const std::vector<std::string> names{"n1", "n2", "n3"};
  return names;
}

// The first "<prefix>N" whose first-choice home is `node`.
inline std::string room_homed_on(size_t node, const std::string& prefix) {
  for (int i = 0;; ++i) {
    auto room = prefix + std::to_string(i);
    if (chat::rendezvous_home(room, cluster_names()) == node) return room;
  }
}

// The first "<prefix>N" for which `pred` holds.
inline std::string first_name(const std::string& prefix,
                              const std::function<bool(const std::string&)>& pred) {
  for (int i = 0;; ++i)
    if (pred(prefix + std::to_string(i))) return prefix + std::to_string(i);
}

// Receives until `pred`, failing on any error frame on the way.
inline std::optional<json> recv_no_error(ws_client& c, const std::function<bool(const json&)>& pred,
                                         std::chrono::milliseconds timeout, std::string& error) {
  return c.recv_until(
      [&](const json& x) {
        if (is_type(x, "error")) error = x.dump();
        return !error.empty() || pred(x);
      },
      timeout);
}

struct cluster_fixture {
  temp_dir dir;
  std::string cfg = dir.path() + "/cluster.json";
  std::vector<uint16_t> http, remoting;
  std::vector<std::unique_ptr<chatd_process>> nodes{3};
  std::function<std::vector<std::string>(size_t)> store_args = [this](size_t i) {
    return std::vector<std::string>{"--db", dir.path() + "/" + cluster_names()[i] + ".db"};
  };

  std::string log_level = "warn";

  cluster_fixture() { write(cfg); }
  // `differ`: n1's listen address is another (a cluster file that differs).
  void write(const std::string& path, bool differ = false) {
    std::ofstream out(path);
    out << "{\"nodes\":[";
    for (size_t i = 0; i < 3; ++i) {
      if (http.size() < 3) {
        http.push_back(free_port());
        remoting.push_back(free_port());
      }
      auto listen = differ && i == 0 ? http[i] + 1 : http[i];
      out << (i ? "," : "") << "{\"name\":\"" << cluster_names()[i]
          << "\",\"listen\":\"127.0.0.1:" << listen << "\",\"remoting\":\"127.0.0.1:"
          << remoting[i] << "\"}";
    }
    out << "]}";
  }
  void start(size_t i, const std::string& file = {}) {
    std::vector<std::string> args{"--cluster", file.empty() ? cfg : file, "--node",
                                  cluster_names()[i], "--allow-anonymous", "--log-level", log_level,
                                  "--rate", "100000", "--burst", "100000"};
    for (auto& a : store_args(i)) args.push_back(a);
    nodes[i] = std::make_unique<chatd_process>(args);
  }
  // Polls /readyz?full until every peer is reached (bounded).
  bool ready(size_t i, std::chrono::seconds timeout = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string body;
    while (std::chrono::steady_clock::now() < deadline) {
      if (http_get(http[i], "/readyz?full", body) == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling another process
    }
    return false;
  }
};

}  // namespace chat_test
