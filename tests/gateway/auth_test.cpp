#include "gateway/auth.hpp"

#include <gtest/gtest.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace chat {
namespace {

constexpr int64_t kNow = 1'700'000'000;
const std::string kSecret = "test-secret-0123456789abcdef-0123456789";

struct rsa_keypair {
  std::string private_pem;
  std::string public_pem;
};

std::string bio_to_string(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

rsa_keypair make_rsa_keypair() {
  rsa_keypair kp;
  EVP_PKEY* pkey = EVP_RSA_gen(2048);
  if (pkey == nullptr) return kp;
  BIO* priv = BIO_new(BIO_s_mem());
  BIO* pub = BIO_new(BIO_s_mem());
  if (PEM_write_bio_PrivateKey(priv, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1 &&
      PEM_write_bio_PUBKEY(pub, pkey) == 1) {
    kp.private_pem = bio_to_string(priv);
    kp.public_pem = bio_to_string(pub);
  }
  BIO_free(priv);
  BIO_free(pub);
  EVP_PKEY_free(pkey);
  return kp;
}

// Key generation is slow (under ASan especially): two pairs for the whole suite.
const rsa_keypair& rsa_a() {
  static const rsa_keypair kp = make_rsa_keypair();
  return kp;
}
const rsa_keypair& rsa_b() {
  static const rsa_keypair kp = make_rsa_keypair();
  return kp;
}

std::string base64url(const std::string& in) {
  std::string out(in.size() / 3 * 4 + 8, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return out;
}

// Signs arbitrary claims (JSON text) with libjwt, so tests can make tokens mint_token won't.
std::string sign(jwt_alg_t alg, const std::string& key, const std::string& claims_json) {
  jwt_t* j = nullptr;
  if (jwt_new(&j) != 0) return "";
  std::string out;
  if (jwt_add_grants_json(j, claims_json.c_str()) == 0 &&
      jwt_set_alg(j, alg, reinterpret_cast<const unsigned char*>(key.data()),
                  static_cast<int>(key.size())) == 0) {
    char* s = jwt_encode_str(j);
    if (s != nullptr) out = s;
    std::free(s);
  }
  jwt_free(j);
  return out;
}

std::string hs(const std::string& claims) {
  return sign(JWT_ALG_HS256, kSecret, claims);
}
std::string rs(const std::string& claims) {
  return sign(JWT_ALG_RS256, rsa_a().private_pem, claims);
}

std::string exp_claim(int64_t exp) {
  return "\"exp\":" + std::to_string(exp);
}

auth_config hs_config() {
  auth_config cfg;
  cfg.hs256_secret = kSecret;
  return cfg;
}
auth_config rs_config() {
  auth_config cfg;
  cfg.rs256_public_key = rsa_a().public_pem;
  cfg.rs256_private_key = rsa_a().private_pem;
  return cfg;
}
auth_config both_config() {
  auth_config cfg = rs_config();
  cfg.hs256_secret = kSecret;
  return cfg;
}

std::vector<std::string> split(const std::string& token) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t dot = token.find('.', start);
    parts.push_back(token.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

TEST(AuthKeys, RsaKeypairGenerated) {
  ASSERT_NE(rsa_a().private_pem.find("PRIVATE KEY"), std::string::npos);
  ASSERT_NE(rsa_a().public_pem.find("PUBLIC KEY"), std::string::npos);
  ASSERT_NE(rsa_a().public_pem, rsa_b().public_pem);
}

TEST(AuthVerify, ValidHs256) {
  authenticator auth(hs_config());
  auto r = auth.verify(hs(R"({"sub":"alice","name":"Alice",)" + exp_claim(kNow + 60) + "}"), kNow);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.user, "alice");
  EXPECT_EQ(r.id.name, "Alice");
  EXPECT_EQ(r.id.exp, kNow + 60);
  EXPECT_FALSE(r.id.anonymous);
  EXPECT_FALSE(r.id.restricted_rooms);
  EXPECT_TRUE(r.id.roles.empty());
}

TEST(AuthVerify, ValidRs256) {
  authenticator auth(rs_config());
  auto r = auth.verify(rs(R"({"sub":"bob",)" + exp_claim(kNow + 60) + "}"), kNow);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.user, "bob");
  EXPECT_EQ(r.id.name, "bob");  // no `name` claim: the user id
}

TEST(AuthVerify, BothKeysConfiguredAcceptBothAlgs) {
  authenticator auth(both_config());
  std::string claims = R"({"sub":"carol",)" + exp_claim(kNow + 60) + "}";
  EXPECT_TRUE(auth.verify(hs(claims), kNow).ok);
  EXPECT_TRUE(auth.verify(rs(claims), kNow).ok);
}

TEST(AuthVerify, Expired) {
  authenticator auth(hs_config());
  auto r = auth.verify(hs(R"({"sub":"alice",)" + exp_claim(kNow - 1) + "}"), kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token expired");
  // exp is exclusive: at exactly exp the token is no longer valid.
  EXPECT_FALSE(auth.verify(hs(R"({"sub":"alice",)" + exp_claim(kNow) + "}"), kNow).ok);
  EXPECT_TRUE(auth.verify(hs(R"({"sub":"alice",)" + exp_claim(kNow + 1) + "}"), kNow).ok);
}

TEST(AuthVerify, ExpiredWithinLeeway) {
  auth_config cfg = hs_config();
  cfg.leeway_s = 30;
  authenticator auth(cfg);
  EXPECT_TRUE(auth.verify(hs(R"({"sub":"alice",)" + exp_claim(kNow - 29) + "}"), kNow).ok);
  EXPECT_FALSE(auth.verify(hs(R"({"sub":"alice",)" + exp_claim(kNow - 30) + "}"), kNow).ok);
}

TEST(AuthVerify, ExpExtremesDoNotOverflow) {
  auth_config cfg = hs_config();
  cfg.leeway_s = 1000;
  authenticator auth(cfg);
  EXPECT_TRUE(auth.verify(hs(R"({"sub":"a","exp":9223372036854775807})"), kNow).ok);
  EXPECT_FALSE(auth.verify(hs(R"({"sub":"a","exp":-9223372036854775807})"), kNow).ok);
  EXPECT_TRUE(auth.verify(hs(R"({"sub":"a","exp":1.0e300})"), kNow).ok);
  EXPECT_TRUE(auth.verify(hs(R"({"sub":"a","exp":1700000100.5})"), kNow).ok);
}

TEST(AuthVerify, ExpNotANumber) {
  authenticator auth(hs_config());
  for (const char* bad : {R"("soon")", "true", "null", "[1]", "{}"}) {
    auto r = auth.verify(hs(std::string(R"({"sub":"a","exp":)") + bad + "}"), kNow);
    EXPECT_FALSE(r.ok) << bad;
  }
}

TEST(AuthVerify, NotBefore) {
  authenticator auth(hs_config());
  std::string claims =
      R"({"sub":"alice",)" + exp_claim(kNow + 600) + R"(,"nbf":)" + std::to_string(kNow + 10) + "}";
  auto r = auth.verify(hs(claims), kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token not yet valid");
  EXPECT_TRUE(auth.verify(hs(claims), kNow + 10).ok);

  auth_config cfg = hs_config();
  cfg.leeway_s = 10;
  EXPECT_TRUE(authenticator(cfg).verify(hs(claims), kNow).ok);
  EXPECT_FALSE(authenticator(cfg).verify(hs(R"({"sub":"a","nbf":"x"})"), kNow).ok);
}

TEST(AuthVerify, MissingExp) {
  std::string token = hs(R"({"sub":"alice"})");
  auto r = authenticator(hs_config()).verify(token, kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token has no exp");

  auth_config cfg = hs_config();
  cfg.require_exp = false;
  auto ok = authenticator(cfg).verify(token, kNow);
  ASSERT_TRUE(ok.ok) << ok.error;
  EXPECT_EQ(ok.id.exp, 0);
}

TEST(AuthVerify, MissingOrInvalidSub) {
  authenticator auth(hs_config());
  std::string exp = exp_claim(kNow + 60);
  auto r = auth.verify(hs("{" + exp + "}"), kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token has no sub");
  for (const char* sub :
       {R"("")", R"("a:b")", "123", "null", R"(["a"])", R"("tab\there")", R"("\u0085")"}) {
    auto bad = auth.verify(hs(std::string(R"({"sub":)") + sub + "," + exp + "}"), kNow);
    EXPECT_FALSE(bad.ok) << sub;
  }
  std::string long_sub(65, 'x');
  EXPECT_FALSE(auth.verify(hs(R"({"sub":")" + long_sub + "\"," + exp + "}"), kNow).ok);
}

TEST(AuthVerify, BadSignature) {
  authenticator auth(hs_config());
  auth_config other = hs_config();
  other.hs256_secret = "some-other-secret-0123456789abcdef";
  std::string claims = R"({"sub":"alice",)" + exp_claim(kNow + 60) + "}";
  auto r = auth.verify(sign(JWT_ALG_HS256, other.hs256_secret, claims), kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "bad signature");

  // RS256 signed by a different key.
  authenticator rs_auth(rs_config());
  auto r2 = rs_auth.verify(sign(JWT_ALG_RS256, rsa_b().private_pem, claims), kNow);
  EXPECT_FALSE(r2.ok);
  EXPECT_EQ(r2.error, "bad signature");

  // Signature stripped.
  auto parts = split(hs(claims));
  EXPECT_FALSE(auth.verify(parts[0] + "." + parts[1] + ".", kNow).ok);
}

TEST(AuthVerify, TamperedPayload) {
  std::string exp = exp_claim(kNow + 60);
  for (auto cfg : {hs_config(), rs_config()}) {
    authenticator auth(cfg);
    std::string good = cfg.hs256_secret.empty() ? rs(R"({"sub":"alice",)" + exp + "}")
                                                : hs(R"({"sub":"alice",)" + exp + "}");
    ASSERT_TRUE(auth.verify(good, kNow).ok);
    auto parts = split(good);
    std::string evil = base64url(R"({"sub":"alice","roles":["admin"],)" + exp + "}");
    auto r = auth.verify(parts[0] + "." + evil + "." + parts[2], kNow);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error, "bad signature");
  }
}

TEST(AuthVerify, AlgNoneRefused) {
  std::string payload = base64url(R"({"sub":"alice","exp":)" + std::to_string(kNow + 60) + "}");
  std::string valid_sig = split(hs(R"({"sub":"alice"})"))[2];
  for (auto cfg : {hs_config(), rs_config(), both_config()}) {
    authenticator auth(cfg);
    for (const char* header : {R"({"alg":"none"})", R"({"alg":"none","typ":"JWT"})",
                               R"({"alg":"None"})", R"({"alg":"NONE"})", R"({"typ":"JWT"})"}) {
      std::string h = base64url(header);
      EXPECT_FALSE(auth.verify(h + "." + payload + ".", kNow).ok) << header;
      EXPECT_FALSE(auth.verify(h + "." + payload + "." + valid_sig, kNow).ok) << header;
      EXPECT_FALSE(auth.verify(h + "." + payload, kNow).ok) << header;
    }
    auto r = auth.verify(base64url(R"({"alg":"none"})") + "." + payload + ".", kNow);
    EXPECT_EQ(r.error, "unsigned token (alg none) refused");
  }
}

TEST(AuthVerify, AlgorithmConfusionRefused) {
  // The classic attack: HMAC "signed" with the server's RSA public key text.
  std::string claims = R"({"sub":"mallory","roles":["admin"],)" + exp_claim(kNow + 60) + "}";
  std::string forged = sign(JWT_ALG_HS256, rsa_a().public_pem, claims);
  ASSERT_FALSE(forged.empty());
  auth_config rs_only;
  rs_only.rs256_public_key = rsa_a().public_pem;
  auto r = authenticator(rs_only).verify(forged, kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token algorithm HS256 not accepted");
  // With an HS secret configured too, the forged token meets the secret, not the PEM.
  EXPECT_FALSE(authenticator(both_config()).verify(forged, kNow).ok);
  // Forged with the secret text as "RSA key" is impossible, but an RS256 token must not be
  // accepted by an HS-only server either.
  auto r2 = authenticator(hs_config()).verify(rs(claims), kNow);
  EXPECT_FALSE(r2.ok);
  EXPECT_EQ(r2.error, "token algorithm RS256 not accepted");
}

TEST(AuthVerify, OtherAlgsRefused) {
  std::string claims = R"({"sub":"a",)" + exp_claim(kNow + 60) + "}";
  authenticator auth(both_config());
  EXPECT_FALSE(auth.verify(sign(JWT_ALG_HS512, kSecret, claims), kNow).ok);
  EXPECT_FALSE(auth.verify(sign(JWT_ALG_HS384, kSecret, claims), kNow).ok);
  EXPECT_FALSE(auth.verify(sign(JWT_ALG_RS512, rsa_a().private_pem, claims), kNow).ok);
}

TEST(AuthVerify, NoKeyConfigured) {
  authenticator auth(auth_config{});
  EXPECT_FALSE(auth.any_key());
  auto r = auth.verify(hs(R"({"sub":"a",)" + exp_claim(kNow + 60) + "}"), kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.error.empty());
}

TEST(AuthVerify, GarbageAndEmpty) {
  authenticator auth(both_config());
  EXPECT_EQ(auth.verify("", kNow).error, "missing token");
  for (const char* junk : {"x", ".", "..", "...", "a.b.c", "a.b", "eyJ.eyJ.", "\xff\xfe.\x01.\x02",
                           "Bearer abc", "{\"alg\":\"HS256\"}", "e30.e30.e30", "W10.W10.abc"}) {
    auto r = auth.verify(junk, kNow);
    EXPECT_FALSE(r.ok) << junk;
    EXPECT_FALSE(r.error.empty()) << junk;
  }
  // A JSON array as header/payload (valid JSON, not an object).
  std::string hdr = base64url(R"({"alg":"HS256"})");
  EXPECT_FALSE(auth.verify(hdr + "." + base64url("[]") + ".abc", kNow).ok);
}

TEST(AuthVerify, EmbeddedNulRefused) {
  authenticator auth(hs_config());
  std::string good = hs(R"({"sub":"a",)" + exp_claim(kNow + 60) + "}");
  ASSERT_TRUE(auth.verify(good, kNow).ok);
  std::string with_nul = good + std::string(1, '\0') + "junk";
  EXPECT_FALSE(auth.verify(with_nul, kNow).ok);
}

TEST(AuthVerify, HugeToken) {
  authenticator auth(hs_config());
  std::string huge(100 * 1024, 'A');
  auto r = auth.verify(huge, kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token too large");
  // Structurally plausible but huge: refused before libjwt sees it.
  std::string big_claims =
      R"({"sub":"a","pad":")" + std::string(100 * 1024, 'p') + "\"," + exp_claim(kNow + 60) + "}";
  EXPECT_EQ(auth.verify(hs(big_claims), kNow).error, "token too large");
}

TEST(AuthVerify, RolesAndRooms) {
  authenticator auth(both_config());
  std::string exp = exp_claim(kNow + 60);
  auto r = auth.verify(
      rs(R"({"sub":"dana","roles":["mod","beta"],"rooms":["general","team-*"],)" + exp + "}"),
      kNow);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.roles, (std::vector<std::string>{"mod", "beta"}));
  EXPECT_EQ(r.id.room_patterns, (std::vector<std::string>{"general", "team-*"}));
  EXPECT_TRUE(r.id.restricted_rooms);
  EXPECT_TRUE(r.id.has_role("mod"));
  EXPECT_FALSE(r.id.has_role("admin"));
  EXPECT_TRUE(r.id.may_join("general"));
  EXPECT_TRUE(r.id.may_join("team-red"));
  EXPECT_FALSE(r.id.may_join("random"));

  // Present but empty `rooms`: restricted to nothing.
  auto empty = auth.verify(hs(R"({"sub":"e","rooms":[],)" + exp + "}"), kNow);
  ASSERT_TRUE(empty.ok) << empty.error;
  EXPECT_TRUE(empty.id.restricted_rooms);
  EXPECT_FALSE(empty.id.may_join("general"));

  // Malformed claims are refused rather than ignored (ignoring `rooms` would widen access).
  for (const char* bad : {R"("roles":"admin")", R"("roles":[1])", R"("rooms":"general")",
                          R"("rooms":[null])", R"("rooms":{"a":1})", R"("name":42)"}) {
    auto b = auth.verify(hs(R"({"sub":"e",)" + std::string(bad) + "," + exp + "}"), kNow);
    EXPECT_FALSE(b.ok) << bad;
  }
}

TEST(AuthVerify, EmptyNameFallsBackToUser) {
  auto r = authenticator(hs_config())
               .verify(hs(R"({"sub":"eve","name":"",)" + exp_claim(kNow + 60) + "}"), kNow);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.name, "eve");
}

TEST(AuthVerify, NonCanonicalSignatureRefused) {
  // libjwt 1.10 ignores unused trailing bits and '=' in an RS256 signature; we must not.
  authenticator auth(rs_config());
  std::string good = rs(R"({"sub":"a",)" + exp_claim(kNow + 60) + "}");
  ASSERT_TRUE(auth.verify(good, kNow).ok);
  const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.";
  for (char c : alphabet) {
    std::string m = good;
    if (m.back() == c) continue;
    m.back() = c;
    EXPECT_FALSE(auth.verify(m, kNow).ok) << c;
  }
  EXPECT_FALSE(auth.verify(good + "=", kNow).ok);
  EXPECT_FALSE(auth.verify(good + "==", kNow).ok);
  EXPECT_FALSE(auth.verify(good + "A", kNow).ok);
}

TEST(Identity, MayJoin) {
  identity unrestricted;
  EXPECT_TRUE(unrestricted.may_join("anything"));
  EXPECT_FALSE(unrestricted.may_join("dm:alice:bob"));

  identity restricted;
  restricted.restricted_rooms = true;
  restricted.room_patterns = {"eng-*", "*-public", "lobby"};
  EXPECT_TRUE(restricted.may_join("eng-"));
  EXPECT_TRUE(restricted.may_join("eng-backend"));
  EXPECT_TRUE(restricted.may_join("sales-public"));
  EXPECT_TRUE(restricted.may_join("lobby"));
  EXPECT_FALSE(restricted.may_join("lobby2"));
  EXPECT_FALSE(restricted.may_join("sales"));
  EXPECT_FALSE(restricted.may_join("dm:a:b"));

  identity admin = restricted;
  admin.roles = {"admin"};
  EXPECT_TRUE(admin.has_role("admin"));
  EXPECT_TRUE(admin.may_join("sales"));
  EXPECT_FALSE(admin.may_join("dm:alice:bob"));  // dm rooms are decided elsewhere

  identity star;
  star.restricted_rooms = true;
  star.room_patterns = {"*"};
  EXPECT_TRUE(star.may_join("x"));
  EXPECT_FALSE(star.may_join("dm:x:y"));
}

TEST(Wildcard, Cases) {
  EXPECT_TRUE(wildcard_match("", ""));
  EXPECT_FALSE(wildcard_match("", "a"));
  EXPECT_TRUE(wildcard_match("*", ""));
  EXPECT_TRUE(wildcard_match("*", "anything"));
  EXPECT_TRUE(wildcard_match("**", "x"));
  EXPECT_TRUE(wildcard_match("abc", "abc"));
  EXPECT_FALSE(wildcard_match("abc", "abd"));
  EXPECT_FALSE(wildcard_match("abc", "ab"));
  EXPECT_FALSE(wildcard_match("ab", "abc"));
  EXPECT_TRUE(wildcard_match("a*", "a"));
  EXPECT_TRUE(wildcard_match("*a", "ba"));
  EXPECT_FALSE(wildcard_match("*a", "ab"));
  EXPECT_TRUE(wildcard_match("team-*", "team-x"));
  EXPECT_FALSE(wildcard_match("team-*", "teamx"));
  EXPECT_TRUE(wildcard_match("a*b*c", "aXbYc"));
  EXPECT_TRUE(wildcard_match("a*b*c", "abc"));
  EXPECT_FALSE(wildcard_match("a*b*c", "aXbY"));
  EXPECT_TRUE(wildcard_match("*ab*ab", "xxabyyabab"));
  EXPECT_TRUE(wildcard_match("a*a", "aaa"));
  EXPECT_FALSE(wildcard_match("a*a", "a"));
  EXPECT_TRUE(wildcard_match("?", "?"));  // only '*' is special
  EXPECT_FALSE(wildcard_match("?", "x"));
  EXPECT_TRUE(wildcard_match("caf\xC3\xA9-*", "caf\xC3\xA9-room"));
}

TEST(Wildcard, PathologicalIsFast) {
  std::string pattern;
  for (int i = 0; i < 32; ++i) pattern += "a*";
  pattern += "b";
  std::string text(64, 'a');
  std::string long_text(4096, 'a');
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(wildcard_match(pattern, text));
    ASSERT_FALSE(wildcard_match("a*a*a*a*a*a*b", text));
    ASSERT_FALSE(wildcard_match(std::string(64, '*') + "b", text));
  }
  ASSERT_FALSE(wildcard_match(pattern, long_text));
  ASSERT_TRUE(wildcard_match(pattern, text + "b"));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  EXPECT_LT(ms, 2000);  // exponential backtracking would take years
}

TEST(UserId, Valid) {
  EXPECT_TRUE(valid_user_id("alice"));
  EXPECT_TRUE(valid_user_id("a"));
  EXPECT_TRUE(valid_user_id("Zo\xC3\xAB"));                // Zoë
  EXPECT_TRUE(valid_user_id("\xE6\x97\xA5\xE6\x9C\xAC"));  // 日本
  EXPECT_TRUE(valid_user_id("\xC2\xA0"));                  // U+00A0, just past C1
  EXPECT_TRUE(valid_user_id("\xF4\x8F\xBF\xBF"));          // U+10FFFF
  EXPECT_TRUE(valid_user_id("user@example.com"));
  EXPECT_TRUE(valid_user_id(std::string(64, 'x')));
}

TEST(UserId, Length) {
  const std::string emoji = "\xF0\x9F\x99\x82";  // U+1F642, 4 bytes
  std::string s64, s65;
  for (int i = 0; i < 64; ++i) s64 += emoji;
  s65 = s64 + emoji;
  EXPECT_TRUE(valid_user_id(s64));  // 256 bytes, 64 code points
  EXPECT_FALSE(valid_user_id(s65));
  EXPECT_FALSE(valid_user_id(std::string(65, 'x')));
  EXPECT_FALSE(valid_user_id(""));
  EXPECT_TRUE(valid_user_id(std::string(63, 'x') + emoji));
}

TEST(UserId, ForbiddenCharacters) {
  EXPECT_FALSE(valid_user_id("a:b"));
  EXPECT_FALSE(valid_user_id(":"));
  EXPECT_FALSE(valid_user_id(std::string("a\0b", 3)));
  EXPECT_FALSE(valid_user_id("a\tb"));
  EXPECT_FALSE(valid_user_id("a\nb"));
  EXPECT_FALSE(valid_user_id("\x1f"));
  EXPECT_FALSE(valid_user_id("a\x7f"));
  EXPECT_FALSE(valid_user_id("\xC2\x80"));  // U+0080 (C1)
  EXPECT_FALSE(valid_user_id("\xC2\x85"));  // U+0085 NEL
  EXPECT_FALSE(valid_user_id("\xC2\x9F"));  // U+009F
}

TEST(UserId, InvalidUtf8) {
  EXPECT_FALSE(valid_user_id("\x80"));              // lone continuation
  EXPECT_FALSE(valid_user_id("a\xC3"));             // truncated
  EXPECT_FALSE(valid_user_id("\xE6\x97"));          // truncated 3-byte
  EXPECT_FALSE(valid_user_id("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(valid_user_id("\xC1\xBF"));          // overlong
  EXPECT_FALSE(valid_user_id("\xE0\x80\xAF"));      // overlong 3-byte
  EXPECT_FALSE(valid_user_id("\xF0\x80\x80\xAF"));  // overlong 4-byte
  EXPECT_FALSE(valid_user_id("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(valid_user_id("\xED\xBF\xBF"));      // surrogate U+DFFF
  EXPECT_FALSE(valid_user_id("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(valid_user_id("\xF5\x80\x80\x80"));
  EXPECT_FALSE(valid_user_id("\xFF"));
  EXPECT_FALSE(valid_user_id("\xC3\x28"));     // bad continuation
  EXPECT_TRUE(valid_user_id("\xED\x9F\xBF"));  // U+D7FF, just below the surrogates
}

TEST(Anonymous, DisabledByDefault) {
  auto r = authenticator(hs_config()).anonymous("alice");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "anonymous access is disabled");
}

TEST(Anonymous, Allowed) {
  auth_config cfg;
  cfg.allow_anonymous = true;
  authenticator auth(cfg);
  auto r = auth.anonymous("alice");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.user, "alice");
  EXPECT_EQ(r.id.name, "alice");
  EXPECT_TRUE(r.id.anonymous);
  EXPECT_EQ(r.id.exp, 0);
  EXPECT_FALSE(auth.anonymous("").ok);
  EXPECT_FALSE(auth.anonymous("a:b").ok);
  EXPECT_FALSE(auth.anonymous(std::string(65, 'a')).ok);
  EXPECT_FALSE(auth.anonymous("\xC0\xAF").ok);
}

TEST(Mint, RoundTripHs256) {
  auth_config cfg = hs_config();
  token_spec spec;
  spec.user = "alice";
  spec.name = "Alice Liddell";
  spec.roles = {"admin"};
  spec.rooms = {"general", "eng-*"};
  std::string err;
  std::string token = mint_token(cfg, spec, kNow, err);
  ASSERT_FALSE(token.empty()) << err;
  auto r = authenticator(cfg).verify(token, kNow + 10);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.user, "alice");
  EXPECT_EQ(r.id.name, "Alice Liddell");
  EXPECT_EQ(r.id.exp, kNow + 3600);
  EXPECT_EQ(r.id.roles, spec.roles);
  EXPECT_EQ(r.id.room_patterns, spec.rooms);
  EXPECT_TRUE(r.id.restricted_rooms);
  EXPECT_EQ(authenticator(cfg).verify(token, kNow + 3600).error, "token expired");
}

TEST(Mint, RoundTripRs256) {
  auth_config cfg = both_config();  // the private key wins over the secret
  token_spec spec;
  spec.user = "bob";
  std::string err;
  std::string token = mint_token(cfg, spec, kNow, err);
  ASSERT_FALSE(token.empty()) << err;
  auth_config verify_only;
  verify_only.rs256_public_key = rsa_a().public_pem;
  auto r = authenticator(verify_only).verify(token, kNow);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.user, "bob");
  EXPECT_EQ(r.id.name, "bob");
  EXPECT_TRUE(r.id.roles.empty());
  EXPECT_FALSE(r.id.restricted_rooms);
  EXPECT_FALSE(authenticator(hs_config()).verify(token, kNow).ok);
}

TEST(Mint, NoExpWhenTtlZero) {
  auth_config cfg = hs_config();
  token_spec spec;
  spec.user = "carol";
  spec.ttl_s = 0;
  std::string err;
  std::string token = mint_token(cfg, spec, kNow, err);
  ASSERT_FALSE(token.empty()) << err;
  EXPECT_EQ(authenticator(cfg).verify(token, kNow).error, "token has no exp");
  cfg.require_exp = false;
  auto r = authenticator(cfg).verify(token, kNow + 1'000'000);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.exp, 0);
}

TEST(Mint, Errors) {
  token_spec spec;
  spec.user = "alice";
  std::string err;
  EXPECT_EQ(mint_token(auth_config{}, spec, kNow, err), "");
  EXPECT_FALSE(err.empty());

  spec.user = "a:b";
  EXPECT_EQ(mint_token(hs_config(), spec, kNow, err), "");
  EXPECT_FALSE(err.empty());

  spec.user = "alice";
  spec.name = "\xC0\xAF";
  EXPECT_EQ(mint_token(hs_config(), spec, kNow, err), "");
  EXPECT_FALSE(err.empty());

  spec.name.clear();
  auth_config bad_pem;
  bad_pem.rs256_private_key = "not a pem";
  EXPECT_EQ(mint_token(bad_pem, spec, kNow, err), "");
  EXPECT_FALSE(err.empty());
}

// Never crash, never accept: random bytes, random base64url-ish strings, and mutations of
// valid tokens (a mutated header, payload or signature must always be refused).
TEST(AuthFuzz, RandomInputsAndMutations) {
  authenticator auth(both_config());
  std::mt19937 rng(12345);
  auto rand_int = [&rng](size_t lo, size_t hi) {
    return std::uniform_int_distribution<size_t>(lo, hi)(rng);
  };
  const std::string b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

  for (int i = 0; i < 20000; ++i) {
    std::string s(rand_int(0, 200), '\0');
    if (i % 2 == 0) {
      for (char& c : s) c = static_cast<char>(rand_int(0, 255));
    } else {
      for (char& c : s) c = rand_int(0, 20) == 0 ? '.' : b64[rand_int(0, b64.size() - 1)];
    }
    auto r = auth.verify(s, kNow);
    ASSERT_FALSE(r.ok) << i;
    ASSERT_FALSE(r.error.empty());
  }

  std::string claims =
      R"({"sub":"alice","roles":["mod"],"rooms":["a-*"],)" + exp_claim(kNow + 60) + "}";
  const std::vector<std::string> valid = {hs(claims), rs(claims)};
  const std::string alphabet = b64 + std::string(".=+/ \0\xff", 7);
  int mutated = 0;
  for (const auto& good : valid) {
    ASSERT_TRUE(auth.verify(good, kNow).ok);
    for (int i = 0; i < 5000; ++i) {
      std::string m = good;
      int edits = static_cast<int>(rand_int(1, 3));
      for (int e = 0; e < edits; ++e) {
        size_t pos = rand_int(0, m.size() - 1);
        switch (rand_int(0, 4)) {
          case 0:
            m[pos] = alphabet[rand_int(0, alphabet.size() - 1)];
            break;
          case 1:
            m.insert(m.begin() + static_cast<std::ptrdiff_t>(pos),
                     alphabet[rand_int(0, alphabet.size() - 1)]);
            break;
          case 2:
            if (m.size() > 1) m.erase(pos, 1);
            break;
          case 3:
            m.resize(pos);
            break;
          default:
            m[pos] = static_cast<char>(m[pos] ^ (1 << rand_int(0, 7)));
            break;
        }
        if (m.empty()) m = "x";
      }
      if (m == good) continue;
      ++mutated;
      auto r = auth.verify(m, kNow);
      ASSERT_FALSE(r.ok) << "accepted mutated token: " << m;
    }
  }
  EXPECT_GT(mutated, 9000);
}


// Issue 11 case 5: with tokens on too, an anonymous hello never becomes a token user.
TEST(Anonymous, OwnNamespaceBesideTokens) {
  auth_config cfg = hs_config();
  cfg.allow_anonymous = true;
  authenticator auth(cfg);
  auto r = auth.anonymous("alice");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.id.user, "~alice");
  EXPECT_EQ(r.id.name, "alice");
  EXPECT_FALSE(auth.anonymous("~alice").ok);  // the prefix is not a name
  token_spec spec;
  spec.user = "~alice";
  std::string err;
  auto token = mint_token(cfg, spec, kNow, err);
  ASSERT_FALSE(token.empty()) << err;
  auto v = auth.verify(token, kNow);
  EXPECT_FALSE(v.ok);  // no token sub in the anonymous namespace
}

// Issue 11 case 9: reserved names and look-alikes are refused.
TEST(Anonymous, ReservedAndLookAlikeNamesRefused) {
  auth_config cfg;
  cfg.allow_anonymous = true;
  authenticator auth(cfg);
  for (const char* bad : {"system", "System", "SYSTEM", "admin", "\xEF\xBD\x93ystem" /* fullwidth s */,
                          "\xD1\x95ystem" /* Cyrillic dze */, "r00t", "alice ", " alice",
                          "alice\xC2\xA0", "\xD0\xB0lice" /* Cyrillic a */,
                          "al\xE2\x80\x8Bice" /* zero-width space */,
                          "\xE2\x80\xAE" "ecila" /* right-to-left override */, "bob\xEF\xBB\xBF"}) {
    auto r = auth.anonymous(bad);
    EXPECT_FALSE(r.ok) << bad;
  }
  for (const char* good : {"alice", "Alice Liddell", "\xD0\x90\xD0\xBD\xD1\x8F" /* Аня */,
                           "\xCE\xB1\xCE\xB2" /* αβ */, "bob_2", "systemd"}) {
    auto r = auth.anonymous(good);
    EXPECT_TRUE(r.ok) << good << ": " << r.error;
  }
  EXPECT_EQ(name_skeleton("\xD0\xB0lice"), "alice");
  EXPECT_EQ(name_skeleton("ALICE"), "alice");
  EXPECT_EQ(name_skeleton("\xEF\xBC\xA1lice"), "alice");  // fullwidth A
}

}  // namespace
}  // namespace chat
