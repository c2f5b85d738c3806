#include "actors/metrics.hpp"

#include <sstream>

namespace chat {

metrics& global_metrics() {
  static metrics m;
  return m;
}

void metrics::count_moderation(std::string_view action) {
  for (size_t i = 0; i < moderation_actions.size(); ++i)
    if (action == moderation_actions[i]) {
      moderation[i].fetch_add(1, std::memory_order_relaxed);
      return;
    }
}

void metrics::count_error(errc code) {
  errors[static_cast<size_t>(code)].fetch_add(1, std::memory_order_relaxed);
}

void metrics::count_error(std::string_view code) {
  count_error(errc_from_string(code).value_or(errc::internal));
}

void metrics::observe_rtt_us(uint64_t us) {
  double s = static_cast<double>(us) / 1e6;
  size_t i = 0;
  while (i < latency_buckets.size() && s > latency_buckets[i]) ++i;
  rtt_buckets[i].fetch_add(1, std::memory_order_relaxed);
  rtt_count.fetch_add(1, std::memory_order_relaxed);
  rtt_sum_us.fetch_add(us, std::memory_order_relaxed);
}

void metrics::set_store_status(bool ok, const std::string& status) {
  std::lock_guard<std::mutex> guard{store_mtx};
  store_ok.store(ok);
  store_status = status;
}

std::string metrics::store_status_text() {
  std::lock_guard<std::mutex> guard{store_mtx};
  return store_status;
}

std::string metrics::render_prometheus() {
  std::ostringstream o;
  auto r = std::memory_order_relaxed;
  auto gauge = [&](const char* name, const char* help, int64_t v) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n"
      << name << ' ' << v << '\n';
  };
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n"
      << name << ' ' << v << '\n';
  };
  gauge("chat_connections", "Open WebSocket connections.", connections.load(r));
  counter("chat_connections_total", "WebSocket connections accepted since start.",
          connections_total.load(r));
  gauge("chat_rooms", "Room actors alive on this node.", rooms.load(r));
  counter("chat_messages_in_total", "send and dm requests accepted from clients.",
          messages_in.load(r));
  counter("chat_messages_stored_total", "Messages committed to the store and broadcast.",
          messages_stored.load(r));
  counter("chat_deliveries_total", "Message events queued to connections.", deliveries.load(r));
  counter("chat_frames_out_total", "WebSocket frames written (each may batch several objects).",
          frames_out.load(r));
  counter("chat_bytes_out_total", "Payload bytes written to WebSocket clients.", bytes_out.load(r));
  counter("chat_send_queue_drops_total",
          "Connections closed with 4008 because their outgoing queue passed the cap.",
          slow_closes.load(r));
  counter("chat_rooms_fenced_total",
          "Rooms this node stopped sequencing because another node claimed them (shared store).",
          rooms_fenced.load(r));
  counter("chat_store_commits_total", "Store transactions committed.", store_commits.load(r));
  counter("chat_store_failures_total", "Store transactions that failed.", store_failures.load(r));
  gauge("chat_store_up", "1 when the store accepts writes.", store_ok.load() ? 1 : 0);
  o << "# HELP chat_errors_total Protocol errors sent to clients, by code.\n"
       "# TYPE chat_errors_total counter\n";
  for (size_t i = 0; i < errc_count; ++i)
    o << "chat_errors_total{code=\"" << to_string(static_cast<errc>(i)) << "\"} "
      << errors[i].load(r) << '\n';
  o << "# HELP chat_moderation_actions_total Moderation actions stored, by action (room"
       " actions and server-wide bans).\n# TYPE chat_moderation_actions_total counter\n";
  for (size_t i = 0; i < moderation_actions.size(); ++i)
    o << "chat_moderation_actions_total{action=\"" << moderation_actions[i] << "\"} "
      << moderation[i].load(r) << '\n';
  o << "# HELP chat_room_rtt_seconds Time from a client's send to its ack (room round trip, "
       "store commit included).\n# TYPE chat_room_rtt_seconds histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < latency_buckets.size(); ++i) {
    cum += rtt_buckets[i].load(r);
    o << "chat_room_rtt_seconds_bucket{le=\"" << latency_buckets[i] << "\"} " << cum << '\n';
  }
  cum += rtt_buckets.back().load(r);
  o << "chat_room_rtt_seconds_bucket{le=\"+Inf\"} " << cum << '\n';
  o << "chat_room_rtt_seconds_sum " << static_cast<double>(rtt_sum_us.load(r)) / 1e6 << '\n';
  o << "chat_room_rtt_seconds_count " << rtt_count.load(r) << '\n';
  return o.str();
}

}  // namespace chat
