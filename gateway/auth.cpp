#include "gateway/auth.hpp"

#include <jwt.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <utility>

#include "messages/validate.hpp"

namespace chat {

namespace {

using json = nlohmann::json;

// Far above any token we mint (a few hundred bytes plus room patterns), small enough that a
// hostile client cannot make libjwt copy and decode megabytes per hello.
constexpr size_t kMaxTokenBytes = 16 * 1024;
constexpr size_t kMaxUserCodePoints = 64;

struct jwt_deleter {
  void operator()(jwt_t* j) const { jwt_free(j); }
};
using jwt_ptr = std::unique_ptr<jwt_t, jwt_deleter>;

// libjwt hands out malloc'd strings (1.10 has no jwt_free_str).
struct malloc_deleter {
  void operator()(char* p) const { std::free(p); }
};
using c_str_ptr = std::unique_ptr<char, malloc_deleter>;

auth_result refuse(std::string error) {
  auth_result r;
  r.error = std::move(error);
  return r;
}

bool valid_utf8(std::string_view s) {
  return for_each_code_point(s, [](uint32_t) { return true; });
}

int64_t saturating_add(int64_t a, int64_t b) {
  if (b > 0 && a > std::numeric_limits<int64_t>::max() - b) {
    return std::numeric_limits<int64_t>::max();
  }
  if (b < 0 && a < std::numeric_limits<int64_t>::min() - b) {
    return std::numeric_limits<int64_t>::min();
  }
  return a + b;
}

// A NumericDate claim as whole seconds. RFC 7519 allows fractions: round towards the
// stricter side (exp down, nbf up). False when the claim is not a number.
bool numeric_date(const json& v, bool round_up, int64_t& out) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    out = u > static_cast<uint64_t>(kMax) ? kMax : static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    out = v.get<int64_t>();
    return true;
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isnan(d)) return false;
    d = round_up ? std::ceil(d) : std::floor(d);
    // 2^63 is exactly representable; anything at or beyond it saturates.
    if (d >= 9223372036854775808.0) {
      out = kMax;
    } else if (d < -9223372036854775808.0) {
      out = std::numeric_limits<int64_t>::min();
    } else {
      out = static_cast<int64_t>(d);
    }
    return true;
  }
  return false;
}

// Absent -> true with `present` false; present but not an array of strings -> false.
bool string_array_claim(const json& claims, const char* key, bool& present,
                        std::vector<std::string>& out) {
  auto it = claims.find(key);
  present = it != claims.end();
  if (!present) return true;
  if (!it->is_array()) return false;
  for (const auto& v : *it) {
    if (!v.is_string()) return false;
    out.push_back(v.get<std::string>());
  }
  return true;
}

// libjwt 1.10 decodes the base64url signature leniently: unused trailing bits and
// extra '=' are ignored, so several spellings of one RS256 signature verify. Only the
// canonical spelling (no padding, zero trailing bits) is accepted; checked by a
// decode/re-encode round trip through OpenSSL.
bool canonical_base64url(std::string_view seg) {
  if (seg.empty() || seg.size() % 4 == 1) return false;
  std::string std_b64(seg);
  for (char& c : std_b64) {
    if (c == '-') {
      c = '+';
    } else if (c == '_') {
      c = '/';
    } else if (c == '+' || c == '/' || c == '=') {
      return false;  // not base64url
    }
  }
  size_t pad = (4 - std_b64.size() % 4) % 4;
  std_b64.append(pad, '=');
  std::string raw(std_b64.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(raw.data()),
                          reinterpret_cast<const unsigned char*>(std_b64.data()),
                          static_cast<int>(std_b64.size()));
  if (n < 0 || static_cast<size_t>(n) < pad) return false;
  size_t raw_len = static_cast<size_t>(n) - pad;  // DecodeBlock counts padding as zero bytes
  std::string again(raw_len / 3 * 4 + 4 + 1, '\0');
  int m = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(again.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()),
                          static_cast<int>(raw_len));
  if (m < 0) return false;
  again.resize(static_cast<size_t>(m));
  std::string_view trimmed(again);
  while (!trimmed.empty() && trimmed.back() == '=') trimmed.remove_suffix(1);
  if (trimmed.size() != seg.size()) return false;
  for (size_t i = 0; i < seg.size(); ++i) {
    char c = trimmed[i] == '+' ? '-' : trimmed[i] == '/' ? '_' : trimmed[i];
    if (c != seg[i]) return false;
  }
  return true;
}

// The header's `alg`, read without checking the signature, only to pick the key. libjwt
// 1.10 decodes any token without verifying when given no key (and then reports alg none),
// so this object is thrown away here; claims are only ever read from a keyed decode.
bool peek_alg(const std::string& token, std::string& alg) {
  jwt_t* raw = nullptr;
  int rc = jwt_decode(&raw, token.c_str(), nullptr, 0);
  jwt_ptr unverified(raw);
  if (rc != 0 || !unverified) return false;
  const char* a = jwt_get_header(unverified.get(), "alg");
  if (a == nullptr) return false;
  alg = a;
  return true;
}

}  // namespace

bool wildcard_match(std::string_view pattern, std::string_view text) {
  // Greedy with one backtrack point (the last '*'): a later star supersedes earlier ones,
  // so this is O(|pattern| * |text|) at worst, never exponential.
  constexpr size_t npos = std::string_view::npos;
  size_t p = 0, t = 0, star = npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool valid_user_id(std::string_view user) {
  if (user.empty() || user.size() > kMaxUserCodePoints * 4) return false;
  size_t count = 0;
  bool ok = for_each_code_point(user, [&count](uint32_t cp) {
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == ':') return false;
    return ++count <= kMaxUserCodePoints;
  });
  return ok && count >= 1;
}

namespace {

bool invisible_or_bidi(uint32_t cp) {
  return (cp >= 0x200B && cp <= 0x200F) ||  // zero-width space/joiners, LRM, RLM
         (cp >= 0x202A && cp <= 0x202E) ||  // bidi embeddings and overrides
         (cp >= 0x2060 && cp <= 0x206F) ||  // word joiner, invisible operators, bidi isolates
         cp == 0x061C || cp == 0x00AD || cp == 0x034F || cp == 0x115F || cp == 0x1160 ||
         cp == 0x180E || cp == 0x3164 || cp == 0xFEFF || cp == 0xFFA0 ||
         (cp >= 0xFE00 && cp <= 0xFE0F) ||  // variation selectors
         (cp >= 0xE0000 && cp <= 0xE007F);  // tags
}

bool white_space(uint32_t cp) {
  return cp == ' ' || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool latin_letter(uint32_t cp) {
  return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
         (cp >= 0xC0 && cp <= 0x24F && cp != 0xD7 && cp != 0xF7) ||
         (cp >= 0xFF21 && cp <= 0xFF3A) || (cp >= 0xFF41 && cp <= 0xFF5A);
}
bool cyrillic(uint32_t cp) { return cp >= 0x0400 && cp <= 0x052F; }
bool greek(uint32_t cp) { return (cp >= 0x0370 && cp <= 0x03FF) || (cp >= 0x1F00 && cp <= 0x1FFF); }

// Cyrillic and Greek letters that render like a Latin one (from Unicode's
// confusables.txt, the lower- and upper-case look-alikes of a..z).
char latin_look_alike(uint32_t cp) {
  switch (cp) {
    case 0x0430: case 0x0410: case 0x03B1: case 0x0391: return 'a';
    case 0x0412: case 0x0432: case 0x0392: case 0x03B2: return 'b';
    case 0x0441: case 0x0421: case 0x03F2: case 0x03F9: return 'c';
    case 0x0501: return 'd';
    case 0x0435: case 0x0415: case 0x0395: case 0x03B5: return 'e';
    case 0x04BB: case 0x041D: case 0x043D: case 0x0397: return 'h';
    case 0x0456: case 0x0406: case 0x0399: case 0x03B9: case 0x04C0: return 'i';
    case 0x0458: case 0x0408: case 0x03F3: return 'j';
    case 0x041A: case 0x043A: case 0x039A: case 0x03BA: return 'k';
    case 0x041C: case 0x043C: case 0x039C: return 'm';
    case 0x039D: case 0x03B7: return 'n';
    case 0x043E: case 0x041E: case 0x03BF: case 0x039F: return 'o';
    case 0x0440: case 0x0420: case 0x03C1: case 0x03A1: return 'p';
    case 0x051B: return 'q';
    case 0x0455: case 0x0405: return 's';
    case 0x0422: case 0x0442: case 0x03A4: case 0x03C4: return 't';
    case 0x03C5: case 0x057D: return 'u';
    case 0x03BD: case 0x0474: case 0x0475: return 'v';
    case 0x051D: case 0x0461: return 'w';
    case 0x0445: case 0x0425: case 0x03A7: case 0x03C7: return 'x';
    case 0x0443: case 0x0423: case 0x03A5: case 0x04AF: case 0x03B3: return 'y';
    case 0x0396: return 'z';
    default: return 0;
  }
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

const char* const kReservedNames[] = {"system", "admin", "administrator", "root",  "server",
                                      "chatd",  "moderator", "mod",       "staff", "support",
                                      "api",    "anonymous", "anon",      "owner", "operator"};

}  // namespace

std::string name_skeleton(std::string_view name) {
  std::string out;
  for_each_code_point(name, [&out](uint32_t cp) {
    if (cp >= 0xFF01 && cp <= 0xFF5E) cp -= 0xFEE0;  // fullwidth ASCII (NFKC)
    if (cp >= 'A' && cp <= 'Z') cp += 'a' - 'A';
    if (cp == '0') cp = 'o';
    if (cp == '1') cp = 'l';
    if (char l = latin_look_alike(cp)) cp = static_cast<unsigned char>(l);
    append_utf8(out, cp);
    return true;
  });
  return out;
}

std::string anonymous_name_problem(std::string_view name) {
  if (!valid_user_id(name)) return "invalid user name";
  bool first = true, ends_space = false, has_latin = false, has_other = false;
  std::string problem;
  for_each_code_point(name, [&](uint32_t cp) {
    if (invisible_or_bidi(cp)) {
      problem = "names may not hold invisible or bidi control characters";
      return false;
    }
    ends_space = white_space(cp);
    if (first && ends_space) {
      problem = "names may not start or end with white space";
      return false;
    }
    first = false;
    has_latin = has_latin || latin_letter(cp);
    has_other = has_other || cyrillic(cp) || greek(cp);
    return true;
  });
  if (!problem.empty()) return problem;
  if (ends_space) return "names may not start or end with white space";
  if (has_latin && has_other) return "names may not mix Latin with Cyrillic or Greek letters";
  if (name.substr(0, kAnonPrefix.size()) == kAnonPrefix) return "that name prefix is reserved";
  auto sk = name_skeleton(name);
  for (const char* r : kReservedNames)
    if (sk == name_skeleton(r)) return "that name is reserved";
  return {};
}

bool identity::has_role(std::string_view role) const {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

bool identity::may_join(std::string_view room) const {
  if (room.substr(0, 3) == "dm:") return false;  // dm membership is decided by the dm logic
  if (has_role("admin")) return true;
  if (!restricted_rooms) return true;
  return std::any_of(room_patterns.begin(), room_patterns.end(),
                     [room](const std::string& p) { return wildcard_match(p, room); });
}

authenticator::authenticator(auth_config cfg) : cfg_(std::move(cfg)) {}

bool authenticator::any_key() const {
  return !cfg_.hs256_secret.empty() || !cfg_.rs256_public_key.empty();
}

auth_result authenticator::verify(std::string_view token_in, int64_t now_s) const {
  if (token_in.empty()) return refuse("missing token");
  if (!any_key()) return refuse("token authentication is not configured");
  if (token_in.size() > kMaxTokenBytes) return refuse("token too large");
  // libjwt takes a C string: an embedded NUL would silently cut the token short.
  if (token_in.find('\0') != std::string_view::npos) return refuse("malformed token");
  if (std::count(token_in.begin(), token_in.end(), '.') != 2) return refuse("malformed token");
  std::string token(token_in);

  std::string alg;
  if (!peek_alg(token, alg)) return refuse("malformed token");

  // The key follows from the alg and each key is only ever used with its own alg, so an
  // HS256 token "signed" with the RSA public key text meets the HS secret, never the PEM.
  jwt_alg_t want;
  const std::string* key;
  if (alg == "none") {
    return refuse("unsigned token (alg none) refused");
  } else if (alg == "HS256" && !cfg_.hs256_secret.empty()) {
    want = JWT_ALG_HS256;
    key = &cfg_.hs256_secret;
  } else if (alg == "RS256" && !cfg_.rs256_public_key.empty()) {
    want = JWT_ALG_RS256;
    key = &cfg_.rs256_public_key;
  } else {
    return refuse("token algorithm " + alg + " not accepted");
  }

  if (!canonical_base64url(std::string_view(token).substr(token.rfind('.') + 1))) {
    return refuse("bad signature");
  }
  jwt_t* raw = nullptr;
  int rc = jwt_decode(&raw, token.c_str(), reinterpret_cast<const unsigned char*>(key->data()),
                      static_cast<int>(key->size()));
  jwt_ptr verified(raw);
  if (rc != 0 || !verified) return refuse("bad signature");
  // Belt and braces: the verified header must still name the alg the key was chosen for.
  if (jwt_get_alg(verified.get()) != want) return refuse("token algorithm mismatch");

  // Claims go through nlohmann: jwt_get_grant_int cannot tell a missing claim from a
  // non-integer one (both come back as 0 / -1 with errno unreliable).
  c_str_ptr grants(jwt_get_grants_json(verified.get(), nullptr));
  if (!grants) return refuse("malformed token claims");
  json claims = json::parse(grants.get(), nullptr, /*allow_exceptions=*/false);
  if (!claims.is_object()) return refuse("malformed token claims");

  auth_result res;
  identity& id = res.id;

  auto sub = claims.find("sub");
  if (sub == claims.end()) return refuse("token has no sub");
  if (!sub->is_string() || !valid_user_id(sub->get_ref<const std::string&>())) {
    return refuse("token sub is not a valid user id");
  }
  if (sub->get_ref<const std::string&>().rfind(kAnonPrefix, 0) == 0) {
    return refuse("token sub may not start with '~' (the anonymous namespace)");
  }
  id.user = sub->get<std::string>();

  int64_t leeway = std::max<int64_t>(cfg_.leeway_s, 0);
  auto exp = claims.find("exp");
  if (exp != claims.end()) {
    int64_t e;
    if (!numeric_date(*exp, /*round_up=*/false, e)) return refuse("token exp is not a number");
    // RFC 7519: the token must not be accepted on or after exp.
    if (now_s >= saturating_add(e, leeway)) return refuse("token expired");
    id.exp = e;
  } else if (cfg_.require_exp) {
    return refuse("token has no exp");
  }

  auto nbf = claims.find("nbf");
  if (nbf != claims.end()) {
    int64_t n;
    if (!numeric_date(*nbf, /*round_up=*/true, n)) return refuse("token nbf is not a number");
    if (saturating_add(now_s, leeway) < n) return refuse("token not yet valid");
  }

  auto name = claims.find("name");
  if (name != claims.end() && !name->is_string()) return refuse("token name is not a string");
  if (name != claims.end() && !name->get_ref<const std::string&>().empty()) {
    id.name = name->get<std::string>();
  } else {
    id.name = id.user;
  }

  bool present = false;
  if (!string_array_claim(claims, "roles", present, id.roles)) {
    return refuse("token roles must be an array of strings");
  }
  // A malformed `rooms` must not fall back to "any room".
  if (!string_array_claim(claims, "rooms", present, id.room_patterns)) {
    return refuse("token rooms must be an array of strings");
  }
  id.restricted_rooms = present;

  res.ok = true;
  return res;
}

auth_result authenticator::anonymous(std::string_view name) const {
  if (!cfg_.allow_anonymous) return refuse("anonymous access is disabled");
  auto problem = anonymous_name_problem(name);
  if (!problem.empty()) return refuse(problem);
  auth_result res;
  res.ok = true;
  // With tokens on as well, anonymous ids get their own namespace.
  res.id.user = any_key() ? std::string(kAnonPrefix) + std::string(name) : std::string(name);
  res.id.name = std::string(name);
  res.id.anonymous = true;
  return res;
}

std::string mint_token(const auth_config& cfg, const token_spec& spec, int64_t now_s,
                       std::string& err) {
  err.clear();
  jwt_alg_t alg;
  const std::string* key;
  if (!cfg.rs256_private_key.empty()) {
    alg = JWT_ALG_RS256;
    key = &cfg.rs256_private_key;
  } else if (!cfg.hs256_secret.empty()) {
    alg = JWT_ALG_HS256;
    key = &cfg.hs256_secret;
  } else {
    err = "no signing key configured";
    return "";
  }
  if (!valid_user_id(spec.user)) {
    err = "invalid user id";
    return "";
  }
  // nlohmann's dump throws on invalid UTF-8; refuse it up front instead.
  bool utf8_ok = valid_utf8(spec.name) &&
                 std::all_of(spec.roles.begin(), spec.roles.end(), valid_utf8) &&
                 std::all_of(spec.rooms.begin(), spec.rooms.end(), valid_utf8);
  if (!utf8_ok) {
    err = "token claims must be valid UTF-8";
    return "";
  }

  json claims = {{"sub", spec.user}, {"iat", now_s}};
  if (!spec.name.empty()) claims["name"] = spec.name;
  if (spec.ttl_s > 0) claims["exp"] = saturating_add(now_s, spec.ttl_s);
  if (!spec.roles.empty()) claims["roles"] = spec.roles;
  if (!spec.rooms.empty()) claims["rooms"] = spec.rooms;

  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0 || raw == nullptr) {
    err = "out of memory";
    return "";
  }
  jwt_ptr j(raw);
  if (jwt_add_grants_json(j.get(), claims.dump().c_str()) != 0) {
    err = "could not set token claims";
    return "";
  }
  if (jwt_set_alg(j.get(), alg, reinterpret_cast<const unsigned char*>(key->data()),
                  static_cast<int>(key->size())) != 0) {
    err = "could not set signing key";
    return "";
  }
  c_str_ptr out(jwt_encode_str(j.get()));
  if (!out) {
    err = alg == JWT_ALG_RS256 ? "signing failed (is the RS256 private key valid PEM?)"
                               : "signing failed";
    return "";
  }
  return std::string(out.get());
}

}  // namespace chat
