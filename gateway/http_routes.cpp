#include "gateway/http_routes.hpp"

#include "actors/metrics.hpp"
#include "gateway/edge_limits.hpp"
#include "gateway/web_assets.hpp"
#include "messages/codec.hpp"

namespace chat {

namespace http = boost::beast::http;

http_response json_response(const http_request& req, http::status status, std::string body) {
  http_response res{status, req.version()};
  res.set(http::field::server, "chatd");
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

namespace {

http_response text_response(const http_request& req, http::status status, std::string_view type,
                            std::string body) {
  http_response res{status, req.version()};
  res.set(http::field::server, "chatd");
  res.set(http::field::content_type, boost::beast::string_view(type.data(), type.size()));
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

}  // namespace

bool route_http(const http_request& req, server_context& ctx, http_response& res) {
  auto target = std::string_view(req.target().data(), req.target().size());
  auto path = target.substr(0, target.find('?'));
  bool get = req.method() == http::verb::get || req.method() == http::verb::head;
  if (path == "/healthz" && get) {
    res = json_response(req, http::status::ok, R"({"status":"ok"})");
    return true;
  }
  if (path == "/readyz" && get) {
    // Whether THIS node can serve: its store is writable, it is not draining,
    // and it reaches a majority of the configured nodes (itself included), so
    // the rooms it homes are the ones the rest of the cluster homes on it. A
    // minority (or a refused peer) does not make the others unready.
    // `/readyz?full` asks for the whole cluster: 503 while any node is down.
    auto& m = global_metrics();
    auto query = target.find('?') == std::string_view::npos ? std::string_view{}
                                                             : target.substr(target.find('?') + 1);
    bool full = query == "full" || query.substr(0, 5) == "full=" || query.substr(0, 5) == "full&";
    size_t up = 1, total = 1;
    bool all_up = true;
    if (ctx.routes) {
      up = ctx.routes->up_count();
      total = ctx.routes->size();
      all_up = ctx.routes->all_up();
    }
    bool quorum = 2 * up > total;
    bool ok = m.store_ok.load() && !ctx.draining.load() && quorum && (!full || all_up);
    std::string peers = "[";
    size_t refused = 0;
    if (ctx.routes)
      for (auto& p : ctx.routes->status()) {
        if (peers.size() > 1) peers += ",";
        peers += "{\"node\":" + json_quote(p.name) + ",\"self\":" + (p.self ? "true" : "false") +
                 ",\"up\":" + (p.up ? "true" : "false");
        if (!p.refused.empty()) {
          peers += ",\"refused\":" + json_quote(p.refused);
          ++refused;
        }
        peers += "}";
      }
    peers += "]";
    std::string body = std::string("{\"status\":") + (ok ? "\"ready\"" : "\"not_ready\"") +
                       ",\"store\":" + json_quote(m.store_status_text()) +
                       ",\"draining\":" + (ctx.draining.load() ? "true" : "false") +
                       ",\"node\":" + json_quote(ctx.cfg.node) +
                       ",\"nodes_up\":" + std::to_string(up) +
                       ",\"nodes\":" + std::to_string(total) +
                       ",\"quorum\":" + (quorum ? "true" : "false") +
                       ",\"cluster_complete\":" + (all_up ? "true" : "false") +
                       ",\"peers_refused\":" + std::to_string(refused) + ",\"peers\":" + peers + "}";
    res = json_response(req, ok ? http::status::ok : http::status::service_unavailable, body);
    return true;
  }
  if (path == "/metrics" && get) {
    auto text = global_metrics().render_prometheus();
    if (ctx.edge) text += global_edge_metrics().render_prometheus(ctx.edge->limiter.tracked());
    if (ctx.routes) {
      text += "# HELP chat_cluster_peer_up 1 when this node reaches the peer over CAF remoting.\n"
              "# TYPE chat_cluster_peer_up gauge\n";
      for (auto& p : ctx.routes->status())
        text += "chat_cluster_peer_up{peer=" + json_quote(p.name) + "} " + (p.up ? "1" : "0") + "\n";
      text += "# HELP chat_cluster_peer_refused 1 when the peer was refused at connect (cluster "
              "file digest or name mismatch).\n"
              "# TYPE chat_cluster_peer_refused gauge\n";
      for (auto& p : ctx.routes->status())
        text += "chat_cluster_peer_refused{peer=" + json_quote(p.name) + "} " +
                (p.refused.empty() ? "0" : "1") + "\n";
    }
    res = text_response(req, http::status::ok, "text/plain; version=0.0.4", std::move(text));
    return true;
  }
  if (get) {
    if (auto* a = find_web_asset(path)) {
      res = text_response(req, http::status::ok, a->content_type, std::string(a->body));
      res.set(http::field::cache_control, "no-cache");
      return true;
    }
  }
  return false;
}

}  // namespace chat
