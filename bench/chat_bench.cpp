// chat-bench: load generator for the chat server (PROTOCOL v1).
//
// This file is the parent process: options and scenarios, forking the worker
// processes (worker.cpp) and driving them through the phases over pipes,
// sampling the server's RSS and CPU from /proc, merging the workers' results
// exactly (histogram buckets, counters, seq intervals) and reporting.
//
//   parent                      worker k (k = 0..P-1)
//   fork + pipes  ───────────▶  connect, hello, join its share
//                 ◀── joined ──
//   sample idle   ─── go t0 ──▶ senders send from t0 for --duration
//                 ◀── sent ────  (max acked seq per room, after acks are in)
//   merge targets ─── drain ──▶ wait until receivers hold all up to target
//                 ◀── done ────  histograms, counters, intervals; _exit
//   lost = Σ receivers |acked(room) ∩ (base, ∞) \ received|
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iterator>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/bench.hpp"
#include "bench/histogram.hpp"
#include "bench/intervals.hpp"
#include "messages/url.hpp"

namespace bench {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

bool g_quiet = false;
void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void logf(const char* fmt, ...) {
  if (g_quiet) return;
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "[chat-bench] ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
}

// --- options --------------------------------------------------------------------

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "chat-bench: %s\n(see chat-bench --help)\n", msg.c_str());
  std::exit(2);
}

void apply_scenario(options& o, const std::string& s) {
  o.scenario = s;
  if (s == "smoke") {
    o.conns = 20, o.rooms = 2, o.senders = 2, o.rate = 10, o.duration = 2, o.drain = 3;
    o.strict = true;
  } else if (s == "idle") {
    o.conns = 19000, o.rooms = 100, o.senders = 0, o.duration = 20;
  } else if (s == "fanout") {
    o.conns = 1000, o.rooms = 1, o.senders = 10, o.rate = 10, o.duration = 20;
  } else if (s == "fanout-max") {
    o.conns = 1000, o.rooms = 1, o.senders = 10, o.rate = 10, o.duration = 10;
    o.step = true;
  } else if (s == "bigroom") {
    o.conns = 10000, o.rooms = 1, o.senders = 5, o.rate = 10, o.duration = 20, o.drain = 10;
  } else if (s == "manyrooms") {
    o.conns = 10000, o.rooms = 1000, o.senders = 10000, o.rate = 0.5, o.duration = 20;
  } else if (s == "storm") {
    // 100 rooms of 150 (as idle), one sender in each at 1 msg/s, so every
    // cut client has something to recover; senders are never cut.
    o.conns = 15000, o.rooms = 100, o.senders = 100, o.rate = 1, o.duration = 15, o.drain = 15;
    o.storm = true, o.reconnect = true, o.cut_after = 3;
  } else if (s == "cluster") {
    // 200 receivers + 10 senders in one room; run.sh runs it twice against a
    // local 3-node cluster (same node, then across nodes with --sender-url).
    o.conns = 210, o.rooms = 1, o.senders = 10, o.rate = 10, o.duration = 10;
  } else if (s == "durable") {
    o.conns = 100, o.rooms = 1, o.senders = 100, o.window = 8, o.duration = 10;
  } else {
    usage_error("unknown scenario '" + s + "'");
  }
}

struct parsed {
  options o;
  bool shape_given = false;  // --rooms or --conns on the command line
};

const char* kAbout = R"(chat-bench: load generator for chatd (PROTOCOL v1).

Scenarios (preset the numbers below; explicit flags override):
  smoke       20 conns, 2 rooms, 2 senders x 10 msg/s, 2 s; exit 0 only if clean (CI)
  idle        19,000 conns over 100 rooms, hello + join, hold --duration (20 s)
  fanout      1,000 members in one room, 10 senders x 10 msg/s, 20 s
  fanout-max  1,000 members in one room; doubles the senders (x 10 msg/s) each
              step until p99 > --max-p99-ms or anything is lost, then bisects;
              reports the highest deliveries/s that held
  bigroom     10,000 members in one room, 5 senders x 10 msg/s, 20 s
  manyrooms   10,000 conns in 1,000 rooms of 10, every conn sends 0.5 msg/s, 20 s
  storm       15,000 conns over 100 rooms; 100 senders (never cut) x 1 msg/s for 15 s;
              3 s in, every other conn is cut (RST) and reconnects with jittered
              exponential backoff, rejoining with since/epoch
  cluster     210 conns in one room (200 receivers), 10 senders x 10 msg/s, 10 s;
              meant for a cluster: bench/run.sh cluster compares the same-node
              and the cross-node path (--sender-url on another node)
  durable     SQLite store, 10 s, runs twice: 1 room (4 writers x 16 in flight)
              and 100 rooms (100 writers, one per room, x 2 in flight), each
              sending as fast as acks come back (unless --rooms/--conns given)
)";

const char* kExit = R"(Exit: 0 clean run, 1 lost/out-of-order/duplicates/failed connections (or a
failed check), 2 usage error.)";

// ws://host[:port][/path] (messages/url.hpp); no TLS here.
void parse_url(const std::string& flag, const std::string& v, std::string& host, int& port,
               std::string& path) {
  chat::ws_url u;
  std::string err;
  if (!chat::parse_ws_url(v, u, err)) usage_error(flag + ": " + err + " ('" + v + "')");
  if (u.secure()) usage_error(flag + " must start with ws:// (no TLS here)");
  host = u.host;
  port = u.port;
  path = u.path;
}

// PID or PID,PID,...: a cluster's nodes are sampled together.
std::vector<int> parse_pids(const std::string& v) {
  std::vector<int> out;
  std::stringstream ss(v);
  std::string one;
  while (std::getline(ss, one, ',')) {
    char* end = nullptr;
    long pid = std::strtol(one.c_str(), &end, 10);
    if (one.empty() || *end || pid <= 0 || pid > INT32_MAX)
      usage_error("--server-pid must be a pid or a comma-separated list of pids");
    out.push_back(int(pid));
  }
  if (out.empty()) usage_error("--server-pid must be a pid or a comma-separated list of pids");
  return out;
}

parsed parse_args(int argc, char** argv) {
  parsed p;
  options& o = p.o;
  CLI::App app{kAbout, "chat-bench"};
  app.footer(kExit);
  app.get_formatter()->column_width(34);
  // As before: a flag given twice means its last value.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.option_defaults()->disable_flag_override();  // a switch takes no value
  // The scenario presets the numbers while the command line is read; the other
  // options are stored after that, so explicit flags override the preset.
  app.add_option_function<std::string>(
         "--scenario", [&o](const std::string& s) { apply_scenario(o, s); },
         "Preset: smoke idle fanout fanout-max bigroom manyrooms storm cluster durable")
      ->type_name("NAME")
      ->trigger_on_parse();
  auto num = [&app](const char* flag, auto& var, const char* name, const char* help,
                    const char* group) {
    return app.add_option(flag, var, help)->type_name(name)->capture_default_str()->group(group);
  };
  auto flag = [&app](const char* name, bool& var, const char* help, const char* group) {
    return app.add_flag(name, var, help)->group(group);
  };
  auto action = [&app](const char* name, std::function<void()> f, const char* help,
                       const char* group) {
    return app.add_flag_callback(name, std::move(f), help)->group(group);
  };

  const char* g = "Target";
  app.add_option_function<std::string>(
         "--url", [&o](const std::string& v) { parse_url("--url", v, o.host, o.port, o.path); },
         "ws://HOST:PORT/PATH, or --host, --port and --path")
      ->type_name("URL")
      ->group(g);
  app.add_option_function<std::string>(
         "--sender-url",
         [&o](const std::string& v) {
           parse_url("--sender-url", v, o.sender_host, o.sender_port, o.sender_path);
         },
         "senders connect (and join) here instead, e.g. another node of a cluster;\n"
         "receivers use the target above")
      ->type_name("URL")
      ->group(g);
  num("--host", o.host, "H", "server host", g);
  num("--port", o.port, "P", "server port", g);
  num("--path", o.path, "PATH", "WebSocket path", g);

  g = "Shape";
  num("--conns", o.conns, "N", "connections", g);
  num("--rooms", o.rooms, "R", "rooms bench-0..R-1", g);
  num("--senders", o.senders, "S", "first S conns send", g);
  num("--rate", o.rate, "X", "msg/s per sender", g);
  num("--window", o.window, "W",
      "W sends in flight per sender, as fast as acks come (rate ignored)", g);
  num("--duration", o.duration, "D", "seconds of the send/hold phase", g);
  num("--size", o.size, "B", "bytes of text per message, 1..4096", g);
  num("--drain", o.drain, "D", "max seconds to wait for acks, then deliveries", g);
  flag("--idempotency", o.idempotency, "send an idempotency_key with each message", g);
  action("--no-batch", [&o] { o.batch = false; },
         "one frame per outgoing object (default: join queued ones with \\n)", g);

  g = "Processes";
  num("--procs", o.procs, "P", "worker processes (0 = auto: <= 10,000 conns each)", g);
  num("--threads", o.threads, "T", "io_context threads per worker", g);
  num("--src-addrs", o.src_addrs, "K",
      "rotate source addresses 127.0.0.2..K+1 (-1 auto, 0 = don't bind)", g);
  num("--connect-concurrency", o.connect_concurrency, "N",
      "handshakes in flight, all workers together", g);
  num("--connect-timeout", o.connect_timeout, "S", "bound of the connect phase", g);
  num("--connect-retries", o.connect_retries, "N", "extra attempts per conn in the connect phase",
      g);

  g = "Identity";
  num("--jwt-secret", o.jwt_secret, "S",
      "hello with HS256 tokens (sub = name, exp = +24 h) instead of anonymous", g);
  num("--name-prefix", o.name_prefix, "P", "user names P<proc>-<i>", g);
  num("--room-prefix", o.room_prefix, "P", "room names P<k>", g);

  g = "Storm";
  action("--storm", [&o] { o.storm = o.reconnect = true; },
         "cut and reconnect as in the storm scenario", g);
  num("--cut-after", o.cut_after, "S", "seconds into the send phase when non-senders are cut", g);
  flag("--reconnect", o.reconnect, "reconnect after any drop", g);
  num("--backoff-base-ms", o.backoff_base_ms, "MS",
      "full jitter: attempt k waits U(0, min(max, base*2^k))", g);
  num("--backoff-max-ms", o.backoff_max_ms, "MS", "the backoff's cap", g);

  g = "Stepping (fanout-max)";
  flag("--step", o.step, "step the senders as fanout-max does", g);
  num("--step-factor", o.step_factor, "F", "senders grow by this factor each step", g);
  num("--max-p99-ms", o.max_p99_ms, "M", "a step holds while p99 <= this and nothing is lost", g);
  num("--max-steps", o.max_steps, "N", "steps at most", g);
  num("--refine-steps", o.refine_steps, "N", "bisection runs once bracketed", g);

  g = "Output";
  app.add_option_function<std::string>(
         "--server-pid", [&o](const std::string& v) { o.server_pids = parse_pids(v); },
         "sample the server's RSS and CPU from /proc (summed over all the pids:\n"
         "every node of a local cluster)")
      ->type_name("PID[,PID...]")
      ->group(g);
  flag("--json", o.json, "print one JSON object on stdout instead of the table", g);
  num("--json-out", o.json_out, "FILE", "also write that JSON object to FILE", g);
  flag("--quiet", o.quiet, "no progress on stderr", g);
  flag("--strict", o.strict, "errors, gaps and failed connections fail the run too", g);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    std::exit(app.exit(e));
  } catch (const CLI::ParseError& e) {
    usage_error(e.what());
  }
  p.shape_given = app.count("--rooms") > 0 || app.count("--conns") > 0;

  // Validation: everything bounded.
  if (o.conns < 1 || o.conns > 1'000'000) usage_error("--conns must be 1..1000000");
  if (o.rooms < 1 || o.rooms > o.conns) usage_error("--rooms must be 1..conns");
  if (o.senders < 0 || o.senders > o.conns) usage_error("--senders must be 0..conns");
  if (o.rate < 0 || o.rate > 100000) usage_error("--rate must be 0..100000");
  if (o.window < 0 || o.window > 10000) usage_error("--window must be 0..10000");
  if (o.duration < 0 || o.duration > 3600) usage_error("--duration must be 0..3600");
  if (o.size < 1 || o.size > 4096) usage_error("--size must be 1..4096");
  if (o.drain < 0 || o.drain > 600) usage_error("--drain must be 0..600");
  if (o.procs < 0 || o.procs > 64) usage_error("--procs must be 0..64");
  if (o.threads < 1 || o.threads > 64) usage_error("--threads must be 1..64");
  if (o.src_addrs < -1 || o.src_addrs > 250) usage_error("--src-addrs must be -1..250");
  if (o.connect_concurrency < 1) usage_error("--connect-concurrency must be >= 1");
  if (o.connect_timeout <= 0 || o.connect_timeout > 3600) usage_error("--connect-timeout must be 0..3600");
  if (o.connect_retries < 0 || o.connect_retries > 100) usage_error("--connect-retries must be 0..100");
  if (o.port < 1 || o.port > 65535) usage_error("--port must be 1..65535");
  if (o.cut_after < 0) usage_error("--cut-after must be >= 0");
  if (o.backoff_base_ms < 1 || o.backoff_max_ms < o.backoff_base_ms)
    usage_error("--backoff-base-ms must be >= 1 and <= --backoff-max-ms");
  if (o.step_factor <= 1.0 || o.step_factor > 100) usage_error("--step-factor must be > 1");
  if (o.max_steps < 1 || o.max_steps > 100) usage_error("--max-steps must be 1..100");
  if (o.refine_steps < 0 || o.refine_steps > 10) usage_error("--refine-steps must be 0..10");
  if (!o.sender_host.empty() && (o.sender_port < 1 || o.sender_port > 65535))
    usage_error("--sender-url: port must be 1..65535");
  for (const std::string* s : {&o.name_prefix, &o.room_prefix})
    for (char ch : *s)
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.'))
        usage_error("name and room prefixes: letters, digits, - _ . only");
  if (o.room_prefix.size() + 7 > 64 || o.room_prefix.empty()) usage_error("--room-prefix too long or empty");
  if (o.name_prefix.empty()) usage_error("--name-prefix must not be empty");
  g_quiet = o.quiet;
  return p;
}

// --- /proc sampling ------------------------------------------------------------------

struct proc_sample {
  bool ok = false;
  int64_t t = 0;
  long rss_kb = 0;
  double cpu_s = 0;
};

proc_sample sample_proc(int pid) {
  proc_sample s;
  s.t = now_ns();
  if (pid <= 0) return s;
  std::ifstream st("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  bool have_rss = false;
  while (std::getline(st, line))
    if (line.rfind("VmRSS:", 0) == 0) {
      s.rss_kb = std::atol(line.c_str() + 6);
      have_rss = true;
    }
  std::ifstream sf("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(sf)), std::istreambuf_iterator<char>());
  auto rp = all.rfind(')');
  if (!have_rss || rp == std::string::npos) return s;
  std::istringstream is(all.substr(rp + 2));
  std::vector<std::string> f;
  std::string x;
  while (is >> x) f.push_back(x);
  if (f.size() < 13) return s;
  // After "pid (comm) ": state is field 3, utime 14, stime 15.
  double ticks = double(sysconf(_SC_CLK_TCK));
  s.cpu_s = (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / ticks;
  s.ok = true;
  return s;
}

// Whole machine: busy and total jiffies over all CPUs (/proc/stat), to see how
// much of the machine other work took during a run.
struct machine_sample {
  bool ok = false;
  double busy = 0, total = 0;
};
machine_sample sample_machine() {
  machine_sample m;
  std::ifstream f("/proc/stat");
  std::string cpu;
  double v[8] = {0};
  if (!(f >> cpu) || cpu != "cpu") return m;
  for (double& x : v) f >> x;
  // user nice system idle iowait irq softirq steal
  m.busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  m.total = m.busy + v[3] + v[4];
  m.ok = true;
  return m;
}

// Several pids (the nodes of a local cluster): RSS and CPU summed; ok only if
// every one could be read, so a node that died does not look like a drop.
proc_sample sample_procs(const std::vector<int>& pids) {
  proc_sample sum;
  sum.t = now_ns();
  if (pids.empty()) return sum;
  sum.ok = true;
  for (int pid : pids) {
    proc_sample one = sample_proc(pid);
    sum.ok = sum.ok && one.ok;
    sum.rss_kb += one.rss_kb;
    sum.cpu_s += one.cpu_s;
  }
  return sum;
}

std::string join_pids(const std::vector<int>& pids) {
  std::string out;
  for (int pid : pids) out += (out.empty() ? "" : ",") + std::to_string(pid);
  return out;
}

double cpu_pct(const proc_sample& a, const proc_sample& b) {
  if (!a.ok || !b.ok || b.t <= a.t) return -1;
  return (b.cpu_s - a.cpu_s) / (double(b.t - a.t) / 1e9) * 100.0;
}

// --- workers ---------------------------------------------------------------------------

struct worker {
  pid_t pid = -1;
  int ctrl = -1, out = -1;
  std::string buf;
  bool eof = false;
  std::map<std::string, json> events;
};

void send_cmd(worker& w, const json& j) {
  std::string s = j.dump() + "\n";
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(w.ctrl, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the worker died: noticed on its pipe
    }
    off += size_t(n);
  }
}

// Reads worker events until every worker has sent `ev` or the deadline passes.
// Calls tick() about every 100 ms. Returns false (with a reason) on timeout,
// worker death or a fatal event.
bool wait_all(std::vector<worker>& ws, const std::string& ev, int64_t deadline,
              const std::function<void()>& tick, std::string& why) {
  int64_t next_tick = now_ns();
  for (;;) {
    bool all = true;
    for (auto& w : ws) {
      if (w.events.count("fatal")) {
        why = "worker " + std::to_string(w.pid) + ": " + w.events["fatal"].value("error", "?");
        return false;
      }
      if (!w.events.count(ev)) {
        all = false;
        if (w.eof) {
          why = "worker " + std::to_string(w.pid) + " exited before '" + ev + "'";
          return false;
        }
      }
    }
    if (all) return true;
    int64_t now = now_ns();
    if (now >= deadline) {
      why = "timed out waiting for '" + ev + "' from the workers";
      return false;
    }
    if (now >= next_tick) {
      if (tick) tick();
      next_tick = now + 100'000'000;
    }
    std::vector<pollfd> pf;
    for (auto& w : ws) pf.push_back({w.eof ? -1 : w.out, POLLIN, 0});
    int to = int(std::min<int64_t>({(deadline - now) / 1'000'000 + 1, 100}));
    int r = ::poll(pf.data(), pf.size(), to);
    if (r < 0 && errno != EINTR) {
      why = std::string("poll: ") + std::strerror(errno);
      return false;
    }
    for (size_t i = 0; i < ws.size(); ++i) {
      if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char tmp[1 << 16];
      ssize_t n = ::read(ws[i].out, tmp, sizeof tmp);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        ws[i].eof = true;
        continue;
      }
      ws[i].buf.append(tmp, size_t(n));
      size_t nl;
      while ((nl = ws[i].buf.find('\n')) != std::string::npos) {
        json j = json::parse(ws[i].buf.substr(0, nl), nullptr, false);
        ws[i].buf.erase(0, nl + 1);
        if (j.is_object() && j.contains("ev") && j["ev"].is_string()) {
          std::string key = j["ev"].get<std::string>();
          ws[i].events[key] = std::move(j);
        }
      }
    }
  }
}

void reap(std::vector<worker>& ws, bool kill_them) {
  for (auto& w : ws) {
    if (w.pid <= 0) continue;
    if (kill_them) ::kill(w.pid, SIGKILL);
    int st = 0;
    // Bounded: give a worker 5 s to exit after its report, then kill it.
    int64_t until = now_ns() + 5'000'000'000;
    while (::waitpid(w.pid, &st, WNOHANG) == 0) {
      if (now_ns() > until) {
        ::kill(w.pid, SIGKILL);
        ::waitpid(w.pid, &st, 0);
        break;
      }
      ::usleep(10000);
    }
    if (w.ctrl >= 0) ::close(w.ctrl);
    if (w.out >= 0) ::close(w.out);
    w.pid = -1;
  }
}

std::string fmt_ms(double ms) {
  char b[32];
  if (ms < 1)
    std::snprintf(b, sizeof b, "%.3f", ms);
  else if (ms < 100)
    std::snprintf(b, sizeof b, "%.2f", ms);
  else
    std::snprintf(b, sizeof b, "%.1f", ms);
  return b;
}

// One complete run: fork, connect, send, drain, merge. Returns the merged
// result (an ordered JSON object with "ok" and "failures").
ojson run_once(const options& o) {
  ojson R;
  std::vector<std::string> failures;
  int P = o.procs;
  int T = o.threads;

  proc_sample s_before = sample_procs(o.server_pids), s_idle, s_go, s_end, s_after;
  machine_sample m_go, m_end;
  long rss_peak = s_before.rss_kb;
  if (!o.server_pids.empty() && !s_before.ok)
    logf("warning: cannot read /proc/{%s} (server sampling off)", join_pids(o.server_pids).c_str());

  char what[64];
  if (o.window > 0)
    std::snprintf(what, sizeof what, "window %d", o.window);
  else
    std::snprintf(what, sizeof what, "%g msg/s", o.rate);
  logf("run: %d conns, %d rooms, %d senders x %s, %g s, %d B, %d procs x %d threads", o.conns,
       o.rooms, o.senders, what, o.duration, o.size, P, T);
  std::string loadavg;
  {
    std::ifstream la("/proc/loadavg");
    std::getline(la, loadavg);
  }

  std::vector<worker> ws(static_cast<size_t>(P));
  std::fflush(nullptr);
  for (int p = 0; p < P; ++p) {
    int c[2], r[2];
    if (::pipe2(c, O_CLOEXEC) != 0 || ::pipe2(r, O_CLOEXEC) != 0) {
      std::perror("pipe");
      std::exit(1);
    }
    pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("fork");
      std::exit(1);
    }
    if (pid == 0) {
      for (int q = 0; q < p; ++q) {
        ::close(ws[size_t(q)].ctrl);
        ::close(ws[size_t(q)].out);
      }
      ::close(c[1]);
      ::close(r[0]);
      worker_main(o, p, P, c[0], r[1]);
    }
    ::close(c[0]);
    ::close(r[1]);
    ws[size_t(p)].pid = pid;
    ws[size_t(p)].ctrl = c[1];
    ws[size_t(p)].out = r[0];
  }

  auto abort_run = [&](const std::string& why) {
    for (auto& w : ws) send_cmd(w, {{"cmd", "abort"}});
    reap(ws, true);
    R["ok"] = false;
    R["failures"] = std::vector<std::string>{why};
    logf("run failed: %s", why.c_str());
    return R;
  };

  std::string why;
  int64_t t_connect0 = now_ns();
  int64_t last_progress = t_connect0;
  auto tick = [&] {
    proc_sample s = sample_procs(o.server_pids);
    if (s.ok) rss_peak = std::max(rss_peak, s.rss_kb);
  };
  if (!wait_all(ws, "joined", t_connect0 + int64_t((o.connect_timeout + 15) * 1e9),
                [&] {
                  tick();
                  if (now_ns() - last_progress > 5'000'000'000) {
                    last_progress = now_ns();
                    logf("  connecting... (%.0f s)", double(last_progress - t_connect0) / 1e9);
                  }
                },
                why))
    return abort_run(why);
  int joined = 0;
  double connect_phase = 0;
  for (auto& w : ws) {
    joined += w.events["joined"].value("ok", 0);
    connect_phase = std::max(connect_phase, w.events["joined"].value("connect_phase_s", 0.0));
  }
  s_idle = sample_procs(o.server_pids);
  logf("joined %d/%d in %.2f s%s", joined, o.conns, connect_phase,
       s_idle.ok ? (", server RSS " + std::to_string(s_idle.rss_kb / 1024) + " MiB").c_str() : "");

  int64_t t0 = now_ns() + 300'000'000;
  int64_t t_end = t0 + int64_t(o.duration * 1e9);
  for (auto& w : ws) send_cmd(w, {{"cmd", "go"}, {"t0", t0}});
  bool go_sampled = false, end_sampled = false;
  auto tick2 = [&] {
    int64_t now = now_ns();
    proc_sample s = sample_procs(o.server_pids);
    if (s.ok) rss_peak = std::max(rss_peak, s.rss_kb);
    if (!go_sampled && now >= t0) {
      s_go = s;
      m_go = sample_machine();
      go_sampled = true;
    }
    if (!end_sampled && now >= t_end) {
      s_end = s;
      m_end = sample_machine();
      end_sampled = true;
    }
    if (now - last_progress > 5'000'000'000 && now > t0) {
      last_progress = now;
      logf("  %s... %.0f/%g s", o.senders ? "sending" : "holding", double(now - t0) / 1e9, o.duration);
    }
  };
  while (now_ns() < t0) ::usleep(1000);
  tick2();
  if (!wait_all(ws, "sent", t_end + int64_t((o.drain + 15) * 1e9), tick2, why))
    return abort_run(why);
  if (!end_sampled) {
    s_end = sample_procs(o.server_pids);
    m_end = sample_machine();
  }

  json targets = json::object();
  std::map<std::string, uint64_t> tmax;
  for (auto& w : ws)
    for (auto& [k, v] : w.events["sent"]["max_acked"].items())
      tmax[k] = std::max(tmax[k], v.get<uint64_t>());
  for (auto& [k, v] : tmax) targets[k] = v;
  int64_t drain_deadline = now_ns() + int64_t(o.drain * 1e9);
  for (auto& w : ws) send_cmd(w, {{"cmd", "drain"}, {"targets", targets}, {"deadline", drain_deadline}});
  if (!wait_all(ws, "done", drain_deadline + 20'000'000'000, tick, why)) return abort_run(why);
  s_after = sample_procs(o.server_pids);
  reap(ws, false);

  // --- merge ---
  std::map<std::string, uint64_t> C, errors, close_codes, conn_errors;
  histogram lat, ack, con, recon, rlat;
  std::map<std::string, interval_set> acked;
  uint64_t unacked = 0, still_pending = 0;
  int joined_ok = 0, connected_at_end = 0, storm_back = 0;
  int64_t t_cut = 0, last_back = 0;
  double cpu_send = 0, drain_s = 0;
  for (auto& w : ws) {
    json& d = w.events["done"];
    for (auto& [k, v] : d["counters"].items()) C[k] += v.get<uint64_t>();
    for (auto& [k, v] : d["errors"].items()) errors[k] += v.get<uint64_t>();
    for (auto& [k, v] : d["close_codes"].items()) close_codes[k] += v.get<uint64_t>();
    for (auto& [k, v] : d["conn_errors"].items()) conn_errors[k] += v.get<uint64_t>();
    lat.merge(histogram::from_json(d["hist"]["latency"]));
    ack.merge(histogram::from_json(d["hist"]["ack"]));
    con.merge(histogram::from_json(d["hist"]["connect"]));
    recon.merge(histogram::from_json(d["hist"]["reconnect"]));
    rlat.merge(histogram::from_json(d["hist"]["recovered_latency"]));
    for (auto& [k, v] : d["acked"].items()) acked[k].merge(interval_set::from_json(v));
    unacked += d.value("unacked", uint64_t{0});
    still_pending += d.value("still_pending", uint64_t{0});
    joined_ok += d.value("joined_ok", 0);
    connected_at_end += d.value("connected_at_end", 0);
    cpu_send += d.value("cpu_send_s", 0.0);
    drain_s = std::max(drain_s, d.value("drain_s", 0.0));
    storm_back += d["storm"].value("back", 0);
    t_cut = std::max<int64_t>(t_cut, d["storm"].value("t_cut", int64_t{0}));
    last_back = std::max<int64_t>(last_back, d["storm"].value("last_back", int64_t{0}));
  }
  uint64_t expected = 0, lost = 0, receivers_with_loss = 0, lost_by_absent = 0;
  static const interval_set empty_set;
  for (auto& w : ws)
    for (auto& rcv : w.events["done"]["receivers"]) {
      std::string room = std::to_string(rcv[0].get<int>());
      uint64_t base = rcv[1].get<uint64_t>();
      auto it = acked.find(room);
      const interval_set& A = it == acked.end() ? empty_set : it->second;
      interval_set got = interval_set::from_json(rcv[2]);
      // Only acks the drain waited for count (seq <= the room's target); acks
      // that came in after the targets were set are reported apart.
      auto tt = tmax.find(room);
      uint64_t upto = tt == tmax.end() ? 0 : tt->second;
      uint64_t e = A.count_above(base, upto), have = A.intersect_count(got, base, upto);
      expected += e;
      lost += e - have;
      if (e != have) ++receivers_with_loss;
      // Receivers not connected at the end (dropped, or not back from a storm)
      // lost what they missed: counted apart so the two causes can be told apart.
      if (rcv.size() > 3 && rcv[3].get<int>() == 0) lost_by_absent += e - have;
    }
  for (auto& w : ws) w.events.clear();
  uint64_t acked_after_target = 0;
  for (auto& [room, A] : acked) {
    auto tt = tmax.find(room);
    acked_after_target += A.count_above(tt == tmax.end() ? 0 : tt->second);
  }

  double dur = o.duration > 0 ? o.duration : 1;
  ojson& P_ = R["params"];
  P_["scenario"] = o.scenario.empty() ? "custom" : o.scenario;
  P_["url"] = "ws://" + o.host + ":" + std::to_string(o.port) + o.path;
  if (!o.sender_host.empty())
    P_["sender_url"] = "ws://" + o.sender_host + ":" + std::to_string(o.sender_port) + o.sender_path;
  P_["conns"] = o.conns;
  P_["rooms"] = o.rooms;
  P_["senders"] = o.senders;
  if (o.window > 0)
    P_["window"] = o.window;
  else
    P_["rate_per_sender"] = o.rate;
  P_["offered_msgs_per_s"] = o.window > 0 ? 0.0 : o.senders * o.rate;
  P_["duration_s"] = o.duration;
  P_["size_bytes"] = o.size;
  P_["procs"] = P;
  P_["threads"] = T;
  P_["src_addrs"] = o.src_addrs;
  P_["auth"] = o.jwt_secret.empty() ? "anonymous" : "jwt-hs256";
  P_["batch"] = o.batch;
  P_["loadavg_at_start"] = loadavg;  // other work on the machine skews every figure

  ojson& Cn = R["connections"];
  Cn["requested"] = o.conns;
  Cn["joined"] = joined_ok;
  Cn["failed"] = o.conns - joined_ok;
  Cn["dropped"] = C["dropped"];
  Cn["connected_at_end"] = connected_at_end;
  Cn["attempts"] = C["attempts"];
  Cn["connect_phase_s"] = connect_phase;
  Cn["connect_ms"] = con.summary_ms();

  ojson& M = R["messages"];
  M["sent"] = C["sent"];
  M["acked"] = C["acked"];
  M["unacked"] = unacked;
  M["send_errors"] = C["send_errors"];
  M["send_skipped"] = C["send_skipped"];
  M["acked_per_s"] = double(C["acked"]) / dur;
  M["received"] = C["received"];
  M["expected"] = expected;
  M["deliveries_per_s"] = double(C["received"]) / dur;
  M["lost"] = lost;
  M["receivers_with_loss"] = receivers_with_loss;
  M["lost_by_disconnected"] = lost_by_absent;
  M["acked_after_drain_target"] = acked_after_target;  // acked too late to be checked
  M["duplicates"] = C["dup"];
  M["out_of_order"] = C["ooo"];
  M["gaps"] = C["gaps"];
  M["gap_msgs"] = C["gap_msgs"];
  M["stale"] = C["stale"];
  M["still_pending_after_drain"] = still_pending;
  M["drain_s"] = drain_s;

  R["latency_ms"] = lat.summary_ms();
  R["ack_latency_ms"] = ack.summary_ms();

  ojson& F = R["frames"];
  F["rx_frames"] = C["frames_rx"];
  F["rx_objects"] = C["objects_rx"];
  F["rx_objects_per_frame"] = C["frames_rx"] ? double(C["objects_rx"]) / double(C["frames_rx"]) : 0.0;
  F["rx_bytes"] = C["bytes_rx"];
  F["tx_frames"] = C["frames_tx"];
  F["tx_objects"] = C["objects_tx"];
  F["other_events"] = C["other_events"];
  F["bad_json"] = C["bad_json"];

  R["errors"] = errors;
  R["close_codes"] = close_codes;
  R["conn_errors"] = conn_errors;

  if (o.storm) {
    ojson& S = R["storm"];
    S["cut"] = C["cut"];
    S["back"] = storm_back;
    S["all_back"] = C["cut"] > 0 && uint64_t(storm_back) == C["cut"];
    // Seconds from the cut until the last cut client was joined again (if not
    // all came back: until the last one that did).
    S["all_back_s"] = (last_back > t_cut && t_cut > 0) ? double(last_back - t_cut) / 1e9 : 0.0;
    S["reconnect_ms"] = recon.summary_ms();
    S["recovery_ok"] = C["recovery_ok"];
    S["recovery_failed"] = C["recovery_failed"];
    S["recovered_msgs"] = C["recovered_msgs"];
    S["recovered_latency_ms"] = rlat.summary_ms();
  }

  if (!o.server_pids.empty()) {
    ojson& Sv = R["server"];
    Sv["pid"] = o.server_pids[0];
    if (o.server_pids.size() > 1) Sv["pids"] = o.server_pids;  // figures are their sum
    Sv["sampled"] = s_before.ok;
    if (s_before.ok) {
      Sv["rss_before_kb"] = s_before.rss_kb;
      Sv["rss_idle_kb"] = s_idle.rss_kb;
      Sv["rss_peak_kb"] = rss_peak;
      Sv["rss_end_load_kb"] = s_end.rss_kb;
      Sv["rss_after_kb"] = s_after.rss_kb;
      Sv["rss_per_conn_bytes"] =
          joined_ok > 0 ? double(s_idle.rss_kb - s_before.rss_kb) * 1024.0 / joined_ok : 0.0;
      Sv["cpu_connect_pct"] = cpu_pct(s_before, s_idle);
      Sv["cpu_load_pct"] = cpu_pct(s_go, s_end);
      Sv["cpu_drain_pct"] = cpu_pct(s_end, s_after);
    }
  }
  R["bench"]["cpu_load_pct"] = cpu_send / dur * 100.0;
  {
    // The machine during the send phase, in % of one core (2 cores = 200 %):
    // what is left after the server and the bench is other work, which skews
    // every latency figure.
    ojson& Mc = R["machine"];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    Mc["cpus"] = ncpu;
    Mc["loadavg_at_start"] = loadavg;
    if (m_go.ok && m_end.ok && m_end.total > m_go.total) {
      double busy = (m_end.busy - m_go.busy) / (m_end.total - m_go.total) * double(ncpu) * 100.0;
      Mc["busy_pct_during_load"] = busy;
      double server = R.contains("server") ? R["server"].value("cpu_load_pct", 0.0) : 0.0;
      Mc["others_pct_during_load"] = std::max(0.0, busy - std::max(0.0, server) - cpu_send / dur * 100.0);
    }
  }

  // --- verdict ---
  auto fail = [&](const std::string& s) { failures.push_back(s); };
  if (joined_ok < o.conns) fail(std::to_string(o.conns - joined_ok) + " connections failed to join");
  if (o.expect_clean) {
    if (lost) fail(std::to_string(lost) + " messages lost");
    if (C["ooo"]) fail(std::to_string(C["ooo"]) + " out of order");
    if (C["dup"]) fail(std::to_string(C["dup"]) + " duplicates");
    if (unacked) fail(std::to_string(unacked) + " sends never acked");
    if (!o.storm && C["dropped"]) fail(std::to_string(C["dropped"]) + " connections dropped");
  }
  if (o.storm && !(C["cut"] > 0 && uint64_t(storm_back) == C["cut"]))
    fail("storm: " + std::to_string(storm_back) + "/" + std::to_string(C["cut"]) + " back");
  if (o.strict) {
    if (C["gaps"]) fail(std::to_string(C["gaps"]) + " seq gaps");
    uint64_t ne = 0;
    for (auto& [k, v] : errors) ne += v;
    if (ne) fail(std::to_string(ne) + " error events");
    if (C["send_errors"]) fail(std::to_string(C["send_errors"]) + " send errors");
    if (C["bad_json"]) fail(std::to_string(C["bad_json"]) + " unparsable objects");
    if (!conn_errors.empty()) fail("connection errors (see conn_errors)");
    if (!close_codes.empty()) fail("connections closed by the server (see close_codes)");
    if (o.senders > 0 && C["received"] == 0) fail("nothing received");
  }
  R["ok"] = failures.empty();
  R["failures"] = failures;
  return R;
}

// Did a fanout-max step hold?
bool step_held(const ojson& r, double max_p99) {
  if (!r.value("ok", false)) return false;
  return r["latency_ms"].value("p99", 1e18) <= max_p99 && r["messages"].value("lost", 1) == 0;
}

// --- output ------------------------------------------------------------------------------

void print_hist_line(const char* label, const ojson& h) {
  if (!h.is_object() || h.value("count", 0) == 0) {
    std::printf("  %-16s (none)\n", label);
    return;
  }
  std::printf("  %-16s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s ms  (n=%llu)\n", label,
              fmt_ms(h["p50"]).c_str(), fmt_ms(h["p90"]).c_str(), fmt_ms(h["p99"]).c_str(),
              fmt_ms(h["p999"]).c_str(), fmt_ms(h["max"]).c_str(),
              (unsigned long long)h["count"].get<uint64_t>());
}

std::string map_str(const ojson& m) {
  if (!m.is_object() || m.empty()) return "none";
  std::string s;
  for (auto& [k, v] : m.items()) {
    if (!s.empty()) s += ", ";
    s += k + ": " + std::to_string(v.get<uint64_t>());
  }
  return s;
}

void print_run(const ojson& r) {
  if (!r.contains("params")) {
    std::printf("  run failed: %s\n", r["failures"].dump().c_str());
    return;
  }
  const ojson& p = r["params"];
  char what[64];
  if (p["senders"].get<int>() == 0)
    std::snprintf(what, sizeof what, "(hold only)");
  else if (p.contains("window"))
    std::snprintf(what, sizeof what, "window %d", p["window"].get<int>());
  else
    std::snprintf(what, sizeof what, "%g msg/s", p["rate_per_sender"].get<double>());
  std::printf("  %-16s %d conns, %d rooms, %d senders x %s, %g s, %d B text, %d procs x %d threads\n",
              "run", p["conns"].get<int>(), p["rooms"].get<int>(), p["senders"].get<int>(), what,
              p["duration_s"].get<double>(), p["size_bytes"].get<int>(), p["procs"].get<int>(),
              p["threads"].get<int>());
  if (p.contains("sender_url"))
    std::printf("  %-16s receivers %s, senders %s\n", "urls", p.value("url", "?").c_str(),
                p.value("sender_url", "?").c_str());
  std::printf("  %-16s %s (load average at start: 1, 5, 15 min, runnable/total)\n", "machine",
              p.value("loadavg_at_start", "?").c_str());
  const ojson& c = r["connections"];
  std::printf("  %-16s requested %d  joined %d  failed %d  dropped %llu  (connect phase %.2f s; %llu connection attempts in all, reconnects included)\n",
              "connections", c["requested"].get<int>(), c["joined"].get<int>(), c["failed"].get<int>(),
              (unsigned long long)c["dropped"].get<uint64_t>(), c["connect_phase_s"].get<double>(),
              (unsigned long long)c["attempts"].get<uint64_t>());
  print_hist_line("connect time", c["connect_ms"]);
  const ojson& m = r["messages"];
  std::printf("  %-16s sent %llu  acked %llu (%.0f/s)  unacked %llu  send errors %llu\n", "sends",
              (unsigned long long)m["sent"].get<uint64_t>(), (unsigned long long)m["acked"].get<uint64_t>(),
              m["acked_per_s"].get<double>(), (unsigned long long)m["unacked"].get<uint64_t>(),
              (unsigned long long)m["send_errors"].get<uint64_t>());
  std::printf("  %-16s received %llu of %llu expected  -> %.0f deliveries/s\n", "deliveries",
              (unsigned long long)m["received"].get<uint64_t>(), (unsigned long long)m["expected"].get<uint64_t>(),
              m["deliveries_per_s"].get<double>());
  std::printf("  %-16s lost %llu (%llu by receivers not connected at the end)  duplicates %llu  out-of-order %llu  gaps %llu (%llu msgs)\n", "integrity",
              (unsigned long long)m["lost"].get<uint64_t>(), (unsigned long long)m["lost_by_disconnected"].get<uint64_t>(),
              (unsigned long long)m["duplicates"].get<uint64_t>(),
              (unsigned long long)m["out_of_order"].get<uint64_t>(), (unsigned long long)m["gaps"].get<uint64_t>(),
              (unsigned long long)m["gap_msgs"].get<uint64_t>());
  if (m.value("still_pending_after_drain", uint64_t{0}) > 0)
    std::printf("  %-16s %llu receivers were still behind when the drain ended (%.1f s): their 'lost' may be late\n",
                "", (unsigned long long)m["still_pending_after_drain"].get<uint64_t>(), m["drain_s"].get<double>());
  if (m.value("acked_after_drain_target", uint64_t{0}) > 0)
    std::printf("  %-16s %llu messages were acked only after the drain started: not checked for loss\n", "",
                (unsigned long long)m["acked_after_drain_target"].get<uint64_t>());
  print_hist_line("delivery latency", r["latency_ms"]);
  print_hist_line("ack latency", r["ack_latency_ms"]);
  const ojson& f = r["frames"];
  std::printf("  %-16s %llu frames, %llu objects (%.2f per frame), %.1f MiB\n", "received",
              (unsigned long long)f["rx_frames"].get<uint64_t>(), (unsigned long long)f["rx_objects"].get<uint64_t>(),
              f["rx_objects_per_frame"].get<double>(), double(f["rx_bytes"].get<uint64_t>()) / 1048576.0);
  std::printf("  %-16s %s\n", "errors", map_str(r["errors"]).c_str());
  std::printf("  %-16s %s\n", "close codes", map_str(r["close_codes"]).c_str());
  if (!r["conn_errors"].empty()) std::printf("  %-16s %s\n", "conn errors", map_str(r["conn_errors"]).c_str());
  if (r.contains("storm")) {
    const ojson& s = r["storm"];
    std::printf("  %-16s cut %llu  back %d  %s %.2f s after the cut  recovered ok %llu / failed %llu (%llu msgs)\n",
                "storm", (unsigned long long)s["cut"].get<uint64_t>(), s["back"].get<int>(),
                s["all_back"].get<bool>() ? "all back" : "NOT all back; last one back",
                s["all_back_s"].get<double>(), (unsigned long long)s["recovery_ok"].get<uint64_t>(),
                (unsigned long long)s["recovery_failed"].get<uint64_t>(),
                (unsigned long long)s["recovered_msgs"].get<uint64_t>());
    print_hist_line("reconnect time", s["reconnect_ms"]);
  }
  if (r.contains("server") && r["server"].value("sampled", false)) {
    const ojson& s = r["server"];
    std::string who = "pid " + std::to_string(s["pid"].get<int>());
    if (s.contains("pids"))  // a cluster: the figures are the sum over its nodes
      who = "pids " + join_pids(s["pids"].get<std::vector<int>>());
    std::printf("  %-16s %s  RSS before %.1f MiB, idle %.1f MiB (%+.2f KiB/conn), peak %.1f MiB, after %.1f MiB\n",
                "server", who.c_str(), s["rss_before_kb"].get<long>() / 1024.0,
                s["rss_idle_kb"].get<long>() / 1024.0, s["rss_per_conn_bytes"].get<double>() / 1024.0,
                s["rss_peak_kb"].get<long>() / 1024.0, s["rss_after_kb"].get<long>() / 1024.0);
    std::printf("  %-16s CPU connect %.0f%%  load %.0f%%  drain+close %.0f%%  (100%% = one core)\n", "",
                s["cpu_connect_pct"].get<double>(), s["cpu_load_pct"].get<double>(),
                s["cpu_drain_pct"].get<double>());
  }
  std::printf("  %-16s CPU during load %.0f%% (all workers)\n", "bench", r["bench"]["cpu_load_pct"].get<double>());
  if (r.contains("machine") && r["machine"].contains("busy_pct_during_load"))
    std::printf("  %-16s %ld CPUs, busy %.0f%% during load, of which other processes %.0f%%\n", "machine",
                r["machine"]["cpus"].get<long>(), r["machine"]["busy_pct_during_load"].get<double>(),
                r["machine"]["others_pct_during_load"].get<double>());
  if (r.value("ok", false))
    std::printf("  %-16s OK\n", "result");
  else {
    std::string s;
    for (auto& x : r["failures"]) s += (s.empty() ? "" : "; ") + x.get<std::string>();
    std::printf("  %-16s FAIL: %s\n", "result", s.c_str());
  }
}

// The issue's targets, shown beside the figures (they do not change the exit code).
ojson targets_for(const std::string& sc, const ojson& r) {
  ojson t = ojson::array();
  auto add = [&](const std::string& what, bool met) { t.push_back({{"target", what}, {"met", met}}); };
  if (!r.contains("params") && sc != "fanout-max") return t;
  if (sc == "idle") {
    add("19,000 connections joined", r["connections"]["joined"].get<int>() >= 19000);
    if (r.contains("server") && r["server"].value("sampled", false))
      add("RSS growth <= 6 KiB per connection", r["server"]["rss_per_conn_bytes"].get<double>() <= 6 * 1024);
  } else if (sc == "fanout") {
    add("p99 <= 5 ms", r["latency_ms"]["p99"].get<double>() <= 5);
    add("max <= 50 ms", r["latency_ms"]["max"].get<double>() <= 50);
    add("0 lost, 0 out of order", r["messages"]["lost"] == 0 && r["messages"]["out_of_order"] == 0);
  } else if (sc == "bigroom") {
    add("p99 <= 100 ms", r["latency_ms"]["p99"].get<double>() <= 100);
    add("0 lost", r["messages"]["lost"] == 0);
  } else if (sc == "manyrooms") {
    add("p99 <= 10 ms", r["latency_ms"]["p99"].get<double>() <= 10);
    add("0 lost", r["messages"]["lost"] == 0);
  } else if (sc == "storm") {
    add("all back and joined within 5 s",
        r["storm"].value("all_back", false) && r["storm"]["all_back_s"].get<double>() <= 5);
    add("0 lost", r["messages"]["lost"] == 0);
  } else if (sc == "durable") {
    add(">= 20,000 acked sends/s", r["messages"]["acked_per_s"].get<double>() >= 20000);
    add("ack p99 < 20 ms", r["ack_latency_ms"]["p99"].get<double>() < 20);
  }
  return t;
}

void write_json_out(const options& o, const ojson& out) {
  if (o.json_out.empty()) return;
  std::ofstream f(o.json_out);
  f << out.dump(2) << "\n";
  if (!f) std::fprintf(stderr, "chat-bench: cannot write %s\n", o.json_out.c_str());
}

void print_targets(const ojson& t) {
  for (auto& x : t)
    std::printf("  %-16s %s: %s\n", "target", x["target"].get<std::string>().c_str(),
                x["met"].get<bool>() ? "met" : "MISSED");
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  ::signal(SIGPIPE, SIG_IGN);
  parsed pa = parse_args(argc, argv);
  options o = pa.o;

  // Open files: raise the soft limit to the hard one.
  struct rlimit rl {};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  ::getrlimit(RLIMIT_NOFILE, &rl);
  long nofile = long(rl.rlim_cur);
  long per_proc_max = std::max(1L, std::min(10000L, nofile - 200));
  if (o.procs == 0) o.procs = int((o.conns + per_proc_max - 1) / per_proc_max);
  if ((o.conns + o.procs - 1) / o.procs > nofile - 100)
    usage_error("ulimit -n is " + std::to_string(nofile) + ": use more --procs for " +
                std::to_string(o.conns) + " connections");
  if (o.procs > o.conns) o.procs = o.conns;
  if (o.src_addrs < 0)
    o.src_addrs = o.host.rfind("127.", 0) == 0 ? int(std::min(8, std::max(1, (o.conns + 4999) / 5000))) : 0;
  if (o.scenario == "idle" || (o.senders == 0 && o.window == 0)) o.senders = 0;

  ojson out;
  out["tool"] = "chat-bench";
  out["scenario"] = o.scenario.empty() ? "custom" : o.scenario;
  out["nofile"] = nofile;
  {
    char d[64];
    std::time_t tt = std::time(nullptr);
    std::strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
    out["date"] = d;
    std::string cmd;
    for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
    out["command"] = cmd;
  }
  bool ok = true;

  if (o.step) {
    // fanout-max: raise the total send rate step by step (more senders at the same
    // per-sender rate, so the per-connection rate limit is never the limit), then
    // bisect between the last step that held and the first that did not.
    ojson steps = ojson::array();
    int lo = 0, hi = 0;  // senders: highest that held, lowest that did not (0 = none yet)
    ojson best;
    int s = std::max(1, o.senders);
    int refined = 0;
    for (int k = 0; k < o.max_steps + o.refine_steps; ++k) {
      options q = o;
      q.senders = s;
      ojson r = run_once(q);
      bool held = step_held(r, o.max_p99_ms);
      r["held"] = held;
      logf("step %d: %d senders x %g msg/s -> %.0f deliveries/s, p99 %s ms, lost %s: %s", k + 1, s,
           o.rate, r.contains("messages") ? r["messages"]["deliveries_per_s"].get<double>() : 0.0,
           r.contains("latency_ms") ? fmt_ms(r["latency_ms"]["p99"]).c_str() : "-",
           r.contains("messages") ? r["messages"]["lost"].dump().c_str() : "-", held ? "held" : "did not hold");
      steps.push_back(r);
      ::sleep(1);  // let the server close the step's connections
      if (held) {
        lo = s;
        best = r;
      } else {
        hi = s;
      }
      if (hi == 0) {  // still climbing
        if (s >= o.conns || k + 1 >= o.max_steps) break;
        s = std::min(o.conns, std::max(s + 1, int(std::lround(s * o.step_factor))));
      } else if (lo == 0) {  // the first step failed: step down
        if (s <= 1 || k + 1 >= o.max_steps) break;
        s = std::max(1, int(std::lround(s / o.step_factor)));
        if (s == hi) s = hi - 1;
      } else {  // bracketed: bisect (to 5 %)
        if (hi - lo <= std::max(1, lo / 20) || refined >= o.refine_steps) break;
        ++refined;
        s = (lo + hi) / 2;
      }
    }
    out["steps"] = steps;
    out["max_p99_ms"] = o.max_p99_ms;
    if (best.is_object()) {
      out["best"] = best;
      out["max_deliveries_per_s"] = best["messages"]["deliveries_per_s"];
    } else {
      out["max_deliveries_per_s"] = 0;
    }
    ojson t = ojson::array();
    double md = out["max_deliveries_per_s"].get<double>();
    t.push_back({{"target", ">= 500,000 deliveries/s with p99 <= 100 ms and 0 lost"},
                 {"met", md >= 500000 && o.max_p99_ms <= 100}});
    out["targets"] = t;
    ok = best.is_object();
    out["ok"] = ok;
    write_json_out(o, out);
    if (o.json) {
      std::cout << out.dump(2) << std::endl;
    } else {
      std::printf("chat-bench fanout-max (step until p99 > %g ms or loss)\n", o.max_p99_ms);
      std::printf("  %-8s %-8s %-12s %-10s %-9s %-9s %-9s %-6s %-5s %-8s %-8s %s\n", "senders", "msg/s",
                  "deliveries/s", "objs/frame", "p50 ms", "p99 ms", "max ms", "lost", "held", "srv CPU",
                  "bench", "others");
      for (auto& r : steps) {
        if (!r.contains("params")) {
          std::printf("  (run failed: %s)\n", r["failures"].dump().c_str());
          continue;
        }
        auto pct = [](const ojson& j, const char* k) {
          char b[16];
          if (j.is_object() && j.contains(k) && j[k].get<double>() >= 0)
            std::snprintf(b, sizeof b, "%.0f%%", j[k].get<double>());
          else
            std::snprintf(b, sizeof b, "-");
          return std::string(b);
        };
        std::printf("  %-8d %-8.0f %-12.0f %-10.2f %-9s %-9s %-9s %-6llu %-5s %-8s %-8s %s\n",
                    r["params"]["senders"].get<int>(), r["params"]["offered_msgs_per_s"].get<double>(),
                    r["messages"]["deliveries_per_s"].get<double>(), r["frames"]["rx_objects_per_frame"].get<double>(),
                    fmt_ms(r["latency_ms"]["p50"]).c_str(), fmt_ms(r["latency_ms"]["p99"]).c_str(),
                    fmt_ms(r["latency_ms"]["max"]).c_str(), (unsigned long long)r["messages"]["lost"].get<uint64_t>(),
                    r["held"].get<bool>() ? "yes" : "no",
                    pct(r.contains("server") ? r["server"] : ojson(), "cpu_load_pct").c_str(),
                    pct(r["bench"], "cpu_load_pct").c_str(), pct(r["machine"], "others_pct_during_load").c_str());
      }
      std::printf("  %-16s %.0f deliveries/s held (p99 <= %g ms, 0 lost)\n", "max", md, o.max_p99_ms);
      if (best.is_object()) {
        std::printf("best step:\n");
        print_run(best);
      }
      print_targets(t);
    }
    return ok ? 0 : 1;
  }

  std::vector<options> room_runs{o};
  if (o.scenario == "durable" && !pa.shape_given) {
    // One room: 4 writers with 16 sends in flight each. Every member receives
    // every message, so 100 members would measure fan-out (the fanout
    // scenarios do), not the store. 100 rooms: one writer each, 2 in flight.
    options one = o, many = o;
    one.rooms = 1, one.conns = 4, one.senders = 4, one.window = 16;
    many.rooms = 100, many.conns = 100, many.senders = 100, many.window = 2;
    room_runs = {one, many};
  }
  ojson runs = ojson::array();
  for (size_t i = 0; i < room_runs.size(); ++i) {
    const options& q = room_runs[i];
    ojson r = run_once(q);
    r["targets"] = targets_for(o.scenario, r);
    ok = ok && r.value("ok", false);
    runs.push_back(r);
    if (i + 1 < room_runs.size()) ::sleep(1);
  }
  if (runs.size() == 1) {
    for (auto& [k, v] : runs[0].items()) out[k] = v;
  } else {
    out["runs"] = runs;
    out["ok"] = ok;
  }
  write_json_out(o, out);
  if (o.json) {
    std::cout << out.dump(2) << std::endl;
  } else {
    for (auto& r : runs) {
      std::printf("chat-bench %s\n", o.scenario.empty() ? "custom" : o.scenario.c_str());
      print_run(r);
      print_targets(r["targets"]);
    }
  }
  return ok ? 0 : 1;
}
