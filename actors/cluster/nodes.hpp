#pragma once
// The nodes of a cluster, as the cluster file names them (parsed with the rest
// of the configuration: gateway/config.hpp). Plain data, no CAF.
#include <cstdint>
#include <string>
#include <vector>

namespace chat {

struct cluster_node {
  std::string name;
  std::string listen;       // HTTP/WebSocket host:port
  std::string remote_host;  // CAF remoting
  uint16_t remote_port = 0;
};

struct cluster_config {
  std::vector<cluster_node> nodes;
};

}  // namespace chat
