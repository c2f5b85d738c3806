#pragma once
// Process-wide counters for /metrics and /readyz. Relaxed atomics: they are
// read by the HTTP endpoint on an I/O thread and bumped by actors and sessions.
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "messages/errors.hpp"

namespace chat {

// Fixed latency buckets (seconds) of the room round trip histogram.
constexpr std::array<double, 12> latency_buckets = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,  0.5,   1.0,  2.5};

struct metrics {
  std::atomic<int64_t> connections{0};        // open WebSocket sessions
  std::atomic<uint64_t> connections_total{0};
  std::atomic<int64_t> rooms{0};              // live room actors
  std::atomic<uint64_t> messages_in{0};       // send/dm requests accepted by a session
  std::atomic<uint64_t> messages_stored{0};   // committed by a room
  std::atomic<uint64_t> deliveries{0};        // message objects queued to sessions
  std::atomic<uint64_t> frames_out{0};        // WebSocket frames written
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> slow_closes{0};       // closed with 4008
  std::atomic<uint64_t> rooms_fenced{0};      // rooms stopped: another node claimed them
  std::atomic<uint64_t> store_commits{0};
  std::atomic<uint64_t> store_failures{0};
  std::array<std::atomic<uint64_t>, errc_count> errors{};  // by errc
  std::array<std::atomic<uint64_t>, latency_buckets.size() + 1> rtt_buckets{};  // last: +Inf
  std::atomic<uint64_t> rtt_count{0};
  std::atomic<uint64_t> rtt_sum_us{0};

  // Store health for /readyz.
  std::atomic<bool> store_ok{false};
  std::mutex store_mtx;
  std::string store_status = "not open";

  // Moderation actions stored (the room's and the server API's), by action.
  static constexpr std::array<const char*, 9> moderation_actions = {
      "role", "kick", "ban", "unban", "mute", "unmute", "settings", "server_ban", "server_unban"};
  std::array<std::atomic<uint64_t>, moderation_actions.size()> moderation{};
  void count_moderation(std::string_view action);

  void count_error(errc code);
  // Transitional, for callers that still hold the code as text (room.cpp,
  // websocket_session.cpp): maps it through errc_from_string (unknown: internal).
  void count_error(std::string_view code);
  void observe_rtt_us(uint64_t us);
  void set_store_status(bool ok, const std::string& status);
  std::string store_status_text();
  // Prometheus text exposition of everything above.
  std::string render_prometheus();
};

metrics& global_metrics();

}  // namespace chat
