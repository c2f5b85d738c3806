#pragma once
// Time helpers shared by the server, the CLI, the bench and the tests.
#include <chrono>
#include <cstdint>

namespace chat {

// Wall clock, milliseconds since the epoch (message timestamps, token expiry).
inline int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Monotonic microseconds (latencies).
inline int64_t steady_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace chat
