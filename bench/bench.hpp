#pragma once
// chat-bench: shared declarations of the driver (chat_bench.cpp, the parent
// process: options, scenarios, fork, merge, report) and the worker
// (worker.cpp, a forked process that holds a share of the connections).
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace bench {

// steady_clock is CLOCK_MONOTONIC on Linux (libstdc++): one clock for every
// process on the machine, so a send time stamped by one worker can be
// subtracted from a receive time taken by another.
inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct options {
  // target
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string path = "/ws";
  // Where the senders connect (--sender-url), if not to the target above: to
  // measure the cluster path (sender's node -> room's home -> receiver's node).
  std::string sender_host;  // "" = same as host/port/path
  int sender_port = 0;
  std::string sender_path = "/ws";
  // shape of the run
  std::string scenario;  // "" = custom
  int conns = 20;
  int rooms = 2;
  int senders = 2;
  double rate = 10;       // msg/s per sender (ignored when window > 0)
  int window = 0;         // > 0: each sender keeps this many sends in flight, as fast as acks come
  double duration = 5;    // seconds of the send (or hold) phase
  int size = 100;         // bytes of text per message (ASCII), 1..4096
  double drain = 5;       // max seconds to wait for acks and deliveries after the send phase
  bool idempotency = false;
  bool batch = true;      // join queued outgoing objects with '\n' into one frame
  // processes, threads, addresses
  int procs = 0;          // 0 = auto (by open-file limit)
  int threads = 1;        // io_contexts (one thread each) per worker process
  int src_addrs = -1;     // source addresses 127.0.0.2.. rotated; -1 auto, 0 = no bind
  int connect_concurrency = 256;  // connection attempts in flight (all processes)
  double connect_timeout = 120;   // seconds for the whole connect phase
  int connect_retries = 2;        // extra attempts per connection in the connect phase
  // identity
  std::string jwt_secret;         // mint HS256 tokens instead of anonymous hello
  std::string name_prefix = "b";  // user names <prefix><proc>-<i>
  std::string room_prefix = "bench-";
  // storm / reconnect
  bool storm = false;
  double cut_after = 3;           // seconds into the send phase when all non-senders are cut
  bool reconnect = false;         // reconnect (with since/epoch) after any drop
  int backoff_base_ms = 1000;     // full jitter: attempt k waits U(0, min(max, base*2^k))
  int backoff_max_ms = 8000;
  // fanout-max
  bool step = false;
  double step_factor = 2;
  double max_p99_ms = 100;
  int max_steps = 10;
  int refine_steps = 3;   // bisection runs once bracketed
  // output and checks
  std::vector<int> server_pids;   // sampled together (summed): one node, or every node of a cluster
  bool json = false;
  std::string json_out;           // also write the JSON report here
  bool quiet = false;
  bool strict = false;            // errors and gaps fail the run too (smoke)
  bool expect_clean = true;       // lost/out-of-order/duplicates fail the run
};

// Runs one worker process's share of the run: `proc` of `procs`. Reads
// commands (JSON lines) from ctrl_fd, writes events (JSON lines) to out_fd.
// Never returns: _exit()s when done.
[[noreturn]] void worker_main(const options& o, int proc, int procs, int ctrl_fd, int out_fd);

}  // namespace bench
