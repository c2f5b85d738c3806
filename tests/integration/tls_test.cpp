// TLS against a real chatd: wss:// chat and https:// with a certificate made
// in the test (the `openssl` command), verified by the client; reload on SIGHUP;
// the plain listener beside it.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;
namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// A self-signed P-256 certificate for IP 127.0.0.1 with subject CN=`cn`,
// written to dir/<name>.crt and dir/<name>.key.
bool make_cert(const std::string& dir, const std::string& name, const std::string& cn) {
  auto cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=" +
             cn + " -addext subjectAltName=IP:127.0.0.1 -keyout " + dir + "/" + name + ".key -out " +
             dir + "/" + name + ".crt 2>/dev/null";
  return std::system(cmd.c_str()) == 0;
}

// Replaces `to` by `from` in one step, as a deployment would (no half-written file).
void install(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to + ".tmp", std::filesystem::copy_options::overwrite_existing);
  std::filesystem::rename(to + ".tmp", to);
}

// A client context trusting exactly the certificates in `ca_files`.
std::unique_ptr<ssl::context> client_ctx(const std::vector<std::string>& ca_files) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  for (auto& f : ca_files) ctx->load_verify_file(f);
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

struct https_reply {
  int status = 0;
  std::string body;
  std::string common_name;  // of the server's certificate
  std::string version;      // e.g. TLSv1.3
  std::string cipher;
};

// GET over TLS on 127.0.0.1:port, verifying the certificate.
https_reply https_get(uint16_t port, const std::string& target, ssl::context& ctx) {
  https_reply r;
  try {
    net::io_context ioc;
    beast::ssl_stream<beast::tcp_stream> s(ioc, ctx);
    s.set_verify_callback(ssl::host_name_verification("127.0.0.1"));
    beast::get_lowest_layer(s).expires_after(5s);
    beast::get_lowest_layer(s).connect({net::ip::make_address("127.0.0.1"), port});
    s.handshake(ssl::stream_base::client);
    if (X509* cert = SSL_get_peer_certificate(s.native_handle())) {
      char cn[256] = {0};
      X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
      r.common_name = cn;
      X509_free(cert);
    }
    r.version = SSL_get_version(s.native_handle());
    r.cipher = SSL_get_cipher_name(s.native_handle());
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "127.0.0.1");
    http::write(s, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(s, buf, res);
    r.status = static_cast<int>(res.result_int());
    r.body = res.body();
  } catch (...) {
  }
  return r;
}

bool eventually(const std::function<bool()>& f, std::chrono::milliseconds timeout = 5s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

class Tls : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(make_cert(dir_.path(), "first", "first"));
    ASSERT_TRUE(make_cert(dir_.path(), "second", "second"));
    install(path("first.crt"), path("server.crt"));
    install(path("first.key"), path("server.key"));
  }
  std::string path(const std::string& f) const { return dir_.path() + "/" + f; }
  // Without a handshake rate unless the test sets its own (the retry loops
  // here make many handshakes from 127.0.0.1).
  std::vector<std::string> args(std::vector<std::string> extra = {}) const {
    std::vector<std::string> a{"--allow-anonymous", "--store", "memory", "--log-level", "info",
                               "--tls-cert", path("server.crt"), "--tls-key", path("server.key")};
    if (std::find(extra.begin(), extra.end(), "--handshake-rate") == extra.end())
      a.insert(a.end(), {"--handshake-rate", "0"});
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  temp_dir dir_;
};

}  // namespace

TEST_F(Tls, WssHandshakeAndChatRoundTrip) {
  chatd_process s{args()};
  ASSERT_TRUE(s.ok()) << s.log();
  auto ctx = client_ctx({path("first.crt")});
  ws_client alice, bob;
  alice.use_tls(*ctx);
  bob.use_tls(*ctx);
  ASSERT_TRUE(is_type(alice.hello_name(s.port(), "alice"), "welcome"));
  ASSERT_TRUE(is_type(bob.hello_name(s.port(), "bob"), "welcome"));
  EXPECT_EQ(alice.peer_common_name(), "first");
  ASSERT_EQ((*alice.request({{"type", "join"}, {"room", "secure"}}, 2))["type"], "joined");
  ASSERT_EQ((*bob.request({{"type", "join"}, {"room", "secure"}}, 2))["type"], "joined");
  std::string big(4000, 'z');
  json data = {{"blob", std::string(30000, 'd')}};  // a frame of several TLS records
  auto ack = alice.request({{"type", "send"}, {"room", "secure"}, {"text", big}, {"data", data}}, 3);
  ASSERT_TRUE(ack);
  EXPECT_EQ((*ack)["type"], "ack");
  auto m = bob.recv_until([](const json& j) { return is_type(j, "message"); });
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["text"], big);
  EXPECT_EQ((*m)["data"], data);
  EXPECT_EQ((*m)["from"], "alice");
}

TEST_F(Tls, HttpsHealthzWithModernDefaults) {
  chatd_process s{args()};
  ASSERT_TRUE(s.ok());
  auto ctx = client_ctx({path("first.crt")});
  auto r = https_get(s.port(), "/healthz", *ctx);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"status":"ok"})");
  EXPECT_EQ(r.common_name, "first");
  EXPECT_EQ(r.version, "TLSv1.3");
  // A client that stops at TLS 1.2 gets a forward-secret AEAD suite.
  auto ctx12 = client_ctx({path("first.crt")});
  SSL_CTX_set_max_proto_version(ctx12->native_handle(), TLS1_2_VERSION);
  r = https_get(s.port(), "/healthz", *ctx12);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.version, "TLSv1.2");
  EXPECT_EQ(r.cipher.rfind("ECDHE-", 0), 0u) << r.cipher;
  EXPECT_TRUE(r.cipher.find("GCM") != std::string::npos ||
              r.cipher.find("CHACHA20") != std::string::npos)
      << r.cipher;
  // A client that does not trust the certificate fails its verification.
  auto wrong = client_ctx({path("second.crt")});
  EXPECT_EQ(https_get(s.port(), "/healthz", *wrong).status, 0);
}

TEST_F(Tls, PlainOnTheTlsPortFailsAndListenPlainServesPlain) {
  chatd_process s{args({"--listen-plain", "127.0.0.1:0"})};
  ASSERT_TRUE(s.ok()) << s.log();
  ASSERT_NE(s.plain_port(), 0);
  ASSERT_NE(s.plain_port(), s.port());
  // Plain HTTP and ws:// to the TLS port: no answer in plain text.
  std::string body;
  EXPECT_EQ(http_get(s.port(), "/healthz", body), 0);
  ws_client plain_to_tls;
  EXPECT_FALSE(plain_to_tls.connect(s.port()));
  // The plain listener serves both.
  EXPECT_EQ(http_get(s.plain_port(), "/healthz", body), 200);
  ws_client plain;
  EXPECT_TRUE(is_type(plain.hello_name(s.plain_port(), "carol"), "welcome"));
  EXPECT_TRUE(eventually([&] {
    std::string m;
    http_get(s.plain_port(), "/metrics", m);
    return m.find("chat_tls_handshake_failures_total 2") != std::string::npos;
  }));
}

TEST_F(Tls, SighupReloadsTheCertificateAndKeepsOpenConnections) {
  chatd_process s{args()};
  ASSERT_TRUE(s.ok());
  auto ctx = client_ctx({path("first.crt"), path("second.crt")});
  ws_client before;
  before.use_tls(*ctx);
  ASSERT_TRUE(is_type(before.hello_name(s.port(), "early"), "welcome"));
  EXPECT_EQ(before.peer_common_name(), "first");

  install(path("second.crt"), path("server.crt"));
  install(path("second.key"), path("server.key"));
  ASSERT_EQ(::kill(s.pid(), SIGHUP), 0);
  // New connections get the new certificate once the signal is handled.
  EXPECT_TRUE(eventually([&] { return https_get(s.port(), "/healthz", *ctx).common_name == "second"; }));
  ws_client after;
  after.use_tls(*ctx);
  ASSERT_TRUE(is_type(after.hello_name(s.port(), "late"), "welcome"));
  EXPECT_EQ(after.peer_common_name(), "second");
  // The connection made before the reload still works.
  EXPECT_EQ((*before.request({{"type", "ping"}}, 5))["type"], "pong");

  // A broken file: logged, and the certificate in use stays.
  { std::ofstream(path("server.crt")) << "not a certificate\n"; }
  ASSERT_EQ(::kill(s.pid(), SIGHUP), 0);
  EXPECT_TRUE(eventually([&] { return s.log().find("event=tls_reload_failed") != std::string::npos; }))
      << s.log();
  auto r = https_get(s.port(), "/healthz", *ctx);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.common_name, "second");
  // A key that does not belong to the certificate is refused the same way.
  install(path("first.crt"), path("server.crt"));  // key is still second's
  ASSERT_EQ(::kill(s.pid(), SIGHUP), 0);
  EXPECT_TRUE(eventually([&] {
    auto log = s.log();
    auto first = log.find("event=tls_reload_failed");
    return first != std::string::npos &&
           log.find("event=tls_reload_failed", first + 1) != std::string::npos;
  })) << s.log();
  EXPECT_EQ(https_get(s.port(), "/healthz", *ctx).common_name, "second");
  EXPECT_EQ(s.terminate(), 0);  // and SIGHUP never stopped it
}

TEST_F(Tls, TlsHandshakesPerAddressAreRated) {
  chatd_process s{args({"--handshake-rate", "0.5", "--handshake-burst", "2", "--listen-plain",
                        "127.0.0.1:0"})};
  ASSERT_TRUE(s.ok());
  auto ctx = client_ctx({path("first.crt")});
  EXPECT_EQ(https_get(s.port(), "/healthz", *ctx).status, 200);
  EXPECT_EQ(https_get(s.port(), "/healthz", *ctx).status, 200);
  // The third TLS handshake from 127.0.0.1 within a second is not begun.
  EXPECT_EQ(https_get(s.port(), "/healthz", *ctx).status, 0);
  // Another address has its own bucket (and wss:// takes a TLS and a WebSocket token).
  ws_client other;
  other.use_tls(*ctx);
  other.set_source("127.0.0.3");
  EXPECT_TRUE(is_type(other.hello_name(s.port(), "dave"), "welcome"));
  std::string m;
  ASSERT_EQ(http_get(s.plain_port(), "/metrics", m), 200);
  EXPECT_NE(m.find("chat_edge_refused_total{reason=\"tls_handshake_rate\"} 1"), std::string::npos) << m;
}

TEST_F(Tls, BadCertificateRefusesToStart) {
  { std::ofstream(path("server.crt")) << "garbage\n"; }
  chatd_process s{args()};
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.log().find("TLS"), std::string::npos) << s.log();
  chatd_process half{{"--allow-anonymous", "--tls-cert", path("first.crt")}};
  EXPECT_FALSE(half.ok());
  EXPECT_NE(half.log().find("--tls-key"), std::string::npos) << half.log();
}
